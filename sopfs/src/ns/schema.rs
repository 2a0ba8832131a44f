//! The filesystem's records as the engine stores them: inodes, directory
//! entries, per-host directory stamps, and the keys and tree names they live under.
//!
//! Trees: `i` maps an inode number (8 bytes, big-endian) to its [`Inode`];
//! `c` maps (inode, chunk index) to file content, one value per [`CHUNK`];
//! `d<ino in hex>` is a directory: name -> [`Entry`], plus reserved keys under
//! a leading NUL byte (names never hold NUL) for [`DirStamp`]s.
//!
//! Also the record-level reads and writes every namespace operation uses.

use crate::error::{FsError, FsResult};
use engine::{Transaction, TreeConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The root directory's inode number (FUSE's fixed root id).
pub const ROOT_INO: u64 = 1;
/// Size of one content chunk: a small write rewrites at most this much.
pub const CHUNK: u64 = 256 * 1024;
/// The inode tree.
pub const INODES: &str = "i";
/// The content tree.
pub const CONTENT: &str = "c";
/// Longest name a directory takes.
pub const NAME_MAX: usize = 255;
/// Largest file size (2^53: what every user-space tool handles exactly).
pub const MAX_FILE_SIZE: u64 = 1 << 53;

/// What an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
}

impl Kind {
    /// The `S_IFMT` bits of this kind.
    pub fn mode_bits(self) -> u32 {
        match self {
            Kind::File => libc::S_IFREG,
            Kind::Dir => libc::S_IFDIR,
            Kind::Symlink => libc::S_IFLNK,
            Kind::Fifo => libc::S_IFIFO,
            Kind::Socket => libc::S_IFSOCK,
            Kind::CharDev => libc::S_IFCHR,
            Kind::BlockDev => libc::S_IFBLK,
        }
    }

    /// The kind named by a mode's `S_IFMT` bits (0 means a regular file, as for mknod).
    pub fn from_mode(mode: u32) -> Option<Kind> {
        match mode & libc::S_IFMT {
            0 | libc::S_IFREG => Some(Kind::File),
            libc::S_IFDIR => Some(Kind::Dir),
            libc::S_IFLNK => Some(Kind::Symlink),
            libc::S_IFIFO => Some(Kind::Fifo),
            libc::S_IFSOCK => Some(Kind::Socket),
            libc::S_IFCHR => Some(Kind::CharDev),
            libc::S_IFBLK => Some(Kind::BlockDev),
            _ => None,
        }
    }
}

/// A point in time as stored: seconds and nanoseconds since the epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Time {
    /// Seconds since 1970 (negative before).
    pub secs: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

impl Time {
    /// The current wall-clock time.
    pub fn now() -> Time {
        Time::from_system(SystemTime::now())
    }

    /// Converts from `SystemTime`.
    pub fn from_system(t: SystemTime) -> Time {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Time {
                secs: d.as_secs() as i64,
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let (mut secs, mut nanos) = (-(d.as_secs() as i64), d.subsec_nanos());
                if nanos > 0 {
                    secs -= 1;
                    nanos = 1_000_000_000 - nanos;
                }
                Time { secs, nanos }
            }
        }
    }

    /// Converts to `SystemTime`.
    pub fn to_system(self) -> SystemTime {
        if self.secs >= 0 {
            UNIX_EPOCH + Duration::new(self.secs as u64, self.nanos)
        } else {
            UNIX_EPOCH - Duration::from_secs(self.secs.unsigned_abs())
                + Duration::from_nanos(self.nanos as u64)
        }
    }
}

