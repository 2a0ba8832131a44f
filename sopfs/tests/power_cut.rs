//! Power cuts at random points of a filesystem workload (creates, writes,
//! appends, overwrites, renames, unlinks, directory moves, GC), driven through
//! `Fs` on a local folder, with the power-cut simulator of
//! `common::power_cut` deciding what each cut leaves.
//!
//! After every cut the volume must open as it is (no repair), `fsck` must
//! find nothing, and the namespace must be exactly the state after some
//! prefix of the operations: at least every one acknowledged by an fsync
//! (a file's, or a directory's after a rename), and never a commit without
//! the ones before it. Each cut's volume is the next round's.
//!
//! `SOPFS_POWER_CUTS` sets the number of cuts (60 by default; the README's
//! long form runs 1,000), `SOPFS_POWER_CUT_SEED` replays a run.

mod common;
use common::power_cut;
use engine::{Db, Options, StoreLocation, TxMode};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use sopfs::fs::{Caller, Fs, FsOptions, NodeSpec};
use sopfs::ns::schema::{Kind, ROOT_INO};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const ROOT: Caller = Caller { uid: 0, gid: 0 };

/// A namespace: path -> a directory (None) or a file's bytes.
type Tree = BTreeMap<String, Option<Arc<Vec<u8>>>>;

/// What the workload did, shared with the thread that cuts the power.
#[derive(Default)]
struct Progress {
    /// The namespace after each commit; an operation's state is pushed
    /// before it is sent, so a commit in flight at the cut is counted.
    states: parking_lot::Mutex<Vec<Arc<Tree>>>,
    /// Index of the newest state an fsync made durable.
    acked: AtomicUsize,
    stop: AtomicBool,
}

impl Progress {
    fn push(&self, t: &Tree) {
        self.states.lock().push(Arc::new(t.clone()));
    }

    fn ack(&self) {
        let n = self.states.lock().len();
        self.acked.store(n - 1, Ordering::SeqCst);
    }
}

fn opts() -> Options {
    Options {
        // Small segments and frequent checkpoints: the cuts land on rolls
        // and checkpoints as well as on plain appends.
        segment_bytes: 48 << 10,
        checkpoint_every: 25,
        gc_interval: None,
        ..Options::default()
    }
}

fn open(root: &Path) -> Fs {
    let db = Db::open(StoreLocation::Local(root.to_path_buf()), opts())
        .unwrap_or_else(|e| panic!("{} does not open after a power cut: {e}", root.display()));
    Fs::new(db, FsOptions::default()).expect("fs")
}

/// The namespace as the volume holds it, and every path's inode.
fn walk(fs: &Fs) -> (Tree, HashMap<String, u64>) {
    let mut tree = Tree::new();
    let mut inos = HashMap::from([(String::new(), ROOT_INO)]);
    let mut tx = fs.db().begin(TxMode::ReadOnly).expect("begin");
    let mut stack = vec![(ROOT_INO, String::new())];
    while let Some((dir, path)) = stack.pop() {
        for (name, attr) in
            sopfs::ns::paths::list(&mut tx, fs, dir, None, None, usize::MAX).expect("list")
        {
            let name = String::from_utf8(name).expect("utf-8 names");
            let p = if path.is_empty() {
                name
            } else {
                format!("{path}/{name}")
            };
            inos.insert(p.clone(), attr.ino);
            if attr.inode.kind == Kind::Dir {
                tree.insert(p.clone(), None);
                stack.push((attr.ino, p));
            } else {
                let bytes = sopfs::ns::content::read_file(&mut tx, attr.ino).expect("read file");
                tree.insert(p, Some(Arc::new(bytes)));
            }
        }
    }
    (tree, inos)
}

fn parent_of(p: &str) -> (&str, &str) {
    p.rsplit_once('/').unwrap_or(("", p))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn bytes(rng: &mut StdRng) -> Vec<u8> {
    // Mostly small files (carried in the commit record); some past the
    // 1 MiB of values a record carries, so chunks are blobs of their own
    // (past 1 MiB buffered they go ahead of the commit, as a stash).
    let n = if rng.random_bool(0.04) {
        rng.random_range(1_100_000..1_500_000)
    } else {
        rng.random_range(1..8192)
    };
    let tag: u64 = rng.random();
    (0..n)
        .map(|i| (tag.wrapping_mul(i as u64 + 7) >> 13) as u8)
        .collect()
}

/// Runs operations until told to stop.
struct Workload<'a> {
    fs: &'a Fs,
    tree: Tree,
    inos: HashMap<String, u64>,
    rng: StdRng,
    progress: &'a Progress,
    next: u64,
}

