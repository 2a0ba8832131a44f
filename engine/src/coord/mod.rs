//! Coordination between processes, behind one trait so a Redis
//! implementation can stand in for the in-process one: scent locks
//! (short-lived, owner-tagged locks on logical nodes), the commit stamp,
//! places in the log's queue, and short-lived copies of records.
//!
//! Two implementations: [`InProcessCoordinator`] (embedded mode) and
//! [`crate::coord::RedisCoordinator`] (cluster mode).
//!
//! Locks only keep writers of the same node from wasting work: the store's
//! create-if-absent commit point decides conflicts, so a lost or expired lock
//! can cost a retry, never a lost update.

mod redis;

pub use redis::{redact_url, RedisCoordinator};

use crate::error::{Error, Result};
use crate::ids::TxId;
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What `lock` learned while acquiring.
#[derive(Debug, Default)]
pub struct LockOutcome {
    /// Owners whose expired locks were taken over: their commits may be unfinished.
    pub expired_owners: Vec<TxId>,
    /// The newest commit seq the coordinator had heard of when the locks
    /// were taken (`None`: it does not keep one, or lost it).
    pub stamp: Option<u64>,
}

/// Where `take_place` put this process in the queue for the log's next
/// positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// The coordinator keeps no queue (or could not be asked): race for the
    /// position at the commit point, as without one.
    Unqueued,
    /// This process holds log position `seq`: others wait for its record.
    Holds(u64),
    /// Every position of the window is another process's.
    Behind,
}

/// What `take_place` answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlaceView {
    /// This process's place.
    pub place: Place,
    /// The newest commit seq announced, when the coordinator vouches for it.
    pub stamp: Option<u64>,
}

/// How long a commit whose stamp could not be published waits before it
/// returns. A reader that trusts the stamp without probing the store past
/// it must have found the log's end (a probe, or a record of its own
/// landing) less than this long ago: a commit it cannot see through the
/// stamp landed after that, and has not returned yet (close-to-open holds
/// even while one host cannot reach the coordinator and another can).
pub const STAMP_GRACE: Duration = Duration::from_secs(1);

/// Coordination between the transactions of one or many processes.
pub trait Coordinator: Send + Sync {
    /// Takes every key for `owner`, in ascending order (so two transactions
    /// cannot deadlock), waiting until `deadline` at most. All or nothing.
    fn lock(
        &self,
        keys: &[u64],
        owner: TxId,
        ttl: Duration,
        deadline: Instant,
    ) -> Result<LockOutcome>;
    /// Releases the keys `owner` still holds; keys taken over by others are left alone.
    fn unlock(&self, keys: &[u64], owner: TxId);
    /// Extends the owner's hold on keys; fails if any was lost.
    fn renew(&self, keys: &[u64], owner: TxId, ttl: Duration) -> Result<()>;
    /// True when other processes may write the store (probe it for news).
    fn is_shared(&self) -> bool;
    /// Scopes the coordinator's keys to one volume; called once at open.
    fn attach(&self, _volume_id: &str) -> Result<()> {
        Ok(())
    }
    /// The newest commit seq the coordinator has heard of, if it knows one.
    /// A hint only: the log in the store is the truth.
    fn stamp(&self) -> Option<u64> {
        None
    }
    /// The newest commit stamp this process has been told of without
    /// asking (pushed by the server); `None` when it cannot vouch for one.
    fn stamp_hint(&self) -> Option<u64> {
        None
    }

