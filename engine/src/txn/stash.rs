//! Value blobs written ahead of the transaction that will put them.
//!
//! A file written in big sequential pieces hands each full chunk to a
//! [`Stash`] as soon as it is complete: writer threads put it in the store
//! while the program is still writing, so the commit at close writes only
//! its record instead of every chunk (and the bytes are not buffered twice).
//! Until a landed commit names them, stashed blobs are garbage to everyone
//! but their stash, which keeps them alive:
//!
//! - in this process, through the in-flight set GC reads;
//! - for other processes (cluster mode), through intent records listing
//!   them: the blobs not listed yet get one (`intents/<fresh id>`) once the
//!   oldest of them is `Options::stash_list_after` old (30 s), when a value
//!   is put or waited for or by the background pass, which also rewrites
//!   old records well before their deadline, so that no GC takes them
//!   however long the file stays open. Until listed, a blob is younger than
//!   any GC's retention window (never under 2 minutes in cluster mode), so
//!   a file written and closed within seconds costs no intent record.
//!
//! A commit that puts a stashed value marks it landed at its commit point;
//! what is still unlanded when the stash is dropped is deleted.
//!
//! On S3 a run of values can go out as one blob ([`Stash::put_run`]): each
//! is a piece of it (a [`crate::Value::Slice`] once put), and the blob is
//! deleted only when no piece of it landed.

use super::recovery::Intent;
use super::stager;
use crate::codec;
use crate::ctx::DbInner;
use crate::error::{Error, Result};
use crate::ids::{BlobId, TxId};
use crate::log::now_ms;
use crate::store::{blob_path, intent_path};
use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Writes one stash may have under way before `put` waits: a few for a
/// local folder, where more only queue on the disk; more on S3, where each
/// waits a round trip.
const MAX_WRITING: usize = 8;
const REMOTE_MAX_WRITING: usize = 32;
/// Bytes one stash may have under way before `put` waits (runs of chunks
/// are 4 MiB each): what a big file's writer holds in memory is bounded.
const MAX_WRITING_BYTES: u64 = 64 << 20;

/// A value written to the store by a [`Stash`], for a later transaction to
/// put with [`crate::Transaction::put_stashed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StashedValue {
    pub(crate) id: BlobId,
    pub(crate) len: u64,
    /// Where the value starts in the blob's data.
    pub(crate) at: u64,
    /// Data bytes of the whole blob (more than `len` for a piece of a run).
    pub(crate) total: u64,
}

impl StashedValue {
    /// Length of the value in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for a zero-length value.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the value starts in its blob's data (0 unless it is a piece
    /// of a run).
    pub fn offset(&self) -> u64 {
        self.at
    }

    /// True when the value is the whole of its blob.
    pub(crate) fn is_whole(&self) -> bool {
        self.at == 0 && self.len == self.total
    }

    fn bytes(&self) -> std::ops::Range<usize> {
        self.at as usize..(self.at + self.len) as usize
    }
}

/// A stashed blob some of whose pieces no landed commit names yet.
#[derive(Default)]
struct Live {
    /// Starts of its pieces neither landed nor discarded.
    waiting: std::collections::BTreeSet<u64>,
    /// Some piece landed: the log names the blob, so the stash must not
    /// delete it (GC decides, by reachability).
    landed: bool,
}

/// Value blobs written ahead of their transaction; see the module comment.
pub struct Stash {
    pub(crate) inner: Arc<StashInner>,
}

#[derive(Default)]
struct State {
    /// Written or being written, with pieces in no landed commit yet.
    live: HashMap<BlobId, Live>,
    /// Background writes under way.
    writing: HashSet<BlobId>,
    /// Their bytes.
    writing_bytes: u64,
    /// Writes that failed, with what went wrong.
    failed: HashMap<BlobId, String>,
    /// Live blobs no intent record lists yet (cluster mode).
    unlisted: Vec<BlobId>,
    /// When the oldest of them was written.
    unlisted_since: Option<Instant>,
    /// Intent records written: (name, blobs listed, when written).
    batches: Vec<(TxId, Vec<BlobId>, Instant)>,
}

