//! Nothing lost when PostHog behaves as it documents, or when files go missing: LIMIT clamps
//! below, at and above the page (and changing mid-run) for events and persons; the person's
//! properties as of each event; a committed part that disappears is an error naming it and its
//! range, and `--repair` writes exactly its rows back.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::engine::*;
use posthog_mock::{Dataset, Event, GenSpec, LimitClampChange, MockConfig, MockServer, RouteClass};
use posthog_osiris::{Driver, DriverError, ExtractConfig, PostHogDriver, RunStatus};
use posthog_state::{MemoryStore, StateStore};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

async fn mock_with(dataset: &Dataset, clamp: usize, changes: Vec<LimitClampChange>) -> MockServer {
    let config = MockConfig {
        limit_clamp: clamp,
        limit_clamp_changes: changes,
        ..MockConfig::with_dataset(dataset.clone())
    };
    MockServer::start(config).await.expect("mock starts")
}

fn jsonl_rows(table_dir: &Path) -> Vec<Map<String, Value>> {
    let mut names: Vec<_> = std::fs::read_dir(table_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("part-")
        })
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Map<String, Value>>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_clamp_below_at_or_above_the_page_loses_nothing() {
    let dataset = Dataset::generate(&spec(5_000, 300));
    for clamp in [777, 999, 1_000, 1_001, 50_000] {
        let server = mock_with(&dataset, clamp, Vec::new()).await;
        let dir = tempfile::tempdir().unwrap();
        let mut store = MemoryStore::new();
        let summary = run(
            &sequential_events_config(&server, 1_000),
            &mut store,
            dir.path(),
        )
        .await;
        assert_eq!(summary.rows_output, 5_000, "clamp {clamp}: every event");
        assert_exactly_once(&dir.path().join("posthog_events"), all_uuids(&dataset));
        // ⌈N / rows per page⌉ pages, then the empty page that ends the scan.
        let per_page = clamp.min(1_000);
        assert_eq!(
            server.request_count(RouteClass::Query),
            5_000usize.div_ceil(per_page) + 1,
            "clamp {clamp}"
        );
        server.shutdown().await;
    }
}

