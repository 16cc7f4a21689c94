//! The agent and API commands: `query`, `objects`, `fields`, `template`, `capture`, `flags`,
//! `cohorts`. Each calls one `posthog-client` or `posthog-agent` operation and prints its
//! result; the logic lives in the libraries.

use std::io::{self, BufRead as _, BufWriter, Read as _, Write as _};

use futures_util::{StreamExt as _, TryStreamExt as _};
use posthog_agent::{Entity, templates};
use posthog_client::{CaptureEvent, Client, FlagsRequest, HogQlQuery, NewCohort};
use posthog_osiris::ConfigError;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::cli::{
    CaptureArgs, CohortsCreateArgs, CohortsPersonsArgs, FieldsArgs, FlagsEvaluateArgs, QueryArgs,
    RowFormat, TemplateRunArgs,
};
use crate::output::{Failure, print_json_line};

/// Largest JSONL batch read from stdin (PostHog caps one request at 20 MB; batches are split,
/// but the whole input is checked before sending, so it is held in memory).
const MAX_BATCH_INPUT_BYTES: u64 = 256 * 1024 * 1024;

/// The namespace of the UUIDs derived for captured events without one (UUIDv5 of the event's
/// canonical JSON), so re-sending the same input yields the same UUIDs.
const CAPTURE_NAMESPACE: Uuid = Uuid::from_u128(0x6f1d_2a0c_5b7e_4c1a_9d3e_8f20_b4c6_a915);

/// Prints a JSON value as the command's one line on stdout.
pub fn print_value(value: &Value) -> Result<(), Failure> {
    print_json_line(&value.to_string()).map_err(stdout_failure)
}

fn stdout_failure(e: io::Error) -> Failure {
    Failure::internal(&anyhow::anyhow!("cannot write to stdout: {e}"))
}

/// `objects`: the eight entity types.
pub fn objects() -> Result<(), Failure> {
    print_value(&objects_json())
}

/// `{"objects": [...]}`, as `objects` prints it and MCP's `list_objects` returns it.
pub fn objects_json() -> Value {
    let objects: Vec<Value> = Entity::ALL
        .iter()
        .map(|e| {
            json!({
                "name": e.name(),
                "description": e.description(),
                "hogql_table": e.hogql_table(),
                "rest_resource": e.resource().map(|r| r.path()),
            })
        })
        .collect();
    json!({ "objects": objects })
}

/// `fields NAME`.
pub async fn fields(client: &Client, args: &FieldsArgs) -> Result<(), Failure> {
    let entity = entity_named(&args.name)?;
    let fields = posthog_agent::fields(client, entity)
        .await
        .map_err(client_failure)?;
    print_value(&json!({ "object": entity.name(), "fields": fields }))
}

/// The entity called `name`, or a config error listing the names there are.
pub fn entity_named(name: &str) -> Result<Entity, Failure> {
    Entity::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Entity::ALL.iter().map(|e| e.name()).collect();
        Failure::from(ConfigError::new(
            "NAME",
            format!(
                "{name:?} is not an entity type; choose one of {}",
                names.join(", ")
            ),
        ))
    })
}

/// `query HOGQL`.
pub async fn query(client: &Client, args: &QueryArgs) -> Result<(), Failure> {
    let text = if args.hogql == "-" {
        let mut text = String::new();
        io::stdin().read_to_string(&mut text).map_err(|e| {
            Failure::from(ConfigError::new("HOGQL", format!("cannot read stdin: {e}")))
        })?;
        text
    } else {
        args.hogql.clone()
    };
    if text.trim().is_empty() {
        return Err(ConfigError::new("HOGQL", "the query is empty").into());
    }
    let mut query = HogQlQuery::new(text).name("posthog-cli query");
    for (key, value) in &args.vars {
        query = query.value(key, loose_json(value));
    }
    if args.asynchronous {
        query = query.asynchronous();
    }
    run_and_print(client, &query, args.format).await
}

/// Runs a query and writes its rows to stdout in `format`.
pub async fn run_and_print(
    client: &Client,
    query: &HogQlQuery,
    format: RowFormat,
) -> Result<(), Failure> {
    let result = client.query(query).await.map_err(client_failure)?;
    let mut out = BufWriter::new(io::stdout().lock());
    crate::rows::write(&mut out, &result, format)
        .and_then(|()| out.flush())
        .map_err(stdout_failure)
}

