//! An async client for PostHog's APIs, built to be depended on in production.
//!
//! - **HogQL queries** ([`Client::query`]) with values bound as placeholders, UTC timestamps and
//!   a traceable `client_query_id`.
//! - **REST lists** as [`Stream`](futures_core::Stream)s that follow DRF `next` links
//!   ([`Client::list`], [`Client::cohorts`], …), plus [`Client::project`] and
//!   [`Client::current_user`].
//! - **Capture** ([`Client::capture`], [`Client::capture_batch`]) with idempotent event UUIDs, and
//!   **flag evaluation** ([`Client::evaluate_flags`]).
//! - **Cohorts**: [`Client::create_cohort`], [`Client::cohort_persons`].
//! - **Long queries** run [asynchronously](HogQlQuery::asynchronous): queued, then polled.
//!
//! The entity catalogue and the HogQL templates agents use are built on this crate in
//! `posthog-agent`; this one is transport only.
//!
//! Every request goes through one path: a [circuit breaker](BreakerConfig), client-side
//! [budgets](RateLimits) per endpoint class (sliding windows at an even pace), then retries of
//! what is retryable (connect errors, timeouts, 429, 500, 502, 503, 504) honouring
//! `Retry-After`, else with capped exponential backoff and full jitter ([`RetryPolicy`]). A
//! `Retry-After` longer than the policy's `max_retry_after` ends the call at once with the
//! server's wait in the error; a huge one saturates at [`RETRY_AFTER_CEILING`] and is never
//! slept on. Every number the server sends is bounded or refused with an error naming it.
//! Failures are one [`Error`] enum whose [`category`](Error::category) maps to exit codes.
//!
//! Keys are held as secrets: they never appear in `Debug` output, errors or logs, at any level,
//! `verbose_http` included. The crate reads no environment variables and touches no files.
//!
//! ```no_run
//! # async fn demo() -> Result<(), posthog_client::Error> {
//! use futures_util::TryStreamExt;
//! use posthog_client::{Client, HogQlQuery, Region};
//!
//! let client = Client::builder()
//!     .region(Region::Us)
//!     .personal_api_key("phx_...")
//!     .project_id("12345")
//!     .build()?;
//! let top = client
//!     .query(&HogQlQuery::new(
//!         "select event, count() as n from events where timestamp > now() - interval 1 day \
//!          and event != {skip} group by event order by n desc limit 10",
//!     ).value("skip", "$feature_flag_called"))
//!     .await?;
//! for row in &top.results {
//!     println!("{row:?}");
//! }
//! let cohorts: Vec<serde_json::Value> = client.cohorts().try_collect().await?;
//! println!("{} cohorts", cohorts.len());
//! # Ok(()) }
//! ```

mod breaker;
mod capture;
mod client;
mod error;
mod flags;
pub mod keyset;
mod query;
mod ratelimit;
mod redact;
mod region;
mod rest;
pub mod retry;
#[cfg(test)]
mod test_support;
mod transport;

pub use breaker::{BreakerConfig, BreakerState};
pub use capture::{BatchReport, CaptureEvent, MAX_BODY_BYTES};
pub use client::{Client, ClientBuilder, ClientStats, USER_AGENT, WaitCounts};
pub use error::{ApiError, Error};
pub use flags::{FlagEvaluation, FlagReason, FlagsRequest, FlagsResponse};
pub use keyset::{
    Advance, GROW_BACK_AFTER, KeysetCursor, KeysetError, KeysetFilter, KeysetPager, KeysetQuery,
    KeysetStart, MIN_PAGE, Micros, PageSummary, RangeSummary,
};
pub use posthog_error::{Categorized, Category};
pub use query::{HogQlQuery, QueryResult, RawQueryResponse, StreamedQuery};
pub use ratelimit::{Budget, EndpointClass, RateLimits};
pub use redact::redact_secrets;
pub use region::Region;
pub use rest::{
    CurrentUser, ListParams, NewCohort, Page, Project, PropertyDefinition, PropertyKind, Resource,
};
pub use retry::{
    Decision, GiveUpReason, RETRY_AFTER_CEILING, RequestInfo, RetryPolicy, RetryState, WaitReason,
};
pub use transport::BodySink;

/// The examples of the READMEs, compiled as doctests so they cannot drift from the API.
#[cfg(doctest)]
mod readme_examples {
    #[doc = include_str!("../README.md")]
    struct ClientReadme;
    #[doc = include_str!("../../../README.md")]
    struct WorkspaceReadme;
    /// `docs/library.md`: every example is compiled and run against the in-process mock.
    #[doc = include_str!("../../../docs/library.md")]
    struct LibraryGuide;
}
