//! Who wrote what among the records folded last: the key rule of records
//! placed ahead (`ahead::overtaken`) answered by lookups instead of a scan
//! of every record between a record's base and it. With many hosts a
//! record is placed about as many positions ahead as there are hosts
//! writing, and every host decides every record: the scan made deciding
//! grow with the square of the hosts.

use super::ahead::{KeyRange, AHEAD_SPAN};
use super::record::CommitRecord;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

/// The newest position that wrote each key, and that touched or replaced
/// each tree, over the records `from..=upto` exactly as the log holds them
/// (void or not: the rule counts them all). Entries at or before
/// `upto - AHEAD_SPAN` are dropped now and then: a record further than
/// that past its base is void whatever lies between.
#[derive(Default)]
pub(super) struct RecentWrites {
    /// First position indexed; 0 while empty.
    from: u64,
    /// Last position indexed.
    upto: u64,
    trees: HashMap<String, TreeMarks>,
    /// Records added since entries were last dropped.
    since_prune: u64,
}

#[derive(Default)]
struct TreeMarks {
    /// Newest position that created or dropped the tree.
    replaced: u64,
    /// Newest position that wrote in the tree or replaced it.
    touched: u64,
    /// Newest position that wrote each key.
    keys: BTreeMap<Vec<u8>, u64>,
}

impl RecentWrites {
    /// Adds `rec`, the record folded next. A record that does not follow
    /// the last one added (a fold that failed half way and is read again,
    /// a state replaced by a checkpoint) starts the index over at it.
    pub(super) fn add(&mut self, rec: &CommitRecord) {
        if self.from == 0 || rec.seq != self.upto + 1 {
            self.clear();
            self.from = rec.seq;
        }
        let seq = rec.seq;
        for w in &rec.writes {
            let marks = self.marks(&w.tree);
            marks.touched = seq;
            for k in &w.keys {
                match marks.keys.get_mut(k.as_slice()) {
                    Some(s) => *s = seq,
                    None => {
                        marks.keys.insert(k.clone(), seq);
                    }
                }
            }
        }
        for t in &rec.replaced_trees {
            let marks = self.marks(t);
            marks.replaced = seq;
            marks.touched = seq;
        }
        self.upto = seq;
        self.since_prune += 1;
        if self.since_prune >= AHEAD_SPAN {
            self.prune();
        }
    }

    /// Forgets everything (the state folded so far was replaced).
    pub(super) fn clear(&mut self) {
        *self = RecentWrites::default();
    }

    /// Whether `rec`, placed ahead, is void by the key rule, when the index
    /// holds exactly the records between its base and it; `None` when it
    /// does not (then the caller scans them).
    pub(super) fn overtakes(&self, rec: &CommitRecord) -> Option<bool> {
        let base = rec.base;
        if self.from == 0 || self.from > base + 1 || self.upto + 1 != rec.seq {
            return None;
        }
        let after_base = |s: u64| s > base;
        for t in &rec.replaced_trees {
            if self.trees.get(t).is_some_and(|m| after_base(m.touched)) {
                return Some(true);
            }
        }
        // Each tree the record used, once: the scan matches a written tree
        // against the record's first read set and first write set of it.
        for (i, tree) in trees_used(rec).enumerate() {
            if trees_used(rec).take(i).any(|t| t == tree) {
                continue;
            }
            let Some(marks) = self.trees.get(tree) else {
                continue;
            };
            if after_base(marks.replaced) {
                return Some(true);
            }
            if !after_base(marks.touched) {
                continue;
            }
            let written = |k: &[u8]| marks.keys.get(k).is_some_and(|&s| after_base(s));
            if let Some(w) = rec.writes.iter().find(|w| w.tree == tree) {
                if w.keys.iter().any(|k| written(k)) {
                    return Some(true);
                }
            }
            if let Some(r) = rec.reads.iter().find(|r| r.tree == tree) {
                if r.points.iter().any(|k| written(k)) {
                    return Some(true);
                }
                for range in &r.ranges {
                    if let Some(bounds) = as_slices(range) {
                        if marks
                            .keys
                            .range::<[u8], _>(bounds)
                            .any(|(_, &s)| after_base(s))
                        {
                            return Some(true);
                        }
                    }
                }
            }
        }
        Some(false)
    }

    fn marks(&mut self, tree: &str) -> &mut TreeMarks {
        if !self.trees.contains_key(tree) {
            self.trees.insert(tree.to_string(), TreeMarks::default());
        }
        self.trees.get_mut(tree).expect("inserted above")
    }

    /// Drops what no record still to be decided can be overtaken by.
    fn prune(&mut self) {
        self.since_prune = 0;
        let Some(old) = self.upto.checked_sub(AHEAD_SPAN) else {
            return;
        };
        self.trees.retain(|_, m| {
            m.keys.retain(|_, s| *s > old);
            m.touched > old
        });
        self.from = self.from.max(old + 1);
    }
}

/// The trees `rec` read or wrote, in its order, with repeats.
fn trees_used(rec: &CommitRecord) -> impl Iterator<Item = &str> {
    rec.reads
        .iter()
        .map(|r| r.tree.as_str())
        .chain(rec.writes.iter().map(|w| w.tree.as_str()))
}

