//! The columns of one output table, how they were named, and where each value came from.
//!
//! # The type rule
//!
//! Every column has one type for the life of the table (the state records the columns, so the
//! next run continues with the same ones):
//!
//! - Fixed columns have a declared type ([`FieldKind`]): `timestamp` and `created_at` are
//!   `Timestamp(µs, UTC)`, `uuid`, `event`, `distinct_id`, `person_id` are strings.
//! - A flattened property (`properties.X` → `properties_X`) or an undeclared top-level field
//!   takes its type from the first non-null value seen: boolean → [`ColumnType::Boolean`],
//!   integer that fits `i64` → [`ColumnType::Int64`], other finite number →
//!   [`ColumnType::Float64`], string → [`ColumnType::Utf8`], object or array →
//!   [`ColumnType::Json`] (compact JSON text).
//! - A later value that does not fit the column's type is **not** converted: it goes, as its JSON
//!   text, into a sibling column named `<column>__json` (type [`ColumnType::Json`]), and the
//!   typed column is null in that row. So `42`, `"42"` and `true` for one property all come back
//!   exactly. A `Float64` column accepts integers up to 2^53 in magnitude (exact in `f64`);
//!   numbers are compared by value, so `1.50` reads back as `1.5`.
//! - A `Json` column holds the JSON text of any value (a string is stored with its quotes).
//! - A number with a fraction or exponent is read as the nearest `f64`, as JavaScript (where
//!   most events come from) holds it.
//! - Numbers with no `i64`/`f64` form (`1e400`, `1e-400`, `18446744073709551616`) and strings whose
//!   escapes are not valid Unicode (`"\ud800"`) are kept as their JSON text, in the sibling
//!   column when the column is typed.
//! - JSON `null` and an absent property are the same: a null cell.
//! - When a properties value is not a JSON object (or repeats a key, or has a key that is not
//!   valid Unicode), the row's whole source value goes into `properties__json` unchanged.
//!
//! Names keep PostHog's `$`. Two columns never differ only by letter case (DuckDB matches
//! names case-insensitively): the later one gets a `~2`, `~3`, ... suffix.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// The type of an output column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// UTF-8 text.
    Utf8,
    /// 64-bit signed integer.
    Int64,
    /// 64-bit float (always finite).
    Float64,
    /// Boolean.
    Boolean,
    /// Microseconds since the epoch, UTC (Arrow `Timestamp(Microsecond, "UTC")`).
    Timestamp,
    /// Compact JSON text (stored as UTF-8).
    Json,
}

impl ColumnType {
    /// Every type, in declaration order.
    pub const ALL: [ColumnType; 6] = [
        ColumnType::Utf8,
        ColumnType::Int64,
        ColumnType::Float64,
        ColumnType::Boolean,
        ColumnType::Timestamp,
        ColumnType::Json,
    ];

    /// The type named `name` (as [`ColumnType::as_str`] spells it), e.g. when reading the
    /// columns recorded in a state file.
    ///
    /// ```
    /// use posthog_core::ColumnType;
    /// assert_eq!(ColumnType::from_name("int64"), Some(ColumnType::Int64));
    /// assert_eq!(ColumnType::from_name("Int64"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<ColumnType> {
        ColumnType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The name used in the state and in docs.
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Utf8 => "utf8",
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::Boolean => "boolean",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Json => "json",
        }
    }
}

/// How a top-level field of the source rows becomes columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// One column of this fixed type.
    Fixed(ColumnType),
    /// A JSON object (or a string holding one, as HogQL returns `properties`): each key `X`
    /// becomes a column `<field>_X` typed by first sight. In [`FlattenMode::Raw`] the field is
    /// one JSON column instead.
    Flatten,
    /// One column typed by the first non-null value seen.
    Dynamic,
}

/// Whether property objects are spread into columns or kept whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlattenMode {
    /// `properties.X` → `properties_X` (the seed's `_flatten_event`).
    #[default]
    Flatten,
    /// `properties` stays one JSON text column (PostHog's own export shape).
    Raw,
}

/// One top-level field of the source rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    /// The field's name in the source (a HogQL column alias or a REST key).
    pub name: String,
    /// How it becomes columns.
    pub kind: FieldKind,
}

impl FieldSpec {
    /// A field with a fixed column type.
    pub fn fixed(name: impl Into<String>, ty: ColumnType) -> Self {
        FieldSpec {
            name: name.into(),
            kind: FieldKind::Fixed(ty),
        }
    }

