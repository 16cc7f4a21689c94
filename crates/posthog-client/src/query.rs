//! HogQL queries through `POST /api/projects/{id}/query/`.
//!
//! Every query is sent with `modifiers.convertToProjectTimezone = false`, so DateTime values come
//! back in UTC (`…Z`) rather than in the project's time zone, and with a fresh
//! `client_query_id` that is logged, so a slow query can be found in PostHog's query log or
//! cancelled. Values are bound through HogQL `values` placeholders (`{name}` in the query), never
//! spliced into the query text.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::client::Client;
use crate::error::Error;
use crate::ratelimit::EndpointClass;
use crate::transport::{Answer, BodySink, Request, Response, consumer_stopped};

/// A HogQL query with its bound values.
///
/// ```
/// use posthog_client::HogQlQuery;
/// let q = HogQlQuery::new("select uuid from events where event = {name} limit 10")
///     .value("name", "$pageview")
///     .name("pageviews sample");
/// assert_eq!(q.values()["name"], "$pageview");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct HogQlQuery {
    query: String,
    values: Map<String, Value>,
    name: Option<String>,
    retry_timeouts: bool,
    asynchronous: bool,
}

impl HogQlQuery {
    /// A query without bound values.
    pub fn new(query: impl Into<String>) -> Self {
        HogQlQuery {
            query: query.into(),
            values: Map::new(),
            name: None,
            retry_timeouts: true,
            asynchronous: false,
        }
    }

    /// Binds `{key}` in the query to a constant. Strings stay strings: a value can never change
    /// the query's structure.
    pub fn value(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.values.insert(key.into(), value.into());
        self
    }

    /// A name for PostHog's query log (up to 128 characters are kept).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        let name: String = name.into();
        self.name = Some(name.chars().take(128).collect());
        self
    }

    /// Returns timeouts (HTTP 504, PostHog's execution cap, a request timeout) at once instead
    /// of retrying the same query, for callers that react by asking for less: the extractor
    /// halves its page and asks again. Other transient failures are still retried.
    pub fn fail_fast_on_timeout(mut self) -> Self {
        self.retry_timeouts = false;
        self
    }

    /// Runs the query asynchronously: PostHog queues it and answers at once (HTTP 202), and the
    /// client polls `GET …/query/{id}/` until it completes, so a query longer than one HTTP
    /// request's timeout still finishes. The wait is bounded by
    /// [`ClientBuilder::async_query_timeout`](crate::ClientBuilder::async_query_timeout); when it
    /// runs out the query is cancelled on the server and a [`Error::Timeout`] returned.
    pub fn asynchronous(mut self) -> Self {
        self.asynchronous = true;
        self
    }

    /// The HogQL text.
    pub fn text(&self) -> &str {
        &self.query
    }

    /// The bound values.
    pub fn values(&self) -> &Map<String, Value> {
        &self.values
    }
}

#[derive(Serialize)]
struct QueryRequestBody<'a> {
    query: HogQlBody<'a>,
    client_query_id: &'a str,
    name: &'a str,
    refresh: &'static str,
}

#[derive(Serialize)]
struct HogQlBody<'a> {
    kind: &'static str,
    query: &'a str,
    #[serde(skip_serializing_if = "Map::is_empty")]
    values: &'a Map<String, Value>,
    modifiers: Modifiers,
}

#[derive(Serialize)]
struct Modifiers {
    #[serde(rename = "convertToProjectTimezone")]
    convert_to_project_timezone: bool,
}

/// The result of a HogQL query.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QueryResult {
    /// Column names (or aliases), in row order.
    #[serde(default)]
    pub columns: Vec<String>,
    /// `(name, ClickHouse type)` pairs, e.g. `("timestamp", "DateTime64(6, 'UTC')")`.
    #[serde(default, deserialize_with = "deserialize_types")]
    pub types: Vec<(String, String)>,
    /// Rows as arrays, in `columns` order.
    pub results: Vec<Vec<Value>>,
    /// Set only when the query had no LIMIT: PostHog then returned its default page.
    #[serde(default, rename = "hasMore")]
    pub has_more: Option<bool>,
    /// The LIMIT PostHog applied when the query had none.
    #[serde(default)]
    pub limit: Option<u64>,
    /// The project's time zone as PostHog reports it, when it does.
    #[serde(default)]
    pub timezone: Option<String>,
    /// The id this query was sent with (for PostHog's query log and cancellation).
    #[serde(skip)]
    pub client_query_id: String,
}

