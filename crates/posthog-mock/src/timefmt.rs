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
    fn negative_micros_round_trip() {
        let us = micros_of(datetime!(1969-12-31 23:59:59.5 UTC));
        assert_eq!(us, -500_000);
        assert_eq!(isoformat(us, UtcOffset::UTC), "1969-12-31T23:59:59.500000Z");
    }
}
