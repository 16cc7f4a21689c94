//! The Osiris driver contract: `discover`, `doctor` and `run`, and the values they return.
//!
//! A driver takes the resolved config (credentials included, see
//! [`Connection::with_api_key`](crate::Connection::with_api_key)), a [`Context`] with the base
//! path everything is written under and an optional [`Observer`] for progress and metrics, and,
//! for `run`, a [`StateStore`]. Logs go through `tracing`; the driver prints nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use posthog_state::{StateStore, TableState};
use serde::Serialize;

use crate::{DriverError, ExtractConfig};

/// Where a driver works and whom it tells about progress.
#[derive(Clone)]
#[non_exhaustive]
pub struct Context {
    /// Base path: a table's parts go to `<base_path>/<table_name>/`.
    pub base_path: PathBuf,
    /// An object-store location to write to instead of `base_path`: a table's parts go under
    /// `<prefix>/<table_name>/`, held by a lease object there (`_lease`) rather than a lock
    /// file. The caller builds it (credentials come from its environment).
    pub bucket: Option<posthog_storage::Bucket>,
    /// Receives progress and the final metrics of a run; `None` to receive nothing.
    pub observer: Option<Arc<dyn Observer>>,
    /// How long `doctor` may take in all (default 2 s).
    pub doctor_timeout: Duration,
    /// Client-side request budgets; `None` for PostHog's documented limits.
    pub rate_limits: Option<posthog_client::RateLimits>,
    /// A dry run sends every request the run would send and reads every page, then discards
    /// it: no part file, no directory, no state commit. Its summary has `status: "dry_run"`
    /// and `rows_read`; it measures what a run would read and how fast the source serves it
    /// (the fetch-only floor of `cargo xtask bench run`).
    pub dry_run: bool,
    /// A repair: instead of extracting, the run re-extracts exactly the rows of committed parts
    /// whose files are missing (each part records the range of the incremental field it
    /// covers), skipping the rows the remaining parts hold, and commits the new parts in their
    /// place. The watermark does not move. Its summary has `status: "repaired"`.
    pub repair: bool,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("base_path", &self.base_path)
            .field("bucket", &self.bucket.as_ref().map(|b| b.url().to_string()))
            .field("observer", &self.observer.is_some())
            .field("doctor_timeout", &self.doctor_timeout)
            .field("dry_run", &self.dry_run)
            .field("repair", &self.repair)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context writing under `base_path`, with no observer.
    pub fn new(base_path: impl Into<PathBuf>) -> Self {
        Context {
            base_path: base_path.into(),
            bucket: None,
            observer: None,
            doctor_timeout: Duration::from_secs(2),
            rate_limits: None,
            dry_run: false,
            repair: false,
        }
    }

    /// Sets the observer.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Sets how long `doctor` may take.
    pub fn with_doctor_timeout(mut self, timeout: Duration) -> Self {
        self.doctor_timeout = timeout;
        self
    }

    /// Makes `run` a dry run: every page is requested and read, nothing is written or committed.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Writes to the object-store location `bucket` (its URL becomes the base path shown in
    /// paths and errors).
    pub fn with_bucket(mut self, bucket: posthog_storage::Bucket) -> Self {
        self.base_path = PathBuf::from(bucket.url().to_string());
        self.bucket = Some(bucket);
        self
    }

    /// Makes `run` a repair of the table's lost parts (see [`Context::repair`]).
    pub fn with_repair(mut self, repair: bool) -> Self {
        self.repair = repair;
        self
    }

    /// Sets the client-side request budgets (tests and self-hosted instances without PostHog
    /// Cloud's limits).
    pub fn with_rate_limits(mut self, limits: posthog_client::RateLimits) -> Self {
        self.rate_limits = Some(limits);
        self
    }
}

/// Receives a run's progress. Called from the extraction task; implementations should return
/// quickly (a progress bar redraw, a counter update).
pub trait Observer: Send + Sync {
    /// After each page is written.
    fn progress(&self, progress: &Progress);
}

/// A run's progress so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Progress {
    /// The table being extracted.
    pub table: String,
    /// Pages fetched.
    pub pages: u64,
    /// Rows received.
    pub rows_read: u64,
    /// Rows dropped as already emitted.
    pub rows_deduplicated: u64,
    /// Rows written.
    pub rows_output: u64,
    /// Rows per second since the run started.
    pub rows_per_second: f64,
    /// Share of the cursor range covered, `0.0..=1.0`, when it is knowable (incremental runs
    /// on a time cursor: from the start instant to the time the run began).
    pub fraction: Option<f64>,
    /// Estimated time left, when `fraction` is known.
    pub eta_seconds: Option<f64>,
}

