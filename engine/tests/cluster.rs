//! Cluster mode: separate OS processes share one store, coordinated only
//! through a private redis-server. Each worker is this test binary re-run.

mod common;

use common::{small_tree, RedisServer};
use engine::{Db, Error, Options, RedisCoordinator, StoreLocation, TxMode};
use std::io::{BufRead, BufReader};
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
        segment_bytes: std::env::var("SOPFS_TEST_SEGMENT_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(Options::default().segment_bytes),
        ..Options::default()
    }
}

fn open(store: &str, redis: &str) -> Db {
    let coord = Arc::new(RedisCoordinator::connect(redis).expect("redis"));
    let location = StoreLocation::parse(store).expect("location");
    Db::open_shared(location, opts(), coord).expect("open shared")
}

/// A volume for one test: a temp folder, or a fresh prefix in the S3 server.
struct Vol {
    location: String,
    dir: tempfile::TempDir,
}

impl Vol {
    fn new(kind: &str) -> Vol {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = match kind {
            "s3" => {
                common::moto();
                format!("s3://{}/t{:016x}", common::S3_BUCKET, rand::random::<u64>())
            }
            _ => dir.path().join("vol").display().to_string(),
        };
        Vol { location, dir }
    }

    /// Intent records left in the store.
    fn intents_left(&self) -> usize {
        let loc = StoreLocation::parse(&self.location).expect("location");
        let store = engine::BlobStore::open(&loc).expect("store");
        store.list("intents").expect("list intents").len()
    }
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(#[test] fn $name() { super::$name("local") })*
        }
        mod s3 {
            $(#[test] fn $name() { super::$name("s3") })*
        }
    };
}

on_both_stores!(
    four_processes_insert_two_thousand_keys_each_into_one_tree,
    four_processes_increment_one_counter_three_hundred_times_each,
    a_process_killed_before_its_commit_point_leaves_nothing,
    a_process_killed_after_its_commit_point_leaves_everything,
    redis_killed_and_restarted_mid_run_loses_nothing,
    a_reader_in_another_process_sees_each_commit_as_soon_as_it_returns,
);

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
        parts[1],
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
            "both-big" => {
                // As "both", plus a value too big to travel in the record:
                // the commit writes a blob, so it takes scent locks (and
                // meets any expired ones).
                let key = format!("{i:06}-{id}");
                db.run(|tx| {
                    tx.insert("t", key.as_bytes(), id.as_bytes())?;
                    tx.upsert("t", format!("big-{id}").as_bytes(), &[5u8; 300_000])?;
                    increment(tx)
                })
                .expect("insert+big+increment");
                i + 1
            }
            "hold" => {
                // One multi-key commit, paused at its commit point by the hook.
                db.run(|tx| {
                    for k in 0..20 {
                        tx.upsert("t", format!("held-{k:02}").as_bytes(), b"h")?;
                    }
                    // A value blob of its own (too big to travel in the
                    // record), so the commit takes locks and writes an
                    // intent (one with nothing but nodes needs neither).
                    tx.upsert("t", b"held-blob", &[7u8; 300_000])?;
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
        "STATS commits={} merges={} conflicts={} collisions={} retries={} melds={}",
        s.commits, s.merges, s.conflicts, s.collisions, s.retries, s.melds
    );
}

fn spawn(
    mode: &str,
    store: &str,
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
    .env(WORKER_ENV, format!("{mode},{store},{redis},{id},{count}"))
    .stdout(Stdio::piped())
    .stderr(worker_log(id));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn worker")
}

fn worker_log_path(id: usize) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("sopfs-worker-{}-{id}.log", std::process::id()))
}

/// Where a worker's stderr goes, so a failure can show why.
fn worker_log(id: usize) -> Stdio {
    std::fs::File::create(worker_log_path(id)).map_or(Stdio::null(), Stdio::from)
}

/// The last error lines of a worker's log.
fn worker_log_tail(id: usize) -> String {
    let path = worker_log_path(id);
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("panicked") || l.contains("Error") || l.contains("error"))
        .collect();
    lines[lines.len().saturating_sub(4)..].join("\n")
}

