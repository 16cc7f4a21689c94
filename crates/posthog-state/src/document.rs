//! The state document: the bytes of a state store (one JSON object keyed by table name), checked
//! when read and rendered the same way by every store that keeps it, on a disk or in an object
//! store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_json::{Map, Value};

use crate::model::UNVERSIONED_FORMAT;
use crate::{FORMAT_VERSION, StateError, TableState};

/// The whole content of a state store: one JSON object keyed by table name whose values are
/// [`TableState`] entries (the seed's shape; entries without a `format_version` are read as
/// version 1, and every version this build reads is migrated to [`FORMAT_VERSION`] on load).
///
/// - **Never guess.** [`StateDocument::parse`] checks every entry: bytes that are empty, not
///   JSON, not in the state shape, or from a newer format are refused, so the caller never
///   overwrites them. Every entry the document holds loads, so [`StateDocument::load`] only
///   fails if those checks have a gap.
/// - **Untouched entries stay as read.** Entries are kept as JSON values: tables a run does not
///   commit, and fields this build does not know, are rendered back exactly as they were read.
/// - **Deterministic output.** [`StateDocument::render`] writes pretty-printed JSON, table
///   names sorted, with a trailing newline.
///
/// ```
/// use std::path::Path;
/// use posthog_state::{StateDocument, TableState};
///
/// # fn main() -> Result<(), posthog_state::StateError> {
/// let mut doc = StateDocument::parse(Path::new("state.json"), br#"{"b": {"last_uuid": null}}"#)?;
/// let state = TableState { last_uuid: Some("u1".into()), ..TableState::default() };
/// doc.set("a", &state)?;
/// let text = String::from_utf8(doc.render()?).unwrap();
/// assert!(text.starts_with("{\n  \"a\": {") && text.ends_with("}\n"));
/// assert_eq!(doc.load("a")?, Some(state));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StateDocument {
    /// Where the document is kept, named in every error.
    location: PathBuf,
    tables: BTreeMap<String, Value>,
}

impl StateDocument {
    /// An empty document (a store that has no file or object yet) kept at `location`.
    pub fn empty(location: impl Into<PathBuf>) -> StateDocument {
        StateDocument {
            location: location.into(),
            tables: BTreeMap::new(),
        }
    }

    /// Reads and checks the bytes of the state kept at `location` (a path, or an object's URL
    /// as a path, used in errors only). Every entry must load as a [`TableState`] and pass its
    /// checks, so later loads cannot fail and nothing unreadable is ever written back.
    ///
    /// Errors: [`StateError::Corrupt`] (empty, not JSON, not the state shape, an entry that does
    /// not load) or [`StateError::UnsupportedVersion`].
    pub fn parse(location: &Path, bytes: &[u8]) -> Result<StateDocument, StateError> {
        let corrupt = |reason: String| StateError::Corrupt {
            path: location.to_path_buf(),
            reason,
        };
        if bytes.is_empty() {
            // Our writes are atomic, so an empty file was made or truncated by something else;
            // reading it as "no state" would re-extract everything and duplicate committed rows.
            return Err(corrupt("the file is empty (0 bytes)".into()));
        }
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not valid JSON: {e}")))?;
        let Value::Object(tables) = value else {
            return Err(corrupt(format!(
                "expected a JSON object keyed by table name, found {}",
                kind(&value)
            )));
        };
        for (table, entry) in &tables {
            read_entry(location, table, entry)?;
        }
        Ok(StateDocument {
            location: location.to_path_buf(),
            tables: tables.into_iter().collect(),
        })
    }

    /// Where the document is kept, as given to [`StateDocument::parse`] or
    /// [`StateDocument::empty`].
    pub fn location(&self) -> &Path {
        &self.location
    }

    /// The names of the tables with an entry, sorted.
    pub fn tables(&self) -> impl Iterator<Item = &str> + '_ {
        self.tables.keys().map(String::as_str)
    }

    /// The table's entry, migrated to [`FORMAT_VERSION`]; `None` when it has none. The document
    /// keeps the entry as it was read until [`StateDocument::set`] replaces it.
    pub fn load(&self, table: &str) -> Result<Option<TableState>, StateError> {
        let Some(entry) = self.tables.get(table) else {
            return Ok(None);
        };
        // Checked on parse and on set, so this only fails if those checks have a gap.
        read_entry(&self.location, table, entry).map(Some)
    }

    /// The table's entry as JSON, exactly as read or set.
    pub fn entry(&self, table: &str) -> Option<&Value> {
        self.tables.get(table)
    }

    /// Replaces the table's entry with `state`, after [`TableState::validate`]. Answers the
    /// entry it replaced, so a caller whose write then fails can put it back with
    /// [`StateDocument::set_entry`].
    ///
    /// Errors: [`StateError::InvalidState`], and the document is unchanged.
    pub fn set(&mut self, table: &str, state: &TableState) -> Result<Option<Value>, StateError> {
        state.validate(table)?;
        let entry = serde_json::to_value(state).map_err(|e| StateError::InvalidState {
            table: table.to_owned(),
            reason: format!("cannot be written as JSON: {e}"),
        })?;
        Ok(self.tables.insert(table.to_owned(), entry))
    }

    /// Sets the table's entry to a JSON value (one read from another document of the same
    /// store, or one [`StateDocument::set`] answered), or removes it (`None`). The entry is
    /// checked as [`StateDocument::parse`] checks entries. Answers the entry it replaced.
    ///
    /// Errors: [`StateError::Corrupt`] or [`StateError::UnsupportedVersion`], and the document
    /// is unchanged.
    pub fn set_entry(
        &mut self,
        table: &str,
        entry: Option<Value>,
    ) -> Result<Option<Value>, StateError> {
        match entry {
            Some(entry) => {
                read_entry(&self.location, table, &entry)?;
                Ok(self.tables.insert(table.to_owned(), entry))
            }
            None => Ok(self.tables.remove(table)),
        }
    }

    /// The document's bytes: pretty-printed JSON, table names sorted, trailing newline.
    ///
    /// Errors: [`StateError::Corrupt`] if the JSON writer refuses the document, which it cannot
    /// do for values it read or wrote itself.
    pub fn render(&self) -> Result<Vec<u8>, StateError> {
        let mut bytes =
            serde_json::to_vec_pretty(&self.tables).map_err(|e| StateError::Corrupt {
                path: self.location.clone(),
                reason: format!("cannot be written as JSON: {e}"),
            })?;
        bytes.push(b'\n');
        Ok(bytes)
    }
}

