//! The reading half of a run: pages requested from PostHog and handed to the sink, with each
//! request sent while the previous page is being written, and the checkpoints the sink hands
//! back committed as they arrive.
//!
//! Keyset scans follow a [`KeysetPager`] (the stop rule, the cursor guard and the page size
//! live there); waits on rate limits and retries live in the client. The decisions made here
//! are what a server timeout does (the page halves and the same position is asked again) and
//! how a run's slices are read: all at once, each page's query sent as soon as its slice's last
//! page is written, so PostHog computes up to `query_concurrency` pages at a time, while the
//! bodies reach the sink one page at a time (a turn taken once a response's headers are in),
//! so pages of different slices never interleave in the sink. The last slice splits once, after its
//! first page comes back full (see `slices.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::BytesMut;
use futures_util::stream::FuturesUnordered;
use futures_util::{StreamExt, TryStreamExt};
use posthog_client::{
    Advance, BodySink, Category, Client, HogQlQuery, KeysetPager, ListParams, PageSummary,
    RangeSummary, Resource,
};
use posthog_state::StateStore;
use serde_json::value::RawValue;
use tokio::sync::{Mutex, OwnedMutexGuard, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::plan::{SlicePlan, SplitPlan};
use super::sink::{Checkpoint, PageInfo, SinkMsg, SinkOutcome};
use super::slices;
use super::source::{KeysetScan, Start};
use super::table_dir::TableDir;
use crate::DriverError;

/// The fetch side's end of the pipe to the sink, and the commits of what comes back.
pub(crate) struct Pipeline<'a> {
    feeder: Feeder,
    commits: Commits<'a>,
}

/// What every slice's reading shares: the pipe to the sink and the turn at it.
struct Feeder {
    pages: mpsc::Sender<SinkMsg>,
    /// Held from a page body's first byte to the sink's answer on it, so bodies of different
    /// slices never interleave at the sink.
    turn: Arc<Mutex<()>>,
    /// Times a server timeout made a page halve.
    page_shrinks: AtomicU64,
    /// The number the next slice made by a split gets.
    next_slice: AtomicUsize,
}

/// A page's body on its way to the sink, in blocks of [`SINK_BLOCK`] bytes.
///
/// The client yields the inflated body in pieces of a few KiB; handing each to the sink's
/// thread on its own cost a thread wake-up per piece (a fifth of the run's CPU time, measured
/// with `perf`), so pieces are gathered into blocks first.
struct PageBody<'p> {
    pages: &'p mpsc::Sender<SinkMsg>,
    slice: usize,
    block: BytesMut,
    /// The turn at the sink, taken when the first attempt's body begins.
    turn: Option<&'p Arc<Mutex<()>>>,
    held: Option<OwnedMutexGuard<()>>,
}

impl PageBody<'_> {
    /// Sends what is gathered; false when the sink has stopped.
    async fn flush(&mut self) -> bool {
        if self.block.is_empty() {
            return true;
        }
        let block = self.block.split().freeze();
        self.send(block).await
    }

    async fn send(&self, bytes: bytes::Bytes) -> bool {
        let slice = self.slice;
        self.pages
            .send(SinkMsg::Chunk { slice, bytes })
            .await
            .is_ok()
    }

    /// Waits for the turn at the sink, unless this body holds it already.
    async fn take_turn(&mut self) {
        if let (None, Some(turn)) = (&self.held, self.turn) {
            self.held = Some(turn.clone().lock_owned().await);
        }
    }
}

impl BodySink for PageBody<'_> {
    async fn restart(&mut self) {
        self.take_turn().await;
        self.block.clear();
        // A closed channel is noticed by the next chunk.
        let slice = self.slice;
        let _ = self.pages.send(SinkMsg::Restart { slice }).await;
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
            if !self.send(block).await {
                return Err(());
            }
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
    /// The table as this run holds it: each commit checks the hold and rewrites the manifest.
    dir: Option<&'a TableDir>,
}

