//! The SOP idea in one screen: many workers commit transactions into ONE
//! B-tree at once; changes to the same node merge at commit, only the same
//! key conflicts. Prints throughput and verifies every key landed once.
//!
//! cargo run --release --example swarm -- [--workers N] [--per-worker N] [--store DIR]

use engine::{Db, Options, StoreLocation, TreeConfig, TxMode};
use std::sync::{Arc, Barrier};
use std::time::Instant;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let workers: usize = arg("--workers", "8").parse()?;
    let per_worker: usize = arg("--per-worker", "2000").parse()?;
    let tmp;
    let store = match arg("--store", "") {
        s if s.is_empty() => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
        s => s.into(),
    };
    let db = Arc::new(Db::open(
        StoreLocation::Local(store.clone()),
        Options::default(),
    )?);
    // First commit: the tree's root is created race-free by whichever commit
    // gets there first; here one up-front commit makes it explicit.
    db.run(|tx| tx.ensure_tree("swarm", TreeConfig::default()))?;
    let barrier = Arc::new(Barrier::new(workers));
    let started = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let (db, barrier) = (db.clone(), barrier.clone());
            std::thread::spawn(move || -> engine::Result<()> {
                barrier.wait();
                for i in 0..per_worker {
                    let key = format!("item-{i:07}-worker-{w:03}");
                    db.run(|tx| tx.insert("swarm", key.as_bytes(), &w.to_le_bytes()))?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| "worker panicked")??;
    }
    let elapsed = started.elapsed();
    let mut tx = db.begin(TxMode::ReadOnly)?;
    let count = tx.count("swarm")?;
    let expected = (workers * per_worker) as u64;
    let stats = db.stats();
    println!("store         {}", store.display());
    println!("workers       {workers} x {per_worker} single-key transactions into one B-tree");
    println!("elapsed       {:.2} s", elapsed.as_secs_f64());
    println!(
        "throughput    {:.0} commits/s",
        expected as f64 / elapsed.as_secs_f64()
    );
    println!(
        "merges        {} (commits re-applied onto a node another commit changed)",
        stats.merges
    );
    println!(
        "conflicts     {} (same key: none expected)",
        stats.conflicts
    );
    println!("keys          {count} of {expected}");
    if count != expected || tx.check_tree("swarm")? != expected {
        return Err(format!("verification failed: {count} keys, {expected} expected").into());
    }
    println!("verified      every key present exactly once, tree structure valid");
    Ok(())
}
