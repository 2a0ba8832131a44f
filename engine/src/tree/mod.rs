//! Copy-on-write B-trees: values and nodes as stored, the caches of decoded
//! blobs and of records as they arrived, the nodes melds made, the loader that fetches them, a transaction's private view, and
//! the B-tree algorithms over that view.

pub(crate) mod btree;
mod cache;
pub(crate) mod leaf;
mod melded;
mod node;
mod value;
mod view;

pub(crate) use cache::{NodeCache, RecordFrames, ValueCache};
pub(crate) use leaf::Leaf;
pub(crate) use melded::MeldedNodes;
pub(crate) use node::Node;
pub use value::Packed;
pub use value::Value;
pub(crate) use view::{Loader, View};
