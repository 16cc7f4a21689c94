//! Keyset pagination over HogQL as a value: a [`KeysetPager`] says which query reads the next
//! page from where it stands, and moves on from a summary of the page that came back.
//!
//! The pager sends nothing and parses nothing, so every rule of the scan lives here and is
//! tested without a server:
//!
//! - pages are ordered by `(time, id)` (or `id` alone) and continue strictly after the last row
//!   of the previous page: `WHERE (time, id) > (last_time, last_id) ORDER BY time, id LIMIT n`,
//!   never `OFFSET` (PostHog refuses it for personal API keys);
//! - **a page shorter than its LIMIT is not the end**: PostHog clamps LIMIT silently and with an
//!   explicit LIMIT sends no `hasMore`, so only an empty page ends a scan (⌈N / page⌉ + 1
//!   requests in all);
//! - the cursor must advance on every page (times compared as instants, ids only for
//!   equality, because ClickHouse orders UUIDs by their second half first), or the scan stops
//!   rather than loop;
//! - after a server timeout the page halves (down to [`MIN_PAGE`]) and grows back after
//!   [`GROW_BACK_AFTER`] full pages in a row.
//!
//! Before a scan, [`KeysetQuery::summary`] builds its planning query from the same keyset
//! bound and filters as the pages (a row count and quantiles of the time column, read back by
//! [`RangeSummary::from_result`]), so a range can be split into slices read side by side,
//! each bounded above by [`KeysetFilter::before`].
//!
//! ```
//! use posthog_client::{KeysetCursor, KeysetPager, KeysetQuery, KeysetStart, PageSummary};
//! let query = KeysetQuery::new("events", ["uuid", "timestamp"], "uuid").time_column("timestamp");
//! let mut pager = KeysetPager::new(query, KeysetStart::AtOrAfter(0), 1000);
//! let first = pager.next_query().unwrap();
//! assert!(first.text().ends_with("order by timestamp, uuid limit 1000"));
//! // A short page (the server clamped the LIMIT): the scan reads on.
//! let last = KeysetCursor { time: Some(5), id: "0190a000-0000-7000-8000-000000000001".into() };
//! pager.advance(&PageSummary { rows: 700, last: Some(last) }).unwrap();
//! assert!(pager.next_query().unwrap().text().contains("(timestamp, uuid) > "));
//! // Only an empty page ends it.
//! pager.advance(&PageSummary { rows: 0, last: None }).unwrap();
//! assert!(pager.next_query().is_none());
//! ```

use std::fmt::Write as _;

use serde_json::Value;

use crate::{HogQlQuery, QueryResult};

/// The smallest page a server timeout can shrink the page to.
pub const MIN_PAGE: u32 = 10;

/// Full pages in a row at a shrunk page size before the page doubles back towards the
/// configured size (a 504 may be transient; a heavy region of the table shrinks it again).
pub const GROW_BACK_AFTER: u32 = 4;

/// Microseconds since the Unix epoch, UTC.
pub type Micros = i64;

/// A position in a keyset scan: the keys of the last row read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysetCursor {
    /// The time key (`None` for scans ordered by id alone).
    pub time: Option<Micros>,
    /// The id key, as text (a UUID's hyphenated form, or a session id).
    pub id: String,
}

impl KeysetCursor {
    /// The position of a row from its values as PostHog returns them: the time as RFC 3339
    /// text (any offset; compared as an instant), the id as text. `None` when the time is not
    /// RFC 3339.
    ///
    /// ```
    /// use posthog_client::KeysetCursor;
    /// let a = KeysetCursor::from_text(Some("2025-01-01T05:30:00+05:30"), "x").unwrap();
    /// let b = KeysetCursor::from_text(Some("2025-01-01T00:00:00Z"), "x").unwrap();
    /// assert_eq!(a, b);
    /// assert!(KeysetCursor::from_text(Some("yesterday"), "x").is_none());
    /// ```
    pub fn from_text(time: Option<&str>, id: &str) -> Option<Self> {
        let time = match time {
            None => None,
            Some(text) => Some(rfc3339(text)?),
        };
        Some(KeysetCursor {
            time,
            id: id.to_owned(),
        })
    }
}

/// An RFC 3339 instant (any offset, with or without a fraction) in microseconds; `None` when
/// the text is not one or the instant is outside [`Micros`].
fn rfc3339(text: &str) -> Option<Micros> {
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Micros::try_from(at.unix_timestamp_nanos() / 1000).ok()
}

