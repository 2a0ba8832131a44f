//! `/.snapshots`: every snapshot of the volume as a read-only tree,
//! `/.snapshots/NAME/...` the whole namespace as it was at the snapshot's
//! commit. `mkdir /.snapshots/NAME` takes one, `rmdir` deletes it (as the
//! CLI does through `/.sopfs/snapshot`).
//!
//! A snapshot's inodes keep their numbers inside its state, but one volume
//! inode appears once per snapshot (and live): each (snapshot, inode) pair
//! gets a mount-local number of class 0xD, handed out at first sight and
//! dropped when the kernel forgets it (a bounded number of forgotten ones
//! stay, so `d_ino` from a listing matches a later `stat`).

use crate::error::{FsError, FsResult};
use crate::fs::{Attr, Caller, DirEntry, Fs};
use crate::ns::dirs::{attr, Entries};
use crate::ns::schema::{entry, load, load_dir, Entry, Inode, Kind, Time, ROOT_INO};
use crate::ns::Detached;
use engine::{SnapshotInfo, Transaction};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `/.snapshots`.
pub const SNAPSHOTS_INO: u64 = 9;
/// Name of the folder in the root.
pub const FOLDER: &[u8] = b".snapshots";

/// Class (top four bits) of the inodes of snapshot trees.
const CLASS: u64 = 0xD;
/// Handles of snapshot files and directories: both top bits set (the
/// virtual tree's have only the top one).
const FH_TAG: u64 = 0b11 << 62;
/// Forgotten inode numbers kept for a later lookup of the same file.
const IDLE_MAX: usize = 65_536;
/// How long a listing of the store's snapshots answers lookups.
const LIST_TTL: Duration = Duration::from_secs(1);

/// One (snapshot, volume inode) pair the kernel knows by a number.
struct Mapped {
    pin: u32,
    real: u64,
    lookups: u64,
}

/// The mount's numbers for snapshot inodes.
struct Table {
    /// (name, seq) of each snapshot seen, by id.
    pins: Vec<(String, u64)>,
    pin_ids: HashMap<(String, u64), u32>,
    by_ino: HashMap<u64, Mapped>,
    by_real: HashMap<(u32, u64), u64>,
    /// Numbers with no kernel reference, oldest first out.
    idle: lru::LruCache<u64, ()>,
    next: u64,
}

impl Table {
    fn pin(&mut self, s: &SnapshotInfo) -> u32 {
        let key = (s.name.clone(), s.seq);
        if let Some(id) = self.pin_ids.get(&key) {
            return *id;
        }
        let id = self.pins.len() as u32;
        self.pins.push(key.clone());
        self.pin_ids.insert(key, id);
        id
    }

    /// The number of `real` in snapshot `pin`; `lookup` when the kernel
    /// takes a reference with it.
    fn ino(&mut self, pin: u32, real: u64, lookup: bool) -> u64 {
        let ino = match self.by_real.get(&(pin, real)) {
            Some(i) => *i,
            None => {
                self.next += 1;
                let ino = (CLASS << 60) | self.next;
                self.by_real.insert((pin, real), ino);
                self.by_ino.insert(
                    ino,
                    Mapped {
                        pin,
                        real,
                        lookups: 0,
                    },
                );
                self.idle.put(ino, ());
                ino
            }
        };
        if let Some(m) = self.by_ino.get_mut(&ino) {
            if lookup {
                m.lookups += 1;
                self.idle.pop(&ino);
            } else if m.lookups == 0 {
                self.idle.put(ino, ());
            }
        }
        while self.idle.len() > IDLE_MAX {
            if let Some((old, ())) = self.idle.pop_lru() {
                if let Some(m) = self.by_ino.remove(&old) {
                    self.by_real.remove(&(m.pin, m.real));
                }
            }
        }
        ino
    }

    fn forget(&mut self, ino: u64, n: u64) {
        if let Some(m) = self.by_ino.get_mut(&ino) {
            m.lookups = m.lookups.saturating_sub(n);
            if m.lookups == 0 {
                self.idle.put(ino, ());
            }
        }
    }
}

/// An open snapshot file or directory.
enum Open {
    Dir(Vec<DirEntry>),
    File { seq: u64, real: u64 },
}

/// The `/.snapshots` part of a mount.
pub struct Snapshots {
    fs: Arc<Fs>,
    table: Mutex<Table>,
    open: Mutex<HashMap<u64, Open>>,
    next_fh: AtomicU64,
    listed: Mutex<Option<(Instant, Vec<SnapshotInfo>)>>,
    started: Time,
}

