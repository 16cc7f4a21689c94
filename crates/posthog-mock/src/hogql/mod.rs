//! A HogQL subset: tokenizer, parser, binder (names, placeholders, types) and evaluator over
//! the mock's `events`, `persons` and `sessions` tables and subqueries of them.
//!
//! The mock evaluates every query over its data; nothing is keyed by query text. See the crate
//! README for the grammar and the semantics it reproduces (ClickHouse UUID order, DateTime
//! instants, LIMIT clamp, OFFSET rejection, properties as JSON strings).

mod ast;
mod bind;
mod dates;
mod eval;
mod exec;
mod json;
mod lexer;
mod parser;
mod quantile;
mod value;

use serde_json::{Map, Value as Json};
use time::UtcOffset;

pub(crate) use exec::Tables;

use bind::BindCtx;

/// PostHog's page size when the query has no LIMIT (`DEFAULT_RETURNED_ROWS`).
pub(crate) const DEFAULT_ROWS: usize = 100;

/// A query the mock rejects; the server answers 400 `validation_error` with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct HogQlError {
    pub message: String,
}

impl HogQlError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        HogQlError {
            message: message.into(),
        }
    }
}

/// How to run one query.
pub(crate) struct QuerySettings<'a> {
    pub values: &'a Map<String, Json>,
    pub project_tz: UtcOffset,
    pub project_tz_name: &'a str,
    /// `modifiers.convertToProjectTimezone` (default true): render DateTimes in the project
    /// zone, else in UTC.
    pub convert_to_project_tz: bool,
    /// `now()`, µs since the epoch.
    pub now: i64,
    /// The server's current cap on a top-level LIMIT (PostHog's `MAX_SELECT_RETURNED_ROWS`):
    /// `LIMIT n` returns at most `min(n, limit_clamp)` rows.
    pub limit_clamp: usize,
}

/// A finished query, ready to be put in the response.
#[derive(Debug, Clone)]
pub(crate) struct QueryResult {
    pub columns: Vec<String>,
    pub types: Vec<(String, String)>,
    pub results: Vec<Vec<Json>>,
    /// Set only when the query had no LIMIT (PostHog's paginator).
    pub has_more: Option<bool>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
    /// The query as the mock understood it, with the effective LIMIT.
    pub hogql: String,
}

/// Parses, binds and evaluates `query` over `tables`.
pub(crate) fn run(
    query: &str,
    settings: &QuerySettings<'_>,
    tables: &Tables<'_>,
) -> Result<QueryResult, HogQlError> {
    let mut ast = parser::parse_query(query)?;
    let (display_tz, tz_name) = if settings.convert_to_project_tz {
        (settings.project_tz, settings.project_tz_name)
    } else {
        (UtcOffset::UTC, "UTC")
    };
    let ctx = BindCtx {
        values: settings.values,
        project_tz: settings.project_tz,
        project_tz_name: settings.project_tz_name,
        display_tz,
        now: settings.now,
    };
    let plan = bind::bind(&ast, &ctx)?;
    let paginated = plan.limit.is_none();
    // The clamp and the paginator apply to the top-level query only; the paginator's
    // `LIMIT 101` is not clamped.
    let effective_limit = match plan.limit {
        Some(n) => n.min(settings.limit_clamp),
        None => DEFAULT_ROWS + 1,
    };
    let mut rows = exec::execute(&plan, tables, effective_limit, display_tz)?;
    let has_more = if paginated {
        let more = rows.len() > DEFAULT_ROWS;
        rows.truncate(DEFAULT_ROWS);
        Some(more)
    } else {
        None
    };
    let results = rows
        .iter()
        .map(|row| row.iter().map(|v| v.to_json(display_tz)).collect())
        .collect();
    ast.limit = Some(ast::Expr::Literal(ast::Literal::Int(
        i64::try_from(effective_limit).unwrap_or(i64::MAX),
    )));
    Ok(QueryResult {
        types: plan
            .columns
            .iter()
            .zip(&plan.types)
            .map(|(name, ty)| (name.clone(), ty.clickhouse_name(tz_name)))
            .collect(),
        columns: plan.columns,
        results,
        has_more,
        limit: paginated.then_some(DEFAULT_ROWS),
        offset: paginated.then_some(0),
        hogql: ast.to_string(),
    })
}

#[cfg(test)]
mod tests;
