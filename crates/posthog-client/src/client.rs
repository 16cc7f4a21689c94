//! [`Client`] and its builder: one connection pool, one resilience stack, shared by clones.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};

use crate::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use crate::error::Error;
use crate::ratelimit::{RateLimiter, RateLimits};
use crate::region::{Region, join};
use crate::retry::{RetryPolicy, WaitReason};

/// The `User-Agent` every request carries.
pub const USER_AGENT: &str = concat!("posthog-rs/", env!("CARGO_PKG_VERSION"));

/// A PostHog API client. Cheap to clone: clones share the connection pool, the rate-limit
/// buckets, the circuit breaker and the stats.
///
/// ```no_run
/// # async fn demo() -> Result<(), posthog_client::Error> {
/// use posthog_client::{Client, HogQlQuery, Region};
/// let client = Client::builder()
///     .region(Region::Eu)
///     .personal_api_key("phx_...")
///     .project_id("12345")
///     .build()?;
/// let result = client.query(&HogQlQuery::new("select count() from events")).await?;
/// println!("{:?}", result.results);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) http: reqwest::Client,
    pub(crate) region: Region,
    pub(crate) api_base: Url,
    pub(crate) ingest_base: Url,
    pub(crate) personal_api_key: Option<SecretString>,
    pub(crate) project_api_key: Option<SecretString>,
    pub(crate) project_id: Option<String>,
    pub(crate) retry: RetryPolicy,
    pub(crate) limiter: RateLimiter,
    pub(crate) breaker: CircuitBreaker,
    pub(crate) stats: Counters,
    pub(crate) verbose_http: bool,
    pub(crate) max_response_bytes: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) async_query_timeout: Duration,
}

/// Counters of what a client has done, and the query concurrency it settled on, for run
/// summaries and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// HTTP requests sent (every attempt counts).
    pub requests: u64,
    /// Attempts that were retries: every wait the [retry policy](RetryPolicy::decide) asked
    /// for, whatever its reason (the sum of `waits`).
    pub retries: u64,
    /// Responses with HTTP 429.
    pub throttled: u64,
    /// The waits behind `retries`, by reason.
    pub waits: WaitCounts,
    /// Times the circuit breaker opened.
    pub breaker_trips: u64,
    /// Calls refused by the open breaker without a request.
    pub fast_failures: u64,
    /// The cap on concurrent queries now: [`RateLimits::max_concurrent_queries`], lowered by
    /// one (never below 1) for every 429 PostHog sent for its query concurrency limit (without
    /// `Retry-After`). 0 only in a `Default` value.
    pub query_concurrency: usize,
}

/// Waits before a retry, counted by [`WaitReason`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WaitCounts {
    /// After a 429 with `Retry-After` ([`WaitReason::RetryAfter`]).
    pub retry_after: u64,
    /// After a 429 without `Retry-After` on `/query` ([`WaitReason::ConcurrencyLimit`]).
    pub concurrency_limit: u64,
    /// After a 429 without `Retry-After` elsewhere ([`WaitReason::RateLimited`]).
    pub rate_limited: u64,
    /// After a 5xx with `Retry-After` ([`WaitReason::ServerRetryAfter`]).
    pub server_retry_after: u64,
    /// After a connection error, timeout or 5xx without `Retry-After` ([`WaitReason::Backoff`]).
    pub backoff: u64,
}

impl WaitCounts {
    /// The count of one reason.
    pub fn of(&self, reason: WaitReason) -> u64 {
        match reason {
            WaitReason::RetryAfter => self.retry_after,
            WaitReason::ConcurrencyLimit => self.concurrency_limit,
            WaitReason::RateLimited => self.rate_limited,
            WaitReason::ServerRetryAfter => self.server_retry_after,
            WaitReason::Backoff => self.backoff,
        }
    }

    /// Waits after 429s, whatever their kind.
    pub fn rate_limit(&self) -> u64 {
        self.retry_after + self.concurrency_limit + self.rate_limited
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) throttled: AtomicU64,
    pub(crate) waits: [AtomicU64; WaitReason::ALL.len()],
    pub(crate) breaker_trips: AtomicU64,
    pub(crate) fast_failures: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a wait before a retry: one more retry, one more wait of its reason.
    pub(crate) fn record_wait(&self, reason: WaitReason) {
        Counters::bump(&self.retries);
        Counters::bump(&self.waits[reason.index()]);
    }
}

impl Client {
    /// Starts building a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The project id requests are made for.
    pub fn project_id(&self) -> Option<&str> {
        self.inner.project_id.as_deref()
    }

    /// The region (and so the base URLs) this client talks to.
    pub fn region(&self) -> &Region {
        &self.inner.region
    }

