//! Group commit: where a commit costs a round trip (S3), the small
//! transactions of one process that become ready while another commit of
//! the process is in flight go out together, in one record: one PUT for
//! many transactions from many threads.
//!
//! The first transaction to arrive while nothing is in flight leads. Those
//! that arrive meanwhile queue; when the leader is done, the first of them
//! leads the queue as one group. A leader whose commit follows a busy one
//! first waits a moment (`Group::gather`) for that commit's committers,
//! released together, to come back with their next transactions; a lone
//! writer, or one after a pause, commits at once. The
//! leader validates each member against the log since the member's
//! snapshot and against the members before it (key by key, as a record
//! would be), replays the members' operations onto one view, and commits
//! that as one transaction through the usual phases. A member that fails
//! its validation gets its conflict (and is retried by `Db::run`) without
//! holding up the rest; a group whose commit fails reports the failure to
//! every member. A commit still returns only once its record is in the
//! store: each member's `commit` returns with the group's.

use super::commit::{commit_one, record_writes, validate};
use super::ops::{replay_ops, TxMode, TxOptions};
use super::tx::Transaction;
use super::CommitInfo;
use crate::error::{Error, Result};
use crate::log::CommitRecord;
use crate::tree::View;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Values a transaction may hold to join a group: small ones travel in the
/// record, so a group writes no blob before it.
const MEMBER_VALUES_MAX: usize = 256 * 1024;

/// The longest a leader waits for the committers of the group before it.
const GATHER_MAX: Duration = Duration::from_millis(5);

/// The commit queue of one open volume.
#[derive(Default)]
pub(crate) struct Group {
    state: Mutex<Queue>,
    /// Signalled when a transaction joins `waiting`.
    arrived: Condvar,
}

#[derive(Default)]
struct Queue {
    /// A commit of this process is in flight.
    busy: bool,
    /// Transactions waiting for it to end.
    waiting: Vec<Arc<Slot>>,
    /// The commit that ended last.
    last: Option<Ended>,
}

/// What a leader knows of the commit before its own.
#[derive(Clone, Copy)]
struct Ended {
    at: Instant,
    /// How long it took, from its leader's start.
    took: Duration,
    /// Transactions that were in it or waiting for it: the committers
    /// likely to be back with their next transaction within moments.
    committers: usize,
}

/// One queued transaction and what became of it.
struct Slot {
    tx: Mutex<Option<Transaction>>,
    outcome: Mutex<Outcome>,
    ready: Condvar,
}

enum Outcome {
    Waiting,
    /// Lead these (the rest of the queue) as one group.
    Lead(Vec<Arc<Slot>>),
    Done(Result<CommitInfo>),
}

impl Slot {
    fn set(&self, outcome: Outcome) {
        *self.outcome.lock() = outcome;
        self.ready.notify_one();
    }

    fn take_tx(&self) -> Option<Transaction> {
        self.tx.lock().take()
    }
}

/// True for a transaction that may join a group: read-write with changes,
/// nothing written ahead (staged or stashed values), small values, on a store where
/// a commit costs a round trip.
pub(super) fn eligible(tx: &Transaction) -> bool {
    let changed = !tx.view.dirty.is_empty() || !tx.view.freed.is_empty();
    !tx.db.loader.store.probe_is_cheap()
        && tx.opts.mode == TxMode::ReadWrite
        && changed
        && !tx.ops.is_empty()
        && tx.staged.is_empty()
        && tx.stashed.is_empty()
        && tx.value_bytes <= MEMBER_VALUES_MAX
}

impl Group {
    /// Commits `tx`, alone or in a group.
    pub(super) fn commit(&self, tx: Transaction) -> Result<CommitInfo> {
        let slot = Arc::new(Slot {
            tx: Mutex::new(Some(tx)),
            outcome: Mutex::new(Outcome::Waiting),
            ready: Condvar::new(),
        });
        let lead_alone = {
            let mut q = self.state.lock();
            if q.busy {
                q.waiting.push(slot.clone());
                self.arrived.notify_all();
                false
            } else {
                q.busy = true;
                true
            }
        };
        let others = if lead_alone {
            Vec::new()
        } else {
            let mut out = slot.outcome.lock();
            loop {
                match std::mem::replace(&mut *out, Outcome::Waiting) {
                    Outcome::Waiting => slot.ready.wait(&mut out),
                    Outcome::Done(r) => return r,
                    Outcome::Lead(rest) => break rest,
                }
            }
        };
        let others = self.gather(others);
        let started = Instant::now();
        let members = 1 + others.len();
        let result = match slot.take_tx() {
            Some(mut me) if others.is_empty() => commit_one(&mut me),
            Some(me) => commit_group(me, &others),
            None => Err(Error::InvalidArgument(
                "transaction already committed".into(),
            )),
        };
        // Hand the queue to the first waiter: it leads the rest.
        let next = {
            let mut q = self.state.lock();
            q.last = Some(Ended {
                at: Instant::now(),
                took: started.elapsed(),
                committers: members + q.waiting.len(),
            });
            if q.waiting.is_empty() {
                q.busy = false;
                None
            } else {
                Some(std::mem::take(&mut q.waiting))
            }
        };
        if let Some(mut next) = next {
            let first = next.remove(0);
            first.set(Outcome::Lead(next));
        }
        result
    }

