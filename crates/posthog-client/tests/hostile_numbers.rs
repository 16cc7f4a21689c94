//! Numbers a server sends (delays, counts, offsets, limits, sizes, progress figures), driven
//! through the client against a local responder that writes raw HTTP: whatever they are, the
//! call ends promptly, without a panic, with a result or a clear error, and a value that
//! changes what the client should do (a `Retry-After` longer than we wait) is never dropped.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use posthog_client::{
    BreakerConfig, Category, Client, Error, HogQlQuery, ListParams, Page, RETRY_AFTER_CEILING,
    RateLimits, Resource, RetryPolicy,
};
use posthog_mock::{Fault, RouteClass};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// A raw HTTP responder: one request per connection, answered with bytes a script chooses.

/// What the client asked: method and path with its query string.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    target: String,
}

type Script = Arc<dyn Fn(&Req) -> Vec<u8> + Send + Sync>;

struct Responder {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    hits: Arc<AtomicUsize>,
}

impl Responder {
    fn start() -> Responder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().unwrap();
        let script: Arc<Mutex<Script>> =
            Arc::new(Mutex::new(Arc::new(|_: &Req| http(404, &[], "{}"))));
        let hits = Arc::new(AtomicUsize::new(0));
        let (s, h) = (script.clone(), hits.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (s, h) = (s.clone(), h.clone());
                std::thread::spawn(move || serve(stream, &s, &h));
            }
        });
        Responder { addr, script, hits }
    }

    /// Answers every request from now on with `script`, and resets the request count.
    fn answer(&self, script: impl Fn(&Req) -> Vec<u8> + Send + Sync + 'static) {
        *self.script.lock().unwrap() = Arc::new(script);
        self.hits.store(0, Ordering::SeqCst);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn client(&self) -> Client {
        Client::builder()
            .base_url(&format!("http://{}", self.addr))
            .unwrap()
            .personal_api_key("phx_TestPersonalKey123")
            .project_api_key("phc_TestProjectKey456")
            .project_id("1")
            .retry_policy(small_policy())
            .rate_limits(RateLimits::unlimited())
            .breaker(BreakerConfig {
                failure_threshold: u32::MAX,
                open_for: Duration::from_secs(1),
            })
            .request_timeout(Duration::from_secs(2))
            .max_response_bytes(MAX_RESPONSE_BYTES)
            .async_query_timeout(Duration::from_millis(600))
            .build()
            .unwrap()
    }
}

fn serve(stream: TcpStream, script: &Mutex<Script>, hits: &AtomicUsize) {
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let req = Req {
        method: parts.next().unwrap_or_default().to_owned(),
        target: parts.next().unwrap_or_default().to_owned(),
    };
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 {
            return;
        }
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let script = script.lock().unwrap().clone();
    let response = script(&req);
    let mut stream = reader.into_inner();
    let _ = stream.write_all(&response);
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// A response with the given headers; `Content-Length` is added unless one is given.
fn http(status: u16, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} Status\r\nConnection: close\r\n");
    let framed = headers.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
    });
    if !framed {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        out.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

const THROTTLED: &str = r#"{"type":"throttled_error","code":"throttled","detail":"Request was throttled. Expected available in 1180591620717411303424 seconds.","attr":null}"#;

const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

const MAX_ATTEMPTS: u32 = 3;

/// Retries quick enough that a proptest case waits milliseconds, not seconds.
fn small_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: MAX_ATTEMPTS,
        initial_delay: Duration::from_millis(1),
        factor: 2.0,
        max_delay: Duration::from_millis(5),
        total_budget: Duration::from_secs(2),
        max_retry_after: Duration::from_millis(100),
        // As many attempts after 429s as after failures, so one bound holds for both.
        max_rate_limit_waits: MAX_ATTEMPTS - 1,
        rate_limit_delay: Duration::from_millis(1),
        max_rate_limit_delay: Duration::from_millis(5),
        rate_limit_budget: Duration::from_secs(2),
    }
}

/// Every call of a case must end within this, retries and honoured waits included.
const CASE_BOUND: Duration = Duration::from_secs(4);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Runs `call` on `rt`, failing the case when it takes longer than [`CASE_BOUND`].
fn bounded<T>(
    rt: &tokio::runtime::Runtime,
    call: impl std::future::Future<Output = T>,
) -> Result<(T, Duration), TestCaseError> {
    let started = Instant::now();
    let out = rt
        .block_on(async { tokio::time::timeout(CASE_BOUND, call).await })
        .map_err(|_| TestCaseError::fail(format!("the call did not end within {CASE_BOUND:?}")))?;
    Ok((out, started.elapsed()))
}

