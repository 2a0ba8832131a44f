//! File content: chunks of [`CHUNK`] bytes in the `c` tree, read by range,
//! patched in place, cut at a length.

use super::schema::*;
use crate::error::{FsError, FsResult};
use engine::{Cursor, Direction, Transaction};

/// Deletes inode `ino` and its content.
pub fn delete_inode(tx: &mut Transaction, ino: u64) -> FsResult<()> {
    tx.remove(INODES, &ino_key(ino))?;
    cut(tx, ino, 0)
}

/// Removes the content of `ino` at and beyond byte `from`.
pub fn cut(tx: &mut Transaction, ino: u64, from: u64) -> FsResult<()> {
    let first = from.div_ceil(CHUNK);
    let mut cur = Cursor::new(
        chunk_key(ino, first).to_vec()..chunk_key(ino + 1, 0).to_vec(),
        Direction::Forward,
    );
    loop {
        let batch = tx.scan_values(CONTENT, &mut cur, 512)?;
        for (k, _) in batch {
            tx.remove(CONTENT, &k)?;
        }
        if cur.is_done() {
            break;
        }
    }
    if !from.is_multiple_of(CHUNK) {
        let key = chunk_key(ino, from / CHUNK);
        if let Some(mut data) = tx.get(CONTENT, &key)? {
            let keep = (from % CHUNK) as usize;
            if data.len() > keep {
                data.truncate(keep);
                tx.upsert(CONTENT, &key, &data)?;
            }
        }
    }
    Ok(())
}

/// Reads the committed bytes of `ino` at `offset` into `buf` (holes and
/// the end of the content stay as `buf` had them). Only the wanted part of
/// each chunk is read: a 4 KiB read of a cold chunk reads one block of it
/// from the store, not the whole chunk.
pub fn read_into(tx: &mut Transaction, ino: u64, offset: u64, buf: &mut [u8]) -> FsResult<()> {
    let end = offset + buf.len() as u64;
    let mut idx = offset / CHUNK;
    while idx * CHUNK < end {
        let cstart = idx * CHUNK;
        let from = offset.max(cstart);
        let to = end.min(cstart + CHUNK);
        if let Some(data) =
            tx.get_range(CONTENT, &chunk_key(ino, idx), from - cstart..to - cstart)?
        {
            let at = (from - offset) as usize;
            buf[at..at + data.len()].copy_from_slice(&data);
        }
        idx += 1;
    }
    Ok(())
}

/// Writes byte ranges into a file's chunks: each chunk is read once and
/// written back once, when the writes move past it or at [`Patcher::finish`].
pub struct Patcher {
    ino: u64,
    chunk: Option<(u64, Vec<u8>)>,
}

impl Patcher {
    /// A patcher of `ino`'s content.
    pub fn new(ino: u64) -> Patcher {
        Patcher { ino, chunk: None }
    }

    /// Writes `bytes` at `at`.
    pub fn write(&mut self, tx: &mut Transaction, at: u64, bytes: &[u8]) -> FsResult<()> {
        let mut pos = at;
        let end = at + bytes.len() as u64;
        while pos < end {
            let idx = pos / CHUNK;
            if self.chunk.as_ref().is_none_or(|(i, _)| *i != idx) {
                self.flush(tx)?;
                let cur = tx
                    .get(CONTENT, &chunk_key(self.ino, idx))?
                    .unwrap_or_default();
                self.chunk = Some((idx, cur));
            }
            let Some((_, data)) = self.chunk.as_mut() else {
                break;
            };
            let cstart = idx * CHUNK;
            let to = end.min(cstart + CHUNK);
            let (a, b) = ((pos - cstart) as usize, (to - cstart) as usize);
            if data.len() < b {
                data.resize(b, 0);
            }
            data[a..b].copy_from_slice(&bytes[(pos - at) as usize..(to - at) as usize]);
            pos = to;
        }
        Ok(())
    }

    fn flush(&mut self, tx: &mut Transaction) -> FsResult<()> {
        if let Some((i, data)) = self.chunk.take() {
            tx.upsert(CONTENT, &chunk_key(self.ino, i), &data)?;
        }
        Ok(())
    }

    /// Writes back the chunk last patched.
    pub fn finish(mut self, tx: &mut Transaction) -> FsResult<()> {
        self.flush(tx)
    }
}

/// The committed content of a regular file.
pub fn read_file(tx: &mut Transaction, ino: u64) -> FsResult<Vec<u8>> {
    let i = load(tx, ino)?;
    if i.kind != Kind::File {
        return Err(if i.kind == Kind::Dir {
            FsError::IsDir
        } else {
            FsError::Invalid("not a regular file")
        });
    }
    let mut out = vec![0u8; i.size as usize];
    read_into(tx, ino, 0, &mut out)?;
    Ok(out)
}
