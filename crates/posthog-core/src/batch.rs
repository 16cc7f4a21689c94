//! Rows in, Arrow record batches out: flattening and typing (see [`crate::schema`] for the rule).
//!
//! Values are appended straight into Arrow builders as each row is read; no per-row map or
//! record is built. A column first seen in the middle of a batch is back-filled with nulls, and
//! every finished batch carries all columns the table knows so far, in output order.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch, new_null_array};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::value::RawValue;

use crate::json::{
    Entry, HeldEntry, KeyHint, Next, Walk, compact_nested, decode_nested,
    escaped_object_entries_into, object_entries, object_entries_into, walk_escaped_object,
};
use crate::schema::{
    ColumnSpec, ColumnType, FieldKind, FieldSpec, FlattenMode, SchemaError, SourceKey, TableSchema,
};
use crate::value::{JsonText, Scalar, compact_json, trim_json_ws, unescape_into};
use crate::{CoreError, parse_timestamp};

/// Largest integer magnitude a `Float64` column takes exactly.
const F64_EXACT_INT: i64 = 1 << 53;

/// The value and fallback column of one source (a top-level field or a property key).
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    value: Option<usize>,
    fallback: Option<usize>,
    /// The serial of the last row whose object held this key (a key seen twice in one
    /// object sends the row whole to the `__json` column).
    stamp: u64,
}

/// The room a column's builder is made with when its first value of a batch comes: what the
/// column held in the last batch it took part in.
#[derive(Debug, Clone, Copy, Default)]
struct Capacity {
    rows: usize,
    bytes: usize,
}

/// A value ready for a column of a known type.
enum Cell<'a> {
    Text(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Micros(i64),
}

/// Why [`BatchBuilder::flatten_held`] stopped before the end of an object.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Held {
    /// Every entry went to a column that exists.
    Known,
    /// A key came twice.
    Repeated,
    /// An entry needs a column made (or the rest column): the full path does that.
    NewColumn,
    /// A nested value does not decode to JSON: the full path decides about the object.
    Undecoded,
}

/// A value on [`BatchBuilder::flatten_held`]'s path: as the reader handed it out, or a nested
/// value decoded into the row's [`BatchBuilder::nested_buf`] at this range, compact.
enum HeldValue<'a> {
    Read(Entry<'a>),
    Decoded(Range<usize>),
}

enum ColumnBuilder {
    Text(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Micros(TimestampMicrosecondBuilder),
}

impl ColumnBuilder {
    /// An empty builder for a column of type `ty`, with room for `capacity`. A finished builder
    /// keeps no allocation, so each batch's builder is made anew: with nothing (a column
    /// absent from a batch allocates nothing) until the column's first value of the batch, then
    /// with the room of its last batch (grown from nothing, `callgrind` counted ~17 buffer
    /// growths per column and batch, 1.4 % of a run's instructions).
    fn with_capacity(ty: ColumnType, capacity: Capacity) -> Self {
        let Capacity { rows, bytes } = capacity;
        match ty {
            ColumnType::Utf8 | ColumnType::Json => {
                ColumnBuilder::Text(StringBuilder::with_capacity(rows, bytes))
            }
            ColumnType::Int64 => ColumnBuilder::Int(Int64Builder::with_capacity(rows)),
            ColumnType::Float64 => ColumnBuilder::Float(Float64Builder::with_capacity(rows)),
            ColumnType::Boolean => ColumnBuilder::Bool(BooleanBuilder::with_capacity(rows)),
            ColumnType::Timestamp => {
                ColumnBuilder::Micros(TimestampMicrosecondBuilder::with_capacity(rows))
            }
        }
    }

    /// What the builder holds now, as a capacity for its next batch, with an eighth more
    /// (batches are cut by bytes, so the next one is about as long, and no larger than one
    /// batch's values: the caller's byte budget for a batch, or a single larger value).
    fn capacity(&self) -> Capacity {
        let bytes = match self {
            ColumnBuilder::Text(b) => b.values_slice().len(),
            _ => 0,
        };
        let more = |n: usize| n + n / 8;
        Capacity {
            rows: more(self.len()),
            bytes: more(bytes),
        }
    }

    fn len(&self) -> usize {
        match self {
            ColumnBuilder::Text(b) => b.len(),
            ColumnBuilder::Int(b) => b.len(),
            ColumnBuilder::Float(b) => b.len(),
            ColumnBuilder::Bool(b) => b.len(),
            ColumnBuilder::Micros(b) => b.len(),
        }
    }

    /// Appends nulls up to `rows` rows.
    #[inline]
    fn pad_to(&mut self, rows: usize) {
        let missing = rows.saturating_sub(self.len());
        if missing != 0 {
            self.append_nulls(missing);
        }
    }

    fn append_nulls(&mut self, missing: usize) {
        match self {
            ColumnBuilder::Text(b) => b.append_nulls(missing),
            ColumnBuilder::Int(b) => b.append_nulls(missing),
            ColumnBuilder::Float(b) => b.append_nulls(missing),
            ColumnBuilder::Bool(b) => b.append_nulls(missing),
            ColumnBuilder::Micros(b) => b.append_nulls(missing),
        }
    }

    /// Appends `cell`; the caller has checked that the cell matches the column type.
    #[inline]
    fn append(&mut self, cell: &Cell<'_>) {
        match (self, cell) {
            (ColumnBuilder::Text(b), Cell::Text(s)) => b.append_value(s),
            (ColumnBuilder::Int(b), Cell::Int(v)) => b.append_value(*v),
            (ColumnBuilder::Float(b), Cell::Float(v)) => b.append_value(*v),
            (ColumnBuilder::Bool(b), Cell::Bool(v)) => b.append_value(*v),
            (ColumnBuilder::Micros(b), Cell::Micros(v)) => b.append_value(*v),
            // `fit` only pairs a cell with its column's builder; a mismatch would be a bug in
            // this module, and a null keeps the batch consistent rather than panicking.
            (builder, _) => {
                let len = builder.len();
                builder.pad_to(len + 1);
            }
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Text(b) => Arc::new(b.finish()),
            ColumnBuilder::Int(b) => Arc::new(b.finish()),
            ColumnBuilder::Float(b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
            ColumnBuilder::Micros(b) => Arc::new(b.finish().with_timezone("UTC")),
        }
    }
}

/// The Arrow type of a column type.
pub fn arrow_type(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::Utf8 | ColumnType::Json => DataType::Utf8,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    }
}

/// The cell `scalar` makes in a column of type `ty`, or the scalar back when it does not fit
/// without change (null never fits).
fn fit<'a>(ty: ColumnType, scalar: Scalar<'a>) -> Result<Cell<'a>, Scalar<'a>> {
    // By value: the text of a string or JSON value moves into its cell, never copied (a copy
    // was one allocation for every nested value, ~4 a row of the default events).
    match (ty, scalar) {
        (_, Scalar::Null) => Err(Scalar::Null),
        (ColumnType::Json, s) => Ok(Cell::Text(s.into_json_text())),
        (ColumnType::Utf8, Scalar::Str(s)) => Ok(Cell::Text(s)),
        (ColumnType::Int64, Scalar::Int(i)) => Ok(Cell::Int(i)),
        (ColumnType::Float64, Scalar::Float(f)) => Ok(Cell::Float(f)),
        (ColumnType::Float64, Scalar::Int(i)) if i.unsigned_abs() <= F64_EXACT_INT as u64 => {
            Ok(Cell::Float(i as f64))
        }
        (ColumnType::Boolean, Scalar::Bool(b)) => Ok(Cell::Bool(b)),
        (ColumnType::Timestamp, Scalar::Str(s)) => {
            parse_timestamp(&s).map(Cell::Micros).ok_or(Scalar::Str(s))
        }
        (_, s) => Err(s),
    }
}

