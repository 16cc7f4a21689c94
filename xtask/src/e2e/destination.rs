//! The destination as one run owns it: a directory the run may not write fails it before the
//! first request; one table, one run at a time, under one state file; a committed part that
//! disappeared stops the next run until `run --repair` writes exactly its rows back.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use posthog_mock::Event;
use serde_json::{Value, json};

use super::Env;
use super::cli::{self, CliRun, TABLE};
use super::mock::MockOptions;
use super::output;
use super::paging::failure;
use super::scenarios::{Ctx, RUN_DEADLINE, make_events};
use super::verify::{self, Checks, Format};

/// The unprivileged user the CLI runs as when the suite runs as root.
const NOBODY: u32 = 65_534;

/// Who runs the CLI: the suite's own user when it is not root (directory permissions apply
/// to it), else user nobody through `setpriv`, because root ignores directory permissions.
struct Runner {
    prefix: Vec<OsString>,
    /// The uid files and directories the CLI must write are given to (`None`: our own).
    uid: Option<u32>,
    /// The CLI binary it runs: the build's own, or (as nobody) a copy in a directory nobody may
    /// enter, since the checkout may live under a directory only root can traverse.
    cli: PathBuf,
    _copy: Option<tempfile::TempDir>,
}

impl Runner {
    /// `None` (and a failed check) when we are root and cannot drop privileges: the scenario
    /// then proves nothing, so it fails rather than skips.
    fn new(env: &Env, ck: &mut Checks) -> anyhow::Result<Option<Runner>> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Ok(Some(Runner {
                prefix: Vec::new(),
                uid: None,
                cli: env.cli.clone(),
                _copy: None,
            }));
        }
        let prefix: Vec<OsString> = [
            "setpriv".to_owned(),
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".to_owned(),
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        let probe = Command::new(&prefix[0])
            .args(&prefix[1..])
            .arg("true")
            .status();
        let ok = matches!(&probe, Ok(s) if s.success());
        ck.check(
            ok,
            format!(
                "running as root, which ignores directory permissions: the CLI runs as uid {NOBODY} through `setpriv` ({})",
                match &probe {
                    Ok(s) => format!("probe {s}"),
                    Err(e) => format!("setpriv cannot run: {e}"),
                }
            ),
        );
        if !ok {
            return Ok(None);
        }
        let copy = tempfile::Builder::new()
            .prefix("posthog-e2e-cli-")
            .tempdir()
            .context("a directory for the CLI copy")?;
        set_mode(copy.path(), 0o755)?;
        let cli = copy.path().join("posthog-cli");
        std::fs::copy(&env.cli, &cli).context("copying the CLI for uid nobody")?;
        set_mode(&cli, 0o755)?;
        Ok(Some(Runner {
            prefix,
            uid: Some(NOBODY),
            cli,
            _copy: Some(copy),
        }))
    }

    fn who(&self) -> String {
        match self.uid {
            Some(uid) => format!("uid {uid}"),
            None => "this user".to_owned(),
        }
    }

    /// Makes `dir` (created if needed) writable by the CLI's user.
    fn give(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        if let Some(uid) = self.uid {
            std::os::unix::fs::chown(dir, Some(uid), Some(uid))
                .with_context(|| format!("chown {}", dir.display()))?;
        }
        Ok(())
    }

    /// Whether the CLI's user may create files in `dir` (`test -w` as that user).
    fn can_write(&self, dir: &Path) -> anyhow::Result<bool> {
        let status = match self.prefix.split_first() {
            None => Command::new("test").arg("-w").arg(dir).status(),
            Some((launcher, rest)) => Command::new(launcher)
                .args(rest)
                .arg("test")
                .arg("-w")
                .arg(dir)
                .status(),
        }
        .context("running test -w")?;
        Ok(status.success())
    }

    /// `posthog-cli run --config … --output-dir OUT EXTRA` as the CLI's user.
    fn run(
        &self,
        ctx: &Ctx,
        ck: &mut Checks,
        config: &Value,
        out: &Path,
        extra: &[&str],
    ) -> anyhow::Result<CliRun> {
        let args = ctx.run_args(config, out, &[], extra)?;
        let path = ctx.path("config.yaml");
        if let Some(uid) = self.uid {
            // The key is in it: readable by the CLI's user alone.
            std::os::unix::fs::chown(&path, Some(uid), Some(uid)).context("chown config.yaml")?;
        }
        set_mode(&path, 0o600)?;
        let run = cli::spawn_via(&self.prefix, &self.cli, ctx.work.path(), &args, &[])?
            .wait(RUN_DEADLINE)?;
        ctx.no_key_in(ck, &run);
        Ok(run)
    }
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// Gives a directory back its write permission when dropped (so the work dir can be removed
/// even when a check fails half-way).
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn new(dir: &Path) -> anyhow::Result<ReadOnly> {
        set_mode(dir, 0o555)?;
        Ok(ReadOnly(dir.to_path_buf()))
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = set_mode(&self.0, 0o755);
    }
}

