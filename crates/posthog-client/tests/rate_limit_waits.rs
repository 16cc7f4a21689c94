//! Rate limits are waited out by the client alone: every 429 is one wait, logged once with its
//! reason and counted in `ClientStats`, and the waits after 429s spend neither `max_attempts`
//! nor `total_budget`, so a caller needs no wait loop of its own.

mod util;

use std::time::{Duration, Instant};

use posthog_client::{Category, HogQlQuery, RetryPolicy, WaitReason};
use posthog_mock::{Fault, RouteClass};
use tracing::Level;
use util::log::capture;
use util::{PERSONAL_KEY, builder, fast_retry, mock};

fn sample_query() -> HogQlQuery {
    HogQlQuery::new("select uuid, event from events order by timestamp, uuid limit 5")
}

/// More 429s in a row than `max_attempts` allows failures.
const N: usize = 7;

#[tokio::test]
async fn a_run_of_concurrency_429s_is_waited_out_by_the_client_alone() {
    let (log, _guard) = capture();
    let mock = mock().await;
    let policy = RetryPolicy {
        max_attempts: 2,
        // Far less than the waits below: they are not its to bound.
        total_budget: Duration::from_millis(1),
        max_rate_limit_waits: N as u32,
        rate_limit_delay: Duration::from_millis(10),
        max_rate_limit_delay: Duration::from_millis(40),
        rate_limit_budget: Duration::from_secs(10),
        ..fast_retry()
    };
    let client = builder(&mock).retry_policy(policy).build().unwrap();
    // PostHog's limit of 3 concurrent queries: 429 without Retry-After.
    mock.push_faults(RouteClass::Query, Fault::too_many(None), N);

    let rows = client.query(&sample_query()).await.expect("waited out");
    assert_eq!(rows.len(), 5);
    assert_eq!(mock.request_count(RouteClass::Query), N + 1);

    let stats = client.stats();
    assert_eq!(stats.throttled, N as u64);
    assert_eq!(
        stats.retries, N as u64,
        "the run summary's `retries` counts them"
    );
    assert_eq!(stats.waits.concurrency_limit, N as u64);
    assert_eq!(stats.waits.of(WaitReason::ConcurrencyLimit), N as u64);
    assert_eq!(stats.waits.rate_limit(), N as u64);
    assert_eq!(stats.waits.backoff + stats.waits.server_retry_after, 0);

    let waits = log.waits();
    assert_eq!(waits.len(), N, "one logged wait per 429: {waits:#?}");
    for (i, wait) in waits.iter().enumerate() {
        let n = i as u32 + 1;
        assert_eq!(wait.field("reason"), "concurrency_limit", "{wait:?}");
        assert_eq!(wait.field("status"), "429", "{wait:?}");
        assert_eq!(wait.field("attempt"), n.to_string(), "{wait:?}");
        let wait_ms: u128 = wait.field("wait_ms").parse().expect("wait_ms is a number");
        assert!(
            wait_ms <= policy.rate_limit_backoff(n).as_millis(),
            "wait {n}: {wait_ms} ms, over the doubling schedule capped at 40 ms"
        );
        assert_eq!(
            wait.field("endpoint"),
            format!("POST /api/projects/{}/query/", util::PROJECT_ID)
        );
        assert!(wait.field("url").ends_with("/query/"), "{wait:?}");
        assert_eq!(
            wait.level,
            Level::INFO,
            "a short wait after a 429 is routine"
        );
        for value in wait.fields.values() {
            assert!(
                !value.contains(&PERSONAL_KEY[4..]),
                "a key was logged: {wait:?}"
            );
        }
    }
}

#[tokio::test]
async fn waits_after_429s_spend_neither_max_attempts_nor_the_total_budget() {
    let (log, _guard) = capture();
    let mock = mock().await;
    let client = builder(&mock)
        .retry_policy(RetryPolicy {
            max_attempts: 2,
            total_budget: Duration::from_millis(500),
            max_rate_limit_waits: 2,
            ..fast_retry()
        })
        .build()
        .unwrap();
    mock.push_fault(RouteClass::Query, Fault::too_many(Some("1")));
    mock.push_fault(RouteClass::Query, Fault::status(503));
    mock.push_fault(RouteClass::Query, Fault::too_many(Some("1")));

    let started = Instant::now();
    client.query(&sample_query()).await.expect("waited out");
    // Two one-second Retry-Afters honoured in full under a 500 ms total budget, and the 503
    // still had its one retry (max_attempts 2) after them.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(mock.request_count(RouteClass::Query), 4);
    let reasons: Vec<String> = log
        .waits()
        .iter()
        .map(|w| w.field("reason").to_owned())
        .collect();
    assert_eq!(reasons, ["retry_after", "backoff", "retry_after"]);
    let stats = client.stats().waits;
    assert_eq!((stats.retry_after, stats.backoff), (2, 1));
    let backoff = &log.waits()[1];
    assert_eq!(backoff.level, Level::WARN, "a failure's wait is a warning");
    assert_eq!(backoff.field("status"), "503");
}

#[tokio::test]
async fn when_the_rate_limit_waits_run_out_the_call_ends_rate_limited() {
    let (log, _guard) = capture();
    let mock = mock().await;
    let client = builder(&mock)
        .retry_policy(RetryPolicy {
            max_attempts: 10,
            max_rate_limit_waits: 3,
            ..fast_retry()
        })
        .build()
        .unwrap();
    mock.push_faults(RouteClass::Query, Fault::too_many(None), 20);

    let err = client.query(&sample_query()).await.unwrap_err();
    assert_eq!(err.category(), Category::RateLimited, "{err}");
    assert_eq!(err.status(), Some(429));
    assert_eq!(
        mock.request_count(RouteClass::Query),
        4,
        "three waits, four attempts: max_attempts does not add 429 retries"
    );
    assert_eq!(log.waits().len(), 3);
    let gave_up = log.with_message("not retrying; returning the error");
    assert_eq!(gave_up.len(), 1, "{gave_up:#?}");
    assert_eq!(gave_up[0].field("why"), "rate_limit_waits_exhausted");
}
