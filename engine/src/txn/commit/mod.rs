//! The commit protocol, as named phases of one attempt:
//!
//! 1. **merge**: catch up with the log; validate this transaction's reads
//!    and writes key by key against every record committed since its
//!    snapshot; if the state moved, replay its operations onto the newest
//!    state (the in-flight merge).
//! 2. **plan**: which changed nodes and small values travel inside the
//!    record, and so whether any blob is written first.
//! 3. **lock and recheck**: a commit that writes blobs locks the nodes it
//!    changes (sorted, with a TTL), then checks again that nobody changed
//!    them meanwhile.
//! 4. **write ahead**: the intent record (cluster mode: the blobs about to be
//!    written), then the value and node blobs, durable before the record.
//! 5. **append**: the record at the next log position (an object created
//!    if absent, or a frame appended to a segment in this process's turn):
//!    the commit point. Losing the position to a commit on other nodes just
//!    moves to the next one; losing it to a commit on the same nodes starts
//!    the attempt over. The record is folded into the registry.
//! 6. **publish**: the new stamp (and unlock), the new nodes into the
//!    cache, the intent deleted off the commit's path.
//!
//! Every way an attempt can start over goes through [`recheck`]'s `Again`.

mod append;
mod write_ahead;

use super::ops::{replay_ops, Op, TxMode, CATALOG};
use super::place::Queue;
use super::recovery::recover_owner;
use super::stager;
use super::tx::Transaction;
use crate::coord::LockOutcome;
use crate::ctx::DbInner;
use crate::error::{Error, Result};
use crate::ids::{BlobId, NodeId, TxId};
use crate::log::{CommitRecord, TreeWrites};
use crate::store::intent_path;
use crate::tree::View;
use append::append;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use write_ahead::{discard, write_ahead, InFlight};

/// Node bytes one record object (S3) carries at most; the rest of a big
/// commit's nodes are written as blobs of their own. Not more: another
/// host catching up GETs the whole record and caches every node it carries.
const PACK_MAX: usize = 512 * 1024;
/// Node bytes one segment frame (a local folder) carries at most. A big
/// commit (a clone, a load) then writes one frame instead of thousands of
/// node files, whose inode allocation was most of a clone's time; a reader
/// of a record past `PACK_MAX` decodes only the node it wants
/// (`Loader::load_packed`), so such a record does not flood the node cache.
const SEGMENT_PACK_MAX: usize = 32 << 20;
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

/// The scent locks of one attempt; unlocks on every exit path.
struct Locks {
    db: Arc<DbInner>,
    owner: TxId,
    keys: Vec<u64>,
    /// When they were taken or last renewed.
    locked_at: std::time::Instant,
}

