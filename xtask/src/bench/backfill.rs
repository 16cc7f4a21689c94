//! `cargo xtask bench backfill`: a first run over a long range against a mock that holds every
//! query like PostHog does (about a second, 3 at once per project), once with
//! `performance.query_concurrency: 1` and once with `3`. A run whose first page is full plans
//! its range with one `quantiles(…)` query and reads the rest as concurrent keyset slices, so
//! with queries that take a second the wall time should fall to about a third.
//!
//! Each run is the release `posthog-cli run` (real writes, Parquet) from empty state, measured
//! as `bench run` measures it (wall, CPU and peak RSS from `wait4`), with the mock's counters
//! reset before it: query requests, planning queries (bodies containing `quantiles(`),
//! concurrency 429s and the most queries held at once. The parts are read back and every
//! generated event UUID (read beforehand from a second mock serving the same data, by `uuid`
//! rather than by time) must be in them exactly once. Stdout gets a machine line, the
//! settings, a markdown table (medians over `--rounds`) and the checks; with `--check` the
//! command fails unless concurrency 3 takes at most 0.4 × the wall time of concurrency 1, no
//! 429 was received, and each run stayed within ⌈N/page⌉ + slices + 1 query requests.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use posthog_mock::QueryLatency;

use super::{Measured, bench_config, measure, median_of};
use crate::e2e::mock::{Mock, MockOptions};
use crate::e2e::verify::{self, Checks, Format, Uuids};

/// The settings compared: `performance.query_concurrency` 1 (the baseline) and 3.
const SETTINGS: [u64; 2] = [1, 3];

/// `--check`: concurrency 3 must take at most this share of concurrency 1's wall time.
const MAX_RATIO: f64 = 0.4;

/// PostHog's documented query budget per minute (the client's default), which sets its pace.
const POSTHOG_QUERIES_PER_MINUTE: u32 = 240;

/// Options of `cargo xtask bench backfill`.
#[derive(Args)]
pub(super) struct BackfillArgs {
    /// Events the mock serves.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Rows per keyset page (`config.source.page_size`).
    #[arg(long, default_value_t = 10_000)]
    page_size: u32,
    /// The fixed time the mock holds every query in one of its 3 slots, ms.
    #[arg(long, default_value_t = 1_000)]
    hold_ms: u64,
    /// Added to a query's hold for every row it returns, µs.
    #[arg(long, default_value_t = 0)]
    hold_per_row_us: u64,
    /// Rounds, each a run at every setting; the table shows medians
    /// (of an even count, the higher middle value).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// `performance.query_requests_per_minute`, with the hour's budget raised to 6 000 000;
    /// default: PostHog's documented budgets (240/min, 2 400/h), whose pace of one query per
    /// 250 ms caps a run at 4 queries/s.
    #[arg(long)]
    query_requests_per_minute: Option<u32>,
    /// Use the binaries already in target/release.
    #[arg(long)]
    no_build: bool,
    /// Fail unless wall(3) ≤ 0.4 × wall(1), no 429 was received and every run stayed within
    /// ⌈N/page⌉ + slices + 1 query requests (exactly once is always required).
    #[arg(long)]
    check: bool,
}

/// One measured run at one setting.
struct Outcome {
    concurrency: u64,
    m: Measured,
    /// Concurrency 429s the mock answered.
    mock_throttled: u64,
    /// The most queries the mock held at once.
    peak_held: u64,
    /// Query requests whose body contains `quantiles(`.
    planning: u64,
    /// Slices the run used, from its summary's `slices`; `None` when the summary has none.
    slices: Option<u64>,
    /// What was wrong with the parts (empty: each generated UUID exactly once).
    once_failures: Vec<String>,
}

impl Outcome {
    /// ⌈N/page⌉ + slices + 1, slices from the summary or else the setting.
    fn bound(&self, args: &BackfillArgs) -> u64 {
        let pages = (args.events as u64).div_ceil(u64::from(args.page_size));
        pages + self.slices.unwrap_or(self.concurrency) + 1
    }
}

