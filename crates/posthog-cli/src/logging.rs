//! Log setup: `tracing` events to stderr, as text or JSON lines, filtered by level.
//!
//! The level applies to the toolkit's crates; other crates (hyper, reqwest, …) log warnings
//! and errors only. `logging.verbose_http` turns on `trace` for `posthog_client`, the level at
//! which it logs request and response bodies (keys redacted by the client), and for the object
//! store client (`object_store`: its requests and retries; credentials are never in them, as
//! the e2e `s3-full` scenario checks at trace level). Log lines are
//! written around the progress bar so that neither garbles the other.

use std::io;

use indicatif::ProgressBar;
use posthog_osiris::LogLevel;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, fmt};

use crate::cli::LogFormat;

/// The toolkit's crates, whose logs follow the chosen level.
const TOOLKIT_TARGETS: &[&str] = &[
    "posthog_cli",
    "posthog_osiris",
    "posthog_client",
    "posthog_core",
    "posthog_state",
    "posthog_storage",
];

/// Installs the global subscriber. `bar` is the progress bar log lines must not collide with
/// (a hidden bar when there is none); `ansi` colours text logs (stderr is a terminal).
pub fn init(
    format: LogFormat,
    level: LogLevel,
    verbose_http: bool,
    bar: ProgressBar,
    ansi: bool,
) -> anyhow::Result<()> {
    let filter = targets(level, verbose_http);
    let writer = BarAwareStderr { bar };
    let layer = match format {
        LogFormat::Text => fmt::layer()
            .with_writer(writer)
            .with_ansi(ansi)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .with_writer(writer)
            .with_ansi(false)
            .with_filter(filter)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// The per-target filter for `level` and `verbose_http`.
pub fn targets(level: LogLevel, verbose_http: bool) -> Targets {
    let toolkit = level_filter(level);
    let others = match level {
        LogLevel::Error => LevelFilter::ERROR,
        _ => LevelFilter::WARN,
    };
    let mut targets = Targets::new().with_default(others);
    for target in TOOLKIT_TARGETS {
        let filter = if verbose_http && *target == "posthog_client" {
            LevelFilter::TRACE
        } else {
            toolkit
        };
        targets = targets.with_target(*target, filter);
    }
    if verbose_http {
        targets = targets.with_target("object_store", LevelFilter::TRACE);
    }
    targets
}

fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

/// Writes each log line to stderr with the progress bar cleared around it.
struct BarAwareStderr {
    bar: ProgressBar,
}

impl<'a> MakeWriter<'a> for BarAwareStderr {
    type Writer = BarAwareWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        BarAwareWriter { bar: &self.bar }
    }
}

struct BarAwareWriter<'a> {
    bar: &'a ProgressBar,
}

impl io::Write for BarAwareWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bar.suspend(|| io::stderr().write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        // The fmt layer writes one whole line per call: keep it in one piece.
        self.bar.suspend(|| io::stderr().lock().write_all(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    fn enabled(filter: &Targets, target: &str, level: Level) -> bool {
        filter.would_enable(target, &level)
    }

    #[test]
    fn the_level_applies_to_the_toolkit_and_warn_to_the_rest() {
        let filter = targets(LogLevel::Debug, false);
        assert!(enabled(&filter, "posthog_osiris::engine", Level::DEBUG));
        assert!(enabled(&filter, "posthog_client::transport", Level::DEBUG));
        assert!(!enabled(&filter, "posthog_client::transport", Level::TRACE));
        assert!(enabled(&filter, "posthog_cli", Level::DEBUG));
        assert!(!enabled(&filter, "hyper_util::client", Level::INFO));
        assert!(enabled(&filter, "hyper_util::client", Level::WARN));
    }

    #[test]
    fn verbose_http_turns_on_the_client_body_logs_only() {
        let filter = targets(LogLevel::Info, true);
        assert!(enabled(&filter, "posthog_client::transport", Level::TRACE));
        assert!(!enabled(&filter, "posthog_osiris", Level::DEBUG));
        assert!(enabled(&filter, "posthog_osiris", Level::INFO));
    }

    #[test]
    fn error_level_silences_warnings_everywhere() {
        let filter = targets(LogLevel::Error, false);
        assert!(!enabled(&filter, "posthog_osiris", Level::WARN));
        assert!(!enabled(&filter, "reqwest", Level::WARN));
        assert!(enabled(&filter, "reqwest", Level::ERROR));
    }
}
