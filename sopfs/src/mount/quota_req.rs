//! The `/.sopfs/quota` request file: `sopfs quota` writes one JSON request
//! (`{"op": "set" | "get" | "list" | "check" | "remove", "path": "/dir",
//! "bytes": N, "inodes": N, "repair": bool}`, paths from the volume's root)
//! and reads back one JSON line.

use crate::error::FsError;
use crate::fs::{Caller, Fs};
use crate::ns::quota::Quota;

fn quota_json(path: &str, q: &Quota) -> serde_json::Value {
    serde_json::json!({
        "path": path,
        "max_bytes": q.max_bytes,
        "max_inodes": q.max_inodes,
        "bytes": q.bytes,
        "inodes": q.inodes,
    })
}

/// Answers one request of `caller`.
pub fn serve(fs: &Fs, caller: Caller, request: &[u8]) -> Vec<u8> {
    #[derive(serde::Deserialize)]
    struct Req {
        op: String,
        #[serde(default)]
        path: String,
        #[serde(default)]
        bytes: u64,
        #[serde(default)]
        inodes: u64,
        #[serde(default)]
        repair: bool,
    }
    let fail =
        |e: FsError| serde_json::json!({"ok": false, "errno": e.errno(), "error": e.to_string()});
    let answer = match serde_json::from_slice::<Req>(request) {
        Err(e) => {
            serde_json::json!({"ok": false, "errno": libc::EINVAL, "error": format!("bad request: {e}")})
        }
        Ok(r) => match r.op.as_str() {
            "set" => match fs.quota_set(caller, &r.path, r.bytes, r.inodes) {
                Ok(q) => serde_json::json!({"ok": true, "quota": quota_json(&r.path, &q)}),
                Err(e) => fail(e),
            },
            "get" => match fs.quota_get(&r.path) {
                Ok(q) => serde_json::json!({"ok": true, "quota": quota_json(&r.path, &q)}),
                Err(e) => fail(e),
            },
            "remove" => match fs.quota_remove(caller, &r.path) {
                Ok(()) => serde_json::json!({"ok": true}),
                Err(e) => fail(e),
            },
            "list" => match fs.quota_list() {
                Ok(l) => serde_json::json!({
                    "ok": true,
                    "quotas": l.iter().map(|i| quota_json(&i.path, &i.quota)).collect::<Vec<_>>(),
                }),
                Err(e) => fail(e),
            },
            "check" => match fs.quota_check(caller, &r.path, r.repair) {
                Ok(c) => serde_json::json!({
                    "ok": true,
                    "quota": quota_json(&r.path, &c.recorded),
                    "walked_bytes": c.bytes,
                    "walked_inodes": c.inodes,
                }),
                Err(e) => fail(e),
            },
            _ => fail(FsError::Invalid(
                "op must be set, get, list, check or remove",
            )),
        },
    };
    let mut out = answer.to_string().into_bytes();
    out.push(b'\n');
    out
}
