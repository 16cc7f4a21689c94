//! A HogQL query response read as it arrives: rows handed out one by one, the body never held.
//!
//! [`PageScanner`] is fed the (inflated) body in chunks of any size. It walks the outer object
//! with a small state machine, finds each row of `results` by its brackets (a row's strings are
//! crossed eight bytes at a time from escape to escape, other members' with `memchr`), noting
//! in the same pass where each of the row's values lies and checking the row's commas and
//! every string's escapes, and hands the row to a callback, which takes its values with
//! [`Row::values`] (no second parse of the row). A row that lies inside one chunk is handed
//! out as a slice of that chunk; only a row cut by a chunk boundary
//! is copied, into a buffer that grows to the largest row (not the page). `columns` is read
//! wherever it appears, before or after `results`; other members are skipped after checking
//! that their brackets balance and their strings close. Memory is one row, whatever the page
//! size.
//!
//! ```
//! use posthog_core::{PageScanner, Row};
//!
//! let body = br#"{"columns":["uuid","n"],"results":[["a",1],["b",2]],"hasMore":false}"#;
//! let mut scanner = PageScanner::default();
//! let mut seen = Vec::new();
//! for chunk in body.chunks(7) {
//!     scanner
//!         .feed(chunk, &mut |row: Row| {
//!             let values = row.values()?;
//!             seen.push(values[1].get().to_owned());
//!             Ok::<(), posthog_core::CoreError>(())
//!         })
//!         .unwrap();
//! }
//! let page = scanner.finish().unwrap();
//! assert_eq!(page.rows, 2);
//! assert_eq!(page.columns.as_deref(), Some(&["uuid".to_owned(), "n".to_owned()][..]));
//! assert_eq!(seen, ["1", "2"]);
//! ```

use crate::CoreError;
use crate::json::{self, StringBlock, is_ws};

/// The largest single row (or `columns` value) the scanner copies across chunk boundaries:
/// PostHog caps an event at 1 MB, with its person properties a row stays well under this.
pub const MAX_ROW_BYTES: usize = 64 * 1024 * 1024;

/// What the scanner found in a complete body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedPage {
    /// Rows handed to the callback.
    pub rows: usize,
    /// The `columns` member, when the body has one.
    pub columns: Option<Vec<String>>,
}

/// Which outer member a value belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    Results,
    Columns,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the outer `{`.
    Start,
    /// Expecting a member's key (or `}` right after `{`).
    Key { first: bool },
    /// Inside a key string.
    InKey,
    /// After a key, expecting `:`.
    Colon,
    /// Expecting the start of a member's value.
    Value(Member),
    /// Inside a value of `columns` or of a skipped member.
    InValue(Member),
    /// After a member's value: `,` or `}`.
    AfterValue,
    /// Expecting a row `[` (or `]` when `first`: no rows).
    RowStart { first: bool },
    /// Inside a row.
    InRow,
    /// After a row: `,` or `]`.
    AfterRow,
    /// After the outer `}`: only whitespace may follow.
    Done,
}

/// Where a JSON value ends, scanned byte by byte across chunks.
#[derive(Debug, Clone, Copy, Default)]
struct ValueScan {
    started: bool,
    /// Open brackets (`[` and `{` alike).
    depth: u32,
    in_str: bool,
    escaped: bool,
    /// A number, `true`, `false` or `null`: ends before the next delimiter.
    scalar: bool,
}

impl ValueScan {
    /// Scans `bytes` (the value's continuation). `Some(n)`: the value ends after `n` bytes (a
    /// scalar's delimiter is not part of it); `None`: it goes on past `bytes`.
    fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        if !self.started {
            self.started = true;
            match bytes.first()? {
                b'[' | b'{' => self.depth = 1,
                b'"' => self.in_str = true,
                _ => self.scalar = true,
            }
            i = 1;
        }
        while i < bytes.len() {
            if self.in_str {
                if self.escaped {
                    self.escaped = false;
                    i += 1;
                    continue;
                }
                let k = memchr::memchr2(b'"', b'\\', &bytes[i..])?;
                i += k;
                if bytes[i] == b'\\' {
                    self.escaped = true;
                } else {
                    self.in_str = false;
                    if self.depth == 0 {
                        return Some(i + 1);
                    }
                }
                i += 1;
                continue;
            }
            let b = bytes[i];
            if self.scalar {
                if matches!(b, b',' | b'}' | b']') || is_ws(b) {
                    return Some(i);
                }
                i += 1;
                continue;
            }
            match b {
                b'"' => self.in_str = true,
                b'[' | b'{' => self.depth += 1,
                b']' | b'}' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
            i += 1;
        }
        None
    }
}

