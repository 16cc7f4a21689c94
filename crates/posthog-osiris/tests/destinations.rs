//! Where a table lands: Hive-style day partitions and the manifest on a local disk, and a
//! table on an object store (an in-memory `object_store`, the same code path as S3's) written
//! exactly once, resumed, cleaned of orphans, and held by a lease.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use common::engine::*;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt as _};
use posthog_osiris::{Category, Context, Driver, PartitionBy, PostHogDriver};
use posthog_state::{MemoryStore, StateStore, TableState};
use posthog_storage::{Bucket, Lease, LeaseHolder, Location, ObjectStateStore};
use serde_json::Value;
use time::OffsetDateTime;

/// Every part file under `table_dir`, one directory level down included, by relative name.
fn part_files(table_dir: &Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(table_dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() {
            for inner in std::fs::read_dir(entry.path()).unwrap() {
                let inner = inner.unwrap().file_name().to_string_lossy().into_owned();
                names.insert(format!("{name}/{inner}"));
            }
        } else if name.starts_with("part-") {
            names.insert(name);
        }
    }
    names
}

/// The manifest's part paths, and its watermark.
fn manifest(text: &[u8]) -> (BTreeSet<String>, Value) {
    let manifest: Value = serde_json::from_slice(text).expect("the manifest is JSON");
    let parts = manifest["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .map(|p| p["path"].as_str().unwrap().to_owned())
        .collect();
    (parts, manifest["watermark"].clone())
}

fn state_parts(state: &TableState) -> BTreeSet<String> {
    state.parts.iter().map(|p| p.file.clone()).collect()
}

/// `partition_by: day` over a week of events read as three concurrent slices: every part is
/// in a `date=YYYY-MM-DD/` directory, every row in it has that UTC date, every event is there
/// once, and the manifest names exactly the committed parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn day_partitions_hold_exactly_the_rows_of_their_date() {
    let (server, dataset) = mock(3_000, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    let mut config = events_config(&server, 500);
    config.output.partition_by = PartitionBy::Day;
    let summary = run(&config, &mut store, dir.path()).await;
    assert_eq!(summary.rows_output, 3_000);
    assert_eq!(
        summary.slices, 3,
        "the partitioned backfill is still sliced"
    );
    let table = dir.path().join("posthog_events");
    let files = part_files(&table);
    let state = store.load("posthog_events").unwrap().unwrap();
    assert_eq!(
        files,
        state_parts(&state),
        "the parts on disk are the committed ones"
    );
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut dates = BTreeSet::new();
    for name in &files {
        let (dir_name, _) = name.split_once('/').expect("every part is in a directory");
        let date = dir_name.strip_prefix("date=").expect("a date= directory");
        dates.insert(date.to_owned());
        let text = std::fs::read_to_string(table.join(name)).unwrap();
        for line in text.lines() {
            let row: Value = serde_json::from_str(line).unwrap();
            let ts = row["timestamp"].as_str().unwrap();
            assert_eq!(&ts[..10], date, "{name}: a row of {ts}");
            *seen
                .entry(row["uuid"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    assert!(
        dates.len() >= 7,
        "a week of events spans its days: {dates:?}"
    );
    assert!(seen.values().all(|n| *n == 1), "no row twice");
    assert_eq!(seen.len(), dataset.events.len(), "every event");
    let (listed, watermark) = manifest(&std::fs::read(table.join("_manifest.json")).unwrap());
    assert_eq!(listed, state_parts(&state));
    assert_eq!(
        watermark["last_timestamp"].as_str(),
        state.last_timestamp.as_deref()
    );
    server.shutdown().await;
}

/// The table's objects in the store, by name relative to `<prefix>/<table>/`.
async fn objects(store: &InMemory, prefix: &str) -> BTreeSet<String> {
    use futures_util::TryStreamExt as _;
    let dir = object_store::path::Path::from(prefix);
    let listed: Vec<_> = store.list(Some(&dir)).try_collect().await.unwrap();
    listed
        .into_iter()
        .map(|o| o.location.as_ref()[prefix.len() + 1..].to_owned())
        .collect()
}

async fn object(store: &InMemory, key: &str) -> Vec<u8> {
    let path = object_store::path::Path::from(key);
    store
        .get(&path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

/// Every UUID in the JSONL part objects of the table, with a count.
async fn uuids_in_objects(store: &InMemory, table_prefix: &str) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for name in objects(store, table_prefix).await {
        if !name.contains("part-") {
            continue;
        }
        let text = object(store, &format!("{table_prefix}/{name}")).await;
        for line in String::from_utf8(text).unwrap().lines() {
            let row: Value = serde_json::from_str(line).unwrap();
            *seen
                .entry(row["uuid"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    seen
}

/// A run writing to `bucket`, without client-side request budgets.
fn object_ctx(bucket: &Bucket) -> Context {
    Context::new(".")
        .with_rate_limits(posthog_client::RateLimits::unlimited())
        .with_bucket(bucket.clone())
}

fn bucket_over(memory: &Arc<InMemory>) -> Bucket {
    let Location::Object(url) = Location::parse("s3://landing/posthog").unwrap() else {
        panic!("an object URL")
    };
    Bucket::with_store(url, memory.clone() as Arc<dyn ObjectStore>).unwrap()
}

/// A table on an object store: written exactly once with the state in the store, an orphan
/// part (an upload a killed run never committed) removed by the next run, the manifest equal
/// to the committed parts after every run, and no lease left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_table_is_written_exactly_once_and_cleaned_of_orphans() {
    let (server, dataset) = mock(2_500, 0).await;
    let memory = Arc::new(InMemory::new());
    let bucket = bucket_over(&memory);
    let config = events_config(&server, 500);
    let ctx = || object_ctx(&bucket);
    let mut store = ObjectStateStore::open(bucket.clone(), "state.json").unwrap();
    let summary = PostHogDriver
        .run(&config, &mut store, &ctx())
        .await
        .unwrap();
    assert_eq!(summary.rows_output, 2_500);
    assert!(
        summary
            .files
            .iter()
            .all(|f| f.starts_with("s3://landing/posthog/posthog_events/part-")),
        "{:?}",
        summary.files
    );
    let table = "posthog/posthog_events";
    let seen = uuids_in_objects(&memory, table).await;
    assert!(seen.values().all(|n| *n == 1));
    assert_eq!(seen.len(), dataset.events.len());

    let state = store.load("posthog_events").unwrap().unwrap();
    let names = objects(&memory, table).await;
    assert!(
        !names.contains("_lease"),
        "the lease is released: {names:?}"
    );
    let parts: BTreeSet<String> = names
        .iter()
        .filter(|n| n.starts_with("part-"))
        .cloned()
        .collect();
    assert_eq!(parts, state_parts(&state));
    assert!(
        parts.iter().all(|p| p.split('-').count() == 3),
        "object part names carry the run's token: {parts:?}"
    );
    let (listed, _) = manifest(&object(&memory, &format!("{table}/_manifest.json")).await);
    assert_eq!(listed, parts);
    // The state object is the JSON state file's shape, readable by the file store's rules.
    let reopened = ObjectStateStore::open(bucket.clone(), "state.json").unwrap();
    assert_eq!(
        reopened.load("posthog_events").unwrap(),
        Some(state.clone())
    );

    // An upload a killed run left behind, named like a part: the next run removes it.
    let orphan = format!("{table}/part-00099-deadbeef.jsonl");
    memory
        .put(&orphan.as_str().into(), "{\"uuid\":\"x\"}\n".into())
        .await
        .unwrap();
    let mut store = ObjectStateStore::open(bucket.clone(), "state.json").unwrap();
    let again = PostHogDriver
        .run(&config, &mut store, &ctx())
        .await
        .unwrap();
    assert_eq!(again.rows_output, 0, "nothing new");
    let names = objects(&memory, table).await;
    assert!(!names.contains("part-00099-deadbeef.jsonl"), "{names:?}");
    let seen = uuids_in_objects(&memory, table).await;
    assert_eq!(seen.len(), dataset.events.len());
    assert!(seen.values().all(|n| *n == 1));
    server.shutdown().await;
}

/// A live lease on the table refuses a run before any request, naming the lease; once it has
/// expired, the next run takes it over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_lease_refuses_a_second_run_and_an_expired_one_is_taken_over() {
    let (server, _) = mock(300, 0).await;
    let memory = Arc::new(InMemory::new());
    let bucket = bucket_over(&memory);
    let config = events_config(&server, 500);
    let ctx = object_ctx(&bucket);
    let holder = |run: &str| LeaseHolder {
        run_id: run.to_owned(),
        host: "elsewhere".to_owned(),
        pid: 42,
    };
    let lease = Lease::acquire(
        &bucket,
        "posthog_events/_lease",
        std::time::Duration::from_secs(60),
        holder("other-run"),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    let mut store = ObjectStateStore::open(bucket.clone(), "state.json").unwrap();
    let err = PostHogDriver
        .run(&config, &mut store, &ctx)
        .await
        .expect_err("the table is leased");
    assert_eq!(err.category(), Category::Config, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("s3://landing/posthog/posthog_events/_lease"),
        "{text}"
    );
    assert!(text.contains("other-run"), "{text}");
    assert_eq!(server.request_count(posthog_mock::RouteClass::Query), 0);
    drop(lease);

    // The lease of a run killed an hour ago: never renewed, never released.
    let expired = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let rfc = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let body = serde_json::json!({
        "run_id": "crashed-run", "host": "elsewhere", "pid": 42,
        "acquired_at": rfc(expired - time::Duration::minutes(1)), "expires_at": rfc(expired),
    });
    memory
        .put(
            &"posthog/posthog_events/_lease".into(),
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await
        .unwrap();
    let summary = PostHogDriver.run(&config, &mut store, &ctx).await.unwrap();
    assert_eq!(summary.rows_output, 300);
    server.shutdown().await;
}

/// A state store opened before another run committed the table (a scheduler started two runs
/// at once; the second waited out the first's lease): the run reads the state again once it
/// holds the lease, so it starts from the first run's commit, and never takes the first run's
/// parts for orphans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_starts_from_the_state_as_it_is_once_it_holds_the_lease() {
    let (server, dataset) = mock(1_200, 0).await;
    let memory = Arc::new(InMemory::new());
    let bucket = bucket_over(&memory);
    let config = events_config(&server, 500);
    let ctx = object_ctx(&bucket);
    let mut opened_early = ObjectStateStore::open(bucket.clone(), "state.json").unwrap();
    let mut first = ObjectStateStore::open(bucket.clone(), "state.json").unwrap();
    let summary = PostHogDriver.run(&config, &mut first, &ctx).await.unwrap();
    assert_eq!(summary.rows_output, 1_200);
    let committed = state_parts(&first.load("posthog_events").unwrap().unwrap());

    let second = PostHogDriver
        .run(&config, &mut opened_early, &ctx)
        .await
        .expect("the second run reads the first one's commit");
    assert_eq!(second.rows_output, 0, "nothing new after the first run");
    let table = "posthog/posthog_events";
    let names = objects(&memory, table).await;
    let parts: BTreeSet<String> = names
        .iter()
        .filter(|n| n.starts_with("part-"))
        .cloned()
        .collect();
    assert_eq!(
        parts, committed,
        "the first run's parts are all still there"
    );
    let seen = uuids_in_objects(&memory, table).await;
    assert_eq!(seen.len(), dataset.events.len());
    assert!(seen.values().all(|n| *n == 1));
    server.shutdown().await;
}

/// A day-partitioned scan commits as it crosses each day, not only when `part_rows` rows have
/// gathered: a crash loses at most the day being read (and the pages since).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_partitioned_scan_commits_each_day_it_passes() {
    let (server, dataset) = mock(3_000, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryStore::new();
    let mut config = sequential_events_config(&server, 500);
    config.output.partition_by = PartitionBy::Day;
    config.output.part_rows = 1_000_000;
    let summary = run(&config, &mut store, dir.path()).await;
    assert_eq!(summary.rows_output, 3_000);
    assert!(
        store.commit_count() >= 7,
        "a checkpoint at each of the 6 day boundaries, then the final commit: {}",
        store.commit_count()
    );
    let state = store.load("posthog_events").unwrap().unwrap();
    let table = dir.path().join("posthog_events");
    assert_eq!(part_files(&table), state_parts(&state));
    let mut seen: HashMap<String, usize> = HashMap::new();
    for name in part_files(&table) {
        let date = name
            .split_once('/')
            .unwrap()
            .0
            .strip_prefix("date=")
            .unwrap()
            .to_owned();
        for line in std::fs::read_to_string(table.join(&name)).unwrap().lines() {
            let row: Value = serde_json::from_str(line).unwrap();
            assert_eq!(&row["timestamp"].as_str().unwrap()[..10], date);
            *seen
                .entry(row["uuid"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    assert_eq!(seen.len(), dataset.events.len());
    assert!(seen.values().all(|n| *n == 1));
    server.shutdown().await;
}
