//! `posthog-cli mcp`: the Model Context Protocol server on stdio.
//!
//! An MCP client (Claude Desktop, Claude Code, an IDE agent) starts `posthog-cli mcp` and talks
//! newline-delimited JSON-RPC 2.0 over its stdin and stdout; the session ends when the client
//! closes stdin. Only MCP messages are written to stdout (logs go to stderr).
//!
//! Five read-only tools expose the same library calls as the agent commands:
//!
//! - `list_objects`: the eight entity types (`objects`);
//! - `get_fields`: the fields of one of them (`fields NAME`);
//! - `query`: a HogQL query with values bound as `{placeholders}` (`query HOGQL`);
//! - `list_templates`: the parameterised queries (`template list`);
//! - `run_template`: one of them with checked variables (`template run`).
//!
//! A tool that fails (bad arguments or variables, a HogQL error from PostHog, the network) is
//! answered with a tool result marked `isError` whose text is one line starting with the
//! failure's category (`config: …`, `auth: …`, `network: …`), so the agent can read it and
//! correct itself; only an unknown tool name is a JSON-RPC error. Messages never contain the API
//! key: the client redacts its errors, and nothing here quotes headers or the config.

use std::borrow::Cow;
use std::pin::pin;
use std::sync::Arc;

use futures_util::future::{Either, select};
use posthog_agent::{Entity, templates};
use posthog_client::{Client, HogQlQuery, QueryResult};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::{QuitReason, RequestContext, RoleServer, ServerInitializeError};
use rmcp::{ErrorData, ServerHandler, ServiceExt as _};
use serde_json::{Map, Value, json};

use crate::output::Failure;

/// Most rows a `query` or `run_template` result hands the agent; the rest are dropped and the
/// result says so (`truncated`).
const MAX_ROWS: usize = 1000;

/// The name given to ad-hoc queries in PostHog's query log.
const QUERY_NAME: &str = "posthog-cli mcp";

/// What the server tells the agent at `initialize`.
const INSTRUCTIONS: &str = "Read-only access to one PostHog project's product analytics \
(events, persons, sessions, feature flags, cohorts, experiments, …). Start with list_objects to \
see what data exists and list_templates to see ready-made, parameterised analyses (churn risk, \
retention, funnels, power users, top events, …). Prefer run_template when a template answers \
the question. Otherwise call get_fields on the table you need, then write HogQL (PostHog's SQL \
dialect) for the query tool, passing every literal value through `values` and referencing it as \
{name} in the query. A failed call returns isError with a one-line message that starts with its \
category (config, auth, permission, network, timeout, rate_limited, server, data); config errors \
are yours to fix, the others are about the connection to PostHog.";

/// Serves MCP on stdin/stdout until the client disconnects.
pub async fn serve(client: Client) -> Result<(), Failure> {
    let server = PostHogMcp { client };
    let running = match server.serve(rmcp::transport::stdio_pipes()).await {
        Ok(running) => running,
        // The client went away before (or while) initializing: nothing to serve.
        Err(ServerInitializeError::ConnectionClosed(why)) => {
            tracing::info!(reason = %why, "MCP client disconnected before initializing");
            return Ok(());
        }
        Err(e) => {
            return Err(Failure::internal(&anyhow::anyhow!(
                "mcp: the session did not start: {e}"
            )));
        }
    };
    tracing::info!("MCP session started");
    match running.waiting().await {
        Ok(QuitReason::JoinError(e)) | Err(e) => Err(Failure::internal(&anyhow::anyhow!(
            "mcp: the session failed: {e}"
        ))),
        Ok(reason) => {
            tracing::info!(?reason, "MCP session ended");
            Ok(())
        }
    }
}

/// The server: a client for the configured project.
struct PostHogMcp {
    client: Client,
}

/// A failed tool call: its category and a one-line message.
#[derive(Debug)]
struct ToolFailure {
    category: &'static str,
    message: String,
}

