//! What the binary prints: one JSON object on stdout, and on failure one line on stderr, with
//! the exit code of the failure's category.
//!
//! Every failure has one shape on stdout, whichever command failed and however (a usage error
//! clap found, a bad config, a failed request, an unhealthy `doctor`):
//! `{"status":"error","category":…,"message":…}`, to which `doctor` adds its `timestamp` and
//! `latency_ms`; and one line on stderr, `error: <category>: <message>` (for a usage error,
//! clap's own message).

use std::io::{self, Write as _};

use posthog_error::{Category, ErrorChain};
use posthog_osiris::{ConfigError, DoctorReport, DriverError};
use posthog_state::StateError;
use serde::Serialize;

/// A failed command: its category (as in the JSON output), a one-line message and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `config`, `auth`, `permission`, `network`, `timeout`, `rate_limited`, `server`, `data`,
    /// or `unknown` for a failure of the binary itself.
    pub category: &'static str,
    /// What went wrong, on one line, free of secrets (the libraries redact their messages).
    pub message: String,
    /// 2 for config, 3 for auth and permission, 1 otherwise.
    pub exit_code: u8,
    /// When and how long, for a failure that reports it (`doctor`).
    pub timing: Option<Timing>,
}

/// When a check ran and how long it took, as `doctor` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timing {
    /// RFC 3339, UTC.
    pub timestamp: String,
    /// Wall time of the checks.
    pub latency_ms: u64,
}

/// The error object on stdout, its keys in this order.
#[derive(Serialize)]
struct ErrorObject<'a> {
    status: &'static str,
    category: &'a str,
    message: &'a str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    timing: Option<&'a Timing>,
}

impl From<DriverError> for Failure {
    /// The message is the error's chain (`cannot write part-1.parquet: No space left on
    /// device`): the libraries keep a cause as the error's source, out of its own message.
    fn from(err: DriverError) -> Self {
        Failure::of(err.category(), &ErrorChain::new(&err).to_string())
    }
}

impl From<ConfigError> for Failure {
    fn from(err: ConfigError) -> Self {
        Failure::from(DriverError::from(err))
    }
}

impl From<StateError> for Failure {
    fn from(err: StateError) -> Self {
        Failure::from(DriverError::from(err))
    }
}

impl Failure {
    /// A failure of `category`, with the category's exit code: the one place a failure's exit
    /// code is chosen (an unhealthy `doctor` aside, which PRODUCT §4 makes exit 1 whatever
    /// the category).
    fn of(category: Category, message: &str) -> Self {
        Failure {
            category: category.as_str(),
            message: one_line(message),
            exit_code: category.exit_code(),
            timing: None,
        }
    }

    /// A failure of the binary itself (the runtime cannot start, stdout is closed): category
    /// `unknown`, exit 1.
    pub fn internal(err: &anyhow::Error) -> Self {
        Failure::of(Category::Unknown, &format!("{err:#}"))
    }

    /// A command line clap refused (unknown flag, missing or invalid argument): category
    /// `config`, exit 2. `message` is the first line of clap's error.
    pub fn usage(message: &str) -> Self {
        Failure::of(Category::Config, message.trim())
    }

    /// An unhealthy `doctor` report as a failure: its category, message and timing, exit 1
    /// whatever the category (PRODUCT §4: doctor exits 0 when healthy, 1 otherwise). `None`
    /// for a healthy report.
    pub fn from_doctor(report: &DoctorReport) -> Option<Self> {
        if report.is_healthy() {
            return None;
        }
        Some(Failure {
            category: report.category.unwrap_or(Category::Unknown.as_str()),
            message: one_line(&report.message),
            exit_code: 1,
            timing: Some(Timing {
                timestamp: report.timestamp.clone(),
                latency_ms: report.latency_ms,
            }),
        })
    }

    /// `{"status":"error","category":…,"message":…}`, plus `timestamp` and `latency_ms` when
    /// the failure has a timing.
    pub fn to_json(&self) -> String {
        let object = ErrorObject {
            status: "error",
            category: self.category,
            message: &self.message,
            timing: self.timing.as_ref(),
        };
        // A struct of strings and integers always serializes.
        serde_json::to_string(&object).unwrap_or_default()
    }

