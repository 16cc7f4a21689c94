//! A table's output directory as one run owns it: the lock that keeps a second run out, the
//! check that parts can be written there before anything is requested, and the bookkeeping of
//! part files against the committed state (leftovers removed, missing parts found, replaced
//! snapshot parts deleted).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use posthog_core::{LocalDir, PartStore};
use posthog_state::{PartRecord, StateStore, TableState};

use crate::DriverError;

/// The lock file in a table's directory. Hidden (`.`-prefixed), so pyarrow, Spark and DuckDB
/// globs over the parts never read it; it stays on disk, like the state store's lock: removing
/// it while another run may be opening it would let two runs lock two different files.
pub(crate) const LOCK_FILE: &str = ".lock";

/// The table's lease object on an object store: created if absent, renewed while the run
/// lives, expiring after a crash.
pub(crate) const LEASE_OBJECT: &str = "_lease";

/// The manifest of a table's committed parts, rewritten after each commit. `_`-prefixed, so
/// Spark, pyarrow datasets and Hive-style readers skip it when they list the parts.
pub(crate) const MANIFEST: &str = "_manifest.json";

/// The table directory, created and locked for one run. Dropping it releases the lock (or
/// the lease).
#[derive(Debug)]
pub(crate) struct TableDir {
    path: PathBuf,
    /// The table's parts, where the sink writes them.
    parts: Arc<dyn PartStore>,
    /// What keeps other runs out while this one writes.
    hold: Hold,
}

/// A local table's lock file, or an object-store table's lease.
#[derive(Debug)]
enum Hold {
    /// Holds the exclusive lock; the OS releases it when the handle closes.
    Local { _lock: File },
    /// Renewed while held; released when dropped.
    Lease(posthog_storage::Lease),
}

impl TableDir {
    /// Creates the directory if needed and takes its exclusive lock, so that no other run
    /// (whatever state file it uses) writes or cleans up this table at the same time.
    ///
    /// `owner` is the state store's file, when it has one: the lock file records the first
    /// owner, and a run whose state lives elsewhere is refused, because its cleanup would delete
    /// parts that only the other state names.
    pub(crate) fn lock(path: &Path, owner: Option<&Path>) -> Result<TableDir, DriverError> {
        // A failed run that wrote nothing removes its lock file (`release_if_unused`); a run
        // that opened that file just before it went locks a file no longer in the directory,
        // so the lock is taken again on the file the directory now holds.
        for _ in 0..8 {
            let mut file = Self::open_locked(path)?;
            if !same_file(&file, &path.join(LOCK_FILE)) {
                continue;
            }
            if let Some(owner) = owner {
                check_owner(&mut file, &path.join(LOCK_FILE), owner)?;
            }
            return Ok(TableDir {
                path: path.to_path_buf(),
                parts: Arc::new(LocalDir::new(path)),
                hold: Hold::Local { _lock: file },
            });
        }
        Err(DriverError::TableLocked {
            lock: path.join(LOCK_FILE),
        })
    }

    /// Creates the directory and the lock file if needed, and locks it.
    fn open_locked(path: &Path) -> Result<File, DriverError> {
        fs::create_dir_all(path)
            .map_err(|e| DriverError::io("create the output directory", path, e))?;
        let lock_path = path.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| DriverError::io("open the table lock file", &lock_path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(fs::TryLockError::WouldBlock) => Err(DriverError::TableLocked { lock: lock_path }),
            Err(fs::TryLockError::Error(e)) => {
                Err(DriverError::io("lock the table lock file", &lock_path, e))
            }
        }
    }

