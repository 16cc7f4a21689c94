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
use super::ast::{ArithOp, CmpOp, Expr, Literal, SelectItem, SelectQuery};
use super::eval::{RowCtx, eval};
use super::value::{Kind, Ty, Val};

/// PostHog's cap on rows returned by one query (`MAX_SELECT_RETURNED_ROWS`).
pub(crate) const MAX_LIMIT: usize = 50_000;

/// The tables the mock knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    Events,
    Persons,
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
    ElementsChain,
    Id,
    IsIdentified,
}

impl Table {
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
        }
    }

    fn name(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::Persons => "persons",
        }
    }
}

impl Col {
    pub(crate) fn ty(self) -> Ty {
        match self {
            Col::Uuid | Col::Id => Ty::of(Kind::Uuid),
            Col::Event | Col::DistinctId | Col::Properties | Col::ElementsChain => {
                Ty::of(Kind::Str)
            }
            Col::Timestamp | Col::CreatedAt => Ty::of(Kind::DateTime),
            Col::PersonId => Ty::nullable(Kind::Uuid),
            Col::IsIdentified => Ty::of(Kind::Bool),
        }
    }
}

/// Scalar functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    /// `toDateTime(x)`; wall times without an offset are read in the given offset.
    ToDateTime(UtcOffset),
    ToUuid,
    ToString,
    ToInt,
    ToFloat,
    Lower,
    Upper,
    Length,
    Coalesce,
}

/// Aggregate functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggFunc {
    Count,
    CountDistinct,
    Min,
    Max,
    Sum,
    Avg,
}

/// One aggregate computed per group.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AggSpec {
    pub func: AggFunc,
    pub arg: Option<BExpr>,
    pub ty: Ty,
}

/// A bound expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BExpr {
    Const(Val<'static>),
    Col(Col),
    /// A path inside `properties`, read as a string (PostHog's `properties.x` semantics).
    Prop(Vec<String>),
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
            BExpr::Const(_) | BExpr::Col(_) | BExpr::Prop(_) | BExpr::Agg(_) => Vec::new(),
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
            BExpr::Col(_) | BExpr::Prop(_) | BExpr::Agg(_) => false,
            BExpr::Const(_) => true,
            _ => self.children().iter().all(|c| c.is_const()),
        }
    }
}

/// One ORDER BY term of a plan.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OrderTerm {
    pub expr: BExpr,
    pub desc: bool,
    pub nulls_first: bool,
}

/// An executable query.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub table: Table,
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
    /// The query's own LIMIT, already clamped to [`MAX_LIMIT`]; `None` when it had none.
    pub limit: Option<usize>,
}

/// What binding needs to know besides the query.
pub(crate) struct BindCtx<'v> {
    pub values: &'v Map<String, Json>,
    /// The project's offset: wall times without an offset are read in it.
    pub project_tz: UtcOffset,
    /// The project's time zone name (accepted as a `toDateTime` time zone argument).
    pub project_tz_name: &'v str,
    /// The offset DateTime values are shown in (`toString`).
    pub display_tz: UtcOffset,
    /// `now()`, µs.
    pub now: i64,
}

/// The message PostHog gives for OFFSET on personal-API-key queries (§1 of posthog-api.md).
pub(crate) const OFFSET_MESSAGE: &str = "OFFSET is not supported on queries made with a personal API key. For pagination, use keyset pagination on the `timestamp` column, e.g. `WHERE timestamp > :last_seen_timestamp ORDER BY timestamp LIMIT N`, instead of OFFSET.";

