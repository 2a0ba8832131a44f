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
//! The source is read through a read-only transaction (`snap`), walked on
//! a thread of its own (`clone_source`): the copy is the source exactly as
//! it was at that snapshot, and its reads are not
//! validated, so files landing in the source meanwhile neither send the
//! clone back nor show in it. The read-write transaction (`tx`) validates
//! only the destination.

use super::clone_source::{self as source, Found, Source};
use super::dirs::touch;
use super::names::is_under;
use super::schema::*;
use super::{Caller, Host};
use crate::error::{FsError, FsResult};
use engine::{Cursor, Direction, Transaction};
use std::collections::HashMap;
use std::sync::mpsc::sync_channel;

/// Batches the source walk may read ahead of the copier: enough to keep
/// both threads busy, few enough to bound what a clone holds in memory.
const QUEUED_BATCHES: usize = 8;

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
        inodes: Vec::new(),
        report: CloneReport::default(),
        first: clone_base(),
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
    /// The copies of the source's directories and of its files with more
    /// than one link: the only inodes the walk meets again.
    map: HashMap<u64, (u64, Kind)>,
    /// The copies' inodes (links counted so far), in number order from
    /// `first + 1`.
    inodes: Vec<Inode>,
    report: CloneReport,
    /// The number before the first copy's.
    first: u64,
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
    /// the volume only when the copies are written (`finish` reads the
    /// whole run first), refusing the clone rather than mixing two files.
    fn fresh_ino(&self) -> u64 {
        self.first + 1 + self.inodes.len() as u64
    }

    /// The copy numbered `ino`, if it is one.
    fn copy_mut(&mut self, ino: u64) -> Option<&mut Inode> {
        let at = ino.checked_sub(self.first + 1)?;
        self.inodes.get_mut(usize::try_from(at).ok()?)
    }

    /// The copy of `old` (already loaded as `inode`), placed under the new
    /// directory `parent`; its number and kind. Below a directory, the
    /// source is walked on a thread of its own (`clone_source::walk`)
    /// while this one writes the copies.
    fn copy(
        &mut self,
        snap: &mut Transaction,
        tx: &mut Transaction,
        old: u64,
        inode: Inode,
        parent: u64,
    ) -> FsResult<(u64, Kind)> {
        let top = self.copy_one(tx, old, source::read(snap, old, inode)?, parent)?;
        if top.1 != Kind::Dir {
            return Ok(top);
        }
        let (sender, found) = sync_channel(QUEUED_BATCHES);
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("sopfs-clone-read".into())
                .spawn_scoped(scope, move || source::walk(snap, old, sender))
                .map_err(FsError::Thread)?;
            // Returning early drops `found`: the walk stops at its next send.
            for batch in found {
                for f in batch? {
                    self.place(tx, f)?;
                }
            }
            Ok(top)
        })
    }

    /// Writes the copy of one source entry into the copy of its directory.
    fn place(&mut self, tx: &mut Transaction, f: Found) -> FsResult<()> {
        let dir = match self.map.get(&f.dir) {
            Some(&(dir, _)) => dir,
            None => {
                return Err(FsError::Corrupted(format!(
                    "clone met an entry of directory {:#x} before the directory",
                    f.dir
                )))
            }
        };
        let (ino, kind) = match f.source {
            Some(source) => self.copy_one(tx, f.old, source, dir)?,
            // A hard link to a file copied already: one more link.
            None => {
                let &(ino, kind) = self
                    .map
                    .get(&f.old)
                    .ok_or_else(|| FsError::Corrupted(format!("link to {:#x}", f.old)))?;
                if let Some(copy) = self.copy_mut(ino) {
                    copy.nlink += 1;
                }
                (ino, kind)
            }
        };
        // A blind write: the tree is new, and names in one source
        // directory are distinct.
        tx.upsert(&dir_tree(dir), &f.name, &Entry { ino, kind }.encode())?;
        self.report.entries += 1;
        Ok(())
    }

    /// Copies one inode (and a file's content keys); a directory gets its
    /// empty tree, filled by the walk.
    fn copy_one(
        &mut self,
        tx: &mut Transaction,
        old: u64,
        source: Source,
        parent: u64,
    ) -> FsResult<(u64, Kind)> {
        let Source { mut inode, chunks } = source;
        let source_links = inode.nlink;
        let need = if inode.kind == Kind::Dir { 0o5 } else { 0o4 };
        let readable = matches!(inode.kind, Kind::File | Kind::Dir);
        if readable && granted(&inode, self.caller) & need != need {
            return Err(FsError::Access);
        }
        let ino = self.fresh_ino();
        if inode.kind == Kind::Dir {
            // The source's link count has its stamps folded in; the
            // copy's own count is made by the walk (2, plus one per
            // subdirectory).
            inode.nlink = 2;
            inode.parent = parent;
            tx.create_tree(&dir_tree(ino), DIR_TREE)?;
        } else {
            inode.nlink = 1;
            // Charged to the directory it is copied into (the first, for
            // hard links: all of them are inside the copy).
            inode.parent = parent;
            if inode.kind == Kind::File {
                // The same values, not a copy of their bytes.
                for (index, value) in &chunks {
                    tx.put_value(CONTENT, &chunk_key(ino, *index), value)?;
                }
                self.report.chunks += chunks.len() as u64;
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
            if let Some(copy) = self.copy_mut(parent) {
                copy.nlink += 1;
            }
        }
        let kind = inode.kind;
        if kind == Kind::Dir || source_links > 1 {
            self.map.insert(old, (ino, kind));
        }
        self.inodes.push(inode);
        self.report.inodes += 1;
        Ok((ino, kind))
    }

    /// Writes every copied inode, links counted. One range read checks
    /// that the run of numbers is free (and, being in the read set, makes
    /// a commit taking one of them meanwhile send this one back); the
    /// writes then need no check each.
    fn finish(&mut self, tx: &mut Transaction) -> FsResult<()> {
        let end = self.first + 1 + self.inodes.len() as u64;
        let mut run = Cursor::new(
            ino_key(self.first + 1).to_vec()..ino_key(end).to_vec(),
            Direction::Forward,
        );
        if let Some((key, _)) = tx.scan_values(INODES, &mut run, 1)?.first() {
            return Err(FsError::Corrupted(format!(
                "clone numbers meet the existing inode {key:02x?}"
            )));
        }
        // In number order: the inode tree's leaves are filled left to right.
        for (ino, inode) in (self.first + 1..).zip(&self.inodes) {
            tx.upsert(INODES, &ino_key(ino), &inode.encode())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{Db, Options, StoreLocation};

    fn copier(first: u64, inodes: Vec<Inode>) -> Copier {
        Copier {
            caller: Caller { uid: 0, gid: 0 },
            now: Time::now(),
            map: HashMap::new(),
            inodes,
            report: CloneReport::default(),
            first,
        }
    }

    #[test]
    fn a_run_of_numbers_meeting_an_inode_is_refused_and_writes_nothing() {
        let db = Db::open(
            StoreLocation::Memory(Default::default()),
            Options::default(),
        )
        .expect("open");
        db.run_with(|tx| format(tx, 0, 0)).expect("format");
        let file = Inode::new(Kind::File, 0o644, 0, 0);
        // Numbers 1, 2, 3: the root is 1.
        let refused = db.run_with(|tx| copier(0, vec![file.clone(); 3]).finish(tx));
        assert!(matches!(refused, Err(FsError::Corrupted(_))), "{refused:?}");
        let mut tx = db.begin(engine::TxMode::ReadOnly).expect("begin");
        assert_eq!(tx.count(INODES).expect("count"), 1, "nothing written");
        drop(tx);
        // Numbers 2, 3, 4 are free.
        db.run_with(|tx| copier(ROOT_INO, vec![file.clone(); 3]).finish(tx))
            .expect("a free run");
        let mut tx = db.begin(engine::TxMode::ReadOnly).expect("begin");
        assert_eq!(tx.count(INODES).expect("count"), 4);
    }
}
