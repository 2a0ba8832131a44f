//! The kernel's references to inodes (lookup counts) and the orphans they
//! keep alive: an unlinked inode the kernel or a handle still refers to
//! lives on until nothing does, then the reaper deletes it.

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};

/// Lookup counts, orphans, and orphans due for the reaper.
#[derive(Default)]
pub(crate) struct KernelRefs {
    /// Kernel references per inode (lookup counts).
    lookups: Mutex<HashMap<u64, u64>>,
    /// Unlinked inodes kept alive for the kernel or open handles.
    orphans: Mutex<HashSet<u64>>,
    /// Orphans the kernel has just forgotten, for the reaper to delete
    /// together (one commit for many, not one per FORGET).
    reap_queue: Mutex<Vec<u64>>,
}

impl KernelRefs {
    /// The kernel took one more reference to `ino`.
    pub(crate) fn remember(&self, ino: u64) {
        *self.lookups.lock().entry(ino).or_insert(0) += 1;
    }

    /// The kernel dropped `n` references to `ino`; an orphan it no longer
    /// knows is queued for the reaper.
    pub(crate) fn forget(&self, ino: u64, n: u64) {
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
            self.reap_queue.lock().push(ino);
        }
    }

    /// True while the kernel holds a reference to `ino`.
    pub(crate) fn referenced(&self, ino: u64) -> bool {
        self.lookups.lock().get(&ino).is_some_and(|&n| n > 0)
    }

    /// The kernel forgets everything (unmount).
    pub(crate) fn forget_all(&self) {
        self.lookups.lock().clear();
    }

    /// True when `ino` is an orphan kept alive here.
    pub(crate) fn is_orphan(&self, ino: u64) -> bool {
        self.orphans.lock().contains(&ino)
    }

    /// Keeps the unlinked `ino` alive until nothing refers to it.
    pub(crate) fn add_orphans(&self, inos: impl IntoIterator<Item = u64>) {
        self.orphans.lock().extend(inos);
    }

    /// Takes `ino` off the orphans; false if it was not one.
    pub(crate) fn take_orphan(&self, ino: u64) -> bool {
        self.orphans.lock().remove(&ino)
    }

    /// Every orphan.
    pub(crate) fn orphans(&self) -> Vec<u64> {
        self.orphans.lock().iter().copied().collect()
    }

    /// Orphans forgotten since the last call that `in_use` no longer holds,
    /// taken off the orphans: the reaper deletes them.
    pub(crate) fn take_due(&self, in_use: impl Fn(u64) -> bool) -> Vec<u64> {
        let queued = std::mem::take(&mut *self.reap_queue.lock());
        let idle: Vec<u64> = queued.into_iter().filter(|&i| !in_use(i)).collect();
        let mut orphans = self.orphans.lock();
        idle.into_iter().filter(|i| orphans.remove(i)).collect()
    }
}
