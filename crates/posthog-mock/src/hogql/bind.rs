//! Name resolution, placeholder binding, type checking and constant folding: turns a parsed
//! [`SelectQuery`] into an executable [`Plan`].
//!
//! Placeholders become constants here (values are never spliced into the query text), and
//! type errors are raised here, from static types, so a bad query fails the same way whether
//! or not any row matches.

use std::borrow::Cow;

use serde_json::{Map, Value as Json};
use time::UtcOffset;
use uuid::Uuid;

use super::HogQlError;
use super::ast::{ArithOp, CmpOp, Expr, FromClause, Literal, SelectItem, SelectQuery};
use super::dates;
use super::eval::{RowCtx, eval};
use super::value::{IntervalUnit, Kind, Ty, Val};
use crate::timefmt::local_day;

/// The tables the mock knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    Events,
    Persons,
    /// Derived at query time from the events that carry a `$session_id` property.
    Sessions,
}

/// A column of one of the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Col {
    Uuid,
    Event,
    DistinctId,
    Timestamp,
    CreatedAt,
    PersonId,
    Properties,
    /// `person.properties` / `poe.properties` on `events`: the person's properties as of the
    /// event (persons-on-events `events.person_properties`). Not listed by `SELECT *`.
    PersonProperties,
    ElementsChain,
    Id,
    IsIdentified,
    SessionId,
    SessionStart,
    SessionEnd,
    SessionDuration,
    PageviewCount,
    AutocaptureCount,
    EntryUrl,
    EndUrl,
    IsBounce,
}

impl Table {
    /// The table called `name`.
    pub(crate) fn parse(name: &str) -> Option<Table> {
        match name {
            "events" => Some(Table::Events),
            "persons" => Some(Table::Persons),
            "sessions" => Some(Table::Sessions),
            _ => None,
        }
    }

    /// Columns in `SELECT *` order, with names and types.
    pub(crate) fn columns(self) -> &'static [(&'static str, Col)] {
        match self {
            Table::Events => &[
                ("uuid", Col::Uuid),
                ("event", Col::Event),
                ("properties", Col::Properties),
                ("timestamp", Col::Timestamp),
                ("distinct_id", Col::DistinctId),
                ("elements_chain", Col::ElementsChain),
                ("created_at", Col::CreatedAt),
                ("person_id", Col::PersonId),
            ],
            Table::Persons => &[
                ("id", Col::Id),
                ("created_at", Col::CreatedAt),
                ("properties", Col::Properties),
                ("is_identified", Col::IsIdentified),
            ],
            Table::Sessions => &[
                ("session_id", Col::SessionId),
                ("distinct_id", Col::DistinctId),
                ("$start_timestamp", Col::SessionStart),
                ("$end_timestamp", Col::SessionEnd),
                ("$session_duration", Col::SessionDuration),
                ("$pageview_count", Col::PageviewCount),
                ("$autocapture_count", Col::AutocaptureCount),
                ("$entry_current_url", Col::EntryUrl),
                ("$end_current_url", Col::EndUrl),
                ("$is_bounce", Col::IsBounce),
            ],
        }
    }

    /// The column called `name`, including aliases that `*` does not list (`sessions.id`,
    /// `sessions.duration`).
    fn lookup(self, name: &str) -> Option<Col> {
        let alias = match (self, name) {
            (Table::Sessions, "id") => Some(Col::SessionId),
            (Table::Sessions, "duration") => Some(Col::SessionDuration),
            _ => None,
        };
        self.columns()
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| *c)
            .or(alias)
    }

    fn name(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::Persons => "persons",
            Table::Sessions => "sessions",
        }
    }
}

impl Col {
    pub(crate) fn ty(self) -> Ty {
        match self {
            Col::Uuid | Col::Id => Ty::of(Kind::Uuid),
            Col::Event
            | Col::DistinctId
            | Col::Properties
            | Col::PersonProperties
            | Col::ElementsChain
            | Col::SessionId => Ty::of(Kind::Str),
            Col::Timestamp | Col::CreatedAt | Col::SessionStart | Col::SessionEnd => {
                Ty::of(Kind::DateTime)
            }
            Col::PersonId => Ty::nullable(Kind::Uuid),
            Col::IsIdentified | Col::IsBounce => Ty::of(Kind::Bool),
            Col::SessionDuration => Ty::of(Kind::Int),
            Col::PageviewCount | Col::AutocaptureCount => Ty::of(Kind::UInt),
            Col::EntryUrl | Col::EndUrl => Ty::nullable(Kind::Str),
        }
    }
}

/// What `JSONExtract*` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonAs {
    /// `JSONExtractString`: a string's value, another value's JSON text, '' for null or nothing.
    String,
    /// `JSONExtractInt`: the number (or numeric string) truncated, 0 for anything else (`true`).
    Int,
    /// `JSONExtractFloat`: the number (or numeric string), 0 for anything else (`true`).
    Float,
}

/// Scalar functions. Those that depend on a time zone carry the zone they were bound with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    /// `toDateTime(x)`; wall times without an offset are read in the given offset (the zone
    /// argument, else the display zone: the project's, or UTC without
    /// `convertToProjectTimezone`).
    ToDateTime(UtcOffset),
    ToUuid,
    ToString,
    ToInt,
    ToFloat,
    Lower,
    Upper,
    Length,
    Coalesce,
    /// `if(cond, then, else)`; only the chosen branch is evaluated.
    If,
    /// `round(x, digits)`: half to even, as ClickHouse rounds floats.
    Round(i64),
    /// `floor(x, digits)`.
    Floor(i64),
    /// `ceil(x, digits)`.
    Ceil(i64),
    /// `concat(…)`: NULL if any argument is NULL; non-strings as `toString` writes them.
    Concat,
    /// `JSONExtract…(json, key_or_index, …)`.
    JsonExtract(JsonAs),
    Greatest,
    Least,
    Empty,
    NotEmpty,
    /// `intDiv(a, b)`: truncating integer division; division by zero is an error.
    IntDiv,
    /// `toDate(x)` in the given zone.
    ToDate(UtcOffset),
    /// A `Date` as the `DateTime` of its midnight (inserted to compare or unify with DateTimes).
    DateToDateTime(UtcOffset),
    /// `toStartOfDay` / `Hour` / `Minute`: truncation to a multiple of `unit_us` (µs).
    StartOf {
        unit_us: i64,
        tz: UtcOffset,
    },
    /// `toStartOfWeek(x, mode)`: Sunday-based unless the mode is odd.
    StartOfWeek {
        monday: bool,
        tz: UtcOffset,
    },
    StartOfMonth(UtcOffset),
    /// `toInterval<Unit>(n)`.
    ToInterval(IntervalUnit),
    /// `date ± interval` (arguments: the date, then the interval).
    AddInterval {
        negate: bool,
        tz: UtcOffset,
    },
    /// `dateDiff(unit, a, b)`.
    DateDiff(IntervalUnit, UtcOffset),
}

/// Aggregate functions. Their `-If` forms are the same function with a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggFunc {
    Count,
    /// `count(DISTINCT x)`, `uniq(x)`.
    CountDistinct,
    Min,
    Max,
    Sum,
    Avg,
    /// The first non-NULL value in storage (scan) order.
    Any,
    /// `argMax(x, by)`: `x` of the row with the greatest `by` (the first such row on ties).
    ArgMax,
    /// `argMin(x, by)`.
    ArgMin,
    /// `quantile(level)(x)`: ClickHouse's reservoir-sampling quantile, interpolated (the
    /// `quantile` module says how exactly, and what the mock does above 8192 values).
    Quantile,
    /// `quantiles(level, …)(x)`: the same at several levels, as an array in parameter order.
    Quantiles,
}

/// One aggregate computed per group.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AggSpec {
    pub func: AggFunc,
    /// The levels of `quantile`/`quantiles`, in [0, 1], in parameter order; empty otherwise.
    pub levels: Vec<f64>,
    /// The arguments (none for `count()`; `x, by` for `argMax`; one tuple for multi-argument
    /// `uniq`).
    pub args: Vec<BExpr>,
    /// The `-If` condition: rows where it is not true are skipped.
    pub cond: Option<BExpr>,
    pub ty: Ty,
}

/// A bound expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BExpr {
    Const(Val<'static>),
    Col(Col),
    /// Column `n` of a subquery's result row.
    Slot(usize),
    /// A path inside a JSON column (`Col::Properties` or `Col::PersonProperties`), read as a
    /// string (PostHog's `properties.x` semantics).
    Prop(Col, Vec<String>),
    Tuple(Vec<BExpr>),
    Func(Func, Vec<BExpr>),
    /// The value of aggregate slot `n` for the current group.
    Agg(usize),
    Not(Box<BExpr>),
    And(Vec<BExpr>),
    Or(Vec<BExpr>),
    Cmp(CmpOp, Box<BExpr>, Box<BExpr>),
    In {
        expr: Box<BExpr>,
        list: Vec<BExpr>,
        negated: bool,
    },
    Like {
        expr: Box<BExpr>,
        pattern: Box<BExpr>,
        negated: bool,
        case_insensitive: bool,
    },
    IsNull {
        expr: Box<BExpr>,
        negated: bool,
    },
    Arith(ArithOp, Box<BExpr>, Box<BExpr>),
    Neg(Box<BExpr>),
}

