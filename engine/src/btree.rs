//! M-way B+tree algorithms over a `View`: point operations, range scans, and
//! rebalancing. The root's logical id never changes, so a tree is named by it.

use crate::error::{Error, Result};
use crate::ids::NodeId;
use crate::node::{Node, Value};
use crate::view::View;
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
            Node::Leaf { entries } => {
                return Ok(entries
                    .binary_search_by(|(k, _)| k.as_slice().cmp(key))
                    .ok()
                    .map(|i| entries[i].1.clone()))
            }
            Node::Internal { keys, children } => {
                id = children[keys.partition_point(|k| k.as_slice() <= key)];
            }
        }
    }
}

/// Inserts or replaces; returns the previous value.
pub(crate) fn put(
    view: &mut View,
    root: NodeId,
    key: &[u8],
    value: Value,
    slots: usize,
) -> Result<Option<Value>> {
    let (old, split) = put_rec(view, root, key, value, slots)?;
    if let Some((sep, right)) = split {
        // Keep the root's id: move its (left) content to a fresh node.
        let left_node = (*view.node(root)?).clone();
        let left = view.alloc(left_node);
        view.set(
            root,
            Node::Internal {
                keys: vec![sep],
                children: vec![left, right],
            },
        );
    }
    Ok(old)
}

type Split = Option<(Vec<u8>, NodeId)>;

fn put_rec(
    view: &mut View,
    id: NodeId,
    key: &[u8],
    value: Value,
    slots: usize,
) -> Result<(Option<Value>, Split)> {
    let node = view.node(id)?;
    match &*node {
        Node::Leaf { entries } => {
            // Copied once, at its final size: a clone then an insert would
            // copy the entries twice (the insert outgrows the clone).
            let (mut entries, old) = match entries.binary_search_by(|(k, _)| k.as_slice().cmp(key))
            {
                Ok(i) => {
                    let mut copy = entries.clone();
                    let old = std::mem::replace(&mut copy[i].1, value);
                    (copy, Some(old))
                }
                Err(i) => {
                    let mut copy = Vec::with_capacity(entries.len() + 1);
                    copy.extend_from_slice(&entries[..i]);
                    copy.push((key.to_vec(), value));
                    copy.extend_from_slice(&entries[i..]);
                    (copy, None)
                }
            };
            let split = if entries.len() > slots {
                let right = entries.split_off(entries.len() / 2);
                let sep = right[0].0.clone();
                Some((sep, view.alloc(Node::Leaf { entries: right })))
            } else {
                None
            };
            view.set(id, Node::Leaf { entries });
            Ok((old, split))
        }
        Node::Internal { keys, children } => {
            let i = keys.partition_point(|k| k.as_slice() <= key);
            let (old, child_split) = put_rec(view, children[i], key, value, slots)?;
            let Some((sep, new_child)) = child_split else {
                return Ok((old, None));
            };
            let mut keys = keys.clone();
            let mut children = children.clone();
            keys.insert(i, sep);
            children.insert(i + 1, new_child);
            let split = if children.len() > slots {
                let mid = children.len() / 2;
                let right_children = children.split_off(mid);
                let right_keys = keys.split_off(mid);
                let sep = keys
                    .pop()
                    .ok_or_else(|| corrupt("internal split underflow"))?;
                Some((
                    sep,
                    view.alloc(Node::Internal {
                        keys: right_keys,
                        children: right_children,
                    }),
                ))
            } else {
                None
            };
            view.set(id, Node::Internal { keys, children });
            Ok((old, split))
        }
    }
}

/// Removes `key`; returns its value if it was present.
pub(crate) fn remove(
    view: &mut View,
    root: NodeId,
    key: &[u8],
    slots: usize,
) -> Result<Option<Value>> {
    let old = remove_rec(view, root, key, slots)?;
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
    Ok(old)
}

fn remove_rec(view: &mut View, id: NodeId, key: &[u8], slots: usize) -> Result<Option<Value>> {
    let node = view.node(id)?;
    match &*node {
        Node::Leaf { entries } => match entries.binary_search_by(|(k, _)| k.as_slice().cmp(key)) {
            Ok(i) => {
                let mut entries = entries.clone();
                let (_, old) = entries.remove(i);
                view.set(id, Node::Leaf { entries });
                Ok(Some(old))
            }
            Err(_) => Ok(None),
        },
        Node::Internal { keys, children } => {
            let i = keys.partition_point(|k| k.as_slice() <= key);
            let child = children[i];
            let old = remove_rec(view, child, key, slots)?;
            if old.is_some() && view.node(child)?.width() < min_width(slots) {
                rebalance(view, id, i, slots)?;
            }
            Ok(old)
        }
    }
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
        (Node::Leaf { entries: ea }, Node::Leaf { entries: eb }) => {
            let mut all = ea.clone();
            all.extend(eb.iter().cloned());
            if all.len() <= slots {
                view.set(a, Node::Leaf { entries: all });
                view.free(b);
                keys.remove(a_idx);
                children.remove(a_idx + 1);
            } else {
                let right = all.split_off(all.len() / 2);
                keys[a_idx] = right[0].0.clone();
                view.set(a, Node::Leaf { entries: all });
                view.set(b, Node::Leaf { entries: right });
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
        Node::Leaf { entries } => {
            let lo_i = match lo {
                Bound::Unbounded => 0,
                Bound::Included(l) => entries.partition_point(|(k, _)| k < l),
                Bound::Excluded(l) => entries.partition_point(|(k, _)| k <= l),
            };
            let hi_i = match hi {
                Bound::Unbounded => entries.len(),
                Bound::Included(h) => entries.partition_point(|(k, _)| k <= h),
                Bound::Excluded(h) => entries.partition_point(|(k, _)| k < h),
            };
            if lo_i < hi_i {
                let slice = &entries[lo_i..hi_i];
                let iter: Box<dyn Iterator<Item = &(Vec<u8>, Value)>> = if reverse {
                    Box::new(slice.iter().rev())
                } else {
                    Box::new(slice.iter())
                };
                for e in iter {
                    if out.len() >= limit {
                        return Ok(true);
                    }
                    out.push(e.clone());
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
            Node::Leaf { entries } => {
                if *self.leaf_depth.get_or_insert(depth) != depth {
                    return Err(corrupt("leaves at different depths"));
                }
                if entries.windows(2).any(|w| w[0].0 >= w[1].0) {
                    return Err(corrupt(&format!("leaf {id} out of order")));
                }
                if entries.iter().any(|(k, _)| !in_bounds(k)) {
                    return Err(corrupt(&format!("leaf {id} key outside separators")));
                }
                Ok(entries.len() as u64)
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
