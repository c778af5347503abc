//! The free-space index of a pool: free addresses kept as disjoint runs, so allocation,
//! "what is free" and counting stay O(log runs) however large the ranges are.

use std::ops::Bound;

use imbl::OrdMap;

use crate::mac::Mac;
use crate::range::MacRange;

/// Disjoint, non-adjacent runs of free addresses (`start -> last`, inclusive, as integers). A
/// persistent map, so a copy for a reader costs O(1) however fragmented the pool is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FreeSpace {
    runs: OrdMap<u64, u64>,
    free: u64,
}

impl FreeSpace {
    /// Every address of the given (non-overlapping) ranges free.
    pub fn with_ranges(ranges: &[MacRange]) -> FreeSpace {
        let mut space = FreeSpace::default();
        for r in ranges {
            space.give_run(r.first().to_u64(), r.last().to_u64());
        }
        space
    }

    /// Number of free addresses.
    pub fn len(&self) -> u64 {
        self.free
    }

    pub fn is_empty(&self) -> bool {
        self.free == 0
    }

    /// The run containing `v`, if `v` is free.
    fn run_containing(&self, v: u64) -> Option<(u64, u64)> {
        self.runs
            .range(..=v)
            .next_back()
            .filter(|(_, last)| **last >= v)
            .map(|(s, l)| (*s, *l))
    }

    pub fn is_free(&self, mac: Mac) -> bool {
        self.run_containing(mac.to_u64()).is_some()
    }

    /// Marks `mac` as used. Returns false (and changes nothing) when it was not free.
    pub fn take(&mut self, mac: Mac) -> bool {
        let v = mac.to_u64();
        let Some((start, last)) = self.run_containing(v) else {
            return false;
        };
        self.runs.remove(&start);
        if start < v {
            self.runs.insert(start, v - 1);
        }
        if v < last {
            self.runs.insert(v + 1, last);
        }
        self.free -= 1;
        true
    }

    /// Marks `mac` as free again. Returns false (and changes nothing) when it already was.
    pub fn give(&mut self, mac: Mac) -> bool {
        let v = mac.to_u64();
        if self.run_containing(v).is_some() {
            return false;
        }
        self.give_run(v, v);
        true
    }

    /// Marks a whole range used, all or nothing: false (and nothing changed) unless every
    /// address of it was free (then it lies inside one run, runs being non-adjacent).
    pub fn take_range(&mut self, range: MacRange) -> bool {
        let (v, w) = (range.first().to_u64(), range.last().to_u64());
        let Some((start, last)) = self.run_containing(v) else {
            return false;
        };
        if last < w {
            return false;
        }
        self.runs.remove(&start);
        if start < v {
            self.runs.insert(start, v - 1);
        }
        if w < last {
            self.runs.insert(w + 1, last);
        }
        self.free -= w - v + 1;
        true
    }

    /// Gives back a whole range, all or nothing: false unless no address of it was free.
    pub fn give_range(&mut self, range: MacRange) -> bool {
        let (v, w) = (range.first().to_u64(), range.last().to_u64());
        let overlaps = self.run_containing(v).is_some() || self.runs.range(v..=w).next().is_some();
        if overlaps {
            return false;
        }
        self.give_run(v, w);
        true
    }

    /// The lowest free range of `len` addresses starting at a multiple of `len` (so blocks read
    /// like `00-15-5D-F0-01-00 - 00-15-5D-F0-01-FF`); failing that, the lowest free run start
    /// that fits. `None` when no free run is long enough. O(runs).
    pub fn find_range(&self, len: u64) -> Option<MacRange> {
        if len == 0 {
            return None;
        }
        let fits = |(s, l): (u64, u64)| l - s + 1 >= len;
        let aligned = self.runs.iter().find_map(|(&s, &l)| {
            let start = s.div_ceil(len).checked_mul(len)?;
            (start <= l && l - start + 1 >= len).then_some(start)
        });
        let start = aligned.or_else(|| {
            self.runs
                .iter()
                .map(|(s, l)| (*s, *l))
                .find(|r| fits(*r))
                .map(|(s, _)| s)
        })?;
        MacRange::new(Mac::from_u64(start)?, Mac::from_u64(start + len - 1)?).ok()
    }

    /// The longest free run, in addresses (for messages).
    pub fn longest_run(&self) -> u64 {
        self.runs.iter().map(|(s, l)| l - s + 1).max().unwrap_or(0)
    }

    /// Adds a run known to be entirely not free, merging with its neighbours.
    fn give_run(&mut self, mut start: u64, mut last: u64) {
        self.free += last - start + 1;
        if let Some((&s, &l)) = self.runs.range(..start).next_back()
            && l.checked_add(1) == Some(start)
        {
            self.runs.remove(&s);
            start = s;
        }
        if let Some(next) = last.checked_add(1)
            && let Some(l) = self.runs.remove(&next)
        {
            last = l;
        }
        self.runs.insert(start, last);
    }

