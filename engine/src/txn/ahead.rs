//! Commits placed ahead (S3 with Redis): instead of waiting for its turn
//! at the log's next position, a commit takes the first position no other
//! host holds (`Coordinator::take_place`), writes its record there at
//! once, carrying its read set, its key ops and the position it was built
//! on, and then reads the records of the positions between, which other
//! hosts wrote in the same round trip. Every reader decides from those
//! records and the state before its own whether it committed, and whether
//! it lands as written or melded (`log/ahead.rs`); hosts whose commits
//! touch different keys never wait for one another.
//!
//! A position whose holder never writes (it died, or gave up) is filled
//! with an empty record by a commit waiting on it, after [`HOLE_PATIENCE`];
//! a holder that comes late finds its position taken and starts over.
//!
//! Only commits with nothing to undo go ahead: no blob written before the
//! record, no lock, no stashed value. A commit whose record was void starts
//! over through the queue (`place.rs`), and a process whose commits keep
//! being void stops going ahead for a while ([`Credit`]).

use super::tx::Transaction;
use crate::codec::{self, Kind};
use crate::ctx::DbInner;
use crate::error::{Error, Result};
use crate::log::{now_ms, CommitRecord, TreeReads};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a commit waits for a position before it, held by another host,
/// before filling it with an empty record: the TTL of a place, so a holder
/// alive and on time has had it.
pub(super) const HOLE_PATIENCE: Duration = Duration::from_secs(2);
/// Longest sleep between two looks for the records before a commit's own.
const POLL_PAUSE: Duration = Duration::from_millis(3);
/// The records before a commit's own are looked for in their copies in
/// Redis (`Coordinator::mirror_record`), which follow each record within
/// a Redis round trip; the store is asked first after this long, for a
/// record whose copy was lost (its writer died between the two), and then
/// after twice as long each time, up to [`STORE_LOOK_MAX`]: every look
/// costs a GET for each position still empty, most of them records still
/// on their way from hosts that are alive.
const STORE_LOOK_PAUSE: Duration = Duration::from_millis(100);
/// Longest pause between two looks at the store while settling.
const STORE_LOOK_MAX: Duration = Duration::from_millis(800);
/// Most bytes of keys a read set may hold to go ahead: the record carries
/// it to every reader.
const READS_MAX: usize = 64 * 1024;

/// Whether this process's commits go ahead: a void costs more than one
/// commit that went ahead saves, so a run of them turns going ahead off
/// for the next few commits, which then try again. A process starts with
/// full credit: the few voids of a volume's first moments (hosts making
/// their folders in one parent while its tree is a leaf or two) are not a
/// run, and turning going ahead off for 8 commits after each put those
/// commits in the queue (at 8 mounts the queued ones were the slowest 3 %).
pub(crate) struct Credit(AtomicI64);

impl Default for Credit {
    fn default() -> Self {
        Credit(AtomicI64::new(CREDIT_MAX))
    }
}

/// What a void record costs in credit (each commit earns one back).
const VOID_COST: i64 = 8;
/// Most credit saved up.
const CREDIT_MAX: i64 = 16;

impl Credit {
    /// True when the next commit may go ahead; a commit that may not
    /// earns a step back towards it.
    pub(super) fn allows(&self) -> bool {
        let c = self.0.load(Ordering::Relaxed);
        if c < 0 {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        c >= 0
    }

    fn landed(&self, committed: bool) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some(if committed {
                    (c + 1).min(CREDIT_MAX)
                } else {
                    (c - VOID_COST).max(-4 * CREDIT_MAX)
                })
            });
    }
}

