//! sopfs: a masterless distributed filesystem over the sopfs engine.
//!
//! Layers, lowest first; a module imports only from those before it:
//! [`error`] -> [`ns`] (the namespace as transaction functions, no mount
//! needed) -> [`host`] (a mounted host's state: open files, write buffers,
//! kernel references, invalidation) -> [`fs`] (the facade that serves POSIX
//! operations) -> [`macros`] and [`tools`] (fsck, dump) -> [`mount`] (the
//! FUSE adapter, virtual files, the daemon, metrics, presence).

pub mod error;
pub mod fs;
pub mod host;
pub mod macros;
pub mod mount;
pub mod ns;
pub mod pages;
pub mod tools;

pub use error::{FsError, FsResult};
pub use fs::{Fs, FsOptions};
pub use ns::Caller;
