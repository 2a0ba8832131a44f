//! What a mount counts: operations by kind with latency histograms, bytes
//! moved, errors, and the engine's commit and cache counters. Rendered in the
//! Prometheus text format, which is what `/.sopfs/stats`, the `--metrics`
//! endpoint and `sopfs stats` all read.

use engine::DbStats;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Kinds of FUSE operation, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// lookup
    Lookup,
    /// getattr
    Getattr,
    /// setattr (chmod, chown, truncate, utimens)
    Setattr,
    /// readlink
    Readlink,
    /// mknod, mkdir, symlink, create
    Create,
    /// unlink, rmdir
    Remove,
    /// rename
    Rename,
    /// link
    Link,
    /// open, opendir
    Open,
    /// read
    Read,
    /// write
    Write,
    /// flush (close)
    Flush,
    /// release, releasedir
    Release,
    /// fsync, fsyncdir
    Fsync,
    /// readdir, readdirplus
    Readdir,
    /// getxattr, setxattr, listxattr, removexattr
    Xattr,
    /// statfs, access, fallocate and the rest
    Other,
}

impl Op {
    /// Every kind, in the order they are rendered.
    pub const ALL: [Op; 17] = [
        Op::Lookup,
        Op::Getattr,
        Op::Setattr,
        Op::Readlink,
        Op::Create,
        Op::Remove,
        Op::Rename,
        Op::Link,
        Op::Open,
        Op::Read,
        Op::Write,
        Op::Flush,
        Op::Release,
        Op::Fsync,
        Op::Readdir,
        Op::Xattr,
        Op::Other,
    ];

    /// The label value in rendered metrics.
    pub fn name(self) -> &'static str {
        match self {
            Op::Lookup => "lookup",
            Op::Getattr => "getattr",
            Op::Setattr => "setattr",
            Op::Readlink => "readlink",
            Op::Create => "create",
            Op::Remove => "remove",
            Op::Rename => "rename",
            Op::Link => "link",
            Op::Open => "open",
            Op::Read => "read",
            Op::Write => "write",
            Op::Flush => "flush",
            Op::Release => "release",
            Op::Fsync => "fsync",
            Op::Readdir => "readdir",
            Op::Xattr => "xattr",
            Op::Other => "other",
        }
    }
}

/// Upper bounds of the latency buckets, in seconds (the last is +Inf).
pub const BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    5.0,
];

#[derive(Default)]
struct OpCounters {
    count: AtomicU64,
    nanos: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len() + 1],
}

/// Counters of one mount; cheap enough to bump on every operation.
pub struct Metrics {
    started: Instant,
    ops: [OpCounters; Op::ALL.len()],
    errors: AtomicU64,
    io_errors: AtomicU64,
    read_bytes: AtomicU64,
    written_bytes: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            ops: Default::default(),
            errors: AtomicU64::new(0),
            io_errors: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
        }
    }
}