    /// Takes the table for a run: locks it (recording the state store's file as its owner),
    /// checks that the table directory and the state store take files, and removes what an
    /// interrupted run left. A failure leaves no directory or lock file behind that was not
    /// there before.
    pub(crate) fn claim(
        path: &Path,
        store: &mut dyn StateStore,
        base: &TableState,
        run_id: &str,
    ) -> Result<TableDir, DriverError> {
        let dir = TableDir::lock(path, store.location())?;
        let checked = dir
            .check_writable(run_id)
            .and_then(|()| store.check_writable().map_err(DriverError::from))
            .and_then(|()| dir.remove_uncommitted(base));
        match checked {
            Ok(()) => Ok(dir),
            Err(e) => {
                dir.release_if_unused();
                Err(e)
            }
        }
    }

    /// Takes an object-store table for a run: its lease (`<table>/_lease`, put-if-absent, or
    /// taken over once expired). Taken before the state is read (see
    /// [`TableDir::prepare_object`]), so the run starts from every commit of the table's
    /// previous holder.
    pub(crate) fn lease_object(
        bucket: &posthog_storage::Bucket,
        table: &str,
        path: &Path,
        lease_ttl: std::time::Duration,
        run_id: &str,
    ) -> Result<TableDir, DriverError> {
        let holder = posthog_storage::LeaseHolder {
            run_id: run_id.to_owned(),
            host: host_name(),
            pid: std::process::id(),
        };
        let lease = posthog_storage::Lease::acquire(
            bucket,
            &format!("{table}/{LEASE_OBJECT}"),
            lease_ttl,
            holder,
            time::OffsetDateTime::now_utc(),
        )?;
        Ok(TableDir {
            path: path.to_path_buf(),
            parts: bucket.parts(table),
            hold: Hold::Lease(lease),
        })
    }

    /// With the lease held and the state read: checks that the state store takes a commit
    /// and removes the parts no committed state names. The lease's own put is the check that
    /// the run may write under the table's prefix. On failure the lease is released.
    pub(crate) fn prepare_object(
        self,
        store: &mut dyn StateStore,
        base: &TableState,
    ) -> Result<TableDir, DriverError> {
        let checked = store
            .check_writable()
            .map_err(DriverError::from)
            .and_then(|()| self.remove_uncommitted(base));
        match checked {
            Ok(()) => Ok(self),
            Err(e) => {
                self.release();
                Err(e)
            }
        }
    }

    /// Ends the run's hold on the table: the lease is deleted now (if still this run's), so
    /// the next run need not wait for it to expire; a lock file is unlocked by the drop.
    /// Best effort: a lease that cannot be deleted expires by itself.
    pub(crate) fn release(self) {
        if let Hold::Lease(lease) = self.hold {
            let url = lease.url().to_owned();
            if let Err(e) = lease.release() {
                tracing::warn!(lease = %url, error = %posthog_error::ErrorChain::new(&e), "cannot release the lease; it expires by itself");
            }
        }
    }

    /// Fails when this run no longer holds the table (its lease could not be renewed: another
    /// run may have taken it over), so nothing more is committed.
    pub(crate) fn check_held(&self) -> Result<(), DriverError> {
        match &self.hold {
            Hold::Local { .. } => Ok(()),
            Hold::Lease(lease) => match lease.lost() {
                None => Ok(()),
                Some(why) => Err(DriverError::LeaseLost {
                    table: self.path.display().to_string(),
                    reason: why,
                }),
            },
        }
    }

    /// Commits `state` for `table`: only while this run still holds the table, and followed
    /// by the manifest, so a reader that knows nothing of the state finds the committed parts.
    pub(crate) fn commit(
        &self,
        store: &mut dyn StateStore,
        table: &str,
        state: &TableState,
    ) -> Result<(), DriverError> {
        self.check_held()?;
        store.commit(table, state)?;
        self.write_manifest(table, state)
    }

