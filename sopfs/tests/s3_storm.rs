//! A kill storm on S3: three `sopfs mount` daemons of one volume on a local
//! S3 server (moto) and a real redis-server, each under a writer doing
//! creates (`O_EXCL`, fsync), appends to one shared log (fsync), renames
//! into a shared directory and unlinks (each followed by an fsync of the
//! directories), while daemons are SIGKILLed at random and mounted again.
//! Afterwards `sopfs fsck` finds nothing to repair, and every acknowledged
//! operation is there: files whole, moves and deletes done, each
//! acknowledged log line exactly once, no line torn or doubled.
//!
//! A killed daemon leaves its mount point stale (ENOTCONN) until it is
//! lazily unmounted, as a user or systemd would; each new daemon mounts on
//! a fresh directory.
//!
//! 20 s in the suite; `SOPFS_STORM_SECS=600` for the long form.

mod common;
use common::*;
use rand::RngExt;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where one file may be: each path it may be found at (`None`: deleted).
/// An acknowledged operation leaves one possibility; one cut short by a
/// kill leaves the state before it and the state after it.
#[derive(Clone, Debug)]
struct Fate {
    data: Vec<u8>,
    maybe: Vec<Option<String>>,
}

#[derive(Default)]
struct Journal {
    files: BTreeMap<String, Fate>,
    /// Log lines whose append was acknowledged (fsync returned).
    lines: Vec<String>,
    /// Log lines written, acknowledged or not.
    tried: Vec<String>,
    acked_ops: u64,
}

type Shared = Arc<Mutex<Journal>>;

fn sync_dir(p: &Path) -> std::io::Result<()> {
    std::fs::File::open(p)?.sync_all()
}

/// One host's writer until the first error (its daemon was killed) or `stop`.
fn work(root: PathBuf, host: usize, generation: u32, stop: Arc<AtomicBool>, journal: Shared) {
    let mut rng = rand::rng();
    let own = root.join(format!("h{host}"));
    let moved = root.join("moved");
    let mut mine: Vec<String> = Vec::new();
    for i in 0u32.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let r = (|| -> std::io::Result<()> {
            match rng.random_range(0..10) {
                0..=4 => {
                    let id = format!("h{host}-g{generation}-{i}");
                    let rel = format!("h{host}/{id}");
                    let len = rng.random_range(1..40_000);
                    let data: Vec<u8> = (0..len).map(|j| (j as u32 ^ i) as u8).collect();
                    journal.lock().expect("journal").files.insert(
                        id.clone(),
                        Fate {
                            data: data.clone(),
                            maybe: vec![None, Some(rel.clone())],
                        },
                    );
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(root.join(&rel))?;
                    f.write_all(&data)?;
                    f.sync_all()?;
                    drop(f);
                    let mut j = journal.lock().expect("journal");
                    j.files.get_mut(&id).expect("fate").maybe = vec![Some(rel)];
                    j.acked_ops += 1;
                    mine.push(id);
                }
                5..=6 => {
                    let line = format!("h{host} g{generation} {i}");
                    journal.lock().expect("journal").tried.push(line.clone());
                    let mut f = std::fs::OpenOptions::new()
                        .append(true)
                        .create(true)
                        .open(root.join("shared.log"))?;
                    f.write_all(format!("{line}\n").as_bytes())?;
                    f.sync_all()?;
                    let mut j = journal.lock().expect("journal");
                    j.lines.push(line);
                    j.acked_ops += 1;
                }
                7..=8 if !mine.is_empty() => {
                    let id = mine.swap_remove(rng.random_range(0..mine.len()));
                    let to = format!("moved/{id}");
                    let from = {
                        let mut j = journal.lock().expect("journal");
                        let fate = j.files.get_mut(&id).expect("fate");
                        let Some(Some(from)) = fate.maybe.first().cloned() else {
                            return Ok(());
                        };
                        fate.maybe.push(Some(to.clone()));
                        from
                    };
                    std::fs::rename(root.join(&from), root.join(&to))?;
                    sync_dir(&moved)?;
                    sync_dir(&own)?;
                    let mut j = journal.lock().expect("journal");
                    j.files.get_mut(&id).expect("fate").maybe = vec![Some(to)];
                    j.acked_ops += 1;
                }
                _ if !mine.is_empty() => {
                    let id = mine.swap_remove(rng.random_range(0..mine.len()));
                    let from = {
                        let mut j = journal.lock().expect("journal");
                        let fate = j.files.get_mut(&id).expect("fate");
                        let Some(Some(from)) = fate.maybe.first().cloned() else {
                            return Ok(());
                        };
                        fate.maybe.push(None);
                        from
                    };
                    std::fs::remove_file(root.join(&from))?;
                    sync_dir(&own)?;
                    let mut j = journal.lock().expect("journal");
                    j.files.get_mut(&id).expect("fate").maybe = vec![None];
                    j.acked_ops += 1;
                }
                _ => {}
            }
            Ok(())
        })();
        if r.is_err() {
            return;
        }
    }
}

