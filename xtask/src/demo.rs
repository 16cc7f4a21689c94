//! `cargo xtask demo`: the main job, for real, with no credentials.
//!
//! It starts the mock PostHog on loopback with generated events (project time zone
//! Asia/Kolkata, a cluster of events sharing one timestamp), then runs the `posthog-cli` binary
//! twice against it: a full extraction, then — after new events and late events (behind the
//! watermark, inside the lookback window) arrive — an incremental run that writes exactly the
//! events it had not written. It prints both run summaries and how to read the output.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use posthog_mock::{Dataset, Event, GenSpec, MockConfig, MockServer};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Options of `cargo xtask demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Events the mock generates.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Rows per keyset page (PostHog clamps LIMIT at 50 000).
    #[arg(long, default_value_t = 5_000)]
    page_size: u32,
    /// Output format: parquet, jsonl or csv.
    #[arg(long, default_value = "parquet")]
    format: String,
    /// Where the config, the output and the state go.
    #[arg(long, default_value = "target/demo")]
    dir: PathBuf,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let cli = build_cli()?;
    let spec = GenSpec {
        seed: 42,
        events: args.events,
        same_timestamp_cluster: args.events.min(2_600),
        ..GenSpec::default()
    };
    let dataset = Dataset::generate(&spec);
    let config = MockConfig::with_dataset(dataset.clone());
    let key = config.personal_api_key.clone();
    let tz = config.timezone.name.clone();
    let mock = MockServer::start(config)
        .await
        .context("starting the mock")?;
    println!(
        "mock PostHog on {} ({} events, project time zone {tz})",
        mock.base_url(),
        args.events
    );
    let files = DemoFiles::write(&args, &mock.base_url(), &key)?;
    println!("config: {}\n", files.config.display());

    println!("1. Full extraction");
    let first = files.run_cli(&cli)?;
    print_summary(&first);
    ensure!(
        first["rows_output"] == args.events,
        "the first run wrote {} rows, the mock holds {}",
        first["rows_output"],
        args.events
    );

    let arrivals = new_and_late_events(&dataset, &first)?;
    mock.insert_events(arrivals.iter().map(|(e, _)| e.clone()).collect());
    println!(
        "\n2. Incremental run after {} new and {} late events arrived",
        arrivals.iter().filter(|(_, late)| !late).count(),
        arrivals.iter().filter(|(_, late)| *late).count()
    );
    let second = files.run_cli(&cli)?;
    print_summary(&second);
    ensure!(
        second["rows_output"] == arrivals.len(),
        "the incremental run wrote {} rows, expected {}",
        second["rows_output"],
        arrivals.len()
    );
    let total = second["state"]["rows_total"].as_u64().unwrap_or(0);
    ensure!(
        total == (args.events + arrivals.len()) as u64,
        "the state counts {total} rows"
    );
    print_how_to_read(&files, &args.format, &second);
    mock.shutdown().await;
    Ok(())
}

/// Where the demo's config, key, output and state go.
struct DemoFiles {
    config: PathBuf,
    key_file: PathBuf,
    output: PathBuf,
}

impl DemoFiles {
    /// A fresh demo directory each time, so the first run is a full extraction; the key is
    /// not in the config: the CLI reads it from a secret file, as in Kubernetes.
    fn write(args: &DemoArgs, base_url: &str, key: &str) -> anyhow::Result<DemoFiles> {
        if args.dir.exists() {
            std::fs::remove_dir_all(&args.dir)
                .with_context(|| format!("clearing {}", args.dir.display()))?;
        }
        std::fs::create_dir_all(&args.dir)?;
        let files = DemoFiles {
            config: args.dir.join("config.yaml"),
            key_file: args.dir.join("api-key"),
            output: args.dir.join("output"),
        };
        std::fs::write(&files.key_file, format!("{key}\n"))?;
        std::fs::write(
            &files.config,
            format!(
                "resolved_connection: {{project_id: \"1\", region: self_hosted, custom_base_url: \"{base_url}\"}}\n\
                 config:\n  source: {{data_type: events, page_size: {}, lookback_window_minutes: 15, \
                 initial_since: \"2024-12-01T00:00:00Z\"}}\n  destination: {{table_name: posthog_events}}\n\
                 output: {{format: {}}}\n",
                args.page_size, args.format
            ),
        )?;
        Ok(files)
    }

