//! A transaction's private copy-on-write view of the registry: nodes it changed,
//! created and freed, over an immutable snapshot.

use crate::error::{Error, Result};
use crate::ids::BlobId;
use crate::ids::{IdMap, IdSet, NodeId};
use crate::log::{decode_record, NodeLoc, RegState};
use crate::store::{blob_path, log_path, BlobStore};
use crate::tree::{Node, Value};
use crate::tree::{NodeCache, ValueCache};
use std::collections::HashSet;
use std::sync::Arc;

/// A record that should carry `what` `blob` does not.
fn not_carried(seq: u64, what: &str, blob: BlobId) -> Error {
    Error::Corrupted {
        what: "commit record",
        path: log_path(seq).to_string(),
        detail: format!("does not carry {what} {blob}"),
    }
}

/// What a view needs to load nodes it did not change.
pub(crate) struct Loader {
    pub store: Arc<BlobStore>,
    pub log: Arc<crate::log::Log>,
    pub cache: NodeCache,
    pub values: ValueCache,
    /// Value blobs being read from the store right now: a second reader of
    /// one (a prefetcher and the reader it works for) waits instead of
    /// reading it again.
    pub loading: parking_lot::Mutex<HashSet<crate::ids::BlobId>>,
    pub loaded: parking_lot::Condvar,
    /// The node bodies of the last few big records read (see
    /// `load_packed`), by seq.
    pub big_records: parking_lot::Mutex<lru::LruCache<u64, Arc<BigRecord>>>,
    /// Nodes melds made that the store may not hold yet.
    pub melded: crate::tree::MeldedNodes,
    /// Other processes' records as they arrived (S3), undecoded: most of
    /// their nodes are never wanted here (hosts writing directories of
    /// their own), and decoding every one as it arrived was a tenth of a
    /// host's CPU with 32 hosts. A record is decoded at the first want of
    /// one of its nodes or values. Bounded in bytes, unlike `big_records`
    /// (bodies of records read because one of their nodes was wanted):
    /// these arrive whether wanted or not.
    pub frames: crate::tree::RecordFrames,
}

/// Records whose nodes are past this many bytes are "big": a reader decodes
/// only the node it wants and keeps the record's bodies in
/// `Loader::big_records`, instead of decoding and caching all its nodes.
const BIG_RECORD: usize = 512 * 1024;
/// Big records whose bodies `Loader::big_records` keeps.
const BIG_RECORDS_KEPT: usize = 2;

/// Other processes' undecoded records get this share of the node cache's
/// budget, on top of it.
const FRAMES_SHARE: usize = 4;

/// The node bodies a big record carries, by blob id.
pub(crate) type BigRecord = std::collections::HashMap<BlobId, Vec<u8>>;

impl Loader {
    /// A loader with caches of `cache_bytes` for nodes and
    /// `value_cache_bytes` for values.
    pub fn new(
        store: Arc<BlobStore>,
        log: Arc<crate::log::Log>,
        cache_bytes: usize,
        value_cache_bytes: usize,
    ) -> Self {
        Loader {
            store,
            log,
            cache: NodeCache::new(cache_bytes),
            values: ValueCache::new(value_cache_bytes),
            loading: parking_lot::Mutex::new(HashSet::new()),
            loaded: parking_lot::Condvar::new(),
            big_records: parking_lot::Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(BIG_RECORDS_KEPT)
                    .unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            melded: Default::default(),
            frames: crate::tree::RecordFrames::new(cache_bytes / FRAMES_SHARE),
        }
    }

    /// Loads the node version `loc` names (cache first).
    pub fn load(&self, loc: &NodeLoc) -> Result<Arc<Node>> {
        let packed_in = loc.packed.then_some(loc.version);
        self.load_blob(loc.blob, packed_in)
    }

    /// Loads node version `blob`, carried inside commit record `packed_in`
    /// if given (or in its own blob, once GC trimmed that record).
    pub fn load_blob(&self, blob: BlobId, packed_in: Option<u64>) -> Result<Arc<Node>> {
        if let Some(n) = self.cache.get(blob) {
            return Ok(n);
        }
        if let Some(n) = self.melded.get(blob) {
            return Ok(n);
        }
        if let Some(seq) = packed_in {
            if let Some(node) = self.load_packed(seq, blob)? {
                return Ok(node);
            }
        }
        let path = blob_path(blob);
        let data = self.store.get(&path)?.ok_or_else(|| Error::Missing {
            what: "node",
            path: path.to_string(),
        })?;
        let node = Arc::new(Node::decode(path.as_ref(), &data)?);
        self.cache.insert(blob, node.clone());
        Ok(node)
    }
}

