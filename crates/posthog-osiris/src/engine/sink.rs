//! The writing side of a run, on its own thread: pages in, part files and checkpoints out.
//!
//! The fetcher sends each response body over a bounded channel, chunk by chunk as it arrives;
//! the sink scans the chunks for rows ([`PageScanner`]) and writes each row as soon as its
//! last byte is in: rows already emitted are dropped (the dedup window), the rest go into Arrow
//! batches streamed into the open part. No page is ever held whole: memory is one row, one
//! batch and the row group being encoded, whatever the page size. At the page's end the sink
//! answers with the page's row count and last keyset position.
//!
//! A run may read its range as several slices at once (`slices.rs`). Their bodies reach the
//! sink one whole page at a time (the fetcher takes turns); each slice has its own receiving
//! state and dedup window, and their rows go into one batch builder and one open part, so the
//! memory of a sliced run is that of one scan (a Parquet writer per slice cost 9 MiB of zstd
//! contexts each for 60 columns: 1 M events, 3 slices, pages of 1 000, 79 MiB peak against 50
//! with one part). When `part_rows` rows have been written since the last checkpoint (in the
//! open part, and in parts the writer closed before it on its own: the schema widened, or the
//! footer reached its budget), the open part is closed at the next page boundary (durable)
//! and, for incremental tables, a checkpoint — the full table state that names the closed
//! parts, with the watermark over the slices finished from the start and the ranges committed
//! beyond it — goes back to the fetcher to commit.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use posthog_core::{
    BatchBuilder, ColumnSpec, ColumnType, DedupWindow, FieldSpec, PageScanner, PartFile, PartStore,
    Row, RowValue, TableWriter, UnixMicros, format_timestamp, raw_timestamp, raw_uuid,
};
use posthog_state::{ColumnRecord, PartRecord, TableState};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::plan::SinkPlan;
use super::slices::{self, Segment};
use super::source::{Cursor, Start};
use crate::driver::{Observer, Progress};
use crate::{ConfigError, DriverError};

/// At most this many UUIDs are written to the seed-compatible `recent_uuids` field; the dedup
/// window (`dedup_window`) is what the engine reads back.
const RECENT_UUIDS_MAX: usize = 1000;

/// Microseconds in a day: rows are partitioned by `time.div_euclid(DAY_MICROS)`.
const DAY_MICROS: i64 = 86_400_000_000;

/// A batch is encoded once it holds this much ([`BatchBuilder::pending_bytes`]), whatever
/// `batch_size` says: 5 000 rows of 10 KB values would otherwise hold 50 MB, and 5 000 rows
/// of 3 000 columns 75 MB of offsets and null bits. 4 MiB rather than 8: at 8 MiB a default
/// event batch of 5 000 rows (~5 MB) cost more peak RSS than one of 10 000 (capped), and 4 MiB
/// lowered both (300 k events: 48.0 → 43.0 MiB at 5 000, 47.8 → 43.4 at 10 000, 39 at 1 000
/// either way) at no measurable CPU cost.
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// What the fetcher sends. `slice` numbers the run's slices in the order they were made.
pub(crate) enum SinkMsg {
    /// The next bytes of the HogQL page being received for a slice, as they arrive.
    Chunk { slice: usize, bytes: Bytes },
    /// A slice's page request is being sent (again): the bytes received so far are dropped.
    /// Every body begins with it.
    Restart { slice: usize },
    /// The slice's page is complete. The sink answers on `reply` as soon as it has parsed it
    /// (or failed to), then writes it.
    PageEnd {
        slice: usize,
        reply: oneshot::Sender<Option<PageInfo>>,
    },
    /// The slice now ends before `before`, and the slices `first..` follow it, each from its
    /// instant to the next (the last open-ended).
    Split {
        slice: usize,
        before: UnixMicros,
        first: usize,
        added: Vec<(UnixMicros, Option<UnixMicros>)>,
    },
    /// The slice's scan read its empty page: every row of its range is consumed.
    SliceDone { slice: usize },
    /// A page of REST objects.
    Objects(Vec<Box<RawValue>>),
    /// No more pages: flush, close the parts and hand back the final state.
    Finish,
}

/// What the fetcher needs from a page to ask for the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PageInfo {
    pub rows: usize,
    pub last: Option<Cursor>,
}

/// A state to commit: every part it lists is durable.
pub(crate) struct Checkpoint(pub TableState);

