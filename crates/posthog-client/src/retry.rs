//! When to retry and how long to wait, decided in one place: [`RetryPolicy::decide`].
//!
//! The send path (`transport.rs`) asks `decide` after every failed attempt and does what it
//! answers: sleep for [`Decision::Retry`]'s `after`, logged with its [`WaitReason`], or return
//! the error. `decide` is a pure function of the policy, the request, the error and what the
//! call has been through ([`RetryState`]); the random jitter is an argument, so every rule is
//! unit-tested without a clock or a server:
//!
//! - only connect errors, timeouts, 429, 500, 502, 503 and 504 are retried, and a request that
//!   creates something only after a 429 (PostHog sends it before doing anything);
//! - a `Retry-After` is waited out as sent, up to [`RetryPolicy::max_retry_after`]; a longer
//!   one ends the call with the error, whose `retry_after` carries the server's wait;
//! - without one, a capped exponential backoff with full jitter ("sleep a uniformly random time
//!   between 0 and the schedule's delay", as in the AWS architecture note);
//! - **rate limits and failures are two accounts.** A 429 is PostHog answering as designed
//!   (its throttle, or its limit of 3 concurrent queries, which sends no `Retry-After`): the
//!   waits after 429s are bounded by [`RetryPolicy::max_rate_limit_waits`] and
//!   [`RetryPolicy::rate_limit_budget`] and use up neither `max_attempts` nor `total_budget`,
//!   so a caller that allows long rate-limit waits gets them in full. Connection errors,
//!   timeouts and 5xx are bounded by `max_attempts` and `total_budget`.
//!
//! `Retry-After` is outside input and is read saturating: a delay of any size (delta-seconds of
//! any number of digits, a float such as `1e308`, a date in the year 9999) becomes at most
//! [`RETRY_AFTER_CEILING`], so "longer than we will wait" is never mistaken for "no
//! `Retry-After`". Such a wait is never slept on, whatever the policy: the call ends at once
//! with the 429 (or 503) error, whose `retry_after` carries the ceiling. Only what is not a
//! delay at all (negative, NaN, text that is neither a number nor an HTTP date) is ignored, and
//! backoff applies.

use std::fmt;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::Category;
use crate::error::Error;
use crate::ratelimit::EndpointClass;

