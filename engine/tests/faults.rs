//! A backend that dies mid-commit: for every operation of a commit in turn,
//! the store starts failing there. Whatever the commit reported, after the
//! store comes back the change is wholly there or wholly absent, a commit that
//! said Ok is there, and nothing the registry points at is missing.

mod common;

use common::faulty::{Chaos, ChaosStore, FaultyStore};
use common::small_tree;
use engine::{Cursor, Db, Direction, Error, Options, StoreLocation, TxMode};
use object_store::memory::InMemory;
use std::collections::BTreeMap;
use std::sync::Arc;

fn opts() -> Options {
    Options {
        background_interval: None,
        chunk_size: 1000,
        store_retries: 0,
        ..Options::default()
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("k{i:04}").into_bytes()
}

fn old_value(i: u32) -> Vec<u8> {
    vec![i as u8; 8]
}

/// Large enough for out-of-line chunks; touches enough keys to split leaves.
fn new_value(i: u32) -> Vec<u8> {
    vec![!(i as u8); 2500]
}

fn read_all(db: &Db) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, Error> {
    let mut tx = db.begin(TxMode::ReadOnly)?;
    tx.check_tree("t")?;
    let mut c = Cursor::new(.., Direction::Forward);
    let mut out = BTreeMap::new();
    while !c.is_done() {
        out.extend(tx.scan("t", &mut c, 100)?);
    }
    Ok(out)
}

/// In-process locks, but the engine told to probe the store as in cluster mode.
struct ProbingCoordinator(engine::InProcessCoordinator);

impl engine::Coordinator for ProbingCoordinator {
    fn lock(
        &self,
        keys: &[u64],
        owner: engine::ids::TxId,
        ttl: std::time::Duration,
        deadline: std::time::Instant,
    ) -> engine::Result<engine::LockOutcome> {
        self.0.lock(keys, owner, ttl, deadline)
    }
    fn unlock(&self, keys: &[u64], owner: engine::ids::TxId) {
        self.0.unlock(keys, owner)
    }
    fn renew(
        &self,
        keys: &[u64],
        owner: engine::ids::TxId,
        ttl: std::time::Duration,
    ) -> engine::Result<()> {
        self.0.renew(keys, owner, ttl)
    }
    fn is_shared(&self) -> bool {
        true
    }
}

fn open(store: StoreLocation, probing: bool) -> Db {
    if probing {
        let coord = Arc::new(ProbingCoordinator(engine::InProcessCoordinator::new()));
        Db::open_shared(store, opts(), coord).expect("open")
    } else {
        Db::open(store, opts()).expect("open")
    }
}

#[test]
fn a_store_failing_at_any_point_of_a_commit_leaves_it_whole_or_absent() {
    sweep(false);
}

#[test]
fn the_same_when_the_engine_probes_the_store_as_in_cluster_mode() {
    sweep(true);
}

fn sweep(probing: bool) {
    let mut fail_at = 0;
    let mut outcomes = (0, 0);
    loop {
        let mem = Arc::new(InMemory::new());
        let faulty = Arc::new(FaultyStore::new(mem.clone()));
        let db = open(StoreLocation::Custom(faulty.clone()), probing);
        db.run(|tx| {
            tx.ensure_tree("t", small_tree(4))?;
            for i in 0..20 {
                tx.upsert("t", &key(i), &old_value(i))?;
            }
            Ok(())
        })
        .expect("seed");
        let start = faulty.ops();
        faulty.fail_from(start + fail_at);
        let result = (|| {
            let mut tx = db.begin(TxMode::ReadWrite)?;
            for i in (0..20).step_by(3).chain(20..26) {
                tx.upsert("t", &key(i), &new_value(i))?;
            }
            tx.remove("t", &key(1))?;
            tx.commit()
        })();
        let ops_used = faulty.ops() - start;
        faulty.heal();
        drop(db);

        let db = open(StoreLocation::Memory(mem), probing);
        let all =
            read_all(&db).unwrap_or_else(|e| panic!("fault at op {fail_at}: store damaged: {e}"));
        let applied = all.contains_key(&key(21));
        for i in 0..26u32 {
            let want = if !applied {
                (i < 20).then(|| old_value(i))
            } else if i == 1 {
                None
            } else if i % 3 == 0 || i >= 20 {
                Some(new_value(i))
            } else {
                Some(old_value(i))
            };
            assert_eq!(
                all.get(&key(i)),
                want.as_ref(),
                "fault at op {fail_at}: key {i} half-applied"
            );
        }
        if result.is_ok() {
            assert!(
                applied,
                "fault at op {fail_at}: commit said Ok but is not there"
            );
        }
        if applied {
            outcomes.1 += 1
        } else {
            outcomes.0 += 1
        }
        if result.is_ok() && fail_at >= ops_used {
            break; // the fault came after the whole commit: every point was covered
        }
        fail_at += 1;
        assert!(fail_at < 500, "commit never finished");
    }
    eprintln!(
        "{fail_at} fault points: {} left it absent, {} left it applied",
        outcomes.0, outcomes.1
    );
    assert!(
        outcomes.0 > 0 && outcomes.1 > 0,
        "both outcomes must have occurred"
    );
}

/// The ambiguous create-if-absent: the server stored the commit record, the
/// reply was lost, and the retry finds the record there. It is this
/// commit's own, so the commit succeeded: it must neither land twice (a
/// retried increment) nor report a conflict (EEXIST for a create that
/// succeeded).
#[test]
fn a_commit_whose_reply_was_lost_lands_once() {
    for probing in [false, true] {
        let mem = Arc::new(InMemory::new());
        let store = Arc::new(ChaosStore::new(mem.clone()));
        store.set(Chaos::LostCreateReply);
        let o = Options {
            store_retries: 3,
            ..opts()
        };
        let location = StoreLocation::Custom(store.clone());
        let db = if probing {
            let coord = Arc::new(ProbingCoordinator(engine::InProcessCoordinator::new()));
            Db::open_shared(location, o, coord)
        } else {
            Db::open(location, o)
        }
        .expect("open");
        db.run(|tx| tx.ensure_tree("t", small_tree(4)))
            .expect("tree");
        const N: u64 = 60;
        for i in 0..N {
            // Read, increment, write: a commit applied twice shows.
            db.run(|tx| {
                let n = tx
                    .get("t", b"counter")?
                    .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap_or([0; 8])));
                tx.upsert("t", b"counter", &(n + 1).to_le_bytes())?;
                // A create-only key: a second landing of this commit, or a
                // false conflict retried, would find it there.
                if tx.get("t", &key(i as u32))?.is_some() {
                    return Err(Error::InvalidArgument(format!("key {i} written twice")));
                }
                tx.upsert("t", &key(i as u32), b"x")
            })
            .unwrap_or_else(|e| panic!("commit {i}: {e}"));
        }
        drop(db);
        assert!(store.faults.load(std::sync::atomic::Ordering::SeqCst) >= N / 3);
        let db = Db::open(StoreLocation::Memory(mem), opts()).expect("reopen");
        let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
        let n = tx.get("t", b"counter").expect("get").expect("counter");
        assert_eq!(
            n,
            (N).to_le_bytes(),
            "probing={probing}: every increment once"
        );
    }
}
