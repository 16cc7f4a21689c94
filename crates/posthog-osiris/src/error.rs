//! The driver's error type and its categories, which the CLI maps to exit codes.

use posthog_client::ErrorCategory as ClientCategory;

use crate::ConfigError;

/// Why a `discover`, `doctor` or `run` failed.
///
/// Every message is free of secrets: client errors are already redacted, and nothing here
/// quotes a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The config (or a value passed with it) cannot be used. Nothing was requested.
    #[error("{0}")]
    Config(#[from] ConfigError),

    /// PostHog (or the way to it) failed.
    #[error("{0}")]
    Client(#[from] posthog_client::Error),

    /// The state store refused to load or commit.
    #[error("{0}")]
    State(#[from] posthog_state::StateError),

    /// Turning rows into files failed (a malformed page, a disk error).
    #[error("{0}")]
    Core(#[from] posthog_core::CoreError),

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

    /// A file operation of the driver itself failed (creating the output directory, removing an
    /// uncommitted part).
    #[error("cannot {action} {path}: {source}")]
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

/// What kind of failure a [`DriverError`] is; the CLI maps it to an exit code
/// (`config` → 2, `auth`/`permission` → 3, everything else → 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Category {
    /// Invalid config or arguments, or a state store or table locked by another run.
    Config,
    /// The key is missing or invalid.
    Auth,
    /// The key may not do this, or the file system refused a write (a read-only directory).
    Permission,
    /// The connection failed.
    Network,
    /// A request (or its retries) timed out.
    Timeout,
    /// PostHog kept throttling us.
    RateLimited,
    /// PostHog failed, or the circuit breaker is open.
    Server,
    /// Data that cannot be used: a malformed response, a corrupt state file, a disk error.
    Data,
}

impl Category {
    /// The stable snake_case name used in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Config => "config",
            Category::Auth => "auth",
            Category::Permission => "permission",
            Category::Network => "network",
            Category::Timeout => "timeout",
            Category::RateLimited => "rate_limited",
            Category::Server => "server",
            Category::Data => "data",
        }
    }

    /// The process exit code of PRODUCT.md §4: 2 for config, 3 for auth and permission, 1 for
    /// everything else.
    pub fn exit_code(self) -> u8 {
        match self {
            Category::Config => 2,
            Category::Auth | Category::Permission => 3,
            _ => 1,
        }
    }
}

impl DriverError {
    /// The error's category.
    pub fn category(&self) -> Category {
        match self {
            DriverError::Config(_) => Category::Config,
            DriverError::Client(e) => client_category(e.category()),
            DriverError::State(e) => match e.category() {
                "config" => Category::Config,
                "permission" => Category::Permission,
                _ => Category::Data,
            },
            DriverError::TableLocked { .. } | DriverError::TableOwned { .. } => Category::Config,
            DriverError::Io { source, .. } if is_permission(source) => Category::Permission,
            DriverError::Core(posthog_core::CoreError::Io { source, .. })
                if is_permission(source) =>
            {
                Category::Permission
            }
            DriverError::Core(_)
            | DriverError::Protocol(_)
            | DriverError::Io { .. }
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

/// Whether the file system refused an operation as not permitted (a read-only directory or
/// mount): the user must change permissions, not retry.
fn is_permission(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
    )
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

pub(crate) fn client_category(category: ClientCategory) -> Category {
    match category {
        ClientCategory::Auth => Category::Auth,
        ClientCategory::Permission => Category::Permission,
        ClientCategory::Network => Category::Network,
        ClientCategory::Timeout => Category::Timeout,
        ClientCategory::RateLimited => Category::RateLimited,
        ClientCategory::Data => Category::Data,
        // A 404 on the project is a wrong project id: the user must fix the config. Other 4xx
        // are requests PostHog refused as invalid (a HogQL error): also not retryable.
        ClientCategory::NotFound | ClientCategory::Config => Category::Config,
        _ => Category::Server,
    }
}
