//! Values written ahead of their transaction (`Db::stash`): they land with
//! the commit that puts them, survive GC while they wait, and are deleted
//! when no commit takes them.

mod common;

use common::{small_opts, small_tree, value_blob_files, RedisServer};
use engine::{Db, Options, RedisCoordinator, StoreLocation, TxMode};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn chunk(i: u32) -> Vec<u8> {
    (0..100_000u32).map(|j| (i * 31 + j % 253) as u8).collect()
}

#[test]
fn stashed_values_land_with_their_commit_and_survive_gc_while_they_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(StoreLocation::Local(dir.path().to_path_buf()), small_opts()).expect("open");
    db.run(|tx| tx.ensure_tree("t", small_tree(8)))
        .expect("tree");
    let stash = db.stash();
    let values: Vec<_> = (0..20).map(|i| stash.put(chunk(i)).expect("put")).collect();
    // Nothing names them yet: a GC with no retention window must keep them.
    for v in &values {
        stash.wait(v).expect("written");
    }
    std::thread::sleep(Duration::from_millis(20));
    db.gc(Duration::ZERO, false).expect("gc");
    assert_eq!(
        value_blob_files(dir.path()),
        20,
        "GC kept the waiting values"
    );
    assert_eq!(stash.read(&values[3]).expect("read back"), chunk(3));
    // One transaction takes the first 15; the other 5 are never used.
    db.run(|tx| {
        for (i, v) in values.iter().take(15).enumerate() {
            tx.put_stashed("t", format!("k{i:02}").as_bytes(), &stash, v)?;
        }
        Ok(())
    })
    .expect("commit");
    stash.discard(&values[19]);
    assert_eq!(
        value_blob_files(dir.path()),
        19,
        "a discarded value is deleted"
    );
    drop(stash);
    assert_eq!(
        value_blob_files(dir.path()),
        15,
        "values no commit took are deleted with their stash"
    );
    std::thread::sleep(Duration::from_millis(20));
    db.gc(Duration::ZERO, false).expect("gc");
    drop(db);
    let db =
        Db::open(StoreLocation::Local(dir.path().to_path_buf()), small_opts()).expect("reopen");
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    for i in 0..15u32 {
        let got = tx.get("t", format!("k{i:02}").as_bytes()).expect("get");
        assert_eq!(got, Some(chunk(i)), "k{i:02}");
        let part = tx
            .get_range("t", format!("k{i:02}").as_bytes(), 5000..5100)
            .expect("range");
        assert_eq!(part.as_deref(), Some(&chunk(i)[5000..5100]));
    }
    assert_eq!(tx.count("t").expect("count"), 15);
}

#[test]
fn a_commit_that_fails_leaves_its_stashed_values_to_the_stash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(StoreLocation::Local(dir.path().to_path_buf()), small_opts()).expect("open");
    db.run(|tx| tx.ensure_tree("t", small_tree(8)))
        .expect("tree");
    let stash = db.stash();
    let v = stash.put(chunk(1)).expect("put");
    // A transaction that puts the value and is rolled back...
    {
        let mut tx = db.begin(TxMode::ReadWrite).expect("begin");
        tx.put_stashed("t", b"k", &stash, &v).expect("put");
        tx.rollback();
    }
    // ... leaves it usable by the next one.
    db.run(|tx| tx.put_stashed("t", b"k", &stash, &v))
        .expect("commit");
    drop(stash);
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    assert_eq!(tx.get("t", b"k").expect("get"), Some(chunk(1)));
}

