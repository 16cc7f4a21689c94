//! The one path every request takes: circuit breaker → rate limits → HTTP → classify → retry.
//!
//! Endpoint methods build a [`Request`] and call [`Client::execute`]; none of them retries,
//! throttles or logs on its own, so every endpoint gets the same resilience and tracing.
//!
//! A 2xx body is read one way: chunk by chunk into a [`BodySink`], as reqwest yields it (after
//! gzip/zstd decoding). [`Client::execute`] collects it whole for the endpoints that parse a
//! document; [`Client::execute_streamed`] hands it to the caller's sink as it arrives (for
//! [`Client::query_streamed`]). A failure while the body streams (a reset, a bad gzip stream,
//! the request timeout) is classified like the same failure before the headers and retried the
//! same way; the sink is restarted before the next attempt's body.
//!
//! After a failed attempt, [`RetryPolicy::decide`](crate::RetryPolicy::decide) alone says
//! whether to wait and for how long; this loop only keeps the call's [`RetryState`], sleeps and
//! logs each wait with its [`WaitReason`] (`reason`, `wait_ms`, `attempt`, `status`, `endpoint`,
//! `url`), and counts it in [`ClientStats`](crate::ClientStats).
//!
//! Numbers the server sends are bounded before they steer anything: `Retry-After` saturates at
//! [`RETRY_AFTER_CEILING`](crate::RETRY_AFTER_CEILING) and a wait that long (or longer than the
//! policy's `max_retry_after`) ends the call at once; a `Content-Length` over
//! `max_response_bytes` is refused before a byte of the body is read; an error response's body
//! is read only up to [`ERROR_BODY_BYTES`], best effort, so a lying length or a cut body cannot
//! hide its status and `Retry-After`.

use std::future::Future;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, Url};
use secrecy::ExposeSecret;
use tokio::time::Instant;
use tracing::{Instrument, Level};

use crate::Category;
use crate::breaker::{Admission, CircuitBreaker};
use crate::client::{Client, Counters};
use crate::error::Error;
use crate::ratelimit::EndpointClass;
use crate::redact::redact_secrets;
use crate::retry::{
    Decision, RequestInfo, RetryState, WaitReason, is_concurrency_limit, parse_retry_after,
};

/// A wait after a 429 shorter than this is logged at INFO (PostHog working as designed); every
/// other wait at WARN.
const QUIET_RATE_LIMIT_WAIT: Duration = Duration::from_secs(10);

/// Bytes of a body shown by `verbose_http` logging.
const VERBOSE_BODY_BYTES: usize = 4096;

/// Bytes of a non-2xx body read: enough for PostHog's error document (the error keeps 512
/// characters of anything else).
const ERROR_BODY_BYTES: usize = 64 * 1024;

/// One request, described before it is sent so it can be sent again unchanged.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) class: EndpointClass,
    /// A JSON body, serialized once so retries resend the same bytes.
    pub(crate) body: Option<Bytes>,
    /// Whether to send the personal API key as a bearer token.
    pub(crate) personal_auth: bool,
    /// Whether timeouts (a 504, a request timeout) are retried like other transient failures.
    /// When false they are returned at once, for callers that react by asking for less.
    pub(crate) retry_timeouts: bool,
    /// Whether sending the request twice is harmless. A request that creates something is
    /// retried only after a 429, which PostHog sends before doing anything.
    pub(crate) idempotent: bool,
}

impl Request {
    /// What the retry policy needs to know about this request.
    fn info(&self) -> RequestInfo {
        RequestInfo::new(self.class)
            .idempotent(self.idempotent)
            .retry_timeouts(self.retry_timeouts)
    }
}

/// Receives a successful (2xx) response body as it arrives, after gzip/zstd decoding: the
/// seam through which [`Client::query_streamed`] hands a query's body over without holding it
/// whole.
///
/// For every attempt whose 2xx body is delivered, [`restart`](BodySink::restart) is called
/// once, before its first chunk (so before the first attempt's too, and also when the body is
/// empty), then [`chunk`](BodySink::chunk) for each chunk in order. After the call returns
/// `Ok`, what the sink received since its last `restart` is the whole body, exactly. An attempt
/// that fails before its body begins (a 503, a connection refused, a `Content-Length` over the
/// limit) delivers nothing and does not restart the sink.
///
/// The connection is held while a `chunk` future is pending, and that time counts against the
/// client's request timeout: a sink should hand the bytes on (to a bounded channel, say)
/// rather than do slow work itself.
///
/// ```
/// use bytes::Bytes;
/// use posthog_client::BodySink;
///
/// /// Keeps the body whole (what `query_raw` does, in effect).
/// #[derive(Default)]
/// struct Collect(Vec<u8>);
///
/// impl BodySink for Collect {
///     async fn restart(&mut self) {
///         self.0.clear();
///     }
///     async fn chunk(&mut self, bytes: Bytes) -> Result<(), ()> {
///         self.0.extend_from_slice(&bytes);
///         Ok(())
///     }
/// }
/// ```
pub trait BodySink: Send {
    /// A new attempt's body begins: drop everything earlier attempts delivered.
    fn restart(&mut self) -> impl Future<Output = ()> + Send;

