//! The trash: with the volume setting `trash_days` above 0, a file whose
//! last name goes (unlink, or a rename over it) is moved to
//! `/.trash/<hour>/<path>` instead of being deleted, where `mv` restores
//! it; hours older than `trash_days` are emptied by `sopfs gc` and by every
//! read-write mount (once an hour). `/.trash` is a real directory of the
//! volume: names under it are removed for good, and the setting lives in
//! the volume, so every host agrees.

use super::dirs::{touch, Entries};
use super::names::{is_under, rmdir, unlink};
use super::schema::*;
use super::Host;
use crate::error::{FsError, FsResult};
use engine::{Transaction, TreeConfig};
use parking_lot::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Name of the trash folder in the root.
pub const FOLDER: &[u8] = b".trash";
/// The settings tree: one key per volume-wide setting.
pub const SETTINGS: &str = "s";
const SETTINGS_TREE: TreeConfig = TreeConfig {
    slots: 16,
    inline_max: 256,
};
const TRASH_DAYS: &[u8] = b"trash_days";
/// Directories a trash path is made of that one host remembers.
const NAMES_MAX: usize = 4096;

/// Names of directories a host learned while moving files to the trash:
/// finding a directory's name means scanning its parent, so each is looked
/// for once. A name renamed since shows its old path in the trash.
pub struct DirNames(Mutex<lru::LruCache<u64, (u64, Vec<u8>)>>);

impl Default for DirNames {
    fn default() -> Self {
        DirNames(Mutex::new(lru::LruCache::new(
            std::num::NonZeroUsize::new(NAMES_MAX).unwrap_or(std::num::NonZeroUsize::MIN),
        )))
    }
}

/// Days a removed file stays in the trash; 0 when the trash is off.
pub fn days(tx: &mut Transaction) -> FsResult<u32> {
    match tx.get(SETTINGS, TRASH_DAYS) {
        Ok(Some(v)) => Ok(v
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .unwrap_or(0)),
        Ok(None) | Err(engine::Error::TreeNotFound(_)) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Sets the volume's `trash_days` (0 turns the trash off).
pub fn set_days(tx: &mut Transaction, n: u32) -> FsResult<()> {
    tx.ensure_tree(SETTINGS, SETTINGS_TREE)?;
    tx.upsert(SETTINGS, TRASH_DAYS, &n.to_be_bytes())?;
    Ok(())
}

/// The folder of the hour `t` falls in: `YYYY-MM-DD-HH`, UTC.
pub fn hour_name(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, hour) = (secs / 86_400, (secs % 86_400) / 3_600);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}-{hour:02}")
}

/// The start of the hour a trash folder is named after.
pub fn hour_start(name: &[u8]) -> Option<SystemTime> {
    let s = std::str::from_utf8(name).ok()?;
    let mut parts = s.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d, h) = (
        parts.next()??,
        parts.next()??,
        parts.next()??,
        parts.next()??,
    );
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    let secs = u64::try_from(days * 86_400 + h * 3_600).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

// Gregorian calendar <-> days since 1970-01-01 (H. Hinnant's algorithms).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + (m <= 2) as i64, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The directory `parent/name`, made with `like`'s owner and mode when
/// missing.
fn ensure_dir(
    tx: &mut Transaction,
    host: &dyn Host,
    parent: u64,
    name: &[u8],
    like: &Inode,
) -> FsResult<u64> {
    if let Some(e) = entry(tx, parent, name)? {
        if e.kind == Kind::Dir {
            return Ok(e.ino);
        }
        return Err(FsError::Corrupted(format!(
            "trash: {} is not a directory",
            String::from_utf8_lossy(name)
        )));
    }
    let mut inode = Inode::new(Kind::Dir, like.perm & 0o7777, like.uid, like.gid);
    inode.parent = parent;
    super::names::insert_node(tx, host, parent, name, None, &inode)
}

/// The name of directory `dir` in its parent `parent`.
fn name_in(
    tx: &mut Transaction,
    names: Option<&DirNames>,
    dir: u64,
    parent: u64,
) -> FsResult<Vec<u8>> {
    if let Some(n) = names.and_then(|c| c.0.lock().get(&dir).cloned()) {
        if n.0 == parent {
            return Ok(n.1);
        }
    }
    let mut entries = Entries::of(parent);
    while let Some(batch) = entries.next_batch(tx, 1024)? {
        for (name, v) in batch {
            if Entry::decode(&v).is_some_and(|e| e.ino == dir) {
                if let Some(c) = names {
                    c.0.lock().put(dir, (parent, name.clone()));
                }
                return Ok(name);
            }
        }
    }
    Ok(format!("{dir:x}").into_bytes())
}

