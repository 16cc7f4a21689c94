//! What PostHog documents about pages, and the extractor must survive: a LIMIT clamped
//! silently (below, at and above the page size, and changing mid-run), for events and for a
//! persons snapshot; and a `Retry-After` too large to wait out.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::Env;
use super::cli;
use super::mock::MockOptions;
use super::output;
use super::scenarios::Ctx;
use super::verify::{self, Checks, Format};

/// One clamped extraction.
struct ClampCase {
    label: &'static str,
    events: usize,
    page: usize,
    /// The clamp at start.
    clamp: usize,
    /// `(Q, N)`: after Q query requests the clamp becomes N.
    after: Vec<(u64, usize)>,
    format: Format,
    /// `output.flatten_properties`.
    flatten: bool,
}

/// The query requests a scan of `n` rows at LIMIT `page` costs when the server clamps LIMIT
/// to `clamp`, then to N after Q requests for each `(Q, N)` in `after`: request k reads
/// min(page, the clamp request k gets, rows left), and only an empty page ends the scan.
/// Returns the requests and the rows of each non-empty page.
pub fn expected_pages(
    n: usize,
    page: usize,
    clamp: usize,
    after: &[(u64, usize)],
) -> (u64, Vec<usize>) {
    let mut left = n;
    let mut pages = Vec::new();
    let mut request = 0u64;
    loop {
        request += 1;
        // Request `Q + 1` is the first to get the clamp scheduled after Q requests.
        let now = after
            .iter()
            .filter(|(q, _)| request > *q)
            .max_by_key(|(q, _)| *q)
            .map_or(clamp, |(_, c)| *c);
        let rows = page.min(now).min(left);
        if rows == 0 {
            return (request, pages);
        }
        pages.push(rows);
        left -= rows;
    }
}

/// Runs of events at page_size 1 000 against a mock clamping LIMIT below the page (777), one
/// under it (999), at it (1 000), above it (1 001), changing mid-run (1 000 → 500 → 1 001), at
/// page_size 50 000 under a clamp of 49 999, and once with `flatten_properties: false`; the
/// formats rotate so each sees a clamp below the page. Each run reads every event exactly
/// once and value by value, person properties as of the event included, in exactly as many
/// query requests as the clamps dictate. Then a persons snapshot of 1 500 persons under a
/// clamp of 777, twice: each run a complete snapshot.
pub fn limit_clamp(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    let cases = [
        ClampCase {
            label: "clamp 777 < page 1000",
            events: 7_000,
            page: 1_000,
            clamp: 777,
            after: vec![],
            format: Format::Parquet,
            flatten: true,
        },
        ClampCase {
            label: "clamp 999 = page − 1",
            events: 7_000,
            page: 1_000,
            clamp: 999,
            after: vec![],
            format: Format::Jsonl,
            flatten: true,
        },
        ClampCase {
            label: "clamp 1000 = page",
            events: 7_000,
            page: 1_000,
            clamp: 1_000,
            after: vec![],
            format: Format::Csv,
            flatten: true,
        },
        ClampCase {
            label: "clamp 1001 > page",
            events: 6_500,
            page: 1_000,
            clamp: 1_001,
            after: vec![],
            format: Format::Parquet,
            flatten: true,
        },
        ClampCase {
            label: "clamp 1000, 500 after 2 queries, 1001 after 6",
            events: 7_000,
            page: 1_000,
            clamp: 1_000,
            after: vec![(2, 500), (6, 1_001)],
            format: Format::Csv,
            flatten: true,
        },
        ClampCase {
            label: "clamp 49999 < page 50000",
            events: 50_000,
            page: 50_000,
            clamp: 49_999,
            after: vec![],
            format: Format::Jsonl,
            flatten: true,
        },
        ClampCase {
            label: "clamp 777, flatten_properties false",
            events: 3_000,
            page: 1_000,
            clamp: 777,
            after: vec![],
            format: Format::Csv,
            flatten: false,
        },
    ];
    let mut notes = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        notes.push(clamp_case(env, ck, case, 80 + i as u64)?);
    }
    notes.push(persons_snapshot(env, ck)?);
    ck.note(notes.join("; "));
    Ok(())
}