/// `cargo xtask bench backfill`.
pub(super) fn backfill(args: &BackfillArgs) -> anyhow::Result<()> {
    let (cli, mock_bin) = crate::release_binaries(args.no_build)?;
    let work = tempfile::tempdir()?;
    let opts = MockOptions {
        query_latency: Some(QueryLatency::new(
            Duration::from_millis(args.hold_ms),
            Duration::from_micros(args.hold_per_row_us),
        )),
        ..MockOptions::new(args.events, 1)
    };
    let uuids = source_uuids(&mock_bin, args.events, work.path())?;
    let mock = Mock::start(&mock_bin, &opts, work.path())?;
    print_settings(args);
    let mut outcomes = Vec::new();
    for round in 0..args.rounds.max(1) {
        for concurrency in SETTINGS {
            let o = one_run(&cli, &mock, work.path(), args, concurrency, &uuids)?;
            eprintln!(
                "  round {}, query_concurrency {concurrency}: {:.2} s, {} queries, peak {} held",
                round + 1,
                o.m.wall_s,
                o.m.query_requests,
                o.peak_held
            );
            outcomes.push(o);
        }
    }
    print_table(args, &outcomes);
    let failures = print_checks(args, &outcomes);
    if !failures.correctness.is_empty() {
        bail!("not exactly once: {}", failures.correctness.join("; "));
    }
    if args.check && !failures.performance.is_empty() {
        bail!("--check failed: {}", failures.performance.join("; "));
    }
    Ok(())
}

