//! The JSON state file: one exclusive lock per store, validated once on open, rewritten
//! atomically on every commit.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use crate::{StateDocument, StateError, StateStore, TableState};

/// A [`StateStore`] in one JSON file, a [`StateDocument`]: an object keyed by table name whose
/// values are [`TableState`] entries (the seed's shape; entries without a `format_version` are
/// read as version 1, and every version this build reads is migrated to
/// [`FORMAT_VERSION`](crate::FORMAT_VERSION) on load).
///
/// - **One run at a time.** [`JsonFileStore::open`] takes an exclusive lock on `<path>.lock` and
///   holds it until the store is dropped; a second open fails at once with
///   [`StateError::Locked`]. The lock file itself stays on disk: removing it while another
///   process may be opening it would let two runs lock two different files.
/// - **Never guess.** The whole file is read and checked on open. A file that is empty, not
///   JSON, not in the state shape, or from a newer format is refused and never overwritten.
/// - **Atomic commits.** Each commit writes the whole file to a temporary sibling, syncs it,
///   renames it over the state file and syncs the directory, so a crash at any instant leaves
///   either the old file or the new one. Other tables' entries, including fields this build does
///   not know, are written back as they were read.
/// - **Deterministic output.** Pretty-printed JSON, table names sorted, trailing newline.
pub struct JsonFileStore {
    path: PathBuf,
    lock_path: PathBuf,
    /// Holds the exclusive lock; the OS releases it when this handle is closed on drop.
    _lock: File,
    /// The entries as read or last committed. Kept as JSON values so that tables this run does
    /// not commit are written back exactly as they were read.
    document: StateDocument,
    temp_counter: u64,
}

impl JsonFileStore {
    /// Opens the store at `path`: creates its directory if needed, locks `<path>.lock`, removes
    /// temporary files a crashed run left next to it, and reads and checks the file (a missing
    /// file is an empty store).
    ///
    /// Errors: [`StateError::Locked`] when another store holds the lock,
    /// [`StateError::Corrupt`] or [`StateError::UnsupportedVersion`] when the file cannot be
    /// used as it is, [`StateError::Io`] when the file system fails.
    pub fn open(path: impl Into<PathBuf>) -> Result<JsonFileStore, StateError> {
        let path = path.into();
        let Some(file_name) = path.file_name().map(OsStr::to_owned) else {
            return Err(StateError::Io {
                action: "use as a state file",
                source: io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
                path,
            });
        };
        let dir = parent_dir(&path);
        fs::create_dir_all(&dir).map_err(|source| StateError::Io {
            path: dir.clone(),
            action: "create the state directory",
            source,
        })?;

        let lock_path = with_suffix(&path, ".lock");
        let lock = lock_exclusive(&lock_path)?;
        // Only after locking: no other store can be writing temporary files for this path now.
        remove_stale_temp_files(&dir, &file_name);
        let document = read_document(&path)?;

        Ok(JsonFileStore {
            path,
            lock_path,
            _lock: lock,
            document,
            temp_counter: 0,
        })
    }

    /// The state file's path, as given to [`JsonFileStore::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lock file's path, `<path>.lock`.
    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }

    /// The names of the tables with an entry, sorted.
    pub fn tables(&self) -> impl Iterator<Item = &str> + '_ {
        self.document.tables()
    }

    /// Writes all entries to a temporary sibling, syncs it and renames it over the state file.
    /// On failure the temporary file is removed and the state file is as it was.
    fn replace_file(&mut self, contents: &[u8]) -> Result<(), StateError> {
        let temp_path = self.next_temp_path();
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp_path)
            .map_err(|source| StateError::Io {
                path: temp_path.clone(),
                action: "create the temporary state file",
                source,
            })?;
        let replaced = write_synced(file, &temp_path, contents, &self.path).and_then(|()| {
            fs::rename(&temp_path, &self.path).map_err(|source| StateError::Io {
                path: self.path.clone(),
                action: "replace the state file",
                source,
            })
        });
        if replaced.is_err() {
            // Best effort: if it cannot be removed now, the next open removes it.
            let _ = fs::remove_file(&temp_path);
        }
        replaced
    }

    fn next_temp_path(&mut self) -> PathBuf {
        let mut name = temp_prefix(self.path.file_name().unwrap_or_default());
        name.push(format!("{}-{}", std::process::id(), self.temp_counter));
        self.temp_counter += 1;
        parent_dir(&self.path).join(name)
    }
}

impl StateStore for JsonFileStore {
    /// The table's entry, migrated to [`FORMAT_VERSION`](crate::FORMAT_VERSION). The file keeps the
    /// entry as it was read until this table's next commit writes it in the current version.
    fn load(&self, table: &str) -> Result<Option<TableState>, StateError> {
        self.document.load(table)
    }

