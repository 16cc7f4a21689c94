//! The writing side of a run, on its own thread: pages in, part files and checkpoints out.
//!
//! The fetcher sends each response body over a bounded channel, chunk by chunk as it arrives;
//! at the page's end the sink parses it once,
//! answers at once with the page's row count and last keyset position (so the next request
//! goes out while this page is still being written), then drops rows already emitted (the
//! dedup window), builds Arrow batches and streams them into the open part. When a part is
//! complete at a page boundary it is closed (durable) and, for incremental tables, a
//! checkpoint — the full table state that names it — goes back to the fetcher to commit.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use posthog_core::{
    BatchBuilder, ColumnSpec, ColumnType, PartFile, PartStore, QueryPage, TableWriter, UnixMicros,
    format_timestamp, raw_timestamp, raw_uuid,
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

pub(crate) struct Sink {
    setup: SinkSetup,
    /// The bytes of the HogQL page being received.
    body: Vec<u8>,
    builder: BatchBuilder,
    writer: TableWriter,
    /// Parts in the state: the base's (incremental) plus those closed by this run.
    parts: Vec<PartRecord>,
    files: Vec<PathBuf>,
    /// Column positions of the page: (time, id), found on the first page.
    keys: Option<(Option<usize>, usize)>,
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
            body: Vec::new(),
            watermark: setup.watermark.clone(),
            builder,
            writer,
            parts,
            files: Vec::new(),
            keys: None,
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
                    self.body.extend_from_slice(&bytes);
                    continue;
                }
                SinkMsg::Restart => {
                    self.body.clear();
                    continue;
                }
                SinkMsg::PageEnd { reply } => {
                    // The buffer keeps its capacity for the next page: growing it again from
                    // nothing would copy every page's bytes a second time.
                    let mut body = std::mem::take(&mut self.body);
                    self.query_page(&body, reply)?;
                    body.clear();
                    self.body = body;
                }
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

    fn query_page(
        &mut self,
        body: &[u8],
        reply: oneshot::Sender<Option<PageInfo>>,
    ) -> Result<(), DriverError> {
        let page = match QueryPage::parse(body) {
            Ok(page) => page,
            Err(e) => {
                let _ = reply.send(None);
                return Err(e.into());
            }
        };
        let info = match self.page_info(&page) {
            Ok(info) => info,
            Err(e) => {
                let _ = reply.send(None);
                return Err(e);
            }
        };
        // The fetcher may have stopped waiting (it failed); the page is still written so the
        // sink's state stays consistent, and the run ends without committing it.
        let _ = reply.send(Some(info.clone()));
        self.pages += 1;
        self.rows_read += page.results.len() as u64;
        let (time_idx, id_idx) = self.keys.unwrap_or((None, 0));
        let by_id = self.setup.plan.dedup.is_some() || self.setup.plan.repair.is_some();
        for (n, row) in page.results.iter().enumerate() {
            let at = match time_idx {
                Some(t) => Some(raw_timestamp(row[t]).ok_or_else(|| bad_value(n, "time", row[t]))?),
                None => None,
            };
            if by_id {
                let id = raw_uuid(row[id_idx]).ok_or_else(|| bad_value(n, "id", row[id_idx]))?;
                if !self.admit(id, at.unwrap_or(0)) {
                    self.rows_deduplicated += 1;
                    continue;
                }
            }
            // A dry run counts what a real run would write, through the same window.
            if self.setup.dry_run {
                self.rows_output += 1;
                continue;
            }
            self.builder.append_array_row(row)?;
            self.batch_range = widen(self.batch_range, at.map(|t| (t, t)));
            if self.builder.len() >= self.setup.plan.batch_size {
                self.flush_batch()?;
            }
        }
        if let Some(last) = info.last
            && self.setup.plan.time_column.is_some()
            && self.setup.plan.repair.is_none()
        {
            let advanced = match &self.watermark {
                None => true,
                Some(w) => last.time >= w.time,
            };
            if advanced {
                self.watermark = Some(last);
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

    /// Checks the page's columns (first page) and reads its last keyset position.
    fn page_info(&mut self, page: &QueryPage<'_>) -> Result<PageInfo, DriverError> {
        if self.keys.is_none() && !page.results.is_empty() {
            let expected: Vec<&str> = self
                .setup
                .plan
                .fields
                .iter()
                .map(|f| f.name.as_str())
                .collect();
            if page.columns != expected {
                return Err(DriverError::Protocol(format!(
                    "the query response has columns {:?}; the extractor asked for {:?}",
                    page.columns, expected
                )));
            }
            let find = |name: &str| page.column_index(name);
            let id = self
                .setup
                .plan
                .id_column
                .and_then(find)
                .ok_or_else(|| DriverError::Protocol("the response has no id column".into()))?;
            self.keys = Some((self.setup.plan.time_column.and_then(find), id));
        }
        let Some(last) = page.results.last() else {
            return Ok(PageInfo {
                rows: 0,
                last: None,
            });
        };
        let (time_idx, id_idx) = self.keys.unwrap_or((None, 0));
        let n = page.results.len() - 1;
        let id = raw_uuid(last[id_idx]).ok_or_else(|| bad_value(n, "id", last[id_idx]))?;
        let time = match time_idx {
            Some(t) => Some(raw_timestamp(last[t]).ok_or_else(|| bad_value(n, "time", last[t]))?),
            None => None,
        };
        Ok(PageInfo {
            rows: page.results.len(),
            last: Some(Cursor {
                time,
                id: id.hyphenated().to_string(),
            }),
        })
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
            if self.builder.len() >= self.setup.plan.batch_size {
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
    }
}

fn bad_value(row: usize, what: &str, raw: &RawValue) -> DriverError {
    let text = raw.get();
    let shown: String = text.chars().take(80).collect();
    DriverError::Protocol(format!(
        "row {row} of a result page has an invalid {what} value {shown}"
    ))
}
