//! ClickHouse's JSON functions as PostHog's compiled SQL uses them, over the parsed properties.
//!
//! PostHog compiles `properties.x` to
//! `replaceRegexpAll(nullIf(nullIf(JSONExtractRaw(properties, 'x'), ''), 'null'), '^"|"$', '')`
//! (`posthog/hogql/printer`, `_unsafe_json_extract_trim_quotes`): the value's JSON text as
//! ClickHouse's `JSONExtractRaw` writes it back, with one leading and one trailing `"` cut. So
//! string values keep their JSON escapes and numbers are ClickHouse's re-rendering of the
//! parsed double or integer. Every rule here was checked against ClickHouse 26.9 (chdb 4.4);
//! the probes are quoted next to the tests below.

use std::borrow::Cow;

use serde_json::Value as Json;

/// Appends `v` as ClickHouse's `JSONExtractRaw` writes it: compact (no whitespace), object keys
/// in document order, numbers as [`write_float`] / integers, strings as [`write_string`].
pub(crate) fn write_raw(v: &Json, out: &mut String) {
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else {
                write_float(n.as_f64().unwrap_or(f64::NAN), out);
            }
        }
        Json::String(s) => {
            out.push('"');
            write_string(s, out);
            out.push('"');
        }
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_raw(item, out);
            }
            out.push(']');
        }
        Json::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('"');
                write_string(k, out);
                out.push_str("\":");
                write_raw(item, out);
            }
            out.push('}');
        }
    }
}

/// `v` as `JSONExtractRaw` writes it.
pub(crate) fn raw(v: &Json) -> String {
    let mut out = String::new();
    write_raw(v, &mut out);
    out
}

/// `properties.a.b` for the value found at the path: PostHog's trimmed `JSONExtractRaw` text.
/// JSON null is NULL (`None`); a string is its escaped inside (borrowed when nothing needs
/// escaping); anything else its raw text.
pub(crate) fn property_text(v: &Json) -> Option<Cow<'_, str>> {
    match v {
        Json::Null => None,
        Json::String(s) => Some(escaped(s)),
        other => Some(Cow::Owned(raw(other))),
    }
}

/// `JSONExtractString` of the value found: a string decoded, JSON null `''`, anything else its
/// raw text (ClickHouse ≥ 21.11).
pub(crate) fn extract_string(v: &Json) -> Cow<'_, str> {
    match v {
        Json::Null => Cow::Borrowed(""),
        Json::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(raw(other)),
    }
}