/// The UUIDs of the `events` generated events, from a second mock serving the same data
/// without query latency (regenerating a million events in-process would take ~13 GB here):
/// every one distinct, `events` of them.
fn source_uuids(mock_bin: &Path, events: usize, work: &Path) -> anyhow::Result<Uuids> {
    let started = Instant::now();
    eprintln!("reading the {events} generated UUIDs from a reference mock…");
    let dir = work.join("reference");
    std::fs::create_dir_all(&dir)?;
    let reference = Mock::start(mock_bin, &MockOptions::new(events, 1), &dir)?;
    let uuids: Uuids = reference
        .served_uuids()?
        .into_iter()
        .map(|u| (u, ()))
        .collect();
    if uuids.len() != events {
        bail!(
            "the reference mock serves {} distinct UUIDs, expected {events}",
            uuids.len()
        );
    }
    eprintln!("  done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(uuids)
}

/// The machine, the settings and what perfect slicing would reach with them.
fn print_settings(args: &BackfillArgs) {
    println!("{}", super::sweep::machine());
    let per_minute = args
        .query_requests_per_minute
        .unwrap_or(POSTHOG_QUERIES_PER_MINUTE);
    let budget = match args.query_requests_per_minute {
        Some(r) => format!("query budget {r}/min (raised)"),
        None => "query budget PostHog's documented 240/min, 2400/h (the defaults)".to_owned(),
    };
    println!(
        "{} events, page {}, mock hold {} ms + {} µs/row in 3 slots (30 s queue), {budget}, \
         Parquet, {} round(s)",
        args.events, args.page_size, args.hold_ms, args.hold_per_row_us, args.rounds
    );
    let pages = (args.events as u64).div_ceil(u64::from(args.page_size));
    let per_query =
        args.hold_ms as f64 / 1e3 + args.hold_per_row_us as f64 / 1e6 * f64::from(args.page_size);
    let ideal = ideal_ratio(pages, per_query, 60.0 / f64::from(per_minute));
    println!(
        "perfect slicing with free CPU would reach wall(3) / wall(1) = {ideal:.2} here (two \
         serial queries, then ⌈(pages − 1) / 3⌉ + 1 per slice, one query per {:.0} ms at most){}",
        60_000.0 / f64::from(per_minute),
        if ideal > MAX_RATIO {
            format!(": the {MAX_RATIO} check cannot pass at these settings")
        } else {
            String::new()
        }
    );
    println!();
}

/// wall(3) / wall(1) with perfect slicing, CPU and network free: concurrency 1 sends
/// `pages + 1` queries one after the other; concurrency 3 sends the first page and the planning
/// query, then 3 slices of the remaining pages each ending with an empty page; every query
/// takes `per_query` s and the client sends at most one per `pace` s.
fn ideal_ratio(pages: u64, per_query: f64, pace: f64) -> f64 {
    let serial = per_query.max(pace);
    let wall1 = (pages + 1) as f64 * serial;
    let rest = pages.saturating_sub(1);
    let per_slice = rest.div_ceil(3) + 1;
    let wall3 = 2.0 * serial + (per_slice as f64 * per_query).max((rest + 3) as f64 * pace);
    wall3 / wall1
}

/// One `posthog-cli run` at `concurrency` from empty state, with the mock's counters reset
/// first; its parts are read back against `uuids`, then removed.
fn one_run(
    cli: &Path,
    mock: &Mock,
    work: &Path,
    args: &BackfillArgs,
    concurrency: u64,
    uuids: &Uuids,
) -> anyhow::Result<Outcome> {
    let dir = work.join(format!("concurrency-{concurrency}"));
    std::fs::create_dir_all(&dir)?;
    let budget = args
        .query_requests_per_minute
        .map_or_else(String::new, |r| {
            format!(", query_requests_per_minute: {r}, query_requests_per_hour: 6000000")
        });
    let config = bench_config(
        mock,
        args.page_size,
        "parquet",
        true,
        &format!("query_concurrency: {concurrency}{budget}"),
    );
    let config_path = dir.join("config.yaml");
    std::fs::write(&config_path, config)?;
    mock.reset_counters()?;
    let out = dir.join("out");
    let mut m = measure(cli, &config_path, &out, &[])?;
    m.query_requests = mock.query_requests()?;
    let outcome = Outcome {
        concurrency,
        mock_throttled: mock.counter("/concurrency_throttled")?,
        peak_held: mock.counter("/peak_queries_held")?,
        planning: mock.query_requests_containing("quantiles(")?,
        slices: slices(&m.summary),
        once_failures: exactly_once(&out, uuids)?,
        m,
    };
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(outcome)
}

/// The summary's `slices` (a count, or a list of slices), when the CLI reports it.
fn slices(summary: &serde_json::Value) -> Option<u64> {
    let v = &summary["slices"];
    v.as_u64().or_else(|| v.as_array().map(|a| a.len() as u64))
}

/// e2e's table checks on `out` against `uuids`: the parts are the state's, with their hashes,
/// and hold every UUID exactly once and nothing else.
fn exactly_once(out: &Path, uuids: &Uuids) -> anyhow::Result<Vec<String>> {
    let mut ck = Checks::default();
    verify::uuids_table(&mut ck, &verify::Look::new(out, Format::Parquet), uuids)?;
    Ok(ck.failures().into_iter().map(str::to_owned).collect())
}

/// The runs at `concurrency`.
fn at(outcomes: &[Outcome], concurrency: u64) -> impl Iterator<Item = &Outcome> {
    outcomes
        .iter()
        .filter(move |o| o.concurrency == concurrency)
}

fn median_wall(outcomes: &[Outcome], concurrency: u64) -> f64 {
    median_of(at(outcomes, concurrency).map(|o| o.m.wall_s))
}

fn print_table(args: &BackfillArgs, outcomes: &[Outcome]) {
    println!(
        "| setting | wall s | ratio to 1 | CLI CPU s | peak RSS MiB | rows out | query requests | \
         bound ⌈N/page⌉ + slices + 1 | planning queries | 429 received (mock / CLI) | \
         peak held | exactly once |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let base = median_wall(outcomes, SETTINGS[0]);
    let mut assumed = false;
    for concurrency in SETTINGS {
        let runs: Vec<&Outcome> = at(outcomes, concurrency).collect();
        let med = |f: &dyn Fn(&Outcome) -> f64| median_of(runs.iter().map(|o| f(o)));
        let wall = med(&|o| o.m.wall_s);
        let bound = runs.iter().map(|o| o.bound(args)).max().unwrap_or(0);
        let guessed = runs.iter().any(|o| o.slices.is_none());
        assumed |= guessed;
        let once = runs.iter().all(|o| o.once_failures.is_empty());
        println!(
            "| query_concurrency: {concurrency} | {wall:.2} | {:.2} | {:.2} | {:.1} | {:.0} | \
             {:.0} | {bound}{} | {:.0} | {} / {} | {:.0} | {} |",
            wall / base,
            med(&|o| o.m.cpu_s),
            med(&|o| o.m.peak_rss_mib),
            med(&|o| o.m.written as f64),
            med(&|o| o.m.query_requests as f64),
            if guessed { "*" } else { "" },
            med(&|o| o.planning as f64),
            runs.iter().map(|o| o.mock_throttled).sum::<u64>(),
            runs.iter().map(|o| o.m.throttled).sum::<u64>(),
            med(&|o| o.peak_held as f64),
            if once { "yes" } else { "**no**" },
        );
    }
    if assumed {
        println!();
        println!(
            "\\* the run summary has no `slices`: the bound assumes slices = query_concurrency."
        );
    }
    println!();
}

/// What failed: exactly once (always fatal) and the `--check` conditions.
struct Failures {
    correctness: Vec<String>,
    performance: Vec<String>,
}

/// Prints every check as `ok` or `FAIL` and returns the failures.
fn print_checks(args: &BackfillArgs, outcomes: &[Outcome]) -> Failures {
    let mut failures = Failures {
        correctness: Vec::new(),
        performance: Vec::new(),
    };
    let mut report = |ok: bool, what: String, fatal: bool| {
        println!("{} {what}", if ok { "ok  " } else { "FAIL" });
        if !ok && fatal {
            failures.correctness.push(what);
        } else if !ok {
            failures.performance.push(what);
        }
    };
    for o in outcomes {
        let c = o.concurrency;
        let once = o.once_failures.is_empty() && o.m.written == args.events as u64;
        report(
            once,
            format!(
                "query_concurrency {c}: {} rows output, every generated UUID exactly once{}",
                o.m.written,
                o.once_failures
                    .first()
                    .map(|f| format!(" — {f}"))
                    .unwrap_or_default()
            ),
            true,
        );
        report(
            o.mock_throttled == 0 && o.m.throttled == 0,
            format!(
                "query_concurrency {c}: no 429 (mock concurrency_throttled {}, CLI throttled {})",
                o.mock_throttled, o.m.throttled
            ),
            false,
        );
        report(
            o.m.query_requests <= o.bound(args),
            format!(
                "query_concurrency {c}: {} query requests ≤ ⌈N/page⌉ + slices + 1 = {}",
                o.m.query_requests,
                o.bound(args)
            ),
            false,
        );
    }
    let (one, three) = (median_wall(outcomes, 1), median_wall(outcomes, 3));
    report(
        three <= MAX_RATIO * one,
        format!(
            "wall(3) {three:.2} s ≤ {MAX_RATIO} × wall(1) {one:.2} s (ratio {:.2})",
            three / one
        ),
        false,
    );
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ideal_ratio_counts_the_serial_queries_the_slices_and_the_pace() {
        // 100 pages of 1 s queries, a pace of 250 ms: 2 + 34 s against 101 s.
        let r = ideal_ratio(100, 1.0, 0.25);
        assert!((r - 36.0 / 101.0).abs() < 1e-9, "{r}");
        // 20 pages of 200 ms at PostHog's pace: the pace decides, slicing cannot help.
        assert!(ideal_ratio(20, 0.2, 0.25) > 1.0);
        // A single page: nothing to slice.
        assert!(ideal_ratio(1, 1.0, 0.0) >= 1.0);
    }
}