    /// Counts the times the coordinator's server changed under it (a
    /// restart, a restore, a failover, a flush): read before `stamp`, handed back
    /// to `publish_probed`.
    fn epoch(&self) -> u64 {
        0
    }
    /// Announces `seq`, the end of the log found by probing the store after
    /// `stamp` (asked in `epoch`) did not know it. A coordinator that
    /// distrusts its stamps since a server change trusts them again once a
    /// probe that began after the change has been published.
    fn publish_probed(&self, seq: u64, _epoch: u64) {
        self.publish_stamp(seq);
    }
    /// Announces that commit `seq` landed. Returns once the stamp is
    /// raised, or, when the server cannot be reached, no sooner than
    /// [`STAMP_GRACE`] after the call: a reader that found the log's end
    /// within the grace then knows of the commit without the stamp.
    fn publish_stamp(&self, _seq: u64) {}
    /// Announces that commit `seq` landed, without waiting for the server:
    /// for callers whose readers do not rely on the stamp to be exact.
    /// Several calls close together may go out as one (the highest).
    fn publish_stamp_soon(&self, seq: u64) {
        self.publish_stamp(seq);
    }
    /// After a commit: releases its locks and announces its seq, in one round
    /// trip where the backend allows; waits as `publish_stamp` does when
    /// the server cannot be reached.
    fn release(&self, keys: &[u64], owner: TxId, committed: u64) {
        self.unlock(keys, owner);
        self.publish_stamp(committed);
    }
    /// Queues this process for the log: holds the first of the `window`
    /// positions after `after` (the newest record it has read, or the
    /// position before a queue's place further ahead; `window` at most
    /// [`PLACE_WINDOW`]) that is free or its own already, and gives up
    /// `held`, the place it held, if that one is later. `after_taken`:
    /// every position up to `after` is known to be taken (written or
    /// held), which lets the coordinator start later searches past the
    /// place found; false for a queue's place asked for further ahead.
    /// A hint that makes hosts take turns instead of racing: the commit
    /// point still decides who fills a position.
    fn take_place(
        &self,
        _after: u64,
        _window: u64,
        _held: Option<u64>,
        _after_taken: bool,
    ) -> PlaceView {
        PlaceView {
            place: Place::Unqueued,
            stamp: None,
        }
    }
    /// Sleeps up to `pause`, or until a stamp above `seen` is announced
    /// (where the coordinator hears them pushed).
    fn wait_past(&self, _seen: u64, pause: Duration) {
        std::thread::sleep(pause);
    }
    /// Gives up log position `seq` if this process holds it (its commit
    /// will not fill it).
    fn leave_place(&self, _seq: u64) {}
    /// Claims the checkpoint of interval `interval` (log positions
    /// `interval * every ..`) for this process: true for the first to ask
    /// (and for any asker when the server cannot tell; a second checkpoint
    /// is only a wasted write). Every host comes due for a checkpoint at
    /// about the same position: without the claim each wrote one, on its
    /// commit's path, all at once.
    fn claim_checkpoint(&self, _interval: u64) -> bool {
        true
    }
    /// Keeps a short-lived copy of record `seq`, `bytes` as the store now
    /// holds them, so that other processes following the log read it from
    /// here instead of the store (best effort; a record too big to copy
    /// leaves an empty copy: "read the store"). Only for a record whose
    /// create-if-absent succeeded: a record never changes once created, so
    /// a copy can be lost or outlive a server change, never be wrong.
    ///
    /// `head` is the record without its node and value bodies
    /// (`record::head_frame`; `None`: it carries none), copied apart: every
    /// other host folds every record and needs only that, while the
    /// bodies are wanted by few (hosts writing directories of their own
    /// want none of each other's).
    fn mirror_record(&self, _seq: u64, _bytes: &[u8], _head: Option<&[u8]>) {}
    /// The copies `mirror_record` kept of the records at `seqs` (`None`
    /// where there is none); `None` when the server could not be asked.
    fn mirrored_records(&self, _seqs: &[u64]) -> Option<Vec<Option<Vec<u8>>>> {
        None
    }
    /// As `mirrored_records`, the copies of the records' heads.
    fn mirrored_heads(&self, _seqs: &[u64]) -> Option<Vec<Option<Vec<u8>>>> {
        None
    }
}

