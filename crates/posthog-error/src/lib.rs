//! The toolkit's failure categories: one [`Category`] for every crate, and the one place a
//! category becomes a process exit code ([`Category::exit_code`]).
//!
//! Every library error implements [`Categorized`]; programs branch on the category, the CLI
//! prints its [name](Category::as_str) and exits with its code. Errors keep their causes as
//! [`source()`](std::error::Error::source) and never repeat them in their own message, so a
//! cause is printed once: [`ErrorChain`] shows an error and its causes on one line.
//!
//! ```
//! use posthog_error::{Categorized, Category, ErrorChain};
//!
//! #[derive(Debug)]
//! struct PartUnwritable(std::io::Error);
//!
//! impl std::fmt::Display for PartUnwritable {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         f.write_str("cannot write part-1.parquet")
//!     }
//! }
//!
//! impl std::error::Error for PartUnwritable {
//!     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
//!         Some(&self.0)
//!     }
//! }
//!
//! impl Categorized for PartUnwritable {
//!     fn category(&self) -> Category {
//!         Category::Data
//!     }
//! }
//!
//! let err = PartUnwritable(std::io::Error::other("no space left on device"));
//! assert_eq!((err.category().as_str(), err.category().exit_code()), ("data", 1));
//! assert_eq!(
//!     ErrorChain::new(&err).to_string(),
//!     "cannot write part-1.parquet: no space left on device"
//! );
//! ```

#![warn(missing_docs)]

use std::error::Error;
use std::fmt;

/// What kind of failure an error is: stable names for JSON output, logs, retry decisions and
/// exit codes.
///
/// | category       | name           | exit code |
/// |----------------|----------------|----------:|
/// | `Config`       | `config`       | 2 |
/// | `Auth`         | `auth`         | 3 |
/// | `Permission`   | `permission`   | 3 |
/// | `NotFound`     | `not_found`    | 1 |
/// | `RateLimited`  | `rate_limited` | 1 |
/// | `Network`      | `network`      | 1 |
/// | `Timeout`      | `timeout`      | 1 |
/// | `Server`       | `server`       | 1 |
/// | `Data`         | `data`         | 1 |
/// | `CircuitOpen`  | `circuit_open` | 1 |
/// | `Unknown`      | `unknown`      | 1 |
///
/// The exit codes are PRODUCT.md §4's: 0 ok, 1 failed at run time, 2 usage or config error,
/// 3 authentication or permission error. There is no separate usage category: the CLI's
/// argument parser (clap) reports malformed command lines itself, with exit code 2, and an
/// argument value the CLI checks later is a [`Config`](Category::Config) error naming the flag.
///
/// A crate that knows more than the error's origin may file it differently: the extraction
/// driver reports a 404 on the configured project as `config` (a wrong project id) and an open
/// circuit breaker as `server`, so the CLI never prints `not_found` or `circuit_open`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Category {
    /// The user must change something they wrote: the config, an argument, the key file; or a
    /// state store or table another run holds. Also a request PostHog rejected as invalid (400
    /// and other 4xx without a category of their own): retrying it cannot succeed.
    Config,
    /// The key is missing, malformed or invalid (401).
    Auth,
    /// The key is valid but may not do this (403, a missing scope), or the file system refused
    /// an operation as not permitted (a read-only directory).
    Permission,
    /// The project or object does not exist (404).
    NotFound,
    /// PostHog throttled us (429) after the retries, or a client-side budget ran out.
    RateLimited,
    /// The connection failed: DNS, TLS, refused or reset, a body cut short.
    Network,
    /// A request or its retry budget timed out; includes PostHog's 504 query timeout.
    Timeout,
    /// PostHog failed (5xx other than 504).
    Server,
    /// Data that cannot be used: an answer that is not what the API promises, a corrupt or
    /// unreadable state file, a part file that does not read back, a disk operation that failed.
    ///
    /// A state whose recorded columns contradict the table's declared fields
    /// (`posthog_core::SchemaError`) is data too, not config: the column list comes from the
    /// state store, like a corrupt state file, and no change to the config the user wrote fixes
    /// it.
    Data,
    /// The client's circuit breaker is open after repeated server failures: the call failed
    /// fast, without touching the network.
    CircuitOpen,
    /// A failure none of the other categories describes: the program itself failed (its runtime
    /// did not start, stdout is closed), an operation was cancelled, or a health check failed
    /// in a way it does not classify.
    Unknown,
}

