//! `cargo xtask bench sweep`: `bench run` over a grid of page size × batch size × data shape ×
//! mock gzip at several event counts. Each cell is measured as `bench run` measures it (a dry
//! run, the fetch-only floor, alternating with the real run) against one mock per (events,
//! shape, gzip), and its run's peak RSS is held to the budget: [`BUDGET_MIB`] on the default
//! and heavy shapes, [`WIDE_BUDGET_MIB`] on the wide one.
//!
//! Stdout gets a machine line, then a markdown table row by row as cells finish, then a
//! summary (cells over budget; the peak-RSS ratio of the largest to the smallest event count
//! for each configuration), so `… > sweep.md` can be followed and pasted into
//! `docs/benchmarks.md`. Progress goes to stderr.

use std::io::Write as _;
use std::path::Path;

use anyhow::bail;
use clap::Args;
use posthog_mock::DataShape;

use super::{Cell, measure_cell, median, pipeline_config};
use crate::e2e::mock::{Mock, MockOptions};

/// Peak RSS budget of `posthog-cli run` on the default and heavy shapes, MiB.
const BUDGET_MIB: f64 = 64.0;

/// Peak RSS budget of `posthog-cli run` on the wide shape, MiB.
const WIDE_BUDGET_MIB: f64 = 128.0;

/// Options of `cargo xtask bench sweep`; every list is comma-separated.
#[derive(Args)]
pub(super) struct SweepArgs {
    /// Event counts the mock serves.
    #[arg(long, value_delimiter = ',', default_value = "1000000,3000000")]
    events: Vec<usize>,
    /// Rows per keyset page.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,50000")]
    page_size: Vec<u32>,
    /// `performance.batch_size` (rows buffered before a batch is encoded).
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    batch_size: Vec<usize>,
    /// Shapes of the mock's events: `default`, `wide[:KEYS]` (many sparse property keys) or
    /// `heavy[:CHARS]` (a long text on every other event).
    #[arg(long, value_delimiter = ',', default_value = "default,wide,heavy",
          value_parser = DataShape::parse)]
    shape: Vec<DataShape>,
    /// Whether the mock gzips its responses: `on`/`off` (or `true`/`false`).
    #[arg(long, value_delimiter = ',', default_value = "on,off", value_parser = parse_gzip)]
    gzip: Vec<bool>,
    /// Rounds per cell; the table shows the median
    /// (of an even count, the higher middle value).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Output format.
    #[arg(long, default_value = "parquet")]
    format: String,
    /// Select each event's person properties (`config.source.include_person_properties`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    person_properties: bool,
    /// Use the binaries already in target/release.
    #[arg(long)]
    no_build: bool,
    /// Fail (after the whole sweep) if any cell's peak RSS is over its budget.
    #[arg(long)]
    check: bool,
}

/// `on`, `true`, `yes`, `1` or `off`, `false`, `no`, `0`.
fn parse_gzip(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("`{text}` is not on/off (or true/false)")),
    }
}

fn on_off(gzip: bool) -> &'static str {
    if gzip { "on" } else { "off" }
}

/// The peak RSS a run of `shape` may reach, MiB.
fn budget_mib(shape: DataShape) -> f64 {
    match shape {
        DataShape::Wide { .. } => WIDE_BUDGET_MIB,
        DataShape::Default | DataShape::Heavy { .. } => BUDGET_MIB,
    }
}

/// One cell of the grid: what the mock serves and how the client reads it.
#[derive(Clone, Copy, PartialEq)]
struct Key {
    events: usize,
    shape: DataShape,
    gzip: bool,
    page: u32,
    batch: usize,
}

/// A finished cell, as the summary needs it.
struct Row {
    key: Key,
    /// Median peak RSS of the real runs, MiB.
    run_rss: f64,
    over: bool,
}

