//! The log's two shapes under several appenders, torn tails and trims.

use super::*;
use crate::codec::{self, Kind};
use crate::store::StoreLocation;

fn shared(dir: &Path, mode: LogMode, segment_bytes: u64) -> Log {
    let store = BlobStore::open(&StoreLocation::Local(dir.to_path_buf())).expect("store");
    Log::open(Arc::new(store), mode, segment_bytes).expect("log")
}

fn rec(seq: u64, by: &str) -> Vec<u8> {
    codec::frame(Kind::Record, format!("record {seq} by {by}").as_bytes())
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir.join("segments"))
        .expect("segments")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.len() == 16))
        .collect();
    out.sort();
    out
}

#[test]
fn shared_appenders_take_turns_and_follow_each_other_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (
        shared(dir.path(), LogMode::Shared, 300),
        shared(dir.path(), LogMode::Shared, 300),
    );
    assert!(a.append(2, &rec(2, "a")).expect("a appends"));
    assert!(
        !b.append(2, &rec(2, "b")).expect("b tries"),
        "the seq is a's: b must learn it in its turn"
    );
    assert_eq!(b.read(2).expect("read").as_deref(), Some(&rec(2, "a")[..]));
    // Alternate, each appender behind by one: every append first has to
    // find the other's record (across segment rolls, too).
    for seq in 3..60 {
        let (w, l, by) = if seq % 2 == 0 {
            (&a, &b, "a")
        } else {
            (&b, &a, "b")
        };
        assert!(!l.append(seq - 1, &rec(seq - 1, "late")).expect("late"));
        assert!(w.append(seq, &rec(seq, by)).expect("append"), "seq {seq}");
        assert_eq!(
            l.read(seq).expect("read").as_deref(),
            Some(&rec(seq, by)[..])
        );
    }
    // ~30-byte frames, 300-byte segments: each one full before the next
    // begins, whoever appended last.
    let n = segment_files(dir.path()).len();
    assert!((4..=8).contains(&n), "segments rolled when full: {n}");
    // A process opened now finds them all, sealed ones by their index.
    let c = shared(dir.path(), LogMode::ReadOnly, 300);
    for seq in 3..60 {
        let by = if seq % 2 == 0 { "a" } else { "b" };
        assert_eq!(
            c.read(seq).expect("read").as_deref(),
            Some(&rec(seq, by)[..])
        );
    }
    assert_eq!(c.read(60).expect("read"), None);
    assert!(b.append(60, &rec(60, "b")).expect("append"));
    assert_eq!(
        c.read(60).expect("read").as_deref(),
        Some(&rec(60, "b")[..])
    );
}

#[test]
fn a_frame_torn_by_a_dead_writer_is_cut_by_the_next_appender() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = shared(dir.path(), LogMode::Shared, 1 << 20);
    assert!(a.append(2, &rec(2, "a")).expect("append"));
    // A writer that died halfway through record 3.
    let seg = segment_files(dir.path()).pop().expect("a segment");
    let torn = rec(3, "dead");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("open");
    std::io::Write::write_all(&mut f, &torn[..torn.len() / 2]).expect("write");
    let reader = shared(dir.path(), LogMode::ReadOnly, 1 << 20);
    assert_eq!(
        reader.read(3).expect("read"),
        None,
        "a torn frame is no record"
    );
    let b = shared(dir.path(), LogMode::Shared, 1 << 20);
    assert!(b
        .append(3, &rec(3, "b"))
        .expect("b appends in the dead one's place"));
    assert_eq!(
        reader.read(3).expect("read").as_deref(),
        Some(&rec(3, "b")[..])
    );
    assert!(a.append(4, &rec(4, "a")).expect("append"));
    let fresh = shared(dir.path(), LogMode::ReadOnly, 1 << 20);
    for (seq, by) in [(2, "a"), (3, "b"), (4, "a")] {
        assert_eq!(
            fresh.read(seq).expect("read").as_deref(),
            Some(&rec(seq, by)[..])
        );
    }
}

