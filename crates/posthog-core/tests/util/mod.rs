//! Shared by the round-trip tests: PostHog-shaped pages, the pipeline, and readers that recover
//! source values from each output format under the documented type rule.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use posthog_core::{
    BatchBuilder, ColumnSpec, ColumnType, FieldSpec, FlattenMode, PartFile, PartFormat, QueryPage,
    TableWriter, WriterOptions, format_timestamp,
};
use serde_json::Value;
use serde_json::value::RawValue;

/// One source event as PostHog's HogQL would return it.
#[derive(Debug, Clone)]
pub struct Event {
    pub uuid: String,
    pub event: String,
    pub timestamp_micros: i64,
    pub distinct_id: String,
    /// The exact JSON text of `properties` (an object, or something odd).
    pub properties: String,
}

/// The columns an events extraction selects.
pub fn event_fields() -> Vec<FieldSpec> {
    vec![
        FieldSpec::fixed("uuid", ColumnType::Utf8),
        FieldSpec::fixed("event", ColumnType::Utf8),
        FieldSpec::fixed("timestamp", ColumnType::Timestamp),
        FieldSpec::fixed("distinct_id", ColumnType::Utf8),
        FieldSpec::flatten("properties"),
    ]
}

/// A HogQL response body for `events`, properties as a JSON string inside each row.
pub fn page_body(events: &[Event]) -> String {
    let mut out = String::from(
        r#"{"columns":["uuid","event","timestamp","distinct_id","properties"],"types":[],"results":["#,
    );
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let mut ts = String::new();
        format_timestamp(e.timestamp_micros, &mut ts);
        out.push('[');
        out.push_str(&serde_json::to_string(&e.uuid).unwrap());
        out.push(',');
        out.push_str(&serde_json::to_string(&e.event).unwrap());
        out.push(',');
        out.push_str(&serde_json::to_string(&ts).unwrap());
        out.push(',');
        out.push_str(&serde_json::to_string(&e.distinct_id).unwrap());
        out.push(',');
        // The properties text goes in as a JSON string. serde_json would refuse to encode a
        // lone surrogate, but our text only ever holds it as an escape sequence, so plain
        // string escaping keeps it intact.
        out.push_str(&serde_json::to_string(&e.properties).unwrap());
        out.push(']');
    }
    out.push_str(r#"],"hasMore":false}"#);
    out
}

/// Runs pages through the builder and a table writer; returns the parts and the final columns.
pub fn write_pages(
    dir: &Path,
    pages: &[Vec<Event>],
    format: PartFormat,
    batch_rows: usize,
) -> (Vec<PartFile>, Vec<ColumnSpec>) {
    let mut builder = BatchBuilder::new(&event_fields(), FlattenMode::Flatten, &[]).unwrap();
    let options = WriterOptions {
        format,
        row_group_rows: batch_rows,
        ..WriterOptions::default()
    };
    let mut writer = TableWriter::new(dir, "part-00000001", options).unwrap();
    let mut parts = Vec::new();
    let mut flush = |builder: &mut BatchBuilder, writer: &mut TableWriter| {
        if let Some(batch) = builder.finish_batch().unwrap() {
            let specs = builder.schema().to_specs();
            if let Some(p) = writer.write(&batch, &specs).unwrap() {
                parts.push(p);
            }
        }
    };
    for events in pages {
        let body = page_body(events);
        let page = QueryPage::parse(body.as_bytes()).unwrap();
        for row in &page.results {
            builder.append_array_row(row).unwrap();
            if builder.len() >= batch_rows {
                flush(&mut builder, &mut writer);
            }
        }
    }
    flush(&mut builder, &mut writer);
    if let Some(p) = writer.close_part().unwrap() {
        parts.push(p);
    }
    (parts, builder.schema().to_specs())
}

/// A recovered cell: what a reader sees in one column of one row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Micros(i64),
}

/// Rows of all Parquet parts, as column name → cell.
pub fn read_parquet(parts: &[PartFile]) -> Vec<BTreeMap<String, Cell>> {
    let mut rows = Vec::new();
    for part in parts {
        let file = fs::File::open(&part.path).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            rows.extend(batch_rows(&batch.unwrap()));
        }
    }
    rows
}

fn batch_rows(batch: &RecordBatch) -> Vec<BTreeMap<String, Cell>> {
    let schema = batch.schema();
    (0..batch.num_rows())
        .map(|r| {
            schema
                .fields()
                .iter()
                .zip(batch.columns())
                .map(|(f, a)| {
                    let cell = if a.is_null(r) {
                        Cell::Null
                    } else {
                        match a.data_type() {
                            DataType::Utf8 => Cell::Text(a.as_string::<i32>().value(r).to_owned()),
                            DataType::Int64 => Cell::Int(a.as_primitive::<Int64Type>().value(r)),
                            DataType::Float64 => {
                                Cell::Float(a.as_primitive::<Float64Type>().value(r))
                            }
                            DataType::Boolean => Cell::Bool(a.as_boolean().value(r)),
                            DataType::Timestamp(_, _) => {
                                Cell::Micros(a.as_primitive::<TimestampMicrosecondType>().value(r))
                            }
                            other => panic!("unexpected column type {other}"),
                        }
                    };
                    (f.name().clone(), cell)
                })
                .collect()
        })
        .collect()
}

