//! Writes buffered for one file on this host until they are committed:
//! non-overlapping byte extents over the committed content, plus truncation.
//! Small buffers live in memory; a big one moves to a spill file in the
//! local cache folder, so a file of many GiB still commits as one transaction.
//!
//! A big file written in order does not stay here: each chunk it fills
//! completely is handed to an engine [`Stash`] ("parked"), which writes it
//! to the store while the program goes on writing; the commit then only
//! names it. On S3 chunks are parked a run at a time (an aligned run of
//! consecutive chunks, one object), since every object costs a request. A
//! later write, truncation or rebase that touches a parked chunk first
//! brings it back into the buffer.

use crate::error::{FsError, FsResult};
use engine::{Stash, StashedValue};
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Buffered bytes kept in a spill file: data of `[start, end)` lives at file
/// offset `start - shift`.
#[derive(Debug)]
struct Spill {
    file: File,
    /// The cache folder it lives in.
    dir: PathBuf,
    /// start -> end; ranges never overlap or touch.
    ranges: BTreeMap<u64, u64>,
    /// How far the ranges moved since they were written (appends rebased
    /// behind another host's).
    shift: i128,
}

impl Spill {
    fn file_offset(&self, logical: u64) -> Option<u64> {
        u64::try_from(logical as i128 - self.shift).ok()
    }

    /// Records `[offset, end)` as buffered, merging neighbours.
    fn add_range(&mut self, offset: u64, end: u64) {
        let mut start = offset;
        let mut stop = end;
        let touching: Vec<u64> = self
            .ranges
            .range(..=end)
            .filter(|(_, &e)| e >= offset)
            .map(|(&s, _)| s)
            .collect();
        for s in touching {
            if let Some(e) = self.ranges.remove(&s) {
                start = start.min(s);
                stop = stop.max(e);
            }
        }
        self.ranges.insert(start, stop);
    }

    fn buffered(&self) -> usize {
        self.ranges.iter().map(|(s, e)| (e - s) as usize).sum()
    }

    /// Removes `[start, end)` from the ranges, if one range holds all of it.
    fn take(&mut self, start: u64, end: u64) -> io::Result<Option<Vec<u8>>> {
        let Some((&s, &e)) = self.ranges.range(..=start).next_back() else {
            return Ok(None);
        };
        if e < end {
            return Ok(None);
        }
        let at = self
            .file_offset(start)
            .ok_or_else(|| io::Error::other("spill offset out of range"))?;
        let mut buf = vec![0u8; (end - start) as usize];
        self.file.read_exact_at(&mut buf, at)?;
        self.ranges.remove(&s);
        if s < start {
            self.ranges.insert(s, start);
        }
        if end < e {
            self.ranges.insert(end, e);
        }
        Ok(Some(buf))
    }
}

/// How full chunks are parked: `chunk` bytes each, `run` of them to a
/// blob, once `min_buffered` bytes are buffered.
#[derive(Clone, Copy, Debug)]
pub struct Parking {
    /// Bytes in a chunk.
    pub chunk: u64,
    /// Chunks written as one blob.
    pub run: u64,
    /// Buffered bytes before anything is parked.
    pub min_buffered: usize,
}

/// Full chunks of the file already handed to the store.
#[derive(Default)]
struct Parked {
    stash: Option<Stash>,
    /// chunk start -> its stashed bytes.
    chunks: BTreeMap<u64, StashedValue>,
}

impl std::fmt::Debug for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.chunks.iter().map(|(s, v)| (s, v.len())))
            .finish()
    }
}

/// The buffered changes of one file.
#[derive(Debug, Default)]
pub struct Dirty {
    /// start -> bytes, while in memory; extents never overlap.
    extents: BTreeMap<u64, Vec<u8>>,
    spill: Option<Spill>,
    /// Smallest size the file was truncated to since the last commit.
    pub trunc: Option<u64>,
    /// Size of the file as this host sees it.
    pub size: u64,
    /// Committed size when buffering began (to rebase appends).
    pub base_size: u64,
    /// Every write so far was an O_APPEND write at the end.
    pub append_only: bool,
    /// Bytes buffered.
    pub bytes: usize,
    /// A write or truncation happened, even one that buffered no byte: the
    /// commit must still move the file's times.
    pub touched: bool,
    parked: Parked,
}

