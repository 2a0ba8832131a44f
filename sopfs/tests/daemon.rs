//! The daemon's life: --background readiness, SIGTERM commits and unmounts
//! with exit 0, and one-line errors for bad input.

mod common;
use common::*;
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

fn wait_unmounted(dir: &std::path::Path) {
    let start = Instant::now();
    while is_mounted(dir) {
        assert!(start.elapsed() < Duration::from_secs(20), "still mounted");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn background_mount_answers_when_it_returns_and_umount_cleans_up() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = t.path().join("store");
    let dir = t.path().join("m");
    std::fs::create_dir(&dir).expect("mp");
    let big: Vec<u8> = (0..8u32 << 20).map(|i| (i * 7 + (i >> 11)) as u8).collect();
    for round in 0..6 {
        // No waiting either way: `umount` returns once the daemon is gone
        // (all its threads: a leader thread already a zombie while others
        // still exited held the store's lock), so this mount never finds
        // the volume in use.
        run_ok(
            Command::new(sopfs_bin())
                .arg("mount")
                .arg(&store)
                .arg(&dir)
                .arg("--background"),
        );
        // The mount answers the moment the command returns.
        assert!(is_mounted(&dir));
        let f = dir.join("file");
        if round == 0 {
            std::fs::write(&f, "kept").expect("write");
        } else {
            assert_eq!(std::fs::read_to_string(&f).expect("read"), "kept");
            assert_eq!(std::fs::read(dir.join("big")).expect("big"), big);
        }
        // Work for the daemon's threads to finish at exit: what `sopfs
        // bench` leaves (files written, read and deleted), then more.
        run_ok(Command::new(sopfs_bin()).arg("bench").arg(&dir).args([
            "--big-mib",
            "16",
            "--small-files",
            "300",
            "--json",
        ]));
        {
            let mut b = std::fs::File::create(dir.join("big")).expect("big");
            b.write_all(&big).expect("write");
            b.sync_all().expect("fsync");
        }
        for i in 0..100 {
            std::fs::write(dir.join(format!("s{i}")), format!("{round} {i}")).expect("small");
        }
        run_ok(Command::new(sopfs_bin()).arg("umount").arg(&dir));
        assert!(!is_mounted(&dir));
    }
}

#[test]
fn a_background_mount_logging_to_a_file_lets_go_of_its_callers_output() {
    // A caller that reads the command's output to its end (`$(sopfs mount
    // ... --background)`, a pipe) gets it when the command returns, not
    // at the unmount: the daemon keeps none of the caller's descriptors.
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("m");
    std::fs::create_dir(&dir).expect("mp");
    let log = t.path().join("daemon.log");
    let mut cmd = Command::new(sopfs_bin());
    cmd.arg("mount")
        .arg(t.path().join("store"))
        .arg(&dir)
        .arg("--background")
        .env("SOPFS_LOG_FILE", &log)
        .env("SOPFS_LOG", "debug");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(cmd.output()));
    let out = rx.recv_timeout(Duration::from_secs(30));
    let mounted = is_mounted(&dir);
    // Unmounted whatever happened, so a failure leaves no mount behind.
    let _ = Command::new(sopfs_bin()).arg("umount").arg(&dir).output();
    let out = out
        .expect("the caller's output was held open by the daemon")
        .expect("mount");
    assert!(out.status.success(), "{out:?}");
    assert!(mounted);
    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(!logged.is_empty(), "the daemon logged nothing to its file");
}

#[test]
fn sigterm_commits_open_files_unmounts_and_exits_zero() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = t.path().join("store");
    let store = store.to_str().expect("utf8");
    let dir = t.path().join("m");
    std::fs::create_dir(&dir).expect("mp");
    let mut m = Mount::start_at(store, &dir, None, &[]);
    let mut open = std::fs::File::create(m.path("open-at-exit")).expect("create");
    open.write_all(b"buffered, never closed").expect("write");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(m.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = m.unmount().expect("daemon");
    assert!(status.success(), "exit status {status}");
    drop(open);
    wait_unmounted(&dir);
    let m = Mount::start_at(store, &dir, None, &[]);
    assert_eq!(
        std::fs::read_to_string(m.path("open-at-exit")).expect("read"),
        "buffered, never closed"
    );
}

