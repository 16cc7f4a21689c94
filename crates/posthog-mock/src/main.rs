//! `posthog-mock`: runs the mock PostHog server from the command line, or writes the sample
//! events file. Prints one JSON line with the connection details, then serves until killed.
//!
//! The events it serves span the last `--days` days up to now, so a config without
//! `initial_since` and queries like `timestamp > now() - interval 7 day` find them; `--start`
//! pins them to a fixed instant instead (the library's `GenSpec::default()` anchor is
//! `2025-01-01T00:00:00Z`), which is what tests that regenerate the data in-process use.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use posthog_mock::{
    DEFAULT_LIMIT_CLAMP, DataShape, Dataset, GenSpec, LimitClampChange, MockConfig, MockServer,
    ProjectTimezone, QueryLatency, RandomFaults, RateLimit,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A mock PostHog server that evaluates HogQL over generated events and injects faults.
#[derive(Debug, Parser)]
#[command(name = "posthog-mock", version)]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Number of generated events (generated lazily: a million is fine).
    #[arg(long)]
    events: Option<usize>,
    /// Generator seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Number of generated persons.
    #[arg(long)]
    persons: Option<usize>,
    /// Size of one cluster of events sharing a single timestamp.
    #[arg(long)]
    cluster: Option<usize>,
    /// Earliest event timestamp, e.g. 2025-01-01T00:00:00Z (reproducible data). Default:
    /// `--days` days before now, so the events end now.
    #[arg(long, value_name = "RFC3339", value_parser = parse_start)]
    start: Option<OffsetDateTime>,
    /// Days the events span, from `--start` (default 7).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    days: Option<u16>,
    /// The shape of the events' properties: `default`; `wide[:KEYS]`, 4 more keys per event
    /// from a pool of KEYS (3 000) names, most rows sparse; `heavy[:CHARS]`, a `heavy_text`
    /// of CHARS (10 240) characters on every other event.
    #[arg(long, value_name = "SHAPE", value_parser = DataShape::parse)]
    shape: Option<DataShape>,
    /// Project time zone offset, e.g. +05:30.
    #[arg(long, default_value = "+05:30", allow_hyphen_values = true)]
    tz_offset: String,
    /// Project time zone name.
    #[arg(long, default_value = "Asia/Kolkata")]
    tz_name: String,
    /// Server-side throttle on the private API, e.g. 30/60s, 240/1m, 2400/1h.
    #[arg(long)]
    rate_limit: Option<String>,
    /// Probability of a random 5xx per request.
    #[arg(long, default_value_t = 0.0)]
    fault_rate: f64,
    /// Probability of a random connection reset per request.
    #[arg(long, default_value_t = 0.0)]
    reset_rate: f64,
    /// Probability of a random 429 without Retry-After per request.
    #[arg(long, default_value_t = 0.0)]
    throttle_rate: f64,
    /// Seed of the random faults.
    #[arg(long, default_value_t = 1)]
    fault_seed: u64,
    /// Polls answered 202 before an async query completes.
    #[arg(long, default_value_t = 1)]
    async_polls: u32,
    /// Never gzip responses.
    #[arg(long)]
    no_gzip: bool,
    /// Cap on a top-level HogQL LIMIT at start: LIMIT n returns at most min(n, N) rows.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LIMIT_CLAMP, value_parser = parse_clamp)]
    limit_clamp: usize,
    /// After Q query requests the LIMIT clamp becomes N (repeatable), e.g. 3:1000.
    #[arg(long, value_name = "Q:N", value_parser = parse_clamp_change)]
    limit_clamp_after: Vec<LimitClampChange>,
    /// Hold every `POST …/query/` for MS milliseconds while it holds a concurrency slot
    /// (PostHog's queries take about a second). Any --query-* flag turns on the query
    /// latency model: 3 slots, a 30 s queue, then 429 without Retry-After.
    #[arg(long, value_name = "MS")]
    query_hold_ms: Option<u64>,
    /// Add US microseconds to a query's hold per row it returns (100 holds a 10 000-row page
    /// one second).
    #[arg(long, value_name = "US")]
    query_hold_per_row_us: Option<u64>,
    /// Queries held at once (default 3); more wait in the queue.
    #[arg(long, value_name = "N", value_parser = parse_concurrency)]
    query_concurrency: Option<usize>,
    /// Seconds a query waits for a slot before it gets 429 without Retry-After (default 30;
    /// decimals allowed, e.g. 0.5; 0: answer 429 at once when every slot is taken).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    query_queue_timeout_s: Option<Duration>,
    /// Write the sample events (GenSpec::sample, overridden by --seed/--events/--persons/
    /// --cluster) as JSONL to PATH and exit.
    #[arg(long, value_name = "PATH")]
    write_sample: Option<std::path::PathBuf>,
}

