//! Reading what a run left: part files in any of the three formats, read "union by name" into
//! one list of rows (a missing column is a null), the state file, and the part sets (named by
//! the state, present on disk, temporary leftovers).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// One non-null cell as the file holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Parquet UTF-8, or a CSV field (quoted or not; an unquoted empty field is a null).
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Parquet Timestamp(µs): microseconds since the epoch.
    Micros(i64),
    /// A JSONL value, as JSON.
    Json(Value),
}

impl Cell {
    /// The cell as text, for string columns in any format.
    pub fn text(&self) -> Option<&str> {
        match self {
            Cell::Text(s) => Some(s),
            Cell::Json(Value::String(s)) => Some(s),
            _ => None,
        }
    }
}

/// One row: its non-null cells by column name.
#[derive(Debug, Default)]
pub struct Row {
    pub part: usize,
    pub cells: HashMap<Arc<str>, Cell>,
}

impl Row {
    pub fn get(&self, column: &str) -> Option<&Cell> {
        self.cells.get(column)
    }
}

/// Every row of a set of parts, read as one table.
#[derive(Debug, Default)]
pub struct TableRows {
    pub rows: Vec<Row>,
    pub parts: Vec<PathBuf>,
    /// Rows per part, in `parts` order.
    pub part_rows: Vec<u64>,
    /// Parquet: each column's Arrow type (must be the same in every part).
    pub arrow_types: BTreeMap<String, DataType>,
    /// Things found wrong while reading (type drift between parts, bad timestamp type…).
    pub problems: Vec<String>,
}

/// Reads `parts` (format by extension) union by name; with `only`, Parquet parts are read for
/// those columns alone (fast).
pub fn read_parts_only(parts: &[PathBuf], only: Option<&[&str]>) -> anyhow::Result<TableRows> {
    let mut table = TableRows::default();
    let mut names: HashMap<String, Arc<str>> = HashMap::new();
    for (i, path) in parts.iter().enumerate() {
        let before = table.rows.len();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match ext {
            "parquet" => read_parquet(path, i, only, &mut table, &mut names),
            "jsonl" => read_jsonl(path, i, &mut table, &mut names),
            "csv" => read_csv(path, i, &mut table, &mut names),
            other => bail!("{}: unknown part extension `{other}`", path.display()),
        }
        .with_context(|| format!("reading {}", path.display()))?;
        table.parts.push(path.clone());
        table.part_rows.push((table.rows.len() - before) as u64);
    }
    Ok(table)
}

fn intern(names: &mut HashMap<String, Arc<str>>, name: &str) -> Arc<str> {
    if let Some(n) = names.get(name) {
        return n.clone();
    }
    let n: Arc<str> = Arc::from(name);
    names.insert(name.to_owned(), n.clone());
    n
}

fn read_parquet(
    path: &Path,
    part: usize,
    only: Option<&[&str]>,
    table: &mut TableRows,
    names: &mut HashMap<String, Arc<str>>,
) -> anyhow::Result<()> {
    let file = File::open(path)?;
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    if let Some(columns) = only {
        let mask = ProjectionMask::columns(builder.parquet_schema(), columns.iter().copied());
        builder = builder.with_projection(mask);
    }
    let reader = builder.build()?;
    for batch in reader {
        let batch: RecordBatch = batch?;
        let schema = batch.schema();
        let start = table.rows.len();
        table.rows.extend((0..batch.num_rows()).map(|_| Row {
            part,
            cells: HashMap::new(),
        }));
        for (field, array) in schema.fields().iter().zip(batch.columns()) {
            let name = intern(names, field.name());
            let dt = field.data_type().clone();
            match table.arrow_types.get(field.name()) {
                Some(seen) if *seen != dt => table.problems.push(format!(
                    "column `{}` is {seen} in one part and {dt} in {}",
                    field.name(),
                    path.display()
                )),
                Some(_) => {}
                None => {
                    table.arrow_types.insert(field.name().clone(), dt.clone());
                }
            }
            let array = array.as_ref();
            for row in 0..batch.num_rows() {
                if array.is_null(row) {
                    continue;
                }
                let cell = match &dt {
                    DataType::Utf8 => Cell::Text(array.as_string::<i32>().value(row).to_owned()),
                    DataType::LargeUtf8 => {
                        Cell::Text(array.as_string::<i64>().value(row).to_owned())
                    }
                    DataType::Utf8View => Cell::Text(array.as_string_view().value(row).to_owned()),
                    DataType::Int64 => Cell::Int(array.as_primitive::<Int64Type>().value(row)),
                    DataType::Float64 => {
                        Cell::Float(array.as_primitive::<Float64Type>().value(row))
                    }
                    DataType::Boolean => Cell::Bool(array.as_boolean().value(row)),
                    DataType::Timestamp(TimeUnit::Microsecond, _) => {
                        Cell::Micros(array.as_primitive::<TimestampMicrosecondType>().value(row))
                    }
                    other => bail!("column `{}` has unexpected type {other}", field.name()),
                };
                table.rows[start + row].cells.insert(name.clone(), cell);
            }
        }
    }
    Ok(())
}

