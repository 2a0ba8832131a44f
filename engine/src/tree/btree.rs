//! M-way B+tree algorithms over a `View`: point operations, range scans, and
//! rebalancing. The root's logical id never changes, so a tree is named by it.

use crate::error::{Error, Result};
use crate::ids::NodeId;
use crate::tree::View;
use crate::tree::{Leaf, Node, Value};
use std::ops::Bound;

fn corrupt(detail: &str) -> Error {
    Error::Corrupted {
        what: "node",
        path: "b-tree".into(),
        detail: detail.into(),
    }
}

fn min_width(slots: usize) -> usize {
    (slots / 2).max(1)
}

/// The value stored under `key`.
pub(crate) fn get(view: &View, root: NodeId, key: &[u8]) -> Result<Option<Value>> {
    let mut id = root;
    loop {
        let node = view.node(id)?;
        match &*node {
            Node::Leaf(leaf) => return Ok(leaf.search(key).ok().map(|i| leaf.value(i))),
            Node::Internal { keys, children } => {
                id = children[keys.partition_point(|k| k.as_slice() <= key)];
            }
        }
    }
}

/// The values stored under `keys` (ascending), appended to `out` in their
/// order. One walk serves them all: each node on their paths is fetched
/// once, where a `get` per key would fetch the top of the tree each time.
pub(crate) fn get_sorted(
    view: &View,
    id: NodeId,
    keys: &[&[u8]],
    out: &mut Vec<Option<Value>>,
) -> Result<()> {
    let node = view.node(id)?;
    match &*node {
        Node::Leaf(leaf) => {
            out.extend(
                keys.iter()
                    .map(|k| leaf.search(k).ok().map(|i| leaf.value(i))),
            );
        }
        Node::Internal {
            keys: seps,
            children,
        } => {
            let mut rest = keys;
            while let Some(first) = rest.first() {
                let c = seps.partition_point(|s| s.as_slice() <= *first);
                // Child c holds the keys below seps[c]: at least `first`.
                let n = match seps.get(c) {
                    Some(sep) => rest.partition_point(|k| *k < sep.as_slice()),
                    None => rest.len(),
                };
                get_sorted(view, children[c], &rest[..n], out)?;
                rest = &rest[n..];
            }
        }
    }
    Ok(())
}

/// The child of internal node `id` that covers `key`, with its index;
/// `None` when `id` is a leaf.
fn child_for(view: &View, id: NodeId, key: &[u8]) -> Result<Option<(usize, NodeId)>> {
    Ok(match &*view.node(id)? {
        Node::Leaf(_) => None,
        Node::Internal { keys, children } => {
            let i = keys.partition_point(|k| k.as_slice() <= key);
            Some((i, children[i]))
        }
    })
}

fn leaf_mut(view: &mut View, id: NodeId) -> Result<&mut Leaf> {
    match view.node_mut(id)? {
        Node::Leaf(leaf) => Ok(leaf),
        Node::Internal { .. } => Err(corrupt("leaf expected")),
    }
}

type InternalParts<'a> = (&'a mut Vec<Vec<u8>>, &'a mut Vec<NodeId>);

fn internal_mut(view: &mut View, id: NodeId) -> Result<InternalParts<'_>> {
    match view.node_mut(id)? {
        Node::Internal { keys, children } => Ok((keys, children)),
        Node::Leaf(_) => Err(corrupt("internal node expected")),
    }
}

/// Inserts or replaces; returns true when the key was present.
pub(crate) fn put(
    view: &mut View,
    root: NodeId,
    key: &[u8],
    value: &Value,
    slots: usize,
) -> Result<bool> {
    let (replaced, split) = put_rec(view, root, key, value, slots)?;
    if let Some((sep, right)) = split {
        // Keep the root's id: move its (left) content to a fresh node.
        let left_node = std::mem::replace(view.node_mut(root)?, Node::empty_leaf());
        let left = view.alloc(left_node);
        view.set(
            root,
            Node::Internal {
                keys: vec![sep],
                children: vec![left, right],
            },
        );
    }
    Ok(replaced)
}

type Split = Option<(Vec<u8>, NodeId)>;

fn put_rec(
    view: &mut View,
    id: NodeId,
    key: &[u8],
    value: &Value,
    slots: usize,
) -> Result<(bool, Split)> {
    let Some((i, child)) = child_for(view, id, key)? else {
        let leaf = leaf_mut(view, id)?;
        let replaced = match leaf.search(key) {
            Ok(i) => {
                leaf.replace(i, value);
                true
            }
            Err(i) => {
                leaf.insert(i, key, value);
                false
            }
        };
        if leaf.len() <= slots {
            return Ok((replaced, None));
        }
        let right = leaf.split_off(leaf.len() / 2);
        let sep = right.key(0).to_vec();
        return Ok((replaced, Some((sep, view.alloc(Node::Leaf(right))))));
    };
    let (replaced, child_split) = put_rec(view, child, key, value, slots)?;
    let Some((sep, new_child)) = child_split else {
        return Ok((replaced, None));
    };
    let (keys, children) = internal_mut(view, id)?;
    keys.insert(i, sep);
    children.insert(i + 1, new_child);
    if children.len() <= slots {
        return Ok((replaced, None));
    }
    let mid = children.len() / 2;
    let right_children = children.split_off(mid);
    let right_keys = keys.split_off(mid);
    let sep = keys
        .pop()
        .ok_or_else(|| corrupt("internal split underflow"))?;
    let right = view.alloc(Node::Internal {
        keys: right_keys,
        children: right_children,
    });
    Ok((replaced, Some((sep, right))))
}