impl Workload<'_> {
    fn pick(&mut self, dirs: bool) -> Option<String> {
        let all: Vec<&String> = self
            .tree
            .iter()
            .filter(|(_, v)| v.is_none() == dirs)
            .map(|(k, _)| k)
            .collect();
        if all.is_empty() {
            return None;
        }
        Some(all[self.rng.random_range(0..all.len())].clone())
    }

    fn dir(&mut self) -> String {
        if self.rng.random_bool(0.3) {
            return String::new();
        }
        self.pick(true).unwrap_or_default()
    }

    fn name(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{}-{}", self.next, self.rng.random::<u16>())
    }

    /// Commits an open file's writes: fsync (acknowledged) or close.
    fn finish(&mut self, ino: u64, fh: u64) {
        self.progress.push(&self.tree);
        if self.rng.random_bool(0.6) {
            self.fs.fsync(ino).expect("fsync");
            self.progress.ack();
        }
        self.fs.release(fh).expect("close");
    }

    fn step(&mut self) {
        let files = self.tree.values().filter(|v| v.is_some()).count();
        match self.rng.random_range(0..100) {
            0..=2 => {
                // GC with no retention: unreachable blobs go, and the log
                // is trimmed behind the newest checkpoint.
                self.fs.db().gc(Duration::ZERO, false).expect("gc");
            }
            3..=34 if files < 150 => {
                let dir = self.dir();
                let name = self.name("f");
                let path = join(&dir, &name);
                // Half the creates with O_EXCL: those land with their
                // data in one commit, never as an empty file first.
                let excl = self.rng.random_bool(0.5);
                if !excl {
                    self.tree.insert(path.clone(), Some(Arc::new(Vec::new())));
                    self.progress.push(&self.tree);
                }
                let flags = libc::O_WRONLY | if excl { libc::O_EXCL } else { 0 };
                let (attr, fh) = self
                    .fs
                    .create(ROOT, self.inos[&dir], name.as_bytes(), 0o644, flags)
                    .expect("create");
                self.inos.insert(path.clone(), attr.ino);
                let data = bytes(&mut self.rng);
                self.fs.write(fh, 0, &data).expect("write");
                self.tree.insert(path, Some(Arc::new(data)));
                self.finish(attr.ino, fh);
            }
            35..=44 => {
                let Some(path) = self.pick(false) else { return };
                let ino = self.inos[&path];
                let fh = self
                    .fs
                    .open(ino, libc::O_WRONLY | libc::O_APPEND)
                    .expect("open");
                let more = bytes(&mut self.rng);
                self.fs.write(fh, 0, &more).expect("append");
                let mut now = self.tree[&path].as_deref().cloned().unwrap_or_default();
                now.extend_from_slice(&more);
                self.tree.insert(path, Some(Arc::new(now)));
                self.finish(ino, fh);
            }
            45..=52 => {
                let Some(path) = self.pick(false) else { return };
                let ino = self.inos[&path];
                let fh = self.fs.open(ino, libc::O_WRONLY).expect("open");
                let patch = bytes(&mut self.rng);
                let mut now = self.tree[&path].as_deref().cloned().unwrap_or_default();
                let at = self.rng.random_range(0..=now.len());
                self.fs.write(fh, at as u64, &patch).expect("overwrite");
                if now.len() < at + patch.len() {
                    now.resize(at + patch.len(), 0);
                }
                now[at..at + patch.len()].copy_from_slice(&patch);
                self.tree.insert(path, Some(Arc::new(now)));
                self.finish(ino, fh);
            }
            53..=67 => {
                let Some(path) = self.pick(false) else { return };
                let to_dir = self.dir();
                let to_name = self.name("r");
                let (from_dir, from_name) = parent_of(&path);
                let (from_ino, to_ino) = (self.inos[from_dir], self.inos[&to_dir]);
                let from_name = from_name.to_string();
                let to = join(&to_dir, &to_name);
                let v = self.tree.remove(&path).flatten();
                self.tree.insert(to.clone(), v);
                let ino = self.inos.remove(&path).expect("ino");
                self.inos.insert(to, ino);
                self.progress.push(&self.tree);
                self.fs
                    .rename(
                        from_ino,
                        from_name.as_bytes(),
                        to_ino,
                        to_name.as_bytes(),
                        0,
                    )
                    .expect("rename");
                if self.rng.random_bool(0.5) {
                    // fsync of the directory: the rename is durable.
                    self.fs.sync_store().expect("fsync dir");
                    self.progress.ack();
                }
            }
            68..=79 => {
                let Some(path) = self.pick(false) else { return };
                let (dir, name) = parent_of(&path);
                let dir_ino = self.inos[dir];
                let name = name.to_string();
                self.tree.remove(&path);
                self.inos.remove(&path);
                self.progress.push(&self.tree);
                self.fs.unlink(dir_ino, name.as_bytes()).expect("unlink");
            }
            80..=88 => {
                if self.tree.len() - files > 12 {
                    return;
                }
                let dir = self.dir();
                let name = self.name("d");
                let path = join(&dir, &name);
                self.tree.insert(path.clone(), None);
                self.progress.push(&self.tree);
                let attr = self
                    .fs
                    .make_node(
                        ROOT,
                        self.inos[&dir],
                        name.as_bytes(),
                        NodeSpec::new(Kind::Dir, 0o755),
                    )
                    .expect("mkdir");
                self.inos.insert(path, attr.ino);
            }
            _ => {
                // A directory moves under another (never into itself).
                let (Some(src), target) = (self.pick(true), self.dir()) else {
                    return;
                };
                if target == src || target.starts_with(&format!("{src}/")) {
                    return;
                }
                let (from_dir, from_name) = parent_of(&src);
                let (from_ino, to_ino) = (self.inos[from_dir], self.inos[&target]);
                let name = from_name.to_string();
                let to = join(&target, &name);
                if self.tree.contains_key(&to) {
                    return;
                }
                let prefix = format!("{src}/");
                let moved: Vec<String> = self
                    .tree
                    .keys()
                    .filter(|k| **k == src || k.starts_with(&prefix))
                    .cloned()
                    .collect();
                for old in moved {
                    let new = format!("{to}{}", &old[src.len()..]);
                    let v = self.tree.remove(&old).flatten();
                    self.tree.insert(new.clone(), v);
                    if let Some(i) = self.inos.remove(&old) {
                        self.inos.insert(new, i);
                    }
                }
                self.progress.push(&self.tree);
                self.fs
                    .rename(from_ino, name.as_bytes(), to_ino, name.as_bytes(), 0)
                    .expect("move directory");
            }
        }
    }
}

