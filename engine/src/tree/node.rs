//! B-tree nodes as stored: leaves hold entries, internal nodes hold separators
//! and the logical ids of their children.

use super::leaf::{get_varint, put_varint, Leaf};
use super::value::heap_block;
use crate::codec::{self, Kind};
use crate::error::{Error, Result};
use crate::ids::NodeId;

/// One B-tree node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// Sorted entries, in their stored encoding (see `leaf.rs`).
    Leaf(Leaf),
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
        Node::Leaf(Leaf::new())
    }

    /// Entries of a leaf, or children of an internal node.
    pub fn width(&self) -> usize {
        match self {
            Node::Leaf(leaf) => leaf.len(),
            Node::Internal { children, .. } => children.len(),
        }
    }

    /// Approximate bytes held in memory, for the cache budget: measured
    /// RSS, not payload (counting payload alone let a 128 MiB cache hold
    /// 230 MiB).
    pub fn footprint(&self) -> usize {
        64 + match self {
            Node::Leaf(leaf) => leaf.heap_bytes(),
            Node::Internal { keys, children } => {
                heap_block(keys.capacity() * 24)
                    + keys.iter().map(|k| heap_block(k.len())).sum::<usize>()
                    + heap_block(children.capacity() * 8)
            }
        }
    }

    /// Serializes into a framed blob.
    pub fn encode(&self) -> Vec<u8> {
        codec::frame(Kind::Node, &self.encode_payload())
    }

    /// The node's serialized form without a frame: how a commit record
    /// carries it. The same bytes postcard writes for the node (format 1).
    pub fn encode_payload(&self) -> Vec<u8> {
        match self {
            Node::Leaf(leaf) => leaf.payload().to_vec(),
            Node::Internal { keys, children } => {
                let size = keys.iter().map(|k| k.len() + 3).sum::<usize>() + children.len() * 9;
                let mut out = Vec::with_capacity(size + 8);
                out.push(1);
                put_varint(&mut out, keys.len() as u128);
                for k in keys {
                    put_varint(&mut out, k.len() as u128);
                    out.extend_from_slice(k);
                }
                put_varint(&mut out, children.len() as u128);
                for c in children {
                    put_varint(&mut out, c.0 as u128);
                }
                out
            }
        }
    }

    /// Decodes a node carried inside commit record `seq` (already checked
    /// as part of it): its values packed in "this record" name `seq`.
    pub fn decode_in_record(path: &str, payload: &[u8], seq: u64) -> Result<Self> {
        Self::decode_with_home(path, payload, Some(seq))
    }

    /// Decodes a node carried inside another object (already checked as
    /// part of it) that is not a commit record.
    pub fn decode_payload(path: &str, payload: &[u8]) -> Result<Self> {
        Self::decode_with_home(path, payload, None)
    }

    fn decode_with_home(path: &str, payload: &[u8], home: Option<u64>) -> Result<Self> {
        let bad = || Error::Corrupted {
            what: "node",
            path: path.to_string(),
            detail: "does not decode".into(),
        };
        let mut pos = 0;
        match get_varint(payload, &mut pos, 32) {
            Some(0) => Leaf::parse_in(payload, home)
                .map(Node::Leaf)
                .ok_or_else(bad),
            Some(1) => Self::decode_internal(payload, pos).ok_or_else(bad),
            _ => Err(bad()),
        }
    }

    fn decode_internal(payload: &[u8], mut pos: usize) -> Option<Self> {
        let len = |pos: &mut usize| {
            get_varint(payload, pos, 64)
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n <= payload.len())
        };
        let nkeys = len(&mut pos)?;
        let mut keys = Vec::with_capacity(nkeys);
        for _ in 0..nkeys {
            let n = len(&mut pos)?;
            let end = pos.checked_add(n).filter(|&e| e <= payload.len())?;
            keys.push(payload[pos..end].to_vec());
            pos = end;
        }
        let nchildren = len(&mut pos)?;
        let mut children = Vec::with_capacity(nchildren);
        for _ in 0..nchildren {
            children.push(NodeId(get_varint(payload, &mut pos, 64)? as u64));
        }
        (pos == payload.len()).then_some(Node::Internal { keys, children })
    }

    /// Checks and decodes a framed node blob.
    pub fn decode(path: &str, data: &[u8]) -> Result<Self> {
        Self::decode_payload(path, codec::unframe(Kind::Node, path, data)?)
    }

    /// Payload bytes `encode_payload` would produce (without producing them
    /// for a leaf).
    pub fn encoded_len(&self) -> usize {
        match self {
            Node::Leaf(leaf) => leaf.payload().len(),
            Node::Internal { .. } => self.encode_payload().len(),
        }
    }

    /// This node with its values packed "here" naming record `seq`: what a
    /// reader decoding it from that record gets.
    pub fn resolved(self: &std::sync::Arc<Self>, seq: u64) -> std::sync::Arc<Self> {
        match &**self {
            Node::Leaf(leaf) if leaf.has_here() => {
                std::sync::Arc::new(Node::Leaf(leaf.resolve_here(seq)))
            }
            _ => self.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::value::Value;
    use super::*;
    use crate::ids::BlobId;
    use proptest::prelude::*;
    use serde::Serialize;

    /// The node as postcard serializes it: the stored format of every
    /// volume so far.
    #[derive(Serialize)]
    enum PlainValue {
        Inline(Vec<u8>),
        External {
            chunks: Vec<BlobId>,
            len: u64,
        },
        Blocks {
            chunks: Vec<BlobId>,
            len: u64,
        },
        Packed {
            chunks: Vec<BlobId>,
            len: u64,
            seq: u64,
        },
        // Tag 4 lives only inside commit records.
        #[allow(dead_code)]
        Here {
            chunks: Vec<BlobId>,
            len: u64,
        },
        Slice {
            blob: BlobId,
            total: u64,
            at: u64,
            len: u64,
        },
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
    fn nodes_keep_the_stored_format() {
        let values = [
            Value::Inline(vec![1, 2, 3]),
            Value::External {
                chunks: vec![BlobId(9), BlobId(u128::MAX)],
                len: 5,
                blocks: false,
                packed: None,
            },
            Value::External {
                chunks: vec![BlobId(7)],
                len: 6,
                blocks: true,
                packed: None,
            },
            Value::External {
                chunks: vec![BlobId(8)],
                len: 7,
                blocks: true,
                packed: Some(super::super::value::Packed::In(300)),
            },
            Value::Slice {
                blob: BlobId(6),
                total: 4 << 20,
                at: 1 << 20,
                len: 256 << 10,
            },
        ];
        let keys = [
            b"a".to_vec(),
            vec![0xff; 300],
            vec![0xff; 301],
            vec![0xff; 302],
            vec![0xff; 303],
        ];
        let leaf = Node::Leaf(Leaf::from_entries(
            keys.iter().map(|k| k.as_slice()).zip(values.iter()),
        ));
        let plain = PlainNode::Leaf {
            entries: vec![
                (keys[0].clone(), PlainValue::Inline(vec![1, 2, 3])),
                (
                    keys[1].clone(),
                    PlainValue::External {
                        chunks: vec![BlobId(9), BlobId(u128::MAX)],
                        len: 5,
                    },
                ),
                (
                    keys[2].clone(),
                    PlainValue::Blocks {
                        chunks: vec![BlobId(7)],
                        len: 6,
                    },
                ),
                (
                    keys[3].clone(),
                    PlainValue::Packed {
                        chunks: vec![BlobId(8)],
                        len: 7,
                        seq: 300,
                    },
                ),
                (
                    keys[4].clone(),
                    PlainValue::Slice {
                        blob: BlobId(6),
                        total: 4 << 20,
                        at: 1 << 20,
                        len: 256 << 10,
                    },
                ),
            ],
        };
        let bytes = leaf.encode_payload();
        assert_eq!(bytes, postcard::to_stdvec(&plain).expect("encode"));
        assert_eq!(Node::decode_payload("p", &bytes).expect("decode"), leaf);
        assert_eq!(
            Node::decode("p", &leaf.encode()).expect("framed"),
            leaf,
            "framed round trip"
        );
    }

    proptest! {
        #[test]
        fn internal_nodes_keep_the_stored_format(
            keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..40),
            children in proptest::collection::vec(any::<u64>(), 0..41),
        ) {
            let children: Vec<NodeId> = children.into_iter().map(NodeId).collect();
            let node = Node::Internal { keys: keys.clone(), children: children.clone() };
            let bytes = node.encode_payload();
            let plain = PlainNode::Internal { keys, children };
            prop_assert_eq!(&bytes, &postcard::to_stdvec(&plain).expect("encode"));
            prop_assert_eq!(Node::decode_payload("p", &bytes).expect("decode"), node);
            for cut in 0..bytes.len() {
                prop_assert!(Node::decode_payload("p", &bytes[..cut]).is_err());
            }
        }
    }
}
