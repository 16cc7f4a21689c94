//! What one run will do, decided before it touches anything: a [`RunPlan`] is computed purely
//! from the validated config, the state the run starts from and the current time, so every
//! decision (where the scan starts, the dedup window, what it reads, how parts are written)
//! is made once, in one place, and tested without a network or a disk.

use std::path::{Path, PathBuf};
use std::time::Duration;

use posthog_client::KeysetPager;
use posthog_core::{
    ColumnSpec, DEFAULT_ROW_GROUP_BYTES, DedupWindow, FieldSpec, FlattenMode, PartFormat,
    UnixMicros, WriterOptions, parse_timestamp,
};
use posthog_state::{StateError, TableState};

use super::repair::RepairPlan;
use super::sink::Repair;
use super::slices::BaseRange;
use super::source::{Cursor, KeysetScan, Source, Start};
use crate::{ConfigError, DriverError, ExtractConfig, OutputFormat};

/// The most rows in a Parquet row group; row groups are normally closed by their encoded size
/// ([`DEFAULT_ROW_GROUP_BYTES`]) long before.
const ROW_GROUP_MAX_ROWS: usize = 1_000_000;

/// The first run of an incremental table starts this long before now, unless `initial_since`
/// says otherwise.
const DEFAULT_HISTORY: Duration = Duration::from_secs(30 * 24 * 3600);

/// Where the state a run starts from came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StateOrigin {
    /// The state store's entry for the table (the store's file, when it has one).
    Stored(Option<PathBuf>),
    /// The config's `inputs.state` (or nothing: a first run).
    Seeded,
}

/// One run, decided: built by [`RunPlan::new`] and, for `--repair`, [`RunPlan::repair`].
#[derive(Debug)]
pub(crate) struct RunPlan {
    /// The destination table's name and directory.
    pub table: String,
    pub table_path: PathBuf,
    /// What the table's rows are read from.
    pub source: Source,
    /// The state the run starts from: incremental runs keep its parts, snapshots replace them.
    pub base: TableState,
    /// Whether the table is read incrementally (a keyset with a time column).
    pub incremental: bool,
    /// Where the scan starts (logged; the scans below start there).
    pub start: Start,
    /// The watermark of the base state.
    pub watermark: Option<Cursor>,
    /// The slices to read, concurrently, in time order: one, or one per gap between the
    /// ranges an earlier sliced run committed (see [`BaseRange`]). A repair reads one slice
    /// made of one scan per lost range, one after the other.
    pub slices: Vec<SlicePlan>,
    /// How the last slice splits once its first page comes back full; `None` when the run
    /// reads one slice at a time (`query_concurrency: 1`, snapshots, repairs).
    pub split: Option<SplitPlan>,
    /// Rows a REST page asks for.
    pub page_size: u32,
    /// How the sink writes.
    pub sink: SinkPlan,
    /// The time range the scan covers, for progress fractions: (start, end) in µs.
    pub span: Option<(UnixMicros, UnixMicros)>,
    /// Read and count, write nothing.
    pub dry_run: bool,
    /// The lost parts a repair re-extracts (file names); empty for other runs.
    pub repaired: Vec<String>,
}

/// One slice of the run's range: the keyset scans that read it, one after the other, and the
/// range it covers.
#[derive(Debug)]
pub(crate) struct SlicePlan {
    pub pagers: Vec<KeysetPager>,
    /// Where the slice's range begins.
    pub lower: Start,
    /// The instant the slice's range ends before; `None` for the last slice.
    pub before: Option<UnixMicros>,
}

/// How the open-ended last slice is split (see `slices.rs`).
#[derive(Debug, Clone)]
pub(crate) struct SplitPlan {
    /// The scan the new slices read, each with its own bounds.
    pub scan: KeysetScan,
    /// Slices read at once (`performance.query_concurrency`, at least 2 here).
    pub concurrency: usize,
    pub page_size: u32,
    /// The largest page a slice may ask for.
    pub max_page: u32,
    /// Boundaries lie after this instant: the base watermark, whose lookback only the first
    /// slice's dedup window covers.
    pub floor: Option<UnixMicros>,
}

