//! B-tree nodes as stored: leaves hold entries, internal nodes hold separators
//! and the logical ids of their children.

use crate::codec::{self, Kind};
use crate::error::Result;
use crate::ids::{BlobId, NodeId};
use serde::{Deserialize, Serialize};

/// A key's value as a leaf holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// Small values sit in the node itself.
    Inline(Vec<u8>),
    /// Large values live in their own blobs, in chunks when very large.
    External {
        /// Chunk blobs, in order.
        chunks: Vec<BlobId>,
        /// Total length in bytes.
        len: u64,
    },
}

impl Value {
    /// Length of the value in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Value::Inline(v) => v.len() as u64,
            Value::External { len, .. } => *len,
        }
    }

    /// True for a zero-length value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes beyond the enum itself, with the allocator's per-block
    /// overhead (16 bytes, rounded up to 16).
    fn footprint(&self) -> usize {
        match self {
            Value::Inline(v) => heap_block(v.len()),
            Value::External { chunks, .. } => heap_block(chunks.len() * 16),
        }
    }
}

/// What a heap block of `n` bytes costs with glibc's header and rounding.
fn heap_block(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n + 8).div_ceil(16) * 16 + 8
    }
}

/// One B-tree node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Node {
    /// Sorted entries.
    Leaf {
        /// (key, value), ascending by key bytes.
        entries: Vec<(Vec<u8>, Value)>,
    },
    /// `children.len() == keys.len() + 1`; child `i` holds keys in
    /// `[keys[i-1], keys[i])`.
    Internal {
        /// Separators.
        keys: Vec<Vec<u8>>,
        /// Logical ids of the children.
        children: Vec<NodeId>,
    },
}

impl Node {
    /// An empty leaf: the root of a new tree.
    pub fn empty_leaf() -> Self {
        Node::Leaf {
            entries: Vec::new(),
        }
    }

    /// Entries of a leaf, or children of an internal node.
    pub fn width(&self) -> usize {
        match self {
            Node::Leaf { entries } => entries.len(),
            Node::Internal { children, .. } => children.len(),
        }
    }

    /// Approximate bytes held in memory, for the cache budget: measured
    /// RSS, not payload (counting payload alone let a 128 MiB cache hold
    /// 230 MiB).
    pub fn footprint(&self) -> usize {
        let entry = std::mem::size_of::<(Vec<u8>, Value)>();
        64 + match self {
            Node::Leaf { entries } => {
                heap_block(entries.capacity() * entry)
                    + entries
                        .iter()
                        .map(|(k, v)| heap_block(k.len()) + v.footprint())
                        .sum::<usize>()
            }
            Node::Internal { keys, children } => {
                heap_block(keys.capacity() * 24)
                    + keys.iter().map(|k| heap_block(k.len())).sum::<usize>()
                    + heap_block(children.capacity() * 8)
            }
        }
    }

    /// Serializes into a framed blob.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(Kind::Node, self)
    }

    /// The node's serialized form without a frame: how a commit record carries it.
    pub fn encode_payload(&self) -> Vec<u8> {
        // postcard only fails on writers that run out of room; a Vec never does.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes a node carried inside another object (already checked as part of it).
    pub fn decode_payload(path: &str, payload: &[u8]) -> Result<Self> {
        codec::decode_payload(Kind::Node, path, payload)
    }

    /// Checks and decodes a framed node blob.
    pub fn decode(path: &str, data: &[u8]) -> Result<Self> {
        codec::decode(Kind::Node, path, data)
    }
}