fn deserialize_types<'de, D>(de: D) -> Result<Vec<(String, String)>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    // PostHog sends `[name, type]` pairs; tolerate `null`.
    Ok(Option::<Vec<(String, String)>>::deserialize(de)?.unwrap_or_default())
}

impl QueryResult {
    /// Each row as `T`, deserialized from an object of column name → value.
    ///
    /// ```
    /// # use posthog_client::QueryResult;
    /// #[derive(serde::Deserialize)]
    /// struct Row { event: String, n: u64 }
    /// let result: QueryResult = serde_json::from_str(
    ///     r#"{"columns":["event","n"],"results":[["$pageview",3]]}"#).unwrap();
    /// let rows: Vec<Row> = result.rows().collect::<Result<_, _>>().unwrap();
    /// assert_eq!((rows[0].event.as_str(), rows[0].n), ("$pageview", 3));
    /// ```
    pub fn rows<T: DeserializeOwned>(&self) -> impl Iterator<Item = Result<T, Error>> + '_ {
        self.results.iter().enumerate().map(|(i, row)| {
            if row.len() != self.columns.len() {
                return Err(Error::Decode {
                    endpoint: "query".into(),
                    message: format!(
                        "row {i} has {} values for {} columns",
                        row.len(),
                        self.columns.len()
                    ),
                });
            }
            serde_json::from_value(Value::Object(self.row_object(row))).map_err(|e| Error::Decode {
                endpoint: "query".into(),
                message: format!("row {i}: {e}"),
            })
        })
    }

    /// One row as an object of column name → value. A name that occurs twice (`select n, n`)
    /// keeps every value: the later ones become `n_2`, `n_3`, …; a value beyond the named
    /// columns is `column_<index>`.
    ///
    /// ```
    /// # use posthog_client::QueryResult;
    /// let result: QueryResult = serde_json::from_str(
    ///     r#"{"columns":["n","n"],"results":[[1,2]]}"#).unwrap();
    /// let row = result.row_object(&result.results[0]);
    /// assert_eq!((row["n"].as_i64(), row["n_2"].as_i64()), (Some(1), Some(2)));
    /// ```
    pub fn row_object(&self, row: &[Value]) -> Map<String, Value> {
        let mut map = Map::new();
        // The next suffix to try per base name. A name once taken stays taken, so resuming
        // where the last search for a base stopped gives the same names as starting at 2, in
        // linear time: columns named alike by the thousand cannot make a row quadratic.
        let mut next_suffix: std::collections::HashMap<String, u64> =
            std::collections::HashMap::new();
        for (i, value) in row.iter().enumerate() {
            let base = self
                .columns
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("column_{i}"));
            let mut name = base.clone();
            if map.contains_key(&name) {
                let n = next_suffix.entry(base.clone()).or_insert(2);
                loop {
                    name = format!("{base}_{n}");
                    *n += 1;
                    if !map.contains_key(&name) {
                        break;
                    }
                }
            }
            map.insert(name, value.clone());
        }
        map
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.results.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }
}

/// The undecoded body of a query response, for callers that parse rows themselves (the
/// extractor borrows strings straight out of it instead of building `Value`s).
#[derive(Debug, Clone)]
pub struct RawQueryResponse {
    /// The JSON body as PostHog sent it.
    pub body: Bytes,
    /// The id this query was sent with.
    pub client_query_id: String,
}

/// What [`Client::query_streamed`] answers once the sink has the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamedQuery {
    /// The id this query was sent with (for PostHog's query log and cancellation).
    pub client_query_id: String,
    /// The HTTP status of the answer whose body the sink received: 200, or 202 when PostHog
    /// queued the query itself and the client polled it to completion.
    pub status: u16,
    /// The body's length: the bytes the sink received since its last
    /// [`restart`](BodySink::restart).
    pub body_bytes: u64,
}

