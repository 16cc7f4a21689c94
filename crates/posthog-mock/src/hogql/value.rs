//! Runtime values and static types of HogQL expressions, with ClickHouse's comparison rules:
//! instants for DateTime, ClickHouse UUID order, NULL-aware predicates and a total sort order.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::Write as _;

use serde_json::Value as Json;
use time::UtcOffset;
use uuid::Uuid;

use crate::store::uuid_key;
use crate::timefmt::{clickhouse_string, format_date, isoformat};

/// The unit of an `INTERVAL` (`toIntervalDay(n)`, `INTERVAL n DAY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum IntervalUnit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

impl IntervalUnit {
    /// Every unit, shortest first.
    pub(crate) const ALL: [IntervalUnit; 8] = [
        IntervalUnit::Second,
        IntervalUnit::Minute,
        IntervalUnit::Hour,
        IntervalUnit::Day,
        IntervalUnit::Week,
        IntervalUnit::Month,
        IntervalUnit::Quarter,
        IntervalUnit::Year,
    ];

    /// `Second`, `Minute`, …: the suffix of `toInterval…` and of the ClickHouse type name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            IntervalUnit::Second => "Second",
            IntervalUnit::Minute => "Minute",
            IntervalUnit::Hour => "Hour",
            IntervalUnit::Day => "Day",
            IntervalUnit::Week => "Week",
            IntervalUnit::Month => "Month",
            IntervalUnit::Quarter => "Quarter",
            IntervalUnit::Year => "Year",
        }
    }

    /// The unit named `s` (case-insensitive, singular: `DAY`, `day`), as `INTERVAL` and
    /// `dateDiff` spell it.
    pub(crate) fn parse(s: &str) -> Option<IntervalUnit> {
        IntervalUnit::ALL
            .into_iter()
            .find(|u| u.name().eq_ignore_ascii_case(s))
    }

    /// True for units of whole days or more: adding them to a `Date` keeps a `Date`.
    pub(crate) fn is_calendar(self) -> bool {
        !matches!(
            self,
            IntervalUnit::Second | IntervalUnit::Minute | IntervalUnit::Hour
        )
    }
}

/// The kind of a static type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    /// The type of a bare `NULL`.
    Nothing,
    Bool,
    Int,
    /// `count()`.
    UInt,
    Float,
    Str,
    DateTime,
    /// A calendar day (`toDate`), rendered `YYYY-MM-DD`.
    Date,
    Uuid,
    /// `toIntervalDay(n)` and friends: only meaningful as an operand of `±` with a date.
    Interval(IntervalUnit),
    Tuple(Vec<Ty>),
    /// `Array(T)`: what `quantiles(…)(x)` returns. Never `Nullable`, as in ClickHouse.
    Array(Box<Ty>),
}

/// A static type: a kind, possibly `Nullable`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ty {
    pub kind: Kind,
    pub nullable: bool,
}

impl Ty {
    pub(crate) fn of(kind: Kind) -> Ty {
        Ty {
            kind,
            nullable: false,
        }
    }

    pub(crate) fn nullable(kind: Kind) -> Ty {
        Ty {
            kind,
            nullable: true,
        }
    }

    pub(crate) fn null() -> Ty {
        Ty::nullable(Kind::Nothing)
    }

    pub(crate) fn or_null(mut self, nullable: bool) -> Ty {
        self.nullable |= nullable;
        self
    }

    pub(crate) fn is_numeric(&self) -> bool {
        matches!(self.kind, Kind::Bool | Kind::Int | Kind::UInt | Kind::Float)
    }

