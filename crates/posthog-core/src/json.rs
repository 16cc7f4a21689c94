//! The small JSON reader of the hot path: where a string or value ends and whether it is JSON,
//! found without building anything, and an object's entries as borrowed text.
//!
//! Every event's properties (and person properties) arrive as one JSON object inside a string;
//! after unescaping, the flattener needs each entry's key and the source text of its value.
//! `serde_json` did this through its visitor machinery at a tenth of a run's CPU time; this
//! reader checks the same grammar (RFC 8259: strings without raw control characters and with
//! valid escapes, numbers as JSON spells them, the three literals, nesting to any depth) and
//! hands out slices. Strings are crossed eight bytes at a time.
//! `serde_json` is its oracle in the property tests.

use std::borrow::Cow;
use std::ops::Range;

use crate::value::{unescape_content, unescape_into, unicode_escape};

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// The offset of the first byte of `bytes` that ends a run of plain string text: `"`, `\` or
/// a control character (below 0x20, which JSON forbids raw inside a string).
#[inline]
pub(crate) fn find_special(bytes: &[u8]) -> Option<usize> {
    find_swar(
        bytes,
        |w| {
            let quote = w ^ (LO * u64::from(b'"'));
            let slash = w ^ (LO * u64::from(b'\\'));
            // Zero after the xor (`quote`, `slash`), or below 0x20 (`w`).
            (quote.wrapping_sub(LO) & !quote)
                | (slash.wrapping_sub(LO) & !slash)
                | (w.wrapping_sub(LO * 0x20) & !w)
        },
        |b| b == b'"' || b == b'\\' || b < 0x20,
    )
}

/// The offset of the first backslash in `bytes`, eight bytes at a time: in an escaped
/// properties string one comes every few bytes, where a SIMD search's setup costs more than
/// it saves.
#[inline]
pub(crate) fn find_backslash(bytes: &[u8]) -> Option<usize> {
    find_swar(
        bytes,
        |w| {
            let slash = w ^ (LO * u64::from(b'\\'));
            slash.wrapping_sub(LO) & !slash
        },
        |b| b == b'\\',
    )
}

/// The first byte of `bytes` that `byte` picks, found eight at a time: `word` sets the high
/// bit of the bytes it picks in a little-endian word (a borrow may also mark bytes after the
/// first picked one, never before it); the tail shorter than a word goes byte by byte.
#[inline(always)]
fn find_swar(bytes: &[u8], word: impl Fn(u64) -> u64, byte: impl Fn(u8) -> bool) -> Option<usize> {
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in words.by_ref() {
        let found = word(u64::from_le_bytes(
            <[u8; 8]>::try_from(chunk).unwrap_or([0; 8]),
        )) & HI;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| byte(b))
        .map(|k| at + k)
}

/// How a string goes on through one 64-byte block that starts inside it, outside any escape
/// ([`string_block`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StringBlock {
    /// The string's closing quote is the block's byte `k`; every escape before it is `\"` or
    /// `\\`, and no raw control character comes before it.
    Ends(usize),
    /// The string goes on past the first `n` bytes (63 or 64), which hold only plain text,
    /// `\"` and `\\`; byte `n` starts outside any escape.
    Goes(usize),
    /// Before the closing quote (or the block's end) stands a raw control character or
    /// another escape: the caller reads this block byte by byte, by JSON's full rule.
    Unusual,
}

/// The common case of a string's text, 64 bytes at a time: the block's quotes, backslashes
/// and control characters as bit masks (four 16-byte compares each), the escaped bytes found by
/// arithmetic on runs of backslashes, and the first quote that no backslash escapes. A
/// properties string has an escape every few bytes; byte by byte, each cost a search's setup.
#[inline]
pub(crate) fn string_block(block: &[u8; 64]) -> StringBlock {
    let (quotes, slashes, controls) = block_masks(block);
    let (escaped, open) = escaped_by(slashes);
    let closing = quotes & !escaped;
    // The bits below the closing quote (all of them when there is none).
    let before = (closing & closing.wrapping_neg()).wrapping_sub(1);
    if (controls | (escaped & !(quotes | slashes))) & before != 0 {
        return StringBlock::Unusual;
    }
    if closing != 0 {
        StringBlock::Ends(closing.trailing_zeros() as usize)
    } else if open {
        StringBlock::Goes(63)
    } else {
        StringBlock::Goes(64)
    }
}

/// Bit `k` of each mask is byte `k` of the block: a quote, a backslash, a byte below 0x20.
#[inline(always)]
fn block_masks(block: &[u8; 64]) -> (u64, u64, u64) {
    let quote = wide::u8x16::splat(b'"');
    let slash = wide::u8x16::splat(b'\\');
    let control = wide::u8x16::splat(0x1f);
    let (mut quotes, mut slashes, mut controls) = (0u64, 0u64, 0u64);
    for (k, lane) in block.chunks_exact(16).enumerate() {
        let v = wide::u8x16::from(<[u8; 16]>::try_from(lane).unwrap_or([0; 16]));
        let shift = 16 * k as u32;
        quotes |= u64::from(v.simd_eq(quote).to_bitmask()) << shift;
        slashes |= u64::from(v.simd_eq(slash).to_bitmask()) << shift;
        // `v <= 0x1f` as unsigned bytes: the minimum of the two is `v`.
        controls |= u64::from(v.min(control).simd_eq(v).to_bitmask()) << shift;
    }
    (quotes, slashes, controls)
}

/// Given the backslashes of a block that starts outside any escape, the bytes they escape
/// (bit `k`: byte `k` follows an odd run of backslashes), and whether the block ends with an
/// escape whose character is in the next block. A run's length is odd exactly when it starts
/// and ends one past on bits of different parity: adding each run's first bit carries through
/// the run to the bit past it.
#[inline(always)]
fn escaped_by(slashes: u64) -> (u64, bool) {
    const EVEN: u64 = 0x5555_5555_5555_5555;
    let starts = slashes & !(slashes << 1);
    let past_even = slashes.wrapping_add(starts & EVEN) & !slashes;
    let past_odd = slashes.wrapping_add(starts & !EVEN) & !slashes;
    let escaped = (past_even & !EVEN) | (past_odd & EVEN);
    let open = slashes.leading_ones() % 2 == 1;
    (escaped, open)
}

/// The escape starting at `bytes[at]` (a backslash), by JSON's rule: `Ok(Some(len))` when it
/// is whole and valid, `Ok(None)` when `bytes` ends inside it, `Err(what)` when it is not a
/// JSON escape.
#[inline]
pub(crate) fn escape_len(bytes: &[u8], at: usize) -> Result<Option<usize>, &'static str> {
    match bytes.get(at + 1) {
        None => Ok(None),
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(Some(2)),
        Some(b'u') => {
            let hex = bytes.get(at + 2..).unwrap_or_default();
            let hex = &hex[..hex.len().min(4)];
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                Err("a string with a malformed \\u escape")
            } else if hex.len() < 4 {
                Ok(None)
            } else {
                Ok(Some(6))
            }
        }
        Some(_) => Err("a string with an invalid escape"),
    }
}