/// An instant as RFC 3339 text, or as ClickHouse's `YYYY-MM-DD hh:mm:ss[.ffffff]` read as UTC
/// (what a query sent with `convertToProjectTimezone: false` may also render).
fn instant(text: &str) -> Option<Micros> {
    rfc3339(text).or_else(|| {
        let format = time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]]"
        );
        let at = time::PrimitiveDateTime::parse(text, format)
            .ok()?
            .assume_utc();
        Micros::try_from(at.unix_timestamp_nanos() / 1000).ok()
    })
}

/// Where a scan starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysetStart {
    /// Every row.
    Beginning,
    /// Rows whose time is at or after this instant (a first run, or a lookback window).
    AtOrAfter(Micros),
    /// Rows strictly after this position.
    After(KeysetCursor),
}

impl std::fmt::Display for KeysetStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeysetStart::Beginning => f.write_str("the beginning"),
            KeysetStart::AtOrAfter(at) => write!(f, "at or after {}", utc(*at)),
            KeysetStart::After(KeysetCursor { time: Some(t), id }) => {
                write!(f, "after ({}, {id})", utc(*t))
            }
            KeysetStart::After(KeysetCursor { time: None, id }) => write!(f, "after {id}"),
        }
    }
}

/// A condition every page of a scan carries besides its keyset bound, with its values bound
/// as HogQL placeholders (never spliced into the text).
#[derive(Debug, Clone, PartialEq)]
pub struct KeysetFilter {
    text: String,
    values: Vec<(String, String)>,
}

impl KeysetFilter {
    /// A condition such as `event in ({event_0})`, with `{…}` placeholders bound by
    /// [`KeysetFilter::value`].
    pub fn new(text: impl Into<String>) -> Self {
        KeysetFilter {
            text: text.into(),
            values: Vec::new(),
        }
    }

    /// Binds the placeholder `{key}` to a string constant.
    pub fn value(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.values.push((key.into(), value.into()));
        self
    }

    /// `column >= toDateTime({key})`: rows at or after an instant.
    pub fn at_or_after(column: &str, key: &str, at: Micros) -> Self {
        KeysetFilter::new(format!("{column} >= toDateTime({{{key}}})")).value(key, utc(at))
    }

    /// `column <= toDateTime({key})`: rows at or before an instant.
    pub fn at_or_before(column: &str, key: &str, at: Micros) -> Self {
        KeysetFilter::new(format!("{column} <= toDateTime({{{key}}})")).value(key, utc(at))
    }

    /// `column < toDateTime({key})`: rows strictly before an instant (the exclusive upper
    /// bound of one slice of a range, so that adjacent slices never share a row).
    pub fn before(column: &str, key: &str, at: Micros) -> Self {
        KeysetFilter::new(format!("{column} < toDateTime({{{key}}})")).value(key, utc(at))
    }
}

/// What a keyset scan reads: the columns, the table, its keys and its filters.
#[derive(Debug, Clone, PartialEq)]
pub struct KeysetQuery {
    table: String,
    select: Vec<String>,
    time_column: Option<String>,
    id_column: String,
    id_is_uuid: bool,
    filters: Vec<KeysetFilter>,
    name: String,
}

impl KeysetQuery {
    /// A scan of `table` selecting `select` (expressions, e.g. `person.properties as
    /// person_properties`), ordered by `id_column` (a UUID unless [`KeysetQuery::text_id`]).
    pub fn new<S: Into<String>>(
        table: impl Into<String>,
        select: impl IntoIterator<Item = S>,
        id_column: impl Into<String>,
    ) -> Self {
        let table = table.into();
        KeysetQuery {
            name: format!("posthog-rs extract {table}"),
            table,
            select: select.into_iter().map(Into::into).collect(),
            time_column: None,
            id_column: id_column.into(),
            id_is_uuid: true,
            filters: Vec::new(),
        }
    }

    /// Orders by `(time_column, id)`: an incremental scan.
    pub fn time_column(mut self, column: impl Into<String>) -> Self {
        self.time_column = Some(column.into());
        self
    }

    /// The id is text compared as text (a session id), not a UUID.
    pub fn text_id(mut self) -> Self {
        self.id_is_uuid = false;
        self
    }

    /// Adds a condition every page carries.
    pub fn filter(mut self, filter: KeysetFilter) -> Self {
        self.filters.push(filter);
        self
    }

    /// The name the queries carry in PostHog's query log.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The time key's column, if the scan has one.
    pub fn time_key(&self) -> Option<&str> {
        self.time_column.as_deref()
    }

    /// The id key's column.
    pub fn id_key(&self) -> &str {
        &self.id_column
    }