impl Commits<'_> {
    fn commit(&mut self, state: &posthog_state::TableState) -> Result<(), DriverError> {
        match self.dir {
            Some(dir) => dir.commit(self.store, self.table, state)?,
            None => self.store.commit(self.table, state)?,
        }
        tracing::info!(
            table = self.table,
            parts = state.parts.len(),
            watermark = state.last_timestamp.as_deref().unwrap_or("-"),
            ranges_ahead = state.committed_ranges.len(),
            "checkpoint committed"
        );
        Ok(())
    }

    /// Commits every checkpoint the sink has produced so far.
    fn commit_ready(&mut self) -> Result<(), DriverError> {
        while let Ok(Checkpoint(state)) = self.checkpoints.try_recv() {
            self.commit(&state)?;
        }
        Ok(())
    }

    /// Commits checkpoints as they come; returns only when a commit fails (once the sink has
    /// stopped there is nothing more to commit, and its end is reported when it is joined).
    async fn run(&mut self) -> Result<(), DriverError> {
        while let Some(Checkpoint(state)) = self.checkpoints.recv().await {
            self.commit(&state)?;
        }
        std::future::pending().await
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
        dir: Option<&'a TableDir>,
    ) -> Self {
        Pipeline {
            feeder: Feeder {
                pages,
                turn: Arc::new(Mutex::new(())),
                page_shrinks: AtomicU64::new(0),
                next_slice: AtomicUsize::new(0),
            },
            commits: Commits {
                checkpoints,
                store,
                table,
                dir,
            },
        }
    }

    /// Ends the fetch side and joins the sink, answering the sink's outcome and the page
    /// shrinks. When every page was sent (`fetched` is `Ok`) the sink closes its last parts
    /// and hands back the final state; otherwise the channel closes without `Finish` and the
    /// sink discards its open parts. Checkpoints name only durable parts, so they are committed
    /// even when the run failed.
    pub(crate) async fn finish(
        self,
        fetched: Result<(), DriverError>,
        sink: SinkTask,
    ) -> Result<(SinkOutcome, u64), DriverError> {
        if fetched.is_ok() {
            // The sink may already have stopped with an error; joining it reports that.
            self.feeder.send(SinkMsg::Finish).await;
        }
        let Pipeline {
            feeder,
            mut commits,
        } = self;
        let page_shrinks = feeder.page_shrinks.load(Ordering::Relaxed);
        drop(feeder); // the sink ends when the channel closes
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

impl Feeder {
    /// Sends a message to the sink; false when the sink has stopped (it failed).
    async fn send(&self, msg: SinkMsg) -> bool {
        self.pages.send(msg).await.is_ok()
    }

    /// Runs a page's query with its body streamed into the sink as it arrives, then waits
    /// for the page's row count and last position. `Ok(None)` when the sink stopped (it
    /// failed; its error is reported when it is joined).
    async fn stream_page(
        &self,
        slice: usize,
        query: &HogQlQuery,
        client: &Client,
    ) -> Result<Option<PageInfo>, posthog_client::Error> {
        // The client restarts the body before every attempt's first chunk, so what an earlier,
        // failed request for this page delivered is dropped there.
        let mut body = PageBody {
            pages: &self.pages,
            slice,
            block: BytesMut::new(),
            turn: Some(&self.turn),
            held: None,
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
        body.take_turn().await;
        let (reply, answer) = oneshot::channel();
        if !self.send(SinkMsg::PageEnd { slice, reply }).await {
            return Ok(None);
        }
        // The turn is released (with `body`) once the sink has answered.
        Ok(answer.await.ok().flatten())
    }
}

/// What one slice reads: its number, its scans one after the other, and whether it may split.
struct SliceWork {
    slice: usize,
    pagers: Vec<KeysetPager>,
    may_split: bool,
}

/// Reads the plan's slices concurrently, each to its empty page, splitting the last once as
/// `split` says, while the checkpoints the sink hands back are committed.
pub(crate) async fn keyset(
    client: &Client,
    slices: Vec<SlicePlan>,
    split: Option<&SplitPlan>,
    pipeline: &mut Pipeline<'_>,
) -> Result<(), DriverError> {
    let last = slices.len().saturating_sub(1);
    let Pipeline { feeder, commits } = pipeline;
    feeder.next_slice.store(slices.len(), Ordering::SeqCst);
    let feeder = &*feeder;
    let reading = async {
        let mut running = FuturesUnordered::new();
        for (slice, plan) in slices.into_iter().enumerate() {
            let work = SliceWork {
                slice,
                pagers: plan.pagers,
                may_split: slice == last && split.is_some(),
            };
            running.push(read_slice(client, feeder, work, split));
        }
        while let Some(done) = running.next().await {
            for work in done? {
                running.push(read_slice(client, feeder, work, split));
            }
        }
        Ok(())
    };
    tokio::select! {
        read = reading => read,
        Err(e) = commits.run() => Err(e),
    }
}

/// Reads a slice's scans one after the other to their empty pages, then tells the sink the
/// slice is done. A slice that may split does so after its first full page and hands back
/// the slices it became (itself, now bounded, first) instead of reading on.
async fn read_slice(
    client: &Client,
    feeder: &Feeder,
    work: SliceWork,
    split: Option<&SplitPlan>,
) -> Result<Vec<SliceWork>, DriverError> {
    let SliceWork {
        slice,
        pagers,
        mut may_split,
    } = work;
    for mut pager in pagers {
        while let Some(query) = pager.next_query() {
            let Some(advance) = read_page(client, feeder, slice, &query, &mut pager).await? else {
                return Ok(Vec::new()); // the sink failed; its error is reported when joined
            };
            if let (true, Advance::Full, Some(plan)) = (may_split, &advance, split) {
                // One planning query per run: when it finds too little left, the slice reads
                // on alone.
                may_split = false;
                let slices = split_slice(client, feeder, slice, &pager, plan).await?;
                if !slices.is_empty() {
                    return Ok(slices);
                }
            }
        }
    }
    feeder.send(SinkMsg::SliceDone { slice }).await;
    Ok(Vec::new())
}

/// Reads one page and moves the pager on; a server timeout halves the page and leaves the
/// pager where it was. `None` when the sink has stopped.
async fn read_page(
    client: &Client,
    feeder: &Feeder,
    slice: usize,
    query: &HogQlQuery,
    pager: &mut KeysetPager,
) -> Result<Option<Advance>, DriverError> {
    let info = match feeder.stream_page(slice, query, client).await {
        Ok(Some(info)) => info,
        Ok(None) => return Ok(None),
        Err(e) if e.category() == Category::Timeout => {
            let Some(limit) = pager.shrink() else {
                return Err(e.into());
            };
            feeder.page_shrinks.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(slice, page_size = limit, error = %e, "server timeout: halving the page");
            // The same position is asked again; nothing came back in full.
            return Ok(Some(Advance::Short));
        }
        Err(e) => return Err(e.into()),
    };
    let summary = PageSummary {
        rows: info.rows,
        last: info.last,
    };
    let advance = pager.advance(&summary)?;
    match &advance {
        Advance::Short => tracing::debug!(
            slice,
            rows = summary.rows,
            limit = pager.limit(),
            "a short page (the server may clamp LIMIT): reading on until an empty page"
        ),
        Advance::Grew(limit) => {
            tracing::info!(
                slice,
                page_size = limit,
                "pages succeed again: doubling the page"
            );
        }
        _ => {}
    }
    Ok(Some(advance))
}

/// Asks PostHog how many rows are left after the slice's position and where their times fall,
/// and splits the rest into slices (see [`slices::split`]). Empty when it is not worth it.
async fn split_slice(
    client: &Client,
    feeder: &Feeder,
    slice: usize,
    pager: &KeysetPager,
    plan: &SplitPlan,
) -> Result<Vec<SliceWork>, DriverError> {
    let levels = slices::levels(plan.concurrency);
    let Some(query) = pager.query().summary(pager.position(), &levels) else {
        return Ok(Vec::new());
    };
    // Splitting only saves time: a planning query PostHog refuses, times out or answers in a
    // shape we do not read leaves the slice reading on alone, as a run of one slice would.
    let answer = client.query(&query).await.map_err(DriverError::from);
    let summary = match answer.and_then(|r| RangeSummary::from_result(&r).map_err(Into::into)) {
        Ok(summary) => summary,
        Err(e) => {
            tracing::warn!(slice, error = %e, "the planning query failed: one slice reads on");
            return Ok(Vec::new());
        }
    };
    let after = match pager.position() {
        Start::After(c) => c.time,
        Start::AtOrAfter(t) => Some(*t),
        Start::Beginning => None,
    };
    let specs = slices::split(
        &summary,
        plan.concurrency,
        after,
        plan.floor,
        plan.page_size,
        plan.max_page,
    );
    let (Some(head), Some(rest)) = (specs.first(), specs.get(1..).filter(|r| !r.is_empty())) else {
        tracing::info!(
            slice,
            rows_left = summary.rows,
            "little left to read: one slice reads on"
        );
        return Ok(Vec::new());
    };
    let before = head.before.unwrap_or(i64::MAX);
    let first = feeder.next_slice.fetch_add(rest.len(), Ordering::SeqCst);
    let added = rest
        .iter()
        .map(|s| (s.from.unwrap_or(before), s.before))
        .collect();
    if !feeder
        .send(SinkMsg::Split {
            slice,
            before,
            first,
            added,
        })
        .await
    {
        return Ok(Vec::new());
    }
    tracing::info!(
        slice,
        rows_left = summary.rows,
        slices = specs.len(),
        "reading the rest of the range as concurrent slices"
    );
    let bounded = |before: Option<i64>| KeysetScan {
        before,
        ..plan.scan.clone()
    };
    let mut works = vec![SliceWork {
        slice,
        pagers: vec![KeysetPager::new(
            bounded(Some(before)).query(),
            pager.position().clone(),
            head.page_size,
        )],
        may_split: false,
    }];
    for (n, spec) in rest.iter().enumerate() {
        works.push(SliceWork {
            slice: first + n,
            pagers: vec![KeysetPager::new(
                bounded(spec.before).query(),
                Start::AtOrAfter(spec.from.unwrap_or(before)),
                spec.page_size,
            )],
            may_split: false,
        });
    }
    Ok(works)
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
        if !pipeline.feeder.send(SinkMsg::Objects(page.results)).await {
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
            slice: 0,
            block: BytesMut::new(),
            turn: None,
            held: None,
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
                SinkMsg::Chunk { bytes, .. } => out.push(bytes.len()),
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
