//! State files of every format version that existed, and of versions that did not: older
//! entries are migrated on load (and written in the current version only when their table is
//! next committed); version 0 and newer versions are refused with a message naming the file, the
//! table, the version found and the versions supported, and the file is left byte for byte.
//!
//! History (`git log -p -- crates/posthog-state`): version 1 exists in three shapes, version 2
//! (parts with the range of the incremental field they cover) in one, version 3 (ranges committed
//! beyond the watermark by a sliced run) in one, each with a fixture under
//! `tests/fixtures/`:
//!
//! - `v1_seed_shape.json`: the seed's state (the Python component, Osiris `inputs.state`): no
//!   `format_version`, `columns` as bare names;
//! - `v1_columns_without_source.json`: as the first release of this crate wrote it, column
//!   records without `field`/`key`/`fallback`;
//! - `v1_current.json`: as the last version 1 release wrote it;
//! - `v2_current.json`: as the last version 2 release wrote it;
//! - `v3_current.json`: as this build writes it (with the committed ranges a sliced run left).
//!
//! `v0_fabricated.json` and `v4_future.json` are versions no release of this build reads.

use std::fs;
use std::path::{Path, PathBuf};

use posthog_state::{FORMAT_VERSION, JsonFileStore, StateError, StateStore, TableState};
use serde_json::Value;
use tempfile::TempDir;

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A scratch directory holding `state.json` with the fixture's bytes.
fn with_fixture(name: &str) -> (TempDir, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let bytes = fixture(name);
    fs::write(&path, &bytes).unwrap();
    (dir, path, bytes)
}

fn entry(path: &Path, table: &str) -> Value {
    let value: Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    value[table].clone()
}

#[test]
fn seed_shaped_state_is_migrated_on_load_and_rewritten_only_on_commit() {
    let (_dir, path, bytes) = with_fixture("v1_seed_shape.json");
    let mut store = JsonFileStore::open(&path).unwrap();
    let state = store.load("posthog_events").unwrap().expect("entry");
    assert_eq!(state.format_version, FORMAT_VERSION, "migrated in memory");
    assert_eq!(
        state.last_timestamp.as_deref(),
        Some("2025-11-08T10:30:00Z")
    );
    assert_eq!(
        state.last_uuid.as_deref(),
        Some("0190f1c2-0000-7000-8000-000000000003")
    );
    assert_eq!(state.recent_uuids.len(), 3);
    assert_eq!(
        state.columns, None,
        "bare column names carry no types: the schema is learned again"
    );
    assert!(state.parts.is_empty());
    let persons = store.load("posthog_persons").unwrap().expect("entry");
    assert_eq!(persons, TableState::default());
    assert_eq!(fs::read(&path).unwrap(), bytes, "loading writes nothing");

    // Committing one table rewrites that entry in the current version; the other stays as read.
    store.commit("posthog_events", &state).unwrap();
    let events = entry(&path, "posthog_events");
    assert_eq!(events["format_version"], u64::from(FORMAT_VERSION));
    assert_eq!(events["columns"], Value::Null);
    let persons = entry(&path, "posthog_persons");
    assert!(
        persons.get("format_version").is_none(),
        "an entry not committed is written back as read: {persons}"
    );
    drop(store);
    let store = JsonFileStore::open(&path).unwrap();
    assert_eq!(store.load("posthog_events").unwrap(), Some(state));
}