/// How the sink writes the rows it is sent.
#[derive(Debug)]
pub(crate) struct SinkPlan {
    pub fields: Vec<FieldSpec>,
    pub flatten: FlattenMode,
    /// Columns already in the table (incremental runs), so types never change.
    pub known_columns: Vec<ColumnSpec>,
    pub writer: WriterOptions,
    pub batch_size: usize,
    pub part_rows: u64,
    /// The table's column budget (`output.max_columns`).
    pub max_columns: usize,
    pub time_column: Option<&'static str>,
    pub id_column: Option<&'static str>,
    /// The dedup window, when rows are deduplicated by id: the first slice's (the only one
    /// that re-reads what earlier runs emitted); every other slice starts an empty one.
    pub dedup: Option<DedupWindow>,
    /// How far back the dedup windows remember.
    pub lookback: Duration,
    /// Ranges an earlier run committed beyond the watermark, in time order; the slices read
    /// the gaps between them.
    pub ranges: Vec<BaseRange>,
    /// A repair's exclusions and lost parts.
    pub repair: Option<Repair>,
    /// Parts go to `date=YYYY-MM-DD/` by the UTC date of `time_column` (`output.partition_by:
    /// day`; only tables with a time column).
    pub partition_by_day: bool,
}

impl RunPlan {
    /// The plan for `config`, starting from `base` at `now`. Values of the base state that
    /// cannot be used are reported naming where they came from (the state file, or the
    /// config's `inputs.state`), before anything is touched.
    pub(crate) fn new(
        config: &ExtractConfig,
        base_path: &Path,
        base: TableState,
        origin: &StateOrigin,
        dry_run: bool,
        now: UnixMicros,
    ) -> Result<RunPlan, DriverError> {
        let table = config.destination.table_name.clone();
        let source = Source::for_config(config, now)?;
        let incremental = source.is_incremental();
        let lookback = Duration::from_secs(u64::from(config.source.lookback_window_minutes) * 60);
        let dedup_on = incremental && config.source.deduplication_enabled;
        let unusable = |e: DriverError| match origin {
            StateOrigin::Stored(location) => stored_state_unusable(location.as_deref(), &table, e),
            StateOrigin::Seeded => seeded_state_unusable(e),
        };
        let watermark = match incremental {
            true => watermark_of(&base, &table).map_err(unusable)?,
            false => None,
        };
        let dedup = match dedup_on {
            true => {
                Some(dedup_window(&base, &table, lookback, watermark.as_ref()).map_err(unusable)?)
            }
            false => None,
        };
        let known_columns = match incremental {
            true => super::sink::known_columns(&base, &table).map_err(unusable)?,
            false => Vec::new(),
        };
        let ranges = match incremental {
            true => committed_ranges(&base, &table, lookback, watermark.as_ref(), dedup_on)
                .map_err(unusable)?,
            false => Vec::new(),
        };
        let start = start_of(config, &source, watermark.as_ref(), dedup_on, lookback, now);
        let span = match &start {
            Start::AtOrAfter(t) | Start::After(Cursor { time: Some(t), .. }) => Some((*t, now)),
            _ => None,
        };
        let page_size = config.source.page_size;
        let (fields, time_column, id_column, slices) = match &source {
            Source::Keyset(scan) => (
                scan.fields.clone(),
                scan.time_column,
                Some(scan.id_column),
                gap_slices(scan, &start, &ranges, page_size),
            ),
            Source::Rest(_) => (Source::rest_fields(), None, None, Vec::new()),
        };
        let split = split_plan(config, &source, &ranges, watermark.as_ref());
        let sink = SinkPlan {
            fields,
            flatten: match config.output.flatten_properties {
                true => FlattenMode::Flatten,
                false => FlattenMode::Raw,
            },
            known_columns,
            writer: WriterOptions {
                format: part_format(config.output.format),
                // Row groups are sized by what they cost, not by `batch_size`: closed at 1 MiB
                // encoded, so a small batch size does not multiply row groups (and footer
                // metadata) and a large one does not hold more than one row group.
                row_group_rows: ROW_GROUP_MAX_ROWS,
                row_group_bytes: DEFAULT_ROW_GROUP_BYTES,
                // Parts are closed by the sink at page boundaries, where a checkpoint can name
                // them.
                max_part_rows: u64::MAX,
                zstd_level: 1,
            },
            batch_size: config.performance.batch_size,
            part_rows: config.output.part_rows,
            max_columns: config.output.max_columns,
            time_column,
            id_column,
            dedup,
            lookback,
            ranges,
            repair: None,
            partition_by_day: config.output.partition_by == crate::config::PartitionBy::Day
                && time_column.is_some(),
        };
        Ok(RunPlan {
            table_path: base_path.join(&table),
            table,
            source,
            base,
            incremental,
            start,
            watermark,
            slices,
            split,
            page_size,
            sink,
            span,
            dry_run,
            repaired: Vec::new(),
        })
    }