impl Category {
    /// Every category, in the order of the table above.
    pub const ALL: &'static [Category] = &[
        Category::Config,
        Category::Auth,
        Category::Permission,
        Category::NotFound,
        Category::RateLimited,
        Category::Network,
        Category::Timeout,
        Category::Server,
        Category::Data,
        Category::CircuitOpen,
        Category::Unknown,
    ];

    /// The category's stable snake_case name, as used in JSON output and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Category::Config => "config",
            Category::Auth => "auth",
            Category::Permission => "permission",
            Category::NotFound => "not_found",
            Category::RateLimited => "rate_limited",
            Category::Network => "network",
            Category::Timeout => "timeout",
            Category::Server => "server",
            Category::Data => "data",
            Category::CircuitOpen => "circuit_open",
            Category::Unknown => "unknown",
        }
    }

    /// The process exit code of a command that failed with this category (PRODUCT.md §4):
    /// 2 for config, 3 for auth and permission, 1 for everything else.
    ///
    /// ```
    /// use posthog_error::Category;
    /// assert_eq!(Category::Config.exit_code(), 2);
    /// assert_eq!(Category::Permission.exit_code(), 3);
    /// assert_eq!(Category::Network.exit_code(), 1);
    /// ```
    pub const fn exit_code(self) -> u8 {
        match self {
            Category::Config => 2,
            Category::Auth | Category::Permission => 3,
            Category::NotFound
            | Category::RateLimited
            | Category::Network
            | Category::Timeout
            | Category::Server
            | Category::Data
            | Category::CircuitOpen
            | Category::Unknown => 1,
        }
    }

    /// The category of a failed file operation: [`Permission`](Category::Permission) when the
    /// file system refused it as not permitted (a read-only directory or mount, a file owned by
    /// someone else: the user must change permissions, retrying cannot help), else
    /// [`Data`](Category::Data).
    ///
    /// ```
    /// use std::io::{Error, ErrorKind};
    /// use posthog_error::Category;
    /// assert_eq!(Category::of_io_error(&Error::from(ErrorKind::PermissionDenied)), Category::Permission);
    /// assert_eq!(Category::of_io_error(&Error::from(ErrorKind::StorageFull)), Category::Data);
    /// ```
    pub fn of_io_error(error: &std::io::Error) -> Category {
        // An error of another kind of store (an object store behind a file-like seam) says
        // its own category.
        if let Some(categorized) = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<CategorizedError>())
        {
            return categorized.category;
        }
        match error.kind() {
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                Category::Permission
            }
            _ => Category::Data,
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error carried with the category its producer gave it, for seams whose error type is
/// `std::io::Error` (a part upload's `Write`, the state store's I/O errors): wrapped in an
/// `io::Error`, [`Category::of_io_error`] answers its category instead of reading the kind.
/// It shows as the error it wraps, and its source is that error's source.
///
/// ```
/// use posthog_error::{CategorizedError, Category};
/// let inner = std::io::Error::other("the bucket `landing` does not exist");
/// let error = std::io::Error::other(CategorizedError::new(Category::Config, inner));
/// assert_eq!(Category::of_io_error(&error), Category::Config);
/// assert_eq!(error.to_string(), "the bucket `landing` does not exist");
/// ```
#[derive(Debug)]
pub struct CategorizedError {
    category: Category,
    error: Box<dyn std::error::Error + Send + Sync>,
}

