//! Asynchronous queries and cohorts against the mock: a queued query is polled to the same
//! result as a blocking one, cancelled past its deadline; created cohorts are listed and their
//! persons match the filters; creating is retried only after a 429.

mod util;

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::TryStreamExt;
use posthog_client::{Category, HogQlQuery, NewCohort};
use posthog_mock::{Dataset, Fault, GenSpec, MockConfig, MockServer, RouteClass};
use serde_json::{Value, json};
use time::OffsetDateTime;
use util::{PERSONAL_KEY, PROJECT_ID, PROJECT_KEY, builder, client, mock};

/// Events over the last 20 days up to one day ago, so templates looking back from now see them.
fn recent_dataset() -> Dataset {
    let now = OffsetDateTime::now_utc();
    Dataset::generate(&GenSpec {
        seed: 11,
        events: 600,
        persons: 25,
        start: now - Duration::from_secs(20 * 86_400),
        span: Duration::from_secs(19 * 86_400),
        ..GenSpec::default()
    })
}

async fn mock_serving(dataset: Dataset, async_polls: u32) -> MockServer {
    MockServer::start(MockConfig {
        personal_api_key: PERSONAL_KEY.into(),
        project_api_key: PROJECT_KEY.into(),
        project_id: PROJECT_ID,
        async_polls,
        ..MockConfig::with_dataset(dataset)
    })
    .await
    .expect("mock starts")
}

#[tokio::test]
async fn asynchronous_queries_are_polled_to_the_same_result_as_blocking_ones() {
    let mock = mock_serving(recent_dataset(), 2).await;
    let client = client(&mock);
    let text = "select event, count() as n from events group by event order by event";
    let blocking = client.query(&HogQlQuery::new(text)).await.unwrap();
    mock.reset_counters();
    let queued = client
        .query(&HogQlQuery::new(text).asynchronous())
        .await
        .unwrap();
    assert_eq!(queued.columns, blocking.columns);
    assert_eq!(queued.results, blocking.results);
    assert_eq!(mock.request_count(RouteClass::Query), 1);
    // Two polls answered 202, the third 200.
    assert_eq!(mock.request_count(RouteClass::QueryStatus), 3);
    let post = mock
        .requests()
        .into_iter()
        .find(|r| r.route == RouteClass::Query)
        .unwrap();
    assert_eq!(post.body.unwrap()["refresh"], "async");
}

#[tokio::test]
async fn a_failing_asynchronous_query_reports_posthogs_message_as_a_config_error() {
    let mock = mock_serving(recent_dataset(), 1).await;
    let err = client(&mock)
        .query(&HogQlQuery::new("select nope from events").asynchronous())
        .await
        .unwrap_err();
    assert_eq!(err.category(), Category::Config, "{err}");
    assert!(err.to_string().contains("nope"), "{err}");
}

#[tokio::test]
async fn an_asynchronous_query_past_its_deadline_is_cancelled_and_times_out() {
    let mock = mock_serving(recent_dataset(), 10_000).await;
    let client = builder(&mock)
        .async_query_timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    let err = client
        .query(&HogQlQuery::new("select count() from events").asynchronous())
        .await
        .unwrap_err();
    assert_eq!(err.category(), Category::Timeout, "{err}");
    let cancelled = mock
        .requests()
        .into_iter()
        .any(|r| r.route == RouteClass::QueryStatus && r.method == "DELETE");
    assert!(
        cancelled,
        "the abandoned query must be cancelled on the server"
    );
}

#[tokio::test]
async fn created_cohorts_are_listed_and_their_persons_match_the_filters() {
    let dataset = recent_dataset();
    let expected: BTreeSet<String> = dataset
        .persons
        .iter()
        .filter(|p| p.properties.get("plan") == Some(&json!("pro")))
        .map(|p| p.id.to_string())
        .collect();
    assert!(!expected.is_empty(), "the dataset has pro persons");
    let mock = mock_serving(dataset, 1).await;
    let client = client(&mock);
    let filters = json!({"properties": {"type": "AND", "values": [
        {"key": "plan", "value": "pro", "type": "person", "operator": "exact"}]}});
    let created = client
        .create_cohort(
            &NewCohort::new("Pro users")
                .filters(filters)
                .description("made by a test"),
        )
        .await
        .unwrap();
    let id = created["id"].as_u64().expect("numeric id");
    assert_eq!(created["name"], "Pro users");
    let listed: Vec<Value> = client.cohorts().try_collect().await.unwrap();
    assert!(listed.iter().any(|c| c["id"] == id), "new cohort is listed");
    let members: Vec<Value> = client
        .cohort_persons(id, Some(3))
        .try_collect()
        .await
        .unwrap();
    let got: BTreeSet<String> = members
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, expected, "paged with 3 per page");
    assert_eq!(got.len(), members.len(), "no person twice across pages");
}

#[tokio::test]
async fn creating_a_cohort_is_not_retried_after_a_server_error_but_is_after_a_429() {
    let mock = mock().await;
    let client = client(&mock);
    mock.push_fault(RouteClass::Cohorts, Fault::status(500));
    let err = client
        .create_cohort(&NewCohort::new("Once"))
        .await
        .unwrap_err();
    assert_eq!(err.category(), Category::Server);
    assert_eq!(
        mock.request_count(RouteClass::Cohorts),
        1,
        "a 500 is not retried"
    );
    mock.reset_counters();
    mock.push_fault(RouteClass::Cohorts, Fault::too_many(Some("0")));
    client
        .create_cohort(&NewCohort::new("Twice"))
        .await
        .unwrap();
    assert_eq!(
        mock.request_count(RouteClass::Cohorts),
        2,
        "a 429 is retried"
    );
    let err = client
        .create_cohort(&NewCohort::new("  "))
        .await
        .unwrap_err();
    assert_eq!(err.category(), Category::Config);
}