/// `JSONExtractInt` of the value found: integers that fit Int64; doubles truncated toward zero
/// when in Int64's range, else 0; strings read as an integer, else as a float converted the
/// same way; `true`/`false`, null, objects and arrays 0.
pub(crate) fn extract_int(v: &Json) -> i64 {
    match v {
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i,
            // A UInt64 above Int64's range does not convert.
            (None, Some(_)) => 0,
            (None, None) => float_to_int(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => parse_int_text(s)
            .or_else(|| parse_float_text(s).map(float_to_int))
            .unwrap_or(0),
        _ => 0,
    }
}

/// `JSONExtractFloat` of the value found: numbers as doubles, strings read as a float
/// (ClickHouse's float text: `inf`, `nan` included), everything else (`true` too) 0.
pub(crate) fn extract_float(v: &Json) -> f64 {
    match v {
        Json::Number(n) => n.as_f64().unwrap_or(0.0),
        Json::String(s) => parse_float_text(s).unwrap_or(0.0),
        _ => 0.0,
    }
}

/// ClickHouse's conversion of a double to Int64 inside `JSONExtractInt`
/// (`accurate::convertNumeric`, not strict): truncation toward zero, 0 out of range; NaN
/// becomes Int64's minimum (the value x86 gives for it).
fn float_to_int(f: f64) -> i64 {
    // -2^63 and 2^63 are exact doubles.
    const MIN: f64 = -9_223_372_036_854_775_808.0;
    if f.is_nan() {
        i64::MIN
    } else if (MIN..-MIN).contains(&f) {
        f.trunc() as i64
    } else {
        0
    }
}

/// `s` as the inside of a JSON string literal, as ClickHouse writes it (`writeJSONString`,
/// forward slashes not escaped).
pub(crate) fn escaped(s: &str) -> Cow<'_, str> {
    if s.chars().all(|c| !needs_escape(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    write_string(s, &mut out);
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c < ' ' || c == '"' || c == '\\' || c == '\u{2028}' || c == '\u{2029}'
}

/// Appends `s` escaped as ClickHouse's JSON writer does: `\"`, `\\`, `\b \f \n \r \t`, other
/// control characters as `\u00XX` with upper-case hex, U+2028 / U+2029 as `\u2028` /
/// `\u2029`; `/`, DEL and all other characters as they are.
pub(crate) fn write_string(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if c < ' ' => {
                out.push_str(&format!("\\u{:04X}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
}

/// Appends a Float64 as ClickHouse writes it (`writeFloatText`): the shortest digits that read
/// back as the same double; plain notation when the decimal exponent `n` (value =
/// 0.d₁d₂… × 10ⁿ) is in -5..=21 — integral values without a fraction (`3.0` → `3`,
/// `1e20` → `100000000000000000000`), small ones as `0.000001` — else `d[.ddd]e[-]x` without a
/// `+` (`1e21`, `1e-7`, `1.5e300`); `-0` for negative zero.
pub(crate) fn write_float(f: f64, out: &mut String) {
    if f.is_nan() {
        out.push_str("nan");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "inf" } else { "-inf" });
        return;
    }
    if f == 0.0 {
        out.push_str(if f.is_sign_negative() { "-0" } else { "0" });
        return;
    }
    if f < 0.0 {
        out.push('-');
    }
    // The shortest round-trip digits with exact halfway cases to even, as ClickHouse picks
    // them; serde_json's writer does the same (checked on 50 000 doubles), Rust's `{:e}`
    // rounds such ties up (637784620850204.25: ClickHouse `…204.2`, `{:e}` `…204.3`).
    let text = Json::from(f.abs()).to_string();
    let (mantissa, exp) = text.split_once(['e', 'E']).unwrap_or((&text, "0"));
    let exp: i64 = exp.parse().unwrap_or(0);
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all: String = format!("{int_part}{frac_part}");
    let leading = i64::try_from(all.len() - all.trim_start_matches('0').len()).unwrap_or(0);
    let digits = all.trim_start_matches('0').trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let k = i64::try_from(digits.len()).unwrap_or(i64::MAX);
    // value = 0.d₁d₂… × 10ⁿ
    let n = i64::try_from(int_part.len()).unwrap_or(0) - leading + exp;
    let zeros = |count: i64| "0".repeat(usize::try_from(count).unwrap_or(0));
    if k <= n && n <= 21 {
        out.push_str(digits);
        out.push_str(&zeros(n - k));
    } else if 0 < n && n <= 21 {
        let at = usize::try_from(n).unwrap_or(0);
        out.push_str(&digits[..at]);
        out.push('.');
        out.push_str(&digits[at..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.push_str(&zeros(-n));
        out.push_str(digits);
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push_str(&(n - 1).to_string());
    }
}

/// ClickHouse's integer text (`tryReadIntText` to the end): an optional `+`/`-`, then ASCII
/// digits; no spaces; overflow is a failure.
fn parse_int_text(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Rust accepts exactly this grammar (sign, digits) and fails on overflow.
    s.parse::<i64>().ok()
}

/// ClickHouse's float text (`tryReadFloatText` to the end): an optional sign, then `inf` or
/// `infinity`, `nan` optionally followed by `(chars)` (letters, digits, `_`) — all
/// case-insensitive — or a decimal with at least one digit (`5.`, `.5`) and an optional
/// exponent with digits. No spaces. Overflow gives ±inf, underflow 0.
fn parse_float_text(s: &str) -> Option<f64> {
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let signed = |f: f64| if negative { -f } else { f };
    if lower == "inf" || lower == "infinity" {
        return Some(signed(f64::INFINITY));
    }
    if let Some(rest) = lower.strip_prefix("nan") {
        let payload_ok = rest.is_empty()
            || rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        return payload_ok.then_some(f64::NAN);
    }
    let bytes = body.as_bytes();
    let mut i = 0;
    let int_digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        i += frac_digits;
    }
    if int_digits + frac_digits == 0 {
        return None;
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if exp_digits == 0 {
            return None;
        }
        i += exp_digits;
    }
    if i != bytes.len() {
        return None;
    }
    // The grammar checked above is a subset of what Rust parses, with the same value.
    body.parse::<f64>().ok().map(signed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw_of(text: &str) -> String {
        raw(&serde_json::from_str::<Json>(text).unwrap())
    }

    /// chdb 4.4 / ClickHouse 26.9:
    /// `SELECT JSONExtractRaw('{"a":<value>}', 'a')` for each value.
    #[test]
    fn raw_numbers_are_clickhouses_float_text() {
        for (input, ch) in [
            ("1.0", "1"),
            ("1735690141.0", "1735690141"),
            ("3", "3"),
            ("-0.0", "-0"),
            ("1e5", "100000"),
            ("2.50", "2.5"),
            ("1.5e300", "1.5e300"),
            ("1e-7", "1e-7"),
            ("0.000001", "0.000001"),
            ("0.0001", "0.0001"),
            ("0.1", "0.1"),
            ("0.30000000000000004", "0.30000000000000004"),
            ("9223372036854775807", "9223372036854775807"),
            ("9223372036854775808", "9223372036854775808"),
            ("18446744073709551615", "18446744073709551615"),
            ("-9223372036854775808", "-9223372036854775808"),
            ("1e21", "1e21"),
            ("1e20", "100000000000000000000"),
            ("1e16", "10000000000000000"),
            ("123456789.123456789", "123456789.12345679"),
            ("42.5", "42.5"),
            ("1.7976931348623157e308", "1.7976931348623157e308"),
            ("5e-324", "5e-324"),
            ("100.0", "100"),
            // Beyond UInt64 serde_json reads a double (the stored text is then its
            // `1.2345678901234568e29`), which ClickHouse writes so.
            ("123456789012345678901234567890", "1.2345678901234568e29"),
            ("18446744073709551616", "18446744073709552000"),
        ] {
            assert_eq!(raw_of(input), ch, "{input}");
        }
    }

    /// 50 000 doubles (random decimal mantissas with exponents in 1e-25..1e25, random bit
    /// patterns, and 30 000 values with few fraction bits near 1e15, where the shortest
    /// digits can tie) written by `JSONExtractRaw` in chdb all came out as `write_float`
    /// writes them; a few of them, with ClickHouse's text. Exact ties go to even:
    /// `JSONExtractRaw('{"a":637784620850204.25}','a')` = `637784620850204.2` (Rust's own `{}`
    /// writes `…204.3`).
    #[test]
    fn float_text_follows_the_fixed_and_exponent_ranges() {
        let text = |f: f64| {
            let mut s = String::new();
            write_float(f, &mut s);
            s
        };
        assert_eq!(text(9.999_999_999_999_999e20), "999999999999999900000");
        assert_eq!(text(1.5e-7), "1.5e-7");
        assert_eq!(text(0.000_001_23), "0.00000123");
        assert_eq!(text(1.23e21), "1.23e21");
        assert_eq!(text(123e18), "123000000000000000000");
        assert_eq!(text(-1234.5678), "-1234.5678");
        assert_eq!(
            text(2.225_073_858_507_201_4e-308),
            "2.2250738585072014e-308"
        );
        assert_eq!(text(1.0 / 3.0), "0.3333333333333333");
        // x.25 exactly (these doubles have quarter steps): halfway between x.2 and x.3.
        assert_eq!(text(637_784_620_850_204.0 + 0.25), "637784620850204.2");
        assert_eq!(text(-1_383_002_209_900_943.0 - 0.25), "-1383002209900943.2");
        assert_eq!(text(1_126_734_419_582_309.0 + 0.25), "1126734419582309.2");
    }

    /// `SELECT hex(arrayJoin(JSONExtractArrayRaw(<every character 0..0x80 and a few others,
    /// escaped as \uXXXX>)))`: control characters become `\u00XX` upper case (short forms for
    /// \b \f \n \r \t), `"` and `\` are escaped, U+2028/U+2029 become `\u2028`/`\u2029`; `/`
    /// (even with output_format_json_escape_forward_slashes=1), DEL, U+00A0, U+FEFF and emoji
    /// stay as they are; `\u00e9` comes back as `é`.
    #[test]
    fn raw_strings_are_reescaped_as_clickhouse_does() {
        assert_eq!(raw_of(r#""x\ty""#), r#""x\ty""#);
        assert_eq!(raw_of(r#""J\"JJ\"""#), r#""J\"JJ\"""#);
        assert_eq!(raw_of(r#""\u00e9""#), "\"é\"");
        assert_eq!(raw_of(r#""\/path""#), "\"/path\"");
        assert_eq!(raw_of(r#""\ud83d\ude00""#), "\"😀\"");
        assert_eq!(raw_of(r#""\u0001""#), r#""\u0001""#);
        assert_eq!(raw_of(r#""\u001f\u000b""#), r#""\u001F\u000B""#);
        assert_eq!(raw_of(r#""\u0000""#), r#""\u0000""#);
        assert_eq!(raw_of(r#""\u007f""#), "\"\u{7f}\"");
        assert_eq!(raw_of(r#""\b\f\n\r""#), r#""\b\f\n\r""#);
        assert_eq!(raw_of(r#""\\""#), r#""\\""#);
        assert_eq!(raw_of(r#""\u2028\u2029""#), r#""\u2028\u2029""#);
        assert_eq!(raw_of(r#""<>&\u00a0""#), "\"<>&\u{a0}\"");
    }

    /// `SELECT JSONExtractRaw('{"a": { "b" : 1.0 , "c":[1, 2.0, "x" ,null,true] } }', 'a')` →
    /// `{"b":1,"c":[1,2,"x",null,true]}`; keys are escaped like values and keep their order
    /// (`{"k\t\"/\u2028\u0001":[1.0,{"x y":"é\n"}],"b":{}}` comes back so, `1` for `1.0`).
    #[test]
    fn raw_objects_and_arrays_are_compact() {
        assert_eq!(
            raw_of(r#"{ "b" : 1.0 , "c":[1, 2.0, "x" ,null,true] }"#),
            r#"{"b":1,"c":[1,2,"x",null,true]}"#
        );
        assert_eq!(raw_of("[ ]"), "[]");
        assert_eq!(raw_of("{}"), "{}");
        assert_eq!(
            raw_of(r#"{"k\t\"/\u2028\u0001":[1.0,{"x y":"é\n"}]}"#),
            r#"{"k\t\"/\u2028\u0001":[1,{"x y":"é\n"}]}"#
        );
    }

    /// `replaceRegexpAll(nullIf(nullIf(JSONExtractRaw(j, 'a'), ''), 'null'), '^"|"$', '')`:
    /// `"x\ty"` → `x\ty` (backslash, t), `""` → `''`, `"null"` → `null`, `null` → NULL.
    #[test]
    fn property_text_is_the_trimmed_raw_text() {
        let p = |v: Json| property_text(&v).map(Cow::into_owned);
        assert_eq!(p(json!("x\ty")), Some("x\\ty".to_owned()));
        assert_eq!(
            p(json!("Jürgen \"JJ\" Schmidt")),
            Some("Jürgen \\\"JJ\\\" Schmidt".to_owned())
        );
        assert_eq!(p(json!("")), Some(String::new()));
        assert_eq!(p(json!("null")), Some("null".to_owned()));
        assert_eq!(p(Json::Null), None);
        assert_eq!(p(json!(true)), Some("true".to_owned()));
        assert_eq!(p(json!({"three": 3.0})), Some(r#"{"three":3}"#.to_owned()));
        assert!(matches!(
            property_text(&json!("plain")),
            Some(Cow::Borrowed("plain"))
        ));
    }

    /// `SELECT JSONExtractInt(j,'a'), JSONExtractFloat(j,'a'), JSONExtractString(j,'a')` for
    /// `j = '{"a":<value>}'`.
    #[test]
    fn extract_functions_follow_clickhouse() {
        let cases: &[(&str, i64, f64, &str)] = &[
            ("true", 0, 0.0, "true"),
            ("false", 0, 0.0, "false"),
            ("null", 0, 0.0, ""),
            ("42", 42, 42.0, "42"),
            ("-42", -42, -42.0, "-42"),
            ("42.5", 42, 42.5, "42.5"),
            ("-42.5", -42, -42.5, "-42.5"),
            ("1e300", 0, 1e300, "1e300"),
            (
                "9223372036854775807",
                i64::MAX,
                9.223_372_036_854_776e18,
                "9223372036854775807",
            ),
            (
                "9223372036854775808",
                0,
                9.223_372_036_854_776e18,
                "9223372036854775808",
            ),
            ("9.3e18", 0, 9.3e18, "9300000000000000000"),
            ("-9.3e18", 0, -9.3e18, "-9300000000000000000"),
            (
                "1e18",
                1_000_000_000_000_000_000,
                1e18,
                "1000000000000000000",
            ),
            (r#""42""#, 42, 42.0, "42"),
            (r#""42.5""#, 42, 42.5, "42.5"),
            (r#"" 42""#, 0, 0.0, " 42"),
            (r#""4e2""#, 400, 400.0, "4e2"),
            (r#""abc""#, 0, 0.0, "abc"),
            (r#""+5""#, 5, 5.0, "+5"),
            (r#""0x10""#, 0, 0.0, "0x10"),
            (r#""007""#, 7, 7.0, "007"),
            (
                r#""9223372036854775808""#,
                0,
                9.223_372_036_854_776e18,
                "9223372036854775808",
            ),
            (
                r#""-9223372036854775809""#,
                i64::MIN,
                -9.223_372_036_854_776e18,
                "-9223372036854775809",
            ),
            (r#""true""#, 0, 0.0, "true"),
            ("{}", 0, 0.0, "{}"),
            (r#"{"b":1.0}"#, 0, 0.0, r#"{"b":1}"#),
            ("[1]", 0, 0.0, "[1]"),
        ];
        for (input, int, float, string) in cases {
            let v: Json = serde_json::from_str(input).unwrap();
            assert_eq!(extract_int(&v), *int, "JSONExtractInt {input}");
            assert_eq!(extract_float(&v), *float, "JSONExtractFloat {input}");
            assert_eq!(extract_string(&v), *string, "JSONExtractString {input}");
        }
    }

    /// `JSONExtractInt` / `JSONExtractFloat` of `'{"a":"<text>"}'`: which texts ClickHouse
    /// reads as numbers (0 / 0 where it reads none).
    #[test]
    fn numeric_text_is_read_as_clickhouse_reads_it() {
        let int = |s: &str| extract_int(&json!(s));
        let float = |s: &str| extract_float(&json!(s));
        for (s, i, f) in [
            ("-0", 0, -0.0),
            ("42.", 42, 42.0),
            (".5", 0, 0.5),
            ("-.5", 0, -0.5),
            ("5.e3", 5000, 5000.0),
            ("5e+3", 5000, 5000.0),
            ("5E3", 5000, 5000.0),
            ("5e-3", 0, 0.005),
            ("0.1e1", 1, 1.0),
            ("1e0005", 100_000, 100_000.0),
            ("1e-400", 0, 0.0),
            (
                "-9.2233720368547758e18",
                i64::MIN,
                -9.223_372_036_854_776e18,
            ),
        ] {
            assert_eq!((int(s), float(s)), (i, f), "{s}");
        }
        for s in [
            "--42",
            "+-4",
            "5e",
            "5e+",
            "e5",
            ".",
            "+",
            "-",
            "",
            "infx",
            "in",
            "infin",
            "infinityx",
            "1.e",
            "-.e1",
            ".e1",
            "0e",
            "1e+-1",
            "٣",
            "１",
            "+-inf",
            "1 ",
            "\t1",
            "1\n",
            "12a",
            "1_0",
            "0b1",
            "nan(",
            "nan(a-b)",
            "nanx",
            "1.5.2",
            "1e5e5",
            "Infinit",
        ] {
            assert_eq!((int(s), float(s)), (0, 0.0), "{s:?}");
        }
        for s in [
            "inf", "+inf", "Inf", "INF", "infinity", "Infinity", "infINITY", "1e400",
        ] {
            assert_eq!((int(s), float(s)), (0, f64::INFINITY), "{s}");
        }
        assert_eq!(float("-Infinity"), f64::NEG_INFINITY);
        assert_eq!(float("-1e400"), f64::NEG_INFINITY);
        for s in [
            "nan",
            "NaN",
            "-nan",
            "+nan",
            "NAN",
            "nan(1)",
            "nan()",
            "nan(ab_1)",
            "-nan(0)",
        ] {
            assert_eq!(int(s), i64::MIN, "{s}");
            assert!(float(s).is_nan(), "{s}");
        }
    }
}
