//! Files on the mounted host: handles, buffered writes, and their commit at
//! flush, fsync and close (one transaction per file).

use super::{Fs, PARK_FROM};
use crate::error::{FsError, FsResult};
use crate::host::dirty::Dirty;
use crate::host::{FileState, PendingAttrs};
use crate::ns::content::{cut, read_into, Patcher};
use crate::ns::schema::*;
use crate::ns::{Attr, Caller, NodeSpec};
use engine::Transaction;

impl Fs {
    pub(super) fn ensure_dirty(&self, ino: u64, st: &mut FileState) -> FsResult<()> {
        if st.dirty.is_none() {
            let mut tx = self.read_tx()?;
            let i = load(&mut tx, ino)?;
            st.dirty = Some(Dirty::new(i.size));
        }
        Ok(())
    }

    /// Opens a file; returns the handle.
    pub fn open(&self, ino: u64, flags: i32) -> FsResult<u64> {
        // Close-to-open: whatever another host committed before this open is
        // dropped from the kernel's caches before the open returns.
        self.refresh(true);
        self.open_handle(ino, flags)
    }

    fn open_handle(&self, ino: u64, flags: i32) -> FsResult<u64> {
        let acc = flags & libc::O_ACCMODE;
        if acc != libc::O_RDONLY {
            self.writable()?;
        }
        let kind = self.getattr(ino)?.inode.kind;
        if kind == Kind::Dir && acc != libc::O_RDONLY {
            return Err(FsError::IsDir);
        }
        let fh = self.next_fh();
        self.files.open(fh, ino, flags & libc::O_APPEND != 0);
        Ok(fh)
    }

    /// Creates and opens a regular file. Without `O_EXCL`, a name another
    /// host created since the kernel's lookup is opened instead (the kernel
    /// asks for a create only when its lookup found nothing, and two hosts
    /// appending to one log file with `O_APPEND|O_CREAT` must both get it).
    pub fn create(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        perm: u32,
        flags: i32,
    ) -> FsResult<(Attr, u64)> {
        match self.make_node(caller, parent, name, NodeSpec::new(Kind::File, perm)) {
            Ok(attr) => {
                // No close-to-open refresh: the file did not exist before this
                // commit, so no host can have changed it, and no kernel cache holds it.
                let fh = self.open_handle(attr.ino, flags)?;
                Ok((attr, fh))
            }
            Err(FsError::Exists) if flags & libc::O_EXCL == 0 => {
                let attr = self.lookup(parent, name)?;
                match attr.inode.kind {
                    Kind::Dir => return Err(FsError::IsDir),
                    Kind::File => {}
                    // A symlink or device: what the kernel's open would
                    // have refused or followed; not a file to create.
                    _ => return Err(FsError::Exists),
                }
                let fh = self.open(attr.ino, flags)?;
                if flags & libc::O_TRUNC != 0 {
                    self.setattr(
                        attr.ino,
                        &crate::ns::SetAttr {
                            size: Some(0),
                            ..Default::default()
                        },
                    )?;
                }
                Ok((self.getattr(attr.ino)?, fh))
            }
            Err(e) => Err(e),
        }
    }

