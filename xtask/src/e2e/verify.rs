//! The checks: a scenario's check list, exactly-once over UUIDs, value-by-value comparison of
//! every row with its source event (its `properties` and its person's properties as of the
//! event, `person_properties`) or source person under the documented type rule, and part
//! bookkeeping (state parts = files on disk, sizes, hashes, no leftovers).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use arrow_schema::{DataType, TimeUnit};
use posthog_mock::{Event, Person};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::cli::{CliRun, TABLE};
use super::output::{self, Cell, Row, TableRows};

/// A scenario's results: each check passes or fails; `summary` holds the headline numbers.
#[derive(Default)]
pub struct Checks {
    items: Vec<(bool, String)>,
    pub summary: String,
}

impl Checks {
    pub fn check(&mut self, ok: bool, what: impl Into<String>) -> bool {
        self.items.push((ok, what.into()));
        ok
    }

    pub fn fail(&mut self, what: impl Into<String>) {
        self.items.push((false, what.into()));
    }

    pub fn note(&mut self, what: impl Into<String>) {
        let what = what.into();
        if !self.summary.is_empty() {
            self.summary.push_str("; ");
        }
        self.summary.push_str(&what);
    }

    pub fn failures(&self) -> Vec<&str> {
        self.items
            .iter()
            .filter(|(ok, _)| !ok)
            .map(|(_, w)| w.as_str())
            .collect()
    }

    pub fn passed(&self) -> bool {
        self.items.iter().all(|(ok, _)| *ok)
    }

    pub fn print(&self) {
        for (ok, what) in &self.items {
            println!("   {} {what}", if *ok { "ok  " } else { "FAIL" });
        }
    }
}

/// The source events by UUID.
pub type Expected = HashMap<Uuid, Event>;

pub fn expected_map(events: impl IntoIterator<Item = Event>) -> Expected {
    events.into_iter().map(|e| (e.uuid, e)).collect()
}

/// The source persons by id.
pub type Persons = HashMap<Uuid, Person>;

pub fn persons_map(persons: impl IntoIterator<Item = Person>) -> Persons {
    persons.into_iter().map(|p| (p.id, p)).collect()
}

/// Source event UUIDs alone, for tables too large to hold every source event in memory.
pub type Uuids = HashMap<Uuid, ()>;

/// What a table must hold: source events (keyed by `uuid`), source persons (keyed by `id`),
/// or only the source events' UUIDs (no values to compare).
#[derive(Clone, Copy)]
enum Source<'a> {
    Events(&'a Expected),
    Persons(&'a Persons),
    Uuids(&'a Uuids),
}

/// Output formats as the files name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Jsonl,
    Csv,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
        }
    }
}

/// Checks a CLI run that must succeed: exit 0, ONE JSON object on stdout, a non-error status,
/// the table name. Returns the JSON when there is one.
pub fn run_ok(ck: &mut Checks, run: &CliRun, what: &str) -> Option<Value> {
    let exit_ok = ck.check(
        run.code == Some(0),
        format!(
            "{what}: exit 0 (got {:?} after {:.1} s)",
            run.code,
            run.wall.as_secs_f64()
        ),
    );
    if !exit_ok {
        ck.fail(format!("{what}: {}", run.describe()));
    }
    match run.json() {
        Ok(v) => {
            let status = v["status"].as_str().unwrap_or("<missing>").to_owned();
            ck.check(
                !matches!(
                    status.as_str(),
                    "error" | "failed" | "failure" | "<missing>"
                ),
                format!("{what}: stdout status `{status}`"),
            );
            ck.check(
                v["table"].as_str() == Some(TABLE),
                format!("{what}: stdout table `{}`", v["table"]),
            );
            let missing: Vec<&str> = [
                "rows_read",
                "rows_deduplicated",
                "rows_output",
                "files",
                "requests",
                "retries",
                "duration_ms",
                "state",
            ]
            .into_iter()
            .filter(|k| v.get(*k).is_none())
            .collect();
            ck.check(
                missing.is_empty(),
                format!("{what}: stdout has every summary field (missing: {missing:?})"),
            );
            Some(v)
        }
        Err(e) => {
            ck.fail(format!("{what}: {e}"));
            None
        }
    }
}

/// A number from a run summary (0 when absent, which `run_ok` already reported).
pub fn num(summary: Option<&Value>, key: &str) -> u64 {
    summary.and_then(|v| v[key].as_u64()).unwrap_or(0)
}

/// What the table holds after the runs, checked against the source.
pub struct TableReport {
    pub rows: usize,
    pub parts: usize,
    pub columns: usize,
    /// Rows in the largest part.
    pub largest_part: u64,
    /// Non-null person properties (`person_properties_*` cells, or entries of the one
    /// `person_properties` column) compared with the source, 0 without `values`.
    pub person_cells: usize,
    /// What was read, for [`self_test`].
    pub table: TableRows,
    pub types: HashMap<String, String>,
    pub format: Format,
}

