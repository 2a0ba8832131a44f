//! `sopfs macro ...`, `sopfs job ...` and `sopfs agent`: the compute swarm
//! from the command line. The volume comes from `--store` / `SOPFS_STORE`
//! and, for shared volumes, `--redis` / `SOPFS_REDIS`.

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use engine::{Options, TxMode};
use sopfs::macros::jobs::{self, Status};
use sopfs::macros::run::{run, LlmConfig, RunConfig};
use sopfs::macros::{format, store};
use sopfs::mount::daemon::open_volume;
use sopfs::{Fs, FsOptions};
use std::sync::Arc;
use std::time::Duration;

/// Which volume.
#[derive(Args, Clone)]
pub struct Volume {
    /// Store location (path, file:// or s3:// URL).
    #[arg(long, env = "SOPFS_STORE")]
    store: String,
    /// Coordinator of a shared volume.
    #[arg(long, env = "SOPFS_REDIS")]
    redis: Option<String>,
}

impl Volume {
    fn open(&self) -> anyhow::Result<Arc<Fs>> {
        let opts = Options {
            background_interval: None,
            ..Options::default()
        };
        let db = open_volume(&self.store, self.redis.as_deref(), opts)?;
        Ok(Arc::new(Fs::new(db, FsOptions::default())?))
    }
}

/// `sopfs macro ...`
#[derive(Subcommand)]
pub enum MacroCmd {
    /// Validate a macro file (nothing is installed).
    Check {
        /// The macro's JSON file.
        file: std::path::PathBuf,
    },
    /// Install or replace a macro from a file, after validating it.
    Install {
        #[command(flatten)]
        vol: Volume,
        /// The macro's JSON file.
        file: std::path::PathBuf,
    },
    /// List installed macros.
    List {
        #[command(flatten)]
        vol: Volume,
    },
    /// Remove a macro.
    Rm {
        #[command(flatten)]
        vol: Volume,
        /// Its name.
        name: String,
    },
    /// Run a macro; output lines on stdout, non-zero exit on failure.
    Run {
        #[command(flatten)]
        vol: Volume,
        /// Print one JSON object instead of lines.
        #[arg(long)]
        json: bool,
        /// Allow `exec` steps.
        #[arg(long)]
        allow_exec: bool,
        /// Macro name.
        name: String,
        /// Arguments: in order, or `param=value`.
        args: Vec<String>,
    },
}

/// `sopfs job ...`
#[derive(Subcommand)]
pub enum JobCmd {
    /// Record a job that runs MACRO with ARGS; prints its id.
    Submit {
        #[command(flatten)]
        vol: Volume,
        /// Macro name.
        name: String,
        /// Its arguments.
        args: Vec<String>,
    },
    /// Print a job's status (and result when finished).
    Status {
        #[command(flatten)]
        vol: Volume,
        /// Job id.
        id: String,
    },
    /// Wait for a job; print its result; exit 1 if it failed.
    Wait {
        #[command(flatten)]
        vol: Volume,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        /// Job id.
        id: String,
    },
    /// List jobs.
    List {
        #[command(flatten)]
        vol: Volume,
    },
}

/// `sopfs agent` options.
#[derive(Args)]
pub struct AgentArgs {
    #[command(flatten)]
    vol: Volume,
    /// This agent's name in job records.
    #[arg(long)]
    name: Option<String>,
    /// Lease of a claim, in seconds (renewed while the job runs).
    #[arg(long, default_value_t = 30)]
    lease: u64,
    /// Allow `exec` steps.
    #[arg(long)]
    allow_exec: bool,
    /// Exit after this many seconds without a job (default: never).
    #[arg(long)]
    idle_exit: Option<u64>,
}

fn config(allow_exec: bool) -> RunConfig {
    RunConfig {
        allow_exec,
        llm: LlmConfig::from_env(),
        caller: None,
    }
}

