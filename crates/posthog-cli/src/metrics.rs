//! `run --metrics-file PATH`: the run's metrics in Prometheus text format, for node_exporter's
//! textfile collector.
//!
//! The file is replaced atomically (temp file, fsync, rename) after every run, successful or
//! not. A failed run keeps the last success time and the watermark of the previous file and
//! counts consecutive failures, so alerts can fire on a stale watermark or repeated failures.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use posthog_osiris::RunSummary;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The figures of a successful run that the file reports.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RunFigures {
    pub rows_read: u64,
    pub rows_deduplicated: u64,
    pub rows_written: u64,
    pub requests: u64,
    pub retries: u64,
    pub throttled: u64,
    pub breaker_trips: u64,
    pub page_shrinks: u64,
    pub duration_ms: u64,
    /// The committed watermark (RFC 3339), if the table has one.
    pub watermark: Option<String>,
}

impl From<&RunSummary> for RunFigures {
    fn from(s: &RunSummary) -> Self {
        RunFigures {
            rows_read: s.rows_read,
            rows_deduplicated: s.rows_deduplicated,
            rows_written: s.rows_output,
            requests: s.requests,
            retries: s.retries,
            throttled: s.throttled,
            breaker_trips: s.breaker_trips,
            page_shrinks: s.page_shrinks,
            duration_ms: s.duration_ms,
            watermark: s.state.last_timestamp.clone(),
        }
    }
}

/// What the previous file said, carried over a failed run.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Carried {
    last_success: Option<f64>,
    watermark: Option<f64>,
    failures: f64,
}

/// Renders the metrics of one run of `table`: its summary, or `None` when it failed. `now` is
/// the end of the run (seconds since the epoch); `previous` the old file's text, if any.
pub fn render(table: &str, summary: Option<&RunFigures>, now: f64, previous: &str) -> String {
    let carried = carried(previous, table);
    let label = format!("{{table=\"{}\"}}", escape(table));
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: f64| {
        out.push_str(&format!(
            "# HELP posthog_extract_{name} {help}\n# TYPE posthog_extract_{name} gauge\n\
             posthog_extract_{name}{label} {value}\n"
        ));
    };
    gauge(
        "last_run_success",
        "1 if the last run succeeded, 0 if it failed.",
        if summary.is_some() { 1.0 } else { 0.0 },
    );
    gauge(
        "last_run_timestamp_seconds",
        "When the last run ended (Unix seconds).",
        now,
    );
    gauge(
        "consecutive_failures",
        "Runs failed in a row (0 after a success).",
        if summary.is_some() {
            0.0
        } else {
            carried.failures + 1.0
        },
    );
    let last_success = if summary.is_some() {
        Some(now)
    } else {
        carried.last_success
    };
    if let Some(at) = last_success {
        gauge(
            "last_success_timestamp_seconds",
            "When the last successful run ended (Unix seconds).",
            at,
        );
    }
    let watermark = summary
        .and_then(|s| s.watermark.as_deref())
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .map(|t| t.unix_timestamp_nanos() as f64 / 1e9)
        .or(carried.watermark);
    if let Some(w) = watermark {
        gauge(
            "watermark_timestamp_seconds",
            "The committed watermark: rows up to this instant are extracted (Unix seconds).",
            w,
        );
    }
    if let Some(s) = summary {
        let counts: [(&str, &str, u64); 8] = [
            (
                "rows_read",
                "Rows received from PostHog by the last run.",
                s.rows_read,
            ),
            (
                "rows_deduplicated",
                "Rows the last run dropped as already extracted.",
                s.rows_deduplicated,
            ),
            ("rows_written", "Rows the last run wrote.", s.rows_written),
            ("requests", "HTTP requests of the last run.", s.requests),
            ("retries", "Requests the last run sent again.", s.retries),
            (
                "throttled",
                "429 responses the last run received.",
                s.throttled,
            ),
            (
                "breaker_trips",
                "Times the circuit breaker opened in the last run.",
                s.breaker_trips,
            ),
            (
                "page_shrinks",
                "Times a server timeout halved the page in the last run.",
                s.page_shrinks,
            ),
        ];
        for (name, help, value) in counts {
            gauge(name, help, value as f64);
        }
        gauge(
            "duration_seconds",
            "Wall time of the last run.",
            s.duration_ms as f64 / 1000.0,
        );
    }
    out
}