/// Removes `key`; returns true if it was present.
pub(crate) fn remove(view: &mut View, root: NodeId, key: &[u8], slots: usize) -> Result<bool> {
    let removed = remove_rec(view, root, key, slots)?;
    // Collapse a root left with one child, keeping the root's id.
    loop {
        let node = view.node(root)?;
        match &*node {
            Node::Internal { children, .. } if children.len() == 1 => {
                let child = children[0];
                let content = (*view.node(child)?).clone();
                view.set(root, content);
                view.free(child);
            }
            _ => break,
        }
    }
    Ok(removed)
}

fn remove_rec(view: &mut View, id: NodeId, key: &[u8], slots: usize) -> Result<bool> {
    let Some((i, child)) = child_for(view, id, key)? else {
        let node = view.node(id)?;
        let Node::Leaf(leaf) = &*node else {
            return Err(corrupt("leaf expected"));
        };
        // Absent: nothing to change, so nothing copied.
        let Ok(at) = leaf.search(key) else {
            return Ok(false);
        };
        drop(node);
        leaf_mut(view, id)?.remove(at);
        return Ok(true);
    };
    let removed = remove_rec(view, child, key, slots)?;
    if removed && view.node(child)?.width() < min_width(slots) {
        rebalance(view, id, i, slots)?;
    }
    Ok(removed)
}

/// Merges or evens out child `i` of `parent` with a sibling.
fn rebalance(view: &mut View, parent: NodeId, i: usize, slots: usize) -> Result<()> {
    let pnode = view.node(parent)?;
    let Node::Internal { keys, children } = &*pnode else {
        return Err(corrupt("rebalance under a leaf"));
    };
    if children.len() < 2 {
        return Ok(());
    }
    let mut keys = keys.clone();
    let mut children = children.clone();
    let a_idx = if i + 1 < children.len() { i } else { i - 1 };
    let (a, b) = (children[a_idx], children[a_idx + 1]);
    let (an, bn) = (view.node(a)?, view.node(b)?);
    match (&*an, &*bn) {
        (Node::Leaf(la), Node::Leaf(lb)) => {
            let mut all = Leaf::joined(la, lb);
            if all.len() <= slots {
                view.set(a, Node::Leaf(all));
                view.free(b);
                keys.remove(a_idx);
                children.remove(a_idx + 1);
            } else {
                let right = all.split_off(all.len() / 2);
                keys[a_idx] = right.key(0).to_vec();
                view.set(a, Node::Leaf(all));
                view.set(b, Node::Leaf(right));
            }
        }
        (
            Node::Internal {
                keys: ka,
                children: ca,
            },
            Node::Internal {
                keys: kb,
                children: cb,
            },
        ) => {
            let mut all_keys = ka.clone();
            all_keys.push(keys[a_idx].clone());
            all_keys.extend(kb.iter().cloned());
            let mut all_children = ca.clone();
            all_children.extend(cb.iter().copied());
            if all_children.len() <= slots {
                view.set(
                    a,
                    Node::Internal {
                        keys: all_keys,
                        children: all_children,
                    },
                );
                view.free(b);
                keys.remove(a_idx);
                children.remove(a_idx + 1);
            } else {
                let mid = all_children.len() / 2;
                let right_children = all_children.split_off(mid);
                let right_keys = all_keys.split_off(mid);
                let sep = all_keys
                    .pop()
                    .ok_or_else(|| corrupt("rebalance underflow"))?;
                keys[a_idx] = sep;
                view.set(
                    a,
                    Node::Internal {
                        keys: all_keys,
                        children: all_children,
                    },
                );
                view.set(
                    b,
                    Node::Internal {
                        keys: right_keys,
                        children: right_children,
                    },
                );
            }
        }
        _ => return Err(corrupt("siblings of different kinds")),
    }
    view.set(parent, Node::Internal { keys, children });
    Ok(())
}

fn below_hi(k: &[u8], hi: &Bound<Vec<u8>>) -> bool {
    match hi {
        Bound::Unbounded => true,
        Bound::Included(h) => k <= h.as_slice(),
        Bound::Excluded(h) => k < h.as_slice(),
    }
}

