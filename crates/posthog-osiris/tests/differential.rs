//! Differential test: the HogQL this product sends, run against the mock PostHog
//! (`posthog-mock`) and against real ClickHouse (chdb, an in-process ClickHouse) over the same
//! generated rows, compared row by row.
//!
//! Every other test meets only our own understanding of PostHog, encoded in the mock. Here the
//! same query text meets ClickHouse, so a mock that compares UUIDs as strings, renders
//! DateTimes its own way or reads properties differently from PostHog's compiled SQL is caught.
//!
//! What is compared:
//! 1. the keyset pages the extractor really sends (the `posthog_osiris` driver against an
//!    in-process mock; the query bodies are taken from `MockServer::requests()`): events on
//!    `timestamp` (with a 300-event same-timestamp cluster cut by pages of 100, and a second,
//!    lookback run), events on `created_at`, events filtered by `event_types`, persons (snapshot
//!    and on `created_at`) and sessions;
//! 2. every template of `posthog_agent::templates` with its defaults (required parameters get
//!    values from the data);
//! 3. probes of what a keyset client relies on: `(timestamp, uuid) > (…)` across a cluster in
//!    ClickHouse's UUID order, `ORDER BY timestamp, uuid`, DateTime rendering in UTC and in the
//!    project zone, property access and `JSONExtract*`, `person.properties`, LIMIT and its clamp;
//! 4. the slice-planning query of concurrent keyset slices (issue 16): `count()` and
//!    `quantiles(…)(timestamp | created_at)` over a range, and `quantile`/`quantiles` of numbers
//!    and Dates (the dataset is below ClickHouse's 8192-value reservoir, where it is exact).
//!
//! How: the mock's dataset is written to JSONL and loaded into chdb by
//! `tests/differential/clickhouse.py` (one Python process for every query). Each HogQL query is
//! translated to the ClickHouse SQL PostHog compiles it to (see [`translate`] and the table
//! there), run, rendered as PostHog's API renders it (DRF: `isoformat()` with `Z`, the fraction
//! omitted when zero, else 6 digits) and compared with the mock's `columns`, `types`,
//! `hasMore` and `results`: row by row where the ORDER BY is total; where it has ties, the
//! sequence of ORDER BY keys row by row and the rows as multisets; as multisets without one.
//! `now()` is pinned for ClickHouse to the instant the test starts; the mock has no fixed
//! clock, so the templates run on data whose answers do not change within [`NOW_MARGIN`] of it.
//!
//! No difference is accepted: the six the first runs found (property strings keeping their
//! JSON escapes, JSONExtractRaw's re-rendered numbers, `JSONExtractString` of non-strings,
//! `JSONExtractInt`/`Float` of `true`, naive `toDateTime` literals without
//! `convertToProjectTimezone`, the type of `avg`) were fixed in the mock.
//!
//! Needs `python3` with `chdb` (`.ci/run` installs it). Without it the tests say so and pass,
//! unless `POSTHOG_REQUIRE_EXTERNAL_READERS=1` (set by `.ci/run`), where it is a failure.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use posthog_agent::templates;
use posthog_client::RateLimits;
use posthog_mock::{Dataset, GenSpec, MockConfig, MockServer};
use posthog_osiris::{Context, Driver, ExtractConfig, PostHogDriver};
use posthog_state::MemoryStore;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

const KEY: &str = "phx_mock_personal_key";
/// The mock's default project zone (`MockConfig::default`), with the IANA name ClickHouse uses.
const PROJECT_TZ: &str = "Asia/Kolkata";
/// PostHog's LIMIT clamp for API queries (`MAX_SELECT_RETURNED_ROWS`), the mock's default.
const DEFAULT_CLAMP: usize = 50_000;
/// The clamp set on the mock for the LIMIT-clamp probes.
const PROBE_CLAMP: usize = 250;
/// PostHog's page size for a query without LIMIT (`DEFAULT_RETURNED_ROWS`).
const DEFAULT_ROWS: usize = 100;
/// Events, persons and the same-timestamp cluster of the fixed dataset.
const FIXED_EVENTS: usize = 3_000;
const FIXED_PERSONS: usize = 250;
const CLUSTER: usize = 300;
/// No event or person of the now-relative dataset lies within this distance of
/// `now - k days` for any k a template uses, so the mock's clock and the instant pinned for
/// ClickHouse may differ by up to this much without changing any answer.
const NOW_MARGIN: time::Duration = time::Duration::minutes(10);
/// Suffix of the ClickHouse-only variant of a query that keeps PostHog's approximate `uniq`.
const APPROX: &str = "#approximate-uniq";

// ---------------------------------------------------------------------------------------------
// The tests: one per behaviour, each asserting its group of cases.
// ---------------------------------------------------------------------------------------------

/// Pages on `(timestamp, uuid)` (first run, then the lookback re-read of a second run), with a
/// 300-event same-timestamp cluster cut by pages of 100.
#[test]
fn keyset_pages_on_timestamp_return_clickhouses_rows_across_a_same_timestamp_cluster() {
    let Some(f) = fixture() else { return };
    check(Group::PagesTimestamp);
    // The scenario happened: pages of 100 cut the 300-event cluster (a cursor inside it).
    let inside = f
        .cases
        .iter()
        .filter(|c| c.first_run && c.values.get("cursor_time") == Some(&json!(f.cluster_time)))
        .count();
    assert!(
        inside >= 2,
        "only {inside} pages start from a cursor inside the {CLUSTER}-event cluster at {}",
        f.cluster_time
    );
}

/// Pages on `(created_at, uuid)`.
#[test]
fn keyset_pages_on_created_at_return_clickhouses_rows() {
    check(Group::PagesCreatedAt);
}

/// Pages with `event in ({event_0}, {event_1})`.
#[test]
fn event_type_filtered_pages_return_clickhouses_rows() {
    check(Group::PagesEventTypes);
}

/// Persons pages on `id` alone (UUID order) and on `(created_at, id)`.
#[test]
fn persons_pages_return_clickhouses_rows_in_uuid_order() {
    check(Group::PagesPersons);
}

/// Sessions snapshot pages on the `session_id` text, against sessions derived in ClickHouse by
/// the mock README's definition.
#[test]
fn sessions_pages_return_the_rows_of_the_readme_sessions_definition() {
    check(Group::PagesSessions);
}

/// Walking the extractor's own page sequence on ClickHouse loses no event: the union of
/// ClickHouse's answers to the recorded page queries of the first timestamp run is every event.
#[test]
fn the_extractors_page_sequence_reads_every_event_from_clickhouse() {
    let Some(f) = fixture() else { return };
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut pages = 0;
    let mut plans = 0;
    for case in f.cases.iter().filter(|c| c.first_run) {
        let Some(Ok(answer)) = f.clickhouse.get(&case.id) else {
            panic!("{}: ClickHouse gave no answer", case.id);
        };
        // The run reads its range as concurrent slices: its planning query (compared with
        // ClickHouse's answer like every page, in its group's test) reads no rows.
        if case.hogql.starts_with("select count(), quantiles(") {
            plans += 1;
            continue;
        }
        pages += 1;
        let at = answer
            .columns
            .iter()
            .position(|c| c == "uuid")
            .expect("uuid column");
        for row in &answer.rows {
            seen.insert(row[at].as_str().unwrap_or_default().to_owned());
        }
    }
    assert!(pages > FIXED_EVENTS / 100, "{pages} pages recorded");
    assert_eq!(plans, 1, "the first run splits its range once");
    let missing: Vec<&String> = f
        .fixed_uuids
        .iter()
        .filter(|u| !seen.contains(*u))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} events are in no page ClickHouse returns for the extractor's queries, e.g. {:?}",
        missing.len(),
        f.fixed_uuids.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Every template, bound with its defaults (and data-derived values for required parameters).
#[test]
fn every_template_returns_clickhouses_answer() {
    check(Group::Templates);
}

/// `(timestamp, uuid) > (toDateTime({t}), toUUID({u}))` with a cursor inside a same-timestamp
/// cluster, and `id > toUUID({u})` on persons: UUIDs compare in ClickHouse's order (second
/// 64-bit half first), not as strings.
#[test]
fn tuple_comparison_inside_a_cluster_follows_clickhouse_uuid_order() {
    check(Group::TupleCompare);
}

/// `ORDER BY timestamp, uuid` (and `ORDER BY id` on persons) over every row.
#[test]
fn order_by_timestamp_uuid_is_clickhouses_order() {
    check(Group::OrderBy);
}

/// DateTime64 values render as PostHog renders them: whole seconds without a fraction, else 6
/// digits, `Z` in UTC; the project zone's offset with `convertToProjectTimezone`; `toDateTime`
/// literals with and without an offset; `toDate` on the display zone's wall clock.
#[test]
fn datetimes_render_as_posthog_renders_them_in_utc_and_in_the_project_zone() {
    check(Group::DateTimes);
}

/// `properties.x` returns the text PostHog's compiled SQL returns for strings.
#[test]
fn property_access_returns_posthogs_text_for_strings() {
    check(Group::PropStrings);
}

/// `properties.x` returns the text PostHog's compiled SQL returns for numbers and bools.
#[test]
fn property_access_returns_posthogs_text_for_numbers_and_bools() {
    check(Group::PropNumbers);
}

/// `properties.x` returns the text PostHog's compiled SQL returns for objects, arrays and
/// paths into them.
#[test]
fn property_access_returns_posthogs_text_for_nested_objects() {
    check(Group::PropNested);
}

/// `properties['key with spaces']`, dotted, dashed and unicode keys and values.
#[test]
fn property_access_reads_keys_with_spaces_and_unicode() {
    check(Group::PropKeys);
}

/// JSON null and missing keys are NULL.
#[test]
fn property_access_gives_null_for_json_null_and_missing_keys() {
    check(Group::PropNull);
}