/// JSON's insignificant whitespace.
#[inline]
pub(crate) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// A string literal starting at `bytes[i]` (its opening quote): the offset just past its
/// closing quote and whether it holds escapes. `None` when it is not a valid JSON string
/// (unclosed, a raw control character, an invalid escape).
pub(crate) fn string_end(bytes: &[u8], i: usize) -> Option<(usize, bool)> {
    let mut at = i + 1;
    let mut escaped = false;
    loop {
        at += find_special(bytes.get(at..)?)?;
        match bytes[at] {
            b'"' => return Some((at + 1, escaped)),
            b'\\' => {
                escaped = true;
                at += escape_len(bytes, at).ok().flatten()?;
            }
            _ => return None, // a raw control character
        }
    }
}

/// `null`, `true`, `false` or a JSON number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
pub(crate) fn valid_scalar(s: &[u8]) -> bool {
    if matches!(s, b"null" | b"true" | b"false") {
        return true;
    }
    let digits = |at: usize| {
        s.get(at..)
            .map_or(0, |r| r.iter().take_while(|b| b.is_ascii_digit()).count())
    };
    let mut i = usize::from(s.first() == Some(&b'-'));
    match s.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i += digits(i),
        _ => return false,
    }
    if s.get(i) == Some(&b'.') {
        let n = digits(i + 1);
        if n == 0 {
            return false;
        }
        i += 1 + n;
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let n = digits(i);
        if n == 0 {
            return false;
        }
        i += n;
    }
    i == s.len()
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(|&b| is_ws(b)) {
        i += 1;
    }
    i
}

/// The JSON value starting at `bytes[i]` (no whitespace before it): the offset just past it,
/// or `None` when it is not valid JSON. Nesting is followed with a stack of the brackets still
/// open, not by recursion, so any depth is read (as `serde_json` reads a raw value).
pub(crate) fn value_end(bytes: &[u8], i: usize) -> Option<usize> {
    let mut open = Brackets::default(); // the closing bracket each open level waits for
    let mut at = i;
    loop {
        // `at` is the first byte of a value.
        match *bytes.get(at)? {
            b'"' => at = string_end(bytes, at)?.0,
            b @ (b'{' | b'[') => {
                let close = if b == b'{' { b'}' } else { b']' };
                at = skip_ws(bytes, at + 1);
                if bytes.get(at) == Some(&close) {
                    at += 1;
                } else {
                    open.push(close);
                    if close == b'}' {
                        at = member_value(bytes, at)?;
                    }
                    continue;
                }
            }
            _ => {
                let len = bytes[at..]
                    .iter()
                    .position(|&b| matches!(b, b',' | b'}' | b']') || is_ws(b))
                    .unwrap_or(bytes.len() - at);
                if !valid_scalar(&bytes[at..at + len]) {
                    return None;
                }
                at += len;
            }
        }
        // A value ended at `at`: close the levels it ends, or go on to the next value.
        loop {
            let Some(&close) = open.last() else {
                return Some(at);
            };
            at = skip_ws(bytes, at);
            match *bytes.get(at)? {
                b',' => {
                    at = skip_ws(bytes, at + 1);
                    if close == b'}' {
                        at = member_value(bytes, at)?;
                    }
                    break;
                }
                b if b == close => {
                    open.pop();
                    at += 1;
                }
                _ => return None,
            }
        }
    }
}

/// The closing brackets a value's open levels wait for: the first 32 levels inline (a value
/// nested in a properties object rarely goes past three), deeper ones on the heap.
#[derive(Default)]
struct Brackets {
    inline: [u8; 32],
    deeper: Vec<u8>,
    depth: usize,
}

impl Brackets {
    fn push(&mut self, close: u8) {
        match self.inline.get_mut(self.depth) {
            Some(slot) => *slot = close,
            None => self.deeper.push(close),
        }
        self.depth += 1;
    }

    fn last(&self) -> Option<&u8> {
        let top = self.depth.checked_sub(1)?;
        self.inline.get(top).or_else(|| self.deeper.last())
    }

    fn pop(&mut self) {
        if self.depth > self.inline.len() {
            self.deeper.pop();
        }
        self.depth = self.depth.saturating_sub(1);
    }
}

/// An object member's key at `bytes[at]`, then `:`: the offset of its value.
fn member_value(bytes: &[u8], at: usize) -> Option<usize> {
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let at = skip_ws(bytes, string_end(bytes, at)?.0);
    (bytes.get(at) == Some(&b':')).then(|| skip_ws(bytes, at + 1))
}

/// Whether `text` is exactly one JSON value (whitespace around it allowed).
pub(crate) fn is_json(text: &str) -> bool {
    let bytes = text.as_bytes();
    let start = skip_ws(bytes, 0);
    value_end(bytes, start).is_some_and(|end| skip_ws(bytes, end) == bytes.len())
}

/// The entries of `text` if it is exactly one JSON object (whitespace around it allowed)
/// whose keys decode to Unicode: each key (borrowed unless it had escapes) and its value's
/// JSON text as sent ([`Entry::Json`]). `None` otherwise.
pub(crate) fn object_entries(text: &str) -> Option<Vec<(Cow<'_, str>, Entry<'_>)>> {
    object_entries_into(text, Vec::with_capacity(48))
}

/// [`object_entries`], filling `entries` (empty; its allocation is reused).
pub(crate) fn object_entries_into<'a>(
    text: &'a str,
    entries: Vec<(Cow<'a, str>, Entry<'a>)>,
) -> Option<Vec<(Cow<'a, str>, Entry<'a>)>> {
    read_object(&Plain(text), entries)
}

/// The two spellings of a JSON object the flattener reads: as JSON text ([`Plain`]) and held
/// as text inside a JSON string literal ([`Held`], and [`Walked`], which leaves nested values
/// for the visitor to decode). [`walk_object`] walks the object's structure; a spelling says
/// where its tokens end and what they hold.
trait Spelling<'a> {
    /// The text the offsets count in.
    fn bytes(&self) -> &'a [u8];
    /// The offset of the first byte at or after `at` that is not whitespace.
    fn skip_ws(&self, at: usize) -> usize;
    /// The key starting at `at`: where it ends and its decoded text.
    fn key(&self, at: usize) -> Option<(usize, Cow<'a, str>)>;
    /// The key at `at` when the text spells it exactly as `hint` does (see [`KeyHint`]): where
    /// it ends and its text, with no search for its end. `None` when the text differs (the
    /// caller reads the key with [`Spelling::key`]) or the spelling takes no hints.
    #[inline(always)]
    fn hinted_key(&self, _at: usize, _hint: &KeyHint) -> Option<(usize, Cow<'a, str>)> {
        None
    }
    /// What a value is read as.
    type Value;
    /// The value starting at `at`: where it ends and the value.
    fn value(&self, at: usize) -> Option<(usize, Self::Value)>;
}

