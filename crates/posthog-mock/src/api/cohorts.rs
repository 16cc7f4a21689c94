//! Cohorts: `POST …/cohorts/` stores a new cohort, `GET …/cohorts/{id}/persons/` lists the
//! dataset persons its person-property filters match, and every cohort's `count` is that
//! number — evaluated over the data at request time, never read from the fixture.
//!
//! Filters come in PostHog's two shapes: `filters.properties`, a tree of
//! `{"type": "AND"|"OR", "values": [...]}` groups whose leaves are
//! `{"key", "value", "type": "person", "operator"}`, and the legacy
//! `groups: [{"properties": [leaf, …]}]` (OR of groups, AND within one). Static cohorts and
//! cohorts without criteria match nobody (the mock does not model uploaded person lists).

use serde_json::{Map, Value, json};
use time::{OffsetDateTime, UtcOffset};

use super::{ApiResponse, RequestCtx, rest};
use crate::server::{Shared, lock};
use crate::timefmt::{isoformat, micros_of};

/// A property operator of a cohort filter leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Exact,
    IsNot,
    IContains,
    NotIContains,
    IsSet,
    IsNotSet,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "exact" => Op::Exact,
            "is_not" => Op::IsNot,
            "icontains" => Op::IContains,
            "not_icontains" => Op::NotIContains,
            "is_set" => Op::IsSet,
            "is_not_set" => Op::IsNotSet,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            _ => return None,
        })
    }
}

/// A cohort's membership rule over person properties.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rule {
    And(Vec<Rule>),
    Or(Vec<Rule>),
    Leaf { key: String, op: Op, value: Value },
}

/// A filter the mock cannot evaluate: 400 `validation_error` on the field `attr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FilterError {
    pub attr: &'static str,
    pub detail: String,
}

impl FilterError {
    fn new(attr: &'static str, detail: impl Into<String>) -> Self {
        FilterError {
            attr,
            detail: detail.into(),
        }
    }

    fn response(&self) -> ApiResponse {
        ApiResponse::error_attr(
            400,
            "validation_error",
            "invalid_input",
            self.detail.clone(),
            Some(self.attr),
        )
    }
}

/// The property text HogQL compares: strings as they are, other JSON as its text.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl Rule {
    /// Whether a person with `props` matches. Missing (or JSON null) properties never equal,
    /// contain or compare; the negative operators match them, as PostHog's `ifNull(…, 1)`.
    pub(crate) fn matches(&self, props: &Map<String, Value>) -> bool {
        match self {
            Rule::And(items) => items.iter().all(|r| r.matches(props)),
            Rule::Or(items) => items.iter().any(|r| r.matches(props)),
            Rule::Leaf { key, op, value } => {
                let actual = props.get(key).filter(|v| !v.is_null());
                let equals = |a: &Value| match value {
                    Value::Array(options) => options.iter().any(|o| text(o) == text(a)),
                    other => text(other) == text(a),
                };
                let contains =
                    |a: &Value| text(a).to_lowercase().contains(&text(value).to_lowercase());
                let compare = |a: &Value| match (number(a), number(value)) {
                    (Some(a), Some(v)) => a.partial_cmp(&v),
                    _ => None,
                };
                use std::cmp::Ordering::{Equal, Greater, Less};
                match op {
                    Op::Exact => actual.is_some_and(equals),
                    Op::IsNot => actual.is_none_or(|a| !equals(a)),
                    Op::IContains => actual.is_some_and(contains),
                    Op::NotIContains => actual.is_none_or(|a| !contains(a)),
                    Op::IsSet => actual.is_some(),
                    Op::IsNotSet => actual.is_none(),
                    Op::Gt => actual.and_then(compare) == Some(Greater),
                    Op::Gte => matches!(actual.and_then(compare), Some(Greater | Equal)),
                    Op::Lt => actual.and_then(compare) == Some(Less),
                    Op::Lte => matches!(actual.and_then(compare), Some(Less | Equal)),
                }
            }
        }
    }

    fn has_leaf(&self) -> bool {
        match self {
            Rule::And(items) | Rule::Or(items) => items.iter().any(Rule::has_leaf),
            Rule::Leaf { .. } => true,
        }
    }
}

/// How deeply filter groups may nest (the parser recurses).
const MAX_DEPTH: usize = 32;

