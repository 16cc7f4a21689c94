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
        person_properties: serde_json::Map::new(),
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
        self.run_clamped(q, values, convert, crate::config::DEFAULT_LIMIT_CLAMP)
    }

    fn run_clamped(
        &self,
        q: &str,
        values: Json,
        convert: bool,
        limit_clamp: usize,
    ) -> Result<QueryResult, String> {
        let values: Map<String, Json> = serde_json::from_value(values).unwrap();
        let settings = QuerySettings {
            values: &values,
            project_tz: offset!(+05:30),
            project_tz_name: "Asia/Kolkata",
            convert_to_project_tz: convert,
            now: 0,
            limit_clamp,
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
fn time_literals_without_offset_are_read_in_the_display_zone() {
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
    // Without convertToProjectTimezone PostHog's printer adds 'UTC' (`_get_timezone`), so the
    // literal is read in UTC: chdb `parseDateTime64BestEffortOrNull('2025-01-02 04:30:00', 6,
    // 'UTC')` = 2025-01-02 04:30:00 UTC, the event's instant.
    let utc_mode = |q: &str| {
        f.run_with(q, json!({}), false)
            .unwrap()
            .results
            .into_iter()
            .map(|r| r[0].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        utc_mode("SELECT event FROM events WHERE timestamp = toDateTime('2025-01-02 04:30:00')"),
        vec![json!("a")]
    );
    assert!(
        utc_mode("SELECT event FROM events WHERE timestamp = toDateTime('2025-01-02 10:00:00')")
            .is_empty()
    );
    assert_eq!(
        utc_mode("SELECT toDateTime('2025-01-02 04:30:00') FROM events"),
        vec![json!("2025-01-02T04:30:00Z")]
    );
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
        f.run("SELECT 1 FROM groups")
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
        "person.properties",
        "poe.properties.plan",
        "person",
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
        "sessions",
        "(SELECT",
        "(SELECT * FROM events)",
        "(SELECT distinct_id, count() AS c FROM events GROUP BY distinct_id)",
        "INTERVAL",
        "DAY",
        "MONTH",
        "INTERVAL {n} HOUR",
        "toIntervalDay({n})",
        "toIntervalWeek({ts})",
        "toDate(timestamp)",
        "toDate({ts})",
        "toStartOfWeek(timestamp)",
        "toStartOfMonth(created_at)",
        "dateDiff('day', timestamp, now())",
        "dateDiff({k}, timestamp, now())",
        "countIf(event = 'x')",
        "sumIf(1, 1)",
        "minIf(timestamp, 0)",
        "argMax(event, timestamp)",
        "any(event)",
        "uniq(event, uuid)",
        "JSONExtractString(properties, {k})",
        "JSONExtractInt(properties, 'n', 1)",
        "if(1, 2, 3)",
        "round(2.5, 1)",
        "floor(-1.5)",
        "intDiv(7, 0)",
        "concat(event, 1)",
        "greatest(1, 2.5)",
        "notEmpty(event)",
        "$start_timestamp",
        "$session_duration",
        "session_id",
        "$is_bounce",
    ];
    let mut rng = fastrand::Rng::with_seed(2024);
    let values = json!({"ts": "2025-01-02T00:00:00Z", "u": "00000000-0000-0000-0000-000000000000", "list": [1, "a", null], "n": 3, "k": "day"});
    let mut ran = 0;
    for _ in 0..4_000 {
        let mut q = String::from(if rng.bool() { "SELECT " } else { "" });
        for _ in 0..rng.usize(1..14) {
            q.push_str(vocab[rng.usize(..vocab.len())]);
            q.push(' ');
        }
        if rng.bool() {
            q.push_str(match rng.u8(..4) {
                0 => "FROM sessions ",
                1 => "FROM (SELECT * FROM events) AS e ",
                _ => "FROM events ",
            });
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
        "person.properties",
        "person.properties.plan",
        "poe.properties['favourite colour']",
        "JSONExtractString(person.properties, 'plan')",
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
        "countIf(event = '$pageview')",
        "argMin(uuid, timestamp)",
        "any(properties.$browser)",
        "toDate(timestamp)",
        "toStartOfWeek(timestamp)",
        "toStartOfHour(created_at)",
        "timestamp - INTERVAL {n} DAY",
        "toDate({ts}) + toIntervalMonth({n})",
        "dateDiff('hour', created_at, timestamp)",
        "JSONExtractString(properties, '$browser')",
        "JSONExtractFloat(properties, {ts})",
        "if(event = 'x', 1, 2.5)",
        "round(toFloat(properties.plan_price), 1)",
        "intDiv({n}, 2)",
        "concat(event, '/', toString(uuid))",
        "least(timestamp, toDate({ts}))",
        "empty(distinct_id)",
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
        // Sometimes read the events through a subquery: the outer query sees the same columns.
        let from = if rng.u8(..4) == 0 {
            "(SELECT * FROM events WHERE event != 'x') AS sub"
        } else {
            "events"
        };
        let mut q = format!(
            "SELECT {}, {} FROM {from}",
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
    assert!(ok > 200 && err > 300, "ok {ok}, err {err}");
}

// ---------------------------------------------------------------------------------------------
// Subqueries, dates and intervals, conditional aggregates, scalar functions, `sessions`.

/// An event of `distinct_id` at `ts` with the given properties.
fn ev(n: u32, distinct_id: &str, ts: time::OffsetDateTime, name: &str, props: Json) -> Event {
    Event {
        uuid: Uuid::from_u64_pair(0x0194_0000_0000_7000, 0x8000_0000_0000_0000 | u64::from(n)),
        event: name.to_owned(),
        distinct_id: distinct_id.to_owned(),
        timestamp: ts,
        created_at: ts,
        person_id: None,
        properties: serde_json::from_value(props).unwrap(),
        elements_chain: String::new(),
        person_properties: serde_json::Map::new(),
    }
}

/// Five users: `a` 3 events, `b` 2, `c` 2, `d` 1, `e` 1 (all on 2025-01-06/07 UTC).
fn users_fixture() -> Fixture {
    let t = datetime!(2025-01-06 10:00 UTC);
    let h = time::Duration::hours;
    let mut events = Vec::new();
    for (i, (user, count)) in [("a", 3), ("b", 2), ("c", 2), ("d", 1), ("e", 1)]
        .into_iter()
        .enumerate()
    {
        for k in 0..count {
            let n = u32::try_from(i * 10 + k).unwrap();
            let name = if k == 0 { "$pageview" } else { "purchase" };
            events.push(ev(
                n,
                user,
                t + h(i64::from(n)),
                name,
                json!({"revenue": 10 * (k + 1), "plan": if i % 2 == 0 { "pro" } else { "free" }}),
            ));
        }
    }
    Fixture::new(events)
}

fn one(f: &Fixture, q: &str) -> Json {
    one_with(f, q, json!({}))
}

fn one_with(f: &Fixture, q: &str, values: Json) -> Json {
    let r = f
        .run_with(q, values, true)
        .unwrap_or_else(|e| panic!("{q}: {e}"));
    assert_eq!(r.results.len(), 1, "{q}: {:?}", r.results);
    r.results[0][0].clone()
}

#[test]
fn subquery_aggregates_over_an_aggregate() {
    let f = users_fixture();
    let r = f
        .run("SELECT c, count() AS users FROM (SELECT distinct_id, count() AS c FROM events GROUP BY distinct_id) GROUP BY c ORDER BY c")
        .unwrap();
    assert_eq!(
        r.results,
        vec![
            vec![json!(1), json!(2)],
            vec![json!(2), json!(2)],
            vec![json!(3), json!(1)]
        ]
    );
    // The inner column keeps its bound type.
    assert_eq!(r.types[0], ("c".to_owned(), "UInt64".to_owned()));
    // Two levels, a qualified name, WHERE and HAVING on derived columns.
    let r = f
        .run(
            "SELECT max(s.users) AS most, sum(s.c) FROM (\
               SELECT c, count() AS users FROM (\
                 SELECT distinct_id AS who, count() AS c FROM events GROUP BY who\
               ) AS per_user WHERE c < 3 GROUP BY c HAVING users > 0\
             ) s",
        )
        .unwrap();
    assert_eq!(r.results, vec![vec![json!(2), json!(3)]]);
    assert_eq!(r.columns, vec!["most", "sum(s.c)"]);
    let star = f
        .run("SELECT * FROM (SELECT distinct_id AS who, count() AS c FROM events GROUP BY who ORDER BY c DESC, who LIMIT 2)")
        .unwrap();
    assert_eq!(star.columns, vec!["who", "c"]);
    assert_eq!(
        star.results,
        vec![vec![json!("a"), json!(3)], vec![json!("b"), json!(2)]]
    );
    let err = f
        .run("SELECT nope FROM (SELECT event FROM events)")
        .unwrap_err();
    assert!(
        err.contains("Unable to resolve field: nope") && err.contains("event"),
        "{err}"
    );
    let err = f
        .run("SELECT properties.x FROM (SELECT properties FROM events)")
        .unwrap_err();
    assert!(err.contains("inside the subquery"), "{err}");
}

#[test]
fn only_the_top_level_query_is_clamped_and_paginated() {
    let f = Fixture::generated(GenSpec {
        events: 250,
        persons: 5,
        ..GenSpec::default()
    });
    // An inner query without LIMIT is unlimited.
    assert_eq!(
        one(&f, "SELECT count() FROM (SELECT uuid FROM events)"),
        json!(250)
    );
    assert_eq!(
        one(
            &f,
            "SELECT count() FROM (SELECT uuid FROM events LIMIT 70000)"
        ),
        json!(250)
    );
    assert_eq!(
        one(
            &f,
            "SELECT count() FROM (SELECT uuid FROM events ORDER BY timestamp LIMIT 7)"
        ),
        json!(7)
    );
    let r = f.run("SELECT uuid FROM (SELECT uuid FROM events)").unwrap();
    assert_eq!(r.results.len(), 100);
    assert_eq!(
        (r.has_more, r.limit, r.offset),
        (Some(true), Some(100), Some(0))
    );
    let r = f
        .run("SELECT count() FROM (SELECT uuid FROM events) LIMIT 70000")
        .unwrap();
    assert!(r.hogql.ends_with("LIMIT 50000"), "{}", r.hogql);
    assert!(
        r.hogql.contains("FROM (SELECT uuid FROM events)"),
        "{}",
        r.hogql
    );
    let err = f
        .run("SELECT count() FROM (SELECT uuid FROM events LIMIT 10 OFFSET 5)")
        .unwrap_err();
    assert!(err.starts_with("OFFSET is not supported"), "{err}");
}

#[test]
fn conditional_and_other_aggregates() {
    let f = users_fixture();
    let r = f
        .run(
            "SELECT countIf(event = 'purchase'), sumIf(toInt(properties.revenue), event = 'purchase'), \
             avgIf(toFloat(properties.revenue), event = 'purchase'), \
             minIf(timestamp, event = 'purchase'), maxIf(distinct_id, event = '$pageview'), \
             uniq(distinct_id), uniqIf(distinct_id, event = 'purchase'), \
             argMax(distinct_id, timestamp), argMin(event, timestamp), any(distinct_id) \
             FROM events",
        )
        .unwrap();
    assert_eq!(
        r.results[0],
        vec![
            json!(4),
            json!(20 + 30 + 20 + 20),
            json!(22.5),
            json!("2025-01-06T16:30:00+05:30"),
            json!("e"),
            json!(5),
            json!(3),
            json!("e"),
            json!("$pageview"),
            json!("a"),
        ]
    );
    let types: Vec<&str> = r.types.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(&types[..2], ["UInt64", "Int64"]);
    assert_eq!(types[3], "DateTime64(6, 'Asia/Kolkata')");
    // Over no matching rows: the type's default, as min/max (1970-01-01T00:00:00 UTC).
    assert_eq!(
        one(&f, "SELECT minIf(timestamp, event = 'nope') FROM events"),
        json!("1970-01-01T05:30:00+05:30")
    );
    let r = f
        .run_with(
            "SELECT maxIf(timestamp, event = 'nope'), countIf(event = 'nope'), anyIf(event, 0) FROM events",
            json!({}),
            false,
        )
        .unwrap();
    assert_eq!(
        r.results[0],
        vec![json!("1970-01-01T00:00:00Z"), json!(0), json!("")]
    );
    // count(DISTINCT …) and uniq agree; uniq of several columns counts tuples.
    assert_eq!(
        one(
            &f,
            "SELECT count(DISTINCT distinct_id) = uniq(distinct_id) FROM events"
        ),
        json!(true)
    );
    assert_eq!(
        one(&f, "SELECT uniq(distinct_id, event) FROM events"),
        json!(8)
    );
    let err = f.run("SELECT countIf() FROM events").unwrap_err();
    assert!(err.contains("condition"), "{err}");
    let err = f.run("SELECT sumIf(event, 1) FROM events").unwrap_err();
    assert!(err.contains("Illegal type String"), "{err}");
    let err = f.run("SELECT countIf(event) FROM events").unwrap_err();
    assert!(err.contains("Illegal type String"), "{err}");
}

#[test]
fn any_and_arg_max_take_the_first_row_in_storage_order_on_ties() {
    let t = datetime!(2025-01-01 0:00 UTC);
    let f = Fixture::new(vec![
        ev(1, "x", t, "first", json!({"v": null})),
        ev(2, "y", t, "second", json!({"v": "b"})),
        ev(3, "z", t, "third", json!({"v": "c"})),
    ]);
    assert_eq!(one(&f, "SELECT any(properties.v) FROM events"), json!("b"));
    assert_eq!(
        one(&f, "SELECT argMax(event, timestamp) FROM events"),
        json!("first")
    );
    assert_eq!(
        one(&f, "SELECT argMin(event, timestamp) FROM events"),
        json!("first")
    );
    // The same, whatever access path the scan takes.
    assert_eq!(
        one(
            &f,
            "SELECT argMax(event, timestamp) FROM events WHERE created_at >= toDateTime('2024-12-31')"
        ),
        json!("first")
    );
}

#[test]
fn dates_truncate_in_the_display_zone() {
    // 2025-01-08 20:00 UTC is Thursday 2025-01-09 01:30 in +05:30.
    let f = Fixture::new(vec![ev(
        1,
        "a",
        datetime!(2025-01-08 20:00 UTC),
        "e",
        json!({}),
    )]);
    let r = f
        .run(
            "SELECT toDate(timestamp), toStartOfDay(timestamp), toStartOfHour(timestamp), \
             toStartOfWeek(timestamp), toStartOfWeek(timestamp, 1), toStartOfMonth(timestamp) FROM events",
        )
        .unwrap();
    assert_eq!(
        r.results[0],
        vec![
            json!("2025-01-09"),
            json!("2025-01-09T00:00:00+05:30"),
            json!("2025-01-09T01:00:00+05:30"),
            json!("2025-01-05"),
            json!("2025-01-06"),
            json!("2025-01-01"),
        ]
    );
    let types: Vec<&str> = r.types.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "Date",
            "DateTime64(6, 'Asia/Kolkata')",
            "DateTime64(6, 'Asia/Kolkata')",
            "Date",
            "Date",
            "Date"
        ]
    );
    let utc = f
        .run_with(
            "SELECT toDate(timestamp), toStartOfDay(timestamp), toStartOfWeek(timestamp) FROM events",
            json!({}),
            false,
        )
        .unwrap();
    assert_eq!(
        utc.results[0],
        vec![
            json!("2025-01-08"),
            json!("2025-01-08T00:00:00Z"),
            json!("2025-01-05")
        ]
    );
}

#[test]
fn weeks_start_on_sunday_by_default() {
    let f = Fixture::new(vec![ev(
        1,
        "a",
        datetime!(2025-01-01 0:00 UTC),
        "e",
        json!({}),
    )]);
    for (day, sunday_week, monday_week) in [
        ("2025-01-04", "2024-12-29", "2024-12-30"), // Saturday
        ("2025-01-05", "2025-01-05", "2024-12-30"), // Sunday
        ("2025-01-06", "2025-01-05", "2025-01-06"), // Monday
    ] {
        let r = f
            .run(&format!(
                "SELECT toStartOfWeek(toDate('{day}')), toStartOfWeek(toDate('{day}'), 0), \
                 toStartOfWeek(toDate('{day}'), 1) FROM events"
            ))
            .unwrap();
        assert_eq!(
            r.results[0],
            vec![json!(sunday_week), json!(sunday_week), json!(monday_week)],
            "{day}"
        );
    }
    let err = f
        .run("SELECT toStartOfWeek(timestamp, {m}) FROM events")
        .unwrap_err();
    assert!(err.contains("{m}"), "{err}");
    let err = f
        .run_with(
            "SELECT toStartOfWeek(timestamp, {m}) FROM events",
            json!({"m": "1"}),
            true,
        )
        .unwrap_err();
    assert!(err.contains("mode"), "{err}");
}

#[test]
fn date_diff_counts_boundaries_crossed() {
    let f = Fixture::new(vec![ev(
        1,
        "a",
        datetime!(2025-01-01 0:00 UTC),
        "e",
        json!({}),
    )]);
    let q = |unit: &str, a: &str, b: &str| {
        one(
            &f,
            &format!(
                "SELECT dateDiff('{unit}', toDateTime('{a}', 'UTC'), toDateTime('{b}', 'UTC')) FROM events"
            ),
        )
    };
    // Evaluated in the display zone: in +05:30 these are 05:29 and 05:31 on the same day.
    let same_local_day = q("day", "2025-01-01 23:59:00", "2025-01-02 00:01:00");
    assert_eq!(same_local_day, json!(0));
    let r = f
        .run_with(
            "SELECT dateDiff('day', toDateTime('2025-01-01 23:59:00', 'UTC'), toDateTime('2025-01-02 00:01:00', 'UTC')), \
             dateDiff('second', toDateTime('2025-01-01 23:59:59.9', 'UTC'), toDateTime('2025-01-02 00:00:00.1', 'UTC')), \
             dateDiff('month', toDate('2025-01-31'), toDate('2025-02-01')), \
             dateDiff('week', toDate('2025-01-05'), toDate('2025-01-06')), \
             dateDiff('hour', timestamp, timestamp + INTERVAL 90 MINUTE) FROM events",
            json!({}),
            false,
        )
        .unwrap();
    assert_eq!(
        r.results[0],
        vec![json!(1), json!(1), json!(1), json!(1), json!(1)]
    );
    // Parsed strings may be NULL; columns may not.
    assert_eq!(r.types[0].1, "Nullable(Int64)");
    assert_eq!(r.types[4].1, "Int64");
    assert_eq!(
        q("minute", "2025-01-01 10:00:59", "2025-01-01 10:01:00"),
        json!(1)
    );
    let err = f
        .run("SELECT dateDiff('fortnight', timestamp, timestamp) FROM events")
        .unwrap_err();
    assert!(err.contains("unknown unit"), "{err}");
    let err = f
        .run("SELECT dateDiff('day', event, timestamp) FROM events")
        .unwrap_err();
    assert!(err.contains("Illegal type String"), "{err}");
}

#[test]
fn interval_arithmetic_with_placeholder_bound_counts() {
    let t = datetime!(2025-01-10 12:00 UTC);
    let f = Fixture::new(
        (0..10)
            .map(|d| {
                ev(
                    d,
                    "a",
                    t - time::Duration::days(i64::from(d)),
                    "e",
                    json!({}),
                )
            })
            .collect(),
    );
    let values = json!({"n": 3, "now": "2025-01-10T12:00:00Z"});
    for q in [
        "SELECT count() FROM events WHERE timestamp > toDateTime({now}) - INTERVAL {n} DAY",
        "SELECT count() FROM events WHERE timestamp > toDateTime({now}) - toIntervalDay({n})",
        "SELECT count() FROM events WHERE timestamp + toIntervalHour(24 * {n}) > toDateTime({now})",
        "SELECT count() FROM events WHERE toIntervalDay({n}) + timestamp > toDateTime({now})",
    ] {
        assert_eq!(one_with(&f, q, values.clone()), json!(3), "{q}");
    }
    let r = f
        .run_with(
            "SELECT toDateTime('2025-01-31 10:00:00', 'UTC') + INTERVAL 1 MONTH, \
             toDateTime('2025-03-31 10:00:00', 'UTC') - toIntervalMonth({m}), \
             toDate('2025-01-31') + INTERVAL 1 MONTH, toDate('2025-01-01') - INTERVAL 1 WEEK, \
             toDate('2025-01-01') + INTERVAL 2 HOUR, \
             toDateTime('2025-01-01 00:00:00', 'UTC') + INTERVAL 90 SECOND + INTERVAL 1 MINUTE \
             FROM events LIMIT 1",
            json!({"m": 1}),
            false,
        )
        .unwrap();
    assert_eq!(
        r.results[0],
        vec![
            json!("2025-02-28T10:00:00Z"),
            json!("2025-02-28T10:00:00Z"),
            json!("2025-02-28"),
            json!("2024-12-25"),
            json!("2025-01-01T02:00:00Z"),
            json!("2025-01-01T00:02:30Z"),
        ]
    );
    let r = f
        .run_with(
            "SELECT toDate(timestamp) + INTERVAL 1 MONTH, toDate(timestamp) - INTERVAL 2 HOUR,              timestamp + INTERVAL 1 DAY FROM events LIMIT 1",
            json!({}),
            false,
        )
        .unwrap();
    let types: Vec<&str> = r.types.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        types,
        ["Date", "DateTime64(6, 'UTC')", "DateTime64(6, 'UTC')"]
    );
    let err = f
        .run("SELECT INTERVAL 1 DAY - timestamp FROM events")
        .unwrap_err();
    assert!(err.contains("Illegal types"), "{err}");
    let err = f.run("SELECT timestamp + 1 FROM events").unwrap_err();
    assert!(err.contains("Illegal types"), "{err}");
}

#[test]
fn placeholders_never_become_syntax() {
    let f = Fixture::new(vec![ev(
        1,
        "a",
        datetime!(2025-01-01 0:00 UTC),
        "e",
        json!({"it's \"quoted\"": "yes", "a": "plain"}),
    )]);
    // Text that would read as SQL is a String value: the interval argument must be an integer.
    for q in [
        "SELECT count() FROM events WHERE timestamp > now() - INTERVAL {n} DAY",
        "SELECT count() FROM events WHERE timestamp > now() - toIntervalDay({n})",
    ] {
        let err = f
            .run_with(q, json!({"n": "1 DAY) OR (1"}), true)
            .unwrap_err();
        assert!(err.contains("Illegal type String"), "{q}: {err}");
    }
    // A key with quotes is just a key.
    assert_eq!(
        one_with(
            &f,
            "SELECT JSONExtractString(properties, {k}) FROM events",
            json!({"k": "it's \"quoted\""})
        ),
        json!("yes")
    );
    assert_eq!(
        one_with(
            &f,
            "SELECT JSONExtractString(properties, {k}) FROM events",
            json!({"k": "a') OR ('1"})
        ),
        json!("")
    );
}

#[test]
fn json_extract_follows_clickhouse_defaults() {
    let f = Fixture::new(vec![ev(
        1,
        "a",
        datetime!(2025-01-01 0:00 UTC),
        "e",
        json!({"s": "x", "n": 42, "f": 2.5, "ns": "7", "b": true, "o": {"k": [10, "z"]}, "nul": null}),
    )]);
    let r = f
        .run(
            "SELECT JSONExtractString(properties, 'missing'), JSONExtractString(properties, 'n'), \
             JSONExtractString(properties, 's'), JSONExtractString(properties, 'o', 'k', 2), \
             JSONExtractInt(properties, 'n'), JSONExtractInt(properties, 'missing'), JSONExtractInt(properties, 'ns'), \
             JSONExtractFloat(properties, 'f'), JSONExtractFloat(properties, 'nul'), \
             JSONExtractString('{\"a\": \"b\"}', 'a'), JSONExtractString('not json', 'a'), \
             JSONExtractInt(properties, 'o', 'k', -2), JSONExtractInt(properties, 'b'), \
             JSONExtractFloat(properties, 'b'), JSONExtractString(properties, 'b') FROM events",
        )
        .unwrap();
    // Checked against chdb (ClickHouse 26.9): JSONExtractString of a number (or bool, object,
    // array) is its JSON text (`JSONExtractString('{"n":42}', 'n')` = '42', since ClickHouse
    // 21.11); JSONExtractInt / JSONExtractFloat of `true` are 0
    // (`JSONExtractInt('{"b":true}', 'b')` = 0).
    assert_eq!(
        r.results[0],
        vec![
            json!(""),
            json!("42"),
            json!("x"),
            json!("z"),
            json!(42),
            json!(0),
            json!(7),
            json!(2.5),
            json!(0.0),
            json!("b"),
            json!(""),
            json!(10),
            json!(0),
            json!(0.0),
            json!("true"),
        ]
    );
    assert_eq!(r.types[0].1, "String");
    assert_eq!(r.types[4].1, "Int64");
    assert_eq!(r.types[7].1, "Float64");
    // Nullable input, NULL output. `properties.o` is `{"k":[10,"z"]}`; chdb:
    // `JSONExtractString('{"k":[10,"z"]}', 'k')` = `[10,"z"]`.
    assert_eq!(
        one(
            &f,
            "SELECT JSONExtractString(properties.o, 'k') FROM events"
        ),
        json!("[10,\"z\"]")
    );
    assert_eq!(
        one(
            &f,
            "SELECT JSONExtractString(properties.missing, 'k') FROM events"
        ),
        Json::Null
    );
}

#[test]
fn scalar_functions_and_integer_division() {
    let f = Fixture::new(vec![ev(
        1,
        "a",
        datetime!(2025-01-01 0:00 UTC),
        "e",
        json!({"s": "x"}),
    )]);
    let r = f
        .run(
            "SELECT 7 / 2, intDiv(7, 2), intDiv(-7, 2), 6 / 3, \
             if(1 = 1, 'y', 'n'), if(0, 1, 2.5), \
             round(2.5), round(3.5), round(1.23456, 2), round(125, -1), round(-2.5), floor(2.7), floor(-2.5), floor(1234, -2), \
             concat('a', event, 1, '-', toDate(timestamp)), concat('a', properties.missing), \
             greatest(1, 2.5), least(3, 2), greatest(toDate('2025-01-02'), toDateTime('2025-01-01 12:00:00', 'UTC')), \
             notEmpty(event), empty(''), notEmpty(properties.missing) \
             FROM events",
        )
        .unwrap();
    assert_eq!(
        r.results[0],
        vec![
            json!(3.5),
            json!(3),
            json!(-3),
            json!(2.0),
            json!("y"),
            json!(2.5),
            json!(2.0),
            json!(4.0),
            json!(1.23),
            json!(120),
            json!(-2.0),
            json!(2.0),
            json!(-3.0),
            json!(1200),
            json!("ae1-2025-01-01"),
            Json::Null,
            json!(2.5),
            json!(2),
            json!("2025-01-02T00:00:00+05:30"),
            json!(true),
            json!(true),
            Json::Null,
        ]
    );
    let types: Vec<&str> = r.types.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(types[0], "Float64", "integer / integer is Float64");
    assert_eq!(types[1], "Int64");
    assert_eq!(types[5], "Float64");
    assert_eq!(types[14], "String");
    assert_eq!(types[15], "Nullable(String)");
    assert_eq!(types[18], "Nullable(DateTime64(6, 'Asia/Kolkata'))");
    let err = f.run("SELECT intDiv(1, 0) FROM events").unwrap_err();
    assert!(err.contains("Division by zero"), "{err}");
    let err = f.run("SELECT if(1, 'a', 2) FROM events").unwrap_err();
    assert!(err.contains("no supertype"), "{err}");
    let err = f.run("SELECT if(event, 1, 2) FROM events").unwrap_err();
    assert!(err.contains("Illegal type String"), "{err}");
    let err = f.run("SELECT round(event) FROM events").unwrap_err();
    assert!(err.contains("Illegal type String"), "{err}");
    let err = f.run("SELECT round(1.5, event) FROM events").unwrap_err();
    assert!(err.contains("integer constant"), "{err}");
}

#[test]
fn to_date_of_strings_and_date_comparisons() {
    let f = Fixture::new(vec![
        ev(
            1,
            "a",
            datetime!(2025-01-01 20:00 UTC),
            "late",
            json!({"d": "2025-01-02"}),
        ),
        ev(
            2,
            "a",
            datetime!(2025-01-01 10:00 UTC),
            "early",
            json!({"d": "garbage"}),
        ),
    ]);
    assert_eq!(
        f.column(
            "SELECT event FROM events WHERE toDate(timestamp) = toDate({d}) ORDER BY event",
            json!({"d": "2025-01-02"})
        ),
        vec![json!("late")]
    );
    assert_eq!(
        f.column(
            "SELECT event FROM events WHERE timestamp >= toDate('2025-01-02') ORDER BY event",
            json!({})
        ),
        vec![json!("late")],
        "a Date compares with a DateTime as its midnight in the display zone"
    );
    assert_eq!(
        f.column(
            "SELECT toDate(properties.d) FROM events ORDER BY event",
            json!({})
        ),
        vec![Json::Null, json!("2025-01-02")]
    );
    let r = f
        .run("SELECT toDate('2025-02-30') FROM events LIMIT 1")
        .unwrap();
    assert_eq!(r.results[0][0], Json::Null);
    assert_eq!(r.types[0].1, "Nullable(Date)");
    let err = f
        .run("SELECT 1 FROM events WHERE toDate(timestamp) = '2025-01-02'")
        .unwrap_err();
    assert!(err.contains("toDate("), "{err}");
    // GROUP BY a Date alias; `uniq` of Dates.
    let r = f
        .run("SELECT toDate(timestamp) AS day, count() FROM events GROUP BY day ORDER BY day")
        .unwrap();
    assert_eq!(
        r.results,
        vec![
            vec![json!("2025-01-01"), json!(1)],
            vec![json!("2025-01-02"), json!(1)]
        ]
    );
    assert_eq!(
        one(&f, "SELECT uniq(toDate(timestamp)) FROM events"),
        json!(2)
    );
}

#[test]
fn select_aliases_are_visible_to_later_items_but_not_in_where_as_aggregates() {
    let f = users_fixture();
    let r = f
        .run("SELECT count() AS n, countIf(event = 'purchase') AS p, round(100 * p / n, 1) AS pct FROM events")
        .unwrap();
    assert_eq!(r.results[0], vec![json!(9), json!(4), json!(44.4)]);
    let err = f
        .run("SELECT count() AS n FROM events WHERE n > 1")
        .unwrap_err();
    assert!(err.contains("HAVING"), "{err}");
}

/// Four sessions built by hand, plus an event without a session.
fn sessions_fixture() -> Fixture {
    let t = datetime!(2025-01-06 10:00 UTC);
    let s = time::Duration::seconds;
    let page = |n, who, at, sid: &str, url: &str| {
        ev(
            n,
            who,
            at,
            "$pageview",
            json!({"$session_id": sid, "$current_url": url}),
        )
    };
    Fixture::new(vec![
        // s-long: 2 pageviews + 1 autocapture over 65 s, not a bounce.
        page(1, "u1", t, "s-long", "https://x.test/entry"),
        ev(
            2,
            "u1-alias",
            t + s(5),
            "$autocapture",
            json!({"$session_id": "s-long"}),
        ),
        page(3, "u1", t + s(65), "s-long", "https://x.test/exit"),
        // s-single: one pageview, a bounce.
        page(4, "u2", t + s(100), "s-single", "https://x.test/only"),
        // s-short: one pageview and another event 9 s later: a bounce.
        page(5, "u3", t + s(200), "s-short", "https://x.test/a"),
        ev(
            6,
            "u3",
            t + s(209),
            "click",
            json!({"$session_id": "s-short"}),
        ),
        // s-quiet: no pageview, 12 s: not a bounce (too long).
        ev(
            7,
            "u4",
            t + s(300),
            "click",
            json!({"$session_id": "s-quiet"}),
        ),
        ev(
            8,
            "u4",
            t + s(312),
            "click",
            json!({"$session_id": "s-quiet"}),
        ),
        // No session id: not in the table.
        ev(
            9,
            "u5",
            t,
            "$pageview",
            json!({"$current_url": "https://x.test/none"}),
        ),
        ev(10, "u5", t, "$pageview", json!({"$session_id": ""})),
    ])
}

#[test]
fn sessions_table_derives_duration_counts_and_bounce_from_events() {
    let f = sessions_fixture();
    let r = f.run("SELECT * FROM sessions ORDER BY session_id").unwrap();
    assert_eq!(
        r.columns,
        vec![
            "session_id",
            "distinct_id",
            "$start_timestamp",
            "$end_timestamp",
            "$session_duration",
            "$pageview_count",
            "$autocapture_count",
            "$entry_current_url",
            "$end_current_url",
            "$is_bounce"
        ]
    );
    let types: Vec<&str> = r.types.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "String",
            "String",
            "DateTime64(6, 'Asia/Kolkata')",
            "DateTime64(6, 'Asia/Kolkata')",
            "Int64",
            "UInt64",
            "UInt64",
            "Nullable(String)",
            "Nullable(String)",
            "Bool"
        ]
    );
    assert_eq!(
        r.results,
        vec![
            vec![
                json!("s-long"),
                json!("u1"),
                json!("2025-01-06T15:30:00+05:30"),
                json!("2025-01-06T15:31:05+05:30"),
                json!(65),
                json!(2),
                json!(1),
                json!("https://x.test/entry"),
                json!("https://x.test/exit"),
                json!(false),
            ],
            vec![
                json!("s-quiet"),
                json!("u4"),
                json!("2025-01-06T15:35:00+05:30"),
                json!("2025-01-06T15:35:12+05:30"),
                json!(12),
                json!(0),
                json!(0),
                Json::Null,
                Json::Null,
                json!(false),
            ],
            vec![
                json!("s-short"),
                json!("u3"),
                json!("2025-01-06T15:33:20+05:30"),
                json!("2025-01-06T15:33:29+05:30"),
                json!(9),
                json!(1),
                json!(0),
                json!("https://x.test/a"),
                Json::Null,
                json!(true),
            ],
            vec![
                json!("s-single"),
                json!("u2"),
                json!("2025-01-06T15:31:40+05:30"),
                json!("2025-01-06T15:31:40+05:30"),
                json!(0),
                json!(1),
                json!(0),
                json!("https://x.test/only"),
                json!("https://x.test/only"),
                json!(true),
            ],
        ]
    );
    // `id` and `duration` are aliases; `$`-names work everywhere.
    assert_eq!(
        f.column(
            "SELECT id FROM sessions WHERE duration > 10 AND $pageview_count = 0",
            json!({})
        ),
        vec![json!("s-quiet")]
    );
    // The session overview template's shape.
    let r = f
        .run(
            "select toDate($start_timestamp) as day, count() as sessions, \
             round(avg($session_duration), 1) as avg_duration_s, \
             round(100 * countIf($is_bounce) / greatest(count(), 1), 1) as bounce_pct \
             from sessions group by day order by day",
        )
        .unwrap();
    assert_eq!(
        r.results,
        vec![vec![
            json!("2025-01-06"),
            json!(4),
            json!(21.5),
            json!(50.0)
        ]]
    );
    // chdb (ClickHouse 26.9): avg of a non-Nullable Int64 is Float64 (nan over no rows,
    // rendered null), of a Nullable one Nullable(Float64) (NULL over no rows).
    assert_eq!(r.types[2].1, "Float64");
    let r = f
        .run(
            "select avg($session_duration) as a, round(avg($session_duration), 1) as r, \
             avg(toInt(concat('x', session_id))) as n from sessions where session_id = 'none'",
        )
        .unwrap();
    let types: Vec<&str> = r.types.iter().map(|t| t.1.as_str()).collect();
    assert_eq!(types, ["Float64", "Float64", "Nullable(Float64)"]);
    assert_eq!(r.results, vec![vec![Json::Null, Json::Null, Json::Null]]);
}

