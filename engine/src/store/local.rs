//! What only a local folder has: early writeback of big blobs, create-if-
//! absent as a link of a written file, ranged reads straight from the file,
//! and the sweep of staging files dead writers left behind.

use super::{durable, spares, BlobStore};
use crate::error::{Error, Result};
use bytes::Bytes;
use std::time::Duration;

/// Blobs this big (a big file's chunks) are sent towards the disk soon
/// after they are written: a later fsync (one `syncfs` of the store) then
/// waits for what is left instead of for the whole file, and a writer that
/// never syncs only starts the writeback the kernel would do later anyway.
pub(super) const START_WRITEBACK_FROM: usize = 128 * 1024;

/// Files waiting for their writeback to be started; past this many, new
/// ones are left to the kernel (the disk is busy anyway).
const WRITEBACK_QUEUE: usize = 64;

/// Hands `f` to the writeback thread, which starts writing its dirty pages
/// back without waiting for them: `sync_file_range` can block while the
/// disk's queue is full, and the writer of the blob must not.
pub(super) fn start_writeback(f: std::fs::File) {
    static QUEUE: std::sync::OnceLock<Option<std::sync::mpsc::SyncSender<std::fs::File>>> =
        std::sync::OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<std::fs::File>(WRITEBACK_QUEUE);
        std::thread::Builder::new()
            .name("sopfs-writeback".into())
            .spawn(move || {
                for f in rx {
                    writeback_now(&f);
                }
            })
            .map_err(|e| tracing::debug!(error = %e, "no writeback thread"))
            .ok()
            .map(|_| tx)
    });
    if let Some(q) = queue {
        let _ = q.try_send(f);
    }
}

#[allow(unsafe_code)]
fn writeback_now(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range only reads its integer arguments; the
    // descriptor stays open for the whole call (borrowed from `f`).
    let r = unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if r != 0 {
        // Only an early start is lost: the data is written either way.
        tracing::debug!(error = %std::io::Error::last_os_error(), "sync_file_range");
    }
}

/// True for object_store's staging files (`name#<digits>`), left behind when a
/// writer dies between writing and renaming.
pub(super) fn is_staging_file(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn sweep_dir(dir: &std::path::Path, older_than: std::time::SystemTime, removed: &mut u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            sweep_dir(&path, older_than, removed);
        } else if is_staging_file(&e.file_name().to_string_lossy()) {
            // A live process's spares are younger than this (it replaces
            // them before), whatever age the caller sweeps at.
            let older_than = if spares::is_spare(&e.file_name().to_string_lossy()) {
                older_than.min(
                    std::time::SystemTime::now()
                        .checked_sub(spares::SWEEP_AFTER)
                        .unwrap_or(std::time::UNIX_EPOCH),
                )
            } else {
                older_than
            };
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t <= older_than);
            if old && std::fs::remove_file(&path).is_ok() {
                *removed += 1;
            }
        }
    }
}

impl BlobStore {
    /// Deletes staging files of dead writers under `prefix` that are older
    /// than `age`. Returns how many went. Only local stores have them.
    pub fn sweep_staging(&self, prefix: &str, age: Duration) -> u64 {
        let Some(root) = self.location.local_root().filter(|_| !self.is_read_only()) else {
            return 0;
        };
        let cutoff = std::time::SystemTime::now()
            .checked_sub(age)
            .unwrap_or(std::time::UNIX_EPOCH);
        let mut removed = 0;
        sweep_dir(&root.join(prefix), cutoff, &mut removed);
        removed
    }
}

/// Create-if-absent in a local folder: written beside its final name (a
/// staging name GC sweeps if we die here) and hard-linked into place, so
/// the object appears whole or not at all, and a name that exists is never
/// replaced. The same protocol as object_store's, without its path
/// conversions and metadata reads on the commit path.
pub(super) fn create_local(full: &std::path::Path, data: &[u8]) -> Result<bool> {
    let io = |source| Error::Io {
        path: full.display().to_string(),
        source,
    };
    let name = full
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = full.with_file_name(format!("{name}#{}", rand::random::<u32>()));
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&staging)
    };
    let mut f = match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = full.parent() {
                durable::create_dirs(parent).map_err(io)?;
            }
            open().map_err(io)?
        }
        r => r.map_err(io)?,
    };
    let written = std::io::Write::write_all(&mut f, data);
    drop(f);
    let placed = written.and_then(|()| move_if_absent(&staging, full));
    if placed.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    match placed {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io(e)),
    }
}

/// Gives `from` the name `to` only if `to` does not exist, atomically: one
/// `renameat2(RENAME_NOREPLACE)` where the filesystem has it (a rename
/// instead of a link and an unlink), else a hard link and an unlink.
pub(super) fn move_if_absent(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    use nix::errno::Errno;
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
            std::fs::hard_link(from, to)?;
            let _ = std::fs::remove_file(from);
            Ok(())
        }
        Err(e) => Err(std::io::Error::from(e)),
    }
}

/// One `pread` loop in place of object_store's open, stat and seek.
pub(super) fn read_local_range(
    full: &std::path::Path,
    range: std::ops::Range<u64>,
) -> Result<Option<Bytes>> {
    use std::os::unix::fs::FileExt;
    let io = |source| Error::Io {
        path: full.display().to_string(),
        source,
    };
    let file = match std::fs::File::open(full) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let want = usize::try_from(range.end.saturating_sub(range.start)).unwrap_or(usize::MAX);
    let mut buf = vec![0u8; want];
    let mut got = 0;
    while got < want {
        match file.read_at(&mut buf[got..], range.start + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    buf.truncate(got);
    Ok(Some(Bytes::from(buf)))
}

/// Staging files younger than this may belong to a write in progress
/// (GC never sweeps them, whatever its retention).
pub(crate) const STAGING_MIN_AGE: Duration = Duration::from_secs(60);

/// Above this many files, `sync` flushes the store's whole filesystem.
pub(super) const SYNCFS_FROM: usize = 64;
