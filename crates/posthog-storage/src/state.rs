//! The state store as one object: [`ObjectStateStore`]. An object store has no lock and no
//! rename, so every commit is a conditional put against the version this store read or last
//! wrote, and a commit of another table that landed meanwhile is merged, never overwritten.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use posthog_state::{StateDocument, StateError, StateStore, TableState};
use serde_json::Value;

use crate::{Bucket, PutCondition, StorageError, Version};

/// How many times a commit is tried when other tables' commits keep landing first.
const COMMIT_ATTEMPTS: usize = 5;

/// A [`StateStore`] kept as one object in a bucket, in exactly the format of
/// `posthog_state::JsonFileStore` (a [`StateDocument`]: one JSON object keyed by table, checked
/// when read, tables not committed written back as read, pretty, sorted, trailing newline).
///
/// - **Conditional commits.** Each commit writes the whole document if the object is still at
///   the version this store read or last wrote (or, when there was none, only if there still
///   is none). A crash leaves the old object or the new one, never a mix.
/// - **Other tables merge.** Runs of different tables may share one state object. When the
///   condition fails, the object is read again: if this table's entry there is still the one
///   this store last read or wrote, only another table changed, and this table's entry is
///   applied onto the new document and written again (up to 5 times). If this table's entry
///   changed, another run is writing this table: the commit fails with
///   [`StateError::Conflict`] and writes nothing.
/// - **No lock.** Unlike the file store, opening takes no lock: one run per table is the
///   [`Lease`](crate::Lease)'s job; this store only makes sure no commit is lost.
///
/// Storage failures are `StateError::Io` naming the object's URL, with the [`StorageError`]
/// (and its category) carried in the `io::Error` ([`StorageError::into_io`]).
pub struct ObjectStateStore {
    bucket: Bucket,
    key: String,
    location: PathBuf,
    document: StateDocument,
    /// The object's version as read or last written; `None` when there was no object.
    version: Option<Version>,
}

impl ObjectStateStore {
    /// Opens the state object `key` (under the bucket's prefix): reads and checks it, and
    /// remembers its version. An absent object is an empty store.
    ///
    /// Errors: [`StateError::Corrupt`] or [`StateError::UnsupportedVersion`] when the object
    /// cannot be used as it is (it is left untouched), [`StateError::Io`] when the store
    /// fails.
    pub fn open(bucket: Bucket, key: &str) -> Result<ObjectStateStore, StateError> {
        let location = PathBuf::from(bucket.object_url(key));
        let (document, version) = read(&bucket, key, &location)?;
        Ok(ObjectStateStore {
            bucket,
            key: key.to_owned(),
            location,
            document,
            version,
        })
    }

    /// The names of the tables with an entry, sorted.
    pub fn tables(&self) -> impl Iterator<Item = &str> + '_ {
        self.document.tables()
    }

    /// Writes the document if the object is still where this store left it. Answers whether
    /// the condition failed (`Ok(false)`).
    fn try_write(&mut self) -> Result<bool, StateError> {
        let bytes = Bytes::from(self.document.render()?);
        let condition = match &self.version {
            None => PutCondition::Create,
            Some(version) => PutCondition::Match(version.clone()),
        };
        match self.bucket.put(&self.key, bytes, condition) {
            Ok(version) => {
                self.version = Some(version);
                Ok(true)
            }
            Err(StorageError::Precondition { .. }) => Ok(false),
            Err(e) => Err(io_error(&self.location, "write the state object", e)),
        }
    }

    /// Reads the object again after a failed condition and, if `table`'s entry there is still
    /// `base`, takes the new document with `ours` applied as this store's. Otherwise another
    /// run changed the table: [`StateError::Conflict`].
    ///
    /// Answers `true` when the object already holds `ours`: a write retried by the store
    /// client after its first attempt had landed (the retry then fails its condition).
    fn merge(
        &mut self,
        table: &str,
        base: Option<&Value>,
        ours: Value,
    ) -> Result<bool, StateError> {
        let (mut fresh, version) = read(&self.bucket, &self.key, &self.location)?;
        if fresh.entry(table) == Some(&ours) && fresh.entry(table) != base {
            self.document = fresh;
            self.version = version;
            return Ok(true);
        }
        if fresh.entry(table) != base {
            return Err(StateError::Conflict {
                location: self.location.clone(),
                table: table.to_owned(),
            });
        }
        fresh.set_entry(table, Some(ours))?;
        tracing::debug!(
            state = %self.location.display(),
            table,
            "another table's commit landed first; merged with it"
        );
        self.document = fresh;
        self.version = version;
        Ok(false)
    }

    /// The commit's loop; on error the document may have been replaced by a newer read, whose
    /// entry for `table` is `base`.
    fn write_merging(
        &mut self,
        table: &str,
        base: Option<&Value>,
        ours: &Value,
    ) -> Result<(), StateError> {
        for _ in 0..COMMIT_ATTEMPTS {
            if self.try_write()? || self.merge(table, base, ours.clone())? {
                return Ok(());
            }
        }
        Err(StateError::Io {
            path: self.location.clone(),
            action: "commit (other tables' commits kept landing first) to",
            source: io::Error::other(format!(
                "the conditional write failed {COMMIT_ATTEMPTS} times in a row"
            )),
        })
    }
}

