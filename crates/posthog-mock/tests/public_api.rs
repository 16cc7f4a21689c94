//! Capture, batch and flags: the public endpoints keyed by the project API key.

mod common;

use common::Harness;
use posthog_mock::{MockConfig, RouteClass};
use serde_json::{Value, json};

const PROJECT_KEY: &str = "phc_mock_project_key";

async fn post(h: &Harness, path: &str, body: &Value) -> (u16, Value) {
    let resp = h.http.post(h.url(path)).json(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn capture_and_batch_record_events_and_keep_duplicates() {
    let h = Harness::start(MockConfig::default()).await;
    let event = json!({"api_key": PROJECT_KEY, "event": "signup", "distinct_id": "u1",
        "uuid": "0194227b-0000-7000-8000-0000000000aa", "properties": {"plan": "pro"},
        "timestamp": "2025-01-01T00:00:00Z"});
    assert_eq!(
        post(&h, "/i/v0/e/", &event).await,
        (200, json!({"status": "Ok"}))
    );
    let batch = json!({"api_key": PROJECT_KEY, "historical_migration": true, "batch": [
        {"event": "a", "properties": {"distinct_id": "u2"}, "uuid": "0194227b-0000-7000-8000-0000000000aa"},
        {"event": "b", "distinct_id": "u3", "uuid": "0194227b-0000-7000-8000-0000000000bb"},
    ]});
    assert_eq!(post(&h, "/batch/", &batch).await.0, 200);
    assert_eq!(h.server.captured_events().len(), 3);
    assert_eq!(h.server.captured_unique_uuids(), 2);
    assert_eq!(h.server.request_count(RouteClass::Capture), 1);
    assert_eq!(h.server.request_count(RouteClass::Batch), 1);
}

#[tokio::test]
async fn capture_rejects_bad_keys_and_incomplete_events() {
    let h = Harness::start(MockConfig::default()).await;
    let (status, body) = post(
        &h,
        "/i/v0/e/",
        &json!({"api_key": "phc_wrong", "event": "e", "distinct_id": "d"}),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["type"], "authentication_error");
    assert_eq!(
        post(
            &h,
            "/i/v0/e/",
            &json!({"api_key": PROJECT_KEY, "distinct_id": "d"})
        )
        .await
        .0,
        400
    );
    assert_eq!(
        post(
            &h,
            "/i/v0/e/",
            &json!({"api_key": PROJECT_KEY, "event": "e"})
        )
        .await
        .0,
        400
    );
    let bad_batch = json!({"api_key": PROJECT_KEY, "batch": [{"event": "ok", "distinct_id": "d"}, {"event": ""}]});
    assert_eq!(post(&h, "/batch/", &bad_batch).await.0, 400);
    assert!(
        h.server.captured_events().is_empty(),
        "an invalid batch records nothing"
    );
}

#[tokio::test]
async fn bodies_over_20_mb_are_413() {
    let h = Harness::start(MockConfig::default()).await;
    let big = "x".repeat(21 * 1024 * 1024);
    let body = format!(
        "{{\"api_key\":\"{PROJECT_KEY}\",\"event\":\"e\",\"distinct_id\":\"d\",\"properties\":{{\"blob\":\"{big}\"}}}}"
    );
    let resp = h
        .http
        .post(h.url("/i/v0/e/"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    match resp {
        Ok(r) => assert_eq!(r.status().as_u16(), 413),
        // The server may close before the client finished sending; that is a rejection too.
        Err(e) => assert!(!e.is_status(), "{e:?}"),
    }
    assert!(h.server.captured_events().is_empty());
}

#[tokio::test]
async fn flags_are_evaluated_deterministically_from_fixtures() {
    let h = Harness::start(MockConfig::default()).await;
    let ask = |id: &str| json!({"api_key": PROJECT_KEY, "distinct_id": id});
    let (status, first) = post(&h, "/flags?v=2", &ask("user-123")).await;
    assert_eq!(status, 200);
    assert_eq!(first, {
        let (_, again) = post(&h, "/flags?v=2", &ask("user-123")).await;
        let mut again = again;
        again["requestId"] = first["requestId"].clone();
        again
    });
    let flags = &first["flags"];
    assert_eq!(flags["beta-dashboard"]["enabled"], true);
    assert_eq!(flags["beta-dashboard"]["reason"]["code"], "condition_match");
    assert_eq!(flags["kill-switch"]["enabled"], false);
    assert_eq!(
        flags["kill-switch"]["reason"]["code"],
        "out_of_rollout_bound"
    );
    assert!(
        flags.get("disabled-flag").is_none(),
        "inactive flags are not evaluated"
    );
    assert!(flags.get("deleted-flag").is_none());
    let variant = flags["new-onboarding"]["variant"]
        .as_str()
        .expect("multivariate flag has a variant");
    assert!(["control", "test"].contains(&variant));
    assert_eq!(flags["group-analytics"]["reason"]["code"], "no_group_type");
    assert_eq!(first["errorsWhileComputingFlags"], false);

    // A 30 % rollout enables roughly 30 % of ids.
    let mut enabled = 0;
    for i in 0..200 {
        let (_, r) = post(&h, "/flags?v=2", &ask(&format!("id-{i}"))).await;
        if r["flags"]["gradual-rollout"]["enabled"] == true {
            enabled += 1;
        }
    }
    assert!((30..=90).contains(&enabled), "{enabled}");

    // Person properties decide property-filtered flags.
    let (_, pro) = post(
        &h,
        "/flags?v=2",
        &json!({"api_key": PROJECT_KEY, "distinct_id": "x", "person_properties": {"plan": "pro"}}),
    )
    .await;
    assert_eq!(pro["flags"]["pro-only"]["enabled"], true);
    let (_, free) = post(
        &h,
        "/flags?v=2",
        &json!({"api_key": PROJECT_KEY, "distinct_id": "x", "person_properties": {"plan": "free"}}),
    )
    .await;
    assert_eq!(free["flags"]["pro-only"]["enabled"], false);
    assert_eq!(
        free["flags"]["pro-only"]["reason"]["code"],
        "no_condition_match"
    );

    let (status, _) = post(
        &h,
        "/flags?v=2",
        &json!({"api_key": "phc_nope", "distinct_id": "x"}),
    )
    .await;
    assert_eq!(status, 401);
}
