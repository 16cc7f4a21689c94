//! The extractor's parsers of what PostHog sends, as outside input: [`QueryPage::parse`] (the
//! HogQL page on the hot path), the cursor readers `raw_uuid` / `raw_timestamp` /
//! `parse_timestamp`, the batch builder fed rows and REST objects, and
//! [`DedupWindow::from_bytes`] (read back from the state file), and the streaming
//! [`PageScanner`] checked against the whole-body parser. Whatever they get: a value or a
//! data error ([`CoreError::Data`], [`CoreError::Json`] keeping the parser's error as its source,
//! [`DedupError`]) with a message, never a panic; a valid page reads back exactly.

use posthog_core::{
    BatchBuilder, ColumnType, CoreError, DedupWindow, FieldSpec, FlattenMode, PageScanner,
    QueryPage, Row, format_timestamp, parse_timestamp, raw_timestamp, raw_uuid, row_values,
};
use posthog_error::{Category, ErrorChain};
use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::time::Duration;

fn event_fields() -> Vec<FieldSpec> {
    vec![
        FieldSpec::fixed("uuid", ColumnType::Utf8),
        FieldSpec::fixed("event", ColumnType::Utf8),
        FieldSpec::fixed("timestamp", ColumnType::Timestamp),
        FieldSpec::fixed("distinct_id", ColumnType::Utf8),
        FieldSpec::flatten("properties"),
    ]
}

/// A page as PostHog sends it for the extractor's events query.
fn real_body() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "columns": ["uuid", "event", "timestamp", "distinct_id", "properties"],
        "types": [["uuid", "UUID"], ["event", "String"], ["timestamp", "DateTime64(6, 'UTC')"],
                  ["distinct_id", "String"], ["properties", "String"]],
        "results": [
            ["0194274e-99c2-7d74-b879-70edbe884e6a", "$pageview", "2025-01-02T13:57:30.178957Z",
             "user-1", "{\"$browser\": \"Firefox\", \"n\": 3, \"x\": [1, 2.5, null]}"],
            ["0194274e-99c2-7d74-b879-70edbe884e6b", "$autocapture", "2025-01-02T13:57:31Z",
             "user-\u{e9}", "{}"]
        ],
        "hasMore": false,
        "timezone": "UTC"
    }))
    .unwrap()
}

fn data_message(result: Result<QueryPage<'_>, CoreError>) -> String {
    match result {
        Err(err @ (CoreError::Data(_) | CoreError::Json { .. })) => {
            assert_eq!(err.category(), Category::Data);
            let msg = ErrorChain::new(&err).to_string();
            assert!(
                msg.contains("the query response is not a valid result page: ")
                    || msg.contains("values but the response names"),
                "{msg}"
            );
            msg
        }
        Err(other) => panic!("expected a data error, got {other:?}"),
        Ok(page) => panic!("expected an error, got {page:?}"),
    }
}

/// Reads `body` with the streaming [`PageScanner`] in chunks of 1, 3, 7, 64 bytes and whole,
/// each row split by [`row_values`]: never a panic; an error is a data error; and whenever
/// the whole-body parser reads a page, the scanner reads the same rows, cell for cell, and the
/// same columns. (The scanner checks members other than `results` and `columns` for balanced
/// brackets and closed strings only, so it may take a body the whole parser refuses.)
fn streaming_agrees(body: &[u8]) {
    let whole = QueryPage::parse(body).ok();
    for size in [1, 3, 7, 64, usize::MAX] {
        let mut scanner = PageScanner::default();
        let mut rows: Vec<Vec<String>> = Vec::new();
        let mut fed = Ok(());
        for chunk in body.chunks(size.min(body.len().max(1))) {
            fed = scanner.feed(chunk, &mut |row: Row| {
                let values = row.values()?;
                // The row on its own splits the same way.
                let alone = row_values(row.text()).expect("a row the scanner split");
                assert_eq!(values, alone);
                rows.push(values.iter().map(|v| v.get().to_owned()).collect());
                Ok::<(), CoreError>(())
            });
            if fed.is_err() {
                break;
            }
        }
        let scanned = fed.and_then(|()| scanner.finish());
        if let Err(err) = &scanned {
            assert_eq!(err.category(), Category::Data, "{err}");
        }
        if let Some(page) = &whole {
            let scanned = scanned.unwrap_or_else(|e| panic!("chunks of {size}: {e}"));
            let oracle: Vec<Vec<String>> = page
                .results
                .iter()
                .map(|r| r.iter().map(|v| v.get().to_owned()).collect())
                .collect();
            assert_eq!(rows, oracle, "chunks of {size}");
            assert_eq!(scanned.rows, oracle.len());
            let columns = scanned.columns.unwrap_or_default();
            assert_eq!(columns, page.columns, "chunks of {size}");
        }
    }
}

