//! The driver's error type and its [`Category`], whose [`exit_code`](Category::exit_code) the
//! CLI exits with.

use posthog_error::{Categorized, Category};

use crate::ConfigError;

/// Why a `discover`, `doctor` or `run` failed.
///
/// Every message is free of secrets: client errors are already redacted, and nothing here
/// quotes a key. A wrapped library error is shown as itself (`transparent`), and an I/O error
/// is the [`source()`](std::error::Error::source), not repeated in the message, so an
/// error-chain printer shows each message once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The config (or a value passed with it) cannot be used. Nothing was requested.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// PostHog (or the way to it) failed.
    #[error(transparent)]
    Client(#[from] posthog_client::Error),

    /// The state store refused to load or commit.
    #[error(transparent)]
    State(#[from] posthog_state::StateError),

    /// Turning rows into files failed (a malformed page, a disk error).
    #[error(transparent)]
    Core(#[from] posthog_core::CoreError),

    /// A page the keyset scan cannot move on from (more rows than its LIMIT, or a last row
    /// that is not after where the page started). Nothing built on it was committed.
    #[error(transparent)]
    Keyset(#[from] posthog_client::KeysetError),

    /// The server's answers broke an invariant of the extraction (a cursor that does not advance,
    /// a page without the expected columns). Nothing built on them was committed.
    #[error("{0}")]
    Protocol(String),

    /// Another run holds the table's lock: one table, one run at a time, whatever state file
    /// each uses. Nothing was requested or changed.
    #[error(
        "another run holds the table lock {}; only one run may write a table at a time",
        lock.display()
    )]
    TableLocked {
        /// The lock file, `<output dir>/<table>/.lock`.
        lock: std::path::PathBuf,
    },

    /// The table's directory belongs to another state file: this run's cleanup would delete
    /// the parts only that state names. Nothing was requested or changed.
    #[error(
        "the table directory {} is kept by the state file {}, not {}: run with --state-file {} \
         (or another output directory); if you moved that state file on purpose, delete {}",
        lock.parent().unwrap_or(lock).display(),
        owner.display(),
        state.display(),
        owner.display(),
        lock.display()
    )]
    TableOwned {
        /// The table's lock file, which records the owning state file.
        lock: std::path::PathBuf,
        /// The state file that owns the table.
        owner: std::path::PathBuf,
        /// This run's state file.
        state: std::path::PathBuf,
    },

    /// Committed parts are gone from the table's directory: their rows are no longer in the
    /// table, and a run would never read them again. Nothing was requested or changed.
    #[error("{}", missing_parts_message(table, dir, parts))]
    MissingParts {
        /// The table.
        table: String,
        /// Its output directory.
        dir: std::path::PathBuf,
        /// The committed parts whose files are missing.
        parts: Vec<posthog_state::PartRecord>,
    },

    /// A repair cannot re-extract what was lost exactly. Nothing was requested or changed.
    #[error("cannot repair table {table}: {reason}")]
    Repair {
        /// The table.
        table: String,
        /// Why not, and what to do instead.
        reason: String,
    },

    /// The object store refused or failed (a missing bucket, access denied, another run's
    /// lease on the table, throttling or errors that outlasted the retries).
    #[error(transparent)]
    Storage(#[from] posthog_storage::StorageError),

    /// This run's lease on an object-store table could not be renewed, so another run may
    /// have taken the table over: nothing more is committed.
    #[error(
        "this run lost its lease on {table} ({reason}); nothing more was committed: the next run \
         removes what this one uploaded after its last commit"
    )]
    LeaseLost {
        /// The table's location.
        table: String,
        /// Why the lease was lost.
        reason: String,
    },

    /// A file operation of the driver itself failed (creating the output directory, removing an
    /// uncommitted part).
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl DriverError {
    /// The error's category. A library error keeps its own, except that a client error is
    /// read in the driver's terms: a 404 is a project id PostHog does not know (the user must
    /// fix the config: [`Category::Config`], exit 2), and an open circuit breaker is PostHog
    /// failing ([`Category::Server`]).
    pub fn category(&self) -> Category {
        match self {
            DriverError::Config(e) => e.category(),
            DriverError::Client(e) => match e.category() {
                Category::NotFound => Category::Config,
                Category::CircuitOpen => Category::Server,
                other => other,
            },
            DriverError::State(e) => e.category(),
            DriverError::Core(e) => e.category(),
            DriverError::Storage(e) => e.category(),
            DriverError::LeaseLost { .. } => Category::Config,
            DriverError::TableLocked { .. } | DriverError::TableOwned { .. } => Category::Config,
            DriverError::Io { source, .. } => Category::of_io_error(source),
            DriverError::Protocol(_)
            | DriverError::Keyset(_)
            | DriverError::MissingParts { .. }
            | DriverError::Repair { .. } => Category::Data,
        }
    }

    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        DriverError::Io {
            action,
            path: path.display().to_string(),
            source,
        }
    }
}

impl Categorized for DriverError {
    fn category(&self) -> Category {
        DriverError::category(self)
    }
}

