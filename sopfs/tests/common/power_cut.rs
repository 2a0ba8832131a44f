//! A power-cut simulator for a store in a local folder.
//!
//! A SIGKILL keeps the page cache; a power cut keeps only what a barrier
//! (fsync, fdatasync, syncfs) made durable, and an arbitrary part of the
//! rest. The engine makes every barrier through `engine::durable`, which
//! this simulator observes (feature `power-cut-sim`): at each one it copies
//! what became durable into a shadow of the folder (a file's bytes, a
//! folder's names). At a cut it builds, in another folder, what a real cut
//! could leave: every durable byte and name, and a random part of what was
//! never synced:
//! - a name created or removed since its folder's last fsync is there or
//!   not (each independently: stricter than a journaling filesystem);
//! - a file grown by appends since its last fsync keeps its durable bytes
//!   and then either a torn prefix of the new ones or a random subset of
//!   their 4 KiB pages, the lost ones reading as zeros (a hole);
//! - a file never synced reads back whole, empty, or torn;
//! - a file replaced since its last fsync is its old or its new self.

use engine::durable::Barrier;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::RngExt;
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// What barriers made durable in one watched folder.
#[derive(Default)]
struct Shadow {
    /// Durable bytes of each file, by path relative to the root.
    files: HashMap<PathBuf, Vec<u8>>,
    /// Durable names of each folder, by path relative to the root.
    names: HashMap<PathBuf, BTreeSet<OsString>>,
}

fn shadows() -> &'static Mutex<HashMap<PathBuf, Shadow>> {
    static SHADOWS: OnceLock<Mutex<HashMap<PathBuf, Shadow>>> = OnceLock::new();
    SHADOWS.get_or_init(|| {
        engine::durable::observe(passed);
        Mutex::new(HashMap::new())
    })
}

fn listing(dir: &Path) -> BTreeSet<OsString> {
    std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

/// The watched root holding `p`, and `p` relative to it.
fn owner<'a>(
    all: &'a mut HashMap<PathBuf, Shadow>,
    p: &Path,
) -> Option<(&'a mut Shadow, PathBuf, PathBuf)> {
    let (root, shadow) = all.iter_mut().find(|(root, _)| p.starts_with(root))?;
    let rel = p.strip_prefix(root).ok()?.to_path_buf();
    Some((shadow, root.clone(), rel))
}

fn passed(b: Barrier<'_>) {
    let mut all = shadows().lock();
    match b {
        Barrier::File(p) => {
            if let Some((shadow, _, rel)) = owner(&mut all, p) {
                if let Ok(bytes) = std::fs::read(p) {
                    shadow.files.insert(rel, bytes);
                }
            }
        }
        Barrier::Dir(p) => {
            if let Some((shadow, _, rel)) = owner(&mut all, p) {
                shadow.names.insert(rel, listing(p));
            }
        }
        Barrier::Everything(_) => {
            // syncfs flushes the whole filesystem: every watched folder.
            for (root, shadow) in all.iter_mut() {
                capture_all(root, root, shadow);
            }
        }
    }
}

fn capture_all(root: &Path, dir: &Path, shadow: &mut Shadow) {
    let Ok(rel) = dir.strip_prefix(root) else {
        return;
    };
    shadow.names.insert(rel.to_path_buf(), listing(dir));
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => capture_all(root, &p, shadow),
            Ok(_) => {
                if let (Ok(bytes), Ok(r)) = (std::fs::read(&p), p.strip_prefix(root)) {
                    shadow.files.insert(r.to_path_buf(), bytes);
                }
            }
            Err(_) => {}
        }
    }
}

/// Starts watching the store folder `root`; what it holds already is
/// durable (a folder left by a cut is what the disk had after the reboot).
pub fn watch(root: &Path) {
    let mut shadow = Shadow::default();
    if root.is_dir() {
        capture_all(root, root, &mut shadow);
    }
    shadows().lock().insert(root.to_path_buf(), shadow);
}