impl Dirty {
    /// Starts buffering over a file of `size` committed bytes.
    pub fn new(size: u64) -> Dirty {
        Dirty {
            size,
            base_size: size,
            append_only: true,
            ..Dirty::default()
        }
    }

    /// True when there is nothing to commit.
    pub fn is_clean(&self) -> bool {
        self.parked.chunks.is_empty()
            && self.extents.is_empty()
            && self.spill.as_ref().is_none_or(|s| s.ranges.is_empty())
            && self.trunc.is_none()
            && !self.touched
    }

    /// True once the buffer lives in a spill file.
    pub fn is_spilled(&self) -> bool {
        self.spill.is_some()
    }

    /// Moves the buffer into an anonymous file in `dir` (gone with the
    /// process, whatever way it ends); later writes go there too.
    pub fn spill_to(&mut self, dir: &Path) -> io::Result<()> {
        if self.spill.is_some() {
            return Ok(());
        }
        let mut spill = Spill {
            file: tempfile::tempfile_in(dir)?,
            dir: dir.to_path_buf(),
            ranges: BTreeMap::new(),
            shift: 0,
        };
        for (&s, e) in &self.extents {
            spill.file.write_all_at(e, s)?;
            spill.ranges.insert(s, s + e.len() as u64);
        }
        self.extents.clear();
        self.spill = Some(spill);
        Ok(())
    }

    /// Buffers `data` at `offset`; `append` says it came through O_APPEND.
    pub fn write(&mut self, offset: u64, data: &[u8], append: bool) -> FsResult<()> {
        self.touched = true;
        if data.is_empty() {
            return Ok(());
        }
        let end = offset + data.len() as u64;
        self.unpark(offset, end)?;
        self.write_buffer(offset, data)?;
        self.append_only &= append && offset == self.size;
        self.size = self.size.max(end);
        Ok(())
    }

    /// Puts bytes into the buffer, in memory or in the spill file.
    fn write_buffer(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset + data.len() as u64;
        if let Some(spill) = self.spill.as_mut() {
            let at = match spill.file_offset(offset) {
                Some(at) => at,
                None => {
                    self.unshift()?;
                    offset
                }
            };
            let Some(spill) = self.spill.as_mut() else {
                return Err(io::Error::other("spill file vanished"));
            };
            spill.file.write_all_at(data, at)?;
            spill.add_range(offset, end);
            self.bytes = spill.buffered();
        } else {
            self.write_mem(offset, data);
        }
        Ok(())
    }

    /// Hands every full run of `run` chunks of `chunk` bytes (runs start
    /// at multiples of `run` chunks) that `[from, to)`, the range a write
    /// just filled, touches to a stash of `db` as one blob, out of the
    /// buffer. Small files are written at their commit: nothing is parked
    /// until `min_buffered` bytes are buffered, and then every full run
    /// before `to` is.
    pub fn park_full_chunks(
        &mut self,
        db: &engine::Db,
        shape: Parking,
        from: u64,
        to: u64,
    ) -> FsResult<()> {
        let Parking {
            chunk,
            run,
            min_buffered,
        } = shape;
        if chunk == 0 || run == 0 || to <= from {
            return Ok(());
        }
        let from = match self.parked.stash {
            Some(_) => from,
            None if self.bytes >= min_buffered => 0,
            None => return Ok(()),
        };
        let span = chunk * run;
        for r in from / span..to.div_ceil(span) {
            let start = r * span;
            let end = start + span;
            if end > self.size || self.parked.chunks.range(start..end).next().is_some() {
                continue;
            }
            // Only a run the buffer holds whole is taken.
            let Some(bytes) = self.take(start, end)? else {
                continue;
            };
            let stash = self.parked.stash.get_or_insert_with(|| db.stash());
            let pieces = vec![chunk as usize; run as usize];
            match stash.put_run(bytes, &pieces) {
                Ok(values) => {
                    for v in values {
                        let at = start + v.offset();
                        self.parked.chunks.insert(at, v);
                    }
                }
                Err(e) => {
                    // The bytes are gone from the buffer: losing them is
                    // not an option, so the store's error is the write's.
                    return Err(FsError::Engine(e));
                }
            }
        }
        Ok(())
    }

