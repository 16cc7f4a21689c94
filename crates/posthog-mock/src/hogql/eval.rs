//! Evaluation of bound expressions against one row (or one group).

use std::borrow::Cow;
use std::cell::OnceCell;
use std::cmp::Ordering;

use serde_json::{Map, Value as Json};
use time::UtcOffset;
use uuid::Uuid;

use super::HogQlError;
use super::ast::{ArithOp, CmpOp};
use super::bind::{BExpr, Col, Func, JsonAs};
use super::dates;
use super::json;
use super::value::{Val, compare};
use crate::store::{EventStore, Session, StoredEvent, StoredPerson};
use crate::timefmt::{midnight, parse_datetime};

/// The row an expression reads.
#[derive(Clone, Copy)]
pub(crate) enum Row<'r> {
    Event(&'r EventStore, &'r StoredEvent),
    Person(&'r StoredPerson),
    Session(&'r Session),
    /// A subquery's result row.
    Values(&'r [Val<'static>]),
}

/// Everything an expression may read: the row, its properties and person properties (each
/// materialised at most once), and the current group's aggregate values.
pub(crate) struct RowCtx<'r> {
    row: Option<Row<'r>>,
    props: OnceCell<Cow<'r, Map<String, Json>>>,
    person_props: OnceCell<Cow<'r, Map<String, Json>>>,
    aggs: &'r [Val<'static>],
    display_tz: UtcOffset,
}

