//! Records placed ahead: a host writes its record at a log position it was
//! handed (`Coordinator::take_place`) without first reading the records of
//! the positions before it, which other hosts are writing at the same time.
//! Whether such a record commits is then decided by every reader alike:
//! it is *void* (folded as if empty) when a record between its base and
//! its position wrote a key it read or wrote, or created or dropped a tree
//! it used. Otherwise it stands: as written, when every node it changed is
//! still the version it was built on; replayed key by key onto the nodes as
//! they are (*melded*, `Melder`), when a record between changed one of them
//! (two hosts' creates in one directory share its leaves, not its keys).
//!
//! The key rule reads only the records as they are in the log, void or
//! not, so every process decides the same whatever it folded before (a
//! process that opens from a checkpoint reads the few records it needs
//! from the store); counting a void record's keys as if they had landed
//! can only void more. The node rule and the meld read the state folded
//! up to the position before the record, which every reader folds alike.

use super::record::{CommitRecord, NodeChange, RegState, TreeWrites};
use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::ops::Bound;
use std::sync::Arc;

/// Farthest a record may be placed past the record it was built on: a
/// record further ahead is void (positions are handed out at most
/// `PLACE_WINDOW` past the newest one a host read). GC keeps this many
/// records before a checkpoint, so a process that opens from it can decide.
pub const AHEAD_SPAN: u64 = 128;

/// A range of keys, as `BTreeMap::range` takes it.
pub type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// Keys one commit read in one tree: points, and ranges as far as its scans
/// went (absent keys count: a name found missing is a read).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeReads {
    /// Tree name ("" is the catalog).
    pub tree: String,
    /// Keys read one by one, sorted.
    pub points: Vec<Vec<u8>>,
    /// Key ranges scanned.
    pub ranges: Vec<KeyRange>,
}

impl TreeReads {
    /// True when reading `key` is part of this read set.
    pub fn covers(&self, key: &[u8]) -> bool {
        self.points
            .binary_search_by(|p| p.as_slice().cmp(key))
            .is_ok()
            || self.ranges.iter().any(|(lo, hi)| in_range(key, lo, hi))
    }
}

