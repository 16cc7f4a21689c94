//! `Client::query_streamed`: a query's 2xx body handed to a `BodySink` as it arrives, on the
//! same send path as every request (breaker, budgets, concurrency cap, retries), observed at
//! the mock and, for byte-exact wire behaviour (chunked, gzip, a cut or stalled body), at a
//! raw TCP server scripted per connection.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use posthog_client::{
    BodySink, BreakerConfig, Category, Client, ClientBuilder, Error, HogQlQuery, RateLimits,
    RetryPolicy,
};
use posthog_mock::{Fault, RouteClass};
use serde_json::Value;
use util::{PERSONAL_KEY, builder, client, fast_retry, mock};

/// What a sink saw, in order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Restart,
    Chunk(usize),
}

/// A sink that records every call and keeps the body delivered since its last restart.
#[derive(Debug, Default)]
struct Recorder {
    seen: Vec<Seen>,
    body: Vec<u8>,
    /// Refuse the chunk after this many were accepted (in all attempts).
    stop_after: Option<usize>,
    /// Sleep this long in every chunk, counting the chunks in progress in the gauge.
    slow: Option<(Duration, Arc<Gauge>)>,
}

/// How many sinks are inside `chunk` at once, and the most ever seen.
#[derive(Debug, Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Recorder {
    fn chunks(&self) -> usize {
        self.seen
            .iter()
            .filter(|s| matches!(s, Seen::Chunk(_)))
            .count()
    }

    fn restarts(&self) -> usize {
        self.seen.iter().filter(|s| **s == Seen::Restart).count()
    }

    /// Bytes delivered by the attempt before the last restart.
    fn before_last_restart(&self) -> usize {
        let last = self.seen.iter().rposition(|s| *s == Seen::Restart).unwrap();
        self.seen[..last]
            .iter()
            .rev()
            .take_while(|s| **s != Seen::Restart)
            .map(|s| match s {
                Seen::Chunk(n) => *n,
                Seen::Restart => 0,
            })
            .sum()
    }
}

impl BodySink for Recorder {
    async fn restart(&mut self) {
        self.seen.push(Seen::Restart);
        self.body.clear();
    }

