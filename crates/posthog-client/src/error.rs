//! The client's one error type, and its [`Category`], which callers branch on for exit codes
//! and retry decisions.
//!
//! Messages built from foreign errors (`reqwest`, `serde_json`) are kept as redacted text, not
//! as [`source()`](std::error::Error::source): a source would print the server's text unredacted.

use std::time::Duration;

use posthog_error::{Categorized, Category};
use serde::Deserialize;

use crate::redact::redact_secrets;

/// Everything that can go wrong talking to PostHog.
///
/// Every variant is free of secrets: API keys are never stored in an error, and any text that
/// came from the server is passed through [`redact_secrets`] before it is kept.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client was configured with an invalid value. Nothing was sent.
    #[error("invalid client configuration: {field}: {message}")]
    Config {
        /// The configuration field at fault, e.g. `base_url`.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },

    /// PostHog answered with a non-success HTTP status.
    #[error("{}", api_message(*status, api.as_deref(), body.as_deref()))]
    Api {
        /// HTTP status code.
        status: u16,
        /// PostHog's error document (`{type, code, detail, attr}`), when the body was one.
        api: Option<Box<ApiError>>,
        /// The raw body (truncated, secrets redacted) when it was not PostHog's error shape.
        body: Option<String>,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },

    /// The request did not complete: connection refused or reset, DNS, TLS, or a body cut short.
    #[error("network error on {endpoint}: {message}")]
    Network {
        /// Method and path of the request, e.g. `POST /api/projects/1/query/`.
        endpoint: String,
        /// What failed, without URLs' credentials (there are none: keys travel in headers).
        message: String,
    },

    /// The request, or the whole retry budget, ran out of time.
    #[error("timed out on {endpoint} after {after:?}")]
    Timeout {
        /// Method and path of the request.
        endpoint: String,
        /// How long we waited.
        after: Duration,
    },

    /// PostHog answered 2xx, but the body was not what its API promises (malformed or truncated
    /// JSON, wrong types). Retrying would not help; nothing built on it should be committed.
    #[error("unexpected response from {endpoint}: {message}")]
    Decode {
        /// Method and path of the request.
        endpoint: String,
        /// What did not parse, and where.
        message: String,
    },

    /// The [`BodySink`](crate::BodySink) of a streamed query refused a chunk: the rest of the
    /// body was not read and the call was not repeated. The consumer knows why it stopped and
    /// reports its own error; nothing built on the partial body may be committed.
    #[error(
        "{endpoint}: the body's consumer stopped after {delivered} bytes; the rest was not read"
    )]
    ConsumerStopped {
        /// Method and path of the request.
        endpoint: String,
        /// Bytes the consumer had taken.
        delivered: usize,
    },

    /// The circuit breaker is open after repeated failures: the call failed fast, without
    /// touching the network.
    #[error("circuit breaker open after repeated failures; next probe allowed in {retry_in:?}")]
    CircuitOpen {
        /// Time until the breaker lets a probe request through.
        retry_in: Duration,
    },

    /// A request we refused to build, e.g. a capture event larger than PostHog accepts.
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// What is wrong with it.
        message: String,
    },
}

/// PostHog's error document, as rendered by `drf-exceptions-hog`:
/// `{"type": "...", "code": "...", "detail": "...", "attr": null}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiError {
    /// Broad class, e.g. `authentication_error`, `validation_error`, `throttled_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Machine-readable code, e.g. `invalid_personal_api_key`, `throttled`.
    pub code: String,
    /// Human-readable explanation.
    pub detail: String,
    /// The request attribute the error concerns, if any.
    #[serde(default)]
    pub attr: Option<String>,
}

impl Error {
    /// The failure's category.
    ///
    /// ```
    /// use posthog_client::{Category, Error};
    /// let err = Error::Api { status: 403, api: None, body: None, retry_after: None };
    /// assert_eq!(err.category(), Category::Permission);
    /// ```
    pub fn category(&self) -> Category {
        match self {
            Error::Config { .. } | Error::InvalidRequest { .. } => Category::Config,
            Error::Api { status, .. } => category_of_status(*status),
            Error::Network { .. } => Category::Network,
            Error::Timeout { .. } => Category::Timeout,
            Error::Decode { .. } | Error::ConsumerStopped { .. } => Category::Data,
            Error::CircuitOpen { .. } => Category::CircuitOpen,
        }
    }

