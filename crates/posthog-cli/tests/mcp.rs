//! `posthog-cli mcp` end to end: the binary is spawned against an in-process mock PostHog and
//! driven over its stdin/stdout with newline-delimited JSON-RPC 2.0 written here by hand, as an
//! MCP client would. Every read has a timeout, so a hung server fails the test instead of
//! blocking CI.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod common;

use common::{Env, KEY, KEY_ENV};
use posthog_mock::{Dataset, GenSpec, MockConfig, RouteClass};
use serde_json::{Value, json};

const PROTOCOL_VERSION: &str = "2025-06-18";
/// Longest wait for one response (a debug build on a loaded 2-core machine is slow).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the process to exit once stdin is closed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A mock serving `events` generated events (the default dataset has 1 000).
fn mock(events: usize) -> Env {
    Env::with(MockConfig::with_dataset(Dataset::generate(&GenSpec {
        events,
        ..GenSpec::default()
    })))
}

/// The JSON bodies of the `POST …/query/` requests received so far.
fn query_bodies(env: &Env) -> Vec<Value> {
    env.server()
        .requests()
        .into_iter()
        .filter(|r| r.route == RouteClass::Query && r.method == "POST")
        .filter_map(|r| r.body)
        .collect()
}

/// A running `posthog-cli mcp` with its stdout read line by line on a thread.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every stdout line, for the final checks.
    seen: Vec<String>,
    stdout_thread: Option<JoinHandle<()>>,
    stderr_thread: Option<JoinHandle<String>>,
    next_id: u64,
}