/// The `THP_enabled` line of a process's status (kernels since 6.x have it).
fn thp_enabled(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(|v| v.trim().to_string())
}

#[test]
fn the_daemon_faults_in_small_pages() {
    // Huge pages cost a mount a 2 MiB zeroing at every fault of memory
    // its allocator gave back (`sopfs::pages`).
    let t = tempfile::tempdir().expect("tempdir");
    let store = t.path().join("store");
    let dir = t.path().join("m");
    std::fs::create_dir(&dir).expect("mp");
    let m = Mount::start_at(store.to_str().expect("utf8"), &dir, None, &[]);
    let Some(daemon) = thp_enabled(m.pid()) else {
        eprintln!("this kernel does not report THP_enabled; nothing to check");
        return;
    };
    assert_eq!(daemon, "0", "the daemon may fault in huge pages");
    assert_eq!(
        thp_enabled(std::process::id()).as_deref(),
        Some("1"),
        "the switch is the daemon's own, not the machine's"
    );
}

fn one_line_error(args: &[&str]) -> String {
    let out = Command::new(sopfs_bin()).args(args).output().expect("run");
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.starts_with("sopfs: "), "{err}");
    err
}

#[test]
fn bad_input_is_one_clear_line() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = t.path().join("store");
    let store = store.to_str().expect("utf8");
    let missing = t.path().join("nowhere");
    let err = one_line_error(&["mount", store, missing.to_str().expect("utf8")]);
    assert!(err.contains("nowhere"), "{err}");
    // A folder with other things in it is not formatted over.
    let junk = t.path().join("junk");
    std::fs::create_dir(&junk).expect("junk");
    std::fs::write(junk.join("precious.txt"), "mine").expect("write");
    let mp = t.path().join("m");
    std::fs::create_dir(&mp).expect("mp");
    let err = one_line_error(&[
        "mount",
        junk.to_str().expect("utf8"),
        mp.to_str().expect("utf8"),
    ]);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(
        std::fs::read_to_string(junk.join("precious.txt")).expect("kept"),
        "mine"
    );
    let err = one_line_error(&["mount", store, mp.to_str().expect("utf8"), "-o", "bogus"]);
    assert!(err.contains("bogus"), "{err}");
    let err = one_line_error(&[
        "mount",
        store,
        mp.to_str().expect("utf8"),
        "-o",
        "cache_dir=/no/such/cache",
    ]);
    assert!(err.contains("cache_dir /no/such/cache"), "{err}");
    let err = one_line_error(&[
        "mount",
        store,
        mp.to_str().expect("utf8"),
        "--redis",
        "redis://127.0.0.1:1/",
    ]);
    assert!(err.to_lowercase().contains("coordinator"), "{err}");
    assert!(!is_mounted(&mp));
}

/// `mount -t sopfs` through the helper (installed as /sbin/mount.sopfs for
/// the test), fstab-style options included; `fusermount3 -u` ends the daemon.
#[test]
fn mount_t_sopfs_through_the_helper() {
    let bin_dir = sopfs_bin().parent().expect("bin dir").to_path_buf();
    let helper = bin_dir.join("mount-sopfs");
    if !helper.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "mount-tools", "--bin", "mount-sopfs"]);
        // Into the folder it is looked for in (`cargo test --release` too).
        if bin_dir.ends_with("release") {
            build.arg("--release");
        }
        let ok = build.status().is_ok_and(|s| s.success());
        assert!(ok, "could not build mount-sopfs");
    }
    let link = std::path::Path::new("/sbin/mount.sopfs");
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "needs root to install /sbin/mount.sopfs"
        );
        return;
    }
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(&helper, link).expect("install helper");
    struct Remove<'a>(&'a std::path::Path);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _remove = Remove(link);
    let t = tempfile::tempdir().expect("tempdir");
    let store = t.path().join("store");
    let dir = t.path().join("m");
    std::fs::create_dir(&dir).expect("mp");
    run_ok(
        Command::new("mount")
            .args(["-t", "sopfs"])
            .arg(&store)
            .arg(&dir)
            .args(["-o", "rw,_netdev,nofail,noatime,x-systemd.automount"]),
    );
    assert!(is_mounted(&dir));
    std::fs::write(dir.join("f"), "via helper").expect("write");
    let ok = Command::new("fusermount3")
        .arg("-u")
        .arg(&dir)
        .status()
        .expect("fusermount3");
    assert!(ok.success());
    wait_unmounted(&dir);
    // The daemon exits on its own, releasing the volume for the next mount.
    let start = Instant::now();
    loop {
        let out = Command::new(sopfs_bin())
            .args(["fsck"])
            .arg(&store)
            .output()
            .expect("fsck");
        if out.status.success() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "daemon never let go: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Clean: the heartbeat is withdrawn, no stale announcement is left.
    let status = sopfs_out(&["status", store.to_str().expect("utf8")]);
    assert!(status.contains("daemons    0 live"), "{status}");
    assert!(!status.contains("stale"), "{status}");

    // An fstab line (in a file of its own, `mount -T`): `mount DIR` finds it.
    let fstab = t.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# sopfs volume\n{}  {}  sopfs  _netdev,nofail,noatime  0 0\n",
            store.display(),
            dir.display()
        ),
    )
    .expect("fstab");
    run_ok(Command::new("mount").arg("-T").arg(&fstab).arg(&dir));
    assert!(is_mounted(&dir));
    assert_eq!(
        std::fs::read_to_string(dir.join("f")).expect("read"),
        "via helper"
    );
    run_ok(Command::new(sopfs_bin()).arg("umount").arg(&dir));
    assert!(!is_mounted(&dir));
}

