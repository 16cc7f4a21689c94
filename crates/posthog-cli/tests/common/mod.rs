//! The harness the binary's integration tests share: an in-process mock PostHog on loopback,
//! a scratch directory, and the binary run with a clean environment.
//!
//! Each test starts its own mock on a multi-threaded tokio runtime (the server runs on the
//! runtime's workers while the test thread waits for the binary). The binary's environment is
//! cleared of the variables it reads, so nothing from the developer's shell leaks in.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::path::PathBuf;
use std::process::{Command, Output};

use posthog_mock::{MockConfig, MockServer, RouteClass};
use serde_json::Value;

pub const KEY: &str = "phx_mock_personal_key";
pub const KEY_ENV: &str = "POSTHOG_PERSONAL_API_KEY";

/// A mock server, its runtime and a scratch directory the binary runs in.
pub struct Env {
    pub runtime: tokio::runtime::Runtime,
    pub server: Option<MockServer>,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env::with(MockConfig::default())
    }

    /// A mock serving `config`.
    pub fn with(config: MockConfig) -> Env {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let server = runtime
            .block_on(MockServer::start(config))
            .expect("mock starts");
        Env {
            runtime,
            server: Some(server),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn server(&self) -> &MockServer {
        self.server.as_ref().expect("running")
    }

    /// The JSON body of the last request of this route class the mock received.
    pub fn last_body(&self, route: RouteClass) -> Value {
        self.server()
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.route == route)
            .and_then(|r| r.body)
            .unwrap_or_else(|| panic!("no {route:?} request with a JSON body"))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a config for the mock. `key`: the `api_key` line, or none. `extra`: more
    /// top-level YAML. The mock's events lie in the first week of 2025, hence `initial_since`.
    pub fn config(&self, name: &str, key: Option<&str>, extra: &str) -> PathBuf {
        let key_line = key.map_or(String::new(), |k| format!("  api_key: {k}\n"));
        let yaml = format!(
            "component_id: posthog/osiris
resolved_connection:
{key_line}  project_id: \"1\"
  region: self_hosted
  custom_base_url: {base_url}
config:
  source:
    data_type: events
    initial_since: \"2024-12-31T00:00:00Z\"
    lookback_window_minutes: 15
    page_size: 200
  destination: {{table_name: posthog_events}}
{extra}",
            base_url = self.server().base_url(),
        );
        let path = self.path(name);
        std::fs::write(&path, yaml).expect("write config");
        path
    }

    /// The binary, run in the scratch directory with a clean environment.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_posthog-cli"));
        cmd.current_dir(self.dir.path())
            .env_remove(KEY_ENV)
            .env_remove("POSTHOG_PROJECT_ID")
            .env_remove("POSTHOG_HOST")
            .env_remove("RUST_LOG");
        cmd
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.shutdown());
        }
    }
}

/// Runs the command and returns (exit code, stdout, stderr).
pub fn output(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("binary runs");
    (
        status.code().expect("exited, not killed"),
        String::from_utf8(stdout).expect("utf-8 stdout"),
        String::from_utf8(stderr).expect("utf-8 stderr"),
    )
}

/// stdout must be exactly one JSON object followed by one newline.
pub fn one_json_object(stdout: &str) -> Value {
    assert!(stdout.ends_with('\n'), "no trailing newline: {stdout:?}");
    assert_eq!(
        stdout.matches('\n').count(),
        1,
        "more than one line: {stdout}"
    );
    let value: Value = serde_json::from_str(stdout).expect("stdout is JSON");
    assert!(value.is_object(), "not an object: {stdout}");
    value
}

/// stdout must be the error object with this category.
pub fn assert_error_json(stdout: &str, category: &str) -> Value {
    let value = one_json_object(stdout);
    assert_eq!(value["status"], "error", "{stdout}");
    assert_eq!(value["category"], category, "{stdout}");
    assert!(value["message"].is_string(), "{stdout}");
    value
}

/// Every file under `dir`, recursively.
/// The part files (`part-*`) under `dir`: what a reader of the table sees, without the table's
/// hidden lock file.
pub fn parts_under(dir: &std::path::Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("part-"))
        })
        .collect()
}

pub fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}
