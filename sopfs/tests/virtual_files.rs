//! `/.macros` and `/.jobs` on a real mount: install by writing a file,
//! refuse an invalid one with EINVAL at close, run a macro as an executable
//! from the shell, submit a job by writing a file and read its result.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;

/// The runner binary (mount-tools), built when a plain `cargo test -p sopfs` did not.
fn runner_dir() -> PathBuf {
    let dir = sopfs_bin().parent().expect("bin dir").to_path_buf();
    if !dir.join("sopfs-macro").exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "mount-tools", "--bin", "sopfs-macro"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "could not build sopfs-macro");
    }
    dir
}

#[test]
fn macros_are_files_and_jobs_are_directories() {
    let bin = runner_dir();
    let t = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start();
    let store = t.path().join("store");
    let store_s = store.to_str().expect("utf8");
    let m = Mount::start(store_s, t.path(), "m", Some(&redis.url()));
    std::fs::write(
        t.path().join("hello.json"),
        r#"{"format":1,"name":"hello","description":"greets","params":[{"name":"who","default":"world"}],
           "steps":[{"op":"append","path":"/greetings","content":"hello ${who}\n"},{"op":"print","text":"hello ${who}"}]}"#,
    )
    .expect("write");
    std::fs::write(
        t.path().join("bad.json"),
        r#"{"format":1,"name":"bad","steps":[{"op":"print","text":"${nope}"}]}"#,
    )
    .expect("write");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |script: &str| {
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(&m.dir)
            .env("PATH", &path)
            .output()
            .expect("bash")
    };
    let o = run("cp ../hello.json .macros/hello && ls .macros && head -1 .macros/hello && test -x .macros/hello");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out, "hello\n#!/usr/bin/env sopfs-macro\n");
    // An invalid macro: close fails with EINVAL, nothing installed.
    let o = run("cp ../bad.json .macros/bad");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Invalid argument"));
    assert_eq!(
        String::from_utf8_lossy(&run("ls .macros").stdout),
        "hello\n"
    );
    // Run it from the shell.
    let o = run("./.macros/hello sopfs && .macros/hello && cat greetings");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "hello sopfs\nhello world\nhello sopfs\nhello world\n"
    );
    let o = run(".macros/hello a b c");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("too many arguments"));
    // A job written as a file, run by an agent in another process.
    let o = run("echo 'hello jobs' > .jobs/new && ls .jobs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(id.lines().count(), 1, "{id}");
    assert_eq!(
        String::from_utf8_lossy(&run(&format!("cat .jobs/{id}/status")).stdout),
        "pending\n"
    );
    let agent = Command::new(sopfs_bin())
        .args([
            "agent",
            "--store",
            store_s,
            "--redis",
            &redis.url(),
            "--idle-exit",
            "2",
        ])
        .status()
        .expect("agent");
    assert!(agent.success());
    let o = run(&format!(
        "cat .jobs/{id}/status .jobs/{id}/result; ls .jobs/{id}"
    ));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "done\nhello jobs\nresult\nstatus\n"
    );
    // rm removes a macro.
    assert!(run("rm .macros/hello && test ! -e .macros/hello")
        .status
        .success());
}

#[test]
fn one_macro_run_from_two_mounts_at_once() {
    let bin = runner_dir();
    let t = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start();
    let store = t.path().join("store");
    let store_s = store.to_str().expect("utf8");
    let a = Mount::start(store_s, t.path(), "a", Some(&redis.url()));
    let b = Mount::start(store_s, t.path(), "b", Some(&redis.url()));
    std::fs::write(
        a.path(".macros/stamp"),
        r#"{"format":1,"name":"stamp","params":[{"name":"who"},{"name":"i"}],"steps":[
            {"op":"mkdir","path":"/stamps/${who}","parents":true},
            {"op":"write","path":"/stamps/${who}/${i}","content":"${i}"},
            {"op":"append","path":"/stamps.log","content":"${who} ${i}\n"}]}"#,
    )
    .expect("install from a");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let spawn = |m: &Mount, who: &str| {
        Command::new("bash")
            .arg("-c")
            .arg(format!(
                "for i in $(seq 1 25); do .macros/stamp {who} $i >/dev/null || exit 1; done"
            ))
            .current_dir(&m.dir)
            .env("PATH", &path)
            .spawn()
            .expect("runner")
    };
    // b sees the macro a installed as soon as it committed.
    let (mut pa, mut pb) = (spawn(&a, "a"), spawn(&b, "b"));
    assert!(pa.wait().expect("a").success());
    assert!(pb.wait().expect("b").success());
    for m in [&a, &b] {
        let log = std::fs::read_to_string(m.path("stamps.log")).expect("log");
        assert_eq!(log.lines().count(), 50, "{log}");
        for who in ["a", "b"] {
            let n = std::fs::read_dir(m.path(&format!("stamps/{who}")))
                .expect("dir")
                .count();
            assert_eq!(n, 25);
        }
    }
}
