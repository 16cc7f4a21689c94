//! Reading back the keyset of part files this crate wrote: each row's id and incremental time.
//!
//! A run that re-extracts the range of a lost part must not write again the rows other parts
//! already hold (late events re-read inside a lookback land in a later part whose range overlaps
//! the lost one). It learns them from the files themselves, in any of the three formats, one
//! row at a time: nothing but the two key columns is decoded, and no file is held whole.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::{CoreError, PartFormat, UnixMicros, parse_timestamp};

/// Rows decoded per Parquet batch: small, so memory stays flat whatever the part's size.
const PARQUET_BATCH_ROWS: usize = 8_192;

/// Calls `visit(id, time)` for every row of the part at `path`, in file order. The format is
/// the file's extension (`.parquet`, `.jsonl`, `.csv`); `id_column` holds a UUID as text and
/// `time_column` a timestamp (Parquet: microseconds; JSONL and CSV: RFC 3339 text).
///
/// Returns the number of rows read. A file cut short at a row boundary reads as fewer rows
/// without an error (JSONL and CSV cannot tell), so a caller that knows what the part held
/// compares the count, or the file's [`file_sha256`], with its record.
///
/// Errors name the file and what is wrong: an unknown extension, a missing key column, a row
/// whose id is not a UUID or whose time is missing or not a timestamp, a file that does not
/// parse.
pub fn for_each_part_key(
    path: &Path,
    id_column: &str,
    time_column: &str,
    mut visit: impl FnMut(Uuid, UnixMicros),
) -> Result<u64, CoreError> {
    let format = format_of(path)?;
    let file = File::open(path).map_err(|source| CoreError::Io {
        op: "open the part",
        path: path.to_path_buf(),
        source,
    })?;
    let keys = Keys {
        path,
        id_column,
        time_column,
    };
    match format {
        PartFormat::Parquet => keys.parquet(file, &mut visit),
        PartFormat::Jsonl => keys.jsonl(file, &mut visit),
        PartFormat::Csv => keys.csv(file, &mut visit),
    }
}

fn format_of(path: &Path) -> Result<PartFormat, CoreError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("parquet") => Ok(PartFormat::Parquet),
        Some("jsonl") => Ok(PartFormat::Jsonl),
        Some("csv") => Ok(PartFormat::Csv),
        _ => Err(CoreError::Data(format!(
            "{}: not a part file (expected .parquet, .jsonl or .csv)",
            path.display()
        ))),
    }
}

/// The columns to read and the file they are read from (for messages).
struct Keys<'a> {
    path: &'a Path,
    id_column: &'a str,
    time_column: &'a str,
}

