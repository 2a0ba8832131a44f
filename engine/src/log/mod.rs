//! The commit log, in one of two shapes that a volume may mix:
//!
//! - **objects**: record `seq` is the object `log/<seq>>12>/<seq>`; creating it
//!   (create-if-absent) is the commit point. The shape on S3, where
//!   processes race for a seq and the store decides.
//! - **segments**: records are frames appended back to back to files
//!   `segments/<first seq as %016x>` of a local folder, so a commit costs
//!   one `pwrite` instead of creating a file (on ext4 without a journal,
//!   allocating an inode scans past every recently deleted one). The
//!   embedded owner of the folder (who holds its exclusive lock) appends
//!   with no one to race. Cluster-mode processes sharing a folder take
//!   turns through an exclusive `flock` on `segments/lock`: in its turn a
//!   process reads what the others appended since it last looked, and
//!   appends record `seq` only if it is the next one, so the turn is the
//!   commit point. A frame is self-delimiting and checksummed (`codec.rs`);
//!   a frame torn by a writer that died (its commit never returned) is cut
//!   off by the next appender, who holds the turn, so no writer can be
//!   writing it still.
//!
//! A sealed segment (one a newer segment follows) has a sidecar
//! `segments/<first>.idx`: each frame's offset and length, so opening the log
//! reads a few bytes per record instead of every segment whole. A missing
//! or unreadable sidecar costs a scan of its segment, nothing else.
//!
//! Readers follow the tail without a turn: they stop at the first frame
//! that does not check out (one being written), and look for it again later.

mod ahead;
mod recent_writes;
mod record;
mod registry;
mod segments;
mod tail;

pub(crate) use ahead::{in_range, Melder, TreeReads, AHEAD_SPAN};
pub(crate) use record::{
    decode_record, now_ms, CommitRecord, KeyOp, NodeChange, NodeLoc, PackedNode, PackedValue,
    RegState, TreeWrites,
};
pub(crate) use registry::Registry;

use crate::coord::Coordinator;
use crate::error::{Error, Result};
use crate::store::{log_path, BlobStore};
use bytes::Bytes;
use parking_lot::Mutex;
use record::head_frame;
use segments::{segment_name, sidecar_path, Located, Segments, TURN_PATIENCE};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tail::frame_at;

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
    /// Cluster mode: in a local folder, appends to segments in turns with
    /// the other processes (a `flock` on `segments/lock`); on S3, creates
    /// record objects.
    Shared,
    /// Reads only (`sopfs status` beside a running daemon).
    ReadOnly,
}

/// A record as `Log::read_seqs_from` read it.
#[derive(Clone)]
pub struct Fetched {
    /// Its frame, checked.
    pub frame: Bytes,
    /// The whole record; false: its head alone (no node or value bodies).
    pub whole: bool,
}

/// What the mirror answered for one position.
#[derive(Clone)]
enum Copied {
    /// A checked copy of the record.
    Frame(Bytes),
    /// Read the store: the record is not copied (too big), the copy does
    /// not check out, or the mirror could not be asked.
    Store,
    /// No copy: the record may not be written yet, or its copy expired.
    Unknown,
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
    /// Shared mode on a local folder: `segments/lock`, whose exclusive
    /// `flock` is the turn to append.
    turn: Option<File>,
    /// Longest wait for the turn (`TURN_PATIENCE`; shorter in tests).
    turn_patience: std::time::Duration,
    /// Shared mode on a local folder: the highest record found as an
    /// object when the log was opened. Every writer of a format-4 volume
    /// appends segments, so a record past it that no segment holds does not
    /// exist yet, and a probe for it needs no failed `open` of its object.
    objects_upto: u64,
    /// Where copies of records are kept for other processes (a shared
    /// volume's coordinator), when records are objects on a network store.
    mirror: OnceLock<Arc<dyn Coordinator>>,
    /// When a node or value of a record not kept here was last wanted (ms
    /// since `opened`, plus one; 0: never): see `bodies_wanted_lately`.
    bodies_wanted: AtomicU64,
    /// Records up to this position were folded at open (`follow_from`).
    followed_from: AtomicU64,
    opened: Instant,
}

/// How long after a host last wanted the bodies of records it had folded
/// by their heads it goes on reading whole records (see `read_seqs_from`).
const BODIES_WANTED_FOR: Duration = Duration::from_secs(2);

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