/// `person.properties` on events (persons-on-events: the person as of the event) and paths in it.
#[test]
fn person_properties_on_events_match_clickhouse() {
    check(Group::PersonProps);
}

/// `JSONExtractString`, `JSONExtractInt`, `JSONExtractFloat` on the properties string.
#[test]
fn json_extract_functions_match_clickhouse() {
    check(Group::JsonExtract);
}

/// `LIMIT n` returns ClickHouse's first `min(n, clamp)` rows, with the default clamp and with
/// a clamp set on the mock; no LIMIT gives the first 100 rows and `hasMore`.
#[test]
fn limit_and_its_clamp_match_clickhouse() {
    check(Group::Limit);
}

/// The slice-planning query of concurrent keyset slices (issue 16): `count()` and
/// `quantiles(1/k, …, (k-1)/k)(column)` over the run's range, for 2, 3 and 8 slices, on
/// `timestamp` and `created_at`, with and without the `event in (…)` filter, over an empty
/// range, and `quantile`/`quantiles` of numbers, per group and in the project zone. The
/// dataset has fewer than 8192 rows, where ClickHouse's reservoir holds every value and its
/// answer is exact: the mock must give the same instants to the microsecond.
#[test]
fn slice_planning_quantiles_match_clickhouse() {
    check(Group::Quantiles);
}

/// Every group of cases compared real queries and ClickHouse answered each one: a harness that
/// quietly compared nothing (an extraction that sent no query, a translation that failed) fails
/// here. Prints what was compared.
#[test]
fn every_group_compares_queries_that_clickhouse_answered() {
    let Some(f) = fixture() else { return };
    let mut groups: BTreeMap<Group, (usize, &str)> = BTreeMap::new();
    for c in &f.cases {
        groups.entry(c.group).or_insert((0, &c.hogql)).0 += 1;
    }
    let mut compared = String::new();
    for (g, (n, hogql)) in &groups {
        let _ = writeln!(compared, "  {g:?}: {n} queries, e.g. {hogql}");
    }
    let missing: Vec<Group> = Group::ALL
        .iter()
        .filter(|g| !groups.contains_key(g))
        .copied()
        .collect();
    assert!(missing.is_empty(), "no query compared for {missing:?}");
    let unanswered: Vec<&str> = f
        .cases
        .iter()
        .filter(|c| f.clickhouse[&c.id].is_err())
        .map(|c| c.id.as_str())
        .collect();
    assert!(unanswered.is_empty(), "ClickHouse refused {unanswered:?}");
    assert!(
        f.uniq_checked > 0,
        "no query with uniq was checked against ClickHouse's uniq"
    );
    eprintln!(
        "{}: {} queries compared\n{compared}\
         ClickHouse's approximate uniq equals uniqExact in {} of {} queries with uniq",
        f.engine,
        f.cases.len(),
        f.uniq_agrees,
        f.uniq_checked
    );
}

/// The translation binds placeholders as literals and rewrites only what PostHog's compiler
/// rewrites (a unit test of the harness, no ClickHouse needed).
#[test]
fn translation_binds_values_and_compiles_hogql_constructs_as_posthog_does() {
    let values = json!({"t": "2025-01-01T00:00:00.000001Z", "u": "x') or 1=1 --", "n": 7});
    let env = TranslateEnv {
        db: "fixed",
        convert_tz: false,
        now_micros: 1_000_000,
        clamp: 50,
        exact_uniq: true,
    };
    let sql = translate(
        "select uuid, properties.$browser as b, person.properties['a b'] as p, uniq(distinct_id), \
         now() - toIntervalDay({n}) from events where (timestamp, uuid) > (toDateTime({t}), \
         toUUID({u})) order by timestamp, uuid limit 100",
        values.as_object().unwrap(),
        &env,
    )
    .unwrap();
    assert_eq!(
        sql.sql,
        "select uuid, replaceRegexpAll(nullIf(nullIf(JSONExtractRaw(properties, '$browser'), ''), \
         'null'), '^\"|\"$', '') as b, replaceRegexpAll(nullIf(nullIf(JSONExtractRaw(\
         person_properties, 'a b'), ''), 'null'), '^\"|\"$', '') as p, uniqExact(distinct_id), \
         fromUnixTimestamp64Micro(1000000, 'UTC') - toIntervalDay(7) from fixed.events where \
         (timestamp, uuid) > (parseDateTime64BestEffortOrNull('2025-01-01T00:00:00.000001Z', 6, \
         'UTC'), toUUID('x\\') or 1=1 --')) order by timestamp, uuid LIMIT 50"
    );
    assert!(!sql.paginated);
    let env = TranslateEnv {
        convert_tz: true,
        ..env
    };
    let sql = translate("select $start_timestamp from sessions", &Map::new(), &env).unwrap();
    assert_eq!(
        sql.sql,
        "select `$start_timestamp` from fixed.sessions_tz LIMIT 101"
    );
    assert!(sql.paginated);
}

// ---------------------------------------------------------------------------------------------
// Cases: what is run on both sides.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Group {
    PagesTimestamp,
    PagesCreatedAt,
    PagesEventTypes,
    PagesPersons,
    PagesSessions,
    Templates,
    TupleCompare,
    OrderBy,
    DateTimes,
    PropStrings,
    PropNumbers,
    PropNested,
    PropKeys,
    PropNull,
    PersonProps,
    JsonExtract,
    Limit,
    Quantiles,
}

impl Group {
    const ALL: [Group; 18] = [
        Group::PagesTimestamp,
        Group::PagesCreatedAt,
        Group::PagesEventTypes,
        Group::PagesPersons,
        Group::PagesSessions,
        Group::Templates,
        Group::TupleCompare,
        Group::OrderBy,
        Group::DateTimes,
        Group::PropStrings,
        Group::PropNumbers,
        Group::PropNested,
        Group::PropKeys,
        Group::PropNull,
        Group::PersonProps,
        Group::JsonExtract,
        Group::Limit,
        Group::Quantiles,
    ];
}

/// How the rows of a result are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// The ORDER BY is total: compare row by row.
    Total,
    /// No ORDER BY: compare as multisets.
    Unordered,
    /// An ORDER BY with ties on these output columns: the sequence of their values must be
    /// the same row by row, the rows the same as multisets.
    Keys(&'static [usize]),
}

/// Which mock and which ClickHouse database a case runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Data {
    /// Fixed dataset from 2025-01-01 (extraction and probes).
    Fixed,
    /// Dataset relative to the test's start (templates: `now() - toIntervalDay(n)`).
    Recent,
}

impl Data {
    fn db(self) -> &'static str {
        match self {
            Data::Fixed => "fixed",
            Data::Recent => "recent",
        }
    }
}

#[derive(Debug, Clone)]
struct Case {
    id: String,
    group: Group,
    data: Data,
    hogql: String,
    values: Map<String, Value>,
    convert_tz: bool,
    order: Order,
    /// The mock's LIMIT clamp when the case runs.
    clamp: usize,
    /// A page of the first events run on `timestamp` (the page-sequence test walks these).
    first_run: bool,
}

impl Case {
    fn probe(group: Group, id: &str, hogql: &str) -> Case {
        Case {
            id: id.to_owned(),
            group,
            data: Data::Fixed,
            hogql: hogql.to_owned(),
            values: Map::new(),
            convert_tz: false,
            order: Order::Total,
            clamp: DEFAULT_CLAMP,
            first_run: false,
        }
    }

    fn value(mut self, key: &str, value: impl Into<Value>) -> Case {
        self.values.insert(key.to_owned(), value.into());
        self
    }

    fn project_tz(mut self) -> Case {
        self.convert_tz = true;
        self
    }

    fn unordered(mut self) -> Case {
        self.order = Order::Unordered;
        self
    }

    fn body(&self) -> Value {
        json!({
            "query": {
                "kind": "HogQLQuery",
                "query": self.hogql,
                "values": self.values,
                "modifiers": {"convertToProjectTimezone": self.convert_tz},
            },
            "name": format!("differential {}", self.id),
        })
    }
}

/// One side's answer: what PostHog's response carries.
#[derive(Debug, Clone)]
struct Answer {
    columns: Vec<String>,
    types: Vec<String>,
    rows: Vec<Vec<Value>>,
    has_more: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// The fixture: built once, by the first test that needs it.
// ---------------------------------------------------------------------------------------------

struct Fixture {
    engine: String,
    cases: Vec<Case>,
    clickhouse: HashMap<String, Result<Answer, String>>,
    translated: HashMap<String, Result<String, String>>,
    /// Differences per case.
    findings: HashMap<String, Vec<String>>,
    /// Extraction runs that failed, by the group of their pages.
    extraction_failures: Vec<(Group, String)>,
    fixed_uuids: Vec<String>,
    /// The same-timestamp cluster's instant, as the extractor binds it.
    cluster_time: String,
    /// Queries with `uniq`, and how many of them ClickHouse answers the same with `uniq`
    /// (PostHog's) as with `uniqExact` (the comparison's).
    uniq_checked: usize,
    uniq_agrees: usize,
}

/// The fixture, or `None` when chdb is missing and not required (the test then passes).
fn fixture() -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Result<Option<Fixture>, String>> = OnceLock::new();
    let built = FIXTURE.get_or_init(|| {
        if !chdb_available() {
            return Ok(None);
        }
        std::panic::catch_unwind(build_fixture)
            .map(Some)
            .map_err(|e| {
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "building the fixture panicked".to_owned())
            })
    });
    match built {
        Ok(f) => f.as_ref(),
        Err(e) => panic!("the differential fixture could not be built: {e}"),
    }
}