/// Parses `body`; when it is a page, reads every value's cursor forms and feeds the rows to a
/// batch builder, which must give a batch or a data error.
fn exercise(body: &[u8]) {
    streaming_agrees(body);
    let page = match QueryPage::parse(body) {
        Ok(page) => page,
        Err(err) => {
            data_message(Err(err));
            return;
        }
    };
    for row in &page.results {
        for value in row {
            let _ = raw_uuid(value);
            let _ = raw_timestamp(value);
        }
    }
    let mut builder = BatchBuilder::new(&event_fields(), FlattenMode::Flatten, &[]).unwrap();
    for row in &page.results {
        if let Err(err) = builder.append_array_row(row) {
            assert!(!err.to_string().is_empty());
        }
    }
    builder
        .finish_batch()
        .expect("appended rows always assemble");
}

/// Any JSON value, with the corners: huge, tiny and negative numbers, big integers, strings that
/// hold JSON (as `properties` does), control characters, nesting.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        Just(json!("{\"$browser\": \"Safari\", \"n\": 1e999")),
        Just(json!("{\"a\": {\"b\": [1, {\"c\": null}]}}")),
        Just(json!("0194274e-99c2-7d74-b879-70edbe884e6a")),
        Just(json!("2025-01-02T19:27:30.178957+05:30")),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z$]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON number literals serde_json's `Value` cannot hold but a raw page keeps as text.
fn number_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1e400".to_owned()),
        Just("-1e400".to_owned()),
        Just("1e-400".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("-9223372036854775809".to_owned()),
        "-?[1-9][0-9]{0,60}(\\.[0-9]{1,30})?([eE][+-]?[0-9]{1,4})?",
    ]
}

/// The values of a row as serde_json splits it (the oracle of the scanner's own split).
fn serde_split(row: &str) -> Option<Vec<String>> {
    let values: Vec<&RawValue> = serde_json::from_str(row).ok()?;
    Some(values.iter().map(|v| v.get().to_owned()).collect())
}

