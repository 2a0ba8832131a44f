//! The registry: logical node id -> (physical blob, version), folded from the
//! commit log. Creating `log/<seq>` (create-if-absent) is the commit point;
//! checkpoints bound how much of the log an opening process replays.

use super::ahead::{self, Melder};
use super::recent_writes::RecentWrites;
use super::record::{
    decode_checkpoint, decode_record_head, now_ms, Checkpoint, CommitRecord, RegState,
};
use crate::codec::{self, Kind};
use crate::error::{Error, Result};
use crate::log::{Fetched, Log};
use crate::store::{checkpoint_path, log_path, BlobStore};
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How many recent records stay in memory for validating transactions.
const RECENT_WINDOW: usize = 16_384;

/// Most records read past a gap kept for the next catch-up.
const EARLY_MAX: usize = 1024;

/// Most record positions one catch-up read asks the store for at once.
const READ_AHEAD_MAX: usize = 64;

/// The registry of one open volume.
pub struct Registry {
    store: Arc<BlobStore>,
    log: Arc<Log>,
    state: RwLock<Arc<RegState>>,
    /// Serializes folding records into `state`.
    apply: Mutex<()>,
    /// Records this process committed, waiting to be folded in order.
    pending: Mutex<BTreeMap<u64, Arc<CommitRecord>>>,
    /// Records read past a position not written yet (records placed
    /// ahead land out of order), kept so the next catch-up does not ask
    /// the store for them again.
    early: Mutex<BTreeMap<u64, Arc<CommitRecord>>>,
    recent: Mutex<BTreeMap<u64, Arc<CommitRecord>>>,
    /// The keys and trees the records folded last wrote, for deciding
    /// records placed ahead without reading every record before them.
    recent_writes: Mutex<RecentWrites>,
    checkpointing: Mutex<u64>,
    /// When the store was last probed to the end of the log.
    probed_at: Mutex<std::time::Instant>,
    /// When the newest look at the store that found the log's end (a
    /// probe, or a record of this process landing at the position after
    /// its state, or placed ahead and settled) was asked: every commit
    /// that returned before then is in `state` (see `ended_within`).
    ended_at: Mutex<Option<std::time::Instant>>,
    /// Takes the frames of records read (other processes' commits), so
    /// their nodes and values need not be read a second time.
    frame_sink: std::sync::OnceLock<FrameSink>,
    /// Replays records placed ahead whose nodes went stale (`ahead.rs`);
    /// without one (tests of the log alone) such a record cannot be folded.
    melder: Option<Arc<dyn Melder>>,
    /// Records folded as melded, since open.
    melds: std::sync::atomic::AtomicU64,
}

/// How far a catch-up reads, and from where.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Look {
    /// Past the target too: the store is probed for records not known of.
    Probe,
    /// Up to the target (known to exist), from copies or the store, and
    /// none past it that this process does not hold already.
    Through,
    /// Up to the target, from copies; the store only where a copy says so.
    Copies,
}

/// Where a registry hands the frames of records it reads, by position.
pub type FrameSink = Box<dyn Fn(u64, &bytes::Bytes) + Send + Sync>;

impl Registry {
    /// Loads the newest readable checkpoint and replays the log after it,
    /// melding with `melder` the records placed ahead that need it.
    pub fn open(
        store: Arc<BlobStore>,
        log: Arc<Log>,
        melder: Option<Arc<dyn Melder>>,
    ) -> Result<Self> {
        let mut seqs: Vec<u64> = store
            .list("checkpoints")?
            .iter()
            .filter_map(|m| {
                m.location
                    .filename()
                    .and_then(|f| u64::from_str_radix(f, 16).ok())
            })
            .collect();
        seqs.sort_unstable_by(|a, b| b.cmp(a));
        let mut state = RegState::default();
        for seq in seqs {
            let path = checkpoint_path(seq);
            let Some(data) = store.get(&path)? else {
                continue;
            };
            match decode_checkpoint(path.as_ref(), &data) {
                Ok(cp) => {
                    state.seq = cp.seq;
                    state.nodes = cp.nodes.into_iter().collect();
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "skipping unreadable checkpoint"),
            }
        }
        let cp_seq = state.seq;
        let reg = Registry {
            store,
            log,
            state: RwLock::new(Arc::new(state)),
            apply: Mutex::new(()),
            pending: Mutex::new(BTreeMap::new()),
            early: Mutex::new(BTreeMap::new()),
            recent: Mutex::new(BTreeMap::new()),
            recent_writes: Mutex::new(RecentWrites::default()),
            checkpointing: Mutex::new(cp_seq),
            probed_at: Mutex::new(std::time::Instant::now()),
            ended_at: Mutex::new(None),
            frame_sink: std::sync::OnceLock::new(),
            melder,
            melds: std::sync::atomic::AtomicU64::new(0),
        };
        reg.catch_up(true)?;
        Ok(reg)
    }

