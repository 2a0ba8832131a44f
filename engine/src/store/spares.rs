//! Empty files made ahead of time for a local store's create-if-absent.
//!
//! Creating an object in a local folder is a file written beside its name
//! and moved into place. The slow part of that on a busy ext4 disk is the
//! file creation itself (the inode allocator scans past recently deleted
//! inodes: `find_inode_bit` / `recently_deleted` topped the profile of a
//! cluster-mode create loop). A background thread keeps a few empty files
//! in `staging/` instead, so that a commit writes into one and renames it:
//! no inode allocation on the commit path.
//!
//! Spares are named like object_store's staging files (`spare#<n>`), so a
//! dead process's leftovers are swept like any interrupted write, once an
//! hour old; a live process replaces its own before that. A spare swept or
//! taken from under us anyway is not an error: the caller creates the file
//! the ordinary way.

use parking_lot::{Condvar, Mutex};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Spares kept ready.
const TARGET: usize = 32;
/// A spare this old is replaced by a fresh one: sweeps leave spares alone
/// until `SWEEP_AFTER`, so a live process's are never swept.
const ROTATE_AFTER: Duration = Duration::from_secs(30 * 60);
/// Sweeps delete spares (of dead processes) older than this.
pub(crate) const SWEEP_AFTER: Duration = Duration::from_secs(3600);

/// True for a spare's file name.
pub(crate) fn is_spare(name: &str) -> bool {
    name.starts_with("spare#")
}

/// A pool of empty files in one folder, refilled by a thread of its own
/// that is stopped and joined when the pool is dropped: once the store is
/// closed (and its lock released) nothing of this process touches the
/// folder any more.
pub(crate) struct Spares {
    shared: Arc<Shared>,
    /// The refill thread, started at the first take.
    thread: Mutex<Option<JoinHandle<()>>>,
    started: AtomicBool,
}

/// What the pool and its thread share.
struct Shared {
    dir: PathBuf,
    ready: Mutex<Vec<(PathBuf, File, Instant)>>,
    /// Signalled when the pool runs low or is closing.
    low: Condvar,
    closing: AtomicBool,
}

impl Spares {
    /// A pool in `dir` (created when first needed).
    pub fn new(dir: PathBuf) -> Arc<Spares> {
        Arc::new(Spares {
            shared: Arc::new(Shared {
                dir,
                ready: Mutex::new(Vec::new()),
                low: Condvar::new(),
                closing: AtomicBool::new(false),
            }),
            thread: Mutex::new(None),
            started: AtomicBool::new(false),
        })
    }

    /// An empty file, opened for writing, and its path; `None` when none is
    /// ready (the caller creates one itself).
    pub fn take(&self) -> Option<(PathBuf, File)> {
        if !self.started.swap(true, Ordering::SeqCst) {
            *self.thread.lock() = self.start();
        }
        let mut ready = self.shared.ready.lock();
        let got = ready.pop();
        if ready.len() < TARGET / 2 {
            self.shared.low.notify_one();
        }
        got.map(|(path, file, _)| (path, file))
    }

    /// Starts the refill thread; `None` when it could not be made (commits
    /// then create their files themselves).
    fn start(&self) -> Option<JoinHandle<()>> {
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("sopfs-spares".into())
            .spawn(move || {
                while !shared.closing.load(Ordering::SeqCst) {
                    shared.refill();
                    let mut ready = shared.ready.lock();
                    if ready.len() >= TARGET / 2 && !shared.closing.load(Ordering::SeqCst) {
                        // The timeout rotates old spares.
                        shared.low.wait_for(&mut ready, Duration::from_secs(60));
                    }
                }
            });
        match spawned {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "no spare-file thread: objects are created on the commit path");
                None
            }
        }
    }
}

impl Shared {
    fn refill(&self) {
        if std::fs::create_dir_all(&self.dir).is_err() {
            return;
        }
        let stale: Vec<PathBuf> = {
            let mut ready = self.ready.lock();
            let (old, keep): (Vec<_>, Vec<_>) = ready
                .drain(..)
                .partition(|(_, _, made)| made.elapsed() >= ROTATE_AFTER);
            *ready = keep;
            old.into_iter().map(|(p, _, _)| p).collect()
        };
        for p in stale {
            let _ = std::fs::remove_file(p);
        }
        while self.ready.lock().len() < TARGET && !self.closing.load(Ordering::SeqCst) {
            let path = self.dir.join(format!("spare#{}", rand::random::<u32>()));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(f) => self.ready.lock().push((path, f, Instant::now())),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    tracing::debug!(error = %e, "could not make a spare file");
                    return;
                }
            }
        }
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        {
            // Under the lock, so the thread cannot miss the signal between
            // its check and its wait.
            let _ready = self.shared.ready.lock();
            self.shared.closing.store(true, Ordering::SeqCst);
            self.shared.low.notify_all();
        }
        if let Some(thread) = self.thread.get_mut().take() {
            let _ = thread.join();
        }
        for (path, _, _) in self.shared.ready.lock().drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }
}
