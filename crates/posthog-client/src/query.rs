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
use crate::transport::{Request, Response};

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
        for (i, value) in row.iter().enumerate() {
            let base = self
                .columns
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("column_{i}"));
            let mut name = base.clone();
            let mut n = 2;
            while map.contains_key(&name) {
                name = format!("{base}_{n}");
                n += 1;
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

impl Client {
    /// Runs a HogQL query and returns its rows.
    pub async fn query(&self, query: &HogQlQuery) -> Result<QueryResult, Error> {
        let raw = self.query_raw(query).await?;
        let mut result: QueryResult =
            serde_json::from_slice(&raw.body).map_err(|e| Error::Decode {
                endpoint: "POST /query/".into(),
                message: format!("query response is not a HogQL result: {e}"),
            })?;
        result.client_query_id = raw.client_query_id;
        Ok(result)
    }

    /// Runs a HogQL query and returns the response body undecoded.
    pub async fn query_raw(&self, query: &HogQlQuery) -> Result<RawQueryResponse, Error> {
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
        let response = tracing::Instrument::instrument(
            self.execute(Request {
                method: Method::POST,
                url: self.project_url("/query/")?,
                class: EndpointClass::Query,
                body: Some(body.into()),
                personal_auth: true,
                retry_timeouts: query.retry_timeouts,
                idempotent: true,
            }),
            span,
        )
        .await?;
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
        let url = self.project_url(&format!("/query/{id}/"))?;
        let deadline = tokio::time::Instant::now() + self.inner.async_query_timeout;
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
