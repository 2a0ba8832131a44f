//! The shared context of an open volume: what transactions, the commit, the
//! background pass and GC all reach (store, log, registry, cache,
//! coordinator, counters). Below `txn/` and `maint/`; [`crate::Db`] owns it.

use crate::coord::{Coordinator, STAMP_GRACE};
use crate::error::Result;
use crate::ids::{BlobId, TxId};
use crate::log::{RegState, Registry};
use crate::options::Options;
use crate::store::ExclusiveLock;
use crate::tree::Loader;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

/// Counters behind [`crate::DbStats`].
#[derive(Default)]
pub(crate) struct Stats {
    pub commits: AtomicU64,
    pub merges: AtomicU64,
    pub conflicts: AtomicU64,
    pub collisions: AtomicU64,
    pub queued: AtomicU64,
    pub retries: AtomicU64,
    pub stashed: AtomicU64,
    pub ahead: AtomicU64,
    pub ahead_void: AtomicU64,
    pub holes: AtomicU64,
}

/// One open volume's shared state.
pub(crate) struct DbInner {
    pub loader: Arc<Loader>,
    pub registry: Registry,
    pub coord: Arc<dyn Coordinator>,
    pub opts: Options,
    pub stats: Stats,
    /// Whether commits go ahead of the log's end (`txn/ahead.rs`).
    pub ahead_credit: crate::txn::Credit,
    /// Serializes this process's claims of log slots.
    pub commit_serial: parking_lot::Mutex<()>,
    /// Recent commits of this handle, told apart from other processes' ones.
    pub own_commits: parking_lot::Mutex<lru::LruCache<TxId, ()>>,
    /// Blobs written by this process's commits that have not landed yet: GC
    /// keeps them (in embedded mode they have no intent record to protect them).
    pub inflight: parking_lot::Mutex<std::collections::HashSet<BlobId>>,
    /// Clean-up jobs (intent deletes) still queued: waited for at close.
    pub cleanups: Arc<std::sync::atomic::AtomicUsize>,
    /// States of snapshots read lately, by seq: rebuilding one replays
    /// a checkpoint and part of the log.
    pub pinned: parking_lot::Mutex<lru::LruCache<u64, Arc<RegState>>>,
    /// Held by a GC pass and by a snapshot being taken: in one process a
    /// pass never misses a snapshot made while it runs.
    pub gc_turn: parking_lot::Mutex<()>,
    /// Held for as long as the volume is open (embedded mode).
    pub _exclusive: Option<ExclusiveLock>,
}

/// A shared-mode process idle this long re-reads the newest checkpoint before
/// trusting its position in the log (GC may have trimmed records it never saw).
pub(crate) const RESYNC_AFTER: Duration = Duration::from_secs(60);

impl DbInner {
    /// The newest state, as cheaply as the mode allows: embedded mode knows it
    /// already; shared mode on a local store probes the log's next slot;
    /// on a network store it reads the pushed stamp (not `strict`) or asks
    /// the coordinator's, reads the records up to it, and probes the store
    /// past it only when the stamp is missing or behind, or when this
    /// process has not found the log's end itself within `STAMP_GRACE`.
    pub(crate) fn fresh_state(&self, strict: bool) -> Result<Arc<RegState>> {
        if !self.coord.is_shared() {
            return self.registry.catch_up(false);
        }
        if self.registry.idle_for() > RESYNC_AFTER {
            self.registry.resync()?;
        }
        if self.loader.store.probe_is_cheap() {
            // Asking the log for the next slot is about as cheap as reading
            // a pushed stamp, and exact: every commit point is a slot in it
            // (a pushed stamp may still be on its way, behind a commit that
            // returned).
            if let Some(state) = self.registry.current_if_newest() {
                return Ok(state);
            }
            return self.registry.catch_up(true);
        }
        let local = self.registry.current();
        // A stamp is trusted to be the log's end while this process found
        // the end itself within the grace: a commit whose stamp did not go
        // out waits that long before it returns (see `STAMP_GRACE`).
        // Otherwise the store is asked past the stamp.
        let ended = self.registry.ended_within(STAMP_GRACE);
        let pushed = if strict || !self.opts.pushed_stamps {
            None
        } else {
            self.coord.stamp_hint()
        };
        if let Some(h) = pushed {
            // Behind us is normal here: our own commits' pushes are in flight.
            return match h {
                h if h <= local.seq => Ok(local),
                h if ended => self.registry.catch_up_through(h),
                h => self.registry.catch_up_past(h),
            };
        }
        let epoch = self.coord.epoch();
        match self.coord.stamp() {
            // Behind us: this process's own newest commit is folded in
            // before its stamp is raised. Every commit that raised the
            // stamp is in our state then, as when the stamp is our newest
            // record. (A server that lost or rolled back the stamp answers
            // none: it is distrusted until a probe vouches again.)
            Some(s) if s <= local.seq && ended => Ok(local),
            Some(s) if ended => self.registry.catch_up_through(s),
            // A probe starts past our state, whatever the stamp.
            Some(s) => self.registry.catch_up_past(s),
            None => {
                // Redis lost the stamp (restart), or was replaced since it
                // last vouched for one: the store decides.
                let st = self.registry.catch_up(true)?;
                self.coord.publish_probed(st.seq, epoch);
                Ok(st)
            }
        }
    }
}