    /// Sets where the frames of records read from now on go (once).
    pub fn set_frame_sink(&self, sink: FrameSink) {
        let _ = self.frame_sink.set(sink);
    }

    /// The newest state folded in so far.
    pub fn current(&self) -> Arc<RegState> {
        self.state.read().clone()
    }

    /// Records `first`, `first + 1`, ... up to `n` of them, read together
    /// (`Log::read_seqs_from`); `None` where one is not there.
    fn read_records(&self, first: u64, n: usize) -> Result<Vec<Option<Arc<CommitRecord>>>> {
        let seqs: Vec<u64> = (first..first.saturating_add(n as u64)).collect();
        self.read_seqs(&seqs, true)
    }

    /// Records at the positions `seqs`, read together; without
    /// `unknown_from_store`, those without a copy are not asked of the
    /// store (`Log::read_seqs_from`).
    fn read_seqs(
        &self,
        seqs: &[u64],
        unknown_from_store: bool,
    ) -> Result<Vec<Option<Arc<CommitRecord>>>> {
        let data = self.log.read_seqs_from(seqs, unknown_from_store)?;
        let mut out = Vec::with_capacity(data.len());
        for (&seq, d) in seqs.iter().zip(data) {
            out.push(match d {
                Some(d) => Some(self.decode_at(seq, &d)?),
                None => None,
            });
        }
        Ok(out)
    }

    /// Decodes the record read at position `seq`.
    fn decode_at(&self, seq: u64, data: &Fetched) -> Result<Arc<CommitRecord>> {
        let path = || log_path(seq).to_string();
        // Only the head is decoded: node bodies and values are read
        // through the loader when wanted, from the frame the sink kept (a
        // store where reading a record is a request) or from the log.
        let mut rec = decode_record_head("", &data.frame).map_err(|e| e.at_path(path))?;
        if let (true, Some(sink)) = (data.whole, self.frame_sink.get()) {
            sink(seq, &data.frame);
        }
        rec.packed = Vec::new();
        rec.values = Vec::new();
        if rec.seq != seq {
            return Err(Error::Corrupted {
                what: "commit record",
                path: path(),
                detail: format!("holds seq {} at position {seq}", rec.seq),
            });
        }
        Ok(Arc::new(rec))
    }

    /// Folds in every record known to exist. With `probe_store`, also reads the
    /// store for records other processes (or racing threads) created.
    pub fn catch_up(&self, probe_store: bool) -> Result<Arc<RegState>> {
        let look = if probe_store {
            Look::Probe
        } else {
            Look::Through
        };
        self.catch_up_to(0, look)
    }

    /// Like `catch_up(true)` when the log is known to reach at least
    /// `newest` (a coordinator's stamp): the records up to it are asked for
    /// together, in one round trip where reads are round trips.
    pub fn catch_up_past(&self, newest: u64) -> Result<Arc<RegState>> {
        self.catch_up_to(newest, Look::Probe)
    }

    /// Reads the records up to `newest` (known to exist: a coordinator's
    /// stamp), together, and no further: for a caller that knows the
    /// position after them is its own to fill, probing past them would
    /// cost a round trip for nothing.
    pub fn catch_up_through(&self, newest: u64) -> Result<Arc<RegState>> {
        self.catch_up_to(newest, Look::Through)
    }