fn class(ino: u64) -> u64 {
    ino >> 60
}

impl Snapshots {
    /// The snapshots of `fs`'s volume.
    pub fn new(fs: Arc<Fs>) -> Snapshots {
        Snapshots {
            fs,
            table: Mutex::new(Table {
                pins: Vec::new(),
                pin_ids: HashMap::new(),
                by_ino: HashMap::new(),
                by_real: HashMap::new(),
                idle: lru::LruCache::unbounded(),
                next: 0,
            }),
            open: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            listed: Mutex::new(None),
            started: Time::now(),
        }
    }

    /// True for `/.snapshots` and the inodes inside it.
    pub fn owns(ino: u64) -> bool {
        ino == SNAPSHOTS_INO || class(ino) == CLASS
    }

    /// True for a handle this module gave out.
    pub fn owns_fh(fh: u64) -> bool {
        fh & FH_TAG == FH_TAG
    }

    /// The snapshots, from a listing at most `LIST_TTL` old unless `fresh`.
    fn list(&self, fresh: bool) -> FsResult<Vec<SnapshotInfo>> {
        let mut listed = self.listed.lock();
        if let Some((at, list)) = listed.as_ref() {
            if !fresh && at.elapsed() < LIST_TTL {
                return Ok(list.clone());
            }
        }
        let list = self.fs.db().snapshots()?;
        *listed = Some((Instant::now(), list.clone()));
        Ok(list)
    }

    fn find(&self, name: &[u8]) -> FsResult<SnapshotInfo> {
        let name = std::str::from_utf8(name).map_err(|_| FsError::NotFound)?;
        let hit = |l: Vec<SnapshotInfo>| l.into_iter().find(|s| s.name == name);
        if let Some(s) = hit(self.list(false)?) {
            return Ok(s);
        }
        // Taken on another host since the listing.
        hit(self.list(true)?).ok_or(FsError::NotFound)
    }

    /// (seq, volume inode) behind a snapshot inode.
    fn resolve(&self, ino: u64) -> FsResult<(u32, u64, u64)> {
        let t = self.table.lock();
        let m = t.by_ino.get(&ino).ok_or(FsError::NotFound)?;
        let seq = t.pins.get(m.pin as usize).ok_or(FsError::NotFound)?.1;
        Ok((m.pin, seq, m.real))
    }

    fn tx(&self, seq: u64) -> FsResult<Transaction> {
        Ok(self.fs.db().begin_at(seq)?)
    }

    fn folder_attr(&self) -> Attr {
        let mut inode = Inode::new(Kind::Dir, 0o555, 0, 0);
        if let Ok(r) = self.fs.getattr(ROOT_INO) {
            inode.uid = r.inode.uid;
            inode.gid = r.inode.gid;
        }
        inode.atime = self.started;
        inode.mtime = self.started;
        inode.ctime = self.started;
        Attr {
            ino: SNAPSHOTS_INO,
            inode,
        }
    }

    /// Attributes of `real` in snapshot `pin`, under number `ino`.
    fn attr_in(&self, tx: &mut Transaction, ino: u64, real: u64) -> FsResult<Attr> {
        let mut a = attr(tx, &Detached { id: 0 }, real)?;
        a.ino = ino;
        Ok(a)
    }

    fn root_attr(&self, s: &SnapshotInfo, lookup: bool) -> FsResult<Attr> {
        let ino = {
            let mut t = self.table.lock();
            let pin = t.pin(s);
            t.ino(pin, ROOT_INO, lookup)
        };
        self.attr_in(&mut self.tx(s.seq)?, ino, ROOT_INO)
    }

    /// Looks `name` up in `parent`; None when `parent` is not this module's
    /// (and `name` not `.snapshots` in the root).
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Option<FsResult<Attr>> {
        match parent {
            ROOT_INO if name == FOLDER => Some(Ok(self.folder_attr())),
            SNAPSHOTS_INO => Some(self.find(name).and_then(|s| self.root_attr(&s, true))),
            p if class(p) == CLASS => Some((|| {
                let (pin, seq, real) = self.resolve(p)?;
                let mut tx = self.tx(seq)?;
                load_dir(&mut tx, real)?;
                let e = entry(&mut tx, real, name)?.ok_or(FsError::NotFound)?;
                let ino = self.table.lock().ino(pin, e.ino, true);
                self.attr_in(&mut tx, ino, e.ino)
            })()),
            _ => None,
        }
    }