pub(crate) struct StashInner {
    db: Arc<DbInner>,
    state: Mutex<State>,
    changed: Condvar,
    /// Serializes intent writes (they happen outside `state`'s lock).
    listing: Mutex<()>,
}

/// The stashes of one open volume, kept so the background pass can refresh
/// their intent records; owned by [`crate::Db`].
#[derive(Default)]
pub(crate) struct LiveStashes(Mutex<Vec<std::sync::Weak<StashInner>>>);

impl LiveStashes {
    /// Keeps the intent records of live stashes ahead of their deadlines,
    /// and forgets stashes that are gone.
    pub(crate) fn refresh(&self) {
        let live: Vec<Arc<StashInner>> = {
            let mut stashes = self.0.lock();
            stashes.retain(|w| w.strong_count() > 0);
            stashes.iter().filter_map(|w| w.upgrade()).collect()
        };
        for s in live {
            if let Err(e) = s.refresh() {
                tracing::warn!(error = %e, "could not refresh a stash's intent record");
            }
        }
    }
}

impl Stash {
    pub(crate) fn new(db: Arc<DbInner>, live: &LiveStashes) -> Stash {
        let inner = Arc::new(StashInner {
            db: db.clone(),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            listing: Mutex::new(()),
        });
        live.0.lock().push(Arc::downgrade(&inner));
        Stash { inner }
    }

    /// Starts writing `data` as one value blob and returns its handle at
    /// once (waiting first while too many writes are under way).
    pub fn put(&self, data: Vec<u8>) -> Result<StashedValue> {
        let len = data.len();
        let mut values = self.put_run(data, &[len])?;
        values
            .pop()
            .ok_or_else(|| Error::InvalidArgument("an empty run".into()))
    }

    /// Starts writing `data` as one blob holding consecutive values of the
    /// lengths `pieces` (which add up to its length), and returns their
    /// handles at once: one store request for a run of a file's chunks.
    pub fn put_run(&self, data: Vec<u8>, pieces: &[usize]) -> Result<Vec<StashedValue>> {
        if pieces.iter().sum::<usize>() != data.len() || pieces.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "pieces of {} bytes in all do not make a run of {}",
                pieces.iter().sum::<usize>(),
                data.len()
            )));
        }
        let inner = &self.inner;
        let id = BlobId::fresh();
        let total = data.len() as u64;
        let mut values = Vec::with_capacity(pieces.len());
        let mut at = 0u64;
        for &n in pieces {
            values.push(StashedValue {
                id,
                len: n as u64,
                at,
                total,
            });
            at += n as u64;
        }
        {
            let mut st = inner.state.lock();
            let max = if inner.db.loader.store.probe_is_cheap() {
                MAX_WRITING
            } else {
                REMOTE_MAX_WRITING
            };
            while st.writing.len() >= max
                || (!st.writing.is_empty() && st.writing_bytes + total > MAX_WRITING_BYTES)
            {
                inner.changed.wait(&mut st);
            }
            st.writing_bytes += total;
            st.live.insert(
                id,
                Live {
                    waiting: values.iter().map(|v| v.at).collect(),
                    landed: false,
                },
            );
            st.writing.insert(id);
            if inner.db.coord.is_shared() {
                st.unlisted.push(id);
                st.unlisted_since.get_or_insert_with(Instant::now);
            }
        }
        // Before the write: GC lists blobs first, then reads the in-flight set.
        inner.db.inflight.lock().insert(id);
        inner
            .db
            .stats
            .stashed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        inner.list_if_due(inner.db.opts.stash_list_after)?;
        let job_inner = inner.clone();
        stager::background(
            &inner.db.cleanups,
            !inner.db.loader.store.probe_is_cheap(),
            Box::new(move || {
                let r = job_inner
                    .db
                    .loader
                    .store
                    .put_fresh(&blob_path(id), codec::frame_value(&data));
                let mut st = job_inner.state.lock();
                st.writing.remove(&id);
                st.writing_bytes -= total;
                if let Err(e) = r {
                    st.failed.insert(id, e.to_string());
                }
                job_inner.changed.notify_all();
            }),
        );
        Ok(values)
    }

    /// Waits until `value` is in the store; its write's failure, if any.
    pub fn wait(&self, value: &StashedValue) -> Result<()> {
        self.inner.wait(value.id)
    }

    /// Reads a stashed value back (its writer reading what it wrote).
    pub fn read(&self, value: &StashedValue) -> Result<Vec<u8>> {
        self.inner.wait(value.id)?;
        if value.is_whole() {
            let v = self.inner.db.loader.value(value.id)?;
            return Ok(v.as_ref().clone());
        }
        self.inner.db.loader.value_piece(value.id, value.bytes())
    }

    /// Drops a value no transaction will put (overwritten before its
    /// commit): its blob is deleted once none of its pieces is waiting and
    /// none landed.
    pub fn discard(&self, value: &StashedValue) {
        let gone = {
            let mut st = self.inner.state.lock();
            let Some(live) = st.live.get_mut(&value.id) else {
                return;
            };
            live.waiting.remove(&value.at);
            if !live.waiting.is_empty() {
                return;
            }
            let landed = live.landed;
            st.live.remove(&value.id);
            !landed
        };
        if gone {
            self.inner.delete(vec![value.id]);
        } else {
            self.inner.db.inflight.lock().remove(&value.id);
        }
    }
}

