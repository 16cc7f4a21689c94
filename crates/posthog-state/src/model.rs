//! The state of one extracted table, in the seed's field names, and its checks.

use std::path::{Component, Path};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::StateError;

/// The newest state format this build writes and reads. Entries without a `format_version`
/// (the seed's shape, or Osiris `inputs.state`) are read as version 1.
///
/// Versions so far:
///
/// - **1**: the seed's four fields plus `parts`, `next_part_seq`, `dedup_window`, `rows_total`,
///   `updated_at`, `run_id`. `format_version` may be absent (it then means 1), and `columns` may
///   be the seed's list of column names instead of column records: names alone carry no types,
///   so they are read as "no columns recorded" and the table's schema is learned again from the
///   data (every part file describes its own schema).
/// - **2**: each part may record the range of the incremental field its rows cover
///   (`first_timestamp`, `last_timestamp`), so a part that goes missing can be named with its
///   range and re-extracted exactly. Version 1 parts load with no range.
/// - **3**: `committed_ranges`: ranges of the incremental field beyond the watermark whose rows
///   are all in committed parts, left by a run that read its time range as concurrent slices
///   and stopped before they joined up. A build that does not know them would read those rows
///   again, so a state written by this build is refused by older ones. Older entries load
///   with none.
///
/// A store reads every version from 1 to this one and migrates an entry to this version when it
/// loads it; the file keeps the old entry until that table's next commit. Versions outside that
/// range are refused, never guessed at.
pub const FORMAT_VERSION: u32 = 3;

/// The version of an entry that has no `format_version` field.
pub(crate) const UNVERSIONED_FORMAT: u32 = 1;

/// The field names [`TableState`] knows. Keys in [`TableState::extra`] with one of these names
/// are never written, so a serialized entry has each key once. A test keeps the list in step
/// with the struct.
const KNOWN_FIELDS: [&str; 12] = [
    "format_version",
    "last_timestamp",
    "last_uuid",
    "recent_uuids",
    "columns",
    "dedup_window",
    "committed_ranges",
    "parts",
    "next_part_seq",
    "rows_total",
    "updated_at",
    "run_id",
];

/// Where an incremental extraction of one table stands, and which part files hold its rows.
///
/// The seed's four fields (`last_timestamp`, `last_uuid`, `recent_uuids`, `columns`) are enough
/// to load: every other field has a default. Values are kept as the engine gives them; this
/// crate interprets none of them beyond the checks in [`TableState::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TableState {
    /// Format of this entry; [`FORMAT_VERSION`] for everything this build writes (and for what a
    /// store's `load` returns, migrated), 1 when an entry does not say.
    #[serde(default = "unversioned")]
    pub format_version: u32,
    /// The high-water mark of the incremental field, RFC 3339 text (for example
    /// `2026-11-20T10:00:00.123456Z`), or `None` before the first run.
    pub last_timestamp: Option<String>,
    /// The UUID of the last row at `last_timestamp`, the keyset cursor's tie-breaker.
    pub last_uuid: Option<String>,
    /// The seed's list of recently emitted UUIDs. Kept for seed compatibility; the engine keeps
    /// its dedup set in [`TableState::dedup_window`].
    #[serde(deserialize_with = "null_as_empty")]
    pub recent_uuids: Vec<String>,
    /// The table's columns as last written, or `None` before the first part. The seed's list of
    /// bare column names reads as `None` (see [`FORMAT_VERSION`]).
    #[serde(deserialize_with = "column_records_or_seed_names")]
    pub columns: Option<Vec<ColumnRecord>>,
    /// The engine's compact dedup window as standard base64 text (with padding). Opaque here;
    /// see [`TableState::set_dedup_window_bytes`] and [`TableState::dedup_window_bytes`].
    pub dedup_window: Option<String>,
    /// Ranges beyond the watermark whose rows are all in committed parts, in time order (see
    /// [`CommittedRange`]); empty when everything committed lies at or before the watermark.
    #[serde(deserialize_with = "null_as_empty")]
    pub committed_ranges: Vec<CommittedRange>,
    /// The committed part files of the table, in commit order.
    #[serde(deserialize_with = "null_as_empty")]
    pub parts: Vec<PartRecord>,
    /// The sequence number the engine gives the next part it names; only ever grows.
    pub next_part_seq: u64,
    /// Rows in the committed parts.
    pub rows_total: u64,
    /// When this state was committed, RFC 3339 text.
    pub updated_at: Option<String>,
    /// The run that committed this state.
    pub run_id: Option<String>,
    /// Fields this build does not know, kept as read so that rewriting an entry written by a
    /// newer minor release does not drop them.
    #[serde(flatten, serialize_with = "serialize_unknown_only")]
    pub extra: Map<String, Value>,
}