    /// Attributes of one of this module's inodes.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        if ino == SNAPSHOTS_INO {
            return Ok(self.folder_attr());
        }
        let (_, seq, real) = self.resolve(ino)?;
        self.attr_in(&mut self.tx(seq)?, ino, real)
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.table.lock().forget(ino, n);
    }

    /// The kernel took a reference through a listing (readdirplus).
    pub fn remember(&self, ino: u64) {
        let mut t = self.table.lock();
        let Some((pin, real)) = t.by_ino.get(&ino).map(|m| (m.pin, m.real)) else {
            return;
        };
        t.ino(pin, real, true);
    }

    fn handle(&self, o: Open) -> u64 {
        let fh = FH_TAG | self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.open.lock().insert(fh, o);
        fh
    }

    /// Opens a directory: its listing is taken now.
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let dot = |name: &[u8], ino: u64| DirEntry {
            name: name.to_vec(),
            ino,
            kind: Kind::Dir,
        };
        if ino == SNAPSHOTS_INO {
            let mut list = vec![dot(b".", ino), dot(b"..", ROOT_INO)];
            let snaps = self.list(true)?;
            let mut t = self.table.lock();
            for s in snaps {
                let pin = t.pin(&s);
                list.push(dot(s.name.as_bytes(), t.ino(pin, ROOT_INO, false)));
            }
            return Ok(self.handle(Open::Dir(list)));
        }
        let (pin, seq, real) = self.resolve(ino)?;
        let mut tx = self.tx(seq)?;
        let d = load_dir(&mut tx, real)?;
        let up = if real == ROOT_INO {
            SNAPSHOTS_INO
        } else {
            self.table.lock().ino(pin, d.parent.max(ROOT_INO), false)
        };
        let mut list = vec![dot(b".", ino), dot(b"..", up)];
        let mut entries = Entries::of(real);
        while let Some(batch) = entries.next_batch(&mut tx, 1024)? {
            let mut t = self.table.lock();
            for (name, v) in batch {
                if let Some(e) = Entry::decode(&v) {
                    list.push(DirEntry {
                        name,
                        ino: t.ino(pin, e.ino, false),
                        kind: e.kind,
                    });
                }
            }
        }
        Ok(self.handle(Open::Dir(list)))
    }

    /// Entries of an open directory from `offset` on, each with its next offset.
    pub fn readdir(&self, fh: u64, offset: u64) -> FsResult<Vec<(DirEntry, u64)>> {
        match self.open.lock().get(&fh) {
            Some(Open::Dir(list)) => Ok(list
                .iter()
                .enumerate()
                .skip(offset as usize)
                .take(256)
                .map(|(i, e)| (e.clone(), i as u64 + 1))
                .collect()),
            _ => Err(FsError::BadHandle),
        }
    }

    /// Opens a file for reading (`EROFS` for any other access).
    pub fn open(&self, ino: u64, flags: i32) -> FsResult<u64> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(FsError::ReadOnly);
        }
        if ino == SNAPSHOTS_INO {
            return Err(FsError::IsDir);
        }
        let (_, seq, real) = self.resolve(ino)?;
        let i = load(&mut self.tx(seq)?, real)?;
        if i.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        Ok(self.handle(Open::File { seq, real }))
    }

    /// Reads up to `size` bytes at `offset` of an open file.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let (seq, real) = match self.open.lock().get(&fh) {
            Some(Open::File { seq, real }) => (*seq, *real),
            _ => return Err(FsError::BadHandle),
        };
        let mut tx = self.tx(seq)?;
        let len = load(&mut tx, real)?.size;
        if offset >= len {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; (len - offset).min(size as u64) as usize];
        crate::ns::content::read_into(&mut tx, real, offset, &mut buf)?;
        Ok(buf)
    }

    /// Closes a handle.
    pub fn release(&self, fh: u64) {
        self.open.lock().remove(&fh);
    }

    /// A symlink's target.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let (_, seq, real) = self.resolve(ino)?;
        let i = load(&mut self.tx(seq)?, real)?;
        if i.kind != Kind::Symlink {
            return Err(FsError::Invalid("not a symlink"));
        }
        Ok(i.target)
    }

    /// The inode's extended attributes.
    fn xattrs(&self, ino: u64) -> FsResult<std::collections::BTreeMap<Vec<u8>, Vec<u8>>> {
        if ino == SNAPSHOTS_INO {
            return Ok(Default::default());
        }
        let (_, seq, real) = self.resolve(ino)?;
        Ok(load(&mut self.tx(seq)?, real)?.xattrs)
    }

    /// Value of an extended attribute.
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        if name.starts_with(b"system.posix_acl_") {
            return Err(FsError::NotSupported);
        }
        self.xattrs(ino)?.remove(name).ok_or(FsError::NoAttr)
    }

    /// Names of the extended attributes, each NUL-terminated.
    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        let mut out = Vec::new();
        for k in self.xattrs(ino)?.into_keys() {
            out.extend_from_slice(&k);
            out.push(0);
        }
        Ok(out)
    }

    /// `mkdir /.snapshots/NAME`: takes snapshot NAME.
    pub fn mkdir(&self, caller: Caller, parent: u64, name: &[u8]) -> FsResult<Attr> {
        if parent != SNAPSHOTS_INO {
            return Err(FsError::ReadOnly);
        }
        let name = std::str::from_utf8(name).map_err(|_| FsError::Invalid("name is not UTF-8"))?;
        let s = create(&self.fs, caller, name)?;
        *self.listed.lock() = None;
        self.root_attr(&s, true)
    }

    /// `rmdir /.snapshots/NAME`: deletes snapshot NAME.
    pub fn rmdir(&self, caller: Caller, parent: u64, name: &[u8]) -> FsResult<()> {
        if parent != SNAPSHOTS_INO {
            return Err(FsError::ReadOnly);
        }
        let name = std::str::from_utf8(name).map_err(|_| FsError::NotFound)?;
        delete(&self.fs, caller, name)?;
        *self.listed.lock() = None;
        Ok(())
    }
}

