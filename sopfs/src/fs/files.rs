//! Files on the mounted host: handles, buffered writes, and their commit at
//! flush, fsync and close (one transaction per file).

use super::Fs;
use crate::error::{FsError, FsResult};
use crate::host::dirty::Dirty;
use crate::host::{claim_key, FileState, NewFile, PendingAttrs, Stale, CLAIM_TTL};
use crate::ns::content::{cut, read_into, Patcher};
use crate::ns::schema::*;
use crate::ns::{names, quota, Attr, Caller, NodeSpec};
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

    /// Creates and opens a regular file. With `O_EXCL`, where that pays
    /// (`Fs::defers_creates`), the create waits on this host for the
    /// file's first commit (flush, fsync or close), so a small file costs
    /// one commit (`host/creates.rs` states the rule when another host
    /// takes the name meanwhile); elsewhere it commits at once and a taken
    /// name fails with `EEXIST`. Without
    /// `O_EXCL`, a name another host created since the kernel's lookup is
    /// opened instead (the kernel asks for a create only when its lookup
    /// found nothing, and two hosts appending to one log file with
    /// `O_APPEND|O_CREAT` must both get it).
    pub fn create(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        perm: u32,
        flags: i32,
    ) -> FsResult<(Attr, u64)> {
        self.settle_name(parent, name);
        let excl = flags & libc::O_EXCL != 0;
        if excl && self.defers_creates() {
            return self.create_here(caller, parent, name, perm, flags);
        }
        match self.make_node(caller, parent, name, NodeSpec::new(Kind::File, perm)) {
            Ok(attr) => {
                // No close-to-open refresh: the file did not exist before this
                // commit, so no host can have changed it, and no kernel cache holds it.
                let fh = self.open_handle(attr.ino, flags)?;
                Ok((attr, fh))
            }
            // With `O_EXCL` a taken name fails, here or another host's.
            Err(FsError::Exists) if !excl => {
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

    /// True where keeping an `O_EXCL` create on this host until the file's
    /// first commit pays: a store where each commit is a round trip (S3:
    /// one per small file instead of two), or one process alone (no claim
    /// to make: one commit per file instead of two). On a local folder
    /// shared through Redis a commit costs about 100 us and the claim with
    /// its release two Redis round trips: creates there ran at half the
    /// rate (4,888 -> 2,540 empty files/s, `bench/ab.py --workload creates
    /// --redis`), so they commit at create.
    fn defers_creates(&self) -> bool {
        !self.db.is_shared() || self.db.store_is_remote()
    }

    /// An `O_EXCL` create kept on this host until the file's first commit:
    /// the name is checked against this host's view now and claimed for
    /// good by that commit.
    fn create_here(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        perm: u32,
        flags: i32,
    ) -> FsResult<(Attr, u64)> {
        self.writable()?;
        let mut tx = self.read_tx()?;
        let inode = names::new_node(
            &mut tx,
            caller,
            parent,
            name,
            NodeSpec::new(Kind::File, perm),
        )?;
        if entry(&mut tx, parent, name)?.is_some() {
            return Err(FsError::Exists);
        }
        drop(tx);
        let ino = new_ino();
        if !self.new_names.claim(parent, name, ino) {
            return Err(FsError::Exists);
        }
        // Another host creating the same name now: refused at once, as
        // here (one Redis round trip, no store request).
        let claim = (claim_key(parent, name), rand::random::<u128>());
        if !self.db.claim(claim.0, claim.1, CLAIM_TTL) {
            self.new_names.release(parent, name, ino);
            return Err(FsError::Exists);
        }
        {
            let state = self.files.state(ino);
            let mut st = state.lock();
            st.dirty = Some(Dirty::new(0));
            st.write_time = inode.mtime;
            st.new = Some(NewFile {
                parent,
                name: name.to_vec(),
                inode: inode.clone(),
                claim,
            });
        }
        let fh = self.next_fh();
        self.files.open(fh, ino, flags & libc::O_APPEND != 0);
        Ok((Attr { ino, inode }, fh))
    }

    /// The attributes of a file made here and not committed yet.
    pub(super) fn new_attr(&self, ino: u64) -> Option<Attr> {
        let state = self.files.get(ino)?;
        let mut inode = state.lock().new.as_ref()?.inode.clone();
        self.files.overlay(ino, &mut inode);
        Some(Attr { ino, inode })
    }

    /// Commits the create of `ino` if it still waits on this host, before
    /// an operation that the namespace must see it for. A create another
    /// host beat is given up here (the operation then meets that host's
    /// file) and reported at the writer's next flush, fsync or close.
    pub(super) fn settle(&self, ino: u64) {
        let Some(state) = self.files.get(ino) else {
            return;
        };
        let mut st = state.lock();
        if st.new.is_some() {
            if let Err(e) = self.commit_locked(ino, &mut st, false) {
                tracing::debug!(ino, error = %e, "a create waiting on this host could not commit");
                // Given up: the writer learns at its next flush, fsync or close.
                st.new_lost = st.new.is_none();
            }
        }
    }

    /// [`Self::settle`] for the file waiting under `parent/name`, if any.
    pub(super) fn settle_name(&self, parent: u64, name: &[u8]) {
        if let Some(ino) = self.new_names.get(parent, name) {
            self.settle(ino);
        }
    }

    /// [`Self::settle`] for every file waiting in directory `dir`.
    pub(super) fn settle_dir(&self, dir: u64) {
        for ino in self.new_names.in_dir(dir) {
            self.settle(ino);
        }
    }

    /// Reads up to `size` bytes at `offset`.
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let state = self.files.get(ino);
        let guard = state.as_ref().map(|s| s.lock());
        // A buffer holding nothing says nothing: the committed inode is
        // fresher (another host may have written since this one's commit).
        let new = guard.as_ref().is_some_and(|g| g.new.is_some());
        let dirty = guard
            .as_ref()
            .and_then(|g| g.dirty.as_ref())
            .filter(|d| new || !d.is_clean());
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
            // Past a quota's room the write fails now, not only at close
            // (which many programs never check).
            let growth = d
                .size
                .max(at + data.len() as u64)
                .saturating_sub(d.base_size);
            if growth > 0 {
                let home = st.new.as_ref().map(|n| n.parent);
                if let Some(room) = self.quota_room(ino, home)? {
                    if growth > room {
                        return Err(FsError::Quota);
                    }
                }
            }
            let Some(d) = st.dirty.as_mut() else {
                return Err(FsError::BadHandle);
            };
            d.write(at, data, append)?;
            let end = at + data.len() as u64;
            d.park_full_chunks(&self.db, self.parking, at, end)?;
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
            // A lost create is reported even with its buffer gone.
            let pending = !st.attrs.is_empty() || st.new.is_some();
            if st.new_lost || st.dirty.as_ref().is_some_and(|d| pending || !d.is_clean()) {
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

    /// Commits a file's buffer as one transaction, with the file's create
    /// when it was made here and not committed yet. Appends that raced
    /// with another host's land after its bytes; other writes land over
    /// the content as committed, whole.
    pub(super) fn commit_locked(&self, ino: u64, st: &mut FileState, sync: bool) -> FsResult<()> {
        if std::mem::take(&mut st.new_lost) {
            return Err(FsError::Exists);
        }
        let pending = st.attrs;
        let new = st.new.clone();
        let Some(dirty) = st.dirty.as_mut() else {
            return Ok(());
        };
        if dirty.is_clean() && pending.is_empty() && new.is_none() {
            return Ok(());
        }
        self.writable()?;
        let when = st.write_time;
        let body = |tx: &mut Transaction| -> FsResult<u64> {
            if let Some(n) = &new {
                names::insert_node(tx, self, n.parent, &n.name, Some(ino), &n.inode)?;
            }
            let mut inode = load(tx, ino)?;
            let was = inode.size;
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
            if inode.nlink > 0 && inode.kind == Kind::File {
                quota::charge(tx, quota::home(&inode), size as i64 - was as i64, 0)?;
            }
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
                if let Some(n) = st.new.take() {
                    self.new_names.release(n.parent, &n.name, ino);
                    self.db.release_claim(n.claim.0, n.claim.1);
                }
                Ok(())
            }
            Err(e @ (FsError::Exists | FsError::NotFound)) if new.is_some() => {
                // Another host made the name (or removed the directory)
                // first: this file never existed for anyone else.
                tracing::info!(ino, error = %e, "a file made here lost its name to another host; its writes are dropped");
                self.drop_uncommitted(ino, st);
                Err(e)
            }
            Err(e @ FsError::Quota) => {
                // What did not fit is dropped, like writes a full disk
                // refuses: the file stays as last committed (a file made
                // here, not at all), and the error reaches the close.
                tracing::info!(ino, "buffered writes dropped: a directory quota is full");
                self.drop_uncommitted(ino, st);
                Err(e)
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

    /// Forgets what this host buffered for `ino`, and its create if the
    /// file was made here and never committed.
    fn drop_uncommitted(&self, ino: u64, st: &mut FileState) {
        st.dirty = None;
        st.attrs = PendingAttrs::default();
        if let Some(n) = st.new.take() {
            self.new_names.release(n.parent, &n.name, ino);
            self.db.release_claim(n.claim.0, n.claim.1);
            self.invalidation
                .later([Stale::Entry(n.parent, n.name), Stale::Inode(ino)]);
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