impl<'r> RowCtx<'r> {
    /// A context with no row, for constant folding.
    pub(crate) fn constant(display_tz: UtcOffset) -> RowCtx<'static> {
        RowCtx {
            row: None,
            props: OnceCell::new(),
            person_props: OnceCell::new(),
            aggs: &[],
            display_tz,
        }
    }

    /// A context over one row.
    pub(crate) fn new(
        row: Option<Row<'r>>,
        aggs: &'r [Val<'static>],
        display_tz: UtcOffset,
    ) -> Self {
        RowCtx {
            row,
            props: OnceCell::new(),
            person_props: OnceCell::new(),
            aggs,
            display_tz,
        }
    }

    fn properties(&self) -> Option<&Map<String, Json>> {
        let row = self.row?;
        if !matches!(row, Row::Event(..) | Row::Person(_)) {
            return None;
        }
        Some(self.props.get_or_init(|| match row {
            Row::Event(store, e) => store.properties(e),
            Row::Person(p) => Cow::Borrowed(&p.person.properties),
            // Excluded above: only events and persons have properties.
            Row::Session(_) | Row::Values(_) => Cow::Owned(Map::new()),
        }))
    }

    /// The JSON document behind `col` (`properties` or `person.properties`), if the row has it.
    fn json_column(&self, col: Col) -> Option<&Map<String, Json>> {
        match col {
            Col::Properties => self.properties(),
            Col::PersonProperties => self.person_properties(),
            _ => None,
        }
    }

    /// The event's person properties as of the event (events rows only).
    fn person_properties(&self) -> Option<&Map<String, Json>> {
        let Some(Row::Event(store, e)) = self.row else {
            return None;
        };
        Some(self.person_props.get_or_init(|| store.person_properties(e)))
    }

    /// Column `i` of a subquery row.
    fn slot(&self, i: usize) -> Val<'r> {
        match self.row {
            Some(Row::Values(values)) => values.get(i).map_or(Val::Null, Val::borrowed),
            _ => Val::Null,
        }
    }

    fn column(&self, col: Col) -> Val<'r> {
        let Some(row) = self.row else {
            // Only reachable for constants; columns never fold.
            return Val::Null;
        };
        match (row, col) {
            (Row::Event(_, e), Col::Uuid) => Val::Uuid(e.uuid),
            (Row::Event(_, e), Col::Event) => Val::Str(Cow::Borrowed(&e.event)),
            (Row::Event(_, e), Col::DistinctId) => Val::Str(Cow::Borrowed(&e.distinct_id)),
            (Row::Event(_, e), Col::Timestamp) => Val::DateTime(e.ts),
            (Row::Event(_, e), Col::CreatedAt) => Val::DateTime(e.created),
            (Row::Event(_, e), Col::PersonId) => e.person_id.map_or(Val::Null, Val::Uuid),
            (Row::Event(store, e), Col::ElementsChain) => Val::Str(store.elements_chain(e)),
            (Row::Person(p), Col::Id) => Val::Uuid(p.person.id),
            (Row::Person(p), Col::CreatedAt) => Val::DateTime(p.created),
            (Row::Person(p), Col::IsIdentified) => Val::Bool(p.person.is_identified),
            (Row::Session(s), Col::SessionId) => Val::Str(Cow::Borrowed(&s.id)),
            (Row::Session(s), Col::DistinctId) => Val::Str(Cow::Borrowed(&s.distinct_id)),
            (Row::Session(s), Col::SessionStart) => Val::DateTime(s.start),
            (Row::Session(s), Col::SessionEnd) => Val::DateTime(s.end),
            (Row::Session(s), Col::SessionDuration) => Val::Int(s.duration_seconds()),
            (Row::Session(s), Col::PageviewCount) => Val::Int(count(s.pageviews)),
            (Row::Session(s), Col::AutocaptureCount) => Val::Int(count(s.autocaptures)),
            (Row::Session(s), Col::EntryUrl) => s
                .entry_url
                .as_deref()
                .map_or(Val::Null, |u| Val::Str(Cow::Borrowed(u))),
            (Row::Session(s), Col::EndUrl) => s
                .end_url
                .as_deref()
                .map_or(Val::Null, |u| Val::Str(Cow::Borrowed(u))),
            (Row::Session(s), Col::IsBounce) => Val::Bool(s.is_bounce()),
            // `properties` and `person.properties` are handled by the caller (they borrow
            // from the context).
            _ => Val::Null,
        }
    }
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Evaluates `e` in `ctx`.
pub(crate) fn eval<'c>(e: &'c BExpr, ctx: &'c RowCtx<'_>) -> Result<Val<'c>, HogQlError> {
    Ok(match e {
        BExpr::Const(v) => v.borrowed(),
        BExpr::Col(c @ (Col::Properties | Col::PersonProperties)) => match ctx.json_column(*c) {
            // Serialising a map of JSON values cannot fail.
            Some(m) => Val::Str(Cow::Owned(serde_json::to_string(m).unwrap_or_default())),
            None => Val::Null,
        },
        BExpr::Col(c) => ctx.column(*c),
        BExpr::Slot(i) => ctx.slot(*i),
        BExpr::Prop(c, path) => match ctx.json_column(*c) {
            Some(m) => property(m, path),
            None => Val::Null,
        },
        BExpr::Tuple(items) => Val::Tuple(
            items
                .iter()
                .map(|i| eval(i, ctx))
                .collect::<Result<_, _>>()?,
        ),
        BExpr::Agg(i) => ctx.aggs.get(*i).map_or(Val::Null, Val::borrowed),
        BExpr::Func(f, args) => func(*f, args, ctx)?,
        BExpr::Not(inner) => match eval(inner, ctx)? {
            Val::Null => Val::Null,
            v => Val::Bool(!v.is_true()),
        },
        BExpr::And(items) => {
            let mut saw_null = false;
            for item in items {
                match eval(item, ctx)? {
                    Val::Null => saw_null = true,
                    v if !v.is_true() => return Ok(Val::Bool(false)),
                    _ => {}
                }
            }
            if saw_null { Val::Null } else { Val::Bool(true) }
        }
        BExpr::Or(items) => {
            let mut saw_null = false;
            for item in items {
                match eval(item, ctx)? {
                    Val::Null => saw_null = true,
                    v if v.is_true() => return Ok(Val::Bool(true)),
                    _ => {}
                }
            }
            if saw_null {
                Val::Null
            } else {
                Val::Bool(false)
            }
        }
        BExpr::Cmp(op, l, r) => cmp(*op, l, r, ctx)?,
        BExpr::In {
            expr,
            list,
            negated,
        } => {
            let v = eval(expr, ctx)?;
            if v.is_null() {
                return Ok(Val::Null);
            }
            let mut found = false;
            for item in list {
                if compare(&v, &eval(item, ctx)?) == Some(Ordering::Equal) {
                    found = true;
                    break;
                }
            }
            Val::Bool(found != *negated)
        }
        BExpr::Like {
            expr,
            pattern,
            negated,
            case_insensitive,
        } => {
            let (v, p) = (eval(expr, ctx)?, eval(pattern, ctx)?);
            match (v, p) {
                (Val::Str(s), Val::Str(p)) => {
                    let m = if *case_insensitive {
                        like(&s.to_lowercase(), &p.to_lowercase())
                    } else {
                        like(&s, &p)
                    };
                    Val::Bool(m != *negated)
                }
                _ => Val::Null,
            }
        }
        BExpr::IsNull { expr, negated } => Val::Bool(eval(expr, ctx)?.is_null() != *negated),
        BExpr::Arith(op, l, r) => arith(*op, eval(l, ctx)?, eval(r, ctx)?)?,
        BExpr::Neg(inner) => match eval(inner, ctx)? {
            Val::Int(i) => Val::Int(i.wrapping_neg()),
            Val::Interval(unit, n) => n
                .checked_neg()
                .map_or(Val::Null, |n| Val::Interval(unit, n)),
            Val::Float(f) => Val::Float(-f),
            Val::Bool(b) => Val::Int(-i64::from(b)),
            _ => Val::Null,
        },
    })
}

