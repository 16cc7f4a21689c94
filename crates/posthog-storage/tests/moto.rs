//! posthog-storage against a real S3 implementation: `moto_server` (the `moto[server]` Python
//! package) on loopback. It checks what a mock of our own could not: multipart uploads, the
//! conditional puts the state and the lease rely on, and how S3's refusals are classified.
//!
//! Without `moto_server` on the PATH the test prints `SKIPPED: …` and passes, unless
//! `POSTHOG_REQUIRE_MOTO=1` (then it fails).

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use posthog_error::Category;
use posthog_state::{StateStore as _, TableState};
use posthog_storage::{
    Bucket, LEASE_DEFAULT_TTL, Lease, LeaseHolder, Location, ObjectStateStore, ObjectUrl,
    PutCondition, StorageError, StorageOptions,
};
use secrecy::SecretString;
use time::OffsetDateTime;

/// A running `moto_server`, killed when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts `moto_server` on a free port and waits until it answers; `None` when it is not
    /// installed.
    fn start() -> Option<Moto> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = match Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => panic!("cannot start moto_server: {e}"),
        };
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not start listening"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket with an unsigned `PUT /<bucket>` (moto does not check signatures).
    fn create_bucket(&self, name: &str) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: \
             close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "create bucket: {answer}"
        );
    }

    fn options(&self, extra: &[(&str, &str)]) -> StorageOptions {
        let mut environment: Vec<(String, SecretString)> = [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ]
        .iter()
        .chain(extra)
        .map(|(n, v)| ((*n).to_owned(), SecretString::from(*v)))
        .collect();
        environment.sort_by(|a, b| a.0.cmp(&b.0));
        StorageOptions {
            endpoint: Some(self.endpoint()),
            region: Some("us-east-1".into()),
            allow_http: Some(true),
            environment,
            retry_timeout: Duration::from_secs(5),
            max_retries: 2,
        }
    }

    fn bucket(&self, url: &str, extra: &[(&str, &str)]) -> Bucket {
        Bucket::connect(&object_url(url), &self.options(extra)).unwrap()
    }
}

fn object_url(text: &str) -> ObjectUrl {
    match Location::parse(text).unwrap() {
        Location::Object(url) => url,
        Location::Local(_) => panic!("{text} is an object URL"),
    }
}

/// Bytes that differ at every position of a part, so a misplaced part shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i / 251) as u8)
        .collect()
}

fn holder(run_id: &str) -> LeaseHolder {
    LeaseHolder {
        run_id: run_id.into(),
        host: "ci".into(),
        pid: 7,
    }
}

#[test]
fn object_storage_against_moto_s3() {
    let Some(moto) = Moto::start() else {
        if std::env::var("POSTHOG_REQUIRE_MOTO").as_deref() == Ok("1") {
            panic!("moto_server is not on the PATH and POSTHOG_REQUIRE_MOTO=1");
        }
        eprintln!("SKIPPED: moto_server is not on the PATH (pip install 'moto[server]')");
        return;
    };
    moto.create_bucket("lake");
    let bucket = moto.bucket("s3://lake/posthog", &[]);

    a_twelve_mib_part_is_uploaded_in_parts_and_reads_back_exactly(&bucket);
    conditional_puts_are_honoured(&bucket);
    a_live_lease_refuses_a_second_run(&bucket);
    state_commits_of_two_tables_merge(&bucket);
    the_environment_alone_reaches_the_store(&moto, &bucket);
    a_missing_bucket_is_a_config_error(&moto);
    an_anonymous_read_of_a_private_object_is_a_permission_error(&moto, &bucket);
}

fn a_twelve_mib_part_is_uploaded_in_parts_and_reads_back_exactly(bucket: &Bucket) {
    let parts = bucket.parts("events");
    let data = pattern(12 * 1024 * 1024);
    let mut upload = parts.create("date=2026-01-01/part-00001.bin").unwrap();
    for piece in data.chunks(1_000_003) {
        upload.write_all(piece).unwrap();
    }
    assert!(parts.list().unwrap().is_empty(), "nothing before commit");
    upload.commit().unwrap();
    let (bytes, _) = bucket
        .get("events/date=2026-01-01/part-00001.bin")
        .unwrap()
        .unwrap();
    assert_eq!(bytes.len(), data.len());
    assert!(bytes[..] == data[..], "12 MiB read back byte for byte");

    let mut dropped = parts.create("part-00002.bin").unwrap();
    dropped.write_all(&pattern(6 * 1024 * 1024)).unwrap();
    drop(dropped);
    assert_eq!(parts.list().unwrap(), ["date=2026-01-01/part-00001.bin"]);
    assert_eq!(
        parts
            .remove(&["date=2026-01-01/part-00001.bin", "gone"])
            .unwrap(),
        1
    );
}

fn conditional_puts_are_honoured(bucket: &Bucket) {
    let v1 = bucket
        .put("cas", Bytes::from_static(b"1"), PutCondition::Create)
        .unwrap();
    assert!(v1.e_tag.is_some(), "S3 answers an ETag");
    let twice = bucket.put("cas", Bytes::from_static(b"2"), PutCondition::Create);
    let Err(StorageError::Precondition { key }) = twice else {
        panic!("a second create is refused: {twice:?}")
    };
    assert_eq!(key, "s3://lake/posthog/cas");
    let v2 = bucket
        .put(
            "cas",
            Bytes::from_static(b"2"),
            PutCondition::Match(v1.clone()),
        )
        .unwrap();
    let stale = bucket.put("cas", Bytes::from_static(b"3"), PutCondition::Match(v1));
    assert!(
        matches!(stale, Err(StorageError::Precondition { .. })),
        "{stale:?}"
    );
    let (bytes, read) = bucket.get("cas").unwrap().unwrap();
    assert_eq!((&bytes[..], read), (&b"2"[..], v2));
    bucket.delete("cas").unwrap();
    bucket.delete("cas").unwrap();
}

