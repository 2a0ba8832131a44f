//! API behaviour of single transactions: every operation, errors, large values.

mod common;

use common::{open_local, small_tree};
use engine::{Cursor, Direction, Error, TxMode};

fn key(i: u32) -> Vec<u8> {
    format!("k{i:06}").into_bytes()
}

#[test]
fn operations_commit_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = open_local(dir.path());
        let mut tx = db.begin(TxMode::ReadWrite).expect("begin");
        tx.create_tree("t", small_tree(4)).expect("create");
        for i in 0..200 {
            tx.insert("t", &key(i), format!("v{i}").as_bytes())
                .expect("insert");
        }
        assert!(matches!(
            tx.insert("t", &key(5), b"x"),
            Err(Error::KeyExists)
        ));
        assert!(matches!(
            tx.update("t", b"nope", b"x"),
            Err(Error::KeyNotFound)
        ));
        tx.update("t", &key(5), b"five").expect("update");
        tx.upsert("t", &key(500), &vec![7u8; 100_000])
            .expect("large upsert");
        assert!(tx.remove("t", &key(7)).expect("remove"));
        assert!(!tx.remove("t", &key(7)).expect("remove absent"));
        assert_eq!(tx.count("t").expect("count"), 200);
        tx.check_tree("t").expect("structure");
        tx.commit().expect("commit");
    }
    let db = open_local(dir.path());
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    assert_eq!(tx.get("t", &key(5)).expect("get"), Some(b"five".to_vec()));
    assert_eq!(tx.get("t", &key(7)).expect("get"), None);
    assert_eq!(
        tx.get("t", &key(500)).expect("get"),
        Some(vec![7u8; 100_000])
    );
    assert_eq!(tx.first("t").expect("first").map(|e| e.0), Some(key(0)));
    assert_eq!(tx.last("t").expect("last").map(|e| e.0), Some(key(500)));
    assert_eq!(tx.count("t").expect("count"), 200);
    assert!(matches!(tx.upsert("t", b"a", b"b"), Err(Error::ReadOnly)));
    assert_eq!(tx.list_trees().expect("list"), vec!["t".to_string()]);
}

#[test]
fn cursors_scan_both_ways_and_resume_in_another_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_local(dir.path());
    db.run(|tx| {
        tx.ensure_tree("t", small_tree(5))?;
        for i in 0..100 {
            tx.upsert("t", &key(i), b"v")?;
        }
        Ok(())
    })
    .expect("fill");
    let mut cursor = Cursor::new(key(10)..key(60), Direction::Forward);
    let mut seen = Vec::new();
    while !cursor.is_done() {
        let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
        seen.extend(
            tx.scan("t", &mut cursor, 7)
                .expect("scan")
                .into_iter()
                .map(|e| e.0),
        );
    }
    assert_eq!(seen, (10..60).map(key).collect::<Vec<_>>());
    let mut back = Cursor::new(key(10)..=key(60), Direction::Backward);
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    let mut got = Vec::new();
    while !back.is_done() {
        got.extend(
            tx.scan("t", &mut back, 3)
                .expect("scan")
                .into_iter()
                .map(|e| e.0),
        );
    }
    assert_eq!(got, (10..=60).rev().map(key).collect::<Vec<_>>());
    let mut pre = Cursor::prefix(b"k00002", Direction::Forward);
    assert_eq!(tx.scan("t", &mut pre, 100).expect("prefix").len(), 10);
}