fn chdb_available() -> bool {
    let out = Command::new("python3").args(["-c", "import chdb"]).output();
    let ok = out.as_ref().is_ok_and(|o| o.status.success());
    if !ok {
        let why = match &out {
            Err(e) => format!("python3 could not be run: {e}"),
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        };
        let required = std::env::var("POSTHOG_REQUIRE_EXTERNAL_READERS").as_deref() == Ok("1");
        assert!(
            !required,
            "python3 with chdb is required (POSTHOG_REQUIRE_EXTERNAL_READERS=1) but missing: {why}"
        );
        // Straight to the stderr handle: `cargo test` captures `eprintln!`, and a skipped
        // check must show where a person sees it.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: python3 with chdb not found (pip install chdb): {why}; the ClickHouse \
             differential check did not run (POSTHOG_REQUIRE_EXTERNAL_READERS=1 makes this a \
             failure)"
        );
    }
    ok
}

fn check(group: Group) {
    let Some(f) = fixture() else { return };
    let cases: Vec<&Case> = f.cases.iter().filter(|c| c.group == group).collect();
    assert!(!cases.is_empty(), "no cases in {group:?}");
    let mut report = String::new();
    let mut failed = 0;
    for case in &cases {
        let Some(findings) = f.findings.get(&case.id) else {
            continue;
        };
        if findings.is_empty() {
            continue;
        }
        failed += 1;
        if failed > 3 {
            continue;
        }
        let _ = writeln!(
            report,
            "\n=== {} (against {})\nHogQL: {}\nvalues: {}\nconvertToProjectTimezone: {}\nClickHouse SQL: {}",
            case.id,
            f.engine,
            case.hogql,
            Value::Object(case.values.clone()),
            case.convert_tz,
            match &f.translated[&case.id] {
                Ok(s) => s.clone(),
                Err(e) => format!("<not translated: {e}>"),
            }
        );
        for finding in findings {
            let _ = writeln!(report, "{finding}");
        }
    }
    let runs: Vec<&str> = f
        .extraction_failures
        .iter()
        .filter(|(g, _)| *g == group)
        .map(|(_, e)| e.as_str())
        .collect();
    assert!(
        failed == 0 && runs.is_empty(),
        "{}{failed} of {} {group:?} queries answer differently on the mock and on ClickHouse \
         (first 3 shown):{report}",
        runs.iter().map(|e| format!("{e}\n")).collect::<String>(),
        cases.len()
    );
}

fn build_fixture() -> Fixture {
    let now = OffsetDateTime::now_utc();
    let now = now - time::Duration::nanoseconds(i64::from(now.nanosecond() % 1_000));
    let dir = tempfile::tempdir().expect("temp dir");

    let fixed = fixed_dataset();
    let template_cases = template_cases(&recent_probe_dataset(now));
    let recent = recent_dataset(now, &template_cases);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");

    // The extractor against the fixed dataset; its query bodies become cases.
    let fixed_server = rt
        .block_on(MockServer::start(MockConfig::with_dataset(fixed.clone())))
        .expect("mock starts");
    let (mut cases, extraction_failures) = rt.block_on(extraction_cases(&fixed_server, dir.path()));
    cases.extend(probe_cases(&fixed));
    cases.extend(quantile_cases(&fixed));
    let recent_server = rt
        .block_on(MockServer::start(MockConfig::with_dataset(recent.clone())))
        .expect("mock starts");
    cases.extend(template_cases.into_iter().map(|mut c| {
        c.data = Data::Recent;
        c
    }));

    // Every case against its mock (plain HTTP, so the modifiers are the case's own).
    let mut mock = HashMap::new();
    for case in &cases {
        let server = match case.data {
            Data::Fixed => &fixed_server,
            Data::Recent => &recent_server,
        };
        if server.limit_clamp() != case.clamp {
            server.set_limit_clamp(case.clamp);
        }
        mock.insert(case.id.clone(), post_query(server.addr(), &case.body()));
    }
    let after = OffsetDateTime::now_utc();
    assert!(
        after - now < NOW_MARGIN,
        "the mock's clock moved {} past the instant pinned for ClickHouse: answers of now()-relative \
         templates may differ",
        after - now
    );
    rt.block_on(async {
        fixed_server.shutdown().await;
        recent_server.shutdown().await;
    });

    // Every case translated and run on ClickHouse, in one Python process.
    let now_micros = micros(now);
    let mut translated = HashMap::new();
    for case in &cases {
        let env = TranslateEnv {
            db: case.data.db(),
            convert_tz: case.convert_tz,
            now_micros,
            clamp: case.clamp,
            exact_uniq: true,
        };
        translated.insert(case.id.clone(), translate(&case.hogql, &case.values, &env));
    }
    write_dataset(&dir.path().join("fixed"), &fixed);
    write_dataset(&dir.path().join("recent"), &recent);
    // ClickHouse only: each query with `uniq` as PostHog runs it (approximate), to show that
    // the exact count the comparison uses is what PostHog answers on this data.
    let mut approximate = Vec::new();
    for case in cases.iter().filter(|c| c.hogql.contains("uniq")) {
        let env = TranslateEnv {
            db: case.data.db(),
            convert_tz: case.convert_tz,
            now_micros,
            clamp: case.clamp,
            exact_uniq: false,
        };
        let id = format!("{}{APPROX}", case.id);
        translated.insert(id.clone(), translate(&case.hogql, &case.values, &env));
        approximate.push((case.id.clone(), id));
    }
    let (engine, clickhouse) = run_clickhouse(dir.path(), &translated);
    let uniq_agrees = approximate
        .iter()
        .filter(
            |(exact, approx)| match (&clickhouse[exact], &clickhouse[approx]) {
                (Ok(a), Ok(b)) => a.rows == b.rows,
                _ => false,
            },
        )
        .count();
    let uniq_checked = approximate.len();

    let findings = cases
        .iter()
        .map(|case| {
            let result = compare(case, &mock[&case.id], &clickhouse[&case.id]);
            (case.id.clone(), result)
        })
        .collect();
    let fixed_uuids = fixed.events.iter().map(|e| e.uuid.to_string()).collect();
    let cluster_time = iso_utc(cluster(&fixed).0);
    Fixture {
        engine,
        cases,
        clickhouse,
        translated: translated
            .into_iter()
            .map(|(k, v)| (k, v.map(|t| t.sql)))
            .collect(),
        findings,
        extraction_failures,
        fixed_uuids,
        cluster_time,
        uniq_checked,
        uniq_agrees,
    }
}

// ---------------------------------------------------------------------------------------------
// Data.
// ---------------------------------------------------------------------------------------------

fn fixed_dataset() -> Dataset {
    Dataset::generate(&GenSpec {
        shape: Default::default(),
        seed: 11,
        events: FIXED_EVENTS,
        start: datetime!(2025-01-01 0:00 UTC),
        span: Duration::from_secs(7 * 86_400),
        same_timestamp_cluster: CLUSTER,
        persons: FIXED_PERSONS,
    })
}

fn recent_spec(now: OffsetDateTime) -> GenSpec {
    GenSpec {
        shape: Default::default(),
        seed: 12,
        events: 3_000,
        start: now - time::Duration::days(100),
        span: Duration::from_secs(99 * 86_400),
        same_timestamp_cluster: 0,
        persons: 120,
    }
}

/// The recent dataset before its clean-up: what the template cases pick required values from.
fn recent_probe_dataset(now: OffsetDateTime) -> Dataset {
    Dataset::generate(&recent_spec(now))
}

/// Events over the 100 days before `now`, and persons created over the last 60 days, none
/// within [`NOW_MARGIN`] of `now - k days` for any integer k a template case binds: so no
/// answer depends on the exact instant either side takes as `now()`.
fn recent_dataset(now: OffsetDateTime, cases: &[Case]) -> Dataset {
    let mut d = recent_probe_dataset(now);
    let mut days: BTreeSet<i64> = BTreeSet::new();
    for case in cases {
        days.extend(case.values.values().filter_map(Value::as_i64));
    }
    let near_boundary = |t: OffsetDateTime| {
        days.iter().any(|k| {
            let b = now - time::Duration::days(*k);
            (t - b).abs() < NOW_MARGIN
        })
    };
    d.events.retain(|e| !near_boundary(e.timestamp));
    for (i, p) in d.persons.iter_mut().enumerate() {
        let i = i64::try_from(i).unwrap_or(0);
        let mut at = now
            - time::Duration::days((i * 37) % 60)
            - time::Duration::hours(3)
            - time::Duration::minutes(i);
        while near_boundary(at) {
            at -= NOW_MARGIN;
        }
        p.created_at = at;
    }
    d
}

fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000).expect("fits")
}

/// The JSON text stored in ClickHouse for the mock's `person_properties`, taken from the export
/// shape (an object there; compact, keys sorted: the text the mock serves for
/// `person.properties`). Without the field (a mock without persons-on-events) every event
/// gets `{}`, what PostHog stores for a personless event.
fn person_properties_text(e: &posthog_mock::Event) -> String {
    match e.to_export_json().get("person_properties") {
        Some(Value::String(s)) => s.clone(),
        Some(v @ Value::Object(_)) => v.to_string(),
        _ => "{}".to_owned(),
    }
}

/// Writes `dir/events.jsonl` and `dir/persons.jsonl`: the dataset's rows, times as µs (read
/// from the structs, not from the mock's rendering, so a rendering bug cannot reach both sides).
fn write_dataset(dir: &Path, d: &Dataset) {
    std::fs::create_dir_all(dir).expect("data dir");
    let mut events = String::new();
    for e in &d.events {
        let line = json!({
            "uuid": e.uuid.to_string(),
            "event": e.event,
            "properties": Value::Object(e.properties.clone()).to_string(),
            "timestamp_us": micros(e.timestamp),
            "distinct_id": e.distinct_id,
            "person_id": e.person_id.map(|p| p.to_string()),
            "created_at_us": micros(e.created_at),
            "elements_chain": e.elements_chain,
            "person_properties": person_properties_text(e),
        });
        events.push_str(&line.to_string());
        events.push('\n');
    }
    std::fs::write(dir.join("events.jsonl"), events).expect("events written");
    let mut persons = String::new();
    for p in &d.persons {
        let line = json!({
            "id": p.id.to_string(),
            "created_at_us": micros(p.created_at),
            "properties": Value::Object(p.properties.clone()).to_string(),
            "is_identified": p.is_identified,
        });
        persons.push_str(&line.to_string());
        persons.push('\n');
    }
    std::fs::write(dir.join("persons.jsonl"), persons).expect("persons written");
}