/// One column of a table's schema.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ColumnRecord {
    /// Column name, as it appears in the part files (PostHog's `$` kept).
    pub name: String,
    /// The column's type name as the engine spells it, e.g. `utf8`.
    #[serde(rename = "type")]
    pub data_type: String,
    /// The top-level source field the column comes from (`uuid`, `properties`, ...), so a
    /// later run maps the same source to the same column. Absent in seed-shaped states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The key inside `field` for a flattened property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// True for a `__json` sibling holding values that did not fit the typed column.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fallback: bool,
    /// True for a `<field>__rest` column: the keys of `field` that have no column of their
    /// own (`output.max_columns`), as one JSON object per row.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rest: bool,
}

/// A range of the incremental field, after the watermark, whose rows are all in committed
/// parts: from `from` (inclusive) to the keyset position (`to`, `to_uuid`) inclusive.
///
/// A run that reads its time range as concurrent slices commits what every slice has written,
/// and the watermark moves only over the slices that finished one after the other from the
/// start; what a later slice wrote is recorded here, so the next run reads only the gaps
/// between ranges (and after the last) and never a committed row twice.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CommittedRange {
    /// The first instant of the range (RFC 3339); every row at or after it and up to the end
    /// position is committed.
    pub from: String,
    /// The incremental time of the range's last row (RFC 3339).
    pub to: String,
    /// The id of the range's last row, the keyset's tie-breaker.
    pub to_uuid: String,
    /// The ids emitted with times within the lookback before `to`, in the engine's compact
    /// form as standard base64 (see [`TableState::dedup_window`]), so that a run whose
    /// watermark reaches this range still drops what the range holds when it re-reads its
    /// lookback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_window: Option<String>,
}

/// One committed part file of a table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PartRecord {
    /// The file's path relative to the table's output directory, e.g.
    /// `part-00000003-00001.parquet`. Only plain relative paths are valid: no root, no `..`.
    pub file: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// SHA-256 of the file's bytes, lowercase hex.
    pub sha256: String,
    /// The smallest value of the table's incremental field among the part's rows (RFC 3339),
    /// for incremental tables; absent for snapshots and for parts written before format 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_timestamp: Option<String>,
    /// The largest value of the incremental field among the part's rows; see
    /// [`PartRecord::first_timestamp`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_timestamp: Option<String>,
}

impl Default for TableState {
    fn default() -> Self {
        TableState {
            format_version: FORMAT_VERSION,
            last_timestamp: None,
            last_uuid: None,
            recent_uuids: Vec::new(),
            columns: None,
            dedup_window: None,
            committed_ranges: Vec::new(),
            parts: Vec::new(),
            next_part_seq: 0,
            rows_total: 0,
            updated_at: None,
            run_id: None,
            extra: Map::new(),
        }
    }
}

impl TableState {
    /// Stores `bytes` as the dedup window, encoded as standard base64 with padding.
    pub fn set_dedup_window_bytes(&mut self, bytes: &[u8]) {
        self.dedup_window = Some(STANDARD.encode(bytes));
    }

    /// The dedup window decoded from base64, or `None` when there is none.
    ///
    /// `table` only names the table in the error: [`StateError::InvalidState`] when the text is
    /// not standard padded base64.
    pub fn dedup_window_bytes(&self, table: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.decode_dedup_window()
            .map_err(|reason| invalid(table, reason))
    }

    /// Checks what the stores refuse to write (and the file store refuses to read): a
    /// `format_version` outside `1..=FORMAT_VERSION`, a `dedup_window` that is not base64, a
    /// part path that is empty, absolute or climbs out of the table's directory with `..`.
    /// Gives [`StateError::InvalidState`] naming `table`.
    pub fn validate(&self, table: &str) -> Result<(), StateError> {
        self.problem().map_err(|reason| invalid(table, reason))
    }