/// A key range borrowed from a record's read set.
type SliceRange<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// `range` as bounds `BTreeMap::range` takes without panicking; `None`
/// when it holds no key (a record's ranges come from the store).
fn as_slices(range: &KeyRange) -> Option<SliceRange<'_>> {
    let lo = range.0.as_ref().map(Vec::as_slice);
    let hi = range.1.as_ref().map(Vec::as_slice);
    let empty = match (lo, hi) {
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b))
            if a > b =>
        {
            true
        }
        (Bound::Excluded(a), Bound::Excluded(b)) => a == b,
        _ => false,
    };
    (!empty).then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::super::ahead::{overtaken, TreeReads};
    use super::super::record::TreeWrites;
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn rec(seq: u64, base: u64) -> CommitRecord {
        CommitRecord::empty(seq, base)
    }

    const TREES: [&str; 3] = ["", "a", "b"];

    fn key() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(0u8..4, 0..3)
    }

    fn bound() -> impl Strategy<Value = Bound<Vec<u8>>> {
        prop_oneof![
            Just(Bound::Unbounded),
            key().prop_map(Bound::Included),
            key().prop_map(Bound::Excluded),
        ]
    }

    /// A record's keys, reads and replaced trees over a tiny key space, so
    /// that records collide often.
    fn body() -> impl Strategy<Value = CommitRecord> {
        let writes = prop::collection::vec((0..3usize, prop::collection::vec(key(), 0..3)), 0..3);
        let reads = prop::collection::vec(
            (
                0..3usize,
                prop::collection::vec(key(), 0..3),
                prop::collection::vec((bound(), bound()), 0..2),
            ),
            0..3,
        );
        let replaced = prop::collection::vec(0..3usize, 0..2);
        (writes, reads, replaced, prop::bool::weighted(0.05)).prop_map(
            |(writes, reads, replaced, replaces)| {
                let mut r = rec(0, 0);
                r.writes = writes
                    .into_iter()
                    .map(|(t, mut keys)| {
                        keys.sort();
                        keys.dedup();
                        TreeWrites {
                            tree: TREES[t].into(),
                            keys,
                        }
                    })
                    .collect();
                r.reads = reads
                    .into_iter()
                    .map(|(t, mut points, ranges)| {
                        points.sort();
                        points.dedup();
                        TreeReads {
                            tree: TREES[t].into(),
                            points,
                            ranges,
                        }
                    })
                    .collect();
                if replaces {
                    r.replaced_trees = replaced.into_iter().map(|t| TREES[t].into()).collect();
                }
                r
            },
        )
    }

    proptest! {
        /// The index decides every record as the scan of the records
        /// between does, wherever it holds them.
        #[test]
        fn the_index_decides_as_the_scan_does(
            bodies in prop::collection::vec((body(), 1u64..12), 1..300),
            first in 1u64..3,
        ) {
            let mut index = RecentWrites::default();
            let mut log: Vec<Arc<CommitRecord>> = Vec::new();
            for (i, (mut r, back)) in bodies.into_iter().enumerate() {
                r.seq = first + i as u64;
                r.base = r.seq.saturating_sub(back).max(first - 1);
                if r.base + 1 < r.seq && r.seq - r.base <= AHEAD_SPAN {
                    let between: Vec<_> = log
                        .iter()
                        .filter(|q| q.seq > r.base && q.seq < r.seq)
                        .cloned()
                        .collect();
                    if let Some(v) = index.overtakes(&r) {
                        prop_assert_eq!(v, overtaken(&r, &between), "{:?}", r);
                    }
                }
                index.add(&r);
                log.push(Arc::new(r));
            }
        }
    }

    #[test]
    fn a_gap_or_a_base_before_the_index_is_left_to_the_scan() {
        let mut index = RecentWrites::default();
        for seq in 10..20 {
            index.add(&rec(seq, seq - 1));
        }
        assert_eq!(index.overtakes(&rec(20, 15)), Some(false));
        assert_eq!(index.overtakes(&rec(20, 8)), None, "base before the index");
        assert_eq!(index.overtakes(&rec(21, 15)), None, "record 20 not added");
        index.add(&rec(25, 24));
        assert_eq!(index.overtakes(&rec(26, 20)), None, "started over at 25");
    }

    #[test]
    fn old_entries_go_and_the_index_still_answers_for_recent_bases() {
        let mut index = RecentWrites::default();
        let mut w = rec(1, 0);
        w.writes.push(TreeWrites {
            tree: "t".into(),
            keys: vec![b"k".to_vec()],
        });
        index.add(&w);
        for seq in 2..=3 * AHEAD_SPAN {
            index.add(&rec(seq, seq - 1));
        }
        assert!(index.trees.is_empty(), "position 1 is too old to matter");
        let mut r = rec(3 * AHEAD_SPAN + 1, 3 * AHEAD_SPAN - 5);
        r.reads.push(TreeReads {
            tree: "t".into(),
            points: vec![b"k".to_vec()],
            ranges: Vec::new(),
        });
        assert_eq!(index.overtakes(&r), Some(false));
    }

    #[test]
    fn ranges_that_hold_no_key_do_not_panic() {
        let mut index = RecentWrites::default();
        let mut w = rec(1, 0);
        w.writes.push(TreeWrites {
            tree: "t".into(),
            keys: vec![b"b".to_vec()],
        });
        index.add(&w);
        index.add(&rec(2, 1));
        let mut r = rec(3, 0);
        r.reads.push(TreeReads {
            tree: "t".into(),
            points: Vec::new(),
            ranges: vec![
                (
                    Bound::Included(b"c".to_vec()),
                    Bound::Included(b"a".to_vec()),
                ),
                (
                    Bound::Excluded(b"b".to_vec()),
                    Bound::Excluded(b"b".to_vec()),
                ),
            ],
        });
        assert_eq!(index.overtakes(&r), Some(false));
    }
}