/// Where a row (a JSON array) ends and where each of its values lies, found in the same pass:
/// the row's own structure (values, commas, the closing `]`) is checked as it goes, and so
/// are the escapes of every string, so [`Row::values`] need not parse the row again. What
/// the pass does not check (a number's or literal's spelling, the inside of a nested object
/// or array) is checked by [`Row::values`] on those values alone, which are short or rare
/// in a HogQL row. Strings are crossed eight bytes at a time up to the next quote, backslash
/// or (refused) raw control character.
#[derive(Debug, Default)]
struct RowScan {
    /// Bytes of the row scanned so far (offsets in `bounds` count from the row's `[`).
    len: usize,
    /// Open brackets: 1 inside the row itself, more inside a nested value.
    depth: u32,
    in_str: bool,
    /// An escape the end of the previous bytes cut (its first `cut_len` bytes, backslash
    /// first), finished when the next bytes come.
    cut: [u8; 6],
    cut_len: u8,
    at: AtRow,
    /// Where the value in progress began.
    start: usize,
    /// Each value's text as `start..end` within the row.
    bounds: Vec<(usize, usize)>,
}

/// Where the scan is in the row's own list of values (depth 1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum AtRow {
    /// Before the row's `[`.
    #[default]
    Open,
    /// Expecting a value (or, when `first`, the `]` of an empty row).
    Value { first: bool },
    /// Inside a number or literal.
    Scalar,
    /// After a value: `,` or `]`.
    After,
}

impl RowScan {
    /// Starts a new row; the bounds keep their capacity.
    fn reset(&mut self) {
        let mut bounds = std::mem::take(&mut self.bounds);
        bounds.clear();
        *self = RowScan {
            bounds,
            ..RowScan::default()
        };
    }