/// Names every missing part with the range of the incremental field it covered, and the way
/// back.
fn missing_parts_message(
    table: &str,
    dir: &std::path::Path,
    parts: &[posthog_state::PartRecord],
) -> String {
    let listed: Vec<String> = parts
        .iter()
        .map(|p| match (&p.first_timestamp, &p.last_timestamp) {
            (Some(first), Some(last)) => {
                format!("{} ({} rows, {first} ..= {last})", p.file, p.rows)
            }
            _ => format!("{} ({} rows, range not recorded)", p.file, p.rows),
        })
        .collect();
    format!(
        "table {table}: {} committed part(s) missing from {}: {}; their rows are no longer in \
         the table and no run reads them again. Put the files back, or run again with --repair \
         to re-extract exactly those ranges",
        parts.len(),
        dir.display(),
        listed.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::PathBuf;
    use std::time::Duration;

    use posthog_core::CoreError;
    use posthog_error::ErrorChain;
    use posthog_state::StateError;

    use super::*;

    /// The messages of the error's chain, after checking that none contains a later one (a
    /// cause it repeats, which an error-chain printer would then show twice).
    fn chain_without_repeats(err: &DriverError) -> Vec<String> {
        let messages: Vec<String> = ErrorChain::new(err).iter().map(|e| e.to_string()).collect();
        for (i, outer) in messages.iter().enumerate() {
            for inner in &messages[i + 1..] {
                assert!(!outer.contains(inner.as_str()), "repeated: {messages:?}");
            }
        }
        messages
    }

    fn api(status: u16) -> posthog_client::Error {
        posthog_client::Error::Api {
            status,
            api: None,
            body: None,
            retry_after: None,
        }
    }

    #[test]
    fn wrapped_errors_show_each_message_once_and_reach_the_root_cause() {
        let core = DriverError::from(CoreError::Io {
            op: "fsync",
            path: PathBuf::from("out/t/.part-000001.parquet.tmp"),
            source: io::Error::other("disk on fire"),
        });
        assert_eq!(
            chain_without_repeats(&core),
            [
                "cannot fsync out/t/.part-000001.parquet.tmp",
                "disk on fire"
            ]
        );
        let state = DriverError::from(StateError::Io {
            path: PathBuf::from("out/state.json"),
            action: "read the state file",
            source: io::Error::other("disk on fire"),
        });
        assert_eq!(
            chain_without_repeats(&state),
            ["cannot read the state file out/state.json", "disk on fire"]
        );
        let own = DriverError::io(
            "create the output directory",
            std::path::Path::new("out"),
            io::Error::other("disk on fire"),
        );
        assert_eq!(
            chain_without_repeats(&own),
            ["cannot create the output directory out", "disk on fire"]
        );
        for err in [core, state, own] {
            let root = ErrorChain::new(&err).iter().last().unwrap();
            assert!(root.is::<io::Error>(), "{err:?}");
            assert_eq!(err.category(), Category::Data);
        }

        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("part-000001.parquet");
        std::fs::write(&part, b"PAR1 but not really").unwrap();
        let parquet = DriverError::from(
            posthog_core::reader::for_each_part_key(&part, "uuid", "timestamp", |_, _| {})
                .unwrap_err(),
        );
        let messages = chain_without_repeats(&parquet);
        assert!(messages.len() >= 2, "{messages:?}");
        let root = ErrorChain::new(&parquet).iter().last().unwrap();
        assert!(root.source().is_none());
    }

    #[test]
    fn wrappers_without_a_cause_show_the_inner_message_alone() {
        let config = DriverError::from(ConfigError::new("config.source.page_size", "too big"));
        assert_eq!(
            chain_without_repeats(&config),
            ["config.source.page_size: too big"]
        );
        let client = DriverError::from(api(401));
        assert_eq!(
            chain_without_repeats(&client),
            ["PostHog authentication failed (HTTP 401)"]
        );
    }

    #[test]
    fn categories_and_exit_codes_are_those_of_product_section_4() {
        let denied = || io::Error::from(io::ErrorKind::PermissionDenied);
        let cases: Vec<(DriverError, Category, u8)> = vec![
            (ConfigError::new("x", "y").into(), Category::Config, 2),
            (api(400).into(), Category::Config, 2),
            (api(401).into(), Category::Auth, 3),
            (api(403).into(), Category::Permission, 3),
            // a project id PostHog does not know: the config is wrong
            (api(404).into(), Category::Config, 2),
            (api(429).into(), Category::RateLimited, 1),
            (api(500).into(), Category::Server, 1),
            (api(504).into(), Category::Timeout, 1),
            (
                posthog_client::Error::CircuitOpen {
                    retry_in: Duration::from_secs(1),
                }
                .into(),
                Category::Server,
                1,
            ),
            (
                StateError::Locked {
                    lock_path: "s.lock".into(),
                }
                .into(),
                Category::Config,
                2,
            ),
            (
                StateError::Io {
                    path: "s".into(),
                    action: "write",
                    source: denied(),
                }
                .into(),
                Category::Permission,
                3,
            ),
            (
                CoreError::Io {
                    op: "create",
                    path: "p".into(),
                    source: denied(),
                }
                .into(),
                Category::Permission,
                3,
            ),
            (
                DriverError::io("create", std::path::Path::new("d"), denied()),
                Category::Permission,
                3,
            ),
            (CoreError::Data("x".into()).into(), Category::Data, 1),
            (
                CoreError::from(posthog_core::SchemaError("x".into())).into(),
                Category::Data,
                1,
            ),
            (
                DriverError::TableLocked {
                    lock: "t/.lock".into(),
                },
                Category::Config,
                2,
            ),
            (DriverError::Protocol("x".into()), Category::Data, 1),
        ];
        for (err, category, code) in cases {
            assert_eq!(err.category(), category, "{err}");
            assert_eq!(Categorized::category(&err).exit_code(), code, "{err}");
        }
    }
}