impl ToolFailure {
    /// A mistake in the arguments: the agent can fix it.
    fn config(message: impl Into<String>) -> Self {
        ToolFailure {
            category: "config",
            message: message.into(),
        }
    }

    /// `<category>: <message>` on one line.
    fn text(&self) -> String {
        format!("{}: {}", self.category, self.message)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    }
}

impl From<posthog_client::Error> for ToolFailure {
    fn from(err: posthog_client::Error) -> Self {
        ToolFailure::from(crate::agent::client_failure(err))
    }
}

impl From<Failure> for ToolFailure {
    fn from(failure: Failure) -> Self {
        ToolFailure {
            category: failure.category,
            message: failure.message,
        }
    }
}

type ToolOutcome = Result<Value, ToolFailure>;

impl ServerHandler for PostHogMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("posthog-cli", env!("CARGO_PKG_VERSION"))
                    .with_title("PostHog")
                    .with_description("PostHog product analytics: HogQL queries and templates"),
            )
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools().into_iter().find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        let name = request.name.as_ref();
        let work = async {
            match name {
                "list_objects" => Some(list_objects(&args)),
                "get_fields" => Some(self.get_fields(&args).await),
                "query" => Some(self.query(&args).await),
                "list_templates" => Some(list_templates(&args)),
                "run_template" => Some(self.run_template(&args).await),
                _ => None,
            }
        };
        // A `notifications/cancelled` for this request stops the work (and the HTTP call).
        let outcome = match select(pin!(work), pin!(context.ct.cancelled())).await {
            Either::Left((Some(outcome), _)) => outcome,
            Either::Left((None, _)) => {
                return Err(ErrorData::invalid_params(
                    format!(
                        "unknown tool {name:?}; the tools are {}",
                        TOOL_NAMES.join(", ")
                    ),
                    None,
                ));
            }
            Either::Right(((), _)) => Err(ToolFailure {
                category: "unknown",
                message: format!("{name}: cancelled by the client"),
            }),
        };
        let result = match outcome {
            Ok(value) => CallToolResult::structured(value),
            Err(failure) => {
                let text = failure.text();
                tracing::warn!(tool = name, error = %text, "MCP tool call failed");
                CallToolResult::error(vec![ContentBlock::text(text)])
            }
        };
        Ok(result.into())
    }
}

const TOOL_NAMES: [&str; 5] = [
    "list_objects",
    "get_fields",
    "query",
    "list_templates",
    "run_template",
];

