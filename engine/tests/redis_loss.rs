//! Redis losing state under two hosts: restarted empty, or restored from an
//! older snapshot (the stamp goes backwards). The store stays the arbiter:
//! no stale read past the moment a host asks (close-to-open), no lost
//! commit.
//!
//! The store is one whose probing costs a request (as S3): there the hosts
//! trust Redis's stamp, which is where an old stamp could mislead them.

mod common;

use common::{
    assert_both_write_and_see_each_other, shared_host, small_tree, two_hosts_after_a_first_commit,
    RedisServer,
};
use engine::{Db, TxMode};
use object_store::memory::InMemory;
use std::sync::Arc;

fn read(db: &Db) -> Option<Vec<u8>> {
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    tx.get("t", b"k").expect("get")
}

fn redis(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("redis connection")
}

/// The volume's stamp key and its value.
fn stamp(url: &str) -> (String, u64) {
    let mut con = redis(url);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("sopfs:*:seq")
        .query(&mut con)
        .expect("keys");
    let key = keys.into_iter().next().expect("a stamp key");
    let v: u64 = redis::cmd("GET").arg(&key).query(&mut con).expect("get");
    (key, v)
}

/// Sets the stamp `key` back to `old` (a restored snapshot, or a late
/// raise on an emptied server) and checks that `b` still reads "2", the
/// value of a commit that returned after `old`.
fn assert_reads_past_a_stamp_set_back(url: &str, key: &str, old: u64, b: &Db, how: &str) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(old)
        .query(&mut redis(url))
        .expect("set the stamp back");
    assert_eq!(
        read(b).as_deref(),
        Some(&b"2"[..]),
        "a host read behind a commit that returned, misled by a {how} Redis"
    );
}

#[test]
fn a_redis_restored_from_an_old_snapshot_or_restarted_empty_misleads_no_host() {
    let mut server = RedisServer::start();
    let url = server.url();
    let (a, b) = two_hosts_after_a_first_commit(&url);
    // The snapshot a backup would hold now.
    let (key, old) = stamp(&url);

    // A commits again; B, idle, has not looked.
    a.run(|tx| tx.upsert("t", b"k", b"2")).expect("commit 2");
    assert!(stamp(&url).1 > old);

    // Redis comes back from the old snapshot: the stamp equals B's position.
    server.kill();
    server.restart();
    assert_reads_past_a_stamp_set_back(&url, &key, old, &b, "restored");

    // Both write after the restore: nothing lost, each sees the other.
    assert_both_write_and_see_each_other(&a, &b);

    // Restarted empty: the stamp is gone, so the hosts ask the store.
    a.run(|tx| tx.upsert("t", b"k", b"3")).expect("commit 3");
    server.kill();
    server.restart();
    assert_eq!(read(&b).as_deref(), Some(&b"3"[..]));
    b.run(|tx| tx.upsert("t", b"k", b"4")).expect("commit 4");
    assert_eq!(read(&a).as_deref(), Some(&b"4"[..]));
}

#[test]
fn a_redis_flushed_while_it_runs_then_handed_an_older_stamp_misleads_no_host() {
    // No restart, so the server's run_id stays: FLUSHALL (an operator) or
    // an eviction empties it, and then a host whose raise of an older
    // commit was on its way sets the stamp to a position behind the log.
    let server = RedisServer::start();
    let url = server.url();
    let (a, b) = two_hosts_after_a_first_commit(&url);
    let (key, old) = stamp(&url);
    a.run(|tx| tx.upsert("t", b"k", b"2")).expect("commit 2");
    let _: () = redis::cmd("FLUSHALL")
        .query(&mut redis(&url))
        .expect("flush");
    assert_reads_past_a_stamp_set_back(&url, &key, old, &b, "flushed");
    // Both go on writing; nothing lost, each sees the other.
    assert_both_write_and_see_each_other(&a, &b);
}

#[test]
fn a_host_cut_off_from_redis_is_seen_at_once_by_a_host_that_is_not() {
    // A reaches Redis through a relay that is then cut; B keeps its own
    // connection, so B reads a stamp that A's commit could not raise.
    let server = RedisServer::start();
    let relay = test_support::TcpRelay::start(server.port);
    let store = Arc::new(InMemory::new());
    let a = Arc::new(shared_host(
        &store,
        &format!("redis://127.0.0.1:{}/", relay.port),
    ));
    let b = shared_host(&store, &server.url());
    a.run(|tx| {
        tx.ensure_tree("t", small_tree(8))?;
        tx.upsert("t", b"k", b"0")
    })
    .expect("first commit");
    assert_eq!(read(&b).as_deref(), Some(&b"0"[..]));
    relay.cut();
    for round in 1..=3u8 {
        let value = vec![b'0' + round];
        // B reads all the while A commits (keeping its view as fresh as
        // it likes); once A's commit returned, B's next read has it.
        let writer = {
            let (a, value) = (a.clone(), value.clone());
            std::thread::spawn(move || a.run(|tx| tx.upsert("t", b"k", &value)))
        };
        while !writer.is_finished() {
            let _ = read(&b);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        writer
            .join()
            .expect("writer")
            .expect("A commits without Redis");
        assert_eq!(
            read(&b),
            Some(value),
            "round {round}: B read behind a commit A returned, misled by the stamp A could not raise"
        );
    }
    relay.mend();
}
