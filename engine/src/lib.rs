//! sopfs engine: transactional B-trees over an `object_store`.
//!
//! Layers, lowest first; a module imports only from those before it:
//! `error`, `ids`, `codec` -> [`store`] (blobs, the volume marker, the
//! folder lock, durability barriers) -> `log` (the commit log and the
//! registry folded from it) -> `tree` (nodes, caches, views, B-tree
//! algorithms) -> `coord` (the [`Coordinator`] trait and Redis) -> `ctx`
//! (the shared context of an open volume) -> `txn` (transactions, the
//! commit, recovery, stashes) -> `maint` (GC, inspection) -> [`Db`], the
//! public door. See ARCHITECTURE.md at the repository root.

mod codec;
mod coord;
mod ctx;
mod db;
mod error;
pub mod ids;
mod log;
mod maint;
mod options;
mod store;
mod tree;
mod txn;

pub use coord::{
    redact_url, Coordinator, InProcessCoordinator, LockOutcome, Place, PlaceView, RedisCoordinator,
    PLACE_WINDOW,
};
pub use db::{Db, DbStats, Reader, RetryableError};
pub use error::{Error, Result};
pub use maint::inspect;
pub use maint::{check_snapshot_name, GcReport, SnapshotInfo, SNAPSHOT_NAME_MAX};
pub use options::{AtRest, Options};
pub use store::{at_rest_summary, durable, BlobStore, Secret, StoreLocation, MIN_KEY_LEN};
pub use tree::{Packed, Value};
pub use txn::{
    CommitInfo, Cursor, Direction, Stash, StashedValue, Transaction, TreeConfig, TxMode, TxOptions,
};
