//! One `run`: load the state, clean up what an interrupted run left, fetch pages while the sink
//! writes them, commit checkpoints and the final state, and (snapshots) remove the parts the
//! new snapshot replaces.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use posthog_client::{Client, Error as ClientError, ErrorCategory, ListParams};
use posthog_core::{
    DedupWindow, FlattenMode, OutputFormat as CoreFormat, UnixMicros, WriterOptions,
    parse_timestamp,
};
use posthog_state::{StateError, StateStore, TableState};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::repair::{self, KeyColumns, RepairPlan};
use super::sink::{Checkpoint, PageInfo, Sink, SinkMsg, SinkOutcome, SinkSetup};
use super::source::{Cursor, KeysetScan, Source, Start};
use super::table_dir::{TableDir, missing_parts};
use crate::driver::{Context, RunSummary};
use crate::{ConfigError, DriverError, ExtractConfig, OutputFormat};

/// The first run of an incremental table starts this long before now, unless `initial_since`
/// says otherwise.
const DEFAULT_HISTORY: Duration = Duration::from_secs(30 * 24 * 3600);
/// The smallest page a server timeout can shrink the page size to before the run gives up.
const MIN_PAGE: u32 = 10;
/// Full pages in a row at a shrunk page size before the page size doubles back towards the
/// configured one (a 504 may be transient; a heavy region of the table shrinks it again).
const GROW_BACK_AFTER: u32 = 4;
/// Consecutive rate-limited answers (after the client's own retries) before the run gives up.
const MAX_RATE_LIMIT_WAITS: u32 = 12;
/// The longest pause between rate-limited attempts when PostHog gave no `Retry-After`.
const MAX_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(60);
/// The longest `Retry-After` the run waits out (PostHog's longest window is an hour); a longer
/// one ends the run as rate limited, for the next scheduled run to continue, instead of
/// stalling it for as long as the server says.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Counters the fetch loop keeps.
#[derive(Debug, Default)]
struct FetchStats {
    page_shrinks: u64,
    rate_limit_pauses: u64,
}

/// Everything needed to talk to the sink and commit what it hands back.
struct Pipeline<'a> {
    /// Pages to the sink; `None` once the fetch side is done (the sink then ends).
    pages: Option<mpsc::Sender<SinkMsg>>,
    checkpoints: mpsc::UnboundedReceiver<Checkpoint>,
    store: &'a mut dyn StateStore,
    table: &'a str,
}

impl Pipeline<'_> {
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

    /// Sends a query page to the sink and waits for its row count and last position; `None`
    /// when the sink failed (its error is reported when it is joined).
    async fn send_query(&mut self, body: bytes::Bytes) -> Option<PageInfo> {
        let (reply, answer) = oneshot::channel();
        if !self.send(SinkMsg::Query { body, reply }).await {
            return None;
        }
        answer.await.ok().flatten()
    }

    /// Sends a message to the sink; false when the sink has stopped (it failed).
    async fn send(&self, msg: SinkMsg) -> bool {
        match &self.pages {
            Some(pages) => pages.send(msg).await.is_ok(),
            None => false,
        }
    }

    /// Ends the fetch side: `Finish` when every page was sent, so the sink closes the last part
    /// and hands back the final state; otherwise only the channel closes and the sink discards
    /// its open part.
    async fn close(&mut self, complete: bool) {
        if complete {
            // The sink may already have stopped with an error; joining it reports that.
            self.send(SinkMsg::Finish).await;
        }
        self.pages = None;
    }
}

/// What a run does: extract (the normal run) or re-extract the ranges of lost parts.
enum Job {
    Extract,
    Repair(RepairPlan),
}