// ---------------------------------------------------------------------------------------------
// Case sources: the extractor, the templates, the probes.
// ---------------------------------------------------------------------------------------------

fn extract_config(server: &MockServer, source: Value) -> ExtractConfig {
    ExtractConfig::from_value(json!({
        "resolved_connection": {
            "api_key": KEY, "project_id": "1", "region": "self_hosted",
            "custom_base_url": server.base_url(),
        },
        "config": {"source": source, "destination": {}},
        "output": {"format": "jsonl"},
        "performance": {"batch_size": 500, "retries": {"max_attempts": 2, "backoff_factor": 0.01}},
    }))
    .expect("extraction config is valid")
}

/// Runs the real extractor and turns every query body the mock received into a case; also
/// returns the runs that failed.
async fn extraction_cases(server: &MockServer, dir: &Path) -> (Vec<Case>, Vec<(Group, String)>) {
    let mut failures = Vec::new();
    let since = "2024-12-01T00:00:00Z";
    let runs: [(Group, &str, Value, usize); 6] = [
        (
            Group::PagesTimestamp,
            "events_ts",
            json!({"data_type": "events", "page_size": 100, "initial_since": since,
                   "lookback_window_minutes": 15}),
            2,
        ),
        (
            Group::PagesCreatedAt,
            "events_created_at",
            json!({"data_type": "events", "page_size": 100, "initial_since": since,
                   "incremental_field": "created_at"}),
            1,
        ),
        (
            Group::PagesEventTypes,
            "events_types",
            json!({"data_type": "events", "page_size": 100, "initial_since": since,
                   "event_types": ["$pageview", "purchase"]}),
            1,
        ),
        (
            Group::PagesPersons,
            "persons_snapshot",
            json!({"data_type": "persons", "page_size": 100}),
            1,
        ),
        (
            Group::PagesPersons,
            "persons_created_at",
            json!({"data_type": "persons", "page_size": 100, "incremental_field": "created_at",
                   "initial_since": "2000-01-01T00:00:00Z"}),
            1,
        ),
        (
            Group::PagesSessions,
            "sessions",
            json!({"data_type": "sessions", "page_size": 100,
                   "initial_since": "2000-01-01T00:00:00Z"}),
            1,
        ),
    ];
    let mut cases = Vec::new();
    for (group, name, source, times) in runs {
        let config = extract_config(server, source);
        let mut store = MemoryStore::new();
        let out = dir.join(name);
        for run in 0..times {
            let before = server.requests().len();
            // A failed run is reported by its group's test; the pages it sent are still
            // compared (they show where the mock went wrong).
            if let Err(e) = PostHogDriver
                .run(
                    &config,
                    &mut store,
                    &Context::new(&out).with_rate_limits(RateLimits::unlimited()),
                )
                .await
            {
                failures.push((group, format!("extraction {name} run {run} failed: {e}")));
            }
            let bodies: Vec<Value> = server.requests()[before..]
                .iter()
                .filter(|r| r.path.contains("/query"))
                .filter_map(|r| r.body.clone())
                .collect();
            assert!(!bodies.is_empty(), "extraction {name} sent no query");
            for (page, body) in bodies.into_iter().enumerate() {
                let q = &body["query"];
                cases.push(Case {
                    id: format!("{name}/run{run}/page{page:03}"),
                    group,
                    data: Data::Fixed,
                    hogql: q["query"].as_str().expect("query text").to_owned(),
                    values: q["values"].as_object().cloned().unwrap_or_default(),
                    convert_tz: q["modifiers"]["convertToProjectTimezone"] == true,
                    // Every keyset ORDER BY ends with the unique id.
                    order: Order::Total,
                    clamp: DEFAULT_CLAMP,
                    first_run: name == "events_ts" && run == 0,
                });
            }
        }
    }
    (cases, failures)
}

/// Every template bound with its defaults; required parameters get values present in `data`.
/// `ORDER BY` of the templates is total (its keys include the GROUP BY key) except where noted.
fn template_cases(data: &Dataset) -> Vec<Case> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for e in &data.events {
        *counts.entry(e.distinct_id.as_str()).or_default() += 1;
    }
    let busiest = counts
        .iter()
        .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))
        .map(|(id, _)| (*id).to_owned())
        .expect("events");
    let required: &[(&str, &[(&str, &str)])] = &[
        (
            "experiment_results",
            &[("flag_key", "new-onboarding"), ("goal_event", "purchase")],
        ),
        (
            "feature_impact",
            &[("event", "$pageview"), ("property", "$browser")],
        ),
        (
            "funnel_conversion",
            &[("step_1", "$pageview"), ("step_2", "purchase")],
        ),
        (
            "property_values",
            &[("event", "$pageview"), ("property", "$browser")],
        ),
        ("user_timeline", &[("distinct_id", "")]),
    ];
    let mut cases = Vec::new();
    for t in templates::all() {
        let vars: Vec<(&str, String)> = required
            .iter()
            .find(|(name, _)| *name == t.name)
            .map(|(_, vars)| {
                vars.iter()
                    .map(|(k, v)| {
                        let v = if *k == "distinct_id" {
                            busiest.clone()
                        } else {
                            (*v).to_owned()
                        };
                        (*k, v)
                    })
                    .collect()
            })
            .unwrap_or_default();
        push_template(&mut cases, t.name, &vars, "defaults");
    }
    // The same templates on a property whose JSON type changes from row to row.
    for name in ["feature_impact", "property_values"] {
        push_template(
            &mut cases,
            name,
            &[
                ("event", "$pageview".into()),
                ("property", "plan_price".into()),
            ],
            "plan_price",
        );
    }
    cases
}

fn push_template(cases: &mut Vec<Case>, name: &str, vars: &[(&str, String)], label: &str) {
    let t = templates::find(name).expect("template exists");
    let q = t
        .bind(vars.iter().map(|(k, v)| (*k, v.clone())))
        .unwrap_or_else(|e| panic!("template {name} binds: {e}"));
    let order = match name {
        // By counts only (users, events): groups with equal counts are in any order.
        "device_breakdown" => Order::Keys(&[2, 3]),
        // By timestamp only: one user's events at one instant are in any order.
        "user_timeline" => Order::Keys(&[0]),
        _ => Order::Total,
    };
    cases.push(Case {
        id: format!("template/{name}/{label}"),
        group: Group::Templates,
        data: Data::Recent,
        hogql: q.text().to_owned(),
        values: q.values().clone(),
        convert_tz: false,
        order,
        clamp: DEFAULT_CLAMP,
        first_run: false,
    });
}

/// ClickHouse's UUID order: the second 64-bit half first.
fn ch_uuid_key(u: &uuid::Uuid) -> (u64, u64) {
    let (hi, lo) = u.as_u64_pair();
    (lo, hi)
}

fn iso_utc(t: OffsetDateTime) -> String {
    let mut s = String::new();
    posthog_core::format_timestamp(micros(t), &mut s);
    s
}

/// The same-timestamp cluster: its instant and its events' UUIDs.
fn cluster(d: &Dataset) -> (OffsetDateTime, Vec<uuid::Uuid>) {
    let mut per_ts: HashMap<OffsetDateTime, Vec<uuid::Uuid>> = HashMap::new();
    for e in &d.events {
        per_ts.entry(e.timestamp).or_default().push(e.uuid);
    }
    let (at, uuids) = per_ts
        .into_iter()
        .max_by_key(|(t, v)| (v.len(), *t))
        .expect("events");
    assert!(uuids.len() >= CLUSTER, "the cluster is there");
    (at, uuids)
}