    /// A field whose object is flattened into `<name>_<key>` columns.
    pub fn flatten(name: impl Into<String>) -> Self {
        FieldSpec {
            name: name.into(),
            kind: FieldKind::Flatten,
        }
    }

    /// A field typed by its first non-null value.
    pub fn dynamic(name: impl Into<String>) -> Self {
        FieldSpec {
            name: name.into(),
            kind: FieldKind::Dynamic,
        }
    }
}

/// One output column and where its values come from; the state stores a list of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSpec {
    /// Column name in the output files.
    pub name: String,
    /// Column type; never changes for a table.
    #[serde(rename = "type")]
    pub data_type: ColumnType,
    /// The top-level source field (`uuid`, `properties`, ...).
    pub field: String,
    /// The key inside the field for flattened properties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// True for a `__json` sibling holding values that did not fit the typed column.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fallback: bool,
    /// True for a `<field>__rest` column: a JSON object of the keys of `field` that have no
    /// column of their own (the table reached its column budget before they first appeared).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rest: bool,
}

/// Identifies the source of a column: (field, key, fallback).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SourceKey {
    pub field: String,
    pub key: Option<String>,
    pub fallback: bool,
    pub rest: bool,
}

impl SourceKey {
    /// A top-level field's column (or its `__json` sibling).
    pub(crate) fn field(name: &str, fallback: bool) -> Self {
        SourceKey {
            field: name.to_owned(),
            key: None,
            fallback,
            rest: false,
        }
    }
}

/// The growing set of columns of one table. Column ids (indexes) are stable; output order is
/// fixed columns first (in declaration order) and then the others sorted by name.
#[derive(Debug, Clone, Default)]
pub struct TableSchema {
    columns: Vec<ColumnSpec>,
    by_source: HashMap<SourceKey, usize>,
    lower_names: HashSet<String>,
    fixed_count: usize,
    /// Output order, rebuilt when columns are added.
    order: Vec<usize>,
}

/// A column list from the state that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the recorded columns are inconsistent: {0}")]
pub struct SchemaError(pub String);

impl TableSchema {
    /// A schema holding the fixed columns of `fields` (and flattened fields' raw column in
    /// [`FlattenMode::Raw`]), then the `known` columns recorded by earlier runs.
    pub fn new(
        fields: &[FieldSpec],
        mode: FlattenMode,
        known: &[ColumnSpec],
    ) -> Result<Self, SchemaError> {
        let mut schema = TableSchema::default();
        for field in fields {
            let ty = match (field.kind, mode) {
                (FieldKind::Fixed(ty), _) => ty,
                (FieldKind::Flatten, FlattenMode::Raw) => ColumnType::Json,
                _ => continue,
            };
            let source = SourceKey {
                field: field.name.clone(),
                key: None,
                fallback: false,
                rest: false,
            };
            if let Some(&id) = schema.by_source.get(&source) {
                let existing = &schema.columns[id];
                return Err(SchemaError(format!(
                    "field {:?} is declared twice",
                    existing.field
                )));
            }
            schema.add(source, field.name.clone(), ty);
        }
        schema.fixed_count = schema.columns.len();
        for spec in known {
            let source = SourceKey {
                field: spec.field.clone(),
                key: spec.key.clone(),
                fallback: spec.fallback,
                rest: spec.rest,
            };
            match schema.by_source.get(&source) {
                Some(&id) if schema.columns[id].data_type == spec.data_type => {}
                Some(&id) => {
                    return Err(SchemaError(format!(
                        "column {:?} was recorded as {} but is declared {}",
                        spec.name,
                        spec.data_type.as_str(),
                        schema.columns[id].data_type.as_str()
                    )));
                }
                None => {
                    if schema.lower_names.contains(&spec.name.to_lowercase()) {
                        return Err(SchemaError(format!(
                            "column name {:?} is recorded twice",
                            spec.name
                        )));
                    }
                    schema.push(source, spec.name.clone(), spec.data_type);
                }
            }
        }
        schema.rebuild_order();
        Ok(schema)
    }

    /// All columns, by id.
    pub fn columns(&self) -> &[ColumnSpec] {
        &self.columns
    }

    /// Column ids in output order.
    pub fn output_order(&self) -> &[usize] {
        &self.order
    }

    /// The columns in output order, as the state records them.
    pub fn to_specs(&self) -> Vec<ColumnSpec> {
        self.order
            .iter()
            .map(|&i| self.columns[i].clone())
            .collect()
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// True when there are no columns.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn lookup(&self, source: &SourceKey) -> Option<usize> {
        self.by_source.get(source).copied()
    }

