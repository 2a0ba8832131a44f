//! Framing of every object the engine writes: magic, kind, length, payload, CRC-32.
//!
//! ```text
//! offset  size  field
//! 0       4     magic  b"SOPF"
//! 4       1     kind   (Kind as u8: 1 node, 2 value, 3 record, 4 checkpoint,
//!                      5 intent, 6 volume, 7 segment index, 8 sealed:
//!                      any of the others compressed and/or encrypted,
//!                      see `store/seal.rs`)
//! 5       1     format version of the kind's payload (records 3,
//!               checkpoints and values 2, others 1; older versions are
//!               still read)
//! 6       4     payload length, u32 little-endian
//! 10      n     payload (postcard, or raw bytes for values)
//! 10+n    4     CRC-32 (IEEE) of bytes 0..10+n, u32 little-endian
//! ```
//!
//! Values are written in version 2, checked per block so that a range of a
//! chunk can be read and verified without the rest of it:
//!
//! ```text
//! 0       4     magic  b"SOPF"
//! 4       1     kind   2 (value)
//! 5       1     version 2
//! 6       4     n: data length, u32 little-endian
//! 10      4     CRC-32 of bytes 0..10
//! 14      ...   block i (i = 0..ceil(n / 4096)) at 14 + i * 4100: up to
//!               4,096 data bytes, then the CRC-32 of those bytes started
//!               from the value i (so a block read at the wrong place fails)
//! ```

use crate::error::{Error, Result};
use serde::{de::DeserializeOwned, Serialize};

const MAGIC: &[u8; 4] = b"SOPF";
const HEADER: usize = 10;
const TRAILER: usize = 4;

/// What a framed object holds; checked on decode so a misplaced blob is caught.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A B-tree node.
    Node = 1,
    /// A large value, or one chunk of it.
    Value = 2,
    /// A commit record in the log.
    Record = 3,
    /// A registry checkpoint.
    Checkpoint = 4,
    /// An intent record of an in-flight commit.
    Intent = 5,
    /// The volume marker.
    Volume = 6,
    /// Where the records of a sealed log segment sit.
    Index = 7,
    /// Another frame, compressed and/or encrypted (volumes formatted with
    /// compression or a key; `store/seal.rs`).
    Sealed = 8,
    /// A snapshot: a name pinned to one commit (`snapshots/<hex name>`).
    Snapshot = 9,
}

impl Kind {
    /// The payload version written for this kind: records 6 (a record
    /// placed ahead may carry key ops of the catalog: trees it created or
    /// dropped, melded like any key; 5 key ops, 4 a base and a read set,
    /// 3 packed small values), checkpoints 2 (nodes packed into records),
    /// values 2 (checked per block); every kind still reads its older
    /// versions.
    pub fn version(self) -> u8 {
        match self {
            Kind::Record => 6,
            Kind::Checkpoint | Kind::Value => 2,
            _ => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Value => "value",
            Kind::Record => "commit record",
            Kind::Checkpoint => "checkpoint",
            Kind::Intent => "intent record",
            Kind::Volume => "volume marker",
            Kind::Index => "segment index",
            Kind::Sealed => "sealed object",
            Kind::Snapshot => "snapshot",
        }
    }
}

/// Frames raw payload bytes.
pub fn frame(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len() + TRAILER);
    out.extend_from_slice(MAGIC);
    out.push(kind as u8);
    out.push(kind.version());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Frames a payload as format `version` of `kind` (a copy of a record's
/// head keeps its record's version; tests of reading old volumes).
pub(crate) fn frame_version(kind: Kind, version: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = frame(kind, payload);
    out[5] = version;
    let end = out.len() - TRAILER;
    let crc = crc32fast::hash(&out[..end]);
    out[end..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a frame of the current version and returns its payload.
pub fn unframe<'a>(kind: Kind, path: &str, data: &'a [u8]) -> Result<&'a [u8]> {
    let (version, payload) = unframe_versioned(kind, path, data)?;
    if version != kind.version() {
        return Err(Error::Corrupted {
            what: kind.name(),
            path: path.to_string(),
            detail: format!("format version {version} where {} expected", kind.version()),
        });
    }
    Ok(payload)
}

/// Checks a frame of any version this build reads; returns (version, payload).
pub fn unframe_versioned<'a>(kind: Kind, path: &str, data: &'a [u8]) -> Result<(u8, &'a [u8])> {
    let bad = |detail: String| Error::Corrupted {
        what: kind.name(),
        path: path.to_string(),
        detail,
    };
    if data.len() < HEADER + TRAILER {
        return Err(bad(format!("truncated: {} bytes", data.len())));
    }
    if &data[0..4] != MAGIC {
        return Err(bad("bad magic".into()));
    }
    if data[4] != kind as u8 {
        return Err(bad(format!(
            "kind {} where {} expected",
            data[4], kind as u8
        )));
    }
    let version = data[5];
    if version == 0 || version > kind.version() {
        return Err(bad(format!("unknown format version {}", data[5])));
    }
    let len = u32::from_le_bytes([data[6], data[7], data[8], data[9]]) as usize;
    if data.len() != HEADER + len + TRAILER {
        return Err(bad(format!(
            "length {} does not match header {}",
            data.len(),
            HEADER + len + TRAILER
        )));
    }
    let body_end = HEADER + len;
    let want = u32::from_le_bytes([
        data[body_end],
        data[body_end + 1],
        data[body_end + 2],
        data[body_end + 3],
    ]);
    if crc32fast::hash(&data[..body_end]) != want {
        return Err(bad("checksum mismatch".into()));
    }
    Ok((version, &data[HEADER..body_end]))
}