impl BExpr {
    fn is_const(&self) -> bool {
        matches!(self, BExpr::Const(_))
    }

    fn children(&self) -> Vec<&BExpr> {
        match self {
            BExpr::Const(_) | BExpr::Col(_) | BExpr::Slot(_) | BExpr::Prop(..) | BExpr::Agg(_) => {
                Vec::new()
            }
            BExpr::Tuple(items) | BExpr::Func(_, items) | BExpr::And(items) | BExpr::Or(items) => {
                items.iter().collect()
            }
            BExpr::Not(e) | BExpr::Neg(e) | BExpr::IsNull { expr: e, .. } => vec![e],
            BExpr::Cmp(_, l, r) | BExpr::Arith(_, l, r) => vec![l, r],
            BExpr::In { expr, list, .. } => {
                let mut v = vec![expr.as_ref()];
                v.extend(list.iter());
                v
            }
            BExpr::Like { expr, pattern, .. } => vec![expr, pattern],
        }
    }

    /// True when the expression reads no row and no aggregate.
    fn is_foldable(&self) -> bool {
        match self {
            BExpr::Col(_) | BExpr::Slot(_) | BExpr::Prop(..) | BExpr::Agg(_) => false,
            BExpr::Const(_) => true,
            _ => self.children().iter().all(|c| c.is_foldable()),
        }
    }

    /// True when the expression reads an aggregate (possibly through a SELECT alias).
    fn has_agg(&self) -> bool {
        matches!(self, BExpr::Agg(_)) || self.children().iter().any(|c| c.has_agg())
    }
}

/// One ORDER BY term of a plan.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OrderTerm {
    pub expr: BExpr,
    pub desc: bool,
    pub nulls_first: bool,
}

/// Where a plan's rows come from.
#[derive(Debug, Clone)]
pub(crate) enum PlanSource {
    Table(Table),
    /// A subquery's result rows, read with [`BExpr::Slot`].
    Subquery(Box<Plan>),
}

/// An executable query.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub source: PlanSource,
    pub columns: Vec<String>,
    pub types: Vec<Ty>,
    pub select: Vec<BExpr>,
    pub where_: Option<BExpr>,
    pub group_by: Vec<BExpr>,
    pub aggregate: bool,
    pub aggs: Vec<AggSpec>,
    pub having: Option<BExpr>,
    pub order_by: Vec<OrderTerm>,
    pub distinct: bool,
    /// The query's own LIMIT, as written (the caller clamps the top-level one to the server's
    /// current LIMIT clamp); `None` when it had none.
    pub limit: Option<usize>,
}

/// What binding needs to know besides the query.
pub(crate) struct BindCtx<'v> {
    pub values: &'v Map<String, Json>,
    /// The project's offset: wall times without an offset are read in it.
    pub project_tz: UtcOffset,
    /// The project's time zone name (accepted as a `toDateTime` time zone argument).
    pub project_tz_name: &'v str,
    /// The offset DateTime values are shown in (`toString`), and the zone dates are
    /// truncated and compared in.
    pub display_tz: UtcOffset,
    /// `now()`, µs.
    pub now: i64,
}

/// The message PostHog gives for OFFSET on personal-API-key queries (§1 of posthog-api.md).
pub(crate) const OFFSET_MESSAGE: &str = "OFFSET is not supported on queries made with a personal API key. For pagination, use keyset pagination on the `timestamp` column, e.g. `WHERE timestamp > :last_seen_timestamp ORDER BY timestamp LIMIT N`, instead of OFFSET.";

/// Binds and checks a parsed query, and every subquery in its FROM.
pub(crate) fn bind(q: &SelectQuery, ctx: &BindCtx<'_>) -> Result<Plan, HogQlError> {
    if q.offset.is_some() {
        return Err(HogQlError::new(OFFSET_MESSAGE));
    }
    let (source, scope) = match &q.from {
        FromClause::Table(name) => {
            let table = Table::parse(name).ok_or_else(|| {
                HogQlError::new(format!(
                    "Unknown table `{name}`. The mock serves `events`, `persons` and `sessions`."
                ))
            })?;
            (PlanSource::Table(table), Scope::Table(table))
        }
        FromClause::Subquery(inner) => {
            let plan = bind(inner, ctx)?;
            let columns = plan
                .columns
                .iter()
                .cloned()
                .zip(plan.types.iter().cloned())
                .collect();
            (
                PlanSource::Subquery(Box::new(plan)),
                Scope::Derived(columns),
            )
        }
    };
    let mut b = Binder {
        scope,
        table_alias: q.table_alias.clone(),
        ctx,
        aliases: Vec::new(),
        aggs: Vec::new(),
        allow_aggs: true,
        in_agg: false,
    };

    let mut columns = Vec::new();
    let mut types = Vec::new();
    let mut select = Vec::new();
    for item in &q.select {
        match item {
            SelectItem::Star => {
                for (name, expr, ty) in b.scope.star() {
                    columns.push(name);
                    types.push(ty);
                    select.push(expr);
                }
            }
            SelectItem::Expr { expr, alias } => {
                let (bound, ty) = b.bind(expr)?;
                let name = match (alias, expr) {
                    (Some(a), _) => a.clone(),
                    (None, Expr::Field(chain)) => field_column_name(chain, &bound),
                    (None, other) => other.to_string(),
                };
                // Aliases are visible to later SELECT items, WHERE, GROUP BY, HAVING and
                // ORDER BY (ClickHouse lets them shadow columns).
                if let Some(a) = alias {
                    b.aliases.push((a.clone(), bound.clone(), ty.clone()));
                }
                columns.push(name);
                types.push(ty);
                select.push(bound);
            }
        }
    }

    b.allow_aggs = false;
    let where_ = match &q.where_ {
        Some(w) => {
            let (bound, ty) = b.bind(w)?;
            check_filter(&ty, "WHERE")?;
            no_aggregates(&bound, "WHERE")?;
            Some(bound)
        }
        None => None,
    };
    let mut group_by = Vec::new();
    for g in &q.group_by {
        let (bound, _) = b.bind_positional(g, &select)?;
        no_aggregates(&bound, "GROUP BY")?;
        group_by.push(bound);
    }
    b.allow_aggs = true;
    let having = match &q.having {
        Some(h) => {
            let (bound, ty) = b.bind(h)?;
            check_filter(&ty, "HAVING")?;
            Some(bound)
        }
        None => None,
    };
    let mut order_by = Vec::new();
    for o in &q.order_by {
        let (expr, _) = b.bind_positional(&o.expr, &select)?;
        order_by.push(OrderTerm {
            expr,
            desc: o.desc,
            nulls_first: o.nulls_first.unwrap_or(false),
        });
    }

    let aggregate = !group_by.is_empty() || !b.aggs.is_empty() || having.is_some();
    if aggregate {
        for (expr, name) in select.iter().zip(&columns) {
            check_grouped(expr, &group_by, name)?;
        }
        if let Some(h) = &having {
            check_grouped(h, &group_by, "HAVING")?;
        }
        for o in &order_by {
            check_grouped(&o.expr, &group_by, "ORDER BY")?;
        }
    }

    let limit = match &q.limit {
        None => None,
        Some(e) => {
            b.allow_aggs = false;
            let (bound, _) = b.bind(e)?;
            match bound {
                BExpr::Const(Val::Int(n)) if n >= 0 => {
                    Some(usize::try_from(n).unwrap_or(usize::MAX))
                }
                _ => {
                    return Err(HogQlError::new(
                        "LIMIT must be a non-negative integer constant",
                    ));
                }
            }
        }
    };

    Ok(Plan {
        source,
        columns,
        types,
        select,
        where_,
        group_by,
        aggregate,
        aggs: b.aggs,
        having,
        order_by,
        distinct: q.distinct,
        limit,
    })
}

/// The name of an unaliased field in SELECT, as PostHog's resolver names it (a hidden alias):
/// a column by its last name (`person.properties` → `properties`, `events.uuid` → `uuid`), a
/// property path by its keys joined with `__` (`properties.$browser` → `$browser`,
/// `properties.a.b` → `a__b`). A SELECT alias used as a field keeps the alias's name.
fn field_column_name(chain: &[String], bound: &BExpr) -> String {
    match bound {
        // The chain spells the path out (it is not a reference to an alias of it).
        BExpr::Prop(_, path) if chain.len() > path.len() => path.join("__"),
        _ => chain.last().cloned().unwrap_or_default(),
    }
}

