//! `cargo xtask bench core`: the core pipeline benchmark (parse → dedup → flatten → Arrow →
//! Parquet/JSONL/CSV) in a release build, one process per measurement so each peak RSS is its
//! own. Prints a table; the numbers with the machine description go to `docs/benchmarks.md`.
//! `bench run`, `bench rate`, `bench sweep` ([`sweep`]) and `bench backfill` ([`backfill`])
//! drive the release `posthog-cli` against the release mock.

mod backfill;
mod sweep;

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

use posthog_mock::DataShape;

use crate::e2e::mock::{Mock, MockOptions};

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Core pipeline on generated events, no network: events/s per CPU second and peak RSS.
    Core {
        /// Event counts to run Parquet with (peak RSS must not grow between them).
        #[arg(long, value_delimiter = ',', default_value = "1000000,3000000")]
        events: Vec<u64>,
        /// Runs per measurement; the table shows the median
        /// (of an even count, the higher middle value).
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// `posthog-cli run` end to end against the release mock, alternating with dry runs (the
    /// fetch-only floor: same requests, pages discarded): wall, CPU, peak RSS, requests.
    Run(RunBench),
    /// The client's request budget against a mock that throttles like PostHog.
    Rate(RateBench),
    /// `bench run` over a grid: page size × batch size × data shape × mock gzip at several
    /// event counts; peak RSS, CPU s per 1 M events and wall / floor per cell, against the
    /// peak-RSS budget.
    Sweep(sweep::SweepArgs),
    /// A first run over a long range against a mock that holds every query ~1 s (PostHog's 3
    /// slots), at `performance.query_concurrency` 1 and 3: wall, CPU, peak RSS, query requests,
    /// 429s, exactly once; `--check` wants concurrency 3 at ≤ 0.4 × the wall time of 1.
    Backfill(backfill::BackfillArgs),
}

/// Options of `cargo xtask bench run`.
#[derive(Args)]
struct RunBench {
    /// Event counts (peak RSS must not grow between them).
    #[arg(long, value_delimiter = ',', default_value = "1000000,3000000")]
    events: Vec<usize>,
    /// Runs per event count; the table shows the median
    /// (of an even count, the higher middle value).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Rows per keyset page.
    #[arg(long, default_value_t = 10_000)]
    page_size: u32,
    /// Output format.
    #[arg(long, default_value = "parquet")]
    format: String,
    /// Select each event's person properties (`config.source.include_person_properties`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    person_properties: bool,
    /// `performance.batch_size` (rows buffered before a batch is encoded).
    #[arg(long, default_value_t = 5_000)]
    batch_size: usize,
    /// The shape of the mock's events: `default`, `wide[:KEYS]` (many sparse property keys)
    /// or `heavy[:CHARS]` (a long text on every other event).
    #[arg(long, default_value = "default", value_parser = DataShape::parse)]
    shape: DataShape,
    /// Use the binaries already in target/release.
    #[arg(long)]
    no_build: bool,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        BenchWhat::Core { events, runs } => core(&events, runs.max(1)),
        BenchWhat::Run(args) => run_bench(&args),
        BenchWhat::Rate(args) => rate_bench(&args),
        BenchWhat::Sweep(args) => sweep::sweep(&args),
        BenchWhat::Backfill(args) => backfill::backfill(&args),
    }
}