/// Data bytes per checked block of a version-2 value.
pub const VALUE_BLOCK: usize = 4096;
/// Header of a version-2 value: the common header and its own CRC.
const VALUE_HEADER: usize = HEADER + 4;
/// Stored bytes per block: its data and its CRC.
const VALUE_STRIDE: usize = VALUE_BLOCK + 4;

fn block_crc(index: usize, data: &[u8]) -> u32 {
    // Started from the block's index: a block served from the wrong place
    // (or the wrong chunk position) does not check out.
    let mut h = crc32fast::Hasher::new_with_initial(index as u32);
    h.update(data);
    h.finalize()
}

/// Bytes a version-2 value of `n` data bytes takes in the store.
pub fn value_frame_len(n: usize) -> usize {
    VALUE_HEADER + n + 4 * n.div_ceil(VALUE_BLOCK)
}

/// Frames value bytes in version 2 (see the module comment).
pub fn frame_value(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value_frame_len(data.len()));
    out.extend_from_slice(MAGIC);
    out.push(Kind::Value as u8);
    out.push(2);
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    for (i, block) in data.chunks(VALUE_BLOCK).enumerate() {
        out.extend_from_slice(block);
        out.extend_from_slice(&block_crc(i, block).to_le_bytes());
    }
    out
}

/// Checks a whole value blob of either version and returns its data.
pub fn unframe_value(path: &str, data: &[u8]) -> Result<Vec<u8>> {
    let bad = |detail: String| Error::Corrupted {
        what: "value",
        path: path.to_string(),
        detail,
    };
    if data.len() >= HEADER && data[..4] == MAGIC[..] && data[4] == Kind::Value as u8 {
        if data[5] == 1 {
            let (_, payload) = unframe_versioned(Kind::Value, path, data)?;
            return Ok(payload.to_vec());
        }
        if data[5] == 2 && data.len() >= VALUE_HEADER {
            let head_crc = u32::from_le_bytes([data[10], data[11], data[12], data[13]]);
            if crc32fast::hash(&data[..HEADER]) != head_crc {
                return Err(bad("header checksum mismatch".into()));
            }
            let n = u32::from_le_bytes([data[6], data[7], data[8], data[9]]) as usize;
            if data.len() != value_frame_len(n) {
                return Err(bad(format!(
                    "length {} does not match header {}",
                    data.len(),
                    value_frame_len(n)
                )));
            }
            return check_blocks(path, 0, &data[VALUE_HEADER..], n);
        }
    }
    // Not a version this build writes: the generic check names what is off.
    unframe_versioned(Kind::Value, path, data).map(|(_, p)| p.to_vec())
}

/// Where the blocks holding data bytes `range` of a version-2 value of `n`
/// data bytes sit in its blob: (byte range to read, index of its first block).
pub fn value_blocks_for(n: usize, range: std::ops::Range<usize>) -> (std::ops::Range<u64>, usize) {
    let first = range.start / VALUE_BLOCK;
    let end_block = range.end.min(n).div_ceil(VALUE_BLOCK).max(first);
    let start = VALUE_HEADER + first * VALUE_STRIDE;
    let end = (VALUE_HEADER + end_block * VALUE_STRIDE).min(value_frame_len(n));
    (start as u64..end.max(start) as u64, first)
}

/// Checks stored blocks starting with block `first` of a version-2 value of
/// `n` data bytes (as `value_blocks_for` located them) and returns their data.
pub fn check_blocks(path: &str, first: usize, stored: &[u8], n: usize) -> Result<Vec<u8>> {
    let bad = |detail: String| Error::Corrupted {
        what: "value",
        path: path.to_string(),
        detail,
    };
    let mut out = Vec::with_capacity(stored.len());
    let mut pos = 0;
    let mut index = first;
    while pos < stored.len() {
        let data_start = index * VALUE_BLOCK;
        if data_start >= n {
            return Err(bad(format!("bytes past the end of {n}")));
        }
        let len = VALUE_BLOCK.min(n - data_start);
        let Some(block) = stored.get(pos..pos + len + 4) else {
            return Err(bad(format!("block {index} truncated")));
        };
        let (body, crc) = block.split_at(len);
        if block_crc(index, body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(bad(format!("checksum mismatch in block {index}")));
        }
        out.extend_from_slice(body);
        pos += len + 4;
        index += 1;
    }
    Ok(out)
}

