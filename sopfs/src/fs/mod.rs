//! The mounted host: POSIX operations as engine transactions over the
//! namespace ([`crate::ns`]), with the host's own state ([`crate::host`]):
//! open files and write buffers, kernel references, directory snapshots,
//! invalidation. No FUSE types here; `mount/fuse.rs` is the thin edge, and
//! tests call this directly.

mod attrs;
mod dirs;
mod files;
mod names;
mod quotas;

pub use quotas::{QuotaCheck, QuotaInfo};

use crate::error::{FsError, FsResult};
use crate::host::prefetch::Prefetcher;
pub use crate::host::Stale;
use crate::host::{DirSnapshots, Invalidation, Invalidator, KernelRefs, NewNames, OpenFiles};
use crate::ns::dirs::attr;
use crate::ns::schema::*;
use crate::ns::{paths, trash, Host};
pub use crate::ns::{Attr, Caller, DirEntry, NodeSpec, SetAttr};
use engine::{Db, Transaction, TxMode};
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Buffered bytes past which a file's completely written chunks go to the
/// store at once (parked) instead of at its commit: a file written in big
/// sequential pieces is in the store by the time it is closed.
const PARK_FROM: usize = 1 << 20;

/// Chunks parked as one blob on a remote store: 4 MiB objects, where each
/// object costs a request (latency, a per-request charge, and a server's
/// CPU). A local folder parks chunk by chunk.
const REMOTE_RUN: u64 = 16;

/// A mounted (or directly driven) volume: the engine, and this host's state
/// beside it, one type per concern.
pub struct Fs {
    db: Db,
    opts: FsOptions,
    prefetch: Prefetcher,
    files: OpenFiles,
    new_names: NewNames,
    kernel: KernelRefs,
    dirs: DirSnapshots,
    /// Directory names learned for trash paths.
    dir_names: crate::ns::trash::DirNames,
    /// Whether the volume has quotas, and when that was asked.
    quotas_seen: parking_lot::Mutex<Option<(std::time::Instant, bool)>>,
    invalidation: Invalidation,
    /// How full chunks of big files go to the store ahead of their commit.
    parking: crate::host::dirty::Parking,
    next_fh: AtomicU64,
}

impl Host for Fs {
    fn id(&self) -> u64 {
        self.opts.host
    }

    /// True while the kernel or an open handle still refers to `ino`.
    fn in_use(&self, ino: u64) -> bool {
        self.kernel.referenced(ino) || self.files.is_open(ino)
    }

    fn overlay(&self, ino: u64, inode: &mut Inode) {
        self.files.overlay(ino, inode);
    }

    fn dir_names(&self) -> Option<&crate::ns::trash::DirNames> {
        Some(&self.dir_names)
    }
}

impl Fs {
    /// Serves `db`, creating the root directory on first use.
    pub fn new(db: Db, opts: FsOptions) -> FsResult<Fs> {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        if opts.read_only {
            // Nothing may be written: the volume must have its root already.
            let mut tx = db.begin(TxMode::ReadOnly)?;
            if tx.get(INODES, &ino_key(ROOT_INO))?.is_none() {
                return Err(FsError::Corrupted(
                    "the volume has no root directory (never mounted read-write)".into(),
                ));
            }
        } else {
            db.run_with(|tx| format(tx, uid, gid))?;
        }
        let remote = db.store_is_remote();
        Ok(Fs {
            prefetch: Prefetcher::start(db.reader(), remote),
            parking: crate::host::dirty::Parking {
                chunk: CHUNK,
                run: if remote { REMOTE_RUN } else { 1 },
                min_buffered: PARK_FROM,
            },
            db,
            opts,
            files: OpenFiles::default(),
            new_names: NewNames::default(),
            kernel: KernelRefs::default(),
            dirs: DirSnapshots::default(),
            dir_names: Default::default(),
            quotas_seen: parking_lot::Mutex::new(None),
            invalidation: Invalidation::default(),
            next_fh: AtomicU64::new(1),
        })
    }

    /// Sets where stale cache entries are reported (the FUSE notifier).
    pub fn set_invalidator(&self, f: Invalidator) {
        self.invalidation.set(f, self.db.seq());
    }

    /// Reports what other hosts changed since the last call to the
    /// invalidator: inodes at once, names from the periodic caller only
    /// (`from_handler` false). An open calls it (close-to-open).
    pub fn refresh(&self, from_handler: bool) {
        self.invalidation.refresh(&self.db, from_handler);
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

    /// Runs a read-write transaction, retrying conflicts (the [`crate::ns`]
    /// functions run inside one).
    pub fn write_tx<T>(&self, f: impl FnMut(&mut Transaction) -> FsResult<T>) -> FsResult<T> {
        self.writable()?;
        self.db.run_with(f)
    }

    fn read_tx(&self) -> FsResult<Transaction> {
        Ok(self.db.begin(TxMode::ReadOnly)?)
    }

    fn next_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    /// Looks a name up in a directory.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        check_name_len(name)?;
        if let Some(a) = self
            .new_names
            .get(parent, name)
            .and_then(|ino| self.new_attr(ino))
        {
            return Ok(a);
        }
        let mut tx = self.read_tx()?;
        load_dir(&mut tx, parent)?;
        let e = match entry(&mut tx, parent, name)? {
            Some(e) => e,
            // "No such name" must not be older than another host's create
            // that returned before this lookup (close-to-open for new
            // names): the pushed stamp may still be on its way, so ask.
            None if !self.db.begin_is_fresh() => {
                tx = self.db.begin_fresh()?;
                entry(&mut tx, parent, name)?.ok_or(FsError::NotFound)?
            }
            None => return Err(FsError::NotFound),
        };
        attr(&mut tx, self, e.ino)
    }

    /// Attributes of an inode.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        if let Some(a) = self.new_attr(ino) {
            return Ok(a);
        }
        let mut tx = self.read_tx()?;
        attr(&mut tx, self, ino)
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
        self.kernel.is_orphan(ino) || self.files.is_open(ino)
    }

    /// A symlink's target.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let mut tx = self.read_tx()?;
        let i = load(&mut tx, ino)?;
        if i.kind != Kind::Symlink {
            return Err(FsError::Invalid("not a symlink"));
        }
        Ok(i.target)
    }

    /// Walks every directory from the root and checks each B-tree and that
    /// every entry points at an inode; returns (directories, files).
    pub fn check(&self) -> FsResult<(u64, u64)> {
        paths::check(&mut self.read_tx()?)
    }

    /// A path of `ino` for messages (see [`paths::path_of`]).
    pub fn path_of(&self, ino: u64) -> String {
        match self.read_tx() {
            Ok(mut tx) => paths::path_of(&mut tx, ino),
            Err(_) => format!("<inode {ino:#x}>"),
        }
    }

    /// Sets how many days removed files stay in the volume's trash (0:
    /// off), for every host.
    pub fn set_trash_days(&self, days: u32) -> FsResult<()> {
        self.write_tx(|tx| {
            if trash::days(tx)? != days {
                trash::set_days(tx, days)?;
            }
            Ok(())
        })
    }

    /// Empties the trash of what is older than the volume's `trash_days`;
    /// returns the names removed.
    pub fn empty_trash(&self) -> FsResult<u64> {
        let now = std::time::SystemTime::now();
        trash::empty_expired(self, now, |f| self.write_tx(|tx| f(tx)))
    }

    /// Filesystem statistics: (files in use). Sizes are the store's to know.
    pub fn inode_count(&self) -> FsResult<u64> {
        let mut tx = self.read_tx()?;
        Ok(tx.count(INODES)?)
    }
}
