//! Framing of every object the engine writes: magic, kind, length, payload, CRC-32.
//!
//! ```text
//! offset  size  field
//! 0       4     magic  b"SOPF"
//! 4       1     kind   (Kind as u8)
//! 5       1     format version of the kind's payload (records and
//!               checkpoints 2, others 1; older versions are still read)
//! 6       4     payload length, u32 little-endian
//! 10      n     payload (postcard, or raw bytes for values)
//! 10+n    4     CRC-32 (IEEE) of bytes 0..10+n, u32 little-endian
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
}

impl Kind {
    /// The payload version written for this kind. Records and checkpoints
    /// are at 2 (nodes packed into records); every kind still reads 1.
    pub fn version(self) -> u8 {
        match self {
            Kind::Record | Kind::Checkpoint => 2,
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

/// Frames a payload as an older format version would have (tests of reading old volumes).
#[cfg(test)]
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
}