fn read_jsonl(
    path: &Path,
    part: usize,
    table: &mut TableRows,
    names: &mut HashMap<String, Arc<str>>,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            table
                .problems
                .push(format!("{}: line {} is empty", path.display(), i + 1));
            continue;
        }
        let value: Value =
            serde_json::from_str(line).with_context(|| format!("line {} is not JSON", i + 1))?;
        let Value::Object(map) = value else {
            bail!("line {} is not a JSON object", i + 1);
        };
        let mut row = Row {
            part,
            cells: HashMap::with_capacity(map.len()),
        };
        for (k, v) in map {
            if v.is_null() {
                table.problems.push(format!(
                    "{}: line {} writes null for `{k}` (nulls are omitted)",
                    path.display(),
                    i + 1
                ));
                continue;
            }
            row.cells.insert(intern(names, &k), Cell::Json(v));
        }
        table.rows.push(row);
    }
    Ok(())
}

fn read_csv(
    path: &Path,
    part: usize,
    table: &mut TableRows,
    names: &mut HashMap<String, Arc<str>>,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(path)?;
    let text = std::str::from_utf8(&bytes).context("not UTF-8")?;
    let records = parse_csv(text)?;
    let mut records = records.into_iter();
    let header = records.next().context("no header line")?;
    let header: Vec<Arc<str>> = header
        .into_iter()
        .map(|f| intern(names, f.as_deref().unwrap_or("")))
        .collect();
    for (i, record) in records.enumerate() {
        if record.len() != header.len() {
            bail!(
                "record {} has {} fields, the header {}",
                i + 2,
                record.len(),
                header.len()
            );
        }
        let mut row = Row {
            part,
            cells: HashMap::new(),
        };
        for (name, field) in header.iter().zip(record) {
            if let Some(s) = field {
                row.cells.insert(name.clone(), Cell::Text(s));
            }
        }
        table.rows.push(row);
    }
    Ok(())
}

/// RFC 4180: records of fields; `None` for an unquoted empty field (a null), `Some("")` for
/// `""`. Records end with CRLF (a bare LF is accepted too).
pub fn parse_csv(text: &str) -> anyhow::Result<Vec<Vec<Option<String>>>> {
    let mut records = Vec::new();
    let mut record: Vec<Option<String>> = Vec::new();
    let mut chars = text.chars().peekable();
    let mut at_record_start = true;
    loop {
        if chars.peek().is_none() {
            if !at_record_start {
                records.push(std::mem::take(&mut record));
            }
            return Ok(records);
        }
        at_record_start = false;
        // One field.
        let field = if chars.peek() == Some(&'"') {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        s.push('"');
                    }
                    Some('"') => break,
                    Some(c) => s.push(c),
                    None => bail!("unterminated quoted field"),
                }
            }
            Some(s)
        } else {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if matches!(c, ',' | '\r' | '\n') {
                    break;
                }
                if c == '"' {
                    bail!("a quote inside an unquoted field");
                }
                s.push(c);
                chars.next();
            }
            (!s.is_empty()).then_some(s)
        };
        record.push(field);
        match chars.next() {
            Some(',') => {}
            Some('\r') => {
                if chars.next() != Some('\n') {
                    bail!("CR without LF");
                }
                records.push(std::mem::take(&mut record));
                at_record_start = true;
            }
            Some('\n') => {
                records.push(std::mem::take(&mut record));
                at_record_start = true;
            }
            None => {
                records.push(std::mem::take(&mut record));
                return Ok(records);
            }
            Some(c) => bail!("unexpected `{c}` after a field"),
        }
    }
}