fn parse_leaf(obj: &Map<String, Value>, attr: &'static str) -> Result<Rule, FilterError> {
    let key = match obj.get("key") {
        Some(Value::String(k)) if !k.is_empty() => k.clone(),
        _ => {
            return Err(FilterError::new(
                attr,
                "Each cohort filter property needs a non-empty string `key`.",
            ));
        }
    };
    match obj.get("type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t == "person" => {}
        Some(other) => {
            return Err(FilterError::new(
                attr,
                format!(
                    "Cohort filter type {} on `{key}` is not supported by the mock: it evaluates person property filters only.",
                    other
                ),
            ));
        }
    }
    let op = match obj.get("operator") {
        None | Some(Value::Null) => Op::Exact,
        Some(Value::String(s)) => Op::parse(s).ok_or_else(|| {
            FilterError::new(
                attr,
                format!(
                    "Unknown operator '{s}' in the cohort filter on `{key}`. Supported: exact, is_not, icontains, not_icontains, is_set, is_not_set, gt, gte, lt, lte."
                ),
            )
        })?,
        Some(other) => {
            return Err(FilterError::new(
                attr,
                format!("The operator of the cohort filter on `{key}` must be a string, not {other}."),
            ));
        }
    };
    let value = obj.get("value").cloned().unwrap_or(Value::Null);
    Ok(Rule::Leaf { key, op, value })
}

fn parse_node(v: &Value, attr: &'static str, depth: usize) -> Result<Rule, FilterError> {
    if depth > MAX_DEPTH {
        return Err(FilterError::new(
            attr,
            format!("Cohort filters nest more than {MAX_DEPTH} groups deep."),
        ));
    }
    let Some(obj) = v.as_object() else {
        return Err(FilterError::new(
            attr,
            "Each cohort filter must be a group {\"type\", \"values\"} or a property {\"key\", \"value\", \"type\", \"operator\"}.",
        ));
    };
    if obj.contains_key("key") {
        return parse_leaf(obj, attr);
    }
    let Some(values) = obj.get("values").and_then(Value::as_array) else {
        return Err(FilterError::new(
            attr,
            "A cohort filter group needs a `values` array.",
        ));
    };
    let items = values
        .iter()
        .map(|v| parse_node(v, attr, depth + 1))
        .collect::<Result<Vec<_>, _>>()?;
    match obj.get("type").and_then(Value::as_str).unwrap_or("AND") {
        "AND" => Ok(Rule::And(items)),
        "OR" => Ok(Rule::Or(items)),
        other => Err(FilterError::new(
            attr,
            format!("Cohort filter group type must be AND or OR, not '{other}'."),
        )),
    }
}

/// The legacy `groups` shape: an OR of groups, each the AND of its `properties`.
fn parse_groups(groups: &[Value]) -> Result<Rule, FilterError> {
    let mut out = Vec::new();
    for g in groups {
        let Some(obj) = g.as_object() else {
            return Err(FilterError::new(
                "groups",
                "Each cohort group must be an object.",
            ));
        };
        for behavioural in ["action_id", "event_id"] {
            if obj.get(behavioural).is_some_and(|v| !v.is_null()) {
                return Err(FilterError::new(
                    "groups",
                    format!(
                        "Cohort groups with `{behavioural}` are not supported by the mock: it evaluates person property filters only."
                    ),
                ));
            }
        }
        let leaves = match obj.get("properties") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(props)) => props
                .iter()
                .map(|p| parse_node(p, "groups", 1))
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => {
                return Err(FilterError::new(
                    "groups",
                    "A cohort group's `properties` must be an array.",
                ));
            }
        };
        // A group without criteria adds no one.
        if !leaves.is_empty() {
            out.push(Rule::And(leaves));
        }
    }
    Ok(Rule::Or(out))
}

/// The rule of a stored cohort: `Ok(None)` when it matches nobody (static, or no criteria).
/// `filters.properties` wins over the legacy `groups`, as in PostHog.
pub(crate) fn rule_of(cohort: &Value) -> Result<Option<Rule>, FilterError> {
    if cohort.get("is_static").and_then(Value::as_bool) == Some(true) {
        return Ok(None);
    }
    let rule = match cohort.get("filters").and_then(|f| f.get("properties")) {
        Some(props) if !props.is_null() => parse_node(props, "filters", 0)?,
        _ => match cohort.get("groups").and_then(Value::as_array) {
            Some(groups) => parse_groups(groups)?,
            None => return Ok(None),
        },
    };
    Ok(rule.has_leaf().then_some(rule))
}

/// The persons of the dataset `rule` matches, in storage order, as `persons/` renders them.
fn members(shared: &Shared, rule: &Rule) -> Vec<Value> {
    shared
        .persons
        .rows
        .iter()
        .filter(|r| rule.matches(&r.person.properties))
        .map(|r| rest::person_json(&r.person))
        .collect()
}

