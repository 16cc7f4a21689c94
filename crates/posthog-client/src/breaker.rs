//! A circuit breaker: closed → open after consecutive failures → half-open single probe.
//!
//! While open, calls fail fast with [`Error::CircuitOpen`](crate::Error::CircuitOpen) and never
//! reach the network. After `open_for`, exactly one probe request is let through; its success
//! closes the circuit, its failure opens it again for another `open_for`.
//!
//! Only failures that say something about the server's health count: connection errors,
//! timeouts and 5xx. A 4xx (including 429, which is PostHog pacing us, not failing) counts as
//! a success for the breaker.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failed requests that open the circuit.
    pub failure_threshold: u32,
    /// How long the circuit stays open before a probe is allowed.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

/// The breaker's externally visible state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow; failures are being counted.
    Closed {
        /// Failures in a row so far.
        consecutive_failures: u32,
    },
    /// Requests fail fast until the probe time.
    Open {
        /// Time left until a probe is allowed.
        retry_in: Duration,
    },
    /// One probe request is (or may be) in flight; everything else fails fast.
    HalfOpen,
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_in_flight: bool },
}

/// Permission to send one request, handed out by [`CircuitBreaker::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Ordinary request while closed.
    Normal,
    /// The single half-open probe.
    Probe,
}

/// The circuit breaker shared by every request of one client.
#[derive(Debug)]
pub(crate) struct CircuitBreaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        CircuitBreaker {
            config,
            inner: Mutex::new(Inner::Closed { failures: 0 }),
        }
    }

    /// Asks to send a request. `Err(retry_in)` means fail fast.
    pub(crate) fn admit(&self) -> Result<Admission, Duration> {
        let mut inner = self.lock();
        match *inner {
            Inner::Closed { .. } => Ok(Admission::Normal),
            Inner::Open { until } => {
                let now = Instant::now();
                if now < until {
                    return Err(until - now);
                }
                *inner = Inner::HalfOpen {
                    probe_in_flight: true,
                };
                Ok(Admission::Probe)
            }
            Inner::HalfOpen {
                ref mut probe_in_flight,
            } => {
                if *probe_in_flight {
                    Err(Duration::ZERO)
                } else {
                    *probe_in_flight = true;
                    Ok(Admission::Probe)
                }
            }
        }
    }

    /// Records the outcome of an admitted request. Returns `true` when this outcome opened the
    /// circuit (a trip), so callers can count trips.
    pub(crate) fn record(&self, admission: Admission, healthy: bool) -> bool {
        let mut inner = self.lock();
        if healthy {
            *inner = Inner::Closed { failures: 0 };
            return false;
        }
        let open = Inner::Open {
            until: crate::retry::deadline_after(self.config.open_for),
        };
        match (&mut *inner, admission) {
            (Inner::Closed { failures }, _) => {
                *failures += 1;
                if *failures >= self.config.failure_threshold {
                    *inner = open;
                    return true;
                }
                false
            }
            (Inner::HalfOpen { .. }, Admission::Probe) => {
                *inner = open;
                true
            }
            // A request admitted while closed that finishes after the circuit already opened
            // adds nothing: the circuit is open either way.
            _ => false,
        }
    }

    /// Releases a probe admission whose request was never sent (e.g. cancelled while waiting
    /// for a rate-limit token), so the next caller can probe.
    pub(crate) fn release_probe(&self) {
        let mut inner = self.lock();
        if let Inner::HalfOpen { probe_in_flight } = &mut *inner {
            *probe_in_flight = false;
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        match *self.lock() {
            Inner::Closed { failures } => BreakerState::Closed {
                consecutive_failures: failures,
            },
            Inner::Open { until } => {
                let now = Instant::now();
                if now >= until {
                    BreakerState::HalfOpen
                } else {
                    BreakerState::Open {
                        retry_in: until - now,
                    }
                }
            }
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave `Inner` half-updated (every write is a
        // single assignment), so a poisoned lock is safe to reuse.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32) -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: threshold,
            open_for: Duration::from_secs(10),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_fails_fast() {
        let b = breaker(3);
        for _ in 0..2 {
            let a = b.admit().unwrap();
            assert!(!b.record(a, false));
        }
        assert_eq!(
            b.state(),
            BreakerState::Closed {
                consecutive_failures: 2
            }
        );
        let a = b.admit().unwrap();
        assert!(b.record(a, false), "third failure trips");
        let retry_in = b.admit().unwrap_err();
        assert_eq!(retry_in, Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_failure_count() {
        let b = breaker(2);
        let a = b.admit().unwrap();
        b.record(a, false);
        let a = b.admit().unwrap();
        b.record(a, true);
        let a = b.admit().unwrap();
        assert!(!b.record(a, false));
        assert!(matches!(b.state(), BreakerState::Closed { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_exactly_one_probe_through() {
        let b = breaker(1);
        let a = b.admit().unwrap();
        b.record(a, false);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.admit(), Ok(Admission::Probe));
        assert!(b.admit().is_err(), "second caller must fail fast");
        b.record(Admission::Probe, true);
        assert_eq!(
            b.state(),
            BreakerState::Closed {
                consecutive_failures: 0
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens_for_a_full_period() {
        let b = breaker(1);
        let a = b.admit().unwrap();
        b.record(a, false);
        tokio::time::advance(Duration::from_secs(11)).await;
        let probe = b.admit().unwrap();
        assert!(b.record(probe, false));
        assert_eq!(b.admit().unwrap_err(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_probe_can_be_taken_again() {
        let b = breaker(1);
        let a = b.admit().unwrap();
        b.record(a, false);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.admit(), Ok(Admission::Probe));
        b.release_probe();
        assert_eq!(b.admit(), Ok(Admission::Probe));
    }
}
