//! Jobs: macro runs released into the volume's `j` tree and claimed by agents
//! on any host. A claim is a lease: an agent that dies stops renewing it, and
//! the job becomes claimable again when it runs out.

use super::run::{run, RunConfig};
use super::store::load_macro_in;
use crate::error::{FsError, FsResult};
use crate::fs::Fs;
use engine::{Cursor, Direction, Transaction, TreeConfig, TxMode};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The job tree.
pub const JOBS: &str = "j";

const TREE: TreeConfig = TreeConfig {
    slots: 64,
    inline_max: 1024,
};

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for an agent.
    Pending,
    /// Claimed; the lease says until when.
    Running,
    /// Finished; `result` holds the output.
    Done,
    /// The macro failed; `result` holds the error.
    Failed,
}

/// One job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Id (sortable by submission time).
    pub id: String,
    /// Macro to run.
    pub r#macro: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Where it is.
    pub status: Status,
    /// Agent holding or last holding it.
    pub agent: Option<String>,
    /// Lease end, ms since the epoch.
    pub lease_until_ms: u64,
    /// Claims so far.
    pub attempts: u32,
    /// Output lines (done) or the error (failed).
    pub result: Option<String>,
    /// Submission time, ms since the epoch.
    pub submitted_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn decode(bytes: &[u8]) -> FsResult<Job> {
    serde_json::from_slice(bytes).map_err(|e| FsError::Corrupted(format!("job record: {e}")))
}

fn put(tx: &mut Transaction, job: &Job) -> FsResult<()> {
    let text = serde_json::to_vec(job).map_err(|e| FsError::Corrupted(e.to_string()))?;
    tx.upsert(JOBS, job.id.as_bytes(), &text)?;
    Ok(())
}

/// Records a job for `macro_name`; returns its id. The macro must exist.
pub fn submit(fs: &Fs, macro_name: &str, args: &[String]) -> FsResult<String> {
    let id = format!("{:013x}-{:08x}", now_ms(), rand::random::<u32>());
    fs.write_tx(|tx| {
        if load_macro_in(tx, macro_name)?.is_none() {
            return Err(FsError::NotFound);
        }
        tx.ensure_tree(JOBS, TREE)?;
        let job = Job {
            id: id.clone(),
            r#macro: macro_name.to_string(),
            args: args.to_vec(),
            status: Status::Pending,
            agent: None,
            lease_until_ms: 0,
            attempts: 0,
            result: None,
            submitted_ms: now_ms(),
        };
        tx.insert(
            JOBS,
            id.as_bytes(),
            &serde_json::to_vec(&job).unwrap_or_default(),
        )?;
        Ok(())
    })?;
    Ok(id)
}

/// A job by id.
pub fn get(fs: &Fs, id: &str) -> FsResult<Option<Job>> {
    let mut tx = fs.db().begin(TxMode::ReadOnly)?;
    if !tx.tree_exists(JOBS)? {
        return Ok(None);
    }
    tx.get(JOBS, id.as_bytes())?.map(|b| decode(&b)).transpose()
}

/// Every job, oldest first.
pub fn list(fs: &Fs) -> FsResult<Vec<Job>> {
    let mut tx = fs.db().begin(TxMode::ReadOnly)?;
    if !tx.tree_exists(JOBS)? {
        return Ok(Vec::new());
    }
    let mut cur = Cursor::new(.., Direction::Forward);
    let mut out = Vec::new();
    loop {
        for (_, v) in tx.scan(JOBS, &mut cur, 1024)? {
            out.push(decode(&v)?);
        }
        if cur.is_done() {
            return Ok(out);
        }
    }
}

fn claimable(j: &Job, now: u64) -> bool {
    j.status == Status::Pending || (j.status == Status::Running && j.lease_until_ms < now)
}