/// How a request is retried: which failures, how often, how long to wait.
///
/// Two accounts (see the [module docs](self)): failures (connection errors, timeouts, 5xx)
/// spend `max_attempts` and `total_budget`; rate limits (429) spend `max_rate_limit_waits` and
/// `rate_limit_budget`. A call ends after at most `max_attempts + max_rate_limit_waits`
/// attempts.
///
/// ```
/// use std::time::Duration;
/// use posthog_client::RetryPolicy;
/// let policy = RetryPolicy { max_attempts: 5, ..RetryPolicy::default() };
/// assert_eq!(policy.initial_delay, Duration::from_millis(500));
/// // urllib3's `backoff_factor`: 1 s, 2 s, 4 s … before the 1st, 2nd, 3rd retry.
/// let policy = RetryPolicy::default().with_backoff_factor(1.0);
/// assert_eq!(policy.backoff(3), Duration::from_secs(4));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts a call may fail with a connection error, a timeout or a 5xx, the first
    /// included: at most `max_attempts - 1` retries after failures; 1 means never retry one.
    /// Attempts answered with 429 do not count (see `max_rate_limit_waits`).
    pub max_attempts: u32,
    /// Backoff before the first retry after a failure (before jitter).
    pub initial_delay: Duration,
    /// Growth of the failure backoff per retry.
    pub factor: f32,
    /// Cap on one failure backoff (before jitter).
    pub max_delay: Duration,
    /// Cap on the time one call spends on anything but rate limits: its attempts and the waits
    /// after failures. A retry after a failure whose wait would cross it is not made. Time a
    /// rate limit costs (the attempts answered 429, the waits after them, the waits for the
    /// client-side [budgets](crate::RateLimits)) does not count: `rate_limit_budget` bounds it.
    pub total_budget: Duration,
    /// Longest `Retry-After` honoured, after a 429 or a 5xx; a longer one ends the call with the
    /// error (carrying the server's `retry_after`) instead of sleeping. A `Retry-After` that
    /// reached [`RETRY_AFTER_CEILING`] (a huge or absurd value) is never slept on, whatever
    /// this is set to.
    pub max_retry_after: Duration,
    /// Waits after a 429 one call may make, on top of `max_attempts`; 0 means a 429 ends the
    /// call.
    pub max_rate_limit_waits: u32,
    /// Wait before the first retry after a 429 without `Retry-After` (before jitter); each
    /// further one doubles it. PostHog's limit of 3 concurrent queries answers such a 429.
    pub rate_limit_delay: Duration,
    /// Cap on one wait after a 429 without `Retry-After` (before jitter).
    pub max_rate_limit_delay: Duration,
    /// Cap on the time one call spends waiting after 429s, all waits together. A wait that
    /// would cross it is not made.
    pub rate_limit_budget: Duration,
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
            max_rate_limit_waits: 6,
            rate_limit_delay: Duration::from_secs(1),
            max_rate_limit_delay: Duration::from_secs(60),
            rate_limit_budget: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// Never retry: not after a failure, not after a 429.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            max_rate_limit_waits: 0,
            ..RetryPolicy::default()
        }
    }

    /// This policy with urllib3's failure backoff: `backoff_factor × 2^(n−1)` seconds before
    /// retry `n` (1 s, 2 s, 4 s, 8 s … for a factor of 1.0; no wait at all for 0.0), at most
    /// `max_delay`, before jitter. It is what the seeds' `performance.retries.backoff_factor`
    /// ("Exponential backoff factor", default 1.0) means: the first backoff is
    /// `backoff_factor` seconds and each further one doubles. A negative or NaN factor is read
    /// as 0.
    ///
    /// ```
    /// use std::time::Duration;
    /// use posthog_client::RetryPolicy;
    /// let policy = RetryPolicy::default().with_backoff_factor(0.5);
    /// let waits: Vec<_> = (1..=3).map(|n| policy.backoff(n)).collect();
    /// assert_eq!(waits, [500, 1000, 2000].map(Duration::from_millis));
    /// ```
    pub fn with_backoff_factor(self, backoff_factor: f64) -> RetryPolicy {
        let initial_delay = if backoff_factor.is_nan() || backoff_factor <= 0.0 {
            Duration::ZERO
        } else {
            Duration::try_from_secs_f64(backoff_factor).unwrap_or(Duration::MAX)
        };
        RetryPolicy {
            initial_delay,
            factor: 2.0,
            ..self
        }
    }

    /// The backoff before retry `n` after failures (1 for the first), before jitter:
    /// `initial_delay × factor^(n−1)`, at most `max_delay`.
    pub fn backoff(&self, n: u32) -> Duration {
        exponential(
            self.initial_delay,
            f64::from(self.factor),
            n,
            self.max_delay,
        )
    }

    /// The wait before retry `n` after 429s without `Retry-After` (1 for the first), before
    /// jitter: `rate_limit_delay × 2^(n−1)`, at most `max_rate_limit_delay`.
    pub fn rate_limit_backoff(&self, n: u32) -> Duration {
        exponential(self.rate_limit_delay, 2.0, n, self.max_rate_limit_delay)
    }

    /// What to do after `error` ended an attempt of `request`: wait and retry, or give up with
    /// the error. `state` is what the call has been through before this attempt's outcome;
    /// `jitter` is a random fraction in `[0, 1]` (clamped; NaN reads as 1) that scales a
    /// backoff (full jitter). A server's `Retry-After` is waited out as sent, never jittered.
    ///
    /// The rules, in order:
    /// 1. not retryable (other 4xx, a body that did not parse, …): give up;
    /// 2. a timeout of a request that does not retry timeouts (its caller asks for less
    ///    instead): give up;
    /// 3. a failure other than 429 of a request that is not idempotent: give up;
    /// 4. a `Retry-After` over `max_retry_after`, or saturated at [`RETRY_AFTER_CEILING`]:
    ///    give up (the error carries the server's wait);
    /// 5. a 429: wait its `Retry-After` ([`WaitReason::RetryAfter`]), else
    ///    [`rate_limit_backoff`](Self::rate_limit_backoff) with jitter
    ///    ([`WaitReason::ConcurrencyLimit`] on `/query`, [`WaitReason::RateLimited`]
    ///    elsewhere), unless `max_rate_limit_waits` waits were made or the wait would cross
    ///    `rate_limit_budget`;
    /// 6. any other failure: wait its `Retry-After` ([`WaitReason::ServerRetryAfter`]), else
    ///    [`backoff`](Self::backoff) with jitter ([`WaitReason::Backoff`]), unless this was
    ///    the `max_attempts`-th failure or the wait would cross `total_budget`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use posthog_client::{
    ///     Decision, EndpointClass, Error, RequestInfo, RetryPolicy, RetryState, WaitReason,
    /// };
    /// let throttled = Error::Api { status: 429, api: None, body: None, retry_after: None };
    /// let decision = RetryPolicy::default().decide(
    ///     &RequestInfo::new(EndpointClass::Query),
    ///     &throttled,
    ///     &RetryState::default(),
    ///     1.0,
    /// );
    /// assert_eq!(
    ///     decision,
    ///     Decision::Retry { after: Duration::from_secs(1), reason: WaitReason::ConcurrencyLimit }
    /// );
    /// ```
    pub fn decide(
        &self,
        request: &RequestInfo,
        error: &Error,
        state: &RetryState,
        jitter: f64,
    ) -> Decision {
        use GiveUpReason::*;
        if !error.is_retryable() {
            return Decision::GiveUp(NotRetryable);
        }
        if !request.retry_timeouts && error.category() == Category::Timeout {
            return Decision::GiveUp(TimeoutNotRetried);
        }
        let rate_limited = error.status() == Some(429);
        if !request.idempotent && !rate_limited {
            return Decision::GiveUp(NotIdempotent);
        }
        let retry_after = match error {
            Error::Api { retry_after, .. } => *retry_after,
            _ => None,
        };
        if retry_after
            .is_some_and(|wait| wait >= RETRY_AFTER_CEILING || wait > self.max_retry_after)
        {
            return Decision::GiveUp(RetryAfterTooLong);
        }
        let jitter = if jitter.is_nan() {
            1.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        if rate_limited {
            if state.rate_limit_waits >= self.max_rate_limit_waits {
                return Decision::GiveUp(RateLimitWaitsExhausted);
            }
            let (after, reason) = match retry_after {
                Some(wait) => (wait, WaitReason::RetryAfter),
                None => (
                    self.rate_limit_backoff(state.rate_limit_waits.saturating_add(1))
                        .mul_f64(jitter),
                    if is_concurrency_limit(request, error) {
                        WaitReason::ConcurrencyLimit
                    } else {
                        WaitReason::RateLimited
                    },
                ),
            };
            if state.rate_limit_waited.saturating_add(after) > self.rate_limit_budget {
                return Decision::GiveUp(RateLimitBudgetExhausted);
            }
            Decision::Retry { after, reason }
        } else {
            if state.failure_waits.saturating_add(1) >= self.max_attempts {
                return Decision::GiveUp(AttemptsExhausted);
            }
            let (after, reason) = match retry_after {
                Some(wait) => (wait, WaitReason::ServerRetryAfter),
                None => (
                    self.backoff(state.failure_waits.saturating_add(1))
                        .mul_f64(jitter),
                    WaitReason::Backoff,
                ),
            };
            if state.elapsed.saturating_add(after) > self.total_budget {
                return Decision::GiveUp(BudgetExhausted);
            }
            Decision::Retry { after, reason }
        }
    }
}

