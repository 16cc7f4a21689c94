//! Behaviour of the JSON file store on a real file system: locking, refusing bad files,
//! atomic commits that keep other tables intact.

use std::fs;
use std::path::{Path, PathBuf};

use posthog_state::{
    ColumnRecord, FORMAT_VERSION, JsonFileStore, PartRecord, StateError, StateStore, TableState,
};
use proptest::prelude::*;
use serde_json::{Value, json};
use tempfile::TempDir;

fn state_path() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    (dir, path)
}

fn full_state() -> TableState {
    let mut state = TableState {
        last_timestamp: Some("2026-11-20T10:00:00.123456Z".into()),
        last_uuid: Some("0190a3c4-0000-7000-8000-000000000001".into()),
        recent_uuids: vec!["0190a3c4-0000-7000-8000-000000000000".into()],
        columns: Some(vec![
            ColumnRecord::new("uuid", "utf8"),
            ColumnRecord::new("properties_$browser", "utf8"),
        ]),
        parts: vec![
            PartRecord {
                file: "part-00000000-00001.parquet".into(),
                rows: 5000,
                bytes: 812_345,
                sha256: "0f".repeat(32),
                first_timestamp: Some("2026-11-19T00:00:00Z".into()),
                last_timestamp: Some("2026-11-20T10:00:00.123456Z".into()),
            },
            PartRecord {
                file: "part-00000001-00001.parquet".into(),
                rows: 17,
                bytes: 4_096,
                sha256: "a1".repeat(32),
                first_timestamp: None,
                last_timestamp: None,
            },
        ],
        next_part_seq: 2,
        rows_total: 5017,
        updated_at: Some("2026-11-20T10:05:00Z".into()),
        run_id: Some("0190a3c4-aaaa-7000-8000-000000000000".into()),
        ..TableState::default()
    };
    state.set_dedup_window_bytes(&[7; 48]);
    state
}

/// Names of the files in `dir` other than the state file and its lock.
fn stray_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "state.json" && n != "state.json.lock")
        .collect();
    names.sort();
    names
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

#[test]
fn full_table_state_round_trips_through_the_file() {
    let (_dir, path) = state_path();
    let state = full_state();
    {
        let mut store = JsonFileStore::open(&path).unwrap();
        store.commit("posthog_events", &state).unwrap();
        assert_eq!(store.load("posthog_events").unwrap(), Some(state.clone()));
    }
    let store = JsonFileStore::open(&path).unwrap();
    assert_eq!(store.load("posthog_events").unwrap(), Some(state));
    assert_eq!(store.load("posthog_persons").unwrap(), None);
    assert_eq!(store.tables().collect::<Vec<_>>(), ["posthog_events"]);
    assert_eq!(store.path(), path);
}

#[test]
fn seed_shaped_entry_loads_with_defaults() {
    let (_dir, path) = state_path();
    fs::write(
        &path,
        r#"{"posthog_events":{"last_timestamp":null,"last_uuid":null,"recent_uuids":[],"columns":null}}"#,
    )
    .unwrap();
    let store = JsonFileStore::open(&path).unwrap();
    let state = store.load("posthog_events").unwrap().unwrap();
    assert_eq!(state, TableState::default());
    assert_eq!(state.format_version, FORMAT_VERSION);
}

#[test]
fn missing_file_is_an_empty_store_and_its_directory_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/state.json");
    let mut store = JsonFileStore::open(&path).unwrap();
    assert_eq!(store.tables().count(), 0);
    assert!(
        !path.exists(),
        "opening alone must not write the state file"
    );
    store.commit("t", &TableState::default()).unwrap();
    assert!(path.exists());
}

#[test]
fn second_open_fails_with_locked_until_the_first_store_is_dropped() {
    let (_dir, path) = state_path();
    let first = JsonFileStore::open(&path).unwrap();
    let err = JsonFileStore::open(&path).unwrap_err();
    let lock_path = first.lock_path().to_path_buf();
    assert_eq!(lock_path, path.with_file_name("state.json.lock"));
    match &err {
        StateError::Locked {
            lock_path: reported,
        } => assert_eq!(reported, &lock_path),
        other => panic!("expected Locked, got {other:?}"),
    }
    assert_eq!(err.category().as_str(), "config");
    let msg = err.to_string();
    assert!(msg.contains(&lock_path.display().to_string()), "{msg}");
    assert!(msg.contains("another run holds the state lock"), "{msg}");

    drop(first);
    JsonFileStore::open(&path).expect("the lock is released when the store is dropped");
}