/// Evaluates a comparison. Tuples are compared element by element, evaluating lazily, so
/// the keyset predicate `(timestamp, uuid) > (…)` allocates nothing per row.
fn cmp<'c>(
    op: CmpOp,
    l: &'c BExpr,
    r: &'c BExpr,
    ctx: &'c RowCtx<'_>,
) -> Result<Val<'c>, HogQlError> {
    let ord = match (l, r) {
        (BExpr::Tuple(ls), BExpr::Const(Val::Tuple(rs))) if ls.len() == rs.len() => {
            let mut ord = Some(Ordering::Equal);
            for (le, rv) in ls.iter().zip(rs) {
                match compare(&eval(le, ctx)?, rv) {
                    Some(Ordering::Equal) => continue,
                    other => {
                        ord = other;
                        break;
                    }
                }
            }
            ord
        }
        _ => compare(&eval(l, ctx)?, &eval(r, ctx)?),
    };
    Ok(match ord {
        None => Val::Null,
        Some(o) => Val::Bool(match op {
            CmpOp::Eq => o == Ordering::Equal,
            CmpOp::NotEq => o != Ordering::Equal,
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::LtEq => o != Ordering::Greater,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::GtEq => o != Ordering::Less,
        }),
    })
}

/// `properties.a.b` as PostHog's compiled SQL returns it (see [`json::property_text`]): the
/// value's `JSONExtractRaw` text with the outer quotes cut, so strings keep their JSON escapes
/// and numbers are ClickHouse's re-rendering; JSON null or a missing key is NULL. Integer path
/// segments index arrays (1-based, as ClickHouse's `JSONExtract*`).
fn property<'c>(map: &'c Map<String, Json>, path: &[String]) -> Val<'c> {
    let mut current = match map.get(&path[0]) {
        Some(v) => v,
        None => return Val::Null,
    };
    for seg in &path[1..] {
        let next = match current {
            Json::Object(m) => m.get(seg),
            Json::Array(items) => seg
                .parse::<usize>()
                .ok()
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| items.get(i)),
            _ => None,
        };
        match next {
            Some(v) => current = v,
            None => return Val::Null,
        }
    }
    json::property_text(current).map_or(Val::Null, Val::Str)
}

