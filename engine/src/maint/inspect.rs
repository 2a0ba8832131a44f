//! Looking at a volume without opening it: what `sopfs status` shows. Takes
//! no lock and writes nothing, so it works beside a running embedded daemon.
//!
//! Processes serving a volume announce themselves under `members/<id>` and
//! rewrite that object every few seconds; its age is their heartbeat.

use crate::error::{Error, Result};
use crate::log::Registry;
use crate::store::{volume_path, BlobStore, Sealer, Secret, StoreLocation, VolumeMarker};
use object_store::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A process that announced itself on the volume.
#[derive(Clone, Debug)]
pub struct Member {
    /// Its id (unique per process and mount).
    pub id: String,
    /// What it wrote about itself (the caller's format).
    pub body: Vec<u8>,
    /// Time since its last heartbeat.
    pub age: Duration,
}

/// Facts about a volume.
#[derive(Clone, Debug)]
pub struct VolumeFacts {
    /// The volume's id (names its coordinator keys).
    pub id: u128,
    /// On-store format version.
    pub format: u32,
    /// zstd level objects are compressed with, if any.
    pub compression: Option<i32>,
    /// True when objects are encrypted.
    pub encrypted: bool,
    /// When it was formatted.
    pub created: SystemTime,
    /// Newest commit.
    pub seq: u64,
    /// Live B-tree nodes.
    pub nodes: usize,
    /// Blobs in the store (live or garbage not yet collected).
    pub blobs: u64,
    /// Their total size in bytes.
    pub blob_bytes: u64,
    /// Bytes of the commit log (records, and the nodes and small values
    /// they carry until GC writes them out).
    pub log_bytes: u64,
    /// Processes that announced themselves, freshest first.
    pub members: Vec<Member>,
    /// Snapshots, by name.
    pub snapshots: Vec<crate::maint::SnapshotInfo>,
}

pub(crate) fn member_path(id: &str) -> Path {
    Path::from(format!("members/{id}"))
}

/// Members of `store`, freshest first.
pub(crate) fn members(store: &BlobStore) -> Result<Vec<Member>> {
    let now = SystemTime::now();
    let mut out = Vec::new();
    for m in store.list("members")? {
        let Some(id) = m.location.filename().map(str::to_string) else {
            continue;
        };
        let Some(body) = store.get(&m.location)? else {
            continue;
        };
        let modified: SystemTime = m.last_modified.into();
        out.push(Member {
            id,
            body: body.to_vec(),
            age: now.duration_since(modified).unwrap_or(Duration::ZERO),
        });
    }
    out.sort_by_key(|m| m.age);
    Ok(out)
}

/// Reads the facts of the volume at `location`; `NotAVolume` when there is
/// none. An encrypted volume needs `key`.
pub fn inspect(location: &StoreLocation, key: Option<&Secret>) -> Result<VolumeFacts> {
    let store = Arc::new(BlobStore::open(location)?);
    let data = store
        .get(&volume_path())?
        .ok_or_else(|| Error::NotAVolume(format!("{location}: no sopfs volume here")))?;
    let marker = VolumeMarker::decode(&data)
        .map_err(|e| Error::NotAVolume(format!("{location}: not a sopfs volume ({e})")))?;
    let spec = marker.at_rest.clone();
    store.set_sealer(Sealer::for_volume(
        spec.as_ref(),
        key,
        &location.to_string(),
    )?);
    let log = Arc::new(crate::log::Log::open(
        store.clone(),
        crate::log::LogMode::ReadOnly,
        u64::MAX,
    )?);
    let loader = Arc::new(crate::tree::Loader::new(
        store.clone(),
        log.clone(),
        16 << 20,
        1 << 20,
    ));
    let melder = Arc::new(crate::txn::TreeMelder::new(loader));
    let registry = Registry::open(store.clone(), log, Some(melder))?;
    let state = registry.catch_up(true)?;
    let (mut blobs, mut blob_bytes) = (0, 0);
    for m in store.list("blobs")? {
        blobs += 1;
        blob_bytes += m.size;
    }
    let mut log_bytes = 0;
    for prefix in ["log", "segments"] {
        log_bytes += store.list(prefix)?.iter().map(|m| m.size).sum::<u64>();
    }
    Ok(VolumeFacts {
        id: marker.id,
        format: marker.format,
        compression: spec.as_ref().and_then(|s| s.zstd_level),
        encrypted: spec.as_ref().is_some_and(|s| s.cipher.is_some()),
        created: SystemTime::UNIX_EPOCH + Duration::from_millis(marker.created_ms),
        seq: state.seq,
        nodes: state.nodes.len(),
        blobs,
        blob_bytes,
        log_bytes,
        members: members(&store)?,
        snapshots: crate::maint::snapshots::list_in(&store)?,
    })
}