#[test]
fn a_sorted_multi_get_agrees_with_one_get_per_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_local(dir.path());
    // Four slots a node: 3,000 keys make a tree five levels deep, so the
    // walk splits key runs at every level. Every third key is left out.
    db.run(|tx| {
        tx.ensure_tree("t", small_tree(4))?;
        for i in (0..3000).filter(|i| i % 3 != 0) {
            tx.insert("t", &key(i), format!("v{i}").as_bytes())?;
        }
        tx.upsert("t", &key(4001), &vec![9u8; 10_000])
    })
    .expect("fill");
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    // Runs within one leaf, gaps across many, both ends and past them.
    let wanted: Vec<Vec<u8>> = (0..3000)
        .filter(|i| i % 7 == 0 || (1000..1040).contains(i))
        .chain([2999, 4001, 5000])
        .map(key)
        .collect();
    let refs: Vec<&[u8]> = wanted.iter().map(|k| k.as_slice()).collect();
    let many = tx.get_values_sorted("t", &refs).expect("multi-get");
    assert_eq!(many.len(), refs.len());
    let mut present = 0;
    for (k, got) in refs.iter().zip(&many) {
        assert_eq!(got, &tx.get_value("t", k).expect("get"), "key {k:?}");
        present += got.is_some() as usize;
    }
    // Keys 0, 3, 6 ... are absent: the comparison above saw both kinds.
    assert!(present > 100 && present < refs.len(), "{present}");
    assert_eq!(tx.get_values_sorted("t", &[]).expect("none"), vec![]);
    let unsorted = [key(5), key(4)];
    let unsorted: Vec<&[u8]> = unsorted.iter().map(|k| k.as_slice()).collect();
    assert!(matches!(
        tx.get_values_sorted("t", &unsorted),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn trees_are_created_dropped_and_named_errors_come_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_local(dir.path());
    let mut tx = db.begin(TxMode::ReadWrite).expect("begin");
    assert!(matches!(
        tx.get("missing", b"k"),
        Err(Error::TreeNotFound(_))
    ));
    tx.create_tree("a", small_tree(4)).expect("create");
    assert!(matches!(
        tx.create_tree("a", small_tree(4)),
        Err(Error::TreeExists(_))
    ));
    assert!(matches!(
        tx.create_tree("b", small_tree(2)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        tx.upsert("a", &vec![0; 5000], b""),
        Err(Error::InvalidArgument(_))
    ));
    for i in 0..50 {
        tx.upsert("a", &key(i), b"v").expect("upsert");
    }
    tx.commit().expect("commit");
    let nodes_with_a = db.node_count();
    db.run(|tx| tx.drop_tree("a")).expect("drop");
    assert!(db.node_count() < nodes_with_a);
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    assert!(!tx.tree_exists("a").expect("exists"));
}

#[test]
fn rollback_leaves_nothing_and_snapshots_are_stable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_local(dir.path());
    db.run(|tx| {
        tx.ensure_tree("t", small_tree(4))?;
        tx.upsert("t", b"a", b"1")
    })
    .expect("seed");
    let mut reader = db.begin(TxMode::ReadOnly).expect("reader");
    let mut tx = db.begin(TxMode::ReadWrite).expect("begin");
    tx.upsert("t", b"b", b"2").expect("upsert");
    tx.rollback();
    db.run(|tx| tx.upsert("t", b"a", b"changed"))
        .expect("update");
    assert_eq!(reader.get("t", b"a").expect("get"), Some(b"1".to_vec()));
    assert_eq!(reader.get("t", b"b").expect("get"), None);
    let mut now = db.begin(TxMode::ReadOnly).expect("begin");
    assert_eq!(now.get("t", b"a").expect("get"), Some(b"changed".to_vec()));
    assert_eq!(now.get("t", b"b").expect("get"), None);
}

#[test]
fn a_second_embedded_process_is_refused_and_junk_folders_are_not_volumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _db = open_local(dir.path());
    let second = engine::Db::open(
        engine::StoreLocation::Local(dir.path().to_path_buf()),
        common::small_opts(),
    );
    assert!(matches!(second, Err(Error::InUse(_))));
    let junk = tempfile::tempdir().expect("tempdir");
    std::fs::write(junk.path().join("notes.txt"), b"mine").expect("write");
    let r = engine::Db::open(
        engine::StoreLocation::Local(junk.path().to_path_buf()),
        common::small_opts(),
    );
    assert!(matches!(r, Err(Error::NotAVolume(_))));
    assert_eq!(
        std::fs::read(junk.path().join("notes.txt")).expect("read"),
        b"mine"
    );
}

