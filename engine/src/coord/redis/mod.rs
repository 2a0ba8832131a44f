//! Cluster-mode coordination through Redis: scent locks (owner token, TTL),
//! and a commit-seq stamp so a peer learns in one round trip whether the log
//! moved. Nothing here is data: if Redis forgets everything, the store still
//! holds every commit and the stamps are rebuilt from it.
//!
//! Keys, for volume id V and logical node N (in a Redis Cluster the prefix
//! is `sopfs:{V}:`, so that all of a volume's keys share one hash slot):
//! - `sopfs:V:lock:N`  owner tx id, PX = lock TTL
//! - `sopfs:V:last:N`  owner tx id, PX = 20 x TTL; outlives the lock, so a
//!   taker can tell an expired lock (owner maybe dead) from a released one
//! - `sopfs:V:seq`     newest commit seq announced
//! - `sopfs:V:push-gate` the newest seq pushed, PX = `PUSH_GATE_PER_LISTENER`
//!   per listener that heard it: while it lives raises of the stamp are not
//!   pushed (see `background.rs`)
//! - `sopfs:V:place:S` the process about to write, or queued to write, log
//!   position S (see `Coordinator::take_place`), PX = `PLACE_TTL`
//! - `sopfs:V:place-free` the first position not known to be taken, where
//!   taking a place starts looking; PX = 30 x `PLACE_TTL`
//! - `sopfs:V:rec:S`   a copy of log record S as the store holds it (see
//!   `Coordinator::mirror_record`), PX = `MIRROR_TTL` (less when big)
//! - `sopfs:V:head:S`  a copy of record S without its node and value
//!   bodies, what hosts folding the log read; PX as for `rec:`
//! - `sopfs:V:checkpoint:K` the process that writes the checkpoint of
//!   interval K (`Coordinator::claim_checkpoint`), PX = 1 hour

mod background;
mod scripts;
mod servers;

use self::background::{Outbox, Raised, Watch, PUSH_GATE_PER_LISTENER};
use self::scripts::{LEAVE_PLACE, LOCK, READ_STAMP, RELEASE, RENEW, STAMP, TAKE_PLACE, UNLOCK};
use self::servers::{Con, Servers};
use crate::coord::{Coordinator, LockOutcome, Place, PlaceView, PLACE_WINDOW, STAMP_GRACE};
use crate::error::{Error, Result};
use crate::ids::TxId;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Coordinator backed by Redis: one server (`redis://`, `rediss://`), a
/// master found through Sentinel (`redis+sentinel://`) or a Redis Cluster
/// (`redis+cluster://`); the password in the URL.
pub struct RedisCoordinator {
    servers: Arc<Servers>,
    /// The URL without its password, for messages.
    shown: String,
    idle: Mutex<Vec<Con>>,
    prefix: OnceLock<String>,
    lock: redis::Script,
    unlock: redis::Script,
    release: redis::Script,
    renew: redis::Script,
    stamp: redis::Script,
    read_stamp: redis::Script,
    take_place: redis::Script,
    leave_place: redis::Script,
    /// This process in the log's queue: a fresh random token.
    me: String,
    /// How long one operation keeps retrying an unreachable server.
    patience: Duration,
    /// Stamps the server pushes to this process (see `Watch`).
    watch: Arc<Watch>,
    /// Stamps this process announces off its commits' path.
    outbox: Arc<Outbox>,
    /// Which server vouches for the stamps, and whether to believe them.
    trust: Arc<Trust>,
    /// How far past the caller's newest record the first position not
    /// known to be taken was at the last `take_place`: where the next
    /// search likely begins (about the number of records in flight).
    place_offset: AtomicU64,
}

/// The server behind the stamps. A restart, a restore from a snapshot or a
/// failover to a replica gives it a new `run_id`, and emptying it while it
/// runs (FLUSHALL, an eviction) a new life token (`READ_STAMP`); its stamps
/// may then be older than the log, even equal to a lagging host's position:
/// from then on `stamp` and `stamp_hint` say "unknown" and the next begin
/// asks the store, until this process has published what it found there.
#[derive(Default)]
pub(super) struct Trust {
    /// The `run_id` and life token of the server that last answered for
    /// the stamp.
    server: Mutex<Option<String>>,
    /// A server change since the last stamp taken from the store.
    distrust: AtomicBool,
    /// Server changes seen (see `Coordinator::epoch`).
    epoch: AtomicU64,
}

