//! Responses the handlers produce, PostHog's error shape, and URL helpers.

use bytes::Bytes;
use serde_json::{Value, json};

/// A finished answer, before gzip and fault shaping.
#[derive(Debug, Clone)]
pub(crate) struct ApiResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    /// `content-type: application/json`.
    pub json: bool,
}

impl ApiResponse {
    /// A JSON answer.
    pub(crate) fn json(status: u16, value: &Value) -> Self {
        // Serialising a `Value` cannot fail.
        let body = serde_json::to_vec(value).unwrap_or_default();
        ApiResponse {
            status,
            headers: Vec::new(),
            body: Bytes::from(body),
            json: true,
        }
    }

    /// A raw JSON-typed body (used for scripted bodies and malformed JSON).
    pub(crate) fn raw_json(status: u16, body: impl Into<Bytes>) -> Self {
        ApiResponse {
            status,
            headers: Vec::new(),
            body: body.into(),
            json: true,
        }
    }

    /// An empty answer (204).
    pub(crate) fn empty(status: u16) -> Self {
        ApiResponse {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            json: false,
        }
    }

    /// PostHog's (drf-exceptions-hog) error shape.
    pub(crate) fn error(status: u16, kind: &str, code: &str, detail: impl Into<String>) -> Self {
        Self::error_attr(status, kind, code, detail, None)
    }

    /// PostHog's error shape with an `attr`.
    pub(crate) fn error_attr(
        status: u16,
        kind: &str,
        code: &str,
        detail: impl Into<String>,
        attr: Option<&str>,
    ) -> Self {
        ApiResponse::json(
            status,
            &json!({"type": kind, "code": code, "detail": detail.into(), "attr": attr}),
        )
    }

    /// 400 `validation_error` / `invalid_input`: HogQL and request-shape errors.
    pub(crate) fn invalid_input(detail: impl Into<String>) -> Self {
        Self::error(400, "validation_error", "invalid_input", detail)
    }

    /// 404 `not_found`.
    pub(crate) fn not_found() -> Self {
        Self::error(404, "invalid_request", "not_found", "Not found.")
    }

    /// 405 `method_not_allowed`.
    pub(crate) fn method_not_allowed(method: &str) -> Self {
        Self::error(
            405,
            "invalid_request",
            "method_not_allowed",
            format!("Method \"{method}\" not allowed."),
        )
    }

    /// 429 throttled, with `Retry-After` when a wait is known.
    pub(crate) fn throttled(retry_after: Option<&str>) -> Self {
        let detail = match retry_after {
            Some(n) => format!("Request was throttled. Expected available in {n} seconds."),
            None => "Request was throttled.".to_owned(),
        };
        let mut r = Self::error(429, "throttled_error", "throttled", detail);
        if let Some(n) = retry_after {
            r.headers.push(("retry-after", n.to_owned()));
        }
        r
    }

    /// 429 for a query that waited `waited` for one of the project's `limit` concurrency slots
    /// in vain: PostHog raises `Throttled` without a wait here, so the body is the throttled
    /// one and there is **no** `Retry-After` (posthog-api.md §1 "429").
    pub(crate) fn concurrency_limited(limit: usize, waited: std::time::Duration) -> Self {
        Self::error(
            429,
            "throttled_error",
            "throttled",
            format!(
                "Request was throttled. Exceeded the project's concurrency limit of {limit} \
                 queries running at once; waited {waited:?} in the queue."
            ),
        )
    }
}

/// The body PostHog sends for an error status (used by status faults without a body).
pub(crate) fn default_error(status: u16, retry_after: Option<&str>) -> ApiResponse {
    match status {
        429 => ApiResponse::throttled(retry_after),
        400 => ApiResponse::invalid_input("Bad request."),
        401 => ApiResponse::error(
            401,
            "authentication_error",
            "not_authenticated",
            "Authentication credentials were not provided.",
        ),
        402 => ApiResponse::error(
            402,
            "quota_limit_exceeded",
            "payment_required",
            "Your organization has exceeded its query quota.",
        ),
        403 => ApiResponse::error(
            403,
            "authentication_error",
            "permission_denied",
            "You do not have permission to perform this action.",
        ),
        404 => ApiResponse::not_found(),
        502 => ApiResponse::error(502, "server_error", "bad_gateway", "Bad gateway."),
        503 => ApiResponse::error(
            503,
            "server_error",
            "service_unavailable",
            "Queries are a little too busy right now. Please try again later.",
        ),
        504 => ApiResponse::error(
            504,
            "server_error",
            "timeout",
            "Query timed out. Try a smaller time range or fewer rows.",
        ),
        s if s >= 500 => ApiResponse::error(s, "server_error", "error", "A server error occurred."),
        s => ApiResponse::error(s, "invalid_request", "error", format!("Mock fault {s}.")),
    }
}

/// Decodes `application/x-www-form-urlencoded` pairs of a query string.
pub(crate) fn parse_query_string(q: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = q else { return Vec::new() };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// The first value of `name` in decoded query pairs.
pub(crate) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a query component (unreserved characters kept).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An absolute URL for `path` with `params` (sorted by key, as DRF's `replace_query_param`
/// writes them).
pub(crate) fn absolute_url(host: &str, path: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let query: Vec<String> = sorted
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect();
    if query.is_empty() {
        format!("http://{host}{path}")
    } else {
        format!("http://{host}{path}?{}", query.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode_and_urls_sort_params() {
        let p = parse_query_string(Some("limit=5&search=a%20b+c&type=event&bad=%zz"));
        assert_eq!(param(&p, "limit"), Some("5"));
        assert_eq!(param(&p, "search"), Some("a b c"));
        assert_eq!(param(&p, "bad"), Some("%zz"));
        let url = absolute_url(
            "h:1",
            "/x/",
            &[("offset".into(), "5".into()), ("limit".into(), "5".into())],
        );
        assert_eq!(url, "http://h:1/x/?limit=5&offset=5");
    }
}