/// Whether `error` is PostHog's per-project query concurrency limit: a 429 without
/// `Retry-After` on a query request. The send path also lowers the client's query concurrency
/// when it sees one.
pub(crate) fn is_concurrency_limit(request: &RequestInfo, error: &Error) -> bool {
    request.class == EndpointClass::Query
        && matches!(
            error,
            Error::Api {
                status: 429,
                retry_after: None,
                ..
            }
        )
}

/// `initial × factor^(n−1)`, at most `cap`; zero when `initial` is, `cap` when the product
/// overflows or is not a duration.
fn exponential(initial: Duration, factor: f64, n: u32, cap: Duration) -> Duration {
    if initial.is_zero() {
        return Duration::ZERO;
    }
    // 2^1024 is already infinite: a larger exponent changes nothing.
    let exponent = i32::try_from(n.saturating_sub(1).min(1024)).unwrap_or(1024);
    let secs = initial.as_secs_f64() * factor.powi(exponent);
    Duration::try_from_secs_f64(secs).map_or(cap, |delay| delay.min(cap))
}

/// What [`RetryPolicy::decide`] needs to know about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestInfo {
    /// The endpoint's class: a 429 without `Retry-After` on [`EndpointClass::Query`] is
    /// PostHog's concurrency limit.
    pub class: EndpointClass,
    /// Whether sending the request twice is harmless. One that creates something is retried
    /// only after a 429, which PostHog sends before doing anything.
    pub idempotent: bool,
    /// Whether timeouts (a 504, a request timeout) are retried like other transient failures;
    /// false for callers that answer a timeout by asking for less.
    pub retry_timeouts: bool,
}