    /// Adds to a leader's `others` the committers of the commit that just
    /// ended as they come back, for a moment: without this, those released
    /// together come back together just after the next group left, and
    /// the threads of a busy process split into two halves that take turns
    /// (two round trips a transaction instead of one). The wait is bounded
    /// by a quarter of that commit's time and `GATHER_MAX`, counted from
    /// its end; none when it ended longer ago than it took (the process
    /// was idle), or when it had one committer (one thread writing alone
    /// never waits).
    fn gather(&self, mut others: Vec<Arc<Slot>>) -> Vec<Arc<Slot>> {
        let mut q = self.state.lock();
        if let Some(last) = q
            .last
            .filter(|l| l.committers > 1 && l.at.elapsed() < l.took)
        {
            let until = last.at + (last.took / 4).min(GATHER_MAX);
            while 1 + others.len() + q.waiting.len() < last.committers {
                if self.arrived.wait_until(&mut q, until).timed_out() {
                    break;
                }
            }
        }
        others.append(&mut q.waiting);
        others
    }
}

/// Commits the leader `me` and `others` as one transaction; tells each of
/// `others` its outcome and returns the leader's.
fn commit_group(me: Transaction, others: &[Arc<Slot>]) -> Result<CommitInfo> {
    let db = me.db.clone();
    let mut members: Vec<(Option<&Arc<Slot>>, Transaction)> = vec![(None, me)];
    members.extend(
        others
            .iter()
            .filter_map(|s| s.take_tx().map(|tx| (Some(s), tx))),
    );
    let mut outcomes: Vec<Option<Result<CommitInfo>>> = members.iter().map(|_| None).collect();
    let latest = match db.registry.catch_up(false) {
        Ok(s) => s,
        Err(e) => {
            return finish(members, outcomes, &Err(e));
        }
    };
    // The group's own time limit: a member near its deadline must not time
    // out the others (one past it is left out at `join`).
    let now = Instant::now();
    let timeout = members
        .iter()
        .map(|(_, m)| m.deadline().saturating_duration_since(now))
        .max()
        .unwrap_or_default();
    let mut group = Transaction::new(
        db.clone(),
        TxOptions {
            mode: TxMode::ReadWrite,
            timeout,
            sync: members.iter().any(|(_, m)| m.opts.sync),
        },
        View::new(latest.clone(), db.loader.clone()),
    );
    let mut joined = 0u64;
    for (i, (_, m)) in members.iter_mut().enumerate() {
        let unchanged = m.view.dirty.is_empty() && m.view.freed.is_empty();
        if m.ops.is_empty() || unchanged {
            outcomes[i] = Some(commit_one(m));
            continue;
        }
        match join(&mut group, m, latest.seq) {
            Ok(()) => joined += 1,
            Err(e) => {
                if e.is_retryable() {
                    db.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                }
                outcomes[i] = Some(Err(e));
            }
        }
    }
    let result = if joined == 0 {
        Ok(CommitInfo {
            seq: latest.seq,
            merged: false,
        })
    } else {
        let r = commit_one(&mut group);
        if r.is_ok() {
            db.stats
                .commits
                .fetch_add(joined.saturating_sub(1), Ordering::Relaxed);
        }
        r.map(|info| CommitInfo {
            seq: info.seq,
            merged: true,
        })
    };
    finish(members, outcomes, &result)
}

/// Adds member `m` to `group`: validated against the log since its snapshot
/// (up to `latest`) and against the members already in, its operations
/// replayed onto the group's view, its reads, writes and values taken over.
fn join(group: &mut Transaction, m: &mut Transaction, latest: u64) -> Result<()> {
    m.check_deadline()?;
    if latest > m.view.base.seq {
        validate(m, &m.db.registry.records(m.view.base.seq, latest)?)?;
    }
    let (writes, replaced_trees) = record_writes(group);
    let before = CommitRecord {
        txid: group.id,
        writes,
        replaced_trees,
        ..CommitRecord::empty(latest, latest.saturating_sub(1))
    };
    validate(m, &[Arc::new(before)])?;
    let mut view = group.view.clone();
    let created = replay_ops(&mut view, &m.ops)?;
    group.view = view;
    group.ensure_created.extend(created);
    group.ops.append(&mut m.ops);
    for (tree, r) in std::mem::take(&mut m.reads) {
        let mine = group.reads.entry(tree).or_default();
        mine.points.extend(r.points);
        mine.ranges.extend(r.ranges);
    }
    for (tree, keys) in std::mem::take(&mut m.writes) {
        group.writes.entry(tree).or_default().extend(keys);
    }
    group.ensured.append(&mut m.ensured);
    group.values.extend(m.values.drain());
    group.value_bytes += std::mem::take(&mut m.value_bytes);
    Ok(())
}

/// Tells every member other than the leader its outcome (the group's
/// `result` for those that joined) and returns the leader's.
fn finish(
    members: Vec<(Option<&Arc<Slot>>, Transaction)>,
    outcomes: Vec<Option<Result<CommitInfo>>>,
    result: &Result<CommitInfo>,
) -> Result<CommitInfo> {
    let mut lead = None;
    for ((slot, mut m), outcome) in members.into_iter().zip(outcomes) {
        let outcome = outcome.unwrap_or_else(|| {
            if result.is_ok() {
                // Its values went out with the group's record.
                m.landed = true;
            }
            share(result)
        });
        drop(m);
        match slot {
            Some(s) => s.set(Outcome::Done(outcome)),
            None => lead = Some(outcome),
        }
    }
    lead.unwrap_or_else(|| share(result))
}

/// A copy of the group's outcome for one member.
fn share(r: &Result<CommitInfo>) -> Result<CommitInfo> {
    match r {
        Ok(info) => Ok(*info),
        Err(Error::Conflict { tree, reason }) => Err(Error::Conflict {
            tree: tree.clone(),
            reason: reason.clone(),
        }),
        Err(Error::Timeout(d)) => Err(Error::Timeout(*d)),
        Err(e) => Err(Error::Io {
            path: "group commit".into(),
            source: std::io::Error::other(e.to_string()),
        }),
    }
}
