//! An object store with a chosen latency on every request (like S3 seen
//! from a data centre), counting requests and the most reads and writes in
//! flight at once.

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Wraps an in-memory store; each request waits `latency` first.
#[derive(Debug)]
pub struct LatencyStore {
    inner: Arc<InMemory>,
    latency: Duration,
    /// GET requests served.
    pub gets: AtomicU64,
    /// PUT requests served.
    pub puts: AtomicU64,
    /// GETs of commit records (`log/...`) that found one.
    pub record_gets: AtomicU64,
    /// GETs of commit records that found none (probes past the log's end).
    pub record_misses: AtomicU64,
    in_flight: AtomicU64,
    /// The most GETs that were in flight at one moment.
    pub max_in_flight: AtomicU64,
    puts_in_flight: AtomicU64,
    /// The most PUTs that were in flight at one moment.
    pub max_puts_in_flight: AtomicU64,
}

impl std::fmt::Display for LatencyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "latency://{:?}", self.latency)
    }
}

impl LatencyStore {
    /// `inner` behind `latency` per request.
    pub fn new(inner: Arc<InMemory>, latency: Duration) -> Self {
        LatencyStore {
            inner,
            latency,
            gets: AtomicU64::new(0),
            puts: AtomicU64::new(0),
            record_gets: AtomicU64::new(0),
            record_misses: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            puts_in_flight: AtomicU64::new(0),
            max_puts_in_flight: AtomicU64::new(0),
        }
    }

    /// A fresh, empty in-memory store behind `latency` per request.
    pub fn in_memory(latency: Duration) -> Self {
        Self::new(Arc::new(InMemory::new()), latency)
    }
}

#[async_trait]
impl ObjectStore for LatencyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        let now = self.puts_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_puts_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.latency).await;
        let r = self.inner.put_opts(location, payload, opts).await;
        self.puts_in_flight.fetch_sub(1, Ordering::SeqCst);
        r
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.latency).await;
        let r = self.inner.get_opts(location, options).await;
        if location.as_ref().starts_with("log/") {
            match &r {
                Ok(_) => self.record_gets.fetch_add(1, Ordering::SeqCst),
                Err(object_store::Error::NotFound { .. }) => {
                    self.record_misses.fetch_add(1, Ordering::SeqCst)
                }
                Err(_) => 0,
            };
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        r
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
