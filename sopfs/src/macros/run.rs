//! Running a macro: variables, `${...}` expansion, and each step as
//! filesystem operations inside one transaction (`single`) or one per step.

use super::format::{Cond, Filter, Macro, Param, Scope, Step};
use super::fsops;
use super::store::load_macro_in;
use crate::error::FsError;
use crate::fs::Fs;
use crate::ns::schema::{Kind, Time};
use crate::ns::{content, paths, Attr, Caller};
use engine::Transaction;
use serde_json::{json, Value};
use std::collections::HashMap;

/// What a run may do beyond the volume.
#[derive(Clone, Debug, Default)]
pub struct RunConfig {
    /// `exec` steps are allowed.
    pub allow_exec: bool,
    /// OpenAI-compatible chat endpoint for `prompt` steps: base URL (…/v1), model, key.
    pub llm: Option<LlmConfig>,
    /// Who the filesystem operations run as.
    pub caller: Option<Caller>,
}

/// A chat endpoint.
#[derive(Clone, Debug)]
pub struct LlmConfig {
    /// Base URL, `http://` or `https://`, e.g. `https://llm.example/v1`.
    pub url: String,
    /// Model name.
    pub model: String,
    /// Bearer token, if any.
    pub key: Option<String>,
    /// PEM certificates trusted for an `https://` endpoint besides the
    /// public roots (a private CA, a self-signed server).
    pub ca_file: Option<std::path::PathBuf>,
}

impl LlmConfig {
    /// From `SOPFS_LLM_URL`, `SOPFS_LLM_MODEL`, `SOPFS_LLM_KEY` and
    /// `SOPFS_LLM_CA_FILE`; None without a URL.
    pub fn from_env() -> Option<LlmConfig> {
        Some(LlmConfig {
            url: std::env::var("SOPFS_LLM_URL").ok()?,
            model: std::env::var("SOPFS_LLM_MODEL").unwrap_or_else(|_| "default".into()),
            key: std::env::var("SOPFS_LLM_KEY").ok(),
            ca_file: std::env::var_os("SOPFS_LLM_CA_FILE").map(Into::into),
        })
    }

    /// An HTTP agent that trusts the public roots and `ca_file`. TLS uses
    /// the same crypto provider (aws-lc-rs) as the S3 and Redis clients,
    /// named here rather than taken from a process default, so that no
    /// library's choice can clash with another's.
    fn agent(&self) -> Result<ureq::Agent, String> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = &self.ca_file {
            use rustls::pki_types::{pem::PemObject, CertificateDer};
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("CA file {}: no certificate in it", path.display()));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            }
        }
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ureq::AgentBuilder::new()
            .timeout(std::time::Duration::from_secs(120))
            .tls_config(std::sync::Arc::new(tls))
            .build())
    }
}

/// Why a run failed: which step, and what happened.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {message}")]
pub struct RunError {
    /// Where: "step 2 (foreach) > step 1 (move)".
    pub step: String,
    /// What.
    pub message: String,
    /// Kept so conflicts can be retried.
    #[source]
    pub fs: Option<Box<FsError>>,
}

impl From<engine::Error> for RunError {
    fn from(e: engine::Error) -> Self {
        RunError {
            step: "transaction".into(),
            message: e.to_string(),
            fs: Some(Box::new(FsError::from(e))),
        }
    }
}

impl engine::RetryableError for RunError {
    fn is_conflict(&self) -> bool {
        self.fs
            .as_ref()
            .is_some_and(|e| engine::RetryableError::is_conflict(e.as_ref()))
    }
}

/// Output of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Lines printed, in order.
    pub lines: Vec<String>,
}

/// Binds command-line arguments to parameters: `name=value` or in order.
pub fn bind_args(params: &[Param], args: &[String]) -> Result<HashMap<String, Value>, String> {
    let mut vars = HashMap::new();
    let mut positional = Vec::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) if params.iter().any(|p| p.name == k) => {
                vars.insert(k.to_string(), Value::String(v.to_string()));
            }
            _ => positional.push(a.clone()),
        }
    }
    let named: Vec<String> = vars.keys().cloned().collect();
    let mut free = params.iter().filter(|p| !named.contains(&p.name));
    for a in positional {
        let p = free
            .next()
            .ok_or_else(|| format!("too many arguments: {a:?} has no parameter"))?;
        vars.insert(p.name.clone(), Value::String(a));
    }
    for p in params {
        if !vars.contains_key(&p.name) {
            let d = p
                .default
                .clone()
                .ok_or_else(|| format!("missing argument: {}", p.name))?;
            vars.insert(p.name.clone(), Value::String(d));
        }
    }
    vars.insert("args".into(), json!(args));
    Ok(vars)
}