    /// The query for the page of `limit` rows from `start`.
    pub fn page(&self, start: &KeysetStart, limit: u32) -> HogQlQuery {
        let (conditions, values) = self.conditions(start);
        let mut sql = format!(
            "select {} from {}{conditions}",
            self.select.join(", "),
            self.table
        );
        let id = &self.id_column;
        match &self.time_column {
            Some(time) => write!(sql, " order by {time}, {id} limit {limit}"),
            None => write!(sql, " order by {id} limit {limit}"),
        }
        .expect("writing to a String cannot fail");
        bind(HogQlQuery::new(sql).name(self.name.clone()), values)
    }

    /// The planning query of a scan from `start`: how many rows it will read and the instants
    /// of its time column at `levels` (fractions of those rows, in `0..=1`), from the same
    /// keyset bound and filters as its pages, so the answer describes exactly the rows the
    /// pages would read. [`RangeSummary::from_result`] reads the answer.
    ///
    /// `select count(), quantiles(l1, l2, …)(time) from table where …`, with no `order by` or
    /// `limit`; with no `levels`, `select count() from table where …`. Its name is the scan's
    /// followed by ` plan`, and a timeout is returned at once, like a page's. `None` when the
    /// scan has no time column, or a level is not a finite number in `0..=1` (which HogQL
    /// would refuse).
    ///
    /// ```
    /// use posthog_client::{KeysetFilter, KeysetQuery, KeysetStart};
    /// let query = KeysetQuery::new("events", ["uuid", "timestamp"], "uuid")
    ///     .time_column("timestamp")
    ///     .filter(KeysetFilter::before("timestamp", "until", 86_400_000_000));
    /// let plan = query.summary(&KeysetStart::AtOrAfter(0), &[0.25, 0.5, 0.75]).unwrap();
    /// assert_eq!(
    ///     plan.text(),
    ///     "select count(), quantiles(0.25, 0.5, 0.75)(timestamp) from events where \
    ///      timestamp >= toDateTime({cursor_time}) and timestamp < toDateTime({until})"
    /// );
    /// assert_eq!(plan.values()["until"], "1970-01-02T00:00:00.000000Z");
    /// assert!(query.summary(&KeysetStart::Beginning, &[1.5]).is_none());
    /// ```
    pub fn summary(&self, start: &KeysetStart, levels: &[f64]) -> Option<HogQlQuery> {
        let time = self.time_column.as_deref()?;
        if !levels.iter().all(|l| (0.0..=1.0).contains(l)) {
            return None;
        }
        let mut aggregates = String::from("count()");
        if !levels.is_empty() {
            // `Display` of an f64 never uses exponent notation; `abs` turns -0 into 0.
            let levels: Vec<String> = levels.iter().map(|l| l.abs().to_string()).collect();
            write!(aggregates, ", quantiles({})({time})", levels.join(", "))
                .expect("writing to a String cannot fail");
        }
        let (conditions, values) = self.conditions(start);
        let sql = format!("select {aggregates} from {}{conditions}", self.table);
        let name = format!("{} plan", self.name);
        Some(bind(HogQlQuery::new(sql).name(name), values))
    }

    /// The ` where …` clause of a read from `start` (its keyset bound, then the filters; empty
    /// when there is neither) and the values of its placeholders: one function, so a page and
    /// the plan of a scan can never disagree on which rows they read.
    fn conditions(&self, start: &KeysetStart) -> (String, Vec<(&str, String)>) {
        let mut conditions: Vec<String> = Vec::new();
        let mut values: Vec<(&str, String)> = Vec::new();
        let id = &self.id_column;
        let id_value = if self.id_is_uuid {
            "toUUID({cursor_id})"
        } else {
            "{cursor_id}"
        };
        match (start, &self.time_column) {
            (KeysetStart::Beginning, _) | (KeysetStart::AtOrAfter(_), None) => {}
            (KeysetStart::AtOrAfter(at), Some(time)) => {
                conditions.push(format!("{time} >= toDateTime({{cursor_time}})"));
                values.push(("cursor_time", utc(*at)));
            }
            (KeysetStart::After(cursor), Some(time)) => {
                conditions.push(format!(
                    "({time}, {id}) > (toDateTime({{cursor_time}}), {id_value})"
                ));
                values.push(("cursor_time", utc(cursor.time.unwrap_or(0))));
                values.push(("cursor_id", cursor.id.clone()));
            }
            (KeysetStart::After(cursor), None) => {
                conditions.push(format!("{id} > {id_value}"));
                values.push(("cursor_id", cursor.id.clone()));
            }
        }
        for filter in &self.filters {
            conditions.push(filter.text.clone());
            values.extend(filter.values.iter().map(|(k, v)| (k.as_str(), v.clone())));
        }
        if conditions.is_empty() {
            return (String::new(), values);
        }
        (format!(" where {}", conditions.join(" and ")), values)
    }
}

