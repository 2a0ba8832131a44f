//! Macros (stored step programs) and jobs (macro runs claimed by agents on
//! any host): the compute swarm of a volume.

pub mod format;
mod fsops;
pub mod jobs;
pub mod run;
pub mod store;
