//! The configurable LIMIT clamp: PostHog silently caps a top-level LIMIT at a maximum that has
//! changed between releases, so the mock's cap is configurable, can change after a number of
//! query requests, and can be set at once through the library or the control API.

mod common;

use common::Harness;
use posthog_mock::{
    DEFAULT_LIMIT_CLAMP, Dataset, Fault, GenSpec, LimitClampChange, MockConfig, RouteClass,
};
use serde_json::{Value, json};

const PAGE: &str = "SELECT uuid FROM events ORDER BY timestamp, uuid LIMIT 1000";

fn config(limit_clamp: usize, changes: Vec<LimitClampChange>) -> MockConfig {
    MockConfig {
        limit_clamp,
        limit_clamp_changes: changes,
        ..MockConfig::with_dataset(Dataset::generate_lazy(&GenSpec {
            events: 1_500,
            persons: 10,
            ..GenSpec::default()
        }))
    }
}

async fn rows(h: &Harness) -> usize {
    let (status, body) = h.query(PAGE, json!({})).await;
    assert_eq!(status, 200, "{body}");
    // Nothing in the response says the page was clamped: no hasMore/limit with a LIMIT.
    assert_eq!(body["hasMore"], Value::Null);
    assert_eq!(body["limit"], Value::Null);
    body["results"].as_array().unwrap().len()
}

async fn stats(h: &Harness) -> Value {
    h.http
        .get(h.url("/_mock/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn set_config(h: &Harness, body: &Value) -> (u16, Value) {
    let resp = h
        .http
        .post(h.url("/_mock/config"))
        .json(body)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

#[test]
fn default_clamp_is_posthogs_50000() {
    assert_eq!(MockConfig::default().limit_clamp, 50_000);
    assert_eq!(DEFAULT_LIMIT_CLAMP, 50_000);
    assert!(MockConfig::default().limit_clamp_changes.is_empty());
}

#[tokio::test]
async fn a_clamp_below_the_limit_silently_shortens_the_page() {
    let h = Harness::start(config(777, Vec::new())).await;
    assert_eq!(rows(&h).await, 777);
    let (_, body) = h.query(PAGE, json!({})).await;
    assert!(
        body["hogql"].as_str().unwrap().ends_with("LIMIT 777"),
        "{body}"
    );
}

#[tokio::test]
async fn a_clamp_above_the_limit_returns_the_limit() {
    let h = Harness::start(config(5_000, Vec::new())).await;
    assert_eq!(rows(&h).await, 1_000);
}

#[tokio::test]
async fn no_limit_pagination_ignores_the_clamp() {
    let h = Harness::start(config(10, Vec::new())).await;
    let (_, body) = h.query("SELECT uuid FROM events", json!({})).await;
    assert_eq!(body["results"].as_array().unwrap().len(), 100);
    assert_eq!(body["hasMore"], true);
    assert_eq!(body["limit"], 100);
}

#[tokio::test]
async fn the_schedule_switches_after_the_stated_number_of_query_requests() {
    let h = Harness::start(config(
        2_000,
        vec![
            // Given out of order: applied by request count.
            LimitClampChange {
                after_queries: 4,
                limit_clamp: 1_200,
            },
            LimitClampChange {
                after_queries: 2,
                limit_clamp: 777,
            },
        ],
    ))
    .await;
    assert_eq!(h.server.limit_clamp(), 2_000);
    assert_eq!(rows(&h).await, 1_000, "query 1");
    // A faulted query request still counts towards the schedule.
    h.server.push_fault(RouteClass::Query, Fault::status(503));
    let (status, _) = h.query(PAGE, json!({})).await;
    assert_eq!(status, 503, "query 2 is faulted");
    assert_eq!(h.server.limit_clamp(), 777);
    assert_eq!(rows(&h).await, 777, "query 3");
    // Other routes do not count.
    let (status, _) = h.get("/api/projects/1/").await;
    assert_eq!(status, 200);
    assert_eq!(rows(&h).await, 777, "query 4");
    assert_eq!(rows(&h).await, 1_000, "query 5: clamp 1200 ≥ LIMIT 1000");
    let s = stats(&h).await;
    assert_eq!(s["limit_clamp"], 1_200);
    assert_eq!(s["query_requests_seen"], 5);
    assert_eq!(s["limit_clamp_changes_pending"], json!([]));
}

#[tokio::test]
async fn async_queries_get_the_clamp_of_their_request() {
    let h = Harness::start(config(
        777,
        vec![LimitClampChange {
            after_queries: 1,
            limit_clamp: 50_000,
        }],
    ))
    .await;
    let (status, body) = h
        .post(
            "/api/projects/1/query/",
            &json!({"query": {"kind": "HogQLQuery", "query": PAGE}, "refresh": "async"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["query_status"]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/projects/1/query/{id}/");
    let (_, pending) = h.get(&path).await;
    assert_eq!(pending["query_status"]["complete"], false);
    // Polls are not query requests, and the clamp has moved on since; the result keeps 777.
    let (status, done) = h.get(&path).await;
    assert_eq!(status, 200);
    let results = done["query_status"]["results"]["results"]
        .as_array()
        .unwrap();
    assert_eq!(results.len(), 777);
    assert_eq!(stats(&h).await["query_requests_seen"], 1);
}

#[tokio::test]
async fn the_control_api_changes_the_clamp_at_once() {
    let h = Harness::start(config(
        50_000,
        vec![LimitClampChange {
            after_queries: 2,
            limit_clamp: 900,
        }],
    ))
    .await;
    assert_eq!(rows(&h).await, 1_000);
    let (status, body) = set_config(&h, &json!({"limit_clamp": 777})).await;
    assert_eq!((status, body), (200, json!({"limit_clamp": 777})));
    let s = stats(&h).await;
    assert_eq!(s["limit_clamp"], 777);
    assert_eq!(
        s["limit_clamp_changes_pending"],
        json!([{"after_queries": 2, "limit_clamp": 900}])
    );
    assert_eq!(rows(&h).await, 777);
    // The pending scheduled change still applies once its count is reached.
    assert_eq!(rows(&h).await, 900);
    // The library handle does the same.
    h.server.set_limit_clamp(5);
    assert_eq!(h.server.limit_clamp(), 5);
    assert_eq!(rows(&h).await, 5);
    // `/_mock/reset` clears state, not configuration.
    let reset = h.http.post(h.url("/_mock/reset")).send().await.unwrap();
    assert_eq!(reset.status().as_u16(), 200);
    assert_eq!(stats(&h).await["limit_clamp"], 5);
}

#[tokio::test]
async fn the_control_api_rejects_bad_settings() {
    let h = Harness::start(config(1_000, Vec::new())).await;
    for bad in [
        json!({"limit_clamp": 0}),
        json!({"limit_clamp": -5}),
        json!({"limit_clamp": "777"}),
        json!({"limit_clamp": 7.5}),
        json!({}),
        json!({"limit_clamp": 10, "limit_clmap": 11}),
        json!([777]),
    ] {
        let (status, body) = set_config(&h, &bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["type"], "validation_error", "{bad}");
    }
    assert_eq!(stats(&h).await["limit_clamp"], 1_000);
    let get = h.http.get(h.url("/_mock/config")).send().await.unwrap();
    assert_eq!(get.status().as_u16(), 405);
}