/// A scan's query with its placeholders bound; its timeouts come back at once, for the caller
/// to ask for less.
fn bind(query: HogQlQuery, values: Vec<(&str, String)>) -> HogQlQuery {
    values
        .into_iter()
        .fold(query.fail_fast_on_timeout(), |query, (key, value)| {
            query.value(key, value)
        })
}

/// The answer to a scan's planning query ([`KeysetQuery::summary`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSummary {
    /// Rows the scan will read (as of the query).
    pub rows: u64,
    /// The time column's value at each level asked for, in the order asked. Empty when no
    /// level was asked for, and when `rows` is 0 (over no rows ClickHouse answers the epoch,
    /// which is no instant of the range). Above 8192 rows ClickHouse estimates them from a
    /// sample: good enough to split a range, not to count on.
    pub quantiles: Vec<Micros>,
}

impl RangeSummary {
    /// Reads the answer to [`KeysetQuery::summary`]: one row, `[count]` or `[count, [t1, t2,
    /// …]]`. The count may be a JSON number or a numeric string (ClickHouse's `UInt64` as
    /// JSON); each `t` is an instant as text, RFC 3339 with any offset (what PostHog sends
    /// with `convertToProjectTimezone: false`) or ClickHouse's `2025-01-02 13:57:30.178957`,
    /// read as UTC.
    ///
    /// ```
    /// use posthog_client::{QueryResult, RangeSummary};
    /// use serde_json::json;
    /// let answer: QueryResult = serde_json::from_value(json!({
    ///     "results": [["1200", ["1970-01-01T00:00:01Z", "1970-01-01 00:00:02.5"]]]
    /// })).unwrap();
    /// let summary = RangeSummary::from_result(&answer).unwrap();
    /// assert_eq!(summary, RangeSummary { rows: 1200, quantiles: vec![1_000_000, 2_500_000] });
    /// ```
    pub fn from_result(result: &QueryResult) -> Result<RangeSummary, KeysetError> {
        let invalid = |message: String| KeysetError::InvalidSummary { message };
        let row = match result.results.as_slice() {
            [row] => row,
            rows => return Err(invalid(format!("{} rows, expected one", rows.len()))),
        };
        let (count, quantiles) = match row.as_slice() {
            [count] => (count, &[][..]),
            [count, Value::Array(quantiles)] => (count, quantiles.as_slice()),
            [_, other] => {
                return Err(invalid(format!(
                    "the quantiles are {}, expected an array",
                    describe(other)
                )));
            }
            values => {
                return Err(invalid(format!(
                    "a row of {} values, expected [count] or [count, quantiles]",
                    values.len()
                )));
            }
        };
        let rows = row_count(count).ok_or_else(|| {
            invalid(format!(
                "the count is {}, expected a whole number of at least 0",
                describe(count)
            ))
        })?;
        let quantiles = quantiles
            .iter()
            .enumerate()
            .map(|(i, value)| {
                value.as_str().and_then(instant).ok_or_else(|| {
                    invalid(format!(
                        "quantile {i} is {}, expected a timestamp as text",
                        describe(value)
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RangeSummary {
            rows,
            quantiles: if rows == 0 { Vec::new() } else { quantiles },
        })
    }
}

/// A count as ClickHouse sends it: a JSON number or a numeric string, never negative.
fn row_count(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A value for an error message, cut short: a hostile answer must not flood the log.
fn describe(value: &Value) -> String {
    const SHOWN: usize = 64;
    let text = value.to_string();
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// What the pager needs to know about a page that came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageSummary {
    /// Rows in the page.
    pub rows: usize,
    /// The keys of its last row (`None` for an empty page).
    pub last: Option<KeysetCursor>,
}

/// A page the pager refuses to move on from, or a planning answer that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeysetError {
    /// More rows than the LIMIT asked for.
    #[error("the server returned {rows} rows for LIMIT {limit}")]
    TooManyRows {
        /// Rows in the page.
        rows: usize,
        /// The LIMIT the page was asked with.
        limit: u32,
    },
    /// The page's last row is not after where the page started: reading on would loop.
    #[error(
        "the keyset cursor did not advance: the page from {from} ended at {last:?} (the page's \
         last row is not after where it started); refusing to loop"
    )]
    NotAdvanced {
        /// Where the page started.
        from: KeysetStart,
        /// The page's last row.
        last: KeysetCursor,
    },
    /// The answer to a planning query ([`KeysetQuery::summary`]) is not one row of a count
    /// and instants.
    #[error("the range summary PostHog returned is not usable: {message}")]
    InvalidSummary {
        /// What is wrong with it.
        message: String,
    },
}

impl crate::Categorized for KeysetError {
    /// A page the scan cannot move on from, or a plan it cannot read, is the server's data
    /// breaking the scan's rules.
    fn category(&self) -> crate::Category {
        crate::Category::Data
    }
}

/// A keyset scan's position and page size; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct KeysetPager {
    query: KeysetQuery,
    position: KeysetStart,
    page_size: u32,
    limit: u32,
    full_pages_since_shrink: u32,
    done: bool,
}

/// What [`KeysetPager::advance`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    /// The scan moved on; the page was full.
    Full,
    /// The scan moved on after a page shorter than its LIMIT (the server may clamp LIMIT).
    Short,
    /// The page was empty: the scan is over.
    Done,
    /// The scan moved on, and the page doubled back towards its configured size.
    Grew(u32),
}

impl KeysetPager {
    /// A scan of `query` from `start`, `page_size` rows a page (at least 1).
    pub fn new(query: KeysetQuery, start: KeysetStart, page_size: u32) -> Self {
        let page_size = page_size.max(1);
        KeysetPager {
            query,
            position: start,
            page_size,
            limit: page_size,
            full_pages_since_shrink: 0,
            done: false,
        }
    }