impl Trust {
    /// Learns that `id` answered for the stamp (`shown`: the URL for logs).
    pub(super) fn note_server(&self, id: &str, shown: &str) {
        let mut known = self.server.lock();
        if known.as_deref().is_some_and(|k| k != id) {
            tracing::warn!(server = %shown, "Redis restarted or failed over: its stamps are checked against the store");
            self.epoch.fetch_add(1, Ordering::SeqCst);
            self.distrust.store(true, Ordering::SeqCst);
        }
        *known = Some(id.to_string());
    }

    fn distrusted(&self) -> bool {
        self.distrust.load(Ordering::SeqCst)
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
        crate::store::install_crypto_provider();
        let shown = redact_url(url);
        let servers = Servers::parse(url)
            .map_err(|e| Error::Coordinator(format!("bad Redis URL {shown}: {e}")))?;
        let c = RedisCoordinator {
            servers: Arc::new(servers),
            shown,
            idle: Mutex::new(Vec::new()),
            prefix: OnceLock::new(),
            lock: redis::Script::new(LOCK),
            unlock: redis::Script::new(UNLOCK),
            release: redis::Script::new(RELEASE),
            renew: redis::Script::new(RENEW),
            stamp: redis::Script::new(STAMP),
            read_stamp: redis::Script::new(READ_STAMP),
            take_place: redis::Script::new(TAKE_PLACE),
            leave_place: redis::Script::new(LEAVE_PLACE),
            me: TxId::fresh().to_string(),
            patience: Duration::from_secs(30),
            watch: Arc::new(Watch::default()),
            outbox: Arc::new(Outbox::default()),
            trust: Arc::new(Trust::default()),
            place_offset: AtomicU64::new(0),
        };
        let mut con = c.connection()?;
        redis::cmd("PING").query::<String>(&mut *con).map_err(|e| {
            Error::Coordinator(format!("Redis at {} does not answer: {e}", c.shown))
        })?;
        c.idle.lock().push(con);
        Ok(c)
    }

    fn connection(&self) -> Result<Con> {
        if let Some(c) = self.idle.lock().pop() {
            return Ok(c);
        }
        self.servers
            .connection()
            .map_err(|e| Error::Coordinator(format!("cannot reach Redis at {}: {e}", self.shown)))
    }

