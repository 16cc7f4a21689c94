//! The object-store scenarios (PRODUCT.md §8): runs landing on `s3://…` against a real
//! S3-compatible server on loopback (moto, one process per scenario), read back with a reader
//! we did not write (pyarrow's S3 filesystem, in a small embedded Python script) into a scratch
//! copy, where the local verifiers check it value by value. A full extraction that writes
//! nothing to the local disk; `kill -9` during multipart uploads and between a part's upload
//! and the state commit; the lease that refuses a second run (and an expired one taken over);
//! Hive day partitions on S3 and on a local disk, read by pyarrow and DuckDB.
//!
//! Without python3 and its moto, pyarrow and duckdb the scenarios are skipped, unless
//! `POSTHOG_REQUIRE_MOTO=1` (set by `.ci/run`), where that is a failure.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Env;
use super::cli::{self, CliRun, RunningCli, TABLE};
use super::mock::{self, MockOptions};
use super::output;
use super::scenarios::{Ctx, RUN_DEADLINE, make_events};
use super::verify::{self, Checks, Format};

/// The bucket every scenario lands in.
const BUCKET: &str = "bucket";
/// The credentials the CLI gets; moto takes any. The secret is distinctive so a check can
/// prove it is never printed.
const ACCESS_KEY: &str = "test";
const SECRET_KEY: &str = "e2e-s3-secret-7d0c91f4";
/// A session token: unlike the secret key, it travels in every request's headers
/// (`x-amz-security-token`), so a log of requests is where it would leak.
const SESSION_TOKEN: &str = "e2e-s3-session-token-5b2e88a1";
const REGION: &str = "us-east-1";
/// Set by `.ci/run`: a missing moto, pyarrow or duckdb fails the scenarios instead of
/// skipping them.
const REQUIRE_MOTO: &str = "POSTHOG_REQUIRE_MOTO";
/// A table's lease object and manifest, relative to the table's prefix.
const LEASE: &str = "_lease";
const MANIFEST: &str = output::MANIFEST_FILE;
/// How fast a refused run must exit.
const REFUSAL_WITHIN: Duration = Duration::from_secs(3);

/// The reader we did not write: pyarrow's S3 filesystem (and, for local Hive tables, pyarrow
/// and DuckDB). `get ENDPOINT BUCKET PREFIX DEST`: downloads every object under the prefix to
/// `DEST/<key>`; `cat ENDPOINT BUCKET KEY`: one object's text (null when absent);
/// `put ENDPOINT BUCKET KEY`: stdin becomes the object (one PutObject);
/// `dataset ENDPOINT BUCKET PATH`: a Hive-partitioned Parquet dataset's row count, and with a
/// `date` partition column its rows per date and the rows whose UTC timestamp date differs;
/// `local - TABLE_DIR`: the same for a local table with pyarrow and DuckDB. One JSON object out.
const PY_HELPER: &str = r#"
import json, os, sys

def s3fs(endpoint):
    import pyarrow.fs as pafs
    return pafs.S3FileSystem(access_key="test", secret_key="test", region="us-east-1",
                             endpoint_override=endpoint, scheme="http", allow_delayed_open=True)

def get(endpoint, bucket, prefix, dest):
    import pyarrow.fs as pafs
    s3 = s3fs(endpoint)
    selector = pafs.FileSelector(bucket + "/" + prefix, recursive=True, allow_not_found=True)
    objects = []
    for info in s3.get_file_info(selector):
        if info.type != pafs.FileType.File:
            continue
        key = info.path[len(bucket) + 1:]
        local = os.path.join(dest, key)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        with s3.open_input_stream(info.path) as src, open(local, "wb") as out:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
        objects.append({"key": key, "size": info.size})
    return {"objects": objects}

def cat(endpoint, bucket, key):
    import pyarrow.fs as pafs
    s3 = s3fs(endpoint)
    if s3.get_file_info(bucket + "/" + key).type != pafs.FileType.File:
        return {"text": None}
    with s3.open_input_stream(bucket + "/" + key) as src:
        return {"text": src.read().decode()}

def put(endpoint, bucket, key):
    data = sys.stdin.buffer.read()
    with s3fs(endpoint).open_output_stream(bucket + "/" + key) as out:
        out.write(data)
    return {"bytes": len(data)}

def describe(d):
    import pyarrow as pa, pyarrow.compute as pc
    out = {"rows": d.count_rows(), "files": len(d.files)}
    if "date" in d.schema.names:
        t = d.to_table(columns=["timestamp", "date"])
        day = pc.strftime(t["timestamp"], format="%Y-%m-%d")
        part = pc.cast(t["date"], pa.string())
        out["date_type"] = str(t.schema.field("date").type)
        out["date_mismatch"] = int(pc.sum(pc.cast(pc.not_equal(day, part), pa.int64())).as_py() or 0)
        out["dates"] = {c["values"]: c["counts"] for c in pc.value_counts(part).to_pylist()}
    return out

def dataset(endpoint, bucket, path):
    import pyarrow.dataset as ds
    return describe(ds.dataset(bucket + "/" + path, filesystem=s3fs(endpoint), format="parquet",
                               partitioning="hive"))

def local(_, table_dir):
    import pyarrow.dataset as ds, duckdb
    out = {"pyarrow": describe(ds.dataset(table_dir, format="parquet", partitioning="hive"))}
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    src = "read_parquet(?, hive_partitioning = true)"
    glob = os.path.join(table_dir, "*", "*.parquet")
    rows, mismatch = con.execute(
        "select count(*), count(*) filter (where strftime(timestamp, '%Y-%m-%d') <> "
        "cast(date as varchar)) from " + src, [glob]).fetchone()
    dates = con.execute("select cast(date as varchar), count(*) from " + src + " group by 1",
                        [glob]).fetchall()
    out["duckdb"] = {"rows": rows, "date_mismatch": mismatch, "dates": dict(dates)}
    return out

modes = {"get": get, "cat": cat, "put": put, "dataset": dataset, "local": local}
print(json.dumps(modes[sys.argv[1]](*sys.argv[2:])))
"#;

