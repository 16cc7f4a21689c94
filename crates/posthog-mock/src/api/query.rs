//! `POST …/query/` (blocking and async), `GET …/query/{id}/` and `DELETE …/query/{id}/`.

use std::sync::{Arc, PoisonError};

use serde_json::{Map, Value, json};
use time::{Duration, OffsetDateTime, UtcOffset};

use super::{ApiResponse, RequestCtx};
use crate::hogql::{self, QueryResult, QuerySettings, Tables};
use crate::server::{AsyncQuery, Shared, lock};
use crate::timefmt::{isoformat, micros_of};

/// A request body that passed validation.
struct QueryRequest {
    sql: String,
    values: Map<String, Value>,
    convert_tz: bool,
    asynchronous: bool,
    client_query_id: Option<String>,
    modifiers: Value,
}

fn field_error(attr: &str, detail: &str) -> ApiResponse {
    ApiResponse::error_attr(400, "validation_error", "invalid_input", detail, Some(attr))
}

fn parse_request(ctx: &RequestCtx, path_kind: Option<&str>) -> Result<QueryRequest, ApiResponse> {
    let Some(body) = ctx.body.as_ref() else {
        let detail = if ctx.raw_body.is_empty() {
            "Request body is empty.".to_owned()
        } else {
            "JSON parse error - request body is not valid JSON.".to_owned()
        };
        return Err(ApiResponse::error(
            400,
            "validation_error",
            "parse_error",
            detail,
        ));
    };
    let Some(body) = body.as_object() else {
        return Err(ApiResponse::invalid_input(
            "Request body must be a JSON object.",
        ));
    };
    let Some(query) = body.get("query") else {
        return Err(ApiResponse::error_attr(
            400,
            "validation_error",
            "required",
            "This field is required.",
            Some("query"),
        ));
    };
    let Some(query) = query.as_object() else {
        return Err(field_error(
            "query",
            "`query` must be an object with a `kind`.",
        ));
    };
    let kind = query.get("kind").and_then(Value::as_str).unwrap_or("");
    if let Some(path_kind) = path_kind
        && path_kind != kind
    {
        return Err(ApiResponse::invalid_input(format!(
            "Query kind in the path ('{path_kind}') does not match the body ('{kind}')."
        )));
    }
    if kind != "HogQLQuery" {
        return Err(field_error(
            "query",
            &format!("Unsupported query kind '{kind}': the mock evaluates HogQLQuery only."),
        ));
    }
    let Some(sql) = query.get("query").and_then(Value::as_str) else {
        return Err(field_error(
            "query",
            "`query.query` must be a HogQL string.",
        ));
    };
    let values = match query.get("values") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(field_error("values", "`values` must be an object.")),
    };
    let modifiers = query.get("modifiers").cloned().unwrap_or(Value::Null);
    let convert_tz = match modifiers.get("convertToProjectTimezone") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(field_error(
                "modifiers",
                "`convertToProjectTimezone` must be a boolean.",
            ));
        }
    };
    if let Some(name) = body.get("name").and_then(Value::as_str)
        && name.chars().count() > 128
    {
        return Err(field_error(
            "name",
            "Ensure this field has no more than 128 characters.",
        ));
    }
    let refresh = body
        .get("refresh")
        .and_then(Value::as_str)
        .unwrap_or("blocking");
    let asynchronous = matches!(refresh, "async" | "force_async" | "lazy_async")
        || body.get("async").and_then(Value::as_bool) == Some(true);
    let client_query_id = body
        .get("client_query_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(QueryRequest {
        sql: sql.to_owned(),
        values,
        convert_tz,
        asynchronous,
        client_query_id,
        modifiers,
    })
}

/// Evaluates the query over the current data with the given LIMIT clamp. Runs on a blocking
/// thread: a scan of a large dataset must not stall the connection tasks.
async fn evaluate(
    shared: &Arc<Shared>,
    req: &QueryRequest,
    limit_clamp: usize,
) -> Result<Value, String> {
    let shared = shared.clone();
    let sql = req.sql.clone();
    let values = req.values.clone();
    let convert_tz = req.convert_tz;
    let modifiers = req.modifiers.clone();
    let task = tokio::task::spawn_blocking(move || {
        let now = OffsetDateTime::now_utc();
        let tz = &shared.config.timezone;
        let settings = QuerySettings {
            values: &values,
            project_tz: tz.offset,
            project_tz_name: &tz.name,
            convert_to_project_tz: convert_tz,
            now: micros_of(now),
            limit_clamp,
        };
        let events = shared.events.read().unwrap_or_else(PoisonError::into_inner);
        let tables = Tables {
            events: &events,
            persons: &shared.persons,
        };
        hogql::run(&sql, &settings, &tables)
            .map(|r| response_body(&shared, &sql, r, convert_tz, modifiers, now))
            .map_err(|e| e.message)
    });
    match task.await {
        Ok(outcome) => outcome,
        Err(e) => Err(format!("query evaluation failed: {e}")),
    }
}