/// Serializes and frames a value.
pub fn encode<T: Serialize>(kind: Kind, value: &T) -> Vec<u8> {
    encode_sized(kind, value, 256)
}

/// Serializes and frames a value of about `hint` payload bytes, in place:
/// one allocation, no copy of the payload into a frame afterwards.
pub fn encode_sized<T: Serialize>(kind: Kind, value: &T, hint: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + hint + TRAILER);
    out.extend_from_slice(MAGIC);
    out.push(kind as u8);
    out.push(kind.version());
    out.extend_from_slice(&[0; 4]);
    // postcard only fails on writers that run out of room; a Vec never does.
    let Ok(mut out) = postcard::to_extend(value, out) else {
        return frame(kind, &[]);
    };
    let len = (out.len() - HEADER) as u32;
    out[6..10].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a frame of the current version and deserializes its payload.
pub fn decode<T: DeserializeOwned>(kind: Kind, path: &str, data: &[u8]) -> Result<T> {
    decode_payload(kind, path, unframe(kind, path, data)?)
}

/// Deserializes an unframed payload (one already checked as part of another).
pub fn decode_payload<T: DeserializeOwned>(kind: Kind, path: &str, payload: &[u8]) -> Result<T> {
    postcard::from_bytes(payload).map_err(|e| Error::Corrupted {
        what: kind.name(),
        path: path.to_string(),
        detail: format!("does not decode: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_damage_is_caught() {
        let data = encode(Kind::Record, &(7u64, "hello".to_string()));
        let back: (u64, String) = decode(Kind::Record, "p", &data).expect("decodes");
        assert_eq!(back, (7, "hello".to_string()));
        for cut in 0..data.len() {
            assert!(decode::<(u64, String)>(Kind::Record, "p", &data[..cut]).is_err());
        }
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x40;
            assert!(
                decode::<(u64, String)>(Kind::Record, "p", &bad).is_err(),
                "flip at {i}"
            );
        }
        assert!(decode::<(u64, String)>(Kind::Node, "p", &data).is_err());
    }

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    #[test]
    fn values_round_trip_and_every_damage_is_caught() {
        for n in [1, 4095, 4096, 4097, 9000] {
            let data = sample(n);
            let blob = frame_value(&data);
            assert_eq!(blob.len(), value_frame_len(n));
            assert_eq!(unframe_value("p", &blob).expect("whole"), data);
            for cut in 0..blob.len() {
                assert!(unframe_value("p", &blob[..cut]).is_err(), "cut at {cut}");
            }
            for i in 0..blob.len() {
                let mut bad = blob.clone();
                bad[i] ^= 0x08;
                assert!(unframe_value("p", &bad).is_err(), "n {n}, flip at {i}");
            }
        }
        // Version-1 values are still read.
        let old = frame_version(Kind::Value, 1, b"old bytes");
        assert_eq!(unframe_value("p", &old).expect("v1"), b"old bytes");
        assert!(unframe_value("p", &frame(Kind::Node, b"x")).is_err());
    }

    #[test]
    fn any_range_is_read_from_its_blocks_alone() {
        let n = 3 * VALUE_BLOCK + 100;
        let data = sample(n);
        let blob = frame_value(&data);
        for (a, b) in [
            (0, 1),
            (0, n),
            (4095, 4097),
            (5000, 9000),
            (n - 1, n),
            (12288, n),
        ] {
            let (at, first) = value_blocks_for(n, a..b);
            let stored = &blob[at.start as usize..at.end as usize];
            let got = check_blocks("p", first, stored, n).expect("range");
            let off = a - first * VALUE_BLOCK;
            assert_eq!(&got[off..off + (b - a)], &data[a..b], "{a}..{b}");
        }
        // Damage in block 1 fails reads of block 1 only.
        let mut bad = blob.clone();
        bad[VALUE_HEADER + VALUE_STRIDE + 10] ^= 1;
        let read = |a: usize, b: usize| {
            let (at, first) = value_blocks_for(n, a..b);
            check_blocks("p", first, &bad[at.start as usize..at.end as usize], n)
        };
        assert!(read(4096, 4100).is_err());
        assert!(read(0, 4096).is_ok());
        assert!(read(8192, 9000).is_ok());
        // A block served from another place fails its check.
        let (at, _) = value_blocks_for(n, 0..10);
        assert!(check_blocks("p", 1, &blob[at.start as usize..at.end as usize], n).is_err());
    }
}
