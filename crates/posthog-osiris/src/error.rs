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
    /// Invalid config or arguments, or a state store locked by another run.
    Config,
    /// The key is missing or invalid.
    Auth,
    /// The key may not do this.
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
                _ => Category::Data,
            },
            DriverError::Core(_) | DriverError::Protocol(_) | DriverError::Io { .. } => {
                Category::Data
            }
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
