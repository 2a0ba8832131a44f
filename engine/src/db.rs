//! `Db`: one open volume: its store, registry, coordinator, cache and the
//! background pass; the entry point for transactions.

use crate::codec::{self, Kind};
use crate::coord::{Coordinator, InProcessCoordinator};
use crate::ctx::{DbInner, Stats};
use crate::error::{Error, Result};
use crate::ids::{BlobId, NodeId, TxId};
use crate::log::{now_ms, CommitRecord, NodeChange, PackedNode, Registry};
use crate::maint::{GcReport, SnapshotInfo};
use crate::options::{AtRest, Options};
use crate::store::{
    folder_lock, format_supported, log_path, read_lock, volume_path, BlobStore, ExclusiveLock,
    Sealer, StoreLocation, VolumeMarker, VOLUME_FORMAT,
};
use crate::tree::{Loader, Node, View};
use crate::txn::{Group, LiveStashes};
use crate::txn::{Transaction, TxMode, TxOptions};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// How long a node a meld made stays only in memory while it is in the
/// newest state: most are replaced sooner (a busy directory's leaves), and
/// cost no write at all.
const MELDED_WRITE_AFTER: Duration = Duration::from_secs(60);

/// Counters since the volume was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DbStats {
    /// Commits that wrote something.
    pub commits: u64,
    /// Commits merged onto changes made since their snapshot.
    pub merges: u64,
    /// Commits refused with a conflict.
    pub conflicts: u64,
    /// Times a commit found its log slot taken and moved on.
    pub collisions: u64,
    /// Commits that queued for a turn at the log (S3 with Redis): refused
    /// at the commit point, or finding their position another's.
    pub queued: u64,
    /// Commits whose record was placed ahead of the log's end and
    /// committed (S3 with Redis; `ahead_void`: placed ahead, overtaken by
    /// a record before it, and started over).
    pub ahead: u64,
    /// Records placed ahead that were void.
    pub ahead_void: u64,
    /// Records placed ahead (this process's or others') that this process
    /// folded melded: a node they changed had changed meanwhile, and their
    /// keys were replayed onto it.
    pub melds: u64,
    /// Log positions this process filled with an empty record because
    /// their holder never wrote them.
    pub holes: u64,
    /// Transactions `run` retried.
    pub retries: u64,
    /// Values written ahead of their commit through a [`crate::Stash`].
    pub stashed: u64,
    /// Node cache hits.
    pub cache_hits: u64,
    /// Node cache misses.
    pub cache_misses: u64,
    /// Bytes the node cache holds.
    pub cache_bytes: u64,
    /// Value chunk cache hits.
    pub value_hits: u64,
    /// Value chunk cache misses.
    pub value_misses: u64,
    /// Bytes the value chunk cache holds.
    pub value_bytes: u64,
}

/// An error type `Db::run_with` can retry on.
pub trait RetryableError: From<Error> {
    /// True when the transaction lost a race and should run again.
    fn is_conflict(&self) -> bool;
}

impl RetryableError for Error {
    fn is_conflict(&self) -> bool {
        self.is_retryable()
    }
}

/// Begins read-only transactions on an open volume; see [`Db::reader`].
/// It does not keep the volume open: once the `Db` is dropped, `begin` fails.
#[derive(Clone)]
pub struct Reader {
    inner: std::sync::Weak<DbInner>,
}

impl Reader {
    /// Begins a read-only transaction on the newest state; None once the
    /// volume is closed.
    pub fn begin(&self) -> Option<Result<Transaction>> {
        let inner = self.inner.upgrade()?;
        let state = match inner.fresh_state(false) {
            Ok(s) => s,
            Err(e) => return Some(Err(e)),
        };
        Some(Ok(read_only_tx(inner, state)))
    }
}

/// A read-only transaction on `state`.
fn read_only_tx(inner: Arc<DbInner>, state: Arc<crate::log::RegState>) -> Transaction {
    let view = View::new(state, inner.loader.clone());
    let opts = TxOptions {
        mode: TxMode::ReadOnly,
        timeout: inner.opts.tx_timeout,
        sync: false,
    };
    Transaction::new(inner, opts, view)
}