fn assert_corrupt_and_untouched(contents: &[u8], expected_reason: &str) {
    let (_dir, path) = state_path();
    fs::write(&path, contents).unwrap();
    let err = JsonFileStore::open(&path).unwrap_err();
    match &err {
        StateError::Corrupt {
            path: reported,
            reason,
        } => {
            assert_eq!(reported, &path);
            assert!(
                reason.contains(expected_reason),
                "reason {reason:?} lacks {expected_reason:?}"
            );
        }
        other => panic!("expected Corrupt for {contents:?}, got {other:?}"),
    }
    assert_eq!(err.category().as_str(), "data");
    assert!(err.to_string().contains(&path.display().to_string()));
    assert_eq!(
        fs::read(&path).unwrap(),
        contents,
        "a corrupt file must not change"
    );
}

#[test]
fn garbage_file_is_corrupt_and_left_untouched() {
    assert_corrupt_and_untouched(b"\x00\xffnot json at all", "not valid JSON");
}

#[test]
fn truncated_json_is_corrupt_and_left_untouched() {
    assert_corrupt_and_untouched(
        br#"{"posthog_events": {"last_timestamp": "2026-11-20T10:0"#,
        "not valid JSON",
    );
}

#[test]
fn empty_file_is_corrupt_not_empty_state() {
    assert_corrupt_and_untouched(b"", "empty (0 bytes)");
}

