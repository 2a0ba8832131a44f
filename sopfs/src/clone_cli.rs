//! `sopfs clone SRC DST`: a writable copy of a tree inside one mount, made
//! by the mount's daemon in one transaction (content shared, not copied),
//! asked for through the mount's `/.sopfs/clone` request file.

use anyhow::{bail, Context};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

/// Arguments of `sopfs clone`.
#[derive(clap::Args)]
pub struct CloneArgs {
    /// What to copy: a directory (with everything below it) or a file, in a sopfs mount.
    pub src: PathBuf,
    /// The new path, in the same mount; must not exist.
    pub dst: PathBuf,
}

/// `path` made absolute without following its last component (a symlink
/// is cloned as a link) and without requiring it to exist.
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    let name = match path.components().next_back() {
        Some(Component::Normal(n)) => n.to_owned(),
        _ => bail!("{}: names no entry to clone", path.display()),
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let parent = parent
        .canonicalize()
        .with_context(|| format!("{}", parent.display()))?;
    Ok(parent.join(name))
}

/// The root of the sopfs mount holding `path` (its parent, walked up to
/// the folder with a `.sopfs/clone` file) and `path` relative to it.
fn in_mount(path: &Path) -> anyhow::Result<(PathBuf, String)> {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d.join(".sopfs/clone").exists() {
            let rel = path
                .strip_prefix(d)
                .with_context(|| format!("{} under {}", path.display(), d.display()))?;
            let rel = rel
                .to_str()
                .with_context(|| format!("{}: not UTF-8", path.display()))?;
            return Ok((d.to_path_buf(), format!("/{rel}")));
        }
        dir = d.parent();
    }
    bail!("{} is not in a sopfs mount", path.display())
}

/// Sends `request` to the mount's `/.sopfs/<file>` request file and
/// returns its JSON answer.
pub(crate) fn ask(
    root: &Path,
    file: &str,
    request: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let path = root.join(".sopfs").join(file);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("{}", path.display()))?;
    f.write_all(request.to_string().as_bytes())
        .with_context(|| format!("sending the request to {}", path.display()))?;
    // The answer is read from the start of the file (the write moved the
    // offset past the request).
    let mut answer = String::new();
    f.seek(SeekFrom::Start(0))
        .and_then(|_| f.read_to_string(&mut answer))
        .with_context(|| format!("reading the answer of {}", path.display()))?;
    serde_json::from_str(answer.trim()).with_context(|| format!("the mount answered {answer:?}"))
}

/// Why an answer with `"ok": false` refused: the mount's message where it
/// says more than the errno (bad input), else the errno's description.
pub(crate) fn refusal(a: &serde_json::Value) -> String {
    let errno = a["errno"].as_i64().unwrap_or(0) as i32;
    match (errno, a["error"].as_str()) {
        (libc::EINVAL, Some(e)) => e.to_string(),
        (0, e) => e.unwrap_or("failed").to_string(),
        (n, _) => nix::errno::Errno::from_raw(n).desc().to_string(),
    }
}

/// The root of the sopfs mount at or above `dir`.
pub(crate) fn mount_root(dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("{}", dir.display()))?;
    let mut at = Some(dir.as_path());
    while let Some(d) = at {
        if d.join(".sopfs/clone").exists() {
            return Ok(d.to_path_buf());
        }
        at = d.parent();
    }
    bail!("{} is not in a sopfs mount", dir.display())
}

/// Runs `sopfs clone`.
pub fn clone(args: CloneArgs) -> anyhow::Result<()> {
    let (src, dst) = (absolute(&args.src)?, absolute(&args.dst)?);
    if src.join(".sopfs/clone").exists() {
        bail!(
            "cannot clone {}: it is the root of a mount (clone a directory inside it)",
            args.src.display()
        );
    }
    let (root, src_rel) = in_mount(&src)?;
    let (dst_root, dst_rel) = in_mount(&dst)?;
    if root != dst_root {
        bail!(
            "{} and {} are in different mounts ({} and {})",
            args.src.display(),
            args.dst.display(),
            root.display(),
            dst_root.display()
        );
    }
    let t = Instant::now();
    let request = serde_json::json!({"src": src_rel, "dst": dst_rel});
    let a = ask(&root, "clone", &request)?;
    if a["ok"].as_bool() != Some(true) {
        bail!(
            "cannot clone {} to {}: {}",
            args.src.display(),
            args.dst.display(),
            refusal(&a)
        );
    }
    println!(
        "cloned {} to {}: {} entries, {} inodes, {} MiB of content shared ({} chunks), {:.0} ms",
        args.src.display(),
        args.dst.display(),
        a["entries"],
        a["inodes"],
        a["bytes"].as_u64().unwrap_or(0) >> 20,
        a["chunks"],
        t.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}