/// An open volume.
pub struct Db {
    inner: Arc<DbInner>,
    stashes: Arc<LiveStashes>,
    /// This process's commit queue (group commit).
    group: Arc<Group>,
    background: Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

/// Formats an empty location, or checks that it holds a volume; returns its
/// id. Either way the store seals objects as the volume's marker says from
/// here on (`store/seal.rs`).
fn format_or_check(store: &BlobStore, at_rest: &AtRest) -> Result<u128> {
    let read_only = store.is_read_only();
    if let Some(data) = read_marker(store)? {
        let m = VolumeMarker::decode(&data).map_err(|e| {
            Error::NotAVolume(format!("{}: not a sopfs volume ({e})", store.location()))
        })?;
        if !format_supported(m.format) {
            return Err(Error::NotAVolume(format!(
                "{}: volume format {} is not supported by this version",
                store.location(),
                m.format
            )));
        }
        let volume = store.location().to_string();
        let sealer = Sealer::for_volume(m.at_rest.as_ref(), at_rest.key.as_ref(), &volume)?;
        store.set_sealer(sealer);
        if m.format < VOLUME_FORMAT && !read_only {
            // From now on it may hold what older versions cannot read: they
            // must refuse it rather than miss part of its log.
            let upgraded = VolumeMarker {
                format: VOLUME_FORMAT,
                ..m
            };
            store.put(&volume_path(), upgraded.encode())?;
            store.sync(&[volume_path()])?;
            tracing::info!(
                from = m.format,
                to = VOLUME_FORMAT,
                "volume format upgraded"
            );
            return Ok(upgraded.id);
        }
        return Ok(m.id);
    }
    if read_only {
        return Err(Error::NotAVolume(format!(
            "{}: no sopfs volume here (a read-only open formats nothing)",
            store.location()
        )));
    }
    if let Some(root) = store.location().local_root() {
        crate::store::refuse_foreign_folder(root)?;
    }
    let (sealer, spec) = match Sealer::for_format(at_rest.compression, at_rest.key.as_ref())? {
        Some((sealer, spec)) => (Some(sealer), Some(spec)),
        None => (None, None),
    };
    store.set_sealer(sealer);
    // The catalog root is created by log record 1; create-if-absent makes a
    // concurrent format harmless (one wins, the other adopts it).
    let blob = BlobId::fresh();
    let rec = CommitRecord {
        seq: 1,
        txid: TxId::fresh(),
        time_ms: now_ms(),
        writes: Vec::new(),
        replaced_trees: Vec::new(),
        base: 0,
        reads: Vec::new(),
        ops: Vec::new(),
        void: false,
        melded: false,
        nodes: vec![NodeChange {
            node: NodeId::CATALOG_ROOT,
            old: None,
            new: Some(blob),
            packed: true,
        }],
        packed: vec![PackedNode {
            blob,
            body: Node::empty_leaf().encode_payload(),
        }],
        values: Vec::new(),
    };
    // Losing this race is fine: the winner's record 1 holds its own root.
    // Record 1, then the marker, each durable before the next: a power cut
    // right after a format must leave a volume or an empty folder, never a
    // marker without the catalog's root or an empty marker.
    store.create(&log_path(1), codec::encode(Kind::Record, &rec))?;
    store.sync(&[log_path(1)])?;
    let marker = VolumeMarker {
        name: "sopfs".into(),
        format: VOLUME_FORMAT,
        id: rand::random(),
        created_ms: now_ms(),
        at_rest: spec,
    };
    // Two formatters racing: the first marker wins, the other adopts it.
    if !store.create(&volume_path(), marker.encode())? {
        let id = format_or_check(store, at_rest)?;
        // Record 1 may be this formatter's and the marker the other's: if
        // they were sealed differently, the volume cannot open. Said now,
        // while it is still empty, rather than at every later open.
        let unreadable = match store.get(&log_path(1)) {
            Ok(Some(data)) => crate::log::decode_record(log_path(1).as_ref(), &data).is_err(),
            Err(Error::Corrupted { .. }) => true,
            Ok(None) | Err(_) => false,
        };
        if unreadable {
            return Err(Error::NotAVolume(format!(
                "{}: another format with other compression or key raced this one; \
                 remove the location and format it again",
                store.location()
            )));
        }
        return Ok(id);
    }
    store.sync(&[volume_path()])?;
    Ok(marker.id)
}

fn read_marker(store: &BlobStore) -> Result<Option<Vec<u8>>> {
    Ok(store.get(&volume_path())?.map(|b| b.to_vec()))
}

impl Db {
    /// Opens (formatting if empty) a volume in embedded mode: one process,
    /// in-process locks. A second process on the same local folder is refused.
    pub fn open(location: StoreLocation, opts: Options) -> Result<Db> {
        if opts.read_only {
            // Nobody writes through this process: no coordinator needed,
            // on S3 either.
            let lock = read_lock(&location)?;
            let coord = Arc::new(InProcessCoordinator::new());
            return Self::open_inner(location, opts, coord, lock);
        }
        if matches!(location, StoreLocation::S3 { .. }) {
            // No flock over S3: two embedded daemons could not see each other.
            return Err(Error::InvalidArgument(format!(
                "{location}: an S3 volume needs a shared coordinator (--redis URL)"
            )));
        }
        let exclusive = folder_lock(&location, true)?;
        let coord = Arc::new(InProcessCoordinator::new());
        Self::open_inner(location, opts, coord, exclusive)
    }

