//! A table's part files in a bucket: [`ObjectParts`], the object-store
//! [`PartStore`]. An object appears under its name only when its upload completes; an upload
//! dropped before that is aborted and leaves nothing.

use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{MultipartUpload, PutPayload};
use posthog_core::{CoreError, PartStore, PartUpload};
use tokio::task::JoinHandle;

use crate::{Bucket, PutCondition, StorageError};

/// The size of one part of a multipart upload: S3's minimum for every part but the last. An
/// object smaller than this is written with one plain put.
pub const PART_CHUNK: usize = 5 * 1024 * 1024;

/// A directory (a key prefix) of a [`Bucket`] as a [`PartStore`]. Names may hold `/` (a Hive
/// partition: `date=2026-01-01/part-00001-1a2b3c4d.parquet`).
///
/// Errors are `CoreError::Io` naming the object's URL, with the [`StorageError`] as the
/// `io::Error` with its category ([`StorageError::into_io`]; `PermissionDenied` kind for
/// denied access, so the run exits with the permission code).
#[derive(Clone)]
pub struct ObjectParts {
    bucket: Bucket,
    /// The directory's key under the bucket's prefix; `""` for the prefix itself.
    dir: String,
}

impl ObjectParts {
    /// The directory `dir` (below the bucket's prefix) of `bucket`.
    pub fn new(bucket: Bucket, dir: &str) -> ObjectParts {
        ObjectParts {
            bucket,
            dir: dir.trim_matches('/').to_owned(),
        }
    }

    /// The key of `name` under the bucket's prefix.
    fn key(&self, name: &str) -> String {
        match (self.dir.is_empty(), name.trim_start_matches('/')) {
            (true, name) => name.to_owned(),
            (false, "") => self.dir.clone(),
            (false, name) => format!("{}/{name}", self.dir),
        }
    }

    fn io_error(&self, op: &'static str, name: &str, e: StorageError) -> CoreError {
        CoreError::Io {
            op,
            path: self.locate(name),
            source: e.into_io(),
        }
    }
}

impl fmt::Debug for ObjectParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectParts")
            .field("url", &self.bucket.url().join(&self.dir).to_string())
            .finish()
    }
}

impl PartStore for ObjectParts {
    /// Begins the upload; nothing is sent until the first [`PART_CHUNK`] is written.
    fn create(&self, name: &str) -> Result<Box<dyn PartUpload>, CoreError> {
        let key = self.key(name);
        let path = self
            .bucket
            .path(&key)
            .map_err(|e| self.io_error("create", name, e))?;
        Ok(Box::new(ObjectUpload {
            bucket: self.bucket.clone(),
            key,
            path,
            located: self.locate(name),
            buffer: Vec::new(),
            multipart: None,
            in_flight: None,
            committed: false,
            failed: false,
        }))
    }

    /// Every object under the directory, recursively, named relative to it.
    fn list(&self) -> Result<Vec<String>, CoreError> {
        let objects = self
            .bucket
            .list(&self.dir)
            .map_err(|e| self.io_error("list", "", e))?;
        Ok(objects.into_iter().map(|(name, _)| name).collect())
    }