impl Loader {
    /// Reads node `blob` out of record `seq`; `None` if the record is gone
    /// (trimmed by GC, which wrote its live nodes out as blobs first). The
    /// other nodes of a small record are cached too: they are the newest
    /// versions of nodes the caller's neighbours are likely to want next.
    /// A big record (a clone's thousands of nodes) would flood the node
    /// cache that way, and every read of one of its nodes would evict the
    /// others: its bodies are kept as bytes instead, and nodes decoded one
    /// by one as they are wanted.
    fn load_packed(&self, seq: u64, blob: BlobId) -> Result<Option<Arc<Node>>> {
        let path = log_path(seq);
        let kept = self.big_records.lock().get(&seq).cloned();
        let big = match kept {
            Some(big) => big,
            None => {
                let Some(data) = self.record(seq)? else {
                    return Ok(None);
                };
                let record = decode_record(path.as_ref(), &data)?;
                let bytes: usize = record.packed.iter().map(|p| p.body.len()).sum();
                if bytes <= BIG_RECORD {
                    return self.cache_all(seq, blob, record.packed).map(Some);
                }
                let big: Arc<BigRecord> = Arc::new(
                    record
                        .packed
                        .into_iter()
                        .map(|p| (p.blob, p.body))
                        .collect(),
                );
                self.big_records.lock().put(seq, big.clone());
                big
            }
        };
        let body = big
            .get(&blob)
            .ok_or_else(|| not_carried(seq, "node", blob))?;
        self.decode_kept(seq, blob, body).map(Some)
    }

    /// The frame of record `seq`: kept as it arrived, or read from the log
    /// (and then this host wants other records' bodies: it catches up with
    /// whole records for a while, see `Log::note_bodies_wanted`).
    fn record(&self, seq: u64) -> Result<Option<bytes::Bytes>> {
        match self.frames.get(seq) {
            Some(frame) => Ok(Some(bytes::Bytes::clone(&frame))),
            None => {
                self.log.note_bodies_wanted(seq);
                self.log.read(seq)
            }
        }
    }

    /// Decodes node `blob` from `body`, kept as bytes out of big record
    /// `seq`, into the node cache.
    fn decode_kept(&self, seq: u64, blob: BlobId, body: &[u8]) -> Result<Arc<Node>> {
        let node = Arc::new(Node::decode_in_record(log_path(seq).as_ref(), body, seq)?);
        self.cache.insert(blob, node.clone());
        Ok(node)
    }

    /// Decodes and caches every node of a small record; returns `blob`.
    fn cache_all(
        &self,
        seq: u64,
        blob: BlobId,
        packed: Vec<crate::log::PackedNode>,
    ) -> Result<Arc<Node>> {
        let path = log_path(seq);
        let mut wanted = None;
        for p in packed {
            let node = Arc::new(Node::decode_in_record(path.as_ref(), &p.body, seq)?);
            if p.blob == blob {
                wanted = Some(node.clone());
            }
            self.cache.insert(p.blob, node);
        }
        wanted.ok_or_else(|| not_carried(seq, "node", blob))
    }

    /// The bytes of value chunk `blob`, carried in commit record `packed_in`
    /// if given (or in its own blob once GC trimmed that record). Reading
    /// a record caches every value it carries: files written together are
    /// read together.
    pub fn value_in(&self, blob: BlobId, packed_in: Option<u64>) -> Result<Arc<Vec<u8>>> {
        let Some(seq) = packed_in else {
            return self.value(blob);
        };
        if let Some(hit) = self.values.get(blob) {
            return Ok(hit);
        }
        let path = log_path(seq);
        let Some(data) = self.record(seq)? else {
            return self.value(blob);
        };
        let record = decode_record(path.as_ref(), &data)?;
        let mut wanted = None;
        for v in record.values {
            let body = Arc::new(v.body);
            if v.blob == blob {
                wanted = Some(body.clone());
            }
            self.values.insert(v.blob, body);
        }
        wanted.ok_or_else(|| not_carried(seq, "value", blob))
    }

