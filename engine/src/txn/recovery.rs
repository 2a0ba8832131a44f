//! Intent records and the recovery of commits whose owner died: roll back
//! (delete the blobs it wrote) unless its record made it into the log.

use crate::codec::{self, Kind};
use crate::ctx::DbInner;
use crate::error::Result;
use crate::ids::{BlobId, TxId};
use crate::log::now_ms;
use crate::store::{blob_path, intent_path};
use serde::{Deserialize, Serialize};

/// Written before a commit's blobs: what to delete if it never commits.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Intent {
    pub txid: TxId,
    pub time_ms: u64,
    /// After this (plus a grace period) the owner can no longer commit.
    pub deadline_ms: u64,
    /// The log position its commit can land after.
    pub base_seq: u64,
    pub blobs: Vec<BlobId>,
}

/// A peer's commit cannot land after its deadline; this margin covers clock skew.
const GRACE_MS: u64 = 2_000;

/// Outcome of looking at one intent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Recovered {
    /// The owner may still be working on it.
    Live,
    /// It committed: only the intent was left to delete.
    Committed,
    /// It never committed: its blobs were deleted.
    RolledBack,
}

/// Finishes or rolls back the commit behind one intent record. With `force`,
/// the owner is known dead (embedded mode at open): deadlines are ignored and
/// its blobs deleted at once.
pub(crate) fn recover_intent(db: &DbInner, txid: TxId, force: bool) -> Result<Recovered> {
    let store = &db.loader.store;
    let path = intent_path(txid);
    let Some(data) = store.get(&path)? else {
        return Ok(Recovered::Committed);
    };
    let intent: Intent = match codec::decode(Kind::Intent, path.as_ref(), &data) {
        Ok(i) => i,
        Err(e) => {
            // Unreadable: its blobs are unreachable anyway and GC will find them.
            tracing::warn!(error = %e, "dropping an unreadable intent record");
            store.delete(&path)?;
            return Ok(Recovered::RolledBack);
        }
    };
    if !force && now_ms() < intent.deadline_ms + GRACE_MS {
        return Ok(Recovered::Live);
    }
    let latest = db.registry.catch_up(true)?;
    let committed = match committed_between(db, txid, intent.base_seq, latest.seq) {
        Ok(c) => c,
        Err(e) => {
            // The log no longer reaches back that far: leave the blobs to GC,
            // which decides by reachability.
            tracing::warn!(error = %e, %txid, "cannot tell whether an old commit landed");
            store.delete(&path)?;
            return Ok(Recovered::RolledBack);
        }
    };
    if committed {
        store.delete(&path)?;
        return Ok(Recovered::Committed);
    }
    tracing::info!(%txid, blobs = intent.blobs.len(), "rolling back an unfinished commit");
    // Only a known-dead owner's blobs go now. A live-but-slow owner could
    // still land its commit point (a create request in flight past its
    // deadline), and nothing can fence that: its blobs are left to GC, whose
    // retention window keeps young blobs.
    if force {
        for b in &intent.blobs {
            store.delete(&blob_path(*b))?;
        }
    }
    store.delete(&path)?;
    Ok(Recovered::RolledBack)
}

/// Called when a lock of `owner` was found expired.
pub(crate) fn recover_owner(db: &DbInner, owner: TxId) {
    match recover_intent(db, owner, false) {
        Ok(r) => tracing::info!(%owner, outcome = ?r, "recovery after an expired lock"),
        Err(e) => tracing::warn!(%owner, error = %e, "recovery after an expired lock failed"),
    }
}

/// Looks at every intent record in the store; returns (committed, rolled back).
pub(crate) fn recover_all(db: &DbInner, force: bool) -> Result<(u64, u64)> {
    let mut done = (0, 0);
    for meta in db.loader.store.list("intents")? {
        let Some(txid) = meta
            .location
            .filename()
            .and_then(|f| u128::from_str_radix(f, 16).ok())
        else {
            continue;
        };
        match recover_intent(db, TxId(txid), force)? {
            Recovered::Live => {}
            Recovered::Committed => done.0 += 1,
            Recovered::RolledBack => done.1 += 1,
        }
    }
    Ok(done)
}

/// True if `txid` committed in `(after, upto]`.
pub(crate) fn committed_between(db: &DbInner, txid: TxId, after: u64, upto: u64) -> Result<bool> {
    Ok(db
        .registry
        .records(after, upto)?
        .iter()
        .any(|r| r.txid == txid && !r.void))
}
