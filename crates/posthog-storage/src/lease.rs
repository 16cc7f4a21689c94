//! One run at a time on a location: [`Lease`], an object created only if absent, renewed
//! while its run lives and expiring by itself after a crash (object stores have no lock files
//! and no processes to ask).

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::bucket::{self, PutCondition, Version};
use crate::error::Failure;
use crate::{Bucket, StorageError};

/// The lease's time to live unless renewed: a crashed run blocks the next one this long at
/// most. Renewed every third of it.
pub const LEASE_DEFAULT_TTL: Duration = Duration::from_secs(60);

/// How many times [`Lease::acquire`] tries when the object changes under it.
const ACQUIRE_ATTEMPTS: usize = 3;

/// Who holds a lease, as another run is told when it is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseHolder {
    /// The run's id.
    pub run_id: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
}

/// The lease object's body.
#[derive(Serialize, Deserialize)]
struct LeaseBody {
    run_id: String,
    host: String,
    pid: u32,
    #[serde(with = "time::serde::rfc3339")]
    acquired_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

impl LeaseBody {
    fn new(holder: &LeaseHolder, acquired_at: OffsetDateTime, ttl: Duration) -> LeaseBody {
        let expires_at = acquired_at.checked_add(ttl.try_into().unwrap_or(time::Duration::MAX));
        LeaseBody {
            run_id: holder.run_id.clone(),
            host: holder.host.clone(),
            pid: holder.pid,
            acquired_at,
            expires_at: expires_at.unwrap_or(acquired_at),
        }
    }

    /// The body, or `None` for anything that is not one (garbage, someone else's object).
    fn parse(bytes: &[u8]) -> Option<LeaseBody> {
        serde_json::from_slice(bytes).ok()
    }

    fn to_bytes(&self, lease: &str) -> Result<Bytes, StorageError> {
        serde_json::to_vec(self)
            .map(Bytes::from)
            .map_err(|e| StorageError::Key {
                object: lease.to_owned(),
                reason: format!("cannot write the lease (a time outside years 0 to 9999?): {e}"),
            })
    }

    fn is(&self, holder: &LeaseHolder, acquired_at: OffsetDateTime) -> bool {
        self.run_id == holder.run_id
            && self.host == holder.host
            && self.pid == holder.pid
            && self.acquired_at == acquired_at
    }

