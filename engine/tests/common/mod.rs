//! Helpers shared by the engine's integration tests.
#![allow(dead_code, unused_imports)]

pub mod faulty;

use engine::{Db, Options, StoreLocation, TreeConfig};
use std::path::Path;

/// Options for tests: no background pass, and log segments of a few
/// records so sealing and starting segments happen constantly.
pub fn small_opts() -> Options {
    Options {
        background_interval: None,
        segment_bytes: 16 << 10,
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

pub use test_support::{moto, RedisServer, S3_BUCKET};

/// Value blobs in a local store's `blobs/` (format 2 values; GC also writes
/// node blobs out of trimmed records, which do not count).
pub fn value_blob_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir.join("blobs")) else {
        return 0;
    };
    rd.flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .filter(|f| std::fs::read(f.path()).is_ok_and(|b| b.get(4) == Some(&2)))
        .count()
}

/// A host of a shared volume in `store` (in memory, probed only when the
/// stamp says so, as S3 is), coordinated by the Redis at `url`.
pub fn shared_host(store: &std::sync::Arc<object_store::memory::InMemory>, url: &str) -> Db {
    let coord = engine::RedisCoordinator::connect(url).expect("redis");
    Db::open_shared(
        StoreLocation::Custom(store.clone()),
        Options {
            background_interval: None,
            ..Options::default()
        },
        std::sync::Arc::new(coord),
    )
    .expect("open")
}

/// A process of a shared volume in the local folder `dir`, coordinated by
/// the Redis at `url`.
pub fn shared_local(dir: &Path, url: &str, opts: Options) -> Db {
    let coord = engine::RedisCoordinator::connect(url).expect("redis");
    Db::open_shared(
        StoreLocation::Local(dir.to_path_buf()),
        opts,
        std::sync::Arc::new(coord),
    )
    .expect("open")
}
