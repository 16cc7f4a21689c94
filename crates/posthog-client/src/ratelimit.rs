//! Client-side rate limiting, one limiter per endpoint class, so a client never exceeds the
//! budget PostHog documents (or one the caller configures). Callers wait their turn; they never
//! fail. The rule is documented for users on [`RateLimits`]; in short:
//!
//! PostHog throttles with Django REST framework's `SimpleRateThrottle`: a sliding-window *log*.
//! A request is refused with 429 when the last `per` already holds `requests` requests. A token
//! bucket (GCRA) with a burst of `requests` does not fit that rule: it sends `requests` at once,
//! then one every `per / requests`, so some window of length `per` sees nearly twice the budget
//! and the server answers 429. The limiter here mirrors the server instead:
//!
//! - **Every budget is a sliding-window log** of the instants requests were admitted (at most
//!   `requests` of them). A request may go when fewer than `requests` were admitted in the last
//!   `per × 1.01`; the 1 % margin absorbs network latency jitter and clock differences between
//!   client and server, so the server never counts one request too many.
//! - **Requests of a class are paced** at least `per / requests` of the class's
//!   *shortest-period* budget apart (PostHog's 240/min for `/query` means one every 250 ms). A
//!   configured `R` per minute thus gives an even rate: `Q` requests take about `Q / R` minutes.
//!   An even pace never bursts into PostHog's limit of 3 concurrent queries per project either.
//!   Longer budgets (per hour) are only logs: the hour's budget may be used at the paced rate,
//!   after which requests wait until the oldest ones leave the hour.
//!
//! A request is recorded in every budget of its class at the moment it is admitted, under the
//! same lock that checked the budgets, so concurrent callers can never overrun a budget. The lock
//! is never held while waiting: a caller computes how long to wait, releases it, sleeps and checks
//! again. Time is [`tokio::time::Instant`], so tests can run on tokio's paused clock.
//!
//! Queries also hold one of `max_concurrent_queries` slots while in flight. PostHog's limit of
//! 3 per project is shared with every other client of the project, so when it answers a query
//! 429 without `Retry-After` (over that limit) the send path lowers the cap by one, never below
//! 1, for the rest of the client's life; a reduction while every slot is held takes effect as
//! the slots are released.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

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

/// A budget: at most `requests` in any window of length `per`, PostHog's sliding-window rule.
///
/// The client keeps a margin of 1 % on the window and spaces requests evenly; see
/// [`RateLimits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Requests allowed in any window of length `per`.
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

    fn validate(self, field: &'static str) -> Result<Self, Error> {
        if self.requests == 0 || self.per.is_zero() {
            return Err(Error::Config {
                field,
                message: format!(
                    "budget of {} requests per {:?} is invalid; both must be positive",
                    self.requests, self.per
                ),
            });
        }
        Ok(self)
    }

    /// The window the client keeps: `per` plus a 1 % margin.
    fn window(self) -> Duration {
        self.per.saturating_add(self.per / 100)
    }
}

/// Budgets per endpoint class. The defaults are PostHog's documented limits:
/// `/query` 240/min and 2400/h; analytics 240/min and 1200/h; CRUD 480/min and 4800/h.
/// Some accounts are on an older 120/h query limit: configure `query` accordingly.
///
/// # How budgets are kept
///
/// PostHog counts requests in sliding windows (Django REST framework's `SimpleRateThrottle`): a
/// request is refused with 429 when the last `per` already holds `requests` requests. A token
/// bucket that allows a burst of `requests` would send them all at once and then keep going at
/// the average rate, so some window would see nearly twice the budget. The client follows the
/// server's rule instead:
///
/// - Each [`Budget`] is a sliding window: a request goes only when fewer than `requests` were
///   sent in the last `per` plus 1 % (a margin for network and clock differences between client
///   and server).
/// - Requests of a class are spaced at least `per / requests` of its *shortest-period* budget
///   apart: the defaults send one query every 250 ms, and `R` per minute sends `Q` requests in
///   about `Q / R` minutes. An even pace never bursts into PostHog's limit of 3 concurrent
///   queries either.
/// - Longer budgets (per hour) are windows only: the hour's budget can be used at the paced
///   rate, after which requests wait until the oldest leave the hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// Budgets for `/query`.
    pub query: Vec<Budget>,
    /// Budgets for analytics endpoints.
    pub analytics: Vec<Budget>,
    /// Budgets for other private endpoints.
    pub crud: Vec<Budget>,
    /// Concurrent `/query` requests allowed (PostHog runs at most 3 per project). The client
    /// lowers its cap by one, never below 1 and for the rest of its life, each time PostHog
    /// answers a query 429 without `Retry-After` (its concurrency limit: other clients of the
    /// project hold slots too); [`ClientStats::query_concurrency`](crate::ClientStats) says
    /// where it stands.
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