fn describe(a: &Tree, b: &Tree) -> String {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("only on the volume: {k}")),
            Some(w) if w != v => out.push(format!(
                "differs: {k} ({} vs {} bytes)",
                v.as_ref().map_or(0, |x| x.len()),
                w.as_ref().map_or(0, |x| x.len())
            )),
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        out.push(format!("missing from the volume: {k}"));
    }
    out.truncate(12);
    out.join("\n  ")
}

#[test]
fn power_cuts_lose_nothing_fsync_acknowledged_and_never_wedge_the_volume() {
    let cuts: usize = std::env::var("SOPFS_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("SOPFS_POWER_CUT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("power cuts: {cuts}, seed {seed} (SOPFS_POWER_CUT_SEED replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let base = tempfile::tempdir().expect("tempdir");
    let mut root: PathBuf = base.path().join("vol-0");
    power_cut::watch(&root);
    let mut tree = Tree::new();
    let (mut acked_files, mut cut_tails) = (0usize, 0usize);
    for round in 0..cuts {
        let fs = open(&root);
        let (found, inos) = walk(&fs);
        assert_eq!(
            found, tree,
            "round {round}: the volume reopened differently"
        );
        let progress = Progress::default();
        progress.push(&tree);
        let next_root = base.path().join(format!("vol-{}", round + 1));
        let wait = Duration::from_micros(rng.random_range(0..40_000));
        let mut cut_rng = StdRng::seed_from_u64(rng.random());
        let work_rng = StdRng::seed_from_u64(rng.random());
        let (acked, upto) = std::thread::scope(|s| {
            let worker = s.spawn(|| {
                let mut w = Workload {
                    fs: &fs,
                    tree: tree.clone(),
                    inos,
                    rng: work_rng,
                    progress: &progress,
                    next: round as u64 * 100_000,
                };
                while !progress.stop.load(Ordering::SeqCst) {
                    w.step();
                }
            });
            std::thread::sleep(wait);
            // Read before the image: whatever was acknowledged by now was
            // made durable before the cut.
            let acked = progress.acked.load(Ordering::SeqCst);
            power_cut::cut(&root, &next_root, &mut cut_rng);
            let upto = progress.states.lock().len();
            progress.stop.store(true, Ordering::SeqCst);
            worker.join().expect("workload");
            (acked, upto)
        });
        drop(fs);
        let old_root = std::mem::replace(&mut root, next_root);
        // Each volume carries the torn tails kept aside in earlier rounds.
        let torn = |dir: &Path| {
            std::fs::read_dir(dir.join("segments")).map_or(0, |r| {
                r.flatten()
                    .filter(|e| e.file_name().to_string_lossy().contains("torn-"))
                    .count()
            })
        };
        power_cut::watch(&root);
        // The cut volume opens as it is, and holds a prefix of the history
        // no shorter than what fsync acknowledged.
        let torn_before = torn(&old_root);
        let fs = open(&root);
        cut_tails += torn(&root).saturating_sub(torn_before);
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| walk(&fs).0))
            .unwrap_or_else(|e| {
                let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
                let blob = msg
                    .split("path: \"")
                    .nth(1)
                    .and_then(|r| r.split('"').next());
                panic!(
                    "round {round} (seed {seed}): reading the volume after the cut: {msg}\n{}",
                    blob.map(|b| power_cut::explain(&old_root, b))
                        .unwrap_or_default()
                )
            });
        power_cut::forget(&old_root);
        let _ = std::fs::remove_dir_all(&old_root);
        let states = progress.states.lock();
        let matched = (acked..upto.min(states.len()))
            .rev()
            .find(|&i| *states[i] == found);
        let Some(at) = matched else {
            panic!(
                "round {round} (seed {seed}): the volume after the cut is no state from the \
                 acknowledged one ({acked}) to the last sent ({upto}); against the acknowledged:\n  {}",
                describe(&found, &states[acked])
            );
        };
        acked_files += states[acked].values().filter(|v| v.is_some()).count();
        let report = fs.fsck(false, &mut |_| {}).expect("fsck");
        assert!(
            report.problems.is_empty(),
            "round {round} (seed {seed}): fsck after the cut: {:?}",
            report.problems
        );
        tree = (*states[at]).clone();
        drop(states);
        drop(fs);
    }
    eprintln!(
        "{cuts} cuts: every volume opened, fsck clean, {acked_files} acknowledged files checked, \
         {cut_tails} torn log tails cut"
    );
}

