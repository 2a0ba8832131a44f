//! Directory snapshots: an open directory's listing, taken at `opendir` so
//! offsets stay stable while entries change.

use crate::error::{FsError, FsResult};
use crate::ns::DirEntry;
use parking_lot::Mutex;
use std::collections::HashMap;

/// Listings of open directories by handle.
#[derive(Default)]
pub(crate) struct DirSnapshots(Mutex<HashMap<u64, Vec<DirEntry>>>);

impl DirSnapshots {
    /// Keeps `list` for handle `fh`.
    pub(crate) fn insert(&self, fh: u64, list: Vec<DirEntry>) {
        self.0.lock().insert(fh, list);
    }

    /// Calls `f` with handle `fh`'s listing.
    pub(crate) fn with<T>(&self, fh: u64, f: impl FnOnce(&[DirEntry]) -> T) -> FsResult<T> {
        let dirs = self.0.lock();
        let list = dirs.get(&fh).ok_or(FsError::BadHandle)?;
        Ok(f(list))
    }

    /// Forgets handle `fh`.
    pub(crate) fn remove(&self, fh: u64) {
        self.0.lock().remove(&fh);
    }
}
