//! PostHog's query latency and per-project query concurrency (`MockConfig::query_latency`): a
//! query holds one of a few slots while it runs, further queries queue, and a query that waits
//! out the queue timeout gets 429 without `Retry-After`.
//!
//! The machine running these tests is shared and noisy, so times are asserted as lower bounds
//! (the hold is a sleep, it cannot end early) with generous upper bounds only where one is the
//! point of the test; counters are asserted exactly.

mod common;

use std::time::{Duration, Instant};

use common::{Harness, KEY};
use posthog_mock::{MockConfig, QueryLatency, RouteClass};
use serde_json::{Value, json};

const ONE_ROW: &str = "SELECT uuid FROM events ORDER BY timestamp, uuid LIMIT 1";

fn config(latency: QueryLatency) -> MockConfig {
    MockConfig {
        query_latency: Some(latency),
        ..MockConfig::default()
    }
}

/// One answered query: status, its `Retry-After`, body, and how long it took.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
    took: Duration,
}

/// Sends `sql` to project 1's query endpoint and times the exchange.
async fn timed_query(http: reqwest::Client, base_url: String, sql: &str) -> Answer {
    let started = Instant::now();
    let resp = http
        .post(format!("{base_url}/api/projects/1/query/"))
        .bearer_auth(KEY)
        .json(&json!({"query": {"kind": "HogQLQuery", "query": sql}}))
        .send()
        .await
        .expect("the mock answers");
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap_or("?").to_owned());
    let body = resp.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        retry_after,
        body,
        took: started.elapsed(),
    }
}

/// Starts `n` copies of `sql` at once.
fn spawn_queries(h: &Harness, sql: &'static str, n: usize) -> Vec<tokio::task::JoinHandle<Answer>> {
    (0..n)
        .map(|_| tokio::spawn(timed_query(h.http.clone(), h.server.base_url(), sql)))
        .collect()
}

async fn join(tasks: Vec<tokio::task::JoinHandle<Answer>>) -> Vec<Answer> {
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(task.await.expect("query task"));
    }
    answers
}

/// A query whose client gives up after `timeout`: its status, or the client's error.
async fn impatient_query(base_url: &str, timeout: Duration) -> reqwest::Result<u16> {
    let client = reqwest::Client::builder().timeout(timeout).build()?;
    let resp = client
        .post(format!("{base_url}/api/projects/1/query/"))
        .bearer_auth(KEY)
        .json(&json!({"query": {"kind": "HogQLQuery", "query": ONE_ROW}}))
        .send()
        .await?;
    Ok(resp.status().as_u16())
}

/// Waits (up to 10 s) until `n` queries hold a slot at once.
async fn until_peak(h: &Harness, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.server.peak_queries_held() < n {
        assert!(Instant::now() < deadline, "never {n} queries held at once");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn six_queries_on_three_slots_take_two_holds_never_more_than_three_at_once() {
    // Long enough that the parallel bound below (three holds of slack) survives a loaded CI
    // machine; a test run alongside others failed at 300 ms.
    let hold = Duration::from_millis(600);
    let h = Harness::start(config(QueryLatency::new(hold, Duration::ZERO))).await;
    let started = Instant::now();
    let mut answers = join(spawn_queries(&h, ONE_ROW, 6)).await;
    let wall = started.elapsed();

    assert!(answers.iter().all(|a| a.status == 200), "all answered");
    assert_eq!(h.server.peak_queries_held(), 3, "three slots, all used");
    assert_eq!(h.server.concurrency_throttled(), 0);
    answers.sort_by_key(|a| a.took);
    assert!(
        answers[0].took >= hold,
        "each query is held: {:?}",
        answers[0].took
    );
    // The last three waited for a slot, then were held themselves.
    assert!(answers[3].took >= 2 * hold, "queued: {:?}", answers[3].took);
    assert!(wall >= 2 * hold, "{wall:?}");
    // Run one by one the six would take six holds; three at a time they take two.
    assert!(
        wall < 6 * hold,
        "the slots run queries in parallel: {wall:?}"
    );
}

#[tokio::test]
async fn a_query_that_waits_out_the_queue_gets_429_without_retry_after() {
    let queue_timeout = Duration::from_millis(200);
    let h = Harness::start(config(QueryLatency {
        queue_timeout,
        ..QueryLatency::new(Duration::from_secs(2), Duration::ZERO)
    }))
    .await;
    let held = spawn_queries(&h, ONE_ROW, 3);
    until_peak(&h, 3).await;

    let fourth = timed_query(h.http.clone(), h.server.base_url(), ONE_ROW).await;
    assert_eq!(fourth.status, 429, "{}", fourth.body);
    assert_eq!(
        fourth.retry_after, None,
        "PostHog sends no Retry-After here"
    );
    assert_eq!(fourth.body["type"], "throttled_error");
    assert_eq!(fourth.body["code"], "throttled");
    assert_eq!(fourth.body["attr"], Value::Null);
    let detail = fourth.body["detail"].as_str().expect("a detail");
    assert!(detail.contains("concurrency limit of 3"), "{detail}");
    assert_eq!(
        fourth.body.as_object().map(|o| o.len()),
        Some(4),
        "{}",
        fourth.body
    );
    assert!(
        fourth.took >= queue_timeout,
        "it queued first: {:?}",
        fourth.took
    );
    assert_eq!(h.server.concurrency_throttled(), 1);

    let (_, stats) = h.get("/_mock/stats").await;
    assert_eq!(stats["concurrency_throttled"], 1, "{stats}");
    assert_eq!(stats["peak_queries_held"], 3, "{stats}");

    assert!(join(held).await.iter().all(|a| a.status == 200));
    let after = timed_query(h.http.clone(), h.server.base_url(), ONE_ROW).await;
    assert_eq!(after.status, 200, "slots are released after the hold");
    assert_eq!(h.server.concurrency_throttled(), 1);
    let statuses: Vec<Option<u16>> = h.server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == Some(429)).count(), 1);
    assert_eq!(h.server.request_count(RouteClass::Query), 5);

    h.server.reset_counters();
    assert_eq!(h.server.concurrency_throttled(), 0);
    assert_eq!(h.server.peak_queries_held(), 0, "nothing held at the reset");
    let (_, stats) = h.get("/_mock/stats").await;
    assert_eq!(stats["concurrency_throttled"], 0, "{stats}");
}

