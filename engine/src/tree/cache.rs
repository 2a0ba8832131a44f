//! Decoded blobs (nodes, value chunks) by physical blob id, and other
//! processes' records by log position. Both are immutable, so an entry is
//! never stale; the bound is in bytes, not entries.

use crate::ids::BlobId;
use crate::tree::Node;
use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What a cached blob costs in memory.
pub trait Footprint {
    /// Approximate bytes held.
    fn footprint(&self) -> usize;
}

impl Footprint for Node {
    fn footprint(&self) -> usize {
        Node::footprint(self)
    }
}

impl Footprint for Vec<u8> {
    fn footprint(&self) -> usize {
        self.len() + 24
    }
}

impl Footprint for Bytes {
    fn footprint(&self) -> usize {
        self.len()
    }
}

/// Byte-bounded LRU of immutable things by key (a blob id unless told).
pub struct BlobCache<T, K = BlobId> {
    inner: Mutex<Inner<T, K>>,
    budget: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Decoded B-tree nodes.
pub type NodeCache = BlobCache<Node>;

/// Out-of-line value chunks (file content, in sopfs), unframed.
pub type ValueCache = BlobCache<Vec<u8>>;

/// Other processes' records as they arrived (S3), undecoded, by log
/// position: a host folds every record of the volume but wants the nodes
/// and values of few of them (hosts writing directories of their own want
/// none). Keeping the frame costs a reference to the bytes already read;
/// taking every node body out of it as it arrived cost an allocation and a
/// copy each (6 % of the 64-host simulation's CPU).
pub type RecordFrames = BlobCache<Bytes, u64>;

struct Inner<T, K> {
    lru: LruCache<K, (Arc<T>, usize), crate::ids::IdHash>,
    bytes: usize,
}

impl<T: Footprint, K: Hash + Eq> BlobCache<T, K> {
    /// A cache holding at most about `budget` bytes.
    pub fn new(budget: usize) -> Self {
        BlobCache {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded_with_hasher(crate::ids::IdHash),
                bytes: 0,
            }),
            budget,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The blob decoded from `id`, if cached.
    pub fn get(&self, id: K) -> Option<Arc<T>> {
        let found = self.inner.lock().lru.get(&id).map(|(n, _)| n.clone());
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Remembers the blob decoded from `id`, evicting the least recently used.
    pub fn insert(&self, id: K, node: Arc<T>) {
        let size = node.footprint();
        if size > self.budget {
            return;
        }
        let mut g = self.inner.lock();
        if let Some((_, old)) = g.lru.put(id, (node, size)) {
            g.bytes -= old;
        }
        g.bytes += size;
        while g.bytes > self.budget {
            match g.lru.pop_lru() {
                Some((_, (_, s))) => g.bytes -= s,
                None => break,
            }
        }
    }

    /// (hits, misses, bytes held).
    pub fn stats(&self) -> (u64, u64, usize) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
            self.inner.lock().bytes,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Value;

    #[test]
    fn stays_within_its_byte_budget() {
        let cache = NodeCache::new(10_000);
        for i in 0..1000u128 {
            let node = Node::Leaf(crate::tree::Leaf::from_entries([(
                &[0u8; 100][..],
                &Value::Inline(vec![1; 100]),
            )]));
            cache.insert(BlobId(i), Arc::new(node));
            assert!(cache.stats().2 <= 10_000);
        }
        assert!(cache.get(BlobId(999)).is_some());
        assert!(cache.get(BlobId(0)).is_none());
    }

    #[test]
    fn keeps_the_newest_record_frames_within_its_budget() {
        let frames = RecordFrames::new(1_000);
        for seq in 0..100u64 {
            frames.insert(seq, Arc::new(Bytes::from(vec![seq as u8; 100])));
            assert!(frames.stats().2 <= 1_000);
        }
        assert_eq!(frames.get(99).map(|f| f[0]), Some(99));
        assert!(frames.get(0).is_none());
        frames.insert(5, Arc::new(Bytes::from(vec![0; 2_000])));
        assert!(frames.get(5).is_none(), "bigger than the whole budget");
        frames.insert(99, Arc::new(Bytes::from(vec![7; 10])));
        assert_eq!(frames.get(99).map(|f| f.len()), Some(10));
        assert!(frames.stats().2 <= 1_000);
    }
}