/// An object's entries in order, as `spelling` reads them: `None` unless the text is exactly
/// one object (whitespace around it allowed) whose every key and value reads.
#[inline(always)]
fn read_object<'a>(
    spelling: &impl Spelling<'a, Value = Entry<'a>>,
    mut entries: Vec<(Cow<'a, str>, Entry<'a>)>,
) -> Option<Vec<(Cow<'a, str>, Entry<'a>)>> {
    match walk_object(spelling, None, |key, value, _| {
        entries.push((key, value));
        Next::Go(None)
    }) {
        Walk::Whole => Some(entries),
        Walk::Stopped | Walk::Invalid => None,
    }
}

/// How a walk over an object's entries ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Walk {
    /// The text is exactly one object, and every entry was handed out.
    Whole,
    /// The visitor asked to stop.
    Stopped,
    /// The text is not one object the spelling reads (entries before the fault were handed
    /// out).
    Invalid,
}

/// What the visitor of a walk answers after each entry.
pub(crate) enum Next<'h> {
    /// Stop the walk ([`Walk::Stopped`]).
    Stop,
    /// Go on; the next key is likely the one `hint` spells (checked against the text first).
    Go(Option<&'h KeyHint>),
}

/// A key exactly as the held text of a properties string spells it, quotes included (`\"key\"`),
/// for a key with nothing to escape: so the text holds the key where it holds these bytes, and
/// the key ends with them. Made once per key the flattener knows; comparing it with the text
/// takes the place of searching for the key's end (~75 instructions a key) and of comparing the
/// key read with the key predicted (`memcmp`).
#[derive(Debug)]
pub(crate) struct KeyHint(Box<[u8]>);

impl KeyHint {
    /// The hint for `key` in held text; `None` when the key holds a quote, a backslash or a
    /// control character (its spelling there is then not its text between `\"` and `\"`).
    pub(crate) fn held(key: &str) -> Option<KeyHint> {
        if key.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
            return None;
        }
        let mut spelled = Vec::with_capacity(key.len() + 4);
        spelled.extend_from_slice(b"\\\"");
        spelled.extend_from_slice(key.as_bytes());
        spelled.extend_from_slice(b"\\\"");
        Some(KeyHint(spelled.into_boxed_slice()))
    }
}

/// Hands each entry of the object `spelling` reads to `each`, in order, as it is read, with
/// whether its key was the one hinted (`first` hints the first key; `each` answers whether to
/// go on, and a hint for the next key). Only [`Walk::Whole`] says the text was one valid
/// object: a visitor must not act on entries before it knows that. Inlined: once per spelling
/// and visitor, into the flattener's hot loop (out of line it cost 2 % of a run).
#[inline(always)]
fn walk_object<'a, 'h, S: Spelling<'a>>(
    spelling: &S,
    first: Option<&'h KeyHint>,
    mut each: impl FnMut(Cow<'a, str>, S::Value, bool) -> Next<'h>,
) -> Walk {
    let b = spelling.bytes();
    let end_of_text = |at: usize| {
        if spelling.skip_ws(at) == b.len() {
            Walk::Whole
        } else {
            Walk::Invalid
        }
    };
    let mut at = spelling.skip_ws(0);
    if b.get(at) != Some(&b'{') {
        return Walk::Invalid;
    }
    at = spelling.skip_ws(at + 1);
    if b.get(at) == Some(&b'}') {
        return end_of_text(at + 1);
    }
    let mut hint = first;
    loop {
        // `at` may stand before whitespace: a hinted key is looked for right there first, as
        // compact text has none.
        let mut hinted = hint.and_then(|hint| spelling.hinted_key(at, hint));
        if hinted.is_none() {
            let past_ws = spelling.skip_ws(at);
            if past_ws != at {
                at = past_ws;
                hinted = hint.and_then(|hint| spelling.hinted_key(at, hint));
            }
        }
        let matched = hinted.is_some();
        let Some((key_end, key)) = hinted.or_else(|| spelling.key(at)) else {
            return Walk::Invalid;
        };
        // The separators mostly follow their token directly: looked at before any whitespace.
        at = match b.get(key_end) {
            Some(b':') => key_end,
            _ => spelling.skip_ws(key_end),
        };
        if b.get(at) != Some(&b':') {
            return Walk::Invalid;
        }
        let Some((end, value)) = spelling.value(spelling.skip_ws(at + 1)) else {
            return Walk::Invalid;
        };
        match each(key, value, matched) {
            Next::Stop => return Walk::Stopped,
            Next::Go(next) => hint = next,
        }
        at = match b.get(end) {
            Some(b',' | b'}') => end,
            _ => spelling.skip_ws(end),
        };
        match b.get(at) {
            Some(b',') => at += 1,
            Some(b'}') => return end_of_text(at + 1),
            _ => return Walk::Invalid,
        }
    }
}

/// A JSON object as JSON text.
struct Plain<'a>(&'a str);

impl<'a> Spelling<'a> for Plain<'a> {
    #[inline]
    fn bytes(&self) -> &'a [u8] {
        self.0.as_bytes()
    }

    #[inline]
    fn skip_ws(&self, at: usize) -> usize {
        skip_ws(self.bytes(), at)
    }

    #[inline]
    fn key(&self, at: usize) -> Option<(usize, Cow<'a, str>)> {
        if self.bytes().get(at) != Some(&b'"') {
            return None;
        }
        let (end, escaped) = string_end(self.bytes(), at)?;
        // Quotes are ASCII, so both ends are char boundaries.
        let literal = self.0.get(at..end)?;
        if !escaped {
            return Some((end, Cow::Borrowed(literal.get(1..literal.len() - 1)?)));
        }
        let mut key = String::new();
        // A lone surrogate is not a Unicode key.
        unescape_into(literal, &mut key).then_some((end, Cow::Owned(key)))
    }

    type Value = Entry<'a>;

    #[inline]
    fn value(&self, at: usize) -> Option<(usize, Entry<'a>)> {
        let end = value_end(self.bytes(), at)?;
        Some((end, Entry::Json(Cow::Borrowed(self.0.get(at..end)?))))
    }
}

/// One entry's value as the flattener reads it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Entry<'a> {
    /// A string's decoded text, borrowed as it stood (it had no escapes).
    Str(&'a str),
    /// Any other value (or a string with escapes) as JSON text.
    Json(Cow<'a, str>),
}

impl Entry<'_> {
    /// The value's JSON text (a plain string gets its quotes back: it needs no escapes).
    pub(crate) fn json_text(&self) -> Cow<'_, str> {
        match self {
            Entry::Str(s) => Cow::Owned(format!("\"{s}\"")),
            Entry::Json(text) => Cow::Borrowed(text),
        }
    }
}

/// [`escaped_object_entries_into`] into a new vector.
#[cfg(test)]
pub(crate) fn escaped_object_entries(literal: &str) -> Option<Vec<(Cow<'_, str>, Entry<'_>)>> {
    escaped_object_entries_into(literal, Vec::with_capacity(48))
}