/// `person.…` / `poe.…` on `events` (`rest` is the chain after `person`/`poe`): the
/// persons-on-events sub-table, of which the mock serves `properties` (String, JSON text) and
/// paths inside it.
fn person_field(name: &str, rest: &[String]) -> Result<(BExpr, Ty), HogQlError> {
    match rest.split_first() {
        None => Err(HogQlError::new(format!(
            "Can't select a table when a column is expected: {name}. Select `{name}.properties` or a property of it."
        ))),
        Some((field, [])) if field == "properties" => Ok((
            BExpr::Col(Col::PersonProperties),
            Col::PersonProperties.ty(),
        )),
        Some((field, path)) if field == "properties" => Ok((
            BExpr::Prop(Col::PersonProperties, path.to_vec()),
            Ty::nullable(Kind::Str),
        )),
        Some((field, _)) => Err(HogQlError::new(format!(
            "Unable to resolve field: {name}.{field}. The mock's `events.{name}` has only `properties`."
        ))),
    }
}

fn no_aggregates(e: &BExpr, clause: &str) -> Result<(), HogQlError> {
    if e.has_agg() {
        return Err(HogQlError::new(format!(
            "Aggregate functions cannot be used in {clause}; filter aggregates with HAVING"
        )));
    }
    Ok(())
}

fn check_filter(ty: &Ty, clause: &str) -> Result<(), HogQlError> {
    match ty.kind {
        Kind::Bool | Kind::Int | Kind::UInt | Kind::Nothing => Ok(()),
        _ => Err(HogQlError::new(format!(
            "Illegal type {} of column for filter in {clause}. Must be Bool or an integer.",
            ty.clickhouse_name("UTC")
        ))),
    }
}

/// In an aggregate query every column read outside an aggregate must be a GROUP BY key.
fn check_grouped(expr: &BExpr, keys: &[BExpr], what: &str) -> Result<(), HogQlError> {
    if keys.iter().any(|k| k == expr) {
        return Ok(());
    }
    match expr {
        BExpr::Col(_) | BExpr::Slot(_) | BExpr::Prop(..) => Err(HogQlError::new(format!(
            "Column `{what}` is not under an aggregate function and not in GROUP BY keys"
        ))),
        _ => expr
            .children()
            .into_iter()
            .try_for_each(|c| check_grouped(c, keys, what)),
    }
}

/// The columns a query's expressions can read.
enum Scope {
    Table(Table),
    /// A subquery's result: column names (the first of equal names wins) and types.
    Derived(Vec<(String, Ty)>),
}

impl Scope {
    /// `SELECT *`: every column with its name, reader and type.
    fn star(&self) -> Vec<(String, BExpr, Ty)> {
        match self {
            Scope::Table(t) => t
                .columns()
                .iter()
                .map(|(name, col)| ((*name).to_owned(), BExpr::Col(*col), col.ty()))
                .collect(),
            Scope::Derived(cols) => cols
                .iter()
                .enumerate()
                .map(|(i, (name, ty))| (name.clone(), BExpr::Slot(i), ty.clone()))
                .collect(),
        }
    }
}

struct Binder<'c, 'v> {
    scope: Scope,
    table_alias: Option<String>,
    ctx: &'c BindCtx<'v>,
    aliases: Vec<(String, BExpr, Ty)>,
    aggs: Vec<AggSpec>,
    allow_aggs: bool,
    in_agg: bool,
}

fn type_error(op: &str, a: &Ty, b: &Ty) -> HogQlError {
    let hint = if matches!(
        (&a.kind, &b.kind),
        (Kind::DateTime, Kind::Str) | (Kind::Str, Kind::DateTime)
    ) {
        ": compare DateTime values with toDateTime('2025-01-01T00:00:00Z') or toDateTime({placeholder}), not a bare string"
    } else if matches!(
        (&a.kind, &b.kind),
        (Kind::Date, Kind::Str) | (Kind::Str, Kind::Date)
    ) {
        ": compare Date values with toDate('2025-01-01') or toDate({placeholder}), not a bare string"
    } else {
        ""
    };
    HogQlError::new(format!(
        "Illegal types of arguments ({}, {}) of function {op}{hint}",
        a.clickhouse_name("UTC"),
        b.clickhouse_name("UTC")
    ))
}

impl Binder<'_, '_> {
    fn resolve_tz(&self, name: &str) -> Result<UtcOffset, HogQlError> {
        if name == self.ctx.project_tz_name {
            return Ok(self.ctx.project_tz);
        }
        if name == "Etc/UTC" || name == "GMT" {
            return Ok(UtcOffset::UTC);
        }
        crate::timefmt::parse_offset(name).ok_or_else(|| {
            HogQlError::new(format!(
                "Unknown time zone '{name}': the mock knows UTC, fixed offsets and the project's zone '{}'",
                self.ctx.project_tz_name
            ))
        })
    }

    /// GROUP BY / ORDER BY accept a 1-based position into the SELECT list.
    fn bind_positional(&mut self, e: &Expr, select: &[BExpr]) -> Result<(BExpr, Ty), HogQlError> {
        if let Expr::Literal(Literal::Int(n)) = e {
            let idx = usize::try_from(*n).ok().and_then(|n| n.checked_sub(1));
            return match idx.and_then(|i| select.get(i)) {
                Some(expr) => Ok((expr.clone(), Ty::null())),
                None => Err(HogQlError::new(format!(
                    "Position {n} is out of range of the SELECT list"
                ))),
            };
        }
        self.bind(e)
    }

    fn bind(&mut self, e: &Expr) -> Result<(BExpr, Ty), HogQlError> {
        let (bound, ty) = self.bind_inner(e)?;
        if bound.is_foldable() && !bound.is_const() {
            let ctx = RowCtx::constant(self.ctx.display_tz);
            let v = eval(&bound, &ctx)?.into_owned();
            return Ok((BExpr::Const(v), ty));
        }
        Ok((bound, ty))
    }

