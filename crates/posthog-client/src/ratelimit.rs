//! Client-side token buckets, one set per endpoint class, so a client never exceeds the budget
//! PostHog documents (or one the caller configures). Callers wait for a token; they never fail.
//!
//! Each class may carry several budgets at once (PostHog's are per minute *and* per hour); a
//! request takes one token from every budget of its class. Waiting on one budget after another
//! may leave a token taken and unused, which only ever errs on the side of sending less.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use tokio::sync::Semaphore;

use crate::error::Error;

/// Which PostHog rate-limit bucket an endpoint belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndpointClass {
    /// `POST /query/` and query status polls.
    Query,
    /// Analytics endpoints such as persons and insights.
    Analytics,
    /// Other private API endpoints: cohorts, flags, definitions, project, user.
    Crud,
    /// Public ingestion endpoints (`/i/v0/e/`, `/batch/`, `/flags`): not rate limited.
    Public,
}

impl EndpointClass {
    /// Stable name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointClass::Query => "query",
            EndpointClass::Analytics => "analytics",
            EndpointClass::Crud => "crud",
            EndpointClass::Public => "public",
        }
    }
}

/// A budget: at most `requests` per `per`, replenished continuously.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Requests allowed per period; also the burst size.
    pub requests: u32,
    /// The period.
    pub per: Duration,
}

impl Budget {
    /// `requests` per minute.
    pub const fn per_minute(requests: u32) -> Budget {
        Budget {
            requests,
            per: Duration::from_secs(60),
        }
    }

    /// `requests` per hour.
    pub const fn per_hour(requests: u32) -> Budget {
        Budget {
            requests,
            per: Duration::from_secs(3600),
        }
    }

    fn quota(self, field: &'static str) -> Result<Quota, Error> {
        let invalid = || Error::Config {
            field,
            message: format!(
                "budget of {} requests per {:?} is invalid; both must be positive",
                self.requests, self.per
            ),
        };
        let burst = NonZeroU32::new(self.requests).ok_or_else(invalid)?;
        let interval = self.per / self.requests;
        Quota::with_period(interval)
            .map(|q| q.allow_burst(burst))
            .ok_or_else(invalid)
    }
}

/// Budgets per endpoint class. The defaults are PostHog's documented limits:
/// `/query` 240/min and 2400/h; analytics 240/min and 1200/h; CRUD 480/min and 4800/h.
/// Some accounts are on an older 120/h query limit: configure `query` accordingly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// Budgets for `/query`.
    pub query: Vec<Budget>,
    /// Budgets for analytics endpoints.
    pub analytics: Vec<Budget>,
    /// Budgets for other private endpoints.
    pub crud: Vec<Budget>,
    /// Concurrent `/query` requests allowed (PostHog runs at most 3 per project).
    pub max_concurrent_queries: usize,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            query: vec![Budget::per_minute(240), Budget::per_hour(2400)],
            analytics: vec![Budget::per_minute(240), Budget::per_hour(1200)],
            crud: vec![Budget::per_minute(480), Budget::per_hour(4800)],
            max_concurrent_queries: 3,
        }
    }
}

impl RateLimits {
    /// No client-side limits at all (tests, or a self-hosted instance without throttling).
    pub fn unlimited() -> Self {
        RateLimits {
            query: Vec::new(),
            analytics: Vec::new(),
            crud: Vec::new(),
            max_concurrent_queries: usize::MAX >> 4,
        }
    }
}

/// The live token buckets built from [`RateLimits`].
#[derive(Debug)]
pub(crate) struct RateLimiter {
    query: Vec<DefaultDirectRateLimiter>,
    analytics: Vec<DefaultDirectRateLimiter>,
    crud: Vec<DefaultDirectRateLimiter>,
    queries_in_flight: Semaphore,
}

/// Held while a request is in flight; releases the query concurrency slot on drop.
pub(crate) struct Permit<'a> {
    _slot: Option<tokio::sync::SemaphorePermit<'a>>,
}

