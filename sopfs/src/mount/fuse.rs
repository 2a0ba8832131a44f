//! The FUSE edge: each handler converts fuser's types, calls the core
//! ([`crate::fs::Fs`], or the virtual tree for its inodes), and replies.
//! Every failure goes through `FuseFs::errno`: an `FsError` becomes its
//! errno in `FsError::errno` only, and is counted in the error metric.

use crate::error::FsError;
use crate::fs::{Attr, Caller, Fs, NodeSpec, SetAttr};
use crate::macros::run::RunConfig;
use crate::mount::metrics::{Metrics, Op};
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
    fs: Arc<Fs>,
    virt: Virtual,
    ttl: Duration,
    metrics: Arc<Metrics>,
}

impl FuseFs {
    /// Serves `fs`; the kernel may cache entries and attributes for `ttl`;
    /// macros run from `/.macros` with `cfg`; `/.sopfs` shows `control`.
    pub fn new(fs: Arc<Fs>, ttl: Duration, cfg: RunConfig, control: Control) -> FuseFs {
        FuseFs {
            metrics: control.metrics.clone(),
            virt: Virtual::new(fs.clone(), cfg, control),
            fs,
            ttl,
        }
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
    fn entry(&self, r: Result<Attr, FsError>, reply: ReplyEntry) {
        match r {
            Ok(a) => {
                self.fs.remember(a.ino);
                reply.entry(&self.ttl, &to_attr(&a), Generation(0))
            }
            Err(e) => reply.error(self.errno(&e)),
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
        if Virtual::owns(parent.0) {
            return reply.error(self.errno(&FsError::NotPermitted));
        }
        self.entry(self.fs.make_node(caller(req), parent.0, name, spec), reply);
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
        self.fs.forget(ino.0, nlookup);
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _t = self.metrics.op(Op::Lookup);
        if let Some(r) = self.virt.lookup(parent.0, name.as_bytes()) {
            return match r {
                Ok(a) => reply.entry(&Duration::ZERO, &to_attr(&a), Generation(0)),
                Err(e) => reply.error(self.errno(&e)),
            };
        }
        self.entry(self.fs.lookup(parent.0, name.as_bytes()), reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _t = self.metrics.op(Op::Getattr);
        if Virtual::owns(ino.0) {
            return match self.virt.getattr(ino.0) {
                Ok(a) => reply.attr(&Duration::ZERO, &to_attr(&a)),
                Err(e) => reply.error(self.errno(&e)),
            };
        }
        match self.fs.getattr_live(ino.0) {
            Ok(a) => reply.attr(&self.ttl, &to_attr(&a)),
            Err(e) => reply.error(self.errno(&e)),
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
        if Virtual::owns(ino.0) {
            // O_TRUNC on a virtual file: nothing to cut.
            return match self.virt.getattr(ino.0) {
                Ok(a) => reply.attr(&Duration::ZERO, &to_attr(&a)),
                Err(e) => reply.error(self.errno(&e)),
            };
        }
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
        match self.fs.setattr(ino.0, &set) {
            Ok(a) => reply.attr(&self.ttl, &to_attr(&a)),
            Err(e) => reply.error(self.errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _t = self.metrics.op(Op::Readlink);
        match self.fs.readlink(ino.0) {
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
        let spec = NodeSpec::new(Kind::Dir, mode);
        self.make_node(req, parent, name.as_bytes(), spec, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.metrics.op(Op::Remove);
        if let Some(r) = self.virt.unlink(parent.0, name.as_bytes()) {
            return self.empty(r, reply);
        }
        self.empty(self.fs.unlink(parent.0, name.as_bytes()), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.metrics.op(Op::Remove);
        if Virtual::owns(parent.0) {
            return reply.error(self.errno(&FsError::NotPermitted));
        }
        self.empty(self.fs.rmdir(parent.0, name.as_bytes()), reply);
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
        if Virtual::owns(parent.0) || Virtual::owns(newparent.0) {
            return reply.error(self.errno(&FsError::NotPermitted));
        }
        let r = self.fs.rename(
            parent.0,
            name.as_bytes(),
            newparent.0,
            newname.as_bytes(),
            flags.bits(),
        );
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
        if Virtual::owns(ino.0) || Virtual::owns(newparent.0) {
            return reply.error(self.errno(&FsError::NotPermitted));
        }
        self.entry(self.fs.link(ino.0, newparent.0, newname.as_bytes()), reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _t = self.metrics.op(Op::Open);
        if Virtual::owns(ino.0) {
            return match self.virt.open(ino.0) {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
                Err(e) => reply.error(self.errno(&e)),
            };
        }
        match self.fs.open(ino.0, flags.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(self.errno(&e)),
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
        if Virtual::owns_fh(fh.0) {
            return match self.virt.read(fh.0, offset, size) {
                Ok(d) => reply.data(&d),
                Err(e) => reply.error(self.errno(&e)),
            };
        }
        match self.fs.read(ino.0, offset, size) {
            Ok(d) => {
                self.metrics.read_bytes(d.len());
                reply.data(&d)
            }
            Err(e) => reply.error(self.errno(&e)),
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
        let r = if Virtual::owns_fh(fh.0) {
            self.virt.write(fh.0, offset, data)
        } else {
            self.fs
                .write_from(fh.0, offset, data, Some(req.pid()).filter(|p| *p != 0))
        };
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
        if Virtual::owns_fh(fh.0) {
            return self.empty(self.virt.flush(fh.0), reply);
        }
        let r = match self.fs.flush_handle(fh.0) {
            // A flush without a known handle still owes the file's commit.
            Err(FsError::BadHandle) => self.fs.flush(ino.0),
            r => r,
        };
        self.empty(r, reply);
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
        if Virtual::owns_fh(fh.0) {
            return self.empty(self.virt.release(fh.0), reply);
        }
        self.empty(self.fs.release(fh.0), reply);
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
        self.empty(self.fs.fsync(ino.0), reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _t = self.metrics.op(Op::Open);
        let r = if Virtual::owns(ino.0) {
            self.virt.opendir(ino.0)
        } else {
            self.fs.opendir(ino.0)
        };
        match r {
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
        if Virtual::owns_fh(fh.0) {
            return match self.virt.readdir(fh.0, offset) {
                Ok(list) => {
                    for (e, next) in list {
                        if reply.add(
                            INodeNo(e.ino),
                            next,
                            file_type(e.kind),
                            OsStr::from_bytes(&e.name),
                        ) {
                            break;
                        }
                    }
                    reply.ok()
                }
                Err(e) => reply.error(self.errno(&e)),
            };
        }
        let r = self.fs.readdir(fh.0, offset, |e, next| {
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
        if Virtual::owns_fh(fh.0) {
            return match self.virt.readdir(fh.0, offset) {
                Ok(list) => {
                    for (e, next) in list {
                        let a = match self.virt.getattr(e.ino) {
                            Ok(a) => a,
                            Err(_) => Attr {
                                ino: e.ino,
                                inode: crate::ns::schema::Inode::new(e.kind, 0o555, 0, 0),
                            },
                        };
                        if reply.add(
                            INodeNo(e.ino),
                            next,
                            OsStr::from_bytes(&e.name),
                            &Duration::ZERO,
                            &to_attr(&a),
                            Generation(0),
                        ) {
                            break;
                        }
                    }
                    reply.ok()
                }
                Err(e) => reply.error(self.errno(&e)),
            };
        }
        let r = self.fs.readdir_plus(fh.0, offset, |e, attr, next| {
            let name = OsStr::from_bytes(&e.name);
            let full = match attr {
                Some(a) => reply.add(
                    INodeNo(e.ino),
                    next,
                    name,
                    &self.ttl,
                    &to_attr(a),
                    Generation(0),
                ),
                None => {
                    // "." and "..": the kernel takes no reference for them.
                    let bare = to_attr(&Attr {
                        ino: e.ino,
                        inode: crate::ns::schema::Inode::new(Kind::Dir, 0o755, 0, 0),
                    });
                    reply.add(
                        INodeNo(e.ino),
                        next,
                        name,
                        &Duration::ZERO,
                        &bare,
                        Generation(0),
                    )
                }
            };
            if !full && attr.is_some() {
                self.fs.remember(e.ino);
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
        if Virtual::owns_fh(fh.0) {
            let _ = self.virt.release(fh.0);
        } else {
            self.fs.releasedir(fh.0);
        }
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

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _t = self.metrics.op(Op::Other);
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
        self.empty(
            self.fs.setxattr(ino.0, name.as_bytes(), value, flags),
            reply,
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _t = self.metrics.op(Op::Xattr);
        let r = self.fs.getxattr(ino.0, name.as_bytes());
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
        self.xattr(self.fs.listxattr(ino.0), size, reply);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.metrics.op(Op::Xattr);
        self.empty(self.fs.removexattr(ino.0, name.as_bytes()), reply);
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
        if let Some(r) = self.virt.create(parent.0, name.as_bytes()) {
            return match r {
                Ok((a, fh)) => reply.created(
                    &Duration::ZERO,
                    &to_attr(&a),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::FOPEN_DIRECT_IO,
                ),
                Err(e) => reply.error(self.errno(&e)),
            };
        }
        match self
            .fs
            .create(caller(req), parent.0, name.as_bytes(), mode, flags)
        {
            Ok((a, fh)) => {
                self.fs.remember(a.ino);
                reply.created(
                    &self.ttl,
                    &to_attr(&a),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                )
            }
            Err(e) => reply.error(self.errno(&e)),
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
        self.empty(self.fs.fallocate(ino.0, offset, length, mode), reply);
    }
}
