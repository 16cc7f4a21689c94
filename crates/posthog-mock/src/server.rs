//! The running server: accept loop, per-request pipeline (count → record → fault → handle →
//! gzip/truncate), and the [`MockServer`] handle tests drive.

use std::collections::{HashMap, VecDeque};
use std::future::Future as _;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::api::{self, ApiResponse, RequestCtx};
use crate::config::{LimitClampChange, MockConfig};
use crate::data::Event;
use crate::fault::{Fault, RouteClass};
use crate::query_pool::QueryPool;
use crate::store::{EventStore, PersonStore};

/// PostHog's `DATA_UPLOAD_MAX_MEMORY_SIZE`: larger bodies get 413.
pub(crate) const MAX_BODY: usize = 20 * 1024 * 1024;

/// Responses at least this large are gzipped when the client accepts gzip.
const GZIP_MIN: usize = 1024;

/// One request as it reached the server.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path, without the query string.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// Headers in arrival order, names lower-case, values as sent (not redacted).
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON, if it was JSON.
    pub body: Option<Value>,
    /// Route class it was counted under.
    pub route: RouteClass,
    /// Response status; `None` while in flight or when the connection was reset.
    pub status: Option<u16>,
    /// When the server received the request (its headers and body read).
    pub received_at: std::time::Instant,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A query submitted with `refresh: async`.
#[derive(Debug, Clone)]
pub(crate) struct AsyncQuery {
    pub polls_left: u32,
    /// The full response, or the error message.
    pub outcome: Result<Value, String>,
    pub start_time: OffsetDateTime,
    pub end_time: OffsetDateTime,
}

/// The LIMIT clamp in effect and its pending schedule.
#[derive(Debug)]
pub(crate) struct ClampState {
    /// The clamp the next query request gets.
    pub current: usize,
    /// Scheduled changes not yet applied, in `after_queries` order.
    pub pending: VecDeque<LimitClampChange>,
    /// Query requests received since the server started (never reset).
    pub queries: u64,
}

impl ClampState {
    fn new(initial: usize, changes: &[LimitClampChange]) -> ClampState {
        let mut changes = changes.to_vec();
        // Stable: two changes after the same count apply in the order given (the last wins).
        changes.sort_by_key(|c| c.after_queries);
        let mut state = ClampState {
            current: initial,
            pending: changes.into(),
            queries: 0,
        };
        state.apply_due();
        state
    }

    /// Applies every scheduled change whose request count has been reached.
    fn apply_due(&mut self) {
        while let Some(change) = self
            .pending
            .front()
            .filter(|c| c.after_queries <= self.queries)
        {
            self.current = change.limit_clamp;
            self.pending.pop_front();
        }
    }

    /// Counts one query request and returns the clamp it gets.
    fn arrive(&mut self) -> usize {
        let clamp = self.current;
        self.queries += 1;
        self.apply_due();
        clamp
    }
}

#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    /// Bumped on reset so in-flight requests do not update entries that were cleared.
    pub generation: u64,
    pub entries: Vec<RecordedRequest>,
}

/// State shared by all connections.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The configuration; its dataset keeps only the REST fixtures.
    pub config: MockConfig,
    pub events: RwLock<EventStore>,
    pub persons: PersonStore,
    /// The cohorts: the fixtures plus those created with `POST …/cohorts/`.
    pub cohorts: Mutex<Vec<Value>>,
    pub counts: Mutex<[usize; RouteClass::ALL.len()]>,
    pub log: Mutex<RequestLog>,
    pub faults: Mutex<HashMap<RouteClass, VecDeque<Fault>>>,
    pub captured: Mutex<Vec<Value>>,
    pub throttle: Mutex<VecDeque<Instant>>,
    pub random: Mutex<fastrand::Rng>,
    pub queries: Mutex<HashMap<String, AsyncQuery>>,
    /// The LIMIT clamp: not reset by `/_mock/reset`.
    pub clamp: Mutex<ClampState>,
    /// The query concurrency slots, when [`MockConfig::query_latency`] is set.
    pub query_pool: Option<QueryPool>,
}

