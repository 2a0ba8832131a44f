//! Garbage collection: deletes blobs no registry state within the retention
//! window can reach, and log records and checkpoints older than that window.

use crate::codec::{self, Kind};
use crate::ctx::DbInner;
use crate::error::Result;
use crate::ids::BlobId;
use crate::log::{decode_record, now_ms};
use crate::store::{blob_path, checkpoint_path, log_path, BlobStore};
use crate::tree::Node;
use crate::txn::Intent;
use object_store::path::Path;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// What a GC pass found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs looked at.
    pub blobs_scanned: u64,
    /// Blobs still reachable (or too young to judge).
    pub blobs_kept: u64,
    /// Unreachable blobs deleted (or, on a dry run, that would be).
    pub blobs_deleted: u64,
    /// Their total size.
    pub bytes_deleted: u64,
    /// Log records deleted (covered by an older checkpoint).
    pub log_records_deleted: u64,
    /// Superseded checkpoints deleted.
    pub checkpoints_deleted: u64,
    /// Files of writes interrupted by a crash, deleted.
    pub staging_files_deleted: u64,
    /// Announcements of processes silent for over a day (killed daemons).
    pub members_deleted: u64,
}

/// A member announcement this old belongs to a process that is gone.
const MEMBER_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// Keeps node `blob` and the value chunks its entries name. `scanned` is
/// separate from `keep`: a node already kept because its commit was in
/// flight must still have its values kept (they may be other commits'
/// values merged into it, whose own protection has ended).
fn keep_node(
    db: &DbInner,
    blob: BlobId,
    packed_in: Option<u64>,
    keep: &mut HashSet<BlobId>,
    scanned: &mut HashSet<BlobId>,
) {
    keep.insert(blob);
    if !scanned.insert(blob) {
        return;
    }
    match db.loader.load_blob(blob, packed_in) {
        Ok(node) => {
            if let Node::Leaf(leaf) = &*node {
                for i in 0..leaf.len() {
                    keep.extend(leaf.value(i).blobs());
                }
            }
        }
        Err(e) => {
            tracing::warn!(%blob, error = %e, "GC could not read a node; keeping what it can")
        }
    }
}

/// Before records are trimmed, the node versions and values they carry that
/// anyone may still read (`keep`) are written as blobs of their own,
/// durably: a reader that finds a record gone reads `blobs/<id>` instead.
fn write_out_packed(db: &DbInner, seqs: &[u64], keep: &HashSet<BlobId>) -> Result<()> {
    let store = &db.loader.store;
    let log = db.registry.log();
    let mut written = Vec::new();
    for &seq in seqs {
        let path = log_path(seq);
        let Some(data) = log.read(seq)? else {
            continue;
        };
        let record = decode_record(path.as_ref(), &data)?;
        for p in record.packed {
            if keep.contains(&p.blob) {
                let blob = blob_path(p.blob);
                // Out of its record, a leaf names the record of the values
                // it carried "here" itself.
                let node = Node::decode_in_record(path.as_ref(), &p.body, seq)?;
                write_out(store, &blob, node.encode())?;
                written.push(blob);
            }
        }
        for v in record.values {
            if keep.contains(&v.blob) {
                let blob = blob_path(v.blob);
                write_out(store, &blob, codec::frame_value(&v.body))?;
                written.push(blob);
            }
        }
    }
    store.sync(&written)
}

/// Writes `bytes` as `path` unless it holds them already. Create-if-absent
/// first: a GC of another process may be writing the same bytes. A copy
/// that is there but differs was torn by a crash of an earlier write-out
/// (before its sync: a power cut can leave it empty) and is replaced: the
/// record about to be trimmed would otherwise leave that torn copy as the
/// only one.
fn write_out(store: &BlobStore, path: &Path, bytes: Vec<u8>) -> Result<()> {
    if store.create(path, bytes.clone())? {
        return Ok(());
    }
    match store.get(path) {
        Ok(Some(there)) if there[..] == bytes[..] => return Ok(()),
        // A torn copy on a sealed volume does not even unseal.
        Ok(_) | Err(crate::error::Error::Corrupted { .. }) => {}
        Err(e) => return Err(e),
    }
    tracing::warn!(%path, "replacing a blob an interrupted GC left torn");
    store.put(path, bytes)
}

/// A snapshot whose state cannot be rebuilt stops the pass: what it needs
/// cannot be told from what it does not.
fn pin_unreadable(name: &str, e: crate::error::Error) -> crate::error::Error {
    crate::error::Error::Unsupported(format!(
        "GC stopped: snapshot {name:?} cannot be read ({e}); delete it to let GC run"
    ))
}

/// In cluster mode other processes may be up to `RESYNC_AFTER` behind the log
/// end before they resync from a checkpoint; trimming records younger than
/// twice that could make one of them re-create a trimmed log slot.
const SHARED_MIN_RETENTION: Duration = Duration::from_secs(2 * crate::ctx::RESYNC_AFTER.as_secs());

