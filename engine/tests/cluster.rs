//! Cluster mode: separate OS processes share one store, coordinated only
//! through a private redis-server. Each worker is this test binary re-run.

mod common;

use common::{small_tree, RedisServer};
use engine::{Db, Error, Options, RedisCoordinator, StoreLocation, TxMode};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WORKER_ENV: &str = "SOPFS_CLUSTER_WORKER";

fn opts() -> Options {
    Options {
        background_interval: None,
        lock_ttl: Duration::from_millis(
            std::env::var("SOPFS_TEST_LOCK_TTL_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(30_000),
        ),
        tx_timeout: Duration::from_secs(
            std::env::var("SOPFS_TEST_TX_TIMEOUT_S")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(60),
        ),
        ..Options::default()
    }
}

fn open(store: &Path, redis: &str) -> Db {
    let coord = Arc::new(RedisCoordinator::connect(redis).expect("redis"));
    Db::open_shared(StoreLocation::Local(store.to_path_buf()), opts(), coord).expect("open shared")
}

fn read_counter(db: &Db) -> u64 {
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    tx.get("t", b"counter")
        .expect("get")
        .map_or(0, |v| u64::from_le_bytes(v.try_into().expect("8 bytes")))
}

fn increment(tx: &mut engine::Transaction) -> engine::Result<u64> {
    let n = match tx.get("t", b"counter")? {
        Some(v) => u64::from_le_bytes(v.try_into().map_err(|_| Error::KeyNotFound)?),
        None => 0,
    };
    tx.upsert("t", b"counter", &(n + 1).to_le_bytes())?;
    Ok(n + 1)
}

/// Worker entry point: a no-op unless a cluster test started this process.
#[test]
fn worker_process_entry() {
    let Ok(spec) = std::env::var(WORKER_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split(',').collect();
    let (mode, store, redis, id, count) = (
        parts[0],
        Path::new(parts[1]),
        parts[2],
        parts[3],
        parts[4].parse::<u64>().expect("count"),
    );
    let db = open(store, redis);
    let out = std::io::stdout();
    for i in 0..count {
        let ack = match mode {
            "insert" => {
                let key = format!("{i:06}-{id}");
                db.run(|tx| tx.insert("t", key.as_bytes(), id.as_bytes()))
                    .expect("insert");
                i + 1
            }
            "incr" => db.run(increment).expect("increment"),
            "both" => {
                let key = format!("{i:06}-{id}");
                db.run(|tx| {
                    tx.insert("t", key.as_bytes(), id.as_bytes())?;
                    increment(tx)
                })
                .expect("insert+increment");
                i + 1
            }
            "hold" => {
                // One multi-key commit, paused at its commit point by the hook.
                db.run(|tx| {
                    for k in 0..20 {
                        tx.upsert("t", format!("held-{k:02}").as_bytes(), b"h")?;
                    }
                    increment(tx)
                })
                .expect("held commit");
                i + 1
            }
            other => panic!("unknown worker mode {other}"),
        };
        use std::io::Write;
        let mut o = out.lock();
        let _ = writeln!(o, "ACK {ack}");
        let _ = o.flush();
    }
    let s = db.stats();
    println!(
        "STATS commits={} merges={} conflicts={} collisions={} retries={}",
        s.commits, s.merges, s.conflicts, s.collisions, s.retries
    );
}

fn spawn(
    mode: &str,
    store: &Path,
    redis: &str,
    id: usize,
    count: u64,
    env: &[(&str, String)],
) -> Child {
    let mut cmd = Command::new(std::env::current_exe().expect("exe"));
    cmd.args([
        "--exact",
        "worker_process_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(
        WORKER_ENV,
        format!("{mode},{},{redis},{id},{count}", store.display()),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn worker")
}

/// Waits for a worker; returns its STATS line's numbers by name, and its acks.
fn finish(child: Child) -> (std::collections::HashMap<String, u64>, Vec<u64>) {
    let out = child.wait_with_output().expect("worker");
    assert!(out.status.success(), "worker failed: {:?}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut stats = std::collections::HashMap::new();
    let mut acks = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.rsplit_once("STATS ").map(|(_, r)| r) {
            for kv in rest.split(' ') {
                if let Some((k, v)) = kv.split_once('=') {
                    stats.insert(k.to_string(), v.parse().unwrap_or(0));
                }
            }
        } else if let Some(n) = line.rsplit_once("ACK ").map(|(_, n)| n) {
            acks.push(n.parse().expect("ack"));
        }
    }
    (stats, acks)
}

fn seed(store: &Path, redis: &str) -> Db {
    let db = open(store, redis);
    // First-commit rule: the tree's root exists before the swarm arrives.
    db.run(|tx| tx.ensure_tree("t", small_tree(16)))
        .expect("seed");
    db
}

#[test]
fn four_processes_insert_two_thousand_keys_each_into_one_tree() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = seed(dir.path(), &redis.url());
    let workers: Vec<_> = (0..4)
        .map(|w| spawn("insert", dir.path(), &redis.url(), w, 2000, &[]))
        .collect();
    let mut merges = 0;
    let mut collisions = 0;
    for w in workers {
        let (s, acks) = finish(w);
        assert_eq!(acks.len(), 2000);
        merges += s["merges"];
        collisions += s["collisions"];
    }
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    assert_eq!(tx.count("t").expect("count"), 8000);
    assert_eq!(tx.check_tree("t").expect("structure"), 8000);
    for w in 0..4 {
        for i in (0..2000).step_by(50) {
            assert_eq!(
                tx.get("t", format!("{i:06}-{w}").as_bytes()).expect("get"),
                Some(w.to_string().into_bytes())
            );
        }
    }
    eprintln!("4 processes x 2000 inserts: {merges} merges, {collisions} log-slot collisions");
    assert!(
        merges > 0,
        "interleaved keys share leaves: merges must happen"
    );
}

#[test]
fn four_processes_increment_one_counter_three_hundred_times_each() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = seed(dir.path(), &redis.url());
    let workers: Vec<_> = (0..4)
        .map(|w| spawn("incr", dir.path(), &redis.url(), w, 300, &[]))
        .collect();
    let mut conflicts = 0;
    for w in workers {
        conflicts += finish(w).0["conflicts"];
    }
    assert_eq!(read_counter(&db), 1200);
    eprintln!("4 processes x 300 increments: {conflicts} conflicts retried");
}

fn killed_while_holding_locks(when: &str) {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = seed(dir.path(), &redis.url());
    let flag = dir.path().join("paused");
    let env = [
        (
            "SOPFS_TEST_PAUSE_COMMIT",
            format!("{when}:600:{}", flag.display()),
        ),
        ("SOPFS_TEST_LOCK_TTL_MS", "1500".to_string()),
        ("SOPFS_TEST_TX_TIMEOUT_S", "3".to_string()),
    ];
    let mut holder = spawn("hold", dir.path(), &redis.url(), 9, 1, &env);
    let t = Instant::now();
    while !flag.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "holder never reached its commit point"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // SIGKILL while it holds its locks, then let others write the same nodes.
    holder.kill().expect("SIGKILL");
    holder.wait().expect("reap");
    let started = Instant::now();
    let others: Vec<_> = (0..2)
        .map(|w| spawn("both", dir.path(), &redis.url(), w, 50, &[]))
        .collect();
    for w in others {
        assert_eq!(
            finish(w).1.len(),
            50,
            "the others must go on after the lock TTL"
        );
    }
    eprintln!(
        "others finished {:?} after the kill ({when} the commit point)",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_secs(6)); // past the holder's deadline + grace
    let (done, undone) = db.recover().expect("recover");
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    let held: Vec<bool> = (0..20)
        .map(|k| {
            tx.get("t", format!("held-{k:02}").as_bytes())
                .expect("get")
                .is_some()
        })
        .collect();
    let counter = read_counter(&db);
    match when {
        "before" => {
            assert!(
                held.iter().all(|h| !h),
                "killed before its commit point: nothing may show"
            );
            assert_eq!(counter, 100);
            assert_eq!((done, undone), (0, 1), "its intent is rolled back");
        }
        _ => {
            assert!(
                held.iter().all(|h| *h),
                "killed after its commit point: all must show"
            );
            assert_eq!(counter, 101);
            assert_eq!((done, undone), (1, 0), "its intent is found committed");
        }
    }
    tx.check_tree("t").expect("structure");
    assert_eq!(
        std::fs::read_dir(dir.path().join("intents"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
}

#[test]
fn a_process_killed_before_its_commit_point_leaves_nothing() {
    killed_while_holding_locks("before");
}

#[test]
fn a_process_killed_after_its_commit_point_leaves_everything() {
    killed_while_holding_locks("after");
}

#[test]
fn redis_killed_and_restarted_mid_run_loses_nothing() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = seed(dir.path(), &redis.url());
    let mut workers: Vec<_> = (0..3)
        .map(|w| spawn("both", dir.path(), &redis.url(), w, 400, &[]))
        .collect();
    // Watch one worker's acks; restart Redis twice while they run.
    let stdout = workers[0].stdout.take().expect("stdout");
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(400));
        redis.kill();
        std::thread::sleep(Duration::from_millis(300));
        redis.restart();
    }
    let mut total = 0;
    for (i, w) in workers.into_iter().enumerate() {
        let out = w.wait_with_output().expect("worker");
        assert!(out.status.success(), "worker {i} failed");
        total += 400;
    }
    let acks = lines
        .join()
        .expect("lines")
        .iter()
        .filter(|l| l.contains("ACK "))
        .count();
    assert_eq!(acks, 400);
    assert_eq!(read_counter(&db), total);
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    assert_eq!(tx.count("t").expect("count"), total + 1);
}

#[test]
fn a_reader_in_another_process_sees_each_commit_as_soon_as_it_returns() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let reader = seed(dir.path(), &redis.url());
    // Warm the reader's caches so a stale cache would show.
    assert_eq!(read_counter(&reader), 0);
    let mut writer = spawn("incr", dir.path(), &redis.url(), 0, 200, &[]);
    let stdout = writer.stdout.take().expect("stdout");
    let mut seen = 0;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(n) = line.rsplit_once("ACK ").map(|(_, n)| n) {
            let n: u64 = n.parse().expect("ack");
            let c = read_counter(&reader);
            assert!(c >= n, "stale read: commit {n} returned, reader saw {c}");
            seen += 1;
        }
    }
    writer.wait().expect("writer");
    assert_eq!(seen, 200);
}
