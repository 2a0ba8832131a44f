//! The one place that decides whether an inode or a handle belongs to the
//! volume or to the virtual tree (`/.macros`, `/.jobs`, `/.sopfs`), and
//! sends each operation there. The FUSE adapter asks it, then only
//! converts types and replies; `Side` tells it how to reply (the kernel
//! caches nothing of the virtual tree, whose files it reads directly).

use crate::error::{FsError, FsResult};
use crate::fs::{Attr, Caller, DirEntry, Fs, SetAttr};
use crate::mount::virt::Virtual;
use crate::ns::schema::{Inode, Kind};
use std::sync::Arc;

/// Which tree answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The volume's own files and directories.
    Volume,
    /// The virtual tree.
    Virtual,
}

/// Routes every operation that either tree may serve.
pub(crate) struct Router {
    /// The volume.
    pub fs: Arc<Fs>,
    virt: Virtual,
}

impl Router {
    /// Routes between `fs` and `virt`.
    pub(crate) fn new(fs: Arc<Fs>, virt: Virtual) -> Router {
        Router { fs, virt }
    }

    /// `EPERM` when any of `inos` is virtual: operations the virtual tree
    /// does not take (mkdir, rmdir, rename, link, symlink, mknod).
    pub(crate) fn volume_only(&self, inos: &[u64]) -> FsResult<()> {
        if inos.iter().any(|&i| Virtual::owns(i)) {
            return Err(FsError::NotPermitted);
        }
        Ok(())
    }

    /// Looks `name` up in `parent`.
    pub(crate) fn lookup(&self, parent: u64, name: &[u8]) -> (Side, FsResult<Attr>) {
        match self.virt.lookup(parent, name) {
            Some(r) => (Side::Virtual, r),
            None => (Side::Volume, self.fs.lookup(parent, name)),
        }
    }

    /// Attributes for the kernel.
    pub(crate) fn getattr(&self, ino: u64) -> (Side, FsResult<Attr>) {
        if Virtual::owns(ino) {
            (Side::Virtual, self.virt.getattr(ino))
        } else {
            (Side::Volume, self.fs.getattr_live(ino))
        }
    }

    /// Changes attributes (a virtual file takes none: O_TRUNC on it has
    /// nothing to cut).
    pub(crate) fn setattr(&self, ino: u64, set: &SetAttr) -> (Side, FsResult<Attr>) {
        if Virtual::owns(ino) {
            (Side::Virtual, self.virt.getattr(ino))
        } else {
            (Side::Volume, self.fs.setattr(ino, set))
        }
    }

    /// Removes a name.
    pub(crate) fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        match self.virt.unlink(parent, name) {
            Some(r) => r,
            None => self.fs.unlink(parent, name),
        }
    }

    /// Creates and opens a file.
    pub(crate) fn create(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
    ) -> (Side, FsResult<(Attr, u64)>) {
        match self.virt.create(parent, name) {
            Some(r) => (Side::Virtual, r),
            None => (
                Side::Volume,
                self.fs.create(caller, parent, name, mode, flags),
            ),
        }
    }

    /// Opens a file.
    pub(crate) fn open(&self, ino: u64, flags: i32, caller: Caller) -> (Side, FsResult<u64>) {
        if Virtual::owns(ino) {
            (Side::Virtual, self.virt.open(ino, caller))
        } else {
            (Side::Volume, self.fs.open(ino, flags))
        }
    }

    /// Reads through handle `fh` of `ino`.
    pub(crate) fn read(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> (Side, FsResult<Vec<u8>>) {
        if Virtual::owns_fh(fh) {
            (Side::Virtual, self.virt.read(fh, offset, size))
        } else {
            (Side::Volume, self.fs.read(ino, offset, size))
        }
    }

    /// Writes through handle `fh` for process `pid`.
    pub(crate) fn write(
        &self,
        fh: u64,
        offset: u64,
        data: &[u8],
        pid: Option<u32>,
    ) -> FsResult<u32> {
        if Virtual::owns_fh(fh) {
            self.virt.write(fh, offset, data)
        } else {
            self.fs.write_from(fh, offset, data, pid)
        }
    }

    /// A handle's close (FUSE flush).
    pub(crate) fn flush(&self, ino: u64, fh: u64) -> FsResult<()> {
        if Virtual::owns_fh(fh) {
            return self.virt.flush(fh);
        }
        match self.fs.flush_handle(fh) {
            // A flush without a known handle still owes the file's commit.
            Err(FsError::BadHandle) => self.fs.flush(ino),
            r => r,
        }
    }

    /// Releases a file handle.
    pub(crate) fn release(&self, fh: u64) -> FsResult<()> {
        if Virtual::owns_fh(fh) {
            self.virt.release(fh)
        } else {
            self.fs.release(fh)
        }
    }

    /// Opens a directory.
    pub(crate) fn opendir(&self, ino: u64) -> FsResult<u64> {
        if Virtual::owns(ino) {
            self.virt.opendir(ino)
        } else {
            self.fs.opendir(ino)
        }
    }

    /// Entries of an open directory from `offset` on; `add` returns true
    /// when the reply is full.
    pub(crate) fn readdir(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&DirEntry, u64) -> bool,
    ) -> FsResult<()> {
        if !Virtual::owns_fh(fh) {
            return self.fs.readdir(fh, offset, add);
        }
        for (e, next) in self.virt.readdir(fh, offset)? {
            if add(&e, next) {
                break;
            }
        }
        Ok(())
    }

    /// Like `readdir`, with attributes where there are some ("." and ".."
    /// of the volume come without) and the side that gave them.
    pub(crate) fn readdir_plus(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&DirEntry, Option<&Attr>, u64, Side) -> bool,
    ) -> FsResult<()> {
        if !Virtual::owns_fh(fh) {
            return self
                .fs
                .readdir_plus(fh, offset, |e, a, next| add(e, a, next, Side::Volume));
        }
        for (e, next) in self.virt.readdir(fh, offset)? {
            let a = self.virt.getattr(e.ino).unwrap_or_else(|_| Attr {
                ino: e.ino,
                inode: Inode::new(e.kind, 0o555, 0, 0),
            });
            if add(&e, Some(&a), next, Side::Virtual) {
                break;
            }
        }
        Ok(())
    }

    /// Releases a directory handle.
    pub(crate) fn releasedir(&self, fh: u64) {
        if Virtual::owns_fh(fh) {
            let _ = self.virt.release(fh);
        } else {
            self.fs.releasedir(fh);
        }
    }
}

/// Attributes of "." and ".." for readdirplus (the kernel takes no
/// reference for them).
pub(crate) fn bare_dir(ino: u64) -> Attr {
    Attr {
        ino,
        inode: Inode::new(Kind::Dir, 0o755, 0, 0),
    }
}
