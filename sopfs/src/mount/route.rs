//! The one place that decides whether an inode or a handle belongs to the
//! volume, to the snapshots (`/.snapshots`) or to the virtual tree
//! (`/.macros`, `/.jobs`, `/.sopfs`), and sends each operation there. The
//! FUSE adapter asks it, then only converts types and replies; `Side` tells
//! it how to reply (the kernel caches nothing of the virtual tree, whose
//! files it reads directly, and keeps what it read of a snapshot).

use crate::error::{FsError, FsResult};
use crate::fs::{Attr, Caller, DirEntry, Fs, SetAttr};
use crate::mount::snapshots::Snapshots;
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
    /// A snapshot (read-only, never changes).
    Snapshot,
}

/// Routes every operation that either tree may serve.
pub(crate) struct Router {
    /// The volume.
    pub fs: Arc<Fs>,
    virt: Virtual,
    /// `/.snapshots`.
    pub snaps: Snapshots,
}

impl Router {
    /// Routes between `fs` and `virt`.
    pub(crate) fn new(fs: Arc<Fs>, virt: Virtual) -> Router {
        Router {
            snaps: Snapshots::new(fs.clone()),
            fs,
            virt,
        }
    }

    /// `EROFS` when any of `inos` is in a snapshot, `EPERM` when any is
    /// virtual: operations only the volume takes (mkdir, rmdir, rename,
    /// link, symlink, mknod, xattr changes, fallocate).
    pub(crate) fn volume_only(&self, inos: &[u64]) -> FsResult<()> {
        if inos.iter().any(|&i| Snapshots::owns(i)) {
            return Err(FsError::ReadOnly);
        }
        if inos.iter().any(|&i| Virtual::owns(i)) {
            return Err(FsError::NotPermitted);
        }
        Ok(())
    }

    /// Looks `name` up in `parent`.
    pub(crate) fn lookup(&self, parent: u64, name: &[u8]) -> (Side, FsResult<Attr>) {
        if let Some(r) = self.snaps.lookup(parent, name) {
            return (Side::Snapshot, r);
        }
        match self.virt.lookup(parent, name) {
            Some(r) => (Side::Virtual, r),
            None => (Side::Volume, self.fs.lookup(parent, name)),
        }
    }

    /// The kernel dropped `n` references to `ino`.
    pub(crate) fn forget(&self, ino: u64, n: u64) {
        if Snapshots::owns(ino) {
            self.snaps.forget(ino, n);
        } else {
            self.fs.forget(ino, n);
        }
    }

    /// Attributes for the kernel.
    pub(crate) fn getattr(&self, ino: u64) -> (Side, FsResult<Attr>) {
        if Snapshots::owns(ino) {
            return (Side::Snapshot, self.snaps.getattr(ino));
        }
        if Virtual::owns(ino) {
            (Side::Virtual, self.virt.getattr(ino))
        } else {
            (Side::Volume, self.fs.getattr_live(ino))
        }
    }

    /// Changes attributes (a virtual file takes none: O_TRUNC on it has
    /// nothing to cut).
    pub(crate) fn setattr(&self, ino: u64, set: &SetAttr) -> (Side, FsResult<Attr>) {
        if Snapshots::owns(ino) {
            return (Side::Snapshot, Err(FsError::ReadOnly));
        }
        if Virtual::owns(ino) {
            (Side::Virtual, self.virt.getattr(ino))
        } else {
            (Side::Volume, self.fs.setattr(ino, set))
        }
    }

    /// Removes a name.
    pub(crate) fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        self.writable(parent)?;
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
        if let Err(e) = self.writable(parent) {
            return (Side::Snapshot, Err(e));
        }
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
        if Snapshots::owns(ino) {
            return (Side::Snapshot, self.snaps.open(ino, flags));
        }
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
        if Snapshots::owns_fh(fh) {
            return (Side::Snapshot, self.snaps.read(fh, offset, size));
        }
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
        if Snapshots::owns_fh(fh) {
            return Err(FsError::ReadOnly);
        }
        if Virtual::owns_fh(fh) {
            self.virt.write(fh, offset, data)
        } else {
            self.fs.write_from(fh, offset, data, pid)
        }
    }

    /// A handle's close (FUSE flush).
    pub(crate) fn flush(&self, ino: u64, fh: u64) -> FsResult<()> {
        if Snapshots::owns_fh(fh) {
            return Ok(());
        }
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
        if Snapshots::owns_fh(fh) {
            self.snaps.release(fh);
            return Ok(());
        }
        if Virtual::owns_fh(fh) {
            self.virt.release(fh)
        } else {
            self.fs.release(fh)
        }
    }

    /// Opens a directory.
    pub(crate) fn opendir(&self, ino: u64) -> FsResult<u64> {
        if Snapshots::owns(ino) {
            return self.snaps.opendir(ino);
        }
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
        let list = if Snapshots::owns_fh(fh) {
            self.snaps.readdir(fh, offset)?
        } else if Virtual::owns_fh(fh) {
            self.virt.readdir(fh, offset)?
        } else {
            return self.fs.readdir(fh, offset, add);
        };
        for (e, next) in list {
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
        if Snapshots::owns_fh(fh) {
            for (e, next) in self.snaps.readdir(fh, offset)? {
                if e.name == b"." || e.name == b".." {
                    if add(&e, None, next, Side::Snapshot) {
                        break;
                    }
                    continue;
                }
                match self.snaps.getattr(e.ino) {
                    Ok(a) => {
                        if add(&e, Some(&a), next, Side::Snapshot) {
                            break;
                        }
                    }
                    // Deleted since the listing (a name in `/.snapshots`).
                    Err(FsError::NotFound) => {}
                    Err(err) => return Err(err),
                }
            }
            return Ok(());
        }
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
        if Snapshots::owns_fh(fh) {
            self.snaps.release(fh);
        } else if Virtual::owns_fh(fh) {
            let _ = self.virt.release(fh);
        } else {
            self.fs.releasedir(fh);
        }
    }
}

impl Router {
    /// `EROFS` inside a snapshot (its folder's names change only through
    /// mkdir and rmdir).
    fn writable(&self, parent: u64) -> FsResult<()> {
        if Snapshots::owns(parent) {
            return Err(FsError::ReadOnly);
        }
        Ok(())
    }

    /// A symlink's target.
    pub(crate) fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        if Snapshots::owns(ino) {
            return self.snaps.readlink(ino);
        }
        self.fs.readlink(ino)
    }

    /// Value of an extended attribute.
    pub(crate) fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        if Snapshots::owns(ino) {
            return self.snaps.getxattr(ino, name);
        }
        self.fs.getxattr(ino, name)
    }

    /// Names of the extended attributes.
    pub(crate) fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        if Snapshots::owns(ino) {
            return self.snaps.listxattr(ino);
        }
        self.fs.listxattr(ino)
    }

    /// mkdir: a snapshot taken in `/.snapshots`, else the volume's.
    pub(crate) fn mkdir(&self, caller: Caller, parent: u64, name: &[u8]) -> Option<FsResult<Attr>> {
        Snapshots::owns(parent).then(|| self.snaps.mkdir(caller, parent, name))
    }

    /// rmdir: a snapshot deleted in `/.snapshots`, else the volume's.
    pub(crate) fn rmdir(&self, caller: Caller, parent: u64, name: &[u8]) -> Option<FsResult<()>> {
        Snapshots::owns(parent).then(|| self.snaps.rmdir(caller, parent, name))
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