    /// Opens a volume shared with other processes through `coord`.
    pub fn open_shared(
        location: StoreLocation,
        opts: Options,
        coord: Arc<dyn Coordinator>,
    ) -> Result<Db> {
        let lock = if opts.read_only {
            read_lock(&location)?
        } else {
            folder_lock(&location, false)?
        };
        Self::open_inner(location, opts, coord, lock)
    }

    fn open_inner(
        location: StoreLocation,
        opts: Options,
        coord: Arc<dyn Coordinator>,
        exclusive: Option<ExclusiveLock>,
    ) -> Result<Db> {
        let open = if opts.read_only {
            BlobStore::open_read_only
        } else {
            BlobStore::open_tuned
        };
        let store = Arc::new(open(&location, opts.store_retries, opts.store_timeout)?);
        store.check_creates_are_conditional()?;
        let volume_id = format_or_check(&store, &opts.at_rest)?;
        coord.attach(&format!("{volume_id:032x}"))?;
        let shared = coord.is_shared();
        let mode = if opts.read_only {
            // Follows what others append; never repairs or appends.
            crate::log::LogMode::ReadOnly
        } else if shared {
            crate::log::LogMode::Shared
        } else {
            crate::log::LogMode::Owner
        };
        let log = Arc::new(crate::log::Log::open(
            store.clone(),
            mode,
            opts.segment_bytes,
        )?);
        if shared && opts.record_copies {
            log.set_mirror(coord.clone());
        }
        let loader = Arc::new(Loader::new(
            store,
            log.clone(),
            opts.cache_bytes,
            opts.value_cache_bytes,
        ));
        let melder = Arc::new(crate::txn::TreeMelder::new(loader.clone()));
        let registry = Registry::open(loader.store.clone(), log, Some(melder))?;
        let inner = Arc::new(DbInner {
            loader,
            registry,
            coord,
            opts,
            stats: Stats::default(),
            ahead_credit: Default::default(),
            commit_serial: parking_lot::Mutex::new(()),
            inflight: parking_lot::Mutex::new(std::collections::HashSet::new()),
            cleanups: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            own_commits: parking_lot::Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(65_536).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            pinned: parking_lot::Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(4).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            gc_turn: parking_lot::Mutex::new(()),
            _exclusive: exclusive,
        });
        // Other processes' records arrive with their nodes: where reading a
        // record costs a request (S3), keep them then (decoded when one of
        // their nodes or values is wanted); in a local folder a record is
        // read again when one of its nodes is wanted.
        if !inner.loader.store.probe_is_cheap() {
            let loader = inner.loader.clone();
            inner
                .registry
                .set_frame_sink(Box::new(move |seq, frame| loader.keep_frame(seq, frame)));
            let opened_at = inner.registry.current().seq;
            inner.loader.log.follow_from(opened_at);
        }
        let read_only = inner.opts.read_only;
        // Embedded mode: nobody else can be mid-commit, so every intent is dead,
        // and so is every half-written file.
        if !shared && !read_only {
            let store = &inner.loader.store;
            let swept = store.sweep_staging("intents", Duration::ZERO)
                + store.sweep_staging("checkpoints", Duration::ZERO)
                + store.sweep_staging("segments", Duration::ZERO)
                // Spares of a dead run; not the ones this open just made.
                + store.sweep_staging("staging", Duration::from_secs(2));
            if swept > 0 {
                tracing::info!(swept, "removed files of interrupted writes");
            }
        }
        let (done, undone) = if read_only {
            (0, 0)
        } else {
            crate::txn::recover_all(&inner, !shared)?
        };
        if done + undone > 0 {
            tracing::info!(
                committed = done,
                rolled_back = undone,
                "recovered unfinished commits"
            );
        }
        let stashes = Arc::new(LiveStashes::default());
        let background = inner
            .opts
            .background_interval
            .filter(|_| !read_only)
            .map(|every| {
                let stashes = stashes.clone();
                let (tx, rx) = mpsc::channel::<()>();
                let weak = Arc::downgrade(&inner);
                let handle = std::thread::spawn(move || {
                    let mut last_gc = Instant::now();
                    while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                        let Some(db) = weak.upgrade() else { return };
                        stashes.refresh();
                        // Nodes melds made that stayed in the newest state
                        // a while: written out, so memory does not keep them.
                        let loader = &db.loader;
                        let state = db.registry.current();
                        loader.melded.let_go(&state);
                        if let Err(e) = loader.melded.write_out(
                            &loader.store,
                            &loader.cache,
                            &state,
                            MELDED_WRITE_AFTER,
                        ) {
                            tracing::warn!(error = %e, "could not write out melded nodes yet");
                        }
                        if let Err(e) = crate::txn::recover_all(&db, false) {
                            tracing::warn!(error = %e, "background recovery pass failed");
                        }
                        if db
                            .opts
                            .gc_interval
                            .is_some_and(|gc| last_gc.elapsed() >= gc)
                        {
                            last_gc = Instant::now();
                            match crate::maint::gc(&db, db.opts.gc_retention, false) {
                                Ok(r) => tracing::info!(
                                    deleted = r.blobs_deleted,
                                    kept = r.blobs_kept,
                                    "background GC"
                                ),
                                Err(e) => tracing::warn!(error = %e, "background GC failed"),
                            }
                        }
                    }
                });
                (tx, handle)
            });
        Ok(Db {
            inner,
            stashes,
            group: Arc::new(Group::default()),
            background,
        })
    }