/// Operations per worker: the full count on a local folder, a tenth on S3
/// (the moto server answers a few hundred requests a second).
fn scaled(kind: &str, n: u64) -> u64 {
    if kind == "s3" {
        (n / 10).max(10)
    } else {
        n
    }
}

/// Waits for a worker; returns its STATS line's numbers by name, and its acks.
fn finish(child: Child, id: usize) -> (std::collections::HashMap<String, u64>, Vec<u64>) {
    let out = child.wait_with_output().expect("worker");
    let tail = worker_log_tail(id);
    assert!(
        out.status.success(),
        "worker {id} failed: {:?}: {tail}",
        out.status,
    );
    // A failed worker's log stays for a look.
    let _ = std::fs::remove_file(worker_log_path(id));
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

fn seed(store: &str, redis: &str) -> Db {
    let db = open(store, redis);
    // First-commit rule: the tree's root exists before the swarm arrives.
    db.run(|tx| tx.ensure_tree("t", small_tree(16)))
        .expect("seed");
    db
}

fn four_processes_insert_two_thousand_keys_each_into_one_tree(kind: &str) {
    let redis = RedisServer::start();
    let vol = Vol::new(kind);
    let db = seed(&vol.location, &redis.url());
    let n = scaled(kind, 2000);
    let workers: Vec<_> = (0..4)
        .map(|w| spawn("insert", &vol.location, &redis.url(), w, n, &[]))
        .collect();
    let (mut merges, mut collisions, mut melds) = (0, 0, 0);
    for (id, w) in workers.into_iter().enumerate() {
        let (s, acks) = finish(w, id);
        assert_eq!(acks.len() as u64, n);
        merges += s["merges"];
        collisions += s["collisions"];
        melds += s["melds"];
    }
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    assert_eq!(tx.count("t").expect("count"), 4 * n);
    assert_eq!(tx.check_tree("t").expect("structure"), 4 * n);
    for w in 0..4 {
        for i in (0..n).step_by(7) {
            assert_eq!(
                tx.get("t", format!("{i:06}-{w}").as_bytes()).expect("get"),
                Some(w.to_string().into_bytes())
            );
        }
    }
    eprintln!(
        "{kind}: 4 processes x {n} inserts: {merges} merges, {collisions} log-slot collisions, \
         {melds} records folded melded"
    );
    // A writer merges its commit onto the records before it; on S3 with
    // Redis a record placed ahead is melded by its readers instead.
    assert!(
        merges + melds > 0,
        "interleaved keys share leaves: merges or melds must happen"
    );
}

fn four_processes_increment_one_counter_three_hundred_times_each(kind: &str) {
    let redis = RedisServer::start();
    let vol = Vol::new(kind);
    let db = seed(&vol.location, &redis.url());
    let n = scaled(kind, 300);
    let workers: Vec<_> = (0..4)
        .map(|w| spawn("incr", &vol.location, &redis.url(), w, n, &[]))
        .collect();
    let mut conflicts = 0;
    for (id, w) in workers.into_iter().enumerate() {
        conflicts += finish(w, id).0["conflicts"];
    }
    assert_eq!(read_counter(&db), 4 * n);
    eprintln!("{kind}: 4 processes x {n} increments: {conflicts} conflicts retried");
}

fn killed_while_holding_locks(kind: &str, when: &str) {
    let redis = RedisServer::start();
    let vol = Vol::new(kind);
    let db = seed(&vol.location, &redis.url());
    let flag = vol.dir.path().join("paused");
    let env = [
        (
            "SOPFS_TEST_PAUSE_COMMIT",
            format!("{when}:600:{}", flag.display()),
        ),
        // Its deadline (1 s) plus the 2 s grace passes before its locks
        // expire (4 s): whoever takes them over finds the commit dead.
        ("SOPFS_TEST_LOCK_TTL_MS", "4000".to_string()),
        ("SOPFS_TEST_TX_TIMEOUT_S", "1".to_string()),
    ];
    let mut holder = spawn("hold", &vol.location, &redis.url(), 9, 1, &env);
    let t = Instant::now();
    while !flag.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "holder never reached its commit point"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(vol.intents_left(), 1, "the paused commit's intent");
    // SIGKILL while it holds its locks, then let others write the same
    // nodes: one whose small commits take no locks (the dead locks must not
    // stop it), one whose commits write blobs and so take locks (it waits
    // out the TTL and recovers the dead commit).
    holder.kill().expect("SIGKILL");
    holder.wait().expect("reap");
    let _ = std::fs::remove_file(worker_log_path(9));
    let started = Instant::now();
    let others: Vec<_> = (0..2)
        .map(|w| {
            let mode = if w == 0 { "both" } else { "both-big" };
            spawn(mode, &vol.location, &redis.url(), w, 50, &[])
        })
        .collect();
    for (id, w) in others.into_iter().enumerate() {
        assert_eq!(
            finish(w, id).1.len(),
            50,
            "the others must go on after the lock TTL"
        );
    }
    eprintln!(
        "others finished {:?} after the kill ({when} the commit point)",
        started.elapsed()
    );
    // Meeting the expired locks already finished or rolled back the commit.
    assert_eq!(
        vol.intents_left(),
        0,
        "recovered when its expired locks were met"
    );
    assert_eq!(
        db.recover().expect("recover"),
        (0, 0),
        "nothing left to recover"
    );
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    let held: Vec<bool> = (0..20)
        .map(|k| {
            tx.get("t", format!("held-{k:02}").as_bytes())
                .expect("get")
                .is_some()
        })
        .collect();
    let counter = read_counter(&db);
    let blob = tx.get("t", b"held-blob").expect("get");
    assert_eq!(
        blob.is_some(),
        when != "before",
        "the held value follows its commit"
    );
    match when {
        "before" => {
            assert!(
                held.iter().all(|h| !h),
                "killed before its commit point: nothing may show"
            );
            assert_eq!(counter, 100);
        }
        _ => {
            assert!(
                held.iter().all(|h| *h),
                "killed after its commit point: all must show"
            );
            assert_eq!(counter, 101);
        }
    }
    tx.check_tree("t").expect("structure");
    assert_eq!(vol.intents_left(), 0);
}

fn a_process_killed_before_its_commit_point_leaves_nothing(kind: &str) {
    killed_while_holding_locks(kind, "before");
}

fn a_process_killed_after_its_commit_point_leaves_everything(kind: &str) {
    killed_while_holding_locks(kind, "after");
}

fn redis_killed_and_restarted_mid_run_loses_nothing(kind: &str) {
    let mut redis = RedisServer::start();
    let vol = Vol::new(kind);
    let db = seed(&vol.location, &redis.url());
    let n = scaled(kind, 400);
    let mut workers: Vec<_> = (0..3)
        .map(|w| spawn("both", &vol.location, &redis.url(), w, n, &[]))
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
        let tail = worker_log_tail(i);
        assert!(out.status.success(), "worker {i} failed: {tail}");
        let _ = std::fs::remove_file(worker_log_path(i));
        total += n;
    }
    let acks = lines
        .join()
        .expect("lines")
        .iter()
        .filter(|l| l.contains("ACK "))
        .count();
    assert_eq!(acks as u64, n);
    assert_eq!(read_counter(&db), total);
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    assert_eq!(tx.count("t").expect("count"), total + 1);
}

