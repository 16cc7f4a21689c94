//! The store contract the engine commits through, and an in-memory store for its tests.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::{StateError, TableState};

/// Durable per-table extraction state.
///
/// The engine loads a table's state before a run and commits it after each batch of parts is
/// durable. Implementations keep one entry per table name; committing one table never changes
/// another.
pub trait StateStore {
    /// The table's state, or `None` when the store has no entry for it.
    fn load(&self, table: &str) -> Result<Option<TableState>, StateError>;

    /// Replaces the table's entry with `state`.
    ///
    /// When this returns `Ok`, the new state is durable. When it returns `Err`, the run must
    /// stop: the store may hold the old or the new entry (both are consistent, because parts
    /// are durable before the state that lists them), but nothing in between. A state that
    /// fails [`TableState::validate`] is refused before anything is written.
    fn commit(&mut self, table: &str, state: &TableState) -> Result<(), StateError>;

    /// Checks that a commit could be written now (the file system takes new files where the
    /// store writes them), so a run can refuse to start instead of failing after its first
    /// requests. Writes nothing that stays. `Ok` by default.
    fn check_writable(&mut self) -> Result<(), StateError> {
        Ok(())
    }

    /// Reads the store again, for a store that another process may have written since it was
    /// opened (an object store, where the lease on a table is taken after the store is
    /// opened): a run that has just taken a table over must start from every commit the
    /// table's previous holder made. A store that holds a lock from open to drop has nothing
    /// to read again. `Ok` by default.
    fn reload(&mut self) -> Result<(), StateError> {
        Ok(())
    }

    /// The file the store keeps its entries in, if it has one, so that a caller refusing a
    /// loaded entry's values can name it ([`StateError::Corrupt`]). `None` by default.
    fn location(&self) -> Option<&Path> {
        None
    }
}

/// A [`StateStore`] in memory, for tests of the engine: it validates commits like the file
/// store, counts them, and can be told to fail the next one.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    tables: BTreeMap<String, TableState>,
    commits: u64,
    fail_next_commit: bool,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// The names of the tables with an entry, sorted.
    pub fn tables(&self) -> impl Iterator<Item = &str> + '_ {
        self.tables.keys().map(String::as_str)
    }

    /// How many commits have succeeded.
    pub fn commit_count(&self) -> u64 {
        self.commits
    }

    /// Makes the next [`StateStore::commit`] fail with [`StateError::Io`] and change nothing,
    /// as a full disk would.
    pub fn fail_next_commit(&mut self) {
        self.fail_next_commit = true;
    }
}

impl StateStore for MemoryStore {
    fn load(&self, table: &str) -> Result<Option<TableState>, StateError> {
        Ok(self.tables.get(table).cloned())
    }

    fn commit(&mut self, table: &str, state: &TableState) -> Result<(), StateError> {
        state.validate(table)?;
        if std::mem::take(&mut self.fail_next_commit) {
            return Err(StateError::Io {
                path: PathBuf::from("<memory>"),
                action: "commit the state of",
                source: io::Error::other("injected failure"),
            });
        }
        self.tables.insert(table.to_owned(), state.clone());
        self.commits += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_at(ts: &str) -> TableState {
        TableState {
            last_timestamp: Some(ts.into()),
            ..TableState::default()
        }
    }

    #[test]
    fn memory_store_keeps_tables_apart() {
        let mut store = MemoryStore::new();
        assert_eq!(store.load("a").unwrap(), None);
        store
            .commit("a", &state_at("2026-01-01T00:00:00Z"))
            .unwrap();
        store
            .commit("b", &state_at("2026-02-01T00:00:00Z"))
            .unwrap();
        store
            .commit("a", &state_at("2026-03-01T00:00:00Z"))
            .unwrap();
        assert_eq!(
            store.load("a").unwrap(),
            Some(state_at("2026-03-01T00:00:00Z"))
        );
        assert_eq!(
            store.load("b").unwrap(),
            Some(state_at("2026-02-01T00:00:00Z"))
        );
        assert_eq!(store.tables().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(store.commit_count(), 3);
    }

    #[test]
    fn memory_store_injected_failure_changes_nothing_once() {
        let mut store = MemoryStore::new();
        store
            .commit("a", &state_at("2026-01-01T00:00:00Z"))
            .unwrap();
        store.fail_next_commit();
        let err = store
            .commit("a", &state_at("2026-02-01T00:00:00Z"))
            .unwrap_err();
        assert!(matches!(err, StateError::Io { .. }));
        assert_eq!(
            store.load("a").unwrap(),
            Some(state_at("2026-01-01T00:00:00Z"))
        );
        store
            .commit("a", &state_at("2026-02-01T00:00:00Z"))
            .unwrap();
        assert_eq!(store.commit_count(), 2);
    }

    #[test]
    fn memory_store_refuses_invalid_state() {
        let mut store = MemoryStore::new();
        let bad = TableState {
            dedup_window: Some("%%%".into()),
            ..TableState::default()
        };
        assert!(matches!(
            store.commit("t", &bad),
            Err(StateError::InvalidState { .. })
        ));
        assert_eq!(store.tables().count(), 0);
    }
}