fn member_count(shared: &Shared, rule: Option<&Rule>) -> usize {
    rule.map_or(0, |rule| {
        shared
            .persons
            .rows
            .iter()
            .filter(|r| rule.matches(&r.person.properties))
            .count()
    })
}

/// Every stored cohort with its `count` evaluated now. A cohort whose filters the mock cannot
/// evaluate keeps the count it was stored with.
pub(super) fn listed(shared: &Shared) -> Vec<Value> {
    let cohorts = lock(&shared.cohorts).clone();
    cohorts
        .into_iter()
        .map(|mut c| {
            if let Ok(rule) = rule_of(&c) {
                c["count"] = json!(member_count(shared, rule.as_ref()));
            }
            c
        })
        .collect()
}

/// `GET …/cohorts/{id}/persons/`: the matching persons, paginated like `persons/`.
pub(super) fn persons(shared: &Shared, ctx: &RequestCtx, id: &str) -> ApiResponse {
    let cohort = lock(&shared.cohorts)
        .iter()
        .find(|c| match c.get("id") {
            Some(Value::Number(n)) => n.to_string() == id,
            Some(Value::String(s)) => s == id,
            _ => false,
        })
        .cloned();
    let Some(cohort) = cohort else {
        return ApiResponse::not_found();
    };
    match rule_of(&cohort) {
        Ok(rule) => {
            let all = rule.map(|r| members(shared, &r)).unwrap_or_default();
            rest::paginate(all, ctx, false)
        }
        Err(e) => e.response(),
    }
}

fn required_error(attr: &str) -> ApiResponse {
    ApiResponse::error_attr(
        400,
        "validation_error",
        "required",
        "This field is required.",
        Some(attr),
    )
}

fn invalid(attr: &str, detail: &str) -> ApiResponse {
    ApiResponse::error_attr(400, "validation_error", "invalid", detail, Some(attr))
}

/// Checks an optional field's JSON type; `null` counts as absent.
fn optional<'a>(
    body: &'a Map<String, Value>,
    attr: &str,
    ok: fn(&Value) -> bool,
    detail: &str,
) -> Result<Option<&'a Value>, ApiResponse> {
    match body.get(attr) {
        None | Some(Value::Null) => Ok(None),
        Some(v) if ok(v) => Ok(Some(v)),
        Some(_) => Err(invalid(attr, detail)),
    }
}