/// The entries of the JSON object held, as text, by the JSON string literal `literal` (how
/// HogQL sends `properties`), read straight from the escaped text: no unescaped copy of the
/// object is made, and keys and plain string values are borrowed from the literal. Inside
/// the literal the object's quotes are `\"`; a string holding escapes of its own, a nested
/// value or a number is decoded one level only where it stands.
///
/// `None` when the text takes anything but the common path (escaped whitespace other than
/// `\n`, `\t`, `\r` between tokens, a string the decoding finds invalid, not an object…):
/// the caller then unescapes the literal and reads it with [`object_entries`], which decides.
/// When this answers, it answers what that would (a proptest holds it to that).
///
/// `entries` comes empty; its allocation is reused.
pub(crate) fn escaped_object_entries_into<'a>(
    literal: &'a str,
    entries: Vec<(Cow<'a, str>, Entry<'a>)>,
) -> Option<Vec<(Cow<'a, str>, Entry<'a>)>> {
    let text = literal.strip_prefix('"')?.strip_suffix('"')?;
    read_object(&Held(text), entries)
}

/// [`escaped_object_entries_into`] entry by entry: each is handed to `each` as it is read (see
/// [`Walk`]); the flattener's common path, which needs no vector of entries. A nested object
/// or array comes as it stands ([`HeldEntry::Nested`]), for the visitor to decode into a
/// buffer of its own: decoded here, each was a `String` of its own (~4 a row of the default
/// events).
#[inline(always)]
pub(crate) fn walk_escaped_object<'a, 'h>(
    literal: &'a str,
    first: Option<&'h KeyHint>,
    each: impl FnMut(Cow<'a, str>, HeldEntry<'a>, bool) -> Next<'h>,
) -> Walk {
    match literal
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        Some(text) => walk_object(&Walked(Held(text)), first, each),
        None => Walk::Invalid,
    }
}

/// A value of [`walk_escaped_object`].
#[derive(Debug)]
pub(crate) enum HeldEntry<'a> {
    /// The value, read as [`escaped_object_entries_into`] reads it.
    Read(Entry<'a>),
    /// An object or array as it stands in the held text: one level of escapes still on, and
    /// not yet checked (its brackets balance outside its strings). [`decode_nested`] makes it
    /// what `Read` would hold, or says that [`escaped_object_entries_into`] gives up on the
    /// object.
    Nested(&'a str),
}

/// Decodes a [`HeldEntry::Nested`] value onto the end of `buf` and answers the range it
/// takes there, when it is JSON; `None` when it is not (the object is then not one the escaped
/// reader reads). The one rule for both readers: [`other_escaped_value`] decodes the same way
/// into a `String` of its own.
pub(crate) fn decode_nested(escaped: &str, buf: &mut String) -> Option<Range<usize>> {
    let start = buf.len();
    let decoded = unescape_content(escaped, buf) && buf.get(start..).is_some_and(is_json);
    decoded.then_some(start..buf.len())
}

/// What [`compact_nested`] expects next outside strings.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    /// A value (the first, or one after `:` or an array's `,`).
    Value,
    /// A value or `]`, just after `[`.
    ValueOrClose,
    /// A key or `}`, just after `{`.
    KeyOrClose,
    /// A key, after an object's `,`.
    Key,
    /// The `:` after a key.
    Colon,
    /// `,` or the bracket that closes the open level, after a value.
    CommaOrClose,
}

/// [`decode_nested`] and then [`crate::value::compact_json`] in one pass over the held text:
/// the value's compact JSON text onto the end of `out`, and its range there. `None` when the
/// text leaves the common spelling (escaped characters outside strings, an escape that decodes
/// to a quote, a backslash or a control character, anything not JSON), with `out` as it came:
/// the caller then decodes it the long way, which decides. When this answers, it answers
/// what that would (a proptest holds it to that).
///
/// A nested value (the default events hold four a row: `$set`, `tags`, person `preferences`
/// and its lists) otherwise took four passes: its end, unescaping, the JSON check, and the
/// compaction, which copies into a `String` of its own whenever the source has spaces after
/// its `:` and `,` as Python's `json.dumps` writes them; `callgrind` put those at 11.6 % of a
/// run's instructions.
pub(crate) fn compact_nested(escaped: &str, out: &mut String) -> Option<Range<usize>> {
    let start = out.len();
    let done = compact_into(escaped, out);
    if done.is_none() {
        out.truncate(start);
    }
    done.map(|()| start..out.len())
}

fn compact_into(text: &str, out: &mut String) -> Option<()> {
    let e = text.as_bytes();
    let mut open = Brackets::default();
    let mut want = Want::Value;
    let mut i = 0;
    loop {
        i = skip_escaped_ws(e, i);
        let Some(&c) = e.get(i) else {
            // The text ended: whole only after the first value closed.
            return (want == Want::CommaOrClose && open.last().is_none()).then_some(());
        };
        if want == Want::CommaOrClose && open.last().is_none() {
            return None; // more after the value
        }
        match (want, c) {
            (Want::Colon, b':') => {
                out.push(':');
                want = Want::Value;
                i += 1;
            }
            (Want::CommaOrClose, b',') => {
                out.push(',');
                want = if open.last() == Some(&b'}') {
                    Want::Key
                } else {
                    Want::Value
                };
                i += 1;
            }
            (Want::CommaOrClose, b'}' | b']')
            | (Want::KeyOrClose, b'}')
            | (Want::ValueOrClose, b']') => {
                if open.last() != Some(&c) {
                    return None;
                }
                open.pop();
                out.push(char::from(c));
                want = Want::CommaOrClose;
                i += 1;
            }
            (Want::Colon | Want::CommaOrClose, _) => return None,
            (_, b'\\') if e.get(i + 1) == Some(&b'"') => {
                i = compact_string(text, i + 2, out)?;
                want = match want {
                    Want::Key | Want::KeyOrClose => Want::Colon,
                    _ => Want::CommaOrClose,
                };
            }
            (Want::Key | Want::KeyOrClose, _) => return None,
            (_, b'{' | b'[') => {
                let (close, next) = if c == b'{' {
                    (b'}', Want::KeyOrClose)
                } else {
                    (b']', Want::ValueOrClose)
                };
                open.push(close);
                out.push(char::from(c));
                want = next;
                i += 1;
            }
            _ => {
                let scalar = escaped_scalar(text, i)?;
                out.push_str(scalar);
                want = Want::CommaOrClose;
                i += scalar.len();
            }
        }
    }
}