impl Locks {
    /// Renews the locks once half their TTL has passed: long commits (many
    /// blobs, a slow store) keep them alive.
    fn keep_alive(&mut self) -> Result<()> {
        let ttl = self.db.opts.lock_ttl;
        if !self.keys.is_empty() && self.locked_at.elapsed() > ttl / 2 {
            self.db.coord.renew(&self.keys, self.owner, ttl)?;
            self.locked_at = std::time::Instant::now();
        }
        Ok(())
    }

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
pub(super) fn validate(tx: &Transaction, records: &[Arc<CommitRecord>]) -> Result<()> {
    // A void record (placed ahead and overtaken) changed nothing; one read
    // back from the store undecided counts as landed: at worst a retry.
    for rec in records.iter().filter(|r| !r.void) {
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
    let created = replay_ops(&mut view, &tx.ops)?;
    tx.view = view;
    tx.ensure_created = created.into_iter().collect();
    tx.metas.clear();
    Ok(())
}

pub(super) fn record_writes(tx: &Transaction) -> (Vec<TreeWrites>, Vec<String>) {
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

/// Test hooks of the commit path, compiled in only with the `test-hooks`
/// feature (the engine's own test suites turn it on).
mod hooks {
    #[cfg(feature = "test-hooks")]
    use std::sync::atomic::Ordering;

    /// Crash-test hook, read once from `SOPFS_TEST_PAUSE_COMMIT=before|after:SECONDS:FILE`:
    /// the first commit of the process touches FILE and sleeps, holding its locks,
    /// just before (or after) its commit point, so a test can SIGKILL it there.
    #[cfg(feature = "test-hooks")]
    pub(super) fn pause(at_commit_point_before: bool) {
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

    /// Without the feature the hook is nothing.
    #[cfg(not(feature = "test-hooks"))]
    pub(super) fn pause(_at_commit_point_before: bool) {}
}

impl Transaction {
    /// Validates and commits; see the module comment for the protocol. On a
    /// store where a commit costs a round trip, a small transaction may go
    /// out in one record with others of this process (`group.rs`).
    pub fn commit(mut self) -> Result<CommitInfo> {
        match self.group.take() {
            Some(group) if super::group::eligible(&self) => group.commit(self),
            _ => {
                let info = commit_one(&mut self);
                self.shed_after_commit();
                info
            }
        }
    }
}

/// Commits one transaction (which may be a group's).
pub(super) fn commit_one(tx: &mut Transaction) -> Result<CommitInfo> {
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
                // Whatever order the deletes run in, what is left is garbage
                // GC takes: nothing names these blobs.
                let (store, path) = (db.loader.store.clone(), intent_path(tx.id));
                stager::cleanup(
                    &db.cleanups,
                    !db.loader.store.probe_is_cheap(),
                    Box::new(move || {
                        let _ = store.delete(&path);
                    }),
                );
            }
        }
    }
    result
}

/// The commit loop: each attempt merges onto the newest state, plans what
/// it will write, locks, writes ahead and appends; an attempt that finds
/// its nodes changed by another commit meanwhile starts over from the merge.
fn commit_inner(tx: &mut Transaction, value_ids: &[BlobId]) -> Result<CommitInfo> {
    let db = tx.db.clone();
    let mut merged = false;
    // Value blobs are written once and reused by every attempt: in flight
    // for the whole commit.
    let _values_inflight = InFlight::new(&db, value_ids.to_vec());
    // An attempt sent back once holds this process's commit turn from its
    // merge to its record: a transaction that touches many nodes (a clone,
    // a big file's chunks) is otherwise sent back again by every small
    // commit of other threads that lands while it merges and writes ahead,
    // and it starves until its deadline.
    let mut turn: Option<parking_lot::MutexGuard<'_, ()>> = None;
    let mut sent_back = false;
    // A place in the log's queue is kept across attempts: an attempt sent
    // back by a record that landed before its place merges again and
    // keeps its turn, instead of queueing behind the others once more.
    let mut queue = Queue::for_commit(tx);
    let mut first = true;
    loop {
        tx.check_deadline()?;
        if sent_back && turn.is_none() {
            turn = Some(db.commit_serial.lock());
        }
        sent_back = true;
        merged |= merge(tx)?;
        let plan = plan(tx, value_ids);
        let (mut locks, base_seq) = match lock_and_recheck(tx, &plan, turn.is_some())? {
            Step::Go(v) => v,
            Step::Again => continue,
            Step::YieldTurn => {
                // A thread holding locks we need waits for the turn: let
                // it have it, and take it back for the next attempt.
                if let Some(t) = turn.take() {
                    parking_lot::MutexGuard::unlock_fair(t);
                }
                continue;
            }
        };
        let ahead = write_ahead(tx, &db, &plan, value_ids, base_seq, &mut locks)?;
        // Only a first attempt with nothing to undo goes ahead (`ahead.rs`).
        let try_ahead = first
            && turn.is_none()
            && !plan.writes_blobs
            && tx.stashed.is_empty()
            && db.ahead_credit.allows();
        first = false;
        let seq = match append(
            tx,
            &plan,
            ahead.parts,
            base_seq,
            turn.is_some(),
            queue.as_mut(),
            try_ahead,
        )? {
            Step::Go(seq) => seq,
            Step::Again | Step::YieldTurn => continue,
        };
        drop(turn);
        return Ok(publish(tx, seq, ahead.fresh, locks, merged));
    }
}

/// How a phase of one attempt ended: go on with its result, or start the
/// attempt over (another commit changed this one's nodes).
pub(super) enum Step<T> {
    Go(T),
    Again,
    /// Start over, and give up this process's commit turn first.
    YieldTurn,
}

/// Phase 1, merge: catches up with the log and, if the state moved since the
/// snapshot, validates this transaction against what landed and replays its
/// operations onto the newest state. The snapshot was fresh at `begin` (the
/// stamp, in cluster mode); what lands later is met at the lock or at the
/// commit point. True when it merged.
fn merge(tx: &mut Transaction) -> Result<bool> {
    let db = tx.db.clone();
    let latest = db.registry.catch_up(false)?;
    if latest.seq <= tx.view.base.seq {
        return Ok(false);
    }
    validate(tx, &db.registry.records(tx.view.base.seq, latest.seq)?)?;
    replay(tx, View::new(latest.clone(), db.loader.clone()))?;
    Ok(true)
}

/// What one attempt will write, decided before it writes anything.
struct Plan {
    /// Nodes it changes or frees: what its locks cover.
    touched: Vec<NodeId>,
    /// Changed nodes that travel inside the record.
    carried: HashSet<NodeId>,
    /// Values that travel inside the record.
    packed_values: HashSet<BlobId>,
    /// Some node or value is a blob of its own, written before the record.
    writes_blobs: bool,
}

/// Phase 2, plan: which nodes and values travel inside the record. Small
/// values travel beside the leaves that name them ("here": the leaf's own
/// record, whatever seq it lands at) instead of each becoming an object.
/// Only leaves the record carries can say "here": a leaf written as a blob
/// of its own cannot know the seq yet. Sizes are the same either way (a tag
/// byte changes).
fn plan(tx: &mut Transaction, value_ids: &[BlobId]) -> Plan {
    let touched: Vec<NodeId> = tx.view.touched();
    let mut ids: Vec<NodeId> = tx.view.dirty.keys().copied().collect();
    ids.sort_unstable();
    let mut carried = HashSet::new();
    let mut carried_bytes = 0;
    let pack_max = if tx.db.loader.log.holds_segments() {
        SEGMENT_PACK_MAX
    } else {
        PACK_MAX
    };
    for id in ids {
        let len = tx.view.dirty.get(&id).map_or(0, |n| n.encoded_len());
        if carried_bytes + len <= pack_max {
            carried_bytes += len;
            carried.insert(id);
        }
    }
    let mut packed_values: HashSet<BlobId> = HashSet::new();
    let mut budget = PACK_VALUES_MAX;
    for (id, data) in &tx.values {
        if data.len() <= PACK_VALUE_MAX && data.len() <= budget {
            budget -= data.len();
            packed_values.insert(*id);
        }
    }
    if !packed_values.is_empty() {
        packed_values = tx.view.pack_values_here(&packed_values, &carried);
    }
    let writes_blobs =
        carried.len() < tx.view.dirty.len() || value_ids.iter().any(|b| !packed_values.contains(b));
    Plan {
        touched,
        carried,
        packed_values,
        writes_blobs,
    }
}

/// Validates this transaction against the records in `(from, newest]`:
/// `Go(newest)` when none touched its nodes, `Again` when one did (the
/// merge must be redone), a conflict when one touched its keys.
fn recheck(tx: &Transaction, from: u64, probe: bool, touched: &[NodeId]) -> Result<Step<u64>> {
    let now = tx.db.registry.catch_up(probe)?.seq;
    validate_since(tx, from, now, touched)
}

/// `recheck` when the log is known to reach `newest` (a coordinator's
/// stamp): the records up to it are read together, and none past it.
pub(super) fn recheck_through(
    tx: &Transaction,
    from: u64,
    newest: u64,
    touched: &[NodeId],
) -> Result<Step<u64>> {
    let now = tx.db.registry.catch_up_through(newest)?.seq;
    validate_since(tx, from, now, touched)
}

/// Validates against the records in `(from, now]`, all folded in already.
fn validate_since(tx: &Transaction, from: u64, now: u64, touched: &[NodeId]) -> Result<Step<u64>> {
    let db = &tx.db;
    if now <= from {
        return Ok(Step::Go(from));
    }
    let recs = db.registry.records(from, now)?;
    validate(tx, &recs)?;
    // Whether our nodes are still the versions we built on is asked of the
    // state, not of the records' logged nodes: a melded record
    // (`log/ahead.rs`) changed other nodes than it names in the log.
    let state = db.registry.current();
    let moved = |n: &NodeId| {
        tx.view.base.nodes.get(n).map(|l| l.blob) != state.nodes.get(n).map(|l| l.blob)
    };
    if touched.iter().any(moved) {
        return Ok(Step::Again);
    }
    Ok(Step::Go(now))
}

/// Phase 3, lock and recheck. A commit that writes no blob (its nodes and
/// values all travel in its record) takes no locks: the commit point alone
/// decides races, and losing one costs re-encoding one record, less than
/// the round trips locks take. Locks are for commits with blobs to write
/// first, and with an intent a peer must be able to recover. Returns the
/// locks and the seq the record will follow.
fn lock_and_recheck(
    tx: &mut Transaction,
    plan: &Plan,
    holds_turn: bool,
) -> Result<Step<(Locks, u64)>> {
    let db = tx.db.clone();
    let mut locks = Locks {
        db: db.clone(),
        owner: tx.id,
        keys: if plan.writes_blobs {
            plan.touched.iter().map(|n| n.0).collect()
        } else {
            Vec::new()
        },
        locked_at: std::time::Instant::now(),
    };
    let outcome = if locks.keys.is_empty() {
        LockOutcome::default()
    } else {
        // Holding the commit turn, wait only briefly: the holder of a
        // lock we need may be a thread of ours waiting for that turn.
        let deadline = if holds_turn {
            tx.deadline()
                .min(std::time::Instant::now() + std::time::Duration::from_millis(100))
        } else {
            tx.deadline()
        };
        match db
            .coord
            .lock(&locks.keys, tx.id, db.opts.lock_ttl, deadline)
        {
            Ok(o) => o,
            Err(Error::Timeout(_)) if holds_turn && tx.check_deadline().is_ok() => {
                locks.keys.clear();
                return Ok(Step::YieldTurn);
            }
            Err(e) => {
                locks.keys.clear();
                return Err(e);
            }
        }
    };
    for owner in outcome.expired_owners {
        recover_owner(&db, owner);
    }
    // Cluster mode: read the store only if the stamp is ahead of us (or
    // missing). A commit that landed but has not raised the stamp yet is
    // met at the commit point: creating its log slot fails, and we catch
    // up and validate there. A lock-free commit has no stamp and asks
    // nothing: its commit point is the check. On a local folder the stamp
    // may lag (lock-free commits announce theirs late) and the log is
    // cheap to ask.
    let local = db.registry.current().seq;
    let probe = db.coord.is_shared()
        && plan.writes_blobs
        && (db.loader.store.probe_is_cheap() || outcome.stamp.is_none_or(|s| s > local));
    // Someone changed our nodes before we locked them: merge again.
    Ok(match recheck(tx, tx.view.base.seq, probe, &plan.touched)? {
        Step::Go(base) => Step::Go((locks, base)),
        Step::Again => Step::Again,
        Step::YieldTurn => Step::YieldTurn,
    })
}

/// Phase 6, publish: the new commit stamp (with the locks' release when it
/// took any), the new nodes into the cache, the intent's delete off the
/// commit's path, a checkpoint when one is due (off the commit's path too
/// where a write is a round trip).
fn publish(
    tx: &mut Transaction,
    seq: u64,
    fresh: Vec<(BlobId, Arc<crate::tree::Node>)>,
    mut locks: Locks,
    merged: bool,
) -> CommitInfo {
    let db = tx.db.clone();
    let store = &db.loader.store;
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
        let remote = !store.probe_is_cheap();
        stager::background(
            &db.cleanups,
            remote,
            Box::new(move || {
                if let Err(e) = store.delete(&path) {
                    tracing::warn!(error = %e, "could not delete an intent record; recovery will");
                }
            }),
        );
    }
    if db.registry.checkpoint_due(db.opts.checkpoint_every) {
        let (remote, cleanups, db) = (!store.probe_is_cheap(), db.cleanups.clone(), db.clone());
        let write = move || {
            let claim = |interval| db.coord.claim_checkpoint(interval);
            if let Err(e) = db
                .registry
                .maybe_checkpoint(db.opts.checkpoint_every, claim)
            {
                tracing::warn!(error = %e, "checkpoint failed; the log still holds everything");
            }
        };
        // Off the commit's path where a write is a round trip: the nodes
        // melds made go out first, hundreds of them after many hosts wrote
        // one tree, and the commit that came due is done.
        if remote {
            stager::background(&cleanups, true, Box::new(write));
        } else {
            write();
        }
    }
    CommitInfo { seq, merged }
}
