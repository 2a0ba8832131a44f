//! The namespace as transaction functions: POSIX names, attributes and file
//! content as reads and writes of engine trees. Everything here runs inside
//! a caller's transaction and needs no mount: what it asks of the host
//! serving the volume is behind [`Host`]. `crate::fs` (the mounted host)
//! and the macros, fsck and dump all build on it.

pub mod clone;
mod clone_source;
pub mod content;
pub mod dirs;
pub mod names;
pub mod paths;
pub mod quota;
pub mod schema;
pub mod trash;

use schema::{Inode, Kind, Time};

/// What a namespace operation needs of the host it runs for.
pub trait Host {
    /// This host's id in directory stamps (unique per mount).
    fn id(&self) -> u64;
    /// True while the kernel or an open handle on this host still refers to
    /// `ino`: its last link going away leaves the inode for the host to
    /// delete once nothing does.
    fn in_use(&self, ino: u64) -> bool;
    /// Shows in `inode` what this host buffered for it and has not
    /// committed yet (size, times, mode of a file being written).
    fn overlay(&self, _ino: u64, _inode: &mut Inode) {}
    /// Where this host remembers directory names for trash paths.
    fn dir_names(&self) -> Option<&trash::DirNames> {
        None
    }
}

/// A host with nothing open and nothing buffered: a tool working on a
/// volume without mounting it.
#[derive(Clone, Copy, Debug)]
pub struct Detached {
    /// Its id in directory stamps.
    pub id: u64,
}

impl Host for Detached {
    fn id(&self) -> u64 {
        self.id
    }

    fn in_use(&self, _ino: u64) -> bool {
        false
    }
}

/// Who is asking (from the FUSE request).
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    /// Effective user.
    pub uid: u32,
    /// Effective group.
    pub gid: u32,
}

/// An inode with the attributes a caller should see (directory stamps folded
/// in, buffered writes of this host counted).
#[derive(Clone, Debug)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Its attributes.
    pub inode: Inode,
}

/// What a new node is.
#[derive(Clone, Copy, Debug)]
pub struct NodeSpec<'a> {
    /// Its kind.
    pub kind: Kind,
    /// Permission bits (umask applied by the kernel).
    pub perm: u32,
    /// Device number (devices).
    pub rdev: u32,
    /// Symlink target.
    pub target: &'a [u8],
}

impl NodeSpec<'_> {
    /// A node of `kind` with `perm` and nothing else.
    pub fn new(kind: Kind, perm: u32) -> NodeSpec<'static> {
        NodeSpec {
            kind,
            perm,
            rdev: 0,
            target: b"",
        }
    }
}

/// Changes `setattr` asks for.
#[derive(Clone, Debug, Default)]
pub struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size.
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<Time>,
    /// New modification time.
    pub mtime: Option<Time>,
    /// New change time.
    pub ctime: Option<Time>,
    /// The process asking (the FUSE request's pid), when known: a process's
    /// changes to a file whose writes it has buffered ride with them.
    pub by: Option<u32>,
}

/// One directory entry as readdir returns it.
#[derive(Clone, Debug)]
pub struct DirEntry {
    /// Name.
    pub name: Vec<u8>,
    /// Inode number.
    pub ino: u64,
    /// Kind.
    pub kind: Kind,
}

#[cfg(test)]
mod tests;
