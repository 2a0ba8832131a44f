//! What an operator uses around the daemon, on real mounts: `/.sopfs`
//! control files, the Prometheus endpoint, `sopfs status` and `sopfs stats`,
//! checksums caught on read and by fsck, fsck --repair, who may enter a mount,
//! and credentials never shown.

mod common;

use common::{free_port, is_mounted, sopfs_bin, Mount, RedisServer};
use sopfs::mount::metrics::{parse, Sample};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

fn sopfs(args: &[&str]) -> std::process::Output {
    Command::new(sopfs_bin())
        .args(args)
        .output()
        .expect("run sopfs")
}

fn stdout_ok(args: &[&str]) -> String {
    let out = sopfs(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn one_line_error(args: &[&str]) -> String {
    let out = sopfs(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.starts_with("sopfs: "), "{err}");
    err
}

fn value(samples: &[Sample], name: &str, op: Option<&str>) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && (op.is_none() || s.label("op") == op))
        .map(|s| s.value)
        .sum()
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

fn live_daemons(status: &str) -> usize {
    let line = status
        .lines()
        .find(|l| l.starts_with("daemons"))
        .unwrap_or_else(|| panic!("no daemons line in {status}"));
    line.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

const PASSWORD: &str = "pw-Sekr1t-4242";

#[test]
fn control_files_metrics_and_status_show_the_mount_and_never_the_password() {
    let redis = RedisServer::with_password(PASSWORD);
    let t = tempfile::tempdir().expect("tempdir");
    let store = t.path().join("store");
    let store = store.to_str().expect("utf8");
    let port = free_port();
    let dir_a = t.path().join("a");
    std::fs::create_dir(&dir_a).expect("mp");
    let metrics = format!("metrics=127.0.0.1:{port}");
    let mut a = Mount::start_at(store, &dir_a, Some(&redis.url()), &[&metrics]);
    for i in 0..100 {
        std::fs::write(a.path(&format!("f{i}")), format!("{i}\n")).expect("write");
    }

    let stats = parse(&std::fs::read_to_string(a.path(".sopfs/stats")).expect("stats"));
    assert!(value(&stats, "sopfs_fuse_op_seconds_count", Some("create")) >= 100.0);
    assert!(value(&stats, "sopfs_commits_total", None) >= 100.0);
    assert!(value(&stats, "sopfs_written_bytes_total", None) >= 290.0);
    let config = std::fs::read_to_string(a.path(".sopfs/config")).expect("config");
    let json: serde_json::Value = serde_json::from_str(&config).expect("config is JSON");
    assert_eq!(json["mode"], "cluster");
    assert_eq!(json["allow_other"], false);
    assert!(json["redis"].as_str().is_some_and(|r| r.contains("***")));
    assert!(!config.contains(PASSWORD), "{config}");
    // Read-only, and invisible to listings of the root.
    assert!(std::fs::write(a.path(".sopfs/stats"), "x").is_err());
    let names: Vec<String> = std::fs::read_dir(&a.dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 100, "{names:?}");

    let scrape = http_get(port, "/metrics");
    assert!(scrape.starts_with("HTTP/1.0 200"), "{scrape}");
    let scraped = parse(scrape.split("\r\n\r\n").nth(1).expect("body"));
    assert!(value(&scraped, "sopfs_commits_total", None) >= 100.0);
    assert!(http_get(port, "/nothing").starts_with("HTTP/1.0 404"));

    let dir_b = t.path().join("b");
    std::fs::create_dir(&dir_b).expect("mp");
    let mut b = Mount::start_at(store, &dir_b, Some(&redis.url()), &[]);
    let status = stdout_ok(&["status", store]);
    assert_eq!(live_daemons(&status), 2, "{status}");
    for d in [&dir_a, &dir_b] {
        assert!(status.contains(&d.display().to_string()), "{status}");
    }
    assert!(status.contains("cluster"), "{status}");
    assert!(
        status.contains("; log "),
        "the log's size is part of the usage: {status}"
    );
    b.unmount();
    let status = stdout_ok(&["status", store]);
    assert_eq!(live_daemons(&status), 1, "{status}");

    // A wrong password is one line and no mount; the message hides it too.
    let wrong = redis.url().replace(PASSWORD, "not-the-password");
    let err = one_line_error(&[
        "mount",
        store,
        dir_b.to_str().expect("utf8"),
        "--redis",
        &wrong,
    ]);
    assert!(!err.contains("not-the-password"), "{err}");
    assert!(!is_mounted(&dir_b));

    a.unmount();
    assert_eq!(live_daemons(&stdout_ok(&["status", store])), 0);
    for log in [&a.log, &b.log] {
        let text = std::fs::read_to_string(log).expect("log");
        assert!(text.contains("mounted"), "{text}");
        assert!(!text.contains(PASSWORD), "password in {}", log.display());
    }
}

#[test]
fn stats_prints_live_rates_of_a_busy_mount() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = t.path().join("store");
    let m = Mount::start(store.to_str().expect("utf8"), t.path(), "m", None);
    let dir = m.dir.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let dir = dir.clone();
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::fs::write(dir.join(format!("w{}", i % 500)), b"data").expect("write");
                i += 1;
            }
        })
    };
    let out = stdout_ok(&[
        "stats",
        dir.to_str().expect("utf8"),
        "--count",
        "2",
        "--interval",
        "0.5",
        "--by-op",
    ]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("writer");
    let rows: Vec<Vec<f64>> = out
        .lines()
        .skip(1)
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<f64>().is_ok())
        })
        .map(|l| {
            l.split_whitespace()
                .map(|w| w.parse().unwrap_or(-1.0))
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 2, "{out}");
    for r in &rows {
        assert!(r[0] > 0.0, "ops/s: {out}");
        assert!(r[4] > 0.0, "commits/s: {out}");
    }
    assert!(out.contains("  write"), "{out}");

    let err = one_line_error(&["stats", t.path().to_str().expect("utf8"), "--count", "1"]);
    assert!(err.contains("not a sopfs mount"), "{err}");
    let err = one_line_error(&["stats", dir.to_str().expect("utf8"), "--interval", "0"]);
    assert!(err.contains("--interval"), "{err}");
}