/// The same clamps under concurrent slices, whose pages are a little over `page_size` (so a
/// clamp at the page size cuts every one of them short): every event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_clamp_loses_nothing_when_slices_read_at_once() {
    let dataset = Dataset::generate(&spec(5_000, 300));
    for clamp in [777, 999, 1_000, 1_001, 50_000] {
        let server = mock_with(&dataset, clamp, Vec::new()).await;
        let dir = tempfile::tempdir().unwrap();
        let mut store = MemoryStore::new();
        let summary = run(&events_config(&server, 1_000), &mut store, dir.path()).await;
        assert_eq!(summary.rows_output, 5_000, "clamp {clamp}: every event");
        assert_exactly_once(&dir.path().join("posthog_events"), all_uuids(&dataset));
        // A first page cut short by the clamp is not full: no planning query, one scan.
        let expected_slices = if clamp < 1_000 { 1 } else { 3 };
        assert_eq!(summary.slices, expected_slices, "clamp {clamp}");
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clamp_that_changes_mid_run_loses_nothing() {
    let dataset = Dataset::generate(&spec(6_000, 0));
    let changes = vec![
        LimitClampChange {
            after_queries: 2,
            limit_clamp: 333,
        },
        LimitClampChange {
            after_queries: 6,
            limit_clamp: 50_000,
        },
    ];
    let server = mock_with(&dataset, 50_000, changes).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    let summary = run(
        &sequential_events_config(&server, 1_000),
        &mut store,
        dir.path(),
    )
    .await;
    assert_eq!(summary.rows_output, 6_000);
    assert_exactly_once(&dir.path().join("posthog_events"), all_uuids(&dataset));
    // 2 pages of 1000, 4 of 333, then (6000 − 3332) / 1000 → 3 pages, and the empty one.
    assert_eq!(server.request_count(RouteClass::Query), 2 + 4 + 3 + 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clamped_persons_snapshot_is_complete_and_replaces_a_complete_one() {
    let dataset = Dataset::generate(&GenSpec {
        persons: 1_500,
        ..spec(200, 0)
    });
    let server = mock_with(&dataset, 777, Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    let config = config(
        &server,
        json!({"data_type": "persons", "page_size": 1000}),
        json!({"format": "jsonl"}),
    );
    let ids = || dataset.persons.iter().map(|p| p.id.to_string());
    for round in 0..2 {
        let summary = run(&config, &mut store, dir.path()).await;
        assert_eq!(summary.rows_output, 1_500, "round {round}");
        assert_exactly_once(&dir.path().join("posthog_persons"), ids());
    }
    server.shutdown().await;
}

/// The value a flattened `<prefix>_<key>` column (or its `__json` sibling, which JSONL
/// embeds as JSON) holds, as JSON.
fn recovered(row: &Map<String, Value>, column: &str, source: &Value) -> Option<Value> {
    if let Some(value) = row.get(&format!("{column}__json")) {
        return Some(value.clone());
    }
    match (row.get(column)?, source) {
        // Objects and arrays are written as compact JSON text.
        (Value::String(text), Value::Object(_) | Value::Array(_)) => {
            Some(serde_json::from_str(text).expect("JSON text"))
        }
        (value, _) => Some(value.clone()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_carry_their_persons_properties_as_of_each_event() {
    let (server, dataset) = mock(3_000, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    run(&events_config(&server, 1_000), &mut store, dir.path()).await;
    let rows = jsonl_rows(&dir.path().join("posthog_events"));
    assert_eq!(rows.len(), 3_000);
    let by_uuid: HashMap<String, &Event> = dataset
        .events
        .iter()
        .map(|e| (e.uuid.to_string(), e))
        .collect();
    let current: HashMap<_, _> = dataset
        .persons
        .iter()
        .map(|p| (p.id, &p.properties))
        .collect();
    let (mut checked, mut as_of_event) = (0, 0);
    for row in &rows {
        let event = by_uuid[row["uuid"].as_str().unwrap()];
        for (key, value) in &event.person_properties {
            let column = format!("person_properties_{key}");
            let got = recovered(row, &column, value);
            let expected = (!value.is_null()).then(|| value.clone());
            assert_eq!(got, expected, "event {} {column}", event.uuid);
            checked += 1;
        }
        let stray: Vec<&String> = row
            .keys()
            .filter(|k| k.starts_with("person_properties_"))
            .filter(|k| {
                let key = k
                    .trim_start_matches("person_properties_")
                    .trim_end_matches("__json");
                !event.person_properties.contains_key(key)
            })
            .collect();
        assert!(
            stray.is_empty(),
            "event {}: {stray:?} not in its person",
            event.uuid
        );
        if let Some(now) = event.person_id.and_then(|p| current.get(&p))
            && **now != event.person_properties
        {
            as_of_event += 1;
        }
    }
    assert!(
        checked > 10_000,
        "{checked} person property values compared"
    );
    assert!(
        as_of_event > 0,
        "some events predate a change of their person: the test sees 'as of the event'"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn person_properties_can_be_left_out_or_kept_as_one_json_column() {
    let (server, dataset) = mock(500, 0).await;
    let base = |extra: Value, output: Value| -> ExtractConfig {
        let mut source = json!({"data_type": "events", "page_size": 1000,
                                "initial_since": "2024-12-01T00:00:00Z"});
        source
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        config(&server, source, output)
    };

    let dir = tempfile::tempdir().unwrap();
    let off = base(
        json!({"include_person_properties": false}),
        json!({"format": "jsonl"}),
    );
    run(&off, &mut MemoryStore::new(), dir.path()).await;
    let rows = jsonl_rows(&dir.path().join("posthog_events"));
    assert!(
        rows.iter()
            .all(|r| r.keys().all(|k| !k.starts_with("person_properties")))
    );
    let sent = server.requests();
    assert!(
        sent.iter()
            .all(|r| !format!("{:?}", r.body).contains("person.properties")),
        "nothing asked of PostHog that is not written"
    );

    let dir = tempfile::tempdir().unwrap();
    let raw = base(
        json!({}),
        json!({"format": "jsonl", "flatten_properties": false}),
    );
    run(&raw, &mut MemoryStore::new(), dir.path()).await;
    let rows = jsonl_rows(&dir.path().join("posthog_events"));
    let by_uuid: HashMap<String, &Event> = dataset
        .events
        .iter()
        .map(|e| (e.uuid.to_string(), e))
        .collect();
    for row in &rows {
        let event = by_uuid[row["uuid"].as_str().unwrap()];
        let person = match &row["person_properties"] {
            Value::String(text) => serde_json::from_str::<Value>(text).unwrap(),
            other => other.clone(),
        };
        assert_eq!(person, Value::Object(event.person_properties.clone()));
        assert!(row.keys().all(|k| !k.starts_with("person_properties_")));
    }
    server.shutdown().await;
}

fn watermark(store: &MemoryStore) -> OffsetDateTime {
    let state = store.load("posthog_events").unwrap().unwrap();
    OffsetDateTime::parse(state.last_timestamp.as_deref().unwrap(), &Rfc3339).unwrap()
}

fn late(template: &Event, n: u128, at: OffsetDateTime) -> Event {
    Event {
        uuid: uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n),
        timestamp: at,
        ..template.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_part_is_an_error_naming_it_and_repair_writes_exactly_its_rows_back() {
    let (server, dataset) = mock(3_000, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("posthog_events");
    let mut store = MemoryStore::new();
    let config = sequential_events_config(&server, 500); // parts of 1000 rows
    let first = run(&config, &mut store, dir.path()).await;
    assert_eq!(first.files.len(), 3);

    // A late event inside the lookback: the second run writes it into a part whose range
    // overlaps the first run's last part.
    let wm = watermark(&store);
    let template = dataset.events[0].clone();
    let inside_lookback = late(&template, 1, wm - Duration::from_secs(300));
    let newer = late(&template, 2, wm + Duration::from_secs(60));
    server.insert_events(vec![inside_lookback.clone(), newer.clone()]);
    run(&config, &mut store, dir.path()).await;

    let state = store.load("posthog_events").unwrap().unwrap();
    assert_eq!(state.parts.len(), 4);
    assert_ranges_are_the_parts_own(&store, &table);
    let lost = [state.parts[0].clone(), state.parts[2].clone()];
    for part in &lost {
        std::fs::remove_file(table.join(&part.file)).unwrap();
    }

    // Events that arrived after their range was read: one long before any lookback, one
    // inside the current lookback. Neither was ever written; the repair writes them once.
    let very_late = late(
        &template,
        3,
        OffsetDateTime::parse(lost[0].first_timestamp.as_deref().unwrap(), &Rfc3339).unwrap()
            + Duration::from_secs(1),
    );
    let late_in_window = late(&template, 4, wm - Duration::from_secs(120));
    server.insert_events(vec![very_late.clone(), late_in_window.clone()]);

    let queries = server.request_count(RouteClass::Query);
    let err = PostHogDriver
        .run(&config, &mut store, &ctx(dir.path()))
        .await
        .expect_err("a run over lost parts fails");
    let msg = err.to_string();
    assert!(matches!(err, DriverError::MissingParts { .. }), "{err:?}");
    assert_eq!(err.category().as_str(), "data");
    for part in &lost {
        assert!(msg.contains(&part.file), "{msg}");
        assert!(
            msg.contains(part.first_timestamp.as_deref().unwrap()),
            "{msg}"
        );
        assert!(
            msg.contains(part.last_timestamp.as_deref().unwrap()),
            "{msg}"
        );
    }
    assert!(msg.contains("--repair"), "{msg}");
    assert_eq!(
        server.request_count(RouteClass::Query),
        queries,
        "nothing requested"
    );

    let repair_ctx = ctx(dir.path()).with_repair(true);
    let repaired = PostHogDriver
        .run(&config, &mut store, &repair_ctx)
        .await
        .unwrap_or_else(|e| panic!("repair failed: {e}"));
    assert_eq!(repaired.status, RunStatus::Repaired);
    let mut names: Vec<String> = lost.iter().map(|p| p.file.clone()).collect();
    names.sort();
    let mut reported = repaired.repaired.clone();
    reported.sort();
    assert_eq!(reported, names);
    assert_eq!(
        repaired.rows_output,
        lost[0].rows + lost[1].rows + 2,
        "the lost rows and the two events never written before; not the late event another part holds"
    );
    let after = store.load("posthog_events").unwrap().unwrap();
    assert_eq!(
        after.last_timestamp, state.last_timestamp,
        "the watermark stays"
    );
    assert_ranges_are_the_parts_own(&store, &table);
    assert!(after.parts.iter().all(|p| !names.contains(&p.file)));

    let mut expected = all_uuids(&dataset);
    for e in [&inside_lookback, &newer, &very_late, &late_in_window] {
        expected.push(e.uuid.to_string());
    }
    assert_exactly_once(&table, expected.clone());

    // The next run re-reads its lookback (where the repair wrote an event) and adds nothing.
    let next = run(&config, &mut store, dir.path()).await;
    assert_eq!(next.rows_output, 0);
    assert_exactly_once(&table, expected);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_with_nothing_lost_reads_and_writes_nothing() {
    let (server, dataset) = mock(1_000, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    let config = events_config(&server, 500);
    run(&config, &mut store, dir.path()).await;
    let before = store.load("posthog_events").unwrap().unwrap();
    let queries = server.request_count(RouteClass::Query);
    let summary = PostHogDriver
        .run(&config, &mut store, &ctx(dir.path()).with_repair(true))
        .await
        .unwrap();
    assert_eq!(
        (summary.status, summary.rows_read),
        (RunStatus::Repaired, 0)
    );
    assert!(summary.repaired.is_empty());
    assert_eq!(server.request_count(RouteClass::Query), queries);
    let after = store.load("posthog_events").unwrap().unwrap();
    assert_eq!(after.parts, before.parts);
    assert_exactly_once(&dir.path().join("posthog_events"), all_uuids(&dataset));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_refuses_repair_and_a_lost_snapshot_part_is_replaced_by_the_next_run() {
    let (server, dataset) = mock(10, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    let config = config(
        &server,
        json!({"data_type": "persons", "page_size": 100}),
        json!({"format": "jsonl"}),
    );
    let first = run(&config, &mut store, dir.path()).await;
    std::fs::remove_file(&first.files[0]).unwrap();
    let err = PostHogDriver
        .run(&config, &mut store, &ctx(dir.path()).with_repair(true))
        .await
        .unwrap_err();
    assert_eq!(err.category().as_str(), "config", "{err}");
    run(&config, &mut store, dir.path()).await;
    let ids = dataset.persons.iter().map(|p| p.id.to_string());
    assert_exactly_once(&dir.path().join("posthog_persons"), ids);
    server.shutdown().await;
}

/// The requests a scan of `n` rows at `page` costs when the server clamps LIMIT as `clamps`
/// says (the clamp in force for request `q`, 1-based, is the last change whose `after` < q):
/// pages of `min(page, clamp, rest)` rows until an empty one.
fn expected_requests(n: usize, page: usize, first: usize, changes: &[(u64, usize)]) -> usize {
    let (mut rest, mut q) = (n, 0u64);
    loop {
        q += 1;
        let clamp = changes
            .iter()
            .filter(|(after, _)| *after < q)
            .map(|(_, c)| *c)
            .next_back()
            .unwrap_or(first);
        let rows = page.min(clamp).min(rest);
        rest -= rows;
        if rows == 0 {
            return q as usize;
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 24, failure_persistence: None, ..Default::default()
    })]

    /// Whatever LIMIT clamp the server applies, below, at or above the page, and however it
    /// changes during the scan: every event exactly once, in exactly the pages the clamps allow
    /// plus the empty one.
    #[test]
    fn any_clamp_schedule_reads_every_event_once(
        n in 0usize..2_500,
        page in 100u32..1_500,
        first in 50usize..2_000,
        changes in proptest::collection::vec((1u64..30, 50usize..2_000), 0..3),
    ) {
        let mut changes = changes;
        changes.sort_by_key(|c| c.0);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let dataset = Dataset::generate(&spec(n, n / 10));
            // One scan, then the same schedule under concurrent slices (the clamp changes after
            // a number of queries, whichever slice sends them): every event exactly once, and
            // one scan in exactly the pages the clamps allow.
            for sliced in [false, true] {
                let schedule = changes
                    .iter()
                    .map(|&(after_queries, limit_clamp)| LimitClampChange { after_queries, limit_clamp })
                    .collect();
                let server = mock_with(&dataset, first, schedule).await;
                let config = match sliced {
                    false => sequential_events_config(&server, page),
                    true => events_config(&server, page),
                };
                let dir = tempfile::tempdir().unwrap();
                let summary = run(&config, &mut MemoryStore::new(), dir.path()).await;
                assert_eq!(summary.rows_output as usize, n);
                if n > 0 {
                    assert_exactly_once(&dir.path().join("posthog_events"), all_uuids(&dataset));
                }
                if !sliced {
                    assert_eq!(
                        server.request_count(RouteClass::Query),
                        expected_requests(n, page as usize, first, &changes)
                    );
                }
                server.shutdown().await;
            }
        });
    }
}

/// Each committed part's recorded range is exactly the smallest and largest time of its rows.
fn assert_ranges_are_the_parts_own(store: &MemoryStore, table_dir: &Path) {
    let state = store.load("posthog_events").unwrap().unwrap();
    for part in &state.parts {
        let (mut first, mut last) = (i64::MAX, i64::MIN);
        let rows = posthog_core::reader::for_each_part_key(
            &table_dir.join(&part.file),
            "uuid",
            "timestamp",
            |_, at| {
                first = first.min(at);
                last = last.max(at);
            },
        )
        .unwrap();
        assert_eq!(rows, part.rows, "{}", part.file);
        let parse = |t: &Option<String>| posthog_core::parse_timestamp(t.as_deref().unwrap());
        assert_eq!(
            (parse(&part.first_timestamp), parse(&part.last_timestamp)),
            (Some(first), Some(last)),
            "{}: the recorded range is its rows' range",
            part.file
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_ranges_are_their_rows_range_when_a_new_column_closes_a_part_mid_page() {
    let (server, dataset) = mock(3_000, 0).await;
    // Events with a property no other event has, in the middle of the range: the batch that
    // holds them widens the schema, which closes the open part in the middle of a page.
    let mut by_time: Vec<&Event> = dataset.events.iter().collect();
    by_time.sort_by_key(|e| e.timestamp);
    let mut late = Vec::new();
    for (n, e) in by_time.into_iter().skip(1_234).take(3).enumerate() {
        let mut e = e.clone();
        e.uuid = uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0100 + n as u128);
        e.properties.insert("a_key_seen_once".into(), json!(n));
        late.push(e);
    }
    server.insert_events(late);
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("posthog_events");
    let mut store = MemoryStore::new();
    let config = sequential_events_config(&server, 700);
    let summary = run(&config, &mut store, dir.path()).await;
    // Without the new column: parts close at the first page boundary past 1 000 rows, every
    // 1 400 rows, so 3 parts; the column closes one more.
    assert_eq!(
        summary.files.len(),
        3_003usize.div_ceil(1_400) + 1,
        "a part was closed by the new column"
    );
    assert_ranges_are_the_parts_own(&store, &table);
    server.shutdown().await;
}