    /// Removes `[start, end)` from the buffer if it holds all of it.
    fn take(&mut self, start: u64, end: u64) -> io::Result<Option<Vec<u8>>> {
        if let Some(spill) = self.spill.as_mut() {
            let got = spill.take(start, end)?;
            self.bytes = spill.buffered();
            return Ok(got);
        }
        let Some((&s, e)) = self.extents.range(..=start).next_back() else {
            return Ok(None);
        };
        if s + (e.len() as u64) < end {
            return Ok(None);
        }
        let Some(mut ext) = self.extents.remove(&s) else {
            return Ok(None);
        };
        let tail = ext.split_off((end - s) as usize);
        // An extent that starts where the range does is handed over as it
        // is (`split_off(0)` would copy it: a 4 MiB run per park).
        let mine = if s == start {
            std::mem::take(&mut ext)
        } else {
            ext.split_off((start - s) as usize)
        };
        if !ext.is_empty() {
            self.extents.insert(s, ext);
        }
        if !tail.is_empty() {
            self.extents.insert(end, tail);
        }
        self.bytes -= mine.len();
        Ok(Some(mine))
    }

    /// Brings parked chunks that overlap `[start, end)` back into the buffer.
    fn unpark(&mut self, start: u64, end: u64) -> FsResult<()> {
        let first = self
            .parked
            .chunks
            .range(..=start)
            .next_back()
            .map_or(start, |(&s, _)| s);
        let hit: Vec<(u64, StashedValue)> = self
            .parked
            .chunks
            .range(first..end)
            .filter(|(&s, v)| s + v.len() > start)
            .map(|(&s, v)| (s, v.clone()))
            .collect();
        for (s, v) in hit {
            let Some(stash) = self.parked.stash.as_ref() else {
                break;
            };
            let bytes = stash.read(&v).map_err(FsError::Engine)?;
            stash.discard(&v);
            self.parked.chunks.remove(&s);
            self.write_buffer(s, &bytes)?;
        }
        Ok(())
    }

    /// The parked chunks, by start offset, and the stash that holds them.
    pub fn parked(&self) -> (Option<&Stash>, impl Iterator<Item = (u64, &StashedValue)>) {
        (
            self.parked.stash.as_ref(),
            self.parked.chunks.iter().map(|(&s, v)| (s, v)),
        )
    }

    /// Rewrites the spill file so that file offsets equal file positions again.
    fn unshift(&mut self) -> io::Result<()> {
        let Some(old) = self.spill.take() else {
            return Ok(());
        };
        let mut new = Spill {
            file: tempfile::tempfile_in(&old.dir)?,
            dir: old.dir.clone(),
            ranges: BTreeMap::new(),
            shift: 0,
        };
        let mut buf = vec![0u8; 1 << 20];
        for (&s, &e) in &old.ranges {
            let mut pos = s;
            while pos < e {
                let n = ((e - pos) as usize).min(buf.len());
                let from = old
                    .file_offset(pos)
                    .ok_or_else(|| io::Error::other("spill offset out of range"))?;
                old.file.read_exact_at(&mut buf[..n], from)?;
                new.file.write_all_at(&buf[..n], pos)?;
                pos += n as u64;
            }
            new.ranges.insert(s, e);
        }
        self.spill = Some(new);
        Ok(())
    }