fn func<'c>(f: Func, args: &'c [BExpr], ctx: &'c RowCtx<'_>) -> Result<Val<'c>, HogQlError> {
    let arg = |i: usize| -> Result<Val<'c>, HogQlError> {
        match args.get(i) {
            Some(a) => eval(a, ctx),
            None => Ok(Val::Null),
        }
    };
    Ok(match f {
        Func::ToDateTime(tz) => match arg(0)? {
            Val::Str(s) => parse_datetime(&s, tz).map_or(Val::Null, Val::DateTime),
            Val::DateTime(t) => Val::DateTime(t),
            Val::Date(d) => midnight(d, tz).map_or(Val::Null, Val::DateTime),
            Val::Int(secs) => Val::DateTime(secs.saturating_mul(1_000_000)),
            Val::Float(secs) if secs.is_finite() => Val::DateTime((secs * 1e6).round() as i64),
            _ => Val::Null,
        },
        Func::ToUuid => match arg(0)? {
            Val::Str(s) => match Uuid::parse_str(&s) {
                Ok(u) => Val::Uuid(u),
                Err(_) => {
                    return Err(HogQlError::new(format!(
                        "Cannot parse UUID from String '{s}'"
                    )));
                }
            },
            Val::Uuid(u) => Val::Uuid(u),
            _ => Val::Null,
        },
        Func::ToString => match arg(0)? {
            Val::Str(s) => Val::Str(s),
            v => v
                .to_clickhouse_string(ctx.display_tz)
                .map_or(Val::Null, |s| Val::Str(Cow::Owned(s))),
        },
        Func::ToInt => match arg(0)? {
            Val::Int(i) => Val::Int(i),
            Val::Bool(b) => Val::Int(i64::from(b)),
            Val::Float(f) if f.is_finite() => Val::Int(f.trunc() as i64),
            Val::Str(s) => s.trim().parse::<i64>().map_or(Val::Null, Val::Int),
            Val::DateTime(t) => Val::Int(t.div_euclid(1_000_000)),
            Val::Date(d) => Val::Int(d),
            _ => Val::Null,
        },
        Func::ToFloat => match arg(0)? {
            Val::Int(i) => Val::Float(i as f64),
            Val::Bool(b) => Val::Float(f64::from(u8::from(b))),
            Val::Float(f) => Val::Float(f),
            Val::Str(s) => s.trim().parse::<f64>().map_or(Val::Null, Val::Float),
            _ => Val::Null,
        },
        Func::Lower => match arg(0)? {
            Val::Str(s) => Val::Str(Cow::Owned(s.to_lowercase())),
            _ => Val::Null,
        },
        Func::Upper => match arg(0)? {
            Val::Str(s) => Val::Str(Cow::Owned(s.to_uppercase())),
            _ => Val::Null,
        },
        Func::Length => match arg(0)? {
            // ClickHouse `length` counts bytes.
            Val::Str(s) => Val::Int(i64::try_from(s.len()).unwrap_or(i64::MAX)),
            _ => Val::Null,
        },
        Func::Coalesce => {
            for a in args {
                let v = eval(a, ctx)?;
                if !v.is_null() {
                    return Ok(v);
                }
            }
            Val::Null
        }
        Func::If => {
            // ClickHouse treats a NULL condition as false.
            if arg(0)?.is_true() { arg(1)? } else { arg(2)? }
        }
        Func::Round(digits) => round_like(arg(0)?, digits, Rounding::HalfEven),
        Func::Floor(digits) => round_like(arg(0)?, digits, Rounding::Down),
        Func::Ceil(digits) => round_like(arg(0)?, digits, Rounding::Up),
        Func::Concat => {
            let mut out = String::new();
            for a in args {
                match eval(a, ctx)? {
                    Val::Null => return Ok(Val::Null),
                    Val::Str(s) => out.push_str(&s),
                    v => out.push_str(&v.to_clickhouse_string(ctx.display_tz).unwrap_or_default()),
                }
            }
            Val::Str(Cow::Owned(out))
        }
        Func::JsonExtract(as_) => json_extract(as_, args, ctx)?,
        Func::Greatest | Func::Least => {
            let mut best: Option<Val<'c>> = None;
            for a in args {
                let v = eval(a, ctx)?;
                if v.is_null() {
                    return Ok(Val::Null);
                }
                let wanted = if f == Func::Greatest {
                    Ordering::Greater
                } else {
                    Ordering::Less
                };
                if best.as_ref().is_none_or(|b| compare(&v, b) == Some(wanted)) {
                    best = Some(v);
                }
            }
            best.unwrap_or(Val::Null)
        }
        Func::Empty | Func::NotEmpty => match arg(0)? {
            Val::Str(s) => Val::Bool(s.is_empty() == (f == Func::Empty)),
            _ => Val::Null,
        },
        Func::IntDiv => int_div(arg(0)?, arg(1)?)?,
        Func::ToDate(tz) => dates::to_date(&arg(0)?, tz),
        Func::DateToDateTime(tz) => dates::date_to_datetime(&arg(0)?, tz),
        Func::StartOf { unit_us, tz } => dates::start_of(&arg(0)?, unit_us, tz),
        Func::StartOfWeek { monday, tz } => dates::start_of_week(&arg(0)?, monday, tz),
        Func::StartOfMonth(tz) => dates::start_of_month(&arg(0)?, tz),
        Func::ToInterval(unit) => match arg(0)? {
            Val::Int(n) => Val::Interval(unit, n),
            Val::Bool(b) => Val::Interval(unit, i64::from(b)),
            _ => Val::Null,
        },
        Func::AddInterval { negate, tz } => match (arg(0)?, arg(1)?) {
            (date, Val::Interval(unit, n)) => {
                let n = if negate { n.checked_neg() } else { Some(n) };
                n.map_or(Val::Null, |n| dates::add_interval(&date, unit, n, tz))
            }
            _ => Val::Null,
        },
        Func::DateDiff(unit, tz) => dates::date_diff(unit, &arg(0)?, &arg(1)?, tz),
    })
}

