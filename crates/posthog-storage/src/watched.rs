//! A store for tests: `InMemory` behind a wrapper that counts what reaches it (plain puts,
//! multipart uploads, parts and how many are in flight at once, completions, aborts) and can
//! be told to fail parts.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
};

/// What reached the store.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub puts: AtomicUsize,
    pub multiparts: AtomicUsize,
    pub parts: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub completes: AtomicUsize,
    pub aborts: AtomicUsize,
    pub fail_parts: AtomicBool,
    /// Writes every put unconditionally, as S3-compatible stores without `If-None-Match` /
    /// `If-Match` support do.
    pub ignore_conditions: AtomicBool,
}

impl Counts {
    pub(crate) fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
}

/// `InMemory`, counted.
#[derive(Debug, Default)]
pub(crate) struct Watched {
    inner: InMemory,
    pub counts: Arc<Counts>,
}

impl fmt::Display for Watched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Watched(InMemory)")
    }
}

#[async_trait]
impl ObjectStore for Watched {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.counts.puts.fetch_add(1, Ordering::SeqCst);
        let mut opts = opts;
        if self.counts.ignore_conditions.load(Ordering::SeqCst) {
            opts.mode = object_store::PutMode::Overwrite;
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.counts.multiparts.fetch_add(1, Ordering::SeqCst);
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(WatchedUpload {
            inner,
            counts: Arc::clone(&self.counts),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[derive(Debug)]
struct WatchedUpload {
    inner: Box<dyn MultipartUpload>,
    counts: Arc<Counts>,
}

#[async_trait]
impl MultipartUpload for WatchedUpload {
    /// Takes 30 ms, so parts sent without waiting for the one before would overlap.
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let counts = Arc::clone(&self.counts);
        let part = self.inner.put_part(data);
        Box::pin(async move {
            let now = counts.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            counts.max_in_flight.fetch_max(now, Ordering::SeqCst);
            counts.parts.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(30)).await;
            let result = if counts.fail_parts.load(Ordering::SeqCst) {
                Err(object_store::Error::Generic {
                    store: "Watched",
                    source: "Server returned non-2xx status code: 500 Internal Server Error: "
                        .into(),
                })
            } else {
                part.await
            };
            counts.in_flight.fetch_sub(1, Ordering::SeqCst);
            result
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        self.counts.completes.fetch_add(1, Ordering::SeqCst);
        self.inner.complete().await
    }

    async fn abort(&mut self) -> Result<()> {
        self.counts.aborts.fetch_add(1, Ordering::SeqCst);
        self.inner.abort().await
    }
}