#[test]
fn a_segment_begun_by_a_writer_that_died_before_its_first_frame_is_filled() {
    let dir = tempfile::tempdir().expect("tempdir");
    // ~30-byte frames: two fill a 50-byte segment.
    let a = shared(dir.path(), LogMode::Shared, 50);
    assert!(a.append(2, &rec(2, "a")).expect("append"));
    assert!(a.append(3, &rec(3, "a")).expect("append"));
    // A writer began the segment for record 4 and was killed there.
    std::fs::write(dir.path().join("segments").join(segment_name(4)), b"").expect("empty");
    let b = shared(dir.path(), LogMode::Shared, 50);
    assert_eq!(
        b.read(4).expect("read"),
        None,
        "an empty segment holds nothing"
    );
    assert!(b
        .append(4, &rec(4, "b"))
        .expect("append into the empty segment"));
    assert!(a.append(5, &rec(5, "a")).expect("a follows and goes on"));
    let c = shared(dir.path(), LogMode::ReadOnly, 50);
    for (seq, by) in [(2, "a"), (3, "a"), (4, "b"), (5, "a")] {
        assert_eq!(
            c.read(seq).expect("read").as_deref(),
            Some(&rec(seq, by)[..])
        );
    }
    assert!(segment_files(dir.path()).len() >= 2);
}

#[test]
fn a_damaged_frame_before_a_whole_one_is_never_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = shared(dir.path(), LogMode::Shared, 1 << 20);
    assert!(a.append(2, &rec(2, "a")).expect("append"));
    let b = shared(dir.path(), LogMode::Shared, 1 << 20);
    let seg = segment_files(dir.path()).pop().expect("a segment");
    // Garbage, then a whole frame: not a torn tail but damage.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("open");
    std::io::Write::write_all(&mut f, b"garbage!").expect("write");
    std::io::Write::write_all(&mut f, &rec(3, "x")).expect("write");
    let len = std::fs::metadata(&seg).expect("meta").len();
    assert!(matches!(
        b.append(3, &rec(3, "b")),
        Err(Error::Corrupted { .. })
    ));
    assert_eq!(
        std::fs::metadata(&seg).expect("meta").len(),
        len,
        "nothing cut"
    );
}

#[test]
fn records_left_as_objects_are_read_and_the_segments_go_on_after_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = BlobStore::open(&StoreLocation::Local(dir.path().to_path_buf())).expect("store");
    // A format-3 cluster run: records 2..=4 as objects, the last one in
    // a folder of its own (seq 4096 starts the next folder).
    for seq in [2, 3, 4096] {
        assert!(store
            .create(&log_path(seq), rec(seq, "old"))
            .expect("create"));
    }
    let a = shared(dir.path(), LogMode::Shared, 1 << 20);
    assert_eq!(a.objects_upto, 4096);
    for seq in [2, 3, 4096] {
        assert_eq!(
            a.read(seq).expect("read").as_deref(),
            Some(&rec(seq, "old")[..])
        );
    }
    assert_eq!(a.read(4097).expect("read"), None);
    assert!(!a.append(4096, &rec(4096, "a")).expect("taken by an object"));
    assert!(a.append(4097, &rec(4097, "a")).expect("append"));
    let b = shared(dir.path(), LogMode::Shared, 1 << 20);
    assert_eq!(
        b.read(4097).expect("read").as_deref(),
        Some(&rec(4097, "a")[..])
    );
    assert_eq!(
        b.read(4096).expect("read").as_deref(),
        Some(&rec(4096, "old")[..])
    );
}

#[test]
fn a_turn_held_too_long_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = shared(dir.path(), LogMode::Shared, 1 << 20);
    a.turn_patience = std::time::Duration::from_millis(200);
    // A stopped process holding the turn (flock is per open file).
    let stuck = File::open(dir.path().join("segments/lock")).expect("open");
    stuck.lock().expect("flock");
    let t = std::time::Instant::now();
    assert!(matches!(a.append(2, &rec(2, "a")), Err(Error::Timeout(_))));
    assert!(t.elapsed() >= std::time::Duration::from_millis(200));
    stuck.unlock().expect("unlock");
    assert!(a.append(2, &rec(2, "a")).expect("append once it is free"));
}

