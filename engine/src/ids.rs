//! Identifiers: blobs, logical nodes and transactions, all fresh random values.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::hash::{BuildHasher, Hasher};

/// Physical blob id: names an immutable object in the store.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlobId(pub u128);

/// Logical node id: stable across versions; the registry maps it to a blob.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub u64);

/// Transaction id: names a transaction's intent record and its locks.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TxId(pub u128);

impl BlobId {
    /// A fresh random id.
    pub fn fresh() -> Self {
        BlobId(rand::random())
    }
}

impl NodeId {
    /// The catalog tree's root: fixed, created when the volume is formatted.
    pub const CATALOG_ROOT: NodeId = NodeId(1);

    /// A fresh random id (never one of the reserved low ids).
    pub fn fresh() -> Self {
        loop {
            let v: u64 = rand::random();
            if v > 1024 {
                return NodeId(v);
            }
        }
    }
}

impl TxId {
    /// A fresh random id.
    pub fn fresh() -> Self {
        TxId(rand::random())
    }
}

/// A 128-bit id derived from `seed` and two numbers, the same on every
/// machine and build (a fixed mix, not `std`'s hasher, whose output may
/// change between releases): ids of what every reader of the log makes alike.
pub fn derive(seed: u128, a: u64, b: u64) -> u128 {
    fn mix(mut z: u64) -> u64 {
        // splitmix64's finalizer
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let (lo, hi) = (seed as u64, (seed >> 64) as u64);
    let x = mix(lo ^ mix(a.wrapping_add(0x9e37_79b9_7f4a_7c15)));
    let y = mix(hi ^ mix(b ^ x));
    let z = mix(x ^ y.rotate_left(17) ^ a);
    ((y as u128) << 64) | z as u128
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}
impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blob:{self}")
    }
}
impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node:{self}")
    }
}
impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}
impl fmt::Debug for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tx:{self}")
    }
}

/// Builds hashers for maps keyed by ids. Ids are uniform random numbers
/// already, so mixing their bits once is enough; SipHash (the std default)
/// cost more than the lookups it served on the commit path.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHash;

/// The hasher [`IdHash`] builds.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Not an id: fold the bytes in (FNV-1a), still well mixed by `finish`.
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(MIX);
    }

    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64 ^ (v >> 64) as u64);
    }

    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

impl BuildHasher for IdHash {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

/// A hash map keyed by ids.
pub type IdMap<K, V> = std::collections::HashMap<K, V, IdHash>;

/// A hash set of ids.
pub type IdSet<K> = std::collections::HashSet<K, IdHash>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_hashes_spread_over_the_low_and_high_bits() {
        // HAMTs and swiss tables read different ends of the hash.
        let hashes: Vec<u64> = (0..4096u64).map(|i| IdHash.hash_one(NodeId(i))).collect();
        for (shift, mask) in [(0, 0xff), (56, 0xff)] {
            let buckets: std::collections::HashSet<u64> =
                hashes.iter().map(|h| (h >> shift) & mask).collect();
            assert!(
                buckets.len() > 200,
                "{} of 256 buckets at >>{shift}",
                buckets.len()
            );
        }
    }
}
