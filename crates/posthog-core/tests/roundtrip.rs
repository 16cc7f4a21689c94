//! Every source value is recoverable from the Parquet, JSONL and CSV outputs under the
//! documented type rule (`posthog_core::schema`), for arbitrary PostHog-like events, and no
//! input makes the pipeline panic.

mod util;

use std::collections::BTreeMap;

use posthog_core::{ColumnSpec, PartFormat};
use proptest::prelude::*;
use util::{
    Cell, Event, expected_properties, read_csv, read_jsonl, read_parquet, recover_properties,
};

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A JSON value as text, with the odd corners PostHog data has.
fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        (-1000i64..1000).prop_map(|i| i.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:?}")),
        Just("2.50".to_owned()),
        Just("1E+2".to_owned()),
        Just("-0".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("1e400".to_owned()),
        Just("-1e400".to_owned()),
        Just("1e-400".to_owned()),
        any::<String>().prop_map(|s| quote(&s)),
        "[a-zA-Z0-9 ]{0,12}".prop_map(|s| quote(&s)),
        Just(r#""42""#.to_owned()),
        Just(r#""""#.to_owned()),
        Just(r#""lone \ud800 surrogate""#.to_owned()),
        Just(r#""\u00e9\n\t\"quoted\"""#.to_owned()),
        Just(quote(&"x".repeat(70_000))),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec((key(), inner), 0..4).prop_map(|kv| {
                let body: Vec<String> = kv
                    .iter()
                    .map(|(k, v)| format!("{}: {v}", quote(k)))
                    .collect();
                format!("{{ {} }}", body.join(",\n"))
            }),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "$browser", "plan", "Plan", "PLAN", "", "a b", "x.y", "plan__json", "plan~2",
            "properties_x", "é", "🚀 launch", "\"q\"", "back\\slash", "$set", "n",
        ]).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// The properties text: mostly an object (sometimes with whitespace or a repeated key), now
/// and then something PostHog should never send.
fn properties() -> impl Strategy<Value = String> {
    let object = (
        prop::collection::vec((key(), json_value()), 0..8),
        any::<bool>(),
    )
        .prop_map(|(kv, spaced)| {
            let sep = if spaced { ", " } else { "," };
            let body: Vec<String> = kv
                .iter()
                .map(|(k, v)| format!("{}:{v}", quote(k)))
                .collect();
            format!("{{{}}}", body.join(sep))
        });
    prop_oneof![
        20 => object,
        1 => Just("null".to_owned()),
        1 => Just("[1,2]".to_owned()),
        1 => Just(r#""just a string""#.to_owned()),
        1 => Just(r#"{"a": NaN}"#.to_owned()),
        1 => Just(r#"{"a":1,"a":null}"#.to_owned()),
        1 => Just(r#"{"a":1} trailing"#.to_owned()),
        1 => Just(r#"{"\ud800":1}"#.to_owned()),
        1 => Just(format!("{{\"deep\":{}1{}}}", "[".repeat(200), "]".repeat(200))),
        1 => any::<String>(),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    (
        any::<u128>(),
        "[$a-z_]{1,12}",
        0i64..4_102_444_800_000_000,
        any::<String>(),
        properties(),
    )
        .prop_map(|(id, event, ts, distinct_id, properties)| Event {
            uuid: uuid::Uuid::from_u128(id).to_string(),
            event,
            timestamp_micros: ts,
            distinct_id,
            properties,
        })
}

fn check_rows(
    format: &str,
    rows: &[BTreeMap<String, Cell>],
    columns: &[ColumnSpec],
    events: &[Event],
) {
    assert_eq!(rows.len(), events.len(), "{format}: row count");
    for (row, e) in rows.iter().zip(events) {
        assert_eq!(
            row.get("uuid"),
            Some(&Cell::Text(e.uuid.clone())),
            "{format}: uuid"
        );
        assert_eq!(
            row.get("event"),
            Some(&Cell::Text(e.event.clone())),
            "{format}: event"
        );
        assert_eq!(
            row.get("timestamp"),
            Some(&Cell::Micros(e.timestamp_micros)),
            "{format}: timestamp"
        );
        assert_eq!(
            row.get("distinct_id").cloned().unwrap_or(Cell::Null),
            Cell::Text(e.distinct_id.clone()),
            "{format}: distinct_id"
        );
        assert_eq!(
            recover_properties(row, columns),
            expected_properties(&e.properties),
            "{format}: properties of {:?}",
            e.properties
        );
    }
}

fn run_all_formats(pages: &[Vec<Event>], batch_rows: usize) {
    let events: Vec<Event> = pages.iter().flatten().cloned().collect();
    for format in [PartFormat::Parquet, PartFormat::Jsonl, PartFormat::Csv] {
        let dir = tempfile::tempdir().unwrap();
        let (parts, columns) = util::write_pages(dir.path(), pages, format, batch_rows);
        let total: u64 = parts.iter().map(|p| p.rows).sum();
        assert_eq!(total, events.len() as u64, "{format:?}: reported rows");
        let rows = match format {
            PartFormat::Parquet => read_parquet(&parts),
            PartFormat::Jsonl => read_jsonl(&parts, &columns),
            PartFormat::Csv => read_csv(&parts, &columns),
        };
        check_rows(&format!("{format:?}"), &rows, &columns, &events);
    }
}

/// Few keys, every scalar kind: a key's JSON type changes often between rows.
fn churning_properties() -> impl Strategy<Value = String> {
    let value = prop::sample::select(vec![
        "null",
        "true",
        "false",
        "0",
        "1",
        "-7",
        "2.5",
        "1e3",
        "9007199254740993",
        "\"\"",
        "\"42\"",
        "\"true\"",
        "[1]",
        "{}",
        "{\"a\":1}",
        "1e400",
    ]);
    prop::collection::vec((prop::sample::select(vec!["a", "b", "A"]), value), 0..4).prop_map(|kv| {
        let body: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn values_whose_type_changes_between_rows_are_recoverable(
        props in prop::collection::vec(churning_properties(), 1..40),
        batch_rows in 1usize..6,
    ) {
        let events: Vec<Event> = props
            .into_iter()
            .enumerate()
            .map(|(i, properties)| Event {
                uuid: uuid::Uuid::from_u128(i as u128).to_string(),
                event: "e".into(),
                timestamp_micros: i as i64,
                distinct_id: "d".into(),
                properties,
            })
            .collect();
        run_all_formats(&[events], batch_rows);
    }

    #[test]
    fn every_source_value_is_recoverable_from_every_format(
        pages in prop::collection::vec(prop::collection::vec(event(), 0..12), 1..4),
        batch_rows in 1usize..8,
    ) {
        run_all_formats(&pages, batch_rows);
    }
}

#[test]
fn a_property_whose_type_varies_round_trips_through_a_sibling_column() {
    let props = [
        r#"{"v":42}"#,
        r#"{"v":"42"}"#,
        r#"{"v":true}"#,
        r#"{"v":4.5}"#,
        r#"{"v":{"a":[1]}}"#,
    ];
    let events: Vec<Event> = props
        .iter()
        .enumerate()
        .map(|(i, p)| Event {
            uuid: uuid::Uuid::from_u128(i as u128).to_string(),
            event: "e".into(),
            timestamp_micros: 1_700_000_000_000_000 + i as i64,
            distinct_id: "d".into(),
            properties: (*p).to_owned(),
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (parts, columns) = util::write_pages(
        dir.path(),
        std::slice::from_ref(&events),
        PartFormat::Parquet,
        100,
    );
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "uuid",
            "event",
            "timestamp",
            "distinct_id",
            "properties_v",
            "properties_v__json"
        ]
    );
    let rows = read_parquet(&parts);
    assert_eq!(rows[0]["properties_v"], Cell::Int(42));
    assert_eq!(rows[1]["properties_v__json"], Cell::Text(r#""42""#.into()));
    assert_eq!(rows[2]["properties_v__json"], Cell::Text("true".into()));
    assert_eq!(rows[3]["properties_v__json"], Cell::Text("4.5".into()));
    assert_eq!(
        rows[4]["properties_v__json"],
        Cell::Text(r#"{"a":[1]}"#.into())
    );
    check_rows("parquet", &rows, &columns, &events);
}

#[test]
fn a_property_first_seen_late_opens_a_new_part_with_the_wider_schema() {
    let mk = |i: u128, p: &str| Event {
        uuid: uuid::Uuid::from_u128(i).to_string(),
        event: "e".into(),
        timestamp_micros: 1_700_000_000_000_000,
        distinct_id: "d".into(),
        properties: p.to_owned(),
    };
    let pages = vec![
        vec![mk(1, r#"{"a":1}"#), mk(2, r#"{"a":2}"#)],
        vec![mk(3, r#"{"a":3,"b":"new"}"#), mk(4, r#"{"a":4}"#)],
    ];
    let dir = tempfile::tempdir().unwrap();
    let (parts, columns) = util::write_pages(dir.path(), &pages, PartFormat::Parquet, 2);
    assert_eq!(parts.len(), 2, "the new column closes the first part");
    assert_eq!(parts[0].rows, 2);
    assert_eq!(parts[1].rows, 2);
    assert!(parts[0].path.ends_with("part-00000001-00001.parquet"));
    assert!(parts[1].path.ends_with("part-00000001-00002.parquet"));
    let rows = read_parquet(&parts);
    assert!(
        !rows[0].contains_key("properties_b"),
        "the first part keeps its narrower schema"
    );
    assert_eq!(rows[2]["properties_b"], Cell::Text("new".into()));
    assert_eq!(rows[3]["properties_b"], Cell::Null);
    check_rows("parquet", &rows, &columns, &pages.concat());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no temporary files remain: {leftovers:?}"
    );
}

#[test]
fn reported_sha256_and_size_match_the_file() {
    use sha2::Digest;
    let events = vec![Event {
        uuid: uuid::Uuid::from_u128(9).to_string(),
        event: "e".into(),
        timestamp_micros: 0,
        distinct_id: "d".into(),
        properties: r#"{"a":"b"}"#.into(),
    }];
    for format in [PartFormat::Parquet, PartFormat::Jsonl, PartFormat::Csv] {
        let dir = tempfile::tempdir().unwrap();
        let (parts, _) = util::write_pages(dir.path(), std::slice::from_ref(&events), format, 10);
        let bytes = std::fs::read(&parts[0].path).unwrap();
        assert_eq!(parts[0].bytes, bytes.len() as u64);
        let digest = sha2::Sha256::digest(&bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parts[0].sha256, hex, "{format:?}");
    }
}

#[test]
fn csv_quotes_per_rfc4180_and_tells_empty_from_null() {
    let events = vec![Event {
        uuid: uuid::Uuid::from_u128(1).to_string(),
        event: "a,\"b\"\nc".into(),
        timestamp_micros: 0,
        distinct_id: String::new(),
        properties: r#"{"x":null,"y":""}"#.into(),
    }];
    let dir = tempfile::tempdir().unwrap();
    let (parts, _) = util::write_pages(dir.path(), &[events], PartFormat::Csv, 10);
    let text = std::fs::read_to_string(&parts[0].path).unwrap();
    assert_eq!(
        text,
        "uuid,event,timestamp,distinct_id,properties_y\r\n\
         00000000-0000-0000-0000-000000000001,\"a,\"\"b\"\"\nc\",1970-01-01T00:00:00.000000Z,\"\",\"\"\r\n"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever a server sends, parsing a page and appending its rows gives rows or a clear
    /// error, never a panic.
    #[test]
    fn arbitrary_bodies_never_panic(body in prop_oneof![
        any::<Vec<u8>>(),
        prop::collection::vec(json_value(), 0..6).prop_map(|vals| {
            format!(r#"{{"columns":["uuid","event","timestamp","distinct_id","properties"],"results":[[{}]]}}"#, vals.join(",")).into_bytes()
        }),
    ]) {
        if let Ok(page) = posthog_core::QueryPage::parse(&body) {
            let mut builder = posthog_core::BatchBuilder::new(
                &util::event_fields(),
                posthog_core::FlattenMode::Flatten,
                &[],
            ).unwrap();
            for row in &page.results {
                let _ = builder.append_array_row(row);
            }
            prop_assert!(builder.finish_batch().is_ok(), "appended rows always assemble");
        }
    }
}
