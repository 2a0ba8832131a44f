//! Writable clones: a whole tree copied in one transaction, its file
//! content shared rather than copied.
//!
//! Every inode of the source gets a fresh number, and every directory a
//! fresh tree, so the copy is independent of the source from the moment
//! it lands. A file's content chunks are engine values: the copy's
//! chunk keys name the same immutable blobs (`Transaction::put_value`),
//! and a later write to either file puts new values under its own keys
//! only. So a clone costs its metadata (inodes, entries, chunk keys),
//! never its data.
//!
//! The source is read through a read-only transaction (`src`): the copy
//! is the source exactly as it was at that snapshot, and its reads are not
//! validated, so files landing in the source meanwhile neither send the
//! clone back nor show in it. The read-write transaction (`tx`) validates
//! only the destination.

use super::dirs::{fold_stamps, touch, Entries};
use super::names::is_under;
use super::schema::*;
use super::{Caller, Host};
use crate::error::{FsError, FsResult};
use engine::{Cursor, Direction, Transaction};
use std::collections::HashMap;

/// What a clone made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CloneReport {
    /// Inode number of the copy's top.
    pub ino: u64,
    /// Inodes made (files, directories, links...; hard links once).
    pub inodes: u64,
    /// Directory entries made, the copy's own name included.
    pub entries: u64,
    /// Content chunks shared with the source.
    pub chunks: u64,
    /// Bytes of file content the copy names.
    pub bytes: u64,
}

/// Permission bits a caller holds on `inode` (`0o7`: read, write,
/// search). Only the caller's primary group counts: supplementary groups
/// are not known for a request made through a control file, so a check
/// may refuse what the kernel would allow, never the reverse.
fn granted(inode: &Inode, caller: Caller) -> u32 {
    if caller.uid == 0 {
        return 0o7;
    }
    if inode.uid == caller.uid {
        (inode.perm >> 6) & 0o7
    } else if inode.gid == caller.gid {
        (inode.perm >> 3) & 0o7
    } else {
        inode.perm & 0o7
    }
}

/// The inode at `path` (from the volume's root, symlinks not followed),
/// for `caller`: every directory on the way must grant it search
/// permission, as the kernel would check for a path it resolves.
pub fn resolve_for(tx: &mut Transaction, caller: Caller, path: &str) -> FsResult<u64> {
    let mut ino = ROOT_INO;
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        let dir = load_dir(tx, ino)?;
        if granted(&dir, caller) & 0o1 == 0 {
            return Err(FsError::Access);
        }
        ino = entry(tx, ino, part.as_bytes())?
            .ok_or(FsError::NotFound)?
            .ino;
    }
    Ok(ino)
}

