//! Turns pages of PostHog rows into files, with no network I/O of its own.
//!
//! The path of one page: [`QueryPage::parse`] borrows the rows out of the response body;
//! the caller reads each row's cursor values ([`raw_uuid`], [`raw_timestamp`]) and asks the
//! [`DedupWindow`] whether the UUID was already emitted; [`BatchBuilder`] flattens and types the
//! row straight into Arrow builders; every `batch_size` rows a [`RecordBatch`] goes to the
//! [`TableWriter`], which streams it into the current Parquet, JSONL or CSV part and rolls to a
//! new part when the schema widens. Memory is bounded by one page, one batch and the Parquet row
//! group being encoded.
//!
//! - [`schema`]: the column type rule: no value is lost or silently changed.
//! - [`DedupWindow`]: the UUIDs emitted inside the lookback window, bounded by time.
//! - [`writer`]: parts are written under a temporary name, fsynced and renamed when complete,
//!   and report their path, rows, bytes and SHA-256.
//! - [`reader`]: the id and incremental time of every row of a part, read back from any of the
//!   three formats (what a repair must not write again).
//!
//! [`RecordBatch`]: arrow_array::RecordBatch

mod batch;
mod dedup;
mod page;
pub mod reader;
pub mod schema;
mod timestamp;
pub mod value;
pub mod writer;

use std::path::PathBuf;

pub use batch::{BatchBuilder, arrow_type};
pub use dedup::{DedupError, DedupWindow, UnixMicros};
pub use page::{QueryPage, raw_timestamp, raw_uuid};
pub use schema::{
    ColumnSpec, ColumnType, FieldKind, FieldSpec, FlattenMode, SchemaError, TableSchema,
};
pub use timestamp::{format_timestamp, parse_timestamp};
pub use writer::{OutputFormat, PartFile, PartWriter, TableWriter, WriterOptions};

/// What can go wrong turning rows into files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The input rows are not what PostHog sends (bad JSON, wrong shape).
    #[error("bad data: {0}")]
    Data(String),
    /// A file operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The Parquet encoder refused the data or settings.
    #[error("parquet: {0}")]
    Parquet(String),
    /// Recorded columns cannot be continued.
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

impl CoreError {
    /// The error category (`data` or `config`) used for exit codes.
    pub fn category(&self) -> &'static str {
        match self {
            CoreError::Schema(_) => "config",
            CoreError::Data(_) | CoreError::Io { .. } | CoreError::Parquet(_) => "data",
        }
    }
}
