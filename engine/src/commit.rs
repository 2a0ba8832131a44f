//! The commit protocol.
//!
//! 1. Catch up with the log; validate this transaction's reads and writes
//!    key by key against every record committed since its snapshot; if the
//!    state moved, replay its operations onto the newest state (the in-flight
//!    merge). Lock the nodes the result changes (sorted, with a TTL) and check
//!    again that nobody changed them meanwhile.
//! 2. Write the intent record (the blobs about to be written), the value and
//!    node blobs, then create `log/<seq>` if absent: the commit point. Losing
//!    that race to a commit on other nodes just moves to the next seq;
//!    losing it to a commit on the same nodes goes back to step 1.
//! 3. Fold the record into the registry, unlock, delete the intent.

use crate::codec::{self, Kind};
use crate::coordinator::LockOutcome;
use crate::db::DbInner;
use crate::error::{Error, Result};
use crate::ids::{BlobId, NodeId, TxId};
use crate::recovery::Intent;
use crate::registry::{now_ms, CommitRecord, NodeChange, PackedNode, PackedValue, TreeWrites};
use crate::store::{blob_path, intent_path};
use crate::tx::{apply_op, Op, Transaction, TxMode, CATALOG};
use crate::view::View;
use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Node bytes one commit record carries at most; the rest of a big commit's
/// nodes are written as blobs of their own.
const PACK_MAX: usize = 512 * 1024;
/// Values up to this size travel inside the record:
/// one whole file chunk of sopfs, so a file up to a few chunks costs no
/// blob, and so no blob to make durable before its record (one journal
/// commit per file at close, which halved 128 KiB creates when the limit
/// was 64 KiB). GC writes the live ones out before it trims the record.
const PACK_VALUE_MAX: usize = 256 * 1024;
/// At most this many bytes of values in one record.
const PACK_VALUES_MAX: usize = 1024 * 1024;

/// What a successful commit did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// Log position of the commit (the snapshot's for a commit with no writes).
    pub seq: u64,
    /// True when other commits landed since the snapshot and this one's
    /// changes were merged onto them.
    pub merged: bool,
}

/// Unlocks on every exit path.
struct Locks {
    db: Arc<DbInner>,
    owner: TxId,
    keys: Vec<u64>,
}

impl Locks {
    fn release(&mut self) {
        if !self.keys.is_empty() {
            self.db.coord.unlock(&self.keys, self.owner);
            self.keys.clear();
        }
    }
}

impl Drop for Locks {
    fn drop(&mut self) {
        self.release();
    }
}

/// Raises `Conflict` if any record touches a key this transaction read or wrote.
fn validate(tx: &Transaction, records: &[Arc<CommitRecord>]) -> Result<()> {
    for rec in records {
        for t in &rec.replaced_trees {
            let used =
                tx.reads.contains_key(t) || tx.writes.contains_key(t) || tx.ensured.contains(t);
            if used && !tx.ensure_created.contains(t) {
                return Err(Error::conflict(
                    t,
                    "tree was created or dropped by another commit",
                ));
            }
        }
        for w in &rec.writes {
            let reads = tx.reads.get(&w.tree);
            let writes = tx.writes.get(&w.tree);
            if reads.is_none() && writes.is_none() {
                continue;
            }
            for k in &w.keys {
                if reads.is_some_and(|r| r.covers(k)) {
                    return Err(Error::conflict(&w.tree, "a key it read was changed"));
                }
                if writes.is_some_and(|s| s.contains(k)) {
                    return Err(Error::conflict(&w.tree, "a key it wrote was written"));
                }
            }
        }
    }
    Ok(())
}

/// Replays the transaction's operations onto `view` (a fresher snapshot).
fn replay(tx: &mut Transaction, mut view: View) -> Result<()> {
    let mut ensure_created = BTreeSet::new();
    for op in &tx.ops {
        match apply_op(&mut view, op) {
            Ok(true) => {
                if let Op::EnsureTree { name, .. } = op {
                    ensure_created.insert(name.clone());
                }
            }
            Ok(false) => {}
            // Validation passed, so a failed precondition means a change it
            // could not see: report it as a conflict to retry.
            Err(e @ (Error::TreeNotFound(_) | Error::TreeExists(_))) => {
                return Err(Error::conflict(CATALOG, e.to_string()))
            }
            Err(e) => return Err(e),
        }
    }
    tx.view = view;
    tx.ensure_created = ensure_created;
    tx.metas.clear();
    Ok(())
}

