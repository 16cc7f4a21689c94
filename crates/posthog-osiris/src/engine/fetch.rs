//! The reading half of a run: pages requested from PostHog and handed to the sink, with each
//! request sent while the previous page is being written, and the checkpoints the sink hands
//! back committed as they arrive.
//!
//! Keyset scans follow a [`KeysetPager`] (the stop rule, the cursor guard and the page size
//! live there); waits on rate limits and retries live in the client. The one decision made
//! here is what a server timeout does: the page halves and the same position is asked again.

use bytes::BytesMut;
use futures_util::TryStreamExt;
use posthog_client::{
    Advance, BodySink, Category, Client, HogQlQuery, KeysetPager, ListParams, PageSummary, Resource,
};
use posthog_state::StateStore;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::sink::{Checkpoint, PageInfo, SinkMsg, SinkOutcome};
use crate::DriverError;

/// The fetch side's end of the pipe to the sink, and the commits of what comes back.
pub(crate) struct Pipeline<'a> {
    pages: mpsc::Sender<SinkMsg>,
    commits: Commits<'a>,
    /// Times a server timeout made a page halve.
    page_shrinks: u64,
}

/// A page's body on its way to the sink, in blocks of [`SINK_BLOCK`] bytes.
///
/// The client yields the inflated body in pieces of a few KiB; handing each to the sink's
/// thread on its own cost a thread wake-up per piece (a fifth of the run's CPU time, measured
/// with `perf`), so pieces are gathered into blocks first.
struct PageBody<'p> {
    pages: &'p mpsc::Sender<SinkMsg>,
    block: BytesMut,
}

impl PageBody<'_> {
    /// Sends what is gathered; false when the sink has stopped.
    async fn flush(&mut self) -> bool {
        if self.block.is_empty() {
            return true;
        }
        let block = self.block.split().freeze();
        self.pages.send(SinkMsg::Chunk(block)).await.is_ok()
    }
}

impl BodySink for PageBody<'_> {
    async fn restart(&mut self) {
        self.block.clear();
        // A closed channel is noticed by the next chunk.
        let _ = self.pages.send(SinkMsg::Restart).await;
    }

    async fn chunk(&mut self, mut bytes: bytes::Bytes) -> Result<(), ()> {
        // Every block is at most SINK_BLOCK (large pieces are split, not copied): the channel
        // bounds messages, not bytes, and an uncompressed body is read in pieces of up to
        // ~400 KiB, so 16 whole pieces held ~6.5 MB in flight (fetch-only floor without gzip,
        // pages of 50 000: 26.9 MiB peak against 16.7 at pages of 1 000).
        if !self.block.is_empty() {
            let take = SINK_BLOCK.saturating_sub(self.block.len()).min(bytes.len());
            self.block.extend_from_slice(&bytes.split_to(take));
            if self.block.len() >= SINK_BLOCK && !self.flush().await {
                return Err(());
            }
        }
        while bytes.len() >= SINK_BLOCK {
            let block = bytes.split_to(SINK_BLOCK);
            self.pages
                .send(SinkMsg::Chunk(block))
                .await
                .map_err(|_| ())?;
        }
        if !bytes.is_empty() {
            if self.block.is_empty() {
                // One allocation per block, not a doubling series.
                self.block.reserve(SINK_BLOCK);
            }
            self.block.extend_from_slice(&bytes);
        }
        Ok(())
    }
}

/// Checkpoints from the sink, committed to the store as they arrive.
struct Commits<'a> {
    checkpoints: mpsc::UnboundedReceiver<Checkpoint>,
    store: &'a mut dyn StateStore,
    table: &'a str,
}

impl Commits<'_> {
    /// Commits every checkpoint the sink has produced so far.
    fn commit_ready(&mut self) -> Result<(), DriverError> {
        while let Ok(Checkpoint(state)) = self.checkpoints.try_recv() {
            self.store.commit(self.table, &state)?;
            tracing::info!(
                table = self.table,
                parts = state.parts.len(),
                watermark = state.last_timestamp.as_deref().unwrap_or("-"),
                "checkpoint committed"
            );
        }
        Ok(())
    }
}