    /// The plan turned into a repair: the scan reads only the lost parts' ranges (closed at
    /// both ends), writes only what the remaining parts do not hold, and commits once.
    pub(crate) fn repair(mut self, plan: RepairPlan) -> RunPlan {
        if let Source::Keyset(scan) = &self.source {
            let pagers = plan
                .ranges
                .iter()
                .map(|&(first, last)| {
                    let range = KeysetScan {
                        until: Some(last),
                        ..scan.clone()
                    };
                    KeysetPager::new(range.query(), Start::AtOrAfter(first), self.page_size)
                })
                .collect();
            self.slices = vec![SlicePlan {
                pagers,
                lower: Start::Beginning,
                before: None,
            }];
        }
        self.split = None;
        self.repaired = plan.lost();
        self.span = None;
        self.sink.repair = Some(plan.repair);
        self
    }

    /// The keyset scan this plan reads, when it reads one.
    pub(crate) fn keyset(&self) -> Option<&KeysetScan> {
        match &self.source {
            Source::Keyset(scan) => Some(scan),
            Source::Rest(_) => None,
        }
    }
}

/// How the last slice splits: incremental keyset scans with `query_concurrency` over 1. Its
/// boundaries lie after the last committed range, else after the watermark.
fn split_plan(
    config: &ExtractConfig,
    source: &Source,
    ranges: &[BaseRange],
    watermark: Option<&Cursor>,
) -> Option<SplitPlan> {
    match source {
        Source::Keyset(scan)
            if source.is_incremental() && config.performance.query_concurrency > 1 =>
        {
            Some(SplitPlan {
                scan: scan.clone(),
                concurrency: config.performance.query_concurrency,
                page_size: config.source.page_size,
                max_page: u32::try_from(crate::config::raw::PAGE_SIZE.max).unwrap_or(u32::MAX),
                floor: ranges
                    .last()
                    .and_then(|r| r.to.time)
                    .or(watermark.and_then(|w| w.time)),
            })
        }
        _ => None,
    }
}

/// The slices that read the gaps around the ranges an earlier run committed: from `start` to
/// the first range, after each range to the next, and after the last to the end. Without
/// ranges, one slice from `start`.
fn gap_slices(
    scan: &KeysetScan,
    start: &Start,
    ranges: &[BaseRange],
    page_size: u32,
) -> Vec<SlicePlan> {
    let mut slices = Vec::with_capacity(ranges.len() + 1);
    let mut lower = start.clone();
    for range in ranges {
        let bounded = KeysetScan {
            before: Some(range.from),
            ..scan.clone()
        };
        slices.push(SlicePlan {
            pagers: vec![KeysetPager::new(bounded.query(), lower.clone(), page_size)],
            lower,
            before: Some(range.from),
        });
        lower = Start::After(range.to.clone());
    }
    slices.push(SlicePlan {
        pagers: vec![KeysetPager::new(scan.query(), lower.clone(), page_size)],
        lower,
        before: None,
    });
    slices
}