/// Times one operation; counts it when dropped.
pub struct Timer<'a> {
    metrics: &'a Metrics,
    op: Op,
    start: Instant,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        let nanos = self.start.elapsed().as_nanos() as u64;
        let c = &self.metrics.ops[self.op as usize];
        c.count.fetch_add(1, Ordering::Relaxed);
        c.nanos.fetch_add(nanos, Ordering::Relaxed);
        let secs = nanos as f64 / 1e9;
        let b = BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(BUCKETS.len());
        c.buckets[b].fetch_add(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Starts timing one operation of kind `op`.
    pub fn op(&self, op: Op) -> Timer<'_> {
        Timer {
            metrics: self,
            op,
            start: Instant::now(),
        }
    }

    /// Counts an operation that failed with `errno`. "No such name" and "no
    /// such attribute" are ordinary answers (every create looks the name up
    /// first), not failures.
    pub fn error(&self, errno: i32) {
        if errno == libc::ENOENT || errno == libc::ENODATA {
            return;
        }
        self.errors.fetch_add(1, Ordering::Relaxed);
        if errno == libc::EIO {
            self.io_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts bytes returned by reads.
    pub fn read_bytes(&self, n: usize) {
        self.read_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts bytes taken by writes.
    pub fn written_bytes(&self, n: usize) {
        self.written_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of these counters and the engine's.
    pub fn render(&self, db: &DbStats, seq: u64) -> String {
        let mut out = String::with_capacity(16 << 10);
        let _ = writeln!(
            out,
            "# HELP sopfs_uptime_seconds Seconds since the mount started.\n# TYPE sopfs_uptime_seconds gauge\nsopfs_uptime_seconds {:.3}",
            self.started.elapsed().as_secs_f64()
        );
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };

        let _ = writeln!(
            out,
            "# HELP sopfs_fuse_op_seconds FUSE operations by kind and latency.\n# TYPE sopfs_fuse_op_seconds histogram"
        );
        for op in Op::ALL {
            let c = &self.ops[op as usize];
            let mut cumulative = 0;
            for (i, le) in BUCKETS.iter().enumerate() {
                cumulative += c.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "sopfs_fuse_op_seconds_bucket{{op=\"{}\",le=\"{le}\"}} {cumulative}",
                    op.name()
                );
            }
            cumulative += c.buckets[BUCKETS.len()].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "sopfs_fuse_op_seconds_bucket{{op=\"{}\",le=\"+Inf\"}} {cumulative}",
                op.name()
            );
            let _ = writeln!(
                out,
                "sopfs_fuse_op_seconds_sum{{op=\"{}\"}} {:.9}",
                op.name(),
                c.nanos.load(Ordering::Relaxed) as f64 / 1e9
            );
            let _ = writeln!(
                out,
                "sopfs_fuse_op_seconds_count{{op=\"{}\"}} {}",
                op.name(),
                c.count.load(Ordering::Relaxed)
            );
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut out,
            "sopfs_fuse_errors_total",
            "Operations answered with an error other than ENOENT or ENODATA.",
            load(&self.errors),
        );
        counter(
            &mut out,
            "sopfs_fuse_io_errors_total",
            "Operations answered with EIO (store faults, damaged blobs).",
            load(&self.io_errors),
        );
        counter(
            &mut out,
            "sopfs_read_bytes_total",
            "Bytes returned by reads.",
            load(&self.read_bytes),
        );
        counter(
            &mut out,
            "sopfs_written_bytes_total",
            "Bytes taken by writes.",
            load(&self.written_bytes),
        );
        counter(
            &mut out,
            "sopfs_commits_total",
            "Transactions committed.",
            db.commits,
        );
        counter(
            &mut out,
            "sopfs_merges_total",
            "Commits merged onto other hosts' changes to the same nodes.",
            db.merges,
        );
        counter(
            &mut out,
            "sopfs_conflicts_total",
            "Commits refused because a key they touched changed.",
            db.conflicts,
        );
        counter(
            &mut out,
            "sopfs_retries_total",
            "Transactions run again after a conflict.",
            db.retries,
        );
        counter(
            &mut out,
            "sopfs_commits_queued_total",
            "Commits that waited for a turn at the log (S3 with Redis).",
            db.queued,
        );
        counter(
            &mut out,
            "sopfs_commits_ahead_total",
            "Commits whose record was placed ahead of the log's end and held.",
            db.ahead,
        );
        counter(
            &mut out,
            "sopfs_commits_ahead_void_total",
            "Records placed ahead that a record before them made void.",
            db.ahead_void,
        );
        counter(
            &mut out,
            "sopfs_records_melded_total",
            "Records placed ahead folded by replaying their keys onto nodes changed meanwhile.",
            db.melds,
        );
        counter(
            &mut out,
            "sopfs_log_holes_filled_total",
            "Log positions filled with an empty record after their holder died.",
            db.holes,
        );
        counter(
            &mut out,
            "sopfs_stashed_chunks_total",
            "Chunks of big files written to the store ahead of their commit.",
            db.stashed,
        );
        counter(
            &mut out,
            "sopfs_node_cache_hits_total",
            "B-tree node loads served from memory.",
            db.cache_hits,
        );
        counter(
            &mut out,
            "sopfs_node_cache_misses_total",
            "B-tree node loads read from the store.",
            db.cache_misses,
        );
        gauge(
            &mut out,
            "sopfs_node_cache_bytes",
            "Bytes held by the node cache.",
            db.cache_bytes,
        );
        counter(
            &mut out,
            "sopfs_value_cache_hits_total",
            "File chunk loads served from memory.",
            db.value_hits,
        );
        counter(
            &mut out,
            "sopfs_value_cache_misses_total",
            "File chunk loads read from the store.",
            db.value_misses,
        );
        gauge(
            &mut out,
            "sopfs_value_cache_bytes",
            "Bytes held by the value cache.",
            db.value_bytes,
        );
        gauge(
            &mut out,
            "sopfs_commit_seq",
            "The newest commit this mount has seen.",
            seq,
        );
        gauge(
            &mut out,
            "sopfs_resident_bytes",
            "Resident memory of the daemon.",
            resident_bytes(),
        );
        out
    }
}

/// Resident set size of this process, from /proc (0 where unknown).
fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY-free: sysconf has no preconditions.
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    pages * page
}

/// One parsed sample: metric name, labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the text exposition written by [`Metrics::render`] (comments
/// skipped; labels without escaped quotes, which is all this module writes).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match head.split_once('{') {
                None => (head.to_string(), Vec::new()),
                Some((n, rest)) => {
                    let body = rest.strip_suffix('}')?;
                    let labels = body
                        .split(',')
                        .filter_map(|kv| {
                            let (k, v) = kv.split_once('=')?;
                            Some((k.to_string(), v.trim_matches('"').to_string()))
                        })
                        .collect();
                    (n.to_string(), labels)
                }
            };
            Some(Sample {
                name,
                labels,
                value,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_counters_parse_back() {
        let m = Metrics::default();
        for _ in 0..3 {
            drop(m.op(Op::Lookup));
        }
        m.error(libc::EIO);
        m.read_bytes(4096);
        let stats = DbStats {
            commits: 7,
            ..DbStats::default()
        };
        let samples = parse(&m.render(&stats, 42));
        let find = |name: &str, op: Option<&str>| {
            samples
                .iter()
                .find(|s| s.name == name && (op.is_none() || s.label("op") == op))
                .map(|s| s.value)
        };
        assert_eq!(
            find("sopfs_fuse_op_seconds_count", Some("lookup")),
            Some(3.0)
        );
        assert_eq!(find("sopfs_fuse_op_seconds_count", Some("read")), Some(0.0));
        assert_eq!(find("sopfs_fuse_io_errors_total", None), Some(1.0));
        assert_eq!(find("sopfs_read_bytes_total", None), Some(4096.0));
        assert_eq!(find("sopfs_commits_total", None), Some(7.0));
        assert_eq!(find("sopfs_commit_seq", None), Some(42.0));
        let inf = samples
            .iter()
            .find(|s| s.label("op") == Some("lookup") && s.label("le") == Some("+Inf"))
            .map(|s| s.value);
        assert_eq!(inf, Some(3.0), "the +Inf bucket holds every operation");
        assert!(find("sopfs_resident_bytes", None).is_some_and(|v| v > 0.0));
    }
}