    /// Scans `bytes` (the row's continuation). `Ok(Some(n))`: the row's `]` is byte `n - 1`;
    /// `Ok(None)`: the row goes on past `bytes`; `Err`: what is wrong, at which byte.
    fn scan(&mut self, bytes: &[u8]) -> Result<Option<usize>, (usize, &'static str)> {
        let base = self.len;
        let mut i = 0;
        while i < bytes.len() {
            if self.in_str {
                i = self.string(bytes, i, base)?;
                continue;
            }
            let b = bytes[i];
            if self.depth > 1 {
                match b {
                    b'"' => self.in_str = true,
                    b'[' | b'{' => self.depth += 1,
                    b']' | b'}' => {
                        self.depth -= 1;
                        if self.depth == 1 {
                            self.end_value(base + i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
                continue;
            }
            let ws = is_ws(b);
            match (self.at, b) {
                (AtRow::Open, b'[') => {
                    self.depth = 1;
                    self.at = AtRow::Value { first: true };
                }
                (AtRow::Open, _) => return Err((i, "a row of `results` is not an array")),
                (AtRow::Value { .. } | AtRow::After, _) if ws => {}
                (AtRow::Scalar, _) if ws => self.end_value(base + i),
                (AtRow::Value { first: true } | AtRow::After, b']') => {
                    return Ok(Some(self.close(i)));
                }
                (AtRow::Scalar, b']') => {
                    self.end_value(base + i);
                    return Ok(Some(self.close(i)));
                }
                (AtRow::Scalar, b',') => {
                    self.end_value(base + i);
                    self.at = AtRow::Value { first: false };
                }
                (AtRow::After, b',') => self.at = AtRow::Value { first: false },
                (AtRow::Value { .. }, b',' | b']' | b'}' | b':') => {
                    return Err((i, "a row with a missing value"));
                }
                (AtRow::Value { .. }, b'"') => {
                    self.start = base + i;
                    self.in_str = true;
                }
                (AtRow::Value { .. }, b'[' | b'{') => {
                    self.start = base + i;
                    self.depth = 2;
                }
                (AtRow::Value { .. }, _) => {
                    self.start = base + i;
                    self.at = AtRow::Scalar;
                }
                (AtRow::Scalar, _) => {}
                (AtRow::After, _) => return Err((i, "text after a value in a row")),
            }
            i += 1;
        }
        self.len += bytes.len();
        Ok(None)
    }

    /// Inside a string from `bytes[i]`: returns where scanning goes on. Stays in this loop
    /// from escape to escape (a properties string has one every few bytes), checking each
    /// escape where it stands, until the string or the bytes end; only an escape cut by the
    /// end of the bytes is carried in `cut`.
    fn string(
        &mut self,
        bytes: &[u8],
        mut i: usize,
        base: usize,
    ) -> Result<usize, (usize, &'static str)> {
        if self.cut_len > 0 {
            // The rest of an escape the previous bytes cut, completed from these.
            let had = usize::from(self.cut_len);
            let take = (self.cut.len() - had).min(bytes.len() - i);
            let mut escape = self.cut;
            escape[had..had + take].copy_from_slice(&bytes[i..i + take]);
            match json::escape_len(&escape[..had + take], 0) {
                Ok(Some(len)) => {
                    self.cut_len = 0;
                    i += len - had;
                }
                Ok(None) => {
                    self.cut = escape;
                    self.cut_len += take as u8; // at most 6
                    return Ok(bytes.len());
                }
                Err(what) => return Err((i, what)),
            }
        }
        // Bytes before this offset go one special byte at a time (a block there was unusual).
        let mut slow_until = 0;
        loop {
            if i >= slow_until
                && let Some(block) = bytes.get(i..i + 64).and_then(|b| b.try_into().ok())
            {
                match json::string_block(block) {
                    StringBlock::Ends(k) => return Ok(self.string_closed(i + k, base)),
                    StringBlock::Goes(n) => {
                        i += n;
                        continue;
                    }
                    StringBlock::Unusual => slow_until = i + 64,
                }
            }
            let Some(k) = bytes.get(i..).and_then(json::find_special) else {
                return Ok(bytes.len());
            };
            let at = i + k;
            match bytes[at] {
                b'"' => return Ok(self.string_closed(at, base)),
                // `\"` and `\\` are most of a properties string's escapes: taken here, the
                // rest by JSON's rule in `escape_len` (out of line, a call per escape cost 4 %
                // of a run).
                b'\\' if matches!(bytes.get(at + 1), Some(b'"' | b'\\')) => i = at + 2,
                b'\\' => match json::escape_len(bytes, at) {
                    Ok(Some(len)) => i = at + len,
                    Ok(None) => {
                        // Cut by the end of the bytes: finished with the next ones.
                        self.cut[..bytes.len() - at].copy_from_slice(&bytes[at..]);
                        self.cut_len = (bytes.len() - at) as u8; // at most 5
                        return Ok(bytes.len());
                    }
                    Err(what) => return Err((at, what)),
                },
                _ => return Err((at, "a string with a raw control character")),
            }
        }
    }

    /// The string's closing quote is byte `at` of the current bytes: returns where scanning
    /// goes on.
    fn string_closed(&mut self, at: usize, base: usize) -> usize {
        self.in_str = false;
        if self.depth == 1 {
            self.end_value(base + at + 1);
        }
        at + 1
    }

    fn end_value(&mut self, end: usize) {
        self.bounds.push((self.start, end));
        self.at = AtRow::After;
    }

    /// The row's `]` is at `i` of the current bytes: the row is complete.
    fn close(&mut self, i: usize) -> usize {
        self.depth = 0;
        self.len += i + 1;
        i + 1
    }
}

/// One row of a HogQL page as the scanner found it: its text (a JSON array, as sent) and
/// where each of its values lies.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a, 'b> {
    text: &'a [u8],
    bounds: &'b [(usize, usize)],
}

impl<'a> Row<'a, '_> {
    /// The row's JSON text, as sent.
    pub fn text(&self) -> &'a [u8] {
        self.text
    }

    /// The row's values as JSON text, borrowed from the row: a [`CoreError::Data`] when the
    /// row is not UTF-8 or a value is not JSON.
    pub fn values(&self) -> Result<Vec<RowValue<'a>>, CoreError> {
        // One SIMD pass checks the row is UTF-8; the values are then slices of it.
        let text = simdutf8::basic::from_utf8(self.text).map_err(|_| {
            CoreError::Data(
                "the query response is not a valid result page: a row is not UTF-8".into(),
            )
        })?;
        let mut out = Vec::with_capacity(self.bounds.len());
        for &(start, end) in self.bounds {
            let value = text
                .get(start..end)
                .filter(|v| valid_value(v))
                .ok_or_else(|| {
                    CoreError::Data(format!(
                        "the query response is not a valid result page: value {} of a row is \
                         not JSON",
                        out.len()
                    ))
                })?;
            out.push(RowValue(value));
        }
        Ok(out)
    }
}