/// File names and sizes in `dir` (empty when it does not exist).
fn listing(dir: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        out.insert(
            entry.file_name().to_string_lossy().into_owned(),
            entry.metadata()?.len(),
        );
    }
    Ok(out)
}

fn read_bytes(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// A run that must fail as not permitted, before any request, leaving the state and the
/// table directory as they were.
struct Refusal<'a> {
    label: &'a str,
    /// What the message must name (the directory or file refused).
    names: &'a Path,
    state: &'a Path,
    table_dir: &'a Path,
}

impl Refusal<'_> {
    fn check(
        &self,
        ck: &mut Checks,
        runner: &Runner,
        ctx: &Ctx,
        config: &Value,
        out: &Path,
        extra: &[&str],
    ) -> anyhow::Result<CliRun> {
        let label = self.label;
        let state_before = read_bytes(self.state)?;
        let table_before = listing(self.table_dir)?;
        ctx.mock.reset_counters()?;
        let run = runner.run(ctx, ck, config, out, extra)?;
        let (status, category, message) = failure(&run);
        ck.check(
            run.code == Some(3),
            format!("{label}: exit 3 ({})", run.describe()),
        );
        ck.check(
            status == "error" && category == "permission",
            format!("{label}: stdout status `{status}`, category `{category}` (error, permission)"),
        );
        let named = self.names.display().to_string();
        ck.check(
            message.contains(&named),
            format!(
                "{label}: the message names {named}: {}",
                cli::clip(&message, 240)
            ),
        );
        let total = ctx.mock.total_requests()?;
        ck.check(
            total == 0,
            format!("{label}: the mock received {total} requests (0)"),
        );
        ck.check(
            read_bytes(self.state)? == state_before,
            format!(
                "{label}: the state file is byte for byte as before ({})",
                if state_before.is_some() {
                    "committed by the previous run"
                } else {
                    "absent"
                }
            ),
        );
        let table_after = listing(self.table_dir)?;
        ck.check(
            table_after == table_before,
            format!(
                "{label}: the table directory holds the same {} files, same sizes",
                table_before.len()
            ),
        );
        Ok(run)
    }
}

/// New events after everything the mock holds, so a run has something to fetch.
fn more_events(ctx: &Ctx, source: &mut Vec<Event>, seed: u64, n: usize) -> anyhow::Result<()> {
    let max_ts = source
        .iter()
        .map(|e| e.timestamp)
        .max()
        .context("no events")?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let more = make_events(&mut rng, "destination", n, |i| {
        max_ts + time::Duration::milliseconds(250 * (i as i64 + 1))
    });
    ctx.mock.insert_events(&more)?;
    source.extend(more);
    Ok(())
}

/// A destination the CLI's user may not write — a fresh table directory, the table directory
/// of a table with committed parts, the `--state-file` directory, the `--metrics-file`
/// directory — fails the run with exit 3 (permission) before its first request, leaving the
/// state and the parts as they were; with the permission back, the next run completes the
/// table exactly once.
pub fn read_only_dest(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    let Some(runner) = Runner::new(env, ck)? else {
        return Ok(());
    };
    let notes = [
        read_only_fresh(env, &runner, ck)?,
        read_only_table_dir(env, &runner, ck)?,
        read_only_state_dir(env, &runner, ck)?,
        read_only_metrics_dir(env, &runner, ck)?,
    ];
    ck.note(format!("CLI as {}; {}", runner.who(), notes.join(", ")));
    Ok(())
}

