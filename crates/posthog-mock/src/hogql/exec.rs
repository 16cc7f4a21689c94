//! Query execution: choose an access path, filter, group, sort, limit and render.
//!
//! Events are stored sorted by `(timestamp, uuid)` (ClickHouse UUID order) with a secondary
//! permutation by `(created_at, uuid)`. Top-level `AND` conjuncts comparing the sort column
//! (or the `(column, uuid)` tuple) with constants narrow the scan to a range found by binary
//! search; the full WHERE is still evaluated on every row in the range, so pruning never
//! changes results. When ORDER BY equals the path's order the scan stops after LIMIT matches;
//! otherwise matching rows are sorted (top-k selection) with the storage position as the final
//! tie-break, which makes every ordering total and stable.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::ops::Range;

use time::UtcOffset;

use super::HogQlError;
use super::ast::CmpOp;
use super::bind::{AggFunc, AggSpec, BExpr, Col, OrderTerm, Plan, PlanSource, Table};
use super::eval::{Row, RowCtx, eval};
use super::quantile::Samples;
use super::value::{Kind, Ty, Val, compare, sort_cmp};
use crate::store::{EventStore, PersonStore, Session, SortColumn, UuidKey, uuid_key};

/// The tables a query can read.
pub(crate) struct Tables<'a> {
    pub events: &'a EventStore,
    pub persons: &'a PersonStore,
}

/// A result row.
pub(crate) type ResultRow = Vec<Val<'static>>;

/// Runs `plan` (its subqueries first): at most `fetch` result rows.
pub(crate) fn execute(
    plan: &Plan,
    tables: &Tables<'_>,
    fetch: usize,
    display_tz: UtcOffset,
) -> Result<Vec<ResultRow>, HogQlError> {
    match &plan.source {
        PlanSource::Table(_) => run(plan, &Source::new(plan, tables), fetch, display_tz),
        PlanSource::Subquery(inner) => {
            // An inner query without LIMIT is unlimited; the clamp is the top level's alone.
            let rows = execute(inner, tables, inner.limit.unwrap_or(usize::MAX), display_tz)?;
            run(plan, &Source::Rows(&rows), fetch, display_tz)
        }
    }
}

