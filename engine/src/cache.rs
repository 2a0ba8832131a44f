//! Decoded nodes by physical blob id. Blobs are immutable, so an entry is never
//! stale; the bound is in bytes, not entries.

use crate::ids::BlobId;
use crate::node::Node;
use lru::LruCache;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Byte-bounded LRU of decoded nodes.
pub struct NodeCache {
    inner: Mutex<Inner>,
    budget: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

struct Inner {
    lru: LruCache<BlobId, (Arc<Node>, usize)>,
    bytes: usize,
}

impl NodeCache {
    /// A cache holding at most about `budget` bytes of decoded nodes.
    pub fn new(budget: usize) -> Self {
        NodeCache {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            budget,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The node decoded from `id`, if cached.
    pub fn get(&self, id: BlobId) -> Option<Arc<Node>> {
        let found = self.inner.lock().lru.get(&id).map(|(n, _)| n.clone());
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Remembers the node decoded from `id`, evicting the least recently used.
    pub fn insert(&self, id: BlobId, node: Arc<Node>) {
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
    use crate::node::Value;

    #[test]
    fn stays_within_its_byte_budget() {
        let cache = NodeCache::new(10_000);
        for i in 0..1000u128 {
            let node = Node::Leaf {
                entries: vec![(vec![0; 100], Value::Inline(vec![1; 100]))],
            };
            cache.insert(BlobId(i), Arc::new(node));
            assert!(cache.stats().2 <= 10_000);
        }
        assert!(cache.get(BlobId(999)).is_some());
        assert!(cache.get(BlobId(0)).is_none());
    }
}
