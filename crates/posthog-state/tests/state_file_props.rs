//! Property tests of the state file as outside input: whatever bytes `state.json` holds,
//! [`JsonFileStore::open`] returns a store whose every entry loads, or an error that names the
//! file (and the table and field when one is at fault). It never panics and never changes the
//! file.

use std::fs;
use std::path::{Path, PathBuf};

use posthog_state::{
    ColumnRecord, FORMAT_VERSION, JsonFileStore, PartRecord, StateError, StateStore, TableState,
};
use proptest::prelude::*;
use serde_json::{Value, json};
use tempfile::TempDir;

/// The fields of an entry, as the file spells them.
const FIELDS: [&str; 11] = [
    "format_version",
    "last_timestamp",
    "last_uuid",
    "recent_uuids",
    "columns",
    "dedup_window",
    "parts",
    "next_part_seq",
    "rows_total",
    "updated_at",
    "run_id",
];

fn full_state() -> TableState {
    let mut state = TableState {
        last_timestamp: Some("2026-11-20T10:00:00.123456Z".into()),
        last_uuid: Some("0190a3c4-0000-7000-8000-000000000001".into()),
        recent_uuids: vec!["0190a3c4-0000-7000-8000-000000000000".into()],
        columns: Some(vec![
            ColumnRecord::new("uuid", "utf8"),
            ColumnRecord {
                field: Some("properties".into()),
                key: Some("$browser".into()),
                ..ColumnRecord::new("properties_$browser", "utf8")
            },
        ]),
        parts: vec![PartRecord {
            file: "part-00000000-00001.parquet".into(),
            rows: 5000,
            bytes: 812_345,
            sha256: "0f".repeat(32),
            first_timestamp: None,
            last_timestamp: None,
        }],
        next_part_seq: 1,
        rows_total: 5000,
        updated_at: Some("2026-11-20T10:05:00Z".into()),
        run_id: Some("0190a3c4-aaaa-7000-8000-000000000000".into()),
        ..TableState::default()
    };
    state.set_dedup_window_bytes(&[7; 48]);
    state
}

/// A valid state file with two tables, as the store writes it (made once: commits fsync).
fn valid_file() -> Vec<u8> {
    static FILE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    FILE.get_or_init(write_valid_file).clone()
}

fn write_valid_file() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let mut store = JsonFileStore::open(&path).unwrap();
    store.commit("posthog_events", &full_state()).unwrap();
    store
        .commit("posthog_persons", &TableState::default())
        .unwrap();
    drop(store);
    fs::read(&path).unwrap()
}

/// One scratch directory reused by many cases (each open locks, reads and drops the store).
struct Scratch {
    _dir: TempDir,
    path: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        Scratch { _dir: dir, path }
    }

    /// Writes `contents` as the state file and opens it. An opened store must load every
    /// entry, each migrated to the current version; the file must not change either way.
    fn open(&self, contents: &[u8]) -> Result<(), StateError> {
        fs::write(&self.path, contents).unwrap();
        let result = JsonFileStore::open(&self.path).map(|store| {
            let tables: Vec<String> = store.tables().map(String::from).collect();
            for table in tables {
                let state = store
                    .load(&table)
                    .unwrap_or_else(|e| panic!("an opened entry loads: {e}"))
                    .expect("listed");
                assert_eq!(state.format_version, FORMAT_VERSION);
            }
        });
        assert_eq!(
            fs::read(&self.path).unwrap(),
            contents,
            "opening never rewrites the file"
        );
        result
    }
}

/// Checks that a refusal names the file, and is one of the two refusals.
fn assert_refusal_names_the_file(err: &StateError, path: &Path) {
    assert!(
        matches!(
            err,
            StateError::Corrupt { .. } | StateError::UnsupportedVersion { .. }
        ),
        "{err:?}"
    );
    assert_eq!(err.category().as_str(), "data");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("state file {}", path.display())),
        "{msg}"
    );
}

