//! Directories: reading their entries in batches, the per-host stamps that
//! let hosts add names to one directory without touching a shared record,
//! and the attributes a caller sees once those stamps are folded in.

use super::schema::*;
use super::{Attr, Host};
use crate::error::FsResult;
use engine::{Cursor, Direction, Transaction};
use std::sync::atomic::{AtomicU8, Ordering};

/// A batch of (name, encoded entry) pairs.
pub type Batch = Vec<(Vec<u8>, Vec<u8>)>;

/// A directory's entries (names only: reserved keys such as stamps start
/// with a NUL byte and are skipped), read in batches.
pub struct Entries {
    tree: String,
    cur: Cursor,
}

impl Entries {
    /// Every entry of `dir`, in name order.
    pub fn of(dir: u64) -> Entries {
        Entries {
            tree: dir_tree(dir),
            cur: Cursor::new(vec![1u8].., Direction::Forward),
        }
    }

    /// Entries of `dir` with names in `[from, to)` (both optional).
    pub fn range(dir: u64, from: Option<&[u8]>, to: Option<&[u8]>) -> Entries {
        let lo = from.map_or(vec![1u8], |f| f.to_vec().max(vec![1u8]));
        let cur = match to {
            Some(t) => Cursor::new(lo..t.to_vec(), Direction::Forward),
            None => Cursor::new(lo.., Direction::Forward),
        };
        Entries {
            tree: dir_tree(dir),
            cur,
        }
    }

    /// The next up to `max` (name, encoded entry) pairs; None once all were read.
    pub fn next_batch(&mut self, tx: &mut Transaction, max: usize) -> FsResult<Option<Batch>> {
        if self.cur.is_done() {
            return Ok(None);
        }
        Ok(Some(tx.scan(&self.tree, &mut self.cur, max)?))
    }
}

/// True when directory `ino` holds no name.
pub fn is_empty(tx: &mut Transaction, ino: u64) -> FsResult<bool> {
    let mut cur = Cursor::new(vec![1u8].., Direction::Forward);
    Ok(tx.scan_values(&dir_tree(ino), &mut cur, 1)?.is_empty())
}

/// The stamp lane of the calling thread: threads get lanes in turn, so the
/// first [`STAMP_LANES`] threads of a process (a daemon's FUSE workers)
/// never share one.
fn lane() -> u8 {
    static NEXT: AtomicU8 = AtomicU8::new(0);
    thread_local! {
        static LANE: u8 = NEXT.fetch_add(1, Ordering::Relaxed) % STAMP_LANES;
    }
    LANE.with(|l| *l)
}

/// Records an entry change in `dir` under host `host`'s own stamp (its
/// thread's lane of it): hosts, and threads of one host, adding names to
/// one directory write different keys, so their commits merge.
pub fn touch(tx: &mut Transaction, host: u64, dir: u64, subdirs: i64) -> FsResult<()> {
    let key = stamp_key(host, lane());
    let tree = dir_tree(dir);
    let mut st = tx
        .get(&tree, &key)?
        .and_then(|b| DirStamp::decode(&b))
        .unwrap_or_default();
    st.mtime = Time::now();
    st.subdirs += subdirs;
    tx.upsert(&tree, &key, &st.encode())?;
    Ok(())
}

/// Folds every host's stamps of directory `ino` into `d` (what `stat`
/// shows); with `absorb`, also removes them, so `d` alone holds their
/// effect (before times are set explicitly).
pub fn fold_stamps(tx: &mut Transaction, ino: u64, d: &mut Inode, absorb: bool) -> FsResult<()> {
    let mut cur = Cursor::prefix(STAMP_PREFIX, Direction::Forward);
    let tree = dir_tree(ino);
    let mut keys = Vec::new();
    // Summed before the floor of 2 is applied: one lane's removal can sort
    // before another lane's add of the same subdirectory, and flooring each
    // in turn would keep the add and lose the removal.
    let mut subdirs = 0i64;
    loop {
        for (k, v) in tx.scan(&tree, &mut cur, 256)? {
            if let Some(st) = DirStamp::decode(&v) {
                d.mtime = d.mtime.max(st.mtime);
                d.ctime = d.ctime.max(st.mtime);
                subdirs += st.subdirs;
            }
            if absorb {
                keys.push(k);
            }
        }
        if cur.is_done() {
            break;
        }
    }
    d.nlink = (d.nlink as i64 + subdirs).max(2) as u32;
    for k in keys {
        tx.remove(&tree, &k)?;
    }
    Ok(())
}

/// The attributes of `ino` as a caller sees them: directory stamps folded
/// in, and what `host` buffered for it.
pub fn attr(tx: &mut Transaction, host: &dyn Host, ino: u64) -> FsResult<Attr> {
    let mut inode = load(tx, ino)?;
    if inode.kind == Kind::Dir {
        fold_stamps(tx, ino, &mut inode, false)?;
    }
    host.overlay(ino, &mut inode);
    Ok(Attr { ino, inode })
}
