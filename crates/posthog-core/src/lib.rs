//! Turns pages of PostHog rows into files, with no network I/O of its own.
//!
//! - [`DedupWindow`]: the UUIDs emitted inside the lookback window, bounded by time, so events
//!   re-read by an incremental run (or returned twice by PostHog) are written once.
//!
//! Flattening, schema tracking and the Parquet/JSONL/CSV writers join this crate next; it never
//! sees HTTP types.

mod dedup;

pub use dedup::{DedupError, DedupWindow, UnixMicros};
