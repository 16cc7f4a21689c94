//! Streaming part writers (Parquet, JSONL, CSV) and the table writer that rolls parts.
//!
//! A part is written through a [`PartStore`] upload, hashed (SHA-256) and counted as it is
//! written; it exists under its final name only once committed, complete and durable (in a
//! local directory: a hidden temporary file, `fsync`, rename, directory `fsync`). A writer
//! dropped before [`PartWriter::finish`] leaves nothing under the part's name.
//!
//! A part file's schema is fixed. [`TableWriter`] closes the current part and opens the next one
//! when a batch arrives with more columns (a property seen for the first time) or the part has
//! reached its row limit; every part is self-describing, and readers that unify by column name
//! (DuckDB `union_by_name`, pyarrow datasets) read the table as one.

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use sha2::{Digest, Sha256};

use crate::schema::{ColumnSpec, ColumnType};
use crate::storage::{LocalDir, PartStore, PartUpload};
use crate::{CoreError, format_timestamp};

/// The file format of a part (the config's user-facing name for it is
/// `posthog_osiris::OutputFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PartFormat {
    /// Apache Parquet, zstd-compressed, one row group per batch.
    #[default]
    Parquet,
    /// One JSON object per line; null cells are left out, JSON columns are embedded as JSON.
    Jsonl,
    /// RFC 4180 CSV with a header line; a null is an empty field, an empty string is `""`.
    Csv,
}

impl PartFormat {
    /// File name extension.
    pub fn extension(self) -> &'static str {
        match self {
            PartFormat::Parquet => "parquet",
            PartFormat::Jsonl => "jsonl",
            PartFormat::Csv => "csv",
        }
    }
}

/// The encoded size at which a Parquet row group is closed by default: 1 MiB. Memory holds the
/// open row group, and more than its encoded size (dictionaries, unflushed pages): at 4 MiB a
/// run's peak RSS was 13 MiB higher for at most 2 % fewer instructions (docs/benchmarks.md).
pub const DEFAULT_ROW_GROUP_BYTES: usize = 1024 * 1024;

/// Settings shared by the parts of one table.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// File format.
    pub format: PartFormat,
    /// The most rows a Parquet row group holds.
    pub row_group_rows: usize,
    /// A Parquet row group is closed once its encoded data reaches this many bytes (or
    /// `row_group_rows`), whatever size the batches come in: the row group being encoded is
    /// what a part holds in memory, and the number of row groups is what its footer grows
    /// with, so both stay bounded for any batch size.
    pub row_group_bytes: usize,
    /// A part is closed after this many rows and the next one opened.
    pub max_part_rows: u64,
    /// Parquet zstd level (1 = fastest).
    pub zstd_level: i32,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            format: PartFormat::Parquet,
            row_group_rows: 5_000,
            row_group_bytes: DEFAULT_ROW_GROUP_BYTES,
            max_part_rows: 1_000_000,
            zstd_level: 1,
        }
    }
}

/// A finished, durable part file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartFile {
    /// Its name in its store (relative to the table's directory; `date=YYYY-MM-DD/part-…` in
    /// a partitioned table).
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
    /// Data rows in it.
    pub rows: u64,
    /// File size.
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
}

/// A part being written.
pub trait PartWriter: Send {
    /// Appends a batch; its schema must be the part's schema.
    fn write(&mut self, batch: &RecordBatch) -> Result<(), CoreError>;
    /// Rows written so far.
    fn rows(&self) -> u64;
    /// Completes the file, makes it durable and gives it its final name.
    fn finish(self: Box<Self>) -> Result<PartFile, CoreError>;
    /// Whether `batch` is written well into this part; `false` asks the table writer to start
    /// a new part for it (a column left uncompressed as sparse has become dense, or the
    /// footer's metadata has reached [`footer_column_chunks`]).
    fn suits(&self, _batch: &RecordBatch) -> bool {
        true
    }
}