/// A `KEY=VALUE` value: the JSON it spells when it parses as JSON (a number, boolean, null,
/// quoted string, array or object), else the text as it is.
pub fn loose_json(text: &str) -> Value {
    serde_json::from_str::<Value>(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// `template list`.
pub fn template_list() -> Result<(), Failure> {
    print_value(&templates_json())
}

/// `{"templates": [...]}` without the HogQL text, as `template list` prints it and MCP's
/// `list_templates` returns it.
pub fn templates_json() -> Value {
    let list: Vec<Value> = templates::all()
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "category": t.category,
                "description": t.description,
                "params": t.params,
            })
        })
        .collect();
    json!({ "templates": list })
}

/// `template show NAME`.
pub fn template_show(name: &str) -> Result<(), Failure> {
    let template = template_named(name)?;
    let value = serde_json::to_value(template)
        .map_err(|e| Failure::internal(&anyhow::anyhow!("cannot serialize the template: {e}")))?;
    print_value(&value)
}

/// The template called `name`, or a config error listing the names there are.
pub fn template_named(name: &str) -> Result<&'static templates::Template, Failure> {
    templates::find(name).ok_or_else(|| {
        let names: Vec<&str> = templates::all().iter().map(|t| t.name).collect();
        Failure::from(ConfigError::new(
            "NAME",
            format!("no template {name:?}; there are {}", names.join(", ")),
        ))
    })
}

/// `template run NAME --var k=v`: variables are checked before anything is sent.
pub async fn template_run(client: &Client, args: &TemplateRunArgs) -> Result<(), Failure> {
    let template = template_named(&args.name)?;
    let query = template
        .bind(args.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(client_failure)?;
    run_and_print(client, &query, args.format).await
}

/// `capture EVENT …` or `capture --batch < events.jsonl`.
pub async fn capture(client: &Client, args: &CaptureArgs) -> Result<(), Failure> {
    if args.batch {
        let events = read_batch(io::stdin().lock())?;
        if events.is_empty() {
            return Err(
                ConfigError::new("stdin", "no events: expected one JSON object per line").into(),
            );
        }
        let report = client
            .capture_batch(&events)
            .await
            .map_err(client_failure)?;
        return print_value(&json!({
            "status": "ok",
            "events": report.events,
            "requests": report.requests,
        }));
    }
    // clap requires EVENT and --distinct-id without --batch.
    let (Some(name), Some(distinct_id)) = (&args.event, &args.distinct_id) else {
        return Err(
            ConfigError::new("EVENT", "an event name and --distinct-id are required").into(),
        );
    };
    let mut record = Map::new();
    record.insert("event".into(), json!(name));
    record.insert("distinct_id".into(), json!(distinct_id));
    let properties: Map<String, Value> = args
        .properties
        .iter()
        .map(|(k, v)| (k.clone(), loose_json(v)))
        .collect();
    record.insert("properties".into(), Value::Object(properties));
    if let Some(at) = &args.timestamp {
        record.insert("timestamp".into(), json!(at));
    }
    if let Some(uuid) = &args.uuid {
        record.insert("uuid".into(), json!(uuid));
    }
    let event = event_from(Value::Object(record), "arguments")?;
    client.capture(&event).await.map_err(client_failure)?;
    print_value(&json!({
        "status": "ok",
        "events": 1,
        "requests": 1,
        "uuids": [event.uuid],
    }))
}

/// Reads and checks every line before anything is sent; an error names the line.
fn read_batch(input: impl io::BufRead) -> Result<Vec<CaptureEvent>, Failure> {
    let mut events = Vec::new();
    for (i, line) in input.take(MAX_BATCH_INPUT_BYTES).lines().enumerate() {
        let where_ = format!("stdin line {}", i + 1);
        let line = line.map_err(|e| Failure::from(ConfigError::new(&where_, e.to_string())))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line)
            .map_err(|e| Failure::from(ConfigError::new(&where_, format!("not JSON: {e}"))))?;
        events.push(event_from(value, &where_)?);
    }
    Ok(events)
}

