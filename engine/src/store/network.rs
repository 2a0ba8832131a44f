//! Reaching S3: the client's settings (retries, checksums, endpoint) and
//! the runtime its requests run on.

use crate::error::{Error, Result};
use std::time::Duration;

/// The runtime a network store's requests run on (two threads: the
/// blocking API waits on it, several requests may be in flight at once).
pub(super) fn network_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sopfs-s3")
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            path: "tokio runtime".into(),
            source,
        })
}

/// Makes aws-lc-rs the process's TLS crypto provider unless one is set.
/// Clients that take the process default (Redis over TLS, S3 over https)
/// cannot choose when a program links more than one provider (a binary
/// whose HTTP client brings ring) and would panic; all of sopfs uses
/// aws-lc-rs.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// How long an unreachable store is waited for, by default, before an
/// operation fails (`Options::store_timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(40);

pub(super) fn s3_store(bucket: &str, retry_for: Duration) -> Result<object_store::aws::AmazonS3> {
    // The client's own retries (503 SlowDown, 5xx, resets) end after
    // `retry_for` instead of its default 3 minutes: with this store's outer
    // retries an outage reaches callers as an error (EIO at the mount, one
    // log line) after about `Options::store_timeout`, not after a quarter
    // of an hour of a hung process.
    let retry = object_store::RetryConfig {
        retry_timeout: retry_for,
        ..Default::default()
    };
    let mut b = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(retry);
    // A body is checked by S3 against a CRC64-NVME header instead of being
    // signed with SHA-256: the signature's digest was a third of the
    // daemon's CPU writing a big file, and S3 refuses a body damaged in
    // transit either way (moto, the tests' server, checks neither). For a server
    // that does not know the header, the standard variables bring the
    // signed payload back (AWS_UNSIGNED_PAYLOAD=false,
    // AWS_CHECKSUM_ALGORITHM=sha256).
    if std::env::var_os("AWS_UNSIGNED_PAYLOAD").is_none() {
        b = b.with_unsigned_payload(true);
    }
    if std::env::var_os("AWS_CHECKSUM_ALGORITHM").is_none() {
        b = b.with_checksum_algorithm(object_store::aws::Checksum::CRC64NVME);
    }
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .or_else(|_| std::env::var("AWS_ENDPOINT"))
        .ok();
    if let Some(ep) = endpoint {
        b = b
            .with_allow_http(ep.starts_with("http://"))
            .with_endpoint(ep);
    }
    b.build().map_err(|source| Error::Backend {
        op: "open",
        path: format!("s3://{bucket}"),
        source,
    })
}