/// The sink's result when the fetcher finished cleanly.
pub(crate) struct SinkOutcome {
    /// The table state to commit last.
    pub state: TableState,
    /// Parts written by this run.
    pub files: Vec<PathBuf>,
    pub rows_read: u64,
    pub rows_deduplicated: u64,
    pub rows_output: u64,
    /// Slices the run read.
    pub slices: usize,
}

/// How the sink is set up for one run: the plan's writing half, and what the run adds.
pub(crate) struct SinkSetup {
    pub table: String,
    /// Where the table's parts are written.
    pub parts: Arc<dyn PartStore>,
    /// How rows are written (fields, columns, formats, sizes, dedup, repair).
    pub plan: SinkPlan,
    /// The slices the run starts with, in time order: where each begins and what it ends
    /// before. One per gap between the plan's committed ranges (one for a repair or a REST
    /// list).
    pub slices: Vec<(Start, Option<UnixMicros>)>,
    /// The state this run starts from. Incremental runs keep its parts; snapshots replace them.
    pub base: TableState,
    pub incremental: bool,
    /// The watermark of the state this run starts from.
    pub watermark: Option<Cursor>,
    pub run_id: String,
    pub observer: Option<Arc<dyn Observer>>,
    /// The time range the scan covers, for progress fractions: (start, end) in µs.
    pub span: Option<(i64, i64)>,
    /// Read and count pages, write nothing (see `Context::dry_run`).
    pub dry_run: bool,
    /// Appended to part names (`part-<n>-<token>.<ext>`) on object stores, where a run whose
    /// lease expired may still be uploading: no two runs ever write one name.
    pub part_token: Option<String>,
}

/// How a repair writes: the rows of lost parts again, and nothing that other parts hold.
#[derive(Debug)]
pub(crate) struct Repair {
    /// Ids the table's remaining parts hold inside the repaired ranges: never written again.
    pub exclude: HashSet<Uuid>,
    /// The lost parts' files; the state drops their records when the repair commits.
    pub lost: HashSet<String>,
}

/// The smallest and largest incremental time among some rows.
type TimeRange = (UnixMicros, UnixMicros);

fn widen(range: Option<TimeRange>, with: Option<TimeRange>) -> Option<TimeRange> {
    match (range, with) {
        (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
        (one, None) | (None, one) => one,
    }
}

/// The HogQL page being received, and the rows written beyond the fetcher's position.
///
/// An attempt's body may break off after some of its rows were written; the next attempt
/// (the same request, or the same position with a smaller page after a timeout) starts at the
/// fetcher's position again, so its first `ahead` rows are the ones already written: they are
/// skipped, and the last of them must be the same row, or the page changed between attempts
/// and the run stops rather than guess.
#[derive(Default)]
struct Receiving {
    scanner: PageScanner,
    /// Rows of the current body so far, skipped ones included.
    rows: usize,
    /// The position of the current body's last row so far.
    last: Option<(Option<UnixMicros>, Uuid)>,
    /// Rows written (or deduplicated) beyond the fetcher's position, and the id of the last.
    ahead: usize,
    ahead_id: Option<Uuid>,
    /// The position of the last row written (or deduplicated), across pages.
    consumed_last: Option<(Option<UnixMicros>, Uuid)>,
}

impl Receiving {
    /// A new attempt's body begins.
    fn restart(&mut self) {
        self.scanner.reset();
        self.rows = 0;
        self.last = None;
    }

    /// Whether row `n` of the body (with this id) is new; false for a row an earlier attempt
    /// delivered, an error when that row is not the same one.
    fn consume(&mut self, n: usize, id: Uuid) -> Result<bool, DriverError> {
        if n < self.ahead {
            if n + 1 == self.ahead && self.ahead_id != Some(id) {
                return Err(DriverError::Protocol(format!(
                    "a page read again after a failed attempt differs from the first reading \
                     at row {n} (id {id}); nothing of it is committed, run again"
                )));
            }
            return Ok(false);
        }
        self.ahead += 1;
        self.ahead_id = Some(id);
        Ok(true)
    }

    /// The body ended: what the fetcher needs to ask for the next page. The fetcher's
    /// position moves to the body's last row.
    fn end_page(&mut self) -> PageInfo {
        let info = PageInfo {
            rows: self.rows,
            last: self.last.map(|(time, id)| cursor(time, id)),
        };
        self.ahead = self.ahead.saturating_sub(self.rows);
        self.restart();
        info
    }
}

fn cursor(time: Option<UnixMicros>, id: Uuid) -> Cursor {
    Cursor {
        time,
        id: id.hyphenated().to_string(),
    }
}

fn field_index(fields: &[FieldSpec], name: &str) -> Option<usize> {
    fields.iter().position(|f| f.name == name)
}

/// One slice of the run as the sink keeps it.
struct Slice {
    rx: Receiving,
    /// Where the slice's range begins and what it ends before.
    lower: Start,
    before: Option<UnixMicros>,
    /// Ids the slice emitted within the lookback of its latest row (the first slice's starts
    /// with the base state's window).
    window: Option<DedupWindow>,
    /// The slice's scan read its empty page.
    done: bool,
}

/// The slices and the committed ranges of the base state, in time order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stretch {
    Slice(usize),
    Range(usize),
}

