//! Open files and handles: each file open on this host has one state (its
//! open count, its write buffer, attribute changes waiting for the buffer's
//! commit), shared by all its handles.
//!
//! Lock order: the map of states, then one file's state; a file's state is
//! held across its commit so writes and reads on this host see it whole.

use super::dirty::Dirty;
use crate::error::{FsError, FsResult};
use crate::ns::schema::{Inode, Time};
use crate::ns::SetAttr;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

/// One file's state on this host.
#[derive(Default)]
pub(crate) struct FileState {
    /// Handles open on it.
    pub opens: u32,
    /// Its write buffer, once something wrote or truncated.
    pub dirty: Option<Dirty>,
    /// Last write time of the buffered changes.
    pub write_time: Time,
    /// The process whose write was buffered last, when known.
    pub writer: Option<u32>,
    /// Attribute changes that process made after its writes, committed
    /// with them (tar, cp -p and rsync set times, owner and mode between
    /// the last write and the close: one commit instead of four).
    pub attrs: PendingAttrs,
    /// Made on this host and not committed yet: its create lands with its
    /// first commit.
    pub new: Option<super::NewFile>,
    /// Its create was given up at a commit that another operation forced
    /// (another host took the name first): the next flush, fsync or close
    /// reports `EEXIST` to the program that wrote it.
    pub new_lost: bool,
}

impl FileState {
    /// Buffered changes not committed yet: data or attributes.
    pub(crate) fn holds_changes(&self) -> bool {
        self.dirty.as_ref().is_some_and(|d| !d.is_clean())
            || !self.attrs.is_empty()
            || self.new.is_some()
            || self.new_lost
    }
}

/// Attribute changes waiting for the commit of a file's buffered writes.
#[derive(Clone, Copy, Default)]
pub(crate) struct PendingAttrs {
    perm: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    atime: Option<Time>,
    pub mtime: Option<Time>,
    pub ctime: Option<Time>,
}

impl PendingAttrs {
    /// Nothing waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.perm.is_none()
            && self.uid.is_none()
            && self.gid.is_none()
            && self.atime.is_none()
            && self.mtime.is_none()
            && self.ctime.is_none()
    }

    /// Adds a later change (its values win).
    pub(crate) fn absorb(&mut self, set: &SetAttr) {
        self.perm = set.mode.map(|m| m & 0o7777).or(self.perm);
        self.uid = set.uid.or(self.uid);
        self.gid = set.gid.or(self.gid);
        self.atime = set.atime.or(self.atime);
        self.mtime = set.mtime.or(self.mtime);
        self.ctime = Some(set.ctime.unwrap_or_else(Time::now));
    }

    /// Writes the changes into `i`.
    pub(crate) fn apply(&self, i: &mut Inode) {
        if let Some(p) = self.perm {
            i.perm = p;
        }
        if let Some(u) = self.uid {
            i.uid = u;
        }
        if let Some(g) = self.gid {
            i.gid = g;
        }
        if let Some(t) = self.atime {
            i.atime = t;
        }
        if let Some(t) = self.mtime {
            i.mtime = t;
        }
        if let Some(t) = self.ctime {
            i.ctime = t;
        }
    }
}

/// An open file handle.
struct Handle {
    ino: u64,
    append: bool,
    /// Wrote through this handle since its last flush: its close must commit.
    wrote: bool,
}

/// A file's state, shared by its handles and the threads serving them.
pub(crate) type Shared = Arc<Mutex<FileState>>;

/// The files open (or buffered) on this host, and their handles.
#[derive(Default)]
pub(crate) struct OpenFiles {
    files: Mutex<HashMap<u64, Shared>>,
    handles: Mutex<HashMap<u64, Handle>>,
}

impl OpenFiles {
    /// The state of `ino`, made if absent.
    pub(crate) fn state(&self, ino: u64) -> Shared {
        self.files.lock().entry(ino).or_default().clone()
    }

    /// The state of `ino`, if it has one.
    pub(crate) fn get(&self, ino: u64) -> Option<Shared> {
        self.files.lock().get(&ino).cloned()
    }

    /// Every state (before unmount).
    pub(crate) fn all(&self) -> Vec<(u64, Shared)> {
        self.files
            .lock()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }

    /// True while a handle of `ino` is open here.
    pub(crate) fn is_open(&self, ino: u64) -> bool {
        self.files
            .lock()
            .get(&ino)
            .is_some_and(|s| s.lock().opens > 0)
    }

    /// Forgets what is buffered for `ino` (it is being deleted).
    pub(crate) fn drop_buffer(&self, ino: u64) {
        if let Some(s) = self.files.lock().get(&ino) {
            s.lock().dirty = None;
        }
    }

    /// Shows in `inode` what is buffered for `ino`.
    pub(crate) fn overlay(&self, ino: u64, inode: &mut Inode) {
        let Some(state) = self.get(ino) else {
            return;
        };
        let st = state.lock();
        if let Some(d) = st.dirty.as_ref().filter(|d| !d.is_clean()) {
            inode.size = d.size;
            inode.mtime = st.write_time;
            inode.ctime = st.write_time;
        }
        st.attrs.apply(inode);
    }

    /// Drops the file's state once nothing is open, buffered or pending.
    /// Every clone of a state is taken under the map's lock, so a count of
    /// one there means no thread is between `state()` and locking it: a
    /// state some thread was about to write into would otherwise leave the
    /// map, and its writes with it, unseen by the closes that commit.
    /// A caller that holds the state hands its reference in (`mine`), so it
    /// is gone before the count is read.
    pub(crate) fn release_if_idle(&self, ino: u64, mine: Option<Shared>) {
        drop(mine);
        let mut files = self.files.lock();
        if let Some(s) = files.get(&ino) {
            if Arc::strong_count(s) > 1 {
                return;
            }
            let st = s.lock();
            if st.opens == 0 && !st.holds_changes() {
                drop(st);
                files.remove(&ino);
            }
        }
    }

    /// Registers handle `fh` of `ino` (one more open of it).
    pub(crate) fn open(&self, fh: u64, ino: u64, append: bool) {
        self.state(ino).lock().opens += 1;
        self.handles.lock().insert(
            fh,
            Handle {
                ino,
                append,
                wrote: false,
            },
        );
    }

    /// A write through `fh`: its inode and whether it appends.
    pub(crate) fn writing(&self, fh: u64) -> FsResult<(u64, bool)> {
        let mut h = self.handles.lock();
        let h = h.get_mut(&fh).ok_or(FsError::BadHandle)?;
        h.wrote = true;
        Ok((h.ino, h.append))
    }

    /// The handle's inode and whether it wrote since the last call.
    pub(crate) fn take_wrote(&self, fh: u64) -> Option<(u64, bool)> {
        let mut handles = self.handles.lock();
        let h = handles.get_mut(&fh)?;
        Some((h.ino, std::mem::take(&mut h.wrote)))
    }

    /// Closes `fh`: its inode and whether it wrote.
    pub(crate) fn close(&self, fh: u64) -> Option<(u64, bool)> {
        self.handles.lock().remove(&fh).map(|h| (h.ino, h.wrote))
    }
}
