//! Damaged blobs give typed errors, never panics and never wrong data.

mod common;

use common::small_tree;
use engine::{Cursor, Db, Direction, Error, Options, StoreLocation, TxMode};
use std::path::{Path, PathBuf};

fn opts() -> Options {
    Options {
        background_interval: None,
        chunk_size: 300,
        ..Options::default()
    }
}

fn value(i: u32) -> Vec<u8> {
    if i.is_multiple_of(10) {
        vec![i as u8; 1000]
    } else {
        format!("v{i}").into_bytes()
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Reads every key; Ok(true) if all matched, Err for a typed failure.
fn read_all(dir: &Path) -> Result<bool, Error> {
    let db = Db::open(StoreLocation::Local(dir.to_path_buf()), opts())?;
    let mut tx = db.begin(TxMode::ReadOnly)?;
    let mut cursor = Cursor::new(.., Direction::Forward);
    let mut n = 0;
    while !cursor.is_done() {
        for (k, v) in tx.scan("t", &mut cursor, 64)? {
            let i: u32 = String::from_utf8_lossy(&k[1..]).parse().expect("key");
            if v != value(i) {
                return Ok(false);
            }
            n += 1;
        }
    }
    Ok(n == 300)
}

fn build(dir: &Path) {
    let db = Db::open(StoreLocation::Local(dir.to_path_buf()), opts()).expect("open");
    for chunk in 0..3 {
        db.run(|tx| {
            tx.ensure_tree("t", small_tree(4))?;
            for i in chunk * 100..(chunk + 1) * 100 {
                tx.upsert("t", format!("k{i:04}").as_bytes(), &value(i))?;
            }
            Ok(())
        })
        .expect("fill");
    }
    // Leave only reachable blobs, so that every damaged blob must be noticed.
    // The pause puts every commit outside even a zero retention window: GC
    // keeps (and writes out, when it trims their records) the node versions
    // replaced within the window, which the current state never reads.
    std::thread::sleep(std::time::Duration::from_millis(50));
    db.gc(std::time::Duration::ZERO, false).expect("gc");
}

#[test]
fn every_damaged_blob_is_reported_as_a_typed_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path());
    assert!(read_all(dir.path()).expect("pristine reads"));
    let blobs = files_under(&dir.path().join("blobs"));
    assert!(blobs.len() > 20, "{} blobs", blobs.len());
    // A spread of blobs: nodes at every level and value chunks.
    let step = (blobs.len() / 16).max(1);
    for (n, blob) in blobs.iter().enumerate().step_by(step) {
        let data = std::fs::read(blob).expect("read");
        for damage in ["truncate", "flip", "delete", "empty"] {
            match damage {
                "truncate" => std::fs::write(blob, &data[..data.len() / 2]),
                "flip" => {
                    let mut d = data.clone();
                    let at = (n * 7919) % d.len();
                    d[at] ^= 0x10;
                    std::fs::write(blob, d)
                }
                "delete" => std::fs::remove_file(blob),
                _ => std::fs::write(blob, b""),
            }
            .expect("damage");
            match read_all(dir.path()) {
                Err(Error::Corrupted { .. } | Error::Missing { .. }) => {}
                Ok(all_good) => {
                    panic!("{damage} of {blob:?} went unnoticed (data intact: {all_good})")
                }
                Err(e) => panic!("{damage} of {blob:?}: unexpected error kind: {e}"),
            }
            std::fs::write(blob, &data).expect("restore");
        }
    }
    assert!(read_all(dir.path()).expect("restored reads"));
}

#[test]
fn a_damaged_log_record_or_volume_marker_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = Db::open(StoreLocation::Local(dir.path().to_path_buf()), opts()).expect("open");
        db.run(|tx| {
            tx.ensure_tree("t", small_tree(4))?;
            tx.upsert("t", b"k", b"v")
        })
        .expect("commit");
    }
    let log = files_under(&dir.path().join("log"));
    let newest = log.last().expect("a record");
    let data = std::fs::read(newest).expect("read");
    std::fs::write(newest, &data[..data.len() - 3]).expect("truncate");
    let r = Db::open(StoreLocation::Local(dir.path().to_path_buf()), opts());
    assert!(matches!(r, Err(Error::Corrupted { .. })), "{:?}", r.err());
    std::fs::write(newest, &data).expect("restore");
    std::fs::write(dir.path().join("volume"), b"garbage").expect("damage marker");
    let r = Db::open(StoreLocation::Local(dir.path().to_path_buf()), opts());
    assert!(matches!(r, Err(Error::NotAVolume(_))), "{:?}", r.err());
}

/// The log segment files of a local volume, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir.join("segments"))
        .expect("segments")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_none())
        .collect();
    out.sort();
    out
}

fn count(db: &Db) -> usize {
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    let mut c = Cursor::new(.., Direction::Forward);
    tx.scan("t", &mut c, 100_000).expect("scan").len()
}

fn seg_opts() -> Options {
    Options {
        segment_bytes: 4 << 10,
        ..opts()
    }
}

fn commit_n(dir: &Path, from: u32, n: u32) {
    let db = Db::open(StoreLocation::Local(dir.to_path_buf()), seg_opts()).expect("open");
    for i in from..from + n {
        db.run(|tx| {
            tx.ensure_tree("t", small_tree(4))?;
            tx.upsert("t", format!("k{i:05}").as_bytes(), &value(i))
        })
        .expect("commit");
    }
}

