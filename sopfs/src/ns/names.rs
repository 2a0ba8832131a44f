//! Creating, linking, removing and renaming names.

use super::content::delete_inode;
use super::dirs::{is_empty, touch};
use super::schema::*;
use super::{Attr, Caller, Host, NodeSpec};
use crate::error::{FsError, FsResult};
use engine::Transaction;

/// Creates a node of any kind (files, directories, symlinks, devices) as
/// `parent/name`. Each insert checks its key is absent (a read validated at
/// commit): no separate lookups first.
pub fn make_node(
    tx: &mut Transaction,
    host: &dyn Host,
    caller: Caller,
    parent: u64,
    name: &[u8],
    spec: NodeSpec<'_>,
) -> FsResult<Attr> {
    let inode = new_node(tx, caller, parent, name, spec)?;
    let ino = insert_node(tx, host, parent, name, None, &inode)?;
    Ok(Attr { ino, inode })
}

/// The inode a new node `parent/name` of `spec` made by `caller` starts
/// with; checks the name and that the parent is a live directory.
pub fn new_node(
    tx: &mut Transaction,
    caller: Caller,
    parent: u64,
    name: &[u8],
    spec: NodeSpec<'_>,
) -> FsResult<Inode> {
    let NodeSpec {
        kind,
        perm,
        rdev,
        target,
    } = spec;
    check_name(name)?;
    if kind == Kind::Symlink && target.len() > 4095 {
        return Err(FsError::NameTooLong);
    }
    let p = load_dir(tx, parent)?;
    if p.nlink == 0 {
        return Err(FsError::NotFound);
    }
    let mut perm = perm & 0o7777;
    let mut gid = caller.gid;
    if p.perm & libc::S_ISGID != 0 {
        gid = p.gid;
        if kind == Kind::Dir {
            perm |= libc::S_ISGID;
        }
    }
    let mut inode = Inode::new(kind, perm, caller.uid, gid);
    inode.rdev = rdev;
    if kind == Kind::Symlink {
        inode.target = target.to_vec();
        inode.size = target.len() as u64;
        inode.perm = 0o777;
    }
    // Directories for `..`; files for the quotas they are charged to.
    inode.parent = parent;
    Ok(inode)
}

/// Inserts `inode` as `parent/name`: under `ino` when given (a number the
/// host handed out before this commit), else under a fresh one. Returns
/// the inode number; `EEXIST` if the name is taken, `ENOENT` if the parent
/// is gone.
pub fn insert_node(
    tx: &mut Transaction,
    host: &dyn Host,
    parent: u64,
    name: &[u8],
    ino: Option<u64>,
    inode: &Inode,
) -> FsResult<u64> {
    if ino.is_some() && load_dir(tx, parent)?.nlink == 0 {
        return Err(FsError::NotFound);
    }
    let fixed = ino.is_some();
    let mut ino = ino.unwrap_or_else(new_ino);
    let encoded = inode.encode();
    loop {
        match tx.insert(INODES, &ino_key(ino), &encoded) {
            // A number handed out earlier that another host took since
            // (its prefix drawn by two processes): the file is refused,
            // never mixed.
            Err(engine::Error::KeyExists) if fixed => {
                return Err(FsError::Corrupted(format!("inode {ino:#x} taken twice")))
            }
            Err(engine::Error::KeyExists) => ino = new_ino_after(ino),
            r => break r?,
        }
    }
    let kind = inode.kind;
    let bytes = if kind == Kind::File { inode.size } else { 0 };
    super::quota::charge(tx, parent, bytes as i64, 1)?;
    match tx.insert(&dir_tree(parent), name, &Entry { ino, kind }.encode()) {
        Err(engine::Error::KeyExists) => return Err(FsError::Exists),
        r => r?,
    }
    if kind == Kind::Dir {
        tx.create_tree(&dir_tree(ino), DIR_TREE)?;
    }
    touch(tx, host.id(), parent, (kind == Kind::Dir) as i64)?;
    Ok(ino)
}