    /// Reads up to `size` bytes at `offset`.
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let state = self.files.get(ino);
        let guard = state.as_ref().map(|s| s.lock());
        // A buffer holding nothing says nothing: the committed inode is
        // fresher (another host may have written since this one's commit).
        let dirty = guard
            .as_ref()
            .and_then(|g| g.dirty.as_ref())
            .filter(|d| !d.is_clean());
        let (file_size, committed_limit) = match dirty {
            Some(d) => (d.size, d.trunc.unwrap_or(u64::MAX).min(d.base_size)),
            None => {
                let mut tx = self.read_tx()?;
                let s = load(&mut tx, ino)?.size;
                (s, s)
            }
        };
        if offset >= file_size {
            return Ok(Vec::new());
        }
        let len = (file_size - offset).min(size as u64) as usize;
        let mut buf = vec![0u8; len];
        if offset < committed_limit {
            let n = ((committed_limit - offset) as usize).min(len);
            self.prefetch.note(ino, offset, n as u64, committed_limit);
            let read = self
                .read_tx()
                .and_then(|mut tx| read_into(&mut tx, ino, offset, &mut buf[..n]));
            if let Err(e) = read {
                if e.is_damage() {
                    tracing::error!(file = %self.path_of(ino), ino, offset, error = %e, "damaged data not served");
                }
                return Err(e);
            }
        }
        if let Some(d) = dirty {
            d.overlay(offset, &mut buf)?;
        }
        Ok(buf)
    }

    /// Buffers a write; returns the bytes taken.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        self.write_from(fh, offset, data, None)
    }

    /// `write` on behalf of process `pid` (see [`super::SetAttr::by`]).
    pub fn write_from(&self, fh: u64, offset: u64, data: &[u8], pid: Option<u32>) -> FsResult<u32> {
        self.writable()?;
        let (ino, append) = self.files.writing(fh)?;
        let state = self.files.state(ino);
        let mut st = state.lock();
        self.ensure_dirty(ino, &mut st)?;
        {
            let Some(d) = st.dirty.as_mut() else {
                return Err(FsError::BadHandle);
            };
            let at = if append { d.size } else { offset };
            if at.saturating_add(data.len() as u64) > MAX_FILE_SIZE {
                return Err(FsError::TooBig);
            }
            d.write(at, data, append)?;
            let end = at + data.len() as u64;
            d.park_full_chunks(&self.db, CHUNK, at, end, PARK_FROM)?;
            if d.bytes > self.opts.spill_bytes && !d.is_spilled() {
                d.spill_to(&self.opts.cache_dir)?;
                tracing::debug!(
                    ino,
                    bytes = d.bytes,
                    "write buffer moved to the cache folder"
                );
            }
        };
        st.write_time = Time::now();
        st.writer = pid;
        // A write after a utimens moves the times on again.
        st.attrs.mtime = None;
        st.attrs.ctime = None;
        Ok(data.len() as u32)
    }

    /// Commits what this host buffered for `ino` (flush, fsync, close).
    pub fn flush(&self, ino: u64) -> FsResult<()> {
        let Some(state) = self.files.get(ino) else {
            return Ok(());
        };
        let mut st = state.lock();
        self.commit_locked(ino, &mut st, false)
    }

    /// Commits at the close of one handle (FUSE flush). The buffer is shared
    /// by every handle of the file on this host, so a handle that did not
    /// write commits only when it is the last one open: otherwise its close
    /// would publish half of a write sequence still going on through another
    /// handle (a partial line that a foreign append then lands behind).
    pub fn flush_handle(&self, fh: u64) -> FsResult<()> {
        let Some((ino, wrote)) = self.files.take_wrote(fh) else {
            return Err(FsError::BadHandle);
        };
        let Some(state) = self.files.get(ino) else {
            return Ok(());
        };
        let mut st = state.lock();
        if wrote || st.opens <= 1 {
            self.commit_locked(ino, &mut st, false)?;
        }
        Ok(())
    }

    /// Makes the file's changes durable.
    pub fn fsync(&self, ino: u64) -> FsResult<()> {
        if let Some(state) = self.files.get(ino) {
            let mut st = state.lock();
            // Times or mode waiting for the file's writes are part of what
            // fsync makes durable, buffered data or not.
            let pending = !st.attrs.is_empty();
            if st.dirty.as_ref().is_some_and(|d| pending || !d.is_clean()) {
                return self.commit_locked(ino, &mut st, true);
            }
        }
        self.sync_store()
    }

    /// Makes every commit so far durable: a rename or an unlink before a
    /// directory's fsync, a file's commits before `fsync` of a clean file,
    /// everything before `syncfs`.
    pub fn sync_store(&self) -> FsResult<()> {
        self.db.sync().map_err(FsError::Engine)
    }

    /// Closes a handle; the last close of an unlinked file deletes it.
    pub fn release(&self, fh: u64) -> FsResult<()> {
        let Some((ino, wrote)) = self.files.close(fh) else {
            return Err(FsError::BadHandle);
        };
        let state = self.files.state(ino);
        let mut st = state.lock();
        // RELEASE is asynchronous: the same process may already be writing
        // through its next handle, whose half-done writes must not land now.
        let r = if wrote || st.opens <= 1 {
            self.commit_locked(ino, &mut st, false)
        } else {
            Ok(())
        };
        st.opens = st.opens.saturating_sub(1);
        drop(st);
        self.reap(ino)?;
        self.files.release_if_idle(ino, Some(state));
        r
    }

    /// Commits a file's buffer as one transaction. Appends that raced with
    /// another host's land after its bytes; other writes land over the
    /// content as committed, whole.
    pub(super) fn commit_locked(&self, ino: u64, st: &mut FileState, sync: bool) -> FsResult<()> {
        let pending = st.attrs;
        let Some(dirty) = st.dirty.as_mut() else {
            return Ok(());
        };
        if dirty.is_clean() && pending.is_empty() {
            return Ok(());
        }
        self.writable()?;
        let when = st.write_time;
        let body = |tx: &mut Transaction| -> FsResult<u64> {
            let mut inode = load(tx, ino)?;
            if dirty.append_only && inode.size != dirty.base_size {
                dirty.rebase(inode.size)?;
            }
            if let Some(t) = dirty.trunc {
                if t < inode.size {
                    cut(tx, ino, t)?;
                }
            }
            let mut patch = Patcher::new(ino);
            dirty.for_each_extent(CHUNK as usize, |start, bytes| patch.write(tx, start, bytes))?;
            patch.finish(tx)?;
            if let (Some(stash), parked) = dirty.parked() {
                for (start, value) in parked {
                    tx.put_stashed(CONTENT, &chunk_key(ino, start / CHUNK), stash, value)?;
                }
            }
            let size = if dirty.trunc.is_some() {
                dirty.size
            } else {
                inode.size.max(dirty.size)
            };
            inode.size = size;
            inode.mtime = when;
            inode.ctime = when;
            pending.apply(&mut inode);
            store(tx, ino, &inode)?;
            Ok(size)
        };
        let r = if sync {
            self.db.run_durable(body)
        } else {
            self.db.run_with(body)
        };
        match r {
            Ok(size) => {
                st.dirty = Some(Dirty::new(size));
                st.attrs = PendingAttrs::default();
                Ok(())
            }
            Err(FsError::NotFound) => {
                // Deleted by another host meanwhile: its unlink wins.
                tracing::info!(
                    ino,
                    "buffered writes dropped: the file was deleted elsewhere"
                );
                st.dirty = None;
                st.attrs = PendingAttrs::default();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Preallocates or punches: mode 0 extends the size, `FALLOC_FL_KEEP_SIZE`
    /// alone does nothing (there is nothing to reserve), `PUNCH_HOLE` zeroes.
    pub fn fallocate(&self, ino: u64, offset: u64, length: u64, mode: i32) -> FsResult<()> {
        self.writable()?;
        let end = offset.checked_add(length).ok_or(FsError::TooBig)?;
        if end > MAX_FILE_SIZE {
            return Err(FsError::TooBig);
        }
        let state = self.files.state(ino);
        let mut st = state.lock();
        self.ensure_dirty(ino, &mut st)?;
        let Some(d) = st.dirty.as_mut() else {
            return Err(FsError::BadHandle);
        };
        match mode {
            0 => {
                if end > d.size {
                    d.truncate(end)?;
                }
            }
            libc::FALLOC_FL_KEEP_SIZE => {}
            m if m == libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE => {
                let stop = end.min(d.size);
                if stop > offset {
                    let zeros = vec![0u8; (stop - offset).min(CHUNK) as usize];
                    let mut pos = offset;
                    while pos < stop {
                        let n = (stop - pos).min(zeros.len() as u64) as usize;
                        d.write(pos, &zeros[..n], false)?;
                        pos += n as u64;
                    }
                }
            }
            _ => return Err(FsError::NotSupported),
        }
        st.write_time = Time::now();
        self.commit_locked(ino, &mut st, false)
    }

    /// Commits every buffered file (before unmount).
    pub fn flush_all(&self) -> FsResult<()> {
        let mut first_err = None;
        for (ino, s) in self.files.all() {
            if let Err(e) = self.commit_locked(ino, &mut s.lock(), false) {
                tracing::error!(ino, error = %e, "could not commit buffered writes");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}
