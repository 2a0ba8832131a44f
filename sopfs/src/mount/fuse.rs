//! The FUSE edge: each handler converts fuser's types, calls the core
//! ([`crate::fs::Fs`], or the virtual tree for its inodes), and replies.
//! Every failure goes through `FuseFs::errno`: an `FsError` becomes its
//! errno in `FsError::errno` only, and is counted in the error metric.

use crate::error::FsError;
use crate::fs::{Attr, Caller, Fs, NodeSpec, SetAttr};
use crate::macros::run::RunConfig;
use crate::mount::metrics::{Metrics, Op};
use crate::mount::route::{bare_dir, Router, Side};
use crate::mount::virt::{Control, Virtual};
use crate::ns::schema::{Kind, Time};
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The adapter fuser drives.
pub struct FuseFs {
    /// The volume, for what only it serves (xattrs, fsync, statfs, ...).
    fs: Arc<Fs>,
    /// Everything either tree may serve.
    route: Router,
    ttl: Duration,
    metrics: Arc<Metrics>,
}

impl FuseFs {
    /// Serves `fs`; the kernel may cache entries and attributes for `ttl`;
    /// macros run from `/.macros` with `cfg`; `/.sopfs` shows `control`.
    pub fn new(fs: Arc<Fs>, ttl: Duration, cfg: RunConfig, control: Control) -> FuseFs {
        FuseFs {
            metrics: control.metrics.clone(),
            route: Router::new(fs.clone(), Virtual::new(fs.clone(), cfg, control)),
            fs,
            ttl,
        }
    }
}

/// Open flags by side: the kernel reads virtual files directly (their
/// content is made at open and may change size).
fn open_flags(side: Side) -> FopenFlags {
    match side {
        Side::Volume => FopenFlags::empty(),
        Side::Virtual => FopenFlags::FOPEN_DIRECT_IO,
        // A snapshot never changes: what the kernel cached stays true.
        Side::Snapshot => FopenFlags::FOPEN_KEEP_CACHE,
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
    }
}

fn to_attr(a: &Attr) -> FileAttr {
    let i = &a.inode;
    FileAttr {
        ino: INodeNo(a.ino),
        size: i.size,
        blocks: i.size.div_ceil(512),
        atime: i.atime.to_system(),
        mtime: i.mtime.to_system(),
        ctime: i.ctime.to_system(),
        crtime: i.crtime.to_system(),
        kind: file_type(i.kind),
        perm: i.perm as u16,
        nlink: i.nlink,
        uid: i.uid,
        gid: i.gid,
        rdev: i.rdev,
        blksize: 4096,
        flags: 0,
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn time(t: TimeOrNow) -> Time {
    match t {
        TimeOrNow::SpecificTime(t) => Time::from_system(t),
        TimeOrNow::Now => Time::now(),
    }
}

impl FuseFs {
    fn entry(&self, side: Side, r: Result<Attr, FsError>, reply: ReplyEntry) {
        match r {
            Ok(a) => {
                match side {
                    Side::Volume => self.fs.remember(a.ino),
                    // Counted by the lookup itself.
                    Side::Snapshot | Side::Virtual => {}
                }
                reply.entry(&self.ttl(side), &to_attr(&a), Generation(0))
            }
            Err(e) => reply.error(self.errno(&e)),
        }
    }

    /// How long the kernel may cache what `side` answered.
    fn ttl(&self, side: Side) -> Duration {
        match side {
            Side::Volume => self.ttl,
            Side::Virtual => Duration::ZERO,
            // Names in `/.snapshots` come and go; what is inside never changes.
            Side::Snapshot => Duration::from_secs(1),
        }
    }

    fn errno(&self, e: &FsError) -> Errno {
        let n = e.errno();
        if n == libc::EIO {
            tracing::error!(error = %e, "operation failed");
        }
        self.metrics.error(n);
        Errno::from_i32(n)
    }

    fn empty(&self, r: Result<(), FsError>, reply: ReplyEmpty) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno(&e)),
        }
    }

    /// Creates a node in a volume directory (the virtual tree takes none).
    fn make_node(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &[u8],
        spec: NodeSpec<'_>,
        reply: ReplyEntry,
    ) {
        if let Err(e) = self.route.volume_only(&[parent.0]) {
            return reply.error(self.errno(&e));
        }
        let r = self.fs.make_node(caller(req), parent.0, name, spec);
        self.entry(Side::Volume, r, reply);
    }

    fn xattr(&self, r: Result<Vec<u8>, FsError>, size: u32, reply: ReplyXattr) {
        match r {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(self.errno(&FsError::Range)),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(self.errno(&e)),
        }
    }
}

