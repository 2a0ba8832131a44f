//! sopfs engine: transactional B-trees over an `object_store`.
//!
//! Layers, bottom up: [`store`] (blobs and paths) -> `registry` (commit log,
//! node locations) -> `btree` over a copy-on-write `view` -> [`Transaction`]
//! and the commit protocol -> [`Db`]. Coordination between transactions
//! goes through a [`Coordinator`]. See ARCHITECTURE.md at the repository root.

mod btree;
mod cache;
pub mod codec;
mod commit;
pub mod coordinator;
mod db;
pub mod durable;
mod error;
mod gc;
pub mod ids;
pub mod inspect;
mod leaf;
pub mod log;
pub mod node;
mod recovery;
pub mod redis_coord;
pub mod registry;
mod spares;
mod stager;
mod stash;
pub mod store;
mod tx;
mod view;

pub use commit::CommitInfo;
pub use coordinator::{Coordinator, InProcessCoordinator, LockOutcome};
pub use db::{Db, DbStats, Options, Reader, RetryableError};
pub use error::{Error, Result};
pub use gc::GcReport;
pub use node::Value;
pub use redis_coord::RedisCoordinator;
pub use stash::{Stash, StashedValue};
pub use store::StoreLocation;
pub use tx::{Cursor, Direction, Transaction, TreeConfig, TxMode, TxOptions};
