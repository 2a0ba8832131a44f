//! A mount on an S3 that misbehaves: the daemon talks to the local S3
//! server through a proxy that injects, one request in seven, 503
//! SlowDown, 500, resets before the request is carried out, resets after it
//! (the ambiguous PUT), and slow answers; then a full outage longer than the
//! mount's `store_timeout`. Four writers create files (`O_EXCL`, fsync) and
//! append to logs of their own (fsync) throughout.
//!
//! Afterwards every acknowledged file reads back whole, every acknowledged
//! line is in its log exactly once, no line appears twice or torn, `sopfs
//! fsck` is clean. During the outage the writers get `EIO` and the daemon
//! logs why; when the store answers again the same mount serves again.
//!
//! `SOPFS_FAULT_SECS` sets how long each fault lasts (2 s in the suite;
//! the README's long form runs 60).

mod common;
use common::*;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Journal {
    /// Files whose fsync and close returned, with their contents.
    files: BTreeMap<String, Vec<u8>>,
    /// Per writer: lines whose append was acknowledged, and lines tried.
    lines: HashMap<usize, (Vec<String>, Vec<String>)>,
    /// Errors seen, by errno.
    errors: BTreeMap<i32, u64>,
}

fn writer(
    root: PathBuf,
    w: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    j: Arc<Mutex<Journal>>,
) {
    for i in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let name = format!("w{w}-{i}");
        // Mixed sizes: most fit in the commit record, some are blobs of
        // their own.
        let len = if i % 5 == 0 {
            300_000
        } else {
            1 + (i as usize * 997) % 20_000
        };
        let data: Vec<u8> = (0..len).map(|k| (k as u64 ^ i ^ w as u64) as u8).collect();
        let file = (|| -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(root.join(&name))?;
            f.write_all(&data)?;
            f.sync_all()
        })();
        let line = format!("w{w} line {i}");
        j.lock()
            .expect("journal")
            .lines
            .entry(w)
            .or_default()
            .1
            .push(line.clone());
        let append = (|| -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(root.join(format!("log-{w}")))?;
            f.write_all(format!("{line}\n").as_bytes())?;
            f.sync_all()
        })();
        let mut jj = j.lock().expect("journal");
        match file {
            Ok(()) => {
                jj.files.insert(name, data);
                acked.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => *jj.errors.entry(e.raw_os_error().unwrap_or(0)).or_default() += 1,
        }
        match append {
            Ok(()) => {
                jj.lines.entry(w).or_default().0.push(line);
                acked.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => *jj.errors.entry(e.raw_os_error().unwrap_or(0)).or_default() += 1,
        }
    }
}

fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_mount_on_a_misbehaving_s3_loses_nothing_and_serves_again_after_an_outage() {
    let moto = moto();
    let proxy = FaultProxy::start(moto.port, 7);
    // Every daemon this test starts talks to S3 through the proxy.
    std::env::set_var("AWS_ENDPOINT_URL", proxy.endpoint());
    let redis = RedisServer::start();
    let store = format!("s3://{S3_BUCKET}/faults{:016x}", rand::random::<u64>());
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("m");
    std::fs::create_dir(&dir).expect("mount point");
    let mut m = Mount::start_at(&store, &dir, Some(&redis.url()), &["store_timeout=4"]);
    let secs: u64 = std::env::var("SOPFS_FAULT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);

    let (stop, acked) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let journal = Arc::new(Mutex::new(Journal::default()));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (root, s, a, j) = (m.dir.clone(), stop.clone(), acked.clone(), journal.clone());
            std::thread::spawn(move || writer(root, w, s, a, j))
        })
        .collect();

    let mut report = Vec::new();
    for fault in Fault::INTERMITTENT {
        let before = (acked.load(Ordering::SeqCst), proxy.counts().1);
        proxy.set(fault);
        std::thread::sleep(Duration::from_secs(secs));
        proxy.set(Fault::None);
        report.push(format!(
            "{fault:?}: {} acknowledged, {} requests faulted",
            acked.load(Ordering::SeqCst) - before.0,
            proxy.counts().1 - before.1
        ));
    }
    let errors_before: u64 = journal.lock().expect("journal").errors.values().sum();

    // An outage longer than store_timeout: writers get EIO, the log says why.
    proxy.set(Fault::Outage);
    let outage = Instant::now();
    while journal
        .lock()
        .expect("journal")
        .errors
        .get(&libc::EIO)
        .copied()
        .unwrap_or(0)
        == 0
    {
        // The first store call to give up waits out store_timeout (4 s);
        // the calls queued behind it then fail at once (the breaker), so
        // EIO comes soon after: 5.5 s in a single run. The bound leaves
        // room for a machine busy with other suites.
        if outage.elapsed() > Duration::from_secs(60) {
            let log = std::fs::read_to_string(&m.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "no EIO after 60 s of outage; errors so far {:?}; the log ends with:\n{}",
                journal.lock().expect("journal").errors,
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("first EIO {:?} into the outage", outage.elapsed());
    let log = std::fs::read_to_string(&m.log).unwrap_or_default();
    assert!(
        log.contains("blob store operation failed after retries"),
        "no log line for the outage; the log ends with:\n{}",
        log.lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The store comes back: the same mount serves again by itself.
    proxy.set(Fault::None);
    let after_outage = acked.load(Ordering::SeqCst);
    wait_until("the mount to serve again", 120, || {
        acked.load(Ordering::SeqCst) > after_outage + 8
    });
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }

    let j = journal.lock().expect("journal");
    assert_eq!(
        errors_before, 0,
        "intermittent faults reached the writers: {:?}",
        j.errors
    );
    for (name, data) in &j.files {
        let got = std::fs::read(m.path(name)).unwrap_or_else(|e| panic!("{name} lost: {e}"));
        assert!(
            got == *data,
            "{name}: {} bytes, {} expected (torn)",
            got.len(),
            data.len()
        );
    }
    let mut lines = 0;
    for (w, (ok, tried)) in &j.lines {
        let text = std::fs::read_to_string(m.path(&format!("log-{w}"))).unwrap_or_default();
        let mut seen: HashMap<&str, u32> = HashMap::new();
        for l in text.lines() {
            *seen.entry(l).or_default() += 1;
        }
        for (l, n) in &seen {
            assert!(
                tried.iter().any(|t| t == l),
                "a line nobody wrote (torn?): {l:?}"
            );
            assert_eq!(*n, 1, "{l:?} appended {n} times");
        }
        for l in ok {
            assert!(
                seen.contains_key(l.as_str()),
                "acknowledged line lost: {l:?}"
            );
        }
        lines += ok.len();
    }
    assert!(
        j.files.len() > 20,
        "too little acknowledged: {}",
        j.files.len()
    );
    let (requests, faulted) = proxy.counts();
    eprintln!(
        "{} files and {lines} lines acknowledged, all there; {requests} requests, {faulted} faulted; errors by errno during the outage: {:?}",
        j.files.len(),
        j.errors
    );
    for r in report {
        eprintln!("  {r}");
    }
    drop(j);
    m.unmount();

    assert_fsck_clean(&store, Some(&redis.url()));
}

/// An S3 server that ignores `If-None-Match` (here: the proxy drops it)
/// would let two hosts commit at one log position. `format` and `mount`
/// refuse it in one line, and write nothing but their probe, which they
/// remove.
#[test]
fn a_store_without_conditional_creates_is_refused_in_one_line() {
    let moto = moto();
    let proxy = FaultProxy::start(moto.port, 7);
    proxy.set(Fault::NoConditions);
    let redis = RedisServer::start();
    let store = format!("s3://{S3_BUCKET}/nocond{:016x}", rand::random::<u64>());
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("m");
    std::fs::create_dir(&dir).expect("mount point");
    let run = |args: &[&str]| {
        std::process::Command::new(sopfs_bin())
            .args(args)
            .env("AWS_ENDPOINT_URL", proxy.endpoint())
            .output()
            .expect("run sopfs")
    };
    for args in [
        vec!["format", store.as_str(), "--redis", &redis.url()],
        vec![
            "mount",
            store.as_str(),
            dir.to_str().expect("utf8"),
            "--redis",
            &redis.url(),
        ],
    ] {
        let out = run(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains("If-None-Match"), "{err}");
    }
    assert!(!is_mounted(&dir));
    // Straight to the server: nothing left under the prefix.
    let location = engine::StoreLocation::parse(&store).expect("location");
    let direct = engine::BlobStore::open(&location).expect("store");
    assert_eq!(
        direct.list("").expect("list").len(),
        0,
        "objects left behind"
    );
    // The same server with its conditions intact is fine.
    proxy.set(Fault::None);
    let out = run(&["format", &store, "--redis", &redis.url()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
