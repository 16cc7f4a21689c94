//! The mock PostHog as a child process (`posthog-mock`), the dataset it serves regenerated
//! in-process, and a tiny HTTP/1.1 client for its `/_mock/…` control API (never faulted).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use posthog_mock::{DataShape, Dataset, Event, GenSpec, Person, QueryLatency};
use serde_json::{Value, json};

/// How a mock process is started; the same spec regenerates its events in-process.
#[derive(Debug, Clone)]
pub struct MockOptions {
    pub events: usize,
    pub seed: u64,
    pub persons: Option<usize>,
    pub cluster: Option<usize>,
    /// `(offset, name)`, e.g. `("-05:00", "America/New_York")`; `None` keeps the mock's default.
    pub tz: Option<(&'static str, &'static str)>,
    pub rate_limit: Option<String>,
    pub fault_rate: f64,
    pub reset_rate: f64,
    pub throttle_rate: f64,
    pub fault_seed: u64,
    /// `--limit-clamp N`: the LIMIT clamp at start (`None`: the mock's 50 000).
    pub limit_clamp: Option<usize>,
    /// `--limit-clamp-after Q:N`, in order: after Q query requests the clamp becomes N.
    pub limit_clamp_after: Vec<(u64, usize)>,
    /// `--shape`: the shape of the events' properties.
    pub shape: DataShape,
    /// Gzip large responses when the client accepts gzip (`false` passes `--no-gzip`).
    pub gzip: bool,
    /// PostHog's query latency and per-project concurrency (`--query-hold-ms`,
    /// `--query-hold-per-row-us`, `--query-concurrency`, `--query-queue-timeout-s`); `None`
    /// (the default) passes none of them, so queries are not held.
    pub query_latency: Option<QueryLatency>,
}

impl MockOptions {
    pub fn new(events: usize, seed: u64) -> Self {
        MockOptions {
            events,
            seed,
            persons: None,
            cluster: None,
            tz: None,
            rate_limit: None,
            fault_rate: 0.0,
            reset_rate: 0.0,
            throttle_rate: 0.0,
            fault_seed: 1,
            limit_clamp: None,
            limit_clamp_after: Vec::new(),
            shape: DataShape::Default,
            gzip: true,
            query_latency: None,
        }
    }

    fn gen_spec(&self) -> GenSpec {
        let base = GenSpec::default();
        GenSpec {
            seed: self.seed,
            events: self.events,
            persons: self.persons.unwrap_or(base.persons),
            same_timestamp_cluster: self.cluster.unwrap_or(base.same_timestamp_cluster),
            shape: self.shape,
            ..base
        }
    }

    /// The events the mock serves, value by value.
    pub fn expected_events(&self) -> Vec<Event> {
        Dataset::generate(&self.gen_spec()).events
    }

    /// The events and the persons the mock serves (persons with their current properties).
    pub fn expected_dataset(&self) -> (Vec<Event>, Vec<Person>) {
        let d = Dataset::generate(&self.gen_spec());
        (d.events, d.persons)
    }

    fn args(&self) -> Vec<String> {
        // The binary's events end now by default; pin them to the library's anchor so the
        // in-process regeneration (`gen_spec`) is the same data.
        let spec = self.gen_spec();
        let start = spec
            .start
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut a = vec![
            "--port".into(),
            "0".into(),
            "--events".into(),
            self.events.to_string(),
            "--seed".into(),
            self.seed.to_string(),
            "--start".into(),
            start,
            "--days".into(),
            (spec.span.as_secs() / 86_400).to_string(),
        ];
        if let Some(p) = self.persons {
            a.extend(["--persons".into(), p.to_string()]);
        }
        if let Some(c) = self.cluster {
            a.extend(["--cluster".into(), c.to_string()]);
        }
        if let Some((offset, name)) = self.tz {
            a.extend([
                "--tz-offset".into(),
                offset.into(),
                "--tz-name".into(),
                name.into(),
            ]);
        }
        if let Some(r) = &self.rate_limit {
            a.extend(["--rate-limit".into(), r.clone()]);
        }
        for (flag, rate) in [
            ("--fault-rate", self.fault_rate),
            ("--reset-rate", self.reset_rate),
            ("--throttle-rate", self.throttle_rate),
        ] {
            if rate > 0.0 {
                a.extend([flag.into(), rate.to_string()]);
            }
        }
        a.extend(["--fault-seed".into(), self.fault_seed.to_string()]);
        if let Some(n) = self.limit_clamp {
            a.extend(["--limit-clamp".into(), n.to_string()]);
        }
        for (after, n) in &self.limit_clamp_after {
            a.extend(["--limit-clamp-after".into(), format!("{after}:{n}")]);
        }
        a.extend(["--shape".into(), self.shape.to_string()]);
        if !self.gzip {
            a.push("--no-gzip".into());
        }
        if let Some(latency) = &self.query_latency {
            a.extend(query_latency_args(latency));
        }
        a
    }
}

