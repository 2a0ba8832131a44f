//! The coordinator's two threads: the announcer, which raises the volume's
//! stamp off the commits' path and pushes what the push gate held back,
//! and the listener, which hears the pushes so a process knows how far the
//! log has gone without a round trip.

use super::scripts::{PUSH_LATE, READ_STAMP, STAMP};
use super::servers::Servers;
use super::Trust;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shortest time between two announcements from one process. Late
/// announcements cost nothing where they are used (a local folder, whose
/// readers ask the log itself); each one wakes every process's listener.
const ANNOUNCE_PAUSE: Duration = Duration::from_millis(50);

/// How long a push shuts the volume's push gate, per listener that heard
/// it: the listeners together hear at most about 10,000 pushes a second,
/// however many hosts commit (none is held back below 10 listeners; at
/// 64, one push per 6 ms). Every push wakes every listener, so pushing
/// each raise cost the server and the hosts together hosts x commits
/// wake-ups (at 64 simulated hosts, a third of the machine). A raise held
/// back is pushed at the gate's end, which is well inside what the pushed
/// stamp is used for (a lookup's start; a waiter's early wake, and
/// waiters poll too).
pub(super) const PUSH_GATE_PER_LISTENER: Duration = Duration::from_micros(100);

/// How long after the gate that held back a raise of this process opens
/// it looks whether a push of it was heard, and pushes it itself if not:
/// the push owed by whoever shut the gate does not come when that process
/// died.
const PUSH_CHECK: Duration = Duration::from_millis(10);

/// What the announcer thread has to do, and when.
#[derive(Default)]
pub(super) struct Due {
    /// Highest seq handed to `publish_stamp_soon`; 0: none yet.
    pub(super) want: u64,
    /// A push of this process shut the gate: at this time, push what was
    /// raised past that seq meanwhile.
    trail: Option<(Instant, u64)>,
    /// The newest raise of this process the gate held back, when to look
    /// whether a push of it was heard, and how long to wait before the
    /// next look if not.
    check: Option<(Instant, u64, Duration)>,
}

/// What a raise of the stamp did (`STAMP`, `RELEASE`, `PUSH_LATE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Raised {
    /// The stamp was at or past the seq already.
    No,
    /// Raised; the gate was shut for this much longer, so it is pushed
    /// when the gate opens.
    Held(Duration),
    /// Raised and pushed; this process shut the gate for this long.
    Pushed(Duration),
}

impl Raised {
    /// The answer of a script that raises the stamp: a code and a time
    /// in ms.
    pub(super) fn from_reply((code, ms): (i64, i64)) -> Raised {
        let ms = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        match code {
            2 => Raised::Pushed(ms),
            1 => Raised::Held(ms),
            _ => Raised::No,
        }
    }
}

/// The announcer's work and its wake-up.
#[derive(Default)]
pub(super) struct Outbox {
    pub(super) due: Mutex<Due>,
    pub(super) posted: parking_lot::Condvar,
    pub(super) stop: AtomicBool,
}

/// One errand of the announcer.
enum Errand {
    /// Raise the stamp to this seq.
    Announce(u64),
    /// Push the stamp if it is past this seq.
    PushLate(u64),
}

impl Outbox {
    /// Notes what a raise of `seq` did: a push owes the pushes the gate
    /// holds back during its interval, a raise held back is checked.
    pub(super) fn raised(&self, seq: u64, raised: Raised) {
        let now = Instant::now();
        let mut due = self.due.lock();
        match raised {
            Raised::No | Raised::Pushed(Duration::ZERO) => return,
            Raised::Pushed(gate) => {
                let pushed = due.trail.map_or(seq, |(_, s)| s.max(seq));
                due.trail = Some((now + gate, pushed));
            }
            Raised::Held(left) => {
                // A newer raise is looked at as soon as a first one would
                // be, not when an older one that was not heard is next.
                let first = now + left + PUSH_CHECK;
                let (at, newest) = due
                    .check
                    .map_or((first, seq), |(at, s, _)| (at.min(first), s.max(seq)));
                due.check = Some((at, newest, PUSH_CHECK));
            }
        }
        self.posted.notify_one();
    }

