//! `cargo xtask e2e`: the black-box end-to-end suite. It builds the release binaries
//! `posthog-cli` and `posthog-mock`, starts one mock process per scenario, drives the CLI as a
//! child process against it, and proves the extractor's contract (PRODUCT.md §3–§6) from the
//! outside: every source event exactly once and value by value in the part files (its person's
//! properties as of the event included), across incremental runs, late events, faults,
//! throttling, `kill -9` (also while concurrent slices are in flight), time zones, LIMIT
//! clamps below, at and above the page; secrets never printed; bad configs and unwritable
//! destinations refused before any request; one run per table; lost parts named and repaired
//! exactly once; `doctor` fast and honest.
//!
//! The expected events are regenerated in-process from the same `GenSpec` the mock serves,
//! so every check compares against the source, not against another run.
//!
//! - [`mock`]: the mock as a child process and a tiny HTTP client for its control API.
//! - [`cli`]: running `posthog-cli`, config files.
//! - [`output`]: reading part files (Parquet, JSONL, CSV) union-by-name, state and part sets.
//! - [`verify`]: the checks: exactly once, value by value, part bookkeeping.
//! - [`scenarios`], [`robustness`], [`paging`] (LIMIT clamps, a hostile `Retry-After`),
//!   [`destination`] (read-only destinations, the table lock, lost parts and `--repair`) and
//!   [`object_store`] (landing on S3 against a moto server: exactly once, `kill -9`, the lease,
//!   day partitions): the scenarios.

mod cli;
mod destination;
pub(crate) mod mock;
mod object_store;
mod output;
mod paging;
mod robustness;
mod scenarios;
pub(crate) mod verify;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use verify::Checks;

#[derive(Args)]
pub struct E2eArgs {
    /// Run only the scenarios whose name contains one of these (comma-separated).
    #[arg(long, value_delimiter = ',')]
    filter: Vec<String>,
    /// Also run the scenarios marked slow.
    #[arg(long)]
    slow: bool,
    /// Seed of the random kill instants of the `kill9` scenarios (default: from the clock).
    #[arg(long)]
    kill_seed: Option<u64>,
    /// Use the binaries already in target/release instead of building them.
    #[arg(long)]
    no_build: bool,
    /// Keep each scenario's temporary directory (its path is printed).
    #[arg(long)]
    keep: bool,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
}

/// What every scenario gets: the binaries and the suite's options.
pub struct Env {
    pub cli: PathBuf,
    pub mock: PathBuf,
    pub keep: bool,
    pub kill_seed: u64,
}

/// One scenario: a name for `--filter`, a line for the listing, and the function.
struct Scenario {
    name: &'static str,
    about: &'static str,
    slow: bool,
    run: fn(&Env, &mut Checks) -> anyhow::Result<()>,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "full-parquet",
        about: "20 000 events to Parquet: each exactly once, every value equal to the source",
        slow: false,
        run: scenarios::full_parquet,
    },
    Scenario {
        name: "full-jsonl",
        about: "20 000 events to JSONL (--format jsonl): exactly once, value by value",
        slow: false,
        run: scenarios::full_jsonl,
    },
    Scenario {
        name: "full-csv",
        about: "20 000 events to CSV (--format csv): exactly once, value by value",
        slow: false,
        run: scenarios::full_csv,
    },
    Scenario {
        name: "incremental",
        about: "new and late (inside the lookback) events, re-runs; Parquet, then CSV with --state-file",
        slow: false,
        run: scenarios::incremental,
    },
    Scenario {
        name: "same-timestamp",
        about: "3 000 events sharing one timestamp with page_size 1000",
        slow: false,
        run: scenarios::same_timestamp,
    },
    Scenario {
        name: "faults",
        about: "random 5xx, connection resets and 429s: run succeeds, retries > 0, exactly once",
        slow: false,
        run: scenarios::faults,
    },
    Scenario {
        name: "rate-limit",
        about: "server throttle 30/60s with ~40 query requests: run succeeds, exactly once",
        slow: false,
        run: scenarios::rate_limit,
    },
    Scenario {
        name: "kill9",
        about: "SIGKILL at random instants, re-run each time: committed parts exactly once",
        slow: false,
        run: robustness::kill9,
    },
    Scenario {
        name: "kill9_sliced",
        about: "kill9 with query_concurrency 3 and 200 ms queries: sliced runs killed, exactly once",
        slow: false,
        run: robustness::kill9_sliced,
    },
    Scenario {
        name: "crash-before-commit",
        about: "parts renamed but state not committed: the next run removes them, exactly once",
        slow: false,
        run: robustness::crash_before_commit,
    },
    Scenario {
        name: "concurrent-run",
        about: "a second run while the first holds the state: exit 2 at once, nothing disturbed",
        slow: false,
        run: robustness::concurrent_run,
    },
    Scenario {
        name: "bad-responses",
        about: "malformed, cut-short or ill-typed pages, dead server: clear error, nothing doubled",
        slow: false,
        run: robustness::bad_responses,
    },
    Scenario {
        name: "timezone",
        about: "project time zones -05:00 and +05:30: timestamps read back as the source instants",
        slow: false,
        run: scenarios::timezone,
    },
    Scenario {
        name: "secrets",
        about: "debug logs, verbose_http, text and JSON logs, --api-key-file: the key never shows",
        slow: false,
        run: robustness::secrets,
    },
    Scenario {
        name: "invalid-config",
        about: "bad configs: exit 2, one message naming the field, no request made",
        slow: false,
        run: robustness::invalid_config,
    },
    Scenario {
        name: "doctor",
        about: "doctor: wrong key → auth error within 2 s; right key → healthy; dead port; slow server",
        slow: false,
        run: robustness::doctor,
    },
    Scenario {
        name: "request-budget",
        about: "without faults, N events at page size p cost exactly ⌈N/p⌉ + 1 query requests",
        slow: false,
        run: scenarios::request_budget,
    },
    Scenario {
        name: "limit-clamp",
        about: "LIMIT clamped below/at/above the page and mid-run, 3 formats, persons: exactly once, ⌈N/rows⌉+1 queries",
        slow: false,
        run: paging::limit_clamp,
    },
    Scenario {
        name: "hostile-retry-after",
        about: "429 with Retry-After 2^70 s: exit 1 rate_limited at once after 1 query, nothing committed",
        slow: false,
        run: paging::hostile_retry_after,
    },
    Scenario {
        name: "read-only-dest",
        about: "unwritable table, --state-file or --metrics-file directory: exit 3 before any request",
        slow: false,
        run: destination::read_only_dest,
    },
    Scenario {
        name: "table-lock",
        about: "a second run on the table with another state file: exit 2 at once, no request, exactly once",
        slow: false,
        run: destination::table_lock,
    },
    Scenario {
        name: "lost-part",
        about: "deleted committed parts: the next run names them (exit 1); run --repair restores exactly once",
        slow: false,
        run: destination::lost_part,
    },
    Scenario {
        name: "s3-full",
        about: "5 000 events to s3://bucket/landing (moto): exactly once, value by value via pyarrow, manifest, nothing on local disk",
        slow: false,
        run: object_store::s3_full,
    },
    Scenario {
        name: "s3-kill9",
        about: "SIGKILL during multipart uploads and before the state commit, lease 5 s: exactly once, no orphan part",
        slow: false,
        run: object_store::s3_kill9,
    },
    Scenario {
        name: "s3-lease",
        about: "a second run while the lease lives: exit 2 naming it; renewed; an expired lease taken over",
        slow: false,
        run: object_store::s3_lease,
    },
    Scenario {
        name: "s3-partition-day",
        about: "partition_by: day on S3 and locally: rows in their UTC date=…/ dirs; pyarrow and DuckDB hive counts",
        slow: false,
        run: object_store::s3_partition_day,
    },
];