#[test]
fn a_run_of_values_is_one_blob_kept_while_any_piece_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(StoreLocation::Local(dir.path().to_path_buf()), small_opts()).expect("open");
    db.run(|tx| tx.ensure_tree("t", small_tree(8)))
        .expect("tree");
    let stash = db.stash();
    // Two runs of four values each, and pieces of unequal lengths.
    let pieces = [100_000, 100_000, 77, 100_000];
    let run = |first: u32| -> Vec<u8> {
        pieces
            .iter()
            .enumerate()
            .flat_map(|(i, &n)| chunk(first + i as u32)[..n].to_vec())
            .collect()
    };
    let a = stash.put_run(run(0), &pieces).expect("run a");
    let b = stash.put_run(run(10), &pieces).expect("run b");
    assert!(
        stash.put_run(run(0), &[1, 2]).is_err(),
        "pieces that do not add up to the run are refused"
    );
    for v in a.iter().chain(&b) {
        stash.wait(v).expect("written");
    }
    assert_eq!(value_blob_files(dir.path()), 2, "one blob per run");
    assert_eq!(
        stash.read(&a[2]).expect("read back"),
        chunk(2)[..77].to_vec()
    );
    std::thread::sleep(Duration::from_millis(20));
    db.gc(Duration::ZERO, false).expect("gc");
    assert_eq!(value_blob_files(dir.path()), 2, "GC kept the waiting runs");

    // Pieces 0 and 2 of run a land; 1 and 3 are dropped: the blob stays,
    // named by the keys. Every piece of run b is dropped: its blob goes.
    db.run(|tx| {
        tx.put_stashed("t", b"k0", &stash, &a[0])?;
        tx.put_stashed("t", b"k2", &stash, &a[2])
    })
    .expect("commit");
    stash.discard(&a[1]);
    for v in &b {
        stash.discard(v);
    }
    assert_eq!(value_blob_files(dir.path()), 1, "run b deleted, run a kept");
    drop(stash);
    assert_eq!(
        value_blob_files(dir.path()),
        1,
        "a landed run outlives its stash"
    );
    std::thread::sleep(Duration::from_millis(20));
    db.gc(Duration::ZERO, false).expect("gc");
    assert_eq!(
        value_blob_files(dir.path()),
        1,
        "GC keeps a run a key names"
    );

    // Read through a fresh process: whole, by small range (blocks of the
    // blob alone) and by big range (the blob whole).
    drop(db);
    let db =
        Db::open(StoreLocation::Local(dir.path().to_path_buf()), small_opts()).expect("reopen");
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    assert_eq!(tx.get("t", b"k0").expect("get"), Some(chunk(0)));
    assert_eq!(
        tx.get_range("t", b"k0", 99_990..100_010).expect("range"),
        Some(chunk(0)[99_990..].to_vec()),
        "a range is clipped to its piece, not read on into the next"
    );
    assert_eq!(
        tx.get_range("t", b"k2", 10..70).expect("range"),
        Some(chunk(2)[10..70].to_vec())
    );
    assert_eq!(
        tx.get_range("t", b"k2", 0..77).expect("range"),
        Some(chunk(2)[..77].to_vec())
    );
    // A copy shares the piece; once neither key names it, GC takes it.
    db.run(|tx| {
        let v = tx.get_value("t", b"k0")?.expect("k0");
        tx.put_value("t", b"copy", &v)
    })
    .expect("copy");
    db.run(|tx| {
        tx.upsert("t", b"k0", b"x")?;
        tx.upsert("t", b"k2", b"y")
    })
    .expect("overwrite");
    std::thread::sleep(Duration::from_millis(20));
    db.gc(Duration::ZERO, false).expect("gc");
    assert_eq!(
        value_blob_files(dir.path()),
        1,
        "the copy still names the run"
    );
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    assert_eq!(tx.get("t", b"copy").expect("get"), Some(chunk(0)));
    drop(tx);
    db.run(|tx| tx.upsert("t", b"copy", b"z"))
        .expect("overwrite");
    std::thread::sleep(Duration::from_millis(20));
    db.gc(Duration::ZERO, false).expect("gc");
    assert_eq!(
        value_blob_files(dir.path()),
        0,
        "no key names the run: deleted"
    );
}

/// Every value blob file, with its last-modified time set an hour back.
fn age_value_blobs(dir: &Path) {
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    for d in std::fs::read_dir(dir.join("blobs"))
        .expect("blobs")
        .flatten()
    {
        for f in std::fs::read_dir(d.path()).expect("dir").flatten() {
            if std::fs::read(f.path()).is_ok_and(|b| b.get(4) == Some(&2)) {
                let file = std::fs::File::options()
                    .write(true)
                    .open(f.path())
                    .expect("open");
                file.set_modified(old).expect("backdate");
            }
        }
    }
}

#[test]
fn in_cluster_mode_another_process_gc_keeps_what_a_stash_waits_with() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let location = StoreLocation::Local(dir.path().to_path_buf());
    let open = || {
        let coord = Arc::new(RedisCoordinator::connect(&redis.url()).expect("redis"));
        let opts = Options {
            background_interval: None,
            // Listed at once: the test ages the blobs by hand.
            stash_list_after: Duration::ZERO,
            ..Options::default()
        };
        Db::open_shared(location.clone(), opts, coord).expect("open")
    };
    let (writer, other) = (open(), open());
    writer
        .run(|tx| tx.ensure_tree("t", small_tree(8)))
        .expect("tree");
    let stash = writer.stash();
    let values: Vec<_> = (0..3).map(|i| stash.put(chunk(i)).expect("put")).collect();
    for v in &values {
        stash.wait(v).expect("written");
    }
    // Older than any retention window: only the stash's intent record keeps
    // them from the other process's GC (which cannot see this one's memory).
    age_value_blobs(dir.path());
    other.gc(Duration::ZERO, false).expect("gc");
    assert_eq!(
        value_blob_files(dir.path()),
        3,
        "GC elsewhere kept the waiting values"
    );
    writer
        .run(|tx| {
            for (i, v) in values.iter().enumerate() {
                tx.put_stashed("t", format!("k{i}").as_bytes(), &stash, v)?;
            }
            Ok(())
        })
        .expect("commit");
    let mut tx = other.begin(TxMode::ReadOnly).expect("begin");
    for i in 0..3u32 {
        assert_eq!(
            tx.get("t", format!("k{i}").as_bytes()).expect("get"),
            Some(chunk(i))
        );
    }
    // The control: without its intent record, an old waiting value is
    // garbage to the other process.
    let lonely = stash.put(chunk(9)).expect("put");
    stash.wait(&lonely).expect("written");
    let store = engine::BlobStore::open(&location).expect("store");
    for m in store.list("intents").expect("list") {
        store.delete(&m.location).expect("delete intent");
    }
    age_value_blobs(dir.path());
    other.gc(Duration::ZERO, false).expect("gc");
    assert_eq!(
        value_blob_files(dir.path()),
        3,
        "only the committed values are left"
    );
    drop(stash);
}

