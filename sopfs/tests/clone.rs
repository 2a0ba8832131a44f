//! `sopfs clone` on real mounts: a whole tree copied in one transaction
//! with its content shared, independent of its source afterwards, whole
//! after the source is deleted and GC has run, seen whole by another host,
//! and refused with one line (nothing made) for bad input or a caller
//! without permission.

mod common;

use common::{assert_fsck_clean, files_under, sopfs_bin, Mount, RedisServer};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sopfs(args: &[&str]) -> Output {
    Command::new(sopfs_bin())
        .args(args)
        .output()
        .expect("run sopfs")
}

fn clone_ok(src: &Path, dst: &Path) -> String {
    let out = Command::new(sopfs_bin())
        .arg("clone")
        .arg(src)
        .arg(dst)
        .output()
        .expect("run sopfs clone");
    assert!(
        out.status.success(),
        "clone: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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

#[allow(unsafe_code)]
fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let (p, n) = (
        CString::new(p.as_os_str().as_bytes()).expect("path"),
        CString::new(name).expect("name"),
    );
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr: {}", std::io::Error::last_os_error());
}

#[allow(unsafe_code)]
fn xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c = CString::new(p.as_os_str().as_bytes()).expect("path");
    let mut names = vec![0u8; 4096];
    // SAFETY: the buffer is as long as we say.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "listxattr: {}", std::io::Error::last_os_error());
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name).expect("name");
        let mut v = vec![0u8; 4096];
        // SAFETY: as above.
        let len =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(len >= 0, "getxattr: {}", std::io::Error::last_os_error());
        v.truncate(len as usize);
        out.push((name.to_vec(), v));
    }
    out
}

/// Everything a user sees of a tree, by path relative to `root`: kind and
/// mode, owner, size, mtime, content (or link target), xattrs, and which
/// paths are one inode (hard links, as a group number).
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    mode: u32,
    owner: (u32, u32),
    mtime: i64,
    nlink: u64,
    data: Vec<u8>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    group: usize,
}

fn seen(root: &Path) -> BTreeMap<PathBuf, Seen> {
    let mut out = BTreeMap::new();
    let mut groups: BTreeMap<u64, usize> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).expect("stat");
        let ft = m.file_type();
        let data = if ft.is_file() {
            std::fs::read(&p).expect("read")
        } else if ft.is_symlink() {
            std::fs::read_link(&p)
                .expect("readlink")
                .as_os_str()
                .as_bytes()
                .to_vec()
        } else {
            Vec::new()
        };
        if ft.is_dir() {
            for e in std::fs::read_dir(&p).expect("readdir") {
                stack.push(e.expect("entry").path());
            }
        }
        let next = groups.len();
        let group = *groups.entry(m.ino()).or_insert(next);
        out.insert(
            p.strip_prefix(root).expect("under root").to_path_buf(),
            Seen {
                mode: m.mode(),
                owner: (m.uid(), m.gid()),
                mtime: m.mtime(),
                nlink: m.nlink(),
                xattrs: if ft.is_symlink() {
                    Vec::new()
                } else {
                    xattrs(&p)
                },
                data,
                group,
            },
        );
    }
    out
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A tree with a bit of everything: nested directories, small files, a
/// big file of many chunks, hard links inside it and one from outside,
/// a symlink, a fifo, xattrs, odd modes, an old mtime.
#[allow(unsafe_code)]
fn build(m: &Path) -> PathBuf {
    let src = m.join("src");
    for d in ["a/b/c", "a/e", "empty"] {
        std::fs::create_dir_all(src.join(d)).expect("mkdir");
    }
    for i in 0..40u64 {
        let dir = ["", "a", "a/b", "a/b/c", "a/e"][i as usize % 5];
        std::fs::write(
            src.join(dir).join(format!("f{i}")),
            pattern(i, 100 + 997 * i as usize),
        )
        .expect("write");
    }
    std::fs::write(src.join("a/big"), pattern(99, 3 << 20)).expect("big");
    std::fs::hard_link(src.join("f0"), src.join("a/b/f0-link")).expect("link");
    std::fs::hard_link(src.join("f10"), m.join("outside-link")).expect("link out");
    std::os::unix::fs::symlink("b/f2", src.join("a/sym")).expect("symlink");
    let fifo = CString::new(src.join("a/fifo").as_os_str().as_bytes()).expect("path");
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    set_xattr(&src.join("a/b/c/f3"), "user.tag", b"three");
    set_xattr(&src.join("a"), "user.dir", b"yes");
    std::fs::set_permissions(src.join("a/e/f4"), std::fs::Permissions::from_mode(0o4755))
        .expect("chmod");
    let old = CString::new(src.join("f5").as_os_str().as_bytes()).expect("path");
    let times = [
        libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 0,
        },
    ];
    // SAFETY: a valid path and two timespecs.
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, old.as_ptr(), times.as_ptr(), 0) },
        0
    );
    src
}

fn store_bytes(dir: &Path) -> u64 {
    files_under(dir).iter().map(|(_, n)| n).sum()
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
    let out = sopfs(&["gc", &store_s, "--retention", "0"]);
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "gc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deleted: u64 = report
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
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
    // The binary may sit in a checkout other users cannot enter.
    let bin = tmp.path().join("sopfs");
    std::fs::copy(sopfs_bin(), &bin).expect("copy the binary");
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
    let store = tmp.path().join("v");
    let store_s = store.to_str().expect("utf-8").to_string();
    let a = Mount::start(&store_s, tmp.path(), "a", Some(&redis.url()));
    let b = Mount::start(&store_s, tmp.path(), "b", Some(&redis.url()));
    let src = build(&a.dir);
    std::fs::create_dir(src.join("incoming")).expect("mkdir");
    let built = seen(&src).len();
    // Host b keeps adding whole files to the source while host a clones it.
    let incoming = b.path("src/incoming");
    let writer = std::thread::spawn(move || {
        for i in 0..150u64 {
            std::fs::write(
                incoming.join(format!("n{i}")),
                pattern(1000 + i, 5000 + i as usize),
            )
            .expect("write on b");
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    clone_ok(&src, &a.path("dst"));
    writer.join().expect("writer");
    // On host b: the copy holds the whole tree, and every incoming file it
    // caught is whole (a clone is one transaction: no file half there).
    let copy = seen(&b.path("dst"));
    let caught: Vec<_> = copy
        .keys()
        .filter(|p| p.starts_with("incoming") && p != &Path::new("incoming"))
        .cloned()
        .collect();
    for p in &caught {
        let i: u64 = p.file_name().expect("name").to_str().expect("utf-8")[1..]
            .parse()
            .expect("number");
        assert_eq!(
            copy[p].data,
            pattern(1000 + i, 5000 + i as usize),
            "{}",
            p.display()
        );
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
