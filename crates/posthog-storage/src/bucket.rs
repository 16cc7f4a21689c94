//! One object-store location, ready to use: the store, the URL, and an I/O runtime of its own
//! on which every request runs, behind synchronous methods callable from any thread.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt as _;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion};
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

use crate::{ObjectParts, ObjectUrl, StorageError, StorageOptions};

/// Which version of an object a read saw or a write made, to make a later write conditional
/// on it ([`PutCondition::Match`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// The object's ETag, quotes included, as the store sent it.
    pub e_tag: Option<String>,
    /// The object's version id, on stores with versioning.
    pub version: Option<String>,
}

/// When a [`Bucket::put`] may replace what is there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutCondition {
    /// Always.
    Overwrite,
    /// Only if no object has the key (put-if-absent).
    Create,
    /// Only if the object is still at this version (compare-and-swap).
    Match(Version),
}

thread_local! {
    /// Set on the threads of every bucket's I/O runtime: a blocking call there would wait for
    /// the thread it blocks.
    static ON_IO_RUNTIME: Cell<bool> = const { Cell::new(false) };
}

/// The runtime, shut down without waiting when the last bucket sharing it goes: dropping a
/// `Runtime` waits for its tasks and panics inside an async context.
struct IoRuntime(Option<Runtime>);

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

struct Shared {
    store: Arc<dyn ObjectStore>,
    url: ObjectUrl,
    handle: Handle,
    _runtime: IoRuntime,
}

/// One object-store location: the store, the URL (bucket and prefix), and a small I/O runtime
/// of its own (one worker thread) on which every object_store future runs.
///
/// Every method is synchronous and may be called from any thread, including from inside a task
/// of another tokio runtime: the request is spawned on the bucket's runtime and the caller
/// waits on a channel (never `block_on` on the caller's runtime). Keys are relative to the
/// URL's prefix. Cloning is cheap; the runtime stops, without waiting, when the last clone (or
/// the last [`ObjectParts`] or [`Lease`](crate::Lease) made from it) is dropped.
#[derive(Clone)]
pub struct Bucket {
    shared: Arc<Shared>,
}

impl Bucket {
    /// Builds the store for `url` from `options` (credentials from
    /// [`StorageOptions::environment`], then the explicit options on top). Sends no request:
    /// a wrong credential or a missing bucket shows at the first operation.
    ///
    /// Errors: [`StorageError::Connect`] (category config) when the store cannot be built
    /// from what was given.
    pub fn connect(url: &ObjectUrl, options: &StorageOptions) -> Result<Bucket, StorageError> {
        let store = crate::connect::build_store(url, options)?;
        Bucket::with_store(url.clone(), store)
    }