    /// `posthog-cli run` with the demo's config; its JSON summary.
    fn run_cli(&self, cli: &Path) -> anyhow::Result<Value> {
        let out = Command::new(cli)
            .arg("--api-key-file")
            .arg(&self.key_file)
            .args(["--log-level", "warn", "run", "--config"])
            .arg(&self.config)
            .arg("--output-dir")
            .arg(&self.output)
            .output()
            .with_context(|| format!("running {}", cli.display()))?;
        if !out.status.success() {
            bail!(
                "posthog-cli run exited with {}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout).context("posthog-cli run printed no JSON summary")
    }
}

/// 30 events arriving after the first run: 10 late ones 1..10 minutes behind its watermark
/// (inside the lookback), 20 new ones after it; `true` marks the late ones.
fn new_and_late_events(dataset: &Dataset, first: &Value) -> anyhow::Result<Vec<(Event, bool)>> {
    let watermark = first["state"]["last_timestamp"]
        .as_str()
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .context("the first run committed no watermark")?;
    let template = dataset.events.first().context("the mock holds no event")?;
    Ok((0..30u64)
        .map(|i| {
            let (offset, late) = if i < 10 {
                (-(60 * (i as i64 + 1)), true)
            } else {
                (60 * i as i64, false)
            };
            let event = Event {
                uuid: uuid_for(i),
                timestamp: watermark + time::Duration::seconds(offset),
                created_at: watermark + time::Duration::seconds(600),
                ..template.clone()
            };
            (event, late)
        })
        .collect())
}

/// Where the rows are, and how to read them as one table: DuckDB's command line if it is
/// installed, else Python (DuckDB's module, or pyarrow for Parquet).
fn print_how_to_read(files: &DemoFiles, format: &str, second: &Value) {
    let table = files.output.join("posthog_events");
    let dir = table.display();
    println!(
        "\nEvery event is in the part files exactly once: {} in {} under {dir}",
        plural(second["state"]["rows_total"].as_u64().unwrap_or(0), "row"),
        // The summary's `state` counts the committed parts.
        plural(second["state"]["parts"].as_u64().unwrap_or(0), "part"),
    );
    let reader = match format {
        "jsonl" => "read_json_auto",
        "csv" => "read_csv_auto",
        _ => "read_parquet",
    };
    let sql = format!(
        "select event, count(*) from {reader}('{dir}/*.{format}', union_by_name=true) group by 1 order by 2 desc"
    );
    println!("Read them as one table, with the DuckDB command line:");
    println!("  duckdb -c \"{sql}\"");
    println!("or from Python (pip install duckdb):");
    println!("  python3 -c \"import duckdb; duckdb.sql(\\\"{sql}\\\").show()\"");
    if format == "parquet" {
        println!("or with pyarrow (pip install pyarrow):");
        println!(
            "  python3 -c \"import pyarrow.dataset as ds; print(ds.dataset('{dir}', format='parquet').count_rows())\""
        );
    }
    println!(
        "The state (watermark, dedup window, committed parts): {}",
        files.output.join("state.json").display()
    );
}

/// `1 request`, `2 requests`.
fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn uuid_for(i: u64) -> uuid::Uuid {
    uuid::Uuid::from_u128(0x0199_0000_0000_7000_8000_0000_0000_0000 | u128::from(i))
}

/// Builds the CLI (debug profile, shared with `cargo test`) and returns its path. Cargo's own
/// progress shows on stderr: the first build compiles every dependency.
fn build_cli() -> anyhow::Result<PathBuf> {
    println!(
        "building posthog-cli (debug profile, shared with `cargo test`; the first build takes \
         ~2–4 minutes, later ones seconds)…"
    );
    std::io::Write::flush(&mut std::io::stdout())?;
    crate::cargo_build(&["-p", "posthog-cli"])?;
    Ok(crate::target_dir().join("debug/posthog-cli"))
}

fn print_summary(summary: &Value) {
    let ms = summary["duration_ms"].as_u64().unwrap_or(0);
    let count = |k: &str| summary[k].as_u64().unwrap_or(0);
    println!(
        "   rows read {}, deduplicated {}, written {}; {} ({}) in {:.2} s",
        count("rows_read"),
        count("rows_deduplicated"),
        count("rows_output"),
        plural(count("requests"), "request"),
        if count("retries") == 1 {
            "1 retry".to_owned()
        } else {
            format!("{} retries", count("retries"))
        },
        Duration::from_millis(ms).as_secs_f64()
    );
    if let Some(files) = summary["files"].as_array() {
        for f in files {
            println!("   wrote {}", f.as_str().unwrap_or("?"));
        }
    }
    println!(
        "   watermark {}",
        summary["state"]["last_timestamp"].as_str().unwrap_or("-")
    );
}