/// The five tools with their input schemas.
fn tools() -> Vec<Tool> {
    let entity_names: Vec<&str> = Entity::ALL.iter().map(|e| e.name()).collect();
    let template_names: Vec<&str> = templates::all().iter().map(|t| t.name).collect();
    let local = ToolAnnotations::new()
        .read_only(true)
        .idempotent(true)
        .open_world(false);
    let remote = ToolAnnotations::new()
        .read_only(true)
        .idempotent(true)
        .open_world(true);
    vec![
        Tool::new(
            "list_objects",
            "List the eight kinds of PostHog data (events, insights, persons, cohorts, \
             feature_flags, sessions, annotations, experiments) with what each holds, the HogQL \
             table to query it from (events, persons, sessions; null when it has none) and its \
             REST resource. Call this first to see what exists, then get_fields for columns.",
            schema(json!({})),
        )
        .with_title("List PostHog data types")
        .with_annotations(local.clone()),
        Tool::new(
            "get_fields",
            "List the fields of one data type, with their types and descriptions: the HogQL \
             columns of its table plus the event or person property names seen in this \
             project (query them as properties.<name>). Call it before writing HogQL so the \
             query names real columns.",
            schema_with(
                json!({
                    "name": {
                        "type": "string",
                        "enum": entity_names,
                        "description": "The data type, as list_objects names it, e.g. \
                                        \"events\" or \"persons\".",
                    }
                }),
                &["name"],
            ),
        )
        .with_title("Get the fields of a data type")
        .with_annotations(remote.clone()),
        Tool::new(
            "query",
            format!(
                "Run a read-only HogQL query (PostHog's SQL dialect, ClickHouse functions) and \
                 get the rows as objects keyed by column: {{columns, rows, row_count, \
                 truncated}}. Tables: events, persons, sessions (get_fields lists their \
                 columns; event properties are properties.<name>). Never put literal values in \
                 the text: write a {{name}} placeholder and pass the value in `values`, e.g. \
                 hogql \"select count() from events where event = {{event}}\" with values \
                 {{\"event\": \"$pageview\"}}; values are bound as constants by PostHog, never \
                 spliced into the query. PostHog rejects OFFSET (page by filtering on an ordered \
                 column instead) and caps LIMIT at 50000; without a LIMIT it applies a small \
                 default one. At most {MAX_ROWS} rows are returned here (truncated: true says rows were \
                 left out), so aggregate (count, uniq, group by) or LIMIT in the query."
            ),
            schema_with(
                json!({
                    "hogql": {
                        "type": "string",
                        "minLength": 1,
                        "description": "The HogQL query, with {name} placeholders for values, \
                                        e.g. \"select event, count() as n from events where \
                                        timestamp >= now() - toIntervalDay({days}) group by \
                                        event order by n desc limit 20\".",
                    },
                    "values": {
                        "type": "object",
                        "description": "The value of each {name} placeholder in the query: \
                                        strings, numbers, booleans (e.g. {\"days\": 7}).",
                        "additionalProperties": true,
                    }
                }),
                &["hogql"],
            ),
        )
        .with_title("Run a HogQL query")
        .with_annotations(remote.clone()),
        Tool::new(
            "list_templates",
            "List the ready-made analyses (churn_risk, retention_weekly, funnel_conversion, \
             power_users, top_events, user_timeline, …): each with its category, what question \
             it answers and which columns it returns, and its parameters with type, range and \
             default. Run one with run_template.",
            schema(json!({})),
        )
        .with_title("List query templates")
        .with_annotations(local),
        Tool::new(
            "run_template",
            format!(
                "Run one of the templates list_templates shows, with its variables (parameters \
                 left out take their defaults). Variables are checked against the template's \
                 types and ranges before anything is sent and bound as constants, never \
                 spliced into the query. Returns {{columns, rows, row_count, truncated}}, at \
                 most {MAX_ROWS} rows."
            ),
            schema_with(
                json!({
                    "name": {
                        "type": "string",
                        "enum": template_names,
                        "description": "The template's name, e.g. \"top_events\".",
                    },
                    "vars": {
                        "type": "object",
                        "description": "The template's parameters by name, e.g. {\"days\": 14, \
                                        \"limit\": 10}; integers may be numbers or digit \
                                        strings.",
                        "additionalProperties": {
                            "type": ["string", "integer", "number", "boolean"]
                        },
                    }
                }),
                &["name"],
            ),
        )
        .with_title("Run a query template")
        .with_annotations(remote),
    ]
}

/// An object schema with these properties and no others.
fn schema(properties: Value) -> Arc<JsonObject> {
    schema_with(properties, &[])
}

/// An object schema with these properties, `required` among them, and no others.
fn schema_with(properties: Value, required: &[&str]) -> Arc<JsonObject> {
    let mut object = Map::new();
    object.insert("type".into(), json!("object"));
    object.insert("properties".into(), properties);
    if !required.is_empty() {
        object.insert("required".into(), json!(required));
    }
    object.insert("additionalProperties".into(), json!(false));
    Arc::new(object)
}

/// The arguments of one call, checked against what the tool takes.
struct Args<'a> {
    tool: &'static str,
    args: &'a JsonObject,
}

