//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use engine::{Db, Options, StoreLocation, TreeConfig};
use std::path::Path;

/// Options for tests: tiny nodes so splits and merges happen constantly.
pub fn small_opts() -> Options {
    Options {
        background_interval: None,
        ..Options::default()
    }
}

/// A tree config with `slots` per node and a low inline threshold.
pub fn small_tree(slots: u32) -> TreeConfig {
    TreeConfig {
        slots,
        inline_max: 48,
    }
}

/// Opens a volume in a local folder.
pub fn open_local(dir: &Path) -> Db {
    Db::open(StoreLocation::Local(dir.to_path_buf()), small_opts()).expect("open volume")
}
