//! The state a mounted host keeps beside the volume, one type per concern:
//! open files and their handles with their write buffers, files created
//! here whose create is not committed yet, the kernel's
//! references and the orphans they keep alive, directory snapshots of open
//! directories, what other hosts changed that the kernel still caches, and
//! read-ahead. `crate::fs::Fs` owns one of each.

mod creates;
mod dirs;
pub mod dirty;
mod files;
mod invalidation;
mod kernel;
pub(crate) mod prefetch;

pub(crate) use creates::{claim_key, NewFile, NewNames, CLAIM_TTL};
pub(crate) use dirs::DirSnapshots;
pub(crate) use files::{FileState, OpenFiles, PendingAttrs};
pub(crate) use invalidation::Invalidation;
pub use invalidation::{Invalidator, Stale};
pub(crate) use kernel::KernelRefs;