    fn write_mem(&mut self, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        // The common case: extending the extent that ends where this starts.
        if let Some((&start, ext)) = self.extents.range_mut(..=offset).next_back() {
            let ext_end = start + ext.len() as u64;
            let next_overlaps = self
                .extents
                .range(offset + 1..)
                .next()
                .is_some_and(|(&s, _)| s <= end);
            if ext_end >= offset && !next_overlaps {
                let ext = self.extents.get_mut(&start).expect("found above");
                let at = (offset - start) as usize;
                let old = ext.len();
                if at + data.len() > old {
                    // Past the end: cut and append, so no byte is zeroed
                    // first only to be overwritten.
                    ext.truncate(at);
                    ext.extend_from_slice(data);
                } else {
                    ext[at..at + data.len()].copy_from_slice(data);
                }
                self.bytes += ext.len() - old;
                return;
            }
        }
        // General case: fold every extent that overlaps or touches [offset, end).
        let touching: Vec<u64> = self
            .extents
            .range(..=end)
            .filter(|(&s, e)| s + e.len() as u64 >= offset)
            .map(|(&s, _)| s)
            .collect();
        let start = touching.first().map_or(offset, |&s| s.min(offset));
        let mut last_end = end;
        for s in &touching {
            last_end = last_end.max(s + self.extents[s].len() as u64);
        }
        let mut merged = vec![0u8; (last_end - start) as usize];
        for s in touching {
            if let Some(e) = self.extents.remove(&s) {
                self.bytes -= e.len();
                let at = (s - start) as usize;
                merged[at..at + e.len()].copy_from_slice(&e);
            }
        }
        let at = (offset - start) as usize;
        merged[at..at + data.len()].copy_from_slice(data);
        self.bytes += merged.len();
        self.extents.insert(start, merged);
    }

    /// Truncates (or extends) the file to `size`.
    pub fn truncate(&mut self, size: u64) -> FsResult<()> {
        // A chunk cut in the middle comes back to be cut; whole ones past
        // the end are dropped.
        self.unpark(size, size + 1)?;
        let gone: Vec<u64> = self.parked.chunks.range(size..).map(|(&s, _)| s).collect();
        for s in gone {
            if let (Some(v), Some(stash)) = (self.parked.chunks.remove(&s), &self.parked.stash) {
                stash.discard(&v);
            }
        }
        self.touched = true;
        self.append_only = false;
        if let Some(spill) = self.spill.as_mut() {
            let cut: Vec<u64> = spill.ranges.range(size..).map(|(&s, _)| s).collect();
            for s in cut {
                spill.ranges.remove(&s);
            }
            if let Some((_, e)) = spill.ranges.range_mut(..size).next_back() {
                *e = (*e).min(size);
            }
            self.bytes = spill.buffered();
        }
        let cut: Vec<u64> = self.extents.range(size..).map(|(&s, _)| s).collect();
        for s in cut {
            if let Some(e) = self.extents.remove(&s) {
                self.bytes -= e.len();
            }
        }
        if let Some((&s, e)) = self.extents.range_mut(..size).next_back() {
            let keep = (size - s) as usize;
            if e.len() > keep {
                self.bytes -= e.len() - keep;
                e.truncate(keep);
            }
        }
        if size < self.size {
            self.trunc = Some(self.trunc.map_or(size, |t| t.min(size)));
        }
        self.size = size;
        Ok(())
    }