impl StateStore for ObjectStateStore {
    fn load(&self, table: &str) -> Result<Option<TableState>, StateError> {
        self.document.load(table)
    }

    fn commit(&mut self, table: &str, state: &TableState) -> Result<(), StateError> {
        let base = self.document.entry(table).cloned();
        self.document.set(table, state)?;
        let Some(ours) = self.document.entry(table).cloned() else {
            return Err(StateError::InvalidState {
                table: table.to_owned(),
                reason: "the entry was not set".into(),
            });
        };
        let written = self.write_merging(table, base.as_ref(), &ours);
        if written.is_err() {
            // The object still holds `base` for this table (whatever document was read last);
            // so must memory. It was in a document before, so it passes the check.
            let _ = self.document.set_entry(table, base);
        }
        written
    }

    /// Puts and deletes a probe object next to the state object (`<key>.check-<uuid>`): the
    /// permissions a run needs (parts are written and removed in the same bucket), checked
    /// before its first request to PostHog.
    fn check_writable(&mut self) -> Result<(), StateError> {
        let probe = format!("{}.check-{}", self.key, uuid::Uuid::new_v4());
        let probe_location = PathBuf::from(self.bucket.object_url(&probe));
        self.bucket
            .put(&probe, Bytes::new(), PutCondition::Overwrite)
            .map_err(|e| io_error(&probe_location, "write a probe object", e))?;
        self.bucket
            .delete(&probe)
            .map_err(|e| io_error(&probe_location, "delete a probe object", e))
    }

    /// Reads the object again (document and version): what was committed since this store
    /// was opened, by the run whose lease the caller has just taken over, is then the base.
    fn reload(&mut self) -> Result<(), StateError> {
        let (document, version) = read(&self.bucket, &self.key, &self.location)?;
        self.document = document;
        self.version = version;
        Ok(())
    }

    /// The object's URL as a path, e.g. `s3://bucket/prefix/state.json`.
    fn location(&self) -> Option<&Path> {
        Some(&self.location)
    }
}