/// A fresh table directory that exists but is read-only, and a fresh `--state-file`
/// directory that is read-only (the store cannot even lock).
fn read_only_fresh(env: &Env, runner: &Runner, ck: &mut Checks) -> anyhow::Result<&'static str> {
    let ctx = start(env, runner, "read-only-dest", 101)?;
    let config = cli::base_config(&ctx.mock, "parquet");
    let out = ctx.path("out-fresh");
    let table_dir = out.join(TABLE);
    runner.give(&out)?;
    runner.give(&table_dir)?;
    let _ro = ReadOnly::new(&table_dir)?;
    precondition(ck, runner, &table_dir, "fresh table directory")?;
    Refusal {
        label: "fresh read-only table directory",
        names: &table_dir,
        state: &out.join("state.json"),
        table_dir: &table_dir,
    }
    .check(ck, runner, &ctx, &config, &out, &[])?;

    let out = ctx.path("out-fresh-state");
    let state_dir = ctx.path("state-fresh");
    runner.give(&out)?;
    runner.give(&state_dir)?;
    let _ro = ReadOnly::new(&state_dir)?;
    precondition(ck, runner, &state_dir, "fresh state directory")?;
    let state = state_dir.join("state.json");
    let state_arg = state.to_string_lossy().into_owned();
    Refusal {
        label: "fresh read-only --state-file directory",
        names: &state_dir,
        state: &state,
        table_dir: &out.join(TABLE),
    }
    .check(
        ck,
        runner,
        &ctx,
        &config,
        &out,
        &["--state-file", &state_arg],
    )?;
    Ok("fresh table dir and fresh state dir: exit 3, 0 requests")
}

/// The table directory of a table with committed parts.
fn read_only_table_dir(
    env: &Env,
    runner: &Runner,
    ck: &mut Checks,
) -> anyhow::Result<&'static str> {
    let ctx = start(env, runner, "read-only-dest", 103)?;
    let mut source = ctx.opts.expected_events();
    let config = cli::base_config(&ctx.mock, "parquet");
    let out = ctx.path("out");
    let table_dir = out.join(TABLE);
    let state = out.join("state.json");
    runner.give(&out)?;
    let run = runner.run(&ctx, ck, &config, &out, &[])?;
    verify::run_ok(ck, &run, "table directory: the first run");
    more_events(&ctx, &mut source, 103, 500)?;
    {
        let _ro = ReadOnly::new(&table_dir)?;
        precondition(ck, runner, &table_dir, "table directory")?;
        Refusal {
            label: "read-only table directory",
            names: &table_dir,
            state: &state,
            table_dir: &table_dir,
        }
        .check(ck, runner, &ctx, &config, &out, &[])?;
    }
    after_refusal(
        ck,
        runner,
        &ctx,
        &config,
        &out,
        &[],
        &source,
        "table directory",
    )?;
    Ok("table dir: exit 3, 0 requests")
}

/// The directory of `--state-file`.
fn read_only_state_dir(
    env: &Env,
    runner: &Runner,
    ck: &mut Checks,
) -> anyhow::Result<&'static str> {
    let ctx = start(env, runner, "read-only-dest", 107)?;
    let mut source = ctx.opts.expected_events();
    let config = cli::base_config(&ctx.mock, "parquet");
    let out = ctx.path("out");
    let state_dir = ctx.path("state-dir");
    let state = state_dir.join("state.json");
    runner.give(&out)?;
    runner.give(&state_dir)?;
    let state_arg = state.to_string_lossy().into_owned();
    let extra = ["--state-file", state_arg.as_str()];
    let run = runner.run(&ctx, ck, &config, &out, &extra)?;
    verify::run_ok(ck, &run, "state directory: the first run");
    more_events(&ctx, &mut source, 107, 500)?;
    {
        let _ro = ReadOnly::new(&state_dir)?;
        precondition(ck, runner, &state_dir, "state directory")?;
        Refusal {
            label: "read-only --state-file directory",
            names: &state_dir,
            state: &state,
            table_dir: &out.join(TABLE),
        }
        .check(ck, runner, &ctx, &config, &out, &extra)?;
    }
    after_refusal(
        ck,
        runner,
        &ctx,
        &config,
        &out,
        &extra,
        &source,
        "state directory",
    )?;
    Ok("state dir: exit 3, 0 requests")
}

