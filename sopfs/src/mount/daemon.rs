//! Opening a volume and serving it: the mount daemon's life from fork to exit.
//!
//! `--background` forks before any thread exists (the engine and Redis start
//! threads), and the parent waits on a pipe until the child's mount answers.
//! SIGTERM / SIGINT / SIGHUP commit what is buffered, then unmount; the
//! session ends and the process exits 0.

use crate::fs::{Fs, FsOptions, Stale};
use crate::macros::run::{LlmConfig, RunConfig};
use crate::mount::exporter;
use crate::mount::fuse::FuseFs;
use crate::mount::metrics::Metrics;
use crate::mount::presence::{unix_now, Announcement, Heartbeat};
use crate::mount::virt::Control;
use anyhow::{bail, Context};
use engine::redact_url;
use engine::{AtRest, Db, Options, RedisCoordinator, Secret, StoreLocation};
use nix::sys::signal::{SigSet, Signal};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What `sopfs mount` was asked to do.
#[derive(Clone, Debug)]
pub struct MountArgs {
    /// Store location (path, file:// or s3:// URL).
    pub store: String,
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// Coordinator URL; None for embedded mode.
    pub redis: Option<String>,
    /// Return once the mount answers, leaving the daemon running.
    pub background: bool,
    /// Mount options (`-o`), comma-separated.
    pub options: Vec<String>,
}

/// Opens the volume at `store`: embedded without `redis`, shared with it.
pub fn open_volume(store: &str, redis: Option<&str>, mut opts: Options) -> anyhow::Result<Db> {
    let location = StoreLocation::parse(store)?;
    if opts.at_rest.key.is_none() {
        opts.at_rest.key = key_from_env()?;
    }
    let db = match redis {
        None => Db::open(location, opts),
        Some(url) => {
            let coord = RedisCoordinator::connect(url)?;
            Db::open_shared(location, opts, Arc::new(coord))
        }
    }
    .map_err(|e| {
        let read_only_store = matches!(&e, engine::Error::Io { source, .. }
            if source.raw_os_error() == Some(libc::EROFS));
        let e = anyhow::Error::from(e);
        if read_only_store {
            e.context("the store is read-only (mount it with -o ro to read it)")
        } else {
            e
        }
    })
    .with_context(|| format!("cannot open volume {store}"))?;
    Ok(db)
}

/// The volume key named by the environment: the file `SOPFS_KEY_FILE`,
/// else the value of `SOPFS_KEY`.
pub fn key_from_env() -> anyhow::Result<Option<Secret>> {
    if let Some(path) = std::env::var_os("SOPFS_KEY_FILE") {
        return Ok(Some(Secret::from_file(Path::new(&path))?));
    }
    match std::env::var("SOPFS_KEY") {
        Ok(k) => Ok(Some(
            Secret::new(k.into_bytes()).context("SOPFS_KEY is not a usable key")?,
        )),
        Err(_) => Ok(None),
    }
}

/// Reads a compression setting: `zstd` (level 3), `zstd:N` (N from 1 to
/// 19), or `none`.
pub fn parse_compression(s: &str) -> anyhow::Result<Option<i32>> {
    let level = match s {
        "none" | "off" => return Ok(None),
        "zstd" => 3,
        x => x
            .strip_prefix("zstd:")
            .and_then(|n| n.parse::<i32>().ok())
            .filter(|n| (1..=19).contains(n))
            .with_context(|| {
                format!("compression {x:?}: expected zstd, zstd:N (N from 1 to 19) or none")
            })?,
    };
    Ok(Some(level))
}

/// True when `p` is a FUSE mount point whose daemon is gone: no sopfs
/// daemon serves it, and it does not answer. A dead connection answers
/// ENOTCONN once the daemon has exited, or nothing at all while a thread
/// of a killed daemon is stuck in the kernel (a reverse invalidation
/// waiting for a directory lock that a hung request holds), so `p` is
/// looked at last, from a thread of its own, for at most two seconds. Any
/// other filesystem mounted there answers, and is left alone.
fn is_stale(p: &Path) -> bool {
    let place = place_of(p);
    fuse_mounted_at(&place) && daemons_of(&place).is_empty() && !answers(p)
}