#[test]
fn sessions_support_keyset_pages() {
    let f = sessions_fixture();
    let q = "select session_id, distinct_id, $start_timestamp from sessions \
             where $start_timestamp >= toDateTime({since}) and session_id > {after} \
             order by session_id limit 2";
    let page = |after: &str| {
        f.run_with(
            q,
            json!({"since": "2025-01-06T10:01:00Z", "after": after}),
            true,
        )
        .unwrap()
        .results
        .into_iter()
        .map(|r| r[0].clone())
        .collect::<Vec<_>>()
    };
    assert_eq!(page(""), vec![json!("s-quiet"), json!("s-short")]);
    assert_eq!(page("s-short"), vec![json!("s-single")]);
    assert!(page("s-single").is_empty());
    let generated = Fixture::generated(GenSpec {
        events: 300,
        persons: 10,
        ..GenSpec::default()
    });
    let total = one(&generated, "SELECT count() FROM sessions");
    let from_events = one(
        &generated,
        "SELECT uniq(properties.$session_id) FROM events",
    );
    assert_eq!(total, from_events);
    let r = generated
        .run("SELECT sum($pageview_count), sum(toInt(1)), sum(true) FROM sessions")
        .unwrap();
    let types: Vec<&str> = r.types.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        types,
        ["UInt64", "Int64", "UInt64"],
        "sum keeps ClickHouse's signedness"
    );
    let pageviews = r.results[0][0].clone();
    assert_eq!(
        pageviews,
        one(
            &generated,
            "SELECT count() FROM events WHERE event = '$pageview'"
        )
    );
}