    fn bind_inner(&mut self, e: &Expr) -> Result<(BExpr, Ty), HogQlError> {
        match e {
            Expr::Literal(l) => Ok(literal(l)),
            Expr::Placeholder(name) => {
                let value = self.ctx.values.get(name).ok_or_else(|| {
                    HogQlError::new(format!(
                        "Placeholder {{{name}}} is not available in this context. Pass it in `values`."
                    ))
                })?;
                let v = json_to_val(value).ok_or_else(|| {
                    HogQlError::new(format!(
                        "Placeholder {{{name}}} has an unsupported value type"
                    ))
                })?;
                let ty = val_ty(&v);
                Ok((BExpr::Const(v), ty))
            }
            Expr::Field(chain) => self.field(chain),
            Expr::Index(base, key) => {
                let (base, _) = self.bind(base)?;
                let (key, _) = self.bind(key)?;
                let key = match key {
                    BExpr::Const(Val::Str(s)) => s.into_owned(),
                    BExpr::Const(Val::Int(i)) => i.to_string(),
                    _ => return Err(HogQlError::new("Property keys in [] must be constants")),
                };
                match base {
                    BExpr::Col(col @ (Col::Properties | Col::PersonProperties)) => {
                        Ok((BExpr::Prop(col, vec![key]), Ty::nullable(Kind::Str)))
                    }
                    BExpr::Prop(col, mut path) => {
                        path.push(key);
                        Ok((BExpr::Prop(col, path), Ty::nullable(Kind::Str)))
                    }
                    _ => Err(HogQlError::new(
                        "Array access is only supported on `properties` and `person.properties`",
                    )),
                }
            }
            Expr::Tuple(items) => {
                let mut bound = Vec::new();
                let mut tys = Vec::new();
                for item in items {
                    let (b, t) = self.bind(item)?;
                    bound.push(b);
                    tys.push(t);
                }
                Ok((BExpr::Tuple(bound), Ty::of(Kind::Tuple(tys))))
            }
            Expr::Star => Err(HogQlError::new(
                "`*` is only allowed in SELECT and count(*)",
            )),
            Expr::Call {
                name,
                params,
                args,
                distinct,
            } => self.call(name, params.as_deref(), args, *distinct),
            Expr::Not(inner) => {
                let (b, t) = self.bind(inner)?;
                check_filter(&t, "NOT")?;
                Ok((
                    BExpr::Not(Box::new(b)),
                    Ty::of(Kind::Bool).or_null(t.nullable),
                ))
            }
            Expr::And(items) | Expr::Or(items) => {
                let mut bound = Vec::new();
                let mut nullable = false;
                for item in items {
                    let (b, t) = self.bind(item)?;
                    check_filter(
                        &t,
                        if matches!(e, Expr::And(_)) {
                            "AND"
                        } else {
                            "OR"
                        },
                    )?;
                    nullable |= t.nullable;
                    bound.push(b);
                }
                let ty = Ty::of(Kind::Bool).or_null(nullable);
                Ok(if matches!(e, Expr::And(_)) {
                    (BExpr::And(bound), ty)
                } else {
                    (BExpr::Or(bound), ty)
                })
            }
            Expr::Cmp(op, l, r) => {
                let (lb, lt) = self.bind(l)?;
                let (rb, rt) = self.bind(r)?;
                // HogQL turns `x = NULL` into `isNull(x)`.
                if matches!(op, CmpOp::Eq | CmpOp::NotEq) {
                    for (side, other) in [(&rb, &lb), (&lb, &rb)] {
                        if matches!(side, BExpr::Const(Val::Null)) {
                            return Ok((
                                BExpr::IsNull {
                                    expr: Box::new(other.clone()),
                                    negated: *op == CmpOp::NotEq,
                                },
                                Ty::of(Kind::Bool),
                            ));
                        }
                    }
                }
                let tz = self.ctx.display_tz;
                let (lb, rb) = coerce_pair(lb, &lt, rb, &rt, op.function_name(), tz)?;
                let nullable =
                    lt.nullable || rt.nullable || tuple_nullable(&lt) || tuple_nullable(&rt);
                Ok((
                    BExpr::Cmp(*op, Box::new(lb), Box::new(rb)),
                    Ty::of(Kind::Bool).or_null(nullable),
                ))
            }
            Expr::In {
                expr,
                list,
                negated,
            } => {
                let (lb, lt) = self.bind(expr)?;
                let items: Vec<(BExpr, Ty)> = match list.as_ref() {
                    // `(a, b) IN (1, 2)` compares with one tuple; `x IN (1, 2)` with a list.
                    Expr::Tuple(items)
                        if !matches!(lt.kind, Kind::Tuple(_))
                            || items.iter().all(|i| matches!(i, Expr::Tuple(_))) =>
                    {
                        items
                            .iter()
                            .map(|i| self.bind(i))
                            .collect::<Result<_, _>>()?
                    }
                    other => {
                        let (b, t) = self.bind(other)?;
                        match (b, t) {
                            (BExpr::Const(Val::Tuple(vals)), _)
                                if !matches!(lt.kind, Kind::Tuple(_)) =>
                            {
                                vals.into_iter()
                                    .map(|v| {
                                        let t = val_ty(&v);
                                        (BExpr::Const(v), t)
                                    })
                                    .collect()
                            }
                            (b, t) => vec![(b, t)],
                        }
                    }
                };
                let mut bound = Vec::new();
                let mut lb = lb;
                for (ib, it) in items {
                    let (l, ib) = coerce_pair(lb.clone(), &lt, ib, &it, "in", self.ctx.display_tz)?;
                    // A Date compared with DateTimes is compared as its midnight.
                    if matches!((&lt.kind, &it.kind), (Kind::Date, Kind::DateTime)) {
                        lb = l;
                    }
                    bound.push(ib);
                }
                let ty = Ty::of(Kind::Bool).or_null(lt.nullable);
                Ok((
                    BExpr::In {
                        expr: Box::new(lb),
                        list: bound,
                        negated: *negated,
                    },
                    ty,
                ))
            }
            Expr::Like {
                expr,
                pattern,
                negated,
                case_insensitive,
            } => {
                let (lb, lt) = self.bind(expr)?;
                let (pb, pt) = self.bind(pattern)?;
                for t in [&lt, &pt] {
                    if !matches!(t.kind, Kind::Str | Kind::Nothing) {
                        return Err(type_error(
                            if *case_insensitive { "ilike" } else { "like" },
                            &lt,
                            &pt,
                        ));
                    }
                }
                Ok((
                    BExpr::Like {
                        expr: Box::new(lb),
                        pattern: Box::new(pb),
                        negated: *negated,
                        case_insensitive: *case_insensitive,
                    },
                    Ty::of(Kind::Bool).or_null(lt.nullable || pt.nullable),
                ))
            }
            Expr::IsNull { expr, negated } => {
                let (b, _) = self.bind(expr)?;
                Ok((
                    BExpr::IsNull {
                        expr: Box::new(b),
                        negated: *negated,
                    },
                    Ty::of(Kind::Bool),
                ))
            }
            Expr::Arith(op, l, r) => {
                let (lb, lt) = self.bind(l)?;
                let (rb, rt) = self.bind(r)?;
                if matches!(lt.kind, Kind::Interval(_)) || matches!(rt.kind, Kind::Interval(_)) {
                    return self.interval_arith(*op, (lb, lt), (rb, rt));
                }
                let ok = |t: &Ty| t.is_numeric() || t.kind == Kind::Nothing;
                if !ok(&lt) || !ok(&rt) {
                    return Err(type_error(arith_name(*op), &lt, &rt));
                }
                let kind =
                    if *op == ArithOp::Div || lt.kind == Kind::Float || rt.kind == Kind::Float {
                        Kind::Float
                    } else {
                        Kind::Int
                    };
                Ok((
                    BExpr::Arith(*op, Box::new(lb), Box::new(rb)),
                    Ty::of(kind).or_null(lt.nullable || rt.nullable),
                ))
            }
            Expr::Neg(inner) => {
                let (b, t) = self.bind(inner)?;
                if !t.is_numeric() && !matches!(t.kind, Kind::Nothing | Kind::Interval(_)) {
                    return Err(HogQlError::new(format!(
                        "Illegal type {} of argument of function negate",
                        t.clickhouse_name("UTC")
                    )));
                }
                Ok((BExpr::Neg(Box::new(b)), t))
            }
        }
    }