impl Session {
    fn start(mock: &Env) -> Session {
        let mut child = mock
            .cli()
            .args([
                "mcp",
                "--host",
                &mock.server().base_url(),
                "--project-id",
                "1",
            ])
            .env(KEY_ENV, KEY)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("posthog-cli mcp starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        let stdout_thread = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Drained on its own thread so a chatty server can never block on a full pipe.
        let mut stderr = child.stderr.take().expect("stderr");
        let stderr_thread = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Session {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            stdout_thread: Some(stdout_thread),
            stderr_thread: Some(stderr_thread),
            next_id: 1,
        }
    }

    fn send(&mut self, message: &Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        let mut line = serde_json::to_string(message).expect("json");
        line.push('\n');
        stdin
            .write_all(line.as_bytes())
            .expect("write to the server");
        stdin.flush().expect("flush to the server");
    }

    fn notify(&mut self, method: &str) {
        self.send(&json!({"jsonrpc": "2.0", "method": method}));
    }

    /// Sends a request and returns its response (`result` or `error` object as a whole),
    /// skipping any notifications the server sends meanwhile.
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let deadline = Instant::now() + RESPONSE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no response to {method} (id {id}) within {RESPONSE_TIMEOUT:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let stderr = self.kill_and_collect_stderr();
                    panic!("the server closed stdout before answering {method}; stderr:\n{stderr}")
                }
            };
            self.seen.push(line.clone());
            let message: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
            assert_eq!(message["jsonrpc"], "2.0", "not JSON-RPC 2.0: {line}");
            if message.get("id") == Some(&json!(id)) {
                return message;
            }
            assert!(
                message.get("id").is_none() && message.get("method").is_some(),
                "unexpected message while waiting for id {id}: {line}"
            );
        }
    }

    /// `tools/call`, returning the tool result (a protocol error fails the test).
    fn call(&mut self, tool: &str, arguments: Value) -> Value {
        let response = self.request("tools/call", json!({"name": tool, "arguments": arguments}));
        assert!(
            response.get("error").is_none(),
            "{tool}: protocol error {response}"
        );
        response["result"].clone()
    }

    /// A successful tool call's structured result, checked against its text content.
    fn call_ok(&mut self, tool: &str, arguments: Value) -> Value {
        let result = self.call(tool, arguments);
        assert_eq!(result["isError"], false, "{tool} failed: {result}");
        let text = result["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("{tool}: no text content: {result}"));
        let from_text: Value = serde_json::from_str(text).expect("the text content is JSON");
        assert_eq!(
            result["structuredContent"], from_text,
            "{tool}: structured and text content differ"
        );
        from_text
    }

    /// A failed tool call's one-line message.
    fn call_err(&mut self, tool: &str, arguments: Value) -> String {
        let result = self.call(tool, arguments);
        assert_eq!(
            result["isError"], true,
            "{tool} should have failed: {result}"
        );
        let text = result["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("{tool}: no text content: {result}"))
            .to_owned();
        assert!(!text.contains('\n'), "not one line: {text:?}");
        text
    }

    /// Closes stdin and waits (bounded) for the exit; returns (exit code, stderr, every stdout
    /// line).
    fn close(mut self) -> (i32, String, Vec<String>) {
        drop(self.stdin.take());
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let stderr = self.kill_and_collect_stderr();
                panic!(
                    "the server did not exit within {EXIT_TIMEOUT:?} of stdin closing; stderr:\n{stderr}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(t) = self.stdout_thread.take() {
            t.join().expect("stdout reader");
        }
        // Whatever the server wrote after the last response must be JSON-RPC too.
        while let Ok(line) = self.lines.try_recv() {
            let message: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
            assert_eq!(message["jsonrpc"], "2.0", "not JSON-RPC 2.0: {line}");
            self.seen.push(line);
        }
        let stderr = self
            .stderr_thread
            .take()
            .map(|t| t.join().expect("stderr reader"))
            .unwrap_or_default();
        let seen = std::mem::take(&mut self.seen);
        (status.code().expect("exited, not killed"), stderr, seen)
    }

    fn kill_and_collect_stderr(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr_thread
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Only after a failed assertion: never leave the child running.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn rows(result: &Value) -> &Vec<Value> {
    result["rows"].as_array().expect("rows")
}

#[test]
fn an_agent_session_lists_queries_and_runs_templates_without_injection() {
    let mock = mock(1_500);
    let mut session = Session::start(&mock);

    // initialize
    let init = session.request(
        "initialize",
        json!({
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "mcp-test", "version": "0.0.0"},
        }),
    );
    let init = &init["result"];
    assert_eq!(init["protocolVersion"], PROTOCOL_VERSION, "{init}");
    assert_eq!(init["serverInfo"]["name"], "posthog-cli");
    assert_eq!(init["serverInfo"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(init["capabilities"]["tools"].is_object(), "{init}");
    let instructions = init["instructions"].as_str().expect("instructions");
    assert!(instructions.contains("list_objects") && instructions.contains("list_templates"));
    session.notify("notifications/initialized");

    // tools/list
    let listed = session.request("tools/list", json!({}));
    let tools = listed["result"]["tools"].as_array().expect("tools");
    let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "get_fields",
            "list_objects",
            "list_templates",
            "query",
            "run_template"
        ]
    );
    for tool in tools {
        let schema = &tool["inputSchema"];
        assert_eq!(schema["type"], "object", "{tool}");
        assert_eq!(schema["additionalProperties"], false, "{tool}");
        assert!(tool["description"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let query_tool = tools.iter().find(|t| t["name"] == "query").unwrap();
    assert_eq!(query_tool["inputSchema"]["required"], json!(["hogql"]));
    let description = query_tool["description"].as_str().unwrap();
    assert!(description.contains("OFFSET") && description.contains("50000"));

    // list_objects
    let objects = session.call_ok("list_objects", json!({}));
    let objects = objects["objects"].as_array().expect("objects");
    assert_eq!(objects.len(), 8);
    let events = objects
        .iter()
        .find(|o| o["name"] == "events")
        .expect("events");
    assert_eq!(events["hogql_table"], "events");

    // query with a bound value, against a plain count of the same events
    let expected = session.call_ok(
        "query",
        json!({"hogql": "select count() as n from events where event = '$pageview'"}),
    );
    let expected = rows(&expected)[0]["n"].clone();
    assert!(
        expected.as_u64().is_some_and(|n| n > 0),
        "the mock has pageviews: {expected}"
    );
    let result = session.call_ok(
        "query",
        json!({
            "hogql": "select event, count() as n from events where event = {name} group by event",
            "values": {"name": "$pageview"},
        }),
    );
    assert_eq!(result["columns"], json!(["event", "n"]));
    assert_eq!(result["row_count"], 1);
    assert_eq!(result["truncated"], false);
    assert_eq!(
        rows(&result)[0],
        json!({"event": "$pageview", "n": expected})
    );
    let bound = query_bodies(&mock)
        .into_iter()
        .find(|b| b["query"]["values"]["name"] == "$pageview")
        .expect("the bound query reached the mock");
    assert_eq!(
        bound["query"]["query"],
        "select event, count() as n from events where event = {name} group by event"
    );

    // at most 1000 rows reach the agent, and the result says rows were left out
    let many = session.call_ok(
        "query",
        json!({"hogql": "select uuid, event from events order by uuid limit {n}", "values": {"n": 1200}}),
    );
    assert_eq!(many["row_count"], 1000);
    assert_eq!(rows(&many).len(), 1000);
    assert_eq!(many["truncated"], true);
    assert!(
        many["note"].as_str().is_some_and(|n| n.contains("1200")),
        "{}",
        many["note"]
    );

    // run_template: a real user's timeline has rows (the window reaches the mock's data)...
    let someone = session.call_ok(
        "query",
        json!({"hogql": "select distinct_id from events order by distinct_id limit 1"}),
    );
    let someone = rows(&someone)[0]["distinct_id"].clone();
    let timeline = session.call_ok(
        "run_template",
        json!({"name": "user_timeline", "vars": {"distinct_id": someone, "days": 3650}}),
    );
    assert!(!rows(&timeline).is_empty(), "{timeline}");

    // ...and an injection attempt is bound as a constant, so nothing matches
    let attack = "x' OR 1=1 --";
    let timeline = session.call_ok(
        "run_template",
        json!({"name": "user_timeline", "vars": {"distinct_id": attack, "days": "3650"}}),
    );
    assert_eq!(timeline["row_count"], 0, "{timeline}");
    assert_eq!(rows(&timeline).len(), 0);
    let template = posthog_agent::templates::find("user_timeline").expect("template");
    let sent = query_bodies(&mock)
        .into_iter()
        .find(|b| b["query"]["values"]["distinct_id"] == attack)
        .expect("the template query reached the mock");
    assert_eq!(sent["query"]["query"], template.hogql);
    assert!(!sent["query"]["query"].as_str().unwrap().contains(attack));
    assert_eq!(sent["query"]["values"]["days"], 3650);
    assert_eq!(sent["query"]["values"]["limit"], 100);

    // a variable that is not what the template takes: refused before anything is sent
    let queries_before = query_bodies(&mock).len();
    let message = session.call_err(
        "run_template",
        json!({"name": "top_events", "vars": {"limit": "1) union all select 1 --"}}),
    );
    assert!(message.starts_with("config: "), "{message}");
    assert!(message.contains("\"limit\""), "{message}");
    assert_eq!(
        query_bodies(&mock).len(),
        queries_before,
        "a query was sent"
    );

    // an unknown data type, an unknown argument, a HogQL error from PostHog
    let message = session.call_err("get_fields", json!({"name": "nope"}));
    assert!(message.starts_with("config: "), "{message}");
    assert!(
        message.contains("events") && message.contains("feature_flags"),
        "{message}"
    );
    let message = session.call_err("query", json!({"sql": "select 1"}));
    assert!(
        message.starts_with("config: query: unknown argument \"sql\""),
        "{message}"
    );
    let message = session.call_err("query", json!({"hogql": "select nope from nowhere"}));
    assert!(!message.is_empty());

    // get_fields works for a real type
    let fields = session.call_ok("get_fields", json!({"name": "events"}));
    assert_eq!(fields["object"], "events");
    assert!(
        fields["fields"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["name"] == "timestamp")),
        "{fields}"
    );

    // list_templates
    let templates = session.call_ok("list_templates", json!({}));
    let templates = templates["templates"].as_array().expect("templates");
    assert_eq!(templates.len(), posthog_agent::templates::all().len());
    assert!(
        templates
            .iter()
            .all(|t| t["params"].is_array() && t.get("hogql").is_none())
    );

    // an unknown tool is a protocol error, not a tool result
    let unknown = session.request("tools/call", json!({"name": "drop_table", "arguments": {}}));
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");

    // the client goes away: the server exits cleanly
    let (code, stderr, seen) = session.close();
    assert_eq!(code, 0, "stderr:\n{stderr}");
    for line in &seen {
        assert!(!line.contains(KEY), "the key leaked to stdout: {line}");
    }
    assert!(!stderr.contains(KEY), "the key leaked to stderr:\n{stderr}");
}

#[test]
fn a_client_that_leaves_before_initializing_ends_the_server_cleanly() {
    let mock = mock(10);
    let session = Session::start(&mock);
    let (code, stderr, seen) = session.close();
    assert_eq!(code, 0, "stderr:\n{stderr}");
    assert!(seen.is_empty());
    assert!(!stderr.contains(KEY));
}