/// A new hard link `newparent/newname` to `ino`.
pub fn link(
    tx: &mut Transaction,
    host: &dyn Host,
    ino: u64,
    newparent: u64,
    newname: &[u8],
) -> FsResult<Attr> {
    check_name(newname)?;
    let mut inode = load(tx, ino)?;
    if inode.kind == Kind::Dir {
        return Err(FsError::NotPermitted);
    }
    let p = load_dir(tx, newparent)?;
    if p.nlink == 0 {
        return Err(FsError::NotFound);
    }
    if entry(tx, newparent, newname)?.is_some() {
        return Err(FsError::Exists);
    }
    if !super::quota::same_realm(tx, super::quota::home(&inode), newparent)? {
        return Err(FsError::CrossQuota);
    }
    inode.nlink += 1;
    inode.ctime = Time::now();
    store(tx, ino, &inode)?;
    let e = Entry {
        ino,
        kind: inode.kind,
    };
    tx.insert(&dir_tree(newparent), newname, &e.encode())?;
    touch(tx, host.id(), newparent, 0)?;
    Ok(Attr { ino, inode })
}

/// Drops one link of a non-directory, whose name in `dir` went; deletes
/// it with its content at the last link unless it is in use on the host.
/// Its quotas are uncharged at its last link.
fn drop_link(tx: &mut Transaction, host: &dyn Host, dir: u64, ino: u64) -> FsResult<()> {
    let mut inode = load(tx, ino)?;
    inode.nlink = inode.nlink.saturating_sub(1);
    inode.ctime = Time::now();
    if inode.nlink == 0 {
        let bytes = if inode.kind == Kind::File {
            inode.size
        } else {
            0
        };
        super::quota::charge(tx, dir, -(bytes as i64), -1)?;
    } else if inode.parent == dir {
        // Its home name went: another directory under the same quotas.
        inode.parent = super::quota::anchor(tx, dir)?;
    }
    if inode.nlink > 0 || host.in_use(ino) {
        store(tx, ino, &inode)
    } else {
        delete_inode(tx, ino)
    }
}

/// Removes the non-directory name `parent/name`; returns its inode.
pub fn unlink(tx: &mut Transaction, host: &dyn Host, parent: u64, name: &[u8]) -> FsResult<u64> {
    check_name_len(name)?;
    load_dir(tx, parent)?;
    let e = entry(tx, parent, name)?.ok_or(FsError::NotFound)?;
    if e.kind == Kind::Dir {
        return Err(FsError::IsDir);
    }
    tx.remove(&dir_tree(parent), name)?;
    if !super::trash::keep(tx, host, parent, name, e.ino)? {
        drop_link(tx, host, parent, e.ino)?;
    }
    touch(tx, host.id(), parent, 0)?;
    Ok(e.ino)
}

/// Removes the empty directory `parent/name`.
pub fn rmdir(tx: &mut Transaction, host: &dyn Host, parent: u64, name: &[u8]) -> FsResult<()> {
    check_name_len(name)?;
    load_dir(tx, parent)?;
    let e = entry(tx, parent, name)?.ok_or(FsError::NotFound)?;
    if e.kind != Kind::Dir {
        return Err(FsError::NotDir);
    }
    if !is_empty(tx, e.ino)? {
        return Err(FsError::NotEmpty);
    }
    tx.remove(&dir_tree(parent), name)?;
    tx.drop_tree(&dir_tree(e.ino))?;
    tx.remove(INODES, &ino_key(e.ino))?;
    super::quota::remove(tx, e.ino)?;
    super::quota::charge(tx, parent, 0, -1)?;
    touch(tx, host.id(), parent, -1)?;
    Ok(())
}

/// True when `dir` is `ancestor` or lies below it.
pub(crate) fn is_under(tx: &mut Transaction, mut dir: u64, ancestor: u64) -> FsResult<bool> {
    for _ in 0..4096 {
        if dir == ancestor {
            return Ok(true);
        }
        if dir == ROOT_INO {
            return Ok(false);
        }
        dir = load(tx, dir)?.parent;
    }
    Err(FsError::Corrupted(
        "directory chain longer than 4096".into(),
    ))
}