fn sample_query() -> HogQlQuery {
    HogQlQuery::new("select 1 limit 1")
}

// ---------------------------------------------------------------------------------------------
// Number texts as a server might write them in JSON.

fn huge_digits() -> impl Strategy<Value = String> {
    "[1-9][0-9]{19,400}"
}

/// JSON number literals (and a few non-numbers) of every awkward kind.
fn json_number() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "1",
            "-0",
            "-1",
            "18446744073709551615",
            "18446744073709551616",
            "9223372036854775807",
            "-9223372036854775808",
            "-9223372036854775809",
            "1180591620717411303424",
            "1.5",
            "3.0",
            "-0.0",
            "1e308",
            "-1e308",
            "1e400",
            "-1e400",
            "1E+400",
            "5e-324",
            "1e-400",
            "null",
            "\"12\"",
            "true",
            "[]",
            "{}",
        ])
        .prop_map(str::to_owned),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
        huge_digits(),
        huge_digits().prop_map(|d| format!("-{d}")),
        "-?(0|[1-9][0-9]{0,29})\\.[0-9]{1,30}([eE][-+]?[0-9]{1,5})?",
    ]
}

/// Whether serde reads `text` as an `Option<u64>`.
fn is_u64_or_null(text: &str) -> bool {
    text == "null" || (text.bytes().all(|b| b.is_ascii_digit()) && text.parse::<u64>().is_ok())
}