/// Binds and checks a parsed query.
pub(crate) fn bind(q: &SelectQuery, ctx: &BindCtx<'_>) -> Result<Plan, HogQlError> {
    if q.offset.is_some() {
        return Err(HogQlError::new(OFFSET_MESSAGE));
    }
    let table = match q.table.as_str() {
        "events" => Table::Events,
        "persons" => Table::Persons,
        other => {
            return Err(HogQlError::new(format!(
                "Unknown table `{other}`. The mock serves `events` and `persons`."
            )));
        }
    };
    let mut b = Binder {
        table,
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
                for (name, col) in table.columns() {
                    columns.push((*name).to_owned());
                    types.push(col.ty());
                    select.push(BExpr::Col(*col));
                }
            }
            SelectItem::Expr { expr, alias } => {
                let (bound, ty) = b.bind(expr)?;
                let name = match (alias, expr) {
                    (Some(a), _) => a.clone(),
                    (None, Expr::Field(chain)) => chain.last().cloned().unwrap_or_default(),
                    (None, other) => other.to_string(),
                };
                columns.push(name);
                types.push(ty);
                select.push(bound);
            }
        }
    }
    // Aliases are visible in WHERE, GROUP BY, HAVING and ORDER BY.
    let mut pos = 0;
    for item in &q.select {
        match item {
            SelectItem::Star => pos += table.columns().len(),
            SelectItem::Expr { alias, .. } => {
                if let Some(a) = alias {
                    b.aliases
                        .push((a.clone(), select[pos].clone(), types[pos].clone()));
                }
                pos += 1;
            }
        }
    }

    b.allow_aggs = false;
    let where_ = match &q.where_ {
        Some(w) => {
            let (bound, ty) = b.bind(w)?;
            check_filter(&ty, "WHERE")?;
            Some(bound)
        }
        None => None,
    };
    let mut group_by = Vec::new();
    for g in &q.group_by {
        group_by.push(b.bind_positional(g, &select)?.0);
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
                    let n = usize::try_from(n).unwrap_or(usize::MAX);
                    // PostHog clamps silently: no error, no flag.
                    Some(n.min(MAX_LIMIT))
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
        table,
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
        BExpr::Col(_) | BExpr::Prop(_) => Err(HogQlError::new(format!(
            "Column `{what}` is not under an aggregate function and not in GROUP BY keys"
        ))),
        _ => expr
            .children()
            .into_iter()
            .try_for_each(|c| check_grouped(c, keys, what)),
    }
}

