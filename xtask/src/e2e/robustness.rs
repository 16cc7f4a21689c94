//! The robustness scenarios: `kill -9` at random instants, a crash between part rename and
//! state commit, secrets in logs and files, invalid configs, and `doctor`.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context;
use posthog_mock::QueryLatency;
use serde_json::{Value, json};

use super::Env;
use super::cli::{self, CliRun, TABLE};
use super::mock::{self, MockOptions};
use super::output;
use super::scenarios::{Ctx, RUN_DEADLINE, make_events};
use super::verify::{self, Checks, Format};

/// ~30 000 events, a part (and a state commit) every 1 000 rows, each query delayed 200 ms
/// so a run takes several seconds; SIGKILL it at random instants (seeded, printed), re-run,
/// at least 8 kills; then run to completion. The committed parts hold each UUID exactly
/// once, and they are exactly the `part-*` files on disk.
pub fn kill9(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    let ctx = Ctx::start(env, "kill9", MockOptions::new(30_000, 31))?;
    let config = cli::base_config(&ctx.mock, "parquet");
    ctx.mock.push_faults(&json!({
        "route": "query", "fault": {"type": "delay", "ms": 200}, "times": 100_000
    }))?;
    let plan = KillPlan {
        kills: 10,
        min_kills: 8,
        attempts: 40,
        busy_ms: 250..2_000,
        late_ms: 2_000..5_000,
    };
    // The final run goes without the delay.
    let f = kill_then_finish(&ctx, ck, &config, &plan, || ctx.mock.clear_faults())?;
    ck.note(format!(
        "seed {}, {} kills at ms [{}], {} rows in {} parts (largest {})",
        env.kill_seed,
        f.kills.kills,
        f.kills.delays.join(" "),
        f.report.rows,
        f.report.parts,
        f.report.largest_part
    ));
    Ok(())
}

/// `kill9` with `performance.query_concurrency: 3` against a mock that holds every query
/// 200 ms in PostHog's pool of 3 slots: 30 000 events in pages of 1 000, so a run plans its
/// range (one `quantiles(` query) and reads it as concurrent keyset slices, and the kills land
/// while several slices are in flight. At least 5 kills, each followed by the committed-parts
/// checks; then a clean run, a run that outputs 0 rows, and every source event exactly once.
/// Slicing must be seen: at least one planning query reached the mock and it held more than
/// one query at once.
pub fn kill9_sliced(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    let opts = MockOptions {
        query_latency: Some(QueryLatency::new(
            Duration::from_millis(200),
            Duration::ZERO,
        )),
        ..MockOptions::new(30_000, 37)
    };
    let ctx = Ctx::start(env, "kill9_sliced", opts)?;
    let mut config = cli::base_config(&ctx.mock, "parquet");
    config["performance"]["query_concurrency"] = json!(3);
    let plan = KillPlan {
        kills: 8,
        min_kills: 5,
        attempts: 40,
        busy_ms: 400..2_500,
        late_ms: 2_500..4_000,
    };
    let f = kill_then_finish(&ctx, ck, &config, &plan, || Ok(()))?;
    // The request log holds every request since the mock started (nothing reset it).
    let queries = ctx.mock.query_requests()?;
    let planning = ctx.mock.query_requests_containing("quantiles(")?;
    let peak = ctx.mock.counter("/peak_queries_held")?;
    let throttled = ctx.mock.counter("/concurrency_throttled")?;
    ck.check(
        planning >= 1,
        format!(
            "slicing happened: {planning} planning queries (`quantiles(`) reached the mock (≥ 1)"
        ),
    );
    ck.check(
        peak >= 2,
        format!("the mock held up to {peak} queries at once (≥ 2: slices read concurrently)"),
    );
    ck.check(
        throttled == 0,
        format!("no query waited out the mock's queue for a 429 ({throttled})"),
    );
    ck.check(
        f.kills.with_ranges >= 1,
        format!(
            "{} kills left ranges committed beyond the watermark (≥ 1: the resume reads only \
             the gaps between them)",
            f.kills.with_ranges
        ),
    );
    ck.note(format!(
        "seed {}, {} kills at ms [{}], {queries} queries ({planning} planning) in {} runs, \
         slices of the last two runs [{}], peak {peak} held, {} rows in {} parts",
        env.kill_seed,
        f.kills.kills,
        f.kills.delays.join(" "),
        f.kills.delays.len() + 2,
        f.slices
            .map(|n| n.map_or("?".to_owned(), |n| n.to_string()))
            .join(" "),
        f.report.rows,
        f.report.parts,
    ));
    Ok(())
}

