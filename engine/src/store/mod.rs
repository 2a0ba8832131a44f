//! The blob store: an `object_store` behind a small blocking API, with the
//! engine's path layout, retries of transient faults and local fsync.

mod breaker;
pub mod durable;
mod local;
mod location;
mod network;
mod seal;
mod spares;
mod volume;

#[cfg(test)]
mod tests;

pub(crate) use local::STAGING_MIN_AGE;
use local::{create_local, move_if_absent, read_local_range, start_writeback};
use local::{START_WRITEBACK_FROM, SYNCFS_FROM};
pub use location::StoreLocation;
pub(crate) use location::{
    blob_path, checkpoint_path, intent_path, log_path, snapshot_path, volume_path,
};
pub use seal::{at_rest_summary, Secret, MIN_KEY_LEN};
pub(crate) use seal::{AtRestSpec, Sealer};

pub(crate) use volume::{
    folder_lock, format_supported, read_lock, refuse_foreign_folder, ExclusiveLock, VolumeMarker,
    VOLUME_FORMAT,
};

use crate::error::{Error, Result};
use breaker::Breaker;
use bytes::Bytes;
use futures::TryStreamExt;
pub use network::{install_crypto_provider, DEFAULT_TIMEOUT};
use network::{network_runtime, s3_store};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Blocking facade over an `ObjectStore`.
pub struct BlobStore {
    inner: Arc<dyn ObjectStore>,
    /// Network stores need a reactor; local ones run inline on the caller.
    runtime: Option<tokio::runtime::Runtime>,
    location: StoreLocation,
    retries: u32,
    /// Empty files made ahead for creates (local folders).
    spares: Option<Arc<spares::Spares>>,
    /// Compression and encryption of every object but the volume marker,
    /// set once the marker has been read (or written, at format).
    sealer: parking_lot::RwLock<Option<Arc<Sealer>>>,
    /// Opened to read only: every write is refused here, whoever asks.
    read_only: bool,
    /// Opened when an operation failed after all its retries (the store
    /// unreachable): for a moment others then fail at once instead of
    /// each waiting out its own retries (see `Breaker`).
    breaker: Breaker,
}

impl BlobStore {
    /// Opens (and for a local folder, creates) the store at `location`,
    /// with the default patience for an unreachable store (see
    /// [`BlobStore::open_tuned`]).
    pub fn open(location: &StoreLocation) -> Result<Self> {
        Self::open_tuned(location, 3, DEFAULT_TIMEOUT)
    }

    /// Opens the store at `location`; a transient fault is retried
    /// `retries` times, and an unreachable S3 store fails an operation
    /// after about `timeout` (the S3 client retries each attempt for a
    /// share of it).
    pub fn open_tuned(location: &StoreLocation, retries: u32, timeout: Duration) -> Result<Self> {
        Self::open_as(location, retries, timeout, false)
    }

    /// Opens the store at `location` to read only (as `open_tuned`): no
    /// folder or spare file is made, and every write fails with
    /// `Error::ReadOnly` instead of reaching the store.
    pub fn open_read_only(
        location: &StoreLocation,
        retries: u32,
        timeout: Duration,
    ) -> Result<Self> {
        Self::open_as(location, retries, timeout, true)
    }

