//! Transactions: a snapshot view, the key-level operations applied to it, and
//! what was read (points, absent keys and scanned ranges) for validation.

use super::ops::*;
use crate::codec;
use crate::ctx::DbInner;
use crate::error::{Error, Result};
use crate::ids::{BlobId, NodeId, TxId};
use crate::store::blob_path;
use crate::tree::btree;
use crate::tree::View;
use crate::tree::{Packed, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One transaction. Dropping it without `commit` rolls it back.
pub struct Transaction {
    pub(crate) db: Arc<DbInner>,
    pub(crate) id: TxId,
    pub(crate) opts: TxOptions,
    pub(crate) started: Instant,
    pub(crate) view: View,
    pub(crate) ops: Vec<Op>,
    pub(crate) reads: BTreeMap<String, ReadSet>,
    pub(crate) writes: BTreeMap<String, BTreeSet<Vec<u8>>>,
    /// Trees this transaction opened through `ensure_tree` (no catalog read recorded).
    pub(crate) ensured: BTreeSet<String>,
    /// Trees created in the current view by `ensure_tree`.
    pub(crate) ensure_created: BTreeSet<String>,
    pub(crate) metas: HashMap<String, Option<TreeMeta>>,
    pub(crate) values: HashMap<BlobId, Vec<u8>>,
    /// Bytes held in `values`.
    pub(crate) value_bytes: usize,
    /// Value blobs already written to the store (a transaction bigger than
    /// `Options::stage_bytes` writes them as it goes, so its memory stays bounded).
    pub(crate) staged: Vec<BlobId>,
    /// Values put from stashes: told when the commit lands.
    pub(crate) stashed: Vec<(Arc<super::stash::StashInner>, crate::StashedValue)>,
    /// Staged writes still under way in the background.
    pub(crate) pending: parking_lot::Mutex<super::stager::Pending>,
    /// Time spent writing staged values: it does not count against the timeout.
    pub(crate) io_time: Duration,
    /// Set the moment its commit record exists: from then on nothing of it may
    /// be discarded, whatever fails after.
    pub(crate) landed: bool,
    /// This transaction's intent record is in the store (cluster mode, and
    /// only for commits that write blobs).
    pub(crate) intent_written: bool,
    /// The commit queue it may join (read-write transactions of a `Db`).
    pub(crate) group: Option<Arc<super::group::Group>>,
}

impl Transaction {
    pub(crate) fn new(db: Arc<DbInner>, opts: TxOptions, view: View) -> Self {
        Transaction {
            db,
            id: TxId::fresh(),
            opts,
            started: Instant::now(),
            view,
            ops: Vec::new(),
            reads: BTreeMap::new(),
            writes: BTreeMap::new(),
            ensured: BTreeSet::new(),
            ensure_created: BTreeSet::new(),
            metas: HashMap::new(),
            values: HashMap::new(),
            value_bytes: 0,
            staged: Vec::new(),
            stashed: Vec::new(),
            pending: parking_lot::Mutex::new(super::stager::Pending::default()),
            io_time: Duration::ZERO,
            landed: false,
            intent_written: false,
            group: None,
        }
    }

    /// This transaction's id.
    pub fn id(&self) -> TxId {
        self.id
    }

    /// Sequence number of the snapshot this transaction reads.
    pub fn snapshot_seq(&self) -> u64 {
        self.view.base.seq
    }

    pub(crate) fn deadline(&self) -> Instant {
        // Writing a big transaction's values takes as long as it takes; GC's
        // retention, which protects staged blobs, still bounds the whole.
        let io = self.io_time.min(self.db.opts.gc_retention / 2);
        self.started + self.opts.timeout + io
    }

    pub(crate) fn check_deadline(&self) -> Result<()> {
        if Instant::now() >= self.deadline() {
            return Err(Error::Timeout(self.started.elapsed()));
        }
        Ok(())
    }

    fn writable(&self) -> Result<()> {
        if self.opts.mode == TxMode::ReadOnly {
            return Err(Error::ReadOnly);
        }
        self.check_deadline()
    }

    /// The read set of `tree`, made on first use (no tree name is
    /// allocated for the reads after the first: a big transaction makes
    /// hundreds of thousands).
    fn reads_of(&mut self, tree: &str) -> &mut ReadSet {
        if !self.reads.contains_key(tree) {
            self.reads.insert(tree.to_string(), ReadSet::default());
        }
        self.reads.get_mut(tree).expect("inserted above")
    }

    fn read_point(&mut self, tree: &str, key: &[u8]) {
        if self.opts.mode == TxMode::ReadWrite {
            self.reads_of(tree).points.insert(key.to_vec());
        }
    }

    fn read_range(&mut self, tree: &str, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>) {
        if self.opts.mode == TxMode::ReadWrite {
            self.reads_of(tree).ranges.push((lo, hi));
        }
    }

    fn meta(&mut self, tree: &str) -> Result<TreeMeta> {
        self.check_deadline()?;
        if let Some(m) = self.metas.get(tree) {
            return m.ok_or_else(|| Error::TreeNotFound(tree.to_string()));
        }
        let m = lookup_meta(&self.view, tree)?;
        if !self.ensured.contains(tree) {
            self.read_point(CATALOG, tree.as_bytes());
        }
        self.metas.insert(tree.to_string(), m);
        m.ok_or_else(|| Error::TreeNotFound(tree.to_string()))
    }

    fn apply(&mut self, op: Op) -> Result<()> {
        let created = apply_op(&mut self.view, &op)?;
        match &op {
            Op::EnsureTree { name, .. } => {
                if created {
                    self.ensure_created.insert(name.clone());
                }
            }
            Op::CreateTree { name, .. } | Op::DropTree { name } => {
                self.writes
                    .entry(CATALOG.to_string())
                    .or_default()
                    .insert(name.as_bytes().to_vec());
            }
            Op::Put { tree, key, .. } | Op::Remove { tree, key } => {
                self.writes
                    .entry(tree.clone())
                    .or_default()
                    .insert(key.clone());
            }
        }
        self.ops.push(op);
        Ok(())
    }

    fn check_name(name: &str) -> Result<()> {
        if name.is_empty() || name.len() > 1024 {
            return Err(Error::InvalidArgument(
                "tree names are 1 to 1024 bytes".into(),
            ));
        }
        Ok(())
    }

    fn new_meta(config: TreeConfig) -> Result<TreeMeta> {
        if config.slots < 4 || config.slots > 65_536 {
            return Err(Error::InvalidArgument(format!(
                "slots must be 4..=65536, not {}",
                config.slots
            )));
        }
        Ok(TreeMeta {
            root: NodeId::fresh(),
            config,
        })
    }

    /// Creates a tree; fails with `TreeExists` if the name is taken.
    pub fn create_tree(&mut self, name: &str, config: TreeConfig) -> Result<()> {
        self.writable()?;
        Self::check_name(name)?;
        if self.meta(name).is_ok() {
            return Err(Error::TreeExists(name.to_string()));
        }
        let meta = Self::new_meta(config)?;
        self.apply(Op::CreateTree {
            name: name.to_string(),
            meta,
        })?;
        self.metas.insert(name.to_string(), Some(meta));
        Ok(())
    }

    /// Opens `name`, creating it if absent. Race-free: when several
    /// transactions create the same tree at once, one creation wins and the
    /// others' writes merge into it at commit, without a conflict.
    pub fn ensure_tree(&mut self, name: &str, config: TreeConfig) -> Result<()> {
        self.writable()?;
        Self::check_name(name)?;
        if let Some(Some(_)) = self.metas.get(name) {
            return Ok(());
        }
        let meta = Self::new_meta(config)?;
        self.ensured.insert(name.to_string());
        self.apply(Op::EnsureTree {
            name: name.to_string(),
            meta,
        })?;
        let m = lookup_meta(&self.view, name)?;
        self.metas.insert(name.to_string(), m);
        Ok(())
    }

    /// Drops a tree and everything in it.
    pub fn drop_tree(&mut self, name: &str) -> Result<()> {
        self.writable()?;
        Self::check_name(name)?;
        self.meta(name)?;
        self.apply(Op::DropTree {
            name: name.to_string(),
        })?;
        self.metas.insert(name.to_string(), None);
        Ok(())
    }

    /// True if the tree exists in this snapshot.
    pub fn tree_exists(&mut self, name: &str) -> Result<bool> {
        match self.meta(name) {
            Ok(_) => Ok(true),
            Err(Error::TreeNotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Names of every tree, sorted.
    pub fn list_trees(&mut self) -> Result<Vec<String>> {
        let mut cursor = Cursor::new(.., Direction::Forward);
        let mut names = Vec::new();
        loop {
            let batch = self.scan_values(CATALOG, &mut cursor, 1024)?;
            names.extend(
                batch
                    .into_iter()
                    .map(|(k, _)| String::from_utf8_lossy(&k).into_owned()),
            );
            if cursor.is_done() {
                return Ok(names);
            }
        }
    }

    fn user_tree(tree: &str) -> Result<()> {
        if tree == CATALOG {
            return Err(Error::InvalidArgument("the catalog is not writable".into()));
        }
        Ok(())
    }

    fn check_key(key: &[u8]) -> Result<()> {
        if key.len() > 4096 {
            return Err(Error::InvalidArgument(format!(
                "keys are at most 4096 bytes, not {}",
                key.len()
            )));
        }
        Ok(())
    }

    /// The value stored under `key`, without loading an out-of-line value.
    pub fn get_value(&mut self, tree: &str, key: &[u8]) -> Result<Option<Value>> {
        let meta = self.meta(tree)?;
        self.read_point(tree, key);
        btree::get(&self.view, meta.root, key)
    }

    /// The values stored under `keys`, without loading out-of-line ones,
    /// in the order of `keys`, which must be strictly ascending. Cheaper
    /// than a [`get_value`](Self::get_value) per key: one walk down the
    /// tree serves them all, reading each node on their paths once.
    pub fn get_values_sorted(&mut self, tree: &str, keys: &[&[u8]]) -> Result<Vec<Option<Value>>> {
        let meta = self.meta(tree)?;
        if keys.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::InvalidArgument(
                "get_values_sorted takes keys in strictly ascending order".into(),
            ));
        }
        for key in keys {
            self.read_point(tree, key);
        }
        let mut out = Vec::with_capacity(keys.len());
        btree::get_sorted(&self.view, meta.root, keys, &mut out)?;
        Ok(out)
    }

    /// The bytes stored under `key`.
    pub fn get(&mut self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.get_value(tree, key)? {
            Some(Value::Inline(bytes)) => Ok(Some(bytes)),
            Some(v) => Ok(Some(self.load(&v)?)),
            None => Ok(None),
        }
    }

    /// Bytes `range` of the value stored under `key`, clipped to its length.
    /// A small range of a large value is read from the store alone (the
    /// blocks that hold it), not the whole value.
    pub fn get_range(
        &mut self,
        tree: &str,
        key: &[u8],
        range: std::ops::Range<u64>,
    ) -> Result<Option<Vec<u8>>> {
        let Some(value) = self.get_value(tree, key)? else {
            return Ok(None);
        };
        let len = value.len();
        let clip = |r: &std::ops::Range<u64>| {
            let start = r.start.min(len) as usize;
            start..(r.end.min(len) as usize).max(start)
        };
        let want = clip(&range);
        match &value {
            Value::Inline(bytes) => Ok(Some(bytes[want].to_vec())),
            Value::External {
                chunks,
                blocks: true,
                packed: None,
                ..
            } if chunks.len() == 1
                && !self.values.contains_key(&chunks[0])
                && !self.staged.contains(&chunks[0]) =>
            {
                let n = len as usize;
                // Most of the chunk wanted: read it whole, into the cache,
                // where a sequential reader's next request finds it.
                if want.len() * 4 > n {
                    let whole = self.db.loader.value(chunks[0])?;
                    return Ok(Some(whole.get(want).unwrap_or_default().to_vec()));
                }
                self.db.loader.value_range(chunks[0], n, want).map(Some)
            }
            Value::Slice {
                blob, total, at, ..
            } => {
                let at = *at as usize;
                let piece = at + want.start..at + want.end;
                // As above, and the whole blob (a run of a file's chunks)
                // is what a sequential reader reads next.
                if want.len() * 4 > len as usize {
                    return self.db.loader.value_piece(*blob, piece).map(Some);
                }
                self.db
                    .loader
                    .value_range(*blob, *total as usize, piece)
                    .map(Some)
            }
            _ => {
                let whole = self.load(&value)?;
                Ok(Some(whole[want].to_vec()))
            }
        }
    }

    /// Brings the value stored under `key` into the value cache (read-ahead):
    /// its blobs that are neither cached nor being loaded by another thread
    /// are read; nothing is returned.
    pub fn warm(&mut self, tree: &str, key: &[u8]) -> Result<()> {
        match self.get_value(tree, key)? {
            Some(Value::External {
                chunks,
                packed: None,
                ..
            }) => chunks
                .iter()
                .try_for_each(|c| self.db.loader.warm_value(*c)),
            Some(Value::Slice { blob, .. }) => self.db.loader.warm_value(blob),
            Some(v) => self.load(&v).map(drop),
            None => Ok(()),
        }
    }

    /// The bytes of a value returned by `get_value` or `scan_values`.
    pub fn load(&self, value: &Value) -> Result<Vec<u8>> {
        match value {
            Value::Inline(v) => Ok(v.clone()),
            Value::Slice { blob, at, len, .. } => self
                .db
                .loader
                .value_piece(*blob, *at as usize..(*at + *len) as usize),
            Value::External {
                chunks,
                len,
                packed,
                ..
            } => {
                let mut out = Vec::with_capacity(*len as usize);
                for c in chunks {
                    if let Some(own) = self.values.get(c) {
                        out.extend_from_slice(own);
                        continue;
                    }
                    // Its own staged value may still be on its way to the store.
                    let mut pending = self.pending.lock();
                    if pending.busy() && self.staged.contains(c) {
                        pending.wait_all()?;
                    }
                    drop(pending);
                    out.extend_from_slice(
                        &self.db.loader.value_in(*c, packed.and_then(Packed::seq))?,
                    );
                }
                if out.len() as u64 != *len {
                    return Err(Error::Corrupted {
                        what: "value",
                        path: format!("{chunks:?}"),
                        detail: format!("{} bytes where {len} expected", out.len()),
                    });
                }
                Ok(out)
            }
        }
    }

    fn make_value(&mut self, config: TreeConfig, value: &[u8]) -> Result<Value> {
        if value.len() <= config.inline_max as usize {
            return Ok(Value::Inline(value.to_vec()));
        }
        let chunk = self.db.opts.chunk_size.max(1);
        let mut chunks = Vec::with_capacity(value.len().div_ceil(chunk));
        for c in value.chunks(chunk) {
            let id = BlobId::fresh();
            if self.value_bytes + c.len() > self.db.opts.stage_bytes {
                self.stage(id, c)?;
            } else {
                self.values.insert(id, c.to_vec());
                self.value_bytes += c.len();
            }
            chunks.push(id);
        }
        Ok(Value::External {
            chunks,
            len: value.len() as u64,
            blocks: true,
            packed: None,
        })
    }

    /// Writes one value blob now instead of at commit. Unreferenced until the
    /// commit lands; GC keeps blobs younger than its retention, and a
    /// transaction that does not land deletes its own (see `Drop`).
    fn stage(&mut self, id: BlobId, data: &[u8]) -> Result<()> {
        let t = Instant::now();
        let path = blob_path(id);
        self.staged.push(id);
        self.db.inflight.lock().insert(id);
        let r = self.pending.get_mut().submit(
            self.db.loader.store.clone(),
            path,
            codec::frame_value(data),
        );
        self.io_time += t.elapsed();
        r
    }

    /// Waits for this transaction's background writes of staged values.
    pub(crate) fn wait_staged(&mut self) -> Result<()> {
        let t = Instant::now();
        let r = self.pending.get_mut().wait_all();
        self.io_time += t.elapsed();
        r
    }

    fn put_op(&mut self, tree: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let meta = self.meta(tree)?;
        let value = self.make_value(meta.config, value)?;
        self.apply(Op::Put {
            tree: tree.to_string(),
            key: key.to_vec(),
            value,
        })
    }

    fn exists_for_write(&mut self, tree: &str, key: &[u8]) -> Result<bool> {
        self.writable()?;
        Self::user_tree(tree)?;
        Self::check_key(key)?;
        Ok(self.get_value(tree, key)?.is_some())
    }

    /// Inserts a new key; fails with `KeyExists` if present.
    pub fn insert(&mut self, tree: &str, key: &[u8], value: &[u8]) -> Result<()> {
        if self.exists_for_write(tree, key)? {
            return Err(Error::KeyExists);
        }
        self.put_op(tree, key, value)
    }

    /// Replaces an existing key; fails with `KeyNotFound` if absent.
    pub fn update(&mut self, tree: &str, key: &[u8], value: &[u8]) -> Result<()> {
        if !self.exists_for_write(tree, key)? {
            return Err(Error::KeyNotFound);
        }
        self.put_op(tree, key, value)
    }

    /// Inserts or replaces, without reading the key (a blind write).
    pub fn upsert(&mut self, tree: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.writable()?;
        Self::user_tree(tree)?;
        Self::check_key(key)?;
        self.put_op(tree, key, value)
    }

    /// Inserts or replaces `key` with a value a [`crate::Stash`] already
    /// wrote (a blind write, like `upsert`). Waits for that write; the
    /// stash is told when this transaction's commit lands.
    pub fn put_stashed(
        &mut self,
        tree: &str,
        key: &[u8],
        stash: &crate::Stash,
        value: &crate::StashedValue,
    ) -> Result<()> {
        self.writable()?;
        Self::user_tree(tree)?;
        Self::check_key(key)?;
        self.meta(tree)?;
        stash.wait(value)?;
        self.stashed.push((stash.inner.clone(), value.clone()));
        let stored = if value.is_whole() {
            Value::External {
                chunks: vec![value.id],
                len: value.len,
                blocks: true,
                packed: None,
            }
        } else {
            Value::Slice {
                blob: value.id,
                total: value.total,
                at: value.at,
                len: value.len,
            }
        };
        self.apply(Op::Put {
            tree: tree.to_string(),
            key: key.to_vec(),
            value: stored,
        })
    }

    /// Inserts or replaces `key` (a blind write, like `upsert`) with a value
    /// as a key of this transaction's view holds it (from `get_value` or
    /// `scan_values`). An out-of-line value already in the store is
    /// shared, not copied: the new key names the same blobs, so copying a
    /// big value costs a key. Blobs are immutable and GC keeps one while
    /// any key names it, so writes to either key never show in the other.
    /// A value this transaction wrote itself (not yet in the store) is
    /// copied by its bytes.
    pub fn put_value(&mut self, tree: &str, key: &[u8], value: &Value) -> Result<()> {
        self.writable()?;
        Self::user_tree(tree)?;
        Self::check_key(key)?;
        self.meta(tree)?;
        let own = |tx: &Transaction, id: &BlobId| {
            tx.values.contains_key(id)
                || tx.staged.contains(id)
                || tx.stashed.iter().any(|(_, s)| s.id == *id)
        };
        match value {
            Value::Inline(bytes) => self.put_op(tree, key, bytes),
            Value::External { .. } | Value::Slice { .. }
                if matches!(
                    value,
                    Value::External {
                        packed: Some(Packed::Here),
                        ..
                    }
                ) || value.blobs().iter().any(|id| own(self, id)) =>
            {
                let bytes = self.load(value)?;
                self.put_op(tree, key, &bytes)
            }
            shared => self.apply(Op::Put {
                tree: tree.to_string(),
                key: key.to_vec(),
                value: shared.clone(),
            }),
        }
    }

    /// Removes a key; returns whether it was present.
    pub fn remove(&mut self, tree: &str, key: &[u8]) -> Result<bool> {
        if !self.exists_for_write(tree, key)? {
            return Ok(false);
        }
        self.apply(Op::Remove {
            tree: tree.to_string(),
            key: key.to_vec(),
        })?;
        Ok(true)
    }

    /// Up to `limit` entries from the cursor's position on, advancing it.
    /// Out-of-line values are not loaded (see `load`).
    pub fn scan_values(
        &mut self,
        tree: &str,
        cursor: &mut Cursor,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Value)>> {
        let meta = self.meta(tree)?;
        if cursor.done || limit == 0 {
            return Ok(Vec::new());
        }
        let reverse = cursor.direction == Direction::Backward;
        let mut out = Vec::new();
        let hit_limit = btree::scan(
            &self.view, meta.root, &cursor.lo, &cursor.hi, reverse, limit, &mut out,
        )?;
        // The read covers what was scanned: up to the last key returned, or the
        // whole remaining range when it ran out.
        let last = out.last().map(|(k, _)| k.clone());
        let (lo, hi) = match (&last, hit_limit, reverse) {
            (Some(k), true, false) => (cursor.lo.clone(), Bound::Included(k.clone())),
            (Some(k), true, true) => (Bound::Included(k.clone()), cursor.hi.clone()),
            _ => (cursor.lo.clone(), cursor.hi.clone()),
        };
        self.read_range(tree, lo, hi);
        match (last, hit_limit) {
            (Some(k), true) => {
                if reverse {
                    cursor.hi = Bound::Excluded(k);
                } else {
                    cursor.lo = Bound::Excluded(k);
                }
            }
            _ => cursor.done = true,
        }
        Ok(out)
    }

    /// Like `scan_values`, with every value loaded.
    pub fn scan(
        &mut self,
        tree: &str,
        cursor: &mut Cursor,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let batch = self.scan_values(tree, cursor, limit)?;
        batch
            .into_iter()
            .map(|(k, v)| match v {
                Value::Inline(bytes) => Ok((k, bytes)),
                v => Ok((k, self.load(&v)?)),
            })
            .collect()
    }

    /// The smallest entry.
    pub fn first(&mut self, tree: &str) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let mut c = Cursor::new(.., Direction::Forward);
        Ok(self.scan(tree, &mut c, 1)?.pop())
    }

    /// The largest entry.
    pub fn last(&mut self, tree: &str) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let mut c = Cursor::new(.., Direction::Backward);
        Ok(self.scan(tree, &mut c, 1)?.pop())
    }

    /// Number of keys in the tree (a scan of its leaves).
    pub fn count(&mut self, tree: &str) -> Result<u64> {
        let mut c = Cursor::new(.., Direction::Forward);
        let mut n = 0;
        loop {
            n += self.scan_values(tree, &mut c, 4096)?.len() as u64;
            if c.is_done() {
                return Ok(n);
            }
        }
    }

    /// Verifies the structure of a tree in this snapshot; returns its key count.
    pub fn check_tree(&mut self, tree: &str) -> Result<u64> {
        let meta = self.meta(tree)?;
        btree::check(&self.view, meta.root, meta.config.slots as usize)
    }

    /// Discards every change.
    pub fn rollback(self) {}
}