impl fmt::Debug for ObjectStateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStateStore")
            .field("location", &self.location)
            .field("version", &self.version)
            .field("tables", &self.document.tables().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The document in the object and its version; an empty one when there is no object.
fn read(
    bucket: &Bucket,
    key: &str,
    location: &Path,
) -> Result<(StateDocument, Option<Version>), StateError> {
    match bucket.get(key) {
        Ok(Some((bytes, version))) => Ok((StateDocument::parse(location, &bytes)?, Some(version))),
        Ok(None) => Ok((StateDocument::empty(location), None)),
        Err(e) => Err(io_error(location, "read the state object", e)),
    }
}

fn io_error(location: &Path, action: &'static str, e: StorageError) -> StateError {
    StateError::Io {
        path: location.to_path_buf(),
        action,
        source: e.into_io(),
    }
}

#[cfg(test)]
mod tests {
    use posthog_error::Category;

    use super::*;

    fn bucket() -> Bucket {
        crate::bucket::tests::memory_bucket("p")
    }

    fn at(ts: &str) -> TableState {
        TableState {
            last_timestamp: Some(ts.into()),
            ..TableState::default()
        }
    }

    fn object_text(bucket: &Bucket) -> String {
        let (bytes, _) = bucket.get("state.json").unwrap().unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn an_absent_object_is_an_empty_store_and_commits_reload() {
        let bucket = bucket();
        let mut store = ObjectStateStore::open(bucket.clone(), "state.json").unwrap();
        assert_eq!(store.load("events").unwrap(), None);
        assert_eq!(store.location(), Some(Path::new("s3://b/p/state.json")));
        store.check_writable().unwrap();
        assert_eq!(bucket.list("").unwrap(), [], "the probe is gone");
        store.commit("events", &at("2026-01-01T00:00:00Z")).unwrap();
        store.commit("events", &at("2026-01-02T00:00:00Z")).unwrap();
        let reopened = ObjectStateStore::open(bucket.clone(), "state.json").unwrap();
        assert_eq!(
            reopened.load("events").unwrap(),
            Some(at("2026-01-02T00:00:00Z"))
        );
        let text = object_text(&bucket);
        assert!(
            text.starts_with("{\n  \"events\": {") && text.ends_with("}\n"),
            "{text}"
        );
    }

    #[test]
    fn the_object_has_the_file_stores_format_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let seed = br#"{"persons": {"last_uuid": null, "unknown_field": {"kept": true}}}"#;
        std::fs::write(&path, seed).unwrap();
        let bucket = bucket();
        bucket
            .put(
                "state.json",
                Bytes::from_static(seed),
                PutCondition::Overwrite,
            )
            .unwrap();
        {
            let mut file = posthog_state::JsonFileStore::open(&path).unwrap();
            file.commit("events", &at("2026-01-01T00:00:00Z")).unwrap();
        }
        let mut object = ObjectStateStore::open(bucket.clone(), "state.json").unwrap();
        object
            .commit("events", &at("2026-01-01T00:00:00Z"))
            .unwrap();
        assert_eq!(
            object_text(&bucket),
            std::fs::read_to_string(&path).unwrap()
        );
    }

    #[test]
    fn a_commit_of_another_table_meanwhile_is_merged_not_lost() {
        let bucket = bucket();
        let mut events = ObjectStateStore::open(bucket.clone(), "state.json").unwrap();
        let mut persons = ObjectStateStore::open(bucket.clone(), "state.json").unwrap();
        events
            .commit("events", &at("2026-01-01T00:00:00Z"))
            .unwrap();
        // `persons` read no object; its Create fails, it re-reads and merges.
        persons
            .commit("persons", &at("2026-02-01T00:00:00Z"))
            .unwrap();
        // `events` is now behind `persons`'s write; it merges again.
        events
            .commit("events", &at("2026-01-02T00:00:00Z"))
            .unwrap();
        let reopened = ObjectStateStore::open(bucket.clone(), "state.json").unwrap();
        assert_eq!(
            reopened.load("events").unwrap(),
            Some(at("2026-01-02T00:00:00Z"))
        );
        assert_eq!(
            reopened.load("persons").unwrap(),
            Some(at("2026-02-01T00:00:00Z"))
        );
        assert_eq!(
            events.load("persons").unwrap(),
            Some(at("2026-02-01T00:00:00Z")),
            "the merged document is what the store now holds"
        );
    }

    #[test]
    fn a_change_to_the_same_table_meanwhile_is_a_conflict_and_nothing_is_written() {
        let bucket = bucket();
        let mut first = ObjectStateStore::open(bucket.clone(), "state.json").unwrap();
        first.commit("events", &at("2026-01-01T00:00:00Z")).unwrap();
        let mut second = ObjectStateStore::open(bucket.clone(), "state.json").unwrap();
        second
            .commit("events", &at("2026-03-01T00:00:00Z"))
            .unwrap();
        let before = object_text(&bucket);
        let err = first
            .commit("events", &at("2026-01-02T00:00:00Z"))
            .unwrap_err();
        assert!(
            matches!(err, StateError::Conflict { ref table, .. } if table == "events"),
            "{err}"
        );
        assert_eq!(err.category(), Category::Config);
        assert!(err.to_string().contains("s3://b/p/state.json"), "{err}");
        assert_eq!(object_text(&bucket), before, "nothing was written");
        assert_eq!(
            first.load("events").unwrap(),
            Some(at("2026-01-01T00:00:00Z")),
            "memory holds what this store last wrote"
        );
    }

    /// A write the store client retried after its first attempt had landed: the retry fails
    /// its condition against our own new version, and finding exactly our entry there is
    /// success, not a conflict.
    #[test]
    fn finding_our_own_entry_after_a_failed_condition_is_a_landed_commit() {
        let bucket = bucket();
        let mut first = ObjectStateStore::open(bucket.clone(), "state.json").unwrap();
        first.commit("events", &at("2026-01-01T00:00:00Z")).unwrap();
        // The same commit, landed behind this store's back (as a first attempt would).
        let mut landed = ObjectStateStore::open(bucket.clone(), "state.json").unwrap();
        landed
            .commit("events", &at("2026-01-02T00:00:00Z"))
            .unwrap();
        first
            .commit("events", &at("2026-01-02T00:00:00Z"))
            .expect("our own write is there already");
        first
            .commit("events", &at("2026-01-03T00:00:00Z"))
            .expect("and the store moves on from its version");
        let reopened = ObjectStateStore::open(bucket.clone(), "state.json").unwrap();
        assert_eq!(
            reopened.load("events").unwrap(),
            Some(at("2026-01-03T00:00:00Z"))
        );
    }

    #[test]
    fn a_corrupt_object_is_refused_and_left_alone() {
        let bucket = bucket();
        bucket
            .put(
                "state.json",
                Bytes::from_static(b"{not json"),
                PutCondition::Overwrite,
            )
            .unwrap();
        let err = ObjectStateStore::open(bucket.clone(), "state.json").unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("s3://b/p/state.json"), "{err}");
        assert_eq!(object_text(&bucket), "{not json");
    }

    #[test]
    fn an_invalid_state_is_refused_before_anything_is_written() {
        let bucket = bucket();
        let mut store = ObjectStateStore::open(bucket.clone(), "state.json").unwrap();
        let bad = TableState {
            dedup_window: Some("%%%".into()),
            ..TableState::default()
        };
        assert!(matches!(
            store.commit("t", &bad),
            Err(StateError::InvalidState { .. })
        ));
        assert_eq!(bucket.get("state.json").unwrap(), None);
    }
}
