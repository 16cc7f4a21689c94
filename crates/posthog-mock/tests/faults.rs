//! Scripted faults, random faults, the server-side rate limit and response gzip.

mod common;

use std::time::Duration;

use common::{Harness, KEY};
use posthog_mock::{Fault, MockConfig, RandomFaults, RateLimit, RouteClass};
use serde_json::{Value, json};

#[tokio::test]
async fn one_shot_faults_are_consumed_in_order_and_counted() {
    let h = Harness::start(MockConfig::default()).await;
    h.server.push_fault(RouteClass::Query, Fault::status(503));
    h.server
        .push_fault(RouteClass::Query, Fault::too_many(Some("2")));
    h.server
        .push_faults(RouteClass::Cohorts, Fault::status(500), 2);
    let (s1, b1) = h.query("SELECT 1 FROM events LIMIT 1", json!({})).await;
    assert_eq!(s1, 503);
    assert_eq!(b1["type"], "server_error");
    let resp = h
        .http
        .post(h.url("/api/projects/1/query/"))
        .bearer_auth(KEY)
        .json(&json!({"query": {"kind": "HogQLQuery", "query": "SELECT 1 FROM events LIMIT 1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "2");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"type": "throttled_error", "code": "throttled", "detail": "Request was throttled. Expected available in 2 seconds.", "attr": null})
    );
    let (s3, _) = h.query("SELECT 1 FROM events LIMIT 1", json!({})).await;
    assert_eq!(s3, 200, "queue drained");
    // Faults of other classes are untouched by query traffic.
    assert_eq!(h.get("/api/projects/1/cohorts/").await.0, 500);
    assert_eq!(h.get("/api/projects/1/cohorts/").await.0, 500);
    assert_eq!(h.get("/api/projects/1/cohorts/").await.0, 200);
    assert_eq!(h.server.request_count(RouteClass::Query), 3);
    assert_eq!(h.server.request_count(RouteClass::Cohorts), 3);
    assert_eq!(h.server.total_requests(), 6);
    let statuses: Vec<Option<u16>> = h.server.requests().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![
            Some(503),
            Some(429),
            Some(200),
            Some(500),
            Some(500),
            Some(200)
        ]
    );
    h.server.reset_counters();
    assert_eq!(h.server.total_requests(), 0);
}

#[tokio::test]
async fn connection_reset_closes_without_a_response() {
    let h = Harness::start(MockConfig::default()).await;
    h.server
        .push_fault(RouteClass::Project, Fault::ConnectionReset);
    let err = h
        .http
        .get(h.url("/api/projects/1/"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect_err("no response");
    assert!(!err.is_status(), "{err:?}");
    assert_eq!(h.server.request_count(RouteClass::Project), 1);
    assert_eq!(h.server.requests()[0].status, None);
    // The next request works on a fresh connection.
    assert_eq!(h.get("/api/projects/1/").await.0, 200);
}

#[tokio::test]
async fn truncated_body_yields_a_client_body_error() {
    let h = Harness::start(MockConfig::default()).await;
    h.server.push_fault(RouteClass::Query, Fault::TruncatedBody);
    let resp = h
        .http
        .post(h.url("/api/projects/1/query/"))
        .bearer_auth(KEY)
        .json(&json!({"query": {"kind": "HogQLQuery", "query": "SELECT uuid, properties FROM events LIMIT 50"}}))
        .send()
        .await
        .expect("headers arrive");
    assert_eq!(resp.status().as_u16(), 200);
    let err = resp.bytes().await.expect_err("body is cut short");
    assert!(err.is_body() || err.is_decode(), "{err:?}");
}

#[tokio::test]
async fn malformed_json_and_delay_faults() {
    let h = Harness::start(MockConfig::default()).await;
    h.server.push_fault(RouteClass::Query, Fault::MalformedJson);
    let resp = h
        .http
        .post(h.url("/api/projects/1/query/"))
        .bearer_auth(KEY)
        .json(&json!({"query": {"kind": "HogQLQuery", "query": "SELECT 1 FROM events"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let text = resp.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err());

    h.server
        .push_fault(RouteClass::Me, Fault::Delay(Duration::from_millis(300)));
    let started = std::time::Instant::now();
    assert_eq!(h.get("/api/users/@me/").await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn rate_limit_returns_429_with_integer_retry_after() {
    let h = Harness::start(MockConfig {
        rate_limit: Some(RateLimit {
            max_requests: 3,
            per: Duration::from_secs(60),
        }),
        ..MockConfig::default()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(h.get("/api/projects/1/cohorts/").await.0, 200);
    }
    let resp = h
        .http
        .get(h.url("/api/projects/1/cohorts/"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("integer seconds");
    assert!((1..=60).contains(&wait));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "throttled");
    // Public endpoints are not throttled.
    let capture = h
        .http
        .post(h.url("/i/v0/e/"))
        .json(&json!({"api_key": "phc_mock_project_key", "event": "e", "distinct_id": "d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(capture.status().as_u16(), 200);
}

#[tokio::test]
async fn random_faults_are_deterministic_for_a_seed() {
    async fn statuses(seed: u64) -> Vec<String> {
        let h = Harness::start(MockConfig {
            random_faults: Some(RandomFaults {
                seed,
                server_error_rate: 0.3,
                reset_rate: 0.1,
                throttle_rate: 0.2,
            }),
            ..MockConfig::default()
        })
        .await;
        let mut out = Vec::new();
        for _ in 0..40 {
            let r = h
                .http
                .get(h.url("/api/projects/1/"))
                .bearer_auth(KEY)
                .send()
                .await;
            out.push(match r {
                Ok(resp) => {
                    let s = resp.status().as_u16();
                    if s == 429 {
                        assert!(
                            resp.headers().get("retry-after").is_none(),
                            "concurrency 429 has no Retry-After"
                        );
                    }
                    s.to_string()
                }
                Err(_) => "reset".to_owned(),
            });
        }
        out
    }
    let a = statuses(7).await;
    assert_eq!(a, statuses(7).await);
    assert!(a.iter().any(|s| s == "200"));
    assert!(a.iter().any(|s| s.starts_with('5')));
    assert!(a.iter().any(|s| s == "429"));
}

#[tokio::test]
async fn large_responses_are_gzipped_when_accepted() {
    let h = Harness::start(MockConfig::default()).await;
    // reqwest (gzip feature) sends Accept-Encoding: gzip and inflates transparently.
    let (status, body) = h
        .query("SELECT properties FROM events LIMIT 20", json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["results"].as_array().unwrap().len(), 20);
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let resp = raw
        .post(h.url("/api/projects/1/query/"))
        .bearer_auth(KEY)
        .header("accept-encoding", "gzip")
        .json(&json!({"query": {"kind": "HogQLQuery", "query": "SELECT properties FROM events LIMIT 20"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
}

#[tokio::test]
async fn control_routes_are_never_faulted() {
    let h = Harness::start(MockConfig::default()).await;
    h.server.push_fault(RouteClass::Control, Fault::status(500));
    let resp = h.http.get(h.url("/_mock/stats")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(h.server.total_requests(), 0);
}