impl RequestInfo {
    /// An idempotent request of `class` whose timeouts are retried.
    pub fn new(class: EndpointClass) -> RequestInfo {
        RequestInfo {
            class,
            idempotent: true,
            retry_timeouts: true,
        }
    }

    /// Sets whether sending the request twice is harmless.
    pub fn idempotent(mut self, idempotent: bool) -> RequestInfo {
        self.idempotent = idempotent;
        self
    }

    /// Sets whether timeouts are retried.
    pub fn retry_timeouts(mut self, retry_timeouts: bool) -> RequestInfo {
        self.retry_timeouts = retry_timeouts;
        self
    }
}

/// What one call has been through before the outcome [`RetryPolicy::decide`] judges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryState {
    /// Waits made after failures (connection errors, timeouts, 5xx).
    pub failure_waits: u32,
    /// Waits made after 429s.
    pub rate_limit_waits: u32,
    /// Time spent on anything but rate limits, attempts and waits after failures included:
    /// what `total_budget` caps.
    pub elapsed: Duration,
    /// Time spent waiting after 429s: what `rate_limit_budget` caps.
    pub rate_limit_waited: Duration,
}

impl RetryState {
    /// The number of the attempt being judged, 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.failure_waits
            .saturating_add(self.rate_limit_waits)
            .saturating_add(1)
    }

    /// Records a wait [`RetryPolicy::decide`] asked for, in its account. `elapsed` is the
    /// caller's to keep (it is a clock reading).
    pub fn record_wait(&mut self, reason: WaitReason, wait: Duration) {
        if reason.is_rate_limit() {
            self.rate_limit_waits = self.rate_limit_waits.saturating_add(1);
            self.rate_limit_waited = self.rate_limit_waited.saturating_add(wait);
        } else {
            self.failure_waits = self.failure_waits.saturating_add(1);
        }
    }
}

/// What [`RetryPolicy::decide`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait `after`, then send the request again.
    Retry {
        /// How long to wait.
        after: Duration,
        /// Why, for logs and [`ClientStats::waits`](crate::ClientStats::waits).
        reason: WaitReason,
    },
    /// Return the error to the caller.
    GiveUp(GiveUpReason),
}

/// Why the client waits before sending a request again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WaitReason {
    /// A 429 with `Retry-After`: PostHog's throttle said how long.
    RetryAfter,
    /// A 429 without `Retry-After` on `/query`: PostHog's limit of 3 concurrent queries.
    ConcurrencyLimit,
    /// A 429 without `Retry-After` on another endpoint.
    RateLimited,
    /// A 5xx with `Retry-After` (PostHog sends one with a transient 503).
    ServerRetryAfter,
    /// A connection error, a timeout or a 5xx without `Retry-After`: exponential backoff.
    Backoff,
}

impl WaitReason {
    /// Every reason, in the order of their counters.
    pub const ALL: [WaitReason; 5] = [
        WaitReason::RetryAfter,
        WaitReason::ConcurrencyLimit,
        WaitReason::RateLimited,
        WaitReason::ServerRetryAfter,
        WaitReason::Backoff,
    ];