#[test]
fn a_cut_right_after_format_or_the_first_commits_leaves_a_volume_that_opens() {
    // The report: a cut shortly after `sopfs format` left an empty volume
    // marker, and the volume never opened again.
    let base = tempfile::tempdir().expect("tempdir");
    for round in 0..40u64 {
        let root = base.path().join(format!("fresh-{round}"));
        power_cut::watch(&root);
        let fs = open(&root);
        let mut rng = StdRng::seed_from_u64(round);
        // Some rounds cut before any file, some after a few fsync'd ones.
        let files = round % 4;
        for i in 0..files {
            let name = format!("f{i}");
            let (attr, fh) = fs
                .create(ROOT, ROOT_INO, name.as_bytes(), 0o644, libc::O_WRONLY)
                .expect("create");
            fs.write(fh, 0, name.as_bytes()).expect("write");
            fs.fsync(attr.ino).expect("fsync");
            fs.release(fh).expect("close");
        }
        let image = base.path().join(format!("cut-{round}"));
        power_cut::cut(&root, &image, &mut rng);
        drop(fs);
        power_cut::forget(&root);
        power_cut::watch(&image);
        let fs = open(&image);
        let (tree, _) = walk(&fs);
        assert_eq!(
            tree.len() as u64,
            files,
            "round {round}: fsync'd files lost"
        );
        power_cut::forget(&image);
    }
}