/// How [`round_like`] rounds.
#[derive(Clone, Copy, PartialEq)]
enum Rounding {
    /// `round`: to nearest, ties to even (ClickHouse rounds floats with banker's rounding).
    HalfEven,
    /// `floor`.
    Down,
    /// `ceil`.
    Up,
}

/// `round`/`floor`/`ceil(x, digits)`: to `digits` decimal places, or to a multiple of
/// `10^-digits` when negative. Integers stay integers and are exact.
fn round_like(v: Val<'_>, digits: i64, mode: Rounding) -> Val<'static> {
    match v {
        Val::Bool(b) => round_like(Val::Int(i64::from(b)), digits, mode),
        Val::Int(i) if digits >= 0 => Val::Int(i),
        Val::Int(i) => {
            let Some(p) = u32::try_from(-digits)
                .ok()
                .and_then(|k| 10i64.checked_pow(k))
            else {
                return Val::Int(0);
            };
            let (q, r) = (i.div_euclid(p), i.rem_euclid(p));
            let up = match mode {
                Rounding::Down => false,
                Rounding::Up => r > 0,
                // `r < p <= 10^18`, so `2r` fits.
                Rounding::HalfEven => 2 * r > p || (2 * r == p && q % 2 != 0),
            };
            let q = if up { q.saturating_add(1) } else { q };
            Val::Int(q.saturating_mul(p))
        }
        Val::Float(f) => {
            let apply = |x: f64| match mode {
                Rounding::HalfEven => x.round_ties_even(),
                Rounding::Down => x.floor(),
                Rounding::Up => x.ceil(),
            };
            // `digits` is clamped to ±400 at bind time.
            let p = 10f64.powi(i32::try_from(digits.unsigned_abs()).unwrap_or(400));
            let out = if digits >= 0 {
                let scaled = f * p;
                if scaled.is_finite() {
                    apply(scaled) / p
                } else {
                    f
                }
            } else {
                apply(f / p) * p
            };
            Val::Float(if out.is_finite() { out } else { f })
        }
        _ => Val::Null,
    }
}

fn int_div(a: Val<'_>, b: Val<'_>) -> Result<Val<'static>, HogQlError> {
    let as_int = |v: &Val<'_>| match v {
        Val::Int(i) => Some(*i),
        Val::Bool(b) => Some(i64::from(*b)),
        _ => None,
    };
    let as_f = |v: &Val<'_>| match v {
        Val::Float(f) => Some(*f),
        other => as_int(other).map(|i| i as f64),
    };
    let zero = || HogQlError::new("Division by zero in intDiv");
    if let (Some(x), Some(y)) = (as_int(&a), as_int(&b)) {
        if y == 0 {
            return Err(zero());
        }
        return Ok(Val::Int(x.wrapping_div(y)));
    }
    match (as_f(&a), as_f(&b)) {
        (Some(_), Some(0.0)) => Err(zero()),
        // `as` saturates (and maps NaN to 0), as an integer result must.
        (Some(x), Some(y)) => Ok(Val::Int((x / y).trunc() as i64)),
        _ => Ok(Val::Null),
    }
}