fn response_body(
    shared: &Shared,
    sql: &str,
    r: QueryResult,
    convert_tz: bool,
    modifiers: Value,
    now: OffsetDateTime,
) -> Value {
    let now_us = micros_of(now);
    let types: Vec<Value> = r.types.into_iter().map(|(n, t)| json!([n, t])).collect();
    let mut modifiers = match modifiers {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    modifiers.insert("convertToProjectTimezone".into(), json!(convert_tz));
    json!({
        "cache_key": format!("cache_mock_{:016x}", crate::data::stable_hash(sql.as_bytes())),
        "cache_target_age": null,
        "calculation_trigger": null,
        "clickhouse": null,
        "columns": r.columns,
        "error": null,
        "explain": null,
        "hasMore": r.has_more,
        "hogql": r.hogql,
        "is_cached": false,
        "last_refresh": isoformat(now_us, UtcOffset::UTC),
        "limit": r.limit,
        "metadata": null,
        "modifiers": modifiers,
        "next_allowed_client_refresh": isoformat(micros_of(now + Duration::minutes(1)), UtcOffset::UTC),
        "offset": r.offset,
        "query": sql,
        "query_status": null,
        "results": r.results,
        "timezone": shared.config.timezone.name,
        "timings": [],
        "types": types,
    })
}

/// `POST …/query/`.
pub(super) async fn create(
    shared: &Arc<Shared>,
    ctx: &RequestCtx,
    path_kind: Option<&str>,
) -> ApiResponse {
    let req = match parse_request(ctx, path_kind) {
        Ok(r) => r,
        Err(e) => return e,
    };
    // The slot (when the pool is on) is held from here until the response is produced.
    let slot = match &shared.query_pool {
        None => None,
        Some(pool) => match pool.acquire().await {
            Some(slot) => Some(slot),
            None => {
                return ApiResponse::concurrency_limited(pool.concurrency(), pool.queue_timeout());
            }
        },
    };
    let start = OffsetDateTime::now_utc();
    let limit_clamp = ctx.limit_clamp.unwrap_or_else(|| shared.limit_clamp());
    let outcome = evaluate(shared, &req, limit_clamp).await;
    if let Some(slot) = &slot {
        slot.hold(returned_rows(&outcome)).await;
    }
    let response = respond(shared, &req, outcome, start);
    drop(slot);
    response
}

/// Rows a query's answer carries (0 for an error): what the per-row hold is paid on.
fn returned_rows(outcome: &Result<Value, String>) -> usize {
    outcome
        .as_ref()
        .ok()
        .and_then(|body| body.get("results"))
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

/// The answer to an evaluated query: 200 or 400, or for an async query 202 (its outcome kept
/// for the status polls).
fn respond(
    shared: &Shared,
    req: &QueryRequest,
    outcome: Result<Value, String>,
    start: OffsetDateTime,
) -> ApiResponse {
    if !req.asynchronous {
        return match outcome {
            Ok(body) => ApiResponse::json(200, &body),
            Err(msg) => ApiResponse::invalid_input(msg),
        };
    }
    let id = req
        .client_query_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let query = AsyncQuery {
        polls_left: shared.config.async_polls,
        outcome,
        start_time: start,
        end_time: OffsetDateTime::now_utc(),
    };
    let status = status_json(shared, &id, &query, false);
    lock(&shared.queries).insert(id, query);
    ApiResponse::json(202, &json!({"query_status": status}))
}

fn status_json(shared: &Shared, id: &str, q: &AsyncQuery, complete: bool) -> Value {
    let iso = |t: OffsetDateTime| isoformat(micros_of(t), UtcOffset::UTC);
    let (results, error, message) = match (&q.outcome, complete) {
        (_, false) => (Value::Null, false, Value::Null),
        (Ok(body), true) => (body.clone(), false, Value::Null),
        (Err(msg), true) => (Value::Null, true, json!(msg)),
    };
    json!({
        "id": id,
        "team_id": shared.config.project_id,
        "complete": complete,
        "error": error,
        "error_message": message,
        "results": results,
        "query_async": true,
        "start_time": iso(q.start_time),
        "pickup_time": iso(q.start_time),
        "end_time": if complete { json!(iso(q.end_time)) } else { Value::Null },
        "expiration_time": iso(q.start_time + Duration::minutes(10)),
        "query_progress": null,
        "task_id": null,
        "dashboard_id": null,
        "insight_id": null,
        "labels": null,
    })
}

/// `GET …/query/{id}/`: 202 for the first `async_polls` polls, then 200 with the results or
/// 400 with the error.
pub(super) fn status(shared: &Shared, id: &str) -> ApiResponse {
    let mut queries = lock(&shared.queries);
    let Some(q) = queries.get_mut(id) else {
        return ApiResponse::not_found();
    };
    if q.polls_left > 0 {
        q.polls_left -= 1;
        return ApiResponse::json(
            202,
            &json!({"query_status": status_json(shared, id, q, false)}),
        );
    }
    let code = if q.outcome.is_ok() { 200 } else { 400 };
    ApiResponse::json(
        code,
        &json!({"query_status": status_json(shared, id, q, true)}),
    )
}

/// `GET …/query/{id}/log/`: the mock keeps no query log.
pub(super) fn log(shared: &Shared, id: &str) -> ApiResponse {
    if lock(&shared.queries).contains_key(id) {
        ApiResponse::json(200, &json!([]))
    } else {
        ApiResponse::not_found()
    }
}

/// `DELETE …/query/{id}/`: cancels (forgets) the query.
pub(super) fn cancel(shared: &Shared, id: &str) -> ApiResponse {
    match lock(&shared.queries).remove(id) {
        Some(_) => ApiResponse::empty(204),
        None => ApiResponse::not_found(),
    }
}
