//! Two daemons (two mount points, as two hosts would have) on one store with
//! a private redis-server: concurrent creates, close-to-open, appends.

mod common;
use common::*;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

/// The two-daemon tests run one at a time: each starts two daemons and a
/// redis-server, and together they starve a 2-core machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn two_mounts() -> (tempfile::TempDir, RedisServer, Mount, Mount) {
    let t = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start();
    let store = t.path().join("store");
    let store = store.to_str().expect("utf8");
    let a = Mount::start(store, t.path(), "a", Some(&redis.url()));
    let b = Mount::start(store, t.path(), "b", Some(&redis.url()));
    (t, redis, a, b)
}

/// Creates `n` files named `prefix-i` in `dir` from a separate process.
fn creator(dir: &std::path::Path, prefix: &str, n: u32) -> std::process::Child {
    Command::new("bash")
        .arg("-c")
        .arg(format!(
            "cd '{}' && for i in $(seq 1 {n}); do : > {prefix}-$i || exit 1; done",
            dir.display()
        ))
        .spawn()
        .expect("creator")
}

#[test]
fn creates_from_two_hosts_into_one_directory_all_land() {
    let _one = serial();
    let (_t, _redis, a, b) = two_mounts();
    std::fs::create_dir(a.path("shared")).expect("mkdir");
    let mut pa = creator(&a.path("shared"), "a", 2000);
    let mut pb = creator(&b.path("shared"), "b", 2000);
    assert!(pa.wait().expect("wait").success(), "creates on a failed");
    assert!(pb.wait().expect("wait").success(), "creates on b failed");
    for m in [&a, &b] {
        let names: std::collections::BTreeSet<String> = std::fs::read_dir(m.path("shared"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 4000, "on {}", m.dir.display());
        for i in 1..=2000 {
            assert!(names.contains(&format!("a-{i}")) && names.contains(&format!("b-{i}")));
        }
    }
    // Both hosts changed the directory; its link count and entries agree.
    let out = sh(&a.dir, "stat -c %h shared; ls shared | wc -l");
    let out_b = sh(&b.dir, "stat -c %h shared; ls shared | wc -l");
    assert_eq!(out, out_b);
}

#[test]
fn close_to_open_sees_the_other_hosts_content() {
    let _one = serial();
    let (_t, _redis, a, b) = two_mounts();
    for round in 0..50u32 {
        let body = format!("round {round} {}", "x".repeat(round as usize * 97));
        std::fs::write(a.path("f"), &body).expect("write on a");
        // b may have the old attributes and pages cached from the last round.
        let seen = std::fs::read_to_string(b.path("f")).expect("read on b");
        assert_eq!(seen, body, "round {round}");
        let back = format!("back {round}");
        std::fs::write(b.path("g"), &back).expect("write on b");
        assert_eq!(
            std::fs::read_to_string(a.path("g")).expect("read on a"),
            back
        );
    }
    std::fs::remove_file(a.path("g")).expect("rm on a");
    std::fs::write(a.path("h"), "new").expect("create on a");
    assert!(!b.path("g").exists(), "b still sees a removed name");
    assert_eq!(std::fs::read_to_string(b.path("h")).expect("h on b"), "new");
}

#[test]
fn appends_from_two_hosts_all_land() {
    let _one = serial();
    let (_t, _redis, a, b) = two_mounts();
    std::fs::write(a.path("log"), "").expect("create");
    let writer = |m: &Mount, tag: &'static str| {
        let path = m.path("log");
        std::thread::spawn(move || {
            for i in 0..300 {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .expect("open append");
                writeln!(f, "{tag} line {i:04}").expect("append");
            }
        })
    };
    let (wa, wb) = (writer(&a, "a"), writer(&b, "b"));
    wa.join().expect("writer a");
    wb.join().expect("writer b");
    for m in [&a, &b] {
        let text = std::fs::read_to_string(m.path("log")).expect("read log");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 600, "on {}", m.dir.display());
        for tag in ["a", "b"] {
            let mine: Vec<&&str> = lines.iter().filter(|l| l.starts_with(tag)).collect();
            assert_eq!(mine.len(), 300);
            // Each host's lines keep their order.
            for (i, l) in mine.iter().enumerate() {
                assert_eq!(**l, format!("{tag} line {i:04}"));
            }
        }
    }
}