#[test]
fn template_shaped_queries_run() {
    let f = users_fixture();
    let values = json!({"days": 30, "step_1": "$pageview", "step_2": "purchase", "flag_key": "x", "goal_event": "purchase", "return_after_days": 0});
    let funnel = "select count() as entered, countIf(step_2_at >= step_1_at) as converted, \
        round(100 * countIf(step_2_at >= step_1_at) / greatest(count(), 1), 1) as conversion_pct \
        from (select distinct_id, minIf(timestamp, event = {step_1}) as step_1_at, \
        maxIf(timestamp, event = {step_2}) as step_2_at, countIf(event = {step_1}) as step_1_events \
        from events where timestamp >= toDateTime('2025-01-01') - toIntervalDay({days}) \
        and event in ({step_1}, {step_2}) group by distinct_id having step_1_events > 0)";
    let r = f.run_with(funnel, values.clone(), true).unwrap();
    assert_eq!(r.results, vec![vec![json!(5), json!(3), json!(60.0)]]);
    let retention = "select toStartOfWeek(first_seen) as cohort_week, count() as users, \
        countIf(last_seen >= first_seen + toIntervalDay({return_after_days})) as retained \
        from (select distinct_id, min(timestamp) as first_seen, max(timestamp) as last_seen \
        from events group by distinct_id) group by cohort_week order by cohort_week";
    let r = f.run_with(retention, values.clone(), true).unwrap();
    assert_eq!(
        r.results,
        vec![vec![json!("2025-01-05"), json!(5), json!(5)]]
    );
    assert_eq!(r.types[0].1, "Date");
    let experiment = "select variant, count() as users from (select distinct_id, \
        max(JSONExtractString(properties, concat('pl', {flag_key}))) as variant \
        from events group by distinct_id) where variant != '' group by variant order by variant";
    let r = f
        .run_with(experiment, json!({"flag_key": "an"}), true)
        .unwrap();
    assert_eq!(
        r.results,
        vec![vec![json!("free"), json!(2)], vec![json!("pro"), json!(3)]]
    );
}