pub(crate) async fn run(
    config: &ExtractConfig,
    store: &mut dyn StateStore,
    ctx: &Context,
) -> Result<RunSummary, DriverError> {
    let started = Instant::now();
    let source = Source::for_config(config, super::now_micros())?;
    let client = super::build_client(config, ctx)?;
    let table = config.destination.table_name.clone();
    let table_path = ctx.base_path.join(&table);
    let (prior, stored) = load_state(store, config, &table)?;
    // Values of a stored state that cannot be used are the state file's fault, not the
    // config's: they are reported naming the file, before anything on disk changes.
    let location = store.location().map(Path::to_path_buf);
    let unusable = |e: DriverError| match stored {
        true => stored_state_unusable(location.as_deref(), &table, e),
        false => seeded_state_unusable(e),
    };

    let incremental = source.is_incremental();
    let lookback = Duration::from_secs(u64::from(config.source.lookback_window_minutes) * 60);
    let dedup_on = incremental && config.source.deduplication_enabled;
    let watermark = if incremental {
        watermark_of(&prior, &table).map_err(unusable)?
    } else {
        None
    };
    let dedup = if dedup_on {
        Some(dedup_window(&prior, &table, lookback, watermark.as_ref()).map_err(unusable)?)
    } else {
        None
    };
    let now = super::now_micros();
    let start = start_of(config, &source, watermark.as_ref(), dedup_on, lookback, now);
    let (fields, time_column, id_column) = match &source {
        Source::Keyset(scan) => (scan.fields.clone(), scan.time_column, Some(scan.id_column)),
        Source::Rest(_) => (Source::rest_fields(), None, None),
    };
    let known_columns = if incremental {
        super::sink::known_columns(&prior, &table).map_err(unusable)?
    } else {
        Vec::new()
    };
    let dry_run = ctx.dry_run;
    let run_id = uuid::Uuid::new_v4().to_string();

    // From here the table is this run's alone, and every place it writes has taken a file
    // before the first request: a run that cannot finish fails before it reads anything.
    let table_dir = if dry_run {
        None
    } else {
        let dir = TableDir::lock(&table_path, store.location())?;
        dir.check_writable(&run_id)?;
        store.check_writable()?;
        dir.remove_uncommitted(&prior)?;
        Some(dir)
    };
    let job = plan_job(config, &source, &table, &table_path, &prior, ctx.repair).await?;
    let scans: Vec<(KeysetScan, Start)> = match (&source, &job) {
        (Source::Keyset(scan), Job::Extract) => vec![(scan.clone(), start.clone())],
        (Source::Keyset(scan), Job::Repair(plan)) => plan
            .ranges
            .iter()
            .map(|&(first, last)| {
                let range = KeysetScan {
                    until: Some(last),
                    ..scan.clone()
                };
                (range, Start::AtOrAfter(first))
            })
            .collect(),
        (Source::Rest(_), _) => Vec::new(),
    };
    let span = match (&job, &start) {
        (Job::Repair(_), _) => None,
        (_, Start::AtOrAfter(t)) => Some((*t, now)),
        (_, Start::After(Cursor { time: Some(t), .. })) => Some((*t, now)),
        _ => None,
    };
    let (repair, repaired) = match job {
        Job::Extract => (None, Vec::new()),
        Job::Repair(plan) => {
            let lost = plan.lost();
            (Some(plan.repair), lost)
        }
    };
    tracing::info!(
        table = %table,
        data_type = %config.source.data_type,
        run_id = %run_id,
        incremental,
        start = ?start,
        repair = repair.is_some(),
        "extraction starting"
    );

    let sink = Sink::new(SinkSetup {
        table: table.clone(),
        table_dir: table_path.clone(),
        fields,
        flatten: if config.output.flatten_properties {
            FlattenMode::Flatten
        } else {
            FlattenMode::Raw
        },
        known_columns,
        writer: WriterOptions {
            format: core_format(config.output.format),
            row_group_rows: config.performance.batch_size,
            // Parts are closed by the sink at page boundaries, where a checkpoint can name them.
            max_part_rows: u64::MAX,
            zstd_level: 1,
        },
        batch_size: config.performance.batch_size,
        part_rows: config.output.part_rows,
        time_column,
        id_column,
        dedup,
        repair,
        base: prior.clone(),
        incremental,
        watermark,
        run_id,
        observer: ctx.observer.clone(),
        span,
        dry_run,
    })?;
    let (pages_tx, pages_rx) = mpsc::channel(1);
    let (checkpoints_tx, checkpoints_rx) = mpsc::unbounded_channel();
    let sink_task = tokio::task::spawn_blocking(move || sink.run(pages_rx, checkpoints_tx));
    let mut pipeline = Pipeline {
        pages: Some(pages_tx),
        checkpoints: checkpoints_rx,
        store,
        table: &table,
    };

    let mut stats = FetchStats::default();
    let fetched = match &source {
        Source::Keyset(_) => {
            let mut fetched = Ok(());
            for (scan, start) in scans {
                let page_size = config.source.page_size;
                fetched =
                    fetch_keyset(&client, &scan, start, page_size, &mut pipeline, &mut stats).await;
                if fetched.is_err() {
                    break;
                }
            }
            fetched
        }
        Source::Rest(resource) => {
            fetch_rest(&client, *resource, config.source.page_size, &mut pipeline).await
        }
    };
    pipeline.close(fetched.is_ok()).await;
    let joined = sink_task
        .await
        .map_err(|e| DriverError::Protocol(format!("the writer task failed: {e}")))?;
    // Checkpoints name only durable parts: commit them even when the run failed later.
    pipeline.commit_ready()?;
    let outcome = match (joined, fetched) {
        (Err(sink_error), _) => return Err(sink_error),
        (Ok(_), Err(fetch_error)) => return Err(fetch_error),
        (Ok(None), Ok(())) => {
            return Err(DriverError::Protocol(
                "the writer stopped before the last page".into(),
            ));
        }
        (Ok(Some(outcome)), Ok(())) => outcome,
    };
    let SinkOutcome {
        state,
        files,
        rows_read,
        rows_deduplicated,
        rows_output,
    } = outcome;
    // A dry run wrote nothing (the sink stopped after each page's answer): nothing to commit,
    // and its summary reports the state it started from.
    let state = match &table_dir {
        None => prior,
        Some(dir) => {
            pipeline.store.commit(&table, &state)?;
            if !incremental {
                dir.remove_replaced(&prior, &state)?;
            }
            state
        }
    };
    let client_stats = client.stats();
    tracing::info!(
        table = %table,
        rows_read,
        rows_deduplicated,
        rows_output,
        parts = files.len(),
        requests = client_stats.requests,
        dry_run,
        repaired = repaired.len(),
        "extraction finished"
    );
    Ok(RunSummary {
        status: match (dry_run, ctx.repair) {
            (true, _) => "dry_run",
            (false, true) => "repaired",
            (false, false) => "success",
        },
        table,
        rows_read,
        rows_deduplicated,
        rows_output,
        files: files.iter().map(|p| p.display().to_string()).collect(),
        repaired,
        requests: client_stats.requests,
        // Requests sent again: by the client, at half the page after a timeout, or after a
        // rate-limit pause.
        retries: client_stats.retries + stats.page_shrinks + stats.rate_limit_pauses,
        throttled: client_stats.throttled,
        page_shrinks: stats.page_shrinks,
        breaker_trips: client_stats.breaker_trips,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        state,
    })
}