/// A string of the held text whose opening `\"` ends at `e[i]`, decoded one level onto `out`
/// with its quotes (its own escapes kept as they are, as in the decoded text): the offset past
/// its closing `\"`. `None` for what the long way must decide.
#[inline]
fn compact_string(text: &str, mut i: usize, out: &mut String) -> Option<usize> {
    let e = text.as_bytes();
    out.push('"');
    loop {
        let run = find_special(e.get(i..)?)?;
        // A run between escapes is whole characters: it ends at an ASCII byte.
        out.push_str(text.get(i..i + run)?);
        i += run;
        if e.get(i) != Some(&b'\\') {
            return None; // a raw quote or control character
        }
        match *e.get(i + 1)? {
            b'"' => {
                out.push('"');
                return Some(i + 2);
            }
            b'/' => {
                out.push('/');
                i += 2;
            }
            // The held text's backslash (`\\`): an escape of the decoded string starts, kept as
            // it is. Its second character is escaped in the held text (`\"`, `\\`, `\/`) or
            // plain; a `\u` escape's four hex digits are plain.
            b'\\' => {
                let (escape, used) = match *e.get(i + 2)? {
                    b'\\' => match *e.get(i + 3)? {
                        b'"' => ("\\\"", 4),
                        b'\\' => ("\\\\", 4),
                        b'/' => ("\\/", 4),
                        _ => return None,
                    },
                    b'/' => ("\\/", 3),
                    b'b' => ("\\b", 3),
                    b'f' => ("\\f", 3),
                    b'n' => ("\\n", 3),
                    b'r' => ("\\r", 3),
                    b't' => ("\\t", 3),
                    b'u' => {
                        let hex = text.get(i + 3..i + 7)?;
                        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                            return None;
                        }
                        out.push_str("\\u");
                        (hex, 7)
                    }
                    _ => return None,
                };
                out.push_str(escape);
                i += used;
            }
            // A character written `\uXXXX` (or a pair of them) in the held text: itself in the
            // decoded string, unless it is one that means something else there.
            b'u' => {
                let (c, used) = unicode_escape(text, i)?;
                if c < ' ' || c == '"' || c == '\\' {
                    return None;
                }
                out.push(c);
                i += used;
            }
            _ => return None, // a control character in the decoded string, or not an escape
        }
    }
}

/// [`Held`] with its nested values left as they stand (see [`walk_escaped_object`]).
struct Walked<'a>(Held<'a>);

impl<'a> Spelling<'a> for Walked<'a> {
    #[inline]
    fn bytes(&self) -> &'a [u8] {
        self.0.bytes()
    }

    #[inline]
    fn skip_ws(&self, at: usize) -> usize {
        self.0.skip_ws(at)
    }

    #[inline(always)]
    fn key(&self, at: usize) -> Option<(usize, Cow<'a, str>)> {
        self.0.key(at)
    }

    #[inline(always)]
    fn hinted_key(&self, at: usize, hint: &KeyHint) -> Option<(usize, Cow<'a, str>)> {
        self.0.hinted_key(at, hint)
    }

    type Value = HeldEntry<'a>;

    #[inline(always)]
    fn value(&self, at: usize) -> Option<(usize, HeldEntry<'a>)> {
        let text = self.0.0;
        if let b'{' | b'[' = *text.as_bytes().get(at)? {
            let end = nested_end(text.as_bytes(), at)?;
            return Some((end, HeldEntry::Nested(text.get(at..end)?)));
        }
        escaped_value(text, at).map(|(end, value)| (end, HeldEntry::Read(value)))
    }
}

/// A JSON object held as text in a JSON string literal (the text between its quotes).
struct Held<'a>(&'a str);

impl<'a> Spelling<'a> for Held<'a> {
    #[inline]
    fn bytes(&self) -> &'a [u8] {
        self.0.as_bytes()
    }

    #[inline]
    fn skip_ws(&self, at: usize) -> usize {
        skip_escaped_ws(self.bytes(), at)
    }

    #[inline(always)]
    fn key(&self, at: usize) -> Option<(usize, Cow<'a, str>)> {
        let (end, plain) = escaped_string_end(self.bytes(), at)?;
        if plain {
            return Some((end, Cow::Borrowed(self.0.get(at + 2..end - 2)?)));
        }
        escaped_key(self.0, at, end)
    }

    #[inline(always)]
    fn hinted_key(&self, at: usize, hint: &KeyHint) -> Option<(usize, Cow<'a, str>)> {
        let end = at.checked_add(hint.0.len())?;
        if self.bytes().get(at..end)? != &*hint.0 {
            return None;
        }
        // `\"` on both sides (ASCII, so char boundaries), nothing escaped between.
        Some((end, Cow::Borrowed(self.0.get(at + 2..end - 2)?)))
    }

    type Value = Entry<'a>;

    #[inline(always)]
    fn value(&self, at: usize) -> Option<(usize, Entry<'a>)> {
        escaped_value(self.0, at)
    }
}

/// A key of the held text with escapes of its own, `text[at..end]`, decoded.
#[inline(never)]
fn escaped_key(text: &str, at: usize, end: usize) -> Option<(usize, Cow<'_, str>)> {
    let literal = unescape_once(text.get(at..end)?)?;
    let mut key = String::new();
    (string_end(literal.as_bytes(), 0)?.0 == literal.len() && unescape_into(&literal, &mut key))
        .then_some((end, Cow::Owned(key)))
}

/// Whitespace between the tokens of a JSON text held in a string literal: a space as is,
/// `\n`, `\t`, `\r` escaped.
fn skip_escaped_ws(b: &[u8], mut i: usize) -> usize {
    loop {
        match b.get(i) {
            Some(b' ') => i += 1,
            Some(b'\\') if matches!(b.get(i + 1), Some(b'n' | b't' | b'r')) => i += 2,
            _ => return i,
        }
    }
}

/// A string of the held text starting at `b[i]` (its `\"`): the offset past its closing
/// `\"`, and whether it is plain (no escape between its quotes, so its text is the slice).
/// `None` when it is not one the fast path reads (an escaped control character in it).
fn escaped_string_end(b: &[u8], i: usize) -> Option<(usize, bool)> {
    if b.get(i..i + 2)? != b"\\\"" {
        return None;
    }
    let mut at = i + 2;
    let mut plain = true;
    loop {
        at += find_backslash(b.get(at..)?)?;
        match *b.get(at + 1)? {
            b'"' => return Some((at + 2, plain)),
            // The held text's own backslash: its escape's next character follows, itself
            // escaped (`\"`, `\\`, `\/`, `\uXXXX`) or plain.
            b'\\' => {
                plain = false;
                at += 2;
                at += match *b.get(at)? {
                    b'\\' => match *b.get(at + 1)? {
                        b'u' => 6,
                        _ => 2,
                    },
                    _ => 1,
                };
            }
            b'u' => {
                plain = false;
                at += 6;
            }
            b'/' => {
                plain = false;
                at += 2;
            }
            // An escaped control character is a raw one in the held text: not a string.
            _ => return None,
        }
    }
}

/// One value of the held text at `text[at]`: where it ends, and the value. The common case,
/// a string without escapes of its own, is inlined into the walk: returned from a call, the
/// value went through memory and its reload stalled (2 % of a run).
#[inline(always)]
fn escaped_value(text: &str, at: usize) -> Option<(usize, Entry<'_>)> {
    let b = text.as_bytes();
    if *b.get(at)? != b'\\' {
        return other_escaped_value(text, at);
    }
    let (end, plain) = escaped_string_end(b, at)?;
    if plain {
        return Some((end, Entry::Str(text.get(at + 2..end - 2)?)));
    }
    escaped_string_value(text, at, end)
}

