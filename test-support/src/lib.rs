//! Test support for every sopfs suite: the real servers a test starts and
//! stops (a private `redis-server`, plain, with a password or TLS-only; a
//! local S3 server), free loopback ports, real `sopfs mount` daemons, crash
//! workers, an object store with per-request latency, a TCP relay a test
//! can cut, and shell helpers.
//! Everything binds to 127.0.0.1 only.

pub mod child;
pub mod fault_proxy;
pub mod latency;
pub mod mount;
pub mod redis;
pub mod redis_ha;
pub mod s3;
pub mod shell;
pub mod tcp_relay;

pub use fault_proxy::{Fault, FaultProxy};
pub use mount::{assert_fsck_clean, is_mounted, sopfs_bin, sopfs_bin_for_anyone, Mount};
pub use redis::RedisServer;
pub use redis_ha::{ClusterSet, SentinelSet};
pub use s3::{moto, MotoServer, S3_BUCKET};
pub use shell::{have, require, run_ok, sh};
pub use tcp_relay::TcpRelay;

/// Every file under `root`, with its size (a store's objects, in tests
/// that look at what a volume keeps on disk).
pub fn files_under(root: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let len = e.metadata().map_or(0, |m| m.len());
                out.push((p, len));
            }
        }
    }
    out
}

/// True when `data` holds `needle` anywhere.
pub fn holds(data: &[u8], needle: &[u8]) -> bool {
    data.windows(needle.len()).any(|w| w == needle)
}

/// A loopback port nothing listens on right now (parallel tests can still
/// pick one twice: launchers check that what answers is theirs).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

static KILL_AT_EXIT: std::sync::Mutex<Vec<std::process::Child>> = std::sync::Mutex::new(Vec::new());

/// Kills `child` when the test binary exits (servers shared by every test
/// of one binary).
pub(crate) fn kill_at_exit(child: std::process::Child) {
    static HOOKED: std::sync::Once = std::sync::Once::new();
    KILL_AT_EXIT.lock().expect("lock").push(child);
    HOOKED.call_once(|| {
        extern "C" fn kill_children() {
            if let Ok(mut children) = KILL_AT_EXIT.lock() {
                for c in children.iter_mut() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
        // libc's atexit is the only hook that runs when the test harness exits.
        #[allow(unsafe_code)]
        // SAFETY: registers a plain function with no captured state.
        unsafe {
            libc::atexit(kill_children);
        }
    });
}