/// One event from `{"event","distinct_id","properties"?,"timestamp"?,"uuid"?}`. Without a
/// uuid, an event with a timestamp gets a UUIDv5 of its canonical JSON (re-sending the same
/// input is deduplicated by PostHog); one without gets a random UUID (it happens "now").
fn event_from(value: Value, at: &str) -> Result<CaptureEvent, Failure> {
    let bad = |message: String| Failure::from(ConfigError::new(at, message));
    let Value::Object(mut object) = value else {
        return Err(bad("expected a JSON object".into()));
    };
    let text = |object: &mut Map<String, Value>, key: &str| -> Result<Option<String>, Failure> {
        match object.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(bad(format!("{key} must be a string, not {other}"))),
        }
    };
    let canonical = Value::Object(object.clone()).to_string();
    let name = text(&mut object, "event")?.filter(|s| !s.is_empty());
    let distinct_id = text(&mut object, "distinct_id")?.filter(|s| !s.is_empty());
    let (Some(name), Some(distinct_id)) = (name, distinct_id) else {
        return Err(bad("needs a non-empty \"event\" and \"distinct_id\"".into()));
    };
    let mut event = CaptureEvent::new(name, distinct_id);
    match object.remove("properties") {
        None | Some(Value::Null) => {}
        Some(Value::Object(p)) => event.properties = p,
        Some(other) => return Err(bad(format!("properties must be an object, not {other}"))),
    }
    if let Some(at) = text(&mut object, "timestamp")? {
        let parsed = OffsetDateTime::parse(&at, &Rfc3339)
            .map_err(|e| bad(format!("timestamp {at:?} is not RFC 3339: {e}")))?;
        event = event.timestamp(parsed);
    }
    match text(&mut object, "uuid")? {
        Some(id) => {
            let id = Uuid::parse_str(&id).map_err(|e| bad(format!("uuid {id:?}: {e}")))?;
            event = event.uuid(id);
        }
        None if event.timestamp.is_some() => {
            event = event.uuid(Uuid::new_v5(&CAPTURE_NAMESPACE, canonical.as_bytes()));
        }
        None => {}
    }
    if let Some(key) = object.keys().next() {
        return Err(bad(format!(
            "unknown field {key:?}; expected event, distinct_id, properties, timestamp, uuid"
        )));
    }
    Ok(event)
}

/// `flags evaluate KEY --distinct-id ID`.
pub async fn flags_evaluate(client: &Client, args: &FlagsEvaluateArgs) -> Result<(), Failure> {
    let mut request = FlagsRequest::new(&args.distinct_id);
    for (k, v) in &args.person_properties {
        request.person_properties.insert(k.clone(), loose_json(v));
    }
    for (k, v) in &args.groups {
        request.groups.insert(k.clone(), Value::String(v.clone()));
    }
    let response = client
        .evaluate_flags(&request)
        .await
        .map_err(client_failure)?;
    let Some(flag) = response.flags.get(&args.key) else {
        return Err(ConfigError::new(
            "KEY",
            format!(
                "PostHog returned no flag {:?} for this person: it does not exist or is not \
                 active{}",
                args.key,
                if response.errors_while_computing_flags {
                    " (PostHog reported errors while computing flags)"
                } else {
                    ""
                }
            ),
        )
        .into());
    };
    let payload = flag
        .metadata
        .as_ref()
        .and_then(|m| m.get("payload"))
        .cloned()
        .unwrap_or(Value::Null);
    print_value(&json!({
        "key": flag.key,
        "enabled": flag.enabled,
        "variant": flag.variant,
        "reason": flag.reason.as_ref().map(|r| json!({
            "code": r.code,
            "condition_index": r.condition_index,
            "description": r.description,
        })),
        "payload": payload,
        "errors_while_computing_flags": response.errors_while_computing_flags,
    }))
}

/// `flags list`.
pub async fn flags_list(client: &Client) -> Result<(), Failure> {
    let flags: Vec<Value> = client
        .feature_flags()
        .try_collect()
        .await
        .map_err(client_failure)?;
    print_value(&json!({ "flags": flags }))
}

/// `cohorts list`.
pub async fn cohorts_list(client: &Client) -> Result<(), Failure> {
    let cohorts: Vec<Value> = client
        .cohorts()
        .try_collect()
        .await
        .map_err(client_failure)?;
    print_value(&json!({ "cohorts": cohorts }))
}

