//! Whole-volume tools over a served volume: `sopfs fsck` and `sopfs dump`/`load`.

pub mod dump;
pub mod fsck;

/// Time limit of the one read-only snapshot a whole-volume walk reads: a
/// big volume on a slow store takes far longer than the default limit,
/// which is sized for file operations.
pub const WALK_LIMIT: std::time::Duration = std::time::Duration::from_secs(3600);