    /// Deletes each object that exists and counts those (object stores do not say whether a
    /// delete removed anything, so each name is checked first).
    fn remove(&self, names: &[&str]) -> Result<usize, CoreError> {
        let mut removed = 0;
        for name in names {
            let key = self.key(name);
            let existed = self
                .bucket
                .head(&key)
                .map_err(|e| self.io_error("check", name, e))?;
            if existed.is_some() {
                self.bucket
                    .delete(&key)
                    .map_err(|e| self.io_error("remove", name, e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn locate(&self, name: &str) -> PathBuf {
        PathBuf::from(self.bucket.object_url(&self.key(name)))
    }
}

/// One part being uploaded: bytes gather into a chunk of [`PART_CHUNK`]; the first full chunk
/// starts a multipart upload and each full chunk goes as one part, with at most one part in
/// flight (its upload overlaps the filling of the next chunk, and memory stays within two
/// chunks).
struct ObjectUpload {
    bucket: Bucket,
    key: String,
    path: Path,
    located: PathBuf,
    buffer: Vec<u8>,
    multipart: Option<Box<dyn MultipartUpload>>,
    /// The part being sent.
    in_flight: Option<JoinHandle<object_store::Result<()>>>,
    committed: bool,
    /// A part failed: the bytes of its chunk are gone, so the upload can only be dropped.
    failed: bool,
}

impl ObjectUpload {
    fn storage_error(&self, op: &'static str, e: object_store::Error) -> StorageError {
        self.bucket.error(op, &self.key, e)
    }

    fn core_error(&self, op: &'static str, e: StorageError) -> CoreError {
        CoreError::Io {
            op,
            path: self.located.clone(),
            source: e.into_io(),
        }
    }

    /// Sends the full buffer as the next part, once the one before it has arrived.
    fn send_chunk(&mut self) -> Result<(), StorageError> {
        self.wait_in_flight()?;
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(PART_CHUNK));
        let upload = match &mut self.multipart {
            Some(upload) => upload,
            None => {
                let store = self.bucket.store();
                let path = self.path.clone();
                let started = self
                    .bucket
                    .run(async move {
                        use object_store::ObjectStoreExt as _;
                        store.put_multipart(&path).await
                    })?
                    .map_err(|e| self.storage_error("start the upload of", e))?;
                self.multipart.insert(started)
            }
        };
        let part = upload.put_part(PutPayload::from(Bytes::from(chunk)));
        self.in_flight = Some(self.bucket.spawn(part));
        Ok(())
    }

    /// Waits for the part in flight, if any, and reports its failure.
    fn wait_in_flight(&mut self) -> Result<(), StorageError> {
        let Some(part) = self.in_flight.take() else {
            return Ok(());
        };
        match self.bucket.run(part)? {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.storage_error("upload a part of", e)),
            Err(join) => Err(StorageError::Runtime {
                reason: format!("a part upload stopped: {join}"),
            }),
        }
    }

    /// Sends what is left and completes the upload (or puts a small object whole).
    fn finish(&mut self) -> Result<(), StorageError> {
        let rest = Bytes::from(std::mem::take(&mut self.buffer));
        let Some(mut upload) = self.multipart.take() else {
            self.bucket.put(&self.key, rest, PutCondition::Overwrite)?;
            return Ok(());
        };
        let sent = self.wait_in_flight().and_then(|()| {
            if !rest.is_empty() {
                self.in_flight = Some(self.bucket.spawn(upload.put_part(PutPayload::from(rest))));
            }
            self.wait_in_flight()
        });
        if let Err(e) = sent {
            self.multipart = Some(upload);
            return Err(e);
        }
        let (upload, completed) = self.bucket.run(async move {
            let completed = upload.complete().await;
            (upload, completed)
        })?;
        if let Err(e) = completed {
            // Keep it, so that drop aborts it.
            self.multipart = Some(upload);
            return Err(self.storage_error("complete the upload of", e));
        }
        Ok(())
    }
}

impl Write for ObjectUpload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.committed {
            return Err(io::Error::other("the part was already committed"));
        }
        if self.failed {
            return Err(io::Error::other("an earlier part of this upload failed"));
        }
        if self.buffer.capacity() == 0 {
            // Exactly one chunk, never regrown: memory stays one chunk here plus one in flight.
            self.buffer.reserve_exact(PART_CHUNK);
        }
        let n = buf.len().min(PART_CHUNK - self.buffer.len());
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() == PART_CHUNK
            && let Err(e) = self.send_chunk()
        {
            self.failed = true;
            return Err(e.into_io());
        }
        Ok(n)
    }

    /// Nothing to do: bytes reach the store by whole parts, and at commit.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl PartUpload for ObjectUpload {
    fn commit(mut self: Box<Self>) -> Result<(), CoreError> {
        if self.committed {
            return Ok(());
        }
        if self.failed {
            return Err(CoreError::Io {
                op: "upload",
                path: self.located.clone(),
                source: io::Error::other("an earlier part of this upload failed"),
            });
        }
        self.finish().map_err(|e| self.core_error("upload", e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for ObjectUpload {
    /// Aborts a multipart upload that was not completed, on the bucket's runtime, and waits
    /// for the abort (at most [`ABORT_WAIT`]): the parts sent are discarded and nothing appears
    /// under the name, even when the process exits right after a failed run. Past the wait, or
    /// from the runtime's own thread, the abort goes on in the background; an incomplete
    /// multipart upload is invisible to readers and removed by the bucket's lifecycle rule for
    /// incomplete uploads.
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let Some(mut upload) = self.multipart.take() else {
            return;
        };
        let in_flight = self.in_flight.take();
        let object = self.located.display().to_string();
        let abort = self.bucket.spawn(async move {
            if let Some(part) = in_flight {
                // A part still being sent would outlive an abort sent before it lands.
                let _ = part.await;
            }
            if let Err(e) = upload.abort().await {
                tracing::warn!(%object, error = %e, "cannot abort an unfinished upload");
            }
        });
        let _ = self
            .bucket
            .run(async move { tokio::time::timeout(ABORT_WAIT, abort).await });
    }
}

/// How long a dropped upload waits for its multipart upload to be aborted.
const ABORT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use posthog_error::Category;

    use super::*;
    use crate::watched::{Counts, Watched};
    use crate::{ObjectUrl, Scheme};

    fn bucket() -> (Bucket, Arc<Counts>) {
        let url = ObjectUrl {
            scheme: Scheme::S3,
            bucket: "b".into(),
            prefix: "out".into(),
            account: None,
        };
        let store = Watched::default();
        let counts = Arc::clone(&store.counts);
        (Bucket::with_store(url, Arc::new(store)).unwrap(), counts)
    }

    /// Bytes that differ at every position of a chunk, so a misplaced part shows.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i / 251) as u8)
            .collect()
    }

    #[test]
    fn a_small_part_is_one_plain_put_on_commit_and_invisible_before() {
        let (bucket, counts) = bucket();
        let parts = bucket.parts("events");
        let mut upload = parts.create("part-1.csv").unwrap();
        upload.write_all(b"a,b\n").unwrap();
        assert!(
            bucket.head("events/part-1.csv").unwrap().is_none(),
            "not visible before commit"
        );
        assert!(parts.list().unwrap().is_empty());
        upload.commit().unwrap();
        assert!(bucket.head("events/part-1.csv").unwrap().is_some());
        let (bytes, _) = bucket.get("events/part-1.csv").unwrap().unwrap();
        assert_eq!(&bytes[..], b"a,b\n");
        parts.create("empty.csv").unwrap().commit().unwrap();
        assert_eq!(bucket.head("events/empty.csv").unwrap(), Some(0));
        assert_eq!(Counts::get(&counts.puts), 2);
        assert_eq!(Counts::get(&counts.multiparts), 0);
    }

    #[test]
    fn a_large_part_is_a_multipart_upload_one_part_in_flight_read_back_exactly() {
        let (bucket, counts) = bucket();
        let parts = bucket.parts("events");
        let data = pattern(2 * PART_CHUNK + 12_345);
        let mut upload = parts
            .create("date=2026-01-01/part-00001-1a2b.parquet")
            .unwrap();
        // Uneven writes, as a Parquet writer's are.
        for piece in data.chunks(777_777) {
            upload.write_all(piece).unwrap();
        }
        assert_eq!(
            Counts::get(&counts.multiparts),
            1,
            "started by the first full chunk"
        );
        assert!(parts.list().unwrap().is_empty(), "no object before commit");
        upload.commit().unwrap();
        assert_eq!(Counts::get(&counts.parts), 3);
        assert_eq!(Counts::get(&counts.max_in_flight), 1);
        assert_eq!(Counts::get(&counts.completes), 1);
        assert_eq!(Counts::get(&counts.puts), 0);
        let (bytes, _) = bucket
            .get("events/date=2026-01-01/part-00001-1a2b.parquet")
            .unwrap()
            .unwrap();
        assert_eq!(bytes.len(), data.len());
        assert!(
            bytes[..] == data[..],
            "the bytes read back are the bytes written"
        );

        let exact = pattern(PART_CHUNK);
        let mut upload = parts.create("exact.bin").unwrap();
        upload.write_all(&exact).unwrap();
        upload.commit().unwrap();
        let (bytes, _) = bucket.get("events/exact.bin").unwrap().unwrap();
        assert!(bytes[..] == exact[..], "a last chunk that is exactly full");
        assert_eq!(Counts::get(&counts.parts), 4, "no empty last part");
    }

    #[test]
    fn a_dropped_upload_leaves_nothing_and_aborts_its_multipart_upload() {
        let (bucket, counts) = bucket();
        let parts = bucket.parts("events");
        let mut small = parts.create("small.csv").unwrap();
        small.write_all(b"x").unwrap();
        drop(small);
        let mut large = parts.create("large.bin").unwrap();
        large.write_all(&pattern(PART_CHUNK + 10)).unwrap();
        drop(large);
        assert_eq!(
            Counts::get(&counts.aborts),
            1,
            "the drop waited for the multipart upload's abort"
        );
        assert!(parts.list().unwrap().is_empty());
        assert!(bucket.head("events/small.csv").unwrap().is_none());
        assert!(bucket.head("events/large.bin").unwrap().is_none());
        assert_eq!(
            Counts::get(&counts.puts) + Counts::get(&counts.completes),
            0
        );
    }

    #[test]
    fn a_failed_part_fails_the_upload_naming_the_object_and_nothing_appears() {
        let (bucket, counts) = bucket();
        counts.fail_parts.store(true, Ordering::SeqCst);
        let parts = bucket.parts("events");

        // The first part's failure shows when the second is sent...
        let mut upload = parts.create("part-1.bin").unwrap();
        let err = upload.write_all(&pattern(PART_CHUNK * 2)).unwrap_err();
        assert_eq!(
            Category::of_io_error(&err),
            Category::Server,
            "the io::Error carries the storage error's category"
        );
        assert!(
            err.to_string().contains("s3://b/out/events/part-1.bin"),
            "{err}"
        );
        assert!(
            upload.write_all(b"more").is_err(),
            "a failed upload takes no more bytes"
        );
        assert!(upload.commit().is_err(), "nor commits");

        // ... or at commit, as a CoreError naming the object.
        let mut upload = parts.create("part-2.bin").unwrap();
        upload.write_all(&pattern(PART_CHUNK + 1)).unwrap();
        let err = upload.commit().unwrap_err();
        let chain = posthog_error::ErrorChain::new(&err).to_string();
        let url = "s3://b/out/events/part-2.bin";
        assert!(
            chain.starts_with(&format!(
                "cannot upload {url}: cannot upload a part of {url}"
            )),
            "{chain}"
        );
        assert_eq!(
            err.category(),
            Category::Server,
            "CoreError::Io carries the storage error's category"
        );

        assert_eq!(
            Counts::get(&counts.aborts),
            2,
            "both failed uploads were aborted before their drops returned"
        );
        assert!(parts.list().unwrap().is_empty());
    }

    #[test]
    fn list_names_nested_objects_relative_to_the_directory_and_remove_counts_existing() {
        let (bucket, _) = bucket();
        let parts = bucket.parts("events");
        for name in [
            "part-1.parquet",
            "date=2026-01-01/part-2.parquet",
            "_manifest.json",
        ] {
            parts.create(name).unwrap().commit().unwrap();
        }
        bucket.parts("other").create("x").unwrap().commit().unwrap();
        let mut names = parts.list().unwrap();
        names.sort();
        assert_eq!(
            names,
            [
                "_manifest.json",
                "date=2026-01-01/part-2.parquet",
                "part-1.parquet"
            ]
        );
        let removed = parts
            .remove(&[
                "part-1.parquet",
                "date=2026-01-01/part-2.parquet",
                "part-9.parquet",
            ])
            .unwrap();
        assert_eq!(removed, 2);
        assert_eq!(parts.list().unwrap(), ["_manifest.json"]);
        assert_eq!(
            parts.locate("date=2026-01-01/part-2.parquet"),
            PathBuf::from("s3://b/out/events/date=2026-01-01/part-2.parquet")
        );
    }

    #[test]
    fn an_invalid_name_is_an_io_error_naming_the_url() {
        let (bucket, _) = bucket();
        let err = bucket.parts("events").create("a//b").err().unwrap();
        let msg = posthog_error::ErrorChain::new(&err).to_string();
        assert!(msg.contains("s3://b/out/events/a//b"), "{msg}");
        // `CoreError::Io` carries the storage error's category: a key the store refuses.
        assert_eq!(err.category(), Category::Config);
    }
}