    /// Runs `f` on a pooled connection, reconnecting and retrying while the
    /// server is unreachable, until `until`.
    fn with<T>(
        &self,
        until: Instant,
        mut f: impl FnMut(&mut dyn redis::ConnectionLike) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let mut pause = Duration::from_millis(20);
        loop {
            let err = match self.connection() {
                Ok(mut con) => match f(&mut *con) {
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
        let (key, gate) = (self.seq_key(), self.gate_key());
        let r: Result<(i64, i64)> = self.with(Instant::now() + Duration::from_secs(1), |con| {
            self.stamp
                .key(&key)
                .key(&gate)
                .arg(seq)
                .arg(self.channel())
                .arg(PUSH_GATE_PER_LISTENER.as_micros() as u64)
                .invoke(con)
        });
        match r {
            Ok(reply) => {
                self.outbox.raised(seq, Raised::from_reply(reply));
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not publish the commit stamp");
                false
            }
        }
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

    /// `name` under this volume's prefix (a placeholder one before
    /// `attach`).
    fn scoped(&self, name: std::fmt::Arguments) -> String {
        let prefix = self
            .prefix
            .get()
            .map(String::as_str)
            .unwrap_or("sopfs:unattached:");
        format!("{prefix}{name}")
    }

    fn place_key(&self, seq: u64) -> String {
        let prefix = self
            .prefix
            .get()
            .map(String::as_str)
            .unwrap_or("sopfs:unattached:");
        seq_key_name(prefix, "place:", seq)
    }

    /// Key of the volume's first log position not known to be taken (held
    /// in the queue, or written): where `take_place` starts looking.
    fn free_place_key(&self) -> String {
        self.scoped(format_args!("place-free"))
    }

    /// Key of the copy of record `seq`; `None` before `attach`, when
    /// there is no volume to scope it to.
    fn record_key(&self, seq: u64) -> Option<String> {
        Some(seq_key_name(self.prefix.get()?, "rec:", seq))
    }

    /// Key of the copy of record `seq`'s head (`Coordinator::mirror_record`).
    fn head_key(&self, seq: u64) -> Option<String> {
        Some(seq_key_name(self.prefix.get()?, "head:", seq))
    }

    /// The copies at the keys `key` names for `seqs`, in one MGET.
    fn copies(
        &self,
        seqs: &[u64],
        key: impl Fn(u64) -> Option<String>,
    ) -> Option<Vec<Option<Vec<u8>>>> {
        let keys: Vec<String> = seqs.iter().map(|&s| key(s)).collect::<Option<_>>()?;
        if keys.is_empty() {
            return Some(Vec::new());
        }
        let r: Result<Vec<Option<Vec<u8>>>> = self.with(Instant::now() + MIRROR_PATIENCE, |con| {
            redis::cmd("MGET").arg(&keys).query(con)
        });
        match r {
            Ok(copies) if copies.len() == seqs.len() => Some(copies),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "could not read copies of records");
                None
            }
        }
    }

    fn channel(&self) -> String {
        self.scoped(format_args!("commits"))
    }

    fn seq_key(&self) -> String {
        self.scoped(format_args!("seq"))
    }

    /// Key of the volume's push gate (`scripts::STAMP`).
    fn gate_key(&self) -> String {
        self.scoped(format_args!("push-gate"))
    }

    /// Key of the volume's life token: set by the first reader of the
    /// stamp on a server, gone when the server is emptied (`READ_STAMP`).
    fn life_key(&self) -> String {
        self.scoped(format_args!("life"))
    }
}

/// A new life token: random, so a server emptied and handed a token again
/// by the same process still shows a new one.
pub(super) fn fresh_life() -> String {
    TxId::fresh().to_string()
}

/// What is copied of a record or its head: the bytes, or nothing when
/// they are too big to copy.
fn copied(bytes: &[u8]) -> &[u8] {
    if bytes.len() > MIRROR_MAX {
        &[]
    } else {
        bytes
    }
}

/// `{prefix}{kind}{seq:016x}` without the formatting machinery: a commit
/// names 130 places and a copy for every record it reads (4.5 % of the
/// 64-host simulation's CPU went to `format!` here).
fn seq_key_name(prefix: &str, kind: &str, seq: u64) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut key = String::with_capacity(prefix.len() + kind.len() + 16);
    key.push_str(prefix);
    key.push_str(kind);
    for shift in (0..16).rev() {
        key.push(HEX[((seq >> (shift * 4)) & 0xf) as usize] as char);
    }
    key
}

impl RedisCoordinator {
    /// Runs `TAKE_PLACE` with the keys of window indexes `lo..=hi` of a
    /// window of `full` positions after `after`. A queue is a courtesy: a
    /// server that does not answer at once leaves the commit to race, not
    /// to wait.
    fn take_place_in(
        &self,
        after: u64,
        (lo, hi, full): (u64, u64, u64),
        held_at: u64,
        after_taken: bool,
    ) -> Result<(i64, i64, i64)> {
        let mut names: Vec<String> = (after + lo..=after + hi)
            .map(|s| self.place_key(s))
            .collect();
        names.push(self.place_key(after + 1));
        names.push(self.free_place_key());
        names.push(self.seq_key());
        self.with(Instant::now() + PLACE_PATIENCE, |con| {
            let mut inv = self.take_place.prepare_invoke();
            for n in &names {
                inv.key(n);
            }
            inv.arg(&self.me)
                .arg(PLACE_TTL.as_millis() as u64)
                .arg(held_at)
                .arg(after)
                .arg(u8::from(after_taken))
                .arg(lo)
                .arg(full)
                .invoke(con)
        })
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
        let want = if self.servers.needs_hash_tag() {
            format!("sopfs:{{{volume_id}}}:")
        } else {
            format!("sopfs:{volume_id}:")
        };
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
            let (watch, servers) = (self.watch.clone(), self.servers.clone());
            let (trust, shown) = (self.trust.clone(), self.shown.clone());
            let (channel, keys) = (self.channel(), (self.seq_key(), self.life_key()));
            std::thread::Builder::new()
                .name("sopfs-stamps".into())
                .spawn(move || watch.run(&servers, &trust, &shown, channel, keys))
                .map_err(|e| Error::Coordinator(format!("cannot start the stamp listener: {e}")))?;
            let (outbox, servers, watch) = (
                self.outbox.clone(),
                self.servers.clone(),
                self.watch.clone(),
            );
            let (channel, keys) = (self.channel(), (self.seq_key(), self.gate_key()));
            std::thread::Builder::new()
                .name("sopfs-announce".into())
                .spawn(move || outbox.run(&servers, &watch, keys, channel))
                .map_err(|e| {
                    Error::Coordinator(format!("cannot start the stamp announcer: {e}"))
                })?;
        }
        Ok(())
    }

