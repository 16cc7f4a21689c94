//! Authentication, project access, scopes, and the REST list endpoints' DRF pagination.

mod common;

use common::{Harness, KEY};
use posthog_mock::{MockConfig, RouteClass};
use serde_json::{Value, json};

#[tokio::test]
async fn wrong_or_missing_key_is_401_in_posthogs_shape() {
    let h = Harness::start(MockConfig::default()).await;
    let resp = h
        .http
        .get(h.url("/api/projects/1/cohorts/"))
        .bearer_auth("phx_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "authentication_error");
    assert_eq!(body["code"], "authentication_failed");
    assert_eq!(body["attr"], Value::Null);
    let resp = h
        .http
        .get(h.url("/api/projects/1/cohorts/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "not_authenticated");
}

#[tokio::test]
async fn forbidden_project_is_403_and_unknown_project_is_404() {
    let h = Harness::start(MockConfig {
        forbidden_project_ids: vec![2],
        ..MockConfig::default()
    })
    .await;
    let (status, body) = h.get("/api/projects/2/").await;
    assert_eq!(status, 403);
    assert_eq!(body["code"], "permission_denied");
    assert_eq!(
        body["detail"],
        "You do not have permission to perform this action."
    );
    let (status, body) = h.post("/api/projects/3/query/", &json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"type": "invalid_request", "code": "not_found", "detail": "Not found.", "attr": null})
    );
    let (status, _) = h.get("/api/projects/1/").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn missing_scope_is_403_naming_the_scope() {
    let h = Harness::start(MockConfig {
        scopes: Some(vec!["query:read".to_owned()]),
        ..MockConfig::default()
    })
    .await;
    let (status, body) = h.get("/api/projects/1/cohorts/").await;
    assert_eq!(status, 403);
    assert!(
        body["detail"].as_str().unwrap().contains("cohort:read"),
        "{body}"
    );
    let (status, _) = h.query("SELECT 1 FROM events LIMIT 1", json!({})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn drf_next_links_cover_all_cohorts_exactly_once() {
    let h = Harness::start(MockConfig::default()).await;
    let mut url = h.url("/api/projects/1/cohorts/?limit=3");
    let mut ids = Vec::new();
    let mut pages = 0;
    loop {
        let (status, page) = h.get_abs(&url).await;
        assert_eq!(status, 200);
        assert_eq!(page["count"], 7);
        pages += 1;
        ids.extend(
            page["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_i64().unwrap()),
        );
        match page["next"].as_str() {
            Some(next) => {
                assert!(
                    next.starts_with(&h.server.base_url()),
                    "absolute URL from Host: {next}"
                );
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(ids, vec![1, 2, 3, 4, 5, 6, 7]);
    let (_, last) = h.get("/api/projects/1/cohorts/?limit=3&offset=6").await;
    assert_eq!(last["next"], Value::Null);
    assert!(
        last["previous"]
            .as_str()
            .unwrap()
            .ends_with("?limit=3&offset=3"),
        "{}",
        last["previous"]
    );
    let (_, second) = h.get("/api/projects/1/cohorts/?limit=3&offset=3").await;
    assert!(
        second["previous"].as_str().unwrap().ends_with("?limit=3"),
        "{}",
        second["previous"]
    );
}

#[tokio::test]
async fn list_endpoints_filter_and_persons_omit_count() {
    let h = Harness::start(MockConfig::default()).await;
    let (_, person_props) = h
        .get("/api/projects/1/property_definitions/?type=person")
        .await;
    let types: Vec<&str> = person_props["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["property_type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"DateTime") && types.contains(&"Numeric") && types.contains(&"Boolean")
    );
    let (_, search) = h
        .get("/api/projects/1/property_definitions/?search=screen")
        .await;
    assert_eq!(search["count"], 2);
    let (_, persons) = h.get("/api/projects/1/persons/?limit=20").await;
    assert!(persons.get("count").is_none());
    assert_eq!(persons["results"].as_array().unwrap().len(), 20);
    assert!(persons["next"].as_str().unwrap().contains("offset=20"));
    let (_, counted) = h.get("/api/projects/1/persons/?include_total=true").await;
    assert_eq!(counted["count"], 50);
    for resource in [
        "feature_flags",
        "insights",
        "annotations",
        "experiments",
        "event_definitions",
    ] {
        let (status, body) = h.get(&format!("/api/environments/1/{resource}")).await;
        assert_eq!(status, 200, "{resource}");
        assert!(body["count"].as_u64().unwrap() >= 4, "{resource}");
    }
    let (status, flag) = h.get("/api/projects/1/feature_flags/2/").await;
    assert_eq!(
        (status, flag["key"].clone()),
        (200, json!("new-onboarding"))
    );
}

#[tokio::test]
async fn project_and_me_describe_the_mock_account() {
    let h = Harness::start(MockConfig::default()).await;
    let (_, project) = h.get("/api/projects/1/").await;
    assert_eq!(project["timezone"], "Asia/Kolkata");
    assert_eq!(project["id"], 1);
    let (_, me) = h.get("/api/users/@me/").await;
    assert_eq!(me["team"]["id"], 1);
    assert!(me["organization"]["id"].is_string());
    assert_eq!(h.server.request_count(RouteClass::Me), 1);
}

#[tokio::test]
async fn unknown_routes_are_404_json_and_counted_as_other() {
    let h = Harness::start(MockConfig::default()).await;
    let resp = h
        .http
        .get(h.url("/api/projects/1/sessions/"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
    assert_eq!(h.server.request_count(RouteClass::Other), 1);
}

#[tokio::test]
async fn recorded_requests_keep_raw_headers_and_json_bodies() {
    let h = Harness::start(MockConfig::default()).await;
    h.query("SELECT 1 FROM events LIMIT 1", json!({})).await;
    let reqs = h.server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(
        reqs[0].body.as_ref().unwrap()["query"]["kind"],
        "HogQLQuery"
    );
    assert_eq!(reqs[0].route, RouteClass::Query);
    assert_eq!(reqs[0].status, Some(200));
}
