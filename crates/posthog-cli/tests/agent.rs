//! The agent and API commands end to end against the mock: `objects`, `fields`, `query`,
//! `template`, `capture`, `flags`, `cohorts`; their output formats, connection resolution and
//! exit codes.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use common::{Env, KEY, KEY_ENV, assert_error_json, one_json_object, output};
use posthog_mock::RouteClass;
use serde_json::{Value, json};

const PROJECT_KEY_ENV: &str = "POSTHOG_PROJECT_API_KEY";

impl Env {
    /// The binary with the connection given as flags and the key in the environment.
    fn agent(&self, args: &[&str]) -> Command {
        let mut cmd = self.cli();
        cmd.args(args)
            .args(["--host", &self.server().base_url(), "--project-id", "1"])
            .env(KEY_ENV, KEY)
            .env_remove(PROJECT_KEY_ENV);
        cmd
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = output(&mut self.agent(args));
        assert_eq!(code, 0, "{args:?}: {stderr}\n{stdout}");
        assert!(!stdout.contains(KEY) && !stderr.contains(KEY));
        stdout
    }

    fn ok_json(&self, args: &[&str]) -> Value {
        one_json_object(&self.ok(args))
    }

    /// The count the mock reports for a query, asked through the binary's JSON output.
    fn scalar(&self, hogql: &str) -> Value {
        let out = self.ok_json(&["query", hogql]);
        out["rows"][0]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .clone()
    }
}

#[test]
fn objects_lists_the_eight_entity_types_without_any_request() {
    let env = Env::new();
    let (code, stdout, _) = output(env.cli().arg("objects"));
    assert_eq!(code, 0);
    let objects = one_json_object(&stdout)["objects"].clone();
    let names: Vec<&str> = objects
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "events",
            "insights",
            "persons",
            "cohorts",
            "feature_flags",
            "sessions",
            "annotations",
            "experiments"
        ]
    );
    assert!(
        objects
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["description"].is_string())
    );
    assert_eq!(env.server().total_requests(), 0);
}

#[test]
fn fields_reports_schema_types_and_real_property_names() {
    let env = Env::new();
    let out = env.ok_json(&["fields", "events"]);
    assert_eq!(out["object"], "events");
    let fields = out["fields"].as_array().unwrap();
    assert!(
        fields
            .iter()
            .any(|f| f["name"] == "timestamp" && f["source"] == "schema")
    );
    assert!(
        fields
            .iter()
            .any(|f| f["name"] == "properties.$current_url" && f["source"] == "property_definition"),
        "{out}"
    );
    let (code, stdout, stderr) = output(&mut env.agent(&["fields", "dashboards"]));
    assert_eq!(code, 2, "{stderr}");
    let err = assert_error_json(&stdout, "config");
    assert!(
        err["message"].as_str().unwrap().contains("feature_flags"),
        "{err}"
    );
}

#[test]
fn query_binds_vars_and_prints_every_format() {
    let env = Env::new();
    let total = env.scalar("select count() from events where event = '$pageview'");
    let hogql = "select event, count() as n from events where event = {name} group by event";
    let json = env.ok_json(&["query", "--var", "name=$pageview", hogql]);
    assert_eq!(json["rows"], json!([{"event": "$pageview", "n": total}]));
    assert_eq!(json["row_count"], 1);
    assert_eq!(json["types"][1][0], "n");

    let sent = env.last_body(RouteClass::Query);
    assert_eq!(sent["query"]["query"], hogql, "the text is sent untouched");
    assert_eq!(sent["query"]["values"]["name"], "$pageview");

    let jsonl = env.ok(&[
        "query",
        "--format",
        "jsonl",
        "--var",
        "name=$pageview",
        hogql,
    ]);
    assert_eq!(
        jsonl,
        format!("{}\n", json!({"event": "$pageview", "n": total}))
    );
    let csv = env.ok(&["query", "-f", "csv", "--var", "name=$pageview", hogql]);
    assert_eq!(csv, format!("event,n\n$pageview,{total}\n"));
    let table = env.ok(&["query", "-f", "table", "--var", "name=$pageview", hogql]);
    assert!(table.starts_with("event"), "{table}");
    assert!(table.ends_with("(1 row)\n"), "{table}");

    let queued = env.ok_json(&["query", "--async", "--var", "name=$pageview", hogql]);
    assert_eq!(queued["rows"], json["rows"]);
    assert!(env.server().request_count(RouteClass::QueryStatus) >= 1);
}

