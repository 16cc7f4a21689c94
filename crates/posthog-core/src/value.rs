//! One JSON value, read from its source text without building a DOM.
//!
//! PostHog rows arrive as JSON text. The parser hands us each value as a borrowed slice of that
//! text (`&RawValue`); [`Scalar::classify`] looks at the first byte and decodes only what a
//! column needs: a string without escapes stays a borrowed slice, a number is parsed once,
//! objects and arrays stay JSON text (made compact if the source had whitespace).
//!
//! Nothing here loses information: a number that fits neither `i64` nor a finite `f64` (say
//! `1e400` or `18446744073709551616`), or a string whose escapes do not decode to UTF-8 (a lone
//! surrogate like `"\ud800"`), is kept as its exact JSON text ([`Scalar::Json`]).

use std::borrow::Cow;

/// One JSON value's source text, known to be JSON: a `serde_json` [`RawValue`] or a
/// [`RowValue`](crate::RowValue) of a scanned row. What the batch builder and the cursor
/// readers take.
///
/// [`RawValue`]: serde_json::value::RawValue
pub trait JsonText {
    /// The value's JSON text.
    fn json_text(&self) -> &str;
}

impl JsonText for serde_json::value::RawValue {
    fn json_text(&self) -> &str {
        self.get()
    }
}

impl JsonText for Box<serde_json::value::RawValue> {
    fn json_text(&self) -> &str {
        self.get()
    }
}

impl JsonText for crate::RowValue<'_> {
    fn json_text(&self) -> &str {
        self.get()
    }
}

impl<T: JsonText + ?Sized> JsonText for &T {
    fn json_text(&self) -> &str {
        (**self).json_text()
    }
}

/// A decoded JSON value, borrowing from the page text where it can.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    /// JSON `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A JSON integer (no fraction, no exponent) that fits `i64`.
    Int(i64),
    /// Any other JSON number with a finite `f64` value.
    Float(f64),
    /// A JSON string, unescaped.
    Str(Cow<'a, str>),
    /// JSON text kept as text: an object or array (compact), or a number or string that has no
    /// exact typed form.
    Json(Cow<'a, str>),
}

impl<'a> Scalar<'a> {
    /// Classifies one JSON value given as valid JSON text (as a `RawValue` guarantees;
    /// surrounding whitespace allowed). Never fails: what cannot be decoded stays JSON text.
    pub fn classify(raw: &'a str) -> Scalar<'a> {
        let raw = trim_json_ws(raw);
        match raw.as_bytes().first() {
            None => Scalar::Json(Cow::Borrowed(raw)),
            Some(b'n') => Scalar::Null,
            Some(b't') => Scalar::Bool(true),
            Some(b'f') => Scalar::Bool(false),
            Some(b'"') => match unescape_string(raw) {
                Some(s) => Scalar::Str(s),
                None => Scalar::Json(Cow::Borrowed(raw)),
            },
            Some(b'{' | b'[') => Scalar::Json(compact_json(raw)),
            Some(_) => classify_number(raw),
        }
    }

    /// [`Scalar::classify`] of a value decoded into a `String` of its own: JSON text that is
    /// already compact keeps that `String` (no copy); anything else owns its text.
    pub(crate) fn classify_owned(text: String) -> Scalar<'static> {
        let scalar = Scalar::classify(&text);
        if let Scalar::Json(Cow::Borrowed(json)) = &scalar
            && json.len() == text.len()
        {
            return Scalar::Json(Cow::Owned(text));
        }
        scalar.into_owned()
    }

    /// The value with its text owned.
    pub(crate) fn into_owned(self) -> Scalar<'static> {
        match self {
            Scalar::Null => Scalar::Null,
            Scalar::Bool(b) => Scalar::Bool(b),
            Scalar::Int(i) => Scalar::Int(i),
            Scalar::Float(f) => Scalar::Float(f),
            Scalar::Str(s) => Scalar::Str(Cow::Owned(s.into_owned())),
            Scalar::Json(s) => Scalar::Json(Cow::Owned(s.into_owned())),
        }
    }

    /// The JSON text of this value (compact), as written into a JSON-typed column.
    pub fn to_json_text(&self) -> Cow<'a, str> {
        match self {
            Scalar::Null => Cow::Borrowed("null"),
            Scalar::Bool(true) => Cow::Borrowed("true"),
            Scalar::Bool(false) => Cow::Borrowed("false"),
            Scalar::Int(i) => Cow::Owned(itoa::Buffer::new().format(*i).to_owned()),
            Scalar::Float(f) => Cow::Owned(format_f64(*f)),
            Scalar::Str(s) => Cow::Owned(json_quote(s)),
            Scalar::Json(text) => text.clone(),
        }
    }

    /// [`Scalar::to_json_text`] by value: the text of a JSON value moves out, not copied.
    pub(crate) fn into_json_text(self) -> Cow<'a, str> {
        match self {
            Scalar::Json(text) => text,
            other => other.to_json_text(),
        }
    }
}

