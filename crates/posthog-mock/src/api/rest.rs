//! REST list endpoints with DRF `LimitOffsetPagination`, item details, the project and the
//! current user.

use serde_json::{Value, json};
use time::UtcOffset;

use super::{ApiResponse, RequestCtx, param};
use crate::data::Person;
use crate::fault::RouteClass;
use crate::server::Shared;
use crate::timefmt::{isoformat, micros_of};

/// DRF's default page size in PostHog (`PAGE_SIZE`).
const DEFAULT_LIMIT: usize = 100;
/// The largest `limit` honoured.
const MAX_LIMIT: usize = 1000;

const ORGANIZATION_ID: &str = "0190a000-0000-7000-8000-00000000a001";
const PROJECT_UUID: &str = "0190a000-0000-7000-8000-00000000b001";
const USER_UUID: &str = "0190a000-0000-7000-8000-000000000001";

fn items(shared: &Shared, class: RouteClass) -> Vec<Value> {
    let d = &shared.config.dataset;
    match class {
        RouteClass::Cohorts => super::cohorts::listed(shared),
        RouteClass::FeatureFlags => d.feature_flags.clone(),
        RouteClass::Insights => d.insights.clone(),
        RouteClass::Annotations => d.annotations.clone(),
        RouteClass::Experiments => d.experiments.clone(),
        RouteClass::PropertyDefinitions => d.property_definitions.clone(),
        RouteClass::EventDefinitions => d.event_definitions.clone(),
        RouteClass::Persons => shared
            .persons
            .rows
            .iter()
            .map(|r| person_json(&r.person))
            .collect(),
        _ => Vec::new(),
    }
}

/// A person as `persons/` (and `cohorts/{id}/persons/`) render it.
pub(super) fn person_json(p: &Person) -> Value {
    let name = p
        .properties
        .get("email")
        .or_else(|| p.properties.get("name"))
        .and_then(Value::as_str)
        .map_or_else(
            || p.distinct_ids.first().cloned().unwrap_or_default(),
            str::to_owned,
        );
    json!({
        "id": p.id.to_string(),
        "uuid": p.id.to_string(),
        "name": name,
        "distinct_ids": p.distinct_ids,
        "properties": p.properties,
        "created_at": isoformat(micros_of(p.created_at), UtcOffset::UTC),
        "is_identified": p.is_identified,
    })
}

fn contains_ci(haystack: Option<&Value>, needle: &str) -> bool {
    haystack
        .and_then(Value::as_str)
        .is_some_and(|h| h.to_lowercase().contains(&needle.to_lowercase()))
}

/// Applies the filters each list endpoint supports.
fn filter(class: RouteClass, items: Vec<Value>, params: &[(String, String)]) -> Vec<Value> {
    let search = param(params, "search").filter(|s| !s.is_empty());
    items
        .into_iter()
        .filter(|item| match class {
            RouteClass::PropertyDefinitions => {
                let wanted = match param(params, "type").unwrap_or("event") {
                    "person" => 2,
                    "group" => 3,
                    _ => 1,
                };
                item.get("type").and_then(Value::as_i64) == Some(wanted)
                    && search.is_none_or(|s| contains_ci(item.get("name"), s))
                    && param(params, "is_numerical").is_none_or(|n| {
                        item.get("is_numerical").and_then(Value::as_bool) == Some(n == "true")
                    })
            }
            RouteClass::EventDefinitions => search.is_none_or(|s| contains_ci(item.get("name"), s)),
            RouteClass::FeatureFlags => {
                search.is_none_or(|s| {
                    contains_ci(item.get("key"), s) || contains_ci(item.get("name"), s)
                }) && param(params, "active").is_none_or(|a| {
                    item.get("active").and_then(Value::as_bool) == Some(a == "true")
                }) && item.get("deleted").and_then(Value::as_bool) != Some(true)
            }
            RouteClass::Persons => {
                param(params, "distinct_id").is_none_or(|d| {
                    item["distinct_ids"]
                        .as_array()
                        .is_some_and(|ids| ids.iter().any(|i| i == d))
                }) && search.is_none_or(|s| {
                    contains_ci(item.get("name"), s)
                        || item["distinct_ids"]
                            .as_array()
                            .is_some_and(|ids| ids.iter().any(|i| contains_ci(Some(i), s)))
                })
            }
            _ => search.is_none_or(|s| contains_ci(item.get("name"), s)),
        })
        .collect()
}

