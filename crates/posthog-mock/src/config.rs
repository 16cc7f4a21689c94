//! Server configuration: keys, project, time zone, data, LIMIT clamp, throttling, random
//! faults and the query latency model.

use std::time::Duration;

use time::UtcOffset;
use time::macros::offset;

use crate::data::{Dataset, GenSpec};

/// The project's time zone: an IANA name (reported to clients) and the fixed offset the mock
/// uses for it. The mock has no tz database, so daylight saving time is not modelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectTimezone {
    /// IANA name, e.g. `Asia/Kolkata`; appears in `types` and in the `timezone` fields.
    pub name: String,
    /// Offset used to render and parse wall times in this zone.
    pub offset: UtcOffset,
}

impl ProjectTimezone {
    /// A zone with the given name and fixed offset.
    pub fn new(name: impl Into<String>, offset: UtcOffset) -> Self {
        ProjectTimezone {
            name: name.into(),
            offset,
        }
    }

    /// UTC.
    pub fn utc() -> Self {
        ProjectTimezone::new("UTC", UtcOffset::UTC)
    }
}

impl Default for ProjectTimezone {
    /// `Asia/Kolkata`, +05:30: deliberately not UTC so clients must honour offsets.
    fn default() -> Self {
        ProjectTimezone::new("Asia/Kolkata", offset!(+05:30))
    }
}

/// A server-side throttle over the private API: at most `max_requests` in any sliding window of
/// length `per`; requests beyond it get 429 with an integer `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub max_requests: u32,
    /// Window length.
    pub per: Duration,
}

/// Seeded probabilistic faults, drawn once per request (control routes excepted). The rates are
/// probabilities in `0.0..=1.0` and are tried in order: server error, reset, throttle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomFaults {
    /// Seed of the fault generator: the same seed and request sequence give the same faults.
    pub seed: u64,
    /// Probability of a 500, 502, 503 or 504 (chosen uniformly).
    pub server_error_rate: f64,
    /// Probability of closing the connection without a response.
    pub reset_rate: f64,
    /// Probability of a 429 without `Retry-After` (PostHog's concurrency limit).
    pub throttle_rate: f64,
}

/// PostHog's cap on a top-level HogQL `LIMIT` for API queries (`MAX_SELECT_RETURNED_ROWS`, see
/// posthog-api.md §1): the default of [`MockConfig::limit_clamp`].
pub const DEFAULT_LIMIT_CLAMP: usize = 50_000;

/// One scheduled change of the LIMIT clamp: once `after_queries` query requests have reached
/// the server, the clamp becomes `limit_clamp` (so request `after_queries + 1` is the first to
/// see it). Query requests are `POST …/query/` requests (route class `Query`), faulted ones
/// included, counted from the server's start (never reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitClampChange {
    /// Number of query requests after which the change takes effect.
    pub after_queries: u64,
    /// The new clamp.
    pub limit_clamp: usize,
}

/// PostHog's per-project limit on queries running at once (posthog-api.md §2 "3 concurrent"):
/// the default of [`QueryLatency::concurrency`].
pub const DEFAULT_QUERY_CONCURRENCY: usize = 3;

/// How long PostHog lets a query wait for a free slot before it gives up with 429
/// (posthog-api.md §1 "429"): the default of [`QueryLatency::queue_timeout`].
pub const DEFAULT_QUERY_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// A model of PostHog's query latency and per-project query concurrency, applied to
/// `POST …/query/` requests only (REST lists, query status polls and control routes are never
/// held).
///
/// A query first takes one of `concurrency` slots. When all are taken it waits in a FIFO queue;
/// if no slot frees up within `queue_timeout` it gets PostHog's concurrency 429: the
/// `throttled_error` body and **no** `Retry-After`. Once it has a slot it is evaluated and then
/// held until `hold + rows × hold_per_row` have passed since it got the slot (`rows`: the
/// result rows it returns; the mock's own evaluation time counts towards the hold, it is not
/// added to it). The slot is released when the response body has been produced, before it is
/// gzipped and sent — PostHog's limiter likewise wraps the query's execution, not the
/// transfer. A query whose client hangs up releases its slot (or its place in the queue) at
/// once.
///
/// Request validation, authentication and the [`RateLimit`] run before the slot is taken, so
/// those errors are never queued. A query submitted with `refresh: async` is evaluated when it
/// is submitted, so its `POST` is queued and held too.
///
/// Real PostHog queries take about a second or more: `hold: 1 s`, or `hold_per_row: 100 µs`
/// so that a 10 000-row page is held one second. With `concurrency: 0` every query waits out
/// the queue timeout and gets 429.
///
/// ```
/// use std::time::Duration;
/// use posthog_mock::{MockConfig, QueryLatency};
///
/// // 3 slots, a 30 s queue; 200 ms + 80 µs per row: a 10 000-row page is held one second.
/// let latency = QueryLatency::new(Duration::from_millis(200), Duration::from_micros(80));
/// assert_eq!(latency.hold_for(10_000), Duration::from_secs(1));
/// let config = MockConfig {
///     query_latency: Some(latency),
///     ..MockConfig::default()
/// };
/// # drop(config);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLatency {
    /// Fixed part of the time a query holds its slot.
    pub hold: Duration,
    /// Added to the hold for every row the query returns.
    pub hold_per_row: Duration,
    /// Queries of the project that may hold a slot at once (default
    /// [`DEFAULT_QUERY_CONCURRENCY`]).
    pub concurrency: usize,
    /// The longest a query waits for a slot before it gets 429 (default
    /// [`DEFAULT_QUERY_QUEUE_TIMEOUT`]; zero: answer 429 at once when every slot is taken).
    pub queue_timeout: Duration,
}

