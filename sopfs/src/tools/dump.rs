//! `sopfs dump` / `sopfs load`: a volume's namespace as one JSON document
//! and back. Every inode reachable from the root (attributes as `stat`
//! shows them, xattrs, symlink targets, and the file content's chunks,
//! holes left out) and every directory entry, hard links kept as one inode.
//! Byte strings (names, targets, xattrs) are JSON strings when they are
//! UTF-8 and do not start with `base64:`; otherwise `base64:` + Base64.
//!
//! A load writes into an empty volume in ONE transaction: it lands whole or
//! not at all. Inode numbers are kept, so a dump of the loaded volume
//! equals the original's.

use crate::error::{FsError, FsResult};
use crate::fs::Fs;
use crate::ns::dirs::{self, attr, Entries};
use crate::ns::schema::{
    check_name, chunk_index, chunk_key, dir_tree, ino_key, Entry, Inode, Kind, Time, CHUNK,
    CONTENT, DIR_TREE, INODES, ROOT_INO,
};
use base64::Engine as _;
use engine::{Cursor, Direction, Transaction, TxMode, TxOptions};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Version of the dump format.
pub const DUMP_FORMAT: u32 = 1;

/// Bytes shown as text where they are text.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(pub Vec<u8>);

const B64: &str = "base64:";

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(t) if !t.starts_with(B64) => s.serialize_str(t),
            _ => s.serialize_str(&format!(
                "{B64}{}",
                base64::engine::general_purpose::STANDARD.encode(&self.0)
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.strip_prefix(B64) {
            Some(b) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map(Bytes)
                .map_err(serde::de::Error::custom),
            None => Ok(Bytes(s.into_bytes())),
        }
    }
}

/// One inode in a dump.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DumpInode {
    /// Inode number.
    pub ino: u64,
    /// What it is.
    pub kind: Kind,
    /// Permission bits.
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Hard links.
    pub nlink: u32,
    /// Size in bytes.
    pub size: u64,
    /// Last access.
    pub atime: Time,
    /// Last content change.
    pub mtime: Time,
    /// Last change.
    pub ctime: Time,
    /// Creation.
    pub crtime: Time,
    /// Device number.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u32,
    /// Parent (directories).
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub parent: u64,
    /// Symlink target.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub target: Bytes,
    /// Extended attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<(Bytes, Bytes)>,
    /// Content chunks present (index, bytes); absent ones are holes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<(u64, Bytes)>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}
fn is_zero64(v: &u64) -> bool {
    *v == 0
}
fn is_empty(b: &Bytes) -> bool {
    b.0.is_empty()
}

/// One directory entry in a dump.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DumpEntry {
    /// The directory's inode.
    pub dir: u64,
    /// The name.
    pub name: Bytes,
    /// The inode it names.
    pub ino: u64,
}

/// A whole dump.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Dump {
    /// [`DUMP_FORMAT`].
    pub sopfs_dump: u32,
    /// The commit the dump was read at.
    pub seq: u64,
    /// False when made with `--no-data` (such a dump cannot be loaded).
    pub data: bool,
    /// Inodes, root first.
    pub inodes: Vec<DumpInode>,
    /// Entries, by directory then name.
    pub entries: Vec<DumpEntry>,
}

