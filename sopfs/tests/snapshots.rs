//! Snapshots on real mounts: `/.snapshots/NAME` is the whole volume as it
//! was at one commit, read-only, through later writes, GC passes and a
//! remount; deleting it gives its space back to GC; bad requests are
//! refused in one line with nothing changed; a snapshot taken on one host
//! while writers run on two is one consistent cut on both.

mod common;

use common::trees::{build, pattern, seen, store_bytes};
use common::{assert_fsck_clean, gc_now, sopfs_bin, two_hosts, Mount, RedisServer};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sopfs(args: &[&str]) -> Output {
    Command::new(sopfs_bin())
        .args(args)
        .output()
        .expect("run sopfs")
}

fn snapshot(mount: &Path, op: &str, name: Option<&str>) -> Output {
    let mut c = Command::new(sopfs_bin());
    c.arg("snapshot").arg(op).arg(mount);
    if let Some(n) = name {
        c.arg(n);
    }
    c.output().expect("run sopfs snapshot")
}

fn snapshot_ok(mount: &Path, op: &str, name: Option<&str>) -> String {
    let out = snapshot(mount, op, name);
    assert!(
        out.status.success(),
        "snapshot {op}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one line a refused `sopfs snapshot` prints.
fn snapshot_refused(mount: &Path, op: &str, name: Option<&str>) -> String {
    let out = snapshot(mount, op, name);
    assert!(!out.status.success(), "snapshot {op} {name:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("sopfs: "), "{err}");
    err
}

fn names(mount: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(mount.join(".snapshots"))
        .expect("ls .snapshots")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    v.sort();
    v
}

fn erofs(r: std::io::Result<impl Sized>, what: &str) {
    match r {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}"),
        Ok(_) => panic!("{what} succeeded in a snapshot"),
    }
}

#[test]
fn a_snapshot_is_the_volume_as_taken_until_deleted_then_gc_frees_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("v");
    let store_s = store.to_str().expect("utf-8").to_string();
    let mut m = Mount::start(&store_s, tmp.path(), "m", None);
    let src = build(&m.dir);
    // Written and still open when the snapshot is taken: its bytes are in.
    let mut open = std::fs::File::create(m.path("open")).expect("create");
    std::io::Write::write_all(&mut open, b"buffered, not closed").expect("write");
    let before = seen(&m.dir.join("src"));
    let out = snapshot_ok(&m.dir, "create", Some("s1"));
    assert!(out.contains("taken at commit"), "{out}");
    drop(open);

    // The live volume moves on: overwrites, deletes, renames, new files.
    std::fs::write(src.join("a/big"), pattern(7, 2 << 20)).expect("overwrite big");
    std::fs::remove_file(src.join("f5")).expect("rm");
    std::fs::rename(src.join("a/e"), src.join("moved")).expect("mv");
    std::fs::write(src.join("new"), b"new").expect("new");
    let snap = m.path(".snapshots/s1");
    let check = |snap: &Path| {
        let got = seen(&snap.join("src"));
        assert_eq!(got.len(), before.len());
        for (p, s) in &before {
            assert_eq!(got.get(p), Some(s), "{}", p.display());
        }
        assert_eq!(
            std::fs::read(snap.join("open")).expect("open file"),
            b"buffered, not closed"
        );
    };
    check(&snap);
    assert!(!src.join("f5").exists() && src.join("moved").exists());

    // Read-only, whatever the mode bits say.
    erofs(std::fs::write(snap.join("src/f0"), b"x"), "write");
    erofs(std::fs::write(snap.join("src/zz"), b"x"), "create");
    erofs(std::fs::remove_file(snap.join("src/f0")), "unlink");
    erofs(std::fs::create_dir(snap.join("src/d")), "mkdir");
    erofs(
        std::fs::rename(snap.join("src/f0"), snap.join("src/f0b")),
        "rename",
    );
    erofs(
        std::fs::set_permissions(
            snap.join("src/f0"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        ),
        "chmod",
    );

    // Bad requests: one line each, nothing changed.
    let taken = snapshot_refused(&m.dir, "create", Some("s1"));
    assert!(taken.contains("exists"), "{taken}");
    for bad in ["a/b", "..", &"n".repeat(121)] {
        snapshot_refused(&m.dir, "create", Some(bad));
    }
    let missing = snapshot_refused(&m.dir, "delete", Some("nope"));
    assert!(missing.contains("No such file"), "{missing}");
    let outside = snapshot_refused(tmp.path(), "list", None);
    assert!(outside.contains("not in a sopfs mount"), "{outside}");
    assert_eq!(names(&m.dir), ["s1"]);
    let listed = snapshot_ok(&m.dir, "list", None);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    let status = String::from_utf8_lossy(&sopfs(&["status", &store_s]).stdout).into_owned();
    assert!(
        status.contains("snapshots  1") && status.contains("  s1 (commit "),
        "{status}"
    );

    // mkdir and rmdir in /.snapshots take and delete one too.
    std::fs::create_dir(m.path(".snapshots/s2")).expect("mkdir a snapshot");
    assert_eq!(
        std::fs::read(m.path(".snapshots/s2/src/new")).expect("new"),
        b"new"
    );
    std::fs::remove_dir(m.path(".snapshots/s2")).expect("rmdir a snapshot");
    assert_eq!(names(&m.dir), ["s1"]);

    // GC with no retention trims the log past the snapshot: after a
    // remount it is read from the checkpoint GC wrote at its commit.
    m.unmount();
    gc_now(&store_s);
    assert_fsck_clean(&store_s, None);
    let mut m = Mount::start(&store_s, tmp.path(), "m2", None);
    check(&m.path(".snapshots/s1"));

    // Deleted: the 3 MiB it alone kept (the old big file) comes back.
    snapshot_ok(&m.dir, "delete", Some("s1"));
    assert!(names(&m.dir).is_empty());
    m.unmount();
    let held = store_bytes(&store);
    assert!(
        gc_now(&store_s).1 > 0,
        "GC freed blobs of the deleted snapshot"
    );
    let freed = held - store_bytes(&store);
    assert!(
        freed >= 3 << 20,
        "{freed} bytes freed of the old 3 MiB file"
    );
    assert_fsck_clean(&store_s, None);
}

/// Files of writer `w` in the cut at `root`: every file is whole but the
/// last, which may be the one in flight at the cut (created, not yet
/// closed: empty, as its create's commit left it); nothing after it.
fn written_by(root: &Path, w: usize) -> usize {
    let dir = root.join(format!("w{w}"));
    let count = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    for n in 0..count {
        let data = std::fs::read(dir.join(format!("f{n}")))
            .unwrap_or_else(|e| panic!("w{w}/f{n} of {count}: {e}"));
        let whole = data == pattern((w * 10_000 + n) as u64, 1000 + n * 37);
        let in_flight = n + 1 == count && data.is_empty();
        assert!(
            whole || in_flight,
            "w{w}/f{n} of {count}: {} bytes",
            data.len()
        );
    }
    count
}

#[test]
fn a_snapshot_taken_while_two_hosts_write_is_one_cut_on_both() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, a, b) = two_hosts(tmp.path(), &redis);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Two writers per host, each writing whole files one after another.
    let writers: Vec<_> = (0..4usize)
        .map(|w| {
            let root: PathBuf = if w % 2 == 0 {
                a.dir.clone()
            } else {
                b.dir.clone()
            };
            let stop = stop.clone();
            std::thread::spawn(move || {
                let dir = root.join(format!("w{w}"));
                std::fs::create_dir(&dir).expect("mkdir");
                let (mut n, mut slowest) = (0, std::time::Duration::ZERO);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 20 {
                    let data = pattern((w * 10_000 + n) as u64, 1000 + n * 37);
                    let t = std::time::Instant::now();
                    std::fs::write(dir.join(format!("f{n}")), data).expect("write");
                    slowest = slowest.max(t.elapsed());
                    n += 1;
                }
                (n, slowest)
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let t = std::time::Instant::now();
    snapshot_ok(&a.dir, "create", Some("cut"));
    let took = t.elapsed();
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (made, slowest): (Vec<usize>, Vec<_>) = writers
        .into_iter()
        .map(|h| h.join().expect("writer"))
        .unzip();
    // A figure, not a timed assertion: what the writers waited at worst.
    eprintln!("snapshot took {took:?}; slowest file of each writer: {slowest:?}");
    let on_a: Vec<usize> = (0..4)
        .map(|w| written_by(&a.path(".snapshots/cut"), w))
        .collect();
    let on_b: Vec<usize> = (0..4)
        .map(|w| written_by(&b.path(".snapshots/cut"), w))
        .collect();
    assert_eq!(on_a, on_b, "one cut on both hosts");
    for w in 0..4 {
        assert!(on_a[w] < made[w], "writer {w} went on after the cut");
    }
    assert!(on_a.iter().sum::<usize>() > 0, "the cut caught files");
    drop((a, b));
}
