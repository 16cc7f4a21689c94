//! Retries, `Retry-After`, the circuit breaker and client-side budgets, observed at the mock.

mod util;

use std::time::{Duration, Instant};

use posthog_client::{
    BreakerConfig, BreakerState, Budget, Category, Error, HogQlQuery, RateLimits, RetryPolicy,
};
use posthog_mock::{Fault, RouteClass};
use util::{builder, client, fast_retry, mock};

/// A client that never retries, so every failure reaches the breaker exactly once.
fn breaker_client(
    mock: &posthog_mock::MockServer,
    failure_threshold: u32,
    open_for: Duration,
) -> posthog_client::Client {
    builder(mock)
        .retry_policy(RetryPolicy::none())
        .breaker(BreakerConfig {
            failure_threshold,
            open_for,
        })
        .build()
        .unwrap()
}

fn sample_query() -> HogQlQuery {
    HogQlQuery::new("select uuid, event from events order by timestamp, uuid limit 5")
}

#[tokio::test]
async fn each_retryable_status_is_retried_until_success() {
    let mock = mock().await;
    let client = client(&mock);
    for status in [429, 500, 502, 503, 504] {
        mock.reset_counters();
        mock.push_fault(
            RouteClass::Query,
            Fault::Status {
                status,
                retry_after: None,
                body: None,
            },
        );
        let before = client.stats();
        let result = client.query(&sample_query()).await;
        assert_eq!(
            result.expect("retried to success").len(),
            5,
            "status {status}"
        );
        assert_eq!(
            mock.request_count(RouteClass::Query),
            2,
            "status {status}: one failure, one retry"
        );
        assert_eq!(
            client.stats().retries - before.retries,
            1,
            "status {status}"
        );
    }
    assert_eq!(client.stats().throttled, 1, "exactly one 429 was seen");
}

#[tokio::test]
async fn other_client_errors_are_never_retried() {
    let mock = mock().await;
    let client = client(&mock);
    for status in [400, 401, 402, 403, 404, 405, 409, 413, 422] {
        mock.reset_counters();
        mock.push_fault(
            RouteClass::Query,
            Fault::Status {
                status,
                retry_after: None,
                body: None,
            },
        );
        let err = client.query(&sample_query()).await.unwrap_err();
        assert_eq!(err.status(), Some(status));
        assert!(!err.is_retryable());
        assert_eq!(
            mock.request_count(RouteClass::Query),
            1,
            "status {status} must not be retried"
        );
    }
}

#[tokio::test]
async fn connection_resets_and_truncated_bodies_are_retried() {
    let mock = mock().await;
    let client = client(&mock);
    for fault in [Fault::ConnectionReset, Fault::TruncatedBody] {
        mock.reset_counters();
        mock.push_fault(RouteClass::Query, fault);
        let result = client.query(&sample_query()).await.expect("retried");
        assert_eq!(result.len(), 5);
        assert_eq!(mock.request_count(RouteClass::Query), 2);
    }
}

#[tokio::test]
async fn persistent_network_failure_ends_as_a_network_error() {
    let mock = mock().await;
    let client = client(&mock);
    mock.push_faults(RouteClass::Query, Fault::ConnectionReset, 10);
    let err = client.query(&sample_query()).await.unwrap_err();
    assert_eq!(err.category(), Category::Network, "{err}");
    assert_eq!(mock.request_count(RouteClass::Query), 4, "max_attempts = 4");
}

#[tokio::test]
async fn malformed_json_is_a_data_error_and_is_not_retried() {
    let mock = mock().await;
    let client = client(&mock);
    mock.push_fault(RouteClass::Query, Fault::MalformedJson);
    let err = client.query(&sample_query()).await.unwrap_err();
    assert_eq!(err.category(), Category::Data, "{err}");
    assert_eq!(mock.request_count(RouteClass::Query), 1);
}

#[tokio::test]
async fn retries_stop_after_max_attempts() {
    let mock = mock().await;
    let client = builder(&mock)
        .retry_policy(RetryPolicy {
            max_attempts: 3,
            ..fast_retry()
        })
        .build()
        .unwrap();
    mock.push_faults(RouteClass::Query, Fault::status(503), 10);
    let err = client.query(&sample_query()).await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(err.category(), Category::Server);
    assert_eq!(mock.request_count(RouteClass::Query), 3);
}