/// Locks a mutex, ignoring poisoning: every critical section leaves the data consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn new(mut config: MockConfig) -> Shared {
        let events = std::mem::take(&mut config.dataset.events);
        let persons = std::mem::take(&mut config.dataset.persons);
        let cohorts = std::mem::take(&mut config.dataset.cohorts);
        let lazy = config.dataset.lazy_events.take();
        let seed = config.random_faults.map_or(0, |r| r.seed);
        Shared {
            events: RwLock::new(EventStore::new(events, lazy)),
            persons: PersonStore::new(persons),
            cohorts: Mutex::new(cohorts),
            counts: Mutex::new([0; RouteClass::ALL.len()]),
            log: Mutex::new(RequestLog::default()),
            faults: Mutex::new(HashMap::new()),
            captured: Mutex::new(Vec::new()),
            throttle: Mutex::new(VecDeque::new()),
            random: Mutex::new(fastrand::Rng::with_seed(seed)),
            queries: Mutex::new(HashMap::new()),
            clamp: Mutex::new(ClampState::new(
                config.limit_clamp,
                &config.limit_clamp_changes,
            )),
            query_pool: config.query_latency.map(QueryPool::new),
            config,
        }
    }

    pub(crate) fn push_faults(&self, route: RouteClass, fault: Fault, times: usize) {
        let mut faults = lock(&self.faults);
        let queue = faults.entry(route).or_default();
        queue.extend(std::iter::repeat_n(fault, times));
    }

    pub(crate) fn insert_events(&self, events: Vec<Event>) {
        self.events
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(events);
    }

    pub(crate) fn reset_counters(&self) {
        *lock(&self.counts) = [0; RouteClass::ALL.len()];
        if let Some(pool) = &self.query_pool {
            pool.reset_counters();
        }
        let mut log = lock(&self.log);
        log.generation += 1;
        log.entries.clear();
    }

    /// Everything `/_mock/reset` clears: counters, log, faults, captured events, async
    /// queries and the throttle window. Stored events stay.
    pub(crate) fn reset_all(&self) {
        self.reset_counters();
        lock(&self.faults).clear();
        lock(&self.captured).clear();
        lock(&self.queries).clear();
        lock(&self.throttle).clear();
    }

    /// Sets the LIMIT clamp at once; scheduled changes not yet reached still apply later.
    pub(crate) fn set_limit_clamp(&self, clamp: usize) {
        lock(&self.clamp).current = clamp;
    }

    /// The LIMIT clamp the next query request gets.
    pub(crate) fn limit_clamp(&self) -> usize {
        lock(&self.clamp).current
    }

    pub(crate) fn count(&self, route: RouteClass) -> usize {
        lock(&self.counts)[route.index()]
    }

    /// Query requests answered 429 because no concurrency slot freed up in time.
    pub(crate) fn concurrency_throttled(&self) -> usize {
        self.query_pool.as_ref().map_or(0, QueryPool::throttled)
    }

    /// The most query requests that held a concurrency slot at once.
    pub(crate) fn peak_queries_held(&self) -> usize {
        self.query_pool.as_ref().map_or(0, QueryPool::peak_held)
    }

    pub(crate) fn total(&self) -> usize {
        let counts = lock(&self.counts);
        RouteClass::ALL
            .iter()
            .filter(|c| **c != RouteClass::Control)
            .map(|c| counts[c.index()])
            .sum()
    }

    pub(crate) fn captured_unique_uuids(&self) -> usize {
        let captured = lock(&self.captured);
        captured
            .iter()
            .filter_map(|e| e.get("uuid").and_then(Value::as_str))
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// The next scripted fault for `route`, else a random one.
    fn next_fault(&self, route: RouteClass) -> Option<Fault> {
        if route == RouteClass::Control {
            return None;
        }
        if let Some(f) = lock(&self.faults)
            .get_mut(&route)
            .and_then(VecDeque::pop_front)
        {
            return Some(f);
        }
        let random = self.config.random_faults?;
        let mut rng = lock(&self.random);
        let r = rng.f64();
        if r < random.server_error_rate {
            let status = [500, 502, 503, 504][rng.usize(..4)];
            return Some(Fault::status(status));
        }
        if r < random.server_error_rate + random.reset_rate {
            return Some(Fault::ConnectionReset);
        }
        if r < random.server_error_rate + random.reset_rate + random.throttle_rate {
            return Some(Fault::too_many(None));
        }
        None
    }

    /// Applies the server-side throttle; `Some(seconds)` to wait when over the limit.
    pub(crate) fn throttle(&self) -> Option<u64> {
        let limit = self.config.rate_limit?;
        let now = Instant::now();
        let mut window = lock(&self.throttle);
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= limit.per)
        {
            window.pop_front();
        }
        if window.len() >= limit.max_requests as usize {
            let oldest = window.front().copied().unwrap_or(now);
            let wait = (oldest + limit.per).saturating_duration_since(now);
            return Some(wait.as_secs_f64().ceil().max(1.0) as u64);
        }
        window.push_back(now);
        None
    }
}