impl Client {
    /// Runs a HogQL query and returns its rows.
    pub async fn query(&self, query: &HogQlQuery) -> Result<QueryResult, Error> {
        let raw = self.query_raw(query).await?;
        let mut result = parse_result(&raw.body)?;
        result.client_query_id = raw.client_query_id;
        Ok(result)
    }

    /// Runs a HogQL query and returns the response body undecoded.
    pub async fn query_raw(&self, query: &HogQlQuery) -> Result<RawQueryResponse, Error> {
        let (request, client_query_id, span) = self.query_request(query)?;
        let response = tracing::Instrument::instrument(self.execute(request), span).await?;
        // PostHog answers 202 when it queued the query (asked for, or decided by the server).
        let body = if response.status == 202 {
            self.await_query(&response, query.retry_timeouts).await?
        } else {
            response.body
        };
        Ok(RawQueryResponse {
            body,
            client_query_id,
        })
    }

    /// Runs a blocking HogQL query like [`query_raw`](Client::query_raw), but hands the body
    /// of the 2xx answer to `sink` chunk by chunk, as it arrives, instead of returning it: the
    /// body is never held whole here.
    ///
    /// The request takes the one send path of every other (circuit breaker, the query budgets
    /// and concurrency cap, retries decided by [`RetryPolicy::decide`](crate::RetryPolicy::decide)).
    /// An error status's body is read whole (bounded) and classified as for `query_raw`; it
    /// never reaches the sink. A failure while the body streams is classified like the same
    /// failure before the headers: a reset connection, a broken gzip stream or the request
    /// timeout is retried (the sink is [restarted](BodySink::restart) before the next attempt's
    /// body); a body over [`max_response_bytes`](crate::ClientBuilder::max_response_bytes) is
    /// an [`Error::Decode`], not retried. A sink that refuses a chunk ends the call at once with
    /// an [`Error::ConsumerStopped`] (see [`BodySink::chunk`]).
    ///
    /// If PostHog queues the query anyway (HTTP 202), its status document is not streamed: the
    /// client polls it to completion like `query_raw` and hands the finished result to the sink
    /// as one chunk, after a restart.
    ///
    /// An [asynchronous](HogQlQuery::asynchronous) query is refused with
    /// [`Error::InvalidRequest`] before anything is sent: use `query_raw` for those.
    pub async fn query_streamed<S: BodySink>(
        &self,
        query: &HogQlQuery,
        sink: &mut S,
    ) -> Result<StreamedQuery, Error> {
        if query.asynchronous {
            return Err(Error::InvalidRequest {
                message: "query_streamed runs blocking queries only; this query is \
                          asynchronous (use query_raw)"
                    .into(),
            });
        }
        let (request, client_query_id, span) = self.query_request(query)?;
        // A 202 carries a queued query's status, not its result: read it whole, then poll.
        let streamed = self.execute_streamed(request, sink, |status| status != 202);
        let answer = tracing::Instrument::instrument(streamed, span).await?;
        let (status, body_bytes) = match answer {
            Answer::Streamed { status, bytes, .. } => (status, bytes),
            Answer::Whole(accepted) => {
                let body = self.await_query(&accepted, query.retry_timeouts).await?;
                let len = body.len();
                sink.restart().await;
                if sink.chunk(body).await.is_err() {
                    return Err(consumer_stopped(&accepted.endpoint, 0));
                }
                (accepted.status, len as u64)
            }
        };
        Ok(StreamedQuery {
            client_query_id,
            status,
            body_bytes,
        })
    }