/// The directory of `--metrics-file`.
fn read_only_metrics_dir(
    env: &Env,
    runner: &Runner,
    ck: &mut Checks,
) -> anyhow::Result<&'static str> {
    let ctx = start(env, runner, "read-only-dest", 109)?;
    let mut source = ctx.opts.expected_events();
    let config = cli::base_config(&ctx.mock, "parquet");
    let out = ctx.path("out");
    let metrics_dir = ctx.path("metrics-dir");
    let metrics = metrics_dir.join("posthog.prom");
    runner.give(&out)?;
    runner.give(&metrics_dir)?;
    let run = runner.run(&ctx, ck, &config, &out, &[])?;
    verify::run_ok(ck, &run, "metrics directory: the first run");
    more_events(&ctx, &mut source, 109, 500)?;
    let metrics_arg = metrics.to_string_lossy().into_owned();
    let extra = ["--metrics-file", metrics_arg.as_str()];
    {
        let _ro = ReadOnly::new(&metrics_dir)?;
        precondition(ck, runner, &metrics_dir, "metrics directory")?;
        Refusal {
            label: "read-only --metrics-file directory",
            names: &metrics,
            state: &out.join("state.json"),
            table_dir: &out.join(TABLE),
        }
        .check(ck, runner, &ctx, &config, &out, &extra)?;
        ck.check(
            !metrics.exists(),
            "read-only --metrics-file directory: no metrics file appeared",
        );
    }
    after_refusal(
        ck,
        runner,
        &ctx,
        &config,
        &out,
        &extra,
        &source,
        "metrics directory",
    )?;
    ck.check(
        metrics.is_file(),
        "metrics directory writable again: the run wrote the metrics file",
    );
    Ok("metrics dir: exit 3, 0 requests")
}

/// A scenario context whose work directory the CLI's user can traverse and read.
fn start<'a>(env: &'a Env, runner: &Runner, name: &str, seed: u64) -> anyhow::Result<Ctx<'a>> {
    let ctx = Ctx::start(env, name, MockOptions::new(3_000, seed))?;
    if runner.uid.is_some() {
        set_mode(ctx.work.path(), 0o755)?;
    }
    Ok(ctx)
}

/// The directory really is read-only for the CLI's user (else the refusal proves nothing).
fn precondition(ck: &mut Checks, runner: &Runner, dir: &Path, what: &str) -> anyhow::Result<()> {
    let writable = runner.can_write(dir)?;
    ck.check(
        !writable,
        format!(
            "{what}: {} cannot write {} (test -w fails)",
            runner.who(),
            dir.display()
        ),
    );
    Ok(())
}

/// With the permission back, the run completes: the new events once, the table exactly once
/// and value by value.
#[allow(clippy::too_many_arguments)]
fn after_refusal(
    ck: &mut Checks,
    runner: &Runner,
    ctx: &Ctx,
    config: &Value,
    out: &Path,
    extra: &[&str],
    source: &[Event],
    what: &str,
) -> anyhow::Result<()> {
    let run = runner.run(ctx, ck, config, out, extra)?;
    let summary = verify::run_ok(ck, &run, &format!("{what} writable again: the next run"));
    let rows = verify::num(summary.as_ref(), "rows_output");
    ck.check(
        rows == 500,
        format!("{what} writable again: the next run outputs the 500 new events ({rows})"),
    );
    let state = match extra {
        ["--state-file", path] => PathBuf::from(*path),
        _ => out.join("state.json"),
    };
    let look = verify::Look {
        state,
        ..verify::Look::new(out, Format::Parquet)
    };
    verify::table_with(ck, &look, &verify::expected_map(source.iter().cloned()))?;
    Ok(())
}

/// Two runs on one table with different `--state-file`s: the second, started while the first
/// runs, fails at once (exit 2, naming the table lock) without a request; the first completes
/// exactly once. Afterwards a run with the other state file fails (exit 2, naming both state
/// files) and changes nothing; the owner's next run still works.
pub fn table_lock(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    let n = 10_000usize;
    let ctx = Ctx::start(env, "table-lock", MockOptions::new(n, 113))?;
    let table = TwoStateFiles::new(&ctx)?;
    let (first, second, rows) = table.concurrent_runs(ck, n)?;
    let third = table.other_state_file_afterwards(ck)?;
    ck.note(format!(
        "second run exit {:?} in {:.2} s while the first ran {:.1} s; other state file exit {:?}; {rows} rows",
        second.code,
        second.wall.as_secs_f64(),
        first.wall.as_secs_f64(),
        third.code
    ));
    Ok(())
}

/// One table and two state files (`a` keeps the table, `b` tries to), for [`table_lock`].
struct TwoStateFiles<'c, 'e> {
    ctx: &'c Ctx<'e>,
    expected: verify::Expected,
    out: PathBuf,
    state_a: PathBuf,
    state_b: PathBuf,
    a: String,
    b: String,
    args_a: Vec<OsString>,
    args_b: Vec<OsString>,
}

