//! Snapshots: a name pinned to one commit. The pinned state reads the same
//! however the volume changes after it, through GC passes that trim the log
//! behind it and across a reopen; deleting it lets GC free what only it kept.

mod common;

use common::{open_local, shared_local, small_opts, small_tree, value_blob_files, RedisServer};
use engine::{Db, Error, TxMode};
use std::time::Duration;

fn value(i: u32, round: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (i as usize * 7 + round as usize * 31 + j % 251) as u8)
        .collect()
}

/// Every key of round `round`: small (packed) values and big (blob) ones.
fn write_round(db: &Db, round: u32) {
    for i in 0..30u32 {
        let len = if i % 10 == 0 { 300 << 10 } else { 2000 };
        db.run(|tx| tx.upsert("t", format!("k{i:02}").as_bytes(), &value(i, round, len)))
            .expect("commit");
    }
}

/// Checks every key holds round `round`'s value, but `gone`.
fn check_round(tx: &mut engine::Transaction, round: u32, gone: Option<u32>) {
    for i in 0..30u32 {
        let len = if i % 10 == 0 { 300 << 10 } else { 2000 };
        let got = tx.get("t", format!("k{i:02}").as_bytes()).expect("get");
        let want = (gone != Some(i)).then(|| value(i, round, len));
        assert!(got == want, "k{i:02} of round {round}");
    }
}

fn gc_all(db: &Db) -> engine::GcReport {
    let mut total = engine::GcReport::default();
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(30));
        let r = db.gc(Duration::ZERO, false).expect("gc");
        total.blobs_deleted += r.blobs_deleted;
        total.bytes_deleted += r.bytes_deleted;
        total.log_records_deleted += r.log_records_deleted;
    }
    total
}

#[test]
fn a_snapshot_reads_as_taken_through_gc_and_reopen_and_its_space_comes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_local(dir.path());
    db.run(|tx| tx.ensure_tree("t", small_tree(8)))
        .expect("tree");
    write_round(&db, 1);
    let snap = db.create_snapshot("first").expect("snapshot");
    assert_eq!(snap.seq, db.seq());
    // Everything overwritten, and a key removed: the live state moves on.
    write_round(&db, 2);
    db.run(|tx| tx.remove("t", b"k05").map(|_| ()))
        .expect("remove");
    let trimmed = gc_all(&db).log_records_deleted;
    assert!(trimmed > 30, "GC trimmed {trimmed} records past the pin");
    let mut tx = db.begin_at(snap.seq).expect("begin_at");
    check_round(&mut tx, 1, None);
    assert_eq!(tx.check_tree("t").expect("structure"), 30);
    drop(tx);
    let mut live = db.begin(TxMode::ReadOnly).expect("begin");
    assert_eq!(live.get("t", b"k05").expect("get"), None);
    drop(live);
    drop(db);
    // Cold: the pinned state comes from the checkpoint GC wrote at its seq.
    let db = open_local(dir.path());
    assert_eq!(db.snapshots().expect("list"), vec![snap.clone()]);
    check_round(&mut db.begin_at(snap.seq).expect("begin_at"), 1, None);
    assert!(
        db.begin_at(snap.seq)
            .expect("begin_at")
            .insert("t", b"new", b"x")
            .is_err(),
        "a snapshot is read-only"
    );
    // Deleted, its round-1 big values are garbage.
    let before = value_blob_files(dir.path());
    assert!(db.delete_snapshot("first").expect("delete"));
    assert!(!db.delete_snapshot("first").expect("delete again"));
    let freed = gc_all(&db);
    let after = value_blob_files(dir.path());
    assert!(
        after + 3 <= before && freed.bytes_deleted >= 3 * (300 << 10),
        "value files {before} -> {after}, {} bytes freed",
        freed.bytes_deleted
    );
    check_round(&mut db.begin(TxMode::ReadOnly).expect("begin"), 2, Some(5));
}

#[test]
fn bad_and_taken_names_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_local(dir.path());
    db.create_snapshot("a").expect("first");
    for bad in ["", ".", "..", "x/y", "nul\0", &"n".repeat(121)] {
        match db.create_snapshot(bad) {
            Err(Error::InvalidArgument(_)) => {}
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    match db.create_snapshot("a") {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("exists"), "{m}"),
        other => panic!("taken name: {other:?}"),
    }
    let names: Vec<String> = db
        .snapshots()
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["a"]);
    // Names any byte string of a path segment can be: spaces, UTF-8.
    db.create_snapshot("nightly 2026-12-05 ✓").expect("unicode");
    assert_eq!(db.snapshots().expect("list").len(), 2);
}

#[test]
fn a_snapshot_taken_on_one_process_reads_the_same_on_another() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || shared_local(dir.path(), &redis.url(), small_opts());
    let (a, b) = (open(), open());
    a.run(|tx| tx.ensure_tree("t", small_tree(8)))
        .expect("tree");
    write_round(&b, 1);
    // `a` has not read b's commits; the snapshot still has them.
    let snap = a.create_snapshot("s").expect("snapshot");
    write_round(&a, 2);
    for db in [&a, &b] {
        check_round(&mut db.begin_at(snap.seq).expect("begin_at"), 1, None);
    }
}