/// Stops watching `root` (its process is gone).
pub fn forget(root: &Path) {
    shadows().lock().remove(root);
}

/// What the simulator knows of `rel` under `root`: for a failure message.
pub fn explain(root: &Path, rel: &str) -> String {
    let all = shadows().lock();
    let Some(shadow) = all.get(root) else {
        return format!("{} is not watched", root.display());
    };
    let rel = Path::new(rel);
    let live = std::fs::metadata(root.join(rel)).map(|m| m.len());
    let named = rel
        .parent()
        .and_then(|d| shadow.names.get(d))
        .zip(rel.file_name())
        .is_some_and(|(names, n)| names.contains(n));
    format!(
        "{}: before the cut {:?} bytes; durable bytes {:?}; name durable: {named}",
        rel.display(),
        live.ok(),
        shadow.files.get(rel).map(Vec::len)
    )
}

/// Cuts the power of `root`: writes into `into` (an empty folder) what
/// could be left of it, drawing the lost part with `rng`.
pub fn cut(root: &Path, into: &Path, rng: &mut StdRng) {
    let all = shadows().lock();
    let empty = Shadow::default();
    let shadow = all.get(root).unwrap_or(&empty);
    build(root, Path::new(""), into, shadow, rng);
}

fn build(root: &Path, rel: &Path, into: &Path, shadow: &Shadow, rng: &mut StdRng) {
    std::fs::create_dir_all(into.join(rel)).expect("image folder");
    let now = listing(&root.join(rel));
    let durable = shadow.names.get(rel).cloned().unwrap_or_default();
    for name in now.union(&durable) {
        let (is_now, is_durable) = (now.contains(name), durable.contains(name));
        let kept = if is_now == is_durable {
            is_now
        } else {
            rng.random_bool(0.5)
        };
        if !kept {
            continue;
        }
        let child = rel.join(name);
        let live = root.join(&child);
        let is_dir = if is_now {
            live.is_dir()
        } else {
            shadow.names.contains_key(&child)
        };
        if is_dir {
            build(root, &child, into, shadow, rng);
            continue;
        }
        let current = if is_now {
            std::fs::read(&live).ok()
        } else {
            None
        };
        let bytes = survivor(shadow.files.get(&child), current, rng);
        std::fs::write(into.join(&child), bytes).expect("image file");
    }
}

/// What a cut leaves of one file, durable as `durable`, `current` now.
fn survivor(durable: Option<&Vec<u8>>, current: Option<Vec<u8>>, rng: &mut StdRng) -> Vec<u8> {
    match (durable, current) {
        (Some(d), Some(c)) if c.starts_with(d) => grown(d.len(), c, rng),
        (Some(d), Some(c)) if d.starts_with(&c) => d.clone(),
        (Some(d), Some(c)) => {
            if rng.random_bool(0.5) {
                d.clone()
            } else {
                c
            }
        }
        (Some(d), None) => d.clone(),
        (None, Some(c)) => grown(0, c, rng),
        (None, None) => Vec::new(),
    }
}

/// `c` of which the first `keep` bytes are durable: the rest torn at a
/// random byte, or a random subset of its pages kept (the others zeros,
/// the file as long as its last kept page), or all kept, or none.
fn grown(keep: usize, mut c: Vec<u8>, rng: &mut StdRng) -> Vec<u8> {
    const PAGE: usize = 4096;
    if c.len() == keep {
        return c;
    }
    match rng.random_range(0..4) {
        0 => c.truncate(keep),
        1 => {}
        2 => {
            let at = rng.random_range(keep..=c.len());
            c.truncate(at);
        }
        _ => {
            let first_page = keep / PAGE;
            let mut end = keep;
            for page in first_page..c.len().div_ceil(PAGE) {
                let (lo, hi) = ((page * PAGE).max(keep), ((page + 1) * PAGE).min(c.len()));
                if rng.random_bool(0.5) {
                    end = hi;
                } else {
                    c[lo..hi].fill(0);
                }
            }
            c.truncate(end);
        }
    }
    c
}