/// True when `key` lies between the bounds `lo` and `hi`.
pub(crate) fn in_range(key: &[u8], lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> bool {
    let above = match lo {
        Bound::Unbounded => true,
        Bound::Included(l) => key >= l.as_slice(),
        Bound::Excluded(l) => key > l.as_slice(),
    };
    let below = match hi {
        Bound::Unbounded => true,
        Bound::Included(h) => key <= h.as_slice(),
        Bound::Excluded(h) => key < h.as_slice(),
    };
    above && below
}

/// True when `rec` was placed ahead (built on a record before the one
/// preceding it).
pub fn placed_ahead(rec: &CommitRecord) -> bool {
    rec.base + 1 < rec.seq
}

/// True when `rec`, placed ahead, must be void: it lies too far past its
/// base, or one of `between` (the records in `(rec.base, rec.seq)`, in
/// order, as the log holds them) wrote a key it read or wrote, or created
/// or dropped a tree it used. A record not placed ahead is never void.
pub fn overtaken(rec: &CommitRecord, between: &[Arc<CommitRecord>]) -> bool {
    if !placed_ahead(rec) {
        return false;
    }
    if rec.seq - rec.base > AHEAD_SPAN || between.len() as u64 != rec.seq - rec.base - 1 {
        return true;
    }
    let used = |tree: &str| {
        rec.reads.iter().any(|r| r.tree == tree) || rec.writes.iter().any(|w| w.tree == tree)
    };
    between.iter().any(|q| {
        // As the log holds it: whether `q` itself was void does not count.
        q.replaced_trees.iter().any(|t| used(t))
            || rec.replaced_trees.iter().any(|t| q_uses(q, t))
            || q.writes.iter().any(|w| hits(rec, w))
    })
}

/// True when a node `rec` changed is no longer the version it was built
/// on in `state` (the state folded up to the position before it): its node
/// images cannot land as they are.
pub fn stale(rec: &CommitRecord, state: &RegState) -> bool {
    rec.nodes
        .iter()
        .any(|c| state.nodes.get(&c.node).map(|l| l.blob) != c.old)
}

/// Replays a record placed ahead whose nodes went stale onto the state
/// before it, the same on every reader: the B-tree code lives above the
/// log, so the registry is handed one.
pub trait Melder: Send + Sync {
    /// The node changes `rec`'s key ops make when replayed onto `state`
    /// (the state at `rec.seq - 1`), with ids that every reader derives
    /// alike; `None` when it cannot be replayed (it carries no ops, or a
    /// tree it wrote is gone): then it is void.
    fn meld(&self, state: &RegState, rec: &CommitRecord) -> Result<Option<Vec<NodeChange>>>;

    /// Writes out the nodes melds made that `state` names and the store
    /// does not hold yet: a checkpoint of `state` is about to stand for the
    /// records that could make them again.
    fn materialize(&self, state: &RegState) -> Result<()>;
}

/// True when `q` read or wrote anything in `tree`.
fn q_uses(q: &CommitRecord, tree: &str) -> bool {
    q.writes.iter().any(|w| w.tree == tree) || q.replaced_trees.iter().any(|t| t == tree)
}

/// True when a key of `w` is one `rec` read or wrote.
fn hits(rec: &CommitRecord, w: &TreeWrites) -> bool {
    let reads = rec.reads.iter().find(|r| r.tree == w.tree);
    let writes = rec.writes.iter().find(|x| x.tree == w.tree);
    if reads.is_none() && writes.is_none() {
        return false;
    }
    w.keys.iter().any(|k| {
        reads.is_some_and(|r| r.covers(k))
            || writes.is_some_and(|x| x.keys.binary_search(k).is_ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{BlobId, NodeId};
    use crate::log::NodeLoc;

    fn rec(seq: u64, base: u64) -> CommitRecord {
        CommitRecord::empty(seq, base)
    }

    fn writes(tree: &str, keys: &[&[u8]]) -> TreeWrites {
        TreeWrites {
            tree: tree.into(),
            keys: keys.iter().map(|k| k.to_vec()).collect(),
        }
    }

    fn change(node: NodeId) -> NodeChange {
        NodeChange {
            node,
            old: Some(BlobId::fresh()),
            new: Some(BlobId::fresh()),
            packed: true,
        }
    }

    #[test]
    fn a_record_right_after_its_base_is_never_void() {
        let r = rec(5, 4);
        assert!(!placed_ahead(&r));
        assert!(!overtaken(&r, &[]));
    }

    #[test]
    fn disjoint_records_between_leave_it_committed() {
        let n = NodeId::fresh();
        let mut r = rec(4, 1);
        r.nodes.push(change(n));
        r.writes.push(writes("t", &[b"a"]));
        r.reads.push(TreeReads {
            tree: "t".into(),
            points: vec![b"a".to_vec()],
            ranges: vec![(
                Bound::Included(b"m".to_vec()),
                Bound::Excluded(b"p".to_vec()),
            )],
        });
        let mut q2 = rec(2, 1);
        q2.nodes.push(change(NodeId::fresh()));
        q2.writes.push(writes("t", &[b"b", b"z"]));
        let mut q3 = rec(3, 1);
        q3.writes.push(writes("u", &[b"a"]));
        let between = [Arc::new(q2), Arc::new(q3)];
        assert!(!overtaken(&r, &between));
    }

    #[test]
    fn a_read_key_a_written_key_or_a_dropped_tree_voids_it_a_shared_node_does_not() {
        let n = NodeId::fresh();
        let mut r = rec(3, 1);
        r.nodes.push(change(n));
        r.writes.push(writes("t", &[b"a"]));
        r.reads.push(TreeReads {
            tree: "t".into(),
            points: vec![b"a".to_vec(), b"c".to_vec()],
            ranges: vec![(
                Bound::Included(b"m".to_vec()),
                Bound::Excluded(b"p".to_vec()),
            )],
        });
        let mut shares_node = rec(2, 1);
        shares_node.nodes.push(change(n));
        shares_node.writes.push(writes("t", &[b"b"]));
        assert!(!overtaken(&r, &[Arc::new(shares_node)]));
        let cases: Vec<CommitRecord> = vec![
            {
                let mut q = rec(2, 1);
                q.writes.push(writes("t", &[b"c"]));
                q
            },
            {
                let mut q = rec(2, 1);
                q.writes.push(writes("t", &[b"n"]));
                q
            },
            {
                let mut q = rec(2, 1);
                q.writes.push(writes("t", &[b"a"]));
                q
            },
            {
                let mut q = rec(2, 1);
                q.replaced_trees.push("t".into());
                q
            },
        ];
        for q in cases {
            assert!(overtaken(&r, &[Arc::new(q.clone())]), "{q:?}");
        }
    }

    #[test]
    fn a_record_is_stale_when_a_node_it_changed_moved_on() {
        let (n, m) = (NodeId(2000), NodeId(2001));
        let mut r = rec(3, 1);
        let c = change(n);
        r.nodes.push(c.clone());
        r.nodes.push(NodeChange {
            node: m,
            old: None,
            new: Some(BlobId::fresh()),
            packed: true,
        });
        let at = |blob| NodeLoc {
            blob,
            version: 1,
            packed: true,
        };
        let mut state = RegState::default();
        state.nodes.insert(n, at(c.old.expect("old")));
        assert!(!stale(&r, &state), "as built: lands as it is");
        state.nodes.insert(n, at(BlobId::fresh()));
        assert!(stale(&r, &state), "changed since");
        state.nodes.remove(&n);
        assert!(stale(&r, &state), "freed since");
        state.nodes.insert(n, at(c.old.expect("old")));
        state.nodes.insert(m, at(BlobId::fresh()));
        assert!(stale(&r, &state), "a node it made exists already");
    }

    #[test]
    fn too_far_ahead_or_with_records_missing_it_is_void() {
        let r = rec(AHEAD_SPAN + 2, 1);
        let between: Vec<_> = (2..AHEAD_SPAN + 2)
            .map(|s| Arc::new(rec(s, s - 1)))
            .collect();
        assert!(overtaken(&r, &between));
        let r = rec(4, 1);
        assert!(overtaken(&r, &[Arc::new(rec(2, 1))]));
    }
}