    /// The request of a HogQL query, with the fresh `client_query_id` it carries and the span
    /// its call runs in.
    fn query_request(&self, query: &HogQlQuery) -> Result<(Request, String, tracing::Span), Error> {
        let client_query_id = Uuid::new_v4().to_string();
        let body = QueryRequestBody {
            query: HogQlBody {
                kind: "HogQLQuery",
                query: &query.query,
                values: &query.values,
                modifiers: Modifiers {
                    convert_to_project_timezone: false,
                },
            },
            client_query_id: &client_query_id,
            name: query.name.as_deref().unwrap_or("posthog-rs"),
            refresh: if query.asynchronous {
                "async"
            } else {
                "blocking"
            },
        };
        let body = serde_json::to_vec(&body).map_err(|e| Error::InvalidRequest {
            message: format!("query values cannot be serialized: {e}"),
        })?;
        let span = tracing::debug_span!("posthog.query", client_query_id = %client_query_id);
        tracing::debug!(parent: &span, query = %query.query, "running HogQL query");
        let request = Request {
            method: Method::POST,
            url: self.project_url("/query/")?,
            class: EndpointClass::Query,
            body: Some(body.into()),
            personal_auth: true,
            retry_timeouts: query.retry_timeouts,
            idempotent: true,
        };
        Ok((request, client_query_id, span))
    }

    /// Polls a queued query until it completes, fails, or the client's async deadline passes
    /// (then it is cancelled). Returns the finished response as JSON bytes.
    async fn await_query(&self, accepted: &Response, retry_timeouts: bool) -> Result<Bytes, Error> {
        let status: StatusEnvelope = accepted.json()?;
        let id = status
            .query_status
            .id
            .clone()
            .ok_or_else(|| Error::Decode {
                endpoint: accepted.endpoint.clone(),
                message: "queued query has no query_status.id".into(),
            })?;
        // The id becomes a path segment of the polls and of the cancelling DELETE: one that
        // could climb out of `query/` (`../cohorts/5`) or add a query string is refused.
        if !is_query_id(&id) {
            return Err(Error::Decode {
                endpoint: accepted.endpoint.clone(),
                message: format!(
                    "queued query has an unusable query_status.id {:?}",
                    id.chars().take(80).collect::<String>()
                ),
            });
        }
        let url = self.project_url(&format!("/query/{id}/"))?;
        let deadline = crate::retry::deadline_after(self.inner.async_query_timeout);
        let mut delay = Duration::from_millis(100);
        let mut current = status.query_status;
        loop {
            if current.complete {
                return finished(current, &accepted.endpoint);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                self.cancel_query(url).await;
                return Err(Error::Timeout {
                    endpoint: format!("GET /query/{id}/"),
                    after: self.inner.async_query_timeout,
                });
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 2).min(Duration::from_secs(2));
            let polled = self
                .execute(Request {
                    method: Method::GET,
                    url: url.clone(),
                    class: EndpointClass::Crud,
                    body: None,
                    personal_auth: true,
                    retry_timeouts,
                    idempotent: true,
                })
                .await;
            current = match polled {
                Ok(response) => response.json::<StatusEnvelope>()?.query_status,
                // A failed query is reported as 400 with `query_status.error_message`.
                Err(Error::Api {
                    status: 400,
                    body: Some(body),
                    ..
                }) => match serde_json::from_str::<StatusEnvelope>(&body) {
                    Ok(envelope) => envelope.query_status,
                    Err(_) => return Err(query_failed(&body)),
                },
                Err(e) => return Err(e),
            };
        }
    }

    /// Best effort: a query we stop waiting for should not keep running on PostHog's side.
    async fn cancel_query(&self, url: reqwest::Url) {
        let cancelled = self
            .execute(Request {
                method: Method::DELETE,
                url,
                class: EndpointClass::Crud,
                body: None,
                personal_auth: true,
                retry_timeouts: false,
                idempotent: true,
            })
            .await;
        if let Err(e) = cancelled {
            tracing::debug!(error = %e, "could not cancel the timed-out query");
        }
    }
}

/// Whether a queued query's id is safe as one path segment: PostHog's are UUIDs or hex, maybe
/// prefixed with the team id.
fn is_query_id(id: &str) -> bool {
    (1..=256).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        && !id.bytes().all(|b| b == b'.')
}

/// Reads a query response body as a [`QueryResult`], or a [`Error::Decode`] saying what is
/// wrong with it (the path of the value at fault, serde's message, its line and column).
fn parse_result(body: &[u8]) -> Result<QueryResult, Error> {
    crate::transport::from_json(body).map_err(|e| Error::Decode {
        endpoint: "POST /query/".into(),
        message: format!("query response is not a HogQL result: {e}"),
    })
}