    /// Like `catch_up_through`, for positions other processes hold and
    /// are writing now: those the coordinator has no copy of yet are not
    /// asked of the store (see `Log::read_seqs_from`).
    pub fn catch_up_through_copies(&self, newest: u64) -> Result<Arc<RegState>> {
        self.catch_up_to(newest, Look::Copies)
    }

    fn catch_up_to(&self, target: u64, look: Look) -> Result<Arc<RegState>> {
        let called = std::time::Instant::now();
        let _g = self.apply.lock();
        let mut state = self.current();
        // Probes asked at once (begins on many threads) go one at a time
        // through this lock; one that found the log's end after this call
        // began leaves this one nothing to learn past what it folded.
        let look = if look == Look::Probe && self.ended_at.lock().is_some_and(|e| e >= called) {
            if target <= state.seq {
                return Ok(state);
            }
            Look::Through
        } else {
            look
        };
        let probe_store = look == Look::Probe;
        let mut next_state: Option<RegState> = None;
        // Records read ahead, by position, where a read is a round trip
        // (`Log::reads_in_batches`; elsewhere one at a time, as cheap).
        // Most catch-ups find nothing or one record, so the first two reads
        // ask for one position each (as many requests as reading one by
        // one); each further read asks for twice as many positions at once,
        // up to READ_AHEAD_MAX: a host
        // behind by k records on S3 catches up in about log2(k) +
        // k / READ_AHEAD_MAX round trips instead of k, for at most k more
        // requests past the end.
        let mut ahead: BTreeMap<u64, Option<Arc<CommitRecord>>> = BTreeMap::new();
        let (mut reads, mut window) = (0, 1);
        // When the read that filled `ahead` was asked, if it asked the store.
        let mut asked = None;
        loop {
            let next = next_state.as_ref().map_or(state.seq, |s| s.seq) + 1;
            let local = self.pending.lock().remove(&next);
            let local = local.or_else(|| self.early.lock().remove(&next));
            let rec = match local {
                Some(r) => r,
                None if probe_store || next <= target => {
                    if !ahead.contains_key(&next) {
                        ahead.clear();
                        // Positions known to exist are asked for at once.
                        let known = if self.log.reads_in_batches() && target >= next {
                            ((target - next + 1) as usize).min(READ_AHEAD_MAX)
                        } else {
                            0
                        };
                        let mut n = window.max(known) as u64;
                        if look != Look::Probe {
                            // Past the target only a probe looks (here
                            // `next <= target`): a grown window would ask
                            // the store for positions not known to exist.
                            n = n.min(target + 1 - next);
                        }
                        // Not those this process holds already.
                        let seqs: Vec<u64> = {
                            let (pending, early) = (self.pending.lock(), self.early.lock());
                            (next..next + n)
                                .filter(|s| !pending.contains_key(s) && !early.contains_key(s))
                                .collect()
                        };
                        let from_store = look != Look::Copies;
                        asked = from_store.then(std::time::Instant::now);
                        for (seq, r) in seqs.iter().zip(self.read_seqs(&seqs, from_store)?) {
                            ahead.insert(*seq, r);
                        }
                        reads += 1;
                        if reads >= 2 && self.log.reads_in_batches() {
                            window = (window * 2).min(READ_AHEAD_MAX);
                        }
                    }
                    match ahead.remove(&next).flatten() {
                        Some(r) => r,
                        None => {
                            *self.probed_at.lock() = std::time::Instant::now();
                            if let Some(at) = asked {
                                self.note_end(at);
                            }
                            self.keep_early(&mut ahead);
                            break;
                        }
                    }
                }
                None => break,
            };
            let folding = next_state.get_or_insert_with(|| (*state).clone());
            let rec = self.decide(rec, folding)?;
            folding.apply(&rec);
            self.recent_writes.lock().add(&rec);
            let mut recent = self.recent.lock();
            recent.insert(rec.seq, rec);
            while recent.len() > RECENT_WINDOW {
                recent.pop_first();
            }
        }
        if let Some(s) = next_state {
            state = Arc::new(s);
            *self.state.write() = state.clone();
            let seq = state.seq;
            self.early.lock().retain(|s, _| *s > seq);
        }
        Ok(state)
    }