fn io_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> CoreError + 'p {
    move |source| CoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn parquet_err<'p>(
    op: &'static str,
    path: &'p Path,
) -> impl FnOnce(parquet::errors::ParquetError) -> CoreError + 'p {
    move |source| CoreError::Parquet {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Counts and hashes the bytes on their way to the store.
struct HashingWriter {
    inner: Box<dyn PartUpload>,
    hasher: Sha256,
    bytes: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A part on its way into its store: the upload discards it if dropped before `commit`.
struct PendingFile {
    /// The part's name in its store.
    name: String,
    /// Where the part will be, for errors and the finished part.
    tmp_path: PathBuf,
}

impl PendingFile {
    fn create(store: &dyn PartStore, name: &str) -> Result<(Self, HashingWriter), CoreError> {
        let writer = HashingWriter {
            inner: store.create(name)?,
            hasher: Sha256::new(),
            bytes: 0,
        };
        Ok((
            PendingFile {
                name: name.to_owned(),
                tmp_path: store.locate(name),
            },
            writer,
        ))
    }

    fn commit(self, writer: HashingWriter, rows: u64) -> Result<PartFile, CoreError> {
        let HashingWriter {
            mut inner,
            hasher,
            bytes,
        } = writer;
        inner.flush().map_err(io_err("write", &self.tmp_path))?;
        inner.commit()?;
        Ok(PartFile {
            name: self.name,
            path: self.tmp_path,
            rows,
            bytes,
            sha256: format!("{:x}", hasher.finalize()),
        })
    }
}

/// Opens a part writer of `options.format` for the object `name` of `store`.
///
/// `columns` (the table's column specs in output order) are recorded in Parquet files as the
/// key-value metadata `posthog.columns`, so a part says where each column came from. `sample`
/// (the part's first batch) decides which Parquet columns get no dictionary; `sparse` (indices
/// into `schema`, Parquet only) are written without a codec
/// ([`TableWriter::sparse_and_never_dense`]).
fn open_part(
    store: &dyn PartStore,
    name: &str,
    schema: SchemaRef,
    columns: &[ColumnSpec],
    options: &WriterOptions,
    sample: Option<&RecordBatch>,
    sparse: Vec<usize>,
) -> Result<Box<dyn PartWriter>, CoreError> {
    let (pending, writer) = PendingFile::create(store, name)?;
    Ok(match options.format {
        PartFormat::Parquet => Box::new(ParquetPart::new(
            pending, writer, schema, columns, options, sample, sparse,
        )?),
        PartFormat::Jsonl => Box::new(TextPart::new(
            pending,
            writer,
            &schema,
            columns,
            TextKind::Jsonl,
        )?),
        PartFormat::Csv => Box::new(TextPart::new(
            pending,
            writer,
            &schema,
            columns,
            TextKind::Csv,
        )?),
    })
}

/// A part with more columns than this writes its sparse columns without a codec: every column
/// writer with a codec keeps its own zstd context. Up to `parquet` 60.1 that was also a
/// ~96 KB decompression context a writer never uses (295 MB for 3 076 columns); 60.2 makes
/// contexts on first use, but compressing every column still cost 134–136 MiB of peak RSS
/// against 68–69 with this rule (300 000 wide events, pages and batches of 1 000 and 10 000,
/// measured when parts closed at 32 768 column chunks, before [`MAX_FOOTER_COLUMN_CHUNKS`]
/// was halved).
/// A narrower table compresses every column, whatever its density.
const WIDE_PART_COLUMNS: usize = 256;

/// In a wide part, a column whose values take fewer bytes than this per row of the part's
/// first batch is written uncompressed: mostly nulls, which the definition levels already
/// encode in a few bytes. A later batch after which it holds more, over the part's rows, starts
/// a new part ([`PartWriter::suits`]).
const COMPRESS_FROM_BYTES_PER_ROW: f64 = 2.0;

/// The indices of the columns of `batch` to write without a codec (see
/// [`WIDE_PART_COLUMNS`]).
fn sparse_columns(batch: &RecordBatch) -> Vec<usize> {
    if batch.num_columns() <= WIDE_PART_COLUMNS {
        return Vec::new();
    }
    let rows = batch.num_rows().max(1) as f64;
    (0..batch.num_columns())
        .filter(|&i| {
            value_bytes(batch.column(i).as_ref()) as f64 / rows < COMPRESS_FROM_BYTES_PER_ROW
        })
        .collect()
}

/// The bytes of the values (not nulls) an array holds.
fn value_bytes(array: &dyn Array) -> usize {
    let present = array.len() - array.null_count();
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value_data().len(),
        DataType::Boolean => present.div_ceil(8),
        _ => present * 8,
    }
}

/// A column whose non-null values in the part's first batch are at least this share distinct
/// (and number at least [`DISTINCT_FROM_VALUES`]) is written without a dictionary: ids,
/// timestamps, addresses. The `parquet` crate would hash and intern every value of every row
/// group only to write a dictionary page as large as the data (`perf`: the interner was ~4 % of
/// a run's CPU); zstd already shares what repeats.
const DISTINCT_SHARE: f64 = 0.5;

/// Fewer values than this say too little about a column to give up its dictionary. The sample
/// is the part's first batch, so with `batch_size` below this only [`UNIQUE_PER_ROW`] goes
/// without one.
const DISTINCT_FROM_VALUES: usize = 256;

/// The indices of the columns of `batch` that would gain nothing from a dictionary (see
/// [`DISTINCT_SHARE`]).
fn distinct_columns(batch: &RecordBatch) -> Vec<usize> {
    (0..batch.num_columns())
        .filter(|&i| {
            let array = batch.column(i).as_ref();
            let present = array.len() - array.null_count();
            if present < DISTINCT_FROM_VALUES {
                return false;
            }
            let distinct = distinct_values(array);
            distinct as f64 >= DISTINCT_SHARE * present as f64
        })
        .collect()
}

/// How many distinct non-null values `array` holds (0 for types a dictionary suits anyway).
fn distinct_values(array: &dyn Array) -> usize {
    fn count<T: std::hash::Hash + Eq>(values: impl Iterator<Item = Option<T>>) -> usize {
        let mut seen = HashSet::with_hasher(ahash::RandomState::new());
        values.flatten().for_each(|v| {
            seen.insert(v);
        });
        seen.len()
    }
    match array.data_type() {
        DataType::Utf8 => count(array.as_string::<i32>().iter()),
        DataType::Int64 => count(array.as_primitive::<Int64Type>().iter()),
        DataType::Float64 => count(
            array
                .as_primitive::<Float64Type>()
                .iter()
                .map(|v| v.map(f64::to_bits)),
        ),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            count(array.as_primitive::<TimestampMicrosecondType>().iter())
        }
        _ => 0,
    }
}