/// Shortest text that reads back as the same `f64`; always has a `.` or exponent, so it reads
/// back as a float, never an integer.
pub(crate) fn format_f64(f: f64) -> String {
    ryu::Buffer::new().format_finite(f).to_owned()
}

/// JSON string literal for `s` (quotes and escapes added).
pub(crate) fn json_quote(s: &str) -> String {
    // Serialising a &str to JSON cannot fail: it only writes into a String.
    serde_json::to_string(s).unwrap_or_default()
}

/// JSON's insignificant whitespace.
pub(crate) fn is_json_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// `text` without JSON's insignificant whitespace at either end. Byte by byte (whitespace is
/// ASCII), and at once when neither end has any, as the values of a compact page do: trimmed
/// as `char`s, every value paid a decoding step at each end (`trim_matches`, ~37 instructions
/// a call, 2 M calls per 100 000 default events).
#[inline]
pub(crate) fn trim_json_ws(text: &str) -> &str {
    let ws = |b: &u8| crate::json::is_ws(*b);
    let b = text.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) if !ws(first) && !ws(last) => text,
        _ => {
            let start = b.iter().position(|c| !ws(c)).unwrap_or(b.len());
            let end = b.iter().rposition(|c| !ws(c)).map_or(start, |at| at + 1);
            // Both ends sit next to ASCII bytes (or at the text's ends): char boundaries.
            text.get(start..end).unwrap_or_default()
        }
    }
}

fn classify_number(raw: &str) -> Scalar<'_> {
    let is_integer = !raw.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'));
    if is_integer {
        if let Ok(i) = raw.parse::<i64>() {
            return Scalar::Int(i);
        }
    } else if let Ok(f) = raw.parse::<f64>()
        && f.is_finite()
        && (f != 0.0 || !underflows(raw))
    {
        return Scalar::Float(f);
    }
    Scalar::Json(Cow::Borrowed(raw))
}

/// True when a number literal has a non-zero digit before its exponent (so a parse to zero
/// means it underflowed, e.g. `1e-400`).
fn underflows(raw: &str) -> bool {
    raw.bytes()
        .take_while(|&b| b != b'e' && b != b'E')
        .any(|b| matches!(b, b'1'..=b'9'))
}

/// Decodes a JSON string literal. Borrowed when it has no escapes; `None` when the escapes do
/// not decode to UTF-8 (lone surrogates).
fn unescape_string(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.get(1..raw.len().saturating_sub(1))?;
    // Eight bytes at a time: `contains` searched with core's portable `memchr`, ~100
    // instructions a call on the strings `classify` meets (uuids, names, timestamps).
    if crate::json::find_backslash(inner.as_bytes()).is_none() {
        return Some(Cow::Borrowed(inner));
    }
    let mut out = String::new();
    if !unescape_into(raw, &mut out) {
        return None;
    }
    Some(Cow::Owned(out))
}

