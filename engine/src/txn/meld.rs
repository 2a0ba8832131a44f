//! Melds (`log/ahead.rs`): a record placed ahead carries the value it left
//! at every key it wrote (`KeyOp`s), and a reader that finds a node it
//! changed changed meanwhile replays those onto the state before it with
//! the B-tree code, instead of voiding it. Two hosts creating files in one
//! directory write different keys of the same leaves: both stand.
//!
//! Every reader must make the same nodes, byte for byte and id for id:
//! the replay is a function of the state (which every reader folds alike)
//! and the record, and new node and blob ids are derived from the record's
//! transaction id (`View::derived`, `ids::derive`).

use super::ops::{apply_op, lookup_meta, Op, TreeMeta, CATALOG};
use super::tx::Transaction;
use crate::error::{Error, Result};
use crate::ids::{derive, BlobId};
use crate::log::{CommitRecord, KeyOp, Melder, NodeChange, RegState};
use crate::tree::{btree, Loader, Value, View};
use std::sync::Arc;
use std::time::Duration;

/// The key ops a record placed ahead at `seq` carries for `tx`: each key it
/// wrote with what its leaf now holds there; for a tree it created or
/// dropped, its catalog key (tree `""`) with the new entry or none. Empty
/// (the record cannot be melded, and is void if its nodes go stale) when it
/// ensured a tree: whether that creates the tree depends on the state it
/// lands on.
pub(super) fn key_ops(tx: &Transaction, seq: u64) -> Result<Vec<KeyOp>> {
    if !tx.ensure_created.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (tree, keys) in &tx.writes {
        let Some(meta) = lookup_meta(&tx.view, tree)? else {
            return Ok(Vec::new());
        };
        for key in keys {
            let value = btree::get(&tx.view, meta.root, key)?
                .map(|v| encode_value(&v.in_record(seq)))
                .transpose()?;
            out.push(KeyOp {
                tree: tree.clone(),
                key: key.clone(),
                value: value.map(serde_bytes::ByteBuf::from),
            });
        }
    }
    Ok(out)
}

fn encode_value(v: &Value) -> Result<Vec<u8>> {
    postcard::to_stdvec(v).map_err(|e| Error::InvalidArgument(e.to_string()))
}

/// Replays a catalog key op as the op that wrote it: a tree created (its
/// root an empty leaf, as `create_tree` made it, before the record's keys
/// of that tree are replayed into it) or dropped (its nodes freed). False
/// when it cannot be: the name taken, or the tree gone, meanwhile (the key
/// rule voids such a record first; this keeps a reader from making a
/// second tree of one name).
fn replay_catalog_op(view: &mut View, op: &KeyOp) -> Result<bool> {
    let Ok(name) = std::str::from_utf8(&op.key) else {
        return Ok(false);
    };
    let name = name.to_string();
    let op = match &op.value {
        Some(bytes) => {
            let Ok(Value::Inline(entry)) = postcard::from_bytes::<Value>(bytes) else {
                return Ok(false);
            };
            let Ok(meta) = postcard::from_bytes::<TreeMeta>(&entry) else {
                return Ok(false);
            };
            Op::CreateTree { name, meta }
        }
        None => Op::DropTree { name },
    };
    // Both ops check the catalog before they change anything.
    match apply_op(view, &op) {
        Ok(_) => Ok(true),
        Err(Error::TreeExists(_) | Error::TreeNotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The melder of an open volume: replays through its loader, and keeps
/// the nodes it makes in the loader's `melded` until they are written out.
pub(crate) struct TreeMelder {
    loader: Arc<Loader>,
}

impl TreeMelder {
    /// A melder reading and keeping nodes through `loader`.
    pub(crate) fn new(loader: Arc<Loader>) -> Self {
        TreeMelder { loader }
    }
}

impl Melder for TreeMelder {
    fn meld(&self, state: &RegState, rec: &CommitRecord) -> Result<Option<Vec<NodeChange>>> {
        if rec.ops.is_empty() {
            return Ok(None);
        }
        let base = Arc::new(state.clone());
        let seed = rec.txid.0 ^ u128::from(rec.seq);
        let mut view = View::derived(base.clone(), self.loader.clone(), seed);
        for op in &rec.ops {
            if op.tree == CATALOG {
                if !replay_catalog_op(&mut view, op)? {
                    return Ok(None);
                }
                continue;
            }
            // A tree gone is a change the key rule saw (it was dropped):
            // never here in a record that stands, but void, not a panic.
            let Some(meta) = lookup_meta(&view, &op.tree)? else {
                return Ok(None);
            };
            let slots = meta.config.slots as usize;
            match &op.value {
                Some(bytes) => {
                    let Ok(value) = postcard::from_bytes::<Value>(bytes) else {
                        return Ok(None);
                    };
                    btree::put(&mut view, meta.root, &op.key, &value, slots)?;
                }
                None => {
                    btree::remove(&mut view, meta.root, &op.key, slots)?;
                }
            }
        }
        let mut changes = Vec::with_capacity(view.dirty.len() + view.freed.len());
        for (id, node) in view.dirty.iter() {
            let blob = BlobId(derive(rec.txid.0, id.0, rec.seq));
            self.loader.melded.keep(blob, *id, node.clone());
            changes.push(NodeChange {
                node: *id,
                old: base.nodes.get(id).map(|l| l.blob),
                new: Some(blob),
                packed: false,
            });
        }
        for id in view.freed.iter() {
            changes.push(NodeChange {
                node: *id,
                old: base.nodes.get(id).map(|l| l.blob),
                new: None,
                packed: false,
            });
        }
        changes.sort_unstable_by_key(|c| c.node);
        Ok(Some(changes))
    }

    fn materialize(&self, state: &RegState) -> Result<()> {
        let loader = &self.loader;
        if loader.store.is_read_only() {
            // It writes no checkpoint either: its nodes stay in memory.
            return Ok(());
        }
        loader
            .melded
            .write_out(&loader.store, &loader.cache, state, Duration::ZERO)
            .map(|_| ())
    }
}
