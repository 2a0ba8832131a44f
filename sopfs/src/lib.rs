//! sopfs: a masterless distributed filesystem over the sopfs engine.
//!
//! Layers: [`fs`] holds the POSIX semantics as engine transactions and is
//! callable without a mount; [`fuse`] is the thin kernel edge over it;
//! [`daemon`] mounts, backgrounds and unmounts.

pub mod daemon;
pub mod dirty;
pub mod dump;
pub mod error;
pub mod exporter;
pub mod fs;
pub mod fsck;
pub mod fuse;
pub mod inode;
pub mod macros;
pub mod metrics;
pub mod prefetch;
pub mod presence;
pub mod virt;

pub use error::{FsError, FsResult};
pub use fs::{Caller, Fs, FsOptions};