#[test]
fn wrong_shapes_are_corrupt_and_left_untouched() {
    assert_corrupt_and_untouched(b"[]", "expected a JSON object keyed by table name");
    assert_corrupt_and_untouched(b"null", "expected a JSON object keyed by table name");
    assert_corrupt_and_untouched(br#"{"t": [1, 2]}"#, r#"table "t": expected an object"#);
    assert_corrupt_and_untouched(
        br#"{"t": {"recent_uuids": "abc"}}"#,
        r#"table "t": field "recent_uuids""#,
    );
    assert_corrupt_and_untouched(
        br#"{"t": {"format_version": "1"}}"#,
        "format_version must be a positive integer",
    );
    assert_corrupt_and_untouched(
        br#"{"t": {"dedup_window": "***"}}"#,
        "dedup_window is not valid base64",
    );
    assert_corrupt_and_untouched(
        br#"{"t": {"parts": [{"file": "../../etc/passwd", "rows": 1, "bytes": 1, "sha256": ""}]}}"#,
        "not a plain path inside the table's directory",
    );
}

#[test]
fn newer_format_version_is_refused_and_left_untouched() {
    let (_dir, path) = state_path();
    let contents = format!(
        r#"{{"ok": {{}}, "posthog_events": {{"format_version": {}, "shape": "unknown"}}}}"#,
        FORMAT_VERSION + 1
    );
    fs::write(&path, &contents).unwrap();
    let err = JsonFileStore::open(&path).unwrap_err();
    match &err {
        StateError::UnsupportedVersion {
            path: reported,
            table,
            found,
            supported,
        } => {
            assert_eq!(reported, &path);
            assert_eq!(table, "posthog_events");
            assert_eq!(*found, u64::from(FORMAT_VERSION) + 1);
            assert_eq!(*supported, FORMAT_VERSION);
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    assert_eq!(err.category().as_str(), "data");
    assert_eq!(fs::read_to_string(&path).unwrap(), contents);
}

#[test]
fn commit_of_one_table_keeps_other_tables_and_unknown_fields() {
    let (_dir, path) = state_path();
    let other = json!({
        "last_timestamp": "2026-01-01T00:00:00Z",
        "last_uuid": null,
        "recent_uuids": ["x"],
        "columns": null,
        "from_a_newer_minor": {"nested": [1, 2.5, "three", null, true]},
        "big": 18446744073709551615u64
    });
    let same_table_extra = json!({"kept": {"a": 1}});
    fs::write(
        &path,
        serde_json::to_vec(&json!({
            "b_table": other,
            "a_table": {"last_timestamp": null, "also_unknown": same_table_extra},
        }))
        .unwrap(),
    )
    .unwrap();

    let mut store = JsonFileStore::open(&path).unwrap();
    let mut a = store.load("a_table").unwrap().unwrap();
    a.last_timestamp = Some("2026-11-20T10:00:00Z".into());
    store.commit("a_table", &a).unwrap();
    drop(store);

    let written = read_json(&path);
    assert_eq!(
        written["b_table"], other,
        "another table's entry must not change"
    );
    assert_eq!(written["a_table"]["also_unknown"], same_table_extra);
    assert_eq!(written["a_table"]["last_timestamp"], "2026-11-20T10:00:00Z");
    let store = JsonFileStore::open(&path).unwrap();
    assert_eq!(store.load("a_table").unwrap(), Some(a));
}

#[test]
fn file_is_pretty_sorted_and_ends_with_a_newline() {
    let (_dir, path) = state_path();
    let mut store = JsonFileStore::open(&path).unwrap();
    store.commit("zeta", &TableState::default()).unwrap();
    store.commit("alpha", &TableState::default()).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.ends_with("}\n"), "{text}");
    assert!(text.starts_with("{\n  \"alpha\": {\n"), "{text}");
    assert!(text.find("\"alpha\"") < text.find("\"zeta\""));
    // Same content, same bytes.
    store.commit("zeta", &TableState::default()).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn successful_commits_leave_no_temporary_files() {
    let (dir, path) = state_path();
    let mut store = JsonFileStore::open(&path).unwrap();
    for seq in 0..5 {
        let state = TableState {
            next_part_seq: seq,
            ..full_state()
        };
        store.commit("posthog_events", &state).unwrap();
    }
    assert_eq!(stray_files(dir.path()), Vec::<String>::new());
}

#[test]
fn temporary_files_left_by_a_crashed_run_are_removed_on_open() {
    let (dir, path) = state_path();
    let stale = dir.path().join(".state.json.tmp-999999-0");
    fs::write(&stale, b"{\"half\": ").unwrap();
    let unrelated = dir.path().join(".other.json.tmp-1-0");
    fs::write(&unrelated, b"keep me").unwrap();
    let _store = JsonFileStore::open(&path).unwrap();
    assert!(!stale.exists());
    assert!(
        unrelated.exists(),
        "only this state file's temporaries are removed"
    );
}

#[test]
fn invalid_state_is_refused_before_anything_is_written() {
    let (_dir, path) = state_path();
    let mut store = JsonFileStore::open(&path).unwrap();
    store.commit("t", &full_state()).unwrap();
    let before = fs::read(&path).unwrap();
    let bad = TableState {
        dedup_window: Some("!!".into()),
        ..full_state()
    };
    let err = store.commit("t", &bad).unwrap_err();
    assert!(matches!(&err, StateError::InvalidState { table, .. } if table == "t"));
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(store.load("t").unwrap(), Some(full_state()));
}

#[cfg(unix)]
#[test]
fn failed_commit_leaves_the_old_file_and_no_temporary_files() {
    use std::os::unix::fs::PermissionsExt as _;

    let (dir, path) = state_path();
    let mut store = JsonFileStore::open(&path).unwrap();
    store.commit("posthog_events", &full_state()).unwrap();
    let before = fs::read(&path).unwrap();

    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o555)).unwrap();
    let probe = dir.path().join("probe");
    if fs::write(&probe, b"").is_ok() {
        // Root ignores directory permissions; the failure cannot be provoked this way.
        let _ = fs::remove_file(&probe);
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        eprintln!("skipped: running with privileges that ignore a read-only directory");
        return;
    }

    let newer = TableState {
        rows_total: 99,
        ..full_state()
    };
    let result = store.commit("posthog_events", &newer);
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();

    let err = result.unwrap_err();
    assert!(matches!(err, StateError::Io { .. }), "{err:?}");
    assert_eq!(
        fs::read(&path).unwrap(),
        before,
        "the old file must be intact"
    );
    assert_eq!(stray_files(dir.path()), Vec::<String>::new());
    assert_eq!(
        store.load("posthog_events").unwrap(),
        Some(full_state()),
        "memory must agree with the file after a failed commit"
    );
    // The store still works once the directory is writable again.
    store.commit("posthog_events", &newer).unwrap();
    assert_eq!(store.load("posthog_events").unwrap(), Some(newer));
}

#[test]
fn commit_that_cannot_create_its_temporary_file_changes_nothing() {
    // Works with any privileges: a directory sits where the next temporary file would go
    // (`.<name>.tmp-<pid>-<counter>`, the counter at 1 after one commit).
    let (dir, path) = state_path();
    let mut store = JsonFileStore::open(&path).unwrap();
    store.commit("posthog_events", &full_state()).unwrap();
    let before = fs::read(&path).unwrap();
    let obstacle = format!(".state.json.tmp-{}-1", std::process::id());
    fs::create_dir(dir.path().join(&obstacle)).unwrap();

    let newer = TableState {
        rows_total: 99,
        ..full_state()
    };
    let err = store.commit("posthog_events", &newer).unwrap_err();
    match &err {
        StateError::Io { path: reported, .. } => {
            assert_eq!(reported, &dir.path().join(&obstacle));
        }
        other => panic!("expected Io, got {other:?}"),
    }
    assert_eq!(err.category().as_str(), "data");
    assert_eq!(
        fs::read(&path).unwrap(),
        before,
        "the old file must be intact"
    );
    assert_eq!(
        stray_files(dir.path()),
        [obstacle],
        "nothing else was left behind"
    );
    assert_eq!(store.load("posthog_events").unwrap(), Some(full_state()));
    store.commit("posthog_events", &newer).unwrap();
    assert_eq!(store.load("posthog_events").unwrap(), Some(newer));
}

/// A JSON value of bounded depth, biased towards the keys and types of a state entry so that
/// generated files get past the outer checks.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-zA-Z0-9+/=._-]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "format_version",
            "last_timestamp",
            "last_uuid",
            "recent_uuids",
            "columns",
            "dedup_window",
            "parts",
            "next_part_seq",
            "rows_total",
            "file",
            "rows",
            "bytes",
            "sha256",
            "name",
            "type",
        ])
        .prop_map(String::from),
        "[a-z_]{1,8}",
    ]
}