/// The type a dynamic column takes from its first non-null value.
fn type_of_first(scalar: &Scalar<'_>) -> ColumnType {
    match scalar {
        Scalar::Bool(_) => ColumnType::Boolean,
        Scalar::Int(_) => ColumnType::Int64,
        Scalar::Float(_) => ColumnType::Float64,
        Scalar::Str(_) => ColumnType::Utf8,
        Scalar::Null | Scalar::Json(_) => ColumnType::Json,
    }
}

/// Columns and their builders, grown together.
struct Columns {
    schema: TableSchema,
    builders: Vec<ColumnBuilder>,
    /// Per column: the room its builder gets for the next batch (see [`Capacity`]).
    capacities: Vec<Capacity>,
    arrow_schema: Option<SchemaRef>,
    /// Columns holding a value in the pending batch, and the bytes of the values.
    present: usize,
    value_bytes: usize,
}

impl Columns {
    fn add(&mut self, source: SourceKey, base: String, ty: ColumnType) -> usize {
        let id = self.schema.add(source, base, ty);
        self.builders
            .push(ColumnBuilder::with_capacity(ty, Capacity::default()));
        self.capacities.push(Capacity::default());
        self.arrow_schema = None;
        id
    }

    fn ty(&self, id: usize) -> ColumnType {
        self.schema.columns()[id].data_type
    }

    /// Picks the column for `scalar` in `slot`: the typed column (made by `new_column`, which
    /// names its source and base name, on first sight) or, when the value does not fit, its
    /// `__json` sibling. `None` for null.
    fn place<'a>(
        &mut self,
        slot: &mut Slot,
        new_column: impl FnOnce() -> (SourceKey, String),
        scalar: Scalar<'a>,
    ) -> Option<(usize, Cell<'a>)> {
        if scalar == Scalar::Null {
            return None;
        }
        let value = match slot.value {
            Some(id) => id,
            None => {
                let (source, base) = new_column();
                let id = self.add(source, base, type_of_first(&scalar));
                slot.value = Some(id);
                id
            }
        };
        let scalar = match fit(self.ty(value), scalar) {
            Ok(cell) => return Some((value, cell)),
            Err(scalar) => scalar,
        };
        let spec = &self.schema.columns()[value];
        let source = SourceKey {
            field: spec.field.clone(),
            key: spec.key.clone(),
            fallback: true,
            rest: false,
        };
        let base = format!("{}__json", spec.name);
        let id = self.fallback(slot, source, base);
        Some((id, Cell::Text(scalar.into_json_text())))
    }

    /// The `__json` sibling of `slot`, created (from `source`, named after `base`) on first use.
    fn fallback(&mut self, slot: &mut Slot, source: SourceKey, base: String) -> usize {
        match slot.fallback {
            Some(id) => id,
            None => {
                let id = self.add(source, base, ColumnType::Json);
                slot.fallback = Some(id);
                id
            }
        }
    }

    fn append(&mut self, id: usize, row: usize, cell: &Cell<'_>) {
        let builder = &mut self.builders[id];
        let len = builder.len();
        if len == 0 {
            self.present += 1;
            let ty = self.schema.columns()[id].data_type;
            *builder = ColumnBuilder::with_capacity(ty, self.capacities[id]);
        }
        if len < row {
            builder.append_nulls(row - len);
        }
        builder.append(cell);
        self.value_bytes += match cell {
            Cell::Text(text) => text.len(),
            _ => 8,
        };
    }
}

/// Builds Arrow record batches from PostHog rows.
///
/// ```
/// use posthog_core::{BatchBuilder, ColumnType, FieldSpec, FlattenMode};
/// use serde_json::value::RawValue;
///
/// let fields = [
///     FieldSpec::fixed("uuid", ColumnType::Utf8),
///     FieldSpec::fixed("timestamp", ColumnType::Timestamp),
///     FieldSpec::flatten("properties"),
/// ];
/// let mut builder = BatchBuilder::new(&fields, FlattenMode::Flatten, &[]).unwrap();
/// let row: Vec<Box<RawValue>> = serde_json::from_str(
///     r#"["0194274e-99c2-7d74-b879-70edbe884e6a", "2025-01-02T13:57:30.178957Z",
///         "{\"$browser\": \"Safari\", \"plan_price\": 42}"]"#,
/// ).unwrap();
/// let row: Vec<&RawValue> = row.iter().map(|r| r.as_ref()).collect();
/// builder.append_array_row(&row).unwrap();
/// let batch = builder.finish_batch().unwrap().expect("one row is pending");
/// let names: Vec<_> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
/// assert_eq!(names, ["uuid", "timestamp", "properties_$browser", "properties_plan_price"]);
/// ```
pub struct BatchBuilder {
    fields: Vec<FieldSpec>,
    mode: FlattenMode,
    columns: Columns,
    /// Per declared field: its slot (value/fallback columns of the field itself).
    field_slots: Vec<Slot>,
    /// Per declared field: the slots of its flattened keys.
    key_slots: Vec<KeySlots>,
    /// Per declared field: its `__rest` column, once made.
    rest_columns: Vec<Option<usize>>,
    /// Columns the table may have before new keys go to `__rest` instead.
    column_budget: usize,
    /// Top-level keys of object rows that no field declares.
    extra_slots: HashMap<String, Slot>,
    field_by_name: HashMap<String, usize>,
    /// Reused buffer for the unescaped text of a properties string.
    text_buf: String,
    /// Spare vectors of the flattener, kept between rows (see [`recycle`]).
    entry_buf: Vec<(Cow<'static, str>, Entry<'static>)>,
    cell_buf: Vec<(usize, Cell<'static>)>,
    /// The decoded text of a row's nested values on the common path, and the cells that take
    /// their ranges of it: one buffer for all, not a `String` each.
    nested_buf: String,
    nested_cells: Vec<(usize, Range<usize>)>,
    rows: usize,
    row_serial: u64,
}

impl std::fmt::Debug for BatchBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchBuilder")
            .field("fields", &self.fields)
            .field("mode", &self.mode)
            .field("columns", &self.columns.schema.len())
            .field("rows", &self.rows)
            .finish()
    }
}

impl BatchBuilder {
    /// A builder for rows with these `fields`, continuing the `known` columns of earlier runs.
    pub fn new(
        fields: &[FieldSpec],
        mode: FlattenMode,
        known: &[ColumnSpec],
    ) -> Result<Self, SchemaError> {
        let schema = TableSchema::new(fields, mode, known)?;
        let builders: Vec<ColumnBuilder> = schema
            .columns()
            .iter()
            .map(|c| ColumnBuilder::with_capacity(c.data_type, Capacity::default()))
            .collect();
        let capacities = vec![Capacity::default(); builders.len()];
        let mut field_slots = vec![Slot::default(); fields.len()];
        let mut key_slots: Vec<KeySlots> = (0..fields.len()).map(|_| KeySlots::default()).collect();
        let mut extra_slots: HashMap<String, Slot> = HashMap::new();
        let field_by_name: HashMap<String, usize> = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        let mut rest_columns = vec![None; fields.len()];
        for (id, spec) in schema.columns().iter().enumerate() {
            if spec.rest {
                if let Some(&f) = field_by_name.get(&spec.field) {
                    rest_columns[f] = Some(id);
                }
                continue;
            }
            let slot = match (field_by_name.get(&spec.field), &spec.key) {
                (Some(&f), None) => &mut field_slots[f],
                (Some(&f), Some(key)) => {
                    let at = key_slots[f].slot_of(key);
                    &mut key_slots[f].slots[at]
                }
                (None, None) => extra_slots.entry(spec.field.clone()).or_default(),
                // A flattened key of a field this layout does not read: keep the column (it
                // stays null), nothing will write to it.
                (None, Some(_)) => continue,
            };
            if spec.fallback {
                slot.fallback = Some(id);
            } else {
                slot.value = Some(id);
            }
        }
        Ok(BatchBuilder {
            fields: fields.to_vec(),
            mode,
            columns: Columns {
                schema,
                builders,
                capacities,
                arrow_schema: None,
                present: 0,
                value_bytes: 0,
            },
            field_slots,
            key_slots,
            rest_columns,
            column_budget: usize::MAX,
            text_buf: String::new(),
            entry_buf: Vec::new(),
            cell_buf: Vec::new(),
            nested_buf: String::new(),
            nested_cells: Vec::new(),
            extra_slots,
            field_by_name,
            rows: 0,
            row_serial: 0,
        })
    }