pub(crate) struct Sink {
    setup: SinkSetup,
    slices: Vec<Slice>,
    order: Vec<Stretch>,
    builder: BatchBuilder,
    writer: TableWriter,
    /// Incremental time range of the rows in the batch being built, and of the open part.
    batch_range: Option<TimeRange>,
    /// The UTC day (days since 1970-01-01) of the rows in the open partition, when
    /// partitioned by day.
    day: Option<i64>,
    part_range: Option<TimeRange>,
    /// Parts in the state: the base's (incremental) plus those closed by this run.
    parts: Vec<PartRecord>,
    files: Vec<PathBuf>,
    /// How many of `files` the last checkpoint named.
    checkpointed: usize,
    /// Rows in the parts closed since the sink last closed one at a page boundary: parts the
    /// writer closed on its own (the schema widened, the footer reached its budget) count
    /// towards `part_rows`, so a run whose parts are smaller still checkpoints every
    /// `part_rows` rows.
    rows_closed: u64,
    /// Column positions of the page's keyset values: (time, id).
    keys: (Option<usize>, Option<usize>),
    rows_read: u64,
    rows_deduplicated: u64,
    rows_output: u64,
    pages: u64,
    started: Instant,
}

impl Sink {
    pub(crate) fn new(mut setup: SinkSetup) -> Result<Sink, DriverError> {
        let builder = BatchBuilder::new(
            &setup.plan.fields,
            setup.plan.flatten,
            &setup.plan.known_columns,
        )
        .map(|builder| builder.with_column_budget(setup.plan.max_columns))
        .map_err(|e| {
            DriverError::Protocol(format!(
                "table {}: the columns recorded in the state cannot be used: {e}",
                setup.table
            ))
        })?;
        let first_index = u32::try_from(setup.base.next_part_seq.max(1)).map_err(|_| {
            DriverError::Protocol(format!(
                "table {}: next_part_seq {} is too large",
                setup.table, setup.base.next_part_seq
            ))
        })?;
        let parts = match (&setup.plan.repair, setup.incremental) {
            (Some(repair), _) => setup
                .base
                .parts
                .iter()
                .filter(|p| !repair.lost.contains(&p.file))
                .cloned()
                .collect(),
            (None, true) => setup.base.parts.clone(),
            (None, false) => Vec::new(),
        };
        let ranges = match setup.plan.repair {
            None => setup.plan.ranges.len(),
            Some(_) => 0,
        };
        if setup.slices.len() != ranges + 1 {
            return Err(DriverError::Protocol(format!(
                "a run over {ranges} committed ranges reads {} slices, not {}",
                ranges + 1,
                setup.slices.len()
            )));
        }
        let mut order = vec![Stretch::Slice(0)];
        for n in 0..ranges {
            order.extend([Stretch::Range(n), Stretch::Slice(n + 1)]);
        }
        let mut first_window = setup.plan.dedup.take();
        let dedup = first_window.is_some();
        let lookback = setup.plan.lookback;
        let mut writer =
            TableWriter::with_store(setup.parts.clone(), "part", setup.plan.writer.clone())
                .starting_at(first_index);
        if let Some(token) = &setup.part_token {
            writer = writer.with_name_token(token.clone());
        }
        let slices = std::mem::take(&mut setup.slices)
            .into_iter()
            .map(|(lower, before)| Slice {
                rx: Receiving::default(),
                lower,
                before,
                window: first_window
                    .take()
                    .or_else(|| dedup.then(|| DedupWindow::new(lookback))),
                done: false,
            })
            .collect();
        Ok(Sink {
            slices,
            order,
            builder,
            writer,
            batch_range: None,
            day: None,
            part_range: None,
            parts,
            files: Vec::new(),
            checkpointed: 0,
            rows_closed: 0,
            keys: (
                setup
                    .plan
                    .time_column
                    .and_then(|c| field_index(&setup.plan.fields, c)),
                setup
                    .plan
                    .id_column
                    .and_then(|c| field_index(&setup.plan.fields, c)),
            ),
            rows_read: 0,
            rows_deduplicated: 0,
            rows_output: 0,
            pages: 0,
            started: Instant::now(),
            setup,
        })
    }