    /// A bucket over a store built elsewhere (tests use `object_store::memory::InMemory`).
    ///
    /// Errors: [`StorageError::Runtime`] when the I/O runtime cannot start.
    pub fn with_store(url: ObjectUrl, store: Arc<dyn ObjectStore>) -> Result<Bucket, StorageError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("posthog-storage-io")
            .on_thread_start(|| ON_IO_RUNTIME.with(|on| on.set(true)))
            .enable_all()
            .build()
            .map_err(|e| StorageError::Runtime {
                reason: format!("cannot start it: {e}"),
            })?;
        Ok(Bucket {
            shared: Arc::new(Shared {
                store,
                url,
                handle: runtime.handle().clone(),
                _runtime: IoRuntime(Some(runtime)),
            }),
        })
    }

    /// The location: bucket and prefix.
    pub fn url(&self) -> &ObjectUrl {
        &self.shared.url
    }

    /// The object `key` (under the prefix) and its version; `None` when it does not exist.
    pub fn get(&self, key: &str) -> Result<Option<(Bytes, Version)>, StorageError> {
        let path = self.path(key)?;
        let store = self.store();
        self.run(async move { get(&store, &path).await })?
            .map_err(|e| self.error("read", key, e))
    }

    /// Writes `bytes` as the object `key` if `mode` allows, and answers the new version.
    ///
    /// Errors: [`StorageError::Precondition`] when the condition fails (the object exists for
    /// [`PutCondition::Create`], or is gone or at another version for
    /// [`PutCondition::Match`]); nothing was written then.
    pub fn put(
        &self,
        key: &str,
        bytes: Bytes,
        mode: PutCondition,
    ) -> Result<Version, StorageError> {
        let path = self.path(key)?;
        let store = self.store();
        self.run(async move { put(&store, &path, bytes, mode).await })?
            .map_err(|e| self.error("write", key, e))
    }

    /// Deletes the object `key`; one that does not exist is not an error.
    pub fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        let store = self.store();
        self.run(async move { delete(&store, &path).await })?
            .map_err(|e| self.error("delete", key, e))
    }

    /// Every object under `dir` (recursively), each as its name relative to `dir` and its
    /// size, in no particular order.
    pub fn list(&self, dir: &str) -> Result<Vec<(String, u64)>, StorageError> {
        let prefix = self.path(dir)?;
        let store = self.store();
        self.run(async move { list(&store, &prefix).await })?
            .map_err(|e| self.error("list", dir, e))
    }

    /// The size of the object `key`; `None` when it does not exist.
    pub fn head(&self, key: &str) -> Result<Option<u64>, StorageError> {
        let path = self.path(key)?;
        let store = self.store();
        let found = self
            .run(async move { head(&store, &path).await })?
            .map_err(|e| self.error("check", key, e))?;
        Ok(found.map(|(size, _)| size))
    }

    /// The directory `dir` under the prefix as a [`posthog_core::PartStore`].
    pub fn parts(&self, dir: &str) -> Arc<dyn posthog_core::PartStore> {
        Arc::new(ObjectParts::new(self.clone(), dir))
    }

    /// The store.
    pub(crate) fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.shared.store)
    }

    /// The store's path of `key` under the prefix.
    pub(crate) fn path(&self, key: &str) -> Result<Path, StorageError> {
        Path::parse(self.url().key(key)).map_err(|e| StorageError::Key {
            object: self.object_url(key),
            reason: e.to_string(),
        })
    }

    /// The URL of `key` under the prefix, for messages.
    pub(crate) fn object_url(&self, key: &str) -> String {
        self.url().join(key).to_string()
    }

    /// Reads a failed request on `key` as a [`StorageError`].
    pub(crate) fn error(
        &self,
        op: &'static str,
        key: &str,
        e: object_store::Error,
    ) -> StorageError {
        StorageError::from_store(op, self.object_url(key), self.url().bucket_url(), e)
    }

    /// Starts `future` on the bucket's runtime without waiting for it.
    pub(crate) fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.shared.handle.spawn(future)
    }

    /// Runs `future` on the bucket's runtime and waits for its output on this thread.
    ///
    /// Errors: [`StorageError::Runtime`] when the future panicked or the runtime stopped, or
    /// when called from the runtime's own thread (which would wait for itself forever).
    pub(crate) fn run<F>(&self, future: F) -> Result<F::Output, StorageError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if ON_IO_RUNTIME.with(Cell::get) {
            return Err(StorageError::Runtime {
                reason: "a blocking storage call was made from the storage runtime's own thread"
                    .into(),
            });
        }
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.shared.handle.spawn(async move {
            // The caller may have gone; then nobody needs the answer.
            let _ = reply.send(future.await);
        });
        answer.recv().map_err(|_| StorageError::Runtime {
            reason: "a storage request stopped before it answered (it panicked, or the runtime \
                     shut down)"
                .into(),
        })
    }
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket")
            .field("url", &self.url().to_string())
            .field("store", &self.shared.store.to_string())
            .finish_non_exhaustive()
    }
}

