//! The HogQL query endpoint over HTTP: keyset pagination, ordering, limits, time zones,
//! placeholders, errors and the async flow.

mod common;

use std::collections::HashSet;

use common::{Harness, column};
use posthog_client::{KeysetCursor, KeysetPager, KeysetQuery, KeysetStart, PageSummary};
use posthog_mock::{Dataset, Event, GenSpec, MockConfig};
use serde_json::{Value, json};
use time::macros::datetime;
use uuid::Uuid;

const KEYSET: &str = "SELECT uuid, timestamp FROM events \
    WHERE (timestamp, uuid) > (toDateTime({ts}), toUUID({uuid})) \
    ORDER BY timestamp, uuid LIMIT {limit}";

fn config_with(spec: GenSpec) -> MockConfig {
    MockConfig::with_dataset(Dataset::generate_lazy(&spec))
}

/// Pages through all events with the extractor's keyset pager, returning the uuids in order.
async fn walk(h: &Harness, limit: u32) -> Vec<String> {
    let query = KeysetQuery::new("events", ["uuid", "timestamp"], "uuid").time_column("timestamp");
    let mut pager = KeysetPager::new(query, KeysetStart::Beginning, limit);
    let mut out: Vec<String> = Vec::new();
    while let Some(query) = pager.next_query() {
        let (status, body) = h
            .query(query.text(), Value::Object(query.values().clone()))
            .await;
        assert_eq!(status, 200, "{body}");
        let page = body["results"].as_array().unwrap();
        out.extend(page.iter().map(|r| r[0].as_str().unwrap().to_owned()));
        let last = page
            .last()
            .map(|row| KeysetCursor::from_text(row[1].as_str(), row[0].as_str().unwrap()).unwrap());
        pager
            .advance(&PageSummary {
                rows: page.len(),
                last,
            })
            .unwrap();
    }
    out
}

#[tokio::test]
async fn keyset_tuple_pagination_over_a_same_timestamp_cluster_returns_each_event_once() {
    let spec = GenSpec {
        events: 600,
        same_timestamp_cluster: 150,
        ..GenSpec::default()
    };
    let h = Harness::start(config_with(spec)).await;
    // Page size smaller than the cluster, so pages start and end inside it.
    let uuids = walk(&h, 40).await;
    let unique: HashSet<&String> = uuids.iter().collect();
    assert_eq!(uuids.len(), 600);
    assert_eq!(unique.len(), 600);
}

#[tokio::test]
async fn clickhouse_uuid_order_differs_from_string_order() {
    // String order: a < b. ClickHouse order (second half first): b < a.
    let a = "00000000-0000-7000-ffff-ffffffffffff";
    let b = "ffffffff-ffff-7fff-8000-000000000000";
    let ts = datetime!(2025-01-01 12:00 UTC);
    let mk = |u: &str| Event {
        uuid: Uuid::parse_str(u).unwrap(),
        event: "$pageview".into(),
        distinct_id: "d".into(),
        timestamp: ts,
        created_at: ts,
        person_id: None,
        properties: serde_json::Map::new(),
        elements_chain: String::new(),
        person_properties: serde_json::Map::new(),
    };
    let dataset = Dataset {
        events: vec![mk(a), mk(b)],
        ..Dataset::fixtures()
    };
    let h = Harness::start(MockConfig::with_dataset(dataset)).await;
    let (_, body) = h
        .query(
            "SELECT uuid FROM events ORDER BY timestamp, uuid",
            json!({}),
        )
        .await;
    assert_eq!(column(&body, 0), vec![json!(b), json!(a)]);
    // A cursor at `b` must still return `a`, although `a` < `b` as strings.
    let (_, body) = h
        .query(
            KEYSET,
            json!({"ts": "2025-01-01T12:00:00Z", "uuid": b, "limit": 10}),
        )
        .await;
    assert_eq!(column(&body, 0), vec![json!(a)]);
}

#[tokio::test]
async fn offset_is_rejected_with_posthogs_message() {
    let h = Harness::start(MockConfig::default()).await;
    let (status, body) = h
        .query(
            "SELECT uuid FROM events ORDER BY timestamp LIMIT 10 OFFSET 10",
            json!({}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["type"], "validation_error");
    assert_eq!(body["code"], "invalid_input");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("OFFSET is not supported on queries made with a personal API key."),
        "{body}"
    );
    assert_eq!(body["attr"], Value::Null);
}