    /// Runs until `Finish` (returning the final state) or until the channel closes without it
    /// (the fetcher failed: the open parts are discarded and `None` is returned).
    pub(crate) fn run(
        mut self,
        mut pages: mpsc::Receiver<SinkMsg>,
        checkpoints: mpsc::UnboundedSender<Checkpoint>,
    ) -> Result<Option<SinkOutcome>, DriverError> {
        while let Some(msg) = pages.blocking_recv() {
            match msg {
                SinkMsg::Chunk { slice, bytes } => {
                    self.chunk(slice, &bytes)?;
                    continue;
                }
                SinkMsg::Restart { slice } => {
                    self.slice(slice)?.rx.restart();
                    continue;
                }
                SinkMsg::Split {
                    slice,
                    before,
                    first,
                    added,
                } => {
                    self.split(slice, before, first, added)?;
                    continue;
                }
                SinkMsg::SliceDone { slice } => {
                    self.slice_done(slice)?;
                    continue;
                }
                SinkMsg::PageEnd { slice, reply } => self.page_end(slice, reply)?,
                SinkMsg::Objects(objects) => self.objects(&objects)?,
                SinkMsg::Finish => return self.finish().map(Some),
            }
            // A repair commits once, at the end: a checkpoint without the lost parts' records
            // would forget that they are lost before their rows are all written again.
            if self.page_done()? && self.setup.plan.repair.is_none() {
                let state = self.state();
                if checkpoints.send(Checkpoint(state)).is_err() {
                    return Ok(None);
                }
            }
            self.report();
        }
        Ok(None)
    }

    fn slice(&mut self, slice: usize) -> Result<&mut Slice, DriverError> {
        let count = self.slices.len();
        self.slices.get_mut(slice).ok_or_else(|| {
            DriverError::Protocol(format!("the run has {count} slices, not slice {slice}"))
        })
    }

    /// The next bytes of a HogQL page: every row they complete is written at once.
    fn chunk(&mut self, slice: usize, bytes: &[u8]) -> Result<(), DriverError> {
        let mut scanner = std::mem::take(&mut self.slice(slice)?.rx.scanner);
        let fed = scanner.feed(bytes, &mut |row: Row| self.query_row(slice, row));
        self.slices[slice].rx.scanner = scanner;
        fed
    }

    /// One row of a HogQL page, as its JSON text.
    fn query_row(&mut self, slice: usize, row: Row<'_, '_>) -> Result<(), DriverError> {
        let row = row.values()?;
        let rx = &mut self.slices[slice].rx;
        let n = rx.rows;
        rx.rows += 1;
        let fields = &self.setup.plan.fields;
        if row.len() != fields.len() {
            return Err(DriverError::Protocol(format!(
                "row {n} of a result page has {} values; the extractor asked for {} columns",
                row.len(),
                fields.len()
            )));
        }
        let (time_idx, id_idx) = self.keys;
        let at = match time_idx {
            Some(t) => Some(raw_timestamp(&row[t]).ok_or_else(|| bad_value(n, "time", row[t]))?),
            None => None,
        };
        let id_idx =
            id_idx.ok_or_else(|| DriverError::Protocol("the response has no id column".into()))?;
        let id = raw_uuid(&row[id_idx]).ok_or_else(|| bad_value(n, "id", row[id_idx]))?;
        rx.last = Some((at, id));
        if !rx.consume(n, id)? {
            return Ok(()); // written from an earlier attempt's body
        }
        rx.consumed_last = Some((at, id));
        self.rows_read += 1;
        let by_id = self.slices[slice].window.is_some() || self.setup.plan.repair.is_some();
        if by_id && !self.admit(slice, id, at.unwrap_or(0)) {
            self.rows_deduplicated += 1;
            return Ok(());
        }
        // A dry run counts what a real run would write, through the same window.
        if self.setup.dry_run {
            self.rows_output += 1;
            return Ok(());
        }
        if let (true, Some(t)) = (self.setup.plan.partition_by_day, at) {
            let day = t.div_euclid(DAY_MICROS);
            if self.day != Some(day) {
                self.enter_day(day, t)?;
            }
        }
        self.builder.append_array_row(&row)?;
        self.batch_range = widen(self.batch_range, at.map(|t| (t, t)));
        if self.batch_full() {
            self.flush_batch()?;
        }
        Ok(())
    }

