//! Crash safety: a child process commits in a loop and is killed with SIGKILL
//! at random moments; after each kill the store must hold every acknowledged
//! commit, nothing half-applied, and a valid tree.

mod common;

use common::small_tree;
use engine::{Db, Options, StoreLocation, TxMode};
use std::path::Path;
use std::time::Duration;
use test_support::child::{ack, Worker};

const CHILD_ENV: &str = "SOPFS_CRASH_CHILD_DIR";
const TREE: &str = "crash";

fn opts() -> Options {
    Options {
        background_interval: None,
        chunk_size: 700,
        checkpoint_every: 37,
        // Kills land while segments are sealed and begun, too.
        segment_bytes: 8 << 10,
        ..Options::default()
    }
}

fn keys_of(i: u64) -> Vec<Vec<u8>> {
    (0..1 + i % 7)
        .map(|j| format!("k{i:08}-{j}").into_bytes())
        .collect()
}

fn value_of(i: u64) -> Vec<u8> {
    // Every fifth commit carries a value large enough for several chunk blobs.
    let len = if i.is_multiple_of(5) { 2500 } else { 12 };
    (0..len).map(|b| (i as usize + b) as u8).collect()
}

fn counter(db: &Db) -> u64 {
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    if !tx.tree_exists(TREE).expect("exists") {
        return 0;
    }
    tx.get(TREE, b"counter")
        .expect("get")
        .map_or(0, |v| u64::from_le_bytes(v.try_into().expect("8 bytes")))
}

/// Commit `i`: counter = i; a{i} = value; k{i}-* written; k{i-2}-* removed.
fn child_loop(dir: &Path) {
    let db = Db::open(StoreLocation::Local(dir.to_path_buf()), opts()).expect("child open");
    let mut i = counter(&db);
    loop {
        i += 1;
        db.run(|tx| {
            tx.ensure_tree(TREE, small_tree(5))?;
            tx.upsert(TREE, b"counter", &i.to_le_bytes())?;
            tx.insert(TREE, format!("a{i:08}").as_bytes(), &value_of(i))?;
            for k in keys_of(i) {
                tx.insert(TREE, &k, &value_of(i))?;
            }
            if i > 2 {
                for k in keys_of(i - 2) {
                    tx.remove(TREE, &k)?;
                }
            }
            Ok(())
        })
        .expect("child commit");
        ack(i);
    }
}

/// The child's entry point: a no-op unless the crash test started this process.
#[test]
fn child_process_entry() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child_loop(Path::new(&dir));
    }
}

fn verify(dir: &Path, acked: u64) -> u64 {
    let db = Db::open(StoreLocation::Local(dir.to_path_buf()), opts()).expect("reopen after kill");
    let c = counter(&db);
    assert!(
        c >= acked,
        "acknowledged commit {acked} lost (store holds {c})"
    );
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    if c == 0 {
        return 0;
    }
    let n = tx.check_tree(TREE).expect("tree structure after crash");
    let live_k: u64 = [c, c.saturating_sub(1)]
        .iter()
        .filter(|i| **i > 0)
        .map(|i| keys_of(*i).len() as u64)
        .sum();
    assert_eq!(n, c + live_k + 1, "entry count after commit {c}");
    // Commit c and everything before it is whole; c + 1 left no trace.
    for i in [1, c / 2, c.saturating_sub(1), c]
        .into_iter()
        .filter(|i| *i > 0)
    {
        let a = tx.get(TREE, format!("a{i:08}").as_bytes()).expect("get");
        assert_eq!(a, Some(value_of(i)), "a{i} after commit {c}");
    }
    assert_eq!(
        tx.get(TREE, format!("a{:08}", c + 1).as_bytes())
            .expect("get"),
        None
    );
    for k in keys_of(c) {
        assert!(tx.get(TREE, &k).expect("get").is_some());
    }
    if c > 2 {
        for k in keys_of(c - 2) {
            assert_eq!(
                tx.get(TREE, &k).expect("get"),
                None,
                "half-applied commit {c}"
            );
        }
    }
    // Opening recovered every unfinished commit.
    let intents = std::fs::read_dir(dir.join("intents"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(intents, 0, "intent records left after recovery");
    c
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acked = 0;
    let mut last = 0;
    let kills = 80;
    for round in 0..kills {
        let mut worker = Worker::spawn(
            "child_process_entry",
            &[(CHILD_ENV, dir.path().display().to_string())],
        );
        // Wait for the first ack of this run, then kill at a random moment.
        if let Ok(n) = worker.acks.recv_timeout(Duration::from_secs(20)) {
            acked = acked.max(n);
        }
        std::thread::sleep(Duration::from_micros(rand::random_range(0..60_000)));
        worker.kill();
        while let Ok(n) = worker.acks.try_recv() {
            acked = acked.max(n);
        }
        let c = verify(dir.path(), acked);
        assert!(c >= last, "round {round}: commits went backwards");
        last = c;
    }
    assert!(
        last > kills,
        "the child made too little progress: {last} commits"
    );
    // Whatever the crashes left behind is garbage GC can reclaim safely.
    let db = Db::open(StoreLocation::Local(dir.path().to_path_buf()), opts()).expect("open");
    let report = db.gc(Duration::ZERO, false).expect("gc");
    eprintln!("after {kills} kills: {last} commits, gc {report:?}");
    drop(db);
    verify(dir.path(), acked);
}