/// Where a table is and how strictly to check it.
pub struct Look<'a> {
    pub out: &'a Path,
    pub state: PathBuf,
    pub format: Format,
    /// Compare every value (else UUIDs only).
    pub values: bool,
    /// After a successful run: every expected UUID present, the parts on disk exactly the
    /// committed ones, nothing left over. Without it (after a crash): the committed parts are
    /// durable and hold no UUID twice and none unknown.
    pub complete: bool,
    /// The table directory holds the table lock naming the state file (a local output); else
    /// (an object store's objects, copied to disk) it holds no lock file.
    pub lock: bool,
}

impl<'a> Look<'a> {
    pub fn new(out: &'a Path, format: Format) -> Self {
        Look {
            out,
            state: out.join("state.json"),
            format,
            values: true,
            complete: true,
            lock: true,
        }
    }
}

/// [`table_with`] on `out_dir` with its `state.json`, after a successful run.
pub fn table(
    ck: &mut Checks,
    out_dir: &Path,
    format: Format,
    expected: &Expected,
    values: bool,
) -> anyhow::Result<TableReport> {
    let look = Look {
        values,
        ..Look::new(out_dir, format)
    };
    table_with(ck, &look, expected)
}

/// Reads the table and checks everything the contract says about it:
/// - the parts the state names exist, with the recorded rows, size and SHA-256, in the format;
///   when complete, they are exactly the `part-*` files on disk and nothing else is left in
///   the table directory;
/// - the union (by name) of the committed parts holds each expected UUID exactly once (when
///   complete; else at most once) and nothing else;
/// - with `values`, every row equals its source event value by value.
pub fn table_with(
    ck: &mut Checks,
    look: &Look,
    expected: &Expected,
) -> anyhow::Result<TableReport> {
    table_of(ck, look, Source::Events(expected))
}

/// [`table_with`] for a persons table: the committed parts hold each source person (by `id`)
/// exactly once, with its current `created_at`, `is_identified` and properties.
pub fn persons_table(
    ck: &mut Checks,
    look: &Look,
    persons: &Persons,
) -> anyhow::Result<TableReport> {
    table_of(ck, look, Source::Persons(persons))
}

/// [`table_with`] against the source events' UUIDs alone: the bookkeeping checks and each
/// UUID exactly once (at most once unless `look.complete`); `look.values` is ignored.
pub fn uuids_table(ck: &mut Checks, look: &Look, uuids: &Uuids) -> anyhow::Result<TableReport> {
    let look = Look {
        values: false,
        state: look.state.clone(),
        ..*look
    };
    table_of(ck, &look, Source::Uuids(uuids))
}

fn table_of(ck: &mut Checks, look: &Look, source: Source) -> anyhow::Result<TableReport> {
    let format = look.format;
    let state = if look.state.exists() {
        Some(output::load_state(&look.state)?)
    } else {
        if look.complete {
            ck.fail(format!("{} does not exist", look.state.display()));
        }
        None
    };
    let table_dir = look.out.join(TABLE);
    let sets = output::part_sets(state.as_ref(), &table_dir, TABLE)?;
    let parts = committed_parts(ck, look, state.as_ref(), &sets)?;
    if look.complete {
        lock_and_leftovers(ck, look, &sets);
    }
    let wrong_ext: Vec<String> = parts
        .iter()
        .filter(|p| p.extension().and_then(|e| e.to_str()) != Some(format.name()))
        .map(|p| name(p))
        .collect();
    ck.check(
        wrong_ext.is_empty(),
        format!("every part is .{} {}", format.name(), first(&wrong_ext)),
    );

    let key = match source {
        Source::Events(_) | Source::Uuids(_) => "uuid",
        Source::Persons(_) => "id",
    };
    let only_key = [key];
    let only: Option<&[&str]> = if look.values { None } else { Some(&only_key) };
    let rows = output::read_parts_only(&parts, only)?;
    for problem in rows.problems.iter().take(5) {
        ck.fail(format!("reading the parts: {problem}"));
    }
    if let Some(state) = &state {
        state_counts_match(ck, state, &sets, parts.len(), &rows);
    }
    if format == Format::Parquet && look.values {
        let time = match source {
            Source::Events(_) | Source::Uuids(_) => "timestamp",
            Source::Persons(_) => "created_at",
        };
        parquet_types(ck, &rows, time);
    }

    match source {
        Source::Events(expected) => exactly_once_inner(ck, &rows, key, expected, look.complete),
        Source::Persons(persons) => exactly_once_inner(ck, &rows, key, persons, look.complete),
        Source::Uuids(uuids) => exactly_once_inner(ck, &rows, key, uuids, look.complete),
    };
    let types = state.as_ref().map(column_types).unwrap_or_default();
    let mut person_cells = 0;
    if look.values {
        if types.is_empty() {
            ck.fail("the state records no column types; comparing without them");
        }
        person_cells = match source {
            Source::Events(expected) => compare_values(ck, &rows, expected, &types, format),
            Source::Persons(persons) => compare_persons(ck, &rows, persons, &types, format),
            Source::Uuids(_) => Compared::default(),
        }
        .person_cells;
    }
    let columns = rows
        .rows
        .iter()
        .flat_map(|r| r.cells.keys())
        .collect::<HashSet<_>>()
        .len();
    Ok(TableReport {
        rows: rows.rows.len(),
        parts: parts.len(),
        columns,
        largest_part: rows.part_rows.iter().copied().max().unwrap_or(0),
        person_cells,
        table: rows,
        types,
        format,
    })
}

