//! The coordinator's two threads: the announcer, which raises the volume's
//! stamp off the commits' path, and the listener, which hears every raise
//! so a process knows how far the log has gone without a round trip.

use super::scripts::{READ_STAMP, STAMP};
use super::servers::Servers;
use super::Trust;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shortest time between two announcements from one process. Late
/// announcements cost nothing where they are used (a local folder, whose
/// readers ask the log itself); each one wakes every process's listener.
const ANNOUNCE_PAUSE: Duration = Duration::from_millis(50);

/// The highest stamp waiting to be announced, and the thread's wake-up.
#[derive(Default)]
pub(super) struct Outbox {
    /// Highest seq handed to `publish_stamp_soon`; 0: none yet.
    pub(super) want: Mutex<u64>,
    pub(super) posted: parking_lot::Condvar,
    pub(super) stop: AtomicBool,
}

impl Outbox {
    /// Announces what the outbox holds until stopped, on a connection of
    /// its own: one round trip per wake-up, however many commits landed
    /// meanwhile. A failed announcement is retried with the next one, or
    /// within a second; a stamp is a hint, so a late one costs a probe.
    pub(super) fn run(&self, servers: &Servers, seq_key: String, channel: String) {
        let script = redis::Script::new(STAMP);
        let mut con = None;
        let mut sent = 0;
        loop {
            let want = {
                let mut want = self.want.lock();
                while *want <= sent && !self.stop.load(Ordering::Relaxed) {
                    self.posted.wait_for(&mut want, Duration::from_secs(1));
                }
                *want
            };
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            if con.is_none() {
                con = servers.connection().ok();
            }
            let Some(c) = con.as_mut() else {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            let r: redis::RedisResult<i64> = script
                .key(&seq_key)
                .arg(want)
                .arg(&channel)
                .invoke(&mut **c);
            match r {
                Ok(_) => {
                    sent = want;
                    // At most one announcement per pause: under a stream of
                    // commits each one covers many, and the server and
                    // every listener wake far less often than once a commit.
                    std::thread::sleep(ANNOUNCE_PAUSE);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "could not announce a commit stamp; retrying");
                    con = None;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// The newest commit stamp as pushed by the server: every raise of the
/// stamp is also PUBLISHed, and a thread of this process listens, so
/// `stamp_hint` knows how far the log has gone without a round trip.
#[derive(Default)]
pub(super) struct Watch {
    /// Highest stamp heard of; meaningful only while `live`.
    pub(super) seen: AtomicU64,
    /// Subscribed, and `seen` caught up by a read after subscribing.
    pub(super) live: AtomicBool,
    pub(super) stop: AtomicBool,
    /// Woken at every stamp heard: a commit that lands also releases its
    /// locks, so a lock waiter retries at once instead of at its next poll.
    pub(super) heard: parking_lot::Condvar,
    pub(super) heard_lock: Mutex<()>,
}

impl Watch {
    /// Sleeps up to `pause`, or until a stamp above `seen` is heard. A
    /// caller that knows more of the log than the stamps have said (one
    /// that read records from their copies) sleeps too: returning at once
    /// made it poll the copies in a loop until the stamps caught up.
    pub(super) fn wait_past(&self, seen: u64, pause: Duration) {
        if !self.live.load(Ordering::SeqCst) {
            std::thread::sleep(pause);
            return;
        }
        let until = Instant::now() + pause;
        let mut g = self.heard_lock.lock();
        while self.seen.load(Ordering::SeqCst) <= seen {
            if self.heard.wait_until(&mut g, until).timed_out() {
                return;
            }
        }
    }

    /// Listens on `channel` until stopped, resubscribing after any error.
    pub(super) fn run(
        &self,
        servers: &Servers,
        trust: &Trust,
        shown: &str,
        channel: String,
        keys: (String, String),
    ) {
        while !self.stop.load(Ordering::Relaxed) {
            if let Err(e) = self.listen(servers, trust, shown, &channel, &keys) {
                tracing::debug!(error = %e, "stamp subscription lost; resubscribing");
            }
            self.live.store(false, Ordering::SeqCst);
            if !self.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    fn listen(
        &self,
        servers: &Servers,
        trust: &Trust,
        shown: &str,
        channel: &str,
        (seq_key, life_key): &(String, String),
    ) -> redis::RedisResult<()> {
        let mut sub = servers
            .node_client()?
            .get_connection_with_timeout(Duration::from_secs(2))?;
        let mut ps = sub.as_pubsub();
        ps.set_read_timeout(Some(Duration::from_millis(500)))?;
        ps.subscribe(channel)?;
        // Whatever was raised before the subscription took effect, and who
        // says so: a resubscription after a failover finds a new server,
        // whose stamps are then not trusted until checked against the store.
        let mut con = servers.connection()?;
        let (now, server): (Option<u64>, Option<String>) = redis::Script::new(READ_STAMP)
            .key(seq_key)
            .key(life_key)
            .arg(super::fresh_life())
            .invoke(&mut *con)?;
        if let Some(id) = server {
            trust.note_server(&id, shown);
        }
        self.seen.fetch_max(now.unwrap_or(0), Ordering::SeqCst);
        self.live.store(true, Ordering::SeqCst);
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            match ps.get_message() {
                Ok(msg) => {
                    if let Ok(seq) = msg.get_payload::<u64>() {
                        self.seen.fetch_max(seq, Ordering::SeqCst);
                        let _g = self.heard_lock.lock();
                        self.heard.notify_all();
                    }
                }
                Err(e) if e.is_timeout() => {}
                Err(e) => return Err(e),
            }
        }
    }
}