    async fn chunk(&mut self, bytes: Bytes) -> Result<(), ()> {
        if self.stop_after.is_some_and(|n| self.chunks() >= n) {
            return Err(());
        }
        self.seen.push(Seen::Chunk(bytes.len()));
        self.body.extend_from_slice(&bytes);
        if let Some((pause, gauge)) = &self.slow {
            let now = gauge.now.fetch_add(1, Ordering::SeqCst) + 1;
            gauge.max.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(*pause).await;
            gauge.now.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

fn events_query() -> HogQlQuery {
    HogQlQuery::new("select * from events order by timestamp, uuid limit 300")
}

/// A query response body without the fields that change with the time it was answered.
fn timeless(body: &[u8]) -> Value {
    let mut value: Value = serde_json::from_slice(body).expect("a JSON body");
    let object = value.as_object_mut().unwrap();
    object.remove("last_refresh");
    object.remove("next_allowed_client_refresh");
    value
}

#[tokio::test]
async fn the_chunks_concatenated_are_query_raws_body() {
    let mock = mock().await;
    let client = client(&mock);
    let raw = client.query_raw(&events_query()).await.unwrap();
    let mut sink = Recorder::default();
    let streamed = client
        .query_streamed(&events_query(), &mut sink)
        .await
        .unwrap();

    assert_eq!(timeless(&sink.body), timeless(&raw.body));
    assert_eq!(
        timeless(&sink.body)["results"].as_array().unwrap().len(),
        300
    );
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.body_bytes, sink.body.len() as u64);
    assert_eq!(streamed.client_query_id.len(), 36, "a UUID");
    assert_ne!(
        streamed.client_query_id, raw.client_query_id,
        "fresh per query"
    );
    // One restart, before the first chunk; the body came in several chunks, not whole.
    assert_eq!(sink.seen[0], Seen::Restart);
    assert_eq!(sink.restarts(), 1);
    assert!(sink.chunks() > 1, "{} chunks", sink.chunks());
}

#[tokio::test]
async fn a_body_cut_mid_stream_is_retried_and_the_sink_restarts() {
    let mock = mock().await;
    let client = client(&mock);
    let expected = timeless(&client.query_raw(&events_query()).await.unwrap().body);
    mock.reset_counters();
    let before = client.stats();
    mock.push_fault(RouteClass::Query, Fault::TruncatedBody);
    let mut sink = Recorder::default();
    let streamed = client
        .query_streamed(&events_query(), &mut sink)
        .await
        .expect("retried");

    assert_eq!(mock.request_count(RouteClass::Query), 2);
    assert_eq!(client.stats().retries - before.retries, 1);
    assert_eq!(client.stats().requests - before.requests, 2);
    assert_eq!(sink.restarts(), 2, "{:?}", sink.seen);
    assert_eq!(sink.seen[0], Seen::Restart);
    assert_eq!(timeless(&sink.body), expected);
    assert_eq!(streamed.body_bytes, sink.body.len() as u64);
}

#[tokio::test]
async fn a_sink_that_stops_ends_the_call_after_one_request() {
    let mock = mock().await;
    let client = client(&mock);
    let before = client.stats();
    let mut sink = Recorder {
        stop_after: Some(1),
        ..Recorder::default()
    };
    let err = client
        .query_streamed(&events_query(), &mut sink)
        .await
        .unwrap_err();

    assert!(
        matches!(err, Error::ConsumerStopped { delivered, .. } if delivered > 0),
        "{err:?}"
    );
    assert_eq!(err.category(), Category::Data);
    assert!(!err.is_retryable());
    let first = match sink.seen[1] {
        Seen::Chunk(n) => n,
        Seen::Restart => panic!("{:?}", sink.seen),
    };
    assert!(
        err.to_string()
            .contains(&format!("the body's consumer stopped after {first} bytes")),
        "{err}"
    );
    assert_eq!(sink.seen.len(), 2, "restart, one chunk: {:?}", sink.seen);
    assert_eq!(mock.request_count(RouteClass::Query), 1);
    assert_eq!(client.stats().requests - before.requests, 1);
    assert_eq!(client.stats().retries, before.retries);
}

#[tokio::test]
async fn an_asynchronous_query_is_refused_before_anything_is_sent() {
    let mock = mock().await;
    let client = client(&mock);
    let mut sink = Recorder::default();
    let err = client
        .query_streamed(&events_query().asynchronous(), &mut sink)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
    assert!(err.to_string().contains("blocking queries only"), "{err}");
    assert_eq!(mock.total_requests(), 0);
    assert!(sink.seen.is_empty());
}

#[tokio::test]
async fn error_statuses_are_classified_as_before_and_never_reach_the_sink() {
    let mock = mock().await;
    let client = client(&mock);

    mock.push_fault(RouteClass::Query, Fault::status(400));
    let mut sink = Recorder::default();
    let err = client
        .query_streamed(&events_query(), &mut sink)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(
        err.api_error().is_some(),
        "PostHog's error document: {err:?}"
    );
    assert!(sink.seen.is_empty(), "{:?}", sink.seen);

    // A 503 is retried; its body is not streamed, so the sink starts once.
    mock.reset_counters();
    mock.push_fault(RouteClass::Query, Fault::status(503));
    let before = client.stats();
    let mut sink = Recorder::default();
    client
        .query_streamed(&events_query(), &mut sink)
        .await
        .expect("retried");
    assert_eq!(mock.request_count(RouteClass::Query), 2);
    assert_eq!(client.stats().waits.backoff - before.waits.backoff, 1);
    assert_eq!(sink.restarts(), 1, "{:?}", sink.seen);
    assert_eq!(sink.seen[0], Seen::Restart);
}

#[tokio::test]
async fn the_circuit_breaker_and_stats_are_shared_with_every_request() {
    let mock = mock().await;
    let client = builder(&mock)
        .retry_policy(RetryPolicy::none())
        .breaker(BreakerConfig {
            failure_threshold: 1,
            open_for: Duration::from_secs(60),
        })
        .build()
        .unwrap();
    mock.push_fault(RouteClass::Query, Fault::status(503));
    let mut sink = Recorder::default();
    let err = client
        .query_streamed(&events_query(), &mut sink)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(client.stats().breaker_trips, 1);

    // Open: a streamed query fails fast like any other call, and so does a plain one.
    let err = client
        .query_streamed(&events_query(), &mut sink)
        .await
        .unwrap_err();
    assert_eq!(err.category(), Category::CircuitOpen, "{err}");
    let err = client.query_raw(&events_query()).await.unwrap_err();
    assert_eq!(err.category(), Category::CircuitOpen, "{err}");
    assert_eq!(mock.request_count(RouteClass::Query), 1);
    let stats = client.stats();
    assert_eq!((stats.requests, stats.fast_failures), (1, 2));
    assert!(sink.seen.is_empty(), "{:?}", sink.seen);
}

/// PostHog's limit of 3 concurrent queries covers the whole body: a slot is held while the
/// sink takes it, so no more than three sinks are ever fed at once.
#[tokio::test]
async fn the_query_concurrency_cap_holds_while_bodies_stream() {
    let mock = mock().await;
    let client = builder(&mock)
        .rate_limits(RateLimits {
            max_concurrent_queries: 3,
            ..RateLimits::unlimited()
        })
        .build()
        .unwrap();
    let gauge = Arc::new(Gauge::default());
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let client = client.clone();
            let gauge = gauge.clone();
            // `tokio::spawn` also proves the call's future is `Send`.
            tokio::spawn(async move {
                let mut sink = Recorder {
                    slow: Some((Duration::from_millis(100), gauge)),
                    ..Recorder::default()
                };
                let query = HogQlQuery::new("select uuid from events limit 5");
                client.query_streamed(&query, &mut sink).await.map(|_| sink)
            })
        })
        .collect();
    for call in calls {
        let sink = call.await.unwrap().expect("query");
        assert_eq!(timeless(&sink.body)["results"].as_array().unwrap().len(), 5);
    }
    assert_eq!(gauge.max.load(Ordering::SeqCst), 3);
    assert_eq!(client.stats().requests, 6);
}

