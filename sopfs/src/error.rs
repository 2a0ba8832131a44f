//! Filesystem errors, the one place where each becomes an errno, and the
//! one-line form of an error chain the CLI and the daemon print.

use thiserror::Error;

/// What a filesystem operation can fail with.
#[derive(Debug, Error)]
pub enum FsError {
    /// No such file or directory.
    #[error("not found")]
    NotFound,
    /// The name exists already.
    #[error("already exists")]
    Exists,
    /// A directory to remove or replace has entries.
    #[error("directory not empty")]
    NotEmpty,
    /// A path component or target is not a directory.
    #[error("not a directory")]
    NotDir,
    /// A directory where a non-directory is needed.
    #[error("is a directory")]
    IsDir,
    /// A name longer than 255 bytes.
    #[error("name too long")]
    NameTooLong,
    /// An argument the operation cannot take (moving a directory into itself, ...).
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// A dump that cannot be loaded.
    #[error("invalid dump: {0}")]
    InvalidDump(String),
    /// Not allowed for this caller.
    #[error("operation not permitted")]
    NotPermitted,
    /// The caller lacks a permission bit the operation needs (checked by
    /// sopfs itself where the kernel does not: requests made through
    /// `/.sopfs` files).
    #[error("permission denied")]
    Access,
    /// An extended attribute that is not there.
    #[error("no such attribute")]
    NoAttr,
    /// The caller's buffer is too small.
    #[error("result too large for the buffer")]
    Range,
    /// Beyond the largest file size.
    #[error("file too large")]
    TooBig,
    /// Not supported by this filesystem.
    #[error("operation not supported")]
    NotSupported,
    /// A file handle that is not open.
    #[error("bad file handle")]
    BadHandle,
    /// The volume is mounted read-only.
    #[error("read-only filesystem")]
    ReadOnly,
    /// A directory quota would be passed.
    #[error("disk quota exceeded")]
    Quota,
    /// A link or move across directory quota boundaries.
    #[error("across directory quotas")]
    CrossQuota,
    /// The store or coordinator failed, or a record did not decode.
    #[error(transparent)]
    Engine(engine::Error),
    /// A stored record that does not decode.
    #[error("corrupted {0}")]
    Corrupted(String),
    /// The local cache folder (spill files of big writes) failed.
    #[error("local cache folder: {0}")]
    Cache(#[from] std::io::Error),
    /// A helper thread could not be started (the process is out of
    /// threads or memory): the caller may try again.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

impl FsError {
    /// The errno the kernel gets for this error.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::Invalid(_) | FsError::InvalidDump(_) => libc::EINVAL,
            FsError::NotPermitted => libc::EPERM,
            FsError::Access => libc::EACCES,
            FsError::NoAttr => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::TooBig => libc::EFBIG,
            FsError::NotSupported => libc::EOPNOTSUPP,
            FsError::BadHandle => libc::EBADF,
            FsError::ReadOnly => libc::EROFS,
            FsError::Quota => libc::EDQUOT,
            FsError::CrossQuota => libc::EXDEV,
            FsError::Corrupted(_) => libc::EIO,
            FsError::Thread(_) => libc::EAGAIN,
            // ENOSPC of a full cache folder is the truth the writer needs.
            FsError::Cache(e) => e.raw_os_error().unwrap_or(libc::EIO),
            FsError::Engine(e) => match e {
                engine::Error::Timeout(_) => libc::ETIMEDOUT,
                engine::Error::InvalidArgument(_) => libc::EINVAL,
                engine::Error::ReadOnly => libc::EROFS,
                // Conflicts that outlived every retry, corruption, missing
                // blobs, store and coordinator faults: the data is safe, the
                // operation did not happen.
                engine::Error::Conflict { .. }
                | engine::Error::KeyExists
                | engine::Error::KeyNotFound
                | engine::Error::TreeNotFound(_)
                | engine::Error::TreeExists(_)
                | engine::Error::Corrupted { .. }
                | engine::Error::Missing { .. }
                | engine::Error::Backend { .. }
                | engine::Error::InUse(_)
                | engine::Error::NotAVolume(_)
                | engine::Error::Key(_)
                | engine::Error::Unsupported(_)
                | engine::Error::Coordinator(_)
                | engine::Error::Io { .. } => libc::EIO,
            },
        }
    }
}

impl FsError {
    /// True when stored data failed its checks (checksum, framing, a blob
    /// missing): the data is damaged, not merely unreachable for now.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            FsError::Corrupted(_)
                | FsError::Engine(engine::Error::Corrupted { .. })
                | FsError::Engine(engine::Error::Missing { .. })
        )
    }
}

impl From<engine::Error> for FsError {
    fn from(e: engine::Error) -> Self {
        match e {
            // A directory tree dropped by another host while this one used it.
            engine::Error::TreeNotFound(_) => FsError::NotFound,
            e => FsError::Engine(e),
        }
    }
}

/// Result of a filesystem operation.
pub type FsResult<T> = std::result::Result<T, FsError>;

impl engine::RetryableError for FsError {
    fn is_conflict(&self) -> bool {
        matches!(self, FsError::Engine(e) if e.is_retryable())
    }
}

/// The error and its causes on one line, each cause once: an error type
/// that prints its source in its own message (the engine's I/O errors do)
/// would otherwise show the OS's message twice.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod one_line_tests {
    use super::one_line;

    #[test]
    fn a_cause_already_printed_is_not_printed_again() {
        let os = std::io::Error::from_raw_os_error(libc::EROFS);
        let engine = engine::Error::Io {
            path: "/v/lock".into(),
            source: std::io::Error::from_raw_os_error(libc::EROFS),
        };
        let e = anyhow::Error::new(engine).context("cannot open volume /v");
        let line = one_line(&e);
        assert_eq!(line.matches(&os.to_string()).count(), 1, "{line}");
        assert!(line.starts_with("cannot open volume /v: "), "{line}");
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(one_line(&plain), "outer: inner");
    }
}
