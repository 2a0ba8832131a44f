//! Many threads, many transactions, one process: merges, conflicts, phantoms.

mod common;

use common::{open_local, small_tree};
use engine::{Error, TxMode};
use std::sync::{Arc, Barrier};

const THREADS: usize = 8;

#[test]
fn eight_threads_two_thousand_single_key_transactions_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(open_local(dir.path()));
    db.run(|tx| tx.ensure_tree("t", small_tree(16)))
        .expect("tree");
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 0..2000 {
                    let k = format!("{i:05}-{t}");
                    db.run(|tx| tx.insert("t", k.as_bytes(), b"v"))
                        .expect("insert");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    assert_eq!(tx.count("t").expect("count"), (THREADS * 2000) as u64);
    assert_eq!(
        tx.check_tree("t").expect("structure"),
        (THREADS * 2000) as u64
    );
    for t in 0..THREADS {
        for i in (0..2000).step_by(97) {
            assert!(tx
                .get("t", format!("{i:05}-{t}").as_bytes())
                .expect("get")
                .is_some());
        }
    }
    let s = db.stats();
    eprintln!("stats: {s:?}");
    // Keys of different threads interleave, so they share leaves: merges must
    // have happened, and none of them may be a conflict (keys are distinct).
    assert!(s.merges > 0, "{s:?}");
    assert_eq!(s.conflicts, 0, "{s:?}");
}

#[test]
fn eight_threads_increment_one_counter_five_hundred_times() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(open_local(dir.path()));
    db.run(|tx| {
        tx.ensure_tree("c", small_tree(8))?;
        tx.upsert("c", b"n", &0u64.to_le_bytes())
    })
    .expect("seed");
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || {
                for _ in 0..500 {
                    db.run(|tx| {
                        let v = tx.get("c", b"n")?.ok_or(Error::KeyNotFound)?;
                        let n = u64::from_le_bytes(v.try_into().map_err(|_| Error::KeyNotFound)?);
                        tx.update("c", b"n", &(n + 1).to_le_bytes())
                    })
                    .expect("increment");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    let v = tx.get("c", b"n").expect("get").expect("present");
    assert_eq!(u64::from_le_bytes(v.try_into().expect("8 bytes")), 4000);
    assert!(
        db.stats().conflicts > 0,
        "racing increments must have conflicted"
    );
}

#[test]
fn check_absent_then_insert_only_one_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(open_local(dir.path()));
    db.run(|tx| tx.ensure_tree("t", small_tree(8)))
        .expect("tree");
    for round in 0..20 {
        let key = format!("name-{round}");
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (db, barrier, key) = (db.clone(), barrier.clone(), key.clone());
                std::thread::spawn(move || {
                    let mut tx = db.begin(TxMode::ReadWrite).expect("begin");
                    // Absent in every snapshot; a different value from each thread.
                    assert_eq!(tx.get("t", key.as_bytes()).expect("get"), None);
                    tx.upsert("t", key.as_bytes(), format!("{t}").as_bytes())
                        .expect("upsert");
                    barrier.wait();
                    match tx.commit() {
                        Ok(_) => true,
                        Err(e) => {
                            assert!(matches!(e, Error::Conflict { .. }), "{e}");
                            false
                        }
                    }
                })
            })
            .collect();
        let wins = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .filter(|w| *w)
            .count();
        assert_eq!(wins, 1, "round {round}");
    }
}

#[test]
fn a_range_read_conflicts_with_an_insert_into_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_local(dir.path());
    db.run(|tx| {
        tx.ensure_tree("t", small_tree(8))?;
        tx.upsert("t", b"a", b"")?;
        tx.upsert("t", b"z", b"")
    })
    .expect("seed");
    let mut scanner = db.begin(TxMode::ReadWrite).expect("begin");
    assert_eq!(scanner.count("t").expect("count"), 2);
    scanner.upsert("t", b"count", b"2").expect("write");
    db.run(|tx| tx.insert("t", b"m", b"")).expect("phantom");
    assert!(matches!(scanner.commit(), Err(Error::Conflict { .. })));
}