// ---------------------------------------------------------------------------------------------
// Person properties on events (persons-on-events) and the LIMIT clamp.

/// Three events: `u` before and after their plan upgrade, and one personless event.
fn poe_fixture() -> Fixture {
    let t = datetime!(2025-01-06 10:00 UTC);
    let person = Uuid::from_u64_pair(0x0194_0000_0000_4000, 0x8000_0000_0000_0001);
    let with_person = |n: u32, ts: time::OffsetDateTime, props: Json| Event {
        person_id: Some(person),
        person_properties: serde_json::from_value(props).unwrap(),
        ..ev(n, "u", ts, "$pageview", json!({"plan": "event-level"}))
    };
    Fixture::new(vec![
        with_person(
            1,
            t,
            json!({"plan": "free", "visits": 3, "is_beta": false, "nickname": null,
                   "prefs": {"theme": "dark", "langs": ["en", "ja"]},
                   "key with spaces": "v1", "$initial_browser": "Firefox", "país": "日本"}),
        ),
        with_person(
            2,
            t + time::Duration::hours(1),
            json!({"plan": "pro", "visits": 4.5, "is_beta": true, "nickname": "Zo",
                   "prefs": {"theme": "light", "langs": []},
                   "key with spaces": "v2", "$initial_browser": "Firefox", "país": "日本"}),
        ),
        ev(
            3,
            "anon",
            t + time::Duration::hours(2),
            "$pageview",
            json!({}),
        ),
    ])
}