fn core(counts: &[u64], runs: usize) -> anyhow::Result<()> {
    crate::cargo_build(&["--release", "-p", "posthog-core", "--example", "bench_core"])?;
    let exe = crate::target_dir().join("release/examples/bench_core");
    let mut plan: Vec<(&str, u64)> = counts.iter().map(|&n| ("parquet", n)).collect();
    let first = counts.first().copied().unwrap_or(1_000_000);
    plan.push(("jsonl", first));
    plan.push(("csv", first));
    println!(
        "{:<8} {:>9} {:>12} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "format", "events", "events/cpu-s", "MB/cpu-s", "cpu s", "wall s", "RSS MiB", "out MB"
    );
    for (format, n) in plan {
        let mut results: Vec<Value> = Vec::new();
        for _ in 0..runs {
            let out = Command::new(&exe)
                .args(["--events", &n.to_string(), "--format", format])
                .output()
                .with_context(|| format!("running {}", exe.display()))?;
            if !out.status.success() {
                bail!(
                    "bench_core failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let line = String::from_utf8(out.stdout)?;
            results.push(serde_json::from_str(line.trim()).context("bench_core output")?);
        }
        let median = |key: &str| median_of(results.iter().filter_map(|r| r[key].as_f64()));
        println!(
            "{:<8} {:>9} {:>12.0} {:>10.1} {:>10.2} {:>10.2} {:>10.1} {:>9.1}",
            format,
            n,
            median("events_per_cpu_s"),
            median("json_mb_per_cpu_s"),
            median("pipeline_cpu_s"),
            median("pipeline_wall_s"),
            median("peak_rss_mib"),
            median("output_mb"),
        );
    }
    Ok(())
}

/// One measured `posthog-cli run` (or dry run).
struct Measured {
    wall_s: f64,
    cpu_s: f64,
    peak_rss_mib: f64,
    query_requests: u64,
    /// Rows read.
    rows: u64,
    /// Rows written (for a dry run: rows the run would write).
    written: u64,
    /// Part files written (0 for a dry run).
    files: usize,
    mock_cpu_s: f64,
    throttled: u64,
    /// The run's JSON summary as printed.
    summary: Value,
}

/// A config for the mock: events from 2020 on, `extra` appended (YAML lines).
fn bench_config(
    mock: &Mock,
    page_size: u32,
    format: &str,
    person_properties: bool,
    performance: &str,
) -> String {
    format!(
        "resolved_connection: {{api_key: {key}, project_id: \"{project}\", \
         region: self_hosted, custom_base_url: \"{url}\"}}\n\
         config:\n  source: {{data_type: events, page_size: {page_size}, \
         include_person_properties: {person_properties}, \
         initial_since: \"2020-01-01T00:00:00Z\"}}\n  destination: {{}}\n\
         output: {{format: {format}}}\n\
         performance: {{{performance}}}\n",
        key = mock.key,
        project = mock.project_id,
        url = mock.base_url,
    )
}

/// Runs the CLI once from empty state against `mock` and measures it.
fn measured_run(
    cli: &Path,
    mock: &Mock,
    dir: &Path,
    config: &str,
    extra: &[&str],
) -> anyhow::Result<Measured> {
    std::fs::create_dir_all(dir)?;
    let config_path = dir.join("config.yaml");
    std::fs::write(&config_path, config)?;
    mock.reset_counters()?;
    let mock_cpu = mock.cpu_seconds()?;
    let measured = measure(cli, &config_path, &dir.join("out"), extra)?;
    let result = Measured {
        query_requests: mock.query_requests()?,
        mock_cpu_s: mock.cpu_seconds()? - mock_cpu,
        ..measured
    };
    std::fs::remove_dir_all(dir)?;
    Ok(result)
}

/// The median of `f` over `results` (see [`median_of`]).
fn median(results: &[Measured], f: impl Fn(&Measured) -> f64) -> f64 {
    median_of(results.iter().map(f))
}

/// The median of `values`, every bench's one; of an even count, the higher middle value (for
/// peak RSS and times, the cautious side). NaN for none.
fn median_of(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The config of a throughput run. The client's own request budgets are raised: the benchmark
/// measures the pipeline, not PostHog's 240/min (see `bench rate` for that).
fn pipeline_config(
    mock: &Mock,
    page_size: u32,
    batch_size: usize,
    format: &str,
    person_properties: bool,
) -> String {
    bench_config(
        mock,
        page_size,
        format,
        person_properties,
        &format!(
            "batch_size: {batch_size}, query_requests_per_minute: 100000, \
             query_requests_per_hour: 6000000"
        ),
    )
}

/// One configuration measured: its fetch-only floors and its real runs, round by round.
struct Cell {
    /// `posthog-cli run --dry-run`: the same requests, pages discarded.
    floor: Vec<Measured>,
    /// `posthog-cli run`.
    run: Vec<Measured>,
}

/// Measures `config` against `mock` (serving `n` events) for `runs` rounds, each a dry run then
/// a real run, so drift in the machine's load hits both alike; checks every round (see
/// [`check_round`]). `label` names the configuration in the progress lines (stderr).
fn measure_cell(
    cli: &Path,
    mock: &Mock,
    work: &Path,
    config: &str,
    n: usize,
    runs: usize,
    label: &str,
) -> anyhow::Result<Cell> {
    let mut cell = Cell {
        floor: Vec::new(),
        run: Vec::new(),
    };
    for round in 0..runs.max(1) {
        let floor_dir = work.join(format!("floor-{round}"));
        let dry = measured_run(cli, mock, &floor_dir, config, &["--dry-run"])?;
        let real = measured_run(cli, mock, &work.join(format!("run-{round}")), config, &[])?;
        check_round(&dry, &real, n).with_context(|| format!("{label}, round {}", round + 1))?;
        eprintln!(
            "  {label}, round {}: floor {:.2} s {:.1} MiB, run {:.2} s {:.1} MiB",
            round + 1,
            dry.wall_s,
            dry.peak_rss_mib,
            real.wall_s,
            real.peak_rss_mib
        );
        cell.floor.push(dry);
        cell.run.push(real);
    }
    Ok(cell)
}

/// Both read the `n` rows the mock serves, the run wrote them all, the dry run counted them
/// and wrote no file, and both sent the same query requests.
fn check_round(dry: &Measured, real: &Measured, n: usize) -> anyhow::Result<()> {
    for (what, m) in [("floor", dry), ("run", real)] {
        if m.rows != n as u64 {
            bail!("{what} read {} rows, the mock serves {n}", m.rows);
        }
    }
    // A dry run reports what the real run writes (`rows_output`) and writes no file.
    if real.written != n as u64 || dry.written != n as u64 || dry.files != 0 {
        bail!(
            "the run wrote {} rows, the dry run counted {} in {} files; expected {n}, \
             {n} and 0 files",
            real.written,
            dry.written,
            dry.files
        );
    }
    if dry.query_requests != real.query_requests {
        bail!(
            "the dry run sent {} queries, the run {}: not the same requests",
            dry.query_requests,
            real.query_requests
        );
    }
    Ok(())
}

fn run_bench(args: &RunBench) -> anyhow::Result<()> {
    let (cli, mock_bin) = crate::release_binaries(args.no_build)?;
    println!(
        "| events | what | runs | wall s | CLI CPU s | CLI CPU s / M | peak RSS MiB | mock CPU s | \
         query requests | events / s | wall / floor |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &args.events {
        let work = tempfile::tempdir()?;
        let options = MockOptions {
            shape: args.shape,
            ..MockOptions::new(n, 1)
        };
        let mock = Mock::start(&mock_bin, &options, work.path())?;
        let config = pipeline_config(
            &mock,
            args.page_size,
            args.batch_size,
            &args.format,
            args.person_properties,
        );
        let label = format!("{n} events");
        let cell = measure_cell(&cli, &mock, work.path(), &config, n, args.runs, &label)?;
        let floor_wall = median(&cell.floor, |m| m.wall_s);
        for (what, results) in [("fetch-only floor", &cell.floor), ("`run`", &cell.run)] {
            let wall = median(results, |m| m.wall_s);
            let cpu = median(results, |m| m.cpu_s);
            println!(
                "| {n} | {what} | {} | {wall:.2} | {cpu:.2} | {:.2} | {:.1} | {:.2} | {} | {:.0} | {:.2} |",
                results.len(),
                cpu / (n as f64 / 1e6),
                median(results, |m| m.peak_rss_mib),
                median(results, |m| m.mock_cpu_s),
                median(results, |m| m.query_requests as f64),
                n as f64 / wall,
                wall / floor_wall,
            );
        }
    }
    Ok(())
}

/// Options of `cargo xtask bench rate`.
#[derive(Args)]
struct RateBench {
    /// Events the mock serves.
    #[arg(long, default_value_t = 44_500)]
    events: usize,
    /// Rows per keyset page.
    #[arg(long, default_value_t = 1_000)]
    page_size: u32,
    /// Query requests per minute: the mock's limit and the client's budget.
    #[arg(long, default_value_t = 30)]
    per_minute: u32,
    /// Use the binaries already in target/release.
    #[arg(long)]
    no_build: bool,
}

/// The mock refuses more than R private-API requests in any 60 s (a sliding window, as
/// PostHog's throttle); the client is configured to R per minute. The run sends ⌈N/page⌉ + 1
/// queries (the last one the empty page that ends the scan), paced 60/R s apart, so it must
/// take ⌈N/page⌉ / R minutes (within 5 %) and never be refused.
fn rate_bench(args: &RateBench) -> anyhow::Result<()> {
    let (cli, mock_bin) = crate::release_binaries(args.no_build)?;
    let work = tempfile::tempdir()?;
    let mut opts = MockOptions::new(args.events, 1);
    opts.rate_limit = Some(format!("{}/60s", args.per_minute));
    let mock = Mock::start(&mock_bin, &opts, work.path())?;
    let config = bench_config(
        &mock,
        args.page_size,
        "parquet",
        true,
        &format!(
            "query_requests_per_minute: {}, query_requests_per_hour: 6000000",
            args.per_minute
        ),
    );
    let m = measured_run(&cli, &mock, &work.path().join("rate"), &config, &[])?;
    let throttled = mock.throttled_responses()?;
    let pages = args.events.div_ceil(args.page_size as usize) as f64;
    let expected_s = pages / f64::from(args.per_minute) * 60.0;
    let deviation = (m.wall_s - expected_s) / expected_s;
    println!(
        "| events | page | R / min | query requests | expected s (⌈N/page⌉ / R) | wall s | deviation | 429 received |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {} | {} | {expected_s:.1} | {:.1} | {:+.1} % | {} |",
        args.events,
        args.page_size,
        args.per_minute,
        m.query_requests,
        m.wall_s,
        deviation * 100.0,
        throttled.max(m.throttled),
    );
    if m.written != args.events as u64 {
        bail!(
            "the run wrote {} rows, the mock serves {}",
            m.written,
            args.events
        );
    }
    if throttled > 0 || m.throttled > 0 {
        bail!(
            "the run was refused {} times (429)",
            throttled.max(m.throttled)
        );
    }
    if deviation.abs() > 0.05 {
        bail!("wall time is {:+.1} % off the budget", deviation * 100.0);
    }
    Ok(())
}

/// The highest `VmHWM` (KiB) of process `pid`, read from `/proc/<pid>/status` every 10 ms until
/// the process has exited (a zombie's status has no `VmHWM`); 0 if none was read. `VmHWM` is
/// the high-water mark of the process's own memory, so only growth in the last 10 ms before it
/// exits can be missed.
fn peak_of(pid: libc::pid_t) -> u64 {
    let path = format!("/proc/{pid}/status");
    let mut peak = 0;
    loop {
        let Ok(status) = std::fs::read_to_string(&path) else {
            return peak;
        };
        let Some(kib) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        else {
            return peak;
        };
        peak = peak.max(kib);
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `posthog-cli run` and reads its wall time and CPU time from `wait4`, its peak RSS
/// from its own `VmHWM`.
fn measure(cli: &Path, config: &Path, out: &Path, extra: &[&str]) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let mut child = Command::new(cli)
        .args(["--quiet", "--log-level", "warn", "run"])
        .args(extra)
        .arg("--config")
        .arg(config)
        .arg("--output-dir")
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", cli.display()))?;
    let pid = child.id() as libc::pid_t;
    let hwm = std::thread::spawn(move || peak_of(pid));
    let mut stdout = child.stdout.take().context("child stdout")?;
    let mut text = String::new();
    stdout.read_to_string(&mut text)?;
    let mut status: libc::c_int = 0;
    // SAFETY: all-zero bytes are a valid `rusage` (a plain C struct of integers).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unwaited child; `status` and `usage` are valid for writes.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if reaped != pid {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    let wall_s = started.elapsed().as_secs_f64();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("posthog-cli run failed (status {status}): {text}");
    }
    let summary: Value = serde_json::from_str(text.trim()).context("run summary")?;
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    // Linux reports ru_maxrss in KiB, but it is not the child's own peak: a child started by
    // vfork+exec (how std spawns) inherits the parent's high-water mark at exec, so a bench
    // that holds a million expected UUIDs read 420 MiB for a run that peaked at 64. The
    // child's VmHWM, sampled while it runs, is its own; ru_maxrss only when no sample came.
    let sampled_kib = hwm.join().unwrap_or(0);
    let peak_kib = match sampled_kib {
        0 => usage.ru_maxrss as u64,
        kib => kib,
    };
    Ok(Measured {
        wall_s,
        cpu_s: secs(usage.ru_utime) + secs(usage.ru_stime),
        peak_rss_mib: peak_kib as f64 / 1024.0,
        query_requests: 0,
        // A dry run outputs nothing; what both read is what the mock served.
        rows: summary["rows_read"].as_u64().unwrap_or(0),
        written: summary["rows_output"].as_u64().unwrap_or(0),
        files: summary["files"].as_array().map_or(0, Vec::len),
        mock_cpu_s: 0.0,
        throttled: summary["throttled"].as_u64().unwrap_or(0),
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::median_of;

    #[test]
    fn median_of_an_even_count_is_the_higher_middle_value() {
        assert_eq!(median_of([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median_of([52.0, 51.0].into_iter()), 52.0);
        assert_eq!(median_of([4.0, 1.0, 3.0, 2.0].into_iter()), 3.0);
        assert!(median_of(std::iter::empty()).is_nan());
    }
}
