//! Two clients on one snapshot: random overlapping operations, both commit.
//! A model predicts whether the second must conflict (it read or wrote a key
//! the first wrote) and what the tree holds after, so merges of transactions
//! that touched the same nodes but not the same keys are checked exactly.

// The model mirrors the API call by call; the entry API would hide that.
#![allow(clippy::map_entry)]

mod common;

use common::{open_local, small_tree};
use engine::{Cursor, Direction, Error, Transaction, TxMode};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

#[derive(Clone, Debug)]
enum Op {
    Insert(u8, u8),
    Upsert(u8, u8),
    Update(u8, u8),
    Remove(u8),
    Get(u8),
    Scan(u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    let k = || 0u8..60;
    prop_oneof![
        3 => (k(), any::<u8>()).prop_map(|(k, v)| Op::Insert(k, v)),
        4 => (k(), any::<u8>()).prop_map(|(k, v)| Op::Upsert(k, v)),
        1 => (k(), any::<u8>()).prop_map(|(k, v)| Op::Update(k, v)),
        2 => k().prop_map(Op::Remove),
        1 => k().prop_map(Op::Get),
        1 => (k(), k()).prop_map(|(a, b)| Op::Scan(a.min(b), a.max(b))),
    ]
}

fn key(k: u8) -> Vec<u8> {
    format!("key{k:03}").into_bytes()
}

/// What one client read and wrote, as the model sees it.
#[derive(Default)]
struct Effects {
    reads: BTreeSet<Vec<u8>>,
    ranges: Vec<(Vec<u8>, Vec<u8>)>,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Effects {
    fn touches(&self, k: &[u8]) -> bool {
        self.reads.contains(k)
            || self.writes.contains_key(k)
            || self
                .ranges
                .iter()
                .any(|(a, b)| k >= a.as_slice() && k < b.as_slice())
    }
}

/// Runs `ops` in `tx` and in the model (view = snapshot + own writes).
fn run(tx: &mut Transaction, snapshot: &BTreeMap<Vec<u8>, Vec<u8>>, ops: &[Op]) -> Effects {
    let mut fx = Effects::default();
    let mut view = snapshot.clone();
    for op in ops {
        match op {
            Op::Insert(k, v) => {
                fx.reads.insert(key(*k));
                let r = tx.insert("t", &key(*k), &[*v]);
                if view.contains_key(&key(*k)) {
                    assert!(matches!(r, Err(Error::KeyExists)));
                } else {
                    r.expect("insert");
                    view.insert(key(*k), vec![*v]);
                    fx.writes.insert(key(*k), Some(vec![*v]));
                }
            }
            Op::Upsert(k, v) => {
                tx.upsert("t", &key(*k), &[*v]).expect("upsert");
                view.insert(key(*k), vec![*v]);
                fx.writes.insert(key(*k), Some(vec![*v]));
            }
            Op::Update(k, v) => {
                fx.reads.insert(key(*k));
                let r = tx.update("t", &key(*k), &[*v]);
                if view.contains_key(&key(*k)) {
                    r.expect("update");
                    view.insert(key(*k), vec![*v]);
                    fx.writes.insert(key(*k), Some(vec![*v]));
                } else {
                    assert!(matches!(r, Err(Error::KeyNotFound)));
                }
            }
            Op::Remove(k) => {
                fx.reads.insert(key(*k));
                let was = tx.remove("t", &key(*k)).expect("remove");
                assert_eq!(was, view.remove(&key(*k)).is_some());
                if was {
                    fx.writes.insert(key(*k), None);
                }
            }
            Op::Get(k) => {
                fx.reads.insert(key(*k));
                assert_eq!(
                    tx.get("t", &key(*k)).expect("get"),
                    view.get(&key(*k)).cloned()
                );
            }
            Op::Scan(a, b) => {
                let (lo, hi) = (key(*a), key(*b));
                fx.ranges.push((lo.clone(), hi.clone()));
                let mut c = Cursor::new(
                    (Bound::Included(lo.clone()), Bound::Excluded(hi.clone())),
                    Direction::Forward,
                );
                let mut got = Vec::new();
                while !c.is_done() {
                    got.extend(tx.scan("t", &mut c, 1000).expect("scan"));
                }
                let want: Vec<_> = view
                    .range(lo..hi)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(got, want);
            }
        }
    }
    fx
}

fn check(initial: Vec<u8>, a_ops: Vec<Op>, b_ops: Vec<Op>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_local(dir.path());
    let mut state: BTreeMap<Vec<u8>, Vec<u8>> =
        initial.iter().map(|k| (key(*k), vec![0])).collect();
    db.run(|tx| {
        tx.ensure_tree("t", small_tree(4))?;
        for k in state.keys() {
            tx.upsert("t", k, &[0])?;
        }
        Ok(())
    })
    .expect("seed");
    let mut a = db.begin(TxMode::ReadWrite).expect("a");
    let mut b = db.begin(TxMode::ReadWrite).expect("b");
    let fa = run(&mut a, &state, &a_ops);
    let fb = run(&mut b, &state, &b_ops);
    a.commit().expect("the first commit never conflicts");
    // A client that wrote nothing is serialized at its snapshot, before `a`.
    let b_must_conflict = !fb.writes.is_empty() && fa.writes.keys().any(|k| fb.touches(k));
    let b_result = b.commit();
    for (k, v) in &fa.writes {
        match v {
            Some(v) => state.insert(k.clone(), v.clone()),
            None => state.remove(k),
        };
    }
    match (b_must_conflict, b_result) {
        (true, Err(Error::Conflict { .. })) => {}
        (false, Ok(info)) => {
            if !fa.writes.is_empty() && !fb.writes.is_empty() {
                assert!(info.merged, "b committed onto a's changes: a merge");
            }
            for (k, v) in &fb.writes {
                match v {
                    Some(v) => state.insert(k.clone(), v.clone()),
                    None => state.remove(k),
                };
            }
        }
        (want, got) => panic!("second commit: conflict expected {want}, got {got:?}"),
    }
    let mut tx = db.begin(TxMode::ReadOnly).expect("read");
    assert_eq!(tx.check_tree("t").expect("structure"), state.len() as u64);
    let mut c = Cursor::new(.., Direction::Forward);
    let mut all = BTreeMap::new();
    while !c.is_done() {
        all.extend(tx.scan("t", &mut c, 1000).expect("scan"));
    }
    assert_eq!(all, state);
}

proptest! {
    // 64 cases in CI; PROPTEST_CASES=N for a longer run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]
    #[test]
    fn two_clients_merge_or_conflict_exactly_as_the_model_says(
        initial in proptest::collection::vec(0u8..60, 0..40),
        a in proptest::collection::vec(op(), 0..25),
        b in proptest::collection::vec(op(), 0..25),
    ) {
        check(initial, a, b);
    }
}

#[test]
fn disjoint_keys_in_one_leaf_merge_and_a_split_on_one_side_merges_too() {
    // Both write into the same 4-slot leaf; the second also splits it.
    let b_ops = (20..30).map(|k| Op::Upsert(k, 2)).collect();
    check(vec![10, 11], vec![Op::Upsert(12, 1)], b_ops);
}
