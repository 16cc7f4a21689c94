//! The extraction engine against the in-process mock PostHog: exactly once across runs, late
//! events, crashes at commit, server timeouts, request counts, snapshots.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::engine::*;
use posthog_mock::{DataShape, Dataset, Event, Fault, GenSpec, MockConfig, MockServer, RouteClass};
use posthog_osiris::{DataType, Driver, PostHogDriver};
use posthog_state::{MemoryStore, StateStore};
use serde_json::{Value, json};
use time::OffsetDateTime;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_run_reads_every_event_once_within_the_request_budget() {
    let (server, dataset) = mock(4_321, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    let summary = run(
        &sequential_events_config(&server, 500),
        &mut store,
        dir.path(),
    )
    .await;
    assert_eq!(summary.rows_output, 4_321);
    assert_eq!(summary.rows_read, 4_321);
    assert_eq!(summary.slices, 1);
    assert_exactly_once(&dir.path().join("posthog_events"), all_uuids(&dataset));
    // ⌈4321 / 500⌉ = 9 keyset pages, then the empty page that ends the scan; nothing else.
    assert_eq!(server.request_count(RouteClass::Query), 10);
    let state = store
        .load("posthog_events")
        .unwrap()
        .expect("state committed");
    assert_eq!(state.rows_total, 4_321);
    assert_eq!(state.parts.len(), summary.files.len());
    assert!(state.dedup_window.is_some());
    server.shutdown().await;
}

/// The default `query_concurrency: 3`: the first page comes back full, one planning query
/// splits the rest into three slices read at once, and the requests stay within one scan's
/// pages plus one empty page per slice and the planning query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_reads_three_slices_at_once_within_the_request_budget() {
    let (server, dataset) = mock(4_321, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    let summary = run(&events_config(&server, 500), &mut store, dir.path()).await;
    assert_eq!(summary.rows_output, 4_321);
    assert_eq!(summary.slices, 3);
    assert_exactly_once(&dir.path().join("posthog_events"), all_uuids(&dataset));
    let sent = query_texts(&server);
    let plans = sent.iter().filter(|q| q.contains("quantiles(")).count();
    assert_eq!(plans, 1, "one planning query");
    // ⌈4321 / 500⌉ + 3 slices + 1: the first page, the plan, then 3 slices of ~1274 rows in
    // 2 pages each (pages of 644) and an empty page each.
    assert!(sent.len() <= 9 + 3 + 1, "{} queries", sent.len());
    assert_eq!(sent.len(), 11);
    let state = store.load("posthog_events").unwrap().unwrap();
    assert!(state.committed_ranges.is_empty(), "every slice finished");
    assert_eq!(
        state.last_timestamp.as_deref().map(|t| &t[..19]),
        dataset
            .events
            .iter()
            .map(|e| e.timestamp)
            .max()
            .map(|t| t
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap())
            .as_deref()
            .map(|t| &t[..19]),
        "the watermark is the last event's"
    );
    // An incremental run after it reads the lookback once, in one scan, and writes nothing.
    let again = run(&events_config(&server, 500), &mut store, dir.path()).await;
    assert_eq!((again.rows_output, again.slices), (0, 1));
    assert_exactly_once(&dir.path().join("posthog_events"), all_uuids(&dataset));
    server.shutdown().await;
}

/// A sliced run stopped after any number of pages (a 400 ends it, as a crash would, after the
/// checkpoints before it) leaves a state that the next run finishes exactly once: the
/// watermark never passes an unfinished slice, and what later slices committed is recorded
/// as ranges the next run does not read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sliced_run_stopped_at_any_page_resumes_exactly_once() {
    let (server, dataset) = mock(6_000, 0).await;
    let config = events_config(&server, 200);
    let mut ranges_seen = 0;
    for stop_after in [2, 5, 9, 14, 20, 27] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MemoryStore::new();
        server.push_faults(RouteClass::Query, Fault::delay_ms(0), stop_after);
        server.push_fault(RouteClass::Query, Fault::status(400));
        let stopped = PostHogDriver
            .run(&config, &mut store, &ctx(dir.path()))
            .await;
        server.clear_faults();
        assert!(stopped.is_err(), "query {} fails the run", stop_after + 1);
        if let Some(state) = store.load("posthog_events").unwrap() {
            ranges_seen += state.committed_ranges.len();
            let committed: usize = state.parts.iter().map(|p| p.rows as usize).sum();
            assert!(committed <= 6_000, "{committed} rows committed");
        }
        // A second interrupted run on top of the first, then a clean one.
        server.push_faults(RouteClass::Query, Fault::delay_ms(0), stop_after / 2 + 3);
        server.push_fault(RouteClass::Query, Fault::status(400));
        let _ = PostHogDriver
            .run(&config, &mut store, &ctx(dir.path()))
            .await;
        server.clear_faults();
        if let Some(state) = store.load("posthog_events").unwrap() {
            ranges_seen += state.committed_ranges.len();
        }
        run(&config, &mut store, dir.path()).await;
        assert_exactly_once(&dir.path().join("posthog_events"), all_uuids(&dataset));
        let state = store.load("posthog_events").unwrap().unwrap();
        assert!(state.committed_ranges.is_empty(), "stop after {stop_after}");
        assert_eq!(state.rows_total, 6_000, "stop after {stop_after}");
    }
    assert!(
        ranges_seen > 0,
        "some stop left ranges committed beyond the watermark"
    );
    server.shutdown().await;
}

