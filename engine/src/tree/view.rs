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
}

impl Loader {
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
    /// record's other nodes are cached too: they are the newest versions
    /// of nodes the caller's neighbours are likely to want next.
    fn load_packed(&self, seq: u64, blob: BlobId) -> Result<Option<Arc<Node>>> {
        let path = log_path(seq);
        let Some(data) = self.log.read(seq)? else {
            return Ok(None);
        };
        let record = decode_record(path.as_ref(), &data)?;
        let mut wanted = None;
        for p in record.packed {
            let node = Arc::new(Node::decode_in_record(path.as_ref(), &p.body, seq)?);
            if p.blob == blob {
                wanted = Some(node.clone());
            }
            self.cache.insert(p.blob, node);
        }
        match wanted {
            Some(node) => Ok(Some(node)),
            None => Err(Error::Corrupted {
                what: "commit record",
                path: path.to_string(),
                detail: format!("does not carry node {blob}"),
            }),
        }
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
        let Some(data) = self.log.read(seq)? else {
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
        wanted.ok_or_else(|| Error::Corrupted {
            what: "commit record",
            path: path.to_string(),
            detail: format!("does not carry value {blob}"),
        })
    }

    /// Caches the nodes record `seq` carries (read for another reason).
    pub fn cache_packed(&self, seq: u64, packed: &[crate::log::PackedNode]) {
        for p in packed {
            if let Ok(node) = Node::decode_in_record("commit record", &p.body, seq) {
                self.cache.insert(p.blob, Arc::new(node));
            }
        }
    }

    /// The payload of value blob `blob`: from the cache, from a load already
    /// under way, or read and checked here.
    pub fn value(&self, blob: crate::ids::BlobId) -> Result<Arc<Vec<u8>>> {
        loop {
            if let Some(hit) = self.values.get(blob) {
                return Ok(hit);
            }
            let mut loading = self.loading.lock();
            if !loading.contains(&blob) {
                loading.insert(blob);
                break;
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
        result
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
#[derive(Clone)]
pub(crate) struct View {
    pub base: Arc<RegState>,
    loader: Arc<Loader>,
    pub dirty: IdMap<NodeId, Arc<Node>>,
    pub freed: IdSet<NodeId>,
    pub created: IdSet<NodeId>,
}

impl View {
    pub fn new(base: Arc<RegState>, loader: Arc<Loader>) -> Self {
        View {
            base,
            loader,
            dirty: IdMap::default(),
            freed: IdSet::default(),
            created: IdSet::default(),
        }
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
        let id = NodeId::fresh();
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
