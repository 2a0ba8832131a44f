//! What the commit log holds: commit records (the changes of one commit,
//! by node and by key) and checkpoints (the whole registry at one seq),
//! with the decoders of every record format a volume may still hold.

use super::ahead::TreeReads;
use crate::codec::{self, Kind};
use crate::error::{Error, Result};
use crate::ids::{BlobId, NodeId, TxId};
use serde::{Deserialize, Serialize};

/// Where a logical node currently lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLoc {
    /// Physical blob id of this version of the node.
    pub blob: BlobId,
    /// Sequence number of the commit that wrote it.
    pub version: u64,
    /// The bytes travel inside commit record `version` rather than in
    /// `blobs/<blob>`. Once GC trims that record it has written them out to
    /// `blobs/<blob>` first, so a reader that finds the record gone reads there.
    pub packed: bool,
}

/// Node locations by logical id: a persistent map, so a snapshot is an O(1) clone.
pub type NodeMap =
    imbl::GenericHashMap<NodeId, NodeLoc, crate::ids::IdHash, imbl::shared_ptr::DefaultSharedPtr>;

/// The registry as of one commit: an immutable snapshot, cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct RegState {
    /// Last commit folded in.
    pub seq: u64,
    /// Every live node.
    pub nodes: NodeMap,
}

impl RegState {
    /// Folds in `rec`, the record right after `self.seq`.
    pub fn apply(&mut self, rec: &CommitRecord) {
        let changes = if rec.void { &[][..] } else { &rec.nodes[..] };
        for c in changes {
            match c.new {
                Some(blob) => {
                    self.nodes.insert(
                        c.node,
                        NodeLoc {
                            blob,
                            version: rec.seq,
                            packed: c.packed,
                        },
                    );
                }
                None => {
                    self.nodes.remove(&c.node);
                }
            }
        }
        self.seq = rec.seq;
    }
}

/// One node changed by a commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeChange {
    /// Logical id.
    pub node: NodeId,
    /// Blob it pointed at before (kept for readers of older snapshots until GC).
    pub old: Option<BlobId>,
    /// Blob it points at now; `None` when the node was freed.
    pub new: Option<BlobId>,
    /// `new` is carried in this record's `packed` list, not written as a blob.
    pub packed: bool,
}

/// A node version carried inside the commit record that created it: a small
/// commit is then one object write (the record) instead of one per node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedNode {
    /// The blob id this node version is known by (as in `NodeChange::new`).
    pub blob: BlobId,
    /// The node, serialized without a frame (the record's frame checks it).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// A small value carried inside the commit record that wrote it (embedded
/// mode): no blob file per small file. GC writes it out to `blobs/<id>`
/// (value format 2) before it trims the record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedValue {
    /// The value chunk's blob id (as its leaf entry names it).
    pub blob: BlobId,
    /// The bytes, unframed (the record's frame checks them).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// Keys one commit wrote in one tree, sorted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeWrites {
    /// Tree name ("" is the catalog).
    pub tree: String,
    /// Keys written (inserted, updated or removed).
    pub keys: Vec<Vec<u8>>,
}

/// The value one commit left at one key, as the leaf holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyOp {
    /// Tree name.
    pub tree: String,
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The value as encoded in a leaf (postcard of `tree::Value`, with a
    /// packed chunk naming this record's seq); `None` when it removed the key.
    pub value: Option<serde_bytes::ByteBuf>,
}

