//! Reference model: random operation sequences (with commits, rollbacks and
//! reopenings) run against the engine on a local folder and a `BTreeMap`.

// The model mirrors the API call by call; the entry API would hide that.
#![allow(clippy::map_entry)]

mod common;

use common::{open_local, small_tree};
use engine::{Cursor, Direction, Error, TxMode};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::ops::Bound;

#[derive(Clone, Debug)]
enum Op {
    Insert(u16, Val),
    Upsert(u16, Val),
    Update(u16, Val),
    Remove(u16),
    Get(u16),
    Scan(u16, u16, bool, u8),
    Count,
    Commit,
    Rollback,
    Reopen,
}

/// Values: mostly small (inline), sometimes large (own blobs, several chunks).
#[derive(Clone, Debug)]
struct Val(u8, usize);

impl Val {
    fn bytes(&self) -> Vec<u8> {
        vec![self.0; self.1]
    }
}

fn val() -> impl Strategy<Value = Val> {
    (
        any::<u8>(),
        prop_oneof![8 => 0usize..40, 1 => 100usize..3000],
    )
        .prop_map(|(b, n)| Val(b, n))
}

fn op() -> impl Strategy<Value = Op> {
    let k = || 0u16..300;
    prop_oneof![
        6 => (k(), val()).prop_map(|(k, v)| Op::Insert(k, v)),
        4 => (k(), val()).prop_map(|(k, v)| Op::Upsert(k, v)),
        2 => (k(), val()).prop_map(|(k, v)| Op::Update(k, v)),
        5 => k().prop_map(Op::Remove),
        2 => k().prop_map(Op::Get),
        2 => (k(), k(), any::<bool>(), 1u8..20).prop_map(|(a, b, r, l)| Op::Scan(a, b, r, l)),
        1 => Just(Op::Count),
        3 => Just(Op::Commit),
        1 => Just(Op::Rollback),
        1 => Just(Op::Reopen),
    ]
}

fn key(k: u16) -> Vec<u8> {
    format!("key{k:05}").into_bytes()
}

const TREE: &str = "model";

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = common::small_opts();
    opts.chunk_size = 1024;
    let open = || {
        engine::Db::open(
            engine::StoreLocation::Local(dir.path().to_path_buf()),
            opts.clone(),
        )
        .expect("open")
    };
    let mut db = open();
    db.run(|tx| tx.ensure_tree(TREE, small_tree(4)))
        .expect("tree");
    let mut committed: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut pending = committed.clone();
    let mut tx = db.begin(TxMode::ReadWrite).expect("begin");
    for op in ops {
        match op {
            Op::Insert(k, v) => {
                let r = tx.insert(TREE, &key(k), &v.bytes());
                if pending.contains_key(&key(k)) {
                    assert!(matches!(r, Err(Error::KeyExists)), "{r:?}");
                } else {
                    r.expect("insert");
                    pending.insert(key(k), v.bytes());
                }
            }
            Op::Upsert(k, v) => {
                tx.upsert(TREE, &key(k), &v.bytes()).expect("upsert");
                pending.insert(key(k), v.bytes());
            }
            Op::Update(k, v) => {
                let r = tx.update(TREE, &key(k), &v.bytes());
                if pending.contains_key(&key(k)) {
                    r.expect("update");
                    pending.insert(key(k), v.bytes());
                } else {
                    assert!(matches!(r, Err(Error::KeyNotFound)), "{r:?}");
                }
            }
            Op::Remove(k) => {
                let was = tx.remove(TREE, &key(k)).expect("remove");
                assert_eq!(was, pending.remove(&key(k)).is_some());
            }
            Op::Get(k) => {
                assert_eq!(
                    tx.get(TREE, &key(k)).expect("get"),
                    pending.get(&key(k)).cloned()
                );
            }
            Op::Scan(a, b, reverse, limit) => {
                let (lo, hi) = (key(a.min(b)), key(a.max(b)));
                let dir = if reverse {
                    Direction::Backward
                } else {
                    Direction::Forward
                };
                let mut cursor = Cursor::new(
                    (Bound::Included(lo.clone()), Bound::Excluded(hi.clone())),
                    dir,
                );
                let mut got = Vec::new();
                while !cursor.is_done() {
                    got.extend(tx.scan(TREE, &mut cursor, limit as usize).expect("scan"));
                }
                let mut want: Vec<_> = pending
                    .range(lo..hi)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if reverse {
                    want.reverse();
                }
                assert_eq!(got, want);
            }
            Op::Count => assert_eq!(tx.count(TREE).expect("count"), pending.len() as u64),
            Op::Commit => {
                tx.commit().expect("commit");
                committed = pending.clone();
                tx = db.begin(TxMode::ReadWrite).expect("begin");
                assert_eq!(
                    tx.check_tree(TREE).expect("structure"),
                    committed.len() as u64
                );
            }
            Op::Rollback => {
                tx.rollback();
                pending = committed.clone();
                tx = db.begin(TxMode::ReadWrite).expect("begin");
            }
            Op::Reopen => {
                drop(tx);
                drop(db);
                db = open();
                pending = committed.clone();
                tx = db.begin(TxMode::ReadWrite).expect("begin");
                assert_eq!(
                    tx.check_tree(TREE).expect("structure"),
                    committed.len() as u64
                );
            }
        }
    }
    tx.commit().expect("final commit");
    drop(db);
    // Everything committed is there after a last reopen, and unreachable
    // blobs are collected without touching what is reachable.
    let db = open_local(dir.path());
    db.gc(std::time::Duration::ZERO, false).expect("gc");
    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    let mut cursor = Cursor::new(.., Direction::Forward);
    let mut all = BTreeMap::new();
    while !cursor.is_done() {
        all.extend(tx.scan(TREE, &mut cursor, 50).expect("scan"));
    }
    assert_eq!(all, pending);
}

proptest! {
    // 48 cases in CI; PROPTEST_CASES=N for a longer run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]
    #[test]
    fn engine_matches_a_btreemap(ops in proptest::collection::vec(op(), 1..400)) {
        run(ops);
    }
}

/// Many deletes in a row: exercises merges and root collapse down to a leaf.
#[test]
fn fill_then_drain_keeps_the_tree_valid() {
    let mut ops: Vec<Op> = (0..300).map(|k| Op::Upsert(k, Val(1, 4))).collect();
    ops.push(Op::Commit);
    ops.extend((0..300).rev().step_by(2).map(Op::Remove));
    ops.push(Op::Commit);
    ops.extend((0..300).map(Op::Remove));
    ops.push(Op::Commit);
    ops.push(Op::Reopen);
    run(ops);
}