    /// The next chunk of the body. `Err(())` says the receiver has gone: the call ends at once,
    /// with no further attempt, with an [`Error::ConsumerStopped`]
    /// (category `data`: the body was not taken in full, so nothing built on it may be
    /// committed; the consumer knows why it stopped and reports its own error).
    fn chunk(&mut self, bytes: Bytes) -> impl Future<Output = Result<(), ()>> + Send;
}

/// The sink of [`Client::execute`]: keeps the body whole.
#[derive(Default)]
struct Collect(Vec<u8>);

impl BodySink for Collect {
    fn restart(&mut self) -> impl Future<Output = ()> + Send {
        self.0.clear();
        std::future::ready(())
    }

    fn chunk(&mut self, bytes: Bytes) -> impl Future<Output = Result<(), ()>> + Send {
        self.0.extend_from_slice(&bytes);
        std::future::ready(Ok(()))
    }
}

/// The 2xx answer of [`Client::execute_streamed`].
#[derive(Debug)]
pub(crate) enum Answer {
    /// The body went to the sink: `bytes` of it since its last restart.
    Streamed {
        status: u16,
        bytes: u64,
        /// `METHOD /path`, for error messages.
        endpoint: String,
    },
    /// A status the caller asked not to stream (a 202's status document), read whole.
    Whole(Response),
}

/// A successful (2xx) response with its whole body.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
    /// `METHOD /path`, for error messages.
    pub(crate) endpoint: String,
}

impl Response {
    /// Parses the body as JSON, or reports a [`Error::Decode`] naming the endpoint.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        from_json(&self.body).map_err(|message| Error::Decode {
            endpoint: self.endpoint.clone(),
            message: format!("invalid JSON body: {message}"),
        })
    }
}

/// Parses a JSON body as `T`. The error names the value at fault by its path in the document
/// (`results[3].id: invalid type: …`) when it has one, then gives serde's message with its line
/// and column: in a body of megabytes on one line, a column alone does not say which field.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| {
        // Only after a failure: parse again, tracking the path, to name the value.
        let mut de = serde_json::Deserializer::from_slice(body);
        let path = match serde_path_to_error::deserialize::<_, T>(&mut de) {
            Err(located) => located.path().to_string(),
            Ok(_) => String::new(),
        };
        match path.as_str() {
            // `?`: serde_path_to_error's "somewhere unknown", e.g. between two fields.
            "" | "." | "?" => e.to_string(),
            path => format!("{path}: {e}"),
        }
    })
}

/// Releases a half-open probe if the call is dropped before its outcome is recorded, so a
/// cancelled probe cannot leave the breaker refusing every call.
struct ProbeGuard<'a> {
    breaker: &'a CircuitBreaker,
    admission: Option<Admission>,
}

impl ProbeGuard<'_> {
    fn record(mut self, healthy: bool) -> bool {
        let admission = self.admission.take().unwrap_or(Admission::Normal);
        self.breaker.record(admission, healthy)
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.admission == Some(Admission::Probe) {
            self.breaker.release_probe();
        }
    }
}

impl Client {
    /// Sends `request`, retrying what is retryable, and returns the 2xx response with its whole
    /// body (read through the same streaming path, into a buffer).
    pub(crate) async fn execute(&self, request: Request) -> Result<Response, Error> {
        let mut whole = Collect::default();
        match self.execute_streamed(request, &mut whole, |_| true).await? {
            Answer::Streamed {
                status, endpoint, ..
            } => Ok(Response {
                status,
                body: Bytes::from(whole.0),
                endpoint,
            }),
            Answer::Whole(response) => Ok(response),
        }
    }