    /// Keeps the records of `read` that lie past a position not written
    /// yet, for the next catch-up.
    fn keep_early(&self, read: &mut BTreeMap<u64, Option<Arc<CommitRecord>>>) {
        let mut early = self.early.lock();
        for (seq, r) in std::mem::take(read) {
            if let Some(r) = r {
                early.insert(seq, r);
            }
        }
        while early.len() > EARLY_MAX {
            early.pop_last();
        }
    }

    /// The current state when the log shows at a glance that nothing
    /// landed after it (see `Log::ends_at`), without the fold's lock:
    /// concurrent readers need not queue behind one another to learn that.
    pub fn current_if_newest(&self) -> Option<Arc<RegState>> {
        let state = self.current();
        if !self.log.ends_at(state.seq) {
            return None;
        }
        *self.probed_at.lock() = std::time::Instant::now();
        Some(state)
    }

    /// Notes that the log's end was found by a look at the store asked at
    /// `at`, with every record before that end folded into the state (and
    /// the caller's own, if the end was its record landing, folded next).
    pub fn note_end(&self, at: std::time::Instant) {
        let mut ended = self.ended_at.lock();
        if ended.is_none_or(|e| e < at) {
            *ended = Some(at);
        }
    }

    /// True when the log's end was found by a look asked less than `d`
    /// ago: a commit that landed before then is in this process's state
    /// (positions are filled in order before a commit returns, so one that
    /// returned before the look sits before the end it found).
    pub fn ended_within(&self, d: std::time::Duration) -> bool {
        self.ended_at.lock().is_some_and(|e| e.elapsed() < d)
    }

    /// Time since the store was last probed to the end of the log.
    pub fn idle_for(&self) -> std::time::Duration {
        self.probed_at.lock().elapsed()
    }

    /// Jumps to the newest checkpoint if it is ahead of this process's state.
    pub fn resync(&self) -> Result<()> {
        // Checked against the store now: the idle clock restarts either way.
        *self.probed_at.lock() = std::time::Instant::now();
        let Some(&(newest, _)) = self.checkpoints()?.last() else {
            return Ok(());
        };
        let _g = self.apply.lock();
        if newest <= self.current().seq {
            return Ok(());
        }
        let path = checkpoint_path(newest);
        let Some(data) = self.store.get(&path)? else {
            return Ok(());
        };
        let cp = decode_checkpoint(path.as_ref(), &data)?;
        tracing::info!(
            from = self.current().seq,
            to = cp.seq,
            "resynchronized from a checkpoint"
        );
        let state = RegState {
            seq: cp.seq,
            nodes: cp.nodes.into_iter().collect(),
        };
        *self.state.write() = Arc::new(state);
        self.recent.lock().clear();
        self.recent_writes.lock().clear();
        self.early.lock().retain(|s, _| *s > cp.seq);
        self.pending.lock().retain(|s, _| *s > cp.seq);
        Ok(())
    }

    /// The state as of commit `seq`: the current one, or the newest
    /// checkpoint at or before it, and the records after that replayed. For
    /// readers of pinned states (snapshots), which GC keeps reachable.
    ///
    /// Nodes melds made that it names are written out first: they live
    /// only in this process's memory, and a reader of a pinned state may
    /// want them long after the newest state replaced them.
    pub fn state_at(&self, seq: u64) -> Result<RegState> {
        let state = self.fold_state_at(seq)?;
        if let Some(melder) = &self.melder {
            melder.materialize(&state)?;
        }
        Ok(state)
    }