// ---- a raw server, for what the mock cannot script byte by byte ----

/// What the raw server does with one connection, after reading its request.
#[derive(Debug, Clone)]
enum Script {
    /// `status` with `body` whole, with its `Content-Length`.
    Whole { status: u16, body: Vec<u8> },
    /// 200 with chunked transfer encoding, `body` written in pieces of 4 KiB; `gzip` labels
    /// it `Content-Encoding: gzip` (the body is then already compressed).
    Chunked { body: Vec<u8>, gzip: bool },
    /// 200 with the full `Content-Length`, then only `sent` bytes of the body, then silence
    /// for `stall` and the connection closed.
    Cut {
        body: Vec<u8>,
        sent: usize,
        stall: Duration,
    },
}

/// A one-request-per-connection HTTP/1.1 server answering connection `n` with `scripts[n]`.
struct RawServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
}

impl RawServer {
    fn start(scripts: Vec<Script>) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (connections.clone(), paths.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let n = count.fetch_add(1, Ordering::SeqCst);
                let script = scripts.get(n).cloned();
                let seen = seen.clone();
                std::thread::spawn(move || serve(stream, script, &seen));
            }
        });
        RawServer {
            addr,
            connections,
            paths,
        }
    }

    fn client(&self) -> ClientBuilder {
        Client::builder()
            .base_url(&format!("http://{}", self.addr))
            .unwrap()
            .personal_api_key(PERSONAL_KEY)
            .project_id("4242")
            .retry_policy(fast_retry())
            .rate_limits(RateLimits::unlimited())
            .request_timeout(Duration::from_secs(10))
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn serve(stream: TcpStream, script: Option<Script>, paths: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    paths
        .lock()
        .unwrap()
        .push(line.split(' ').take(2).collect::<Vec<_>>().join(" "));
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut request_body = vec![0; length];
    reader.read_exact(&mut request_body).unwrap();

    let mut out = stream;
    let head = |status: u16, extra: &str| {
        format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\nconnection: close\r\n\
             {extra}\r\n"
        )
    };
    // A write the client no longer reads (it gave up) may fail: that is not the test's concern.
    let _ = match script {
        None => out.write_all(head(500, "content-length: 0\r\n").as_bytes()),
        Some(Script::Whole { status, body }) => {
            let head = head(status, &format!("content-length: {}\r\n", body.len()));
            out.write_all(head.as_bytes())
                .and_then(|()| out.write_all(&body))
        }
        Some(Script::Chunked { body, gzip }) => {
            let encoding = if gzip {
                "content-encoding: gzip\r\n"
            } else {
                ""
            };
            let head = head(200, &format!("transfer-encoding: chunked\r\n{encoding}"));
            write_chunked(&mut out, head.as_bytes(), &body)
        }
        Some(Script::Cut { body, sent, stall }) => {
            let head = head(200, &format!("content-length: {}\r\n", body.len()));
            out.write_all(head.as_bytes())
                .and_then(|()| out.write_all(&body[..sent]))
                .and_then(|()| out.flush())
                .map(|()| std::thread::sleep(stall))
        }
    };
}

