//! A table's output directory as one run owns it: the lock that keeps a second run out, the
//! check that parts can be written there before anything is requested, and the bookkeeping of
//! part files against the committed state (leftovers removed, missing parts found, replaced
//! snapshot parts deleted).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use posthog_state::{PartRecord, TableState};

use crate::DriverError;

/// The lock file in a table's directory. Hidden (`.`-prefixed), so pyarrow, Spark and DuckDB
/// globs over the parts never read it; it stays on disk, like the state store's lock: removing
/// it while another run may be opening it would let two runs lock two different files.
pub(crate) const LOCK_FILE: &str = ".lock";

/// The table directory, created and locked for one run. Dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct TableDir {
    path: PathBuf,
    /// Holds the exclusive lock; the OS releases it when the handle closes.
    _lock: File,
}

impl TableDir {
    /// Creates the directory if needed and takes its exclusive lock, so that no other run
    /// (whatever state file it uses) writes or cleans up this table at the same time.
    ///
    /// `owner` is the state store's file, when it has one: the lock file records the first
    /// owner, and a run whose state lives elsewhere is refused, because its cleanup would delete
    /// parts that only the other state names.
    pub(crate) fn lock(path: &Path, owner: Option<&Path>) -> Result<TableDir, DriverError> {
        fs::create_dir_all(path)
            .map_err(|e| DriverError::io("create the output directory", path, e))?;
        let lock_path = path.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| DriverError::io("open the table lock file", &lock_path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(DriverError::TableLocked { lock: lock_path });
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(DriverError::io("lock the table lock file", &lock_path, e));
            }
        }
        if let Some(owner) = owner {
            check_owner(&mut file, &lock_path, owner)?;
        }
        Ok(TableDir {
            path: path.to_path_buf(),
            _lock: file,
        })
    }

    /// Creates, writes and removes a file where parts are written, so a directory the run may
    /// not write to fails the run before its first request rather than after it.
    pub(crate) fn check_writable(&self, run_id: &str) -> Result<(), DriverError> {
        let probe = self.path.join(format!(".write-check-{run_id}.tmp"));
        let written = File::create(&probe).and_then(|mut f| f.write_all(b"ok"));
        let removed = fs::remove_file(&probe);
        written.map_err(|e| DriverError::io("write a part file in", &self.path, e))?;
        removed.map_err(|e| DriverError::io("remove a file from", &self.path, e))
    }

    /// Removes part files the committed state does not name (what a run interrupted between
    /// writing a part and committing its state leaves) and temporary files of parts never
    /// finished.
    pub(crate) fn remove_uncommitted(&self, state: &TableState) -> Result<(), DriverError> {
        let committed: HashSet<&str> = state.parts.iter().map(|p| p.file.as_str()).collect();
        let entries = fs::read_dir(&self.path)
            .map_err(|e| DriverError::io("list the output directory", &self.path, e))?;
        let mut removed = false;
        for entry in entries {
            let entry =
                entry.map_err(|e| DriverError::io("list the output directory", &self.path, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let leftover = (is_part_name(name) && !committed.contains(name))
                || (name.starts_with(".part-") && name.ends_with(".tmp"))
                || (name.starts_with(".write-check-") && name.ends_with(".tmp"));
            if leftover {
                let path = entry.path();
                tracing::warn!(file = %path.display(), "removing a part no committed state names (left by an interrupted run)");
                fs::remove_file(&path)
                    .map_err(|e| DriverError::io("remove the uncommitted part", &path, e))?;
                removed = true;
            }
        }
        if removed {
            fsync_dir(&self.path)?;
        }
        Ok(())
    }

    /// After a snapshot's state is committed, removes the parts of the snapshot it replaced.
    pub(crate) fn remove_replaced(
        &self,
        prior: &TableState,
        state: &TableState,
    ) -> Result<(), DriverError> {
        let kept: HashSet<&str> = state.parts.iter().map(|p| p.file.as_str()).collect();
        let mut removed = false;
        for part in prior
            .parts
            .iter()
            .filter(|p| !kept.contains(p.file.as_str()))
        {
            let path = self.path.join(&part.file);
            match fs::remove_file(&path) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(DriverError::io("remove a replaced part", &path, e)),
            }
        }
        if removed {
            fsync_dir(&self.path)?;
        }
        Ok(())
    }
}

/// The committed parts whose files are not in `dir`.
pub(crate) fn missing_parts(dir: &Path, state: &TableState) -> Vec<PartRecord> {
    state
        .parts
        .iter()
        .filter(|p| !dir.join(&p.file).is_file())
        .cloned()
        .collect()
}