/// The planning query is an optimisation: PostHog refusing it (a 400: `quantiles` not allowed,
/// say) or answering it with a body we cannot read leaves the run reading on as one slice,
/// every event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planning_query_that_fails_leaves_one_slice_reading_on() {
    for fault in [Fault::status(400), Fault::MalformedJson] {
        let (server, dataset) = mock(4_321, 0).await;
        let dir = tempfile::tempdir().unwrap();
        let mut store = MemoryStore::new();
        // The first page goes through; the second query is the planning query.
        server.push_fault(RouteClass::Query, Fault::delay_ms(0));
        server.push_fault(RouteClass::Query, fault.clone());
        let summary = run(&events_config(&server, 500), &mut store, dir.path()).await;
        assert_eq!(summary.slices, 1, "{fault:?}");
        assert_exactly_once(&dir.path().join("posthog_events"), all_uuids(&dataset));
        let sent = query_texts(&server);
        assert!(sent[1].contains("quantiles("), "{fault:?}: {}", sent[1]);
        assert_eq!(
            sent.iter().filter(|q| q.contains("quantiles(")).count(),
            1,
            "{fault:?}: asked once"
        );
        server.shutdown().await;
    }
}

/// PostHog's concurrency 429 (no `Retry-After`): the project has 2 free query slots, not 3,
/// and answers 429 at once when they are taken. The run's first such answer lowers its
/// concurrency to 2 for the rest of the run; every event arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_429_lowers_the_slices_in_flight_for_the_rest_of_the_run() {
    let dataset = Dataset::generate(&spec(6_000, 0));
    let server = MockServer::start(MockConfig {
        query_latency: Some(posthog_mock::QueryLatency {
            concurrency: 2,
            queue_timeout: Duration::ZERO,
            ..posthog_mock::QueryLatency::new(Duration::from_millis(40), Duration::ZERO)
        }),
        ..MockConfig::with_dataset(dataset.clone())
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    let summary = run(&events_config(&server, 250), &mut store, dir.path()).await;
    assert_eq!(summary.slices, 3);
    assert_exactly_once(&dir.path().join("posthog_events"), all_uuids(&dataset));
    // Slots are taken back one 429 at a time: at most one query too many is in flight when
    // the first 429 arrives, none after the cap is 2.
    assert!(
        (1..=2).contains(&summary.throttled),
        "{} concurrency 429s",
        summary.throttled
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_run_keeps_late_events_inside_the_lookback_and_drops_rereads() {
    let (server, dataset) = mock(2_000, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    let config = events_config(&server, 1_000);
    run(&config, &mut store, dir.path()).await;
    let state = store.load("posthog_events").unwrap().unwrap();
    let watermark = OffsetDateTime::parse(
        state.last_timestamp.as_deref().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();

    // A late event 5 minutes behind the watermark and a new one after it.
    let template = dataset.events[0].clone();
    let late = Event {
        uuid: uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
        timestamp: watermark - Duration::from_secs(300),
        ..template.clone()
    };
    let new = Event {
        uuid: uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002),
        timestamp: watermark + Duration::from_secs(60),
        ..template
    };
    server.insert_events(vec![late.clone(), new.clone()]);
    // A dry run from the same state reports what the real run then does, and commits nothing.
    let dry = PostHogDriver
        .run(&config, &mut store, &ctx(dir.path()).with_dry_run(true))
        .await
        .unwrap();
    assert_eq!(store.load("posthog_events").unwrap().unwrap(), state);
    let second = run(&config, &mut store, dir.path()).await;
    assert_eq!(
        (dry.rows_read, dry.rows_deduplicated, dry.rows_output),
        (
            second.rows_read,
            second.rows_deduplicated,
            second.rows_output
        ),
        "a dry run counts through the same dedup window"
    );
    assert!(dry.files.is_empty());
    assert_eq!(
        second.rows_output, 2,
        "only the late and the new event are written"
    );
    assert!(
        second.rows_deduplicated > 0,
        "the lookback re-read was deduplicated"
    );
    let mut expected = all_uuids(&dataset);
    expected.push(late.uuid.to_string());
    expected.push(new.uuid.to_string());
    assert_exactly_once(&dir.path().join("posthog_events"), expected.clone());

    // A third run with nothing new writes nothing.
    let third = run(&config, &mut store, dir.path()).await;
    assert_eq!(third.rows_output, 0);
    assert!(third.files.is_empty());
    assert_exactly_once(&dir.path().join("posthog_events"), expected);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_events_on_one_timestamp_page_by_uuid() {
    let (server, dataset) = mock(3_200, 2_600).await;
    let mut per_instant: HashMap<OffsetDateTime, usize> = HashMap::new();
    for e in &dataset.events {
        *per_instant.entry(e.timestamp).or_default() += 1;
    }
    let largest = per_instant.values().max().copied().unwrap_or(0);
    assert!(largest >= 2_600, "the dataset has the cluster ({largest})");
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    let summary = run(&events_config(&server, 1_000), &mut store, dir.path()).await;
    assert_eq!(summary.rows_output, 3_200);
    assert_exactly_once(&dir.path().join("posthog_events"), all_uuids(&dataset));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_leaves_nothing_that_the_next_run_duplicates() {
    let (server, dataset) = mock(3_000, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    let config = events_config(&server, 1_000);
    store.fail_next_commit();
    let err = PostHogDriver
        .run(&config, &mut store, &ctx(dir.path()))
        .await
        .expect_err("the injected commit failure ends the run");
    assert_eq!(err.category().as_str(), "data");
    // Parts were written and renamed, but no state names them: exactly the state a crash
    // between part rename and state commit leaves.
    assert!(!uuids_on_disk(&dir.path().join("posthog_events")).is_empty());
    run(&config, &mut store, dir.path()).await;
    assert_exactly_once(&dir.path().join("posthog_events"), all_uuids(&dataset));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_fails_before_writing_leaves_no_table_directory() {
    let (server, _) = mock(10, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    let mut config = events_config(&server, 1_000);
    config.connection.project_id = "2".into(); // not the mock's project: every query fails
    PostHogDriver
        .run(&config, &mut store, &ctx(dir.path()))
        .await
        .expect_err("a query to another project fails");
    assert!(
        !dir.path().join("posthog_events").exists(),
        "no empty table directory or lock file is left"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_commit_each_full_part() {
    let (server, _dataset) = mock(3_500, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    let summary = run(
        &sequential_events_config(&server, 500),
        &mut store,
        dir.path(),
    )
    .await;
    // part_rows 1000 with pages of 500: a checkpoint after every second page, then the final.
    assert_eq!(summary.files.len(), 4);
    assert_eq!(store.commit_count(), 4);
    server.shutdown().await;
}

/// Parts the writer closes on its own (here: the schema widens in every batch, as a wide
/// project's does; in Parquet also when the footer reaches its budget) count towards
/// `part_rows`: the run still checkpoints every 1 000 rows, although no part holds that many.
/// Before, the open part had to reach `part_rows` by itself, so this run committed once, at
/// its end, and a crash lost all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_the_writer_closes_early_still_checkpoint_every_part_rows() {
    let dataset = Dataset::generate(&GenSpec {
        shape: DataShape::Wide { keys: 3_000 },
        ..spec(3_500, 0)
    });
    let server = MockServer::start(MockConfig::with_dataset(dataset.clone()))
        .await
        .expect("mock starts");
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    let mut config = sequential_events_config(&server, 500);
    config.performance.batch_size = 100;
    config.output.max_columns = 10_000;
    let summary = run(&config, &mut store, dir.path()).await;
    assert!(
        summary.files.len() > 10,
        "new keys in every batch of 100 close a part each: {} parts",
        summary.files.len()
    );
    // part_rows 1000 with pages of 500: a checkpoint after every second page, then the final.
    assert_eq!(store.commit_count(), 4);
    assert_exactly_once(&dir.path().join("posthog_events"), all_uuids(&dataset));
    server.shutdown().await;
}

/// Six server timeouts in a row, more than the circuit breaker's threshold of five: each one
/// halves the page (the query is answered, only too heavy), so the breaker stays closed and the
/// run finishes at a page size that works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_server_timeouts_shrink_the_page_without_opening_the_breaker() {
    let (server, dataset) = mock(1_500, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    for _ in 0..6 {
        server.push_fault(RouteClass::Query, Fault::status(504));
    }
    let summary = run(&events_config(&server, 6_400), &mut store, dir.path()).await;
    assert_eq!(summary.page_shrinks, 6, "6400 halved six times is 100");
    assert_eq!(summary.breaker_trips, 0);
    assert_exactly_once(&dir.path().join("posthog_events"), all_uuids(&dataset));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_timeout_halves_the_page_and_loses_nothing() {
    let (server, dataset) = mock(1_500, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    server.push_fault(RouteClass::Query, Fault::status(504));
    let summary = run(&events_config(&server, 1_000), &mut store, dir.path()).await;
    assert_eq!(summary.page_shrinks, 1);
    assert_eq!(summary.retries, 1, "the halved request is the one repeat");
    assert_exactly_once(&dir.path().join("posthog_events"), all_uuids(&dataset));
    let sent = query_texts(&server);
    assert!(sent[0].contains("limit 1000") && sent[1].contains("limit 500"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_grows_back_after_a_transient_timeout() {
    let (server, dataset) = mock(8_000, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    server.push_fault(RouteClass::Query, Fault::status(504));
    run(
        &sequential_events_config(&server, 1_000),
        &mut store,
        dir.path(),
    )
    .await;
    assert_exactly_once(&dir.path().join("posthog_events"), all_uuids(&dataset));
    let limits: Vec<String> = query_texts(&server)
        .iter()
        .map(|q| {
            q.rsplit("limit ")
                .next()
                .unwrap_or("")
                .trim_matches('"')
                .to_owned()
        })
        .collect();
    // The 504, four full pages of 500, then back to 1000: 6 full pages and the short one.
    assert_eq!(
        limits,
        [
            "1000", "500", "500", "500", "500", "1000", "1000", "1000", "1000", "1000", "1000",
            "1000"
        ]
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried_and_the_run_is_exact() {
    let (server, dataset) = mock(2_500, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    server.push_fault(RouteClass::Query, Fault::status(503));
    server.push_fault(RouteClass::Query, Fault::too_many(None));
    // A body cut mid-stream after its first chunks reached the sink: the sink drops them and
    // takes the retried page whole.
    server.push_fault(RouteClass::Query, Fault::TruncatedBody);
    let summary = run(&events_config(&server, 1_000), &mut store, dir.path()).await;
    assert_eq!(summary.retries, 3);
    assert_exactly_once(&dir.path().join("posthog_events"), all_uuids(&dataset));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_from_a_body_cut_mid_stream_are_not_written_again() {
    // Rows are written as they arrive, so a body cut after half its bytes has already put
    // rows into the batch; the retried request's body repeats them. With the dedup window
    // off nothing else could hide a second copy.
    let (server, dataset) = mock(2_500, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    let mut config = events_config(&server, 1_000);
    config.source.deduplication_enabled = false;
    server.push_fault(RouteClass::Query, Fault::delay_ms(0));
    server.push_fault(RouteClass::Query, Fault::TruncatedBody);
    server.push_fault(RouteClass::Query, Fault::TruncatedBody);
    let summary = run(&config, &mut store, dir.path()).await;
    assert_eq!(summary.retries, 2);
    assert_eq!(summary.rows_read, 2_500, "each row counted once");
    assert_eq!(summary.rows_deduplicated, 0);
    assert_eq!(summary.rows_output, 2_500);
    assert_exactly_once(&dir.path().join("posthog_events"), all_uuids(&dataset));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_type_filter_is_bound_and_applied() {
    let (server, dataset) = mock(1_000, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    let config = config(
        &server,
        json!({"data_type": "events", "page_size": 1000, "event_types": ["$pageview"],
               "initial_since": "2024-12-01T00:00:00Z"}),
        json!({"format": "jsonl"}),
    );
    run(&config, &mut store, dir.path()).await;
    let expected = dataset
        .events
        .iter()
        .filter(|e| e.event == "$pageview")
        .map(|e| e.uuid.to_string());
    assert_exactly_once(&dir.path().join("posthog_events"), expected);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_replace_the_previous_parts() {
    let (server, dataset) = mock(10, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    let config = config(
        &server,
        json!({"data_type": "feature_flags", "page_size": 100}),
        json!({"format": "jsonl"}),
    );
    assert_eq!(config.source.data_type, DataType::FeatureFlags);
    let first = run(&config, &mut store, dir.path()).await;
    let second = run(&config, &mut store, dir.path()).await;
    // PostHog (and the mock) leave deleted flags out of the list.
    let live: Vec<&Value> = dataset
        .feature_flags
        .iter()
        .filter(|f| f["deleted"] != true)
        .collect();
    assert_eq!(first.rows_output as usize, live.len());
    assert_eq!(second.rows_output, first.rows_output);
    let table = dir.path().join("posthog_feature_flags");
    let parts: Vec<_> = std::fs::read_dir(&table)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("part-"))
        .collect();
    assert_eq!(
        parts.len(),
        1,
        "only the second snapshot's part remains: {parts:?}"
    );
    assert_ne!(first.files, second.files);
    let ids = live.iter().map(|f| f["id"].to_string());
    assert_exactly_once(&table, ids);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persons_snapshot_pages_on_id() {
    let (server, dataset) = mock(10, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    let config = config(
        &server,
        json!({"data_type": "persons", "page_size": 100}),
        json!({"format": "jsonl"}),
    );
    let summary = run(&config, &mut store, dir.path()).await;
    assert_eq!(summary.rows_output as usize, dataset.persons.len());
    let ids = dataset.persons.iter().map(|p| p.id.to_string());
    assert_exactly_once(&dir.path().join("posthog_persons"), ids);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_snapshot_holds_every_session_once_with_its_pageviews() {
    let (server, dataset) = mock(1_500, 0).await;
    let mut pageviews: HashMap<String, i64> = HashMap::new();
    for e in &dataset.events {
        if let Some(Value::String(id)) = e.properties.get("$session_id") {
            *pageviews.entry(id.clone()).or_default() += i64::from(e.event == "$pageview");
        }
    }
    assert!(pageviews.len() > 100, "several pages of sessions");
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    let config = config(
        &server,
        json!({"data_type": "sessions", "page_size": 100, "initial_since": "2000-01-01T00:00:00Z"}),
        json!({"format": "jsonl"}),
    );
    run(&config, &mut store, dir.path()).await;
    let second = run(&config, &mut store, dir.path()).await;
    assert_eq!(second.rows_output as usize, pageviews.len());
    let table = dir.path().join("posthog_sessions");
    assert_exactly_once(&table, pageviews.keys().cloned());
    for entry in std::fs::read_dir(&table).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("part-")
        {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let row: Value = serde_json::from_str(line).unwrap();
            let id = row["session_id"].as_str().unwrap();
            assert_eq!(row["$pageview_count"], pageviews[id], "session {id}");
            assert!(
                row["$start_timestamp"].as_str().unwrap()
                    <= row["$end_timestamp"].as_str().unwrap()
            );
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_state_seeds_the_first_run() {
    let (server, dataset) = mock(2_000, 0).await;
    let mut sorted = dataset.events.clone();
    sorted.sort_by_key(|e| e.timestamp);
    let cut = &sorted[1_499];
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    let mut config = events_config(&server, 1_000);
    let mut text = String::new();
    posthog_core::format_timestamp(
        i64::try_from(cut.timestamp.unix_timestamp_nanos() / 1000).unwrap(),
        &mut text,
    );
    config.inputs_state.insert(
        "posthog_events".into(),
        json!({"last_timestamp": text, "last_uuid": cut.uuid.to_string(),
               "recent_uuids": [], "columns": null}),
    );
    config.source.deduplication_enabled = false;
    let summary = run(&config, &mut store, dir.path()).await;
    assert_eq!(
        summary.rows_output, 500,
        "resumes strictly after the seeded cursor"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_page_fails_the_run_and_commits_nothing_built_on_it() {
    let (server, dataset) = mock(2_500, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    let config = sequential_events_config(&server, 500);
    // Pages 1 and 2 fill part 1 (checkpoint); page 3 is not JSON.
    server.push_fault(RouteClass::Query, Fault::delay_ms(0));
    server.push_fault(RouteClass::Query, Fault::delay_ms(0));
    server.push_fault(RouteClass::Query, Fault::MalformedJson);
    let err = PostHogDriver
        .run(&config, &mut store, &ctx(dir.path()))
        .await
        .expect_err("a body that is not JSON ends the run");
    assert_eq!(err.category().as_str(), "data");
    assert!(err.to_string().contains("not a valid result page"), "{err}");
    let state = store
        .load("posthog_events")
        .unwrap()
        .expect("the checkpoint was committed");
    assert_eq!(
        state.rows_total, 1_000,
        "only the checkpointed part is committed"
    );
    // The next run continues from the checkpoint and ends exact.
    run(&config, &mut store, dir.path()).await;
    assert_exactly_once(&dir.path().join("posthog_events"), all_uuids(&dataset));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_utc_project_time_zone_reads_the_same_instants() {
    let dataset = Dataset::generate(&spec(1_200, 0));
    let server = MockServer::start(MockConfig {
        timezone: posthog_mock::ProjectTimezone::new(
            "America/New_York",
            time::macros::offset!(-05:00),
        ),
        ..MockConfig::with_dataset(dataset.clone())
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    run(&events_config(&server, 500), &mut store, dir.path()).await;
    let by_uuid: HashMap<String, OffsetDateTime> = dataset
        .events
        .iter()
        .map(|e| (e.uuid.to_string(), e.timestamp))
        .collect();
    let table = dir.path().join("posthog_events");
    let mut checked = 0;
    for entry in std::fs::read_dir(&table).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("part-")
        {
            continue; // the manifest, the lock file
        }
        let text = std::fs::read_to_string(path).unwrap();
        for line in text.lines() {
            let row: Value = serde_json::from_str(line).unwrap();
            let ts = OffsetDateTime::parse(
                row["timestamp"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            assert_eq!(ts, by_uuid[row["uuid"].as_str().unwrap()]);
            checked += 1;
        }
    }
    assert_eq!(checked, 1_200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persons_can_run_incrementally_on_created_at() {
    let (server, dataset) = mock(10, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    let config = config(
        &server,
        json!({"data_type": "persons", "page_size": 100, "incremental_field": "created_at",
               "initial_since": "2000-01-01T00:00:00Z"}),
        json!({"format": "jsonl"}),
    );
    let first = run(&config, &mut store, dir.path()).await;
    assert_eq!(first.rows_output as usize, dataset.persons.len());
    let state = store.load("posthog_persons").unwrap().unwrap();
    assert!(
        state.last_timestamp.is_some(),
        "a created_at watermark is kept"
    );
    let second = run(&config, &mut store, dir.path()).await;
    assert_eq!(second.rows_output, 0, "nothing new: nothing written");
    let ids = dataset.persons.iter().map(|p| p.id.to_string());
    assert_exactly_once(&dir.path().join("posthog_persons"), ids);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_columns_that_cannot_be_used_are_a_config_error_naming_them() {
    let (server, _dataset) = mock(10, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    let mut config = events_config(&server, 1_000);
    config.inputs_state.insert(
        "posthog_events".into(),
        json!({"last_timestamp": null, "columns": [
            {"name": "uuid", "type": "utf8", "field": "uuid"},
            {"name": "event", "type": "varchar", "field": "event"},
        ]}),
    );
    let err = PostHogDriver
        .run(&config, &mut store, &ctx(dir.path()))
        .await
        .expect_err("an unknown column type is refused");
    assert_eq!(err.category().as_str(), "config");
    assert!(
        err.to_string().starts_with(
            "inputs.state.posthog_events.columns[1]: cannot be used: unknown type \"varchar\""
        ),
        "{err}"
    );
    assert_eq!(
        server.request_count(RouteClass::Query),
        0,
        "refused before any request"
    );
    server.shutdown().await;
}