/// Messages in flight to the sink: blocks of the page arriving while earlier rows are written
/// (at most `SINK_CHANNEL` × [`SINK_BLOCK`] = 1 MiB), so receiving and writing overlap
/// without holding a page.
pub(crate) const SINK_CHANNEL: usize = 16;

/// Bytes of a page body gathered before they go to the sink.
pub(crate) const SINK_BLOCK: usize = 64 * 1024;

/// The sink's thread, as the pipeline joins it.
pub(crate) type SinkTask = JoinHandle<Result<Option<SinkOutcome>, DriverError>>;

impl<'a> Pipeline<'a> {
    pub(crate) fn new(
        pages: mpsc::Sender<SinkMsg>,
        checkpoints: mpsc::UnboundedReceiver<Checkpoint>,
        store: &'a mut dyn StateStore,
        table: &'a str,
    ) -> Self {
        Pipeline {
            pages,
            commits: Commits {
                checkpoints,
                store,
                table,
            },
            page_shrinks: 0,
        }
    }

    /// Runs a page's query with its body streamed into the sink as it arrives, then waits
    /// for the page's row count and last position. `Ok(None)` when the sink stopped (it
    /// failed; its error is reported when it is joined).
    async fn stream_page(
        &mut self,
        query: &HogQlQuery,
        client: &Client,
    ) -> Result<Option<PageInfo>, posthog_client::Error> {
        // The client restarts the body before every attempt's first chunk, so what an earlier,
        // failed request for this page delivered is dropped there.
        let mut body = PageBody {
            pages: &self.pages,
            block: BytesMut::new(),
        };
        match client.query_streamed(query, &mut body).await {
            Ok(_) if body.flush().await => {}
            Ok(_) => return Ok(None),
            Err(e) if self.pages.is_closed() => {
                tracing::debug!(error = %e, "the writer stopped while a page arrived");
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        let (reply, answer) = oneshot::channel();
        if !self.send(SinkMsg::PageEnd { reply }).await {
            return Ok(None);
        }
        Ok(answer.await.ok().flatten())
    }

    /// Sends a message to the sink; false when the sink has stopped (it failed).
    async fn send(&self, msg: SinkMsg) -> bool {
        self.pages.send(msg).await.is_ok()
    }

    /// Ends the fetch side and joins the sink, answering the sink's outcome and the page
    /// shrinks. When every page was sent (`fetched` is `Ok`) the sink closes its last part
    /// and hands back the final state; otherwise the channel closes without `Finish` and the
    /// sink discards its open part. Checkpoints name only durable parts, so they are committed
    /// even when the run failed.
    pub(crate) async fn finish(
        self,
        fetched: Result<(), DriverError>,
        sink: SinkTask,
    ) -> Result<(SinkOutcome, u64), DriverError> {
        if fetched.is_ok() {
            // The sink may already have stopped with an error; joining it reports that.
            self.send(SinkMsg::Finish).await;
        }
        let Pipeline {
            pages,
            mut commits,
            page_shrinks,
        } = self;
        drop(pages); // the sink ends when the channel closes
        let joined = sink
            .await
            .map_err(|e| DriverError::Protocol(format!("the writer task failed: {e}")))?;
        commits.commit_ready()?;
        match (joined, fetched) {
            (Err(sink_error), _) => Err(sink_error),
            (Ok(_), Err(fetch_error)) => Err(fetch_error),
            (Ok(None), Ok(())) => Err(DriverError::Protocol(
                "the writer stopped before the last page".into(),
            )),
            (Ok(Some(outcome)), Ok(())) => Ok((outcome, page_shrinks)),
        }
    }
}

/// Reads every scan to its empty page, one after the other.
pub(crate) async fn keyset(
    client: &Client,
    scans: Vec<KeysetPager>,
    pipeline: &mut Pipeline<'_>,
) -> Result<(), DriverError> {
    for pager in scans {
        scan(client, pager, pipeline).await?;
    }
    Ok(())
}

/// Reads pages until the pager says the scan is over; a server timeout halves the page and
/// asks for the same position again.
async fn scan(
    client: &Client,
    mut pager: KeysetPager,
    pipeline: &mut Pipeline<'_>,
) -> Result<(), DriverError> {
    while let Some(query) = pager.next_query() {
        let info = match pipeline.stream_page(&query, client).await {
            Ok(Some(info)) => info,
            Ok(None) => return Ok(()), // the sink failed; its error is reported when joined
            Err(e) if e.category() == Category::Timeout => {
                let Some(limit) = pager.shrink() else {
                    return Err(e.into());
                };
                pipeline.page_shrinks += 1;
                tracing::warn!(page_size = limit, error = %e, "server timeout: halving the page");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        pipeline.commits.commit_ready()?;
        let summary = PageSummary {
            rows: info.rows,
            last: info.last,
        };
        match pager.advance(&summary)? {
            Advance::Short => tracing::debug!(
                rows = summary.rows,
                limit = pager.limit(),
                "a short page (the server may clamp LIMIT): reading on until an empty page"
            ),
            Advance::Grew(limit) => {
                tracing::info!(page_size = limit, "pages succeed again: doubling the page");
            }
            Advance::Full | Advance::Done => {}
        }
    }
    Ok(())
}

/// Reads a REST list page by page into the sink.
pub(crate) async fn rest(
    client: &Client,
    resource: Resource,
    page_size: u32,
    pipeline: &mut Pipeline<'_>,
) -> Result<(), DriverError> {
    let mut pages = std::pin::pin!(
        client.list_pages::<Box<RawValue>>(resource, ListParams::default().page_size(page_size))
    );
    while let Some(page) = pages.try_next().await? {
        if !pipeline.send(SinkMsg::Objects(page.results)).await {
            return Ok(()); // the sink failed; its error is reported when it is joined
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the sink receives for `pieces` handed to a [`PageBody`], as block lengths.
    async fn blocks_for(pieces: &[usize]) -> Vec<usize> {
        let (tx, mut rx) = mpsc::channel(1024);
        let mut body = PageBody {
            pages: &tx,
            block: BytesMut::new(),
        };
        for &len in pieces {
            body.chunk(bytes::Bytes::from(vec![b'x'; len]))
                .await
                .unwrap();
        }
        assert!(body.flush().await);
        drop(body);
        drop(tx);
        let mut out = Vec::new();
        while let Some(msg) = rx.recv().await {
            match msg {
                SinkMsg::Chunk(b) => out.push(b.len()),
                _ => panic!("only chunks are sent"),
            }
        }
        out
    }

    #[tokio::test]
    async fn no_block_is_larger_than_sink_block_whatever_the_piece_size() {
        // One 400 KiB piece (an uncompressed body's read) goes as 64 KiB blocks plus a rest.
        let blocks = blocks_for(&[400 * 1024]).await;
        assert_eq!(blocks.iter().sum::<usize>(), 400 * 1024);
        assert!(blocks.iter().all(|&b| b <= SINK_BLOCK), "{blocks:?}");
        assert_eq!(blocks.len(), 7, "{blocks:?}");
        // Large pieces after a partial block: the block is topped up, never grown past it.
        let blocks = blocks_for(&[16 * 1024, 400 * 1024, 1000, 400 * 1024]).await;
        assert_eq!(blocks.iter().sum::<usize>(), 816 * 1024 + 1000);
        assert!(blocks.iter().all(|&b| b <= SINK_BLOCK), "{blocks:?}");
        // Small pieces (inflated output) are gathered into blocks of at least SINK_BLOCK.
        let blocks = blocks_for(&[3000; 100]).await;
        assert_eq!(blocks.iter().sum::<usize>(), 300_000);
        assert!(blocks[..blocks.len() - 1].iter().all(|&b| b == SINK_BLOCK));
        assert!(blocks.len() <= 300_000 / SINK_BLOCK + 1, "{blocks:?}");
    }
}
