//! The writing side of a run, on its own thread: pages in, part files and checkpoints out.
//!
//! The fetcher sends each response body over a bounded channel, chunk by chunk as it arrives;
//! the sink scans the chunks for rows ([`PageScanner`]) and writes each row as soon as its
//! last byte is in: rows already emitted are dropped (the dedup window), the rest go into Arrow
//! batches streamed into the open part. No page is ever held whole: memory is one row, one
//! batch and the row group being encoded, whatever the page size. At the page's end the sink
//! answers with the page's row count and last keyset position. When a part is
//! complete at a page boundary it is closed (durable) and, for incremental tables, a
//! checkpoint — the full table state that names it — goes back to the fetcher to commit.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use posthog_core::{
    BatchBuilder, ColumnSpec, ColumnType, FieldSpec, PageScanner, PartFile, PartStore, TableWriter,
    UnixMicros, format_timestamp, raw_timestamp, raw_uuid, row_values,
};
use posthog_state::{ColumnRecord, PartRecord, TableState};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::plan::SinkPlan;
use super::source::Cursor;
use crate::driver::{Observer, Progress};
use crate::{ConfigError, DriverError};

/// At most this many UUIDs are written to the seed-compatible `recent_uuids` field; the dedup
/// window (`dedup_window`) is what the engine reads back.
const RECENT_UUIDS_MAX: usize = 1000;

/// A batch is encoded once it holds this much ([`BatchBuilder::pending_bytes`]), whatever
/// `batch_size` says: 5 000 rows of 10 KB values would otherwise hold 50 MB, and 5 000 rows
/// of 3 000 columns 75 MB of offsets and null bits. 4 MiB rather than 8: at 8 MiB a default
/// event batch of 5 000 rows (~5 MB) cost more peak RSS than one of 10 000 (capped), and 4 MiB
/// lowered both (300 k events: 48.0 → 43.0 MiB at 5 000, 47.8 → 43.4 at 10 000, 39 at 1 000
/// either way) at no measurable CPU cost.
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// What the fetcher sends.
pub(crate) enum SinkMsg {
    /// The next bytes of the HogQL page being received, as they arrive.
    Chunk(Bytes),
    /// The page's request is being sent again: the bytes received so far are dropped.
    Restart,
    /// The page is complete. The sink answers on `reply` as soon as it has parsed it (or
    /// failed to), then writes it.
    PageEnd {
        reply: oneshot::Sender<Option<PageInfo>>,
    },
    /// A page of REST objects.
    Objects(Vec<Box<RawValue>>),
    /// No more pages: flush, close the part and hand back the final state.
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
}

/// How the sink is set up for one run: the plan's writing half, and what the run adds.
pub(crate) struct SinkSetup {
    pub table: String,
    /// Where the table's parts are written.
    pub parts: Arc<dyn PartStore>,
    /// How rows are written (fields, columns, formats, sizes, dedup, repair).
    pub plan: SinkPlan,
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
            last: self.last.map(|(time, id)| Cursor {
                time,
                id: id.hyphenated().to_string(),
            }),
        };
        self.ahead = self.ahead.saturating_sub(self.rows);
        self.restart();
        info
    }
}

fn field_index(fields: &[FieldSpec], name: &str) -> Option<usize> {
    fields.iter().position(|f| f.name == name)
}

pub(crate) struct Sink {
    setup: SinkSetup,
    /// The HogQL page being received.
    rx: Receiving,
    builder: BatchBuilder,
    writer: TableWriter,
    /// Parts in the state: the base's (incremental) plus those closed by this run.
    parts: Vec<PartRecord>,
    files: Vec<PathBuf>,
    /// Column positions of the page's keyset values: (time, id).
    keys: (Option<usize>, Option<usize>),
    watermark: Option<Cursor>,
    rows_read: u64,
    rows_deduplicated: u64,
    rows_output: u64,
    pages: u64,
    started: Instant,
    /// Incremental time range of the rows in the batch being built, and of the open part.
    batch_range: Option<TimeRange>,
    part_range: Option<TimeRange>,
}

impl Sink {
    pub(crate) fn new(setup: SinkSetup) -> Result<Sink, DriverError> {
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
        let writer =
            TableWriter::with_store(setup.parts.clone(), "part", setup.plan.writer.clone())
                .starting_at(first_index);
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
        Ok(Sink {
            rx: Receiving::default(),
            watermark: setup.watermark.clone(),
            builder,
            writer,
            parts,
            files: Vec::new(),
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
            batch_range: None,
            part_range: None,
            setup,
        })
    }

