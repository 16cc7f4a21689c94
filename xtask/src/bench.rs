//! `cargo xtask bench core`: the core pipeline benchmark (parse → dedup → flatten → Arrow →
//! Parquet/JSONL/CSV) in a release build, one process per measurement so each peak RSS is its
//! own. Prints a table; the numbers with the machine description go to `docs/benchmarks.md`.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

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
        /// Runs per measurement; the table shows the median.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// `posthog-cli run` end to end against the release mock: wall, CPU, peak RSS, requests.
    Run(RunBench),
}

/// Options of `cargo xtask bench run`.
#[derive(Args)]
struct RunBench {
    /// Event counts (peak RSS must not grow between them).
    #[arg(long, value_delimiter = ',', default_value = "1000000,3000000")]
    events: Vec<usize>,
    /// Runs per event count; the table shows the median.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Rows per keyset page.
    #[arg(long, default_value_t = 10_000)]
    page_size: u32,
    /// Output format.
    #[arg(long, default_value = "parquet")]
    format: String,
    /// Use the binaries already in target/release.
    #[arg(long)]
    no_build: bool,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        BenchWhat::Core { events, runs } => core(&events, runs.max(1)),
        BenchWhat::Run(args) => run_bench(&args),
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
        let median = |key: &str| {
            let mut v: Vec<f64> = results.iter().filter_map(|r| r[key].as_f64()).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        };
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

/// One measured `posthog-cli run`.
struct Measured {
    wall_s: f64,
    cpu_s: f64,
    peak_rss_mib: f64,
    query_requests: u64,
    rows: u64,
}

fn run_bench(args: &RunBench) -> anyhow::Result<()> {
    if !args.no_build {
        crate::cargo_build(&[
            "--release",
            "--locked",
            "-p",
            "posthog-cli",
            "-p",
            "posthog-mock",
        ])?;
    }
    let release = crate::target_dir().join("release");
    let (cli, mock_bin) = (release.join("posthog-cli"), release.join("posthog-mock"));
    println!(
        "{:>9} {:>6} {:>8} {:>8} {:>9} {:>10} {:>11}",
        "events", "runs", "wall s", "cpu s", "RSS MiB", "queries", "events/s"
    );
    for &n in &args.events {
        let work = tempfile::tempdir()?;
        let mock = Mock::start(&mock_bin, &MockOptions::new(n, 1), work.path())?;
        let mut results = Vec::new();
        for run in 0..args.runs.max(1) {
            let dir = work.path().join(format!("run-{run}"));
            std::fs::create_dir_all(&dir)?;
            let config = dir.join("config.yaml");
            std::fs::write(
                &config,
                format!(
                    "resolved_connection: {{api_key: {key}, project_id: \"{project}\", \
                     region: self_hosted, custom_base_url: \"{url}\"}}\n\
                     config:\n  source: {{data_type: events, page_size: {page}, \
                     initial_since: \"2020-01-01T00:00:00Z\"}}\n  destination: {{}}\n\
                     output: {{format: {format}}}\n\
                     performance: {{batch_size: 10000, query_requests_per_minute: 100000, \
                     query_requests_per_hour: 6000000}}\n",
                    key = mock.key,
                    project = mock.project_id,
                    url = mock.base_url,
                    page = args.page_size,
                    format = args.format,
                ),
            )?;
            mock.reset_counters()?;
            let measured = measure(&cli, &config, &dir.join("out"))?;
            let queries = mock.query_requests()?;
            if measured.rows != n as u64 {
                bail!("run wrote {} rows, the mock serves {n}", measured.rows);
            }
            results.push(Measured {
                query_requests: queries,
                ..measured
            });
            std::fs::remove_dir_all(&dir)?;
        }
        let median = |f: &dyn Fn(&Measured) -> f64| {
            let mut v: Vec<f64> = results.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let wall = median(&|m| m.wall_s);
        println!(
            "{:>9} {:>6} {:>8.2} {:>8.2} {:>9.1} {:>10} {:>11.0}",
            n,
            results.len(),
            wall,
            median(&|m| m.cpu_s),
            median(&|m| m.peak_rss_mib),
            median(&|m| m.query_requests as f64),
            n as f64 / wall,
        );
    }
    Ok(())
}

/// Runs `posthog-cli run` and reads its wall time, CPU time and peak RSS from `wait4`.
fn measure(cli: &Path, config: &Path, out: &Path) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let mut child = Command::new(cli)
        .args(["--quiet", "--log-level", "warn", "run", "--config"])
        .arg(config)
        .arg("--output-dir")
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", cli.display()))?;
    let pid = child.id() as libc::pid_t;
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
    Ok(Measured {
        wall_s,
        cpu_s: secs(usage.ru_utime) + secs(usage.ru_stime),
        // Linux reports ru_maxrss in KiB.
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
        query_requests: 0,
        rows: summary["rows_output"].as_u64().unwrap_or(0),
    })
}
