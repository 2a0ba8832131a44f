//! Where a volume lives (a local folder, S3, memory) and the path of each
//! kind of object in it.

use crate::error::{Error, Result};
use crate::ids::{BlobId, TxId};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::ObjectStore;
use std::path::PathBuf;
use std::sync::Arc;

/// Where a volume's blobs live.
#[derive(Clone, Debug)]
pub enum StoreLocation {
    /// A local folder (embedded default).
    Local(PathBuf),
    /// A process-local in-memory store, shareable between `Db` handles (tests).
    Memory(Arc<InMemory>),
    /// Any other `object_store` implementation (tests inject faults this way).
    Custom(Arc<dyn ObjectStore>),
    /// An S3 bucket and key prefix. Credentials, region and endpoint come from
    /// the usual AWS environment variables (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`; plain http is
    /// allowed when the endpoint says `http://`).
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix inside the bucket ("" for the whole bucket).
        prefix: String,
    },
}

impl StoreLocation {
    /// Parses `/path`, `file:///path` or `memory://`.
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(Error::InvalidArgument(format!(
                    "{s}: a file:// URL needs an absolute path (file:///path)"
                )));
            }
            return Ok(StoreLocation::Local(PathBuf::from(rest)));
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "{s}: no bucket (use s3://bucket/prefix)"
                )));
            }
            return Ok(StoreLocation::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if s == "memory://" {
            return Ok(StoreLocation::Memory(Arc::new(InMemory::new())));
        }
        if s.contains("://") {
            return Err(Error::InvalidArgument(format!(
                "{s}: unsupported store URL (use a path, file:///path, s3://bucket/prefix or memory://)"
            )));
        }
        if s.is_empty() {
            return Err(Error::InvalidArgument("empty store location".into()));
        }
        // Made absolute now (without needing it to exist): a daemon that
        // goes to the background leaves the working directory it was
        // relative to.
        let path = std::path::absolute(s).map_err(|e| {
            Error::InvalidArgument(format!("{s}: cannot be made an absolute path ({e})"))
        })?;
        Ok(StoreLocation::Local(path))
    }

    /// The local folder, when the store is one.
    pub fn local_root(&self) -> Option<&std::path::Path> {
        match self {
            StoreLocation::Local(p) => Some(p),
            StoreLocation::Memory(_) | StoreLocation::Custom(_) | StoreLocation::S3 { .. } => None,
        }
    }
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Local(p) => write!(f, "{}", p.display()),
            StoreLocation::Memory(_) => write!(f, "memory://"),
            StoreLocation::Custom(s) => write!(f, "{s}"),
            StoreLocation::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// Store path of a blob: one level of 256 folders. Few enough that a young
/// volume stops creating folders after its first few hundred blobs; a folder
/// of a volume with 100 million blobs holds 400,000 names, which ext4's and
/// xfs's hashed directories take in their stride (and S3 has no folders).
pub fn blob_path(id: BlobId) -> Path {
    Path::from(format!("blobs/{:02x}/{id}", (id.0 & 0xff) as u8))
}

/// Store path of commit record `seq`: 4,096 records per folder.
pub fn log_path(seq: u64) -> Path {
    Path::from(format!("log/{:012x}/{seq:016x}", seq >> 12))
}

/// Store path of the registry checkpoint taken at `seq`.
pub fn checkpoint_path(seq: u64) -> Path {
    Path::from(format!("checkpoints/{seq:016x}"))
}

/// Store path of snapshot `name`: its bytes in hex, so any name the caller
/// allows is one path segment on every store.
pub fn snapshot_path(name: &str) -> Path {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    Path::from(format!("snapshots/{hex}"))
}

/// Store path of a transaction's intent record.
pub fn intent_path(tx: TxId) -> Path {
    Path::from(format!("intents/{tx}"))
}

/// Store path of the volume marker.
pub fn volume_path() -> Path {
    Path::from("volume")
}