/// Text that is often a JSON array and often nearly one: JSON's tokens and their broken forms
/// (bad escapes, raw control characters, cut numbers and literals, stray brackets).
fn row_text() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        " ",
        "\n",
        "\"a\"",
        "\"\\\"\"",
        "\"\\u00e9\"",
        "\"\\ud83d\\ude80\"",
        "\"\\u12\"",
        "\"\\x\"",
        "\"{\\\"k\\\": 1}\"",
        "\"",
        "\\",
        "0",
        "-1",
        "12.5",
        "1e5",
        "-0.0E-7",
        "01",
        "1.",
        ".5",
        "1e",
        "-",
        "+1",
        "true",
        "false",
        "null",
        "tru",
        "nul",
        "truex",
        "\"é\"",
        "\"a]\"",
        "\"a,\"",
        "\"a\tb\"",
        "\"\u{1}\"",
        "\"x\u{1f}\"",
        "\t",
        "\r",
        "\u{0}",
        "[{\"k\": [1, \"v\"]}]",
        "{\"k\" 1}",
        "{\"k\":}",
        "[1,]",
    ]);
    prop::collection::vec(token, 0..12).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// The scanner's own row split (one pass, no parser) takes exactly the rows serde_json
    /// takes, with the same value texts, and refuses the rest as data errors.
    #[test]
    fn row_split_agrees_with_serde_json(inner in row_text(), wrap in any::<bool>()) {
        let row = if wrap { format!("[{inner}]") } else { inner };
        let ours = row_values(row.as_bytes());
        match serde_split(&row) {
            Some(oracle) => {
                let ours = ours.unwrap_or_else(|e| panic!("{row:?}: {e}"));
                let texts: Vec<&str> = ours.iter().map(|v| v.get()).collect();
                prop_assert_eq!(texts, oracle, "{:?}", row);
            }
            None => {
                let err = ours.err().unwrap_or_else(|| panic!("{row:?} is not a JSON array"));
                prop_assert_eq!(err.category(), Category::Data);
            }
        }
    }

    /// Every JSON array of any values splits into its values' texts, in a page or alone.
    #[test]
    fn any_json_row_splits_into_its_values(values in prop::collection::vec(json_value(), 0..6), pretty in any::<bool>()) {
        let row = Value::from(values);
        let text = if pretty { serde_json::to_string_pretty(&row) } else { serde_json::to_string(&row) }.unwrap();
        let ours = row_values(text.as_bytes()).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        let texts: Vec<&str> = ours.iter().map(|v| v.get()).collect();
        prop_assert_eq!(texts, serde_split(&text).unwrap());
    }

    #[test]
    fn arbitrary_bytes_are_a_page_or_a_data_error(body in any::<Vec<u8>>()) {
        exercise(&body);
    }

    /// Bytes of a real page flipped, dropped or inserted (invalid UTF-8 included).
    #[test]
    fn mutated_pages_are_a_page_or_a_data_error(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..6),
    ) {
        let mut body = real_body();
        for (at, kind, byte) in edits {
            let i = at.index(body.len());
            match kind {
                0 => body[i] = byte,
                1 => { body.remove(i); }
                _ => body.insert(i, byte),
            }
        }
        exercise(&body);
    }

    /// One top-level field replaced by any JSON value.
    #[test]
    fn a_wrong_value_in_a_field_is_a_page_or_a_data_error(
        field in prop::sample::select(vec!["columns", "results", "hasMore", "types"]),
        value in json_value(),
    ) {
        let mut body: Value = serde_json::from_slice(&real_body()).unwrap();
        body[field] = value;
        exercise(&serde_json::to_vec(&body).unwrap());
    }

    /// Any value in any cell, numbers serde_json could not hold included: the page reads, each
    /// cell is its source text, and the builder takes the row or says why not.
    #[test]
    fn any_cell_value_reads_back_as_its_text(
        row in 0usize..2,
        col in 0usize..5,
        cell in prop_oneof![json_value().prop_map(|v| v.to_string()), number_literal()],
    ) {
        let mut body: Value = serde_json::from_slice(&real_body()).unwrap();
        body["results"][row][col] = json!("__CELL__");
        let text = serde_json::to_string(&body).unwrap().replace("\"__CELL__\"", &cell);
        let page = QueryPage::parse(text.as_bytes()).expect("any JSON value fits a cell");
        prop_assert_eq!(page.results[row][col].get(), cell.as_str());
        exercise(text.as_bytes());
    }

    /// A valid page reads back: the same columns, each cell the exact text written.
    #[test]
    fn valid_pages_round_trip(
        columns in prop::collection::vec("[a-z_$]{1,8}", 1..5),
        rows in prop::collection::vec(prop::collection::vec(json_value(), 5), 0..4),
        has_more in prop::option::of(any::<bool>()),
    ) {
        let width = columns.len();
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| r[..width].iter().map(Value::to_string).collect())
            .collect();
        let results: Vec<String> = cells.iter().map(|r| format!("[{}]", r.join(","))).collect();
        let body = format!(
            r#"{{"columns":{},"results":[{}],"hasMore":{}}}"#,
            serde_json::to_string(&columns).unwrap(),
            results.join(","),
            serde_json::to_string(&has_more).unwrap(),
        );
        let page = QueryPage::parse(body.as_bytes()).expect("valid page");
        prop_assert_eq!(&page.columns, &columns);
        prop_assert_eq!(page.has_more, has_more);
        let read: Vec<Vec<&str>> =
            page.results.iter().map(|r| r.iter().map(|v| v.get()).collect()).collect();
        prop_assert_eq!(read, cells.iter().map(|r| r.iter().map(String::as_str).collect::<Vec<_>>()).collect::<Vec<_>>());
    }

    /// A row of another width than `columns` is refused, naming the row.
    #[test]
    fn rows_of_the_wrong_width_are_refused_naming_the_row(extra in 1usize..4, at in 0usize..2) {
        let mut body: Value = serde_json::from_slice(&real_body()).unwrap();
        let row = body["results"][at].as_array_mut().unwrap();
        for _ in 0..extra {
            row.push(Value::Null);
        }
        let bytes = serde_json::to_vec(&body).unwrap();
        let msg = data_message(QueryPage::parse(&bytes));
        prop_assert!(msg.contains(&format!("result row {at} has {} values", 5 + extra)), "{}", msg);
    }

    /// Cursor readers take any text; timestamps round-trip through their formatter.
    #[test]
    fn cursor_readers_never_panic(text in any::<String>(), micros in -62_135_596_800_000_000i64..253_402_300_799_999_999) {
        let _ = parse_timestamp(&text);
        let quoted = serde_json::to_string(&text).unwrap();
        let raw: Box<RawValue> = RawValue::from_string(quoted).unwrap();
        let _ = raw_uuid(&raw);
        let _ = raw_timestamp(&raw);
        let mut formatted = String::new();
        format_timestamp(micros, &mut formatted);
        prop_assert_eq!(parse_timestamp(&formatted), Some(micros), "{}", formatted);
    }

    /// REST objects (cohorts, flags, ...) fed to the builder as object rows. (Rows that give
    /// no column at all, `{}`, make `finish_batch` fail with Arrow's "must either specify a row
    /// count or at least one column": an error, not a panic, but not a clear one.)
    #[test]
    fn arbitrary_object_rows_never_panic(value in json_value()) {
        let raw = RawValue::from_string(value.to_string()).unwrap();
        let mut builder =
            BatchBuilder::new(&[FieldSpec::dynamic("id")], FlattenMode::Flatten, &[]).unwrap();
        if let Err(err) = builder.append_object_row(&raw) {
            prop_assert!(!err.to_string().is_empty());
        }
        if let Err(err) = builder.finish_batch() {
            prop_assert_eq!(err.category(), Category::Data, "{:?}", err);
        }
    }

    /// The dedup window as read back from a state file: any bytes give a window or an error.
    #[test]
    fn dedup_windows_from_any_bytes(bytes in any::<Vec<u8>>(), entries in prop::collection::vec((any::<u128>(), any::<i64>()), 0..20)) {
        if let Err(err) = DedupWindow::from_bytes(Duration::from_secs(900), &bytes) {
            prop_assert!(!err.to_string().is_empty());
        }
        let mut window = DedupWindow::new(Duration::from_secs(900));
        for (id, at) in &entries {
            window.observe(uuid::Uuid::from_u128(*id), *at);
        }
        let encoded = window.to_bytes();
        let back = DedupWindow::from_bytes(Duration::from_secs(900), &encoded).expect("own bytes");
        let mut a: Vec<_> = window.iter().collect();
        let mut b: Vec<_> = back.iter().collect();
        a.sort();
        b.sort();
        prop_assert_eq!(a, b);
        for cut in 0..encoded.len() {
            let _ = DedupWindow::from_bytes(Duration::from_secs(900), &encoded[..cut]);
        }
    }
}

