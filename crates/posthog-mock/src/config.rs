//! Server configuration: keys, project, time zone, data, throttling and random faults.

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
}

impl Default for MockConfig {
    /// Default keys, project 1 in `Asia/Kolkata`, gzip on, one async poll, no throttling or
    /// faults, and the dataset of [`GenSpec::default`] (1 000 events, 50 persons) plus the REST
    /// fixtures.
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
        }
    }
}