/// True when a stat of `p` returns within two seconds with anything but
/// ENOTCONN. A stat that hangs stays blocked in its thread until the
/// connection is aborted.
fn answers(p: &Path) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    let q = p.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("sopfs-probe".into())
        .spawn(move || {
            let _ = tx.send(std::fs::metadata(&q).map_err(|e| e.raw_os_error()));
        });
    if spawned.is_err() {
        return true;
    }
    match rx.recv_timeout(Duration::from_secs(2)) {
        Ok(Err(Some(libc::ENOTCONN))) | Err(_) => false,
        Ok(_) => true,
    }
}

/// `p` made absolute with its parent resolved, without looking at `p`
/// itself (which may be a mount that hangs).
fn place_of(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|c| c.join(name))
            .unwrap_or(abs),
        _ => abs,
    }
}

/// True when mountinfo lists a FUSE mount at `p` (an absolute path).
fn fuse_mounted_at(p: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|l| {
        let mut fields = l.split(' ');
        let point = fields.nth(4).map(unescape_mountinfo);
        let fstype = l.split(" - ").nth(1).and_then(|r| r.split(' ').next());
        point.is_some_and(|m| Path::new(&m) == p) && fstype.is_some_and(|t| t.starts_with("fuse"))
    })
}

/// A mountinfo path: spaces, tabs, newlines and backslashes come as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (b[i], oct) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Aborts the FUSE connection of the dead mount at `p` (MNT_FORCE, root
/// only): processes hung on it get ENOTCONN, and a killed daemon stuck in
/// the kernel can finish dying. Without root the lazy unmount that follows
/// still detaches it.
fn abort_dead_connection(p: &Path) {
    match nix::mount::umount2(p, nix::mount::MntFlags::MNT_FORCE) {
        Ok(()) => tracing::info!(mountpoint = %p.display(), "aborted and unmounted a dead mount"),
        Err(e) => {
            tracing::debug!(mountpoint = %p.display(), error = %e, "forced unmount of a dead mount")
        }
    }
}

/// Unmounts `p` (fusermount3, then umount as root); `lazy` detaches a busy mount.
pub fn unmount(p: &Path, lazy: bool) -> anyhow::Result<()> {
    let flag = if lazy { "-uz" } else { "-u" };
    let ok = std::process::Command::new("fusermount3")
        .arg(flag)
        .arg(p)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Ok(());
    }
    let flags = if lazy {
        nix::mount::MntFlags::MNT_DETACH
    } else {
        nix::mount::MntFlags::empty()
    };
    nix::mount::umount2(p, flags).with_context(|| format!("cannot unmount {}", p.display()))
}

/// What `-o` asked of the daemon itself (beyond the kernel's options).
struct DaemonOpts {
    read_only: bool,
    allow_exec: bool,
    allow_other: bool,
    cache_dir: Option<std::path::PathBuf>,
    metrics: Option<String>,
    read_ahead_kb: u32,
    /// `-o store_timeout=SECS`: how long an unreachable store is waited for
    /// before an operation fails with EIO.
    store_timeout: Option<std::time::Duration>,
    /// `-o compress=zstd[:N]`: compression of a volume this mount formats.
    compression: Option<i32>,
    /// `-o key_file=PATH`: the volume's key.
    key: Option<Secret>,
    /// `-o trash_days=N`: sets the volume's trash (0: off).
    trash_days: Option<u32>,
    /// `-o no_record_copies`: no copies of records in Redis.
    no_record_copies: bool,
}

/// Readahead of a mount unless `-o read_ahead_kb=N` says otherwise: the
/// kernel's default (128 KiB) makes a sequential reader ask for one small
/// piece per round trip; 1 MiB lets each FUSE read carry four whole chunks.
const READ_AHEAD_KB: u32 = 1024;

