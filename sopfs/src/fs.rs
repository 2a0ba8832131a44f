//! The filesystem core: POSIX operations as engine transactions. No FUSE
//! types here; `fuse.rs` is the thin edge, and tests call this directly.
//!
//! Lock order: the file-state map, then one file's state; a file's state is
//! held across its commit so writes and reads on this host see it whole.

use crate::dirty::Dirty;
use crate::error::{FsError, FsResult};
use crate::inode::*;
use engine::{Cursor, Db, Direction, Transaction, TreeConfig, TxMode};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Who is asking (from the FUSE request).
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    /// Effective user.
    pub uid: u32,
    /// Effective group.
    pub gid: u32,
}

/// An inode with the attributes a caller should see (directory stamps folded
/// in, buffered writes of this host counted).
#[derive(Clone, Debug)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Its attributes.
    pub inode: Inode,
}

/// What a new node is.
#[derive(Clone, Copy, Debug)]
pub struct NodeSpec<'a> {
    /// Its kind.
    pub kind: Kind,
    /// Permission bits (umask applied by the kernel).
    pub perm: u32,
    /// Device number (devices).
    pub rdev: u32,
    /// Symlink target.
    pub target: &'a [u8],
}

impl NodeSpec<'_> {
    /// A node of `kind` with `perm` and nothing else.
    pub fn new(kind: Kind, perm: u32) -> NodeSpec<'static> {
        NodeSpec {
            kind,
            perm,
            rdev: 0,
            target: b"",
        }
    }
}

/// Changes `setattr` asks for.
#[derive(Clone, Debug, Default)]
pub struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size.
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<Time>,
    /// New modification time.
    pub mtime: Option<Time>,
    /// New change time.
    pub ctime: Option<Time>,
    /// The process asking (the FUSE request's pid), when known: a process's
    /// changes to a file whose writes it has buffered ride with them.
    pub by: Option<u32>,
}

/// How a volume is served.
#[derive(Clone, Debug)]
pub struct FsOptions {
    /// This host's stamp id in directories (unique per mount).
    pub host: u64,
    /// Refuse every change.
    pub read_only: bool,
    /// Buffered bytes of one file kept in memory; beyond, they move to a
    /// spill file in `cache_dir` (the commit at close stays one transaction).
    pub spill_bytes: usize,
    /// The local cache folder for spill files.
    pub cache_dir: std::path::PathBuf,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            host: rand::random(),
            read_only: false,
            spill_bytes: 64 << 20,
            cache_dir: std::env::temp_dir(),
        }
    }
}

/// A kernel cache entry another host's commit made stale.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Stale {
    /// Attributes and pages of an inode.
    Inode(u64),
    /// A name in a directory.
    Entry(u64, Vec<u8>),
    /// Everything (the log moved too far to say what changed).
    All,
}

/// Receives what to drop from the kernel's caches.
pub type Invalidator = Arc<dyn Fn(&[Stale]) + Send + Sync>;

/// One directory entry as readdir returns it.
#[derive(Clone, Debug)]
pub struct DirEntry {
    /// Name.
    pub name: Vec<u8>,
    /// Inode number.
    pub ino: u64,
    /// Kind.
    pub kind: Kind,
}

#[derive(Default)]
struct FileState {
    opens: u32,
    dirty: Option<Dirty>,
    /// Last write time of the buffered changes.
    write_time: Time,
    /// The process whose write was buffered last, when known.
    writer: Option<u32>,
    /// Attribute changes that process made after its writes, committed
    /// with them (tar, cp -p and rsync set times, owner and mode between
    /// the last write and the close: one commit instead of four).
    attrs: PendingAttrs,
}

/// Attribute changes waiting for the commit of a file's buffered writes.
#[derive(Clone, Copy, Default)]
struct PendingAttrs {
    perm: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    atime: Option<Time>,
    mtime: Option<Time>,
    ctime: Option<Time>,
}

impl PendingAttrs {
    fn is_empty(&self) -> bool {
        self.perm.is_none()
            && self.uid.is_none()
            && self.gid.is_none()
            && self.atime.is_none()
            && self.mtime.is_none()
            && self.ctime.is_none()
    }

    /// Adds a later change (its values win).
    fn absorb(&mut self, set: &SetAttr) {
        self.perm = set.mode.map(|m| m & 0o7777).or(self.perm);
        self.uid = set.uid.or(self.uid);
        self.gid = set.gid.or(self.gid);
        self.atime = set.atime.or(self.atime);
        self.mtime = set.mtime.or(self.mtime);
        self.ctime = Some(set.ctime.unwrap_or_else(Time::now));
    }

    fn apply(&self, i: &mut Inode) {
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

struct Handle {
    ino: u64,
    append: bool,
    /// Wrote through this handle since its last flush: its close must commit.
    wrote: bool,
}

/// Buffered bytes past which a file's completely written chunks go to the
/// store at once (parked) instead of at its commit: a file written in big
/// sequential pieces is in the store by the time it is closed.
const PARK_FROM: usize = 1 << 20;

/// Directory tree shape: modest nodes, entries inline.
pub(crate) const DIR_TREE: TreeConfig = TreeConfig {
    slots: 64,
    inline_max: 512,
};
const INODE_TREE: TreeConfig = TreeConfig {
    slots: 64,
    inline_max: 1024,
};
const CONTENT_TREE: TreeConfig = TreeConfig {
    slots: 64,
    inline_max: 256,
};

/// A mounted (or directly driven) volume.
pub struct Fs {
    db: Db,
    opts: FsOptions,
    prefetch: crate::prefetch::Prefetcher,
    files: Mutex<HashMap<u64, Arc<Mutex<FileState>>>>,
    handles: Mutex<HashMap<u64, Handle>>,
    /// Kernel references per inode (lookup counts): an unlinked inode the
    /// kernel still knows lives on until it forgets it.
    lookups: Mutex<HashMap<u64, u64>>,
    /// Unlinked inodes kept alive for the kernel or open handles.
    orphans: Mutex<std::collections::HashSet<u64>>,
    /// Orphans the kernel has just forgotten, for the reaper to delete
    /// together (one commit for many, not one per FORGET).
    reap_queue: Mutex<Vec<u64>>,
    dirs: Mutex<HashMap<u64, Vec<DirEntry>>>,
    next_fh: AtomicU64,
    /// Newest commit whose changes were pushed to the kernel's caches.
    seen: Mutex<u64>,
    /// Stale names found from inside a handler, for the periodic caller.
    deferred: Mutex<Vec<Stale>>,
    invalidator: Mutex<Option<Invalidator>>,
}

pub(crate) fn check_name(name: &[u8]) -> FsResult<()> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(FsError::Invalid("bad name"));
    }
    Ok(())
}