    /// Caps the table's columns at `budget` (unlimited by default): once the table has that
    /// many, a flattened key seen for the first time gets no column of its own; its values go,
    /// with those of every other such key of the row, into one `<field>__rest` column holding
    /// a JSON object (`{"key": value, ...}`, values as their compact source JSON), so nothing
    /// is lost and readers still get a bounded schema. Keys that already have a column keep
    /// it; the `__rest` column and `__json` siblings of existing columns may pass the budget.
    pub fn with_column_budget(mut self, budget: usize) -> Self {
        self.column_budget = budget;
        self
    }

    /// Rows appended since the last [`finish_batch`](Self::finish_batch).
    pub fn len(&self) -> usize {
        self.rows
    }

    /// What the pending batch holds in memory, about: its values' bytes plus an offset and a
    /// validity bit per row of every column that holds a value (those are padded with nulls
    /// to the batch's length; absent columns cost nothing). The caller finishes the batch
    /// early when this passes its budget, so memory is bounded by bytes, not by
    /// `batch_size` alone, for wide (thousands of columns) and heavy (10 KB values) rows alike.
    pub fn pending_bytes(&self) -> usize {
        self.columns.value_bytes + self.rows * self.columns.present * 5
    }

    /// True when no row is pending.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The table's columns so far.
    pub fn schema(&self) -> &TableSchema {
        &self.columns.schema
    }

    /// Appends one row given as an array of values in field order (a HogQL result row).
    ///
    /// The only error is a row whose length differs from the field count; any value is
    /// accepted (see the type rule in [`crate::schema`]).
    pub fn append_array_row(&mut self, row: &[impl JsonText]) -> Result<(), CoreError> {
        if row.len() != self.fields.len() {
            return Err(CoreError::Data(format!(
                "a result row has {} values but {} columns were selected",
                row.len(),
                self.fields.len()
            )));
        }
        self.begin_row();
        for (i, raw) in row.iter().enumerate() {
            self.append_field(i, raw.json_text());
        }
        self.rows += 1;
        Ok(())
    }

    /// Appends one row given as a JSON object (a REST list item). Declared fields are read by
    /// name; other top-level keys become columns typed by first sight.
    pub fn append_object_row(&mut self, row: &RawValue) -> Result<(), CoreError> {
        let Some(entries) = object_entries(row.get()) else {
            return Err(CoreError::Data(
                "a list item is not a JSON object with Unicode keys".into(),
            ));
        };
        if let Some(key) = repeated_key(&entries) {
            return Err(CoreError::Data(format!(
                "a list item repeats the key {key:?}"
            )));
        }
        self.begin_row();
        for (key, raw) in entries {
            let raw = raw.json_text();
            let raw: &str = &raw;
            if let Some(&i) = self.field_by_name.get(key.as_ref()) {
                self.append_field(i, raw);
                continue;
            }
            if !self.extra_slots.contains_key(key.as_ref()) {
                self.extra_slots.insert(key.to_string(), Slot::default());
            }
            let Some(slot) = self.extra_slots.get_mut(key.as_ref()) else {
                continue; // inserted just above
            };
            let placed = self.columns.place(
                slot,
                || (SourceKey::field(&key, false), key.to_string()),
                Scalar::classify(raw),
            );
            if let Some((id, cell)) = placed {
                self.columns.append(id, self.rows, &cell);
            }
        }
        self.rows += 1;
        Ok(())
    }

    fn begin_row(&mut self) {
        self.row_serial += 1;
    }

    fn append_field(&mut self, i: usize, raw: &str) {
        match (self.fields[i].kind, self.mode) {
            (FieldKind::Flatten, FlattenMode::Flatten) => self.append_flattened(i, raw),
            (FieldKind::Flatten, FlattenMode::Raw) => self.append_raw_object(i, raw),
            (FieldKind::Fixed(_) | FieldKind::Dynamic, _) => {
                self.place_field(i, Scalar::classify(raw));
            }
        }
    }

    fn place_field(&mut self, i: usize, scalar: Scalar<'_>) {
        let name = &self.fields[i].name;
        let slot = &mut self.field_slots[i];
        let placed = self.columns.place(
            slot,
            || (SourceKey::field(name, false), name.clone()),
            scalar,
        );
        if let Some((id, cell)) = placed {
            self.columns.append(id, self.rows, &cell);
        }
    }

    /// Raw mode: the properties object stays one JSON text column; anything that is not an
    /// object (nor null) goes whole to the field's `__json` column.
    fn append_raw_object(&mut self, i: usize, raw: &str) {
        let outer = Scalar::classify(raw);
        let inner = match &outer {
            Scalar::Null => return,
            Scalar::Json(text) if text.starts_with('{') => Some(text.clone()),
            Scalar::Str(text) => serde_json::from_str::<&RawValue>(text)
                .ok()
                .map(|inner| trim_json_ws(inner.get()))
                .filter(|inner| inner.starts_with('{'))
                .map(|inner| Cow::Owned(compact_json(inner).into_owned())),
            _ => None,
        };
        match inner {
            Some(object) => self.place_field(i, Scalar::Json(object)),
            None => self.place_fallback(i, &outer),
        }
    }

    /// Puts the whole source value of field `i` into its `__json` column.
    fn place_fallback(&mut self, i: usize, outer: &Scalar<'_>) {
        let name = &self.fields[i].name;
        let id = self.columns.fallback(
            &mut self.field_slots[i],
            SourceKey::field(name, true),
            format!("{name}__json"),
        );
        self.columns
            .append(id, self.rows, &Cell::Text(outer.to_json_text()));
    }

    /// Flatten mode: each key of the object (or of the JSON object inside a string) becomes a
    /// `<field>_<key>` column; a value that cannot be flattened goes whole to `<field>__json`.
    fn append_flattened(&mut self, i: usize, raw: &str) {
        let raw = trim_json_ws(raw);
        // The unescape buffer is reused across rows; it is put back on every path.
        let mut buf = std::mem::take(&mut self.text_buf);
        buf.clear();
        if !self.flatten_keys(i, raw, &mut buf) {
            self.place_fallback(i, &Scalar::classify(raw));
        }
        self.text_buf = buf;
    }