fn write_chunked(out: &mut TcpStream, head: &[u8], body: &[u8]) -> std::io::Result<()> {
    out.write_all(head)?;
    for piece in body.chunks(4096) {
        out.write_all(format!("{:x}\r\n", piece.len()).as_bytes())?;
        out.write_all(piece)?;
        out.write_all(b"\r\n")?;
        out.flush()?;
        std::thread::sleep(Duration::from_millis(1));
    }
    out.write_all(b"0\r\n\r\n")?;
    out.flush()
}

/// A query response of about 200 KB.
fn big_body() -> Vec<u8> {
    let rows: Vec<String> = (0..20_000).map(|i| format!("[{i},\"e{i}\"]")).collect();
    format!(
        r#"{{"columns":["n","event"],"results":[{}]}}"#,
        rows.join(",")
    )
    .into_bytes()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn a_gzip_body_arrives_decoded_in_chunks_byte_for_byte() {
    let body = big_body();
    let wire = Script::Chunked {
        body: gzip(&body),
        gzip: true,
    };
    let server = RawServer::start(vec![wire.clone(), wire]);
    let client = server.client().build().unwrap();
    let raw = client
        .query_raw(&HogQlQuery::new("select 1"))
        .await
        .unwrap();
    assert_eq!(raw.body, body);
    let mut sink = Recorder::default();
    let streamed = client
        .query_streamed(&HogQlQuery::new("select 1"), &mut sink)
        .await
        .unwrap();
    assert_eq!(sink.body, body, "decoded, byte for byte");
    assert_eq!(streamed.body_bytes, body.len() as u64);
    assert!(sink.chunks() > 1, "{} chunks", sink.chunks());
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn a_broken_gzip_stream_is_retried_from_a_restart() {
    let body = big_body();
    let good = gzip(&body);
    let mut bad = good.clone();
    let crc = bad.len() - 8; // the trailer: CRC-32, then the length
    bad[crc] ^= 0xff;
    let server = RawServer::start(vec![
        Script::Chunked {
            body: bad,
            gzip: true,
        },
        Script::Chunked {
            body: good,
            gzip: true,
        },
    ]);
    let client = server.client().build().unwrap();
    let mut sink = Recorder::default();
    client
        .query_streamed(&HogQlQuery::new("select 1"), &mut sink)
        .await
        .expect("retried");
    assert_eq!(server.connections(), 2);
    assert_eq!(sink.restarts(), 2, "{:?}", sink.seen);
    assert!(
        sink.before_last_restart() > 0,
        "the bad stream was streamed"
    );
    assert_eq!(sink.body, body);
}

#[tokio::test]
async fn a_connection_closed_mid_body_is_retried_and_the_sink_sees_the_full_body_once() {
    let body = big_body();
    let server = RawServer::start(vec![
        Script::Cut {
            body: body.clone(),
            sent: body.len() / 2,
            stall: Duration::ZERO,
        },
        Script::Whole {
            status: 200,
            body: body.clone(),
        },
    ]);
    let client = server.client().build().unwrap();
    let mut sink = Recorder::default();
    let streamed = client
        .query_streamed(&HogQlQuery::new("select 1"), &mut sink)
        .await
        .expect("retried");
    assert_eq!(server.connections(), 2);
    assert_eq!(sink.seen[0], Seen::Restart);
    assert_eq!(sink.restarts(), 2, "{:?}", sink.seen);
    let first = sink.before_last_restart();
    assert!(0 < first && first <= body.len() / 2, "{first}");
    assert_eq!(sink.body, body, "exactly the full body after the restart");
    assert_eq!(streamed.body_bytes, body.len() as u64);
    assert_eq!(client.stats().retries, 1);
}

#[tokio::test]
async fn a_body_that_stalls_times_out_like_a_request() {
    let body = big_body();
    let stall = || Script::Cut {
        body: body.clone(),
        sent: 1000,
        stall: Duration::from_secs(3),
    };
    let whole = Script::Whole {
        status: 200,
        body: body.clone(),
    };

    // Retried like a timeout before the headers, from a restart.
    let server = RawServer::start(vec![stall(), whole]);
    let client = server
        .client()
        .request_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let mut sink = Recorder::default();
    client
        .query_streamed(&HogQlQuery::new("select 1"), &mut sink)
        .await
        .expect("retried");
    assert_eq!(server.connections(), 2);
    assert_eq!(sink.restarts(), 2);
    assert_eq!(sink.before_last_restart(), 1000);
    assert_eq!(sink.body, body);

    // And returned at once to a caller that asks for less on a timeout.
    let server = RawServer::start(vec![stall()]);
    let client = server
        .client()
        .request_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let mut sink = Recorder::default();
    let query = HogQlQuery::new("select 1").fail_fast_on_timeout();
    let err = client.query_streamed(&query, &mut sink).await.unwrap_err();
    assert_eq!(err.category(), Category::Timeout, "{err}");
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn an_over_size_body_fails_and_is_not_retried() {
    let body = big_body();
    let limit = 50_000;

    // Streamed (no Content-Length): refused at the chunk that would pass the limit.
    let server = RawServer::start(vec![Script::Chunked {
        body: body.clone(),
        gzip: false,
    }]);
    let client = server.client().max_response_bytes(limit).build().unwrap();
    let mut sink = Recorder::default();
    let err = client
        .query_streamed(&HogQlQuery::new("select 1"), &mut sink)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    assert_eq!(err.category(), Category::Data);
    assert!(!err.is_retryable());
    assert!(
        err.to_string()
            .contains(&format!("response body exceeds the {limit} byte limit")),
        "{err}"
    );
    assert_eq!(server.connections(), 1, "not retried");
    assert_eq!(sink.restarts(), 1);
    assert!(
        !sink.body.is_empty() && sink.body.len() <= limit,
        "{}",
        sink.body.len()
    );

    // Announced by Content-Length: refused before the sink hears of it.
    let server = RawServer::start(vec![Script::Whole { status: 200, body }]);
    let client = server.client().max_response_bytes(limit).build().unwrap();
    let mut sink = Recorder::default();
    let err = client
        .query_streamed(&HogQlQuery::new("select 1"), &mut sink)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("(its Content-Length)"), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(server.connections(), 1);
    assert!(sink.seen.is_empty(), "{:?}", sink.seen);
}

/// A blocking query PostHog queued anyway (202): the status document is not streamed; the
/// query is polled to completion and its result handed over as one chunk.
#[tokio::test]
async fn a_query_the_server_queued_is_polled_and_its_result_handed_over() {
    let result = br#"{"columns":["n"],"results":[[1]]}"#;
    let queued = br#"{"query_status":{"id":"q1","complete":false}}"#.to_vec();
    let done = format!(
        r#"{{"query_status":{{"id":"q1","complete":true,"results":{}}}}}"#,
        String::from_utf8_lossy(result)
    );
    let server = RawServer::start(vec![
        Script::Whole {
            status: 202,
            body: queued,
        },
        Script::Whole {
            status: 200,
            body: done.into_bytes(),
        },
    ]);
    let client = server.client().build().unwrap();
    let mut sink = Recorder::default();
    let streamed = client
        .query_streamed(&HogQlQuery::new("select 1"), &mut sink)
        .await
        .unwrap();
    assert_eq!(streamed.status, 202);
    assert_eq!(sink.seen, vec![Seen::Restart, Seen::Chunk(result.len())]);
    assert_eq!(sink.body, result);
    assert_eq!(
        *server.paths.lock().unwrap(),
        [
            "POST /api/projects/4242/query/",
            "GET /api/projects/4242/query/q1/"
        ]
    );
}