#[test]
fn person_properties_on_events_are_json_text_as_of_the_event() {
    let f = poe_fixture();
    let r = f
        .run(
            "SELECT person.properties, person.properties.plan, person.properties.visits, \
             person.properties.is_beta, person.properties.nickname, person.properties.prefs.theme, \
             person.properties['key with spaces'], person.properties.$initial_browser, \
             person.properties.prefs, person.properties.país, properties.plan \
             FROM events ORDER BY timestamp",
        )
        .unwrap();
    let first: Json = serde_json::from_str(r.results[0][0].as_str().unwrap()).unwrap();
    assert_eq!(first["plan"], json!("free"));
    assert_eq!(first["prefs"]["langs"], json!(["en", "ja"]));
    assert_eq!(
        r.results[0][1..].to_vec(),
        vec![
            json!("free"),
            json!("3"),
            json!("false"),
            Json::Null,
            json!("dark"),
            json!("v1"),
            json!("Firefox"),
            json!("{\"langs\":[\"en\",\"ja\"],\"theme\":\"dark\"}"),
            json!("日本"),
            json!("event-level"),
        ]
    );
    // The same person one hour later, after the upgrade.
    assert_eq!(
        r.results[1][1..6].to_vec(),
        vec![
            json!("pro"),
            json!("4.5"),
            json!("true"),
            json!("Zo"),
            json!("light")
        ]
    );
    // A personless event: `{}` and NULL properties.
    assert_eq!(r.results[2][0], json!("{}"));
    assert_eq!(r.results[2][1], Json::Null);
    assert_eq!(r.types[0].1, "String");
    assert_eq!(r.types[1].1, "Nullable(String)");
}

