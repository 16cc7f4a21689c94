//! Instants as microseconds since the Unix epoch, rendered the way PostHog renders them
//! (Python `datetime.isoformat()` with `+00:00` rewritten to `Z`) and parsed the way HogQL's
//! `toDateTime` parses literals (`parseDateTime64BestEffortOrNull`, restricted to ISO 8601).

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// Microseconds since the Unix epoch of `dt`.
pub(crate) fn micros_of(dt: OffsetDateTime) -> i64 {
    let nanos = dt.unix_timestamp_nanos();
    // OffsetDateTime spans at most ±9999 years, which fits an i64 of microseconds.
    i64::try_from(nanos.div_euclid(1000)).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX })
}

/// The instant `us` microseconds after the Unix epoch, clamped into `time`'s range.
pub(crate) fn datetime_of(us: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).unwrap_or(if us < 0 {
        PrimitiveDateTime::MIN.assume_utc()
    } else {
        PrimitiveDateTime::MAX.assume_utc()
    })
}

/// Python `isoformat()` of the instant in `offset`: `2025-01-02T10:00:00.123456+05:30`, the
/// fractional part omitted when it is zero, `Z` for UTC.
pub(crate) fn isoformat(us: i64, offset: UtcOffset) -> String {
    let dt = datetime_of(us).to_offset_saturating(offset);
    let mut out = String::with_capacity(32);
    push_date_time(&mut out, dt, 'T');
    let micros = dt.microsecond();
    if micros != 0 {
        out.push_str(&format!(".{micros:06}"));
    }
    push_offset(&mut out, offset);
    out
}

/// ClickHouse `toString(DateTime64(6, tz))`: `2025-01-02 10:00:00.123456` in `offset`.
pub(crate) fn clickhouse_string(us: i64, offset: UtcOffset) -> String {
    let dt = datetime_of(us).to_offset_saturating(offset);
    let mut out = String::with_capacity(26);
    push_date_time(&mut out, dt, ' ');
    out.push_str(&format!(".{:06}", dt.microsecond()));
    out
}

trait ToOffsetSaturating {
    fn to_offset_saturating(self, offset: UtcOffset) -> OffsetDateTime;
}

impl ToOffsetSaturating for OffsetDateTime {
    fn to_offset_saturating(self, offset: UtcOffset) -> OffsetDateTime {
        self.checked_to_offset(offset).unwrap_or(self)
    }
}

fn push_date_time(out: &mut String, dt: OffsetDateTime, separator: char) {
    out.push_str(&format!(
        "{:04}-{:02}-{:02}{separator}{:02}:{:02}:{:02}",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    ));
}

fn push_offset(out: &mut String, offset: UtcOffset) {
    if offset.is_utc() {
        out.push('Z');
        return;
    }
    let (h, m, _) = offset.as_hms();
    let sign = if offset.is_negative() { '-' } else { '+' };
    out.push_str(&format!(
        "{sign}{:02}:{:02}",
        h.unsigned_abs(),
        m.unsigned_abs()
    ));
}

/// Parses `+05:30`, `-0800`, `+05`, `Z` or `UTC` into an offset.
pub(crate) fn parse_offset(s: &str) -> Option<UtcOffset> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("z") || s.eq_ignore_ascii_case("utc") {
        return Some(UtcOffset::UTC);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1i8, &s[1..]),
        b'-' => (-1i8, &s[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m) = match digits.len() {
        2 => (digits.parse::<i8>().ok()?, 0),
        4 => (
            digits[..2].parse::<i8>().ok()?,
            digits[2..].parse::<i8>().ok()?,
        ),
        _ => return None,
    };
    UtcOffset::from_hms(sign * h, sign * m, 0).ok()
}