/// How many log positions past the newest one read a process may queue
/// for: more hosts than this waiting at once race for the rest. As far as
/// a record may lie past its base (`AHEAD_SPAN`): every host with a record
/// in flight holds one of these positions, and at 64 hosts a window of 64
/// left 7 % of commits without a place, queued, holding up the records
/// after theirs (540 commits/s against 1,400 with 128).
pub const PLACE_WINDOW: u64 = 128;
const _: () = assert!(PLACE_WINDOW <= crate::log::AHEAD_SPAN);

/// Locks for the threads of one process (embedded mode).
#[derive(Default)]
pub struct InProcessCoordinator {
    held: Mutex<HashMap<u64, (TxId, Instant)>>,
    freed: Condvar,
}

impl InProcessCoordinator {
    /// An empty lock table.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Coordinator for InProcessCoordinator {
    fn lock(
        &self,
        keys: &[u64],
        owner: TxId,
        ttl: Duration,
        deadline: Instant,
    ) -> Result<LockOutcome> {
        let mut sorted = keys.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut out = LockOutcome::default();
        let mut held = self.held.lock();
        let started = Instant::now();
        for (i, key) in sorted.iter().enumerate() {
            loop {
                let now = Instant::now();
                match held.get(key) {
                    Some((o, _)) if *o == owner => break,
                    Some((o, exp)) if *exp > now => {
                        let _ = o;
                        if now >= deadline {
                            for k in &sorted[..i] {
                                held.remove(k);
                            }
                            self.freed.notify_all();
                            return Err(Error::Timeout(started.elapsed()));
                        }
                        let wake = (*exp).min(deadline);
                        self.freed.wait_until(&mut held, wake);
                    }
                    Some((o, _)) => {
                        tracing::warn!(owner = %o, key, "taking over an expired lock");
                        out.expired_owners.push(*o);
                        held.insert(*key, (owner, now + ttl));
                        break;
                    }
                    None => {
                        held.insert(*key, (owner, now + ttl));
                        break;
                    }
                }
            }
        }
        out.expired_owners.sort_unstable();
        out.expired_owners.dedup();
        Ok(out)
    }

    fn unlock(&self, keys: &[u64], owner: TxId) {
        let mut held = self.held.lock();
        for k in keys {
            if held.get(k).is_some_and(|(o, _)| *o == owner) {
                held.remove(k);
            }
        }
        self.freed.notify_all();
    }

    fn renew(&self, keys: &[u64], owner: TxId, ttl: Duration) -> Result<()> {
        let mut held = self.held.lock();
        let until = Instant::now() + ttl;
        for k in keys {
            match held.get_mut(k) {
                Some((o, exp)) if *o == owner => *exp = until,
                _ => return Err(Error::conflict("", "a lock was lost before renewal")),
            }
        }
        Ok(())
    }

    fn is_shared(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_waits_and_takes_over_expired_locks() {
        let c = InProcessCoordinator::new();
        let (a, b) = (TxId(1), TxId(2));
        let far = Instant::now() + Duration::from_secs(5);
        c.lock(&[3, 1, 2], a, Duration::from_millis(200), far)
            .expect("a locks");
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(matches!(
            c.lock(&[2], b, Duration::from_secs(1), soon),
            Err(Error::Timeout(_))
        ));
        // After a's TTL runs out, b takes the lock and learns a may be dead.
        let out = c
            .lock(&[2], b, Duration::from_secs(1), far)
            .expect("b takes over");
        assert_eq!(out.expired_owners, vec![a]);
        assert!(c.renew(&[2], a, Duration::from_secs(1)).is_err());
        c.unlock(&[1, 2, 3], a);
        // a's unlock must not free b's lock.
        assert!(c.lock(&[2], TxId(3), Duration::from_secs(1), soon).is_err());
        c.unlock(&[2], b);
        c.lock(&[2], TxId(3), Duration::from_secs(1), soon)
            .expect("free now");
    }
}