#[test]
fn a_torn_record_at_the_end_of_the_log_is_cut_off_and_nothing_before_it_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    commit_n(dir.path(), 0, 40);
    let segs = segments(dir.path());
    assert!(segs.len() > 2, "segments roll over: {segs:?}");
    let last = segs.last().expect("a segment").clone();
    let data = std::fs::read(&last).expect("read");
    // A commit killed in the middle of its write: its frame is half there.
    let mut torn = data.clone();
    torn.extend_from_slice(&data[..data.len().min(25)]);
    std::fs::write(&last, &torn).expect("tear");
    let db = Db::open(StoreLocation::Local(dir.path().to_path_buf()), seg_opts()).expect("open");
    assert_eq!(count(&db), 40, "every commit that returned is there");
    assert_eq!(
        std::fs::read(&last).expect("read"),
        data,
        "the torn bytes are cut"
    );
    // The volume goes on, across more segments, and reopens whole.
    db.run(|tx| tx.upsert("t", b"k99999", b"after"))
        .expect("commit after repair");
    drop(db);
    commit_n(dir.path(), 40, 30);
    let db = Db::open(StoreLocation::Local(dir.path().to_path_buf()), seg_opts()).expect("open");
    assert_eq!(count(&db), 71);
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    assert_eq!(tx.check_tree("t").expect("structure"), 71);
}

#[test]
fn damage_inside_the_log_refuses_to_open_instead_of_dropping_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    commit_n(dir.path(), 0, 40);
    let segs = segments(dir.path());
    for victim in [segs[0].clone(), segs.last().expect("last").clone()] {
        let data = std::fs::read(&victim).expect("read");
        // A flipped bit in the first record of the segment: records after
        // it are good, so this is not a torn end.
        let mut bad = data.clone();
        bad[20] ^= 0x10;
        std::fs::write(&victim, &bad).expect("damage");
        let r = Db::open(StoreLocation::Local(dir.path().to_path_buf()), seg_opts());
        assert!(
            matches!(r, Err(Error::Corrupted { .. })),
            "{victim:?}: {:?}",
            r.err()
        );
        assert_eq!(std::fs::read(&victim).expect("read"), bad, "nothing cut");
        std::fs::write(&victim, &data).expect("restore");
    }
    let db = Db::open(StoreLocation::Local(dir.path().to_path_buf()), seg_opts()).expect("open");
    assert_eq!(count(&db), 40);
}

#[test]
fn a_missing_or_damaged_segment_index_costs_a_scan_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    commit_n(dir.path(), 0, 40);
    let segs = segments(dir.path());
    let idx: Vec<PathBuf> = segs.iter().map(|s| s.with_extension("idx")).collect();
    let sealed = &idx[..idx.len() - 1];
    assert!(
        sealed.iter().all(|p| p.exists()),
        "sealed segments have indexes"
    );
    assert!(!idx.last().expect("last").exists(), "the open one has none");
    std::fs::remove_file(&sealed[0]).expect("remove");
    std::fs::write(&sealed[1], b"junk").expect("damage");
    // Every record is read back through the log: no checkpoint covers them.
    let opts = Options {
        checkpoint_every: u64::MAX,
        ..seg_opts()
    };
    let db = Db::open(StoreLocation::Local(dir.path().to_path_buf()), opts).expect("open");
    assert_eq!(count(&db), 40);
}

#[test]
fn ranges_of_a_large_value_are_read_and_checked_block_by_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        background_interval: None,
        ..Options::default()
    };
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let db = Db::open(StoreLocation::Local(dir.path().to_path_buf()), opts.clone()).expect("open");
    db.run(|tx| {
        tx.ensure_tree("t", small_tree(4))?;
        tx.upsert("t", b"big", &big)
    })
    .expect("commit");
    drop(db);
    // Nodes (and values up to 256 KiB) travel in the commit record: the one
    // blob is this value.
    let blobs = files_under(&dir.path().join("blobs"));
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    let ranges = [
        (0, 1),
        (0, 4096),
        (4095, 4097),
        (10_000, 14_000),
        (49_999, 50_000),
        (45_000, 60_000),
        (60_000, 70_000),
        (0, 50_000),
    ];
    let read = |a: u64, b: u64| -> Result<Option<Vec<u8>>, Error> {
        let db = Db::open(StoreLocation::Local(dir.path().to_path_buf()), opts.clone())?;
        let mut tx = db.begin(TxMode::ReadOnly)?;
        tx.get_range("t", b"big", a..b)
    };
    for (a, b) in ranges {
        let want = &big[(a as usize).min(300_000)..(b as usize).min(300_000)];
        assert_eq!(
            read(a, b).expect("read").expect("present"),
            want,
            "{a}..{b}"
        );
    }
    assert_eq!(
        read(0, 10).expect("read absent key path"),
        Some(big[..10].to_vec())
    );
    // One flipped byte in block 3 (data bytes 12,288..16,384): reads that
    // need that block fail as damage, reads of other blocks still serve.
    let data = std::fs::read(&blobs[0]).expect("read");
    let mut bad = data.clone();
    bad[14 + 3 * 4100 + 100] ^= 0x01;
    std::fs::write(&blobs[0], &bad).expect("damage");
    for (a, b) in [(12_300, 12_400), (10_000, 14_000), (0, 50_000)] {
        assert!(
            matches!(read(a, b), Err(Error::Corrupted { .. })),
            "{a}..{b} served damaged bytes"
        );
    }
    for (a, b) in [(0, 4096), (20_000, 20_100)] {
        assert_eq!(
            read(a, b).expect("undamaged block").expect("present"),
            &big[a as usize..b as usize]
        );
    }
    // A truncated blob: ranges past the cut are damage, not short data.
    std::fs::write(&blobs[0], &data[..30_000]).expect("truncate");
    assert!(matches!(read(40_000, 40_010), Err(Error::Corrupted { .. })));
}
