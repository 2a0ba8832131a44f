//! Directory quotas: a limit of bytes (the sizes of the regular files
//! below a directory) and of inodes (everything below it), kept exact by
//! charging every change in the transaction that makes it.
//!
//! Each quota is one record in tree `q` (directory inode -> [`Quota`]):
//! its limits and its usage. A change below a quota directory rewrites that
//! record in the same transaction, so two hosts writing below one quota
//! conflict on it and one retries on fresh usage: a quota is never passed,
//! at the price of serializing the commits below it. To know where a file
//! is charged, a file's inode names its directory (`Inode::parent`, kept
//! for files too since quotas came); a file whose names are in directories
//! of different quotas could not say, so `link` and `rename` across quota
//! boundaries fail with `EXDEV` (as XFS project quotas do; `mv` then
//! copies), except a rename of a single-linked file, whose usage moves.

use super::dirs::Entries;
use super::schema::*;
use crate::error::{FsError, FsResult};
use engine::{Cursor, Direction, Transaction, TreeConfig};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The quota tree.
pub const QUOTAS: &str = "q";
const QUOTA_TREE: TreeConfig = TreeConfig {
    slots: 64,
    inline_max: 256,
};

/// One directory's quota: limits (0 = none) and what is used below it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Most bytes of regular files below the directory.
    pub max_bytes: u64,
    /// Most inodes below the directory (the directory itself not counted).
    pub max_inodes: u64,
    /// Bytes used.
    pub bytes: u64,
    /// Inodes used.
    pub inodes: u64,
}

impl Quota {
    fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    fn decode(b: &[u8]) -> Option<Quota> {
        postcard::from_bytes(b).ok()
    }
}