/// Only root and the owner of the volume's root take and delete snapshots:
/// a snapshot keeps space until deleted.
fn may_manage(fs: &Fs, caller: Caller) -> FsResult<()> {
    if caller.uid == 0 || fs.getattr(ROOT_INO)?.inode.uid == caller.uid {
        return Ok(());
    }
    Err(FsError::NotPermitted)
}

fn engine_error(e: engine::Error) -> FsError {
    match e {
        engine::Error::InvalidArgument(m) if m.ends_with("exists") => FsError::Exists,
        engine::Error::InvalidArgument(m) if m.contains("longer than") => FsError::NameTooLong,
        e => FsError::from(e),
    }
}

/// Takes snapshot `name` for `caller`. Buffered writes of this host are
/// committed first: what a program wrote and closed here is in it.
pub fn create(fs: &Fs, caller: Caller, name: &str) -> FsResult<SnapshotInfo> {
    may_manage(fs, caller)?;
    engine::check_snapshot_name(name).map_err(engine_error)?;
    fs.flush_all()?;
    fs.db().create_snapshot(name).map_err(engine_error)
}

/// Deletes snapshot `name` for `caller`.
pub fn delete(fs: &Fs, caller: Caller, name: &str) -> FsResult<()> {
    may_manage(fs, caller)?;
    match fs.db().delete_snapshot(name).map_err(engine_error)? {
        true => Ok(()),
        false => Err(FsError::NotFound),
    }
}

/// Answers a request written to `/.sopfs/snapshot`
/// (`{"op": "create" | "delete" | "list", "name": NAME}`) as one JSON line.
pub fn serve_request(fs: &Fs, caller: Caller, request: &[u8]) -> Vec<u8> {
    #[derive(serde::Deserialize)]
    struct Req {
        op: String,
        #[serde(default)]
        name: String,
    }
    let fail =
        |e: FsError| serde_json::json!({"ok": false, "errno": e.errno(), "error": e.to_string()});
    let info =
        |s: &SnapshotInfo| serde_json::json!({"name": s.name, "seq": s.seq, "time_ms": s.time_ms});
    let answer = match serde_json::from_slice::<Req>(request) {
        Err(e) => {
            serde_json::json!({"ok": false, "errno": libc::EINVAL, "error": format!("bad request: {e}")})
        }
        Ok(r) => match r.op.as_str() {
            "create" => match create(fs, caller, &r.name) {
                Ok(s) => serde_json::json!({"ok": true, "snapshot": info(&s)}),
                Err(e) => fail(e),
            },
            "delete" => match delete(fs, caller, &r.name) {
                Ok(()) => serde_json::json!({"ok": true}),
                Err(e) => fail(e),
            },
            "list" => match fs.db().snapshots() {
                Ok(l) => {
                    serde_json::json!({"ok": true, "snapshots": l.iter().map(info).collect::<Vec<_>>()})
                }
                Err(e) => fail(e.into()),
            },
            _ => fail(FsError::Invalid("op must be create, delete or list")),
        },
    };
    let mut out = answer.to_string().into_bytes();
    out.push(b'\n');
    out
}