/// Value cache of a mount on S3: read-ahead keeps 32 MiB of a big file's
/// 4 MiB objects in flight there, and the objects loaded ahead must not
/// push each other out before they are read.
const S3_VALUE_CACHE: usize = 64 << 20;

/// FUSE worker threads of a mount on a local folder.
const FUSE_THREADS: usize = 4;
/// FUSE worker threads of a mount on S3.
const FUSE_THREADS_S3: usize = 16;

fn fuse_config(args: &MountArgs) -> anyhow::Result<(fuser::Config, DaemonOpts)> {
    use fuser::MountOption as M;
    let mut cfg = fuser::Config::default();
    // Several workers: an invalidation sent from one handler may need another
    // to write back an mmap'd page. On S3 a request mostly waits for the
    // network, and the commits of requests served at once go out in one
    // record (group commit): more workers, bigger groups.
    let on_s3 = args.store.starts_with("s3://");
    cfg.n_threads = Some(if on_s3 { FUSE_THREADS_S3 } else { FUSE_THREADS });
    cfg.clone_fd = true;
    let mut read_only = false;
    let mut allow_exec = false;
    let mut cache_dir = None;
    let mut metrics = None;
    let mut read_ahead_kb = READ_AHEAD_KB;
    let mut store_timeout = None;
    let mut compression = None;
    let mut key = None;
    let mut trash_days = None;
    let mut no_record_copies = false;
    cfg.mount_options = vec![
        M::FSName(args.store.clone()),
        M::Subtype("sopfs".into()),
        M::DefaultPermissions,
    ];
    for o in args.options.iter().flat_map(|o| o.split(',')) {
        match o.trim() {
            ""
            | "rw"
            | "default_permissions"
            | "_netdev"
            | "nofail"
            | "auto"
            | "noauto"
            | "user"
            | "nouser"
            | "defaults" => {}
            "ro" => {
                read_only = true;
                cfg.mount_options.push(M::RO);
            }
            "macro_exec" => allow_exec = true,
            "no_record_copies" => no_record_copies = true,
            x if x.starts_with("cache_dir=") => {
                let dir = std::path::PathBuf::from(&x["cache_dir=".len()..]);
                // Found out now, not at the first big write.
                tempfile::tempfile_in(&dir).with_context(|| {
                    format!("cache_dir {} is not a writable folder", dir.display())
                })?;
                cache_dir = Some(dir);
            }
            x if x.starts_with("read_ahead_kb=") => {
                let v = &x["read_ahead_kb=".len()..];
                read_ahead_kb = v
                    .parse()
                    .ok()
                    .filter(|&kb| kb <= 1 << 20)
                    .with_context(|| format!("read_ahead_kb={v}: expected KiB, 0 to 1048576"))?;
            }
            x if x.starts_with("store_timeout=") => {
                let v = &x["store_timeout=".len()..];
                let secs = v
                    .parse::<u64>()
                    .ok()
                    .filter(|s| (1..=86_400).contains(s))
                    .with_context(|| format!("store_timeout={v}: expected seconds, 1 to 86400"))?;
                store_timeout = Some(std::time::Duration::from_secs(secs));
            }
            x if x.starts_with("compress=") => {
                compression = parse_compression(&x["compress=".len()..])?;
            }
            x if x.starts_with("key_file=") => {
                let path = Path::new(&x["key_file=".len()..]);
                key = Some(Secret::from_file(path)?);
            }
            x if x.starts_with("trash_days=") => {
                let v = &x["trash_days=".len()..];
                trash_days = Some(
                    v.parse::<u32>()
                        .ok()
                        .filter(|d| *d <= 36_500)
                        .with_context(|| format!("trash_days={v}: expected days, 0 to 36500"))?,
                );
            }
            x if x.starts_with("metrics=") => {
                let addr = &x["metrics=".len()..];
                if addr.parse::<std::net::SocketAddr>().is_err() {
                    bail!("metrics={addr}: expected IP:PORT, like 127.0.0.1:9567");
                }
                metrics = Some(addr.to_string());
            }
            "allow_other" => cfg.acl = fuser::SessionACL::All,
            "allow_root" => cfg.acl = fuser::SessionACL::RootAndOwner,
            "dev" => cfg.mount_options.push(M::Dev),
            "nodev" => cfg.mount_options.push(M::NoDev),
            "suid" => cfg.mount_options.push(M::Suid),
            "nosuid" => cfg.mount_options.push(M::NoSuid),
            "exec" => cfg.mount_options.push(M::Exec),
            "noexec" => cfg.mount_options.push(M::NoExec),
            "atime" => cfg.mount_options.push(M::Atime),
            "noatime" => cfg.mount_options.push(M::NoAtime),
            x if x.starts_with("x-") || x.starts_with("redis=") => {}
            x => bail!("unknown mount option {x:?}"),
        }
    }
    let allow_other = matches!(cfg.acl, fuser::SessionACL::All);
    Ok((
        cfg,
        DaemonOpts {
            read_only,
            allow_exec,
            allow_other,
            cache_dir,
            metrics,
            read_ahead_kb,
            store_timeout,
            compression,
            key,
            trash_days,
            no_record_copies,
        },
    ))
}

