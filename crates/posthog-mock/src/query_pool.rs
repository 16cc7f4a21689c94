//! PostHog's per-project query concurrency: a pool of slots a `POST …/query/` must hold while
//! it runs, a bounded wait for one, and the hold that models a query's latency
//! ([`QueryLatency`]). Also the counters tests and benchmarks read: concurrency 429s and the
//! peak number of queries holding a slot at once.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::config::QueryLatency;
use crate::server::lock;

/// The slots of one project and what they have seen.
#[derive(Debug)]
pub(crate) struct QueryPool {
    latency: QueryLatency,
    /// Tokio's semaphore queues waiters in FIFO order, as PostHog's queue does.
    slots: Semaphore,
    counters: Mutex<PoolCounters>,
}

#[derive(Debug, Default)]
struct PoolCounters {
    /// Queries holding a slot now.
    held: usize,
    /// The most that held a slot at once since the last reset.
    peak: usize,
    /// Queries answered 429 because no slot freed up within the queue timeout.
    throttled: usize,
}

/// A query's slot, released when dropped (also when the client hangs up mid-hold).
#[derive(Debug)]
pub(crate) struct QuerySlot<'a> {
    pool: &'a QueryPool,
    _permit: SemaphorePermit<'a>,
    acquired: Instant,
}

impl QueryPool {
    pub(crate) fn new(latency: QueryLatency) -> QueryPool {
        // `Semaphore::new` panics above MAX_PERMITS; no pool could hold more queries anyway.
        let permits = latency.concurrency.min(Semaphore::MAX_PERMITS);
        QueryPool {
            latency,
            slots: Semaphore::new(permits),
            counters: Mutex::new(PoolCounters::default()),
        }
    }

    /// The configured number of slots.
    pub(crate) fn concurrency(&self) -> usize {
        self.latency.concurrency
    }

    /// The configured queue timeout.
    pub(crate) fn queue_timeout(&self) -> Duration {
        self.latency.queue_timeout
    }

    /// Waits up to the queue timeout for a slot; `None` (counted) when none freed up.
    pub(crate) async fn acquire(&self) -> Option<QuerySlot<'_>> {
        let permit =
            match tokio::time::timeout(self.latency.queue_timeout, self.slots.acquire()).await {
                Ok(Ok(permit)) => permit,
                // Timed out (or the semaphore closed, which the mock never does).
                Ok(Err(_)) | Err(_) => {
                    lock(&self.counters).throttled += 1;
                    return None;
                }
            };
        let mut counters = lock(&self.counters);
        counters.held += 1;
        counters.peak = counters.peak.max(counters.held);
        Some(QuerySlot {
            pool: self,
            _permit: permit,
            acquired: Instant::now(),
        })
    }

    /// Queries answered 429 because no slot freed up in time.
    pub(crate) fn throttled(&self) -> usize {
        lock(&self.counters).throttled
    }

    /// The most queries that held a slot at once since the last reset.
    pub(crate) fn peak_held(&self) -> usize {
        lock(&self.counters).peak
    }

    /// Zeroes the 429 count; the peak restarts from the queries holding a slot now.
    pub(crate) fn reset_counters(&self) {
        let mut counters = lock(&self.counters);
        counters.throttled = 0;
        counters.peak = counters.held;
    }
}

impl QuerySlot<'_> {
    /// Sleeps until the query has held its slot for the hold of a `rows`-row answer.
    pub(crate) async fn hold(&self, rows: usize) {
        let remaining = self
            .pool
            .latency
            .hold_for(rows)
            .saturating_sub(self.acquired.elapsed());
        if !remaining.is_zero() {
            tokio::time::sleep(remaining).await;
        }
    }
}

impl Drop for QuerySlot<'_> {
    fn drop(&mut self) {
        let mut counters = lock(&self.pool.counters);
        counters.held = counters.held.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(concurrency: usize, queue_timeout: Duration) -> QueryPool {
        QueryPool::new(QueryLatency {
            concurrency,
            queue_timeout,
            ..QueryLatency::default()
        })
    }

    #[tokio::test]
    async fn the_peak_follows_held_slots_and_survives_their_release() {
        let pool = pool(3, Duration::from_millis(10));
        let a = pool.acquire().await.expect("slot 1");
        let b = pool.acquire().await.expect("slot 2");
        assert_eq!(pool.peak_held(), 2);
        drop(a);
        let c = pool.acquire().await.expect("slot 2 again");
        assert_eq!(pool.peak_held(), 2, "two held at most");
        let d = pool.acquire().await.expect("slot 3");
        assert_eq!(pool.peak_held(), 3);
        assert!(pool.acquire().await.is_none(), "a fourth times out");
        assert_eq!(pool.throttled(), 1);
        drop((b, c));
        pool.reset_counters();
        assert_eq!(pool.throttled(), 0);
        assert_eq!(pool.peak_held(), 1, "the slot still held");
        drop(d);
    }

    #[tokio::test]
    async fn no_slots_throttles_every_query_and_huge_settings_do_not_panic() {
        let none = pool(0, Duration::ZERO);
        assert!(none.acquire().await.is_none());
        assert_eq!(none.throttled(), 1);
        let huge = QueryPool::new(QueryLatency {
            hold: Duration::MAX,
            hold_per_row: Duration::MAX,
            concurrency: usize::MAX,
            queue_timeout: Duration::MAX,
        });
        assert!(huge.acquire().await.is_some());
        assert_eq!(huge.latency.hold_for(usize::MAX), Duration::MAX);
    }
}
