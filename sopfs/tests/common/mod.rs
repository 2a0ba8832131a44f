//! Test support: real `sopfs` daemons on real FUSE mounts, a private
//! redis-server, a local S3 server (all from `test-support`), and the
//! power-cut simulator.
#![allow(dead_code, unused_imports)]

pub mod power_cut;
pub mod trees;

pub use test_support::*;

use std::path::{Path, PathBuf};

/// A volume in `base/v` mounted twice (hosts `a` and `b`), coordinated by
/// `redis`: the store's path and the two mounts.
pub fn two_hosts(base: &Path, redis: &RedisServer) -> (PathBuf, Mount, Mount) {
    let store = base.join("v");
    let s = store.to_str().expect("utf-8");
    let a = Mount::start(s, base, "a", Some(&redis.url()));
    let b = Mount::start(s, base, "b", Some(&redis.url()));
    (store, a, b)
}

/// `sopfs gc STORE --retention 0`, which must succeed: its report and
/// the number of blobs it deleted (the report's second word).
pub fn gc_now(store: &str) -> (String, u64) {
    let report = sopfs_ok(&["gc", store, "--retention", "0"]);
    let deleted = report
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (report, deleted)
}

/// Runs `sopfs ARGS`, which must succeed; its standard output.
pub fn sopfs_ok<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let out = std::process::Command::new(sopfs_bin())
        .args(args)
        .output()
        .expect("run sopfs");
    assert!(
        out.status.success(),
        "sopfs {:?}: {}",
        args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs fsx (`ops` operations, a fixed seed, `config` as its TOML
/// settings) on file `name` in mount `m`, which must end A-OK.
pub fn fsx(m: &Mount, name: &str, config: &str, ops: u32) {
    let cfg = m.dir.with_extension(format!("{name}.toml"));
    std::fs::write(&cfg, config).expect("fsx config");
    let artifacts = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new("fsx")
        .arg("-N")
        .arg(ops.to_string())
        .arg("-S")
        .arg("20261124")
        .arg("-f")
        .arg(&cfg)
        .arg("-P")
        .arg(artifacts.path())
        .arg(m.path(name))
        .output()
        .expect("fsx");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let log = std::fs::read_to_string(&m.log).unwrap_or_default();
    assert!(
        out.status.success() && text.contains("All operations completed A-OK"),
        "fsx {name} failed:\n{}\ndaemon log (last lines):\n{}",
        text.lines().rev().take(40).collect::<Vec<_>>().join("\n"),
        log.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
}