fn clamp_case(env: &Env, ck: &mut Checks, case: &ClampCase, seed: u64) -> anyhow::Result<String> {
    let mut opts = MockOptions::new(case.events, seed);
    opts.limit_clamp = Some(case.clamp);
    opts.limit_clamp_after = case.after.clone();
    let ctx = Ctx::start(env, "limit-clamp", opts)?;
    let (events, persons) = ctx.opts.expected_dataset();
    let label = format!("{} ({})", case.label, case.format.name());
    // The person as of the event differs from the person now for some events: the
    // comparison below would notice a run that wrote the current properties instead.
    let current: HashMap<uuid::Uuid, &serde_json::Map<String, Value>> =
        persons.iter().map(|p| (p.id, &p.properties)).collect();
    let as_of_earlier = events
        .iter()
        .filter(|e| {
            e.person_id
                .and_then(|p| current.get(&p))
                .is_some_and(|now| **now != e.person_properties)
        })
        .count();
    ck.check(
        as_of_earlier > 0,
        format!("{label}: {as_of_earlier} source events carry their person's earlier properties"),
    );
    let expected = verify::expected_map(events);
    let mut config = cli::base_config(&ctx.mock, case.format.name());
    config["config"]["source"]["page_size"] = json!(case.page);
    // The request counts below are one scan's; clamps under concurrent slices are covered by
    // the engine tests (`a_limit_clamp_loses_nothing_when_slices_read_at_once` and the clamp
    // schedule proptest).
    config["performance"]["query_concurrency"] = json!(1);
    if !case.flatten {
        config["output"]["flatten_properties"] = json!(false);
    }
    let out = ctx.path("out");
    let run = ctx.run(ck, &config, &out, &[], &[])?;
    let summary = verify::run_ok(ck, &run, &label);
    let rows_output = verify::num(summary.as_ref(), "rows_output");
    ck.check(
        rows_output == expected.len() as u64,
        format!(
            "{label}: rows_output {rows_output} = {} source events",
            expected.len()
        ),
    );
    let report = verify::table(ck, &out, case.format, &expected, true)?;
    // The comparison catches doctored values in this format and shape too (the 50 000-event
    // case is JSONL, proven by the smaller ones and full-jsonl; cloning its source is slow).
    if case.events <= 10_000 {
        verify::self_test(ck, &report, &expected);
    }
    ck.check(
        report.person_cells > 0,
        format!(
            "{label}: {} non-null person properties compared",
            report.person_cells
        ),
    );
    let (want, pages) = expected_pages(case.events, case.page, case.clamp, &case.after);
    let formula = if case.after.is_empty() {
        let per_page = case.page.min(case.clamp);
        format!("⌈{}/{per_page}⌉ + 1 = ", case.events)
    } else {
        String::new()
    };
    let queries = ctx.mock.query_requests()?;
    ck.check(
        queries == want,
        format!(
            "{label}: {queries} query requests = {formula}{want} (pages of {}, then an empty one)",
            summarize_pages(&pages)
        ),
    );
    let stats = ctx.mock.stats()?;
    let final_clamp = case
        .after
        .iter()
        .max_by_key(|(q, _)| *q)
        .map_or(case.clamp, |c| c.1);
    let pending = stats["limit_clamp_changes_pending"]
        .as_array()
        .map_or(usize::MAX, Vec::len);
    ck.check(
        stats["limit_clamp"].as_u64() == Some(final_clamp as u64) && pending == 0,
        format!(
            "{label}: the mock clamps at {} at the end ({final_clamp}), {pending} scheduled changes pending (0)",
            stats["limit_clamp"]
        ),
    );
    Ok(format!(
        "{}: {} rows, {queries} queries",
        case.label, report.rows
    ))
}

