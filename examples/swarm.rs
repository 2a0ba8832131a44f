//! The SOP idea in one screen: many workers commit transactions into ONE
//! B-tree at once; changes to the same node merge at commit, only the same
//! key conflicts. Prints throughput and verifies every key landed once.
//!
//! ```text
//! cargo run --release --example swarm                      # 8 threads, embedded
//! cargo run --release --example swarm -- --procs 4 --redis redis://127.0.0.1:6379/
//! options: --workers N  --per-worker N  --trees K  --store PATH|s3://bucket/prefix
//! ```

use engine::{Db, Options, RedisCoordinator, StoreLocation, TreeConfig, TxMode};
use std::sync::{Arc, Barrier};
use std::time::Instant;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num(name: &str, default: usize) -> Result<usize, String> {
    arg(name).map_or(Ok(default), |v| {
        v.parse().map_err(|_| format!("{name}: not a number: {v}"))
    })
}

fn open(store: &str, redis: Option<&str>) -> Result<Db, Box<dyn std::error::Error>> {
    let location = StoreLocation::parse(store)?;
    Ok(match redis {
        Some(url) => Db::open_shared(
            location,
            Options::default(),
            Arc::new(RedisCoordinator::connect(url)?),
        )?,
        None => Db::open(location, Options::default())?,
    })
}

fn tree(worker: usize, trees: usize) -> String {
    format!("swarm-{}", worker % trees)
}

/// One worker's share: `per_worker` single-key transactions.
fn work(db: &Db, worker: usize, per_worker: usize, trees: usize) -> engine::Result<()> {
    let t = tree(worker, trees);
    for i in 0..per_worker {
        let key = format!("item-{i:07}-worker-{worker:03}");
        db.run(|tx| tx.insert(&t, key.as_bytes(), &worker.to_le_bytes()))?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let per_worker = num("--per-worker", 2000)?;
    let trees = num("--trees", 1)?.max(1);
    let redis = arg("--redis");
    let procs = num("--procs", 0)?;
    if let Some(id) = arg("--child") {
        // A worker process of a cluster run.
        let store = arg("--store").ok_or("--store is required")?;
        let db = open(&store, redis.as_deref())?;
        let id: usize = id.parse()?;
        work(&db, id, per_worker, trees)?;
        let s = db.stats();
        println!(
            "CHILD merges={} conflicts={} collisions={}",
            s.merges, s.conflicts, s.collisions
        );
        return Ok(());
    }
    if procs > 0 && redis.is_none() {
        return Err(
            "--procs needs --redis URL (separate processes coordinate through Redis)".into(),
        );
    }
    let tmp = tempfile::tempdir()?;
    let store = arg("--store").unwrap_or_else(|| tmp.path().join("vol").display().to_string());
    // First-commit rule: one commit creates each tree before the swarm arrives
    // (ensure_tree would also be race-free without it).
    {
        let db = open(&store, redis.as_deref())?;
        for t in 0..trees {
            db.run(|tx| tx.ensure_tree(&tree(t, trees), TreeConfig::default()))?;
        }
    }
    let workers = if procs > 0 {
        procs
    } else {
        num("--workers", 8)?
    };
    let started = Instant::now();
    let (mut merges, mut conflicts, mut collisions) = (0u64, 0u64, 0u64);
    if procs > 0 {
        let exe = std::env::current_exe()?;
        let children: Vec<_> = (0..procs)
            .map(|p| {
                std::process::Command::new(&exe)
                    .args(["--child", &p.to_string(), "--store", &store])
                    .args([
                        "--per-worker",
                        &per_worker.to_string(),
                        "--trees",
                        &trees.to_string(),
                    ])
                    .args(["--redis", redis.as_deref().unwrap_or_default()])
                    .stdout(std::process::Stdio::piped())
                    .spawn()
            })
            .collect::<Result<_, _>>()?;
        for c in children {
            let out = c.wait_with_output()?;
            if !out.status.success() {
                return Err(format!("a worker process failed: {}", out.status).into());
            }
            for kv in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let (k, v) = kv.split_once('=').unwrap_or(("", "0"));
                let v: u64 = v.parse().unwrap_or(0);
                match k {
                    "merges" => merges += v,
                    "conflicts" => conflicts += v,
                    "collisions" => collisions += v,
                    _ => {}
                }
            }
        }
    } else {
        let db = Arc::new(open(&store, None)?);
        let barrier = Arc::new(Barrier::new(workers));
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (db, barrier) = (db.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    work(&db, w, per_worker, trees)
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "worker panicked")??;
        }
        let s = db.stats();
        (merges, conflicts, collisions) = (s.merges, s.conflicts, s.collisions);
    }
    let elapsed = started.elapsed();
    // A fresh handle, so the check reads what the store holds.
    let db = open(&store, redis.as_deref())?;
    let expected = (workers * per_worker) as u64;
    let mut count = 0;
    let mut tx = db.begin(TxMode::ReadOnly)?;
    for t in 0..trees {
        let name = tree(t, trees);
        let n = tx.count(&name)?;
        if tx.check_tree(&name)? != n {
            return Err(format!("tree {name} is malformed").into());
        }
        count += n;
    }
    let mode = if procs > 0 {
        "processes (Redis)"
    } else {
        "threads (embedded)"
    };
    println!("store         {store}");
    println!("workers       {workers} {mode} x {per_worker} single-key transactions into {trees} B-tree(s)");
    println!("elapsed       {:.2} s", elapsed.as_secs_f64());
    println!(
        "throughput    {:.0} commits/s",
        expected as f64 / elapsed.as_secs_f64()
    );
    println!("merges        {merges} (commits re-applied onto a node another commit changed)");
    println!("conflicts     {conflicts} (same key: none expected)");
    println!("collisions    {collisions} (log slot taken by another process; moved on)");
    println!("keys          {count} of {expected}");
    if count != expected {
        return Err(format!("verification failed: {count} keys, {expected} expected").into());
    }
    println!("verified      every key present exactly once, tree structure valid");
    println!(
        "RESULT commits_per_s={:.0} merges={merges} conflicts={conflicts} collisions={collisions}",
        expected as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