    /// The first thing wrong with this state, as a sentence fragment.
    pub(crate) fn problem(&self) -> Result<(), String> {
        if !(1..=FORMAT_VERSION).contains(&self.format_version) {
            return Err(format!(
                "format_version {} is not one this build writes (1 through {FORMAT_VERSION})",
                self.format_version
            ));
        }
        self.decode_dedup_window()?;
        for (n, range) in self.committed_ranges.iter().enumerate() {
            range.dedup_window_bytes().map_err(|e| {
                format!("committed_ranges[{n}].dedup_window is not valid base64: {e}")
            })?;
        }
        for (n, part) in self.parts.iter().enumerate() {
            if !is_plain_relative_path(&part.file) {
                return Err(format!(
                    "parts[{n}]: part file {:?} is not a plain path inside the table's directory",
                    part.file
                ));
            }
        }
        Ok(())
    }

    fn decode_dedup_window(&self) -> Result<Option<Vec<u8>>, String> {
        match &self.dedup_window {
            None => Ok(None),
            Some(text) => STANDARD
                .decode(text)
                .map(Some)
                .map_err(|e| format!("dedup_window is not valid base64: {e}")),
        }
    }
}

impl CommittedRange {
    /// Stores `bytes` as the range's dedup window (standard base64 with padding).
    pub fn set_dedup_window_bytes(&mut self, bytes: &[u8]) {
        self.dedup_window = Some(STANDARD.encode(bytes));
    }

    /// The range's dedup window decoded from base64, or `None` when it has none; the error
    /// says why the text is not base64.
    pub fn dedup_window_bytes(&self) -> Result<Option<Vec<u8>>, String> {
        self.dedup_window
            .as_ref()
            .map(|text| STANDARD.decode(text).map_err(|e| e.to_string()))
            .transpose()
    }
}

impl ColumnRecord {
    /// A column named `name` of type `data_type`.
    pub fn new(name: impl Into<String>, data_type: impl Into<String>) -> Self {
        ColumnRecord {
            name: name.into(),
            data_type: data_type.into(),
            field: None,
            key: None,
            fallback: false,
            rest: false,
        }
    }
}

fn invalid(table: &str, reason: String) -> StateError {
    StateError::InvalidState {
        table: table.to_owned(),
        reason,
    }
}

fn is_plain_relative_path(file: &str) -> bool {
    let mut components = Path::new(file).components().peekable();
    components.peek().is_some() && components.all(|c| matches!(c, Component::Normal(_)))
}

/// Hand-written YAML state says `recent_uuids:` (null) for "none"; read that as empty.
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

fn unversioned() -> u32 {
    UNVERSIONED_FORMAT
}

/// `columns` as written by this toolkit (a list of [`ColumnRecord`] objects), or as the seed
/// writes it (a list of column names, read as no columns recorded), or null.
fn column_records_or_seed_names<'de, D>(
    deserializer: D,
) -> Result<Option<Vec<ColumnRecord>>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Columns {
        Records(Vec<ColumnRecord>),
        Names(Vec<String>),
    }
    match Option::<Value>::deserialize(deserializer)? {
        None => Ok(None),
        Some(value) => match Columns::deserialize(&value) {
            Ok(Columns::Records(records)) => Ok(Some(records)),
            // Names without types cannot rebuild a schema; the data will, on the next run.
            Ok(Columns::Names(_names)) => Ok(None),
            // Report why the records did not load (the toolkit's own shape), not that neither
            // shape matched.
            Err(_) => Vec::<ColumnRecord>::deserialize(&value)
                .map(Some)
                .map_err(serde::de::Error::custom),
        },
    }
}