    /// Appends the keys of the object in `raw` to their columns. False, with nothing appended,
    /// when `raw` is not an object with unique, valid keys (nor null, which appends nothing).
    fn flatten_keys(&mut self, i: usize, raw: &str, buf: &mut String) -> bool {
        // The entries' and cells' vectors are reused from row to row.
        let spare = recycle(std::mem::take(&mut self.entry_buf));
        let entries = match raw.as_bytes().first() {
            Some(b'n') => return true,
            // The common path: read straight from the escaped text, no unescaped copy.
            Some(b'"') => {
                if let Some(done) = self.flatten_held(i, raw) {
                    return done;
                }
                // The walk left stamps on the keys it met: this read takes a new serial.
                self.row_serial += 1;
                match held_entries(raw, buf, spare) {
                    Ok(entries) => entries,
                    Err(done) => return done,
                }
            }
            Some(b'{') => match object_entries_into(raw, spare) {
                Some(entries) => entries,
                None => return false,
            },
            _ => return false,
        };
        let mut cells = recycle(std::mem::take(&mut self.cell_buf));
        // Phase 1: pick a column for every key (creating columns as needed) and detect a
        // repeated key before anything is appended, so a row is never half written.
        let serial = self.row_serial;
        let field = &self.fields[i].name;
        let slots = &mut self.key_slots[i];
        let columns = &mut self.columns;
        let budget = self.column_budget;
        let mut rest: Vec<(&str, &Entry<'_>)> = Vec::new();
        // Keys first seen once the table has its budget of columns: they can only ever go to
        // `__rest`, so they get no slot (one per distinct key would grow with every key a
        // project sends, ids in keys included); a set catches one repeated in this object.
        let mut unslotted: HashSet<&str, ahash::RandomState> = HashSet::default();
        let mut prev = None;
        for (key, raw_value) in &entries {
            let at = match slots.find(key, prev) {
                Some(at) => at,
                None if columns.schema.len() >= budget => {
                    if !unslotted.insert(key) {
                        return false; // a repeated key
                    }
                    if !matches!(raw_value, Entry::Json(text) if is_null(text)) {
                        rest.push((key, raw_value));
                    }
                    continue;
                }
                None => slots.index_of(key, prev),
            };
            prev = Some(at);
            let slot = &mut slots.slots[at];
            if slot.stamp == serial {
                return false; // a repeated key
            }
            slot.stamp = serial;
            let scalar = match raw_value {
                Entry::Str(text) => Scalar::Str(Cow::Borrowed(text)),
                Entry::Json(text) => Scalar::classify(text),
            };
            if scalar == Scalar::Null {
                continue;
            }
            if slot.value.is_none() && columns.schema.len() >= budget {
                rest.push((key, raw_value));
                continue;
            }
            let placed = columns.place(
                slot,
                || {
                    let source = SourceKey {
                        field: field.clone(),
                        key: Some(key.to_string()),
                        fallback: false,
                        rest: false,
                    };
                    (source, format!("{field}_{key}"))
                },
                scalar,
            );
            if let Some(placed) = placed {
                cells.push(placed);
            }
        }
        if !rest.is_empty() {
            let id = rest_column(columns, &mut self.rest_columns[i], field);
            cells.push((id, Cell::Text(Cow::Owned(rest_object(&rest)))));
        }
        for (id, cell) in &cells {
            columns.append(*id, self.rows, cell);
        }
        self.cell_buf = recycle(cells);
        self.entry_buf = recycle(entries);
        true
    }

    /// The common path of [`BatchBuilder::flatten_keys`] for an object held in the string
    /// literal `raw`: each entry goes to its column's cell as the escaped reader hands it out,
    /// with no vector of entries between. `Some(false)`: a key came twice (the row goes whole
    /// to the `__json` column, as the full path decides); `None`: the walk met what only the
    /// full path does (a column to make, a reader that gives up) and nothing was appended.
    #[inline]
    fn flatten_held(&mut self, i: usize, raw: &str) -> Option<bool> {
        let mut cells: Vec<(usize, Cell<'_>)> = recycle(std::mem::take(&mut self.cell_buf));
        let (mut nested, mut nested_cells) = (
            std::mem::take(&mut self.nested_buf),
            std::mem::take(&mut self.nested_cells),
        );
        nested.clear();
        nested_cells.clear();
        let serial = self.row_serial;
        let (slots, names, mut order) = self.key_slots[i].walk();
        let columns = &self.columns;
        let (budget, rest_column) = (self.column_budget, self.rest_columns[i]);
        // The entries past the column budget, as the `__rest` object's text (without its braces).
        let mut rest = String::new();
        let mut held = Held::Known;
        // Keys without a slot past the budget (see `flatten_keys`), a few per object at most
        // here: more take the full path.
        let mut unslotted: Vec<Cow<'_, str>> = Vec::new();
        // The walk is handed the hint of the key predicted next.
        let walk = walk_escaped_object(raw, names.hint(order.guess), |key, value, hinted| {
            let Some(value) = decode_held(value, &mut nested) else {
                held = Held::Undecoded;
                return Next::Stop;
            };
            // A key found as hinted is the predicted one; any other is looked up.
            let found = if hinted {
                Some(order.guess)
            } else {
                names.find(&key, order.guess)
            };
            let Some(at) = found else {
                if columns.schema.len() < budget || rest_column.is_none() || unslotted.len() >= 8 {
                    held = Held::NewColumn;
                    return Next::Stop;
                }
                if unslotted.contains(&key) {
                    held = Held::Repeated;
                    return Next::Stop;
                }
                push_rest_held(&mut rest, &key, &value, &nested);
                unslotted.push(key);
                // The prediction stands: it follows the last key that has a slot.
                return Next::Go(names.hint(order.guess));
            };
            order.step(at);
            let Some(slot) = slots.get_mut(at) else {
                held = Held::NewColumn; // every slot found has its entry
                return Next::Stop;
            };
            if slot.stamp == serial {
                held = Held::Repeated;
                return Next::Stop;
            }
            slot.stamp = serial;
            if slot.value.is_none() && columns.schema.len() >= budget {
                // Past the budget (the full path's rule): into `__rest`, unless null.
                if rest_column.is_none() {
                    held = Held::NewColumn;
                    return Next::Stop;
                }
                push_rest_held(&mut rest, &key, &value, &nested);
                return Next::Go(names.hint(order.guess));
            }
            let placed = match value {
                HeldValue::Read(entry) => read_cell(columns, slot, entry).map(|cell| {
                    if let Some(cell) = cell {
                        cells.push(cell);
                    }
                }),
                HeldValue::Decoded(range) => nested_column(columns, slot, &nested, &range)
                    .map(|id| nested_cells.push((id, range))),
            };
            if placed.is_none() {
                held = Held::NewColumn;
                return Next::Stop;
            }
            Next::Go(names.hint(order.guess))
        });
        let done = match (walk, held) {
            (Walk::Whole, _) => {
                if let (false, Some(id)) = (rest.is_empty(), rest_column) {
                    cells.push((id, Cell::Text(Cow::Owned(format!("{{{rest}}}")))));
                }
                self.append_held(&cells, &nested_cells, &nested);
                Some(true)
            }
            (Walk::Stopped, Held::Repeated) => Some(false),
            _ => None,
        };
        self.cell_buf = recycle(cells);
        (self.nested_buf, self.nested_cells) = (nested, nested_cells);
        done
    }

    /// Appends a row's cells from [`BatchBuilder::flatten_held`]: `cells` as they are, and
    /// `nested_cells` as their ranges of `nested`.
    fn append_held(
        &mut self,
        cells: &[(usize, Cell<'_>)],
        nested_cells: &[(usize, Range<usize>)],
        nested: &str,
    ) {
        for (id, cell) in cells {
            self.columns.append(*id, self.rows, cell);
        }
        for (id, range) in nested_cells {
            let text = nested.get(range.clone()).unwrap_or_default();
            self.columns
                .append(*id, self.rows, &Cell::Text(Cow::Borrowed(text)));
        }
    }

    /// Finishes the pending rows as one record batch holding every column the table knows, in
    /// output order. `None` when no row is pending.
    pub fn finish_batch(&mut self) -> Result<Option<RecordBatch>, CoreError> {
        if self.rows == 0 {
            return Ok(None);
        }
        let rows = self.rows;
        let schema = self.arrow_schema();
        let columns = &mut self.columns;
        // A column with no value in the batch costs nothing per column: every such column of
        // a type shares one all-null array (a wide project's table has thousands of columns,
        // most of them absent from any one batch).
        let mut nulls: HashMap<ColumnType, ArrayRef> = HashMap::new();
        let arrays: Vec<ArrayRef> = columns
            .schema
            .output_order()
            .iter()
            .map(|&id| {
                let builder = &mut columns.builders[id];
                if builder.len() == 0 {
                    let ty = columns.schema.columns()[id].data_type;
                    return nulls
                        .entry(ty)
                        .or_insert_with(|| new_null_array(&arrow_type(ty), rows))
                        .clone();
                }
                builder.pad_to(rows);
                columns.capacities[id] = builder.capacity();
                builder.finish()
            })
            .collect();
        self.rows = 0;
        self.columns.present = 0;
        self.columns.value_bytes = 0;
        RecordBatch::try_new(schema, arrays)
            .map(Some)
            .map_err(|source| CoreError::Arrow {
                op: "assemble a record batch",
                path: None,
                source,
            })
    }

    /// The Arrow schema of the batches this builder produces now.
    pub fn arrow_schema(&mut self) -> SchemaRef {
        if let Some(schema) = &self.columns.arrow_schema {
            return schema.clone();
        }
        let schema = &self.columns.schema;
        let fields: Vec<Field> = schema
            .output_order()
            .iter()
            .map(|&id| {
                let c = &schema.columns()[id];
                Field::new(c.name.clone(), arrow_type(c.data_type), true)
            })
            .collect();
        let schema = Arc::new(Schema::new(fields));
        self.columns.arrow_schema = Some(schema.clone());
        schema
    }
}

/// The slots of one flattened field's keys, each remembering the key that followed it last
/// time: events of one kind list their properties in the same order, so most lookups are one
/// string comparison with the predicted key instead of a hash (on the common path, one
/// comparison of the predicted key's spelling with the text, see [`KeyHint`]), and a key
/// inserted or missing in one event only costs the lookups next to it (a cache by position
/// lost the rest of the row).
#[derive(Debug, Default)]
struct KeySlots {
    slots: Vec<Slot>,
    names: KeyNames,
    /// Each slot's successor: the slot of the key after it in the last object that held it.
    next: Vec<usize>,
    /// The slot of the first key of the last object.
    first: usize,
}

/// The keys of a [`KeySlots`], which a walk over one object reads but never changes.
#[derive(Debug, Default)]
struct KeyNames {
    /// Each slot's key.
    keys: Vec<Box<str>>,
    /// Each slot's key as held text spells it, for a key with nothing to escape.
    hints: Vec<Option<KeyHint>>,
    index: HashMap<Box<str>, usize, ahash::RandomState>,
}

impl KeyNames {
    /// The slot of `key`, tried first against the slot `guess`; `None` for a new key.
    #[inline]
    fn find(&self, key: &str, guess: usize) -> Option<usize> {
        if self.keys.get(guess).is_some_and(|k| **k == *key) {
            return Some(guess);
        }
        self.index.get(key).copied()
    }

    /// The hint for the key of slot `at` (none for a slot past the end: `usize::MAX` is a
    /// slot's successor before it has one).
    #[inline]
    fn hint(&self, at: usize) -> Option<&KeyHint> {
        self.hints.get(at)?.as_ref()
    }
}

/// The slot predicted to follow slot `prev` (`None`: the first of an object).
#[inline]
fn predicted(next: &[usize], first: usize, prev: Option<usize>) -> usize {
    match prev {
        Some(p) => next.get(p).copied().unwrap_or(usize::MAX),
        None => first,
    }
}

/// Where a walk over one object stands in the order of its field's slots.
struct SlotOrder<'k> {
    next: &'k mut [usize],
    first: &'k mut usize,
    /// The slot of the last key found.
    prev: Option<usize>,
    /// The slot predicted for the next key.
    guess: usize,
}

impl SlotOrder<'_> {
    /// The next key of the object has slot `at`: remembered as following the last, and the
    /// key after it predicted.
    #[inline]
    fn step(&mut self, at: usize) {
        if at != self.guess {
            follow(self.next, self.first, self.prev, at);
        }
        self.prev = Some(at);
        self.guess = predicted(self.next, *self.first, self.prev);
    }
}

/// Remembers in `next` / `first` that slot `at` followed slot `prev` (`None`: came first).
#[inline]
fn follow(next: &mut [usize], first: &mut usize, prev: Option<usize>, at: usize) {
    match prev {
        Some(p) => {
            if let Some(n) = next.get_mut(p) {
                *n = at;
            }
        }
        None => *first = at,
    }
}

impl KeySlots {
    /// The parts a walk over one object uses: the slots, the keys (read only), and the order
    /// of the slots from the object's start.
    fn walk(&mut self) -> (&mut [Slot], &KeyNames, SlotOrder<'_>) {
        let order = SlotOrder {
            next: &mut self.next,
            guess: self.first,
            first: &mut self.first,
            prev: None,
        };
        (&mut self.slots, &self.names, order)
    }

    /// The slot index of `key`, which follows the key of slot `prev` in its object (`None`:
    /// it comes first); created if new.
    #[inline]
    fn index_of(&mut self, key: &str, prev: Option<usize>) -> usize {
        if let Some(at) = self.find(key, prev) {
            return at;
        }
        let at = self.slot_of(key);
        follow(&mut self.next, &mut self.first, prev, at);
        at
    }

    /// [`KeySlots::index_of`] for a key that has a slot; `None` (and nothing made) for a new one.
    #[inline]
    fn find(&mut self, key: &str, prev: Option<usize>) -> Option<usize> {
        let guess = predicted(&self.next, self.first, prev);
        let at = self.names.find(key, guess)?;
        if at != guess {
            follow(&mut self.next, &mut self.first, prev, at);
        }
        Some(at)
    }

    /// The slot index of `key`, created if new.
    fn slot_of(&mut self, key: &str) -> usize {
        if let Some(&at) = self.names.index.get(key) {
            return at;
        }
        let at = self.slots.len();
        self.slots.push(Slot::default());
        self.names.keys.push(key.into());
        self.names.hints.push(KeyHint::held(key));
        self.next.push(usize::MAX);
        self.names.index.insert(key.into(), at);
        at
    }
}

/// The `<field>__rest` column of a flattened field (`id`), made on first use.
fn rest_column(columns: &mut Columns, id: &mut Option<usize>, field: &str) -> usize {
    *id.get_or_insert_with(|| {
        let source = SourceKey {
            field: field.to_owned(),
            key: None,
            fallback: false,
            rest: true,
        };
        columns.add(source, format!("{field}__rest"), ColumnType::Json)
    })
}

/// The entries of the object held in the string literal `raw`, for the full path: read from
/// the escaped text, else unescaped into `buf` and read there. `Err(done)`: no entries to
/// flatten, and what [`BatchBuilder::flatten_keys`] answers (`true` for PostHog's `"null"`).
fn held_entries<'a>(
    raw: &'a str,
    buf: &'a mut String,
    spare: Vec<(Cow<'a, str>, Entry<'a>)>,
) -> Result<Vec<(Cow<'a, str>, Entry<'a>)>, bool> {
    if let Some(entries) = escaped_object_entries_into(raw, spare) {
        return Ok(entries);
    }
    if !unescape_into(raw, buf) {
        return Err(false);
    }
    let buf: &'a String = buf;
    match trim_json_ws(buf) {
        // PostHog's JSON encoding of "no properties".
        "null" => Err(true),
        text => object_entries(text).ok_or(false),
    }
}

/// The cell for `scalar` in the columns `slot` has made: `Some(None)` for null, `None` when a
/// column would have to be made first (the value's own, or its `__json` sibling).
#[inline]
fn held_cell<'a>(
    columns: &Columns,
    slot: &Slot,
    scalar: Scalar<'a>,
) -> Option<Option<(usize, Cell<'a>)>> {
    if scalar == Scalar::Null {
        return Some(None);
    }
    let id = slot.value?;
    match fit(columns.ty(id), scalar) {
        Ok(cell) => Some(Some((id, cell))),
        Err(scalar) => Some(Some((slot.fallback?, Cell::Text(scalar.into_json_text())))),
    }
}

