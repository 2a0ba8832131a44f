//! The segments shape of the log in a local folder: the segment files and
//! their index sidecars, indexing them at open, following what other
//! processes appended, the turn to append (`segments/lock`), and sealing a
//! segment when the next one begins. The format is described in `mod.rs`.

use super::tail::{cut_torn_tail, frame_at, never_durable, read_tail};
use super::{io, Log, LogMode};
use crate::codec::{self, Kind};
use crate::error::{Error, Result};
use crate::store::log_path;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One segment file: where each of its records sits.
pub(super) struct Segment {
    pub(super) file: Arc<File>,
    /// (offset, length) of each frame; frame `i` holds record `first + i`.
    pub(super) frames: Vec<(u64, u32)>,
    /// Bytes of whole frames (where the next one goes).
    pub(super) end: u64,
    /// Has an index sidecar (sealed).
    pub(super) sealed: bool,
    /// The whole frames `read_tail` read last and the offset they start
    /// at: a process following others reads each record right after it
    /// indexed it, and takes it from here instead of reading the file
    /// again into a fresh buffer.
    pub(super) recent: Option<(u64, Bytes)>,
}

impl Segment {
    /// A segment as found or begun: nothing read of its tail yet.
    pub(super) fn new(file: File, frames: Vec<(u64, u32)>, end: u64, sealed: bool) -> Segment {
        Segment {
            file: Arc::new(file),
            frames,
            end,
            sealed,
            recent: None,
        }
    }
}

/// Where a record's frame is.
pub(super) enum Located {
    /// Among the bytes `read_tail` just read.
    Read(Bytes),
    /// At (offset, length) of a segment file.
    At(Arc<File>, u64, u32),
}

#[derive(Default)]
pub(super) struct Segments {
    pub(super) by_first: BTreeMap<u64, Segment>,
}

impl Segments {
    /// The segment holding record `seq`, and its frame's offset and length.
    fn holding(&self, seq: u64) -> Option<(&Segment, u64, u32)> {
        let (first, seg) = self.by_first.range(..=seq).next_back()?;
        let &(off, len) = seg.frames.get(usize::try_from(seq - first).ok()?)?;
        Some((seg, off, len))
    }

    pub(super) fn find(&self, seq: u64) -> Option<(Arc<File>, u64, u32)> {
        let (seg, off, len) = self.holding(seq)?;
        Some((seg.file.clone(), off, len))
    }

    /// Where record `seq`'s frame is, if a segment holds it.
    pub(super) fn locate(&self, seq: u64) -> Option<Located> {
        let (seg, off, len) = self.holding(seq)?;
        if let Some((from, bytes)) = &seg.recent {
            let start = off.checked_sub(*from).and_then(|s| usize::try_from(s).ok());
            let end = start.and_then(|s| s.checked_add(len as usize));
            if let (Some(start), Some(end)) = (start, end.filter(|&e| e <= bytes.len())) {
                return Some(Located::Read(bytes.slice(start..end)));
            }
        }
        Some(Located::At(seg.file.clone(), off, len))
    }

    /// The newest record the segments account for. An empty last segment
    /// (begun by a process that died before its first frame landed) says
    /// the one before its first: a segment is only begun at the record
    /// after the newest one, and the next appender fills it.
    pub(super) fn last_seq(&self) -> Option<u64> {
        let (first, seg) = self.by_first.iter().next_back()?;
        (first + seg.frames.len() as u64).checked_sub(1)
    }
}

/// Longest wait for the turn to append before a commit fails.
pub(super) const TURN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Holds the turn to append; gives it back when dropped.
pub(super) struct Turn<'a>(&'a File);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        // Closing the file would release it as well; this runs first.
        let _ = self.0.unlock();
    }
}

pub(super) fn segment_name(first: u64) -> String {
    format!("{first:016x}")
}

/// The first seqs of the segments in `dir`, in order (none when the
/// folder does not exist yet).
fn segment_firsts(dir: &Path) -> Result<Vec<u64>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut firsts: Vec<u64> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            (name.len() == 16).then(|| u64::from_str_radix(name, 16).ok())?
        })
        .collect();
    firsts.sort_unstable();
    Ok(firsts)
}

pub(super) fn sidecar_path(segment: &Path) -> PathBuf {
    segment.with_extension("idx")
}

