//! The UUID dedup window: every UUID emitted whose cursor value lies inside the lookback
//! window, so re-read events are dropped, bounded by time rather than by a count.
//!
//! An incremental run starts `lookback` before the last watermark and so reads some events
//! again; PostHog may also return one UUID twice (unmerged duplicates). The window answers
//! "was this UUID already emitted?" for every event whose cursor is at or after
//! `high_water - lookback`, the only ones a run can read again.
//!
//! Memory is 16 bytes of UUID and 8 of time per entry (plus the hash table's overhead), never a
//! string. Eviction is lazy: entries older than the cutoff are swept when the cutoff has moved a
//! quarter of the window since the last sweep or the table has doubled, so the table holds at
//! most a window and a quarter of entries and total sweep work stays linear in the number of
//! events (sweeping after a whole window held two windows: 3.1 MiB of a 3 M-event run's peak,
//! docs/benchmarks.md, eighth round). An entry kept past its cutoff can only drop a UUID that
//! was already emitted, which never breaks exactly-once. [`DedupWindow::to_bytes`] evicts
//! exactly, so the persisted form holds the window and nothing else.

use std::collections::HashMap;
use std::time::Duration;

use uuid::Uuid;

/// Microseconds since the Unix epoch (UTC): PostHog's timestamp precision and the unit of
/// cursor values.
pub type UnixMicros = i64;

/// Version byte of [`DedupWindow::to_bytes`].
const FORMAT_V1: u8 = 1;
/// Bytes per persisted entry: 16 of UUID, 8 of time.
const ENTRY_BYTES: usize = 24;

/// UUIDs emitted inside the lookback window.
///
/// ```
/// use std::time::Duration;
/// use posthog_core::DedupWindow;
/// use uuid::Uuid;
///
/// let mut window = DedupWindow::new(Duration::from_secs(15 * 60));
/// let id = Uuid::from_u128(7);
/// assert!(window.observe(id, 1_000_000), "first sight: emit");
/// assert!(!window.observe(id, 1_000_000), "again: drop");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupWindow {
    lookback_us: i64,
    /// UUID (as two words: a `u128` key would pad each entry to 32 bytes) → time.
    entries: HashMap<Key, UnixMicros>,
    high_water: Option<UnixMicros>,
    /// Cutoff at the last sweep, and the table size it left.
    swept_cutoff: UnixMicros,
    len_after_sweep: usize,
}

/// A persisted window that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DedupError {
    /// The bytes are not a dedup window of a version we know.
    #[error("dedup window state is corrupt: {0}")]
    Corrupt(String),
}

impl DedupWindow {
    /// An empty window that remembers `lookback` of cursor time.
    pub fn new(lookback: Duration) -> Self {
        DedupWindow {
            lookback_us: i64::try_from(lookback.as_micros()).unwrap_or(i64::MAX),
            entries: HashMap::new(),
            high_water: None,
            swept_cutoff: i64::MIN,
            len_after_sweep: 0,
        }
    }

    /// Records that the event `uuid` with cursor value `at` is being considered. Returns `true`
    /// when it was not seen before (emit it) and `false` for a duplicate (drop it).
    pub fn observe(&mut self, uuid: Uuid, at: UnixMicros) -> bool {
        self.high_water = Some(self.high_water.map_or(at, |hw| hw.max(at)));
        let fresh = match self.entries.entry(uuid.as_u64_pair()) {
            std::collections::hash_map::Entry::Occupied(mut seen) => {
                // Keep the latest time so the UUID stays as long as any sighting is in window.
                let t = seen.get_mut();
                *t = (*t).max(at);
                false
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(at);
                true
            }
        };
        if fresh {
            self.maybe_sweep();
        }
        fresh
    }

    /// Whether `uuid` is in the window (may also answer `true` for an entry just past the
    /// cutoff that a lazy sweep has not removed yet).
    pub fn contains(&self, uuid: Uuid) -> bool {
        self.entries.contains_key(&uuid.as_u64_pair())
    }

    /// The earliest cursor value the window must remember: `high_water - lookback`.
    pub fn cutoff(&self) -> Option<UnixMicros> {
        self.high_water
            .map(|hw| hw.saturating_sub(self.lookback_us))
    }

    /// The latest cursor value observed.
    pub fn high_water(&self) -> Option<UnixMicros> {
        self.high_water
    }

    /// Entries held, including any not yet swept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the window holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes every entry older than the cutoff now.
    pub fn evict_expired(&mut self) {
        let Some(cutoff) = self.cutoff() else { return };
        self.entries.retain(|_, at| *at >= cutoff);
        self.swept_cutoff = cutoff;
        self.len_after_sweep = self.entries.len();
    }

