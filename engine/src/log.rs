//! The commit log, in one of two shapes that a volume may mix:
//!
//! - **objects**: record `seq` is the object `log/<seq>>12>/<seq>`; creating it
//!   (create-if-absent) is the commit point. Every store, and the only shape
//!   cluster mode writes: processes race for a seq and the store decides.
//! - **segments**: records are frames appended back to back to files
//!   `segments/<first seq as %016x>` of a local folder. Only the embedded
//!   owner of the folder (who holds its exclusive lock) appends, so there is
//!   no race to decide, and a commit costs one `pwrite` instead of creating,
//!   linking and unlinking a file. A frame is self-delimiting and checksummed
//!   (`codec.rs`); the owner drops a torn frame at the tail when it opens
//!   the log (a commit whose write never finished never returned).
//!
//! A sealed segment (one a newer segment follows) has a sidecar
//! `segments/<first>.idx`: each frame's offset and length, so opening the log
//! reads a few bytes per record instead of every segment whole. A missing
//! or unreadable sidecar costs a scan of its segment, nothing else.
//!
//! Readers in cluster mode and `sopfs status` read segments but never change
//! them; they stop at the first frame that does not check out.

use crate::codec::{self, Kind};
use crate::error::{Error, Result};
use crate::store::{log_path, BlobStore};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Frame header: magic, kind, version, payload length (see `codec.rs`).
const FRAME_HEADER: usize = 10;
/// Frame trailer: CRC-32.
const FRAME_TRAILER: usize = 4;

/// How this process may use the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogMode {
    /// The embedded owner of a local folder: appends to segments, repairs a
    /// torn tail.
    Owner,
    /// Appends objects (cluster mode) and reads segments as they are.
    Shared,
    /// Reads only (`sopfs status` beside a running daemon).
    ReadOnly,
}

/// One segment file: where each of its records sits.
struct Segment {
    file: Arc<File>,
    /// (offset, length) of each frame; frame `i` holds record `first + i`.
    frames: Vec<(u64, u32)>,
    /// Bytes of whole frames (where the next one goes).
    end: u64,
    /// Has an index sidecar (sealed).
    sealed: bool,
}

#[derive(Default)]
struct Segments {
    by_first: BTreeMap<u64, Segment>,
}

impl Segments {
    fn find(&self, seq: u64) -> Option<(Arc<File>, u64, u32)> {
        let (first, seg) = self.by_first.range(..=seq).next_back()?;
        let &(off, len) = seg.frames.get(usize::try_from(seq - first).ok()?)?;
        Some((seg.file.clone(), off, len))
    }

    fn last_seq(&self) -> Option<u64> {
        let (first, seg) = self.by_first.iter().next_back()?;
        (!seg.frames.is_empty()).then(|| first + seg.frames.len() as u64 - 1)
    }
}

/// Records `trim` is to delete: objects by seq, segments by (first, count).
#[derive(Clone, Debug, Default)]
pub struct TrimPlan {
    objects: Vec<u64>,
    segments: Vec<(u64, u64)>,
}

impl TrimPlan {
    /// Every record seq the plan deletes.
    pub fn seqs(&self) -> Vec<u64> {
        let mut out = self.objects.clone();
        for &(first, n) in &self.segments {
            out.extend(first..first + n);
        }
        out.sort_unstable();
        out
    }
}

