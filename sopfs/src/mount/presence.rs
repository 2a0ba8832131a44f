//! A mount's heartbeat in the volume: `members/<id>` rewritten every few
//! seconds, so `sopfs status` on any host lists the daemons serving it.

use crate::fs::Fs;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often a daemon rewrites its announcement.
pub const BEAT: Duration = Duration::from_secs(5);
/// A member silent for longer than this is taken for gone.
pub const LIVE_WITHIN: Duration = Duration::from_secs(20);

/// What a daemon says about itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Announcement {
    /// Host name.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// Where it is mounted.
    pub mountpoint: String,
    /// "embedded" or "cluster".
    pub mode: String,
    /// sopfs version.
    pub version: String,
    /// Start time, Unix seconds.
    pub started: u64,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Beats until dropped; the drop withdraws the announcement.
pub struct Heartbeat {
    id: String,
    fs: Arc<Fs>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    /// Announces `me` on the volume of `fs` now and every [`BEAT`].
    pub fn start(fs: Arc<Fs>, me: Announcement) -> std::io::Result<Heartbeat> {
        let id = format!("{}-{}-{:08x}", me.host, me.pid, rand::random::<u32>());
        let body = serde_json::to_vec(&me).unwrap_or_default();
        if let Err(e) = fs.db().announce(&id, body.clone()) {
            tracing::warn!(error = %e, "cannot announce this mount in the volume");
        }
        let (stop, rx) = std::sync::mpsc::channel::<()>();
        let (fs2, id2) = (fs.clone(), id.clone());
        let thread = std::thread::Builder::new()
            .name("sopfs-heartbeat".into())
            .spawn(move || {
                let mut failing = false;
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(BEAT) {
                    match fs2.db().announce(&id2, body.clone()) {
                        Ok(()) if failing => {
                            failing = false;
                            tracing::info!("heartbeat written again");
                        }
                        Ok(()) => {}
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(error = %e, "heartbeat not written");
                        }
                        Err(_) => {}
                    }
                }
            })?;
        Ok(Heartbeat {
            id,
            fs,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Err(e) = self.fs.db().withdraw(&self.id) {
            tracing::warn!(error = %e, "announcement not withdrawn");
        }
    }
}

/// Seconds since the Unix epoch now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
