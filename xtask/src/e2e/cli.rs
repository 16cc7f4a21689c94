//! Running `posthog-cli` as a child process (stdout and stderr to files, a deadline, SIGKILL on
//! demand) and writing its YAML config.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use super::mock::Mock;

/// The table every scenario extracts into.
pub const TABLE: &str = "posthog_events";

/// The environment variables the CLI would read a connection from; removed for every run so
/// the suite is hermetic.
const CONNECTION_ENV: [&str; 4] = [
    "POSTHOG_PERSONAL_API_KEY",
    "POSTHOG_PROJECT_ID",
    "POSTHOG_HOST",
    "RUST_LOG",
];

/// The prefixes of the variables an object store would read credentials and endpoints from
/// (AWS, Google Cloud, Azure); removed for every run, so only what a scenario passes is seen.
const STORE_ENV_PREFIXES: [&str; 3] = ["AWS_", "GOOGLE_", "AZURE_"];

static RUN_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A finished CLI process.
#[derive(Debug)]
pub struct CliRun {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// True when the harness killed it (deadline or SIGKILL on purpose).
    pub killed: bool,
    pub stdout: String,
    pub stderr: String,
    pub wall: Duration,
    pub label: String,
}

impl CliRun {
    /// Stdout as ONE JSON object (the contract), or why it is not.
    pub fn json(&self) -> Result<Value, String> {
        let text = self.stdout.trim();
        match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(other) => Err(format!("stdout is JSON but not an object: {other}")),
            Err(e) => Err(format!(
                "stdout is not ONE JSON object ({e}): {}",
                clip(text, 400)
            )),
        }
    }

    /// A one-line description for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{}: exit {:?}{} after {:.2} s; stdout: {}; stderr: {}",
            self.label,
            self.code,
            if self.killed { " (killed)" } else { "" },
            self.wall.as_secs_f64(),
            clip(self.stdout.trim(), 300),
            clip(&last_lines(&self.stderr, 6), 900)
        )
    }
}

/// A running CLI process.
pub struct RunningCli {
    child: Child,
    started: Instant,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    label: String,
}

impl RunningCli {
    /// Waits until it exits or `deadline` passes (then kills it).
    pub fn wait(mut self, deadline: Duration) -> anyhow::Result<CliRun> {
        let mut killed = false;
        let status = loop {
            if let Some(status) = self.child.try_wait().context("waiting for posthog-cli")? {
                break status;
            }
            if self.started.elapsed() >= deadline {
                let _ = self.child.kill();
                killed = true;
                break self.child.wait().context("reaping posthog-cli")?;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.finish(status, killed)
    }

    /// SIGKILLs it at `after` since its start unless it exited first; `killed` tells which.
    pub fn kill_at(mut self, after: Duration) -> anyhow::Result<CliRun> {
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for posthog-cli")? {
                return self.finish(status, false);
            }
            let elapsed = self.started.elapsed();
            if elapsed >= after {
                break;
            }
            std::thread::sleep((after - elapsed).min(Duration::from_millis(5)));
        }
        self.kill_now()
    }