/// Whether one value found by [`RowScan`] is JSON. Its strings were checked by the scan; what
/// remains is a scalar's spelling and a nested value's inside.
fn valid_value(value: &str) -> bool {
    match value.as_bytes().first() {
        Some(b'"') => true,
        Some(b'[' | b'{') => json::is_json(value),
        Some(_) => json::valid_scalar(value.as_bytes()),
        None => false,
    }
}

/// One value of a row as JSON text, checked to be JSON by [`Row::values`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowValue<'a>(&'a str);

impl<'a> RowValue<'a> {
    /// The value's JSON text, as sent.
    pub fn get(&self) -> &'a str {
        self.0
    }
}

/// Reads a HogQL query response body chunk by chunk: [`feed`](Self::feed) hands each row of
/// `results` to a callback as soon as its last byte has arrived, [`finish`](Self::finish)
/// checks the body was whole and returns its row count and `columns`. Memory is one row (a row
/// cut by a chunk boundary is copied, up to [`MAX_ROW_BYTES`]), whatever the page size.
#[derive(Debug)]
pub struct PageScanner {
    state: State,
    value: ValueScan,
    row: RowScan,
    /// The key being read, or the part of a row or `columns` value received so far when it
    /// crosses a chunk boundary.
    carry: Vec<u8>,
    /// Whether the value in progress is being copied into `carry`.
    carrying: bool,
    columns: Option<Vec<String>>,
    seen_results: bool,
    rows: usize,
    /// Body bytes fed so far (for error messages).
    offset: u64,
}

impl Default for PageScanner {
    fn default() -> Self {
        PageScanner {
            state: State::Start,
            value: ValueScan::default(),
            row: RowScan::default(),
            carry: Vec::new(),
            carrying: false,
            columns: None,
            seen_results: false,
            rows: 0,
            offset: 0,
        }
    }
}

impl PageScanner {
    /// Forgets the body read so far (a new attempt's body begins); the row buffer keeps its
    /// capacity.
    pub fn reset(&mut self) {
        let mut carry = std::mem::take(&mut self.carry);
        carry.clear();
        let mut row = std::mem::take(&mut self.row);
        row.reset();
        *self = PageScanner {
            carry,
            row,
            ..PageScanner::default()
        };
    }

