//! Test support: real `sopfs` daemons on real FUSE mounts, a private
//! redis-server, a local S3 server (all from `test-support`), and the
//! power-cut simulator.
#![allow(dead_code, unused_imports)]

pub mod power_cut;
pub mod trees;

pub use test_support::*;