    /// Whether the pending batch is encoded now: at `batch_size` rows, or earlier when it
    /// holds [`BATCH_BYTES`] (wide or heavy rows).
    fn batch_full(&self) -> bool {
        self.builder.len() >= self.setup.plan.batch_size
            || self.builder.pending_bytes() >= BATCH_BYTES
    }

    /// The end of a HogQL page's body: checks it was whole and had the columns asked for, and
    /// answers the fetcher with its row count and last position.
    fn page_end(
        &mut self,
        slice: usize,
        reply: oneshot::Sender<Option<PageInfo>>,
    ) -> Result<(), DriverError> {
        self.slice(slice)?;
        let expected = self.setup.plan.fields.iter().map(|f| f.name.as_str());
        let rx = &mut self.slices[slice].rx;
        let ended = rx.scanner.finish().map_err(DriverError::from);
        let checked = ended.and_then(|page| match page.columns {
            Some(columns)
                if page.rows > 0 && !columns.iter().map(String::as_str).eq(expected.clone()) =>
            {
                Err(DriverError::Protocol(format!(
                    "the query response has columns {columns:?}; the extractor asked for {:?}",
                    expected.collect::<Vec<_>>()
                )))
            }
            None if page.rows > 0 => Err(DriverError::Protocol(
                "the query response has rows but no `columns`".into(),
            )),
            _ => Ok(()),
        });
        if let Err(e) = checked {
            let _ = reply.send(None);
            return Err(e);
        }
        let info = rx.end_page();
        // The fetcher may have stopped waiting (it failed); the state stays consistent and the
        // run ends without committing.
        let _ = reply.send(Some(info));
        self.pages += 1;
        Ok(())
    }

    /// The last slice now ends at `before`; new slices follow it.
    fn split(
        &mut self,
        slice: usize,
        before: UnixMicros,
        first: usize,
        added: Vec<(UnixMicros, Option<UnixMicros>)>,
    ) -> Result<(), DriverError> {
        if first != self.slices.len() {
            return Err(DriverError::Protocol(format!(
                "new slices numbered from {first}; the run has {}",
                self.slices.len()
            )));
        }
        self.slice(slice)?.before = Some(before);
        let at = self
            .order
            .iter()
            .position(|s| *s == Stretch::Slice(slice))
            .unwrap_or(self.order.len() - 1);
        let dedup = self.slices[slice].window.is_some();
        for (n, (from, end)) in added.into_iter().enumerate() {
            self.slices.push(Slice {
                rx: Receiving::default(),
                lower: Start::AtOrAfter(from),
                before: end,
                window: dedup.then(|| DedupWindow::new(self.setup.plan.lookback)),
                done: false,
            });
            self.order.insert(at + 1 + n, Stretch::Slice(first + n));
        }
        Ok(())
    }

    /// A slice's scan is over: every row of its range is consumed.
    fn slice_done(&mut self, slice: usize) -> Result<(), DriverError> {
        self.slice(slice)?.done = true;
        Ok(())
    }

    /// Whether a row with this id is written. A run drops what its dedup window says was
    /// emitted already; a repair drops what the table's other parts hold, and writes the rest
    /// even when the window knows it (the window remembers the lost part's rows as emitted),
    /// recording it there so the next run's lookback does not write it once more.
    fn admit(&mut self, slice: usize, id: Uuid, at: UnixMicros) -> bool {
        match (&self.setup.plan.repair, &mut self.slices[slice].window) {
            (Some(repair), window) => {
                if repair.exclude.contains(&id) {
                    return false;
                }
                if let Some(window) = window {
                    window.observe(id, at);
                }
                true
            }
            (None, Some(window)) => window.observe(id, at),
            (None, None) => true,
        }
    }