fn assert_data_error_naming(err: &Error, field: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(err.category(), Category::Data, "{}", err);
    let shown = err.to_string();
    prop_assert!(
        shown.contains(field),
        "the error should name {}: {}",
        field,
        shown
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Retry-After.

/// Regression: `Retry-After: 2^70` seconds was dropped as unparseable, so the call retried on
/// backoff (and the extractor, which stops a run when `retry_after` exceeds an hour, kept
/// going for minutes). It must end the call at once, after one request, with the server's wait.
#[tokio::test]
async fn a_2_pow_70_second_retry_after_ends_the_call_at_once_with_the_servers_wait() {
    let mock = util::mock().await;
    let client = util::builder(&mock)
        .retry_policy(RetryPolicy::default())
        .build()
        .unwrap();
    mock.push_faults(
        RouteClass::Query,
        Fault::Status {
            status: 429,
            retry_after: Some("1180591620717411303424".into()),
            body: None,
        },
        10,
    );
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(2), client.query(&sample_query()))
        .await
        .expect("the call must not wait on a 2^70 s Retry-After, nor fall back to backoff")
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    match &err {
        Error::Api {
            status: 429,
            retry_after: Some(wait),
            ..
        } => {
            assert!(*wait > Duration::from_secs(3600), "{wait:?}");
            assert_eq!(*wait, RETRY_AFTER_CEILING);
        }
        other => panic!("expected a 429 carrying the server's wait, got {other:?}"),
    }
    assert_eq!(err.category(), Category::RateLimited);
    assert_eq!(
        mock.request_count(RouteClass::Query),
        1,
        "exactly one request"
    );
    assert_eq!(client.stats().retries, 0);
}

/// A saturated `Retry-After` is never slept on, even by a policy that honours any wait.
#[test]
fn a_saturated_retry_after_is_not_slept_on_even_when_the_policy_allows_any_wait() {
    let rt = runtime();
    let responder = Responder::start();
    let client = Client::builder()
        .base_url(&format!("http://{}", responder.addr))
        .unwrap()
        .personal_api_key("phx_TestPersonalKey123")
        .project_id("1")
        .rate_limits(RateLimits::unlimited())
        .retry_policy(RetryPolicy {
            max_retry_after: Duration::MAX,
            total_budget: Duration::MAX,
            ..RetryPolicy::default()
        })
        .build()
        .unwrap();
    for value in [
        "1180591620717411303424",
        "1e308",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ] {
        responder.answer(move |_| http(429, &[("Retry-After", value)], THROTTLED));
        let (result, took) = bounded(&rt, client.query(&sample_query())).unwrap();
        let err = result.unwrap_err();
        assert!(took < Duration::from_secs(1), "{value}: took {took:?}");
        assert!(
            matches!(err, Error::Api { status: 429, retry_after: Some(w), .. } if w == RETRY_AFTER_CEILING),
            "{value}: {err:?}"
        );
        assert_eq!(responder.hits(), 1, "{value}");
    }
}

/// `Retry-After` values of every shape on a 429 or 503.
fn retry_after_value() -> impl Strategy<Value = String> {
    let now = std::time::SystemTime::now();
    prop_oneof![
        3 => "[0-9]{1,80}",
        2 => huge_digits(),
        2 => prop::sample::select(vec![
            "0", "-0", "1", "-1", "0.05", "1.5", "1e308", "1.7976931348623157e308", "1e400",
            "-1e400", "inf", "-inf", "+Infinity", "NaN", "-NaN", "", "soon", "0x10", "1 0",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "Sun, 06 Nov 1900 08:49:37 GMT",
            "Thu, 01 Jan 1970 00:00:00 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ]).prop_map(str::to_owned),
        1 => "[-+]?[0-9]{0,6}(\\.[0-9]{0,6})?([eE][-+]?[0-9]{1,4})?",
        1 => (0u64..30).prop_map(move |s| httpdate::fmt_http_date(now + Duration::from_secs(s))),
        1 => "[ -~]{0,30}",
    ]
    .prop_flat_map(|v| {
        (Just(v), prop::sample::select(vec!["", " ", "\t", "  "]))
            .prop_map(|(v, pad)| format!("{pad}{v}{pad}"))
    })
}

/// What the client should make of a `Retry-After` value: `Some(true)` "a wait longer than
/// the policy's 100 ms" (the call must end after one request, carrying it), `Some(false)` "a
/// wait we honour", `None` for values that are not a delay (or shapes left to the parser's own
/// tests).
fn expected_long(value: &str) -> Option<bool> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // Any digits but zeros: at least a second.
        return Some(!v.trim_start_matches('0').is_empty());
    }
    match v {
        "1e308" | "1.7976931348623157e308" | "1e400" | "inf" | "+Infinity" | "1.5" => Some(true),
        "Fri, 31 Dec 9999 23:59:59 GMT" => Some(true),
        "0.05" | "-0" => Some(false),
        _ => None,
    }
}

#[test]
fn any_retry_after_ends_promptly_and_a_long_one_is_never_dropped() {
    let rt = runtime();
    let responder = Responder::start();
    let client = responder.client();
    runner(160)
        .run(
            &(retry_after_value(), prop::sample::select(vec![429u16, 503])),
            |(value, status)| {
                if reqwest::header::HeaderValue::from_str(&value).is_err() {
                    return Ok(()); // not sendable in a header
                }
                let header = value.clone();
                responder
                    .answer(move |_| http(status, &[("Retry-After", header.as_str())], THROTTLED));
                let (result, _) = bounded(&rt, client.query(&sample_query()))?;
                let err = result.expect_err("the server only ever refuses");
                let Error::Api {
                    status: got,
                    retry_after,
                    ..
                } = &err
                else {
                    return Err(TestCaseError::fail(format!("{value:?}: {err:?}")));
                };
                prop_assert_eq!(*got, status);
                let hits = responder.hits();
                prop_assert!(
                    (1..=MAX_ATTEMPTS as usize).contains(&hits),
                    "{} requests",
                    hits
                );
                if let Some(wait) = retry_after {
                    prop_assert!(*wait <= RETRY_AFTER_CEILING);
                    if *wait > small_policy().max_retry_after {
                        prop_assert_eq!(
                            hits,
                            1,
                            "{:?}: a wait we do not honour ends the call",
                            value
                        );
                    }
                }
                match expected_long(&value) {
                    Some(true) => {
                        prop_assert!(
                            retry_after.is_some_and(|w| w > small_policy().max_retry_after),
                            "{:?} read as {:?}",
                            value,
                            retry_after
                        );
                        prop_assert_eq!(hits, 1);
                    }
                    Some(false) => prop_assert!(retry_after.is_some(), "{:?} dropped", value),
                    None => {}
                }
                let v = value.trim();
                let digits = v.trim_start_matches('0');
                if v.bytes().all(|b| b.is_ascii_digit()) && digits.len() >= 10 {
                    // 10 digits and more: at least 31 years, so over an hour.
                    prop_assert!(retry_after.is_some_and(|w| w > Duration::from_secs(3600)));
                }
                Ok(())
            },
        )
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// REST pages: count, and the offset and limit of `next` links.

fn offset_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "1",
            "2",
            "00",
            "-1",
            "-0",
            "1e3",
            "1.5",
            "",
            "abc",
            "%31",
            "18446744073709551615",
            "18446744073709551616",
            "+5",
            " 5",
        ])
        .prop_map(str::to_owned),
        "[0-9]{1,30}",
        huge_digits(),
    ]
}