struct Host {
    mount: Mount,
    writer: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

fn start_host(
    store: &str,
    base: &Path,
    redis: &str,
    k: usize,
    generation: u32,
    j: &Shared,
) -> Host {
    let dir = base.join(format!("m{k}-g{generation}"));
    std::fs::create_dir(&dir).expect("mount point");
    let mount = Mount::start_at(store, &dir, Some(redis), &[]);
    std::fs::create_dir_all(mount.path(&format!("h{k}"))).expect("own dir");
    std::fs::create_dir_all(mount.path("moved")).expect("moved dir");
    let stop = Arc::new(AtomicBool::new(false));
    let (root, s, jj) = (mount.dir.clone(), stop.clone(), j.clone());
    let writer = Some(std::thread::spawn(move || work(root, k, generation, s, jj)));
    Host {
        mount,
        writer,
        stop,
    }
}

/// SIGKILLs the host's daemon, waits for its writer to fail, and detaches
/// the stale mount point.
fn kill_host(h: &mut Host) {
    h.mount.kill_and_abort();
    stop_writer(h);
    // Usually gone already: the kill aborted the connection and unmounted.
    let _ = Command::new("fusermount3")
        .arg("-uz")
        .arg(&h.mount.dir)
        .stderr(std::process::Stdio::null())
        .status();
}

fn stop_writer(h: &mut Host) {
    h.stop.store(true, Ordering::Relaxed);
    if let Some(w) = h.writer.take() {
        w.join().expect("writer");
    }
}

#[test]
fn three_daemons_on_s3_killed_at_random_lose_nothing_acknowledged() {
    moto();
    let redis = RedisServer::start();
    let store = format!("s3://{S3_BUCKET}/storm{:016x}", rand::random::<u64>());
    let t = tempfile::tempdir().expect("tempdir");
    let secs: u64 = std::env::var("SOPFS_STORM_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let journal: Shared = Arc::default();
    let mut hosts: Vec<Host> = (0..3)
        .map(|k| start_host(&store, t.path(), &redis.url(), k, 0, &journal))
        .collect();
    let mut rng = rand::rng();
    let mut kills = 0u32;
    let end = Instant::now() + Duration::from_secs(secs);
    // At least four kills however slow the machine is.
    while Instant::now() < end || kills < 4 {
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1500)));
        let k = rng.random_range(0..hosts.len());
        let t0 = Instant::now();
        kill_host(&mut hosts[k]);
        let t1 = Instant::now();
        kills += 1;
        hosts[k] = start_host(&store, t.path(), &redis.url(), k, kills, &journal);
        eprintln!(
            "kill {kills}: writer stopped in {:?}, remounted in {:?}",
            t1 - t0,
            t1.elapsed()
        );
    }
    for h in &mut hosts {
        stop_writer(h);
        let status = h.mount.unmount().expect("daemon");
        assert!(status.success(), "daemon exit: {status}");
    }

    assert_fsck_clean(&store, Some(&redis.url()));

    let check = t.path().join("check");
    std::fs::create_dir(&check).expect("mount point");
    let mut m = Mount::start_at(&store, &check, Some(&redis.url()), &[]);
    let j = journal.lock().expect("journal");
    assert!(j.acked_ops > 30, "too little acknowledged: {}", j.acked_ops);
    for (id, fate) in &j.files {
        let found: Vec<&Option<String>> = fate
            .maybe
            .iter()
            .filter(|p| match p {
                Some(rel) => match std::fs::read(m.path(rel)) {
                    Ok(got) => {
                        assert!(
                            got == fate.data,
                            "{rel}: {} bytes, {} expected (torn)",
                            got.len(),
                            fate.data.len()
                        );
                        true
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                    Err(e) => panic!("{rel}: {e}"),
                },
                None => false,
            })
            .collect();
        let may_be_gone = fate.maybe.contains(&None);
        match found.len() {
            0 => assert!(may_be_gone, "{id} lost: expected at {:?}", fate.maybe),
            1 => {}
            _ => panic!("{id} found twice: {found:?}"),
        }
    }
    let log = std::fs::read_to_string(m.path("shared.log")).unwrap_or_default();
    let mut seen: HashMap<&str, u32> = HashMap::new();
    for line in log.lines() {
        *seen.entry(line).or_default() += 1;
    }
    let tried: std::collections::HashSet<&str> = j.tried.iter().map(String::as_str).collect();
    for (line, n) in &seen {
        assert!(
            tried.contains(line),
            "a line nobody wrote (torn?): {line:?}"
        );
        assert_eq!(*n, 1, "{line:?} appended {n} times");
    }
    for line in &j.lines {
        assert!(
            seen.contains_key(line.as_str()),
            "acknowledged line lost: {line:?}"
        );
    }
    eprintln!(
        "{secs} s, {kills} kills, {} acknowledged operations ({} files, {} log lines) all there",
        j.acked_ops,
        j.files.len(),
        j.lines.len()
    );
    drop(j);
    m.unmount();
}
