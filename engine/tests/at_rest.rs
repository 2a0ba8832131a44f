//! Compression and encryption at rest: what a volume formatted with them
//! stores, how it opens again, and what a wrong key, a missing one or a
//! planted object gets.

mod common;

use common::small_tree;
use engine::{AtRest, Db, Error, Options, Secret, StoreLocation, TxMode};
use std::path::Path;
use test_support::{files_under, holds};

const MARK: &[u8] = b"PLAINTEXT-MARK";

fn key(s: &str) -> Secret {
    Secret::new(s.as_bytes().to_vec()).expect("key")
}

fn opts(compression: Option<i32>, key: Option<Secret>) -> Options {
    Options {
        background_interval: None,
        checkpoint_every: 16,
        at_rest: AtRest { compression, key },
        ..Options::default()
    }
}

/// A value that compresses well and carries `MARK` many times.
fn text(i: usize, len: usize) -> Vec<u8> {
    let line = format!(
        "{} line {i} of a compressible file\n",
        String::from_utf8_lossy(MARK)
    );
    line.as_bytes().iter().copied().cycle().take(len).collect()
}

/// Writes small and large values over many commits (checkpoints, packed
/// and out-of-line values, a chunked one), in tree "t".
fn fill(db: &Db) {
    for i in 0..40 {
        db.run(|tx| {
            tx.ensure_tree("t", small_tree(8))?;
            tx.upsert(
                "t",
                format!("{}-{i:03}", String::from_utf8_lossy(MARK)).as_bytes(),
                &text(i, 200),
            )?;
            if i % 10 == 0 {
                tx.upsert("t", format!("big{i}").as_bytes(), &text(i, 600_000))?;
            }
            Ok(())
        })
        .expect("commit");
    }
}

fn check(db: &Db) {
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    for i in 0..40 {
        let k = format!("{}-{i:03}", String::from_utf8_lossy(MARK));
        assert_eq!(tx.get("t", k.as_bytes()).expect("get"), Some(text(i, 200)));
        if i % 10 == 0 {
            let big = text(i, 600_000);
            let k = format!("big{i}");
            // A range of a sealed chunk, then the whole value.
            let part = tx
                .get_range("t", k.as_bytes(), 300_001..300_101)
                .expect("range");
            assert_eq!(part.as_deref(), Some(&big[300_001..300_101]));
            assert_eq!(tx.get("t", k.as_bytes()).expect("get"), Some(big));
        }
    }
}

fn files(root: &Path) -> Vec<std::path::PathBuf> {
    files_under(root).into_iter().map(|(p, _)| p).collect()
}

fn stored_bytes(root: &Path) -> u64 {
    files_under(root).iter().map(|(_, n)| n).sum()
}

#[test]
fn an_encrypted_volume_stores_no_plaintext_and_opens_only_with_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let loc = || StoreLocation::Local(dir.path().to_path_buf());
    let k = key("correct horse battery staple");
    // No object holds the text, not even the log or a checkpoint.
    let no_plaintext = || {
        let all = files(dir.path());
        for p in &all {
            let data = std::fs::read(p).expect("read");
            assert!(!holds(&data, MARK), "{} holds plaintext", p.display());
            assert!(
                !holds(&data, b"big10"),
                "{} holds a key in clear",
                p.display()
            );
        }
        all
    };
    {
        let db = Db::open(loc(), opts(Some(3), Some(k.clone()))).expect("format");
        fill(&db);
        check(&db);
        let all = no_plaintext();
        assert!(all
            .iter()
            .any(|p| p.starts_with(dir.path().join("segments"))));
        assert!(all
            .iter()
            .any(|p| p.starts_with(dir.path().join("checkpoints"))));
        // GC writes the nodes and values records carried out as blobs.
        let r = db.gc(std::time::Duration::ZERO, false).expect("gc");
        assert!(r.log_records_deleted > 0, "{r:?}");
        check(&db);
        no_plaintext();
    }
    // Opens again with the key, from its checkpoint and log.
    {
        let db = Db::open(loc(), opts(None, Some(k.clone()))).expect("reopen");
        check(&db);
        assert!(db.at_rest_summary().contains("zstd level 3"));
        assert!(db.at_rest_summary().contains("encrypted"));
    }
    // A wrong key, or none, fails the open with one line and changes nothing.
    let before: Vec<_> = files(dir.path())
        .into_iter()
        .filter(|p| !p.starts_with(dir.path().join("staging")))
        .collect();
    let wrong = Db::open(loc(), opts(None, Some(key("Correct horse battery staple"))))
        .err()
        .expect("wrong key refused");
    assert!(
        matches!(&wrong, Error::Key(m) if m.contains("does not open")),
        "{wrong}"
    );
    let none = Db::open(loc(), opts(None, None))
        .err()
        .expect("no key refused");
    assert!(
        matches!(&none, Error::Key(m) if m.contains("encrypted")),
        "{none}"
    );
    let after: Vec<_> = files(dir.path())
        .into_iter()
        .filter(|p| !p.starts_with(dir.path().join("staging")))
        .collect();
    assert_eq!(before.len(), after.len(), "a refused open wrote nothing");
    let facts = engine::inspect::inspect(&loc(), Some(&k)).expect("inspect");
    assert_eq!(
        (facts.compression, facts.encrypted, facts.format),
        (Some(3), true, 7)
    );
    assert!(engine::inspect::inspect(&loc(), None).is_err());
}