    /// Runs until `Finish` (returning the final state) or until the channel closes without it
    /// (the fetcher failed: the open part is discarded and `None` is returned).
    pub(crate) fn run(
        mut self,
        mut pages: mpsc::Receiver<SinkMsg>,
        checkpoints: mpsc::UnboundedSender<Checkpoint>,
    ) -> Result<Option<SinkOutcome>, DriverError> {
        while let Some(msg) = pages.blocking_recv() {
            match msg {
                SinkMsg::Chunk(bytes) => {
                    self.chunk(&bytes)?;
                    continue;
                }
                SinkMsg::Restart => {
                    self.rx.restart();
                    continue;
                }
                SinkMsg::PageEnd { reply } => self.page_end(reply)?,
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

    /// The next bytes of a HogQL page: every row they complete is written at once.
    fn chunk(&mut self, bytes: &[u8]) -> Result<(), DriverError> {
        let mut scanner = std::mem::take(&mut self.rx.scanner);
        let fed = scanner.feed(bytes, &mut |row: &[u8]| self.query_row(row));
        self.rx.scanner = scanner;
        fed
    }

    /// One row of a HogQL page, as its JSON text.
    fn query_row(&mut self, text: &[u8]) -> Result<(), DriverError> {
        let row = row_values(text)?;
        let n = self.rx.rows;
        self.rx.rows += 1;
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
            Some(t) => Some(raw_timestamp(row[t]).ok_or_else(|| bad_value(n, "time", row[t]))?),
            None => None,
        };
        let id_idx =
            id_idx.ok_or_else(|| DriverError::Protocol("the response has no id column".into()))?;
        let id = raw_uuid(row[id_idx]).ok_or_else(|| bad_value(n, "id", row[id_idx]))?;
        self.rx.last = Some((at, id));
        if !self.rx.consume(n, id)? {
            return Ok(()); // written from an earlier attempt's body
        }
        self.rx.consumed_last = Some((at, id));
        self.rows_read += 1;
        let by_id = self.setup.plan.dedup.is_some() || self.setup.plan.repair.is_some();
        if by_id && !self.admit(id, at.unwrap_or(0)) {
            self.rows_deduplicated += 1;
            return Ok(());
        }
        // A dry run counts what a real run would write, through the same window.
        if self.setup.dry_run {
            self.rows_output += 1;
            return Ok(());
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

    /// The end of a HogQL page's body: checks it was whole and had the columns asked for,
    /// answers the fetcher with its row count and last position, and moves the watermark to
    /// the last row written.
    fn page_end(&mut self, reply: oneshot::Sender<Option<PageInfo>>) -> Result<(), DriverError> {
        let ended = self.rx.scanner.finish().map_err(DriverError::from);
        let checked = ended.and_then(|page| {
            let expected = self.setup.plan.fields.iter().map(|f| f.name.as_str());
            match page.columns {
                Some(columns)
                    if page.rows > 0
                        && !columns.iter().map(String::as_str).eq(expected.clone()) =>
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
            }
        });
        if let Err(e) = checked {
            let _ = reply.send(None);
            return Err(e);
        }
        let info = self.rx.end_page();
        // The fetcher may have stopped waiting (it failed); the state stays consistent and the
        // run ends without committing.
        let _ = reply.send(Some(info));
        self.pages += 1;
        if let Some((Some(time), id)) = self.rx.consumed_last
            && self.setup.plan.time_column.is_some()
            && self.setup.plan.repair.is_none()
        {
            let advanced = match &self.watermark {
                None => true,
                Some(w) => w.time.is_none_or(|t| time >= t),
            };
            if advanced {
                self.watermark = Some(Cursor {
                    time: Some(time),
                    id: id.hyphenated().to_string(),
                });
            }
        }
        Ok(())
    }

    /// Whether a row with this id is written. A run drops what its dedup window says was
    /// emitted already; a repair drops what the table's other parts hold, and writes the rest
    /// even when the window knows it (the window remembers the lost part's rows as emitted),
    /// recording it there so the next run's lookback does not write it once more.
    fn admit(&mut self, id: Uuid, at: UnixMicros) -> bool {
        match (&self.setup.plan.repair, &mut self.setup.plan.dedup) {
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

    fn closed(&mut self, part: PartFile) {
        let range = self.part_range.take().filter(|_| self.setup.incremental);
        let text = |at: UnixMicros| {
            let mut text = String::new();
            format_timestamp(at, &mut text);
            text
        };
        let file = part
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.parts.push(PartRecord {
            file,
            rows: part.rows,
            bytes: part.bytes,
            sha256: part.sha256,
            first_timestamp: range.map(|(first, _)| text(first)),
            last_timestamp: range.map(|(_, last)| text(last)),
        });
        self.files.push(part.path);
    }

    /// At a page boundary: closes the part when it is full, and says whether a checkpoint is
    /// due (an incremental table with parts closed since the last one).
    fn page_done(&mut self) -> Result<bool, DriverError> {
        let before = self.files.len();
        if self.writer.open_rows() + self.builder.len() as u64 >= self.setup.plan.part_rows {
            self.flush_batch()?;
            if let Some(part) = self.writer.close_part()? {
                self.closed(part);
            }
        }
        // Parts closed earlier by a schema change hold rows before the open part's; they are
        // checkpointed together with it, never alone (the watermark covers the open part too).
        let due = self.setup.incremental
            && self.files.len() > before
            && self.writer.open_rows() == 0
            && self.builder.is_empty();
        Ok(due)
    }

    fn finish(mut self) -> Result<SinkOutcome, DriverError> {
        self.flush_batch()?;
        if let Some(part) = self.writer.close_part()? {
            self.closed(part);
        }
        self.report();
        let state = self.state();
        Ok(SinkOutcome {
            state,
            files: self.files,
            rows_read: self.rows_read,
            rows_deduplicated: self.rows_deduplicated,
            rows_output: self.rows_output,
        })
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
            if let Some(w) = &self.watermark {
                let mut text = String::new();
                if let Some(t) = w.time {
                    format_timestamp(t, &mut text);
                    state.last_timestamp = Some(text);
                }
                state.last_uuid = Some(w.id.clone());
            }
            if let Some(window) = &mut self.setup.plan.dedup {
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
        }
        state.updated_at = Some(super::now_rfc3339());
        state.run_id = Some(self.setup.run_id.clone());
        state
    }

    fn report(&self) {
        let Some(observer) = &self.setup.observer else {
            return;
        };
        let elapsed = self.started.elapsed().as_secs_f64();
        let fraction = match (self.setup.span, &self.watermark) {
            (Some((from, to)), Some(Cursor { time: Some(t), .. })) if to > from => {
                Some(((*t - from) as f64 / (to - from) as f64).clamp(0.0, 1.0))
            }
            _ => None,
        };
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

fn bad_value(row: usize, what: &str, raw: &RawValue) -> DriverError {
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
