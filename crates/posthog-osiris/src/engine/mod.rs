//! The PostHog driver: `discover`, `doctor` and the extraction engine behind `run`.
//!
//! - `plan.rs`: the `RunPlan` — everything a run decides (start, dedup window, what the scan
//!   reads, how parts are written), computed purely from the config, the state and the time.
//! - `run.rs`: one run, top-down — load the state, plan, claim the table, extract, commit,
//!   report.
//! - `source.rs`: what each data type reads (HogQL keyset scans, REST snapshots) and the
//!   columns each declares; a scan becomes the client's `KeysetQuery`.
//! - `fetch.rs`: the reading half — the client's `KeysetPager` driven page by page (a server
//!   timeout halves the page), REST lists, pages handed to the sink, checkpoints committed.
//! - `sink.rs`: the writer thread — parse, dedup, Arrow batches, part files (with the range
//!   of the incremental field each covers), checkpoints.
//! - `slices.rs`: concurrent slices — how the last slice splits after the planning query,
//!   and what a commit claims while slices are unfinished (the watermark over the finished
//!   prefix, the ranges committed beyond it).
//! - `table_dir.rs`: the table's directory for one run — its lock, the check that it takes
//!   files, leftovers removed, missing parts found, replaced snapshot parts deleted.
//! - `repair.rs`: `run --repair` — the ranges of lost parts and the ids the remaining parts
//!   hold in them.
//! - `inspect.rs`: `discover` and `doctor`.

mod fetch;
mod inspect;
mod plan;
mod repair;
mod run;
mod sink;
mod slices;
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
        interactive_retry_policy(config),
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
    let mut limits = ctx.rate_limits.clone().unwrap_or_else(|| RateLimits {
        query: vec![
            Budget::per_minute(perf.query_requests_per_minute),
            Budget::per_hour(perf.query_requests_per_hour),
        ],
        ..RateLimits::default()
    });
    // `query_concurrency` is the most queries in flight, whatever budgets the context sets.
    limits.max_concurrent_queries = limits.max_concurrent_queries.min(perf.query_concurrency);
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

/// The client's retry policy for a run (and every other use of a config's connection).
///
/// - **Failures** (connection errors, timeouts, 5xx), from `performance.retries`: at most
///   `max_attempts` attempts within `timeout_seconds`, waiting `backoff_factor × 2^(n−1)` s
///   before retry `n` (urllib3's rule, [`RetryPolicy::with_backoff_factor`]; 1 s, 2 s, 4 s … at
///   the default 1.0), at most 30 s, full jitter.
/// - **Rate limits** (429) are waited out by the client alone, as long as a run has always
///   tolerated them. Until now the run paused on top of the client: after a call that gave up
///   on a 429 it waited (`Retry-After` up to an hour, else 2 s doubling to 60 s) and called
///   again, 12 times, so a page survived 13 rounds of `max_attempts` 429s, that is
///   `13 × max_attempts − 1` waits, and at most 12 waits of an hour. The client now makes those
///   waits itself: `Retry-After` honoured up to an hour (PostHog's longest window; a longer one
///   ends the run as `rate_limited` for the next scheduled run to continue), without one
///   (PostHog's concurrency limit) 1 s doubling to 60 s with full jitter, `13 × max_attempts − 1`
///   waits (38 at the default 3) within 12 hours. None of it spends `max_attempts` or
///   `timeout_seconds`.
fn retry_policy(config: &ExtractConfig) -> RetryPolicy {
    /// PostHog's longest throttle window: a longer `Retry-After` ends the run.
    const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
    /// Rounds of `max_attempts` 429s a page has always survived (the first call and 12 more).
    const RATE_LIMITED_ROUNDS: u32 = 13;
    /// Waits after 429s wanted at most 12 hours: 12 of the longest `Retry-After`.
    const RATE_LIMIT_BUDGET: Duration = Duration::from_secs(12 * 3600);
    let retries = &config.performance.retries;
    RetryPolicy {
        max_attempts: retries.max_attempts,
        max_delay: Duration::from_secs(30),
        total_budget: retries.timeout,
        max_retry_after: MAX_RETRY_AFTER,
        max_rate_limit_waits: RATE_LIMITED_ROUNDS
            .saturating_mul(retries.max_attempts)
            .saturating_sub(1),
        rate_limit_delay: Duration::from_secs(1),
        max_rate_limit_delay: Duration::from_secs(60),
        rate_limit_budget: RATE_LIMIT_BUDGET,
        ..RetryPolicy::default()
    }
    .with_backoff_factor(retries.backoff_factor)
}