/// Renames; `flags` takes `RENAME_NOREPLACE` and `RENAME_EXCHANGE`. Returns
/// the file whose last name the rename replaced, if any.
pub fn rename(
    tx: &mut Transaction,
    host: &dyn Host,
    parent: u64,
    name: &[u8],
    newparent: u64,
    newname: &[u8],
    flags: u32,
) -> FsResult<Option<u64>> {
    check_name(newname)?;
    check_name_len(name)?;
    let noreplace = flags & libc::RENAME_NOREPLACE != 0;
    let exchange = flags & libc::RENAME_EXCHANGE != 0;
    if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 || (noreplace && exchange) {
        return Err(FsError::Invalid("rename flags"));
    }
    load_dir(tx, parent)?;
    let np = load_dir(tx, newparent)?;
    if np.nlink == 0 {
        return Err(FsError::NotFound);
    }
    let src = entry(tx, parent, name)?.ok_or(FsError::NotFound)?;
    let dst = entry(tx, newparent, newname)?;
    let now = Time::now();
    let me = host.id();
    // A directory may not move below itself; the ancestor chain read
    // here is validated at commit, so crossing moves cannot loop.
    let check_move = |tx: &mut Transaction, e: &Entry, to: u64| -> FsResult<()> {
        if e.kind == Kind::Dir && is_under(tx, to, e.ino)? {
            return Err(FsError::Invalid("directory moved below itself"));
        }
        Ok(())
    };
    if exchange {
        let dst = dst.ok_or(FsError::NotFound)?;
        if parent != newparent {
            check_move(tx, &src, newparent)?;
            check_move(tx, &dst, parent)?;
            if !super::quota::same_realm(tx, parent, newparent)? {
                return Err(FsError::CrossQuota);
            }
        }
        tx.upsert(&dir_tree(parent), name, &dst.encode())?;
        tx.upsert(&dir_tree(newparent), newname, &src.encode())?;
        for (e, to) in [(src, newparent), (dst, parent)] {
            let mut i = load(tx, e.ino)?;
            i.ctime = now;
            if e.kind == Kind::Dir {
                i.parent = to;
            }
            store(tx, e.ino, &i)?;
        }
        let moved = (src.kind == Kind::Dir) as i64 - (dst.kind == Kind::Dir) as i64;
        touch(tx, me, parent, -moved)?;
        if parent != newparent {
            touch(tx, me, newparent, moved)?;
        }
        return Ok(None);
    }
    let mut replaced = None;
    if let Some(dst) = dst {
        if noreplace {
            return Err(FsError::Exists);
        }
        if dst.ino == src.ino {
            // Two links of one file: POSIX says do nothing.
            return Ok(None);
        }
        match (src.kind == Kind::Dir, dst.kind == Kind::Dir) {
            (true, false) => return Err(FsError::NotDir),
            (false, true) => return Err(FsError::IsDir),
            (true, true) => {
                if !is_empty(tx, dst.ino)? {
                    return Err(FsError::NotEmpty);
                }
            }
            (false, false) => {}
        }
        if src.kind == Kind::Dir {
            check_move(tx, &src, newparent)?;
            tx.drop_tree(&dir_tree(dst.ino))?;
            tx.remove(INODES, &ino_key(dst.ino))?;
            super::quota::remove(tx, dst.ino)?;
            super::quota::charge(tx, newparent, 0, -1)?;
            touch(tx, me, newparent, -1)?;
        } else if !super::trash::keep(tx, host, newparent, newname, dst.ino)? {
            drop_link(tx, host, newparent, dst.ino)?;
            replaced = Some(dst.ino);
        }
    } else if parent != newparent {
        check_move(tx, &src, newparent)?;
    }
    tx.remove(&dir_tree(parent), name)?;
    tx.upsert(&dir_tree(newparent), newname, &src.encode())?;
    let mut i = load(tx, src.ino)?;
    if parent != newparent && !super::quota::same_realm(tx, parent, newparent)? {
        // Only a file with one name can say where it is charged after.
        if src.kind == Kind::Dir || i.nlink > 1 {
            return Err(FsError::CrossQuota);
        }
        let bytes = if src.kind == Kind::File {
            i.size as i64
        } else {
            0
        };
        super::quota::charge(tx, parent, -bytes, -1)?;
        super::quota::charge(tx, newparent, bytes, 1)?;
    }
    i.ctime = now;
    if src.kind == Kind::Dir || i.nlink == 1 || i.parent == parent {
        i.parent = newparent;
    }
    store(tx, src.ino, &i)?;
    let d = (src.kind == Kind::Dir && parent != newparent) as i64;
    touch(tx, me, parent, -d)?;
    touch(tx, me, newparent, d)?;
    Ok(replaced)
}