/// Every prefix of a real page (a connection cut, a proxy's size limit) is a data error.
#[test]
fn every_truncation_of_a_real_page_is_a_data_error() {
    let body = real_body();
    assert!(QueryPage::parse(&body).is_ok());
    for cut in 0..body.len() {
        let mut scanner = PageScanner::default();
        let fed = scanner.feed(&body[..cut], &mut |row: Row| row.values().map(|_| ()));
        let err = fed.and_then(|()| scanner.finish().map(|_| ())).unwrap_err();
        assert_eq!(err.category(), Category::Data, "cut at {cut}: {err}");
        let msg = data_message(QueryPage::parse(&body[..cut]));
        assert!(
            msg.contains("EOF while parsing") || msg.contains("expected value"),
            "cut at {cut}: {msg}"
        );
    }
}

#[test]
fn deep_nesting_is_kept_as_text_without_overflowing_the_stack() {
    // Values are skipped over, not built, so nesting has no limit; the builder keeps it as
    // JSON text.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let body = format!(
        r#"{{"columns":["uuid","event","timestamp","distinct_id","properties"],"results":[["0194274e-99c2-7d74-b879-70edbe884e6a",{deep},"2025-01-02T13:57:30Z","d","{{}}"]]}}"#
    );
    let page = QueryPage::parse(body.as_bytes()).unwrap();
    assert_eq!(page.results[0][1].get().len(), deep.len());
    exercise(body.as_bytes());
    // The same inside the properties string, the second level of parsing.
    let properties = serde_json::to_string(&format!(
        r#"{{"deep": {deep}, "objects": {}{}}}"#,
        r#"{"a":"#.repeat(50_000),
        "}".repeat(50_000)
    ))
    .unwrap();
    let body = format!(
        r#"{{"columns":["uuid","event","timestamp","distinct_id","properties"],"results":[["0194274e-99c2-7d74-b879-70edbe884e6a","e","2025-01-02T13:57:30Z","d",{properties}]]}}"#
    );
    exercise(body.as_bytes());
    // Nesting where the page expects names is refused.
    let body = format!(r#"{{"columns":[{deep}],"results":[]}}"#);
    let msg = data_message(QueryPage::parse(body.as_bytes()));
    assert!(
        msg.contains("invalid type: sequence, expected a string"),
        "{msg}"
    );
}

#[test]
fn non_pages_are_data_errors_saying_so() {
    for (body, expected) in [
        (&b""[..], "EOF while parsing a value"),
        (
            b"<html><body>502 Bad Gateway</body></html>",
            "expected value at line 1 column 1",
        ),
        (
            b"{\"columns\":[\"\xff\"],\"results\":[]}",
            "invalid unicode",
        ),
        (br#"{"columns":["a"]}"#, "missing field `results`"),
        (
            br#"{"columns":["a"],"results":[[1]]}garbage"#,
            "trailing characters",
        ),
        (
            br#"{"columns":[1],"results":[]}"#,
            "invalid type: integer `1`, expected a string",
        ),
        (
            br#"{"columns":["a"],"results":[1]}"#,
            "invalid type: integer `1`, expected a sequence",
        ),
        (
            br#"{"columns":["a"],"results":[],"hasMore":"no"}"#,
            "invalid type: string",
        ),
    ] {
        let msg = data_message(QueryPage::parse(body));
        assert!(msg.contains(expected), "{expected}: {msg}");
    }
}