/// `{"query_status": QueryStatus}`, the answer of a queued query.
#[derive(Deserialize)]
struct StatusEnvelope {
    query_status: QueryStatus,
}

#[derive(Deserialize)]
struct QueryStatus {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    complete: bool,
    #[serde(default)]
    error: bool,
    #[serde(default)]
    error_message: Option<String>,
    /// The finished response, kept as PostHog's bytes so it is parsed once, by the caller.
    #[serde(default)]
    results: Option<Box<serde_json::value::RawValue>>,
}

fn finished(status: QueryStatus, endpoint: &str) -> Result<Bytes, Error> {
    if status.error {
        let message = status
            .error_message
            .unwrap_or_else(|| "the query failed without a message".into());
        return Err(query_failed(&message));
    }
    match status.results {
        Some(results) if results.get().starts_with('{') => {
            Ok(Bytes::copy_from_slice(results.get().as_bytes()))
        }
        _ => Err(Error::Decode {
            endpoint: endpoint.to_owned(),
            message: "completed query has no results object".into(),
        }),
    }
}

/// A query PostHog ran and rejected (a HogQL error found at run time): like a 400 on a blocking
/// query, retrying cannot help.
fn query_failed(message: &str) -> Error {
    Error::Api {
        status: 400,
        api: Some(Box::new(crate::error::ApiError {
            kind: "validation_error".into(),
            code: "query_failed".into(),
            detail: crate::redact::redact_secrets(message).into_owned(),
            attr: None,
        })),
        body: None,
        retry_after: None,
    }
}

/// The query response parsers as outside input: whatever PostHog (or a proxy in front of it)
/// sends, a result or a [`Error::Decode`] that says what is wrong, never a panic.
#[cfg(test)]
mod parse_props {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::test_support::json_value;

    /// A response as PostHog sends it for the extractor's events query (properties as a JSON
    /// string, `types` as pairs, a non-UTC time zone).
    fn real_body() -> Vec<u8> {
        serde_json::to_vec(&json!({
            "cache_key": "cache_8f0d3c",
            "clickhouse": "SELECT ...",
            "columns": ["uuid", "event", "timestamp", "distinct_id", "properties"],
            "types": [
                ["uuid", "UUID"],
                ["event", "String"],
                ["timestamp", "DateTime64(6, 'UTC')"],
                ["distinct_id", "String"],
                ["properties", "String"]
            ],
            "results": [
                ["0194274e-99c2-7d74-b879-70edbe884e6a", "$pageview",
                 "2025-01-02T13:57:30.178957Z", "user-1",
                 "{\"$browser\": \"Firefox\", \"n\": 3, \"x\": [1, 2.5, null]}"],
                ["0194274e-99c2-7d74-b879-70edbe884e6b", "$autocapture",
                 "2025-01-02T13:57:31Z", "user-\u{e9}", "{}"]
            ],
            "hasMore": false,
            "limit": 100,
            "timezone": "Europe/Prague",
            "is_cached": false
        }))
        .unwrap()
    }

    fn assert_decode_error(result: Result<QueryResult, Error>) -> String {
        match result {
            Err(err @ Error::Decode { .. }) => {
                assert_eq!(err.category(), crate::Category::Data);
                let msg = err.to_string();
                assert!(
                    msg.starts_with(
                        "unexpected response from POST /query/: query response is not a HogQL \
                         result: "
                    ),
                    "{msg}"
                );
                msg
            }
            other => panic!("expected a decode error, got {other:?}"),
        }
    }