/// The live limiters built from [`RateLimits`].
#[derive(Debug)]
pub(crate) struct RateLimiter {
    query: Option<ClassLimiter>,
    analytics: Option<ClassLimiter>,
    crud: Option<ClassLimiter>,
    queries_in_flight: QuerySlots,
}

/// Held while a request is in flight; releases the query concurrency slot on drop.
pub(crate) struct Permit<'a> {
    slot: Option<(&'a QuerySlots, SemaphorePermit<'a>)>,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Some((slots, permit)) = self.slot.take() {
            slots.release(permit);
        }
    }
}

/// The cap on concurrent queries: a semaphore of `cap` permits, and a cap that can be lowered
/// while every permit is held.
///
/// Lowering forgets a free permit when there is one; when all are held it is owed instead, and
/// the next permit released is forgotten rather than returned. Both happen under one lock, so
/// a permit never frees up while a reduction is owed, and `permits − owed = cap` always holds:
/// once the queries in flight above a lowered cap end, no more than `cap` run at once.
#[derive(Debug)]
struct QuerySlots {
    semaphore: Semaphore,
    state: Mutex<SlotsState>,
}

#[derive(Debug)]
struct SlotsState {
    cap: usize,
    /// Reductions of the cap still to take out of the semaphore, one per permit released.
    owed: usize,
}