/// `cargo xtask bench sweep`.
pub(super) fn sweep(args: &SweepArgs) -> anyhow::Result<()> {
    let (cli, mock_bin) = crate::release_binaries(args.no_build)?;
    println!("{}", machine());
    println!();
    println!(
        "| events | shape | gzip | page | batch | run peak RSS MiB | floor peak RSS MiB | \
         run CLI CPU s / M | floor CPU s / M | wall s | wall / floor | budget |"
    );
    println!("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    std::io::stdout().flush()?;
    let mut mocks = Vec::new();
    for &events in &args.events {
        for &shape in &args.shape {
            for &gzip in &args.gzip {
                mocks.push((events, shape, gzip));
            }
        }
    }
    let total = mocks.len() * args.page_size.len() * args.batch_size.len();
    let mut rows: Vec<Row> = Vec::with_capacity(total);
    for (events, shape, gzip) in mocks {
        let work = tempfile::tempdir()?;
        let options = MockOptions {
            shape,
            gzip,
            ..MockOptions::new(events, 1)
        };
        eprintln!(
            "sweep: mock serving {events} events, shape {shape}, gzip {}",
            on_off(gzip)
        );
        let mock = Mock::start(&mock_bin, &options, work.path())?;
        for &page in &args.page_size {
            for &batch in &args.batch_size {
                let key = Key {
                    events,
                    shape,
                    gzip,
                    page,
                    batch,
                };
                eprintln!("sweep: cell {} of {total}", rows.len() + 1);
                rows.push(sweep_cell(args, &cli, &mock, work.path(), key)?);
            }
        }
    }
    summary(&rows)?;
    let over = rows.iter().filter(|r| r.over).count();
    if args.check && over > 0 {
        bail!(
            "{over} of {} cells are over their peak RSS budget",
            rows.len()
        );
    }
    Ok(())
}

/// Measures one cell and prints its table row.
fn sweep_cell(
    args: &SweepArgs,
    cli: &Path,
    mock: &Mock,
    work: &Path,
    key: Key,
) -> anyhow::Result<Row> {
    let n = key.events;
    let config = pipeline_config(
        mock,
        key.page,
        key.batch,
        &args.format,
        args.person_properties,
    );
    let label = format!(
        "{n} events, {}, gzip {}, page {}, batch {}",
        key.shape,
        on_off(key.gzip),
        key.page,
        key.batch
    );
    let Cell { floor, run } = measure_cell(cli, mock, work, &config, n, args.runs, &label)?;
    let millions = n as f64 / 1e6;
    let run_rss = median(&run, |m| m.peak_rss_mib);
    let over = run_rss > budget_mib(key.shape);
    let wall = median(&run, |m| m.wall_s);
    println!(
        "| {n} | {} | {} | {} | {} | {run_rss:.1} | {:.1} | {:.2} | {:.2} | {wall:.2} | {:.2} | {} |",
        key.shape,
        on_off(key.gzip),
        key.page,
        key.batch,
        median(&floor, |m| m.peak_rss_mib),
        median(&run, |m| m.cpu_s) / millions,
        median(&floor, |m| m.cpu_s) / millions,
        wall / median(&floor, |m| m.wall_s),
        if over { "OVER" } else { "ok" },
    );
    std::io::stdout().flush()?;
    Ok(Row { key, run_rss, over })
}

/// Prints the cells over budget and, when more than one event count was run, each
/// configuration's peak RSS at the largest count over that at the smallest (1.00: flat).
fn summary(rows: &[Row]) -> anyhow::Result<()> {
    println!();
    println!(
        "summary: {} of {} cells over budget ({BUDGET_MIB} MiB default and heavy, \
         {WIDE_BUDGET_MIB} MiB wide)",
        rows.iter().filter(|r| r.over).count(),
        rows.len()
    );
    let small = rows.iter().map(|r| r.key.events).min();
    let large = rows.iter().map(|r| r.key.events).max();
    if let (Some(small), Some(large)) = (small, large)
        && small < large
    {
        println!("peak RSS at {large} / at {small} events, page × batch:");
        // (shape, gzip) → "page×batch ratio" in the order the cells ran.
        let mut groups: Vec<((DataShape, bool), Vec<String>)> = Vec::new();
        for row in rows.iter().filter(|r| r.key.events == large) {
            let at_small = Key {
                events: small,
                ..row.key
            };
            let Some(base) = rows.iter().find(|r| r.key == at_small) else {
                continue;
            };
            let group = (row.key.shape, row.key.gzip);
            let ratio = format!(
                "{}×{} {:.2}",
                row.key.page,
                row.key.batch,
                row.run_rss / base.run_rss
            );
            match groups.iter_mut().find(|(g, _)| *g == group) {
                Some((_, ratios)) => ratios.push(ratio),
                None => groups.push((group, vec![ratio])),
            }
        }
        for ((shape, gzip), ratios) in groups {
            println!("  {shape}, gzip {}: {}", on_off(gzip), ratios.join(", "));
        }
    }
    std::io::stdout().flush()?;
    Ok(())
}

/// The machine, for the table's heading: CPU model, cores, memory, kernel.
pub(super) fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, model)| model.trim());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let meminfo = read("/proc/meminfo");
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN);
    let kernel = read("/proc/sys/kernel/osrelease");
    format!(
        "machine: {cpu}, {cores} cores, {:.1} GiB RAM, Linux {}",
        mem_kib / (1024.0 * 1024.0),
        kernel.trim()
    )
}