/// A moto S3 server on a loopback port, its request log in the work directory; killed when
/// dropped.
struct Moto {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Moto {
    /// Starts one, or returns `None` (the scenario skipped, or failed under
    /// `POSTHOG_REQUIRE_MOTO=1`) when python3 with moto, pyarrow and duckdb is missing.
    fn start(work: &Path, ck: &mut Checks) -> anyhow::Result<Option<Moto>> {
        let probe = Command::new("python3")
            .args([
                "-c",
                "import moto.server, pyarrow.fs, pyarrow.dataset, duckdb",
            ])
            .stdin(Stdio::null())
            .output();
        let missing = match probe {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(cli::last_lines(&String::from_utf8_lossy(&o.stderr), 1)),
            Err(e) => Some(format!("python3: {e}")),
        };
        if let Some(why) = missing {
            if std::env::var(REQUIRE_MOTO).as_deref() == Ok("1") {
                ck.fail(format!(
                    "python3 with moto[server], pyarrow and duckdb is required ({REQUIRE_MOTO}=1) \
                     but missing: {why}"
                ));
            } else {
                println!(
                    "   skipped: python3 with moto[server], pyarrow and duckdb is missing ({why}); \
                     {REQUIRE_MOTO}=1 makes this a failure"
                );
                ck.note("skipped: no moto");
            }
            return Ok(None);
        }
        let port = mock::dead_port()?;
        let log = work.join("moto.log");
        let file = std::fs::File::create(&log).context("creating moto.log")?;
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting python3 -m moto.server")?;
        let mut moto = Moto {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if matches!(mock::http(moto.addr, "GET", "/", None, &[]), Ok((200, _))) {
                return Ok(Some(moto));
            }
            if let Some(status) = moto.child.try_wait()? {
                bail!("moto exited ({status}): {}", moto.log_tail());
            }
            if Instant::now() > deadline {
                bail!("moto did not answer within 30 s: {}", moto.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        cli::last_lines(&std::fs::read_to_string(&self.log).unwrap_or_default(), 5)
    }

    /// `127.0.0.1:PORT`.
    fn host_port(&self) -> String {
        self.addr.to_string()
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a bucket (an unsigned `PUT /<bucket>`, which moto accepts).
    fn create_bucket(&self, name: &str) -> anyhow::Result<()> {
        let (status, body) = mock::http(self.addr, "PUT", &format!("/{name}"), None, &[])?;
        if status != 200 {
            bail!(
                "creating bucket {name}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    /// Every object under `prefix` in the bucket, key → size, as the server lists them
    /// (ListObjectsV2).
    fn list(&self, prefix: &str) -> anyhow::Result<BTreeMap<String, u64>> {
        let path = format!("/{BUCKET}?list-type=2&max-keys=1000&prefix={prefix}");
        let xml = self.get_xml(&path)?;
        if xml.contains("<IsTruncated>true</IsTruncated>") {
            bail!("more than 1000 objects under {prefix}");
        }
        let mut out = BTreeMap::new();
        for entry in xml_elements(&xml, "Contents") {
            let key = xml_elements(entry, "Key").first().map(|k| xml_unescape(k));
            let size = xml_elements(entry, "Size")
                .first()
                .and_then(|s| s.parse().ok());
            match (key, size) {
                (Some(k), Some(s)) => out.insert(k, s),
                _ => bail!("a listing entry without a key or size: {entry}"),
            };
        }
        Ok(out)
    }

    /// The keys of the multipart uploads begun and neither completed nor aborted
    /// (ListMultipartUploads): invisible to readers, but they hold storage until a lifecycle
    /// rule aborts them.
    fn pending_uploads(&self) -> anyhow::Result<Vec<String>> {
        let xml = self.get_xml(&format!("/{BUCKET}?uploads"))?;
        Ok(xml_elements(&xml, "Upload")
            .iter()
            .filter_map(|u| xml_elements(u, "Key").first().map(|k| xml_unescape(k)))
            .collect())
    }

    fn get_xml(&self, path: &str) -> anyhow::Result<String> {
        let (status, body) = mock::http(self.addr, "GET", path, None, &[])?;
        let text = String::from_utf8_lossy(&body).into_owned();
        if status != 200 {
            bail!("GET {path}: HTTP {status}: {}", cli::clip(&text, 300));
        }
        Ok(text)
    }

    /// Downloads every object under `prefix` into `dest/<key>` with pyarrow; returns their
    /// keys and sizes as pyarrow listed them.
    fn download(&self, prefix: &str, dest: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
        let dest_text = dest.to_string_lossy();
        let answer = py(
            &["get", &self.host_port(), BUCKET, prefix, &dest_text],
            None,
        )?;
        let mut out = BTreeMap::new();
        for o in answer["objects"].as_array().context("get: no objects")? {
            let key = o["key"].as_str().context("get: an object without a key")?;
            out.insert(key.to_owned(), o["size"].as_u64().unwrap_or(0));
        }
        Ok(out)
    }

    /// One object's text, `None` when there is none.
    fn cat(&self, key: &str) -> anyhow::Result<Option<String>> {
        let answer = py(&["cat", &self.host_port(), BUCKET, key], None)?;
        Ok(answer["text"].as_str().map(str::to_owned))
    }

    /// Writes one object (a signed PutObject, through pyarrow).
    fn put(&self, key: &str, body: &[u8]) -> anyhow::Result<()> {
        py(&["put", &self.host_port(), BUCKET, key], Some(body)).map(drop)
    }

    /// pyarrow's view of the Hive-partitioned Parquet dataset at `path` in the bucket.
    fn dataset(&self, path: &str) -> anyhow::Result<Value> {
        py(&["dataset", &self.host_port(), BUCKET, path], None)
    }

    /// The request log's length in bytes (the werkzeug lines written so far).
    fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map_or(0, |m| m.len())
    }

    /// The request log from byte `from`.
    fn log_since(&self, from: u64) -> anyhow::Result<String> {
        let mut file = std::fs::File::open(&self.log).context("opening moto.log")?;
        file.seek(SeekFrom::Start(from))?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        Ok(text)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the Python helper; its stdout is one JSON object.
fn py(args: &[&str], stdin: Option<&[u8]>) -> anyhow::Result<Value> {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(PY_HELPER)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting python3")?;
    let mut input = child.stdin.take().context("python3 stdin")?;
    input.write_all(stdin.unwrap_or_default())?;
    drop(input);
    let out = child.wait_with_output().context("running python3")?;
    if !out.status.success() {
        bail!(
            "python3 helper {} failed ({}): {}",
            args.first().unwrap_or(&""),
            out.status,
            cli::last_lines(&String::from_utf8_lossy(&out.stderr), 4)
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "python3 helper output is not JSON: {}",
            cli::clip(&String::from_utf8_lossy(&out.stdout), 300)
        )
    })
}

/// The contents of every `<tag>…</tag>` in `xml` (no nesting of the same tag).
fn xml_elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let body = &rest[start + open.len()..];
        let Some(end) = body.find(&close) else { break };
        out.push(&body[..end]);
        rest = &body[end + close.len()..];
    }
    out
}

fn xml_unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// An output location on the moto server, and the empty directory the CLI runs in (its
/// working directory, `HOME` and `TMPDIR`), which must stay empty: with an `s3://` location
/// nothing is written to the local disk.
struct Landing<'c, 'e> {
    ctx: &'c Ctx<'e>,
    moto: &'c Moto,
    /// The key prefix in the bucket (`landing`).
    prefix: String,
    home: PathBuf,
    /// The store's variables the CLI gets.
    env: Vec<(&'static str, String)>,
    copies: Cell<usize>,
}

impl<'c, 'e> Landing<'c, 'e> {
    fn new(ctx: &'c Ctx<'e>, moto: &'c Moto, prefix: &str) -> anyhow::Result<Self> {
        let home = ctx.path(&format!("home-{prefix}"));
        std::fs::create_dir_all(&home).context("creating the CLI's home directory")?;
        let home_text = home.to_string_lossy().into_owned();
        Ok(Landing {
            ctx,
            moto,
            prefix: prefix.to_owned(),
            env: vec![
                ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
                ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
                ("AWS_SESSION_TOKEN", SESSION_TOKEN.to_owned()),
                ("AWS_REGION", REGION.to_owned()),
                ("AWS_ENDPOINT_URL", moto.endpoint()),
                ("AWS_ALLOW_HTTP", "true".to_owned()),
                ("HOME", home_text.clone()),
                ("TMPDIR", home_text),
            ],
            home,
            copies: Cell::new(0),
        })
    }

    /// Only the keys from the environment: the endpoint, region and plain HTTP must come from
    /// the config's `output.storage`.
    fn keys_only(mut self) -> Self {
        self.env
            .retain(|(k, _)| !matches!(*k, "AWS_REGION" | "AWS_ENDPOINT_URL" | "AWS_ALLOW_HTTP"));
        self
    }

    /// `s3://bucket/<prefix>`.
    fn url(&self) -> String {
        format!("s3://{BUCKET}/{}", self.prefix)
    }

    fn table_url(&self) -> String {
        format!("{}/{TABLE}", self.url())
    }

    /// The table's prefix in the bucket (`landing/posthog_events/`).
    fn table_prefix(&self) -> String {
        format!("{}/{TABLE}/", self.prefix)
    }

    fn args(&self, config: &Value, extra: &[&str]) -> anyhow::Result<Vec<OsString>> {
        self.ctx
            .run_args(config, Path::new(&self.url()), &[], extra)
    }

    fn spawn(&self, config: &Value, extra: &[&str]) -> anyhow::Result<RunningCli> {
        let args = self.args(config, extra)?;
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        cli::spawn_in(
            &[],
            &self.ctx.env.cli,
            self.ctx.work.path(),
            &self.home,
            &args,
            &env,
        )
    }

    /// `posthog-cli run --config … --output-dir s3://… EXTRA` to completion, then
    /// [`Landing::after`].
    fn run(&self, ck: &mut Checks, config: &Value, extra: &[&str]) -> anyhow::Result<CliRun> {
        let run = self.spawn(config, extra)?.wait(RUN_DEADLINE)?;
        self.after(ck, &run)?;
        Ok(run)
    }

    /// What every run must keep to: neither the API key nor the store's secret printed, and
    /// nothing written to the local disk (its working and home directory stay empty).
    fn after(&self, ck: &mut Checks, run: &CliRun) -> anyhow::Result<()> {
        self.ctx.no_key_in(ck, run);
        for secret in [SECRET_KEY, SESSION_TOKEN] {
            if run.stdout.contains(secret) || run.stderr.contains(secret) {
                ck.fail(format!(
                    "the store's credential {secret} appears in the output of `{}`",
                    run.label
                ));
            }
        }
        let written = output::all_files(&self.home)?;
        let dirs = std::fs::read_dir(&self.home)
            .with_context(|| format!("listing {}", self.home.display()))?
            .count();
        if !written.is_empty() || dirs > 0 {
            ck.fail(format!(
                "`{}` wrote to the local disk: {dirs} entries in its working/home directory, \
                 files {:?}",
                cli::clip(&run.label, 80),
                written.iter().take(5).collect::<Vec<_>>()
            ));
        }
        Ok(())
    }

    /// Every object under the location, downloaded by pyarrow into a fresh scratch directory
    /// (while no run writes there).
    fn fetch(&self) -> anyhow::Result<Copy> {
        let n = self.copies.get();
        self.copies.set(n + 1);
        let dest = self.ctx.path(&format!("copy-{}-{n:03}", self.prefix));
        let listed = self.moto.list(&format!("{}/", self.prefix))?;
        let downloaded = self.moto.download(&format!("{}/", self.prefix), &dest)?;
        if listed != downloaded {
            bail!(
                "pyarrow downloaded {:?}, the server lists {:?}",
                downloaded.keys().collect::<Vec<_>>(),
                listed.keys().collect::<Vec<_>>()
            );
        }
        let strip = format!("{}/", self.prefix);
        let objects = listed
            .into_iter()
            .map(|(k, s)| (k.strip_prefix(&strip).unwrap_or(&k).to_owned(), s))
            .collect();
        Ok(Copy {
            out: dest.join(&self.prefix),
            objects,
        })
    }

    /// [`Landing::fetch`], then [`check_landing`] on the copy.
    fn check(
        &self,
        ck: &mut Checks,
        source: Source,
        by_day: bool,
        what: &str,
    ) -> anyhow::Result<(Copy, verify::TableReport)> {
        let copy = self.fetch()?;
        let report = check_landing(ck, &copy, &self.table_url(), source, by_day, what)?;
        Ok((copy, report))
    }

    /// The table's lease object as it is now (also while a run renews it), when there is one.
    fn lease(&self) -> anyhow::Result<Option<Value>> {
        let text = self.moto.cat(&format!("{}{LEASE}", self.table_prefix()))?;
        Ok(text.map(|t| serde_json::from_str(&t).unwrap_or(Value::Null)))
    }

    /// Writes the table's lease object, as another run would have.
    fn put_lease(&self, lease: &Value) -> anyhow::Result<()> {
        let key = format!("{}{LEASE}", self.table_prefix());
        self.moto.put(&key, lease.to_string().as_bytes())
    }
}

/// A location's objects copied to disk.
struct Copy {
    /// The copy of the location: its `state.json`, its table directory.
    out: PathBuf,
    /// Object keys relative to the location, with their sizes.
    objects: BTreeMap<String, u64>,
}

impl Copy {
    fn state(&self) -> Option<Value> {
        output::load_state(&self.out.join("state.json")).ok()
    }

    /// The table's part objects, relative to the table (`part-…`, `date=…/part-…`).
    fn parts(&self) -> BTreeSet<String> {
        let table = format!("{TABLE}/");
        self.objects
            .keys()
            .filter_map(|k| k.strip_prefix(&table))
            .filter(|k| k.rsplit('/').next().is_some_and(|n| n.starts_with("part-")))
            .map(str::to_owned)
            .collect()
    }

    /// The parts the state names, relative to the table.
    fn state_parts(&self) -> BTreeSet<String> {
        self.state()
            .and_then(|s| {
                s[TABLE]["parts"].as_array().map(|parts| {
                    parts
                        .iter()
                        .filter_map(|p| p["file"].as_str().map(str::to_owned))
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    /// The table's lease object, when there is one.
    fn lease(&self) -> Option<Value> {
        let text = std::fs::read(self.out.join(TABLE).join(LEASE)).ok()?;
        Some(serde_json::from_slice(&text).unwrap_or(Value::Null))
    }

    fn manifest(&self) -> Option<Value> {
        let text = std::fs::read(self.out.join(TABLE).join(MANIFEST)).ok()?;
        Some(serde_json::from_slice(&text).unwrap_or(Value::Null))
    }
}

/// [`verify::run_ok`], and the run's `rows_output` equal to `rows`; returns the summary.
fn rows_ok(ck: &mut Checks, run: &CliRun, what: &str, rows: u64) -> Option<Value> {
    let summary = verify::run_ok(ck, run, what);
    let got = verify::num(summary.as_ref(), "rows_output");
    ck.check(got == rows, format!("{what}: rows_output {got} (= {rows})"));
    summary
}

/// What a table must hold: the source events (compared value by value) or their UUIDs.
enum Source<'a> {
    Events(&'a verify::Expected),
    Uuids(&'a verify::Uuids),
}

/// After a successful run, the copied location as a reader that knows only the contract sees
/// it: the local verifiers (the state's parts are exactly the part objects, with their rows,
/// sizes and SHA-256; nothing else in the table's prefix, no lease left; each event exactly
/// once, value by value for [`Source::Events`]), the manifest, and the object names.
fn check_landing(
    ck: &mut Checks,
    copy: &Copy,
    table_url: &str,
    source: Source,
    by_day: bool,
    what: &str,
) -> anyhow::Result<verify::TableReport> {
    let look = verify::Look {
        lock: false,
        ..verify::Look::new(&copy.out, Format::Parquet)
    };
    let report = match source {
        Source::Events(expected) => verify::table_with(ck, &look, expected)?,
        Source::Uuids(uuids) => verify::uuids_table(ck, &look, uuids)?,
    };
    let lease = format!("{TABLE}/{LEASE}");
    ck.check(
        !copy.objects.contains_key(&lease),
        format!("{what}: no {lease} object after the run"),
    );
    check_manifest(ck, &copy.out, Some(table_url), what)?;
    check_names(ck, copy, by_day, what);
    Ok(report)
}

/// Every object under the location is the state, the table's manifest or a part named
/// `part-NNNNN-<8 hex>.parquet` (inside a `date=YYYY-MM-DD/` prefix when `by_day`).
fn check_names(ck: &mut Checks, copy: &Copy, by_day: bool, what: &str) {
    let manifest = format!("{TABLE}/{MANIFEST}");
    let table = format!("{TABLE}/");
    let odd: Vec<&String> = copy
        .objects
        .keys()
        .filter(|k| *k != "state.json" && **k != manifest)
        .filter(|k| {
            !k.strip_prefix(&table)
                .is_some_and(|p| is_part_key(p, by_day))
        })
        .collect();
    ck.check(
        odd.is_empty(),
        format!(
            "{what}: the {} objects are state.json, {manifest} and {}part-NNNNN-<8 hex>.parquet \
             (others: {odd:?})",
            copy.objects.len(),
            if by_day { "date=YYYY-MM-DD/" } else { "" }
        ),
    );
}

/// `part-<5+ digits>-<8 hex>.parquet`, inside one `date=YYYY-MM-DD/` when `by_day`.
fn is_part_key(key: &str, by_day: bool) -> bool {
    let name = match (by_day, key.split_once('/')) {
        (true, Some((day, name))) if output::is_day_dir(day) => name,
        (false, None) => key,
        _ => return false,
    };
    let Some(stem) = name
        .strip_prefix("part-")
        .and_then(|n| n.strip_suffix(".parquet"))
    else {
        return false;
    };
    let Some((seq, token)) = stem.split_once('-') else {
        return false;
    };
    seq.len() >= 5
        && seq.bytes().all(|b| b.is_ascii_digit())
        && token.len() == 8
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `_manifest.json` lists exactly the committed parts: the state's parts (and the part files
/// present), each with the state's rows, bytes, SHA-256 and time range, the file's own size
/// and SHA-256, its URL (`table_url/path`; for a local table, ending in `/path`), and the
/// state's watermark and row total.
fn check_manifest(
    ck: &mut Checks,
    out: &Path,
    table_url: Option<&str>,
    what: &str,
) -> anyhow::Result<()> {
    let table_dir = out.join(TABLE);
    let state = output::load_state(&out.join("state.json"))?;
    let sets = output::part_sets(Some(&state), &table_dir, TABLE)?;
    let Some(path) = &sets.manifest else {
        ck.fail(format!("{what}: no {TABLE}/{MANIFEST}"));
        return Ok(());
    };
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let manifest: Value = match serde_json::from_slice(&text) {
        Ok(v) => v,
        Err(e) => {
            ck.fail(format!("{what}: {MANIFEST} is not JSON: {e}"));
            return Ok(());
        }
    };
    let mut problems = manifest_header_problems(&manifest, &state[TABLE]);
    let parts = manifest["parts"].as_array().cloned().unwrap_or_default();
    let listed: Vec<&str> = parts.iter().filter_map(|p| p["path"].as_str()).collect();
    let listed_set: BTreeSet<PathBuf> = listed.iter().map(|p| table_dir.join(p)).collect();
    if listed_set.len() != parts.len() {
        problems.push(format!(
            "{} entries, {} distinct paths",
            parts.len(),
            listed_set.len()
        ));
    }
    if listed_set != sets.state_paths() {
        problems.push(format!(
            "paths {:?} ≠ the state's parts {:?}",
            listed,
            state_files(&state)
        ));
    }
    if listed_set != sets.on_disk {
        problems.push(format!(
            "paths ≠ the {} part files present",
            sets.on_disk.len()
        ));
    }
    let by_file: BTreeMap<String, &Value> = state[TABLE]["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["file"].as_str()?.to_owned(), p)))
        .collect();
    for part in &parts {
        problems.extend(manifest_part_problems(
            part, &by_file, &table_dir, table_url,
        )?);
    }
    ck.check(
        problems.is_empty(),
        format!(
            "{what}: {MANIFEST} lists exactly the {} committed parts (paths, URLs, rows, bytes, \
             SHA-256 of the files, time ranges, watermark){}",
            parts.len(),
            problems
                .first()
                .map(|p| format!(" — {} problems, e.g. {p}", problems.len()))
                .unwrap_or_default()
        ),
    );
    Ok(())
}

/// Proves the manifest check is not vacuous on this copy: a manifest with one part dropped, one
/// with a part's SHA-256 changed, and one with a part's URL pointing elsewhere each fail it.
/// The copy's manifest is put back.
fn manifest_self_test(ck: &mut Checks, copy: &Copy, table_url: &str) -> anyhow::Result<()> {
    let path = copy.out.join(TABLE).join(MANIFEST);
    let original = std::fs::read(&path).context("reading the copied manifest")?;
    let manifest: Value = serde_json::from_slice(&original)?;
    let mut caught = Vec::new();
    for what in ["a part dropped", "a SHA-256 changed", "a URL elsewhere"] {
        let mut doctored = manifest.clone();
        match what {
            "a part dropped" => {
                if let Some(parts) = doctored["parts"].as_array_mut() {
                    parts.pop();
                }
            }
            "a SHA-256 changed" => doctored["parts"][0]["sha256"] = json!("0".repeat(64)),
            _ => {
                doctored["parts"][0]["url"] = json!("s3://elsewhere/part-00001-00000000.parquet");
            }
        }
        std::fs::write(&path, doctored.to_string())?;
        let mut quiet = Checks::default();
        check_manifest(&mut quiet, &copy.out, Some(table_url), what)?;
        if !quiet.passed() {
            caught.push(what);
        }
    }
    std::fs::write(&path, &original)?;
    ck.check(
        caught.len() == 3,
        format!("self-test: the manifest check catches {caught:?} (3 of 3)"),
    );
    Ok(())
}

fn state_files(state: &Value) -> Vec<String> {
    state[TABLE]["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["file"].as_str().map(str::to_owned))
        .collect()
}

/// The manifest's own fields against the table's state: table, run id, commit time,
/// watermark, row total.
fn manifest_header_problems(manifest: &Value, state: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if manifest["table"] != TABLE {
        problems.push(format!("table {} ≠ {TABLE}", manifest["table"]));
    }
    if manifest["location"].as_str().is_none_or(str::is_empty) {
        problems.push("no location".to_owned());
    }
    if manifest["run_id"].as_str().is_none_or(str::is_empty) {
        problems.push("no run_id".to_owned());
    }
    if manifest["committed_at"]
        .as_str()
        .and_then(verify::parse_instant)
        .is_none()
    {
        problems.push(format!(
            "committed_at {} is no instant",
            manifest["committed_at"]
        ));
    }
    let instant = |v: &Value| v.as_str().and_then(verify::parse_instant);
    let mark = &manifest["watermark"];
    if instant(&mark["last_timestamp"]).is_none()
        || instant(&mark["last_timestamp"]) != instant(&state["last_timestamp"])
    {
        problems.push(format!(
            "watermark.last_timestamp {} ≠ the state's {}",
            mark["last_timestamp"], state["last_timestamp"]
        ));
    }
    if mark["last_uuid"] != state["last_uuid"] {
        problems.push(format!(
            "watermark.last_uuid {} ≠ the state's {}",
            mark["last_uuid"], state["last_uuid"]
        ));
    }
    let sum: u64 = manifest["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["rows"].as_u64())
        .sum();
    if manifest["rows"].as_u64() != Some(sum) {
        problems.push(format!("rows {} ≠ the parts' {sum}", manifest["rows"]));
    }
    if let Some(total) = state["rows_total"].as_u64()
        && total != sum
    {
        problems.push(format!("rows {sum} ≠ the state's rows_total {total}"));
    }
    problems
}

/// One manifest entry against the state's record of its part and the file itself.
fn manifest_part_problems(
    part: &Value,
    state_parts: &BTreeMap<String, &Value>,
    table_dir: &Path,
    table_url: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    let Some(path) = part["path"].as_str() else {
        return Ok(vec![format!("an entry without a path: {part}")]);
    };
    match state_parts.get(path) {
        None => problems.push(format!("{path}: not in the state")),
        Some(recorded) => {
            for key in [
                "rows",
                "bytes",
                "sha256",
                "first_timestamp",
                "last_timestamp",
            ] {
                if part[key] != recorded[key] {
                    problems.push(format!(
                        "{path}: {key} {} ≠ the state's {}",
                        part[key], recorded[key]
                    ));
                }
            }
        }
    }
    let url = part["url"].as_str().unwrap_or("");
    let url_ok = match table_url {
        Some(base) => url == format!("{base}/{path}"),
        None => url.ends_with(&format!("/{path}")),
    };
    if !url_ok {
        problems.push(format!("{path}: url {url:?}"));
    }
    let file = table_dir.join(path);
    if file.is_file() {
        let bytes = std::fs::metadata(&file)?.len();
        if part["bytes"].as_u64() != Some(bytes) {
            problems.push(format!(
                "{path}: bytes {} ≠ the file's {bytes}",
                part["bytes"]
            ));
        }
        let sha = output::sha256_file(&file)?;
        if part["sha256"].as_str() != Some(sha.as_str()) {
            problems.push(format!("{path}: sha256 ≠ the file's {sha}"));
        }
    } else {
        problems.push(format!("{path}: no such part"));
    }
    Ok(problems)
}

/// A refused run: exit 2 within [`REFUSAL_WITHIN`], its message naming the lease's URL and
/// when it expires (`expires_at` as the lease object has it, when known: a lease being renewed
/// moves). Returns what is wrong (empty when nothing).
fn refusal_problems(run: &CliRun, lease_url: &str, expires_at: Option<&str>) -> Vec<String> {
    let mut problems = Vec::new();
    if run.code != Some(2) {
        problems.push(format!("exit {:?}, not 2", run.code));
    }
    if run.wall > REFUSAL_WITHIN {
        problems.push(format!("took {:.2} s", run.wall.as_secs_f64()));
    }
    let text = format!("{}\n{}", run.stdout, run.stderr);
    if !text.contains(lease_url) {
        problems.push(format!("the message does not name {lease_url}"));
    }
    match expires_at {
        Some(at) if !text.contains(at) => {
            problems.push(format!(
                "the message does not say the lease expires at {at}"
            ));
        }
        None if !text.to_lowercase().contains("expire") => {
            problems.push("the message does not say when the lease expires".to_owned());
        }
        _ => {}
    }
    if !problems.is_empty() {
        problems.push(run.describe());
    }
    problems
}

fn check_refusal(
    ck: &mut Checks,
    run: &CliRun,
    lease_url: &str,
    expires_at: Option<&str>,
    what: &str,
) {
    let problems = refusal_problems(run, lease_url, expires_at);
    ck.check(
        problems.is_empty(),
        format!(
            "{what}: refused with exit 2 in {:.2} s (≤ {} s), naming {lease_url} and its expiry{}",
            run.wall.as_secs_f64(),
            REFUSAL_WITHIN.as_secs(),
            if problems.is_empty() {
                String::new()
            } else {
                format!(" — {}", problems.join("; "))
            }
        ),
    );
}

/// A lease's `expires_at`.
fn lease_expiry(lease: &Value) -> Option<OffsetDateTime> {
    lease["expires_at"]
        .as_str()
        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
}

/// Sleeps until `at` (plus a margin), when a killed run's lease has expired.
fn sleep_until(at: OffsetDateTime) {
    let wait = at - OffsetDateTime::now_utc() + time::Duration::milliseconds(300);
    if wait.is_positive() {
        std::thread::sleep(wait.unsigned_abs());
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// The base config with the store's options in `output.storage`.
fn config_with_storage(ctx: &Ctx, storage: Value) -> Value {
    let mut config = cli::base_config(&ctx.mock, "parquet");
    config["output"]["storage"] = storage;
    config
}

/// Starts the scenario's mock, moto and the bucket; `None` when moto is missing (skipped or
/// failed, see [`Moto::start`]).
fn start<'e>(
    env: &'e Env,
    ck: &mut Checks,
    name: &str,
    opts: MockOptions,
) -> anyhow::Result<Option<(Ctx<'e>, Moto)>> {
    let ctx = Ctx::start(env, name, opts)?;
    let Some(moto) = Moto::start(ctx.work.path(), ck)? else {
        return Ok(None);
    };
    moto.create_bucket(BUCKET)?;
    Ok(Some((ctx, moto)))
}

/// 5 000 events to `s3://bucket/landing`, run from an empty working and home directory:
/// exit 0, each event exactly once and value by value in the part objects pyarrow reads back,
/// the state at `landing/state.json`, the manifest listing exactly the committed parts, no
/// lease left, the summary's files the part URLs, nothing written to the local disk; a second
/// run adds nothing; then `--state-file s3://…` puts the state elsewhere.
pub fn s3_full(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    let n = 5_000;
    let Some((ctx, moto)) = start(env, ck, "s3-full", MockOptions::new(n, 81))? else {
        return Ok(());
    };
    let expected = verify::expected_map(ctx.opts.expected_events());
    let config = cli::base_config(&ctx.mock, "parquet");
    let landing = Landing::new(&ctx, &moto, "landing")?;
    let run = landing.run(ck, &config, &[])?;
    let summary = rows_ok(ck, &run, "run", n as u64);
    nothing_local(ck, &ctx, &landing)?;
    let (copy, report) = landing.check(ck, Source::Events(&expected), false, "s3")?;
    summary_files(ck, summary.as_ref(), &landing, &copy);
    ck.check(
        copy.objects.contains_key("state.json"),
        format!("the state is at {}/state.json", landing.url()),
    );
    verify::self_test(ck, &report, &expected);
    manifest_self_test(ck, &copy, &landing.table_url())?;
    let ds = moto.dataset(&format!("landing/{TABLE}"))?;
    ck.check(
        ds["rows"].as_u64() == Some(n as u64) && ds["files"].as_u64() == Some(report.parts as u64),
        format!(
            "pyarrow's dataset over {}: {} rows in {} files (= {n} in {})",
            landing.table_url(),
            ds["rows"],
            ds["files"],
            report.parts
        ),
    );
    let run2 = landing.run(ck, &config, &[])?;
    rows_ok(ck, &run2, "a second run", 0);
    let copy2 = landing.fetch()?;
    ck.check(
        copy2.parts() == copy.parts(),
        format!(
            "the second run kept the {} parts as they were",
            copy.parts().len()
        ),
    );
    check_manifest(
        ck,
        &copy2.out,
        Some(&landing.table_url()),
        "after the second run",
    )?;
    state_file_url(ck, &ctx, &moto, &expected)?;
    ck.note(format!(
        "{} rows, {} part objects, {} objects in all, run {:.1} s",
        report.rows,
        report.parts,
        copy.objects.len(),
        run.wall.as_secs_f64()
    ));
    Ok(())
}

/// Nothing of the run on the local disk: its working and home directory are still empty (see
/// [`Landing::after`]), and the work directory holds only what the harness wrote.
fn nothing_local(ck: &mut Checks, ctx: &Ctx, landing: &Landing) -> anyhow::Result<()> {
    let home_empty = std::fs::read_dir(&landing.home)?.next().is_none();
    let strays: Vec<String> = std::fs::read_dir(ctx.work.path())?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !(n.starts_with("cli-")
                || n.starts_with("home-")
                || matches!(n.as_str(), "config.yaml" | "mock.stderr" | "moto.log"))
        })
        .collect();
    ck.check(
        home_empty && strays.is_empty(),
        format!(
            "nothing written to the local disk: the CLI's working/home directory is empty, no \
             posthog-output or other file appeared (strays: {strays:?})"
        ),
    );
    Ok(())
}

/// The summary's `files` are the URLs of the part objects.
fn summary_files(ck: &mut Checks, summary: Option<&Value>, landing: &Landing, copy: &Copy) {
    let files: Vec<&str> = summary
        .and_then(|s| s["files"].as_array())
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let base = format!("{}/", landing.table_url());
    let urls: BTreeSet<String> = copy.parts().iter().map(|p| format!("{base}{p}")).collect();
    let odd: Vec<&&str> = files.iter().filter(|f| !urls.contains(**f)).collect();
    ck.check(
        !files.is_empty() && odd.is_empty(),
        format!(
            "the summary's {} files are URLs of part objects under {base} (others: {odd:?})",
            files.len()
        ),
    );
}

/// `--state-file s3://bucket/states/elsewhere.json` with the output at `s3://bucket/elsewhere`:
/// the state object is where the flag says, none at the location, the table exactly once.
fn state_file_url(
    ck: &mut Checks,
    ctx: &Ctx,
    moto: &Moto,
    expected: &verify::Expected,
) -> anyhow::Result<()> {
    let landing = Landing::new(ctx, moto, "elsewhere")?;
    let config = cli::base_config(&ctx.mock, "parquet");
    let state_url = format!("s3://{BUCKET}/states/elsewhere.json");
    let run = landing.run(ck, &config, &["--state-file", &state_url])?;
    verify::run_ok(ck, &run, "--state-file s3://…");
    let copy = landing.fetch()?;
    let states = ctx.path("copy-states");
    let objects = moto.download("states/", &states)?;
    ck.check(
        objects.contains_key("states/elsewhere.json") && !copy.objects.contains_key("state.json"),
        format!(
            "--state-file {state_url}: the state object is there ({:?}), none at {}/state.json",
            objects.keys().collect::<Vec<_>>(),
            landing.url()
        ),
    );
    let look = verify::Look {
        state: states.join("states/elsewhere.json"),
        values: false,
        lock: false,
        ..verify::Look::new(&copy.out, Format::Parquet)
    };
    verify::table_with(ck, &look, expected)?;
    Ok(())
}

/// Two runs on one location: the second, started while the first holds the lease, is refused
/// (exit 2, fast, naming the lease and its expiry), and so is a third after the first lease
/// would have expired had it not been renewed; the first completes exactly once and removes its
/// lease. A foreign live lease refuses a run and is left as it was; an expired one is taken
/// over. Logs at trace with `verbose_http` (the object store client's own request logs on):
/// neither the store's secret nor its session token ever shows.
pub fn s3_lease(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    let n = 10_000;
    let Some((ctx, moto)) = start(env, ck, "s3-lease", MockOptions::new(n, 83))? else {
        return Ok(());
    };
    let mut source = ctx.opts.expected_events();
    let mut config = config_with_storage(&ctx, json!({"lease_seconds": 5}));
    config["logging"] = json!({"level": "trace", "verbose_http": true});
    // One query at a time, so the first run lasts past its first lease's expiry.
    config["performance"]["query_concurrency"] = json!(1);
    let landing = Landing::new(&ctx, &moto, "landing")?;
    let lease_url = format!("{}/{LEASE}", landing.table_url());
    let (first_wall, renewed) = concurrent_runs(ck, &ctx, &landing, &config, &lease_url, n)?;
    let expected = verify::expected_map(source.iter().cloned());
    landing.check(
        ck,
        Source::Events(&expected),
        false,
        "after the concurrent runs",
    )?;

    // New events, and a live lease of another run: refused, the lease untouched.
    let max_ts = source
        .iter()
        .map(|e| e.timestamp)
        .max()
        .context("no events")?;
    let mut rng = fastrand::Rng::with_seed(83);
    let more = make_events(&mut rng, "s3-lease", 500, |i| {
        max_ts + time::Duration::milliseconds(250 * (i as i64 + 1))
    });
    ctx.mock.insert_events(&more)?;
    source.extend(more);
    let now = OffsetDateTime::now_utc();
    let mut foreign = json!({
        "run_id": "e2e-another-run", "host": "elsewhere.example", "pid": 4242,
        "acquired_at": rfc3339(now - time::Duration::seconds(10)),
        "expires_at": rfc3339(now + time::Duration::seconds(120)),
    });
    landing.put_lease(&foreign)?;
    let before = moto.list(&landing.table_prefix())?;
    let refused = landing.run(ck, &config, &[])?;
    check_refusal(
        ck,
        &refused,
        &lease_url,
        foreign["expires_at"].as_str(),
        "a live lease of another run",
    );
    let after = moto.list(&landing.table_prefix())?;
    let lease_now = landing.lease()?;
    ck.check(
        before == after && lease_now.as_ref() == Some(&foreign),
        "the refused run changed no object and left the other run's lease as it was",
    );

    // The same lease, expired: taken over.
    foreign["acquired_at"] = json!(rfc3339(now - time::Duration::seconds(90)));
    foreign["expires_at"] = json!(rfc3339(now - time::Duration::seconds(30)));
    landing.put_lease(&foreign)?;
    let run = landing.run(ck, &config, &[])?;
    rows_ok(
        ck,
        &run,
        "a run over an expired lease (the 500 new events)",
        500,
    );
    let expected = verify::expected_map(source);
    let (_, report) = landing.check(ck, Source::Events(&expected), false, "after the takeover")?;
    ck.note(format!(
        "first run {:.1} s, lease renewed {renewed}; second run refused in {:.2} s; {} rows",
        first_wall.as_secs_f64(),
        refused.wall.as_secs_f64(),
        report.rows
    ));
    Ok(())
}

/// The first run (queries held 1 s, so it runs ~12 s) takes the lease; a second run is
/// refused; past the first lease's expiry a third is refused too (the lease was renewed);
/// the first completes. Returns the first run's time and whether the lease's expiry moved.
fn concurrent_runs(
    ck: &mut Checks,
    ctx: &Ctx,
    landing: &Landing,
    config: &Value,
    lease_url: &str,
    n: usize,
) -> anyhow::Result<(Duration, bool)> {
    ctx.mock.push_faults(&json!({
        "route": "query", "fault": {"type": "delay", "ms": 1_000}, "times": 1_000
    }))?;
    let lease_key = format!("{}{LEASE}", landing.table_prefix());
    let first = landing.spawn(config, &[])?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !landing.moto.list(&lease_key)?.contains_key(&lease_key) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let lease = landing.lease()?.unwrap_or(Value::Null);
    let acquired = lease["acquired_at"]
        .as_str()
        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok());
    let expires = lease_expiry(&lease);
    let ttl = match (acquired, expires) {
        (Some(a), Some(e)) => (e - a).as_seconds_f64(),
        _ => f64::NAN,
    };
    ck.check(
        lease["run_id"].as_str().is_some_and(|s| !s.is_empty())
            && lease["host"].is_string()
            && lease["pid"].is_u64()
            && (4.0..=6.0).contains(&ttl),
        format!("the first run's lease: run_id, host, pid, acquired_at and expires_at {ttl:.1} s later (lease_seconds 5): {lease}"),
    );
    let second = landing.run(ck, config, &[])?;
    check_refusal(
        ck,
        &second,
        lease_url,
        None,
        "a second run while the first runs",
    );
    let mut renewed = false;
    if let Some(expires) = expires {
        sleep_until(expires + time::Duration::milliseconds(1_200));
        let now = landing.lease()?;
        renewed = now
            .as_ref()
            .and_then(lease_expiry)
            .is_some_and(|e| e > expires);
        ck.check(
            renewed,
            format!("past the first lease's expiry the first run still holds it, renewed: {now:?}"),
        );
        let third = landing.run(ck, config, &[])?;
        check_refusal(
            ck,
            &third,
            lease_url,
            None,
            "a third run past the first lease's expiry",
        );
    }
    let first = first.wait(RUN_DEADLINE)?;
    landing.after(ck, &first)?;
    // The secret checks above mean something only if the store client's logs were on.
    ck.check(
        first.stderr.contains("object_store::") && first.stderr.contains("TRACE"),
        "at trace level with verbose_http the run logs the object store client's lines".to_owned(),
    );
    ctx.mock.clear_faults()?;
    rows_ok(ck, &first, "the first run", n as u64);
    Ok((first.wall, renewed))
}

/// `output.partition_by: day` over events spanning 7 UTC days, to S3 (the endpoint, region
/// and plain HTTP from `output.storage`, only the keys from the environment) and to a local
/// directory: every part under `date=YYYY-MM-DD/`, every row's UTC date its directory's, the
/// rows per day the source's; exactly once value by value; pyarrow's Hive dataset (and on the
/// local disk DuckDB's `hive_partitioning`) reads the event count with a `date` column that
/// agrees.
pub fn s3_partition_day(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    let n = 6_000;
    let Some((ctx, moto)) = start(env, ck, "s3-partition-day", MockOptions::new(n, 87))? else {
        return Ok(());
    };
    let source = ctx.opts.expected_events();
    let mut days: BTreeMap<String, u64> = BTreeMap::new();
    for e in &source {
        *days.entry(day_of(verify::micros(e.timestamp))).or_default() += 1;
    }
    let expected = verify::expected_map(source);
    let mut config = cli::base_config(&ctx.mock, "parquet");
    config["output"]["partition_by"] = json!("day");
    let mut s3_config = config.clone();
    s3_config["output"]["storage"] =
        json!({"endpoint": moto.endpoint(), "region": REGION, "allow_http": true});
    let landing = Landing::new(&ctx, &moto, "landing")?.keys_only();
    let run = landing.run(ck, &s3_config, &[])?;
    rows_ok(ck, &run, "S3 run", n as u64);
    let (copy, report) = landing.check(ck, Source::Events(&expected), true, "s3")?;
    rows_by_day(ck, &report, &days, "S3");
    let ds = moto.dataset(&format!("landing/{TABLE}"))?;
    engine_by_day(ck, &ds, n, &days, "pyarrow's S3 Hive dataset");

    let out = ctx.path("local");
    let run = ctx.run(ck, &config, &out, &[], &[])?;
    rows_ok(ck, &run, "local run", n as u64);
    let report = verify::table(ck, &out, Format::Parquet, &expected, true)?;
    rows_by_day(ck, &report, &days, "local");
    check_manifest(ck, &out, None, "local")?;
    let out_table = out.join(TABLE);
    let engines = py(&["local", "-", &out_table.to_string_lossy()], None)?;
    engine_by_day(
        ck,
        &engines["pyarrow"],
        n,
        &days,
        "pyarrow's local Hive dataset",
    );
    engine_by_day(
        ck,
        &engines["duckdb"],
        n,
        &days,
        "DuckDB read_parquet(hive_partitioning)",
    );
    ck.note(format!(
        "{} days, {} parts on S3, {} locally",
        days.len(),
        copy.parts().len(),
        report.parts
    ));
    Ok(())
}

/// `YYYY-MM-DD` of an instant in µs, in UTC.
fn day_of(micros: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .map(|t| t.date().to_string())
        .unwrap_or_default()
}

/// Every part of the report is in a `date=…` directory holding only rows of that UTC date, and
/// the rows per day are the source's.
fn rows_by_day(
    ck: &mut Checks,
    report: &verify::TableReport,
    days: &BTreeMap<String, u64>,
    what: &str,
) {
    let dirs: Vec<Option<String>> = report
        .table
        .parts
        .iter()
        .map(|p| {
            let dir = p.parent()?.file_name()?.to_string_lossy().into_owned();
            output::is_day_dir(&dir).then(|| dir["date=".len()..].to_owned())
        })
        .collect();
    let outside = dirs.iter().filter(|d| d.is_none()).count();
    ck.check(
        outside == 0 && !dirs.is_empty(),
        format!(
            "{what}: all {} parts are in date=YYYY-MM-DD directories ({outside} outside)",
            dirs.len()
        ),
    );
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut wrong = Vec::new();
    for row in &report.table.rows {
        let day = match row.get("timestamp") {
            Some(output::Cell::Micros(m)) => day_of(*m),
            _ => String::from("?"),
        };
        if dirs.get(row.part).and_then(Option::as_deref) != Some(day.as_str()) {
            wrong.push(format!("{day} in {:?}", dirs.get(row.part)));
        }
        *seen.entry(day).or_default() += 1;
    }
    ck.check(
        wrong.is_empty(),
        format!(
            "{what}: every row's UTC date is its directory's ({} not{})",
            wrong.len(),
            wrong
                .first()
                .map(|w| format!(", e.g. {w}"))
                .unwrap_or_default()
        ),
    );
    ck.check(
        &seen == days,
        format!("{what}: rows per day {seen:?} = the source's {days:?}"),
    );
}

/// An engine's reading of a Hive-partitioned table: `n` rows, a `date` column equal to each
/// row's UTC date, the source's rows per day.
fn engine_by_day(
    ck: &mut Checks,
    answer: &Value,
    n: usize,
    days: &BTreeMap<String, u64>,
    what: &str,
) {
    let dates: BTreeMap<String, u64> = answer["dates"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
        .collect();
    ck.check(
        answer["rows"].as_u64() == Some(n as u64)
            && answer["date_mismatch"].as_u64() == Some(0)
            && &dates == days,
        format!(
            "{what}: {} rows (= {n}), `date` ≠ the UTC date of `timestamp` in {} rows (0), \
             rows per date as the source's: {}",
            answer["rows"],
            answer["date_mismatch"],
            &dates == days
        ),
    );
}

/// Events of `s3-kill9`'s source, and its parts' rows: ~115 bytes a row in Parquet, so a full
/// part is ~11.5 MB, two 5 MiB chunks and the rest; the multipart upload begins with the first
/// chunk, so it is open for more than half of the part's time.
const KILL_EVENTS: usize = 120_000;
const KILL_PART_ROWS: u64 = 100_000;
/// Events added when a run finishes before its kill instant: a multipart part's worth.
const REFILL: usize = 100_000;
/// Kills to deliver, the fewest that pass, and the most runs to start.
const KILLS: usize = 5;
const MIN_KILLS: usize = 5;
const KILL_ATTEMPTS: usize = 16;
/// Phases a kill can land in, from the server's request log.
const BEFORE_PARTS: &str = "before any part upload";
const DURING_UPLOAD: &str = "during a multipart upload";
const BEFORE_COMMIT: &str = "between a part's upload and the state commit";
const AFTER_COMMIT: &str = "after a commit, no part open";

/// 120 000 events, parts of 100 000 rows (~11.5 MB: a multipart upload once the first 5 MiB
/// chunk is full), `lease_seconds: 5`: an unkilled run to another prefix measures a run's time
/// and part sizes; then runs SIGKILLed at seeded random instants over that time (every second
/// and third run, until each phase has been hit, the instant the server has stored a part's
/// first chunk, or completed a part: during a multipart upload, and before the state commit),
/// each kill's phase read from the server's request log; after each kill, what is committed holds each
/// event at most once, a run while the dead run's lease lives is refused naming it, and the
/// next run starts once it has expired. Then a clean run and one that adds nothing: every
/// event exactly once, every part object named by the state, the manifest the state's.
pub fn s3_kill9(env: &Env, ck: &mut Checks) -> anyhow::Result<()> {
    let opts = MockOptions::new(KILL_EVENTS, 89);
    let Some((ctx, moto)) = start(env, ck, "s3-kill9", opts)? else {
        return Ok(());
    };
    let mut config = config_with_storage(&ctx, json!({"lease_seconds": 5}));
    config["config"]["source"]["page_size"] = json!(10_000);
    config["output"]["part_rows"] = json!(KILL_PART_ROWS);
    let mut uuids: verify::Uuids = ctx
        .mock
        .served_uuids()?
        .into_iter()
        .map(|u| (u, ()))
        .collect();
    if uuids.len() != KILL_EVENTS {
        bail!(
            "the mock serves {} distinct UUIDs, not {KILL_EVENTS}",
            uuids.len()
        );
    }
    let span = probe_run(ck, &ctx, &moto, &config)?;
    let landing = Landing::new(&ctx, &moto, "landing")?;
    let seed = env.kill_seed;
    println!("   kill seed {seed} (rerun with --kill-seed {seed})");
    let k = kill_repeatedly(ck, &landing, &config, &mut uuids, span, seed)?;
    kill_checks(ck, &k);

    let run = landing.run(ck, &config, &[])?;
    verify::run_ok(ck, &run, "final run");
    let run = landing.run(ck, &config, &[])?;
    rows_ok(ck, &run, "a run after the final run", 0);
    let (_, report) = landing.check(ck, Source::Uuids(&uuids), false, "after the final run")?;
    let pending = moto.pending_uploads()?.len();
    let phases: Vec<String> = k.phases.iter().map(|(p, n)| format!("{p}: {n}")).collect();
    ck.note(format!(
        "seed {seed}, {} kills at ms [{}] ({}); {} refused while the lease lived; {} rows in {} \
         parts; {pending} multipart uploads left pending by the kills",
        k.kills,
        k.instants.join(" "),
        phases.join(", "),
        k.refusals,
        report.rows,
        report.parts
    ));
    Ok(())
}

/// An unkilled run to `s3://bucket/probe`: its time, and parts over the 5 MiB multipart
/// minimum, uploaded in parts (`?partNumber=` requests in the server's log).
fn probe_run(ck: &mut Checks, ctx: &Ctx, moto: &Moto, config: &Value) -> anyhow::Result<Duration> {
    let from = moto.log_len();
    let probe = Landing::new(ctx, moto, "probe")?;
    let run = probe.run(ck, config, &[])?;
    verify::run_ok(ck, &run, "unkilled probe run");
    let sizes: Vec<u64> = moto
        .list(&probe.table_prefix())?
        .into_iter()
        .filter(|(k, _)| k.contains("/part-"))
        .map(|(_, s)| s)
        .collect();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let log = moto.log_since(from)?;
    let chunks = log
        .lines()
        .filter(|l| l.contains("/probe/") && l.contains("partNumber="))
        .count();
    ck.check(
        largest >= 5 << 20,
        format!(
            "an unkilled run takes {:.1} s and writes parts of {sizes:?} bytes (largest ≥ 5 MiB) \
             in {chunks} multipart chunks",
            run.wall.as_secs_f64()
        ),
    );
    Ok(run.wall)
}

/// What [`kill_repeatedly`] saw.
#[derive(Default)]
struct KillLog {
    kills: usize,
    /// Runs that finished before their kill instant.
    finished: usize,
    /// Each run's kill instant in ms (`done` when it finished first, `@part` when killed as a
    /// part's upload completed) and the phase it hit.
    instants: Vec<String>,
    phases: BTreeMap<&'static str, usize>,
    /// Kills after which part objects the state does not name were present.
    orphans: usize,
    /// Runs started while a killed run's lease lived, and what was wrong with their refusal.
    refusals: usize,
    refusal_problems: Vec<String>,
    /// What was wrong with the committed table after a kill.
    after_kill: Vec<String>,
}

fn kill_checks(ck: &mut Checks, k: &KillLog) {
    ck.check(
        k.kills >= MIN_KILLS,
        format!(
            "{} SIGKILLs delivered mid-run (≥ {MIN_KILLS}), {} runs finished first",
            k.kills, k.finished
        ),
    );
    ck.check(
        k.after_kill.is_empty(),
        format!(
            "after every kill the committed parts exist, match their sizes and hashes, hold no \
             event twice; the manifest names only committed parts{}",
            k.after_kill
                .first()
                .map(|f| format!(" — {f}"))
                .unwrap_or_default()
        ),
    );
    ck.check(
        k.refusals >= 1 && k.refusal_problems.is_empty(),
        format!(
            "{} runs started while a killed run's lease lived were refused (exit 2, naming the \
             lease and its expiry){}",
            k.refusals,
            k.refusal_problems
                .first()
                .map(|f| format!(" — {f}"))
                .unwrap_or_default()
        ),
    );
    for phase in [DURING_UPLOAD, BEFORE_COMMIT] {
        let hits = k.phases.get(phase).copied().unwrap_or(0);
        ck.check(hits >= 1, format!("kills {phase}: {hits} (≥ 1)"));
    }
    ck.check(
        k.orphans >= k.phases.get(BEFORE_COMMIT).copied().unwrap_or(0).min(1),
        format!(
            "kills that left a part object the state does not name: {} (seen in the listing)",
            k.orphans
        ),
    );
}

/// Runs and SIGKILLs the CLI until [`KILLS`] kills, one or more during a multipart upload and
/// one or more before the state commit (or [`KILL_ATTEMPTS`] runs), checking what is committed
/// after each; a run that finishes first gets [`REFILL`] new events for the next.
fn kill_repeatedly(
    ck: &mut Checks,
    landing: &Landing,
    config: &Value,
    uuids: &mut verify::Uuids,
    span: Duration,
    seed: u64,
) -> anyhow::Result<KillLog> {
    let moto = landing.moto;
    let mut rng = fastrand::Rng::with_seed(seed);
    let span_ms = u64::try_from(span.as_millis()).unwrap_or(u64::MAX).max(100);
    // After the generated events (2025-01-01 to 2025-01-08).
    let mut next_ts = OffsetDateTime::from_unix_timestamp(1_736_294_400)?;
    let mut k = KillLog::default();
    for attempt in 0..KILL_ATTEMPTS {
        let phases_hit = [DURING_UPLOAD, BEFORE_COMMIT]
            .iter()
            .all(|p| k.phases.contains_key(p));
        if k.kills >= KILLS && phases_hit {
            break;
        }
        let from = moto.log_len();
        // Every first and second run of three, until that phase has been hit, dies the
        // instant the server has stored a part's first chunk, or completed a part. The chunk
        // kill comes first: only a run with a whole part's worth of rows to write uploads in
        // chunks, and after a few kills have committed progress a run may have only the
        // refill to write, one small part in a single put (a CI run whose chunk kills all came
        // later saw no chunk in 16 runs).
        let target = match attempt % 3 {
            0 if !k.phases.contains_key(DURING_UPLOAD) => Some(Request::Chunk),
            1 if !k.phases.contains_key(BEFORE_COMMIT) => Some(Request::Done),
            _ => None,
        };
        let running = landing.spawn(config, &[])?;
        let (run, instant) = match target {
            Some(request) => {
                let mut watch = LogWatch::new(moto, from, &landing.prefix);
                let run = running.kill_when(|| watch.seen(&request), span * 2)?;
                let at = if request == Request::Chunk {
                    "chunk"
                } else {
                    "part"
                };
                let ms = run.wall.as_millis();
                (run, format!("{ms}@{at}"))
            }
            None => {
                let ms = rng.u64(span_ms / 20..=span_ms);
                (running.kill_at(Duration::from_millis(ms))?, ms.to_string())
            }
        };
        landing.after(ck, &run)?;
        if !run.killed {
            k.finished += 1;
            k.instants.push(format!("{instant}(done)"));
            if run.code != Some(0) {
                ck.fail(format!(
                    "attempt {attempt}: a run after a kill failed: {}",
                    run.describe()
                ));
            }
            let mut more_rng = fastrand::Rng::with_seed(seed ^ attempt as u64);
            let base = next_ts;
            let more = make_events(&mut more_rng, "s3-kill9", REFILL, |i| {
                base + time::Duration::milliseconds(10 * (i as i64 + 1))
            });
            next_ts = base + time::Duration::seconds(1_200);
            // In requests under the mock's 20 MiB body limit.
            for chunk in more.chunks(10_000) {
                landing.ctx.mock.insert_events(chunk)?;
            }
            uuids.extend(more.iter().map(|e| (e.uuid, ())));
            continue;
        }
        k.kills += 1;
        // Let the server finish what the dead run had sent.
        std::thread::sleep(Duration::from_millis(200));
        let phase = phase_of(&moto.log_since(from)?, &landing.prefix);
        *k.phases.entry(phase).or_default() += 1;
        k.instants
            .push(format!("{instant}({})", short_phase(phase)));
        after_kill(ck, landing, config, uuids, &mut k, &instant)?;
    }
    Ok(k)
}

fn short_phase(phase: &str) -> &'static str {
    match phase {
        BEFORE_PARTS => "start",
        DURING_UPLOAD => "upload",
        BEFORE_COMMIT => "pre-commit",
        _ => "committed",
    }
}

/// After a kill: the committed table (at most once, parts intact, the manifest naming only
/// committed parts that exist); a run while the lease lives is refused; then waits until the
/// lease has expired.
fn after_kill(
    ck: &mut Checks,
    landing: &Landing,
    config: &Value,
    uuids: &verify::Uuids,
    k: &mut KillLog,
    instant: &str,
) -> anyhow::Result<()> {
    let copy = landing.fetch()?;
    if copy
        .parts()
        .difference(&copy.state_parts())
        .next()
        .is_some()
    {
        k.orphans += 1;
    }
    let look = verify::Look {
        complete: false,
        lock: false,
        ..verify::Look::new(&copy.out, Format::Parquet)
    };
    let mut quiet = Checks::default();
    if copy.objects.contains_key("state.json") && copy.state().is_none() {
        quiet.fail("state.json does not parse");
    }
    verify::uuids_table(&mut quiet, &look, uuids)?;
    if let Some(manifest) = copy.manifest() {
        let committed = copy.state_parts();
        let named: Vec<&str> = manifest["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["path"].as_str())
            .collect();
        let stray: Vec<&&str> = named
            .iter()
            .filter(|p| !committed.contains(**p) || !copy.parts().contains(**p))
            .collect();
        if !stray.is_empty() {
            quiet.fail(format!(
                "the manifest names parts not committed or gone: {stray:?}"
            ));
        }
    }
    if !quiet.passed() {
        k.after_kill.push(format!(
            "after the kill at {instant} ms: {}",
            quiet.failures().join("; ")
        ));
    }
    let Some(lease) = copy.lease() else {
        return Ok(());
    };
    let Some(expires) = lease_expiry(&lease) else {
        k.refusal_problems
            .push(format!("a lease without expires_at: {lease}"));
        std::thread::sleep(Duration::from_secs(6));
        return Ok(());
    };
    if expires > OffsetDateTime::now_utc() + time::Duration::milliseconds(500) {
        let retry = landing.run(ck, config, &[])?;
        k.refusals += 1;
        let lease_url = format!("{}/{LEASE}", landing.table_url());
        let problems = refusal_problems(&retry, &lease_url, lease["expires_at"].as_str());
        if !problems.is_empty() {
            k.refusal_problems.push(format!(
                "after the kill at {instant} ms: {}",
                problems.join("; ")
            ));
        }
    }
    sleep_until(expires);
    Ok(())
}

/// What one line of the server's request log says about a run's table.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// A part's multipart upload begun (`POST …/part-…?uploads`).
    Open,
    /// A chunk of it (`PUT …?partNumber=…`).
    Chunk,
    /// A part complete: its multipart upload completed, or put in one request.
    Done,
    /// The state committed (`PUT <location>/state.json`).
    Commit,
}

/// One werkzeug log line (`… "METHOD /bucket/key?query HTTP/1.1" STATUS -`) of a successful
/// request on the table parts or the state of the location at `prefix` in the bucket.
fn classify(line: &str, prefix: &str) -> Option<Request> {
    let mut quoted = line.split('"');
    let request = quoted.nth(1)?;
    let status = quoted.next()?.split_whitespace().next()?;
    if !status.starts_with('2') {
        return None;
    }
    let mut words = request.split(' ');
    let (method, target) = (words.next()?, words.next()?);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path == format!("/{BUCKET}/{prefix}/state.json") {
        return (method == "PUT").then_some(Request::Commit);
    }
    let name = path.strip_prefix(&format!("/{BUCKET}/{prefix}/{TABLE}/"))?;
    if !name.rsplit('/').next()?.starts_with("part-") {
        return None;
    }
    match method {
        "POST" if query.starts_with("uploads") => Some(Request::Open),
        "PUT" if query.contains("partNumber=") => Some(Request::Chunk),
        "POST" if query.contains("uploadId=") => Some(Request::Done),
        "PUT" if query.is_empty() => Some(Request::Done),
        _ => None,
    }
}

/// The phase a killed run was in, from the requests the server completed for it.
fn phase_of(log: &str, prefix: &str) -> &'static str {
    let (mut open, mut any_part, mut done_uncommitted) = (0i64, false, false);
    for request in log.lines().filter_map(|l| classify(l, prefix)) {
        match request {
            Request::Open => {
                open += 1;
                any_part = true;
            }
            Request::Chunk => any_part = true,
            Request::Done => {
                open = (open - 1).max(0);
                any_part = true;
                done_uncommitted = true;
            }
            Request::Commit => done_uncommitted = false,
        }
    }
    if done_uncommitted {
        BEFORE_COMMIT
    } else if open > 0 {
        DURING_UPLOAD
    } else if any_part {
        AFTER_COMMIT
    } else {
        BEFORE_PARTS
    }
}

/// Follows the server's request log from an offset, for the instant a part is complete.
struct LogWatch<'a> {
    moto: &'a Moto,
    /// The location's prefix in the bucket.
    prefix: &'a str,
    offset: u64,
    pending: String,
}

impl<'a> LogWatch<'a> {
    fn new(moto: &'a Moto, offset: u64, prefix: &'a str) -> Self {
        LogWatch {
            moto,
            prefix,
            offset,
            pending: String::new(),
        }
    }

    /// Whether a line since the last call is `request` on one of the table's parts.
    fn seen(&mut self, request: &Request) -> bool {
        let Ok(text) = self.moto.log_since(self.offset) else {
            return false;
        };
        self.offset += text.len() as u64;
        self.pending.push_str(&text);
        let Some(end) = self.pending.rfind('\n') else {
            return false;
        };
        let complete: String = self.pending.drain(..=end).collect();
        complete
            .lines()
            .any(|l| classify(l, self.prefix).as_ref() == Some(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(request: &str, status: u16) -> String {
        format!("127.0.0.1 - - [06/Dec/2026 03:27:06] \"{request} HTTP/1.1\" {status} -")
    }

    #[test]
    fn request_log_lines_say_what_the_run_did() {
        let part = "/bucket/landing/posthog_events/part-00001-1a2b3c4d.parquet";
        let cases = [
            (format!("POST {part}?uploads"), 200, Some(Request::Open)),
            (format!("PUT {part}?partNumber=1&uploadId=x"), 200, Some(Request::Chunk)),
            (format!("POST {part}?uploadId=x"), 200, Some(Request::Done)),
            (format!("PUT {part}"), 200, Some(Request::Done)),
            ("PUT /bucket/landing/state.json".to_owned(), 200, Some(Request::Commit)),
            ("PUT /bucket/landing/state.json".to_owned(), 412, None),
            ("GET /bucket/landing/state.json".to_owned(), 200, None),
            (format!("DELETE {part}"), 204, None),
            ("PUT /bucket/landing/posthog_events/_lease".to_owned(), 200, None),
            ("PUT /bucket/probe/posthog_events/part-00001-1a2b3c4d.parquet".to_owned(), 200, None),
            (
                "POST /bucket/landing/posthog_events/date=2025-01-01/part-00002-1a2b3c4d.parquet?uploadId=y"
                    .to_owned(),
                200,
                Some(Request::Done),
            ),
        ];
        for (request, status, want) in cases {
            assert_eq!(
                classify(&line(&request, status), "landing"),
                want,
                "{request}"
            );
        }
    }

    #[test]
    fn a_kill_phase_is_the_last_thing_the_server_completed() {
        let part = "/bucket/landing/posthog_events/part-00001-1a2b3c4d.parquet";
        let commit = line("PUT /bucket/landing/state.json", 200);
        let open = line(&format!("POST {part}?uploads"), 200);
        let chunk = line(&format!("PUT {part}?partNumber=1&uploadId=x"), 200);
        let done = line(&format!("POST {part}?uploadId=x"), 200);
        let log = |lines: &[&String]| lines.iter().map(|l| format!("{l}\n")).collect::<String>();
        assert_eq!(phase_of("", "landing"), BEFORE_PARTS);
        assert_eq!(phase_of(&log(&[&open, &chunk]), "landing"), DURING_UPLOAD);
        assert_eq!(
            phase_of(&log(&[&open, &chunk, &done]), "landing"),
            BEFORE_COMMIT
        );
        assert_eq!(
            phase_of(&log(&[&open, &chunk, &done, &commit]), "landing"),
            AFTER_COMMIT
        );
        assert_eq!(
            phase_of(&log(&[&open, &done, &commit, &open]), "landing"),
            DURING_UPLOAD
        );
    }

    #[test]
    fn part_keys_and_listings() {
        assert!(is_part_key("part-00001-1a2b3c4d.parquet", false));
        assert!(is_part_key("part-123456-00ff00ff.parquet", false));
        assert!(!is_part_key("part-00001.parquet", false));
        assert!(!is_part_key("part-00001-1A2B3C4D.parquet", false));
        assert!(!is_part_key(
            "date=2025-01-01/part-00001-1a2b3c4d.parquet",
            false
        ));
        assert!(is_part_key(
            "date=2025-01-01/part-00001-1a2b3c4d.parquet",
            true
        ));
        assert!(!is_part_key("part-00001-1a2b3c4d.parquet", true));
        assert!(!is_part_key(
            "date=2025-1-01/part-00001-1a2b3c4d.parquet",
            true
        ));
        let xml = "<R><Contents><Key>a&amp;b</Key><Size>3</Size></Contents>\
                   <Contents><Key>c</Key><Size>0</Size></Contents></R>";
        let entries = xml_elements(xml, "Contents");
        assert_eq!(entries.len(), 2);
        assert_eq!(xml_unescape(xml_elements(entries[0], "Key")[0]), "a&b");
        assert_eq!(xml_elements(entries[1], "Size"), ["0"]);
    }
}