#[test]
fn transactions_time_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_local(dir.path());
    let mut tx = db
        .begin_with(engine::TxOptions {
            mode: TxMode::ReadWrite,
            timeout: std::time::Duration::from_millis(1),
            sync: false,
        })
        .expect("begin");
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert!(matches!(
        tx.ensure_tree("t", small_tree(4)),
        Err(Error::Timeout(_))
    ));
}

#[test]
fn a_transaction_that_changed_nothing_writes_no_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_local(dir.path());
    db.run(|tx| tx.ensure_tree("t", small_tree(4)))
        .expect("create");
    let before = db.seq();
    db.run(|tx| {
        tx.ensure_tree("t", small_tree(4))?;
        tx.get("t", b"k")
    })
    .expect("read-only work in a read-write transaction");
    assert_eq!(db.seq(), before);
}

#[test]
fn embedded_and_cluster_processes_never_share_a_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let loc = || engine::StoreLocation::Local(dir.path().to_path_buf());
    let coord = || std::sync::Arc::new(engine::InProcessCoordinator::new());
    let shared = engine::Db::open_shared(loc(), common::small_opts(), coord()).expect("shared");
    let shared2 =
        engine::Db::open_shared(loc(), common::small_opts(), coord()).expect("two shared");
    assert!(matches!(
        engine::Db::open(loc(), common::small_opts()),
        Err(Error::InUse(_))
    ));
    drop((shared, shared2));
    let _embedded = open_local(dir.path());
    assert!(matches!(
        engine::Db::open_shared(loc(), common::small_opts(), coord()),
        Err(Error::InUse(_))
    ));
}

#[test]
fn the_in_memory_store_behaves_like_a_folder_and_survives_reopen() {
    let mem = std::sync::Arc::new(object_store::memory::InMemory::new());
    let loc = || engine::StoreLocation::Memory(mem.clone());
    {
        let db = engine::Db::open(loc(), common::small_opts()).expect("open");
        db.run(|tx| {
            tx.ensure_tree("t", small_tree(4))?;
            for i in 0..100 {
                tx.upsert("t", &key(i), &vec![i as u8; (i as usize) * 20])?;
            }
            Ok(())
        })
        .expect("fill");
    }
    let db = engine::Db::open(loc(), common::small_opts()).expect("reopen");
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    assert_eq!(tx.check_tree("t").expect("structure"), 100);
    assert_eq!(tx.get("t", &key(99)).expect("get"), Some(vec![99u8; 1980]));
}

#[test]
fn one_transaction_over_two_trees_is_all_or_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_local(dir.path());
    db.run(|tx| {
        tx.ensure_tree("accounts", small_tree(4))?;
        tx.ensure_tree("journal", small_tree(4))?;
        tx.upsert("accounts", b"alice", b"100")
    })
    .expect("seed");
    // A transfer touching both trees, while another commit changes alice.
    let mut transfer = db.begin(TxMode::ReadWrite).expect("begin");
    assert_eq!(
        transfer.get("accounts", b"alice").expect("get"),
        Some(b"100".to_vec())
    );
    transfer.upsert("accounts", b"alice", b"90").expect("debit");
    transfer
        .insert("journal", b"t1", b"alice -10")
        .expect("journal");
    db.run(|tx| tx.upsert("accounts", b"alice", b"50"))
        .expect("concurrent change");
    assert!(matches!(transfer.commit(), Err(Error::Conflict { .. })));
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    assert_eq!(
        tx.get("journal", b"t1").expect("get"),
        None,
        "no half of a failed commit"
    );
    assert_eq!(
        tx.get("accounts", b"alice").expect("get"),
        Some(b"50".to_vec())
    );
    drop(tx);
    db.run(|tx| {
        tx.upsert("accounts", b"alice", b"40")?;
        tx.insert("journal", b"t2", b"alice -10")
    })
    .expect("transfer");
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    assert_eq!(
        tx.get("journal", b"t2").expect("get"),
        Some(b"alice -10".to_vec())
    );
    assert_eq!(
        tx.get("accounts", b"alice").expect("get"),
        Some(b"40".to_vec())
    );
}

