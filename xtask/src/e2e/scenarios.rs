//! The extraction scenarios: full extraction in each format, incremental runs with late
//! events, one timestamp shared by thousands of events, random faults, a server-side rate
//! limit, project time zones, and the request budget.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use posthog_mock::Event;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use super::cli::{self, CliRun, TABLE};
use super::mock::{Mock, MockOptions};
use super::verify::{self, Checks, Expected, Format};
use super::{Env, WorkDir};

/// Default deadline of one `run`.
pub const RUN_DEADLINE: Duration = Duration::from_secs(180);

/// One scenario's temporary directory and mock process.
pub struct Ctx<'a> {
    pub env: &'a Env,
    pub mock: Mock,
    pub opts: MockOptions,
    // Declared last: dropped after the mock, which writes its log there.
    pub work: WorkDir,
}

impl<'a> Ctx<'a> {
    pub fn start(env: &'a Env, name: &str, opts: MockOptions) -> anyhow::Result<Ctx<'a>> {
        let work = WorkDir::new(env, name)?;
        let mock = Mock::start(&env.mock, &opts, work.path())?;
        Ok(Ctx {
            env,
            mock,
            opts,
            work,
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// Writes `config` to `<work>/<config_name>` and returns its path.
    pub fn config(&self, config_name: &str, config: &Value) -> anyhow::Result<PathBuf> {
        let path = self.path(config_name);
        cli::write_config(&path, config)?;
        Ok(path)
    }

    /// `posthog-cli [global] run --config … --output-dir OUT [extra]` to completion; checks the
    /// key shows neither on stdout nor on stderr.
    pub fn run(
        &self,
        ck: &mut Checks,
        config: &Value,
        out: &Path,
        global: &[&str],
        extra: &[&str],
    ) -> anyhow::Result<CliRun> {
        self.run_with_deadline(ck, config, out, global, extra, RUN_DEADLINE)
    }

    pub fn run_with_deadline(
        &self,
        ck: &mut Checks,
        config: &Value,
        out: &Path,
        global: &[&str],
        extra: &[&str],
        deadline: Duration,
    ) -> anyhow::Result<CliRun> {
        let args = self.run_args(config, out, global, extra)?;
        let run = cli::run(&self.env.cli, self.work.path(), &args, &[], deadline)?;
        self.no_key_in(ck, &run);
        Ok(run)
    }

    pub fn run_args(
        &self,
        config: &Value,
        out: &Path,
        global: &[&str],
        extra: &[&str],
    ) -> anyhow::Result<Vec<std::ffi::OsString>> {
        let path = self.config("config.yaml", config)?;
        let mut args = cli::args(global.iter().copied());
        args.extend(cli::args(["run", "--config"]));
        args.push(path.into_os_string());
        args.push("--output-dir".into());
        args.push(out.as_os_str().to_owned());
        args.extend(cli::args(extra.iter().copied()));
        Ok(args)
    }

    /// The personal key must never be printed.
    pub fn no_key_in(&self, ck: &mut Checks, run: &CliRun) {
        if run.stdout.contains(&self.mock.key) || run.stderr.contains(&self.mock.key) {
            ck.fail(format!(
                "the API key appears in the output of `{}`",
                run.label
            ));
        }
    }
}

/// Checks the `files` of a run summary exist.
fn files_exist(ck: &mut Checks, summary: Option<&Value>, work: &Path, what: &str) {
    let Some(files) = summary.and_then(|s| s["files"].as_array()) else {
        return;
    };
    let missing: Vec<String> = files
        .iter()
        .filter_map(|f| {
            // A file may be a path or an object with a path-like field.
            let p = f
                .as_str()
                .or_else(|| f["path"].as_str())
                .or_else(|| f["file"].as_str())?;
            let path = Path::new(p);
            let full = if path.is_absolute() {
                path.to_path_buf()
            } else {
                work.join(path)
            };
            (!full.exists()).then(|| p.to_owned())
        })
        .collect();
    ck.check(
        missing.is_empty(),
        format!(
            "{what}: the {} files in the summary exist{}",
            files.len(),
            if missing.is_empty() {
                String::new()
            } else {
                format!(" (missing: {missing:?})")
            }
        ),
    );
}

pub fn full_parquet(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    full(env, ck, Format::Parquet)
}

pub fn full_jsonl(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    full(env, ck, Format::Jsonl)
}

pub fn full_csv(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    full(env, ck, Format::Csv)
}

/// 20 000 events, page_size 1000, in one format: exactly once, value by value. Parquet comes
/// from the config; JSONL and CSV from `--format`, over a config that says parquet.
fn full(env: &Env, ck: &mut Checks, format: Format) -> anyhow::Result<()> {
    let opts = MockOptions::new(20_000, 11);
    let ctx = Ctx::start(env, &format!("full-{}", format.name()), opts)?;
    let expected = verify::expected_map(ctx.opts.expected_events());
    let config = cli::base_config(&ctx.mock, "parquet");
    let out = ctx.path("out");
    let extra: Vec<&str> = match format {
        Format::Parquet => vec![],
        other => vec!["--format", other.name()],
    };
    let run = ctx.run(ck, &config, &out, &[], &extra)?;
    let summary = verify::run_ok(ck, &run, "run");
    let rows_output = verify::num(summary.as_ref(), "rows_output");
    ck.check(
        rows_output == expected.len() as u64,
        format!(
            "rows_output {rows_output} = {} source events",
            expected.len()
        ),
    );
    let rows_read = verify::num(summary.as_ref(), "rows_read");
    ck.check(
        rows_read >= expected.len() as u64,
        format!("rows_read {rows_read} ≥ {}", expected.len()),
    );
    files_exist(ck, summary.as_ref(), ctx.work.path(), "run");
    let state = super::output::load_state(&out.join("state.json"))?;
    let reported = summary.as_ref().map(|s| &s["state"]);
    let watermark = |v: Option<&Value>| {
        v.and_then(|v| v["last_timestamp"].as_str())
            .and_then(verify::parse_instant)
    };
    ck.check(
        watermark(reported).is_some() && watermark(reported) == watermark(Some(&state[TABLE])),
        format!(
            "summary state.last_timestamp {} = state.json's {}",
            reported.map_or(Value::Null, |r| r["last_timestamp"].clone()),
            state[TABLE]["last_timestamp"]
        ),
    );
    let report = verify::table(ck, &out, format, &expected, true)?;
    verify::self_test(ck, &report, &expected);
    let queries = ctx.mock.query_requests()?;
    ck.note(format!(
        "{} rows, {} parts, {} columns, {queries} query requests, run {:.1} s",
        report.rows,
        report.parts,
        report.columns,
        run.wall.as_secs_f64()
    ));
    Ok(())
}

/// A run; new events after the watermark and late ones inside the lookback; a second run
/// re-reads the lookback and drops what it already has; a third run adds nothing. In Parquet,
/// then in CSV with the state in a separate `--state-file`.
pub fn incremental(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    incremental_in(env, ck, Format::Parquet, false)?;
    incremental_in(env, ck, Format::Csv, true)
}

fn incremental_in(
    env: &Env,
    ck: &mut Checks,
    format: Format,
    state_file: bool,
) -> anyhow::Result<()> {
    let opts = MockOptions::new(10_000, 21);
    let ctx = Ctx::start(env, "incremental", opts)?;
    let source = ctx.opts.expected_events();
    let max_ts = source
        .iter()
        .map(|e| e.timestamp)
        .max()
        .context("no events")?;
    let config = cli::base_config(&ctx.mock, format.name());
    let out = ctx.path("out");
    let state_path = if state_file {
        ctx.path("elsewhere/state-of-the-run.json")
    } else {
        out.join("state.json")
    };
    let state_arg = state_path.to_string_lossy().into_owned();
    let extra: Vec<&str> = if state_file {
        std::fs::create_dir_all(ctx.path("elsewhere")).context("creating the state directory")?;
        vec!["--state-file", &state_arg]
    } else {
        vec![]
    };
    let f = format.name();

    let run1 = ctx.run(ck, &config, &out, &[], &extra)?;
    let s1 = verify::run_ok(ck, &run1, &format!("{f} run 1"));
    ck.check(
        verify::num(s1.as_ref(), "rows_output") == source.len() as u64,
        format!(
            "{f} run 1 rows_output {} = {}",
            verify::num(s1.as_ref(), "rows_output"),
            source.len()
        ),
    );
    if state_file {
        ck.check(
            state_path.exists() && !out.join("state.json").exists(),
            format!("{f}: the state went to --state-file, not to the output directory"),
        );
    }
    let state = super::output::load_state(&state_path)?;
    let watermark = state[TABLE]["last_timestamp"]
        .as_str()
        .and_then(verify::parse_instant);
    ck.check(
        watermark == Some(verify::micros(max_ts)),
        format!(
            "{f}: state last_timestamp {} is the newest source instant {max_ts}",
            state[TABLE]["last_timestamp"]
        ),
    );

    let (new, late) = insert_new_and_late(&ctx, ck, f, max_ts)?;

    let run2 = ctx.run(ck, &config, &out, &[], &extra)?;
    let s2 = verify::run_ok(ck, &run2, &format!("{f} run 2"));
    let out2 = verify::num(s2.as_ref(), "rows_output");
    let dedup2 = verify::num(s2.as_ref(), "rows_deduplicated");
    ck.check(
        out2 == 360,
        format!("{f} run 2 rows_output {out2} = 300 new + 60 late"),
    );
    ck.check(
        dedup2 > 0,
        format!("{f} run 2 rows_deduplicated {dedup2} > 0 (lookback re-read)"),
    );

    let run3 = ctx.run(ck, &config, &out, &[], &extra)?;
    let out3 = nothing_new(ck, &run3, &format!("{f} run 3"));

    let expected = verify::expected_map(source.into_iter().chain(new).chain(late));
    let look = verify::Look {
        state: state_path,
        ..verify::Look::new(&out, format)
    };
    let report = verify::table_with(ck, &look, &expected)?;
    ck.note(format!(
        "{f}: {} rows in {} parts, run 2 out {out2} dedup {dedup2}, run 3 out {out3}",
        report.rows, report.parts
    ));
    Ok(())
}

/// Inserts 300 new events after the watermark `max_ts` and 60 late ones inside the
/// 15-minute lookback (the first exactly at the watermark instant); returns both.
fn insert_new_and_late(
    ctx: &Ctx,
    ck: &mut Checks,
    f: &str,
    max_ts: time::OffsetDateTime,
) -> anyhow::Result<(Vec<Event>, Vec<Event>)> {
    let mut rng = fastrand::Rng::with_seed(21);
    let new = make_events(&mut rng, "new", 300, |i| {
        max_ts + time::Duration::seconds(1 + i as i64) + time::Duration::microseconds(i as i64 * 7)
    });
    let late = make_events(&mut rng, "late", 60, |i| {
        max_ts
            - time::Duration::seconds(13 * i as i64)
            - time::Duration::microseconds(if i == 0 { 0 } else { 123 })
    });
    let inserted = ctx.mock.insert_events(&new)? + ctx.mock.insert_events(&late)?;
    ck.check(
        inserted == 360,
        format!("{f}: mock accepted {inserted}/360 inserted events"),
    );
    Ok((new, late))
}

/// A run with nothing new: it succeeds, outputs no row and writes no file. Returns its rows.
fn nothing_new(ck: &mut Checks, run: &CliRun, label: &str) -> u64 {
    let summary = verify::run_ok(ck, run, label);
    let rows = verify::num(summary.as_ref(), "rows_output");
    ck.check(
        rows == 0,
        format!("{label} (nothing new) rows_output {rows} = 0"),
    );
    let files = summary
        .as_ref()
        .and_then(|v| v["files"].as_array())
        .map_or(0, Vec::len);
    ck.check(files == 0, format!("{label} wrote {files} files (0)"));
    rows
}

/// `count` events named `e2e <tag>` at `ts(i)`, with properties that widen the schema and
/// clash with the generated ones' types (`$browser_version` as text, `plan_price` as object).
/// Three in four have a person whose properties (as of the event) clash too: `visits` as text,
/// `company` as a string, a new key, a null; the others are personless (`{}`).
pub fn make_events(
    rng: &mut fastrand::Rng,
    tag: &str,
    count: usize,
    ts: impl Fn(usize) -> OffsetDateTime,
) -> Vec<Event> {
    (0..count)
        .map(|i| {
            let t = whole_micros(ts(i));
            let mut p = Map::new();
            p.insert("e2e_tag".into(), json!(tag));
            p.insert("e2e_index".into(), json!(i));
            p.insert(
                "$browser".into(),
                json!(["Chrome", "Firefox", "Safari"][i % 3]),
            );
            p.insert(
                "$browser_version".into(),
                if i % 7 == 0 {
                    json!("beta-9")
                } else {
                    json!(120 + i % 5)
                },
            );
            p.insert(
                "plan_price".into(),
                if i % 11 == 0 {
                    json!({"amount": 9.5, "currency": "EUR"})
                } else {
                    json!(1.25)
                },
            );
            p.insert(
                "e2e_nested".into(),
                json!({"i": i, "list": [i, "x", null, {"y": true}]}),
            );
            p.insert("e2e_text".into(), json!(format!("line \"{i}\",\nnext ✓")));
            p.insert("e2e_null".into(), Value::Null);
            let person = i % 4 != 0;
            let mut pp = Map::new();
            if person {
                pp.insert("plan".into(), json!("e2e"));
                pp.insert(
                    "visits".into(),
                    if i % 5 == 0 { json!("many") } else { json!(i) },
                );
                pp.insert(
                    "company".into(),
                    if i % 6 == 1 {
                        json!("ACME, \"Inc.\"")
                    } else {
                        json!({"name": "e2e", "size": i % 100, "tags": ["a", null]})
                    },
                );
                pp.insert("e2e_person_tag".into(), json!(format!("{tag} ✓")));
                pp.insert("favourite colour".into(), json!("🟦 blue"));
                pp.insert("nickname".into(), Value::Null);
            }
            let ms = (verify::micros(t).div_euclid(1000) as u64) & 0xFFFF_FFFF_FFFF;
            let uuid = Uuid::from_u64_pair(
                (ms << 16) | 0x7000 | u64::from(rng.u16(..0x1000)),
                0x8000_0000_0000_0000 | (rng.u64(..) & 0x3FFF_FFFF_FFFF_FFFF),
            );
            Event {
                uuid,
                event: format!("e2e {tag}"),
                distinct_id: format!("e2e-user-{}", i % 13),
                timestamp: t,
                created_at: t + time::Duration::seconds(2),
                person_id: person.then(|| {
                    Uuid::from_u64_pair(
                        0xe2e0_0000_0000_4000,
                        0x8000_0000_0000_0000 | (i % 13) as u64,
                    )
                }),
                properties: p,
                elements_chain: String::new(),
                person_properties: pp,
            }
        })
        .collect()
}

/// Drops sub-microsecond digits (PostHog timestamps have 6).
fn whole_micros(t: OffsetDateTime) -> OffsetDateTime {
    let us = verify::micros(t);
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).unwrap_or(t)
}

/// 3 000 of 6 000 events share one timestamp, read with page_size 1000.
pub fn same_timestamp(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    let mut opts = MockOptions::new(6_000, 5);
    opts.cluster = Some(3_000);
    let ctx = Ctx::start(env, "same-timestamp", opts)?;
    let source = ctx.opts.expected_events();
    let mut per_ts: std::collections::HashMap<OffsetDateTime, usize> = Default::default();
    for e in &source {
        *per_ts.entry(e.timestamp).or_default() += 1;
    }
    let biggest = per_ts.values().copied().max().unwrap_or(0);
    ck.check(
        biggest >= 3_000,
        format!("source: {biggest} events share one timestamp"),
    );
    let expected = verify::expected_map(source);
    let config = cli::base_config(&ctx.mock, "parquet");
    let out = ctx.path("out");
    let run = ctx.run(ck, &config, &out, &[], &[])?;
    let summary = verify::run_ok(ck, &run, "run");
    let rows_output = verify::num(summary.as_ref(), "rows_output");
    ck.check(
        rows_output == expected.len() as u64,
        format!("rows_output {rows_output} = {}", expected.len()),
    );
    let report = verify::table(ck, &out, Format::Parquet, &expected, true)?;
    let queries = ctx.mock.query_requests()?;
    ck.note(format!(
        "{} rows, cluster {biggest}, {queries} query requests",
        report.rows
    ));
    Ok(())
}

/// Random 5xx (10 %), connection resets (3 %) and 429 without Retry-After (3 %).
pub fn faults(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    let mut opts = MockOptions::new(20_000, 13);
    opts.fault_rate = 0.1;
    opts.reset_rate = 0.03;
    opts.throttle_rate = 0.03;
    opts.fault_seed = 7;
    let ctx = Ctx::start(env, "faults", opts)?;
    let expected = verify::expected_map(ctx.opts.expected_events());
    let mut config = cli::base_config(&ctx.mock, "parquet");
    config["config"]["source"]["page_size"] = json!(500);
    let out = ctx.path("out");
    let run = ctx.run(ck, &config, &out, &[], &[])?;
    let summary = verify::run_ok(ck, &run, "run");
    let retries = verify::num(summary.as_ref(), "retries");
    ck.check(retries > 0, format!("retries {retries} > 0"));
    let rows_output = verify::num(summary.as_ref(), "rows_output");
    ck.check(
        rows_output == expected.len() as u64,
        format!("rows_output {rows_output} = {}", expected.len()),
    );
    let report = verify::table(ck, &out, Format::Parquet, &expected, true)?;
    let queries = ctx.mock.query_requests()?;
    // Not part of the contract, but worth seeing: a 504 shrinks the page (PRODUCT.md §6) and
    // the number of pages grows with it.
    let shrinks = summary
        .as_ref()
        .and_then(|s| s["page_shrinks"].as_u64())
        .map_or_else(|| "?".to_owned(), |n| n.to_string());
    ck.note(format!(
        "{} rows, {queries} query requests for {} full pages, {retries} retries, {shrinks} page shrinks, run {:.1} s",
        report.rows,
        expected.len().div_ceil(500),
        run.wall.as_secs_f64()
    ));
    Ok(())
}

/// The mock throttles the private API at 30 requests per 60 s (429 with Retry-After); the
/// run needs ~40 query requests, so it must wait and still finish exactly once.
pub fn rate_limit(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    let mut opts = MockOptions::new(39_000, 17);
    opts.rate_limit = Some("30/60s".to_owned());
    let ctx = Ctx::start(env, "rate-limit", opts)?;
    let expected = verify::expected_map(ctx.opts.expected_events());
    let config = cli::base_config(&ctx.mock, "parquet");
    let out = ctx.path("out");
    let run = ctx.run_with_deadline(ck, &config, &out, &[], &[], Duration::from_secs(300))?;
    let summary = verify::run_ok(ck, &run, "run");
    let rows_output = verify::num(summary.as_ref(), "rows_output");
    ck.check(
        rows_output == expected.len() as u64,
        format!("rows_output {rows_output} = {}", expected.len()),
    );
    let report = verify::table(ck, &out, Format::Parquet, &expected, false)?;
    let queries = ctx.mock.query_requests()?;
    ck.check(
        queries > 30,
        format!("{queries} query requests > 30: the throttle was hit"),
    );
    ck.note(format!(
        "{} rows, {queries} query requests, retries {}, run {:.1} s",
        report.rows,
        verify::num(summary.as_ref(), "retries"),
        run.wall.as_secs_f64()
    ));
    Ok(())
}

/// A project in America/New_York (-05:00) and one in Asia/Kolkata (+05:30, the mock's
/// default): every timestamp reads back as the source instant.
pub fn timezone(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    for (tz, label) in [
        (
            Some(("-05:00", "America/New_York")),
            "-05:00 America/New_York",
        ),
        (None, "+05:30 Asia/Kolkata (default)"),
    ] {
        let mut opts = MockOptions::new(3_000, 23);
        opts.tz = tz;
        let ctx = Ctx::start(env, "timezone", opts)?;
        let expected = verify::expected_map(ctx.opts.expected_events());
        let config = cli::base_config(&ctx.mock, "parquet");
        let out = ctx.path("out");
        let run = ctx.run(ck, &config, &out, &[], &[])?;
        verify::run_ok(ck, &run, label);
        // A JSONL run too: its timestamps are text with an explicit offset.
        let out_jsonl = ctx.path("out-jsonl");
        let run = ctx.run(ck, &config, &out_jsonl, &[], &["--format", "jsonl"])?;
        verify::run_ok(ck, &run, &format!("{label} jsonl"));
        verify::table(ck, &out, Format::Parquet, &expected, true)?;
        verify::table(ck, &out_jsonl, Format::Jsonl, &expected, true)?;
        ck.note(format!("{label}: {} events", expected.len()));
    }
    Ok(())
}

/// Without faults, N events with page size p cost exactly ⌈N/p⌉ + 1 query requests: the
/// pages that hold rows (the last one short) and the empty page that alone ends a scan. No
/// slack: nothing else is a query request, so one more is waste and one fewer means the scan
/// stopped before an empty page.
pub fn request_budget(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    let (n, page) = (10_500usize, 1_000usize);
    let ctx = Ctx::start(env, "request-budget", MockOptions::new(n, 29))?;
    let expected: Expected = verify::expected_map(ctx.opts.expected_events());
    let config = cli::base_config(&ctx.mock, "parquet");
    let out = ctx.path("out");
    ctx.mock.reset_counters()?;
    let run = ctx.run(ck, &config, &out, &[], &[])?;
    let summary = verify::run_ok(ck, &run, "run");
    let queries = ctx.mock.query_requests()?;
    let total = ctx.mock.total_requests()?;
    // At the default `query_concurrency: 3` the first page comes back full, one planning
    // query splits the rest into slices, and each slice ends with its own empty page; its
    // pages are sized so the slices need no more pages than one scan.
    let slices = verify::num(summary.as_ref(), "slices") as usize;
    let plans = usize::from(slices > 1);
    let want = n.div_ceil(page) + slices + plans;
    ck.check(
        slices == 3 && queries as usize <= want,
        format!(
            "{queries} query requests ≤ ⌈{n}/{page}⌉ + {slices} slices + {plans} planning \
             query = {want} (3 slices expected)"
        ),
    );
    // And one scan: ⌈N/page⌉ pages, then the empty page that ends it.
    let mut sequential = config.clone();
    sequential["performance"]["query_concurrency"] = json!(1);
    let out1 = ctx.path("out-sequential");
    ctx.mock.reset_counters()?;
    let run = ctx.run(ck, &sequential, &out1, &[], &[])?;
    verify::run_ok(ck, &run, "run with query_concurrency 1");
    let one_scan = ctx.mock.query_requests()?;
    ck.check(
        one_scan as usize == n.div_ceil(page) + 1,
        format!(
            "query_concurrency 1: {one_scan} query requests = ⌈{n}/{page}⌉ + 1 = {}",
            n.div_ceil(page) + 1
        ),
    );
    let reported = verify::num(summary.as_ref(), "requests");
    ck.check(
        reported == total,
        format!("summary requests {reported} = requests the mock received {total}"),
    );
    verify::table(ck, &out, Format::Parquet, &expected, false)?;
    verify::table(ck, &out1, Format::Parquet, &expected, false)?;
    ck.note(format!(
        "{slices} slices: {queries} query requests (bound {want}), {total} requests in all; \
         one scan: {one_scan}"
    ));
    Ok(())
}