    /// Whether repeating the same request may succeed: connection failures, timeouts, 429, 500,
    /// 502, 503 and 504. Never other 4xx, never a body that did not parse.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Network { .. } | Error::Timeout { .. } => true,
            Error::Api { status, .. } => is_retryable_status(*status),
            _ => false,
        }
    }

    /// Whether this failure says the server is unwell (connection failure, timeout, 5xx), which
    /// is what the circuit breaker counts. 4xx, 429 included, is PostHog answering normally.
    pub fn is_server_failure(&self) -> bool {
        match self {
            Error::Network { .. } | Error::Timeout { .. } => true,
            Error::Api { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// The HTTP status, for [`Error::Api`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// PostHog's error document, for [`Error::Api`] when the body was one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Error::Api { api, .. } => api.as_deref(),
            _ => None,
        }
    }

    /// Builds an [`Error::Api`] from a status and a response body, keeping PostHog's error
    /// document when the body is one and a redacted, truncated copy of the text otherwise.
    pub(crate) fn from_response(status: u16, body: &[u8], retry_after: Option<Duration>) -> Self {
        match serde_json::from_slice::<ApiError>(body) {
            Ok(mut api) => {
                api.detail = redact_secrets(&api.detail).into_owned();
                Error::Api {
                    status,
                    api: Some(Box::new(api)),
                    body: None,
                    retry_after,
                }
            }
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text = truncate_chars(text.trim(), 512);
                Error::Api {
                    status,
                    api: None,
                    body: (!text.is_empty()).then(|| redact_secrets(text).into_owned()),
                    retry_after,
                }
            }
        }
    }
}

impl Categorized for Error {
    fn category(&self) -> Category {
        Error::category(self)
    }
}

/// The category of an HTTP error status.
pub(crate) fn category_of_status(status: u16) -> Category {
    match status {
        401 => Category::Auth,
        403 => Category::Permission,
        404 => Category::NotFound,
        429 => Category::RateLimited,
        408 | 504 => Category::Timeout,
        500..=599 => Category::Server,
        _ => Category::Config,
    }
}

/// PRODUCT.md §6: retry connect errors, timeouts, 429, 500, 502, 503, 504; never other 4xx.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

fn api_message(status: u16, api: Option<&ApiError>, body: Option<&str>) -> String {
    let reason = match status {
        401 => "authentication failed",
        403 => "permission denied",
        404 => "not found",
        429 => "rate limited",
        504 => "server timed out",
        500..=599 => "server error",
        _ => "request rejected",
    };
    match (api, body) {
        (Some(api), _) => format!(
            "PostHog {reason} (HTTP {status}, {}): {}",
            api.code, api.detail
        ),
        (None, Some(body)) => format!("PostHog {reason} (HTTP {status}): {body}"),
        (None, None) => format!("PostHog {reason} (HTTP {status})"),
    }
}

fn truncate_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_documented_categories() {
        let cases = [
            (400, Category::Config),
            (401, Category::Auth),
            (402, Category::Config),
            (403, Category::Permission),
            (404, Category::NotFound),
            (429, Category::RateLimited),
            (500, Category::Server),
            (503, Category::Server),
            (504, Category::Timeout),
        ];
        for (status, category) in cases {
            let err = Error::from_response(status, b"", None);
            assert_eq!(err.category(), category, "status {status}");
        }
    }

    #[test]
    fn only_connection_failures_timeouts_and_5xx_count_against_the_server() {
        let unwell: Vec<u16> = (400..600)
            .filter(|s| Error::from_response(*s, b"", None).is_server_failure())
            .collect();
        assert_eq!(unwell, (500..600).collect::<Vec<u16>>());
        let timeout = Error::Timeout {
            endpoint: "GET /".into(),
            after: Duration::from_secs(1),
        };
        assert!(timeout.is_server_failure());
        let decode = Error::Decode {
            endpoint: "GET /".into(),
            message: "bad json".into(),
        };
        assert!(!decode.is_server_failure());
    }

    #[test]
    fn only_the_documented_statuses_are_retryable() {
        let retryable: Vec<u16> = (400..600).filter(|s| is_retryable_status(*s)).collect();
        assert_eq!(retryable, vec![429, 500, 502, 503, 504]);
    }

    #[test]
    fn posthog_error_document_is_parsed_and_shown() {
        let body = br#"{"type":"authentication_error","code":"invalid_personal_api_key","detail":"Invalid Personal API key.","attr":null}"#;
        let err = Error::from_response(401, body, None);
        let api = err.api_error().expect("parsed");
        assert_eq!(api.code, "invalid_personal_api_key");
        assert_eq!(
            err.to_string(),
            "PostHog authentication failed (HTTP 401, invalid_personal_api_key): Invalid Personal API key."
        );
    }

    #[test]
    fn echoed_secrets_in_error_bodies_are_redacted() {
        let err = Error::from_response(500, b"oops phx_abcdefghijklmnop leaked", None);
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("abcdefghijklmnop"), "{shown}");
        assert!(shown.contains("phx_***"), "{shown}");
    }

    #[test]
    fn long_non_json_bodies_are_truncated() {
        let body = "é".repeat(10_000);
        let Error::Api {
            body: Some(kept), ..
        } = Error::from_response(502, body.as_bytes(), None)
        else {
            panic!("expected a kept body");
        };
        assert_eq!(kept.chars().count(), 512);
    }
}
