//! The engine's error type: what went wrong, in storage terms (never an errno).

use std::time::Duration;

/// Result alias used across the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything an engine call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another transaction committed a change to a key this one read or wrote.
    #[error("transaction conflict on tree {tree:?}: {reason}")]
    Conflict {
        /// Tree the conflicting key lives in ("" is the catalog).
        tree: String,
        /// What collided.
        reason: String,
    },
    /// `insert` found the key already present.
    #[error("key already exists")]
    KeyExists,
    /// `update` found no such key.
    #[error("key not found")]
    KeyNotFound,
    /// No B-tree of that name.
    #[error("tree {0:?} not found")]
    TreeNotFound(String),
    /// `create_tree` found a tree of that name.
    #[error("tree {0:?} already exists")]
    TreeExists(String),
    /// The transaction ran past its time limit, or a lock could not be had in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A blob failed its checksum, is truncated or does not decode.
    #[error("corrupted {what} at {path}: {detail}")]
    Corrupted {
        /// Kind of object (node, value, record, ...).
        what: &'static str,
        /// Store path of the object.
        path: String,
        /// What was wrong with it.
        detail: String,
    },
    /// A blob the registry points at is missing from the store.
    #[error("missing {what} at {path}")]
    Missing {
        /// Kind of object.
        what: &'static str,
        /// Store path of the object.
        path: String,
    },
    /// The blob store failed, after retries.
    #[error("blob store {op} {path}: {source}")]
    Backend {
        /// Operation that failed.
        op: &'static str,
        /// Path it failed on.
        path: String,
        /// The store's own error.
        #[source]
        source: object_store::Error,
    },
    /// Another process holds the store in embedded (exclusive) mode.
    #[error("store {0} is in use by another process (embedded mode allows one process; use a shared coordinator)")]
    InUse(String),
    /// The location holds something that is not a sopfs volume, or a newer format.
    #[error("{0}")]
    NotAVolume(String),
    /// The store lacks something sopfs rests on (conditional creates).
    #[error("{0}")]
    Unsupported(String),
    /// The volume's key is missing, wrong, or not wanted.
    #[error("{0}")]
    Key(String),
    /// A caller passed something the engine cannot take.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A write was attempted in a read-only transaction.
    #[error("transaction is read-only")]
    ReadOnly,
    /// The coordinator (Redis) could not be reached or answered wrongly, after retries.
    #[error("coordinator: {0}")]
    Coordinator(String),
    /// A local file operation (lock file, fsync) failed.
    #[error("local I/O on {path}: {source}")]
    Io {
        /// Path involved.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// True for errors a caller should retry the whole transaction on.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    pub(crate) fn conflict(tree: &str, reason: impl Into<String>) -> Self {
        Error::Conflict {
            tree: tree.to_string(),
            reason: reason.into(),
        }
    }

    /// This error with `path` as the object's path, for a decoder that was
    /// handed none: building a store path for every record a host folds
    /// cost more than decoding its head.
    pub(crate) fn at_path(self, path: impl FnOnce() -> String) -> Self {
        match self {
            Error::Corrupted { what, detail, .. } => Error::Corrupted {
                what,
                path: path(),
                detail,
            },
            Error::Missing { what, .. } => Error::Missing { what, path: path() },
            other => other,
        }
    }
}