#[test]
fn ends_at_says_yes_only_when_nothing_can_follow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (
        shared(dir.path(), LogMode::Shared, 100),
        shared(dir.path(), LogMode::Shared, 100),
    );
    assert!(!b.ends_at(1), "nothing indexed yet: look properly");
    assert!(a.append(2, &rec(2, "a")).expect("append"));
    assert!(a.ends_at(2));
    assert!(!b.ends_at(2), "b has not indexed record 2");
    assert!(b.read(2).expect("read").is_some());
    assert!(b.ends_at(2));
    assert!(a.append(3, &rec(3, "a")).expect("append"));
    assert!(!b.ends_at(2), "the segment grew");
    assert!(!a.ends_at(2), "a newer record is indexed");
    assert!(b.read(3).expect("read").is_some());
    // Past `segment_bytes` a new segment may begin at any time: no.
    let mut last = 3;
    while std::fs::metadata(&segment_files(dir.path())[0])
        .expect("meta")
        .len()
        < 100
    {
        last += 1;
        assert!(a.append(last, &rec(last, "a")).expect("append"));
    }
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert!(!a.ends_at(last), "a full segment may be followed");
}

#[test]
fn trimming_keeps_the_segment_others_append_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (
        shared(dir.path(), LogMode::Shared, 200),
        shared(dir.path(), LogMode::Shared, 200),
    );
    for seq in 2..30 {
        let w = if seq % 3 == 0 { &b } else { &a };
        assert!(w.append(seq, &rec(seq, "w")).expect("append"));
    }
    let before = segment_files(dir.path());
    let plan = b.trim_plan(29).expect("plan");
    assert!(b.trim(&plan).expect("trim") > 0, "sealed segments go");
    let after = segment_files(dir.path());
    assert!(after.len() < before.len());
    assert_eq!(after.last(), before.last(), "the newest segment stays");
    assert!(a.append(30, &rec(30, "a")).expect("append after the trim"));
    assert_eq!(
        b.read(30).expect("read").as_deref(),
        Some(&rec(30, "a")[..])
    );
    assert_eq!(
        b.read(29).expect("read").as_deref(),
        Some(&rec(29, "w")[..])
    );
}

#[test]
fn sealed_frames_are_appended_followed_and_a_torn_one_is_cut() {
    use crate::store::{Sealer, Secret};
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Secret::new(b"a key for the log test".to_vec()).expect("key");
    let (_, spec) = Sealer::for_format(Some(3), Some(&key))
        .expect("spec")
        .expect("sealing");
    let sealed = |mode| {
        let store =
            BlobStore::open(&StoreLocation::Local(dir.path().to_path_buf())).expect("store");
        store.set_sealer(Some(
            Sealer::for_open(&spec, Some(&key), "v").expect("sealer"),
        ));
        Log::open(Arc::new(store), mode, 1 << 20).expect("log")
    };
    let (a, b) = (sealed(LogMode::Shared), sealed(LogMode::Shared));
    assert!(a.append(2, &rec(2, "a")).expect("a appends"));
    assert!(!b.append(2, &rec(2, "b")).expect("b loses"));
    assert_eq!(b.read(2).expect("read").as_deref(), Some(&rec(2, "a")[..]));
    // A writer that died halfway through a sealed record 3.
    let seg = segment_files(dir.path()).pop().expect("a segment");
    let whole = std::fs::read(&seg).expect("segment");
    assert!(
        !whole.windows(6).any(|w| w == b"record"),
        "frames are sealed"
    );
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("open");
    std::io::Write::write_all(&mut f, &whole[..whole.len() / 2]).expect("write");
    assert_eq!(sealed(LogMode::ReadOnly).read(3).expect("read"), None);
    assert!(b.append(3, &rec(3, "b")).expect("b appends past the cut"));
    assert!(a.append(4, &rec(4, "a")).expect("a follows"));
    let fresh = sealed(LogMode::ReadOnly);
    for (seq, by) in [(2, "a"), (3, "b"), (4, "a")] {
        assert_eq!(
            fresh.read(seq).expect("read").as_deref(),
            Some(&rec(seq, by)[..])
        );
    }
}

/// Damage done to a segment's bytes, given the offset of its last frame.
type Damage = fn(&mut Vec<u8>, usize);

/// Record 3, of `len` payload bytes, as the last frame of the one segment
/// after record 2, with `damage` done to its bytes (offsets in the file).
fn last_frame_damaged(dir: &Path, len: usize, damage: Damage) -> PathBuf {
    let a = shared(dir, LogMode::Owner, 1 << 20);
    assert!(a.append(2, &rec(2, "a")).expect("append"));
    let big = codec::frame(Kind::Record, &vec![0x5a; len]);
    assert!(a.append(3, &big).expect("append"));
    drop(a);
    let seg = segment_files(dir).pop().expect("a segment");
    let mut bytes = std::fs::read(&seg).expect("read");
    let at = bytes.len() - big.len();
    damage(&mut bytes, at);
    std::fs::write(&seg, &bytes).expect("damage");
    seg
}