    /// Writes `_manifest.json`: every part `state` names (path, rows, bytes, SHA-256, time
    /// range) and its watermark, replacing the previous manifest whole.
    pub(crate) fn write_manifest(
        &self,
        table: &str,
        state: &TableState,
    ) -> Result<(), DriverError> {
        let parts: Vec<serde_json::Value> = state
            .parts
            .iter()
            .map(|p| {
                serde_json::json!({
                    "path": p.file,
                    "url": self.parts.locate(&p.file).display().to_string(),
                    "rows": p.rows,
                    "bytes": p.bytes,
                    "sha256": p.sha256,
                    "first_timestamp": p.first_timestamp,
                    "last_timestamp": p.last_timestamp,
                })
            })
            .collect();
        let manifest = serde_json::json!({
            "table": table,
            "location": self.path.display().to_string(),
            "run_id": state.run_id,
            "committed_at": state.updated_at,
            "watermark": {
                "last_timestamp": state.last_timestamp,
                "last_uuid": state.last_uuid,
            },
            "rows": state.parts.iter().map(|p| p.rows).sum::<u64>(),
            "parts": parts,
        });
        let mut text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| DriverError::Protocol(format!("cannot write the manifest: {e}")))?;
        text.push(b'\n');
        let mut upload = self.parts.create(MANIFEST)?;
        upload
            .write_all(&text)
            .map_err(|e| DriverError::io("write the manifest in", &self.path, e))?;
        upload.commit()?;
        Ok(())
    }

    /// After a failed run: when the table directory holds nothing but the lock file, removes
    /// both, so a run that failed before writing anything leaves no trace. Best effort: what
    /// cannot be removed stays and is logged.
    pub(crate) fn release_if_unused(&self) {
        if matches!(self.hold, Hold::Lease(_)) {
            return; // no directories on an object store; the lease goes when dropped
        }
        let only_lock = fs::read_dir(&self.path).is_ok_and(|entries| {
            entries
                .filter_map(Result::ok)
                .all(|e| e.file_name() == LOCK_FILE)
        });
        if !only_lock {
            return;
        }
        let lock = self.path.join(LOCK_FILE);
        let removed = fs::remove_file(&lock).and_then(|()| fs::remove_dir(&self.path));
        if let Err(e) = removed {
            tracing::debug!(dir = %self.path.display(), error = %e, "the unused table directory stays");
        }
    }

    /// Where the table's parts are written.
    pub(crate) fn parts(&self) -> Arc<dyn PartStore> {
        self.parts.clone()
    }

    /// Creates, writes and removes a file where parts are written, so a directory the run may
    /// not write to fails the run before its first request rather than after it.
    pub(crate) fn check_writable(&self, run_id: &str) -> Result<(), DriverError> {
        let mut probe = self.parts.create(&format!("write-check-{run_id}"))?;
        probe
            .write_all(b"ok")
            .and_then(|()| probe.flush())
            .map_err(|e| DriverError::io("write a part file in", &self.path, e))?;
        Ok(()) // dropped uncommitted: removed
    }

    /// Removes part files the committed state does not name (what a run interrupted between
    /// writing a part and committing its state leaves) and temporary files of parts never
    /// finished.
    pub(crate) fn remove_uncommitted(&self, state: &TableState) -> Result<(), DriverError> {
        let committed: HashSet<&str> = state.parts.iter().map(|p| p.file.as_str()).collect();
        let names = self.parts.list()?;
        let leftovers: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|name| {
                (is_part_name(name) && !committed.contains(name)) || is_leftover_temp(name)
            })
            .collect();
        for name in &leftovers {
            tracing::warn!(file = %self.parts.locate(name).display(), "removing a part no committed state names (left by an interrupted run)");
        }
        self.parts.remove(&leftovers)?;
        Ok(())
    }

    /// After a snapshot's state is committed, removes the parts of the snapshot it replaced.
    pub(crate) fn remove_replaced(
        &self,
        prior: &TableState,
        state: &TableState,
    ) -> Result<(), DriverError> {
        let kept: HashSet<&str> = state.parts.iter().map(|p| p.file.as_str()).collect();
        let replaced: Vec<&str> = prior
            .parts
            .iter()
            .map(|p| p.file.as_str())
            .filter(|file| !kept.contains(file))
            .collect();
        self.parts.remove(&replaced)?;
        Ok(())
    }
}

