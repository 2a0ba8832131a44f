//! Open directories: a listing taken at `opendir`, read from offsets.

use super::Fs;
use crate::error::{FsError, FsResult};
use crate::ns::dirs::{attr, Entries};
use crate::ns::schema::{load_dir, Entry, Kind, ROOT_INO};
use crate::ns::{Attr, DirEntry};

impl Fs {
    /// Opens a directory: its listing is taken now, so offsets stay stable
    /// while entries change.
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        self.settle_dir(ino);
        let mut tx = self.read_tx()?;
        let d = load_dir(&mut tx, ino)?;
        let mut list = vec![
            DirEntry {
                name: b".".to_vec(),
                ino,
                kind: Kind::Dir,
            },
            DirEntry {
                name: b"..".to_vec(),
                ino: d.parent.max(ROOT_INO),
                kind: Kind::Dir,
            },
        ];
        let mut entries = Entries::of(ino);
        while let Some(batch) = entries.next_batch(&mut tx, 1024)? {
            for (name, v) in batch {
                if let Some(e) = Entry::decode(&v) {
                    list.push(DirEntry {
                        name,
                        ino: e.ino,
                        kind: e.kind,
                    });
                }
            }
        }
        let fh = self.next_fh();
        self.dirs.insert(fh, list);
        Ok(fh)
    }

    /// Entries of an open directory from `offset` on; an entry's offset for
    /// the next call is its index + 1. `add` returns true when the buffer is full.
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&DirEntry, u64) -> bool,
    ) -> FsResult<()> {
        self.dirs.with(fh, |list| {
            for (i, e) in list.iter().enumerate().skip(offset as usize) {
                if add(e, i as u64 + 1) {
                    break;
                }
            }
        })
    }

    /// Like `readdir`, with each entry's attributes (an entry whose inode went
    /// away since `opendir` is left out). "." and ".." come without them.
    pub fn readdir_plus(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&DirEntry, Option<&Attr>, u64) -> bool,
    ) -> FsResult<()> {
        let batch: Vec<(usize, DirEntry)> = self.dirs.with(fh, |list| {
            list.iter()
                .enumerate()
                .skip(offset as usize)
                .take(256)
                .map(|(i, e)| (i, e.clone()))
                .collect()
        })?;
        let mut tx = self.read_tx()?;
        for (i, e) in batch {
            let next = i as u64 + 1;
            if e.name == b"." || e.name == b".." {
                if add(&e, None, next) {
                    return Ok(());
                }
                continue;
            }
            match attr(&mut tx, self, e.ino) {
                Ok(a) => {
                    if add(&e, Some(&a), next) {
                        return Ok(());
                    }
                }
                Err(FsError::NotFound) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Closes an open directory.
    pub fn releasedir(&self, fh: u64) {
        self.dirs.remove(fh);
    }
}