/// Sidecar: a frame of kind `Index` whose payload is each frame's offset
/// (u64) and length (u32), little-endian.
fn write_sidecar(segment: &Path, frames: &[(u64, u32)]) -> Result<()> {
    let mut payload = Vec::with_capacity(frames.len() * 12);
    for &(off, len) in frames {
        payload.extend_from_slice(&off.to_le_bytes());
        payload.extend_from_slice(&len.to_le_bytes());
    }
    let path = sidecar_path(segment);
    let tmp = path.with_extension("idx#0");
    std::fs::write(&tmp, codec::frame(Kind::Index, &payload)).map_err(io(&tmp))?;
    crate::store::durable::file_at(&tmp).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

fn read_sidecar(segment: &Path) -> Option<Vec<(u64, u32)>> {
    let data = std::fs::read(sidecar_path(segment)).ok()?;
    let (_, payload) = codec::unframe_versioned(Kind::Index, "segment index", &data).ok()?;
    if payload.len() % 12 != 0 {
        return None;
    }
    let frames = payload
        .chunks_exact(12)
        .map(|c| {
            let mut off = [0u8; 8];
            let mut len = [0u8; 4];
            off.copy_from_slice(&c[..8]);
            len.copy_from_slice(&c[8..]);
            (u64::from_le_bytes(off), u32::from_le_bytes(len))
        })
        .collect();
    Some(frames)
}

impl Log {
    pub(super) fn index(&self) -> Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let firsts = segment_firsts(dir)?;
        let mut segs = Segments::default();
        for (i, &first) in firsts.iter().enumerate() {
            let last = i + 1 == firsts.len();
            let path = dir.join(segment_name(first));
            let writable = self.mode != LogMode::ReadOnly && last;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(writable)
                .open(&path)
                .map_err(io(&path))?;
            let sealed = !last;
            let frames = match sealed.then(|| read_sidecar(&path)).flatten() {
                Some(frames) => frames,
                None => self.scan(&file, &path, last)?,
            };
            let end = frames.last().map_or(0, |&(off, len)| off + u64::from(len));
            segs.by_first
                .insert(first, Segment::new(file, frames, end, sealed));
        }
        // An empty last segment (a crash before its first frame landed) goes.
        if self.mode == LogMode::Owner {
            if let Some((&first, seg)) = segs.by_first.iter().next_back() {
                if seg.frames.is_empty() {
                    let path = dir.join(segment_name(first));
                    std::fs::remove_file(&path).map_err(io(&path))?;
                    segs.by_first.remove(&first);
                }
            }
        }
        self.check_no_gap(&segs, dir)?;
        *self.segs.lock() = segs;
        Ok(())
    }

    /// Each segment begins where the one before ends, or record objects
    /// fill the stretch between them (records of older versions). A hole
    /// would make every later record unreachable and every append find its
    /// seq "taken": say so at open instead of timing out every commit.
    fn check_no_gap(&self, segs: &Segments, dir: &Path) -> Result<()> {
        let mut next: Option<u64> = None;
        for (&first, seg) in &segs.by_first {
            if let Some(want) = next.filter(|&w| first > w) {
                if self.store.get(&log_path(want))?.is_none() {
                    return Err(Error::Corrupted {
                        what: "commit log",
                        path: dir.join(segment_name(first)).display().to_string(),
                        detail: format!(
                            "records {want}..{} are missing before this segment",
                            first - 1
                        ),
                    });
                }
            }
            next = Some(first + seg.frames.len() as u64);
        }
        Ok(())
    }

    /// Reads a segment whole and finds its frames. The last segment may end
    /// in frames a power cut or a dying writer tore: the owner cuts them
    /// off (`cut_torn_tail`), readers stop before them. A bad frame there
    /// is a write that never became durable only if it shows a lost write's
    /// zeros or is the last one and stops short (`never_durable`);
    /// otherwise, and anywhere in another segment (made durable before the
    /// next one began), it is damage.
    fn scan(&self, file: &File, path: &Path, last: bool) -> Result<Vec<(u64, u32)>> {
        let data = std::fs::read(path).map_err(io(path))?;
        let mut frames = Vec::new();
        let mut off = 0usize;
        while off < data.len() {
            match frame_at(&data, off) {
                Some(len) => {
                    frames.push((off as u64, len as u32));
                    off += len;
                }
                None if last && never_durable(&data, off, off as u64) => {
                    if self.mode == LogMode::Owner {
                        cut_torn_tail(file, path, off as u64, &data[off..])?;
                    }
                    break;
                }
                None => {
                    return Err(Error::Corrupted {
                        what: "commit log",
                        path: path.display().to_string(),
                        detail: format!("damaged record at byte {off}"),
                    })
                }
            }
        }
        Ok(frames)
    }

    /// Learns what other processes appended since this one last looked: the
    /// new frames of the last segment, then any segment that begins at
    /// `want` (the record the caller is after). With `repair` (the turn
    /// held: nobody is writing) a torn frame at the end is cut off.
    pub(super) fn refresh(&self, segs: &mut Segments, want: u64, repair: bool) -> Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        // Walking the log record by record, the next segment always begins
        // right after the last record read; a caller that knows no segment,
        // or jumps ahead (from a checkpoint), lists them instead.
        if segs.last_seq().is_none_or(|l| want > l + 1) {
            self.discover(segs, dir)?;
        }
        loop {
            if let Some((&first, seg)) = segs.by_first.iter_mut().next_back() {
                let path = dir.join(segment_name(first));
                read_tail(seg, &path, repair)?;
            }
            let last = segs.last_seq();
            if last.is_some_and(|l| l >= want) {
                return Ok(());
            }
            // A segment begins at `want` only after a full one, after a
            // stretch of objects, or as the first one.
            let could_begin = match (last, segs.by_first.values().next_back()) {
                (Some(l), Some(seg)) if l + 1 == want => seg.end >= self.segment_bytes,
                _ => true,
            };
            if !could_begin {
                return Ok(());
            }
            let Some(file) = self.open_segment(dir, want)? else {
                return Ok(());
            };
            if let Some(prev) = segs.by_first.values_mut().next_back() {
                // Whoever began the new one sealed it.
                prev.sealed = true;
                prev.recent = None;
            }
            segs.by_first
                .insert(want, Segment::new(file, Vec::new(), 0, false));
        }
    }

    /// Adds the segments newer than the newest one known, found by listing
    /// `segments/`. Sealed ones are read by their index where they have one.
    fn discover(&self, segs: &mut Segments, dir: &Path) -> Result<()> {
        let newest = segs.by_first.keys().next_back().copied();
        let mut firsts = segment_firsts(dir)?;
        firsts.retain(|f| newest.is_none_or(|n| *f > n));
        for first in firsts {
            let path = dir.join(segment_name(first));
            // None: trimmed since the listing, older than anything wanted.
            let Some(file) = self.open_segment(dir, first)? else {
                continue;
            };
            if let Some(prev) = segs.by_first.values_mut().next_back() {
                prev.sealed = true;
                prev.recent = None;
            }
            let mut seg = Segment::new(file, Vec::new(), 0, false);
            match read_sidecar(&path) {
                Some(frames) => {
                    seg.end = frames.last().map_or(0, |&(off, len)| off + u64::from(len));
                    seg.frames = frames;
                    seg.sealed = true;
                }
                None => read_tail(&mut seg, &path, false)?,
            }
            segs.by_first.insert(first, seg);
        }
        Ok(())
    }

    /// Opens the segment that begins at `first` as this process may use
    /// it; `None` when there is none (not begun yet, or trimmed).
    fn open_segment(&self, dir: &Path, first: u64) -> Result<Option<File>> {
        let path = dir.join(segment_name(first));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(self.mode != LogMode::ReadOnly)
            .open(&path)
        {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Waits for the turn to append (shared mode on a local folder). A turn
    /// lasts one `pwrite`; one held for `TURN_PATIENCE` belongs to a process
    /// that is stopped or stuck, and waiting on is an error, not a hang.
    pub(super) fn take_turn(&self) -> Result<Option<Turn<'_>>> {
        let Some(file) = &self.turn else {
            return Ok(None);
        };
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_micros(20);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Some(Turn(file))),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(source)) => {
                    return Err(Error::Io {
                        path: "segments/lock".into(),
                        source,
                    })
                }
            }
            let waited = started.elapsed();
            if waited > self.turn_patience {
                tracing::error!(
                    ?waited,
                    "another process has held the commit log's turn (segments/lock) too long; \
                     is a sopfs process of this volume stopped?"
                );
                return Err(Error::Timeout(waited));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(1));
        }
    }

    /// Seals the current segment (index sidecar) and starts one at `first`.
    pub(super) fn begin_segment(&self, segs: &mut Segments, first: u64) -> Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        if let Some((&prev, seg)) = segs.by_first.iter_mut().next_back() {
            // A newer segment may exist only behind a durable one: a sync
            // covers the segment it lands in, so a tail of this one that a
            // power cut dropped would cut the log before records that were
            // synced later (and wedge it, the next seq "taken" by a gap).
            let path = dir.join(segment_name(prev));
            crate::store::durable::file_data(&seg.file, &path).map_err(io(&path))?;
            if !seg.sealed {
                write_sidecar(&path, &seg.frames)?;
                seg.sealed = true;
            }
        }
        crate::store::durable::create_dirs(dir).map_err(io(dir))?;
        let path = dir.join(segment_name(first));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io(&path))?;
        // The new name must survive a power cut as surely as what goes in it.
        crate::store::durable::dir(dir).map_err(io(dir))?;
        segs.by_first
            .insert(first, Segment::new(file, Vec::new(), 0, false));
        Ok(())
    }
}
