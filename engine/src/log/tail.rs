//! The end of a segment: checking frames, following the frames other
//! processes append, and repairing a tail that a dying writer or a power
//! cut tore (see ARCHITECTURE.md, "Power cuts").

use super::segments::Segment;
use super::{io, FRAME_HEADER, FRAME_TRAILER};
use crate::codec::{self, Kind};
use crate::error::{Error, Result};
use bytes::Bytes;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Checks one frame at `off` of `data` (a whole segment read into memory);
/// returns its length, or None if it is torn or damaged.
pub(super) fn frame_at(data: &[u8], off: usize) -> Option<usize> {
    let head = data.get(off..off + FRAME_HEADER)?;
    let len = u32::from_le_bytes([head[6], head[7], head[8], head[9]]) as usize;
    let total = FRAME_HEADER + len + FRAME_TRAILER;
    let frame = data.get(off..off.checked_add(total)?)?;
    // A record, or on a sealed volume a record sealed (`store/seal.rs`).
    let kind = if head[4] == Kind::Sealed as u8 {
        Kind::Sealed
    } else {
        Kind::Record
    };
    codec::unframe_versioned(kind, "segment", frame).ok()?;
    Some(total)
}

/// True if a whole, checked frame starts anywhere after `off`.
pub(super) fn valid_frame_after(data: &[u8], off: usize) -> bool {
    let magic = b"SOPF";
    (off + 1..data.len().saturating_sub(FRAME_HEADER))
        .filter(|&i| data[i..].starts_with(magic))
        .any(|i| frame_at(data, i).is_some())
}

/// Adds the whole frames written past `seg.end` since it was last read.
/// With `repair`, a torn frame at the end (its writer died) is cut off; a
/// damaged frame with a whole one after it is damage, never cut.
pub(super) fn read_tail(seg: &mut Segment, path: &Path, repair: bool) -> Result<()> {
    let len = seg.file.metadata().map_err(io(path))?.len();
    if len <= seg.end {
        return Ok(());
    }
    let mut buf = vec![0u8; usize::try_from(len - seg.end).unwrap_or(usize::MAX)];
    let mut got = 0;
    while got < buf.len() {
        match seg.file.read_at(&mut buf[got..], seg.end + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(path)(e)),
        }
    }
    buf.truncate(got);
    let mut off = 0;
    while let Some(n) = frame_at(&buf, off) {
        seg.frames.push((seg.end + off as u64, n as u32));
        off += n;
    }
    let from = seg.end;
    seg.end += off as u64;
    if repair && off < buf.len() {
        if !never_durable(&buf, off, seg.end) {
            return Err(Error::Corrupted {
                what: "commit log",
                path: path.display().to_string(),
                detail: format!("damaged record at byte {}", seg.end),
            });
        }
        cut_torn_tail(&seg.file, path, seg.end, &buf[off..])?;
    }
    if off > 0 && off <= RECENT_MAX {
        buf.truncate(off);
        seg.recent = Some((from, Bytes::from(buf)));
    }
    Ok(())
}

/// Most bytes of frames a segment keeps from its last `read_tail` (a busy
/// volume appends far less between two looks; a bigger read is read again
/// record by record, as before).
const RECENT_MAX: usize = 4 << 20;

/// True when the bad frame at `off` of `data` (byte `file_off` of its
/// segment, the last one) may be cut as a write that never became durable:
/// it shows a lost write's zeros (`lost_write`), or it is the last frame
/// and its bytes stop before its stated end (a writer that died mid-write,
/// a power cut that kept a prefix). A whole frame whose checksum fails is
/// damage wherever it is: a torn write never leaves one behind, and cutting
/// it could drop a commit whose sync had returned.
pub(super) fn never_durable(data: &[u8], off: usize, file_off: u64) -> bool {
    lost_write(data, off, file_off) || (!valid_frame_after(data, off) && stops_short(&data[off..]))
}