/// A Parquet part closes once its footer holds this many column chunks (row groups × columns),
/// unless that would leave it fewer than [`MIN_PART_ROW_GROUPS`] row groups
/// ([`footer_column_chunks`]). The footer's metadata stays in memory until the part closes,
/// ~0.9 KB a chunk (`ColumnChunkMetaData`, and the `parquet` crate's per-chunk column and offset
/// index slots), so this bounds it at ~4 MiB. At 16 384 chunks the footer of a 1 M-row part of
/// default events with person properties (~165 row groups × 76 columns, 8.65 MiB at the run's
/// heap peak by heaptrack) was the largest thing a run held; at this budget (parts of ~330 000
/// such rows) 1 M and 3 M events peaked 8–10 MiB lower, and 3 M within 3 % of 1 M where it had
/// been 4 % above (docs/benchmarks.md, ninth round).
pub const FOOTER_COLUMN_CHUNKS: usize = 4 * 1024;

/// A part is not closed for its footer before it has this many row groups: a 1 000-column table
/// would otherwise write parts of 4 row groups (a few thousand rows each), many small files for
/// readers to merge. Its footer then grows to at most [`MAX_FOOTER_COLUMN_CHUNKS`].
pub const MIN_PART_ROW_GROUPS: usize = 16;

/// A part's footer budget is at most this many column chunks, however wide, so that the footer
/// stays bounded whatever `part_rows` says (~15 MiB by the estimate above). With 32 768, 3 M
/// events with `part_rows: 100000000` peaked at 65.3 MiB (49.6 at this cap). A 1 000-column
/// table closes after 16 row groups (by [`MIN_PART_ROW_GROUPS`]), a 3 000-column one after 6
/// (by this: 18 000 chunks, see [`footer_column_chunks`]).
pub const MAX_FOOTER_COLUMN_CHUNKS: usize = 16 * 1024;