    /// The reason's stable snake_case name, as logged in the `reason` field.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitReason::RetryAfter => "retry_after",
            WaitReason::ConcurrencyLimit => "concurrency_limit",
            WaitReason::RateLimited => "rate_limited",
            WaitReason::ServerRetryAfter => "server_retry_after",
            WaitReason::Backoff => "backoff",
        }
    }

    /// Whether the wait follows a 429, and so counts against `max_rate_limit_waits` and
    /// `rate_limit_budget` rather than `max_attempts` and `total_budget`.
    pub fn is_rate_limit(self) -> bool {
        matches!(
            self,
            WaitReason::RetryAfter | WaitReason::ConcurrencyLimit | WaitReason::RateLimited
        )
    }

    /// The reason's position in [`ALL`](Self::ALL).
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why [`RetryPolicy::decide`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// The error is not one a retry can fix (a 4xx other than 429, a body that did not parse).
    NotRetryable,
    /// A timeout, and the request's caller answers timeouts by asking for less.
    TimeoutNotRetried,
    /// A failure other than 429 of a request that creates something: it may have been done.
    NotIdempotent,
    /// The server's `Retry-After` is longer than `max_retry_after` (or saturated).
    RetryAfterTooLong,
    /// `max_attempts` attempts failed.
    AttemptsExhausted,
    /// The backoff would cross `total_budget`.
    BudgetExhausted,
    /// `max_rate_limit_waits` waits after 429s were made.
    RateLimitWaitsExhausted,
    /// The wait would cross `rate_limit_budget`.
    RateLimitBudgetExhausted,
}