    fn release(&self, keys: &[u64], owner: TxId, committed: u64) {
        let asked = Instant::now();
        let mut names = self.key_names(keys);
        names.push(self.seq_key());
        names.push(self.gate_key());
        let owner_s = owner.to_string();
        let r: Result<(i64, i64)> = self.with(Instant::now() + Duration::from_secs(2), |con| {
            let mut inv = self.release.prepare_invoke();
            for n in &names {
                inv.key(n);
            }
            inv.arg(&owner_s)
                .arg(committed)
                .arg(self.channel())
                .arg(PUSH_GATE_PER_LISTENER.as_micros() as u64)
                .invoke(con)
        });
        match r {
            Ok(reply) => self.outbox.raised(committed, Raised::from_reply(reply)),
            Err(e) => {
                tracing::warn!(error = %e, "release failed; the locks will expire and the stamp heal");
                sit_out_grace(asked);
            }
        }
    }

    fn stamp_hint(&self) -> Option<u64> {
        let trusted = self.watch.live.load(Ordering::SeqCst) && !self.trust.distrusted();
        trusted.then(|| self.watch.seen.load(Ordering::SeqCst))
    }

    fn stamp(&self) -> Option<u64> {
        let (key, life) = (self.seq_key(), self.life_key());
        let got: Option<(Option<u64>, Option<String>)> = self
            .with(Instant::now() + Duration::from_millis(500), |con| {
                self.read_stamp
                    .key(&key)
                    .key(&life)
                    .arg(fresh_life())
                    .invoke(con)
            })
            .ok();
        let (got, server) = got.unwrap_or_default();
        if let Some(id) = server {
            self.trust.note_server(&id, &self.shown);
        }
        // Checked after the read, which may be the one that found a new
        // server.
        if self.trust.distrusted() {
            return None;
        }
        got
    }

    fn publish_stamp_soon(&self, seq: u64) {
        let mut due = self.outbox.due.lock();
        if seq > due.want {
            due.want = seq;
            self.outbox.posted.notify_one();
        }
    }

    fn epoch(&self) -> u64 {
        self.trust.epoch.load(Ordering::SeqCst)
    }

    fn publish_probed(&self, seq: u64, epoch: u64) {
        // Raised on the server that is there now (a connection that found
        // yet another server moved the epoch on: then the next begin asks
        // the store again).
        if self.raise_stamp(seq) && self.trust.epoch.load(Ordering::SeqCst) == epoch {
            self.trust.distrust.store(false, Ordering::SeqCst);
        }
    }

    fn publish_stamp(&self, seq: u64) {
        let asked = Instant::now();
        if !self.raise_stamp(seq) {
            sit_out_grace(asked);
        }
    }

