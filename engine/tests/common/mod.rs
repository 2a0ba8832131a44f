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

/// Two hosts of one volume on an in-memory store through the Redis at
/// `url`, after the first has made tree "t" and committed "k" = "1" and
/// the second has read it (found the log's end itself, so it trusts the
/// stamp for a while): where the tests of a Redis that loses state begin.
pub fn two_hosts_after_a_first_commit(url: &str) -> (Db, Db) {
    let store = std::sync::Arc::new(object_store::memory::InMemory::new());
    let (a, b) = (shared_host(&store, url), shared_host(&store, url));
    a.run(|tx| {
        tx.ensure_tree("t", small_tree(8))?;
        tx.upsert("t", b"k", b"1")
    })
    .expect("commit 1");
    let mut tx = b.begin(engine::TxMode::ReadOnly).expect("begin");
    assert_eq!(tx.get("t", b"k").expect("get").as_deref(), Some(&b"1"[..]));
    (a, b)
}

/// Both hosts write a key of their own; each then reads both.
pub fn assert_both_write_and_see_each_other(a: &Db, b: &Db) {
    a.run(|tx| tx.upsert("t", b"a", b"after")).expect("a after");
    b.run(|tx| tx.upsert("t", b"b", b"after")).expect("b after");
    for db in [a, b] {
        let mut tx = db.begin(engine::TxMode::ReadOnly).expect("begin");
        for k in [&b"a"[..], &b"b"[..]] {
            assert_eq!(
                tx.get("t", k).expect("get").as_deref(),
                Some(&b"after"[..]),
                "{}",
                String::from_utf8_lossy(k)
            );
        }
    }
}

/// A plain connection to the Redis at `url`, for looking at its keys.
pub fn redis_connection(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("redis connection")
}

/// How many times the server ran `command` so far (also from scripts),
/// from `INFO commandstats`.
pub fn command_calls(con: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(con)
        .expect("info");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