impl QuerySlots {
    fn new(cap: usize) -> Self {
        QuerySlots {
            semaphore: Semaphore::new(cap),
            state: Mutex::new(SlotsState { cap, owed: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotsState> {
        // Nothing under the lock can panic with the state half-updated.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn acquire(&self) -> Option<SemaphorePermit<'_>> {
        // The semaphore is never closed, so acquire cannot fail.
        self.semaphore.acquire().await.ok()
    }

    fn release(&self, permit: SemaphorePermit<'_>) {
        let mut state = self.lock();
        if state.owed > 0 {
            state.owed -= 1;
            permit.forget();
        } else {
            // Released under the lock, so `lower` never sees a permit free up mid-way.
            drop(permit);
        }
    }

    /// Lowers the cap by one; the new cap, or `None` when it is already 1.
    fn lower(&self) -> Option<usize> {
        let mut state = self.lock();
        if state.cap <= 1 {
            return None;
        }
        state.cap -= 1;
        if self.semaphore.forget_permits(1) == 0 {
            state.owed += 1;
        }
        Some(state.cap)
    }

    fn cap(&self) -> usize {
        self.lock().cap
    }
}

/// The budgets of one endpoint class: their sliding-window logs and the pace between requests.
#[derive(Debug)]
struct ClassLimiter {
    /// Least time between two admissions: `per / requests` of the shortest-period budget (the
    /// tightest of them if several share that period).
    pace: Duration,
    state: Mutex<ClassState>,
}

#[derive(Debug)]
struct ClassState {
    /// When the last request was admitted.
    last: Option<Instant>,
    logs: Vec<WindowLog>,
}

/// One budget's sliding-window log: the instants of the requests admitted within `window`.
#[derive(Debug)]
struct WindowLog {
    requests: usize,
    /// `per` plus the 1 % margin.
    window: Duration,
    /// Admission instants, oldest first; never more than `requests`.
    sent: VecDeque<Instant>,
}

impl ClassLimiter {
    /// `None` when the class has no budgets (never waits).
    fn new(budgets: &[Budget], field: &'static str) -> Result<Option<Self>, Error> {
        let budgets = budgets
            .iter()
            .map(|b| b.validate(field))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(shortest) = budgets.iter().map(|b| b.per).min() else {
            return Ok(None);
        };
        let pace = budgets
            .iter()
            .filter(|b| b.per == shortest)
            .map(|b| b.per / b.requests)
            .max()
            .unwrap_or_default();
        let logs = budgets
            .iter()
            .map(|b| WindowLog {
                requests: b.requests as usize,
                window: b.window(),
                sent: VecDeque::new(),
            })
            .collect();
        Ok(Some(ClassLimiter {
            pace,
            state: Mutex::new(ClassState { last: None, logs }),
        }))
    }

    /// Admits a request now and records it in every budget, or says how long to wait before
    /// asking again. Checking and recording happen under one lock, so concurrent callers can
    /// never both take the last place in a window.
    fn try_admit(&self) -> Result<(), Duration> {
        // Nothing below can panic with the state half-updated, so a poisoned lock is still sound.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // Read the clock under the lock so every log stays in admission order.
        let now = Instant::now();
        let mut wait = state.last.map_or(Duration::ZERO, |last| {
            self.pace.saturating_sub(now.duration_since(last))
        });
        for log in &mut state.logs {
            while log
                .sent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= log.window)
            {
                log.sent.pop_front();
            }
            // The log never holds more than `requests`: when it is full, wait until its oldest
            // request leaves the window.
            if log.sent.len() >= log.requests
                && let Some(oldest) = log.sent.front()
            {
                wait = wait.max(log.window.saturating_sub(now.duration_since(*oldest)));
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        for log in &mut state.logs {
            log.sent.push_back(now);
        }
        state.last = Some(now);
        Ok(())
    }

    /// Waits until a request may be sent and records it; returns how long that took. The lock is
    /// released while sleeping, and a cancelled wait leaves nothing recorded.
    async fn admit(&self) -> Duration {
        let started = Instant::now();
        let mut slept = false;
        while let Err(wait) = self.try_admit() {
            slept = true;
            tokio::time::sleep(wait).await;
        }
        if slept {
            started.elapsed()
        } else {
            Duration::ZERO
        }
    }
}

impl RateLimiter {
    pub(crate) fn new(limits: &RateLimits) -> Result<Self, Error> {
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
            query: ClassLimiter::new(&limits.query, "rate_limits.query")?,
            analytics: ClassLimiter::new(&limits.analytics, "rate_limits.analytics")?,
            crud: ClassLimiter::new(&limits.crud, "rate_limits.crud")?,
            queries_in_flight: QuerySlots::new(limits.max_concurrent_queries),
        })
    }

    /// Waits until a request of `class` may be sent, and returns a permit to hold while it is.
    /// Returns how long it waited for the class's budgets (not for a query slot), for tracing.
    pub(crate) async fn acquire(&self, class: EndpointClass) -> (Permit<'_>, Duration) {
        let slot = match class {
            EndpointClass::Query => self
                .queries_in_flight
                .acquire()
                .await
                .map(|permit| (&self.queries_in_flight, permit)),
            _ => None,
        };
        let limiter = match class {
            EndpointClass::Query => &self.query,
            EndpointClass::Analytics => &self.analytics,
            EndpointClass::Crud => &self.crud,
            EndpointClass::Public => &None,
        };
        let waited = match limiter {
            Some(limiter) => limiter.admit().await,
            None => Duration::ZERO,
        };
        (Permit { slot }, waited)
    }

    /// Lowers the cap on concurrent queries by one for the rest of the limiter's life, never
    /// below 1: the new cap, or `None` when it was already 1. Queries in flight above the new
    /// cap run on; no new one starts until fewer than the cap are in flight.
    pub(crate) fn lower_query_concurrency(&self) -> Option<usize> {
        self.queries_in_flight.lower()
    }

    /// The cap on concurrent queries now.
    pub(crate) fn query_concurrency(&self) -> usize {
        self.queries_in_flight.cap()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn crud_only(budgets: Vec<Budget>) -> RateLimiter {
        RateLimiter::new(&RateLimits {
            crud: budgets,
            ..RateLimits::unlimited()
        })
        .unwrap()
    }

    /// Admission instants of `n` requests made one after another.
    async fn admit_in_turn(limiter: &RateLimiter, n: usize) -> Vec<Instant> {
        let mut at = Vec::with_capacity(n);
        for _ in 0..n {
            let _ = limiter.acquire(EndpointClass::Crud).await;
            at.push(Instant::now());
        }
        at
    }

    /// Panics unless every window of `window` (half-open, starting at any instant) holds at most
    /// `requests` of the sorted instants `at`.
    fn assert_no_window_overrun(at: &[Instant], requests: usize, window: Duration) {
        for (i, pair) in at.windows(requests + 1).enumerate() {
            let span = pair[requests].duration_since(pair[0]);
            assert!(
                span >= window,
                "requests {i}..={} fall within {span:?}: more than {requests} per {window:?}",
                i + requests
            );
        }
    }

    fn assert_spaced(at: &[Instant], pace: Duration) {
        for (i, pair) in at.windows(2).enumerate() {
            let gap = pair[1].duration_since(pair[0]);
            assert!(gap >= pace, "requests {i} and {} are {gap:?} apart", i + 1);
        }
    }

    #[test]
    fn zero_budgets_are_rejected_with_the_field_name() {
        for budget in [
            Budget {
                requests: 0,
                per: Duration::from_secs(1),
            },
            Budget {
                requests: 1,
                per: Duration::ZERO,
            },
        ] {
            let limits = RateLimits {
                query: vec![budget],
                ..RateLimits::default()
            };
            let err = RateLimiter::new(&limits).unwrap_err();
            assert!(err.to_string().contains("rate_limits.query"), "{err}");
        }
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

    #[test]
    fn the_pace_comes_from_the_shortest_period_budget() {
        let limiter = RateLimiter::new(&RateLimits::default()).unwrap();
        let pace = |l: &Option<ClassLimiter>| l.as_ref().unwrap().pace;
        assert_eq!(pace(&limiter.query), Duration::from_millis(250));
        assert_eq!(pace(&limiter.analytics), Duration::from_millis(250));
        assert_eq!(pace(&limiter.crud), Duration::from_millis(125));
        // Two budgets over the same shortest period: the tighter one sets the pace.
        let limiter = crud_only(vec![
            Budget::per_hour(10),
            Budget::per_minute(120),
            Budget::per_minute(60),
        ]);
        assert_eq!(pace(&limiter.crud), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_paced_not_burst() {
        let limiter = crud_only(vec![Budget {
            requests: 3,
            per: Duration::from_millis(300),
        }]);
        let (_p, waited) = limiter.acquire(EndpointClass::Crud).await;
        assert_eq!(waited, Duration::ZERO, "the first request goes at once");
        for _ in 0..2 {
            let (_p, waited) = limiter.acquire(EndpointClass::Crud).await;
            assert_eq!(waited, Duration::from_millis(100), "one every 300 ms / 3");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ten_per_minute_is_an_even_pace_that_never_overruns_a_window() {
        let limiter = crud_only(vec![Budget::per_minute(10)]);
        let at = admit_in_turn(&limiter, 25).await;
        assert_spaced(&at, Duration::from_secs(6));
        assert_no_window_overrun(&at, 10, Duration::from_millis(60_600));
        // 24 gaps of 6 s, plus the 1 % margin (0.6 s) each time a full window slides: ≈ 144 s.
        let total = at[24].duration_since(at[0]);
        assert!(
            (Duration::from_secs(144)..=Duration::from_millis(146_200)).contains(&total),
            "25 requests took {total:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn several_budgets_are_each_kept_and_the_shortest_sets_the_pace() {
        let short = Budget {
            requests: 5,
            per: Duration::from_secs(10),
        };
        let long = Budget {
            requests: 8,
            per: Duration::from_secs(60),
        };
        let limiter = crud_only(vec![long, short]);
        let at = admit_in_turn(&limiter, 20).await;
        assert_no_window_overrun(&at, 5, Duration::from_millis(10_100));
        assert_no_window_overrun(&at, 8, Duration::from_millis(60_600));
        assert_spaced(&at, Duration::from_secs(2));
        // Paced by 10 s / 5, not by 60 s / 8: the first five go 2 s apart.
        for pair in at[..5].windows(2) {
            assert_eq!(pair[1].duration_since(pair[0]), Duration::from_secs(2));
        }
        // The long budget holds the ninth back until the first leaves its 60.6 s window.
        assert_eq!(at[8].duration_since(at[0]), Duration::from_millis(60_600));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_never_exceed_the_budget() {
        let limiter = Arc::new(crud_only(vec![Budget {
            requests: 4,
            per: Duration::from_secs(1),
        }]));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    let _ = limiter.acquire(EndpointClass::Crud).await;
                    Instant::now()
                })
            })
            .collect();
        let mut at = Vec::new();
        for task in tasks {
            at.push(task.await.unwrap());
        }
        at.sort();
        assert_eq!(at.len(), 20);
        assert_spaced(&at, Duration::from_millis(250));
        assert_no_window_overrun(&at, 4, Duration::from_millis(1010));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_wait_takes_no_place_in_the_budget() {
        let limiter = crud_only(vec![Budget {
            requests: 2,
            per: Duration::from_secs(10),
        }]);
        let start = Instant::now();
        let _ = limiter.acquire(EndpointClass::Crud).await;
        let gave_up =
            tokio::time::timeout(Duration::from_secs(1), limiter.acquire(EndpointClass::Crud))
                .await;
        assert!(gave_up.is_err(), "the second request has to wait 5 s");
        let _ = limiter.acquire(EndpointClass::Crud).await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        // Two admitted, so the third waits for the first to leave the 10.1 s window.
        let _ = limiter.acquire(EndpointClass::Crud).await;
        assert_eq!(start.elapsed(), Duration::from_millis(10_100));
    }

    fn queries_at_most(cap: usize) -> RateLimiter {
        RateLimiter::new(&RateLimits {
            max_concurrent_queries: cap,
            ..RateLimits::unlimited()
        })
        .unwrap()
    }

    /// Takes query slots until none is free; how many it got.
    async fn free_slots(limiter: &RateLimiter) -> usize {
        let mut held = Vec::new();
        while let Ok((permit, _)) = tokio::time::timeout(
            Duration::from_millis(1),
            limiter.acquire(EndpointClass::Query),
        )
        .await
        {
            held.push(permit);
        }
        held.len()
    }

    #[tokio::test(start_paused = true)]
    async fn the_query_cap_lowers_one_at_a_time_down_to_one() {
        let limiter = queries_at_most(3);
        assert_eq!(limiter.query_concurrency(), 3);
        assert_eq!(free_slots(&limiter).await, 3);
        assert_eq!(limiter.lower_query_concurrency(), Some(2));
        assert_eq!(limiter.query_concurrency(), 2);
        assert_eq!(free_slots(&limiter).await, 2);
        assert_eq!(limiter.lower_query_concurrency(), Some(1));
        assert_eq!(limiter.lower_query_concurrency(), None, "never below 1");
        assert_eq!(limiter.lower_query_concurrency(), None);
        assert_eq!(limiter.query_concurrency(), 1);
        assert_eq!(free_slots(&limiter).await, 1);
        // Other classes hold no slot.
        let (_crud, _) = limiter.acquire(EndpointClass::Crud).await;
        assert_eq!(free_slots(&limiter).await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn lowering_while_every_slot_is_held_takes_effect_as_they_are_released() {
        let limiter = queries_at_most(3);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(limiter.acquire(EndpointClass::Query).await.0);
        }
        assert_eq!(limiter.lower_query_concurrency(), Some(2));
        assert_eq!(limiter.lower_query_concurrency(), Some(1));
        assert_eq!(limiter.query_concurrency(), 1, "the cap is lowered at once");
        // The first two released pay off the reductions: nothing frees up.
        held.pop();
        assert_eq!(free_slots(&limiter).await, 0);
        held.pop();
        assert_eq!(free_slots(&limiter).await, 0);
        held.pop();
        assert_eq!(free_slots(&limiter).await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_query_gets_no_slot_a_reduction_is_owed() {
        let limiter = Arc::new(queries_at_most(2));
        let first = limiter.acquire(EndpointClass::Query).await.0;
        let second = limiter.acquire(EndpointClass::Query).await.0;
        let waiter = {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let _slot = limiter.acquire(EndpointClass::Query).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(limiter.lower_query_concurrency(), Some(1));
        drop(first);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!waiter.is_finished(), "one query is in flight: the cap");
        drop(second);
        tokio::time::timeout(Duration::from_millis(1), waiter)
            .await
            .expect("the waiter goes once the last slot is free")
            .unwrap();
        assert_eq!(free_slots(&limiter).await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_queries_never_exceed_a_cap_lowered_under_load() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let limiter = Arc::new(queries_at_most(3));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak_after = Arc::new(AtomicUsize::new(0));
        let lowered = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks: Vec<_> = (0..30)
            .map(|i| {
                let (limiter, in_flight) = (limiter.clone(), in_flight.clone());
                let (peak_after, lowered) = (peak_after.clone(), lowered.clone());
                tokio::spawn(async move {
                    let (_slot, _) = limiter.acquire(EndpointClass::Query).await;
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    if lowered.load(Ordering::SeqCst) {
                        peak_after.fetch_max(now, Ordering::SeqCst);
                    }
                    if i == 1 {
                        limiter.lower_query_concurrency();
                        limiter.lower_query_concurrency();
                        lowered.store(true, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        // The three in flight when it was lowered ran on; every query that started later
        // found itself alone.
        assert_eq!(limiter.query_concurrency(), 1);
        assert_eq!(peak_after.load(Ordering::SeqCst), 1);
        assert_eq!(free_slots(&limiter).await, 1);
    }

    #[tokio::test]
    async fn public_endpoints_are_not_limited() {
        let limiter = crud_only(vec![Budget {
            requests: 1,
            per: Duration::from_secs(3600),
        }]);
        for _ in 0..100 {
            let (_p, waited) = limiter.acquire(EndpointClass::Public).await;
            assert_eq!(waited, Duration::ZERO);
        }
    }
}
