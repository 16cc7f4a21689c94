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

    // A fresh demo directory each time, so the first run is a full extraction.
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("clearing {}", args.dir.display()))?;
    }
    std::fs::create_dir_all(&args.dir)?;
    let config_path = args.dir.join("config.yaml");
    let output = args.dir.join("output");
    // The key is not in the config: the CLI reads it from a secret file, as in Kubernetes.
    let key_file = args.dir.join("api-key");
    std::fs::write(&key_file, format!("{key}\n"))?;
    std::fs::write(
        &config_path,
        format!(
            "resolved_connection: {{project_id: \"1\", region: self_hosted, custom_base_url: \"{}\"}}\n\
             config:\n  source: {{data_type: events, page_size: {}, lookback_window_minutes: 15, \
             initial_since: \"2024-12-01T00:00:00Z\"}}\n  destination: {{table_name: posthog_events}}\n\
             output: {{format: {}}}\n",
            mock.base_url(),
            args.page_size,
            args.format
        ),
    )?;
    println!("config: {}\n", config_path.display());

    println!("1. Full extraction");
    let first = run_cli(&cli, &config_path, &output, &key_file)?;
    print_summary(&first);
    ensure!(
        first["rows_output"] == args.events,
        "the first run wrote {} rows, the mock holds {}",
        first["rows_output"],
        args.events
    );

    // New events after the watermark, and late ones behind it but inside the lookback.
    let watermark = first["state"]["last_timestamp"]
        .as_str()
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .context("the first run committed no watermark")?;
    let template = dataset.events[0].clone();
    let mut arrivals = Vec::new();
    for i in 0..30u64 {
        let (offset, late) = if i < 10 {
            (-(60 * (i as i64 + 1)), true) // 1..10 minutes behind the watermark
        } else {
            (60 * i as i64, false)
        };
        arrivals.push((
            Event {
                uuid: uuid_for(i),
                timestamp: watermark + time::Duration::seconds(offset),
                created_at: watermark + time::Duration::seconds(600),
                ..template.clone()
            },
            late,
        ));
    }
    mock.insert_events(arrivals.iter().map(|(e, _)| e.clone()).collect());
    println!(
        "\n2. Incremental run after {} new and {} late events arrived",
        arrivals.iter().filter(|(_, late)| !late).count(),
        arrivals.iter().filter(|(_, late)| *late).count()
    );
    let second = run_cli(&cli, &config_path, &output, &key_file)?;
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

    let table = output.join("posthog_events");
    println!(
        "\nEvery event is in the part files exactly once: {} rows in {} parts under {}",
        total,
        second["state"]["parts"].as_array().map_or(0, Vec::len),
        table.display()
    );
    let ext = match args.format.as_str() {
        "jsonl" => "read_json_auto",
        "csv" => "read_csv_auto",
        _ => "read_parquet",
    };
    println!("Read them as one table with DuckDB:");
    println!(
        "  duckdb -c \"select event, count(*) from {ext}('{}/*.{}', union_by_name=true) group by 1 order by 2 desc\"",
        table.display(),
        args.format
    );
    println!(
        "The state (watermark, dedup window, committed parts): {}",
        output.join("state.json").display()
    );
    mock.shutdown().await;
    Ok(())
}

fn uuid_for(i: u64) -> uuid::Uuid {
    uuid::Uuid::from_u128(0x0199_0000_0000_7000_8000_0000_0000_0000 | u128::from(i))
}

/// Builds the CLI (debug profile, shared with `cargo test`) and returns its path.
fn build_cli() -> anyhow::Result<PathBuf> {
    crate::cargo_build(&["--quiet", "-p", "posthog-cli"])?;
    Ok(crate::target_dir().join("debug/posthog-cli"))
}

fn run_cli(cli: &Path, config: &Path, output: &Path, key_file: &Path) -> anyhow::Result<Value> {
    let out = Command::new(cli)
        .arg("--api-key-file")
        .arg(key_file)
        .args(["--log-level", "warn", "run", "--config"])
        .arg(config)
        .arg("--output-dir")
        .arg(output)
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

fn print_summary(summary: &Value) {
    let ms = summary["duration_ms"].as_u64().unwrap_or(0);
    println!(
        "   rows read {}, deduplicated {}, written {}; {} requests ({} retries) in {:.2} s",
        summary["rows_read"],
        summary["rows_deduplicated"],
        summary["rows_output"],
        summary["requests"],
        summary["retries"],
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