/// Decodes the JSON string literal `raw` (with its quotes) into `out`. False when it is not a
/// well-formed literal or its escapes are not valid Unicode (a lone surrogate); `out` then
/// holds partial text.
///
/// A hot path: the properties of every event arrive as one escaped string. Backslashes are
/// found eight bytes at a time and the plain runs between them copied whole; the output is a `String`
/// built from `str` runs and decoded `char`s, so it needs no UTF-8 check afterwards.
pub(crate) fn unescape_into(raw: &str, out: &mut String) -> bool {
    let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return false;
    };
    unescape_content(inner, out)
}

/// Decodes the text between a JSON string literal's quotes into `out`; see [`unescape_into`].
pub(crate) fn unescape_content(inner: &str, out: &mut String) -> bool {
    let bytes = inner.as_bytes();
    out.reserve(bytes.len());
    let mut i = 0;
    while let Some(k) = crate::json::find_backslash(&bytes[i..]) {
        // A backslash is ASCII, so both ends of the run are char boundaries.
        out.push_str(&inner[i..i + k]);
        i += k;
        let Some(&kind) = bytes.get(i + 1) else {
            return false;
        };
        let mut used = 2;
        let c = match kind {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let Some((c, n)) = unicode_escape(inner, i) else {
                    return false;
                };
                used = n;
                c
            }
            _ => return false,
        };
        out.push(c);
        i += used;
    }
    out.push_str(&inner[i..]);
    true
}

/// The character the `\u` escape at `text[at]` (its backslash) spells, and how many bytes it
/// takes: 6, or 12 for a pair of surrogates (a character past the BMP). `None` when it is
/// malformed or a surrogate without its other half.
pub(crate) fn unicode_escape(text: &str, at: usize) -> Option<(char, usize)> {
    let high = hex4(text.get(at + 2..at + 6))?;
    if !(0xD800..0xDC00).contains(&high) {
        return char::from_u32(high).map(|c| (c, 6)); // a lone low surrogate is no character
    }
    let low = text
        .get(at + 6..at + 8)
        .filter(|s| *s == "\\u")
        .and_then(|_| hex4(text.get(at + 8..at + 12)))
        .filter(|low| (0xDC00..0xE000).contains(low))?;
    char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)).map(|c| (c, 12))
}

