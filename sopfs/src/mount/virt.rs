//! The volume's virtual files: `/.macros` (installed macros as executable
//! files; writing one installs it; `.run` is the runner's request file) and
//! `/.jobs` (one directory per job with `status` and `result`; writing a file
//! submits a job). They live in the macro and job trees, not in directories.

use crate::error::{FsError, FsResult};
use crate::fs::{Attr, Caller, DirEntry, Fs};
use crate::macros::jobs::{self, Status};
use crate::macros::run::{run, RunConfig};
use crate::macros::{format, store};
use crate::mount::metrics::Metrics;
use crate::ns::schema::{Inode, Kind, Time, ROOT_INO};
use engine::TxMode;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// `/.macros`.
pub const MACROS_INO: u64 = 2;
/// `/.jobs`.
pub const JOBS_INO: u64 = 3;
/// `/.macros/.run`: write a request, read the answer.
pub const RUN_INO: u64 = 4;
/// `/.sopfs`: the mount's read-only control files.
pub const CONTROL_INO: u64 = 5;
/// `/.sopfs/stats`: counters in the Prometheus text format.
pub const STATS_INO: u64 = 6;
/// `/.sopfs/config`: what this mount was started with (no credentials).
pub const CONFIG_INO: u64 = 7;
/// `/.sopfs/clone`: write a clone request, read the answer.
pub const CLONE_INO: u64 = 8;
/// `/.sopfs/snapshot`: write a snapshot request, read the answer.
pub const SNAPSHOT_INO: u64 = 10;
/// `/.sopfs/quota`: write a quota request, read the answer.
pub const QUOTA_INO: u64 = 11;
/// First line of every macro file: runs it through the runner.
pub const SHEBANG: &str = "#!/usr/bin/env sopfs-macro\n";

const MACRO: u64 = 0x8;
const JOB_DIR: u64 = 0x9;
const STATUS: u64 = 0xA;
const RESULT: u64 = 0xB;
const NEW: u64 = 0xC;
const FH_BIT: u64 = 1 << 63;

/// What a request file serves.
#[derive(Clone, Copy)]
enum Request {
    /// `/.macros/.run`: a macro run.
    Run,
    /// `/.sopfs/clone`: a clone.
    Clone,
    /// `/.sopfs/snapshot`: a snapshot taken, deleted or listed.
    Snapshot,
    /// `/.sopfs/quota`: a directory quota set, read or checked.
    Quota,
}

enum Handle {
    Read(Vec<u8>),
    Dir(Vec<DirEntry>),
    /// A request file: what was written is served at the first read, and
    /// the answer is what reads return.
    Request {
        what: Request,
        caller: Caller,
        req: Vec<u8>,
        resp: Option<Vec<u8>>,
    },
    NewMacro {
        buf: Vec<u8>,
        done: bool,
    },
    NewJob {
        buf: Vec<u8>,
        done: bool,
    },
}

/// What `/.sopfs` shows.
pub struct Control {
    /// The mount's counters.
    pub metrics: Arc<Metrics>,
    /// The text of `/.sopfs/config`, credentials already removed.
    pub config: String,
}

impl Control {
    /// `/.sopfs/stats` now.
    pub fn stats(&self, fs: &Fs) -> String {
        self.metrics.render(&fs.db().stats(), fs.db().seq())
    }
}

/// The virtual part of a mount.
pub struct Virtual {
    fs: Arc<Fs>,
    cfg: RunConfig,
    control: Control,
    names: Mutex<HashMap<u64, String>>,
    handles: Mutex<HashMap<u64, Handle>>,
    next: AtomicU64,
    started: Time,
}

fn class(ino: u64) -> u64 {
    ino >> 60
}

fn tag(class: u64, name: &str) -> u64 {
    // FNV-1a, folded to 60 bits: stable across mounts and hosts.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    (class << 60) | (h & ((1 << 60) - 1))
}

