//! `sopfs quota set|get|list|check|remove`: directory quotas (bytes and
//! inodes), kept by the mount's daemon and asked for through its
//! `/.sopfs/quota` request file.

use crate::clone_cli::{ask, mount_root, refusal};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// `sopfs quota` subcommands.
#[derive(clap::Subcommand)]
pub enum QuotaCmd {
    /// Limit what may be stored below a directory (on every host).
    Set {
        /// A directory in a sopfs mount.
        path: PathBuf,
        /// Most bytes of files below it: a number with an optional K, M,
        /// G or T (powers of 1024); 0 for no limit.
        #[arg(long, default_value = "0")]
        bytes: String,
        /// Most files and directories below it; 0 for no limit.
        #[arg(long, default_value_t = 0)]
        inodes: u64,
    },
    /// Show a directory's quota and what is used.
    Get {
        /// A directory in a sopfs mount.
        path: PathBuf,
    },
    /// List the quotas of a mount's volume.
    List {
        /// The mount (or any directory in it).
        mountpoint: PathBuf,
    },
    /// Count what is used below a directory by a walk and compare it with
    /// the quota's record.
    Check {
        /// A directory in a sopfs mount.
        path: PathBuf,
        /// Write what the walk counted (root only).
        #[arg(long)]
        repair: bool,
    },
    /// Remove a directory's quota.
    Remove {
        /// A directory in a sopfs mount.
        path: PathBuf,
    },
}

/// Bytes from `10G`, `512M`, `4096`.
fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let (num, shift) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        Some('T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .with_context(|| format!("--bytes {s}: expected a size like 4096, 512M or 10G"))
}

/// The mount root holding directory `path` and `path` from the volume's root.
fn locate(path: &Path) -> anyhow::Result<(PathBuf, String)> {
    let abs = path
        .canonicalize()
        .with_context(|| format!("{}", path.display()))?;
    let root = mount_root(&abs)?;
    let rel = abs
        .strip_prefix(&root)
        .with_context(|| format!("{} under {}", abs.display(), root.display()))?
        .to_str()
        .with_context(|| format!("{}: not UTF-8", path.display()))?;
    Ok((root, format!("/{rel}")))
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn line(q: &serde_json::Value) -> String {
    let n = |k: &str| q[k].as_u64().unwrap_or(0);
    let limit = |v: u64, f: &dyn Fn(u64) -> String| {
        if v == 0 {
            "unlimited".to_string()
        } else {
            f(v)
        }
    };
    format!(
        "{:<32} bytes {} of {}, inodes {} of {}",
        q["path"].as_str().unwrap_or("?"),
        human(n("bytes")),
        limit(n("max_bytes"), &human),
        n("inodes"),
        limit(n("max_inodes"), &|v| v.to_string()),
    )
}

/// Sends `request` to the quota request file of the mount at `root`.
fn request(
    root: &Path,
    request: serde_json::Value,
    failed: &str,
) -> anyhow::Result<serde_json::Value> {
    let a = ask(root, "quota", &request)?;
    if a["ok"].as_bool() != Some(true) {
        bail!("{failed}: {}", refusal(&a));
    }
    Ok(a)
}

/// Runs a `sopfs quota` subcommand.
pub fn quota(cmd: QuotaCmd) -> anyhow::Result<()> {
    match cmd {
        QuotaCmd::Set {
            path,
            bytes,
            inodes,
        } => {
            let bytes = parse_size(&bytes)?;
            let (root, rel) = locate(&path)?;
            let what = format!("cannot set the quota of {}", path.display());
            let req =
                serde_json::json!({"op": "set", "path": rel, "bytes": bytes, "inodes": inodes});
            println!("{}", line(&request(&root, req, &what)?["quota"]));
        }
        QuotaCmd::Get { path } => {
            let (root, rel) = locate(&path)?;
            let what = format!("no quota of {}", path.display());
            let a = request(&root, serde_json::json!({"op": "get", "path": rel}), &what)?;
            println!("{}", line(&a["quota"]));
        }
        QuotaCmd::List { mountpoint } => {
            let root = mount_root(&mountpoint)?;
            let a = request(
                &root,
                serde_json::json!({"op": "list"}),
                "cannot list quotas",
            )?;
            for q in a["quotas"].as_array().cloned().unwrap_or_default() {
                println!("{}", line(&q));
            }
        }
        QuotaCmd::Check { path, repair } => {
            let (root, rel) = locate(&path)?;
            let what = format!("cannot check the quota of {}", path.display());
            let req = serde_json::json!({"op": "check", "path": rel, "repair": repair});
            let a = request(&root, req, &what)?;
            let q = &a["quota"];
            let (wb, wi) = (
                a["walked_bytes"].as_u64().unwrap_or(0),
                a["walked_inodes"].as_u64().unwrap_or(0),
            );
            let (rb, ri) = (
                q["bytes"].as_u64().unwrap_or(0),
                q["inodes"].as_u64().unwrap_or(0),
            );
            println!("recorded: {}", line(q));
            println!("walked:   {} bytes, {} inodes", wb, wi);
            if (wb, wi) != (rb, ri) {
                if repair {
                    println!("repaired: the record now holds what the walk counted");
                } else {
                    bail!(
                        "the quota of {} records {rb} bytes and {ri} inodes, a walk counts {wb} and {wi} (--repair writes the walk's)",
                        path.display()
                    );
                }
            } else {
                println!("ok");
            }
        }
        QuotaCmd::Remove { path } => {
            let (root, rel) = locate(&path)?;
            let what = format!("cannot remove the quota of {}", path.display());
            request(
                &root,
                serde_json::json!({"op": "remove", "path": rel}),
                &what,
            )?;
            println!("quota of {} removed", path.display());
        }
    }
    Ok(())
}