fn hex4(s: Option<&str>) -> Option<u32> {
    let s = s?;
    if s.len() != 4 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// Removes insignificant whitespace from valid JSON text, leaving strings, numbers and escapes
/// exactly as they were. Borrowed when there is nothing to remove.
pub fn compact_json(raw: &str) -> Cow<'_, str> {
    let bytes = raw.as_bytes();
    // Most nested values arrive compact: one plain pass settles it.
    if !bytes
        .iter()
        .any(|&b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return Cow::Borrowed(raw);
    }
    let first_ws = {
        let mut in_string = false;
        let mut escaped = false;
        bytes.iter().position(|&b| {
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
                false
            } else if b == b'"' {
                in_string = true;
                false
            } else {
                matches!(b, b' ' | b'\t' | b'\n' | b'\r')
            }
        })
    };
    let Some(start) = first_ws else {
        return Cow::Borrowed(raw);
    };
    let mut out = String::with_capacity(raw.len());
    out.push_str(&raw[..start]);
    let mut in_string = false;
    let mut escaped = false;
    for c in raw[start..].chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            out.push(c);
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !is_json_ws(c) {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_whitespace_is_trimmed_from_either_end() {
        for text in [
            "",
            " ",
            " \t\r\n ",
            "42",
            " 42",
            "42\n",
            "\t\"a b\" ",
            "\u{c}1\u{c}",
            "\u{a0}x\u{a0}",
            " é ",
            "\n{ \"k\": [1, 2] }\r",
            "a b",
            " \u{2003}",
        ] {
            assert_eq!(
                trim_json_ws(text),
                text.trim_matches(is_json_ws),
                "{text:?}"
            );
        }
    }

    #[test]
    fn scalars_are_decoded_by_their_json_type() {
        assert_eq!(Scalar::classify("null"), Scalar::Null);
        assert_eq!(Scalar::classify(" true "), Scalar::Bool(true));
        assert_eq!(Scalar::classify("-42"), Scalar::Int(-42));
        assert_eq!(Scalar::classify("2.5e1"), Scalar::Float(25.0));
        assert_eq!(
            Scalar::classify(r#""plain""#),
            Scalar::Str(Cow::Borrowed("plain"))
        );
        assert_eq!(
            Scalar::classify(r#""a\"b\u00e9""#),
            Scalar::Str(Cow::Owned("a\"bé".into()))
        );
    }

    #[test]
    fn numbers_without_an_exact_typed_form_stay_text() {
        assert_eq!(
            Scalar::classify("18446744073709551616"),
            Scalar::Json(Cow::Borrowed("18446744073709551616"))
        );
        assert_eq!(
            Scalar::classify("1e400"),
            Scalar::Json(Cow::Borrowed("1e400"))
        );
        assert_eq!(
            Scalar::classify("-1e400"),
            Scalar::Json(Cow::Borrowed("-1e400"))
        );
        assert_eq!(
            Scalar::classify("1e-400"),
            Scalar::Json(Cow::Borrowed("1e-400"))
        );
        assert_eq!(Scalar::classify("0.0e-400"), Scalar::Float(0.0));
    }

    #[test]
    fn unescaping_matches_serde_json_on_every_escape_form() {
        for raw in [
            r#""plain""#,
            r#""\"\\\/\b\f\n\r\t""#,
            r#""\u00e9 \u20AC \ud83d\ude80 end""#,
            r#""mixed ✓ \u0000 nul""#,
        ] {
            let mut out = String::new();
            assert!(unescape_into(raw, &mut out), "{raw}");
            assert_eq!(out, serde_json::from_str::<String>(raw).unwrap(), "{raw}");
        }
        for bad in [
            r#""\ud800""#,
            r#""\ud800\u0041""#,
            r#""\udc00""#,
            r#""\x""#,
            r#""\u12""#,
            "\"a",
        ] {
            assert!(!unescape_into(bad, &mut String::new()), "{bad}");
        }
    }

    #[test]
    fn a_lone_surrogate_escape_is_kept_as_json_text() {
        assert_eq!(
            Scalar::classify(r#""\ud800x""#),
            Scalar::Json(Cow::Borrowed(r#""\ud800x""#))
        );
    }

    #[test]
    fn nested_values_become_compact_json_text_with_strings_untouched() {
        let raw = "{ \"a b\" : [1, 2 ,\n {\"c\": \"x \\\" y\"}] }";
        let Scalar::Json(text) = Scalar::classify(raw) else {
            panic!("object must classify as JSON text");
        };
        assert_eq!(text, r#"{"a b":[1,2,{"c":"x \" y"}]}"#);
        let a: serde_json::Value = serde_json::from_str(raw).expect("valid");
        let b: serde_json::Value = serde_json::from_str(&text).expect("valid");
        assert_eq!(a, b);
        assert!(matches!(compact_json("[1,2]"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_text_of_every_scalar_reads_back_as_the_same_value() {
        for raw in [
            "null",
            "true",
            "-7",
            "0.1",
            r#""q\"uote""#,
            r#"{"k":[1]}"#,
            "1e400",
        ] {
            let text = Scalar::classify(raw).to_json_text();
            assert_eq!(Scalar::classify(&text), Scalar::classify(raw), "{raw}");
        }
        assert_eq!(Scalar::Float(3.0).to_json_text(), "3.0");
    }
}
