//! Nodes made by melds (`log/ahead.rs`): every reader derives them from
//! the log alike, and none is in the store or in a record until someone
//! writes it out, so each process keeps the ones it made here, out of
//! reach of the cache's eviction, until they are in the store or nobody
//! can ask for them any more.

use crate::error::Result;
use crate::ids::{BlobId, NodeId};
use crate::log::RegState;
use crate::store::{blob_path, BlobStore};
use crate::tree::{Node, NodeCache};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a melded node no longer in the newest state is kept: a
/// transaction on an older state may still read it (transactions time out
/// well before this; a snapshot's state has its melded nodes written out
/// when it is made, `Registry::state_at`).
const SUPERSEDED_KEEP: Duration = Duration::from_secs(120);

/// One node a meld made.
struct Melded {
    node_id: NodeId,
    node: Arc<Node>,
    made: Instant,
    /// When it was first seen out of the newest state.
    superseded: Option<Instant>,
}

/// The melded nodes of one process that the store does not hold (or may
/// not hold) yet, by blob id.
#[derive(Default)]
pub(crate) struct MeldedNodes(parking_lot::Mutex<HashMap<BlobId, Melded>>);

impl MeldedNodes {
    /// Keeps `node`, version `blob` of `node_id`, which a meld just made.
    pub fn keep(&self, blob: BlobId, node_id: NodeId, node: Arc<Node>) {
        self.0.lock().entry(blob).or_insert_with(|| Melded {
            node_id,
            node,
            made: Instant::now(),
            superseded: None,
        });
    }

    /// The node of `blob`, if a meld here made it and it is still kept.
    pub fn get(&self, blob: BlobId) -> Option<Arc<Node>> {
        self.0.lock().get(&blob).map(|m| m.node.clone())
    }

    /// Writes to the store those `state` names that are at least `age`
    /// old (all of them with `Duration::ZERO`, before a checkpoint of
    /// `state`), hands them to `cache` and lets them go. The same bytes
    /// under the same name from several processes are one object: a node
    /// every process made costs at most one write each.
    pub fn write_out(
        &self,
        store: &BlobStore,
        cache: &NodeCache,
        state: &RegState,
        age: Duration,
    ) -> Result<usize> {
        let now = Instant::now();
        let named = |blob: &BlobId, m: &Melded| {
            state.nodes.get(&m.node_id).is_some_and(|l| l.blob == *blob)
        };
        let due: Vec<(BlobId, Arc<Node>)> = self
            .0
            .lock()
            .iter()
            .filter(|(blob, m)| now.duration_since(m.made) >= age && named(blob, m))
            .map(|(blob, m)| (*blob, m.node.clone()))
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        // Together: a checkpoint of a tree many hosts wrote at once writes
        // hundreds (one at a time, 370 held a commit up 4 s at 10 ms per
        // request).
        let items: Vec<_> = due
            .iter()
            .map(|(blob, node)| (blob_path(*blob), node.encode()))
            .collect();
        let paths: Vec<_> = items.iter().map(|(p, _)| p.clone()).collect();
        store.put_all(items)?;
        store.sync(&paths)?;
        let mut kept = self.0.lock();
        for (blob, node) in due.iter() {
            cache.insert(*blob, node.clone());
            kept.remove(blob);
        }
        Ok(due.len())
    }

    /// Lets go of those out of `newest` (the newest state folded) for
    /// longer than a reader of an older snapshot may want them.
    pub fn let_go(&self, newest: &RegState) {
        let now = Instant::now();
        self.0.lock().retain(|blob, m| {
            if newest
                .nodes
                .get(&m.node_id)
                .is_some_and(|l| l.blob == *blob)
            {
                m.superseded = None;
                return true;
            }
            let since = *m.superseded.get_or_insert(now);
            now.duration_since(since) < SUPERSEDED_KEEP
        });
    }
}