fn collect_stale(tree: &str, keys: &[Vec<u8>], out: &mut std::collections::HashSet<Stale>) {
    let ino_of =
        |k: &[u8]| -> Option<u64> { Some(u64::from_be_bytes(k.get(..8)?.try_into().ok()?)) };
    if tree == INODES || tree == CONTENT {
        out.extend(keys.iter().filter_map(|k| ino_of(k)).map(Stale::Inode));
    } else if let Some(dir) = tree
        .strip_prefix('d')
        .and_then(|h| u64::from_str_radix(h, 16).ok())
    {
        out.insert(Stale::Inode(dir));
        for k in keys.iter().filter(|k| !k.starts_with(b"\0")) {
            out.insert(Stale::Entry(dir, k.clone()));
        }
    }
}

fn new_ino() -> u64 {
    loop {
        let i = rand::random::<u64>() >> 1;
        if i > ROOT_INO {
            return i;
        }
    }
}

impl Fs {
    /// Serves `db`, creating the root directory on first use.
    pub fn new(db: Db, opts: FsOptions) -> FsResult<Fs> {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        db.run_with(|tx| -> FsResult<()> {
            tx.ensure_tree(INODES, INODE_TREE)?;
            tx.ensure_tree(CONTENT, CONTENT_TREE)?;
            tx.ensure_tree(&dir_tree(ROOT_INO), DIR_TREE)?;
            if tx.get(INODES, &ino_key(ROOT_INO))?.is_none() {
                let mut root = Inode::new(Kind::Dir, 0o755, uid, gid);
                root.parent = ROOT_INO;
                tx.insert(INODES, &ino_key(ROOT_INO), &root.encode())?;
            }
            Ok(())
        })?;
        Ok(Fs {
            prefetch: crate::prefetch::Prefetcher::start(db.reader()),
            db,
            opts,
            files: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            lookups: Mutex::new(HashMap::new()),
            orphans: Mutex::new(std::collections::HashSet::new()),
            reap_queue: Mutex::new(Vec::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            seen: Mutex::new(0),
            deferred: Mutex::new(Vec::new()),
            invalidator: Mutex::new(None),
        })
    }

    /// Sets where stale cache entries are reported (the FUSE notifier).
    pub fn set_invalidator(&self, f: Invalidator) {
        *self.seen.lock() = self.db.seq();
        *self.invalidator.lock() = Some(f);
    }

    /// Reports what other hosts changed since the last call to the
    /// invalidator: inodes at once, names from the periodic caller only
    /// (`from_handler` false). An open calls it (close-to-open).
    pub fn refresh(&self, from_handler: bool) {
        if !self.db.is_shared() {
            return;
        }
        let Some(inval) = self.invalidator.lock().clone() else {
            return;
        };
        // Held until the inodes found are delivered, so an open that finds
        // nothing new can trust that what was found before has reached the kernel.
        let mut seen = self.seen.lock();
        let stale = match self.db.foreign_commits_since(*seen) {
            Ok((seq, records)) => {
                *seen = seq;
                let mut out = std::collections::HashSet::new();
                for r in &records {
                    for w in &r.writes {
                        collect_stale(&w.tree, &w.keys, &mut out);
                    }
                    for t in &r.replaced_trees {
                        if let Some(d) = t
                            .strip_prefix('d')
                            .and_then(|h| u64::from_str_radix(h, 16).ok())
                        {
                            out.insert(Stale::Inode(d));
                        }
                    }
                }
                out.into_iter().collect::<Vec<_>>()
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell what changed: dropping all cached entries");
                *seen = self.db.seq();
                vec![Stale::All]
            }
        };
        let (inodes, names): (Vec<Stale>, Vec<Stale>) = stale
            .into_iter()
            .partition(|s| matches!(s, Stale::Inode(_)));
        if !inodes.is_empty() {
            inval(&inodes);
        }
        drop(seen);
        // Names wait for the periodic caller: dropping one takes the
        // directory's lock, which the process a handler serves may hold.
        let mut deferred = self.deferred.lock();
        deferred.extend(names);
        if from_handler {
            return;
        }
        let all = std::mem::take(&mut *deferred);
        drop(deferred);
        if !all.is_empty() {
            inval(&all);
        }
    }

    /// How this filesystem is served.
    pub fn options(&self) -> &FsOptions {
        &self.opts
    }

    /// The engine under this filesystem.
    pub fn db(&self) -> &Db {
        &self.db
    }

    fn writable(&self) -> FsResult<()> {
        if self.opts.read_only {
            return Err(FsError::ReadOnly);
        }
        Ok(())
    }

    /// Runs a read-write transaction, retrying conflicts (the `*_in` methods run inside one).
    pub fn write_tx<T>(&self, f: impl FnMut(&mut Transaction) -> FsResult<T>) -> FsResult<T> {
        self.writable()?;
        self.db.run_with(f)
    }

    fn read_tx(&self) -> FsResult<Transaction> {
        Ok(self.db.begin(TxMode::ReadOnly)?)
    }

    // ----- records -----

    pub(crate) fn load(tx: &mut Transaction, ino: u64) -> FsResult<Inode> {
        let bytes = tx.get(INODES, &ino_key(ino))?.ok_or(FsError::NotFound)?;
        Inode::decode(&bytes).ok_or_else(|| FsError::Corrupted(format!("inode {ino:#x}")))
    }

    pub(crate) fn store(tx: &mut Transaction, ino: u64, inode: &Inode) -> FsResult<()> {
        tx.upsert(INODES, &ino_key(ino), &inode.encode())?;
        Ok(())
    }

    fn load_dir(tx: &mut Transaction, ino: u64) -> FsResult<Inode> {
        let d = Self::load(tx, ino)?;
        if d.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        Ok(d)
    }

    fn entry(tx: &mut Transaction, dir: u64, name: &[u8]) -> FsResult<Option<Entry>> {
        match tx.get(&dir_tree(dir), name)? {
            None => Ok(None),
            Some(b) => Entry::decode(&b)
                .map(Some)
                .ok_or_else(|| FsError::Corrupted(format!("entry in {dir:#x}"))),
        }
    }

    /// Records an entry change in `dir` under this host's own stamp.
    fn touch_dir(&self, tx: &mut Transaction, dir: u64, subdirs: i64) -> FsResult<()> {
        let key = stamp_key(self.opts.host);
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

    /// Every host's stamps of a directory, folded into what `stat` shows.
    fn fold_view(tx: &mut Transaction, ino: u64, d: &mut Inode) -> FsResult<()> {
        let mut cur = Cursor::prefix(STAMP_PREFIX, Direction::Forward);
        let tree = dir_tree(ino);
        loop {
            let batch = tx.scan(&tree, &mut cur, 256)?;
            for (_, v) in batch {
                if let Some(st) = DirStamp::decode(&v) {
                    d.mtime = d.mtime.max(st.mtime);
                    d.ctime = d.ctime.max(st.mtime);
                    d.nlink = (d.nlink as i64 + st.subdirs).max(2) as u32;
                }
            }
            if cur.is_done() {
                return Ok(());
            }
        }
    }

    /// Moves every stamp into the inode itself (before times are set explicitly).
    fn fold_into_inode(tx: &mut Transaction, ino: u64, d: &mut Inode) -> FsResult<()> {
        let mut cur = Cursor::prefix(STAMP_PREFIX, Direction::Forward);
        let tree = dir_tree(ino);
        let mut keys = Vec::new();
        loop {
            for (k, v) in tx.scan(&tree, &mut cur, 256)? {
                if let Some(st) = DirStamp::decode(&v) {
                    d.nlink = (d.nlink as i64 + st.subdirs).max(2) as u32;
                    d.ctime = d.ctime.max(st.mtime);
                    d.mtime = d.mtime.max(st.mtime);
                }
                keys.push(k);
            }
            if cur.is_done() {
                break;
            }
        }
        for k in keys {
            tx.remove(&tree, &k)?;
        }
        Ok(())
    }

    fn view(&self, tx: &mut Transaction, ino: u64) -> FsResult<Attr> {
        let mut inode = Self::load(tx, ino)?;
        if inode.kind == Kind::Dir {
            Self::fold_view(tx, ino, &mut inode)?;
        }
        let state = self.files.lock().get(&ino).cloned();
        if let Some(state) = state {
            let st = state.lock();
            if let Some(d) = st.dirty.as_ref().filter(|d| !d.is_clean()) {
                inode.size = d.size;
                inode.mtime = st.write_time;
                inode.ctime = st.write_time;
            }
            st.attrs.apply(&mut inode);
        }
        Ok(Attr { ino, inode })
    }

    // ----- lookups -----

    /// Looks a name up in a directory.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        if name.len() > NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        let mut tx = self.read_tx()?;
        Self::load_dir(&mut tx, parent)?;
        let e = match Self::entry(&mut tx, parent, name)? {
            Some(e) => e,
            // "No such name" must not be older than another host's create
            // that returned before this lookup (close-to-open for new
            // names): the pushed stamp may still be on its way, so ask.
            None if !self.db.begin_is_fresh() => {
                tx = self.db.begin_fresh()?;
                Self::entry(&mut tx, parent, name)?.ok_or(FsError::NotFound)?
            }
            None => return Err(FsError::NotFound),
        };
        self.view(&mut tx, e.ino)
    }

    /// Attributes of an inode.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let mut tx = self.read_tx()?;
        self.view(&mut tx, ino)
    }

