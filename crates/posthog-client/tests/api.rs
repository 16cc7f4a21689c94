//! The client's endpoints against the mock: queries, REST pagination, error categories,
//! capture and flags.

mod util;

use std::collections::HashSet;

use futures_util::TryStreamExt;
use posthog_client::{
    CaptureEvent, Category, FlagsRequest, HogQlQuery, ListParams, PropertyKind, Resource,
    USER_AGENT,
};
use posthog_mock::{Fault, RouteClass};
use serde_json::Value;
use util::{PERSONAL_KEY, PROJECT_ID, builder, client, mock, mock_with_events};

#[tokio::test]
async fn query_sends_utc_modifier_and_a_traceable_client_query_id() {
    let mock = mock().await;
    let client = client(&mock);
    let result = client
        .query(&HogQlQuery::new(
            "select uuid, timestamp, properties from events order by timestamp, uuid limit 3",
        ))
        .await
        .unwrap();
    assert_eq!(result.columns, vec!["uuid", "timestamp", "properties"]);
    assert_eq!(result.len(), 3);
    for row in &result.results {
        let ts = row[1].as_str().expect("timestamp string");
        assert!(ts.ends_with('Z'), "UTC rendering expected, got {ts}");
        assert!(row[2].is_string(), "properties come back as a JSON string");
    }
    let sent = mock
        .requests()
        .into_iter()
        .find(|r| r.route == RouteClass::Query)
        .expect("query request recorded");
    let body = sent.body.clone().expect("json body");
    assert_eq!(body["query"]["kind"], "HogQLQuery");
    assert_eq!(
        body["query"]["modifiers"]["convertToProjectTimezone"],
        false
    );
    assert_eq!(body["client_query_id"], result.client_query_id.as_str());
    assert_eq!(sent.header("user-agent"), Some(USER_AGENT));
}

#[tokio::test]
async fn values_are_bound_as_placeholders_never_spliced() {
    let mock = mock().await;
    let client = client(&mock);
    let count = |name: &'static str| {
        let client = client.clone();
        async move {
            client
                .query(
                    &HogQlQuery::new("select uuid from events where event = {name} limit 1000")
                        .value("name", name),
                )
                .await
                .unwrap()
                .len()
        }
    };
    assert!(count("$pageview").await > 0);
    assert_eq!(count("x' OR 1=1 --").await, 0, "the value is a literal");
}

#[tokio::test]
async fn keyset_pagination_through_the_client_reads_every_event_once() {
    use posthog_client::{KeysetCursor, KeysetPager, KeysetQuery, KeysetStart, PageSummary};
    let mock = mock_with_events(2_500).await;
    let client = client(&mock);
    let query = KeysetQuery::new("events", ["uuid", "timestamp"], "uuid").time_column("timestamp");
    let mut pager = KeysetPager::new(query, KeysetStart::Beginning, 400);
    let mut seen = HashSet::new();
    let mut pages = 0;
    while let Some(query) = pager.next_query() {
        let page = client.query(&query).await.unwrap();
        pages += 1;
        for row in &page.results {
            assert!(
                seen.insert(row[0].as_str().unwrap().to_owned()),
                "duplicate"
            );
        }
        let last = page
            .results
            .last()
            .map(|row| KeysetCursor::from_text(row[1].as_str(), row[0].as_str().unwrap()).unwrap());
        pager
            .advance(&PageSummary {
                rows: page.len(),
                last,
            })
            .unwrap();
    }
    assert_eq!(seen.len(), 2_500);
    assert_eq!(
        pages, 8,
        "⌈2500 / 400⌉ pages, then the empty page that ends the scan"
    );
}