/// After a successful run: the table lock names the state file (a local output; none in an
/// object store's copy), and nothing else is left in the table directory.
fn lock_and_leftovers(ck: &mut Checks, look: &Look, sets: &output::PartSets) {
    if look.lock {
        let owner = lock_owner(look.out, &look.state);
        let recorded = sets.lock.as_deref().map(str::trim);
        ck.check(
            recorded == Some(owner.as_str()),
            format!(
                "the table lock {} records the state file as {owner} (got {recorded:?})",
                output::LOCK_FILE
            ),
        );
    } else {
        ck.check(
            sets.lock.is_none(),
            format!("no table lock {} in an object store", output::LOCK_FILE),
        );
    }
    ck.check(
        sets.leftovers.is_empty(),
        format!(
            "no temporary or stray files in the table directory {}",
            first(&sets.leftovers.iter().map(|p| name(p)).collect::<Vec<_>>())
        ),
    );
}

/// The part files to read: the ones the state names that exist, checked against the files
/// on disk (exactly them when complete) and against their recorded size and SHA-256; the
/// files on disk when the state has no part list.
fn committed_parts(
    ck: &mut Checks,
    look: &Look,
    state: Option<&Value>,
    sets: &output::PartSets,
) -> anyhow::Result<Vec<PathBuf>> {
    let in_state = sets.state_paths();
    let parts: Vec<PathBuf> = if sets.state_has_parts {
        if look.complete {
            ck.check(
                in_state == sets.on_disk,
                format!(
                    "parts named by the state ({}) are the part-* files on disk ({}){}",
                    in_state.len(),
                    sets.on_disk.len(),
                    diff_paths(&in_state, &sets.on_disk)
                ),
            );
        } else {
            let gone: Vec<String> = in_state
                .iter()
                .filter(|p| !p.exists())
                .map(|p| name(p))
                .collect();
            ck.check(
                gone.is_empty(),
                format!("every part the state names exists {}", first(&gone)),
            );
        }
        ck.check(
            in_state.len() == sets.in_state.len(),
            "the state names each part once",
        );
        let mut bad = Vec::new();
        for p in &sets.in_state {
            if !p.path.exists() {
                continue;
            }
            if let Some(sha) = &p.sha256 {
                let actual = output::sha256_file(&p.path)?;
                if !actual.eq_ignore_ascii_case(sha) {
                    bad.push(format!("{}: sha256 {actual} ≠ state {sha}", name(&p.path)));
                }
            }
            if let Some(bytes) = p.bytes {
                let actual = std::fs::metadata(&p.path)?.len();
                if actual != bytes {
                    bad.push(format!("{}: {actual} bytes ≠ state {bytes}", name(&p.path)));
                }
            }
        }
        ck.check(
            bad.is_empty(),
            format!(
                "state part sizes and SHA-256 match the files {}",
                first(&bad)
            ),
        );
        in_state.iter().filter(|p| p.exists()).cloned().collect()
    } else if state.is_some() || look.complete {
        ck.fail("the state has no `parts` list for the table; reading the files on disk");
        sets.on_disk.iter().cloned().collect()
    } else {
        Vec::new()
    };
    Ok(parts)
}

/// The state's row counts (per part, and `rows_total`) match what the parts hold.
fn state_counts_match(
    ck: &mut Checks,
    state: &Value,
    sets: &output::PartSets,
    parts: usize,
    rows: &TableRows,
) {
    if sets.in_state.len() == parts {
        // By path: the state lists parts in commit order, which need not be the files' order.
        let read: HashMap<&Path, u64> = rows
            .parts
            .iter()
            .map(PathBuf::as_path)
            .zip(rows.part_rows.iter().copied())
            .collect();
        let differ = sets
            .in_state
            .iter()
            .filter(|p| {
                p.rows
                    .is_some_and(|r| read.get(p.path.as_path()) != Some(&r))
            })
            .count();
        ck.check(
            differ == 0,
            format!("state row counts match the parts ({differ} differ)"),
        );
    }
    if let Some(total) = state[TABLE]["rows_total"].as_u64() {
        ck.check(
            total == rows.rows.len() as u64,
            format!(
                "state rows_total {total} = rows in the parts {}",
                rows.rows.len()
            ),
        );
    }
}

/// How the table lock records the state file that owns the table: relative to the table's
/// directory when the state is inside the output directory (`../state.json`), so the directory
/// can move whole; else its absolute path.
pub fn lock_owner(out: &Path, state: &Path) -> String {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let state = absolute(state);
    match state.strip_prefix(absolute(out)) {
        Ok(inside) => Path::new("..").join(inside).display().to_string(),
        Err(_) => state.display().to_string(),
    }
}

