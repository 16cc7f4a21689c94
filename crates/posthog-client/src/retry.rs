//! When to retry and how long to wait: `Retry-After` when the server sends it, otherwise
//! capped exponential backoff with full jitter.
//!
//! `Retry-After` is outside input and is read saturating: a delay of any size (delta-seconds of
//! any number of digits, a float such as `1e308`, a date in the year 9999) becomes at most
//! [`RETRY_AFTER_CEILING`], so "longer than we will wait" is never mistaken for "no
//! `Retry-After`". Such a wait is above any sane [`RetryPolicy::max_retry_after`]: the call ends
//! at once with the 429 (or 503) error, whose `retry_after` carries the ceiling. Only what is not
//! a delay at all (negative, NaN, text that is neither a number nor an HTTP date) is ignored, and
//! backoff applies.
//!
//! backon builds the capped exponential schedule (`initial · factorⁿ`, at most `max_delay`);
//! full jitter ("sleep a uniformly random time between 0 and the schedule's delay", as in the
//! AWS architecture note) is applied on top, because backon's own jitter only adds to the delay.

use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// How a request is retried.
///
/// ```
/// use std::time::Duration;
/// use posthog_client::RetryPolicy;
/// let policy = RetryPolicy { max_attempts: 5, ..RetryPolicy::default() };
/// assert_eq!(policy.initial_delay, Duration::from_millis(500));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 means never retry.
    pub max_attempts: u32,
    /// Backoff before the first retry (before jitter).
    pub initial_delay: Duration,
    /// Growth of the backoff per retry.
    pub factor: f32,
    /// Cap on one backoff (before jitter).
    pub max_delay: Duration,
    /// Cap on the time one call may spend, attempts and waits included. A retry whose wait
    /// would cross it is not made.
    pub total_budget: Duration,
    /// Longest `Retry-After` we are willing to honour; a longer one ends the call with the
    /// rate-limit error (carrying the server's `retry_after`) instead of sleeping. A
    /// `Retry-After` that reached [`RETRY_AFTER_CEILING`] (a huge or absurd value) is never
    /// slept on, whatever this is set to.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_delay: Duration::from_millis(500),
            factor: 2.0,
            max_delay: Duration::from_secs(30),
            total_budget: Duration::from_secs(300),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The schedule of backoff delays for one call, before jitter.
    pub(crate) fn schedule(&self) -> ExponentialBackoff {
        ExponentialBuilder::new()
            .with_min_delay(self.initial_delay)
            .with_factor(self.factor)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .build()
    }
}

/// `now + after` on tokio's clock, saturating at about 30 years from now (as
/// `tokio::time::sleep` does) instead of panicking on a huge `after`.
pub(crate) fn deadline_after(after: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 24 * 60 * 60))
}

/// Full jitter: a uniformly random duration in `[0, delay]`.
pub(crate) fn full_jitter(delay: Duration) -> Duration {
    delay.mul_f64(fastrand::f64())
}

