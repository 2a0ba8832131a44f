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
//!   them: each batch of new blobs gets one (`intents/<fresh id>`, written
//!   at most once a second while values come in, and at once when a value
//!   is waited for), and the background pass rewrites old ones well before
//!   their deadline, so that no GC takes them however long the file stays
//!   open. Until listed, a blob is younger than any GC's retention window.
//!
//! A commit that puts a stashed value marks it landed at its commit point;
//! what is still unlanded when the stash is dropped is deleted.

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

/// A value written to the store by a [`Stash`], for a later transaction to
/// put with [`crate::Transaction::put_stashed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StashedValue {
    pub(crate) id: BlobId,
    pub(crate) len: u64,
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
}

/// Value blobs written ahead of their transaction; see the module comment.
pub struct Stash {
    pub(crate) inner: Arc<StashInner>,
}

#[derive(Default)]
struct State {
    /// Written or being written, and in no landed commit yet.
    live: HashSet<BlobId>,
    /// Background writes under way.
    writing: HashSet<BlobId>,
    /// Writes that failed, with what went wrong.
    failed: HashMap<BlobId, String>,
    /// Live blobs no intent record lists yet (cluster mode).
    unlisted: Vec<BlobId>,
    /// Intent records written: (name, blobs listed, when written).
    batches: Vec<(TxId, Vec<BlobId>, Instant)>,
    /// When a batch was last written.
    listed_at: Option<Instant>,
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
        let inner = &self.inner;
        let id = BlobId::fresh();
        let len = data.len() as u64;
        {
            let mut st = inner.state.lock();
            let max = if inner.db.loader.store.probe_is_cheap() {
                MAX_WRITING
            } else {
                REMOTE_MAX_WRITING
            };
            while st.writing.len() >= max {
                inner.changed.wait(&mut st);
            }
            st.live.insert(id);
            st.writing.insert(id);
            if inner.db.coord.is_shared() {
                st.unlisted.push(id);
            }
        }
        // Before the write: GC lists blobs first, then reads the in-flight set.
        inner.db.inflight.lock().insert(id);
        inner
            .db
            .stats
            .stashed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let due = inner
            .state
            .lock()
            .listed_at
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due {
            inner.list_new()?;
        }
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
                if let Err(e) = r {
                    st.failed.insert(id, e.to_string());
                }
                job_inner.changed.notify_all();
            }),
        );
        Ok(StashedValue { id, len })
    }

    /// Waits until `value` is in the store; its write's failure, if any.
    pub fn wait(&self, value: &StashedValue) -> Result<()> {
        self.inner.wait(value.id)
    }

    /// Reads a stashed value back (its writer reading what it wrote).
    pub fn read(&self, value: &StashedValue) -> Result<Vec<u8>> {
        self.inner.wait(value.id)?;
        let v = self.inner.db.loader.value(value.id)?;
        Ok(v.as_ref().clone())
    }

    /// Drops a value no transaction will put (overwritten before its
    /// commit): its blob is deleted.
    pub fn discard(&self, value: &StashedValue) {
        if self.inner.state.lock().live.remove(&value.id) {
            self.inner.delete(vec![value.id]);
        }
    }
}

impl StashInner {
    /// Waits until blob `id` is written and listed where other processes'
    /// GC looks.
    pub(crate) fn wait(&self, id: BlobId) -> Result<()> {
        if self.state.lock().unlisted.contains(&id) {
            self.list_new()?;
        }
        let mut st = self.state.lock();
        while st.writing.contains(&id) {
            self.changed.wait(&mut st);
        }
        match st.failed.get(&id) {
            Some(msg) => Err(Error::Io {
                path: blob_path(id).to_string(),
                source: std::io::Error::other(msg.clone()),
            }),
            None if st.live.contains(&id) => Ok(()),
            None => Err(Error::InvalidArgument(format!(
                "value {id} is not held by this stash"
            ))),
        }
    }

    /// A commit naming `id` landed: the blob is reachable now.
    pub(crate) fn landed(&self, id: BlobId) {
        self.state.lock().live.remove(&id);
        self.db.inflight.lock().remove(&id);
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

    /// Cluster mode: writes one intent record listing the blobs no record
    /// lists yet.
    fn list_new(&self) -> Result<()> {
        let _one = self.listing.lock();
        let batch = {
            let mut st = self.state.lock();
            st.listed_at = Some(Instant::now());
            std::mem::take(&mut st.unlisted)
        };
        if batch.is_empty() {
            return Ok(());
        }
        let name = TxId::fresh();
        if let Err(e) = self.write_intent(name, &batch) {
            self.state.lock().unlisted.extend(batch);
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
        self.list_new()?;
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
                        .filter(|b| st.live.contains(b))
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
        let left: Vec<BlobId> = self.state.lock().live.drain().collect();
        if !left.is_empty() {
            self.delete(left);
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
