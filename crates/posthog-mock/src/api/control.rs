//! The `/_mock/…` control API, for black-box tests driving the binary: stats, request log,
//! captured events, event insertion, fault scripting, the LIMIT clamp and reset. Never faulted
//! or throttled.

use serde_json::{Map, Value, json};

use super::{ApiResponse, RequestCtx};
use crate::data::Event;
use crate::fault::{Fault, RouteClass};
use crate::server::{Shared, lock};

pub(super) fn handle(shared: &Shared, ctx: &RequestCtx, sub: &str) -> ApiResponse {
    match (ctx.method.as_str(), sub) {
        ("GET", "stats") => stats(shared),
        ("GET", "requests") => requests(shared),
        ("GET", "captured") => {
            ApiResponse::json(200, &Value::Array(lock(&shared.captured).clone()))
        }
        ("POST", "events") => insert_events(shared, ctx),
        ("POST", "faults") => push_faults(shared, ctx),
        ("POST", "config") => set_config(shared, ctx),
        ("DELETE", "faults") => {
            lock(&shared.faults).clear();
            ApiResponse::json(200, &json!({"cleared": true}))
        }
        ("POST", "reset") => {
            shared.reset_all();
            ApiResponse::json(200, &json!({"reset": true}))
        }
        ("POST", "reset_counters") => {
            shared.reset_counters();
            ApiResponse::json(200, &json!({"reset": true}))
        }
        (
            _,
            "stats" | "requests" | "captured" | "events" | "faults" | "config" | "reset"
            | "reset_counters",
        ) => ApiResponse::method_not_allowed(&ctx.method),
        _ => ApiResponse::not_found(),
    }
}

fn stats(shared: &Shared) -> ApiResponse {
    let counts = *lock(&shared.counts);
    let by_route: Map<String, Value> = RouteClass::ALL
        .iter()
        .map(|c| (c.as_str().to_owned(), json!(counts[c.index()])))
        .collect();
    let pending: usize = lock(&shared.faults).values().map(|q| q.len()).sum();
    let events = shared
        .events
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .len();
    let (limit_clamp, clamp_changes, query_requests) = {
        let clamp = lock(&shared.clamp);
        let pending: Vec<Value> = clamp
            .pending
            .iter()
            .map(|c| json!({"after_queries": c.after_queries, "limit_clamp": c.limit_clamp}))
            .collect();
        (clamp.current, pending, clamp.queries)
    };
    ApiResponse::json(
        200,
        &json!({
            "total_requests": shared.total(),
            "by_route": by_route,
            "captured_events": lock(&shared.captured).len(),
            "captured_unique_uuids": shared.captured_unique_uuids(),
            "events": events,
            "faults_pending": pending,
            "limit_clamp": limit_clamp,
            "limit_clamp_changes_pending": clamp_changes,
            "query_requests_seen": query_requests,
            "concurrency_throttled": shared.concurrency_throttled(),
            "peak_queries_held": shared.peak_queries_held(),
        }),
    )
}

fn requests(shared: &Shared) -> ApiResponse {
    let log: Vec<Value> = lock(&shared.log)
        .entries
        .iter()
        .map(|r| {
            json!({
                "method": r.method,
                "path": r.path,
                "query": r.query,
                "headers": r.headers.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
                "body": r.body,
                "route": r.route.as_str(),
                "status": r.status,
            })
        })
        .collect();
    ApiResponse::json(200, &Value::Array(log))
}

/// Accepts a JSON array of export-shape events, `{"events": [...]}`, or JSONL.
fn insert_events(shared: &Shared, ctx: &RequestCtx) -> ApiResponse {
    let parsed = match &ctx.body {
        Some(Value::Array(items)) => items.iter().map(Event::from_export_json).collect(),
        Some(Value::Object(o)) if o.contains_key("events") => match o.get("events") {
            Some(Value::Array(items)) => items.iter().map(Event::from_export_json).collect(),
            _ => return ApiResponse::invalid_input("`events` must be an array"),
        },
        Some(single @ Value::Object(_)) => Event::from_export_json(single).map(|e| vec![e]),
        _ => Event::parse_jsonl(&String::from_utf8_lossy(&ctx.raw_body)),
    };
    match parsed {
        Ok(events) => {
            let n = events.len();
            shared.insert_events(events);
            ApiResponse::json(200, &json!({"inserted": n}))
        }
        Err(e) => ApiResponse::invalid_input(e.to_string()),
    }
}

/// `POST /_mock/config`: `{"limit_clamp": N}` (N ≥ 1) sets the LIMIT clamp at once; answers
/// `{"limit_clamp": N}`. Other keys are a 400, so a typo is not silently ignored.
fn set_config(shared: &Shared, ctx: &RequestCtx) -> ApiResponse {
    let Some(Value::Object(body)) = &ctx.body else {
        return ApiResponse::invalid_input(
            "expected a JSON object such as {\"limit_clamp\": 1000}",
        );
    };
    if let Some(unknown) = body.keys().find(|k| k.as_str() != "limit_clamp") {
        return ApiResponse::invalid_input(format!(
            "unknown setting `{unknown}`: /_mock/config accepts `limit_clamp`"
        ));
    }
    let clamp = match body.get("limit_clamp") {
        None => return ApiResponse::invalid_input("`limit_clamp` is required"),
        Some(v) => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
            Some(n) if n >= 1 => n,
            _ => {
                return ApiResponse::invalid_input(format!(
                    "`limit_clamp` must be a positive integer, got {v}"
                ));
            }
        },
    };
    shared.set_limit_clamp(clamp);
    ApiResponse::json(200, &json!({"limit_clamp": clamp}))
}

/// Accepts `{"route": "query", "fault": {...}, "times": 2}` or an array of them.
fn push_faults(shared: &Shared, ctx: &RequestCtx) -> ApiResponse {
    let items = match &ctx.body {
        Some(Value::Array(items)) => items.clone(),
        Some(v @ Value::Object(_)) => vec![v.clone()],
        _ => {
            return ApiResponse::invalid_input(
                "expected {\"route\", \"fault\", \"times\"?} or an array of them",
            );
        }
    };
    let mut parsed = Vec::new();
    for item in &items {
        let route = match item
            .get("route")
            .and_then(Value::as_str)
            .map(str::parse::<RouteClass>)
        {
            Some(Ok(r)) => r,
            Some(Err(e)) => return ApiResponse::invalid_input(e.to_string()),
            None => return ApiResponse::invalid_input("`route` is required"),
        };
        let fault = match item.get("fault").map(Fault::from_json) {
            Some(Ok(f)) => f,
            Some(Err(e)) => return ApiResponse::invalid_input(e.to_string()),
            None => return ApiResponse::invalid_input("`fault` is required"),
        };
        let times = item.get("times").and_then(Value::as_u64).unwrap_or(1);
        parsed.push((
            route,
            fault,
            usize::try_from(times).unwrap_or(usize::MAX).min(1_000_000),
        ));
    }
    let mut queued = 0;
    for (route, fault, times) in parsed {
        shared.push_faults(route, fault, times);
        queued += times;
    }
    ApiResponse::json(200, &json!({"queued": queued}))
}
