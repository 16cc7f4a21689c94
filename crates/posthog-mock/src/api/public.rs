//! Public endpoints keyed by the project API key: capture (`/i/v0/e/`), `/batch/` and
//! `/flags` (flag evaluation from the fixtures, deterministic per distinct id).

use serde_json::{Map, Value, json};

use super::{ApiResponse, RequestCtx, param};
use crate::data::stable_hash;
use crate::server::{Shared, lock};
use crate::timefmt::parse_datetime;

fn body_object(ctx: &RequestCtx) -> Result<&Map<String, Value>, ApiResponse> {
    match ctx.body.as_ref() {
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(invalid_payload("Request body must be a JSON object.")),
        None if ctx.raw_body.is_empty() => Err(invalid_payload("Request body is empty.")),
        None => Err(invalid_payload("Request body is not valid JSON.")),
    }
}

fn invalid_payload(detail: &str) -> ApiResponse {
    ApiResponse::error(400, "validation_error", "invalid_payload", detail)
}

fn invalid_key() -> ApiResponse {
    ApiResponse::error(
        401,
        "authentication_error",
        "invalid_api_key",
        "Project API key invalid. You can find your project API key in your PostHog project settings.",
    )
}

/// The project token of a body: `api_key`, `token`, or `properties.token`.
fn token(obj: &Map<String, Value>) -> Option<&str> {
    obj.get("api_key")
        .or_else(|| obj.get("token"))
        .or_else(|| obj.get("properties").and_then(|p| p.get("token")))
        .and_then(Value::as_str)
}

fn check_token(shared: &Shared, obj: &Map<String, Value>) -> Result<(), ApiResponse> {
    match token(obj) {
        Some(t) if t == shared.config.project_api_key => Ok(()),
        Some(_) => Err(invalid_key()),
        None => Err(ApiResponse::error(
            401,
            "authentication_error",
            "missing_api_key",
            "API key not provided. You can find your project API key in your PostHog project settings.",
        )),
    }
}

/// Validates one captured event: a non-empty name and a distinct id (top level or in
/// properties); `uuid` and `timestamp`, when present, must parse.
fn validate_event(event: &Value) -> Result<(), ApiResponse> {
    let Some(obj) = event.as_object() else {
        return Err(invalid_payload("Each event must be a JSON object."));
    };
    let name = obj.get("event").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        return Err(invalid_payload("Event name is missing or empty."));
    }
    let distinct = obj
        .get("distinct_id")
        .or_else(|| obj.get("properties").and_then(|p| p.get("distinct_id")))
        .or_else(|| obj.get("$distinct_id"));
    match distinct {
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(Value::Number(_)) => {}
        _ => return Err(invalid_payload("Event has no distinct_id.")),
    }
    if let Some(u) = obj.get("uuid").filter(|u| !u.is_null())
        && u.as_str().is_none_or(|s| uuid::Uuid::parse_str(s).is_err())
    {
        return Err(invalid_payload("Event uuid is not a valid UUID."));
    }
    if let Some(t) = obj.get("timestamp").filter(|t| !t.is_null())
        && t.as_str()
            .is_none_or(|s| parse_datetime(s, time::UtcOffset::UTC).is_none())
    {
        return Err(invalid_payload("Event timestamp is not ISO 8601."));
    }
    Ok(())
}

/// `POST /i/v0/e/`.
pub(super) fn capture(shared: &Shared, ctx: &RequestCtx) -> ApiResponse {
    let obj = match body_object(ctx) {
        Ok(o) => o,
        Err(e) => return e,
    };
    if let Err(e) = check_token(shared, obj) {
        return e;
    }
    let event = Value::Object(obj.clone());
    if let Err(e) = validate_event(&event) {
        return e;
    }
    lock(&shared.captured).push(event);
    ApiResponse::json(200, &json!({"status": "Ok"}))
}