#[test]
fn embedded_mode_refuses_s3_and_bad_locations_are_clear_errors() {
    let s3 = engine::StoreLocation::parse("s3://bucket/vol").expect("parse");
    match engine::Db::open(s3, common::small_opts()) {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("coordinator"), "{msg}"),
        other => panic!("embedded S3 must be refused, got {:?}", other.err()),
    }
    for bad in ["", "ftp://host/x", "file://relative", "s3://"] {
        assert!(
            matches!(
                engine::StoreLocation::parse(bad),
                Err(Error::InvalidArgument(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn the_background_pass_collects_garbage_on_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = engine::Options {
        background_interval: Some(std::time::Duration::from_millis(50)),
        gc_interval: Some(std::time::Duration::from_millis(50)),
        gc_retention: std::time::Duration::ZERO,
        ..engine::Options::default()
    };
    let db = engine::Db::open(engine::StoreLocation::Local(dir.path().to_path_buf()), opts)
        .expect("open");
    // Every overwrite leaves the previous leaf and value blobs unreachable.
    for i in 0..30u32 {
        db.run(|tx| {
            tx.ensure_tree("t", small_tree(4))?;
            tx.upsert("t", b"k", &vec![i as u8; 2000])
        })
        .expect("overwrite");
    }
    let count_blobs = || walk(&dir.path().join("blobs"));
    fn walk(p: &std::path::Path) -> usize {
        std::fs::read_dir(p).map_or(0, |d| {
            d.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
    }
    // What stays reachable: the catalog root, the tree's one leaf and the
    // value's one chunk. 30 overwrites left ~60 blobs; only GC removes them.
    let t = std::time::Instant::now();
    while count_blobs() > 3 {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "no background GC"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    assert_eq!(tx.get("t", b"k").expect("get"), Some(vec![29u8; 2000]));
}

fn blob_count(dir: &std::path::Path) -> usize {
    fn walk(p: &std::path::Path) -> usize {
        std::fs::read_dir(p).map_or(0, |rd| {
            rd.flatten()
                .map(|e| {
                    let t = e.file_type().expect("type");
                    if t.is_dir() {
                        walk(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
    }
    walk(&dir.join("blobs"))
}

#[test]
fn a_transaction_bigger_than_its_memory_stages_values_and_lands_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = engine::Options {
        stage_bytes: 1 << 20,
        chunk_size: 256 << 10,
        ..common::small_opts()
    };
    let db = engine::Db::open(engine::StoreLocation::Local(dir.path().to_path_buf()), opts)
        .expect("open");
    db.run(|tx| tx.ensure_tree("t", small_tree(8)))
        .expect("tree");
    let value = |i: u32| vec![(i % 251) as u8; 300 << 10];
    // 40 values of 300 KiB: 12 MiB, twelve times what the transaction may hold.
    let before = blob_count(dir.path());
    let mut tx = db.begin(TxMode::ReadWrite).expect("begin");
    for i in 0..40 {
        tx.upsert("t", &key(i), &value(i)).expect("upsert");
    }
    // 80 chunks, 3 or 4 held in memory, up to 8 still on their way to the
    // store (staged writes run in the background, a bounded number at once).
    let staged = blob_count(dir.path()) - before;
    assert!(
        staged >= 64,
        "only {staged} value blobs written before the commit"
    );
    // Its own staged values read back inside the transaction.
    assert_eq!(tx.get("t", &key(39)).expect("get"), Some(value(39)));
    // Until the commit, nobody sees any of it.
    let mut other = db.begin(TxMode::ReadOnly).expect("reader");
    assert_eq!(other.get("t", &key(0)).expect("get"), None);
    tx.commit().expect("commit");
    let mut r = db.begin(TxMode::ReadOnly).expect("reader");
    for i in 0..40 {
        assert_eq!(r.get("t", &key(i)).expect("get"), Some(value(i)), "{i}");
    }
    // A big transaction rolled back deletes what it staged (here at once;
    // the wait is for stores whose deletes run on clean-up threads).
    let before = blob_count(dir.path());
    let mut tx = db.begin(TxMode::ReadWrite).expect("begin");
    for i in 100..120 {
        tx.upsert("t", &key(i), &value(i)).expect("upsert");
    }
    assert!(blob_count(dir.path()) > before);
    tx.rollback();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while blob_count(dir.path()) != before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(blob_count(dir.path()), before);
}

#[test]
fn a_value_read_twice_is_fetched_from_the_store_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_local(dir.path());
    // Past the 256 KiB a commit record carries per value: a blob of its own.
    let value = vec![7u8; 300_000];
    db.run(|tx| {
        tx.ensure_tree("t", small_tree(8))?;
        tx.upsert("t", b"v", &value)
    })
    .expect("write");
    let mut r = db.begin(TxMode::ReadOnly).expect("reader");
    assert_eq!(r.get("t", b"v").expect("get"), Some(value.clone()));
    // The value's blob goes away under the engine (as if a later reader ran
    // after a store hiccup): the second read is served from the value cache.
    let before = blob_count(dir.path());
    let big: Vec<_> = walk_files(&dir.path().join("blobs"))
        .into_iter()
        .filter(|p| {
            std::fs::metadata(p)
                .map(|m| m.len() > 290_000)
                .unwrap_or(false)
        })
        .collect();
    assert_eq!(big.len(), 1, "one value blob");
    std::fs::remove_file(&big[0]).expect("rm");
    assert_eq!(blob_count(dir.path()), before - 1);
    let mut r = db.begin(TxMode::ReadOnly).expect("reader");
    assert_eq!(r.get("t", b"v").expect("get"), Some(value));
}

fn walk_files(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.extend(walk_files(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Files under `dir`, recursively.
fn files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .map(|e| {
                if e.path().is_dir() {
                    files_in(&e.path())
                } else {
                    1
                }
            })
            .sum()
    })
}

#[test]
fn nodes_carried_in_trimmed_records_stay_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_local(dir.path());
    // Many small commits over a tree of many small nodes.
    for round in 0..60u32 {
        db.run(|tx| {
            tx.ensure_tree("t", small_tree(4))?;
            for i in 0..10 {
                tx.upsert("t", &key(round * 10 + i), format!("v{round}").as_bytes())?;
            }
            Ok(())
        })
        .expect("commit");
    }
    // Small commits write no node blobs: the nodes travel in the records.
    assert_eq!(files_in(&dir.path().join("blobs")), 0);
    let trimmed = gc_three_passes(&db);
    assert!(trimmed >= 60, "only {trimmed} records trimmed");
    // The live nodes were written out before their records went.
    assert!(files_in(&dir.path().join("blobs")) > 10);
    drop(db);
    let check = |db: &engine::Db| {
        let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
        assert_eq!(tx.check_tree("t").expect("structure"), 600);
        for i in 0..600u32 {
            let want = format!("v{}", i / 10).into_bytes();
            assert_eq!(tx.get("t", &key(i)).expect("get"), Some(want), "key {i}");
        }
    };
    // A cold process reads them from the checkpoint's locations.
    let db = open_local(dir.path());
    check(&db);
    // And the volume keeps working on top of them.
    db.run(|tx| tx.upsert("t", &key(0), b"v0")).expect("commit");
    check(&db);
}

/// A read-only open writes nothing (no lock file, no format, no recovery,
/// no sweep), reads everything, refuses read-write transactions, and is
/// refused while an embedded owner holds the volume.
#[test]
fn a_read_only_open_reads_and_writes_nothing() {
    use engine::{Db, Options, StoreLocation};
    let dir = tempfile::tempdir().expect("tempdir");
    let loc = || StoreLocation::Local(dir.path().join("v"));
    let ro = || Options {
        read_only: true,
        ..Options::default()
    };
    // Nothing there: refused, and nothing created.
    let e = Db::open(loc(), ro()).err().expect("refused");
    assert!(matches!(e, Error::NotAVolume(_)), "{e}");
    assert!(!dir.path().join("v").exists());
    {
        let db = open_local(&dir.path().join("v"));
        db.run(|tx| {
            tx.ensure_tree("t", small_tree(4))?;
            for i in 0..50 {
                tx.upsert("t", &key(i), &vec![i as u8; 5000])?;
            }
            Ok(())
        })
        .expect("write");
        // The owner holds the volume: a reader is refused.
        assert!(matches!(Db::open(loc(), ro()), Err(Error::InUse(_))));
    }
    // What an owner's open would clean up: a staging file, a stray intent.
    std::fs::create_dir_all(dir.path().join("v/intents")).expect("intents");
    std::fs::write(dir.path().join("v/intents/dead#1"), b"x").expect("staging file");
    let snapshot = |root: &std::path::Path| {
        let mut v: Vec<_> = test_support::files_under(root)
            .into_iter()
            .map(|(p, n)| {
                let m = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
                (p, n, m)
            })
            .collect();
        v.sort();
        v
    };
    let before = snapshot(&dir.path().join("v"));
    {
        let db = Db::open(loc(), ro()).expect("read-only open");
        let db2 = Db::open(loc(), ro()).expect("two readers at once");
        for d in [&db, &db2] {
            let mut tx = d.begin(TxMode::ReadOnly).expect("begin");
            for i in 0..50 {
                assert_eq!(
                    tx.get("t", &key(i)).expect("get"),
                    Some(vec![i as u8; 5000])
                );
            }
        }
        assert!(matches!(db.begin(TxMode::ReadWrite), Err(Error::ReadOnly)));
        assert!(matches!(db.run(|_| Ok(())), Err(Error::ReadOnly)));
    }
    assert_eq!(snapshot(&dir.path().join("v")), before, "the store changed");
}

/// A commit whose changed nodes are far past what a record object carries
/// is still one segment frame in a local folder (no node file written),
/// reads back whole in a cold process, one node at a time, and stays
/// readable once GC has trimmed its record.
#[test]
fn a_big_commit_is_one_frame_and_reads_back_cold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 40_000u32;
    let value = |i: u32| format!("value {i:>20}").into_bytes();
    let db = open_local(dir.path());
    db.run(|tx| {
        tx.ensure_tree("t", small_tree(64))?;
        for i in 0..n {
            tx.upsert("t", &key(i), &value(i))?;
        }
        Ok(())
    })
    .expect("commit");
    // About 1.5 MiB of leaves, three times a record object's share: all in
    // the frame.
    assert_eq!(files_in(&dir.path().join("blobs")), 0);
    drop(db);
    let check = |db: &engine::Db| {
        let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
        assert_eq!(tx.check_tree("t").expect("structure"), u64::from(n));
        for i in (0..n).step_by(7) {
            assert_eq!(
                tx.get("t", &key(i)).expect("get"),
                Some(value(i)),
                "key {i}"
            );
        }
    };
    let db = open_local(dir.path());
    check(&db);
    // Trimmed: its live nodes are written out first, and read from there.
    db.run(|tx| tx.upsert("t", &key(0), &value(0)))
        .expect("commit");
    let trimmed = gc_three_passes(&db);
    assert!(trimmed >= 2, "only {trimmed} records trimmed");
    assert!(files_in(&dir.path().join("blobs")) > 100);
    drop(db);
    check(&open_local(dir.path()));
}

/// Three GC passes a moment apart with no retention: the first one's
/// checkpoint is past the window for the next, which trims the log up to
/// it. Returns the records trimmed.
fn gc_three_passes(db: &engine::Db) -> u64 {
    let mut trimmed = 0;
    for _ in 0..3 {
        trimmed += db
            .gc(std::time::Duration::ZERO, false)
            .expect("gc")
            .log_records_deleted;
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    trimmed
}