fn open_bytes(contents: &[u8]) -> Result<(), StateError> {
    let (_dir, path) = state_path();
    fs::write(&path, contents).unwrap();
    let result = JsonFileStore::open(&path).map(|store| {
        // Whatever opened must also load.
        let tables: Vec<String> = store.tables().map(String::from).collect();
        for table in tables {
            store.load(&table).expect("an opened entry loads");
        }
    });
    assert_eq!(fs::read(&path).unwrap(), contents, "open never rewrites");
    result
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic_open(contents in prop::collection::vec(any::<u8>(), 0..256)) {
        let result = open_bytes(&contents);
        prop_assert!(
            matches!(result, Ok(()) | Err(StateError::Corrupt { .. } | StateError::UnsupportedVersion { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn arbitrary_json_never_panics_open(
        tables in prop::collection::btree_map("[a-z_]{1,6}", json_value(), 0..3)
    ) {
        let contents = serde_json::to_vec(&tables).unwrap();
        let result = open_bytes(&contents);
        prop_assert!(
            matches!(result, Ok(()) | Err(StateError::Corrupt { .. } | StateError::UnsupportedVersion { .. })),
            "{result:?}"
        );
    }
}

#[test]
fn column_sources_round_trip_and_stay_optional() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let mut column = posthog_state::ColumnRecord::new("properties_plan__json", "json");
    column.field = Some("properties".into());
    column.key = Some("plan".into());
    column.fallback = true;
    let state = posthog_state::TableState {
        columns: Some(vec![
            column.clone(),
            posthog_state::ColumnRecord::new("uuid", "utf8"),
        ]),
        ..Default::default()
    };
    {
        let mut store = posthog_state::JsonFileStore::open(&path).unwrap();
        posthog_state::StateStore::commit(&mut store, "t", &state).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("\"key\": null") && text.matches("\"fallback\"").count() == 1,
        "unset sources are left out: {text}"
    );
    let store = posthog_state::JsonFileStore::open(&path).unwrap();
    let back = posthog_state::StateStore::load(&store, "t")
        .unwrap()
        .unwrap();
    assert_eq!(back.columns.unwrap()[0], column);
}
