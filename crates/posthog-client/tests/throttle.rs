//! The client's budgets against the mock's sliding-window throttle, which follows PostHog's
//! (Django REST framework's `SimpleRateThrottle`): a budget equal to the server's limit never
//! draws a 429, and it is used at an even pace.

mod util;

use std::time::{Duration, Instant};

use posthog_client::{Budget, HogQlQuery, RateLimits};
use posthog_mock::{Dataset, GenSpec, MockConfig, MockServer, RateLimit, RouteClass};
use util::{PERSONAL_KEY, PROJECT_ID, PROJECT_KEY, builder};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_equal_to_the_servers_sliding_window_is_never_throttled() {
    const QUERIES: u32 = 30;
    let per = Duration::from_secs(2);
    let mock = MockServer::start(MockConfig {
        personal_api_key: PERSONAL_KEY.into(),
        project_api_key: PROJECT_KEY.into(),
        project_id: PROJECT_ID,
        dataset: Dataset::generate(&GenSpec {
            seed: 7,
            events: 100,
            persons: 10,
            ..GenSpec::default()
        }),
        rate_limit: Some(RateLimit {
            max_requests: 20,
            per,
        }),
        ..MockConfig::default()
    })
    .await
    .expect("mock starts");
    let client = builder(&mock)
        .rate_limits(RateLimits {
            query: vec![Budget { requests: 20, per }],
            max_concurrent_queries: 3,
            ..RateLimits::unlimited()
        })
        .build()
        .unwrap();

    let started = Instant::now();
    let calls: Vec<_> = (0..QUERIES)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .query(&HogQlQuery::new("select uuid from events limit 1"))
                    .await
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap().expect("query");
    }
    let elapsed = started.elapsed();

    assert_eq!(client.stats().throttled, 0, "no 429 from the server");
    assert_eq!(
        mock.request_count(RouteClass::Query),
        QUERIES as usize,
        "no request was refused and retried"
    );
    // One every 2 s / 20 = 100 ms: 30 queries in about 3 s, not a burst of 20 and a stall.
    let expected = Duration::from_millis(100) * QUERIES;
    eprintln!("{QUERIES} queries took {elapsed:?} (expected ≈ {expected:?})");
    assert!(
        elapsed.abs_diff(expected) <= expected / 20,
        "{QUERIES} queries took {elapsed:?}; expected {expected:?} ± 5 %"
    );
}