    /// Adds a column for `source` named after `base` (made unique), returning its id.
    pub(crate) fn add(&mut self, source: SourceKey, base: String, ty: ColumnType) -> usize {
        let name = self.unique_name(base);
        let id = self.push(source, name, ty);
        // Keep the non-fixed part of the order sorted by name: one binary search, no re-sort.
        let rest = &self.order[self.fixed_count.min(self.order.len())..];
        let at = rest.partition_point(|&other| self.columns[other].name < self.columns[id].name);
        self.order.insert(self.fixed_count + at, id);
        id
    }

    fn push(&mut self, source: SourceKey, name: String, ty: ColumnType) -> usize {
        let id = self.columns.len();
        self.lower_names.insert(name.to_lowercase());
        self.columns.push(ColumnSpec {
            name,
            data_type: ty,
            field: source.field.clone(),
            key: source.key.clone(),
            fallback: source.fallback,
            rest: source.rest,
        });
        self.by_source.insert(source, id);
        id
    }

    fn unique_name(&self, base: String) -> String {
        if !self.lower_names.contains(&base.to_lowercase()) {
            return base;
        }
        (2u64..)
            .map(|n| format!("{base}~{n}"))
            .find(|candidate| !self.lower_names.contains(&candidate.to_lowercase()))
            // The range is unbounded and the set finite, so a free name always exists.
            .unwrap_or(base)
    }

    fn rebuild_order(&mut self) {
        let mut rest: Vec<usize> = (self.fixed_count..self.columns.len()).collect();
        rest.sort_by(|&a, &b| self.columns[a].name.cmp(&self.columns[b].name));
        self.order = (0..self.fixed_count).chain(rest).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prop(key: &str) -> SourceKey {
        SourceKey {
            field: "properties".into(),
            key: Some(key.into()),
            fallback: false,
            rest: false,
        }
    }

    #[test]
    fn fixed_columns_come_first_then_the_rest_by_name() {
        let fields = [
            FieldSpec::fixed("uuid", ColumnType::Utf8),
            FieldSpec::fixed("timestamp", ColumnType::Timestamp),
            FieldSpec::flatten("properties"),
        ];
        let mut schema = TableSchema::new(&fields, FlattenMode::Flatten, &[]).unwrap();
        schema.add(prop("z"), "properties_z".into(), ColumnType::Utf8);
        schema.add(prop("a"), "properties_a".into(), ColumnType::Int64);
        let names: Vec<_> = schema.to_specs().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["uuid", "timestamp", "properties_a", "properties_z"]);
    }

    #[test]
    fn names_differing_only_by_case_are_made_unique() {
        let mut schema = TableSchema::default();
        schema.add(prop("Plan"), "properties_Plan".into(), ColumnType::Utf8);
        let id = schema.add(prop("plan"), "properties_plan".into(), ColumnType::Utf8);
        assert_eq!(schema.columns()[id].name, "properties_plan~2");
        let id = schema.add(prop("plan~2"), "properties_plan~2".into(), ColumnType::Utf8);
        assert_eq!(schema.columns()[id].name, "properties_plan~2~2");
    }

    #[test]
    fn recorded_columns_are_restored_with_their_names_and_types() {
        let fields = [FieldSpec::fixed("uuid", ColumnType::Utf8)];
        let mut first = TableSchema::new(&fields, FlattenMode::Flatten, &[]).unwrap();
        first.add(prop("n"), "properties_n".into(), ColumnType::Int64);
        let recorded = first.to_specs();
        let json = serde_json::to_string(&recorded).unwrap();
        let back: Vec<ColumnSpec> = serde_json::from_str(&json).unwrap();
        let second = TableSchema::new(&fields, FlattenMode::Flatten, &back).unwrap();
        assert_eq!(second.to_specs(), recorded);
        assert_eq!(second.lookup(&prop("n")), Some(1));
    }

    #[test]
    fn a_recorded_type_that_contradicts_a_declared_one_is_refused() {
        let fields = [FieldSpec::fixed("uuid", ColumnType::Utf8)];
        let bad = [ColumnSpec {
            name: "uuid".into(),
            data_type: ColumnType::Int64,
            field: "uuid".into(),
            key: None,
            fallback: false,
            rest: false,
        }];
        assert!(TableSchema::new(&fields, FlattenMode::Flatten, &bad).is_err());
    }
}