#[test]
fn in_cluster_mode_a_stash_leaves_no_intent_record_behind() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let location = StoreLocation::Local(dir.path().to_path_buf());
    let coord = Arc::new(RedisCoordinator::connect(&redis.url()).expect("redis"));
    let db = Db::open_shared(
        location.clone(),
        Options {
            background_interval: None,
            stash_list_after: Duration::ZERO,
            ..Options::default()
        },
        coord,
    )
    .expect("open");
    db.run(|tx| tx.ensure_tree("t", small_tree(8)))
        .expect("tree");
    let store = engine::BlobStore::open(&location).expect("store");
    let intents = || {
        store
            .list("intents")
            .expect("list")
            .into_iter()
            .map(|m| store.get(&m.location).expect("get").expect("present"))
            .collect::<Vec<_>>()
    };
    let stash = db.stash();
    let a = stash.put(chunk(1)).expect("put");
    let b = stash.put(chunk(2)).expect("put");
    stash.wait(&b).expect("written");
    // What other processes' GC reads (the test above shows it is obeyed).
    assert!(!intents().is_empty(), "the waiting values are listed");
    db.run(|tx| {
        tx.put_stashed("t", b"a", &stash, &a)?;
        tx.put_stashed("t", b"b", &stash, &b)
    })
    .expect("commit");
    drop(stash);
    // The stash's record goes with it; the commit's own (if any) is cleaned
    // up in the background, and a closing volume waits for that.
    drop(db);
    assert!(intents().is_empty(), "no intent left");
    let coord = Arc::new(RedisCoordinator::connect(&redis.url()).expect("redis"));
    let db = Db::open_shared(location, Options::default(), coord).expect("reopen");
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    assert_eq!(tx.get("t", b"a").expect("get"), Some(chunk(1)));
    assert_eq!(tx.get("t", b"b").expect("get"), Some(chunk(2)));
}

#[test]
fn in_cluster_mode_a_short_lived_stash_writes_no_intent_and_an_old_one_does() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let location = StoreLocation::Local(dir.path().to_path_buf());
    let open = |list_after| {
        let coord = Arc::new(RedisCoordinator::connect(&redis.url()).expect("redis"));
        let opts = Options {
            background_interval: None,
            stash_list_after: list_after,
            ..Options::default()
        };
        Db::open_shared(location.clone(), opts, coord).expect("open")
    };
    let store = engine::BlobStore::open(&location).expect("store");
    let intents = || store.list("intents").expect("list").len();

    // The default: a file written and committed at once lists nothing.
    let db = open(Options::default().stash_list_after);
    db.run(|tx| tx.ensure_tree("t", small_tree(8)))
        .expect("tree");
    let stash = db.stash();
    let v = stash
        .put_run([chunk(1), chunk(2)].concat(), &[100_000; 2])
        .expect("put");
    stash.wait(&v[0]).expect("written");
    assert_eq!(intents(), 0, "young blobs need no intent record");
    db.run(|tx| {
        tx.put_stashed("t", b"a", &stash, &v[0])?;
        tx.put_stashed("t", b"b", &stash, &v[1])
    })
    .expect("commit");
    drop(stash);
    drop(db);
    assert_eq!(intents(), 0, "no intent record was written");

    // Past the delay, the next put or wait lists what waits.
    let db = open(Duration::from_millis(200));
    let stash = db.stash();
    let v = stash.put(chunk(3)).expect("put");
    stash.wait(&v).expect("written");
    assert_eq!(intents(), 0, "not yet");
    std::thread::sleep(Duration::from_millis(250));
    stash.wait(&v).expect("written");
    assert_eq!(intents(), 1, "listed once older than the delay");
    drop(stash);
    drop(db);
    assert_eq!(intents(), 0, "the stash's record goes with it");
    let mut tx = open(Duration::ZERO).begin(TxMode::ReadOnly).expect("begin");
    assert_eq!(tx.get("t", b"b").expect("get"), Some(chunk(2)));
}
