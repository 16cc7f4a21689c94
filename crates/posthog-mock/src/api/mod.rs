//! Request handling after faults: authentication, scopes, throttling and the endpoints.
//!
//! Private API order, as DRF does it: authenticate (401) → project access (403 / 404) →
//! scope (403) → throttle (429) → handler.

mod cohorts;
mod control;
mod public;
mod query;
mod response;
mod rest;
pub(crate) mod routes;

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

pub(crate) use response::{ApiResponse, default_error, param, parse_query_string};
use routes::{ProjectRef, Route, Routed};

use crate::fault::RouteClass;
use crate::server::Shared;

/// What a handler may read from the request.
#[derive(Debug)]
pub(crate) struct RequestCtx {
    pub method: String,
    pub path: String,
    pub params: Vec<(String, String)>,
    pub authorization: Option<String>,
    /// The body parsed as JSON (after gzip inflation), if it is JSON.
    pub body: Option<Value>,
    pub raw_body: Bytes,
    /// The `Host` header, for absolute `next`/`previous` URLs.
    pub host: String,
    pub routed: Routed,
    /// For a query request: the LIMIT clamp it gets (fixed when it arrived).
    pub limit_clamp: Option<usize>,
}

/// Answers one request that was not faulted.
pub(crate) async fn dispatch(shared: &Arc<Shared>, ctx: RequestCtx) -> ApiResponse {
    let method = ctx.method.as_str();
    match ctx.routed.route.clone() {
        Route::NotFound => ApiResponse::not_found(),
        Route::Control(sub) => control::handle(shared, &ctx, &sub),
        Route::Capture => only(method, "POST", || public::capture(shared, &ctx)),
        Route::Batch => only(method, "POST", || public::batch(shared, &ctx)),
        Route::Flags => only(method, "POST", || public::flags(shared, &ctx)),
        route => {
            if let Err(denied) = authorize(shared, &ctx) {
                return denied;
            }
            if let Some(wait) = shared.throttle() {
                return ApiResponse::throttled(Some(&wait.to_string()));
            }
            match route {
                Route::Project => only(method, "GET", || rest::project(shared)),
                Route::Me => only(method, "GET", || rest::me(shared)),
                Route::Query { kind } => {
                    if method != "POST" {
                        return ApiResponse::method_not_allowed(method);
                    }
                    query::create(shared, &ctx, kind.as_deref()).await
                }
                Route::QueryStatus { id, log } => match (method, log) {
                    ("GET", false) => query::status(shared, &id),
                    ("GET", true) => query::log(shared, &id),
                    ("DELETE", false) => query::cancel(shared, &id),
                    _ => ApiResponse::method_not_allowed(method),
                },
                Route::List => match (method, ctx.routed.class) {
                    ("GET", _) => rest::list(shared, &ctx),
                    ("POST", RouteClass::Cohorts) => cohorts::create(shared, &ctx),
                    _ => ApiResponse::method_not_allowed(method),
                },
                Route::Detail(id) => only(method, "GET", || {
                    rest::detail(shared, ctx.routed.class, &id)
                }),
                Route::CohortPersons(id) => {
                    only(method, "GET", || cohorts::persons(shared, &ctx, &id))
                }
                _ => ApiResponse::not_found(),
            }
        }
    }
}

fn only(method: &str, allowed: &str, f: impl FnOnce() -> ApiResponse) -> ApiResponse {
    if method == allowed {
        f()
    } else {
        ApiResponse::method_not_allowed(method)
    }
}

/// The scope a request needs (every query action is a read, per posthog-api.md §5; creating a
/// cohort is a write).
fn required_scope(class: RouteClass, method: &str) -> Option<&'static str> {
    Some(match class {
        RouteClass::Query | RouteClass::QueryStatus => "query:read",
        RouteClass::Project => "project:read",
        RouteClass::Me => "user:read",
        RouteClass::Cohorts if method == "POST" => "cohort:write",
        RouteClass::Cohorts => "cohort:read",
        RouteClass::FeatureFlags => "feature_flag:read",
        RouteClass::Insights => "insight:read",
        RouteClass::Annotations => "annotation:read",
        RouteClass::Experiments => "experiment:read",
        RouteClass::Persons => "person:read",
        RouteClass::PropertyDefinitions => "property_definition:read",
        RouteClass::EventDefinitions => "event_definition:read",
        _ => return None,
    })
}

fn has_scope(scopes: &[String], required: &str) -> bool {
    let object = required.split(':').next().unwrap_or(required);
    scopes
        .iter()
        .any(|s| s == "*" || s == required || s.strip_suffix(":write").is_some_and(|o| o == object))
}

fn authorize(shared: &Shared, ctx: &RequestCtx) -> Result<(), ApiResponse> {
    let config = &shared.config;
    let Some(auth) = ctx.authorization.as_deref() else {
        return Err(ApiResponse::error(
            401,
            "authentication_error",
            "not_authenticated",
            "Authentication credentials were not provided.",
        ));
    };
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .map(str::trim);
    if token != Some(config.personal_api_key.as_str()) {
        return Err(ApiResponse::error(
            401,
            "authentication_error",
            "authentication_failed",
            "Personal API key found in request Authorization header is invalid.",
        ));
    }
    match &ctx.routed.project {
        None | Some(ProjectRef::Current) => {}
        Some(ProjectRef::Id(id)) if config.forbidden_project_ids.contains(id) => {
            return Err(ApiResponse::error(
                403,
                "authentication_error",
                "permission_denied",
                "You do not have permission to perform this action.",
            ));
        }
        Some(ProjectRef::Id(id)) if *id == config.project_id => {}
        Some(_) => return Err(ApiResponse::not_found()),
    }
    if let (Some(scopes), Some(required)) = (
        &config.scopes,
        required_scope(ctx.routed.class, &ctx.method),
    ) && !has_scope(scopes, required)
    {
        return Err(ApiResponse::error(
            403,
            "authentication_error",
            "permission_denied",
            format!("API key missing required scope '{required}'"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_scope_implies_read() {
        let scopes = vec!["query:write".to_owned(), "cohort:read".to_owned()];
        assert!(has_scope(&scopes, "query:read"));
        assert!(has_scope(&scopes, "cohort:read"));
        assert!(!has_scope(&scopes, "person:read"));
        assert!(has_scope(&["*".to_owned()], "person:read"));
    }
}
