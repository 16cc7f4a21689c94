//! What an agent (or an analyst) asks PostHog, on top of [`posthog_client`]:
//!
//! - the [catalogue](catalog) of the eight [entity types](Entity) of a project, with their
//!   [fields] read from PostHog itself (HogQL column types, property definitions, a sampled REST
//!   object);
//! - a catalogue of [parameterised HogQL templates](templates) (churn risk, power users,
//!   funnels, retention, …) whose variables are typed, range-checked and always bound as HogQL
//!   `values`, never spliced into the query text.
//!
//! This is content, not transport: every request goes through the [`Client`]'s one send path
//! (breaker, budgets, retries), and failures are [`posthog_client::Error`]s. Like the client,
//! the crate reads no environment variables and touches no files.
//!
//! [`Client`]: posthog_client::Client
//!
//! ```no_run
//! # async fn demo(client: posthog_client::Client) -> Result<(), posthog_client::Error> {
//! use posthog_agent::{Entity, fields, templates};
//!
//! for field in fields(&client, Entity::Persons).await? {
//!     println!("{} ({})", field.name, field.kind);
//! }
//! let query = templates::find("churn_risk")
//!     .expect("a template")
//!     .bind([("inactive_days", "14")])?;
//! let at_risk = client.query(&query).await?;
//! println!("{} users at risk", at_risk.results.len());
//! # Ok(()) }
//! ```

pub mod catalog;
pub mod templates;

pub use catalog::{Entity, FieldInfo, FieldSource, fields};
pub use templates::{Param, ParamKind, Template};

/// The README's example, compiled and run against the in-process mock.
#[cfg(doctest)]
mod readme_examples {
    #[doc = include_str!("../README.md")]
    struct AgentReadme;
}