#[test]
fn query_reads_stdin_and_refuses_bad_queries_with_exit_2() {
    let env = Env::new();
    let mut child = env
        .agent(&["query", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"select count() as n from persons")
        .unwrap();
    let done = child.wait_with_output().unwrap();
    assert!(done.status.success());
    let out: Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(out["rows"][0]["n"], 50);

    let (code, stdout, _) = output(&mut env.agent(&["query", "select nope from events"]));
    assert_eq!(code, 2);
    assert!(
        assert_error_json(&stdout, "config")["message"]
            .as_str()
            .unwrap()
            .contains("nope")
    );
    let (code, stdout, _) =
        output(&mut env.agent(&["query", "select uuid from events limit 10 offset 10"]));
    assert_eq!(code, 2);
    assert!(
        assert_error_json(&stdout, "config")["message"]
            .as_str()
            .unwrap()
            .contains("OFFSET")
    );
}

#[test]
fn connection_comes_from_flags_env_or_config_and_a_missing_one_exits_2() {
    let env = Env::new();
    let (code, stdout, _) = output(env.cli().args(["query", "select 1"]).env(KEY_ENV, KEY));
    assert_eq!(code, 2);
    let err = assert_error_json(&stdout, "config");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("POSTHOG_PROJECT_ID"),
        "{err}"
    );
    assert_eq!(env.server().total_requests(), 0);

    let via_env = env
        .cli()
        .args(["query", "select count() as n from persons"])
        .env(KEY_ENV, KEY)
        .env("POSTHOG_HOST", env.server().base_url())
        .env("POSTHOG_PROJECT_ID", "1")
        .output()
        .unwrap();
    assert!(via_env.status.success());

    let config = env.config("c.yaml", Some(KEY), "");
    let (code, stdout, _) = output(env.cli().args([
        "query",
        "--config",
        config.to_str().unwrap(),
        "select count() as n from persons",
    ]));
    assert_eq!(code, 0);
    assert_eq!(one_json_object(&stdout)["rows"][0]["n"], 50);

    let (code, stdout, _) = output(
        env.cli()
            .args([
                "query",
                "--host",
                &env.server().base_url(),
                "--project-id",
                "1",
                "select 1",
            ])
            .env(KEY_ENV, "phx_wrong_key"),
    );
    assert_eq!(code, 3);
    assert_error_json(&stdout, "auth");
}

#[test]
fn templates_are_listed_shown_and_run_with_checked_variables() {
    let env = Env::new();
    let (code, stdout, _) = output(env.cli().args(["template", "list"]));
    assert_eq!(code, 0);
    let list = one_json_object(&stdout);
    let templates = list["templates"].as_array().unwrap();
    assert!(templates.len() >= 14);
    assert!(templates.iter().any(|t| t["name"] == "churn_risk"));

    let (code, stdout, _) = output(env.cli().args(["template", "show", "power_users"]));
    assert_eq!(code, 0);
    let shown = one_json_object(&stdout);
    assert!(
        shown["hogql"]
            .as_str()
            .unwrap()
            .contains("{min_active_days}")
    );
    assert_eq!(shown["params"][1]["name"], "min_active_days");
    assert_eq!(shown["params"][1]["type"], "integer");
    assert_eq!(
        env.server().total_requests(),
        0,
        "list and show send nothing"
    );

    let top = env.ok_json(&[
        "template",
        "run",
        "top_events",
        "--var",
        "days=3650",
        "--var",
        "limit=2",
    ]);
    assert_eq!(top["row_count"], 2);
    assert_eq!(top["columns"], json!(["event", "events", "users"]));

    let before = env.server().request_count(RouteClass::Query);
    for (vars, expected) in [
        (
            &["--var", "limit=1) union all select 1 --"][..],
            "is not a whole number",
        ),
        (&["--var", "limit=0"][..], "out of range"),
        (&["--var", "bogus=1"][..], "unknown variable"),
    ] {
        let mut args = vec!["template", "run", "top_events"];
        args.extend_from_slice(vars);
        let (code, stdout, _) = output(&mut env.agent(&args));
        assert_eq!(code, 2, "{vars:?}");
        let err = assert_error_json(&stdout, "config");
        assert!(err["message"].as_str().unwrap().contains(expected), "{err}");
    }
    let (code, _, _) = output(&mut env.agent(&["template", "run", "nope"]));
    assert_eq!(code, 2);
    assert_eq!(
        env.server().request_count(RouteClass::Query),
        before,
        "nothing sent"
    );

    let attack = env.ok_json(&[
        "template",
        "run",
        "user_timeline",
        "--var",
        "distinct_id=x' OR 1=1 --",
        "--var",
        "days=3650",
    ]);
    assert_eq!(
        attack["row_count"], 0,
        "an injection attempt is only a value"
    );
}