/// Records `owner` in an empty lock file, or checks it is the one recorded.
///
/// A state file inside the output directory (the default, `DIR/state.json`) is recorded
/// relative to the table's directory (`../state.json`), so the output directory can be moved or
/// mounted elsewhere whole; any other is recorded as an absolute path.
fn check_owner(file: &mut File, lock_path: &Path, owner: &Path) -> Result<(), DriverError> {
    let owner = std::path::absolute(owner).unwrap_or_else(|_| owner.to_path_buf());
    let table = lock_path.parent().unwrap_or(Path::new("."));
    let table = std::path::absolute(table).unwrap_or_else(|_| table.to_path_buf());
    let owner_text = match table
        .parent()
        .and_then(|base| owner.strip_prefix(base).ok())
    {
        Some(inside) => Path::new("..").join(inside).display().to_string(),
        None => owner.display().to_string(),
    };
    let mut recorded = String::new();
    file.read_to_string(&mut recorded)
        .map_err(|e| DriverError::io("read the table lock file", lock_path, e))?;
    let recorded = recorded.trim();
    if recorded.is_empty() {
        file.rewind()
            .and_then(|()| file.write_all(owner_text.as_bytes()))
            .and_then(|()| file.sync_all())
            .map_err(|e| DriverError::io("write the table lock file", lock_path, e))?;
        return Ok(());
    }
    if recorded != owner_text {
        let recorded = Path::new(recorded);
        return Err(DriverError::TableOwned {
            lock: lock_path.to_path_buf(),
            owner: match (recorded.strip_prefix(".."), table.parent()) {
                (Ok(inside), Some(base)) => base.join(inside),
                _ => recorded.to_path_buf(),
            },
            state: owner,
        });
    }
    Ok(())
}

/// `part-<digits>.<parquet|jsonl|csv>`: the names the engine gives parts.
pub(crate) fn is_part_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("part-") else {
        return false;
    };
    let Some((digits, ext)) = rest.split_once('.') else {
        return false;
    };
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && matches!(ext, "parquet" | "jsonl" | "csv")
}

/// Makes the removals in `dir` durable.
fn fsync_dir(dir: &Path) -> Result<(), DriverError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| DriverError::io("fsync the output directory", dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_engine_part_names_are_cleaned_up() {
        assert!(is_part_name("part-00001.parquet"));
        assert!(is_part_name("part-12.csv"));
        assert!(!is_part_name("part-.csv"));
        assert!(!is_part_name("part-0001.txt"));
        assert!(!is_part_name("notes.parquet"));
        assert!(!is_part_name("part-0001-copy.jsonl"));
    }

    #[test]
    fn a_second_lock_on_one_table_is_refused_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("posthog_events");
        let first = TableDir::lock(&table, None).unwrap();
        let err = TableDir::lock(&table, None).unwrap_err();
        assert!(matches!(err, DriverError::TableLocked { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(&table.join(LOCK_FILE).display().to_string()),
            "{err}"
        );
        drop(first);
        TableDir::lock(&table, None).expect("free again once the first run ends");
    }

    #[test]
    fn a_table_written_under_one_state_file_refuses_another() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("posthog_events");
        let state_a = dir.path().join("a/state.json");
        let state_b = dir.path().join("b/state.json");
        drop(TableDir::lock(&table, Some(&state_a)).unwrap());
        drop(TableDir::lock(&table, Some(&state_a)).expect("the same owner again"));
        drop(TableDir::lock(&table, None).expect("a store without a file is not checked"));
        let err = TableDir::lock(&table, Some(&state_b)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DriverError::TableOwned { .. }), "{err:?}");
        assert!(msg.contains(&state_a.display().to_string()), "{msg}");
        assert!(msg.contains(&state_b.display().to_string()), "{msg}");
    }

    #[test]
    fn an_output_directory_moved_whole_with_its_state_file_keeps_working() {
        let dir = tempfile::tempdir().unwrap();
        let before = dir.path().join("before");
        drop(
            TableDir::lock(
                &before.join("posthog_events"),
                Some(&before.join("state.json")),
            )
            .unwrap(),
        );
        assert_eq!(
            std::fs::read_to_string(before.join("posthog_events").join(LOCK_FILE)).unwrap(),
            Path::new("..").join("state.json").display().to_string()
        );
        let after = dir.path().join("after");
        std::fs::rename(&before, &after).unwrap();
        TableDir::lock(
            &after.join("posthog_events"),
            Some(&after.join("state.json")),
        )
        .expect("the same state file, where the directory now is");
        let elsewhere = dir.path().join("elsewhere.json");
        let err = TableDir::lock(&after.join("posthog_events"), Some(&elsewhere)).unwrap_err();
        assert!(
            err.to_string()
                .contains(&after.join("state.json").display().to_string()),
            "{err}"
        );
    }
}