    fn maybe_sweep(&mut self) {
        let Some(cutoff) = self.cutoff() else { return };
        let step = (self.lookback_us / SWEEPS_PER_WINDOW).max(1);
        let moved_a_step = cutoff.saturating_sub(self.swept_cutoff) >= step;
        let doubled = self.entries.len() >= 2 * self.len_after_sweep.max(1024);
        if moved_a_step || doubled {
            self.evict_expired();
        }
    }

    /// The window in a compact, deterministic binary form: a version byte, then for each entry
    /// (sorted by time, then UUID) 16 bytes of UUID and 8 bytes of little-endian time. Expired
    /// entries are evicted first.
    pub fn to_bytes(&mut self) -> Vec<u8> {
        self.evict_expired();
        // (high, low) words order as the UUID's bytes do.
        let mut sorted: Vec<(UnixMicros, Key)> =
            self.entries.iter().map(|(k, t)| (*t, *k)).collect();
        sorted.sort_unstable();
        let mut out = Vec::with_capacity(1 + sorted.len() * ENTRY_BYTES);
        out.push(FORMAT_V1);
        for (at, (high, low)) in sorted {
            out.extend_from_slice(Uuid::from_u64_pair(high, low).as_bytes());
            out.extend_from_slice(&at.to_le_bytes());
        }
        out
    }

    /// Reads a window written by [`to_bytes`](Self::to_bytes), remembering `lookback`.
    pub fn from_bytes(lookback: Duration, bytes: &[u8]) -> Result<Self, DedupError> {
        let (&version, body) = bytes
            .split_first()
            .ok_or_else(|| DedupError::Corrupt("empty".into()))?;
        if version != FORMAT_V1 {
            return Err(DedupError::Corrupt(format!(
                "unknown format version {version}"
            )));
        }
        if body.len() % ENTRY_BYTES != 0 {
            return Err(DedupError::Corrupt(format!(
                "{} bytes is not a whole number of {ENTRY_BYTES}-byte entries",
                body.len()
            )));
        }
        let mut window = DedupWindow::new(lookback);
        for entry in body.chunks_exact(ENTRY_BYTES) {
            let (uuid, at) = entry.split_at(16);
            // `chunks_exact` and `split_at(16)` guarantee 16 and 8 bytes.
            let uuid = Uuid::from_bytes(uuid.try_into().expect("16 bytes"));
            let at = i64::from_le_bytes(at.try_into().expect("8 bytes"));
            window.entries.insert(uuid.as_u64_pair(), at);
            window.high_water = Some(window.high_water.map_or(at, |hw| hw.max(at)));
        }
        window.len_after_sweep = window.entries.len();
        window.swept_cutoff = window.cutoff().unwrap_or(i64::MIN);
        Ok(window)
    }

    /// Takes in every entry of `other` (a window of the rows another slice of the same run
    /// emitted): the union, with the later time for an id in both and the later high water.
    /// Entries that fall behind the new cutoff go at the next sweep, as always.
    pub fn merge(&mut self, other: &DedupWindow) {
        for (&uuid, &at) in &other.entries {
            let t = self.entries.entry(uuid).or_insert(at);
            *t = (*t).max(at);
        }
        if let Some(hw) = other.high_water {
            self.high_water = Some(self.high_water.map_or(hw, |mine| mine.max(hw)));
        }
        self.maybe_sweep();
    }

    /// The entries, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Uuid, UnixMicros)> + '_ {
        self.entries
            .iter()
            .map(|(&(high, low), t)| (Uuid::from_u64_pair(high, low), *t))
    }
}

/// A UUID as a hash-table key: its high and low 64 bits ([`Uuid::as_u64_pair`]), so an entry
/// with its time is 24 bytes.
type Key = (u64, u64);
const _: () = assert!(std::mem::size_of::<(Key, UnixMicros)>() == 24);