/// Runs `m` with `args` on `fs`.
pub fn run(fs: &Fs, m: &Macro, args: &[String], cfg: &RunConfig) -> Result<Output, RunError> {
    let vars = bind_args(&m.params, args).map_err(|message| RunError {
        step: "arguments".into(),
        message,
        fs: None,
    })?;
    match m.scope {
        Scope::Single => fs.db().run_with(|tx| {
            let mut r = Runner::new(fs, cfg, vars.clone(), &m.name);
            r.steps(&mut Some(tx), &m.steps, "")?;
            Ok(Output { lines: r.out })
        }),
        Scope::PerStep => {
            let mut r = Runner::new(fs, cfg, vars, &m.name);
            r.steps(&mut None, &m.steps, "")?;
            Ok(Output { lines: r.out })
        }
    }
}

struct Runner<'a> {
    fs: &'a Fs,
    cfg: &'a RunConfig,
    vars: HashMap<String, Value>,
    out: Vec<String>,
    depth: u32,
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(items) => items.iter().map(text_of).collect::<Vec<_>>().join("\n"),
        Value::Object(o) => o.get("path").map(text_of).unwrap_or_else(|| v.to_string()),
        other => other.to_string(),
    }
}

fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], name) || (!name.is_empty() && glob(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => glob(&pattern[1..], &name[1..]),
        _ => false,
    }
}

fn entry_value(dir: &str, name: &[u8], a: &Attr) -> Value {
    let name = String::from_utf8_lossy(name).into_owned();
    let path = format!("{}/{}", dir.trim_end_matches('/'), name);
    json!({
        "name": name,
        "path": path,
        "size": a.inode.size,
        "mtime": a.inode.mtime.secs,
        "kind": match a.inode.kind { Kind::Dir => "dir", Kind::File => "file", _ => "other" },
    })
}

type TxScope<'t> = Option<&'t mut Transaction>;

impl<'a> Runner<'a> {
    fn new(fs: &'a Fs, cfg: &'a RunConfig, vars: HashMap<String, Value>, name: &str) -> Self {
        let mut vars = vars;
        let now = Time::now();
        vars.insert("now".into(), json!(now.secs));
        vars.insert("today".into(), json!(today(now.secs)));
        vars.insert("macro".into(), json!(name));
        Runner {
            fs,
            cfg,
            vars,
            out: Vec::new(),
            depth: 0,
        }
    }

    fn caller(&self) -> Caller {
        self.cfg.caller.unwrap_or(Caller { uid: 0, gid: 0 })
    }

    /// The value of `${a.b}` or a text with every `${...}` replaced.
    fn expand_value(&self, text: &str) -> Value {
        let t = text.trim();
        if t.starts_with("${") && t.ends_with('}') && t.matches("${").count() == 1 {
            return self.lookup(&t[2..t.len() - 1]);
        }
        Value::String(self.expand(text))
    }

    fn lookup(&self, name: &str) -> Value {
        let mut parts = name.split('.');
        let mut v = parts
            .next()
            .and_then(|root| self.vars.get(root))
            .cloned()
            .unwrap_or(Value::Null);
        for p in parts {
            v = v.get(p).cloned().unwrap_or(Value::Null);
        }
        v
    }