/// Clones `src` to the new path `dst` (both from the volume's root) for
/// `caller`: [`clone_tree`] after resolving both.
pub fn clone_path(
    snap: &mut Transaction,
    tx: &mut Transaction,
    host: &dyn Host,
    caller: Caller,
    src: &str,
    dst: &str,
) -> FsResult<CloneReport> {
    let from = resolve_for(snap, caller, src)?;
    let trimmed = dst.trim_end_matches('/');
    let (dir, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    if name.is_empty() || name == "." || name == ".." {
        return Err(FsError::Invalid("the destination names no entry"));
    }
    let parent = resolve_for(tx, caller, dir)?;
    clone_tree(snap, tx, host, caller, from, parent, name.as_bytes())
}

/// Copies the tree at `src` (a directory with everything below it, or a
/// single file, symlink or special file) to the new name
/// `dst_parent/dst_name`: the source as the read-only `snap` sees it,
/// written in `tx`.
///
/// The copy keeps modes, times, extended attributes and the hard links
/// inside the tree (a file linked twice in the source is one inode
/// linked twice in the copy; links from outside the tree are not
/// counted). Root keeps owners as they are (like `cp -a`); any other
/// caller needs read permission on every file (and read and search on
/// every directory) of the source, and becomes the owner of the copy,
/// with setuid and setgid bits cleared (like `cp -r`).
///
/// Errors, each before anything is written: `EEXIST` when the new name
/// is taken, `EINVAL` for a copy into the source itself, `EACCES` for a
/// missing permission.
pub fn clone_tree(
    snap: &mut Transaction,
    tx: &mut Transaction,
    host: &dyn Host,
    caller: Caller,
    src: u64,
    dst_parent: u64,
    dst_name: &[u8],
) -> FsResult<CloneReport> {
    check_name(dst_name)?;
    let parent = load_dir(tx, dst_parent)?;
    if parent.nlink == 0 {
        return Err(FsError::NotFound);
    }
    if granted(&parent, caller) & 0o3 != 0o3 {
        return Err(FsError::Access);
    }
    if entry(tx, dst_parent, dst_name)?.is_some() {
        return Err(FsError::Exists);
    }
    let top = load(snap, src)?;
    if top.kind == Kind::Dir && is_under(tx, dst_parent, src)? {
        return Err(FsError::Invalid("a tree cannot be cloned into itself"));
    }
    let mut copier = Copier {
        caller,
        now: Time::now(),
        map: HashMap::new(),
        inodes: HashMap::new(),
        report: CloneReport::default(),
        next_ino: clone_base(),
    };
    let new_top = copier.copy(snap, tx, src, top, dst_parent)?;
    copier.finish(tx)?;
    super::quota::charge(
        tx,
        dst_parent,
        copier.report.bytes as i64,
        copier.report.inodes as i64,
    )?;
    tx.insert(
        &dir_tree(dst_parent),
        dst_name,
        &Entry {
            ino: new_top.0,
            kind: new_top.1,
        }
        .encode(),
    )?;
    touch(tx, host.id(), dst_parent, (new_top.1 == Kind::Dir) as i64)?;
    let mut report = copier.report;
    report.ino = new_top.0;
    report.entries += 1;
    Ok(report)
}

/// The walk's state: source inode -> copy, and the copies' inodes, written
/// at the end once hard links inside the tree are counted.
struct Copier {
    caller: Caller,
    now: Time,
    map: HashMap<u64, (u64, Kind)>,
    /// The copies' inodes (links counted so far), by new number.
    inodes: HashMap<u64, Inode>,
    report: CloneReport,
    /// The number the next copy gets.
    next_ino: u64,
}

/// Copies are numbered in one run from a random start below 2^62, so
/// that their inode and content keys land side by side: each fills the
/// B-tree leaf before it in key order, instead of one random leaf each
/// (which made the trees' inserts most of a clone's time). The run cannot
/// pass 2^63; it meets an existing (random 63-bit) number with odds of
/// about run length x files / 2^63, and `finish` refuses the clone if it
/// does.
fn clone_base() -> u64 {
    (rand::random::<u64>() >> 2).max(ROOT_INO + 1)
}

impl Copier {
    /// A fresh inode number for a copy (see `clone_base`). Checked against
    /// the volume only when the copies are written (`finish` inserts, which
    /// fails on a taken number), refusing the clone rather than mixing two
    /// files.
    fn fresh_ino(&mut self) -> u64 {
        self.next_ino += 1;
        self.next_ino
    }

    /// The copy of `old` (already loaded as `inode`), placed under the new
    /// directory `parent`; its number and kind. A directory is walked
    /// without recursion, so depth costs no stack.
    fn copy(
        &mut self,
        snap: &mut Transaction,
        tx: &mut Transaction,
        old: u64,
        inode: Inode,
        parent: u64,
    ) -> FsResult<(u64, Kind)> {
        let top = self.copy_one(snap, tx, old, inode, parent)?;
        let mut dirs = vec![(old, top.0)];
        while let Some((old_dir, new_dir)) = dirs.pop() {
            let mut entries = Entries::of(old_dir);
            while let Some(batch) = entries.next_batch(snap, 512)? {
                for (name, bytes) in batch {
                    let e = Entry::decode(&bytes)
                        .ok_or_else(|| FsError::Corrupted(format!("entry in {old_dir:#x}")))?;
                    let (ino, kind) = match self.map.get(&e.ino) {
                        // A hard link to a file copied already: one more link.
                        Some(&(ino, kind)) => {
                            if let Some(copy) = self.inodes.get_mut(&ino) {
                                copy.nlink += 1;
                            }
                            (ino, kind)
                        }
                        None => {
                            let child = load(snap, e.ino)?;
                            let made = self.copy_one(snap, tx, e.ino, child, new_dir)?;
                            if made.1 == Kind::Dir {
                                dirs.push((e.ino, made.0));
                            }
                            made
                        }
                    };
                    // A blind write: the tree is new, and names in one
                    // source directory are distinct.
                    tx.upsert(&dir_tree(new_dir), &name, &Entry { ino, kind }.encode())?;
                    self.report.entries += 1;
                }
            }
        }
        Ok(top)
    }

    /// Copies one inode (and a file's content keys); a directory gets its
    /// empty tree, filled by the walk.
    fn copy_one(
        &mut self,
        snap: &mut Transaction,
        tx: &mut Transaction,
        old: u64,
        mut inode: Inode,
        parent: u64,
    ) -> FsResult<(u64, Kind)> {
        let need = if inode.kind == Kind::Dir { 0o5 } else { 0o4 };
        let readable = matches!(inode.kind, Kind::File | Kind::Dir);
        if readable && granted(&inode, self.caller) & need != need {
            return Err(FsError::Access);
        }
        let ino = self.fresh_ino();
        if inode.kind == Kind::Dir {
            // The stamps' link counts and times folded in; the copy's own
            // count is made by the walk (2, plus one per subdirectory).
            fold_stamps(snap, old, &mut inode, false)?;
            inode.nlink = 2;
            inode.parent = parent;
            tx.create_tree(&dir_tree(ino), DIR_TREE)?;
        } else {
            inode.nlink = 1;
            // Charged to the directory it is copied into (the first, for
            // hard links: all of them are inside the copy).
            inode.parent = parent;
            if inode.kind == Kind::File {
                self.share_content(snap, tx, old, ino)?;
                self.report.bytes += inode.size;
            }
        }
        if self.caller.uid != 0 {
            inode.uid = self.caller.uid;
            inode.gid = self.caller.gid;
            inode.perm &= !(libc::S_ISUID | libc::S_ISGID);
        }
        inode.ctime = self.now;
        inode.crtime = self.now;
        if inode.kind == Kind::Dir {
            // One more subdirectory in the new parent, when the parent is
            // part of the copy (the top's parent counts it through its stamp).
            if let Some(copy) = self.inodes.get_mut(&parent) {
                copy.nlink += 1;
            }
        }
        let kind = inode.kind;
        self.map.insert(old, (ino, kind));
        self.inodes.insert(ino, inode);
        self.report.inodes += 1;
        Ok((ino, kind))
    }

    /// The file `new` names every content chunk of `old`: the same values,
    /// not a copy of their bytes.
    fn share_content(
        &mut self,
        snap: &mut Transaction,
        tx: &mut Transaction,
        old: u64,
        new: u64,
    ) -> FsResult<()> {
        let mut cur = Cursor::new(
            chunk_key(old, 0).to_vec()..chunk_key(old + 1, 0).to_vec(),
            Direction::Forward,
        );
        loop {
            let batch = snap.scan_values(CONTENT, &mut cur, 512)?;
            for (key, value) in &batch {
                let index = chunk_index(key)
                    .ok_or_else(|| FsError::Corrupted(format!("content key of {old:#x}")))?;
                tx.put_value(CONTENT, &chunk_key(new, index), value)?;
                self.report.chunks += 1;
            }
            if cur.is_done() {
                return Ok(());
            }
        }
    }

    /// Writes every copied inode, links counted.
    fn finish(&mut self, tx: &mut Transaction) -> FsResult<()> {
        // In number order: the inode tree's leaves are filled left to right.
        let mut inodes: Vec<_> = self.inodes.iter().collect();
        inodes.sort_unstable_by_key(|(ino, _)| **ino);
        for (ino, inode) in inodes {
            match tx.insert(INODES, &ino_key(*ino), &inode.encode()) {
                Err(engine::Error::KeyExists) => {
                    return Err(FsError::Corrupted(format!("inode {ino:#x} taken twice")))
                }
                r => r?,
            }
        }
        Ok(())
    }
}