impl<'a> Args<'a> {
    /// Refuses arguments the tool does not take.
    fn new(tool: &'static str, args: &'a JsonObject, takes: &[&str]) -> Result<Self, ToolFailure> {
        if let Some(key) = args.keys().find(|k| !takes.contains(&k.as_str())) {
            let takes = if takes.is_empty() {
                "no arguments".to_owned()
            } else {
                takes.join(", ")
            };
            return Err(ToolFailure::config(format!(
                "{tool}: unknown argument {key:?}; it takes {takes}"
            )));
        }
        Ok(Args { tool, args })
    }

    /// A required, non-empty string.
    fn text(&self, key: &str) -> Result<&'a str, ToolFailure> {
        match self.args.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
            Some(Value::String(_)) => Err(ToolFailure::config(format!(
                "{}: argument {key:?} is empty",
                self.tool
            ))),
            None | Some(Value::Null) => Err(ToolFailure::config(format!(
                "{}: argument {key:?} is required",
                self.tool
            ))),
            Some(other) => Err(ToolFailure::config(format!(
                "{}: argument {key:?} must be a string, not {}",
                self.tool,
                kind_of(other)
            ))),
        }
    }

    /// An optional object (absent or null: empty).
    fn object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>, ToolFailure> {
        match self.args.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map)),
            Some(other) => Err(ToolFailure::config(format!(
                "{}: argument {key:?} must be an object of name → value, not {}",
                self.tool,
                kind_of(other)
            ))),
        }
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `list_objects`.
fn list_objects(args: &JsonObject) -> ToolOutcome {
    Args::new("list_objects", args, &[])?;
    Ok(crate::agent::objects_json())
}

/// `list_templates`.
fn list_templates(args: &JsonObject) -> ToolOutcome {
    Args::new("list_templates", args, &[])?;
    Ok(crate::agent::templates_json())
}

impl PostHogMcp {
    /// `get_fields`.
    async fn get_fields(&self, args: &JsonObject) -> ToolOutcome {
        let args = Args::new("get_fields", args, &["name"])?;
        let name = args.text("name")?;
        let entity = Entity::from_name(name).ok_or_else(|| {
            let names: Vec<&str> = Entity::ALL.iter().map(|e| e.name()).collect();
            ToolFailure::config(format!(
                "get_fields: {name:?} is not a data type; choose one of {}",
                names.join(", ")
            ))
        })?;
        let fields = posthog_agent::fields(&self.client, entity).await?;
        Ok(json!({ "object": entity.name(), "fields": fields }))
    }

    /// `query`.
    async fn query(&self, args: &JsonObject) -> ToolOutcome {
        let args = Args::new("query", args, &["hogql", "values"])?;
        let text = args.text("hogql")?;
        let mut query = HogQlQuery::new(text).name(QUERY_NAME);
        for (key, value) in args.object("values")?.into_iter().flatten() {
            query = query.value(key, value.clone());
        }
        let result = self.client.query(&query).await?;
        Ok(rows_value(&result))
    }

    /// `run_template`.
    async fn run_template(&self, args: &JsonObject) -> ToolOutcome {
        let args = Args::new("run_template", args, &["name", "vars"])?;
        let name = args.text("name")?;
        let template = templates::find(name).ok_or_else(|| {
            let names: Vec<&str> = templates::all().iter().map(|t| t.name).collect();
            ToolFailure::config(format!(
                "run_template: no template {name:?}; there are {}",
                names.join(", ")
            ))
        })?;
        let vars = args.object("vars")?;
        let query = template
            .bind(
                vars.into_iter()
                    .flatten()
                    .map(|(k, v)| (k.as_str(), v.clone())),
            )
            .map_err(|err| match err {
                // "template top_events: variable \"limit\": …" says it all; the client's
                // "invalid request:" prefix adds nothing for the agent.
                posthog_client::Error::InvalidRequest { message, .. } => {
                    ToolFailure::config(message)
                }
                other => ToolFailure::from(other),
            })?
            .name(format!("{QUERY_NAME}: template {}", template.name));
        let result = self.client.query(&query).await?;
        Ok(rows_value(&result))
    }
}

