//! Operator commands that look at a whole volume: status, and the progress
//! display shared by the long ones (fsck, dump, load, warmup).

use anyhow::Context;
use engine::inspect::inspect;
use engine::StoreLocation;
use indicatif::{ProgressBar, ProgressStyle};
use sopfs::presence::{Announcement, LIVE_WITHIN};
use std::io::IsTerminal;
use std::time::{Duration, SystemTime};

/// Progress of a long command: a bar on a terminal, a plain line every few
/// seconds otherwise (logs and pipes get no control characters).
pub struct Progress {
    bar: Option<ProgressBar>,
    what: &'static str,
    done: u64,
    last_line: std::time::Instant,
}

impl Progress {
    /// Starts counting `what` (e.g. "files").
    pub fn new(what: &'static str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {elapsed} {pos} {msg} ({per_sec})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.set_message(what);
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Progress {
            bar,
            what,
            done: 0,
            last_line: std::time::Instant::now(),
        }
    }

    /// Counts `n` more.
    pub fn inc(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(b) => b.inc(n),
            None if self.last_line.elapsed() >= Duration::from_secs(5) => {
                self.last_line = std::time::Instant::now();
                eprintln!("... {} {}", self.done, self.what);
            }
            None => {}
        }
    }

    /// Removes the bar.
    pub fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

fn ago(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

/// `sopfs status STORE`: volume facts, the daemons serving it, usage.
pub fn status(store: &str) -> anyhow::Result<()> {
    let location = StoreLocation::parse(store)?;
    let f = inspect(&location).with_context(|| format!("cannot read volume {store}"))?;
    let created = humantime::format_rfc3339_seconds(f.created);
    println!("volume     {}", engine::redis_coord::redact_url(store));
    println!("id         {:032x}", f.id);
    println!("format     {}", f.format);
    println!("created    {created}");
    println!("commit     {}", f.seq);
    println!("nodes      {}", f.nodes);
    println!("usage      {} blobs, {}", f.blobs, mib(f.blob_bytes));
    let (live, stale): (Vec<_>, Vec<_>) = f.members.iter().partition(|m| m.age <= LIVE_WITHIN);
    println!("daemons    {} live", live.len());
    for m in &live {
        match serde_json::from_slice::<Announcement>(&m.body) {
            Ok(a) => {
                let up = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH + Duration::from_secs(a.started))
                    .unwrap_or_default();
                println!(
                    "  {} pid {} on {} ({}{}), up {}, heartbeat {} ago",
                    a.host,
                    a.pid,
                    a.mountpoint,
                    a.mode,
                    if a.read_only { ", ro" } else { "" },
                    ago(up),
                    ago(m.age)
                );
            }
            Err(_) => println!("  {} (unreadable announcement)", m.id),
        }
    }
    if !stale.is_empty() {
        println!(
            "stale      {} announcement(s) without a heartbeat for over {} (daemons that were killed)",
            stale.len(),
            ago(LIVE_WITHIN)
        );
    }
    Ok(())
}
