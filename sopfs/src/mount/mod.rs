//! A volume mounted: the FUSE adapter over [`crate::fs::Fs`], the virtual
//! files beside the volume's own (`/.macros`, `/.jobs`, `/.sopfs`), the
//! snapshots (`/.snapshots`), the daemon that mounts and unmounts, metrics
//! and their exporter, and the presence record other hosts see.

pub mod daemon;
pub mod exporter;
pub mod fuse;
pub mod metrics;
pub mod presence;
mod quota_req;
mod route;
pub mod snapshots;
pub mod virt;
