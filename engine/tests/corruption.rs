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
