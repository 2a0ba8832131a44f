//! Maintenance of a volume: garbage collection, and looking at a volume
//! without opening it (`sopfs status`).

mod gc;
pub mod inspect;
pub(crate) mod snapshots;

pub(crate) use gc::gc;
pub use gc::GcReport;
pub use snapshots::{
    check_name as check_snapshot_name, SnapshotInfo, NAME_MAX as SNAPSHOT_NAME_MAX,
};
