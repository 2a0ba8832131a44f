//! Whole paths: resolving them, writing a file by path, listing a
//! directory's range, walking the tree (checks, and a path for an inode in
//! messages).

use super::content::{cut, Patcher};
use super::dirs::{attr, touch, Entries};
use super::names::make_node;
use super::schema::*;
use super::{Attr, Caller, Host, NodeSpec};
use crate::error::{FsError, FsResult};
use engine::Transaction;

/// The inode at `path` ("/a/b", from the volume's root; symlinks are not followed).
pub fn resolve(tx: &mut Transaction, path: &str) -> FsResult<u64> {
    let mut ino = ROOT_INO;
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        load_dir(tx, ino)?;
        ino = entry(tx, ino, part.as_bytes())?
            .ok_or(FsError::NotFound)?
            .ino;
    }
    Ok(ino)
}

/// The parent directory of `path` and the last name in it.
pub fn resolve_parent(tx: &mut Transaction, path: &str) -> FsResult<(u64, Vec<u8>)> {
    let trimmed = path.trim_end_matches('/');
    let (dir, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    if name.is_empty() || name == "." || name == ".." {
        return Err(FsError::Invalid("path names no entry"));
    }
    Ok((resolve(tx, dir)?, name.as_bytes().to_vec()))
}

/// Writes `data` as the whole content of `path` (or at its end with
/// `append`), creating the file if absent.
pub fn write_file(
    tx: &mut Transaction,
    host: &dyn Host,
    caller: Caller,
    path: &str,
    data: &[u8],
    append: bool,
) -> FsResult<()> {
    let (dir, name) = resolve_parent(tx, path)?;
    let ino = match entry(tx, dir, &name)? {
        Some(e) if e.kind == Kind::File => e.ino,
        Some(e) if e.kind == Kind::Dir => return Err(FsError::IsDir),
        Some(_) => return Err(FsError::Invalid("not a regular file")),
        None => {
            make_node(
                tx,
                host,
                caller,
                dir,
                &name,
                NodeSpec::new(Kind::File, 0o644),
            )?
            .ino
        }
    };
    let mut inode = load(tx, ino)?;
    let offset = if append { inode.size } else { 0 };
    if !append {
        cut(tx, ino, 0)?;
    }
    let end = offset + data.len() as u64;
    if end > MAX_FILE_SIZE {
        return Err(FsError::TooBig);
    }
    let mut patch = Patcher::new(ino);
    patch.write(tx, offset, data)?;
    patch.finish(tx)?;
    let now = Time::now();
    let size = if append { end } else { data.len() as u64 };
    super::quota::charge(tx, dir, size as i64 - inode.size as i64, 0)?;
    inode.size = size;
    inode.mtime = now;
    inode.ctime = now;
    store(tx, ino, &inode)?;
    touch(tx, host.id(), dir, 0)
}

/// Entries of a directory with names in `[from, to)` (both optional), at
/// most `limit`, each with its attributes.
pub fn list(
    tx: &mut Transaction,
    host: &dyn Host,
    dir: u64,
    from: Option<&[u8]>,
    to: Option<&[u8]>,
    limit: usize,
) -> FsResult<Vec<(Vec<u8>, Attr)>> {
    load_dir(tx, dir)?;
    let mut entries = Entries::range(dir, from, to);
    let mut out = Vec::new();
    while out.len() < limit {
        let want = (limit - out.len()).min(1024);
        let Some(batch) = entries.next_batch(tx, want)? else {
            break;
        };
        for (k, v) in batch {
            if let Some(e) = Entry::decode(&v) {
                out.push((k, attr(tx, host, e.ino)?));
            }
        }
    }
    Ok(out)
}

/// Walks every directory from the root and checks each B-tree and that
/// every entry points at an inode of its kind; returns (directories, files).
pub fn check(tx: &mut Transaction) -> FsResult<(u64, u64)> {
    tx.check_tree(INODES)?;
    tx.check_tree(CONTENT)?;
    let (mut dirs, mut files) = (0u64, 0u64);
    let mut stack = vec![ROOT_INO];
    while let Some(d) = stack.pop() {
        dirs += 1;
        tx.check_tree(&dir_tree(d))?;
        let mut entries = Entries::of(d);
        while let Some(batch) = entries.next_batch(tx, 1024)? {
            for (name, v) in batch {
                let e = Entry::decode(&v).ok_or_else(|| {
                    FsError::Corrupted(format!(
                        "entry {:?} in {d:#x}",
                        String::from_utf8_lossy(&name)
                    ))
                })?;
                let i = load(tx, e.ino).map_err(|_| {
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
        }
    }
    Ok((dirs, files))
}

/// A path of `ino` for messages: a breadth-first search from the root,
/// bounded so a damaged read on a huge volume still answers quickly.
pub fn path_of(tx: &mut Transaction, ino: u64) -> String {
    let mut queue = std::collections::VecDeque::from([(ROOT_INO, String::new())]);
    let mut budget = 200_000usize;
    while let Some((d, path)) = queue.pop_front() {
        let mut entries = Entries::of(d);
        while let Ok(Some(batch)) = entries.next_batch(tx, 1024) {
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
            if budget == 0 {
                break;
            }
        }
        if budget == 0 {
            break;
        }
    }
    format!("<inode {ino:#x}>")
}
