//! Phase 5 of a commit, append: the record at its log position, the
//! commit point.

use super::write_ahead::{discard, RecordParts};
use super::{hooks, recheck, record_writes, Plan, Step};
use crate::codec::{self, Kind};
use crate::error::Result;
use crate::log::{now_ms, CommitRecord, PackedValue};
use crate::txn::ahead;
use crate::txn::meld;
use crate::txn::place::Queue;
use crate::txn::tx::Transaction;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Phase 5, append, with this process's other threads held off (only other
/// processes can collide with it): a last recheck, the record, the commit
/// point, then the record folded into the registry. A slot taken by
/// another process's record moves the record to the next one after
/// validating against it. With a `queue` (S3 with Redis), the record is
/// written only when this commit's place in the log's queue comes up.
/// Any way out but landing deletes the node blobs written ahead.
pub(super) fn append(
    tx: &mut Transaction,
    plan: &Plan,
    parts: RecordParts,
    base_seq: u64,
    holds_turn: bool,
    mut queue: Option<&mut Queue>,
    try_ahead: bool,
) -> Result<Step<u64>> {
    let db = tx.db.clone();
    let RecordParts {
        node_ids,
        packed,
        packed_bytes,
        changes,
    } = parts;
    let (writes, replaced_trees) = record_writes(tx);
    // The caller may hold the turn for its whole attempt already.
    let serial = (!holds_turn).then(|| db.commit_serial.lock());
    let mut from = base_seq;
    let mut at = match recheck(tx, from, false, &plan.touched) {
        Ok(Step::Go(seq)) => seq,
        other => {
            drop(serial);
            discard(tx, &node_ids);
            return other.map(|_| Step::Again);
        }
    };
    let packed_values: Vec<PackedValue> = plan
        .packed_values
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
        seq: at + 1,
        base: at,
        reads: Vec::new(),
        ops: Vec::new(),
        void: false,
        melded: false,
        txid: tx.id,
        time_ms: now_ms(),
        writes,
        replaced_trees,
        nodes: changes,
        packed,
        values: packed_values,
    };
    hooks::pause(true);
    let log = db.registry.log();
    // Placed ahead: written at once at a free position past `at`, decided
    // once the records before it are read (`ahead.rs`).
    let mut landed = false;
    // When the create of a record placed ahead was asked.
    let mut ahead_asked = None;
    if let Some(q) = queue.as_mut().filter(|_| try_ahead) {
        if let Some(p) = q.place_ahead(at) {
            // Right after `at` it is an ordinary record; further on it
            // carries its reads, unless they are too many to.
            let reads = if p > at + 1 {
                ahead::record_reads(tx)
            } else {
                Some(Vec::new())
            };
            if let Some(reads) = reads {
                record.seq = p;
                record.base = at;
                record.reads = reads;
                if p > at + 1 {
                    record.ops = meld::key_ops(tx, p)?;
                }
                let frame = encode_record(&record, packed_bytes + packed_value_bytes);
                let asked = std::time::Instant::now();
                landed = log.append(p, &frame)?;
                if landed {
                    ahead_asked = Some(asked);
                }
                if !landed {
                    db.stats.collisions.fetch_add(1, Ordering::Relaxed);
                    q.refused_at(tx, p);
                    record.reads = Vec::new();
                    record.ops = Vec::new();
                    record.seq = at + 1;
                }
            }
        }
    }
    while !landed {
        // A commit past its deadline may have been rolled back by a peer.
        if let Err(e) = tx.check_deadline() {
            drop(serial);
            discard(tx, &node_ids);
            return Err(e);
        }
        if let Some(q) = queue.as_mut() {
            match q.wait_turn(tx, at, &plan.touched) {
                Ok(Step::Go(seq)) => at = seq,
                other => {
                    drop(serial);
                    discard(tx, &node_ids);
                    return other.map(|_| Step::Again);
                }
            }
            record.seq = at + 1;
        }
        record.base = record.seq - 1;
        let frame = encode_record(&record, packed_bytes + packed_value_bytes);
        let asked = std::time::Instant::now();
        if log.append(record.seq, &frame)? {
            // The position after our state was free: as good as a probe.
            db.registry.note_end(asked);
            landed = true;
            continue;
        }
        db.stats.collisions.fetch_add(1, Ordering::Relaxed);
        if let Some(q) = queue.as_mut() {
            q.refused_at(tx, record.seq);
        }
        from = at;
        at = match recheck(tx, from, true, &plan.touched) {
            Ok(Step::Go(seq)) => seq,
            other => {
                if matches!(other, Ok(Step::Again)) {
                    // Our locks were not respected (expired, or a peer
                    // without them): the store caught it. Redo the merge.
                    tracing::warn!(tx = %tx.id, "nodes changed under our locks; merging again");
                }
                drop(serial);
                discard(tx, &node_ids);
                return other.map(|_| Step::Again);
            }
        };
        record.seq = at + 1;
    }
    if let Some(q) = queue.as_mut() {
        q.landed();
    }
    // The registry keeps records without node bodies; this process has
    // the nodes themselves (cached at publish), and its packed values.
    record.packed = Vec::new();
    let values = std::mem::take(&mut record.values);
    let seq = record.seq;
    let placed_ahead = record.base + 1 < seq;
    let record = Arc::new(record);
    let committed = !placed_ahead || ahead::settle(tx, record.clone())?;
    if let Some(asked) = ahead_asked {
        // Right after the state, or settled (every position up to ours is
        // folded): no commit past ours can have returned before ours was
        // free, so the log ended here as of `asked`.
        db.registry.note_end(asked);
    }
    if !committed {
        // Overtaken: nothing of it landed. Merge again, through the queue.
        drop(serial);
        return Ok(Step::Again);
    }
    tx.landed = true;
    for (stash, value) in &tx.stashed {
        stash.landed(value);
    }
    for v in values {
        tx.values.remove(&v.blob);
        db.loader.values.insert(v.blob, Arc::new(v.body));
    }
    if tx.opts.sync {
        log.sync(seq)?;
    }
    hooks::pause(false);
    if !placed_ahead {
        if let Err(e) = db.registry.publish(record) {
            // The record is in the log: every reader, this process's next
            // catch-up included, will fold it in. Nothing to undo.
            tracing::warn!(tx = %tx.id, error = %e, "could not fold a landed commit in yet");
        }
    }
    drop(serial);
    Ok(Step::Go(seq))
}

/// A record framed for the log; `extra` is the bytes of the bodies it
/// carries (the frame's size hint).
fn encode_record(record: &CommitRecord, extra: usize) -> Vec<u8> {
    let hint = extra + 64 * record.nodes.len() + 1024;
    codec::encode_sized(Kind::Record, record, hint)
}