/// The quota of directory `dir`, if it has one.
pub fn get(tx: &mut Transaction, dir: u64) -> FsResult<Option<Quota>> {
    match tx.get(QUOTAS, &ino_key(dir)) {
        Ok(Some(b)) => Quota::decode(&b)
            .map(Some)
            .ok_or_else(|| FsError::Corrupted(format!("quota of {dir:#x}"))),
        Ok(None) | Err(engine::Error::TreeNotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The quotas `dir` lies under (its own included), innermost first. Empty
/// at the cost of one catalog read on a volume without quotas.
pub fn realm(tx: &mut Transaction, dir: u64) -> FsResult<Vec<(u64, Quota)>> {
    if !tx.tree_exists(QUOTAS)? {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut at = dir.max(ROOT_INO);
    for _ in 0..4096 {
        if let Some(q) = get(tx, at)? {
            out.push((at, q));
        }
        if at == ROOT_INO {
            return Ok(out);
        }
        at = load_dir(tx, at)?.parent.max(ROOT_INO);
    }
    Err(FsError::Corrupted(
        "directory chain longer than 4096".into(),
    ))
}

/// The directory a file's usage is charged to.
pub fn home(inode: &Inode) -> u64 {
    inode.parent.max(ROOT_INO)
}

/// Adds `bytes` and `inodes` (either may be negative) to every quota `dir`
/// lies under; `EDQUOT` when a growth passes a limit (nothing is written
/// then: the caller's transaction fails whole).
pub fn charge(tx: &mut Transaction, dir: u64, bytes: i64, inodes: i64) -> FsResult<()> {
    if bytes == 0 && inodes == 0 {
        return Ok(());
    }
    for (at, mut q) in realm(tx, dir)? {
        q.bytes = q.bytes.saturating_add_signed(bytes);
        q.inodes = q.inodes.saturating_add_signed(inodes);
        let over_bytes = bytes > 0 && q.max_bytes > 0 && q.bytes > q.max_bytes;
        let over_inodes = inodes > 0 && q.max_inodes > 0 && q.inodes > q.max_inodes;
        if over_bytes || over_inodes {
            return Err(FsError::Quota);
        }
        tx.upsert(QUOTAS, &ino_key(at), &q.encode())?;
    }
    Ok(())
}

/// True when `a` and `b` lie under the same quotas.
pub fn same_realm(tx: &mut Transaction, a: u64, b: u64) -> FsResult<bool> {
    if a == b || !tx.tree_exists(QUOTAS)? {
        return Ok(true);
    }
    let ids = |r: Vec<(u64, Quota)>| r.into_iter().map(|(i, _)| i).collect::<Vec<_>>();
    Ok(ids(realm(tx, a)?) == ids(realm(tx, b)?))
}

/// The innermost quota directory `dir` lies under, or the root: a live
/// directory with the same quotas, for a file whose home name went.
pub fn anchor(tx: &mut Transaction, dir: u64) -> FsResult<u64> {
    Ok(realm(tx, dir)?.first().map_or(ROOT_INO, |(i, _)| *i))
}

/// Drops the quota of `dir` (the directory is going away, or the caller
/// asked).
pub fn remove(tx: &mut Transaction, dir: u64) -> FsResult<bool> {
    match tx.remove(QUOTAS, &ino_key(dir)) {
        Ok(r) => Ok(r),
        Err(engine::Error::TreeNotFound(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Usage below `dir` counted by a walk (each inode once, however many
/// names it has). With `adopt`, files' homes are set to the directory
/// they were found in (a quota set on a directory of older files).
pub fn walk(tx: &mut Transaction, dir: u64, adopt: bool) -> FsResult<(u64, u64)> {
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut seen = HashSet::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        let mut entries = Entries::of(d);
        while let Some(batch) = entries.next_batch(tx, 1024)? {
            for (_, v) in batch {
                let Some(e) = Entry::decode(&v) else { continue };
                if !seen.insert(e.ino) {
                    continue;
                }
                inodes += 1;
                if e.kind == Kind::Dir {
                    stack.push(e.ino);
                    continue;
                }
                let mut inode = load(tx, e.ino)?;
                if e.kind == Kind::File {
                    bytes += inode.size;
                }
                if adopt && inode.parent != d {
                    inode.parent = d;
                    store(tx, e.ino, &inode)?;
                }
            }
        }
    }
    Ok((bytes, inodes))
}

/// Sets the limits of `dir`'s quota (0 = none), its usage counted now;
/// `EINVAL` when a limit is below what is used (nothing changed).
pub fn set(tx: &mut Transaction, dir: u64, max_bytes: u64, max_inodes: u64) -> FsResult<Quota> {
    load_dir(tx, dir)?;
    let (bytes, inodes) = walk(tx, dir, true)?;
    if max_bytes > 0 && bytes > max_bytes {
        return Err(FsError::Invalid("the byte limit is below what is used"));
    }
    if max_inodes > 0 && inodes > max_inodes {
        return Err(FsError::Invalid("the inode limit is below what is used"));
    }
    let q = Quota {
        max_bytes,
        max_inodes,
        bytes,
        inodes,
    };
    record(tx, dir, &q)?;
    Ok(q)
}

/// Writes `q` as the quota of `dir` as it is (a repair).
pub fn record(tx: &mut Transaction, dir: u64, q: &Quota) -> FsResult<()> {
    tx.ensure_tree(QUOTAS, QUOTA_TREE)?;
    tx.upsert(QUOTAS, &ino_key(dir), &q.encode())?;
    Ok(())
}

/// Every quota: (directory inode, quota).
pub fn list(tx: &mut Transaction) -> FsResult<Vec<(u64, Quota)>> {
    if !tx.tree_exists(QUOTAS)? {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut cur = Cursor::new(Vec::new().., Direction::Forward);
    loop {
        for (k, v) in tx.scan(QUOTAS, &mut cur, 256)? {
            let ino = k
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes);
            if let (Some(ino), Some(q)) = (ino, Quota::decode(&v)) {
                out.push((ino, q));
            }
        }
        if cur.is_done() {
            return Ok(out);
        }
    }
}