/// One step of a `JSONExtract*` path: a key, or a 1-based (negative: from the end) index.
enum PathStep<'a> {
    Key(Cow<'a, str>),
    Index(i64),
}

fn json_step<'j>(v: &'j Json, step: &PathStep<'_>) -> Option<&'j Json> {
    match (v, step) {
        (Json::Object(m), PathStep::Key(k)) => m.get(k.as_ref()),
        (Json::Array(items), PathStep::Index(i)) => {
            let len = i64::try_from(items.len()).ok()?;
            let pos = if *i > 0 { *i - 1 } else { len + *i };
            items.get(usize::try_from(pos).ok()?)
        }
        _ => None,
    }
}

/// The value `JSONExtract*` returns for `found` (`None`: the path does not exist or the text is
/// not JSON): ClickHouse's rules in [`json`] (`JSONExtractString` of a non-string is its JSON
/// text, `JSONExtractInt`/`Float` of `true` is 0, numeric strings count as numbers), the
/// type's default when nothing is found.
fn json_value<'c>(as_: JsonAs, found: Option<&'c Json>) -> Val<'c> {
    match as_ {
        JsonAs::String => Val::Str(found.map_or(Cow::Borrowed(""), json::extract_string)),
        JsonAs::Int => Val::Int(found.map_or(0, json::extract_int)),
        JsonAs::Float => Val::Float(found.map_or(0.0, json::extract_float)),
    }
}

fn json_extract<'c>(
    as_: JsonAs,
    args: &'c [BExpr],
    ctx: &'c RowCtx<'_>,
) -> Result<Val<'c>, HogQlError> {
    let Some((doc, keys)) = args.split_first() else {
        return Ok(Val::Null);
    };
    let mut path = Vec::with_capacity(keys.len());
    for k in keys {
        path.push(match eval(k, ctx)? {
            Val::Str(s) => PathStep::Key(s),
            Val::Int(i) => PathStep::Index(i),
            _ => return Ok(Val::Null),
        });
    }
    // `properties` is already parsed: walk it instead of serialising and re-parsing.
    if let BExpr::Col(col @ (Col::Properties | Col::PersonProperties)) = doc
        && let Some(map) = ctx.json_column(*col)
    {
        let found = match path.split_first() {
            Some((PathStep::Key(k), rest)) => map
                .get(k.as_ref())
                .and_then(|v| rest.iter().try_fold(v, |v, step| json_step(v, step))),
            _ => None,
        };
        return Ok(json_value(as_, found));
    }
    let text = match eval(doc, ctx)? {
        Val::Str(s) => s,
        _ => return Ok(Val::Null),
    };
    let parsed: Option<Json> = serde_json::from_str(&text).ok();
    let found = parsed
        .as_ref()
        .and_then(|v| path.iter().try_fold(v, |v, step| json_step(v, step)));
    Ok(json_value(as_, found).into_owned())
}