/// A running mock PostHog server. Dropping it stops the accept loop.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<watch::Sender<bool>>,
    task: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Starts a server on `127.0.0.1` with an ephemeral port.
    pub async fn start(config: MockConfig) -> std::io::Result<MockServer> {
        Self::start_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a server on `addr`.
    pub async fn start_on(config: MockConfig, addr: SocketAddr) -> std::io::Result<MockServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, shared.clone(), rx));
        tracing::debug!(%addr, "posthog-mock listening");
        Ok(MockServer {
            addr,
            shared,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues a one-shot fault for the next request of `route` (FIFO per class).
    pub fn push_fault(&self, route: RouteClass, fault: Fault) {
        self.shared.push_faults(route, fault, 1);
    }

    /// Queues `fault` `times` times.
    pub fn push_faults(&self, route: RouteClass, fault: Fault, times: usize) {
        self.shared.push_faults(route, fault, times);
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Requests of `route` that reached the server, faulted or not.
    pub fn request_count(&self, route: RouteClass) -> usize {
        self.shared.count(route)
    }

    /// All requests that reached the server, control requests excepted.
    pub fn total_requests(&self) -> usize {
        self.shared.total()
    }

    /// Every request (control requests excepted) in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).entries.clone()
    }

    /// Query requests answered with PostHog's concurrency 429 (no `Retry-After`) because every
    /// slot of [`MockConfig::query_latency`] stayed taken for the whole queue timeout. Always 0
    /// without `query_latency`; scripted and random 429 faults are not counted here.
    pub fn concurrency_throttled(&self) -> usize {
        self.shared.concurrency_throttled()
    }

    /// The most query requests that held a concurrency slot of [`MockConfig::query_latency`] at
    /// the same time (evaluating or in their hold), since the start or the last reset (which
    /// restarts it from the queries holding a slot then). Always 0 without `query_latency`.
    pub fn peak_queries_held(&self) -> usize {
        self.shared.peak_queries_held()
    }

    /// Zeroes the counters (the concurrency ones included) and clears the request log.
    pub fn reset_counters(&self) {
        self.shared.reset_counters();
    }

    /// Sets the cap on a top-level HogQL `LIMIT` at once (as `POST /_mock/config
    /// {"limit_clamp": N}` does). Changes scheduled in [`MockConfig::limit_clamp_changes`] whose
    /// request count has not been reached yet still apply when it is.
    pub fn set_limit_clamp(&self, clamp: usize) {
        self.shared.set_limit_clamp(clamp);
    }

    /// The cap on a top-level HogQL `LIMIT` the next query request gets.
    pub fn limit_clamp(&self) -> usize {
        self.shared.limit_clamp()
    }

    /// Adds events (late or new arrivals); queries see them immediately.
    pub fn insert_events(&self, events: Vec<Event>) {
        self.shared.insert_events(events);
    }

    /// Every event `/i/v0/e/` and `/batch/` accepted, duplicates kept, as received.
    pub fn captured_events(&self) -> Vec<Value> {
        lock(&self.shared.captured).clone()
    }

    /// Number of distinct `uuid` values among captured events (events without one ignored).
    pub fn captured_unique_uuids(&self) -> usize {
        self.shared.captured_unique_uuids()
    }

    /// Number of events the `events` table holds.
    pub fn event_count(&self) -> usize {
        self.shared
            .events
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Stops accepting, closes open connections and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |req| handle(shared.clone(), req));
                        let mut builder = http1::Builder::new();
                        builder.keep_alive(true).timer(TokioTimer::new());
                        if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Typically EMFILE; back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

/// The error a service returns to make hyper drop the connection without a response.
#[derive(Debug, thiserror::Error)]
#[error("connection reset by the mock")]
pub(crate) struct ConnectionReset;

/// A response body: whole, or half of it followed by an error (TruncatedBody).
pub(crate) enum MockBody {
    Full(Option<Bytes>),
    Truncated {
        first: Option<Bytes>,
        pause: Option<Pin<Box<tokio::time::Sleep>>>,
    },
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = ConnectionReset;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ConnectionReset>>> {
        match &mut *self {
            MockBody::Full(data) => Poll::Ready(data.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Truncated { first, pause } => {
                if let Some(b) = first.take() {
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                // Pause so hyper flushes the half body before the error closes the connection.
                if let Some(p) = pause {
                    if p.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    *pause = None;
                    return Poll::Ready(Some(Err(ConnectionReset)));
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, MockBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            MockBody::Full(None) => SizeHint::with_exact(0),
            // Unknown, so hyper keeps the explicit (full) Content-Length header.
            MockBody::Truncated { .. } => SizeHint::default(),
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, ConnectionReset> {
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let routed = api::routes::classify(&method, &path);
    let class = routed.class;
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let params = api::parse_query_string(query.as_deref());

    // Read the body (bounded), inflating gzip request bodies.
    let (raw, too_large) = match Limited::new(body, MAX_BODY + 1).collect().await {
        Ok(collected) => (collected.to_bytes(), false),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            (Bytes::new(), true)
        }
        Err(_) => return Err(ConnectionReset),
    };
    let gzipped = header("content-encoding").is_some_and(|v| v.contains("gzip"))
        || api::param(&params, "compression") == Some("gzip-js");
    let raw = if gzipped && !raw.is_empty() {
        gunzip(&raw).map_or(raw, Bytes::from)
    } else {
        raw
    };
    let body_json: Option<Value> = if raw.is_empty() {
        None
    } else {
        serde_json::from_slice(&raw).ok()
    };

    // Count and record before anything else, so faulted requests are counted too (and a
    // query request moves the LIMIT clamp's schedule on whether or not it is faulted).
    lock(&shared.counts)[class.index()] += 1;
    let limit_clamp = (class == RouteClass::Query).then(|| lock(&shared.clamp).arrive());
    let log_slot = if class == RouteClass::Control {
        None
    } else {
        let mut log = lock(&shared.log);
        log.entries.push(RecordedRequest {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            headers: headers.clone(),
            body: body_json.clone(),
            route: class,
            status: None,
            received_at: std::time::Instant::now(),
        });
        Some((log.generation, log.entries.len() - 1))
    };
    tracing::debug!(%method, %path, route = %class, "request");

    let mut truncate = false;
    let mut malformed = false;
    let mut answer: Option<ApiResponse> = None;
    match shared.next_fault(class) {
        None => {}
        Some(Fault::ConnectionReset) => return Err(ConnectionReset),
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::TruncatedBody) => truncate = true,
        Some(Fault::MalformedJson) => malformed = true,
        Some(Fault::Status {
            status,
            retry_after,
            body,
        }) => {
            let mut r = match body {
                Some(b) => ApiResponse::raw_json(status, b),
                None => crate::api::default_error(status, retry_after.as_deref()),
            };
            if let Some(ra) = retry_after
                && !r.headers.iter().any(|(n, _)| *n == "retry-after")
            {
                r.headers.push(("retry-after", ra));
            }
            answer = Some(r);
        }
    }
    let response = match answer {
        Some(r) => r,
        None if malformed => {
            ApiResponse::raw_json(200, &b"{\"columns\": [\"uuid\"], \"results\": [[\"0190"[..])
        }
        None if too_large => ApiResponse::error(
            413,
            "invalid_request",
            "request_too_large",
            "Request body exceeds the 20 MB limit.",
        ),
        None => {
            let host = header("host").map_or_else(|| "127.0.0.1".to_owned(), str::to_owned);
            let ctx = RequestCtx {
                method,
                path,
                params,
                authorization: header("authorization").map(str::to_owned),
                body: body_json,
                raw_body: raw,
                host,
                routed,
                limit_clamp,
            };
            api::dispatch(&shared, ctx).await
        }
    };

    if let Some((generation, idx)) = log_slot {
        let mut log = lock(&shared.log);
        if log.generation == generation
            && let Some(entry) = log.entries.get_mut(idx)
        {
            entry.status = Some(response.status);
        }
    }
    let accepts_gzip = header("accept-encoding").is_some_and(|v| v.contains("gzip"));
    Ok(into_hyper(
        response,
        shared.config.gzip && accepts_gzip,
        truncate,
    ))
}

fn gunzip(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

fn gzip(data: &[u8]) -> Option<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(data).ok()?;
    enc.finish().ok()
}

fn into_hyper(r: ApiResponse, gzip_ok: bool, truncate: bool) -> Response<MockBody> {
    let mut body = r.body;
    let mut encoded = false;
    if gzip_ok
        && r.json
        && body.len() >= GZIP_MIN
        && let Some(z) = gzip(&body)
    {
        body = Bytes::from(z);
        encoded = true;
    }
    let full_len = body.len();
    let payload = if truncate {
        MockBody::Truncated {
            first: Some(body.slice(..full_len / 2)),
            pause: Some(Box::pin(tokio::time::sleep(Duration::from_millis(50)))),
        }
    } else {
        MockBody::Full(if body.is_empty() { None } else { Some(body) })
    };
    let mut resp = Response::new(payload);
    *resp.status_mut() =
        hyper::StatusCode::from_u16(r.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    if r.json {
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if encoded {
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        h.insert(
            hyper::header::VARY,
            HeaderValue::from_static("Accept-Encoding"),
        );
    }
    if truncate {
        h.insert(CONTENT_LENGTH, HeaderValue::from(full_len));
    }
    for (name, value) in r.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.append(name, v);
        }
    }
    resp
}