#[tokio::test]
async fn retry_after_in_seconds_is_honoured() {
    let mock = mock().await;
    let client = client(&mock); // backoff alone would wait at most 5 ms
    mock.push_fault(RouteClass::Query, Fault::too_many(Some("1")));
    let started = Instant::now();
    client.query(&sample_query()).await.expect("retried");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited only {:?}",
        started.elapsed()
    );
    assert_eq!(mock.request_count(RouteClass::Query), 2);
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_honoured() {
    let mock = mock().await;
    let client = client(&mock);
    let at = std::time::SystemTime::now() + Duration::from_secs(3);
    mock.push_fault(
        RouteClass::Query,
        Fault::Status {
            status: 503,
            retry_after: Some(httpdate::fmt_http_date(at)),
            body: None,
        },
    );
    let started = Instant::now();
    client.query(&sample_query()).await.expect("retried");
    // HTTP dates have one-second resolution: the date is 2 to 3 seconds away, and backoff
    // alone would have waited at most 5 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "waited only {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_ends_the_call_with_the_servers_wait() {
    let mock = mock().await;
    let client = client(&mock); // max_retry_after = 5 s
    mock.push_fault(RouteClass::Query, Fault::too_many(Some("600")));
    let started = Instant::now();
    let err = client.query(&sample_query()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "must not sleep");
    assert_eq!(err.category(), Category::RateLimited);
    match err {
        Error::Api { retry_after, .. } => {
            assert_eq!(retry_after, Some(Duration::from_secs(600)))
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(mock.request_count(RouteClass::Query), 1);
}

#[tokio::test]
async fn the_total_budget_bounds_time_spent_retrying() {
    let mock = mock().await;
    let client = builder(&mock)
        .retry_policy(RetryPolicy {
            max_attempts: 50,
            initial_delay: Duration::from_millis(200),
            factor: 1.0,
            max_delay: Duration::from_millis(200),
            total_budget: Duration::from_millis(300),
            ..fast_retry()
        })
        .build()
        .unwrap();
    mock.push_faults(RouteClass::Query, Fault::status(500), 100);
    let err = client.query(&sample_query()).await.unwrap_err();
    assert_eq!(err.status(), Some(500));
    // Each wait is at most 200 ms; a retry whose wait would cross 300 ms is not made.
    let sent = mock.request_count(RouteClass::Query);
    assert!(
        (1..=10).contains(&sent),
        "{sent} requests in a 300 ms budget"
    );
}

#[tokio::test]
async fn breaker_opens_fails_fast_without_requests_and_recovers_through_a_probe() {
    let mock = mock().await;
    let client = breaker_client(&mock, 3, Duration::from_millis(400));
    mock.push_faults(RouteClass::Query, Fault::status(502), 3);
    for _ in 0..3 {
        assert_eq!(
            client.query(&sample_query()).await.unwrap_err().status(),
            Some(502)
        );
    }
    assert!(matches!(client.breaker_state(), BreakerState::Open { .. }));

    // While open: fail fast, and the mock sees nothing.
    for _ in 0..5 {
        let err = client.query(&sample_query()).await.unwrap_err();
        assert_eq!(err.category(), Category::CircuitOpen, "{err}");
    }
    assert_eq!(mock.request_count(RouteClass::Query), 3);
    assert_eq!(client.stats().fast_failures, 5);
    assert_eq!(client.stats().breaker_trips, 1);

    // After open_for, one probe goes through; its success closes the circuit.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(client.breaker_state(), BreakerState::HalfOpen);
    client.query(&sample_query()).await.expect("probe succeeds");
    assert_eq!(
        client.breaker_state(),
        BreakerState::Closed {
            consecutive_failures: 0
        }
    );
    assert_eq!(mock.request_count(RouteClass::Query), 4);
}

#[tokio::test]
async fn a_failed_probe_reopens_the_circuit() {
    let mock = mock().await;
    let client = breaker_client(&mock, 1, Duration::from_millis(200));
    mock.push_faults(RouteClass::Query, Fault::ConnectionReset, 2);
    assert!(client.query(&sample_query()).await.is_err());
    tokio::time::sleep(Duration::from_millis(250)).await;
    let probe = client.query(&sample_query()).await.unwrap_err();
    assert_eq!(probe.category(), Category::Network, "the probe was sent");
    assert!(matches!(client.breaker_state(), BreakerState::Open { .. }));
    assert_eq!(mock.request_count(RouteClass::Query), 2);
    assert_eq!(client.stats().breaker_trips, 2);
}

#[tokio::test]
async fn client_errors_do_not_trip_the_breaker() {
    let mock = mock().await;
    let client = breaker_client(&mock, 2, Duration::from_secs(60));
    mock.push_faults(RouteClass::Query, Fault::status(400), 3);
    mock.push_fault(RouteClass::Query, Fault::too_many(None));
    for _ in 0..4 {
        assert!(client.query(&sample_query()).await.is_err());
    }
    assert!(matches!(
        client.breaker_state(),
        BreakerState::Closed { .. }
    ));
    client.query(&sample_query()).await.expect("still closed");
}

#[tokio::test]
async fn a_configured_budget_is_never_exceeded_at_the_server() {
    let mock = mock().await;
    // 4 requests per second: evenly paced, one every 250 ms.
    let client = builder(&mock)
        .rate_limits(RateLimits {
            crud: vec![Budget {
                requests: 4,
                per: Duration::from_secs(1),
            }],
            ..RateLimits::unlimited()
        })
        .build()
        .unwrap();
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.project().await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().expect("project info");
    }
    let mut arrivals: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.route == RouteClass::Project)
        .map(|r| r.received_at)
        .collect();
    arrivals.sort();
    assert_eq!(arrivals.len(), 12);
    // Even pacing is stricter than this bound (the k-th request goes k × 250 ms after the
    // first): the k-th request (0-based) cannot arrive before (k - 4) × 250 ms after the first.
    // Allow 100 ms for the first request's own latency to the server (it sets the origin).
    for (k, at) in arrivals.iter().enumerate().skip(4) {
        let earliest = Duration::from_millis(250) * (k as u32 - 3);
        let seen = at.duration_since(arrivals[0]);
        assert!(
            seen + Duration::from_millis(100) >= earliest,
            "request {k} arrived {seen:?} after the first; budget allows {earliest:?}"
        );
    }
}

#[tokio::test]
async fn query_concurrency_is_capped() {
    let mock = mock().await;
    let client = builder(&mock)
        .rate_limits(RateLimits {
            max_concurrent_queries: 1,
            ..RateLimits::unlimited()
        })
        .build()
        .unwrap();
    mock.push_faults(
        RouteClass::Query,
        Fault::Delay(Duration::from_millis(200)),
        3,
    );
    let started = Instant::now();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.query(&sample_query()).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().expect("query");
    }
    // One at a time: three 200 ms answers cannot overlap.
    assert!(started.elapsed() >= Duration::from_millis(600));
}