    /// Keeps the frame of record `seq` (read to fold it) until one of its
    /// nodes or values is wanted.
    pub fn keep_frame(&self, seq: u64, frame: &bytes::Bytes) {
        self.frames.insert(seq, Arc::new(frame.clone()));
    }

    /// The payload of value blob `blob`: from the cache, from a load already
    /// under way, or read and checked here.
    pub fn value(&self, blob: crate::ids::BlobId) -> Result<Arc<Vec<u8>>> {
        self.value_unless_loading(blob, true)?
            .ok_or_else(|| Error::InvalidArgument(format!("value {blob} was not loaded")))
    }

    /// Loads value blob `blob` into the cache unless it is there or being
    /// loaded already: read-ahead threads go on to the next blob instead
    /// of waiting for one another.
    pub fn warm_value(&self, blob: BlobId) -> Result<()> {
        self.value_unless_loading(blob, false).map(drop)
    }

    /// `value`, or (`wait` false) None when another thread is loading it.
    fn value_unless_loading(&self, blob: BlobId, wait: bool) -> Result<Option<Arc<Vec<u8>>>> {
        loop {
            if let Some(hit) = self.values.get(blob) {
                return Ok(Some(hit));
            }
            let mut loading = self.loading.lock();
            if !loading.contains(&blob) {
                loading.insert(blob);
                break;
            }
            if !wait {
                return Ok(None);
            }
            // Its loader inserts it into the cache (or fails): look again.
            self.loaded
                .wait_for(&mut loading, std::time::Duration::from_secs(5));
        }
        let result = self.read_value(blob);
        if let Ok(v) = &result {
            self.values.insert(blob, v.clone());
        }
        self.loading.lock().remove(&blob);
        self.loaded.notify_all();
        result.map(Some)
    }

    /// Bytes `range` of value chunk `blob`, a format-2 chunk of `n` data
    /// bytes: sliced from the cache when the chunk is there, else read from
    /// the blocks that hold them alone (checked, not cached: the kernel's
    /// page cache keeps what a reader reads again), or on a sealed volume
    /// read whole and cached.
    pub fn value_range(
        &self,
        blob: crate::ids::BlobId,
        n: usize,
        range: std::ops::Range<usize>,
    ) -> Result<Vec<u8>> {
        let range = range.start.min(n)..range.end.min(n);
        if let Some(hit) = self.values.get(blob) {
            return Ok(hit.get(range).unwrap_or_default().to_vec());
        }
        if range.is_empty() {
            return Ok(Vec::new());
        }
        if self.store.is_sealed() {
            // A sealed chunk opens whole only: read it once, cached, so a
            // sequential reader's next pieces come from memory.
            let whole = self.value(blob)?;
            return Ok(whole.get(range).unwrap_or_default().to_vec());
        }
        let path = blob_path(blob);
        let (at, first) = crate::codec::value_blocks_for(n, range.clone());
        let stored = self
            .store
            .get_range(&path, at)?
            .ok_or_else(|| Error::Missing {
                what: "value",
                path: path.to_string(),
            })?;
        let data = crate::codec::check_blocks(path.as_ref(), first, &stored, n)?;
        let off = range.start - first * crate::codec::VALUE_BLOCK;
        let Some(part) = data.get(off..off + range.len()) else {
            return Err(Error::Corrupted {
                what: "value",
                path: path.to_string(),
                detail: format!("blocks end before byte {}", range.end),
            });
        };
        Ok(part.to_vec())
    }

    /// Bytes `range` of value blob `blob`, which is read whole (and
    /// cached): a blob holding several values is a run of a file's chunks,
    /// and a reader of one piece reads the next.
    pub fn value_piece(&self, blob: BlobId, range: std::ops::Range<usize>) -> Result<Vec<u8>> {
        let whole = self.value(blob)?;
        match whole.get(range.clone()) {
            Some(piece) => Ok(piece.to_vec()),
            None => Err(Error::Corrupted {
                what: "value",
                path: blob_path(blob).to_string(),
                detail: format!(
                    "{} bytes, a piece at {}..{} named",
                    whole.len(),
                    range.start,
                    range.end
                ),
            }),
        }
    }