fn serialize_unknown_only<S: Serializer>(
    extra: &Map<String, Value>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(
        extra
            .iter()
            .filter(|(key, _)| !KNOWN_FIELDS.contains(&key.as_str())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_fields_list_matches_the_serialized_keys() {
        let value = serde_json::to_value(TableState::default()).unwrap();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut known = KNOWN_FIELDS.to_vec();
        known.sort_unstable();
        assert_eq!(keys, known);
    }

    #[test]
    fn seed_shaped_entry_loads_with_defaults() {
        let seed =
            json!({"last_timestamp": null, "last_uuid": null, "recent_uuids": [], "columns": null});
        let state: TableState = serde_json::from_value(seed).unwrap();
        assert_eq!(
            state,
            TableState {
                format_version: UNVERSIONED_FORMAT,
                ..TableState::default()
            },
            "the seed's shape is version 1; a store migrates it on load"
        );
    }

    #[test]
    fn null_lists_read_as_empty() {
        let state: TableState =
            serde_json::from_value(json!({"recent_uuids": null, "parts": null})).unwrap();
        assert!(state.recent_uuids.is_empty());
        assert!(state.parts.is_empty());
    }

    #[test]
    fn full_state_round_trips_through_json() {
        let mut state = TableState {
            last_timestamp: Some("2026-11-20T10:00:00.123456Z".into()),
            last_uuid: Some("0190a3c4-0000-7000-8000-000000000001".into()),
            recent_uuids: vec!["a".into(), "b".into()],
            columns: Some(vec![
                ColumnRecord::new("uuid", "utf8"),
                ColumnRecord::new("timestamp", "timestamp_us"),
            ]),
            parts: vec![PartRecord {
                file: "part-00000003-00001.parquet".into(),
                rows: 1000,
                bytes: 123_456,
                sha256: "ab".repeat(32),
                first_timestamp: None,
                last_timestamp: None,
            }],
            next_part_seq: 4,
            rows_total: 1000,
            updated_at: Some("2026-11-20T10:05:00Z".into()),
            run_id: Some("run-1".into()),
            ..TableState::default()
        };
        state.set_dedup_window_bytes(&[1, 2, 3, 255]);
        state
            .extra
            .insert("future_field".into(), json!({"x": [1, 2]}));

        let text = serde_json::to_string(&state).unwrap();
        let back: TableState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, state);
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["columns"][0], json!({"name": "uuid", "type": "utf8"}));
        assert_eq!(value["future_field"], json!({"x": [1, 2]}));
    }

    #[test]
    fn extra_key_colliding_with_a_known_field_is_not_written_twice() {
        let mut state = TableState {
            rows_total: 7,
            ..TableState::default()
        };
        state.extra.insert("rows_total".into(), json!("bogus"));
        let text = serde_json::to_string(&state).unwrap();
        assert_eq!(text.matches("\"rows_total\"").count(), 1, "{text}");
        let back: TableState = serde_json::from_str(&text).unwrap();
        assert_eq!(back.rows_total, 7);
    }

    #[test]
    fn dedup_window_bytes_round_trip() {
        let mut state = TableState::default();
        assert_eq!(state.dedup_window_bytes("t").unwrap(), None);
        let bytes: Vec<u8> = (0..=255).collect();
        state.set_dedup_window_bytes(&bytes);
        assert_eq!(state.dedup_window_bytes("t").unwrap(), Some(bytes));
        state.set_dedup_window_bytes(&[]);
        assert_eq!(state.dedup_window_bytes("t").unwrap(), Some(Vec::new()));
    }

    #[test]
    fn invalid_base64_dedup_window_is_an_error_naming_the_table() {
        let state = TableState {
            dedup_window: Some("not base64!".into()),
            ..TableState::default()
        };
        let err = state.dedup_window_bytes("posthog_events").unwrap_err();
        assert!(
            matches!(&err, StateError::InvalidState { table, .. } if table == "posthog_events")
        );
        let msg = err.to_string();
        assert!(msg.contains("\"posthog_events\""), "{msg}");
        assert!(msg.contains("dedup_window is not valid base64"), "{msg}");
        assert_eq!(err.category().as_str(), "data");
    }

    #[test]
    fn validate_refuses_part_paths_outside_the_table_directory() {
        for bad in [
            "",
            "/etc/passwd",
            "../other/part.parquet",
            "a/../../b",
            "./",
        ] {
            let state = TableState {
                parts: vec![PartRecord {
                    file: bad.into(),
                    rows: 1,
                    bytes: 1,
                    sha256: String::new(),
                    first_timestamp: None,
                    last_timestamp: None,
                }],
                ..TableState::default()
            };
            assert!(
                matches!(state.validate("t"), Err(StateError::InvalidState { .. })),
                "{bad:?} was accepted"
            );
        }
        let ok = TableState {
            parts: vec![PartRecord {
                file: "sub/part-00000001-00001.jsonl".into(),
                rows: 1,
                bytes: 1,
                sha256: String::new(),
                first_timestamp: None,
                last_timestamp: None,
            }],
            ..TableState::default()
        };
        assert!(ok.validate("t").is_ok());
    }

    #[test]
    fn validate_refuses_versions_this_build_would_not_read() {
        for version in [0, FORMAT_VERSION + 1] {
            let state = TableState {
                format_version: version,
                ..TableState::default()
            };
            assert!(matches!(
                state.validate("t"),
                Err(StateError::InvalidState { .. })
            ));
        }
    }
}