struct Binder<'c, 'v> {
    table: Table,
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
                    BExpr::Col(Col::Properties) => {
                        Ok((BExpr::Prop(vec![key]), Ty::nullable(Kind::Str)))
                    }
                    BExpr::Prop(mut path) => {
                        path.push(key);
                        Ok((BExpr::Prop(path), Ty::nullable(Kind::Str)))
                    }
                    _ => Err(HogQlError::new(
                        "Array access is only supported on `properties`",
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
                args,
                distinct,
            } => self.call(name, args, *distinct),
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
                let (lb, rb) = coerce_pair(lb, &lt, rb, &rt, op.function_name())?;
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
                for (ib, it) in items {
                    let (_, ib) = coerce_pair(lb.clone(), &lt, ib, &it, "in")?;
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
                if !t.is_numeric() && t.kind != Kind::Nothing {
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
        if chain.len() >= 2
            && (self.table_alias.as_deref() == Some(chain[0].as_str())
                || chain[0] == self.table.name())
        {
            chain = &chain[1..];
        }
        if chain.len() == 1
            && let Some((_, expr, ty)) = self.aliases.iter().find(|(a, _, _)| *a == chain[0])
        {
            return Ok((expr.clone(), ty.clone()));
        }
        let name = &chain[0];
        let Some((_, col)) = self.table.columns().iter().find(|(n, _)| n == name) else {
            return Err(HogQlError::new(format!(
                "Unable to resolve field: {name}. The mock's `{}` table has: {}.",
                self.table.name(),
                self.table
                    .columns()
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        if chain.len() == 1 {
            return Ok((BExpr::Col(*col), col.ty()));
        }
        if *col == Col::Properties {
            return Ok((BExpr::Prop(chain[1..].to_vec()), Ty::nullable(Kind::Str)));
        }
        Err(HogQlError::new(format!(
            "Can not access property `{}` on field `{name}`",
            chain[1]
        )))
    }

    fn call(
        &mut self,
        name: &str,
        args: &[Expr],
        distinct: bool,
    ) -> Result<(BExpr, Ty), HogQlError> {
        let lower = name.to_ascii_lowercase();
        let agg = match lower.as_str() {
            "count" => Some(if distinct {
                AggFunc::CountDistinct
            } else {
                AggFunc::Count
            }),
            "min" => Some(AggFunc::Min),
            "max" => Some(AggFunc::Max),
            "sum" => Some(AggFunc::Sum),
            "avg" => Some(AggFunc::Avg),
            _ => None,
        };
        if let Some(func) = agg {
            return self.aggregate(name, func, args);
        }
        if distinct {
            return Err(HogQlError::new(format!(
                "DISTINCT is only supported in aggregates, not in {name}(...)"
            )));
        }
        if lower == "now" {
            arity(name, args, 0, 0)?;
            return Ok((
                BExpr::Const(Val::DateTime(self.ctx.now)),
                Ty::of(Kind::DateTime),
            ));
        }
        let mut bound = Vec::new();
        let mut tys = Vec::new();
        for a in args {
            let (b, t) = self.bind(a)?;
            bound.push(b);
            tys.push(t);
        }
        let arg_ty = |i: usize| tys.get(i).cloned().unwrap_or_else(Ty::null);
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
                let tz = match tz_arg {
                    None => self.ctx.project_tz,
                    Some(BExpr::Const(Val::Str(s))) => self.resolve_tz(s)?,
                    Some(_) => {
                        return Err(HogQlError::new(format!(
                            "{name}: the time zone argument must be a string constant"
                        )));
                    }
                };
                let t = arg_ty(0);
                if !matches!(
                    t.kind,
                    Kind::Str
                        | Kind::DateTime
                        | Kind::Int
                        | Kind::UInt
                        | Kind::Float
                        | Kind::Nothing
                ) {
                    return Err(HogQlError::new(format!(
                        "Illegal type {} of argument of function {name}",
                        t.clickhouse_name("UTC")
                    )));
                }
                bound.truncate(1);
                (
                    Func::ToDateTime(tz),
                    Ty::of(Kind::DateTime)
                        .or_null(t.nullable || t.kind == Kind::Str || t.kind == Kind::Nothing),
                )
            }
            "toUUID" | "toUUIDOrNull" => {
                arity(name, args, 1, 1)?;
                let t = arg_ty(0);
                if !matches!(t.kind, Kind::Str | Kind::Uuid | Kind::Nothing) {
                    return Err(HogQlError::new(format!(
                        "Illegal type {} of argument of function {name}",
                        t.clickhouse_name("UTC")
                    )));
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
            "lower" | "upper" | "length" => {
                arity(name, args, 1, 1)?;
                let t = arg_ty(0);
                if !matches!(t.kind, Kind::Str | Kind::Nothing) {
                    return Err(HogQlError::new(format!(
                        "Illegal type {} of argument of function {name}",
                        t.clickhouse_name("UTC")
                    )));
                }
                match name {
                    "lower" => (Func::Lower, Ty::of(Kind::Str).or_null(t.nullable)),
                    "upper" => (Func::Upper, Ty::of(Kind::Str).or_null(t.nullable)),
                    _ => (Func::Length, Ty::of(Kind::UInt).or_null(t.nullable)),
                }
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

    fn aggregate(
        &mut self,
        name: &str,
        func: AggFunc,
        args: &[Expr],
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
        let arg = match (func, args) {
            (AggFunc::Count, []) | (AggFunc::Count, [Expr::Star]) => None,
            (_, [a]) if !matches!(a, Expr::Star) => {
                self.in_agg = true;
                let r = self.bind(a);
                self.in_agg = false;
                Some(r?)
            }
            _ => {
                return Err(HogQlError::new(format!(
                    "Aggregation '{name}' takes exactly one argument"
                )));
            }
        };
        let ty = match (func, &arg) {
            (AggFunc::Count | AggFunc::CountDistinct, _) => Ty::of(Kind::UInt),
            (AggFunc::Min | AggFunc::Max, Some((_, t))) => t.clone(),
            (AggFunc::Sum, Some((_, t))) if t.is_numeric() || t.kind == Kind::Nothing => {
                Ty::of(if t.kind == Kind::Float {
                    Kind::Float
                } else {
                    Kind::Int
                })
            }
            (AggFunc::Avg, Some((_, t))) if t.is_numeric() || t.kind == Kind::Nothing => {
                Ty::nullable(Kind::Float)
            }
            (_, Some((_, t))) => {
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
            arg: arg.map(|(b, _)| b),
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
        Val::Uuid(_) => Ty::of(Kind::Uuid),
        Val::Tuple(items) => Ty::of(Kind::Tuple(items.iter().map(val_ty).collect())),
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
                        let (a, b) = coerce_pair(le, lt, re, rt, op)?;
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