fn arith<'c>(op: ArithOp, l: Val<'c>, r: Val<'c>) -> Result<Val<'c>, HogQlError> {
    let as_int = |v: &Val<'_>| match v {
        Val::Int(i) => Some(*i),
        Val::Bool(b) => Some(i64::from(*b)),
        _ => None,
    };
    let as_f = |v: &Val<'_>| match v {
        Val::Int(i) => Some(*i as f64),
        Val::Bool(b) => Some(f64::from(u8::from(*b))),
        Val::Float(f) => Some(*f),
        _ => None,
    };
    if let (Some(a), Some(b)) = (as_int(&l), as_int(&r))
        && op != ArithOp::Div
    {
        return Ok(match op {
            ArithOp::Add => Val::Int(a.wrapping_add(b)),
            ArithOp::Sub => Val::Int(a.wrapping_sub(b)),
            ArithOp::Mul => Val::Int(a.wrapping_mul(b)),
            ArithOp::Mod => {
                if b == 0 {
                    return Err(HogQlError::new("Division by zero in modulo"));
                }
                Val::Int(a.wrapping_rem(b))
            }
            ArithOp::Div => Val::Null,
        });
    }
    let (Some(a), Some(b)) = (as_f(&l), as_f(&r)) else {
        return Ok(Val::Null);
    };
    Ok(Val::Float(match op {
        ArithOp::Add => a + b,
        ArithOp::Sub => a - b,
        ArithOp::Mul => a * b,
        ArithOp::Div => a / b,
        ArithOp::Mod => a % b,
    }))
}

/// SQL LIKE: `%` any run, `_` any one character, backslash escapes.
pub(crate) fn like(s: &str, pattern: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    like_from(&s, &p)
}

fn like_from(s: &[char], p: &[char]) -> bool {
    // Iterative matcher with backtracking on the last `%`.
    let (mut si, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() {
            match p[pi] {
                '%' => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                '_' => {
                    si += 1;
                    pi += 1;
                    continue;
                }
                '\\' if pi + 1 < p.len() && p[pi + 1] == s[si] => {
                    si += 1;
                    pi += 2;
                    continue;
                }
                '\\' if pi + 1 < p.len() => {}
                c if c == s[si] => {
                    si += 1;
                    pi += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, ss)) => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|c| *c == '%')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_matches_sql_semantics() {
        assert!(like("https://example.com/pricing", "%/pricing"));
        assert!(like("abc", "a_c"));
        assert!(!like("abc", "a_"));
        assert!(like("100%", "100\\%"));
        assert!(!like("1000", "100\\%"));
        assert!(like("", "%"));
        assert!(like("aXbXc", "a%b%c"));
    }

    #[test]
    fn property_reads_as_strings() {
        let m: Map<String, Json> = serde_json::from_str(
            r#"{"s":"x","n":42.5,"b":true,"z":null,"o":{"a":[1,{"b":"deep"}]},
                "t":"Settings\tBilling","q":"J\"JJ\"","f":1735690141.0,"w":{"three":3.0}}"#,
        )
        .unwrap();
        let p = |path: &[&str]| {
            property(&m, &path.iter().map(|s| s.to_string()).collect::<Vec<_>>()).into_owned()
        };
        assert_eq!(p(&["s"]), Val::Str("x".into()));
        assert_eq!(p(&["n"]), Val::Str("42.5".into()));
        assert_eq!(p(&["b"]), Val::Str("true".into()));
        assert_eq!(p(&["z"]), Val::Null);
        assert_eq!(p(&["missing"]), Val::Null);
        assert_eq!(p(&["o", "a", "2", "b"]), Val::Str("deep".into()));
        // PostHog's trimmed JSONExtractRaw text, as chdb (ClickHouse 26.9) answers
        // `replaceRegexpAll(nullIf(nullIf(JSONExtractRaw(j, k), ''), 'null'), '^"|"$', '')`:
        // escapes stay, numbers are re-rendered.
        assert_eq!(p(&["t"]), Val::Str("Settings\\tBilling".into()));
        assert_eq!(p(&["q"]), Val::Str("J\\\"JJ\\\"".into()));
        assert_eq!(p(&["f"]), Val::Str("1735690141".into()));
        assert_eq!(p(&["w"]), Val::Str("{\"three\":3}".into()));
    }
}