    /// Sends `request` like [`execute`](Client::execute), but hands a 2xx body whose status
    /// `streams` accepts to `sink` as it arrives; any other 2xx body is read whole (bounded the
    /// same way) and returned in [`Answer::Whole`].
    pub(crate) async fn execute_streamed<S: BodySink>(
        &self,
        request: Request,
        sink: &mut S,
        streams: fn(u16) -> bool,
    ) -> Result<Answer, Error> {
        let endpoint = format!("{} {}", request.method, request.url.path());
        let span = tracing::debug_span!(
            "posthog.request",
            method = %request.method,
            path = %request.url.path(),
            class = request.class.as_str(),
        );
        let target = Target { sink, streams };
        self.execute_with_retries(&request, &endpoint, target)
            .instrument(span)
            .await
    }

    async fn execute_with_retries<S: BodySink>(
        &self,
        request: &Request,
        endpoint: &str,
        mut target: Target<'_, S>,
    ) -> Result<Answer, Error> {
        let inner = &self.inner;
        let info = request.info();
        let started = Instant::now();
        let mut state = RetryState::default();
        // What rate limits cost this call (waits for the client-side budgets, attempts answered
        // 429, waits after them): not part of `total_budget`, which `state.elapsed` measures.
        let mut rate_limit_time = Duration::ZERO;
        loop {
            let attempt = state.attempt();
            let admission = inner.breaker.admit().map_err(|retry_in| {
                Counters::bump(&inner.stats.fast_failures);
                tracing::debug!(?retry_in, "circuit open: failing fast");
                Error::CircuitOpen { retry_in }
            })?;
            let guard = ProbeGuard {
                breaker: &inner.breaker,
                admission: Some(admission),
            };
            let (permit, waited) = inner.limiter.acquire(request.class).await;
            rate_limit_time = rate_limit_time.saturating_add(waited);
            if !waited.is_zero() {
                tracing::debug!(waited_ms = millis(waited), "waited for the rate limit");
            }
            let sent_at = Instant::now();
            let outcome = self.attempt(request, endpoint, attempt, &mut target).await;
            // Lowered while this query still holds its slot, so that slot is the one taken
            // back: no other query can start in it in between.
            if let Err(err) = &outcome
                && is_concurrency_limit(&info, err)
            {
                self.lower_query_concurrency(endpoint);
            }
            drop(permit);
            let took = sent_at.elapsed();
            let latency_ms = millis(took);

            // A timeout the caller answers by asking for less (`fail_fast_on_timeout`: the
            // extractor halves its page) is the server saying "too heavy", not "unwell":
            // counting it would open the circuit before the page is small enough to succeed.
            let healthy = outcome.as_ref().err().is_none_or(|e| {
                !e.is_server_failure()
                    || (!request.retry_timeouts && e.category() == Category::Timeout)
            });
            if guard.record(healthy) {
                Counters::bump(&inner.stats.breaker_trips);
                tracing::warn!(endpoint, "circuit breaker opened after repeated failures");
            }

            let err = match outcome {
                Ok(answer) => {
                    let (status, bytes) = match &answer {
                        Answer::Streamed { status, bytes, .. } => (*status, *bytes),
                        Answer::Whole(response) => (response.status, response.body.len() as u64),
                    };
                    tracing::debug!(status, bytes, latency_ms, attempt, "response");
                    return Ok(answer);
                }
                Err(err) => err,
            };
            tracing::debug!(status = err.status(), latency_ms, attempt, error = %err, "request failed");
            if err.status() == Some(429) {
                rate_limit_time = rate_limit_time.saturating_add(took);
            }
            state.elapsed = started.elapsed().saturating_sub(rate_limit_time);
            let (wait, reason) = match inner.retry.decide(&info, &err, &state, fastrand::f64()) {
                Decision::Retry { after, reason } => (after, reason),
                Decision::GiveUp(why) => {
                    tracing::debug!(
                        endpoint,
                        attempt,
                        status = err.status(),
                        why = why.as_str(),
                        "not retrying; returning the error"
                    );
                    return Err(err);
                }
            };
            inner.stats.record_wait(reason);
            log_wait(request, endpoint, reason, wait, attempt, &err);
            let slept_at = Instant::now();
            tokio::time::sleep(wait).await;
            if reason.is_rate_limit() {
                rate_limit_time = rate_limit_time.saturating_add(slept_at.elapsed());
            }
            state.record_wait(reason, wait);
        }
    }