    fn take_place(
        &self,
        after: u64,
        window: u64,
        held: Option<u64>,
        after_taken: bool,
    ) -> PlaceView {
        let window = window.clamp(1, PLACE_WINDOW);
        // Where in the window the place held now is, for the script to
        // free it if it finds an earlier one (and to stop looking there).
        let held_at = held
            .filter(|&p| p > after && p <= after + window)
            .map_or(0, |p| p - after);
        // The part of the window the search likely spans, around where
        // the last one began; then around where this one began, as the
        // answer says; the whole window if that falls short too.
        let part = |offset: u64| {
            let lo = offset.saturating_sub(PLACE_KEYS_BEFORE).clamp(1, window);
            let hi = (lo + PLACE_KEYS - 1).min(window);
            match held_at {
                0 => (lo, hi, window),
                h => (lo.min(h), hi.max(h), window),
            }
        };
        let offset_of = |pos: i64| u64::try_from(pos).unwrap_or(0).saturating_sub(after);
        let mut reply = self.take_place_in(
            after,
            part(self.place_offset.load(Ordering::Relaxed)),
            held_at,
            after_taken,
        );
        if let Ok((-1, _, from)) = reply {
            reply = self.take_place_in(after, part(offset_of(from)), held_at, after_taken);
        }
        if matches!(reply, Ok((-1, ..))) {
            reply = self.take_place_in(after, (1, window, window), held_at, after_taken);
        }
        if let Ok((_, _, free)) = reply {
            self.place_offset.store(offset_of(free), Ordering::Relaxed);
        }
        match reply {
            Ok((got, stamp, _)) => PlaceView {
                place: match u64::try_from(got) {
                    Ok(0) | Err(_) => Place::Behind,
                    Ok(i) => Place::Holds(after + i),
                },
                stamp: u64::try_from(stamp)
                    .ok()
                    .filter(|_| !self.trust.distrusted()),
            },
            Err(e) => {
                tracing::debug!(error = %e, "could not queue for the log");
                PlaceView {
                    place: Place::Unqueued,
                    stamp: None,
                }
            }
        }
    }

    fn wait_past(&self, seen: u64, pause: Duration) {
        self.watch.wait_past(seen, pause);
    }

    fn claim_checkpoint(&self, interval: u64) -> bool {
        let Some(prefix) = self.prefix.get() else {
            return true;
        };
        let key = seq_key_name(prefix, "checkpoint:", interval);
        let r: Result<Option<String>> = self.with(Instant::now() + PLACE_PATIENCE, |con| {
            redis::cmd("SET")
                .arg(&key)
                .arg(&self.me)
                .arg("NX")
                .arg("PX")
                .arg(CHECKPOINT_CLAIM_TTL.as_millis() as u64)
                .query(con)
        });
        match r {
            Ok(set) => set.is_some(),
            Err(e) => {
                tracing::debug!(error = %e, "could not claim a checkpoint; writing it");
                true
            }
        }
    }

    fn mirror_record(&self, seq: u64, bytes: &[u8], head: Option<&[u8]>) {
        // A copy too big leaves an empty one, so readers waiting on its
        // position go to the store at once instead of waiting for a copy.
        let (Some(key), Some(head_key)) = (self.record_key(seq), self.head_key(seq)) else {
            return;
        };
        let head = head.unwrap_or(bytes);
        let (bytes, head) = (copied(bytes), copied(head));
        let r: Result<()> = self.with(Instant::now() + MIRROR_PATIENCE, |con| {
            redis::pipe()
                .cmd("SET")
                .arg(&key)
                .arg(bytes)
                .arg("PX")
                .arg(mirror_ttl(bytes.len()).as_millis() as u64)
                .ignore()
                .cmd("SET")
                .arg(&head_key)
                .arg(head)
                .arg("PX")
                .arg(mirror_ttl(head.len()).as_millis() as u64)
                .ignore()
                .query(con)
        });
        if let Err(e) = r {
            tracing::debug!(seq, error = %e, "could not keep a copy of the record");
        }
    }

    fn mirrored_records(&self, seqs: &[u64]) -> Option<Vec<Option<Vec<u8>>>> {
        self.copies(seqs, |s| self.record_key(s))
    }

    fn mirrored_heads(&self, seqs: &[u64]) -> Option<Vec<Option<Vec<u8>>>> {
        self.copies(seqs, |s| self.head_key(s))
    }

    fn leave_place(&self, seq: u64) {
        let (key, free) = (self.place_key(seq), self.free_place_key());
        let r: Result<i64> = self.with(Instant::now() + PLACE_PATIENCE, |con| {
            self.leave_place
                .key(&key)
                .key(&free)
                .arg(&self.me)
                .arg(seq)
                .invoke(con)
        });
        if let Err(e) = r {
            tracing::debug!(error = %e, "could not leave a place in the log's queue (it expires)");
        }
    }
}