/// The read set of `tx` as a record carries it (trees it ensured count as
/// read, with no key); `None` when it is too big to travel.
pub(super) fn record_reads(tx: &Transaction) -> Option<Vec<TreeReads>> {
    let mut bytes = 0;
    let mut out: Vec<TreeReads> = Vec::with_capacity(tx.reads.len());
    for (tree, set) in &tx.reads {
        bytes += set.points.iter().map(|k| k.len() + 2).sum::<usize>();
        bytes += set.ranges.len() * 64;
        if bytes > READS_MAX {
            return None;
        }
        out.push(TreeReads {
            tree: tree.clone(),
            points: set.points.iter().cloned().collect(),
            ranges: set.ranges.clone(),
        });
    }
    for tree in &tx.ensured {
        if !tx.reads.contains_key(tree) {
            out.push(TreeReads {
                tree: tree.clone(),
                ..TreeReads::default()
            });
        }
    }
    out.sort_by(|a, b| a.tree.cmp(&b.tree));
    Some(out)
}

/// Waits until `rec`, landed at `rec.seq` ahead of its base, is decided:
/// every position before it holds a record (filling those whose holders
/// never wrote), and the registry folded it. True when it committed.
pub(super) fn settle(tx: &Transaction, rec: Arc<CommitRecord>) -> Result<bool> {
    let db = &tx.db;
    let seq = rec.seq;
    if let Err(e) = db.registry.publish(rec) {
        tracing::debug!(tx = %tx.id, error = %e, "could not fold the records before ours yet");
    }
    let mut waiting = (0, Instant::now());
    let (mut store_looked, mut look_pause) = (Instant::now(), STORE_LOOK_PAUSE);
    let committed = loop {
        if let Some(c) = db.registry.committed(seq) {
            break c;
        }
        let state = if store_looked.elapsed() >= look_pause {
            store_looked = Instant::now();
            look_pause = (look_pause * 2).min(STORE_LOOK_MAX);
            db.registry.catch_up_through(seq)?
        } else {
            db.registry.catch_up_through_copies(seq)?
        };
        if state.seq >= seq {
            break db.registry.committed(seq).ok_or_else(|| {
                Error::Unsupported(format!("record {seq} folded but not kept for its outcome"))
            })?;
        }
        let gap = state.seq + 1;
        if waiting.0 != gap {
            waiting = (gap, Instant::now());
        } else if waiting.1.elapsed() > HOLE_PATIENCE {
            fill_hole(db, gap)?;
            continue;
        }
        db.coord.wait_past(state.seq, POLL_PAUSE);
    };
    // Every position up to ours holds a record now: the stamp says so to
    // the commits queued behind (a committed one is announced again at
    // publish, with its locks' release).
    if !committed {
        db.coord.publish_stamp(seq);
    }
    db.ahead_credit.landed(committed);
    let counter = if committed {
        &db.stats.ahead
    } else {
        &db.stats.ahead_void
    };
    counter.fetch_add(1, Ordering::Relaxed);
    Ok(committed)
}

/// Writes an empty record at `seq` if it is still free: its holder never
/// wrote it, and every commit after it waits on it.
fn fill_hole(db: &DbInner, seq: u64) -> Result<()> {
    let hole = CommitRecord {
        time_ms: now_ms(),
        ..CommitRecord::empty(seq, seq - 1)
    };
    let filled = db
        .registry
        .log()
        .append(seq, &codec::encode(Kind::Record, &hole))?;
    if filled {
        db.stats.holes.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(seq, "filled a log position its holder never wrote");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_isolated_void_keeps_commits_going_ahead_and_a_run_stops_them() {
        let c = Credit::default();
        assert!(c.allows(), "a fresh process goes ahead");
        c.landed(false);
        assert!(c.allows(), "one void, even at the start, is not a run");
        c.landed(false);
        c.landed(false);
        assert!(!c.allows(), "three voids in a row turn going ahead off");
        // Each commit that did not go ahead earns a step back.
        let mut waited = 1;
        while !c.allows() {
            waited += 1;
        }
        assert_eq!(waited, 8, "off for as many commits as the credit owed");
        for _ in 0..CREDIT_MAX {
            c.landed(true);
        }
        c.landed(false);
        assert!(c.allows(), "a void after a good run is forgiven");
    }
}