fn probe_cases(d: &Dataset) -> Vec<Case> {
    let mut cases = Vec::new();
    let all = "limit 50000";

    // --- tuple comparison inside the cluster -----------------------------------------------
    let (cluster_ts, mut cluster) = cluster(d);
    cluster.sort_by_key(|u| u.to_string());
    let cursor = cluster[cluster.len() / 2];
    // The probe can tell the orders apart only if they disagree on which rows follow it.
    let after_ch: BTreeSet<_> = cluster
        .iter()
        .filter(|u| ch_uuid_key(u) > ch_uuid_key(&cursor))
        .collect();
    let after_str: BTreeSet<_> = cluster
        .iter()
        .filter(|u| u.to_string() > cursor.to_string())
        .collect();
    assert_ne!(
        after_ch, after_str,
        "cursor choice cannot tell UUID orders apart"
    );
    let t = iso_utc(cluster_ts);
    let u = cursor.to_string();
    for (id, hogql) in [
        (
            "after_cursor_in_cluster",
            "select uuid, timestamp from events where (timestamp, uuid) > (toDateTime({t}), \
             toUUID({u})) order by timestamp, uuid limit 400",
        ),
        (
            "at_or_after_cursor_in_cluster",
            "select uuid from events where (timestamp, uuid) >= (toDateTime({t}), toUUID({u})) \
             and timestamp <= toDateTime({t}) order by timestamp, uuid limit 400",
        ),
        (
            "before_cursor_in_cluster_desc",
            "select uuid from events where (timestamp, uuid) < (toDateTime({t}), toUUID({u})) \
             and timestamp >= toDateTime({t}) order by timestamp desc, uuid desc limit 400",
        ),
        (
            "uuid_greater_than_in_cluster",
            "select uuid from events where timestamp = toDateTime({t}) and uuid > toUUID({u}) \
             order by uuid limit 400",
        ),
    ] {
        cases.push(
            Case::probe(Group::TupleCompare, &format!("probe/{id}"), hogql)
                .value("t", t.clone())
                .value("u", u.clone()),
        );
    }
    let mut ids: Vec<String> = d.persons.iter().map(|p| p.id.to_string()).collect();
    ids.sort();
    cases.push(
        Case::probe(
            Group::TupleCompare,
            "probe/persons_id_after_string_median",
            "select id from persons where id > toUUID({u}) order by id limit 1000",
        )
        .value("u", ids[ids.len() / 2].clone()),
    );

    // --- order by ----------------------------------------------------------------------------
    cases.push(Case::probe(
        Group::OrderBy,
        "probe/order_by_timestamp_uuid",
        &format!("select uuid, timestamp from events order by timestamp, uuid {all}"),
    ));
    cases.push(Case::probe(
        Group::OrderBy,
        "probe/order_by_created_at_uuid_desc",
        &format!("select uuid, created_at from events order by created_at desc, uuid desc {all}"),
    ));
    cases.push(Case::probe(
        Group::OrderBy,
        "probe/order_by_person_id",
        &format!("select id from persons order by id {all}"),
    ));

    // --- date-times ----------------------------------------------------------------------------
    let stamps = "select uuid, timestamp, created_at from events order by timestamp, uuid";
    cases.push(Case::probe(
        Group::DateTimes,
        "probe/event_times_utc",
        &format!("{stamps} {all}"),
    ));
    cases.push(
        Case::probe(
            Group::DateTimes,
            "probe/event_times_project_tz",
            &format!("{stamps} {all}"),
        )
        .project_tz(),
    );
    let persons = "select id, created_at from persons order by id";
    cases.push(Case::probe(
        Group::DateTimes,
        "probe/person_times_utc",
        &format!("{persons} {all}"),
    ));
    cases.push(
        Case::probe(
            Group::DateTimes,
            "probe/person_times_project_tz",
            &format!("{persons} {all}"),
        )
        .project_tz(),
    );
    let sessions =
        "select session_id, $start_timestamp, $end_timestamp from sessions order by session_id";
    cases.push(Case::probe(
        Group::DateTimes,
        "probe/session_times_utc",
        &format!("{sessions} {all}"),
    ));
    cases.push(
        Case::probe(
            Group::DateTimes,
            "probe/session_times_project_tz",
            &format!("{sessions} {all}"),
        )
        .project_tz(),
    );
    let literals = "select toDateTime({whole}) as whole, toDateTime({frac}) as frac, \
                    toDateTime({micro}) as micro, toDateTime({offset}) as with_offset, \
                    toDateTime({naive}) as naive, toDateTime({bad}) as unparsable \
                    from events limit 1";
    for (id, tz) in [("utc", false), ("project_tz", true)] {
        let mut case = Case::probe(
            Group::DateTimes,
            &format!("probe/datetime_literals_{id}"),
            literals,
        )
        .value("whole", "2025-01-02T03:04:05Z")
        .value("frac", "2025-01-02T03:04:05.120000Z")
        .value("micro", "2025-01-02T03:04:05.000001Z")
        .value("offset", "2025-01-02T08:34:05.5+05:30")
        .value("naive", "2025-01-02 03:04:05")
        .value("bad", "not a date");
        case.convert_tz = tz;
        cases.push(case);
    }
    let days = "select toDate(timestamp) as day, toStartOfWeek(timestamp) as week, count() as n \
                from events group by day, week order by day";
    cases.push(Case::probe(Group::DateTimes, "probe/to_date_utc", days));
    cases.push(Case::probe(Group::DateTimes, "probe/to_date_project_tz", days).project_tz());

    // --- property access -----------------------------------------------------------------------
    let props = |group: Group, id: &str, cols: &str| {
        Case::probe(
            group,
            &format!("probe/{id}"),
            &format!("select uuid, {cols} from events order by timestamp, uuid {all}"),
        )
    };
    cases.push(props(
        Group::PropStrings,
        "prop_strings",
        "properties.$browser as browser, properties.title as title, \
         properties.$exception_message as exception_message, properties.$current_url as url, \
         properties.$insert_id as insert_id, properties['$feature/new-onboarding'] as flag, \
         properties.long_text as long_text",
    ));
    cases.push(props(
        Group::PropNumbers,
        "prop_numbers_bools",
        "properties.plan_price as plan_price, properties.$screen_width as width, \
         properties.$time as t, properties.revenue as revenue, \
         properties.$process_person_profile as person_profile, \
         properties.duration_ms as duration_ms",
    ));
    cases.push(props(
        Group::PropNested,
        "prop_nested",
        "properties.$set as set_object, properties.$set.nested as nested, \
         properties.$set.nested.depth as depth, properties.$set.nested.list as list, \
         properties.tags as tags, properties.cart as cart, properties.$set_once as set_once",
    ));
    cases.push(props(
        Group::PropKeys,
        "prop_keys",
        "properties['key with spaces'] as spaced, properties['dotted.key'] as dotted, \
         properties['dash-key'] as dashed, properties.$geoip_city_name as city, \
         properties.$el_text as el_text, properties.$pathname as pathname, \
         properties.utm_campaign as campaign",
    ));
    cases.push(props(
        Group::PropNull,
        "prop_null_missing",
        "properties.utm_source as utm_source, properties.referral_code as referral_code, \
         properties.no_such_key as missing, properties.$set.no_such_key as missing_nested, \
         properties.$browser.deeper as into_a_string",
    ));
    cases.push(
        Case::probe(
            Group::PropStrings,
            "probe/prop_in_where_and_group_by",
            "select properties.$browser as browser, count() as n from events \
             where properties.$os = {os} group by browser order by browser",
        )
        .value("os", "Mac OS X"),
    );

    // --- person.properties on events -------------------------------------------------------------
    cases.push(props(
        Group::PersonProps,
        "person_properties",
        "person_id, person.properties as person_properties, person.properties.plan as plan, \
         person.properties.visits as visits, person.properties['favourite colour'] as colour, \
         person.properties['país'] as pais, person.properties.preferences.theme as theme, \
         person.properties.nickname as nickname, person.properties.lifetime_value as ltv, \
         person.properties.is_beta as beta, person.properties.name as name",
    ));
    cases.push(Case::probe(
        Group::PersonProps,
        "probe/person_plan_breakdown",
        "select person.properties.plan as plan, count() as n from events \
             group by plan order by plan",
    ));

    // --- JSONExtract* --------------------------------------------------------------------------
    cases.push(
        props(
            Group::JsonExtract,
            "json_extract_string",
            "JSONExtractString(properties, 'title') as title, \
             JSONExtractString(properties, '$browser') as browser, \
             JSONExtractString(properties, 'plan_price') as plan_price, \
             JSONExtractString(properties, '$set', 'plan') as set_plan, \
             JSONExtractString(properties, 'key with spaces') as spaced, \
             JSONExtractString(properties, 'utm_source') as utm_source, \
             JSONExtractString(properties, 'no_such_key') as missing, \
             JSONExtractString(properties, {key}) as by_placeholder",
        )
        .value("key", "$geoip_city_name"),
    );
    cases.push(props(
        Group::JsonExtract,
        "json_extract_string_non_strings",
        "JSONExtractString(properties, '$screen_width') as width, \
         JSONExtractString(properties, '$process_person_profile') as person_profile, \
         JSONExtractString(properties, '$set') as set_object, \
         JSONExtractString(properties, '$feature/new-onboarding') as flag",
    ));
    cases.push(props(
        Group::JsonExtract,
        "json_extract_numbers",
        "JSONExtractInt(properties, 'plan_price') as price_int, \
         JSONExtractFloat(properties, 'plan_price') as price_float, \
         JSONExtractInt(properties, '$screen_width') as width, \
         JSONExtractFloat(properties, '$time') as t, \
         JSONExtractInt(properties, '$set', 'nested', 'depth') as depth",
    ));
    // JSON texts the generated data lacks, bound as values: how ClickHouse writes numbers
    // (exponents, zero fractions, -0, UInt64), escapes (control characters, \u2028, `\/`,
    // `\u00e9`), whitespace and nesting back, and which strings it reads as numbers. Keys are
    // in sorted order (the mock parses a JSON text into a sorted map).
    let docs = [
        r#"{"a": 1e5}"#,
        r#"{"a":2.50}"#,
        r#"{"a":-0.0}"#,
        r#"{"a":1e21}"#,
        r#"{"a":1e20}"#,
        r#"{"a":1e-7}"#,
        r#"{"a":0.000001}"#,
        r#"{"a":1.5e300}"#,
        r#"{"a":123456789.123456789}"#,
        r#"{"a":18446744073709551615}"#,
        r#"{"a":-9223372036854775808}"#,
        r#"{"a":-42.9}"#,
        r#"{"a":true}"#,
        r#"{"a":null}"#,
        r#"{"a":"x\ty\u00e9\u0001\u001f\u2028\/\"q\"\\"}"#,
        r#"{"a": { "b" : [1.0, 2.50, "\u00e9\n\u000b", null, false, {}, [ ]], "c":{"d":1e21} } }"#,
        r#"{"a":"4e2"}"#,
        r#"{"a":" 42"}"#,
        r#"{"a":"-9223372036854775809"}"#,
        r#"{"a":".5"}"#,
        r#"{"a":"Infinity"}"#,
    ];
    let mut cols = Vec::new();
    let mut case = Case::probe(Group::JsonExtract, "probe/json_extract_constant_docs", "");
    for (i, doc) in docs.iter().enumerate() {
        cols.push(format!(
            "JSONExtractString({{d{i}}}, 'a') as s{i}, JSONExtractInt({{d{i}}}, 'a') as i{i}, \
             JSONExtractFloat({{d{i}}}, 'a') as f{i}"
        ));
        case = case.value(&format!("d{i}"), *doc);
    }
    case.hogql = format!("select {} from events limit 1", cols.join(", "));
    cases.push(case);

    // --- LIMIT and the clamp -------------------------------------------------------------------
    let page = "select uuid, timestamp from events order by timestamp, uuid";
    for n in [0, 1, 100, 3_001, 60_000] {
        cases.push(Case::probe(
            Group::Limit,
            &format!("probe/limit_{n}"),
            &format!("{page} limit {n}"),
        ));
    }
    cases.push(Case::probe(Group::Limit, "probe/no_limit", page));
    for n in [100, PROBE_CLAMP, 1_000] {
        let mut case = Case::probe(
            Group::Limit,
            &format!("probe/limit_{n}_clamp_{PROBE_CLAMP}"),
            &format!("{page} limit {n}"),
        );
        case.clamp = PROBE_CLAMP;
        cases.push(case);
    }
    let mut case = Case::probe(
        Group::Limit,
        &format!("probe/limit_bound_clamp_{PROBE_CLAMP}"),
        &format!("{page} limit {{n}}"),
    )
    .value("n", 1_000);
    case.clamp = PROBE_CLAMP;
    cases.push(case);
    cases.push(
        Case::probe(
            Group::Limit,
            "probe/limit_in_subquery_is_not_clamped",
            "select count() as n from (select uuid from events order by timestamp, uuid \
             limit 1000)",
        )
        .unordered(),
    );
    if let Some(c) = cases.last_mut() {
        c.clamp = PROBE_CLAMP;
    }
    cases
}