#[tokio::test]
async fn a_query_returning_more_rows_is_held_longer() {
    let fixed = Duration::from_millis(100);
    let per_row = Duration::from_millis(1);
    let h = Harness::start(config(QueryLatency::new(fixed, per_row))).await;
    let base = h.server.base_url();

    let one = timed_query(h.http.clone(), base.clone(), ONE_ROW).await;
    let many = timed_query(
        h.http.clone(),
        base.clone(),
        "SELECT uuid FROM events ORDER BY timestamp, uuid LIMIT 600",
    )
    .await;
    assert_eq!((one.status, many.status), (200, 200));
    assert_eq!(many.body["results"].as_array().map(Vec::len), Some(600));
    assert!(one.took >= fixed + per_row, "{:?}", one.took);
    assert!(many.took >= fixed + 600 * per_row, "{:?}", many.took);
    assert!(one.took < many.took, "{:?} vs {:?}", one.took, many.took);

    // The hold is paid on the rows returned, not on the LIMIT asked for: 1 000 events exist,
    // so LIMIT 50 000 returns 1 000 rows (1.1 s), not 50 000 (50 s).
    let clamped = timed_query(
        h.http.clone(),
        base,
        "SELECT uuid FROM events ORDER BY timestamp, uuid LIMIT 50000",
    )
    .await;
    assert_eq!(
        clamped.body["results"].as_array().map(Vec::len),
        Some(1_000)
    );
    assert!(
        clamped.took >= fixed + 1_000 * per_row,
        "{:?}",
        clamped.took
    );
    assert!(clamped.took < Duration::from_secs(20), "{:?}", clamped.took);
}

#[tokio::test]
async fn only_query_requests_take_a_slot() {
    let h = Harness::start(config(QueryLatency {
        concurrency: 1,
        queue_timeout: Duration::ZERO,
        ..QueryLatency::new(Duration::from_secs(6), Duration::ZERO)
    }))
    .await;
    let held = spawn_queries(&h, ONE_ROW, 1);
    until_peak(&h, 1).await;

    // While the only slot is taken: REST lists, the project and control routes answer at once.
    let started = Instant::now();
    assert_eq!(h.get("/api/projects/1/cohorts/").await.0, 200);
    assert_eq!(h.get("/api/projects/1/").await.0, 200);
    assert_eq!(h.get("/_mock/stats").await.0, 200);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // A second query finds no slot and, with no queue, gets 429 at once.
    let second = timed_query(h.http.clone(), h.server.base_url(), ONE_ROW).await;
    assert_eq!(second.status, 429);
    assert_eq!(h.server.peak_queries_held(), 1);
    assert_eq!(h.server.concurrency_throttled(), 1);
    assert_eq!(join(held).await[0].status, 200);
}

#[tokio::test]
async fn a_client_that_hangs_up_releases_its_slot() {
    let queue_timeout = Duration::from_secs(1);
    let h = Harness::start(config(QueryLatency {
        concurrency: 1,
        queue_timeout,
        ..QueryLatency::new(Duration::from_secs(60), Duration::ZERO)
    }))
    .await;
    let base = h.server.base_url();
    let first = impatient_query(&base, Duration::from_millis(300)).await;
    assert!(
        first.is_err(),
        "held for a minute, the client gave up: {first:?}"
    );
    // Had the first query kept its slot, this one would get 429 after the 1 s queue; with
    // the slot released it gets the slot and is held until its own client gives up.
    let second = impatient_query(&base, queue_timeout * 3).await;
    assert!(second.is_err(), "expected to be held, got {second:?}");
    assert_eq!(h.server.concurrency_throttled(), 0);
    assert_eq!(h.server.peak_queries_held(), 1);
}

#[tokio::test]
async fn without_query_latency_queries_are_neither_held_nor_limited() {
    let h = Harness::start(MockConfig::default()).await;
    // Warm the connection pool so the timed queries measure the mock, not a handshake.
    assert_eq!(h.query(ONE_ROW, json!({})).await.0, 200);
    let started = Instant::now();
    let answers = join(spawn_queries(&h, ONE_ROW, 8)).await;
    let wall = started.elapsed();
    assert!(answers.iter().all(|a| a.status == 200));
    // With the model on, the same eight would take three holds of whatever the hold is; a
    // hold of one second is the least a PostHog query takes.
    // The bound is loose (a loaded machine answers eight tiny queries slowly too); what shows
    // the model is off are the counters below.
    assert!(wall < Duration::from_secs(3), "{wall:?}");
    assert_eq!(h.server.concurrency_throttled(), 0);
    assert_eq!(h.server.peak_queries_held(), 0, "no pool, nothing held");
    let (_, stats) = h.get("/_mock/stats").await;
    assert_eq!(stats["concurrency_throttled"], 0, "{stats}");
    assert_eq!(stats["peak_queries_held"], 0, "{stats}");
}
