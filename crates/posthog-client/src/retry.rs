//! When to retry and how long to wait: `Retry-After` when the server sends it, otherwise
//! capped exponential backoff with full jitter.
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
    /// rate-limit error (carrying the server's `retry_after`) instead of sleeping.
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

/// Full jitter: a uniformly random duration in `[0, delay]`.
pub(crate) fn full_jitter(delay: Duration) -> Duration {
    delay.mul_f64(fastrand::f64())
}

/// Parses `Retry-After` as delta-seconds or an HTTP date (RFC 9110 §10.2.3). A date in the
/// past means "now". Anything unparseable is ignored (we fall back to backoff).
pub(crate) fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
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
