//! The filesystem steps of a macro, as namespace operations inside the
//! run's transaction: paths in, the volume's entries and files out.

use crate::error::FsError;
use crate::ns::schema::Kind;
use crate::ns::{content, dirs, names, paths, Attr, Caller, Host, NodeSpec};
use engine::Transaction;

type FsResult<T> = Result<T, FsError>;

/// The entries of directory `path` with names in `[from, to)`, each with
/// its attributes.
pub(super) fn list(
    t: &mut Transaction,
    host: &dyn Host,
    path: &str,
    from: Option<&str>,
    to: Option<&str>,
) -> FsResult<Vec<(Vec<u8>, Attr)>> {
    let dir = paths::resolve(t, path)?;
    paths::list(
        t,
        host,
        dir,
        from.map(str::as_bytes),
        to.map(str::as_bytes),
        usize::MAX,
    )
}

/// The content of the file at `path`.
pub(super) fn read(t: &mut Transaction, path: &str) -> FsResult<Vec<u8>> {
    let ino = paths::resolve(t, path)?;
    content::read_file(t, ino)
}

/// Removes the file or empty directory at `path`.
pub(super) fn delete(t: &mut Transaction, host: &dyn Host, path: &str) -> FsResult<()> {
    let (dir, name) = paths::resolve_parent(t, path)?;
    let ino = paths::resolve(t, path)?;
    if dirs::attr(t, host, ino)?.inode.kind == Kind::Dir {
        names::rmdir(t, host, dir, &name)
    } else {
        names::unlink(t, host, dir, &name).map(|_| ())
    }
}

/// Makes the directory `path`; with `parents`, every missing one on the
/// way, and an existing directory is fine.
pub(super) fn mkdir(
    t: &mut Transaction,
    host: &dyn Host,
    caller: Caller,
    path: &str,
    parents: bool,
) -> FsResult<()> {
    let dir_spec = NodeSpec::new(Kind::Dir, 0o755);
    if !parents {
        let (dir, name) = paths::resolve_parent(t, path)?;
        return names::make_node(t, host, caller, dir, &name, dir_spec).map(|_| ());
    }
    let mut cur = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        let parent = paths::resolve(t, &cur)?;
        cur = format!("{cur}/{part}");
        match paths::resolve(t, &cur) {
            Ok(ino) if dirs::attr(t, host, ino)?.inode.kind == Kind::Dir => {}
            Ok(_) => return Err(FsError::NotDir),
            Err(FsError::NotFound) => {
                names::make_node(t, host, caller, parent, part.as_bytes(), dir_spec)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Renames `from` to `to`.
pub(super) fn rename(t: &mut Transaction, host: &dyn Host, from: &str, to: &str) -> FsResult<()> {
    let (fd, fname) = paths::resolve_parent(t, from)?;
    let (td, tname) = paths::resolve_parent(t, to)?;
    names::rename(t, host, fd, &fname, td, &tname, 0).map(|_| ())
}

/// Copies the file `from` to `to` (replacing its content).
pub(super) fn copy(
    t: &mut Transaction,
    host: &dyn Host,
    caller: Caller,
    from: &str,
    to: &str,
) -> FsResult<()> {
    let data = read(t, from)?;
    paths::write_file(t, host, caller, to, &data, false)
}