    fn fold_state_at(&self, seq: u64) -> Result<RegState> {
        let mut current = self.current();
        if seq > current.seq {
            // Pinned by a process further along the log than this one.
            current = self.catch_up_past(seq)?;
        }
        if seq == current.seq {
            return Ok((*current).clone());
        }
        if seq > current.seq {
            return Err(Error::Missing {
                what: "commit record",
                path: log_path(seq).to_string(),
            });
        }
        let mut state = RegState::default();
        for (cp, _) in self.checkpoints()?.into_iter().rev() {
            if cp > seq {
                continue;
            }
            let path = checkpoint_path(cp);
            let Some(data) = self.store.get(&path)? else {
                continue;
            };
            let c = decode_checkpoint(path.as_ref(), &data)?;
            state.seq = c.seq;
            state.nodes = c.nodes.into_iter().collect();
            break;
        }
        let records = self.records(state.seq, seq).map_err(|e| match e {
            // `records` calls a gap a conflict, for validation.
            Error::Conflict { .. } => Error::Missing {
                what: "commit record",
                path: format!("log between {} and {seq}", state.seq),
            },
            e => e,
        })?;
        for rec in records {
            let rec = self.decide(rec, &state)?;
            state.apply(&rec);
        }
        Ok(state)
    }

    /// `rec` as folded onto `state` (the state at `rec.seq - 1`): marked
    /// void if it was placed ahead and overtaken (`ahead.rs`), by the index
    /// of what the last records folded wrote or else by reading the records
    /// between its base and it from memory or the store; with
    /// melded node changes if a node it changed moved on meanwhile.
    fn decide(&self, rec: Arc<CommitRecord>, state: &RegState) -> Result<Arc<CommitRecord>> {
        if !ahead::placed_ahead(&rec) {
            return Ok(rec);
        }
        // The records between are asked for only where the index of the
        // last ones folded does not reach back to the base (just after
        // open, or deciding an old record for a snapshot).
        let indexed = self.recent_writes.lock().overtakes(&rec);
        let overtaken = match indexed {
            _ if rec.seq - rec.base > ahead::AHEAD_SPAN => true,
            Some(overtaken) => overtaken,
            None => {
                let between = self
                    .records(rec.base, rec.seq - 1)
                    .map_err(|_| Error::Missing {
                        what: "commit record",
                        path: format!(
                            "log between {} and {} (to decide record {})",
                            rec.base,
                            rec.seq - 1,
                            rec.seq
                        ),
                    })?;
                ahead::overtaken(&rec, &between)
            }
        };
        let melded = if overtaken || !ahead::stale(&rec, state) {
            None
        } else {
            let melder = self.melder.as_ref().ok_or_else(|| {
                Error::Unsupported(format!(
                    "record {} must be melded, and this reader has no melder",
                    rec.seq
                ))
            })?;
            Some(melder.meld(state, &rec)?)
        };
        let void = overtaken || matches!(melded, Some(None));
        let nodes = melded.flatten();
        // Most records stand as written: no copy of them then.
        if nodes.is_none() && void == rec.void {
            return Ok(rec);
        }
        let mut r = (*rec).clone();
        r.void = void;
        if let Some(nodes) = nodes {
            self.melds
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            r.nodes = nodes;
            r.melded = true;
        }
        Ok(Arc::new(r))
    }

    /// The node changes of the records folded melded that are still in
    /// memory and are at least as new as `since_ms`: versions no record
    /// in the store names (GC keeps them for older readers like those of
    /// the records).
    pub fn melded_changes(&self, since_ms: u64) -> Vec<super::record::NodeChange> {
        self.recent
            .lock()
            .values()
            .filter(|r| r.melded && r.time_ms >= since_ms)
            .flat_map(|r| r.nodes.iter().cloned())
            .collect()
    }