impl<'c, 'e> TwoStateFiles<'c, 'e> {
    fn new(ctx: &'c Ctx<'e>) -> anyhow::Result<Self> {
        let config = cli::base_config(&ctx.mock, "parquet");
        let out = ctx.path("out");
        let state_a = ctx.path("a/state.json");
        let state_b = ctx.path("b/state.json");
        let a = state_a.to_string_lossy().into_owned();
        let b = state_b.to_string_lossy().into_owned();
        let args_a = ctx.run_args(&config, &out, &[], &["--state-file", &a])?;
        let args_b = ctx.run_args(&config, &out, &[], &["--state-file", &b])?;
        Ok(TwoStateFiles {
            ctx,
            expected: verify::expected_map(ctx.opts.expected_events()),
            out,
            state_a,
            state_b,
            a,
            b,
            args_a,
            args_b,
        })
    }

    fn look(&self) -> verify::Look<'_> {
        verify::Look {
            state: self.state_a.clone(),
            values: false,
            ..verify::Look::new(&self.out, Format::Parquet)
        }
    }

    /// The second run, started while the first runs, fails at once naming the table lock;
    /// the first completes exactly once. Returns both runs and the first's rows.
    fn concurrent_runs(&self, ck: &mut Checks, n: usize) -> anyhow::Result<(CliRun, CliRun, u64)> {
        let (ctx, cli_bin) = (self.ctx, &self.ctx.env.cli);
        let lock = self.out.join(TABLE).join(".lock");
        ctx.mock.push_faults(&json!({
            "route": "query", "fault": {"type": "delay", "ms": 300}, "times": 1_000
        }))?;
        let started = Instant::now();
        let first = cli::spawn(cli_bin, ctx.work.path(), &self.args_a, &[])?;
        // The lock is taken before the first request: wait for that request.
        let deadline = Instant::now() + Duration::from_secs(20);
        while ctx.mock.query_requests()? == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let second = cli::run(
            cli_bin,
            ctx.work.path(),
            &self.args_b,
            &[],
            Duration::from_secs(60),
        )?;
        let second_done = started.elapsed();
        let first = first.wait(RUN_DEADLINE)?;
        ctx.no_key_in(ck, &second);
        ctx.no_key_in(ck, &first);
        let (status, category, message) = failure(&second);
        ck.check(
            second.code == Some(2),
            format!(
                "the second run (other state file) exits 2: {}",
                second.describe()
            ),
        );
        ck.check(
            status == "error" && category == "config",
            format!("the second run: status `{status}`, category `{category}` (error, config)"),
        );
        ck.check(
            second.wall <= Duration::from_secs(2),
            format!(
                "the second run fails at once ({:.2} s ≤ 2 s)",
                second.wall.as_secs_f64()
            ),
        );
        ck.check(
            message.contains(&lock.display().to_string()),
            format!(
                "the second run names the table lock {}: {}",
                lock.display(),
                cli::clip(&message, 240)
            ),
        );
        ck.check(
            first.wall > second_done,
            format!(
                "the first run was still running when the second ended ({:.2} s > {:.2} s)",
                first.wall.as_secs_f64(),
                second_done.as_secs_f64()
            ),
        );
        let rows = self.first_run_completed(ck, &first, n)?;
        Ok((first, second, rows))
    }

    /// The first run output every row once, and the mock saw only its requests.
    fn first_run_completed(
        &self,
        ck: &mut Checks,
        first: &CliRun,
        n: usize,
    ) -> anyhow::Result<u64> {
        let summary = verify::run_ok(ck, first, "the first run");
        let rows = verify::num(summary.as_ref(), "rows_output");
        ck.check(
            rows == n as u64,
            format!("the first run outputs {rows} rows ({n})"),
        );
        let reported = verify::num(summary.as_ref(), "requests");
        let total = self.ctx.mock.total_requests()?;
        ck.check(
            reported == total,
            format!(
                "the mock received {total} requests = the first run's {reported}: none from the second"
            ),
        );
        ck.check(!self.state_b.exists(), "the second run committed no state");
        verify::table_with(ck, &self.look(), &self.expected)?;
        Ok(rows)
    }

    /// After the first run: the other state file is still refused, naming both, and changes
    /// nothing; the owner's next run still works. Returns the refused run.
    fn other_state_file_afterwards(&self, ck: &mut Checks) -> anyhow::Result<CliRun> {
        let (ctx, cli_bin, out) = (self.ctx, &self.ctx.env.cli, &self.out);
        let (a, b) = (&self.a, &self.b);
        ctx.mock.clear_faults()?;
        ctx.mock.reset_counters()?;
        let state_before = read_bytes(&self.state_a)?;
        let table_before = listing(&out.join(TABLE))?;
        let third = cli::run(cli_bin, ctx.work.path(), &self.args_b, &[], RUN_DEADLINE)?;
        ctx.no_key_in(ck, &third);
        let (status, category, message) = failure(&third);
        ck.check(
            third.code == Some(2) && status == "error" && category == "config",
            format!(
                "afterwards, a run with the other state file: exit 2, category config (got {:?}, `{category}`)",
                third.code
            ),
        );
        ck.check(
            message.contains(a.as_str()) && message.contains(b.as_str()),
            format!(
                "it names both state files {a} and {b}: {}",
                cli::clip(&message, 300)
            ),
        );
        let total = ctx.mock.total_requests()?;
        ck.check(total == 0, format!("it sent {total} requests (0)"));
        ck.check(
            read_bytes(&self.state_a)? == state_before
                && listing(&out.join(TABLE))? == table_before,
            "it left the owner's state file and the table directory as they were",
        );
        ck.check(!self.state_b.exists(), "it committed no state of its own");
        verify::table_with(ck, &self.look(), &self.expected)?;
        let fourth = cli::run(cli_bin, ctx.work.path(), &self.args_a, &[], RUN_DEADLINE)?;
        ctx.no_key_in(ck, &fourth);
        let summary = verify::run_ok(ck, &fourth, "the owner's next run");
        let again = verify::num(summary.as_ref(), "rows_output");
        ck.check(
            again == 0,
            format!("the owner's next run outputs {again} rows (0)"),
        );
        Ok(third)
    }
}

