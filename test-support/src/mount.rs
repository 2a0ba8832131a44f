//! Real `sopfs mount` daemons on real FUSE mounts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `sopfs` binary of this build: beside the test binary's `deps/`
/// folder (cargo builds it for the sopfs crate's integration tests).
pub fn sopfs_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target folder");
    let bin = dir.join("sopfs");
    assert!(bin.exists(), "{} not built", bin.display());
    bin
}

/// A copy of [`sopfs_bin`] in a folder of its own under the system's temp
/// folder, that any user may enter and run: for tests that run the binary
/// as another user, from a checkout those users may not enter (a clone in
/// a `mktemp -d` folder, mode 0700). Removed when the returned guard drops.
pub fn sopfs_bin_for_anyone() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the binary's folder");
    let bin = dir.path().join("sopfs");
    std::fs::copy(sopfs_bin(), &bin).expect("copy the binary");
    (dir, bin)
}

/// Aborts the FUSE connection of the mount at `p` (`umount -f`, root
/// only). The unmount itself may fail (busy): the abort is what counts.
pub fn abort_connection(p: &Path) {
    let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_FORCE);
}

/// Runs `sopfs fsck STORE [--redis URL]` and panics with what it said
/// unless it found the volume clean.
pub fn assert_fsck_clean(store: &str, redis: Option<&str>) {
    let mut cmd = Command::new(sopfs_bin());
    cmd.args(["fsck", store]);
    if let Some(r) = redis {
        cmd.args(["--redis", r]);
    }
    let out = cmd.output().expect("run sopfs fsck");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "fsck: {said}");
    assert!(
        said.contains("ok:") && said.contains(" 0 problem"),
        "fsck: {said}"
    );
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
        Self::start_env(store, dir, redis, opts, &[])
    }

    /// Mounts `store` on `dir` with `-o opts` and the environment
    /// variables `env` set for the daemon.
    pub fn start_env(
        store: &str,
        dir: &Path,
        redis: Option<&str>,
        opts: &[&str],
        env: &[(&str, &str)],
    ) -> Mount {
        let log = dir.with_extension("log");
        let mut cmd = Command::new(sopfs_bin());
        cmd.envs(env.iter().copied());
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

    /// SIGKILLs the daemon; the mount point is left stale, as a crash
    /// leaves it (the next `sopfs mount` on it must recover it).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILLs the daemon and aborts its connection (as `umount -f` does)
    /// before waiting for it: a daemon killed while a thread of it waits in
    /// the kernel on a directory lock that a hung request holds finishes
    /// dying only then.
    pub fn kill_and_abort(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            abort_connection(&self.dir);
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
