//! Semantics of the HogQL evaluator, tested without HTTP.

use serde_json::{Map, Value as Json, json};
use time::macros::{datetime, offset};
use uuid::Uuid;

use super::{QueryResult, QuerySettings, Tables, run};
use crate::data::{Dataset, Event, GenSpec};
use crate::store::{EventStore, PersonStore};

fn event(uuid: &str, ts: time::OffsetDateTime, name: &str) -> Event {
    Event {
        uuid: Uuid::parse_str(uuid).unwrap(),
        event: name.to_owned(),
        distinct_id: "d1".to_owned(),
        timestamp: ts,
        created_at: ts + time::Duration::seconds(2),
        person_id: None,
        properties: serde_json::from_value(
            json!({"$browser": "Chrome", "n": 42, "nested": {"a": 1}}),
        )
        .unwrap(),
        elements_chain: String::new(),
    }
}

struct Fixture {
    events: EventStore,
    persons: PersonStore,
}

impl Fixture {
    fn new(events: Vec<Event>) -> Self {
        Fixture {
            events: EventStore::new(events, None),
            persons: PersonStore::default(),
        }
    }

    fn generated(spec: GenSpec) -> Self {
        let d = Dataset::generate_lazy(&spec);
        Fixture {
            events: EventStore::new(Vec::new(), Some(spec)),
            persons: PersonStore::new(d.persons),
        }
    }

    fn run_with(&self, q: &str, values: Json, convert: bool) -> Result<QueryResult, String> {
        let values: Map<String, Json> = serde_json::from_value(values).unwrap();
        let settings = QuerySettings {
            values: &values,
            project_tz: offset!(+05:30),
            project_tz_name: "Asia/Kolkata",
            convert_to_project_tz: convert,
            now: 0,
        };
        let tables = Tables {
            events: &self.events,
            persons: &self.persons,
        };
        run(q, &settings, &tables).map_err(|e| e.message)
    }

    fn run(&self, q: &str) -> Result<QueryResult, String> {
        self.run_with(q, json!({}), true)
    }

    fn column(&self, q: &str, values: Json) -> Vec<Json> {
        self.run_with(q, values, true)
            .unwrap()
            .results
            .into_iter()
            .map(|r| r[0].clone())
            .collect()
    }
}

// Two UUIDs whose string order and ClickHouse order disagree.
const LOW_STRING_HIGH_CH: &str = "00000000-0000-7000-ffff-ffffffffffff";
const HIGH_STRING_LOW_CH: &str = "ffffffff-ffff-7fff-8000-000000000000";

#[test]
fn uuid_order_is_clickhouse_order_not_string_order() {
    let ts = datetime!(2025-01-01 0:00 UTC);
    let f = Fixture::new(vec![
        event(LOW_STRING_HIGH_CH, ts, "a"),
        event(HIGH_STRING_LOW_CH, ts, "b"),
    ]);
    let order = f.column(
        "SELECT uuid FROM events ORDER BY timestamp, uuid",
        json!({}),
    );
    assert_eq!(
        order,
        vec![json!(HIGH_STRING_LOW_CH), json!(LOW_STRING_HIGH_CH)]
    );
    let after = f.column(
        "SELECT uuid FROM events WHERE (timestamp, uuid) > (toDateTime({ts}), toUUID({u})) ORDER BY timestamp, uuid",
        json!({"ts": "2025-01-01T00:00:00Z", "u": HIGH_STRING_LOW_CH}),
    );
    assert_eq!(after, vec![json!(LOW_STRING_HIGH_CH)]);
    let desc = f.column("SELECT uuid FROM events ORDER BY uuid DESC", json!({}));
    assert_eq!(
        desc,
        vec![json!(LOW_STRING_HIGH_CH), json!(HIGH_STRING_LOW_CH)]
    );
}