/// Parses an ISO 8601 date-time: `YYYY-MM-DD`, optionally followed by `T` or a space and
/// `HH:MM[:SS[.fraction]]`, optionally followed by `Z` or an offset. Without an offset the
/// wall time is read in `default_offset` (the project time zone). Fractions beyond
/// microseconds are truncated. Returns `None` for anything else.
pub(crate) fn parse_datetime(input: &str, default_offset: UtcOffset) -> Option<i64> {
    let s = input.trim();
    // Every valid input is ASCII; checking first makes the byte slicing below safe.
    if !s.is_ascii() {
        return None;
    }
    let bytes = s.as_bytes();
    if bytes.len() < 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let year: i32 = digits(&s[0..4])?;
    let month: u8 = digits(&s[5..7])?;
    let day: u8 = digits(&s[8..10])?;
    let date = Date::from_calendar_date(year, Month::try_from(month).ok()?, day).ok()?;
    let mut rest = &s[10..];
    let mut time = Time::MIDNIGHT;
    if let Some(first) = rest.as_bytes().first()
        && (*first == b'T' || *first == b't' || *first == b' ')
    {
        let (parsed, remaining) = parse_time(&rest[1..])?;
        time = parsed;
        rest = remaining;
    }
    let offset = if rest.trim().is_empty() {
        default_offset
    } else {
        parse_offset(rest)?
    };
    let dt = PrimitiveDateTime::new(date, time).assume_offset(offset);
    Some(micros_of(dt))
}

fn parse_time(s: &str) -> Option<(Time, &str)> {
    let b = s.as_bytes();
    if b.len() < 5 || b[2] != b':' {
        return None;
    }
    let hour: u8 = digits(&s[0..2])?;
    let minute: u8 = digits(&s[3..5])?;
    let mut idx = 5;
    let mut second = 0u8;
    let mut micros = 0u32;
    if b.get(idx) == Some(&b':') {
        second = digits(s.get(idx + 1..idx + 3)?)?;
        idx += 3;
        if b.get(idx) == Some(&b'.') || b.get(idx) == Some(&b',') {
            idx += 1;
            let start = idx;
            while b.get(idx).is_some_and(u8::is_ascii_digit) {
                idx += 1;
            }
            let frac = &s[start..idx];
            if frac.is_empty() {
                return None;
            }
            let mut padded: String = frac.chars().take(6).collect();
            while padded.len() < 6 {
                padded.push('0');
            }
            micros = digits(&padded)?;
        }
    }
    let time = Time::from_hms_micro(hour, minute, second, micros).ok()?;
    Some((time, &s[idx..]))
}

/// Microseconds in a day.
pub(crate) const US_PER_DAY: i64 = 86_400_000_000;