/// One inode: everything but a directory's entries and a file's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inode {
    /// What it is.
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky (`0o7777`).
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Hard links (for directories: what `stamps` add comes on top).
    pub nlink: u32,
    /// Size in bytes (files), target length (symlinks).
    pub size: u64,
    /// Last access.
    pub atime: Time,
    /// Last content change.
    pub mtime: Time,
    /// Last change of anything.
    pub ctime: Time,
    /// Creation.
    pub crtime: Time,
    /// Device number (devices).
    pub rdev: u32,
    /// The parent directory: of a directory for `..` and move checks; of a
    /// file, the directory its quotas are charged to (0 in files made before
    /// quotas: the root).
    pub parent: u64,
    /// Symlink target.
    pub target: Vec<u8>,
    /// Extended attributes.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Inode {
    /// A fresh inode of `kind`, times set to now.
    pub fn new(kind: Kind, perm: u32, uid: u32, gid: u32) -> Inode {
        let now = Time::now();
        Inode {
            kind,
            perm: perm & 0o7777,
            uid,
            gid,
            nlink: if kind == Kind::Dir { 2 } else { 1 },
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            rdev: 0,
            parent: 0,
            target: Vec::new(),
            xattrs: BTreeMap::new(),
        }
    }

    /// Encodes for the `i` tree.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data into a Vec cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes a stored inode; None when the bytes are not one.
    pub fn decode(bytes: &[u8]) -> Option<Inode> {
        postcard::from_bytes(bytes).ok()
    }
}

/// A directory entry: the inode a name points at and its kind (for readdir).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Inode number.
    pub ino: u64,
    /// Its kind.
    pub kind: Kind,
}

impl Entry {
    /// Encodes for a directory tree.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes a stored entry.
    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        postcard::from_bytes(bytes).ok()
    }
}

/// What one host (one lane of it: see [`stamp_key`]) changed in a
/// directory: each writes only its own stamp, so creates from many hosts
/// into one directory never write the same key (a shared mtime or link
/// count would make every pair of them conflict).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirStamp {
    /// Latest entry change this host made.
    pub mtime: Time,
    /// Subdirectories this host added, minus those it removed.
    pub subdirs: i64,
}

impl DirStamp {
    /// Encodes for a directory tree.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes a stored stamp.
    pub fn decode(bytes: &[u8]) -> Option<DirStamp> {
        postcard::from_bytes(bytes).ok()
    }
}

/// Prefix of the reserved keys in a directory tree.
pub const STAMP_PREFIX: &[u8] = b"\0s";

/// Stamp keys a host spreads its stamps of one directory over.
pub const STAMP_LANES: u8 = 32;

/// The key of a host's stamp in lane `lane` (below [`STAMP_LANES`]). One
/// key per host was enough between hosts, not within one: the commits of
/// a host's threads that go out together in one record (group commit on
/// S3) are checked against each other key by key, and creates into one
/// directory all wrote the host's stamp, so every group kept one of them
/// and sent the rest back (16 writers into one folder of one mount: one
/// file a record, some writers starved). Each thread writes its own lane.
/// Volumes written before lanes have keys without the lane byte; folding
/// reads every key under [`STAMP_PREFIX`] alike.
pub fn stamp_key(host: u64, lane: u8) -> Vec<u8> {
    let mut k = STAMP_PREFIX.to_vec();
    k.extend_from_slice(&host.to_be_bytes());
    k.push(lane);
    k
}

/// The `i` tree key of an inode.
pub fn ino_key(ino: u64) -> [u8; 8] {
    ino.to_be_bytes()
}

/// The `c` tree key of a chunk.
pub fn chunk_key(ino: u64, index: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&ino.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The chunk index in a `c` tree key.
pub fn chunk_index(key: &[u8]) -> Option<u64> {
    let b: [u8; 8] = key.get(8..16)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// The tree holding a directory's entries.
pub fn dir_tree(ino: u64) -> String {
    format!("d{ino:016x}")
}

/// Directory tree shape: modest nodes, entries inline.
pub const DIR_TREE: TreeConfig = TreeConfig {
    slots: 64,
    inline_max: 512,
};
const INODE_TREE: TreeConfig = TreeConfig {
    slots: 64,
    inline_max: 1024,
};
const CONTENT_TREE: TreeConfig = TreeConfig {
    slots: 64,
    inline_max: 256,
};

/// Creates the trees of a volume and its root directory (owned by
/// `uid`:`gid`) where they are missing.
pub fn format(tx: &mut Transaction, uid: u32, gid: u32) -> FsResult<()> {
    tx.ensure_tree(INODES, INODE_TREE)?;
    tx.ensure_tree(CONTENT, CONTENT_TREE)?;
    tx.ensure_tree(&dir_tree(ROOT_INO), DIR_TREE)?;
    if tx.get(INODES, &ino_key(ROOT_INO))?.is_none() {
        let mut root = Inode::new(Kind::Dir, 0o755, uid, gid);
        root.parent = ROOT_INO;
        tx.insert(INODES, &ino_key(ROOT_INO), &root.encode())?;
    }
    Ok(())
}

/// Checks a name for a new entry: not empty, no `/`, not `.` or `..`, at
/// most [`NAME_MAX`] bytes.
pub fn check_name(name: &[u8]) -> FsResult<()> {
    check_name_len(name)?;
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(FsError::Invalid("bad name"));
    }
    Ok(())
}

/// `ENAMETOOLONG` for a name longer than [`NAME_MAX`].
pub fn check_name_len(name: &[u8]) -> FsResult<()> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    Ok(())
}

