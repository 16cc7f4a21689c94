//! `cargo xtask bench core`: the core pipeline benchmark (parse → dedup → flatten → Arrow →
//! Parquet/JSONL/CSV) in a release build, one process per measurement so each peak RSS is its
//! own. Prints a table; the numbers with the machine description go to `docs/benchmarks.md`.

use std::process::Command;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

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
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        BenchWhat::Core { events, runs } => core(&events, runs.max(1)),
    }
}

fn core(counts: &[u64], runs: usize) -> anyhow::Result<()> {
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "-p",
            "posthog-core",
            "--example",
            "bench_core",
        ])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building the benchmark failed");
    }
    let exe = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/release/examples/bench_core");
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
