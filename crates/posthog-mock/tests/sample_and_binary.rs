//! Generator determinism against the committed sample, and the binary's contract (one JSON
//! line on stdout, control API).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use posthog_mock::{Dataset, Event, GenSpec};
use serde_json::{Value, json};

const SAMPLE: &str = include_str!("../../../fixtures/events.sample.jsonl");

#[test]
fn generator_reproduces_the_sample_file_byte_for_byte() {
    // Regenerate with: posthog-mock --write-sample fixtures/events.sample.jsonl
    let generated = Dataset::sample_jsonl(&GenSpec::sample());
    assert!(
        generated == SAMPLE,
        "fixtures/events.sample.jsonl differs from the generator output"
    );
    let events = Event::parse_jsonl(SAMPLE).expect("sample parses");
    assert_eq!(events.len(), 200);
    assert_eq!(events, Dataset::generate(&GenSpec::sample()).events);
}

/// Kills the child on drop so a failing test leaves no server behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary with `args` and reads the one JSON line it prints on start.
async fn start_binary(args: &[&str]) -> (Running, Value) {
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_posthog-mock"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("binary starts"),
    );
    let stdout = child.0.stdout.take().expect("piped stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .unwrap()
    .expect("a line");
    let info: Value = serde_json::from_str(&line).expect("JSON line");
    (child, info)
}

#[tokio::test]
async fn binary_prints_one_json_line_and_serves_the_control_api() {
    let (_child, info) = start_binary(&[
        "--events",
        "300",
        "--seed",
        "9",
        "--cluster",
        "20",
        "--rate-limit",
        "1000/60s",
    ])
    .await;
    let base = info["base_url"].as_str().unwrap().to_owned();
    assert!(base.starts_with("http://127.0.0.1:"));
    assert_eq!(info["project_id"], 1);
    let key = info["personal_api_key"].as_str().unwrap().to_owned();

    let http = reqwest::Client::new();
    let count: Value = http
        .post(format!("{base}/api/projects/1/query/"))
        .bearer_auth(&key)
        .json(&json!({"query": {"kind": "HogQLQuery", "query": "SELECT count() FROM events"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(count["results"], json!([[300]]));

    let queued: Value = http
        .post(format!("{base}/_mock/faults"))
        .json(&json!({"route": "query", "fault": {"type": "status", "status": 502}, "times": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(queued["queued"], 1);
    let faulted = http
        .post(format!("{base}/api/projects/1/query/"))
        .bearer_auth(&key)
        .json(&json!({"query": {"kind": "HogQLQuery", "query": "SELECT 1 FROM events LIMIT 1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(faulted.status().as_u16(), 502);

    let late = json!([{"uuid": "0194227b-0000-7000-8000-0000000000cc", "event": "late", "distinct_id": "d",
        "timestamp": "2025-01-01T00:00:00Z", "created_at": "2025-01-09T00:00:00Z", "properties": {"a": 1}}]);
    let inserted: Value = http
        .post(format!("{base}/_mock/events"))
        .json(&late)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(inserted["inserted"], 1);

    let stats: Value = http
        .get(format!("{base}/_mock/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["by_route"]["query"], 2);
    assert_eq!(stats["total_requests"], 2);
    assert_eq!(stats["events"], 301);

    let reset: Value = http
        .post(format!("{base}/_mock/reset"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reset["reset"], true);
    let stats: Value = http
        .get(format!("{base}/_mock/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["total_requests"], 0);
}

#[test]
fn write_sample_flag_regenerates_the_sample() {
    let dir = std::env::temp_dir().join(format!("posthog-mock-sample-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sample.jsonl");
    let status = Command::new(env!("CARGO_BIN_EXE_posthog-mock"))
        .arg("--write-sample")
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let written = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        written == SAMPLE,
        "--write-sample output differs from the committed sample"
    );
}

#[tokio::test]
async fn binary_limit_clamp_flags_and_control_route() {
    let (_child, info) = start_binary(&[
        "--events",
        "400",
        "--limit-clamp",
        "250",
        "--limit-clamp-after",
        "1:100",
        "--limit-clamp-after",
        "2:300",
    ])
    .await;
    let base = info["base_url"].as_str().unwrap().to_owned();
    let key = info["personal_api_key"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    let page = || async {
        let body: Value = http
            .post(format!("{base}/api/projects/1/query/"))
            .bearer_auth(&key)
            .json(&json!({"query": {"kind": "HogQLQuery",
                "query": "SELECT uuid, person.properties FROM events ORDER BY timestamp, uuid LIMIT 1000"}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["results"].as_array().unwrap().len()
    };
    assert_eq!(page().await, 250, "--limit-clamp");
    assert_eq!(page().await, 100, "after 1 query request");
    assert_eq!(page().await, 300, "after 2 query requests");
    let set: Value = http
        .post(format!("{base}/_mock/config"))
        .json(&json!({"limit_clamp": 7}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(set["limit_clamp"], 7);
    assert_eq!(page().await, 7, "POST /_mock/config");
    let stats: Value = http
        .get(format!("{base}/_mock/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["limit_clamp"], 7);
    assert_eq!(stats["query_requests_seen"], 4);
}

#[test]
fn binary_rejects_a_zero_or_malformed_clamp() {
    for args in [
        ["--limit-clamp", "0"],
        ["--limit-clamp-after", "5"],
        ["--limit-clamp-after", "2:0"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_posthog-mock"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("limit-clamp"), "{args:?}: {stderr}");
    }
}