/// Proves the checks are not vacuous on this very output: with one expected event's string
/// property changed, another's timestamp moved by 1 µs, a third's integer property turned into
/// text, three more events' person properties doctored the same ways (a string changed, an
/// integer turned into text, one property dropped from the source), and one event dropped from
/// the expectation, the comparison must report exactly those six rows and that one unknown UUID.
pub fn self_test(ck: &mut Checks, report: &TableReport, expected: &Expected) {
    let mut doctored = expected.clone();
    let mut uuids: Vec<Uuid> = doctored.keys().copied().collect();
    uuids.sort();
    let mut changed = 0;
    let mut person_changed = 0;
    let mut picks = uuids.iter();
    // A string property.
    for u in picks.by_ref() {
        let e = doctored.get_mut(u).map(|e| &mut e.properties);
        if let Some(props) = e
            && let Some(v) = props.get_mut("$browser")
            && v.is_string()
        {
            *v = Value::String("Netscape Navigator".into());
            changed += 1;
            break;
        }
    }
    // The timestamp.
    if let Some(u) = picks.next()
        && let Some(e) = doctored.get_mut(u)
    {
        e.timestamp += time::Duration::microseconds(1);
        changed += 1;
    }
    // An integer property, now text.
    for u in picks.by_ref() {
        let e = doctored.get_mut(u).map(|e| &mut e.properties);
        if let Some(props) = e
            && let Some(v) = props.get_mut("$screen_width")
            && let Some(n) = v.as_i64()
        {
            *v = Value::String(n.to_string());
            changed += 1;
            break;
        }
    }
    // The person as of the event: a string property changed, …
    for u in picks.by_ref() {
        let e = doctored.get_mut(u).map(|e| &mut e.person_properties);
        if let Some(props) = e
            && let Some(v) = props.get_mut("email")
            && v.is_string()
        {
            *v = Value::String("someone.else@example.invalid".into());
            person_changed += 1;
            break;
        }
    }
    // … an integer property now text, …
    for u in picks.by_ref() {
        let e = doctored.get_mut(u).map(|e| &mut e.person_properties);
        if let Some(props) = e
            && let Some(v) = props.get_mut("visits")
            && let Some(n) = v.as_i64()
        {
            *v = Value::String(n.to_string());
            person_changed += 1;
            break;
        }
    }
    // … and a property the source no longer has (the file's cell is then one too many).
    for u in picks.by_ref() {
        let e = doctored.get_mut(u).map(|e| &mut e.person_properties);
        if let Some(props) = e
            && props.get("name").is_some_and(|v| !v.is_null())
        {
            props.remove("name");
            person_changed += 1;
            break;
        }
    }
    if let Some(u) = picks.next() {
        doctored.remove(u);
    }
    let mut quiet = Checks::default();
    let once = exactly_once(&mut quiet, &report.table, &doctored);
    let compared = compare_values(
        &mut quiet,
        &report.table,
        &doctored,
        &report.types,
        report.format,
    );
    ck.check(
        changed == 3
            && person_changed == 3
            && compared.differ == 6
            && once.unknown == 1
            && once.missing == 0,
        format!(
            "self-test: {changed} doctored events and {person_changed} doctored persons as of an event → {} rows reported different (6), {} unknown UUID (1)",
            compared.differ, once.unknown
        ),
    );
}

/// The time columns are Timestamp(µs, UTC); `required` must be there.
fn parquet_types(ck: &mut Checks, rows: &TableRows, required: &str) {
    for col in ["timestamp", "created_at"] {
        if let Some(dt) = rows.arrow_types.get(col) {
            let ok = matches!(dt, DataType::Timestamp(TimeUnit::Microsecond, Some(tz))
                if matches!(tz.as_ref(), "UTC" | "+00:00" | "Etc/UTC"));
            ck.check(
                ok,
                format!("Parquet `{col}` is Timestamp(µs, UTC) (got {dt})"),
            );
        } else if col == required {
            ck.fail(format!("Parquet parts have no `{col}` column"));
        }
    }
}

/// How the UUIDs of a table compare with the expected ones.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Once {
    pub missing: usize,
    pub duplicated: usize,
    pub unknown: usize,
    pub unreadable: usize,
}

/// Each expected UUID exactly once, nothing else.
pub fn exactly_once(ck: &mut Checks, rows: &TableRows, expected: &Expected) -> Once {
    exactly_once_inner(ck, rows, "uuid", expected, true)
}