/// Flips one byte in the payload of every value blob (file content held
/// outside directory nodes); returns how many.
fn damage_values(store: &Path) -> usize {
    let mut n = 0;
    for dir in std::fs::read_dir(store.join("blobs"))
        .expect("blobs")
        .flatten()
    {
        for f in std::fs::read_dir(dir.path()).expect("fan").flatten() {
            let mut b = std::fs::read(f.path()).expect("blob");
            if b.len() > 64 && b.starts_with(b"SOPF") && b[4] == 2 {
                b[40] ^= 0xff;
                std::fs::write(f.path(), b).expect("damage");
                n += 1;
            }
        }
    }
    n
}

#[test]
fn a_damaged_blob_is_reported_with_its_file_and_never_served() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = t.path().join("store");
    let s = store.to_str().expect("utf8");
    // Past the 1 MiB of values a commit record carries: its chunks are blobs.
    let big: Vec<u8> = (0..1_300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    {
        let m = Mount::start(s, t.path(), "m", None);
        std::fs::create_dir(m.path("docs")).expect("mkdir");
        std::fs::write(m.path("docs/big.bin"), &big).expect("big");
        std::fs::write(m.path("small.txt"), "fine\n").expect("small");
    }
    assert!(stdout_ok(&["fsck", s]).starts_with("ok:"));
    assert!(damage_values(&store) >= 1);

    let out = sopfs(&["fsck", s]);
    assert!(!out.status.success());
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("/docs/big.bin: content damaged"),
        "{report}"
    );

    let m = Mount::start(s, t.path(), "m", None);
    assert_eq!(
        std::fs::read_to_string(m.path("small.txt")).expect("small"),
        "fine\n"
    );
    let err = std::fs::read(m.path("docs/big.bin")).expect_err("damaged data served");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    let stats = parse(&std::fs::read_to_string(m.path(".sopfs/stats")).expect("stats"));
    assert!(value(&stats, "sopfs_fuse_io_errors_total", None) >= 1.0);
    let log = std::fs::read_to_string(&m.log).expect("log");
    assert!(
        log.lines()
            .any(|l| l.contains("damaged data not served") && l.contains("/docs/big.bin")),
        "{log}"
    );
}

