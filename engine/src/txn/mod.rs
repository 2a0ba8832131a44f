//! Transactions and their commit: the transaction's reads and writes over a
//! view, the commit protocol, intent records and the recovery of commits
//! whose owner died, stashes (values written ahead of their transaction) and
//! the stager that writes a big transaction's values in the background.

mod ahead;
mod commit;
mod group;
mod meld;
mod ops;
mod place;
mod recovery;
mod stager;
mod stash;
mod tx;

pub(crate) use ahead::Credit;
pub use commit::CommitInfo;
pub(crate) use group::Group;
pub(crate) use meld::TreeMelder;
pub use ops::{Cursor, Direction, TreeConfig, TxMode, TxOptions};
pub(crate) use recovery::{recover_all, Intent};
pub(crate) use stager::drain;
pub(crate) use stash::LiveStashes;
pub use stash::{Stash, StashedValue};
pub use tx::Transaction;