fn parse_positive(params: &[(String, String)], name: &str) -> Option<usize> {
    param(params, name).and_then(|v| v.parse::<usize>().ok())
}

/// `GET …/{resource}/?limit=&offset=`: `{count, next, previous, results}` with absolute URLs.
pub(super) fn list(shared: &Shared, ctx: &RequestCtx) -> ApiResponse {
    let class = ctx.routed.class;
    let all = filter(class, items(shared, class), &ctx.params);
    // Persons report `count` only when asked (`?include_total`), as PostHog does.
    paginate(all, ctx, class != RouteClass::Persons)
}

/// One DRF `LimitOffsetPagination` page of `all`: `{next, previous, results}` with absolute
/// URLs, plus `count` when `with_count` or `?include_total`.
pub(super) fn paginate(all: Vec<Value>, ctx: &RequestCtx, with_count: bool) -> ApiResponse {
    // DRF ignores invalid values and uses the defaults.
    let limit = parse_positive(&ctx.params, "limit")
        .filter(|l| *l > 0)
        .unwrap_or(DEFAULT_LIMIT)
        .min(MAX_LIMIT);
    let offset = parse_positive(&ctx.params, "offset").unwrap_or(0);
    let count = all.len();
    let results: Vec<Value> = all.into_iter().skip(offset).take(limit).collect();
    let with = |offset: Option<usize>| {
        let mut params: Vec<(String, String)> = ctx
            .params
            .iter()
            .filter(|(k, _)| k != "limit" && k != "offset")
            .cloned()
            .collect();
        params.push(("limit".into(), limit.to_string()));
        if let Some(o) = offset {
            params.push(("offset".into(), o.to_string()));
        }
        Value::String(super::response::absolute_url(&ctx.host, &ctx.path, &params))
    };
    let next = if offset + limit < count {
        with(Some(offset + limit))
    } else {
        Value::Null
    };
    let previous = match offset {
        0 => Value::Null,
        o if o <= limit => with(None),
        o => with(Some(o - limit)),
    };
    let mut body = json!({"next": next, "previous": previous, "results": results});
    if with_count || param(&ctx.params, "include_total").is_some() {
        body["count"] = json!(count);
    }
    ApiResponse::json(200, &body)
}

/// `GET …/{resource}/{id}/`: the item whose `id` (or `short_id`, `key`, person `uuid`) matches.
pub(super) fn detail(shared: &Shared, class: RouteClass, id: &str) -> ApiResponse {
    let found = items(shared, class).into_iter().find(|item| {
        ["id", "short_id", "key", "uuid"]
            .iter()
            .any(|k| match item.get(*k) {
                Some(Value::String(s)) => s == id,
                Some(Value::Number(n)) => n.to_string() == id,
                _ => false,
            })
    });
    match found {
        Some(item) => ApiResponse::json(200, &item),
        None => ApiResponse::not_found(),
    }
}

fn team(shared: &Shared) -> Value {
    let c = &shared.config;
    json!({
        "id": c.project_id,
        "uuid": PROJECT_UUID,
        "organization": ORGANIZATION_ID,
        "project_id": c.project_id,
        "api_token": c.project_api_key,
        "name": "Mock Project",
        "timezone": c.timezone.name,
        "is_demo": false,
        "access_control": false,
        "has_group_types": false,
        "ingested_event": true,
        "completed_snippet_onboarding": true,
        "person_display_name_properties": ["email", "name"],
        "week_start_day": 1,
        "created_at": "2024-06-01T00:00:00Z",
        "updated_at": "2025-01-01T00:00:00Z",
    })
}

/// `GET …/projects/{id}/`.
pub(super) fn project(shared: &Shared) -> ApiResponse {
    ApiResponse::json(200, &team(shared))
}

/// `GET /api/users/@me/`.
pub(super) fn me(shared: &Shared) -> ApiResponse {
    let organization = json!({
        "id": ORGANIZATION_ID,
        "name": "Mock Organization",
        "slug": "mock-organization",
        "membership_level": 8,
    });
    ApiResponse::json(
        200,
        &json!({
            "uuid": USER_UUID,
            "distinct_id": "mock-user-1",
            "first_name": "Mock",
            "last_name": "User",
            "email": "mock@example.com",
            "is_email_verified": true,
            "is_staff": false,
            "team": team(shared),
            "organization": organization,
            "organizations": [organization],
            "scopes": shared.config.scopes,
        }),
    )
}