/// The object's bytes and version, `None` when absent (but not when its bucket is).
pub(crate) async fn get(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
) -> Result<Option<(Bytes, Version)>, object_store::Error> {
    let result = match store.get_opts(path, GetOptions::default()).await {
        Ok(result) => result,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let version = Version {
        e_tag: result.meta.e_tag.clone(),
        version: result.meta.version.clone(),
    };
    let bytes = result.bytes().await?;
    Ok(Some((bytes, version)))
}

/// Puts `bytes` under `mode`; a condition that fails is object_store's `Precondition`.
pub(crate) async fn put(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    bytes: Bytes,
    mode: PutCondition,
) -> Result<Version, object_store::Error> {
    let conditional = matches!(mode, PutCondition::Match(_));
    let mode = match mode {
        PutCondition::Overwrite => PutMode::Overwrite,
        PutCondition::Create => PutMode::Create,
        PutCondition::Match(v) => PutMode::Update(UpdateVersion {
            e_tag: v.e_tag,
            version: v.version,
        }),
    };
    let options = PutOptions {
        mode,
        ..PutOptions::default()
    };
    match store.put_opts(path, PutPayload::from(bytes), options).await {
        Ok(done) => Ok(Version {
            e_tag: done.e_tag,
            version: done.version,
        }),
        // S3 answers If-Match on a missing object with 404: the version it was conditional on
        // is gone, which is the condition failing.
        Err(e) if conditional && is_absent(&e) => Err(object_store::Error::Precondition {
            path: path.to_string(),
            source: Box::new(e),
        }),
        Err(e) => Err(e),
    }
}

/// Deletes; an absent object is fine.
pub(crate) async fn delete(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
) -> Result<(), object_store::Error> {
    use object_store::ObjectStoreExt as _;
    match store.delete(path).await {
        Err(e) if is_absent(&e) => Ok(()),
        other => other,
    }
}

/// The object's size and version, `None` when absent.
pub(crate) async fn head(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
) -> Result<Option<(u64, Version)>, object_store::Error> {
    use object_store::ObjectStoreExt as _;
    match store.head(path).await {
        Ok(meta) => Ok(Some((
            meta.size,
            Version {
                e_tag: meta.e_tag,
                version: meta.version,
            },
        ))),
        Err(e) if is_absent(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every object under `prefix`, named relative to it.
async fn list(
    store: &Arc<dyn ObjectStore>,
    prefix: &Path,
) -> Result<Vec<(String, u64)>, object_store::Error> {
    let under = (!prefix.as_ref().is_empty()).then_some(prefix);
    let objects: Vec<_> = store.list(under).try_collect().await?;
    let start = if under.is_some() {
        prefix.as_ref().len() + 1
    } else {
        0
    };
    Ok(objects
        .into_iter()
        .filter_map(|meta| {
            let name = meta.location.as_ref().get(start..)?;
            (!name.is_empty()).then(|| (name.to_owned(), meta.size))
        })
        .collect())
}

/// Whether `e` says the object is not there, while its bucket is.
pub(crate) fn is_absent(e: &object_store::Error) -> bool {
    crate::error::Failure::of(e) == crate::error::Failure::NotFound
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{Location, Scheme};
    use object_store::memory::InMemory;

    /// A bucket `s3://b/<prefix>` over an in-memory store, for every module's tests.
    pub(crate) fn memory_bucket(prefix: &str) -> Bucket {
        let url = ObjectUrl {
            scheme: Scheme::S3,
            bucket: "b".into(),
            prefix: prefix.into(),
            account: None,
        };
        Bucket::with_store(url, Arc::new(InMemory::new())).unwrap()
    }

    #[test]
    fn get_put_head_delete_list_under_the_prefix() {
        let bucket = memory_bucket("p");
        assert_eq!(bucket.get("a").unwrap(), None);
        assert_eq!(bucket.head("a").unwrap(), None);
        let v1 = bucket
            .put("a", Bytes::from_static(b"one"), PutCondition::Create)
            .unwrap();
        let (bytes, read) = bucket.get("a").unwrap().unwrap();
        assert_eq!((&bytes[..], &read), (&b"one"[..], &v1));
        bucket
            .put("d/e/f", Bytes::from_static(b"xy"), PutCondition::Overwrite)
            .unwrap();
        let mut all = bucket.list("").unwrap();
        all.sort();
        assert_eq!(all, [("a".to_owned(), 3), ("d/e/f".to_owned(), 2)]);
        assert_eq!(bucket.list("d").unwrap(), [("e/f".to_owned(), 2)]);
        assert_eq!(bucket.list("nothing").unwrap(), []);
        assert_eq!(bucket.head("d/e/f").unwrap(), Some(2));
        bucket.delete("a").unwrap();
        bucket.delete("a").unwrap();
        assert_eq!(bucket.get("a").unwrap(), None);
        let root = bucket.store();
        let outside = bucket
            .run(async move {
                use object_store::ObjectStoreExt as _;
                root.head(&Path::from("p/d/e/f")).await.map(|m| m.size)
            })
            .unwrap();
        assert_eq!(outside.unwrap(), 2, "keys live under the prefix");
    }

    #[test]
    fn conditional_puts_refuse_a_stale_or_existing_object() {
        let bucket = memory_bucket("");
        let v1 = bucket
            .put("k", Bytes::from_static(b"1"), PutCondition::Create)
            .unwrap();
        let again = bucket.put("k", Bytes::from_static(b"2"), PutCondition::Create);
        assert!(
            matches!(again, Err(StorageError::Precondition { ref key }) if key == "s3://b/k"),
            "{again:?}"
        );
        let v2 = bucket
            .put(
                "k",
                Bytes::from_static(b"2"),
                PutCondition::Match(v1.clone()),
            )
            .unwrap();
        assert_ne!(v1, v2);
        let stale = bucket.put("k", Bytes::from_static(b"3"), PutCondition::Match(v1));
        assert!(
            matches!(stale, Err(StorageError::Precondition { .. })),
            "{stale:?}"
        );
        bucket.delete("k").unwrap();
        let gone = bucket.put("k", Bytes::from_static(b"4"), PutCondition::Match(v2));
        assert!(
            matches!(gone, Err(StorageError::Precondition { .. })),
            "{gone:?}"
        );
        assert_eq!(bucket.get("k").unwrap(), None, "nothing was written");
    }

    #[test]
    fn an_invalid_key_is_refused_before_any_request() {
        let bucket = memory_bucket("p");
        let err = bucket.get("a//b").unwrap_err();
        assert!(matches!(err, StorageError::Key { .. }), "{err}");
        assert!(err.to_string().contains("s3://b/p/a//b"), "{err}");
    }

    #[test]
    fn sync_calls_work_from_inside_another_runtime_and_drop_there_is_safe() {
        let caller = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        caller.block_on(async {
            let bucket = memory_bucket("");
            bucket
                .put("k", Bytes::from_static(b"v"), PutCondition::Overwrite)
                .unwrap();
            assert_eq!(bucket.head("k").unwrap(), Some(1));
            drop(bucket); // shuts the bucket's runtime down inside an async context
        });
    }

    #[test]
    fn a_blocking_call_from_the_io_thread_is_refused_not_deadlocked() {
        let bucket = memory_bucket("");
        let inner = bucket.clone();
        let answer = bucket
            .run(async move { inner.head("k").map(|_| ()) })
            .unwrap();
        assert!(
            matches!(answer, Err(StorageError::Runtime { .. })),
            "{answer:?}"
        );
    }

    #[test]
    fn parts_locate_objects_by_url() {
        let Location::Object(url) = Location::parse("s3://b/p").unwrap() else {
            panic!("an object URL")
        };
        let bucket = Bucket::with_store(url, Arc::new(InMemory::new())).unwrap();
        let parts = bucket.parts("events");
        assert_eq!(
            parts.locate("date=2026-01-01/part-1.parquet"),
            std::path::PathBuf::from("s3://b/p/events/date=2026-01-01/part-1.parquet")
        );
    }
}
