//! `fsck`: walks every directory from the root, checks each B-tree and
//! entry, reads every file's content (each blob's checksum is verified on
//! read), compares link counts with the names found, and finds inodes no
//! directory reaches. `repair` fixes what can be fixed without guessing:
//! names pointing at missing inodes go, link counts are set to the names
//! found, directories' parent links are set to where they are found, and
//! unreachable inodes are linked into `/lost+found` as `#<ino>`. Damaged
//! file content cannot be rebuilt: it is reported with the file's path.

use crate::error::{FsError, FsResult};
use crate::fs::Fs;
use crate::ns::dirs::Entries;
use crate::ns::schema::{
    chunk_key, dir_tree, load, store, Entry, Inode, Kind, CHUNK, CONTENT, INODES, ROOT_INO,
};
use crate::ns::{names, Caller, NodeSpec};
use engine::{Cursor, Direction, Transaction};
use std::collections::{BTreeMap, HashMap};

/// What a check found and did.
#[derive(Debug, Default)]
pub struct FsckReport {
    /// Directories walked.
    pub dirs: u64,
    /// Other files walked.
    pub files: u64,
    /// File bytes read and verified.
    pub bytes: u64,
    /// Problems found, one line each.
    pub problems: Vec<String>,
    /// Repairs made, one line each.
    pub repaired: Vec<String>,
}

/// One fix, applied in its own transaction after the walk.
enum Fix {
    DropEntry { dir: u64, name: Vec<u8> },
    SetNlink { ino: u64, nlink: u32 },
    SetParent { ino: u64, parent: u64 },
    Adopt { ino: u64, kind: Kind },
}

fn shown(path: &str, name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    if path == "/" {
        format!("/{name}")
    } else {
        format!("{path}/{name}")
    }
}

impl Fs {
    /// Checks the whole volume (and repairs it when asked); `progress` is
    /// told of every file and directory walked.
    pub fn fsck(&self, repair: bool, progress: &mut dyn FnMut(u64)) -> FsResult<FsckReport> {
        let mut r = FsckReport::default();
        let mut fixes = Vec::new();
        // One snapshot for the whole walk, however long it takes on a slow
        // store (the default transaction limit is for file operations).
        let mut tx = self.db().begin_with(engine::TxOptions {
            mode: engine::TxMode::ReadOnly,
            timeout: super::WALK_LIMIT,
            sync: false,
        })?;
        for tree in [INODES, CONTENT] {
            tx.check_tree(tree)
                .map_err(|e| FsError::Corrupted(format!("tree {tree:?}: {e}")))?;
        }
        // Names found per inode (non-directories), and where each was first seen.
        let mut names: HashMap<u64, (u32, String)> = HashMap::new();
        let mut reached: HashMap<u64, ()> = HashMap::new();
        reached.insert(ROOT_INO, ());
        let mut stack = vec![(ROOT_INO, "/".to_string())];
        while let Some((d, path)) = stack.pop() {
            r.dirs += 1;
            progress(1);
            if let Err(e) = tx.check_tree(&dir_tree(d)) {
                r.problems.push(format!("directory {path}: {e}"));
                continue;
            }
            let mut entries = Entries::of(d);
            loop {
                let batch = match entries.next_batch(&mut tx, 1024) {
                    Ok(Some(b)) => b,
                    Ok(None) => break,
                    Err(e) => {
                        r.problems.push(format!("directory {path}: {e}"));
                        break;
                    }
                };
                for (name, v) in batch {
                    let p = shown(&path, &name);
                    let Some(e) = Entry::decode(&v) else {
                        r.problems.push(format!("{p}: unreadable entry"));
                        continue;
                    };
                    let inode = match load(&mut tx, e.ino) {
                        Ok(i) => i,
                        Err(FsError::NotFound) => {
                            r.problems
                                .push(format!("{p}: points at missing inode {:#x}", e.ino));
                            fixes.push(Fix::DropEntry { dir: d, name });
                            continue;
                        }
                        Err(err) => {
                            r.problems.push(format!("{p}: inode {:#x}: {err}", e.ino));
                            continue;
                        }
                    };
                    reached.insert(e.ino, ());
                    if inode.kind != e.kind {
                        r.problems.push(format!(
                            "{p}: entry says {:?}, inode is {:?}",
                            e.kind, inode.kind
                        ));
                    }
                    if inode.kind == Kind::Dir {
                        if inode.parent != d {
                            r.problems.push(format!(
                                "{p}: parent link {:#x}, found in {d:#x}",
                                inode.parent
                            ));
                            fixes.push(Fix::SetParent {
                                ino: e.ino,
                                parent: d,
                            });
                        }
                        stack.push((e.ino, p));
                        continue;
                    }
                    let seen = names.entry(e.ino).or_insert((0, p.clone()));
                    seen.0 += 1;
                    if seen.0 > 1 {
                        continue;
                    }
                    r.files += 1;
                    progress(1);
                    if inode.kind == Kind::File {
                        match read_all(&mut tx, e.ino, &inode) {
                            Ok(n) => r.bytes += n,
                            Err(err) => r.problems.push(format!("{p}: content damaged: {err}")),
                        }
                    }
                }
            }
        }
        let mut all: BTreeMap<u64, Inode> = BTreeMap::new();
        let mut cur = Cursor::new(.., Direction::Forward);
        loop {
            for (k, v) in tx.scan(INODES, &mut cur, 1024)? {
                let ino = k
                    .try_into()
                    .map(u64::from_be_bytes)
                    .map_err(|_| FsError::Corrupted("inode key".into()))?;
                match Inode::decode(&v) {
                    Some(i) => {
                        all.insert(ino, i);
                    }
                    None => r.problems.push(format!("inode {ino:#x}: unreadable")),
                }
            }
            if cur.is_done() {
                break;
            }
        }
        for (ino, inode) in &all {
            if inode.kind != Kind::Dir {
                if let Some((found, path)) = names.get(ino) {
                    if *found != inode.nlink {
                        r.problems.push(format!(
                            "{path}: link count {}, {found} name(s) found",
                            inode.nlink
                        ));
                        fixes.push(Fix::SetNlink {
                            ino: *ino,
                            nlink: *found,
                        });
                    }
                    continue;
                }
            }
            // Unlinked but still open somewhere: reaped when closed.
            if reached.contains_key(ino) || inode.nlink == 0 {
                continue;
            }
            r.problems.push(format!(
                "inode {ino:#x} ({:?}, {} bytes) is in no directory",
                inode.kind, inode.size
            ));
            fixes.push(Fix::Adopt {
                ino: *ino,
                kind: inode.kind,
            });
        }
        drop(tx);
        if repair {
            for fix in fixes {
                r.repaired.push(self.apply(fix)?);
            }
        }
        Ok(r)
    }