/// The ranges an earlier sliced run committed beyond the watermark, checked: each lies after
/// the watermark and after the one before, ends at or after it begins, and its window reads.
fn committed_ranges(
    state: &TableState,
    table: &str,
    lookback: Duration,
    watermark: Option<&Cursor>,
    dedup_on: bool,
) -> Result<Vec<BaseRange>, DriverError> {
    let mut ranges: Vec<BaseRange> = Vec::with_capacity(state.committed_ranges.len());
    for (n, record) in state.committed_ranges.iter().enumerate() {
        let field = |name: &str| format!("state.{table}.committed_ranges[{n}].{name}");
        let bad = |name: &str, why: String| DriverError::Config(ConfigError::new(field(name), why));
        let instant = |name: &str, text: &str| {
            parse_timestamp(text)
                .ok_or_else(|| bad(name, format!("{text:?} is not an RFC 3339 timestamp")))
        };
        let from = instant("from", &record.from)?;
        let to = instant("to", &record.to)?;
        if uuid::Uuid::parse_str(&record.to_uuid).is_err() {
            return Err(bad(
                "to_uuid",
                format!("{:?} is not a UUID", record.to_uuid),
            ));
        }
        let after = match ranges.last() {
            Some(prev) => prev.to.time,
            None => watermark.and_then(|w| w.time),
        };
        let Some(after) = after else {
            return Err(bad(
                "from",
                "a committed range needs a watermark before it (last_timestamp is missing)".into(),
            ));
        };
        if from <= after || to < from {
            return Err(bad(
                "from",
                "committed ranges must follow the watermark and each other in time, each ending                  at or after it begins"
                    .into(),
            ));
        }
        let bytes = record
            .dedup_window_bytes()
            .map_err(|e| bad("dedup_window", format!("is not base64: {e}")))?;
        let window = match (bytes, dedup_on) {
            (Some(bytes), true) => Some(
                DedupWindow::from_bytes(lookback, &bytes)
                    .map_err(|e| bad("dedup_window", format!("cannot be used: {e}")))?,
            ),
            (None, true) => Some(DedupWindow::new(lookback)),
            (_, false) => None,
        };
        ranges.push(BaseRange {
            from,
            to: Cursor {
                time: Some(to),
                id: record.to_uuid.clone(),
            },
            window,
        });
    }
    Ok(ranges)
}