/// The longest wait a `Retry-After` is read as: about a century. A server asking for longer
/// (`Retry-After: 1180591620717411303424`, `1e308`, a date in the year 9999) gets this instead,
/// in [`Error::Api::retry_after`](crate::Error::Api), so callers comparing it with their own
/// limit see "too long" and callers adding it to a clock (`Instant`, `SystemTime`, a
/// `time::OffsetDateTime`) cannot overflow. The client never sleeps on a wait this long.
///
/// ```
/// use posthog_client::RETRY_AFTER_CEILING;
/// assert_eq!(RETRY_AFTER_CEILING.as_secs(), 100 * 365 * 24 * 60 * 60);
/// ```
pub const RETRY_AFTER_CEILING: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// Parses `Retry-After` as delta-seconds or an HTTP date (RFC 9110 §10.2.3), saturating at
/// [`RETRY_AFTER_CEILING`]:
///
/// - delta-seconds of any number of digits; past `u64` seconds it saturates;
/// - a non-negative decimal (`1.5`, `-0`, `1e308`, `inf`: PostHog sends integers, proxies may
///   not); one too large for a [`Duration`] saturates;
/// - an HTTP date; one in the past means "now", one far in the future saturates.
///
/// Anything else (negative, NaN, text, an empty or non-ASCII value) is no `Retry-After` at all:
/// we fall back to backoff.
pub(crate) fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Only digits: the one way `parse` can fail is a value past u64 seconds.
        value
            .parse::<u64>()
            .map_or(Duration::MAX, Duration::from_secs)
    } else if let Ok(secs) = value.parse::<f64>() {
        if secs.is_nan() || secs < 0.0 {
            return None;
        }
        // Positive and not NaN: the one way this can fail is a value too large (or infinite).
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(RETRY_AFTER_CEILING))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn retry_after_seconds_and_http_dates_are_understood() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after(&headers("7"), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after(&headers("1.5"), now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after(&headers("Sun, 06 Nov 1994 08:50:07 GMT"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after(&headers("Sun, 06 Nov 1994 08:00:00 GMT"), now),
            Some(Duration::ZERO),
            "a date in the past means retry now"
        );
        assert_eq!(parse_retry_after(&headers("soon"), now), None);
        assert_eq!(parse_retry_after(&headers("-3"), now), None);
        assert_eq!(parse_retry_after(&HeaderMap::new(), now), None);
    }

    /// Regression: `Retry-After: 2^70` failed `parse::<u64>`, then `Duration::try_from_secs_f64`
    /// overflowed and the header was dropped, so the call fell back to backoff and kept
    /// retrying instead of ending with "wait longer than we will".
    #[test]
    fn retry_after_2_pow_70_seconds_saturates_instead_of_being_ignored() {
        let now = SystemTime::now();
        assert_eq!(
            parse_retry_after(&headers("1180591620717411303424"), now),
            Some(RETRY_AFTER_CEILING)
        );
        assert!(RETRY_AFTER_CEILING > Duration::from_secs(3600));
    }

    #[test]
    fn huge_retry_after_values_of_every_form_saturate() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let digits_300 = "9".repeat(300);
        for value in [
            "18446744073709551615", // u64::MAX seconds: fits a u64, above the ceiling
            "18446744073709551616", // u64::MAX + 1
            digits_300.as_str(),    // far past any integer type
            "00000000000000000000000000000000000000000000000000000000000000000000004000000000",
            "1e308",
            "1.7976931348623157e308", // f64::MAX
            "1e400",                  // parses as +inf
            "inf",
            "+Infinity",
            "3155760000.5",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            assert_eq!(
                parse_retry_after(&headers(value), now),
                Some(RETRY_AFTER_CEILING),
                "{value}"
            );
        }
        // Just below the ceiling is kept as sent.
        let below = RETRY_AFTER_CEILING.as_secs() - 1;
        assert_eq!(
            parse_retry_after(&headers(&below.to_string()), now),
            Some(Duration::from_secs(below))
        );
    }

    #[test]
    fn what_is_not_a_delay_stays_no_retry_after() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        for value in [
            "",
            " ",
            "-1",
            "-1e400",
            "-inf",
            "NaN",
            "-NaN",
            "0x10",
            "1 0",
            "1_000",
            "+-1",
            "Sun, 06 Nov 1900 08:49:37 GMT", // before 1970: httpdate refuses it
            "Sat, 01 Jan 10000 00:00:00 GMT",
            "Fri, 32 Dec 9999 23:59:59 GMT",
        ] {
            assert_eq!(parse_retry_after(&headers(value), now), None, "{value:?}");
        }
        assert_eq!(
            parse_retry_after(&headers("-0"), now),
            Some(Duration::ZERO),
            "-0 is zero, not negative"
        );
        assert_eq!(
            parse_retry_after(&headers(" \t 12 \t"), now),
            Some(Duration::from_secs(12))
        );
        let mut non_ascii = HeaderMap::new();
        non_ascii.insert(RETRY_AFTER, HeaderValue::from_bytes(b"1\xff").unwrap());
        assert_eq!(parse_retry_after(&non_ascii, now), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2048, failure_persistence: None, ..Default::default()
        })]

        /// Any header value: never a panic, never above the ceiling, and every run of digits
        /// is a delay (saturated when huge), never "no Retry-After".
        #[test]
        fn any_retry_after_is_a_bounded_delay_or_none(
            value in "[ \t]{0,2}([0-9]{1,60}|[-+]?[0-9]{0,5}(\\.[0-9]{0,5})?([eE][-+]?[0-9]{1,4})?|[-+]?(inf|infinity|NaN)|[ -~]{0,40})[ \t]{0,2}",
            now_secs in 0u64..253_402_300_799,
        ) {
            let Ok(header) = HeaderValue::from_str(&value) else { return Ok(()) };
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, header);
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now_secs);
            let parsed = parse_retry_after(&h, now);
            if let Some(wait) = parsed {
                proptest::prop_assert!(wait <= RETRY_AFTER_CEILING);
            }
            let trimmed = value.trim();
            if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
                let expected = trimmed
                    .parse::<u64>()
                    .map_or(RETRY_AFTER_CEILING, |s| Duration::from_secs(s).min(RETRY_AFTER_CEILING));
                proptest::prop_assert_eq!(parsed, Some(expected));
            }
        }

        /// Any HTTP date httpdate can write, against any clock: a bounded delay, zero when past.
        #[test]
        fn any_http_date_is_a_bounded_delay(at in 0u64..253_402_300_799, now in 0u64..253_402_300_799) {
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs(at);
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now);
            let parsed = parse_retry_after(&headers(&httpdate::fmt_http_date(at)), now);
            let expected = at.duration_since(now).unwrap_or(Duration::ZERO).min(RETRY_AFTER_CEILING);
            proptest::prop_assert_eq!(parsed, Some(expected));
        }
    }

    #[test]
    fn schedule_grows_exponentially_is_capped_and_bounded_in_length() {
        let policy = RetryPolicy {
            max_attempts: 6,
            initial_delay: Duration::from_secs(1),
            factor: 2.0,
            max_delay: Duration::from_secs(5),
            ..RetryPolicy::default()
        };
        let delays: Vec<_> = policy.schedule().collect();
        let secs: Vec<u64> = delays.iter().map(|d| d.as_secs()).collect();
        assert_eq!(
            secs,
            vec![1, 2, 4, 5, 5],
            "5 retries after the first attempt"
        );
        assert_eq!(RetryPolicy::none().schedule().count(), 0);
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_delay() {
        let cap = Duration::from_millis(800);
        let samples: Vec<_> = (0..1000).map(|_| full_jitter(cap)).collect();
        assert!(samples.iter().all(|d| *d <= cap));
        // Full jitter spreads over the whole range, not only above the delay.
        assert!(samples.iter().any(|d| *d < cap / 4));
        assert!(samples.iter().any(|d| *d > cap * 3 / 4));
    }
}
