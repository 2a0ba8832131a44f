//! The trash on real mounts: with `-o trash_days=N` a file whose last name
//! goes (rm, or a rename over it) waits in `/.trash/<hour>/<path>`, where
//! `mv` restores it; hard links and names already in the trash go for
//! good; the setting is the volume's, so a host mounted without the option
//! follows it; expired hours are emptied by `sopfs gc` (their space comes
//! back) and by a mount; the trash is off by default.

mod common;

use common::trees::{pattern, store_bytes};
use common::{assert_fsck_clean, gc_now, sopfs_bin, Mount, RedisServer};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The current hour's folder in the trash of `m` (the only one a test
/// made without naming it).
fn hour_dir(m: &Path) -> PathBuf {
    let mut hours: Vec<PathBuf> = std::fs::read_dir(m.join(".trash"))
        .expect("ls .trash")
        .map(|e| e.expect("entry").path())
        .filter(|p| !p.ends_with("2020-01-01-00"))
        .collect();
    hours.sort();
    hours.pop().expect("an hour folder")
}

fn trash_mount(store: &str, base: &Path, name: &str, redis: Option<&str>, days: &str) -> Mount {
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).expect("mount point");
    Mount::start_at(
        store,
        &dir,
        redis,
        &["allow_other", &format!("trash_days={days}")],
    )
}

#[test]
fn removed_and_overwritten_files_wait_in_the_trash_and_mv_restores_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("v");
    let store_s = store.to_str().expect("utf-8").to_string();
    let m = trash_mount(&store_s, tmp.path(), "m", None, "3");
    std::fs::create_dir_all(m.path("a/b")).expect("mkdir");
    std::fs::write(m.path("a/b/f"), pattern(1, 5000)).expect("write");
    std::fs::remove_file(m.path("a/b/f")).expect("rm");
    // The same path again within the hour: both kept.
    std::fs::write(m.path("a/b/f"), pattern(2, 300)).expect("write again");
    std::fs::remove_file(m.path("a/b/f")).expect("rm again");
    // Overwritten by a rename.
    std::fs::write(m.path("a/target"), pattern(3, 7000)).expect("write");
    std::fs::write(m.path("a/new"), b"new").expect("write");
    std::fs::rename(m.path("a/new"), m.path("a/target")).expect("mv over");
    // One of two hard links: the file is still there, nothing to keep.
    std::fs::write(m.path("a/linked"), b"l").expect("write");
    std::fs::hard_link(m.path("a/linked"), m.path("a/other")).expect("ln");
    std::fs::remove_file(m.path("a/other")).expect("rm a link");

    let hour = hour_dir(&m.dir);
    assert_eq!(
        std::fs::read(hour.join("a/b/f")).expect("first f"),
        pattern(1, 5000)
    );
    let second: Vec<_> = std::fs::read_dir(hour.join("a/b"))
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n != "f")
        .collect();
    assert_eq!(second.len(), 1, "{second:?}");
    assert_eq!(
        std::fs::read(hour.join("a/b").join(&second[0])).expect("second f"),
        pattern(2, 300)
    );
    assert_eq!(
        std::fs::read(hour.join("a/target")).expect("old target"),
        pattern(3, 7000)
    );
    assert_eq!(
        std::fs::read(m.path("a/target")).expect("new target"),
        b"new"
    );
    assert!(!hour.join("a/other").exists(), "a hard link is not trashed");

    // Restored with mv, whole.
    std::fs::rename(hour.join("a/b/f"), m.path("a/b/f")).expect("mv back");
    assert_eq!(
        std::fs::read(m.path("a/b/f")).expect("restored"),
        pattern(1, 5000)
    );
    // rm in the trash removes for good.
    std::fs::remove_file(hour.join("a/target")).expect("rm in the trash");
    assert!(!hour.join("a/target").exists());
    assert!(std::fs::read_dir(&hour).expect("ls").count() > 0);
    // rm -rf of a tree keeps every file of it.
    for i in 0..20u64 {
        std::fs::write(m.path(&format!("a/b/n{i}")), pattern(100 + i, 100)).expect("write");
    }
    std::fs::remove_dir_all(m.path("a")).expect("rm -rf");
    for i in 0..20u64 {
        assert_eq!(
            std::fs::read(hour.join(format!("a/b/n{i}"))).expect("kept"),
            pattern(100 + i, 100)
        );
    }
    drop(m);
    assert_fsck_clean(&store_s, None);
}

