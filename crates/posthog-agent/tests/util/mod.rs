//! Shared harness for the agent crate's integration tests: a mock PostHog per test and a client
//! pointed at it with fast retries and no client-side rate limits.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::time::Duration;

use posthog_client::{BreakerConfig, Client, RateLimits, RetryPolicy};
use posthog_mock::{Dataset, GenSpec, MockConfig, MockServer};

pub const PERSONAL_KEY: &str = "phx_TestPersonalKey123";
pub const PROJECT_KEY: &str = "phc_TestProjectKey456";
pub const PROJECT_ID: u64 = 4242;

/// A mock with 300 generated events and the test keys.
pub async fn mock() -> MockServer {
    let spec = GenSpec {
        seed: 7,
        events: 300,
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

/// A client for `mock`: quick retries, no budgets, a breaker that stays out of the way.
pub fn client(mock: &MockServer) -> Client {
    Client::builder()
        .base_url(&mock.base_url())
        .expect("loopback URL is accepted")
        .personal_api_key(PERSONAL_KEY)
        .project_id(PROJECT_ID.to_string())
        .retry_policy(RetryPolicy {
            max_attempts: 4,
            initial_delay: Duration::from_millis(5),
            factor: 2.0,
            max_delay: Duration::from_millis(40),
            total_budget: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(5),
            ..RetryPolicy::default()
        })
        .rate_limits(RateLimits::unlimited())
        .breaker(BreakerConfig {
            failure_threshold: 1000,
            open_for: Duration::from_secs(1),
        })
        .request_timeout(Duration::from_secs(10))
        .build()
        .expect("valid client")
}