#[test]
fn a_node_swapped_for_another_or_a_plain_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let loc = || StoreLocation::Local(dir.path().to_path_buf());
    let k = key("sixteen byte key");
    {
        let db = Db::open(loc(), opts(None, Some(k.clone()))).expect("format");
        fill(&db);
    }
    // Two value blobs trade places: each is whole and checks out as a
    // frame, but is bound to its own name.
    let mut blobs: Vec<_> = files(&dir.path().join("blobs"));
    blobs.sort();
    assert!(blobs.len() >= 2, "value blobs: {blobs:?}");
    let (a, b) = (
        std::fs::read(&blobs[0]).expect("a"),
        std::fs::read(&blobs[1]).expect("b"),
    );
    std::fs::write(&blobs[0], &b).expect("swap");
    std::fs::write(&blobs[1], &a).expect("swap");
    let db = Db::open(loc(), opts(None, Some(k))).expect("reopen");
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    let mut refused = 0;
    for i in (0..40).step_by(10) {
        match tx.get("t", format!("big{i}").as_bytes()) {
            Err(Error::Corrupted { .. }) => refused += 1,
            Ok(v) => assert_eq!(v, Some(text(i, 600_000)), "never another's bytes"),
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(refused >= 1, "the swapped blobs were read");
}

#[test]
fn compression_saves_space_and_a_plain_volume_refuses_a_key() {
    let plain = tempfile::tempdir().expect("tempdir");
    let packed = tempfile::tempdir().expect("tempdir");
    for (dir, level) in [(&plain, None), (&packed, Some(9))] {
        let db = Db::open(
            StoreLocation::Local(dir.path().to_path_buf()),
            opts(level, None),
        )
        .expect("format");
        fill(&db);
        check(&db);
    }
    let (p, z) = (stored_bytes(plain.path()), stored_bytes(packed.path()));
    assert!(z * 5 < p, "compressed {z} bytes against {p}");
    // The plain volume's objects hold the text; a key for it is refused.
    let e = Db::open(
        StoreLocation::Local(plain.path().to_path_buf()),
        opts(None, Some(key("a key for nothing"))),
    )
    .err()
    .expect("key refused");
    assert!(
        matches!(&e, Error::Key(m) if m.contains("not encrypted")),
        "{e}"
    );
    // Compression asked of an existing volume changes nothing.
    let db = Db::open(
        StoreLocation::Local(plain.path().to_path_buf()),
        opts(Some(3), None),
    )
    .expect("reopen");
    assert!(db.at_rest_summary().contains("not compressed"));
    check(&db);
}

#[test]
fn record_objects_are_sealed_too() {
    // The in-memory store keeps the log as objects, the shape S3 has.
    let mem = std::sync::Arc::new(object_store::memory::InMemory::new());
    let k = key("memory store key!");
    {
        let db = Db::open(
            StoreLocation::Memory(mem.clone()),
            opts(Some(1), Some(k.clone())),
        )
        .expect("format");
        fill(&db);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt");
    let listed: Vec<_> = rt.block_on(async {
        use futures::TryStreamExt;
        use object_store::ObjectStore;
        mem.list(None).try_collect::<Vec<_>>().await.expect("list")
    });
    assert!(listed
        .iter()
        .any(|m| m.location.as_ref().starts_with("log/")));
    for m in &listed {
        let data = rt.block_on(async {
            use object_store::ObjectStoreExt;
            mem.get(&m.location)
                .await
                .expect("get")
                .bytes()
                .await
                .expect("bytes")
        });
        assert!(!holds(&data, MARK), "{} holds plaintext", m.location);
    }
    let db = Db::open(
        StoreLocation::Memory(mem.clone()),
        opts(None, Some(k.clone())),
    )
    .expect("reopen");
    check(&db);
    drop(db);
    // Through the path a network store takes (records read in batches,
    // blobs written in parallel), on the same objects.
    let custom = StoreLocation::Custom(mem);
    let db = Db::open(custom.clone(), opts(None, Some(k.clone()))).expect("as a network store");
    check(&db);
    fill(&db);
    drop(db);
    let db = Db::open(custom, opts(None, Some(k))).expect("again");
    check(&db);
}