    /// The query of the next page, or `None` once an empty page ended the scan.
    pub fn next_query(&self) -> Option<HogQlQuery> {
        (!self.done).then(|| self.query.page(&self.position, self.limit))
    }

    /// Where the next page starts.
    pub fn position(&self) -> &KeysetStart {
        &self.position
    }

    /// The LIMIT of the next page.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Whether an empty page ended the scan.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// What the scan reads.
    pub fn query(&self) -> &KeysetQuery {
        &self.query
    }

    /// Moves on from the page that answered [`KeysetPager::next_query`]: past its last row, or
    /// to the end when it was empty. A page with more rows than its LIMIT, or whose last row is
    /// not after where it started, is refused and the position stays.
    pub fn advance(&mut self, page: &PageSummary) -> Result<Advance, KeysetError> {
        if page.rows > self.limit as usize {
            return Err(KeysetError::TooManyRows {
                rows: page.rows,
                limit: self.limit,
            });
        }
        let Some(last) = &page.last else {
            self.done = true;
            return Ok(Advance::Done);
        };
        if !advanced(&self.position, last) {
            return Err(KeysetError::NotAdvanced {
                from: self.position.clone(),
                last: last.clone(),
            });
        }
        self.position = KeysetStart::After(last.clone());
        if page.rows < self.limit as usize {
            return Ok(Advance::Short);
        }
        self.full_pages_since_shrink += 1;
        if self.limit < self.page_size && self.full_pages_since_shrink >= GROW_BACK_AFTER {
            self.limit = self.limit.saturating_mul(2).min(self.page_size);
            self.full_pages_since_shrink = 0;
            return Ok(Advance::Grew(self.limit));
        }
        Ok(Advance::Full)
    }