/// Decides what the run does about committed parts whose files are gone: an incremental
/// table refuses to run over them (their rows would never be read again) unless asked to
/// repair; a snapshot replaces every part anyway. A repair is planned here, before the first
/// request: the lost ranges, and the ids the remaining parts hold in them.
async fn plan_job(
    config: &ExtractConfig,
    source: &Source,
    table: &str,
    table_path: &Path,
    prior: &TableState,
    repair: bool,
) -> Result<Job, DriverError> {
    let missing = missing_parts(table_path, prior);
    let scan = match source {
        Source::Keyset(scan) if source.is_incremental() => scan,
        _ if repair => {
            return Err(DriverError::Config(ConfigError::new(
                "--repair",
                format!(
                    "re-extracts lost parts of incremental tables; {} is extracted as a \
                     snapshot, which every run replaces whole: run without --repair",
                    config.source.data_type
                ),
            )));
        }
        _ => {
            for part in &missing {
                tracing::warn!(file = %part.file, "a part of the previous snapshot is missing; this run replaces the snapshot");
            }
            return Ok(Job::Extract);
        }
    };
    if !repair {
        if missing.is_empty() {
            return Ok(Job::Extract);
        }
        return Err(DriverError::MissingParts {
            table: table.to_owned(),
            dir: table_path.to_path_buf(),
            parts: missing,
        });
    }
    let keys = KeyColumns {
        id: scan.id_column,
        time: scan.time_column.unwrap_or("timestamp"),
    };
    let (table, dir, state) = (table.to_owned(), table_path.to_path_buf(), prior.clone());
    let plan =
        tokio::task::spawn_blocking(move || repair::plan(&table, &dir, &state, &missing, keys))
            .await
            .map_err(|e| DriverError::Protocol(format!("the repair planner failed: {e}")))??;
    tracing::info!(
        lost = ?plan.lost(),
        ranges = plan.ranges.len(),
        excluded = plan.repair.exclude.len(),
        "repairing lost parts"
    );
    Ok(Job::Repair(plan))
}