    fn read_value(&self, blob: crate::ids::BlobId) -> Result<Arc<Vec<u8>>> {
        let path = blob_path(blob);
        let data = self.store.get(&path)?.ok_or_else(|| Error::Missing {
            what: "value",
            path: path.to_string(),
        })?;
        Ok(Arc::new(crate::codec::unframe_value(path.as_ref(), &data)?))
    }
}

/// Snapshot plus private changes.
pub(crate) struct View {
    pub base: Arc<RegState>,
    loader: Arc<Loader>,
    pub dirty: IdMap<NodeId, Arc<Node>>,
    pub freed: IdSet<NodeId>,
    pub created: IdSet<NodeId>,
    /// Catalog entries found through this view, by tree name (raw bytes of
    /// the entry). A tree keeps its entry until it is dropped, so only a
    /// drop (`forget_tree`) invalidates one; without this every operation
    /// walked the catalog, a tenth of a big clone's time.
    metas: parking_lot::Mutex<std::collections::HashMap<String, Vec<u8>>>,
    /// Where new node ids come from: fresh random ones, or (a meld) ids
    /// every reader derives alike from a seed and a counter.
    ids: Option<(u128, u64)>,
}

impl Clone for View {
    fn clone(&self) -> Self {
        View {
            base: self.base.clone(),
            loader: self.loader.clone(),
            dirty: self.dirty.clone(),
            freed: self.freed.clone(),
            created: self.created.clone(),
            metas: parking_lot::Mutex::new(self.metas.lock().clone()),
            ids: self.ids,
        }
    }
}

impl View {
    pub fn new(base: Arc<RegState>, loader: Arc<Loader>) -> Self {
        View {
            base,
            loader,
            dirty: IdMap::default(),
            freed: IdSet::default(),
            created: IdSet::default(),
            metas: parking_lot::Mutex::new(std::collections::HashMap::new()),
            ids: None,
        }
    }

    /// A view whose new nodes get ids derived from `seed`: the same on
    /// every process that makes the same changes on the same base.
    pub fn derived(base: Arc<RegState>, loader: Arc<Loader>, seed: u128) -> Self {
        View {
            ids: Some((seed, 0)),
            ..View::new(base, loader)
        }
    }

    /// The catalog entry of tree `name` this view found before, if any.
    pub fn known_tree(&self, name: &str) -> Option<Vec<u8>> {
        self.metas.lock().get(name).cloned()
    }

    /// Remembers tree `name`'s catalog entry as found through this view.
    pub fn remember_tree(&self, name: &str, entry: &[u8]) {
        self.metas.lock().insert(name.to_string(), entry.to_vec());
    }

    /// Forgets tree `name`'s catalog entry (the tree is being dropped).
    pub fn forget_tree(&self, name: &str) {
        self.metas.lock().remove(name);
    }

    /// The node as this view sees it.
    pub fn node(&self, id: NodeId) -> Result<Arc<Node>> {
        if let Some(n) = self.dirty.get(&id) {
            return Ok(n.clone());
        }
        let missing = || Error::Missing {
            what: "registry entry",
            path: format!("node {id}"),
        };
        if self.freed.contains(&id) {
            return Err(missing());
        }
        let loc = self.base.nodes.get(&id).ok_or_else(missing)?;
        self.loader.load(loc)
    }

    /// The node, private to this view, to change in place: the first change
    /// in a transaction copies it, later ones do not.
    pub fn node_mut(&mut self, id: NodeId) -> Result<&mut Node> {
        if !self.dirty.contains_key(&id) {
            let node = self.node(id)?;
            self.dirty.insert(id, node);
        }
        let node = self.dirty.get_mut(&id).ok_or_else(|| Error::Missing {
            what: "registry entry",
            path: format!("node {id}"),
        })?;
        Ok(Arc::make_mut(node))
    }

    pub fn set(&mut self, id: NodeId, node: Node) {
        self.dirty.insert(id, Arc::new(node));
    }

    pub fn alloc(&mut self, node: Node) -> NodeId {
        let id = match self.ids.as_mut() {
            None => NodeId::fresh(),
            Some((seed, n)) => loop {
                *n += 1;
                let id = NodeId(crate::ids::derive(*seed, *n, 0) as u64);
                let taken = self.base.nodes.contains_key(&id) || self.dirty.contains_key(&id);
                if id.0 > 1024 && !taken {
                    break id;
                }
            },
        };
        self.created.insert(id);
        self.set(id, node);
        id
    }