/// `POST /batch/`: every event must be valid, else nothing is recorded.
pub(super) fn batch(shared: &Shared, ctx: &RequestCtx) -> ApiResponse {
    let obj = match body_object(ctx) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let Some(events) = obj.get("batch").and_then(Value::as_array) else {
        return invalid_payload("`batch` must be an array of events.");
    };
    let auth = if token(obj).is_some() {
        check_token(shared, obj)
    } else {
        // Older SDKs put the token in each event's properties.
        match events.first().and_then(Value::as_object) {
            Some(first) => check_token(shared, first),
            None => check_token(shared, obj),
        }
    };
    if let Err(e) = auth {
        return e;
    }
    for event in events {
        if let Err(e) = validate_event(event) {
            return e;
        }
    }
    lock(&shared.captured).extend(events.iter().cloned());
    ApiResponse::json(200, &json!({"status": "Ok"}))
}

/// A fraction in `[0, 1)` from a stable hash (the mock's stand-in for PostHog's SHA-1
/// bucketing; stable across runs and platforms, but not PostHog's exact buckets).
fn bucket(key: &str, id: &str, salt: &str) -> f64 {
    let h = fmix64(stable_hash(format!("{key}.{id}{salt}").as_bytes()));
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// MurmurHash3's finaliser: FNV's high bits barely depend on the last bytes, so mix them.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One property filter of a flag condition against person properties.
fn property_matches(filter: &Value, props: &Map<String, Value>) -> bool {
    let Some(key) = filter.get("key").and_then(Value::as_str) else {
        return false;
    };
    let op = filter
        .get("operator")
        .and_then(Value::as_str)
        .unwrap_or("exact");
    let expected = filter.get("value").cloned().unwrap_or(Value::Null);
    let actual = props.get(key).filter(|v| !v.is_null());
    let equals = |a: &Value| match &expected {
        Value::Array(options) => options
            .iter()
            .any(|o| as_text(o).eq_ignore_ascii_case(&as_text(a))),
        other => as_text(other).eq_ignore_ascii_case(&as_text(a)),
    };
    let number = |v: &Value| as_text(v).parse::<f64>().ok();
    match op {
        "is_set" => actual.is_some(),
        "is_not_set" => actual.is_none(),
        "exact" => actual.is_some_and(equals),
        "is_not" => actual.is_none_or(|a| !equals(a)),
        "icontains" => actual.is_some_and(|a| {
            as_text(a)
                .to_lowercase()
                .contains(&as_text(&expected).to_lowercase())
        }),
        "not_icontains" => actual.is_none_or(|a| {
            !as_text(a)
                .to_lowercase()
                .contains(&as_text(&expected).to_lowercase())
        }),
        "gt" | "gte" | "lt" | "lte" => match (actual.and_then(number), number(&expected)) {
            (Some(a), Some(e)) => match op {
                "gt" => a > e,
                "gte" => a >= e,
                "lt" => a < e,
                _ => a <= e,
            },
            _ => false,
        },
        _ => false,
    }
}

fn reason(code: &str, index: Option<usize>, description: &str) -> Value {
    json!({"code": code, "condition_index": index, "description": description})
}

/// Evaluates one active flag for `id`: `(enabled, variant, reason)`.
fn evaluate_flag(
    flag: &Value,
    id: Option<&str>,
    props: &Map<String, Value>,
) -> (bool, Option<String>, Value) {
    let key = flag.get("key").and_then(Value::as_str).unwrap_or("");
    let filters = flag.get("filters").cloned().unwrap_or(Value::Null);
    let Some(id) = id else {
        return (
            false,
            None,
            reason(
                "no_group_type",
                None,
                "No group type provided for a group flag",
            ),
        );
    };
    let conditions = filters
        .get("groups")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let variants = filters
        .get("multivariate")
        .and_then(|m| m.get("variants"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut out_of_rollout = None;
    for (i, cond) in conditions.iter().enumerate() {
        let filters = cond
            .get("properties")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !filters.iter().all(|f| property_matches(f, props)) {
            continue;
        }
        let rollout = cond
            .get("rollout_percentage")
            .and_then(Value::as_f64)
            .unwrap_or(100.0);
        if bucket(key, id, "") >= rollout / 100.0 {
            out_of_rollout.get_or_insert(i);
            continue;
        }
        let variant = if variants.is_empty() {
            None
        } else if let Some(v) = cond.get("variant").and_then(Value::as_str) {
            Some(v.to_owned())
        } else {
            let h = bucket(key, id, "variant");
            let mut cumulative = 0.0;
            variants
                .iter()
                .find(|v| {
                    cumulative += v
                        .get("rollout_percentage")
                        .and_then(Value::as_f64)
                        .unwrap_or(0.0)
                        / 100.0;
                    h < cumulative
                })
                .or(variants.last())
                .and_then(|v| v.get("key").and_then(Value::as_str))
                .map(str::to_owned)
        };
        let why = reason(
            "condition_match",
            Some(i),
            &format!("Matched condition set {}", i + 1),
        );
        return (true, variant, why);
    }
    match out_of_rollout {
        Some(i) => (
            false,
            None,
            reason("out_of_rollout_bound", Some(i), "Out of rollout bound"),
        ),
        None => (
            false,
            None,
            reason("no_condition_match", None, "No matching condition set"),
        ),
    }
}

/// `POST /flags?v=2`: `{flags: {key: {key, enabled, variant, reason, metadata}}, …}`; without
/// `v=2` the legacy `featureFlags` / `featureFlagPayloads` maps.
pub(super) fn flags(shared: &Shared, ctx: &RequestCtx) -> ApiResponse {
    let obj = match body_object(ctx) {
        Ok(o) => o,
        Err(e) => return e,
    };
    if let Err(e) = check_token(shared, obj) {
        return e;
    }
    let Some(distinct_id) = obj
        .get("distinct_id")
        .map(as_text)
        .filter(|d| !d.is_empty())
    else {
        return invalid_payload("distinct_id is required.");
    };
    let mut props: Map<String, Value> = shared
        .persons
        .by_distinct_id(&distinct_id)
        .map(|p| p.properties.clone())
        .unwrap_or_default();
    if let Some(Value::Object(extra)) = obj.get("person_properties") {
        props.extend(extra.clone());
    }
    let groups = obj.get("groups").and_then(Value::as_object);
    let mut flags = Map::new();
    let mut legacy = Map::new();
    let mut payloads = Map::new();
    for flag in &shared.config.dataset.feature_flags {
        let active = flag.get("active").and_then(Value::as_bool).unwrap_or(false);
        let deleted = flag
            .get("deleted")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let Some(key) = flag.get("key").and_then(Value::as_str) else {
            continue;
        };
        if !active || deleted {
            continue;
        }
        let group_flag = flag
            .get("filters")
            .and_then(|f| f.get("aggregation_group_type_index"))
            .is_some_and(|g| !g.is_null());
        let id = if group_flag {
            groups.and_then(|g| g.values().next()).map(as_text)
        } else {
            Some(distinct_id.clone())
        };
        let (enabled, variant, why) = evaluate_flag(flag, id.as_deref(), &props);
        let payload_key = variant.clone().unwrap_or_else(|| "true".to_owned());
        let payload = if enabled {
            flag.get("filters")
                .and_then(|f| f.get("payloads"))
                .and_then(|p| p.get(&payload_key))
                .cloned()
                .unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        legacy.insert(
            key.to_owned(),
            variant.clone().map_or(json!(enabled), Value::String),
        );
        if !payload.is_null() {
            payloads.insert(key.to_owned(), payload.clone());
        }
        flags.insert(
            key.to_owned(),
            json!({
                "key": key,
                "enabled": enabled,
                "variant": variant,
                "reason": why,
                "metadata": {
                    "id": flag.get("id").cloned().unwrap_or(Value::Null),
                    "version": flag.get("version").cloned().unwrap_or(json!(1)),
                    "payload": payload,
                    "description": flag.get("name").cloned().unwrap_or(Value::Null),
                },
            }),
        );
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let body = if param(&ctx.params, "v")
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(1)
        >= 2
    {
        json!({"flags": flags, "errorsWhileComputingFlags": false, "requestId": request_id})
    } else {
        json!({
            "featureFlags": legacy,
            "featureFlagPayloads": payloads,
            "errorsWhileComputingFlags": false,
            "requestId": request_id,
        })
    };
    ApiResponse::json(200, &body)
}