/// Column name → type.
pub fn column_types(columns: &[ColumnSpec]) -> BTreeMap<&str, ColumnType> {
    columns
        .iter()
        .map(|c| (c.name.as_str(), c.data_type))
        .collect()
}

/// Rows of all JSONL parts. JSON columns are embedded as JSON, so their cell is the value's
/// compact source text.
pub fn read_jsonl(parts: &[PartFile], columns: &[ColumnSpec]) -> Vec<BTreeMap<String, Cell>> {
    let types = column_types(columns);
    let mut rows = Vec::new();
    for part in parts {
        let text = fs::read_to_string(&part.path).unwrap();
        for line in text.lines() {
            // RawValue keeps each value's text, lone surrogate escapes included.
            let obj: BTreeMap<String, Box<RawValue>> = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("bad JSONL line {line:?}: {e}"));
            let mut row = BTreeMap::new();
            for (name, raw) in obj {
                let ty = types[name.as_str()];
                let raw = raw.get();
                let cell = match ty {
                    ColumnType::Json => Cell::Text(raw.to_owned()),
                    ColumnType::Utf8 => Cell::Text(serde_json::from_str(raw).unwrap()),
                    ColumnType::Int64 => Cell::Int(raw.parse().unwrap()),
                    ColumnType::Float64 => Cell::Float(raw.parse().unwrap()),
                    ColumnType::Boolean => Cell::Bool(raw == "true"),
                    ColumnType::Timestamp => {
                        let s: String = serde_json::from_str(raw).unwrap();
                        Cell::Micros(posthog_core::parse_timestamp(&s).unwrap())
                    }
                };
                row.insert(name, cell);
            }
            rows.push(row);
        }
    }
    rows
}

/// Rows of all CSV parts, with an RFC 4180 reader that tells a quoted empty field (empty
/// string) from an unquoted one (null).
pub fn read_csv(parts: &[PartFile], columns: &[ColumnSpec]) -> Vec<BTreeMap<String, Cell>> {
    let types = column_types(columns);
    let mut rows = Vec::new();
    for part in parts {
        let text = fs::read_to_string(&part.path).unwrap();
        let mut records = parse_csv(&text).into_iter();
        let header: Vec<String> = records
            .next()
            .unwrap()
            .into_iter()
            .map(|f| f.unwrap())
            .collect();
        for record in records {
            assert_eq!(record.len(), header.len(), "ragged CSV record");
            let mut row = BTreeMap::new();
            for (name, field) in header.iter().zip(record) {
                let cell = match field {
                    None => Cell::Null,
                    Some(s) => match types[name.as_str()] {
                        ColumnType::Utf8 | ColumnType::Json => Cell::Text(s),
                        ColumnType::Int64 => Cell::Int(s.parse().unwrap()),
                        ColumnType::Float64 => Cell::Float(s.parse().unwrap()),
                        ColumnType::Boolean => Cell::Bool(s == "true"),
                        ColumnType::Timestamp => {
                            Cell::Micros(posthog_core::parse_timestamp(&s).unwrap())
                        }
                    },
                };
                row.insert(name.clone(), cell);
            }
            rows.push(row);
        }
    }
    rows
}

/// Records of fields; `None` is an empty unquoted field.
fn parse_csv(text: &str) -> Vec<Vec<Option<String>>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        // start of a field
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
                    None => panic!("unterminated quoted field"),
                }
            }
            Some(s)
        } else {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c == ',' || c == '\r' || c == '\n' {
                    break;
                }
                assert_ne!(c, '"', "quote inside an unquoted field");
                s.push(c);
                chars.next();
            }
            if s.is_empty() { None } else { Some(s) }
        };
        record.push(field);
        match chars.next() {
            Some(',') => continue,
            Some('\r') => {
                assert_eq!(chars.next(), Some('\n'), "CR without LF");
                records.push(std::mem::take(&mut record));
                if chars.peek().is_none() {
                    break;
                }
            }
            None => {
                if record.len() > 1 || record[0].is_some() {
                    records.push(record);
                }
                break;
            }
            Some(c) => panic!("unexpected {c:?} after a field"),
        }
    }
    records
}

/// Normalised JSON for comparison: parsed when serde_json can (numbers compared by value),
/// else the compact text (lone surrogates, out-of-range numbers).
#[derive(Debug, Clone)]
pub enum Norm {
    Value(Value),
    Text(String),
}

