//! An object store that starts failing every operation after a countdown,
//! like a disk or network going away mid-transaction.

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Wraps an in-memory store; operation number `limit` and every one after fail.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<InMemory>,
    ops: AtomicU64,
    limit: AtomicU64,
}

impl std::fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "faulty://")
    }
}

impl FaultyStore {
    /// A store that does not fail until told to.
    pub fn new(inner: Arc<InMemory>) -> Self {
        FaultyStore {
            inner,
            ops: AtomicU64::new(0),
            limit: AtomicU64::new(u64::MAX),
        }
    }

    /// Operations served so far.
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::SeqCst)
    }

    /// Every operation from number `n` on fails.
    pub fn fail_from(&self, n: u64) {
        self.limit.store(n, Ordering::SeqCst);
    }

    /// Stops failing.
    pub fn heal(&self) {
        self.limit.store(u64::MAX, Ordering::SeqCst);
    }

    fn tick(&self) -> Result<()> {
        let n = self.ops.fetch_add(1, Ordering::SeqCst);
        if n >= self.limit.load(Ordering::SeqCst) {
            return Err(object_store::Error::Generic {
                store: "faulty",
                source: "injected fault".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.tick()?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.tick()?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.tick()?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        match self.tick() {
            Ok(()) => self.inner.delete_stream(locations),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        match self.tick() {
            Ok(()) => self.inner.list(prefix),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.tick()?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.tick()?;
        self.inner.copy_opts(from, to, options).await
    }
}

/// The faults an S3 endpoint shows, injected by [`ChaosStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chaos {
    /// Every request served.
    Healthy,
    /// 503 SlowDown: refused before it is carried out.
    SlowDown,
    /// 500 Internal Error: refused before it is carried out.
    ServerError,
    /// Connection reset, before or after the request was carried out.
    Reset,
    /// No answer for a while, then an error (carried out or not).
    Timeout,
    /// Served, slowly.
    SlowBody,
    /// Nothing is served.
    Outage,
    /// Every third create-if-absent is carried out and its reply lost, as
    /// when a connection resets after the request was sent: the client's
    /// retry then finds its own object. Everything else is served.
    LostCreateReply,
}

/// Wraps an in-memory store; a share of requests meets the current fault.
#[derive(Debug)]
pub struct ChaosStore {
    inner: Arc<InMemory>,
    mode: parking_lot::Mutex<Chaos>,
    served: AtomicU64,
    /// Requests that met a fault.
    pub faults: AtomicU64,
    /// Faults in a row per object and calling thread: past `STREAK_MAX`
    /// the next request to it is served, so a fault short of an outage
    /// stays one that the store's retries (3) get past, as S3's transient
    /// faults are.
    streaks: parking_lot::Mutex<std::collections::HashMap<String, u32>>,
}

/// Most faults in a row one object meets outside an outage.
const STREAK_MAX: u32 = 2;

impl std::fmt::Display for ChaosStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "chaos://")
    }
}

/// One request in this many meets the fault (all of them in an outage).
const CHAOS_EVERY: u64 = 7;

