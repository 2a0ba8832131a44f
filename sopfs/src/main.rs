//! `sopfs`: the command-line face of a sopfs volume. Today it formats
//! volumes; `mount` arrives with the FUSE daemon.

use anyhow::Context;
use clap::{Parser, Subcommand};
use engine::{Db, Options, StoreLocation, TxMode};

#[derive(Parser)]
#[command(name = "sopfs", version, about = "Masterless distributed filesystem")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a volume at STORE (a path or file:// URL); an existing volume is left as is.
    Format {
        /// Where the volume's blobs live.
        store: String,
    },
    /// Print facts about the volume at STORE.
    Info {
        /// Where the volume's blobs live.
        store: String,
    },
}

fn open(store: &str) -> anyhow::Result<Db> {
    let location = StoreLocation::parse(store)?;
    let opts = Options {
        background_interval: None,
        ..Options::default()
    };
    Db::open(location, opts).with_context(|| format!("cannot open volume {store}"))
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("SOPFS_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Format { store } => open(&store).map(|db| {
            println!("volume ready at {store} (commit {})", db.seq());
        }),
        Command::Info { store } => open(&store).and_then(|db| {
            let mut tx = db.begin(TxMode::ReadOnly)?;
            let trees = tx.list_trees()?;
            println!("store      {store}");
            println!("commit     {}", db.seq());
            println!("nodes      {}", db.node_count());
            println!("trees      {}", trees.len());
            Ok(())
        }),
    };
    if let Err(e) = result {
        eprintln!("sopfs: {e:#}");
        std::process::exit(1);
    }
}