/// `{columns, rows, row_count, truncated}` (plus `note` when truncated): at most [`MAX_ROWS`]
/// rows, each an object keyed by column.
fn rows_value(result: &QueryResult) -> Value {
    let total = result.results.len();
    let rows: Vec<Value> = result
        .results
        .iter()
        .take(MAX_ROWS)
        .map(|row| Value::Object(result.row_object(row)))
        .collect();
    let capped = total > rows.len();
    let more_in_posthog = result.has_more == Some(true);
    let mut value = json!({
        "columns": result.columns,
        "rows": rows,
        "row_count": rows.len(),
        "truncated": capped || more_in_posthog,
    });
    let note: Option<Cow<'static, str>> = match (capped, more_in_posthog) {
        (false, false) => None,
        (true, _) => Some(
            format!(
                "only the first {MAX_ROWS} of the {total} rows PostHog returned are shown; \
                 aggregate or add a LIMIT to see what matters"
            )
            .into(),
        ),
        (false, true) => Some(
            format!(
                "the query has no LIMIT, so PostHog applied its default{} and has more rows; \
                 aggregate, filter or set an explicit LIMIT (at most 50000)",
                result.limit.map_or(String::new(), |n| format!(" of {n}"))
            )
            .into(),
        ),
    };
    if let (Some(note), Value::Object(map)) = (note, &mut value) {
        map.insert("note".into(), Value::String(note.into_owned()));
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(rows: usize, has_more: Option<bool>) -> QueryResult {
        serde_json::from_value(json!({
            "columns": ["n", "n"],
            "types": [["n", "UInt64"], ["n", "UInt64"]],
            "results": (0..rows).map(|i| json!([i, i])).collect::<Vec<_>>(),
            "hasMore": has_more,
        }))
        .expect("a query result")
    }

    #[test]
    fn rows_are_objects_and_capped_with_a_note() {
        let small = rows_value(&result(2, Some(false)));
        assert_eq!(small["row_count"], 2);
        assert_eq!(small["truncated"], false);
        assert_eq!(small["rows"][1], json!({"n": 1, "n_2": 1}));
        assert!(small.get("note").is_none());

        let big = rows_value(&result(MAX_ROWS + 5, None));
        assert_eq!(big["row_count"], MAX_ROWS);
        assert_eq!(big["truncated"], true);
        assert!(big["note"].as_str().unwrap().contains("1005"));

        let more = rows_value(&result(3, Some(true)));
        assert_eq!(more["truncated"], true);
        assert_eq!(more["row_count"], 3);
    }

    #[test]
    fn every_tool_has_an_object_schema_that_refuses_extra_properties() {
        let tools = tools();
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(names, TOOL_NAMES);
        for tool in &tools {
            assert_eq!(tool.input_schema["type"], "object", "{}", tool.name);
            assert_eq!(
                tool.input_schema["additionalProperties"], false,
                "{}",
                tool.name
            );
            assert!(tool.description.as_deref().is_some_and(|d| d.len() > 80));
        }
    }

    #[test]
    fn unknown_and_mistyped_arguments_are_config_failures() {
        let args: JsonObject = serde_json::from_value(json!({"nme": "events"})).unwrap();
        let err = Args::new("get_fields", &args, &["name"]).err().unwrap();
        assert_eq!(
            err.text(),
            "config: get_fields: unknown argument \"nme\"; it takes name"
        );
        let args: JsonObject = serde_json::from_value(json!({"hogql": 1})).unwrap();
        let err = Args::new("query", &args, &["hogql"])
            .unwrap()
            .text("hogql")
            .err()
            .unwrap();
        assert_eq!(
            err.text(),
            "config: query: argument \"hogql\" must be a string, not a number"
        );
        let failure = ToolFailure {
            category: "server",
            message: "line one\nline two".into(),
        };
        assert_eq!(failure.text(), "server: line one line two");
    }
}