    fn commit(&mut self, table: &str, state: &TableState) -> Result<(), StateError> {
        let previous = self.document.set(table, state)?;
        let replaced = self
            .document
            .render()
            .and_then(|contents| self.replace_file(&contents));
        if let Err(e) = replaced {
            // The file still holds the previous entry; so must memory. It was in the document
            // before, so it is put back without a check that could fail.
            let _ = self.document.set_entry(table, previous);
            return Err(e);
        }
        // The new file is in place; the entry stays in memory even if the directory sync fails,
        // because that is what the file now says.
        sync_dir(&parent_dir(&self.path))
    }

    /// Creates and removes an empty temporary sibling of the state file: what a commit needs
    /// first.
    fn check_writable(&mut self) -> Result<(), StateError> {
        let temp_path = self.next_temp_path();
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp_path)
            .map_err(|source| StateError::Io {
                path: temp_path.clone(),
                action: "create a file in the state directory",
                source,
            })?;
        fs::remove_file(&temp_path).map_err(|source| StateError::Io {
            path: temp_path,
            action: "remove a file from the state directory",
            source,
        })
    }

    fn location(&self) -> Option<&Path> {
        Some(&self.path)
    }
}

impl fmt::Debug for JsonFileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonFileStore")
            .field("path", &self.path)
            .field("lock_path", &self.lock_path)
            .field("tables", &self.document.tables().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The directory holding `path`; `.` for a bare file name.
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// `.<name>.tmp-`: the start of every temporary file name for the state file `name`.
fn temp_prefix(file_name: &OsStr) -> OsString {
    let mut prefix = OsString::from(".");
    prefix.push(file_name);
    prefix.push(".tmp-");
    prefix
}

fn lock_exclusive(lock_path: &Path) -> Result<File, StateError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_path)
        .map_err(|source| StateError::Io {
            path: lock_path.to_path_buf(),
            action: "open the state lock file",
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StateError::Locked {
            lock_path: lock_path.to_path_buf(),
        }),
        Err(TryLockError::Error(source)) => Err(StateError::Io {
            path: lock_path.to_path_buf(),
            action: "lock the state lock file",
            source,
        }),
    }
}

/// Removes `.<name>.tmp-*` files a crashed commit left behind. Best effort: anything that
/// cannot be listed or removed is left, and a later open tries again.
fn remove_stale_temp_files(dir: &Path, file_name: &OsStr) {
    let prefix = temp_prefix(file_name);
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_ours = name
            .as_encoded_bytes()
            .starts_with(prefix.as_encoded_bytes());
        if is_ours && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn read_document(path: &Path) -> Result<StateDocument, StateError> {
    match fs::read(path) {
        Ok(bytes) => StateDocument::parse(path, &bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(StateDocument::empty(path)),
        Err(source) => Err(StateError::Io {
            path: path.to_path_buf(),
            action: "read the state file",
            source,
        }),
    }
}

/// Writes `contents` to the new temporary `file` and syncs it. The file gets the permissions of
/// `target` when it can, so the rename does not loosen or tighten them.
fn write_synced(
    mut file: File,
    temp_path: &Path,
    contents: &[u8],
    target: &Path,
) -> Result<(), StateError> {
    let io_err = |action, source| StateError::Io {
        path: temp_path.to_path_buf(),
        action,
        source,
    };
    file.write_all(contents)
        .map_err(|e| io_err("write the temporary state file", e))?;
    if let Ok(metadata) = fs::metadata(target) {
        // Best effort: some file systems cannot change modes, and that must not stop commits.
        let _ = file.set_permissions(metadata.permissions());
    }
    file.sync_all()
        .map_err(|e| io_err("sync the temporary state file", e))
}

/// Makes a rename in `dir` durable. Only Unix lets a directory be opened and synced; elsewhere
/// the rename is as durable as the platform makes it.
fn sync_dir(dir: &Path) -> Result<(), StateError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| StateError::Io {
                path: dir.to_path_buf(),
                action: "sync the state directory",
                source,
            })
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_files_are_named_after_the_state_file() {
        let prefix = temp_prefix(OsStr::new("state.json"));
        assert_eq!(prefix, OsString::from(".state.json.tmp-"));
    }

    #[test]
    fn bare_file_name_lives_in_the_current_directory() {
        assert_eq!(parent_dir(Path::new("state.json")), PathBuf::from("."));
        assert_eq!(
            parent_dir(Path::new("out/state.json")),
            PathBuf::from("out")
        );
    }
}