/// Reads pages by keyset until an empty page, each request sent while the previous page is
/// being written.
///
/// A page shorter than its LIMIT is not the end: PostHog clamps LIMIT silently, the clamp has
/// changed between releases and differs by query context, and with an explicit LIMIT no
/// `hasMore` says whether a short page was clamped. Only an empty page ends the scan, which
/// costs one request per scan (⌈N / page⌉ + 1 in all).
async fn fetch_keyset(
    client: &Client,
    scan: &KeysetScan,
    mut start: Start,
    page_size: u32,
    pipeline: &mut Pipeline<'_>,
    stats: &mut FetchStats,
) -> Result<(), DriverError> {
    let mut limit = page_size;
    let mut full_pages_since_shrink = 0;
    loop {
        let shrinks_before = stats.page_shrinks;
        let (body, asked) = fetch_page(client, scan, &start, &mut limit, stats).await?;
        if stats.page_shrinks != shrinks_before {
            full_pages_since_shrink = 0;
        }
        let Some(info) = pipeline.send_query(body).await else {
            return Ok(()); // the sink failed; its error is reported when it is joined
        };
        pipeline.commit_ready()?;
        if info.rows > asked as usize {
            return Err(DriverError::Protocol(format!(
                "the server returned {} rows for LIMIT {asked}",
                info.rows
            )));
        }
        let Some(last) = info.last else {
            return Ok(()); // an empty page: nothing after the cursor
        };
        if info.rows < asked as usize {
            tracing::debug!(
                rows = info.rows,
                limit = asked,
                "a short page (the server may clamp LIMIT): reading on until an empty page"
            );
        }
        if !advanced(&start, &last) {
            return Err(DriverError::Protocol(format!(
                "the keyset cursor did not advance past {:?} {} (the page's last row is not after \
                 where it started); refusing to loop",
                last.time, last.id
            )));
        }
        start = Start::After(last);
        full_pages_since_shrink += 1;
        if limit < page_size && full_pages_since_shrink >= GROW_BACK_AFTER {
            limit = limit.saturating_mul(2).min(page_size);
            full_pages_since_shrink = 0;
            tracing::info!(page_size = limit, "pages succeed again: doubling the page");
        }
    }
}

/// Whether a page's last row lies after where the page started. Times compare as instants;
/// ids only for equality, because ClickHouse orders UUIDs by their second half first, which
/// is not the order of their text.
fn advanced(start: &Start, last: &Cursor) -> bool {
    match start {
        Start::Beginning => true,
        Start::AtOrAfter(at) => last.time.is_none_or(|t| t >= *at),
        Start::After(previous) => {
            *previous != *last
                && match (previous.time, last.time) {
                    (Some(before), Some(now)) => now >= before,
                    _ => true,
                }
        }
    }
}

