//! A HogQL query response body, parsed without copying its rows.

use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::value::{JsonText, Scalar};
use crate::{CoreError, UnixMicros, parse_timestamp};

/// One page of a HogQL query response: the rows stay slices of the body.
///
/// ```
/// let body = br#"{"columns":["uuid","n"],"results":[["0194274e-99c2-7d74-b879-70edbe884e6a",1]],"hasMore":false}"#;
/// let page = posthog_core::QueryPage::parse(body).unwrap();
/// assert_eq!(page.columns, ["uuid", "n"]);
/// assert_eq!(page.results[0][1].get(), "1");
/// ```
#[derive(Debug, Deserialize)]
pub struct QueryPage<'a> {
    /// Column names, in row order.
    #[serde(default)]
    pub columns: Vec<String>,
    /// The rows: one JSON value per column, as source text.
    #[serde(borrow)]
    pub results: Vec<Vec<&'a RawValue>>,
    /// Set by PostHog only for queries without their own `LIMIT`.
    #[serde(default, rename = "hasMore")]
    pub has_more: Option<bool>,
}

impl<'a> QueryPage<'a> {
    /// Parses a response body. A body that is not JSON, has no `results` array of arrays, or has
    /// a row whose length differs from `columns`, is a data error naming what is wrong.
    pub fn parse(body: &'a [u8]) -> Result<Self, CoreError> {
        let page: QueryPage<'a> =
            serde_json::from_slice(body).map_err(|source| CoreError::Json {
                what: "the query response is not a valid result page".to_owned(),
                source,
            })?;
        if !page.columns.is_empty()
            && let Some((n, row)) = page
                .results
                .iter()
                .enumerate()
                .find(|(_, r)| r.len() != page.columns.len())
        {
            return Err(CoreError::Data(format!(
                "result row {n} has {} values but the response names {} columns",
                row.len(),
                page.columns.len()
            )));
        }
        Ok(page)
    }

    /// The index of a column by name.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
}

/// Reads a JSON string value as a UUID.
pub fn raw_uuid(raw: &(impl JsonText + ?Sized)) -> Option<Uuid> {
    match Scalar::classify(raw.json_text()) {
        Scalar::Str(s) => Uuid::parse_str(&s).ok(),
        _ => None,
    }
}

/// Reads a JSON string value as an RFC 3339 timestamp.
pub fn raw_timestamp(raw: &(impl JsonText + ?Sized)) -> Option<UnixMicros> {
    match Scalar::classify(raw.json_text()) {
        Scalar::Str(s) => parse_timestamp(&s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_the_wrong_width_are_a_data_error() {
        let body = br#"{"columns":["a","b"],"results":[[1,2],[3]]}"#;
        let err = QueryPage::parse(body).unwrap_err().to_string();
        assert!(err.contains("row 1 has 1 values"), "{err}");
    }

    #[test]
    fn malformed_and_truncated_bodies_are_data_errors() {
        for body in [
            &b"{"[..],
            b"<html>",
            br#"{"results":{}}"#,
            br#"{"results":[1]}"#,
        ] {
            assert!(matches!(
                QueryPage::parse(body),
                Err(CoreError::Data(_) | CoreError::Json { .. })
            ));
        }
    }

    #[test]
    fn cursor_values_are_read_from_raw_values() {
        let body = br#"{"columns":["uuid","ts"],"results":[["0194274e-99c2-7d74-b879-70edbe884e6a","2025-01-02T19:27:30.178957+05:30"]]}"#;
        let page = QueryPage::parse(body).unwrap();
        let row = &page.results[0];
        assert_eq!(
            raw_uuid(row[0]).map(|u| u.to_string()).as_deref(),
            Some("0194274e-99c2-7d74-b879-70edbe884e6a")
        );
        assert_eq!(raw_timestamp(row[1]), Some(1_735_826_250_178_957));
        assert_eq!(raw_uuid(row[1]), None);
    }
}