#[test]
fn expired_hours_are_emptied_by_gc_and_by_a_mount_and_their_space_comes_back() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("v");
    let store_s = store.to_str().expect("utf-8").to_string();
    let mut m = trash_mount(&store_s, tmp.path(), "m", None, "1");
    std::fs::write(m.path("recent"), b"recent").expect("write");
    std::fs::remove_file(m.path("recent")).expect("rm");
    // An hour long past: what a trash of six years ago would hold.
    let old = m.path(".trash/2020-01-01-00/d");
    std::fs::create_dir_all(&old).expect("mkdir");
    std::fs::write(old.join("big"), pattern(9, 3 << 20)).expect("write");
    std::fs::write(old.join("small"), b"s").expect("write");
    m.unmount();
    let before = store_bytes(&store);
    let (text, _) = gc_now(&store_s);
    assert!(text.contains("emptied 4 names from the trash"), "{text}");
    let freed = before.saturating_sub(store_bytes(&store));
    assert!(freed >= 3 << 20, "{freed} bytes freed");
    assert_fsck_clean(&store_s, None);

    let m = trash_mount(&store_s, tmp.path(), "m2", None, "1");
    assert!(!m.path(".trash/2020-01-01-00").exists());
    assert_eq!(
        std::fs::read(hour_dir(&m.dir).join("recent")).expect("a recent hour stays"),
        b"recent"
    );
    // A mount empties expired hours on its own, a few seconds after it starts.
    drop(m);
    let m = trash_mount(&store_s, tmp.path(), "m3", None, "1");
    std::fs::create_dir_all(m.path(".trash/2020-01-01-00")).expect("mkdir");
    std::fs::write(m.path(".trash/2020-01-01-00/x"), b"x").expect("write");
    drop(m);
    let m = Mount::start(&store_s, tmp.path(), "m4", None);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while m.path(".trash/2020-01-01-00").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the mount never emptied it"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn the_trash_is_off_by_default_and_every_host_follows_the_volume_setting() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("v");
    let store_s = store.to_str().expect("utf-8").to_string();
    {
        let m = Mount::start(&store_s, tmp.path(), "plain", Some(&redis.url()));
        std::fs::write(m.path("f"), b"x").expect("write");
        std::fs::remove_file(m.path("f")).expect("rm");
        assert!(!m.path(".trash").exists(), "off by default");
    }
    // Bad values fail the mount in one line.
    let bad = Command::new(sopfs_bin())
        .args(["mount", &store_s])
        .arg(tmp.path().join("plain"))
        .args(["-o", "trash_days=soon"])
        .output()
        .expect("mount");
    let err = String::from_utf8_lossy(&bad.stderr).trim().to_string();
    assert!(!bad.status.success() && err.lines().count() == 1, "{err}");
    assert!(err.contains("trash_days=soon"), "{err}");

    let a = trash_mount(&store_s, tmp.path(), "a", Some(&redis.url()), "2");
    let b = Mount::start(&store_s, tmp.path(), "b", Some(&redis.url()));
    std::fs::write(b.path("from-b"), b"b's").expect("write on b");
    std::fs::remove_file(b.path("from-b")).expect("rm on b");
    assert_eq!(
        std::fs::read(hour_dir(&a.dir).join("from-b")).expect("in the trash, seen on a"),
        b"b's"
    );
    // Turned off again by a mount: removals go for good on every host.
    drop(a);
    let a = trash_mount(&store_s, tmp.path(), "a2", Some(&redis.url()), "0");
    std::fs::write(b.path("gone"), b"g").expect("write on b");
    std::fs::remove_file(b.path("gone")).expect("rm on b");
    assert!(!hour_dir(&a.dir).join("gone").exists());
}
