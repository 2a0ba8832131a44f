//! Phase 4 of a commit, write ahead: what must be durable before the
//! record that names it, and the bookkeeping of blobs in flight.

use super::{Locks, Plan};
use crate::codec::{self, Kind};
use crate::ctx::DbInner;
use crate::error::Result;
use crate::ids::BlobId;
use crate::log::{now_ms, NodeChange, PackedNode};
use crate::store::{blob_path, intent_path};
use crate::txn::recovery::Intent;
use crate::txn::stager;
use crate::txn::tx::Transaction;
use std::sync::Arc;

/// Blobs of one commit attempt, registered as in flight until it ends.
pub(super) struct InFlight<'a> {
    db: &'a DbInner,
    ids: Vec<BlobId>,
}

impl<'a> InFlight<'a> {
    pub(super) fn new(db: &'a DbInner, ids: Vec<BlobId>) -> Self {
        db.inflight.lock().extend(ids.iter().copied());
        InFlight { db, ids }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut set = self.db.inflight.lock();
        for id in &self.ids {
            set.remove(id);
        }
    }
}

/// Deletes blobs of an attempt that did not land, off the caller's path.
pub(super) fn discard(tx: &Transaction, blobs: &[BlobId]) {
    if blobs.is_empty() {
        return;
    }
    let (store, blobs) = (tx.db.loader.store.clone(), blobs.to_vec());
    stager::cleanup(
        &tx.db.cleanups,
        !tx.db.loader.store.probe_is_cheap(),
        Box::new(move || {
            for b in blobs {
                if let Err(e) = store.delete(&blob_path(b)) {
                    tracing::warn!(error = %e, "could not delete an uncommitted blob; GC will");
                }
            }
        }),
    );
}

/// The parts of the record that phase 4 prepared.
pub(super) struct RecordParts {
    /// Node blobs written ahead (deleted if the attempt does not land).
    pub(super) node_ids: Vec<BlobId>,
    /// Nodes the record carries.
    pub(super) packed: Vec<PackedNode>,
    pub(super) packed_bytes: usize,
    /// Node changes, carried or not.
    pub(super) changes: Vec<NodeChange>,
}

/// What phase 4 wrote ahead of the record.
pub(super) struct Ahead<'a> {
    pub(super) parts: RecordParts,
    /// The new nodes by blob, for the cache once the record lands.
    pub(super) fresh: Vec<(BlobId, Arc<crate::tree::Node>)>,
    /// Node blobs in flight until the attempt ends.
    _inflight: InFlight<'a>,
}

/// Phase 4, write ahead: the intent (cluster mode, when blobs are written),
/// the value and node blobs, each durable before the record that names
/// them. Changed nodes travel inside the record up to PACK_MAX bytes (SEGMENT_PACK_MAX in a local folder; one
/// object write for a small commit); beyond that, as blobs of their own.
pub(super) fn write_ahead<'a>(
    tx: &mut Transaction,
    db: &'a DbInner,
    plan: &Plan,
    value_ids: &[BlobId],
    base_seq: u64,
    locks: &mut Locks,
) -> Result<Ahead<'a>> {
    let mut node_blobs = Vec::new();
    let mut packed = Vec::new();
    let mut packed_bytes = 0;
    let mut fresh = Vec::new();
    let mut changes = Vec::new();
    let mut dirty: Vec<_> = tx.view.dirty.iter().collect();
    dirty.sort_by_key(|(id, _)| **id);
    for (id, node) in &dirty {
        let blob = BlobId::fresh();
        let body = node.encode_payload();
        let pack = plan.carried.contains(*id);
        if pack {
            packed_bytes += body.len();
            packed.push(PackedNode { blob, body });
        } else {
            node_blobs.push((blob, codec::frame(Kind::Node, &body)));
        }
        fresh.push((blob, Arc::clone(*node)));
        changes.push(NodeChange {
            node: **id,
            old: tx.view.base.nodes.get(*id).map(|l| l.blob),
            new: Some(blob),
            packed: pack,
        });
    }
    for id in &tx.view.freed {
        changes.push(NodeChange {
            node: *id,
            old: tx.view.base.nodes.get(id).map(|l| l.blob),
            new: None,
            packed: false,
        });
    }
    let node_ids: Vec<BlobId> = node_blobs.iter().map(|(b, _)| *b).collect();
    // Packed values are written with the record, not before it: nothing
    // to protect or clean up.
    let mut all_blobs: Vec<BlobId> = value_ids
        .iter()
        .filter(|b| !plan.packed_values.contains(b))
        .copied()
        .collect();
    all_blobs.extend(&node_ids);
    let store = &db.loader.store;
    // In-process GC sees the set; other processes' GC and recovery (of a
    // peer whose locks expired) need the intent. Embedded mode has no
    // peers: a crash there leaves unreferenced blobs for GC instead.
    let inflight = InFlight::new(db, node_ids.clone());
    // A commit that writes no blob (its nodes all travel in the record)
    // leaves nothing for GC to protect or for recovery to clean up.
    if db.coord.is_shared() && !all_blobs.is_empty() {
        let intent = Intent {
            txid: tx.id,
            time_ms: now_ms(),
            deadline_ms: now_ms()
                + tx.deadline()
                    .saturating_duration_since(std::time::Instant::now())
                    .as_millis() as u64,
            base_seq,
            blobs: all_blobs,
        };
        store.put(&intent_path(tx.id), codec::encode(Kind::Intent, &intent))?;
        tx.intent_written = true;
    }
    // Value blobs are written once, on the first attempt that gets here.
    // Packed values stay in `tx.values` until the record is built: an
    // attempt that starts over packs them again under its new seq.
    // Values and nodes go out together (in parallel on a network store).
    let values: Vec<BlobId> = tx
        .values
        .keys()
        .filter(|id| !plan.packed_values.contains(*id))
        .copied()
        .collect();
    let mut writes: Vec<(object_store::path::Path, Vec<u8>)> = values
        .iter()
        .filter_map(|id| {
            let data = tx.values.get(id)?;
            Some((blob_path(*id), codec::frame_value(data)))
        })
        .collect();
    let mut paths: Vec<_> = node_blobs.iter().map(|(b, _)| blob_path(*b)).collect();
    writes.extend(
        node_blobs
            .into_iter()
            .map(|(blob, data)| (blob_path(blob), data)),
    );
    if !writes.is_empty() {
        store.put_fresh_all(writes)?;
        locks.keep_alive()?;
    }
    for id in values {
        tx.values.remove(&id);
    }
    // Every blob the record names is durable before the record is
    // written, sync or not: a power cut may drop commits that were never
    // synced (the log keeps a prefix), but it never leaves a record
    // whose blobs are gone. Commits whose values and nodes all travel in
    // the record (small files) have nothing to wait for here.
    paths.extend(
        value_ids
            .iter()
            .filter(|b| !plan.packed_values.contains(b))
            .map(|b| blob_path(*b)),
    );
    let stashed: std::collections::BTreeSet<BlobId> =
        tx.stashed.iter().map(|(_, v)| v.id).collect();
    paths.extend(stashed.into_iter().map(blob_path));
    if !paths.is_empty() {
        store.sync(&paths)?;
    }
    Ok(Ahead {
        parts: RecordParts {
            node_ids,
            packed,
            packed_bytes,
            changes,
        },
        fresh,
        _inflight: inflight,
    })
}