/// The retry policy of a person or an agent waiting on one call (`connect`): the config's
/// attempts and backoff, but a rate limit is waited out only while that stays reasonable —
/// a `Retry-After` up to 2 minutes, 10 minutes of such waits in all — instead of a run's hours.
fn interactive_retry_policy(config: &ExtractConfig) -> RetryPolicy {
    RetryPolicy {
        max_retry_after: Duration::from_secs(120),
        rate_limit_budget: Duration::from_secs(600),
        ..retry_policy(config)
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

#[cfg(test)]
mod retry_policy_tests {
    use posthog_client::{Decision, EndpointClass, Error, GiveUpReason, RequestInfo, RetryState};

    use super::*;

    fn config(retries: &str) -> ExtractConfig {
        ExtractConfig::from_yaml_str(&format!(
            "resolved_connection: {{api_key: phx_test, project_id: \"1\", region: us}}\n\
             config:\n  source: {{data_type: events}}\n  destination: {{table_name: ev}}\n\
             performance: {{retries: {retries}}}\n"
        ))
        .expect("a valid config")
    }

    fn throttled(retry_after: Option<Duration>) -> Error {
        Error::Api {
            status: 429,
            api: None,
            body: None,
            retry_after,
        }
    }

    /// Runs `decide` on the same error until it gives up, waits at their longest (jitter 1),
    /// attempts taking no time.
    fn waits_until_give_up(policy: &RetryPolicy, error: &Error) -> (Vec<Duration>, GiveUpReason) {
        let request = RequestInfo::new(EndpointClass::Query);
        let mut state = RetryState::default();
        let mut waits = Vec::new();
        loop {
            match policy.decide(&request, error, &state, 1.0) {
                Decision::Retry { after, reason } => {
                    waits.push(after);
                    state.record_wait(reason, after);
                    if !reason.is_rate_limit() {
                        state.elapsed += after;
                    }
                }
                Decision::GiveUp(why) => return (waits, why),
            }
        }
    }

    #[test]
    fn a_run_keeps_its_rate_limit_tolerance_without_a_loop_of_its_own() {
        let policy = retry_policy(&config("{}"));
        // Concurrency 429s: 13 rounds of 3 attempts, 38 waits, each at most 60 s.
        let (waits, why) = waits_until_give_up(&policy, &throttled(None));
        assert_eq!(waits.len(), 38);
        assert_eq!(why, GiveUpReason::RateLimitWaitsExhausted);
        assert_eq!(
            waits[..7],
            [1, 2, 4, 8, 16, 32, 60].map(Duration::from_secs)
        );
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(60)));
        // An hour's Retry-After, 12 times, despite a 30 s timeout_seconds.
        let hour = Duration::from_secs(3600);
        let (waits, why) = waits_until_give_up(&policy, &throttled(Some(hour)));
        assert_eq!(waits, vec![hour; 12]);
        assert_eq!(why, GiveUpReason::RateLimitBudgetExhausted);
        // Longer than an hour ends the run at once.
        let (waits, why) =
            waits_until_give_up(&policy, &throttled(Some(hour + Duration::from_secs(1))));
        assert!(waits.is_empty());
        assert_eq!(why, GiveUpReason::RetryAfterTooLong);
        // The tolerance follows max_attempts as the run's rounds did.
        let policy = retry_policy(&config("{max_attempts: 1}"));
        assert_eq!(waits_until_give_up(&policy, &throttled(None)).0.len(), 12);
    }

    #[test]
    fn a_person_or_agent_waiting_on_one_call_gives_up_on_rate_limits_in_minutes_not_hours() {
        let policy = interactive_retry_policy(&config("{}"));
        let two_minutes = Duration::from_secs(120);
        let (waits, why) = waits_until_give_up(&policy, &throttled(Some(two_minutes)));
        assert_eq!(waits, vec![two_minutes; 5], "600 s of such waits in all");
        assert_eq!(why, GiveUpReason::RateLimitBudgetExhausted);
        let (waits, why) = waits_until_give_up(
            &policy,
            &throttled(Some(two_minutes + Duration::from_secs(1))),
        );
        assert!(waits.is_empty());
        assert_eq!(why, GiveUpReason::RetryAfterTooLong);
        // Failures are the run's: the config's attempts and backoff.
        assert_eq!(
            policy.max_attempts,
            retry_policy(&config("{}")).max_attempts
        );
    }

    #[test]
    fn failures_follow_performance_retries_with_urllib3s_backoff_factor() {
        let failure = Error::Api {
            status: 502,
            api: None,
            body: None,
            retry_after: None,
        };
        let (waits, why) = waits_until_give_up(&retry_policy(&config("{}")), &failure);
        assert_eq!(
            waits,
            [1, 2].map(Duration::from_secs),
            "default: factor 1.0, 3 attempts"
        );
        assert_eq!(why, GiveUpReason::AttemptsExhausted);
        let policy = retry_policy(&config(
            "{max_attempts: 8, backoff_factor: 2.0, timeout_seconds: 3600}",
        ));
        let (waits, _) = waits_until_give_up(&policy, &failure);
        assert_eq!(waits, [2, 4, 8, 16, 30, 30, 30].map(Duration::from_secs));
        let policy = retry_policy(&config("{max_attempts: 4, backoff_factor: 0.0}"));
        let (waits, _) = waits_until_give_up(&policy, &failure);
        assert_eq!(waits, [Duration::ZERO; 3], "factor 0: no wait");
        // timeout_seconds bounds failures: 1 s + 2 s + 4 s would cross 5 s.
        let policy = retry_policy(&config("{max_attempts: 10, timeout_seconds: 5}"));
        let (waits, why) = waits_until_give_up(&policy, &failure);
        assert_eq!(waits, [1, 2].map(Duration::from_secs));
        assert_eq!(why, GiveUpReason::BudgetExhausted);
    }
}
