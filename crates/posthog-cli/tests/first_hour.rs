//! What a newcomer meets in the first hour with the binary, held by tests: every command takes
//! `--config`; every failure, a command line clap refuses and an unhealthy `doctor` included,
//! prints one error object of one shape on stdout and one line on stderr; a config error names
//! the file it read; missing connection settings are all named at once and the host is never
//! defaulted; counts read as English.

mod common;

use common::{Env, KEY, KEY_ENV, assert_error_json, one_json_object, output};
use posthog_mock::{MockConfig, RouteClass};
use serde_json::Value;

/// The keys of a one-line JSON object in the order they were printed (a parsed `Value` sorts
/// them).
fn printed_keys(line: &str) -> Vec<String> {
    let value: Value = serde_json::from_str(line).expect("JSON");
    let object = value.as_object().expect("an object");
    let mut keys: Vec<(usize, String)> = object
        .keys()
        .map(|k| {
            let at = line
                .find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("{k} in {line}"));
            (at, k.clone())
        })
        .collect();
    keys.sort();
    keys.into_iter().map(|(_, k)| k).collect()
}

#[test]
fn every_command_accepts_config_and_those_that_need_no_connection_validate_it() {
    let env = Env::new();
    let good = env.config("good.yaml", Some(KEY), "");
    let good = good.to_str().expect("utf-8 path");
    std::fs::write(env.path("broken.yaml"), "resolved_connection: [\n").expect("write");
    for args in [
        &["objects"][..],
        &["template", "list"],
        &["template", "show", "churn_risk"],
        &["completions", "bash"],
        &["man"],
    ] {
        let (code, stdout, stderr) = output(env.cli().args(args).args(["--config", good]));
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(!stdout.is_empty(), "{args:?}");
        let (code, stdout, stderr) = output(env.cli().args(args).args(["-c", "broken.yaml"]));
        assert_eq!(code, 2, "{args:?}: {stderr}");
        let json = assert_error_json(&stdout, "config");
        let message = json["message"].as_str().expect("message");
        assert!(message.starts_with("broken.yaml: "), "{args:?}: {message}");
        assert!(
            stderr.starts_with("error: config: broken.yaml: "),
            "{args:?}: {stderr}"
        );
    }
    // The connection flags are accepted by the commands that need no connection, and unused:
    // no key is needed, nothing is sent.
    let (code, stdout, stderr) =
        output(
            env.cli()
                .args(["template", "list", "--host", "eu", "--project-id", "12345"]),
        );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        one_json_object(&stdout)["templates"]
            .as_array()
            .map(Vec::len),
        Some(19)
    );
    assert_eq!(env.server().total_requests(), 0);
}

#[test]
fn a_config_error_names_the_file_that_was_read() {
    let env = Env::new();
    std::fs::write(env.path("syntax.yaml"), "a: [\n").expect("write");
    std::fs::write(env.path("empty.yaml"), "").expect("write");
    for (file, why) in [
        ("syntax.yaml", "unclosed bracket"),
        ("empty.yaml", "the document is empty"),
        ("absent.yaml", "cannot read the file: "),
    ] {
        for command in ["run", "discover", "doctor", "query"] {
            let mut cmd = env.cli();
            cmd.args([command, "--config", file]);
            if command == "query" {
                cmd.arg("select 1");
            }
            let (code, stdout, stderr) = output(&mut cmd);
            assert_eq!(code, 2, "{command} {file}: {stderr}");
            let json = assert_error_json(&stdout, "config");
            let message = json["message"].as_str().expect("message");
            assert!(
                message.starts_with(&format!("{file}: ")) && message.contains(why),
                "{command} {file}: {message}"
            );
            assert!(
                !message.contains("<document>") && !message.contains("<file>"),
                "{message}"
            );
        }
    }
    assert_eq!(env.server().total_requests(), 0);
}

