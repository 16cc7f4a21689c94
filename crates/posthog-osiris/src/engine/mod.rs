//! The PostHog driver: `discover`, `doctor` and the extraction engine behind `run`.
//!
//! - `source.rs`: what each data type reads (HogQL keyset scans, REST snapshots) and the
//!   queries, with cursor values bound as placeholders.
//! - `run.rs`: one run — state, cleanup of uncommitted parts, the fetch loop (page halving on
//!   server timeouts, rate-limit pauses, the stop rule and the cursor-must-advance guard),
//!   checkpoint and final commits.
//! - `sink.rs`: the writer thread — parse, dedup, Arrow batches, part files (with the range
//!   of the incremental field each covers), checkpoints.
//! - `table_dir.rs`: the table's directory for one run — its lock, the check that it takes
//!   files, leftovers removed, missing parts found, replaced snapshot parts deleted.
//! - `repair.rs`: `run --repair` — the ranges of lost parts and the ids the remaining parts
//!   hold in them.
//! - `inspect.rs`: `discover` and `doctor`.

mod inspect;
mod repair;
mod run;
mod sink;
mod source;
mod table_dir;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use posthog_client::{Budget, Client, RateLimits, RetryPolicy};
use posthog_core::{UnixMicros, format_timestamp};
use posthog_state::StateStore;
use secrecy::ExposeSecret;

use crate::driver::{Context, Discovery, DoctorReport, Driver, PostHogDriver, RunSummary};
use crate::{ConfigError, DriverError, ExtractConfig};

impl Driver for PostHogDriver {
    async fn discover(
        &self,
        config: &ExtractConfig,
        ctx: &Context,
    ) -> Result<Discovery, DriverError> {
        inspect::discover(config, ctx).await
    }

    async fn doctor(&self, config: &ExtractConfig, ctx: &Context) -> DoctorReport {
        inspect::doctor(config, ctx).await
    }

    async fn run(
        &self,
        config: &ExtractConfig,
        store: &mut dyn StateStore,
        ctx: &Context,
    ) -> Result<RunSummary, DriverError> {
        run::run(config, store, ctx).await
    }
}

/// The client a config describes: region, key, project, timeouts, retries and request budgets.
pub(crate) fn build_client(config: &ExtractConfig, ctx: &Context) -> Result<Client, DriverError> {
    build_client_with(
        config,
        ctx,
        retry_policy(config),
        config.performance.request_timeout,
    )
}

/// A [`Client`] for the connection, timeouts, retries and request budgets a config describes,
/// for callers that use PostHog directly rather than through a `run` (the CLI's agent
/// commands). `project_api_key` (`phc_…`) enables capture and flag evaluation.
///
/// ```no_run
/// # async fn demo() -> Result<(), posthog_osiris::DriverError> {
/// use posthog_osiris::{ExtractConfig, connect};
/// let config = ExtractConfig::from_path("config.yaml".as_ref())?;
/// let client = connect(&config, None)?;
/// let project = client.project().await?;
/// println!("{:?}", project.timezone);
/// # Ok(()) }
/// ```
pub fn connect(
    config: &ExtractConfig,
    project_api_key: Option<&secrecy::SecretString>,
) -> Result<Client, DriverError> {
    let ctx = Context::new(".");
    build_client_inner(
        config,
        &ctx,
        retry_policy(config),
        config.performance.request_timeout,
        project_api_key,
    )
}

pub(crate) fn build_client_with(
    config: &ExtractConfig,
    ctx: &Context,
    retry: RetryPolicy,
    request_timeout: Duration,
) -> Result<Client, DriverError> {
    build_client_inner(config, ctx, retry, request_timeout, None)
}

fn build_client_inner(
    config: &ExtractConfig,
    ctx: &Context,
    retry: RetryPolicy,
    request_timeout: Duration,
    project_api_key: Option<&secrecy::SecretString>,
) -> Result<Client, DriverError> {
    let key = config.connection.api_key.as_ref().ok_or_else(|| {
        ConfigError::new(
            "resolved_connection.api_key",
            "is missing: a personal API key (phx_…) is needed to read PostHog",
        )
    })?;
    let perf = &config.performance;
    let limits = ctx.rate_limits.clone().unwrap_or_else(|| RateLimits {
        query: vec![
            Budget::per_minute(perf.query_requests_per_minute),
            Budget::per_hour(perf.query_requests_per_hour),
        ],
        ..RateLimits::default()
    });
    let mut builder = Client::builder();
    if let Some(project_key) = project_api_key {
        builder = builder.project_api_key(project_key.expose_secret());
    }
    let client = builder
        .region(config.connection.region.clone())
        .personal_api_key(key.expose_secret())
        .project_id(config.connection.project_id.clone())
        .request_timeout(request_timeout)
        .pool_size(perf.pool_size)
        .retry_policy(retry)
        .rate_limits(limits)
        .verbose_http(config.logging.verbose_http)
        .build()?;
    Ok(client)
}

fn retry_policy(config: &ExtractConfig) -> RetryPolicy {
    let retries = &config.performance.retries;
    RetryPolicy {
        max_attempts: retries.max_attempts,
        initial_delay: Duration::from_secs_f64(retries.backoff_factor),
        total_budget: retries.timeout,
        ..RetryPolicy::default()
    }
}

pub(crate) fn now_micros() -> UnixMicros {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}

pub(crate) fn now_rfc3339() -> String {
    let mut text = String::new();
    format_timestamp(now_micros(), &mut text);
    text
}
