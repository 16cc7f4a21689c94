//! The `posthog-cli` binary end to end, against an in-process mock PostHog on loopback.
//!
//! Each test starts its own mock on a multi-threaded tokio runtime (the server runs on the
//! runtime's workers while the test thread waits for the binary) and its own temporary working
//! directory. The binary's environment is cleared of the variables it reads, so nothing from
//! the developer's shell leaks in.

mod common;

use common::{
    Env, KEY, KEY_ENV, assert_error_json, files_under, one_json_object, output, parts_under,
};
use posthog_mock::RouteClass;
use serde_json::Value;

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Tests that do not reach the driver's engine.

#[test]
fn invalid_config_exits_2_naming_the_field_without_any_request() {
    let env = Env::new();
    let config = env.config("bad.yaml", Some(KEY), "");
    let text = std::fs::read_to_string(&config)
        .expect("read")
        .replace("page_size: 200", "page_size: 70000");
    std::fs::write(&config, text).expect("write");

    for command in ["run", "discover", "doctor"] {
        let (code, stdout, stderr) = output(env.cli().args([command, "--config"]).arg(&config));
        assert_eq!(code, 2, "{command}: {stderr}");
        let json = assert_error_json(&stdout, "config");
        assert_eq!(
            json["message"],
            "config.source.page_size: 70000 is out of range 100..=50000"
        );
        assert_eq!(
            stderr.trim_end(),
            "error: config: config.source.page_size: 70000 is out of range 100..=50000"
        );
    }
    assert_eq!(env.server().total_requests(), 0);
    assert!(!env.path("posthog-output").exists(), "nothing written");
}

