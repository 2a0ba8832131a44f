//! Hosts that lose the race for the log's next position get a turn.
//!
//! On a store where a commit point costs a round trip (S3), a host that
//! just landed a record knows the new end of the log at once and goes for
//! the next position, while a host that lost the race must first read the
//! winner's record: it loses again, and one busy host can starve the
//! others. So every commit takes the position it is about to write as its
//! place (`Coordinator::take_place`). A commit that finds that position
//! another's, or is refused at the commit point, is *queued*: it holds a
//! place [`RUN`] positions past the end of the log (the first free one from
//! there), reads the records that land before it as their stamps come in,
//! and writes its record when its place is the next position. The host
//! ahead of it meanwhile lands a run of up to `RUN` records at one round
//! trip each, instead of the two of strict turns (a read of the other's
//! record, then a write); a queued commit that sees no record land for a
//! while takes the first free position instead of waiting for a run that
//! is not coming.
//!
//! The queue is a hint: the commit point still decides who fills a
//! position, so a lost, expired or ignored place costs a retry, never a
//! record.

use super::commit::{recheck_through, Step};
use super::tx::Transaction;
use crate::coord::{Coordinator, Place, PLACE_WINDOW};
use crate::error::Result;
use crate::ids::NodeId;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a commit waits in the queue before it races for the position
/// anyway (the places ahead of it outlived their holders' TTL many times).
const QUEUE_PATIENCE: Duration = Duration::from_secs(10);
/// Records the host ahead of a queued commit may land before it.
const RUN: u64 = 3;
/// Longest sleep between two looks at the queue while waiting.
const POLL_PAUSE: Duration = Duration::from_millis(5);

/// This process's place in the log's queue, for one commit's append.
pub(super) struct Queue {
    coord: Arc<dyn Coordinator>,
    /// The position this commit holds, if any.
    held: Option<u64>,
    /// Queued: the first position this commit waits for (`RUN` past the
    /// end of the log it knew), until records stop landing before it.
    from: Option<u64>,
    /// Joined the queue: refused at the commit point, or found the
    /// position it was about to write another's.
    queued: bool,
}

impl Queue {
    /// A queue for `tx`'s append where hosts pay a round trip per commit
    /// point and others may write the log; `None` elsewhere.
    pub(super) fn for_commit(tx: &Transaction) -> Option<Queue> {
        let db = &tx.db;
        (db.coord.is_shared() && !db.loader.store.probe_is_cheap()).then(|| Queue {
            coord: db.coord.clone(),
            held: None,
            from: None,
            queued: false,
        })
    }

    /// Joins the queue behind position `last`, the newest one known to be
    /// taken, if not queued yet: a place `RUN` positions further.
    fn join(&mut self, tx: &Transaction, last: u64) {
        if !self.queued {
            self.queued = true;
            self.from = Some(last + 1 + RUN);
            tx.db.stats.queued.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The commit point refused position `lost`: the commit queues at once,
    /// before it reads the winner's record, so the winner, whose next
    /// commit knows the log's end first, cannot take every position again.
    pub(super) fn refused_at(&mut self, tx: &Transaction, lost: u64) {
        self.join(tx, lost);
        self.take(lost);
    }

    /// Takes this commit's place: the position after `at` if not queued,
    /// else the first free one from its `from` (or after `at`).
    fn take(&mut self, at: u64) -> crate::coord::PlaceView {
        // Positions up to `at` are written; up to a queue's `from`, not
        // known.
        let (after, window, after_taken) = match (self.queued, self.from) {
            (false, _) => (at, 1, true),
            (true, Some(from)) if from > at + 1 => (from - 1, PLACE_WINDOW, false),
            (true, _) => (at, PLACE_WINDOW, true),
        };
        let view = self.coord.take_place(after, window, self.held, after_taken);
        self.held = match view.place {
            Place::Holds(p) => Some(p),
            _ => None,
        };
        view
    }

    /// Takes the first position after `at` (the newest record validated
    /// against) that no other process holds, for a record placed there at
    /// once (`ahead.rs`); `None` when the coordinator keeps no queue or
    /// every position of the window is held.
    pub(super) fn place_ahead(&mut self, at: u64) -> Option<u64> {
        let view = self.coord.take_place(at, PLACE_WINDOW, self.held, true);
        self.held = match view.place {
            Place::Holds(p) => Some(p),
            _ => None,
        };
        self.held
    }

    /// Waits until this commit's place is the position after `at` (the
    /// newest record validated against), validating against each record
    /// that lands before it. `Go(newest)` when it is (or the coordinator
    /// keeps no queue), else what the recheck found.
    pub(super) fn wait_turn(
        &mut self,
        tx: &Transaction,
        mut at: u64,
        touched: &[NodeId],
    ) -> Result<Step<u64>> {
        let started = Instant::now();
        // How long records take to land one after another, to tell a run
        // in progress from a host that stopped writing.
        let (mut last_landed, mut gap) = (Instant::now(), Duration::from_millis(100));
        loop {
            tx.check_deadline()?;
            let view = self.take(at);
            match view.place {
                Place::Unqueued => return Ok(Step::Go(at)),
                Place::Holds(p) if p == at + 1 => return Ok(Step::Go(at)),
                Place::Holds(_) => {}
                // Behind the newest record the stamp shows, which the
                // host ahead may have passed already (it learns its own
                // records first).
                Place::Behind => self.join(tx, view.stamp.unwrap_or(0).max(at)),
            }
            if started.elapsed() > QUEUE_PATIENCE {
                tracing::warn!(tx = %tx.id, ?at, "the log's queue did not move; racing for the position");
                return Ok(Step::Go(at));
            }
            if let Some(stamp) = view.stamp.filter(|&s| s > at) {
                match recheck_through(tx, at, stamp, touched)? {
                    Step::Go(newest) => at = newest,
                    other => return Ok(other),
                }
                gap = last_landed.elapsed();
                last_landed = Instant::now();
                continue;
            }
            if self.from.is_some()
                && last_landed.elapsed() > (gap * 2).clamp(RUN_GRACE_MIN, RUN_GRACE_MAX)
            {
                // No run is coming: the first free position will do.
                self.from = None;
                continue;
            }
            // Woken by the next stamp pushed; the pause bounds how late a
            // place given up or expired ahead is noticed.
            self.coord
                .wait_past(view.stamp.unwrap_or(0).max(at), POLL_PAUSE);
        }
    }

    /// The commit filled its place: nothing to give back (it expires, and
    /// those behind it have seen the record by the stamp).
    pub(super) fn landed(&mut self) {
        self.held = None;
    }
}

/// Bounds on how long a queued commit waits for the next record of a run
/// before it takes the first free position (twice the last gap between
/// records, within these).
const RUN_GRACE_MIN: Duration = Duration::from_millis(10);
const RUN_GRACE_MAX: Duration = Duration::from_millis(500);

impl Drop for Queue {
    /// A commit that leaves without filling its place frees it, so those
    /// queued behind it need not wait out its TTL.
    fn drop(&mut self) {
        if let Some(p) = self.held.take() {
            self.coord.leave_place(p);
        }
    }
}