/// The commit log of one open volume.
pub struct Log {
    store: Arc<BlobStore>,
    mode: LogMode,
    /// A segment is sealed, and the next one begun, past this size.
    segment_bytes: u64,
    /// The local folder's `segments/`, when the store is a local folder.
    dir: Option<PathBuf>,
    segs: Mutex<Segments>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

fn segment_name(first: u64) -> String {
    format!("{first:016x}")
}

/// Checks one frame at `off` of `data` (a whole segment read into memory);
/// returns its length, or None if it is torn or damaged.
fn frame_at(data: &[u8], off: usize) -> Option<usize> {
    let head = data.get(off..off + FRAME_HEADER)?;
    let len = u32::from_le_bytes([head[6], head[7], head[8], head[9]]) as usize;
    let total = FRAME_HEADER + len + FRAME_TRAILER;
    let frame = data.get(off..off.checked_add(total)?)?;
    codec::unframe_versioned(Kind::Record, "segment", frame).ok()?;
    Some(total)
}

/// True if a whole, checked frame starts anywhere after `off`.
fn valid_frame_after(data: &[u8], off: usize) -> bool {
    let magic = b"SOPF";
    (off + 1..data.len().saturating_sub(FRAME_HEADER))
        .filter(|&i| data[i..].starts_with(magic))
        .any(|i| frame_at(data, i).is_some())
}

impl Log {
    /// Opens the log of `store`; indexes its segments when it is a local
    /// folder. New segments are sealed past `segment_bytes`.
    pub fn open(store: Arc<BlobStore>, mode: LogMode, segment_bytes: u64) -> Result<Log> {
        let dir = store.location().local_root().map(|r| r.join("segments"));
        let log = Log {
            store,
            mode,
            segment_bytes,
            dir,
            segs: Mutex::new(Segments::default()),
        };
        log.index()?;
        Ok(log)
    }

    fn index(&self) -> Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
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
        let mut segs = Segments::default();
        for (i, &first) in firsts.iter().enumerate() {
            let last = i + 1 == firsts.len();
            let path = dir.join(segment_name(first));
            let writable = self.mode == LogMode::Owner && last;
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
            segs.by_first.insert(
                first,
                Segment {
                    file: Arc::new(file),
                    frames,
                    end,
                    sealed,
                },
            );
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
        *self.segs.lock() = segs;
        Ok(())
    }

    /// Reads a segment whole and finds its frames. The last segment may end
    /// in a torn frame: the owner cuts it off, readers stop before it. A bad
    /// frame with a good one after it, or in any other segment, is damage:
    /// cutting there would drop commits that returned.
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
                None if last && !valid_frame_after(&data, off) => {
                    let dropped = data.len() - off;
                    if self.mode == LogMode::Owner {
                        tracing::warn!(
                            segment = %path.display(),
                            bytes = dropped,
                            "cutting off a torn commit record at the end of the log"
                        );
                        file.set_len(off as u64).map_err(io(path))?;
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

    /// The framed bytes of record `seq`, if the log still has it.
    pub fn read(&self, seq: u64) -> Result<Option<Bytes>> {
        let found = self.segs.lock().find(seq);
        if let Some((file, off, len)) = found {
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, off)
                .map_err(|source| Error::Io {
                    path: format!("segment record {seq}"),
                    source,
                })?;
            return Ok(Some(Bytes::from(buf)));
        }
        self.store.get(&log_path(seq))
    }

    /// Appends framed record `seq`: the commit point. `Ok(false)` when
    /// another process holds that seq already (objects only).
    pub fn append(&self, seq: u64, frame: &[u8]) -> Result<bool> {
        if self.mode != LogMode::Owner || self.dir.is_none() {
            return self.store.create(&log_path(seq), frame.to_vec());
        }
        let mut segs = self.segs.lock();
        let last = segs.last_seq();
        if last.is_some_and(|l| seq <= l) {
            // Taken already (the caller catches up and moves on).
            return Ok(false);
        }
        // Records between segments may be objects (a stretch in cluster
        // mode): a seq that does not follow the last segment starts a new one.
        let roll = match segs.by_first.values().next_back() {
            None => true,
            Some(s) => s.end >= self.segment_bytes || last.is_some_and(|l| seq != l + 1),
        };
        if roll {
            self.begin_segment(&mut segs, seq)?;
        }
        let Some(seg) = segs.by_first.values_mut().next_back() else {
            return Err(Error::InvalidArgument("no segment to append to".into()));
        };
        if let Err(e) = seg.file.write_all_at(frame, seg.end) {
            // Nothing after `end` is ever read; cut what did land so a
            // later, shorter frame does not leave a fragment behind it.
            let _ = seg.file.set_len(seg.end);
            return Err(Error::Io {
                path: format!("segment record {seq}"),
                source: e,
            });
        }
        seg.frames.push((seg.end, frame.len() as u32));
        seg.end += frame.len() as u64;
        Ok(true)
    }

    /// Seals the current segment (index sidecar) and starts one at `first`.
    fn begin_segment(&self, segs: &mut Segments, first: u64) -> Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        if let Some((&prev, seg)) = segs.by_first.iter_mut().next_back() {
            if !seg.sealed {
                write_sidecar(&dir.join(segment_name(prev)), &seg.frames)?;
                seg.sealed = true;
            }
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(segment_name(first));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io(&path))?;
        // The new name must survive a power cut as surely as what goes in it.
        sync_dir(dir)?;
        segs.by_first.insert(
            first,
            Segment {
                file: Arc::new(file),
                frames: Vec::new(),
                end: 0,
                sealed: false,
            },
        );
        Ok(())
    }

