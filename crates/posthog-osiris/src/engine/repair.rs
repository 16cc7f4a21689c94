//! `run --repair`: re-extract exactly the rows of committed parts whose files went missing.
//!
//! Each committed part of an incremental table records the range of the incremental field its
//! rows cover. A repair reads those ranges again (merged where they overlap, each row once) and
//! writes every row except those the table's remaining parts already hold: a later run's
//! lookback may have written late events of the same range into another part, and the files
//! themselves say which ids those are. The repaired parts replace the lost records in one
//! commit; the watermark does not move.

use std::collections::HashSet;
use std::path::Path;

use posthog_core::reader::{file_sha256, for_each_part_key};
use posthog_core::{UnixMicros, parse_timestamp};
use posthog_error::ErrorChain;
use posthog_state::{PartRecord, TableState};

use super::sink::Repair;
use crate::DriverError;

/// What a repair reads and what it must not write again.
#[derive(Debug)]
pub(crate) struct RepairPlan {
    /// Closed ranges of the incremental field to read, sorted and disjoint.
    pub ranges: Vec<(UnixMicros, UnixMicros)>,
    /// The sink's rules: the ids to skip, the records to drop.
    pub repair: Repair,
}

impl RepairPlan {
    /// The lost parts' files, sorted (for the summary and logs).
    pub(crate) fn lost(&self) -> Vec<String> {
        let mut lost: Vec<String> = self.repair.lost.iter().cloned().collect();
        lost.sort();
        lost
    }

    /// A plan of these ranges for one lost part, excluding nothing.
    #[cfg(test)]
    pub(crate) fn for_test(ranges: Vec<(UnixMicros, UnixMicros)>, lost: &str) -> RepairPlan {
        RepairPlan {
            ranges,
            repair: Repair {
                exclude: HashSet::new(),
                lost: HashSet::from([lost.to_owned()]),
            },
        }
    }
}

/// The key columns of the table's part files: the keyset's id and time columns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyColumns {
    pub id: &'static str,
    pub time: &'static str,
}

/// Plans the repair of `missing` (parts of `state` whose files are gone from `dir`), reading
/// the remaining parts whose range overlaps (or is not recorded). Blocking file I/O.
pub(crate) fn plan(
    table: &str,
    dir: &Path,
    state: &TableState,
    missing: &[PartRecord],
    keys: KeyColumns,
) -> Result<RepairPlan, DriverError> {
    let fail = |reason: String| DriverError::Repair {
        table: table.to_owned(),
        reason,
    };
    let mut ranges = Vec::with_capacity(missing.len());
    for part in missing {
        ranges.push(range_of(part).map_err(fail)?.ok_or_else(|| {
            fail(format!(
                "the lost part {} has no recorded range (it was committed by a release before \
                 state format 2), so what it held cannot be re-extracted exactly; extract the \
                 table again from scratch (move the state file and the table directory aside)",
                part.file
            ))
        })?);
    }
    let ranges = merge(ranges);
    let lost: HashSet<&str> = missing.iter().map(|p| p.file.as_str()).collect();
    let mut exclude = HashSet::new();
    for part in state
        .parts
        .iter()
        .filter(|p| !lost.contains(p.file.as_str()))
    {
        let overlaps = match range_of(part).map_err(fail)? {
            Some((first, last)) => ranges.iter().any(|(a, b)| first <= *b && *a <= last),
            None => true, // unknown: it may hold rows of the ranges
        };
        if overlaps {
            held_ids(&dir.join(&part.file), part, keys, &ranges, &mut exclude).map_err(fail)?;
        }
    }
    Ok(RepairPlan {
        ranges,
        repair: Repair {
            exclude,
            lost: lost.iter().map(|f| (*f).to_owned()).collect(),
        },
    })
}

