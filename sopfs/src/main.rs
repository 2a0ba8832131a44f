//! `sopfs`: the command line of a sopfs volume: format, mount, umount, info, fsck.

use anyhow::Context;
use clap::{Parser, Subcommand};
use engine::{Options, TxMode};
use sopfs::mount::daemon::{open_volume, run_mount, unmount_and_wait, MountArgs};
use sopfs::{Fs, FsOptions};
use std::path::PathBuf;

/// mimalloc instead of glibc's allocator: a daemon makes and frees millions
/// of small buffers (keys, values, nodes) from many threads, and glibc
/// returned freed heap to the kernel only to fault it back in, zeroed,
/// moments later (a third of a big clone's reading time was page faults).
/// mimalloc gives memory back too, a second after it is freed: the daemon
/// keeps to small pages (`sopfs::pages`) so that faulting it in again
/// zeroes 4 KiB, not 2 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin_cli;
mod bench_cli;
mod clone_cli;
mod quota_cli;
mod snapshot_cli;
mod stats_cli;
mod swarm_cli;

#[derive(Parser)]
#[command(name = "sopfs", version, about = "Masterless distributed filesystem")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a volume at STORE (a path, file:// or s3:// URL); an existing volume is left as is.
    Format {
        /// Where the volume's blobs live.
        store: String,
        /// Coordinator of a shared volume (redis://, rediss://, redis+sentinel://, redis+cluster://).
        #[arg(long)]
        redis: Option<String>,
        /// Compress every object: zstd (level 3), zstd:N (1 to 19), or none.
        #[arg(long, value_name = "zstd[:N]")]
        compress: Option<String>,
        /// Encrypt every object with the key in this file (also SOPFS_KEY_FILE
        /// or SOPFS_KEY); every later open needs the same key.
        #[arg(long, value_name = "PATH")]
        key_file: Option<PathBuf>,
    },
    /// Mount the volume at STORE on MOUNTPOINT (an empty location is formatted first).
    Mount {
        /// Where the volume's blobs live.
        store: String,
        /// An existing, empty directory.
        mountpoint: PathBuf,
        /// Coordinator shared with other hosts; without it the volume is this daemon's alone.
        #[arg(long)]
        redis: Option<String>,
        /// Return once the mount answers; the daemon keeps serving.
        #[arg(long)]
        background: bool,
        /// Mount options: ro, allow_other, allow_root, noatime, nodev, nosuid, noexec,
        /// cache_dir=PATH, metrics=IP:PORT, macro_exec, ...
        #[arg(short = 'o')]
        options: Vec<String>,
        /// Serve Prometheus metrics on IP:PORT (same as -o metrics=IP:PORT).
        #[arg(long, value_name = "IP:PORT")]
        metrics: Option<String>,
    },
    /// Volume facts, the daemons serving it (by heartbeat) and its usage.
    Status {
        /// Where the volume's blobs live.
        store: String,
    },
    /// Write the volume's namespace (attributes, xattrs, links, content) as JSON.
    Dump {
        /// Where the volume's blobs live (an embedded volume must not be mounted).
        store: String,
        /// Coordinator of a shared volume.
        #[arg(long)]
        redis: Option<String>,
        /// Write here instead of standard output.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// Metadata only (for inspection; such a dump cannot be loaded).
        #[arg(long)]
        no_data: bool,
    },
    /// Recreate a dump in an empty volume, in one transaction.
    Load {
        /// Where the new volume's blobs live (formatted if empty).
        store: String,
        /// The dump (`-` for standard input).
        dump: PathBuf,
        /// Coordinator of a shared volume.
        #[arg(long)]
        redis: Option<String>,
    },
    /// Read every file under PATH (in a mount) once, to fill the caches.
    Warmup {
        /// A file or directory inside a sopfs mount.
        path: PathBuf,
    },
    /// Live rates of a mount: operations, latency, bytes, commits, caches.
    Stats(stats_cli::StatsArgs),
    /// Benchmark a directory (a sopfs mount or any other): a big file
    /// written and read, small files created, read, stat'ed, renamed,
    /// unlinked; a table, or JSON with --json.
    Bench(bench_cli::BenchArgs),
    /// Copy a directory tree (or a file) inside a mount in one
    /// transaction, sharing its content: fast, and the copy is
    /// independent of the source from then on.
    Clone(clone_cli::CloneArgs),
    /// Read-only snapshots of the whole volume: create, list, delete.
    #[command(subcommand)]
    Snapshot(snapshot_cli::SnapshotCmd),
    /// Directory quotas of bytes and inodes: set, get, list, check, remove.
    #[command(subcommand)]
    Quota(quota_cli::QuotaCmd),
    /// Unmount a sopfs mount point; its daemon commits and exits.
    Umount {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Print facts about the volume at STORE.
    Info {
        /// Where the volume's blobs live.
        store: String,
        /// Coordinator of a shared volume.
        #[arg(long)]
        redis: Option<String>,
    },
    /// Macros: check, install, list, rm, run.
    #[command(subcommand)]
    Macro(swarm_cli::MacroCmd),
    /// Jobs: submit, status, wait, list.
    #[command(subcommand)]
    Job(swarm_cli::JobCmd),
    /// Claim and run jobs of a volume until stopped.
    Agent(swarm_cli::AgentArgs),
    /// Delete blobs no state within the retention window can reach.
    Gc {
        /// Where the volume's blobs live.
        store: String,
        /// Coordinator of a shared volume.
        #[arg(long)]
        redis: Option<String>,
        /// Count what would go; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Keep everything younger than this many seconds (snapshots that old
        /// may still be read by a running process). In cluster mode it is
        /// never below two minutes.
        #[arg(long, default_value_t = 600)]
        retention: u64,
    },
    /// Walk every directory, check every B-tree, entry and link count, and
    /// read every file (each blob's checksum is verified).
    Fsck {
        /// Where the volume's blobs live.
        store: String,
        /// Coordinator of a shared volume.
        #[arg(long)]
        redis: Option<String>,
        /// Fix what can be fixed: dangling names, link counts, parent links;
        /// unreachable inodes go to /lost+found.
        #[arg(long)]
        repair: bool,
    },
}