    /// Lowers the client's query concurrency by one (never below 1) after PostHog said it is
    /// over its concurrency limit: other clients of the project hold slots too, and each
    /// query sent past the limit costs a wait and a retry. Logged once per 429 that lowers it.
    fn lower_query_concurrency(&self, endpoint: &str) {
        if let Some(cap) = self.inner.limiter.lower_query_concurrency() {
            tracing::warn!(
                endpoint,
                query_concurrency = cap,
                "PostHog is over its query concurrency limit (429 without Retry-After): lowered \
                 the client's concurrent queries to {cap} for the rest of its life"
            );
        }
    }

    /// One HTTP exchange: a 2xx body goes to the target's sink (or is read whole when the
    /// target does not stream its status), any other is read in part and classified.
    async fn attempt<S: BodySink>(
        &self,
        request: &Request,
        endpoint: &str,
        attempt: u32,
        target: &mut Target<'_, S>,
    ) -> Result<Answer, Error> {
        let inner = &self.inner;
        let mut response = self.send(request, endpoint, attempt).await?;
        let status = response.status().as_u16();
        let retry_after = parse_retry_after(response.headers(), SystemTime::now());
        if status == 429 {
            Counters::bump(&inner.stats.throttled);
        }
        let verbose = inner.verbose_http && tracing::enabled!(Level::TRACE);
        if !(200..300).contains(&status) {
            let body = read_error_body(&mut response, endpoint).await;
            if verbose {
                tracing::trace!(status, body = %preview(&body, body.len()), "response body");
            }
            return Err(Error::from_response(status, &body, retry_after));
        }
        let mut reader = BodyReader {
            endpoint,
            limit: inner.max_response_bytes,
            timeout: inner.request_timeout,
            head: verbose.then(Vec::new),
        };
        let answer = if (target.streams)(status) {
            let bytes = reader.stream(&mut response, target.sink).await?;
            Answer::Streamed {
                status,
                bytes,
                endpoint: endpoint.to_owned(),
            }
        } else {
            let mut whole = Collect::default();
            reader.stream(&mut response, &mut whole).await?;
            Answer::Whole(Response {
                status,
                body: Bytes::from(whole.0),
                endpoint: endpoint.to_owned(),
            })
        };
        if let Some(head) = &reader.head {
            let total = match &answer {
                Answer::Streamed { bytes, .. } => usize::try_from(*bytes).unwrap_or(usize::MAX),
                Answer::Whole(response) => response.body.len(),
            };
            tracing::trace!(status, body = %preview(head, total), "response body");
        }
        Ok(answer)
    }

    /// Builds and sends one attempt of `request`, up to its response's headers.
    async fn send(
        &self,
        request: &Request,
        endpoint: &str,
        attempt: u32,
    ) -> Result<reqwest::Response, Error> {
        let inner = &self.inner;
        let mut builder = inner
            .http
            .request(request.method.clone(), request.url.clone())
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        if request.personal_auth {
            let key = self.personal_key()?;
            let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret()))
                .map_err(|_| Error::Config {
                    field: "personal_api_key",
                    message: "cannot be sent in an HTTP header".into(),
                })?;
            value.set_sensitive(true);
            builder = builder.header(reqwest::header::AUTHORIZATION, value);
        }
        if let Some(body) = &request.body {
            builder = builder
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body.clone());
            if inner.verbose_http && tracing::enabled!(Level::TRACE) {
                tracing::trace!(attempt, body = %preview(body, body.len()), "request body");
            }
        }
        Counters::bump(&inner.stats.requests);
        builder
            .send()
            .await
            .map_err(|e| transport_error(e, endpoint, inner.request_timeout))
    }
}

/// Where a call's 2xx bodies go: the caller's sink, for the statuses `streams` accepts.
struct Target<'s, S> {
    sink: &'s mut S,
    streams: fn(u16) -> bool,
}

/// Reads one 2xx body into a sink, bounded by `limit` bytes.
struct BodyReader<'a> {
    endpoint: &'a str,
    limit: usize,
    /// The client's request timeout: reqwest reports that one happened, not after how long.
    timeout: Duration,
    /// The body's first [`VERBOSE_BODY_BYTES`], kept for `verbose_http` logging only.
    head: Option<Vec<u8>>,
}

