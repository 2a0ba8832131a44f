//! Background writes of a big transaction's staged value blobs: a few
//! threads shared by the process write them while the transaction goes on
//! producing the next ones, so framing, copying and the store's file
//! creation overlap. A transaction waits for its own writes before anything
//! reads them and before its commit.

use crate::error::{Error, Result};
use crate::store::BlobStore;
use object_store::path::Path;
use parking_lot::Mutex;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, OnceLock};

/// Writer threads of the process.
const THREADS: usize = 3;
/// Writes one transaction may have queued before it waits for the oldest.
pub(crate) const MAX_PENDING: usize = 8;

type Job = Box<dyn FnOnce() + Send>;

fn pool() -> &'static Mutex<Sender<Job>> {
    static POOL: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..THREADS {
            let rx = rx.clone();
            let _ = std::thread::Builder::new()
                .name(format!("sopfs-stager-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
        }
        Mutex::new(tx)
    })
}

/// One transaction's outstanding staged writes.
pub(crate) struct Pending {
    done_tx: Sender<Result<()>>,
    done_rx: Receiver<Result<()>>,
    outstanding: usize,
    /// The first failure, reported by the next wait.
    failed: Option<Error>,
}

impl Default for Pending {
    fn default() -> Self {
        let (done_tx, done_rx) = channel();
        Pending {
            done_tx,
            done_rx,
            outstanding: 0,
            failed: None,
        }
    }
}

impl Pending {
    /// Queues a write of `data` to `path` (waiting first if too many are queued).
    pub fn submit(&mut self, store: Arc<BlobStore>, path: Path, data: Vec<u8>) -> Result<()> {
        while self.outstanding >= MAX_PENDING {
            self.wait_one();
        }
        let done = self.done_tx.clone();
        let job: Job = Box::new(move || {
            let _ = done.send(store.put_fresh(&path, data));
        });
        match pool().lock().send(job) {
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
        if self.outstanding == 0 {
            return;
        }
        let r = self.done_rx.recv().unwrap_or_else(|_| {
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
