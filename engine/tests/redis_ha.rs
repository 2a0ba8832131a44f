//! Redis as users deploy it: under Sentinel (a failover to a replica that
//! missed the last writes) and as a Redis Cluster. Real `redis-server`
//! processes; two hosts on a store that is probed only when the stamp says
//! so (as S3), where an old stamp could mislead them. The store stays the
//! arbiter: no stale read past the moment a host asks, no lost commit.

mod common;

use common::{
    assert_both_write_and_see_each_other, shared_host, small_tree, two_hosts_after_a_first_commit,
};
use engine::{Db, TxMode};
use object_store::memory::InMemory;
use std::sync::Arc;
use std::time::Duration;
use test_support::{redis_ha::cli, ClusterSet, SentinelSet};

fn read(db: &Db, key: &[u8]) -> Option<Vec<u8>> {
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    tx.get("t", key).expect("get")
}

/// The volume's stamp as one server holds it (0 if absent).
fn stamp_on(out: String) -> u64 {
    out.trim().parse().unwrap_or(0)
}

#[test]
fn a_sentinel_failover_to_a_replica_that_missed_writes_misleads_no_host() {
    let mut set = SentinelSet::start("pw");
    let url = set.url();
    let (a, b) = two_hosts_after_a_first_commit(&url);
    set.wait_replicated();
    let keys = set.on_master(&["KEYS", "sopfs:*:seq"]);
    let seq_key = keys.lines().next().expect("a stamp key").trim().to_string();

    // The replica falls behind; A commits; B, idle, has not looked.
    set.stall_replica();
    a.run(|tx| tx.upsert("t", b"k", b"2")).expect("commit 2");
    let (on_master, on_replica) = (
        stamp_on(set.on_master(&["GET", &seq_key])),
        stamp_on(set.on_replica(&["GET", &seq_key])),
    );
    assert!(
        on_master > on_replica,
        "the replica should have missed the last stamp ({on_master} vs {on_replica})"
    );

    // The master dies; the sentinel promotes the replica, whose stamp is
    // B's position: only the change of server tells B to ask the store.
    set.fail_over();
    assert_eq!(
        read(&b, b"k").as_deref(),
        Some(&b"2"[..]),
        "a host read behind a commit that returned, misled by a failed-over Redis"
    );

    // Both write after the failover, through the new master: nothing lost,
    // each sees the other.
    assert_both_write_and_see_each_other(&a, &b);
    assert!(stamp_on(set.on_replica(&["GET", &seq_key])) > on_master);
}

#[test]
fn two_hosts_share_a_volume_through_a_redis_cluster() {
    let set = ClusterSet::start();
    let url = set.url();
    let store = Arc::new(InMemory::new());
    let (a, b) = (shared_host(&store, &url), shared_host(&store, &url));
    a.run(|tx| tx.ensure_tree("t", small_tree(4)))
        .expect("tree");
    // Enough keys for several nodes, so commits lock several keys at once.
    for i in 0..40u32 {
        let (db, who) = if i % 2 == 0 { (&a, "a") } else { (&b, "b") };
        db.run(|tx| tx.upsert("t", format!("k{i:03}").as_bytes(), who.as_bytes()))
            .unwrap_or_else(|e| panic!("commit {i} through the cluster: {e}"));
    }
    for db in [&a, &b] {
        for i in 0..40u32 {
            let want = if i % 2 == 0 { "a" } else { "b" };
            assert_eq!(
                read(db, format!("k{i:03}").as_bytes()).as_deref(),
                Some(want.as_bytes()),
                "k{i:03}"
            );
        }
    }

    // A name claimed by one host is refused to the other until released.
    assert!(a.claim(7, 1, Duration::from_secs(30)));
    assert!(!b.claim(7, 2, Duration::from_secs(30)));
    a.release_claim(7, 1);
    assert!(b.claim(7, 2, Duration::from_secs(30)));

    // Every key of the volume is on one node (one hash slot), so the
    // multi-key scripts run there.
    let holding: Vec<usize> = set
        .ports()
        .iter()
        .map(|p| {
            cli(*p, None, &["KEYS", "sopfs:*"])
                .lines()
                .filter(|l| !l.trim().is_empty())
                .count()
        })
        .collect();
    assert_eq!(
        holding.iter().filter(|n| **n > 0).count(),
        1,
        "keys per node: {holding:?}"
    );
}