#[tokio::test]
async fn offset_is_rejected_as_posthog_does() {
    let mock = mock().await;
    let client = client(&mock);
    let err = client
        .query(&HogQlQuery::new(
            "select uuid from events limit 10 offset 10",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.category(), Category::Config);
    let detail = &err.api_error().expect("PostHog error document").detail;
    assert!(detail.starts_with("OFFSET is not supported"), "{detail}");
    assert_eq!(
        mock.request_count(RouteClass::Query),
        1,
        "400 is not retried"
    );
}

#[tokio::test]
async fn limit_above_fifty_thousand_is_clamped_silently() {
    let mock = mock_with_events(50_010).await;
    let client = client(&mock);
    let result = client
        .query(&HogQlQuery::new("select uuid from events limit 70000"))
        .await
        .unwrap();
    assert_eq!(result.len(), 50_000);
    assert_eq!(result.has_more, None, "an explicit LIMIT gets no hasMore");
}

#[tokio::test]
async fn a_query_without_limit_gets_the_default_page_and_has_more() {
    let mock = mock().await;
    let client = client(&mock);
    let result = client
        .query(&HogQlQuery::new("select uuid from events"))
        .await
        .unwrap();
    assert_eq!(result.len(), 100);
    assert_eq!(result.has_more, Some(true));
}

#[tokio::test]
async fn typed_rows_deserialize_by_column_name() {
    #[derive(serde::Deserialize)]
    struct Row {
        uuid: uuid::Uuid,
        event: String,
    }
    let mock = mock().await;
    let client = client(&mock);
    let result = client
        .query(&HogQlQuery::new(
            "select event, uuid from events order by timestamp limit 10",
        ))
        .await
        .unwrap();
    let rows: Vec<Row> = result.rows().collect::<Result<_, _>>().unwrap();
    assert_eq!(rows.len(), 10);
    assert!(rows.iter().all(|r| !r.event.is_empty() && !r.uuid.is_nil()));
}

#[tokio::test]
async fn rest_lists_follow_next_links_across_pages() {
    let mock = mock().await;
    let client = client(&mock);
    let cohorts: Vec<Value> = client
        .list(Resource::Cohorts, ListParams::default().page_size(2))
        .try_collect()
        .await
        .unwrap();
    let total = posthog_mock::Dataset::fixtures().cohorts.len();
    assert!(total >= 5, "fixture has several cohorts, got {total}");
    assert_eq!(cohorts.len(), total);
    let ids: HashSet<_> = cohorts.iter().map(|c| c["id"].to_string()).collect();
    assert_eq!(ids.len(), total, "no cohort twice");
    assert_eq!(
        mock.request_count(RouteClass::Cohorts),
        total.div_ceil(2),
        "one request per page of 2"
    );

    let flags: Vec<Value> = client.feature_flags().try_collect().await.unwrap();
    assert!(!flags.is_empty());
    let definitions: Vec<_> = client
        .property_definitions(PropertyKind::Event)
        .try_collect()
        .await
        .unwrap();
    assert!(definitions.iter().any(|d| d.property_type.is_some()));
}

#[tokio::test]
async fn every_rest_resource_is_listable() {
    let mock = mock().await;
    let client = client(&mock);
    for resource in Resource::ALL {
        let items: Vec<Value> = client
            .list(resource, ListParams::default())
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("{resource:?}: {e}"));
        assert!(!items.is_empty(), "{resource:?} has fixture items");
    }
    assert_eq!(client.project().await.unwrap().id, PROJECT_ID as i64);
    assert!(client.current_user().await.unwrap().email.is_some());
}

#[tokio::test]
async fn wrong_key_is_auth_forbidden_project_is_permission_unknown_is_not_found() {
    let mock = posthog_mock::MockServer::start(posthog_mock::MockConfig {
        personal_api_key: PERSONAL_KEY.into(),
        project_id: PROJECT_ID,
        forbidden_project_ids: vec![9],
        ..posthog_mock::MockConfig::default()
    })
    .await
    .unwrap();
    let wrong_key = builder(&mock)
        .personal_api_key("phx_WrongKey")
        .build()
        .unwrap();
    let err = wrong_key.project().await.unwrap_err();
    assert_eq!(err.category(), Category::Auth, "{err}");

    let forbidden = builder(&mock).project_id("9").build().unwrap();
    let err = forbidden.project().await.unwrap_err();
    assert_eq!(err.category(), Category::Permission, "{err}");

    let unknown = builder(&mock).project_id("31337").build().unwrap();
    let err = unknown.project().await.unwrap_err();
    assert_eq!(err.category(), Category::NotFound, "{err}");

    assert_eq!(
        mock.total_requests(),
        3,
        "none of these statuses is retried"
    );
}

#[tokio::test]
async fn capture_sends_one_event_with_its_uuid() {
    let mock = mock().await;
    let client = client(&mock);
    let event = CaptureEvent::new("signed_up", "user-1").property("plan", "pro");
    client.capture(&event).await.unwrap();
    let captured = mock.captured_events();
    assert_eq!(captured.len(), 1);
    assert_eq!(captured[0]["uuid"], event.uuid.to_string());
    assert_eq!(captured[0]["properties"]["plan"], "pro");
}