    /// Values that survive a JSON round trip exactly (serde_json may read a float back one
    /// unit in the last place off, so floats are fixed ones).
    fn exact_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            Just(json!(2.5)),
            Just(json!(-0.125)),
            any::<String>().prop_map(Value::from),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                prop::collection::btree_map("[a-z$]{1,6}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn status_body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            any::<Vec<u8>>(),
            (
                prop::option::of(json_value("2025-01-02T13:57:30.178957Z")),
                prop::option::of(json_value("2025-01-02T13:57:30.178957Z")),
                prop::option::of(json_value("2025-01-02T13:57:30.178957Z")),
                prop::option::of(json_value("2025-01-02T13:57:30.178957Z")),
                prop::option::of(json_value("2025-01-02T13:57:30.178957Z")),
            )
                .prop_map(|(id, complete, error, message, results)| {
                    let mut status = Map::new();
                    for (key, value) in [
                        ("id", id),
                        ("complete", complete),
                        ("error", error),
                        ("error_message", message),
                        ("results", results),
                    ] {
                        if let Some(value) = value {
                            status.insert(key.into(), value);
                        }
                    }
                    serde_json::to_vec(&json!({ "query_status": status })).unwrap()
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_are_a_decode_error_or_a_result(body in any::<Vec<u8>>()) {
            if let Err(err) = parse_result(&body) {
                assert_decode_error(Err(err));
            }
        }

        /// One top-level field of a real body replaced by any JSON value: the body still reads
        /// (the value is acceptable there) or the error names that field.
        #[test]
        fn a_wrong_value_in_a_field_is_refused_naming_it(
            field in prop::sample::select(vec!["columns", "types", "results", "hasMore", "limit", "timezone"]),
            value in json_value("2025-01-02T13:57:30.178957Z"),
        ) {
            let mut body: Value = serde_json::from_slice(&real_body()).unwrap();
            body[field] = value;
            let result = parse_result(&serde_json::to_vec(&body).unwrap());
            if result.is_err() {
                let msg = assert_decode_error(result);
                prop_assert!(msg.contains(&format!("result: {field}")), "{}", msg);
            }
        }

        /// A value inside a row or a type pair replaced: any JSON value is a valid row value;
        /// a type pair must stay a pair of strings.
        #[test]
        fn values_inside_rows_and_types(row in 0usize..2, col in 0usize..5, value in exact_value()) {
            let mut body: Value = serde_json::from_slice(&real_body()).unwrap();
            body["results"][row][col] = value.clone();
            let result = parse_result(&serde_json::to_vec(&body).unwrap()).expect("any value fits a row");
            prop_assert_eq!(&result.results[row][col], &value);

            let mut body: Value = serde_json::from_slice(&real_body()).unwrap();
            body["types"][col][1] = value.clone();
            let result = parse_result(&serde_json::to_vec(&body).unwrap());
            if value.is_string() {
                prop_assert!(result.is_ok());
            } else {
                let msg = assert_decode_error(result);
                prop_assert!(msg.contains(&format!("types[{col}][1]")), "{}", msg);
            }
        }

        /// Bytes of a real body flipped, dropped or inserted (invalid UTF-8 included).
        #[test]
        fn mutated_bodies_are_a_decode_error_or_a_result(
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
            if let Err(err) = parse_result(&body) {
                assert_decode_error(Err(err));
            }
        }

        /// A valid result reads back as it was written.
        #[test]
        fn valid_results_round_trip(
            columns in prop::collection::vec("[a-z_$]{1,8}", 0..5),
            rows in prop::collection::vec(prop::collection::vec(exact_value(), 0..5), 0..4),
            has_more in prop::option::of(any::<bool>()),
            limit in prop::option::of(any::<u64>()),
            timezone in prop::option::of("[A-Za-z/_]{1,20}"),
        ) {
            let types: Vec<(String, String)> =
                columns.iter().map(|c| (c.clone(), "String".to_owned())).collect();
            let body = serde_json::to_vec(&json!({
                "columns": columns, "types": types, "results": rows,
                "hasMore": has_more, "limit": limit, "timezone": timezone,
            }))
            .unwrap();
            let result = parse_result(&body).expect("valid body");
            prop_assert_eq!(result, QueryResult {
                columns, types, results: rows, has_more, limit, timezone,
                client_query_id: String::new(),
            });
        }

        /// The answer of a queued query: whatever its shape, polling gets a status or a decode
        /// error, and a completed status gives a results object or an error.
        #[test]
        fn queued_query_statuses_never_panic(body in status_body()) {
            let response = Response {
                status: 202,
                body: Bytes::from(body),
                endpoint: "POST /api/projects/1/query/".into(),
            };
            match response.json::<StatusEnvelope>() {
                Ok(envelope) => match finished(envelope.query_status, &response.endpoint) {
                    Ok(results) => prop_assert!(results.starts_with(b"{"), "{:?}", results),
                    Err(err) => prop_assert!(!err.to_string().is_empty()),
                },
                Err(err) => prop_assert_eq!(err.category(), crate::Category::Data),
            }
        }
    }

    /// Every prefix of a real body (a connection cut, a proxy's size limit) is a decode error.
    #[test]
    fn every_truncation_of_a_real_body_is_a_decode_error() {
        let body = real_body();
        assert!(parse_result(&body).is_ok());
        for cut in 0..body.len() {
            let msg = assert_decode_error(parse_result(&body[..cut]));
            assert!(
                msg.contains("EOF while parsing") || cut == 0,
                "cut at {cut}: {msg}"
            );
        }
    }

    #[test]
    fn deep_nesting_and_huge_numbers_are_decode_errors() {
        let deep = format!(
            r#"{{"columns":["a"],"results":[[{}{}]]}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let msg = assert_decode_error(parse_result(deep.as_bytes()));
        assert!(msg.contains("recursion limit"), "{msg}");

        let msg = assert_decode_error(parse_result(br#"{"columns":["a"],"results":[[1e400]]}"#));
        assert!(msg.contains("number out of range"), "{msg}");

        // Past u64 but within f64: kept as a float, not refused.
        let result =
            parse_result(br#"{"columns":["a"],"results":[[18446744073709551616]]}"#).unwrap();
        assert_eq!(
            result.results[0][0].as_f64(),
            Some(18_446_744_073_709_551_616.0)
        );

        let msg = assert_decode_error(parse_result(
            br#"{"columns":["a"],"limit":-1,"results":[]}"#,
        ));
        assert!(msg.contains("result: limit: invalid value"), "{msg}");
    }

    /// Column names are server input too: many alike must not make naming a row quadratic,
    /// and the names stay those of the simple rule (`n`, `n_2`, `n_3`, … skipping taken ones).
    #[test]
    fn duplicate_column_names_are_suffixed_in_linear_time() {
        let result = QueryResult {
            columns: ["n", "n_3", "n", "n", "n", "n_2"]
                .map(String::from)
                .to_vec(),
            types: Vec::new(),
            results: vec![(0..7).map(Value::from).collect()],
            has_more: None,
            limit: None,
            timezone: None,
            client_query_id: String::new(),
        };
        let row = result.row_object(&result.results[0]);
        let names: Vec<(&str, i64)> = row
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_i64().unwrap()))
            .collect();
        let mut expected = vec![
            ("n", 0),
            ("n_3", 1),
            ("n_2", 2),
            ("n_4", 3),
            ("n_5", 4),
            ("n_2_2", 5),
            ("column_6", 6),
        ];
        let mut got = names.clone();
        got.sort();
        expected.sort();
        assert_eq!(got, expected);

        let many = 50_000;
        let result = QueryResult {
            columns: vec!["a".to_owned(); many],
            results: vec![vec![Value::Null; many]],
            ..result
        };
        let started = std::time::Instant::now();
        let row = result.row_object(&result.results[0]);
        assert_eq!(row.len(), many);
        assert!(row.contains_key(&format!("a_{many}")));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn invalid_utf8_and_missing_results_are_decode_errors() {
        let msg = assert_decode_error(parse_result(b"{\"columns\":[\"\xff\"],\"results\":[]}"));
        assert!(
            msg.contains("invalid unicode") || msg.contains("UTF-8"),
            "{msg}"
        );
        let msg = assert_decode_error(parse_result(br#"{"columns":["a"]}"#));
        assert!(msg.contains("missing field `results`"), "{msg}");
        let msg = assert_decode_error(parse_result(br#"{"columns":["a"],"results":[[1]]}]"#));
        assert!(msg.contains("trailing characters"), "{msg}");
        let msg = assert_decode_error(parse_result(br#"{"columns":["a"],"results":[[1]]]}"#));
        assert!(
            msg.contains("result: expected `,` or `}` at line 1"),
            "{msg}"
        );
    }
}