impl ChaosStore {
    /// A healthy store over `inner`.
    pub fn new(inner: Arc<InMemory>) -> Self {
        ChaosStore {
            inner,
            mode: parking_lot::Mutex::new(Chaos::Healthy),
            served: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            streaks: parking_lot::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// From now on requests meet `mode`.
    pub fn set(&self, mode: Chaos) {
        *self.mode.lock() = mode;
    }

    fn error(what: &'static str) -> object_store::Error {
        object_store::Error::Generic {
            store: "chaos",
            source: what.into(),
        }
    }

    /// The fault a request for object `key` meets (see `streaks`).
    fn draw_for(&self, key: &Path) -> (Option<object_store::Error>, Option<object_store::Error>) {
        self.draw_keyed(key.to_string())
    }

    /// The fault a request meets, counted in a row under `key` (an
    /// object, or a kind of request that names none up front: a listing,
    /// a delete) and the calling thread, so that no request is refused
    /// more often than the store's retries get past. Per thread: two
    /// hosts racing for one log position retry the same object, and a
    /// request of the other served between two of one's faults reset the
    /// count, so one create met four faults in a row and failed.
    fn draw_keyed(
        &self,
        key: String,
    ) -> (Option<object_store::Error>, Option<object_store::Error>) {
        let key = format!("{:?} {key}", std::thread::current().id());
        let outage = *self.mode.lock() == Chaos::Outage;
        if !outage
            && self
                .streaks
                .lock()
                .get(&key)
                .is_some_and(|n| *n >= STREAK_MAX)
        {
            self.streaks.lock().remove(&key);
            return (None, None);
        }
        let r = self.draw();
        let mut streaks = self.streaks.lock();
        if r.0.is_some() || r.1.is_some() {
            *streaks.entry(key).or_insert(0) += 1;
        } else {
            streaks.remove(&key);
        }
        r
    }

    /// The fault this request meets: Some(before, after) where `before`
    /// fails it unserved and `after` fails it once served.
    fn draw(&self) -> (Option<object_store::Error>, Option<object_store::Error>) {
        let mode = *self.mode.lock();
        let n = self.served.fetch_add(1, Ordering::SeqCst);
        if matches!(mode, Chaos::Healthy | Chaos::LostCreateReply)
            || (mode != Chaos::Outage && !n.is_multiple_of(CHAOS_EVERY))
        {
            return (None, None);
        }
        self.faults.fetch_add(1, Ordering::SeqCst);
        let half = (n / CHAOS_EVERY).is_multiple_of(2);
        match mode {
            Chaos::Healthy | Chaos::LostCreateReply => (None, None),
            Chaos::SlowDown => (Some(Self::error("503 SlowDown")), None),
            Chaos::ServerError => (Some(Self::error("500 Internal Error")), None),
            Chaos::Reset if half => (Some(Self::error("connection reset")), None),
            Chaos::Reset => (None, Some(Self::error("connection reset"))),
            Chaos::Timeout => {
                std::thread::sleep(std::time::Duration::from_millis(60));
                if half {
                    (Some(Self::error("timed out")), None)
                } else {
                    (None, Some(Self::error("timed out")))
                }
            }
            Chaos::SlowBody => {
                std::thread::sleep(std::time::Duration::from_millis(15));
                (None, None)
            }
            Chaos::Outage => (Some(Self::error("connection refused")), None),
        }
    }
}

macro_rules! chaotic {
    ($self:ident, $key:expr, $call:expr) => {{
        let (before, after) = $self.draw_for($key);
        if let Some(e) = before {
            return Err(e);
        }
        let r = $call;
        match after {
            Some(e) => Err(e),
            None => r,
        }
    }};
}

#[async_trait]
impl ObjectStore for ChaosStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        if *self.mode.lock() == Chaos::LostCreateReply {
            let create = matches!(opts.mode, object_store::PutMode::Create);
            let r = self.inner.put_opts(location, payload, opts).await;
            if create && r.is_ok() && self.served.fetch_add(1, Ordering::SeqCst).is_multiple_of(3) {
                self.faults.fetch_add(1, Ordering::SeqCst);
                return Err(Self::error("connection reset after the request was sent"));
            }
            return r;
        }
        chaotic!(
            self,
            location,
            self.inner.put_opts(location, payload, opts).await
        )
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        chaotic!(
            self,
            location,
            self.inner.put_multipart_opts(location, opts).await
        )
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let (before, _) = self.draw_for(location);
        if let Some(e) = before {
            return Err(e);
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        match self.draw_keyed("<delete>".into()) {
            (None, _) => self.inner.delete_stream(locations),
            (Some(e), _) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        match self.draw_keyed(format!("<list> {prefix:?}")) {
            (None, _) => self.inner.list(prefix),
            (Some(e), _) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let (before, _) = self.draw_keyed(format!("<list> {prefix:?}"));
        if let Some(e) = before {
            return Err(e);
        }
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        chaotic!(self, from, self.inner.copy_opts(from, to, options).await)
    }
}
