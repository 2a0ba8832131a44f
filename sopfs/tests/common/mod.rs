//! Test support: real `sopfs` daemons on real FUSE mounts, and a private
//! redis-server on a free port.
#![allow(dead_code)]

pub mod power_cut;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The daemon binary under test.
pub fn sopfs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sopfs")
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// True when `p` is a mount point now.
pub fn is_mounted(p: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let p = p.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| m == p))
}

/// A `sopfs mount` daemon in the foreground, as a child process.
pub struct Mount {
    /// The mount point.
    pub dir: PathBuf,
    child: Option<Child>,
    /// Daemon log (SOPFS_LOG_FILE).
    pub log: PathBuf,
}

impl Mount {
    /// Mounts `store` on a fresh directory under `base`.
    pub fn start(store: &str, base: &Path, name: &str, redis: Option<&str>) -> Mount {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).expect("mount point");
        Self::start_at(store, &dir, redis, &["allow_other"])
    }

    /// Mounts `store` on `dir` with `-o opts`.
    pub fn start_at(store: &str, dir: &Path, redis: Option<&str>, opts: &[&str]) -> Mount {
        let log = dir.with_extension("log");
        let mut cmd = Command::new(sopfs_bin());
        cmd.arg("mount").arg(store).arg(dir);
        if let Some(r) = redis {
            cmd.arg("--redis").arg(r);
        }
        if !opts.is_empty() {
            cmd.arg("-o").arg(opts.join(","));
        }
        cmd.env("SOPFS_LOG_FILE", &log)
            .env("SOPFS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn sopfs mount");
        let start = Instant::now();
        while !is_mounted(dir) {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                panic!("sopfs mount exited with {status}: {err}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "mount did not appear"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Mount {
            dir: dir.to_path_buf(),
            child: Some(child),
            log,
        }
    }

    /// A path inside the mount.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// SIGKILLs the daemon; the mount point is left stale.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Unmounts and waits for the daemon; returns its exit status.
    pub fn unmount(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let out = Command::new(sopfs_bin())
            .arg("umount")
            .arg(&self.dir)
            .output()
            .expect("sopfs umount");
        if !out.status.success() {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.dir)
                .status();
        }
        let start = Instant::now();
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.unmount();
        } else if is_mounted(&self.dir) {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.dir)
                .status();
        }
    }
}

/// Runs a shell command line in `dir`; panics with its output on failure.
pub fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "`{script}` failed:\n{text}");
    text
}

/// True when a program is on PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A tool the test needs: under CI its absence fails the test; elsewhere it
/// skips with a note.
pub fn require(tool: &str) -> bool {
    if have(tool) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{tool} is missing (run .ci/run to install the test tools)"
    );
    eprintln!("skipped: {tool} is not installed");
    false
}

/// A private redis-server on a free loopback port, killed on drop.
pub struct RedisServer {
    child: Child,
    /// redis:// URL of it.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one and waits until it answers. Tests run in parallel and a
    /// free port can be picked twice: a server that lost the port exits, and
    /// one that answers must be ours (its process id), else try another port.
    pub fn start() -> RedisServer {
        Self::start_with_password(None)
    }

    /// Like [`RedisServer::start`], requiring `password` when given (the URL carries it).
    pub fn start_with_password(password: Option<&str>) -> RedisServer {
        for _ in 0..20 {
            if let Some(s) = Self::try_start(password) {
                return s;
            }
        }
        panic!("redis-server did not start on any free port");
    }

    fn try_start(password: Option<&str>) -> Option<RedisServer> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(password.map(|p| ["--requirepass", p]).into_iter().flatten())
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if child.try_wait().ok().flatten().is_some() {
                return None;
            }
            if redis_pid(port, password) == Some(child.id()) {
                let auth = password.map(|p| format!(":{p}@")).unwrap_or_default();
                return Some(RedisServer {
                    child,
                    url: format!("redis://{auth}127.0.0.1:{port}/"),
                    _dir: dir,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

/// The process id of the redis-server answering on `port`.
fn redis_pid(port: u16, password: Option<&str>) -> Option<u32> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    if let Some(p) = password {
        s.write_all(format!("AUTH {p}\r\n").as_bytes()).ok()?;
        let mut ok = [0u8; 5];
        s.read_exact(&mut ok).ok()?;
        if &ok != b"+OK\r\n" {
            return None;
        }
    }
    s.write_all(b"INFO server\r\n").ok()?;
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while !text.contains("process_id:") || !text[text.find("process_id:")?..].contains('\n') {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let rest = &text[text.find("process_id:")? + "process_id:".len()..];
    rest.lines().next()?.trim().parse().ok()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