    fn apply(&self, fix: Fix) -> FsResult<String> {
        match fix {
            Fix::DropEntry { dir, name } => {
                self.write_tx(|tx| Ok(tx.remove(&dir_tree(dir), &name)?))?;
                Ok(format!(
                    "removed name {:?} of a missing inode from directory {dir:#x}",
                    String::from_utf8_lossy(&name)
                ))
            }
            Fix::SetNlink { ino, nlink } => {
                self.write_tx(|tx| {
                    let mut i = load(tx, ino)?;
                    i.nlink = nlink;
                    store(tx, ino, &i)
                })?;
                Ok(format!("inode {ino:#x}: link count set to {nlink}"))
            }
            Fix::SetParent { ino, parent } => {
                self.write_tx(|tx| {
                    let mut i = load(tx, ino)?;
                    i.parent = parent;
                    store(tx, ino, &i)
                })?;
                Ok(format!("directory {ino:#x}: parent set to {parent:#x}"))
            }
            Fix::Adopt { ino, kind } => {
                let name = format!("#{ino}");
                self.write_tx(|tx| {
                    let lost = self.lost_and_found(tx)?;
                    let entry = Entry { ino, kind };
                    tx.upsert(&dir_tree(lost), name.as_bytes(), &entry.encode())?;
                    if kind == Kind::Dir {
                        let mut i = load(tx, ino)?;
                        i.parent = lost;
                        store(tx, ino, &i)?;
                    }
                    Ok(())
                })?;
                Ok(format!("inode {ino:#x} linked as /lost+found/{name}"))
            }
        }
    }

    /// `/lost+found`, created when missing.
    fn lost_and_found(&self, tx: &mut Transaction) -> FsResult<u64> {
        if let Some(v) = tx.get(&dir_tree(ROOT_INO), b"lost+found")? {
            if let Some(e) = Entry::decode(&v) {
                return Ok(e.ino);
            }
        }
        let spec = NodeSpec::new(Kind::Dir, 0o700);
        let root = Caller { uid: 0, gid: 0 };
        let attr = names::make_node(tx, self, root, ROOT_INO, b"lost+found", spec)?;
        Ok(attr.ino)
    }
}

/// Reads every chunk of a file (each value's checksum is checked on load).
fn read_all(tx: &mut Transaction, ino: u64, inode: &Inode) -> engine::Result<u64> {
    let mut n = 0;
    for idx in 0..inode.size.div_ceil(CHUNK) {
        if let Some(d) = tx.get(CONTENT, &chunk_key(ino, idx))? {
            n += d.len() as u64;
        }
    }
    Ok(n)
}
