//! POSIX conformance on a real mount: the whole pjdfstest suite, and fsx's
//! random operations (with and without mmap) checked against its model.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn base() -> tempfile::TempDir {
    let t = tempfile::tempdir().expect("tempdir");
    // pjdfstest switches to other users, who must be able to reach the mount.
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    t
}

#[test]
fn pjdfstest_passes_with_no_failure() {
    if !require("pjdfstest") {
        return;
    }
    let t = base();
    let store = t.path().join("store");
    let m = Mount::start(store.to_str().expect("utf8"), t.path(), "m", None);
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/pjdfstest.toml");
    let out = Command::new("pjdfstest")
        .arg("-c")
        .arg(config)
        .arg("-p")
        .arg(&m.dir)
        .current_dir(&m.dir)
        .output()
        .expect("pjdfstest");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let summary = text
        .lines()
        .find(|l| l.starts_with("Summary:"))
        .unwrap_or("no summary")
        .to_string();
    eprintln!("pjdfstest: {summary}");
    let failed: Vec<&str> = text.lines().filter(|l| l.contains("FAILED")).collect();
    assert!(
        out.status.success() && failed.is_empty() && summary.contains(" 0 failed"),
        "pjdfstest: {summary}\n{}",
        failed.join("\n")
    );
    // Nothing but what needs another filesystem, a remount or LINK_MAX is skipped.
    let passed: u32 = summary
        .split(", ")
        .find_map(|p| p.strip_suffix(" passed"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(passed >= 382, "only {passed} passed: {summary}");
}

/// fsx's default mix (pread/pwrite, mmap reads and writes, truncate, fsync,
/// close/reopen) plus fallocate and hole punching, then a mix without mmap.
#[test]
fn fsx_random_operations_match_the_model() {
    if !require("fsx") {
        return;
    }
    let ops: u32 = std::env::var("SOPFS_FSX_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let t = base();
    let store = t.path().join("store");
    let m = Mount::start(store.to_str().expect("utf8"), t.path(), "m", None);
    let with_mmap = "flen = 1048576\n[weights]\nposix_fallocate = 1\npunch_hole = 1\n";
    let without_mmap = "flen = 4194304\n[opsize]\nmax = 262144\n[weights]\nmapread = 0\nmapwrite = 0\nposix_fallocate = 1\npunch_hole = 1\n";
    fsx(&m, "mmap", with_mmap, ops);
    fsx(&m, "plain", without_mmap, ops);
}