/// Claims one claimable job for `agent` with a lease of `lease`.
pub fn claim(fs: &Fs, agent: &str, lease: Duration) -> FsResult<Option<Job>> {
    // Candidates come from a snapshot; the claim itself reads only the one
    // key it takes, so agents collide only when they pick the same job.
    let now = now_ms();
    let mut candidates: Vec<String> = list(fs)?
        .into_iter()
        .filter(|j| claimable(j, now))
        .map(|j| j.id)
        .take(16)
        .collect();
    while !candidates.is_empty() {
        let pick = candidates.swap_remove(rand::random::<u32>() as usize % candidates.len());
        let got = fs.write_tx(|tx| {
            let Some(b) = tx.get(JOBS, pick.as_bytes())? else {
                return Ok(None);
            };
            let mut j = decode(&b)?;
            let now = now_ms();
            if !claimable(&j, now) {
                return Ok(None);
            }
            j.status = Status::Running;
            j.agent = Some(agent.to_string());
            j.lease_until_ms = now + lease.as_millis() as u64;
            j.attempts += 1;
            put(tx, &j)?;
            Ok(Some(j))
        });
        match got {
            Ok(Some(j)) => return Ok(Some(j)),
            Ok(None) => {}
            Err(e) if engine::RetryableError::is_conflict(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Applies `f` to the job if `agent` still holds it; false when it lost it.
fn update_held(fs: &Fs, id: &str, agent: &str, f: impl Fn(&mut Job)) -> FsResult<bool> {
    fs.write_tx(|tx| {
        let Some(b) = tx.get(JOBS, id.as_bytes())? else {
            return Ok(false);
        };
        let mut j = decode(&b)?;
        if j.status != Status::Running || j.agent.as_deref() != Some(agent) {
            return Ok(false);
        }
        f(&mut j);
        put(tx, &j)?;
        Ok(true)
    })
}

/// Runs one claimed job, renewing its lease meanwhile, and records the outcome.
/// Returns false when the lease was lost (another agent owns the job now).
pub fn execute(
    fs: &Arc<Fs>,
    job: &Job,
    agent: &str,
    lease: Duration,
    cfg: &RunConfig,
) -> FsResult<bool> {
    let done = Arc::new(AtomicBool::new(false));
    let renewer = {
        let (fs, done, id, agent) = (fs.clone(), done.clone(), job.id.clone(), agent.to_string());
        std::thread::spawn(move || {
            let step = lease / 3;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(step.min(Duration::from_millis(200)));
                if done.load(Ordering::Relaxed) {
                    break;
                }
                let _ = update_held(&fs, &id, &agent, |j| {
                    j.lease_until_ms = now_ms() + lease.as_millis() as u64;
                });
            }
        })
    };
    let outcome = (|| {
        let mut tx = fs.db().begin(TxMode::ReadOnly)?;
        let m = load_macro_in(&mut tx, &job.r#macro)?;
        drop(tx);
        Ok::<_, FsError>(match m {
            None => Err(format!("no macro {:?}", job.r#macro)),
            Some(m) => run(fs, &m, &job.args, cfg)
                .map(|o| o.lines.join("\n"))
                .map_err(|e| e.to_string()),
        })
    })();
    done.store(true, Ordering::Relaxed);
    let _ = renewer.join();
    let (status, result) = match outcome? {
        Ok(out) => (Status::Done, out),
        Err(e) => (Status::Failed, e),
    };
    update_held(fs, &job.id, agent, |j| {
        j.status = status;
        j.result = Some(result.clone());
    })
}

/// Waits until a job is done or failed, or `timeout` passes.
pub fn wait(fs: &Fs, id: &str, timeout: Duration) -> FsResult<Option<Job>> {
    let start = std::time::Instant::now();
    loop {
        match get(fs, id)? {
            None => return Err(FsError::NotFound),
            Some(j) if matches!(j.status, Status::Done | Status::Failed) => return Ok(Some(j)),
            Some(_) if start.elapsed() >= timeout => return Ok(None),
            Some(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