impl Fs {
    /// Reads the namespace (with file content unless `with_data` is false)
    /// from one snapshot; `progress` hears of every inode.
    pub fn dump(&self, with_data: bool, progress: &mut dyn FnMut(u64)) -> FsResult<Dump> {
        let mut tx = self.db().begin_with(TxOptions {
            mode: TxMode::ReadOnly,
            timeout: super::WALK_LIMIT,
            sync: false,
        })?;
        let mut out = Dump {
            sopfs_dump: DUMP_FORMAT,
            seq: self.db().seq(),
            data: with_data,
            inodes: Vec::new(),
            entries: Vec::new(),
        };
        let mut seen: HashMap<u64, ()> = HashMap::new();
        let mut stack = vec![ROOT_INO];
        seen.insert(ROOT_INO, ());
        out.inodes
            .push(self.dump_inode(&mut tx, ROOT_INO, with_data)?);
        progress(1);
        while let Some(d) = stack.pop() {
            let mut entries = Entries::of(d);
            while let Some(batch) = entries.next_batch(&mut tx, 1024)? {
                for (name, v) in batch {
                    let e = Entry::decode(&v)
                        .ok_or_else(|| FsError::Corrupted(format!("entry in {d:#x}")))?;
                    out.entries.push(DumpEntry {
                        dir: d,
                        name: Bytes(name),
                        ino: e.ino,
                    });
                    if seen.insert(e.ino, ()).is_none() {
                        out.inodes.push(self.dump_inode(&mut tx, e.ino, with_data)?);
                        progress(1);
                        if e.kind == Kind::Dir {
                            stack.push(e.ino);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn dump_inode(&self, tx: &mut Transaction, ino: u64, with_data: bool) -> FsResult<DumpInode> {
        // As stat shows it: directory stamps folded in.
        let i = attr(tx, self, ino)?.inode;
        let mut chunks = Vec::new();
        if with_data && i.kind == Kind::File {
            let mut cur = Cursor::new(
                chunk_key(ino, 0).to_vec()..chunk_key(ino, u64::MAX).to_vec(),
                Direction::Forward,
            );
            loop {
                for (k, v) in tx.scan(CONTENT, &mut cur, 64)? {
                    let idx =
                        chunk_index(&k).ok_or_else(|| FsError::Corrupted("chunk key".into()))?;
                    if idx * CHUNK < i.size {
                        chunks.push((idx, Bytes(v)));
                    }
                }
                if cur.is_done() {
                    break;
                }
            }
        }
        Ok(DumpInode {
            ino,
            kind: i.kind,
            perm: i.perm,
            uid: i.uid,
            gid: i.gid,
            nlink: i.nlink,
            size: i.size,
            atime: i.atime,
            mtime: i.mtime,
            ctime: i.ctime,
            crtime: i.crtime,
            rdev: i.rdev,
            parent: i.parent,
            target: Bytes(i.target),
            xattrs: i
                .xattrs
                .into_iter()
                .map(|(k, v)| (Bytes(k), Bytes(v)))
                .collect(),
            chunks,
        })
    }

    /// Writes `dump` into this volume, which must be empty, in one
    /// transaction; `progress` hears of every inode written. Returns the
    /// number of inodes and entries written.
    pub fn load_dump(&self, dump: &Dump, progress: &mut dyn FnMut(u64)) -> FsResult<(u64, u64)> {
        check_dump(dump)?;
        let mut tx = self.db().begin_with(TxOptions {
            mode: TxMode::ReadWrite,
            timeout: Duration::from_secs(3600),
            sync: true,
        })?;
        if tx.count(INODES)? > 1 || !dirs::is_empty(&mut tx, ROOT_INO)? {
            return Err(FsError::Invalid(
                "the volume is not empty: load into a new one",
            ));
        }
        for d in &dump.inodes {
            let inode = Inode {
                kind: d.kind,
                perm: d.perm,
                uid: d.uid,
                gid: d.gid,
                nlink: d.nlink,
                size: d.size,
                atime: d.atime,
                mtime: d.mtime,
                ctime: d.ctime,
                crtime: d.crtime,
                rdev: d.rdev,
                parent: d.parent,
                target: d.target.0.clone(),
                xattrs: d
                    .xattrs
                    .iter()
                    .map(|(k, v)| (k.0.clone(), v.0.clone()))
                    .collect::<BTreeMap<_, _>>(),
            };
            if d.kind == Kind::Dir && d.ino != ROOT_INO {
                tx.create_tree(&dir_tree(d.ino), DIR_TREE)?;
            }
            tx.upsert(INODES, &ino_key(d.ino), &inode.encode())?;
            for (idx, data) in &d.chunks {
                tx.upsert(CONTENT, &chunk_key(d.ino, *idx), &data.0)?;
            }
            progress(1);
        }
        let kinds: HashMap<u64, Kind> = dump.inodes.iter().map(|i| (i.ino, i.kind)).collect();
        for e in &dump.entries {
            let kind = kinds[&e.ino];
            tx.insert(
                &dir_tree(e.dir),
                &e.name.0,
                &Entry { ino: e.ino, kind }.encode(),
            )?;
        }
        tx.commit()?;
        Ok((dump.inodes.len() as u64, dump.entries.len() as u64))
    }
}

/// Checks a dump fully before anything is written.
pub fn check_dump(d: &Dump) -> FsResult<()> {
    let bad = |m: String| Err(FsError::InvalidDump(m));
    if d.sopfs_dump != DUMP_FORMAT {
        return bad(format!(
            "dump format {} (this sopfs reads {DUMP_FORMAT})",
            d.sopfs_dump
        ));
    }
    if !d.data {
        return bad("made with --no-data: it holds no file content to load".into());
    }
    let mut kinds = HashMap::new();
    for i in &d.inodes {
        if kinds.insert(i.ino, i.kind).is_some() {
            return bad(format!("inode {:#x} appears twice", i.ino));
        }
        if i.kind == Kind::File
            && i.chunks
                .iter()
                .any(|(idx, c)| c.0.len() as u64 > CHUNK || *idx >= i.size.div_ceil(CHUNK))
        {
            return bad(format!("inode {:#x}: a chunk lies outside the file", i.ino));
        }
    }
    if kinds.get(&ROOT_INO) != Some(&Kind::Dir) {
        return bad("no root directory (inode 1)".into());
    }
    let mut names = std::collections::HashSet::new();
    for e in &d.entries {
        if kinds.get(&e.dir) != Some(&Kind::Dir) {
            return bad(format!(
                "entry {:?} is in {:#x}, which is no directory",
                String::from_utf8_lossy(&e.name.0),
                e.dir
            ));
        }
        if !kinds.contains_key(&e.ino) {
            return bad(format!(
                "entry {:?} names inode {:#x}, which the dump lacks",
                String::from_utf8_lossy(&e.name.0),
                e.ino
            ));
        }
        if check_name(&e.name.0).is_err()
            || e.name.0.is_empty()
            || e.name.0 == b"."
            || e.name.0 == b".."
        {
            return bad(format!(
                "entry {:?}: not a valid name",
                String::from_utf8_lossy(&e.name.0)
            ));
        }
        if !names.insert((e.dir, &e.name.0)) {
            return bad(format!(
                "entry {:?} appears twice in {:#x}",
                String::from_utf8_lossy(&e.name.0),
                e.dir
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn byte_strings_round_trip_through_json(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let json = serde_json::to_string(&Bytes(b.clone())).expect("serialize");
            let back: Bytes = serde_json::from_str(&json).expect("deserialize");
            prop_assert_eq!(back.0, b);
        }
    }

    #[test]
    fn text_stays_readable_and_lookalikes_are_escaped() {
        let show = |b: &[u8]| serde_json::to_string(&Bytes(b.to_vec())).expect("json");
        assert_eq!(show(b"notes.txt"), "\"notes.txt\"");
        assert!(show(b"base64:x").starts_with("\"base64:"));
        assert_ne!(show(b"base64:x"), "\"base64:x\"");
        assert!(show(b"caf\xe9").starts_with("\"base64:"));
    }
}
