//! Snapshots: read-only states of the whole volume, each a name pinned to
//! one commit. Taking one writes one small object (`snapshots/<hex name>`:
//! the name, the commit's seq, the time), whatever the size of the volume;
//! nothing is copied. GC keeps every node and value a pinned state reaches,
//! and before it trims the log behind a pin it writes a checkpoint at the
//! pin's seq, from which the state is rebuilt from then on.

use crate::codec::{self, Kind};
use crate::ctx::DbInner;
use crate::error::{Error, Result};
use crate::log::{now_ms, RegState};
use crate::store::{snapshot_path, BlobStore};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Longest snapshot name, in bytes: stored hex-encoded as one file name,
/// which a local folder bounds at 255 bytes.
pub const NAME_MAX: usize = 120;

/// One snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Its name.
    pub name: String,
    /// The commit it shows the volume at.
    pub seq: u64,
    /// When it was taken, ms since the epoch.
    pub time_ms: u64,
}

/// Refuses a name that could not be one path segment of a mount.
pub fn check_name(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "snapshot name {name:?}: {why}"
        )))
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > NAME_MAX {
        return bad(&format!("longer than {NAME_MAX} bytes"));
    }
    if name == "." || name == ".." {
        return bad("reserved");
    }
    if name.contains(['/', '\0']) {
        return bad("contains '/' or NUL");
    }
    Ok(())
}

/// Takes snapshot `name` of the newest state this process can learn of.
pub(crate) fn create(db: &DbInner, name: &str) -> Result<SnapshotInfo> {
    check_name(name)?;
    let _turn = db.gc_turn.lock();
    let state = db.fresh_state(true)?;
    // A pin names a position in the log: the records up to it must
    // outlive a power cut, or the position could be taken again by
    // another commit after one.
    db.registry.log().sync(state.seq)?;
    let info = SnapshotInfo {
        name: name.to_string(),
        seq: state.seq,
        time_ms: now_ms(),
    };
    let store = &db.loader.store;
    let path = snapshot_path(name);
    if !store.create(&path, codec::encode(Kind::Snapshot, &info))? {
        return Err(Error::InvalidArgument(format!("snapshot {name:?} exists")));
    }
    store.sync(&[path])?;
    db.pinned.lock().put(state.seq, state);
    Ok(info)
}

/// Every snapshot, by name.
pub(crate) fn list(db: &DbInner) -> Result<Vec<SnapshotInfo>> {
    list_in(&db.loader.store)
}

/// Every snapshot of the volume in `store`, by name.
pub(crate) fn list_in(store: &BlobStore) -> Result<Vec<SnapshotInfo>> {
    let mut out = Vec::new();
    for m in store.list("snapshots")? {
        let Some(data) = store.get(&m.location)? else {
            continue; // deleted since the listing
        };
        out.push(codec::decode::<SnapshotInfo>(
            Kind::Snapshot,
            m.location.as_ref(),
            &data,
        )?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Snapshot `name`, if there is one.
pub(crate) fn get(db: &DbInner, name: &str) -> Result<Option<SnapshotInfo>> {
    check_name(name)?;
    let path = snapshot_path(name);
    match db.loader.store.get(&path)? {
        Some(data) => Ok(Some(codec::decode(Kind::Snapshot, path.as_ref(), &data)?)),
        None => Ok(None),
    }
}

/// Deletes snapshot `name`; false if there was none. What only it kept is
/// freed by the next GC pass.
pub(crate) fn delete(db: &DbInner, name: &str) -> Result<bool> {
    if get(db, name)?.is_none() {
        return Ok(false);
    }
    let path = snapshot_path(name);
    db.loader.store.delete(&path)?;
    // Durable before GC frees what only it kept: a snapshot back from a
    // power cut without its nodes would be a broken one.
    db.loader.store.sync_everything()?;
    Ok(true)
}

/// The registry state as of commit `seq` (a snapshot's), cached.
pub(crate) fn state_at(db: &DbInner, seq: u64) -> Result<Arc<RegState>> {
    if let Some(s) = db.pinned.lock().get(&seq) {
        return Ok(s.clone());
    }
    let state = Arc::new(db.registry.state_at(seq)?);
    db.pinned.lock().put(seq, state.clone());
    Ok(state)
}