/// The core's part format for the config's output format.
fn part_format(format: OutputFormat) -> PartFormat {
    match format {
        OutputFormat::Parquet => PartFormat::Parquet,
        OutputFormat::Jsonl => PartFormat::Jsonl,
        OutputFormat::Csv => PartFormat::Csv,
    }
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
    let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    match watermark {
        Some(w) if dedup_on => {
            Start::AtOrAfter(w.time.unwrap_or(0).saturating_sub(micros(lookback)))
        }
        Some(w) if !w.id.is_empty() => Start::After(w.clone()),
        Some(w) => Start::AtOrAfter(w.time.unwrap_or(0)),
        None => Start::AtOrAfter(match config.source.initial_since {
            Some(since) => i64::try_from(since.unix_timestamp_nanos() / 1000).unwrap_or(i64::MIN),
            None => now.saturating_sub(micros(DEFAULT_HISTORY)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMicros = 1_800_000_000_000_000;
    const MINUTE: i64 = 60_000_000;
    const UUID: &str = "0190a000-0000-7000-8000-000000000001";

    fn config(yaml: &str) -> ExtractConfig {
        let base = "resolved_connection: {api_key: phx_test, project_id: \"1\", region: us}\n";
        ExtractConfig::from_yaml_str(&format!("{base}{yaml}")).expect("a valid config")
    }

    fn events(extra: &str) -> ExtractConfig {
        config(&format!(
            "config:\n  source: {{data_type: events, lookback_window_minutes: 15{extra}}}\n  \
             destination: {{table_name: ev}}\n"
        ))
    }

    fn plan(config: &ExtractConfig, base: TableState) -> RunPlan {
        RunPlan::new(
            config,
            Path::new("/out"),
            base,
            &StateOrigin::Seeded,
            false,
            NOW,
        )
        .expect("a plan")
    }

    fn at(text: &str) -> UnixMicros {
        parse_timestamp(text).unwrap()
    }

    fn state_at(last: &str) -> TableState {
        TableState {
            last_timestamp: Some(last.into()),
            last_uuid: Some(UUID.into()),
            ..TableState::default()
        }
    }

    #[test]
    fn a_first_run_reads_the_last_30_days_or_from_initial_since() {
        let p = plan(&events(""), TableState::default());
        assert_eq!(p.start, Start::AtOrAfter(NOW - 30 * 24 * 60 * MINUTE));
        assert_eq!(p.span, Some((NOW - 30 * 24 * 60 * MINUTE, NOW)));
        assert!(p.incremental && p.watermark.is_none());
        assert_eq!(p.table_path, Path::new("/out/ev"));
        let p = plan(
            &events(", initial_since: \"2025-01-01T00:00:00Z\""),
            TableState::default(),
        );
        assert_eq!(p.start, Start::AtOrAfter(at("2025-01-01T00:00:00Z")));
        assert_eq!(p.slices.len(), 1);
        assert_eq!(p.slices[0].pagers[0].position(), &p.start);
        assert_eq!(p.slices[0].before, None);
    }

    #[test]
    fn an_incremental_run_rereads_its_lookback_and_dedups() {
        let p = plan(&events(""), state_at("2025-06-01T12:00:00Z"));
        assert_eq!(
            p.start,
            Start::AtOrAfter(at("2025-06-01T12:00:00Z") - 15 * MINUTE)
        );
        assert!(p.sink.dedup.is_some());
        assert_eq!(p.watermark.as_ref().map(|w| w.id.as_str()), Some(UUID));
        let query = p.slices[0].pagers[0].next_query().unwrap();
        assert_eq!(query.values()["cursor_time"], "2025-06-01T11:45:00.000000Z");
    }

    #[test]
    fn without_dedup_a_run_resumes_strictly_after_the_watermark() {
        let p = plan(
            &events(", deduplication_enabled: false"),
            state_at("2025-06-01T12:00:00Z"),
        );
        assert!(matches!(&p.start, Start::After(c) if c.id == UUID));
        assert!(p.sink.dedup.is_none());
    }

    #[test]
    fn seed_recent_uuids_fill_the_window_and_bad_ones_name_their_config_path() {
        let mut seed = state_at("2025-06-01T12:00:00Z");
        seed.recent_uuids = vec![UUID.into()];
        let mut p = plan(&events(""), seed.clone());
        let window = p.sink.dedup.as_mut().unwrap();
        assert!(!window.observe(UUID.parse().unwrap(), at("2025-06-01T12:00:00Z")));
        seed.recent_uuids = vec!["nope".into()];
        let err = RunPlan::new(
            &events(""),
            Path::new("/o"),
            seed,
            &StateOrigin::Seeded,
            false,
            NOW,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("inputs.state.ev.recent_uuids[0]"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_stored_watermark_names_the_state_file_not_the_config() {
        let origin = StateOrigin::Stored(Some(PathBuf::from("/out/state.json")));
        let err = RunPlan::new(
            &events(""),
            Path::new("/o"),
            state_at("yesterday"),
            &origin,
            false,
            NOW,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/out/state.json") && text.contains("last_timestamp"),
            "{text}"
        );
        assert!(matches!(
            err,
            DriverError::State(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn snapshots_start_at_the_beginning_and_ignore_the_watermark() {
        let persons = config(
            "config:\n  source: {data_type: persons}\n  destination: {table_name: people}\n",
        );
        let p = plan(&persons, state_at("2025-06-01T12:00:00Z"));
        assert_eq!(p.start, Start::Beginning);
        assert!(!p.incremental && p.watermark.is_none() && p.sink.dedup.is_none());
        assert_eq!(p.span, None);
        let cohorts =
            config("config:\n  source: {data_type: cohorts}\n  destination: {table_name: c}\n");
        let p = plan(&cohorts, TableState::default());
        assert!(p.slices.is_empty(), "a REST snapshot has no keyset scan");
        assert!(p.split.is_none());
        assert_eq!(p.sink.id_column, None);
    }

    #[test]
    fn a_repair_reads_each_lost_range_closed_and_commits_once() {
        let p = plan(&events(""), state_at("2025-06-01T12:00:00Z"));
        let (a, b) = (at("2025-05-01T00:00:00Z"), at("2025-05-02T00:00:00Z"));
        let repair =
            RepairPlan::for_test(vec![(a, b), (b + MINUTE, b + 2 * MINUTE)], "part-1.parquet");
        let p = p.repair(repair);
        assert_eq!(
            p.slices.len(),
            1,
            "a repair reads one slice, range after range"
        );
        assert!(p.split.is_none(), "a repair never splits");
        let scans = &p.slices[0].pagers;
        assert_eq!(scans.len(), 2);
        assert_eq!(scans[0].position(), &Start::AtOrAfter(a));
        let q = scans[0].next_query().unwrap();
        assert!(
            q.text().contains("timestamp <= toDateTime({until})"),
            "{}",
            q.text()
        );
        assert_eq!(q.values()["until"], "2025-05-02T00:00:00.000000Z");
        assert_eq!(p.repaired, vec!["part-1.parquet".to_owned()]);
        assert!(p.sink.repair.is_some() && p.span.is_none());
    }

    #[test]
    fn committed_ranges_become_gap_slices_and_bad_ones_name_their_field() {
        use posthog_state::CommittedRange;
        let range = |from: &str, to: &str| CommittedRange {
            from: from.into(),
            to: to.into(),
            to_uuid: UUID.into(),
            dedup_window: None,
        };
        let mut base = state_at("2025-06-01T12:00:00Z");
        base.committed_ranges = vec![
            range("2025-06-02T00:00:00Z", "2025-06-02T06:00:00Z"),
            range("2025-06-03T00:00:00Z", "2025-06-03T01:00:00Z"),
        ];
        let p = plan(&events(""), base.clone());
        // Before the first range (from the lookback), between them, after the last.
        assert_eq!(p.slices.len(), 3);
        assert_eq!(p.slices[0].before, Some(at("2025-06-02T00:00:00Z")));
        assert!(
            matches!(&p.slices[1].lower, Start::After(c) if c.time == Some(at("2025-06-02T06:00:00Z")))
        );
        assert_eq!(p.slices[1].before, Some(at("2025-06-03T00:00:00Z")));
        assert_eq!(p.slices[2].before, None);
        assert_eq!(
            p.split.as_ref().and_then(|s| s.floor),
            Some(at("2025-06-03T01:00:00Z"))
        );
        let refused = |ranges: Vec<CommittedRange>| {
            let mut bad = base.clone();
            bad.committed_ranges = ranges;
            RunPlan::new(
                &events(""),
                Path::new("/o"),
                bad,
                &StateOrigin::Seeded,
                false,
                NOW,
            )
            .unwrap_err()
            .to_string()
        };
        let err = refused(vec![range("soon", "2025-06-02T06:00:00Z")]);
        assert!(
            err.contains("inputs.state.ev.committed_ranges[0].from"),
            "{err}"
        );
        // Not after the watermark, out of order, or ending before it begins.
        for ranges in [
            vec![range("2025-06-01T11:00:00Z", "2025-06-01T13:00:00Z")],
            vec![
                range("2025-06-03T00:00:00Z", "2025-06-03T01:00:00Z"),
                range("2025-06-02T00:00:00Z", "2025-06-02T06:00:00Z"),
            ],
            vec![range("2025-06-02T06:00:00Z", "2025-06-02T00:00:00Z")],
        ] {
            let err = refused(ranges);
            assert!(err.contains("must follow the watermark"), "{err}");
        }
    }

    #[test]
    fn the_sink_writes_what_the_output_section_says() {
        let c = config(
            "config:\n  source: {data_type: events, page_size: 700}\n  destination: \
             {table_name: ev}\noutput: {format: csv, flatten_properties: false}\nperformance: \
             {batch_size: 1234}\n",
        );
        let p = plan(&c, TableState::default());
        assert_eq!(p.sink.writer.format, PartFormat::Csv);
        assert_eq!(p.sink.flatten, FlattenMode::Raw);
        assert_eq!(p.sink.batch_size, 1234);
        assert_eq!(
            p.sink.writer.row_group_bytes, DEFAULT_ROW_GROUP_BYTES,
            "row groups are sized by bytes, not by the batch size"
        );
        assert_eq!(p.slices[0].pagers[0].limit(), 700);
        assert_eq!(p.sink.time_column, Some("timestamp"));
    }
}