#[test]
fn a_whole_last_frame_that_fails_its_check_is_damage_not_a_torn_end() {
    // A flipped bit in the body, and one in the length field: the frame is
    // all there, so its sync may have returned; cutting it would drop a
    // commit. Both owner and appender refuse, and cut nothing.
    let flips: [(&str, Damage); 2] = [
        ("body", |b, at| b[at + 20] ^= 0x10),
        ("length", |b, at| b[at + 8] ^= 0x01),
    ];
    for (what, flip) in flips {
        let dir = tempfile::tempdir().expect("tempdir");
        let seg = last_frame_damaged(dir.path(), 2000, flip);
        let before = std::fs::read(&seg).expect("read");
        let opened = Log::open(
            Arc::new(
                BlobStore::open(&StoreLocation::Local(dir.path().to_path_buf())).expect("store"),
            ),
            LogMode::Owner,
            1 << 20,
        );
        assert!(
            matches!(opened, Err(Error::Corrupted { .. })),
            "{what}: owner open gave {:?}",
            opened.err()
        );
        assert_eq!(
            std::fs::read(&seg).expect("read"),
            before,
            "{what}: nothing cut"
        );
    }
}

#[test]
fn a_last_frame_a_power_cut_tore_or_zeroed_is_cut() {
    // What a cut leaves of a frame whose sync never returned: a prefix, or
    // its pages with some lost (zeros), the last piece of a sector included.
    let tears: [(&str, Damage); 4] = [
        ("prefix", |b, at| b.truncate(at + 700)),
        ("interior sector", |b, at| {
            let s = (at / 512 + 2) * 512;
            b[s..s + 512].fill(0);
        }),
        ("last piece", |b, _| {
            let s = (b.len() - 1) / 512 * 512;
            b[s..].fill(0);
        }),
        ("start", |b, at| b[at..at + 40].fill(0)),
    ];
    for (what, tear) in tears {
        let dir = tempfile::tempdir().expect("tempdir");
        let seg = last_frame_damaged(dir.path(), 2000, tear);
        let owner = shared(dir.path(), LogMode::Owner, 1 << 20);
        assert!(owner.read(2).expect("read").is_some(), "{what}");
        assert_eq!(owner.read(3).expect("read"), None, "{what}: cut");
        assert!(owner.append(3, &rec(3, "again")).expect("append"), "{what}");
        drop(owner);
        assert!(
            std::fs::metadata(&seg).expect("meta").len() < 2000,
            "{what}: the torn frame is gone"
        );
    }
}

#[test]
fn a_follower_reads_the_records_it_just_indexed_from_that_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = shared(dir.path(), LogMode::Shared, 1 << 20);
    let b = shared(dir.path(), LogMode::Shared, 1 << 20);
    // Bursts of records of several sizes; b follows after each burst,
    // reading some of them, then all of them (a burst replaces the bytes
    // it keeps from the one before).
    let body = |seq: u64| rec(seq, &"x".repeat((seq as usize * 37) % 700));
    let mut seq = 2;
    for burst in 1..8u64 {
        let first = seq;
        for _ in 0..burst * 3 {
            assert!(a.append(seq, &body(seq)).expect("append"));
            seq += 1;
        }
        for s in (first..seq).step_by(2) {
            assert_eq!(b.read(s).expect("read").as_deref(), Some(&body(s)[..]));
        }
    }
    for s in 2..seq {
        assert_eq!(b.read(s).expect("read").as_deref(), Some(&body(s)[..]));
    }
    // Once indexed, a record is not read from the file again: bytes changed
    // on the disk behind b's back (as nothing but damage could) do not show.
    assert!(a.append(seq, &body(seq)).expect("append"));
    assert!(a.append(seq + 1, &body(seq + 1)).expect("append"));
    assert_eq!(b.read(seq).expect("read").as_deref(), Some(&body(seq)[..]));
    let path = segment_files(dir.path()).pop().expect("segment");
    let mut data = std::fs::read(&path).expect("segment bytes");
    let tail = data.len() - 8;
    data[tail] ^= 0xff;
    std::fs::write(&path, &data).expect("damage");
    assert_eq!(
        b.read(seq + 1).expect("read").as_deref(),
        Some(&body(seq + 1)[..]),
        "read from what b indexed"
    );
}
