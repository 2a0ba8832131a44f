//! Maintenance of a volume: garbage collection, and looking at a volume
//! without opening it (`sopfs status`).

mod gc;
pub mod inspect;

pub(crate) use gc::gc;
pub use gc::GcReport;