    /// SIGKILLs it as soon as `now()` says so (asked every millisecond) or at `deadline` since
    /// its start, unless it exited first; `killed` tells which.
    pub fn kill_when(
        mut self,
        mut now: impl FnMut() -> bool,
        deadline: Duration,
    ) -> anyhow::Result<CliRun> {
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for posthog-cli")? {
                return self.finish(status, false);
            }
            if now() || self.started.elapsed() >= deadline {
                return self.kill_now();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn kill_now(mut self) -> anyhow::Result<CliRun> {
        // Child::kill sends SIGKILL on Unix: no chance to clean up, like `kill -9`.
        let _ = self.child.kill();
        let status = self.child.wait().context("reaping posthog-cli")?;
        self.finish(status, true)
    }

    fn finish(self, status: ExitStatus, killed: bool) -> anyhow::Result<CliRun> {
        let wall = self.started.elapsed();
        let read = |p: &Path| -> anyhow::Result<String> {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        };
        Ok(CliRun {
            code: status.code(),
            killed,
            stdout: read(&self.stdout_path)?,
            stderr: read(&self.stderr_path)?,
            wall,
            label: self.label,
        })
    }
}

/// Starts `posthog-cli ARGS` with stdout and stderr going to files under `work`.
pub fn spawn(
    bin: &Path,
    work: &Path,
    args: &[OsString],
    env: &[(&str, &str)],
) -> anyhow::Result<RunningCli> {
    spawn_via(&[], bin, work, args, env)
}

/// [`spawn`] through a launcher: `PREFIX… posthog-cli ARGS` (e.g. `setpriv --reuid=65534 …`
/// to run it as another user); an empty prefix runs the CLI itself.
pub fn spawn_via(
    prefix: &[OsString],
    bin: &Path,
    work: &Path,
    args: &[OsString],
    env: &[(&str, &str)],
) -> anyhow::Result<RunningCli> {
    spawn_in(prefix, bin, work, work, args, env)
}

/// [`spawn_via`] with the CLI's working directory `cwd` (its stdout and stderr files still
/// go to `work`).
pub fn spawn_in(
    prefix: &[OsString],
    bin: &Path,
    work: &Path,
    cwd: &Path,
    args: &[OsString],
    env: &[(&str, &str)],
) -> anyhow::Result<RunningCli> {
    let seq = RUN_SEQ.fetch_add(1, Ordering::Relaxed);
    let stdout_path = work.join(format!("cli-{seq:03}.stdout"));
    let stderr_path = work.join(format!("cli-{seq:03}.stderr"));
    let stdout = std::fs::File::create(&stdout_path)
        .with_context(|| format!("creating {}", stdout_path.display()))?;
    let stderr = std::fs::File::create(&stderr_path)
        .with_context(|| format!("creating {}", stderr_path.display()))?;
    let mut cmd = match prefix.split_first() {
        None => Command::new(bin),
        Some((launcher, rest)) => {
            let mut c = Command::new(launcher);
            c.args(rest).arg(bin);
            c
        }
    };
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    for var in CONNECTION_ENV {
        cmd.env_remove(var);
    }
    for (var, _) in std::env::vars_os() {
        if STORE_ENV_PREFIXES
            .iter()
            .any(|p| var.to_string_lossy().starts_with(p))
        {
            cmd.env_remove(var);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let launcher = if prefix.is_empty() {
        String::new()
    } else {
        let words: Vec<String> = prefix
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        format!("{} ", words.join(" "))
    };
    let label = format!(
        "{launcher}posthog-cli {}",
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}{}", launcher, bin.display()))?;
    Ok(RunningCli {
        child,
        started: Instant::now(),
        stdout_path,
        stderr_path,
        label,
    })
}

/// Runs `posthog-cli ARGS` to completion (killed after `deadline`).
pub fn run(
    bin: &Path,
    work: &Path,
    args: &[OsString],
    env: &[(&str, &str)],
    deadline: Duration,
) -> anyhow::Result<CliRun> {
    spawn(bin, work, args, env)?.wait(deadline)
}

/// Builds an argument list from anything path- or string-like.
pub fn args<I, S>(items: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    items.into_iter().map(Into::into).collect()
}

/// The config the scenarios start from (nested, canonical shape), pointing at `mock`.
pub fn base_config(mock: &Mock, format: &str) -> Value {
    json!({
        "resolved_connection": {
            "api_key": mock.key,
            "project_id": mock.project_id,
            "region": "self_hosted",
            "custom_base_url": mock.base_url,
        },
        "config": {
            "source": {
                "data_type": "events",
                "page_size": 1000,
                "lookback_window_minutes": 15,
                // Generated events start 2025-01-01; all of them are after this.
                "initial_since": "2020-01-01T00:00:00Z",
            },
            "destination": {"table_name": TABLE},
        },
        "output": {"format": format, "part_rows": 1000},
        "logging": {"level": "info", "verbose_http": false},
        "performance": {
            "batch_size": 1000,
            "query_requests_per_minute": 100_000,
            "query_requests_per_hour": 6_000_000,
            "retries": {"max_attempts": 5, "backoff_factor": 0.05, "timeout_seconds": 120},
        },
    })
}

/// Writes `config` (a JSON object) as block-style YAML.
pub fn write_config(path: &Path, config: &Value) -> anyhow::Result<()> {
    let mut out = String::new();
    yaml_mapping(config, 0, &mut out);
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

fn yaml_mapping(value: &Value, indent: usize, out: &mut String) {
    let Value::Object(map) = value else {
        return;
    };
    for (key, v) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&yaml_key(key));
        out.push(':');
        match v {
            Value::Object(m) if !m.is_empty() => {
                out.push('\n');
                yaml_mapping(v, indent + 2, out);
            }
            Value::Object(_) => out.push_str(" {}\n"),
            // JSON scalars and flow sequences are valid YAML flow nodes; strings are written
            // double-quoted so nothing is read as another type.
            other => {
                out.push(' ');
                out.push_str(&other.to_string());
                out.push('\n');
            }
        }
    }
}

fn yaml_key(key: &str) -> String {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        key.to_owned()
    } else {
        Value::String(key.to_owned()).to_string()
    }
}

pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let head: String = s.chars().take(max).collect();
    format!("{head}…")
}

pub fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" ⏎ ")
}
