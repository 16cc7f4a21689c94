//! ClickHouse date semantics over the mock's values: `DateTime` is an instant in µs, `Date` a
//! day number. Truncation, interval arithmetic and `dateDiff` happen on the wall clock of one
//! fixed offset (the query's display zone, or a zone argument), as ClickHouse does them in the
//! column's time zone. Every result out of range is NULL, never a panic.

use time::UtcOffset;

use super::value::{IntervalUnit, Val};
use crate::timefmt::{
    MAX_DAYS, US_PER_DAY, add_months_to_day, civil_from_days, days_from_civil, local_day, midnight,
    offset_micros, parse_datetime,
};

const US_PER_SECOND: i64 = 1_000_000;
const US_PER_MINUTE: i64 = 60 * US_PER_SECOND;
const US_PER_HOUR: i64 = 60 * US_PER_MINUTE;
/// Instants further from the epoch than this are out of range (the midnight of `MAX_DAYS`).
const MAX_US: i64 = MAX_DAYS * US_PER_DAY;

fn datetime(us: Option<i64>) -> Val<'static> {
    match us {
        Some(t) if t.unsigned_abs() <= MAX_US.unsigned_abs() => Val::DateTime(t),
        _ => Val::Null,
    }
}

fn date(day: Option<i64>) -> Val<'static> {
    match day {
        Some(d) if d.unsigned_abs() <= MAX_DAYS.unsigned_abs() => Val::Date(d),
        _ => Val::Null,
    }
}

/// The wall-clock time of a `Date` (its midnight) or `DateTime` in `tz`, as µs since the
/// local epoch.
fn local_micros(v: &Val<'_>, tz: UtcOffset) -> Option<i64> {
    match v {
        Val::Date(d) => d.checked_mul(US_PER_DAY),
        Val::DateTime(t) => t.checked_add(offset_micros(tz)),
        _ => None,
    }
}

/// The calendar day of a `Date` or `DateTime` in `tz`.
fn day_of(v: &Val<'_>, tz: UtcOffset) -> Option<i64> {
    match v {
        Val::Date(d) => Some(*d),
        Val::DateTime(t) => Some(local_day(*t, tz)),
        _ => None,
    }
}