/// Daemons serving `mountpoint` (found by their command line in /proc).
fn daemons_of(mountpoint: &Path) -> Vec<i32> {
    let want = place_of(mountpoint);
    let me = std::process::id() as i32;
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
            // A renamed copy (`sopfs-1.2`, a bench's `sopfs-before`) counts.
            let program = |a: &&[u8]| {
                let name = Path::new(std::ffi::OsStr::from_bytes(a)).file_name();
                name.is_some_and(|n| n.as_bytes().starts_with(b"sopfs"))
            };
            let is_sopfs_mount =
                args.first().is_some_and(program) && args.iter().any(|a| *a == b"mount");
            is_sopfs_mount
                && args.iter().skip(1).any(|a| {
                    // Never canonicalize a mount point itself: a dead one
                    // may hang whoever looks at it.
                    let p = Path::new(std::ffi::OsStr::from_bytes(a));
                    let p = match std::fs::read_link(format!("/proc/{pid}/cwd")) {
                        Ok(cwd) if p.is_relative() => cwd.join(p),
                        _ => p.to_path_buf(),
                    };
                    p.is_absolute() && place_of(&p) == want
                })
        })
        .collect()
}

/// `sopfs umount`: unmounts, then waits until the daemon has committed and
/// exited, so the volume can be mounted again at once.
pub fn unmount_and_wait(p: &Path) -> anyhow::Result<()> {
    let pids = daemons_of(p);
    unmount(p, false)?;
    let start = std::time::Instant::now();
    for pid in pids {
        while !has_exited(pid) {
            if start.elapsed() > Duration::from_secs(60) {
                bail!("unmounted, but the daemon (pid {pid}) has not exited after 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// True when process `pid` is gone, or a zombie with no thread left. A
/// leader thread shows as a zombie while its other threads still exit,
/// and they hold the process's files (the store's lock) until the last of
/// them is done: a mount started then would find the volume in use.
fn has_exited(pid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("")
            .to_string()
    };
    let state = field("State:");
    (state.starts_with('Z') || state.starts_with('X')) && field("Threads:") == "1"
}

/// Mounts and serves until unmounted or signalled.
pub fn run_mount(args: MountArgs) -> anyhow::Result<()> {
    let (cfg, dopts) = fuse_config(&args)?;
    if is_stale(&args.mountpoint) {
        tracing::warn!(mountpoint = %args.mountpoint.display(), "recovering a stale mount point");
        abort_dead_connection(&args.mountpoint);
        if fuse_mounted_at(&place_of(&args.mountpoint)) {
            unmount(&args.mountpoint, true)?;
        }
    }
    let meta = std::fs::metadata(&args.mountpoint)
        .with_context(|| format!("mount point {}", args.mountpoint.display()))?;
    if !meta.is_dir() {
        bail!(
            "mount point {} is not a directory",
            args.mountpoint.display()
        );
    }
    let mut ready = if args.background {
        Some(daemonize()?)
    } else {
        None
    };
    let result = serve(&args, cfg, &dopts, &mut ready);
    if let (Some(pipe), Err(e)) = (ready, &result) {
        report(pipe, &crate::error::one_line(e));
    }
    result
}

/// Forks; the parent exits with the child's verdict; the child returns the
/// pipe on which it reports readiness.
fn daemonize() -> anyhow::Result<std::fs::File> {
    let (r, w) = nix::unistd::pipe().context("pipe")?;
    // SAFETY-free: nix wraps fork; no thread exists yet in this process.
    match fork_process()? {
        Some(_child) => {
            drop(w);
            let mut r = std::fs::File::from(r);
            let mut msg = String::new();
            let _ = r.read_to_string(&mut msg);
            if msg == "ok" {
                std::process::exit(0);
            }
            if msg.is_empty() {
                msg = "the daemon exited before the mount was ready".into();
            }
            eprintln!("sopfs: {msg}");
            std::process::exit(1);
        }
        None => {
            drop(r);
            let _ = nix::unistd::setsid();
            let null = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .context("/dev/null")?;
            let _ = nix::unistd::dup2_stdin(&null);
            let _ = nix::unistd::dup2_stdout(&null);
            // Stray writes to stderr go where the logs go, never to the
            // caller's stderr: a caller reading that to its end (a shell's
            // `$(...)`, a supervisor's pipe) would wait for the unmount.
            let log = log_file();
            let _ = nix::unistd::dup2_stderr(log.as_ref().unwrap_or(&null));
            Ok(std::fs::File::from(w))
        }
    }
}

/// The file `SOPFS_LOG_FILE` names, opened to append (created if
/// missing); `None` when it names none or cannot be opened (logs then go
/// to stderr).
pub fn log_file() -> Option<std::fs::File> {
    let path = std::env::var_os("SOPFS_LOG_FILE")?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .ok()
}

fn report(mut pipe: std::fs::File, msg: &str) {
    let _ = pipe.write_all(msg.as_bytes());
}

fn serve(
    args: &MountArgs,
    cfg: fuser::Config,
    dopts: &DaemonOpts,
    ready: &mut Option<std::fs::File>,
) -> anyhow::Result<()> {
    // Signals go to one waiting thread; every thread started later inherits the mask.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGHUP);
    signals.thread_block().context("blocking signals")?;

    // Resolved before mounting: once mounted, a stat of it would wait on
    // this very daemon.
    let mount_path =
        std::fs::canonicalize(&args.mountpoint).unwrap_or_else(|_| args.mountpoint.clone());
    // Lookups and stats start from the stamp Redis pushes to us (no round
    // trip each); opens still ask (close-to-open), and commits validate
    // against the store whatever a read saw.
    let defaults = Options::default();
    let opts = Options {
        pushed_stamps: true,
        record_copies: !dopts.no_record_copies,
        store_timeout: dopts.store_timeout.unwrap_or(defaults.store_timeout),
        at_rest: AtRest {
            compression: dopts.compression,
            key: dopts.key.clone(),
        },
        read_only: dopts.read_only,
        value_cache_bytes: if args.store.starts_with("s3://") {
            S3_VALUE_CACHE
        } else {
            defaults.value_cache_bytes
        },
        ..defaults
    };
    let db = open_volume(&args.store, args.redis.as_deref(), opts)?;
    let fs = Arc::new(Fs::new(
        db,
        FsOptions {
            read_only: dopts.read_only,
            cache_dir: dopts.cache_dir.clone().unwrap_or_else(std::env::temp_dir),
            ..FsOptions::default()
        },
    )?);
    if let Some(days) = dopts.trash_days {
        if dopts.read_only {
            bail!("trash_days cannot be set by a read-only mount");
        }
        fs.set_trash_days(days)
            .context("setting the volume's trash_days")?;
    }
    let run_cfg = RunConfig {
        allow_exec: dopts.allow_exec,
        llm: LlmConfig::from_env(),
        caller: None,
    };
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = &dopts.metrics {
        exporter::start(addr, &fs, metrics.clone())?;
    }
    let control = Control {
        metrics,
        config: config_text(args, dopts, fs.options()),
    };
    let adapter = FuseFs::new(fs.clone(), Duration::from_secs(1), run_cfg, control);
    let session = fuser::Session::new(adapter, &args.mountpoint, &cfg)
        .with_context(|| format!("cannot mount on {}", args.mountpoint.display()))?;
    install_invalidation(&fs, session.notifier());
    let mountpoint = args.mountpoint.clone();
    let fs_for_signal = fs.clone();
    std::thread::Builder::new()
        .name("sopfs-signals".into())
        .spawn(move || {
            if let Ok(sig) = signals.wait() {
                tracing::info!(signal = ?sig, "unmounting");
                if let Err(e) = fs_for_signal.flush_all() {
                    tracing::error!(error = %e, "commit at shutdown failed");
                }
                if unmount(&mountpoint, false).is_ok() {
                    return;
                }
                // Busy (open files, a shell inside): detach it. The kernel
                // keeps the session while files stay open; what they buffered
                // is committed, so leave after a grace period.
                let _ = unmount(&mountpoint, true);
                std::thread::sleep(Duration::from_secs(2));
                if let Err(e) = fs_for_signal.flush_all() {
                    tracing::error!(error = %e, "commit at shutdown failed");
                    std::process::exit(1);
                }
                tracing::info!("detached with files still open; exiting");
                std::process::exit(0);
            }
        })
        .context("signal thread")?;
    // A read-only mount writes nothing to the store, not even its heartbeat.
    let announce = |fs: Arc<Fs>, me: Announcement| -> anyhow::Result<Option<Heartbeat>> {
        if dopts.read_only {
            return Ok(None);
        }
        Ok(Some(Heartbeat::start(fs, me).context("heartbeat thread")?))
    };
    let heartbeat = announce(
        fs.clone(),
        Announcement {
            host: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            pid: std::process::id(),
            mountpoint: mount_path.display().to_string(),
            mode: if args.redis.is_some() {
                "cluster"
            } else {
                "embedded"
            }
            .into(),
            version: env!("CARGO_PKG_VERSION").into(),
            started: unix_now(),
            read_only: dopts.read_only,
        },
    )?;
    tracing::info!(store = %redact_url(&args.store), mountpoint = %args.mountpoint.display(), "mounted");
    let background = session.spawn().context("FUSE session")?;
    // Before the parent is told: a program started right after the mount
    // command meets the readahead the mount asked for.
    tune_read_ahead(&mount_path, dopts.read_ahead_kb);
    if let Some(pipe) = ready.take() {
        // Closing the pipe lets the waiting parent exit.
        report(pipe, "ok");
    }
    let _reaper = {
        let weak = Arc::downgrade(&fs);
        std::thread::Builder::new()
            .name("sopfs-reaper".into())
            .spawn(move || {
                while let Some(fs) = weak.upgrade() {
                    fs.reap_forgotten();
                    drop(fs);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
            .context("reaper thread")?
    };
    // The trash is emptied of expired hours soon after the mount, then
    // hourly (a no-op while the volume's trash is off).
    let _trash = (!dopts.read_only)
        .then(|| {
            let weak = Arc::downgrade(&fs);
            std::thread::Builder::new()
                .name("sopfs-trash".into())
                .spawn(move || {
                    let mut wait = Duration::from_secs(5);
                    loop {
                        let until = std::time::Instant::now() + wait;
                        while std::time::Instant::now() < until {
                            std::thread::sleep(Duration::from_millis(500));
                            if weak.strong_count() == 0 {
                                return;
                            }
                        }
                        let Some(fs) = weak.upgrade() else { return };
                        match fs.empty_trash() {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(removed = n, "trash emptied of expired hours"),
                            Err(e) => tracing::warn!(error = %e, "emptying the trash failed"),
                        }
                        wait = Duration::from_secs(3_600);
                    }
                })
        })
        .transpose()
        .context("trash thread")?;
    background.join().context("FUSE session")?;
    drop(heartbeat);
    fs.flush_all()?;
    fs.reap_all();
    tracing::info!("unmounted");
    Ok(())
}

/// Sets the readahead of the mount's backing device (the kernel offers FUSE
/// only its default at init). Best effort: without write access to /sys the
/// mount keeps the kernel's default.
fn tune_read_ahead(mountpoint: &Path, kb: u32) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let want = mountpoint.to_string_lossy();
    // The newest mount on the path is ours (mountinfo lists in mount order).
    let Some(dev) = info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.get(4) == Some(&&*want)).then(|| f.get(2).map(|d| d.to_string()))?
    }) else {
        return;
    };
    let knob = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    match std::fs::write(&knob, kb.to_string()) {
        Ok(()) => tracing::debug!(%knob, kb, "readahead set"),
        Err(e) => tracing::info!(%knob, error = %e, "readahead left at the kernel's default"),
    }
}

/// The text of `/.sopfs/config`: what this mount runs with, without secrets.
fn config_text(args: &MountArgs, dopts: &DaemonOpts, fs: &FsOptions) -> String {
    let options: Vec<String> = args
        .options
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.is_empty())
        .map(|o| match o.strip_prefix("redis=") {
            Some(url) => format!("redis={}", redact_url(url)),
            None => o.to_string(),
        })
        .collect();
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let v = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "store": redact_url(&args.store),
        "redis": args.redis.as_deref().map(redact_url),
        "mode": if args.redis.is_some() { "cluster" } else { "embedded" },
        "mountpoint": args.mountpoint.display().to_string(),
        "options": options,
        "read_only": dopts.read_only,
        "allow_other": dopts.allow_other,
        "macro_exec": dopts.allow_exec,
        "cache_dir": fs.cache_dir.display().to_string(),
        "metrics": dopts.metrics,
        "read_ahead_kb": dopts.read_ahead_kb,
        "attr_timeout_secs": 1,
        "host": host,
        "pid": std::process::id(),
    });
    let mut text = serde_json::to_string_pretty(&v).unwrap_or_default();
    text.push('\n');
    text
}