    /// Makes record `seq` durable.
    pub fn sync(&self, seq: u64) -> Result<()> {
        let found = self.segs.lock().find(seq);
        match found {
            Some((file, ..)) => file.sync_data().map_err(|source| Error::Io {
                path: format!("segment record {seq}"),
                source,
            }),
            None => self.store.sync(&[log_path(seq)]),
        }
    }

    /// Every record seq the log holds, ascending.
    pub fn seqs(&self) -> Result<Vec<u64>> {
        let mut out: Vec<u64> = Vec::new();
        for m in self.store.list("log")? {
            if let Some(seq) = m
                .location
                .filename()
                .and_then(|f| u64::from_str_radix(f, 16).ok())
            {
                out.push(seq);
            }
        }
        for (first, seg) in &self.segs.lock().by_first {
            out.extend(*first..*first + seg.frames.len() as u64);
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// What `trim` may delete: record objects up to `horizon`, and segments
    /// wholly up to it.
    pub fn trim_plan(&self, horizon: u64) -> Result<TrimPlan> {
        let objects: Vec<u64> = self
            .seqs_in_objects()?
            .into_iter()
            .filter(|&s| s <= horizon)
            .collect();
        // The segment being appended to qualifies too: once it is gone, the
        // next commit starts a new one (`append` runs under the same lock).
        let segs = self.segs.lock();
        let segments = segs
            .by_first
            .iter()
            .filter(|(first, seg)| {
                !seg.frames.is_empty() && *first + seg.frames.len() as u64 - 1 <= horizon
            })
            .map(|(first, seg)| (*first, seg.frames.len() as u64))
            .collect();
        Ok(TrimPlan { objects, segments })
    }

    /// Deletes what `plan` names, oldest first (so the newest record that
    /// survives always marks the log's end). Returns how many records went.
    pub fn trim(&self, plan: &TrimPlan) -> Result<u64> {
        let mut deleted = 0;
        for &seq in &plan.objects {
            self.store.delete(&log_path(seq))?;
            deleted += 1;
        }
        let Some(dir) = &self.dir else {
            return Ok(deleted);
        };
        let mut segs = self.segs.lock();
        for &(first, n) in &plan.segments {
            // Appends since the plan was made keep their segment.
            if segs
                .by_first
                .get(&first)
                .is_none_or(|s| s.frames.len() as u64 != n)
            {
                continue;
            }
            let path = dir.join(segment_name(first));
            let _ = std::fs::remove_file(sidecar_path(&path));
            std::fs::remove_file(&path).map_err(io(&path))?;
            if let Some(seg) = segs.by_first.remove(&first) {
                deleted += seg.frames.len() as u64;
            }
        }
        Ok(deleted)
    }

    fn seqs_in_objects(&self) -> Result<Vec<u64>> {
        let mut out: Vec<u64> = self
            .store
            .list("log")?
            .iter()
            .filter_map(|m| {
                m.location
                    .filename()
                    .and_then(|f| u64::from_str_radix(f, 16).ok())
            })
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Appends to segments (embedded owner of a local folder).
    pub fn appends_segments(&self) -> bool {
        self.mode == LogMode::Owner && self.dir.is_some()
    }
}

fn sidecar_path(segment: &Path) -> PathBuf {
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

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}