#[tokio::test]
async fn batches_split_below_the_body_limit_and_retries_resend_the_same_uuids() {
    let mock = mock().await;
    let client = builder(&mock).max_batch_bytes(4_000).build().unwrap();
    let events: Vec<_> = (0..60)
        .map(|i| CaptureEvent::new("batch_test", format!("user-{i}")).property("i", i))
        .collect();
    mock.push_fault(RouteClass::Batch, Fault::status(503));
    let report = client.capture_batch(&events).await.unwrap();
    assert_eq!(report.events, 60);
    assert!(report.requests > 1, "60 events do not fit in 4 000 bytes");
    let batch_requests: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.route == RouteClass::Batch)
        .collect();
    assert_eq!(batch_requests.len(), report.requests + 1, "one retry");
    for r in &batch_requests {
        let size = serde_json::to_vec(r.body.as_ref().unwrap()).unwrap().len();
        assert!(size <= 4_000, "a body of {size} bytes");
    }
    // The failed request and its retry carried the same events.
    assert_eq!(batch_requests[0].body, batch_requests[1].body);
    let uuids: HashSet<_> = mock
        .captured_events()
        .iter()
        .map(|e| e["uuid"].as_str().unwrap().to_owned())
        .collect();
    let sent: HashSet<_> = events.iter().map(|e| e.uuid.to_string()).collect();
    assert_eq!(uuids, sent);
}

#[tokio::test]
async fn an_event_larger_than_the_limit_is_refused_before_sending() {
    let mock = mock().await;
    let client = builder(&mock).max_batch_bytes(1_000).build().unwrap();
    let big = CaptureEvent::new("big", "u").property("blob", "x".repeat(2_000));
    let err = client.capture_batch(&[big]).await.unwrap_err();
    assert_eq!(err.category(), Category::Config);
    assert_eq!(mock.request_count(RouteClass::Batch), 0);
}

#[tokio::test]
async fn an_invalid_event_anywhere_in_a_batch_sends_nothing() {
    let mock = mock().await;
    let client = builder(&mock).max_batch_bytes(4_000).build().unwrap();
    let mut events: Vec<_> = (0..60)
        .map(|i| CaptureEvent::new("batch_test", format!("user-{i}")))
        .collect();
    events[50].distinct_id.clear();
    let err = client.capture_batch(&events).await.unwrap_err();
    assert_eq!(err.category(), Category::Config, "{err}");
    assert!(err.to_string().contains("empty distinct_id"), "{err}");
    assert_eq!(
        mock.request_count(RouteClass::Batch),
        0,
        "the first 50 events were not sent either"
    );
}

#[tokio::test]
async fn flags_are_evaluated_for_a_person() {
    let mock = mock().await;
    let client = client(&mock);
    let flags = client
        .evaluate_flags(&FlagsRequest::new("user-7"))
        .await
        .unwrap();
    assert!(!flags.flags.is_empty());
    for (key, flag) in &flags.flags {
        assert_eq!(key, &flag.key);
    }
    let again = client
        .evaluate_flags(&FlagsRequest::new("user-7"))
        .await
        .unwrap();
    assert_eq!(
        flags.flags, again.flags,
        "evaluation is deterministic per person"
    );
}

#[tokio::test]
async fn compressed_responses_are_decoded() {
    let mock = mock().await;
    let client = client(&mock);
    let query = serde_json::json!({
        "query": {"kind": "HogQLQuery", "query": "select properties from events limit 200"}
    });
    // The same request from a client that does not decode: the mock really compresses it.
    let raw = reqwest::Client::builder()
        .no_gzip()
        .no_zstd()
        .build()
        .unwrap()
        .post(format!(
            "{}/api/projects/{PROJECT_ID}/query/",
            mock.base_url()
        ))
        .bearer_auth(PERSONAL_KEY)
        .header("accept-encoding", "gzip")
        .json(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(
        raw.headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("gzip")
    );
    // Ours advertises gzip and decodes it transparently.
    let result = client
        .query(&HogQlQuery::new("select properties from events limit 200"))
        .await
        .unwrap();
    assert_eq!(result.len(), 200);
    let sent = mock
        .requests()
        .into_iter()
        .rfind(|r| r.route == RouteClass::Query)
        .unwrap();
    let accept = sent.header("accept-encoding").unwrap_or_default();
    assert!(
        accept.contains("gzip"),
        "client advertises gzip: {accept:?}"
    );
}
