//! Every durability barrier of a local folder: fsync of a file's data, of a
//! folder's names, and syncfs of the whole store.
//!
//! A power cut keeps what these calls made durable and an arbitrary part of
//! the rest, so the crash-safety argument of the engine (ARCHITECTURE.md,
//! "Power cuts") rests on the calls made here and on their order. Keeping
//! them in one place lets the power-cut simulator of the tests (feature
//! `power-cut-sim`) watch each one: it keeps a copy of what each barrier
//! made durable and, at a simulated cut, builds the folder a real cut could
//! leave.

use std::fs::File;
use std::io;
use std::path::Path;

/// What a barrier made durable (seen by the power-cut simulator).
#[derive(Clone, Copy, Debug)]
pub enum Barrier<'a> {
    /// The content of this file (fsync / fdatasync).
    File(&'a Path),
    /// The names in this folder (fsync of the folder).
    Dir(&'a Path),
    /// Everything under this folder (syncfs).
    Everything(&'a Path),
}

#[cfg(feature = "power-cut-sim")]
type Observer = Box<dyn Fn(Barrier<'_>) + Send + Sync>;

#[cfg(feature = "power-cut-sim")]
static OBSERVER: std::sync::OnceLock<Observer> = std::sync::OnceLock::new();

/// Installs the process's barrier observer (once; later calls are ignored).
/// Test builds only: production code never pays for the hook.
#[cfg(feature = "power-cut-sim")]
pub fn observe(f: impl Fn(Barrier<'_>) + Send + Sync + 'static) {
    let _ = OBSERVER.set(Box::new(f));
}

fn passed(_b: Barrier<'_>) {
    #[cfg(feature = "power-cut-sim")]
    if let Some(f) = OBSERVER.get() {
        f(_b);
    }
}

/// Makes the content of the open file `f` (found at `path`) durable.
pub fn file_data(f: &File, path: &Path) -> io::Result<()> {
    f.sync_data()?;
    passed(Barrier::File(path));
    Ok(())
}

/// Makes the file at `path`, content and attributes, durable.
pub fn file_at(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()?;
    passed(Barrier::File(path));
    Ok(())
}

/// Makes the names in folder `dir` durable (a create, rename or unlink in
/// it survives a power cut only after this).
pub fn dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()?;
    passed(Barrier::Dir(dir));
    Ok(())
}

/// Makes everything written under `root`'s filesystem durable.
pub fn everything(root: &Path) -> io::Result<()> {
    let f = File::open(root)?;
    nix::unistd::syncfs(&f).map_err(io::Error::from)?;
    passed(Barrier::Everything(root));
    Ok(())
}

/// Creates folder `dir` and any missing parents, each one's name made
/// durable in its parent: a blob fsync'd into a folder whose own name a
/// power cut drops is as lost as one never written.
pub fn create_dirs(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(p) = at {
        if p.is_dir() {
            break;
        }
        missing.push(p);
        at = p.parent();
    }
    std::fs::create_dir_all(dir)?;
    for p in missing.iter().rev() {
        if let Some(parent) = p.parent() {
            self::dir(parent)?;
        }
    }
    Ok(())
}