    /// Prints `error: <category>: <message>` on stderr and the JSON object on stdout.
    pub fn report(&self) {
        let _ = writeln!(
            io::stderr().lock(),
            "error: {}: {}",
            self.category,
            self.message
        );
        // Nothing more can be said if stdout is gone; the exit code still tells.
        let _ = print_json_line(&self.to_json());
    }
}

/// `1 row`, `2 rows`, `0 rows`: a count and its noun, for human text.
pub fn count(n: u64, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// Writes `json` and a newline to stdout, and flushes.
pub fn print_json_line(json: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(json.as_bytes())?;
    stdout.write_all(b"\n")?;
    stdout.flush()
}

/// The message with line breaks and other control characters turned into spaces.
fn one_line(message: &str) -> String {
    message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_exit_2_and_name_the_field() {
        let failure = Failure::from(ConfigError::new(
            "config.source.page_size",
            "70000 is out of range 100..=50000",
        ));
        assert_eq!(failure.category, "config");
        assert_eq!(failure.exit_code, 2);
        assert_eq!(
            failure.message,
            "config.source.page_size: 70000 is out of range 100..=50000"
        );
        let json: serde_json::Value = serde_json::from_str(&failure.to_json()).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "status": "error",
                "category": "config",
                "message": "config.source.page_size: 70000 is out of range 100..=50000",
            })
        );
    }

    #[test]
    fn a_locked_store_is_a_config_error_and_a_corrupt_one_a_data_error() {
        let locked = Failure::from(StateError::Locked {
            lock_path: "out/state.json.lock".into(),
        });
        assert_eq!((locked.category, locked.exit_code), ("config", 2));
        let corrupt = Failure::from(StateError::Corrupt {
            path: "out/state.json".into(),
            reason: "not JSON".into(),
        });
        assert_eq!((corrupt.category, corrupt.exit_code), ("data", 1));
    }

    #[test]
    fn protocol_errors_are_runtime_failures_on_one_line() {
        let failure = Failure::from(DriverError::Protocol(
            "cursor did not advance\nat page 3".into(),
        ));
        assert_eq!((failure.category, failure.exit_code), ("data", 1));
        assert_eq!(failure.message, "cursor did not advance at page 3");
    }

    #[test]
    fn every_failure_has_one_shape_and_a_timing_only_adds_keys_after_it() {
        let keys = |json: &str| -> Vec<String> {
            // Key order as printed, not as a map would sort it.
            let value: serde_json::Value = serde_json::from_str(json).expect("json");
            assert!(value.is_object(), "{json}");
            // Each `":` ends a key; the text after the last one is a value.
            let parts: Vec<&str> = json.split("\":").collect();
            parts[..parts.len() - 1]
                .iter()
                .filter_map(|part| part.rsplit_once('"').map(|(_, key)| key.to_owned()))
                .collect()
        };
        let plain = Failure::usage("unexpected argument '--bogus' found");
        assert_eq!(
            plain.to_json(),
            r#"{"status":"error","category":"config","message":"unexpected argument '--bogus' found"}"#
        );
        assert_eq!(plain.exit_code, 2);
        let timed = Failure {
            timing: Some(Timing {
                timestamp: "2026-12-01T00:00:00Z".into(),
                latency_ms: 12,
            }),
            ..Failure::from(DriverError::Protocol("x".into()))
        };
        assert_eq!(
            keys(&timed.to_json()),
            ["status", "category", "message", "timestamp", "latency_ms"]
        );
        assert_eq!(keys(&plain.to_json()), ["status", "category", "message"]);
    }

    #[test]
    fn counts_take_the_singular_only_for_one() {
        assert_eq!(count(0, "row", "rows"), "0 rows");
        assert_eq!(count(1, "row", "rows"), "1 row");
        assert_eq!(count(2, "request", "requests"), "2 requests");
    }

    #[test]
    fn internal_failures_exit_1() {
        let failure = Failure::internal(&anyhow::anyhow!("no runtime"));
        assert_eq!((failure.category, failure.exit_code), ("unknown", 1));
    }

    #[test]
    fn the_message_holds_every_cause_once() {
        let failure = Failure::from(StateError::Io {
            path: "out/state.json".into(),
            action: "read the state file",
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        });
        assert_eq!(
            (failure.category, failure.exit_code),
            ("permission", 3),
            "{failure:?}"
        );
        assert_eq!(
            failure.message,
            "cannot read the state file out/state.json: permission denied"
        );
    }
}