/// `POST …/cohorts/`: validates the body, stores the cohort with the next id and answers 201
/// with it.
pub(super) fn create(shared: &Shared, ctx: &RequestCtx) -> ApiResponse {
    let Some(body) = ctx.body.as_ref() else {
        let detail = if ctx.raw_body.is_empty() {
            "Request body is empty."
        } else {
            "JSON parse error - request body is not valid JSON."
        };
        return ApiResponse::error(400, "validation_error", "parse_error", detail);
    };
    let Some(body) = body.as_object() else {
        return ApiResponse::invalid_input("Request body must be a JSON object.");
    };
    let name = match body.get("name") {
        None | Some(Value::Null) => return required_error("name"),
        Some(Value::String(s)) if s.trim().is_empty() => {
            return ApiResponse::error_attr(
                400,
                "validation_error",
                "blank",
                "This field may not be blank.",
                Some("name"),
            );
        }
        Some(Value::String(s)) if s.chars().count() > 400 => {
            return ApiResponse::error_attr(
                400,
                "validation_error",
                "max_length",
                "Ensure this field has no more than 400 characters.",
                Some("name"),
            );
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => return invalid("name", "Not a valid string."),
    };
    let fields = (|| {
        Ok::<_, ApiResponse>((
            optional(body, "description", Value::is_string, "Not a valid string.")?,
            optional(
                body,
                "filters",
                Value::is_object,
                "Expected a JSON object, e.g. {\"properties\": {\"type\": \"AND\", \"values\": []}}.",
            )?,
            optional(body, "groups", Value::is_array, "Expected a list of items.")?,
            optional(
                body,
                "is_static",
                Value::is_boolean,
                "Must be a valid boolean.",
            )?,
        ))
    })();
    let (description, filters, groups, is_static) = match fields {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let now = isoformat(micros_of(OffsetDateTime::now_utc()), UtcOffset::UTC);
    let mut cohort = json!({
        "id": 0,
        "name": name,
        "description": description.cloned().unwrap_or_else(|| json!("")),
        "groups": groups.cloned().unwrap_or_else(|| json!([])),
        "filters": filters.cloned().unwrap_or(Value::Null),
        "query": null,
        "deleted": false,
        "is_calculating": false,
        "created_by": {
            "id": 1,
            "uuid": "0190a000-0000-7000-8000-000000000001",
            "distinct_id": "mock-user-1",
            "first_name": "Mock",
            "email": "mock@example.com",
        },
        "created_at": now,
        "last_calculation": now,
        "errors_calculating": 0,
        "count": 0,
        "is_static": is_static.and_then(Value::as_bool).unwrap_or(false),
        "experiment_set": [],
        "_create_in_folder": null,
    });
    let rule = match rule_of(&cohort) {
        Ok(rule) => rule,
        Err(e) => return e.response(),
    };
    cohort["count"] = json!(member_count(shared, rule.as_ref()));
    let mut cohorts = lock(&shared.cohorts);
    let next_id = cohorts
        .iter()
        .filter_map(|c| c.get("id").and_then(Value::as_i64))
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    cohort["id"] = json!(next_id);
    cohorts.push(cohort.clone());
    ApiResponse::json(201, &cohort)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn leaf(key: &str, op: &str, value: Value) -> Value {
        json!({"key": key, "type": "person", "operator": op, "value": value})
    }

    fn rule(filters: Value) -> Rule {
        rule_of(&json!({"filters": {"properties": filters}}))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn every_operator_follows_hogql_property_semantics() {
        let p = props(json!({"plan": "pro", "age": "42", "n": 7, "email": "Ann@Example.com"}));
        let check = |key: &str, op: &str, value: Value| {
            rule(json!({"type": "AND", "values": [leaf(key, op, value)]})).matches(&p)
        };
        assert!(check("plan", "exact", json!(["free", "pro"])));
        assert!(
            !check("plan", "exact", json!("PRO")),
            "exact is case-sensitive"
        );
        assert!(check("n", "exact", json!(7)));
        assert!(check("plan", "is_not", json!("free")));
        assert!(
            check("missing", "is_not", json!("free")),
            "a missing value is not 'free'"
        );
        assert!(check("email", "icontains", json!("example.COM")));
        assert!(!check("missing", "icontains", json!("x")));
        assert!(check("missing", "not_icontains", json!("x")));
        assert!(check("plan", "is_set", Value::Null));
        assert!(check("missing", "is_not_set", Value::Null));
        assert!(check("age", "gt", json!(41)));
        assert!(!check("age", "lt", json!(41)));
        assert!(!check("plan", "gt", json!(1)), "non-numeric never compares");
    }

    #[test]
    fn nested_groups_and_legacy_groups_combine() {
        let p = props(json!({"plan": "pro", "country": "IN"}));
        let tree = rule(json!({"type": "OR", "values": [
            {"type": "AND", "values": [leaf("plan", "exact", json!("free"))]},
            {"type": "AND", "values": [leaf("plan", "exact", json!("pro")), leaf("country", "exact", json!("IN"))]},
        ]}));
        assert!(tree.matches(&p));
        let legacy = rule_of(&json!({"groups": [
            {"properties": [leaf("plan", "exact", json!("free"))]},
            {"properties": [leaf("country", "exact", json!("IN"))]},
        ]}))
        .unwrap()
        .unwrap();
        assert!(legacy.matches(&p));
    }

    #[test]
    fn unsupported_filters_are_errors_naming_the_problem() {
        let err = rule_of(&json!({"filters": {"properties": {"type": "AND", "values": [leaf("plan", "regex", json!("p.*"))]}}}))
            .unwrap_err();
        assert_eq!(err.attr, "filters");
        assert!(err.detail.contains("'regex'"), "{}", err.detail);
        let err = rule_of(&json!({"filters": {"properties": {"type": "AND", "values": [{"key": "x", "type": "behavioral", "value": "performed_event"}]}}}))
            .unwrap_err();
        assert!(err.detail.contains("behavioral"), "{}", err.detail);
        let err = rule_of(&json!({"groups": [{"action_id": 3}]})).unwrap_err();
        assert_eq!(err.attr, "groups");
    }

    #[test]
    fn static_and_empty_cohorts_match_nobody() {
        assert_eq!(
            rule_of(
                &json!({"is_static": true, "filters": {"properties": {"type": "AND", "values": [leaf("a", "is_set", Value::Null)]}}})
            ),
            Ok(None)
        );
        assert_eq!(rule_of(&json!({"filters": null, "groups": []})), Ok(None));
        assert_eq!(
            rule_of(&json!({"filters": {"properties": {"type": "OR", "values": []}}})),
            Ok(None)
        );
    }

    #[test]
    fn hostile_nesting_is_an_error() {
        let mut v = leaf("a", "is_set", Value::Null);
        for _ in 0..1000 {
            v = json!({"type": "AND", "values": [v]});
        }
        assert!(rule_of(&json!({"filters": {"properties": v}})).is_err());
    }
}
