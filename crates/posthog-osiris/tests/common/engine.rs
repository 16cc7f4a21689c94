//! The engine's test harness: an in-process mock PostHog, configs pointing at it, runs with
//! a memory store, and the exactly-once check over the JSONL parts of a table.

use std::collections::HashMap;
use std::path::Path;

use posthog_client::RateLimits;
use posthog_mock::{Dataset, GenSpec, MockConfig, MockServer};
use posthog_osiris::{Context, Driver, ExtractConfig, PostHogDriver, RunSummary};
use posthog_state::MemoryStore;
use serde_json::{Value, json};

pub const KEY: &str = "phx_mock_personal_key";

pub fn spec(events: usize, cluster: usize) -> GenSpec {
    GenSpec {
        seed: 7,
        events,
        same_timestamp_cluster: cluster,
        ..GenSpec::default()
    }
}

pub async fn mock(events: usize, cluster: usize) -> (MockServer, Dataset) {
    let dataset = Dataset::generate(&spec(events, cluster));
    let server = MockServer::start(MockConfig::with_dataset(dataset.clone()))
        .await
        .expect("mock starts");
    (server, dataset)
}

pub fn config(server: &MockServer, source: Value, output: Value) -> ExtractConfig {
    ExtractConfig::from_value(json!({
        "resolved_connection": {
            "api_key": KEY, "project_id": "1", "region": "self_hosted",
            "custom_base_url": server.base_url(),
        },
        "config": {"source": source, "destination": {}},
        "output": output,
        "performance": {"batch_size": 500, "retries": {"max_attempts": 4, "backoff_factor": 0.01}},
    }))
    .expect("test config is valid")
}

pub fn events_config(server: &MockServer, page_size: u32) -> ExtractConfig {
    config(
        server,
        json!({"data_type": "events", "page_size": page_size,
               "initial_since": "2024-12-01T00:00:00Z", "lookback_window_minutes": 15}),
        json!({"format": "jsonl", "part_rows": 1000}),
    )
}

/// [`events_config`] reading one keyset scan at a time (`query_concurrency: 1`): for tests
/// of what a single scan sends.
pub fn sequential_events_config(server: &MockServer, page_size: u32) -> ExtractConfig {
    let mut config = events_config(server, page_size);
    config.performance.query_concurrency = 1;
    config
}

/// The HogQL text of every query the mock received, in order.
pub fn query_texts(server: &MockServer) -> Vec<String> {
    server
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/query/"))
        .map(|r| {
            r.body
                .as_ref()
                .map(|b| b["query"]["query"].to_string())
                .unwrap_or_default()
        })
        .collect()
}

pub fn ctx(dir: &Path) -> Context {
    Context::new(dir).with_rate_limits(RateLimits::unlimited())
}

pub async fn run(config: &ExtractConfig, store: &mut MemoryStore, dir: &Path) -> RunSummary {
    PostHogDriver
        .run(config, store, &ctx(dir))
        .await
        .unwrap_or_else(|e| panic!("run failed: {e}"))
}

/// Every row of every JSONL part file in the table directory, keyed by uuid with a count.
pub fn uuids_on_disk(table_dir: &Path) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for entry in std::fs::read_dir(table_dir).expect("table dir exists") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("part-") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("part readable");
        for line in text.lines() {
            let row: Value = serde_json::from_str(line).expect("JSONL row");
            let key = row
                .get("uuid")
                .or(row.get("id"))
                .or(row.get("session_id"))
                .expect("id column");
            let id = match key {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            *seen.entry(id).or_default() += 1;
        }
    }
    seen
}

pub fn assert_exactly_once(table_dir: &Path, expected: impl IntoIterator<Item = String>) {
    let seen = uuids_on_disk(table_dir);
    let dupes: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "duplicated rows: {dupes:?}");
    let expected: Vec<String> = expected.into_iter().collect();
    let missing: Vec<_> = expected.iter().filter(|u| !seen.contains_key(*u)).collect();
    assert!(
        missing.is_empty(),
        "{} rows missing, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert_eq!(seen.len(), expected.len(), "no extra rows");
}

pub fn all_uuids(dataset: &Dataset) -> Vec<String> {
    dataset.events.iter().map(|e| e.uuid.to_string()).collect()
}