/// `1000×2, 500×4, 1000×3` for a list of page sizes.
fn summarize_pages(pages: &[usize]) -> String {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &p in pages {
        match runs.last_mut() {
            Some((size, n)) if *size == p => *n += 1,
            _ => runs.push((p, 1)),
        }
    }
    runs.iter()
        .map(|(size, n)| {
            if *n == 1 {
                size.to_string()
            } else {
                format!("{size}×{n}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A persons snapshot (1 500 persons, page 1 000, clamp 777), run twice: each run holds every
/// person exactly once with its current values, the second replacing the first's parts.
fn persons_snapshot(env: &Env, ck: &mut Checks) -> anyhow::Result<String> {
    let (n, page, clamp) = (1_500usize, 1_000usize, 777usize);
    let mut opts = MockOptions::new(200, 89);
    opts.persons = Some(n);
    opts.limit_clamp = Some(clamp);
    let ctx = Ctx::start(env, "limit-clamp-persons", opts)?;
    let (_, persons) = ctx.opts.expected_dataset();
    ck.check(
        persons.len() == n,
        format!("persons: the mock serves {} persons ({n})", persons.len()),
    );
    let expected = verify::persons_map(persons);
    let mut config = cli::base_config(&ctx.mock, "parquet");
    config["config"]["source"]["data_type"] = json!("persons");
    config["config"]["source"]["page_size"] = json!(page);
    if let Some(source) = config["config"]["source"].as_object_mut() {
        // A snapshot has no lookback or start; the persons table has no events' options.
        source.remove("initial_since");
        source.remove("lookback_window_minutes");
    }
    let out = ctx.path("out");
    let (want, pages) = expected_pages(n, page, clamp, &[]);
    let mut counts = Vec::new();
    let mut first_parts = Vec::new();
    for round in 1..=2 {
        let label = format!("persons snapshot, clamp {clamp}, run {round}");
        ctx.mock.reset_counters()?;
        let run = ctx.run(ck, &config, &out, &[], &[])?;
        let summary = verify::run_ok(ck, &run, &label);
        let rows_output = verify::num(summary.as_ref(), "rows_output");
        ck.check(
            rows_output == n as u64,
            format!("{label}: rows_output {rows_output} = {n} persons"),
        );
        let queries = ctx.mock.query_requests()?;
        ck.check(
            queries == want,
            format!(
                "{label}: {queries} query requests = ⌈{n}/{clamp}⌉ + 1 = {want} (pages of {}, then an empty one)",
                summarize_pages(&pages)
            ),
        );
        let look = verify::Look::new(&out, Format::Parquet);
        let report = verify::persons_table(ck, &look, &expected)?;
        let state = output::load_state(&look.state)?;
        let parts = output::part_sets(Some(&state), &out.join(cli::TABLE), cli::TABLE)?;
        if round == 1 {
            first_parts = parts.in_state.iter().map(|p| p.path.clone()).collect();
        } else {
            let left: Vec<String> = first_parts
                .iter()
                .filter(|p| p.exists())
                .map(|p| verify::name(p))
                .collect();
            let replaced = parts
                .in_state
                .iter()
                .all(|p| !first_parts.contains(&p.path));
            ck.check(
                left.is_empty() && replaced,
                format!(
                    "{label}: the first snapshot's {} parts are replaced (still on disk: {left:?})",
                    first_parts.len()
                ),
            );
        }
        counts.push(format!("{} rows/{queries} queries", report.rows));
    }
    Ok(format!("persons (clamp {clamp}): {}", counts.join(", ")))
}

/// The mock answers the first query with 429 and `Retry-After: 2^70` seconds: the run ends at
/// once as rate limited after that one request, having committed nothing; the next run (no
/// fault) extracts everything exactly once.
pub fn hostile_retry_after(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    const HUGE: &str = "1180591620717411303424"; // 2^70
    let ctx = Ctx::start(env, "hostile-retry-after", MockOptions::new(2_000, 97))?;
    let expected = verify::expected_map(ctx.opts.expected_events());
    let config = cli::base_config(&ctx.mock, "parquet");
    let out = ctx.path("out");
    ctx.mock.push_faults(&json!({
        "route": "query",
        "fault": {"type": "status", "status": 429, "retry_after": HUGE},
        "times": 1
    }))?;
    let run = ctx.run_with_deadline(ck, &config, &out, &[], &[], Duration::from_secs(60))?;
    let (status, category, message) = failure(&run);
    ck.check(
        run.code == Some(1),
        format!("Retry-After {HUGE}: exit 1 ({})", run.describe()),
    );
    ck.check(
        status == "error" && category == "rate_limited",
        format!(
            "stdout: status `{status}`, category `{category}` (error, rate_limited): {}",
            cli::clip(&message, 200)
        ),
    );
    ck.check(
        run.wall <= Duration::from_secs(5),
        format!("the run ended in {:.2} s (≤ 5 s)", run.wall.as_secs_f64()),
    );
    let queries = ctx.mock.query_requests()?;
    ck.check(
        queries == 1,
        format!("{queries} query requests (1: the throttled one, never retried)"),
    );
    let state_path = out.join("state.json");
    let state = if state_path.exists() {
        Some(output::load_state(&state_path)?)
    } else {
        None
    };
    let sets = output::part_sets(state.as_ref(), &out.join(cli::TABLE), cli::TABLE)?;
    ck.check(
        sets.in_state.is_empty() && sets.on_disk.is_empty(),
        format!(
            "nothing committed: {} parts in the state, {} part files on disk",
            sets.in_state.len(),
            sets.on_disk.len()
        ),
    );
    let wall = run.wall;

    ctx.mock.clear_faults()?;
    let run = ctx.run(ck, &config, &out, &[], &[])?;
    let summary = verify::run_ok(ck, &run, "the next run, without the fault");
    let rows = verify::num(summary.as_ref(), "rows_output");
    ck.check(
        rows == expected.len() as u64,
        format!("the next run outputs {rows} rows ({})", expected.len()),
    );
    verify::table(ck, &out, Format::Parquet, &expected, true)?;
    ck.note(format!(
        "ended in {:.2} s after {queries} query request; next run {rows} rows",
        wall.as_secs_f64()
    ));
    Ok(())
}

/// A failed run's stdout: status, category and message (empty when absent).
pub fn failure(run: &cli::CliRun) -> (String, String, String) {
    let v = run.json().unwrap_or(Value::Null);
    let text = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    (text("status"), text("category"), text("message"))
}

#[cfg(test)]
mod tests {
    use super::expected_pages;

    #[test]
    fn pages_follow_the_clamp_and_end_on_an_empty_one() {
        assert_eq!(expected_pages(7_000, 1_000, 777, &[]).0, 11);
        assert_eq!(expected_pages(7_000, 1_000, 1_000, &[]).0, 8);
        assert_eq!(expected_pages(6_500, 1_000, 1_001, &[]).0, 8);
        assert_eq!(
            expected_pages(50_000, 50_000, 49_999, &[]).1,
            vec![49_999, 1]
        );
        let (n, pages) = expected_pages(7_000, 1_000, 1_000, &[(2, 500), (6, 1_001)]);
        assert_eq!(
            pages,
            vec![1_000, 1_000, 500, 500, 500, 500, 1_000, 1_000, 1_000]
        );
        assert_eq!(n, 10);
        assert_eq!(expected_pages(0, 1_000, 777, &[]), (1, vec![]));
    }
}