pub(crate) fn gc(db: &DbInner, retention: Duration, dry_run: bool) -> Result<GcReport> {
    let retention = if db.coord.is_shared() && retention < SHARED_MIN_RETENTION {
        tracing::warn!(?retention, floor = ?SHARED_MIN_RETENTION, "GC retention raised: other processes may lag");
        SHARED_MIN_RETENTION
    } else {
        retention
    };
    // A snapshot taken by this process while the pass runs is seen by it.
    let _turn = db.gc_turn.lock();
    let store = &db.loader.store;
    let cutoff = now_ms().saturating_sub(retention.as_millis() as u64);
    // Order matters: blobs first, then intents, then the registry. A blob in
    // the listing was written before it; its commit is then either still in
    // flight (its intent is listed next) or done (the state read last has it).
    let blobs = store.list("blobs")?;
    let mut keep = HashSet::new();
    for m in store.list("intents")? {
        if let Some(data) = store.get(&m.location)? {
            if let Ok(intent) = codec::decode::<Intent>(Kind::Intent, m.location.as_ref(), &data) {
                keep.extend(intent.blobs);
            }
        }
    }
    // This process's commits in flight (embedded mode writes no intents).
    // Read after the listing and before the registry, like the intents.
    keep.extend(db.inflight.lock().iter().copied());
    let state = db.registry.catch_up(true)?;
    let mut scanned = HashSet::new();
    for loc in state.nodes.values() {
        let packed_in = loc.packed.then_some(loc.version);
        keep_node(db, loc.blob, packed_in, &mut keep, &mut scanned);
    }
    // Snapshots: everything their states reach, kept as long as they are.
    // Listed after the registry was read: one taken since is at or after
    // its seq, so what it reaches is the state's or younger than the listing.
    let mut pins = Vec::new();
    for snap in crate::maint::snapshots::list(db)? {
        let pinned = crate::maint::snapshots::state_at(db, snap.seq)
            .map_err(|e| pin_unreadable(&snap.name, e))?;
        for loc in pinned.nodes.values() {
            let packed_in = loc.packed.then_some(loc.version);
            keep_node(db, loc.blob, packed_in, &mut keep, &mut scanned);
        }
        pins.push(pinned);
    }
    // One read of the log: which record carries which node version, and
    // the changes of records inside the window (their old versions may
    // still be read by older snapshots).
    let mut packed_at: HashMap<BlobId, u64> = HashMap::new();
    let mut recent = Vec::new();
    let log = db.registry.log();
    for seq in log.seqs()? {
        let Some(data) = log.read(seq)? else {
            continue;
        };
        let rec = decode_record(log_path(seq).as_ref(), &data)?;
        packed_at.extend(rec.packed.iter().map(|p| (p.blob, seq)));
        if rec.time_ms >= cutoff {
            recent.push(rec.nodes);
        }
    }
    // Versions melds made (`log/ahead.rs`), which no record names.
    recent.push(db.registry.melded_changes(cutoff));
    for changes in recent {
        for c in changes {
            for b in c.old.iter().chain(c.new.iter()) {
                keep_node(db, *b, packed_at.get(b).copied(), &mut keep, &mut scanned);
            }
        }
    }
    let mut report = GcReport {
        staging_files_deleted: if dry_run {
            0
        } else {
            // A live writer's staging file exists for moments: never one that young.
            store.sweep_staging("", retention.max(crate::store::STAGING_MIN_AGE))
        },
        ..GcReport::default()
    };
    for m in crate::maint::inspect::members(store)? {
        if m.age > MEMBER_EXPIRY {
            report.members_deleted += 1;
            if !dry_run {
                store.delete(&crate::maint::inspect::member_path(&m.id))?;
            }
        }
    }
    // What is unreachable from `state` may be reachable again from the
    // state a power cut rolls back to, if `state` is not durable: make it
    // durable before deleting anything it no longer needs.
    if !dry_run {
        log.sync(state.seq)?;
    }
    for m in blobs {
        report.blobs_scanned += 1;
        let Some(id) = m
            .location
            .filename()
            .and_then(|f| u128::from_str_radix(f, 16).ok())
        else {
            continue;
        };
        let young = m.last_modified.timestamp_millis() as u64 >= cutoff;
        if keep.contains(&BlobId(id)) || young {
            report.blobs_kept += 1;
            continue;
        }
        report.blobs_deleted += 1;
        report.bytes_deleted += m.size;
        if !dry_run {
            store.delete(&m.location)?;
        }
    }
    if dry_run {
        return Ok(report);
    }
    // A fresh checkpoint lets the next pass trim the log up to here.
    db.registry.write_checkpoint(&state)?;
    // A pinned state is rebuilt from a checkpoint at its own seq once the
    // records before it are trimmed; that checkpoint stays while the pin does.
    let mut checkpoints = db.registry.checkpoints()?;
    for pinned in &pins {
        if !checkpoints.iter().any(|(s, _)| *s == pinned.seq) {
            db.registry.write_checkpoint(pinned)?;
        }
    }
    checkpoints.retain(|(s, _)| !pins.iter().any(|p| p.seq == *s));
    let old_enough: Vec<u64> = checkpoints
        .iter()
        .filter(|(_, t)| *t < cutoff)
        .map(|(s, _)| *s)
        .collect();
    if let Some(&horizon) = old_enough.last() {
        // A record placed ahead of a record before the checkpoint is
        // decided from the records between: those stay. Only hosts sharing
        // a coordinator place records ahead.
        let keep_back = if db.coord.is_shared() {
            crate::log::AHEAD_SPAN
        } else {
            0
        };
        let plan = log.trim_plan(horizon.saturating_sub(keep_back))?;
        write_out_packed(db, &plan.seqs(), &keep)?;
        report.log_records_deleted += log.trim(&plan)?;
        for (seq, _) in checkpoints.iter().filter(|(s, _)| *s < horizon) {
            store.delete(&checkpoint_path(*seq))?;
            report.checkpoints_deleted += 1;
        }
    }
    Ok(report)
}
