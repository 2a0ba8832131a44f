//! Trees to copy and compare: a tree with a bit of everything, and what
//! a walk of one sees (modes, owners, times, links, content, xattrs), for
//! the clone and snapshot suites.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use test_support::files_under;

#[allow(unsafe_code)]
pub fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let (p, n) = (
        CString::new(p.as_os_str().as_bytes()).expect("path"),
        CString::new(name).expect("name"),
    );
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr: {}", std::io::Error::last_os_error());
}

#[allow(unsafe_code)]
pub fn xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c = CString::new(p.as_os_str().as_bytes()).expect("path");
    let mut names = vec![0u8; 4096];
    // SAFETY: the buffer is as long as we say.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "listxattr: {}", std::io::Error::last_os_error());
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name).expect("name");
        let mut v = vec![0u8; 4096];
        // SAFETY: as above.
        let len =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(len >= 0, "getxattr: {}", std::io::Error::last_os_error());
        v.truncate(len as usize);
        out.push((name.to_vec(), v));
    }
    out
}

/// Everything a user sees of a tree, by path relative to `root`: kind and
/// mode, owner, size, mtime, content (or link target), xattrs, and which
/// paths are one inode (hard links, as a group number).
#[derive(Debug, PartialEq, Eq)]
pub struct Seen {
    pub mode: u32,
    pub owner: (u32, u32),
    pub mtime: i64,
    pub nlink: u64,
    pub data: Vec<u8>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub group: usize,
}

pub fn seen(root: &Path) -> BTreeMap<PathBuf, Seen> {
    let mut out = BTreeMap::new();
    let mut groups: BTreeMap<u64, usize> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).expect("stat");
        let ft = m.file_type();
        let data = if ft.is_file() {
            std::fs::read(&p).expect("read")
        } else if ft.is_symlink() {
            std::fs::read_link(&p)
                .expect("readlink")
                .as_os_str()
                .as_bytes()
                .to_vec()
        } else {
            Vec::new()
        };
        if ft.is_dir() {
            for e in std::fs::read_dir(&p).expect("readdir") {
                stack.push(e.expect("entry").path());
            }
        }
        let next = groups.len();
        let group = *groups.entry(m.ino()).or_insert(next);
        out.insert(
            p.strip_prefix(root).expect("under root").to_path_buf(),
            Seen {
                mode: m.mode(),
                owner: (m.uid(), m.gid()),
                mtime: m.mtime(),
                nlink: m.nlink(),
                xattrs: if ft.is_symlink() {
                    Vec::new()
                } else {
                    xattrs(&p)
                },
                data,
                group,
            },
        );
    }
    out
}

pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A tree with a bit of everything: nested directories, small files, a
/// big file of many chunks, hard links inside it and one from outside,
/// a symlink, a fifo, xattrs, odd modes, an old mtime.
#[allow(unsafe_code)]
pub fn build(m: &Path) -> PathBuf {
    let src = m.join("src");
    for d in ["a/b/c", "a/e", "empty"] {
        std::fs::create_dir_all(src.join(d)).expect("mkdir");
    }
    for i in 0..40u64 {
        let dir = ["", "a", "a/b", "a/b/c", "a/e"][i as usize % 5];
        std::fs::write(
            src.join(dir).join(format!("f{i}")),
            pattern(i, 100 + 997 * i as usize),
        )
        .expect("write");
    }
    std::fs::write(src.join("a/big"), pattern(99, 3 << 20)).expect("big");
    std::fs::hard_link(src.join("f0"), src.join("a/b/f0-link")).expect("link");
    std::fs::hard_link(src.join("f10"), m.join("outside-link")).expect("link out");
    std::os::unix::fs::symlink("b/f2", src.join("a/sym")).expect("symlink");
    let fifo = CString::new(src.join("a/fifo").as_os_str().as_bytes()).expect("path");
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    set_xattr(&src.join("a/b/c/f3"), "user.tag", b"three");
    set_xattr(&src.join("a"), "user.dir", b"yes");
    std::fs::set_permissions(src.join("a/e/f4"), std::fs::Permissions::from_mode(0o4755))
        .expect("chmod");
    let old = CString::new(src.join("f5").as_os_str().as_bytes()).expect("path");
    let times = [
        libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 0,
        },
    ];
    // SAFETY: a valid path and two timespecs.
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, old.as_ptr(), times.as_ptr(), 0) },
        0
    );
    src
}

pub fn store_bytes(dir: &Path) -> u64 {
    files_under(dir).iter().map(|(_, n)| n).sum()
}