#[test]
fn second_embedded_daemon_on_one_store_is_refused() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = t.path().join("store");
    let store = store.to_str().expect("utf8");
    let _a = Mount::start(store, t.path(), "a", None);
    std::fs::create_dir(t.path().join("b")).expect("mp");
    let out = Command::new(sopfs_bin())
        .args(["mount", store])
        .arg(t.path().join("b"))
        .output()
        .expect("second mount");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!is_mounted(&t.path().join("b")));
}

#[test]
fn tar_extracted_on_one_host_shows_its_times_and_modes_on_the_other() {
    let _one = serial();
    let (t, _redis, a, b) = two_mounts();
    let src = t.path().join("src");
    std::fs::create_dir(&src).expect("src");
    sh(
        &src,
        r#"
        for i in $(seq 1 30); do head -c $((i * 1500)) /dev/urandom > f$i; done
        chmod 0751 f1 && chmod 0600 f2 && chmod 4755 f3
        touch -d '2001-02-03 04:05:06' f4
        "#,
    );
    // tar writes each file, then sets its times, owner and mode, then
    // closes it: all of that must reach the other host with the content.
    let listing = "stat -c '%n %a %u %g %s %Y' f* | sort; md5sum f* | sort";
    sh(
        &a.dir,
        &format!("tar -C {} -cf - . | tar -xpf - --same-owner", src.display()),
    );
    let want = sh(&src, listing);
    assert_eq!(sh(&a.dir, listing), want, "on the extracting host");
    assert_eq!(sh(&b.dir, listing), want, "on the other host");
}

#[test]
fn two_mounts_through_sentinel_keep_working_across_a_failover() {
    let _one = serial();
    let t = tempfile::tempdir().expect("tempdir");
    let mut set = test_support::SentinelSet::start("pw");
    let store = t.path().join("store");
    let store = store.to_str().expect("utf8");
    let a = Mount::start(store, t.path(), "a", Some(&set.url()));
    let b = Mount::start(store, t.path(), "b", Some(&set.url()));
    std::fs::write(a.path("before"), "1").expect("write on a");
    assert_eq!(
        std::fs::read_to_string(b.path("before")).expect("read on b"),
        "1"
    );
    set.fail_over();
    // Both keep serving through the promoted replica, and each sees the
    // other's writes made after the failover.
    std::fs::write(a.path("after-a"), "a").expect("write on a after the failover");
    std::fs::write(b.path("after-b"), "b").expect("write on b after the failover");
    assert_eq!(
        std::fs::read_to_string(b.path("after-a")).expect("read on b"),
        "a"
    );
    assert_eq!(
        std::fs::read_to_string(a.path("after-b")).expect("read on a"),
        "b"
    );
    assert_eq!(
        std::fs::read_to_string(b.path("before")).expect("read on b"),
        "1"
    );
}