    /// The ClickHouse type name, e.g. `Nullable(String)`, `DateTime64(6, 'Asia/Kolkata')`.
    pub(crate) fn clickhouse_name(&self, tz_name: &str) -> String {
        let inner = match &self.kind {
            Kind::Nothing => "Nothing".to_owned(),
            Kind::Bool => "Bool".to_owned(),
            Kind::Int => "Int64".to_owned(),
            Kind::UInt => "UInt64".to_owned(),
            Kind::Float => "Float64".to_owned(),
            Kind::Str => "String".to_owned(),
            Kind::DateTime => format!("DateTime64(6, '{tz_name}')"),
            Kind::Date => "Date".to_owned(),
            Kind::Uuid => "UUID".to_owned(),
            Kind::Interval(unit) => format!("Interval{}", unit.name()),
            Kind::Tuple(items) => {
                let names: Vec<String> = items.iter().map(|t| t.clickhouse_name(tz_name)).collect();
                format!("Tuple({})", names.join(", "))
            }
            Kind::Array(item) => format!("Array({})", item.clickhouse_name(tz_name)),
        };
        if self.nullable && !matches!(self.kind, Kind::Tuple(_) | Kind::Array(_)) {
            format!("Nullable({inner})")
        } else {
            inner
        }
    }
}