/// How many sweeps a window's worth of cursor movement makes: the table then holds at most
/// `1 + 1 / SWEEPS_PER_WINDOW` windows of entries.
const SWEEPS_PER_WINDOW: i64 = 4;

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn a_merged_window_drops_what_either_emitted_and_keeps_the_later_lookback() {
        let lookback = Duration::from_secs(10 * 60);
        let mut early = DedupWindow::new(lookback);
        assert!(early.observe(id(1), 0));
        assert!(early.observe(id(2), 5 * MIN));
        let mut late = DedupWindow::new(lookback);
        assert!(late.observe(id(3), 12 * MIN));
        let mut merged = late.clone();
        merged.merge(&early);
        assert_eq!(merged.high_water(), Some(12 * MIN));
        assert!(
            !merged.observe(id(2), 5 * MIN),
            "emitted by the early slice"
        );
        assert!(
            !merged.observe(id(3), 12 * MIN),
            "emitted by the late slice"
        );
        // Persisted, it holds the lookback before the later high water only: id 1 (at 0) is
        // older than 12 - 10 minutes.
        let back = DedupWindow::from_bytes(lookback, &merged.to_bytes()).unwrap();
        assert!(!back.contains(id(1)) && back.contains(id(2)) && back.contains(id(3)));
        // Merging the other way round gives the same window.
        early.merge(&late);
        assert_eq!(early.to_bytes(), merged.to_bytes());
    }

    #[test]
    fn duplicates_inside_one_run_are_dropped() {
        let mut w = DedupWindow::new(Duration::from_secs(900));
        assert!(w.observe(id(1), 0));
        assert!(w.observe(id(2), 0), "same time, other UUID");
        assert!(!w.observe(id(1), 5), "same UUID, even with another time");
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn entries_inside_the_window_are_never_forgotten() {
        let mut w = DedupWindow::new(Duration::from_secs(15 * 60));
        // 50 000 events, one per second: far more than a sweep threshold.
        for s in 0..50_000i64 {
            assert!(w.observe(id(s as u128), s * 1_000_000));
        }
        let cutoff = w.cutoff().unwrap();
        for s in 0..50_000i64 {
            if s * 1_000_000 >= cutoff {
                assert!(
                    w.contains(id(s as u128)),
                    "event at {s}s is inside the window"
                );
            }
        }
        // Bounded by time: at most a window and a quarter before an exact eviction …
        assert!(w.len() <= 901 + 901 / 4 + 2, "{} entries", w.len());
        // … and exactly one window after it.
        w.evict_expired();
        assert_eq!(w.len(), 901);
    }

    #[test]
    fn a_late_event_older_than_the_high_water_is_still_remembered() {
        let mut w = DedupWindow::new(Duration::from_secs(15 * 60));
        assert!(w.observe(id(1), 100 * MIN));
        assert!(w.observe(id(2), 90 * MIN), "late arrival inside the window");
        w.evict_expired();
        assert!(w.contains(id(2)));
        assert!(
            !w.observe(id(2), 90 * MIN),
            "re-read in the next run: dropped"
        );
    }

    #[test]
    fn persisted_form_round_trips_and_holds_only_the_window() {
        let mut w = DedupWindow::new(Duration::from_secs(10 * 60));
        for (n, minute) in [(1, 0), (2, 5), (3, 12), (4, 20), (5, 20)] {
            w.observe(id(n), minute * MIN);
        }
        let bytes = w.to_bytes();
        assert_eq!(
            bytes.len(),
            1 + 3 * ENTRY_BYTES,
            "minutes 12 and 20 ×2 remain"
        );
        // The layout states written by earlier versions use: by time, then UUID; the UUID's 16
        // bytes as they print, then the time in little-endian.
        let mut expected = vec![FORMAT_V1];
        for (n, minute) in [(3u128, 12), (4, 20), (5, 20)] {
            expected.extend_from_slice(id(n).as_bytes());
            expected.extend_from_slice(&(minute * MIN).to_le_bytes());
        }
        assert_eq!(bytes, expected);
        let back = DedupWindow::from_bytes(Duration::from_secs(10 * 60), &bytes).unwrap();
        let mut got: Vec<_> = back.iter().collect();
        got.sort();
        assert_eq!(
            got,
            vec![(id(3), 12 * MIN), (id(4), 20 * MIN), (id(5), 20 * MIN)]
        );
        assert_eq!(back.high_water(), Some(20 * MIN));
        assert_eq!(w.clone().to_bytes(), bytes, "deterministic");
    }

    #[test]
    fn corrupt_state_is_an_error_not_a_panic() {
        let lookback = Duration::from_secs(60);
        for bad in [&[][..], &[9u8][..], &[1u8, 0, 0][..]] {
            assert!(DedupWindow::from_bytes(lookback, bad).is_err(), "{bad:?}");
        }
        assert!(
            DedupWindow::from_bytes(lookback, &[1u8])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn extreme_times_and_lookbacks_do_not_overflow() {
        let mut w = DedupWindow::new(Duration::MAX);
        assert!(w.observe(id(1), i64::MIN));
        assert!(w.observe(id(2), i64::MAX));
        w.evict_expired();
        // The lookback saturates at i64::MAX µs, so the cutoff is 0 and only MAX remains.
        assert_eq!(w.iter().collect::<Vec<_>>(), vec![(id(2), i64::MAX)]);
        let mut z = DedupWindow::new(Duration::ZERO);
        z.observe(id(1), 5);
        z.observe(id(2), 6);
        z.evict_expired();
        assert_eq!(
            z.len(),
            1,
            "a zero lookback keeps only the high-water instant"
        );
    }
}