impl StashInner {
    /// Waits until blob `id` is written (and the blobs waiting to be
    /// listed for other processes' GC are, if they are due).
    pub(crate) fn wait(&self, id: BlobId) -> Result<()> {
        self.list_if_due(self.db.opts.stash_list_after)?;
        let mut st = self.state.lock();
        while st.writing.contains(&id) {
            self.changed.wait(&mut st);
        }
        match st.failed.get(&id) {
            Some(msg) => Err(Error::Io {
                path: blob_path(id).to_string(),
                source: std::io::Error::other(msg.clone()),
            }),
            None if st.live.contains_key(&id) => Ok(()),
            None => Err(Error::InvalidArgument(format!(
                "value {id} is not held by this stash"
            ))),
        }
    }

    /// A commit naming `value` landed: its blob is reachable now, and
    /// needs the stash's keeping no more once no piece of it waits.
    pub(crate) fn landed(&self, value: &StashedValue) {
        let mut st = self.state.lock();
        let Some(live) = st.live.get_mut(&value.id) else {
            return;
        };
        live.landed = true;
        live.waiting.remove(&value.at);
        if live.waiting.is_empty() {
            st.live.remove(&value.id);
            drop(st);
            self.db.inflight.lock().remove(&value.id);
        }
    }

    /// Deletes blobs no commit will name, once their writes are done.
    fn delete(&self, ids: Vec<BlobId>) {
        {
            let mut st = self.state.lock();
            while ids.iter().any(|id| st.writing.contains(id)) {
                self.changed.wait(&mut st);
            }
        }
        // The in-flight set keeps GC off them until the delete is done.
        let (db, ids2) = (self.db.clone(), ids);
        stager::cleanup(
            &self.db.cleanups,
            !self.db.loader.store.probe_is_cheap(),
            Box::new(move || {
                for id in &ids2 {
                    if let Err(e) = db.loader.store.delete(&blob_path(*id)) {
                        tracing::debug!(blob = %id, error = %e, "stashed value left for GC");
                    }
                }
                let mut inflight = db.inflight.lock();
                for id in &ids2 {
                    inflight.remove(id);
                }
            }),
        );
    }