/// Runs `program args` as the unprivileged user `tests` (created by `.ci/run`).
fn as_tests_user(program: &str, args: &[&Path]) -> Option<std::process::Output> {
    let user = nix::unistd::User::from_name("tests").ok().flatten()?;
    Some(
        Command::new(program)
            .args(args)
            .uid(user.uid.as_raw())
            .gid(user.gid.as_raw())
            .output()
            .expect("run as tests"),
    )
}

#[test]
fn other_users_enter_only_with_allow_other_and_then_by_permission() {
    if nix::unistd::User::from_name("tests")
        .ok()
        .flatten()
        .is_none()
    {
        assert!(
            std::env::var("CI").is_err(),
            "user `tests` missing (.ci/run creates it)"
        );
        eprintln!("skipped: no user `tests`");
        return;
    }
    let t = tempfile::tempdir().expect("tempdir");
    // The user must be able to reach the mount points themselves.
    std::fs::set_permissions(
        t.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let store = t.path().join("store");
    let s = store.to_str().expect("utf8");
    let private = t.path().join("private");
    std::fs::create_dir(&private).expect("mp");
    {
        let m = Mount::start_at(s, &private, None, &[]);
        std::fs::write(m.path("secret"), "root only\n").expect("write");
        std::fs::set_permissions(
            m.path("secret"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("chmod");
        std::fs::write(m.path("public"), "everyone\n").expect("write");
        let out = as_tests_user("ls", &[&m.dir]).expect("user");
        assert!(
            !out.status.success(),
            "another user entered a private mount"
        );
    }
    let shared = t.path().join("shared");
    std::fs::create_dir(&shared).expect("mp");
    let m = Mount::start_at(s, &shared, None, &["allow_other"]);
    let out = as_tests_user("cat", &[&m.path("public")]).expect("user");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "everyone\n");
    let out = as_tests_user("cat", &[&m.path("secret")]).expect("user");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fsck_repair_fixes_link_counts_dangling_names_and_orphans() {
    use engine::{Db, Options, StoreLocation};
    use sopfs::fs::NodeSpec;
    use sopfs::ns::schema::{dir_tree, ino_key, Inode, Kind, INODES, ROOT_INO};
    use sopfs::{Caller, Fs, FsOptions};

    let t = tempfile::tempdir().expect("tempdir");
    let open = || {
        let db = Db::open(
            StoreLocation::parse(t.path().to_str().expect("utf8")).expect("loc"),
            Options::default(),
        )
        .expect("open");
        Fs::new(db, FsOptions::default()).expect("fs")
    };
    let fs = open();
    let me = Caller { uid: 0, gid: 0 };
    let mk = |name: &str| {
        fs.make_node(
            me,
            ROOT_INO,
            name.as_bytes(),
            NodeSpec::new(Kind::File, 0o644),
        )
        .expect("create")
        .ino
    };
    let (counted, dangling, orphan) = (mk("counted"), mk("dangling"), mk("orphan"));
    let sub = fs
        .make_node(me, ROOT_INO, b"sub", NodeSpec::new(Kind::Dir, 0o755))
        .expect("mkdir")
        .ino;
    assert!(fs
        .fsck(false, &mut |_| {})
        .expect("fsck")
        .problems
        .is_empty());

    // Damage the metadata the way a buggy writer could.
    fs.write_tx(|tx| {
        let mut i =
            Inode::decode(&tx.get(INODES, &ino_key(counted))?.expect("inode")).expect("decode");
        i.nlink = 5;
        tx.upsert(INODES, &ino_key(counted), &i.encode())?;
        tx.remove(INODES, &ino_key(dangling))?;
        tx.remove(&dir_tree(ROOT_INO), b"orphan")?;
        let mut d = Inode::decode(&tx.get(INODES, &ino_key(sub))?.expect("inode")).expect("decode");
        d.parent = 999;
        tx.upsert(INODES, &ino_key(sub), &d.encode())?;
        Ok(())
    })
    .expect("damage");

    let found = fs.fsck(false, &mut |_| {}).expect("fsck");
    assert_eq!(found.problems.len(), 4, "{:?}", found.problems);
    assert!(found.repaired.is_empty());
    let fixed = fs.fsck(true, &mut |_| {}).expect("repair");
    assert_eq!(fixed.repaired.len(), 4, "{:?}", fixed.repaired);
    let again = fs.fsck(false, &mut |_| {}).expect("fsck");
    assert!(again.problems.is_empty(), "{:?}", again.problems);

    assert_eq!(fs.getattr(counted).expect("attr").inode.nlink, 1);
    assert!(matches!(
        fs.lookup(ROOT_INO, b"dangling"),
        Err(sopfs::FsError::NotFound)
    ));
    let lost = fs.lookup(ROOT_INO, b"lost+found").expect("lost+found");
    let adopted = fs
        .lookup(lost.ino, format!("#{orphan}").as_bytes())
        .expect("orphan adopted");
    assert_eq!(adopted.ino, orphan);
}

#[test]
fn operator_commands_refuse_bad_input_in_one_line_and_change_nothing() {
    let t = tempfile::tempdir().expect("tempdir");
    let junk = t.path().join("junk");
    std::fs::create_dir(&junk).expect("junk");
    std::fs::write(junk.join("precious.txt"), "mine").expect("write");
    let j = junk.to_str().expect("utf8");
    for args in [
        vec!["status", j],
        vec!["fsck", j],
        vec!["gc", j],
        vec!["info", j],
    ] {
        let err = one_line_error(&args);
        assert!(
            err.contains("volume") || err.contains("not empty"),
            "{args:?}: {err}"
        );
    }
    let listing: Vec<_> = std::fs::read_dir(&junk).expect("ls").flatten().collect();
    assert_eq!(listing.len(), 1, "something was written into a non-volume");
    assert_eq!(
        std::fs::read_to_string(junk.join("precious.txt")).expect("kept"),
        "mine"
    );

    let store = t.path().join("store");
    let s = store.to_str().expect("utf8");
    stdout_ok(&["format", s]);
    let before = stdout_ok(&["status", s]);
    let err = one_line_error(&["fsck", s, "--redis", "redis://127.0.0.1:1/"]);
    assert!(err.to_lowercase().contains("coordinator"), "{err}");
    let err = one_line_error(&["gc", s, "--redis", "http://127.0.0.1/"]);
    assert!(err.to_lowercase().contains("redis"), "{err}");
    let err = one_line_error(&["status", "s3://"]);
    assert!(err.contains("s3"), "{err}");
    let mp = t.path().join("mp");
    std::fs::create_dir(&mp).expect("mp");
    let m = mp.to_str().expect("utf8");
    let err = one_line_error(&["mount", s, m, "--metrics", "localhost"]);
    assert!(err.contains("IP:PORT"), "{err}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let err = one_line_error(&["mount", s, m, "--metrics", &addr]);
    assert!(err.contains("metrics address"), "{err}");
    assert!(!is_mounted(&mp));
    let after = stdout_ok(&["status", s]);
    let commit = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("commit"))
            .map(str::to_string)
    };
    assert_eq!(
        commit(&before),
        commit(&after),
        "a refused command committed"
    );
}

fn dump_json(args: &[&str]) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(&stdout_ok(args)).expect("dump is JSON");
    v.as_object_mut().expect("object").remove("seq");
    v
}

#[test]
fn dump_and_load_recreate_the_namespace_exactly_or_change_nothing() {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let t = tempfile::tempdir().expect("tempdir");
    let a = t.path().join("a");
    let (sa, sb) = (
        a.to_str().expect("utf8").to_string(),
        t.path().join("b").to_str().expect("utf8").to_string(),
    );
    let big: Vec<u8> = (0..700_000u32).map(|i| (i * 13 % 241) as u8).collect();
    {
        let m = Mount::start(&sa, t.path(), "ma", None);
        common::sh(
            &m.dir,
            "mkdir -p src/deep && echo hello > src/deep/s && ln src/deep/s hard \
             && ln -s src/deep/s sym && mkfifo pipe && truncate -s 3M sparse \
             && printf x | dd of=sparse bs=1 seek=2000000 conv=notrunc 2>/dev/null \
             && touch -d 2001-02-03T04:05:06 src/deep/s && chmod 640 sym src/deep/s \
             && chown 1001:1001 src",
        );
        std::fs::write(m.path("src/big.bin"), &big).expect("big");
        let odd = std::ffi::OsStr::from_bytes(b"caf\xe9-latin1");
        std::fs::write(m.dir.join(odd), "odd name\n").expect("odd");
        xattr_set(&m.path("src/big.bin"), "user.tag", b"v\xff\x00");
    }
    let d1 = t.path().join("d1.json");
    stdout_ok(&["dump", &sa, "-o", d1.to_str().expect("utf8")]);
    let out = stdout_ok(&["load", &sb, d1.to_str().expect("utf8")]);
    assert!(out.contains("loaded 9 inodes, 9 entries"), "{out}");
    let original = dump_json(&["dump", &sa]);
    assert_eq!(dump_json(&["dump", &sb]), original, "loaded volume differs");
    assert!(stdout_ok(&["fsck", &sb]).starts_with("ok:"));

    {
        let m = Mount::start(&sb, t.path(), "mb", None);
        assert_eq!(std::fs::read(m.path("src/big.bin")).expect("big"), big);
        let s = std::fs::metadata(m.path("src/deep/s")).expect("s");
        let h = std::fs::metadata(m.path("hard")).expect("hard");
        assert_eq!((s.ino(), s.nlink()), (h.ino(), 2));
        assert_eq!(s.mode() & 0o7777, 0o640);
        assert_eq!(s.mtime(), 981173106);
        assert_eq!(std::fs::metadata(m.path("src")).expect("src").uid(), 1001);
        assert_eq!(
            std::fs::read_link(m.path("sym")).expect("sym"),
            Path::new("src/deep/s")
        );
        let sparse = std::fs::read(m.path("sparse")).expect("sparse");
        assert_eq!(sparse.len(), 3 << 20);
        assert_eq!(sparse.iter().filter(|&&b| b != 0).count(), 1);
        assert_eq!(sparse[2_000_000], b'x');
        assert_eq!(
            xattr_get(&m.path("src/big.bin"), "user.tag"),
            Some(b"v\xff\x00".to_vec())
        );
    }

    // A second load into the same (now full) volume changes nothing.
    let err = one_line_error(&["load", &sb, d1.to_str().expect("utf8")]);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(dump_json(&["dump", &sb]), original);
    // A broken or metadata-only dump is refused before the target exists.
    let text = std::fs::read_to_string(&d1).expect("dump");
    let cut = t.path().join("cut.json");
    std::fs::write(&cut, &text[..text.len() / 2]).expect("cut");
    let sc = t.path().join("c");
    let err = one_line_error(&[
        "load",
        sc.to_str().expect("utf8"),
        cut.to_str().expect("utf8"),
    ]);
    assert!(err.contains("not a sopfs dump"), "{err}");
    let meta_only = t.path().join("meta.json");
    stdout_ok(&[
        "dump",
        &sa,
        "--no-data",
        "-o",
        meta_only.to_str().expect("utf8"),
    ]);
    let err = one_line_error(&[
        "load",
        sc.to_str().expect("utf8"),
        meta_only.to_str().expect("utf8"),
    ]);
    assert!(err.contains("--no-data"), "{err}");
    assert!(
        !sc.join("log").exists(),
        "a refused load formatted its target"
    );
}

#[allow(unsafe_code)]
fn xattr_set(p: &Path, name: &str, value: &[u8]) {
    let path = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
    let name = std::ffi::CString::new(name).expect("name");
    // SAFETY: valid C strings and a buffer with its length.
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr: {}", std::io::Error::last_os_error());
}

#[allow(unsafe_code)]
fn xattr_get(p: &Path, name: &str) -> Option<Vec<u8>> {
    let path = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
    let name = std::ffi::CString::new(name).expect("name");
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer with its length.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

#[test]
fn warmup_reads_every_file_under_a_path() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = t.path().join("store");
    let m = Mount::start(store.to_str().expect("utf8"), t.path(), "m", None);
    std::fs::create_dir_all(m.path("data/sub")).expect("mkdir");
    for i in 0..20 {
        let dir = if i % 2 == 0 { "data" } else { "data/sub" };
        std::fs::write(m.path(&format!("{dir}/f{i}")), vec![b'x'; 10_000]).expect("write");
    }
    std::fs::write(m.path("outside"), "not under the path").expect("write");
    let out = stdout_ok(&["warmup", m.path("data").to_str().expect("utf8")]);
    assert!(out.starts_with("warmed 20 files, 0.2 MiB"), "{out}");
    let err = one_line_error(&["warmup", t.path().to_str().expect("utf8")]);
    assert!(err.contains("not inside a sopfs mount"), "{err}");
}

#[test]
fn a_read_only_store_is_inspected_but_never_written() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = t.path().join("store");
    let s = store.to_str().expect("utf8");
    {
        let m = Mount::start(s, t.path(), "m", None);
        std::fs::write(m.path("kept"), "kept\n").expect("write");
    }
    let ro = t.path().join("ro");
    std::fs::create_dir(&ro).expect("ro");
    let bound = Command::new("mount")
        .arg("--bind")
        .arg(&store)
        .arg(&ro)
        .status()
        .is_ok_and(|st| st.success())
        && Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(&ro)
            .status()
            .is_ok_and(|st| st.success());
    if !bound {
        let _ = Command::new("umount").arg(&ro).status();
        assert!(std::env::var("CI").is_err(), "read-only bind mount failed");
        eprintln!("skipped: cannot make a read-only bind mount (not root?)");
        return;
    }
    struct Unbind<'a>(&'a Path);
    impl Drop for Unbind<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unbind = Unbind(&ro);
    let r = ro.to_str().expect("utf8");
    let before: Vec<_> = walk(&store);
    assert!(stdout_ok(&["status", r]).contains("commit"));
    let mp = t.path().join("mp");
    std::fs::create_dir(&mp).expect("mp");
    // What writes is refused in one line; what only reads works.
    let fsck = stdout_ok(&["fsck", r]);
    assert!(
        fsck.contains("ok:") && fsck.contains(" 0 problem"),
        "{fsck}"
    );
    assert!(stdout_ok(&["dump", r]).contains("kept"));
    for args in [
        vec!["mount", r, mp.to_str().expect("utf8")],
        vec!["fsck", r, "--repair"],
        vec!["gc", r],
    ] {
        let err = one_line_error(&args);
        assert!(err.contains("Read-only"), "{args:?}: {err}");
        if args[0] == "mount" {
            assert!(err.contains("-o ro"), "the error says what to do: {err}");
        }
    }
    assert!(!is_mounted(&mp));
    // Mounted read-only it serves: no lock file taken for writing, no
    // heartbeat, no recovery or GC; reads work and writes get EROFS.
    {
        let mut m = Mount::start_at(r, &mp, None, &["ro"]);
        assert_eq!(
            std::fs::read_to_string(m.path("kept")).expect("read"),
            "kept\n"
        );
        assert!(std::fs::read_dir(&mp).expect("list").count() >= 1);
        for e in [
            std::fs::write(m.path("new"), "x").err(),
            std::fs::create_dir(m.path("d")).err(),
            std::fs::remove_file(m.path("kept")).err(),
        ] {
            let e = e.expect("a write on a read-only mount failed");
            assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
        }
        let status = stdout_ok(&["status", r]);
        assert!(status.contains("daemons    0 live"), "{status}");
        m.unmount();
    }
    assert_eq!(walk(&store), before, "a read-only store changed");
}