impl BodyReader<'_> {
    /// Hands the body to `sink` chunk by chunk, as reqwest yields it, and answers its length.
    /// A body over the limit is refused at once when its `Content-Length` says so (nothing
    /// delivered, the sink not restarted), else at the chunk that would pass it (that chunk is
    /// not delivered). A chunk the sink refuses ends the body with [`consumer_stopped`].
    async fn stream<S: BodySink>(
        &mut self,
        response: &mut reqwest::Response,
        sink: &mut S,
    ) -> Result<u64, Error> {
        if let Some(declared) = response.content_length()
            && declared > u64::try_from(self.limit).unwrap_or(u64::MAX)
        {
            return Err(self.too_large(&format!(
                "response body of {declared} bytes (its Content-Length)"
            )));
        }
        sink.restart().await;
        let mut delivered: usize = 0;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error(e, self.endpoint, self.timeout))?
        {
            if delivered.saturating_add(chunk.len()) > self.limit {
                return Err(self.too_large("response body"));
            }
            if let Some(head) = &mut self.head {
                let room = VERBOSE_BODY_BYTES.saturating_sub(head.len());
                head.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            let len = chunk.len();
            if sink.chunk(chunk).await.is_err() {
                return Err(consumer_stopped(self.endpoint, delivered));
            }
            delivered += len;
        }
        Ok(delivered as u64)
    }

    fn too_large(&self, what: &str) -> Error {
        Error::Decode {
            endpoint: self.endpoint.to_owned(),
            message: format!("{what} exceeds the {} byte limit", self.limit),
        }
    }
}

/// The error of a call whose [`BodySink`] refused a chunk after `delivered` bytes (category
/// `data`): never retried, not counted by the circuit breaker (PostHog answered), and nothing
/// built on the partial body may be committed.
pub(crate) fn consumer_stopped(endpoint: &str, delivered: usize) -> Error {
    Error::ConsumerStopped {
        endpoint: endpoint.to_owned(),
        delivered,
    }
}

/// Reads the start of a non-2xx body, best effort: at most [`ERROR_BODY_BYTES`], nothing when
/// `Content-Length` announces more, and whatever arrived when the body is cut or stalls. The
/// status and `Retry-After` are what matter; a body the server lies about must not turn a 429
/// into a network error that is retried on backoff, ignoring the server's wait.
async fn read_error_body(response: &mut reqwest::Response, endpoint: &str) -> Vec<u8> {
    let mut body = Vec::new();
    if let Some(declared) = response.content_length()
        && declared > ERROR_BODY_BYTES as u64
    {
        tracing::debug!(
            endpoint,
            declared,
            "error body announced over {ERROR_BODY_BYTES} bytes; not read"
        );
        return body;
    }
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = ERROR_BODY_BYTES - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= ERROR_BODY_BYTES {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(endpoint, error = %e, "error body cut short; keeping what arrived");
                break;
            }
        }
    }
    body
}

/// One line per wait, with its reason: INFO for a short wait after a 429, WARN otherwise. The
/// URL carries no key (keys travel in headers); it is redacted anyway, in case a caller put one
/// in a custom base URL.
fn log_wait(
    request: &Request,
    endpoint: &str,
    reason: WaitReason,
    wait: Duration,
    attempt: u32,
    err: &Error,
) {
    let wait_ms = millis(wait);
    let url = redact_secrets(request.url.as_str());
    let status = err.status();
    if reason.is_rate_limit() && wait < QUIET_RATE_LIMIT_WAIT {
        tracing::info!(
            reason = %reason,
            wait_ms,
            attempt,
            status,
            endpoint,
            url = %url,
            error = %err,
            "waiting before retrying"
        );
    } else {
        tracing::warn!(
            reason = %reason,
            wait_ms,
            attempt,
            status,
            endpoint,
            url = %url,
            error = %err,
            "waiting before retrying"
        );
    }
}

/// Milliseconds for logs, saturating instead of truncating `u128` to `u64`.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `timeout` is the client's request timeout: reqwest reports that one happened, not after how
/// long.
fn transport_error(err: reqwest::Error, endpoint: &str, timeout: Duration) -> Error {
    if err.is_timeout() {
        return Error::Timeout {
            endpoint: endpoint.to_owned(),
            after: timeout,
        };
    }
    // reqwest's message names the URL; ours carry no credentials (keys travel in headers),
    // and we redact anyway in case a caller put one in a custom base URL path.
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    Error::Network {
        endpoint: endpoint.to_owned(),
        message: redact_secrets(&message).into_owned(),
    }
}

/// The start of a body of `total` bytes, for `verbose_http` logging: `head` is the body or at
/// least its first [`VERBOSE_BODY_BYTES`].
fn preview(head: &[u8], total: usize) -> String {
    let cut = head.len().min(VERBOSE_BODY_BYTES);
    let text = String::from_utf8_lossy(&head[..cut]);
    let mut shown = redact_secrets(&text).into_owned();
    if total > cut {
        shown.push_str(&format!("… ({total} bytes in all)"));
    }
    shown
}