/// One entry of the commit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    /// Position in the log.
    pub seq: u64,
    /// Transaction that committed.
    pub txid: TxId,
    /// Wall-clock time of the commit, ms since the epoch.
    pub time_ms: u64,
    /// Key-level changes, for validation and merging by others.
    pub writes: Vec<TreeWrites>,
    /// Trees created or dropped wholesale: anyone who touched them conflicts.
    pub replaced_trees: Vec<String>,
    /// Node-level changes, applied to the registry.
    pub nodes: Vec<NodeChange>,
    /// The newest record this one was built and validated on: `seq - 1`,
    /// or earlier for a record placed ahead (format 4), which commits only
    /// if the records between did not touch what it did (`ahead.rs`).
    pub base: u64,
    /// Keys it read, for that decision (placed-ahead records only).
    pub reads: Vec<TreeReads>,
    /// What it left at each key it wrote (format 5, placed-ahead records
    /// only; empty when it ensured a tree): a reader that finds the nodes
    /// it changed changed by a record between replays these onto them
    /// instead of voiding it (`Melder`). From format 6 they may hold keys
    /// of the catalog (tree `""`): a tree it created (its catalog entry)
    /// or dropped (no value).
    pub ops: Vec<KeyOp>,
    /// Bodies of the new node versions marked `packed`. Empty in the copies
    /// the registry keeps in memory (only readers of nodes need them).
    pub packed: Vec<PackedNode>,
    /// Small values of this commit (format 3; empty in memory too).
    pub values: Vec<PackedValue>,
    /// Decided void when folded (placed ahead and overtaken): its changes
    /// did not land. Never stored; set by the registry.
    #[serde(skip)]
    pub void: bool,
    /// Decided melded when folded: `nodes` are the changes its key ops
    /// made replayed onto the state before it, not the ones it was
    /// written with. Never stored; set by the registry.
    #[serde(skip)]
    pub melded: bool,
}