    /// The lowest free address.
    pub fn lowest(&self) -> Option<Mac> {
        self.runs.keys().next().map(|v| Mac::from_u64(*v).unwrap())
    }

    /// The first free address at or after `cursor`, wrapping around to the lowest.
    pub fn next_fit(&self, cursor: Mac) -> Option<Mac> {
        let v = cursor.to_u64();
        if self.run_containing(v).is_some() {
            return Some(cursor);
        }
        self.runs
            .range((Bound::Excluded(v), Bound::Unbounded))
            .next()
            .map(|(s, _)| Mac::from_u64(*s).unwrap())
            .or_else(|| self.lowest())
    }

    /// Free runs in ascending order, as ranges.
    pub fn runs(&self) -> impl Iterator<Item = (Mac, Mac)> + '_ {
        self.runs
            .iter()
            .map(|(s, l)| (Mac::from_u64(*s).unwrap(), Mac::from_u64(*l).unwrap()))
    }

    /// The free run containing `mac`, else the first one after it.
    pub fn run_from(&self, mac: Mac) -> Option<(Mac, Mac)> {
        let v = mac.to_u64();
        let (s, l) = self
            .run_containing(v)
            .or_else(|| self.runs.range(v..).next().map(|(s, l)| (*s, *l)))?;
        Some((Mac::from_u64(s)?, Mac::from_u64(l)?))
    }

    /// How many addresses of `first..=last` are free: O(log runs + runs inside).
    pub fn free_between(&self, first: Mac, last: Mac) -> u64 {
        let (a, b) = (first.to_u64(), last.to_u64());
        let head = self.run_containing(a).filter(|(s, _)| *s < a);
        let mut n = head.map_or(0, |(_, l)| l.min(b) - a + 1);
        for (&s, &l) in self.runs.range(a..=b) {
            n += l.min(b) - s + 1;
        }
        n
    }

    pub fn run_count(&self) -> usize {
        self.runs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn m(v: u64) -> Mac {
        Mac::from_u64(v).unwrap()
    }

    fn range(a: u64, b: u64) -> MacRange {
        MacRange::new(m(a), m(b)).unwrap()
    }

    #[test]
    fn take_splits_and_give_merges() {
        let mut f = FreeSpace::with_ranges(&[range(10, 19)]);
        assert_eq!(f.len(), 10);
        assert!(f.take(m(15)));
        assert!(!f.take(m(15)));
        assert_eq!(f.run_count(), 2);
        assert!(f.give(m(15)));
        assert!(!f.give(m(15)));
        assert_eq!(f.run_count(), 1);
        assert_eq!(f.len(), 10);
    }

    #[test]
    fn next_fit_wraps_around() {
        let mut f = FreeSpace::with_ranges(&[range(0, 2)]);
        assert_eq!(f.next_fit(m(2)), Some(m(2)));
        f.take(m(2));
        assert_eq!(f.next_fit(m(2)), Some(m(0)));
        f.take(m(0));
        f.take(m(1));
        assert_eq!(f.next_fit(m(0)), None);
    }

    #[test]
    fn adjacent_ranges_merge_into_one_run() {
        let f = FreeSpace::with_ranges(&[range(0, 9), range(10, 19)]);
        assert_eq!(f.run_count(), 1);
        assert_eq!(f.len(), 20);
    }

    proptest! {
        /// Model-based: after every step the index equals a BTreeSet of free addresses.
        #[test]
        fn matches_a_set_model(ops in proptest::collection::vec((any::<bool>(), 0u64..64), 0..300)) {
            let mut f = FreeSpace::with_ranges(&[range(0, 63)]);
            let mut model: BTreeSet<u64> = (0..64).collect();
            for (step, (take, v)) in ops.into_iter().enumerate() {
                if take {
                    prop_assert_eq!(f.take(m(v)), model.remove(&v), "step {}", step);
                } else {
                    prop_assert_eq!(f.give(m(v)), model.insert(v), "step {}", step);
                }
                prop_assert_eq!(f.len(), model.len() as u64);
                prop_assert_eq!(f.lowest().map(Mac::to_u64), model.first().copied());
                let expected_next = model.range(v..).next().or(model.first()).copied();
                prop_assert_eq!(f.next_fit(m(v)).map(Mac::to_u64), expected_next);
                let from_runs: BTreeSet<u64> =
                    f.runs().flat_map(|(a, b)| a.to_u64()..=b.to_u64()).collect();
                prop_assert_eq!(&from_runs, &model);
            }
        }
    }
}