/// Operations past which a committed transaction's memory is freed on a
/// thread of its own.
const SHED_FROM_OPS: usize = 10_000;

impl Transaction {
    /// After its commit, hands a big transaction's op log, read and write
    /// sets and changed nodes to a thread that frees them: freeing a
    /// clone's hundreds of thousands of small allocations took a tenth of
    /// its time, all of it before the caller had its answer.
    pub(crate) fn shed_after_commit(&mut self) {
        if !self.landed || self.ops.len() < SHED_FROM_OPS {
            return;
        }
        let heavy = (
            std::mem::take(&mut self.ops),
            std::mem::take(&mut self.reads),
            std::mem::take(&mut self.writes),
            std::mem::take(&mut self.view.dirty),
        );
        let spawned = std::thread::Builder::new()
            .name("sopfs-free".into())
            .spawn(move || drop(heavy));
        if let Err(e) = spawned {
            // Nothing lost: it is freed here instead, with the handle.
            tracing::debug!(error = %e, "freeing a big transaction inline");
        }
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        // Background writes first: a blob written after its delete would linger.
        let _ = self.pending.get_mut().wait_all();
        let mut inflight = self.db.inflight.lock();
        for id in &self.staged {
            inflight.remove(id);
        }
        drop(inflight);
        // Staged values of a transaction that never landed are garbage now;
        // deleting them here spares GC the work (it would find them anyway).
        // Off the caller's path: during an outage each delete waits out
        // its retries.
        if !self.landed && !self.staged.is_empty() {
            let (store, staged) = (
                self.db.loader.store.clone(),
                std::mem::take(&mut self.staged),
            );
            super::stager::cleanup(
                &self.db.cleanups,
                !self.db.loader.store.probe_is_cheap(),
                Box::new(move || {
                    for id in staged {
                        if let Err(e) = store.delete(&blob_path(id)) {
                            tracing::debug!(blob = %id, error = %e, "staged value left for GC");
                        }
                    }
                }),
            );
        }
    }
}
