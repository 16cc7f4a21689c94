//! The command lines of the documentation, run against the in-process mock PostHog, so the docs
//! cannot drift from the binary:
//!
//! - `docs/operations.md`: every `sh` block runs line by line (absolute paths moved under a
//!   scratch directory); the `posthog-cli` command lines of the cron, systemd and Kubernetes
//!   snippets run as they are written; the exit-code and category tables are checked against
//!   real failures of each category; the metrics table and the alert rules name exactly the
//!   metrics `run --metrics-file` writes; the run summary example has the real summary's keys;
//!   the console transcripts match the binary's output.
//! - `docs/configuration.md`: its console transcript, and every command-line option it names.
//! - `README.md`: every `posthog-cli` line of its `sh` blocks, with the README's own config,
//!   and the MCP client config.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Env, KEY, KEY_ENV, one_json_object, output};
use posthog_mock::{Dataset, Fault, GenSpec, MockConfig, RouteClass};
use serde_json::Value;
use time::OffsetDateTime;

// ---------------------------------------------------------------------------------------------
// Reading the documents.

/// One fenced block of a document.
struct Block {
    info: String,
    text: String,
    line: usize,
}

fn read_doc(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn blocks(doc: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in doc.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_owned(),
                    text: String::new(),
                    line: i + 1,
                });
            }
            (Some(_), Some(rest)) if rest.trim().is_empty() => blocks.extend(open.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed code fence");
    blocks
}

fn blocks_tagged<'a>(blocks: &'a [Block], tag: &str) -> Vec<&'a Block> {
    blocks
        .iter()
        .filter(|b| b.info.split_whitespace().next() == Some(tag))
        .collect()
}

/// The shell commands of a block: continuation lines (`\`) and quotes spanning lines joined,
/// blank and comment-only lines dropped.
fn shell_commands(text: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for line in text.lines() {
        if quote.is_none() && current.is_empty() && line.trim_start().starts_with('#') {
            continue;
        }
        let mut prev = ' ';
        for c in line.chars() {
            match (quote, c) {
                (None, '\'' | '"') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '#') if prev.is_whitespace() => break, // a comment: no quotes after it
                _ => {}
            }
            prev = c;
        }
        // A backslash continues the command on the next line (joined with a space); an open
        // quote continues it with the line break inside the quoted text.
        if let Some(body) = line
            .trim_end()
            .strip_suffix('\\')
            .filter(|_| quote.is_none())
        {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        if quote.is_some() {
            current.push('\n');
            continue;
        }
        if !current.trim().is_empty() {
            commands.push(current.trim().to_owned());
        }
        current.clear();
    }
    assert!(current.trim().is_empty(), "unterminated command: {current}");
    commands
}

/// Whether the command runs the binary, by name or absolute path (not, say,
/// `cargo install --path crates/posthog-cli`).
fn runs_cli(command: &str) -> bool {
    command
        .split(|c: char| c.is_whitespace() || c == '|')
        .any(|t| t == "posthog-cli" || (t.starts_with('/') && t.ends_with("/posthog-cli")))
}

/// The cells of a Markdown table row.
fn cells(line: &str) -> Option<Vec<&str>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(str::trim).collect())
}

// ---------------------------------------------------------------------------------------------
// Running documented commands.

/// The directory of the binary under test, put first on `PATH` so `posthog-cli` in a documented
/// command is this build.
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_posthog-cli"))
        .parent()
        .expect("binary has a directory")
        .to_path_buf()
}

/// A scratch root standing in for `/`, with the files documented commands expect.
struct Scene {
    root: PathBuf,
    config_text: String,
    vars: Vec<(String, String)>,
}

impl Scene {
    fn new(env: &Env, name: &str, config_text: String) -> Scene {
        let root = env.path(name);
        std::fs::create_dir_all(&root).expect("scene root");
        std::fs::write(root.join("config.yaml"), &config_text).expect("config");
        Scene {
            root,
            config_text,
            vars: vec![(KEY_ENV.to_owned(), KEY.to_owned())],
        }
    }