    /// Copies the buffered bytes that fall in `[offset, offset + buf.len())` over `buf`.
    pub fn overlay(&self, offset: u64, buf: &mut [u8]) -> FsResult<()> {
        let end = offset + buf.len() as u64;
        if let Some(stash) = &self.parked.stash {
            let first = self
                .parked
                .chunks
                .range(..=offset)
                .next_back()
                .map_or(offset, |(&s, _)| s);
            for (&s, v) in self.parked.chunks.range(first..end) {
                let e = s + v.len();
                if e <= offset {
                    continue;
                }
                let bytes = stash.read(v).map_err(FsError::Engine)?;
                let (from, to) = (s.max(offset), e.min(end));
                buf[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&bytes[(from - s) as usize..(to - s) as usize]);
            }
        }
        if let Some(spill) = &self.spill {
            let first = spill
                .ranges
                .range(..=offset)
                .next_back()
                .map_or(offset, |(&s, _)| s);
            for (&s, &e) in spill.ranges.range(first..end) {
                if e <= offset {
                    continue;
                }
                let from = s.max(offset);
                let to = e.min(end);
                let at = spill
                    .file_offset(from)
                    .ok_or_else(|| io::Error::other("spill offset out of range"))?;
                spill.file.read_exact_at(
                    &mut buf[(from - offset) as usize..(to - offset) as usize],
                    at,
                )?;
            }
            return Ok(());
        }
        let first = self
            .extents
            .range(..=offset)
            .next_back()
            .map_or(offset, |(&s, _)| s);
        for (&s, e) in self.extents.range(first..end) {
            let e_end = s + e.len() as u64;
            if e_end <= offset {
                continue;
            }
            let from = s.max(offset);
            let to = e_end.min(end);
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&e[(from - s) as usize..(to - s) as usize]);
        }
        Ok(())
    }

    /// Moves every extent by `shift` bytes (appends landing after another host's).
    pub fn rebase(&mut self, new_base: u64) -> FsResult<()> {
        // Parked chunks sit at chunk boundaries, which a shift does not keep.
        self.unpark(0, u64::MAX)?;
        let shift = new_base as i128 - self.base_size as i128;
        let moved = |s: u64| (s as i128 + shift) as u64;
        let old = std::mem::take(&mut self.extents);
        self.extents = old.into_iter().map(|(s, e)| (moved(s), e)).collect();
        if let Some(spill) = self.spill.as_mut() {
            let old = std::mem::take(&mut spill.ranges);
            spill.ranges = old.into_iter().map(|(s, e)| (moved(s), moved(e))).collect();
            spill.shift += shift;
        }
        self.size = moved(self.size);
        self.base_size = new_base;
        Ok(())
    }

    /// Calls `f` with the buffered bytes in order, in pieces of at most
    /// `max_piece` bytes once spilled.
    pub fn for_each_extent<E: From<io::Error>>(
        &self,
        max_piece: usize,
        mut f: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let Some(spill) = &self.spill else {
            for (&s, e) in &self.extents {
                f(s, e)?;
            }
            return Ok(());
        };
        let mut buf = Vec::new();
        for (&s, &e) in &spill.ranges {
            let mut pos = s;
            while pos < e {
                let n = ((e - pos) as usize).min(max_piece.max(1));
                buf.resize(n, 0);
                let at = spill
                    .file_offset(pos)
                    .ok_or_else(|| io::Error::other("spill offset out of range"))?;
                spill.file.read_exact_at(&mut buf, at)?;
                f(pos, &buf)?;
                pos += n as u64;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Write(u64, Vec<u8>),
        Truncate(u64),
        /// Parks the full 16-byte chunks within a range (as after a write).
        Park(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u64..300, proptest::collection::vec(any::<u8>(), 0..80))
                .prop_map(|(o, d)| Op::Write(o, d)),
            1 => (0u64..300).prop_map(Op::Truncate),
            2 => (0u64..300, 0u64..120).prop_map(|(o, n)| Op::Park(o, o + n)),
        ]
    }

    /// Parking of `chunk`-byte chunks, `run` to a blob, from the first byte.
    fn shape(chunk: u64, run: u64) -> Parking {
        Parking {
            chunk,
            run,
            min_buffered: 0,
        }
    }

    /// A volume for the stash parked chunks go to.
    fn db() -> (tempfile::TempDir, engine::Db) {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = engine::Options {
            background_interval: None,
            ..engine::Options::default()
        };
        let db = engine::Db::open(engine::StoreLocation::Local(dir.path().to_path_buf()), opts)
            .expect("open");
        (dir, db)
    }

    /// Replays `ops` over a committed file of `base_len` bytes, moving the
    /// buffer to a spill file after `spill_after` operations (if any), and
    /// returns what a commit would produce next to a plain byte vector model.
    fn replay(
        base_len: u64,
        ops: &[Op],
        spill_after: Option<usize>,
        run: u64,
    ) -> (Vec<u8>, Vec<u8>, Dirty) {
        let base: Vec<u8> = (0..base_len).map(|i| (i % 251) as u8).collect();
        let mut model = base.clone();
        let mut d = Dirty::new(base_len);
        let dir = std::env::temp_dir();
        let (_vol, db) = db();
        for (n, op) in ops.iter().enumerate() {
            if spill_after == Some(n) {
                d.spill_to(&dir).expect("spill");
            }
            match op {
                Op::Write(o, data) => {
                    // A zero-length write changes nothing, as pwrite(2).
                    if !data.is_empty() {
                        let end = *o as usize + data.len();
                        if model.len() < end {
                            model.resize(end, 0);
                        }
                        model[*o as usize..end].copy_from_slice(data);
                    }
                    d.write(*o, data, false).expect("write");
                }
                Op::Truncate(t) => {
                    model.resize(*t as usize, 0);
                    d.truncate(*t).expect("truncate");
                }
                Op::Park(from, to) => {
                    d.park_full_chunks(&db, shape(16, run), *from, *to)
                        .expect("park");
                }
            }
        }
        // What a commit does: committed bytes up to the truncation, zeros
        // beyond, then the extents on top.
        let keep = d.trunc.map_or(base.len(), |t| (t as usize).min(base.len()));
        let mut got = vec![0u8; d.size as usize];
        let n = keep.min(got.len());
        got[..n].copy_from_slice(&base[..n]);
        let mut through_commit = got.clone();
        d.overlay(0, &mut got).expect("overlay");
        d.for_each_extent(7, |s, e| -> io::Result<()> {
            let end = (s as usize + e.len()).min(through_commit.len());
            through_commit[s as usize..end].copy_from_slice(&e[..end - s as usize]);
            Ok(())
        })
        .expect("extents");
        if let (Some(stash), parked) = d.parked() {
            for (s, v) in parked {
                let bytes = stash.read(v).expect("parked bytes");
                let s = s as usize;
                through_commit[s..s + bytes.len()].copy_from_slice(&bytes);
            }
        }
        assert_eq!(got, through_commit, "overlay and commit pieces disagree");
        (got, model, d)
    }

    proptest! {
        /// The overlay over a committed file reads like a plain byte vector
        /// that got the same writes and truncations.
        #[test]
        fn overlay_matches_a_byte_vector(base_len in 0u64..200, ops in proptest::collection::vec(op(), 1..30), run in 1u64..4) {
            let (got, model, d) = replay(base_len, &ops, None, run);
            prop_assert_eq!(d.size, model.len() as u64);
            prop_assert_eq!(&got, &model);
            let mut total = 0;
            d.for_each_extent(usize::MAX, |_, e| -> io::Result<()> { total += e.len(); Ok(()) }).expect("extents");
            prop_assert_eq!(total, d.bytes);
        }

        /// The same with the buffer moved to a spill file part-way.
        #[test]
        fn a_spilled_buffer_reads_the_same(base_len in 0u64..200, ops in proptest::collection::vec(op(), 1..30), at in 0usize..30, run in 1u64..4) {
            let (got, model, d) = replay(base_len, &ops, Some(at.min(ops.len() - 1)), run);
            prop_assert!(d.is_spilled());
            prop_assert_eq!(d.size, model.len() as u64);
            prop_assert_eq!(&got, &model);
        }
    }

    #[test]
    fn rebased_spilled_appends_move_and_later_writes_still_land() {
        let mut d = Dirty::new(10);
        d.write(10, b"hello", true).expect("append");
        d.spill_to(&std::env::temp_dir()).expect("spill");
        d.write(15, b"!", true).expect("append");
        // Another host appended 5 bytes meanwhile.
        d.rebase(15).expect("rebase");
        let mut buf = vec![0u8; 6];
        d.overlay(15, &mut buf).expect("overlay");
        assert_eq!(&buf, b"hello!");
        // A write below the shift forces the file to be rewritten unshifted.
        d.write(2, b"ab", false).expect("write low");
        let mut all = vec![b'.'; 21];
        d.overlay(0, &mut all).expect("overlay");
        assert_eq!(&all, b"..ab...........hello!");
    }

    #[test]
    fn parked_appends_come_back_when_they_are_rebased() {
        let (_vol, db) = db();
        let mut d = Dirty::new(0);
        let data: Vec<u8> = (0..100u8).collect();
        d.write(0, &data, true).expect("append");
        d.park_full_chunks(&db, shape(16, 1), 0, 100).expect("park");
        assert_eq!(d.bytes, 4, "six chunks parked, the tail buffered");
        assert!(d.append_only);
        // Another host appended 7 bytes: everything moves, parked or not.
        d.rebase(7).expect("rebase");
        let mut buf = vec![0u8; 100];
        d.overlay(7, &mut buf).expect("overlay");
        assert_eq!(buf, data);
        assert_eq!(
            d.parked().1.count(),
            0,
            "nothing stays parked across a shift"
        );
    }
}