/// The committed parts whose files are not in the store (one listing, not a request per part
/// on an object store).
pub(crate) fn missing_parts(
    parts: &dyn PartStore,
    state: &TableState,
) -> Result<Vec<PartRecord>, DriverError> {
    if state.parts.is_empty() {
        return Ok(Vec::new());
    }
    let present: HashSet<String> = parts.list()?.into_iter().collect();
    Ok(state
        .parts
        .iter()
        .filter(|p| !present.contains(&p.file))
        .cloned()
        .collect())
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

/// `[date=YYYY-MM-DD/]part-<digits>[-<hex token>].<parquet|jsonl|csv>`: the names the engine
/// gives parts.
pub(crate) fn is_part_name(name: &str) -> bool {
    let Some(file) = in_partition(name) else {
        return false;
    };
    let Some(rest) = file.strip_prefix("part-") else {
        return false;
    };
    let Some((stem, ext)) = rest.split_once('.') else {
        return false;
    };
    let (digits, token) = match stem.split_once('-') {
        Some((digits, token)) => (digits, Some(token)),
        None => (stem, None),
    };
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && token.is_none_or(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_hexdigit()))
        && matches!(ext, "parquet" | "jsonl" | "csv")
}

/// A temporary file a part, or a write check, left: `[date=…/].part-….tmp`.
fn is_leftover_temp(name: &str) -> bool {
    in_partition(name).is_some_and(|file| {
        (file.starts_with(".part-") || file.starts_with(".write-check-")) && file.ends_with(".tmp")
    })
}

/// The file name inside a `date=YYYY-MM-DD/` directory, or the name itself at the top; `None`
/// for any other directory.
fn in_partition(name: &str) -> Option<&str> {
    match name.split_once('/') {
        None => Some(name),
        Some((dir, file)) => {
            let date = dir.strip_prefix("date=")?;
            let well_formed = date.len() == 10
                && date.bytes().enumerate().all(|(i, b)| {
                    matches!(i, 4 | 7) == (b == b'-') && (b == b'-' || b.is_ascii_digit())
                });
            (well_formed && !file.contains('/')).then_some(file)
        }
    }
}

/// This machine's name, for a lease's holder (`unknown` where the system does not say).
fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Whether `file` is the file at `path` now (not one removed since it was opened).
fn same_file(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        match (file.metadata(), fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        path.is_file()
    }
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
        assert!(is_part_name("part-00001-1a2b3c4d.parquet"));
        assert!(is_part_name("date=2026-12-01/part-00001.parquet"));
        assert!(is_part_name("date=2026-12-01/part-00007-00ff.csv"));
        assert!(!is_part_name("date=2026-12/part-00001.parquet"));
        assert!(!is_part_name("other/part-00001.parquet"));
        assert!(!is_part_name("date=2026-12-01/x/part-00001.parquet"));
        assert!(!is_part_name("_manifest.json"));
        assert!(!is_part_name("_lease"));
        assert!(is_leftover_temp("date=2026-12-01/.part-00001.parquet.tmp"));
        assert!(is_leftover_temp(".write-check-abc.tmp"));
        assert!(!is_leftover_temp("date=2026-12-01/part-00001.parquet"));
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
    fn a_failed_run_that_wrote_nothing_leaves_no_directory_and_the_next_run_locks_again() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("posthog_events");
        let held = TableDir::lock(&table, None).unwrap();
        held.release_if_unused();
        assert!(!table.exists(), "the directory and its lock file are gone");
        // The lock is still held on the removed file; a new run gets a new file.
        let next = TableDir::lock(&table, None).expect("a fresh lock");
        assert!(table.join(LOCK_FILE).is_file());
        drop(held);
        std::fs::write(table.join("part-00001.parquet"), b"x").unwrap();
        next.release_if_unused();
        assert!(
            table.join(LOCK_FILE).is_file(),
            "a directory with parts keeps its lock"
        );
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