    /// The command with `/absolute` paths moved under the scene root and the binary's own
    /// absolute path replaced by its name; the files and directories its options name exist.
    fn prepare(&self, command: &str) -> String {
        let root = self.root.to_str().expect("utf-8 path");
        let tokens: Vec<String> = command
            .split(' ')
            .map(|t| {
                if t.ends_with("/posthog-cli") {
                    "posthog-cli".to_owned()
                } else if t.starts_with('/') {
                    format!("{root}{t}")
                } else {
                    t.to_owned()
                }
            })
            .collect();
        for pair in tokens.windows(2) {
            let path = self.root.join(&pair[1]);
            let parent = path.parent().expect("a parent");
            match pair[0].as_str() {
                "--config" | "-c" if !path.exists() => {
                    std::fs::create_dir_all(parent).expect("mkdir");
                    std::fs::write(&path, &self.config_text).expect("write config");
                }
                "--api-key-file" => {
                    std::fs::create_dir_all(parent).expect("mkdir");
                    std::fs::write(&path, format!("{KEY}\n")).expect("write key");
                }
                "--metrics-file" | "--state-file" | ">>" | ">" => {
                    std::fs::create_dir_all(parent).expect("mkdir");
                }
                _ => {}
            }
        }
        tokens.join(" ")
    }

