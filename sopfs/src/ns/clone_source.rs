//! The reading side of a clone: the source tree walked through the
//! read-only snapshot on a thread of its own, handed to the copier in
//! batches.
//!
//! Reading the source is about half of a clone's CPU: every inode sits at
//! a random place in the inode tree, and every file's chunk keys are read
//! too. On its own thread that work overlaps with the copier's inserts and
//! the commit, so a clone uses both cores of a small machine.

use super::dirs::{fold_stamps, Entries};
use super::schema::*;
use crate::error::{FsError, FsResult};
use engine::{Cursor, Direction, Transaction, Value};
use std::collections::HashSet;
use std::sync::mpsc::SyncSender;

/// Entries read from one source directory at a time, and so the most one
/// message carries.
const BATCH: usize = 512;

/// One source inode with everything the copy needs of it.
pub(super) struct Source {
    /// The inode, a directory's stamps folded in.
    pub inode: Inode,
    /// A file's content chunks: index and stored value.
    pub chunks: Vec<(u64, Value)>,
}

/// One entry of a source directory, as the walk met it.
pub(super) struct Found {
    /// The source directory holding the entry.
    pub dir: u64,
    /// Its name.
    pub name: Vec<u8>,
    /// The source inode it names.
    pub old: u64,
    /// The inode, or `None` for a further link to a file the walk has
    /// handed over already (a hard link inside the tree).
    pub source: Option<Source>,
}

/// Reads `old` (already loaded as `inode`) for copying: a directory's
/// stamps folded into its inode, a file's chunk values listed.
pub(super) fn read(snap: &mut Transaction, old: u64, mut inode: Inode) -> FsResult<Source> {
    let mut chunks = Vec::new();
    match inode.kind {
        Kind::Dir => fold_stamps(snap, old, &mut inode, false)?,
        Kind::File => chunks = file_chunks(snap, old, inode.size)?,
        _ => {}
    }
    Ok(Source { inode, chunks })
}

/// The content chunks of file `old` of `size` bytes. Only chunks below
/// the size are read: nothing can read past it, so a copy needs no more.
fn file_chunks(snap: &mut Transaction, old: u64, size: u64) -> FsResult<Vec<(u64, Value)>> {
    let mut chunks = Vec::new();
    let mut cur = Cursor::new(
        chunk_key(old, 0).to_vec()..chunk_key(old, size.div_ceil(CHUNK)).to_vec(),
        Direction::Forward,
    );
    while !cur.is_done() {
        for (key, value) in snap.scan_values(CONTENT, &mut cur, BATCH)? {
            let index = chunk_index(&key)
                .ok_or_else(|| FsError::Corrupted(format!("content key of {old:#x}")))?;
            chunks.push((index, value));
        }
    }
    Ok(chunks)
}

/// Walks everything below the directory `top`, depth first, sending each
/// directory's entries in batches of up to [`BATCH`] to `out`, a
/// directory's own entry always before its contents. Stops at the first
/// error (sent on) or when the receiver is gone (the copier failed).
pub(super) fn walk(snap: &mut Transaction, top: u64, out: SyncSender<FsResult<Vec<Found>>>) {
    // Directories go in too: one met twice (a damaged volume) would make
    // the walk endless.
    let mut linked = HashSet::from([top]);
    let mut dirs = vec![top];
    while let Some(dir) = dirs.pop() {
        let mut entries = Entries::of(dir);
        loop {
            let found = match entries.next_batch(snap, BATCH) {
                Ok(Some(batch)) => read_batch(snap, dir, batch, &mut linked, &mut dirs),
                Ok(None) => break,
                Err(e) => Err(e),
            };
            let failed = found.is_err();
            if out.send(found).is_err() || failed {
                return;
            }
        }
    }
}

/// The entries of one batch of `dir`, their inodes read; subdirectories
/// are pushed on `dirs` and noted in `linked`, and so are files with more
/// than one link, so that their next link is handed over as a link only.
///
/// The batch's inodes, and the one chunk of its small files, are each
/// read in one sorted multi-get: the source's inode numbers are scattered
/// over the whole inode tree, and a lookup per entry walked down from its
/// root every time.
fn read_batch(
    snap: &mut Transaction,
    dir: u64,
    batch: Vec<(Vec<u8>, Vec<u8>)>,
    linked: &mut HashSet<u64>,
    dirs: &mut Vec<u64>,
) -> FsResult<Vec<Found>> {
    let mut entries = Vec::with_capacity(batch.len());
    for (name, bytes) in batch {
        let e = Entry::decode(&bytes)
            .ok_or_else(|| FsError::Corrupted(format!("entry in {dir:#x}")))?;
        if e.kind == Kind::Dir && linked.contains(&e.ino) {
            return Err(FsError::Corrupted(format!(
                "directory {:#x} named twice",
                e.ino
            )));
        }
        entries.push((name, e.ino));
    }
    let mut wanted: Vec<u64> = entries
        .iter()
        .map(|(_, ino)| *ino)
        .filter(|ino| !linked.contains(ino))
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut inodes = load_sorted(snap, &wanted)?;
    let small: Vec<u64> = wanted
        .iter()
        .zip(&inodes)
        .filter(|(_, i)| {
            i.as_ref()
                .is_some_and(|i| i.kind == Kind::File && i.size > 0 && i.size <= CHUNK)
        })
        .map(|(ino, _)| *ino)
        .collect();
    let keys: Vec<[u8; 16]> = small.iter().map(|ino| chunk_key(*ino, 0)).collect();
    let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
    let mut first_chunks = snap.get_values_sorted(CONTENT, &refs)?;

    let mut found = Vec::with_capacity(entries.len());
    for (name, old) in entries {
        let source = if linked.contains(&old) {
            None
        } else {
            let at = wanted.binary_search(&old).ok();
            let inode = at
                .and_then(|at| inodes[at].take())
                .ok_or_else(|| FsError::Corrupted(format!("{old:#x} named twice in {dir:#x}")))?;
            if inode.kind == Kind::Dir {
                dirs.push(old);
            }
            if inode.kind == Kind::Dir || inode.nlink > 1 {
                linked.insert(old);
            }
            Some(match small.binary_search(&old) {
                Ok(at) => Source {
                    chunks: first_chunks[at]
                        .take()
                        .map(|v| (0, v))
                        .into_iter()
                        .collect(),
                    inode,
                },
                Err(_) => read(snap, old, inode)?,
            })
        };
        found.push(Found {
            dir,
            name,
            old,
            source,
        });
    }
    Ok(found)
}

/// The inodes `inos` (ascending, distinct), in their order.
fn load_sorted(snap: &mut Transaction, inos: &[u64]) -> FsResult<Vec<Option<Inode>>> {
    let keys: Vec<[u8; 8]> = inos.iter().map(|ino| ino_key(*ino)).collect();
    let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
    let values = snap.get_values_sorted(INODES, &refs)?;
    let mut inodes = Vec::with_capacity(values.len());
    for (ino, value) in inos.iter().zip(values) {
        let bytes = match value.ok_or(FsError::NotFound)? {
            Value::Inline(bytes) => bytes,
            other => snap.load(&other)?,
        };
        let inode =
            Inode::decode(&bytes).ok_or_else(|| FsError::Corrupted(format!("inode {ino:#x}")))?;
        inodes.push(Some(inode));
    }
    Ok(inodes)
}