impl CommitRecord {
    /// A record at `seq` built on `base` that changes nothing (a hole's
    /// filler, and the start of records built field by field).
    pub fn empty(seq: u64, base: u64) -> CommitRecord {
        CommitRecord {
            seq,
            txid: TxId::fresh(),
            time_ms: 0,
            writes: Vec::new(),
            replaced_trees: Vec::new(),
            nodes: Vec::new(),
            base,
            reads: Vec::new(),
            ops: Vec::new(),
            packed: Vec::new(),
            values: Vec::new(),
            void: false,
            melded: false,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct Checkpoint {
    pub(super) seq: u64,
    pub(super) time_ms: u64,
    pub(super) nodes: Vec<(NodeId, NodeLoc)>,
}

/// Format 1 of records and checkpoints (before nodes were packed), still read.
mod v1 {
    use super::*;

    #[derive(Deserialize)]
    pub struct NodeLoc {
        pub blob: BlobId,
        pub version: u64,
    }

    #[derive(Deserialize)]
    pub struct NodeChange {
        pub node: NodeId,
        pub old: Option<BlobId>,
        pub new: Option<BlobId>,
    }

    #[derive(Deserialize)]
    pub struct CommitRecord {
        pub seq: u64,
        pub txid: TxId,
        pub time_ms: u64,
        pub writes: Vec<TreeWrites>,
        pub replaced_trees: Vec<String>,
        pub nodes: Vec<NodeChange>,
    }

    #[derive(Deserialize)]
    pub struct Checkpoint {
        pub seq: u64,
        pub time_ms: u64,
        pub nodes: Vec<(NodeId, NodeLoc)>,
    }
}

/// Format 2 of records (nodes packed, values not yet), still read.
mod v2 {
    use super::*;

    #[derive(Deserialize)]
    pub struct CommitRecord {
        pub seq: u64,
        pub txid: TxId,
        pub time_ms: u64,
        pub writes: Vec<TreeWrites>,
        pub replaced_trees: Vec<String>,
        pub nodes: Vec<NodeChange>,
        pub packed: Vec<PackedNode>,
    }
}

/// Format 3 of records (small values packed; no base or reads), still read.
mod v3 {
    use super::*;

    #[derive(Deserialize)]
    pub struct CommitRecord {
        pub seq: u64,
        pub txid: TxId,
        pub time_ms: u64,
        pub writes: Vec<TreeWrites>,
        pub replaced_trees: Vec<String>,
        pub nodes: Vec<NodeChange>,
        pub packed: Vec<PackedNode>,
        pub values: Vec<PackedValue>,
    }
}

/// Format 4 of records (placed ahead, no key ops), still read.
mod v4 {
    use super::*;

    #[derive(Deserialize)]
    pub struct CommitRecord {
        pub seq: u64,
        pub txid: TxId,
        pub time_ms: u64,
        pub writes: Vec<TreeWrites>,
        pub replaced_trees: Vec<String>,
        pub nodes: Vec<NodeChange>,
        pub base: u64,
        pub reads: Vec<TreeReads>,
        pub packed: Vec<PackedNode>,
        pub values: Vec<PackedValue>,
    }
}

/// The leading fields of a record of format 2 or later (what the registry
/// and validation need), without the node and value bodies that follow.
#[derive(Deserialize)]
struct RecordHead {
    seq: u64,
    txid: TxId,
    time_ms: u64,
    writes: Vec<TreeWrites>,
    replaced_trees: Vec<String>,
    nodes: Vec<NodeChange>,
}

/// `RecordHead`'s fields of format 4 that follow it.
#[derive(Deserialize)]
struct RecordHeadAhead {
    base: u64,
    reads: Vec<TreeReads>,
}

/// Decodes a commit record without its node and value bodies (left empty):
/// they are the bulk of a record, and a reader that will not read those
/// nodes (another process's directories) need not copy them.
pub(crate) fn decode_record_head(path: &str, data: &[u8]) -> Result<CommitRecord> {
    let (version, payload) = codec::unframe_versioned(Kind::Record, path, data)?;
    if version < 2 {
        return decode_record(path, data);
    }
    let corrupted = |e: postcard::Error| Error::Corrupted {
        what: "commit record",
        path: path.to_string(),
        detail: format!("does not decode: {e}"),
    };
    let (head, rest) = postcard::take_from_bytes::<RecordHead>(payload).map_err(corrupted)?;
    let (base, reads, ops) = if version >= 4 {
        let (ahead, rest) =
            postcard::take_from_bytes::<RecordHeadAhead>(rest).map_err(corrupted)?;
        let ops = if version >= 5 {
            postcard::take_from_bytes::<Vec<KeyOp>>(rest)
                .map_err(corrupted)?
                .0
        } else {
            Vec::new()
        };
        (ahead.base, ahead.reads, ops)
    } else {
        (head.seq.saturating_sub(1), Vec::new(), Vec::new())
    };
    Ok(CommitRecord {
        seq: head.seq,
        txid: head.txid,
        time_ms: head.time_ms,
        writes: head.writes,
        replaced_trees: head.replaced_trees,
        nodes: head.nodes,
        base,
        reads,
        ops,
        packed: Vec::new(),
        values: Vec::new(),
        void: false,
        melded: false,
    })
}

/// The record `frame` (format 5 or later) without its node and value
/// bodies: what a host folding it needs, as a record frame of its own
/// version (its bodies empty lists). `None` when it carries no bodies (the
/// frame is its own head) or is of an older format.
pub(crate) fn head_frame(frame: &[u8]) -> Option<Vec<u8>> {
    let (version, payload) = codec::unframe_versioned(Kind::Record, "", frame).ok()?;
    if version < 5 {
        return None;
    }
    let (_, rest) = postcard::take_from_bytes::<RecordHead>(payload).ok()?;
    let (_, rest) = postcard::take_from_bytes::<RecordHeadAhead>(rest).ok()?;
    let (_, rest) = postcard::take_from_bytes::<Vec<KeyOp>>(rest).ok()?;
    // Two empty lists: no packed nodes, no values.
    if rest == [0, 0] {
        return None;
    }
    let mut head = payload[..payload.len() - rest.len()].to_vec();
    head.extend_from_slice(&[0, 0]);
    Some(codec::frame_version(Kind::Record, version, &head))
}

/// Decodes a commit record of any format this build reads.
pub(crate) fn decode_record(path: &str, data: &[u8]) -> Result<CommitRecord> {
    let (version, payload) = codec::unframe_versioned(Kind::Record, path, data)?;
    // Format 6 is 5's layout; only what its key ops may hold grew.
    if version >= 5 {
        return codec::decode_payload(Kind::Record, path, payload);
    }
    if version == 4 {
        let old: v4::CommitRecord = codec::decode_payload(Kind::Record, path, payload)?;
        return Ok(CommitRecord {
            seq: old.seq,
            txid: old.txid,
            time_ms: old.time_ms,
            writes: old.writes,
            replaced_trees: old.replaced_trees,
            nodes: old.nodes,
            base: old.base,
            reads: old.reads,
            ops: Vec::new(),
            packed: old.packed,
            values: old.values,
            void: false,
            melded: false,
        });
    }
    if version == 3 {
        let old: v3::CommitRecord = codec::decode_payload(Kind::Record, path, payload)?;
        return Ok(CommitRecord {
            base: old.seq.saturating_sub(1),
            seq: old.seq,
            txid: old.txid,
            time_ms: old.time_ms,
            writes: old.writes,
            replaced_trees: old.replaced_trees,
            nodes: old.nodes,
            reads: Vec::new(),
            ops: Vec::new(),
            packed: old.packed,
            values: old.values,
            void: false,
            melded: false,
        });
    }
    if version == 2 {
        let old: v2::CommitRecord = codec::decode_payload(Kind::Record, path, payload)?;
        return Ok(CommitRecord {
            seq: old.seq,
            txid: old.txid,
            time_ms: old.time_ms,
            writes: old.writes,
            replaced_trees: old.replaced_trees,
            nodes: old.nodes,
            base: old.seq.saturating_sub(1),
            reads: Vec::new(),
            ops: Vec::new(),
            packed: old.packed,
            values: Vec::new(),
            void: false,
            melded: false,
        });
    }
    let old: v1::CommitRecord = codec::decode_payload(Kind::Record, path, payload)?;
    Ok(CommitRecord {
        seq: old.seq,
        txid: old.txid,
        time_ms: old.time_ms,
        writes: old.writes,
        replaced_trees: old.replaced_trees,
        nodes: old
            .nodes
            .into_iter()
            .map(|c| NodeChange {
                node: c.node,
                old: c.old,
                new: c.new,
                packed: false,
            })
            .collect(),
        base: old.seq.saturating_sub(1),
        reads: Vec::new(),
        ops: Vec::new(),
        packed: Vec::new(),
        values: Vec::new(),
        void: false,
        melded: false,
    })
}

pub(super) fn decode_checkpoint(path: &str, data: &[u8]) -> Result<Checkpoint> {
    let (version, payload) = codec::unframe_versioned(Kind::Checkpoint, path, data)?;
    if version == Kind::Checkpoint.version() {
        return codec::decode_payload(Kind::Checkpoint, path, payload);
    }
    let old: v1::Checkpoint = codec::decode_payload(Kind::Checkpoint, path, payload)?;
    Ok(Checkpoint {
        seq: old.seq,
        time_ms: old.time_ms,
        nodes: old
            .nodes
            .into_iter()
            .map(|(id, l)| {
                let loc = NodeLoc {
                    blob: l.blob,
                    version: l.version,
                    packed: false,
                };
                (id, loc)
            })
            .collect(),
    })
}

/// Milliseconds since the Unix epoch (a record's `time_ms`).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_head_is_the_record_without_its_bodies() {
        let rec = CommitRecord {
            seq: 9,
            base: 7,
            reads: vec![TreeReads {
                tree: "d1".into(),
                points: vec![b"other".to_vec()],
                ranges: Vec::new(),
            }],
            ops: vec![KeyOp {
                tree: "d1".into(),
                key: b"name".to_vec(),
                value: Some(serde_bytes::ByteBuf::from(vec![0, 1, 7])),
            }],
            void: false,
            melded: false,
            txid: TxId(5),
            time_ms: 77,
            writes: vec![TreeWrites {
                tree: "d1".into(),
                keys: vec![b"name".to_vec()],
            }],
            replaced_trees: vec!["gone".into()],
            nodes: vec![NodeChange {
                node: NodeId(3),
                old: Some(BlobId(1)),
                new: Some(BlobId(2)),
                packed: true,
            }],
            packed: vec![PackedNode {
                blob: BlobId(2),
                body: vec![9; 300],
            }],
            values: vec![PackedValue {
                blob: BlobId(8),
                body: vec![4; 4096],
            }],
        };
        let data = codec::encode(Kind::Record, &rec);
        let head = decode_record_head("log/9", &data).expect("head");
        assert_eq!(
            head,
            CommitRecord {
                packed: Vec::new(),
                values: Vec::new(),
                ..rec.clone()
            }
        );
        assert_eq!(decode_record("log/9", &data).expect("whole"), rec);
        // The frame still guards the bodies: damage there is refused too.
        let mut bad = data.to_vec();
        let at = bad.len() - 100;
        bad[at] ^= 1;
        assert!(decode_record_head("log/9", &bad).is_err());
        // The head alone, as copied for hosts folding the log: the whole
        // record with no bodies, a fraction of its bytes.
        let alone = head_frame(&data).expect("a record with bodies has a head of its own");
        assert!(
            alone.len() < data.len() / 4,
            "{} of {}",
            alone.len(),
            data.len()
        );
        assert_eq!(decode_record("log/9", &alone).expect("head frame"), head);
        assert_eq!(
            decode_record_head("log/9", &alone).expect("head frame"),
            head
        );
        let bare = codec::encode(Kind::Record, &head);
        assert_eq!(head_frame(&bare), None, "no bodies: the frame is its head");
        assert_eq!(head_frame(&bad), None);
        // Format 5 has 6's layout (6 only lets key ops name the catalog):
        // read the same, and its head copied as format 5.
        let payload = codec::unframe(Kind::Record, "log/9", &data).expect("payload");
        let v5 = codec::frame_version(Kind::Record, 5, payload);
        assert_eq!(decode_record("log/9", &v5).expect("format 5"), rec);
        assert_eq!(decode_record_head("log/9", &v5).expect("format 5"), head);
        let alone = head_frame(&v5).expect("head of a format-5 record");
        assert_eq!(
            codec::unframe_versioned(Kind::Record, "", &alone)
                .expect("frame")
                .0,
            5
        );
    }

    #[test]
    fn records_of_format_2_are_still_read() {
        let node = PackedNode {
            blob: BlobId(4),
            body: vec![1, 2, 3],
        };
        let change = NodeChange {
            node: NodeId(2),
            old: None,
            new: Some(BlobId(4)),
            packed: true,
        };
        let payload = postcard::to_stdvec(&(
            6u64,
            TxId(1),
            12u64,
            Vec::<TreeWrites>::new(),
            Vec::<String>::new(),
            vec![change.clone()],
            vec![node.clone()],
        ))
        .expect("encode");
        let data = codec::frame_version(Kind::Record, 2, &payload);
        let rec = decode_record("log/6", &data).expect("v2 record");
        assert_eq!(
            (rec.seq, rec.nodes, rec.packed),
            (6, vec![change], vec![node])
        );
        assert!(rec.values.is_empty());
    }

    #[test]
    fn records_and_checkpoints_of_format_1_are_still_read() {
        let (blob, node, txid) = (BlobId(7), NodeId(9), TxId(3));
        let writes = vec![TreeWrites {
            tree: "t".into(),
            keys: vec![b"k".to_vec()],
        }];
        // Format 1 had no `packed` fields; postcard encodes a struct as its fields in order.
        let v1_changes = vec![(node, None::<BlobId>, Some(blob))];
        let payload =
            postcard::to_stdvec(&(5u64, txid, 11u64, &writes, Vec::<String>::new(), v1_changes))
                .expect("encode");
        let data = codec::frame_version(Kind::Record, 1, &payload);
        let rec = decode_record("log/5", &data).expect("v1 record");
        assert_eq!((rec.seq, rec.txid, rec.time_ms), (5, txid, 11));
        assert_eq!(rec.writes, writes);
        assert_eq!(
            rec.nodes,
            vec![NodeChange {
                node,
                old: None,
                new: Some(blob),
                packed: false
            }]
        );
        assert!(rec.packed.is_empty());

        let payload =
            postcard::to_stdvec(&(5u64, 11u64, vec![(node, (blob, 5u64))])).expect("encode");
        let data = codec::frame_version(Kind::Checkpoint, 1, &payload);
        let cp = decode_checkpoint("checkpoints/5", &data).expect("v1 checkpoint");
        assert_eq!(cp.seq, 5);
        assert_eq!(
            cp.nodes,
            vec![(
                node,
                NodeLoc {
                    blob,
                    version: 5,
                    packed: false
                }
            )]
        );
        // A version from the future is refused, not misread.
        let data = codec::frame_version(Kind::Record, 3, &payload);
        assert!(matches!(
            decode_record("log/5", &data),
            Err(Error::Corrupted { .. })
        ));
    }
}