#[test]
fn keyset_pages_over_a_same_timestamp_cluster_return_each_event_once() {
    let f = Fixture::generated(GenSpec {
        events: 500,
        same_timestamp_cluster: 120,
        ..GenSpec::default()
    });
    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<(String, String)> = None;
    let mut pages = 0;
    loop {
        let (q, values) = match &cursor {
            None => ("SELECT uuid, timestamp FROM events ORDER BY timestamp, uuid LIMIT 37".to_owned(), json!({})),
            Some((ts, u)) => (
                "SELECT uuid, timestamp FROM events WHERE (timestamp, uuid) > (toDateTime({ts}), toUUID({u})) ORDER BY timestamp, uuid LIMIT 37".to_owned(),
                json!({"ts": ts, "u": u}),
            ),
        };
        let r = f.run_with(&q, values, true).unwrap();
        pages += 1;
        for row in &r.results {
            assert!(
                seen.insert(row[0].as_str().unwrap().to_owned()),
                "duplicate {}",
                row[0]
            );
        }
        if r.results.len() < 37 {
            break;
        }
        let last = r.results.last().unwrap();
        cursor = Some((
            last[1].as_str().unwrap().to_owned(),
            last[0].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(seen.len(), 500);
    assert!(pages >= 14);
}

#[test]
fn pruned_keyset_scan_equals_an_unprunable_filter() {
    let f = Fixture::generated(GenSpec {
        events: 3_000,
        same_timestamp_cluster: 50,
        ..GenSpec::default()
    });
    let all = f
        .run("SELECT uuid, timestamp FROM events ORDER BY timestamp, uuid LIMIT 3000")
        .unwrap()
        .results;
    for probe in [0usize, 17, 1_499, 2_998] {
        let values = json!({"ts": all[probe][1], "u": all[probe][0]});
        for (op, neg) in [(">", "<="), (">=", "<"), ("<", ">="), ("<=", ">")] {
            let fast = f.run_with(
                &format!("SELECT uuid FROM events WHERE (timestamp, uuid) {op} (toDateTime({{ts}}), toUUID({{u}})) ORDER BY timestamp, uuid LIMIT 5000"),
                values.clone(),
                true,
            );
            let slow = f.run_with(
                &format!("SELECT uuid FROM events WHERE NOT ((timestamp, uuid) {neg} (toDateTime({{ts}}), toUUID({{u}}))) ORDER BY timestamp, uuid LIMIT 5000"),
                values.clone(),
                true,
            );
            assert_eq!(
                fast.unwrap().results,
                slow.unwrap().results,
                "op {op} at {probe}"
            );
        }
        let desc_fast = f.run_with(
            "SELECT uuid FROM events WHERE timestamp <= toDateTime({ts}) ORDER BY timestamp DESC, uuid DESC LIMIT 10",
            values.clone(),
            true,
        );
        let desc_slow = f.run_with(
            "SELECT uuid FROM events WHERE NOT (timestamp > toDateTime({ts})) ORDER BY timestamp DESC, uuid DESC LIMIT 10",
            values,
            true,
        );
        assert_eq!(desc_fast.unwrap().results, desc_slow.unwrap().results);
    }
}

#[test]
fn created_at_keyset_uses_its_own_order() {
    let f = Fixture::generated(GenSpec {
        events: 800,
        ..GenSpec::default()
    });
    let all = f
        .run("SELECT uuid, created_at FROM events ORDER BY created_at, uuid LIMIT 1000")
        .unwrap()
        .results;
    let mid = &all[400];
    let page = f
        .run_with(
            "SELECT uuid, created_at FROM events WHERE (created_at, uuid) > (toDateTime({c}), toUUID({u})) ORDER BY created_at, uuid LIMIT 1000",
            json!({"c": mid[1], "u": mid[0]}),
            true,
        )
        .unwrap()
        .results;
    assert_eq!(page, all[401..].to_vec());
}

#[test]
fn datetimes_render_in_project_zone_unless_disabled() {
    let f = Fixture::new(vec![event(
        LOW_STRING_HIGH_CH,
        datetime!(2025-01-02 04:30:00.123456 UTC),
        "a",
    )]);
    let r = f.run("SELECT timestamp FROM events").unwrap();
    assert_eq!(r.results[0][0], json!("2025-01-02T10:00:00.123456+05:30"));
    assert_eq!(
        r.types[0],
        (
            "timestamp".to_owned(),
            "DateTime64(6, 'Asia/Kolkata')".to_owned()
        )
    );
    let r = f
        .run_with("SELECT timestamp FROM events", json!({}), false)
        .unwrap();
    assert_eq!(r.results[0][0], json!("2025-01-02T04:30:00.123456Z"));
    assert_eq!(r.types[0].1, "DateTime64(6, 'UTC')");
}

#[test]
fn time_literals_without_offset_are_project_local() {
    let f = Fixture::new(vec![event(
        LOW_STRING_HIGH_CH,
        datetime!(2025-01-02 04:30:00 UTC),
        "a",
    )]);
    let hit = f.column(
        "SELECT event FROM events WHERE timestamp = toDateTime('2025-01-02 10:00:00')",
        json!({}),
    );
    assert_eq!(hit, vec![json!("a")]);
    let utc = f.column(
        "SELECT event FROM events WHERE timestamp = toDateTime('2025-01-02T04:30:00Z')",
        json!({}),
    );
    assert_eq!(utc, vec![json!("a")]);
    let explicit = f.column(
        "SELECT event FROM events WHERE timestamp = toDateTime('2025-01-02 04:30:00', 'UTC')",
        json!({}),
    );
    assert_eq!(explicit, vec![json!("a")]);
}

#[test]
fn comparing_datetime_with_a_bare_string_is_a_type_error() {
    let f = Fixture::new(vec![]);
    let err = f
        .run("SELECT uuid FROM events WHERE timestamp > '2025-01-01T00:00:00Z'")
        .unwrap_err();
    assert!(err.contains("Illegal types"), "{err}");
    assert!(err.contains("DateTime64"), "{err}");
    let err = f.run("SELECT 1 FROM events WHERE (timestamp, uuid) > ('2025-01-01', toUUID('00000000-0000-0000-0000-000000000000'))").unwrap_err();
    assert!(err.contains("Illegal types"), "{err}");
}

#[test]
fn placeholders_are_constants_not_text() {
    let f = Fixture::new(vec![event(
        LOW_STRING_HIGH_CH,
        datetime!(2025-01-01 0:00 UTC),
        "a",
    )]);
    let injected = f.column(
        "SELECT uuid FROM events WHERE event = {name}",
        json!({"name": "a' OR 1=1 --"}),
    );
    assert!(injected.is_empty());
    let hit = f.column(
        "SELECT uuid FROM events WHERE event IN {names}",
        json!({"names": ["x", "a"]}),
    );
    assert_eq!(hit.len(), 1);
    let err = f
        .run("SELECT uuid FROM events WHERE event = {missing}")
        .unwrap_err();
    assert!(err.contains("{missing}"), "{err}");
}

#[test]
fn offset_is_rejected_in_every_spelling() {
    let f = Fixture::new(vec![]);
    for q in [
        "SELECT uuid FROM events LIMIT 10 OFFSET 10",
        "SELECT uuid FROM events LIMIT 10, 10",
        "SELECT uuid FROM events OFFSET 0",
    ] {
        let err = f.run(q).unwrap_err();
        assert!(
            err.starts_with("OFFSET is not supported on queries made with a personal API key."),
            "{err}"
        );
    }
}

#[test]
fn limit_is_clamped_and_missing_limit_paginates() {
    let f = Fixture::generated(GenSpec {
        events: 50_050,
        persons: 5,
        ..GenSpec::default()
    });
    let r = f.run("SELECT uuid FROM events LIMIT 70000").unwrap();
    assert_eq!(r.results.len(), 50_000);
    assert_eq!((r.has_more, r.limit, r.offset), (None, None, None));
    assert!(r.hogql.ends_with("LIMIT 50000"), "{}", r.hogql);
    let r = f.run("SELECT uuid FROM events").unwrap();
    assert_eq!(r.results.len(), 100);
    assert_eq!(
        (r.has_more, r.limit, r.offset),
        (Some(true), Some(100), Some(0))
    );
    let r = f.run("SELECT uuid FROM events WHERE event = '$identify' AND timestamp < toDateTime('2025-01-01 00:10:00', 'UTC')").unwrap();
    assert_eq!(r.has_more, Some(false));
}

#[test]
fn unsupported_function_and_unknown_column_are_errors() {
    let f = Fixture::new(vec![]);
    assert_eq!(
        f.run("SELECT sleepEachRow(1) FROM events").unwrap_err(),
        "Unsupported function call 'sleepEachRow(...)'"
    );
    let err = f.run("SELECT nope FROM events").unwrap_err();
    assert!(err.starts_with("Unable to resolve field: nope"), "{err}");
    assert!(
        f.run("SELECT 1 FROM sessions")
            .unwrap_err()
            .contains("Unknown table")
    );
}

#[test]
fn properties_are_json_strings_and_property_access_is_text() {
    let f = Fixture::new(vec![event(
        LOW_STRING_HIGH_CH,
        datetime!(2025-01-01 0:00 UTC),
        "a",
    )]);
    let r = f.run("SELECT properties, properties.$browser, properties.n, properties.nested.a, properties['nested'] FROM events").unwrap();
    let row = &r.results[0];
    let parsed: Json = serde_json::from_str(row[0].as_str().unwrap()).unwrap();
    assert_eq!(parsed["n"], json!(42));
    assert_eq!(row[1], json!("Chrome"));
    assert_eq!(row[2], json!("42"));
    assert_eq!(row[3], json!("1"));
    assert_eq!(row[4], json!("{\"a\":1}"));
    assert_eq!(r.columns[1], "$browser");
    assert_eq!(r.types[1].1, "Nullable(String)");
    assert_eq!(r.types[0].1, "String");
}

#[test]
fn aggregates_with_and_without_group_by() {
    let f = Fixture::generated(GenSpec {
        events: 400,
        ..GenSpec::default()
    });
    let total = f.run("SELECT count() FROM events").unwrap();
    assert_eq!(total.results, vec![vec![json!(400)]]);
    assert_eq!(total.types[0].1, "UInt64");
    let by_event = f
        .run("SELECT event, count() AS c FROM events GROUP BY event ORDER BY c DESC, event")
        .unwrap();
    let sum: i64 = by_event
        .results
        .iter()
        .map(|r| r[1].as_i64().unwrap())
        .sum();
    assert_eq!(sum, 400);
    assert_eq!(by_event.results[0][0], json!("$pageview"));
    let empty = f.run("SELECT count(), min(timestamp), max(properties.$browser) FROM events WHERE event = 'nope'").unwrap();
    assert_eq!(
        empty.results,
        vec![vec![
            json!(0),
            json!("1970-01-01T05:30:00+05:30"),
            Json::Null
        ]]
    );
    let err = f.run("SELECT event, count() FROM events").unwrap_err();
    assert!(err.contains("not under an aggregate"), "{err}");
    let having = f
        .run("SELECT event FROM events GROUP BY event HAVING count() > 1000")
        .unwrap();
    assert!(having.results.is_empty());
}

#[test]
fn persons_table_is_queryable() {
    let f = Fixture::generated(GenSpec {
        events: 10,
        persons: 12,
        ..GenSpec::default()
    });
    let r = f.run("SELECT id, created_at, properties, is_identified FROM persons ORDER BY created_at DESC LIMIT 5").unwrap();
    assert_eq!(r.results.len(), 5);
    assert_eq!(r.types[3].1, "Bool");
    let star = f.run("SELECT * FROM persons").unwrap();
    assert_eq!(
        star.columns,
        vec!["id", "created_at", "properties", "is_identified"]
    );
    assert_eq!(star.results.len(), 12);
}

#[test]
fn null_comparisons_follow_hogql() {
    let mut e = event(LOW_STRING_HIGH_CH, datetime!(2025-01-01 0:00 UTC), "a");
    e.person_id = None;
    let f = Fixture::new(vec![e]);
    assert_eq!(
        f.column("SELECT event FROM events WHERE person_id = NULL", json!({}))
            .len(),
        1
    );
    assert_eq!(
        f.column(
            "SELECT event FROM events WHERE person_id IS NOT NULL",
            json!({})
        )
        .len(),
        0
    );
    assert_eq!(
        f.column(
            "SELECT event FROM events WHERE properties.missing != 'x'",
            json!({})
        )
        .len(),
        0
    );
    assert_eq!(
        f.column(
            "SELECT event FROM events WHERE toDateTime('garbage') IS NULL",
            json!({})
        )
        .len(),
        1
    );
}

#[test]
fn like_arithmetic_and_distinct() {
    let ts = datetime!(2025-01-01 0:00 UTC);
    let f = Fixture::new(vec![
        event(LOW_STRING_HIGH_CH, ts, "$pageview"),
        event(HIGH_STRING_LOW_CH, ts, "$pageview"),
        event("00000000-0000-7000-8000-000000000003", ts, "purchase"),
    ]);
    assert_eq!(
        f.column(
            "SELECT DISTINCT event FROM events ORDER BY event",
            json!({})
        ),
        vec![json!("$pageview"), json!("purchase")]
    );
    assert_eq!(
        f.column(
            "SELECT event FROM events WHERE event ILIKE '%VIEW' LIMIT 1",
            json!({})
        ),
        vec![json!("$pageview")]
    );
    assert_eq!(
        f.column(
            "SELECT toInt(properties.n) * 2 + 1 FROM events LIMIT 1",
            json!({})
        ),
        vec![json!(85)]
    );
}

#[test]
fn random_token_soup_never_panics() {
    // Libraries never panic on input: every query either runs or is a HogQlError.
    let f = Fixture::generated(GenSpec {
        events: 50,
        persons: 5,
        ..GenSpec::default()
    });
    let vocab = [
        "SELECT",
        "FROM",
        "events",
        "persons",
        "WHERE",
        "ORDER",
        "BY",
        "GROUP",
        "HAVING",
        "LIMIT",
        "OFFSET",
        "DISTINCT",
        "AS",
        "AND",
        "OR",
        "NOT",
        "IN",
        "LIKE",
        "IS",
        "NULL",
        "BETWEEN",
        "ASC",
        "DESC",
        "(",
        ")",
        ",",
        ".",
        "*",
        "=",
        "!=",
        "<",
        ">=",
        "+",
        "-",
        "/",
        "%",
        "[",
        "]",
        "timestamp",
        "uuid",
        "event",
        "created_at",
        "person_id",
        "properties",
        "$browser",
        "properties.$browser",
        "properties.nested.a",
        "id",
        "is_identified",
        "count()",
        "count(DISTINCT event)",
        "min(timestamp)",
        "max(uuid)",
        "sum(1)",
        "avg(2.5)",
        "toDateTime('2025-01-02 00:00:00')",
        "toDateTime({ts})",
        "toUUID({u})",
        "toUUID('x')",
        "toString(timestamp)",
        "toInt('7')",
        "toFloat(properties.n)",
        "now()",
        "coalesce(NULL, 1)",
        "lower(event)",
        "length(event)",
        "tuple(1, 'a')",
        "{ts}",
        "{u}",
        "{list}",
        "{missing}",
        "'str'",
        "'2025-01-01'",
        "1",
        "0",
        "-3",
        "2.5",
        "1e400",
        "true",
        "false",
        "50001",
        "''",
        "`quoted id`",
        "\"dq\"",
        "e",
        "--",
        ";",
        "{",
        "}",
        "'unterminated",
        "LIMIT 1, 2",
    ];
    let mut rng = fastrand::Rng::with_seed(2024);
    let values = json!({"ts": "2025-01-02T00:00:00Z", "u": "00000000-0000-0000-0000-000000000000", "list": [1, "a", null]});
    let mut ran = 0;
    for _ in 0..4_000 {
        let mut q = String::from(if rng.bool() { "SELECT " } else { "" });
        for _ in 0..rng.usize(1..14) {
            q.push_str(vocab[rng.usize(..vocab.len())]);
            q.push(' ');
        }
        if rng.bool() {
            q.push_str("FROM events ");
            for _ in 0..rng.usize(0..10) {
                q.push_str(vocab[rng.usize(..vocab.len())]);
                q.push(' ');
            }
        }
        if f.run_with(&q, values.clone(), rng.bool()).is_ok() {
            ran += 1;
        }
    }
    assert!(ran > 0, "some random queries are valid");
}

/// A random, mostly well-formed expression over the events table.
fn random_expr(rng: &mut fastrand::Rng, depth: usize) -> String {
    const ATOMS: &[&str] = &[
        "timestamp",
        "created_at",
        "uuid",
        "event",
        "distinct_id",
        "person_id",
        "properties",
        "elements_chain",
        "properties.$browser",
        "properties.plan_price",
        "properties.$set.nested.list.2",
        "properties['key with spaces']",
        "toDateTime({ts})",
        "toDateTime('2025-01-03')",
        "toUUID({u})",
        "{u}",
        "{ts}",
        "{n}",
        "{list}",
        "NULL",
        "1",
        "2.5",
        "'$pageview'",
        "true",
        "now()",
        "toString(uuid)",
        "toInt(properties.plan_price)",
        "(timestamp, uuid)",
        "({ts}, {u})",
        "(toDateTime({ts}), toUUID({u}))",
        "count()",
        "max(timestamp)",
    ];
    const BIN: &[&str] = &[
        " = ", " != ", " < ", " >= ", " AND ", " OR ", " + ", " * ", " / ", " LIKE ", " IN ",
    ];
    if depth == 0 || rng.u8(..3) == 0 {
        return ATOMS[rng.usize(..ATOMS.len())].to_owned();
    }
    match rng.u8(..5) {
        0 => format!("NOT {}", random_expr(rng, depth - 1)),
        1 => format!("({})", random_expr(rng, depth - 1)),
        2 => format!("{} IS NULL", random_expr(rng, depth - 1)),
        3 => format!(
            "coalesce({}, {})",
            random_expr(rng, depth - 1),
            random_expr(rng, depth - 1)
        ),
        _ => format!(
            "{}{}{}",
            random_expr(rng, depth - 1),
            BIN[rng.usize(..BIN.len())],
            random_expr(rng, depth - 1)
        ),
    }
}

#[test]
fn random_well_formed_queries_never_panic() {
    let f = Fixture::generated(GenSpec {
        events: 80,
        persons: 5,
        ..GenSpec::default()
    });
    let values = json!({"ts": "2025-01-02T00:00:00Z", "u": "0194227b-0000-7000-8000-000000000001", "n": 3, "list": ["a", 1]});
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut ok, mut err) = (0, 0);
    for _ in 0..3_000 {
        let mut q = format!(
            "SELECT {}, {} FROM events",
            random_expr(&mut rng, 3),
            random_expr(&mut rng, 2)
        );
        if rng.bool() {
            q.push_str(&format!(" WHERE {}", random_expr(&mut rng, 4)));
        }
        if rng.u8(..4) == 0 {
            q.push_str(&format!(" GROUP BY {}", random_expr(&mut rng, 1)));
        }
        if rng.bool() {
            q.push_str(&format!(
                " ORDER BY {} DESC, {}",
                random_expr(&mut rng, 2),
                random_expr(&mut rng, 1)
            ));
        }
        if rng.bool() {
            q.push_str(&format!(" LIMIT {}", rng.u32(..100)));
        }
        match f.run_with(&q, values.clone(), rng.bool()) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
    }
    assert!(ok > 300 && err > 300, "ok {ok}, err {err}");
}