/// Reads one table's entry: checks its version, loads it, checks it, and migrates it to
/// [`FORMAT_VERSION`]. Every error names the file, the table and, when one is at fault, the
/// field.
fn read_entry(path: &Path, table: &str, entry: &Value) -> Result<TableState, StateError> {
    let corrupt = |reason: String| StateError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("table {table:?}: {reason}"),
    };
    let Value::Object(fields) = entry else {
        return Err(corrupt(format!(
            "expected an object, found {}",
            kind(entry)
        )));
    };
    // The version decides how to read the rest, so it is checked before anything else: a newer
    // entry must be reported as newer, not as corrupt.
    let version = match fields.get("format_version") {
        None => UNVERSIONED_FORMAT,
        Some(version) => match version.as_u64() {
            Some(found) if (1..=u64::from(FORMAT_VERSION)).contains(&found) => {
                // In range, so it fits.
                u32::try_from(found).unwrap_or(FORMAT_VERSION)
            }
            Some(found) => {
                return Err(StateError::UnsupportedVersion {
                    path: path.to_path_buf(),
                    table: table.to_owned(),
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            None => {
                let found = match version {
                    Value::Number(n) => format!("the number {n}"),
                    other => kind(other).to_owned(),
                };
                return Err(corrupt(format!(
                    "format_version must be a positive integer, found {found}"
                )));
            }
        },
    };
    let mut state = TableState::deserialize(entry).map_err(|e| match blame_field(fields) {
        Some(field) => corrupt(format!("field {field:?}: {e}")),
        None => corrupt(e.to_string()),
    })?;
    state.problem().map_err(corrupt)?;
    migrate(&mut state, version);
    Ok(state)
}

/// Brings an entry read as `version` to [`FORMAT_VERSION`]. Each version adds its step here
/// (`1 => …, 2 => …`) and keeps the older ones, so an entry of any supported version is read in
/// one pass. 1 → 2 converts nothing: version 2 only adds the optional part ranges, and a
/// version 1 part has none (its range is unknown). 2 → 3 converts nothing either: version 3
/// only adds `committed_ranges`, and an older entry has none.
fn migrate(state: &mut TableState, version: u32) {
    debug_assert!((1..=FORMAT_VERSION).contains(&version));
    state.format_version = FORMAT_VERSION;
}

/// The first field that does not load on its own, to name it in the error (serde's messages
/// say what type was wrong but not where). Runs only when an entry has already failed.
fn blame_field(fields: &Map<String, Value>) -> Option<&str> {
    fields.iter().find_map(|(name, value)| {
        let alone = Value::Object(Map::from_iter([(name.clone(), value.clone())]));
        TableState::deserialize(&alone)
            .is_err()
            .then_some(name.as_str())
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_field_is_named() {
        let err = StateDocument::parse(
            Path::new("s.json"),
            br#"{"t": {"last_timestamp": null, "rows_total": "many"}}"#,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(r#"table "t": field "rows_total": invalid type"#),
            "{msg}"
        );
    }

    #[test]
    fn set_answers_the_replaced_entry_and_set_entry_puts_it_back() {
        let mut doc = StateDocument::empty("s.json");
        let first = TableState {
            last_uuid: Some("u1".into()),
            ..TableState::default()
        };
        assert_eq!(doc.set("t", &first).unwrap(), None);
        let before = doc.clone();
        let replaced = doc.set("t", &TableState::default()).unwrap();
        assert_ne!(doc, before);
        doc.set_entry("t", replaced).unwrap();
        assert_eq!(doc, before);
        assert_eq!(doc.load("t").unwrap(), Some(first));
        doc.set_entry("t", None).unwrap();
        assert_eq!(doc.tables().count(), 0);
    }

    #[test]
    fn set_entry_refuses_what_parse_would_refuse() {
        let mut doc = StateDocument::empty("s.json");
        let err = doc
            .set_entry("t", Some(serde_json::json!({"format_version": 99})))
            .unwrap_err();
        assert!(
            matches!(err, StateError::UnsupportedVersion { .. }),
            "{err}"
        );
        let err = doc
            .set_entry("t", Some(serde_json::json!([1])))
            .unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        assert_eq!(doc.tables().count(), 0, "nothing was set");
    }

    #[test]
    fn render_is_pretty_sorted_and_ends_with_a_newline() {
        let doc = StateDocument::parse(
            Path::new("s.json"),
            br#"{"b": {"last_uuid": null}, "a": {"last_uuid": "x", "unknown": [1]}}"#,
        )
        .unwrap();
        let text = String::from_utf8(doc.render().unwrap()).unwrap();
        assert_eq!(
            text,
            "{\n  \"a\": {\n    \"last_uuid\": \"x\",\n    \"unknown\": [\n      1\n    ]\n  },\n  \
             \"b\": {\n    \"last_uuid\": null\n  }\n}\n"
        );
    }
}