#[test]
fn rest_counts_offsets_and_limits_give_a_page_or_a_clear_error() {
    let rt = runtime();
    let responder = Responder::start();
    let client = responder.client();
    runner(160)
        .run(
            &(
                json_number(),
                prop::option::of(offset_text()),
                prop::option::of(json_number()),
            ),
            |(count, offset, limit)| {
                let next = match &offset {
                    Some(offset) => {
                        let limit = limit.clone().unwrap_or_else(|| "2".into());
                        let query = url::form_urlencoded::Serializer::new(String::new())
                            .append_pair("limit", &limit)
                            .append_pair("offset", offset)
                            .finish();
                        format!("\"/api/projects/1/cohorts/?{query}\"")
                    }
                    None => "null".into(),
                };
                let first = format!(
                    r#"{{"count": {count}, "next": {next}, "previous": null, "results": [{{"id": 1}}]}}"#
                );
                responder.answer(move |req| {
                    if req.target.contains("offset=") {
                        http(200, &[], r#"{"count": 2, "next": null, "results": [{"id": 2}]}"#)
                    } else {
                        http(200, &[], &first)
                    }
                });
                let pages = client.list_pages::<Value>(Resource::Cohorts, ListParams::default());
                let (result, _) = bounded(&rt, pages.try_collect::<Vec<Page<Value>>>())?;
                let count_ok = is_u64_or_null(&count);
                let offset_ok = offset.as_deref().is_none_or(|o| {
                    !o.is_empty()
                        && o.bytes().all(|b| b.is_ascii_digit())
                        && !o.trim_start_matches('0').is_empty()
                });
                match result {
                    Ok(pages) => {
                        prop_assert!(count_ok, "count {} accepted", count);
                        prop_assert!(offset_ok, "offset {:?} followed", offset);
                        if count != "null" {
                            prop_assert_eq!(pages[0].count, count.parse::<u64>().ok());
                        }
                        prop_assert_eq!(pages.len(), 1 + usize::from(offset.is_some()));
                        prop_assert_eq!(responder.hits(), pages.len());
                    }
                    Err(err) if !count_ok => {
                        assert_data_error_naming(&err, "count")?;
                        prop_assert_eq!(responder.hits(), 1);
                    }
                    Err(err) => {
                        prop_assert!(!offset_ok, "{}", err);
                        assert_data_error_naming(&err, "offset")?;
                        prop_assert_eq!(responder.hits(), 1, "a bad link is not followed");
                    }
                }
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn next_links_that_go_back_or_cycle_end_the_stream_with_an_error() {
    let rt = runtime();
    let responder = Responder::start();
    let client = responder.client();
    // offset 4 → offset 2: backwards.
    responder.answer(|req| {
        let next = if req.target.contains("offset=4") {
            "offset=2"
        } else {
            "offset=4"
        };
        http(
            200,
            &[],
            &format!(r#"{{"next": "/api/projects/1/cohorts/?{next}", "results": [{{"id": 1}}]}}"#),
        )
    });
    let pages = client.list_pages::<Value>(Resource::Cohorts, ListParams::default());
    let (result, _) = bounded(&rt, pages.try_collect::<Vec<_>>()).unwrap();
    let err = result.unwrap_err();
    assert!(
        err.to_string()
            .contains("does not advance: offset 2 after offset 4"),
        "{err}"
    );
    assert_eq!(responder.hits(), 2);

    // Cursor links A → B → A.
    responder.answer(|req| {
        let next = if req.target.contains("cursor=a") {
            "cursor=b"
        } else {
            "cursor=a"
        };
        http(
            200,
            &[],
            &format!(r#"{{"next": "/api/projects/1/cohorts/?{next}", "results": [{{"id": 1}}]}}"#),
        )
    });
    let pages = client.list_pages::<Value>(Resource::Cohorts, ListParams::default());
    let (result, _) = bounded(&rt, pages.try_collect::<Vec<_>>()).unwrap();
    let err = result.unwrap_err();
    assert_eq!(err.category(), Category::Data);
    assert!(err.to_string().contains("already read"), "{err}");
    assert_eq!(
        responder.hits(),
        3,
        "first page, a, b; then a again is refused"
    );
}

// ---------------------------------------------------------------------------------------------
// Content-Length and body framing.

fn content_length() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "1",
            "-1",
            "",
            "abc",
            "1e3",
            "0x10",
            "+5",
            "18446744073709551615",
            "18446744073709551616",
            "1048576",
            "1048577",
            "99999999999999999999999999999",
        ])
        .prop_map(str::to_owned),
        "[0-9]{1,25}",
        huge_digits(),
        Just("EXACT".to_owned()),
        Just("EXACT+5".to_owned()),
        Just("TWICE".to_owned()),
        Just("CHUNKED-HUGE".to_owned()),
    ]
}

#[test]
fn any_content_length_gives_a_result_or_a_clear_error_promptly() {
    let rt = runtime();
    let responder = Responder::start();
    let client = responder.client();
    runner(160)
        .run(
            &(
                content_length(),
                prop::sample::select(vec![200u16, 429, 500, 404]),
            ),
            |(length, status)| {
                let body = if status == 200 {
                    r#"{"id": 1, "name": "p"}"#
                } else {
                    THROTTLED
                };
                let exact = body.len().to_string();
                let plus = (body.len() + 5).to_string();
                let (headers, payload): (Vec<(String, String)>, String) = match length.as_str() {
                    "EXACT" => (vec![("Content-Length".into(), exact)], body.into()),
                    "EXACT+5" => (vec![("Content-Length".into(), plus)], body.into()),
                    "TWICE" => (
                        vec![
                            ("Content-Length".into(), exact),
                            ("Content-Length".into(), "3".into()),
                        ],
                        body.into(),
                    ),
                    "CHUNKED-HUGE" => (
                        vec![("Transfer-Encoding".into(), "chunked".into())],
                        format!("FFFFFFFFFFFFFFFFFFFFFFFF\r\n{body}"),
                    ),
                    other => (vec![("Content-Length".into(), other.into())], body.into()),
                };
                let mut headers = headers;
                headers.push(("Retry-After".into(), "7".into()));
                responder.answer(move |_| {
                    let h: Vec<(&str, &str)> = headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    http(status, &h, &payload)
                });
                let (result, _) = bounded(&rt, client.project())?;
                let hits = responder.hits();
                prop_assert!(
                    (1..=MAX_ATTEMPTS as usize).contains(&hits),
                    "{} requests",
                    hits
                );
                let declared = length
                    .parse::<u64>()
                    .ok()
                    .filter(|_| length.bytes().all(|b| b.is_ascii_digit()));
                // Heads hyper reads: one well-formed length below u64::MAX - 1 (hyper keeps the
                // top two values as markers and calls the head "too large"). Any other is a
                // network error, with no status to keep.
                let head_ok =
                    length.starts_with("EXACT") || declared.is_some_and(|d| d < u64::MAX - 1);
                match result {
                    Ok(project) => {
                        prop_assert_eq!(status, 200);
                        prop_assert_eq!(project.id, 1);
                    }
                    Err(err) => {
                        let shown = err.to_string();
                        prop_assert!(!shown.is_empty());
                        prop_assert!(
                            matches!(
                                err.category(),
                                Category::Data
                                    | Category::Network
                                    | Category::RateLimited
                                    | Category::Server
                                    | Category::NotFound
                            ),
                            "{:?}",
                            err
                        );
                        // A length over the limit is refused before the body is read.
                        if status == 200
                            && head_ok
                            && declared.is_some_and(|d| d > MAX_RESPONSE_BYTES as u64)
                        {
                            prop_assert!(shown.contains("Content-Length"), "{}", shown);
                            prop_assert_eq!(hits, 1);
                        }
                        // An error status with a well-formed header keeps its status and
                        // Retry-After, whatever the body does.
                        if status != 200 && head_ok {
                            prop_assert_eq!(err.status(), Some(status), "{:?}", err);
                            if let Error::Api { retry_after, .. } = &err {
                                prop_assert_eq!(*retry_after, Some(Duration::from_secs(7)));
                            }
                            if status == 429 || status == 500 {
                                prop_assert_eq!(hits, 1, "a 7 s wait is longer than we wait");
                            }
                        }
                    }
                }
                Ok(())
            },
        )
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Query responses: `hasMore`, `limit`, `offset`, and the numbers of an async query's status.

fn bool_text() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["true", "false", "null", "0", "1", "1e400", "\"true\""])
        .prop_map(str::to_owned)
}

#[test]
fn query_numbers_and_async_status_numbers_never_break_a_query_they_do_not_concern() {
    let rt = runtime();
    let responder = Responder::start();
    let client = responder.client();
    let status_numbers = prop::collection::vec(json_number(), 9);
    runner(96)
        .run(
            &(
                json_number(),
                bool_text(),
                json_number(),
                status_numbers,
                prop::sample::select(vec!["blocking", "async-done", "async-done", "async-poll"]),
            ),
            |(limit, has_more, offset, n, mode)| {
                let result = format!(
                    r#"{{"columns": ["a"], "types": [["a", "Int64"]], "results": [[1]], "hasMore": {has_more}, "limit": {limit}, "offset": {offset}}}"#
                );
                let blocking = result.clone();
                let status = move |complete: bool| {
                    format!(
                        r#"{{"query_status": {{"id": "q-1", "team_id": {}, "complete": {complete}, "error": false, "error_message": null, "query_async": true,
                        "start_time": {}, "pickup_time": {}, "end_time": null, "expiration_time": {},
                        "query_progress": {{"bytes_read": {}, "rows_read": {}, "estimated_rows_total": {}, "time_elapsed": {}, "active_cpu_time": {}}},
                        "results": {}}}}}"#,
                        n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7], n[8],
                        if complete { result.as_str() } else { "null" }
                    )
                };
                responder.answer(move |req| match (req.method.as_str(), mode) {
                    ("POST", "blocking") => http(200, &[], &blocking),
                    ("POST", "async-done") => http(202, &[], &status(true)),
                    ("POST", _) => http(202, &[], &status(false)),
                    ("GET", _) => http(200, &[], &status(true)),
                    _ => http(204, &[], ""),
                });
                let (outcome, _) = bounded(&rt, client.query(&sample_query().asynchronous()))?;
                let limit_ok = is_u64_or_null(&limit);
                let has_more_ok = matches!(has_more.as_str(), "true" | "false" | "null");
                match outcome {
                    Ok(r) => {
                        prop_assert!(limit_ok && has_more_ok, "limit {} hasMore {}", limit, has_more);
                        prop_assert_eq!(&r.results, &vec![vec![Value::from(1)]]);
                        if limit != "null" {
                            prop_assert_eq!(r.limit, limit.parse::<u64>().ok());
                        }
                    }
                    Err(err) => {
                        // Only the fields the client reads may refuse a result, and by name.
                        prop_assert!(!(limit_ok && has_more_ok), "{:?}", err);
                        let field = if has_more_ok { "limit" } else { "hasMore" };
                        if limit_ok || !has_more_ok {
                            assert_data_error_naming(&err, field)?;
                        } else {
                            prop_assert_eq!(err.category(), Category::Data);
                        }
                    }
                }
                let expected_hits = if mode == "async-poll" { 2 } else { 1 };
                prop_assert_eq!(responder.hits(), expected_hits);
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn a_queued_query_id_that_leaves_its_path_is_refused() {
    let rt = runtime();
    let responder = Responder::start();
    let client = responder.client();
    for id in ["../cohorts/5", "..", "a?b=1", "a/b", "", "a#b", "%2e%2e"] {
        let body = format!(
            r#"{{"query_status": {{"id": {}, "complete": false}}}}"#,
            Value::from(id)
        );
        responder.answer(move |_| http(202, &[], &body));
        let (result, _) = bounded(&rt, client.query(&sample_query().asynchronous())).unwrap();
        let err = result.unwrap_err();
        assert_eq!(err.category(), Category::Data, "{id}: {err}");
        assert!(err.to_string().contains("query_status.id"), "{id}: {err}");
        assert_eq!(responder.hits(), 1, "{id}: nothing polled or deleted");
    }
}