/// Any JSON value, with the corners outside input has: huge and tiny numbers, big integers,
/// control characters and non-ASCII text, nesting.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        Just(json!(1e300)),
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
        any::<String>().prop_map(Value::from),
        "[a-zA-Z0-9+/=._-]{0,12}".prop_map(Value::from),
        Just(json!("2026-11-20T10:00:00Z")),
        Just(json!("../../etc/passwd")),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(vec!["name", "type", "field", "file", "rows", "bytes"])
                        .prop_map(String::from),
                    "[a-z_]{1,6}",
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// One field of a valid entry replaced by any JSON value: the entry still loads (the value
    /// is acceptable there), or the error names the file, the table and that field.
    #[test]
    fn a_wrong_value_in_any_field_is_refused_naming_the_field(
        field in prop::sample::select(FIELDS.to_vec()),
        value in json_value(),
    ) {
        let scratch = Scratch::new();
        let mut entry = serde_json::to_value(full_state()).unwrap();
        entry[field] = value.clone();
        let file = serde_json::to_vec_pretty(&json!({"posthog_events": entry})).unwrap();
        match scratch.open(&file) {
            Ok(()) => {}
            Err(err) => {
                assert_refusal_names_the_file(&err, &scratch.path);
                let msg = err.to_string();
                prop_assert!(msg.contains("table \"posthog_events\""), "{}", msg);
                prop_assert!(msg.contains(field), "{} = {}: {}", field, value, msg);
            }
        }
    }

    /// A value of the wrong type inside a part or column record names the list it is in.
    #[test]
    fn a_wrong_value_inside_a_record_is_refused_naming_its_list(
        list in prop::sample::select(vec!["parts", "columns"]),
        key in prop::sample::select(vec!["file", "rows", "bytes", "sha256", "name", "type", "field", "key", "fallback"]),
        value in json_value(),
    ) {
        let scratch = Scratch::new();
        let mut entry = serde_json::to_value(full_state()).unwrap();
        entry[list][0][key] = value;
        let file = serde_json::to_vec(&json!({"posthog_events": entry})).unwrap();
        if let Err(err) = scratch.open(&file) {
            assert_refusal_names_the_file(&err, &scratch.path);
            let msg = err.to_string();
            prop_assert!(msg.contains(list), "{}", msg);
        }
    }

    /// Bytes of a valid file flipped, dropped or inserted (invalid UTF-8 included): a clear
    /// refusal or a store that loads, never a panic, never a rewrite.
    #[test]
    fn mutated_files_are_refused_or_load(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..6),
    ) {
        let scratch = Scratch::new();
        let mut bytes = valid_file();
        for (at, kind, byte) in edits {
            let i = at.index(bytes.len());
            match kind {
                0 => bytes[i] = byte,
                1 => { bytes.remove(i); }
                _ => bytes.insert(i, byte),
            }
        }
        if let Err(err) = scratch.open(&bytes) {
            assert_refusal_names_the_file(&err, &scratch.path);
        }
    }

    /// Any bytes at all.
    #[test]
    fn arbitrary_bytes_are_refused_or_load(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let scratch = Scratch::new();
        if let Err(err) = scratch.open(&bytes) {
            assert_refusal_names_the_file(&err, &scratch.path);
        }
    }
}

/// Every prefix of a valid file (a write cut short by a full disk, a copy interrupted): refused
/// as corrupt, except the prefix that is the whole JSON document without its final newline.
#[test]
fn every_truncation_of_a_valid_file_is_refused_as_corrupt() {
    let scratch = Scratch::new();
    let bytes = valid_file();
    assert_eq!(bytes.last(), Some(&b'\n'));
    let document = bytes.len() - 1;
    for cut in 0..bytes.len() {
        let result = scratch.open(&bytes[..cut]);
        if cut == document {
            assert!(result.is_ok(), "the document without its newline loads");
            continue;
        }
        match result {
            Err(err @ StateError::Corrupt { .. }) => {
                assert_refusal_names_the_file(&err, &scratch.path);
                let msg = err.to_string();
                assert!(
                    msg.contains("not valid JSON") || msg.contains("empty (0 bytes)"),
                    "cut at {cut}: {msg}"
                );
                assert!(msg.contains("left untouched"), "{msg}");
            }
            other => panic!("cut at {cut}: expected Corrupt, got {other:?}"),
        }
    }
}

#[test]
fn deeply_nested_json_is_refused_without_overflowing_the_stack() {
    let scratch = Scratch::new();
    for depth in [200, 100_000] {
        let file = format!(
            r#"{{"t": {{"future": {}{}}}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let err = scratch.open(file.as_bytes()).unwrap_err();
        assert_refusal_names_the_file(&err, &scratch.path);
        assert!(err.to_string().contains("recursion limit"), "{err}");
    }
}

#[test]
fn numbers_too_large_for_their_field_are_refused_naming_it() {
    let scratch = Scratch::new();
    for (field, number) in [
        ("rows_total", "18446744073709551616"),
        ("next_part_seq", "1e300"),
        ("rows_total", "-1"),
    ] {
        let file = format!(r#"{{"t": {{"{field}": {number}}}}}"#);
        let err = scratch.open(file.as_bytes()).unwrap_err();
        assert_refusal_names_the_file(&err, &scratch.path);
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(r#"table "t": field "{field}""#)),
            "{msg}"
        );
    }
    // Beyond f64: serde_json refuses the number itself.
    let err = scratch
        .open(br#"{"t": {"rows_total": 1e400}}"#)
        .unwrap_err();
    assert!(err.to_string().contains("number out of range"), "{err}");
}

#[test]
fn invalid_utf8_inside_a_string_is_refused() {
    let scratch = Scratch::new();
    let err = scratch
        .open(b"{\"t\": {\"last_uuid\": \"abc\xff\xfe\"}}")
        .unwrap_err();
    assert_refusal_names_the_file(&err, &scratch.path);
    assert!(err.to_string().contains("not valid JSON"), "{err}");
}
