//! What other hosts changed that the kernel may still cache: learned from
//! the log's foreign commits, reported to the FUSE notifier.

use crate::ns::schema::{CONTENT, INODES};
use engine::Db;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::Arc;

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

/// Where stale entries go, and how far the log has been looked at.
#[derive(Default)]
pub(crate) struct Invalidation {
    /// Newest commit whose changes were pushed to the kernel's caches.
    seen: Mutex<u64>,
    /// Stale names found from inside a handler, for the periodic caller.
    deferred: Mutex<Vec<Stale>>,
    invalidator: Mutex<Option<Invalidator>>,
}

/// The directory a `d<ino in hex>` tree name names.
fn dir_of(tree: &str) -> Option<u64> {
    tree.strip_prefix('d')
        .and_then(|h| u64::from_str_radix(h, 16).ok())
}

fn collect_stale(tree: &str, keys: &[Vec<u8>], out: &mut HashSet<Stale>) {
    let ino_of =
        |k: &[u8]| -> Option<u64> { Some(u64::from_be_bytes(k.get(..8)?.try_into().ok()?)) };
    if tree == INODES || tree == CONTENT {
        out.extend(keys.iter().filter_map(|k| ino_of(k)).map(Stale::Inode));
    } else if let Some(dir) = dir_of(tree) {
        out.insert(Stale::Inode(dir));
        for k in keys.iter().filter(|k| !k.starts_with(b"\0")) {
            out.insert(Stale::Entry(dir, k.clone()));
        }
    }
}

impl Invalidation {
    /// Queues entries this host made stale itself (a create given up at
    /// its commit) for the periodic caller.
    pub(crate) fn later(&self, stale: impl IntoIterator<Item = Stale>) {
        self.deferred.lock().extend(stale);
    }

    /// Reports to `f` from now on (from commit `seq` on).
    pub(crate) fn set(&self, f: Invalidator, seq: u64) {
        *self.seen.lock() = seq;
        *self.invalidator.lock() = Some(f);
    }

    /// Reports what other hosts changed since the last call: inodes at
    /// once, names from the periodic caller only (`from_handler` false).
    pub(crate) fn refresh(&self, db: &Db, from_handler: bool) {
        if !db.is_shared() {
            return;
        }
        let Some(inval) = self.invalidator.lock().clone() else {
            return;
        };
        // The catch-up (a Redis round trip, and the records' reads if any
        // landed) runs outside the lock: opens on many threads wait for
        // their round trips together, not one after another.
        let newest = db.catch_up_fresh();
        // Held until the inodes found are delivered, so an open that finds
        // nothing new (another thread delivered up to its state or past)
        // can trust that what was found before has reached the kernel.
        let mut seen = self.seen.lock();
        let found = newest.and_then(|n| {
            let after = *seen;
            db.foreign_commits_between(after, n)
                .map(|r| (n.max(after), r))
        });
        let stale = match found {
            Ok((seq, records)) => {
                *seen = seq;
                let mut out = HashSet::new();
                for r in &records {
                    for w in &r.writes {
                        collect_stale(&w.tree, &w.keys, &mut out);
                    }
                    out.extend(
                        r.replaced_trees
                            .iter()
                            .filter_map(|t| dir_of(t))
                            .map(Stale::Inode),
                    );
                }
                out.into_iter().collect::<Vec<_>>()
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell what changed: dropping all cached entries");
                *seen = db.seq();
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
}
