//! Many hosts on one volume, simulated in one process: N `Db` handles over
//! one in-memory store behind a chosen latency per request (as S3 from a
//! data centre), coordinated by a private redis-server, each committing
//! small transactions in its own key range. Prints aggregate commits per
//! second against the number of hosts, the time a commit takes (p50 and
//! p99, and p99 in round trips of the chosen latency), the store requests
//! per commit and how many commits were placed ahead of the log's end (and
//! void), then checks every acknowledged key is there once.
//!
//! ```text
//! cargo run --release --example hosts                  # 1..64 hosts, 10 ms, 5 s each
//! options: --hosts 1,2,4,8  --threads 1 (per host)  --latency-ms 10  --secs 5
//!          --trees shared|own (one tree for all hosts, or one each)
//! cargo run --release --example hosts -- --history 100000   # opening a long log
//! ```
//!
//! `--history N` instead writes N commits (with no latency), then times
//! how long a new host takes to open the volume behind the latency.

use engine::{Db, Options, RedisCoordinator, StoreLocation, TreeConfig};
use object_store::memory::InMemory;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::latency::LatencyStore;
use test_support::RedisServer;

/// The allocator a mount runs with (`sopfs`'s `main.rs`), with huge pages
/// off as there (`sopfs::pages`): the hosts here are mounts in one process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As a mount does first thing (`sopfs::pages::keep_small_pages`).
    // SAFETY: prctl with integer arguments only sets a flag of this process.
    #[allow(unsafe_code)]
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0)
    };
    let hosts: Vec<usize> = arg("--hosts")
        .unwrap_or_else(|| "1,2,4,8,16,32,64".into())
        .split(',')
        .map(|h| h.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--hosts: {e}"))?;
    let latency = Duration::from_millis(arg("--latency-ms").map_or(Ok(10), |v| v.parse())?);
    let secs: u64 = arg("--secs").map_or(Ok(5), |v| v.parse())?;
    let threads: usize = arg("--threads").map_or(Ok(1), |v| v.parse())?;
    // `shared`: every host writes its own keys of one tree; `own`: a tree
    // per host (as hosts writing their own directories).
    let own = match arg("--trees").as_deref() {
        None | Some("shared") => false,
        Some("own") => true,
        Some(other) => return Err(format!("--trees: {other:?} is not own or shared").into()),
    };
    let tree_of = move |h: usize| {
        if own {
            format!("t{h:03}")
        } else {
            "t".to_string()
        }
    };
    let redis = RedisServer::start();
    if let Some(n) = arg("--history") {
        return open_after_history(n.parse()?, latency, &redis);
    }
    println!(
        "latency {latency:?} per request, {threads} thread(s) per host, {secs} s per row, {} tree(s)",
        if own { "own" } else { "one shared" }
    );
    println!(
        "| hosts | commits/s | per host | p50 ms | p99 ms (round trips) | GET/commit (of them 404) | PUT/commit | slowest host | placed ahead | void | holes | queued | melded | conflicts |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for n in hosts {
        let mem = Arc::new(InMemory::new());
        let store = Arc::new(LatencyStore::new(mem.clone(), latency));
        let open = || -> Result<Db, Box<dyn std::error::Error>> {
            let coord = RedisCoordinator::connect(&redis.url())?;
            Ok(Db::open_shared(
                StoreLocation::Custom(store.clone()),
                Options {
                    background_interval: None,
                    // As a mount opens its volume (`sopfs/src/mount/daemon.rs`):
                    // transactions begin from the pushed stamp.
                    pushed_stamps: true,
                    ..Options::default()
                },
                Arc::new(coord),
            )?)
        };
        let first = open()?;
        first.run(|tx| {
            for h in 0..n * threads {
                tx.ensure_tree(&tree_of(h), TreeConfig::default())?;
            }
            Ok(())
        })?;
        let dbs: Vec<Arc<Db>> = std::iter::once(Ok(first))
            .chain((1..n).map(|_| open()))
            .map(|d| d.map(Arc::new))
            .collect::<Result<_, _>>()?;
        let (gets0, puts0, misses0) = (
            store.gets.load(Ordering::SeqCst),
            store.puts.load(Ordering::SeqCst),
            store.record_misses.load(Ordering::SeqCst),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let workers: Vec<_> = (0..n * threads)
            .map(|h| (h, &dbs[h / threads]))
            .map(|(h, db)| {
                let (db, stop) = (db.clone(), stop.clone());
                let tree = tree_of(h);
                std::thread::spawn(move || {
                    let mut took = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("h{h:03}-{:08}", took.len());
                        let t = Instant::now();
                        if db.run(|tx| tx.insert(&tree, key.as_bytes(), b"v")).is_err() {
                            break;
                        }
                        took.push(t.elapsed());
                    }
                    took
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
        let took: Vec<Vec<Duration>> = workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .collect();
        let elapsed = start.elapsed().as_secs_f64();
        let counts: Vec<u64> = took.iter().map(|t| t.len() as u64).collect();
        let mut all: Vec<Duration> = took.into_iter().flatten().collect();
        all.sort_unstable();
        let pct = |p: f64| {
            all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        let (p50, p99) = (pct(0.50), pct(0.99));
        let total: u64 = counts.iter().sum();
        let gets = store.gets.load(Ordering::SeqCst) - gets0;
        let puts = store.puts.load(Ordering::SeqCst) - puts0;
        let misses = store.record_misses.load(Ordering::SeqCst) - misses0;
        let per = |x: u64| x as f64 / total.max(1) as f64;
        let stats: Vec<_> = dbs.iter().map(|d| d.stats()).collect();
        let sum = |f: fn(&engine::DbStats) -> u64| stats.iter().map(f).sum::<u64>();
        println!(
            "| {n} | {:.0} | {:.1} | {p50:.0} | {p99:.0} ({:.1}) | {:.1} ({:.1}) | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
            total as f64 / elapsed,
            total as f64 / elapsed / n as f64,
            p99 / (latency.as_secs_f64() * 1e3).max(f64::MIN_POSITIVE),
            per(gets),
            per(misses),
            per(puts),
            (0..n)
                .map(|h| counts[h * threads..(h + 1) * threads].iter().sum::<u64>())
                .min()
                .unwrap_or(0),
            sum(|s| s.ahead),
            sum(|s| s.ahead_void),
            sum(|s| s.holes),
            sum(|s| s.queued),
            sum(|s| s.melds),
            sum(|s| s.conflicts),
        );
        // Every acknowledged key is there, once.
        let mut tx = dbs[0].begin_fresh()?;
        for (h, &c) in counts.iter().enumerate() {
            for i in 0..c {
                let key = format!("h{h:03}-{i:08}");
                if tx.get(&tree_of(h), key.as_bytes())?.is_none() {
                    return Err(format!("{key} acknowledged but missing").into());
                }
            }
        }
        let mut found = 0;
        for h in 0..if own { n * threads } else { 1 } {
            found += tx.count(&tree_of(h))?;
        }
        if found != total {
            return Err(format!("{found} keys for {total} commits").into());
        }
    }
    Ok(())
}

/// Writes `n` commits, then opens the volume from a new host behind `latency`.
fn open_after_history(
    n: u64,
    latency: Duration,
    redis: &RedisServer,
) -> Result<(), Box<dyn std::error::Error>> {
    let mem = Arc::new(InMemory::new());
    let coord = || RedisCoordinator::connect(&redis.url());
    let opts = Options {
        background_interval: None,
        ..Options::default()
    };
    let writer = Db::open_shared(
        StoreLocation::Custom(mem.clone()),
        opts.clone(),
        Arc::new(coord()?),
    )?;
    writer.run(|tx| tx.ensure_tree("t", TreeConfig::default()))?;
    let start = Instant::now();
    for i in 0..n {
        writer.run(|tx| tx.upsert("t", format!("k{:06}", i % 100_000).as_bytes(), b"v"))?;
    }
    println!(
        "{n} commits written in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let store = Arc::new(LatencyStore::new(mem, latency));
    let start = Instant::now();
    let reader = Db::open_shared(
        StoreLocation::Custom(store.clone()),
        opts,
        Arc::new(coord()?),
    )?;
    println!(
        "a new host opened it in {:.2} s at {latency:?} per request ({} GETs), at seq {}",
        start.elapsed().as_secs_f64(),
        store.gets.load(Ordering::SeqCst),
        reader.seq()
    );
    Ok(())
}