    /// Cluster mode: lists the blobs no record lists yet once the oldest
    /// of them is `after` old.
    fn list_if_due(&self, after: Duration) -> Result<()> {
        let due = self
            .state
            .lock()
            .unlisted_since
            .is_some_and(|t| t.elapsed() >= after);
        if due {
            self.list_new()?;
        }
        Ok(())
    }

    /// Cluster mode: writes one intent record listing the blobs no record
    /// lists yet.
    fn list_new(&self) -> Result<()> {
        let _one = self.listing.lock();
        let (batch, since) = {
            let mut st = self.state.lock();
            (std::mem::take(&mut st.unlisted), st.unlisted_since.take())
        };
        if batch.is_empty() {
            return Ok(());
        }
        let name = TxId::fresh();
        if let Err(e) = self.write_intent(name, &batch) {
            let mut st = self.state.lock();
            st.unlisted.extend(batch);
            st.unlisted_since = since;
            return Err(e);
        }
        self.state
            .lock()
            .batches
            .push((name, batch, Instant::now()));
        Ok(())
    }

    fn write_intent(&self, name: TxId, blobs: &[BlobId]) -> Result<()> {
        let intent = Intent {
            txid: name,
            time_ms: now_ms(),
            deadline_ms: now_ms() + self.db.opts.gc_retention.as_millis() as u64,
            base_seq: self.db.registry.current().seq,
            blobs: blobs.to_vec(),
        };
        self.db.loader.store.put(
            &intent_path(name),
            codec::encode(codec::Kind::Intent, &intent),
        )
    }

    /// Cluster mode: rewrites the records a quarter of GC's retention old
    /// (well before their deadline), without the blobs that landed or went;
    /// deletes those left with nothing to list.
    pub(crate) fn refresh(&self) -> Result<()> {
        if !self.db.coord.is_shared() {
            return Ok(());
        }
        // Half the delay: the next pass may be a whole interval away.
        self.list_if_due(self.db.opts.stash_list_after / 2)?;
        let _one = self.listing.lock();
        let old_after = self.db.opts.gc_retention / 4;
        let stale: Vec<(TxId, Vec<BlobId>)> = {
            let st = self.state.lock();
            st.batches
                .iter()
                .filter(|(_, _, at)| at.elapsed() >= old_after)
                .map(|(name, blobs, _)| {
                    let still: Vec<BlobId> = blobs
                        .iter()
                        .filter(|b| st.live.contains_key(b))
                        .copied()
                        .collect();
                    (*name, still)
                })
                .collect()
        };
        for (name, blobs) in stale {
            if blobs.is_empty() {
                self.db.loader.store.delete(&intent_path(name))?;
            } else {
                self.write_intent(name, &blobs)?;
            }
            let mut st = self.state.lock();
            if blobs.is_empty() {
                st.batches.retain(|(n, _, _)| *n != name);
            } else if let Some(b) = st.batches.iter_mut().find(|(n, _, _)| *n == name) {
                *b = (name, blobs, Instant::now());
            }
        }
        Ok(())
    }
}

impl Drop for StashInner {
    fn drop(&mut self) {
        let (left, kept): (Vec<_>, Vec<_>) =
            self.state.lock().live.drain().partition(|(_, l)| !l.landed);
        if !left.is_empty() {
            self.delete(left.into_iter().map(|(id, _)| id).collect());
        }
        // Named by a landed commit: GC decides, by reachability.
        let mut inflight = self.db.inflight.lock();
        for (id, _) in kept {
            inflight.remove(&id);
        }
        let batches = std::mem::take(&mut self.state.lock().batches);
        if !batches.is_empty() {
            let store = self.db.loader.store.clone();
            stager::cleanup(
                &self.db.cleanups,
                !self.db.loader.store.probe_is_cheap(),
                Box::new(move || {
                    for (name, _, _) in batches {
                        if let Err(e) = store.delete(&intent_path(name)) {
                            tracing::warn!(error = %e, "could not delete a stash's intent record; recovery will");
                        }
                    }
                }),
            );
        }
    }
}