impl Log {
    /// Opens the log of `store`; indexes its segments when it is a local
    /// folder. New segments are sealed past `segment_bytes`.
    pub fn open(store: Arc<BlobStore>, mode: LogMode, segment_bytes: u64) -> Result<Log> {
        let dir = store.location().local_root().map(|r| r.join("segments"));
        let turn = match (&dir, mode) {
            (Some(dir), LogMode::Shared) => {
                crate::store::durable::create_dirs(dir).map_err(io(dir))?;
                let path = dir.join("lock");
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(io(&path))?;
                Some(file)
            }
            _ => None,
        };
        let objects_upto = match (&dir, mode) {
            (Some(dir), LogMode::Shared) => highest_object_record(dir.with_file_name("log")),
            _ => u64::MAX,
        };
        let log = Log {
            store,
            mode,
            segment_bytes,
            dir,
            segs: Mutex::new(Segments::default()),
            turn,
            turn_patience: TURN_PATIENCE,
            objects_upto,
            mirror: OnceLock::new(),
            bodies_wanted: AtomicU64::new(0),
            followed_from: AtomicU64::new(0),
            opened: Instant::now(),
        };
        log.index()?;
        Ok(log)
    }

    /// Has `coord` keep a copy of every record this process creates, and
    /// asks it for copies before the store: where records are objects on
    /// a network store, each host would otherwise GET every other host's
    /// records, hosts x records requests. Elsewhere a read is cheap and
    /// this does nothing.
    pub fn set_mirror(&self, coord: Arc<dyn Coordinator>) {
        if self.reads_in_batches() {
            let _ = self.mirror.set(coord);
        }
    }

    /// What the mirror holds of the records at `seqs`, each copy checked
    /// to be one whole frame (a copy that is not, an empty one, and every
    /// answer of a mirror that could not be asked send the reader to the
    /// store).
    fn mirrored(&self, seqs: &[u64], heads: bool) -> Vec<Copied> {
        let Some(mirror) = self.mirror.get() else {
            return vec![Copied::Store; seqs.len()];
        };
        let copies = if heads {
            mirror.mirrored_heads(seqs)
        } else {
            mirror.mirrored_records(seqs)
        };
        let Some(copies) = copies else {
            return vec![Copied::Store; seqs.len()];
        };
        copies
            .into_iter()
            .zip(seqs)
            .map(|(copy, &seq)| {
                let Some(copy) = copy else {
                    return Copied::Unknown;
                };
                let frame = self.store.unseal_record(seq, Bytes::from(copy));
                match frame {
                    Ok(f) if frame_at(&f, 0) == Some(f.len()) => Copied::Frame(f),
                    _ => Copied::Store,
                }
            })
            .collect()
    }

    /// The framed bytes of record `seq`, if the log still has it.
    pub fn read(&self, seq: u64) -> Result<Option<Bytes>> {
        let mut found = self.segs.lock().locate(seq);
        if found.is_none() && self.follows_others() {
            let mut segs = self.segs.lock();
            self.refresh(&mut segs, seq, false)?;
            found = segs.locate(seq);
        }
        if let Some(located) = found {
            let frame = match located {
                Located::Read(frame) => frame,
                Located::At(file, off, len) => {
                    let mut buf = vec![0u8; len as usize];
                    file.read_exact_at(&mut buf, off)
                        .map_err(|source| Error::Io {
                            path: format!("segment record {seq}"),
                            source,
                        })?;
                    Bytes::from(buf)
                }
            };
            return self.store.unseal_for(&log_path(seq), frame).map(Some);
        }
        if seq > self.objects_upto {
            return Ok(None);
        }
        if let Some(Copied::Frame(copy)) = self.mirrored(&[seq], false).pop() {
            return Ok(Some(copy));
        }
        self.store.get(&log_path(seq))
    }

    /// True when records are frames in local segment files (an `fstat` and
    /// a `pread` away), not objects.
    pub fn holds_segments(&self) -> bool {
        self.dir.is_some()
    }

    /// True where reading records costs a round trip each (record objects
    /// on a network store), so reading several at once pays.
    pub fn reads_in_batches(&self) -> bool {
        self.dir.is_none() && !self.store.probe_is_cheap()
    }

    /// Notes that a node or value of record `seq` was wanted and the record
    /// was not at hand: this host reads other processes' nodes (a directory
    /// they write too), so for a while it catches up with whole records
    /// again instead of their heads, and keeps them for those reads. A
    /// record folded before this host followed the log (`follow_from`)
    /// says nothing of that: every host reads those once, cold, after
    /// opening (the trees' catalog, its first directories).
    pub fn note_bodies_wanted(&self, seq: u64) {
        if seq <= self.followed_from.load(Ordering::Relaxed) {
            return;
        }
        let ms = self.opened.elapsed().as_millis() as u64 + 1;
        self.bodies_wanted.fetch_max(ms, Ordering::Relaxed);
    }

