//! One `run`: load the state, clean up what an interrupted run left, fetch pages while the sink
//! writes them, commit checkpoints and the final state, and (snapshots) remove the parts the
//! new snapshot replaces.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use posthog_client::{Client, Error as ClientError, ErrorCategory, ListParams};
use posthog_core::{
    DedupWindow, OutputFormat as CoreFormat, UnixMicros, WriterOptions, parse_timestamp,
    writer::sync_dir,
};
use posthog_state::{StateError, StateStore, TableState};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::sink::{Checkpoint, PageInfo, Sink, SinkMsg, SinkOutcome, SinkSetup};
use super::source::{Cursor, KeysetScan, Source, Start};
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
    pages: mpsc::Sender<SinkMsg>,
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
        self.pages.send(SinkMsg::Query { body, reply }).await.ok()?;
        answer.await.ok().flatten()
    }
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
    let table_dir = ctx.base_path.join(&table);
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
    let span = match &start {
        Start::AtOrAfter(t) => Some((*t, now)),
        Start::After(Cursor { time: Some(t), .. }) => Some((*t, now)),
        _ => None,
    };
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
    if !dry_run {
        std::fs::create_dir_all(&table_dir)
            .map_err(|e| DriverError::io("create the output directory", &table_dir, e))?;
        remove_uncommitted(&table_dir, &prior)?;
    }
    let run_id = uuid::Uuid::new_v4().to_string();
    tracing::info!(
        table = %table,
        data_type = %config.source.data_type,
        run_id = %run_id,
        incremental,
        start = ?start,
        "extraction starting"
    );

    let sink = Sink::new(SinkSetup {
        table: table.clone(),
        table_dir: table_dir.clone(),
        fields,
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
        pages: pages_tx,
        checkpoints: checkpoints_rx,
        store,
        table: &table,
    };

    let mut stats = FetchStats::default();
    let fetched = match &source {
        Source::Keyset(scan) => {
            fetch_keyset(
                &client,
                scan,
                start,
                config.source.page_size,
                &mut pipeline,
                &mut stats,
            )
            .await
        }
        Source::Rest(resource) => {
            fetch_rest(&client, *resource, config.source.page_size, &mut pipeline).await
        }
    };
    if fetched.is_ok() {
        // The sink may already have stopped with an error; joining it below reports that.
        let _ = pipeline.pages.send(SinkMsg::Finish).await;
    }
    // Closing the channel ends the sink's loop if `Finish` was not sent (the fetch failed).
    drop(std::mem::replace(&mut pipeline.pages, mpsc::channel(1).0));
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
    let state = if dry_run {
        prior
    } else {
        pipeline.store.commit(&table, &state)?;
        if !incremental {
            remove_replaced(&table_dir, &prior, &state)?;
        }
        state
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
        "extraction finished"
    );
    Ok(RunSummary {
        status: if dry_run { "dry_run" } else { "success" },
        table,
        rows_read,
        rows_deduplicated,
        rows_output,
        files: files.iter().map(|p| p.display().to_string()).collect(),
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

/// Reads pages by keyset until a short page, each request sent while the previous page is
/// being written.
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
        // A short page is the end: the LIMIT we send never exceeds PostHog's 50 000 clamp, so
        // fewer rows than asked means there are no more.
        if info.rows < asked as usize {
            return Ok(());
        }
        let Some(last) = info.last else {
            return Ok(());
        };
        if let Start::After(previous) = &start
            && *previous == last
        {
            return Err(DriverError::Protocol(format!(
                "the keyset cursor did not advance past {:?} {}; refusing to loop",
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
        if pipeline
            .pages
            .send(SinkMsg::Objects(page.results))
            .await
            .is_err()
        {
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

/// Removes part files in the table directory that the committed state does not name (what a
/// run interrupted between writing a part and committing its state leaves), and temporary
/// files of parts never finished.
fn remove_uncommitted(table_dir: &Path, state: &TableState) -> Result<(), DriverError> {
    let committed: std::collections::HashSet<&str> =
        state.parts.iter().map(|p| p.file.as_str()).collect();
    let entries = std::fs::read_dir(table_dir)
        .map_err(|e| DriverError::io("list the output directory", table_dir, e))?;
    let mut removed = 0;
    for entry in entries {
        let entry =
            entry.map_err(|e| DriverError::io("list the output directory", table_dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let leftover = (is_part_name(name) && !committed.contains(name))
            || (name.starts_with(".part-") && name.ends_with(".tmp"));
        if leftover {
            let path = entry.path();
            tracing::warn!(file = %path.display(), "removing a part no committed state names (left by an interrupted run)");
            std::fs::remove_file(&path)
                .map_err(|e| DriverError::io("remove the uncommitted part", &path, e))?;
            removed += 1;
        }
    }
    for part in &state.parts {
        if !table_dir.join(&part.file).exists() {
            tracing::warn!(file = %part.file, "a committed part is missing from the output directory");
        }
    }
    if removed > 0 {
        sync_dir(table_dir)?;
    }
    Ok(())
}

/// After a snapshot's state is committed, removes the parts of the snapshot it replaced.
fn remove_replaced(
    table_dir: &Path,
    prior: &TableState,
    state: &TableState,
) -> Result<(), DriverError> {
    let kept: std::collections::HashSet<&str> =
        state.parts.iter().map(|p| p.file.as_str()).collect();
    let mut removed = false;
    for part in prior
        .parts
        .iter()
        .filter(|p| !kept.contains(p.file.as_str()))
    {
        let path: PathBuf = table_dir.join(&part.file);
        match std::fs::remove_file(&path) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(DriverError::io("remove a replaced part", &path, e)),
        }
    }
    if removed {
        sync_dir(table_dir)?;
    }
    Ok(())
}

/// `part-<digits>.<parquet|jsonl|csv>`: the names the engine gives parts.
fn is_part_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("part-") else {
        return false;
    };
    let Some((digits, ext)) = rest.split_once('.') else {
        return false;
    };
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && matches!(ext, "parquet" | "jsonl" | "csv")
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
    fn only_engine_part_names_are_cleaned_up() {
        assert!(is_part_name("part-00001.parquet"));
        assert!(is_part_name("part-12.csv"));
        assert!(!is_part_name("part-.csv"));
        assert!(!is_part_name("part-0001.txt"));
        assert!(!is_part_name("notes.parquet"));
        assert!(!is_part_name("part-0001-copy.jsonl"));
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