/// Every file under `root` with its size, sorted.
fn walk(root: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let m = e.metadata().expect("meta");
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), m.len()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn redis_over_tls_with_a_password_from_the_url() {
    let Some(redis) = RedisServer::tls(PASSWORD) else {
        assert!(
            std::env::var("CI").is_err(),
            "openssl or a TLS-capable redis-server missing"
        );
        eprintln!("skipped: no openssl or redis-server without TLS");
        return;
    };
    let t = tempfile::tempdir().expect("tempdir");
    let store = t.path().join("store");
    let s = store.to_str().expect("utf8");
    let mp = t.path().join("m");
    std::fs::create_dir(&mp).expect("mp");
    // A self-signed certificate is refused unless the URL says #insecure.
    let verified = format!("rediss://:{PASSWORD}@127.0.0.1:{}/", redis.port);
    let err = one_line_error(&["mount", s, mp.to_str().expect("utf8"), "--redis", &verified]);
    assert!(err.contains("certificate"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
    let url = format!("{verified}#insecure");
    let mut m = Mount::start_at(s, &mp, Some(&url), &[]);
    std::fs::write(m.path("over-tls"), "sealed\n").expect("write");
    let config = std::fs::read_to_string(m.path(".sopfs/config")).expect("config");
    assert!(config.contains("rediss://:***@"), "{config}");
    assert!(!config.contains(PASSWORD));
    m.unmount();
    let m = Mount::start_at(s, &mp, Some(&url), &[]);
    assert_eq!(
        std::fs::read_to_string(m.path("over-tls")).expect("read"),
        "sealed\n"
    );
}

/// The mount's readahead once the daemon has set it to `want` (it does so
/// right after the mount appears, which is when `Mount::start` returns), or
/// what it is after 10 s.
fn bdi_read_ahead_settled(mountpoint: &Path, want: &str) -> Option<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = bdi_read_ahead(mountpoint);
        if now.as_deref() == Some(want) || std::time::Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn bdi_read_ahead(mountpoint: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = mountpoint.to_string_lossy();
    let dev = info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.get(4) == Some(&&*want)).then(|| f.get(2).map(|d| d.to_string()))?
    })?;
    std::fs::read_to_string(format!("/sys/class/bdi/{dev}/read_ahead_kb"))
        .ok()
        .map(|s| s.trim().to_string())
}