impl RateLimiter {
    pub(crate) fn new(limits: &RateLimits) -> Result<Self, Error> {
        let build = |budgets: &[Budget], field| -> Result<Vec<_>, Error> {
            budgets
                .iter()
                .map(|b| Ok(DefaultDirectRateLimiter::direct(b.quota(field)?)))
                .collect()
        };
        if !(1..=Semaphore::MAX_PERMITS).contains(&limits.max_concurrent_queries) {
            return Err(Error::Config {
                field: "rate_limits.max_concurrent_queries",
                message: format!(
                    "{} is out of range 1..={}",
                    limits.max_concurrent_queries,
                    Semaphore::MAX_PERMITS
                ),
            });
        }
        Ok(RateLimiter {
            query: build(&limits.query, "rate_limits.query")?,
            analytics: build(&limits.analytics, "rate_limits.analytics")?,
            crud: build(&limits.crud, "rate_limits.crud")?,
            queries_in_flight: Semaphore::new(limits.max_concurrent_queries),
        })
    }

    /// Waits until a request of `class` may be sent, and returns a permit to hold while it is.
    /// Returns how long it waited for tokens, for tracing.
    pub(crate) async fn acquire(&self, class: EndpointClass) -> (Permit<'_>, Duration) {
        let slot = match class {
            // The semaphore is never closed, so acquire cannot fail.
            EndpointClass::Query => self.queries_in_flight.acquire().await.ok(),
            _ => None,
        };
        let buckets = match class {
            EndpointClass::Query => &self.query,
            EndpointClass::Analytics => &self.analytics,
            EndpointClass::Crud => &self.crud,
            EndpointClass::Public => return (Permit { _slot: slot }, Duration::ZERO),
        };
        let mut waited = Duration::ZERO;
        for bucket in buckets {
            while let Err(not_until) = bucket.check() {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                waited = waited.saturating_add(wait);
                tokio::time::sleep(wait).await;
            }
        }
        (Permit { _slot: slot }, waited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_budgets_are_rejected_with_the_field_name() {
        let limits = RateLimits {
            query: vec![Budget {
                requests: 0,
                per: Duration::from_secs(1),
            }],
            ..RateLimits::default()
        };
        let err = RateLimiter::new(&limits).unwrap_err();
        assert!(err.to_string().contains("rate_limits.query"), "{err}");
    }

    #[test]
    fn an_impossible_concurrency_cap_is_an_error_not_a_panic() {
        for cap in [0, usize::MAX] {
            let limits = RateLimits {
                max_concurrent_queries: cap,
                ..RateLimits::default()
            };
            let err = RateLimiter::new(&limits).unwrap_err();
            assert!(err.to_string().contains("max_concurrent_queries"), "{err}");
        }
    }

    #[tokio::test]
    async fn a_burst_is_allowed_then_requests_wait() {
        let limits = RateLimits {
            crud: vec![Budget {
                requests: 3,
                per: Duration::from_millis(300),
            }],
            ..RateLimits::unlimited()
        };
        let limiter = RateLimiter::new(&limits).unwrap();
        for _ in 0..3 {
            let (_p, waited) = limiter.acquire(EndpointClass::Crud).await;
            assert_eq!(waited, Duration::ZERO, "burst of 3 is immediate");
        }
        let (_p, waited) = limiter.acquire(EndpointClass::Crud).await;
        assert!(waited > Duration::ZERO, "fourth request had to wait");
    }

    #[tokio::test]
    async fn public_endpoints_are_not_limited() {
        let limits = RateLimits {
            crud: vec![Budget {
                requests: 1,
                per: Duration::from_secs(3600),
            }],
            ..RateLimits::unlimited()
        };
        let limiter = RateLimiter::new(&limits).unwrap();
        for _ in 0..100 {
            let (_p, waited) = limiter.acquire(EndpointClass::Public).await;
            assert_eq!(waited, Duration::ZERO);
        }
    }
}
