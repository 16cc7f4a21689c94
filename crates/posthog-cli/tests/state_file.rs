//! A state file that cannot be used stops `posthog-cli run` before anything changes: exit code 1
//! (category `data`: the run failed on data, README "Exit codes"), a message naming the state
//! file, the file left byte for byte, no part file added or removed, no request sent.
//!
//! Each case starts from the state and parts of a real committed run, then damages the state.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{Env, KEY, assert_error_json, files_under, one_json_object, output};
use serde_json::Value;

/// Every file under `dir`, recursively, with its bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files_under(dir)
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("read");
            (path, bytes)
        })
        .collect()
}

/// The state file's entry for the events table, as JSON.
fn events_entry(state: &[u8]) -> serde_json::Map<String, Value> {
    let value: Value = serde_json::from_slice(state).expect("state is JSON");
    value["posthog_events"]
        .as_object()
        .expect("events entry")
        .clone()
}

fn with_field(state: &[u8], field: &str, value: Value) -> Vec<u8> {
    let mut entry = events_entry(state);
    entry.insert(field.to_owned(), value);
    serde_json::to_vec_pretty(&serde_json::json!({ "posthog_events": entry })).expect("json")
}

/// Runs once and returns the config path, the state file's bytes and the table directory.
fn committed_run(env: &Env) -> (PathBuf, Vec<u8>) {
    let config = env.config("c.yaml", Some(KEY), "output: {format: jsonl}\n");
    let (code, stdout, stderr) =
        output(env.cli().args(["run", "--quiet", "--config"]).arg(&config));
    assert_eq!(code, 0, "{stderr}");
    let summary = one_json_object(&stdout);
    assert_eq!(summary["rows_output"], 1000, "{summary}");
    let state = std::fs::read(env.path("posthog-output/state.json")).expect("state written");
    (config, state)
}

/// Writes `damaged` as the state file, runs, and checks the refusal. Returns the message.
fn assert_refused(env: &Env, config: &Path, damaged: &[u8], case: &str) -> String {
    let state_path = env.path("posthog-output/state.json");
    std::fs::write(&state_path, damaged).expect("write");
    let before = tree(&env.path("posthog-output"));
    let queries_before = env.server().total_requests();

    let (code, stdout, stderr) = output(env.cli().args(["run", "--config"]).arg(config));

    assert_eq!(code, 1, "{case}: {stderr}\n{stdout}");
    let json = assert_error_json(&stdout, "data");
    let message = json["message"].as_str().expect("message").to_owned();
    println!("{case}: {message}");
    // Named as the user would find it: the default path, relative to the working directory.
    let shown = "posthog-output/state.json";
    assert!(message.contains(shown), "{case}: names the file: {message}");
    assert!(
        stderr.contains(shown),
        "{case}: stderr names the file: {stderr}"
    );
    assert_eq!(
        std::fs::read(&state_path).expect("read"),
        damaged,
        "{case}: the state file is left byte for byte"
    );
    let after = tree(&env.path("posthog-output"));
    let added: Vec<_> = after.keys().filter(|p| !before.contains_key(*p)).collect();
    let removed: Vec<_> = before.keys().filter(|p| !after.contains_key(*p)).collect();
    assert!(
        added.is_empty() && removed.is_empty(),
        "{case}: no file added or removed: +{added:?} -{removed:?}"
    );
    assert_eq!(after, before, "{case}: no file changed");
    assert_eq!(
        env.server().total_requests(),
        queries_before,
        "{case}: refused before any request"
    );
    message
}

#[test]
fn a_state_file_that_cannot_be_read_stops_the_run_and_is_left_alone() {
    let env = Env::new();
    let (config, state) = committed_run(&env);
    assert!(
        events_entry(&state)["parts"]
            .as_array()
            .is_some_and(|p| !p.is_empty()),
        "the run committed parts"
    );

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "garbage",
            b"\x00\xffnot a state file".to_vec(),
            "not valid JSON",
        ),
        ("empty", Vec::new(), "empty (0 bytes)"),
        (
            "truncated",
            state[..state.len() / 2].to_vec(),
            "not valid JSON",
        ),
        (
            "truncated by one byte before the end",
            state[..state.len() - 2].to_vec(),
            "not valid JSON",
        ),
        (
            "wrong-typed rows_total",
            with_field(&state, "rows_total", Value::from("many")),
            r#"field "rows_total""#,
        ),
        (
            "parts not a list",
            with_field(&state, "parts", Value::from(3)),
            r#"field "parts""#,
        ),
        (
            "a part path leaving the table directory",
            with_field(
                &state,
                "parts",
                serde_json::json!([{"file": "../../x", "rows": 1, "bytes": 1, "sha256": ""}]),
            ),
            "parts[0]",
        ),
        (
            "newer format_version",
            with_field(&state, "format_version", Value::from(99)),
            "format_version 99",
        ),
        (
            "format_version 0",
            with_field(&state, "format_version", Value::from(0)),
            "format_version 0",
        ),
    ];
    for (case, damaged, expected) in cases {
        let message = assert_refused(&env, &config, &damaged, case);
        assert!(message.contains(expected), "{case}: {message}");
    }
}