#[test]
fn first_release_shape_loads_unchanged() {
    let (_dir, path, bytes) = with_fixture("v1_columns_without_source.json");
    let store = JsonFileStore::open(&path).unwrap();
    let state = store.load("posthog_events").unwrap().expect("entry");
    assert_eq!(state.format_version, FORMAT_VERSION);
    let columns = state.columns.clone().expect("columns");
    assert_eq!(columns.len(), 2);
    assert_eq!(columns[1].name, "properties_$browser");
    assert_eq!(columns[1].field, None, "no source recorded in this shape");
    assert_eq!(state.parts.len(), 1);
    assert_eq!(state.rows_total, 5000);
    assert_eq!(
        state.dedup_window_bytes("posthog_events").unwrap(),
        Some(vec![7; 45])
    );
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[test]
fn last_version_1_shape_is_migrated_with_parts_of_unknown_range() {
    let (_dir, path, bytes) = with_fixture("v1_current.json");
    let mut store = JsonFileStore::open(&path).unwrap();
    let state = store.load("posthog_events").unwrap().expect("entry");
    assert_eq!(state.format_version, FORMAT_VERSION);
    assert_eq!(state.parts.len(), 1);
    assert_eq!(
        state.parts[0].first_timestamp, None,
        "version 1 records no range"
    );
    assert_eq!(state.parts[0].last_timestamp, None);
    assert_eq!(fs::read(&path).unwrap(), bytes, "loading writes nothing");
    store.commit("posthog_events", &state).unwrap();
    let events = entry(&path, "posthog_events");
    assert_eq!(events["format_version"], u64::from(FORMAT_VERSION));
    assert!(
        events["parts"][0].get("first_timestamp").is_none(),
        "an unknown range is left out, not written as null: {events}"
    );
}

#[test]
fn current_shape_round_trips_byte_for_byte() {
    let (_dir, path, bytes) = with_fixture("v3_current.json");
    let mut store = JsonFileStore::open(&path).unwrap();
    let state = store.load("posthog_events").unwrap().expect("entry");
    assert_eq!(
        state.columns.as_ref().unwrap()[1].key.as_deref(),
        Some("$browser")
    );
    assert_eq!(
        state.parts[0].first_timestamp.as_deref(),
        Some("2026-11-19T00:00:00Z")
    );
    assert_eq!(
        state.parts[0].last_timestamp.as_deref(),
        Some("2026-11-20T10:00:00.123456Z")
    );
    assert_eq!(state.committed_ranges.len(), 1);
    assert_eq!(
        state.committed_ranges[0].to_uuid,
        "0190a3c4-0000-7000-8000-0000000000ff"
    );
    store.commit("posthog_events", &state).unwrap();
    assert_eq!(
        String::from_utf8(fs::read(&path).unwrap()).unwrap(),
        String::from_utf8(bytes).unwrap(),
        "the fixture is exactly what this build writes"
    );
}

#[test]
fn a_version_2_entry_loads_with_no_committed_ranges() {
    let (_dir, path, _bytes) = with_fixture("v2_current.json");
    let store = JsonFileStore::open(&path).unwrap();
    let state = store.load("posthog_events").unwrap().expect("entry");
    assert_eq!(state.format_version, FORMAT_VERSION);
    assert!(state.committed_ranges.is_empty());
    assert_eq!(state.parts.len(), 1);
}

#[test]
fn an_entry_without_format_version_is_version_1_not_the_newest() {
    // Checked on the model, not only through the store: an unversioned entry is the seed's
    // shape, version 1, whatever the newest version is.
    const { assert!(FORMAT_VERSION > 1) };
    let state: TableState = serde_json::from_str(r#"{"last_timestamp": null}"#).unwrap();
    assert_eq!(state.format_version, 1);
}

/// Opens the fixture, expects `UnsupportedVersion` for `table` at `found`, and returns the
/// message after checking the file was not touched.
fn refused(name: &str, table: &str, found: u64) -> String {
    let (_dir, path, bytes) = with_fixture(name);
    let err = JsonFileStore::open(&path).unwrap_err();
    match &err {
        StateError::UnsupportedVersion {
            path: reported,
            table: t,
            found: f,
            supported,
        } => {
            assert_eq!(reported, &path);
            assert_eq!(t, table);
            assert_eq!(*f, found);
            assert_eq!(*supported, FORMAT_VERSION);
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    assert_eq!(err.category().as_str(), "data");
    assert_eq!(
        fs::read(&path).unwrap(),
        bytes,
        "a refused file is left as it was"
    );
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains(&format!("table {table:?}")), "{msg}");
    assert!(msg.contains(&format!("format_version {found}")), "{msg}");
    assert!(
        msg.contains(&format!("versions 1 through {FORMAT_VERSION}")),
        "{msg}"
    );
    msg
}

#[test]
fn version_0_is_refused_as_one_no_release_wrote() {
    let msg = refused("v0_fabricated.json", "posthog_events", 0);
    assert!(msg.contains("no release writes that version"), "{msg}");
}

#[test]
fn a_future_version_is_refused_as_written_by_a_newer_release() {
    let msg = refused("v4_future.json", "posthog_events", 4);
    assert!(msg.contains("a newer release wrote it"), "{msg}");
}

#[test]
fn a_version_beyond_u32_is_refused_as_newer_not_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let text = r#"{"t": {"format_version": 18446744073709551615}}"#;
    fs::write(&path, text).unwrap();
    let err = JsonFileStore::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            StateError::UnsupportedVersion {
                found: u64::MAX,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn a_version_that_is_not_a_positive_integer_is_corrupt_and_quoted() {
    for (version, found) in [
        ("-1", "the number -1"),
        ("1.5", "the number 1.5"),
        ("\"1\"", "a string"),
        ("null", "null"),
        ("[1]", "an array"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let text = format!(r#"{{"t": {{"format_version": {version}}}}}"#);
        fs::write(&path, &text).unwrap();
        let err = JsonFileStore::open(&path).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, StateError::Corrupt { .. }),
            "{version}: {err:?}"
        );
        assert!(
            msg.contains(&format!(
                "table \"t\": format_version must be a positive integer, found {found}"
            )),
            "{msg}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
    }
}

#[test]
fn seed_column_names_and_records_cannot_be_mixed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let text = r#"{"t": {"columns": ["uuid", {"name": "event", "type": "utf8"}]}}"#;
    fs::write(&path, text).unwrap();
    let err = JsonFileStore::open(&path).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(r#"table "t": field "columns": invalid type: string "uuid""#),
        "{msg}"
    );
}