impl CategorizedError {
    /// `error`, in `category`.
    pub fn new(
        category: Category,
        error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        CategorizedError {
            category,
            error: error.into(),
        }
    }
}

impl Categorized for CategorizedError {
    fn category(&self) -> Category {
        self.category
    }
}

impl fmt::Display for CategorizedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for CategorizedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// An error that knows its [`Category`]; every library error of the toolkit implements it.
pub trait Categorized {
    /// The failure's category.
    fn category(&self) -> Category;
}

/// An error followed by its causes ([`source()`](Error::source), recursively), displayed on one
/// line as `error: cause: root cause`.
///
/// Errors of the toolkit never repeat their cause in their own message, so this prints every
/// message once.
#[derive(Clone, Copy)]
pub struct ErrorChain<'a> {
    error: &'a (dyn Error + 'static),
}

impl<'a> ErrorChain<'a> {
    /// The chain starting at `error`.
    pub fn new(error: &'a (dyn Error + 'static)) -> Self {
        ErrorChain { error }
    }

    /// The error, then each of its causes in turn; the last is the root cause.
    pub fn iter(&self) -> impl Iterator<Item = &'a (dyn Error + 'static)> + use<'a> {
        std::iter::successors(Some(self.error), |&e| e.source())
    }
}

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(": ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|e| e.to_string()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_category_has_its_documented_name_and_exit_code() {
        let expected = [
            (Category::Config, "config", 2),
            (Category::Auth, "auth", 3),
            (Category::Permission, "permission", 3),
            (Category::NotFound, "not_found", 1),
            (Category::RateLimited, "rate_limited", 1),
            (Category::Network, "network", 1),
            (Category::Timeout, "timeout", 1),
            (Category::Server, "server", 1),
            (Category::Data, "data", 1),
            (Category::CircuitOpen, "circuit_open", 1),
            (Category::Unknown, "unknown", 1),
        ];
        assert_eq!(
            Category::ALL,
            expected.map(|(c, _, _)| c).as_slice(),
            "ALL lists every category once, in the table's order"
        );
        for (category, name, code) in expected {
            assert_eq!(category.as_str(), name);
            assert_eq!(category.to_string(), name);
            assert_eq!(category.exit_code(), code, "{name}");
        }
    }

    #[test]
    fn names_are_unique_snake_case() {
        let names: HashSet<&str> = Category::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), Category::ALL.len());
        for name in names {
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
        }
    }

    #[test]
    fn the_doc_table_matches_the_code() {
        let rows: Vec<Vec<String>> = include_str!("lib.rs")
            .lines()
            .filter_map(|line| line.trim().strip_prefix("/// | `"))
            .map(|row| {
                row.split('|')
                    .map(|cell| cell.trim().trim_matches('`').to_owned())
                    .filter(|cell| !cell.is_empty())
                    .collect()
            })
            .collect();
        let expected: Vec<Vec<String>> = Category::ALL
            .iter()
            .map(|c| {
                vec![
                    format!("{c:?}"),
                    c.as_str().to_owned(),
                    c.exit_code().to_string(),
                ]
            })
            .collect();
        assert_eq!(rows, expected);
    }

    #[derive(Debug)]
    struct Wrapper(std::io::Error);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("cannot read state.json")
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_chain_shows_each_message_once_and_ends_at_the_root_cause() {
        let err = Wrapper(std::io::Error::other("disk on fire"));
        let chain = ErrorChain::new(&err);
        assert_eq!(chain.to_string(), "cannot read state.json: disk on fire");
        assert_eq!(chain.iter().count(), 2);
        assert_eq!(
            chain.iter().last().map(|e| e.to_string()).as_deref(),
            Some("disk on fire")
        );
        assert_eq!(
            format!("{chain:?}"),
            r#"["cannot read state.json", "disk on fire"]"#
        );
    }
}
