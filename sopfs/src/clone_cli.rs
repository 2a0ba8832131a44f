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
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(root.join(".sopfs/clone"))
        .with_context(|| format!("{}/.sopfs/clone", root.display()))?;
    let request = serde_json::json!({"src": src_rel, "dst": dst_rel}).to_string();
    file.write_all(request.as_bytes())
        .context("sending the clone request")?;
    // The answer is read from the start of the file (the write moved the
    // offset past the request).
    file.seek(SeekFrom::Start(0))
        .context("reading the clone answer")?;
    let mut answer = String::new();
    file.read_to_string(&mut answer)
        .context("reading the clone answer")?;
    let a: serde_json::Value = serde_json::from_str(answer.trim())
        .with_context(|| format!("the mount answered {answer:?}"))?;
    if a["ok"].as_bool() != Some(true) {
        let errno = a["errno"].as_i64().unwrap_or(0) as i32;
        let why = match (errno, a["error"].as_str()) {
            (libc::EINVAL, Some(e)) => e.to_string(),
            (0, e) => e.unwrap_or("failed").to_string(),
            (n, _) => nix::errno::Errno::from_raw(n).desc().to_string(),
        };
        bail!(
            "cannot clone {} to {}: {why}",
            args.src.display(),
            args.dst.display()
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