fn a_reader_in_another_process_sees_each_commit_as_soon_as_it_returns(kind: &str) {
    let redis = RedisServer::start();
    let vol = Vol::new(kind);
    let reader = seed(&vol.location, &redis.url());
    // Warm the reader's caches so a stale cache would show.
    assert_eq!(read_counter(&reader), 0);
    let n = scaled(kind, 200);
    let mut writer = spawn("incr", &vol.location, &redis.url(), 0, n, &[]);
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
    let status = writer.wait().expect("writer");
    assert!(status.success(), "writer failed: {}", worker_log_tail(0));
    let _ = std::fs::remove_file(worker_log_path(0));
    assert_eq!(seen, n);
}

#[test]
fn rediss_with_a_password_works_and_a_wrong_password_is_a_clear_error() {
    let server = RedisServer::tls("s3cret-pw").expect("openssl and a TLS-capable redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    // `#insecure`: the test certificate is self-signed.
    let good = format!("rediss://:s3cret-pw@127.0.0.1:{}/#insecure", server.port);
    let db = open(&dir.path().display().to_string(), &good);
    db.run(|tx| {
        tx.ensure_tree("t", small_tree(8))?;
        tx.upsert("t", b"k", b"over tls")
    })
    .expect("commit through a TLS coordinator");
    let bad = format!("rediss://:wrong-pw@127.0.0.1:{}/#insecure", server.port);
    let err = RedisCoordinator::connect(&bad)
        .err()
        .expect("wrong password refused");
    let msg = err.to_string();
    assert!(matches!(err, Error::Coordinator(_)), "{msg}");
    assert!(!msg.contains("wrong-pw"), "password leaked: {msg}");
    let plain = format!("redis://127.0.0.1:{}/", server.port);
    assert!(
        RedisCoordinator::connect(&plain).is_err(),
        "plain TCP to a TLS port must fail"
    );
}

#[test]
fn renewed_locks_outlive_their_ttl_and_lost_ones_refuse_renewal() {
    use engine::{ids::TxId, Coordinator};
    let redis = RedisServer::start();
    let c = RedisCoordinator::connect(&redis.url()).expect("connect");
    c.attach("renewtest").expect("attach");
    let (a, b) = (TxId(1), TxId(2));
    let ttl = Duration::from_millis(300);
    let soon = || Instant::now() + Duration::from_millis(50);
    c.lock(&[7, 8], a, ttl, soon()).expect("a locks");
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(150));
        c.renew(&[7, 8], a, ttl).expect("renew");
    }
    // 600 ms after taking a 300 ms lock, renewal kept it.
    assert!(matches!(
        c.lock(&[8], b, ttl, soon()),
        Err(Error::Timeout(_))
    ));
    std::thread::sleep(Duration::from_millis(400));
    let out = c
        .lock(&[8], b, ttl, soon())
        .expect("b takes the expired lock");
    assert_eq!(out.expired_owners, vec![a], "b learns a's lock expired");
    assert!(c.renew(&[7, 8], a, ttl).is_err(), "a lost key 8");
    c.unlock(&[7, 8], a);
    c.unlock(&[8], b);
}