    fn expand(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            match after.find('}') {
                Some(j) => {
                    out.push_str(&text_of(&self.lookup(&after[..j])));
                    rest = &after[j + 1..];
                }
                None => {
                    out.push_str(&rest[i..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// Runs `f` in the macro's transaction, or in one of its own (`per_step`).
    fn op<T>(
        &self,
        tx: &mut TxScope<'_>,
        mut f: impl FnMut(&mut Transaction) -> Result<T, FsError>,
    ) -> Result<T, FsError> {
        match tx {
            Some(t) => f(t),
            None => self.fs.write_tx(f),
        }
    }

    fn steps(&mut self, tx: &mut TxScope<'_>, steps: &[Step], at: &str) -> Result<(), RunError> {
        for (i, s) in steps.iter().enumerate() {
            let here = format!("{at}step {} ({})", i + 1, s.op());
            self.step(tx, s, &here).map_err(|e| match e {
                Failure::Nested(r) => r,
                Failure::Fs(fs) => RunError {
                    step: here.clone(),
                    message: fs.to_string(),
                    fs: Some(Box::new(fs)),
                },
                Failure::Msg(message) => RunError {
                    step: here.clone(),
                    message,
                    fs: None,
                },
            })?;
        }
        Ok(())
    }

    fn step(&mut self, tx: &mut TxScope<'_>, s: &Step, here: &str) -> Result<(), Failure> {
        let caller = self.caller();
        match s {
            Step::List {
                path,
                prefix,
                from,
                to,
                limit,
                filter,
                into,
            } => {
                let path = self.expand(path);
                let prefix = prefix
                    .as_ref()
                    .map(|p| self.expand(p))
                    .filter(|p| !p.is_empty());
                let mut from = from.as_ref().map(|p| self.expand(p));
                let mut to = to.as_ref().map(|p| self.expand(p));
                if let Some(p) = &prefix {
                    from = Some(from.map_or(p.clone(), |f| f.max(p.clone())));
                    let mut end = p.clone().into_bytes();
                    if let Some(last) = end.last_mut() {
                        *last = last.saturating_add(1);
                    }
                    let end = String::from_utf8_lossy(&end).into_owned();
                    to = Some(to.map_or(end.clone(), |t| t.min(end)));
                }
                let limit = match limit {
                    Some(l) => self.number(l)? as usize,
                    None => usize::MAX,
                };
                let filter = self.expand_filter(filter)?;
                let entries = self.op(tx, |t| {
                    let all = fsops::list(t, self.fs, &path, from.as_deref(), to.as_deref())?;
                    let mut keep = Vec::new();
                    for (name, a) in all {
                        if keep.len() >= limit {
                            break;
                        }
                        if filter.matches(t, &name, &a)? {
                            keep.push(entry_value(&path, &name, &a));
                        }
                    }
                    Ok(keep)
                })?;
                self.vars.insert(into.clone(), Value::Array(entries));
            }
            Step::Read { path, into } => {
                let path = self.expand(path);
                let data = self.op(tx, |t| fsops::read(t, &path))?;
                self.vars.insert(
                    into.clone(),
                    Value::String(String::from_utf8_lossy(&data).into_owned()),
                );
            }
            Step::Write { path, content } | Step::Append { path, content } => {
                let append = matches!(s, Step::Append { .. });
                let (path, content) = (self.expand(path), self.expand(content));
                self.op(tx, |t| {
                    paths::write_file(t, self.fs, caller, &path, content.as_bytes(), append)
                })?;
            }
            Step::Delete { path } => {
                let path = self.expand(path);
                self.op(tx, |t| fsops::delete(t, self.fs, &path))?;
            }
            Step::Mkdir { path, parents } => {
                let path = self.expand(path);
                self.op(tx, |t| fsops::mkdir(t, self.fs, caller, &path, *parents))?;
            }
            Step::Move { from, to } => {
                let (from, to) = (self.expand(from), self.expand(to));
                self.op(tx, |t| fsops::rename(t, self.fs, &from, &to))?;
            }
            Step::Copy { from, to } => {
                let (from, to) = (self.expand(from), self.expand(to));
                self.op(tx, |t| fsops::copy(t, self.fs, caller, &from, &to))?;
            }
            Step::Set { var, value } => {
                let v = match value {
                    Value::String(s) => self.expand_value(s),
                    other => other.clone(),
                };
                self.vars.insert(var.clone(), v);
            }
            Step::If {
                cond,
                then,
                otherwise,
            } => {
                let holds = self.cond(tx, cond)?;
                let branch = if holds { then } else { otherwise };
                let label = if holds { "then" } else { "else" };
                self.steps(tx, branch, &format!("{here} > {label} "))
                    .map_err(Failure::Nested)?;
            }
            Step::Foreach { list, var, steps } => {
                let items = match self.expand_value(list) {
                    Value::Array(a) => a,
                    Value::Null => Vec::new(),
                    Value::String(s) => s
                        .lines()
                        .filter(|l| !l.is_empty())
                        .map(|l| Value::String(l.to_string()))
                        .collect(),
                    other => vec![other],
                };
                for (n, item) in items.into_iter().enumerate() {
                    self.vars.insert(var.clone(), item);
                    self.steps(tx, steps, &format!("{here} > item {} > ", n + 1))
                        .map_err(Failure::Nested)?;
                }
            }
            Step::Call { name, args, into } => self.call(tx, name, args, into.as_ref(), here)?,
            Step::Exec { command, into } => self.exec(command, into.as_ref())?,
            Step::Prompt { text, into } => {
                let llm = self.cfg.llm.as_ref().ok_or_else(|| {
                    Failure::Msg(
                        "prompt is disabled: no chat endpoint configured (SOPFS_LLM_URL)".into(),
                    )
                })?;
                let answer = prompt(llm, &self.expand(text)).map_err(Failure::Msg)?;
                self.vars.insert(into.clone(), Value::String(answer));
            }
            Step::Print { text } => {
                let t = self.expand(text);
                self.out.extend(t.lines().map(str::to_string));
                if t.is_empty() {
                    self.out.push(String::new());
                }
            }
            Step::Fail { message } => return Err(Failure::Msg(self.expand(message))),
        }
        Ok(())
    }

    /// A `call` step: runs macro `name` with `args` in the same transaction
    /// scope; its output goes to variable `into` or to this run's output.
    fn call(
        &mut self,
        tx: &mut TxScope<'_>,
        name: &str,
        args: &std::collections::BTreeMap<String, String>,
        into: Option<&String>,
        here: &str,
    ) -> Result<(), Failure> {
        if self.depth >= 16 {
            return Err(Failure::Msg("calls nested deeper than 16".into()));
        }
        let name = self.expand(name);
        let m = self
            .op(tx, |t| load_macro_in(t, &name))?
            .ok_or_else(|| Failure::Msg(format!("no macro {name:?}")))?;
        let given: Vec<String> = args
            .iter()
            .map(|(k, v)| format!("{k}={}", self.expand(v)))
            .collect();
        let vars = bind_args(&m.params, &given).map_err(Failure::Msg)?;
        let mut inner = Runner::new(self.fs, self.cfg, vars, &m.name);
        inner.depth = self.depth + 1;
        inner
            .steps(tx, &m.steps, &format!("{here} > {name}: "))
            .map_err(Failure::Nested)?;
        match into {
            Some(v) => {
                self.vars.insert(v.clone(), json!(inner.out));
            }
            None => self.out.extend(inner.out),
        }
        Ok(())
    }

    /// An `exec` step (only with `-o macro_exec`): runs `command`; its
    /// standard output goes to variable `into` or to this run's output.
    fn exec(&mut self, command: &[String], into: Option<&String>) -> Result<(), Failure> {
        if !self.cfg.allow_exec {
            return Err(Failure::Msg(
                "exec is disabled (mount with -o macro_exec to allow it)".into(),
            ));
        }
        let argv: Vec<String> = command.iter().map(|c| self.expand(c)).collect();
        let Some((prog, args)) = argv.split_first() else {
            return Err(Failure::Msg("exec of an empty command".into()));
        };
        let mut cmd = std::process::Command::new(prog);
        cmd.args(args);
        crate::pages::default_pages_for(&mut cmd);
        let out = cmd
            .output()
            .map_err(|e| Failure::Msg(format!("{prog}: {e}")))?;
        if !out.status.success() {
            return Err(Failure::Msg(format!(
                "{prog} exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let text = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
        match into {
            Some(v) => {
                self.vars.insert(v.clone(), Value::String(text));
            }
            None => self.out.extend(text.lines().map(str::to_string)),
        }
        Ok(())
    }

    fn number(&self, text: &str) -> Result<f64, Failure> {
        let t = self.expand(text);
        t.trim()
            .parse::<f64>()
            .map_err(|_| Failure::Msg(format!("{t:?} is not a number")))
    }

    fn expand_filter(&self, f: &Filter) -> Result<ListFilter, Failure> {
        let num = |o: &Option<String>| -> Result<Option<f64>, Failure> {
            o.as_ref().map(|t| self.number(t)).transpose()
        };
        Ok(ListFilter {
            name: f.name.as_ref().map(|n| self.expand(n)),
            min_size: num(&f.min_size)?,
            max_size: num(&f.max_size)?,
            older_than_days: num(&f.older_than_days)?,
            newer_than_days: num(&f.newer_than_days)?,
            contains: f.contains.as_ref().map(|c| self.expand(c)),
            kind: f.kind.as_ref().map(|k| self.expand(k)),
            now: Time::now().secs,
        })
    }

    fn cond(&self, tx: &mut TxScope<'_>, c: &Cond) -> Result<bool, Failure> {
        Ok(match c {
            Cond::Equals([a, b]) => self.expand(a) == self.expand(b),
            Cond::NotEquals([a, b]) => self.expand(a) != self.expand(b),
            Cond::Exists(p) | Cond::Missing(p) => {
                let p = self.expand(p);
                let found = match self.op(tx, |t| paths::resolve(t, &p)) {
                    Ok(_) => true,
                    Err(FsError::NotFound) | Err(FsError::NotDir) => false,
                    Err(e) => return Err(Failure::Fs(e)),
                };
                found == matches!(c, Cond::Exists(_))
            }
            Cond::Empty(v) | Cond::NotEmpty(v) => {
                let empty = match self.expand_value(v) {
                    Value::Array(a) => a.is_empty(),
                    Value::Null => true,
                    Value::String(s) => s.is_empty(),
                    _ => false,
                };
                empty == matches!(c, Cond::Empty(_))
            }
        })
    }
}

enum Failure {
    Fs(FsError),
    Msg(String),
    Nested(RunError),
}

impl From<FsError> for Failure {
    fn from(e: FsError) -> Self {
        Failure::Fs(e)
    }
}

struct ListFilter {
    name: Option<String>,
    min_size: Option<f64>,
    max_size: Option<f64>,
    older_than_days: Option<f64>,
    newer_than_days: Option<f64>,
    contains: Option<String>,
    kind: Option<String>,
    now: i64,
}

impl ListFilter {
    fn matches(&self, tx: &mut Transaction, name: &[u8], a: &Attr) -> Result<bool, FsError> {
        let i = &a.inode;
        let age_days = (self.now - i.mtime.secs) as f64 / 86_400.0;
        let kind = match i.kind {
            Kind::Dir => "dir",
            Kind::File => "file",
            _ => "other",
        };
        let ok = self.name.as_ref().is_none_or(|p| glob(p.as_bytes(), name))
            && self.min_size.is_none_or(|m| i.size as f64 >= m)
            && self.max_size.is_none_or(|m| i.size as f64 <= m)
            && self.older_than_days.is_none_or(|d| age_days > d)
            && self.newer_than_days.is_none_or(|d| age_days < d)
            && self.kind.as_ref().is_none_or(|k| k == kind);
        if !ok {
            return Ok(false);
        }
        match &self.contains {
            None => Ok(true),
            Some(_) if i.kind != Kind::File => Ok(false),
            Some(needle) => {
                let data = content::read_file(tx, a.ino)?;
                Ok(data
                    .windows(needle.len().max(1))
                    .any(|w| w == needle.as_bytes()))
            }
        }
    }
}

/// YYYY-MM-DD of a Unix time (UTC), without a calendar crate.
fn today(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    // Civil-from-days (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}")
}

fn prompt(llm: &LlmConfig, text: &str) -> Result<String, String> {
    let url = format!("{}/chat/completions", llm.url.trim_end_matches('/'));
    let mut req = llm.agent()?.post(&url);
    if let Some(k) = &llm.key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    let body = json!({"model": llm.model, "messages": [{"role": "user", "content": text}]});
    let resp: Value = req
        .send_json(body)
        .map_err(|e| format!("chat endpoint: {e}"))?
        .into_json()
        .map_err(|e| format!("chat endpoint answered no JSON: {e}"))?;
    resp.pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| "chat endpoint answered without choices[0].message.content".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_globs() {
        assert_eq!(today(0), "1970-01-01");
        assert_eq!(today(1_795_517_333), "2026-11-24");
        assert_eq!(today(951_782_400), "2000-02-29");
        assert!(glob(b"*.log", b"a.log") && !glob(b"*.log", b"a.txt") && glob(b"f?", b"f1"));
    }
}
