//! Background writes of a big transaction's staged value blobs: a few
//! threads shared by the process write them while the transaction goes on
//! producing the next ones, so framing, copying and the store's file
//! creation overlap. A transaction waits for its own writes before anything
//! reads them and before its commit.

use crate::error::{Error, Result};
use crate::store::BlobStore;
use object_store::path::Path;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, OnceLock};

/// Writer threads of the process for local stores, where more writers
/// than this only queue on the disk.
const LOCAL_THREADS: usize = 3;
/// Writer threads for network stores: each write waits a round trip, so
/// more of them in flight keep the link busy.
const REMOTE_THREADS: usize = 16;
/// Writes one transaction may have queued before it waits for the oldest
/// (each holds one chunk in memory).
pub(crate) const MAX_PENDING: usize = 8;
const REMOTE_MAX_PENDING: usize = 16;

type Job = Box<dyn FnOnce() + Send>;

fn pool(remote: bool) -> &'static Mutex<Sender<Job>> {
    static LOCAL: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();
    static REMOTE: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();
    let (cell, threads, name) = if remote {
        (&REMOTE, REMOTE_THREADS, "sopfs-stager-r")
    } else {
        (&LOCAL, LOCAL_THREADS, "sopfs-stager-")
    };
    cell.get_or_init(|| start_pool(name, threads))
}

/// Starts `threads` threads named `name0`, `name1`, ... that run the jobs
/// sent to the returned channel.
fn start_pool(name: &str, threads: usize) -> Mutex<Sender<Job>> {
    let (tx, rx) = channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..threads {
        let rx = rx.clone();
        let _ = std::thread::Builder::new()
            .name(format!("{name}{i}"))
            .spawn(move || loop {
                let job = rx.lock().recv();
                match job {
                    Ok(job) => job(),
                    Err(_) => return,
                }
            });
    }
    Mutex::new(tx)
}

/// Runs `job` on a writer thread (of the pool for a `remote` store), not
/// waiting for it (a stashed write; clean-up after a commit); `count`
/// tracks the caller's unfinished jobs. Without a pool thread it runs here.
pub(crate) fn background(count: &Arc<AtomicUsize>, remote: bool, job: Box<dyn FnOnce() + Send>) {
    count.fetch_add(1, Ordering::SeqCst);
    let counter = count.clone();
    let counted: Job = Box::new(move || {
        job();
        counter.fetch_sub(1, Ordering::SeqCst);
    });
    if let Err(std::sync::mpsc::SendError(job)) = pool(remote).lock().send(counted) {
        job();
    }
}

/// Deletes of blobs no commit names (a failed commit's, a dropped stash's):
/// at most this many wait at once; past it they are left to GC.
const MAX_CLEANUPS: usize = 100_000;

/// Runs a clean-up `job` (deletes that only save GC work). For a `remote`
/// store it runs on threads of its own, never on the caller's: during an
/// outage each delete waits out its retries, and a failing commit or a
/// closing file must not wait behind them, nor may they hold up the writes
/// others are waiting for. A local delete is quick: it runs here, done
/// when the caller goes on. `count` tracks the caller's unfinished jobs.
pub(crate) fn cleanup(count: &Arc<AtomicUsize>, remote: bool, job: Box<dyn FnOnce() + Send>) {
    if !remote {
        job();
        return;
    }
    static POOL: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();
    static QUEUED: AtomicUsize = AtomicUsize::new(0);
    if QUEUED.load(Ordering::Relaxed) >= MAX_CLEANUPS {
        tracing::debug!("clean-up queue full; left for GC");
        return;
    }
    let pool = POOL.get_or_init(|| start_pool("sopfs-cleanup-", 2));
    QUEUED.fetch_add(1, Ordering::Relaxed);
    count.fetch_add(1, Ordering::SeqCst);
    let counter = count.clone();
    let counted: Job = Box::new(move || {
        job();
        QUEUED.fetch_sub(1, Ordering::Relaxed);
        counter.fetch_sub(1, Ordering::SeqCst);
    });
    if let Err(std::sync::mpsc::SendError(job)) = pool.lock().send(counted) {
        job();
    }
}

/// Waits (up to `limit`) until the jobs `count` tracks have run: a closing
/// volume leaves no clean-up behind for a process that is about to exit.
pub(crate) fn drain(count: &AtomicUsize, limit: std::time::Duration) {
    let start = std::time::Instant::now();
    while count.load(Ordering::SeqCst) > 0 && start.elapsed() < limit {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Where the writer threads report each write's outcome.
type Done = (Sender<Result<()>>, Receiver<Result<()>>);

/// One transaction's outstanding staged writes. Most transactions stage
/// nothing: the channel is made at the first write.
#[derive(Default)]
pub(crate) struct Pending {
    done: Option<Done>,
    outstanding: usize,
    /// The first failure, reported by the next wait.
    failed: Option<Error>,
}

impl Pending {
    /// Queues a write of `data` to `path` (waiting first if too many are queued).
    pub fn submit(&mut self, store: Arc<BlobStore>, path: Path, data: Vec<u8>) -> Result<()> {
        let remote = !store.probe_is_cheap();
        let max = if remote {
            REMOTE_MAX_PENDING
        } else {
            MAX_PENDING
        };
        while self.outstanding >= max {
            self.wait_one();
        }
        let done = self.done.get_or_insert_with(channel).0.clone();
        let job: Job = Box::new(move || {
            let _ = done.send(store.put_fresh(&path, data));
        });
        match pool(remote).lock().send(job) {
            Ok(()) => {
                self.outstanding += 1;
                Ok(())
            }
            // No pool thread (could not spawn): the job comes back; run it here.
            Err(std::sync::mpsc::SendError(job)) => {
                job();
                self.outstanding += 1;
                Ok(())
            }
        }
    }

    fn wait_one(&mut self) {
        let Some((_, rx)) = &self.done else {
            self.outstanding = 0;
            return;
        };
        if self.outstanding == 0 {
            return;
        }
        let r = rx.recv().unwrap_or_else(|_| {
            Err(Error::Io {
                path: "staged value".into(),
                source: std::io::Error::other("staging writer thread gone"),
            })
        });
        self.outstanding -= 1;
        if let Err(e) = r {
            self.failed.get_or_insert(e);
        }
    }

    /// Waits for every queued write; the first failure, if any.
    pub fn wait_all(&mut self) -> Result<()> {
        while self.outstanding > 0 {
            self.wait_one();
        }
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// True when writes are still queued.
    pub fn busy(&self) -> bool {
        self.outstanding > 0
    }
}