fn distinct_key(row: &[Val<'_>]) -> String {
    let mut key = String::new();
    for v in row {
        v.write_key(&mut key);
    }
    key
}

fn run(
    plan: &Plan,
    source: &Source<'_>,
    fetch: usize,
    display_tz: UtcOffset,
) -> Result<Vec<ResultRow>, HogQlError> {
    if plan.aggregate {
        return aggregate(plan, source, fetch, display_tz);
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut emit = |ctx: &RowCtx<'_>, out: &mut Vec<ResultRow>| -> Result<bool, HogQlError> {
        let row = render_row(plan, ctx)?;
        if plan.distinct && !seen.insert(distinct_key(&row)) {
            return Ok(out.len() < fetch);
        }
        out.push(row);
        Ok(out.len() < fetch)
    };
    if fetch == 0 {
        return Ok(out);
    }
    if source.order_matches_scan(&plan.order_by) {
        for rank in source.scan_ranks() {
            let row = source.row(rank);
            let ctx = RowCtx::new(Some(row), &[], display_tz);
            if passes(plan.where_.as_ref(), &ctx)? && !emit(&ctx, &mut out)? {
                break;
            }
        }
        return Ok(out);
    }
    // Filter, then sort only the matching rows.
    let mut matches: Vec<(Vec<Val<'static>>, usize)> = Vec::new();
    for rank in source.scan_ranks() {
        let row = source.row(rank);
        let ctx = RowCtx::new(Some(row), &[], display_tz);
        if passes(plan.where_.as_ref(), &ctx)? {
            let key = plan
                .order_by
                .iter()
                .map(|o| eval(&o.expr, &ctx).map(Val::into_owned))
                .collect::<Result<Vec<_>, _>>()?;
            matches.push((key, source.position(rank)));
        }
    }
    let cmp = |a: &(Vec<Val<'static>>, usize), b: &(Vec<Val<'static>>, usize)| {
        compare_keys(&plan.order_by, &a.0, &b.0).then(a.1.cmp(&b.1))
    };
    if !plan.distinct && fetch < matches.len() {
        matches.select_nth_unstable_by(fetch, cmp);
        matches.truncate(fetch);
    }
    matches.sort_unstable_by(cmp);
    for (_, pos) in matches {
        let row = source.row_at_position(pos);
        let ctx = RowCtx::new(Some(row), &[], display_tz);
        if !emit(&ctx, &mut out)? {
            break;
        }
    }
    Ok(out)
}

fn passes(filter: Option<&BExpr>, ctx: &RowCtx<'_>) -> Result<bool, HogQlError> {
    match filter {
        None => Ok(true),
        Some(f) => Ok(eval(f, ctx)?.is_true()),
    }
}

fn render_row(plan: &Plan, ctx: &RowCtx<'_>) -> Result<ResultRow, HogQlError> {
    plan.select
        .iter()
        .map(|e| Ok(eval(e, ctx)?.into_owned()))
        .collect()
}

fn compare_keys(order: &[OrderTerm], a: &[Val<'_>], b: &[Val<'_>]) -> Ordering {
    for (term, (x, y)) in order.iter().zip(a.iter().zip(b)) {
        // NULLS placement is independent of the direction.
        let o = match (x.is_null(), y.is_null()) {
            (false, false) => {
                let o = sort_cmp(x, y, term.nulls_first);
                if term.desc { o.reverse() } else { o }
            }
            _ => sort_cmp(x, y, term.nulls_first),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// Where rows come from and in which order the scan visits them.
enum Source<'a> {
    Events {
        store: &'a EventStore,
        column: SortColumn,
        range: Range<usize>,
        reverse: bool,
        /// ORDER BY is exactly this scan's order.
        ordered: bool,
    },
    Persons(&'a PersonStore),
    Sessions(&'a [Session]),
    /// A subquery's result, in its order.
    Rows(&'a [ResultRow]),
}

impl<'a> Source<'a> {
    fn new(plan: &Plan, tables: &Tables<'a>) -> Self {
        let table = match plan.source {
            PlanSource::Table(t) => t,
            // Subqueries are run by `execute`, which builds `Source::Rows` itself.
            PlanSource::Subquery(_) => return Source::Rows(&[]),
        };
        match table {
            Table::Persons => Source::Persons(tables.persons),
            Table::Sessions => Source::Sessions(tables.events.sessions()),
            Table::Events => {
                let store = tables.events;
                let conjuncts = plan.where_.as_ref().map(conjuncts).unwrap_or_default();
                let path = |column: SortColumn| {
                    let col = match column {
                        SortColumn::Timestamp => Col::Timestamp,
                        SortColumn::CreatedAt => Col::CreatedAt,
                    };
                    let bounds = Bounds::derive(&conjuncts, col);
                    (
                        column,
                        bounds.range(store, column),
                        scan_order(&plan.order_by, col),
                    )
                };
                let by_ts = path(SortColumn::Timestamp);
                let by_created = path(SortColumn::CreatedAt);
                let grouped = plan.aggregate || plan.distinct;
                let narrower = if by_created.1.len() < by_ts.1.len() {
                    by_created.clone()
                } else {
                    by_ts.clone()
                };
                let (column, range, reverse, ordered) = if grouped {
                    (narrower.0, narrower.1, false, false)
                } else if plan.order_by.is_empty() {
                    // Without ORDER BY any order is valid: scan the narrower range and stop early.
                    (narrower.0, narrower.1, false, true)
                } else if let Some(rev) = by_ts.2 {
                    (by_ts.0, by_ts.1, rev, true)
                } else if let Some(rev) = by_created.2 {
                    (by_created.0, by_created.1, rev, true)
                } else {
                    (narrower.0, narrower.1, false, false)
                };
                Source::Events {
                    store,
                    column,
                    range,
                    reverse,
                    ordered,
                }
            }
        }
    }

    /// Whether the scan order is the requested order, so the scan may stop at the limit.
    fn order_matches_scan(&self, order: &[OrderTerm]) -> bool {
        match self {
            Source::Events { ordered, .. } => *ordered,
            Source::Persons(_) | Source::Sessions(_) | Source::Rows(_) => order.is_empty(),
        }
    }

    fn scan_ranks(&self) -> Box<dyn Iterator<Item = usize> + '_> {
        match self {
            Source::Events {
                range,
                reverse: true,
                ..
            } => Box::new(range.clone().rev()),
            Source::Events { range, .. } => Box::new(range.clone()),
            Source::Persons(p) => Box::new(0..p.rows.len()),
            Source::Sessions(s) => Box::new(0..s.len()),
            Source::Rows(r) => Box::new(0..r.len()),
        }
    }

    fn position(&self, rank: usize) -> usize {
        match self {
            Source::Events { store, column, .. } => store.position(*column, rank),
            Source::Persons(_) | Source::Sessions(_) | Source::Rows(_) => rank,
        }
    }

    fn row(&self, rank: usize) -> Row<'a> {
        self.row_at_position(self.position(rank))
    }

    fn row_at_position(&self, pos: usize) -> Row<'a> {
        match self {
            Source::Events { store, .. } => Row::Event(store, store.get(pos)),
            Source::Persons(p) => Row::Person(&p.rows[pos]),
            Source::Sessions(s) => Row::Session(&s[pos]),
            Source::Rows(r) => Row::Values(&r[pos]),
        }
    }
}

/// `Some(false)` when ORDER BY is the ascending scan order of `col`, `Some(true)` when it is the
/// descending one, `None` otherwise.
fn scan_order(order: &[OrderTerm], col: Col) -> Option<bool> {
    match order {
        // A single ascending key: ties come out in storage order, as the general sort's
        // position tie-break would give them (only true for the timestamp path).
        [a] if a.expr == BExpr::Col(col) && !a.desc && col == Col::Timestamp => Some(false),
        [a, b]
            if a.expr == BExpr::Col(col) && b.expr == BExpr::Col(Col::Uuid) && a.desc == b.desc =>
        {
            Some(a.desc)
        }
        _ => None,
    }
}

fn conjuncts(e: &BExpr) -> Vec<&BExpr> {
    match e {
        BExpr::And(items) => items.iter().flat_map(conjuncts).collect(),
        other => vec![other],
    }
}

/// A bound on `(column, uuid)`: the uuid part absent means "any uuid".
#[derive(Debug, Clone, Copy)]
struct Bound {
    ts: i64,
    uuid: Option<UuidKey>,
    inclusive: bool,
}

#[derive(Debug, Default)]
struct Bounds {
    lower: Vec<Bound>,
    upper: Vec<Bound>,
}

impl Bounds {
    fn derive(conjuncts: &[&BExpr], col: Col) -> Bounds {
        let mut b = Bounds::default();
        for c in conjuncts {
            let BExpr::Cmp(op, l, r) = c else { continue };
            let (op, side, constant) = match (l.as_ref(), r.as_ref()) {
                (side, BExpr::Const(v)) => (*op, side, v),
                (BExpr::Const(v), side) => (op.flipped(), side, v),
                _ => continue,
            };
            let Some(bound) = key_bound(side, constant, col) else {
                continue;
            };
            // A prefix of a longer tuple only bounds inclusively.
            let (ts, uuid, exact) = bound;
            let strict = |inclusive: bool| Bound {
                ts,
                uuid,
                inclusive: inclusive || !exact,
            };
            match op {
                CmpOp::Gt => b.lower.push(strict(false)),
                CmpOp::GtEq => b.lower.push(strict(true)),
                CmpOp::Lt => b.upper.push(strict(false)),
                CmpOp::LtEq => b.upper.push(strict(true)),
                CmpOp::Eq => {
                    b.lower.push(strict(true));
                    b.upper.push(strict(true));
                }
                CmpOp::NotEq => {}
            }
        }
        b
    }

    fn range(&self, store: &EventStore, column: SortColumn) -> Range<usize> {
        let mut lo = 0;
        let mut hi = store.len();
        for b in &self.lower {
            let start = store.partition_point(column, |(ts, u)| before_lower(ts, u, b));
            lo = lo.max(start);
        }
        for b in &self.upper {
            let end = store.partition_point(column, |(ts, u)| within_upper(ts, u, b));
            hi = hi.min(end);
        }
        lo..hi.max(lo)
    }
}

/// True while the key is still below the lower bound (to be skipped).
fn before_lower(ts: i64, u: UuidKey, b: &Bound) -> bool {
    let o = match b.uuid {
        Some(bu) => (ts, u).cmp(&(b.ts, bu)),
        None => ts.cmp(&b.ts),
    };
    if b.inclusive {
        o == Ordering::Less
    } else {
        o != Ordering::Greater
    }
}

/// True while the key is still within the upper bound.
fn within_upper(ts: i64, u: UuidKey, b: &Bound) -> bool {
    let o = match b.uuid {
        Some(bu) => (ts, u).cmp(&(b.ts, bu)),
        None => ts.cmp(&b.ts),
    };
    if b.inclusive {
        o != Ordering::Greater
    } else {
        o == Ordering::Less
    }
}

/// If `side` is `col`, or a tuple starting with `col` (optionally followed by `uuid`), and
/// `constant` supplies matching DateTime/UUID values: the bound key and whether it covers the
/// whole comparison (`false` when it is only a prefix of it).
fn key_bound(side: &BExpr, constant: &Val<'_>, col: Col) -> Option<(i64, Option<UuidKey>, bool)> {
    match (side, constant) {
        (BExpr::Col(c), Val::DateTime(t)) if *c == col => Some((*t, None, true)),
        (BExpr::Tuple(items), Val::Tuple(vals))
            if items.len() == vals.len() && !items.is_empty() =>
        {
            let (BExpr::Col(c), Val::DateTime(t)) = (&items[0], &vals[0]) else {
                return None;
            };
            if *c != col {
                return None;
            }
            if items.len() == 1 {
                return Some((*t, None, true));
            }
            match (&items[1], &vals[1]) {
                (BExpr::Col(Col::Uuid), Val::Uuid(u)) => {
                    Some((*t, Some(uuid_key(u)), items.len() == 2))
                }
                _ => Some((*t, None, false)),
            }
        }
        _ => None,
    }
}

/// One group's running aggregates.
enum Acc {
    Count(u64),
    Distinct(HashSet<String>),
    Min(Option<Val<'static>>),
    Max(Option<Val<'static>>),
    SumInt(i64),
    SumFloat(f64),
    Avg(f64, u64),
    /// `any`: the storage position and value of the earliest non-NULL value seen.
    Any(Option<(usize, Val<'static>)>),
    /// `argMax`/`argMin`: the best `by`, its row's position, and that row's `x`.
    Arg {
        max: bool,
        best: Option<(Val<'static>, usize, Val<'static>)>,
    },
    /// `quantile`/`quantiles`: the group's values.
    Quantile(Samples),
}

impl Acc {
    fn new(spec: &AggSpec) -> Acc {
        match spec.func {
            AggFunc::Count => Acc::Count(0),
            AggFunc::CountDistinct => Acc::Distinct(HashSet::new()),
            AggFunc::Min => Acc::Min(None),
            AggFunc::Max => Acc::Max(None),
            AggFunc::Sum if spec.ty.kind == Kind::Float => Acc::SumFloat(0.0),
            AggFunc::Sum => Acc::SumInt(0),
            AggFunc::Avg => Acc::Avg(0.0, 0),
            AggFunc::Any => Acc::Any(None),
            AggFunc::ArgMax => Acc::Arg {
                max: true,
                best: None,
            },
            AggFunc::ArgMin => Acc::Arg {
                max: false,
                best: None,
            },
            AggFunc::Quantile | AggFunc::Quantiles => Acc::Quantile(Samples::default()),
        }
    }

    /// Adds the row at storage position `pos`. Results never depend on the scan order: ties
    /// of `any`/`argMax`/`argMin` go to the earliest position.
    fn update(&mut self, spec: &AggSpec, ctx: &RowCtx<'_>, pos: usize) -> Result<(), HogQlError> {
        if let Some(cond) = &spec.cond
            && !eval(cond, ctx)?.is_true()
        {
            return Ok(());
        }
        let v = match spec.args.first() {
            Some(a) => eval(a, ctx)?,
            None => Val::Bool(true),
        };
        // Aggregates skip NULLs, as in ClickHouse.
        if v.is_null() {
            return Ok(());
        }
        match self {
            Acc::Count(n) => *n += 1,
            Acc::Distinct(set) => {
                let mut key = String::new();
                v.write_key(&mut key);
                set.insert(key);
            }
            Acc::Min(cur) => {
                if cur
                    .as_ref()
                    .is_none_or(|c| compare(&v, c) == Some(Ordering::Less))
                {
                    *cur = Some(v.into_owned());
                }
            }
            Acc::Max(cur) => {
                if cur
                    .as_ref()
                    .is_none_or(|c| compare(&v, c) == Some(Ordering::Greater))
                {
                    *cur = Some(v.into_owned());
                }
            }
            Acc::SumInt(s) => {
                if let Val::Int(i) = v {
                    *s = s.wrapping_add(i);
                } else if let Val::Bool(b) = v {
                    *s += i64::from(b);
                }
            }
            Acc::SumFloat(s) => *s += numeric(&v),
            Acc::Avg(s, n) => {
                *s += numeric(&v);
                *n += 1;
            }
            Acc::Any(cur) => {
                if cur.as_ref().is_none_or(|(p, _)| pos < *p) {
                    *cur = Some((pos, v.into_owned()));
                }
            }
            Acc::Arg { max, best } => {
                let by = match spec.args.get(1) {
                    Some(b) => eval(b, ctx)?,
                    None => Val::Null,
                };
                if by.is_null() {
                    return Ok(());
                }
                let wanted = if *max {
                    Ordering::Greater
                } else {
                    Ordering::Less
                };
                let better = match best.as_ref() {
                    None => true,
                    Some((b, p, _)) => match compare(&by, b) {
                        Some(o) if o == wanted => true,
                        Some(Ordering::Equal) => pos < *p,
                        _ => false,
                    },
                };
                if better {
                    *best = Some((by.into_owned(), pos, v.into_owned()));
                }
            }
            Acc::Quantile(samples) => samples.push(&v),
        }
        Ok(())
    }

    fn finish(self, spec: &AggSpec) -> Val<'static> {
        let ty = &spec.ty;
        match self {
            Acc::Count(n) => Val::Int(i64::try_from(n).unwrap_or(i64::MAX)),
            Acc::Distinct(set) => Val::Int(i64::try_from(set.len()).unwrap_or(i64::MAX)),
            // ClickHouse returns the type's default over no rows, NULL if Nullable.
            Acc::Min(v) | Acc::Max(v) => v.unwrap_or_else(|| default_of(ty)),
            Acc::Any(v) => v.map_or_else(|| default_of(ty), |(_, v)| v),
            Acc::Arg { best, .. } => best.map_or_else(|| default_of(ty), |(_, _, x)| x),
            Acc::SumInt(s) => Val::Int(s),
            Acc::SumFloat(s) => Val::Float(s),
            // Over no (non-NULL) rows: NULL when Nullable, else nan (0 / 0), as in ClickHouse.
            Acc::Avg(_, 0) if ty.nullable => Val::Null,
            Acc::Avg(s, n) => Val::Float(s / n as f64),
            Acc::Quantile(samples) => {
                samples.finish(&spec.levels, ty, spec.func == AggFunc::Quantiles)
            }
        }
    }
}

fn numeric(v: &Val<'_>) -> f64 {
    match v {
        Val::Int(i) => *i as f64,
        Val::Float(f) => *f,
        Val::Bool(b) => f64::from(u8::from(*b)),
        _ => 0.0,
    }
}

fn default_of(ty: &Ty) -> Val<'static> {
    if ty.nullable {
        return Val::Null;
    }
    match &ty.kind {
        Kind::Bool => Val::Bool(false),
        Kind::Int | Kind::UInt => Val::Int(0),
        Kind::Float => Val::Float(0.0),
        Kind::Str => Val::Str(String::new().into()),
        Kind::DateTime => Val::DateTime(0),
        Kind::Date => Val::Date(0),
        Kind::Uuid => Val::Uuid(uuid::Uuid::nil()),
        Kind::Interval(unit) => Val::Interval(*unit, 0),
        Kind::Array(_) => Val::Array(Vec::new()),
        Kind::Nothing | Kind::Tuple(_) => Val::Null,
    }
}

struct Group {
    first: Option<usize>,
    accs: Vec<Acc>,
}

fn aggregate(
    plan: &Plan,
    source: &Source<'_>,
    fetch: usize,
    tz: UtcOffset,
) -> Result<Vec<ResultRow>, HogQlError> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    let new_group = |first: Option<usize>| Group {
        first,
        accs: plan.aggs.iter().map(Acc::new).collect(),
    };
    if plan.group_by.is_empty() {
        groups.push(new_group(None));
    }
    for rank in source.scan_ranks() {
        let row = source.row(rank);
        let ctx = RowCtx::new(Some(row), &[], tz);
        if !passes(plan.where_.as_ref(), &ctx)? {
            continue;
        }
        let g = if plan.group_by.is_empty() {
            0
        } else {
            let mut key = String::new();
            for k in &plan.group_by {
                eval(k, &ctx)?.write_key(&mut key);
            }
            match index.get(&key) {
                Some(g) => *g,
                None => {
                    groups.push(new_group(Some(source.position(rank))));
                    index.insert(key, groups.len() - 1);
                    groups.len() - 1
                }
            }
        };
        let pos = source.position(rank);
        let group = &mut groups[g];
        if group.first.is_none_or(|first| pos < first) {
            group.first = Some(pos);
        }
        for (acc, spec) in group.accs.iter_mut().zip(&plan.aggs) {
            acc.update(spec, &ctx, pos)?;
        }
    }
    // Finish every group, filter with HAVING, then sort and cut.
    let mut rows: Vec<(Vec<Val<'static>>, usize, ResultRow)> = Vec::new();
    let mut seen = HashSet::new();
    for (i, group) in groups.into_iter().enumerate() {
        let values: Vec<Val<'static>> = group
            .accs
            .into_iter()
            .zip(&plan.aggs)
            .map(|(acc, spec)| acc.finish(spec))
            .collect();
        let row = group.first.map(|pos| source.row_at_position(pos));
        let ctx = RowCtx::new(row, &values, tz);
        if !passes(plan.having.as_ref(), &ctx)? {
            continue;
        }
        let key = plan
            .order_by
            .iter()
            .map(|o| eval(&o.expr, &ctx).map(Val::into_owned))
            .collect::<Result<Vec<_>, _>>()?;
        let rendered = render_row(plan, &ctx)?;
        if plan.distinct && !seen.insert(distinct_key(&rendered)) {
            continue;
        }
        rows.push((key, i, rendered));
    }
    rows.sort_by(|a, b| compare_keys(&plan.order_by, &a.0, &b.0).then(a.1.cmp(&b.1)));
    Ok(rows.into_iter().take(fetch).map(|(_, _, r)| r).collect())
}