    /// Rows handed out so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Feeds the next bytes of the body; `on_row` gets every row completed by them (its text,
    /// a JSON array as sent, and where its values lie). A body that is not a HogQL result page is a
    /// [`CoreError::Data`] naming the byte offset; an error from `on_row` stops the scan and
    /// is returned as is.
    pub fn feed<E: From<CoreError>>(
        &mut self,
        chunk: &[u8],
        on_row: &mut dyn FnMut(Row<'_, '_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut i = 0;
        while i < chunk.len() {
            i = match self.state {
                State::InRow => self.in_row(chunk, i, on_row)?,
                State::InValue(member) => self.in_value(chunk, i, member)?,
                State::InKey => self.in_key(chunk, i),
                _ => self.punctuation(chunk, i)?,
            };
        }
        self.offset += chunk.len() as u64;
        Ok(())
    }

    /// Ends the body: an error when it stopped before the outer object closed (a truncated
    /// body) or has no `results`.
    pub fn finish(&mut self) -> Result<ScannedPage, CoreError> {
        if self.state != State::Done {
            return Err(CoreError::Data(format!(
                "the query response is not a valid result page: it ends after {} bytes, inside \
                 its JSON (truncated)",
                self.offset
            )));
        }
        if !self.seen_results {
            return Err(CoreError::Data(
                "the query response is not a valid result page: it has no `results` array".into(),
            ));
        }
        Ok(ScannedPage {
            rows: self.rows,
            columns: self.columns.take(),
        })
    }

    fn error(&self, at: usize, what: &str) -> CoreError {
        CoreError::Data(format!(
            "the query response is not a valid result page: {what} at byte {}",
            self.offset + at as u64
        ))
    }

    /// One byte of the outer structure (whitespace, brackets, `:` and `,`).
    fn punctuation(&mut self, chunk: &[u8], i: usize) -> Result<usize, CoreError> {
        let b = chunk[i];
        if is_ws(b) {
            return Ok(i + 1);
        }
        let next = match (self.state, b) {
            (State::Start, b'{') => State::Key { first: true },
            (State::Key { .. }, b'"') => {
                self.carry.clear();
                State::InKey
            }
            (State::Key { first: true }, b'}') | (State::AfterValue, b'}') => State::Done,
            (State::Colon, b':') => {
                let member = match self.carry.as_slice() {
                    b"results" if self.seen_results => {
                        return Err(self.error(i, "a second `results` member"));
                    }
                    b"results" => Member::Results,
                    b"columns" => Member::Columns,
                    _ => Member::Other,
                };
                self.carry.clear();
                State::Value(member)
            }
            (State::Value(Member::Results), b'[') => {
                self.seen_results = true;
                State::RowStart { first: true }
            }
            (State::Value(Member::Results), _) => {
                return Err(self.error(i, "`results` is not an array"));
            }
            (State::Value(_), b',' | b':' | b']' | b'}') => {
                return Err(self.error(i, "a member without a value"));
            }
            (State::Value(member), _) => {
                self.state = State::InValue(member);
                self.value = ValueScan::default();
                self.carrying = member == Member::Columns;
                self.carry.clear();
                return Ok(i); // the value's first byte is scanned by `in_value`
            }
            (State::AfterValue, b',') => State::Key { first: false },
            (State::RowStart { .. }, b'[') => {
                self.row.reset();
                self.carrying = false;
                self.carry.clear();
                self.state = State::InRow;
                return Ok(i); // the row's `[` is part of its text
            }
            (State::RowStart { first: true }, b']') | (State::AfterRow, b']') => State::AfterValue,
            (State::RowStart { .. }, _) => {
                return Err(self.error(i, "a row of `results` is not an array"));
            }
            (State::AfterRow, b',') => State::RowStart { first: false },
            (State::Done, _) => return Err(self.error(i, "text after the response object")),
            (state, _) => {
                return Err(self.error(i, &format!("unexpected {:?} ({state:?})", char::from(b))));
            }
        };
        self.state = next;
        Ok(i + 1)
    }

    /// Inside a key: reads up to its closing quote.
    fn in_key(&mut self, chunk: &[u8], i: usize) -> usize {
        let rest = &chunk[i..];
        // Keys are short and rarely escaped: a quote ends the key unless an odd run of
        // backslashes precedes it.
        let mut k = 0;
        while k < rest.len() {
            match rest[k] {
                b'"' if escaped_backslashes(&self.carry) => {
                    self.state = State::Colon;
                    return i + k + 1;
                }
                b => self.carry.push(b),
            }
            k += 1;
        }
        chunk.len()
    }

    /// Inside the value of `columns` or of a skipped member.
    fn in_value(&mut self, chunk: &[u8], i: usize, member: Member) -> Result<usize, CoreError> {
        let rest = &chunk[i..];
        match self.value.scan(rest) {
            Some(n) => {
                if self.carrying {
                    self.carry.extend_from_slice(&rest[..n]);
                    self.columns = Some(serde_json::from_slice(&self.carry).map_err(|source| {
                        CoreError::Json {
                            what: "the query response's `columns` is not a list of names".into(),
                            source,
                        }
                    })?);
                    self.carry.clear();
                }
                debug_assert!(member != Member::Results);
                self.state = State::AfterValue;
                Ok(i + n)
            }
            None => {
                if self.carrying {
                    self.carry_more(rest, i)?;
                }
                Ok(chunk.len())
            }
        }
    }

    /// Inside a row: hands it out when it ends.
    fn in_row<E: From<CoreError>>(
        &mut self,
        chunk: &[u8],
        i: usize,
        on_row: &mut dyn FnMut(Row<'_, '_>) -> Result<(), E>,
    ) -> Result<usize, E> {
        let rest = &chunk[i..];
        match self.row.scan(rest) {
            Ok(Some(n)) => {
                self.rows += 1;
                self.state = State::AfterRow;
                if self.carrying {
                    self.carry.extend_from_slice(&rest[..n]);
                    let text = std::mem::take(&mut self.carry);
                    let result = on_row(Row {
                        text: &text,
                        bounds: &self.row.bounds,
                    });
                    self.carry = text;
                    self.carry.clear();
                    self.carrying = false;
                    result?;
                } else {
                    on_row(Row {
                        text: &rest[..n],
                        bounds: &self.row.bounds,
                    })?;
                }
                Ok(i + n)
            }
            Ok(None) => {
                self.carrying = true;
                self.carry_more(rest, i)?;
                Ok(chunk.len())
            }
            Err((at, what)) => Err(self.error(i + at, what).into()),
        }
    }

    fn carry_more(&mut self, bytes: &[u8], at: usize) -> Result<(), CoreError> {
        if self.carry.len() + bytes.len() > MAX_ROW_BYTES {
            return Err(self.error(
                at,
                &format!("a value longer than {} MiB", MAX_ROW_BYTES >> 20),
            ));
        }
        self.carry.extend_from_slice(bytes);
        Ok(())
    }
}

/// Whether the backslashes ending `key` escape each other (an even run, or none): then a
/// following quote ends the key.
fn escaped_backslashes(key: &[u8]) -> bool {
    key.iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 0
}

/// The values of one row (a JSON array) as JSON text, borrowed from `row`: the same check and
/// split the scanner gives each row of a page ([`Row::values`]), for a row on its own.
///
/// ```
/// let values = posthog_core::row_values(br#"["a", 1, {"b": [2]}]"#).unwrap();
/// assert_eq!(values.len(), 3);
/// assert_eq!(values[2].get(), r#"{"b": [2]}"#);
/// ```
pub fn row_values(row: &[u8]) -> Result<Vec<RowValue<'_>>, CoreError> {
    let bad = |what: &str| {
        CoreError::Data(format!(
            "the query response is not a valid result page: {what}"
        ))
    };
    let start = row.iter().position(|&b| !is_ws(b)).unwrap_or(row.len());
    let mut scan = RowScan::default();
    let end = match scan.scan(&row[start..]) {
        Ok(Some(n)) => start + n,
        Ok(None) => return Err(bad("a row ends inside its JSON (truncated)")),
        Err((_, what)) => return Err(bad(what)),
    };
    if row[end..].iter().any(|&b| !is_ws(b)) {
        return Err(bad("text after a row"));
    }
    Row {
        text: &row[start..end],
        bounds: &scan.bounds,
    }
    .values()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QueryPage;