#[test]
fn person_properties_spellings_agree() {
    let f = poe_fixture();
    let plans = |q: &str| f.column(q, json!({"k": "plan"}));
    let expected = vec![json!("free"), json!("pro"), Json::Null];
    for q in [
        "SELECT person.properties.plan FROM events ORDER BY timestamp",
        "SELECT poe.properties.plan FROM events ORDER BY timestamp",
        "SELECT events.person.properties.plan FROM events ORDER BY timestamp",
        "SELECT e.poe.properties.plan FROM events AS e ORDER BY timestamp",
        "SELECT person.properties['plan'] FROM events ORDER BY timestamp",
    ] {
        assert_eq!(plans(q), expected, "{q}");
    }
    // JSONExtractString over the JSON text: '' (not NULL) when missing.
    for q in [
        "SELECT JSONExtractString(person.properties, 'plan') FROM events ORDER BY timestamp",
        "SELECT JSONExtractString(poe.properties, {k}) FROM events ORDER BY timestamp",
    ] {
        assert_eq!(
            plans(q),
            vec![json!("free"), json!("pro"), json!("")],
            "{q}"
        );
    }
    assert_eq!(
        f.column(
            "SELECT JSONExtractString(person.properties, 'prefs', 'theme') FROM events ORDER BY timestamp",
            json!({})
        ),
        vec![json!("dark"), json!("light"), json!("")]
    );
    assert_eq!(
        f.column(
            "SELECT JSONExtractInt(person.properties, 'visits') FROM events ORDER BY timestamp",
            json!({})
        ),
        vec![json!(3), json!(4), json!(0)]
    );
    // Filters and aggregates read it like any string.
    assert_eq!(
        one(
            &f,
            "SELECT count() FROM events WHERE person.properties.plan = 'pro'"
        ),
        json!(1)
    );
    assert_eq!(
        one(
            &f,
            "SELECT argMax(person.properties.plan, timestamp) FROM events WHERE person_id IS NOT NULL"
        ),
        json!("pro")
    );
    assert_eq!(
        f.column(
            "SELECT count() FROM events GROUP BY person.properties.plan ORDER BY person.properties.plan",
            json!({})
        ),
        vec![json!(1), json!(1), json!(1)]
    );
}

#[test]
fn unaliased_person_properties_are_named_as_posthog_names_them() {
    let f = poe_fixture();
    let r = f
        .run(
            "SELECT person.properties, person.properties.plan, person.properties.prefs.theme, \
             person.properties AS person_properties, properties.nested.a FROM events LIMIT 1",
        )
        .unwrap();
    assert_eq!(
        r.columns,
        vec![
            "properties",
            "plan",
            "prefs__theme",
            "person_properties",
            "nested__a"
        ]
    );
    // `SELECT *` lists the table's columns only, as PostHog's asterisk does.
    let star = f.run("SELECT * FROM events LIMIT 1").unwrap();
    assert!(!star.columns.iter().any(|c| c.contains("person_properties")));
    // A subquery exposes it under its alias.
    assert_eq!(
        f.column(
            "SELECT JSONExtractString(pp, 'plan') FROM (SELECT timestamp, person.properties AS pp FROM events) ORDER BY timestamp",
            json!({})
        ),
        vec![json!("free"), json!("pro"), json!("")]
    );
}

