//! Core pipeline benchmark: generated PostHog-shaped HogQL pages through parse → cursor +
//! dedup → flatten → Arrow → Parquet/JSONL/CSV, on one thread. Run by `cargo xtask bench core`
//! (release build); prints one JSON line of measurements.
//!
//! Page bodies are generated in memory one at a time (like pages arriving from the network);
//! generation time is measured apart and left out of the pipeline figures. CPU time is the
//! thread's own (`/proc/thread-self/schedstat`), peak RSS is `VmHWM`.
//!
//! ```text
//! cargo run --release -p posthog-core --example bench_core -- --events 1000000 --format parquet
//! ```

use std::time::{Duration, Instant};

use posthog_core::{
    BatchBuilder, ColumnType, DedupWindow, FieldSpec, FlattenMode, PartFormat, QueryPage,
    TableWriter, WriterOptions, raw_timestamp, raw_uuid,
};

struct Args {
    events: u64,
    page_size: usize,
    batch_size: usize,
    format: PartFormat,
    out_dir: std::path::PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        events: 1_000_000,
        page_size: 10_000,
        batch_size: 5_000,
        format: PartFormat::Parquet,
        out_dir: std::env::temp_dir().join("posthog-bench-core"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--events" => args.events = value()?.parse().map_err(|e| format!("--events: {e}"))?,
            "--page-size" => {
                args.page_size = value()?.parse().map_err(|e| format!("--page-size: {e}"))?
            }
            "--batch-size" => {
                args.batch_size = value()?.parse().map_err(|e| format!("--batch-size: {e}"))?
            }
            "--out-dir" => args.out_dir = value()?.into(),
            "--format" => {
                args.format = match value()?.as_str() {
                    "parquet" => PartFormat::Parquet,
                    "jsonl" => PartFormat::Jsonl,
                    "csv" => PartFormat::Csv,
                    other => return Err(format!("--format: unknown format {other:?}")),
                }
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

const BROWSERS: [&str; 5] = ["Chrome", "Safari", "Firefox", "Edge", "Mobile Safari"];
const OSES: [&str; 5] = ["Mac OS X", "Windows", "iOS", "Android", "Linux"];
const PATHS: [&str; 6] = [
    "/",
    "/pricing",
    "/docs/getting-started",
    "/blog/launch-week",
    "/signup",
    "/dashboard",
];
const CITIES: [&str; 5] = [
    "London",
    "San Francisco",
    "Berlin",
    "São Paulo",
    "Bengaluru",
];
const EVENTS: [&str; 4] = ["$pageview", "$autocapture", "$pageleave", "signed_up"];

fn push_uuid(rng: &mut fastrand::Rng, out: &mut String) {
    out.push_str(&uuid::Uuid::from_u128(rng.u128(..)).to_string());
}

/// One event's properties as JSON text (~30 keys, ~1.2 KB once escaped in the row).
fn properties(rng: &mut fastrand::Rng, i: u64, out: &mut String) {
    use std::fmt::Write;
    let path = PATHS[rng.usize(..PATHS.len())];
    let browser = BROWSERS[rng.usize(..BROWSERS.len())];
    let _ = write!(
        out,
        r#"{{"$browser":"{browser}","$browser_version":{},"$os":"{}","$device_type":"{}","$current_url":"https://app.example.com{path}?utm_source=newsletter&ref={}","$host":"app.example.com","$pathname":"{path}","$referrer":"https://www.google.com/","$referring_domain":"www.google.com","$screen_height":{},"$screen_width":{},"$viewport_height":{},"$viewport_width":{},"$lib":"web","$lib_version":"1.241.0","$insert_id":"{:016x}","$time":{}.{:06},"$session_id":""#,
        rng.u32(90..131),
        OSES[rng.usize(..OSES.len())],
        if rng.bool() { "Desktop" } else { "Mobile" },
        rng.u32(..100_000),
        rng.u32(600..1440),
        rng.u32(360..2560),
        rng.u32(500..1300),
        rng.u32(320..2000),
        rng.u64(..),
        1_735_000_000 + i,
        rng.u32(..1_000_000),
    );
    push_uuid(rng, out);
    out.push_str(r#"","$window_id":""#);
    push_uuid(rng, out);
    out.push_str(r#"","$device_id":""#);
    push_uuid(rng, out);
    let _ = write!(
        out,
        r#"","$ip":"203.0.{}.{}","$geoip_city_name":"{}","$geoip_country_code":"GB","$geoip_latitude":{:.4},"$geoip_longitude":{:.4},"$process_person_profile":{},"$feature/new-onboarding":{},"plan":"{}","plan_price":{},"utm_source":"newsletter","utm_medium":"email","utm_campaign":"launch-week","title":"Example — {path}""#,
        rng.u8(..),
        rng.u8(..),
        CITIES[rng.usize(..CITIES.len())],
        rng.f64() * 180.0 - 90.0,
        rng.f64() * 360.0 - 180.0,
        rng.bool(),
        rng.bool(),
        if rng.u8(..10) == 0 {
            "enterprise"
        } else {
            "free"
        },
        rng.u32(..500),
    );
    if rng.u8(..10) == 0 {
        out.push_str(r#","$set":{"email":"user@example.com","plan":"free","tags":["beta","ga"]}"#);
    }
    out.push('}');
}

/// A HogQL response page of `n` events starting at event number `first`.
fn page(rng: &mut fastrand::Rng, first: u64, n: u64, body: &mut String) {
    use std::fmt::Write;
    body.clear();
    body.push_str(r#"{"columns":["uuid","event","timestamp","distinct_id","person_id","properties"],"types":[["uuid","UUID"],["event","String"],["timestamp","DateTime64(6, 'UTC')"],["distinct_id","String"],["person_id","UUID"],["properties","String"]],"results":["#);
    let mut props = String::with_capacity(2048);
    for k in 0..n {
        let i = first + k;
        if k > 0 {
            body.push(',');
        }
        body.push_str("[\"");
        // UUIDv7-like: time-ordered prefix, random tail, unique per event.
        body.push_str(
            &uuid::Uuid::from_u128((u128::from(i) << 64) | u128::from(rng.u64(..))).to_string(),
        );
        let _ = write!(body, "\",\"{}\",\"", EVENTS[rng.usize(..EVENTS.len())]);
        // 1 M events over ~30 days: one every ~2.6 s.
        let micros = 1_735_689_600_000_000i64 + i as i64 * 2_592_000;
        let mut ts = String::new();
        posthog_core::format_timestamp(micros, &mut ts);
        body.push_str(&ts);
        let _ = write!(body, "\",\"user{}@example.com\",\"", rng.u32(..50_000));
        push_uuid(rng, body);
        body.push_str("\",");
        props.clear();
        properties(rng, i, &mut props);
        // Properties travel as a JSON string inside the row, as HogQL returns them.
        body.push_str(&serde_json::to_string(&props).unwrap_or_default());
        body.push(']');
    }
    body.push_str(r#"],"hasMore":false,"limit":10000}"#);
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_core: {e}");
            std::process::exit(2);
        }
    };
    let _ = std::fs::remove_dir_all(&args.out_dir);
    let fields = [
        FieldSpec::fixed("uuid", ColumnType::Utf8),
        FieldSpec::fixed("event", ColumnType::Utf8),
        FieldSpec::fixed("timestamp", ColumnType::Timestamp),
        FieldSpec::fixed("distinct_id", ColumnType::Utf8),
        FieldSpec::fixed("person_id", ColumnType::Utf8),
        FieldSpec::flatten("properties"),
    ];
    let mut builder =
        BatchBuilder::new(&fields, FlattenMode::Flatten, &[]).expect("fields are distinct");
    let options = WriterOptions {
        format: args.format,
        row_group_rows: args.batch_size,
        ..WriterOptions::default()
    };
    let mut writer = TableWriter::new(&args.out_dir, "part-00000001", options).expect("out dir");
    let mut window = DedupWindow::new(Duration::from_secs(15 * 60));
    let mut rng = fastrand::Rng::with_seed(7);
    let mut body = String::new();
    let (mut gen_cpu, mut gen_wall) = (Duration::ZERO, Duration::ZERO);
    let mut json_bytes = 0u64;
    let (mut rows_out, mut dropped) = (0u64, 0u64);
    let mut parts = Vec::new();
    let start_cpu = thread_cpu();
    let start = Instant::now();
    let mut produced = 0u64;
    while produced < args.events {
        let n = (args.events - produced).min(args.page_size as u64);
        let (c0, w0) = (thread_cpu(), Instant::now());
        page(&mut rng, produced, n, &mut body);
        gen_cpu += thread_cpu() - c0;
        gen_wall += w0.elapsed();
        produced += n;
        json_bytes += body.len() as u64;

        let page = QueryPage::parse(body.as_bytes()).expect("generated page parses");
        let (u, t) = (
            page.column_index("uuid").unwrap_or(0),
            page.column_index("timestamp").unwrap_or(2),
        );
        for row in &page.results {
            let (Some(id), Some(ts)) = (raw_uuid(row[u]), raw_timestamp(row[t])) else {
                panic!("generated row without a cursor");
            };
            if !window.observe(id, ts) {
                dropped += 1;
                continue;
            }
            builder.append_array_row(row).expect("row width matches");
            if builder.len() >= args.batch_size
                && let Some(batch) = builder.finish_batch().expect("batch assembles")
            {
                rows_out += batch.num_rows() as u64;
                let specs = builder.schema().to_specs();
                parts.extend(writer.write(&batch, &specs).expect("write"));
            }
        }
    }
    if let Some(batch) = builder.finish_batch().expect("batch assembles") {
        rows_out += batch.num_rows() as u64;
        let specs = builder.schema().to_specs();
        parts.extend(writer.write(&batch, &specs).expect("write"));
    }
    parts.extend(writer.close_part().expect("close"));
    let cpu = thread_cpu() - start_cpu - gen_cpu;
    let wall = start.elapsed() - gen_wall;
    let out_bytes: u64 = parts.iter().map(|p| p.bytes).sum();
    let secs = cpu.as_secs_f64().max(1e-9);
    println!(
        "{}",
        serde_json::json!({
            "format": args.format.extension(),
            "events": args.events,
            "rows_out": rows_out,
            "dropped": dropped,
            "parts": parts.len(),
            "json_mb": json_bytes as f64 / 1e6,
            "output_mb": out_bytes as f64 / 1e6,
            "pipeline_cpu_s": cpu.as_secs_f64(),
            "pipeline_wall_s": wall.as_secs_f64(),
            "generate_cpu_s": gen_cpu.as_secs_f64(),
            "events_per_cpu_s": args.events as f64 / secs,
            "json_mb_per_cpu_s": json_bytes as f64 / 1e6 / secs,
            "peak_rss_mib": peak_rss_kib() as f64 / 1024.0,
            "columns": builder.schema().len(),
            "dedup_window": window.len(),
        })
    );
    let _ = std::fs::remove_dir_all(&args.out_dir);
}