impl GiveUpReason {
    /// The reason's stable snake_case name, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            GiveUpReason::NotRetryable => "not_retryable",
            GiveUpReason::TimeoutNotRetried => "timeout_not_retried",
            GiveUpReason::NotIdempotent => "not_idempotent",
            GiveUpReason::RetryAfterTooLong => "retry_after_too_long",
            GiveUpReason::AttemptsExhausted => "attempts_exhausted",
            GiveUpReason::BudgetExhausted => "budget_exhausted",
            GiveUpReason::RateLimitWaitsExhausted => "rate_limit_waits_exhausted",
            GiveUpReason::RateLimitBudgetExhausted => "rate_limit_budget_exhausted",
        }
    }
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `now + after` on tokio's clock, saturating at about 30 years from now (as
/// `tokio::time::sleep` does) instead of panicking on a huge `after`.
pub(crate) fn deadline_after(after: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 24 * 60 * 60))
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

    // ---- backoff schedules ----

    #[test]
    fn backoff_factor_is_urllib3s_rule() {
        let secs = |policy: RetryPolicy| -> Vec<f64> {
            (1..=7).map(|n| policy.backoff(n).as_secs_f64()).collect()
        };
        let policy = RetryPolicy {
            max_delay: Duration::from_secs(30),
            ..RetryPolicy::default()
        };
        assert_eq!(
            secs(policy.with_backoff_factor(1.0)),
            [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0],
            "factor 1.0: 1 s, 2 s, 4 s … capped at max_delay"
        );
        assert_eq!(
            secs(policy.with_backoff_factor(0.5)),
            [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
        );
        assert_eq!(
            secs(policy.with_backoff_factor(0.0)),
            [0.0; 7],
            "factor 0: no wait"
        );
        for odd in [-1.0, f64::NAN, -0.0] {
            assert_eq!(policy.with_backoff_factor(odd).backoff(3), Duration::ZERO);
        }
        assert_eq!(
            policy.with_backoff_factor(1e300).backoff(1),
            Duration::from_secs(30),
            "a huge factor is capped, not a panic"
        );
        assert_eq!(
            policy.with_backoff_factor(1.0).backoff(u32::MAX),
            Duration::from_secs(30)
        );
        // The first retry is `n = 1`; 0 reads as the first.
        assert_eq!(
            policy.with_backoff_factor(1.0).backoff(0),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn rate_limit_backoff_doubles_from_its_own_delay_up_to_its_cap() {
        let policy = RetryPolicy::default();
        let secs: Vec<u64> = (1..=9)
            .map(|n| policy.rate_limit_backoff(n).as_secs())
            .collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // Independent of the failure backoff.
        let policy = policy.with_backoff_factor(0.0);
        assert_eq!(policy.rate_limit_backoff(1), Duration::from_secs(1));
    }

    // ---- decide: one test per rule ----

    fn api(status: u16, retry_after: Option<Duration>) -> Error {
        Error::Api {
            status,
            api: None,
            body: None,
            retry_after,
        }
    }

    fn network() -> Error {
        Error::Network {
            endpoint: "POST /api/projects/1/query/".into(),
            message: "connection reset".into(),
        }
    }

    fn timeout() -> Error {
        Error::Timeout {
            endpoint: "POST /api/projects/1/query/".into(),
            after: Duration::from_secs(30),
        }
    }

    fn query() -> RequestInfo {
        RequestInfo::new(EndpointClass::Query)
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_secs(1),
            factor: 2.0,
            max_delay: Duration::from_secs(30),
            total_budget: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(3600),
            max_rate_limit_waits: 5,
            rate_limit_delay: Duration::from_secs(1),
            max_rate_limit_delay: Duration::from_secs(60),
            rate_limit_budget: Duration::from_secs(7200),
        }
    }

    fn retry(after: Duration, reason: WaitReason) -> Decision {
        Decision::Retry { after, reason }
    }

    fn give_up(why: GiveUpReason) -> Decision {
        Decision::GiveUp(why)
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn what_is_not_retryable_is_given_up_at_once() {
        let fresh = RetryState::default();
        for status in [400, 401, 403, 404, 409, 413, 422, 501, 505] {
            assert_eq!(
                policy().decide(&query(), &api(status, None), &fresh, 1.0),
                give_up(GiveUpReason::NotRetryable),
                "{status}"
            );
        }
        let decode = Error::Decode {
            endpoint: "GET /".into(),
            message: "bad".into(),
        };
        assert_eq!(
            policy().decide(&query(), &decode, &fresh, 1.0),
            give_up(GiveUpReason::NotRetryable)
        );
        // Even a Retry-After does not make a 400 retryable.
        assert_eq!(
            policy().decide(&query(), &api(400, Some(SECOND)), &fresh, 1.0),
            give_up(GiveUpReason::NotRetryable)
        );
    }

    #[test]
    fn failures_back_off_exponentially_with_full_jitter() {
        let mut state = RetryState::default();
        for (error, n) in [(network(), 1), (api(500, None), 2)] {
            assert_eq!(
                policy().decide(&query(), &error, &state, 1.0),
                retry(policy().backoff(n), WaitReason::Backoff),
            );
            assert_eq!(
                policy().decide(&query(), &error, &state, 0.25),
                retry(policy().backoff(n) / 4, WaitReason::Backoff),
                "full jitter scales the whole delay"
            );
            state.record_wait(WaitReason::Backoff, SECOND);
        }
        for status in [502, 503, 504] {
            assert_eq!(
                policy().decide(&query(), &api(status, None), &RetryState::default(), 1.0),
                retry(SECOND, WaitReason::Backoff),
                "{status}"
            );
        }
        // The jitter is clamped to [0, 1]; NaN reads as 1.
        let fresh = RetryState::default();
        for (jitter, expected) in [(-3.0, Duration::ZERO), (7.0, SECOND), (f64::NAN, SECOND)] {
            assert_eq!(
                policy().decide(&query(), &network(), &fresh, jitter),
                retry(expected, WaitReason::Backoff),
                "{jitter}"
            );
        }
    }

    #[test]
    fn a_5xx_retry_after_is_waited_out_as_sent_in_the_failure_account() {
        let wait = Duration::from_secs(7);
        assert_eq!(
            policy().decide(&query(), &api(503, Some(wait)), &RetryState::default(), 0.0),
            retry(wait, WaitReason::ServerRetryAfter),
            "never jittered"
        );
        // It spends the failure budget: 7 s after 25 s crosses 30 s.
        let late = RetryState {
            elapsed: Duration::from_secs(25),
            ..RetryState::default()
        };
        assert_eq!(
            policy().decide(&query(), &api(503, Some(wait)), &late, 1.0),
            give_up(GiveUpReason::BudgetExhausted)
        );
    }

    #[test]
    fn timeouts_are_not_retried_for_callers_that_ask_for_less() {
        let no_timeouts = query().retry_timeouts(false);
        let fresh = RetryState::default();
        for error in [timeout(), api(504, None), api(408, None)] {
            let decision = policy().decide(&no_timeouts, &error, &fresh, 1.0);
            if error.is_retryable() {
                assert_eq!(
                    decision,
                    give_up(GiveUpReason::TimeoutNotRetried),
                    "{error}"
                );
            } else {
                assert_eq!(decision, give_up(GiveUpReason::NotRetryable), "{error}");
            }
        }
        assert_eq!(
            policy().decide(&query(), &timeout(), &fresh, 1.0),
            retry(SECOND, WaitReason::Backoff)
        );
        // Other failures of such a request are retried as usual.
        assert_eq!(
            policy().decide(&no_timeouts, &api(502, None), &fresh, 1.0),
            retry(SECOND, WaitReason::Backoff)
        );
    }

    #[test]
    fn a_request_that_creates_something_is_retried_only_after_a_429() {
        let create = RequestInfo::new(EndpointClass::Crud).idempotent(false);
        let fresh = RetryState::default();
        for error in [network(), timeout(), api(500, None), api(503, Some(SECOND))] {
            assert_eq!(
                policy().decide(&create, &error, &fresh, 1.0),
                give_up(GiveUpReason::NotIdempotent),
                "{error}"
            );
        }
        assert_eq!(
            policy().decide(&create, &api(429, Some(SECOND)), &fresh, 1.0),
            retry(SECOND, WaitReason::RetryAfter)
        );
        assert_eq!(
            policy().decide(&create, &api(429, None), &fresh, 1.0),
            retry(SECOND, WaitReason::RateLimited)
        );
    }

    #[test]
    fn a_retry_after_over_the_cap_gives_up_and_the_error_keeps_the_servers_wait() {
        let fresh = RetryState::default();
        let error = api(429, Some(Duration::from_secs(3601)));
        assert_eq!(
            policy().decide(&query(), &error, &fresh, 1.0),
            give_up(GiveUpReason::RetryAfterTooLong)
        );
        assert!(
            matches!(error, Error::Api { retry_after: Some(w), .. } if w.as_secs() == 3601),
            "the caller gets the server's wait: {error:?}"
        );
        assert_eq!(
            policy().decide(
                &query(),
                &api(503, Some(Duration::from_secs(3601))),
                &fresh,
                1.0
            ),
            give_up(GiveUpReason::RetryAfterTooLong)
        );
        // Exactly the cap is honoured.
        let hour = Duration::from_secs(3600);
        assert_eq!(
            policy().decide(&query(), &api(429, Some(hour)), &fresh, 1.0),
            retry(hour, WaitReason::RetryAfter)
        );
        // A saturated Retry-After is never slept on, even under a policy that allows any wait.
        let any_wait = RetryPolicy {
            max_retry_after: Duration::MAX,
            rate_limit_budget: Duration::MAX,
            total_budget: Duration::MAX,
            ..policy()
        };
        for status in [429, 503] {
            assert_eq!(
                any_wait.decide(
                    &query(),
                    &api(status, Some(RETRY_AFTER_CEILING)),
                    &fresh,
                    1.0
                ),
                give_up(GiveUpReason::RetryAfterTooLong),
                "{status}"
            );
        }
    }

    #[test]
    fn a_429_without_retry_after_on_query_is_the_concurrency_limit_backing_off_to_60_s() {
        let mut state = RetryState::default();
        let policy = RetryPolicy {
            max_rate_limit_waits: 9,
            ..policy()
        };
        let mut waits = Vec::new();
        loop {
            match policy.decide(&query(), &api(429, None), &state, 1.0) {
                Decision::Retry { after, reason } => {
                    assert_eq!(reason, WaitReason::ConcurrencyLimit);
                    waits.push(after.as_secs());
                    state.record_wait(reason, after);
                }
                Decision::GiveUp(why) => {
                    assert_eq!(why, GiveUpReason::RateLimitWaitsExhausted);
                    break;
                }
            }
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(state.attempt(), 10, "nine waits, ten attempts");
        // Jittered like any backoff.
        assert_eq!(
            policy.decide(&query(), &api(429, None), &RetryState::default(), 0.5),
            retry(Duration::from_millis(500), WaitReason::ConcurrencyLimit)
        );
        // Elsewhere it is a plain rate limit.
        let cohorts = RequestInfo::new(EndpointClass::Crud);
        assert_eq!(
            policy.decide(&cohorts, &api(429, None), &RetryState::default(), 1.0),
            retry(SECOND, WaitReason::RateLimited)
        );
    }

    #[test]
    fn rate_limit_waits_spend_neither_max_attempts_nor_the_total_budget() {
        // Every failure retry and the whole failure budget used up: a 429 is still waited out.
        let spent = RetryState {
            failure_waits: 2,
            elapsed: Duration::from_secs(31),
            ..RetryState::default()
        };
        assert_eq!(
            policy().decide(&query(), &network(), &spent, 1.0),
            give_up(GiveUpReason::AttemptsExhausted)
        );
        let hour = Duration::from_secs(3600);
        assert_eq!(
            policy().decide(&query(), &api(429, Some(hour)), &spent, 1.0),
            retry(hour, WaitReason::RetryAfter),
            "an hour's Retry-After is not cut short by a 30 s total budget"
        );
        // And waits after 429s leave the failure retries whole.
        let throttled = RetryState {
            rate_limit_waits: 5,
            rate_limit_waited: Duration::from_secs(7000),
            ..RetryState::default()
        };
        assert_eq!(
            policy().decide(&query(), &api(500, None), &throttled, 1.0),
            retry(SECOND, WaitReason::Backoff)
        );
    }

    #[test]
    fn the_rate_limit_caps_end_the_call() {
        let capped = RetryState {
            rate_limit_waits: 5,
            ..RetryState::default()
        };
        assert_eq!(
            policy().decide(&query(), &api(429, Some(SECOND)), &capped, 1.0),
            give_up(GiveUpReason::RateLimitWaitsExhausted)
        );
        // 7 200 s budget: 3 000 s waited, a 3 600 s wait still fits, 4 201 s waited it does not.
        let hour = Duration::from_secs(3600);
        let waited = |secs| RetryState {
            rate_limit_waits: 1,
            rate_limit_waited: Duration::from_secs(secs),
            ..RetryState::default()
        };
        assert_eq!(
            policy().decide(&query(), &api(429, Some(hour)), &waited(3000), 1.0),
            retry(hour, WaitReason::RetryAfter)
        );
        assert_eq!(
            policy().decide(&query(), &api(429, Some(hour)), &waited(3601), 1.0),
            give_up(GiveUpReason::RateLimitBudgetExhausted)
        );
        assert_eq!(
            policy().decide(&query(), &api(429, None), &waited(7200), 1.0),
            give_up(GiveUpReason::RateLimitBudgetExhausted)
        );
        // A wait of zero fits an exhausted budget: nothing is slept.
        assert_eq!(
            policy().decide(&query(), &api(429, None), &waited(7200), 0.0),
            retry(Duration::ZERO, WaitReason::ConcurrencyLimit)
        );
    }

    #[test]
    fn failures_stop_at_max_attempts_and_at_the_total_budget() {
        let after = |failure_waits, elapsed| RetryState {
            failure_waits,
            elapsed: Duration::from_secs(elapsed),
            ..RetryState::default()
        };
        // max_attempts 3: two retries after failures, then give up.
        assert_eq!(
            policy().decide(&query(), &api(502, None), &after(1, 0), 1.0),
            retry(2 * SECOND, WaitReason::Backoff)
        );
        assert_eq!(
            policy().decide(&query(), &api(502, None), &after(2, 0), 1.0),
            give_up(GiveUpReason::AttemptsExhausted)
        );
        // Budget 30 s: a 2 s wait after 28 s fits, after 29 s it does not.
        assert_eq!(
            policy().decide(&query(), &network(), &after(1, 28), 1.0),
            retry(2 * SECOND, WaitReason::Backoff)
        );
        assert_eq!(
            policy().decide(&query(), &network(), &after(1, 29), 1.0),
            give_up(GiveUpReason::BudgetExhausted)
        );
    }

    #[test]
    fn never_retry_means_neither_failures_nor_rate_limits() {
        let fresh = RetryState::default();
        for error in [
            network(),
            api(503, None),
            api(429, None),
            api(429, Some(SECOND)),
        ] {
            assert!(
                matches!(
                    RetryPolicy::none().decide(&query(), &error, &fresh, 1.0),
                    Decision::GiveUp(_)
                ),
                "{error}"
            );
        }
    }

    #[test]
    fn wait_reasons_have_stable_names_and_accounts() {
        let names: Vec<String> = WaitReason::ALL.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "retry_after",
                "concurrency_limit",
                "rate_limited",
                "server_retry_after",
                "backoff"
            ]
        );
        let rate_limits: Vec<bool> = WaitReason::ALL.iter().map(|r| r.is_rate_limit()).collect();
        assert_eq!(rate_limits, [true, true, true, false, false]);
        for (i, reason) in WaitReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
        assert_eq!(
            GiveUpReason::RetryAfterTooLong.to_string(),
            "retry_after_too_long"
        );
    }
}