/// The xattr SELinux-aware tools ask of every file.
const SELINUX_LABEL: &[u8] = b"security.selinux";

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        // `ls -l` gets names and attributes in one round trip.
        let plus = InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO;
        if config.add_capabilities(plus).is_err() {
            tracing::info!("kernel without readdirplus: plain readdir");
        }
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.fs.flush_all() {
            tracing::error!(error = %e, "buffered writes lost at unmount");
        }
        self.fs.reap_all();
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.route.forget(ino.0, nlookup);
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _t = self.metrics.op(Op::Lookup);
        let (side, r) = self.route.lookup(parent.0, name.as_bytes());
        self.entry(side, r, reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _t = self.metrics.op(Op::Getattr);
        match self.route.getattr(ino.0) {
            (side, Ok(a)) => reply.attr(&self.ttl(side), &to_attr(&a)),
            (_, Err(e)) => reply.error(self.errno(&e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _t = self.metrics.op(Op::Setattr);
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
            ctime: ctime.map(Time::from_system),
            // Kernel-made requests (pid 0) are nobody's.
            by: Some(req.pid()).filter(|p| *p != 0),
        };
        match self.route.setattr(ino.0, &set) {
            (side, Ok(a)) => reply.attr(&self.ttl(side), &to_attr(&a)),
            (_, Err(e)) => reply.error(self.errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _t = self.metrics.op(Op::Readlink);
        match self.route.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(self.errno(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _t = self.metrics.op(Op::Create);
        let Some(kind) = Kind::from_mode(mode) else {
            return reply.error(self.errno(&FsError::Invalid("file type")));
        };
        let spec = NodeSpec {
            rdev,
            ..NodeSpec::new(kind, mode)
        };
        self.make_node(req, parent, name.as_bytes(), spec, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let _t = self.metrics.op(Op::Create);
        if let Some(r) = self.route.mkdir(caller(req), parent.0, name.as_bytes()) {
            return self.entry(Side::Snapshot, r, reply);
        }
        let spec = NodeSpec::new(Kind::Dir, mode);
        self.make_node(req, parent, name.as_bytes(), spec, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.metrics.op(Op::Remove);
        self.empty(self.route.unlink(parent.0, name.as_bytes()), reply);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.metrics.op(Op::Remove);
        if let Some(r) = self.route.rmdir(caller(req), parent.0, name.as_bytes()) {
            return self.empty(r, reply);
        }
        let r = self
            .route
            .volume_only(&[parent.0])
            .and_then(|()| self.fs.rmdir(parent.0, name.as_bytes()));
        self.empty(r, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _t = self.metrics.op(Op::Create);
        let spec = NodeSpec {
            target: target.as_os_str().as_bytes(),
            ..NodeSpec::new(Kind::Symlink, 0o777)
        };
        self.make_node(req, parent, link_name.as_bytes(), spec, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _t = self.metrics.op(Op::Rename);
        let r = self
            .route
            .volume_only(&[parent.0, newparent.0])
            .and_then(|()| {
                self.fs.rename(
                    parent.0,
                    name.as_bytes(),
                    newparent.0,
                    newname.as_bytes(),
                    flags.bits(),
                )
            });
        self.empty(r, reply);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _t = self.metrics.op(Op::Link);
        let r = self
            .route
            .volume_only(&[ino.0, newparent.0])
            .and_then(|()| self.fs.link(ino.0, newparent.0, newname.as_bytes()));
        self.entry(Side::Volume, r, reply);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _t = self.metrics.op(Op::Open);
        match self.route.open(ino.0, flags.0, caller(req)) {
            (side, Ok(fh)) => reply.opened(FileHandle(fh), open_flags(side)),
            (_, Err(e)) => reply.error(self.errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _t = self.metrics.op(Op::Read);
        match self.route.read(ino.0, fh.0, offset, size) {
            (side, Ok(d)) => {
                if side == Side::Volume {
                    self.metrics.read_bytes(d.len());
                }
                reply.data(&d)
            }
            (_, Err(e)) => reply.error(self.errno(&e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _t = self.metrics.op(Op::Write);
        let pid = Some(req.pid()).filter(|p| *p != 0);
        let r = self.route.write(fh.0, offset, data, pid);
        match r {
            Ok(n) => {
                self.metrics.written_bytes(n as usize);
                reply.written(n)
            }
            Err(e) => reply.error(self.errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _t = self.metrics.op(Op::Flush);
        self.empty(self.route.flush(ino.0, fh.0), reply);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _t = self.metrics.op(Op::Release);
        self.empty(self.route.release(fh.0), reply);
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _t = self.metrics.op(Op::Fsync);
        if crate::mount::snapshots::Snapshots::owns(ino.0) {
            return reply.ok();
        }
        self.empty(self.fs.fsync(ino.0), reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _t = self.metrics.op(Op::Open);
        match self.route.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(self.errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _t = self.metrics.op(Op::Readdir);
        let r = self.route.readdir(fh.0, offset, |e, next| {
            reply.add(
                INodeNo(e.ino),
                next,
                file_type(e.kind),
                OsStr::from_bytes(&e.name),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno(&e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let _t = self.metrics.op(Op::Readdir);
        let r = self
            .route
            .readdir_plus(fh.0, offset, |e, attr, next, side| {
                let name = OsStr::from_bytes(&e.name);
                let full = match attr {
                    Some(a) => reply.add(
                        INodeNo(e.ino),
                        next,
                        name,
                        &self.ttl(side),
                        &to_attr(a),
                        Generation(0),
                    ),
                    None => reply.add(
                        INodeNo(e.ino),
                        next,
                        name,
                        &Duration::ZERO,
                        &to_attr(&bare_dir(e.ino)),
                        Generation(0),
                    ),
                };
                if !full && attr.is_some() {
                    match side {
                        Side::Volume => self.fs.remember(e.ino),
                        Side::Snapshot => self.route.snaps.remember(e.ino),
                        Side::Virtual => {}
                    }
                }
                full
            });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno(&e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _t = self.metrics.op(Op::Release);
        self.route.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _t = self.metrics.op(Op::Fsync);
        self.empty(self.fs.sync_store(), reply);
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let _t = self.metrics.op(Op::Other);
        // `df` on a directory under a quota shows the quota.
        let quota = if crate::mount::snapshots::Snapshots::owns(ino.0)
            || crate::mount::virt::Virtual::owns(ino.0)
        {
            None
        } else {
            self.fs.quota_of(ino.0).ok().flatten()
        };
        if let Some(q) = quota.filter(|q| q.max_bytes > 0 || q.max_inodes > 0) {
            let (bsize, unlimited) = (4096u64, 1u64 << 40);
            let blocks = match q.max_bytes {
                0 => unlimited,
                m => m.div_ceil(bsize),
            };
            let bfree = blocks.saturating_sub(q.bytes.div_ceil(bsize));
            let files = match q.max_inodes {
                0 => unlimited,
                m => m,
            };
            let ffree = files.saturating_sub(q.inodes);
            return reply.statfs(
                blocks,
                bfree,
                bfree,
                files,
                ffree,
                bsize as u32,
                255,
                bsize as u32,
            );
        }
        // The store has no fixed size: report a large, steady capacity.
        let used = self.fs.inode_count().unwrap_or(0);
        let blocks = 1u64 << 40;
        let files = 1u64 << 40;
        reply.statfs(blocks, blocks, blocks, files, files - used, 4096, 255, 4096);
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _t = self.metrics.op(Op::Xattr);
        let r = self
            .route
            .volume_only(&[ino.0])
            .and_then(|()| self.fs.setxattr(ino.0, name.as_bytes(), value, flags));
        self.empty(r, reply);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _t = self.metrics.op(Op::Xattr);
        let r = self.route.getxattr(ino.0, name.as_bytes());
        if matches!(r, Err(FsError::NoAttr)) && name.as_bytes() == SELINUX_LABEL {
            // No file here carries a label unless a user set one: "not
            // supported" rather than "absent" lets `ls -l` (coreutils caches
            // that answer per device) stop asking for every file listed.
            return reply.error(self.errno(&FsError::NotSupported));
        }
        self.xattr(r, size, reply);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _t = self.metrics.op(Op::Xattr);
        self.xattr(self.route.listxattr(ino.0), size, reply);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.metrics.op(Op::Xattr);
        let r = self
            .route
            .volume_only(&[ino.0])
            .and_then(|()| self.fs.removexattr(ino.0, name.as_bytes()));
        self.empty(r, reply);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        let _t = self.metrics.op(Op::Other);
        // Mounted with default_permissions: the kernel checks access itself.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _t = self.metrics.op(Op::Create);
        let name = name.as_bytes();
        match self.route.create(caller(req), parent.0, name, mode, flags) {
            (side, Ok((a, fh))) => {
                if side == Side::Volume {
                    self.fs.remember(a.ino);
                }
                reply.created(
                    &self.ttl(side),
                    &to_attr(&a),
                    Generation(0),
                    FileHandle(fh),
                    open_flags(side),
                )
            }
            (_, Err(e)) => reply.error(self.errno(&e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _t = self.metrics.op(Op::Other);
        let r = self
            .route
            .volume_only(&[ino.0])
            .and_then(|()| self.fs.fallocate(ino.0, offset, length, mode));
        self.empty(r, reply);
    }
}