/// The `--query-*` flags for `latency`. The binary takes whole milliseconds and microseconds
/// (finer parts are cut) and decimal seconds.
fn query_latency_args(latency: &QueryLatency) -> Vec<String> {
    vec![
        "--query-hold-ms".into(),
        latency.hold.as_millis().to_string(),
        "--query-hold-per-row-us".into(),
        latency.hold_per_row.as_micros().to_string(),
        "--query-concurrency".into(),
        latency.concurrency.to_string(),
        "--query-queue-timeout-s".into(),
        latency.queue_timeout.as_secs_f64().to_string(),
    ]
}

/// A running `posthog-mock`; killed when dropped.
pub struct Mock {
    child: Child,
    addr: SocketAddr,
    pub key: String,
    pub project_key: String,
    pub project_id: String,
    pub base_url: String,
}

impl Mock {
    pub fn start(bin: &Path, opts: &MockOptions, work: &Path) -> anyhow::Result<Mock> {
        let log_path = work.join("mock.stderr");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut child = Command::new(bin)
            .args(opts.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("mock stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let r = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(r);
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(line)) if !line.trim().is_empty() => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("posthog-mock did not announce itself ({other:?}); stderr: {stderr}");
            }
        };
        let announce: Value = serde_json::from_str(line.trim())
            .with_context(|| format!("mock announce line is not JSON: {line}"))?;
        let text = |k: &str| -> anyhow::Result<String> {
            match &announce[k] {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => bail!("mock announce line has no `{k}`: {line}"),
            }
        };
        let base_url = text("base_url")?;
        let host_port = base_url
            .strip_prefix("http://")
            .context("mock base_url is not http://")?
            .trim_end_matches('/');
        let addr = host_port
            .to_socket_addrs()
            .with_context(|| format!("resolving {host_port}"))?
            .next()
            .context("mock address")?;
        Ok(Mock {
            key: text("personal_api_key")?,
            project_key: text("project_api_key")?,
            project_id: text("project_id")?,
            base_url,
            addr,
            child,
        })
    }

    /// CPU seconds (user + system) the mock process has used so far, from `/proc`.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .context("reading the mock's /proc stat")?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> anyhow::Result<f64> {
            Ok(fields.get(i).context("short /proc stat")?.parse::<f64>()?)
        };
        // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Ok((ticks(11)? + ticks(12)?) / hz)
    }

    /// Responses with status 429 in the mock's request log.
    pub fn throttled_responses(&self) -> anyhow::Result<u64> {
        let log = self.control("GET", "/_mock/requests", None)?;
        let entries = log.as_array().context("request log is not an array")?;
        Ok(entries.iter().filter(|r| r["status"] == 429).count() as u64)
    }

    /// `POST …/query/` requests in the mock's request log (since the last counter reset) whose
    /// body contains `needle`, e.g. `quantiles(` for a run's planning query.
    pub fn query_requests_containing(&self, needle: &str) -> anyhow::Result<u64> {
        let log = self.control("GET", "/_mock/requests", None)?;
        let entries = log.as_array().context("request log is not an array")?;
        Ok(entries
            .iter()
            .filter(|r| r["route"] == "query" && r["body"].to_string().contains(needle))
            .count() as u64)
    }

    pub fn stats(&self) -> anyhow::Result<Value> {
        self.control("GET", "/_mock/stats", None)
    }

    /// `POST …/query/` requests counted so far (faulted and throttled ones included).
    pub fn query_requests(&self) -> anyhow::Result<u64> {
        self.counter("/by_route/query")
    }

    /// Requests to every non-control route counted so far.
    pub fn total_requests(&self) -> anyhow::Result<u64> {
        self.counter("/total_requests")
    }

    /// One counter of `GET /_mock/stats`, by JSON pointer (its other counters, such as
    /// `/concurrency_throttled` and `/peak_queries_held`, are read the same way).
    pub(crate) fn counter(&self, pointer: &str) -> anyhow::Result<u64> {
        let stats = self.stats()?;
        stats
            .pointer(pointer)
            .and_then(Value::as_u64)
            .with_context(|| format!("stats without {pointer}: {stats}"))
    }

    pub fn reset_counters(&self) -> anyhow::Result<()> {
        self.control("POST", "/_mock/reset_counters", Some(&json!({})))
            .map(drop)
    }

    /// Inserts events (export shape); returns how many the mock accepted.
    pub fn insert_events(&self, events: &[Event]) -> anyhow::Result<usize> {
        let body = json!({
            "events": events.iter().map(Event::to_export_json).collect::<Vec<_>>()
        });
        let answer = self.control("POST", "/_mock/events", Some(&body))?;
        let n = answer["inserted"]
            .as_u64()
            .with_context(|| format!("unexpected insert answer {answer}"))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Queues scripted faults: `{"route","fault","times"}` or an array of them.
    pub fn push_faults(&self, faults: &Value) -> anyhow::Result<()> {
        self.control("POST", "/_mock/faults", Some(faults))
            .map(drop)
    }

    pub fn clear_faults(&self) -> anyhow::Result<()> {
        self.control("DELETE", "/_mock/faults", None).map(drop)
    }

    /// Every event UUID the mock serves, sorted: HogQL queries ordered by `uuid` and keyset-paged
    /// on it, until an empty page (independent of the CLI's scan by time). Every query counts
    /// and, with [`MockOptions::query_latency`], is held: ask a mock without it.
    pub fn served_uuids(&self) -> anyhow::Result<Vec<uuid::Uuid>> {
        let path = format!("/api/projects/{}/query/", self.project_id);
        let auth = format!("Bearer {}", self.key);
        let mut uuids: Vec<uuid::Uuid> = Vec::new();
        loop {
            let after = uuids
                .last()
                .map(|u| format!(" where uuid > toUUID('{u}')"))
                .unwrap_or_default();
            let sql = format!("select uuid from events{after} order by uuid limit 50000");
            let body = json!({"query": {"kind": "HogQLQuery", "query": sql}}).to_string();
            let (status, bytes) = http(
                self.addr,
                "POST",
                &path,
                Some(&body),
                &[("Authorization", &auth)],
            )
            .with_context(|| format!("POST {path} on the mock"))?;
            if status != 200 {
                bail!("{sql}: HTTP {status}: {}", String::from_utf8_lossy(&bytes));
            }
            let answer: Value = serde_json::from_slice(&bytes).context("query answer")?;
            let rows = answer["results"]
                .as_array()
                .with_context(|| format!("{sql}: no results"))?;
            if rows.is_empty() {
                return Ok(uuids);
            }
            for row in rows {
                let text = row[0].as_str().with_context(|| format!("row {row}"))?;
                uuids.push(text.parse().with_context(|| format!("uuid {text}"))?);
            }
        }
    }

    fn control(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let body = body.map(Value::to_string);
        let (status, bytes) = http(self.addr, method, path, body.as_deref(), &[])
            .with_context(|| format!("{method} {path} on the mock"))?;
        if status != 200 {
            bail!(
                "{method} {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        serde_json::from_slice(&bytes).with_context(|| format!("{method} {path}: body is not JSON"))
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange with `Connection: close`: status and body (chunked bodies decoded).
pub(super) fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let body = body.unwrap_or("");
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("response without a header end")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let payload = &raw[split + 4..];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(payload)?
    } else {
        payload.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk header")?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A loopback port nothing listens on (bound, then released).
pub fn dead_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a probe port")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_latency_flags_are_passed_only_when_set() {
        let off = MockOptions::new(10, 1).args();
        assert!(!off.iter().any(|a| a.starts_with("--query-")), "{off:?}");
        let on = MockOptions {
            query_latency: Some(QueryLatency {
                queue_timeout: Duration::from_millis(200),
                ..QueryLatency::new(Duration::from_millis(300), Duration::from_micros(100))
            }),
            ..MockOptions::new(10, 1)
        }
        .args();
        let tail = &on[on.len() - 8..];
        assert_eq!(
            tail,
            [
                "--query-hold-ms",
                "300",
                "--query-hold-per-row-us",
                "100",
                "--query-concurrency",
                "3",
                "--query-queue-timeout-s",
                "0.2"
            ]
        );
    }
}