/// With pushed stamps, a reader learns of another process's commit from the
/// stamp Redis pushes (no round trip per transaction); when the push channel
/// breaks (Redis restarted) it falls back to asking, and still sees commits.
#[test]
fn pushed_stamps_carry_commits_to_other_readers() {
    let mut redis = RedisServer::start();
    // S3: readers of a local folder ask the log instead of the stamp.
    let vol = Vol::new("s3");
    let writer = seed(&vol.location, &redis.url());
    let pushed = Options {
        pushed_stamps: true,
        ..opts()
    };
    let open_reader = |url: &str| {
        let coord = Arc::new(RedisCoordinator::connect(url).expect("redis"));
        let location = StoreLocation::parse(&vol.location).expect("location");
        Db::open_shared(location, pushed.clone(), coord).expect("open shared")
    };
    let reader = open_reader(&redis.url());
    let sees = |db: &Db, key: &str| {
        let t = Instant::now();
        loop {
            let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
            if tx.get("t", key.as_bytes()).expect("get").is_some() {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "{key} never became visible"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    for i in 0..20 {
        let key = format!("pushed-{i}");
        writer
            .run(|tx| tx.upsert("t", key.as_bytes(), b"v"))
            .expect("commit");
        let lag = sees(&reader, &key);
        assert!(lag < Duration::from_secs(1), "{key} took {lag:?}");
    }
    // The server goes away and comes back empty: the push channel is gone
    // until it resubscribes, and readers ask instead of trusting old news.
    redis.restart();
    writer
        .run(|tx| tx.upsert("t", b"after-restart", b"v"))
        .expect("commit after restart");
    sees(&reader, "after-restart");
}

/// Processes appending to one local folder's log are killed with SIGKILL at
/// random moments, one after another, round after round (small segments, so
/// kills also land while a segment is sealed and the next begun). Whoever
/// appends next must cut a frame a dead process tore, the others must go on,
/// and in the end every acknowledged commit is there, in a valid tree that
/// a fresh process opens.
#[test]
fn appenders_killed_at_random_moments_lose_no_acknowledged_commit() {
    use std::io::BufRead;
    use std::sync::atomic::{AtomicU64, Ordering};
    let redis = RedisServer::start();
    let vol = Vol::new("local");
    drop(seed(&vol.location, &redis.url()));
    let env = [("SOPFS_TEST_SEGMENT_BYTES", "16384".to_string())];
    /// A worker (and its id) killed however the test ends (a failed
    /// assertion must not leave it inserting for minutes), its log removed.
    struct Killed(Child, usize);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = std::fs::remove_file(worker_log_path(self.1));
        }
    }
    let mut acked: Vec<(usize, u64)> = Vec::new();
    for round in 0..10 {
        let workers: Vec<_> = (0..3)
            .map(|w| {
                let id = round * 3 + w;
                let mut child = spawn("insert", &vol.location, &redis.url(), id, 1_000_000, &env);
                let seen = Arc::new(AtomicU64::new(0));
                let stdout = child.stdout.take().expect("stdout");
                let counter = seen.clone();
                let reader = std::thread::spawn(move || {
                    for line in std::io::BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        if let Some(n) = line.rsplit_once("ACK ").map(|(_, n)| n) {
                            counter.store(n.parse().expect("ack"), Ordering::SeqCst);
                        }
                    }
                });
                (id, Killed(child, id), seen, reader)
            })
            .collect();
        let wait_for = |what: &str, ok: &dyn Fn() -> bool| {
            let t = Instant::now();
            while !ok() {
                assert!(t.elapsed() < Duration::from_secs(20), "{what}");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        for (id, _, seen, _) in &workers {
            wait_for(&format!("worker {id} never committed"), &|| {
                seen.load(Ordering::SeqCst) > 0
            });
        }
        std::thread::sleep(Duration::from_millis(50 + rand::random::<u64>() % 200));
        let counters: Vec<Arc<AtomicU64>> = workers.iter().map(|w| w.2.clone()).collect();
        for (k, (id, child, seen, reader)) in workers.into_iter().enumerate() {
            drop(child); // SIGKILL, reaped
            reader.join().expect("reader");
            acked.push((id, seen.load(Ordering::SeqCst)));
            // The ones still running go on committing past the dead one's
            // torn frame and its released turn.
            for (j, c) in counters.iter().enumerate().skip(k + 1) {
                let at_kill = c.load(Ordering::SeqCst);
                wait_for(
                    &format!("worker {} stalled after a kill", round * 3 + j),
                    &|| c.load(Ordering::SeqCst) > at_kill + 5,
                );
            }
            std::thread::sleep(Duration::from_millis(rand::random::<u64>() % 80));
        }
    }
    // A fresh process opens the volume and finds every acknowledged insert.
    let db = open(&vol.location, &redis.url());
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    let total = tx.check_tree("t").expect("structure");
    let mut want = 0;
    for &(id, n) in &acked {
        for i in 0..n {
            assert_eq!(
                tx.get("t", format!("{i:06}-{id}").as_bytes()).expect("get"),
                Some(id.to_string().into_bytes()),
                "acknowledged insert {i} of worker {id} lost"
            );
        }
        // At most the one commit in flight at the kill landed unacknowledged.
        assert!(tx
            .get("t", format!("{:06}-{id}", n + 1).as_bytes())
            .expect("get")
            .is_none());
        want += n;
    }
    assert!(want > 0, "no commit was acknowledged at all");
    assert!(
        total >= want && total <= want + acked.len() as u64,
        "{total} keys for {want} acks"
    );
    // And it can still commit: the log's tail is whole.
    db.run(|tx| tx.insert("t", b"after", b"1"))
        .expect("commit after the kills");
}
