//! `sopfs bench PATH`: a quick benchmark of any directory (a sopfs mount or
//! anything else, so that users can compare): one big file written with an
//! fsync and read back, many small files created, read, stat'ed, renamed
//! and unlinked. Everything read is checked against what was written. It
//! works in a folder of its own under PATH and removes it afterwards.

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `sopfs bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// A directory to work in (a folder `sopfs-bench-PID` is made in it and
    /// removed afterwards).
    path: PathBuf,
    /// Size of the big file, in MiB (0: skip the big-file phases).
    #[arg(long, default_value_t = 256)]
    big_mib: u64,
    /// Number of small files (0: skip the small-file phases).
    #[arg(long, default_value_t = 1000)]
    small_files: u64,
    /// Size of each small file, in KiB.
    #[arg(long, default_value_t = 4)]
    small_kib: u64,
    /// Processes' worth of parallelism: threads sharing the small files.
    #[arg(long, default_value_t = 1)]
    threads: u64,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One measured phase.
#[derive(Serialize)]
struct Phase {
    name: &'static str,
    /// How much was done: MiB or operations.
    amount: f64,
    unit: &'static str,
    seconds: f64,
    /// `amount / seconds`, in `unit` per second.
    rate: f64,
}

#[derive(Serialize)]
struct Report {
    path: String,
    big_mib: u64,
    small_files: u64,
    small_kib: u64,
    threads: u64,
    phases: Vec<Phase>,
}

/// The byte at offset `i` of file `seed`: content that a read can check.
fn byte_at(seed: u64, i: u64) -> u8 {
    (i.wrapping_mul(31) ^ seed.wrapping_mul(0x9e37_79b9) ^ (i >> 12)) as u8
}

fn pattern(seed: u64, from: u64, len: usize) -> Vec<u8> {
    (from..from + len as u64)
        .map(|i| byte_at(seed, i))
        .collect()
}

/// Progress across phases: a bar on a terminal, one line per phase
/// otherwise (and nothing at all with --json, whose stdout is the result).
struct Bar(Option<ProgressBar>);

impl Bar {
    fn phase(&mut self, name: &str, total: u64, quiet: bool) {
        if let Some(b) = self.0.take() {
            b.finish_and_clear();
        }
        if std::io::stderr().is_terminal() {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template("{msg:>18} [{bar:30}] {pos}/{len} ({per_sec})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_message(name.to_string());
            self.0 = Some(b);
        } else if !quiet {
            eprintln!("... {name}");
        }
    }

    fn inc(&self) {
        if let Some(b) = &self.0 {
            b.inc(1);
        }
    }

    fn done(&mut self) {
        if let Some(b) = self.0.take() {
            b.finish_and_clear();
        }
    }
}

fn measure(
    name: &'static str,
    amount: f64,
    unit: &'static str,
    f: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<Phase> {
    let t = Instant::now();
    f().with_context(|| format!("bench phase {name}"))?;
    let seconds = t.elapsed().as_secs_f64().max(1e-9);
    Ok(Phase {
        name,
        amount,
        unit,
        seconds,
        rate: amount / seconds,
    })
}

/// Runs `op(i)` for every i in 0..n, split over `threads` threads.
fn spread(
    n: u64,
    threads: u64,
    bar: &Bar,
    op: impl Fn(u64) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<()> {
    let threads = threads.clamp(1, n.max(1));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let op = &op;
                s.spawn(move || -> anyhow::Result<()> {
                    let mut i = t;
                    while i < n {
                        op(i)?;
                        bar.inc();
                        i += threads;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(r) => r?,
                Err(_) => bail!("a bench thread panicked"),
            }
        }
        Ok(())
    })
}

/// Drops the kernel's cached pages of `f`, so the read that follows asks
/// the filesystem (a FUSE daemon may still have them in its own cache).
fn drop_cached_pages(f: &std::fs::File) {
    let _ = nix::fcntl::posix_fadvise(f, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED);
}

fn big_phases(dir: &Path, mib: u64, bar: &mut Bar, quiet: bool) -> anyhow::Result<Vec<Phase>> {
    const BLOCK: usize = 1 << 20;
    let path = dir.join("big");
    bar.phase("big write+fsync", mib, quiet);
    let write = measure("big_write_fsync", mib as f64, "MiB", || {
        let mut f = std::fs::File::create(&path)?;
        for b in 0..mib {
            f.write_all(&pattern(0, b * BLOCK as u64, BLOCK))?;
            bar.inc();
        }
        f.sync_all()?;
        Ok(())
    })?;
    bar.phase("big read", mib, quiet);
    let read = measure("big_read", mib as f64, "MiB", || {
        let mut f = std::fs::File::open(&path)?;
        drop_cached_pages(&f);
        let mut buf = vec![0u8; BLOCK];
        for b in 0..mib {
            f.read_exact(&mut buf)?;
            if buf != pattern(0, b * BLOCK as u64, BLOCK) {
                bail!("{} reads back different bytes at MiB {b}", path.display());
            }
            bar.inc();
        }
        Ok(())
    })?;
    std::fs::remove_file(&path)?;
    Ok(vec![write, read])
}

fn small_phases(
    dir: &Path,
    a: &BenchArgs,
    bar: &mut Bar,
    quiet: bool,
) -> anyhow::Result<Vec<Phase>> {
    let (n, len) = (a.small_files, (a.small_kib * 1024) as usize);
    let name = |i: u64| dir.join(format!("f{i:07}"));
    let moved = |i: u64| dir.join(format!("g{i:07}"));
    let count = n as f64;
    let mut out = Vec::new();
    bar.phase("small create", n, quiet);
    out.push(measure("small_create", count, "files", || {
        spread(n, a.threads, bar, |i| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(name(i))?;
            f.write_all(&pattern(i + 1, 0, len))?;
            Ok(())
        })
    })?);
    bar.phase("small read", n, quiet);
    out.push(measure("small_read", count, "files", || {
        spread(n, a.threads, bar, |i| {
            let got = std::fs::read(name(i))?;
            if got != pattern(i + 1, 0, len) {
                bail!("{} reads back different bytes", name(i).display());
            }
            Ok(())
        })
    })?);
    bar.phase("stat", n, quiet);
    out.push(measure("stat", count, "files", || {
        spread(n, a.threads, bar, |i| {
            let m = std::fs::metadata(name(i))?;
            if m.len() != len as u64 {
                bail!("{} has {} bytes, {len} written", name(i).display(), m.len());
            }
            Ok(())
        })
    })?);
    bar.phase("rename", n, quiet);
    out.push(measure("rename", count, "files", || {
        spread(n, a.threads, bar, |i| {
            Ok(std::fs::rename(name(i), moved(i))?)
        })
    })?);
    bar.phase("unlink", n, quiet);
    out.push(measure("unlink", count, "files", || {
        spread(n, a.threads, bar, |i| Ok(std::fs::remove_file(moved(i))?))
    })?);
    bar.phase("mkdir+rmdir", n, quiet);
    out.push(measure("mkdir_rmdir", count, "dirs", || {
        spread(n, a.threads, bar, |i| {
            let d = dir.join(format!("d{i:07}"));
            std::fs::create_dir(&d)?;
            std::fs::remove_dir(&d)?;
            Ok(())
        })
    })?);
    Ok(out)
}

fn human(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{:.0} ms", seconds * 1000.0)
    } else {
        format!("{seconds:.2} s")
    }
}

/// `sopfs bench PATH`.
pub fn bench(a: BenchArgs) -> anyhow::Result<()> {
    let meta = std::fs::metadata(&a.path)
        .with_context(|| format!("cannot benchmark {}", a.path.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", a.path.display());
    }
    if a.small_files > 0 && a.small_kib == 0 {
        bail!("--small-kib must be at least 1");
    }
    let dir = a.path.join(format!("sopfs-bench-{}", std::process::id()));
    std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut bar = Bar(None);
    let run = (|| -> anyhow::Result<Vec<Phase>> {
        let mut phases = Vec::new();
        if a.big_mib > 0 {
            phases.extend(big_phases(&dir, a.big_mib, &mut bar, a.json)?);
        }
        if a.small_files > 0 {
            phases.extend(small_phases(&dir, &a, &mut bar, a.json)?);
        }
        Ok(phases)
    })();
    bar.done();
    // Whatever happened, leave nothing behind.
    let _ = std::fs::remove_dir_all(&dir);
    let phases = run?;
    let report = Report {
        path: a.path.display().to_string(),
        big_mib: a.big_mib,
        small_files: a.small_files,
        small_kib: a.small_kib,
        threads: a.threads,
        phases,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "sopfs bench {}: big file {} MiB, {} small files of {} KiB, {} thread(s)",
        report.path, a.big_mib, a.small_files, a.small_kib, a.threads
    );
    println!("| phase | amount | time | rate |");
    println!("|---|---:|---:|---:|");
    for p in &report.phases {
        println!(
            "| {} | {:.0} {} | {} | {:.1} {}/s |",
            p.name,
            p.amount,
            p.unit,
            human(p.seconds),
            p.rate,
            p.unit
        );
    }
    Ok(())
}