    /// The next errand, waiting until one is due; `None` once stopped.
    fn next(&self, sent: u64, announce_after: Instant, watch: &Watch) -> Option<Errand> {
        let mut due = self.due.lock();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return None;
            }
            let now = Instant::now();
            if due.want > sent && now >= announce_after {
                return Some(Errand::Announce(due.want));
            }
            if let Some((_, pushed)) = due.trail.filter(|&(at, _)| now >= at) {
                due.trail = None;
                return Some(Errand::PushLate(pushed));
            }
            if let Some((_, seq, pause)) = due.check.filter(|&(at, ..)| now >= at) {
                if watch.heard_of(seq) {
                    due.check = None;
                    continue;
                }
                // Looked at again until heard: the gate may still be shut
                // by a process that died before its push at the end.
                let pause = (pause * 2).min(Duration::from_secs(1));
                due.check = Some((now + pause, seq, pause));
                return Some(Errand::PushLate(0));
            }
            let mut wake = now + Duration::from_secs(1);
            if due.want > sent {
                wake = wake.min(announce_after);
            }
            let check = due.check.map(|(at, seq, _)| (at, seq));
            for (at, _) in [due.trail, check].into_iter().flatten() {
                wake = wake.min(at);
            }
            self.posted.wait_until(&mut due, wake);
        }
    }

    /// Announces what the outbox holds, and pushes what the gate held back,
    /// until stopped, on a connection of its own: one round trip per
    /// errand, however many commits landed meanwhile. A failed
    /// announcement is retried with the next one, or within a second; a
    /// stamp is a hint, so a late one costs a probe.
    pub(super) fn run(
        &self,
        servers: &Servers,
        watch: &Watch,
        (seq_key, gate_key): (String, String),
        channel: String,
    ) {
        let (stamp, push_late) = (redis::Script::new(STAMP), redis::Script::new(PUSH_LATE));
        let per_listener = PUSH_GATE_PER_LISTENER.as_micros() as u64;
        let mut con = None;
        let (mut sent, mut announce_after) = (0, Instant::now());
        while let Some(errand) = self.next(sent, announce_after, watch) {
            if con.is_none() {
                con = servers.connection().ok();
            }
            let Some(c) = con.as_mut() else {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            let (script, seq) = match errand {
                Errand::Announce(want) => (&stamp, want),
                Errand::PushLate(pushed) => (&push_late, pushed),
            };
            let r: redis::RedisResult<(i64, i64)> = script
                .key(&seq_key)
                .key(&gate_key)
                .arg(seq)
                .arg(&channel)
                .arg(per_listener)
                .invoke(&mut **c);
            match (errand, r) {
                (Errand::Announce(want), Ok(reply)) => {
                    sent = want;
                    // At most one announcement per pause: under a stream of
                    // commits each one covers many.
                    announce_after = Instant::now() + ANNOUNCE_PAUSE;
                    self.raised(want, Raised::from_reply(reply));
                }
                (Errand::PushLate(_), Ok((pushed, gate_ms))) => {
                    if let Ok(pushed @ 1..) = u64::try_from(pushed) {
                        self.raised(pushed, Raised::from_reply((2, gate_ms)));
                    }
                }
                (_, Err(e)) => {
                    // An announcement is retried (`sent` did not move); a
                    // late push is not: listeners resubscribe and read the
                    // stamp once a server answers again.
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
    /// True when a push of `seq` or later was heard (a process whose
    /// listener is down cannot tell, and pushes itself).
    fn heard_of(&self, seq: u64) -> bool {
        self.live.load(Ordering::SeqCst) && self.seen.load(Ordering::SeqCst) >= seq
    }

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
