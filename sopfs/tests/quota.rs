//! Directory quotas on real mounts: bytes and inodes limited below a
//! directory, `EDQUOT` past them, `df` showing them, usage that follows
//! creates, writes, removals and moves and agrees with a walk, one-line
//! refusals that change nothing; and two hosts racing to fill one quota
//! never passing it.

mod common;

use common::trees::pattern;
use common::{sopfs_bin, sopfs_bin_for_anyone, two_hosts, Mount, RedisServer};
use std::path::Path;
use std::process::{Command, Output};

fn quota(args: &[&str]) -> Output {
    Command::new(sopfs_bin())
        .arg("quota")
        .args(args)
        .output()
        .expect("run sopfs quota")
}

fn quota_ok(args: &[&str]) -> String {
    let out = quota(args);
    assert!(
        out.status.success(),
        "quota {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn quota_refused(args: &[&str]) -> String {
    let out = quota(args);
    assert!(!out.status.success(), "quota {args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

fn errno(r: std::io::Result<impl Sized>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

#[allow(unsafe_code)]
fn statvfs(p: &Path) -> libc::statvfs {
    let c = std::ffi::CString::new(s(p)).expect("path");
    // SAFETY: a valid path and a zeroed struct the call fills.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st
}

/// Bytes of regular files and inodes below `dir`, by a walk.
fn walked(dir: &Path) -> (u64, u64) {
    let (mut bytes, mut inodes) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("ls") {
            let e = e.expect("entry");
            let m = e.metadata().expect("stat");
            inodes += 1;
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                bytes += m.len();
            }
        }
    }
    (bytes, inodes)
}

#[test]
fn a_quota_limits_bytes_and_inodes_below_a_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("v");
    let m = Mount::start(s(&store), tmp.path(), "m", None);
    let q = m.path("q");
    std::fs::create_dir_all(q.join("sub")).expect("mkdir");
    std::fs::write(q.join("pre"), pattern(1, 100_000)).expect("write");
    let out = quota_ok(&["set", s(&q), "--bytes", "1M", "--inodes", "20"]);
    assert!(out.contains("inodes 2 of 20"), "{out}");

    // df on the directory shows the quota; the root does not.
    let st = statvfs(&q);
    assert_eq!(st.f_blocks * st.f_frsize, 1 << 20);
    assert_eq!(st.f_files, 20);
    assert_eq!(st.f_ffree, 18);
    assert!(statvfs(&m.dir).f_blocks * statvfs(&m.dir).f_frsize > 1 << 40);

    // A limit below what is used: one line, nothing changed.
    let err = quota_refused(&["set", s(&q), "--bytes", "1000"]);
    assert!(err.contains("below what is used"), "{err}");
    assert!(quota_ok(&["get", s(&q)]).contains("of 1.0 MiB"));
    let err = quota_refused(&["set", s(&q), "--bytes", "lots"]);
    assert!(err.contains("--bytes lots"), "{err}");

    // Bytes: files land until the next would pass; that one fails whole
    // at its close, the quota never passed.
    let mut kept = 0;
    for i in 0..20u64 {
        match std::fs::write(q.join(format!("f{i}")), pattern(i, 200_000)) {
            Ok(()) => kept += 1,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EDQUOT), "{e}");
                break;
            }
        }
    }
    assert_eq!(
        kept, 4,
        "100,000 + 4 x 200,000 bytes fit in 1 MiB, a fifth does not"
    );
    let (bytes, _) = walked(&q);
    assert!(bytes <= 1 << 20, "{bytes} bytes below the quota");
    // Inodes: creates fail past the limit.
    let mut made = 0;
    for i in 0..30 {
        match std::fs::File::create(q.join(format!("sub/e{i}"))) {
            Ok(_) => made += 1,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EDQUOT), "{e}");
                break;
            }
        }
    }
    let (_, inodes) = walked(&q);
    assert_eq!(inodes, 20, "{made} made");

    // Moves: a file's usage moves with it; a directory or a hard link
    // across the boundary is refused with EXDEV (mv then copies).
    std::fs::create_dir(m.path("out")).expect("mkdir");
    std::fs::rename(q.join("f0"), m.path("out/f0")).expect("mv a file out");
    assert_eq!(
        errno(std::fs::rename(q.join("sub"), m.path("out/sub"))),
        Some(libc::EXDEV)
    );
    assert_eq!(
        errno(std::fs::hard_link(m.path("out/f0"), q.join("l"))),
        Some(libc::EXDEV)
    );
    std::fs::remove_file(q.join("f1")).expect("rm");
    std::fs::write(q.join("f1"), pattern(7, 150_000)).expect("room again");
    let check = quota_ok(&["check", s(&q)]);
    assert!(check.trim_end().ends_with("ok"), "{check}");
    let (bytes, inodes) = walked(&q);
    let got = quota_ok(&["get", s(&q)]);
    assert!(
        got.contains(&format!("inodes {inodes} of 20")),
        "{got} vs {inodes}"
    );
    assert!(bytes <= 1 << 20);

    // Only root sets quotas.
    let err = {
        use std::os::unix::process::CommandExt;
        let (_bin_dir, bin) = sopfs_bin_for_anyone();
        let out = Command::new(&bin)
            .args(["quota", "remove", s(&q)])
            .uid(65534)
            .output()
            .expect("run as nobody");
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    };
    assert!(
        err.contains("not permitted") || err.contains("ermission"),
        "{err}"
    );
    let listed = quota_ok(&["list", s(&m.dir)]);
    assert!(listed.starts_with("/q "), "{listed}");
    quota_ok(&["remove", s(&q)]);
    assert!(quota_ok(&["list", s(&m.dir)]).is_empty());
    std::fs::write(q.join("big"), pattern(9, 2 << 20)).expect("no quota, no limit");
}

#[test]
fn two_hosts_racing_to_fill_one_quota_never_pass_it() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, a, b) = two_hosts(tmp.path(), &redis);
    std::fs::create_dir(a.path("q")).expect("mkdir");
    const LIMIT: u64 = 2 << 20;
    const FILE: usize = 64 << 10;
    quota_ok(&["set", s(&a.path("q")), "--bytes", &LIMIT.to_string()]);
    // Two writers on each host, each writing 64 KiB files until refused.
    let writers: Vec<_> = (0..4usize)
        .map(|w| {
            let dir = if w % 2 == 0 { a.path("q") } else { b.path("q") };
            std::thread::spawn(move || {
                let mut n = 0;
                loop {
                    match std::fs::write(dir.join(format!("w{w}-{n}")), pattern(w as u64, FILE)) {
                        Ok(()) => n += 1,
                        Err(e) if e.raw_os_error() == Some(libc::EDQUOT) => return n,
                        Err(e) => panic!("writer {w}: {e}"),
                    }
                }
            })
        })
        .collect();
    let made: usize = writers.into_iter().map(|h| h.join().expect("writer")).sum();
    for m in [&a, &b] {
        let (bytes, inodes) = walked(&m.path("q"));
        assert!(bytes <= LIMIT, "{bytes} bytes below a {LIMIT}-byte quota");
        // Full: each writer stopped only when its next file did not fit.
        assert!(
            bytes + FILE as u64 > LIMIT,
            "{bytes} bytes: the quota was not filled"
        );
        // And the file each writer was refused: made empty, its bytes dropped.
        assert_eq!(
            inodes as usize,
            made + 4,
            "every file that returned is there"
        );
    }
    let check = quota_ok(&["check", s(&b.path("q"))]);
    assert!(check.trim_end().ends_with("ok"), "{check}");
}