/// When [`kill_repeatedly`] kills and when it stops.
struct KillPlan {
    /// Kills to deliver before stopping.
    kills: usize,
    /// Kills the scenario must deliver to pass.
    min_kills: usize,
    /// Runs to start at most.
    attempts: usize,
    /// Kill instants (ms after the start) while the run is busy, 7 in 10 attempts; 2 in 10
    /// land in the start-up (5 ms to the start of this range), 1 in 10 in `late_ms`.
    busy_ms: std::ops::Range<u64>,
    late_ms: std::ops::Range<u64>,
}

/// What [`kill_then_finish`] saw.
struct Finished {
    kills: Kills,
    /// The table after the last run.
    report: verify::TableReport,
    /// The `slices` of the final run and of the run after it, as their summaries report them.
    slices: [Option<u64>; 2],
}

/// The shared body of the kill scenarios: prints the seed, kills runs per `plan` (checking
/// what is committed after each kill), calls `before_final`, then a run to completion, a run
/// that must output 0 rows, and every source event exactly once, value by value.
fn kill_then_finish(
    ctx: &Ctx,
    ck: &mut Checks,
    config: &Value,
    plan: &KillPlan,
    before_final: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<Finished> {
    let mut source = ctx.opts.expected_events();
    let out = ctx.path("out");
    let seed = ctx.env.kill_seed;
    println!("   kill seed {seed} (rerun with --kill-seed {seed})");
    let k = kill_repeatedly(ctx, ck, config, &out, &mut source, plan)?;
    ck.check(
        k.after_kill.is_empty(),
        format!(
            "after every kill the committed parts exist, match their hashes, hold no UUID twice{}",
            k.after_kill
                .first()
                .map(|f| format!(" — {f}"))
                .unwrap_or_default()
        ),
    );
    ck.check(
        k.kills >= plan.min_kills,
        format!(
            "{} SIGKILLs delivered mid-run (≥ {}), {} runs finished first",
            k.kills, plan.min_kills, k.finished
        ),
    );
    ck.check(
        k.torn_state == 0,
        format!(
            "state.json always parses after a kill ({} torn)",
            k.torn_state
        ),
    );
    before_final()?;
    let run = ctx.run(ck, config, &out, &[], &[])?;
    let last = verify::run_ok(ck, &run, "final run");
    let run = ctx.run(ck, config, &out, &[], &[])?;
    let again = verify::run_ok(ck, &run, "run after the final run");
    let slices = [&last, &again].map(|s| s.as_ref().and_then(|v| v["slices"].as_u64()));
    let extra = verify::num(again.as_ref(), "rows_output");
    ck.check(
        extra == 0,
        format!("a run after the final run outputs {extra} rows (0)"),
    );
    let expected = verify::expected_map(source);
    let report = verify::table(ck, &out, Format::Parquet, &expected, true)?;
    Ok(Finished {
        kills: k,
        report,
        slices,
    })
}

/// What [`kill_repeatedly`] saw.
#[derive(Default)]
struct Kills {
    kills: usize,
    /// Runs that finished before their kill instant.
    finished: usize,
    /// Each attempt's kill instant in ms, `(done)` when the run finished first.
    delays: Vec<String>,
    /// Kills after which `state.json` did not parse.
    torn_state: usize,
    /// What was wrong with the committed parts after a kill.
    after_kill: Vec<String>,
    /// Kills after which the state recorded ranges committed beyond the watermark (slices
    /// further ahead than the first unfinished one).
    with_ranges: usize,
}

/// The number of `committed_ranges` the table's state records (0 when there is no state).
fn committed_ranges(state_path: &std::path::Path) -> usize {
    std::fs::read(state_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|v| v[cli::TABLE]["committed_ranges"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// Runs and SIGKILLs the CLI at seeded random instants until `plan.kills` kills (or
/// `plan.attempts` runs), checking after each what is committed; a run that finishes first
/// gets new events in `source` for the next ones.
fn kill_repeatedly(
    ctx: &Ctx,
    ck: &mut Checks,
    config: &Value,
    out: &std::path::Path,
    source: &mut Vec<posthog_mock::Event>,
    plan: &KillPlan,
) -> anyhow::Result<Kills> {
    let seed = ctx.env.kill_seed;
    let args = ctx.run_args(config, out, &[], &[])?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut max_ts = source
        .iter()
        .map(|e| e.timestamp)
        .max()
        .context("no events")?;
    let mut expected = verify::expected_map(source.iter().cloned());
    let crashed = verify::Look {
        values: false,
        complete: false,
        ..verify::Look::new(out, Format::Parquet)
    };
    let mut k = Kills::default();
    for attempt in 0..plan.attempts {
        if k.kills >= plan.kills {
            break;
        }
        // Mostly inside the run, some right at start-up, a few late.
        let ms = match rng.u8(..10) {
            0..2 => rng.u64(5..plan.busy_ms.start),
            2..9 => rng.u64(plan.busy_ms.clone()),
            _ => rng.u64(plan.late_ms.clone()),
        };
        let running = cli::spawn(&ctx.env.cli, ctx.work.path(), &args, &[])?;
        let run = running.kill_at(Duration::from_millis(ms))?;
        ctx.no_key_in(ck, &run);
        if run.killed {
            k.kills += 1;
            k.delays.push(format!("{ms}"));
        } else {
            k.finished += 1;
            k.delays.push(format!("{ms}(done)"));
            if run.code != Some(0) {
                ck.fail(format!(
                    "attempt {attempt}: a run after a kill failed: {}",
                    run.describe()
                ));
            }
            // Give the next runs something to do.
            let mut more_rng = fastrand::Rng::with_seed(seed ^ attempt as u64);
            let base = max_ts;
            let more = make_events(&mut more_rng, "after-kill", 8_000, |i| {
                base + time::Duration::milliseconds(100 * (i as i64 + 1))
            });
            max_ts = more.iter().map(|e| e.timestamp).max().unwrap_or(max_ts);
            ctx.mock.insert_events(&more)?;
            expected.extend(more.iter().map(|e| (e.uuid, e.clone())));
            source.extend(more);
        }
        let state_path = out.join("state.json");
        if state_path.exists() && output::load_state(&state_path).is_err() {
            k.torn_state += 1;
            continue;
        }
        if committed_ranges(&state_path) > 0 {
            k.with_ranges += 1;
        }
        // What is committed at this instant: durable parts, each UUID at most once.
        let mut quiet = Checks::default();
        verify::table_with(&mut quiet, &crashed, &expected)?;
        if !quiet.passed() {
            k.after_kill.push(format!(
                "after the kill at {ms} ms: {}",
                quiet.failures().join("; ")
            ));
        }
    }
    Ok(k)
}

/// What a crash between "part renamed" and "state committed" leaves: a successful run, its
/// state copied aside, new events, a second run, then the old state put back. The next run
/// must remove the parts no state names and still hold each UUID exactly once.
pub fn crash_before_commit(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    let ctx = Ctx::start(env, "crash-before-commit", MockOptions::new(5_000, 41))?;
    let mut source = ctx.opts.expected_events();
    let max_ts = source
        .iter()
        .map(|e| e.timestamp)
        .max()
        .context("no events")?;
    let config = cli::base_config(&ctx.mock, "parquet");
    let out = ctx.path("out");
    let state_path = out.join("state.json");
    let saved = ctx.path("state.json.saved");

    let run = ctx.run(ck, &config, &out, &[], &[])?;
    verify::run_ok(ck, &run, "run 1");
    std::fs::copy(&state_path, &saved).context("saving state.json")?;
    let before = state_part_paths(&out)?;

    let mut rng = fastrand::Rng::with_seed(41);
    let more = make_events(&mut rng, "uncommitted", 2_500, |i| {
        max_ts + time::Duration::milliseconds(400 * (i as i64 + 1))
    });
    ctx.mock.insert_events(&more)?;
    source.extend(more);
    let run = ctx.run(ck, &config, &out, &[], &[])?;
    verify::run_ok(ck, &run, "run 2");
    let after = state_part_paths(&out)?;
    let orphans: Vec<_> = after.difference(&before).cloned().collect();
    ck.check(
        !orphans.is_empty(),
        format!(
            "run 2 wrote {} new parts (orphans once the old state is back)",
            orphans.len()
        ),
    );

    std::fs::copy(&saved, &state_path).context("restoring state.json")?;
    let run = ctx.run(ck, &config, &out, &[], &[])?;
    let summary = verify::run_ok(ck, &run, "run 3 (after restoring the old state)");
    let rows3 = verify::num(summary.as_ref(), "rows_output");
    let final_parts = state_part_paths(&out)?;
    let survived: Vec<String> = orphans
        .iter()
        .filter(|p| p.exists() && !final_parts.contains(*p))
        .map(|p| verify::name(p))
        .collect();
    let reused = orphans.iter().filter(|p| final_parts.contains(*p)).count();
    ck.check(
        survived.is_empty(),
        format!(
            "orphan parts removed: {} of {} gone, {reused} names reused by committed parts, {} left behind {:?}",
            orphans.len() - reused - survived.len(),
            orphans.len(),
            survived.len(),
            survived
        ),
    );
    let expected = verify::expected_map(source);
    let report = verify::table(ck, &out, Format::Parquet, &expected, true)?;
    ck.note(format!(
        "{} orphans, run 3 re-output {rows3} rows, {} rows in {} parts (largest {})",
        orphans.len(),
        report.rows,
        report.parts,
        report.largest_part
    ));
    Ok(())
}

fn state_part_paths(out: &std::path::Path) -> anyhow::Result<BTreeSet<std::path::PathBuf>> {
    let state = output::load_state(&out.join("state.json"))?;
    let sets = output::part_sets(Some(&state), &out.join(TABLE), TABLE)?;
    Ok(sets.state_paths())
}

/// Debug logs with `verbose_http`, text and JSON log formats, `run` and `doctor`, the key from
/// the config and from `--api-key-file`, a wrong key: no key string in stdout, stderr or any
/// file under the output directory.
pub fn secrets(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    let ctx = Ctx::start(env, "secrets", MockOptions::new(2_000, 43))?;
    let mut config = cli::base_config(&ctx.mock, "parquet");
    config["logging"] = json!({"level": "debug", "verbose_http": true});
    let out = ctx.path("out");
    let mut runs: Vec<CliRun> = Vec::new();

    let run = ctx.run(ck, &config, &out, &["--log-level", "debug"], &[])?;
    verify::run_ok(ck, &run, "run, text logs");
    ck.check(
        !run.stderr.trim().is_empty(),
        "debug text logs were written to stderr",
    );
    runs.push(run);

    // New events so the second run fetches pages again.
    let mut rng = fastrand::Rng::with_seed(43);
    let more = make_events(&mut rng, "secrets", 500, |i| {
        time::macros::datetime!(2025-01-08 00:00 UTC) + time::Duration::seconds(i as i64)
    });
    ctx.mock.insert_events(&more)?;
    let run = ctx.run(
        ck,
        &config,
        &out,
        &["--log-level", "debug", "--log-format", "json"],
        &[],
    )?;
    verify::run_ok(ck, &run, "run, JSON logs");
    json_logs(ck, &run);
    runs.push(run);

    runs.extend(doctor_debug_logs(&ctx, ck, &config)?);

    // The key from a file (Docker/Kubernetes secret), not from the config.
    let key_file = ctx.path("api-key");
    std::fs::write(&key_file, format!("{}\n", ctx.mock.key)).context("writing the key file")?;
    let mut keyless = config.clone();
    if let Some(conn) = keyless["resolved_connection"].as_object_mut() {
        conn.remove("api_key");
    }
    let out_file = ctx.path("out-keyfile");
    let key_arg = key_file.to_string_lossy().into_owned();
    let run = ctx.run(
        ck,
        &keyless,
        &out_file,
        &["--log-level", "debug", "--api-key-file", &key_arg],
        &[],
    )?;
    verify::run_ok(ck, &run, "run with --api-key-file");
    runs.push(run);

    let out_bad = ctx.path("out-wrong-key");
    runs.push(wrong_key_run(&ctx, ck, &config, &out_bad)?);

    // The mock's project endpoint returns the project key (`api_token`); verbose_http logs
    // response bodies, so it must be masked too.
    let refs: Vec<&CliRun> = runs.iter().collect();
    for secret in [&ctx.mock.key, &ctx.mock.project_key] {
        verify::secret_absent(ck, secret, &refs, &out)?;
        for dir in [&out_file, &out_bad] {
            verify::secret_absent(ck, secret, &[], dir)?;
        }
    }
    let stderr_bytes: usize = runs.iter().map(|r| r.stderr.len()).sum();
    ck.note(format!(
        "{} runs, {stderr_bytes} bytes of debug logs scanned",
        runs.len()
    ));
    Ok(())
}

/// `doctor` with debug text logs, then debug JSON logs: both healthy.
fn doctor_debug_logs(ctx: &Ctx, ck: &mut Checks, config: &Value) -> anyhow::Result<Vec<CliRun>> {
    let cfg_path = ctx.config("doctor.yaml", config)?;
    let mut runs = Vec::new();
    for global in [
        &["--log-level", "debug"][..],
        &["--log-level", "debug", "--log-format", "json"],
    ] {
        let mut args = cli::args(global.iter().copied());
        args.extend(cli::args(["doctor", "--config"]));
        args.push(cfg_path.clone().into_os_string());
        let run = cli::run(
            &ctx.env.cli,
            ctx.work.path(),
            &args,
            &[],
            Duration::from_secs(30),
        )?;
        ck.check(
            run.code == Some(0),
            format!("doctor {}: exit 0 ({})", global.join(" "), run.describe()),
        );
        runs.push(run);
    }
    Ok(runs)
}

/// A wrong key: the run fails with exit 3 and its error path does not print the key either.
fn wrong_key_run(
    ctx: &Ctx,
    ck: &mut Checks,
    config: &Value,
    out: &std::path::Path,
) -> anyhow::Result<CliRun> {
    let wrong = "phx_e2e_wrong_key_0123456789abcdef";
    let mut bad = config.clone();
    bad["resolved_connection"]["api_key"] = json!(wrong);
    let run = ctx.run(ck, &bad, out, &["--log-level", "debug"], &[])?;
    ck.check(
        run.code == Some(3),
        format!("run with a wrong key exits 3 (auth): {}", run.describe()),
    );
    ck.check(
        !run.stdout.contains(wrong) && !run.stderr.contains(wrong),
        "the wrong key is not printed either",
    );
    Ok(run)
}

fn json_logs(ck: &mut Checks, run: &CliRun) {
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let bad: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !matches!(serde_json::from_str::<Value>(l), Ok(Value::Object(_))))
        .collect();
    ck.check(
        !lines.is_empty() && bad.is_empty(),
        format!(
            "--log-format json: {} stderr lines, {} not JSON objects{}",
            lines.len(),
            bad.len(),
            bad.first()
                .map(|l| format!(", e.g. {}", cli::clip(l, 120)))
                .unwrap_or_default()
        ),
    );
}

/// Bad configs: exit 2, one stderr message naming the field, no request to the mock.
pub fn invalid_config(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    let ctx = Ctx::start(env, "invalid-config", MockOptions::new(100, 47))?;
    let base = cli::base_config(&ctx.mock, "parquet");
    type Mutate = fn(&mut Value);
    let cases: [(&str, &str, Mutate); 10] = [
        ("page_size 70000", "config.source.page_size", |c| {
            c["config"]["source"]["page_size"] = json!(70_000)
        }),
        ("unknown region", "region", |c| {
            c["resolved_connection"]["region"] = json!("mars")
        }),
        ("bad initial_since", "initial_since", |c| {
            c["config"]["source"]["initial_since"] = json!("yesterday-ish")
        }),
        ("unknown field", "page_sise", |c| {
            c["config"]["source"]["page_sise"] = json!(1000)
        }),
        ("missing key, no env, no file", "api_key", |c| {
            if let Some(conn) = c["resolved_connection"].as_object_mut() {
                conn.remove("api_key");
            }
        }),
        ("http:// on a non-loopback host", "custom_base_url", |c| {
            c["resolved_connection"]["custom_base_url"] = json!("http://posthog.example.com")
        }),
        ("lookback out of range", "lookback_window_minutes", |c| {
            c["config"]["source"]["lookback_window_minutes"] = json!(99_999)
        }),
        ("unknown output format", "format", |c| {
            c["output"]["format"] = json!("xml")
        }),
        ("project key instead of a personal key", "api_key", |c| {
            c["resolved_connection"]["api_key"] = json!("phc_mock_project_key")
        }),
        ("part_rows too small", "part_rows", |c| {
            c["output"]["part_rows"] = json!(10)
        }),
    ];
    let mut exit2 = 0;
    for (label, field, mutate) in cases {
        let mut config = base.clone();
        mutate(&mut config);
        let out = ctx.path(&format!("out-{}", label.replace(' ', "_")));
        let run = ctx.run(ck, &config, &out, &[], &[])?;
        one_message(ck, &run, label, field);
        if run.code == Some(2) {
            exit2 += 1;
        }
        ck.check(
            !out.join(TABLE).exists(),
            format!("{label}: no table directory created"),
        );
    }
    // Usage errors.
    let cfg = ctx.config("valid.yaml", &base)?;
    let cfg_arg = cfg.to_string_lossy().into_owned();
    for (label, argv, field) in [
        (
            "--format xml",
            vec!["run", "--config", cfg_arg.as_str(), "--format", "xml"],
            "format",
        ),
        ("run without --config", vec!["run"], "config"),
    ] {
        let run = cli::run(
            &env.cli,
            ctx.work.path(),
            &cli::args(argv),
            &[],
            RUN_DEADLINE,
        )?;
        ck.check(
            run.code == Some(2),
            format!("{label}: exit 2 (got {:?})", run.code),
        );
        ck.check(
            run.stderr.contains(field),
            format!(
                "{label}: stderr names `{field}`: {}",
                cli::clip(&cli::last_lines(&run.stderr, 4), 200)
            ),
        );
    }
    let total = ctx.mock.total_requests()?;
    ck.check(
        total == 0,
        format!("the mock received {total} requests (0)"),
    );
    ck.note(format!(
        "{exit2}/10 configs refused with exit 2, {total} requests"
    ));
    Ok(())
}

/// Exit 2 and exactly one non-empty stderr line, naming `field`.
fn one_message(ck: &mut Checks, run: &CliRun, label: &str, field: &str) {
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    ck.check(
        run.code == Some(2),
        format!("{label}: exit 2 (got {:?})", run.code),
    );
    ck.check(
        lines.len() == 1 && lines[0].contains(field),
        format!(
            "{label}: one stderr message naming `{field}` ({} lines: {})",
            lines.len(),
            cli::clip(&lines.join(" ⏎ "), 300)
        ),
    );
}

/// `doctor`: wrong key → `error`/`auth`, exit 1, within 2 s; right key → healthy, exit 0;
/// nothing listening → `network`; a server slower than the timeout → `timeout`, on time.
pub fn doctor(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    let ctx = Ctx::start(env, "doctor", MockOptions::new(100, 53))?;
    let base = cli::base_config(&ctx.mock, "parquet");
    doctor_healthy(&ctx, ck, &base)?;
    let wrong_wall = doctor_wrong_key(&ctx, ck, &base)?;
    doctor_nothing_listening(&ctx, ck, &base)?;
    let slow_wall = doctor_slow_server(&ctx, ck, &base)?;
    ck.note(format!(
        "wrong key answered in {:.2} s, slow server in {:.2} s",
        wrong_wall.as_secs_f64(),
        slow_wall.as_secs_f64()
    ));
    Ok(())
}

/// `posthog-cli doctor` with `config`, and the report it printed (`Null`, and a failed
/// check, when it printed none).
fn run_doctor(
    ctx: &Ctx,
    ck: &mut Checks,
    config: &Value,
    label: &str,
) -> anyhow::Result<(CliRun, Value)> {
    let path = ctx.config(&format!("doctor-{}.yaml", label.replace(' ', "_")), config)?;
    let mut args = cli::args(["doctor", "--config"]);
    args.push(path.into_os_string());
    let run = cli::run(
        &ctx.env.cli,
        ctx.work.path(),
        &args,
        &[],
        Duration::from_secs(30),
    )?;
    ctx.no_key_in(ck, &run);
    let json = match run.json() {
        Ok(v) => v,
        Err(e) => {
            ck.fail(format!("doctor {label}: {e}"));
            Value::Null
        }
    };
    Ok((run, json))
}

/// Right key: healthy, exit 0, with the report's fields.
fn doctor_healthy(ctx: &Ctx, ck: &mut Checks, base: &Value) -> anyhow::Result<()> {
    let (run, v) = run_doctor(ctx, ck, base, "healthy")?;
    ck.check(
        run.code == Some(0) && v["status"] == "healthy",
        format!(
            "right key: exit 0, status healthy (got {:?}, {})",
            run.code, v["status"]
        ),
    );
    let fields_ok =
        v["message"].is_string() && v["timestamp"].is_string() && v["latency_ms"].is_number();
    ck.check(
        fields_ok,
        format!("healthy report has message, timestamp, latency_ms: {v}"),
    );
    Ok(())
}

/// Wrong key: `error`/`auth`, exit 1, within 2 s, not retried, not printed. Returns its time.
fn doctor_wrong_key(ctx: &Ctx, ck: &mut Checks, base: &Value) -> anyhow::Result<Duration> {
    let mut wrong = base.clone();
    wrong["resolved_connection"]["api_key"] = json!("phx_wrong");
    ctx.mock.reset_counters()?;
    let (run, v) = run_doctor(ctx, ck, &wrong, "wrong key")?;
    let requests = ctx.mock.total_requests()?;
    ck.check(
        run.code == Some(1) && v["status"] == "error" && v["category"] == "auth",
        format!(
            "wrong key: exit 1, status error, category auth (got {:?}, {}, {})",
            run.code, v["status"], v["category"]
        ),
    );
    ck.check(
        run.wall <= Duration::from_secs(2),
        format!(
            "wrong key: finished in {:.2} s (≤ 2 s)",
            run.wall.as_secs_f64()
        ),
    );
    ck.check(
        !run.stdout.contains("phx_wrong") && !run.stderr.contains("phx_wrong"),
        "wrong key: the key is not printed",
    );
    ck.check(
        requests <= 3,
        format!("wrong key: {requests} requests (a 401 is not retried)"),
    );
    Ok(run.wall)
}

/// Nothing listening: `network`, within 2 s.
fn doctor_nothing_listening(ctx: &Ctx, ck: &mut Checks, base: &Value) -> anyhow::Result<()> {
    let mut dead = base.clone();
    dead["resolved_connection"]["custom_base_url"] =
        json!(format!("http://127.0.0.1:{}", mock::dead_port()?));
    let (run, v) = run_doctor(ctx, ck, &dead, "dead port")?;
    ck.check(
        run.code == Some(1) && v["status"] == "error" && v["category"] == "network",
        format!(
            "nothing listening: exit 1, error, category network (got {:?}, {}, {})",
            run.code, v["status"], v["category"]
        ),
    );
    ck.check(
        run.wall <= Duration::from_secs(2),
        format!(
            "nothing listening: finished in {:.2} s (≤ 2 s)",
            run.wall.as_secs_f64()
        ),
    );
    Ok(())
}

/// A server slower than doctor's 2 s timeout: `timeout`, on time. Returns its time.
fn doctor_slow_server(ctx: &Ctx, ck: &mut Checks, base: &Value) -> anyhow::Result<Duration> {
    let routes = [
        "query",
        "query_status",
        "project",
        "me",
        "event_definitions",
        "property_definitions",
        "persons",
        "cohorts",
        "feature_flags",
    ];
    let faults: Vec<Value> = routes
        .iter()
        .map(|r| json!({"route": r, "fault": {"type": "delay", "ms": 8_000}, "times": 20}))
        .collect();
    ctx.mock.push_faults(&Value::Array(faults))?;
    let (run, v) = run_doctor(ctx, ck, base, "slow server")?;
    ctx.mock.clear_faults()?;
    ck.check(
        run.code == Some(1) && v["status"] == "error" && v["category"] == "timeout",
        format!(
            "slow server: exit 1, error, category timeout (got {:?}, {}, {})",
            run.code, v["status"], v["category"]
        ),
    );
    ck.check(
        run.wall <= Duration::from_millis(2_500),
        format!(
            "slow server: finished in {:.2} s (2 s timeout + start-up ≤ 2.5 s)",
            run.wall.as_secs_f64()
        ),
    );
    Ok(run.wall)
}

/// A second run on the same state while the first is running fails fast (exit 2, the state
/// is locked) and disturbs nothing; the first completes exactly once.
pub fn concurrent_run(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    let ctx = Ctx::start(env, "concurrent-run", MockOptions::new(10_000, 61))?;
    let expected = verify::expected_map(ctx.opts.expected_events());
    let config = cli::base_config(&ctx.mock, "parquet");
    let out = ctx.path("out");
    ctx.mock.push_faults(&json!({
        "route": "query", "fault": {"type": "delay", "ms": 300}, "times": 1_000
    }))?;
    let args = ctx.run_args(&config, &out, &[], &[])?;
    let first = cli::spawn(&env.cli, ctx.work.path(), &args, &[])?;
    std::thread::sleep(Duration::from_millis(800));
    let second = cli::run(
        &env.cli,
        ctx.work.path(),
        &args,
        &[],
        Duration::from_secs(60),
    )?;
    let first = first.wait(RUN_DEADLINE)?;
    ctx.no_key_in(ck, &second);
    ck.check(
        second.code == Some(2),
        format!(
            "the second run exits 2 (state locked): {}",
            second.describe()
        ),
    );
    ck.check(
        second.wall <= Duration::from_secs(2),
        format!(
            "the second run fails fast ({:.2} s)",
            second.wall.as_secs_f64()
        ),
    );
    ck.check(
        second.stderr.to_lowercase().contains("lock"),
        format!(
            "the second run says the state is locked: {}",
            cli::clip(&cli::last_lines(&second.stderr, 2), 200)
        ),
    );
    let summary = verify::run_ok(ck, &first, "the first run");
    ck.check(
        verify::num(summary.as_ref(), "rows_output") == expected.len() as u64,
        format!(
            "the first run output {} rows",
            verify::num(summary.as_ref(), "rows_output")
        ),
    );
    ctx.mock.clear_faults()?;
    let report = verify::table(ck, &out, Format::Parquet, &expected, false)?;
    ck.note(format!(
        "second run exit {:?} in {:.2} s; {} rows",
        second.code,
        second.wall.as_secs_f64(),
        report.rows
    ));
    Ok(())
}

/// Bad answers from the server — a malformed JSON body, a body cut short, a 200 whose
/// `results` is not a list — and a server that is not there: each run fails with a clear
/// error (exit 1, JSON status `error` on stdout) or, for a transport error, retries; what is
/// committed stays exactly-once; the next run completes the table.
pub fn bad_responses(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    let ctx = Ctx::start(env, "bad-responses", MockOptions::new(5_000, 59))?;
    let mut source = ctx.opts.expected_events();
    let mut max_ts = source
        .iter()
        .map(|e| e.timestamp)
        .max()
        .context("no events")?;
    let config = cli::base_config(&ctx.mock, "parquet");
    let out = ctx.path("out");
    let normal = json!({"route": "query", "fault": {"type": "delay", "ms": 0}, "times": 2});
    let cases = [
        ("malformed JSON", json!({"type": "malformed_json"}), true),
        (
            "results not a list",
            json!({"type": "status", "status": 200,
                   "body": "{\"columns\":[\"uuid\",\"event\"],\"types\":[],\"results\":\"nope\"}"}),
            true,
        ),
        ("truncated body", json!({"type": "truncated_body"}), false),
    ];
    let mut outcomes = Vec::new();
    for (i, (label, fault, must_fail)) in cases.into_iter().enumerate() {
        if i > 0 {
            // New events so the run has pages to fetch.
            let mut rng = fastrand::Rng::with_seed(59 + i as u64);
            let base = max_ts;
            let more = make_events(&mut rng, "bad-responses", 2_500, |k| {
                base + time::Duration::milliseconds(300 * (k as i64 + 1))
            });
            max_ts = more.iter().map(|e| e.timestamp).max().unwrap_or(max_ts);
            ctx.mock.insert_events(&more)?;
            source.extend(more);
        }
        let expected = verify::expected_map(source.iter().cloned());
        ctx.mock.clear_faults()?;
        ctx.mock
            .push_faults(&json!([normal, {"route": "query", "fault": fault, "times": 1}]))?;
        let run = ctx.run(ck, &config, &out, &[], &[])?;
        outcomes.push(format!("{label}: exit {:?}", run.code));
        if must_fail || run.code != Some(0) {
            ck.check(
                run.code == Some(1),
                format!("{label}: the run fails with exit 1: {}", run.describe()),
            );
            let status = run.json().ok().map(|v| {
                (
                    v["status"].as_str().unwrap_or("").to_owned(),
                    v["message"].as_str().unwrap_or("").to_owned(),
                )
            });
            ck.check(
                status
                    .as_ref()
                    .is_some_and(|(s, m)| s == "error" && !m.is_empty()),
                format!("{label}: stdout is a JSON error with a message: {status:?}"),
            );
            let look = verify::Look {
                values: false,
                complete: false,
                ..verify::Look::new(&out, Format::Parquet)
            };
            let mut quiet = Checks::default();
            verify::table_with(&mut quiet, &look, &expected)?;
            ck.check(
                quiet.passed(),
                format!(
                    "{label}: what the failed run committed holds no UUID twice {:?}",
                    quiet.failures()
                ),
            );
        }
        ctx.mock.clear_faults()?;
        let run = ctx.run(ck, &config, &out, &[], &[])?;
        verify::run_ok(ck, &run, &format!("{label}: the next run"));
        verify::table(ck, &out, Format::Parquet, &expected, false)?;
    }

    // Nobody listening: a run fails with exit 1 and category network, quickly.
    let mut dead = config.clone();
    dead["resolved_connection"]["custom_base_url"] =
        json!(format!("http://127.0.0.1:{}", mock::dead_port()?));
    let out_dead = ctx.path("out-dead");
    let run = ctx.run(ck, &dead, &out_dead, &[], &[])?;
    let category = run
        .json()
        .ok()
        .and_then(|v| v["category"].as_str().map(str::to_owned));
    ck.check(
        run.code == Some(1) && category.as_deref() == Some("network"),
        format!(
            "nothing listening: exit 1, category network (got {:?}, {category:?}) in {:.1} s",
            run.code,
            run.wall.as_secs_f64()
        ),
    );
    outcomes.push(format!("dead port: exit {:?}", run.code));
    ck.note(outcomes.join(", "));
    Ok(())
}