/// The column that takes a nested value decoded into `nested` at `range`, from the columns
/// `slot` has made: `None` when one would have to be made first. The type rule's answer for
/// the text as `Scalar::classify` reads it (JSON text, compact already): whichever column
/// takes it, it takes the text as it stands, so it stays in `nested` and its cell is the range.
fn nested_column(
    columns: &Columns,
    slot: &Slot,
    nested: &str,
    range: &Range<usize>,
) -> Option<usize> {
    let text = nested.get(range.clone()).unwrap_or_default();
    match held_cell(columns, slot, Scalar::Json(Cow::Borrowed(text))) {
        Some(Some((id, Cell::Text(_)))) => Some(id),
        _ => None, // a JSON value always makes text; no column yet
    }
}

/// A value of the walk as [`BatchBuilder::flatten_held`] takes it: a nested one decoded into
/// `nested` (the row's buffer) and checked first, whatever becomes of it, since the reader
/// that decodes it itself gives up on the whole object when it is not JSON (`None` then).
fn decode_held<'a>(value: HeldEntry<'a>, nested: &mut String) -> Option<HeldValue<'a>> {
    match value {
        HeldEntry::Read(entry) => Some(HeldValue::Read(entry)),
        HeldEntry::Nested(escaped) => {
            if let Some(range) = compact_nested(escaped, nested) {
                return Some(HeldValue::Decoded(range));
            }
            // The long way, for a spelling the one pass leaves (it decides about any text).
            let range = decode_nested(escaped, nested)?;
            if let Cow::Owned(compact) = compact_json(nested.get(range.clone())?) {
                nested.truncate(range.start);
                nested.push_str(&compact);
            }
            Some(HeldValue::Decoded(range.start..nested.len()))
        }
    }
}