    /// A snapshot of the client's counters.
    pub fn stats(&self) -> ClientStats {
        let c = &self.inner.stats;
        ClientStats {
            requests: c.requests.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            throttled: c.throttled.load(Ordering::Relaxed),
            waits: {
                let of = |reason: WaitReason| c.waits[reason.index()].load(Ordering::Relaxed);
                WaitCounts {
                    retry_after: of(WaitReason::RetryAfter),
                    concurrency_limit: of(WaitReason::ConcurrencyLimit),
                    rate_limited: of(WaitReason::RateLimited),
                    server_retry_after: of(WaitReason::ServerRetryAfter),
                    backoff: of(WaitReason::Backoff),
                }
            },
            breaker_trips: c.breaker_trips.load(Ordering::Relaxed),
            fast_failures: c.fast_failures.load(Ordering::Relaxed),
            query_concurrency: self.inner.limiter.query_concurrency(),
        }
    }

    /// The circuit breaker's current state.
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    /// `{api_base}/api/projects/{id}{suffix}`; fails when no project id was configured.
    pub(crate) fn project_url(&self, suffix: &str) -> Result<Url, Error> {
        let id = self.project_id().ok_or_else(|| Error::Config {
            field: "project_id",
            message: "this call needs a project id; set it on the builder".into(),
        })?;
        Ok(join(
            &self.inner.api_base,
            &format!("/api/projects/{id}{suffix}"),
        ))
    }

    pub(crate) fn api_url(&self, path: &str) -> Url {
        join(&self.inner.api_base, path)
    }

    pub(crate) fn ingest_url(&self, path: &str) -> Url {
        join(&self.inner.ingest_base, path)
    }

    pub(crate) fn personal_key(&self) -> Result<&SecretString, Error> {
        self.inner
            .personal_api_key
            .as_ref()
            .ok_or_else(|| Error::Config {
                field: "personal_api_key",
                message: "this call needs a personal API key (phx_...)".into(),
            })
    }

