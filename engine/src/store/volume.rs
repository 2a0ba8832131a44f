//! The volume marker (`volume`): names a folder or bucket as a sopfs volume
//! and records its on-store format; the lock file of a local folder, which
//! keeps an embedded owner and cluster processes apart.

use super::{AtRestSpec, StoreLocation};
use crate::codec::{self, Kind};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The decoded `volume` object.
#[derive(Serialize, Deserialize)]
pub(crate) struct VolumeMarker {
    pub name: String,
    pub format: u32,
    /// Names the volume in coordinator keys.
    pub id: u128,
    pub created_ms: u64,
    /// How objects are compressed and encrypted; None (and left out of
    /// the encoding, which is then the plain one) when neither.
    pub at_rest: Option<AtRestSpec>,
}

/// The marker of formats 2 to 4, and of later ones without `at_rest`.
#[derive(Serialize, Deserialize)]
struct PlainMarker {
    name: String,
    format: u32,
    id: u128,
    created_ms: u64,
}

impl VolumeMarker {
    /// The framed marker.
    pub fn encode(&self) -> Vec<u8> {
        if self.at_rest.is_some() {
            return codec::encode(Kind::Volume, self);
        }
        codec::encode(
            Kind::Volume,
            &PlainMarker {
                name: self.name.clone(),
                format: self.format,
                id: self.id,
                created_ms: self.created_ms,
            },
        )
    }

    /// Reads a marker of any format this version knows.
    pub fn decode(data: &[u8]) -> Result<VolumeMarker> {
        // postcard stops where a struct ends: a plain marker is too short
        // for the sealed layout, which is tried first.
        if let Ok(m) = codec::decode::<VolumeMarker>(Kind::Volume, "volume", data) {
            return Ok(m);
        }
        let m: PlainMarker = codec::decode(Kind::Volume, "volume", data)?;
        Ok(VolumeMarker {
            name: m.name,
            format: m.format,
            id: m.id,
            created_ms: m.created_ms,
            at_rest: None,
        })
    }
}

/// On-store format. 2: blobs in one level of 256 folders (1 had two levels,
/// which cost a mkdir for most of a young volume's blobs). 3: the log may
/// also live in segment files (`log/`), which a format-2 reader would not
/// see. 4: cluster-mode processes on a local folder append to those
/// segments too (taking turns), where a format-3 process would keep
/// creating record objects for seqs already taken. 5: objects may be
/// compressed or encrypted (`seal.rs`, said by the marker's `at_rest`),
/// which a format-4 reader would take for damage. 6: a leaf value may be a
/// slice of a blob holding several values (`Value::Slice`, leaf tag 5),
/// which a format-5 reader cannot decode; sealed or not. 7: commit records
/// of version 4 (a base and a read set: records placed ahead, which a
/// format-6 reader would fold without deciding whether they are void).
/// This version opens formats 2 to 6 and marks them 7 when it opens them
/// to write.
pub(crate) const VOLUME_FORMAT: u32 = 7;

/// Formats this version reads.
pub(crate) fn format_supported(format: u32) -> bool {
    (2..=VOLUME_FORMAT).contains(&format)
}

/// Top-level names of a volume (a folder holding anything else is refused).
const OUR_TOP_LEVEL: &[&str] = &[
    "blobs",
    "log",
    "segments",
    "staging",
    "checkpoints",
    "intents",
    "volume",
    "members",
    "snapshots",
];

/// Refuses a folder that holds other things than a volume's (checked before
/// anything, even a lock file, is written into it).
pub(crate) fn refuse_foreign_folder(root: &std::path::Path) -> Result<()> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Io {
                path: root.display().to_string(),
                source,
            })
        }
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && !OUR_TOP_LEVEL.contains(&name.as_str()) {
            return Err(Error::NotAVolume(format!(
                "{}: folder is not empty and holds no sopfs volume",
                root.display()
            )));
        }
    }
    Ok(())
}

/// Creates a local store's folder and takes its lock: exclusive for embedded
/// mode, shared for cluster mode (so the two never mix). None for other stores.
pub(crate) fn folder_lock(
    location: &StoreLocation,
    exclusive: bool,
) -> Result<Option<ExclusiveLock>> {
    let Some(root) = location.local_root() else {
        return Ok(None);
    };
    refuse_foreign_folder(root)?;
    super::durable::create_dirs(root).map_err(|source| Error::Io {
        path: root.display().to_string(),
        source,
    })?;
    let lock = if exclusive {
        ExclusiveLock::acquire(root)?
    } else {
        ExclusiveLock::acquire_shared(root)?
    };
    Ok(Some(lock))
}

/// The lock of a local store opened to read only: its lock file taken
/// shared if there is one (so no embedded owner writes meanwhile, and a
/// running one makes this fail with `InUse`), nothing if there is none,
/// and never a file created. None for other stores.
pub(crate) fn read_lock(location: &StoreLocation) -> Result<Option<ExclusiveLock>> {
    let Some(root) = location.local_root() else {
        return Ok(None);
    };
    let path = root.join(".embedded.lock");
    match std::fs::File::open(&path) {
        Ok(file) => ExclusiveLock::hold(file, false, root, &path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Holds the exclusive lock of an embedded-mode local store while alive.
pub struct ExclusiveLock {
    _file: std::fs::File,
}

impl ExclusiveLock {
    /// Takes the store's lock file, failing with `InUse` if another process has it.
    pub fn acquire(root: &std::path::Path) -> Result<Self> {
        Self::take(root, true)
    }

    /// Takes the lock file shared: any number of cluster-mode processes may
    /// hold it together, but not alongside an embedded one.
    pub fn acquire_shared(root: &std::path::Path) -> Result<Self> {
        Self::take(root, false)
    }

    fn take(root: &std::path::Path, exclusive: bool) -> Result<Self> {
        let path = root.join(".embedded.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::Io {
                path: path.display().to_string(),
                source,
            })?;
        Self::hold(file, exclusive, root, &path)
    }

    /// Locks `file` (the lock file at `path` of the store at `root`),
    /// failing with `InUse` when another process holds it against us.
    fn hold(
        file: std::fs::File,
        exclusive: bool,
        root: &std::path::Path,
        path: &std::path::Path,
    ) -> Result<Self> {
        let got = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match got {
            Ok(()) => Ok(ExclusiveLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::InUse(root.display().to_string())),
            Err(std::fs::TryLockError::Error(source)) => Err(Error::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }
}
