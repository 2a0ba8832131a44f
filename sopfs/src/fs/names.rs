//! Names on the mounted host: creating, linking, removing and renaming, and
//! the orphans an unlink leaves while something here still uses the file.

use super::Fs;
use crate::error::{FsError, FsResult};
use crate::ns::clone::{self, CloneReport};
use crate::ns::content::delete_inode;
use crate::ns::schema::{check_name_len, load};
use crate::ns::{names, Attr, Caller, Host, NodeSpec};
use engine::Transaction;

/// Deletes `ino` if its last link is gone (another host may have linked it
/// again, or deleted it already).
fn delete_if_unlinked(tx: &mut Transaction, ino: u64) -> FsResult<()> {
    match load(tx, ino) {
        Ok(i) if i.nlink == 0 => delete_inode(tx, ino),
        Ok(_) | Err(FsError::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Fs {
    /// Clones the tree at `src` to the new path `dst` (both from the
    /// volume's root) in one transaction, content shared: see
    /// [`clone::clone_tree`]. What is committed is copied (the source as of
    /// one snapshot): a file open for writing here is copied as of its last
    /// close or fsync.
    pub fn clone_path(&self, caller: Caller, src: &str, dst: &str) -> FsResult<CloneReport> {
        self.write_tx(|tx| {
            let mut snap = self.read_tx()?;
            clone::clone_path(&mut snap, tx, self, caller, src, dst)
        })
    }

    /// Creates a node of any kind (files, directories, symlinks, devices).
    pub fn make_node(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        spec: NodeSpec<'_>,
    ) -> FsResult<Attr> {
        self.settle_name(parent, name);
        self.write_tx(|tx| names::make_node(tx, self, caller, parent, name, spec))
    }

    /// A new hard link `newparent/newname` to `ino`.
    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> FsResult<Attr> {
        self.settle(ino);
        self.settle_name(newparent, newname);
        self.write_tx(|tx| names::link(tx, self, ino, newparent, newname))
    }

    /// Removes a non-directory name.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        check_name_len(name)?;
        self.settle_name(parent, name);
        let ino = self.write_tx(|tx| names::unlink(tx, self, parent, name))?;
        self.mark_orphan_if_open(ino);
        Ok(())
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        check_name_len(name)?;
        if name == b"." {
            return Err(FsError::Invalid("rmdir of ."));
        }
        if name == b".." {
            return Err(FsError::NotEmpty);
        }
        // Files made in it here and not committed yet make it not empty.
        if let Ok(dir) = self.lookup(parent, name) {
            self.settle_dir(dir.ino);
        }
        self.write_tx(|tx| names::rmdir(tx, self, parent, name))
    }

    /// Renames; `flags` takes `RENAME_NOREPLACE` and `RENAME_EXCHANGE`.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        self.settle_name(parent, name);
        self.settle_name(newparent, newname);
        let replaced =
            self.write_tx(|tx| names::rename(tx, self, parent, name, newparent, newname, flags))?;
        if let Some(ino) = replaced {
            self.mark_orphan_if_open(ino);
        }
        Ok(())
    }

    pub(super) fn mark_orphan_if_open(&self, ino: u64) {
        if self.in_use(ino) {
            // Whether the last link went is decided when it is no longer in use.
            self.kernel.add_orphans([ino]);
        }
    }

    /// Deletes an orphan once nothing here refers to it any more.
    pub(super) fn reap(&self, ino: u64) -> FsResult<()> {
        if self.in_use(ino) || !self.kernel.take_orphan(ino) {
            return Ok(());
        }
        self.files.drop_buffer(ino);
        self.write_tx(|tx| delete_if_unlinked(tx, ino))?;
        self.files.release_if_idle(ino, None);
        Ok(())
    }

    /// The kernel took one more reference to `ino` (an entry reply).
    pub fn remember(&self, ino: u64) {
        self.kernel.remember(ino);
    }

    /// The kernel dropped `n` references to `ino`; an orphan it no longer
    /// knows is collected by the reaper's next round, with its neighbours.
    pub fn forget(&self, ino: u64, n: u64) {
        self.kernel.forget(ino, n);
    }

    /// Deletes the orphans forgotten since the last call, in one commit.
    /// The reaper thread calls it every few milliseconds.
    pub fn reap_forgotten(&self) {
        let due = self.kernel.take_due(|ino| self.in_use(ino));
        if due.is_empty() {
            return;
        }
        for &ino in &due {
            self.files.drop_buffer(ino);
        }
        let done = self.write_tx(|tx| due.iter().try_for_each(|&ino| delete_if_unlinked(tx, ino)));
        match done {
            Ok(()) => {
                for ino in due {
                    self.files.release_if_idle(ino, None);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, count = due.len(), "could not delete unlinked files; retrying at unmount");
                self.kernel.add_orphans(due);
            }
        }
    }

    /// Deletes every orphan (at unmount: the kernel forgets everything).
    pub fn reap_all(&self) {
        self.kernel.forget_all();
        for ino in self.kernel.orphans() {
            if let Err(e) = self.reap(ino) {
                tracing::warn!(ino, error = %e, "could not delete an unlinked file");
            }
        }
    }
}