/// The state file as JSON.
pub fn load_state(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// A part the state names.
#[derive(Debug, Clone)]
pub struct StatePart {
    pub path: PathBuf,
    pub rows: Option<u64>,
    pub sha256: Option<String>,
    pub bytes: Option<u64>,
}

/// Which parts exist and which are committed.
#[derive(Debug, Default)]
pub struct PartSets {
    /// Named by `state.json` (`<table>.parts[].file`, relative to the table directory).
    pub in_state: Vec<StatePart>,
    /// Whether the state has a `parts` list at all.
    pub state_has_parts: bool,
    /// `part-*` files in the table directory and in its `date=YYYY-MM-DD` directories
    /// (`output.partition_by: day`).
    pub on_disk: BTreeSet<PathBuf>,
    /// Hidden or temporary files in the table directory or its day directories (an unfinished
    /// part, an object store's `_lease` after the run, an empty day directory…), the table
    /// lock and the manifest aside.
    pub leftovers: Vec<PathBuf>,
    /// The table lock `<table>/.lock`'s content (the state file that owns the table), when
    /// the file exists.
    pub lock: Option<String>,
    /// `<table>/_manifest.json`, when it exists.
    pub manifest: Option<PathBuf>,
}

impl PartSets {
    pub fn state_paths(&self) -> BTreeSet<PathBuf> {
        self.in_state.iter().map(|p| p.path.clone()).collect()
    }
}

/// The table lock in a table directory: kept there for good, it records the state file
/// that owns the table.
pub const LOCK_FILE: &str = ".lock";

/// The manifest of the committed parts a run rewrites after each commit.
pub const MANIFEST_FILE: &str = "_manifest.json";

/// A Hive day directory of `output.partition_by: day`: `date=YYYY-MM-DD`.
pub fn is_day_dir(name: &str) -> bool {
    name.strip_prefix("date=").is_some_and(|d| {
        d.len() == 10
            && d.bytes().enumerate().all(|(i, b)| {
                if i == 4 || i == 7 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            })
    })
}

pub fn part_sets(state: Option<&Value>, table_dir: &Path, table: &str) -> anyhow::Result<PartSets> {
    let mut sets = PartSets::default();
    if let Some(parts) = state.and_then(|s| s[table]["parts"].as_array()) {
        sets.state_has_parts = true;
        for p in parts {
            let file = p["file"]
                .as_str()
                .with_context(|| format!("a state part without `file`: {p}"))?;
            sets.in_state.push(StatePart {
                path: table_dir.join(file),
                rows: p["rows"].as_u64(),
                sha256: p["sha256"].as_str().map(str::to_owned),
                bytes: p["bytes"].as_u64(),
            });
        }
    }
    if table_dir.is_dir() {
        for entry in std::fs::read_dir(table_dir)
            .with_context(|| format!("listing {}", table_dir.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_day_dir(&name) && entry.file_type()?.is_dir() {
                day_dir_parts(&entry.path(), &mut sets)?;
            } else if is_part_file(&name) {
                sets.on_disk.insert(entry.path());
            } else if name == LOCK_FILE {
                let path = entry.path();
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                sets.lock = Some(text);
            } else if name == MANIFEST_FILE {
                sets.manifest = Some(entry.path());
            } else {
                sets.leftovers.push(entry.path());
            }
        }
    }
    sets.leftovers.sort();
    Ok(sets)
}

fn is_part_file(name: &str) -> bool {
    name.starts_with("part-") && !name.contains(".tmp")
}

/// The parts of one `date=…` directory into `sets`; anything else there, or the directory
/// itself when empty, is a leftover.
fn day_dir_parts(dir: &Path, sets: &mut PartSets) -> anyhow::Result<()> {
    let mut empty = true;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        empty = false;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_part_file(&name) && entry.file_type()?.is_file() {
            sets.on_disk.insert(entry.path());
        } else {
            sets.leftovers.push(entry.path());
        }
    }
    if empty {
        sets.leftovers.push(dir.to_path_buf());
    }
    Ok(())
}

/// SHA-256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let digest = Sha256::digest(&bytes);
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// Every file under `dir`, recursively.
pub fn all_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::parse_csv;

    #[test]
    fn csv_nulls_quotes_and_newlines() {
        let text = "a,b,c\r\n,\"\",\"x,\"\"y\"\"\r\nz\"\r\n1,2,3\n";
        let records = parse_csv(text).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(
            records[1],
            vec![None, Some(String::new()), Some("x,\"y\"\r\nz".to_owned())]
        );
        assert_eq!(
            records[2],
            vec![Some("1".into()), Some("2".into()), Some("3".into())]
        );
        assert!(parse_csv("a,\"b\n").is_err());
    }
}