/// `toDate(x)`: the day of a DateTime in `tz`; a string's date (`2025-01-02`, or a date-time,
/// whose wall date is taken, converted to `tz` if it carries an offset); unparsable → NULL.
pub(crate) fn to_date(v: &Val<'_>, tz: UtcOffset) -> Val<'static> {
    match v {
        Val::Str(s) => date(parse_datetime(s, tz).map(|t| local_day(t, tz))),
        other => date(day_of(other, tz)),
    }
}

/// A `Date` as the `DateTime` of its midnight in `tz`.
pub(crate) fn date_to_datetime(v: &Val<'_>, tz: UtcOffset) -> Val<'static> {
    match v {
        Val::Date(d) => datetime(midnight(*d, tz)),
        Val::DateTime(t) => Val::DateTime(*t),
        _ => Val::Null,
    }
}

/// `toStartOfDay` / `toStartOfHour` / `toStartOfMinute`: the instant truncated to a multiple of
/// `unit_us` of the wall clock in `tz`.
pub(crate) fn start_of(v: &Val<'_>, unit_us: i64, tz: UtcOffset) -> Val<'static> {
    let Some(local) = local_micros(v, tz) else {
        return Val::Null;
    };
    datetime(
        local
            .div_euclid(unit_us)
            .checked_mul(unit_us)
            .and_then(|l| l.checked_sub(offset_micros(tz))),
    )
}

/// `toStartOfDay`'s unit.
pub(crate) const DAY: i64 = US_PER_DAY;
/// `toStartOfHour`'s unit.
pub(crate) const HOUR: i64 = US_PER_HOUR;
/// `toStartOfMinute`'s unit.
pub(crate) const MINUTE: i64 = US_PER_MINUTE;

/// `toStartOfWeek(x[, mode])` → Date: the Sunday on or before the day (modes 0, 2, …), or the
/// Monday (odd modes, `monday`).
pub(crate) fn start_of_week(v: &Val<'_>, monday: bool, tz: UtcOffset) -> Val<'static> {
    let Some(day) = day_of(v, tz) else {
        return Val::Null;
    };
    // 1970-01-01 was a Thursday: `day + 4` counts from a Sunday, `day + 3` from a Monday.
    let since_start = (day + if monday { 3 } else { 4 }).rem_euclid(7);
    date(Some(day - since_start))
}

/// `toStartOfMonth(x)` → Date.
pub(crate) fn start_of_month(v: &Val<'_>, tz: UtcOffset) -> Val<'static> {
    let Some(day) = day_of(v, tz) else {
        return Val::Null;
    };
    let (y, m, _) = civil_from_days(day);
    date(Some(days_from_civil(y, m, 1)))
}

fn months_per(unit: IntervalUnit) -> Option<i64> {
    match unit {
        IntervalUnit::Month => Some(1),
        IntervalUnit::Quarter => Some(3),
        IntervalUnit::Year => Some(12),
        _ => None,
    }
}

fn fixed_us(unit: IntervalUnit) -> Option<i64> {
    match unit {
        IntervalUnit::Second => Some(US_PER_SECOND),
        IntervalUnit::Minute => Some(US_PER_MINUTE),
        IntervalUnit::Hour => Some(US_PER_HOUR),
        IntervalUnit::Day => Some(US_PER_DAY),
        IntervalUnit::Week => Some(7 * US_PER_DAY),
        _ => None,
    }
}

/// `date + INTERVAL n unit` (`n` negative for `-`). A `Date` stays a `Date` for units of a
/// day or more and becomes the `DateTime` of its midnight otherwise. Months keep the wall time
/// and clamp the day to the month's end.
pub(crate) fn add_interval(v: &Val<'_>, unit: IntervalUnit, n: i64, tz: UtcOffset) -> Val<'static> {
    match v {
        Val::Date(d) if unit.is_calendar() => date(match months_per(unit) {
            Some(per) => n.checked_mul(per).and_then(|m| add_months_to_day(*d, m)),
            None => {
                let days = if unit == IntervalUnit::Week { 7 } else { 1 };
                n.checked_mul(days).and_then(|k| d.checked_add(k))
            }
        }),
        Val::Date(_) => add_interval(&date_to_datetime(v, tz), unit, n, tz),
        Val::DateTime(t) => datetime(match (fixed_us(unit), months_per(unit)) {
            (Some(per), _) => n.checked_mul(per).and_then(|delta| t.checked_add(delta)),
            (None, Some(per)) => (|| {
                let local = t.checked_add(offset_micros(tz))?;
                let day = local.div_euclid(US_PER_DAY);
                let time_of_day = local.rem_euclid(US_PER_DAY);
                let moved = add_months_to_day(day, n.checked_mul(per)?)?;
                midnight(moved, tz)?.checked_add(time_of_day)
            })(),
            (None, None) => None,
        }),
        _ => Val::Null,
    }
}

/// `dateDiff(unit, a, b)`: how many `unit` boundaries lie between `a` and `b` on the wall
/// clock of `tz` (ClickHouse: `dateDiff('day', 23:59, 00:01 next day)` = 1). Weeks start on
/// Monday, as ClickHouse's `toRelativeWeekNum`.
pub(crate) fn date_diff(
    unit: IntervalUnit,
    a: &Val<'_>,
    b: &Val<'_>,
    tz: UtcOffset,
) -> Val<'static> {
    let (Some(la), Some(lb)) = (local_micros(a, tz), local_micros(b, tz)) else {
        return Val::Null;
    };
    let number = |local: i64| -> i64 {
        let day = local.div_euclid(US_PER_DAY);
        let months = || {
            let (y, m, _) = civil_from_days(day);
            (y, i64::from(m) - 1)
        };
        match unit {
            IntervalUnit::Second => local.div_euclid(US_PER_SECOND),
            IntervalUnit::Minute => local.div_euclid(US_PER_MINUTE),
            IntervalUnit::Hour => local.div_euclid(US_PER_HOUR),
            IntervalUnit::Day => day,
            IntervalUnit::Week => (day + 3).div_euclid(7),
            IntervalUnit::Month => {
                let (y, m) = months();
                y * 12 + m
            }
            IntervalUnit::Quarter => {
                let (y, m) = months();
                y * 4 + m / 3
            }
            IntervalUnit::Year => months().0,
        }
    };
    Val::Int(number(lb) - number(la))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timefmt::micros_of;
    use time::macros::{datetime, offset};

    fn dt(t: time::OffsetDateTime) -> Val<'static> {
        Val::DateTime(micros_of(t))
    }

    fn day(y: i64, m: u32, d: u32) -> Val<'static> {
        Val::Date(days_from_civil(y, m, d))
    }

    #[test]
    fn dates_are_taken_in_the_given_zone() {
        let late = dt(datetime!(2025-01-01 20:00 UTC));
        assert_eq!(to_date(&late, UtcOffset::UTC), day(2025, 1, 1));
        assert_eq!(to_date(&late, offset!(+05:30)), day(2025, 1, 2));
        let s = Val::Str("2025-03-04".into());
        assert_eq!(to_date(&s, offset!(+05:30)), day(2025, 3, 4));
        assert_eq!(to_date(&Val::Str("nope".into()), UtcOffset::UTC), Val::Null);
    }

    #[test]
    fn week_starts_on_sunday_unless_monday_mode() {
        // 2025-01-08 is a Wednesday.
        let wed = day(2025, 1, 8);
        assert_eq!(start_of_week(&wed, false, UtcOffset::UTC), day(2025, 1, 5));
        assert_eq!(start_of_week(&wed, true, UtcOffset::UTC), day(2025, 1, 6));
        let sunday = day(2025, 1, 5);
        assert_eq!(start_of_week(&sunday, false, UtcOffset::UTC), sunday);
        assert_eq!(
            start_of_week(&sunday, true, UtcOffset::UTC),
            day(2024, 12, 30)
        );
    }

    #[test]
    fn start_of_hour_follows_a_half_hour_offset() {
        let t = dt(datetime!(2025-01-01 04:50 UTC)); // 10:20 in +05:30
        assert_eq!(
            start_of(&t, HOUR, offset!(+05:30)),
            dt(datetime!(2025-01-01 04:30 UTC))
        );
        assert_eq!(
            start_of(&t, HOUR, UtcOffset::UTC),
            dt(datetime!(2025-01-01 04:00 UTC))
        );
        assert_eq!(
            start_of(&t, DAY, offset!(+05:30)),
            dt(datetime!(2024-12-31 18:30 UTC))
        );
    }

    #[test]
    fn month_arithmetic_clamps_and_keeps_the_wall_time() {
        let t = dt(datetime!(2025-01-31 10:00 UTC));
        assert_eq!(
            add_interval(&t, IntervalUnit::Month, 1, UtcOffset::UTC),
            dt(datetime!(2025-02-28 10:00 UTC))
        );
        assert_eq!(
            add_interval(&day(2024, 2, 29), IntervalUnit::Year, 1, UtcOffset::UTC),
            day(2025, 2, 28)
        );
        assert_eq!(
            add_interval(&day(2025, 1, 1), IntervalUnit::Hour, 3, UtcOffset::UTC),
            dt(datetime!(2025-01-01 03:00 UTC))
        );
        assert_eq!(
            add_interval(&t, IntervalUnit::Day, i64::MAX, UtcOffset::UTC),
            Val::Null
        );
        assert_eq!(
            add_interval(&t, IntervalUnit::Month, i64::MIN, UtcOffset::UTC),
            Val::Null
        );
    }

    #[test]
    fn date_diff_counts_boundaries() {
        let a = dt(datetime!(2025-01-01 23:59 UTC));
        let b = dt(datetime!(2025-01-02 00:01 UTC));
        assert_eq!(
            date_diff(IntervalUnit::Day, &a, &b, UtcOffset::UTC),
            Val::Int(1)
        );
        assert_eq!(
            date_diff(IntervalUnit::Day, &b, &a, UtcOffset::UTC),
            Val::Int(-1)
        );
        assert_eq!(
            date_diff(IntervalUnit::Second, &a, &b, UtcOffset::UTC),
            Val::Int(120)
        );
        assert_eq!(
            date_diff(IntervalUnit::Month, &a, &b, UtcOffset::UTC),
            Val::Int(0)
        );
        // In +05:30 both instants fall on 2025-01-02.
        assert_eq!(
            date_diff(IntervalUnit::Day, &a, &b, offset!(+05:30)),
            Val::Int(0)
        );
        // Sunday 2025-01-05 → Monday 2025-01-06 crosses a (Monday-based) week boundary.
        assert_eq!(
            date_diff(
                IntervalUnit::Week,
                &day(2025, 1, 5),
                &day(2025, 1, 6),
                UtcOffset::UTC
            ),
            Val::Int(1)
        );
    }
}
