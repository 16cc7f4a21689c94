//! PostHog's query concurrency limit is shared with every other client of the project: a
//! query 429 without `Retry-After` lowers the client's own cap on concurrent queries by one,
//! never below 1, for the rest of its life, and the client never runs more queries at once
//! than that cap afterwards. The request that was refused is still retried.

mod util;

use std::time::Duration;

use futures_util::TryStreamExt as _;
use futures_util::future::join_all;
use posthog_client::{Client, HogQlQuery, RateLimits};
use posthog_mock::{Dataset, Fault, GenSpec, MockConfig, MockServer, QueryLatency, RouteClass};
use tracing::Level;
use util::log::capture;
use util::{PERSONAL_KEY, PROJECT_ID, PROJECT_KEY, builder};

const LOWERED: &str = "PostHog is over its query concurrency limit (429 without Retry-After): \
                       lowered the client's concurrent queries to {cap} for the rest of its life";

/// A mock whose queries take one of `slots` slots and hold it for `hold`; a query that finds
/// every slot taken waits at most `queue_timeout`, then gets the concurrency 429.
async fn mock_with_slots(slots: usize, hold: Duration, queue_timeout: Duration) -> MockServer {
    MockServer::start(MockConfig {
        personal_api_key: PERSONAL_KEY.into(),
        project_api_key: PROJECT_KEY.into(),
        project_id: PROJECT_ID,
        dataset: Dataset::generate(&GenSpec {
            seed: 7,
            events: 50,
            persons: 5,
            ..GenSpec::default()
        }),
        query_latency: Some(QueryLatency {
            concurrency: slots,
            queue_timeout,
            ..QueryLatency::new(hold, Duration::ZERO)
        }),
        ..MockConfig::default()
    })
    .await
    .expect("mock starts")
}

fn client_with_cap(mock: &MockServer, cap: usize) -> Client {
    builder(mock)
        .rate_limits(RateLimits {
            max_concurrent_queries: cap,
            ..RateLimits::unlimited()
        })
        .build()
        .unwrap()
}

fn sample_query() -> HogQlQuery {
    HogQlQuery::new("select uuid from events order by timestamp, uuid limit 3")
}

/// Runs `n` queries at once; every one must succeed.
async fn run_together(client: &Client, n: usize) {
    let query = sample_query();
    for result in join_all((0..n).map(|_| client.query(&query))).await {
        assert_eq!(result.expect("the query succeeds").len(), 3);
    }
}

#[tokio::test]
async fn each_concurrency_429_lowers_the_cap_by_one_and_the_client_keeps_to_it() {
    let (log, _guard) = capture();
    let mock = mock_with_slots(10, Duration::from_millis(50), Duration::from_secs(30)).await;
    let client = client_with_cap(&mock, 4);
    assert_eq!(client.stats().query_concurrency, 4);

    mock.push_faults(RouteClass::Query, Fault::too_many(None), 2);
    client.query(&sample_query()).await.expect("retried");
    assert_eq!(
        mock.request_count(RouteClass::Query),
        3,
        "two 429s, then the answer"
    );
    let stats = client.stats();
    assert_eq!(stats.query_concurrency, 2);
    assert_eq!((stats.throttled, stats.waits.concurrency_limit), (2, 2));
    let lowered = log.with_message(&LOWERED.replace("{cap}", "3"));
    assert_eq!(lowered.len(), 1, "one warning per lowering");
    assert_eq!(lowered[0].level, Level::WARN);
    assert_eq!(lowered[0].field("query_concurrency"), "3");
    assert_eq!(log.with_message(&LOWERED.replace("{cap}", "2")).len(), 1);

    // A 429 with Retry-After is a rate limit, not the concurrency limit; nor is a 429 without
    // one on another endpoint: neither lowers the cap.
    mock.push_fault(RouteClass::Query, Fault::too_many(Some("0")));
    client.query(&sample_query()).await.expect("retried");
    mock.push_fault(RouteClass::Cohorts, Fault::too_many(None));
    let cohorts: Vec<serde_json::Value> = client.cohorts().try_collect().await.expect("retried");
    assert!(!cohorts.is_empty());
    assert_eq!(client.stats().waits.rate_limited, 1);
    assert_eq!(client.stats().query_concurrency, 2);

    // Eight at once against ten slots: the mock sees two at a time, never more.
    mock.reset_counters();
    run_together(&client, 8).await;
    assert_eq!(mock.peak_queries_held(), 2);
    assert_eq!(mock.concurrency_throttled(), 0);
}

#[tokio::test]
async fn a_project_whose_slots_are_taken_brings_the_cap_down_to_one_and_no_lower() {
    // Captured (and not read) in every test of this binary: a callsite first reached on a
    // thread without a subscriber can stay disabled for the threads that have one.
    let (_log, _guard) = capture();
    // One slot left to this client (another client holds the others) and no queue: of three
    // queries sent at once, two are refused at once with the concurrency 429.
    let mock = mock_with_slots(1, Duration::from_millis(100), Duration::ZERO).await;
    let client = client_with_cap(&mock, 3);

    run_together(&client, 3).await;
    let stats = client.stats();
    assert_eq!(stats.query_concurrency, 1);
    assert!(
        mock.concurrency_throttled() >= 2,
        "{}",
        mock.concurrency_throttled()
    );
    assert_eq!(stats.throttled as usize, mock.concurrency_throttled());

    // From now on one query at a time: the mock refuses none, however many are asked for.
    mock.reset_counters();
    run_together(&client, 6).await;
    assert_eq!(mock.concurrency_throttled(), 0);
    assert_eq!(mock.peak_queries_held(), 1);
    let after = client.stats();
    assert_eq!(
        after.throttled, stats.throttled,
        "no 429 after the cap came down"
    );
    assert_eq!(after.query_concurrency, 1, "never below 1");
}
