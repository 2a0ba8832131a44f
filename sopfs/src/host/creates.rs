//! Files created on this host whose name is not committed yet: a new file's
//! create, data and attributes land in one commit at its first flush,
//! fsync or close (one store round trip per small file, not two). Until
//! then the name and the inode live here, seen by this host's lookups and
//! by nobody else (close-to-open: other hosts see a file at its close).
//! Only where that pays (`Fs::defers_creates`: on S3, or one process
//! alone); on a local folder shared through Redis a create commits at once.
//!
//! When other hosts share the volume, the name is also claimed in the
//! coordinator at create ([`claim_key`]), so an `O_EXCL` create of a name
//! another host is creating at that moment fails at once, as on one host:
//! lock files keep working across hosts. The claim lasts [`CLAIM_TTL`]; a
//! file still open after that, or a coordinator that lost it, falls back
//! to the commit's rule: the first commit of the name wins and the other
//! host's close reports `EEXIST`.
//!
//! Any operation on the name other than writing, reading and stating the
//! file (a rename, a link, an unlink, a listing of its directory, another
//! create of the same name) commits it first, so the namespace code never
//! meets a name that is only here.

use crate::ns::schema::Inode;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;

/// How long a host's claim on a name it is creating holds off other hosts.
pub(crate) const CLAIM_TTL: Duration = Duration::from_secs(30);

/// The coordinator key of the name `parent/name` while a host creates it:
/// the same on every host and every build (FNV-1a, not the std hasher,
/// whose output may change between Rust releases).
pub(crate) fn claim_key(parent: u64, name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"name\0".iter().chain(&parent.to_be_bytes()).chain(name) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A file made here whose create is still to be committed.
#[derive(Clone, Debug)]
pub(crate) struct NewFile {
    /// Its directory.
    pub parent: u64,
    /// Its name there.
    pub name: Vec<u8>,
    /// The inode it starts with (mode, owner, times of the create).
    pub inode: Inode,
    /// Its claim in the coordinator: key and owner.
    pub claim: (u64, u128),
}

/// The names of this host's uncommitted creates.
#[derive(Default)]
pub(crate) struct NewNames {
    names: Mutex<HashMap<(u64, Vec<u8>), u64>>,
}

impl NewNames {
    /// Claims `parent/name` for `ino`; false if this host holds it already.
    pub(crate) fn claim(&self, parent: u64, name: &[u8], ino: u64) -> bool {
        let mut names = self.names.lock();
        let key = (parent, name.to_vec());
        if names.contains_key(&key) {
            return false;
        }
        names.insert(key, ino);
        true
    }

    /// The inode waiting under `parent/name`.
    pub(crate) fn get(&self, parent: u64, name: &[u8]) -> Option<u64> {
        let names = self.names.lock();
        if names.is_empty() {
            return None;
        }
        names.get(&(parent, name.to_vec())).copied()
    }

    /// Every inode waiting in `parent`.
    pub(crate) fn in_dir(&self, parent: u64) -> Vec<u64> {
        let names = self.names.lock();
        names
            .iter()
            .filter(|((p, _), _)| *p == parent)
            .map(|(_, ino)| *ino)
            .collect()
    }

    /// Forgets `parent/name` (committed, or given up) if it still names `ino`.
    pub(crate) fn release(&self, parent: u64, name: &[u8], ino: u64) {
        let mut names = self.names.lock();
        let key = (parent, name.to_vec());
        if names.get(&key) == Some(&ino) {
            names.remove(&key);
        }
    }
}