    pub(crate) fn project_key(&self) -> Result<&str, Error> {
        self.inner
            .project_api_key
            .as_ref()
            .map(|k| k.expose_secret())
            .ok_or_else(|| Error::Config {
                field: "project_api_key",
                message: "capture and flags need the project API key (phc_...)".into(),
            })
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |k: &Option<SecretString>| if k.is_some() { "[redacted]" } else { "none" };
        f.debug_struct("Client")
            .field("region", &self.inner.region)
            .field("project_id", &self.inner.project_id)
            .field("personal_api_key", &redacted(&self.inner.personal_api_key))
            .field("project_api_key", &redacted(&self.inner.project_api_key))
            .field("retry", &self.inner.retry)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Client`]. Every setting has a sensible default except the region (default
/// [`Region::Us`]) and the credentials each call needs.
#[derive(Debug)]
pub struct ClientBuilder {
    region: Region,
    personal_api_key: Option<SecretString>,
    project_api_key: Option<SecretString>,
    project_id: Option<String>,
    request_timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
    rate_limits: RateLimits,
    breaker: BreakerConfig,
    pool_max_idle_per_host: usize,
    verbose_http: bool,
    max_response_bytes: usize,
    max_batch_bytes: usize,
    async_query_timeout: Duration,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            region: Region::Us,
            personal_api_key: None,
            project_api_key: None,
            project_id: None,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            rate_limits: RateLimits::default(),
            breaker: BreakerConfig::default(),
            pool_max_idle_per_host: 4,
            verbose_http: false,
            max_response_bytes: 512 * 1024 * 1024,
            max_batch_bytes: crate::capture::MAX_BODY_BYTES,
            async_query_timeout: Duration::from_secs(600),
        }
    }
}

impl ClientBuilder {
    /// Which PostHog to talk to.
    pub fn region(mut self, region: Region) -> Self {
        self.region = region;
        self
    }

    /// Shorthand for a self-hosted (or mock) base URL; validated in [`build`](Self::build).
    pub fn base_url(self, url: &str) -> Result<Self, Error> {
        Ok(self.region(Region::self_hosted(url)?))
    }

    /// The personal API key (`phx_…`) for the private API: queries, REST, project info.
    pub fn personal_api_key(mut self, key: impl Into<String>) -> Self {
        self.personal_api_key = Some(SecretString::from(key.into()));
        self
    }

    /// The project API key (`phc_…`, the "token") for capture and flag evaluation.
    pub fn project_api_key(mut self, key: impl Into<String>) -> Self {
        self.project_api_key = Some(SecretString::from(key.into()));
        self
    }

    /// The numeric project (environment) id.
    pub fn project_id(mut self, id: impl Into<String>) -> Self {
        self.project_id = Some(id.into());
        self
    }

    /// Timeout of one HTTP request, body included (default 30 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Timeout for establishing a connection (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How failed requests are retried.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Client-side budgets per endpoint class: sliding windows, like PostHog's throttle, and an
    /// even pace between requests.
    pub fn rate_limits(mut self, limits: RateLimits) -> Self {
        self.rate_limits = limits;
        self
    }

    /// Circuit-breaker settings.
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = config;
        self
    }

    /// Idle connections kept per host (default 4).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_max_idle_per_host = size;
        self
    }

    /// Log request and response bodies at TRACE level (secrets redacted, bodies truncated).
    pub fn verbose_http(mut self, on: bool) -> Self {
        self.verbose_http = on;
        self
    }

    /// Largest response body accepted (default 512 MiB); a larger one is a data error.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// Largest `/batch/` body sent; larger batches are split (default just under PostHog's
    /// 20 MB limit).
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes;
        self
    }

    /// How long an [asynchronous](crate::HogQlQuery::asynchronous) query may run before the
    /// client cancels it and returns a timeout (default 10 minutes).
    pub fn async_query_timeout(mut self, timeout: Duration) -> Self {
        self.async_query_timeout = timeout;
        self
    }

    /// Validates the settings and builds the client. Nothing is sent.
    pub fn build(self) -> Result<Client, Error> {
        if let Some(id) = &self.project_id
            && (id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(Error::Config {
                field: "project_id",
                message: format!("{id:?} is not a numeric project id"),
            });
        }
        validate_key(&self.personal_api_key, "personal_api_key")?;
        validate_key(&self.project_api_key, "project_api_key")?;
        let positive = |d: Duration, field| {
            if d.is_zero() {
                Err(Error::Config {
                    field,
                    message: "must be greater than zero".into(),
                })
            } else {
                Ok(())
            }
        };
        positive(self.request_timeout, "request_timeout")?;
        positive(self.connect_timeout, "connect_timeout")?;
        positive(self.async_query_timeout, "async_query_timeout")?;
        positive(self.breaker.open_for, "breaker.open_for")?;
        if self.retry.max_attempts == 0 {
            return Err(Error::Config {
                field: "retry.max_attempts",
                message: "must be at least 1".into(),
            });
        }
        if !(self.retry.factor.is_finite() && self.retry.factor >= 1.0) {
            return Err(Error::Config {
                field: "retry.factor",
                message: format!("{} must be a finite number >= 1", self.retry.factor),
            });
        }
        if self.breaker.failure_threshold == 0 {
            return Err(Error::Config {
                field: "breaker.failure_threshold",
                message: "must be at least 1".into(),
            });
        }
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(self.request_timeout)
            .connect_timeout(self.connect_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .gzip(true)
            .zstd(true)
            // Pagination links and redirects must never carry the key to another host:
            // we follow `next` ourselves and refuse cross-origin links.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Config {
                field: "http",
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                api_base: self.region.api_base(),
                ingest_base: self.region.ingest_base(),
                region: self.region,
                personal_api_key: self.personal_api_key,
                project_api_key: self.project_api_key,
                project_id: self.project_id,
                retry: self.retry,
                limiter: RateLimiter::new(&self.rate_limits)?,
                breaker: CircuitBreaker::new(self.breaker),
                stats: Counters::default(),
                verbose_http: self.verbose_http,
                max_response_bytes: self.max_response_bytes,
                max_batch_bytes: self.max_batch_bytes,
                request_timeout: self.request_timeout,
                async_query_timeout: self.async_query_timeout,
            }),
        })
    }
}

fn validate_key(key: &Option<SecretString>, field: &'static str) -> Result<(), Error> {
    let Some(key) = key else { return Ok(()) };
    let key = key.expose_secret();
    if key.is_empty() {
        return Err(Error::Config {
            field,
            message: "is empty".into(),
        });
    }
    // The key goes into a header: reject what a header cannot carry, without echoing the key.
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::Config {
            field,
            message: "contains whitespace or non-ASCII characters".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_keys() {
        let client = Client::builder()
            .personal_api_key("phx_SuperSecret1")
            .project_api_key("phc_AlsoSecret2")
            .project_id("7")
            .build()
            .unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("SuperSecret1") && !shown.contains("AlsoSecret2"));
        assert!(shown.contains("[redacted]"));
        let builder = format!(
            "{:?}",
            Client::builder().personal_api_key("phx_SuperSecret1")
        );
        assert!(!builder.contains("SuperSecret1"), "{builder}");
    }

    #[test]
    fn invalid_settings_name_their_field() {
        let cases: Vec<(ClientBuilder, &str)> = vec![
            (Client::builder().project_id("12a"), "project_id"),
            (Client::builder().personal_api_key(""), "personal_api_key"),
            (
                Client::builder().personal_api_key("phx_a b"),
                "personal_api_key",
            ),
            (
                Client::builder().request_timeout(Duration::ZERO),
                "request_timeout",
            ),
            (
                Client::builder().retry_policy(RetryPolicy {
                    max_attempts: 0,
                    ..RetryPolicy::default()
                }),
                "retry.max_attempts",
            ),
            (
                Client::builder().retry_policy(RetryPolicy {
                    factor: f32::NAN,
                    ..RetryPolicy::default()
                }),
                "retry.factor",
            ),
        ];
        for (builder, field) in cases {
            let err = builder.build().unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("invalid client configuration: {field}")),
                "{err}"
            );
            assert!(!err.to_string().contains("phx_a b"));
        }
    }
}