/// The last inode number handed out (0: none yet).
static NEXT_INO: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A fresh inode number after `taken` was found taken: from a new prefix,
/// as the rest of the old one's range may well be taken too.
pub(crate) fn new_ino_after(taken: u64) -> u64 {
    use std::sync::atomic::Ordering;
    let _ = NEXT_INO.compare_exchange(taken, 0, Ordering::Relaxed, Ordering::Relaxed);
    new_ino()
}

/// A fresh inode number: this process's random prefix (31 bits) and the
/// next of its counter (32 bits). One process's new inodes and their
/// chunks sit side by side at the end of its own range of the `i` and `c`
/// trees, so hosts creating files at once change different leaves, and a
/// commit placed ahead of another host's is rarely void. A prefix another
/// process took too shows as a taken number (the caller asks again); the
/// counter running out draws a new prefix.
pub(crate) fn new_ino() -> u64 {
    loop {
        use std::sync::atomic::Ordering;
        let cur = NEXT_INO.load(Ordering::Relaxed);
        let next = if cur == 0 || cur & 0xffff_ffff == 0xffff_ffff {
            // Prefix 1 and up (0 holds the root), counter from 0.
            ((rand::random::<u64>() >> 33).max(1)) << 32
        } else {
            cur + 1
        };
        if NEXT_INO
            .compare_exchange(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            return next;
        }
    }
}

/// The inode `ino`.
pub fn load(tx: &mut Transaction, ino: u64) -> FsResult<Inode> {
    let bytes = tx.get(INODES, &ino_key(ino))?.ok_or(FsError::NotFound)?;
    Inode::decode(&bytes).ok_or_else(|| FsError::Corrupted(format!("inode {ino:#x}")))
}

/// Writes the inode `ino`.
pub fn store(tx: &mut Transaction, ino: u64, inode: &Inode) -> FsResult<()> {
    tx.upsert(INODES, &ino_key(ino), &inode.encode())?;
    Ok(())
}

/// The directory `ino` (`ENOTDIR` for anything else).
pub fn load_dir(tx: &mut Transaction, ino: u64) -> FsResult<Inode> {
    let d = load(tx, ino)?;
    if d.kind != Kind::Dir {
        return Err(FsError::NotDir);
    }
    Ok(d)
}

/// The entry `name` of directory `dir`.
pub fn entry(tx: &mut Transaction, dir: u64, name: &[u8]) -> FsResult<Option<Entry>> {
    match tx.get(&dir_tree(dir), name)? {
        None => Ok(None),
        Some(b) => Entry::decode(&b)
            .map(Some)
            .ok_or_else(|| FsError::Corrupted(format!("entry in {dir:#x}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trips_before_and_after_the_epoch() {
        for t in [
            Time { secs: 0, nanos: 0 },
            Time {
                secs: 1_700_000_000,
                nanos: 123,
            },
            Time {
                secs: -1,
                nanos: 500,
            },
            Time {
                secs: -86_400,
                nanos: 0,
            },
        ] {
            assert_eq!(Time::from_system(t.to_system()), t);
        }
    }

    #[test]
    fn records_round_trip() {
        let mut i = Inode::new(Kind::File, 0o4755, 1, 2);
        i.xattrs.insert(b"user.a".to_vec(), b"b".to_vec());
        assert_eq!(Inode::decode(&i.encode()), Some(i));
        let e = Entry {
            ino: 7,
            kind: Kind::Fifo,
        };
        assert_eq!(Entry::decode(&e.encode()), Some(e));
        assert_eq!(Inode::decode(b"\xff\xff"), None);
    }
}
