//! What the binary prints: one JSON object on stdout, and on failure one line on stderr, with
//! the exit code of the failure's category.

use std::io::{self, Write as _};

use posthog_osiris::{ConfigError, DriverError};
use posthog_state::StateError;

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
}

impl From<DriverError> for Failure {
    fn from(err: DriverError) -> Self {
        let category = err.category();
        Failure {
            category: category.as_str(),
            message: one_line(&err.to_string()),
            exit_code: category.exit_code(),
        }
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
    /// A failure of the binary itself (the runtime cannot start, stdout is closed): exit 1.
    pub fn internal(err: &anyhow::Error) -> Self {
        Failure {
            category: "unknown",
            message: one_line(&format!("{err:#}")),
            exit_code: 1,
        }
    }

    /// `{"status":"error","category":…,"message":…}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "status": "error",
            "category": self.category,
            "message": self.message,
        })
        .to_string()
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
    fn internal_failures_exit_1() {
        let failure = Failure::internal(&anyhow::anyhow!("no runtime"));
        assert_eq!((failure.category, failure.exit_code), ("unknown", 1));
    }
}