impl QueryLatency {
    /// PostHog's pool (3 slots, 30 s queue) with the given hold.
    pub fn new(hold: Duration, hold_per_row: Duration) -> Self {
        QueryLatency {
            hold,
            hold_per_row,
            concurrency: DEFAULT_QUERY_CONCURRENCY,
            queue_timeout: DEFAULT_QUERY_QUEUE_TIMEOUT,
        }
    }

    /// How long a query returning `rows` rows holds its slot (saturating, never panics).
    pub fn hold_for(&self, rows: usize) -> Duration {
        let rows = u32::try_from(rows).unwrap_or(u32::MAX);
        self.hold
            .saturating_add(self.hold_per_row.saturating_mul(rows))
    }
}

impl Default for QueryLatency {
    /// PostHog's pool (3 slots, 30 s queue) and no hold: concurrency is limited, but a query
    /// takes only as long as the mock needs to evaluate it.
    fn default() -> Self {
        QueryLatency::new(Duration::ZERO, Duration::ZERO)
    }
}

/// Everything a [`crate::MockServer`] needs to start.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Personal API key accepted as `Authorization: Bearer …` on the private API.
    pub personal_api_key: String,
    /// Project API key accepted as `api_key` by capture and flags.
    pub project_api_key: String,
    /// The one project id that exists.
    pub project_id: u64,
    /// Project ids the key is valid for but has no access to: 403.
    pub forbidden_project_ids: Vec<u64>,
    /// Scopes of the personal key; `None` means all scopes. `x:write` implies `x:read`, `*`
    /// grants everything.
    pub scopes: Option<Vec<String>>,
    /// The project's time zone (default `Asia/Kolkata`, +05:30).
    pub timezone: ProjectTimezone,
    /// Gzip JSON responses over 1 KiB when the request accepts gzip.
    pub gzip: bool,
    /// Events, persons and REST fixtures served.
    pub dataset: Dataset,
    /// Server-side throttle on the private API.
    pub rate_limit: Option<RateLimit>,
    /// Seeded probabilistic faults.
    pub random_faults: Option<RandomFaults>,
    /// Number of `GET …/query/{id}/` polls answered 202 before an async query completes.
    pub async_polls: u32,
    /// The cap on a top-level HogQL `LIMIT` at start (default [`DEFAULT_LIMIT_CLAMP`]): as
    /// PostHog does, `LIMIT n` silently becomes `min(n, clamp)`. A query without `LIMIT` is
    /// not affected (it gets PostHog's 100-row page with `hasMore`).
    pub limit_clamp: usize,
    /// Changes of the clamp during the run, applied in `after_queries` order (PostHog's cap
    /// has moved between releases without notice). The clamp can also be set at once with
    /// [`crate::MockServer::set_limit_clamp`] or `POST /_mock/config`.
    pub limit_clamp_changes: Vec<LimitClampChange>,
    /// Query latency and per-project query concurrency (`None`, the default: queries are
    /// answered as fast as they are evaluated, any number at once).
    pub query_latency: Option<QueryLatency>,
}

impl Default for MockConfig {
    /// Default keys, project 1 in `Asia/Kolkata`, gzip on, one async poll, LIMIT clamp 50 000
    /// with no scheduled changes, no throttling, faults or query latency, and the dataset of
    /// [`GenSpec::default`] (1 000 events, 50 persons) plus the REST fixtures.
    fn default() -> Self {
        MockConfig::with_dataset(Dataset::generate(&GenSpec::default()))
    }
}

impl MockConfig {
    /// The default configuration serving `dataset`.
    pub fn with_dataset(dataset: Dataset) -> Self {
        MockConfig {
            personal_api_key: "phx_mock_personal_key".to_owned(),
            project_api_key: "phc_mock_project_key".to_owned(),
            project_id: 1,
            forbidden_project_ids: Vec::new(),
            scopes: None,
            timezone: ProjectTimezone::default(),
            gzip: true,
            dataset,
            rate_limit: None,
            random_faults: None,
            async_polls: 1,
            limit_clamp: DEFAULT_LIMIT_CLAMP,
            limit_clamp_changes: Vec::new(),
            query_latency: None,
        }
    }
}