fn parse_rate_limit(s: &str) -> anyhow::Result<RateLimit> {
    let (n, per) = s
        .split_once('/')
        .context("expected N/DURATION, e.g. 30/60s")?;
    let max_requests: u32 = n
        .trim()
        .parse()
        .context("the request count must be an integer")?;
    let per = per.trim();
    let split = per.find(|c: char| !c.is_ascii_digit()).unwrap_or(per.len());
    let (digits, unit) = per.split_at(split);
    let amount: u64 = if digits.is_empty() {
        1
    } else {
        digits.parse()?
    };
    let secs = match unit {
        "" | "s" => amount,
        "m" => amount * 60,
        "h" => amount * 3600,
        other => bail!("unknown duration unit `{other}` (use s, m or h)"),
    };
    if max_requests == 0 || secs == 0 {
        bail!("the rate limit must allow at least one request per non-empty window");
    }
    Ok(RateLimit {
        max_requests,
        per: Duration::from_secs(secs),
    })
}

fn parse_start(s: &str) -> anyhow::Result<OffsetDateTime> {
    OffsetDateTime::parse(s.trim(), &Rfc3339)
        .with_context(|| format!("`{s}` is not an RFC 3339 instant like 2025-01-01T00:00:00Z"))
}

fn parse_clamp(s: &str) -> anyhow::Result<usize> {
    parse_at_least_one(s, "a row count", "the LIMIT clamp must be at least 1")
}

/// A count of at least 1: `what` names it when `s` is not a number, `zero` explains why 0 is
/// refused.
fn parse_at_least_one(s: &str, what: &str, zero: &str) -> anyhow::Result<usize> {
    let n: usize = s
        .trim()
        .parse()
        .with_context(|| format!("`{s}` is not {what}"))?;
    if n == 0 {
        bail!("{zero}");
    }
    Ok(n)
}

fn parse_clamp_change(s: &str) -> anyhow::Result<LimitClampChange> {
    let (after, clamp) = s
        .split_once(':')
        .context("expected Q:N (after Q query requests the clamp becomes N), e.g. 3:1000")?;
    let after_queries: u64 = after
        .trim()
        .parse()
        .with_context(|| format!("`{after}` is not a number of query requests"))?;
    Ok(LimitClampChange {
        after_queries,
        limit_clamp: parse_clamp(clamp)?,
    })
}

fn parse_concurrency(s: &str) -> anyhow::Result<usize> {
    parse_at_least_one(
        s,
        "a number of queries",
        "the query concurrency must be at least 1 (0 would throttle every query)",
    )
}

