//! `sopfs clone` on real mounts: a whole tree copied in one transaction
//! with its content shared, independent of its source afterwards, whole
//! after the source is deleted and GC has run, seen whole by another host,
//! and refused with one line (nothing made) for bad input or a caller
//! without permission.

mod common;

use common::trees::{build, pattern, seen, store_bytes};
use common::{
    assert_fsck_clean, gc_now, sopfs_bin, sopfs_bin_for_anyone, two_hosts, Mount, RedisServer,
};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

fn clone_ok(src: &Path, dst: &Path) -> String {
    common::sopfs_ok(&[
        std::ffi::OsStr::new("clone"),
        src.as_os_str(),
        dst.as_os_str(),
    ])
}

/// The one line `sopfs clone` fails with.
fn clone_refused(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run sopfs clone");
    assert!(!out.status.success(), "the clone succeeded");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("sopfs: "), "{err}");
    err
}

fn clone_cmd(src: &Path, dst: &Path) -> Command {
    let mut c = Command::new(sopfs_bin());
    c.arg("clone").arg(src).arg(dst);
    c
}

#[test]
fn a_clone_is_a_whole_independent_copy_that_outlives_its_source() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("v");
    let store_s = store.to_str().expect("utf-8").to_string();
    let mut m = Mount::start(&store_s, tmp.path(), "m", None);
    let src = build(&m.dir);
    let before = seen(&src);
    let bytes_before = store_bytes(&store);
    let out = clone_ok(&src, &m.path("dst"));
    assert!(out.starts_with("cloned "), "{out}");
    let dst = m.path("dst");
    let copy = seen(&dst);
    // Everything the same, but the link from outside: the copy's f10 has
    // one link (the outside name was not copied).
    let mut want = before;
    want.get_mut(Path::new("f10")).expect("f10").nlink = 1;
    for (p, s) in &want {
        assert_eq!(copy.get(p), Some(s), "{}", p.display());
    }
    assert_eq!(copy.len(), want.len());
    assert_ne!(
        std::fs::metadata(src.join("a/big")).expect("stat").ino(),
        std::fs::metadata(dst.join("a/big")).expect("stat").ino(),
        "the copy has inodes of its own"
    );
    // Content shared, not copied: the store grew by far less than the 3 MiB file.
    let grew = store_bytes(&store).saturating_sub(bytes_before);
    assert!(grew < 1 << 20, "the store grew by {grew} bytes");

    // Writes to either side never show in the other.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dst.join("f0"))
        .expect("open");
    std::io::Write::write_all(&mut f, b"more").expect("append");
    drop(f);
    std::fs::write(src.join("a/big"), b"short now").expect("overwrite source");
    assert_eq!(std::fs::read(src.join("f0")).expect("f0"), pattern(0, 100));
    assert_eq!(
        std::fs::read(dst.join("a/b/f0-link")).expect("link in the copy"),
        [pattern(0, 100), b"more".to_vec()].concat()
    );
    assert_eq!(
        std::fs::read(dst.join("a/big")).expect("big"),
        pattern(99, 3 << 20)
    );
    // The copy's first chunk rewritten: the source's stays with the source alone.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dst.join("a/big"))
        .expect("open");
    std::os::unix::fs::FileExt::write_all_at(&f, &[7u8; 1000], 10).expect("patch");
    drop(f);
    let mut expect_copy = seen(&dst);

    // The source goes, GC runs with no retention: the copy is whole.
    std::fs::remove_dir_all(&src).expect("rm -rf src");
    std::fs::remove_file(m.path("outside-link")).expect("rm");
    m.unmount();
    let (report, deleted) = gc_now(&store_s);
    assert!(
        deleted > 0,
        "gc collected the chunk only the source named: {report}"
    );
    assert_fsck_clean(&store_s, None);
    let m = Mount::start(&store_s, tmp.path(), "m2", None);
    let after = seen(&m.path("dst"));
    // atime-free comparison: everything kept, mtimes included.
    for (p, s) in after.iter() {
        let want = expect_copy.remove(p).expect("a path of the copy");
        assert_eq!(s, &want, "{}", p.display());
    }
    assert!(expect_copy.is_empty(), "missing: {:?}", expect_copy.keys());
}

#[test]
fn bad_clones_say_why_in_one_line_and_change_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("v");
    let m = Mount::start(store.to_str().expect("utf-8"), tmp.path(), "m", None);
    let other = Mount::start(
        tmp.path().join("w").to_str().expect("utf-8"),
        tmp.path(),
        "other",
        None,
    );
    let src = build(&m.dir);
    std::fs::create_dir(m.path("taken")).expect("mkdir");
    let before = seen(&m.dir);
    for (cmd, says) in [
        (clone_cmd(&src, &m.path("taken")), "File exists"),
        (
            clone_cmd(&src, &m.path("src/a/inside")),
            "cannot be cloned into itself",
        ),
        (clone_cmd(&m.path("nothing"), &m.path("x")), "No such file"),
        (clone_cmd(&src, &m.path("no/such/dir/x")), "No such file"),
        (
            clone_cmd(&src, &tmp.path().join("outside")),
            "not in a sopfs mount",
        ),
        (clone_cmd(&src, &other.path("x")), "different mounts"),
        (clone_cmd(&m.dir, &m.path("x")), "root of a mount"),
    ] {
        let mut cmd = cmd;
        let err = clone_refused(&mut cmd);
        assert!(err.contains(says), "{err} (wanted {says:?})");
    }
    assert_eq!(seen(&m.dir), before, "a refused clone changed the volume");
    assert!(
        seen(&other.dir).len() == 1,
        "nothing appeared in the other mount"
    );
}

