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
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
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
        #[serde(with = "byte_keys")]
        entries: Vec<(Vec<u8>, Value)>,
    },
    /// `children.len() == keys.len() + 1`; child `i` holds keys in
    /// `[keys[i-1], keys[i])`.
    Internal {
        /// Separators.
        #[serde(with = "byte_keys")]
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

/// Byte strings inside nodes go through serde's bytes path (one copy)
/// rather than as sequences of `u8` (one serializer call per byte). In
/// postcard both are a varint length and the raw bytes, so the stored
/// format is the same.
mod byte_keys {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    /// A sequence whose elements hold one byte string each.
    pub trait HasBytes: Sized {
        type Wire<'a>: Serialize
        where
            Self: 'a;
        type Owned: for<'de> Deserialize<'de>;
        fn wire(&self) -> Self::Wire<'_>;
        fn from_owned(o: Self::Owned) -> Self;
    }

    impl HasBytes for Vec<u8> {
        type Wire<'a> = &'a Bytes;
        type Owned = ByteBuf;
        fn wire(&self) -> &Bytes {
            Bytes::new(self)
        }
        fn from_owned(o: ByteBuf) -> Self {
            o.into_vec()
        }
    }

    impl<V: Serialize + for<'de> Deserialize<'de>> HasBytes for (Vec<u8>, V) {
        type Wire<'a>
            = (&'a Bytes, &'a V)
        where
            V: 'a;
        type Owned = (ByteBuf, V);
        fn wire(&self) -> (&Bytes, &V) {
            (Bytes::new(&self.0), &self.1)
        }
        fn from_owned(o: (ByteBuf, V)) -> Self {
            (o.0.into_vec(), o.1)
        }
    }

    pub fn serialize<T: HasBytes, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(HasBytes::wire))
    }

    pub fn deserialize<'de, T: HasBytes, D: Deserializer<'de>>(d: D) -> Result<Vec<T>, D::Error> {
        let owned = Vec::<T::Owned>::deserialize(d)?;
        Ok(owned.into_iter().map(T::from_owned).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The node as it was serialized before byte strings took serde's bytes path.
    #[derive(Serialize)]
    enum PlainValue {
        Inline(Vec<u8>),
        External { chunks: Vec<BlobId>, len: u64 },
    }
    #[derive(Serialize)]
    enum PlainNode {
        Leaf {
            entries: Vec<(Vec<u8>, PlainValue)>,
        },
        Internal {
            keys: Vec<Vec<u8>>,
            children: Vec<NodeId>,
        },
    }

    #[test]
    fn byte_strings_keep_the_stored_format() {
        let leaf = Node::Leaf {
            entries: vec![
                (b"a".to_vec(), Value::Inline(vec![1, 2, 3])),
                (
                    vec![0xff; 300],
                    Value::External {
                        chunks: vec![BlobId(9)],
                        len: 5,
                    },
                ),
            ],
        };
        let plain = PlainNode::Leaf {
            entries: vec![
                (b"a".to_vec(), PlainValue::Inline(vec![1, 2, 3])),
                (
                    vec![0xff; 300],
                    PlainValue::External {
                        chunks: vec![BlobId(9)],
                        len: 5,
                    },
                ),
            ],
        };
        let bytes = leaf.encode_payload();
        assert_eq!(bytes, postcard::to_stdvec(&plain).expect("encode"));
        assert_eq!(Node::decode_payload("p", &bytes).expect("decode"), leaf);
        let internal = Node::Internal {
            keys: vec![b"m".to_vec()],
            children: vec![NodeId(1), NodeId(2)],
        };
        let plain = PlainNode::Internal {
            keys: vec![b"m".to_vec()],
            children: vec![NodeId(1), NodeId(2)],
        };
        let bytes = internal.encode_payload();
        assert_eq!(bytes, postcard::to_stdvec(&plain).expect("encode"));
        assert_eq!(Node::decode_payload("p", &bytes).expect("decode"), internal);
    }
}