    pub fn free(&mut self, id: NodeId) {
        self.dirty.remove(&id);
        if !self.created.remove(&id) {
            self.freed.insert(id);
        }
    }

    /// Marks the single-chunk values whose chunk is one of `values`, in the
    /// leaves `nodes`, as carried in the commit record that carries those
    /// leaves (the commit is about to pack them there); returns the chunks
    /// it marked. A value of several chunks keeps them as blobs.
    pub fn pack_values_here(
        &mut self,
        values: &HashSet<BlobId>,
        nodes: &HashSet<NodeId>,
    ) -> HashSet<BlobId> {
        let mut marked = HashSet::new();
        for (id, node) in self.dirty.iter_mut() {
            if !nodes.contains(id) {
                continue;
            }
            let Node::Leaf(leaf) = &**node else {
                continue;
            };
            let hits: Vec<(usize, Value)> = (0..leaf.len())
                .filter_map(|i| match leaf.value(i) {
                    Value::External {
                        chunks,
                        len,
                        blocks,
                        packed: None,
                    } if chunks.len() == 1 && values.contains(&chunks[0]) => Some((
                        i,
                        Value::External {
                            chunks,
                            len,
                            blocks,
                            packed: Some(crate::tree::Packed::Here),
                        },
                    )),
                    _ => None,
                })
                .collect();
            if hits.is_empty() {
                continue;
            }
            if let Node::Leaf(leaf) = Arc::make_mut(node) {
                for (i, v) in hits {
                    if let Value::External { chunks, .. } = &v {
                        marked.extend(chunks.iter().copied());
                    }
                    leaf.replace(i, &v);
                }
            }
        }
        marked
    }

    /// Nodes whose registry entries this view changes, sorted: what must be locked.
    pub fn touched(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .dirty
            .keys()
            .filter(|id| !self.created.contains(id))
            .chain(self.freed.iter())
            .copied()
            .collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{CommitRecord, Log, LogMode, PackedNode, PackedValue};
    use crate::store::StoreLocation;

    #[test]
    fn a_kept_record_is_decoded_when_one_of_its_nodes_or_values_is_first_wanted() {
        let store =
            Arc::new(BlobStore::open(&StoreLocation::Memory(Default::default())).expect("store"));
        let log = Arc::new(Log::open(store.clone(), LogMode::ReadOnly, u64::MAX).expect("log"));
        let loader = Loader::new(store, log, 1 << 20, 1 << 20);
        let (blob, other, value) = (BlobId::fresh(), BlobId::fresh(), BlobId::fresh());
        let leaf = Node::empty_leaf();
        let record = CommitRecord {
            seq: 7,
            txid: crate::ids::TxId::fresh(),
            time_ms: 0,
            writes: Vec::new(),
            replaced_trees: Vec::new(),
            nodes: Vec::new(),
            base: 6,
            reads: Vec::new(),
            ops: Vec::new(),
            packed: [blob, other]
                .into_iter()
                .map(|b| PackedNode {
                    blob: b,
                    body: leaf.encode_payload(),
                })
                .collect(),
            values: vec![PackedValue {
                blob: value,
                body: b"file bytes".to_vec(),
            }],
            void: false,
            melded: false,
        };
        // Record 7 is in neither the log nor the store: only a kept frame
        // can answer.
        assert!(loader.load_blob(blob, Some(7)).is_err());
        assert!(loader.value_in(value, Some(7)).is_err());
        let frame = bytes::Bytes::from(crate::codec::encode(crate::codec::Kind::Record, &record));
        loader.keep_frame(7, &frame);
        assert!(loader.cache.get(blob).is_none(), "kept, not decoded");
        let node = loader
            .load_blob(blob, Some(7))
            .expect("decoded from the kept frame");
        assert_eq!(node.encode_payload(), leaf.encode_payload());
        assert!(
            loader.cache.get(other).is_some(),
            "the record's other nodes decoded with it"
        );
        assert_eq!(
            loader.value_in(value, Some(7)).expect("value").as_slice(),
            b"file bytes"
        );
    }
}