fn quiet() -> Options {
    Options {
        background_interval: None,
        ..Options::default()
    }
}

/// `sopfs format`: creates the volume (or opens an existing one as is).
fn format_cmd(
    store: &str,
    redis: Option<&str>,
    compress: Option<&str>,
    key_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let mut opts = quiet();
    opts.at_rest.compression = compress
        .map(sopfs::mount::daemon::parse_compression)
        .transpose()?
        .flatten();
    if let Some(path) = key_file {
        opts.at_rest.key = Some(engine::Secret::from_file(path)?);
    }
    let db = open_volume(store, redis, opts)?;
    let seq = db.seq();
    let at_rest = db.at_rest_summary();
    Fs::new(db, FsOptions::default())?;
    println!("volume ready at {store} (commit {seq}; {at_rest})");
    Ok(())
}

fn main() {
    sopfs::pages::keep_small_pages();
    let writer = sopfs::mount::daemon::log_file().map(std::sync::Mutex::new);
    let filter = tracing_subscriber::EnvFilter::try_from_env("SOPFS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    match writer {
        Some(w) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(w)
            .init(),
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(%info, "panic");
    }));
    let cli = Cli::parse();
    let result =
        match cli.command {
            Command::Format {
                store,
                redis,
                compress,
                key_file,
            } => format_cmd(&store, redis.as_deref(), compress.as_deref(), key_file.as_deref()),
            Command::Mount {
                store,
                mountpoint,
                redis,
                background,
                mut options,
                metrics,
            } => {
                options.extend(metrics.map(|m| format!("metrics={m}")));
                run_mount(MountArgs {
                    store,
                    mountpoint,
                    redis,
                    background,
                    options,
                })
            }
            Command::Status { store } => admin_cli::status(&store),
            Command::Warmup { path } => admin_cli::warmup(&path),
            Command::Dump {
                store,
                redis,
                output,
                no_data,
            } => admin_cli::dump(&store, redis.as_deref(), output.as_deref(), !no_data),
            Command::Load { store, dump, redis } => {
                admin_cli::load(&store, redis.as_deref(), &dump)
            }
            Command::Stats(a) => stats_cli::stats(a),
            Command::Bench(a) => bench_cli::bench(a),
            Command::Clone(a) => clone_cli::clone(a),
            Command::Snapshot(c) => snapshot_cli::snapshot(c),
            Command::Quota(c) => quota_cli::quota(c),
            Command::Umount { mountpoint } => unmount_and_wait(&mountpoint),
            Command::Info { store, redis } => open_volume(&store, redis.as_deref(), quiet())
                .and_then(|db| {
                    let mut tx = db.begin(TxMode::ReadOnly)?;
                    let trees = tx.list_trees()?;
                    println!("store      {store}");
                    println!("commit     {}", db.seq());
                    println!("nodes      {}", db.node_count());
                    println!("trees      {}", trees.len());
                    Ok(())
                }),
            Command::Macro(cmd) => swarm_cli::macro_cmd(cmd),
            Command::Job(cmd) => swarm_cli::job_cmd(cmd),
            Command::Agent(a) => swarm_cli::agent(a),
            Command::Gc {
                store,
                redis,
                dry_run,
                retention,
            } => open_volume(&store, redis.as_deref(), quiet()).and_then(|db| {
                // The trash first: what it held past its days is garbage now.
                let emptied = if dry_run {
                    0
                } else {
                    let host = sopfs::ns::Detached { id: rand::random() };
                    let now = std::time::SystemTime::now();
                    sopfs::ns::trash::empty_expired(&host, now, |f| {
                        db.run_with(|tx| f(tx))
                    })?
                };
                if emptied > 0 {
                    // GC keeps what records of its own millisecond name:
                    // let the emptying's records be older than the pass.
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                let r = db.gc(std::time::Duration::from_secs(retention), dry_run)?;
                let verb = if dry_run { "would delete" } else { "deleted" };
                println!(
                    "{verb} {} of {} blobs ({} bytes), {} log records, {} checkpoints, {} staging files, {} stale daemon announcements",
                    r.blobs_deleted,
                    r.blobs_scanned,
                    r.bytes_deleted,
                    r.log_records_deleted,
                    r.checkpoints_deleted,
                    r.staging_files_deleted,
                    r.members_deleted
                );
                if emptied > 0 {
                    println!("emptied {emptied} names from the trash (past trash_days)");
                }
                Ok(())
            }),
            Command::Fsck {
                store,
                redis,
                repair,
            } => open_volume(
                &store,
                redis.as_deref(),
                // A check alone writes nothing: it works on a read-only store.
                Options {
                    read_only: !repair,
                    ..quiet()
                },
            )
            .and_then(|db| {
                let fs = Fs::new(
                    db,
                    FsOptions {
                        read_only: !repair,
                        ..FsOptions::default()
                    },
                )?;
                let mut progress = admin_cli::Progress::new("files and directories checked");
                let r = fs
                    .fsck(repair, &mut |n| progress.inc(n))
                    .context("volume is damaged beyond what fsck can walk")?;
                progress.finish();
                for p in &r.problems {
                    println!("problem: {p}");
                }
                for p in &r.repaired {
                    println!("repaired: {p}");
                }
                let left = r.problems.len() - r.repaired.len();
                println!(
                    "{}: {} directories, {} other files, {:.1} MiB read and verified, {} problem(s){}",
                    if left == 0 { "ok" } else { "damaged" },
                    r.dirs,
                    r.files,
                    r.bytes as f64 / 1048576.0,
                    r.problems.len(),
                    if repair { format!(", {} repaired", r.repaired.len()) } else { String::new() }
                );
                if left > 0 {
                    anyhow::bail!(
                        "{left} problem(s) {}",
                        if repair { "could not be repaired" } else { "found (--repair fixes what it can)" }
                    );
                }
                Ok(())
            }),
        };
    if let Err(e) = result {
        eprintln!("sopfs: {}", sopfs::error::one_line(&e));
        std::process::exit(1);
    }
}