    /// Runs a shell command in the scene root: (exit code, stdout, stderr).
    fn sh(&self, command: &str) -> (i32, String, String) {
        let path = format!(
            "{}:{}",
            bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(command)
            .current_dir(&self.root)
            .env("PATH", path)
            .env_remove(KEY_ENV)
            .env_remove("POSTHOG_PROJECT_ID")
            .env_remove("POSTHOG_HOST")
            .env_remove("POSTHOG_PROJECT_API_KEY")
            .env_remove("RUST_LOG");
        for (name, value) in &self.vars {
            sh.env(name, value);
        }
        output(&mut sh)
    }

    /// Runs a documented command that must succeed; returns its stdout.
    fn ok(&self, command: &str, origin: &str) -> String {
        let prepared = self.prepare(command);
        let (code, stdout, stderr) = self.sh(&prepared);
        assert_eq!(
            code, 0,
            "{origin}: `{command}` exited {code}\nstderr: {stderr}\nstdout: {stdout}"
        );
        assert!(
            !stdout.contains(KEY) && !stderr.contains(KEY),
            "the key leaked"
        );
        stdout
    }
}

/// `resolved_connection` for the mock, as one flow mapping.
fn mock_connection(env: &Env) -> String {
    format!(
        "resolved_connection: {{project_id: \"1\", region: self_hosted, custom_base_url: \"{}\"}}",
        env.server().base_url()
    )
}

/// A config reading the mock's events (they lie in the first week of 2025).
fn mock_config(env: &Env, extra: &str) -> String {
    format!(
        "{}\nconfig:\n  source: {{data_type: events, initial_since: \"2024-12-31T00:00:00Z\"}}\n{extra}",
        mock_connection(env)
    )
}

/// A mock whose events lie in the last week (so `now() - interval 7 day` finds them) and
/// which has the README's `new-dashboard` flag.
fn recent_env() -> Env {
    let now = OffsetDateTime::now_utc();
    let mut dataset = Dataset::generate(&GenSpec {
        seed: 5,
        events: 600,
        persons: 25,
        start: now - Duration::from_secs(6 * 86_400),
        span: Duration::from_secs(5 * 86_400),
        ..GenSpec::default()
    });
    let mut flag = dataset
        .feature_flags
        .iter()
        .find(|f| f["key"] == "beta-dashboard")
        .expect("fixture flag")
        .clone();
    flag["id"] = 1000.into();
    flag["key"] = "new-dashboard".into();
    flag["name"] = "New dashboard".into();
    dataset.feature_flags.push(flag);
    Env::with(MockConfig::with_dataset(dataset))
}

/// Lines of `actual` against `expected`, where `…` in an expected line stands for any text.
fn assert_lines_match(expected: &[&str], actual: &str, origin: &str) {
    let actual: Vec<&str> = actual.lines().collect();
    assert_eq!(
        actual.len(),
        expected.len(),
        "{origin}: expected\n{}\ngot\n{}",
        expected.join("\n"),
        actual.join("\n")
    );
    for (want, got) in expected.iter().zip(&actual) {
        let pieces: Vec<&str> = want.split('…').collect();
        let mut rest = *got;
        let mut ok = true;
        for (i, piece) in pieces.iter().enumerate() {
            let found = if i == 0 {
                rest.strip_prefix(piece).map(|r| (0, r))
            } else if i == pieces.len() - 1 {
                rest.ends_with(piece).then_some((0, ""))
            } else {
                rest.find(piece).map(|at| (at, &rest[at + piece.len()..]))
            };
            match found {
                Some((_, after)) => rest = after,
                None => ok = false,
            }
        }
        assert!(ok, "{origin}: expected `{want}`, got `{got}`");
    }
}

/// Runs a console transcript: `$ command` lines and the output lines after them (stdout and
/// stderr as a terminal shows them); `$ echo $?` shows the previous exit code.
fn check_console(scene: &Scene, transcript: &str, origin: &str) {
    let mut steps: Vec<(String, Vec<&str>)> = Vec::new();
    for line in transcript.lines() {
        match line.strip_prefix("$ ") {
            Some(command) => steps.push((command.to_owned(), Vec::new())),
            None => steps
                .last_mut()
                .expect("output after a command")
                .1
                .push(line),
        }
    }
    let mut last_code = None;
    for (command, expected) in steps {
        if command == "echo $?" {
            let code = last_code.expect("a command before echo $?");
            assert_eq!(
                expected,
                [format!("{code}").as_str()],
                "{origin}: exit code"
            );
            continue;
        }
        let (code, merged, _) = scene.sh(&format!("exec 2>&1; {}", scene.prepare(&command)));
        assert_lines_match(&expected, &merged, &format!("{origin}: `{command}`"));
        last_code = Some(code);
    }
}

// ---------------------------------------------------------------------------------------------
// README.md

#[test]
fn readme_cli_examples_run_against_the_mock() {
    let env = recent_env();
    let readme = read_doc("README.md");
    let blocks = blocks(&readme);
    // The README's config, with its connection pointed at the mock.
    let yaml = blocks_tagged(&blocks, "yaml")
        .into_iter()
        .find(|b| b.text.contains("config.yaml"))
        .expect("the README's config.yaml block");
    let mut replaced = 0;
    let config: String = yaml
        .text
        .lines()
        .map(|line| {
            if line.starts_with("resolved_connection:") {
                replaced += 1;
                mock_connection(&env)
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(replaced, 1, "one resolved_connection line");
    let mut scene = Scene::new(&env, "readme", config);
    let mock_values = [
        (KEY_ENV, KEY.to_owned()),
        ("POSTHOG_PROJECT_ID", "1".to_owned()),
        ("POSTHOG_HOST", env.server().base_url()),
    ];

    let mut ran = Vec::new();
    for block in blocks_tagged(&blocks, "sh") {
        for command in shell_commands(&block.text) {
            if let Some(assignments) = command.strip_prefix("export ") {
                // The README's placeholder values become the mock's.
                for assignment in assignments
                    .split_whitespace()
                    .take_while(|t| !t.starts_with('#'))
                {
                    let (name, _) = assignment.split_once('=').expect("NAME=value");
                    let (_, value) = mock_values
                        .iter()
                        .find(|(n, _)| *n == name)
                        .unwrap_or_else(|| panic!("README exports an unexpected {name}"));
                    scene.vars.retain(|(n, _)| n != name);
                    scene.vars.push((name.to_owned(), value.clone()));
                }
                continue;
            }
            if !runs_cli(&command) {
                continue;
            }
            let origin = format!("README.md line {}", block.line);
            let stdout = scene.ok(&command, &origin);
            ran.push((command, stdout));
        }
    }
    let find = |prefix: &str| -> &str {
        &ran.iter()
            .find(|(c, _)| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no README command starting with `{prefix}`"))
            .1
    };
    assert_eq!(ran.len(), 10, "README commands run: {ran:?}");

    let doctor = one_json_object(find("posthog-cli doctor"));
    assert_eq!(doctor["status"], "healthy", "{doctor}");
    let summary = one_json_object(find("posthog-cli run"));
    for key in [
        "rows_read",
        "rows_deduplicated",
        "rows_output",
        "files",
        "requests",
        "retries",
        "duration_ms",
        "state",
    ] {
        assert!(summary.get(key).is_some(), "the summary has no {key}");
    }
    assert_eq!(summary["rows_output"], 600, "{summary}");
    // Everything a reader's glob sees: the table's lock file is hidden, and the manifest is
    // `_`-prefixed, which dataset readers (pyarrow, Spark, Hive) skip.
    let table = scene.root.join("posthog-output/posthog_events");
    assert!(table.join("_manifest.json").is_file());
    let parts: Vec<_> = std::fs::read_dir(&table)
        .expect("the README's part directory")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .filter(|name| !name.starts_with('.') && !name.starts_with('_'))
        .collect();
    assert!(
        !parts.is_empty()
            && parts
                .iter()
                .all(|p| p.starts_with("part-") && p.ends_with(".parquet")),
        "{parts:?}"
    );
    assert!(scene.root.join("posthog-output/state.json").is_file());

    // The browser query binds its variable and finds last week's pageviews.
    // The browser query binds its variable and finds last week's pageviews per browser (a
    // shell that expanded `$browser` would have asked for a property named `as`: one empty row).
    let table = find("posthog-cli query");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("browser") && lines[0].contains(" n"),
        "{table}"
    );
    let rows = &lines[2..lines.len() - 1];
    assert!(rows.len() >= 2, "{table}");
    assert!(
        rows.iter().all(|r| !r.starts_with(' ')),
        "a row without a browser: {table}"
    );
    let objects = one_json_object(find("posthog-cli objects"));
    assert_eq!(objects["objects"].as_array().map(Vec::len), Some(8));
    let templates = one_json_object(find("posthog-cli template list"));
    assert_eq!(templates["templates"].as_array().map(Vec::len), Some(19));
    let flag = one_json_object(find("posthog-cli flags evaluate"));
    assert_eq!(flag["key"], "new-dashboard");
    assert_eq!(flag["enabled"], true);
    let cohort = one_json_object(find("posthog-cli cohorts create"));
    assert!(cohort["id"].is_u64(), "{cohort}");
    let captured = one_json_object(find("echo"));
    assert_eq!(captured["events"], 1);
    assert_eq!(env.server().captured_unique_uuids(), 1);
}

#[test]
fn readme_mcp_config_starts_a_server_with_the_listed_tools() {
    let env = Env::new();
    let readme = read_doc("README.md");
    let block = blocks(&readme)
        .into_iter()
        .find(|b| b.info == "json" && b.text.contains("mcpServers"))
        .expect("the MCP config block");
    let config: Value = serde_json::from_str(&block.text).expect("the MCP config is JSON");
    let server = &config["mcpServers"]["posthog"];
    assert_eq!(server["command"], "posthog-cli");
    let args: Vec<&str> = server["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("text"))
        .collect();
    let mut cmd = env.cli();
    cmd.args(&args);
    for (name, _) in server["env"].as_object().expect("env") {
        let value = match name.as_str() {
            KEY_ENV => KEY.to_owned(),
            "POSTHOG_PROJECT_ID" => "1".to_owned(),
            "POSTHOG_HOST" => env.server().base_url(),
            other => panic!("unexpected variable {other}"),
        };
        cmd.env(name, value);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mcp starts");
    let mut stdin = child.stdin.take().expect("stdin");
    for message in [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"docs","version":"0"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    ] {
        writeln!(stdin, "{message}").expect("write");
    }
    stdin.flush().expect("flush");
    let (lines, received) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let tools = loop {
        let line = received
            .recv_timeout(Duration::from_secs(60))
            .expect("an answer to tools/list");
        let message: Value = serde_json::from_str(&line).expect("JSON-RPC");
        if message["id"] == 2 {
            break message["result"]["tools"].clone();
        }
    };
    drop(stdin);
    let names: BTreeSet<&str> = tools
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    // The README lists them in the sentence before the block.
    for name in [
        "list_objects",
        "get_fields",
        "query",
        "list_templates",
        "run_template",
    ] {
        assert!(readme.contains(&format!("`{name}`")), "README lacks {name}");
        assert!(names.contains(name), "the server lacks {name}: {names:?}");
    }
    assert_eq!(names.len(), 5, "{names:?}");
    let status = child.wait().expect("exits");
    assert!(status.success(), "{status}");
}

// ---------------------------------------------------------------------------------------------
// docs/operations.md

#[test]
fn operations_sh_blocks_run_in_order_against_the_mock() {
    let env = Env::new();
    let doc = read_doc("docs/operations.md");
    let blocks = blocks(&doc);
    let scene = Scene::new(&env, "ops", mock_config(&env, ""));
    let mut ran = 0;
    for block in blocks_tagged(&blocks, "sh") {
        for command in shell_commands(&block.text) {
            let origin = format!("operations.md line {}", block.line);
            let stdout = scene.ok(&command, &origin);
            if runs_cli(&command) && command.contains(" run ") {
                let summary = one_json_object(&stdout);
                assert_eq!(summary["status"], "success", "{origin}: {summary}");
            }
            ran += 1;
        }
    }
    assert!(ran >= 7, "only {ran} commands ran");
    // The recovery procedure moved the table aside and extracted it again.
    assert!(
        scene
            .root
            .join("posthog-output/state.json.broken")
            .is_file()
    );
    assert!(
        scene
            .root
            .join("posthog-output/posthog_events.before")
            .is_dir()
    );
    assert!(scene.root.join("posthog-output/posthog_events").is_dir());
}

/// The `posthog-cli` command lines of the scheduling snippets: cron lines, systemd `ExecStart=`
/// and Kubernetes `args`.
fn scheduled_commands(doc: &str) -> Vec<(String, String)> {
    let mut commands = Vec::new();
    for block in blocks(doc) {
        let origin = format!("operations.md line {}", block.line);
        for line in block.text.lines() {
            let line = line.trim();
            if block.info == "cron" && !line.starts_with('#') && runs_cli(line) {
                let start = line
                    .find("/usr/local/bin/posthog-cli")
                    .expect("cron command");
                commands.push((origin.clone(), line[start..].to_owned()));
            } else if let Some(exec) = line.strip_prefix("ExecStart=") {
                commands.push((origin.clone(), exec.to_owned()));
            } else if let Some(args) = line.strip_prefix("args: ") {
                let args: Vec<String> = serde_json::from_str(args).expect("args as a JSON list");
                assert!(args.iter().all(|a| !a.contains(' ')), "{args:?}");
                commands.push((origin.clone(), format!("posthog-cli {}", args.join(" "))));
            }
        }
    }
    commands
}

#[test]
fn yaml_blocks_of_operations_md_are_valid() {
    let doc = read_doc("docs/operations.md");
    let blocks = blocks(&doc);
    let mut fragments = 0;
    for block in blocks_tagged(&blocks, "yaml") {
        let origin = format!("operations.md line {}", block.line);
        if block.text.contains("apiVersion:") || block.text.contains("groups:") {
            // Kubernetes and Prometheus documents: the config loader must get past the YAML
            // syntax (its errors name `<document>`) and stop at the first unknown key.
            let err = posthog_osiris::ExtractConfig::from_yaml_str(&block.text)
                .expect_err("not a config");
            assert_ne!(err.field, "<document>", "{origin}: invalid YAML: {err}");
        } else {
            // A config fragment: valid next to a connection.
            let text = format!("resolved_connection: {{project_id: \"1\"}}\n{}", block.text);
            let config = posthog_osiris::ExtractConfig::from_yaml_str(&text)
                .unwrap_or_else(|e| panic!("{origin}: {e}"));
            assert_eq!(
                config.performance.query_requests_per_minute, 120,
                "{origin}"
            );
            fragments += 1;
        }
    }
    assert_eq!(fragments, 1);
}

#[test]
fn scheduling_snippets_run_their_command_lines_against_the_mock() {
    let env = Env::new();
    let doc = read_doc("docs/operations.md");
    let commands = scheduled_commands(&doc);
    assert_eq!(commands.len(), 3, "cron, systemd, Kubernetes: {commands:?}");
    for (i, (origin, command)) in commands.iter().enumerate() {
        // Each snippet on a machine of its own: nothing shared with the others.
        let scene = Scene::new(&env, &format!("sched{i}"), mock_config(&env, ""));
        let mut scene = scene;
        scene.vars.clear(); // the key comes from --api-key-file only
        assert!(command.contains("--api-key-file"), "{origin}: {command}");
        let stdout = scene.ok(command, origin);
        let metrics = command
            .split(' ')
            .skip_while(|t| *t != "--metrics-file")
            .nth(1)
            .expect("the snippets write metrics");
        let text = std::fs::read_to_string(scene.root.join(&metrics[1..])).expect("metrics");
        assert!(
            text.contains("posthog_extract_last_run_success{table=\"posthog_events\"} 1"),
            "{origin}: {text}"
        );
        let summary = match command.split_once(">> ") {
            // cron appends the output to a log file
            Some((_, log)) => {
                let log = log.split(' ').next().expect("log path");
                let text = std::fs::read_to_string(scene.root.join(&log[1..])).expect("log");
                // The JSON log lines (stderr) come first, the summary (stdout) last.
                text.lines()
                    .rfind(|l| l.starts_with("{\"status\":\"success\""))
                    .expect("the summary in the log")
                    .to_owned()
            }
            None => stdout,
        };
        let summary: Value = serde_json::from_str(summary.trim()).expect("JSON summary");
        assert_eq!(summary["rows_output"], 1000, "{origin}");
    }
}

/// Runs `run` with `config` in a scene of its own; returns (exit code, JSON category).
fn failing_run(env: &Env, name: &str, config: String) -> (i32, String) {
    let scene = Scene::new(env, name, config);
    let (code, stdout, stderr) = scene.sh("posthog-cli run --config config.yaml");
    let json = one_json_object(&stdout);
    assert_eq!(json["status"], "error", "{name}: {stdout}");
    assert!(stderr.contains(&format!("error: {}: ", json["category"].as_str().unwrap())));
    (
        code,
        json["category"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn the_exit_code_tables_match_real_failures_of_every_category() {
    let doc = read_doc("docs/operations.md");
    // The summary table: exit code | meaning.
    let codes: BTreeSet<u8> = doc
        .lines()
        .filter_map(cells)
        .filter(|c| c.len() == 2)
        .filter_map(|c| c[0].parse().ok())
        .collect();
    assert_eq!(codes, BTreeSet::from([0, 1, 2, 3]));
    // The category table: `category` | exit code | …
    let documented: BTreeMap<String, i32> = doc
        .lines()
        .filter_map(cells)
        .filter(|c| c.len() == 4)
        .filter_map(|c| {
            let category = c[0].strip_prefix('`')?.strip_suffix('`')?;
            Some((category.to_owned(), c[1].parse().ok()?))
        })
        .collect();

    let env = Env::with(MockConfig {
        forbidden_project_ids: vec![2],
        ..MockConfig::default()
    });
    let fast = "performance: {retries: {max_attempts: 2, backoff_factor: 0.0}}\n";
    let server = env.server();
    let mut seen: BTreeMap<String, i32> = BTreeMap::new();
    let mut check = |name: &str, expected: &str, (code, category): (i32, String)| {
        assert_eq!(category, expected, "{name}");
        assert_eq!(
            documented.get(expected),
            Some(&code),
            "{name}: operations.md gives a different exit code for {expected}"
        );
        seen.insert(category, code);
    };

    let config = mock_config(&env, "").replace("initial_since", "page_size: 70000, initial_since");
    check("out of range", "config", failing_run(&env, "cfg", config));

    let scene = Scene::new(&env, "locked", mock_config(&env, ""));
    let _held = posthog_state::JsonFileStore::open(scene.root.join("posthog-output/state.json"))
        .expect("the test holds the lock");
    let (code, stdout, _) = scene.sh("posthog-cli run --config config.yaml");
    let json = one_json_object(&stdout);
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("another run holds the state lock")
    );
    check(
        "locked",
        "config",
        (code, json["category"].as_str().unwrap().to_owned()),
    );

    let wrong = mock_config(&env, "").replace(
        "project_id: \"1\"",
        "project_id: \"1\", api_key: phx_not_known",
    );
    check("wrong key", "auth", failing_run(&env, "auth", wrong));

    let forbidden = mock_config(&env, "").replace("project_id: \"1\"", "project_id: \"2\"");
    check(
        "forbidden project",
        "permission",
        failing_run(&env, "perm", forbidden),
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let unreachable =
        mock_config(&env, fast).replace(&server.base_url(), &format!("http://127.0.0.1:{port}"));
    check("refused", "network", failing_run(&env, "net", unreachable));

    // A query timeout that persists while the page is halved from 100 down to 10 rows.
    server.push_faults(RouteClass::Query, Fault::status(504), 20);
    let small_pages =
        mock_config(&env, fast).replace("initial_since", "page_size: 100, initial_since");
    check("504s", "timeout", failing_run(&env, "timeout", small_pages));
    server.clear_faults();

    server.push_faults(RouteClass::Query, Fault::too_many(Some("0")), 100);
    check(
        "429s",
        "rate_limited",
        failing_run(&env, "throttled", mock_config(&env, fast)),
    );
    server.clear_faults();

    server.push_faults(RouteClass::Query, Fault::status(500), 10);
    check(
        "500s",
        "server",
        failing_run(&env, "server", mock_config(&env, fast)),
    );
    server.clear_faults();

    server.push_fault(RouteClass::Query, Fault::MalformedJson);
    check(
        "malformed page",
        "data",
        failing_run(&env, "data", mock_config(&env, fast)),
    );
    server.clear_faults();

    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        documented.keys().collect::<Vec<_>>(),
        "operations.md documents exactly the categories the binary reports"
    );
}

#[test]
fn crash_leftovers_are_removed_by_the_next_run_as_documented() {
    let env = Env::new();
    let scene = Scene::new(
        &env,
        "crash",
        mock_config(&env, "output: {format: jsonl}\n"),
    );
    let first = one_json_object(&scene.ok("posthog-cli run --config config.yaml", "first run"));
    let table = scene.root.join("posthog-output/posthog_events");
    // What a run killed between writing a part and committing its state leaves behind.
    for leftover in ["part-999999.jsonl", ".part-1000000.tmp"] {
        std::fs::write(table.join(leftover), "{\"uuid\":\"x\"}\n").expect("leftover");
    }
    std::fs::write(scene.root.join("posthog-output/.state.json.tmp-1-0"), "{}")
        .expect("leftover state temp");
    let second = one_json_object(&scene.ok("posthog-cli run --config config.yaml", "re-run"));
    assert_eq!(second["rows_output"], 0, "nothing new: {second}");
    assert!(!table.join("part-999999.jsonl").exists());
    assert!(!table.join(".part-1000000.tmp").exists());
    assert!(
        !scene
            .root
            .join("posthog-output/.state.json.tmp-1-0")
            .exists()
    );
    // The committed parts are untouched, and the lock file may stay.
    for file in first["files"].as_array().expect("files") {
        let name = Path::new(file.as_str().expect("path"))
            .file_name()
            .expect("name");
        assert!(table.join(name).is_file(), "{file}");
    }

    // Moving only the state aside: the next run deletes the parts it no longer knows and
    // extracts again, as operations.md warns.
    std::fs::rename(
        scene.root.join("posthog-output/state.json"),
        scene.root.join("posthog-output/state.json.aside"),
    )
    .expect("move aside");
    let third = one_json_object(&scene.ok("posthog-cli run --config config.yaml", "fresh"));
    assert_eq!(third["rows_output"], 1000);
    for file in first["files"].as_array().expect("files") {
        let name = Path::new(file.as_str().expect("path"))
            .file_name()
            .expect("name");
        let kept = third["files"]
            .as_array()
            .expect("files")
            .iter()
            .any(|f| Path::new(f.as_str().unwrap()).file_name() == Some(name));
        assert!(kept || !table.join(name).exists(), "{file} survived");
    }
}

#[test]
fn console_transcripts_match_the_binary() {
    let env = Env::new();
    // operations.md: a corrupt state file.
    let doc = read_doc("docs/operations.md");
    let ops_blocks = blocks(&doc);
    let consoles = blocks_tagged(&ops_blocks, "console");
    assert_eq!(consoles.len(), 2);
    let scene = Scene::new(&env, "corrupt", mock_config(&env, ""));
    std::fs::create_dir_all(scene.root.join("posthog-output")).expect("mkdir");
    std::fs::write(scene.root.join("posthog-output/state.json"), "{not json").expect("write");
    check_console(&scene, &consoles[0].text, "operations.md");
    assert_eq!(
        std::fs::read_to_string(scene.root.join("posthog-output/state.json")).expect("read"),
        "{not json",
        "left untouched"
    );
    assert_eq!(env.server().total_requests(), 0, "nothing was sent");

    // operations.md: a part file went missing, and the repair.
    let scene = Scene::new(
        &env,
        "lost-part",
        mock_config(&env, "output: {format: jsonl}\n"),
    );
    let first = one_json_object(&scene.ok("posthog-cli run --config config.yaml", "first run"));
    let part = first["files"][0].as_str().expect("a part").to_owned();
    std::fs::remove_file(scene.root.join(&part)).expect("the part is removed");
    let sent = env.server().total_requests();
    check_console(&scene, &consoles[1].text, "operations.md");
    assert!(
        env.server().total_requests() > sent,
        "the repair read the range again"
    );
    let mut uuids: Vec<String> =
        common::parts_under(&scene.root.join("posthog-output/posthog_events"))
            .iter()
            .flat_map(|p| {
                let text = std::fs::read_to_string(p).expect("part");
                text.lines()
                    .map(|l| {
                        serde_json::from_str::<Value>(l).expect("a JSONL row")["uuid"]
                            .as_str()
                            .expect("uuid")
                            .to_owned()
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
    let rows = uuids.len();
    uuids.sort();
    uuids.dedup();
    assert_eq!(
        (rows, uuids.len() as u64),
        (uuids.len(), first["rows_output"].as_u64().expect("rows")),
        "after the repair the table holds every row of the first run once"
    );

    // configuration.md: the CLI form of a config error, with the example before it.
    let doc = read_doc("docs/configuration.md");
    let config_blocks = blocks(&doc);
    let at = config_blocks
        .iter()
        .position(|b| b.info == "console")
        .expect("a console block");
    let config = config_blocks[..at]
        .iter()
        .rev()
        .find(|b| b.info == "yaml error")
        .expect("the example before it");
    let scene = Scene::new(&env, "config-error", config.text.clone());
    let before = env.server().total_requests();
    check_console(&scene, &config_blocks[at].text, "configuration.md");
    assert_eq!(env.server().total_requests(), before, "nothing was sent");
}

#[test]
fn the_documented_run_summary_has_the_real_summary_keys() {
    let env = Env::new();
    let doc = read_doc("docs/operations.md");
    let blocks = blocks(&doc);
    let example = blocks_tagged(&blocks, "json")
        .into_iter()
        .find(|b| b.text.contains("rows_read"))
        .expect("the summary example");
    let example: Value = serde_json::from_str(&example.text).expect("the example is JSON");
    let scene = Scene::new(&env, "summary", mock_config(&env, ""));
    let real = one_json_object(&scene.ok("posthog-cli run --config config.yaml", "summary"));
    let keys =
        |v: &Value| -> Vec<String> { v.as_object().expect("object").keys().cloned().collect() };
    assert_eq!(keys(&example), keys(&real));
    assert_eq!(example["rows_output"], real["rows_output"]);
    assert_eq!(example["files"], real["files"]);
}

/// Metric names (`posthog_extract_…`) in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("posthog_extract_") {
        let name: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

/// Metric names with a sample line in a metrics file.
fn written_metrics(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .expect("metrics file")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split('{').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_metrics_and_alert_rules_name_the_metrics_run_writes() {
    let env = Env::new();
    let doc = read_doc("docs/operations.md");
    let blocks = blocks(&doc);
    let rules = blocks_tagged(&blocks, "yaml")
        .into_iter()
        .find(|b| b.text.contains("alert:"))
        .expect("the alert rules");
    let in_rules = metric_names(&rules.text);
    assert!(in_rules.contains("posthog_extract_watermark_timestamp_seconds"));
    assert!(in_rules.contains("posthog_extract_consecutive_failures"));
    // The metrics table: | `name` | meaning | written |
    let table: BTreeMap<String, String> = doc
        .lines()
        .filter_map(cells)
        .filter(|c| c.len() == 3 && c[0].starts_with("`posthog_extract_"))
        .map(|c| (c[0].trim_matches('`').to_owned(), c[2].to_owned()))
        .collect();

    let scene = Scene::new(&env, "metrics", mock_config(&env, ""));
    let metrics = scene.root.join("posthog.prom");
    scene.ok(
        "posthog-cli run --config config.yaml --metrics-file posthog.prom",
        "metrics",
    );
    let after_success = written_metrics(&metrics);
    assert_eq!(
        table.keys().cloned().collect::<BTreeSet<_>>(),
        after_success,
        "the metrics table lists exactly what a successful run writes"
    );
    for name in &in_rules {
        assert!(after_success.contains(name), "the alert rules use {name}");
    }

    // A failed run: rows marked "after a success" are gone, the others stay.
    let bad =
        mock_config(&env, "").replace("project_id: \"1\"", "project_id: \"1\", api_key: phx_bad");
    std::fs::write(scene.root.join("bad.yaml"), bad).expect("write");
    let (code, _, _) = scene.sh("posthog-cli run --config bad.yaml --metrics-file posthog.prom");
    assert_eq!(code, 3);
    let after_failure = written_metrics(&metrics);
    for (name, written) in &table {
        assert_eq!(
            after_failure.contains(name),
            written != "after a success",
            "{name} ({written}) after a failed run"
        );
    }
    let text = std::fs::read_to_string(&metrics).expect("metrics");
    assert!(text.contains("posthog_extract_consecutive_failures{table=\"posthog_events\"} 1\n"));
}

// ---------------------------------------------------------------------------------------------
// Options named anywhere in the docs exist.

#[test]
fn every_documented_option_exists() {
    let env = Env::new();
    let mut helps = String::new();
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["discover", "--help"],
        &["doctor", "--help"],
        &["query", "--help"],
        &["fields", "--help"],
        &["template", "run", "--help"],
        &["capture", "--help"],
        &["flags", "evaluate", "--help"],
        &["cohorts", "create", "--help"],
        &["cohorts", "persons", "--help"],
        &["mcp", "--help"],
    ] {
        let (code, stdout, _) = output(env.cli().args(args));
        assert_eq!(code, 0, "{args:?}");
        helps.push_str(&stdout);
    }
    let exists = |option: &str| {
        helps.match_indices(option).any(|(at, _)| {
            !helps[at + option.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
        })
    };
    let mut checked = 0;
    for name in ["README.md", "docs/configuration.md", "docs/operations.md"] {
        let doc = read_doc(name);
        // Code spans that start with an option, or that are a posthog-cli command line.
        for span in doc.split('`').skip(1).step_by(2) {
            let options: Vec<&str> = if span.starts_with("--") {
                span.split_whitespace().take(1).collect()
            } else if span.starts_with("posthog-cli ") {
                span.split_whitespace()
                    .filter(|t| t.starts_with("--"))
                    .collect()
            } else {
                continue;
            };
            for option in options {
                let option = option
                    .split('=')
                    .next()
                    .unwrap_or(option)
                    .trim_end_matches(',');
                if option.contains('.') {
                    continue; // another program's option, e.g. node_exporter's
                }
                assert!(
                    exists(option),
                    "{name} names {option}, which no --help shows"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} options checked");
}