/// The values of the previous file for `table` that a failed run carries over.
fn carried(previous: &str, table: &str) -> Carried {
    let label = format!("{{table=\"{}\"}}", escape(table));
    let value = |name: &str| -> Option<f64> {
        let prefix = format!("posthog_extract_{name}{label} ");
        previous
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
    };
    Carried {
        last_success: value("last_success_timestamp_seconds"),
        watermark: value("watermark_timestamp_seconds"),
        failures: value("consecutive_failures").unwrap_or(0.0),
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Set once a metrics file was written (or tried) by this process.
static WRITTEN: AtomicBool = AtomicBool::new(false);

/// Whether this process already wrote (or tried to write) its metrics file.
pub fn written() -> bool {
    WRITTEN.load(Ordering::Relaxed)
}

/// Records a run that failed before it knew its table (an invalid config, an unreadable key
/// file): the failure counts against the table the previous file names, else `unknown`, so
/// `consecutive_failures` sees every failed run.
pub fn write_early_failure(path: &Path) -> std::io::Result<()> {
    let previous = fs::read_to_string(path).unwrap_or_default();
    let table = previous
        .lines()
        .find_map(|l| l.split_once("{table=\"")?.1.split_once("\"}"))
        // Table names are identifiers (`[A-Za-z_][A-Za-z0-9_]*`): nothing to unescape.
        .map_or_else(|| "unknown".to_owned(), |(t, _)| t.to_owned());
    write(path, &table, None)
}

/// Checks that the metrics file can be replaced: creates and removes the temporary file
/// [`write()`] would rename over it.
pub fn check_writable(path: &Path) -> std::io::Result<()> {
    let temp = temp_path(path);
    fs::File::create(&temp)?;
    fs::remove_file(&temp)
}

/// The temporary sibling [`write()`] fills before renaming it over `path`. node_exporter ignores
/// files not ending in .prom, so it is never half-read.
fn temp_path(path: &Path) -> std::path::PathBuf {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "metrics.prom".into());
    dir.join(format!(".{name}.{}.tmp", std::process::id()))
}

/// Writes the metrics of a run to `path`, replacing the file atomically.
pub fn write(path: &Path, table: &str, summary: Option<&RunFigures>) -> std::io::Result<()> {
    WRITTEN.store(true, Ordering::Relaxed);
    let previous = fs::read_to_string(path).unwrap_or_default();
    let now = OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9;
    let text = render(table, summary, now, &previous);
    let temp = temp_path(path);
    let written = fs::File::create(&temp)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temp, path));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> RunFigures {
        RunFigures {
            rows_read: 120,
            rows_deduplicated: 20,
            rows_written: 100,
            requests: 3,
            retries: 1,
            throttled: 1,
            duration_ms: 1500,
            watermark: Some("2025-01-02T00:00:00Z".into()),
            ..RunFigures::default()
        }
    }

    fn value(text: &str, name: &str) -> Option<f64> {
        let prefix = format!("posthog_extract_{name}{{table=\"t\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.parse().unwrap())
    }

    #[test]
    fn a_successful_run_reports_its_counts_and_watermark() {
        let text = render("t", Some(&summary()), 1_800_000_000.0, "");
        assert_eq!(value(&text, "last_run_success"), Some(1.0));
        assert_eq!(value(&text, "rows_written"), Some(100.0));
        assert_eq!(value(&text, "rows_deduplicated"), Some(20.0));
        assert_eq!(value(&text, "throttled"), Some(1.0));
        assert_eq!(value(&text, "duration_seconds"), Some(1.5));
        assert_eq!(
            value(&text, "watermark_timestamp_seconds"),
            Some(1_735_776_000.0)
        );
        assert_eq!(value(&text, "consecutive_failures"), Some(0.0));
        assert!(text.contains("# TYPE posthog_extract_rows_written gauge\n"));
    }

    #[test]
    fn failures_carry_the_last_success_and_watermark_and_count_up() {
        let ok = render("t", Some(&summary()), 1_800_000_000.0, "");
        let failed = render("t", None, 1_800_000_600.0, &ok);
        assert_eq!(value(&failed, "last_run_success"), Some(0.0));
        assert_eq!(
            value(&failed, "last_success_timestamp_seconds"),
            Some(1_800_000_000.0)
        );
        assert_eq!(
            value(&failed, "watermark_timestamp_seconds"),
            Some(1_735_776_000.0)
        );
        assert_eq!(value(&failed, "consecutive_failures"), Some(1.0));
        assert_eq!(
            value(&failed, "rows_written"),
            None,
            "no counts for a failed run"
        );
        let again = render("t", None, 1_800_001_200.0, &failed);
        assert_eq!(value(&again, "consecutive_failures"), Some(2.0));
    }

    #[test]
    fn the_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("posthog.prom");
        write(&path, "t", Some(&summary())).unwrap();
        write(&path, "t", None).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(value(&text, "consecutive_failures"), Some(1.0));
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
    }
}
