//! Read-ahead inside the daemon: when a file is read sequentially, the next
//! chunks are loaded by helper threads into the engine's value cache, so the
//! kernel's next read finds them in memory instead of waiting for the store.

use crate::ns::schema::{chunk_key, CHUNK, CONTENT};
use engine::Reader;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

/// Chunks loaded ahead of a sequential reader (8 MiB, a quarter of the
/// default value cache).
const WINDOW: u64 = 32;
/// The same on a network store (32 MiB, half of a mount's value cache on
/// S3): there a big file's chunks are stored 16 to an object, so this is 8
/// objects in flight; with 4, cold reads at 50 ms a request reached 0.7x
/// JuiceFS.
const REMOTE_WINDOW: u64 = 128;
/// Helper threads: store reads of cold chunks wait on the disk, so more of
/// them than cores keep it busier.
const THREADS: usize = 4;
/// Helper threads on a network store, where each read waits a round trip:
/// the window's reads all in flight at once.
const REMOTE_THREADS: usize = 16;
/// Files whose read position is remembered.
const TRACKED: usize = 1024;

#[derive(Clone, Copy)]
struct Stream {
    /// Where the next sequential read would start.
    next: u64,
    /// Chunks below this index were already asked for.
    ahead: u64,
}

/// Watches reads and loads what a sequential reader will want next.
pub struct Prefetcher {
    queue: SyncSender<(u64, u64)>,
    streams: Mutex<HashMap<u64, Stream>>,
    /// Chunks to keep loaded ahead.
    window: u64,
}

impl Prefetcher {
    /// Starts the helper threads on `reader` (more of them for a `remote`
    /// store).
    pub fn start(reader: Reader, remote: bool) -> Prefetcher {
        let (queue, rx) = sync_channel::<(u64, u64)>(256);
        let rx = Arc::new(Mutex::new(rx));
        let threads = if remote { REMOTE_THREADS } else { THREADS };
        for i in 0..threads {
            let rx = rx.clone();
            let reader = reader.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("sopfs-prefetch-{i}"))
                .spawn(move || loop {
                    let next = rx.lock().recv();
                    let Ok((ino, idx)) = next else { return };
                    // Loading fills the value cache; a failure is the
                    // reader's to report when it gets there.
                    match reader.begin() {
                        Some(Ok(mut tx)) => {
                            let _ = tx.warm(CONTENT, &chunk_key(ino, idx));
                        }
                        Some(Err(_)) => {}
                        None => return,
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no prefetch thread");
            }
        }
        Prefetcher {
            queue,
            streams: Mutex::new(HashMap::new()),
            window: if remote { REMOTE_WINDOW } else { WINDOW },
        }
    }

    /// Notes a read of `len` bytes at `offset` in a file of `size` bytes.
    pub fn note(&self, ino: u64, offset: u64, len: u64, size: u64) {
        let mut streams = self.streams.lock();
        let s = streams.get(&ino).copied();
        let end = offset + len;
        let sequential = s.is_some_and(|s| s.next == offset) || offset == 0;
        if !sequential {
            streams.insert(
                ino,
                Stream {
                    next: end,
                    ahead: 0,
                },
            );
            return;
        }
        let first = (end.div_ceil(CHUNK)).max(s.map_or(0, |s| s.ahead));
        let last = (end / CHUNK + self.window).min(size.div_ceil(CHUNK));
        let mut ahead = first;
        for idx in first..last {
            match self.queue.try_send((ino, idx)) {
                Ok(()) => ahead = idx + 1,
                // Helpers busy: the reader loads it itself.
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => break,
            }
        }
        if streams.len() >= TRACKED && !streams.contains_key(&ino) {
            streams.clear();
        }
        streams.insert(ino, Stream { next: end, ahead });
    }
}