#[tokio::test]
async fn limit_above_50000_is_silently_clamped() {
    let h = Harness::start(config_with(GenSpec {
        events: 60_000,
        ..GenSpec::default()
    }))
    .await;
    let (status, body) = h
        .query(
            "SELECT uuid FROM events ORDER BY timestamp, uuid LIMIT 70000",
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["results"].as_array().unwrap().len(), 50_000);
    assert_eq!(body["hasMore"], Value::Null);
    assert_eq!(body["limit"], Value::Null);
}

#[tokio::test]
async fn no_limit_returns_100_rows_and_has_more() {
    let h = Harness::start(MockConfig::default()).await;
    let (status, body) = h.query("SELECT uuid FROM events", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["results"].as_array().unwrap().len(), 100);
    assert_eq!(body["hasMore"], json!(true));
    assert_eq!(body["limit"], json!(100));
    assert_eq!(body["offset"], json!(0));
    let (_, small) = h.query("SELECT uuid FROM events WHERE event = 'purchase' AND timestamp < toDateTime('2025-01-01T06:00:00Z')", json!({})).await;
    assert_eq!(small["hasMore"], json!(false));
}

#[tokio::test]
async fn timestamps_render_in_project_timezone_unless_conversion_is_off() {
    let h = Harness::start(MockConfig::default()).await;
    let sql = "SELECT timestamp, uuid FROM events ORDER BY timestamp, uuid LIMIT 5";
    let (_, local) = h.query(sql, json!({})).await;
    let (_, utc) = h
        .query_with(json!({"kind": "HogQLQuery", "query": sql, "modifiers": {"convertToProjectTimezone": false}}))
        .await;
    assert_eq!(local["timezone"], "Asia/Kolkata");
    assert_eq!(
        local["types"][0],
        json!(["timestamp", "DateTime64(6, 'Asia/Kolkata')"])
    );
    assert_eq!(
        utc["types"][0],
        json!(["timestamp", "DateTime64(6, 'UTC')"])
    );
    assert_eq!(local["types"][1], json!(["uuid", "UUID"]));
    for (l, u) in column(&local, 0).iter().zip(column(&utc, 0)) {
        let (l, u) = (l.as_str().unwrap(), u.as_str().unwrap());
        assert!(l.ends_with("+05:30"), "{l}");
        assert!(u.ends_with('Z'), "{u}");
        let parse = |s: &str| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
        };
        assert_eq!(parse(l), parse(u), "same instant");
    }
}

#[tokio::test]
async fn properties_come_back_as_a_json_string() {
    let h = Harness::start(MockConfig::default()).await;
    let (_, body) = h
        .query("SELECT properties, properties.$screen_width, person_id FROM events ORDER BY timestamp LIMIT 1", json!({}))
        .await;
    let row = &body["results"][0];
    let props: Value =
        serde_json::from_str(row[0].as_str().expect("a string")).expect("JSON inside");
    assert!(props.is_object());
    assert!(
        row[1].is_string(),
        "property access yields text: {}",
        row[1]
    );
    assert_eq!(body["types"][2], json!(["person_id", "Nullable(UUID)"]));
    assert_eq!(
        body["columns"],
        json!(["properties", "$screen_width", "person_id"])
    );
}

