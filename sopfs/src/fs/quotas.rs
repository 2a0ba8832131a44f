//! Directory quotas on the mounted host: setting, reading and checking
//! them by path, and what `df` on a directory under one shows.

use super::Fs;
use crate::error::{FsError, FsResult};
use crate::ns::quota::{self, Quota};
use crate::ns::schema::{load, Kind, ROOT_INO};
use crate::ns::{paths, Caller};

/// A quota with the path of its directory.
#[derive(Clone, Debug)]
pub struct QuotaInfo {
    /// The directory, from the volume's root.
    pub path: String,
    /// Its limits and usage.
    pub quota: Quota,
}

/// What `sopfs quota check` found.
#[derive(Clone, Debug)]
pub struct QuotaCheck {
    /// The quota as recorded (before a repair).
    pub recorded: Quota,
    /// Bytes counted by the walk.
    pub bytes: u64,
    /// Inodes counted by the walk.
    pub inodes: u64,
}

fn root_only(caller: Caller) -> FsResult<()> {
    if caller.uid == 0 {
        return Ok(());
    }
    Err(FsError::NotPermitted)
}

impl Fs {
    /// Sets the quota of the directory at `path` (limits of 0: none); only
    /// root. Its usage is counted in the same transaction.
    pub fn quota_set(
        &self,
        caller: Caller,
        path: &str,
        max_bytes: u64,
        max_inodes: u64,
    ) -> FsResult<Quota> {
        root_only(caller)?;
        self.flush_all()?;
        let q = self.write_tx(|tx| {
            let dir = paths::resolve(tx, path)?;
            quota::set(tx, dir, max_bytes, max_inodes)
        })?;
        *self.quotas_seen.lock() = None;
        Ok(q)
    }

    /// Removes the quota of the directory at `path`; only root.
    pub fn quota_remove(&self, caller: Caller, path: &str) -> FsResult<()> {
        root_only(caller)?;
        self.write_tx(|tx| {
            let dir = paths::resolve(tx, path)?;
            match quota::remove(tx, dir)? {
                true => Ok(()),
                false => Err(FsError::NotFound),
            }
        })
    }

    /// The quota of the directory at `path`.
    pub fn quota_get(&self, path: &str) -> FsResult<Quota> {
        let mut tx = self.read_tx()?;
        let dir = paths::resolve(&mut tx, path)?;
        quota::get(&mut tx, dir)?.ok_or(FsError::NotFound)
    }

    /// Every quota of the volume.
    pub fn quota_list(&self) -> FsResult<Vec<QuotaInfo>> {
        let mut tx = self.read_tx()?;
        let mut out = Vec::new();
        for (dir, quota) in quota::list(&mut tx)? {
            let path = if dir == ROOT_INO {
                "/".to_string()
            } else {
                paths::path_of(&mut tx, dir)
            };
            out.push(QuotaInfo { path, quota });
        }
        Ok(out)
    }

    /// Counts the usage below the quota directory at `path` by a walk and
    /// compares it with the record; with `repair` (root only), writes what
    /// the walk counted.
    pub fn quota_check(&self, caller: Caller, path: &str, repair: bool) -> FsResult<QuotaCheck> {
        if repair {
            root_only(caller)?;
        }
        self.flush_all()?;
        self.write_tx(|tx| {
            let dir = paths::resolve(tx, path)?;
            let recorded = quota::get(tx, dir)?.ok_or(FsError::NotFound)?;
            let (bytes, inodes) = quota::walk(tx, dir, repair)?;
            if repair && (bytes, inodes) != (recorded.bytes, recorded.inodes) {
                let counted = Quota {
                    bytes,
                    inodes,
                    ..recorded
                };
                quota::record(tx, dir, &counted)?;
            }
            Ok(QuotaCheck {
                recorded,
                bytes,
                inodes,
            })
        })
    }

    /// True when the volume has quotas (asked at most once a second: a
    /// quota set on another host holds here within that).
    fn has_quotas(&self) -> FsResult<bool> {
        let mut seen = self.quotas_seen.lock();
        if let Some((at, has)) = *seen {
            if at.elapsed() < std::time::Duration::from_secs(1) {
                return Ok(has);
            }
        }
        let has = self.read_tx()?.tree_exists(quota::QUOTAS)?;
        *seen = Some((std::time::Instant::now(), has));
        Ok(has)
    }

    /// Bytes file `ino` may still grow by under its quotas (None: no
    /// byte limit); `home` is its directory when it is not committed yet.
    pub(super) fn quota_room(&self, ino: u64, home: Option<u64>) -> FsResult<Option<u64>> {
        if !self.has_quotas()? {
            return Ok(None);
        }
        let mut tx = self.read_tx()?;
        let dir = match home {
            Some(d) => d,
            None => quota::home(&load(&mut tx, ino)?),
        };
        Ok(quota::realm(&mut tx, dir)?
            .iter()
            .filter(|(_, q)| q.max_bytes > 0)
            .map(|(_, q)| q.max_bytes.saturating_sub(q.bytes))
            .min())
    }

    /// The innermost quota `ino` lies under (a file: its directory's), for
    /// `statfs` on it.
    pub fn quota_of(&self, ino: u64) -> FsResult<Option<Quota>> {
        let mut tx = self.read_tx()?;
        let i = load(&mut tx, ino)?;
        let dir = if i.kind == Kind::Dir {
            ino
        } else {
            quota::home(&i)
        };
        Ok(quota::realm(&mut tx, dir)?.first().map(|(_, q)| *q))
    }
}