fn sopfs_out(args: &[&str]) -> String {
    let out = Command::new(sopfs_bin()).args(args).output().expect("run");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn blob_files(store: &std::path::Path) -> usize {
    std::fs::read_dir(store.join("blobs"))
        .expect("blobs")
        .flatten()
        .map(|d| std::fs::read_dir(d.path()).map_or(0, |r| r.count()))
        .sum()
}

/// `sopfs gc`: a dry run counts and deletes nothing; a real run deletes the
/// garbage of removed files and rewritten directories, and the volume still
/// mounts with every live file intact and passes fsck.
#[test]
fn gc_deletes_only_what_nothing_reaches() {
    let t = tempfile::tempdir().expect("tempdir");
    let store_dir = t.path().join("store");
    let store = store_dir.to_str().expect("utf8");
    let dir = t.path().join("m");
    std::fs::create_dir(&dir).expect("mp");
    let mut m = Mount::start_at(store, &dir, None, &[]);
    // Past the 1 MiB of values a commit record carries: chunks are blobs.
    const SIZE: usize = 1_300_000;
    for i in 0..20 {
        std::fs::write(m.path(&format!("gone{i}")), vec![b'g'; SIZE]).expect("write");
    }
    std::fs::write(m.path("kept"), vec![b'k'; SIZE]).expect("write");
    for i in 0..20 {
        std::fs::remove_file(m.path(&format!("gone{i}"))).expect("rm");
    }
    m.unmount().expect("daemon");
    wait_unmounted(&dir);
    let before = blob_files(&store_dir);
    let dry = sopfs_out(&["gc", store, "--dry-run", "--retention", "0"]);
    assert!(dry.starts_with("would delete "), "{dry}");
    let would: usize = dry
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .expect("count");
    assert!(
        would >= 20,
        "the 20 removed files' content is garbage: {dry}"
    );
    assert_eq!(blob_files(&store_dir), before, "a dry run deletes nothing");
    let done = sopfs_out(&["gc", store, "--retention", "0"]);
    assert!(done.starts_with(&format!("deleted {would} ")), "{done}");
    assert_eq!(blob_files(&store_dir), before - would);
    assert!(sopfs_out(&["fsck", store]).starts_with("ok:"));
    let m = Mount::start_at(store, &dir, None, &[]);
    assert_eq!(
        std::fs::read(m.path("kept")).expect("kept"),
        vec![b'k'; SIZE]
    );
    drop(m);
    // Not a volume: one line, nothing touched.
    let junk = t.path().join("junk");
    std::fs::create_dir(&junk).expect("junk");
    std::fs::write(junk.join("precious"), "mine").expect("write");
    let err = one_line_error(&["gc", junk.to_str().expect("utf8")]);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(
        std::fs::read_to_string(junk.join("precious")).expect("kept"),
        "mine"
    );
}
