//! Extraction state of the PostHog toolkit: where each table's incremental extraction stands,
//! and a durable store for it. This crate knows nothing about HTTP, reads no environment
//! variables and prints nothing.
//!
//! - [`TableState`]: one table's state in the seed's field names (`last_timestamp`,
//!   `last_uuid`, `recent_uuids`, `columns`) plus what the engine needs for exactly-once output:
//!   the dedup window, the committed part files and the part counter. Fields written by a newer
//!   release are kept in [`TableState::extra`].
//! - [`StateStore`]: the contract the engine commits through, after the parts a state lists
//!   are durable.
//! - [`JsonFileStore`]: the store as one JSON file, locked for one run at a time, checked on
//!   open and never overwritten when it cannot be read, rewritten atomically on each commit.
//! - [`MemoryStore`]: the same contract in memory, for tests of the engine.
//! - [`StateDocument`]: the store's bytes, parsed, checked and rendered in one place, for every
//!   store that keeps them (the file store here, an object store elsewhere).
//!
//! ```
//! use posthog_state::{JsonFileStore, StateStore, TableState};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let mut store = JsonFileStore::open(dir.path().join("state.json"))?;
//! let mut state = store.load("posthog_events")?.unwrap_or_default();
//! state.last_timestamp = Some("2026-11-20T10:00:00.123456Z".into());
//! store.commit("posthog_events", &state)?;
//! assert_eq!(store.load("posthog_events")?, Some(state));
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod document;
mod error;
mod file_store;
mod model;
mod store;

pub use document::StateDocument;
pub use error::StateError;
pub use file_store::JsonFileStore;
pub use model::{ColumnRecord, CommittedRange, FORMAT_VERSION, PartRecord, TableState};
pub use store::{MemoryStore, StateStore};