#[test]
fn readahead_is_raised_for_sequential_readers_and_can_be_set() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = t.path().join("store");
    let s = store.to_str().expect("utf8");
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 31 % 253) as u8).collect();
    {
        let m = Mount::start(s, t.path(), "m", None);
        if nix::unistd::geteuid().is_root() {
            assert_eq!(
                bdi_read_ahead_settled(&m.dir, "1024").as_deref(),
                Some("1024")
            );
        }
        std::fs::write(m.path("seq"), &data).expect("write");
    }
    let mp = t.path().join("m2");
    std::fs::create_dir(&mp).expect("mp");
    let m = Mount::start_at(s, &mp, None, &["read_ahead_kb=256"]);
    if nix::unistd::geteuid().is_root() {
        assert_eq!(
            bdi_read_ahead_settled(&m.dir, "256").as_deref(),
            Some("256")
        );
    }
    // A cold sequential read (prefetched chunks) and reads from the middle.
    assert_eq!(std::fs::read(m.path("seq")).expect("read"), data);
    let mut f = std::fs::File::open(m.path("seq")).expect("open");
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(3_000_001)).expect("seek");
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).expect("read");
    assert_eq!(tail, data[3_000_001..]);
    // A big fsync (more chunks than are worth one fsync each) lands whole.
    let big: Vec<u8> = (0..20_000_000u32).map(|i| (i % 249) as u8).collect();
    {
        let mut f = std::fs::File::create(m.path("synced")).expect("create");
        f.write_all(&big).expect("write");
        f.sync_all().expect("fsync");
    }
    assert_eq!(std::fs::read(m.path("synced")).expect("read"), big);
    let err = one_line_error(&[
        "mount",
        s,
        t.path().to_str().expect("utf8"),
        "-o",
        "read_ahead_kb=lots",
    ]);
    assert!(err.contains("read_ahead_kb"), "{err}");
}