#[test]
fn capture_sends_one_event_or_a_checked_batch_with_stable_uuids() {
    let env = Env::new();
    // No project key given: it is read from the project (api_token).
    let one = env.ok_json(&[
        "capture",
        "signed_up",
        "--distinct-id",
        "user-42",
        "-p",
        "plan=pro",
        "-p",
        "seats=3",
    ]);
    assert_eq!(one["events"], 1);
    let captured = env.server().captured_events();
    let event = captured.last().unwrap();
    assert_eq!(event["event"], "signed_up");
    assert_eq!(event["properties"]["plan"], "pro");
    assert_eq!(event["properties"]["seats"], 3);
    assert_eq!(event["uuid"], one["uuids"][0]);

    let batch = "{\"event\":\"a\",\"distinct_id\":\"u1\",\"timestamp\":\"2025-01-02T03:04:05Z\"}\n\
                 {\"event\":\"b\",\"distinct_id\":\"u2\",\"timestamp\":\"2025-01-02T03:04:06Z\",\"properties\":{\"k\":[1]}}\n";
    let send = |input: &str| {
        let mut child = env
            .agent(&["capture", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8(out.stdout).unwrap(),
        )
    };
    let before = env.server().captured_events().len();
    let (code, stdout) = send(batch);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(one_json_object(&stdout)["events"], 2);
    let (code, _) = send(batch);
    assert_eq!(code, 0);
    assert_eq!(env.server().captured_events().len(), before + 4);
    assert_eq!(
        env.server().captured_unique_uuids(),
        2 + 1,
        "re-sending the batch repeats its UUIDs, so PostHog deduplicates it"
    );

    let batches_before = env.server().request_count(RouteClass::Batch);
    let (code, stdout) = send("{\"event\":\"a\",\"distinct_id\":\"u\"}\nnot json\n");
    assert_eq!(code, 2);
    let err = assert_error_json(&stdout, "config");
    assert!(
        err["message"].as_str().unwrap().starts_with("stdin line 2"),
        "{err}"
    );
    assert_eq!(
        env.server().request_count(RouteClass::Batch),
        batches_before,
        "a bad line sends nothing"
    );

    let key_file = env.path("project.key");
    std::fs::write(&key_file, "phc_wrong\n").unwrap();
    let (code, stdout, _) = output(&mut env.agent(&[
        "--project-api-key-file",
        key_file.to_str().unwrap(),
        "capture",
        "x",
        "--distinct-id",
        "u",
    ]));
    assert_eq!(code, 3, "{stdout}");
    assert!(!stdout.contains("phc_wrong"));
}

#[test]
fn flags_are_listed_and_evaluated_for_a_person() {
    let env = Env::new();
    let flags = env.ok_json(&["flags", "list"]);
    let flags = flags["flags"].as_array().unwrap();
    assert!(!flags.is_empty());
    let active = flags
        .iter()
        .find(|f| f["active"] == true)
        .expect("an active flag");
    let key = active["key"].as_str().unwrap();
    let out = env.ok_json(&["flags", "evaluate", key, "--distinct-id", "user-1"]);
    assert_eq!(out["key"], key);
    assert!(out["enabled"].is_boolean());
    assert!(out["reason"]["code"].is_string());
    let sent = env.last_body(RouteClass::Flags);
    assert_eq!(sent["distinct_id"], "user-1");

    let (code, stdout, _) =
        output(&mut env.agent(&["flags", "evaluate", "no-such-flag", "--distinct-id", "u"]));
    assert_eq!(code, 2);
    assert_error_json(&stdout, "config");
}

#[test]
fn cohorts_are_listed_created_and_their_persons_listed() {
    let env = Env::new();
    let before = env.ok_json(&["cohorts", "list"])["cohorts"]
        .as_array()
        .unwrap()
        .len();
    let filters = r#"{"properties":{"type":"AND","values":[{"key":"plan","value":"pro","type":"person","operator":"exact"}]}}"#;
    let created = env.ok_json(&["cohorts", "create", "Pro users", "--filters", filters]);
    let id = created["id"].as_u64().unwrap();
    let after = env.ok_json(&["cohorts", "list"])["cohorts"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(after, before + 1);

    let pro = env.scalar("select count() from persons where properties.plan = 'pro'");
    let persons = env.ok_json(&["cohorts", "persons", &id.to_string()]);
    assert_eq!(persons["count"], pro);
    let limited = env.ok_json(&["cohorts", "persons", &id.to_string(), "--limit", "2"]);
    assert_eq!(limited["count"], 2);

    let (code, stdout, _) = output(&mut env.agent(&["cohorts", "create", "x", "--filters", "[1]"]));
    assert_eq!(code, 2);
    assert_error_json(&stdout, "config");
    let (code, _, _) = output(&mut env.agent(&["cohorts", "persons", "999999"]));
    assert_eq!(code, 2, "an unknown cohort is a 404: config");
}