/// `1/k, 2/k, …, (k-1)/k`: the levels of a k-slice plan, written as Rust writes an `f64`
/// (`0.5`, `0.3333333333333333`, `0.125`).
fn slice_levels(k: u32) -> String {
    (1..k)
        .map(|i| (f64::from(i) / f64::from(k)).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The slice-planning query of issue 16 over ranges of the fixed dataset (see
/// [`slice_planning_quantiles_match_clickhouse`]), its time bounds written as the extractor's
/// keyset queries write them (`column >= toDateTime({since})`, UTC strings bound as values).
fn quantile_cases(d: &Dataset) -> Vec<Case> {
    assert!(
        d.events.len() <= 8192,
        "ClickHouse's quantile is exact (every value in its reservoir) only up to 8192 rows"
    );
    let plan = |column: &str, k: u32, filter: &str| {
        format!(
            "select count() as n, quantiles({})({column}) as bounds from events where \
             {column} >= toDateTime({{since}}) and {column} < toDateTime({{until}}){filter}",
            slice_levels(k)
        )
    };
    let mut cases = Vec::new();
    let columns: [(&str, Vec<OffsetDateTime>); 2] = [
        ("timestamp", d.events.iter().map(|e| e.timestamp).collect()),
        (
            "created_at",
            d.events.iter().map(|e| e.created_at).collect(),
        ),
    ];
    for (column, mut instants) in columns {
        instants.sort();
        let n = instants.len();
        // A run's range cutting through the data at both ends, all of it, and nothing.
        let inside = (iso_utc(instants[n / 5]), iso_utc(instants[n * 4 / 5]));
        let all = (
            "2024-12-01T00:00:00Z".to_owned(),
            iso_utc(instants[n - 1] + time::Duration::seconds(1)),
        );
        let empty = (inside.0.clone(), inside.0.clone());
        let ranges = [("inside", &inside), ("all", &all), ("empty", &empty)];
        for k in [2, 3, 8] {
            for (label, (since, until)) in ranges {
                cases.push(
                    Case::probe(
                        Group::Quantiles,
                        &format!("quantiles/{column}/{k}_slices/{label}"),
                        &plan(column, k, ""),
                    )
                    .value("since", since.clone())
                    .value("until", until.clone()),
                );
            }
        }
        // With the extractor's `event_types` filter.
        for (label, (since, until)) in [("inside", &inside), ("empty", &empty)] {
            cases.push(
                Case::probe(
                    Group::Quantiles,
                    &format!("quantiles/{column}/3_slices/event_types/{label}"),
                    &plan(column, 3, " and event in ({event_0}, {event_1})"),
                )
                .value("since", since.clone())
                .value("until", until.clone())
                .value("event_0", "$pageview")
                .value("event_1", "purchase"),
            );
        }
    }
    cases.extend(more_quantile_cases(d));
    cases
}

/// Quantiles beyond the planning query: in the project zone, with the literal style
/// `toDateTime64('…', 6, 'UTC')`, per group, with `-If`, of Dates and of numbers.
fn more_quantile_cases(d: &Dataset) -> Vec<Case> {
    let mut ts: Vec<OffsetDateTime> = d.events.iter().map(|e| e.timestamp).collect();
    ts.sort();
    let (since, until) = (iso_utc(ts[ts.len() / 3]), iso_utc(ts[ts.len() * 2 / 3]));
    let range = "timestamp >= toDateTime({since}) and timestamp < toDateTime({until})";
    let numbers = format!(
        "select count() as n, \
         quantiles(0, 0.1, 0.5, 0.9, 1)(JSONExtractInt(properties, '$screen_width')) as widths, \
         quantile(0.5)(JSONExtractFloat(properties, 'plan_price')) as price, \
         quantiles(0.25, 0.75)(length(event)) as name_lengths from events where {range}"
    );
    let probes = [
        (
            "quantiles/timestamp/3_slices/project_tz",
            format!(
                "select count() as n, quantiles({})(timestamp) as bounds from events where {range}",
                slice_levels(3)
            ),
        ),
        (
            "quantiles/timestamp/datetime64_literals",
            format!(
                "select count() as n, quantiles({})(timestamp) as bounds from events where \
                 timestamp >= toDateTime64('2025-01-02 03:04:05.123456', 6, 'UTC') and \
                 timestamp < toDateTime64('2025-01-05 00:00:00', 6, 'UTC')",
                slice_levels(8)
            ),
        ),
        (
            "quantiles/per_event",
            "select event, count() as n, quantiles(0.25, 0.5, 0.75)(created_at) as q, \
             quantile(0.5)(timestamp) as median from events group by event order by event"
                .to_owned(),
        ),
        (
            "quantiles/if",
            "select quantileIf(0.5)(timestamp, event = 'purchase') as purchase, \
             quantilesIf(0.9)(created_at, event = '$pageview') as pageview, \
             quantileIf(0.5)(timestamp, event = 'no such event') as no_rows from events"
                .to_owned(),
        ),
        (
            "quantiles/dates",
            format!(
                "select quantiles(0.2, 0.5, 0.8)(toDate(timestamp)) as days from events where {range}"
            ),
        ),
        ("quantiles/numbers", numbers.clone()),
        ("quantiles/numbers/empty", numbers),
    ];
    probes
        .into_iter()
        .map(|(id, hogql)| {
            let case = Case::probe(Group::Quantiles, id, &hogql).value("since", since.clone());
            match id {
                "quantiles/numbers/empty" => case.value("until", since.clone()),
                "quantiles/timestamp/3_slices/project_tz" => {
                    case.value("until", until.clone()).project_tz()
                }
                _ => case.value("until", until.clone()),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The mock side: a plain HTTP/1.1 POST, so the case's modifiers are sent as they are.
// ---------------------------------------------------------------------------------------------

fn post_query(addr: SocketAddr, body: &Value) -> Result<Answer, String> {
    let payload = body.to_string();
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "POST /api/projects/1/query/ HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(payload.as_bytes()))
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP header end")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body)?;
    }
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let text = String::from_utf8_lossy(&body).into_owned();
    if status != 200 {
        return Err(format!("HTTP {status}: {text}"));
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON ({e}): {text}"))?;
    Ok(Answer {
        columns: strings(&v["columns"]),
        types: v["types"]
            .as_array()
            .map(|ts| {
                ts.iter()
                    .map(|t| t[1].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default(),
        rows: rows(&v["results"]),
        has_more: v["hasMore"].as_bool(),
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk")?;
        let size_text = String::from_utf8_lossy(&data[..end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("bad chunk size: {e}"))?;
        data = &data[end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or("short chunk")?);
        data = data.get(size + 2..).ok_or("short chunk")?;
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().map_or_else(|| s.to_string(), str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn rows(v: &Value) -> Vec<Vec<Value>> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|r| r.as_array().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// HogQL → ClickHouse SQL.
// ---------------------------------------------------------------------------------------------

/// What a translation depends on besides the query.
#[derive(Debug, Clone, Copy)]
struct TranslateEnv {
    /// The ClickHouse database holding the case's data.
    db: &'static str,
    /// `modifiers.convertToProjectTimezone`: DateTime columns in the project zone, and the
    /// zone of `toDateTime`/`now()`.
    convert_tz: bool,
    /// The instant both sides take as `now()`, µs.
    now_micros: i64,
    /// The LIMIT clamp.
    clamp: usize,
    /// `uniq` → `uniqExact` (the comparison); false keeps ClickHouse's approximate `uniq`.
    exact_uniq: bool,
}

#[derive(Debug, Clone)]
struct Translated {
    sql: String,
    /// No top-level LIMIT: PostHog's paginator asked for 101 rows; the answer keeps 100 and
    /// sets `hasMore`.
    paginated: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A bare identifier or keyword (may contain `$`).
    Ident(String),
    /// A backtick or double-quoted identifier.
    Quoted(String),
    /// A string literal, unescaped.
    Str(String),
    Num(String),
    /// `{name}`.
    Placeholder(String),
    Punct(String),
}

fn lex(text: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated string".into()),
                    Some('\\') => {
                        let e = *chars.get(i + 1).ok_or("bad escape")?;
                        s.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            '0' => '\0',
                            other => other,
                        });
                        i += 2;
                    }
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        s.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        s.push(*ch);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(s));
        } else if c == '`' || c == '"' {
            let end = chars[i + 1..]
                .iter()
                .position(|x| *x == c)
                .ok_or("unterminated identifier")?;
            out.push(Tok::Quoted(chars[i + 1..i + 1 + end].iter().collect()));
            i += end + 2;
        } else if c == '{' {
            let end = chars[i + 1..]
                .iter()
                .position(|x| *x == '}')
                .ok_or("unterminated placeholder")?;
            out.push(Tok::Placeholder(
                chars[i + 1..i + 1 + end]
                    .iter()
                    .collect::<String>()
                    .trim()
                    .to_owned(),
            ));
            i += end + 2;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            out.push(Tok::Num(chars[start..i].iter().collect()));
        } else if c.is_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            if [">=", "<=", "!=", "<>", "==", "||"].contains(&two.as_str()) {
                out.push(Tok::Punct(two));
                i += 2;
            } else {
                out.push(Tok::Punct(c.to_string()));
                i += 1;
            }
        }
    }
    Ok(out)
}

/// A ClickHouse string literal.
fn ch_string(s: &str) -> String {
    let mut out = String::from("'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn ch_literal(v: &Value) -> Result<String, String> {
    Ok(match v {
        Value::String(s) => ch_string(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "NULL".into(),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(ch_literal)
                .collect::<Result<Vec<_>, _>>()?
                .join(", ")
        ),
        Value::Object(_) => return Err("an object value has no HogQL literal".into()),
    })
}

/// PostHog's JSON property read (`posthog/hogql/printer`: `_unsafe_json_extract_trim_quotes`,
/// the fallback for properties without a materialised column; materialised columns hold the
/// same expression computed at ingestion): the raw JSON text of the value, `''` and `null` as
/// NULL, one leading and one trailing `"` removed. Escapes inside strings stay escaped.
fn property_sql(column: &str, keys: &[String]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| ch_string(k)).collect();
    format!(
        "replaceRegexpAll(nullIf(nullIf(JSONExtractRaw({column}, {}), ''), 'null'), '^\"|\"$', '')",
        keys.join(", ")
    )
}

/// Translates HogQL to the ClickHouse SQL PostHog compiles it to, for the constructs our
/// queries use. The table (PostHog's printer is `posthog/hogql/printer`; "tz" is the project
/// zone with `convertToProjectTimezone`, else `UTC`):
///
/// | HogQL | ClickHouse |
/// |---|---|
/// | `{name}` | the bound value as a literal (`'…'` escaped, numbers, `true`/`false`, NULL) |
/// | `events` / `persons` / `sessions` after FROM | `<db>.events` …; with `convertToProjectTimezone`, views whose DateTime64 columns are `toTimeZone(col, tz)` (HogQL wraps every DateTime field so) |
/// | `toDateTime(x)`, `toDateTime(x, z)` on a string | `parseDateTime64BestEffortOrNull(x, 6, tz)` / `(x, 6, z)` |
/// | `now()` | `fromUnixTimestamp64Micro(<pinned instant>, tz)` (PostHog: `now64(6, tz)`) |
/// | `today()` | `toDate(fromUnixTimestamp64Micro(<pinned instant>, tz))` |
/// | `properties.a.b`, `properties['a b']` | `replaceRegexpAll(nullIf(nullIf(JSONExtractRaw(properties, 'a', 'b'), ''), 'null'), '^"\|"$', '')` |
/// | `person.properties` / `person.properties.x` | `person_properties` (persons-on-events column) / the same extraction on it |
/// | `uniq(x)` / `uniqIf` | `uniqExact(x)` / `uniqExactIf`: ClickHouse's `uniq` is approximate; the counts here are small enough that PostHog's answer is exact in practice, and exactness is what the mock promises |
/// | `$name` identifiers | `` `$name` `` |
/// | top-level `LIMIT n` | `LIMIT min(n, clamp)` (PostHog's printer clamps a constant top-level LIMIT) |
/// | no top-level LIMIT | `LIMIT 101`, then 100 rows and `hasMore` (PostHog's paginator) |
/// | everything else (`toUUID`, `toDate`, `toDateTime64`, `toStartOfWeek`, `toIntervalDay`, `count`, `countIf`, `quantiles(…)(…)`, `JSONExtract*`, `round`, `greatest`, tuples, …) | unchanged: HogQL passes these functions through |
fn translate(
    hogql: &str,
    values: &Map<String, Value>,
    env: &TranslateEnv,
) -> Result<Translated, String> {
    let toks = lex(hogql.trim().trim_end_matches(';'))?;
    let tz = if env.convert_tz { PROJECT_TZ } else { "UTC" };
    let suffix = if env.convert_tz { "_tz" } else { "" };
    let literal = |t: &Tok| -> Result<String, String> {
        match t {
            Tok::Str(s) => Ok(ch_string(s)),
            Tok::Placeholder(p) => values
                .get(p)
                .ok_or_else(|| format!("no value for {{{p}}}"))
                .and_then(ch_literal),
            other => Err(format!("expected a literal, found {other:?}")),
        }
    };
    let mut out: Vec<String> = Vec::new();
    let mut depth = 0usize;
    let mut has_limit = false;
    let mut i = 0;
    let is = |i: usize, p: &str| matches!(toks.get(i), Some(Tok::Punct(x)) if x == p);
    let ident = |i: usize| match toks.get(i) {
        Some(Tok::Ident(x)) => Some(x.as_str()),
        _ => None,
    };
    while i < toks.len() {
        let tok = &toks[i];
        // A JSON column, maybe followed by a path into it.
        let column = match tok {
            Tok::Ident(x) if x == "properties" => Some(("properties", 1)),
            Tok::Ident(x)
                if (x == "person" || x == "poe")
                    && is(i + 1, ".")
                    && ident(i + 2) == Some("properties") =>
            {
                Some(("person_properties", 3))
            }
            _ => None,
        };
        if let Some((column, used)) = column {
            i += used;
            let mut keys = Vec::new();
            loop {
                if is(i, ".") {
                    match toks.get(i + 1) {
                        Some(Tok::Ident(k) | Tok::Quoted(k) | Tok::Num(k)) => {
                            keys.push(k.clone());
                            i += 2;
                        }
                        _ => break,
                    }
                } else if is(i, "[") && is(i + 2, "]") {
                    match toks.get(i + 1) {
                        Some(Tok::Str(k)) => keys.push(k.clone()),
                        Some(Tok::Placeholder(p)) => keys.push(
                            values
                                .get(p)
                                .and_then(Value::as_str)
                                .ok_or_else(|| format!("no string value for {{{p}}}"))?
                                .to_owned(),
                        ),
                        _ => break,
                    }
                    i += 3;
                } else {
                    break;
                }
            }
            out.push(if keys.is_empty() {
                column.to_owned()
            } else {
                property_sql(column, &keys)
            });
            continue;
        }
        match tok {
            Tok::Ident(x) if x == "toDateTime" && is(i + 1, "(") => {
                let arg = literal(toks.get(i + 2).ok_or("toDateTime(")?)?;
                if is(i + 3, ")") {
                    out.push(format!(
                        "parseDateTime64BestEffortOrNull({arg}, 6, {})",
                        ch_string(tz)
                    ));
                    i += 4;
                } else if is(i + 3, ",") && is(i + 5, ")") {
                    let zone = literal(toks.get(i + 4).ok_or("toDateTime(x,")?)?;
                    out.push(format!("parseDateTime64BestEffortOrNull({arg}, 6, {zone})"));
                    i += 6;
                } else {
                    return Err("toDateTime of something other than a literal".into());
                }
            }
            Tok::Ident(x) if (x == "now" || x == "today") && is(i + 1, "(") && is(i + 2, ")") => {
                let now = format!(
                    "fromUnixTimestamp64Micro({}, {})",
                    env.now_micros,
                    ch_string(tz)
                );
                out.push(if x == "now" {
                    now
                } else {
                    format!("toDate({now})")
                });
                i += 3;
            }
            Tok::Ident(x) if env.exact_uniq && (x == "uniq" || x == "uniqIf") && is(i + 1, "(") => {
                out.push(x.replacen("uniq", "uniqExact", 1));
                i += 1;
            }
            Tok::Ident(x)
                if ["events", "persons", "sessions"].contains(&x.as_str())
                    && i > 0
                    && matches!(&toks[i - 1], Tok::Ident(k) if k.eq_ignore_ascii_case("from")) =>
            {
                out.push(format!("{}.{x}{suffix}", env.db));
                i += 1;
            }
            Tok::Ident(x) if x.eq_ignore_ascii_case("limit") && depth == 0 => {
                let n = match toks.get(i + 1) {
                    Some(Tok::Num(n)) => n.parse::<usize>().map_err(|e| e.to_string())?,
                    Some(Tok::Placeholder(p)) => values
                        .get(p)
                        .and_then(Value::as_u64)
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| format!("LIMIT {{{p}}} is not bound to an integer"))?,
                    other => return Err(format!("LIMIT followed by {other:?}")),
                };
                if is(i + 2, ",")
                    || matches!(ident(i + 2), Some(k) if k.eq_ignore_ascii_case("offset"))
                {
                    return Err("OFFSET is not translated (PostHog rejects it)".into());
                }
                out.push(format!("LIMIT {}", n.min(env.clamp)));
                has_limit = true;
                i += 2;
            }
            Tok::Ident(x) if x.starts_with('$') => {
                out.push(format!("`{x}`"));
                i += 1;
            }
            Tok::Ident(x) | Tok::Num(x) => {
                out.push(x.clone());
                i += 1;
            }
            Tok::Quoted(x) => {
                out.push(format!("`{}`", x.replace('`', "\\`")));
                i += 1;
            }
            Tok::Str(_) | Tok::Placeholder(_) => {
                out.push(literal(tok)?);
                i += 1;
            }
            Tok::Punct(p) => {
                match p.as_str() {
                    "(" | "[" => depth += 1,
                    ")" | "]" => depth = depth.saturating_sub(1),
                    _ => {}
                }
                out.push(p.clone());
                i += 1;
            }
        }
    }
    let paginated = !has_limit;
    if paginated {
        out.push(format!("LIMIT {}", DEFAULT_ROWS + 1));
    }
    // Join with spaces, without a space before `,` `)` `]` `.` or after `(` `[` `.`.
    let mut sql = String::new();
    for (n, piece) in out.iter().enumerate() {
        let tight = n == 0
            || [",", ")", "]", "."].contains(&piece.as_str())
            || ["(", "[", "."].contains(&out[n - 1].as_str())
            || (piece == "(" && is_function_name(&out[n - 1]));
        let glue = !tight;
        if glue {
            sql.push(' ');
        }
        sql.push_str(piece);
    }
    Ok(Translated { sql, paginated })
}

fn is_function_name(piece: &str) -> bool {
    piece
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && piece.chars().all(|c| c.is_alphanumeric() || c == '_')
        && ![
            "and", "or", "not", "in", "as", "from", "where", "by", "select",
        ]
        .contains(&piece.to_ascii_lowercase().as_str())
}

// ---------------------------------------------------------------------------------------------
// The ClickHouse side.
// ---------------------------------------------------------------------------------------------

fn run_clickhouse(
    dir: &Path,
    translated: &HashMap<String, Result<Translated, String>>,
) -> (String, HashMap<String, Result<Answer, String>>) {
    let script: PathBuf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential/clickhouse.py");
    let db = |name: &str| {
        let d = dir.join(name);
        json!({
            "name": name,
            "events": d.join("events.jsonl"),
            "persons": d.join("persons.jsonl"),
            "project_tz": PROJECT_TZ,
        })
    };
    let queries: Vec<Value> = translated
        .iter()
        .filter_map(|(id, t)| t.as_ref().ok().map(|t| json!({"id": id, "sql": t.sql})))
        .collect();
    let request = json!({"databases": [db("fixed"), db("recent")], "queries": queries});
    let mut child = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let input = request.to_string();
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("python3 finishes");
    writer.join().expect("writer").expect("request written");
    assert!(
        output.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let doc: Value = serde_json::from_slice(&output.stdout).expect("the runner prints JSON");
    let mut answers = HashMap::new();
    for r in doc["results"].as_array().expect("results") {
        let id = r["id"].as_str().expect("id").to_owned();
        let answer = match r.get("error") {
            Some(e) => Err(e.as_str().unwrap_or_default().to_owned()),
            None => {
                let mut rows = rows(&r["rows"]);
                let paginated = translated[&id].as_ref().is_ok_and(|t| t.paginated);
                let has_more = paginated.then_some(rows.len() > DEFAULT_ROWS);
                rows.truncate(if paginated { DEFAULT_ROWS } else { rows.len() });
                Ok(Answer {
                    columns: strings(&r["columns"]),
                    types: strings(&r["types"]),
                    rows,
                    has_more,
                })
            }
        };
        answers.insert(id, answer);
    }
    for (id, t) in translated {
        if let Err(e) = t {
            answers.insert(id.clone(), Err(format!("not translated: {e}")));
        }
    }
    let engine = doc["engine"].as_str().unwrap_or("chdb").to_owned();
    (engine, answers)
}

// ---------------------------------------------------------------------------------------------
// Comparison.
// ---------------------------------------------------------------------------------------------

/// Two cells are equal when their JSON is equal, numbers compared as numbers (floats to a
/// relative 1e-9: sums of floats may differ in the last bits with the order of addition).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => {
                let (x, y) = (
                    x.as_f64().unwrap_or(f64::NAN),
                    y.as_f64().unwrap_or(f64::NAN),
                );
                x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
            }
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        _ => a == b,
    }
}

fn shown(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(300) {
        Some((at, _)) => format!("{}… ({} chars)", &s[..at], s.len()),
        None => s,
    }
}

fn compare(case: &Case, mock: &Result<Answer, String>, ch: &Result<Answer, String>) -> Vec<String> {
    let (mock, ch) = match (mock, ch) {
        (Ok(m), Ok(c)) => (m, c),
        (m, c) => {
            return vec![format!(
                "an error on one side:\n  mock: {}\n  clickhouse: {}",
                m.as_ref()
                    .map_or_else(Clone::clone, |a| format!("{} rows", a.rows.len())),
                c.as_ref()
                    .map_or_else(Clone::clone, |a| format!("{} rows", a.rows.len())),
            )];
        }
    };
    let mut findings = Vec::new();
    if mock.columns != ch.columns {
        findings.push(format!(
            "columns differ:\n  mock:       {:?}\n  clickhouse: {:?}",
            mock.columns, ch.columns
        ));
    }
    let mut type_diffs = Vec::new();
    for (k, (mt, ct)) in mock.types.iter().zip(&ch.types).enumerate() {
        if mt == ct {
            continue;
        }
        let column = ch.columns.get(k).map_or("?", String::as_str);
        type_diffs.push(format!("  `{column}`: mock {mt}, clickhouse {ct}"));
    }
    if mock.types.len() != ch.types.len() || !type_diffs.is_empty() {
        findings.push(format!(
            "types differ:\n{}\n  mock:       {:?}\n  clickhouse: {:?}",
            type_diffs.join("\n"),
            mock.types,
            ch.types
        ));
    }
    if mock.has_more != ch.has_more {
        findings.push(format!(
            "hasMore differs: mock {:?}, clickhouse {:?}",
            mock.has_more, ch.has_more
        ));
    }
    if mock.rows.len() != ch.rows.len() {
        findings.push(format!(
            "row counts differ: mock {}, clickhouse {}",
            mock.rows.len(),
            ch.rows.len()
        ));
    }
    let (mut m, mut c): (Vec<&Vec<Value>>, Vec<&Vec<Value>>) =
        (mock.rows.iter().collect(), ch.rows.iter().collect());
    if let Order::Keys(keys) = case.order {
        let project = |r: &Vec<Value>| -> Vec<Value> {
            keys.iter()
                .map(|k| r.get(*k).cloned().unwrap_or(Value::Null))
                .collect()
        };
        if let Some(n) = (0..m.len().min(c.len())).find(|n| {
            let (a, b) = (project(m[*n]), project(c[*n]));
            a.len() != b.len() || a.iter().zip(&b).any(|(x, y)| !same_value(x, y))
        }) {
            findings.push(format!(
                "ORDER BY keys (columns {keys:?}) differ at row #{n}: mock {}, clickhouse {}",
                shown(&Value::Array(project(m[n]))),
                shown(&Value::Array(project(c[n])))
            ));
        }
    }
    if case.order != Order::Total {
        let key = |r: &&Vec<Value>| Value::Array((*r).clone()).to_string();
        m.sort_by_key(key);
        c.sort_by_key(key);
    }
    let mut differing = 0;
    let mut first: Option<String> = None;
    // Per column: differing cells and the first example.
    let mut by_column: BTreeMap<usize, (usize, String)> = BTreeMap::new();
    for (n, (mr, cr)) in m.iter().zip(&c).enumerate() {
        let mut cells = Vec::new();
        for (k, (mv, cv)) in mr.iter().zip(cr.iter()).enumerate() {
            if same_value(mv, cv) {
                continue;
            }
            let column = ch.columns.get(k).map_or("?", String::as_str);
            let example = format!("mock {} vs clickhouse {}", shown(mv), shown(cv));
            by_column.entry(k).or_insert((0, example)).0 += 1;
            cells.push(format!(
                "  column `{column}`:\n    mock       = {}\n    clickhouse = {}",
                shown(mv),
                shown(cv)
            ));
        }
        if mr.len() != cr.len() {
            cells.push(format!("  row widths differ: {} vs {}", mr.len(), cr.len()));
        }
        if cells.is_empty() {
            continue;
        }
        differing += 1;
        if first.is_none() {
            first = Some(format!(
                "first differing row: #{n} ({}):\n{}\n  mock row:       {}\n  clickhouse row: {}",
                if case.order == Order::Total {
                    "in ORDER BY order"
                } else {
                    "rows sorted as text, compared as multisets"
                },
                cells.join("\n"),
                shown(&Value::Array((*mr).clone())),
                shown(&Value::Array((*cr).clone())),
            ));
        }
    }
    if let Some(first) = first {
        let mut summary = String::new();
        for (k, (n, example)) in &by_column {
            let column = ch.columns.get(*k).map_or("?", String::as_str);
            let _ = write!(summary, "\n    `{column}`: {n} rows, first: {example}");
        }
        findings.push(format!(
            "{first}\n  {differing} of {} rows differ; by column:{summary}",
            m.len().min(c.len())
        ));
    }
    if let Some(extra) = first_extra(&m, &c) {
        findings.push(extra);
    }
    findings
}

fn first_extra(m: &[&Vec<Value>], c: &[&Vec<Value>]) -> Option<String> {
    let n = m.len().min(c.len());
    match (m.get(n), c.get(n)) {
        (Some(r), None) => Some(format!(
            "  first row only the mock has: #{n} {}",
            shown(&Value::Array((*r).clone()))
        )),
        (None, Some(r)) => Some(format!(
            "  first row only clickhouse has: #{n} {}",
            shown(&Value::Array((*r).clone()))
        )),
        _ => None,
    }
}