#[allow(unsafe_code)]
fn xattr_errno(p: &Path, name: &str) -> i32 {
    let path = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
    let name = std::ffi::CString::new(name).expect("name");
    let mut buf = [0u8; 64];
    // SAFETY: valid C strings and a buffer with its length.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert!(n < 0, "{name:?} unexpectedly present");
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[test]
fn an_absent_selinux_label_is_not_supported_so_ls_asks_once() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = t.path().join("store");
    let m = Mount::start(store.to_str().expect("utf8"), t.path(), "m", None);
    std::fs::create_dir(m.path("d")).expect("mkdir");
    for i in 0..200 {
        std::fs::write(m.path(&format!("d/f{i:03}")), b"x").expect("write");
    }
    let f = m.path("d/f000");
    assert_eq!(xattr_errno(&f, "security.selinux"), libc::EOPNOTSUPP);
    // Other absent names are plain "no such attribute".
    assert_eq!(xattr_errno(&f, "user.nothing"), libc::ENODATA);
    assert_eq!(xattr_errno(&f, "security.other"), libc::ENODATA);
    // A label a user sets is kept and served like any attribute.
    let labelled = m.path("d/f001");
    xattr_set(&labelled, "security.selinux", b"system_u:object_r:tmp_t:s0");
    assert_eq!(
        xattr_get(&labelled, "security.selinux").as_deref(),
        Some(&b"system_u:object_r:tmp_t:s0"[..])
    );
    // `ls -l` of 200 files asks the daemon for a handful of xattrs, not 200.
    let xattr_ops = || {
        let stats = parse(&std::fs::read_to_string(m.path(".sopfs/stats")).expect("stats"));
        value(&stats, "sopfs_fuse_op_seconds_count", Some("xattr"))
    };
    let before = xattr_ops();
    let out = std::process::Command::new("ls")
        .arg("-l")
        .arg(m.path("d"))
        .output()
        .expect("ls");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 201);
    let asked = xattr_ops() - before;
    assert!(asked < 20.0, "ls -l asked {asked} xattrs for 200 files");
}

