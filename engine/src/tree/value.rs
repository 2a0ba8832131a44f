//! A key's value as a leaf holds it: inline, or in blobs of its own.

use crate::ids::BlobId;
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
        /// The chunk blobs are in value format 2 (a CRC per block, see
        /// `codec::frame_value`): any range of them can be read and checked
        /// alone. Format 1 chunks are read whole.
        blocks: bool,
        /// The one chunk travels inside a commit record (small values)
        /// rather than in `blobs/<id>`; once GC trims that record it has
        /// written the chunk out there (format 2) first.
        packed: Option<Packed>,
    },
    /// A piece of a blob that holds several values one after another
    /// (value format 2): on S3, where every request costs a round trip, a
    /// big file's consecutive chunks go to the store as one object.
    Slice {
        /// The blob holding the piece.
        blob: BlobId,
        /// Data bytes in the whole blob (they fix its block layout).
        total: u64,
        /// Where the piece starts in the blob's data.
        at: u64,
        /// Length of the piece in bytes.
        len: u64,
    },
}

/// Which commit record carries a packed value's one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "u64", into = "u64")]
pub enum Packed {
    /// Record `seq`.
    In(u64),
    /// The record that carries the leaf naming it: its own commit's, whose
    /// seq is not known until the commit point (stored as leaf tag 4, and
    /// as `u64::MAX` where a seq is stored).
    Here,
}

impl Packed {
    /// The record's seq, once known.
    pub fn seq(self) -> Option<u64> {
        match self {
            Packed::In(seq) => Some(seq),
            Packed::Here => None,
        }
    }
}

impl From<u64> for Packed {
    fn from(v: u64) -> Packed {
        if v == u64::MAX {
            Packed::Here
        } else {
            Packed::In(v)
        }
    }
}

impl From<Packed> for u64 {
    fn from(p: Packed) -> u64 {
        p.seq().unwrap_or(u64::MAX)
    }
}

impl Value {
    /// This value with a chunk packed "here" naming record `seq`: what a
    /// reader of it outside that record's own leaves must see.
    pub fn in_record(self, seq: u64) -> Value {
        match self {
            Value::External {
                chunks,
                len,
                blocks,
                packed: Some(Packed::Here),
            } => Value::External {
                chunks,
                len,
                blocks,
                packed: Some(Packed::In(seq)),
            },
            v => v,
        }
    }

    /// Length of the value in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Value::Inline(v) => v.len() as u64,
            Value::External { len, .. } | Value::Slice { len, .. } => *len,
        }
    }

    /// True for a zero-length value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The blobs holding the value's bytes (none for an inline value).
    pub fn blobs(&self) -> &[BlobId] {
        match self {
            Value::Inline(_) => &[],
            Value::External { chunks, .. } => chunks,
            Value::Slice { blob, .. } => std::slice::from_ref(blob),
        }
    }
}

/// What a heap block of `n` bytes costs with glibc's header and rounding.
pub(crate) fn heap_block(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n + 8).div_ceil(16) * 16 + 8
    }
}