#[test]
fn a_user_clones_what_it_may_read_and_owns_the_copy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let m = Mount::start(
        tmp.path().join("v").to_str().expect("utf-8"),
        tmp.path(),
        "m",
        None,
    );
    std::fs::set_permissions(&m.dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let src = build(&m.dir);
    std::fs::set_permissions(src.join("a/b"), std::fs::Permissions::from_mode(0o700))
        .expect("chmod");
    let (_bin_dir, bin) = sopfs_bin_for_anyone();
    let nobody = |dst: &str| {
        let mut c = Command::new(&bin);
        c.arg("clone").arg(&src).arg(m.path(dst));
        c.uid(65534).gid(65534);
        c
    };
    let err = clone_refused(&mut nobody("mine"));
    assert!(err.contains("Permission denied"), "{err}");
    assert!(!m.path("mine").exists(), "a refused clone left something");
    std::fs::set_permissions(src.join("a/b"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let out = nobody("mine").output().expect("clone");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copy = seen(&m.path("mine"));
    assert!(
        copy.values().all(|s| s.owner == (65534, 65534)),
        "the caller owns the copy"
    );
    assert_eq!(
        copy[Path::new("a/e/f4")].mode & 0o7777,
        0o755,
        "setuid is not carried to a copy a user made"
    );
    assert_eq!(
        std::fs::read(m.path("mine/a/big")).expect("big"),
        pattern(99, 3 << 20)
    );
}

#[test]
fn a_clone_made_on_one_host_is_whole_on_another_while_files_land() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, a, b) = two_hosts(tmp.path(), &redis);
    let store_s = store.to_str().expect("utf-8").to_string();
    let src = build(&a.dir);
    std::fs::create_dir(src.join("incoming")).expect("mkdir");
    let built = seen(&src).len();
    // Host b keeps adding files to the source while host a clones it, each
    // in one write. On a local folder shared through Redis a create
    // commits at once (`Fs::defers_creates`) and the data at close, so a
    // clone, like any snapshot, may catch a file empty; never part-written.
    let incoming = b.path("src/incoming");
    let writer = std::thread::spawn(move || {
        for i in 0..150u64 {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(incoming.join(format!("n{i}")))
                .expect("create on b");
            std::io::Write::write_all(&mut f, &pattern(1000 + i, 5000 + i as usize))
                .expect("write on b");
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    clone_ok(&src, &a.path("dst"));
    writer.join().expect("writer");
    // On host b: the copy holds the whole tree, and every incoming file it
    // caught is empty or whole (a clone is one transaction: no file half
    // there).
    let copy = seen(&b.path("dst"));
    let caught: Vec<_> = copy
        .keys()
        .filter(|p| p.starts_with("incoming") && p != &Path::new("incoming"))
        .cloned()
        .collect();
    let number = |p: &Path| -> u64 {
        p.file_name().expect("name").to_str().expect("utf-8")[1..]
            .parse()
            .expect("number")
    };
    for p in &caught {
        let i = number(p);
        let data = &copy[p].data;
        assert!(
            data.is_empty() || *data == pattern(1000 + i, 5000 + i as usize),
            "{}: {} bytes, neither empty nor whole",
            p.display(),
            data.len()
        );
    }
    // The writer makes one file at a time: only the one it was writing
    // when the clone began, the newest it caught, can be empty.
    let newest = caught.iter().map(|p| number(p)).max();
    for p in caught.iter().filter(|p| copy[*p].data.is_empty()) {
        assert_eq!(Some(number(p)), newest, "{} empty", p.display());
    }
    assert_eq!(copy[Path::new("a/big")].data, pattern(99, 3 << 20));
    assert_eq!(
        copy.len(),
        built + caught.len(),
        "the built tree and what it caught"
    );
    // A write on b to the copy shows on a; the source is untouched.
    std::fs::write(b.path("dst/a/b/f7"), b"from b").expect("write the copy on b");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read(a.path("dst/a/b/f7")).expect("read on a") != b"from b" {
        assert!(
            std::time::Instant::now() < deadline,
            "a never saw b's write"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        std::fs::read(a.path("src/a/b/f7")).expect("source"),
        pattern(7, 100 + 997 * 7)
    );
    drop((a, b));
    assert_fsck_clean(&store_s, Some(&redis.url()));
}