fn a_live_lease_refuses_a_second_run(bucket: &Bucket) {
    let now = OffsetDateTime::now_utc();
    let lease = Lease::acquire(
        bucket,
        "events/_lease",
        LEASE_DEFAULT_TTL,
        holder("run-1"),
        now,
    )
    .unwrap();
    let err = Lease::acquire(
        bucket,
        "events/_lease",
        LEASE_DEFAULT_TTL,
        holder("run-2"),
        now,
    )
    .unwrap_err();
    assert!(
        matches!(err, StorageError::LeaseHeld { ref run_id, .. } if run_id == "run-1"),
        "{err}"
    );
    assert_eq!(err.category(), Category::Config);
    assert!(
        err.to_string()
            .starts_with("s3://lake/posthog/events/_lease is held by run run-1")
    );
    lease.release().unwrap();
    assert_eq!(bucket.head("events/_lease").unwrap(), None, "released");
    let later = now + LEASE_DEFAULT_TTL;
    Lease::acquire(
        bucket,
        "events/_lease",
        LEASE_DEFAULT_TTL,
        holder("run-2"),
        later,
    )
    .unwrap()
    .release()
    .unwrap();
}

fn state_commits_of_two_tables_merge(bucket: &Bucket) {
    let at = |ts: &str| TableState {
        last_timestamp: Some(ts.into()),
        ..TableState::default()
    };
    let mut events = ObjectStateStore::open(bucket.clone(), "state.json").unwrap();
    let mut persons = ObjectStateStore::open(bucket.clone(), "state.json").unwrap();
    events.check_writable().unwrap();
    events
        .commit("events", &at("2026-01-01T00:00:00Z"))
        .unwrap();
    persons
        .commit("persons", &at("2026-02-01T00:00:00Z"))
        .unwrap();
    events
        .commit("events", &at("2026-01-02T00:00:00Z"))
        .unwrap();
    let reopened = ObjectStateStore::open(bucket.clone(), "state.json").unwrap();
    assert_eq!(reopened.tables().collect::<Vec<_>>(), ["events", "persons"]);
    assert_eq!(
        reopened.load("events").unwrap(),
        Some(at("2026-01-02T00:00:00Z"))
    );
    let err = persons
        .commit("events", &at("2026-09-09T00:00:00Z"))
        .unwrap_err();
    assert!(
        matches!(err, posthog_state::StateError::Conflict { .. }),
        "{err}"
    );
}

/// `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP` and `AWS_REGION` as the CLI passes them, without the
/// config's options.
fn the_environment_alone_reaches_the_store(moto: &Moto, bucket: &Bucket) {
    bucket
        .put(
            "via-env",
            Bytes::from_static(b"env"),
            PutCondition::Overwrite,
        )
        .unwrap();
    let endpoint = moto.endpoint();
    let options = StorageOptions {
        endpoint: None,
        region: None,
        allow_http: None,
        ..moto.options(&[
            ("AWS_ENDPOINT_URL", &endpoint),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", "us-east-1"),
        ])
    };
    let from_env = Bucket::connect(&object_url("s3://lake/posthog"), &options).unwrap();
    let (bytes, _) = from_env.get("via-env").unwrap().unwrap();
    assert_eq!(&bytes[..], b"env");
}

fn a_missing_bucket_is_a_config_error(moto: &Moto) {
    let bucket = moto.bucket("s3://no-such-bucket/p", &[]);
    let read = bucket.get("state.json").unwrap_err();
    let write = bucket
        .put("k", Bytes::from_static(b"x"), PutCondition::Overwrite)
        .unwrap_err();
    let list = bucket.list("").unwrap_err();
    for err in [read, write, list] {
        assert!(matches!(err, StorageError::NoSuchBucket { .. }), "{err}");
        assert_eq!(err.category(), Category::Config);
        assert!(
            err.to_string()
                .contains("the bucket s3://no-such-bucket does not exist"),
            "{err}"
        );
    }
    let state = ObjectStateStore::open(bucket, "state.json").unwrap_err();
    assert!(
        state
            .to_string()
            .contains("s3://no-such-bucket/p/state.json"),
        "{state}"
    );
}

/// moto checks no signature, but it applies object ACLs to anonymous requests: an unsigned
/// read (object_store's `AWS_SKIP_SIGNATURE`) of a private object is refused with 403.
fn an_anonymous_read_of_a_private_object_is_a_permission_error(moto: &Moto, signed: &Bucket) {
    signed
        .put("private", Bytes::from_static(b"x"), PutCondition::Overwrite)
        .unwrap();
    let anonymous = moto.bucket("s3://lake/posthog", &[("AWS_SKIP_SIGNATURE", "true")]);
    let err = anonymous.get("private").unwrap_err();
    assert!(matches!(err, StorageError::Denied { .. }), "{err}");
    assert_eq!(err.category(), Category::Permission);
    assert!(
        err.to_string()
            .starts_with("cannot read s3://lake/posthog/private: access denied"),
        "{err}"
    );
    // Through the PartStore seam the category survives as the io::Error's kind.
    let mut upload = anonymous.parts("").create("private").unwrap();
    upload.write_all(b"y").unwrap();
    let err = upload.commit().unwrap_err();
    assert_eq!(err.category(), Category::Permission, "{err}");
    let chain = posthog_error::ErrorChain::new(&err).to_string();
    assert_eq!(
        chain.matches("403 Forbidden").count(),
        1,
        "each cause once: {chain}"
    );
    assert!(
        !chain.contains("test"),
        "no credential in the message: {chain}"
    );
}