    /// `getattr` for the kernel: a file whose last name is gone is only
    /// there for what holds it on this host (an open handle, or an unlink
    /// made here while it was in use). A name another host removed, or one
    /// whose deletion is still queued, answers `ENOENT` as the deleted file
    /// it is.
    pub fn getattr_live(&self, ino: u64) -> FsResult<Attr> {
        let a = self.getattr(ino)?;
        if a.inode.nlink == 0 && a.inode.kind != Kind::Dir && !self.held_here(ino) {
            return Err(FsError::NotFound);
        }
        Ok(a)
    }

    fn held_here(&self, ino: u64) -> bool {
        self.orphans.lock().contains(&ino)
            || self
                .files
                .lock()
                .get(&ino)
                .is_some_and(|s| s.lock().opens > 0)
    }

    /// A symlink's target.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let mut tx = self.read_tx()?;
        let i = Self::load(&mut tx, ino)?;
        if i.kind != Kind::Symlink {
            return Err(FsError::Invalid("not a symlink"));
        }
        Ok(i.target)
    }

    // ----- creating names -----

    /// Creates a node of any kind (files, directories, symlinks, devices).
    pub fn make_node(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        spec: NodeSpec<'_>,
    ) -> FsResult<Attr> {
        self.write_tx(|tx| self.make_node_in(tx, caller, parent, name, spec))
    }

    /// `make_node` inside a caller's transaction (macros).
    pub fn make_node_in(
        &self,
        tx: &mut Transaction,
        caller: Caller,
        parent: u64,
        name: &[u8],
        spec: NodeSpec<'_>,
    ) -> FsResult<Attr> {
        let NodeSpec {
            kind,
            perm,
            rdev,
            target,
        } = spec;
        check_name(name)?;
        if kind == Kind::Symlink && target.len() > 4095 {
            return Err(FsError::NameTooLong);
        }
        let p = Self::load_dir(tx, parent)?;
        if p.nlink == 0 {
            return Err(FsError::NotFound);
        }
        let mut perm = perm & 0o7777;
        let mut gid = caller.gid;
        if p.perm & libc::S_ISGID != 0 {
            gid = p.gid;
            if kind == Kind::Dir {
                perm |= libc::S_ISGID;
            }
        }
        let mut inode = Inode::new(kind, perm, caller.uid, gid);
        inode.rdev = rdev;
        if kind == Kind::Symlink {
            inode.target = target.to_vec();
            inode.size = target.len() as u64;
            inode.perm = 0o777;
        }
        // Each insert checks its key is absent (a read validated at commit):
        // no separate lookups first.
        let mut ino = new_ino();
        if kind == Kind::Dir {
            inode.parent = parent;
        }
        let encoded = inode.encode();
        loop {
            match tx.insert(INODES, &ino_key(ino), &encoded) {
                Err(engine::Error::KeyExists) => ino = new_ino(),
                r => break r?,
            }
        }
        match tx.insert(&dir_tree(parent), name, &Entry { ino, kind }.encode()) {
            Err(engine::Error::KeyExists) => return Err(FsError::Exists),
            r => r?,
        }
        if kind == Kind::Dir {
            tx.create_tree(&dir_tree(ino), DIR_TREE)?;
        }
        self.touch_dir(tx, parent, (kind == Kind::Dir) as i64)?;
        Ok(Attr { ino, inode })
    }

    /// A new hard link `newparent/newname` to `ino`.
    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> FsResult<Attr> {
        check_name(newname)?;
        self.write_tx(|tx| {
            let mut inode = Self::load(tx, ino)?;
            if inode.kind == Kind::Dir {
                return Err(FsError::NotPermitted);
            }
            let p = Self::load_dir(tx, newparent)?;
            if p.nlink == 0 {
                return Err(FsError::NotFound);
            }
            if Self::entry(tx, newparent, newname)?.is_some() {
                return Err(FsError::Exists);
            }
            inode.nlink += 1;
            inode.ctime = Time::now();
            Self::store(tx, ino, &inode)?;
            let e = Entry {
                ino,
                kind: inode.kind,
            };
            tx.insert(&dir_tree(newparent), newname, &e.encode())?;
            self.touch_dir(tx, newparent, 0)?;
            Ok(Attr { ino, inode })
        })
    }

    // ----- removing names -----

    /// Drops one link of a non-directory; deletes it with its content at the
    /// last link unless it is open on this host.
    fn drop_link(&self, tx: &mut Transaction, ino: u64) -> FsResult<()> {
        let mut inode = Self::load(tx, ino)?;
        inode.nlink = inode.nlink.saturating_sub(1);
        inode.ctime = Time::now();
        if inode.nlink > 0 || self.in_use(ino) {
            Self::store(tx, ino, &inode)
        } else {
            Self::delete_inode(tx, ino)
        }
    }

    fn delete_inode(tx: &mut Transaction, ino: u64) -> FsResult<()> {
        tx.remove(INODES, &ino_key(ino))?;
        Self::cut_content(tx, ino, 0)
    }

    /// Removes the content of `ino` at and beyond byte `from`.
    fn cut_content(tx: &mut Transaction, ino: u64, from: u64) -> FsResult<()> {
        let first = from.div_ceil(CHUNK);
        let mut cur = Cursor::new(
            chunk_key(ino, first).to_vec()..chunk_key(ino + 1, 0).to_vec(),
            Direction::Forward,
        );
        loop {
            let batch = tx.scan_values(CONTENT, &mut cur, 512)?;
            for (k, _) in batch {
                tx.remove(CONTENT, &k)?;
            }
            if cur.is_done() {
                break;
            }
        }
        if !from.is_multiple_of(CHUNK) {
            let key = chunk_key(ino, from / CHUNK);
            if let Some(mut data) = tx.get(CONTENT, &key)? {
                let keep = (from % CHUNK) as usize;
                if data.len() > keep {
                    data.truncate(keep);
                    tx.upsert(CONTENT, &key, &data)?;
                }
            }
        }
        Ok(())
    }

    /// Removes a non-directory name.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        if name.len() > NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        let ino = self.write_tx(|tx| self.unlink_in(tx, parent, name))?;
        self.mark_orphan_if_open(ino);
        Ok(())
    }

    /// `unlink` inside a caller's transaction (macros).
    pub fn unlink_in(&self, tx: &mut Transaction, parent: u64, name: &[u8]) -> FsResult<u64> {
        Self::load_dir(tx, parent)?;
        let e = Self::entry(tx, parent, name)?.ok_or(FsError::NotFound)?;
        if e.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        tx.remove(&dir_tree(parent), name)?;
        self.drop_link(tx, e.ino)?;
        self.touch_dir(tx, parent, 0)?;
        Ok(e.ino)
    }

    /// True while the kernel or an open handle still refers to `ino`.
    fn in_use(&self, ino: u64) -> bool {
        self.lookups.lock().get(&ino).is_some_and(|&n| n > 0)
            || self
                .files
                .lock()
                .get(&ino)
                .is_some_and(|s| s.lock().opens > 0)
    }

    fn mark_orphan_if_open(&self, ino: u64) {
        if self.in_use(ino) {
            // Whether the last link went is decided when it is no longer in use.
            self.orphans.lock().insert(ino);
        }
    }

    /// Deletes an orphan once nothing here refers to it any more.
    fn reap(&self, ino: u64) -> FsResult<()> {
        if self.in_use(ino) || !self.orphans.lock().remove(&ino) {
            return Ok(());
        }
        if let Some(s) = self.files.lock().get(&ino) {
            s.lock().dirty = None;
        }
        self.write_tx(|tx| match Self::load(tx, ino) {
            Ok(i) if i.nlink == 0 => Self::delete_inode(tx, ino),
            Ok(_) | Err(FsError::NotFound) => Ok(()),
            Err(e) => Err(e),
        })?;
        self.release_state_if_idle(ino, None);
        Ok(())
    }

    /// The kernel took one more reference to `ino` (an entry reply).
    pub fn remember(&self, ino: u64) {
        *self.lookups.lock().entry(ino).or_insert(0) += 1;
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        {
            let mut l = self.lookups.lock();
            match l.get_mut(&ino) {
                Some(c) if *c > n => {
                    *c -= n;
                    return;
                }
                Some(_) => {
                    l.remove(&ino);
                }
                // Out of order or after a restart: nothing to count down.
                None => return,
            }
        }
        if self.orphans.lock().contains(&ino) {
            // Collected by the reaper's next round, with its neighbours.
            self.reap_queue.lock().push(ino);
        }
    }

    /// Deletes the orphans forgotten since the last call, in one commit.
    /// The reaper thread calls it every few milliseconds.
    pub fn reap_forgotten(&self) {
        let queued = std::mem::take(&mut *self.reap_queue.lock());
        let idle: Vec<u64> = queued.into_iter().filter(|&i| !self.in_use(i)).collect();
        let due: Vec<u64> = {
            let mut orphans = self.orphans.lock();
            idle.into_iter().filter(|i| orphans.remove(i)).collect()
        };
        if due.is_empty() {
            return;
        }
        for ino in &due {
            if let Some(s) = self.files.lock().get(ino) {
                s.lock().dirty = None;
            }
        }
        let done = self.write_tx(|tx| {
            for &ino in &due {
                match Self::load(tx, ino) {
                    Ok(i) if i.nlink == 0 => Self::delete_inode(tx, ino)?,
                    Ok(_) | Err(FsError::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
        match done {
            Ok(()) => {
                for ino in due {
                    self.release_state_if_idle(ino, None);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, count = due.len(), "could not delete unlinked files; retrying at unmount");
                self.orphans.lock().extend(due);
            }
        }
    }

    /// Deletes every orphan (at unmount: the kernel forgets everything).
    pub fn reap_all(&self) {
        self.lookups.lock().clear();
        let all: Vec<u64> = self.orphans.lock().iter().copied().collect();
        for ino in all {
            if let Err(e) = self.reap(ino) {
                tracing::warn!(ino, error = %e, "could not delete an unlinked file");
            }
        }
    }

    fn dir_is_empty(tx: &mut Transaction, ino: u64) -> FsResult<bool> {
        let mut cur = Cursor::new(vec![1u8].., Direction::Forward);
        Ok(tx.scan_values(&dir_tree(ino), &mut cur, 1)?.is_empty())
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        if name.len() > NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        if name == b"." {
            return Err(FsError::Invalid("rmdir of ."));
        }
        if name == b".." {
            return Err(FsError::NotEmpty);
        }
        self.write_tx(|tx| self.rmdir_in(tx, parent, name))
    }

    /// `rmdir` inside a caller's transaction (macros).
    pub fn rmdir_in(&self, tx: &mut Transaction, parent: u64, name: &[u8]) -> FsResult<()> {
        Self::load_dir(tx, parent)?;
        let e = Self::entry(tx, parent, name)?.ok_or(FsError::NotFound)?;
        if e.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        if !Self::dir_is_empty(tx, e.ino)? {
            return Err(FsError::NotEmpty);
        }
        tx.remove(&dir_tree(parent), name)?;
        tx.drop_tree(&dir_tree(e.ino))?;
        tx.remove(INODES, &ino_key(e.ino))?;
        self.touch_dir(tx, parent, -1)?;
        Ok(())
    }

    /// True when `dir` is `ancestor` or lies below it.
    fn is_under(tx: &mut Transaction, mut dir: u64, ancestor: u64) -> FsResult<bool> {
        for _ in 0..4096 {
            if dir == ancestor {
                return Ok(true);
            }
            if dir == ROOT_INO {
                return Ok(false);
            }
            dir = Self::load(tx, dir)?.parent;
        }
        Err(FsError::Corrupted(
            "directory chain longer than 4096".into(),
        ))
    }

    /// Renames; `flags` takes `RENAME_NOREPLACE` and `RENAME_EXCHANGE`.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        let replaced =
            self.write_tx(|tx| self.rename_in(tx, parent, name, newparent, newname, flags))?;
        if let Some(ino) = replaced {
            self.mark_orphan_if_open(ino);
        }
        Ok(())
    }

    /// `rename` inside a caller's transaction (macros).
    pub fn rename_in(
        &self,
        tx: &mut Transaction,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> FsResult<Option<u64>> {
        check_name(newname)?;
        if name.len() > NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 || (noreplace && exchange)
        {
            return Err(FsError::Invalid("rename flags"));
        }
        Self::load_dir(tx, parent)?;
        let np = Self::load_dir(tx, newparent)?;
        if np.nlink == 0 {
            return Err(FsError::NotFound);
        }
        let src = Self::entry(tx, parent, name)?.ok_or(FsError::NotFound)?;
        let dst = Self::entry(tx, newparent, newname)?;
        let now = Time::now();
        // A directory may not move below itself; the ancestor chain read
        // here is validated at commit, so crossing moves cannot loop.
        let check_move = |tx: &mut Transaction, e: &Entry, to: u64| -> FsResult<()> {
            if e.kind == Kind::Dir && Self::is_under(tx, to, e.ino)? {
                return Err(FsError::Invalid("directory moved below itself"));
            }
            Ok(())
        };
        if exchange {
            let dst = dst.ok_or(FsError::NotFound)?;
            if parent != newparent {
                check_move(tx, &src, newparent)?;
                check_move(tx, &dst, parent)?;
            }
            tx.upsert(&dir_tree(parent), name, &dst.encode())?;
            tx.upsert(&dir_tree(newparent), newname, &src.encode())?;
            for (e, to) in [(src, newparent), (dst, parent)] {
                let mut i = Self::load(tx, e.ino)?;
                i.ctime = now;
                if e.kind == Kind::Dir {
                    i.parent = to;
                }
                Self::store(tx, e.ino, &i)?;
            }
            let moved = (src.kind == Kind::Dir) as i64 - (dst.kind == Kind::Dir) as i64;
            self.touch_dir(tx, parent, -moved)?;
            if parent != newparent {
                self.touch_dir(tx, newparent, moved)?;
            }
            return Ok(None);
        }
        let mut replaced = None;
        if let Some(dst) = dst {
            if noreplace {
                return Err(FsError::Exists);
            }
            if dst.ino == src.ino {
                // Two links of one file: POSIX says do nothing.
                return Ok(None);
            }
            match (src.kind == Kind::Dir, dst.kind == Kind::Dir) {
                (true, false) => return Err(FsError::NotDir),
                (false, true) => return Err(FsError::IsDir),
                (true, true) => {
                    if !Self::dir_is_empty(tx, dst.ino)? {
                        return Err(FsError::NotEmpty);
                    }
                }
                (false, false) => {}
            }
            if src.kind == Kind::Dir {
                check_move(tx, &src, newparent)?;
                tx.drop_tree(&dir_tree(dst.ino))?;
                tx.remove(INODES, &ino_key(dst.ino))?;
                self.touch_dir(tx, newparent, -1)?;
            } else {
                self.drop_link(tx, dst.ino)?;
                replaced = Some(dst.ino);
            }
        } else if parent != newparent {
            check_move(tx, &src, newparent)?;
        }
        tx.remove(&dir_tree(parent), name)?;
        tx.upsert(&dir_tree(newparent), newname, &src.encode())?;
        let mut i = Self::load(tx, src.ino)?;
        i.ctime = now;
        if src.kind == Kind::Dir {
            i.parent = newparent;
        }
        Self::store(tx, src.ino, &i)?;
        let d = (src.kind == Kind::Dir && parent != newparent) as i64;
        self.touch_dir(tx, parent, -d)?;
        self.touch_dir(tx, newparent, d)?;
        Ok(replaced)
    }

    // ----- attributes -----

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
            let state = self.state(ino);
            let mut st = state.lock();
            self.ensure_dirty(ino, &mut st)?;
            if let Some(d) = st.dirty.as_mut() {
                d.truncate(size)?;
            }
            st.write_time = Time::now();
            self.commit_locked(ino, &mut st, false)?;
            drop(st);
            self.release_state_if_idle(ino, Some(state));
        }
        let only_size = set.mode.is_none()
            && set.uid.is_none()
            && set.gid.is_none()
            && set.atime.is_none()
            && set.mtime.is_none()
            && set.ctime.is_none();
        if !only_size {
            self.write_tx(|tx| {
                let mut i = Self::load(tx, ino)?;
                if set.mtime.is_some() && i.kind == Kind::Dir {
                    Self::fold_into_inode(tx, ino, &mut i)?;
                }
                let mut change = PendingAttrs::default();
                change.absorb(set);
                change.apply(&mut i);
                Self::store(tx, ino, &i)
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
        let Some(state) = self.files.lock().get(&ino).cloned() else {
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
        let mut tx = self.read_tx()?;
        let i = Self::load(&mut tx, ino)?;
        i.xattrs.get(name).cloned().ok_or(FsError::NoAttr)
    }

    /// Names of the extended attributes, each NUL-terminated.
    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        let mut tx = self.read_tx()?;
        let i = Self::load(&mut tx, ino)?;
        let mut out = Vec::new();
        for k in i.xattrs.keys() {
            out.extend_from_slice(k);
            out.push(0);
        }
        Ok(out)
    }

    /// Sets an extended attribute (`XATTR_CREATE` / `XATTR_REPLACE` in `flags`).
    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
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
            let mut i = Self::load(tx, ino)?;
            let present = i.xattrs.contains_key(name);
            if flags & libc::XATTR_CREATE != 0 && present {
                return Err(FsError::Exists);
            }
            if flags & libc::XATTR_REPLACE != 0 && !present {
                return Err(FsError::NoAttr);
            }
            i.xattrs.insert(name.to_vec(), value.to_vec());
            i.ctime = Time::now();
            Self::store(tx, ino, &i)
        })
    }

    /// Removes an extended attribute.
    pub fn removexattr(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        self.write_tx(|tx| {
            let mut i = Self::load(tx, ino)?;
            if i.xattrs.remove(name).is_none() {
                return Err(FsError::NoAttr);
            }
            i.ctime = Time::now();
            Self::store(tx, ino, &i)
        })
    }

    // ----- directories -----

    /// Opens a directory: its listing is taken now, so offsets stay stable
    /// while entries change.
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let mut tx = self.read_tx()?;
        let d = Self::load_dir(&mut tx, ino)?;
        let mut list = vec![
            DirEntry {
                name: b".".to_vec(),
                ino,
                kind: Kind::Dir,
            },
            DirEntry {
                name: b"..".to_vec(),
                ino: d.parent.max(ROOT_INO),
                kind: Kind::Dir,
            },
        ];
        let mut cur = Cursor::new(vec![1u8].., Direction::Forward);
        loop {
            for (k, v) in tx.scan(&dir_tree(ino), &mut cur, 1024)? {
                if let Some(e) = Entry::decode(&v) {
                    list.push(DirEntry {
                        name: k,
                        ino: e.ino,
                        kind: e.kind,
                    });
                }
            }
            if cur.is_done() {
                break;
            }
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs.lock().insert(fh, list);
        Ok(fh)
    }

    /// Entries of an open directory from `offset` on; an entry's offset for
    /// the next call is its index + 1. `add` returns true when the buffer is full.
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&DirEntry, u64) -> bool,
    ) -> FsResult<()> {
        let dirs = self.dirs.lock();
        let list = dirs.get(&fh).ok_or(FsError::BadHandle)?;
        for (i, e) in list.iter().enumerate().skip(offset as usize) {
            if add(e, i as u64 + 1) {
                break;
            }
        }
        Ok(())
    }

    /// Like `readdir`, with each entry's attributes (an entry whose inode went
    /// away since `opendir` is left out). "." and ".." come without them.
    pub fn readdir_plus(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&DirEntry, Option<&Attr>, u64) -> bool,
    ) -> FsResult<()> {
        let batch: Vec<(usize, DirEntry)> = {
            let dirs = self.dirs.lock();
            let list = dirs.get(&fh).ok_or(FsError::BadHandle)?;
            list.iter()
                .enumerate()
                .skip(offset as usize)
                .take(256)
                .map(|(i, e)| (i, e.clone()))
                .collect()
        };
        let mut tx = self.read_tx()?;
        for (i, e) in batch {
            let next = i as u64 + 1;
            if e.name == b"." || e.name == b".." {
                if add(&e, None, next) {
                    return Ok(());
                }
                continue;
            }
            match self.view(&mut tx, e.ino) {
                Ok(a) => {
                    if add(&e, Some(&a), next) {
                        return Ok(());
                    }
                }
                Err(FsError::NotFound) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Closes an open directory.
    pub fn releasedir(&self, fh: u64) {
        self.dirs.lock().remove(&fh);
    }

    // ----- files -----

    fn state(&self, ino: u64) -> Arc<Mutex<FileState>> {
        self.files.lock().entry(ino).or_default().clone()
    }

    /// Drops the file's state once nothing is open, buffered or pending.
    /// Every clone of a state is taken under the map's lock, so a count of
    /// one there means no thread is between `state()` and locking it: a
    /// state some thread was about to write into would otherwise leave the
    /// map, and its writes with it, unseen by the closes that commit.
    /// A caller that holds the state hands its reference in (`mine`), so it
    /// is gone before the count is read.
    fn release_state_if_idle(&self, ino: u64, mine: Option<Arc<Mutex<FileState>>>) {
        drop(mine);
        let mut files = self.files.lock();
        if let Some(s) = files.get(&ino) {
            if Arc::strong_count(s) > 1 {
                return;
            }
            let st = s.lock();
            if st.opens == 0
                && st.dirty.as_ref().is_none_or(|d| d.is_clean())
                && st.attrs.is_empty()
            {
                drop(st);
                files.remove(&ino);
            }
        }
    }

    fn ensure_dirty(&self, ino: u64, st: &mut FileState) -> FsResult<()> {
        if st.dirty.is_none() {
            let mut tx = self.read_tx()?;
            let i = Self::load(&mut tx, ino)?;
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
        self.state(ino).lock().opens += 1;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(
            fh,
            Handle {
                ino,
                append: flags & libc::O_APPEND != 0,
                wrote: false,
            },
        );
        Ok(fh)
    }

    /// Creates and opens a regular file.
    pub fn create(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        perm: u32,
        flags: i32,
    ) -> FsResult<(Attr, u64)> {
        let attr = self.make_node(caller, parent, name, NodeSpec::new(Kind::File, perm))?;
        // No close-to-open refresh: the file did not exist before this
        // commit, so no host can have changed it, and no kernel cache holds it.
        let fh = self.open_handle(attr.ino, flags)?;
        Ok((attr, fh))
    }

    fn read_committed(&self, ino: u64, offset: u64, buf: &mut [u8]) -> FsResult<()> {
        let mut tx = self.read_tx()?;
        let end = offset + buf.len() as u64;
        let mut idx = offset / CHUNK;
        while idx * CHUNK < end {
            let cstart = idx * CHUNK;
            let from = offset.max(cstart);
            let to = end.min(cstart + CHUNK);
            // Only the wanted part of the chunk: a 4 KiB read of a cold
            // chunk reads one block of it from the store, not 256 KiB.
            if let Some(data) =
                tx.get_range(CONTENT, &chunk_key(ino, idx), from - cstart..to - cstart)?
            {
                let at = (from - offset) as usize;
                buf[at..at + data.len()].copy_from_slice(&data);
            }
            idx += 1;
        }
        Ok(())
    }

    /// Reads up to `size` bytes at `offset`.
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let state = self.files.lock().get(&ino).cloned();
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
                let s = Self::load(&mut tx, ino)?.size;
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
            if let Err(e) = self.read_committed(ino, offset, &mut buf[..n]) {
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

    /// `write` on behalf of process `pid` (see [`SetAttr::by`]).
    pub fn write_from(&self, fh: u64, offset: u64, data: &[u8], pid: Option<u32>) -> FsResult<u32> {
        self.writable()?;
        let (ino, append) = {
            let mut h = self.handles.lock();
            let h = h.get_mut(&fh).ok_or(FsError::BadHandle)?;
            h.wrote = true;
            (h.ino, h.append)
        };
        let state = self.state(ino);
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
        let Some(state) = self.files.lock().get(&ino).cloned() else {
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
        let Some((ino, wrote)) = self.take_wrote(fh) else {
            return Err(FsError::BadHandle);
        };
        let Some(state) = self.files.lock().get(&ino).cloned() else {
            return Ok(());
        };
        let mut st = state.lock();
        if wrote || st.opens <= 1 {
            self.commit_locked(ino, &mut st, false)?;
        }
        Ok(())
    }

    /// The handle's inode and whether it wrote since the last call.
    fn take_wrote(&self, fh: u64) -> Option<(u64, bool)> {
        let mut handles = self.handles.lock();
        let h = handles.get_mut(&fh)?;
        Some((h.ino, std::mem::take(&mut h.wrote)))
    }

    /// Makes the file's changes durable.
    pub fn fsync(&self, ino: u64) -> FsResult<()> {
        let state = self.files.lock().get(&ino).cloned();
        if let Some(state) = state {
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
        let Some(h) = self.handles.lock().remove(&fh) else {
            return Err(FsError::BadHandle);
        };
        let state = self.state(h.ino);
        let mut st = state.lock();
        // RELEASE is asynchronous: the same process may already be writing
        // through its next handle, whose half-done writes must not land now.
        let r = if h.wrote || st.opens <= 1 {
            self.commit_locked(h.ino, &mut st, false)
        } else {
            Ok(())
        };
        st.opens = st.opens.saturating_sub(1);
        drop(st);
        self.reap(h.ino)?;
        self.release_state_if_idle(h.ino, Some(state));
        r
    }

    /// Commits a file's buffer as one transaction. Appends that raced with
    /// another host's land after its bytes; other writes land over the
    /// content as committed, whole.
    fn commit_locked(&self, ino: u64, st: &mut FileState, sync: bool) -> FsResult<()> {
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
            let mut inode = Self::load(tx, ino)?;
            if dirty.append_only && inode.size != dirty.base_size {
                dirty.rebase(inode.size)?;
            }
            if let Some(t) = dirty.trunc {
                if t < inode.size {
                    Self::cut_content(tx, ino, t)?;
                }
            }
            let mut chunk: Option<(u64, Vec<u8>)> = None;
            dirty.for_each_extent(CHUNK as usize, |start, bytes| -> FsResult<()> {
                let mut pos = start;
                let end = start + bytes.len() as u64;
                while pos < end {
                    let idx = pos / CHUNK;
                    if chunk.as_ref().is_none_or(|(i, _)| *i != idx) {
                        if let Some((i, data)) = chunk.take() {
                            tx.upsert(CONTENT, &chunk_key(ino, i), &data)?;
                        }
                        let cur = tx.get(CONTENT, &chunk_key(ino, idx))?.unwrap_or_default();
                        chunk = Some((idx, cur));
                    }
                    let Some((_, data)) = chunk.as_mut() else {
                        break;
                    };
                    let cstart = idx * CHUNK;
                    let to = end.min(cstart + CHUNK);
                    let (a, b) = ((pos - cstart) as usize, (to - cstart) as usize);
                    if data.len() < b {
                        data.resize(b, 0);
                    }
                    data[a..b]
                        .copy_from_slice(&bytes[(pos - start) as usize..(to - start) as usize]);
                    pos = to;
                }
                Ok(())
            })?;
            if let Some((i, data)) = chunk.take() {
                tx.upsert(CONTENT, &chunk_key(ino, i), &data)?;
            }
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
            Self::store(tx, ino, &inode)?;
            Ok(size)
        };
        self.writable()?;
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
        let state = self.state(ino);
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
        let all: Vec<(u64, Arc<Mutex<FileState>>)> = self
            .files
            .lock()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let mut first_err = None;
        for (ino, s) in all {
            if let Err(e) = self.commit_locked(ino, &mut s.lock(), false) {
                tracing::error!(ino, error = %e, "could not commit buffered writes");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    // ----- whole-path operations inside a caller's transaction (macros) -----

    /// The inode at `path` ("/a/b", from the volume's root; symlinks are not followed).
    pub fn resolve_in(tx: &mut Transaction, path: &str) -> FsResult<u64> {
        let mut ino = ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            Self::load_dir(tx, ino)?;
            ino = Self::entry(tx, ino, part.as_bytes())?
                .ok_or(FsError::NotFound)?
                .ino;
        }
        Ok(ino)
    }

    /// The parent directory of `path` and the last name in it.
    pub fn resolve_parent_in(tx: &mut Transaction, path: &str) -> FsResult<(u64, Vec<u8>)> {
        let trimmed = path.trim_end_matches('/');
        let (dir, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
        if name.is_empty() || name == "." || name == ".." {
            return Err(FsError::Invalid("path names no entry"));
        }
        Ok((Self::resolve_in(tx, dir)?, name.as_bytes().to_vec()))
    }

    /// Attributes of an inode, in `tx`.
    pub fn stat_in(&self, tx: &mut Transaction, ino: u64) -> FsResult<Attr> {
        self.view(tx, ino)
    }

    /// The committed content of a file.
    pub fn read_file_in(tx: &mut Transaction, ino: u64) -> FsResult<Vec<u8>> {
        let i = Self::load(tx, ino)?;
        if i.kind != Kind::File {
            return Err(if i.kind == Kind::Dir {
                FsError::IsDir
            } else {
                FsError::Invalid("not a regular file")
            });
        }
        let mut out = vec![0u8; i.size as usize];
        let mut idx = 0u64;
        while idx * CHUNK < i.size {
            if let Some(data) = tx.get(CONTENT, &chunk_key(ino, idx))? {
                let start = (idx * CHUNK) as usize;
                let n = data.len().min(out.len() - start);
                out[start..start + n].copy_from_slice(&data[..n]);
            }
            idx += 1;
        }
        Ok(out)
    }

    /// Writes `data` as the whole content of `path` (or at its end with
    /// `append`), creating the file if absent.
    pub fn write_file_in(
        &self,
        tx: &mut Transaction,
        caller: Caller,
        path: &str,
        data: &[u8],
        append: bool,
    ) -> FsResult<()> {
        let (dir, name) = Self::resolve_parent_in(tx, path)?;
        let ino = match Self::entry(tx, dir, &name)? {
            Some(e) if e.kind == Kind::File => e.ino,
            Some(e) if e.kind == Kind::Dir => return Err(FsError::IsDir),
            Some(_) => return Err(FsError::Invalid("not a regular file")),
            None => {
                self.make_node_in(tx, caller, dir, &name, NodeSpec::new(Kind::File, 0o644))?
                    .ino
            }
        };
        let mut inode = Self::load(tx, ino)?;
        let offset = if append { inode.size } else { 0 };
        if !append {
            Self::cut_content(tx, ino, 0)?;
        }
        let end = offset + data.len() as u64;
        if end > MAX_FILE_SIZE {
            return Err(FsError::TooBig);
        }
        let mut pos = offset;
        while pos < end {
            let idx = pos / CHUNK;
            let cstart = idx * CHUNK;
            let to = end.min(cstart + CHUNK);
            let key = chunk_key(ino, idx);
            let mut chunk = tx.get(CONTENT, &key)?.unwrap_or_default();
            let (a, b) = ((pos - cstart) as usize, (to - cstart) as usize);
            if chunk.len() < b {
                chunk.resize(b, 0);
            }
            chunk[a..b].copy_from_slice(&data[(pos - offset) as usize..(to - offset) as usize]);
            tx.upsert(CONTENT, &key, &chunk)?;
            pos = to;
        }
        let now = Time::now();
        inode.size = if append { end } else { data.len() as u64 };
        inode.mtime = now;
        inode.ctime = now;
        Self::store(tx, ino, &inode)?;
        self.touch_dir(tx, dir, 0)
    }

    /// Entries of a directory with names in `[from, to)` (both optional), at most `limit`.
    pub fn list_in(
        &self,
        tx: &mut Transaction,
        dir: u64,
        from: Option<&[u8]>,
        to: Option<&[u8]>,
        limit: usize,
    ) -> FsResult<Vec<(Vec<u8>, Attr)>> {
        Self::load_dir(tx, dir)?;
        let lo = from.map_or(vec![1u8], |f| f.to_vec().max(vec![1u8]));
        let mut cur = match to {
            Some(t) => Cursor::new(lo..t.to_vec(), Direction::Forward),
            None => Cursor::new(lo.., Direction::Forward),
        };
        let mut out = Vec::new();
        while out.len() < limit && !cur.is_done() {
            let want = (limit - out.len()).min(1024);
            for (k, v) in tx.scan(&dir_tree(dir), &mut cur, want)? {
                if let Some(e) = Entry::decode(&v) {
                    out.push((k, self.view(tx, e.ino)?));
                }
            }
        }
        Ok(out)
    }

    /// Walks every directory from the root and checks each B-tree and that
    /// every entry points at an inode; returns (directories, files).
    pub fn check(&self) -> FsResult<(u64, u64)> {
        let mut tx = self.read_tx()?;
        tx.check_tree(INODES)?;
        tx.check_tree(CONTENT)?;
        let (mut dirs, mut files) = (0u64, 0u64);
        let mut stack = vec![ROOT_INO];
        while let Some(d) = stack.pop() {
            dirs += 1;
            tx.check_tree(&dir_tree(d))?;
            let mut cur = Cursor::new(vec![1u8].., Direction::Forward);
            loop {
                for (name, v) in tx.scan(&dir_tree(d), &mut cur, 1024)? {
                    let e = Entry::decode(&v).ok_or_else(|| {
                        FsError::Corrupted(format!(
                            "entry {:?} in {d:#x}",
                            String::from_utf8_lossy(&name)
                        ))
                    })?;
                    let i = Self::load(&mut tx, e.ino).map_err(|_| {
                        FsError::Corrupted(format!(
                            "entry {:?} in {d:#x} points at missing inode {:#x}",
                            String::from_utf8_lossy(&name),
                            e.ino
                        ))
                    })?;
                    if i.kind != e.kind {
                        return Err(FsError::Corrupted(format!("kind of {:#x}", e.ino)));
                    }
                    if e.kind == Kind::Dir {
                        if i.parent != d {
                            return Err(FsError::Corrupted(format!("parent of {:#x}", e.ino)));
                        }
                        stack.push(e.ino);
                    } else {
                        files += 1;
                    }
                }
                if cur.is_done() {
                    break;
                }
            }
        }
        Ok((dirs, files))
    }

    /// A path of `ino` for messages: a breadth-first search from the root,
    /// bounded so a damaged read on a huge volume still answers quickly.
    pub fn path_of(&self, ino: u64) -> String {
        let unknown = format!("<inode {ino:#x}>");
        let Ok(mut tx) = self.read_tx() else {
            return unknown;
        };
        let mut queue = std::collections::VecDeque::from([(ROOT_INO, String::new())]);
        let mut budget = 200_000usize;
        while let Some((d, path)) = queue.pop_front() {
            let mut cur = Cursor::new(vec![1u8].., Direction::Forward);
            loop {
                let Ok(batch) = tx.scan(&dir_tree(d), &mut cur, 1024) else {
                    break;
                };
                for (name, v) in batch {
                    let Some(e) = Entry::decode(&v) else { continue };
                    let p = format!("{path}/{}", String::from_utf8_lossy(&name));
                    if e.ino == ino {
                        return p;
                    }
                    if e.kind == Kind::Dir {
                        queue.push_back((e.ino, p));
                    }
                    budget = budget.saturating_sub(1);
                }
                if cur.is_done() || budget == 0 {
                    break;
                }
            }
            if budget == 0 {
                break;
            }
        }
        unknown
    }

    /// Filesystem statistics: (files in use). Sizes are the store's to know.
    pub fn inode_count(&self) -> FsResult<u64> {
        let mut tx = self.read_tx()?;
        Ok(tx.count(INODES)?)
    }
}