#[test]
fn a_stored_state_whose_values_cannot_be_used_stops_the_run_naming_the_file() {
    let env = Env::new();
    let (config, state) = committed_run(&env);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "last_timestamp not a timestamp",
            with_field(&state, "last_timestamp", Value::from("yesterday")),
            "last_timestamp",
        ),
        (
            "a column record without its source",
            with_field(
                &state,
                "columns",
                serde_json::json!([{"name": "uuid", "type": "utf8"}]),
            ),
            "columns[0]",
        ),
        (
            "a dedup window that is base64 but not a window",
            with_field(&state, "dedup_window", Value::from("AAEC")),
            "dedup",
        ),
    ];
    for (case, damaged, expected) in cases {
        let message = assert_refused(&env, &config, &damaged, case);
        assert!(message.contains(expected), "{case}: {message}");
    }
}

/// The seed's state shape in `inputs.state` (no `format_version`, `columns` as bare names) seeds
/// a first run; the state file then holds the entry in the current format.
#[test]
fn a_seed_shaped_inputs_state_is_migrated_into_the_state_file() {
    let env = Env::new();
    let config = env.config(
        "c.yaml",
        Some(KEY),
        "output: {format: jsonl}
inputs:
  state:
    posthog_events:
      last_timestamp: \"2025-01-04T00:00:00Z\"
      last_uuid: \"00000000-0000-0000-0000-000000000000\"
      recent_uuids: [\"0190f1c2-0000-7000-8000-000000000001\"]
      columns: [uuid, event, timestamp, distinct_id, properties_$browser]
",
    );
    let (code, stdout, stderr) =
        output(env.cli().args(["run", "--quiet", "--config"]).arg(&config));
    assert_eq!(code, 0, "{stderr}");
    let summary = one_json_object(&stdout);
    let rows = summary["rows_output"].as_u64().expect("rows_output");
    assert!(
        rows > 0 && rows < 1000,
        "resumed from the seeded watermark: {summary}"
    );
    let state = std::fs::read(env.path("posthog-output/state.json")).expect("state written");
    let entry = events_entry(&state);
    assert_eq!(entry["format_version"], 1);
    assert!(
        entry["columns"]
            .as_array()
            .is_some_and(|c| c.iter().all(|c| c["field"].is_string())),
        "columns recorded as typed records: {:?}",
        entry["columns"]
    );
}

/// A state seeded from the config whose values cannot be used is a config error (exit 2) naming
/// the config's field, `inputs.state.<table>…`; no state is written.
#[test]
fn an_unusable_inputs_state_is_a_config_error_naming_its_field() {
    let env = Env::new();
    for (entry, expected) in [
        (
            "{last_timestamp: yesterday}",
            "inputs.state.posthog_events.last_timestamp: \"yesterday\" is not an RFC 3339 timestamp",
        ),
        (
            "{last_timestamp: \"2025-01-04T00:00:00Z\", recent_uuids: [uuid-1]}",
            "inputs.state.posthog_events.recent_uuids[0]: \"uuid-1\" is not a UUID",
        ),
        (
            "{format_version: 4}",
            "inputs.state.posthog_events: format_version 4 is not one this build writes",
        ),
        (
            "{rows_total: many}",
            "inputs.state.posthog_events.rows_total: invalid type: string \"many\", expected u64",
        ),
        (
            "[1, 2]",
            "inputs.state.posthog_events: is not a table state: invalid type: sequence",
        ),
    ] {
        let config = env.config(
            "c.yaml",
            Some(KEY),
            &format!("inputs: {{state: {{posthog_events: {entry}}}}}\n"),
        );
        let (code, stdout, stderr) =
            output(env.cli().args(["run", "--quiet", "--config"]).arg(&config));
        assert_eq!(code, 2, "{entry}: {stderr}");
        let json = assert_error_json(&stdout, "config");
        let message = json["message"].as_str().expect("message");
        assert!(message.starts_with(expected), "{entry}: {message}");
        assert!(
            !env.path("posthog-output/state.json").exists(),
            "{entry}: no state written"
        );
        assert_eq!(env.server().total_requests(), 0, "{entry}: no request");
    }
}
