//! Decoded blobs (nodes, value chunks) by physical blob id. Blobs are
//! immutable, so an entry is never stale; the bound is in bytes, not entries.

use crate::ids::BlobId;
use crate::tree::Node;
use lru::LruCache;
use parking_lot::Mutex;
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

/// Byte-bounded LRU of decoded blobs.
pub struct BlobCache<T> {
    inner: Mutex<Inner<T>>,
    budget: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Decoded B-tree nodes.
pub type NodeCache = BlobCache<Node>;

/// Out-of-line value chunks (file content, in sopfs), unframed.
pub type ValueCache = BlobCache<Vec<u8>>;

struct Inner<T> {
    lru: LruCache<BlobId, (Arc<T>, usize), crate::ids::IdHash>,
    bytes: usize,
}

impl<T: Footprint> BlobCache<T> {
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
    pub fn get(&self, id: BlobId) -> Option<Arc<T>> {
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
    pub fn insert(&self, id: BlobId, node: Arc<T>) {
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
}