/// A part of the state with its recorded range.
#[derive(Debug, Clone)]
struct Part {
    file: String,
    rows: u64,
    first: String,
    last: String,
}

fn parts_of(state: &Value) -> Vec<Part> {
    state[TABLE]["parts"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .map(|p| Part {
                    file: p["file"].as_str().unwrap_or("").to_owned(),
                    rows: p["rows"].as_u64().unwrap_or(0),
                    first: p["first_timestamp"].as_str().unwrap_or("").to_owned(),
                    last: p["last_timestamp"].as_str().unwrap_or("").to_owned(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The part's range in µs, when recorded.
fn range(p: &Part) -> Option<(i64, i64)> {
    Some((
        verify::parse_instant(&p.first)?,
        verify::parse_instant(&p.last)?,
    ))
}

/// In Parquet, CSV and JSONL: a run of several parts, new and late events (inside the
/// lookback) so the second run writes a part overlapping a part of the first; one committed
/// part of each run deleted. The next run fails (exit 1, data) naming each lost part with its
/// rows and range, without a request; `run --repair` writes back exactly their rows (the late
/// events the overlapping part holds are not written twice), and the table is exactly once
/// and value by value; the watermark does not move; the next run writes nothing.
pub fn lost_part(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    let mut notes = Vec::new();
    for (i, format) in [Format::Parquet, Format::Csv, Format::Jsonl]
        .into_iter()
        .enumerate()
    {
        notes.push(lost_part_in(env, ck, format, 127 + i as u64)?);
    }
    ck.note(notes.join("; "));
    Ok(())
}

fn lost_part_in(env: &Env, ck: &mut Checks, format: Format, seed: u64) -> anyhow::Result<String> {
    let f = format.name();
    let ctx = Ctx::start(env, "lost-part", MockOptions::new(5_000, seed))?;
    let t = LostParts::new(&ctx, format);
    let (source, run1, state2) = t.two_runs(ck, seed)?;
    let (lost1, lost2) = match t.choose_lost(ck, &run1, &state2) {
        Ok(lost) => lost,
        Err(note) => return Ok(note),
    };
    let lost = [lost1.clone(), lost2.clone()];
    for p in &lost {
        std::fs::remove_file(t.table_dir.join(&p.file))
            .with_context(|| format!("deleting {}", p.file))?;
    }
    t.refused(ck, &lost)?;
    let watermark = &state2[TABLE]["last_timestamp"];
    let (rows, repair_queries) = t.repair(ck, &lost, watermark)?;
    let expected = verify::expected_map(source);
    let report = verify::table(ck, &t.out, format, &expected, true)?;

    let run = ctx.run(ck, &t.config, &t.out, &[], &[])?;
    let summary = verify::run_ok(ck, &run, &format!("{f}: the run after the repair"));
    let again = verify::num(summary.as_ref(), "rows_output");
    ck.check(
        again == 0,
        format!("{f}: the run after the repair outputs {again} rows (0)"),
    );
    verify::table(ck, &t.out, format, &expected, false)?;
    Ok(format!(
        "{f}: lost {} ({} rows) + {} ({} rows), repaired {rows} rows in {repair_queries} queries, {} rows in {} parts",
        lost1.file, lost1.rows, lost2.file, lost2.rows, report.rows, report.parts
    ))
}

/// One format's table in [`lost_part`].
struct LostParts<'c, 'e> {
    ctx: &'c Ctx<'e>,
    /// The format's name.
    f: &'static str,
    config: Value,
    out: PathBuf,
    state_path: PathBuf,
    table_dir: PathBuf,
}

impl<'c, 'e> LostParts<'c, 'e> {
    fn new(ctx: &'c Ctx<'e>, format: Format) -> Self {
        let f = format.name();
        let out = ctx.path("out");
        LostParts {
            ctx,
            f,
            config: cli::base_config(&ctx.mock, f),
            state_path: out.join("state.json"),
            table_dir: out.join(TABLE),
            out,
        }
    }

    /// A first run of several parts, then 2 000 new events and 60 late ones inside the
    /// 15-minute lookback and a second run. Returns the source, the first run's parts and the
    /// state after the second.
    fn two_runs(
        &self,
        ck: &mut Checks,
        seed: u64,
    ) -> anyhow::Result<(Vec<Event>, Vec<Part>, Value)> {
        let (ctx, f) = (self.ctx, self.f);
        let mut source = ctx.opts.expected_events();
        let max_ts = source
            .iter()
            .map(|e| e.timestamp)
            .max()
            .context("no events")?;
        let run = ctx.run(ck, &self.config, &self.out, &[], &[])?;
        verify::run_ok(ck, &run, &format!("{f} run 1"));
        let run1 = parts_of(&output::load_state(&self.state_path)?);
        ck.check(
            run1.len() >= 3 && run1.iter().all(|p| range(p).is_some()),
            format!(
                "{f} run 1 committed {} parts (≥ 3), each with its range",
                run1.len()
            ),
        );
        let mut rng = fastrand::Rng::with_seed(seed);
        let new = make_events(&mut rng, "lost-new", 2_000, |i| {
            max_ts + time::Duration::milliseconds(700 * (i as i64 + 1))
        });
        let late = make_events(&mut rng, "lost-late", 60, |i| {
            max_ts - time::Duration::seconds(13 * i as i64 + 1)
        });
        let inserted = ctx.mock.insert_events(&new)? + ctx.mock.insert_events(&late)?;
        ck.check(
            inserted == 2_060,
            format!("{f}: the mock accepted {inserted}/2060 new and late events"),
        );
        source.extend(new);
        source.extend(late);
        let run = ctx.run(ck, &self.config, &self.out, &[], &[])?;
        let s2 = verify::run_ok(ck, &run, &format!("{f} run 2"));
        let out2 = verify::num(s2.as_ref(), "rows_output");
        ck.check(
            out2 == 2_060,
            format!("{f} run 2 outputs {out2} rows (2000 new + 60 late)"),
        );
        Ok((source, run1, output::load_state(&self.state_path)?))
    }

    /// The parts to lose: a part of run 1 that a part of run 2 overlaps (it holds late events
    /// in its range), and a part of run 2 other than the overlapping one (which must stay: the
    /// repair reads it back to skip the late events). `Err` is the scenario's note when the
    /// runs did not produce such parts.
    fn choose_lost(
        &self,
        ck: &mut Checks,
        run1: &[Part],
        state2: &Value,
    ) -> Result<(Part, Part), String> {
        let f = self.f;
        let all = parts_of(state2);
        let run1_files: BTreeSet<&str> = run1.iter().map(|p| p.file.as_str()).collect();
        let run2: Vec<&Part> = all
            .iter()
            .filter(|p| !run1_files.contains(p.file.as_str()))
            .collect();
        let overlap = run1.iter().rev().find_map(|p1| {
            let (a, b) = range(p1)?;
            let q = run2
                .iter()
                .find(|q| range(q).is_some_and(|(c, d)| c <= b && a <= d))?;
            Some((p1.clone(), (*q).clone()))
        });
        let Some((lost1, overlapping)) = overlap else {
            ck.fail(format!(
                "{f}: no part of run 2 overlaps a part of run 1 (run 2 parts: {:?})",
                run2.iter()
                    .map(|p| (&p.file, &p.first, &p.last))
                    .collect::<Vec<_>>()
            ));
            return Err(format!("{f}: no overlap"));
        };
        let lost2 = run2
            .iter()
            .find(|p| p.file != overlapping.file)
            .map(|p| (*p).clone());
        ck.check(
            run2.len() >= 2 && lost2.is_some(),
            format!(
                "{f} run 2 committed {} parts; {} overlaps {} of run 1 ({} ..= {} vs {} ..= {})",
                run2.len(),
                overlapping.file,
                lost1.file,
                overlapping.first,
                overlapping.last,
                lost1.first,
                lost1.last
            ),
        );
        match lost2 {
            Some(lost2) => Ok((lost1, lost2)),
            None => Err(format!("{f}: run 2 wrote one part")),
        }
    }

    /// With the parts deleted, the next run refuses without a request, naming each lost part
    /// with its rows and range, and leaves the state as it was.
    fn refused(&self, ck: &mut Checks, lost: &[Part]) -> anyhow::Result<()> {
        let (ctx, f) = (self.ctx, self.f);
        let state_before = read_bytes(&self.state_path)?;
        ctx.mock.reset_counters()?;
        let run = ctx.run(ck, &self.config, &self.out, &[], &[])?;
        let (status, category, message) = failure(&run);
        let files: Vec<&str> = lost.iter().map(|p| p.file.as_str()).collect();
        ck.check(
            run.code == Some(1) && status == "error" && category == "data",
            format!(
                "{f}: with {} deleted the next run exits 1, category data (got {:?}, `{category}`)",
                files.join(" and "),
                run.code
            ),
        );
        for p in lost {
            let named = message.contains(&p.file)
                && message.contains(&format!("{} rows", p.rows))
                && message.contains(&p.first)
                && message.contains(&p.last);
            ck.check(
                named,
                format!(
                    "{f}: the message names {} with its {} rows and its range {} ..= {}",
                    p.file, p.rows, p.first, p.last
                ),
            );
        }
        ck.check(
            message.contains("--repair"),
            format!(
                "{f}: the message mentions --repair: {}",
                cli::clip(&message, 400)
            ),
        );
        let total = ctx.mock.total_requests()?;
        ck.check(
            total == 0,
            format!("{f}: the refused run sent {total} requests (0)"),
        );
        ck.check(
            read_bytes(&self.state_path)? == state_before,
            format!("{f}: the refused run left the state as it was"),
        );
        Ok(())
    }

    /// `run --repair` writes back exactly the lost rows and leaves the watermark. Returns the
    /// rows it wrote and its query requests.
    fn repair(
        &self,
        ck: &mut Checks,
        lost: &[Part],
        watermark: &Value,
    ) -> anyhow::Result<(u64, u64)> {
        let (ctx, f) = (self.ctx, self.f);
        ctx.mock.reset_counters()?;
        let run = ctx.run(ck, &self.config, &self.out, &[], &["--repair"])?;
        let summary = verify::run_ok(ck, &run, &format!("{f} run --repair"));
        let status = summary
            .as_ref()
            .and_then(|s| s["status"].as_str())
            .unwrap_or("")
            .to_owned();
        ck.check(
            status == "repaired",
            format!("{f} run --repair: status `{status}` (repaired)"),
        );
        let repaired: BTreeSet<String> = summary
            .as_ref()
            .and_then(|s| s["repaired"].as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let want: BTreeSet<String> = lost.iter().map(|p| p.file.clone()).collect();
        ck.check(
            repaired == want,
            format!("{f} run --repair: repaired {repaired:?} = the lost parts {want:?}"),
        );
        let lost_rows: u64 = lost.iter().map(|p| p.rows).sum();
        let rows = verify::num(summary.as_ref(), "rows_output");
        ck.check(
            rows == lost_rows,
            format!(
                "{f} run --repair: rows_output {rows} = the {lost_rows} rows the lost parts held"
            ),
        );
        let repair_queries = ctx.mock.query_requests()?;
        let state3 = output::load_state(&self.state_path)?;
        ck.check(
            state3[TABLE]["last_timestamp"] == *watermark,
            format!(
                "{f} run --repair: the watermark stays {} (now {})",
                watermark, state3[TABLE]["last_timestamp"]
            ),
        );
        let still: Vec<String> = parts_of(&state3)
            .into_iter()
            .filter(|p| want.contains(&p.file))
            .map(|p| p.file)
            .collect();
        ck.check(
            still.is_empty(),
            format!("{f} run --repair: the state no longer names the lost parts {still:?}"),
        );
        Ok((rows, repair_queries))
    }
}