/// A runtime value; strings borrow from the row or the query where they can.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    /// µs since the epoch.
    DateTime(i64),
    /// Days since 1970-01-01.
    Date(i64),
    Uuid(Uuid),
    /// A count of `unit`s (may be negative).
    Interval(IntervalUnit, i64),
    Tuple(Vec<Val<'a>>),
    Array(Vec<Val<'a>>),
}

impl<'a> Val<'a> {
    /// Detaches the value from the row it borrows from.
    pub(crate) fn into_owned(self) -> Val<'static> {
        match self {
            Val::Null => Val::Null,
            Val::Bool(b) => Val::Bool(b),
            Val::Int(i) => Val::Int(i),
            Val::Float(f) => Val::Float(f),
            Val::Str(s) => Val::Str(Cow::Owned(s.into_owned())),
            Val::DateTime(t) => Val::DateTime(t),
            Val::Date(d) => Val::Date(d),
            Val::Uuid(u) => Val::Uuid(u),
            Val::Interval(unit, n) => Val::Interval(unit, n),
            Val::Tuple(items) => Val::Tuple(items.into_iter().map(Val::into_owned).collect()),
            Val::Array(items) => Val::Array(items.into_iter().map(Val::into_owned).collect()),
        }
    }

    /// A copy borrowing from `self`.
    pub(crate) fn borrowed(&self) -> Val<'_> {
        match self {
            Val::Str(s) => Val::Str(Cow::Borrowed(s.as_ref())),
            Val::Tuple(items) => Val::Tuple(items.iter().map(Val::borrowed).collect()),
            Val::Array(items) => Val::Array(items.iter().map(Val::borrowed).collect()),
            other => other.clone().into_owned(),
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Val::Null)
    }

    /// WHERE/HAVING truthiness: true, or a non-zero number.
    pub(crate) fn is_true(&self) -> bool {
        match self {
            Val::Bool(b) => *b,
            Val::Int(i) => *i != 0,
            Val::Float(f) => *f != 0.0,
            _ => false,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Val::Bool(b) => Some(f64::from(u8::from(*b))),
            Val::Int(i) => Some(*i as f64),
            Val::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// ClickHouse `toString`.
    pub(crate) fn to_clickhouse_string(&self, tz: UtcOffset) -> Option<String> {
        Some(match self {
            Val::Null => return None,
            Val::Bool(b) => b.to_string(),
            Val::Int(i) => i.to_string(),
            Val::Float(f) => f.to_string(),
            Val::Str(s) => s.to_string(),
            Val::DateTime(t) => clickhouse_string(*t, tz),
            Val::Date(d) => format_date(*d),
            Val::Uuid(u) => u.to_string(),
            Val::Interval(_, n) => n.to_string(),
            Val::Tuple(items) => format!("({})", items_string(items, tz)),
            Val::Array(items) => format!("[{}]", items_string(items, tz)),
        })
    }

    /// The value as PostHog's JSON renderer writes it.
    pub(crate) fn to_json(&self, tz: UtcOffset) -> Json {
        match self {
            Val::Null => Json::Null,
            Val::Bool(b) => Json::Bool(*b),
            Val::Int(i) => Json::from(*i),
            // NaN and infinities become null, as PostHog's renderer does.
            Val::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
            Val::Str(s) => Json::String(s.to_string()),
            Val::DateTime(t) => Json::String(isoformat(*t, tz)),
            Val::Date(d) => Json::String(format_date(*d)),
            Val::Uuid(u) => Json::String(u.to_string()),
            Val::Interval(_, n) => Json::from(*n),
            // PostHog's renderer writes the items of tuples and arrays as it writes columns.
            Val::Tuple(items) | Val::Array(items) => {
                Json::Array(items.iter().map(|v| v.to_json(tz)).collect())
            }
        }
    }

    /// Appends a string that is equal for equal values (GROUP BY and DISTINCT keys).
    pub(crate) fn write_key(&self, out: &mut String) {
        match self {
            Val::Null => out.push('N'),
            Val::Bool(b) => out.push(if *b { 'T' } else { 'F' }),
            Val::Int(i) => {
                let _ = write!(out, "i{i};");
            }
            Val::Float(f) => {
                let f = if *f == 0.0 { 0.0 } else { *f };
                let _ = write!(out, "f{};", f.to_bits());
            }
            Val::Str(s) => {
                let _ = write!(out, "s{}:{s}", s.len());
            }
            Val::DateTime(t) => {
                let _ = write!(out, "d{t};");
            }
            Val::Date(d) => {
                let _ = write!(out, "D{d};");
            }
            Val::Uuid(u) => {
                let _ = write!(out, "u{u}");
            }
            Val::Interval(unit, n) => {
                let _ = write!(out, "I{}{n};", unit.name());
            }
            Val::Tuple(items) | Val::Array(items) => {
                let tag = if matches!(self, Val::Tuple(_)) {
                    't'
                } else {
                    'a'
                };
                let _ = write!(out, "{tag}{}(", items.len());
                for item in items {
                    item.write_key(out);
                }
                out.push(')');
            }
        }
    }
}

/// The items of a tuple or array as `toString` writes them inside the brackets: strings,
/// dates and UUIDs quoted, NULL as `NULL`.
fn items_string(items: &[Val<'_>], tz: UtcOffset) -> String {
    let parts: Vec<String> = items
        .iter()
        .map(|v| match v {
            Val::Str(s) => super::ast::quote_str(s),
            Val::DateTime(_) | Val::Date(_) | Val::Uuid(_) => {
                super::ast::quote_str(&v.to_clickhouse_string(tz).unwrap_or_default())
            }
            other => other
                .to_clickhouse_string(tz)
                .unwrap_or_else(|| "NULL".into()),
        })
        .collect();
    parts.join(",")
}

/// Compares two non-null-aware values for a predicate: `None` when either side is NULL (the
/// comparison is NULL) or the values cannot be compared.
pub(crate) fn compare(a: &Val<'_>, b: &Val<'_>) -> Option<Ordering> {
    match (a, b) {
        (Val::Null, _) | (_, Val::Null) => None,
        (Val::Str(x), Val::Str(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Val::DateTime(x), Val::DateTime(y)) => Some(x.cmp(y)),
        (Val::Date(x), Val::Date(y)) => Some(x.cmp(y)),
        (Val::Interval(u, x), Val::Interval(v, y)) if u == v => Some(x.cmp(y)),
        (Val::Uuid(x), Val::Uuid(y)) => Some(uuid_key(x).cmp(&uuid_key(y))),
        (Val::Uuid(x), Val::Str(s)) => Uuid::parse_str(s)
            .ok()
            .map(|y| uuid_key(x).cmp(&uuid_key(&y))),
        (Val::Str(s), Val::Uuid(y)) => Uuid::parse_str(s)
            .ok()
            .map(|x| uuid_key(&x).cmp(&uuid_key(y))),
        (Val::Int(x), Val::Int(y)) => Some(x.cmp(y)),
        (Val::Tuple(xs), Val::Tuple(ys)) | (Val::Array(xs), Val::Array(ys)) => {
            for (x, y) in xs.iter().zip(ys) {
                match compare(x, y)? {
                    Ordering::Equal => continue,
                    other => return Some(other),
                }
            }
            Some(xs.len().cmp(&ys.len()))
        }
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// A total order for ORDER BY: NULLs last unless `nulls_first`, floats by `total_cmp`, values
/// of different kinds by kind.
pub(crate) fn sort_cmp(a: &Val<'_>, b: &Val<'_>, nulls_first: bool) -> Ordering {
    match (a, b) {
        (Val::Null, Val::Null) => Ordering::Equal,
        (Val::Null, _) => {
            if nulls_first {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (_, Val::Null) => {
            if nulls_first {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (Val::Tuple(xs), Val::Tuple(ys)) | (Val::Array(xs), Val::Array(ys)) => {
            for (x, y) in xs.iter().zip(ys) {
                match sort_cmp(x, y, nulls_first) {
                    Ordering::Equal => continue,
                    other => return other,
                }
            }
            xs.len().cmp(&ys.len())
        }
        (Val::Float(x), Val::Float(y)) => x.total_cmp(y),
        _ => match compare(a, b) {
            Some(o) => o,
            None => rank(a).cmp(&rank(b)),
        },
    }
}

fn rank(v: &Val<'_>) -> u8 {
    match v {
        Val::Null => 9,
        Val::Bool(_) | Val::Int(_) | Val::Float(_) => 0,
        Val::Str(_) => 1,
        Val::DateTime(_) => 2,
        Val::Date(_) => 5,
        Val::Uuid(_) => 3,
        Val::Tuple(_) => 4,
        Val::Interval(..) => 6,
        Val::Array(_) => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Val<'static> {
        Val::Str(Cow::Owned(x.to_owned()))
    }

    #[test]
    fn tuples_compare_lexicographically_and_null_poisons() {
        let a = Val::Tuple(vec![Val::DateTime(5), s("b")]);
        let b = Val::Tuple(vec![Val::DateTime(5), s("c")]);
        assert_eq!(compare(&a, &b), Some(Ordering::Less));
        let n = Val::Tuple(vec![Val::DateTime(5), Val::Null]);
        assert_eq!(compare(&a, &n), None);
        assert_eq!(
            compare(&Val::Int(2), &Val::Float(2.5)),
            Some(Ordering::Less)
        );
    }

    #[test]
    fn sort_puts_nulls_last_by_default() {
        assert_eq!(sort_cmp(&Val::Null, &Val::Int(1), false), Ordering::Greater);
        assert_eq!(sort_cmp(&Val::Null, &Val::Int(1), true), Ordering::Less);
        assert_eq!(
            sort_cmp(&Val::Float(f64::NAN), &Val::Float(1.0), false),
            Ordering::Greater
        );
    }

    #[test]
    fn clickhouse_type_names() {
        assert_eq!(
            Ty::nullable(Kind::Uuid).clickhouse_name("UTC"),
            "Nullable(UUID)"
        );
        assert_eq!(
            Ty::of(Kind::DateTime).clickhouse_name("Asia/Kolkata"),
            "DateTime64(6, 'Asia/Kolkata')"
        );
        let array = Ty::nullable(Kind::Array(Box::new(Ty::of(Kind::DateTime))));
        assert_eq!(array.clickhouse_name("UTC"), "Array(DateTime64(6, 'UTC'))");
    }

    #[test]
    fn arrays_render_as_lists_and_compare_like_tuples() {
        let a = Val::Array(vec![Val::DateTime(0), Val::Float(f64::NAN)]);
        assert_eq!(
            a.to_json(UtcOffset::UTC),
            serde_json::json!(["1970-01-01T00:00:00Z", null])
        );
        let b = Val::Array(vec![Val::DateTime(1), Val::Float(0.0)]);
        assert_eq!(compare(&a, &b), Some(Ordering::Less));
        assert_eq!(
            Val::Array(vec![Val::DateTime(0), s("x")]).to_clickhouse_string(UtcOffset::UTC),
            Some("['1970-01-01 00:00:00.000000','x']".to_owned())
        );
        let (mut ka, mut kt) = (String::new(), String::new());
        Val::Array(vec![Val::Int(1)]).write_key(&mut ka);
        Val::Tuple(vec![Val::Int(1)]).write_key(&mut kt);
        assert_ne!(ka, kt);
    }
}