/// Appends up to `limit` entries within `(lo, hi)` to `out`, ascending or
/// descending. Returns true when it stopped because of the limit.
pub(crate) fn scan(
    view: &View,
    id: NodeId,
    lo: &Bound<Vec<u8>>,
    hi: &Bound<Vec<u8>>,
    reverse: bool,
    limit: usize,
    out: &mut Vec<(Vec<u8>, Value)>,
) -> Result<bool> {
    let node = view.node(id)?;
    match &*node {
        Node::Leaf(leaf) => {
            let lo_i = match lo {
                Bound::Unbounded => 0,
                Bound::Included(l) => leaf.lower_bound(l),
                Bound::Excluded(l) => leaf.upper_bound(l),
            };
            let hi_i = match hi {
                Bound::Unbounded => leaf.len(),
                Bound::Included(h) => leaf.upper_bound(h),
                Bound::Excluded(h) => leaf.lower_bound(h),
            };
            if lo_i < hi_i {
                let range = lo_i..hi_i;
                let order: Box<dyn Iterator<Item = usize>> = if reverse {
                    Box::new(range.rev())
                } else {
                    Box::new(range)
                };
                for i in order {
                    if out.len() >= limit {
                        return Ok(true);
                    }
                    out.push((leaf.key(i).to_vec(), leaf.value(i)));
                }
            }
            Ok(out.len() >= limit)
        }
        Node::Internal { keys, children } => {
            if reverse {
                let start = match hi {
                    Bound::Unbounded => children.len() - 1,
                    Bound::Included(h) => keys.partition_point(|s| s <= h),
                    Bound::Excluded(h) => keys.partition_point(|s| s < h),
                };
                for c in (0..=start).rev() {
                    // Child c holds only keys below keys[c]: none qualify once keys[c] <= lo.
                    if let (Some(sep), Bound::Included(l) | Bound::Excluded(l)) = (keys.get(c), lo)
                    {
                        if sep <= l {
                            break;
                        }
                    }
                    if scan(view, children[c], lo, hi, reverse, limit, out)? {
                        return Ok(true);
                    }
                }
            } else {
                let start = match lo {
                    Bound::Unbounded => 0,
                    Bound::Included(l) | Bound::Excluded(l) => keys.partition_point(|s| s <= l),
                };
                for c in start..children.len() {
                    if c > 0 && !below_hi(&keys[c - 1], hi) {
                        break;
                    }
                    if scan(view, children[c], lo, hi, reverse, limit, out)? {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        }
    }
}

/// Every node of the tree under `root`.
pub(crate) fn collect_nodes(view: &View, root: NodeId, out: &mut Vec<NodeId>) -> Result<()> {
    out.push(root);
    if let Node::Internal { children, .. } = &*view.node(root)? {
        for c in children {
            collect_nodes(view, *c, out)?;
        }
    }
    Ok(())
}

/// Checks ordering, separator bounds, fill and uniform depth; returns the entry count.
pub(crate) fn check(view: &View, root: NodeId, slots: usize) -> Result<u64> {
    Checker {
        view,
        slots,
        leaf_depth: None,
    }
    .node(root, None, None, true, 0)
}

struct Checker<'a> {
    view: &'a View,
    slots: usize,
    leaf_depth: Option<usize>,
}

impl Checker<'_> {
    fn node(
        &mut self,
        id: NodeId,
        lo: Option<&[u8]>,
        hi: Option<&[u8]>,
        is_root: bool,
        depth: usize,
    ) -> Result<u64> {
        let node = self.view.node(id)?;
        let w = node.width();
        if w > self.slots {
            return Err(corrupt(&format!(
                "node {id} over capacity: {w} > {}",
                self.slots
            )));
        }
        if !is_root && w < min_width(self.slots) {
            return Err(corrupt(&format!("node {id} under-full: {w}")));
        }
        let in_bounds = |k: &[u8]| lo.is_none_or(|l| k >= l) && hi.is_none_or(|h| k < h);
        match &*node {
            Node::Leaf(leaf) => {
                if *self.leaf_depth.get_or_insert(depth) != depth {
                    return Err(corrupt("leaves at different depths"));
                }
                let n = leaf.len();
                if (1..n).any(|i| leaf.key(i - 1) >= leaf.key(i)) {
                    return Err(corrupt(&format!("leaf {id} out of order")));
                }
                if (0..n).any(|i| !in_bounds(leaf.key(i))) {
                    return Err(corrupt(&format!("leaf {id} key outside separators")));
                }
                Ok(n as u64)
            }
            Node::Internal { keys, children } => {
                if children.len() != keys.len() + 1 || (is_root && children.len() < 2) {
                    return Err(corrupt(&format!("internal {id} malformed")));
                }
                if keys.windows(2).any(|w| w[0] >= w[1]) || keys.iter().any(|k| !in_bounds(k)) {
                    return Err(corrupt(&format!("internal {id} separators out of order")));
                }
                let mut total = 0;
                for (i, c) in children.iter().enumerate() {
                    let clo = if i == 0 {
                        lo
                    } else {
                        Some(keys[i - 1].as_slice())
                    };
                    let chi = if i == keys.len() {
                        hi
                    } else {
                        Some(keys[i].as_slice())
                    };
                    total += self.node(*c, clo, chi, false, depth + 1)?;
                }
                Ok(total)
            }
        }
    }
}
