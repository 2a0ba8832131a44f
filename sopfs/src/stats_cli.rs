//! `sopfs stats MOUNTPOINT`: live rates of a mount, computed from two reads
//! of its `/.sopfs/stats` an interval apart.

use anyhow::{bail, Context};
use sopfs::mount::metrics::{parse, Op, Sample};
use std::path::Path;
use std::time::{Duration, Instant};

/// Arguments of `sopfs stats`.
#[derive(clap::Args)]
pub struct StatsArgs {
    /// A sopfs mount point.
    mountpoint: std::path::PathBuf,
    /// Seconds between lines.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Lines to print, then exit (0: until interrupted).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Also print a line per kind of operation that ran.
    #[arg(long)]
    by_op: bool,
}

fn read(mountpoint: &Path) -> anyhow::Result<Vec<Sample>> {
    let file = mountpoint.join(".sopfs/stats");
    match std::fs::read_to_string(&file) {
        Ok(t) => Ok(parse(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} is not a sopfs mount (no .sopfs/stats)",
            mountpoint.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
    }
}

fn total(s: &[Sample], name: &str) -> f64 {
    s.iter().filter(|x| x.name == name).map(|x| x.value).sum()
}

fn of_op(s: &[Sample], name: &str, op: &str) -> f64 {
    s.iter()
        .filter(|x| x.name == name && x.label("op") == Some(op))
        .map(|x| x.value)
        .sum()
}

fn ratio(hits: f64, misses: f64) -> String {
    if hits + misses == 0.0 {
        "-".into()
    } else {
        format!("{:.1}", 100.0 * hits / (hits + misses))
    }
}

/// Prints one line of rates per interval.
pub fn stats(a: StatsArgs) -> anyhow::Result<()> {
    if !(a.interval > 0.0 && a.interval.is_finite()) {
        bail!("--interval must be a positive number of seconds");
    }
    let mut before = read(&a.mountpoint)?;
    let mut at = Instant::now();
    println!(
        "{:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>6} {:>6} {:>6}",
        "ops/s",
        "avg_us",
        "rd_MiB/s",
        "wr_MiB/s",
        "commits/s",
        "merges",
        "conflicts",
        "node%",
        "value%",
        "errors"
    );
    let mut lines = 0;
    loop {
        std::thread::sleep(Duration::from_secs_f64(a.interval));
        let now = read(&a.mountpoint)?;
        let secs = at.elapsed().as_secs_f64();
        at = Instant::now();
        let d = |name: &str| total(&now, name) - total(&before, name);
        // The read of .sopfs/stats itself is one lookup, open, read and
        // release or so; it is counted like any other operation.
        let ops = d("sopfs_fuse_op_seconds_count");
        let nanos = d("sopfs_fuse_op_seconds_sum");
        let avg_us = if ops > 0.0 { 1e6 * nanos / ops } else { 0.0 };
        println!(
            "{:>9.0} {:>9.1} {:>9.2} {:>9.2} {:>9.1} {:>7.0} {:>9.0} {:>6} {:>6} {:>6.0}",
            ops / secs,
            avg_us,
            d("sopfs_read_bytes_total") / secs / 1048576.0,
            d("sopfs_written_bytes_total") / secs / 1048576.0,
            d("sopfs_commits_total") / secs,
            d("sopfs_merges_total"),
            d("sopfs_conflicts_total"),
            ratio(
                d("sopfs_node_cache_hits_total"),
                d("sopfs_node_cache_misses_total")
            ),
            ratio(
                d("sopfs_value_cache_hits_total"),
                d("sopfs_value_cache_misses_total")
            ),
            d("sopfs_fuse_errors_total"),
        );
        if a.by_op {
            for op in Op::ALL {
                let n = of_op(&now, "sopfs_fuse_op_seconds_count", op.name())
                    - of_op(&before, "sopfs_fuse_op_seconds_count", op.name());
                if n > 0.0 {
                    let s = of_op(&now, "sopfs_fuse_op_seconds_sum", op.name())
                        - of_op(&before, "sopfs_fuse_op_seconds_sum", op.name());
                    println!(
                        "  {:<9} {:>9.0} ops/s {:>9.1} us avg",
                        op.name(),
                        n / secs,
                        1e6 * s / n
                    );
                }
            }
        }
        before = now;
        lines += 1;
        if a.count != 0 && lines >= a.count {
            return Ok(());
        }
    }
}