#[test]
fn person_properties_exist_on_events_only() {
    let f = Fixture::generated(GenSpec {
        events: 20,
        persons: 3,
        ..GenSpec::default()
    });
    for q in [
        "SELECT person.properties FROM persons",
        "SELECT person.properties.plan FROM sessions",
        "SELECT poe.properties FROM persons",
        "SELECT person.properties FROM (SELECT uuid FROM events)",
    ] {
        let err = f.run(q).unwrap_err();
        assert!(err.starts_with("Unable to resolve field"), "{q}: {err}");
    }
    for (q, needle) in [
        ("SELECT person FROM events", "Can't select a table"),
        ("SELECT poe FROM events", "Can't select a table"),
        (
            "SELECT person.id FROM events",
            "Unable to resolve field: person.id",
        ),
        (
            "SELECT person.properties[1] FROM persons",
            "Unable to resolve field",
        ),
    ] {
        let err = f.run(q).unwrap_err();
        assert!(err.contains(needle), "{q}: {err}");
    }
    // A persons table aliased `person` still means the persons table.
    assert_eq!(
        f.run("SELECT person.properties FROM persons AS person")
            .unwrap()
            .results
            .len(),
        3
    );
}

#[test]
fn lazily_generated_person_properties_match_the_materialised_events() {
    let spec = GenSpec {
        events: 400,
        persons: 12,
        ..GenSpec::default()
    };
    let eager: std::collections::HashMap<String, Event> = Dataset::generate(&spec)
        .events
        .into_iter()
        .map(|e| (e.uuid.to_string(), e))
        .collect();
    let f = Fixture::generated(spec);
    let r = f
        .run("SELECT uuid, person.properties, person.properties.visits FROM events ORDER BY timestamp, uuid LIMIT 1000")
        .unwrap();
    assert_eq!(r.results.len(), 400);
    let mut visits_by_person: std::collections::HashMap<String, std::collections::HashSet<String>> =
        std::collections::HashMap::new();
    for row in &r.results {
        let e = &eager[row[0].as_str().unwrap()];
        let text: Json = serde_json::from_str(row[1].as_str().unwrap()).unwrap();
        assert_eq!(text, Json::Object(e.person_properties.clone()));
        if let Some(p) = e.person_id {
            visits_by_person
                .entry(p.to_string())
                .or_default()
                .insert(row[2].as_str().unwrap().to_owned());
        }
    }
    assert!(
        visits_by_person.values().any(|v| v.len() == 2),
        "some person's visits grow within the span"
    );
}

#[test]
fn the_limit_clamp_is_the_servers_setting() {
    let f = Fixture::generated(GenSpec {
        events: 1_200,
        persons: 5,
        ..GenSpec::default()
    });
    let q = "SELECT uuid FROM events ORDER BY timestamp, uuid LIMIT 1000";
    let clamped = f.run_clamped(q, json!({}), true, 777).unwrap();
    assert_eq!(clamped.results.len(), 777);
    assert_eq!(
        (clamped.has_more, clamped.limit, clamped.offset),
        (None, None, None)
    );
    assert!(clamped.hogql.ends_with("LIMIT 777"), "{}", clamped.hogql);
    // The clamped page is the head of the unclamped one.
    let full = f.run_clamped(q, json!({}), true, 5_000).unwrap();
    assert_eq!(full.results.len(), 1000);
    assert_eq!(full.results[..777], clamped.results[..]);
    // No LIMIT: PostHog's 100-row page with hasMore, whatever the clamp.
    let page = f
        .run_clamped("SELECT uuid FROM events", json!({}), true, 50)
        .unwrap();
    assert_eq!(page.results.len(), 100);
    assert_eq!(page.has_more, Some(true));
    // Inner queries are not clamped.
    let inner = f
        .run_clamped(
            "SELECT count() FROM (SELECT uuid FROM events LIMIT 1000)",
            json!({}),
            true,
            777,
        )
        .unwrap();
    assert_eq!(inner.results[0][0], json!(1000));
}

// `quantile(level)(x)` / `quantiles(level, …)(x)`: the slice-planning query of issue 16.

/// Events at 0, 10, 20, 40 and 80 s after 2025-01-01 00:00 UTC (`a`, `b`, `a`, `b`, `c`),
/// each created 2 s after its timestamp.
fn quantile_fixture() -> Fixture {
    let t0 = datetime!(2025-01-01 0:00 UTC);
    let events = [(0, "a"), (10, "b"), (20, "a"), (40, "b"), (80, "c")]
        .into_iter()
        .enumerate()
        .map(|(i, (s, name))| {
            let mut e = ev(
                u32::try_from(i).unwrap(),
                "d",
                t0 + time::Duration::seconds(s),
                name,
                json!({"n": s}),
            );
            e.created_at = e.timestamp + time::Duration::seconds(2);
            e
        })
        .collect();
    Fixture::new(events)
}

const PLAN: &str = "SELECT count(), quantiles(0.3333333333333333, 0.6666666666666666)(timestamp) \
                    FROM events WHERE timestamp >= toDateTime({since}) AND timestamp < toDateTime({until})";

#[test]
fn slice_planning_query_counts_and_interpolates_datetimes_to_the_microsecond() {
    let f = quantile_fixture();
    let range = json!({"since": "2025-01-01T00:00:00Z", "until": "2025-01-01T00:01:40Z"});
    let r = f.run_with(PLAN, range.clone(), false).unwrap();
    // index 4/3 between 10 s and 20 s, index 8/3 between 20 s and 40 s; truncated to the µs.
    assert_eq!(
        r.results,
        vec![vec![
            json!(5),
            json!(["2025-01-01T00:00:13.333333Z", "2025-01-01T00:00:33.333333Z"])
        ]]
    );
    assert_eq!(
        r.types,
        vec![
            ("count()".to_owned(), "UInt64".to_owned()),
            (
                "quantiles(0.3333333333333333, 0.6666666666666666)(timestamp)".to_owned(),
                "Array(DateTime64(6, 'UTC'))".to_owned()
            )
        ]
    );
    // In the project zone: the same instants, rendered and typed in it.
    let r = f.run_with(PLAN, range.clone(), true).unwrap();
    assert_eq!(
        r.results[0][1],
        json!([
            "2025-01-01T05:30:13.333333+05:30",
            "2025-01-01T05:30:33.333333+05:30"
        ])
    );
    assert_eq!(r.types[1].1, "Array(DateTime64(6, 'Asia/Kolkata'))");
    // A range cutting the data: 10, 20 and 40 s remain.
    let cut = json!({"since": "2025-01-01T00:00:05Z", "until": "2025-01-01T00:01:20Z"});
    let r = f.run_with(PLAN, cut, false).unwrap();
    assert_eq!(
        r.results,
        vec![vec![
            json!(3),
            json!(["2025-01-01T00:00:16.666666Z", "2025-01-01T00:00:26.666666Z"])
        ]]
    );
    // On created_at (2 s later each), with the extractor's event filter: 0, 10, 20, 40 s of
    // `a` and `b`.
    let q = "SELECT count(), quantiles(0.25, 0.5, 0.75)(created_at) FROM events WHERE \
             created_at >= toDateTime({since}) AND created_at < toDateTime({until}) AND \
             event IN ({event_0}, {event_1})";
    let mut values = range;
    values["event_0"] = json!("a");
    values["event_1"] = json!("b");
    let r = f.run_with(q, values, false).unwrap();
    assert_eq!(
        r.results,
        vec![vec![
            json!(4),
            json!([
                "2025-01-01T00:00:09.500000Z",
                "2025-01-01T00:00:17Z",
                "2025-01-01T00:00:27Z"
            ])
        ]]
    );
}