#[test]
fn unlinked_files_are_deleted_together_and_none_is_left_behind() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = t.path().join("store");
    let mut m = Mount::start(store.to_str().expect("utf8"), t.path(), "m", None);
    std::fs::create_dir(m.path("d")).expect("mkdir");
    for i in 0..300 {
        std::fs::write(m.path(&format!("d/f{i:03}")), vec![b'x'; 5000]).expect("write");
    }
    // One still open: it must outlive its name.
    let mut held = std::fs::File::open(m.path("d/f000")).expect("open");
    let commits = || {
        let stats = parse(&std::fs::read_to_string(m.path(".sopfs/stats")).expect("stats"));
        value(&stats, "sopfs_commits_total", None)
    };
    let before = commits();
    for i in 0..300 {
        std::fs::remove_file(m.path(&format!("d/f{i:03}"))).expect("unlink");
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    // One commit per unlink; the inodes the kernel then forgets are deleted
    // a batch at a time, not one commit each.
    let made = commits() - before;
    assert!(
        (300.0..360.0).contains(&made),
        "{made} commits for 300 unlinks"
    );
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut held, &mut data).expect("read unlinked");
    assert_eq!(data.len(), 5000);
    drop(held);
    m.unmount();
    // Nothing unreachable is left: fsck finds no orphan inode.
    let out = sopfs(&["fsck", store.to_str().expect("utf8")]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fsck: {text}");
}