impl PartialEq for Norm {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Norm::Value(a), Norm::Value(b)) => json_eq(a, b),
            (Norm::Text(a), Norm::Text(b)) => a == b,
            _ => false,
        }
    }
}

pub fn norm(text: &str) -> Norm {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => Norm::Value(v),
        Err(_) => Norm::Text(posthog_core::value::compact_json(text.trim()).into_owned()),
    }
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        // Numbers compare by exact value: an integer equals a float only if the float is
        // exactly that integer (so 2^53 + 1 never equals its rounded f64).
        (Value::Number(x), Value::Number(y)) => {
            let int = |n: &serde_json::Number| {
                n.as_i64()
                    .map(i128::from)
                    .or_else(|| n.as_u64().map(i128::from))
            };
            let exact = |i: i128, f: Option<f64>| {
                f.is_some_and(|f| f.fract() == 0.0 && f.abs() < 1e38 && f as i128 == i)
            };
            match (int(x), int(y)) {
                (Some(i), Some(j)) => i == j,
                (Some(i), None) => exact(i, y.as_f64()),
                (None, Some(j)) => exact(j, x.as_f64()),
                (None, None) => x.as_f64() == y.as_f64(),
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// The JSON text of a recovered typed cell.
fn cell_json(cell: &Cell, ty: ColumnType) -> Option<String> {
    Some(match cell {
        Cell::Null => return None,
        Cell::Text(s) if ty == ColumnType::Json => s.clone(),
        Cell::Text(s) => serde_json::to_string(s).unwrap(),
        Cell::Int(i) => i.to_string(),
        Cell::Float(f) => format!("{f:?}"),
        Cell::Bool(b) => b.to_string(),
        Cell::Micros(m) => m.to_string(),
    })
}

/// The documented rule, read backwards: each property's value is in its typed column, or in
/// the `__json` sibling, or (when the object could not be flattened) the whole source is in
/// `properties__json`. Returns key → normalised value (nulls left out), or the whole source.
pub enum Recovered {
    Keys(BTreeMap<String, Norm>),
    Whole(Norm),
}

pub fn recover_properties(row: &BTreeMap<String, Cell>, columns: &[ColumnSpec]) -> Recovered {
    for c in columns {
        if c.field == "properties"
            && c.key.is_none()
            && c.fallback
            && let Some(text) = row
                .get(&c.name)
                .and_then(|cell| cell_json(cell, c.data_type))
        {
            return Recovered::Whole(norm(&text));
        }
    }
    let mut out = BTreeMap::new();
    for c in columns {
        let (Some(key), "properties") = (&c.key, c.field.as_str()) else {
            continue;
        };
        if let Some(text) = row
            .get(&c.name)
            .and_then(|cell| cell_json(cell, c.data_type))
        {
            let previous = out.insert(key.clone(), norm(&text));
            assert!(previous.is_none(), "key {key:?} has values in two columns");
        }
    }
    Recovered::Keys(out)
}

/// What the source says the properties are, under the same rule: key → value for an object
/// with unique keys, nulls left out; else the whole source text.
pub fn expected_properties(source: &str) -> Recovered {
    let trimmed = source.trim();
    let entries: Option<Vec<(String, Box<RawValue>)>> = if trimmed.starts_with('{') {
        parse_entries(trimmed)
    } else {
        None
    };
    match entries {
        Some(entries) => {
            let mut keys = std::collections::HashSet::new();
            if entries.iter().any(|(k, _)| !keys.insert(k.clone())) {
                return Recovered::Whole(norm(&serde_json::to_string(source).unwrap()));
            }
            Recovered::Keys(
                entries
                    .into_iter()
                    .filter(|(_, v)| v.get().trim() != "null")
                    .map(|(k, v)| (k, norm(v.get())))
                    .collect(),
            )
        }
        None if trimmed == "null" => Recovered::Keys(BTreeMap::new()),
        None => Recovered::Whole(norm(&serde_json::to_string(source).unwrap())),
    }
}

/// Entries of a JSON object with duplicate keys kept (serde_json maps would drop them).
fn parse_entries(text: &str) -> Option<Vec<(String, Box<RawValue>)>> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<(String, Box<RawValue>)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = m.next_entry::<String, Box<RawValue>>()? {
                out.push((k, v));
            }
            Ok(out)
        }
    }
    use serde::Deserializer;
    let mut de = serde_json::Deserializer::from_str(text);
    let out = (&mut de).deserialize_map(V).ok()?;
    de.end().ok()?;
    Some(out)
}

impl PartialEq for Recovered {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Recovered::Keys(a), Recovered::Keys(b)) => a == b,
            (Recovered::Whole(a), Recovered::Whole(b)) => a == b,
            _ => false,
        }
    }
}

impl std::fmt::Debug for Recovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recovered::Keys(k) => f.debug_map().entries(k.iter()).finish(),
            Recovered::Whole(w) => f.debug_tuple("Whole").field(w).finish(),
        }
    }
}