    /// Records folded as melded since this registry opened.
    pub fn melds(&self) -> u64 {
        self.melds.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether record `seq`, folded in recently, committed (`false`: it
    /// was void); `None` once it is out of memory.
    pub fn committed(&self, seq: u64) -> Option<bool> {
        self.recent.lock().get(&seq).map(|r| !r.void)
    }

    /// Records in `(after, upto]`, from memory or the store (those not in
    /// memory read together). Those folded in already say whether they
    /// were void; those read from the store do not (they count as landed).
    pub fn records(&self, after: u64, upto: u64) -> Result<Vec<Arc<CommitRecord>>> {
        let mut out = Vec::with_capacity(upto.saturating_sub(after) as usize);
        let mut seq = after + 1;
        while seq <= upto {
            // Every host decides every record placed ahead against the
            // ones before it: one lock for the run in memory, not one each.
            {
                let recent = self.recent.lock();
                for (s, r) in recent.range(seq..=upto) {
                    if *s != seq {
                        break;
                    }
                    out.push(r.clone());
                    seq += 1;
                }
            }
            if seq > upto {
                break;
            }
            let most = if self.log.reads_in_batches() {
                READ_AHEAD_MAX
            } else {
                1
            };
            let n = (upto - seq + 1).min(most as u64) as usize;
            for r in self.read_records(seq, n)? {
                let Some(r) = r else {
                    return Err(Error::conflict(
                        "",
                        format!("commit record {seq} is no longer available for validation"),
                    ));
                };
                out.push(r);
                seq += 1;
            }
        }
        Ok(out)
    }

    /// The commit log.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Folds in a record this process just created. One written at the
    /// position after the state is visible when this returns; one placed
    /// ahead is folded with the records before it only as far as their
    /// copies go (those records are still being written: asking the store
    /// for them now would mostly find nothing), and waits in `pending` for
    /// the rest (`txn/ahead.rs`, `settle`).
    pub fn publish(&self, rec: Arc<CommitRecord>) -> Result<()> {
        let seq = rec.seq;
        self.pending.lock().insert(seq, rec);
        self.catch_up_to(seq, Look::Copies)?;
        Ok(())
    }

    /// True when `every` commits passed since the last checkpoint and no
    /// checkpoint is being written: `maybe_checkpoint` would write one.
    pub fn checkpoint_due(&self, every: u64) -> bool {
        let state = self.current();
        self.checkpointing
            .try_lock()
            .is_some_and(|last| state.seq >= last.saturating_add(every))
    }

    /// Writes a checkpoint of the current state if `every` commits passed since the last.
    ///
    /// `claim(interval)` says whether this process writes the checkpoint
    /// of interval `seq / every` (processes sharing the volume elect one);
    /// when it does not, the interval counts as checkpointed here too.
    pub fn maybe_checkpoint(&self, every: u64, claim: impl FnOnce(u64) -> bool) -> Result<()> {
        let state = self.current();
        let Some(mut last) = self.checkpointing.try_lock() else {
            return Ok(());
        };
        if state.seq < last.saturating_add(every) {
            return Ok(());
        }
        if claim(state.seq / every.max(1)) {
            self.write_checkpoint(&state)?;
        }
        *last = state.seq;
        Ok(())
    }

    /// Writes a checkpoint of `state`, unless one of its seq exists.
    ///
    /// A checkpoint is a function of the log up to its seq, so an existing
    /// one already says the same. Keeping it also keeps its age, which GC
    /// reads from the object's time: rewriting it made every pass see a
    /// brand-new checkpoint on an idle volume, and the log was never trimmed.
    pub fn write_checkpoint(&self, state: &RegState) -> Result<()> {
        if let Some(melder) = &self.melder {
            melder.materialize(state)?;
        }
        let cp = Checkpoint {
            seq: state.seq,
            time_ms: now_ms(),
            nodes: state.nodes.iter().map(|(k, v)| (*k, *v)).collect(),
        };
        // A checkpoint stands for the log up to its seq, and GC trims the
        // log behind it: both must outlive a power cut before it counts. A
        // checkpoint ahead of a log whose tail a cut dropped would point at
        // nodes of records that are gone.
        self.log.sync(state.seq)?;
        let path = checkpoint_path(state.seq);
        self.store
            .create(&path, codec::encode(Kind::Checkpoint, &cp))?;
        self.store.sync(&[path])
    }

    /// (seq, time) of every checkpoint in the store, ascending.
    pub fn checkpoints(&self) -> Result<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        for m in self.store.list("checkpoints")? {
            if let Some(seq) = m
                .location
                .filename()
                .and_then(|f| u64::from_str_radix(f, 16).ok())
            {
                out.push((seq, m.last_modified.timestamp_millis().max(0) as u64));
            }
        }
        out.sort_unstable();
        Ok(out)
    }
}
