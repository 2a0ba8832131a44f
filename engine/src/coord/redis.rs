//! Cluster-mode coordination through Redis: scent locks (owner token, TTL),
//! and a commit-seq stamp so a peer learns in one round trip whether the log
//! moved. Nothing here is data: if Redis forgets everything, the store still
//! holds every commit and the stamps are rebuilt from it.
//!
//! Keys, for volume id V and logical node N:
//! - `sopfs:V:lock:N`  owner tx id, PX = lock TTL
//! - `sopfs:V:last:N`  owner tx id, PX = 20 x TTL; outlives the lock, so a
//!   taker can tell an expired lock (owner maybe dead) from a released one
//! - `sopfs:V:seq`     newest commit seq announced

use crate::coord::{Coordinator, LockOutcome};
use crate::error::{Error, Result};
use crate::ids::TxId;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const LOCK: &str = r#"
local owner, ttl = ARGV[1], tonumber(ARGV[2])
local n = #KEYS - 1
for i = 1, n, 2 do
  local cur = redis.call('GET', KEYS[i])
  if cur and cur ~= owner then return {0, cur} end
end
local out = {1, tonumber(redis.call('GET', KEYS[#KEYS]) or '-1')}
for i = 1, n, 2 do
  local last = redis.call('GET', KEYS[i + 1])
  if last and last ~= owner then table.insert(out, last) end
  redis.call('SET', KEYS[i], owner, 'PX', ttl)
  redis.call('SET', KEYS[i + 1], owner, 'PX', ttl * 20)
end
return out
"#;

const UNLOCK: &str = r#"
for i = 1, #KEYS, 2 do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
  if redis.call('GET', KEYS[i + 1]) == ARGV[1] then redis.call('DEL', KEYS[i + 1]) end
end
return 1
"#;

/// UNLOCK and STAMP in one: KEYS = lock/last pairs, then the seq key.
const RELEASE: &str = r#"
local n = #KEYS - 1
for i = 1, n, 2 do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
  if redis.call('GET', KEYS[i + 1]) == ARGV[1] then redis.call('DEL', KEYS[i + 1]) end
end
local cur = tonumber(redis.call('GET', KEYS[#KEYS]) or '0')
if tonumber(ARGV[2]) > cur then
  redis.call('SET', KEYS[#KEYS], ARGV[2])
  redis.call('PUBLISH', ARGV[3], ARGV[2])
end
return 1
"#;

const RENEW: &str = r#"
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[1] then return 0 end
end
for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
return 1
"#;

const STAMP: &str = r#"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('PUBLISH', ARGV[2], ARGV[1])
end
return 1
"#;

/// Coordinator backed by a Redis server (`redis://` or `rediss://` URL,
/// password in the URL).
pub struct RedisCoordinator {
    client: redis::Client,
    /// The URL without its password, for messages.
    shown: String,
    idle: Mutex<Vec<redis::Connection>>,
    prefix: OnceLock<String>,
    lock: redis::Script,
    unlock: redis::Script,
    release: redis::Script,
    renew: redis::Script,
    stamp: redis::Script,
    /// How long one operation keeps retrying an unreachable server.
    patience: Duration,
    /// Stamps the server pushes to this process (see `Watch`).
    watch: Arc<Watch>,
    /// Stamps this process announces off its commits' path.
    outbox: Arc<Outbox>,
    /// The `run_id` of the server this process's connections last met.
    server: Mutex<Option<String>>,
    /// The server changed (a restart, a restore from a snapshot, a failover
    /// to a replica) since this process last published a stamp it took
    /// from the store: the stamp there may be older than the log, even
    /// equal to this process's position, so `stamp` says "unknown" and the
    /// next begin asks the store (and republishes).
    distrust: AtomicBool,
    /// Server changes seen (see `Coordinator::epoch`).
    epoch: AtomicU64,
}

/// Shortest time between two announcements from one process. Late
/// announcements cost nothing where they are used (a local folder, whose
/// readers ask the log itself); each one wakes every process's listener.
const ANNOUNCE_PAUSE: Duration = Duration::from_millis(50);

/// The highest stamp waiting to be announced, and the thread's wake-up.
#[derive(Default)]
struct Outbox {
    /// Highest seq handed to `publish_stamp_soon`; 0: none yet.
    want: Mutex<u64>,
    posted: parking_lot::Condvar,
    stop: AtomicBool,
}

impl Outbox {
    /// Announces what the outbox holds until stopped, on a connection of
    /// its own: one round trip per wake-up, however many commits landed
    /// meanwhile. A failed announcement is retried with the next one, or
    /// within a second; a stamp is a hint, so a late one costs a probe.
    fn run(&self, client: redis::Client, seq_key: String, channel: String) {
        let script = redis::Script::new(STAMP);
        let mut con: Option<redis::Connection> = None;
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
                con = client
                    .get_connection_with_timeout(Duration::from_secs(1))
                    .ok();
                if let Some(c) = &con {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                }
            }
            let Some(c) = con.as_mut() else {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            let r: redis::RedisResult<i64> = script.key(&seq_key).arg(want).arg(&channel).invoke(c);
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
struct Watch {
    /// Highest stamp heard of; meaningful only while `live`.
    seen: AtomicU64,
    /// Subscribed, and `seen` caught up by a read after subscribing.
    live: AtomicBool,
    stop: AtomicBool,
    /// Woken at every stamp heard: a commit that lands also releases its
    /// locks, so a lock waiter retries at once instead of at its next poll.
    heard: parking_lot::Condvar,
    heard_lock: Mutex<()>,
}

impl Watch {
    /// Sleeps up to `pause`, or until a stamp above `seen` is heard.
    fn wait_past(&self, seen: u64, pause: Duration) {
        if !self.live.load(Ordering::SeqCst) {
            std::thread::sleep(pause);
            return;
        }
        let until = Instant::now() + pause;
        let mut g = self.heard_lock.lock();
        while self.seen.load(Ordering::SeqCst) == seen {
            if self.heard.wait_until(&mut g, until).timed_out() {
                return;
            }
        }
    }

    /// Listens on `channel` until stopped, resubscribing after any error.
    fn run(&self, client: redis::Client, channel: String, seq_key: String) {
        while !self.stop.load(Ordering::Relaxed) {
            if let Err(e) = self.listen(&client, &channel, &seq_key) {
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
        client: &redis::Client,
        channel: &str,
        seq_key: &str,
    ) -> redis::RedisResult<()> {
        let timeout = Some(Duration::from_secs(2));
        let mut sub = client.get_connection_with_timeout(Duration::from_secs(2))?;
        let mut ps = sub.as_pubsub();
        ps.set_read_timeout(Some(Duration::from_millis(500)))?;
        ps.subscribe(channel)?;
        // Whatever was raised before the subscription took effect.
        let mut con = client.get_connection_with_timeout(Duration::from_secs(2))?;
        con.set_read_timeout(timeout)?;
        let now: Option<u64> = redis::cmd("GET").arg(seq_key).query(&mut con)?;
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

/// `url` with any password replaced, fit for logs and messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..s + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

impl RedisCoordinator {
    /// Connects to `url` and checks the server answers.
    pub fn connect(url: &str) -> Result<Self> {
        let shown = redact_url(url);
        let client = redis::Client::open(url)
            .map_err(|e| Error::Coordinator(format!("bad Redis URL {shown}: {e}")))?;
        let c = RedisCoordinator {
            client,
            shown,
            idle: Mutex::new(Vec::new()),
            prefix: OnceLock::new(),
            lock: redis::Script::new(LOCK),
            unlock: redis::Script::new(UNLOCK),
            release: redis::Script::new(RELEASE),
            renew: redis::Script::new(RENEW),
            stamp: redis::Script::new(STAMP),
            patience: Duration::from_secs(30),
            watch: Arc::new(Watch::default()),
            outbox: Arc::new(Outbox::default()),
            server: Mutex::new(None),
            distrust: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
        };
        let mut con = c.connection()?;
        redis::cmd("PING").query::<String>(&mut con).map_err(|e| {
            Error::Coordinator(format!("Redis at {} does not answer: {e}", c.shown))
        })?;
        c.idle.lock().push(con);
        Ok(c)
    }

    fn connection(&self) -> Result<redis::Connection> {
        if let Some(c) = self.idle.lock().pop() {
            return Ok(c);
        }
        let con = self
            .client
            .get_connection_with_timeout(Duration::from_secs(2))
            .map_err(|e| {
                Error::Coordinator(format!("cannot reach Redis at {}: {e}", self.shown))
            })?;
        let _ = con.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = con.set_write_timeout(Some(Duration::from_secs(5)));
        let mut con = con;
        self.note_server(&mut con)?;
        Ok(con)
    }

    /// Learns which server a new connection reached. A restart, a restore
    /// or a failover always breaks the old connections, so every new one
    /// checks: a different `run_id` means the stamps there may have gone
    /// back, and they are not trusted until this process has asked the
    /// store and published what it found.
    fn note_server(&self, con: &mut redis::Connection) -> Result<()> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(con)
            .map_err(|e| Error::Coordinator(format!("Redis at {}: {e}", self.shown)))?;
        let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(|v| v.trim().to_string())
        else {
            return Ok(());
        };
        let mut known = self.server.lock();
        if known.as_ref().is_some_and(|k| *k != id) {
            tracing::warn!(server = %self.shown, "Redis restarted or failed over: its stamps are checked against the store");
            self.epoch.fetch_add(1, Ordering::SeqCst);
            self.distrust.store(true, Ordering::SeqCst);
        }
        *known = Some(id);
        Ok(())
    }

    /// Runs `f` on a pooled connection, reconnecting and retrying while the
    /// server is unreachable, until `until`.
    fn with<T>(
        &self,
        until: Instant,
        mut f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let mut pause = Duration::from_millis(20);
        loop {
            let err = match self.connection() {
                Ok(mut con) => match f(&mut con) {
                    Ok(v) => {
                        self.idle.lock().push(con);
                        return Ok(v);
                    }
                    Err(e) => Error::Coordinator(format!("Redis at {}: {e}", self.shown)),
                },
                Err(e) => e,
            };
            if Instant::now() + pause >= until {
                return Err(err);
            }
            tracing::warn!(error = %err, "Redis unavailable, retrying");
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Raises the stamp to `seq` (never lowers it); false if the server
    /// could not be reached.
    fn raise_stamp(&self, seq: u64) -> bool {
        let key = self.seq_key();
        let r: Result<i64> = self.with(Instant::now() + Duration::from_secs(1), |con| {
            self.stamp
                .key(&key)
                .arg(seq)
                .arg(self.channel())
                .invoke(con)
        });
        if let Err(e) = &r {
            tracing::debug!(error = %e, "could not publish the commit stamp");
        }
        r.is_ok()
    }

    fn key_names(&self, keys: &[u64]) -> Vec<String> {
        let p = self
            .prefix
            .get()
            .map(String::as_str)
            .unwrap_or("sopfs:unattached:");
        let mut sorted = keys.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        sorted
            .iter()
            .flat_map(|k| [format!("{p}lock:{k:016x}"), format!("{p}last:{k:016x}")])
            .collect()
    }

    fn channel(&self) -> String {
        format!(
            "{}commits",
            self.prefix
                .get()
                .map(String::as_str)
                .unwrap_or("sopfs:unattached:")
        )
    }

    fn seq_key(&self) -> String {
        format!(
            "{}seq",
            self.prefix
                .get()
                .map(String::as_str)
                .unwrap_or("sopfs:unattached:")
        )
    }
}

impl Coordinator for RedisCoordinator {
    fn lock(
        &self,
        keys: &[u64],
        owner: TxId,
        ttl: Duration,
        deadline: Instant,
    ) -> Result<LockOutcome> {
        if keys.is_empty() {
            return Ok(LockOutcome::default());
        }
        // The stamp rides along (last key): the caller learns how far the
        // log has gone without probing the store.
        let mut names = self.key_names(keys);
        names.push(self.seq_key());
        let owner_s = owner.to_string();
        let started = Instant::now();
        let mut pause = Duration::from_micros(200);
        loop {
            let seen = self.watch.seen.load(Ordering::SeqCst);
            let reply: Vec<redis::Value> = self.with(deadline, |con| {
                let mut inv = self.lock.prepare_invoke();
                for n in &names {
                    inv.key(n);
                }
                inv.arg(&owner_s).arg(ttl.as_millis() as u64).invoke(con)
            })?;
            let ok = matches!(reply.first(), Some(redis::Value::Int(1)));
            if ok {
                let stamp = match reply.get(1) {
                    Some(redis::Value::Int(s)) if *s >= 0 => Some(*s as u64),
                    _ => None,
                };
                let expired_owners = reply[2..]
                    .iter()
                    .filter_map(|v| match v {
                        redis::Value::BulkString(b) => std::str::from_utf8(b)
                            .ok()
                            .and_then(|s| u128::from_str_radix(s, 16).ok())
                            .map(TxId),
                        _ => None,
                    })
                    .collect();
                return Ok(LockOutcome {
                    expired_owners,
                    stamp,
                });
            }
            if Instant::now() + pause >= deadline {
                return Err(Error::Timeout(started.elapsed()));
            }
            self.watch.wait_past(
                seen,
                pause + Duration::from_micros(rand::random_range(0..200)),
            );
            // A held lock is held for about one store write and one round trip:
            // poll at that scale rather than backing off to tens of ms.
            pause = (pause * 2).min(Duration::from_millis(2));
        }
    }

    fn unlock(&self, keys: &[u64], owner: TxId) {
        if keys.is_empty() {
            return;
        }
        let names = self.key_names(keys);
        let owner_s = owner.to_string();
        let r: Result<i64> = self.with(Instant::now() + Duration::from_secs(2), |con| {
            let mut inv = self.unlock.prepare_invoke();
            for n in &names {
                inv.key(n);
            }
            inv.arg(&owner_s).invoke(con)
        });
        if let Err(e) = r {
            tracing::warn!(error = %e, "unlock failed; the locks will expire");
        }
    }

    fn renew(&self, keys: &[u64], owner: TxId, ttl: Duration) -> Result<()> {
        let names: Vec<String> = self.key_names(keys).into_iter().step_by(2).collect();
        let owner_s = owner.to_string();
        let ok: i64 = self.with(Instant::now() + self.patience, |con| {
            let mut inv = self.renew.prepare_invoke();
            for n in &names {
                inv.key(n);
            }
            inv.arg(&owner_s).arg(ttl.as_millis() as u64).invoke(con)
        })?;
        if ok == 1 {
            Ok(())
        } else {
            Err(Error::conflict("", "a lock was lost before renewal"))
        }
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn attach(&self, volume_id: &str) -> Result<()> {
        let want = format!("sopfs:{volume_id}:");
        let mut first = false;
        let got = self.prefix.get_or_init(|| {
            first = true;
            want.clone()
        });
        if *got != want {
            return Err(Error::InvalidArgument(
                "one coordinator cannot serve two volumes".into(),
            ));
        }
        if first {
            let (watch, client) = (self.watch.clone(), self.client.clone());
            let (channel, seq_key) = (self.channel(), self.seq_key());
            std::thread::Builder::new()
                .name("sopfs-stamps".into())
                .spawn(move || watch.run(client, channel, seq_key))
                .map_err(|e| Error::Coordinator(format!("cannot start the stamp listener: {e}")))?;
            let (outbox, client) = (self.outbox.clone(), self.client.clone());
            let (channel, seq_key) = (self.channel(), self.seq_key());
            std::thread::Builder::new()
                .name("sopfs-announce".into())
                .spawn(move || outbox.run(client, seq_key, channel))
                .map_err(|e| {
                    Error::Coordinator(format!("cannot start the stamp announcer: {e}"))
                })?;
        }
        Ok(())
    }

    fn release(&self, keys: &[u64], owner: TxId, committed: u64) {
        let mut names = self.key_names(keys);
        names.push(self.seq_key());
        let owner_s = owner.to_string();
        let r: Result<i64> = self.with(Instant::now() + Duration::from_secs(2), |con| {
            let mut inv = self.release.prepare_invoke();
            for n in &names {
                inv.key(n);
            }
            inv.arg(&owner_s)
                .arg(committed)
                .arg(self.channel())
                .invoke(con)
        });
        if let Err(e) = r {
            tracing::warn!(error = %e, "release failed; the locks will expire and the stamp heal");
        }
    }

    fn stamp_hint(&self) -> Option<u64> {
        self.watch
            .live
            .load(Ordering::SeqCst)
            .then(|| self.watch.seen.load(Ordering::SeqCst))
    }

    fn stamp(&self) -> Option<u64> {
        let key = self.seq_key();
        let got = self
            .with(Instant::now() + Duration::from_millis(500), |con| {
                redis::cmd("GET").arg(&key).query::<Option<u64>>(con)
            })
            .ok()
            .flatten();
        // Checked after the read, whose connection may be the one that
        // found a new server.
        if self.distrust.load(Ordering::SeqCst) {
            return None;
        }
        got
    }

    fn publish_stamp_soon(&self, seq: u64) {
        let mut want = self.outbox.want.lock();
        if seq > *want {
            *want = seq;
            self.outbox.posted.notify_one();
        }
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn publish_probed(&self, seq: u64, epoch: u64) {
        // Raised on the server that is there now (a connection that found
        // yet another server moved the epoch on: then the next begin asks
        // the store again).
        if self.raise_stamp(seq) && self.epoch.load(Ordering::SeqCst) == epoch {
            self.distrust.store(false, Ordering::SeqCst);
        }
    }

    fn publish_stamp(&self, seq: u64) {
        self.raise_stamp(seq);
    }
}

impl Drop for RedisCoordinator {
    fn drop(&mut self) {
        // The listener notices within its read timeout and ends.
        self.watch.stop.store(true, Ordering::Relaxed);
        self.outbox.stop.store(true, Ordering::Relaxed);
        self.outbox.posted.notify_one();
        // The newest stamp goes out before the process may end (the
        // announcer thread may not get to it; raising twice is harmless).
        let want = *self.outbox.want.lock();
        if want > 0 && self.prefix.get().is_some() {
            self.publish_stamp(want);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("redis://:hunter2@h:6379/0"),
            "redis://:***@h:6379/0"
        );
        assert_eq!(redact_url("rediss://u:p@h"), "rediss://u:***@h");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
    }
}