    fn objects(&mut self, objects: &[Box<RawValue>]) -> Result<(), DriverError> {
        self.pages += 1;
        self.rows_read += objects.len() as u64;
        if self.setup.dry_run {
            self.rows_output += objects.len() as u64;
            return Ok(());
        }
        for object in objects {
            self.builder.append_object_row(object)?;
            if self.batch_full() {
                self.flush_batch()?;
            }
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<(), DriverError> {
        if let Some(batch) = self.builder.finish_batch()? {
            let specs = self.builder.schema().to_specs();
            self.rows_output += batch.num_rows() as u64;
            let batch_range = self.batch_range.take();
            // A part closed here (the schema widened) holds the rows before this batch.
            if let Some(part) = self.writer.write(&batch, &specs)? {
                self.closed(part);
            }
            self.part_range = widen(self.part_range, batch_range);
        }
        Ok(())
    }

    /// Rows of another UTC day arrive: the pending batch goes into the open part, which is
    /// closed, and the next part opens in the day's `date=YYYY-MM-DD` directory.
    fn enter_day(&mut self, day: i64, at: UnixMicros) -> Result<(), DriverError> {
        self.flush_batch()?;
        let stamp = text(at);
        let date = stamp
            .split_once('T')
            .map_or(stamp.as_str(), |(date, _)| date);
        if let Some(part) = self.writer.set_directory(Some(format!("date={date}")))? {
            self.closed(part);
        }
        self.day = Some(day);
        Ok(())
    }

    /// Closes the open part, the pending batch written first.
    fn close_part(&mut self) -> Result<(), DriverError> {
        self.flush_batch()?;
        if let Some(part) = self.writer.close_part()? {
            self.closed(part);
        }
        Ok(())
    }

    fn closed(&mut self, part: PartFile) {
        let range = self.part_range.take().filter(|_| self.setup.incremental);
        self.parts.push(PartRecord {
            file: part.name,
            rows: part.rows,
            bytes: part.bytes,
            sha256: part.sha256,
            first_timestamp: range.map(|(first, _)| text(first)),
            last_timestamp: range.map(|(_, last)| text(last)),
        });
        self.rows_closed += part.rows;
        self.files.push(part.path);
    }

    /// Rows consumed but not yet in a closed part.
    fn open_rows(&self) -> u64 {
        self.writer.open_rows() + self.builder.len() as u64
    }

    /// At a page boundary: closes the part when `part_rows` rows have been written since the
    /// last close here (in the open part, and in parts the writer closed on its own before
    /// it), and says whether a checkpoint is due (an incremental table with parts closed since
    /// the last one and nothing consumed outside a closed part: every slice's rows so far are
    /// committed).
    ///
    /// A table partitioned by day also closes the open part at the first page boundary after
    /// a part closed for a new day, so each day's parts are committed as the scan moves on
    /// (without it, a backfill of many small days would commit nothing until `part_rows` rows
    /// had gathered in one part).
    fn page_done(&mut self) -> Result<bool, DriverError> {
        let day_closed = self.setup.plan.partition_by_day && self.files.len() > self.checkpointed;
        let written = self.rows_closed + self.open_rows();
        if written >= self.setup.plan.part_rows || (day_closed && self.open_rows() > 0) {
            self.close_part()?;
            self.rows_closed = 0;
        }
        // Parts closed earlier by a schema change hold rows before the open parts'; they are
        // checkpointed together with them, never alone (the watermark covers the open parts).
        let due =
            self.setup.incremental && self.files.len() > self.checkpointed && self.open_rows() == 0;
        if due {
            self.checkpointed = self.files.len();
        }
        Ok(due)
    }

    fn finish(mut self) -> Result<SinkOutcome, DriverError> {
        let keyset = self.setup.plan.id_column.is_some();
        if let Some(n) = self.slices.iter().position(|s| keyset && !s.done) {
            return Err(DriverError::Protocol(format!(
                "the reading side finished with slice {n} unread to its end"
            )));
        }
        self.close_part()?;
        self.report();
        let state = self.state();
        Ok(SinkOutcome {
            state,
            files: self.files,
            rows_read: self.rows_read,
            rows_deduplicated: self.rows_deduplicated,
            rows_output: self.rows_output,
            slices: self.slices.len(),
        })
    }

    /// The watermark, its dedup window and the ranges committed beyond it, with every
    /// consumed row committed. A repair leaves the watermark and ranges as they were.
    fn prefix(&self) -> slices::Prefix {
        if self.setup.plan.repair.is_some() {
            return slices::Prefix {
                watermark: self.setup.watermark.clone(),
                window: self.slices[0].window.clone(),
                ranges: self.setup.plan.ranges.clone(),
            };
        }
        let segments = self.order.iter().map(|stretch| match *stretch {
            Stretch::Range(n) => Segment::Committed(&self.setup.plan.ranges[n]),
            Stretch::Slice(n) => {
                let s = &self.slices[n];
                Segment::Slice {
                    lower: &s.lower,
                    last: s.rx.consumed_last.map(|(time, id)| cursor(time, id)),
                    done: s.done,
                    window: s.window.as_ref(),
                }
            }
        });
        slices::prefix(
            self.setup.watermark.as_ref(),
            self.setup.plan.lookback,
            segments,
        )
    }

    /// The table state naming every part closed so far, with the watermark and dedup window
    /// as of the last page processed.
    fn state(&mut self) -> TableState {
        let mut state = self.setup.base.clone();
        state.parts = self.parts.clone();
        state.rows_total = state.parts.iter().map(|p| p.rows).sum();
        state.next_part_seq = u64::from(self.writer.next_index());
        state.columns = Some(
            self.builder
                .schema()
                .to_specs()
                .into_iter()
                .map(column_record)
                .collect(),
        );
        if self.setup.incremental {
            let prefix = self.prefix();
            if let Some(w) = &prefix.watermark {
                if let Some(t) = w.time {
                    state.last_timestamp = Some(text(t));
                }
                state.last_uuid = Some(w.id.clone());
            }
            state.committed_ranges = prefix.ranges.iter().map(|r| r.record()).collect();
            if let Some(mut window) = prefix.window {
                let high = window.high_water();
                let mut recent: Vec<String> = window
                    .iter()
                    .filter(|(_, at)| Some(*at) == high)
                    .take(RECENT_UUIDS_MAX)
                    .map(|(id, _)| id.hyphenated().to_string())
                    .collect();
                recent.sort();
                state.recent_uuids = recent;
                let bytes = window.to_bytes();
                state.set_dedup_window_bytes(&bytes);
            }
        } else {
            state.last_timestamp = None;
            state.last_uuid = None;
            state.recent_uuids = Vec::new();
            state.dedup_window = None;
            state.committed_ranges = Vec::new();
        }
        state.updated_at = Some(super::now_rfc3339());
        state.run_id = Some(self.setup.run_id.clone());
        state
    }

    /// How much of the span the slices have read: each slice from its start to its last row
    /// (to its end once done), and the ranges committed before this run.
    fn fraction(&self) -> Option<f64> {
        let (from, to) = self.setup.span?;
        if to <= from {
            return None;
        }
        let mut covered: i64 = 0;
        for stretch in &self.order {
            let (lo, hi) = match *stretch {
                Stretch::Range(n) => {
                    let r = &self.setup.plan.ranges[n];
                    (r.from, r.to.time.unwrap_or(r.from))
                }
                Stretch::Slice(n) => {
                    let s = &self.slices[n];
                    let lo = match &s.lower {
                        Start::AtOrAfter(t) => *t,
                        Start::After(c) => c.time.unwrap_or(from),
                        Start::Beginning => from,
                    };
                    let hi = match (s.done, s.rx.consumed_last) {
                        (true, _) => s.before.unwrap_or(to),
                        (false, Some((Some(t), _))) => t,
                        (false, _) => lo,
                    };
                    (lo, hi)
                }
            };
            covered = covered.saturating_add(hi.min(to).saturating_sub(lo.max(from)).max(0));
        }
        Some((covered as f64 / (to - from) as f64).clamp(0.0, 1.0))
    }

    fn report(&self) {
        let Some(observer) = &self.setup.observer else {
            return;
        };
        let elapsed = self.started.elapsed().as_secs_f64();
        let fraction = self.fraction();
        let eta_seconds = fraction
            .filter(|f| *f > 0.0)
            .map(|f| elapsed * (1.0 - f) / f);
        observer.progress(&Progress {
            table: self.setup.table.clone(),
            pages: self.pages,
            rows_read: self.rows_read,
            rows_deduplicated: self.rows_deduplicated,
            rows_output: self.rows_output,
            rows_per_second: if elapsed > 0.0 {
                self.rows_read as f64 / elapsed
            } else {
                0.0
            },
            fraction,
            eta_seconds,
        });
    }
}

fn text(at: UnixMicros) -> String {
    let mut text = String::new();
    format_timestamp(at, &mut text);
    text
}

/// The columns recorded in the state, as the batch builder takes them (the inverse of
/// [`column_record`]).
pub(crate) fn known_columns(
    state: &TableState,
    table: &str,
) -> Result<Vec<ColumnSpec>, DriverError> {
    let Some(records) = &state.columns else {
        return Ok(Vec::new());
    };
    let unusable = |n: usize, why: String| {
        DriverError::Config(ConfigError::new(
            format!("state.{table}.columns[{n}]"),
            format!("cannot be used: {why}; a column needs name, type and field"),
        ))
    };
    records
        .iter()
        .enumerate()
        .map(|(n, record)| {
            let data_type = ColumnType::from_name(&record.data_type)
                .ok_or_else(|| unusable(n, format!("unknown type {:?}", record.data_type)))?;
            let field = record
                .field
                .clone()
                .ok_or_else(|| unusable(n, "no source field".into()))?;
            Ok(ColumnSpec {
                name: record.name.clone(),
                data_type,
                field,
                key: record.key.clone(),
                fallback: record.fallback,
                rest: record.rest,
            })
        })
        .collect()
}

/// A column as the state records it.
fn column_record(spec: ColumnSpec) -> ColumnRecord {
    ColumnRecord {
        name: spec.name,
        data_type: spec.data_type.as_str().to_owned(),
        field: Some(spec.field),
        key: spec.key,
        fallback: spec.fallback,
        rest: spec.rest,
    }
}

fn bad_value(row: usize, what: &str, raw: RowValue<'_>) -> DriverError {
    let text = raw.get();
    let shown: String = text.chars().take(80).collect();
    DriverError::Protocol(format!(
        "row {row} of a result page has an invalid {what} value {shown}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    /// Feeds body rows `ids` (by index from the fetcher's position); answers which were new.
    fn body(rx: &mut Receiving, ids: &[u128]) -> Result<Vec<bool>, DriverError> {
        rx.restart();
        ids.iter()
            .enumerate()
            .map(|(n, &i)| {
                rx.rows += 1;
                rx.last = Some((Some(i as i64), id(i)));
                rx.consume(n, id(i))
            })
            .collect()
    }

    #[test]
    fn a_retried_body_skips_the_rows_an_earlier_attempt_delivered() {
        let mut rx = Receiving::default();
        // The first attempt breaks off after 3 rows; the retry repeats them, then goes on.
        assert_eq!(body(&mut rx, &[1, 2, 3]).unwrap(), [true; 3]);
        assert_eq!(
            body(&mut rx, &[1, 2, 3, 4, 5]).unwrap(),
            [false, false, false, true, true]
        );
        let info = rx.end_page();
        assert_eq!(info.rows, 5);
        assert_eq!(
            info.last.map(|c| c.id),
            Some(id(5).hyphenated().to_string())
        );
        // The next page starts after row 5: nothing is skipped.
        assert_eq!(body(&mut rx, &[6, 7]).unwrap(), [true, true]);
    }

    #[test]
    fn a_smaller_retry_page_carries_the_skip_into_the_next_page() {
        let mut rx = Receiving::default();
        // 5 rows written, then the body broke off; the page is asked again with LIMIT 2.
        assert_eq!(body(&mut rx, &[1, 2, 3, 4, 5]).unwrap(), [true; 5]);
        assert_eq!(body(&mut rx, &[1, 2]).unwrap(), [false, false]);
        let info = rx.end_page();
        assert_eq!(info.rows, 2, "the fetcher moves to row 2");
        assert_eq!(body(&mut rx, &[3, 4]).unwrap(), [false, false]);
        rx.end_page();
        assert_eq!(body(&mut rx, &[5, 6]).unwrap(), [false, true]);
        rx.end_page();
        assert_eq!(body(&mut rx, &[7]).unwrap(), [true]);
    }

    #[test]
    fn a_retried_body_that_differs_stops_the_run() {
        let mut rx = Receiving::default();
        body(&mut rx, &[1, 2, 3]).unwrap();
        let err = body(&mut rx, &[1, 9, 3])
            .map(|_| ())
            .and_then(|()| body(&mut rx, &[1, 2, 9]).map(|_| ()));
        let err = err.unwrap_err().to_string();
        assert!(
            err.contains("differs from the first reading at row 2"),
            "{err}"
        );
    }
}
