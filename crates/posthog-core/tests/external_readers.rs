//! Readers we did not write (pyarrow datasets, DuckDB `read_parquet(union_by_name=true)`) read
//! the Parquet parts of one table across schema changes as one table, and every value they
//! return matches the source.
//!
//! Needs `python3` with `pyarrow` and `duckdb` (`.ci/run` installs them). Without them the test
//! prints a `SKIPPED:` line that `cargo test` shows, and passes, unless
//! `POSTHOG_REQUIRE_EXTERNAL_READERS=1` (set by `.ci/run`), where a missing reader is a failure.

mod util;

use std::collections::BTreeMap;
use std::process::Command;

use posthog_core::{ColumnSpec, ColumnType, PartFormat};
use util::{Cell, Event, expected_properties, recover_properties};

const READER: &str = r#"
import json, sys
mode, paths = sys.argv[1], sys.argv[2:]
if mode == "pyarrow":
    import pyarrow as pa, pyarrow.dataset as ds, pyarrow.parquet as pq
    schema = pa.unify_schemas([pq.read_schema(p) for p in paths])
    table = ds.dataset(paths, schema=schema, format="parquet").to_table()
    i = table.column_names.index("timestamp")
    table = table.set_column(i, "timestamp", table["timestamp"].cast(pa.int64()))
    rows = table.to_pylist()
else:
    import duckdb
    con = duckdb.connect()
    cur = con.execute(
        'SELECT * REPLACE (epoch_us("timestamp") AS "timestamp") '
        "FROM read_parquet(?, union_by_name = true)", [paths])
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r)) for r in cur.fetchall()]
for row in rows:
    print(json.dumps(row))
"#;

fn readers_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import pyarrow, duckdb"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let required = std::env::var("POSTHOG_REQUIRE_EXTERNAL_READERS").as_deref() == Ok("1");
        assert!(
            !required,
            "python3 with pyarrow and duckdb is required but missing"
        );
        skipped("python3 with pyarrow and duckdb not found (pip install pyarrow duckdb)");
    }
    ok
}

/// Says a check was skipped where a person sees it: libtest captures `eprintln!` and shows it
/// only for a failing test, but not what is written to the stderr handle itself.
fn skipped(why: &str) {
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {why}: the external-readers check did not run \
         (POSTHOG_REQUIRE_EXTERNAL_READERS=1 makes this a failure)"
    );
}

fn event(i: u128, props: &str) -> Event {
    Event {
        uuid: uuid::Uuid::from_u128(0x0194_0000_0000_7000_8000_0000_0000_0000 + i).to_string(),
        event: if i.is_multiple_of(2) {
            "$pageview"
        } else {
            "$autocapture"
        }
        .into(),
        timestamp_micros: 1_735_826_250_178_957 + i as i64 * 1_000_001,
        distinct_id: format!("user{i}@example.com"),
        properties: props.to_owned(),
    }
}

fn source_pages() -> Vec<Vec<Event>> {
    vec![
        vec![
            event(1, r#"{"$browser":"Safari","n":1,"price":9.5}"#),
            event(2, r#"{"$browser":"Chrome","n":2,"price":10}"#),
        ],
        vec![
            // new properties: a bool, a nested object, a unicode key
            event(
                3,
                r#"{"$browser":"Edge","n":3,"$set":{"plan":"free","list":[1,"two",null]},"beta":true,"título":"ñ 🚀"}"#,
            ),
            event(4, r#"{"n":4,"beta":false}"#),
        ],
        vec![
            // a type change: n becomes a string, price an object; a case-only twin key
            event(5, r#"{"n":"five","price":{"amount":5},"Beta":true}"#),
            event(
                6,
                r#"{"n":6,"price":1e400,"$browser":"line\nbreak, \"quoted\""}"#,
            ),
        ],
    ]
}

fn parse_rows(stdout: &str, columns: &[ColumnSpec]) -> BTreeMap<String, BTreeMap<String, Cell>> {
    let types = util::column_types(columns);
    let mut by_uuid = BTreeMap::new();
    for line in stdout.lines() {
        let obj: BTreeMap<String, serde_json::Value> = serde_json::from_str(line).unwrap();
        let mut row = BTreeMap::new();
        for (name, v) in obj {
            let ty = *types
                .get(name.as_str())
                .unwrap_or_else(|| panic!("reader returned an unknown column {name:?}"));
            let cell = match (ty, v) {
                (_, serde_json::Value::Null) => Cell::Null,
                (ColumnType::Timestamp, v) => Cell::Micros(v.as_i64().unwrap()),
                (ColumnType::Int64, v) => Cell::Int(v.as_i64().unwrap()),
                (ColumnType::Float64, v) => Cell::Float(v.as_f64().unwrap()),
                (ColumnType::Boolean, v) => Cell::Bool(v.as_bool().unwrap()),
                (ColumnType::Utf8 | ColumnType::Json, serde_json::Value::String(s)) => {
                    Cell::Text(s)
                }
                (ty, v) => panic!("column {name:?} of type {ty:?} came back as {v}"),
            };
            row.insert(name, cell);
        }
        let Some(Cell::Text(uuid)) = row.get("uuid").cloned() else {
            panic!("row without uuid: {line}");
        };
        by_uuid.insert(uuid, row);
    }
    by_uuid
}

#[test]
fn pyarrow_and_duckdb_read_all_parts_as_one_table_with_every_value_intact() {
    if !readers_available() {
        return;
    }
    let pages = source_pages();
    let events: Vec<Event> = pages.concat();
    let dir = tempfile::tempdir().unwrap();
    let (parts, columns) = util::write_pages(dir.path(), &pages, PartFormat::Parquet, 2);
    assert!(
        parts.len() >= 3,
        "the schema changes produce several parts: {}",
        parts.len()
    );
    let paths: Vec<String> = parts.iter().map(|p| p.path.display().to_string()).collect();
    for mode in ["pyarrow", "duckdb"] {
        let out = Command::new("python3")
            .args(["-c", READER, mode])
            .args(&paths)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{mode} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows = parse_rows(&String::from_utf8(out.stdout).unwrap(), &columns);
        assert_eq!(rows.len(), events.len(), "{mode}: every row once");
        for e in &events {
            let row = &rows[&e.uuid];
            assert_eq!(row["event"], Cell::Text(e.event.clone()), "{mode}");
            assert_eq!(row["timestamp"], Cell::Micros(e.timestamp_micros), "{mode}");
            assert_eq!(
                row["distinct_id"],
                Cell::Text(e.distinct_id.clone()),
                "{mode}"
            );
            assert_eq!(
                recover_properties(row, &columns),
                expected_properties(&e.properties),
                "{mode}: properties of {}",
                e.properties
            );
        }
        let width = rows.values().map(|r| r.len()).max().unwrap_or(0);
        assert_eq!(
            width,
            columns.len(),
            "{mode}: the unified table has every column"
        );
    }
}