    /// Records up to `seq` were folded when the volume was opened, before
    /// the frames of records read began to be kept (see
    /// `note_bodies_wanted`).
    pub fn follow_from(&self, seq: u64) {
        self.followed_from.store(seq, Ordering::Relaxed);
    }

    fn bodies_wanted_lately(&self) -> bool {
        let at = self.bodies_wanted.load(Ordering::Relaxed);
        at != 0
            && (self.opened.elapsed().as_millis() as u64 + 1).saturating_sub(at)
                < BODIES_WANTED_FOR.as_millis() as u64
    }

    /// Records at the positions `seqs`, as `read` would return each, or
    /// only their heads (`Fetched::whole` false: the record without its
    /// node and value bodies, which is what folding reads). Record
    /// objects on a store where a request is a round trip come from the
    /// mirror's copies where it has them: of their heads, unless this host
    /// wanted other records' bodies lately (`note_bodies_wanted`); the rest
    /// are asked of the store together (see `BlobStore::get_many`). Without
    /// `unknown_from_store`, a position the mirror knows nothing of is not
    /// asked of the store but answered `None`: for a caller waiting on
    /// positions other processes are writing right now, whose copies
    /// follow their records within a Redis round trip, so polling the
    /// store for them would mostly find nothing or race the copy, a
    /// request each time.
    pub fn read_seqs_from(
        &self,
        seqs: &[u64],
        unknown_from_store: bool,
    ) -> Result<Vec<Option<Fetched>>> {
        let whole = |frame| Fetched { frame, whole: true };
        if !self.reads_in_batches() {
            return seqs
                .iter()
                .map(|&seq| Ok(self.read(seq)?.map(whole)))
                .collect();
        }
        let heads = !self.bodies_wanted_lately();
        let copies = self.mirrored(seqs, heads);
        let mut out = vec![None; seqs.len()];
        let mut ask = Vec::new();
        for (i, copy) in copies.into_iter().enumerate() {
            match copy {
                Copied::Frame(frame) => {
                    out[i] = Some(Fetched {
                        frame,
                        whole: !heads,
                    })
                }
                Copied::Unknown if !unknown_from_store => {}
                Copied::Unknown | Copied::Store => ask.push(i),
            }
        }
        if ask.is_empty() {
            return Ok(out);
        }
        let paths: Vec<_> = ask.iter().map(|&i| log_path(seqs[i])).collect();
        for (i, got) in ask.into_iter().zip(self.store.get_many(&paths)?) {
            out[i] = got.map(whole);
        }
        Ok(out)
    }

    /// True when `seq` is certainly the newest record: it is the last one
    /// indexed, its segment has room for more (no newer segment can have
    /// begun), and the segment file has not grown since. One `fstat`, no
    /// read: the common answer of a probe in cluster mode on a local folder.
    /// `false` means "look properly" (`read(seq + 1)`), not "there is more".
    pub fn ends_at(&self, seq: u64) -> bool {
        if !self.follows_others() || seq <= self.objects_upto {
            return false;
        }
        let segs = self.segs.lock();
        if segs.last_seq() != Some(seq) {
            return false;
        }
        let Some(seg) = segs.by_first.values().next_back() else {
            return false;
        };
        seg.end < self.segment_bytes && seg.file.metadata().is_ok_and(|m| m.len() == seg.end)
    }

    /// True when other processes may append segments this one has not seen.
    fn follows_others(&self) -> bool {
        self.mode != LogMode::Owner && self.dir.is_some()
    }

