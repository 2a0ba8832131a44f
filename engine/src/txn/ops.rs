//! What a transaction records and how it replays: its options, the
//! catalog's tree metadata, the operations of its op log and the ranges of
//! its read set, cursors, and one operation applied to a view (used at first
//! and again by a merge).

use crate::error::{Error, Result};
use crate::ids::NodeId;
use crate::tree::btree;
use crate::tree::View;
use crate::tree::{Node, Value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::ops::{Bound, RangeBounds};
use std::time::Duration;

/// The catalog tree's name: it maps tree names to their metadata.
pub(crate) const CATALOG: &str = "";

/// Read-only or read-write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxMode {
    /// Sees a snapshot; commits nothing; never conflicts.
    ReadOnly,
    /// Buffers writes; validates and commits at `commit`.
    ReadWrite,
}

/// Options of one transaction.
#[derive(Clone, Copy, Debug)]
pub struct TxOptions {
    /// Read-only or read-write.
    pub mode: TxMode,
    /// Time limit from `begin` to the end of `commit`.
    pub timeout: Duration,
    /// Make the commit durable (fsync) before `commit` returns.
    pub sync: bool,
}

/// Shape of a B-tree, fixed when it is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeConfig {
    /// Maximum entries per leaf and children per internal node (at least 4).
    pub slots: u32,
    /// Values longer than this live in their own blobs.
    pub inline_max: u32,
}

impl Default for TreeConfig {
    fn default() -> Self {
        TreeConfig {
            slots: 64,
            inline_max: 512,
        }
    }
}

/// A tree's catalog entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TreeMeta {
    pub root: NodeId,
    pub config: TreeConfig,
}

impl TreeMeta {
    pub(crate) const CATALOG: TreeMeta = TreeMeta {
        root: NodeId::CATALOG_ROOT,
        config: TreeConfig {
            slots: 64,
            inline_max: 4096,
        },
    };
}

/// A buffered key-level change, replayed onto a fresher state when merging.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    EnsureTree {
        name: String,
        meta: TreeMeta,
    },
    CreateTree {
        name: String,
        meta: TreeMeta,
    },
    DropTree {
        name: String,
    },
    Put {
        tree: String,
        key: Vec<u8>,
        value: Value,
    },
    Remove {
        tree: String,
        key: Vec<u8>,
    },
}

/// A key range as scanned: (lower, upper) bounds.
pub(crate) type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

#[derive(Default, Debug)]
pub(crate) struct ReadSet {
    pub points: BTreeSet<Vec<u8>>,
    pub ranges: Vec<KeyRange>,
}

impl ReadSet {
    pub fn covers(&self, key: &[u8]) -> bool {
        self.points.contains(key) || self.ranges.iter().any(|(lo, hi)| in_range(key, lo, hi))
    }
}

pub(crate) use crate::log::in_range;

/// Direction of a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// Ascending keys.
    Forward,
    /// Descending keys.
    Backward,
}

/// A resumable position in a range scan: plain data, so a scan can continue in
/// a later transaction (it then sees that transaction's snapshot).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub(super) lo: Bound<Vec<u8>>,
    pub(super) hi: Bound<Vec<u8>>,
    pub(super) direction: Direction,
    pub(super) done: bool,
}

impl Cursor {
    /// A cursor over `range` in `direction`.
    pub fn new<R: RangeBounds<Vec<u8>>>(range: R, direction: Direction) -> Self {
        Cursor {
            lo: range.start_bound().cloned(),
            hi: range.end_bound().cloned(),
            direction,
            done: false,
        }
    }

    /// A cursor over every key starting with `prefix`.
    pub fn prefix(prefix: &[u8], direction: Direction) -> Self {
        let lo = Bound::Included(prefix.to_vec());
        let hi = prefix_end(prefix).map_or(Bound::Unbounded, Bound::Excluded);
        Cursor {
            lo,
            hi,
            direction,
            done: false,
        }
    }

    /// True once the range is exhausted.
    pub fn is_done(&self) -> bool {
        self.done
    }
}

fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The catalog entry of `name`, read through this view .
pub(crate) fn lookup_meta(view: &View, name: &str) -> Result<Option<TreeMeta>> {
    if name == CATALOG {
        return Ok(Some(TreeMeta::CATALOG));
    }
    let decode = |bytes: &[u8]| {
        postcard::from_bytes(bytes).map_err(|e| Error::Corrupted {
            what: "catalog entry",
            path: name.to_string(),
            detail: e.to_string(),
        })
    };
    if let Some(bytes) = view.known_tree(name) {
        return decode(&bytes).map(Some);
    }
    match btree::get(view, NodeId::CATALOG_ROOT, name.as_bytes())? {
        Some(Value::Inline(bytes)) => {
            let meta = decode(&bytes)?;
            view.remember_tree(name, &bytes);
            Ok(Some(meta))
        }
        Some(Value::External { .. } | Value::Slice { .. }) => Err(Error::Corrupted {
            what: "catalog entry",
            path: name.to_string(),
            detail: "stored out of line".into(),
        }),
        None => Ok(None),
    }
}

/// Replays `ops` onto `view`, a newer state than the one they were logged
/// on, after validation passed; returns the trees an `EnsureTree` created.
/// A failed precondition there means a change validation could not see:
/// it is reported as a conflict, to retry.
pub(crate) fn replay_ops(view: &mut View, ops: &[Op]) -> Result<Vec<String>> {
    let mut created = Vec::new();
    for op in ops {
        match apply_op(view, op) {
            Ok(true) => {
                if let Op::EnsureTree { name, .. } = op {
                    created.push(name.clone());
                }
            }
            Ok(false) => {}
            Err(e @ (Error::TreeNotFound(_) | Error::TreeExists(_))) => {
                return Err(Error::conflict(CATALOG, e.to_string()))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(created)
}

/// Applies one op to a view. Returns true when an `EnsureTree` created the tree.
pub(crate) fn apply_op(view: &mut View, op: &Op) -> Result<bool> {
    let catalog_put = |view: &mut View, name: &str, meta: &TreeMeta| -> Result<()> {
        let bytes = postcard::to_stdvec(meta).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        view.set(meta.root, Node::empty_leaf());
        btree::put(
            view,
            NodeId::CATALOG_ROOT,
            name.as_bytes(),
            &Value::Inline(bytes),
            TreeMeta::CATALOG.config.slots as usize,
        )?;
        Ok(())
    };
    let existing = |view: &View, name: &str| -> Result<TreeMeta> {
        lookup_meta(view, name)?.ok_or_else(|| Error::TreeNotFound(name.to_string()))
    };
    match op {
        Op::EnsureTree { name, meta } => {
            if lookup_meta(view, name)?.is_some() {
                return Ok(false);
            }
            view.created.insert(meta.root);
            catalog_put(view, name, meta)?;
            Ok(true)
        }
        Op::CreateTree { name, meta } => {
            if lookup_meta(view, name)?.is_some() {
                return Err(Error::TreeExists(name.clone()));
            }
            view.created.insert(meta.root);
            catalog_put(view, name, meta)?;
            Ok(false)
        }
        Op::DropTree { name } => {
            let meta = existing(view, name)?;
            view.forget_tree(name);
            let mut nodes = Vec::new();
            btree::collect_nodes(view, meta.root, &mut nodes)?;
            for n in nodes {
                view.free(n);
            }
            btree::remove(
                view,
                NodeId::CATALOG_ROOT,
                name.as_bytes(),
                TreeMeta::CATALOG.config.slots as usize,
            )?;
            Ok(false)
        }
        Op::Put { tree, key, value } => {
            let meta = existing(view, tree)?;
            btree::put(view, meta.root, key, value, meta.config.slots as usize)?;
            Ok(false)
        }
        Op::Remove { tree, key } => {
            let meta = existing(view, tree)?;
            btree::remove(view, meta.root, key, meta.config.slots as usize)?;
            Ok(false)
        }
    }
}
