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
mod json;
mod page;
pub mod reader;
mod scan;
pub mod schema;
pub mod storage;
mod timestamp;
pub mod value;
pub mod writer;

use std::path::PathBuf;

use posthog_error::{Categorized, Category};

pub use batch::{BatchBuilder, arrow_type};
pub use dedup::{DedupError, DedupWindow, UnixMicros};
pub use page::{QueryPage, raw_timestamp, raw_uuid};
pub use scan::{MAX_ROW_BYTES, PageScanner, Row, RowValue, ScannedPage, row_values};
pub use schema::{
    ColumnSpec, ColumnType, FieldKind, FieldSpec, FlattenMode, SchemaError, TableSchema,
};
pub use storage::{LocalDir, PartStore, PartUpload};
pub use timestamp::{format_timestamp, parse_timestamp};
pub use value::JsonText;
pub use writer::{
    DEFAULT_ROW_GROUP_BYTES, PartFile, PartFormat, PartWriter, TableWriter, WriterOptions,
};

/// What can go wrong turning rows into files, or reading parts back.
///
/// A foreign cause (an I/O, Parquet, Arrow, CSV or JSON error) is kept as the error's
/// [`source()`](std::error::Error::source) and never repeated in its message; show the whole
/// chain with [`posthog_error::ErrorChain`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The input rows are not what PostHog sends (wrong shape), or a part read back is not what
    /// the writer writes.
    #[error("bad data: {0}")]
    Data(String),
    /// Text that must be JSON does not parse: a response body that is not a HogQL result page,
    /// a line of a JSONL part that is not an object.
    #[error("bad data: {what}")]
    Json {
        /// What did not parse, e.g. `the query response is not a valid result page`.
        what: String,
        /// The parser's error, with its line and column.
        #[source]
        source: serde_json::Error,
    },
    /// A CSV part read back does not parse.
    #[error("bad data: cannot read the CSV part {}", path.display())]
    Csv {
        /// The part.
        path: PathBuf,
        /// The CSV reader's error.
        #[source]
        source: csv::Error,
    },
    /// A file operation failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The Parquet encoder or decoder refused the data, the settings or the file.
    #[error("parquet: cannot {op} {}", path.display())]
    Parquet {
        /// What was being done, e.g. `write a batch to`.
        op: &'static str,
        /// The part.
        path: PathBuf,
        /// The Parquet library's error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Arrow refused a batch: assembling one from the builders, or decoding one from a part.
    #[error("cannot {op}{}", in_file(path.as_deref()))]
    Arrow {
        /// What was being done, e.g. `assemble a record batch`.
        op: &'static str,
        /// The part, when a file was involved.
        path: Option<PathBuf>,
        /// Arrow's error.
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// Recorded columns cannot be continued.
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

impl CoreError {
    /// The failure's category: [`Permission`](Category::Permission) for a file operation the
    /// file system refused as not permitted (a read-only directory), [`Data`](Category::Data)
    /// for everything else, a [`SchemaError`] included (see [`Category::Data`] for why).
    pub fn category(&self) -> Category {
        match self {
            CoreError::Io { source, .. } => Category::of_io_error(source),
            CoreError::Data(_)
            | CoreError::Json { .. }
            | CoreError::Csv { .. }
            | CoreError::Parquet { .. }
            | CoreError::Arrow { .. }
            | CoreError::Schema(_) => Category::Data,
        }
    }
}

impl Categorized for CoreError {
    fn category(&self) -> Category {
        CoreError::category(self)
    }
}

impl Categorized for SchemaError {
    /// Always [`Category::Data`]: the recorded columns come from the state store.
    fn category(&self) -> Category {
        Category::Data
    }
}

impl Categorized for DedupError {
    /// Always [`Category::Data`]: the window comes from the state store.
    fn category(&self) -> Category {
        Category::Data
    }
}

/// ` <path>` after an operation that had a file, nothing otherwise.
fn in_file(path: Option<&std::path::Path>) -> String {
    path.map(|p| format!(" {}", p.display()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use posthog_error::ErrorChain;

    use super::*;

    /// Each message of the chain once: no message contains a later one (a cause it repeats).
    fn assert_each_message_once(err: &CoreError) -> Vec<String> {
        let messages: Vec<String> = ErrorChain::new(err).iter().map(|e| e.to_string()).collect();
        for (i, outer) in messages.iter().enumerate() {
            for inner in &messages[i + 1..] {
                assert!(!outer.contains(inner.as_str()), "{messages:?}");
            }
        }
        messages
    }

    #[test]
    fn a_part_that_does_not_parse_keeps_the_parquet_error_as_its_root_cause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part-000001.parquet");
        std::fs::write(&path, b"not a parquet file").unwrap();
        let err = reader::for_each_part_key(&path, "uuid", "timestamp", |_, _| {}).unwrap_err();
        assert_eq!(err.category(), Category::Data);
        let messages = assert_each_message_once(&err);
        assert!(
            messages[0].contains(&path.display().to_string()),
            "{messages:?}"
        );
        let root = ErrorChain::new(&err).iter().last().unwrap();
        assert!(
            root.downcast_ref::<parquet::errors::ParquetError>()
                .is_some(),
            "{messages:?}"
        );
    }

    #[test]
    fn an_io_error_is_the_source_and_decides_the_category() {
        let denied = CoreError::Io {
            op: "create",
            path: PathBuf::from("out/.part-1.parquet.tmp"),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert_eq!(denied.category(), Category::Permission);
        assert_eq!(
            assert_each_message_once(&denied),
            ["cannot create out/.part-1.parquet.tmp", "permission denied"]
        );
        let full = CoreError::Io {
            op: "write",
            path: PathBuf::from("out/.part-1.parquet.tmp"),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        };
        assert_eq!(full.category(), Category::Data);
        assert!(full.source().is_some_and(|e| e.is::<std::io::Error>()));
    }

    #[test]
    fn a_page_that_is_not_json_keeps_the_parser_error() {
        let err = QueryPage::parse(b"{").unwrap_err();
        let messages = assert_each_message_once(&err);
        assert_eq!(
            messages[0],
            "bad data: the query response is not a valid result page"
        );
        assert!(err.source().is_some_and(|e| e.is::<serde_json::Error>()));
    }

    #[test]
    fn a_schema_error_is_data_and_shown_once() {
        let err = CoreError::from(SchemaError("column \"a\" is recorded twice".into()));
        assert_eq!(err.category(), Category::Data);
        assert_eq!(
            assert_each_message_once(&err),
            ["the recorded columns are inconsistent: column \"a\" is recorded twice"]
        );
    }
}
