//! The one path every request takes: circuit breaker → rate limits → HTTP → classify → retry.
//!
//! Endpoint methods build a [`Request`] and call [`Client::execute`]; none of them retries,
//! throttles or logs on its own, so every endpoint gets the same resilience and tracing.
//!
//! Numbers the server sends are bounded before they steer anything: `Retry-After` saturates at
//! [`RETRY_AFTER_CEILING`] and a wait that long (or longer than the policy's
//! `max_retry_after`) ends the call at once; a `Content-Length` over `max_response_bytes` is
//! refused before a byte of the body is read; an error response's body is read only up to
//! [`ERROR_BODY_BYTES`], best effort, so a lying length or a cut body cannot hide its status
//! and `Retry-After`.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, Url};
use secrecy::ExposeSecret;
use tokio::time::Instant;
use tracing::{Instrument, Level};

use crate::breaker::{Admission, CircuitBreaker};
use crate::client::{Client, Counters};
use crate::error::{Error, ErrorCategory};
use crate::ratelimit::EndpointClass;
use crate::redact::redact_secrets;
use crate::retry::{RETRY_AFTER_CEILING, full_jitter, parse_retry_after};

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
    /// Sends `request`, retrying what is retryable, and returns the 2xx response.
    pub(crate) async fn execute(&self, request: Request) -> Result<Response, Error> {
        let endpoint = format!("{} {}", request.method, request.url.path());
        let span = tracing::debug_span!(
            "posthog.request",
            method = %request.method,
            path = %request.url.path(),
            class = request.class.as_str(),
        );
        self.execute_with_retries(&request, &endpoint)
            .instrument(span)
            .await
    }

    async fn execute_with_retries(
        &self,
        request: &Request,
        endpoint: &str,
    ) -> Result<Response, Error> {
        let inner = &self.inner;
        let started = Instant::now();
        let mut backoff = inner.retry.schedule();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
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
            if !waited.is_zero() {
                tracing::debug!(waited_ms = millis(waited), "waited for the rate limit");
            }
            let sent_at = Instant::now();
            let outcome = self.attempt(request, endpoint, attempt).await;
            drop(permit);
            let latency_ms = millis(sent_at.elapsed());

            // A timeout the caller answers by asking for less (`fail_fast_on_timeout`: the
            // extractor halves its page) is the server saying "too heavy", not "unwell":
            // counting it would open the circuit before the page is small enough to succeed.
            let healthy = outcome.as_ref().err().is_none_or(|e| {
                !e.is_server_failure()
                    || (!request.retry_timeouts && e.category() == ErrorCategory::Timeout)
            });
            if guard.record(healthy) {
                Counters::bump(&inner.stats.breaker_trips);
                tracing::warn!(endpoint, "circuit breaker opened after repeated failures");
            }

            let err = match outcome {
                Ok(response) => {
                    tracing::debug!(status = response.status, latency_ms, attempt, "response");
                    return Ok(response);
                }
                Err(err) => err,
            };
            tracing::debug!(status = err.status(), latency_ms, attempt, error = %err, "request failed");
            if !err.is_retryable() || attempt >= inner.retry.max_attempts {
                return Err(err);
            }
            if !request.retry_timeouts && err.category() == ErrorCategory::Timeout {
                return Err(err);
            }
            if !request.idempotent && err.status() != Some(429) {
                return Err(err);
            }
            let scheduled = backoff.next();
            let delay = match (&err, scheduled) {
                (
                    Error::Api {
                        retry_after: Some(wait),
                        ..
                    },
                    _,
                ) => {
                    // A saturated wait (a huge or absurd `Retry-After`) is never slept on, even
                    // under a policy that would honour a century.
                    if *wait > inner.retry.max_retry_after || *wait >= RETRY_AFTER_CEILING {
                        tracing::debug!(
                            retry_after_s = wait.as_secs(),
                            "Retry-After is longer than we wait; giving up with the server's wait"
                        );
                        return Err(err);
                    }
                    *wait
                }
                (_, Some(delay)) => full_jitter(delay),
                (_, None) => return Err(err),
            };
            if started.elapsed().saturating_add(delay) > inner.retry.total_budget {
                tracing::debug!(
                    ?delay,
                    "retry budget exhausted; giving up with the last error"
                );
                return Err(err);
            }
            Counters::bump(&inner.stats.retries);
            tracing::warn!(
                endpoint,
                attempt,
                reason = err.category().as_str(),
                status = err.status(),
                delay_ms = millis(delay),
                "retrying request"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One HTTP exchange, body read in full.
    async fn attempt(
        &self,
        request: &Request,
        endpoint: &str,
        attempt: u32,
    ) -> Result<Response, Error> {
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
                tracing::trace!(attempt, body = %preview(body), "request body");
            }
        }
        Counters::bump(&inner.stats.requests);
        let mut response = builder
            .send()
            .await
            .map_err(|e| transport_error(e, endpoint, inner.request_timeout))?;
        let status = response.status().as_u16();
        let retry_after = parse_retry_after(response.headers(), SystemTime::now());
        if status == 429 {
            Counters::bump(&inner.stats.throttled);
        }
        let success = (200..300).contains(&status);
        let body = if success {
            read_body(
                &mut response,
                endpoint,
                inner.max_response_bytes,
                inner.request_timeout,
            )
            .await?
        } else {
            read_error_body(&mut response, endpoint).await
        };
        let body = Bytes::from(body);
        if inner.verbose_http && tracing::enabled!(Level::TRACE) {
            tracing::trace!(status, body = %preview(&body), "response body");
        }
        if success {
            Ok(Response {
                status,
                body,
                endpoint: endpoint.to_owned(),
            })
        } else {
            Err(Error::from_response(status, &body, retry_after))
        }
    }
}

/// Reads a 2xx body in full, refusing one over `limit` bytes: at once when its
/// `Content-Length` says so (nothing read, nothing allocated), else when the bytes do.
async fn read_body(
    response: &mut reqwest::Response,
    endpoint: &str,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, Error> {
    let too_large = |what: String| Error::Decode {
        endpoint: endpoint.to_owned(),
        message: format!("{what} exceeds the {limit} byte limit"),
    };
    if let Some(declared) = response.content_length()
        && declared > u64::try_from(limit).unwrap_or(u64::MAX)
    {
        return Err(too_large(format!(
            "response body of {declared} bytes (its Content-Length)"
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(e, endpoint, timeout))?
    {
        if body.len().saturating_add(chunk.len()) > limit {
            return Err(too_large("response body".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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

fn preview(body: &[u8]) -> String {
    let cut = body.len().min(VERBOSE_BODY_BYTES);
    let text = String::from_utf8_lossy(&body[..cut]);
    let mut shown = redact_secrets(&text).into_owned();
    if body.len() > cut {
        shown.push_str(&format!("… ({} bytes in all)", body.len()));
    }
    shown
}
