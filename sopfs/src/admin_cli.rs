//! Operator commands that look at a whole volume: status, and the progress
//! display shared by the long ones (fsck, dump, load, warmup).

use anyhow::Context;
use engine::inspect::inspect;
use engine::StoreLocation;
use indicatif::{ProgressBar, ProgressStyle};
use sopfs::mount::daemon::open_volume;
use sopfs::mount::presence::{Announcement, LIVE_WITHIN};
use sopfs::tools::dump::Dump;
use sopfs::{Fs, FsOptions};
use std::io::IsTerminal;
use std::io::Write;
use std::path::Path;
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
    let key = sopfs::mount::daemon::key_from_env()?;
    let f =
        inspect(&location, key.as_ref()).with_context(|| format!("cannot read volume {store}"))?;
    let created = humantime::format_rfc3339_seconds(f.created);
    println!("volume     {}", engine::redact_url(store));
    println!("id         {:032x}", f.id);
    println!("format     {}", f.format);
    println!(
        "at rest    {}",
        engine::at_rest_summary(f.compression, f.encrypted)
    );
    println!("created    {created}");
    println!("commit     {}", f.seq);
    println!("nodes      {}", f.nodes);
    println!(
        "usage      {} blobs, {}; log {}",
        f.blobs,
        mib(f.blob_bytes),
        mib(f.log_bytes)
    );
    println!("snapshots  {}", f.snapshots.len());
    for s in &f.snapshots {
        let taken = SystemTime::UNIX_EPOCH + Duration::from_millis(s.time_ms);
        println!(
            "  {} (commit {}, taken {})",
            s.name,
            s.seq,
            humantime::format_rfc3339_seconds(taken)
        );
    }
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

fn quiet() -> engine::Options {
    engine::Options {
        background_interval: None,
        ..engine::Options::default()
    }
}

/// `sopfs dump`: the namespace as JSON to `output` (or stdout).
pub fn dump(
    store: &str,
    redis: Option<&str>,
    output: Option<&Path>,
    with_data: bool,
) -> anyhow::Result<()> {
    // Read-only: a dump writes nothing, so it works on a read-only store
    // (and never formats an empty location).
    let opts = engine::Options {
        read_only: true,
        ..quiet()
    };
    let db = open_volume(store, redis, opts)?;
    let fs = Fs::new(
        db,
        FsOptions {
            read_only: true,
            ..FsOptions::default()
        },
    )?;
    let mut progress = Progress::new("inodes dumped");
    let d = fs.dump(with_data, &mut |n| progress.inc(n))?;
    progress.finish();
    let write = |w: &mut dyn Write| -> anyhow::Result<()> {
        serde_json::to_writer(&mut *w, &d)?;
        w.write_all(b"\n")?;
        w.flush()?;
        Ok(())
    };
    match output {
        Some(p) => {
            // Written beside, then renamed: a failed dump leaves no half file.
            let tmp = p.with_extension("partial");
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(&tmp)
                    .with_context(|| format!("cannot write {}", tmp.display()))?,
            );
            write(&mut f).with_context(|| format!("cannot write {}", tmp.display()))?;
            f.into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| f.sync_all())
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, p).with_context(|| format!("cannot write {}", p.display()))?;
        }
        None => write(&mut std::io::BufWriter::new(std::io::stdout().lock()))?,
    }
    eprintln!(
        "dumped {} inodes, {} entries at commit {}",
        d.inodes.len(),
        d.entries.len(),
        d.seq
    );
    Ok(())
}

/// `sopfs load`: recreates a dump in an empty volume.
pub fn load(store: &str, redis: Option<&str>, file: &Path) -> anyhow::Result<()> {
    // Read and parse before the volume is touched: a bad file changes nothing.
    let d: Dump = if file == Path::new("-") {
        serde_json::from_reader(std::io::BufReader::new(std::io::stdin().lock()))
            .context("dump on standard input is not a sopfs dump")?
    } else {
        let f =
            std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
        serde_json::from_reader(std::io::BufReader::new(f))
            .with_context(|| format!("{} is not a sopfs dump", file.display()))?
    };
    sopfs::tools::dump::check_dump(&d)
        .with_context(|| format!("cannot load {}", file.display()))?;
    let db = open_volume(store, redis, quiet())?;
    let fs = Fs::new(db, FsOptions::default())?;
    let mut progress = Progress::new("inodes loaded");
    let (inodes, entries) = fs
        .load_dump(&d, &mut |n| progress.inc(n))
        .with_context(|| format!("cannot load into {store}"))?;
    progress.finish();
    println!("loaded {inodes} inodes, {entries} entries into {store}");
    Ok(())
}

/// The root of the sopfs mount holding `path` (found by its `.sopfs` files).
fn mount_root(path: &Path) -> Option<std::path::PathBuf> {
    let abs = std::fs::canonicalize(path).ok()?;
    abs.ancestors()
        .find(|a| a.join(".sopfs/config").is_file())
        .map(Path::to_path_buf)
}

/// `sopfs warmup PATH`: reads every file under PATH once through the mount,
/// so its metadata and content are in the daemon's caches (and the kernel's
/// page cache) before the real work starts.
pub fn warmup(path: &Path) -> anyhow::Result<()> {
    if mount_root(path).is_none() {
        anyhow::bail!("{} is not inside a sopfs mount", path.display());
    }
    let started = std::time::Instant::now();
    let mut progress = Progress::new("files read");
    let (mut files, mut bytes, mut failed) = (0u64, 0u64, 0u64);
    let mut stack = vec![path.to_path_buf()];
    let mut buf = vec![0u8; 1 << 20];
    while let Some(p) = stack.pop() {
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) => {
                failed += 1;
                tracing::warn!(path = %p.display(), error = %e, "warmup skipped");
                continue;
            }
        };
        if meta.is_dir() {
            match std::fs::read_dir(&p) {
                Ok(rd) => stack.extend(rd.flatten().map(|e| e.path())),
                Err(e) => {
                    failed += 1;
                    tracing::warn!(path = %p.display(), error = %e, "warmup skipped");
                }
            }
            continue;
        }
        if !meta.is_file() {
            continue;
        }
        let read = std::fs::File::open(&p).and_then(|mut f| {
            let mut n = 0u64;
            loop {
                match std::io::Read::read(&mut f, &mut buf)? {
                    0 => return Ok(n),
                    k => n += k as u64,
                }
            }
        });
        match read {
            Ok(n) => {
                files += 1;
                bytes += n;
            }
            Err(e) => {
                failed += 1;
                eprintln!("sopfs: warmup: {}: {e}", p.display());
            }
        }
        progress.inc(1);
    }
    progress.finish();
    println!(
        "warmed {files} files, {} in {:.1}s{}",
        mib(bytes),
        started.elapsed().as_secs_f64(),
        if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        }
    );
    if failed > 0 {
        anyhow::bail!("{failed} file(s) could not be read");
    }
    Ok(())
}
