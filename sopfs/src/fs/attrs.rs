//! Attributes and extended attributes on the mounted host.

use super::{Fs, SetAttr};
use crate::error::{FsError, FsResult};
use crate::host::PendingAttrs;
use crate::ns::dirs::fold_stamps;
use crate::ns::schema::{load, store, Kind, Time, MAX_FILE_SIZE};
use crate::ns::Attr;

impl Fs {
    /// Changes attributes; a size change goes through the file's buffer.
    pub fn setattr(&self, ino: u64, set: &SetAttr) -> FsResult<Attr> {
        self.writable()?;
        if set.size.is_none() && self.defer_attrs(ino, set) {
            return self.getattr(ino);
        }
        // Buffered writes land first: times set now (tar, cp -p) must not be
        // overwritten by a later commit of older writes.
        self.flush(ino)?;
        if let Some(size) = set.size {
            if size > MAX_FILE_SIZE {
                return Err(FsError::TooBig);
            }
            let kind = self.getattr(ino)?.inode.kind;
            match kind {
                Kind::Dir => return Err(FsError::IsDir),
                Kind::File => {}
                _ => return Err(FsError::Invalid("truncate of a special file")),
            }
            let state = self.files.state(ino);
            let mut st = state.lock();
            self.ensure_dirty(ino, &mut st)?;
            if let Some(d) = st.dirty.as_mut() {
                d.truncate(size)?;
            }
            st.write_time = Time::now();
            self.commit_locked(ino, &mut st, false)?;
            drop(st);
            self.files.release_if_idle(ino, Some(state));
        }
        let only_size = set.mode.is_none()
            && set.uid.is_none()
            && set.gid.is_none()
            && set.atime.is_none()
            && set.mtime.is_none()
            && set.ctime.is_none();
        if !only_size {
            self.write_tx(|tx| {
                let mut i = load(tx, ino)?;
                if set.mtime.is_some() && i.kind == Kind::Dir {
                    fold_stamps(tx, ino, &mut i, true)?;
                }
                let mut change = PendingAttrs::default();
                change.absorb(set);
                change.apply(&mut i);
                store(tx, ino, &i)
            })?;
        }
        self.getattr(ino)
    }

    /// Keeps `set` for the commit of the file's buffered writes when the
    /// process asking is the one that wrote them and the file is still open:
    /// this host sees the change at once, other hosts see it with the
    /// content, at the close (close-to-open). Another process's change, or
    /// one to a file with nothing buffered, commits at once.
    fn defer_attrs(&self, ino: u64, set: &SetAttr) -> bool {
        let Some(by) = set.by else {
            return false;
        };
        let Some(state) = self.files.get(ino) else {
            return false;
        };
        let mut st = state.lock();
        let writing = st.opens > 0
            && st.writer == Some(by)
            && st.dirty.as_ref().is_some_and(|d| !d.is_clean());
        if writing {
            st.attrs.absorb(set);
        }
        writing
    }

    /// Value of an extended attribute.
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        if name.starts_with(b"system.posix_acl_") {
            return Err(FsError::NotSupported);
        }
        // A file made here and not committed has none yet (the kernel asks
        // for `security.capability` before each write: no commit for that).
        if self.new_attr(ino).is_some() {
            return Err(FsError::NoAttr);
        }
        let mut tx = self.read_tx()?;
        let i = load(&mut tx, ino)?;
        i.xattrs.get(name).cloned().ok_or(FsError::NoAttr)
    }

    /// Names of the extended attributes, each NUL-terminated.
    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        if self.new_attr(ino).is_some() {
            return Ok(Vec::new());
        }
        let mut tx = self.read_tx()?;
        let i = load(&mut tx, ino)?;
        let mut out = Vec::new();
        for k in i.xattrs.keys() {
            out.extend_from_slice(k);
            out.push(0);
        }
        Ok(out)
    }

    /// Sets an extended attribute (`XATTR_CREATE` / `XATTR_REPLACE` in `flags`).
    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
        self.settle(ino);
        if name.starts_with(b"system.posix_acl_") {
            // POSIX ACLs are not kept: refusing them makes cp -a, tar and
            // rsync fall back to chmod instead of storing an ACL that would
            // silently disagree with the mode bits.
            return Err(FsError::NotSupported);
        }
        if name.is_empty() || name.len() > 255 {
            return Err(FsError::Range);
        }
        if value.len() > 65536 {
            return Err(FsError::TooBig);
        }
        self.write_tx(|tx| {
            let mut i = load(tx, ino)?;
            let present = i.xattrs.contains_key(name);
            if flags & libc::XATTR_CREATE != 0 && present {
                return Err(FsError::Exists);
            }
            if flags & libc::XATTR_REPLACE != 0 && !present {
                return Err(FsError::NoAttr);
            }
            i.xattrs.insert(name.to_vec(), value.to_vec());
            i.ctime = Time::now();
            store(tx, ino, &i)
        })
    }

    /// Removes an extended attribute.
    pub fn removexattr(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        self.settle(ino);
        self.write_tx(|tx| {
            let mut i = load(tx, ino)?;
            if i.xattrs.remove(name).is_none() {
                return Err(FsError::NoAttr);
            }
            i.ctime = Time::now();
            store(tx, ino, &i)
        })
    }
}