    /// Scans `body` cut into the given chunk sizes (cycled), returning the rows' texts.
    fn scan(body: &[u8], sizes: &[usize]) -> Result<(Vec<String>, ScannedPage), CoreError> {
        let mut scanner = PageScanner::default();
        let mut rows = Vec::new();
        let mut at = 0;
        let mut n = 0;
        while at < body.len() {
            let size = sizes[n % sizes.len()].max(1);
            let end = (at + size).min(body.len());
            scanner.feed(&body[at..end], &mut |row: Row| {
                rows.push(String::from_utf8(row.text().to_vec()).unwrap());
                Ok::<(), CoreError>(())
            })?;
            at = end;
            n += 1;
        }
        Ok((rows, scanner.finish()?))
    }

    const BODY: &str = r#" {"cache_key": "x", "clickhouse": "SELECT \"a]\" FROM [x]",
        "columns": ["uuid", "properties"], "hasMore": false, "limit": 100,
        "results": [["a", "{\"k\": \"v]\\\\\"}"], ["b", null], [ "c" , {"x": [1, {"y": "}"}]}]],
        "timings": [{"k": "./x", "t": 0.5}], "types": [["uuid", "UUID"]], "error": null} "#;

    /// A piece of a string literal's text: plain, the common escapes, the rarer ones, and
    /// (rarely) what JSON refuses.
    fn literal_piece() -> impl proptest::strategy::Strategy<Value = &'static str> {
        use proptest::prelude::*;
        prop_oneof![
            8 => Just("abcdefg"),
            2 => Just("q"),
            6 => Just(r#"\""#),
            4 => Just(r"\\"),
            1 => Just(r"\n"),
            1 => Just(r"\/"),
            1 => Just(r"\u00e9"),
            1 => Just(r"\ud83d\ude80"),
            1 => Just("é🌸"),
            1 => Just(r#"{\"k\": [1, \"]\"]}"#),
            1 => Just("\t"),
            1 => Just(r"\q"),
            1 => Just(r"\u12x4"),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, failure_persistence: None, ..Default::default() })]

        /// Long strings (read 64 bytes at a time where their escapes are the common ones) give
        /// the values serde_json reads, and the scan refuses exactly the bodies serde_json
        /// refuses, however the body is cut into chunks.
        #[test]
        fn long_strings_scan_as_serde_json_reads_them(
            values in proptest::collection::vec(proptest::collection::vec(literal_piece(), 0..40), 1..4),
            sizes in proptest::collection::vec(1usize..300, 1..4),
        ) {
            let literals: Vec<String> = values.iter().map(|v| format!("\"{}\"", v.concat())).collect();
            let body = format!(r#"{{"results": [[{}], [1]]}}"#, literals.join(", "));
            let oracle = serde_json::from_str::<serde_json::Value>(&body);
            match scan(body.as_bytes(), &sizes) {
                Ok((rows, _)) => {
                    let oracle = oracle.map_err(|e| format!("serde_json refused {body}: {e}")).unwrap();
                    let values = row_values(rows[0].as_bytes()).unwrap();
                    for (k, value) in values.iter().enumerate() {
                        let read: serde_json::Value = serde_json::from_str(value.get()).unwrap();
                        proptest::prop_assert_eq!(&read, &oracle["results"][0][k]);
                    }
                    proptest::prop_assert_eq!(values.len(), literals.len());
                }
                Err(err) => proptest::prop_assert!(oracle.is_err(), "{body}: {err}"),
            }
        }
    }

    #[test]
    fn rows_are_found_whatever_the_chunking() {
        let whole = QueryPage::parse(BODY.as_bytes()).unwrap();
        let expected: Vec<String> = [
            r#"["a", "{\"k\": \"v]\\\\\"}"]"#,
            r#"["b", null]"#,
            r#"[ "c" , {"x": [1, {"y": "}"}]}]"#,
        ]
        .map(str::to_owned)
        .to_vec();
        for sizes in [&[usize::MAX][..], &[1], &[2], &[3, 5, 7], &[64], &[13, 1]] {
            let (rows, page) = scan(BODY.as_bytes(), sizes).unwrap();
            assert_eq!(rows, expected, "chunks {sizes:?}");
            assert_eq!(page.rows, 3);
            assert_eq!(page.columns.as_deref(), Some(&whole.columns[..]));
            for (row, parsed) in rows.iter().zip(&whole.results) {
                let values = row_values(row.as_bytes()).unwrap();
                let texts: Vec<&str> = values.iter().map(|v| v.get()).collect();
                let oracle: Vec<&str> = parsed.iter().map(|v| v.get()).collect();
                assert_eq!(texts, oracle);
            }
        }
    }

    #[test]
    fn columns_after_results_and_empty_results_are_read() {
        let (rows, page) = scan(br#"{"results":[],"columns":["a"]}"#, &[1]).unwrap();
        assert!(rows.is_empty());
        assert_eq!(page.rows, 0);
        assert_eq!(page.columns, Some(vec!["a".to_owned()]));
        let (_, page) = scan(br#"{"results":[[1]]}"#, &[4]).unwrap();
        assert_eq!(page.columns, None);
    }

    #[test]
    fn keys_with_escaped_quotes_are_skipped_whole() {
        let body = br#"{"a\"results\\":[1],"results":[[2]]}"#;
        let (rows, _) = scan(body, &[1]).unwrap();
        assert_eq!(rows, ["[2]"]);
    }

    #[test]
    fn truncated_and_malformed_bodies_are_errors_naming_the_problem() {
        for (body, says) in [
            (&br#"{"results":[[1],[2"#[..], "truncated"),
            (br#"{"results":[[1]]"#, "truncated"),
            (b"", "truncated"),
            (br#"{"results":{}}"#, "`results` is not an array"),
            (br#"{"results":[1]}"#, "not an array"),
            (br#"{"results":[[1]],}"#, "unexpected"),
            (br#"{"results":[[1]]} x"#, "text after"),
            (br#"{"results":[[1]],"results":[]}"#, "second `results`"),
            (br#"{"columns":[1],"results":[]}"#, "`columns`"),
            (br#"{"columns":[]}"#, "no `results`"),
            (b"<html>", "unexpected"),
            (br#"{"results":[[1] [2]]}"#, "unexpected"),
        ] {
            let err = scan(body, &[3]).unwrap_err().to_string();
            assert!(
                err.contains(says),
                "{:?}: {err}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn escapes_cut_anywhere_are_checked_the_same() {
        let good = r#"{"results":[["a\u00e9\"b\\", "\ud83d\ude80", "x\/y\n"]]}"#;
        let values = |body: &str, size: usize| {
            scan(body.as_bytes(), &[size]).map(|(rows, _)| {
                rows.iter()
                    .map(|r| {
                        let v = row_values(r.as_bytes()).unwrap();
                        v.iter().map(|v| v.get().to_owned()).collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>()
            })
        };
        let whole = values(good, usize::MAX).unwrap();
        assert_eq!(whole[0][0], r#""a\u00e9\"b\\""#);
        for size in 1..good.len() {
            assert_eq!(values(good, size).unwrap(), whole, "chunks of {size}");
        }
        for (bad, says) in [
            (r#"{"results":[["a\u00zz"]]}"#, "malformed \\u escape"),
            (r#"{"results":[["a\u12"]]}"#, "malformed \\u escape"),
            (r#"{"results":[["a\q"]]}"#, "invalid escape"),
            ("{\"results\":[[\"a\tb\"]]}", "raw control character"),
        ] {
            for size in 1..bad.len() {
                let err = values(bad, size).unwrap_err().to_string();
                assert!(err.contains(says), "{bad} in chunks of {size}: {err}");
            }
        }
    }

    #[test]
    fn a_reset_forgets_the_partial_body() {
        let mut scanner = PageScanner::default();
        let mut rows = 0;
        let mut count = |_: Row| {
            rows += 1;
            Ok::<(), CoreError>(())
        };
        scanner.feed(br#"{"results":[[1],[2"#, &mut count).unwrap();
        scanner.reset();
        scanner
            .feed(br#"{"results":[[1],[2],[3]]}"#, &mut count)
            .unwrap();
        assert_eq!(scanner.finish().unwrap().rows, 3);
        assert_eq!(rows, 4, "one row before the reset, three after");
    }

    #[test]
    fn an_error_from_the_callback_stops_the_scan() {
        let mut scanner = PageScanner::default();
        let err = scanner
            .feed(br#"{"results":[[1],[2]]}"#, &mut |_| {
                Err(CoreError::Data("stop".into()))
            })
            .unwrap_err();
        assert_eq!(err.to_string(), "bad data: stop");
    }
}
