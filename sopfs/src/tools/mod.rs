//! Whole-volume tools over a served volume: `sopfs fsck` and `sopfs dump`/`load`.

pub mod dump;
pub mod fsck;