/// The part's recorded range, `None` when it has none; an unparsable one is the state's fault.
fn range_of(part: &PartRecord) -> Result<Option<(UnixMicros, UnixMicros)>, String> {
    let (Some(first), Some(last)) = (&part.first_timestamp, &part.last_timestamp) else {
        return Ok(None);
    };
    match (parse_timestamp(first), parse_timestamp(last)) {
        (Some(a), Some(b)) if a <= b => Ok(Some((a, b))),
        _ => Err(format!(
            "part {} records the range {first:?} ..= {last:?}, which is not a range of RFC 3339 \
             timestamps",
            part.file
        )),
    }
}

/// Sorted, overlapping or touching ranges joined.
fn merge(mut ranges: Vec<(UnixMicros, UnixMicros)>) -> Vec<(UnixMicros, UnixMicros)> {
    ranges.sort_unstable();
    let mut merged: Vec<(UnixMicros, UnixMicros)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match merged.last_mut() {
            Some((_, end)) if a <= *end => *end = (*end).max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
}

/// Adds to `exclude` the ids of the part at `path` whose time falls in one of `ranges`, after
/// checking that the file is the one the state committed.
fn held_ids(
    path: &Path,
    part: &PartRecord,
    keys: KeyColumns,
    ranges: &[(UnixMicros, UnixMicros)],
    exclude: &mut HashSet<uuid::Uuid>,
) -> Result<(), String> {
    let changed = |what: String| {
        format!(
            "part {} is not the file the state committed ({what}); the rows it holds cannot be \
             told apart from the ones to re-extract",
            part.file
        )
    };
    let sha = file_sha256(path).map_err(|e| ErrorChain::new(&e).to_string())?;
    if sha != part.sha256 {
        return Err(changed(format!("SHA-256 {sha}, committed {}", part.sha256)));
    }
    let rows = for_each_part_key(path, keys.id, keys.time, |id, at| {
        if ranges.iter().any(|(a, b)| (*a..=*b).contains(&at)) {
            exclude.insert(id);
        }
    })
    .map_err(|e| ErrorChain::new(&e).to_string())?;
    if rows != part.rows {
        return Err(changed(format!("{rows} rows, committed {}", part.rows)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_and_touching_ranges_merge_and_the_rest_stay_apart() {
        assert_eq!(
            merge(vec![(10, 20), (1, 3), (15, 30), (30, 31), (40, 41)]),
            vec![(1, 3), (10, 31), (40, 41)]
        );
        assert_eq!(merge(vec![]), vec![]);
    }

    fn part(file: &str, range: Option<(&str, &str)>) -> PartRecord {
        PartRecord {
            file: file.into(),
            rows: 1,
            bytes: 1,
            sha256: String::new(),
            first_timestamp: range.map(|r| r.0.into()),
            last_timestamp: range.map(|r| r.1.into()),
        }
    }

    #[test]
    fn a_lost_part_without_a_recorded_range_cannot_be_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let lost = part("part-00001.parquet", None);
        let state = TableState {
            parts: vec![lost.clone()],
            ..TableState::default()
        };
        let keys = KeyColumns {
            id: "uuid",
            time: "timestamp",
        };
        let err = plan("t", dir.path(), &state, &[lost], keys).unwrap_err();
        assert!(err.to_string().contains("no recorded range"), "{err}");
    }

    #[test]
    fn a_remaining_part_that_changed_since_its_commit_stops_the_repair() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("part-00002.jsonl"), "{}\n").unwrap();
        let lost = part(
            "part-00001.jsonl",
            Some(("2025-01-01T00:00:00Z", "2025-01-02T00:00:00Z")),
        );
        let other = part(
            "part-00002.jsonl",
            Some(("2025-01-01T12:00:00Z", "2025-01-03T00:00:00Z")),
        );
        let state = TableState {
            parts: vec![lost.clone(), other],
            ..TableState::default()
        };
        let keys = KeyColumns {
            id: "uuid",
            time: "timestamp",
        };
        let err = plan("t", dir.path(), &state, &[lost], keys).unwrap_err();
        assert!(
            err.to_string()
                .contains("is not the file the state committed"),
            "{err}"
        );
    }
}
