//! The JSON state file: one exclusive lock per store, validated once on open, rewritten
//! atomically on every commit.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_json::{Map, Value};

use crate::model::UNVERSIONED_FORMAT;
use crate::{FORMAT_VERSION, StateError, StateStore, TableState};

/// A [`StateStore`] in one JSON file, an object keyed by table name whose values are
/// [`TableState`] entries (the seed's shape; entries without a `format_version` are read as
/// version 1, and every version this build reads is migrated to [`FORMAT_VERSION`] on load).
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
    tables: BTreeMap<String, Value>,
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
        let tables = read_tables(&path)?;

        Ok(JsonFileStore {
            path,
            lock_path,
            _lock: lock,
            tables,
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
        self.tables.keys().map(String::as_str)
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
    /// The table's entry, migrated to [`FORMAT_VERSION`]. The file keeps the entry as it was
    /// read until this table's next commit writes it in the current version.
    fn load(&self, table: &str) -> Result<Option<TableState>, StateError> {
        let Some(entry) = self.tables.get(table) else {
            return Ok(None);
        };
        // Checked on open and on commit, so this only fails if those checks have a gap.
        read_entry(&self.path, table, entry).map(Some)
    }

    fn commit(&mut self, table: &str, state: &TableState) -> Result<(), StateError> {
        state.validate(table)?;
        let entry = serde_json::to_value(state).map_err(|e| StateError::InvalidState {
            table: table.to_owned(),
            reason: format!("cannot be written as JSON: {e}"),
        })?;

        let previous = self.tables.insert(table.to_owned(), entry);
        let replaced = render(&self.tables)
            .map_err(|e| StateError::InvalidState {
                table: table.to_owned(),
                reason: format!("cannot be written as JSON: {e}"),
            })
            .and_then(|contents| self.replace_file(contents.as_bytes()));
        if let Err(e) = replaced {
            // The file still holds the previous entry; so must memory.
            match previous {
                Some(old) => self.tables.insert(table.to_owned(), old),
                None => self.tables.remove(table),
            };
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
            .field("tables", &self.tables.keys().collect::<Vec<_>>())
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

fn read_tables(path: &Path) -> Result<BTreeMap<String, Value>, StateError> {
    match fs::read(path) {
        Ok(bytes) => parse_tables(path, &bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(source) => Err(StateError::Io {
            path: path.to_path_buf(),
            action: "read the state file",
            source,
        }),
    }
}

/// Parses and checks a whole state file. Every entry must load as a [`TableState`] and pass
/// its checks, so later loads cannot fail and nothing unreadable is ever written back.
fn parse_tables(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, Value>, StateError> {
    let corrupt = |reason: String| StateError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.is_empty() {
        // Our writes are atomic, so an empty file was made or truncated by something else;
        // reading it as "no state" would re-extract everything and duplicate committed rows.
        return Err(corrupt("the file is empty (0 bytes)".into()));
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not valid JSON: {e}")))?;
    let Value::Object(tables) = value else {
        return Err(corrupt(format!(
            "expected a JSON object keyed by table name, found {}",
            kind(&value)
        )));
    };
    for (table, entry) in &tables {
        read_entry(path, table, entry)?;
    }
    Ok(tables.into_iter().collect())
}

/// Reads one table's entry: checks its version, loads it, checks it, and migrates it to
/// [`FORMAT_VERSION`]. Every error names the file, the table and, when one is at fault, the
/// field.
fn read_entry(path: &Path, table: &str, entry: &Value) -> Result<TableState, StateError> {
    let corrupt = |reason: String| StateError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("table {table:?}: {reason}"),
    };
    let Value::Object(fields) = entry else {
        return Err(corrupt(format!(
            "expected an object, found {}",
            kind(entry)
        )));
    };
    // The version decides how to read the rest, so it is checked before anything else: a newer
    // entry must be reported as newer, not as corrupt.
    let version = match fields.get("format_version") {
        None => UNVERSIONED_FORMAT,
        Some(version) => match version.as_u64() {
            Some(found) if (1..=u64::from(FORMAT_VERSION)).contains(&found) => {
                // In range, so it fits.
                u32::try_from(found).unwrap_or(FORMAT_VERSION)
            }
            Some(found) => {
                return Err(StateError::UnsupportedVersion {
                    path: path.to_path_buf(),
                    table: table.to_owned(),
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            None => {
                let found = match version {
                    Value::Number(n) => format!("the number {n}"),
                    other => kind(other).to_owned(),
                };
                return Err(corrupt(format!(
                    "format_version must be a positive integer, found {found}"
                )));
            }
        },
    };
    let mut state = TableState::deserialize(entry).map_err(|e| match blame_field(fields) {
        Some(field) => corrupt(format!("field {field:?}: {e}")),
        None => corrupt(e.to_string()),
    })?;
    state.problem().map_err(corrupt)?;
    migrate(&mut state, version);
    Ok(state)
}

/// Brings an entry read as `version` to [`FORMAT_VERSION`]. Each version adds its step here
/// (`1 => …, 2 => …`) and keeps the older ones, so an entry of any supported version is read in
/// one pass. 1 → 2 converts nothing: version 2 only adds the optional part ranges, and a
/// version 1 part has none (its range is unknown). 2 → 3 converts nothing either: version 3
/// only adds `committed_ranges`, and an older entry has none.
fn migrate(state: &mut TableState, version: u32) {
    debug_assert!((1..=FORMAT_VERSION).contains(&version));
    state.format_version = FORMAT_VERSION;
}

/// The first field that does not load on its own, to name it in the error (serde's messages
/// say what type was wrong but not where). Runs only when an entry has already failed.
fn blame_field(fields: &Map<String, Value>) -> Option<&str> {
    fields.iter().find_map(|(name, value)| {
        let alone = Value::Object(Map::from_iter([(name.clone(), value.clone())]));
        TableState::deserialize(&alone)
            .is_err()
            .then_some(name.as_str())
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn render(tables: &BTreeMap<String, Value>) -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string_pretty(tables)?;
    text.push('\n');
    Ok(text)
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

    #[test]
    fn corrupt_field_is_named() {
        let err = parse_tables(
            Path::new("s.json"),
            br#"{"t": {"last_timestamp": null, "rows_total": "many"}}"#,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(r#"table "t": field "rows_total": invalid type"#),
            "{msg}"
        );
    }
}