/// One page, halving the page size on a server timeout and waiting out rate limits. Returns
/// the body and the LIMIT it was asked with.
async fn fetch_page(
    client: &Client,
    scan: &KeysetScan,
    start: &Start,
    limit: &mut u32,
    stats: &mut FetchStats,
) -> Result<(bytes::Bytes, u32), DriverError> {
    let mut rate_waits = 0;
    loop {
        let query = scan.page_query(start, *limit);
        match client.query_raw(&query).await {
            Ok(response) => return Ok((response.body, *limit)),
            Err(e) if e.category() == ErrorCategory::Timeout && *limit > MIN_PAGE => {
                *limit = (*limit / 2).max(MIN_PAGE);
                stats.page_shrinks += 1;
                tracing::warn!(page_size = *limit, error = %e, "server timeout: halving the page");
            }
            Err(e) => {
                rate_waits += 1;
                let pause = rate_limit_pause(&e, rate_waits).ok_or(e)?;
                stats.rate_limit_pauses += 1;
                tracing::warn!(
                    pause_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                    "rate limited: pausing before asking again"
                );
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// How long to pause after a rate-limited answer the client gave up on, or `None` when the
/// error is not a rate limit or the run has waited long enough.
fn rate_limit_pause(error: &ClientError, waits: u32) -> Option<Duration> {
    if error.category() != ErrorCategory::RateLimited || waits > MAX_RATE_LIMIT_WAITS {
        return None;
    }
    let retry_after = match error {
        ClientError::Api { retry_after, .. } => *retry_after,
        _ => None,
    };
    match retry_after {
        Some(wait) if wait > MAX_RETRY_AFTER => None,
        Some(wait) => Some(wait),
        None => Some(Duration::from_secs(1u64 << waits.min(6)).min(MAX_RATE_LIMIT_PAUSE)),
    }
}

/// Reads a REST list page by page into the sink.
async fn fetch_rest(
    client: &Client,
    resource: posthog_client::Resource,
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

/// The table's state from the store (`true`), or seeded from the config's `inputs.state`
/// (`false`).
fn load_state(
    store: &dyn StateStore,
    config: &ExtractConfig,
    table: &str,
) -> Result<(TableState, bool), DriverError> {
    if let Some(state) = store.load(table)? {
        return Ok((state, true));
    }
    let seeded = match config.inputs_state.get(table) {
        None | Some(serde_json::Value::Null) => Ok(TableState::default()),
        Some(value) => {
            let state: TableState = serde_path_to_error::deserialize(value).map_err(|e| {
                let path = e.path().to_string();
                match path.as_str() {
                    "" | "." => ConfigError::new(
                        format!("inputs.state.{table}"),
                        format!("is not a table state: {}", e.inner()),
                    ),
                    field => ConfigError::new(
                        format!("inputs.state.{table}.{field}"),
                        e.inner().to_string(),
                    ),
                }
            })?;
            state.validate(table).map_err(|e| match e {
                StateError::InvalidState { reason, .. } => {
                    DriverError::Config(ConfigError::new(format!("inputs.state.{table}"), reason))
                }
                other => DriverError::State(other),
            })?;
            Ok(state)
        }
    };
    seeded.map(|state| (state, false))
}

/// An error about a value of a state seeded from the config, named by its path in the config
/// (`inputs.state.<table>.<field>`).
fn seeded_state_unusable(err: DriverError) -> DriverError {
    match err {
        DriverError::Config(e) if e.field.starts_with("state.") => {
            DriverError::Config(ConfigError::new(format!("inputs.{}", e.field), e.message))
        }
        other => other,
    }
}

/// An error about a value of a stored state (named `state.<table>.<field>`, as for a state
/// seeded from the config), restated as the store's own: [`StateError::Corrupt`] naming the
/// state file when the store has one, else [`StateError::InvalidState`]. Either is a data error:
/// the file was left as it was, and the user must fix or move it, not the config.
fn stored_state_unusable(location: Option<&Path>, table: &str, err: DriverError) -> DriverError {
    let reason = match err {
        DriverError::Config(e) => {
            let prefix = format!("state.{table}.");
            match e.field.strip_prefix(&prefix) {
                Some(field) => format!("{field}: {}", e.message),
                None => e.to_string(),
            }
        }
        other => return other,
    };
    DriverError::State(match location {
        Some(path) => StateError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("table {table:?}: {reason}"),
        },
        None => StateError::InvalidState {
            table: table.to_owned(),
            reason,
        },
    })
}

/// The state's keyset position, with its timestamp checked.
fn watermark_of(state: &TableState, table: &str) -> Result<Option<Cursor>, DriverError> {
    let Some(text) = &state.last_timestamp else {
        return Ok(None);
    };
    let time = parse_timestamp(text).ok_or_else(|| {
        DriverError::Config(ConfigError::new(
            format!("state.{table}.last_timestamp"),
            format!("{text:?} is not an RFC 3339 timestamp"),
        ))
    })?;
    Ok(Some(Cursor {
        time: Some(time),
        id: state.last_uuid.clone().unwrap_or_default(),
    }))
}

/// The dedup window from the state, or from the seed's `recent_uuids` (placed at the
/// watermark), or empty.
fn dedup_window(
    state: &TableState,
    table: &str,
    lookback: Duration,
    watermark: Option<&Cursor>,
) -> Result<DedupWindow, DriverError> {
    if let Some(bytes) = state.dedup_window_bytes(table)? {
        return DedupWindow::from_bytes(lookback, &bytes).map_err(|e| {
            DriverError::Config(ConfigError::new(
                format!("state.{table}.dedup_window"),
                format!("cannot be used: {e}"),
            ))
        });
    }
    let mut window = DedupWindow::new(lookback);
    if let Some(at) = watermark.and_then(|w| w.time) {
        for (n, text) in state.recent_uuids.iter().enumerate() {
            let id = uuid::Uuid::parse_str(text).map_err(|_| {
                ConfigError::new(
                    format!("state.{table}.recent_uuids[{n}]"),
                    format!("{text:?} is not a UUID"),
                )
            })?;
            window.observe(id, at);
        }
    }
    Ok(window)
}

/// Where the scan starts.
///
/// - A snapshot starts at the beginning.
/// - An incremental table with a watermark and dedup on re-reads the lookback window:
///   `time >= watermark - lookback`; the dedup window drops what was already emitted, late
///   events are kept.
/// - With dedup off it resumes strictly after the keyset position (no lookback, so nothing is
///   read twice; events arriving late behind the watermark are not seen).
/// - A first run starts at `initial_since`, else 30 days ago.
fn start_of(
    config: &ExtractConfig,
    source: &Source,
    watermark: Option<&Cursor>,
    dedup_on: bool,
    lookback: Duration,
    now: UnixMicros,
) -> Start {
    if !source.is_incremental() {
        return Start::Beginning;
    }
    match watermark {
        Some(w) if dedup_on => Start::AtOrAfter(
            w.time
                .unwrap_or(0)
                .saturating_sub(i64::try_from(lookback.as_micros()).unwrap_or(i64::MAX)),
        ),
        Some(w) if !w.id.is_empty() => Start::After(w.clone()),
        Some(w) => Start::AtOrAfter(w.time.unwrap_or(0)),
        None => Start::AtOrAfter(match config.source.initial_since {
            Some(since) => i64::try_from(since.unix_timestamp_nanos() / 1000).unwrap_or(i64::MIN),
            None => now - i64::try_from(DEFAULT_HISTORY.as_micros()).unwrap_or(0),
        }),
    }
}

fn core_format(format: OutputFormat) -> CoreFormat {
    match format {
        OutputFormat::Parquet => CoreFormat::Parquet,
        OutputFormat::Jsonl => CoreFormat::Jsonl,
        OutputFormat::Csv => CoreFormat::Csv,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_must_end_after_where_it_started() {
        let at = |time: i64, id: &str| Cursor {
            time: Some(time),
            id: id.into(),
        };
        let from = Start::After(at(100, "b"));
        assert!(
            advanced(&from, &at(100, "a")),
            "same instant, another id: UUID order is the server's"
        );
        assert!(advanced(&from, &at(101, "a")));
        assert!(!advanced(&from, &at(100, "b")), "the same position again");
        assert!(!advanced(&from, &at(99, "z")), "back in time");
        assert!(advanced(&Start::AtOrAfter(100), &at(100, "a")));
        assert!(!advanced(&Start::AtOrAfter(100), &at(99, "a")));
        assert!(advanced(&Start::Beginning, &at(i64::MIN, "a")));
    }

    #[test]
    fn rate_limit_pauses_honour_retry_after_and_give_up() {
        let throttled = |retry_after| ClientError::Api {
            status: 429,
            api: None,
            body: None,
            retry_after,
        };
        assert_eq!(
            rate_limit_pause(&throttled(Some(Duration::from_secs(7))), 1),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            rate_limit_pause(&throttled(Some(MAX_RETRY_AFTER)), 1),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            rate_limit_pause(&throttled(Some(Duration::from_secs(86_400))), 1),
            None,
            "a day-long Retry-After ends the run instead of stalling it"
        );
        assert_eq!(
            rate_limit_pause(&throttled(Some(posthog_client::RETRY_AFTER_CEILING)), 1),
            None,
            "Retry-After: 2^70 reaches the run saturated, and ends it at once"
        );
        assert_eq!(
            rate_limit_pause(&throttled(None), 1),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            rate_limit_pause(&throttled(None), 9),
            Some(MAX_RATE_LIMIT_PAUSE)
        );
        assert_eq!(
            rate_limit_pause(&throttled(None), MAX_RATE_LIMIT_WAITS + 1),
            None
        );
        let server = ClientError::Api {
            status: 500,
            api: None,
            body: None,
            retry_after: None,
        };
        assert_eq!(rate_limit_pause(&server, 1), None);
    }
}