/// How long the claim of a checkpoint's interval stays: longer than any
/// host takes to come due within one interval (hosts fold the same log).
const CHECKPOINT_CLAIM_TTL: Duration = Duration::from_secs(3600);
/// How long a place in the log's queue holds: long enough for its holder
/// to read the records before it and write its own on a slow store; a
/// holder that died costs those behind it this long, once.
const PLACE_TTL: Duration = Duration::from_secs(2);
/// How many positions before where the last search for a place began a
/// search is sent the keys of (places given up since lower where it
/// begins).
const PLACE_KEYS_BEFORE: u64 = 8;
/// How many positions' keys a search for a place is sent at first (it
/// reads one or two of them as a rule).
const PLACE_KEYS: u64 = 32;
/// How long a queue request waits for an unreachable server before the
/// commit goes on without a place.
const PLACE_PATIENCE: Duration = Duration::from_millis(200);
/// How long a copy of a record up to [`MIRROR_FULL_TTL_BYTES`] stays:
/// hosts following the log read a record within moments of its landing;
/// one further behind reads the store, as without copies. A bigger copy
/// stays for a share of this in proportion (`mirror_ttl`), so the
/// server's memory stays bounded by the volume's records per second
/// times 64 KiB times this, whatever the records carry (files of 200 KiB
/// written at 100 MB/s would otherwise hold a gigabyte).
const MIRROR_TTL: Duration = Duration::from_secs(10);
/// Copies up to this size stay the whole [`MIRROR_TTL`].
const MIRROR_FULL_TTL_BYTES: usize = 64 * 1024;
/// Records bigger than this are not copied (a clone's or a big write's):
/// few, and they would crowd the server. Their copy is empty. Big enough
/// for the record of a group of small files (16 writers of one mount put
/// 16 files of 4 KiB and their leaves in one record, 70-130 KiB: with a
/// limit of 64 KiB the other mounts read most of them from the store).
const MIRROR_MAX: usize = 256 * 1024;
/// How long copying or reading copies waits for an unreachable server
/// before the store is asked instead.
const MIRROR_PATIENCE: Duration = Duration::from_millis(100);

/// How long the copy of a record of `len` bytes stays (see [`MIRROR_TTL`]):
/// 10 s up to 64 KiB, 2.5 s at 256 KiB.
fn mirror_ttl(len: usize) -> Duration {
    if len <= MIRROR_FULL_TTL_BYTES {
        MIRROR_TTL
    } else {
        MIRROR_TTL.mul_f64(MIRROR_FULL_TTL_BYTES as f64 / len as f64)
    }
}

/// Waits out what is left of [`STAMP_GRACE`] since `asked`: a commit whose
/// stamp did not go out returns only once every reader trusting the stamp
/// has to look at the store for it (see `DbInner::fresh_state`).
fn sit_out_grace(asked: Instant) {
    let left = STAMP_GRACE.saturating_sub(asked.elapsed());
    tracing::warn!(
        ?left,
        "the commit stamp could not be published: waiting out the grace"
    );
    std::thread::sleep(left);
}

impl Drop for RedisCoordinator {
    fn drop(&mut self) {
        // The listener notices within its read timeout and ends.
        self.watch.stop.store(true, Ordering::Relaxed);
        self.outbox.stop.store(true, Ordering::Relaxed);
        self.outbox.posted.notify_one();
        // The newest stamp goes out before the process may end (the
        // announcer thread may not get to it; raising twice is harmless).
        let want = self.outbox.due.lock().want;
        if want > 0 && self.prefix.get().is_some() {
            self.raise_stamp(want);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{redact_url, seq_key_name};

    #[test]
    fn seq_keys_are_sixteen_hex_digits() {
        for seq in [0, 1, 0xabc, u64::MAX, 0x0123_4567_89ab_cdef] {
            assert_eq!(
                seq_key_name("sopfs:v:", "rec:", seq),
                format!("sopfs:v:rec:{seq:016x}")
            );
        }
    }

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
