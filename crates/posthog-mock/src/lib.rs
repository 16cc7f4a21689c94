//! A mock PostHog server for tests, demos and benchmarks of the PostHog toolkit.
//!
//! It **evaluates** requests over its data: HogQL queries are parsed, type-checked and run
//! over `events`, `persons` and a `sessions` table derived from the events, with subqueries in
//! FROM (keyset tuple comparison in ClickHouse UUID order, ORDER BY, aggregates, date and
//! interval functions, person properties as of the event, LIMIT clamped to a configurable
//! maximum that can change mid-run, OFFSET rejected as PostHog rejects it for personal API
//! keys); REST lists paginate their fixtures with DRF's limit/offset links;
//! cohorts are created and their persons computed from their property filters; capture and
//! flags validate and record. Nothing is replayed from canned pages keyed by query text.
//!
//! Around that it injects faults at connection level: scripted one-shot faults per route class
//! ([`MockServer::push_fault`]), a seeded random fault mix, and a server-side rate limit; and
//! it can model PostHog's query latency and per-project query concurrency ([`QueryLatency`]:
//! a held query, 3 slots, 429 after a bounded wait).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use posthog_mock::{Fault, MockConfig, MockServer, RouteClass};
//!
//! let server = MockServer::start(MockConfig::default()).await?;
//! server.push_fault(RouteClass::Query, Fault::too_many(Some("1")));
//! let url = format!("{}/api/projects/1/query/", server.base_url());
//! // … point the client at `url` with `Authorization: Bearer phx_mock_personal_key` …
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Architecture invariant: the crate depends on no PostHog client code; everything it knows
//! about PostHog comes from `posthog-api.md` and is encoded in `api/` (HTTP shapes) and
//! `hogql/` (query semantics).

#![warn(missing_docs)]

mod api;
mod config;
mod data;
mod fault;
mod hogql;
mod query_pool;
mod server;
mod store;
mod timefmt;

pub use config::{
    DEFAULT_LIMIT_CLAMP, DEFAULT_QUERY_CONCURRENCY, DEFAULT_QUERY_QUEUE_TIMEOUT, LimitClampChange,
    MockConfig, ProjectTimezone, QueryLatency, RandomFaults, RateLimit,
};
pub use data::{DataError, DataShape, Dataset, Event, GenSpec, Person, WIDE_KEYS_PER_EVENT};
pub use fault::{Fault, InvalidFault, RouteClass, UnknownRouteClass};
pub use server::{MockServer, RecordedRequest};