    /// The refusal a run gets while this lease is live at `now`.
    fn held(&self, lease: &str, now: OffsetDateTime) -> StorageError {
        let left = self.expires_at - now;
        let secs = left.whole_seconds() + i64::from(left.subsec_nanoseconds() > 0);
        StorageError::LeaseHeld {
            lease: lease.to_owned(),
            run_id: self.run_id.clone(),
            host: self.host.clone(),
            pid: self.pid,
            expires_at: self
                .expires_at
                .format(&Rfc3339)
                .unwrap_or_else(|_| self.expires_at.to_string()),
            expires_in_secs: u64::try_from(secs).unwrap_or(0),
        }
    }
}

/// What the lease's owner and its renewal task share.
struct Held {
    version: Mutex<Version>,
    lost: Mutex<Option<String>>,
    /// The `expires_at` of the body this run last wrote: past it, another run may take the
    /// lease over even if no renewal has failed yet (this run stalled).
    expires_at: Mutex<OffsetDateTime>,
    ttl: Duration,
}

impl Held {
    fn version(&self) -> Version {
        self.version
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_version(&self, version: Version) {
        *self.version.lock().unwrap_or_else(PoisonError::into_inner) = version;
    }

    fn set_expires_at(&self, expires_at: OffsetDateTime) {
        *self
            .expires_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = expires_at;
    }

    /// Why the lease cannot be relied on at `now`: a failed renewal, or an expiry closer than
    /// a sixth of its time to live (renewals every third keep it at least two thirds ahead; a
    /// commit checked now still lands before another run could take it over).
    fn lost_at(&self, now: OffsetDateTime) -> Option<String> {
        if let Some(why) = self
            .lost
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Some(why);
        }
        let expires_at = *self
            .expires_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let margin = time::Duration::try_from(self.ttl / 6).unwrap_or(time::Duration::ZERO);
        (now + margin >= expires_at).then(|| {
            format!(
                "it was last renewed to expire at {} and this run did not renew it in time \
                 (it stalled, or the store was unreachable)",
                expires_at
                    .format(&Rfc3339)
                    .unwrap_or_else(|_| expires_at.to_string())
            )
        })
    }
}

/// A run's claim on a location (a table's directory), kept in an object there.
///
/// [`Lease::acquire`] creates the object only if it is absent; a live lease of another run
/// refuses the run with [`StorageError::LeaseHeld`], an expired one (its run crashed) is taken
/// over with a write conditional on the version read, so two runs cannot both take it. While
/// held, a task on the bucket's runtime renews it every third of its time to live, each renewal
/// conditional on the version last written; a renewal that fails marks the lease lost
/// ([`Lease::lost`]) and logs an error once. [`Lease::release`] deletes the object if it is
/// still this run's; dropping the lease stops the renewal and releases it the same way without
/// waiting.
///
/// The check before the delete and the delete are two requests (object stores offer no
/// conditional delete here): a release racing a takeover of an already expired lease could
/// delete the new holder's object, which then lets a third run in; leases are released by
/// runs that held them to the end, long before they expire.
pub struct Lease {
    bucket: Bucket,
    key: String,
    url: String,
    held: Arc<Held>,
    renewal: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Lease {
    /// Takes the lease object `key` (under the bucket's prefix) for `holder` at `now`, for
    /// `ttl` ([`LEASE_DEFAULT_TTL`] unless a test needs less), and starts renewing it.
    ///
    /// Errors: [`StorageError::LeaseHeld`] when another run holds a live lease (or took an
    /// expired one over first); any other [`StorageError`] when the store fails.
    pub fn acquire(
        bucket: &Bucket,
        key: &str,
        ttl: Duration,
        holder: LeaseHolder,
        now: OffsetDateTime,
    ) -> Result<Lease, StorageError> {
        let url = bucket.object_url(key);
        let body = LeaseBody::new(&holder, now, ttl);
        let bytes = body.to_bytes(&url)?;
        for _ in 0..ACQUIRE_ATTEMPTS {
            match bucket.put(key, bytes.clone(), PutCondition::Create) {
                Ok(version) => {
                    let version = honours_conditions(bucket, key, &bytes, version)?;
                    return Ok(Lease::start(bucket, key, ttl, holder, now, version));
                }
                Err(StorageError::Precondition { .. }) => {}
                Err(e) => return Err(e),
            }
            let Some((current, version)) = bucket.get(key)? else {
                continue; // released meanwhile: try to create it again
            };
            match LeaseBody::parse(&current) {
                Some(other) if other.expires_at > now => return Err(other.held(&url, now)),
                Some(other) => tracing::warn!(
                    lease = %url,
                    run_id = %other.run_id,
                    host = %other.host,
                    pid = other.pid,
                    "taking over an expired lease: its run stopped without releasing it"
                ),
                None => tracing::warn!(lease = %url, "taking over an object that is not a lease"),
            }
            match bucket.put(key, bytes.clone(), PutCondition::Match(version)) {
                Ok(version) => {
                    let version = honours_conditions(bucket, key, &bytes, version)?;
                    return Ok(Lease::start(bucket, key, ttl, holder, now, version));
                }
                // Someone else took it first: the next round reads who.
                Err(StorageError::Precondition { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(StorageError::Precondition { key: url })
    }

    fn start(
        bucket: &Bucket,
        key: &str,
        ttl: Duration,
        holder: LeaseHolder,
        acquired_at: OffsetDateTime,
        version: Version,
    ) -> Lease {
        let url = bucket.object_url(key);
        let expires_at = LeaseBody::new(&holder, acquired_at, ttl).expires_at;
        let held = Arc::new(Held {
            version: Mutex::new(version),
            lost: Mutex::new(None),
            expires_at: Mutex::new(expires_at),
            ttl,
        });
        let renewer = Renewer {
            store: bucket.store(),
            // Checked by the put that created the lease.
            path: bucket.path(key).unwrap_or_default(),
            bucket: bucket.clone(),
            key: key.to_owned(),
            url: url.clone(),
            holder,
            acquired_at,
            ttl,
            held: Arc::clone(&held),
        };
        let (stop, stopped) = oneshot::channel();
        let task = bucket.spawn(renewer.run(stopped));
        Lease {
            bucket: bucket.clone(),
            key: key.to_owned(),
            url,
            held,
            renewal: Some((stop, task)),
        }
    }

    /// The lease object's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Why the lease was lost, if a renewal failed: another run may hold it now, and this run
    /// should stop before it commits anything more.
    ///
    /// Also lost when its expiry is near without a renewal having landed (a stalled run): by
    /// this run's clock, another run could take it over soon.
    pub fn lost(&self) -> Option<String> {
        self.held.lost_at(OffsetDateTime::now_utc())
    }

    /// Stops renewing and deletes the lease object if it is still this run's (the version
    /// this run last wrote).
    pub fn release(mut self) -> Result<(), StorageError> {
        if let Some((stop, task)) = self.renewal.take() {
            let _ = stop.send(());
            // The task ends at once, or after the renewal it is sending.
            let _ = self.bucket.run(task)?;
        }
        let store = self.bucket.store();
        let path = self.bucket.path(&self.key)?;
        let ours = self.held.version();
        self.bucket
            .run(async move { release_if_ours(&store, &path, ours).await })?
            .map_err(|e| self.bucket.error("release", &self.key, e))
    }
}

impl Drop for Lease {
    /// Stops the renewal and releases the lease on the bucket's runtime without waiting. (If
    /// the bucket's last handle goes at the same moment the release may not be sent; the
    /// lease then expires by itself.)
    fn drop(&mut self) {
        let Some((stop, task)) = self.renewal.take() else {
            return; // released
        };
        let _ = stop.send(());
        let store = self.bucket.store();
        let Ok(path) = self.bucket.path(&self.key) else {
            return;
        };
        let held = Arc::clone(&self.held);
        let url = self.url.clone();
        drop(self.bucket.spawn(async move {
            let _ = task.await;
            if let Err(e) = release_if_ours(&store, &path, held.version()).await {
                tracing::warn!(
                    lease = %url,
                    error = %e,
                    "cannot release the lease; it expires by itself"
                );
            }
        }));
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("url", &self.url)
            .field("lost", &self.lost())
            .finish_non_exhaustive()
    }
}

/// Deletes the lease object if it is still at `ours`.
async fn release_if_ours(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    ours: Version,
) -> Result<(), object_store::Error> {
    match bucket::head(store, path).await? {
        Some((_, version)) if version == ours => bucket::delete(store, path).await,
        _ => Ok(()),
    }
}

/// Checks, with the lease just written, that the store refuses a put-if-absent of an object
/// that exists. S3-compatible stores that ignore `If-None-Match` write over it instead, and on
/// them neither the lease nor the state's conditional commit would keep two runs apart: the
/// run stops here, naming the store, and the lease it wrote is deleted. Answers the lease's
/// version (the one the check left, if the store wrote over it).
fn honours_conditions(
    bucket: &Bucket,
    key: &str,
    bytes: &Bytes,
    version: Version,
) -> Result<Version, StorageError> {
    match bucket.put(key, bytes.clone(), PutCondition::Create) {
        Err(StorageError::Precondition { .. }) => Ok(version),
        Err(e) => Err(e),
        Ok(_) => {
            // Best effort: the run stops either way, and a lease left behind expires.
            let _ = bucket.delete(key);
            Err(StorageError::Unconditional {
                bucket: bucket.url().to_string(),
                object: bucket.object_url(key),
            })
        }
    }
}

/// The renewal task's state.
struct Renewer {
    store: Arc<dyn ObjectStore>,
    path: Path,
    bucket: Bucket,
    key: String,
    url: String,
    holder: LeaseHolder,
    acquired_at: OffsetDateTime,
    ttl: Duration,
    held: Arc<Held>,
}

impl Renewer {
    /// Renews every third of the time to live until stopped (or the lease is dropped), or until
    /// a renewal fails: then the lease is lost.
    async fn run(self, mut stop: oneshot::Receiver<()>) {
        let period = (self.ttl / 3).max(Duration::from_millis(10));
        loop {
            if tokio::time::timeout(period, &mut stop).await.is_ok() {
                return; // stopped, or the lease was dropped
            }
            if let Err(why) = self.renew().await {
                tracing::error!(
                    lease = %self.url,
                    reason = %why,
                    "lost the lease: another run may write here now; this run must stop"
                );
                *self
                    .held
                    .lost
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(why);
                return;
            }
        }
    }

    async fn renew(&self) -> Result<(), String> {
        let now = OffsetDateTime::now_utc();
        let mut body = LeaseBody::new(&self.holder, now, self.ttl);
        body.acquired_at = self.acquired_at;
        let bytes = body.to_bytes(&self.url).map_err(|e| e.to_string())?;
        let condition = PutCondition::Match(self.held.version());
        match bucket::put(&self.store, &self.path, bytes, condition).await {
            Ok(version) => {
                self.held.set_version(version);
                self.held.set_expires_at(body.expires_at);
                Ok(())
            }
            Err(e) if Failure::of(&e) == Failure::Precondition => self.adopt_own_write().await,
            Err(e) => {
                let e = self.bucket.error("renew", &self.key, e);
                Err(format!(
                    "renewing it failed: {}",
                    posthog_error::ErrorChain::new(&e)
                ))
            }
        }
    }

    /// After a failed condition: a renewal retried by object_store whose first attempt landed
    /// fails its own condition, and the object is still ours; anything else is a loss.
    async fn adopt_own_write(&self) -> Result<(), String> {
        match bucket::get(&self.store, &self.path).await {
            Ok(Some((bytes, version))) => match LeaseBody::parse(&bytes) {
                Some(body) if body.is(&self.holder, self.acquired_at) => {
                    self.held.set_version(version);
                    self.held.set_expires_at(body.expires_at);
                    Ok(())
                }
                Some(body) => Err(format!(
                    "run {} on host {} (pid {}) took it over",
                    body.run_id, body.host, body.pid
                )),
                None => Err("it was overwritten with something that is not a lease".into()),
            },
            Ok(None) => Err("it was deleted".into()),
            Err(e) => Err(format!("it changed and cannot be read back: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use posthog_error::Category;

    use super::*;

    fn bucket() -> Bucket {
        crate::bucket::tests::memory_bucket("p")
    }

    fn holder(run_id: &str) -> LeaseHolder {
        LeaseHolder {
            run_id: run_id.into(),
            host: "host-a".into(),
            pid: 42,
        }
    }

    fn at(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &Rfc3339).unwrap()
    }

    #[test]
    fn a_live_lease_refuses_a_second_run_with_who_and_until_when() {
        let bucket = bucket();
        let now = at("2026-12-01T10:00:00Z");
        let lease = Lease::acquire(
            &bucket,
            "events/_lease",
            LEASE_DEFAULT_TTL,
            holder("run-1"),
            now,
        )
        .unwrap();
        let (body, _) = bucket.get("events/_lease").unwrap().unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["run_id"], "run-1");
        assert_eq!(body["pid"], 42);
        assert_eq!(body["acquired_at"], "2026-12-01T10:00:00Z");
        assert_eq!(body["expires_at"], "2026-12-01T10:01:00Z");

        let later = at("2026-12-01T10:00:23Z");
        let err = Lease::acquire(
            &bucket,
            "events/_lease",
            LEASE_DEFAULT_TTL,
            holder("run-2"),
            later,
        )
        .unwrap_err();
        assert_eq!(err.category(), Category::Config);
        assert_eq!(
            err.to_string(),
            "s3://b/p/events/_lease is held by run run-1 on host host-a (pid 42) until \
             2026-12-01T10:01:00Z (37 s from now); another run is writing here: wait for it to \
             finish, or, if that run is gone, its lease expires by itself"
        );
        assert!(lease.held.lost_at(later).is_none());
        lease.release().unwrap();
        assert_eq!(bucket.get("events/_lease").unwrap(), None, "released");
        Lease::acquire(
            &bucket,
            "events/_lease",
            LEASE_DEFAULT_TTL,
            holder("run-2"),
            later,
        )
        .unwrap()
        .release()
        .unwrap();
    }

    #[test]
    fn an_expired_or_garbage_lease_is_taken_over_and_the_old_holder_cannot_release_it() {
        let bucket = bucket();
        let start = at("2026-12-01T10:00:00Z");
        let crashed =
            Lease::acquire(&bucket, "_lease", LEASE_DEFAULT_TTL, holder("run-1"), start).unwrap();
        let after = at("2026-12-01T10:01:00.5Z");
        let next =
            Lease::acquire(&bucket, "_lease", LEASE_DEFAULT_TTL, holder("run-2"), after).unwrap();
        crashed.release().unwrap();
        let (body, _) = bucket.get("_lease").unwrap().unwrap();
        assert!(
            String::from_utf8_lossy(&body).contains("run-2"),
            "the old holder's release left the new lease alone"
        );
        next.release().unwrap();

        bucket
            .put(
                "_lease",
                Bytes::from_static(b"garbage"),
                PutCondition::Overwrite,
            )
            .unwrap();
        Lease::acquire(&bucket, "_lease", LEASE_DEFAULT_TTL, holder("run-3"), after)
            .unwrap()
            .release()
            .unwrap();
        assert_eq!(bucket.get("_lease").unwrap(), None);
    }

    #[test]
    fn renewal_keeps_a_short_lease_alive_and_drop_releases_it() {
        let bucket = bucket();
        let ttl = Duration::from_millis(300);
        let lease = Lease::acquire(
            &bucket,
            "_lease",
            ttl,
            holder("run-1"),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(900));
        let err = Lease::acquire(
            &bucket,
            "_lease",
            ttl,
            holder("run-2"),
            OffsetDateTime::now_utc(),
        )
        .unwrap_err();
        assert!(
            matches!(err, StorageError::LeaseHeld { ref run_id, .. } if run_id == "run-1"),
            "{err}"
        );
        assert!(lease.lost().is_none());
        drop(lease);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while bucket.get("_lease").unwrap().is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "drop released the lease"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A store that ignores `If-None-Match` writes over an existing lease instead of refusing:
    /// the acquisition finds that out with its own lease, refuses to go on (config), names the
    /// store, and leaves no lease behind. A store that honours conditions passes the same check.
    #[test]
    fn a_store_that_ignores_conditional_writes_is_refused() {
        let store = crate::watched::Watched::default();
        let counts = Arc::clone(&store.counts);
        let url = crate::ObjectUrl {
            scheme: crate::Scheme::S3,
            bucket: "b".into(),
            prefix: "p".into(),
            account: None,
        };
        let bucket = Bucket::with_store(url, Arc::new(store)).unwrap();
        let now = OffsetDateTime::now_utc();
        let lease = Lease::acquire(
            &bucket,
            "events/_lease",
            LEASE_DEFAULT_TTL,
            holder("a"),
            now,
        )
        .expect("conditions honoured: the check passes");
        lease.release().unwrap();

        counts
            .ignore_conditions
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let err = Lease::acquire(
            &bucket,
            "events/_lease",
            LEASE_DEFAULT_TTL,
            holder("b"),
            now,
        )
        .unwrap_err();
        assert!(matches!(err, StorageError::Unconditional { .. }), "{err}");
        assert_eq!(err.category(), Category::Config);
        let text = err.to_string();
        assert!(
            text.contains("s3://b/p/events/_lease") && text.contains("s3://b/p"),
            "{text}"
        );
        assert_eq!(
            bucket.get("events/_lease").unwrap(),
            None,
            "no lease left behind"
        );
    }

    /// A run that stalls past its lease's expiry (no renewal landed: a long pause, a store
    /// out of reach) counts it as lost before any renewal fails, so it commits nothing that
    /// a run taking the table over may already have cleaned up.
    #[test]
    fn a_lease_near_its_expiry_without_a_renewal_is_lost() {
        let held = Held {
            version: Mutex::new(Version {
                e_tag: None,
                version: None,
            }),
            lost: Mutex::new(None),
            expires_at: Mutex::new(at("2026-12-01T00:01:00Z")),
            ttl: Duration::from_secs(60),
        };
        assert_eq!(held.lost_at(at("2026-12-01T00:00:20Z")), None, "40 s left");
        assert_eq!(held.lost_at(at("2026-12-01T00:00:49Z")), None, "11 s left");
        let why = held
            .lost_at(at("2026-12-01T00:00:50Z"))
            .expect("a sixth of the ttl left");
        assert!(why.contains("2026-12-01T00:01:00Z"), "{why}");
        held.set_expires_at(at("2026-12-01T00:01:40Z"));
        assert_eq!(held.lost_at(at("2026-12-01T00:00:50Z")), None, "renewed");
    }

    #[test]
    fn a_lease_taken_from_under_its_holder_is_lost_once() {
        let bucket = bucket();
        let ttl = Duration::from_millis(150);
        let lease = Lease::acquire(
            &bucket,
            "_lease",
            ttl,
            holder("run-1"),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        let thief = LeaseBody::new(
            &holder("run-9"),
            OffsetDateTime::now_utc(),
            LEASE_DEFAULT_TTL,
        );
        bucket
            .put(
                "_lease",
                thief.to_bytes("x").unwrap(),
                PutCondition::Overwrite,
            )
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let why = loop {
            if let Some(why) = lease.lost() {
                break why;
            }
            assert!(std::time::Instant::now() < deadline, "the renewal noticed");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(
            why.contains("run run-9 on host host-a (pid 42) took it over"),
            "{why}"
        );
        lease.release().unwrap();
        let (body, _) = bucket.get("_lease").unwrap().unwrap();
        assert!(
            String::from_utf8_lossy(&body).contains("run-9"),
            "the thief's lease stays"
        );
    }
}