/// A string value of the held text with escapes of its own, `text[at..end]`, as JSON text
/// decoded one level.
#[inline(never)]
fn escaped_string_value(text: &str, at: usize, end: usize) -> Option<(usize, Entry<'_>)> {
    let literal = unescape_once(text.get(at..end)?)?;
    (string_end(literal.as_bytes(), 0)?.0 == literal.len())
        .then_some((end, Entry::Json(Cow::Owned(literal))))
}

/// The number or literal of the held text at `text[at]`: it runs to the next delimiter (`,`,
/// `}`, `]`, a space, or the backslash of an escaped one). `None` when it is not one.
#[inline]
fn escaped_scalar(text: &str, at: usize) -> Option<&str> {
    let rest = text.get(at..)?;
    let len = rest
        .bytes()
        .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\\'))
        .unwrap_or(rest.len());
    let scalar = rest.get(..len)?;
    valid_scalar(scalar.as_bytes()).then_some(scalar)
}

/// [`escaped_value`] for a nested value or a scalar (anything but a string).
#[inline(never)]
fn other_escaped_value(text: &str, at: usize) -> Option<(usize, Entry<'_>)> {
    let b = text.as_bytes();
    match *b.get(at)? {
        b'{' | b'[' => {
            let end = nested_end(b, at)?;
            let mut held = String::new();
            decode_nested(text.get(at..end)?, &mut held)?;
            Some((end, Entry::Json(Cow::Owned(held))))
        }
        _ => {
            let scalar = escaped_scalar(text, at)?;
            Some((at + scalar.len(), Entry::Json(Cow::Borrowed(scalar))))
        }
    }
}