/// Moves file `ino`, whose name `parent/name` the caller has just removed,
/// into the trash, if the trash is on and that was its last name; true
/// when it did (the caller then keeps the inode).
pub fn keep(
    tx: &mut Transaction,
    host: &dyn Host,
    parent: u64,
    name: &[u8],
    ino: u64,
) -> FsResult<bool> {
    if days(tx)? == 0 {
        return Ok(false);
    }
    let mut inode = load(tx, ino)?;
    if inode.nlink > 1 || inode.kind == Kind::Dir {
        return Ok(false);
    }
    // Anyone may pass through the trash and take back what is theirs (the
    // sticky bit keeps others' entries safe), like /tmp.
    let root_dir = load_dir(tx, ROOT_INO)?;
    let folder_like = Inode::new(Kind::Dir, 0o1777, root_dir.uid, root_dir.gid);
    let trash = ensure_dir(tx, host, ROOT_INO, FOLDER, &folder_like)?;
    if is_under(tx, parent, trash)? {
        return Ok(false);
    }
    // The path from the root down to `parent`, as names and inodes.
    let mut chain = Vec::new();
    let mut at = parent;
    while at != ROOT_INO {
        let d = load_dir(tx, at)?;
        let up = d.parent.max(ROOT_INO);
        chain.push((name_in(tx, host.dir_names(), at, up)?, d));
        at = up;
        if chain.len() > 4096 {
            return Err(FsError::Corrupted(
                "directory chain longer than 4096".into(),
            ));
        }
    }
    let hour = hour_name(SystemTime::now());
    let mut dir = ensure_dir(tx, host, trash, hour.as_bytes(), &folder_like)?;
    for (n, like) in chain.iter().rev() {
        dir = ensure_dir(tx, host, dir, n, like)?;
    }
    let mut to = name.to_vec();
    if entry(tx, dir, &to)?.is_some() {
        // The same path removed twice within the hour: both kept.
        to.extend_from_slice(format!(".~{ino:x}~").as_bytes());
        to.truncate(NAME_MAX);
    }
    let e = Entry {
        ino,
        kind: inode.kind,
    };
    match tx.insert(&dir_tree(dir), &to, &e.encode()) {
        Err(engine::Error::KeyExists) => return Err(FsError::Exists),
        r => r?,
    }
    // Its usage moves with it, from the quotas of where it was to the trash's.
    let bytes = if inode.kind == Kind::File {
        inode.size as i64
    } else {
        0
    };
    super::quota::charge(tx, parent, -bytes, -1)?;
    super::quota::charge(tx, dir, bytes, 1)?;
    inode.parent = dir;
    inode.ctime = Time::now();
    store(tx, ino, &inode)?;
    touch(tx, host.id(), dir, 0)?;
    Ok(true)
}

/// Hour folders of the trash past `days` at `now` (none when the trash is
/// off: what it holds then stays until removed by hand).
fn expired(tx: &mut Transaction, now: SystemTime) -> FsResult<Vec<(u64, Vec<u8>)>> {
    let keep_for = Duration::from_secs(86_400 * days(tx)? as u64);
    if keep_for.is_zero() {
        return Ok(Vec::new());
    }
    let Some(trash) = entry(tx, ROOT_INO, FOLDER)?.filter(|e| e.kind == Kind::Dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut entries = Entries::of(trash.ino);
    while let Some(batch) = entries.next_batch(tx, 1024)? {
        for (name, _) in batch {
            let Some(start) = hour_start(&name) else {
                continue;
            };
            if start + Duration::from_secs(3_600) + keep_for <= now {
                out.push((trash.ino, name));
            }
        }
    }
    Ok(out)
}

/// Removes up to `budget` names below `parent/name` (depth first) and the
/// directory itself once empty; returns the names removed.
fn remove_some(
    tx: &mut Transaction,
    host: &dyn Host,
    parent: u64,
    name: &[u8],
    budget: usize,
) -> FsResult<usize> {
    let Some(e) = entry(tx, parent, name)? else {
        return Ok(0);
    };
    if e.kind != Kind::Dir {
        unlink(tx, host, parent, name)?;
        return Ok(1);
    }
    let mut done = 0;
    let mut entries = Entries::of(e.ino);
    while done < budget {
        let Some(batch) = entries.next_batch(tx, 256)? else {
            break;
        };
        for (child, _) in batch {
            done += remove_some(tx, host, e.ino, &child, budget - done)?;
            if done >= budget {
                return Ok(done);
            }
        }
    }
    if super::dirs::is_empty(tx, e.ino)? {
        rmdir(tx, host, parent, name)?;
        done += 1;
    }
    Ok(done)
}

/// Names removed per transaction when emptying the trash.
const BATCH: usize = 2_000;

/// Empties the trash of what is older than the volume's `trash_days` at
/// `now`, in transactions of a bounded size run by `run`; returns the
/// names removed.
pub fn empty_expired(
    host: &dyn Host,
    now: SystemTime,
    mut run: impl FnMut(&mut dyn FnMut(&mut Transaction) -> FsResult<usize>) -> FsResult<usize>,
) -> FsResult<u64> {
    let mut total = 0u64;
    loop {
        let n = run(&mut |tx| {
            let mut done = 0;
            for (trash, hour) in expired(tx, now)? {
                done += remove_some(tx, host, trash, &hour, BATCH - done)?;
                if done >= BATCH {
                    break;
                }
            }
            Ok(done)
        })?;
        total += n as u64;
        if n == 0 {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hour_folders_name_their_hour_and_read_back() {
        for secs in [
            0u64,
            3_599,
            3_600,
            951_782_400,
            1_796_428_800 + 5 * 3_600 + 17,
        ] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            let name = hour_name(t);
            let start = hour_start(name.as_bytes()).expect("parses");
            assert_eq!(
                start,
                UNIX_EPOCH + Duration::from_secs(secs / 3_600 * 3_600)
            );
        }
        assert_eq!(
            hour_name(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29-00"
        );
        for bad in [
            "",
            "2026-12-05",
            "2026-13-01-00",
            "2026-12-05-24",
            "x-1-1-1",
            "2026-12-05-01-7",
        ] {
            assert_eq!(hour_start(bad.as_bytes()), None, "{bad}");
        }
    }
}