    /// Halves the page after a server timeout; `None` when it is already [`MIN_PAGE`] (or the
    /// configured size is smaller) and the timeout must end the scan.
    pub fn shrink(&mut self) -> Option<u32> {
        if self.limit <= MIN_PAGE {
            return None;
        }
        self.limit = (self.limit / 2).max(MIN_PAGE);
        self.full_pages_since_shrink = 0;
        Some(self.limit)
    }
}

/// Whether a page's last row lies after where the page started. Times compare as instants;
/// ids only for equality, because ClickHouse orders UUIDs by their second half first, which is
/// not the order of their text.
fn advanced(start: &KeysetStart, last: &KeysetCursor) -> bool {
    match start {
        KeysetStart::Beginning => true,
        KeysetStart::AtOrAfter(at) => last.time.is_none_or(|t| t >= *at),
        KeysetStart::After(previous) => {
            previous != last
                && match (previous.time, last.time) {
                    (Some(before), Some(now)) => now >= before,
                    _ => true,
                }
        }
    }
}

/// An instant as PostHog's UTC text with six fractional digits, clamped to years 1..=9999.
fn utc(at: Micros) -> String {
    use time::OffsetDateTime;
    const MIN: Micros = -62_135_596_800_000_000; // 0001-01-01T00:00:00Z
    const MAX: Micros = 253_402_300_799_999_999; // 9999-12-31T23:59:59.999999Z
    let at = at.clamp(MIN, MAX);
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID_A: &str = "0190a000-0000-7000-8000-00000000000a";
    const ID_B: &str = "0190a000-0000-7000-8000-00000000000b";

    fn at(time: Micros, id: &str) -> KeysetCursor {
        KeysetCursor {
            time: Some(time),
            id: id.into(),
        }
    }

    fn events() -> KeysetQuery {
        KeysetQuery::new("events", ["uuid", "event", "timestamp"], "uuid").time_column("timestamp")
    }

    fn page(rows: usize, last: Option<KeysetCursor>) -> PageSummary {
        PageSummary { rows, last }
    }

    #[test]
    fn cursor_values_are_bound_never_spliced() {
        let hostile = at(1_700_000_000_123_456, "x') or 1=1 --");
        let q = events()
            .filter(KeysetFilter::new("event in ({event_0})").value("event_0", "$pageview"))
            .page(&KeysetStart::After(hostile.clone()), 500);
        assert_eq!(
            q.text(),
            "select uuid, event, timestamp from events where (timestamp, uuid) > \
             (toDateTime({cursor_time}), toUUID({cursor_id})) and event in ({event_0}) order by \
             timestamp, uuid limit 500"
        );
        assert_eq!(q.values()["cursor_time"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(q.values()["cursor_id"], hostile.id.as_str());
        assert_eq!(q.values()["event_0"], "$pageview");
    }

    #[test]
    fn a_scan_by_id_alone_and_a_text_id() {
        let persons = KeysetQuery::new("persons", ["id"], "id");
        let q = persons.page(
            &KeysetStart::After(KeysetCursor {
                time: None,
                id: "x".into(),
            }),
            9,
        );
        assert_eq!(
            q.text(),
            "select id from persons where id > toUUID({cursor_id}) order by id limit 9"
        );
        let sessions = KeysetQuery::new("sessions", ["session_id"], "session_id")
            .text_id()
            .filter(KeysetFilter::at_or_after("$start_timestamp", "since", 0));
        let q = sessions.page(
            &KeysetStart::After(KeysetCursor {
                time: None,
                id: "s".into(),
            }),
            9,
        );
        assert!(
            q.text()
                .contains("where session_id > {cursor_id} and $start_timestamp >= ")
        );
        assert_eq!(q.values()["since"], "1970-01-01T00:00:00.000000Z");
        let q = sessions.page(&KeysetStart::Beginning, 9);
        assert!(!q.text().contains("cursor"), "{}", q.text());
    }

    #[test]
    fn only_an_empty_page_ends_the_scan() {
        let mut pager = KeysetPager::new(events(), KeysetStart::AtOrAfter(0), 1000);
        for (rows, t) in [(1000, 10), (777, 20), (1, 30)] {
            let advance = pager.advance(&page(rows, Some(at(t, ID_A)))).unwrap();
            assert_ne!(advance, Advance::Done);
            assert!(
                pager.next_query().is_some(),
                "a page of {rows} is not the end"
            );
        }
        assert_eq!(pager.advance(&page(0, None)).unwrap(), Advance::Done);
        assert!(pager.is_done());
        assert!(pager.next_query().is_none());
    }

    #[test]
    fn a_page_must_end_after_where_it_started() {
        let from = KeysetStart::After(at(100, ID_B));
        assert!(advanced(&from, &at(100, ID_A)), "same instant, another id");
        assert!(advanced(&from, &at(101, ID_A)));
        assert!(!advanced(&from, &at(100, ID_B)), "the same position again");
        assert!(!advanced(&from, &at(99, ID_A)), "back in time");
        assert!(advanced(&KeysetStart::AtOrAfter(100), &at(100, ID_A)));
        assert!(!advanced(&KeysetStart::AtOrAfter(100), &at(99, ID_A)));
        assert!(advanced(&KeysetStart::Beginning, &at(i64::MIN, ID_A)));

        let mut pager = KeysetPager::new(events(), KeysetStart::After(at(100, ID_B)), 10);
        let err = pager.advance(&page(10, Some(at(100, ID_B)))).unwrap_err();
        assert!(matches!(err, KeysetError::NotAdvanced { .. }), "{err}");
        assert_eq!(
            pager.position(),
            &KeysetStart::After(at(100, ID_B)),
            "stays put"
        );
        let err = pager.advance(&page(11, Some(at(200, ID_A)))).unwrap_err();
        assert_eq!(
            err,
            KeysetError::TooManyRows {
                rows: 11,
                limit: 10
            }
        );
    }

    #[test]
    fn a_timeout_halves_the_page_and_full_pages_grow_it_back() {
        let mut pager = KeysetPager::new(events(), KeysetStart::Beginning, 100);
        assert_eq!(pager.shrink(), Some(50));
        assert_eq!(pager.shrink(), Some(25));
        assert_eq!(pager.shrink(), Some(12));
        assert_eq!(pager.shrink(), Some(MIN_PAGE));
        assert_eq!(pager.shrink(), None, "the smallest page timed out: give up");
        let mut t = 0;
        let mut full = |pager: &mut KeysetPager| {
            t += 1;
            let rows = pager.limit() as usize;
            pager.advance(&page(rows, Some(at(t, ID_A)))).unwrap()
        };
        for _ in 1..GROW_BACK_AFTER {
            assert_eq!(full(&mut pager), Advance::Full);
        }
        assert_eq!(full(&mut pager), Advance::Grew(20));
        for _ in 0..4 * GROW_BACK_AFTER {
            full(&mut pager);
        }
        assert_eq!(pager.limit(), 100, "never past the configured page");
        assert_eq!(
            pager.next_query().unwrap().text().rsplit(' ').next(),
            Some("100")
        );
    }

    #[test]
    fn a_slice_is_bounded_above_exclusively() {
        let filter = KeysetFilter::before("timestamp", "until", 1_700_000_000_123_456);
        let q = events().filter(filter).page(&KeysetStart::AtOrAfter(0), 10);
        assert_eq!(
            q.text(),
            "select uuid, event, timestamp from events where timestamp >= \
             toDateTime({cursor_time}) and timestamp < toDateTime({until}) order by timestamp, \
             uuid limit 10"
        );
        assert_eq!(q.values()["until"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(q.values()["cursor_time"], "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn the_plan_carries_the_pages_bound_and_filters() {
        let query = events()
            .filter(KeysetFilter::new("event in ({event_0})").value("event_0", "$pageview"))
            .filter(KeysetFilter::before("timestamp", "until", 1_000_000));
        for start in [
            KeysetStart::Beginning,
            KeysetStart::AtOrAfter(-1),
            KeysetStart::After(at(5, "x') or 1=1 --")),
        ] {
            let page = query.page(&start, 100);
            let plan = query.summary(&start, &[0.25, 0.5, 0.75]).unwrap();
            let (where_page, _) = page.text().split_once(" order by ").unwrap();
            let (_, where_page) = where_page.split_once(" from events").unwrap();
            let (_, where_plan) = plan.text().split_once(" from events").unwrap();
            assert_eq!(where_plan, where_page, "{start}");
            assert_eq!(plan.values(), page.values(), "{start}");
            assert!(
                plan.text()
                    .starts_with("select count(), quantiles(0.25, 0.5, 0.75)(timestamp) from"),
                "{}",
                plan.text()
            );
        }
        let plan = query
            .summary(&KeysetStart::After(at(5, ID_A)), &[0.1])
            .unwrap();
        assert_eq!(
            plan.text(),
            "select count(), quantiles(0.1)(timestamp) from events where (timestamp, uuid) > \
             (toDateTime({cursor_time}), toUUID({cursor_id})) and event in ({event_0}) and \
             timestamp < toDateTime({until})"
        );
        assert_eq!(plan.values()["cursor_time"], "1970-01-01T00:00:00.000005Z");
        assert_eq!(plan.values()["cursor_id"], ID_A);
        assert_eq!(plan.values()["until"], "1970-01-01T00:00:01.000000Z");
    }

    #[test]
    fn plan_levels_print_plainly_and_bad_ones_give_no_plan() {
        let text = |levels: &[f64]| {
            events()
                .summary(&KeysetStart::Beginning, levels)
                .map(|q| q.text().to_owned())
        };
        assert_eq!(
            text(&[0.0, -0.0, 1e-7, 1.0]).unwrap(),
            "select count(), quantiles(0, 0, 0.0000001, 1)(timestamp) from events"
        );
        assert_eq!(text(&[]).unwrap(), "select count() from events");
        for bad in [f64::NAN, f64::INFINITY, -1e-9, 1.000_001] {
            assert_eq!(text(&[0.5, bad]), None, "{bad}");
        }
        let persons = KeysetQuery::new("persons", ["id"], "id");
        assert!(persons.summary(&KeysetStart::Beginning, &[0.5]).is_none());
    }

    #[test]
    fn plans_and_pages_carry_the_scans_name_and_fail_fast() {
        let query =
            events()
                .name("nightly events")
                .filter(KeysetFilter::before("timestamp", "until", 0));
        let plan = query.summary(&KeysetStart::Beginning, &[0.5]).unwrap();
        let expected = HogQlQuery::new(plan.text())
            .name("nightly events plan")
            .fail_fast_on_timeout()
            .value("until", utc(0));
        assert_eq!(plan, expected);
        let page = query.page(&KeysetStart::Beginning, 5);
        let expected = HogQlQuery::new(page.text())
            .name("nightly events")
            .fail_fast_on_timeout()
            .value("until", utc(0));
        assert_eq!(page, expected);
        let default = events().summary(&KeysetStart::Beginning, &[]).unwrap();
        let expected = HogQlQuery::new(default.text())
            .name("posthog-rs extract events plan")
            .fail_fast_on_timeout();
        assert_eq!(default, expected);
    }

    fn answer(results: serde_json::Value) -> QueryResult {
        serde_json::from_value(serde_json::json!({ "results": results })).unwrap()
    }

    #[test]
    fn a_summary_reads_counts_and_instants_in_every_form_posthog_sends() {
        use serde_json::json;
        let summary = RangeSummary::from_result(&answer(json!([[
            3000,
            [
                "2025-01-02T13:57:30.178957Z",
                "2025-01-02T19:27:30.178957+05:30",
                "2025-01-02 13:57:30.178957",
                "2025-01-02 13:57:30",
                "2025-01-02T13:57:30Z"
            ]
        ]])))
        .unwrap();
        let t = 1_735_826_250_178_957;
        assert_eq!(summary.rows, 3000);
        assert_eq!(
            summary.quantiles,
            [t, t, t, t - 178_957, t - 178_957],
            "one instant, however written"
        );
        let summary =
            RangeSummary::from_result(&answer(json!([["18446744073709551615", []]]))).unwrap();
        assert_eq!(summary.rows, u64::MAX);
        assert!(summary.quantiles.is_empty());
        let summary = RangeSummary::from_result(&answer(json!([[7]]))).unwrap();
        assert_eq!(
            summary,
            RangeSummary {
                rows: 7,
                quantiles: Vec::new()
            }
        );
        // Over no rows ClickHouse answers the epoch: no instant of the range.
        let summary =
            RangeSummary::from_result(&answer(json!([["0", ["1970-01-01T00:00:00.000000Z"]]])))
                .unwrap();
        assert_eq!(summary.rows, 0);
        assert!(summary.quantiles.is_empty());
    }

    #[test]
    fn a_summary_that_is_not_a_count_and_instants_is_an_error() {
        use serde_json::json;
        let long = "9".repeat(10_000);
        let cases = [
            (json!([]), "0 rows, expected one"),
            (json!([[1, []], [2, []]]), "2 rows, expected one"),
            (json!([[]]), "a row of 0 values"),
            (json!([[1, [], 3]]), "a row of 3 values"),
            (
                json!([[1, "2025-01-02T13:57:30Z"]]),
                "the quantiles are \"2025",
            ),
            (json!([[-1, []]]), "the count is -1"),
            (json!([["-1", []]]), "the count is \"-1\""),
            (json!([[1.5, []]]), "the count is 1.5"),
            (json!([[null, []]]), "the count is null"),
            (json!([[long, []]]), "…, expected a whole number"),
            (
                json!([[2, ["2025-01-02T13:57:30Z", "yesterday"]]]),
                "quantile 1 is \"yesterday\"",
            ),
            (json!([[2, [1_735_826_250]]]), "quantile 0 is 1735826250"),
            (json!([[2, ["2025-13-02 00:00:00"]]]), "quantile 0 is"),
        ];
        for (results, expected) in cases {
            let err = RangeSummary::from_result(&answer(results.clone())).unwrap_err();
            assert!(
                matches!(err, KeysetError::InvalidSummary { .. }),
                "{results}: {err:?}"
            );
            let shown = err.to_string();
            assert!(shown.contains(expected), "{results}: {shown}");
            assert!(shown.len() < 300, "a hostile value is cut short: {shown}");
        }
    }

    #[test]
    fn instants_render_as_utc_with_six_digits_and_clamp() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(utc(1), "1970-01-01T00:00:00.000001Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(utc(i64::MAX), "9999-12-31T23:59:59.999999Z");
        assert_eq!(utc(i64::MIN), "0001-01-01T00:00:00.000000Z");
        assert_eq!(
            KeysetStart::After(at(0, ID_A)).to_string(),
            format!("after (1970-01-01T00:00:00.000000Z, {ID_A})")
        );
    }
}