#[test]
fn bench_measures_a_mount_checks_what_it_reads_and_leaves_nothing() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = t.path().join("store");
    let mut m = Mount::start(store.to_str().expect("utf8"), t.path(), "m", None);
    let mnt = m.dir.to_str().expect("utf8").to_string();
    let out = stdout_ok(&[
        "bench",
        &mnt,
        "--big-mib",
        "8",
        "--small-files",
        "100",
        "--threads",
        "2",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).expect("bench --json");
    let phases = report["phases"].as_array().expect("phases");
    let names: Vec<&str> = phases.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "big_write_fsync",
            "big_read",
            "small_create",
            "small_read",
            "stat",
            "rename",
            "unlink",
            "mkdir_rmdir"
        ]
    );
    for p in phases {
        assert!(p["rate"].as_f64().is_some_and(|r| r > 0.0), "{p}");
    }
    assert_eq!(phases[2]["amount"].as_f64(), Some(100.0));
    let left: Vec<_> = std::fs::read_dir(&m.dir).expect("ls").collect();
    assert!(left.is_empty(), "bench left {} entries behind", left.len());

    // The table form, and bad input in one line.
    let table = stdout_ok(&["bench", &mnt, "--big-mib", "1", "--small-files", "10"]);
    assert!(table.contains("| small_create | 10 files |"), "{table}");
    std::fs::write(m.path("file"), "x").expect("write");
    let err = one_line_error(&["bench", &m.path("file").to_string_lossy()]);
    assert!(err.contains("is not a directory"), "{err}");
    one_line_error(&["bench", &mnt, "--small-kib", "0"]);
    m.unmount();
}
