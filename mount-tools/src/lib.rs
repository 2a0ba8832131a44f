//! Tools around a sopfs mount: the macro runner `sopfs-macro` (the
//! interpreter named in the shebang line of every `/.macros/NAME` file) and
//! the mount helper `mount.sopfs` (for `mount -t sopfs` and /etc/fstab).

pub mod fstab;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// What a macro run answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Output lines.
    Ok(Vec<String>),
    /// The failing step and why.
    Failed {
        /// Where it failed.
        step: String,
        /// Why.
        error: String,
    },
}

/// Asks the daemon serving `macros_dir` (a mount's `/.macros`) to run `name`
/// with `args`, through its `.run` request file; returns the raw JSON answer.
pub fn request(macros_dir: &Path, name: &str, args: &[String]) -> std::io::Result<String> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(macros_dir.join(".run"))?;
    let req = serde_json::json!({"name": name, "args": args}).to_string();
    f.write_all(req.as_bytes())?;
    // The answer is read from its start, not where the request ended.
    f.seek(SeekFrom::Start(0))?;
    let mut out = String::new();
    f.read_to_string(&mut out)?;
    Ok(out)
}

/// Decodes an answer of [`request`].
pub fn decode(answer: &str) -> Result<Answer, String> {
    let v: serde_json::Value =
        serde_json::from_str(answer).map_err(|e| format!("daemon answered no JSON: {e}"))?;
    if v["ok"].as_bool() == Some(true) {
        let lines = v["lines"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|l| l.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        return Ok(Answer::Ok(lines));
    }
    Ok(Answer::Failed {
        step: v["step"].as_str().unwrap_or("?").to_string(),
        error: v["error"].as_str().unwrap_or("?").to_string(),
    })
}