#[test]
fn quantiles_over_no_rows_are_the_epoch_for_datetimes_and_nan_for_numbers() {
    let f = quantile_fixture();
    let empty = json!({"since": "2025-01-01T00:00:10Z", "until": "2025-01-01T00:00:10Z"});
    let r = f.run_with(PLAN, empty.clone(), false).unwrap();
    assert_eq!(
        r.results,
        vec![vec![
            json!(0),
            json!(["1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z"])
        ]]
    );
    let r = f.run_with(PLAN, empty, true).unwrap();
    assert_eq!(
        r.results[0][1],
        json!(["1970-01-01T05:30:00+05:30", "1970-01-01T05:30:00+05:30"])
    );
    let r = f
        .run("SELECT quantile(0.5)(timestamp), quantiles(0.5)(JSONExtractInt(properties, 'n')), quantile(0.5)(toFloat(properties.n)) FROM events WHERE event = 'none'")
        .unwrap();
    assert_eq!(
        r.results,
        vec![vec![
            json!("1970-01-01T05:30:00+05:30"),
            json!([null]),
            Json::Null
        ]]
    );
    let types: Vec<&str> = r.types.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "DateTime64(6, 'Asia/Kolkata')",
            "Array(Float64)",
            "Nullable(Float64)"
        ]
    );
}

#[test]
fn quantiles_of_numbers_and_dates_interpolate_in_float64() {
    let f = quantile_fixture();
    let r = f
        .run("SELECT quantiles(0, 0.125, 0.5, 0.75, 1)(JSONExtractInt(properties, 'n')), quantile(0.5)(toFloat(properties.n)), quantile(0.625)(toDate(timestamp)) FROM events")
        .unwrap();
    // n = 0, 10, 20, 40, 80: index 0.5 → 5, index 2 → 20, index 3 → 40.
    assert_eq!(r.results[0][0], json!([0.0, 5.0, 20.0, 40.0, 80.0]));
    assert_eq!(r.results[0][1], json!(20.0));
    assert_eq!(r.results[0][2], json!("2025-01-01"));
    let types: Vec<&str> = r.types.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(types, ["Array(Float64)", "Nullable(Float64)", "Date"]);
    // Levels keep their order, repeat, and may be integers or placeholders.
    let r = f
        .run_with(
            "SELECT quantiles(1, {low}, 0.25, 0.25)(JSONExtractInt(properties, 'n')) FROM events",
            json!({"low": 0}),
            false,
        )
        .unwrap();
    assert_eq!(r.results[0][0], json!([80.0, 0.0, 10.0, 10.0]));
}

#[test]
fn quantiles_per_group_and_in_if_form() {
    let f = quantile_fixture();
    let r = f
        .run_with(
            "SELECT event, count(), quantiles(0.5)(timestamp), quantileIf(0.5)(JSONExtractInt(properties, 'n'), timestamp > toDateTime({t})) FROM events GROUP BY event ORDER BY event",
            json!({"t": "2025-01-01T00:00:15Z"}),
            false,
        )
        .unwrap();
    assert_eq!(
        r.results,
        vec![
            vec![
                json!("a"),
                json!(2),
                json!(["2025-01-01T00:00:10Z"]),
                json!(20.0)
            ],
            vec![
                json!("b"),
                json!(2),
                json!(["2025-01-01T00:00:25Z"]),
                json!(40.0)
            ],
            vec![
                json!("c"),
                json!(1),
                json!(["2025-01-01T00:01:20Z"]),
                json!(80.0)
            ],
        ]
    );
    // Different levels of the same argument are different aggregates.
    let r = f
        .run("SELECT quantile(0.25)(timestamp), quantile(0.75)(timestamp) FROM events")
        .unwrap();
    assert_ne!(r.results[0][0], r.results[0][1]);
    // A subquery reads the array back.
    let inner = "SELECT quantiles(0.5)(timestamp) AS q FROM events";
    let r = f.run(&format!("SELECT q FROM ({inner})")).unwrap();
    assert_eq!(r.types[0].1, "Array(DateTime64(6, 'Asia/Kolkata'))");
    assert_eq!(r.results[0][0], json!(["2025-01-01T05:30:20+05:30"]));
}

#[test]
fn quantile_parameters_and_arguments_are_checked() {
    let f = quantile_fixture();
    let err = |q: &str| f.run(q).unwrap_err();
    for (q, needle) in [
        (
            "SELECT quantile(timestamp) FROM events",
            "requires parameters",
        ),
        (
            "SELECT quantiles(timestamp) FROM events",
            "requires parameters",
        ),
        (
            "SELECT quantiles()(timestamp) FROM events",
            "at least 1 parameter",
        ),
        (
            "SELECT quantile(0.1, 0.2)(timestamp) FROM events",
            "expects 1 parameter, found 2",
        ),
        (
            "SELECT quantilesIf(0.1, 0.2)(timestamp, 1) FROM events",
            "expects 1 parameter, found 2",
        ),
        (
            "SELECT quantiles(1.5)(timestamp) FROM events",
            "out of range [0, 1]",
        ),
        (
            "SELECT quantiles(0.5, -0.25)(timestamp) FROM events",
            "-0.25 is out of range",
        ),
        (
            "SELECT quantiles(timestamp)(timestamp) FROM events",
            "not a number constant",
        ),
        (
            "SELECT quantiles('0.5')(timestamp) FROM events",
            "not a number constant",
        ),
        ("SELECT quantiles(count())(timestamp) FROM events", "nested"),
        (
            "SELECT quantile(0.5)(timestamp, uuid) FROM events",
            "exactly 1 argument",
        ),
        ("SELECT quantile(0.5)() FROM events", "exactly 1 argument"),
        (
            "SELECT quantile(0.5)(uuid) FROM events",
            "Illegal type UUID",
        ),
        (
            "SELECT quantile(0.5)(event) FROM events",
            "Illegal type String",
        ),
        (
            "SELECT quantiles(0.5)(NULL) FROM events",
            "Illegal type Nullable(Nothing)",
        ),
        (
            "SELECT quantile(0.5)(DISTINCT timestamp) FROM events",
            "DISTINCT is not supported",
        ),
        ("SELECT sum(quantile(0.5)(timestamp)) FROM events", "nested"),
        (
            "SELECT 1 FROM events WHERE quantile(0.5)(timestamp) > now()",
            "WHERE",
        ),
        (
            "SELECT count(0.5)(timestamp) FROM events",
            "takes no parameters",
        ),
        (
            "SELECT toString(1)(event) FROM events",
            "takes no parameters",
        ),
        (
            "SELECT quantile(0.5)(timestamp)(event) FROM events",
            "third",
        ),
        (
            "SELECT quantiles(DISTINCT 0.5)(timestamp) FROM events",
            "DISTINCT and *",
        ),
    ] {
        let e = err(q);
        assert!(e.contains(needle), "{q}: {e}");
    }
    let e = f
        .run_with(
            "SELECT quantiles({l})(timestamp) FROM events",
            json!({"l": "0.5"}),
            true,
        )
        .unwrap_err();
    assert!(e.contains("not a number constant"), "{e}");
}

#[test]
fn datetime_quantiles_interpolate_exactly_as_a_decimal_not_through_float64() {
    // ClickHouse 26.9 interpolates DateTime64 (a Decimal64) on exact integers: 35 µs plus
    // 3/8 of 1 000 005 µs is 375 036.875 µs, truncated to 375 036. Through Float64 (older
    // ClickHouse, and the obvious port) the products round and give 375 037.
    let t0 = datetime!(2025-01-01 0:00 UTC);
    let f = Fixture::new(vec![
        ev(
            1,
            "d",
            t0 + time::Duration::microseconds(35),
            "a",
            json!({}),
        ),
        ev(
            2,
            "d",
            t0 + time::Duration::microseconds(1_000_040),
            "a",
            json!({}),
        ),
    ]);
    let r = f
        .run_with(
            "SELECT quantile(0.375)(timestamp), quantiles(0.3333333333333333, 0.375)(timestamp) FROM events",
            json!({}),
            false,
        )
        .unwrap();
    assert_eq!(
        r.results,
        vec![vec![
            json!("2025-01-01T00:00:00.375036Z"),
            json!(["2025-01-01T00:00:00.333369Z", "2025-01-01T00:00:00.375036Z"])
        ]]
    );
}
