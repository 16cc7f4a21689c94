//! Concurrent slices of a run's time range: how the open-ended last slice is split once its
//! first page comes back full, and what a commit may claim while slices are unfinished.
//!
//! PostHog answers each `/query` in about a second and runs 3 per project at once, so a
//! backfill read as one keyset scan waits on latency, not on its rate budget. A run reads its
//! range as up to `performance.query_concurrency` slices instead: `[b_i, b_i+1)` of the
//! incremental field, each a keyset scan with its own upper bound. Their pages reach the sink
//! one at a time and go into the run's one open part (see `sink.rs` for why).
//!
//! **Splitting.** The planning query (`count()` and `quantiles(1/k, …)(time)` over what is
//! left after the first page) places the boundaries; each slice's page size is chosen so its
//! rows fill whole pages (at most 1 % over `page_size` at 1 M events), so the slices together
//! send no more page requests than one scan would, plus the one empty page each ends with.
//!
//! **Committing.** A checkpoint commits every row any slice has consumed (the sink closes the
//! open part at a page boundary), but the watermark moves only over the slices that finished one after
//! the other from the start ([`prefix`]); what later slices committed is recorded as
//! [`BaseRange`]s (the state's `committed_ranges`), each with the dedup window of its tail, so the
//! next run reads only what lies between them and re-reads its lookback without duplicates.

use std::time::Duration;

use posthog_client::RangeSummary;
use posthog_core::{DedupWindow, UnixMicros, format_timestamp};
use posthog_state::CommittedRange;

use super::source::{Cursor, Start};

/// A range an earlier run committed beyond the watermark (the state's `committed_ranges`),
/// decoded and checked.
#[derive(Debug, Clone)]
pub(crate) struct BaseRange {
    /// The first instant of the range, inclusive.
    pub from: UnixMicros,
    /// The position of its last row (with a time).
    pub to: Cursor,
    /// The ids of the range's tail (within the lookback before `to`), when rows are
    /// deduplicated.
    pub window: Option<DedupWindow>,
}

impl BaseRange {
    /// The range as the state records it.
    pub(crate) fn record(&self) -> CommittedRange {
        let text = |at: UnixMicros| {
            let mut s = String::new();
            format_timestamp(at, &mut s);
            s
        };
        let mut record = CommittedRange {
            from: text(self.from),
            to: text(self.to.time.unwrap_or(0)),
            to_uuid: self.to.id.clone(),
            dedup_window: None,
        };
        if let Some(mut window) = self.window.clone() {
            record.set_dedup_window_bytes(&window.to_bytes());
        }
        record
    }
}

/// A slice the split makes: where it starts (`None` for the slice that continues the scan
/// already under way), where it ends (exclusive; `None` for the last) and its page size.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SliceSpec {
    pub from: Option<UnixMicros>,
    pub before: Option<UnixMicros>,
    pub page_size: u32,
}

/// The quantile levels the planning query asks for, for `k` slices: `1/k, 2/k, …`.
pub(crate) fn levels(k: usize) -> Vec<f64> {
    (1..k).map(|i| i as f64 / k as f64).collect()
}

/// Slack on a slice's expected rows when sizing its pages: rows that share a boundary's
/// timestamp, or arrive while the run reads, then still fit the slice's pages.
const SLACK: f64 = 1.01;

/// The slices the rest of a scan is read as, from the planning query's answer; empty when it
/// is not worth splitting (fewer than `k` pages left, or no usable boundary).
///
/// `after` is the time of the continuing scan's position and `floor` the base watermark: every
/// boundary lies strictly after both (a boundary at the scan's position would give the rows at
/// that instant to two slices; one at or before the watermark would leave the first slice's
/// dedup window without rows it must drop). Boundaries that are not strictly increasing are
/// dropped too (many rows at one instant); their share goes to the slice before.
///
/// Each slice's share of the rows follows from the quantile levels; its page size is the
/// share spread over `⌊share / page_size⌋` pages (at least one), so no page request is spent
/// on a partial page, never below `page_size` and never above `max_page`.
pub(crate) fn split(
    summary: &RangeSummary,
    k: usize,
    after: Option<UnixMicros>,
    floor: Option<UnixMicros>,
    page_size: u32,
    max_page: u32,
) -> Vec<SliceSpec> {
    let page = u64::from(page_size.max(1));
    if k < 2 || summary.rows < k as u64 * page {
        return Vec::new();
    }
    let floor = after.into_iter().chain(floor).max().unwrap_or(i64::MIN);
    let mut bounds: Vec<(f64, UnixMicros)> = Vec::new();
    for (level, &at) in levels(k).into_iter().zip(&summary.quantiles) {
        if at > floor && bounds.last().is_none_or(|&(_, prev)| at > prev) {
            bounds.push((level, at));
        }
    }
    if bounds.is_empty() {
        return Vec::new();
    }
    let rows = summary.rows as f64;
    let size = |share: f64| {
        let pages = ((share / page as f64).floor() as u64).max(1);
        let per_page = (share * SLACK / pages as f64).ceil() as u64;
        u32::try_from(per_page.clamp(page, u64::from(max_page.max(page_size)))).unwrap_or(max_page)
    };
    let mut specs = Vec::with_capacity(bounds.len() + 1);
    let mut from = (0.0, None);
    for &(level, at) in &bounds {
        specs.push(SliceSpec {
            from: from.1,
            before: Some(at),
            page_size: size((level - from.0) * rows),
        });
        from = (level, Some(at));
    }
    specs.push(SliceSpec {
        from: from.1,
        before: None,
        page_size: size((1.0 - from.0) * rows),
    });
    specs
}

