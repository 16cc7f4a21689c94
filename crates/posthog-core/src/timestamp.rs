//! RFC 3339 timestamps as PostHog writes them, to and from microseconds since the epoch.
//!
//! PostHog renders DateTimes with Python's `isoformat()`: `2025-01-02T13:57:30.178957Z`, or
//! with an offset such as `+05:30` when the project time zone is applied; fractional seconds are
//! absent when zero, else 6 digits. This parser takes any RFC 3339 form (also a space instead of
//! `T`, 1 to 9 fraction digits as long as the digits past the 6th are zero, and a missing
//! offset read as UTC) and returns the instant, so cursors compare as instants, never as text.
//! It is a hot path: one call per event, no allocation.

use crate::UnixMicros;

/// Parses an RFC 3339 timestamp into microseconds since the Unix epoch (UTC). `None` when the
/// text is not a valid timestamp or holds sub-microsecond precision.
///
/// ```
/// use posthog_core::parse_timestamp;
/// let utc = parse_timestamp("2025-01-02T13:57:30.178957Z").unwrap();
/// let kolkata = parse_timestamp("2025-01-02T19:27:30.178957+05:30").unwrap();
/// assert_eq!(utc, kolkata);
/// ```
pub fn parse_timestamp(s: &str) -> Option<UnixMicros> {
    let b = s.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let year = digits(b, 0, 4)? as i64;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let hour = digits(b, 11, 2)?;
    let minute = digits(b, 14, 2)?;
    let second = digits(b, 17, 2)?;
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    // 60 would be a leap second; PostHog never writes one and Unix time has none.
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            let d = i64::from(b[i] - b'0');
            let n = i - start;
            if n < 6 {
                micros = micros * 10 + d;
            } else if d != 0 {
                return None;
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 9 {
            return None;
        }
        for _ in n..6 {
            micros *= 10;
        }
    }
    let offset_secs: i64 = match b.get(i) {
        None => 0,
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = digits(b, i + 1, 2)?;
            let om = digits(b, i + 4, 2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let secs = i64::from(oh * 3600 + om * 60);
            if sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
    Some(secs * 1_000_000 + micros)
}

/// Formats microseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (always 6 digits,
/// always UTC) into `out`.
///
/// ```
/// let mut s = String::new();
/// posthog_core::format_timestamp(1_735_826_250_178_957, &mut s);
/// assert_eq!(s, "2025-01-02T13:57:30.178957Z");
/// ```
pub fn format_timestamp(micros: UnixMicros, out: &mut String) {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    if (0..=9999).contains(&year) {
        let y = year as u32;
        push2(out, y / 100);
        push2(out, y % 100);
    } else {
        use std::fmt::Write;
        // Writing into a String cannot fail.
        let _ = write!(out, "{year:+05}");
    }
    out.push('-');
    push2(out, month);
    out.push('-');
    push2(out, day);
    out.push('T');
    push2(out, sod / 3600);
    out.push(':');
    push2(out, sod / 60 % 60);
    out.push(':');
    push2(out, sod % 60);
    out.push('.');
    push2(out, frac / 10_000);
    push2(out, frac / 100 % 100);
    push2(out, frac % 100);
    out.push('Z');
}

fn push2(out: &mut String, v: u32) {
    out.push(char::from(b'0' + (v / 10 % 10) as u8));
    out.push(char::from(b'0' + (v % 10) as u8));
}

fn digits(b: &[u8], at: usize, len: usize) -> Option<u32> {
    let mut v = 0u32;
    for &c in b.get(at..at + len)? {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_precision_give_the_same_instant() {
        let base = parse_timestamp("2025-01-02T13:57:30.178957Z").unwrap();
        assert_eq!(base, 1_735_826_250_178_957);
        for same in [
            "2025-01-02T19:27:30.178957+05:30",
            "2025-01-02T08:57:30.178957-05:00",
            "2025-01-02 13:57:30.178957",
            "2025-01-02T13:57:30.178957000Z",
        ] {
            assert_eq!(parse_timestamp(same), Some(base), "{same}");
        }
        assert_eq!(
            parse_timestamp("2025-01-02T13:57:30Z"),
            Some(1_735_826_250_000_000)
        );
        assert_eq!(
            parse_timestamp("2025-01-02T13:57:30.5Z"),
            Some(1_735_826_250_500_000)
        );
    }

    #[test]
    fn invalid_timestamps_are_refused() {
        for bad in [
            "",
            "2025-01-02",
            "2025-13-02T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2025-01-02T24:00:00Z",
            "2025-01-02T13:57:30.Z",
            "2025-01-02T13:57:30.1234567Z",
            "2025-01-02T13:57:30Zjunk",
            "2025-01-02T13:57:30+5:30",
            "２０２５-01-02T13:57:30Z",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
        assert!(parse_timestamp("2024-02-29T00:00:00Z").is_some());
    }

    #[test]
    fn formatting_round_trips_over_a_wide_range() {
        let mut s = String::new();
        for micros in [
            0,
            -1,
            1_735_826_250_178_957,
            -62_135_596_800_000_000, // 0001-01-01
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999
            951_782_400_000_001,     // 2000-02-29
        ] {
            s.clear();
            format_timestamp(micros, &mut s);
            assert_eq!(parse_timestamp(&s), Some(micros), "{s}");
        }
        s.clear();
        format_timestamp(0, &mut s);
        assert_eq!(s, "1970-01-01T00:00:00.000000Z");
    }
}