    fn open_as(
        location: &StoreLocation,
        retries: u32,
        timeout: Duration,
        read_only: bool,
    ) -> Result<Self> {
        let mut runtime = None;
        let inner: Arc<dyn ObjectStore> = match location {
            StoreLocation::Local(root) => {
                if read_only && !root.is_dir() {
                    return Err(Error::NotAVolume(format!(
                        "{}: no sopfs volume here",
                        root.display()
                    )));
                }
                if !read_only {
                    std::fs::create_dir_all(root).map_err(|source| Error::Io {
                        path: root.display().to_string(),
                        source,
                    })?;
                }
                let fs =
                    LocalFileSystem::new_with_prefix(root).map_err(|source| Error::Backend {
                        op: "open",
                        path: root.display().to_string(),
                        source,
                    })?;
                Arc::new(fs)
            }
            StoreLocation::Memory(m) => m.clone(),
            StoreLocation::Custom(s) => {
                // Wrappers in tests (latency, faults) may sleep on tokio's clock.
                runtime = Some(network_runtime()?);
                s.clone()
            }
            StoreLocation::S3 { bucket, prefix } => {
                install_crypto_provider();
                let s3 = s3_store(bucket, timeout / (retries + 1))?;
                runtime = Some(network_runtime()?);
                if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(object_store::prefix::PrefixStore::new(s3, prefix.as_str()))
                }
            }
        };
        let spares = location
            .local_root()
            .filter(|_| !read_only)
            .map(|root| spares::Spares::new(root.join("staging")));
        Ok(BlobStore {
            inner,
            runtime,
            location: location.clone(),
            retries,
            spares,
            sealer: parking_lot::RwLock::new(None),
            read_only,
            breaker: Breaker::default(),
        })
    }

    /// True when this store was opened to read only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        Ok(())
    }

    /// Seals every object from now on (the volume's marker says how).
    pub(crate) fn set_sealer(&self, sealer: Option<Sealer>) {
        *self.sealer.write() = sealer.map(Arc::new);
    }

    /// True when objects are stored compressed or encrypted; then a range
    /// of an object cannot be read alone (`get_range` reads it whole).
    pub fn is_sealed(&self) -> bool {
        self.sealer.read().is_some()
    }

    /// How objects are stored: (zstd level, encrypted).
    pub fn at_rest(&self) -> (Option<i32>, bool) {
        match self.sealer.read().as_ref() {
            Some(s) => (s.level(), s.encrypts()),
            None => (None, false),
        }
    }

    fn sealer_for(&self, path: &Path) -> Option<Arc<Sealer>> {
        // The marker says how the rest is sealed, so it never is.
        if path.as_ref() == VOLUME_MARKER {
            return None;
        }
        self.sealer.read().clone()
    }

    /// What is stored for `data` at `path`: sealed on a sealed volume.
    pub(crate) fn seal_for(&self, path: &Path, data: Vec<u8>) -> Vec<u8> {
        match self.sealer_for(path) {
            Some(s) => s.seal(path.as_ref(), &data),
            None => data,
        }
    }

    /// The plain bytes of what is stored at `path`.
    pub(crate) fn unseal_for(&self, path: &Path, stored: Bytes) -> Result<Bytes> {
        match self.sealer_for(path) {
            Some(s) => s.unseal(path.as_ref(), &stored).map(Bytes::from),
            None => Ok(stored),
        }
    }

    /// The plain bytes of what is stored for commit record `seq`; its
    /// path is made only on a sealed volume (a host folds thousands of
    /// records a second, and each path is an allocation or three).
    pub(crate) fn unseal_record(&self, seq: u64, stored: Bytes) -> Result<Bytes> {
        if self.sealer.read().is_none() {
            return Ok(stored);
        }
        self.unseal_for(&log_path(seq), stored)
    }

    /// Where this store lives.
    pub fn location(&self) -> &StoreLocation {
        &self.location
    }

    /// Local and in-memory stores complete their futures without a reactor, so
    /// they run inline on the caller's thread (no hop to a blocking pool).
    fn run<F: Future>(&self, f: F) -> F::Output {
        match &self.runtime {
            Some(rt) => rt.block_on(f),
            None => futures::executor::block_on(f),
        }
    }

    /// Retries transient failures with backoff; permanent answers pass through.
    fn retry<T>(
        &self,
        op: &'static str,
        path: &Path,
        mut f: impl FnMut() -> object_store::Result<T>,
    ) -> Result<T> {
        if self.breaker.is_open() {
            return Err(Error::Backend {
                op,
                path: path.to_string(),
                source: object_store::Error::Generic {
                    store: "sopfs",
                    source: "the store did not answer a moment ago (failing fast for 2 s)".into(),
                },
            });
        }
        let mut attempt = 0;
        loop {
            match f() {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let permanent = matches!(
                        e,
                        object_store::Error::NotFound { .. }
                            | object_store::Error::AlreadyExists { .. }
                            | object_store::Error::Precondition { .. }
                            | object_store::Error::NotImplemented { .. }
                            | object_store::Error::InvalidPath { .. }
                    );
                    if permanent || attempt >= self.retries {
                        if !permanent {
                            tracing::error!(op, %path, error = %e, "blob store operation failed after retries");
                            // A local folder answers each call at once, right or wrong.
                            if !self.probe_is_cheap() {
                                self.breaker.trip();
                            }
                        }
                        return Err(Error::Backend {
                            op,
                            path: path.to_string(),
                            source: e,
                        });
                    }
                    attempt += 1;
                    tracing::warn!(op, %path, attempt, error = %e, "blob store fault, retrying");
                    std::thread::sleep(Duration::from_millis(20 << attempt));
                }
            }
        }
    }

    /// Writes (or overwrites) an object.
    pub fn put(&self, path: &Path, data: Vec<u8>) -> Result<()> {
        self.put_stored(path, self.seal_for(path, data))
    }

    fn put_stored(&self, path: &Path, data: Vec<u8>) -> Result<()> {
        self.writable()?;
        if let StoreLocation::Local(root) = &self.location {
            // A spare written and renamed over the name: whole or not at all.
            if let Some((spare, mut file)) = self.spares.as_ref().and_then(|s| s.take()) {
                let full = root.join(path.as_ref());
                let written = std::io::Write::write_all(&mut file, &data);
                drop(file);
                let mut moved = written.and_then(|()| std::fs::rename(&spare, &full));
                if matches!(&moved, Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
                    if let Some(parent) = full.parent() {
                        let _ = durable::create_dirs(parent);
                    }
                    moved = std::fs::rename(&spare, &full);
                }
                if moved.is_ok() {
                    return Ok(());
                }
                // Swept, or a fault: the ordinary path below decides.
                let _ = std::fs::remove_file(&spare);
            }
        }
        let payload = PutPayload::from(Bytes::from(data));
        self.retry("put", path, || {
            self.run(self.inner.put(path, payload.clone())).map(|_| ())
        })
    }

    /// Writes an object under a name nobody reads before this call returns
    /// (a fresh blob id: the commit record naming it comes later). In a local
    /// folder that is one create-and-write, without object_store's staging
    /// file and rename (two of the three metadata operations of a put): a
    /// crash mid-write leaves a partial blob nothing references, which GC
    /// removes like any orphan.
    pub fn put_fresh(&self, path: &Path, data: Vec<u8>) -> Result<()> {
        self.put_fresh_stored(path, self.seal_for(path, data))
    }

    fn put_fresh_stored(&self, path: &Path, data: Vec<u8>) -> Result<()> {
        self.writable()?;
        let StoreLocation::Local(root) = &self.location else {
            return self.put_stored(path, data);
        };
        let full = root.join(path.as_ref());
        let io = |source| Error::Io {
            path: full.display().to_string(),
            source,
        };
        let open = || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&full)
        };
        let mut f = match open() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = full.parent() {
                    durable::create_dirs(parent).map_err(io)?;
                }
                open().map_err(io)?
            }
            r => r.map_err(io)?,
        };
        std::io::Write::write_all(&mut f, &data).map_err(io)?;
        if data.len() >= START_WRITEBACK_FROM {
            start_writeback(f);
        }
        Ok(())
    }

    /// Writes every `(path, bytes)` of fresh objects (as `put_fresh`). On a
    /// network store they go out together, up to `PARALLEL_PUTS` at a
    /// time, so a commit with several blobs waits about one round trip
    /// instead of one per blob; in a local folder a commit of fewer than
    /// `LOCAL_PARALLEL_FROM` stays on the caller's thread, a bigger one
    /// uses `LOCAL_PARALLEL_PUTS` writers.
    pub fn put_fresh_all(&self, items: Vec<(Path, Vec<u8>)>) -> Result<()> {
        self.put_each(items, Self::put_fresh)
    }

    /// Writes (or overwrites) every `(path, bytes)`, together as
    /// `put_fresh_all` does: for objects that others may write too, with
    /// the same bytes (nodes melds made, which every process derives
    /// alike).
    pub fn put_all(&self, items: Vec<(Path, Vec<u8>)>) -> Result<()> {
        self.put_each(items, Self::put)
    }

    fn put_each(
        &self,
        items: Vec<(Path, Vec<u8>)>,
        put: fn(&Self, &Path, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let local = self.probe_is_cheap();
        if items.len() < 2 || (local && items.len() < LOCAL_PARALLEL_FROM) {
            for (path, data) in items {
                put(self, &path, data)?;
            }
            return Ok(());
        }
        let queue = parking_lot::Mutex::new(items);
        // Each writer seals what it takes (`put`, `put_fresh`), so sealing's CPU
        // is spread over the writers too.
        let most = if local {
            LOCAL_PARALLEL_PUTS
        } else {
            PARALLEL_PUTS
        };
        let workers = queue.lock().len().min(most);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| -> Result<()> {
                        loop {
                            let Some((path, data)) = queue.lock().pop() else {
                                return Ok(());
                            };
                            put(self, &path, data)?;
                        }
                    })
                })
                .collect();
            let mut first = Ok(());
            for h in handles {
                let r = h.join().unwrap_or_else(|_| {
                    Err(Error::Io {
                        path: "parallel put".into(),
                        source: std::io::Error::other("a writer thread panicked"),
                    })
                });
                if first.is_ok() {
                    first = r;
                }
            }
            first
        })
    }

    /// Creates an object only if absent: `Ok(false)` when it already existed.
    pub fn create(&self, path: &Path, data: Vec<u8>) -> Result<bool> {
        self.writable()?;
        let data = self.seal_for(path, data);
        if let StoreLocation::Local(root) = &self.location {
            let full = root.join(path.as_ref());
            if let Some(done) = self.create_from_spare(&full, &data)? {
                return Ok(done);
            }
            return create_local(&full, &data);
        }
        let bytes = Bytes::from(data);
        let payload = PutPayload::from(bytes.clone());
        let opts = || PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let r = self.retry("create", path, || {
            self.run(self.inner.put_opts(path, payload.clone(), opts()))
        });
        match r {
            Ok(_) => Ok(true),
            // "Exists" may answer a retry of this very request: the S3
            // client retries a PUT whose connection broke after the server
            // stored it, and reports only the last answer. So whose object
            // is there is read, not assumed (one GET, only when a create
            // loses).
            Err(Error::Backend {
                source: object_store::Error::AlreadyExists { .. },
                ..
            }) => self.own_create_landed(path, &bytes).inspect(|&ours| {
                if ours {
                    tracing::info!(%path, "a create whose reply was lost had landed");
                }
            }),
            // Out of retries: a request may still have been carried out.
            Err(e) => match self.own_create_landed(path, &bytes) {
                Ok(true) => Ok(true),
                _ => Err(e),
            },
        }
    }

    /// Checks that a second create of one name is refused (S3's
    /// `If-None-Match: *`): the commit point rests on it. A server that
    /// ignores the condition and overwrites would let two hosts take one log
    /// position, each believing its commit landed. Network stores only
    /// (a local folder's create is a `renameat2(RENAME_NOREPLACE)`); costs
    /// two PUTs, a GET and a DELETE.
    pub fn check_creates_are_conditional(&self) -> Result<()> {
        if self.probe_is_cheap() || self.read_only {
            return Ok(());
        }
        let path = Path::from(format!("probe/{:032x}", rand::random::<u128>()));
        self.create(&path, b"first".to_vec())?;
        let second = self.create(&path, b"second".to_vec());
        let _ = self.delete(&path);
        let refuse = |why: &str| {
            Error::Unsupported(format!(
                "{}: the store {why}; sopfs needs create-if-absent (If-None-Match: *) \
                 to decide which commit lands",
                self.location
            ))
        };
        match second {
            Ok(false) => Ok(()),
            Ok(true) => Err(refuse(
                "overwrote an object that a conditional create should have kept",
            )),
            Err(Error::Backend {
                source: object_store::Error::NotImplemented { .. },
                ..
            }) => Err(refuse("does not support conditional creates")),
            Err(e) => Err(e),
        }
    }

    /// After an ambiguous create (a request sent, its reply lost): true when
    /// `path` holds exactly `bytes`, i.e. that request was carried out. What
    /// this engine creates is unique to its writer (a commit record carries a
    /// random transaction id, a blob a random name), so equal bytes are this
    /// writer's; without the check a retry that meets its own record takes
    /// it for a rival's, and the commit lands twice or reports a conflict.
    fn own_create_landed(&self, path: &Path, bytes: &[u8]) -> Result<bool> {
        Ok(self.get_stored(path)?.is_some_and(|there| there == bytes))
    }

    /// Create-if-absent through a spare file: write it, move it into
    /// place. `None` when no spare was ready or it was swept meanwhile (the
    /// caller creates the file itself).
    fn create_from_spare(&self, full: &std::path::Path, data: &[u8]) -> Result<Option<bool>> {
        let Some((spare, mut file)) = self.spares.as_ref().and_then(|s| s.take()) else {
            return Ok(None);
        };
        let io = |source| Error::Io {
            path: full.display().to_string(),
            source,
        };
        let written = std::io::Write::write_all(&mut file, data);
        drop(file);
        if let Err(e) = written {
            let _ = std::fs::remove_file(&spare);
            return Err(io(e));
        }
        let mut placed = move_if_absent(&spare, full);
        if matches!(&placed, Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
            // Either the target's folder is new, or the spare was swept.
            if let Some(parent) = full.parent() {
                durable::create_dirs(parent).map_err(io)?;
            }
            placed = move_if_absent(&spare, full);
        }
        match placed {
            Ok(()) => Ok(Some(true)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_file(&spare);
                Ok(Some(false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                let _ = std::fs::remove_file(&spare);
                Err(io(e))
            }
        }
    }

    /// True when asking the store whether an object exists costs less than
    /// a network round trip (a local folder, memory): then the store itself,
    /// the truth, is asked for news instead of the coordinator's stamp.
    pub fn probe_is_cheap(&self) -> bool {
        matches!(
            self.location,
            StoreLocation::Local(_) | StoreLocation::Memory(_)
        )
    }

    /// Reads several objects; `None` for each that does not exist. Where a
    /// request costs a round trip, the requests go out together: the whole
    /// batch takes about one round trip's time. A request that fails goes
    /// through `get`'s retries on its own.
    pub fn get_many(&self, paths: &[Path]) -> Result<Vec<Option<Bytes>>> {
        if self.probe_is_cheap() || paths.len() < 2 || self.breaker.is_open() {
            return paths.iter().map(|p| self.get(p)).collect();
        }
        let inner = &self.inner;
        let results = self.run(futures::future::join_all(
            paths
                .iter()
                .map(|p| async move { inner.get(p).await?.bytes().await }),
        ));
        results
            .into_iter()
            .zip(paths)
            .map(|(r, p)| match r {
                Ok(b) => self.unseal_for(p, b).map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(_) => self.get(p),
            })
            .collect()
    }

    /// Reads an object; `None` when it does not exist.
    pub fn get(&self, path: &Path) -> Result<Option<Bytes>> {
        match self.get_stored(path)? {
            Some(b) => self.unseal_for(path, b).map(Some),
            None => Ok(None),
        }
    }

    /// Reads an object as stored (sealed, on a sealed volume).
    fn get_stored(&self, path: &Path) -> Result<Option<Bytes>> {
        if let StoreLocation::Local(root) = &self.location {
            // One open (and for a miss, nothing more): log probes ask for
            // slots that mostly do not exist yet.
            let full = root.join(path.as_ref());
            return match std::fs::read(&full) {
                Ok(b) => Ok(Some(Bytes::from(b))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(Error::Io {
                    path: full.display().to_string(),
                    source,
                }),
            };
        }
        let r = self.retry("get", path, || {
            self.run(async { self.inner.get(path).await?.bytes().await })
        });
        match r {
            Ok(b) => Ok(Some(b)),
            Err(Error::Backend {
                source: object_store::Error::NotFound { .. },
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads bytes `range` of an object; `None` when it does not exist.
    /// Fewer bytes come back when the object ends inside the range.
    pub fn get_range(&self, path: &Path, range: std::ops::Range<u64>) -> Result<Option<Bytes>> {
        if self.sealer_for(path).is_some() {
            // A sealed object opens whole only.
            let Some(all) = self.get(path)? else {
                return Ok(None);
            };
            let end = (range.end.min(all.len() as u64)) as usize;
            let start = (range.start as usize).min(end);
            return Ok(Some(all.slice(start..end)));
        }
        if let StoreLocation::Local(root) = &self.location {
            return read_local_range(&root.join(path.as_ref()), range);
        }
        let r = self.retry("get range", path, || {
            self.run(self.inner.get_range(path, range.clone()))
        });
        match r {
            Ok(b) => Ok(Some(b)),
            Err(Error::Backend {
                source: object_store::Error::NotFound { .. },
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes an object; deleting a missing one is not an error.
    pub fn delete(&self, path: &Path) -> Result<()> {
        self.writable()?;
        match self.retry("delete", path, || self.run(self.inner.delete(path))) {
            Ok(()) => Ok(()),
            Err(Error::Backend {
                source: object_store::Error::NotFound { .. },
                ..
            }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Lists every object under `prefix`.
    pub fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let p = Path::from(prefix);
        self.retry("list", &p, || {
            self.run(self.inner.list(Some(&p)).try_collect::<Vec<_>>())
        })
    }

    /// Lists the immediate child folders of `prefix`.
    pub fn list_dirs(&self, prefix: &str) -> Result<Vec<Path>> {
        let p = Path::from(prefix);
        self.retry("list", &p, || {
            self.run(self.inner.list_with_delimiter(Some(&p)))
                .map(|r| r.common_prefixes)
        })
    }

    /// Makes the named objects durable (fsync of the files and their folders).
    /// A no-op for stores without a local file behind them.
    pub fn sync(&self, paths: &[Path]) -> Result<()> {
        let Some(root) = self.location.local_root() else {
            return Ok(());
        };
        let at = |p: &std::path::Path| {
            let p = p.display().to_string();
            move |source| Error::Io { path: p, source }
        };
        if paths.len() > SYNCFS_FROM {
            // One flush of the store's filesystem instead of thousands of
            // fsyncs (a big file's chunks): the same durability, far fewer waits.
            return durable::everything(root).map_err(at(root));
        }
        let mut dirs = std::collections::BTreeSet::new();
        for p in paths {
            let file = root.join(p.as_ref());
            durable::file_at(&file).map_err(at(&file))?;
            if let Some(d) = file.parent() {
                dirs.insert(d.to_path_buf());
            }
        }
        for d in dirs {
            durable::dir(&d).map_err(at(&d))?;
        }
        Ok(())
    }

    /// Makes everything written to the store so far durable (one syncfs of
    /// a local folder; a no-op elsewhere, where a finished write is durable).
    pub fn sync_everything(&self) -> Result<()> {
        let Some(root) = self.location.local_root() else {
            return Ok(());
        };
        durable::everything(root).map_err(|source| Error::Io {
            path: root.display().to_string(),
            source,
        })
    }
}

/// The volume marker's path (`location::volume_path`), never sealed.
const VOLUME_MARKER: &str = "volume";

/// Fresh objects of one `put_fresh_all` from which a local folder writes
/// them from several threads: most of a file creation on ext4 is CPU in
/// the kernel's inode allocation, so a big commit's node blobs (a clone of
/// a big tree writes thousands) go faster spread over the cores, while a
/// small commit's few stay on the caller's thread.
const LOCAL_PARALLEL_FROM: usize = 64;
/// Writer threads of such a commit on a local folder.
const LOCAL_PARALLEL_PUTS: usize = 4;

/// Puts in flight at once for one caller of `put_fresh_all` on a network
/// store: enough to hide a round trip behind the others' transfers.
const PARALLEL_PUTS: usize = 16;