/// One stretch of the run's range, in time order, as a commit sees it.
pub(crate) enum Segment<'a> {
    /// A range an earlier run committed beyond the watermark.
    Committed(&'a BaseRange),
    /// A slice of this run: where it started, its last row consumed (every consumed row is
    /// committed when this is asked), whether its scan ended, and its dedup window.
    Slice {
        lower: &'a Start,
        last: Option<Cursor>,
        done: bool,
        window: Option<&'a DedupWindow>,
    },
}

/// What a commit records: the watermark, the dedup window at it, and the ranges committed
/// beyond it.
#[derive(Debug)]
pub(crate) struct Prefix {
    pub watermark: Option<Cursor>,
    pub window: Option<DedupWindow>,
    pub ranges: Vec<BaseRange>,
}

/// The watermark moves over the contiguous prefix of finished stretches, and into the first
/// unfinished slice as far as it has read; never past a slice that has not finished, and never
/// back. Everything after the prefix that is committed becomes a [`BaseRange`]; a slice that
/// resumed right after a committed range extends it.
///
/// The prefix's dedup window merges the windows of every stretch it covers (each holds its own
/// tail; the first slice's started from the base state's), so it knows every id emitted within
/// the lookback before the new watermark.
pub(crate) fn prefix<'a>(
    base: Option<&Cursor>,
    lookback: Duration,
    segments: impl IntoIterator<Item = Segment<'a>>,
) -> Prefix {
    let mut watermark = base.cloned();
    let mut window: Option<DedupWindow> = None;
    let mut ranges: Vec<BaseRange> = Vec::new();
    let mut open = true;
    let advance = |watermark: &mut Option<Cursor>, to: &Cursor| {
        let later = match (&*watermark, to.time) {
            (None, _) => true,
            (Some(w), Some(t)) => w.time.is_none_or(|wt| t >= wt),
            (Some(_), None) => false,
        };
        if later {
            *watermark = Some(to.clone());
        }
    };
    let merge = |into: &mut Option<DedupWindow>, other: Option<&DedupWindow>| {
        if let Some(other) = other {
            into.get_or_insert_with(|| DedupWindow::new(lookback))
                .merge(other);
        }
    };
    for segment in segments {
        match segment {
            Segment::Committed(range) if open => {
                advance(&mut watermark, &range.to);
                merge(&mut window, range.window.as_ref());
            }
            Segment::Committed(range) => ranges.push(range.clone()),
            Segment::Slice {
                last,
                done,
                window: w,
                ..
            } if open => {
                if let Some(last) = &last {
                    advance(&mut watermark, last);
                }
                merge(&mut window, w);
                open = done;
            }
            Segment::Slice {
                lower,
                last: Some(last),
                window: w,
                ..
            } => match lower {
                // A slice that resumed right after a committed range continues it.
                Start::After(from) if ranges.last().is_some_and(|r| &r.to == from) => {
                    let range = ranges.last_mut().expect("checked");
                    range.to = last;
                    merge(&mut range.window, w);
                }
                // `After` without the range it follows cannot happen (a slice that resumes
                // after a range always comes right after it); the range is then claimed from
                // just after that instant, never including rows it does not hold.
                Start::After(Cursor { time, .. }) => ranges.push(BaseRange {
                    from: time.map_or(0, |t| t.saturating_add(1)),
                    to: last,
                    window: w.cloned(),
                }),
                Start::AtOrAfter(from) => ranges.push(BaseRange {
                    from: *from,
                    to: last,
                    window: w.cloned(),
                }),
                Start::Beginning => {}
            },
            Segment::Slice { last: None, .. } => {}
        }
    }
    Prefix {
        watermark,
        window,
        ranges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000;
    const LOOKBACK: Duration = Duration::from_secs(15 * 60);

    fn summary(rows: u64, quantiles: &[i64]) -> RangeSummary {
        RangeSummary {
            rows,
            quantiles: quantiles.to_vec(),
        }
    }

    fn at(t: i64, id: u128) -> Cursor {
        Cursor {
            time: Some(t),
            id: uuid::Uuid::from_u128(id).hyphenated().to_string(),
        }
    }

    fn window(ids: &[(u128, i64)]) -> DedupWindow {
        let mut w = DedupWindow::new(LOOKBACK);
        for &(id, t) in ids {
            w.observe(uuid::Uuid::from_u128(id), t);
        }
        w
    }

    #[test]
    fn levels_split_the_rows_evenly() {
        assert_eq!(levels(3), [1.0 / 3.0, 2.0 / 3.0]);
        assert_eq!(levels(2), [0.5]);
        assert!(levels(1).is_empty());
    }

    #[test]
    fn a_backfill_splits_into_slices_whose_rows_fill_whole_pages() {
        // 990 000 rows left at pages of 10 000: three slices of 330 000 rows, 33 pages each,
        // so 99 page requests, as many as one scan would need.
        let specs = split(
            &summary(990_000, &[100 * MIN, 200 * MIN]),
            3,
            Some(MIN),
            None,
            10_000,
            50_000,
        );
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[0].from, None, "the first slice continues the scan");
        assert_eq!(specs[0].before, Some(100 * MIN));
        assert_eq!(specs[1].from, Some(100 * MIN));
        assert_eq!(specs[1].before, Some(200 * MIN));
        assert_eq!(specs[2].from, Some(200 * MIN));
        assert_eq!(specs[2].before, None, "the last slice is open-ended");
        for spec in &specs {
            let pages = 330_000_u64.div_ceil(u64::from(spec.page_size));
            assert_eq!(pages, 33, "{spec:?}");
            assert!((10_000..=10_101).contains(&spec.page_size), "{spec:?}");
        }
    }

    #[test]
    fn little_left_or_no_usable_boundary_means_no_split() {
        let q = [100 * MIN, 200 * MIN];
        assert!(split(&summary(29_999, &q), 3, Some(MIN), None, 10_000, 50_000).is_empty());
        assert!(split(&summary(990_000, &q), 1, Some(MIN), None, 10_000, 50_000).is_empty());
        // Every row at one instant: no boundary after the scan's position.
        let same = [MIN, MIN];
        assert!(split(&summary(990_000, &same), 3, Some(MIN), None, 1000, 50_000).is_empty());
    }

    #[test]
    fn boundaries_lie_after_the_position_and_the_watermark_and_strictly_increase() {
        // The first quantile is at the scan's position: a slice from there would read the
        // rows at that instant twice. The second equals the third.
        let specs = split(
            &summary(900_000, &[5 * MIN, 9 * MIN, 9 * MIN]),
            4,
            Some(5 * MIN),
            None,
            10_000,
            50_000,
        );
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].before, Some(9 * MIN));
        assert_eq!(specs[1].from, Some(9 * MIN));
        // The watermark of the base state is the floor when it is later: the first slice's
        // dedup window covers the lookback before it.
        let specs = split(
            &summary(900_000, &[5 * MIN, 9 * MIN, 12 * MIN]),
            4,
            Some(MIN),
            Some(10 * MIN),
            10_000,
            50_000,
        );
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].before, Some(12 * MIN));
        // The first slice takes the share of the dropped boundaries: 3/4 of the rows, in 67
        // pages.
        assert_eq!(675_000_u64.div_ceil(u64::from(specs[0].page_size)), 67);
        assert!(specs.iter().all(|s| s.page_size <= 50_000));
    }

    #[test]
    fn a_slice_page_never_passes_the_largest_page() {
        let specs = split(
            &summary(140_000, &[MIN * 10]),
            2,
            Some(MIN),
            None,
            45_000,
            50_000,
        );
        assert_eq!(specs.len(), 2);
        assert!(specs.iter().all(|s| s.page_size == 50_000), "{specs:?}");
    }

    fn slice<'a>(
        lower: &'a Start,
        last: Option<Cursor>,
        done: bool,
        window: Option<&'a DedupWindow>,
    ) -> Segment<'a> {
        Segment::Slice {
            lower,
            last,
            done,
            window,
        }
    }

    #[test]
    fn the_watermark_never_passes_an_unfinished_slice() {
        let base = at(10 * MIN, 1);
        let (s0, s1, s2) = (
            Start::AtOrAfter(0),
            Start::AtOrAfter(100 * MIN),
            Start::AtOrAfter(200 * MIN),
        );
        let (w0, w1, w2) = (
            window(&[(10, 40 * MIN)]),
            window(&[(11, 150 * MIN)]),
            window(&[(12, 250 * MIN)]),
        );
        // Slices 1 and 2 are far ahead, slice 0 is not finished: the watermark is slice 0's
        // last row; what 1 and 2 committed is recorded as ranges from their starts.
        let p = prefix(
            Some(&base),
            LOOKBACK,
            [
                slice(&s0, Some(at(40 * MIN, 10)), false, Some(&w0)),
                slice(&s1, Some(at(150 * MIN, 11)), true, Some(&w1)),
                slice(&s2, Some(at(250 * MIN, 12)), false, Some(&w2)),
            ],
        );
        assert_eq!(p.watermark, Some(at(40 * MIN, 10)));
        assert_eq!(p.ranges.len(), 2);
        assert_eq!(
            (p.ranges[0].from, &p.ranges[0].to),
            (100 * MIN, &at(150 * MIN, 11))
        );
        assert_eq!(
            (p.ranges[1].from, &p.ranges[1].to),
            (200 * MIN, &at(250 * MIN, 12))
        );
        let window = p.window.unwrap();
        assert!(window.contains(uuid::Uuid::from_u128(10)));
        assert!(
            !window.contains(uuid::Uuid::from_u128(11)),
            "beyond the watermark"
        );
        // Slice 0 has read nothing yet: the base watermark stays, even behind the ranges.
        let p = prefix(
            Some(&base),
            LOOKBACK,
            [
                slice(&s0, None, false, Some(&w0)),
                slice(&s1, Some(at(150 * MIN, 11)), true, Some(&w1)),
            ],
        );
        assert_eq!(p.watermark, Some(base.clone()));
        assert_eq!(p.ranges.len(), 1);
        // Slice 0 rereads its lookback (rows before the base watermark): it never goes back.
        let p = prefix(
            Some(&base),
            LOOKBACK,
            [slice(&s0, Some(at(5 * MIN, 9)), false, Some(&w0))],
        );
        assert_eq!(p.watermark, Some(base.clone()));
        // Slices 0 and 1 finished, 2 under way: the watermark moves into slice 2.
        let p = prefix(
            Some(&base),
            LOOKBACK,
            [
                slice(&s0, Some(at(40 * MIN, 10)), true, Some(&w0)),
                slice(&s1, Some(at(150 * MIN, 11)), true, Some(&w1)),
                slice(&s2, Some(at(250 * MIN, 12)), false, Some(&w2)),
            ],
        );
        assert_eq!(p.watermark, Some(at(250 * MIN, 12)));
        assert!(p.ranges.is_empty());
    }

    #[test]
    fn a_committed_range_joins_the_prefix_with_its_window_or_grows_by_the_slice_after_it() {
        let base = at(10 * MIN, 1);
        let range = BaseRange {
            from: 100 * MIN,
            to: at(150 * MIN, 20),
            window: Some(window(&[(20, 150 * MIN), (21, 149 * MIN)])),
        };
        let s0 = Start::AtOrAfter(0);
        let after_range = Start::After(range.to.clone());
        let w0 = window(&[(10, 40 * MIN)]);
        let w1 = window(&[(30, 151 * MIN)]);
        // The gap before the range is done: the watermark passes the range into the slice
        // after it, and the window knows the range's tail (a rerun of the lookback before
        // 151 minutes drops ids 20 and 21).
        let p = prefix(
            Some(&base),
            LOOKBACK,
            [
                slice(&s0, Some(at(40 * MIN, 10)), true, Some(&w0)),
                Segment::Committed(&range),
                slice(&after_range, Some(at(151 * MIN, 30)), false, Some(&w1)),
            ],
        );
        assert_eq!(p.watermark, Some(at(151 * MIN, 30)));
        assert!(p.ranges.is_empty());
        let mut window = p.window.unwrap();
        for id in [20, 21, 30] {
            assert!(
                !window.observe(uuid::Uuid::from_u128(id), 150 * MIN),
                "id {id}"
            );
        }
        // The gap before is not done: the range stays, extended by the slice that resumed
        // after it.
        let p = prefix(
            Some(&base),
            LOOKBACK,
            [
                slice(&s0, Some(at(40 * MIN, 10)), false, Some(&w0)),
                Segment::Committed(&range),
                slice(&after_range, Some(at(151 * MIN, 30)), false, Some(&w1)),
            ],
        );
        assert_eq!(p.watermark, Some(at(40 * MIN, 10)));
        assert_eq!(p.ranges.len(), 1);
        assert_eq!(p.ranges[0].from, 100 * MIN);
        assert_eq!(p.ranges[0].to, at(151 * MIN, 30));
        let mut tail = p.ranges[0].window.clone().unwrap();
        assert!(!tail.observe(uuid::Uuid::from_u128(21), 149 * MIN));
        assert!(!tail.observe(uuid::Uuid::from_u128(30), 151 * MIN));
        // And the range round-trips through the state's record.
        let record = p.ranges[0].record();
        assert_eq!(record.from, "1970-01-01T01:40:00.000000Z");
        assert_eq!(record.to_uuid, at(0, 30).id);
        assert!(record.dedup_window.is_some());
    }
}
