//! The blob store's own tests.

use super::local::is_staging_file;
use super::*;

#[test]
fn staging_names_and_location_parsing() {
    assert!(is_staging_file("abc#1"));
    assert!(is_staging_file("0000000000000001#42"));
    assert!(!is_staging_file("abc#"));
    assert!(!is_staging_file("abc#x1"));
    assert!(!is_staging_file("abc"));
    assert!(matches!(
        StoreLocation::parse("/v"),
        Ok(StoreLocation::Local(_))
    ));
    assert!(matches!(
        StoreLocation::parse("file:///v"),
        Ok(StoreLocation::Local(_))
    ));
    // A relative path is taken from the working directory now, so it
    // still names the same folder from a daemon that left it.
    let cwd = std::env::current_dir().expect("cwd");
    match StoreLocation::parse("not-there-yet/v") {
        Ok(StoreLocation::Local(p)) => assert_eq!(p, cwd.join("not-there-yet/v")),
        other => panic!("{other:?}"),
    }
    assert!(StoreLocation::parse("file://v").is_err());
    assert!(StoreLocation::parse("ftp://x").is_err());
    assert!(StoreLocation::parse("").is_err());
}

#[test]
fn create_if_absent_has_one_winner_and_leaves_no_staging_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = BlobStore::open(&StoreLocation::Local(dir.path().to_path_buf())).expect("open");
    let path = Path::from("log/000000000000/0000000000000007");
    let racers: Vec<_> = (0..8u8)
        .map(|i| {
            let store = &store;
            let path = &path;
            move || store.create(path, vec![i; 100]).expect("create")
        })
        .collect();
    let won: Vec<bool> = std::thread::scope(|s| {
        let hs: Vec<_> = racers.into_iter().map(|r| s.spawn(r)).collect();
        hs.into_iter().map(|h| h.join().expect("join")).collect()
    });
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    let winner = won.iter().position(|w| *w).expect("a winner") as u8;
    let data = store.get(&path).expect("get").expect("present");
    assert_eq!(&data[..], &[winner; 100][..], "the winner's bytes, whole");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("log/000000000000"))
        .expect("dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "staging files left: {left:?}");
    assert!(!store.create(&path, vec![9]).expect("again"));
}

#[test]
fn creates_and_puts_through_spares_leave_nothing_behind_and_survive_a_sweep() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = BlobStore::open(&StoreLocation::Local(dir.path().to_path_buf())).expect("open");
    for i in 0..200u64 {
        let path = Path::from(format!("log/{:03x}/{i:016x}", i / 50));
        assert!(store.create(&path, vec![i as u8; 10]).expect("create"));
        assert!(
            !store.create(&path, vec![0; 3]).expect("again"),
            "one winner"
        );
        store
            .put(&Path::from(format!("intents/{i}")), vec![i as u8; 5])
            .expect("put");
        store
            .put(&Path::from(format!("intents/{i}")), vec![7; 6])
            .expect("overwrite");
        if i == 50 {
            // Sweeps leave young spares alone...
            std::thread::sleep(Duration::from_millis(20));
            let spares = std::fs::read_dir(dir.path().join("staging"))
                .expect("dir")
                .count();
            assert!(spares > 0, "the pool keeps spares ready");
            assert_eq!(store.sweep_staging("", Duration::ZERO), 0);
        }
        if i == 100 {
            // ... but if they went anyway, creates still work.
            for e in std::fs::read_dir(dir.path().join("staging"))
                .expect("dir")
                .flatten()
            {
                std::fs::remove_file(e.path()).expect("remove spare");
            }
        }
    }
    for i in 0..200u64 {
        let path = Path::from(format!("log/{:03x}/{i:016x}", i / 50));
        assert_eq!(
            &store.get(&path).expect("get").expect("there")[..],
            &[i as u8; 10][..]
        );
        let intent = store.get(&Path::from(format!("intents/{i}"))).expect("get");
        assert_eq!(intent.as_deref(), Some(&[7u8; 6][..]));
    }
    // Only ready spares (empty) are left in staging; nothing beside the objects.
    for e in std::fs::read_dir(dir.path().join("staging"))
        .expect("staging")
        .flatten()
    {
        assert_eq!(e.metadata().expect("meta").len(), 0, "{:?}", e.path());
    }
    for d in ["log/000", "log/003", "intents"] {
        for e in std::fs::read_dir(dir.path().join(d))
            .expect("dir")
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(!name.contains('#'), "left behind: {d}/{name}");
        }
    }
}