/// Runs a `sopfs macro` command.
pub fn macro_cmd(cmd: MacroCmd) -> anyhow::Result<()> {
    match cmd {
        MacroCmd::Check { file } => {
            let text = std::fs::read(&file).with_context(|| file.display().to_string())?;
            let m = format::parse(&text).map_err(|e| anyhow!("{}: {e}", file.display()))?;
            println!(
                "ok: {} ({} steps, scope {:?})",
                m.name,
                m.steps.len(),
                m.scope
            );
            Ok(())
        }
        MacroCmd::Install { vol, file } => {
            let text = std::fs::read(&file).with_context(|| file.display().to_string())?;
            format::parse(&text).map_err(|e| anyhow!("{}: {e}", file.display()))?;
            let fs = vol.open()?;
            let m = fs.db().run_with(|tx| store::install_in(tx, &text))?;
            println!("installed {}", m.name);
            Ok(())
        }
        MacroCmd::List { vol } => {
            let fs = vol.open()?;
            let mut tx = fs.db().begin(TxMode::ReadOnly)?;
            for name in store::list_in(&mut tx)? {
                let m = store::load_macro_in(&mut tx, &name)?;
                println!("{name}\t{}", m.map(|m| m.description).unwrap_or_default());
            }
            Ok(())
        }
        MacroCmd::Rm { vol, name } => {
            let fs = vol.open()?;
            if !fs.write_tx(|tx| store::remove_in(tx, &name))? {
                bail!("no macro {name:?}");
            }
            Ok(())
        }
        MacroCmd::Run {
            vol,
            json,
            allow_exec,
            name,
            args,
        } => {
            let fs = vol.open()?;
            let mut tx = fs.db().begin(TxMode::ReadOnly)?;
            let m = store::load_macro_in(&mut tx, &name)?
                .ok_or_else(|| anyhow!("no macro {name:?}"))?;
            drop(tx);
            let r = run(&fs, &m, &args, &config(allow_exec));
            if json {
                let v = match &r {
                    Ok(o) => serde_json::json!({"ok": true, "lines": o.lines}),
                    Err(e) => serde_json::json!({"ok": false, "step": e.step, "error": e.message}),
                };
                println!("{v}");
                if r.is_err() {
                    std::process::exit(1);
                }
                return Ok(());
            }
            let out = r.map_err(|e| anyhow!("macro {name}: {e}"))?;
            for l in out.lines {
                println!("{l}");
            }
            Ok(())
        }
    }
}

/// Runs a `sopfs job` command.
pub fn job_cmd(cmd: JobCmd) -> anyhow::Result<()> {
    match cmd {
        JobCmd::Submit { vol, name, args } => {
            let fs = vol.open()?;
            let id = jobs::submit(&fs, &name, &args).map_err(|e| match e {
                sopfs::FsError::NotFound => anyhow!("no macro {name:?}"),
                e => e.into(),
            })?;
            println!("{id}");
            Ok(())
        }
        JobCmd::Status { vol, id } => {
            let fs = vol.open()?;
            let j = jobs::get(&fs, &id)?.ok_or_else(|| anyhow!("no job {id}"))?;
            println!("{}", serde_json::to_string_pretty(&j)?);
            Ok(())
        }
        JobCmd::Wait { vol, timeout, id } => {
            let fs = vol.open()?;
            let j = jobs::wait(&fs, &id, Duration::from_secs(timeout))
                .map_err(|e| match e {
                    sopfs::FsError::NotFound => anyhow!("no job {id}"),
                    e => e.into(),
                })?
                .ok_or_else(|| anyhow!("job {id} not finished after {timeout} s"))?;
            let result = j.result.unwrap_or_default();
            if j.status == Status::Failed {
                bail!("job {id} failed: {result}");
            }
            if !result.is_empty() {
                println!("{result}");
            }
            Ok(())
        }
        JobCmd::List { vol } => {
            let fs = vol.open()?;
            for j in jobs::list(&fs)? {
                println!(
                    "{}\t{:?}\t{}\t{}",
                    j.id,
                    j.status,
                    j.r#macro,
                    j.args.join(" ")
                );
            }
            Ok(())
        }
    }
}

/// Runs `sopfs agent`: claim, run, record, forever (or until idle).
pub fn agent(a: AgentArgs) -> anyhow::Result<()> {
    let fs = a.vol.open()?;
    let name = a.name.unwrap_or_else(|| {
        format!(
            "{}-{}",
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "host".into()),
            std::process::id()
        )
    });
    let lease = Duration::from_secs(a.lease.max(1));
    let cfg = config(a.allow_exec);
    let mut idle_since = std::time::Instant::now();
    tracing::info!(agent = %name, "agent started");
    loop {
        match jobs::claim(&fs, &name, lease)? {
            Some(job) => {
                tracing::info!(job = %job.id, r#macro = %job.r#macro, "running");
                if !jobs::execute(&fs, &job, &name, lease, &cfg)? {
                    tracing::warn!(job = %job.id, "lease lost; another agent has the job");
                }
                idle_since = std::time::Instant::now();
            }
            None => {
                if a.idle_exit
                    .is_some_and(|s| idle_since.elapsed() >= Duration::from_secs(s))
                {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