/// The result of a successful `run`, printed by the CLI as one JSON object.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct RunSummary {
    /// How the run ended: `success`, `dry_run` or `repaired`.
    pub status: RunStatus,
    /// The table extracted.
    pub table: String,
    /// Rows received from PostHog.
    pub rows_read: u64,
    /// Rows dropped because they were already emitted (re-read inside the lookback window).
    pub rows_deduplicated: u64,
    /// Rows written to the part files of this run.
    pub rows_output: u64,
    /// Keyset slices the run read (1 unless it read its range as concurrent slices, see
    /// `performance.query_concurrency`; 1 for REST lists too).
    pub slices: u64,
    /// Part files written by this run (paths under the base path).
    pub files: Vec<String>,
    /// The lost parts a repair re-extracted (file names as the state recorded them); empty
    /// for other runs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repaired: Vec<String>,
    /// HTTP requests sent, retries included.
    pub requests: u64,
    /// Requests sent again: retried by the client, repeated with half the page after a
    /// server timeout (also counted in `page_shrinks`), or after a rate-limit pause.
    pub retries: u64,
    /// 429 responses received.
    pub throttled: u64,
    /// Times a server timeout made the page size halve.
    pub page_shrinks: u64,
    /// Times the client's circuit breaker opened.
    pub breaker_trips: u64,
    /// Wall time of the run.
    pub duration_ms: u64,
    /// The table's state as committed at the end of the run (for a dry run, the state it
    /// started from), in brief: the full state is in the state store.
    pub state: StateSummary,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunStatus {
    /// The run extracted and committed.
    Success,
    /// A [`Context::dry_run`]: every page was read and counted (`rows_deduplicated` and
    /// `rows_output` are what a real run from the same state would report), nothing was
    /// written or committed, `files` is empty.
    DryRun,
    /// A [`Context::repair`] run re-extracted lost parts.
    Repaired,
}

impl RunStatus {
    /// The status as the summary prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Success => "success",
            RunStatus::DryRun => "dry_run",
            RunStatus::Repaired => "repaired",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A table's state in brief, as a run's summary reports it: the seed's watermark fields and
/// counts, without the dedup window, the recent UUIDs or the part and column records (the
/// state store holds those).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StateSummary {
    /// The incremental watermark (RFC 3339, UTC), if any.
    pub last_timestamp: Option<String>,
    /// The id of the last row at the watermark, if any.
    pub last_uuid: Option<String>,
    /// Rows in the table's committed parts.
    pub rows_total: u64,
    /// Committed part files.
    pub parts: usize,
    /// Columns the table has.
    pub columns: usize,
}

impl From<&TableState> for StateSummary {
    fn from(state: &TableState) -> Self {
        StateSummary {
            last_timestamp: state.last_timestamp.clone(),
            last_uuid: state.last_uuid.clone(),
            rows_total: state.rows_total,
            parts: state.parts.len(),
            columns: state.columns.as_ref().map_or(0, Vec::len),
        }
    }
}

/// The result of `discover`.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Discovery {
    /// The resources, sorted by name.
    pub resources: Vec<DiscoveredResource>,
    /// SHA-256 (hex) of the canonical JSON of `resources`; stable while the schemas are.
    pub fingerprint: String,
    /// When the discovery ran (RFC 3339, UTC).
    pub discovered_at: String,
}

/// One resource the component can extract, as `discover` reports it (not to be confused with
/// `posthog_client::Resource`, a REST collection of PostHog's API).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[non_exhaustive]
pub struct DiscoveredResource {
    /// The data type name (`events`, `persons`, …).
    pub name: String,
    /// `table`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// What it holds.
    pub description: String,
    /// Its columns: `{name, type, description?}`, fixed columns first.
    pub schema: Vec<Field>,
}

/// One column of a resource.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[non_exhaustive]
pub struct Field {
    /// Column name.
    pub name: String,
    /// Column type (`string`, `timestamp`, `integer`, `float`, `boolean`, `json`).
    #[serde(rename = "type")]
    pub data_type: String,
    /// Whether it may be null.
    pub nullable: bool,
}

/// The result of `doctor`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[non_exhaustive]
pub struct DoctorReport {
    /// `healthy` or `error`.
    pub status: &'static str,
    /// Why it is not healthy: `auth`, `permission`, `network`, `timeout` or `unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<&'static str>,
    /// What was checked, or what failed.
    pub message: String,
    /// When the check ran (RFC 3339, UTC).
    pub timestamp: String,
    /// Wall time of the checks.
    pub latency_ms: u64,
}

impl DoctorReport {
    /// Whether every check passed.
    pub fn is_healthy(&self) -> bool {
        self.status == "healthy"
    }
}

/// The three operations of an Osiris driver.
///
/// `discover` and `doctor` read nothing but PostHog; `run` also reads and commits the table's
/// state in `store` and writes under [`Context::base_path`].
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use posthog_osiris::{Context, Driver, ExtractConfig, PostHogDriver};
/// use posthog_state::JsonFileStore;
///
/// let config = ExtractConfig::from_path("config.yaml".as_ref())?;
/// let mut store = JsonFileStore::open("posthog-output/state.json")?;
/// let ctx = Context::new("posthog-output");
/// if PostHogDriver.doctor(&config, &ctx).await.is_healthy() {
///     let summary = PostHogDriver.run(&config, &mut store, &ctx).await?;
///     println!("{} rows in {:?}", summary.rows_output, summary.files);
/// }
/// # Ok(()) }
/// ```
#[allow(async_fn_in_trait)] // callers are in this workspace; no Send bound is needed on them
pub trait Driver {
    /// Lists the resources with their schemas and a stable fingerprint.
    async fn discover(
        &self,
        config: &ExtractConfig,
        ctx: &Context,
    ) -> Result<Discovery, DriverError>;

    /// Checks authentication, project access and query permission within
    /// [`Context::doctor_timeout`]; never fails, the report says what is wrong.
    async fn doctor(&self, config: &ExtractConfig, ctx: &Context) -> DoctorReport;

    /// Extracts the configured table, exactly once, and commits its state.
    async fn run(
        &self,
        config: &ExtractConfig,
        store: &mut dyn StateStore,
        ctx: &Context,
    ) -> Result<RunSummary, DriverError>;
}

/// The PostHog driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct PostHogDriver;
