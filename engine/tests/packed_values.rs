//! Embedded mode carries small values inside the commit record that wrote
//! them (no file per value); GC writes the live ones out before it trims
//! the record; cluster mode writes every value as a blob.

mod common;

use common::{shared_local, small_tree, value_blob_files, RedisServer};
use engine::{Db, Options, StoreLocation, TxMode};
use std::path::Path;
use std::time::Duration;

fn value(i: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (i as usize * 13 + j % 241) as u8)
        .collect()
}

fn opts() -> Options {
    Options {
        background_interval: None,
        checkpoint_every: 10,
        ..Options::default()
    }
}

fn open(dir: &Path) -> Db {
    Db::open(StoreLocation::Local(dir.to_path_buf()), opts()).expect("open")
}

/// (key, length): small values, one at the packing limit, one past it.
fn sizes() -> Vec<(u32, usize)> {
    let mut v: Vec<(u32, usize)> = (0..40).map(|i| (i, 100 + 997 * i as usize)).collect();
    v.push((40, 256 << 10));
    v.push((41, (256 << 10) + 1));
    v
}

fn check_all(db: &Db, overwritten: bool) {
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    for (i, len) in sizes() {
        let want = if overwritten && i % 2 == 0 {
            value(i + 1000, len / 2 + 1)
        } else {
            value(i, len)
        };
        let key = format!("k{i:02}");
        assert_eq!(
            tx.get("t", key.as_bytes()).expect("get").as_ref(),
            Some(&want),
            "{key}"
        );
        let end = (want.len() as u64).min(700);
        let part = tx.get_range("t", key.as_bytes(), 50..end).expect("range");
        assert_eq!(
            part.as_deref(),
            Some(&want[50.min(want.len())..end as usize]),
            "{key}"
        );
    }
}

#[test]
fn small_values_travel_in_the_record_and_survive_gc_trimming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    db.run(|tx| tx.ensure_tree("t", small_tree(8)))
        .expect("tree");
    // One value per commit, like small files, plus a commit of several.
    for (i, len) in sizes() {
        db.run(|tx| tx.upsert("t", format!("k{i:02}").as_bytes(), &value(i, len)))
            .expect("commit");
    }
    assert_eq!(
        value_blob_files(dir.path()),
        1,
        "only the value past 256 KiB is a file"
    );
    check_all(&db, false);
    drop(db);
    // Read back cold, from the log segments.
    let db = open(dir.path());
    check_all(&db, false);
    // Overwrite half: the old values become garbage, the rest stay live.
    db.run(|tx| {
        for (i, len) in sizes().into_iter().filter(|(i, _)| i % 2 == 0) {
            tx.upsert(
                "t",
                format!("k{i:02}").as_bytes(),
                &value(i + 1000, len / 2 + 1),
            )?;
        }
        Ok(())
    })
    .expect("overwrite");
    // GC with no retention trims the whole log: live packed values are
    // written out as blobs first, garbage ones are not.
    let mut trimmed = 0;
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(30));
        trimmed += db
            .gc(Duration::ZERO, false)
            .expect("gc")
            .log_records_deleted;
    }
    assert!(trimmed > 40, "{trimmed} records trimmed");
    let segs = std::fs::read_dir(dir.path().join("segments"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert!(segs <= 2, "segments left: {segs}");
    drop(db);
    let db = open(dir.path());
    check_all(&db, true);
    let live_packed = sizes().iter().filter(|(_, len)| *len <= 256 << 10).count();
    // Live values written out, plus the big one(s) that never were packed.
    let files = value_blob_files(dir.path());
    assert!(
        files >= live_packed && files <= live_packed + 3,
        "{files} value files for {live_packed} live packed values"
    );
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    assert_eq!(tx.check_tree("t").expect("structure"), sizes().len() as u64);
}

#[test]
fn a_crash_before_the_record_loses_the_commit_whole() {
    // The value and its leaf are one record: there is no state in which a
    // leaf names a value that is not there. Reopening after records were
    // cut off at the tail (what a kill mid-append leaves) shows the older
    // commits whole and nothing of the cut one.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    db.run(|tx| tx.ensure_tree("t", small_tree(8)))
        .expect("tree");
    for i in 0..5u32 {
        db.run(|tx| tx.upsert("t", format!("k{i}").as_bytes(), &value(i, 5000)))
            .expect("commit");
    }
    drop(db);
    let seg = std::fs::read_dir(dir.path().join("segments"))
        .expect("segments")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_none())
        .max()
        .expect("a segment");
    let data = std::fs::read(&seg).expect("read");
    // Tear the last record: its frame loses its last 100 bytes.
    std::fs::write(&seg, &data[..data.len() - 100]).expect("tear");
    let db = open(dir.path());
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    for i in 0..4u32 {
        assert_eq!(
            tx.get("t", format!("k{i}").as_bytes()).expect("get"),
            Some(value(i, 5000))
        );
    }
    assert_eq!(
        tx.get("t", b"k4").expect("get"),
        None,
        "the torn commit is gone whole"
    );
}