/// The column chunks at which a part of `columns` columns closes: [`FOOTER_COLUMN_CHUNKS`], or
/// [`MIN_PART_ROW_GROUPS`] row groups' worth for a wider table, at most
/// [`MAX_FOOTER_COLUMN_CHUNKS`]. The part closes after the first row group that takes it to
/// the budget or past it, so it may hold up to one row group (`columns - 1` chunks) more:
/// 76 columns: 4 096, closed after 54 row groups (4 104 chunks); 512: 8 192 (16); 2 048:
/// 16 384 (8); 3 000: 16 384, closed after 6 (18 000).
pub fn footer_column_chunks(columns: usize) -> usize {
    MIN_PART_ROW_GROUPS
        .saturating_mul(columns)
        .clamp(FOOTER_COLUMN_CHUNKS, MAX_FOOTER_COLUMN_CHUNKS)
}

/// Columns whose every value is distinct: a dictionary would only cost the hashing of each
/// value and a dictionary page as large as the data. Named, because [`distinct_columns`] needs a
/// first batch of [`DISTINCT_FROM_VALUES`] rows to see it.
const UNIQUE_PER_ROW: [&str; 3] = ["uuid", "id", "properties_$insert_id"];

struct ParquetPart {
    pending: PendingFile,
    writer: ArrowWriter<HashingWriter>,
    rows: u64,
    /// The encoded size at which the open row group is closed.
    row_group_bytes: usize,
    /// Columns written without a codec (sparse in the part's first batch), each with the bytes
    /// of the values written to it so far.
    uncompressed: Vec<(usize, usize)>,
}

impl ParquetPart {
    fn new(
        pending: PendingFile,
        out: HashingWriter,
        schema: SchemaRef,
        columns: &[ColumnSpec],
        options: &WriterOptions,
        sample: Option<&RecordBatch>,
        uncompressed: Vec<usize>,
    ) -> Result<Self, CoreError> {
        let level = ZstdLevel::try_new(options.zstd_level).map_err(parquet_err(
            "set the compression level of",
            &pending.tmp_path,
        ))?;
        let columns_json = serde_json::to_string(columns).unwrap_or_default();
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(options.row_group_rows.max(1)))
            .set_dictionary_enabled(true)
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_created_by(concat!("posthog-core ", env!("CARGO_PKG_VERSION")).to_owned())
            .set_key_value_metadata(Some(vec![KeyValue::new(
                "posthog.columns".to_owned(),
                columns_json,
            )]));
        for name in UNIQUE_PER_ROW {
            if columns.iter().any(|c| c.name == name) {
                props = props.set_column_dictionary_enabled(ColumnPath::from(name), false);
            }
        }
        for i in sample.map(distinct_columns).unwrap_or_default() {
            props = props.set_column_dictionary_enabled(
                ColumnPath::from(schema.field(i).name().as_str()),
                false,
            );
        }
        for &i in &uncompressed {
            let name = schema.field(i).name().as_str();
            // No dictionary either: the `parquet` crate gives every dictionary encoder a
            // 4 096-slot hash table (~18 KB per column writer per row group, 148 MB of a
            // 2 000-column part's peak), for a column with a handful of values.
            props = props
                .set_column_compression(ColumnPath::from(name), Compression::UNCOMPRESSED)
                .set_column_dictionary_enabled(ColumnPath::from(name), false);
        }
        let props = props.build();
        let writer = ArrowWriter::try_new(out, schema, Some(props))
            .map_err(parquet_err("start", &pending.tmp_path))?;
        Ok(ParquetPart {
            pending,
            writer,
            rows: 0,
            row_group_bytes: options.row_group_bytes.max(1),
            uncompressed: uncompressed.into_iter().map(|i| (i, 0)).collect(),
        })
    }
}

