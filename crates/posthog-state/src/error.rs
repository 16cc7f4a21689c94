//! The crate's one error type, and its [`Category`].

use std::io;
use std::path::PathBuf;

use posthog_error::{Categorized, Category};

/// Everything that can go wrong loading or committing extraction state.
///
/// Every message names the file (or table) at fault and says what to do about it. An I/O error
/// is kept as the [`source()`](std::error::Error::source), not repeated in the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Another process (or another store in this process) holds the store's lock file.
    #[error(
        "another run holds the state lock {}; only one run may use a state store at a time",
        lock_path.display()
    )]
    Locked {
        /// The lock file, `<state file>.lock`.
        lock_path: PathBuf,
    },

    /// The state file is not valid JSON or not in the state shape. It was left untouched.
    #[error(
        "state file {} is corrupt: {reason}; it was left untouched: inspect it, fix it or move \
         it aside (the next run then starts from empty state: it extracts the table again and \
         removes the part files no state names)",
        path.display()
    )]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it, with the table and the JSON position when known.
        reason: String,
    },

    /// A table entry carries a `format_version` this build cannot read: a newer release wrote
    /// it, or (version 0) no release did. The file was left untouched.
    #[error(
        "state file {}: table {table:?} has format_version {found}, which this build cannot \
         read (it reads versions 1 through {supported}); {}",
        path.display(),
        version_advice(*found, *supported)
    )]
    UnsupportedVersion {
        /// The state file.
        path: PathBuf,
        /// The table whose entry has the version.
        table: String,
        /// The version found in the file.
        found: u64,
        /// The highest version this build reads, [`FORMAT_VERSION`](crate::FORMAT_VERSION).
        supported: u32,
    },

    /// A table's state is not valid: a `dedup_window` that is not base64, a part path that
    /// leaves the table's directory, or a format version this build would not read back.
    #[error("state of table {table:?} is invalid: {reason}")]
    InvalidState {
        /// The table.
        table: String,
        /// What is wrong with its state.
        reason: String,
    },

    /// Another run committed a different state for this table to the same store since this run
    /// read it (a store without a lock, such as an object in a bucket, found out when its
    /// conditional write failed). Nothing of this commit was written.
    #[error(
        "another run changed the state of table {table:?} in {} since this run read it; nothing \
         was committed: only one run may extract a table at a time (stop the other run, then \
         run again: this run's uncommitted parts are removed)",
        location.display()
    )]
    Conflict {
        /// The state store (a file, or an object's URL as a path).
        location: PathBuf,
        /// The table whose entry changed.
        table: String,
    },

    /// Reading, writing, locking or syncing a file failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// What was being done, e.g. `"read the state file"`.
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// What to do about an entry of an unreadable version, which depends on which side it is on.
fn version_advice(found: u64, supported: u32) -> &'static str {
    if found > u64::from(supported) {
        "a newer release wrote it: run that release (or a later one), or move the file aside"
    } else {
        "no release writes that version (was the file edited, or written by another program?): \
         fix the entry or move the file aside"
    }
}

impl StateError {
    /// The failure's category: [`Config`](Category::Config) for a store locked by another run or a
    /// table another run committed meanwhile (the user started two runs on one store or table:
    /// retrying cannot help while the other runs, stopping it can),
    /// [`Permission`](Category::Permission) for I/O the file system refused as not permitted (a
    /// read-only directory), [`Data`](Category::Data) for everything else (a state file or state
    /// that cannot be used, or I/O failing).
    pub fn category(&self) -> Category {
        match self {
            StateError::Locked { .. } | StateError::Conflict { .. } => Category::Config,
            StateError::Io { source, .. } => Category::of_io_error(source),
            StateError::Corrupt { .. }
            | StateError::UnsupportedVersion { .. }
            | StateError::InvalidState { .. } => Category::Data,
        }
    }
}

impl Categorized for StateError {
    fn category(&self) -> Category {
        StateError::category(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_follow_the_toolkit_mapping() {
        let locked = StateError::Locked {
            lock_path: PathBuf::from("s.json.lock"),
        };
        let corrupt = StateError::Corrupt {
            path: PathBuf::from("s.json"),
            reason: "x".into(),
        };
        let io = StateError::Io {
            path: PathBuf::from("s.json"),
            action: "read the state file",
            source: io::Error::other("boom"),
        };
        let denied = StateError::Io {
            path: PathBuf::from("s.json"),
            action: "create a file in the state directory",
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        let conflict = StateError::Conflict {
            location: PathBuf::from("s3://b/state.json"),
            table: "events".into(),
        };
        assert_eq!(locked.category(), Category::Config);
        assert_eq!(conflict.category(), Category::Config);
        assert_eq!(corrupt.category(), Category::Data);
        assert_eq!(io.category(), Category::Data);
        assert_eq!(denied.category(), Category::Permission);
    }

    #[test]
    fn an_io_error_is_the_source_and_shown_once_in_the_chain() {
        let err = StateError::Io {
            path: PathBuf::from("out/state.json"),
            action: "fsync",
            source: io::Error::other("disk on fire"),
        };
        let chain: Vec<String> = posthog_error::ErrorChain::new(&err)
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(chain, ["cannot fsync out/state.json", "disk on fire"]);
        let root = posthog_error::ErrorChain::new(&err).iter().last().unwrap();
        assert!(root.is::<io::Error>());
    }

    #[test]
    fn locked_message_names_the_lock_file_and_the_rule() {
        let err = StateError::Locked {
            lock_path: PathBuf::from("/out/state.json.lock"),
        };
        assert_eq!(
            err.to_string(),
            "another run holds the state lock /out/state.json.lock; only one run may use a \
             state store at a time"
        );
    }

    #[test]
    fn corrupt_message_names_the_file_and_says_it_was_left_alone() {
        let err = StateError::Corrupt {
            path: PathBuf::from("/out/state.json"),
            reason: "the file is empty (0 bytes)".into(),
        };
        let msg = err.to_string();
        assert!(msg.starts_with("state file /out/state.json is corrupt: the file is empty"));
        assert!(msg.contains("left untouched"), "{msg}");
        assert!(msg.contains("move it aside"), "{msg}");
    }
}