#[test]
fn unreadable_config_exits_2() {
    let env = Env::new();
    let (code, stdout, stderr) = output(env.cli().args(["run", "--config", "missing.yaml"]));
    assert_eq!(code, 2, "{stderr}");
    let json = assert_error_json(&stdout, "config");
    assert!(
        json["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("missing.yaml: cannot read the file: ")),
        "{json}"
    );
    assert_eq!(env.server().total_requests(), 0);
}

#[test]
fn missing_key_exits_2_naming_the_field_and_both_ways_to_supply_it() {
    let env = Env::new();
    let config = env.config("nokey.yaml", None, "");
    for command in ["run", "extract", "discover", "doctor"] {
        let (code, stdout, stderr) = output(env.cli().args([command, "--config"]).arg(&config));
        assert_eq!(code, 2, "{command}: {stderr}");
        let json = assert_error_json(&stdout, "config");
        let message = json["message"].as_str().expect("message");
        assert!(
            message.starts_with("resolved_connection.api_key: missing"),
            "{message}"
        );
        assert!(message.contains("--api-key-file PATH"), "{message}");
        assert!(message.contains(KEY_ENV), "{message}");
        assert!(stderr.starts_with("error: config: resolved_connection.api_key"));
    }
    assert_eq!(env.server().total_requests(), 0);
    assert!(
        !env.path("posthog-output").exists(),
        "no state store opened"
    );
}

#[test]
fn bad_key_files_exit_2_without_showing_the_content() {
    let env = Env::new();
    let config = env.config("nokey.yaml", None, "");
    let project_key = env.path("project.key");
    std::fs::write(&project_key, "phc_a_project_key_value\n").expect("write");
    let empty = env.path("empty.key");
    std::fs::write(&empty, "\n").expect("write");

    for (file, expected) in [
        (env.path("absent.key"), "cannot read the key file"),
        (project_key, "is a project API key"),
        (empty, "is empty"),
    ] {
        let (code, stdout, stderr) = output(
            env.cli()
                .args(["doctor", "--config"])
                .arg(&config)
                .arg("--api-key-file")
                .arg(&file),
        );
        assert_eq!(code, 2, "{stderr}");
        let json = assert_error_json(&stdout, "config");
        let message = json["message"].as_str().expect("message");
        assert!(message.starts_with("--api-key-file "), "{message}");
        assert!(message.contains(expected), "{message}");
        assert!(!stdout.contains("phc_a_project_key_value"));
        assert!(!stderr.contains("phc_a_project_key_value"));
    }
    assert_eq!(env.server().total_requests(), 0);
}

#[test]
fn the_key_is_never_a_plain_argument() {
    let env = Env::new();
    let config = env.config("nokey.yaml", None, "");
    for flag in ["--api-key", "--key", "--personal-api-key"] {
        let (code, stdout, stderr) = output(
            env.cli()
                .args(["doctor", "--config"])
                .arg(&config)
                .args([flag, KEY]),
        );
        assert_eq!(code, 2, "{flag}: {stderr}");
        let json = assert_error_json(&stdout, "config");
        assert!(
            !stdout.contains(KEY) && !stderr.contains(KEY),
            "{stdout}{stderr}"
        );
        assert!(
            json["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("unexpected argument '{flag}'"))),
            "{json}"
        );
    }
    assert_eq!(env.server().total_requests(), 0);
}

#[test]
fn a_state_store_held_by_another_run_exits_2_without_any_request() {
    let env = Env::new();
    let config = env.config("c.yaml", Some(KEY), "");
    let state = env.path("posthog-output/state.json");
    let _held = posthog_state::JsonFileStore::open(&state).expect("lock held by the test");
    let (code, stdout, stderr) =
        output(env.cli().args(["run", "--quiet", "--config"]).arg(&config));
    assert_eq!(code, 2, "{stderr}");
    let json = assert_error_json(&stdout, "config");
    assert!(
        json["message"]
            .as_str()
            .is_some_and(|m| m.contains("another run holds the state lock")),
        "{json}"
    );
    assert_eq!(env.server().total_requests(), 0);
}

#[test]
fn a_corrupt_state_file_exits_1_without_any_request() {
    let env = Env::new();
    let config = env.config("c.yaml", Some(KEY), "");
    let state = env.path("elsewhere/state.json");
    std::fs::create_dir_all(env.path("elsewhere")).expect("mkdir");
    std::fs::write(&state, "{not json").expect("write");
    let (code, stdout, stderr) = output(
        env.cli()
            .args(["run", "--config"])
            .arg(&config)
            .arg("--state-file")
            .arg(&state),
    );
    assert_eq!(code, 1, "{stderr}");
    assert_error_json(&stdout, "data");
    assert_eq!(
        std::fs::read_to_string(&state).expect("read"),
        "{not json",
        "left untouched"
    );
    assert_eq!(env.server().total_requests(), 0);
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    for args in [
        &["run"][..],
        &["run", "--config", "c.yaml", "--format", "xml"],
        &["doctor", "--config", "c.yaml", "--timeout-ms", "0"],
        &["--log-format", "yaml", "doctor", "--config", "c.yaml"],
        &["query", "select 1"],
        &[],
    ] {
        let (code, _, stderr) = output(env.cli().args(args));
        assert_eq!(code, 2, "{args:?}: {stderr}");
    }
}

#[test]
fn every_help_shows_an_example_and_the_exit_codes() {
    let env = Env::new();
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["extract", "--help"],
        &["discover", "--help"],
        &["doctor", "--help"],
        &["help", "run"],
        &["query", "--help"],
        &["objects", "--help"],
        &["fields", "--help"],
        &["template", "--help"],
        &["template", "list", "--help"],
        &["template", "show", "--help"],
        &["template", "run", "--help"],
        &["capture", "--help"],
        &["flags", "--help"],
        &["flags", "evaluate", "--help"],
        &["flags", "list", "--help"],
        &["cohorts", "--help"],
        &["cohorts", "list", "--help"],
        &["cohorts", "create", "--help"],
        &["cohorts", "persons", "--help"],
        &["mcp", "--help"],
        &["completions", "--help"],
        &["man", "--help"],
    ] {
        let (code, stdout, stderr) = output(env.cli().args(args));
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(stdout.contains("Example"), "{args:?}: {stdout}");
        for line in [
            "Exit codes:",
            "0  success",
            "1  failed at run time",
            "2  usage or config error",
            "3  authentication or permission error",
        ] {
            assert!(stdout.contains(line), "{args:?} lacks {line:?}: {stdout}");
        }
    }
    let (_, top, _) = output(env.cli().arg("--help"));
    for command in [
        "run", "discover", "doctor", "extract", "query", "objects", "fields", "template",
        "capture", "flags", "cohorts", "mcp",
    ] {
        assert!(top.contains(command), "{top}");
    }
    let (_, run, _) = output(env.cli().args(["run", "--help"]));
    for flag in [
        "--config",
        "--output-dir",
        "--state-file",
        "--format",
        "--api-key-file",
        "--log-level",
        "--log-format",
        "--quiet",
        "--metrics-file",
    ] {
        assert!(run.contains(flag), "{flag}: {run}");
    }
}

// ---------------------------------------------------------------------------------------------
// Tests through the driver's engine.

/// Runs `run` and returns its summary; panics with the binary's stderr unless it exits 0.
fn run_ok(env: &Env, args: &[&str]) -> Value {
    let (code, stdout, stderr) = output(env.cli().args(args));
    assert_eq!(code, 0, "{args:?}: {stderr}\n{stdout}");
    let summary = one_json_object(&stdout);
    assert_eq!(summary["status"], "success", "{stdout}");
    summary
}

#[test]
fn run_twice_second_run_outputs_nothing_new() {
    let env = Env::new();
    let config = env.config("c.yaml", Some(KEY), "output: {format: jsonl}\n");
    let config = config.to_str().expect("utf-8 path");

    let first = run_ok(&env, &["run", "--config", config]);
    assert_eq!(first["table"], "posthog_events");
    assert_eq!(first["rows_output"], 1000, "{first}");
    assert_eq!(first["rows_read"], 1000, "{first}");
    for field in [
        "rows_deduplicated",
        "requests",
        "retries",
        "duration_ms",
        "files",
        "state",
    ] {
        assert!(first.get(field).is_some(), "{field} missing: {first}");
    }
    let files = first["files"].as_array().expect("files");
    assert!(!files.is_empty(), "{first}");
    let parts = parts_under(&env.path("posthog-output/posthog_events"));
    assert!(!parts.is_empty());
    assert!(
        parts
            .iter()
            .all(|p| p.extension().is_some_and(|e| e == "jsonl")),
        "{parts:?}"
    );
    assert!(env.path("posthog-output/state.json").is_file());

    let requests_before = env.server().request_count(RouteClass::Query);
    let second = run_ok(&env, &["run", "--config", config]);
    assert_eq!(second["rows_output"], 0, "{second}");
    assert!(
        env.server().request_count(RouteClass::Query) > requests_before,
        "the second run queried PostHog"
    );
}

#[test]
fn dry_run_sends_the_same_requests_and_writes_nothing() {
    let env = Env::new();
    let config = env.config("c.yaml", Some(KEY), "");
    let config = config.to_str().expect("utf-8 path");

    let (code, stdout, stderr) = output(env.cli().args(["run", "--dry-run", "--config", config]));
    assert_eq!(code, 0, "{stderr}\n{stdout}");
    let dry = one_json_object(&stdout);
    assert_eq!(dry["status"], "dry_run", "{dry}");
    assert_eq!(dry["rows_read"], 1000, "{dry}");
    // Counted as the run would output them, but not written.
    assert_eq!(dry["rows_output"], 1000, "{dry}");
    assert_eq!(dry["files"], Value::Array(Vec::new()), "{dry}");
    assert!(
        !env.path("posthog-output/posthog_events").exists(),
        "a dry run creates no table directory"
    );
    assert!(
        !env.path("posthog-output/state.json").exists(),
        "a dry run commits no state"
    );
    let dry_queries = env.server().request_count(RouteClass::Query);

    // The real run from the same (empty) state sends exactly the same number of queries.
    let real = run_ok(&env, &["run", "--config", config]);
    assert_eq!(real["rows_output"], 1000, "{real}");
    assert_eq!(
        env.server().request_count(RouteClass::Query) - dry_queries,
        dry_queries,
        "a dry run's requests are the run's requests"
    );

    // A dry run after it neither rewinds nor advances the committed state.
    let committed = std::fs::read(env.path("posthog-output/state.json")).expect("state");
    let (code, stdout, _) = output(env.cli().args(["run", "--dry-run", "--config", config]));
    assert_eq!(code, 0);
    assert_eq!(one_json_object(&stdout)["status"], "dry_run");
    assert_eq!(
        std::fs::read(env.path("posthog-output/state.json")).expect("state"),
        committed
    );

    let (code, _, stderr) = output(env.cli().args([
        "run",
        "--dry-run",
        "--metrics-file",
        "m.prom",
        "--config",
        config,
    ]));
    assert_eq!(code, 2, "a dry run records no metrics: {stderr}");
}

#[test]
fn extract_is_an_alias_of_run_and_the_overrides_apply() {
    let env = Env::new();
    let config = env.config("c.yaml", Some(KEY), "");
    let state = env.path("state/elsewhere.json");
    let summary = run_ok(
        &env,
        &[
            "--quiet",
            "extract",
            "--config",
            config.to_str().expect("utf-8"),
            "--output-dir",
            "out",
            "--state-file",
            state.to_str().expect("utf-8"),
            "--format",
            "csv",
        ],
    );
    assert_eq!(summary["rows_output"], 1000, "{summary}");
    let parts = parts_under(&env.path("out/posthog_events"));
    assert!(!parts.is_empty());
    assert!(
        parts
            .iter()
            .all(|p| p.extension().is_some_and(|e| e == "csv")),
        "{parts:?}"
    );
    assert!(state.is_file(), "state in --state-file");
    assert!(
        !env.path("out/state.json").exists(),
        "not in the default place"
    );
}

#[test]
fn api_key_file_and_environment_supply_the_key() {
    let env = Env::new();
    let config = env.config("nokey.yaml", None, "");
    let key_file = env.path("key");
    std::fs::write(&key_file, format!("{KEY}\n")).expect("write");

    let (code, stdout, stderr) = output(
        env.cli()
            .arg("--api-key-file")
            .arg(&key_file)
            .args(["doctor", "--config"])
            .arg(&config),
    );
    assert_eq!(code, 0, "{stderr}\n{stdout}");
    assert_eq!(one_json_object(&stdout)["status"], "healthy");

    let (code, stdout, stderr) = output(
        env.cli()
            .env(KEY_ENV, KEY)
            .args(["doctor", "--config"])
            .arg(&config),
    );
    assert_eq!(code, 0, "{stderr}\n{stdout}");
    assert_eq!(one_json_object(&stdout)["status"], "healthy");

    // The file also serves `run`.
    let summary = run_ok(
        &env,
        &[
            "run",
            "--config",
            config.to_str().expect("utf-8"),
            "--api-key-file",
            key_file.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(summary["rows_output"], 1000, "{summary}");
}

#[test]
fn doctor_healthy_exits_0() {
    let env = Env::new();
    let config = env.config("c.yaml", Some(KEY), "");
    let (code, stdout, stderr) = output(env.cli().args(["doctor", "--config"]).arg(&config));
    assert_eq!(code, 0, "{stderr}\n{stdout}");
    let report = one_json_object(&stdout);
    assert_eq!(report["status"], "healthy", "{report}");
    assert!(report.get("category").is_none(), "{report}");
    assert!(report["message"].is_string());
    assert!(report["timestamp"].is_string());
    assert!(report["latency_ms"].is_u64());
}

#[test]
fn doctor_with_a_wrong_key_exits_1_with_category_auth() {
    let env = Env::new();
    let wrong = "phx_wrong_key_not_known_to_the_mock";
    let config = env.config("c.yaml", Some(wrong), "");
    let (code, stdout, stderr) = output(
        env.cli()
            .args(["doctor", "--log-level", "debug", "--config"])
            .arg(&config),
    );
    assert_eq!(code, 1, "{stderr}\n{stdout}");
    let report = one_json_object(&stdout);
    assert_eq!(report["status"], "error", "{report}");
    assert_eq!(report["category"], "auth", "{report}");
    assert!(!stdout.contains(wrong) && !stderr.contains(wrong));
    assert!(env.server().total_requests() > 0, "doctor asked PostHog");
}

/// The value of one metric line for the `posthog_events` table.
fn metric(text: &str, name: &str) -> Option<f64> {
    let prefix = format!("posthog_extract_{name}{{table=\"posthog_events\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().expect("a number"))
}

#[test]
fn completions_and_the_man_page_are_generated_for_every_command() {
    let env = Env::new();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef posthog-cli"),
        ("fish", "complete -c posthog-cli"),
    ] {
        let (code, stdout, stderr) = output(env.cli().args(["completions", shell]));
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains(marker), "{shell}: {stdout}");
        assert!(stdout.contains("template"), "{shell} completes subcommands");
    }
    let (code, man, _) = output(env.cli().arg("man"));
    assert_eq!(code, 0);
    assert!(
        man.starts_with(".ie") || man.contains(".TH posthog-cli"),
        "{man}"
    );
    assert!(man.contains("extract"), "{man}");
    let (code, _, _) = output(env.cli().args(["completions", "tcsh"]));
    assert_eq!(code, 2);
    assert_eq!(env.server().total_requests(), 0);
}

#[test]
fn metrics_file_reports_a_run_and_then_a_failure_in_prometheus_text() {
    let env = Env::new();
    let good = env.config("good.yaml", Some(KEY), "");
    let bad = env.config("bad.yaml", Some("phx_wrong_key_not_known_to_the_mock"), "");
    let metrics = env.path("posthog.prom");
    let metrics_arg = metrics.to_str().unwrap();
    let summary = run_ok(
        &env,
        &[
            "run",
            "--config",
            good.to_str().unwrap(),
            "--metrics-file",
            metrics_arg,
        ],
    );
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(metric(&text, "last_run_success"), Some(1.0));
    assert_eq!(
        metric(&text, "rows_written"),
        summary["rows_output"].as_f64(),
        "{text}"
    );
    assert_eq!(metric(&text, "requests"), summary["requests"].as_f64());
    assert!(metric(&text, "watermark_timestamp_seconds").is_some());
    let success_at = metric(&text, "last_success_timestamp_seconds").unwrap();

    let (code, _, _) = output(env.cli().args([
        "run",
        "--config",
        bad.to_str().unwrap(),
        "--metrics-file",
        metrics_arg,
    ]));
    assert_eq!(code, 3);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(metric(&text, "last_run_success"), Some(0.0));
    assert_eq!(metric(&text, "consecutive_failures"), Some(1.0));
    assert_eq!(
        metric(&text, "last_success_timestamp_seconds"),
        Some(success_at)
    );

    // Failures before the extraction starts count too: an invalid config (the table is the one
    // the file already names), then a state file that is not JSON.
    let invalid = env.config("invalid.yaml", Some(KEY), "");
    let text = std::fs::read_to_string(&invalid)
        .unwrap()
        .replace("page_size: 200", "page_size: 70000");
    std::fs::write(&invalid, text).unwrap();
    let (code, _, _) = output(env.cli().args([
        "run",
        "--config",
        invalid.to_str().unwrap(),
        "--metrics-file",
        metrics_arg,
    ]));
    assert_eq!(code, 2);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(metric(&text, "consecutive_failures"), Some(2.0), "{text}");
    assert_eq!(
        metric(&text, "last_success_timestamp_seconds"),
        Some(success_at)
    );

    let state = env.path("posthog-output/state.json");
    std::fs::write(&state, "{not json").unwrap();
    let (code, _, _) = output(env.cli().args([
        "run",
        "--config",
        good.to_str().unwrap(),
        "--metrics-file",
        metrics_arg,
    ]));
    assert_eq!(code, 1);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(metric(&text, "consecutive_failures"), Some(3.0), "{text}");
    assert_eq!(metric(&text, "last_run_success"), Some(0.0));
}

#[test]
fn run_with_a_wrong_key_exits_3() {
    let env = Env::new();
    let wrong = "phx_wrong_key_not_known_to_the_mock";
    let config = env.config("c.yaml", Some(wrong), "");
    let (code, stdout, stderr) = output(env.cli().args(["run", "--config"]).arg(&config));
    assert_eq!(code, 3, "{stderr}\n{stdout}");
    assert_error_json(&stdout, "auth");
    assert!(stderr.contains("error: auth: "), "{stderr}");
    assert!(!stdout.contains(wrong) && !stderr.contains(wrong));
}

#[test]
fn discover_prints_sorted_resources_and_a_stable_fingerprint() {
    let env = Env::new();
    let config = env.config("c.yaml", Some(KEY), "");
    let mut fingerprints = Vec::new();
    for _ in 0..2 {
        let (code, stdout, stderr) = output(env.cli().args(["discover", "--config"]).arg(&config));
        assert_eq!(code, 0, "{stderr}\n{stdout}");
        let discovery = one_json_object(&stdout);
        let names: Vec<&str> = discovery["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(
            names.contains(&"events") && names.contains(&"sessions"),
            "{names:?}"
        );
        assert!(names.is_sorted(), "{names:?}");
        assert!(discovery["discovered_at"].is_string());
        let columns = |resource: &str| -> Vec<String> {
            discovery["resources"]
                .as_array()
                .expect("resources")
                .iter()
                .find(|r| r["name"] == resource)
                .expect("the resource")["schema"]
                .as_array()
                .expect("schema")
                .iter()
                .map(|f| f["name"].as_str().expect("name").to_owned())
                .collect()
        };
        // The person's properties as of each event, from the person property definitions.
        let events = columns("events");
        assert!(
            events.contains(&"person_properties_email".to_owned()),
            "{events:?}"
        );
        assert!(
            events.contains(&"properties_$current_url".to_owned()),
            "{events:?}"
        );
        assert!(columns("persons").contains(&"properties_email".to_owned()));
        fingerprints.push(discovery["fingerprint"].as_str().expect("fp").to_owned());
    }
    assert_eq!(fingerprints[0], fingerprints[1]);
    assert_eq!(fingerprints[0].len(), 64, "hex SHA-256");
}

#[test]
fn the_key_never_appears_in_output_logs_or_files_at_any_level_with_verbose_http() {
    let env = Env::new();
    let config = env.config(
        "c.yaml",
        Some(KEY),
        "output: {format: jsonl}\nlogging: {level: debug, verbose_http: true}\n",
    );
    let out = env.path("out");

    for (level, log_format) in [("debug", "text"), ("debug", "json"), ("trace", "text")] {
        let (code, stdout, stderr) = output(
            env.cli()
                .args(["--log-level", level, "--log-format", log_format, "run"])
                .arg("--config")
                .arg(&config)
                .arg("--output-dir")
                .arg(&out),
        );
        assert_eq!(code, 0, "{stderr}\n{stdout}");
        one_json_object(&stdout);
        assert!(!stderr.is_empty(), "debug logs were written");
        assert!(!stdout.contains(KEY), "key in run stdout");
        assert!(!stderr.contains(KEY), "key in run stderr");

        let (code, stdout, stderr) = output(
            env.cli()
                .args(["--log-level", level, "--log-format", log_format, "doctor"])
                .arg("--config")
                .arg(&config),
        );
        assert_eq!(code, 0, "{stderr}\n{stdout}");
        assert!(!stderr.is_empty(), "debug logs were written");
        assert!(!stdout.contains(KEY), "key in doctor stdout");
        assert!(!stderr.contains(KEY), "key in doctor stderr");
    }

    let files = files_under(&out);
    assert!(files.len() >= 2, "parts and state: {files:?}");
    for file in files {
        let bytes = std::fs::read(&file).expect("read");
        assert!(!contains(&bytes, KEY), "key in {}", file.display());
    }
}

#[test]
fn json_logs_are_json_lines_on_stderr() {
    let env = Env::new();
    let config = env.config("c.yaml", Some(KEY), "");
    let (code, stdout, stderr) = output(
        env.cli()
            .args(["--log-format", "json", "--log-level", "debug", "doctor"])
            .arg("--config")
            .arg(&config),
    );
    assert_eq!(code, 0, "{stderr}\n{stdout}");
    one_json_object(&stdout);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty());
    for line in lines {
        let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(value["level"].is_string(), "{line}");
    }
}