impl Keys<'_> {
    fn bad(&self, row: u64, what: &str) -> CoreError {
        CoreError::Data(format!("{} row {row}: {what}", self.path.display()))
    }

    fn row(
        &self,
        row: u64,
        id: Option<&str>,
        time: Option<UnixMicros>,
    ) -> Result<(Uuid, UnixMicros), CoreError> {
        let id = id.ok_or_else(|| self.bad(row, &format!("no {}", self.id_column)))?;
        let id = Uuid::parse_str(id)
            .map_err(|_| self.bad(row, &format!("{} {id:?} is not a UUID", self.id_column)))?;
        let time =
            time.ok_or_else(|| self.bad(row, &format!("no {} timestamp", self.time_column)))?;
        Ok((id, time))
    }

    fn parquet(
        &self,
        file: File,
        visit: &mut dyn FnMut(Uuid, UnixMicros),
    ) -> Result<u64, CoreError> {
        let parquet = |source| CoreError::Parquet {
            op: "read",
            path: self.path.to_path_buf(),
            source,
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet)?;
        let columns = builder.parquet_schema();
        let mask = ProjectionMask::columns(columns, [self.id_column, self.time_column]);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(PARQUET_BATCH_ROWS)
            .build()
            .map_err(parquet)?;
        let mut row = 0u64;
        for batch in reader {
            let batch = batch.map_err(|source| CoreError::Arrow {
                op: "decode a record batch of",
                path: Some(self.path.to_path_buf()),
                source,
            })?;
            let ids = self.column(&batch, self.id_column)?;
            let times = self.column(&batch, self.time_column)?;
            let (DataType::Utf8, DataType::Timestamp(_, _)) = (ids.data_type(), times.data_type())
            else {
                return Err(CoreError::Data(format!(
                    "{}: {} is {} and {} is {}; expected text and a timestamp",
                    self.path.display(),
                    self.id_column,
                    ids.data_type(),
                    self.time_column,
                    times.data_type()
                )));
            };
            let ids = ids.as_string::<i32>();
            let times = times.as_primitive::<TimestampMicrosecondType>();
            for i in 0..batch.num_rows() {
                let id = ids.is_valid(i).then(|| ids.value(i));
                let time = times.is_valid(i).then(|| times.value(i));
                let (id, time) = self.row(row, id, time)?;
                visit(id, time);
                row += 1;
            }
        }
        Ok(row)
    }

    fn column<'b>(&self, batch: &'b RecordBatch, name: &str) -> Result<&'b dyn Array, CoreError> {
        batch
            .column_by_name(name)
            .map(|c| c.as_ref())
            .ok_or_else(|| CoreError::Data(format!("{}: no column {name}", self.path.display())))
    }

    fn jsonl(&self, file: File, visit: &mut dyn FnMut(Uuid, UnixMicros)) -> Result<u64, CoreError> {
        let mut lines = BufReader::new(file);
        let mut line = String::new();
        let mut row = 0u64;
        loop {
            line.clear();
            let read = lines.read_line(&mut line).map_err(|source| CoreError::Io {
                op: "read the part",
                path: self.path.to_path_buf(),
                source,
            })?;
            if read == 0 {
                return Ok(row);
            }
            if line.trim().is_empty() {
                continue;
            }
            // Keys may hold escapes, so they are owned; values stay borrowed and undecoded.
            let object: HashMap<Cow<'_, str>, &RawValue> =
                serde_json::from_str(&line).map_err(|source| CoreError::Json {
                    what: format!("{} row {row}: not a JSON object", self.path.display()),
                    source,
                })?;
            let text = |name: &str| {
                object
                    .get(name)
                    .and_then(|raw| serde_json::from_str::<&str>(raw.get()).ok())
            };
            let (id, time) = self.row(
                row,
                text(self.id_column),
                text(self.time_column).and_then(parse_timestamp),
            )?;
            visit(id, time);
            row += 1;
        }
    }

    fn csv(&self, file: File, visit: &mut dyn FnMut(Uuid, UnixMicros)) -> Result<u64, CoreError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(file);
        let csv_error = |source| CoreError::Csv {
            path: self.path.to_path_buf(),
            source,
        };
        let headers = reader.headers().map_err(csv_error)?.clone();
        let position = |name: &str| {
            headers.iter().position(|h| h == name).ok_or_else(|| {
                CoreError::Data(format!("{}: no column {name}", self.path.display()))
            })
        };
        let (id_at, time_at) = (position(self.id_column)?, position(self.time_column)?);
        let mut record = csv::StringRecord::new();
        let mut row = 0u64;
        while reader.read_record(&mut record).map_err(csv_error)? {
            let id = record.get(id_at).filter(|s| !s.is_empty());
            let time = record.get(time_at).and_then(parse_timestamp);
            let (id, time) = self.row(row, id, time)?;
            visit(id, time);
            row += 1;
        }
        Ok(row)
    }
}

/// The lowercase hex SHA-256 of the file at `path`, read in chunks: what
/// [`crate::PartFile::sha256`] recorded when the part was written.
pub fn file_sha256(path: &Path) -> Result<String, CoreError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;

    let io = |source| CoreError::Io {
        op: "read the part",
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut chunk).map_err(io)?;
        if n == 0 {
            return Ok(format!("{:x}", hasher.finalize()));
        }
        hasher.update(&chunk[..n]);
    }
}