/// Copies of commit records kept in the Redis at `port`.
fn record_copies_in(port: u16) -> usize {
    let out = Command::new("redis-cli")
        .args([
            "-p",
            &port.to_string(),
            "--scan",
            "--pattern",
            "sopfs:*rec:*",
        ])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn mounts_on_s3_with_no_record_copies_keep_none_in_redis_and_see_each_other() {
    let _one = serial();
    moto();
    let redis = RedisServer::start();
    let store = format!("s3://{S3_BUCKET}/nocopies{:016x}", rand::random::<u64>());
    let t = tempfile::tempdir().expect("tempdir");
    let dirs: Vec<_> = ["a", "b", "c"].iter().map(|n| t.path().join(n)).collect();
    for d in &dirs {
        std::fs::create_dir(d).expect("mount point");
    }
    let opts = ["no_record_copies"];
    let mut a = Mount::start_at(&store, &dirs[0], Some(&redis.url()), &opts);
    let mut b = Mount::start_at(&store, &dirs[1], Some(&redis.url()), &opts);
    for i in 0..10 {
        std::fs::write(a.path(&format!("a{i}")), format!("from a {i}")).expect("a");
        std::fs::write(b.path(&format!("b{i}")), format!("from b {i}")).expect("b");
    }
    for i in 0..10 {
        assert_eq!(
            std::fs::read_to_string(b.path(&format!("a{i}"))).expect("b reads a"),
            format!("from a {i}")
        );
        assert_eq!(
            std::fs::read_to_string(a.path(&format!("b{i}"))).expect("a reads b"),
            format!("from b {i}")
        );
    }
    assert_eq!(record_copies_in(redis.port), 0, "copies with the option");
    // A mount without the option keeps copies; the others still see it.
    let mut c = Mount::start_at(&store, &dirs[2], Some(&redis.url()), &[]);
    std::fs::write(c.path("c0"), "from c").expect("c");
    assert!(
        record_copies_in(redis.port) > 0,
        "no copies without the option"
    );
    assert_eq!(
        std::fs::read_to_string(a.path("c0")).expect("a reads c"),
        "from c"
    );
    for m in [&mut a, &mut b, &mut c] {
        m.unmount();
    }
}

/// The counter `name` in a mount's `/.sopfs/stats`.
fn stat_counter(m: &Mount, name: &str) -> u64 {
    let text = std::fs::read_to_string(m.path(".sopfs/stats")).expect("stats");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Three mounts ("a", "b", "c") of a fresh volume on moto with one Redis,
/// folder `folder` made from the first; the store's URL for more.
fn three_mounts_on_s3(
    name: &str,
    folder: &str,
) -> (tempfile::TempDir, RedisServer, String, Vec<Mount>) {
    moto();
    let redis = RedisServer::start();
    let store = format!("s3://{S3_BUCKET}/{name}{:016x}", rand::random::<u64>());
    let t = tempfile::tempdir().expect("tempdir");
    let mounts: Vec<Mount> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            let d = t.path().join(n);
            std::fs::create_dir(&d).expect("mount point");
            Mount::start_at(&store, &d, Some(&redis.url()), &[])
        })
        .collect();
    std::fs::create_dir(mounts[0].path(folder)).expect("mkdir");
    (t, redis, store, mounts)
}

/// Runs the bash `script(host)` in `folder` of every mount at once (hosts
/// "a", "b", "c"), and waits for each to succeed.
fn on_each_mount(mounts: &[Mount], folder: &str, script: impl Fn(&str) -> String) {
    let writers: Vec<_> = mounts
        .iter()
        .zip(["a", "b", "c"])
        .map(|(m, h)| {
            Command::new("bash")
                .arg("-c")
                .arg(format!(
                    "cd '{}' && {}",
                    m.path(folder).display(),
                    script(h)
                ))
                .spawn()
                .expect("writer")
        })
        .collect();
    for mut w in writers {
        assert!(w.wait().expect("wait").success(), "a writer failed");
    }
}

/// Counter `name` summed over `mounts`.
fn counter_sum(mounts: &[Mount], name: &str) -> u64 {
    mounts.iter().map(|m| stat_counter(m, name)).sum()
}