/// Dates further than this many days from 1970-01-01 are out of range (about ±273 000 years:
/// every such day's midnight still fits an `i64` of microseconds).
pub(crate) const MAX_DAYS: i64 = 100_000_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
/// `month` is 1..=12 and `day` 1..=31; the caller keeps `year` within ±[`MAX_DAYS`] / 365.
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    let y = if m <= 2 { year - 1 } else { year };
    let era = (if y >= 0 { y } else { y - 399 }) / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The `(year, month, day)` of a day number (Howard Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Day numbers the mock builds stay within ±MAX_DAYS; the clamp only guards the arithmetic.
    let z = days.clamp(-4 * MAX_DAYS, 4 * MAX_DAYS) + 719_468;
    let era = (if z >= 0 { z } else { z - 146_096 }) / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // `m` is 1..=12 and `d` 1..=31 by construction.
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

/// Days in `month` (1..=12) of `year`.
pub(crate) fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// `day` moved by `months` calendar months, the day of month clamped to the target month's
/// last day (ClickHouse's `addMonths`: 2025-01-31 + 1 month = 2025-02-28). `None` when out of
/// range.
pub(crate) fn add_months_to_day(day: i64, months: i64) -> Option<i64> {
    let (y, m, d) = civil_from_days(day);
    let index = y
        .checked_mul(12)?
        .checked_add(i64::from(m) - 1)?
        .checked_add(months)?;
    let (year, month) = (
        index.div_euclid(12),
        u32::try_from(index.rem_euclid(12)).ok()? + 1,
    );
    if year.unsigned_abs() > (MAX_DAYS / 365).unsigned_abs() {
        return None;
    }
    let out = days_from_civil(year, month, d.min(days_in_month(year, month)));
    (out.unsigned_abs() <= MAX_DAYS.unsigned_abs()).then_some(out)
}

/// `YYYY-MM-DD` of a day number (ClickHouse's `Date` text).
pub(crate) fn format_date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The offset in microseconds.
pub(crate) fn offset_micros(offset: UtcOffset) -> i64 {
    i64::from(offset.whole_seconds()) * 1_000_000
}

/// The calendar day (in `offset`) of the instant `us`.
pub(crate) fn local_day(us: i64, offset: UtcOffset) -> i64 {
    us.saturating_add(offset_micros(offset))
        .div_euclid(US_PER_DAY)
}

/// The instant of midnight of `day` in `offset`; `None` out of range.
pub(crate) fn midnight(day: i64, offset: UtcOffset) -> Option<i64> {
    if day.unsigned_abs() > MAX_DAYS.unsigned_abs() {
        return None;
    }
    Some(day * US_PER_DAY - offset_micros(offset))
}

fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{datetime, offset};

    #[test]
    fn isoformat_matches_python() {
        let us = micros_of(datetime!(2025-01-02 04:30:00.123456 UTC));
        assert_eq!(
            isoformat(us, offset!(+05:30)),
            "2025-01-02T10:00:00.123456+05:30"
        );
        assert_eq!(isoformat(us, UtcOffset::UTC), "2025-01-02T04:30:00.123456Z");
        let whole = micros_of(datetime!(2025-01-02 04:30:00 UTC));
        assert_eq!(isoformat(whole, UtcOffset::UTC), "2025-01-02T04:30:00Z");
        assert_eq!(
            isoformat(whole, offset!(-05:00)),
            "2025-01-01T23:30:00-05:00"
        );
    }

    #[test]
    fn parse_reads_offsets_and_defaults_to_project_zone() {
        let utc = parse_datetime("2025-01-02T04:30:00.123456Z", UtcOffset::UTC).unwrap();
        assert_eq!(utc, micros_of(datetime!(2025-01-02 04:30:00.123456 UTC)));
        let local = parse_datetime("2025-01-02 10:00:00.123456", offset!(+05:30)).unwrap();
        assert_eq!(local, utc);
        let with_offset = parse_datetime("2025-01-02T10:00:00.123456+05:30", UtcOffset::UTC);
        assert_eq!(with_offset, Some(utc));
        assert_eq!(
            parse_datetime("2025-01-02", UtcOffset::UTC),
            Some(micros_of(datetime!(2025-01-02 0:00 UTC)))
        );
        assert_eq!(parse_datetime("yesterday", UtcOffset::UTC), None);
        assert_eq!(parse_datetime("2025-13-02", UtcOffset::UTC), None);
    }

    #[test]
    fn civil_day_numbers_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2025, 1, 1), 20_089);
        assert_eq!(civil_from_days(20_089), (2025, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for day in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        assert_eq!(format_date(days_from_civil(2024, 2, 29)), "2024-02-29");
    }

    #[test]
    fn adding_months_clamps_to_the_month_end() {
        let jan31 = days_from_civil(2025, 1, 31);
        assert_eq!(
            add_months_to_day(jan31, 1),
            Some(days_from_civil(2025, 2, 28))
        );
        assert_eq!(
            add_months_to_day(jan31, -2),
            Some(days_from_civil(2024, 11, 30))
        );
        assert_eq!(
            add_months_to_day(jan31, 13),
            Some(days_from_civil(2026, 2, 28))
        );
        assert_eq!(add_months_to_day(0, i64::MAX), None);
        assert_eq!(add_months_to_day(0, i64::MIN), None);
    }

    #[test]
    fn negative_micros_round_trip() {
        let us = micros_of(datetime!(1969-12-31 23:59:59.5 UTC));
        assert_eq!(us, -500_000);
        assert_eq!(isoformat(us, UtcOffset::UTC), "1969-12-31T23:59:59.500000Z");
    }
}