fn parse_seconds(s: &str) -> anyhow::Result<Duration> {
    let secs: f64 = s
        .trim()
        .parse()
        .with_context(|| format!("`{s}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs)
        .with_context(|| format!("`{s}` is not a non-negative number of seconds"))
}

/// The query latency model, when any `--query-*` flag is given; the others keep
/// [`QueryLatency::default`]'s values.
fn query_latency(args: &Args) -> Option<QueryLatency> {
    if args.query_hold_ms.is_none()
        && args.query_hold_per_row_us.is_none()
        && args.query_concurrency.is_none()
        && args.query_queue_timeout_s.is_none()
    {
        return None;
    }
    let base = QueryLatency::default();
    Some(QueryLatency {
        hold: args.query_hold_ms.map_or(base.hold, Duration::from_millis),
        hold_per_row: args
            .query_hold_per_row_us
            .map_or(base.hold_per_row, Duration::from_micros),
        concurrency: args.query_concurrency.unwrap_or(base.concurrency),
        queue_timeout: args.query_queue_timeout_s.unwrap_or(base.queue_timeout),
    })
}

/// `base` with what the flags override: seed, sizes and, when given, `--start` / `--days`.
fn spec(args: &Args, base: GenSpec) -> GenSpec {
    GenSpec {
        shape: args.shape.unwrap_or(base.shape),
        seed: args.seed.unwrap_or(base.seed),
        events: args.events.unwrap_or(base.events),
        persons: args.persons.unwrap_or(base.persons),
        same_timestamp_cluster: args.cluster.unwrap_or(base.same_timestamp_cluster),
        start: args.start.unwrap_or(base.start),
        span: args
            .days
            .map_or(base.span, |d| Duration::from_secs(u64::from(d) * 86_400)),
    }
}

/// What the server generates: [`GenSpec::default`]'s sizes over the last `--days` (7) days
/// up to `now` (to the minute), unless `--start` pins them.
fn served_spec(args: &Args, now: OffsetDateTime) -> GenSpec {
    let base = GenSpec::default();
    let days = args.days.map_or(7, u64::from);
    let span = Duration::from_secs(days * 86_400);
    let now = now
        .replace_second(0)
        .unwrap_or(now)
        .replace_nanosecond(0)
        .unwrap_or(now);
    let start = args.start.unwrap_or(now - span);
    spec(
        args,
        GenSpec {
            start,
            span,
            ..base
        },
    )
}

async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(path) = &args.write_sample {
        let text = Dataset::sample_jsonl(&spec(&args, GenSpec::sample()));
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        return Ok(());
    }
    let offset = time::UtcOffset::parse(
        &args.tz_offset,
        time::macros::format_description!("[offset_hour sign:mandatory]:[offset_minute]"),
    )
    .with_context(|| format!("--tz-offset `{}` is not like +05:30", args.tz_offset))?;
    for (name, rate) in [
        ("--fault-rate", args.fault_rate),
        ("--reset-rate", args.reset_rate),
        ("--throttle-rate", args.throttle_rate),
    ] {
        if !(0.0..=1.0).contains(&rate) {
            bail!("{name} must be within 0..=1, got {rate}");
        }
    }
    let random_faults = (args.fault_rate > 0.0
        || args.reset_rate > 0.0
        || args.throttle_rate > 0.0)
        .then_some(RandomFaults {
            seed: args.fault_seed,
            server_error_rate: args.fault_rate,
            reset_rate: args.reset_rate,
            throttle_rate: args.throttle_rate,
        });
    let served = served_spec(&args, OffsetDateTime::now_utc());
    let config = MockConfig {
        timezone: ProjectTimezone::new(args.tz_name.clone(), offset),
        gzip: !args.no_gzip,
        rate_limit: args
            .rate_limit
            .as_deref()
            .map(parse_rate_limit)
            .transpose()
            .context("--rate-limit")?,
        random_faults,
        async_polls: args.async_polls,
        limit_clamp: args.limit_clamp,
        limit_clamp_changes: args.limit_clamp_after.clone(),
        query_latency: query_latency(&args),
        ..MockConfig::with_dataset(Dataset::generate_lazy(&served))
    };
    let rfc3339 = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    let announce = serde_json::json!({
        "personal_api_key": config.personal_api_key,
        "project_api_key": config.project_api_key,
        "project_id": config.project_id,
        "events_from": rfc3339(served.start),
        "events_until": rfc3339(served.start + served.span),
    });
    let server = MockServer::start_on(config, SocketAddr::from(([127, 0, 0, 1], args.port)))
        .await
        .context("binding the listener")?;
    let mut line = announce;
    line["base_url"] = serde_json::Value::String(server.base_url());
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    drop(stdout);
    tracing::info!(base_url = %server.base_url(), events = server.event_count(), "serving");
    // Serve until the process is killed (SIGINT/SIGTERM terminate it).
    std::future::pending::<()>().await;
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("POSTHOG_MOCK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("posthog-mock: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("posthog-mock: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_forms() {
        assert_eq!(
            parse_rate_limit("30/60s").unwrap().per,
            Duration::from_secs(60)
        );
        assert_eq!(
            parse_rate_limit("240/1m").unwrap().per,
            Duration::from_secs(60)
        );
        assert_eq!(
            parse_rate_limit("2400/h").unwrap().per,
            Duration::from_secs(3600)
        );
        assert!(parse_rate_limit("30").is_err());
        assert!(parse_rate_limit("0/1s").is_err());
    }

    #[test]
    fn limit_clamp_flags_parse_and_reject_nonsense() {
        assert_eq!(parse_clamp("1000").unwrap(), 1000);
        assert!(parse_clamp("0").is_err());
        assert!(parse_clamp("lots").is_err());
        assert_eq!(
            parse_clamp_change("3:777").unwrap(),
            LimitClampChange {
                after_queries: 3,
                limit_clamp: 777
            }
        );
        assert!(parse_clamp_change("3").is_err());
        assert!(parse_clamp_change("x:5").is_err());
        assert!(parse_clamp_change("3:0").is_err());
        let args = Args::try_parse_from([
            "posthog-mock",
            "--limit-clamp",
            "2000",
            "--limit-clamp-after",
            "2:1000",
            "--limit-clamp-after",
            "5:50000",
        ])
        .unwrap();
        assert_eq!(args.limit_clamp, 2000);
        assert_eq!(
            args.limit_clamp_after,
            vec![
                LimitClampChange {
                    after_queries: 2,
                    limit_clamp: 1000
                },
                LimitClampChange {
                    after_queries: 5,
                    limit_clamp: 50_000
                },
            ]
        );
        let defaults = Args::try_parse_from(["posthog-mock"]).unwrap();
        assert_eq!(defaults.limit_clamp, DEFAULT_LIMIT_CLAMP);
        assert!(defaults.limit_clamp_after.is_empty());
    }

    #[test]
    fn query_latency_flags_turn_the_model_on_and_reject_nonsense() {
        let off = Args::try_parse_from(["posthog-mock"]).unwrap();
        assert_eq!(query_latency(&off), None, "off unless asked for");
        let hold = Args::try_parse_from(["posthog-mock", "--query-hold-ms", "1000"]).unwrap();
        assert_eq!(
            query_latency(&hold),
            Some(QueryLatency::new(Duration::from_secs(1), Duration::ZERO)),
            "PostHog's 3 slots and 30 s queue by default"
        );
        let all = Args::try_parse_from([
            "posthog-mock",
            "--query-hold-ms",
            "250",
            "--query-hold-per-row-us",
            "100",
            "--query-concurrency",
            "2",
            "--query-queue-timeout-s",
            "0.5",
        ])
        .unwrap();
        assert_eq!(
            query_latency(&all),
            Some(QueryLatency {
                hold: Duration::from_millis(250),
                hold_per_row: Duration::from_micros(100),
                concurrency: 2,
                queue_timeout: Duration::from_millis(500),
            })
        );
        let no_queue = Args::try_parse_from(["posthog-mock", "--query-queue-timeout-s", "0"]);
        assert_eq!(
            query_latency(&no_queue.unwrap()).map(|l| l.queue_timeout),
            Some(Duration::ZERO)
        );
        for bad in [
            ["--query-concurrency", "0"],
            ["--query-concurrency", "many"],
            ["--query-queue-timeout-s", "-1"],
            ["--query-queue-timeout-s", "NaN"],
            ["--query-queue-timeout-s", "soon"],
            ["--query-hold-ms", "-5"],
            ["--query-hold-per-row-us", "0.5"],
        ] {
            let parsed = Args::try_parse_from(["posthog-mock", bad[0], bad[1]]);
            assert!(parsed.is_err(), "{bad:?} accepted");
        }
        let err = Args::try_parse_from(["posthog-mock", "--query-concurrency", "0"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 1"), "{err}");
    }

    #[test]
    fn served_events_end_now_unless_start_pins_them() {
        let now = time::macros::datetime!(2026-12-05 10:17:42.5 UTC);
        let recent = served_spec(&Args::try_parse_from(["posthog-mock"]).unwrap(), now);
        assert_eq!(recent.start, time::macros::datetime!(2026-11-28 10:17 UTC));
        assert_eq!(recent.span, Duration::from_secs(7 * 86_400));
        let month = Args::try_parse_from(["posthog-mock", "--days", "30"]).unwrap();
        let month = served_spec(&month, now);
        assert_eq!(
            month.start + month.span,
            time::macros::datetime!(2026-12-05 10:17 UTC)
        );

        let pinned = Args::try_parse_from(["posthog-mock", "--start", "2025-01-01T00:00:00Z"]);
        let pinned = served_spec(&pinned.unwrap(), now);
        assert_eq!(
            pinned,
            GenSpec::default(),
            "the library's deterministic anchor"
        );
        assert!(Args::try_parse_from(["posthog-mock", "--start", "yesterday"]).is_err());
        assert!(Args::try_parse_from(["posthog-mock", "--days", "0"]).is_err());

        let sample = Args::try_parse_from(["posthog-mock"]).unwrap();
        assert_eq!(spec(&sample, GenSpec::sample()), GenSpec::sample());
    }
}
