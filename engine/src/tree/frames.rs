//! Other processes' commit records as they arrived (S3), kept whole and
//! undecoded: a host folds every record of the volume but wants the nodes
//! and values of few of them (hosts writing directories of their own want
//! none). Keeping the frame costs a reference to the bytes already read;
//! taking every node body out of it as it arrived cost an allocation and a
//! copy each (6 % of the 64-host simulation's CPU).

use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;

/// Record frames by log position, bounded in bytes.
pub struct RecordFrames {
    inner: Mutex<Inner>,
    budget: usize,
}

struct Inner {
    lru: LruCache<u64, Bytes>,
    bytes: usize,
}

impl RecordFrames {
    /// Frames up to about `budget` bytes in all.
    pub fn new(budget: usize) -> Self {
        RecordFrames {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            budget,
        }
    }

    /// The frame of record `seq`, if kept.
    pub fn get(&self, seq: u64) -> Option<Bytes> {
        self.inner.lock().lru.get(&seq).cloned()
    }

    /// Keeps the frame of record `seq` (the same bytes whoever reads it:
    /// a position is written once), evicting the least recently used.
    pub fn insert(&self, seq: u64, frame: Bytes) {
        let size = frame.len();
        if size > self.budget {
            return;
        }
        let mut g = self.inner.lock();
        if let Some(old) = g.lru.put(seq, frame) {
            g.bytes -= old.len();
        }
        g.bytes += size;
        while g.bytes > self.budget {
            match g.lru.pop_lru() {
                Some((_, f)) => g.bytes -= f.len(),
                None => break,
            }
        }
    }

    /// Bytes held.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_frames_within_its_budget() {
        let frames = RecordFrames::new(1_000);
        for seq in 0..100u64 {
            frames.insert(seq, Bytes::from(vec![seq as u8; 100]));
            assert!(frames.bytes() <= 1_000);
        }
        assert_eq!(frames.get(99).map(|f| f[0]), Some(99));
        assert!(frames.get(0).is_none());
        frames.insert(5, Bytes::from(vec![0; 2_000]));
        assert!(frames.get(5).is_none(), "bigger than the whole budget");
        frames.insert(99, Bytes::from(vec![7; 10]));
        assert_eq!(frames.get(99).map(|f| f.len()), Some(10));
        assert!(frames.bytes() <= 1_000);
    }
}