/// [`held_cell`] for a value as the reader handed it out.
#[inline]
fn read_cell<'a>(
    columns: &Columns,
    slot: &Slot,
    entry: Entry<'a>,
) -> Option<Option<(usize, Cell<'a>)>> {
    let scalar = match entry {
        // The common case, a plain string into a text column, straight to its cell.
        Entry::Str(text) => match slot.value {
            Some(id) if columns.ty(id) == ColumnType::Utf8 => {
                return Some(Some((id, Cell::Text(Cow::Borrowed(text)))));
            }
            _ => Scalar::Str(Cow::Borrowed(text)),
        },
        Entry::Json(Cow::Borrowed(text)) => Scalar::classify(text),
        Entry::Json(Cow::Owned(text)) => Scalar::classify_owned(text),
    };
    held_cell(columns, slot, scalar)
}

/// [`push_rest_entry`] for a value of the common path (`nested` holds the decoded text of a
/// nested one), unless it is null.
fn push_rest_held(rest: &mut String, key: &str, value: &HeldValue<'_>, nested: &str) {
    match value {
        HeldValue::Read(Entry::Json(text)) if is_null(text) => {}
        HeldValue::Read(entry) => push_rest_entry(rest, key, entry),
        HeldValue::Decoded(range) => {
            let text = nested.get(range.clone()).unwrap_or_default();
            push_rest_entry(rest, key, &Entry::Json(Cow::Borrowed(text)));
        }
    }
}