/// Pushes other hosts' changes out of the kernel's caches: at every open
/// (from the handler) and every 100 ms (from a thread of its own).
fn install_invalidation(fs: &Arc<Fs>, notifier: fuser::Notifier) {
    if !fs.db().is_shared() {
        return;
    }
    fs.set_invalidator(Arc::new(move |stale: &[Stale]| {
        for s in stale {
            // ENOENT: the kernel holds nothing for it; nothing to drop.
            let _ = match s {
                Stale::Inode(ino) => notifier.inval_inode(fuser::INodeNo(*ino), 0, 0),
                Stale::Entry(dir, name) => {
                    notifier.inval_entry(fuser::INodeNo(*dir), std::ffi::OsStr::from_bytes(name))
                }
                // Cached attributes expire within their one-second TTL.
                Stale::All => Ok(()),
            };
        }
    }));
    let weak = Arc::downgrade(fs);
    let spawned = std::thread::Builder::new()
        .name("sopfs-inval".into())
        .spawn(move || {
            while let Some(fs) = weak.upgrade() {
                fs.refresh(false);
                drop(fs);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no invalidation thread: other hosts' changes show after the cache TTL");
    }
}

#[allow(unsafe_code)]
fn fork_process() -> anyhow::Result<Option<nix::unistd::Pid>> {
    // SAFETY: called before this process starts any thread, so the child
    // inherits a consistent single-threaded state.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        nix::unistd::ForkResult::Parent { child } => Ok(Some(child)),
        nix::unistd::ForkResult::Child => Ok(None),
    }
}