/// `cohorts create NAME --filters JSON`.
pub async fn cohorts_create(client: &Client, args: &CohortsCreateArgs) -> Result<(), Failure> {
    let filters: Value = serde_json::from_str(&args.filters)
        .map_err(|e| Failure::from(ConfigError::new("--filters", format!("not JSON: {e}"))))?;
    if !filters.is_object() {
        return Err(ConfigError::new("--filters", "must be a JSON object").into());
    }
    let mut cohort = NewCohort::new(&args.name).filters(filters);
    if let Some(d) = &args.description {
        cohort = cohort.description(d);
    }
    let created = client
        .create_cohort(&cohort)
        .await
        .map_err(client_failure)?;
    print_value(&created)
}

/// `cohorts persons ID`.
pub async fn cohorts_persons(client: &Client, args: &CohortsPersonsArgs) -> Result<(), Failure> {
    let limit = usize::try_from(args.limit.unwrap_or(u64::MAX)).unwrap_or(usize::MAX);
    let persons: Vec<Value> = client
        .cohort_persons(args.id, None)
        .take(limit)
        .try_collect()
        .await
        .map_err(client_failure)?;
    print_value(&json!({ "cohort": args.id, "count": persons.len(), "persons": persons }))
}

/// A client error as the CLI reports it (category and exit code of PRODUCT §4).
pub fn client_failure(err: posthog_client::Error) -> Failure {
    Failure::from(posthog_osiris::DriverError::from(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_values_are_json_scalars_when_they_parse_and_text_otherwise() {
        assert_eq!(loose_json("42"), json!(42));
        assert_eq!(loose_json("true"), json!(true));
        assert_eq!(loose_json("\"42\""), json!("42"));
        assert_eq!(loose_json("$pageview"), json!("$pageview"));
        assert_eq!(loose_json("x' OR 1=1 --"), json!("x' OR 1=1 --"));
        assert_eq!(loose_json("{\"a\":1}"), json!({"a": 1}));
    }

    #[test]
    fn batch_lines_are_checked_whole_and_errors_name_the_line() {
        let input =
            "{\"event\":\"a\",\"distinct_id\":\"u\"}\n\n{\"event\":\"\",\"distinct_id\":\"u\"}\n";
        let err = read_batch(input.as_bytes()).unwrap_err();
        assert_eq!(err.exit_code, 2);
        assert!(err.message.starts_with("stdin line 3:"), "{}", err.message);
        let err = read_batch("{\"event\":\"a\",\"distinct_id\":\"u\",\"when\":1}".as_bytes())
            .unwrap_err();
        assert!(
            err.message.contains("unknown field \"when\""),
            "{}",
            err.message
        );
        let err = read_batch(
            "{\"event\":\"a\",\"distinct_id\":\"u\",\"timestamp\":\"yesterday\"}".as_bytes(),
        )
        .unwrap_err();
        assert!(err.message.contains("is not RFC 3339"), "{}", err.message);
    }

    #[test]
    fn events_with_a_timestamp_get_the_same_uuid_every_time_and_others_a_fresh_one() {
        let line = "{\"event\":\"a\",\"distinct_id\":\"u\",\"timestamp\":\"2025-01-01T00:00:00Z\",\"properties\":{\"k\":1}}";
        let first = read_batch(line.as_bytes()).unwrap();
        let again = read_batch(line.as_bytes()).unwrap();
        assert_eq!(first[0].uuid, again[0].uuid);
        assert_eq!(first[0].uuid.get_version_num(), 5);
        let other = read_batch(line.replace("\"k\":1", "\"k\":2").as_bytes()).unwrap();
        assert_ne!(first[0].uuid, other[0].uuid);
        let untimed = "{\"event\":\"a\",\"distinct_id\":\"u\"}";
        let a = read_batch(untimed.as_bytes()).unwrap();
        let b = read_batch(untimed.as_bytes()).unwrap();
        assert_ne!(a[0].uuid, b[0].uuid);
        let given = "{\"event\":\"a\",\"distinct_id\":\"u\",\"uuid\":\"0190b6a0-0000-7000-8000-000000000001\"}";
        assert_eq!(
            read_batch(given.as_bytes()).unwrap()[0].uuid.to_string(),
            "0190b6a0-0000-7000-8000-000000000001"
        );
    }
}