#[test]
fn usage_errors_print_the_error_object_on_stdout_and_clap_s_message_on_stderr() {
    let env = Env::new();
    for (args, says) in [
        (
            &["query", "--bogus", "select 1"][..],
            "unexpected argument '--bogus'",
        ),
        (
            &["query"],
            "the following required arguments were not provided: <HOGQL>",
        ),
        (
            &["run"],
            "the following required arguments were not provided: --config <FILE>",
        ),
        (
            &["run", "--config", "c.yaml", "--format", "xml"],
            "invalid value 'xml'",
        ),
        (
            &["doctor", "--config", "c.yaml", "--timeout-ms", "0"],
            "invalid value '0'",
        ),
        (&["frobnicate"], "unrecognized subcommand 'frobnicate'"),
        (&[], "a command is missing"),
        (&["template"], "a command is missing"),
    ] {
        let (code, stdout, stderr) = output(env.cli().args(args));
        assert_eq!(code, 2, "{args:?}: {stderr}");
        let json = assert_error_json(&stdout, "config");
        let message = json["message"].as_str().expect("message");
        assert!(message.contains(says), "{args:?}: {message}");
        assert!(!message.starts_with("error:"), "{args:?}: {message}");
        assert_eq!(
            printed_keys(stdout.trim_end()),
            ["status", "category", "message"]
        );
        // clap's human message (or the help, for a missing command) stays on stderr.
        assert!(
            stderr.contains("error:") || stderr.contains("Usage:"),
            "{args:?}: {stderr}"
        );
    }
    // Help and version are not errors: printed as clap prints them, exit 0, no error object.
    for args in [
        &["--help"][..],
        &["--version"],
        &["query", "--help"],
        &["help", "run"],
    ] {
        let (code, stdout, stderr) = output(env.cli().args(args));
        assert_eq!(code, 0, "{args:?}: {stderr}");
        // The help text describes the error object; it is not one.
        assert!(
            !stdout.starts_with('{') && stdout.lines().count() > 0,
            "{args:?}: {stdout}"
        );
        assert!(stdout.contains("posthog-cli"), "{args:?}: {stdout}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
    assert_eq!(env.server().total_requests(), 0);
}

#[test]
fn doctor_fails_like_every_other_command_adding_only_its_timing() {
    let env = Env::new();
    let wrong = "phx_wrong_key_not_known_to_the_mock";
    let config = env.config("wrong.yaml", Some(wrong), "");

    let (code, doctor_out, doctor_err) =
        output(env.cli().args(["doctor", "--config"]).arg(&config));
    assert_eq!(code, 1, "{doctor_err}");
    let report = assert_error_json(&doctor_out, "auth");
    assert!(report["timestamp"].is_string() && report["latency_ms"].is_u64());
    let message = report["message"].as_str().expect("message");
    assert_eq!(
        doctor_err.lines().last(),
        Some(format!("error: auth: {message}").as_str()),
        "{doctor_err}"
    );

    let (code, run_out, run_err) = output(env.cli().args(["run", "--config"]).arg(&config));
    assert_eq!(code, 3, "{run_err}");
    assert_error_json(&run_out, "auth");
    assert!(run_err.contains("error: auth: "), "{run_err}");

    // One shape: the same keys in the same order; doctor adds its two after them.
    let run_keys = printed_keys(run_out.trim_end());
    let doctor_keys = printed_keys(doctor_out.trim_end());
    assert_eq!(run_keys, ["status", "category", "message"]);
    assert_eq!(
        doctor_keys,
        ["status", "category", "message", "timestamp", "latency_ms"]
    );
    assert!(!doctor_out.contains(wrong) && !doctor_err.contains(wrong));
}

#[test]
fn doctor_reports_a_server_it_cannot_reach_on_stderr_too() {
    let env = Env::with(MockConfig::default());
    let config = env.path("unreachable.yaml");
    std::fs::write(
        &config,
        format!(
            "resolved_connection: {{api_key: {KEY}, project_id: \"1\", region: self_hosted, \
             custom_base_url: \"http://127.0.0.1:9\"}}\n\
             config: {{source: {{data_type: events}}, destination: {{table_name: t}}}}\n"
        ),
    )
    .expect("write");
    let (code, stdout, stderr) = output(env.cli().args(["doctor", "--config"]).arg(&config));
    assert_eq!(code, 1, "{stderr}");
    let report = assert_error_json(&stdout, "network");
    assert!(
        stderr.contains(&format!(
            "error: network: {}",
            report["message"].as_str().expect("message")
        )),
        "{stderr}"
    );
}

#[test]
fn missing_connection_settings_are_named_together_and_the_host_is_never_defaulted() {
    let env = Env::new();
    let (code, stdout, stderr) = output(env.cli().args(["query", "select 1"]));
    assert_eq!(code, 2, "{stderr}");
    let json = assert_error_json(&stdout, "config");
    let message = json["message"].as_str().expect("message");
    for wanted in [
        "--host HOST or POSTHOG_HOST",
        "--project-id ID or POSTHOG_PROJECT_ID",
        "--api-key-file PATH or POSTHOG_PERSONAL_API_KEY",
        "--config FILE",
    ] {
        assert!(message.contains(wanted), "{wanted}: {message}");
    }
    assert!(message.starts_with("connection: missing "), "{message}");

    // Project id and key given, no host: the host is the one missing setting, not US cloud.
    for command in [
        &["query", "select 1"][..],
        &["fields", "events"],
        &["template", "run", "top_events"],
        &["flags", "list"],
        &["cohorts", "list"],
    ] {
        let (code, stdout, stderr) = output(
            env.cli()
                .args(command)
                .args(["--project-id", "1"])
                .env(KEY_ENV, KEY),
        );
        assert_eq!(code, 2, "{command:?}: {stderr}");
        let json = assert_error_json(&stdout, "config");
        assert_eq!(
            json["message"],
            "connection: missing the host (--host HOST or POSTHOG_HOST: us, eu or a base URL); \
             or pass --config FILE",
            "{command:?}"
        );
    }
    // A key file counts as the key; with the host from the environment, nothing is missing.
    std::fs::write(env.path("key"), format!("{KEY}\n")).expect("write");
    let (code, stdout, stderr) = output(
        env.cli()
            .args([
                "--api-key-file",
                "key",
                "query",
                "select count() as one from persons",
            ])
            .args(["--project-id", "1"])
            .env("POSTHOG_HOST", env.server().base_url()),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(one_json_object(&stdout)["rows"][0]["one"], 50);
    assert_eq!(env.server().request_count(RouteClass::Query), 1);
}

#[test]
fn one_row_is_one_row() {
    let env = Env::new();
    let (code, stdout, stderr) = output(
        env.cli()
            .args([
                "query",
                "--format",
                "table",
                "select count() as one from persons",
            ])
            .args(["--host", &env.server().base_url(), "--project-id", "1"])
            .env(KEY_ENV, KEY),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.ends_with("(1 row)\n"), "{stdout}");
}