fn record_writes(tx: &Transaction) -> (Vec<TreeWrites>, Vec<String>) {
    let mut writes = tx.writes.clone();
    let mut replaced = Vec::new();
    for op in &tx.ops {
        match op {
            Op::CreateTree { name, .. } | Op::DropTree { name } => replaced.push(name.clone()),
            Op::EnsureTree { name, .. } if tx.ensure_created.contains(name) => {
                writes
                    .entry(CATALOG.to_string())
                    .or_default()
                    .insert(name.as_bytes().to_vec());
            }
            _ => {}
        }
    }
    replaced.sort();
    replaced.dedup();
    let writes = writes
        .into_iter()
        .map(|(tree, keys)| TreeWrites {
            tree,
            keys: keys.into_iter().collect(),
        })
        .collect();
    (writes, replaced)
}

/// Deletes blobs of an attempt that will not commit (best effort: GC is the backstop).
/// Blobs of one commit attempt, registered as in flight until it ends.
struct InFlight<'a> {
    db: &'a DbInner,
    ids: Vec<BlobId>,
}

impl<'a> InFlight<'a> {
    fn new(db: &'a DbInner, ids: Vec<BlobId>) -> Self {
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

fn discard(tx: &Transaction, blobs: &[BlobId]) {
    for b in blobs {
        if let Err(e) = tx.db.loader.store.delete(&blob_path(*b)) {
            tracing::warn!(error = %e, "could not delete an uncommitted blob; GC will");
        }
    }
}

/// Crash-test hook, read once from `SOPFS_TEST_PAUSE_COMMIT=before|after:SECONDS:FILE`:
/// the first commit of the process touches FILE and sleeps, holding its locks,
/// just before (or after) its commit point, so a test can SIGKILL it there.
fn test_pause(at_commit_point_before: bool) {
    static HOOK: std::sync::OnceLock<Option<(bool, u64, String)>> = std::sync::OnceLock::new();
    static FIRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let hook = HOOK.get_or_init(|| {
        let v = std::env::var("SOPFS_TEST_PAUSE_COMMIT").ok()?;
        let mut parts = v.splitn(3, ':');
        let when = parts.next()? == "before";
        let secs = parts.next()?.parse().ok()?;
        Some((when, secs, parts.next()?.to_string()))
    });
    if let Some((before, secs, file)) = hook {
        if *before == at_commit_point_before && !FIRED.swap(true, Ordering::SeqCst) {
            let _ = std::fs::write(file, b"paused");
            std::thread::sleep(std::time::Duration::from_secs(*secs));
        }
    }
}

pub(crate) fn commit(tx: &mut Transaction) -> Result<CommitInfo> {
    // Nothing changed (only reads, or `ensure_tree` of an existing tree): the
    // snapshot it read is its serialization point; there is nothing to write.
    let unchanged = tx.view.dirty.is_empty() && tx.view.freed.is_empty();
    if tx.opts.mode == TxMode::ReadOnly || tx.ops.is_empty() || unchanged {
        return Ok(CommitInfo {
            seq: tx.view.base.seq,
            merged: false,
        });
    }
    let db = tx.db.clone();
    let txid = tx.id;
    // Every staged value must be in the store before the intent names it.
    tx.wait_staged()?;
    let mut value_ids: Vec<BlobId> = tx.values.keys().copied().collect();
    value_ids.extend(&tx.staged);
    let result = commit_inner(tx, &value_ids);
    match &result {
        Ok(info) => {
            db.own_commits.lock().put(txid, ());
            db.stats.commits.fetch_add(1, Ordering::Relaxed);
            if info.merged {
                db.stats.merges.fetch_add(1, Ordering::Relaxed);
            }
        }
        Err(e) if tx.landed => {
            // Committed, but something after the commit point failed (fsync):
            // report it, discard nothing.
            tracing::error!(tx = %tx.id, error = %e, "failure after the commit point");
        }
        Err(e) => {
            if e.is_retryable() {
                db.stats.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            discard(tx, &value_ids);
            if tx.intent_written {
                let _ = db.loader.store.delete(&intent_path(tx.id));
            }
        }
    }
    result
}

fn commit_inner(tx: &mut Transaction, value_ids: &[BlobId]) -> Result<CommitInfo> {
    let db = tx.db.clone();
    let shared = db.coord.is_shared();
    let mut merged = false;
    // Value blobs are written once and reused by every attempt: in flight
    // for the whole commit.
    let _values_inflight = InFlight::new(&db, value_ids.to_vec());
    'attempt: loop {
        tx.check_deadline()?;
        // Phase 1: validate, merge, lock. The snapshot was fresh at `begin`
        // (the stamp, in cluster mode); what landed since is learned below,
        // from the stamp that comes back with the locks, or at the commit
        // point for a commit that takes none.
        let latest = db.registry.catch_up(false)?;
        if latest.seq > tx.view.base.seq {
            validate(tx, &db.registry.records(tx.view.base.seq, latest.seq)?)?;
            replay(tx, View::new(latest.clone(), db.loader.clone()))?;
            merged = true;
        }
        let touched: Vec<NodeId> = tx.view.touched();
        // Small values travel inside the record, beside the leaves that name
        // them ("here": the leaf's own record, whatever seq it lands at),
        // instead of each becoming an object. Only leaves the record carries
        // can say "here": a leaf written as a blob of its own cannot know
        // the seq yet. Sizes are the same either way (a tag byte changes).
        let mut ids: Vec<NodeId> = tx.view.dirty.keys().copied().collect();
        ids.sort_unstable();
        let mut carried = HashSet::new();
        let mut carried_bytes = 0;
        for id in ids {
            let len = tx.view.dirty.get(&id).map_or(0, |n| n.encoded_len());
            if carried_bytes + len <= PACK_MAX {
                carried_bytes += len;
                carried.insert(id);
            }
        }
        let mut packed_ids: HashSet<BlobId> = HashSet::new();
        let mut budget = PACK_VALUES_MAX;
        for (id, data) in &tx.values {
            if data.len() <= PACK_VALUE_MAX && data.len() <= budget {
                budget -= data.len();
                packed_ids.insert(*id);
            }
        }
        if !packed_ids.is_empty() {
            packed_ids = tx.view.pack_values_here(&packed_ids, &carried);
        }

        // A commit that writes no blob (its nodes and values all travel in
        // its record) takes no locks: the commit point alone decides races,
        // and losing one costs re-encoding one record, less than the round
        // trips locks take. Locks are for commits with blobs to write first,
        // and with an intent a peer must be able to recover.
        let writes_blobs = carried.len() < tx.view.dirty.len()
            || value_ids.iter().any(|b| !packed_ids.contains(b));
        let mut locks = Locks {
            db: db.clone(),
            owner: tx.id,
            keys: if writes_blobs {
                touched.iter().map(|n| n.0).collect()
            } else {
                Vec::new()
            },
        };
        let ttl = db.opts.lock_ttl;
        let mut locked_at = std::time::Instant::now();
        let outcome = if locks.keys.is_empty() {
            Ok(LockOutcome::default())
        } else {
            db.coord.lock(&locks.keys, tx.id, ttl, tx.deadline())
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                locks.keys.clear();
                return Err(e);
            }
        };
        for owner in outcome.expired_owners {
            crate::recovery::recover_owner(&db, owner);
        }
        // Cluster mode: read the store only if the stamp is ahead of us (or
        // missing). A commit that landed but has not raised the stamp yet is
        // met at the commit point: creating its log slot fails, and we catch
        // up and validate there.
        let local = db.registry.current().seq;
        // A lock-free commit has no stamp and asks nothing: its commit point
        // is the check. On a local folder the stamp may lag (lock-free
        // commits announce theirs late) and the log is cheap to ask.
        let probe = shared
            && writes_blobs
            && (db.loader.store.probe_is_cheap() || outcome.stamp.is_none_or(|s| s > local));
        let now = db.registry.catch_up(probe)?;
        let mut base_seq = tx.view.base.seq;
        if now.seq > base_seq {
            let recs = db.registry.records(base_seq, now.seq)?;
            validate(tx, &recs)?;
            if recs.iter().any(|r| r.touches(&touched)) {
                // Someone changed our nodes before we locked them: merge again.
                continue 'attempt;
            }
            base_seq = now.seq;
        }

        // Phase 2: intent, blobs, commit point. Changed nodes travel inside
        // the record up to PACK_MAX bytes (one object write for a small
        // commit); beyond that, as blobs of their own.
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
            let pack = carried.contains(*id);
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
            .filter(|b| !packed_ids.contains(b))
            .copied()
            .collect();
        all_blobs.extend(&node_ids);
        let store = &db.loader.store;
        let intent = Intent {
            txid: tx.id,
            time_ms: now_ms(),
            deadline_ms: now_ms()
                + tx.deadline()
                    .saturating_duration_since(std::time::Instant::now())
                    .as_millis() as u64,
            base_seq,
            blobs: all_blobs.clone(),
        };
        // In-process GC sees the set; other processes' GC and recovery (of a
        // peer whose locks expired) need the intent. Embedded mode has no
        // peers: a crash there leaves unreferenced blobs for GC instead.
        let _nodes_inflight = InFlight::new(&db, node_ids.clone());
        // A commit that writes no blob (its nodes all travel in the record)
        // leaves nothing for GC to protect or for recovery to clean up.
        if shared && !all_blobs.is_empty() {
            store.put(&intent_path(tx.id), codec::encode(Kind::Intent, &intent))?;
            tx.intent_written = true;
        }
        // Value blobs are written once, on the first attempt that gets here.
        // Long commits (many blobs, a slow store) keep their locks alive.
        let mut keep_locks = || -> Result<()> {
            if locked_at.elapsed() > ttl / 2 {
                db.coord.renew(&locks.keys, tx.id, ttl)?;
                locked_at = std::time::Instant::now();
            }
            Ok(())
        };
        // Packed values stay in `tx.values` until the record is built: an
        // attempt that starts over packs them again under its new seq.
        let mut values = Vec::new();
        for (id, data) in tx.values.iter() {
            if packed_ids.contains(id) {
                continue;
            }
            store.put_fresh(&blob_path(*id), codec::frame_value(data))?;
            values.push(*id);
            keep_locks()?;
        }
        for id in values {
            tx.values.remove(&id);
        }
        let mut paths = Vec::new();
        for (blob, data) in node_blobs.iter() {
            let path = blob_path(*blob);
            store.put_fresh(&path, data.clone())?;
            paths.push(path);
            keep_locks()?;
        }
        // Every blob the record names is durable before the record is
        // written, sync or not: a power cut may drop commits that were never
        // synced (the log keeps a prefix), but it never leaves a record
        // whose blobs are gone. Commits whose values and nodes all travel in
        // the record (small files) have nothing to wait for here.
        paths.extend(
            value_ids
                .iter()
                .filter(|b| !packed_ids.contains(b))
                .map(|b| blob_path(*b)),
        );
        paths.extend(tx.stashed.iter().map(|(_, b)| blob_path(*b)));
        if !paths.is_empty() {
            store.sync(&paths)?;
        }
        let (writes, replaced_trees) = record_writes(tx);
        // Threads of this process take turns for the log slot; only other
        // processes can collide with us below.
        let serial = db.commit_serial.lock();
        let now = db.registry.catch_up(false)?;
        if now.seq > base_seq {
            let recs = db.registry.records(base_seq, now.seq)?;
            if let Err(e) = validate(tx, &recs) {
                discard(tx, &node_ids);
                return Err(e);
            }
            if recs.iter().any(|r| r.touches(&touched)) {
                drop(serial);
                discard(tx, &node_ids);
                continue 'attempt;
            }
            base_seq = now.seq;
        }
        let packed_values: Vec<PackedValue> = packed_ids
            .iter()
            .filter_map(|id| {
                tx.values.get(id).map(|body| PackedValue {
                    blob: *id,
                    body: body.clone(),
                })
            })
            .collect();
        let packed_value_bytes: usize = packed_values.iter().map(|v| v.body.len()).sum();
        let mut record = CommitRecord {
            seq: base_seq + 1,
            txid: tx.id,
            time_ms: now_ms(),
            writes,
            replaced_trees,
            nodes: changes,
            packed,
            values: packed_values,
        };
        test_pause(true);
        let log = db.registry.log();
        loop {
            // A commit past its deadline may have been rolled back by a peer.
            if let Err(e) = tx.check_deadline() {
                discard(tx, &node_ids);
                return Err(e);
            }
            let hint = packed_bytes + packed_value_bytes + 64 * record.nodes.len() + 1024;
            let frame = codec::encode_sized(Kind::Record, &record, hint);
            if log.append(record.seq, &frame)? {
                tx.landed = true;
                for (stash, id) in &tx.stashed {
                    stash.landed(*id);
                }
                if tx.opts.sync {
                    log.sync(record.seq)?;
                }
                break;
            }
            db.stats.collisions.fetch_add(1, Ordering::Relaxed);
            let now = db.registry.catch_up(true)?;
            let recs = db.registry.records(record.seq - 1, now.seq)?;
            if let Err(e) = validate(tx, &recs) {
                discard(tx, &node_ids);
                return Err(e);
            }
            if recs.iter().any(|r| r.touches(&touched)) {
                // Our locks were not respected (expired, or a peer without them):
                // the store caught it. Redo the merge.
                tracing::warn!(tx = %tx.id, "nodes changed under our locks; merging again");
                discard(tx, &node_ids);
                continue 'attempt;
            }
            record.seq = now.seq + 1;
        }
        test_pause(false);
        let seq = record.seq;
        // The registry keeps records without node bodies; this process has
        // the nodes themselves (cached below), and its packed values.
        record.packed = Vec::new();
        for v in std::mem::take(&mut record.values) {
            tx.values.remove(&v.blob);
            db.loader.values.insert(v.blob, Arc::new(v.body));
        }
        if let Err(e) = db.registry.publish(Arc::new(record)) {
            // The record is in the log: every reader, this process's next
            // catch-up included, will fold it in. Nothing to undo.
            tracing::warn!(tx = %tx.id, error = %e, "could not fold a landed commit in yet");
        }
        drop(serial);
        if locks.keys.is_empty() {
            // Where the store is cheap to probe, readers that must be exact
            // probe it; the stamp only spares the others a probe, so it can
            // go out after the commit returns.
            if store.probe_is_cheap() {
                db.coord.publish_stamp_soon(seq);
            } else {
                db.coord.publish_stamp(seq);
            }
        } else {
            db.coord.release(&locks.keys, tx.id, seq);
            locks.keys.clear();
        }
        for (blob, node) in fresh {
            // As a reader of the record will see it: "here" names `seq`.
            db.loader.cache.insert(blob, node.resolved(seq));
        }
        if tx.intent_written {
            // Off the commit's path: the commit is done, and an intent whose
            // record landed is harmless (recovery deletes it if this never runs).
            let (store, path) = (db.loader.store.clone(), intent_path(tx.id));
            crate::stager::background(
                &db.cleanups,
                Box::new(move || {
                    if let Err(e) = store.delete(&path) {
                        tracing::warn!(error = %e, "could not delete an intent record; recovery will");
                    }
                }),
            );
        }
        if let Err(e) = db.registry.maybe_checkpoint(db.opts.checkpoint_every) {
            tracing::warn!(error = %e, "checkpoint failed; the log still holds everything");
        }
        return Ok(CommitInfo { seq, merged });
    }
}

/// Used by recovery: true if `txid` committed in `(after, upto]`.
pub(crate) fn committed_between(db: &DbInner, txid: TxId, after: u64, upto: u64) -> Result<bool> {
    Ok(db
        .registry
        .records(after, upto)?
        .iter()
        .any(|r| r.txid == txid))
}