#[test]
fn eight_threads_write_into_a_brand_new_tree_at_once() {
    for round in 0..10 {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Arc::new(open_local(dir.path()));
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (db, barrier) = (db.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let mut tx = db.begin(TxMode::ReadWrite).expect("begin");
                    tx.ensure_tree("fresh", small_tree(4)).expect("ensure");
                    for i in 0..10 {
                        tx.insert("fresh", format!("{t}-{i}").as_bytes(), b"v")
                            .expect("insert");
                    }
                    barrier.wait();
                    tx.commit()
                        .expect("every first commit lands without a retry");
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
        assert_eq!(
            tx.count("fresh").expect("count"),
            (THREADS * 10) as u64,
            "round {round}"
        );
        assert_eq!(tx.list_trees().expect("list"), vec!["fresh".to_string()]);
        tx.check_tree("fresh").expect("structure");
    }
}

/// What writer `i` of the GC test writes: small values travel in the commit
/// record (embedded mode), big ones are blobs; both must survive GC.
fn gc_test_value(i: u32) -> Vec<u8> {
    vec![(i % 251) as u8; if i.is_multiple_of(2) { 600 } else { 300_000 }]
}

#[test]
fn gc_in_a_loop_never_deletes_what_a_concurrent_commit_needs() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(open_local(dir.path()));
    db.run(|tx| tx.ensure_tree("t", small_tree(4)))
        .expect("tree");
    let stop = Arc::new(AtomicBool::new(false));
    let passes = Arc::new(AtomicUsize::new(0));
    let gc = {
        let (db, stop, passes) = (db.clone(), stop.clone(), passes.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // Zero retention: only reachability and intents protect blobs,
                // and every pass trims the log (writing packed values out).
                db.gc(std::time::Duration::ZERO, false).expect("gc");
                passes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (db, passes) = (db.clone(), passes.clone());
            std::thread::spawn(move || {
                // At least 150 writes, and on until GC has run a few times.
                let mut i = 0u32;
                while i < 150 || passes.load(Ordering::Relaxed) < 6 {
                    let k = format!("{}-{w}", i % 20);
                    db.run(|tx| tx.upsert("t", k.as_bytes(), &gc_test_value(i)))
                        .expect("upsert");
                    i += 1;
                }
                i
            })
        })
        .collect();
    let written: Vec<u32> = writers
        .into_iter()
        .map(|w| w.join().expect("writer"))
        .collect();
    stop.store(true, Ordering::Relaxed);
    gc.join().expect("gc thread");
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    assert_eq!(tx.check_tree("t").expect("structure"), 80);
    for (w, &n) in written.iter().enumerate() {
        for i in n - 20..n {
            let v = tx
                .get("t", format!("{}-{w}", i % 20).as_bytes())
                .expect("every blob still there");
            assert!(v == Some(gc_test_value(i)), "{}-{w}", i % 20);
        }
    }
}

/// A transaction that touches every leaf of a tree lands while other
/// threads stream small commits into the same leaves: once sent back, it
/// holds the process's commit turn for its next attempt instead of being
/// sent back by every small commit until its deadline.
#[test]
fn a_big_transaction_lands_under_a_stream_of_small_commits() {
    use engine::Options;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(
        engine::Db::open(
            engine::StoreLocation::Local(dir.path().to_path_buf()),
            Options {
                background_interval: None,
                tx_timeout: std::time::Duration::from_secs(20),
                ..Options::default()
            },
        )
        .expect("open"),
    );
    db.run(|tx| {
        tx.ensure_tree("t", small_tree(16))?;
        for i in 0..20_000u32 {
            tx.upsert("t", format!("{i:06}").as_bytes(), b"old")?;
        }
        Ok(())
    })
    .expect("fill");
    let stop = Arc::new(AtomicBool::new(false));
    let small = Arc::new(AtomicU64::new(0));
    let streams: Vec<_> = (0..2u32)
        .map(|t| {
            let (db, stop, small) = (db.clone(), stop.clone(), small.clone());
            std::thread::spawn(move || {
                let mut i = t as u64;
                while !stop.load(Ordering::Relaxed) {
                    // Keys of their own, spread over every leaf.
                    let k = format!("{:06}-s{t}", i.wrapping_mul(7919) % 20_000);
                    db.run(|tx| tx.upsert("t", k.as_bytes(), b"small"))
                        .expect("small commit");
                    small.fetch_add(1, Ordering::Relaxed);
                    i += 2;
                }
            })
        })
        .collect();
    while small.load(Ordering::Relaxed) < 200 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let before = small.load(Ordering::Relaxed);
    let big = db.run(|tx| {
        for i in 0..20_000u32 {
            tx.upsert("t", format!("{i:06}").as_bytes(), b"new")?;
        }
        Ok(())
    });
    let during = small.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    for s in streams {
        s.join().expect("stream");
    }
    big.expect("the big transaction landed");
    assert!(during > 0, "the small commits kept landing meanwhile");
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    for i in (0..20_000u32).step_by(997) {
        assert_eq!(
            tx.get("t", format!("{i:06}").as_bytes()).expect("get"),
            Some(b"new".to_vec())
        );
    }
    tx.check_tree("t").expect("structure");
}