impl PartWriter for ParquetPart {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), CoreError> {
        self.writer
            .write(batch)
            .map_err(parquet_err("write a batch to", &self.pending.tmp_path))?;
        self.rows += batch.num_rows() as u64;
        for (i, written) in &mut self.uncompressed {
            *written += value_bytes(batch.column(*i).as_ref());
        }
        if self.writer.in_progress_size() >= self.row_group_bytes {
            self.writer
                .flush()
                .map_err(parquet_err("close a row group of", &self.pending.tmp_path))?;
        }
        Ok(())
    }

    fn rows(&self) -> u64 {
        self.rows
    }

    /// A batch after which a column this part writes without a codec holds enough, over the
    /// part's rows, to compress starts a new part, where that column is compressed: the first
    /// batch's sparseness was only a guess about the rest of the part (a property rare in the
    /// first thousand events may be on every event after; left uncompressed, such a part
    /// measured 8–12× larger).
    fn suits(&self, batch: &RecordBatch) -> bool {
        // The footer's metadata (every column of every row group) stays in memory until the
        // part closes; past this many column chunks the part is closed and a new one begins.
        let columns = batch.num_columns();
        let chunks = self.writer.flushed_row_groups().len() * columns;
        if chunks >= footer_column_chunks(columns) {
            return false;
        }
        // Judged over the part with this batch in it, not over the batch alone: in batches of
        // 100 rows, one of ~950 sparse columns crossed the threshold by chance in most batches,
        // and a 1 M-event wide run wrote 5 344 parts (~190 rows each).
        let rows = (self.rows as usize + batch.num_rows()).max(1) as f64;
        self.uncompressed.iter().all(|&(i, written)| {
            (written + value_bytes(batch.column(i).as_ref())) as f64 / rows
                < COMPRESS_FROM_BYTES_PER_ROW
        })
    }

    fn finish(self: Box<Self>) -> Result<PartFile, CoreError> {
        let ParquetPart {
            pending,
            writer,
            rows,
            ..
        } = *self;
        let out = writer
            .into_inner()
            .map_err(parquet_err("finish", &pending.tmp_path))?;
        pending.commit(out, rows)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TextKind {
    Jsonl,
    Csv,
}

/// JSONL and CSV: rows formatted by hand from the Arrow arrays.
struct TextPart {
    pending: PendingFile,
    out: HashingWriter,
    kind: TextKind,
    width: usize,
    /// Per column: `"name":` (JSONL only), and whether it holds JSON text.
    keys: Vec<String>,
    json_columns: Vec<bool>,
    line: Vec<u8>,
    rows: u64,
    ts_buf: String,
}

impl TextPart {
    fn new(
        pending: PendingFile,
        mut out: HashingWriter,
        schema: &SchemaRef,
        columns: &[ColumnSpec],
        kind: TextKind,
    ) -> Result<Self, CoreError> {
        if columns.len() != schema.fields().len() {
            return Err(CoreError::Data(
                "the column list does not match the part's schema".into(),
            ));
        }
        let json_columns = columns
            .iter()
            .map(|c| c.data_type == ColumnType::Json)
            .collect();
        let mut keys = Vec::new();
        match kind {
            TextKind::Jsonl => {
                keys = columns
                    .iter()
                    .map(|c| format!("{}:", crate::value::json_quote(&c.name)))
                    .collect();
            }
            TextKind::Csv => {
                let mut header = Vec::new();
                for (i, c) in columns.iter().enumerate() {
                    if i > 0 {
                        header.push(b',');
                    }
                    csv_field(&mut header, &c.name);
                }
                header.extend_from_slice(b"\r\n");
                out.write_all(&header)
                    .map_err(io_err("write", &pending.tmp_path))?;
            }
        }
        Ok(TextPart {
            pending,
            out,
            kind,
            width: columns.len(),
            keys,
            json_columns,
            line: Vec::with_capacity(4096),
            rows: 0,
            ts_buf: String::new(),
        })
    }
}

/// A column of a batch, downcast once per batch.
enum Col<'a> {
    Text(&'a arrow_array::StringArray),
    Int(&'a arrow_array::PrimitiveArray<Int64Type>),
    Float(&'a arrow_array::PrimitiveArray<Float64Type>),
    Bool(&'a arrow_array::BooleanArray),
    Micros(&'a arrow_array::PrimitiveArray<TimestampMicrosecondType>),
}

impl Col<'_> {
    fn is_null(&self, row: usize) -> bool {
        match self {
            Col::Text(a) => a.is_null(row),
            Col::Int(a) => a.is_null(row),
            Col::Float(a) => a.is_null(row),
            Col::Bool(a) => a.is_null(row),
            Col::Micros(a) => a.is_null(row),
        }
    }
}

fn downcast(array: &dyn Array) -> Result<Col<'_>, CoreError> {
    Ok(match array.data_type() {
        DataType::Utf8 => Col::Text(array.as_string::<i32>()),
        DataType::Int64 => Col::Int(array.as_primitive::<Int64Type>()),
        DataType::Float64 => Col::Float(array.as_primitive::<Float64Type>()),
        DataType::Boolean => Col::Bool(array.as_boolean()),
        DataType::Timestamp(_, _) => Col::Micros(array.as_primitive::<TimestampMicrosecondType>()),
        other => {
            return Err(CoreError::Data(format!(
                "cannot write a column of type {other} as text"
            )));
        }
    })
}

impl PartWriter for TextPart {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), CoreError> {
        let cols = batch
            .columns()
            .iter()
            .map(|a| downcast(a.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if cols.len() != self.width {
            return Err(CoreError::Data(
                "a batch does not match the part's schema".into(),
            ));
        }
        let mut ib = itoa::Buffer::new();
        let mut rb = ryu::Buffer::new();
        for row in 0..batch.num_rows() {
            let line = &mut self.line;
            line.clear();
            let mut first = true;
            if self.kind == TextKind::Jsonl {
                line.push(b'{');
            }
            for (c, col) in cols.iter().enumerate() {
                let is_null = col.is_null(row);
                match self.kind {
                    TextKind::Jsonl => {
                        if is_null {
                            continue;
                        }
                        if !first {
                            line.push(b',');
                        }
                        line.extend_from_slice(self.keys[c].as_bytes());
                    }
                    TextKind::Csv => {
                        if !first {
                            line.push(b',');
                        }
                        if is_null {
                            first = false;
                            continue;
                        }
                    }
                }
                first = false;
                match col {
                    Col::Text(a) => {
                        let s = a.value(row);
                        match (self.kind, self.json_columns[c]) {
                            (TextKind::Jsonl, true) => line.extend_from_slice(s.as_bytes()),
                            (TextKind::Jsonl, false) => json_string(line, s),
                            (TextKind::Csv, _) => csv_field(line, s),
                        }
                    }
                    Col::Int(a) => line.extend_from_slice(ib.format(a.value(row)).as_bytes()),
                    Col::Float(a) => {
                        line.extend_from_slice(rb.format_finite(a.value(row)).as_bytes())
                    }
                    Col::Bool(a) => {
                        line.extend_from_slice(if a.value(row) { b"true" } else { b"false" })
                    }
                    Col::Micros(a) => {
                        self.ts_buf.clear();
                        format_timestamp(a.value(row), &mut self.ts_buf);
                        if self.kind == TextKind::Jsonl {
                            line.push(b'"');
                            line.extend_from_slice(self.ts_buf.as_bytes());
                            line.push(b'"');
                        } else {
                            line.extend_from_slice(self.ts_buf.as_bytes());
                        }
                    }
                }
            }
            match self.kind {
                TextKind::Jsonl => line.extend_from_slice(b"}\n"),
                TextKind::Csv => line.extend_from_slice(b"\r\n"),
            }
            self.out
                .write_all(line)
                .map_err(io_err("write", &self.pending.tmp_path))?;
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn rows(&self) -> u64 {
        self.rows
    }

    fn finish(self: Box<Self>) -> Result<PartFile, CoreError> {
        let TextPart {
            pending, out, rows, ..
        } = *self;
        pending.commit(out, rows)
    }
}

/// Appends `s` as a JSON string literal.
fn json_string(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends `s` as a CSV field, quoted when RFC 4180 requires it and when empty (so that an
/// empty string differs from a null, which is an empty unquoted field).
fn csv_field(out: &mut Vec<u8>, s: &str) {
    let needs_quotes = s.is_empty() || s.bytes().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'));
    if !needs_quotes {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    out.push(b'"');
    for b in s.bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// Writes the batches of one table into parts named `<prefix>-<n>.<ext>` in `dir`, rolling to a
/// new part when the schema widens or a part is full.
pub struct TableWriter {
    store: Arc<dyn PartStore>,
    prefix: String,
    options: WriterOptions,
    next_index: u32,
    /// Appended to every part's name (`<prefix>-<n>-<token>.<ext>`), when set.
    token: Option<String>,
    /// The directory (inside the store) new parts go to, when set (`date=2026-12-01`).
    directory: Option<String>,
    current: Option<(Box<dyn PartWriter>, SchemaRef)>,
    /// Columns that some wide part's first batch held densely (see [`WIDE_PART_COLUMNS`]).
    /// Later parts compress them from their start, whatever their own first batch holds: a
    /// column whose density hovers near [`COMPRESS_FROM_BYTES_PER_ROW`] was otherwise left
    /// uncompressed by the first batch of a part now and then and closed that part one batch
    /// later (1 M wide events: 11 of 29 parts held one or two row groups).
    dense: HashSet<String>,
}

impl std::fmt::Debug for TableWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableWriter")
            .field("store", &self.store)
            .field("prefix", &self.prefix)
            .field("next_index", &self.next_index)
            .finish()
    }
}

impl TableWriter {
    /// A writer for parts in the local directory `dir` named `<prefix>-00001.<ext>`, ... The
    /// directory is created (if missing) when the first part opens: a writer that writes
    /// nothing leaves no trace.
    pub fn new(
        dir: impl Into<PathBuf>,
        prefix: impl Into<String>,
        options: WriterOptions,
    ) -> Result<Self, CoreError> {
        Ok(TableWriter::with_store(
            Arc::new(LocalDir::new(dir)),
            prefix,
            options,
        ))
    }

    /// A writer for parts in `store`, named as [`TableWriter::new`] names them.
    pub fn with_store(
        store: Arc<dyn PartStore>,
        prefix: impl Into<String>,
        options: WriterOptions,
    ) -> Self {
        TableWriter {
            store,
            prefix: prefix.into(),
            options,
            next_index: 1,
            token: None,
            directory: None,
            current: None,
            dense: HashSet::new(),
        }
    }

    /// Names parts `<prefix>-<n>-<token>.<ext>`: on an object store, where a run whose lease
    /// has expired may still be uploading, a name no other run can choose means no upload
    /// ever replaces another run's part.
    pub fn with_name_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Puts the parts opened from now on in `directory` inside the store (`None`: at its
    /// top). A part open in another directory is closed first and returned.
    pub fn set_directory(
        &mut self,
        directory: Option<String>,
    ) -> Result<Option<PartFile>, CoreError> {
        if directory == self.directory {
            return Ok(None);
        }
        self.directory = directory;
        self.close_part()
    }

    /// Writes a batch. `columns` are the table's column specs in the batch's column order.
    /// Returns the part that was closed to make room, if any.
    pub fn write(
        &mut self,
        batch: &RecordBatch,
        columns: &[ColumnSpec],
    ) -> Result<Option<PartFile>, CoreError> {
        let mut closed = None;
        let roll = match &self.current {
            Some((part, schema)) => {
                schema.fields().len() != batch.schema().fields().len()
                    || part.rows() >= self.options.max_part_rows
                    || !part.suits(batch)
            }
            None => false,
        };
        if roll {
            closed = self.close_part()?;
        }
        if self.current.is_none() {
            let schema = batch.schema();
            let name = self.part_name();
            self.next_index += 1;
            let sparse = self.sparse_and_never_dense(batch);
            let part = open_part(
                self.store.as_ref(),
                &name,
                schema.clone(),
                columns,
                &self.options,
                Some(batch),
                sparse,
            )?;
            self.current = Some((part, schema));
        }
        if let Some((part, _)) = &mut self.current {
            part.write(batch)?;
        }
        Ok(closed)
    }

    /// The columns a part opening with `batch` leaves uncompressed: sparse in `batch` and in
    /// the first batch of every wide part before it. Remembers the columns `batch` holds
    /// densely.
    fn sparse_and_never_dense(&mut self, batch: &RecordBatch) -> Vec<usize> {
        if self.options.format != PartFormat::Parquet || batch.num_columns() <= WIDE_PART_COLUMNS {
            return Vec::new();
        }
        let sparse = sparse_columns(batch);
        let schema = batch.schema();
        for (i, field) in schema.fields().iter().enumerate() {
            if sparse.binary_search(&i).is_err() && !self.dense.contains(field.name()) {
                self.dense.insert(field.name().clone());
            }
        }
        sparse
            .into_iter()
            .filter(|&i| !self.dense.contains(schema.field(i).name()))
            .collect()
    }

    /// The name of the next part: `[<directory>/]<prefix>-<n>[-<token>].<ext>`.
    fn part_name(&self) -> String {
        let mut name = String::new();
        if let Some(dir) = &self.directory {
            name.push_str(dir);
            name.push('/');
        }
        name.push_str(&format!("{}-{:05}", self.prefix, self.next_index));
        if let Some(token) = &self.token {
            name.push('-');
            name.push_str(token);
        }
        name.push('.');
        name.push_str(self.options.format.extension());
        name
    }

    /// Numbers the next part `index` instead of 1, so a table's parts keep unique names across
    /// runs (the extractor passes the sequence number its state records).
    pub fn starting_at(mut self, index: u32) -> Self {
        self.next_index = index.max(1);
        self
    }

    /// The number the next part will get.
    pub fn next_index(&self) -> u32 {
        self.next_index
    }

    /// Rows in the open part.
    pub fn open_rows(&self) -> u64 {
        self.current.as_ref().map_or(0, |(p, _)| p.rows())
    }

    /// Closes the open part, if any, and returns it.
    pub fn close_part(&mut self) -> Result<Option<PartFile>, CoreError> {
        match self.current.take() {
            Some((part, _)) => part.finish().map(Some),
            None => Ok(None),
        }
    }
}