/// True when `rest`, the bytes from a bad frame to the end, end before the
/// frame's stated end, and do not check out as a frame whose length field
/// alone went bad (the same bytes read to the end of `rest`).
fn stops_short(rest: &[u8]) -> bool {
    let Some(h) = rest.get(6..10) else {
        return true;
    };
    let stated =
        FRAME_HEADER + u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize + FRAME_TRAILER;
    if stated <= rest.len() || rest.len() < FRAME_HEADER + FRAME_TRAILER {
        return stated > rest.len();
    }
    let body_end = rest.len() - FRAME_TRAILER;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&rest[..6]);
    crc.update(&((body_end - FRAME_HEADER) as u32).to_le_bytes());
    crc.update(&rest[FRAME_HEADER..body_end]);
    crc.finalize().to_le_bytes() != rest[body_end..]
}

/// Sector size for telling a lost write from damage.
const SECTOR: usize = 512;

/// True when the bad frame at `off` of `data` (byte `file_off` of its
/// file, to which sectors are aligned) looks like a write that never
/// reached the disk rather than bytes that went bad: it begins with zeros,
/// or one of its sectors, or its last piece of one, is all zeros. A write
/// a power cut dropped reads back as a hole (zeros) or as its page's older
/// state, which ended where the file ended then (zeros again); a flipped
/// bit leaves the rest of its frame intact.
fn lost_write(data: &[u8], off: usize, file_off: u64) -> bool {
    let rest = &data[off..];
    if rest.iter().take(4).all(|&b| b == 0) {
        return true;
    }
    // The bad frame's extent: its stated length when the header is there,
    // else up to the next frame's magic.
    let stated = rest.get(6..10).map(|h| {
        FRAME_HEADER + u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize + FRAME_TRAILER
    });
    let len = match stated {
        Some(n) if rest.starts_with(b"SOPF") => n.min(rest.len()),
        _ => rest.len(),
    };
    let frame = &rest[..len];
    // Each piece of the frame within one file-aligned sector: a whole
    // sector, or the frame's last piece (which holds its checksum, zero
    // only when lost), all zeros is a sector that never reached the disk.
    let mut at = 0;
    while at < frame.len() {
        let sector_end = SECTOR - ((file_off as usize + at) % SECTOR);
        let next = (at + sector_end).min(frame.len());
        let piece = &frame[at..next];
        let whole_or_last = piece.len() == SECTOR || (next == frame.len() && sector_end == SECTOR);
        if whole_or_last && piece.iter().all(|&b| b == 0) {
            return true;
        }
        at = next;
    }
    false
}

/// Cuts the log's last segment at `at`, its first frame that does not
/// check out. Every record after it is cut too, whole frames included: a
/// power cut keeps an arbitrary part of what was never synced, so a frame
/// can survive behind a lost one, but no commit after a lost one was ever
/// made durable (a sync covers every byte before it), and folding it in
/// without its predecessor would show half of a history. A log is a
/// prefix, as a write-ahead log is replayed up to its first bad record.
/// The bytes cut are kept beside the segment (`<first>.torn-<offset>`)
/// for whoever wants to look.
pub(super) fn cut_torn_tail(file: &File, path: &Path, at: u64, tail: &[u8]) -> Result<()> {
    let whole_after = valid_frame_after(tail, 0);
    let keep = path.with_extension(format!("torn-{at}"));
    if let Err(e) = std::fs::write(&keep, tail) {
        tracing::warn!(path = %keep.display(), error = %e, "could not keep the torn tail aside");
    }
    tracing::warn!(
        segment = %path.display(),
        offset = at,
        bytes = tail.len(),
        whole_frames_after = whole_after,
        kept = %keep.display(),
        "cutting the log at a record that never became durable (power cut or a writer that died)"
    );
    file.set_len(at).map_err(io(path))?;
    crate::store::durable::file_data(file, path).map_err(io(path))
}
