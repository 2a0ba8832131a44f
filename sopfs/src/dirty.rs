//! Writes buffered for one file on this host until they are committed:
//! non-overlapping byte extents over the committed content, plus truncation.

use std::collections::BTreeMap;

/// The buffered changes of one file.
#[derive(Debug, Default)]
pub struct Dirty {
    /// start -> bytes; extents never overlap.
    extents: BTreeMap<u64, Vec<u8>>,
    /// Smallest size the file was truncated to since the last commit.
    pub trunc: Option<u64>,
    /// Size of the file as this host sees it.
    pub size: u64,
    /// Committed size when buffering began (to rebase appends).
    pub base_size: u64,
    /// Every write so far was an O_APPEND write at the end.
    pub append_only: bool,
    /// Bytes buffered.
    pub bytes: usize,
    /// Times or attributes to write with the content.
    pub touched: bool,
}

impl Dirty {
    /// Starts buffering over a file of `size` committed bytes.
    pub fn new(size: u64) -> Dirty {
        Dirty {
            size,
            base_size: size,
            append_only: true,
            ..Dirty::default()
        }
    }

    /// True when there is nothing to commit.
    pub fn is_clean(&self) -> bool {
        self.extents.is_empty() && self.trunc.is_none() && !self.touched
    }

    /// Buffers `data` at `offset`; `append` says it came through O_APPEND.
    pub fn write(&mut self, offset: u64, data: &[u8], append: bool) {
        self.touched = true;
        if data.is_empty() {
            return;
        }
        self.append_only &= append && offset == self.size;
        let end = offset + data.len() as u64;
        self.size = self.size.max(end);
        // The common case: extending the extent that ends where this starts.
        if let Some((&start, ext)) = self.extents.range_mut(..=offset).next_back() {
            let ext_end = start + ext.len() as u64;
            let next_overlaps = self
                .extents
                .range(offset + 1..)
                .next()
                .is_some_and(|(&s, _)| s <= end);
            if ext_end >= offset && !next_overlaps {
                let ext = self.extents.get_mut(&start).expect("found above");
                let at = (offset - start) as usize;
                let old = ext.len();
                if at + data.len() > old {
                    ext.resize(at + data.len(), 0);
                }
                ext[at..at + data.len()].copy_from_slice(data);
                self.bytes += ext.len() - old;
                return;
            }
        }
        // General case: fold every extent that overlaps or touches [offset, end).
        let touching: Vec<u64> = self
            .extents
            .range(..=end)
            .filter(|(&s, e)| s + e.len() as u64 >= offset)
            .map(|(&s, _)| s)
            .collect();
        let start = touching.first().map_or(offset, |&s| s.min(offset));
        let mut last_end = end;
        for s in &touching {
            last_end = last_end.max(s + self.extents[s].len() as u64);
        }
        let mut merged = vec![0u8; (last_end - start) as usize];
        for s in touching {
            if let Some(e) = self.extents.remove(&s) {
                self.bytes -= e.len();
                let at = (s - start) as usize;
                merged[at..at + e.len()].copy_from_slice(&e);
            }
        }
        let at = (offset - start) as usize;
        merged[at..at + data.len()].copy_from_slice(data);
        self.bytes += merged.len();
        self.extents.insert(start, merged);
    }

    /// Truncates (or extends) the file to `size`.
    pub fn truncate(&mut self, size: u64) {
        self.touched = true;
        self.append_only = false;
        let cut: Vec<u64> = self.extents.range(size..).map(|(&s, _)| s).collect();
        for s in cut {
            if let Some(e) = self.extents.remove(&s) {
                self.bytes -= e.len();
            }
        }
        if let Some((&s, e)) = self.extents.range_mut(..size).next_back() {
            let keep = (size - s) as usize;
            if e.len() > keep {
                self.bytes -= e.len() - keep;
                e.truncate(keep);
            }
        }
        if size < self.size {
            self.trunc = Some(self.trunc.map_or(size, |t| t.min(size)));
        }
        self.size = size;
    }

    /// Copies the buffered bytes that fall in `[offset, offset + buf.len())` over `buf`.
    pub fn overlay(&self, offset: u64, buf: &mut [u8]) {
        let end = offset + buf.len() as u64;
        let first = self
            .extents
            .range(..=offset)
            .next_back()
            .map_or(offset, |(&s, _)| s);
        for (&s, e) in self.extents.range(first..end) {
            let e_end = s + e.len() as u64;
            if e_end <= offset {
                continue;
            }
            let from = s.max(offset);
            let to = e_end.min(end);
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&e[(from - s) as usize..(to - s) as usize]);
        }
    }

    /// Moves every extent by `shift` bytes (appends landing after another host's).
    pub fn rebase(&mut self, new_base: u64) {
        let shift = new_base as i128 - self.base_size as i128;
        let old = std::mem::take(&mut self.extents);
        self.extents = old
            .into_iter()
            .map(|(s, e)| ((s as i128 + shift) as u64, e))
            .collect();
        self.size = (self.size as i128 + shift) as u64;
        self.base_size = new_base;
    }

    /// The extents, in order.
    pub fn extents(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.extents.iter().map(|(&s, e)| (s, e.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Write(u64, Vec<u8>),
        Truncate(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..300, proptest::collection::vec(any::<u8>(), 0..80))
                .prop_map(|(o, d)| Op::Write(o, d)),
            (0u64..300).prop_map(Op::Truncate),
        ]
    }

    proptest! {
        /// The overlay over a committed file reads like a plain byte vector
        /// that got the same writes and truncations.
        #[test]
        fn overlay_matches_a_byte_vector(base_len in 0u64..200, ops in proptest::collection::vec(op(), 1..30)) {
            let base: Vec<u8> = (0..base_len).map(|i| (i % 251) as u8).collect();
            let mut model = base.clone();
            let mut d = Dirty::new(base_len);
            for op in ops {
                match op {
                    Op::Write(o, data) => {
                        // A zero-length write changes nothing, as pwrite(2).
                        if !data.is_empty() {
                            let end = o as usize + data.len();
                            if model.len() < end { model.resize(end, 0); }
                            model[o as usize..end].copy_from_slice(&data);
                        }
                        d.write(o, &data, false);
                    }
                    Op::Truncate(t) => { model.resize(t as usize, 0); d.truncate(t); }
                }
            }
            prop_assert_eq!(d.size, model.len() as u64);
            // What a commit does: committed bytes up to the truncation, zeros
            // beyond, then the extents on top.
            let keep = d.trunc.map_or(base.len(), |t| (t as usize).min(base.len()));
            let mut got = vec![0u8; d.size as usize];
            let n = keep.min(got.len());
            got[..n].copy_from_slice(&base[..n]);
            d.overlay(0, &mut got);
            prop_assert_eq!(&got, &model);
            let total: usize = d.extents().map(|(_, e)| e.len()).sum();
            prop_assert_eq!(total, d.bytes);
        }
    }
}