#[test]
fn files_written_from_three_hosts_on_s3_into_one_directory_stand_melded_and_whole() {
    // On S3 with Redis each file's record goes ahead of the log's end; the
    // hosts' records change the same leaves of the directory (entries and
    // the hosts' stamps) and of the inode table, and stand melded, not void.
    let _one = serial();
    let (t, redis, store, mut mounts) = three_mounts_on_s3("meld", "shared");
    const EACH: u32 = 60;
    on_each_mount(&mounts, "shared", |h| {
        format!("for i in $(seq 1 {EACH}); do echo {h}-$i-$(printf '%0400d' $i) > {h}-$i || exit 1; done")
    });
    for m in &mounts {
        for h in ["a", "b", "c"] {
            for i in 1..=EACH {
                let got = std::fs::read_to_string(m.path(&format!("shared/{h}-{i}")))
                    .unwrap_or_else(|e| panic!("{h}-{i} on {}: {e}", m.dir.display()));
                assert_eq!(got, format!("{h}-{i}-{i:0400}\n"), "{h}-{i}");
            }
        }
        let n = std::fs::read_dir(m.path("shared")).expect("ls").count();
        assert_eq!(n, 3 * EACH as usize, "entries on {}", m.dir.display());
    }
    let melds: Vec<u64> = mounts
        .iter()
        .map(|m| stat_counter(m, "sopfs_records_melded_total"))
        .collect();
    let void = counter_sum(&mounts, "sopfs_commits_ahead_void_total");
    eprintln!("melds folded per mount {melds:?}, {void} void");
    assert!(melds.iter().any(|&m| m > 0), "no record was melded");
    // A mount that opens now makes the melded nodes again from the log.
    let late_dir = t.path().join("late");
    std::fs::create_dir(&late_dir).expect("mount point");
    let mut late = Mount::start_at(&store, &late_dir, Some(&redis.url()), &[]);
    for h in ["a", "b", "c"] {
        for i in (1..=EACH).step_by(7) {
            let got =
                std::fs::read_to_string(late.path(&format!("shared/{h}-{i}"))).expect("late read");
            assert_eq!(got, format!("{h}-{i}-{i:0400}\n"));
        }
    }
    late.unmount();
    for m in &mut mounts {
        m.unmount();
    }
}

#[test]
fn folders_made_and_removed_from_three_hosts_on_s3_in_one_parent_stand_melded() {
    // Each mkdir creates a tree (the folder's entries) and changes the
    // catalog's leaf that every other host's mkdir changes too, and the
    // parent's leaves: placed ahead, those records stand melded (the
    // folder's tree made again from its catalog key) instead of being void
    // and going through the queue one at a time; so do the rmdirs.
    let _one = serial();
    let (_t, _redis, _store, mut mounts) = three_mounts_on_s3("mkdirs", "parent");
    const EACH: u32 = 40;
    on_each_mount(&mounts, "parent", |h| {
        format!(
            "for i in $(seq 1 {EACH}); do mkdir {h}-$i && echo {h}-$i > {h}-$i/f || exit 1; \
             if (( i % 3 == 0 )); then rm {h}-$i/f && rmdir {h}-$i || exit 1; fi; done"
        )
    });
    let kept = |i: u32| !i.is_multiple_of(3);
    let subdirs = 3 * (1..=EACH).filter(|&i| kept(i)).count();
    for m in &mounts {
        for h in ["a", "b", "c"] {
            for i in 1..=EACH {
                let f = m.path(&format!("parent/{h}-{i}/f"));
                match std::fs::read_to_string(&f) {
                    Ok(got) if kept(i) => assert_eq!(got, format!("{h}-{i}\n")),
                    Err(e) if !kept(i) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
                    other => panic!("{h}-{i} on {}: {other:?}", m.dir.display()),
                }
            }
        }
        let n = std::fs::read_dir(m.path("parent")).expect("ls").count();
        assert_eq!(n, subdirs, "folders on {}", m.dir.display());
        let links = std::fs::metadata(m.path("parent")).expect("stat").nlink();
        assert_eq!(
            links,
            2 + subdirs as u64,
            "links of the parent on {}",
            m.dir.display()
        );
    }
    let melds: Vec<u64> = mounts
        .iter()
        .map(|m| stat_counter(m, "sopfs_records_melded_total"))
        .collect();
    let void = counter_sum(&mounts, "sopfs_commits_ahead_void_total");
    let queued = counter_sum(&mounts, "sopfs_commits_queued_total");
    eprintln!("melds folded per mount {melds:?}, {void} void, {queued} queued");
    assert!(melds.iter().any(|&m| m > 0), "no record was melded");
    // Before folders' records were melded: ~50 void and ~200 queued here.
    assert!(void <= 3, "{void} records of distinct folders were void");
    for m in &mut mounts {
        m.unmount();
    }
}