/// A JSON object of `entries`, each value as its compact source JSON.
fn rest_object(entries: &[(&str, &Entry<'_>)]) -> String {
    let mut text = String::new();
    for (key, value) in entries {
        push_rest_entry(&mut text, key, value);
    }
    format!("{{{text}}}")
}

/// Whether the JSON text `text` is `null` (its first byte says so, as in [`Scalar::classify`]).
fn is_null(text: &str) -> bool {
    trim_json_ws(text).starts_with('n')
}

/// Appends one entry to the text of a `__rest` object between its braces: `"key":value`, the
/// value as its compact source JSON, after a comma unless it is the first.
fn push_rest_entry(text: &mut String, key: &str, value: &Entry<'_>) {
    if !text.is_empty() {
        text.push(',');
    }
    // A `str` always serializes.
    text.push_str(&serde_json::to_string(key).unwrap_or_default());
    text.push(':');
    let value = value.json_text();
    text.push_str(&compact_json(trim_json_ws(&value)));
}

/// Empties `v` and hands its allocation back typed for other lifetimes: an in-place collect
/// of nothing keeps the buffer (same element layout), so the per-row vectors of the flattener
/// are allocated once, not once per row.
fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

/// The first key that occurs a second time, if any.
fn repeated_key<'e>(entries: &'e [(Cow<'_, str>, Entry<'_>)]) -> Option<&'e str> {
    let mut seen = std::collections::HashSet::with_capacity_and_hasher(
        entries.len(),
        ahash::RandomState::new(),
    );
    entries
        .iter()
        .map(|(k, _)| k.as_ref())
        .find(|k| !seen.insert(*k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;

    fn raws(json: &str) -> Vec<Box<RawValue>> {
        serde_json::from_str(json).expect("test row is JSON")
    }

    fn names(batch: &RecordBatch) -> Vec<String> {
        batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    fn text(batch: &RecordBatch, name: &str, row: usize) -> Option<String> {
        let col = batch.column_by_name(name)?.as_string::<i32>();
        (!col.is_null(row)).then(|| col.value(row).to_owned())
    }

    #[test]
    fn raw_mode_keeps_properties_as_one_compact_json_column() {
        let fields = [
            FieldSpec::fixed("uuid", ColumnType::Utf8),
            FieldSpec::flatten("properties"),
        ];
        let mut b = BatchBuilder::new(&fields, FlattenMode::Raw, &[]).unwrap();
        for row in [
            r#"["a", "{\"$browser\": \"Safari\", \"n\": [1, 2]}"]"#,
            r#"["b", "[1]"]"#,
            r#"["c", null]"#,
        ] {
            let row = raws(row);
            let row: Vec<&RawValue> = row.iter().map(AsRef::as_ref).collect();
            b.append_array_row(&row).unwrap();
        }
        let batch = b.finish_batch().unwrap().unwrap();
        assert_eq!(names(&batch), ["uuid", "properties", "properties__json"]);
        assert_eq!(
            text(&batch, "properties", 0).as_deref(),
            Some(r#"{"$browser":"Safari","n":[1,2]}"#)
        );
        assert_eq!(text(&batch, "properties", 1), None);
        assert_eq!(
            text(&batch, "properties__json", 1).as_deref(),
            Some(r#""[1]""#),
            "a non-object is kept whole, as its source JSON"
        );
        assert_eq!(text(&batch, "properties", 2), None);
    }

    #[test]
    fn keys_past_the_column_budget_go_whole_into_one_rest_column() {
        let fields = [
            FieldSpec::fixed("uuid", ColumnType::Utf8),
            FieldSpec::flatten("properties"),
        ];
        let rows = [
            r#"["r0", "{\"a\": 1, \"b\": \"x\"}"]"#,
            r#"["r1", "{\"c\": true, \"d\": {\"n\": [1, 2]}, \"a\": 2, \"e\": null}"]"#,
            r#"["r2", "{\"e\": \"é\\\"q\", \"b\": \"y\"}"]"#,
        ];
        let mut b = BatchBuilder::new(&fields, FlattenMode::Flatten, &[])
            .unwrap()
            .with_column_budget(3);
        for row in rows {
            let row = raws(row);
            let row: Vec<&RawValue> = row.iter().map(AsRef::as_ref).collect();
            b.append_array_row(&row).unwrap();
        }
        let batch = b.finish_batch().unwrap().unwrap();
        assert_eq!(
            names(&batch),
            ["uuid", "properties__rest", "properties_a", "properties_b"]
        );
        assert_eq!(text(&batch, "properties__rest", 0), None);
        assert_eq!(
            text(&batch, "properties__rest", 1).as_deref(),
            Some(r#"{"c":true,"d":{"n":[1,2]}}"#),
            "keys without a column, values as their JSON; a null is an absent key"
        );
        assert_eq!(
            text(&batch, "properties__rest", 2).as_deref(),
            Some(r#"{"e":"é\"q"}"#)
        );
        assert_eq!(text(&batch, "properties_b", 2).as_deref(), Some("y"));
        // The next run, from the recorded columns, sends the same keys to the same places.
        let known = b.schema().to_specs();
        assert!(known.iter().any(|c| c.rest && c.name == "properties__rest"));
        let mut next = BatchBuilder::new(&fields, FlattenMode::Flatten, &known)
            .unwrap()
            .with_column_budget(3);
        let row = raws(r#"["r3", "{\"a\": 3, \"c\": false, \"f\": 1}"]"#);
        let row: Vec<&RawValue> = row.iter().map(AsRef::as_ref).collect();
        next.append_array_row(&row).unwrap();
        let batch = next.finish_batch().unwrap().unwrap();
        assert_eq!(batch.num_columns(), 4, "no new column");
        assert_eq!(
            text(&batch, "properties__rest", 0).as_deref(),
            Some(r#"{"c":false,"f":1}"#)
        );
    }

    #[test]
    fn a_repeated_key_past_the_budget_sends_the_row_to_the_json_column() {
        let fields = [FieldSpec::flatten("properties")];
        let mut b = BatchBuilder::new(&fields, FlattenMode::Flatten, &[])
            .unwrap()
            .with_column_budget(0);
        let row = raws(r#"["{\"z\": 1, \"z\": 2}"]"#);
        let row: Vec<&RawValue> = row.iter().map(AsRef::as_ref).collect();
        b.append_array_row(&row).unwrap();
        let batch = b.finish_batch().unwrap().unwrap();
        assert_eq!(names(&batch), ["properties__json"]);
    }

    #[test]
    fn a_key_twice_in_one_object_sends_that_row_whole_to_the_json_column() {
        let fields = [FieldSpec::flatten("properties")];
        // Each form twice: while `a` and `b` have no columns yet (the full path reads the row)
        // and once they have (the walk reads it entry by entry). A broken object after known
        // keys goes whole to `__json` too, with nothing appended before the fault, and so does
        // one whose nested value (`c`, a JSON column once known) balances but is not JSON.
        let forms = [
            r#"["{\"a\": 1, \"a\": 2}"]"#,
            r#"["{\"a\": null, \"a\": 2}"]"#,
            r#"["{\"a\": 2, \"a\": null}"]"#,
            r#"["{\"a\": 1, \"b\": 1, \"a\": \"x\"}"]"#,
            r#"["{\"a\": 7, \"b\": 8, \"c\" 9}"]"#,
            r#"["{\"a\": 7, \"c\": {\"x\": y}}"]"#,
            r#"["{\"a\": 7, \"c\": [1, 2}}"]"#,
        ];
        let known = r#"["{\"a\": 3, \"b\": null, \"c\": {\"x\": [1]}}"]"#;
        let mut b = BatchBuilder::new(&fields, FlattenMode::Flatten, &[]).unwrap();
        let rows: Vec<&str> = forms
            .iter()
            .chain([&known])
            .chain(&forms)
            .copied()
            .collect();
        for row in &rows {
            let row = raws(row);
            let row: Vec<&RawValue> = row.iter().map(AsRef::as_ref).collect();
            b.append_array_row(&row).unwrap();
        }
        let batch = b.finish_batch().unwrap().unwrap();
        for (n, row) in rows.iter().enumerate() {
            if *row == known {
                assert_eq!(text(&batch, "properties__json", n), None);
                continue;
            }
            // The whole value, as the JSON string it arrived as.
            let whole: String = serde_json::from_str::<Vec<String>>(row).unwrap().remove(0);
            let json = serde_json::to_string(&whole).unwrap();
            assert_eq!(text(&batch, "properties__json", n), Some(json), "row {n}");
        }
        let a = batch.column_by_name("properties_a").unwrap();
        assert_eq!(a.as_primitive::<Int64Type>().value(forms.len()), 3);
        let c = text(&batch, "properties_c", forms.len());
        assert_eq!(c.as_deref(), Some(r#"{"x":[1]}"#));
        assert_eq!(
            a.null_count(),
            rows.len() - 1,
            "the rows with a repeated key or a fault wrote nothing else"
        );
    }

    #[test]
    fn recycled_vectors_keep_their_allocation() {
        let text = String::from("x");
        let mut full: Vec<(Cow<'_, str>, Entry<'_>)> = Vec::with_capacity(64);
        full.push((Cow::Borrowed(&text), Entry::Str(&text)));
        let spare: Vec<(Cow<'static, str>, Entry<'static>)> = recycle(full);
        assert!(spare.is_empty());
        assert!(spare.capacity() >= 64, "{}", spare.capacity());
    }

    #[test]
    fn a_column_starts_its_next_batch_with_the_room_of_its_last() {
        let fields = [
            FieldSpec::fixed("n", ColumnType::Int64),
            FieldSpec::fixed("s", ColumnType::Utf8),
        ];
        let mut builder = BatchBuilder::new(&fields, FlattenMode::Flatten, &[]).unwrap();
        for i in 0..1000 {
            let row = raws(&format!(r#"[{i}, "{}"]"#, "x".repeat(20)));
            builder.append_array_row(&row).unwrap();
        }
        let first = builder.finish_batch().unwrap().unwrap();
        assert_eq!(first.num_rows(), 1000);
        let room = builder.columns.capacities[1];
        assert!(room.rows >= 1000 && room.bytes >= 20_000, "{room:?}");
        builder.append_array_row(&raws(r#"[7, "y"]"#)).unwrap();
        match &builder.columns.builders[0] {
            ColumnBuilder::Int(b) => assert!(b.capacity() >= 1000, "{}", b.capacity()),
            _ => panic!("`n` is an Int64 column"),
        }
        // The room changes nothing in what the batch holds.
        let second = builder.finish_batch().unwrap().unwrap();
        assert_eq!(second.num_rows(), 1);
        assert_eq!(text(&second, "s", 0).as_deref(), Some("y"));
    }

    fn any_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "[a-z\"\\\\/é\n\u{1F600} ]{0,6}".prop_map(Value::from),
            Just(Value::from("2025-01-02T03:04:05Z")),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\"]{1,3}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Properties held in a string (the flattener's walk, entry by entry) and the same
        /// object sent as an object (the full path) give the same batch, whatever the keys'
        /// order, types that change from row to row (`__json` columns made and then used),
        /// nulls, escapes, nested values (compact, or spaced over lines) and keys past a
        /// column budget (`__rest`).
        #[test]
        fn properties_as_a_string_or_as_an_object_flatten_alike(
            rows in proptest::collection::vec(
                proptest::collection::vec((0usize..6, any_value(), proptest::bool::ANY), 0..7),
                1..25,
            ),
            budget in proptest::option::of(0usize..8),
        ) {
            const KEYS: [&str; 6] = ["a", "b", "$c", "d e", "é", "q\"uote"];
            let fields = [FieldSpec::fixed("n", ColumnType::Int64), FieldSpec::flatten("properties")];
            let budget = budget.unwrap_or(usize::MAX);
            let builder = || {
                BatchBuilder::new(&fields, FlattenMode::Flatten, &[])
                    .unwrap()
                    .with_column_budget(budget)
            };
            let (mut held, mut plain) = (builder(), builder());
            for (n, entries) in rows.iter().enumerate() {
                // Each key once (a repeated key sends the row's source text to `__json`,
                // which differs between the two forms by design: see the test below).
                let mut seen = std::collections::HashSet::new();
                let object: Vec<String> = entries
                    .iter()
                    .filter(|(k, _, _)| seen.insert(*k))
                    .map(|(k, v, spaced)| {
                        let v = if *spaced {
                            serde_json::to_string_pretty(v).unwrap()
                        } else {
                            v.to_string()
                        };
                        format!("{}:{}", serde_json::to_string(KEYS[*k]).unwrap(), v)
                    })
                    .collect();
                let object = format!("{{{}}}", object.join(","));
                let literal = serde_json::to_string(&object).unwrap();
                for (builder, cell) in [(&mut held, &literal), (&mut plain, &object)] {
                    let row = raws(&format!("[{n},{cell}]"));
                    let row: Vec<&RawValue> = row.iter().map(AsRef::as_ref).collect();
                    builder.append_array_row(&row).unwrap();
                }
            }
            let (held, plain) = (held.finish_batch().unwrap(), plain.finish_batch().unwrap());
            proptest::prop_assert_eq!(held, plain);
        }
    }

    /// Keys first seen after the table has its budget of columns keep no state: a project
    /// whose keys are unique per event (an id in the key) must not grow memory with every
    /// event. Their values still reach `__rest`, and one repeated in an object still sends the
    /// row whole to `__json`, on the walk and on the full path alike.
    #[test]
    fn unique_keys_past_the_budget_keep_no_state() {
        let fields = [FieldSpec::flatten("properties")];
        let mut b = BatchBuilder::new(&fields, FlattenMode::Flatten, &[])
            .unwrap()
            .with_column_budget(2);
        let mut rows: Vec<String> = Vec::new();
        for n in 0..2_000 {
            // `a` and `b` fill the budget; `id_n` is new in every row (null in every 7th).
            let value = if n % 7 == 0 {
                "null".to_owned()
            } else {
                n.to_string()
            };
            let object = format!(r#"{{"a":1,"b":"x","id_{n}":{value}}}"#);
            rows.push(serde_json::to_string(&object).unwrap());
        }
        // A new key twice in one object, once on the walk's side (the rest column exists by
        // then) and once through the full path (an object sent as an object).
        rows.push(serde_json::to_string(r#"{"a":1,"dup":1,"dup":2}"#).unwrap());
        rows.push(r#"{"a":1,"dup2":1,"dup2":2}"#.to_owned());
        for row in &rows {
            let row = raws(&format!("[{row}]"));
            let row: Vec<&RawValue> = row.iter().map(AsRef::as_ref).collect();
            b.append_array_row(&row).unwrap();
        }
        assert!(
            b.key_slots[0].slots.len() <= 2,
            "{} key slots kept",
            b.key_slots[0].slots.len()
        );
        let batch = b.finish_batch().unwrap().unwrap();
        assert_eq!(
            names(&batch),
            [
                "properties__json",
                "properties__rest",
                "properties_a",
                "properties_b"
            ]
        );
        assert_eq!(
            text(&batch, "properties__rest", 1).as_deref(),
            Some(r#"{"id_1":1}"#)
        );
        assert_eq!(
            text(&batch, "properties__rest", 7),
            None,
            "a null is left out"
        );
        for n in [2_000, 2_001] {
            assert!(text(&batch, "properties__json", n).is_some(), "row {n}");
            assert_eq!(text(&batch, "properties__rest", n), None, "row {n}");
        }
    }

    /// The key lookup predicts each key from the one before it in the last object: keys in
    /// any order, inserted, missing or repeated across rows still land in their own columns.
    #[test]
    fn keys_in_changing_orders_land_in_their_own_columns() {
        let fields = [FieldSpec::flatten("properties")];
        let mut b = BatchBuilder::new(&fields, FlattenMode::Flatten, &[]).unwrap();
        let orders: [&[&str]; 7] = [
            &["a", "b", "c"],
            &["b", "a", "c"],
            &["a", "x", "b", "c"],
            &["c"],
            &["a", "b", "c"],
            &["c", "b", "a", "x"],
            &[],
        ];
        for (row, keys) in orders.iter().enumerate() {
            // Written by hand: the keys keep this order.
            let entries: Vec<String> = keys
                .iter()
                .map(|k| format!(r#""{k}":"{k}{row}""#))
                .collect();
            let literal = serde_json::to_string(&format!("{{{}}}", entries.join(",")));
            let row = raws(&format!("[{}]", literal.unwrap()));
            let row: Vec<&RawValue> = row.iter().map(AsRef::as_ref).collect();
            b.append_array_row(&row).unwrap();
        }
        let batch = b.finish_batch().unwrap().unwrap();
        for (row, keys) in orders.iter().enumerate() {
            for key in ["a", "b", "c", "x"] {
                let want = keys.contains(&key).then(|| format!("{key}{row}"));
                assert_eq!(text(&batch, &format!("properties_{key}"), row), want);
            }
        }
    }

    #[test]
    fn person_properties_flatten_with_their_own_prefix() {
        let fields = [
            FieldSpec::flatten("properties"),
            FieldSpec::flatten("person_properties"),
        ];
        let mut b = BatchBuilder::new(&fields, FlattenMode::Flatten, &[]).unwrap();
        let row = raws(r#"["{\"plan\":\"free\"}", {"plan": "pro", "$initial_os": "iOS"}]"#);
        let row: Vec<&RawValue> = row.iter().map(AsRef::as_ref).collect();
        b.append_array_row(&row).unwrap();
        let batch = b.finish_batch().unwrap().unwrap();
        assert_eq!(
            names(&batch),
            [
                "person_properties_$initial_os",
                "person_properties_plan",
                "properties_plan"
            ]
        );
        assert_eq!(
            text(&batch, "person_properties_plan", 0).as_deref(),
            Some("pro")
        );
        assert_eq!(text(&batch, "properties_plan", 0).as_deref(), Some("free"));
    }

    #[test]
    fn rest_objects_get_declared_and_first_sight_columns() {
        let fields = [
            FieldSpec::fixed("id", ColumnType::Int64),
            FieldSpec::fixed("created_at", ColumnType::Timestamp),
        ];
        let mut b = BatchBuilder::new(&fields, FlattenMode::Flatten, &[]).unwrap();
        for obj in [
            r#"{"id": 7, "name": "Power users", "created_at": "2025-01-02T13:57:30Z", "filters": {"a": 1}}"#,
            r#"{"id": 8, "name": null, "count": 3}"#,
        ] {
            let raw: Box<RawValue> = serde_json::from_str(obj).unwrap();
            b.append_object_row(&raw).unwrap();
        }
        let not_object: Box<RawValue> = serde_json::from_str("[1]").unwrap();
        assert!(b.append_object_row(&not_object).is_err());
        let batch = b.finish_batch().unwrap().unwrap();
        assert_eq!(
            names(&batch),
            ["id", "created_at", "count", "filters", "name"]
        );
        let ids = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!((ids.value(0), ids.value(1)), (7, 8));
        assert_eq!(text(&batch, "filters", 0).as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(text(&batch, "name", 1), None);
        assert_eq!(batch.num_rows(), 2, "the refused row left nothing behind");
    }

    #[test]
    fn a_row_of_the_wrong_width_is_refused_without_a_trace() {
        let fields = [FieldSpec::fixed("uuid", ColumnType::Utf8)];
        let mut b = BatchBuilder::new(&fields, FlattenMode::Flatten, &[]).unwrap();
        let row = raws(r#"["a", "b"]"#);
        let row: Vec<&RawValue> = row.iter().map(AsRef::as_ref).collect();
        assert!(b.append_array_row(&row).is_err());
        assert!(b.is_empty());
        assert!(b.finish_batch().unwrap().is_none());
    }
}
