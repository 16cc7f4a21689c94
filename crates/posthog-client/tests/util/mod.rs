//! Shared harness for the client's integration tests: a mock PostHog per test and a client
//! pointed at it with fast retries.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod log;

use std::time::Duration;

use posthog_client::{BreakerConfig, Client, ClientBuilder, RateLimits, RetryPolicy};
use posthog_mock::{Dataset, GenSpec, MockConfig, MockServer};

pub const PERSONAL_KEY: &str = "phx_TestPersonalKey123";
pub const PROJECT_KEY: &str = "phc_TestProjectKey456";
pub const PROJECT_ID: u64 = 4242;

/// A mock with `events` generated events and the test keys.
pub async fn mock_with_events(events: usize) -> MockServer {
    let spec = GenSpec {
        seed: 7,
        events,
        persons: 20,
        ..GenSpec::default()
    };
    MockServer::start(MockConfig {
        personal_api_key: PERSONAL_KEY.into(),
        project_api_key: PROJECT_KEY.into(),
        project_id: PROJECT_ID,
        dataset: Dataset::generate(&spec),
        ..MockConfig::default()
    })
    .await
    .expect("mock starts")
}

pub async fn mock() -> MockServer {
    mock_with_events(300).await
}

/// Retries that are quick enough for tests (three retries after failures, three waits after
/// 429s), no client-side rate limits, a breaker that stays out of the way unless a test
/// configures it.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial_delay: Duration::from_millis(5),
        factor: 2.0,
        max_delay: Duration::from_millis(40),
        total_budget: Duration::from_secs(30),
        max_retry_after: Duration::from_secs(5),
        max_rate_limit_waits: 3,
        rate_limit_delay: Duration::from_millis(5),
        max_rate_limit_delay: Duration::from_millis(40),
        rate_limit_budget: Duration::from_secs(30),
    }
}

pub fn builder(mock: &MockServer) -> ClientBuilder {
    Client::builder()
        .base_url(&mock.base_url())
        .expect("loopback URL is accepted")
        .personal_api_key(PERSONAL_KEY)
        .project_api_key(PROJECT_KEY)
        .project_id(PROJECT_ID.to_string())
        .retry_policy(fast_retry())
        .rate_limits(RateLimits::unlimited())
        .breaker(BreakerConfig {
            failure_threshold: 1000,
            open_for: Duration::from_secs(1),
        })
        .request_timeout(Duration::from_secs(10))
}

pub fn client(mock: &MockServer) -> Client {
    builder(mock).build().expect("valid client")
}