/// Each expected id (column `key`) exactly once, nothing else. With `complete` false, missing
/// ids are allowed (a crashed run's committed prefix).
fn exactly_once_inner<T>(
    ck: &mut Checks,
    rows: &TableRows,
    key: &str,
    expected: &HashMap<Uuid, T>,
    complete: bool,
) -> Once {
    let mut seen: HashMap<Uuid, usize> = HashMap::with_capacity(rows.rows.len());
    let mut unreadable = 0usize;
    for row in &rows.rows {
        match row
            .get(key)
            .and_then(Cell::text)
            .and_then(|s| Uuid::parse_str(s).ok())
        {
            Some(u) => *seen.entry(u).or_default() += 1,
            None => unreadable += 1,
        }
    }
    let duplicates: Vec<(&Uuid, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    let extra_copies: usize = duplicates.iter().map(|(_, n)| **n - 1).sum();
    let missing: Vec<&Uuid> = expected.keys().filter(|u| !seen.contains_key(u)).collect();
    let unknown: Vec<&Uuid> = seen.keys().filter(|u| !expected.contains_key(u)).collect();
    ck.check(
        duplicates.is_empty()
            && (missing.is_empty() || !complete)
            && unknown.is_empty()
            && unreadable == 0,
        format!(
            "{}: {} rows, {} expected {key}s; {} missing{}, {} duplicated ({} extra rows){}, {} unknown, {} without a {key}",
            if complete { "exactly once" } else { "at most once" },
            rows.rows.len(),
            expected.len(),
            missing.len(),
            first(&missing.iter().map(|u| u.to_string()).collect::<Vec<_>>()),
            duplicates.len(),
            extra_copies,
            first(&duplicates.iter().map(|(u, n)| format!("{u}×{n}")).collect::<Vec<_>>()),
            unknown.len(),
            unreadable
        ),
    );
    Once {
        missing: missing.len(),
        duplicated: duplicates.len(),
        unknown: unknown.len(),
        unreadable,
    }
}

/// Column name → type (`utf8`, `int64`, `float64`, `boolean`, `timestamp`, `json`) from the
/// state's `columns` list.
pub fn column_types(state: &Value) -> HashMap<String, String> {
    state[TABLE]["columns"]
        .as_array()
        .map(|cols| {
            cols.iter()
                .filter_map(|c| {
                    Some((
                        c["name"].as_str()?.to_owned(),
                        c["type"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What a comparison found.
#[derive(Debug, Default)]
pub struct Compared {
    /// Rows that differ from their source.
    pub differ: usize,
    /// Non-null person properties compared (events: `person_properties`; persons: none).
    pub person_cells: usize,
}

/// Counters one row's comparison adds to.
#[derive(Default)]
struct Tally {
    cells: usize,
    person_cells: usize,
}

/// Every row against its source event: its columns, its `properties` and its person's
/// properties as of the event (`person_properties`).
fn compare_values(
    ck: &mut Checks,
    rows: &TableRows,
    expected: &Expected,
    types: &HashMap<String, String>,
    format: Format,
) -> Compared {
    let present = present_columns(rows);
    compare_rows(ck, rows, "uuid", expected, format, |row, e, tally| {
        compare_row(row, e, types, &present, tally)
    })
}

/// Every row of a persons table against its source person: `id`, `created_at`,
/// `is_identified` and the current `properties`.
fn compare_persons(
    ck: &mut Checks,
    rows: &TableRows,
    persons: &Persons,
    types: &HashMap<String, String>,
    format: Format,
) -> Compared {
    let present = present_columns(rows);
    compare_rows(ck, rows, "id", persons, format, |row, person, tally| {
        let mut p = Vec::new();
        tally.cells += 1;
        match row.get("id").and_then(Cell::text).map(Uuid::parse_str) {
            Some(Ok(u)) if u == person.id => {}
            other => p.push(format!("id: {other:?} ≠ {}", person.id)),
        }
        tally.cells += 1;
        let got = row.get("created_at");
        let want = micros(person.created_at);
        if got.and_then(cell_micros) != Some(want) {
            p.push(format!("created_at: {} ≠ {want} µs", show(got)));
        }
        tally.cells += 1;
        let got = row.get("is_identified");
        let ok = match got {
            Some(Cell::Bool(b)) => *b == person.is_identified,
            Some(Cell::Json(Value::Bool(b))) => *b == person.is_identified,
            Some(Cell::Text(t)) => {
                t.as_str()
                    == if person.is_identified {
                        "true"
                    } else {
                        "false"
                    }
            }
            _ => false,
        };
        if !ok {
            p.push(format!(
                "is_identified: {} ≠ {}",
                show(got),
                person.is_identified
            ));
        }
        compare_props(
            row,
            "properties",
            &person.properties,
            types,
            &present,
            &mut tally.cells,
            &mut p,
        );
        p
    })
}

/// The columns any row of the table has.
fn present_columns(rows: &TableRows) -> HashSet<&str> {
    rows.rows
        .iter()
        .flat_map(|r| r.cells.keys().map(|k| &**k))
        .collect()
}

/// Each row whose `key` is an expected id, compared by `compare` (which returns what differs);
/// one check line for the table.
fn compare_rows<T>(
    ck: &mut Checks,
    rows: &TableRows,
    key: &str,
    expected: &HashMap<Uuid, T>,
    format: Format,
    mut compare: impl FnMut(&Row, &T, &mut Tally) -> Vec<String>,
) -> Compared {
    let mut differ = 0usize;
    let mut examples: Vec<String> = Vec::new();
    let mut tally = Tally::default();
    for row in &rows.rows {
        let Some((id, source)) = row
            .get(key)
            .and_then(Cell::text)
            .and_then(|s| Uuid::parse_str(s).ok())
            .and_then(|u| Some((u, expected.get(&u)?)))
        else {
            continue;
        };
        let problems = compare(row, source, &mut tally);
        if !problems.is_empty() {
            differ += 1;
            if examples.len() < 6 {
                examples.push(format!(
                    "{id} (part {}): {}",
                    rows.parts
                        .get(row.part)
                        .map_or_else(String::new, |p| name(p)),
                    problems.join("; ")
                ));
            }
        }
    }
    ck.check(
        differ == 0,
        format!(
            "value by value ({}): {} rows, {} cells compared ({} person properties), {} rows differ from the source{}",
            format.name(),
            rows.rows.len(),
            tally.cells,
            tally.person_cells,
            differ,
            if examples.is_empty() {
                String::new()
            } else {
                format!(", e.g. {}", examples.join(" | "))
            }
        ),
    );
    Compared {
        differ,
        person_cells: tally.person_cells,
    }
}

fn compare_row(
    row: &Row,
    e: &Event,
    types: &HashMap<String, String>,
    present: &HashSet<&str>,
    tally: &mut Tally,
) -> Vec<String> {
    let mut p = Vec::new();
    let cells = &mut tally.cells;
    let mut text_eq = |col: &str, want: &str, p: &mut Vec<String>| {
        *cells += 1;
        match row.get(col) {
            Some(c) if c.text() == Some(want) => {}
            other => p.push(format!("{col}: {} ≠ {want:?}", show(other))),
        }
    };
    text_eq("event", &e.event, &mut p);
    text_eq("distinct_id", &e.distinct_id, &mut p);
    *cells += 1;
    match row.get("uuid").and_then(Cell::text).map(Uuid::parse_str) {
        Some(Ok(u)) if u == e.uuid => {}
        other => p.push(format!("uuid: {other:?} ≠ {}", e.uuid)),
    }
    let instant = |col: &str, want: OffsetDateTime, p: &mut Vec<String>| {
        let got = row.get(col);
        let want_us = micros(want);
        if got.and_then(cell_micros) != Some(want_us) {
            p.push(format!("{col}: {} ≠ {want_us} µs ({want})", show(got)));
        }
    };
    *cells += 1;
    instant("timestamp", e.timestamp, &mut p);
    if present.contains("created_at") {
        *cells += 1;
        instant("created_at", e.created_at, &mut p);
    }
    if present.contains("person_id") {
        *cells += 1;
        let got = row.get("person_id");
        let ok = match e.person_id {
            Some(want) => {
                got.and_then(Cell::text)
                    .and_then(|s| Uuid::parse_str(s).ok())
                    == Some(want)
            }
            None => got.is_none(),
        };
        if !ok {
            p.push(format!("person_id: {} ≠ {:?}", show(got), e.person_id));
        }
    }
    if present.contains("elements_chain") {
        *cells += 1;
        let got = row.get("elements_chain");
        if got.and_then(Cell::text) != Some(e.elements_chain.as_str()) {
            p.push(format!(
                "elements_chain: {} ≠ {:?}",
                show(got),
                super::cli::clip(&e.elements_chain, 40)
            ));
        }
    }
    compare_props(
        row,
        "properties",
        &e.properties,
        types,
        present,
        cells,
        &mut p,
    );
    tally.person_cells += compare_props(
        row,
        "person_properties",
        &e.person_properties,
        types,
        present,
        &mut tally.cells,
        &mut p,
    );
    p
}

/// A property map (`properties`, `person_properties`) against the row. Flattened (the usual
/// case): each non-null value in `<column>_<key>` under the column's type or, as JSON text, in
/// its `__json` sibling, never both; nulls nowhere; no other `<column>_*` cell. Not flattened
/// (`output.flatten_properties: false`, the table has a `<column>` column): that one cell is
/// the JSON text of the whole map, and no `<column>_*` cell exists. Returns the number of
/// non-null values compared.
fn compare_props(
    row: &Row,
    column: &str,
    props: &Map<String, Value>,
    types: &HashMap<String, String>,
    present: &HashSet<&str>,
    cells: &mut usize,
    p: &mut Vec<String>,
) -> usize {
    let prefix = format!("{column}_");
    let non_null = props.values().filter(|v| !v.is_null()).count();
    if present.contains(column) {
        *cells += 1;
        compare_whole_map(row, column, props, p);
        return non_null;
    }
    for (k, v) in props {
        let col = format!("{prefix}{k}");
        let fb = format!("{col}__json");
        let typed = row.get(&col);
        let json = row.get(&fb);
        *cells += 1;
        if v.is_null() {
            if typed.is_some() || json.is_some() {
                p.push(format!(
                    "{col}: null in the source, got {} / {}",
                    show(typed),
                    show(json)
                ));
            }
            continue;
        }
        let ty = types.get(&col).map(String::as_str);
        match (typed, json) {
            (Some(c), None) => {
                if !typed_matches(c, v, ty) {
                    p.push(format!(
                        "{col} ({}): {} ≠ {v}",
                        ty.unwrap_or("?"),
                        show(Some(c))
                    ));
                }
            }
            (None, Some(c)) => {
                if !json_text_matches(c, v) {
                    p.push(format!("{fb}: {} ≠ {v}", show(Some(c))));
                } else if let Some(t) = ty
                    && fits(v, t)
                {
                    p.push(format!(
                        "{fb}: {v} fits `{col}` ({t}) but went to the sibling"
                    ));
                }
            }
            (Some(a), Some(b)) => p.push(format!(
                "{col}: value in both the typed column ({}) and {fb} ({})",
                show(Some(a)),
                show(Some(b))
            )),
            (None, None) => p.push(format!("{col}: missing (source {v})")),
        }
    }
    let prop_cells = row.cells.keys().filter(|k| k.starts_with(&prefix)).count();
    if prop_cells != non_null {
        let known: HashSet<String> = props
            .keys()
            .flat_map(|k| [format!("{prefix}{k}"), format!("{prefix}{k}__json")])
            .collect();
        let extra: Vec<&str> = row
            .cells
            .keys()
            .filter(|k| k.starts_with(&prefix) && !known.contains(&***k))
            .map(|k| &**k)
            .collect();
        p.push(format!(
            "{prop_cells} `{prefix}*` cells, {non_null} non-null source values (extra: {extra:?})"
        ));
    }
    non_null
}

/// A property map kept as one JSON column (`output.flatten_properties: false`): that cell is
/// the JSON text of the whole map, and no `<column>_*` cell exists.
fn compare_whole_map(row: &Row, column: &str, props: &Map<String, Value>, p: &mut Vec<String>) {
    let prefix = format!("{column}_");
    let got = row.get(column);
    let whole = Value::Object(props.clone());
    let ok = match got {
        Some(Cell::Text(s)) | Some(Cell::Json(Value::String(s))) => {
            serde_json::from_str::<Value>(s).is_ok_and(|x| json_eq(&x, &whole))
        }
        Some(Cell::Json(x)) => json_eq(x, &whole),
        // A map with nothing in it may be written as no value.
        None => props.is_empty(),
        Some(_) => false,
    };
    if !ok {
        p.push(format!(
            "{column} (one JSON column): {} ≠ {}",
            show(got),
            super::cli::clip(&whole.to_string(), 60)
        ));
    }
    let flattened = row.cells.keys().filter(|k| k.starts_with(&prefix)).count();
    if flattened > 0 {
        p.push(format!(
            "{flattened} `{prefix}*` cells next to the one `{column}` column"
        ));
    }
}

/// Whether a typed cell holds the source value under the column's type.
fn typed_matches(cell: &Cell, v: &Value, ty: Option<&str>) -> bool {
    match cell {
        Cell::Int(i) => is_integer(v) && v.as_i64() == Some(*i),
        Cell::Float(f) => float_fits(v) && v.as_f64() == Some(*f),
        Cell::Bool(b) => v.as_bool() == Some(*b),
        Cell::Micros(_) => false,
        Cell::Text(s) => match ty {
            Some("json") => json_text_matches(cell, v),
            Some("utf8") => v.as_str() == Some(s.as_str()),
            Some("int64") => is_integer(v) && s.parse::<i64>().ok() == v.as_i64(),
            Some("float64") => float_fits(v) && s.parse::<f64>().ok() == v.as_f64(),
            Some("boolean") => match s.as_str() {
                "true" => v == &Value::Bool(true),
                "false" => v == &Value::Bool(false),
                _ => false,
            },
            Some(_) => false,
            None => v.as_str() == Some(s.as_str()) || json_text_matches(cell, v),
        },
        Cell::Json(x) => match ty {
            Some("json") | None => json_eq(x, v),
            Some("utf8") => x.is_string() && x == v,
            Some("int64") => x.is_i64() && json_eq(x, v) && is_integer(v),
            Some("float64") => x.is_number() && float_fits(v) && x.as_f64() == v.as_f64(),
            Some("boolean") => x.is_boolean() && x == v,
            Some(_) => false,
        },
    }
}

/// A `__json` (or `json`-typed) cell: its JSON text parses to the source value.
fn json_text_matches(cell: &Cell, v: &Value) -> bool {
    match cell {
        Cell::Text(s) => serde_json::from_str::<Value>(s).is_ok_and(|x| json_eq(&x, v)),
        Cell::Json(x) => json_eq(x, v),
        _ => false,
    }
}

/// The documented rule: does `v` fit a column of type `ty` (so it must not go to `__json`)?
fn fits(v: &Value, ty: &str) -> bool {
    match ty {
        "utf8" => v.is_string(),
        "int64" => is_integer(v) && v.as_i64().is_some(),
        "float64" => float_fits(v),
        "boolean" => v.is_boolean(),
        "json" => true,
        _ => false,
    }
}

fn is_integer(v: &Value) -> bool {
    v.is_i64() || v.is_u64()
}

/// A Float64 column takes any finite float, and integers up to 2^53 in magnitude.
fn float_fits(v: &Value) -> bool {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if v.is_f64() {
        return v.as_f64().is_some_and(f64::is_finite);
    }
    v.as_f64().is_some_and(|f| f.abs() <= EXACT) && is_integer(v)
}

/// JSON equality with numbers compared by value (`1.50` = `1.5`, `3` = `3.0`).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(i), Some(j), _, _) => i == j,
                (_, _, Some(i), Some(j)) => i == j,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, a)| y.get(k).is_some_and(|b| json_eq(a, b)))
        }
        _ => a == b,
    }
}

fn cell_micros(cell: &Cell) -> Option<i64> {
    match cell {
        Cell::Micros(m) => Some(*m),
        other => other.text().and_then(parse_instant),
    }
}

/// An RFC 3339 instant (a space instead of `T` accepted) in µs since the epoch.
pub fn parse_instant(s: &str) -> Option<i64> {
    let fixed;
    let s = if s.as_bytes().get(10) == Some(&b' ') {
        fixed = format!("{}T{}", &s[..10], &s[11..]);
        fixed.as_str()
    } else {
        s
    };
    OffsetDateTime::parse(s, &Rfc3339).ok().map(micros)
}

pub fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

fn show(cell: Option<&Cell>) -> String {
    match cell {
        None => "null".into(),
        Some(Cell::Text(s)) => format!("{:?}", super::cli::clip(s, 60)),
        Some(Cell::Json(v)) => super::cli::clip(&v.to_string(), 60),
        Some(Cell::Int(i)) => format!("{i}i64"),
        Some(Cell::Float(f)) => format!("{f:?}f64"),
        Some(Cell::Bool(b)) => b.to_string(),
        Some(Cell::Micros(m)) => format!("{m} µs"),
    }
}

pub fn name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn first<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = items.iter().take(3).map(ToString::to_string).collect();
    format!(
        " (e.g. {}{})",
        shown.join(", "),
        if items.len() > 3 { ", …" } else { "" }
    )
}

fn diff_paths(
    a: &std::collections::BTreeSet<std::path::PathBuf>,
    b: &std::collections::BTreeSet<std::path::PathBuf>,
) -> String {
    let only_a: Vec<String> = a.difference(b).map(|p| name(p)).collect();
    let only_b: Vec<String> = b.difference(a).map(|p| name(p)).collect();
    if only_a.is_empty() && only_b.is_empty() {
        return String::new();
    }
    format!(
        "; only in state: {}; only on disk: {}",
        first(&only_a),
        first(&only_b)
    )
}

/// Every file under `dir` and the run outputs, searched for `secret`.
pub fn secret_absent(
    ck: &mut Checks,
    secret: &str,
    runs: &[&CliRun],
    dir: &Path,
) -> anyhow::Result<()> {
    for run in runs {
        ck.check(
            !run.stdout.contains(secret),
            format!(
                "key absent from stdout of `{}`",
                super::cli::clip(&run.label, 90)
            ),
        );
        ck.check(
            !run.stderr.contains(secret),
            format!(
                "key absent from stderr of `{}` ({} bytes)",
                super::cli::clip(&run.label, 90),
                run.stderr.len()
            ),
        );
    }
    let files = output::all_files(dir)?;
    let mut hits = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        if bytes.windows(secret.len()).any(|w| w == secret.as_bytes()) {
            hits.push(f.display().to_string());
        }
    }
    ck.check(
        hits.is_empty(),
        format!(
            "key absent from all {} files under {} {}",
            files.len(),
            name(dir),
            first(&hits)
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_numbers_compare_by_value() {
        assert!(json_eq(&json!({"a": [1.50, 3]}), &json!({"a": [1.5, 3.0]})));
        assert!(!json_eq(&json!("42"), &json!(42)));
        assert!(!json_eq(&json!({"a": 1}), &json!({"a": 1, "b": null})));
    }

    #[test]
    fn typed_cells_follow_the_rule() {
        assert!(typed_matches(&Cell::Int(42), &json!(42), None));
        assert!(!typed_matches(&Cell::Int(42), &json!(42.0), None));
        assert!(typed_matches(&Cell::Float(42.0), &json!(42), None));
        assert!(!typed_matches(
            &Cell::Text("42".into()),
            &json!(42),
            Some("utf8")
        ));
        assert!(typed_matches(
            &Cell::Text("\"42\"".into()),
            &json!("42"),
            Some("json")
        ));
        assert!(typed_matches(
            &Cell::Text("42".into()),
            &json!(42),
            Some("int64")
        ));
        assert!(!typed_matches(
            &Cell::Json(json!("42")),
            &json!(42),
            Some("int64")
        ));
        assert!(fits(&json!(42), "float64") && !fits(&json!("x"), "int64"));
    }

    #[test]
    fn instants_with_any_offset() {
        let utc = parse_instant("2025-01-02T13:57:30.178957Z").unwrap();
        assert_eq!(parse_instant("2025-01-02T19:27:30.178957+05:30"), Some(utc));
        assert_eq!(parse_instant("2025-01-02 08:57:30.178957-05:00"), Some(utc));
        assert_eq!(parse_instant("2025-01-02T13:57:30Z"), Some(utc - 178_957));
    }
}
