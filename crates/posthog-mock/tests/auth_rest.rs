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

/// Every person of the default dataset (50), from `persons/`.
async fn all_persons(h: &Harness) -> Vec<Value> {
    let (status, body) = h.get("/api/projects/1/persons/?limit=1000").await;
    assert_eq!(status, 200);
    body["results"].as_array().unwrap().clone()
}

/// Follows `next` links from `path`, collecting every result.
async fn all_pages(h: &Harness, path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut url = h.url(path);
    loop {
        let (status, page) = h.get_abs(&url).await;
        assert_eq!(status, 200, "{page}");
        out.extend(page["results"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => url = next.to_owned(),
            None => return out,
        }
    }
}

fn plan_of(person: &Value) -> &str {
    person["properties"]["plan"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn created_cohort_is_listed_and_its_persons_match_the_filter() {
    let h = Harness::start(MockConfig::default()).await;
    let filters = json!({"properties": {"type": "OR", "values": [{"type": "AND", "values": [
        {"key": "plan", "type": "person", "value": "pro", "operator": "exact"},
        {"key": "email", "type": "person", "value": "@example.com", "operator": "icontains"},
    ]}]}});
    let (status, created) = h
        .post(
            "/api/projects/1/cohorts/",
            &json!({"name": "Identified pro users", "filters": filters}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["id"], 8, "above the fixtures' 1..=7");
    assert_eq!(created["name"], "Identified pro users");
    assert_eq!(created["filters"], filters);
    assert_eq!(
        (
            &created["is_static"],
            &created["deleted"],
            &created["is_calculating"]
        ),
        (&json!(false), &json!(false), &json!(false))
    );
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    let persons = all_persons(&h).await;
    let expected: Vec<&Value> = persons
        .iter()
        .filter(|p| plan_of(p) == "pro" && p["properties"]["email"].is_string())
        .collect();
    assert!(!expected.is_empty() && expected.len() < persons.len());
    assert_eq!(created["count"], expected.len());

    let (_, list) = h.get("/api/projects/1/cohorts/").await;
    assert_eq!(list["count"], 8);
    assert_eq!(list["results"][7]["name"], "Identified pro users");
    let (status, detail) = h.get("/api/environments/1/cohorts/8/").await;
    assert_eq!((status, &detail["count"]), (200, &json!(expected.len())));

    let members = all_pages(&h, "/api/projects/1/cohorts/8/persons/?limit=3").await;
    assert_eq!(members.len(), expected.len());
    assert!(members.iter().all(|p| plan_of(p) == "pro"));
    // The same person JSON as `persons/`.
    let ids: Vec<&Value> = members.iter().map(|p| &p["id"]).collect();
    let expected_ids: Vec<&Value> = expected.iter().map(|p| &p["id"]).collect();
    assert_eq!(ids, expected_ids);
    assert_eq!(members[0], **expected.first().unwrap());
}

#[tokio::test]
async fn legacy_groups_are_an_or_of_ands() {
    let h = Harness::start(MockConfig::default()).await;
    let groups = json!([
        {"properties": [{"key": "plan", "type": "person", "value": "free", "operator": "exact"}]},
        {"properties": [{"key": "plan", "type": "person", "value": ["enterprise"], "operator": "exact"}]},
    ]);
    let (status, created) = h
        .post(
            "/api/projects/1/cohorts/",
            &json!({"name": "Free or enterprise", "groups": groups, "description": "legacy"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let members = all_pages(&h, &format!("/api/projects/1/cohorts/{id}/persons/")).await;
    let expected = all_persons(&h)
        .await
        .into_iter()
        .filter(|p| plan_of(p) != "pro")
        .count();
    assert_eq!(members.len(), expected);
    assert!(members.iter().all(|p| plan_of(p) != "pro"));
}

#[tokio::test]
async fn fixture_cohorts_evaluate_and_static_ones_are_empty() {
    let h = Harness::start(MockConfig::default()).await;
    let (_, list) = h.get("/api/projects/1/cohorts/").await;
    let persons = all_persons(&h).await;
    for cohort in list["results"].as_array().unwrap() {
        let id = cohort["id"].as_i64().unwrap();
        let members = all_pages(&h, &format!("/api/projects/1/cohorts/{id}/persons/")).await;
        assert_eq!(cohort["count"], members.len(), "cohort {id}");
        if cohort["is_static"] == true {
            assert!(members.is_empty(), "static cohort {id}");
            continue;
        }
        let wanted: Vec<&str> = cohort["filters"]["properties"]["values"][0]["values"][0]["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            members.iter().all(|p| wanted.contains(&plan_of(p))),
            "cohort {id}"
        );
        let expected = persons
            .iter()
            .filter(|p| wanted.contains(&plan_of(p)))
            .count();
        assert!(expected > 0);
        assert_eq!(members.len(), expected, "cohort {id}");
    }
    let (status, body) = h.get("/api/projects/1/cohorts/999/persons/").await;
    assert_eq!((status, &body["code"]), (404, &json!("not_found")));
    let (status, _) = h.get("/api/projects/1/cohorts/999/").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn cohort_creation_is_validated_field_by_field() {
    let h = Harness::start(MockConfig::default()).await;
    let post = |body: Value| {
        let h = &h;
        async move { h.post("/api/projects/1/cohorts/", &body).await }
    };
    let (status, body) = post(json!({"description": "no name"})).await;
    assert_eq!(status, 400);
    assert_eq!(
        (&body["type"], &body["code"], &body["attr"]),
        (
            &json!("validation_error"),
            &json!("required"),
            &json!("name")
        )
    );
    let (status, body) = post(json!({"name": "  "})).await;
    assert_eq!(
        (status, &body["attr"], &body["code"]),
        (400, &json!("name"), &json!("blank"))
    );
    let (status, body) = post(json!({"name": 5})).await;
    assert_eq!((status, &body["attr"]), (400, &json!("name")));
    let (status, body) = post(json!({"name": "x", "filters": []})).await;
    assert_eq!((status, &body["attr"]), (400, &json!("filters")));
    let (status, body) = post(json!({"name": "x", "is_static": "yes"})).await;
    assert_eq!((status, &body["attr"]), (400, &json!("is_static")));
    let (status, body) = post(
        json!({"name": "x", "filters": {"properties": {"type": "AND", "values": [
            {"key": "plan", "type": "person", "value": "p.*", "operator": "regex"}
        ]}}}),
    )
    .await;
    assert_eq!((status, &body["attr"]), (400, &json!("filters")));
    assert!(
        body["detail"].as_str().unwrap().contains("'regex'"),
        "{body}"
    );
    // Nothing invalid was stored.
    let (_, list) = h.get("/api/projects/1/cohorts/").await;
    assert_eq!(list["count"], 7);
    // A static cohort without filters is fine and has no persons.
    let (status, created) = post(json!({"name": "Uploaded", "is_static": true})).await;
    assert_eq!((status, &created["count"]), (201, &json!(0)));
    let (_, members) = h.get("/api/projects/1/cohorts/8/persons/").await;
    assert_eq!(members["results"], json!([]));
}

#[tokio::test]
async fn only_cohorts_accept_post_and_it_needs_the_write_scope() {
    let h = Harness::start(MockConfig::default()).await;
    for resource in ["feature_flags", "insights", "persons", "annotations"] {
        let (status, body) = h
            .post(
                &format!("/api/projects/1/{resource}/"),
                &json!({"name": "x"}),
            )
            .await;
        assert_eq!(status, 405, "{resource}: {body}");
    }
    let (status, _) = h
        .post("/api/projects/1/cohorts/1/persons/", &json!({}))
        .await;
    assert_eq!(status, 405);
    let read_only = Harness::start(MockConfig {
        scopes: Some(vec!["cohort:read".to_owned()]),
        ..MockConfig::default()
    })
    .await;
    let (status, body) = read_only
        .post("/api/projects/1/cohorts/", &json!({"name": "x"}))
        .await;
    assert_eq!(status, 403);
    assert!(
        body["detail"].as_str().unwrap().contains("cohort:write"),
        "{body}"
    );
    let (status, _) = read_only.get("/api/projects/1/cohorts/1/persons/").await;
    assert_eq!(status, 200);
    let writer = Harness::start(MockConfig {
        scopes: Some(vec!["cohort:write".to_owned()]),
        ..MockConfig::default()
    })
    .await;
    let (status, _) = writer
        .post("/api/projects/1/cohorts/", &json!({"name": "x"}))
        .await;
    assert_eq!(status, 201);
    let (status, list) = writer.get("/api/projects/1/cohorts/").await;
    assert_eq!((status, &list["count"]), (200, &json!(8)));
}