    /// A new [`Stash`]: value blobs written now for a later transaction.
    pub fn stash(&self) -> crate::Stash {
        crate::Stash::new(self.inner.clone(), &self.stashes)
    }

    /// Begins a transaction with the default time limit.
    pub fn begin(&self, mode: TxMode) -> Result<Transaction> {
        self.begin_with(TxOptions {
            mode,
            timeout: self.inner.opts.tx_timeout,
            sync: self.inner.opts.sync,
        })
    }

    /// A cloneable handle that begins read-only transactions, for helper
    /// threads (prefetchers) that must not own the volume.
    pub fn reader(&self) -> Reader {
        Reader {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Begins a read-only transaction on the newest state the coordinator
    /// knows of, asked now (cluster mode): what another process committed
    /// before this call is in it, even if its pushed stamp has not arrived.
    pub fn begin_fresh(&self) -> Result<Transaction> {
        let state = self.inner.fresh_state(true)?;
        Ok(read_only_tx(self.inner.clone(), state))
    }

    /// Begins a transaction with explicit options.
    pub fn begin_with(&self, opts: TxOptions) -> Result<Transaction> {
        if self.inner.opts.read_only && opts.mode == TxMode::ReadWrite {
            return Err(Error::ReadOnly);
        }
        let state = self.inner.fresh_state(false)?;
        let view = View::new(state, self.inner.loader.clone());
        let mut tx = Transaction::new(self.inner.clone(), opts, view);
        tx.group = Some(self.group.clone());
        Ok(tx)
    }

    /// Runs `f` in a read-write transaction and commits, retrying on conflict
    /// with jittered exponential backoff for up to `Options::retry_for`.
    pub fn run<T>(&self, f: impl FnMut(&mut Transaction) -> Result<T>) -> Result<T> {
        self.run_with(f)
    }

    /// Like [`Db::run`], for callers with their own error type: an error of
    /// `f` rolls the transaction back; a conflict (from `f` or the commit) retries.
    pub fn run_with<T, E: RetryableError>(
        &self,
        f: impl FnMut(&mut Transaction) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        self.run_opts(self.inner.opts.sync, f)
    }

    /// Like [`Db::run_with`], and the commit is durable (fsync'd) when it returns.
    pub fn run_durable<T, E: RetryableError>(
        &self,
        f: impl FnMut(&mut Transaction) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        self.run_opts(true, f)
    }

    /// Makes every commit this process has seen land durable: after it
    /// returns, a power cut keeps them (one fdatasync of the log's last
    /// segment in a local folder; a no-op on S3, where a landed record is
    /// durable). Their blobs were made durable before their records.
    pub fn sync(&self) -> Result<()> {
        self.inner.registry.log().sync_all()
    }

    fn run_opts<T, E: RetryableError>(
        &self,
        sync: bool,
        mut f: impl FnMut(&mut Transaction) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            let mut tx = self.begin_with(TxOptions {
                mode: TxMode::ReadWrite,
                timeout: self.inner.opts.tx_timeout,
                sync,
            })?;
            let result = f(&mut tx).and_then(|v| tx.commit().map(|_| v).map_err(E::from));
            match result {
                Err(e) if e.is_conflict() && started.elapsed() < self.inner.opts.retry_for => {
                    self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
                    let cap_us = (200u64 << attempt.min(9)).min(100_000);
                    let jitter = rand::random::<u64>() % cap_us.max(1);
                    std::thread::sleep(Duration::from_micros(cap_us / 2 + jitter / 2));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Deletes what no state within `retention` can reach. `dry_run` only counts.
    pub fn gc(&self, retention: Duration, dry_run: bool) -> Result<GcReport> {
        crate::maint::gc(&self.inner, retention, dry_run)
    }

    /// Takes snapshot `name`: the newest state this process can learn of
    /// (another process's commit that returned before this call is in it),
    /// kept readable until the snapshot is deleted. One small object; no
    /// lock a writer waits on. `InvalidArgument` for a bad or taken name.
    pub fn create_snapshot(&self, name: &str) -> Result<SnapshotInfo> {
        if self.inner.opts.read_only {
            return Err(Error::ReadOnly);
        }
        crate::maint::snapshots::create(&self.inner, name)
    }

    /// Every snapshot of the volume, by name (one listing of the store).
    pub fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        crate::maint::snapshots::list(&self.inner)
    }

    /// Snapshot `name`, if there is one.
    pub fn snapshot(&self, name: &str) -> Result<Option<SnapshotInfo>> {
        crate::maint::snapshots::get(&self.inner, name)
    }

    /// Deletes snapshot `name`; false if there was none. The next GC pass
    /// frees what only it kept.
    pub fn delete_snapshot(&self, name: &str) -> Result<bool> {
        if self.inner.opts.read_only {
            return Err(Error::ReadOnly);
        }
        crate::maint::snapshots::delete(&self.inner, name)
    }

    /// Begins a read-only transaction on the state of commit `seq` (a
    /// snapshot's). What GC no longer keeps (a deleted snapshot's state)
    /// fails to read with `Missing`.
    pub fn begin_at(&self, seq: u64) -> Result<Transaction> {
        let state = crate::maint::snapshots::state_at(&self.inner, seq)?;
        Ok(read_only_tx(self.inner.clone(), state))
    }

    /// Finishes or rolls back every unfinished commit whose owner's time ran
    /// out; returns (committed, rolled back).
    pub fn recover(&self) -> Result<(u64, u64)> {
        crate::txn::recover_all(&self.inner, false)
    }

    /// Claims `key` for `owner` among the processes sharing this volume,
    /// until `ttl` passes or [`Db::release_claim`]: false while another
    /// owner holds it. A claim saves a race, it decides nothing (the store
    /// does): without a shared coordinator, or when it cannot be reached,
    /// every claim is granted.
    pub fn claim(&self, key: u64, owner: u128, ttl: Duration) -> bool {
        if !self.is_shared() {
            return true;
        }
        match self
            .inner
            .coord
            .lock(&[key], TxId(owner), ttl, Instant::now())
        {
            Ok(_) => true,
            Err(Error::Timeout(_)) => false,
            Err(e) => {
                tracing::debug!(error = %e, "claim not checked: the coordinator is unreachable");
                true
            }
        }
    }

    /// Gives up a claim `owner` made with [`Db::claim`].
    pub fn release_claim(&self, key: u64, owner: u128) {
        if self.is_shared() {
            self.inner.coord.unlock(&[key], TxId(owner));
        }
    }

    /// True when other processes may commit to this volume (a shared coordinator).
    pub fn is_shared(&self) -> bool {
        self.inner.coord.is_shared()
    }

    /// True when the store is reached over the network (S3): each request
    /// costs a round trip, so callers keep more of them in flight.
    pub fn store_is_remote(&self) -> bool {
        !self.inner.loader.store.probe_is_cheap()
    }

    /// True when every `begin` already sees each commit that returned
    /// before it (embedded mode, or cluster mode on a local folder, where
    /// `begin` probes the log): `begin_fresh` would add nothing.
    pub fn begin_is_fresh(&self) -> bool {
        !self.is_shared() || self.inner.loader.store.probe_is_cheap()
    }

    /// Catches up with every commit that returned before the call, as a
    /// `begin_fresh` would, and returns the newest sequence number.
    pub fn catch_up_fresh(&self) -> Result<u64> {
        Ok(self.inner.fresh_state(true)?.seq)
    }

    /// The records in `(after, through]`, folded in already (`through` at
    /// most what [`Db::catch_up_fresh`] returned), that other processes
    /// made: what a cache of this process must drop. Fails when they were
    /// trimmed already; the caller should then drop everything.
    pub fn foreign_commits_between(
        &self,
        after: u64,
        through: u64,
    ) -> Result<Vec<Arc<CommitRecord>>> {
        if through <= after {
            return Ok(Vec::new());
        }
        let mut records = self.inner.registry.records(after, through)?;
        let own = self.inner.own_commits.lock();
        records.retain(|r| !own.contains(&r.txid) && !r.void);
        Ok(records)
    }

    /// Sequence number of the newest commit this handle has seen.
    pub fn seq(&self) -> u64 {
        self.inner.registry.current().seq
    }

    /// How the volume is stored at rest, in words (`sopfs format`, `status`).
    pub fn at_rest_summary(&self) -> String {
        let (level, encrypted) = self.inner.loader.store.at_rest();
        crate::store::at_rest_summary(level, encrypted)
    }

    /// Number of live nodes in the registry.
    pub fn node_count(&self) -> usize {
        self.inner.registry.current().nodes.len()
    }

    /// Announces (or refreshes) process `id` on the volume with `body`; see
    /// [`crate::maint`]. Callers repeat it as a heartbeat.
    pub fn announce(&self, id: &str, body: Vec<u8>) -> Result<()> {
        self.inner
            .loader
            .store
            .put(&crate::maint::inspect::member_path(id), body)
    }

    /// Removes process `id`'s announcement.
    pub fn withdraw(&self, id: &str) -> Result<()> {
        self.inner
            .loader
            .store
            .delete(&crate::maint::inspect::member_path(id))
    }

    /// Processes announced on this volume, freshest first.
    pub fn members(&self) -> Result<Vec<crate::maint::inspect::Member>> {
        crate::maint::inspect::members(&self.inner.loader.store)
    }

    /// Counters since open.
    pub fn stats(&self) -> DbStats {
        let s = &self.inner.stats;
        let (hits, misses, bytes) = self.inner.loader.cache.stats();
        let (value_hits, value_misses, value_bytes) = self.inner.loader.values.stats();
        DbStats {
            commits: s.commits.load(Ordering::Relaxed),
            merges: s.merges.load(Ordering::Relaxed),
            conflicts: s.conflicts.load(Ordering::Relaxed),
            collisions: s.collisions.load(Ordering::Relaxed),
            queued: s.queued.load(Ordering::Relaxed),
            ahead: s.ahead.load(Ordering::Relaxed),
            ahead_void: s.ahead_void.load(Ordering::Relaxed),
            melds: self.inner.registry.melds(),
            holes: s.holes.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            stashed: s.stashed.load(Ordering::Relaxed),
            cache_hits: hits,
            cache_misses: misses,
            cache_bytes: bytes as u64,
            value_hits,
            value_misses,
            value_bytes: value_bytes as u64,
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        crate::txn::drain(&self.inner.cleanups, Duration::from_secs(5));
        if let Some((tx, handle)) = self.background.take() {
            drop(tx);
            let _ = handle.join();
        }
    }
}
