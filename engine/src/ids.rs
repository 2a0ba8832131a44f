//! Identifiers: blobs, logical nodes and transactions, all fresh random values.

use serde::{Deserialize, Serialize};
use std::fmt;

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
