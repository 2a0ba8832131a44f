//! `sopfs snapshot create|list|delete`: read-only snapshots of a whole
//! volume, taken and deleted by the mount's daemon through its
//! `/.sopfs/snapshot` request file and read under `/.snapshots/NAME`.

use crate::clone_cli::{ask, mount_root, refusal};
use anyhow::bail;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

/// `sopfs snapshot` subcommands.
#[derive(clap::Subcommand)]
pub enum SnapshotCmd {
    /// Take a snapshot of the whole volume, visible on every host as
    /// MOUNTPOINT/.snapshots/NAME.
    Create {
        /// The mount (or any directory in it).
        mountpoint: PathBuf,
        /// The snapshot's name (up to 120 bytes, no '/').
        name: String,
    },
    /// List the volume's snapshots.
    List {
        /// The mount (or any directory in it).
        mountpoint: PathBuf,
    },
    /// Delete a snapshot; `sopfs gc` frees what only it kept.
    Delete {
        /// The mount (or any directory in it).
        mountpoint: PathBuf,
        /// The snapshot's name.
        name: String,
    },
}

fn when(time_ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(time_ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Sends `request` to the snapshot request file of the mount holding
/// `mountpoint`; the mount's root and its answer, or one line saying why
/// it `failed` ("cannot take snapshot ...").
fn request(
    mountpoint: &std::path::Path,
    request: serde_json::Value,
    failed: &str,
) -> anyhow::Result<(PathBuf, serde_json::Value)> {
    let root = mount_root(mountpoint)?;
    let a = ask(&root, "snapshot", &request)?;
    if a["ok"].as_bool() != Some(true) {
        bail!("{failed}: {}", refusal(&a));
    }
    Ok((root, a))
}

/// Runs a `sopfs snapshot` subcommand.
pub fn snapshot(cmd: SnapshotCmd) -> anyhow::Result<()> {
    match cmd {
        SnapshotCmd::Create { mountpoint, name } => {
            let (root, a) = request(
                &mountpoint,
                serde_json::json!({"op": "create", "name": name}),
                &format!("cannot take snapshot {name:?}"),
            )?;
            println!(
                "snapshot {name:?} taken at commit {}: {}",
                a["snapshot"]["seq"],
                root.join(".snapshots").join(&name).display()
            );
        }
        SnapshotCmd::List { mountpoint } => {
            let (_, a) = request(
                &mountpoint,
                serde_json::json!({"op": "list"}),
                "cannot list snapshots",
            )?;
            let list = a["snapshots"].as_array().cloned().unwrap_or_default();
            println!("{:<32} {:>12}  TAKEN", "NAME", "COMMIT");
            for s in list {
                println!(
                    "{:<32} {:>12}  {}",
                    s["name"].as_str().unwrap_or("?"),
                    s["seq"],
                    when(s["time_ms"].as_u64().unwrap_or(0))
                );
            }
        }
        SnapshotCmd::Delete { mountpoint, name } => {
            request(
                &mountpoint,
                serde_json::json!({"op": "delete", "name": name}),
                &format!("cannot delete snapshot {name:?}"),
            )?;
            println!("snapshot {name:?} deleted; `sopfs gc` frees what only it kept");
        }
    }
    Ok(())
}