#[tokio::test]
async fn placeholders_bind_values_as_literals() {
    let h = Harness::start(MockConfig::default()).await;
    let (status, body) = h
        .query(
            "SELECT uuid FROM events WHERE event = {e} LIMIT 10",
            json!({"e": "x' OR 1=1 --"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["results"], json!([]));
    let (_, body) = h
        .query(
            "SELECT count() FROM events WHERE event = {e}",
            json!({"e": "$pageview"}),
        )
        .await;
    assert!(body["results"][0][0].as_u64().unwrap() > 0);
    let (status, body) = h
        .query("SELECT uuid FROM events WHERE event = {nope}", json!({}))
        .await;
    assert_eq!(status, 400);
    assert!(body["detail"].as_str().unwrap().contains("{nope}"));
}

#[tokio::test]
async fn unsupported_function_and_bad_sql_are_400_validation_errors() {
    let h = Harness::start(MockConfig::default()).await;
    let (status, body) = h.query("SELECT sleep(3) FROM events", json!({})).await;
    assert_eq!(status, 400);
    assert_eq!(body["detail"], "Unsupported function call 'sleep(...)'");
    let (status, body) = h.query("SELEC uuid FROM events", json!({})).await;
    assert_eq!(status, 400);
    assert!(
        body["detail"].as_str().unwrap().starts_with("Syntax error"),
        "{body}"
    );
    let (status, body) = h
        .query(
            "SELECT uuid FROM events WHERE timestamp > '2025-01-01'",
            json!({}),
        )
        .await;
    assert_eq!(status, 400, "DateTime vs bare string: {body}");
    let (status, _) = h
        .query_with(json!({"kind": "EventsQuery", "select": ["*"]}))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn environments_prefix_and_kind_path_work() {
    let h = Harness::start(MockConfig::default()).await;
    let body = json!({"query": {"kind": "HogQLQuery", "query": "SELECT count() FROM events"}});
    let (status, r) = h.post("/api/environments/1/query", &body).await;
    assert_eq!((status, r["results"][0][0].clone()), (200, json!(1000)));
    let (status, _) = h.post("/api/projects/1/query/HogQLQuery/", &body).await;
    assert_eq!(status, 200);
    let (status, _) = h.post("/api/projects/1/query/EventsQuery/", &body).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn async_queries_poll_then_complete_and_can_be_cancelled() {
    let h = Harness::start(MockConfig {
        async_polls: 2,
        ..MockConfig::default()
    })
    .await;
    let body = json!({
        "query": {"kind": "HogQLQuery", "query": "SELECT count() FROM events"},
        "refresh": "async",
        "client_query_id": "q-1",
    });
    let (status, submitted) = h.post("/api/projects/1/query/", &body).await;
    assert_eq!(status, 202);
    assert_eq!(submitted["query_status"]["id"], "q-1");
    assert_eq!(submitted["query_status"]["complete"], false);
    for _ in 0..2 {
        let (status, polled) = h.get("/api/projects/1/query/q-1/").await;
        assert_eq!(status, 202);
        assert_eq!(polled["query_status"]["complete"], false);
    }
    let (status, done) = h.get("/api/projects/1/query/q-1/").await;
    assert_eq!(status, 200);
    assert_eq!(done["query_status"]["complete"], true);
    assert_eq!(done["query_status"]["results"]["results"], json!([[1000]]));

    let failing = json!({"query": {"kind": "HogQLQuery", "query": "SELECT nope() FROM events"}, "refresh": "force_async"});
    let (status, submitted) = h.post("/api/projects/1/query/", &failing).await;
    assert_eq!(status, 202);
    let id = submitted["query_status"]["id"].as_str().unwrap().to_owned();
    h.get(&format!("/api/projects/1/query/{id}/")).await;
    h.get(&format!("/api/projects/1/query/{id}/")).await;
    let (status, errored) = h.get(&format!("/api/projects/1/query/{id}/")).await;
    assert_eq!(status, 400);
    assert_eq!(errored["query_status"]["error"], true);

    let resp = h
        .http
        .delete(h.url("/api/projects/1/query/q-1/"))
        .bearer_auth(common::KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let (status, _) = h.get("/api/projects/1/query/q-1/").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn late_events_inserted_between_runs_are_visible() {
    let h = Harness::start(MockConfig::default()).await;
    let ts = datetime!(2024-12-31 23:59:59.5 UTC);
    h.server.insert_events(vec![Event {
        uuid: Uuid::parse_str("0194227b-0000-7000-8000-000000000001").unwrap(),
        event: "late".into(),
        distinct_id: "d".into(),
        timestamp: ts,
        created_at: datetime!(2025-02-01 00:00 UTC),
        person_id: None,
        properties: serde_json::Map::new(),
        elements_chain: String::new(),
        person_properties: serde_json::Map::new(),
    }]);
    let (_, body) = h
        .query(
            "SELECT event, created_at FROM events ORDER BY timestamp LIMIT 1",
            json!({}),
        )
        .await;
    assert_eq!(body["results"][0][0], "late");
    let (_, body) = h
        .query(
            "SELECT event FROM events WHERE created_at > toDateTime('2025-01-20T00:00:00Z') ORDER BY created_at DESC, uuid DESC LIMIT 1",
            json!({}),
        )
        .await;
    assert_eq!(body["results"][0][0], "late");
}

#[tokio::test]
async fn a_1000_row_keyset_page_over_200k_events_is_correct() {
    let h = Harness::start(config_with(GenSpec {
        events: 200_000,
        same_timestamp_cluster: 2_500,
        ..GenSpec::default()
    }))
    .await;
    // A cursor deep inside the data, taken from a real page.
    let (_, probe) = h
        .query(
            "SELECT uuid, timestamp FROM events WHERE timestamp >= toDateTime('2025-01-04T00:00:00Z') ORDER BY timestamp, uuid LIMIT 1",
            json!({}),
        )
        .await;
    let cursor = probe["results"][0].clone();
    let (status, page) = h
        .query(
            KEYSET,
            json!({"ts": cursor[1], "uuid": cursor[0], "limit": 1000}),
        )
        .await;
    assert_eq!(status, 200);
    let rows = page["results"].as_array().unwrap();
    assert_eq!(rows.len(), 1000);
    assert_ne!(rows[0][0], cursor[0]);
    // The next page continues exactly where this one ended.
    let last = rows.last().unwrap();
    let (_, next) = h
        .query(
            KEYSET,
            json!({"ts": last[1], "uuid": last[0], "limit": 1000}),
        )
        .await;
    let (_, both) = h
        .query(
            KEYSET,
            json!({"ts": cursor[1], "uuid": cursor[0], "limit": 2000}),
        )
        .await;
    let mut joined = column(&page, 0);
    joined.extend(column(&next, 0));
    assert_eq!(joined, column(&both, 0));
}

#[tokio::test]
async fn subqueries_intervals_and_sessions_over_http() {
    let h = Harness::start(config_with(GenSpec {
        events: 800,
        persons: 20,
        ..GenSpec::default()
    }))
    .await;
    // The stickiness template: users by number of active days.
    let (status, body) = h
        .query(
            "select active_days, count() as users from (\
               select distinct_id, uniq(toDate(timestamp)) as active_days from events \
               where timestamp >= now() - toIntervalDay({days}) group by distinct_id\
             ) group by active_days order by active_days",
            json!({"days": 3650}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["types"][0], json!(["active_days", "UInt64"]));
    let users: i64 = column(&body, 1).iter().map(|v| v.as_i64().unwrap()).sum();
    let (_, distinct) = h
        .query("SELECT uniq(distinct_id) FROM events", json!({}))
        .await;
    assert_eq!(json!(users), distinct["results"][0][0]);
    // Sessions keyset page.
    let (status, body) = h
        .query(
            "select session_id, distinct_id, $start_timestamp from sessions \
             where $start_timestamp >= toDateTime({since}) and session_id > {after} \
             order by session_id limit 1000",
            json!({"since": "2025-01-01T00:00:00Z", "after": ""}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ids = column(&body, 0);
    assert!(ids.len() > 10);
    assert!(ids.windows(2).all(|w| w[0].as_str() < w[1].as_str()));
    // A placeholder bound to text is never syntax.
    let (status, body) = h
        .query(
            "select count() from events where timestamp > now() - INTERVAL {n} DAY",
            json!({"n": "1 DAY) OR (1"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["type"], "validation_error");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("Illegal type String"),
        "{body}"
    );
}

/// The extractor's page query, verbatim in shape.
const EXTRACT: &str = "select uuid, event, timestamp, distinct_id, person_id, created_at, \
    elements_chain, properties, person.properties as person_properties from events \
    where timestamp >= toDateTime({since}) order by timestamp, uuid limit {limit}";

#[tokio::test]
async fn the_extractors_query_returns_person_properties_as_of_each_event() {
    let spec = GenSpec {
        events: 300,
        persons: 8,
        ..GenSpec::default()
    };
    let expected: std::collections::HashMap<String, Event> = Dataset::generate(&spec)
        .events
        .into_iter()
        .map(|e| (e.uuid.to_string(), e))
        .collect();
    let h = Harness::start(config_with(spec)).await;
    let (status, body) = h
        .query(
            EXTRACT,
            json!({"since": "2025-01-01T00:00:00Z", "limit": 1000}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["columns"],
        json!([
            "uuid",
            "event",
            "timestamp",
            "distinct_id",
            "person_id",
            "created_at",
            "elements_chain",
            "properties",
            "person_properties"
        ])
    );
    assert_eq!(body["types"][8], json!(["person_properties", "String"]));
    let rows = body["results"].as_array().unwrap();
    assert_eq!(rows.len(), 300);
    let mut personless = 0;
    let mut plans_by_person: std::collections::HashMap<&str, HashSet<String>> =
        std::collections::HashMap::new();
    for row in rows {
        let event = &expected[row[0].as_str().unwrap()];
        // A JSON string, like `properties`, holding the person as of the event.
        let text = row[8].as_str().expect("person_properties is a JSON string");
        let parsed: Value = serde_json::from_str(text).unwrap();
        assert_eq!(parsed, Value::Object(event.person_properties.clone()));
        match row[4].as_str() {
            None => {
                personless += 1;
                assert_eq!(text, "{}");
            }
            Some(person) => {
                plans_by_person
                    .entry(person)
                    .or_default()
                    .insert(parsed["visits"].to_string());
            }
        }
    }
    assert!(personless > 0);
    assert!(
        plans_by_person.values().any(|v| v.len() > 1),
        "a person's properties differ between its events"
    );
}

#[tokio::test]
async fn persons_table_serves_the_current_properties() {
    let spec = GenSpec {
        events: 300,
        persons: 8,
        ..GenSpec::default()
    };
    let dataset = Dataset::generate(&spec);
    let h = Harness::start(config_with(spec)).await;
    let (_, body) = h
        .query(
            "SELECT toString(id), properties FROM persons LIMIT 100",
            json!({}),
        )
        .await;
    let rows = body["results"].as_array().unwrap();
    assert_eq!(rows.len(), 8);
    for row in rows {
        let person = dataset
            .persons
            .iter()
            .find(|p| p.id.to_string() == row[0].as_str().unwrap())
            .unwrap();
        let parsed: Value = serde_json::from_str(row[1].as_str().unwrap()).unwrap();
        assert_eq!(parsed, Value::Object(person.properties.clone()));
    }
    // Events before a person's change instant saw other properties than the current ones;
    // events after it see exactly the current ones.
    let current = |e: &Event| {
        dataset
            .persons
            .iter()
            .find(|p| Some(p.id) == e.person_id)
            .map(|p| &p.properties)
    };
    let with_person: Vec<&Event> = dataset
        .events
        .iter()
        .filter(|e| e.person_id.is_some())
        .collect();
    assert!(
        with_person
            .iter()
            .any(|e| current(e) != Some(&e.person_properties))
    );
    assert!(
        with_person
            .iter()
            .any(|e| current(e) == Some(&e.person_properties))
    );
}

#[tokio::test]
async fn inserted_events_keep_their_person_properties() {
    let h = Harness::start(MockConfig::with_dataset(Dataset::fixtures())).await;
    let ts = datetime!(2025-03-01 12:00 UTC);
    h.server.insert_events(vec![Event {
        uuid: Uuid::parse_str("0194227b-0000-7000-8000-0000000000a1").unwrap(),
        event: "library".into(),
        distinct_id: "d".into(),
        timestamp: ts,
        created_at: ts,
        person_id: Some(Uuid::parse_str("0194227b-0000-4000-8000-0000000000ff").unwrap()),
        properties: serde_json::Map::new(),
        elements_chain: String::new(),
        person_properties: serde_json::from_value(json!({"plan": "pro", "visits": 9})).unwrap(),
    }]);
    let posted = json!([
        {"uuid": "0194227b-0000-7000-8000-0000000000a2", "event": "control-object",
         "distinct_id": "d", "timestamp": "2025-03-01T12:00:01Z",
         "person_properties": {"plan": "enterprise", "key with spaces": true}},
        {"uuid": "0194227b-0000-7000-8000-0000000000a3", "event": "control-text",
         "distinct_id": "d", "timestamp": "2025-03-01T12:00:02Z",
         "person_properties": "{\"plan\":\"free\"}"},
        {"uuid": "0194227b-0000-7000-8000-0000000000a4", "event": "control-none",
         "distinct_id": "d", "timestamp": "2025-03-01T12:00:03Z"}
    ]);
    let inserted: Value = h
        .http
        .post(h.url("/_mock/events"))
        .json(&posted)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(inserted["inserted"], 3);
    let bad = h
        .http
        .post(h.url("/_mock/events"))
        .json(
            &json!([{"uuid": "0194227b-0000-7000-8000-0000000000a5", "event": "x",
            "distinct_id": "d", "timestamp": "2025-03-01T12:00:04Z", "person_properties": [1]}]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let (status, body) = h
        .query(
            "SELECT event, person.properties.plan, person.properties['key with spaces'], \
             person.properties FROM events ORDER BY timestamp",
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"],
        json!([
            ["library", "pro", null, "{\"plan\":\"pro\",\"visits\":9}"],
            [
                "control-object",
                "enterprise",
                "true",
                "{\"key with spaces\":true,\"plan\":\"enterprise\"}"
            ],
            ["control-text", "free", null, "{\"plan\":\"free\"}"],
            ["control-none", null, null, "{}"]
        ])
    );
}