#[test]
fn cluster_mode_packs_small_values_too_and_other_processes_read_them() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || shared_local(dir.path(), &redis.url(), opts());
    let (a, b) = (open(), open());
    a.run(|tx| tx.ensure_tree("t", small_tree(8)))
        .expect("tree");
    // Both write into the same leaves at once: records collide on their
    // slots and move on to the next seq, which "here" follows.
    std::thread::scope(|s| {
        for (w, db) in [(0u32, &a), (1, &b)] {
            s.spawn(move || {
                for i in 0..30u32 {
                    let k = w * 100 + i;
                    db.run(|tx| tx.upsert("t", format!("k{k:03}").as_bytes(), &value(k, 3000)))
                        .expect("commit");
                }
            });
        }
    });
    assert_eq!(value_blob_files(dir.path()), 0, "no value became a file");
    for db in [&a, &b] {
        let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
        for w in 0..2u32 {
            for i in 0..30u32 {
                let k = w * 100 + i;
                let got = tx.get("t", format!("k{k:03}").as_bytes()).expect("get");
                assert_eq!(got, Some(value(k, 3000)), "k{k:03}");
            }
        }
        assert_eq!(tx.check_tree("t").expect("structure"), 60);
    }
    // A third process, cold, reads them from the records.
    drop((a, b));
    let c = open();
    let mut tx = c.begin(TxMode::ReadOnly).expect("begin");
    assert_eq!(tx.get("t", b"k105").expect("get"), Some(value(105, 3000)));
}

/// `put_value` shares a stored value with a second key: packed values (in
/// a record), blob values and inline ones. Overwriting or removing the
/// source leaves the copy whole, also after GC trims every record and
/// collects every blob nothing names; a value the transaction wrote itself
/// is copied by its bytes.
#[test]
fn a_shared_value_outlives_its_source_through_gc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    db.run(|tx| tx.ensure_tree("t", small_tree(8)))
        .expect("tree");
    for (i, len) in sizes() {
        db.run(|tx| tx.upsert("t", format!("k{i:02}").as_bytes(), &value(i, len)))
            .expect("commit");
    }
    let files_before = value_blob_files(dir.path());
    db.run(|tx| {
        for (i, _) in sizes() {
            let v = tx
                .get_value("t", format!("k{i:02}").as_bytes())?
                .expect("source");
            tx.put_value("t", format!("copy{i:02}").as_bytes(), &v)?;
        }
        // Written in this very transaction, then copied: by its bytes.
        tx.upsert("t", b"fresh", &value(77, 300_000))?;
        let v = tx.get_value("t", b"fresh")?.expect("fresh");
        tx.put_value("t", b"fresh-copy", &v)?;
        Ok(())
    })
    .expect("copy");
    assert_eq!(
        value_blob_files(dir.path()),
        files_before + 2,
        "only the fresh value and its copy are new files: shared values are not rewritten"
    );
    // The sources go away: overwritten or removed.
    db.run(|tx| {
        for (i, len) in sizes() {
            let k = format!("k{i:02}");
            if i % 2 == 0 {
                tx.upsert("t", k.as_bytes(), &value(i + 1000, len / 2 + 1))?;
            } else {
                tx.remove("t", k.as_bytes())?;
            }
        }
        tx.remove("t", b"fresh")?;
        Ok(())
    })
    .expect("overwrite");
    let (mut trimmed, mut deleted) = (0, 0);
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(30));
        let r = db.gc(Duration::ZERO, false).expect("gc");
        trimmed += r.log_records_deleted;
        deleted += r.blobs_deleted;
    }
    // GC did run over them: every record that carried a packed source was
    // trimmed, and the removed "fresh" value's blob was collected.
    assert!(trimmed > 40, "{trimmed} records trimmed");
    assert!(deleted >= 1, "{deleted} blobs collected");
    drop(db);
    let db = open(dir.path());
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    for (i, len) in sizes() {
        assert_eq!(
            tx.get("t", format!("copy{i:02}").as_bytes()).expect("get"),
            Some(value(i, len)),
            "copy{i:02}"
        );
    }
    assert_eq!(
        tx.get("t", b"fresh-copy").expect("get"),
        Some(value(77, 300_000))
    );
    assert_eq!(tx.get("t", b"fresh").expect("get"), None);
    tx.check_tree("t").expect("structure");
}
