//! Query results on stdout as JSON, JSONL, CSV or an aligned table, written row by row.

use std::io::{self, Write};

use posthog_client::QueryResult;
use serde_json::Value;

use crate::cli::RowFormat;

/// Longest cell of `--format table`, in characters.
const TABLE_CELL_CHARS: usize = 60;

/// Writes `result` to `out` in `format`. Rows are serialized one at a time; nothing builds
/// the whole output in memory.
pub fn write(out: &mut impl Write, result: &QueryResult, format: RowFormat) -> io::Result<()> {
    match format {
        RowFormat::Json => write_json(out, result),
        RowFormat::Jsonl => {
            for row in &result.results {
                serde_json::to_writer(&mut *out, &result.row_object(row))?;
                out.write_all(b"\n")?;
            }
            Ok(())
        }
        RowFormat::Csv => {
            let header: Vec<String> = result.columns.clone();
            write_csv_line(out, header.iter().map(String::as_str))?;
            for row in &result.results {
                let cells: Vec<String> = row.iter().map(cell_text).collect();
                write_csv_line(out, cells.iter().map(String::as_str))?;
            }
            Ok(())
        }
        RowFormat::Table => write_table(out, result),
    }
}

/// `{"columns","types","rows":[{…}],"row_count","has_more","client_query_id"}`; rows are
/// objects keyed by column name, which agents read more reliably than positional arrays.
fn write_json(out: &mut impl Write, result: &QueryResult) -> io::Result<()> {
    out.write_all(b"{\"columns\":")?;
    serde_json::to_writer(&mut *out, &result.columns)?;
    out.write_all(b",\"types\":")?;
    serde_json::to_writer(&mut *out, &result.types)?;
    out.write_all(b",\"rows\":[")?;
    for (i, row) in result.results.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, &result.row_object(row))?;
    }
    out.write_all(b"],\"row_count\":")?;
    serde_json::to_writer(&mut *out, &result.results.len())?;
    out.write_all(b",\"has_more\":")?;
    serde_json::to_writer(&mut *out, &result.has_more)?;
    out.write_all(b",\"client_query_id\":")?;
    serde_json::to_writer(&mut *out, &result.client_query_id)?;
    out.write_all(b"}\n")
}

/// A value as CSV/table text: strings as they are, null empty, everything else as JSON.
fn cell_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn write_csv_line<'a>(
    out: &mut impl Write,
    cells: impl Iterator<Item = &'a str>,
) -> io::Result<()> {
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        if cell.contains([',', '"', '\n', '\r']) {
            out.write_all(b"\"")?;
            out.write_all(cell.replace('"', "\"\"").as_bytes())?;
            out.write_all(b"\"")?;
        } else {
            out.write_all(cell.as_bytes())?;
        }
    }
    out.write_all(b"\n")
}

/// Aligned columns. Widths need every row, so the table is the one format that looks at all
/// rows before writing (PostHog caps a result at 50 000 rows).
fn write_table(out: &mut impl Write, result: &QueryResult) -> io::Result<()> {
    let shorten = |text: String| -> String {
        let flat: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        match flat.char_indices().nth(TABLE_CELL_CHARS) {
            Some((at, _)) => format!("{}…", &flat[..at]),
            None => flat,
        }
    };
    let header: Vec<String> = result.columns.iter().cloned().map(shorten).collect();
    let rows: Vec<Vec<String>> = result
        .results
        .iter()
        .map(|row| row.iter().map(|v| shorten(cell_text(v))).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |out: &mut dyn Write, cells: &[String]| -> io::Result<()> {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(cell.chars().count());
            if i + 1 < cells.len() {
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        writeln!(out, "{text}")
    };
    line(out, &header)?;
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(out, &rule)?;
    for row in &rows {
        line(out, row)?;
    }
    let shown = crate::output::count(rows.len() as u64, "row", "rows");
    writeln!(out, "({shown})")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn result() -> QueryResult {
        serde_json::from_value(json!({
            "columns": ["event", "n", "n"],
            "types": [["event", "String"], ["n", "UInt64"], ["n", "UInt64"]],
            "results": [["a,\"b\"", 1, 2], [null, 3, {"x": [1]}]],
            "hasMore": false,
        }))
        .unwrap()
    }

    fn render(format: RowFormat) -> String {
        let mut out = Vec::new();
        write(&mut out, &result(), format).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_rows_are_objects_and_duplicate_columns_keep_both_values() {
        let v: Value = serde_json::from_str(&render(RowFormat::Json)).unwrap();
        assert_eq!(v["rows"][0], json!({"event": "a,\"b\"", "n": 1, "n_2": 2}));
        assert_eq!(v["row_count"], 2);
        assert_eq!(v["has_more"], false);
        assert_eq!(v["columns"], json!(["event", "n", "n"]));
    }

    #[test]
    fn jsonl_writes_one_object_per_row() {
        let text = render(RowFormat::Jsonl);
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1], json!({"event": null, "n": 3, "n_2": {"x": [1]}}));
    }

    #[test]
    fn csv_quotes_what_needs_quoting_and_writes_json_for_structures() {
        assert_eq!(
            render(RowFormat::Csv),
            "event,n,n\n\"a,\"\"b\"\"\",1,2\n,3,\"{\"\"x\"\":[1]}\"\n"
        );
    }

    #[test]
    fn table_aligns_columns() {
        let text = render(RowFormat::Table);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "event  n  n");
        assert_eq!(lines[1], "-----  -  ---------");
        assert_eq!(lines[2], "a,\"b\"  1  2");
        assert_eq!(lines[3], "       3  {\"x\":[1]}");
        assert_eq!(lines.last(), Some(&"(2 rows)"));
    }
}
