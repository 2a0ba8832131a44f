//! [`Options`]: the tunables of an open volume.

use std::time::Duration;

/// Tunables of an open volume.
#[derive(Clone, Debug)]
pub struct Options {
    /// Chunk size of very large values.
    pub chunk_size: usize,
    /// Byte budget of the decoded-node cache.
    pub cache_bytes: usize,
    /// Memory for recently read out-of-line value chunks (a sequential
    /// reader asks for each chunk several times, in kernel-sized pieces).
    pub value_cache_bytes: usize,
    /// Default time limit of a transaction.
    pub tx_timeout: Duration,
    /// TTL of scent locks (renewed by nothing: keep it above the longest commit).
    pub lock_ttl: Duration,
    /// Write a registry checkpoint every this many commits.
    pub checkpoint_every: u64,
    /// fsync every commit (otherwise only commits that ask for it).
    pub sync: bool,
    /// How long `run` keeps retrying a conflicting transaction.
    pub retry_for: Duration,
    /// Interval of the background recovery pass; `None` turns it off.
    pub background_interval: Option<Duration>,
    /// Retries of a transient store fault before it is reported.
    pub store_retries: u32,
    /// About how long an unreachable store is waited for before an
    /// operation fails (S3; a local folder answers or fails at once).
    pub store_timeout: Duration,
    /// Interval of background GC (runs within the background pass); `None` turns it off.
    pub gc_interval: Option<Duration>,
    /// What GC keeps beyond the reachable: everything younger than this. Must
    /// exceed the longest transaction.
    pub gc_retention: Duration,
    /// Cluster mode: how long blobs a [`crate::Stash`] wrote may go without
    /// an intent record listing them for other processes' GC. Those keep
    /// every blob younger than their retention (never under 2 minutes in
    /// cluster mode), so a big file written and closed sooner costs no
    /// intent record at all.
    pub stash_list_after: Duration,
    /// A transaction holds at most this many bytes of out-of-line values in
    /// memory; beyond, it writes them to the store as it goes.
    pub stage_bytes: usize,
    /// Cluster mode: transactions begin from the commit stamp the
    /// coordinator pushed to this process (no round trip) instead of asking
    /// for it. A read may then miss what landed elsewhere a moment ago (the
    /// push is in flight); commits are still validated against the store,
    /// and `Db::catch_up_fresh` always asks.
    pub pushed_stamps: bool,
    /// Cluster mode on a network store: keep a short-lived copy of every
    /// record this process creates in the coordinator, and of its head
    /// (the record without node and value bodies), and read other
    /// processes' records from those copies first (one round trip to the
    /// coordinator per batch instead of a store GET per record per host;
    /// the heads while this host wants no other record's bodies). Off,
    /// every record is read from the store; for a coordinator with little
    /// memory to spare (copies take at most the volume's record bytes per
    /// second times ten seconds, and 640 KiB per record a second, heads a
    /// few hundred bytes more: see `mirror_ttl`). Set alike on every
    /// host: a host waiting for a copy that never comes asks the store
    /// only after a pause.
    pub record_copies: bool,
    /// Embedded mode in a local folder: the commit log's segment files are
    /// sealed, and a new one begun, past this size. GC deletes whole segments.
    pub segment_bytes: u64,
    /// Compression and the key (see [`AtRest`]).
    pub at_rest: AtRest,
    /// Open without writing anything to the store (a read-only folder, a
    /// copy of a bucket): no lock file is created (an existing one is
    /// taken shared), nothing is formatted, upgraded, recovered or
    /// collected, no background pass runs, and read-write transactions
    /// fail with [`crate::Error::ReadOnly`].
    pub read_only: bool,
}

/// How a volume's objects are stored at rest.
#[derive(Clone, Debug, Default)]
pub struct AtRest {
    /// zstd level (1 to 19) of a volume formatted by this open; an
    /// existing volume keeps what it was formatted with.
    pub compression: Option<i32>,
    /// The key: a volume formatted by this open is encrypted with it; an
    /// encrypted volume needs it to open, a plain one refuses it.
    pub key: Option<crate::store::Secret>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            chunk_size: 4 << 20,
            cache_bytes: 128 << 20,
            value_cache_bytes: 32 << 20,
            tx_timeout: Duration::from_secs(30),
            lock_ttl: Duration::from_secs(30),
            checkpoint_every: 4096,
            sync: false,
            retry_for: Duration::from_secs(60),
            background_interval: Some(Duration::from_secs(30)),
            store_retries: 3,
            store_timeout: crate::store::DEFAULT_TIMEOUT,
            gc_interval: Some(Duration::from_secs(600)),
            gc_retention: Duration::from_secs(600),
            stage_bytes: 16 << 20,
            stash_list_after: Duration::from_secs(30),
            pushed_stamps: false,
            record_copies: true,
            segment_bytes: 64 << 20,
            at_rest: AtRest::default(),
            read_only: false,
        }
    }
}