fn parse_job(buf: &[u8]) -> Result<(String, Vec<String>), String> {
    let text = String::from_utf8_lossy(buf);
    let text = text.trim();
    if text.starts_with('{') {
        #[derive(serde::Deserialize)]
        struct J {
            r#macro: String,
            #[serde(default)]
            args: Vec<String>,
        }
        let j: J = serde_json::from_str(text).map_err(|e| format!("job file: {e}"))?;
        return Ok((j.r#macro, j.args));
    }
    let mut words = text.split_whitespace().map(str::to_string);
    let name = words
        .next()
        .ok_or("job file is empty: write `MACRO arg...` or {\"macro\": ..., \"args\": [...]}")?;
    Ok((name, words.collect()))
}

impl Virtual {
    /// The virtual files of `fs`; macros run with `cfg`.
    pub fn new(fs: Arc<Fs>, cfg: RunConfig, control: Control) -> Virtual {
        Virtual {
            fs,
            cfg,
            control,
            names: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            started: Time::now(),
        }
    }

    /// True for an inode this module serves.
    pub fn owns(ino: u64) -> bool {
        (MACROS_INO..=CLONE_INO).contains(&ino)
            || ino == SNAPSHOT_INO
            || ino == QUOTA_INO
            || (MACRO..=NEW).contains(&class(ino))
    }

    /// True for a handle this module gave out.
    pub fn owns_fh(fh: u64) -> bool {
        fh & FH_BIT != 0 && !crate::mount::snapshots::Snapshots::owns_fh(fh)
    }

    fn attr(&self, ino: u64, kind: Kind, perm: u32, size: u64) -> Attr {
        let mut inode = Inode::new(kind, perm, 0, 0);
        let root = self.fs.getattr(ROOT_INO).ok();
        if let Some(r) = root {
            inode.uid = r.inode.uid;
            inode.gid = r.inode.gid;
        }
        inode.size = size;
        inode.atime = self.started;
        inode.mtime = self.started;
        inode.ctime = self.started;
        Attr { ino, inode }
    }

    fn name_of(&self, ino: u64) -> FsResult<String> {
        self.names
            .lock()
            .get(&ino)
            .cloned()
            .ok_or(FsError::NotFound)
    }

    fn macro_text(&self, name: &str) -> FsResult<Option<Vec<u8>>> {
        let mut tx = self.fs.db().begin(TxMode::ReadOnly)?;
        Ok(store::macro_text_in(&mut tx, name)?.map(|t| {
            let mut out = SHEBANG.as_bytes().to_vec();
            out.extend_from_slice(&t);
            out.push(b'\n');
            out
        }))
    }

    fn job_file(&self, ino: u64) -> FsResult<Vec<u8>> {
        let id = self.name_of(ino)?;
        let j = jobs::get(&self.fs, &id)?.ok_or(FsError::NotFound)?;
        Ok(match class(ino) {
            STATUS => {
                let s = match j.status {
                    Status::Pending => "pending",
                    Status::Running => "running",
                    Status::Done => "done",
                    Status::Failed => "failed",
                };
                format!("{s}\n").into_bytes()
            }
            _ => j.result.map(|r| r + "\n").unwrap_or_default().into_bytes(),
        })
    }

    /// A name in the root or in a virtual directory; None when the real
    /// filesystem should answer.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Option<FsResult<Attr>> {
        let name = String::from_utf8_lossy(name).into_owned();
        match parent {
            ROOT_INO => match name.as_str() {
                ".macros" => Some(Ok(self.attr(MACROS_INO, Kind::Dir, 0o755, 0))),
                ".jobs" => Some(Ok(self.attr(JOBS_INO, Kind::Dir, 0o755, 0))),
                ".sopfs" => Some(Ok(self.attr(CONTROL_INO, Kind::Dir, 0o555, 0))),
                _ => None,
            },
            CONTROL_INO => Some(match name.as_str() {
                "stats" => self.getattr(STATS_INO),
                "config" => self.getattr(CONFIG_INO),
                "clone" => self.getattr(CLONE_INO),
                "snapshot" => self.getattr(SNAPSHOT_INO),
                "quota" => self.getattr(QUOTA_INO),
                _ => Err(FsError::NotFound),
            }),
            MACROS_INO if name == ".run" => Some(Ok(self.attr(RUN_INO, Kind::File, 0o666, 0))),
            MACROS_INO => {
                let ino = tag(MACRO, &name);
                self.names.lock().insert(ino, name);
                Some(self.getattr(ino))
            }
            JOBS_INO => {
                let ino = tag(JOB_DIR, &name);
                self.names.lock().insert(ino, name);
                Some(self.getattr(ino))
            }
            p if class(p) == JOB_DIR => Some(self.name_of(p).and_then(|id| {
                let c = match name.as_str() {
                    "status" => STATUS,
                    "result" => RESULT,
                    _ => return Err(FsError::NotFound),
                };
                let ino = tag(c, &id);
                self.names.lock().insert(ino, id);
                self.getattr(ino)
            })),
            p if Self::owns(p) => Some(Err(FsError::NotDir)),
            _ => None,
        }
    }

    /// Attributes of a virtual inode.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        match ino {
            MACROS_INO | JOBS_INO => Ok(self.attr(ino, Kind::Dir, 0o755, 0)),
            CONTROL_INO => Ok(self.attr(ino, Kind::Dir, 0o555, 0)),
            // Reads are direct I/O, so a reader gets it all even when the
            // counters grew between this size and its read.
            STATS_INO => {
                let len = self.control.stats(&self.fs).len() as u64;
                Ok(self.attr(ino, Kind::File, 0o444, len))
            }
            CONFIG_INO => Ok(self.attr(ino, Kind::File, 0o444, self.control.config.len() as u64)),
            RUN_INO | CLONE_INO | SNAPSHOT_INO | QUOTA_INO => {
                Ok(self.attr(ino, Kind::File, 0o666, 0))
            }
            i if class(i) == MACRO => {
                let text = self
                    .macro_text(&self.name_of(i)?)?
                    .ok_or(FsError::NotFound)?;
                Ok(self.attr(i, Kind::File, 0o755, text.len() as u64))
            }
            i if class(i) == JOB_DIR => {
                jobs::get(&self.fs, &self.name_of(i)?)?.ok_or(FsError::NotFound)?;
                Ok(self.attr(i, Kind::Dir, 0o555, 0))
            }
            i if class(i) == STATUS || class(i) == RESULT => {
                let len = self.job_file(i)?.len() as u64;
                Ok(self.attr(i, Kind::File, 0o444, len))
            }
            i if class(i) == NEW => Ok(self.attr(i, Kind::File, 0o644, 0)),
            _ => Err(FsError::NotFound),
        }
    }

    fn handle(&self, h: Handle) -> u64 {
        let fh = FH_BIT | self.next.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, h);
        fh
    }

    /// Opens a virtual directory.
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let dot = |name: &str, ino: u64| DirEntry {
            name: name.as_bytes().to_vec(),
            ino,
            kind: Kind::Dir,
        };
        let mut list = vec![dot(".", ino), dot("..", ROOT_INO)];
        match ino {
            MACROS_INO => {
                let mut tx = self.fs.db().begin(TxMode::ReadOnly)?;
                for name in store::list_in(&mut tx)? {
                    let i = tag(MACRO, &name);
                    self.names.lock().insert(i, name.clone());
                    list.push(DirEntry {
                        name: name.into_bytes(),
                        ino: i,
                        kind: Kind::File,
                    });
                }
            }
            JOBS_INO => {
                for j in jobs::list(&self.fs)? {
                    let i = tag(JOB_DIR, &j.id);
                    self.names.lock().insert(i, j.id.clone());
                    list.push(DirEntry {
                        name: j.id.into_bytes(),
                        ino: i,
                        kind: Kind::Dir,
                    });
                }
            }
            CONTROL_INO => {
                for (n, fi) in [
                    ("stats", STATS_INO),
                    ("config", CONFIG_INO),
                    ("clone", CLONE_INO),
                    ("snapshot", SNAPSHOT_INO),
                    ("quota", QUOTA_INO),
                ] {
                    list.push(DirEntry {
                        name: n.as_bytes().to_vec(),
                        ino: fi,
                        kind: Kind::File,
                    });
                }
            }
            i if class(i) == JOB_DIR => {
                let id = self.name_of(i)?;
                list[1].ino = JOBS_INO;
                for (n, c) in [("status", STATUS), ("result", RESULT)] {
                    let fi = tag(c, &id);
                    self.names.lock().insert(fi, id.clone());
                    list.push(DirEntry {
                        name: n.as_bytes().to_vec(),
                        ino: fi,
                        kind: Kind::File,
                    });
                }
            }
            _ => return Err(FsError::NotDir),
        }
        Ok(self.handle(Handle::Dir(list)))
    }

    /// Entries of an open virtual directory from `offset` on.
    pub fn readdir(&self, fh: u64, offset: u64) -> FsResult<Vec<(DirEntry, u64)>> {
        let h = self.handles.lock();
        match h.get(&fh) {
            Some(Handle::Dir(list)) => Ok(list
                .iter()
                .enumerate()
                .skip(offset as usize)
                .map(|(i, e)| (e.clone(), i as u64 + 1))
                .collect()),
            _ => Err(FsError::BadHandle),
        }
    }

    /// Opens a virtual file.
    pub fn open(&self, ino: u64, caller: Caller) -> FsResult<u64> {
        let h = match ino {
            RUN_INO | CLONE_INO | SNAPSHOT_INO | QUOTA_INO => Handle::Request {
                what: match ino {
                    RUN_INO => Request::Run,
                    CLONE_INO => Request::Clone,
                    SNAPSHOT_INO => Request::Snapshot,
                    _ => Request::Quota,
                },
                caller,
                req: Vec::new(),
                resp: None,
            },
            i if class(i) == MACRO => Handle::Read(
                self.macro_text(&self.name_of(i)?)?
                    .ok_or(FsError::NotFound)?,
            ),
            i if class(i) == STATUS || class(i) == RESULT => Handle::Read(self.job_file(i)?),
            STATS_INO => Handle::Read(self.control.stats(&self.fs).into_bytes()),
            CONFIG_INO => Handle::Read(self.control.config.clone().into_bytes()),
            MACROS_INO | JOBS_INO | CONTROL_INO => return Err(FsError::IsDir),
            _ => return Err(FsError::NotFound),
        };
        Ok(self.handle(h))
    }

    /// Creates a file in `/.macros` (a macro to install) or `/.jobs` (a job to submit).
    pub fn create(&self, parent: u64, name: &[u8]) -> Option<FsResult<(Attr, u64)>> {
        let h = match parent {
            MACROS_INO => Handle::NewMacro {
                buf: Vec::new(),
                done: false,
            },
            JOBS_INO => Handle::NewJob {
                buf: Vec::new(),
                done: false,
            },
            p if Self::owns(p) => return Some(Err(FsError::NotPermitted)),
            _ => return None,
        };
        let ino = tag(NEW, &String::from_utf8_lossy(name));
        let fh = self.handle(h);
        Some(Ok((self.attr(ino, Kind::File, 0o644, 0), fh)))
    }

    /// Reads from a virtual handle; the runner's request runs at its first read.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let mut hs = self.handles.lock();
        let h = hs.get_mut(&fh).ok_or(FsError::BadHandle)?;
        let data: &[u8] = match h {
            Handle::Read(d) => d,
            Handle::Request {
                what,
                caller,
                req,
                resp,
            } => {
                if resp.is_none() {
                    let (what, caller, request) = (*what, *caller, std::mem::take(req));
                    // Served unlocked: a macro or a clone may take long.
                    drop(hs);
                    let answer = match what {
                        Request::Run => self.serve_run(&request),
                        Request::Clone => self.serve_clone(caller, &request),
                        Request::Snapshot => {
                            crate::mount::snapshots::serve_request(&self.fs, caller, &request)
                        }
                        Request::Quota => {
                            crate::mount::quota_req::serve(&self.fs, caller, &request)
                        }
                    };
                    hs = self.handles.lock();
                    match hs.get_mut(&fh) {
                        Some(Handle::Request { resp, .. }) => *resp = Some(answer),
                        _ => return Err(FsError::BadHandle),
                    }
                }
                match hs.get(&fh) {
                    Some(Handle::Request { resp: Some(r), .. }) => r,
                    _ => return Err(FsError::BadHandle),
                }
            }
            _ => return Err(FsError::BadHandle),
        };
        let start = (offset as usize).min(data.len());
        let end = (start + size as usize).min(data.len());
        Ok(data[start..end].to_vec())
    }

    fn serve_run(&self, request: &[u8]) -> Vec<u8> {
        #[derive(serde::Deserialize)]
        struct Req {
            name: String,
            #[serde(default)]
            args: Vec<String>,
        }
        let answer = match serde_json::from_slice::<Req>(request) {
            Err(e) => serde_json::json!({"ok": false, "step": "request", "error": e.to_string()}),
            Ok(r) => {
                let m = self
                    .fs
                    .db()
                    .begin(TxMode::ReadOnly)
                    .map_err(FsError::from)
                    .and_then(|mut tx| store::load_macro_in(&mut tx, &r.name));
                match m {
                    Ok(Some(m)) => match run(&self.fs, &m, &r.args, &self.cfg) {
                        Ok(o) => serde_json::json!({"ok": true, "lines": o.lines}),
                        Err(e) => {
                            serde_json::json!({"ok": false, "step": e.step, "error": e.message})
                        }
                    },
                    Ok(None) => {
                        serde_json::json!({"ok": false, "step": "lookup", "error": format!("no macro {:?}", r.name)})
                    }
                    Err(e) => {
                        serde_json::json!({"ok": false, "step": "lookup", "error": e.to_string()})
                    }
                }
            }
        };
        let mut out = answer.to_string().into_bytes();
        out.push(b'\n');
        out
    }

    /// Answers a clone request (`{"src": PATH, "dst": PATH}`, paths from
    /// the volume's root) as one JSON line: what was made, or the error
    /// and its errno (nothing made).
    fn serve_clone(&self, caller: Caller, request: &[u8]) -> Vec<u8> {
        #[derive(serde::Deserialize)]
        struct Req {
            src: String,
            dst: String,
        }
        let answer = match serde_json::from_slice::<Req>(request) {
            Err(e) => {
                serde_json::json!({"ok": false, "errno": libc::EINVAL, "error": format!("bad request: {e}")})
            }
            Ok(r) => match self.fs.clone_path(caller, &r.src, &r.dst) {
                Ok(rep) => serde_json::json!({
                    "ok": true,
                    "ino": rep.ino,
                    "inodes": rep.inodes,
                    "entries": rep.entries,
                    "chunks": rep.chunks,
                    "bytes": rep.bytes,
                }),
                Err(e) => {
                    serde_json::json!({"ok": false, "errno": e.errno(), "error": e.to_string()})
                }
            },
        };
        let mut out = answer.to_string().into_bytes();
        out.push(b'\n');
        out
    }

    /// Writes to a virtual handle (a request, a macro, a job).
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let mut hs = self.handles.lock();
        let buf = match hs.get_mut(&fh) {
            Some(Handle::Request {
                req, resp: None, ..
            }) => req,
            Some(Handle::NewMacro { buf, .. }) | Some(Handle::NewJob { buf, .. }) => buf,
            _ => return Err(FsError::BadHandle),
        };
        let end = offset as usize + data.len();
        if end > 1 << 20 {
            return Err(FsError::TooBig);
        }
        if buf.len() < end {
            buf.resize(end, 0);
        }
        buf[offset as usize..end].copy_from_slice(data);
        Ok(data.len() as u32)
    }

    /// At close: installs a written macro (EINVAL if invalid, nothing
    /// installed) or submits a written job.
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let mut hs = self.handles.lock();
        match hs.get_mut(&fh) {
            // A shell redirection closes a duplicate before writing: only a
            // flush that has something acts.
            Some(Handle::NewMacro { buf, done }) if !*done && !buf.is_empty() => {
                *done = true;
                let mut text: &[u8] = buf;
                if text.starts_with(b"#!") {
                    let nl = text.iter().position(|&b| b == b'\n').unwrap_or(text.len());
                    text = &text[(nl + 1).min(text.len())..];
                }
                let text = text.to_vec();
                drop(hs);
                if let Err(e) = format::parse(&text) {
                    tracing::warn!(error = %e, "macro refused");
                    return Err(FsError::Invalid(
                        "invalid macro (see the daemon log or `sopfs macro check`)",
                    ));
                }
                let m = self.fs.db().run_with(|tx| store::install_in(tx, &text));
                match m {
                    Ok(m) => {
                        tracing::info!(name = %m.name, "macro installed");
                        Ok(())
                    }
                    Err(store::InstallError::Fs(e)) => Err(e),
                    Err(store::InstallError::Invalid(_)) => Err(FsError::Invalid("invalid macro")),
                }
            }
            Some(Handle::NewJob { buf, done }) if !*done && !buf.is_empty() => {
                *done = true;
                let parsed = parse_job(buf);
                drop(hs);
                let (name, args) = parsed.map_err(|e| {
                    tracing::warn!(error = %e, "job refused");
                    FsError::Invalid("invalid job file")
                })?;
                let id = jobs::submit(&self.fs, &name, &args).map_err(|e| match e {
                    FsError::NotFound => {
                        tracing::warn!(r#macro = %name, "job refused: no such macro");
                        FsError::Invalid("no such macro")
                    }
                    e => e,
                })?;
                tracing::info!(job = %id, r#macro = %name, "job submitted");
                Ok(())
            }
            Some(_) => Ok(()),
            None => Err(FsError::BadHandle),
        }
    }

    /// Closes a virtual handle.
    pub fn release(&self, fh: u64) -> FsResult<()> {
        let r = self.flush(fh);
        self.handles.lock().remove(&fh);
        r
    }

    /// Removes a macro or a finished job.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> Option<FsResult<()>> {
        let name = String::from_utf8_lossy(name).into_owned();
        match parent {
            MACROS_INO => Some(self.fs.write_tx(|tx| store::remove_in(tx, &name)).and_then(
                |found| {
                    if found {
                        Ok(())
                    } else {
                        Err(FsError::NotFound)
                    }
                },
            )),
            p if Self::owns(p) => Some(Err(FsError::NotPermitted)),
            _ => None,
        }
    }
}