    /// Appends framed record `seq`: the commit point. `Ok(false)` when
    /// another process holds that seq already.
    pub fn append(&self, seq: u64, frame: &[u8]) -> Result<bool> {
        if self.mode == LogMode::ReadOnly || self.dir.is_none() {
            let path = log_path(seq);
            let created = self.store.create(&path, frame.to_vec())?;
            if let (true, Some(mirror)) = (created, self.mirror.get()) {
                let head = head_frame(frame);
                // Sealed as in the store: the coordinator never holds what
                // the volume keeps encrypted in the clear.
                if self.store.is_sealed() {
                    let seal = |f: &[u8]| self.store.seal_for(&path, f.to_vec());
                    let head = head.as_deref().map(seal);
                    mirror.mirror_record(seq, &seal(frame), head.as_deref());
                } else {
                    mirror.mirror_record(seq, frame, head.as_deref());
                }
            }
            return Ok(created);
        }
        let mut segs = self.segs.lock();
        let _turn = self.take_turn()?;
        if self.follows_others() {
            self.refresh(&mut segs, seq, true)?;
        }
        let last = segs.last_seq();
        if last.is_some_and(|l| seq <= l) {
            // Taken already (the caller catches up and moves on).
            return Ok(false);
        }
        let follows = last.is_some_and(|l| seq == l + 1);
        // A seq that does not follow the last segment follows objects (the
        // first records, or a stretch written by an older version): one of
        // them may hold this seq already.
        if !follows && self.follows_others() && self.store.get(&log_path(seq))?.is_some() {
            return Ok(false);
        }
        // Records between segments may be objects: a seq that does not
        // follow the last segment starts a new one.
        let roll = match segs.by_first.values().next_back() {
            None => true,
            Some(s) => s.end >= self.segment_bytes || !follows,
        };
        if roll {
            self.begin_segment(&mut segs, seq)?;
        }
        let Some(seg) = segs.by_first.values_mut().next_back() else {
            return Err(Error::InvalidArgument("no segment to append to".into()));
        };
        let sealed;
        let frame = if self.store.is_sealed() {
            sealed = self.store.seal_for(&log_path(seq), frame.to_vec());
            &sealed[..]
        } else {
            frame
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

    /// Makes record `seq`, and every record before it, durable. Sealed
    /// segments were made durable before the next one began, so only the
    /// segment holding `seq` can have a tail in the page cache.
    pub fn sync(&self, seq: u64) -> Result<()> {
        let found = self.segs.lock().find(seq);
        match found {
            Some((file, ..)) => crate::store::durable::file_data(&file, &self.segment_path_of(seq))
                .map_err(|source| Error::Io {
                    path: format!("segment record {seq}"),
                    source,
                }),
            None => match self.store.sync(&[log_path(seq)]) {
                // Trimmed: behind a checkpoint, which was made durable first.
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    Ok(())
                }
                r => r,
            },
        }
    }

    /// Makes every record this process has seen durable.
    pub fn sync_all(&self) -> Result<()> {
        let last = self.segs.lock().last_seq();
        match last {
            Some(seq) => self.sync(seq),
            None => Ok(()),
        }
    }

    /// The path of the segment that holds `seq` (for logs and barriers).
    fn segment_path_of(&self, seq: u64) -> PathBuf {
        let first = self
            .segs
            .lock()
            .by_first
            .range(..=seq)
            .next_back()
            .map_or(seq, |(f, _)| *f);
        self.dir
            .as_ref()
            .map_or_else(PathBuf::new, |d| d.join(segment_name(first)))
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
        // The owner's segment being appended to qualifies too: once it is
        // gone, its next commit starts a new one (`append` runs under the
        // same lock). Where other processes append, the last segment stays:
        // they would go on appending to the file after its name is gone.
        let segs = self.segs.lock();
        let newest = segs.by_first.keys().next_back().copied();
        let segments = segs
            .by_first
            .iter()
            .filter(|(first, seg)| {
                !seg.frames.is_empty()
                    && *first + seg.frames.len() as u64 - 1 <= horizon
                    && !(self.follows_others() && Some(**first) == newest)
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
        let _turn = self.take_turn()?;
        if self.follows_others() {
            let want = segs.last_seq().map_or(1, |l| l + 1);
            self.refresh(&mut segs, want, true)?;
        }
        let newest = segs.by_first.keys().next_back().copied();
        for &(first, n) in &plan.segments {
            // Appends since the plan was made keep their segment.
            if segs
                .by_first
                .get(&first)
                .is_none_or(|s| s.frames.len() as u64 != n)
                || (self.follows_others() && Some(first) == newest)
            {
                continue;
            }
            let path = dir.join(segment_name(first));
            let _ = std::fs::remove_file(sidecar_path(&path));
            std::fs::remove_file(&path).map_err(io(&path))?;
            // Oldest first, each gone durably before the next: a power cut
            // must not keep an older segment and drop a newer one, leaving a
            // hole in the log (one fsync per 64 MiB segment trimmed).
            crate::store::durable::dir(dir).map_err(io(dir))?;
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
}

/// The highest seq among the record objects under `log/` (0: none), read
/// from the folder names (`<seq >> 12>/<seq>`): the newest folder is listed.
fn highest_object_record(log: PathBuf) -> u64 {
    let hex_names = |dir: &Path| -> Vec<u64> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| u64::from_str_radix(e.file_name().to_str()?, 16).ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut folders = hex_names(&log);
    folders.sort_unstable();
    // The newest folder may hold only a record being created (a staging
    // name): fall back to the one before it.
    for folder in folders.iter().rev() {
        if let Some(max) = hex_names(&log.join(format!("{folder:012x}")))
            .into_iter()
            .max()
        {
            return max;
        }
    }
    0
}

#[cfg(test)]
mod tests;