/// The end of the object or array of the held text starting at `b[at]`: past the bracket
/// that balances it, strings (`\"…\"`) skipped. Whether the text between is JSON is not
/// checked.
fn nested_end(b: &[u8], at: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = at;
    loop {
        match *b.get(i)? {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            b'\\' if b.get(i + 1) == Some(&b'"') => {
                i = escaped_string_end(b, i)?.0;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
}

/// Decodes one level of escapes of a piece of a string literal's text.
fn unescape_once(piece: &str) -> Option<String> {
    let mut out = String::with_capacity(piece.len());
    unescape_content(piece, &mut out).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
    use serde_json::value::RawValue;

    /// The oracle: serde_json's reading of an object into (key, raw value) entries.
    fn serde_entries(text: &str) -> Option<Vec<(String, String)>> {
        struct Entries<'o>(&'o mut Vec<(String, String)>);
        impl<'de> DeserializeSeed<'de> for Entries<'_> {
            type Value = ();
            fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_map(self)
            }
        }
        impl<'de> Visitor<'de> for Entries<'_> {
            type Value = ();
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
                while let Some(key) = map.next_key::<String>()? {
                    let value: &RawValue = map.next_value()?;
                    self.0.push((key, value.get().to_owned()));
                }
                Ok(())
            }
        }
        let mut out = Vec::new();
        let mut de = serde_json::Deserializer::from_str(text);
        Entries(&mut out)
            .deserialize(&mut de)
            .and_then(|()| de.end())
            .ok()?;
        Some(out)
    }

    /// Entries as (key, JSON text) pairs.
    fn texts(entries: Vec<(Cow<'_, str>, Entry<'_>)>) -> Vec<(String, String)> {
        entries
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.json_text().into_owned()))
            .collect()
    }

    /// The flattener's walk over `literal`, each nested value decoded as it decodes them
    /// ([`decode_nested`]): `None` unless the walk reads the whole object.
    fn walked_entries(literal: &str) -> Option<Vec<(String, String)>> {
        walked_hinted(literal, &[]).0
    }

    /// [`walked_entries`] with `hints[n]` hinting the walk's n-th key, and how many keys the
    /// walk found as hinted.
    fn walked_hinted(
        literal: &str,
        hints: &[Option<KeyHint>],
    ) -> (Option<Vec<(String, String)>>, usize) {
        let (mut out, mut buf, mut decoded, mut matched) = (Vec::new(), String::new(), true, 0);
        let hint = |n: usize| hints.get(n).and_then(Option::as_ref);
        let walk = walk_escaped_object(literal, hint(0), |key, value, was_hinted| {
            matched += usize::from(was_hinted);
            let value = match value {
                HeldEntry::Read(entry) => entry,
                HeldEntry::Nested(escaped) => match decode_nested(escaped, &mut buf) {
                    Some(range) => Entry::Json(Cow::Owned(buf[range].to_owned())),
                    None => {
                        decoded = false;
                        return Next::Stop;
                    }
                },
            };
            out.push((key, value));
            Next::Go(hint(out.len()))
        });
        (
            (walk == Walk::Whole && decoded).then(|| texts(out)),
            matched,
        )
    }

    /// The walk over `literal` answers the same whatever it is hinted: each key hinted as the
    /// walk reads it unhinted (all found as hinted when `plain`, the keys then being spelled as
    /// their text), the keys hinted in reverse order, and each key hinted one byte longer (a
    /// hint that matches the text up to the key's closing quote and not past it).
    fn hints_change_nothing(literal: &str, plain: bool) -> Result<(), TestCaseError> {
        let unhinted = walked_entries(literal);
        let keys: Vec<String> = match escaped_object_entries(literal) {
            Some(entries) => entries.into_iter().map(|(k, _)| k.into_owned()).collect(),
            None => vec!["a".into(), "$b".into(), String::new()],
        };
        let exact: Vec<Option<KeyHint>> = keys.iter().map(|k| KeyHint::held(k)).collect();
        let (hinted, matched) = walked_hinted(literal, &exact);
        prop_assert_eq!(&hinted, &unhinted, "exact hints {:?}", literal);
        if plain && unhinted.is_some() {
            prop_assert_eq!(matched, exact.iter().flatten().count(), "{:?}", literal);
        }
        let reversed: Vec<Option<KeyHint>> = keys.iter().rev().map(|k| KeyHint::held(k)).collect();
        prop_assert_eq!(
            &walked_hinted(literal, &reversed).0,
            &unhinted,
            "reversed {:?}",
            literal
        );
        let longer: Vec<Option<KeyHint>> = keys
            .iter()
            .map(|k| KeyHint::held(&format!("{k}x")))
            .collect();
        prop_assert_eq!(
            &walked_hinted(literal, &longer).0,
            &unhinted,
            "longer {:?}",
            literal
        );
        Ok(())
    }

    /// The slow path: unescape the literal, then read the object.
    fn slow_entries(literal: &str) -> Option<Vec<(String, String)>> {
        let mut held = String::new();
        if !unescape_into(literal, &mut held) {
            return None;
        }
        object_entries(&held).map(texts)
    }

    /// `held` as a JSON string literal, each character written as `choices` (cycled) says:
    /// 0 as serde_json writes it, 1 as `\uXXXX`, 2 as serde_json but `/` as `\/`, 3 as
    /// `\uXXXX` when not ASCII.
    fn encode_literal(held: &str, choices: &[u8]) -> String {
        let mut out = String::from("\"");
        for (n, c) in held.chars().enumerate() {
            let choice = choices[n % choices.len()];
            let plain = serde_json::to_string(&c.to_string()).unwrap();
            let plain = &plain[1..plain.len() - 1];
            let as_u = || {
                let mut units = [0u16; 2];
                c.encode_utf16(&mut units)
                    .iter()
                    .map(|u| format!("\\u{u:04x}"))
                    .collect::<String>()
            };
            match choice {
                1 => out.push_str(&as_u()),
                2 if c == '/' => out.push_str("\\/"),
                3 if !c.is_ascii() => out.push_str(&as_u()),
                _ => out.push_str(plain),
            }
        }
        out.push('"');
        out
    }

    /// `value` as serde_json writes it, compact or pretty.
    fn written(value: &serde_json::Value, pretty: bool) -> String {
        if pretty {
            serde_json::to_string_pretty(value).unwrap()
        } else {
            serde_json::to_string(value).unwrap()
        }
    }

    /// Any JSON value, nested often, with strings full of what the held text escapes.
    fn nested_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            Just(Value::from(1.5e-7)),
            "[a-z\"\\\\/é\n\t\u{1}\u{1F600} \\[\\]{}:,]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\"\\\\ ]{1,3}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// JSON's tokens and their broken forms, as the inside of a properties object.
    fn object_text() -> impl Strategy<Value = String> {
        let token = prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\n",
            "\"k\"",
            "\"$os\"",
            "\"k\\u00e9\"",
            "\"\\ud800\"",
            "\"\\u12\"",
            "\"\\q\"",
            "\"a\\\"b\"",
            "\"tab\there\"",
            "\"\u{1}\"",
            "\"",
            "\\",
            "0",
            "-0",
            "01",
            "1.5",
            "1.",
            "-",
            "2e9",
            "1E+2",
            "1e",
            "true",
            "false",
            "null",
            "nul",
            "truee",
            "\"é ✓\"",
            "\u{0}",
        ]);
        prop::collection::vec(token, 0..16).prop_map(|t| t.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

        /// `object_entries` takes exactly the objects serde_json takes, with the same keys and
        /// value texts in order, and `is_json` the same values.
        #[test]
        fn the_reader_agrees_with_serde_json(inner in object_text(), wrap in 0u8..3) {
            let text = match wrap { 0 => format!("{{{inner}}}"), 1 => format!("[{inner}]"), _ => inner };
            prop_assert_eq!(object_entries(&text).map(texts), serde_entries(&text), "{:?}", text);
            let oracle = serde_json::from_str::<de::IgnoredAny>(&text).is_ok();
            prop_assert_eq!(is_json(&text), oracle, "{:?}", text);
        }

        /// Any JSON object, compact or pretty, reads back entry for entry.
        #[test]
        fn any_object_reads_back(entries in prop::collection::btree_map("[a-z$é\"\\\\]{0,6}", prop_oneof![
            Just(serde_json::Value::Null), any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
            ".{0,12}".prop_map(serde_json::Value::from),
            prop::collection::vec(any::<u8>(), 0..3).prop_map(serde_json::Value::from),
        ], 0..8), pretty in any::<bool>()) {
            let object = serde_json::Value::Object(entries.into_iter().collect());
            let text = if pretty { serde_json::to_string_pretty(&object) } else { serde_json::to_string(&object) }.unwrap();
            prop_assert_eq!(object_entries(&text).map(texts), serde_entries(&text), "{:?}", text);
            // Held in a string literal as serde_json writes it, or as another encoder might
            // (any character as `\uXXXX`, `/` as `\/`): read straight from the escaped text,
            // it is the same object.
            for choices in [&[0u8][..], &[1], &[0, 2, 0, 3], &[3, 3, 1]] {
                let literal = encode_literal(&text, choices);
                let fast = escaped_object_entries(&literal).map(texts);
                prop_assert_eq!(&walked_entries(&literal), &fast, "{:?}", literal);
                hints_change_nothing(&literal, choices == [0])?;
                if choices == [0] {
                    prop_assert!(fast.is_some(), "{:?}", literal);
                }
                if let Some(fast) = fast {
                    prop_assert_eq!(Some(fast), slow_entries(&literal), "{:?}", literal);
                }
            }
        }

        /// Objects with nested values held in a literal (compact or pretty, every spelling of
        /// the literal, cut anywhere) read as unescaping first reads them, the flattener's walk
        /// reads them as the escaped reader does, and the plain spelling of a whole object
        /// always gets an answer from the escaped reader.
        #[test]
        fn nested_values_read_as_unescaping_first(
            entries in prop::collection::btree_map("[a-z$\"\\\\]{1,4}", nested_value(), 1..5),
            pretty in any::<bool>(),
            choices in prop::collection::vec(0u8..4, 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let object = serde_json::Value::Object(entries.into_iter().collect());
            let held = written(&object, pretty);
            let inner = &held[..held.floor_char_boundary(cut.index(held.len()))];
            for (whole, literal) in [
                (true, encode_literal(&held, &[0])),
                (false, encode_literal(&held, &choices)),
                (false, encode_literal(inner, &choices)),
            ] {
                // The reader may leave an unusual spelling to the caller; when it answers, it
                // answers what unescaping first does.
                let fast = escaped_object_entries(&literal);
                prop_assert_eq!(walked_entries(&literal), fast.clone().map(texts), "{}", literal);
                hints_change_nothing(&literal, whole)?;
                prop_assert!(fast.is_some() || !whole, "{}", literal);
                if let Some(fast) = fast {
                    prop_assert_eq!(Some(texts(fast)), slow_entries(&literal), "{}", literal);
                }
            }
        }

        /// One pass over a nested value held in a literal answers what decoding, checking and
        /// compacting it answers whenever it answers, leaves the buffer as it came when it
        /// does not, and always answers for a value as serde_json writes it, held as serde_json
        /// holds it (that answer is serde_json's compact text) or with `/` or non-ASCII
        /// escaped. Compact, pretty, every spelling, cut anywhere.
        #[test]
        fn a_nested_value_compacts_in_one_pass_as_in_four(
            value in nested_value(),
            pretty in any::<bool>(),
            choices in prop::collection::vec(0u8..4, 1..6),
            cut in any::<prop::sample::Index>(),
            near in object_text(),
        ) {
            let held = written(&value, pretty);
            let inner = &held[..held.floor_char_boundary(cut.index(held.len()))];
            for (whole, text) in [
                (true, held.as_str()),
                (false, inner),
                (false, &format!("{{{near}}}")),
                (false, &format!("[{near}]")),
            ] {
                for choices in [&[0u8][..], &choices] {
                    let literal = encode_literal(text, choices);
                    let escaped = &literal[1..literal.len() - 1];
                    let mut long = String::new();
                    let slow = decode_nested(escaped, &mut long)
                        .map(|range| crate::value::compact_json(&long[range]).into_owned());
                    let mut out = String::from("before");
                    match compact_nested(escaped, &mut out) {
                        Some(range) => {
                            prop_assert_eq!(Some(&out[range.clone()]), slow.as_deref(), "{}", literal);
                            prop_assert_eq!(range.start, "before".len());
                        }
                        None => prop_assert_eq!(out.as_str(), "before", "{}", literal),
                    }
                    if whole && choices == [0] {
                        prop_assert_eq!(slow, Some(serde_json::to_string(&value).unwrap()));
                    }
                    // A server that escapes `/` or every non-ASCII character (as Python's
                    // `json.dumps` does) still gets the one pass; only ASCII written as
                    // `\uXXXX` (choice 1) may take the long way.
                    if whole && !choices.contains(&1) {
                        prop_assert!(compact_nested(escaped, &mut String::new()).is_some(), "{}", literal);
                    }
                }
            }
        }

        /// Whenever the escaped reader answers on near-JSON held in a literal, it answers what
        /// unescaping and reading answers; the flattener's walk answers what the reader does.
        #[test]
        fn the_escaped_reader_agrees_with_unescaping_first(inner in object_text(), choices in prop::collection::vec(0u8..4, 1..6)) {
            let held = format!("{{{inner}}}");
            let literal = encode_literal(&held, &choices);
            prop_assert_eq!(
                walked_entries(&literal),
                escaped_object_entries(&literal).map(texts),
                "{:?}",
                literal
            );
            hints_change_nothing(&literal, false)?;
            if let Some(fast) = escaped_object_entries(&literal).map(texts) {
                prop_assert_eq!(Some(fast), slow_entries(&literal), "{:?}", literal);
            }
        }
    }

    /// What [`string_block`] must answer, byte by byte: JSON's rule for the common escapes.
    fn string_block_by_bytes(block: &[u8; 64]) -> StringBlock {
        let mut k = 0;
        while k < 64 {
            match block[k] {
                b'"' => return StringBlock::Ends(k),
                b'\\' if k == 63 => return StringBlock::Goes(63),
                b'\\' if matches!(block[k + 1], b'"' | b'\\') => k += 2,
                b'\\' => return StringBlock::Unusual,
                b if b < 0x20 => return StringBlock::Unusual,
                _ => k += 1,
            }
        }
        StringBlock::Goes(64)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, failure_persistence: None, ..ProptestConfig::default() })]

        /// The 64-byte block answers what reading byte by byte answers, for blocks dense with
        /// backslash runs of every length, quotes, other escapes and control characters.
        #[test]
        fn a_block_reads_as_its_bytes_do(bytes in prop::collection::vec(
            prop_oneof![
                6 => Just(b'\\'),
                2 => Just(b'"'),
                3 => Just(b'a'),
                1 => Just(b'n'),
                1 => Just(b'u'),
                1 => Just(0x1fu8),
                1 => Just(0x00u8),
                1 => Just(0x20u8),
                1 => Just(0xffu8),
                1 => Just(0x7fu8),
            ],
            64,
        )) {
            let block: [u8; 64] = bytes.try_into().unwrap();
            prop_assert_eq!(string_block(&block), string_block_by_bytes(&block), "{:?}", String::from_utf8_lossy(&block));
        }
    }

    #[test]
    fn backslash_runs_escape_by_their_parity_at_every_offset() {
        for start in 0..64 {
            for len in 1..=64 - start {
                let mut block = [b'a'; 64];
                block[start..start + len].fill(b'\\');
                if start + len < 64 {
                    block[start + len] = b'"';
                }
                let expect = string_block_by_bytes(&block);
                assert_eq!(string_block(&block), expect, "run of {len} at {start}");
                // The answer changes with the run's parity, so both kinds were met.
                if start + len < 64 {
                    let odd = len % 2 == 1;
                    assert_eq!(
                        matches!(expect, StringBlock::Ends(_)),
                        !odd,
                        "{len} at {start}"
                    );
                }
            }
        }
    }

    #[test]
    fn special_bytes_are_found_at_every_offset() {
        for len in 0..40 {
            for at in 0..len {
                for special in [b'"', b'\\', 0x00, 0x1f] {
                    let mut bytes = vec![b'a'; len];
                    // Bytes around the special one that must not be taken for it.
                    for (k, b) in bytes.iter_mut().enumerate() {
                        *b = [b'a', 0x20, 0x7f, 0xc3, 0x21, 0x5d][k % 6];
                    }
                    bytes[at] = special;
                    assert_eq!(find_special(&bytes), Some(at), "{len} {at} {special}");
                }
            }
            let plain: Vec<u8> = (0..len).map(|k| [b'a', 0x20, 0xff, b'#'][k % 4]).collect();
            assert_eq!(find_special(&plain), None);
            assert_eq!(find_backslash(&plain), None);
            for at in 0..len {
                let mut bytes = plain.clone();
                bytes[at] = b'\\';
                if at + 1 < len {
                    bytes[at + 1] = b'\\';
                }
                assert_eq!(find_backslash(&bytes), Some(at), "{len} {at}");
            }
        }
    }

    #[test]
    fn strings_are_checked_like_serde_json() {
        for (text, ok) in [
            (r#""plain""#, true),
            (r#""a\"b\\c\/\b\f\n\r\t""#, true),
            (r#""\u00e9\ud800""#, true),
            (r#""\u12""#, false),
            (r#""\x""#, false),
            ("\"tab\there\"", false),
            (r#""open"#, false),
            (r#""end\"#, false),
        ] {
            assert_eq!(string_end(text.as_bytes(), 0).is_some(), ok, "{text}");
            assert_eq!(
                serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok(),
                ok,
                "oracle {text}"
            );
        }
    }

    #[test]
    fn entries_keep_their_source_text() {
        let entries = object_entries(r#" {"a": 1, "b\u00e9" :[1, {"c": null}], "d":"x\"y"} "#)
            .expect("an object");
        let got = texts(entries);
        let want = [
            ("a", "1"),
            ("bé", r#"[1, {"c": null}]"#),
            ("d", r#""x\"y""#),
        ];
        assert_eq!(got, want.map(|(k, v)| (k.to_owned(), v.to_owned())));
        assert!(object_entries("{}").is_some_and(|e| e.is_empty()));
        for bad in [
            "[]",
            "{",
            r#"{"a"}"#,
            r#"{"a":1,}"#,
            r#"{"a":1} x"#,
            r#"{"\ud800":1}"#,
        ] {
            assert!(object_entries(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn any_depth_of_nesting_is_read_without_recursion() {
        let nested = |n: usize| format!("{}1{}", "[{\"k\":".repeat(n), "}]".repeat(n));
        assert!(is_json(&nested(100_000)));
        assert!(!is_json(&format!("{}]", nested(1000))));
        assert!(!is_json(&nested(1000).replacen(':', "", 1)));
    }
}