pub fn run(args: E2eArgs) -> anyhow::Result<()> {
    if args.list {
        for s in SCENARIOS {
            let slow = if s.slow { " (slow)" } else { "" };
            println!("{:<20} {}{slow}", s.name, s.about);
        }
        return Ok(());
    }
    let selected: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| {
            args.filter.is_empty() || args.filter.iter().any(|f| s.name.contains(f.as_str()))
        })
        .filter(|s| args.slow || !s.slow || !args.filter.is_empty())
        .collect();
    if selected.is_empty() {
        bail!(
            "no scenario matches --filter {:?} (see --list)",
            args.filter
        );
    }

    let started = Instant::now();
    if !args.no_build {
        println!("building posthog-cli and posthog-mock (release)…");
    }
    let (cli, mock) = crate::release_binaries(args.no_build)?;
    let env = Env {
        cli: existing(cli)?,
        mock: existing(mock)?,
        keep: args.keep,
        kill_seed: args.kill_seed.unwrap_or_else(clock_seed),
    };
    let build_time = started.elapsed();

    let mut results: Vec<(&str, bool, Duration, String)> = Vec::new();
    for scenario in selected {
        println!("── {} — {}", scenario.name, scenario.about);
        let t0 = Instant::now();
        let mut checks = Checks::default();
        let outcome = (scenario.run)(&env, &mut checks);
        if let Err(e) = outcome {
            checks.fail(format!("scenario aborted: {e:#}"));
        }
        let took = t0.elapsed();
        let passed = checks.passed();
        checks.print();
        println!(
            "{} {} ({:.1} s){}\n",
            if passed { "PASS" } else { "FAIL" },
            scenario.name,
            took.as_secs_f64(),
            if checks.summary.is_empty() {
                String::new()
            } else {
                format!(": {}", checks.summary)
            }
        );
        results.push((scenario.name, passed, took, checks.summary.clone()));
    }

    println!(
        "{:<20} {:<6} {:>8}  numbers",
        "scenario", "result", "seconds"
    );
    for (name, passed, took, summary) in &results {
        println!(
            "{:<20} {:<6} {:>8.1}  {}",
            name,
            if *passed { "PASS" } else { "FAIL" },
            took.as_secs_f64(),
            summary
        );
    }
    let failed = results.iter().filter(|r| !r.1).count();
    println!(
        "{} passed, {} failed; build {:.1} s, total {:.1} s",
        results.len() - failed,
        failed,
        build_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        bail!("{failed} e2e scenario(s) failed");
    }
    Ok(())
}

fn existing(path: PathBuf) -> anyhow::Result<PathBuf> {
    if !path.is_file() {
        bail!(
            "{} does not exist (build it, or drop --no-build)",
            path.display()
        );
    }
    Ok(path)
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// A scenario's temporary directory, removed at the end unless `--keep`.
pub struct WorkDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl WorkDir {
    pub fn new(env: &Env, name: &str) -> anyhow::Result<WorkDir> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("posthog-e2e-{name}-"))
            .tempdir()
            .context("creating a temporary directory")?;
        let path = dir.path().to_path_buf();
        if env.keep {
            println!("   work dir: {}", path.display());
            let _ = dir.keep();
            return Ok(WorkDir { dir: None, path });
        }
        Ok(WorkDir {
            dir: Some(dir),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}
