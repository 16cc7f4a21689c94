//! The client's one error type, and the categories callers map to exit codes and retry decisions.

use std::fmt;
use std::time::Duration;

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

/// What kind of failure an [`Error`] is; stable names for logs, exit codes and retry decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCategory {
    /// The key is missing, malformed or invalid (401).
    Auth,
    /// The key is valid but may not do this (403, missing scope).
    Permission,
    /// The project or object does not exist (404).
    NotFound,
    /// PostHog throttled us (429) or the client-side budget ran out.
    RateLimited,
    /// The connection failed.
    Network,
    /// The request or its retry budget timed out; includes PostHog's 504 query timeout.
    Timeout,
    /// PostHog failed (5xx other than 504).
    Server,
    /// PostHog returned a body we could not understand.
    Data,
    /// The client or request was configured wrongly, or PostHog rejected the request as invalid
    /// (400 and other 4xx): retrying the same request cannot succeed.
    Config,
    /// The circuit breaker is open.
    CircuitOpen,
}

impl ErrorCategory {
    /// The category's stable snake_case name, as used in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCategory::Auth => "auth",
            ErrorCategory::Permission => "permission",
            ErrorCategory::NotFound => "not_found",
            ErrorCategory::RateLimited => "rate_limited",
            ErrorCategory::Network => "network",
            ErrorCategory::Timeout => "timeout",
            ErrorCategory::Server => "server",
            ErrorCategory::Data => "data",
            ErrorCategory::Config => "config",
            ErrorCategory::CircuitOpen => "circuit_open",
        }
    }
}

impl fmt::Display for ErrorCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// The failure's category.
    ///
    /// ```
    /// use posthog_client::{Error, ErrorCategory};
    /// let err = Error::Api { status: 403, api: None, body: None, retry_after: None };
    /// assert_eq!(err.category(), ErrorCategory::Permission);
    /// ```
    pub fn category(&self) -> ErrorCategory {
        match self {
            Error::Config { .. } | Error::InvalidRequest { .. } => ErrorCategory::Config,
            Error::Api { status, .. } => category_of_status(*status),
            Error::Network { .. } => ErrorCategory::Network,
            Error::Timeout { .. } => ErrorCategory::Timeout,
            Error::Decode { .. } => ErrorCategory::Data,
            Error::CircuitOpen { .. } => ErrorCategory::CircuitOpen,
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

/// The category of an HTTP error status.
pub(crate) fn category_of_status(status: u16) -> ErrorCategory {
    match status {
        401 => ErrorCategory::Auth,
        403 => ErrorCategory::Permission,
        404 => ErrorCategory::NotFound,
        429 => ErrorCategory::RateLimited,
        408 | 504 => ErrorCategory::Timeout,
        500..=599 => ErrorCategory::Server,
        _ => ErrorCategory::Config,
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
            (400, ErrorCategory::Config),
            (401, ErrorCategory::Auth),
            (402, ErrorCategory::Config),
            (403, ErrorCategory::Permission),
            (404, ErrorCategory::NotFound),
            (429, ErrorCategory::RateLimited),
            (500, ErrorCategory::Server),
            (503, ErrorCategory::Server),
            (504, ErrorCategory::Timeout),
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