    fn field(&mut self, chain: &[String]) -> Result<(BExpr, Ty), HogQlError> {
        let mut chain: &[String] = chain;
        let qualifier = match &self.scope {
            Scope::Table(t) => Some(t.name()),
            Scope::Derived(_) => None,
        };
        let qualified = chain.len() >= 2
            && (self.table_alias.as_deref() == Some(chain[0].as_str())
                || qualifier == Some(chain[0].as_str()));
        if qualified {
            chain = &chain[1..];
        }
        // A qualified name is a column, never a SELECT alias.
        if !qualified
            && chain.len() == 1
            && let Some((_, expr, ty)) = self.aliases.iter().rev().find(|(a, _, _)| *a == chain[0])
        {
            return Ok((expr.clone(), ty.clone()));
        }
        let name = &chain[0];
        match &self.scope {
            Scope::Derived(cols) => {
                let Some(i) = cols.iter().position(|(n, _)| n == name) else {
                    let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
                    return Err(HogQlError::new(format!(
                        "Unable to resolve field: {name}. The subquery's columns are: {}.",
                        names.join(", ")
                    )));
                };
                if chain.len() > 1 {
                    return Err(HogQlError::new(format!(
                        "Can not access property `{}` on field `{name}` of a subquery: select it inside the subquery (e.g. `properties.{} AS x`)",
                        chain[1], chain[1]
                    )));
                }
                Ok((BExpr::Slot(i), cols[i].1.clone()))
            }
            Scope::Table(Table::Events) if name == "person" || name == "poe" => {
                person_field(name, &chain[1..])
            }
            Scope::Table(table) => {
                let table = *table;
                let Some(col) = table.lookup(name) else {
                    return Err(HogQlError::new(format!(
                        "Unable to resolve field: {name}. The mock's `{}` table has: {}.",
                        table.name(),
                        table
                            .columns()
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                };
                if chain.len() == 1 {
                    return Ok((BExpr::Col(col), col.ty()));
                }
                if col == Col::Properties {
                    return Ok((
                        BExpr::Prop(col, chain[1..].to_vec()),
                        Ty::nullable(Kind::Str),
                    ));
                }
                Err(HogQlError::new(format!(
                    "Can not access property `{}` on field `{name}`",
                    chain[1]
                )))
            }
        }
    }

    /// A time zone argument: a string constant naming UTC, a fixed offset or the project zone.
    fn tz_arg(
        &self,
        name: &str,
        arg: Option<&BExpr>,
        default: UtcOffset,
    ) -> Result<UtcOffset, HogQlError> {
        match arg {
            None => Ok(default),
            Some(BExpr::Const(Val::Str(s))) => self.resolve_tz(s),
            Some(_) => Err(HogQlError::new(format!(
                "{name}: the time zone argument must be a string constant"
            ))),
        }
    }

    fn call(
        &mut self,
        name: &str,
        params: Option<&[Expr]>,
        args: &[Expr],
        distinct: bool,
    ) -> Result<(BExpr, Ty), HogQlError> {
        if let Some((func, conditional)) = aggregate_name(name) {
            let levels = self.quantile_levels(name, func, conditional, params)?;
            return self.aggregate(name, func, conditional, levels, args, distinct);
        }
        if params.is_some() {
            return Err(HogQlError::new(format!(
                "Function '{name}' takes no parameters: only the aggregates quantile(level)(x) \
                 and quantiles(level, …)(x) have a parameter list"
            )));
        }
        if distinct {
            return Err(HogQlError::new(format!(
                "DISTINCT is only supported in aggregates, not in {name}(...)"
            )));
        }
        let name = canonical_name(name);
        match name {
            "now" => {
                arity(name, args, 0, 0)?;
                return Ok((
                    BExpr::Const(Val::DateTime(self.ctx.now)),
                    Ty::of(Kind::DateTime),
                ));
            }
            "today" => {
                arity(name, args, 0, 0)?;
                return Ok((
                    BExpr::Const(Val::Date(local_day(self.ctx.now, self.ctx.display_tz))),
                    Ty::of(Kind::Date),
                ));
            }
            _ => {}
        }
        let mut bound = Vec::new();
        let mut tys = Vec::new();
        for a in args {
            let (b, t) = self.bind(a)?;
            bound.push(b);
            tys.push(t);
        }
        let arg_ty = |i: usize| tys.get(i).cloned().unwrap_or_else(Ty::null);
        let display_tz = self.ctx.display_tz;
        if let Some(unit) = name
            .strip_prefix("toInterval")
            .and_then(IntervalUnit::parse)
        {
            arity(name, args, 1, 1)?;
            let t = arg_ty(0);
            if !matches!(t.kind, Kind::Int | Kind::UInt | Kind::Bool | Kind::Nothing) {
                return Err(arg_error(name, &t));
            }
            return Ok((
                BExpr::Func(Func::ToInterval(unit), bound),
                Ty::of(Kind::Interval(unit)).or_null(t.nullable || t.kind == Kind::Nothing),
            ));
        }
        let (func, ty) = match name {
            "toDateTime"
            | "toDateTime64"
            | "parseDateTime64BestEffort"
            | "parseDateTime64BestEffortOrNull" => {
                let (min, max) = if name == "toDateTime" { (1, 2) } else { (1, 3) };
                arity(name, args, min, max)?;
                if name != "toDateTime"
                    && bound.len() > 1
                    && !matches!(bound[1], BExpr::Const(Val::Int(0..=9)))
                {
                    return Err(HogQlError::new(format!(
                        "{name}: the precision argument must be an integer constant 0..=9"
                    )));
                }
                let tz_arg = if name == "toDateTime" {
                    bound.get(1)
                } else {
                    bound.get(2)
                };
                // PostHog adds the printer's zone (`_get_timezone`): the project's, or UTC when
                // `convertToProjectTimezone` is false — the display zone.
                let tz = self.tz_arg(name, tz_arg, display_tz)?;
                let t = arg_ty(0);
                if !matches!(
                    t.kind,
                    Kind::Str
                        | Kind::DateTime
                        | Kind::Date
                        | Kind::Int
                        | Kind::UInt
                        | Kind::Float
                        | Kind::Nothing
                ) {
                    return Err(arg_error(name, &t));
                }
                bound.truncate(1);
                (
                    Func::ToDateTime(tz),
                    Ty::of(Kind::DateTime)
                        .or_null(t.nullable || t.kind == Kind::Str || t.kind == Kind::Nothing),
                )
            }
            "toDate" => {
                arity(name, args, 1, 2)?;
                let tz = self.tz_arg(name, bound.get(1), display_tz)?;
                let t = arg_ty(0);
                if !matches!(
                    t.kind,
                    Kind::Str | Kind::DateTime | Kind::Date | Kind::Nothing
                ) {
                    return Err(arg_error(name, &t));
                }
                bound.truncate(1);
                (
                    Func::ToDate(tz),
                    Ty::of(Kind::Date)
                        .or_null(t.nullable || matches!(t.kind, Kind::Str | Kind::Nothing)),
                )
            }
            "toStartOfDay" | "toStartOfHour" | "toStartOfMinute" | "toStartOfMonth" => {
                arity(name, args, 1, 2)?;
                let tz = self.tz_arg(name, bound.get(1), display_tz)?;
                let t = date_arg(name, &arg_ty(0))?;
                bound.truncate(1);
                match name {
                    "toStartOfMonth" => (
                        Func::StartOfMonth(tz),
                        Ty::of(Kind::Date).or_null(t.nullable),
                    ),
                    _ => {
                        let unit_us = match name {
                            "toStartOfDay" => dates::DAY,
                            "toStartOfHour" => dates::HOUR,
                            _ => dates::MINUTE,
                        };
                        (
                            Func::StartOf { unit_us, tz },
                            Ty::of(Kind::DateTime).or_null(t.nullable),
                        )
                    }
                }
            }
            "toStartOfWeek" => {
                arity(name, args, 1, 3)?;
                let mode = match bound.get(1) {
                    None => 0,
                    Some(BExpr::Const(Val::Int(m @ 0..=9))) => *m,
                    Some(_) => {
                        return Err(HogQlError::new(
                            "toStartOfWeek: the mode argument must be an integer constant 0..=9",
                        ));
                    }
                };
                let tz = self.tz_arg(name, bound.get(2), display_tz)?;
                let t = date_arg(name, &arg_ty(0))?;
                bound.truncate(1);
                (
                    Func::StartOfWeek {
                        monday: mode % 2 == 1,
                        tz,
                    },
                    Ty::of(Kind::Date).or_null(t.nullable),
                )
            }
            "dateDiff" => {
                arity(name, args, 3, 4)?;
                // `arity` guarantees three or four arguments.
                let unit = match &bound[0] {
                    BExpr::Const(Val::Str(u)) => IntervalUnit::parse(u).ok_or_else(|| {
                        HogQlError::new(format!(
                            "dateDiff: unknown unit '{u}' (second, minute, hour, day, week, month, quarter or year)"
                        ))
                    })?,
                    _ => {
                        return Err(HogQlError::new(
                            "dateDiff: the unit argument must be a string constant",
                        ));
                    }
                };
                let tz = self.tz_arg(name, bound.get(3), display_tz)?;
                let (a, b) = (date_arg(name, &arg_ty(1))?, date_arg(name, &arg_ty(2))?);
                bound.truncate(3);
                bound.remove(0);
                (
                    Func::DateDiff(unit, tz),
                    Ty::of(Kind::Int).or_null(a.nullable || b.nullable),
                )
            }
            "toUUID" | "toUUIDOrNull" => {
                arity(name, args, 1, 1)?;
                let t = arg_ty(0);
                if !matches!(t.kind, Kind::Str | Kind::Uuid | Kind::Nothing) {
                    return Err(arg_error(name, &t));
                }
                (Func::ToUuid, Ty::of(Kind::Uuid).or_null(t.nullable))
            }
            "toString" => {
                arity(name, args, 1, 1)?;
                (
                    Func::ToString,
                    Ty::of(Kind::Str).or_null(arg_ty(0).nullable),
                )
            }
            "toInt" | "toInt64" | "toIntOrNull" => {
                arity(name, args, 1, 1)?;
                (Func::ToInt, Ty::nullable(Kind::Int))
            }
            "toFloat" | "toFloat64" | "toFloatOrNull" => {
                arity(name, args, 1, 1)?;
                (Func::ToFloat, Ty::nullable(Kind::Float))
            }
            "lower" | "upper" | "length" | "empty" | "notEmpty" => {
                arity(name, args, 1, 1)?;
                let t = arg_ty(0);
                if !matches!(t.kind, Kind::Str | Kind::Nothing) {
                    return Err(arg_error(name, &t));
                }
                match name {
                    "lower" => (Func::Lower, Ty::of(Kind::Str).or_null(t.nullable)),
                    "upper" => (Func::Upper, Ty::of(Kind::Str).or_null(t.nullable)),
                    "empty" => (Func::Empty, Ty::of(Kind::Bool).or_null(t.nullable)),
                    "notEmpty" => (Func::NotEmpty, Ty::of(Kind::Bool).or_null(t.nullable)),
                    _ => (Func::Length, Ty::of(Kind::UInt).or_null(t.nullable)),
                }
            }
            "concat" => {
                arity(name, args, 1, 64)?;
                if let Some(t) = tys
                    .iter()
                    .find(|t| matches!(t.kind, Kind::Tuple(_) | Kind::Array(_) | Kind::Interval(_)))
                {
                    return Err(arg_error(name, t));
                }
                (
                    Func::Concat,
                    Ty::of(Kind::Str).or_null(tys.iter().any(|t| t.nullable)),
                )
            }
            "JSONExtractString" | "JSONExtractInt" | "JSONExtractFloat" => {
                arity(name, args, 2, 64)?;
                let t = arg_ty(0);
                if !matches!(t.kind, Kind::Str | Kind::Nothing) {
                    return Err(arg_error(name, &t));
                }
                for k in &tys[1..] {
                    if !matches!(k.kind, Kind::Str | Kind::Int | Kind::UInt | Kind::Nothing) {
                        return Err(HogQlError::new(format!(
                            "Illegal type {} of a key argument of function {name}: keys are strings or 1-based indexes",
                            k.clickhouse_name("UTC")
                        )));
                    }
                }
                let nullable = tys.iter().any(|t| t.nullable);
                match name {
                    "JSONExtractString" => (
                        Func::JsonExtract(JsonAs::String),
                        Ty::of(Kind::Str).or_null(nullable),
                    ),
                    "JSONExtractInt" => (
                        Func::JsonExtract(JsonAs::Int),
                        Ty::of(Kind::Int).or_null(nullable),
                    ),
                    _ => (
                        Func::JsonExtract(JsonAs::Float),
                        Ty::of(Kind::Float).or_null(nullable),
                    ),
                }
            }
            "round" | "floor" | "ceil" => {
                arity(name, args, 1, 2)?;
                let t = arg_ty(0);
                if !t.is_numeric() && t.kind != Kind::Nothing {
                    return Err(arg_error(name, &t));
                }
                let digits = match bound.get(1) {
                    None => 0,
                    Some(BExpr::Const(Val::Int(d))) => (*d).clamp(-400, 400),
                    Some(_) => {
                        return Err(HogQlError::new(format!(
                            "{name}: the digits argument must be an integer constant"
                        )));
                    }
                };
                bound.truncate(1);
                let kind = match t.kind {
                    Kind::Float => Kind::Float,
                    Kind::UInt => Kind::UInt,
                    Kind::Nothing => Kind::Nothing,
                    _ => Kind::Int,
                };
                let func = match name {
                    "round" => Func::Round(digits),
                    "floor" => Func::Floor(digits),
                    _ => Func::Ceil(digits),
                };
                let nullable = t.nullable || kind == Kind::Nothing;
                (func, Ty { kind, nullable })
            }
            "intDiv" => {
                arity(name, args, 2, 2)?;
                let (a, b) = (arg_ty(0), arg_ty(1));
                for t in [&a, &b] {
                    if !t.is_numeric() && t.kind != Kind::Nothing {
                        return Err(type_error(name, &a, &b));
                    }
                }
                (
                    Func::IntDiv,
                    Ty::of(Kind::Int).or_null(a.nullable || b.nullable),
                )
            }
            "if" => {
                arity(name, args, 3, 3)?;
                check_filter(&arg_ty(0), "if")?;
                let (then_ty, else_ty) = (arg_ty(1), arg_ty(2));
                let kind = supertype(&then_ty.kind, &else_ty.kind).ok_or_else(|| {
                    HogQlError::new(format!(
                        "There is no supertype for types {}, {} of the branches of if()",
                        then_ty.clickhouse_name("UTC"),
                        else_ty.clickhouse_name("UTC")
                    ))
                })?;
                let else_branch = bound.pop();
                let then_branch = bound.pop();
                if let (Some(t), Some(e)) = (then_branch, else_branch) {
                    bound.push(cast(t, &then_ty.kind, &kind, display_tz));
                    bound.push(cast(e, &else_ty.kind, &kind, display_tz));
                }
                let nullable = then_ty.nullable || else_ty.nullable || kind == Kind::Nothing;
                (Func::If, Ty { kind, nullable })
            }
            "greatest" | "least" => {
                arity(name, args, 2, 64)?;
                let mut kind = Kind::Nothing;
                for t in &tys {
                    kind = supertype(&kind, &t.kind).ok_or_else(|| {
                        HogQlError::new(format!(
                            "There is no supertype for the arguments of {name}(): {}",
                            tys.iter()
                                .map(|t| t.clickhouse_name("UTC"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?;
                }
                let bound = bound
                    .into_iter()
                    .zip(&tys)
                    .map(|(b, t)| cast(b, &t.kind, &kind, display_tz))
                    .collect();
                let nullable = tys.iter().any(|t| t.nullable) || kind == Kind::Nothing;
                let func = if name == "greatest" {
                    Func::Greatest
                } else {
                    Func::Least
                };
                return Ok((BExpr::Func(func, bound), Ty { kind, nullable }));
            }
            "coalesce" | "ifNull" => {
                arity(name, args, 1, 64)?;
                let first = tys
                    .iter()
                    .find(|t| t.kind != Kind::Nothing)
                    .cloned()
                    .unwrap_or_else(Ty::null);
                let nullable = tys.iter().all(|t| t.nullable);
                (
                    Func::Coalesce,
                    Ty {
                        kind: first.kind,
                        nullable,
                    },
                )
            }
            "isNull" | "isNotNull" => {
                arity(name, args, 1, 1)?;
                let expr = bound.remove(0);
                return Ok((
                    BExpr::IsNull {
                        expr: Box::new(expr),
                        negated: name == "isNotNull",
                    },
                    Ty::of(Kind::Bool),
                ));
            }
            "tuple" => return Ok((BExpr::Tuple(bound), Ty::of(Kind::Tuple(tys)))),
            _ => {
                return Err(HogQlError::new(format!(
                    "Unsupported function call '{name}(...)'"
                )));
            }
        };
        Ok((BExpr::Func(func, bound), ty))
    }

    /// `date ± interval` and `interval + date`.
    fn interval_arith(
        &mut self,
        op: ArithOp,
        (lb, lt): (BExpr, Ty),
        (rb, rt): (BExpr, Ty),
    ) -> Result<(BExpr, Ty), HogQlError> {
        let datelike = |t: &Ty| matches!(t.kind, Kind::Date | Kind::DateTime | Kind::Nothing);
        let ((date, date_ty), (interval, interval_ty), negate) = match op {
            ArithOp::Add | ArithOp::Sub if datelike(&lt) && !datelike(&rt) => {
                ((lb, &lt), (rb, &rt), op == ArithOp::Sub)
            }
            ArithOp::Add if datelike(&rt) && !datelike(&lt) => ((rb, &rt), (lb, &lt), false),
            _ => return Err(type_error(arith_name(op), &lt, &rt)),
        };
        let Kind::Interval(unit) = interval_ty.kind else {
            return Err(type_error(arith_name(op), &lt, &rt));
        };
        let kind = match date_ty.kind {
            Kind::Date if unit.is_calendar() => Kind::Date,
            Kind::Nothing => Kind::Nothing,
            _ => Kind::DateTime,
        };
        let nullable = date_ty.nullable || interval_ty.nullable || kind == Kind::Nothing;
        Ok((
            BExpr::Func(
                Func::AddInterval {
                    negate,
                    tz: self.ctx.display_tz,
                },
                vec![date, interval],
            ),
            Ty { kind, nullable },
        ))
    }

    /// The levels of `quantile(l)(x)` / `quantiles(l, …)(x)`, checked as PostHog and ClickHouse
    /// check them: `quantile` and the `-If` forms take exactly one (PostHog's function table),
    /// `quantiles` at least one (ClickHouse); each a number constant in [0, 1]. Other
    /// aggregates take no parameter list (empty levels).
    fn quantile_levels(
        &mut self,
        name: &str,
        func: AggFunc,
        conditional: bool,
        params: Option<&[Expr]>,
    ) -> Result<Vec<f64>, HogQlError> {
        let exactly_one = func == AggFunc::Quantile || conditional;
        let params = match (func, params) {
            (AggFunc::Quantile | AggFunc::Quantiles, Some(p)) => p,
            (AggFunc::Quantile | AggFunc::Quantiles, None) => {
                return Err(HogQlError::new(format!(
                    "Aggregation '{name}' requires parameters in addition to arguments: the \
                     level{} in [0, 1], as in {name}({})(x)",
                    if exactly_one { "" } else { "s" },
                    if exactly_one {
                        "0.5"
                    } else {
                        "0.25, 0.5, 0.75"
                    }
                )));
            }
            (_, None) => return Ok(Vec::new()),
            (_, Some(_)) => {
                return Err(HogQlError::new(format!(
                    "Aggregation '{name}' takes no parameters: only quantile(level)(x) and \
                     quantiles(level, …)(x) have a parameter list"
                )));
            }
        };
        if exactly_one && params.len() != 1 {
            return Err(HogQlError::new(format!(
                "Aggregation '{name}' expects 1 parameter, found {}",
                params.len()
            )));
        }
        if params.is_empty() {
            return Err(HogQlError::new(format!(
                "Aggregation '{name}' expects at least 1 parameter, found 0"
            )));
        }
        // A parameter is a constant: an aggregate inside one is as nested as inside an argument.
        let outer = std::mem::replace(&mut self.in_agg, true);
        let bound: Result<Vec<(BExpr, Ty)>, HogQlError> =
            params.iter().map(|p| self.bind(p)).collect();
        self.in_agg = outer;
        bound?
            .into_iter()
            .zip(params)
            .map(|((b, _), written)| match b {
                BExpr::Const(Val::Int(i)) => level(name, i as f64, written),
                BExpr::Const(Val::Float(f)) => level(name, f, written),
                _ => Err(HogQlError::new(format!(
                    "Aggregation '{name}': the level {written} is not a number constant (a \
                     literal, or a placeholder bound to a number)"
                ))),
            })
            .collect()
    }

    fn aggregate(
        &mut self,
        name: &str,
        func: AggFunc,
        conditional: bool,
        levels: Vec<f64>,
        args: &[Expr],
        distinct: bool,
    ) -> Result<(BExpr, Ty), HogQlError> {
        if !self.allow_aggs {
            return Err(HogQlError::new(format!(
                "Aggregation '{name}' cannot be used in WHERE, GROUP BY or LIMIT"
            )));
        }
        if self.in_agg {
            return Err(HogQlError::new(format!(
                "Aggregation '{name}' cannot be nested inside another aggregation"
            )));
        }
        let func = match (func, distinct) {
            (AggFunc::Count, true) => AggFunc::CountDistinct,
            (f, false) | (f @ (AggFunc::CountDistinct | AggFunc::Min | AggFunc::Max), true) => f,
            (_, true) => {
                return Err(HogQlError::new(format!(
                    "DISTINCT is not supported in {name}(...): use count(DISTINCT x) or uniq(x)"
                )));
            }
        };
        let (value_args, cond_arg) = match (conditional, args.split_last()) {
            (true, Some((cond, rest))) => (rest, Some(cond)),
            (true, None) => {
                return Err(HogQlError::new(format!(
                    "Aggregation '{name}' takes a condition as its last argument"
                )));
            }
            (false, _) => (args, None),
        };
        let value_args = match (func, value_args) {
            (AggFunc::Count, [Expr::Star]) => &[][..],
            (_, v) => v,
        };
        let (min, max) = match func {
            AggFunc::Count => (0, 1),
            AggFunc::CountDistinct => (1, 16),
            AggFunc::ArgMax | AggFunc::ArgMin => (2, 2),
            _ => (1, 1),
        };
        if value_args.len() < min
            || value_args.len() > max
            || value_args.iter().any(|a| matches!(a, Expr::Star))
        {
            let expected = match (min, max) {
                (0, 1) => "at most one argument".to_owned(),
                (a, b) if a == b => format!("exactly {a} argument(s)"),
                (a, _) => format!("at least {a} argument(s)"),
            };
            return Err(HogQlError::new(format!(
                "Aggregation '{name}' takes {expected}{}",
                if conditional {
                    " before its condition"
                } else {
                    ""
                }
            )));
        }
        self.in_agg = true;
        let bound: Result<Vec<(BExpr, Ty)>, HogQlError> =
            value_args.iter().map(|a| self.bind(a)).collect();
        let cond = cond_arg.map(|c| self.bind(c)).transpose();
        self.in_agg = false;
        let mut bound = bound?;
        let cond = match cond? {
            Some((c, t)) => {
                check_filter(&t, name)?;
                Some(c)
            }
            None => None,
        };
        if func == AggFunc::CountDistinct && bound.len() > 1 {
            // `uniq(a, b)` counts distinct tuples.
            let (exprs, tys): (Vec<BExpr>, Vec<Ty>) = bound.drain(..).unzip();
            bound.push((BExpr::Tuple(exprs), Ty::of(Kind::Tuple(tys))));
        }
        let first = bound.first().map(|(_, t)| t.clone());
        let numeric = |t: &Ty| t.is_numeric() || t.kind == Kind::Nothing;
        let ty = match (func, &first) {
            (AggFunc::Count | AggFunc::CountDistinct, _) => Ty::of(Kind::UInt),
            (
                AggFunc::Min | AggFunc::Max | AggFunc::Any | AggFunc::ArgMax | AggFunc::ArgMin,
                Some(t),
            ) => t.clone(),
            // ClickHouse: sum(Float*) → Float64, sum(UInt*/Bool) → UInt64, sum(Int*) → Int64.
            (AggFunc::Sum, Some(t)) if numeric(t) => Ty::of(match t.kind {
                Kind::Float => Kind::Float,
                Kind::UInt | Kind::Bool => Kind::UInt,
                _ => Kind::Int,
            }),
            // ClickHouse: avg(NULL) is Nullable(Nothing); avg of a Nullable argument is
            // Nullable(Float64) (NULL over no non-NULL rows); otherwise Float64 (nan over no rows).
            (AggFunc::Avg, Some(t)) if t.kind == Kind::Nothing => Ty::null(),
            (AggFunc::Avg, Some(t)) if numeric(t) => Ty::of(Kind::Float).or_null(t.nullable),
            (AggFunc::Quantile | AggFunc::Quantiles, Some(t)) => quantile_type(func, t)
                .ok_or_else(|| {
                    HogQlError::new(format!(
                        "Illegal type {} of argument for aggregate function {name}: quantiles \
                         are taken of numbers, Date and DateTime values",
                        t.clickhouse_name("UTC")
                    ))
                })?,
            (_, Some(t)) => {
                return Err(HogQlError::new(format!(
                    "Illegal type {} of argument for aggregate function {name}",
                    t.clickhouse_name("UTC")
                )));
            }
            (_, None) => {
                return Err(HogQlError::new(format!(
                    "Aggregation '{name}' takes exactly one argument"
                )));
            }
        };
        let spec = AggSpec {
            func,
            levels,
            args: bound.into_iter().map(|(b, _)| b).collect(),
            cond,
            ty: ty.clone(),
        };
        let idx = match self.aggs.iter().position(|a| *a == spec) {
            Some(i) => i,
            None => {
                self.aggs.push(spec);
                self.aggs.len() - 1
            }
        };
        Ok((BExpr::Agg(idx), ty))
    }
}

/// The aggregate a function name denotes, and whether it is the `-If` form (`countIf`,
/// `sumIf`, …). Aggregate names are case-insensitive, as in ClickHouse.
fn aggregate_name(name: &str) -> Option<(AggFunc, bool)> {
    let lower = name.to_ascii_lowercase();
    let (base, conditional) = match lower.strip_suffix("if") {
        Some(base) if !base.is_empty() => (base, true),
        _ => (lower.as_str(), false),
    };
    let func = match base {
        "count" => AggFunc::Count,
        "min" => AggFunc::Min,
        "max" => AggFunc::Max,
        "sum" => AggFunc::Sum,
        "avg" => AggFunc::Avg,
        "uniq" | "uniqexact" => AggFunc::CountDistinct,
        "any" => AggFunc::Any,
        "argmax" => AggFunc::ArgMax,
        "argmin" => AggFunc::ArgMin,
        "quantile" => AggFunc::Quantile,
        "quantiles" => AggFunc::Quantiles,
        _ => return None,
    };
    Some((func, conditional))
}

/// A quantile level as ClickHouse accepts it: a number in [0, 1] (NaN is refused too).
fn level(name: &str, l: f64, written: &Expr) -> Result<f64, HogQlError> {
    if (0.0..=1.0).contains(&l) {
        Ok(l)
    } else {
        Err(HogQlError::new(format!(
            "Aggregation '{name}': the level {written} is out of range [0, 1]"
        )))
    }
}

/// The type of `quantile(l)(x)` / `quantiles(l, …)(x)` for an argument of type `t`, as
/// ClickHouse types it: Float64 for numbers, the argument's own type for DateTime64 and Date;
/// `quantile` of a Nullable argument is Nullable (NULL over no non-NULL rows), `quantiles`
/// is an `Array` of the item type (never Nullable). `quantile(NULL)` is a NULL of type
/// `Nullable(Nothing)`. `None` for types ClickHouse refuses (`quantiles(NULL)` among them).
fn quantile_type(func: AggFunc, t: &Ty) -> Option<Ty> {
    let item = match t.kind {
        Kind::Nothing if func == AggFunc::Quantile => return Some(Ty::null()),
        Kind::Bool | Kind::Int | Kind::UInt | Kind::Float => Kind::Float,
        Kind::DateTime => Kind::DateTime,
        Kind::Date => Kind::Date,
        _ => return None,
    };
    Some(if func == AggFunc::Quantiles {
        Ty::of(Kind::Array(Box::new(Ty::of(item))))
    } else {
        Ty::of(item).or_null(t.nullable)
    })
}

/// The name a scalar function is matched by: ClickHouse's case-insensitive functions and
/// aliases map to one spelling; everything else is case-sensitive.
fn canonical_name(name: &str) -> &str {
    match name.to_ascii_lowercase().as_str() {
        "now" => "now",
        "today" => "today",
        "if" => "if",
        "round" => "round",
        "floor" => "floor",
        "ceil" | "ceiling" => "ceil",
        "greatest" => "greatest",
        "least" => "least",
        "concat" => "concat",
        "lower" | "lcase" => "lower",
        "upper" | "ucase" => "upper",
        "length" => "length",
        "coalesce" => "coalesce",
        "empty" => "empty",
        "notempty" => "notEmpty",
        "datediff" | "date_diff" => "dateDiff",
        _ => name,
    }
}

fn arg_error(name: &str, t: &Ty) -> HogQlError {
    HogQlError::new(format!(
        "Illegal type {} of argument of function {name}",
        t.clickhouse_name("UTC")
    ))
}

/// Checks a Date/DateTime argument.
fn date_arg(name: &str, t: &Ty) -> Result<Ty, HogQlError> {
    if matches!(t.kind, Kind::Date | Kind::DateTime) {
        Ok(t.clone())
    } else if t.kind == Kind::Nothing {
        Ok(Ty::null())
    } else {
        Err(arg_error(name, t))
    }
}

/// The common type of two branches (`if`, `greatest`, `least`), as ClickHouse's supertype.
fn supertype(a: &Kind, b: &Kind) -> Option<Kind> {
    let numeric = |k: &Kind| matches!(k, Kind::Bool | Kind::Int | Kind::UInt | Kind::Float);
    Some(match (a, b) {
        (Kind::Nothing, k) | (k, Kind::Nothing) => k.clone(),
        (x, y) if x == y => x.clone(),
        (Kind::Float, y) | (y, Kind::Float) if numeric(y) => Kind::Float,
        (Kind::UInt, Kind::Bool) | (Kind::Bool, Kind::UInt) => Kind::UInt,
        (x, y) if numeric(x) && numeric(y) => Kind::Int,
        (Kind::Date, Kind::DateTime) | (Kind::DateTime, Kind::Date) => Kind::DateTime,
        _ => return None,
    })
}

/// Converts a value of kind `from` to the supertype `to`, so the result matches its type.
fn cast(e: BExpr, from: &Kind, to: &Kind, tz: UtcOffset) -> BExpr {
    match (from, to) {
        (f, t) if f == t => e,
        (Kind::Nothing, _) => e,
        (Kind::Bool | Kind::Int | Kind::UInt, Kind::Float) => BExpr::Func(Func::ToFloat, vec![e]),
        (Kind::Bool, Kind::Int | Kind::UInt) => BExpr::Func(Func::ToInt, vec![e]),
        (Kind::Date, Kind::DateTime) => date_as_datetime(e, tz),
        _ => e,
    }
}

/// A `Date` expression as the `DateTime` of its midnight in `tz`, folded when constant.
fn date_as_datetime(e: BExpr, tz: UtcOffset) -> BExpr {
    match e {
        BExpr::Const(v) => BExpr::Const(dates::date_to_datetime(&v, tz)),
        other => BExpr::Func(Func::DateToDateTime(tz), vec![other]),
    }
}

fn arith_name(op: ArithOp) -> &'static str {
    match op {
        ArithOp::Add => "plus",
        ArithOp::Sub => "minus",
        ArithOp::Mul => "multiply",
        ArithOp::Div => "divide",
        ArithOp::Mod => "modulo",
    }
}

fn arity(name: &str, args: &[Expr], min: usize, max: usize) -> Result<(), HogQlError> {
    if args.len() < min || args.len() > max {
        let expected = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(HogQlError::new(format!(
            "Function '{name}' expects {expected} argument(s), {} given",
            args.len()
        )));
    }
    Ok(())
}

fn tuple_nullable(t: &Ty) -> bool {
    match &t.kind {
        Kind::Tuple(items) => items.iter().any(|i| i.nullable || tuple_nullable(i)),
        _ => false,
    }
}

fn literal(l: &Literal) -> (BExpr, Ty) {
    let v = match l {
        Literal::Null => Val::Null,
        Literal::Bool(b) => Val::Bool(*b),
        Literal::Int(i) => Val::Int(*i),
        Literal::Float(f) => Val::Float(*f),
        Literal::Str(s) => Val::Str(Cow::Owned(s.clone())),
    };
    let ty = val_ty(&v);
    (BExpr::Const(v), ty)
}

/// The static type of a constant.
pub(crate) fn val_ty(v: &Val<'_>) -> Ty {
    match v {
        Val::Null => Ty::null(),
        Val::Bool(_) => Ty::of(Kind::Bool),
        Val::Int(_) => Ty::of(Kind::Int),
        Val::Float(_) => Ty::of(Kind::Float),
        Val::Str(_) => Ty::of(Kind::Str),
        Val::DateTime(_) => Ty::of(Kind::DateTime),
        Val::Date(_) => Ty::of(Kind::Date),
        Val::Uuid(_) => Ty::of(Kind::Uuid),
        Val::Interval(unit, _) => Ty::of(Kind::Interval(*unit)),
        Val::Tuple(items) => Ty::of(Kind::Tuple(items.iter().map(val_ty).collect())),
        Val::Array(items) => Ty::of(Kind::Array(Box::new(
            items.first().map_or_else(Ty::null, val_ty),
        ))),
    }
}

/// A `values` entry as a constant: strings, numbers, booleans, null, and arrays of them.
fn json_to_val(v: &Json) -> Option<Val<'static>> {
    Some(match v {
        Json::Null => Val::Null,
        Json::Bool(b) => Val::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Val::Int(i),
            None => Val::Float(n.as_f64()?),
        },
        Json::String(s) => Val::Str(Cow::Owned(s.clone())),
        Json::Array(items) => Val::Tuple(items.iter().map(json_to_val).collect::<Option<_>>()?),
        Json::Object(_) => return None,
    })
}

/// Checks that two operands can be compared and converts string constants compared with UUIDs
/// into UUID constants.
fn coerce_pair(
    l: BExpr,
    lt: &Ty,
    r: BExpr,
    rt: &Ty,
    op: &str,
    tz: UtcOffset,
) -> Result<(BExpr, BExpr), HogQlError> {
    if lt.kind == Kind::Nothing || rt.kind == Kind::Nothing {
        return Ok((l, r));
    }
    match (&lt.kind, &rt.kind) {
        (Kind::Tuple(lts), Kind::Tuple(rts)) => {
            if lts.len() != rts.len() {
                return Err(HogQlError::new(format!(
                    "Tuples of different sizes ({} and {}) cannot be compared in function {op}",
                    lts.len(),
                    rts.len()
                )));
            }
            match (tuple_items(&l), tuple_items(&r)) {
                (Some(lefts), Some(rights)) => {
                    let mut lo = Vec::new();
                    let mut ro = Vec::new();
                    for (((le, lt), re), rt) in lefts.into_iter().zip(lts).zip(rights).zip(rts) {
                        let (a, b) = coerce_pair(le, lt, re, rt, op, tz)?;
                        lo.push(a);
                        ro.push(b);
                    }
                    Ok((rebuild_tuple(lo), rebuild_tuple(ro)))
                }
                _ => {
                    for (lt, rt) in lts.iter().zip(rts) {
                        if !comparable(lt, rt) {
                            return Err(type_error(op, lt, rt));
                        }
                    }
                    Ok((l, r))
                }
            }
        }
        (Kind::Uuid, Kind::Str) => Ok((l, uuid_const(r)?)),
        (Kind::Str, Kind::Uuid) => Ok((uuid_const(l)?, r)),
        // ClickHouse compares a Date with a DateTime as the DateTime of its midnight.
        (Kind::Date, Kind::DateTime) => Ok((date_as_datetime(l, tz), r)),
        (Kind::DateTime, Kind::Date) => Ok((l, date_as_datetime(r, tz))),
        (a, b) if a == b => Ok((l, r)),
        _ if lt.is_numeric() && rt.is_numeric() => Ok((l, r)),
        _ => Err(type_error(op, lt, rt)),
    }
}

fn tuple_items(e: &BExpr) -> Option<Vec<BExpr>> {
    match e {
        BExpr::Tuple(items) => Some(items.clone()),
        BExpr::Const(Val::Tuple(vals)) => Some(vals.iter().cloned().map(BExpr::Const).collect()),
        _ => None,
    }
}

fn comparable(a: &Ty, b: &Ty) -> bool {
    match (&a.kind, &b.kind) {
        (Kind::Nothing, _) | (_, Kind::Nothing) => true,
        (Kind::Tuple(x), Kind::Tuple(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| comparable(p, q))
        }
        (Kind::Uuid, Kind::Str) | (Kind::Str, Kind::Uuid) => true,
        (p, q) if p == q => true,
        _ => a.is_numeric() && b.is_numeric(),
    }
}

/// Rebuilds a tuple, folding it back into a constant when every element is one.
fn rebuild_tuple(items: Vec<BExpr>) -> BExpr {
    if items.iter().all(BExpr::is_const) {
        BExpr::Const(Val::Tuple(
            items
                .into_iter()
                .map(|i| match i {
                    BExpr::Const(v) => v,
                    _ => Val::Null,
                })
                .collect(),
        ))
    } else {
        BExpr::Tuple(items)
    }
}

fn uuid_const(e: BExpr) -> Result<BExpr, HogQlError> {
    match e {
        BExpr::Const(Val::Str(s)) => Uuid::parse_str(&s)
            .map(|u| BExpr::Const(Val::Uuid(u)))
            .map_err(|_| HogQlError::new(format!("Cannot parse UUID from String '{s}'"))),
        other => Ok(other),
    }
}
