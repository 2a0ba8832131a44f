//! A B-tree leaf as one buffer: the node's stored encoding itself, plus an
//! index of where each entry starts.
//!
//! Copy-on-write copies a leaf once per transaction that changes it, so the
//! copy must be cheap: two allocations and two `memcpy`s instead of one
//! allocation per key and per value. Encoding for a commit is the buffer as
//! it is, and decoding a stored leaf is one pass that builds the index.
//!
//! The buffer is byte for byte what postcard writes for
//! `Node::Leaf { entries: Vec<(bytes, Value)> }` (format 1 of nodes):
//!
//! ```text
//! varint 0                      the Leaf variant
//! varint n                      entry count
//! n x { varint klen, key bytes, value }
//! value = varint 0, varint len, bytes                     (Inline)
//!       | varint 1, varint count, count x varint u128,   (External: chunk ids
//!         varint u64                                       and total length)
//!       | varint 2, the same as 1                          (External, chunks
//!                                                           in value format 2)
//!       | varint 3, the same as 2, then varint u64          (External, its one
//!                                                           chunk carried in
//!                                                           that commit record)
//!       | varint 4, the same as 2                          (External, its one
//!                                                           chunk carried in
//!                                                           the record that
//!                                                           carries this leaf)
//!       | varint 5, varint u128, varint u64 x 3            (Slice: blob id, the
//!                                                           blob's data length,
//!                                                           start, length;
//!                                                           volume format 6)
//!
//! Tag 4 exists only in leaves inside commit records: decoding one there
//! turns it into tag 3 with the record's seq, and GC writes a leaf out to
//! a blob of its own only in that resolved form.
//! ```
//!
//! Varints are LEB128, least significant group first, as postcard writes them.

use super::value::{heap_block, Packed, Value};
use crate::ids::BlobId;
use std::ops::Range;

/// Where one entry's parts sit in the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ent {
    /// First byte of the entry (its key-length varint).
    start: u32,
    /// First byte of the key.
    key: u32,
    /// First byte of the value's encoding (the key ends here).
    value: u32,
}

/// One leaf: sorted entries in their stored encoding.
#[derive(Clone, PartialEq, Eq)]
pub struct Leaf {
    data: Vec<u8>,
    ents: Vec<Ent>,
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries((0..self.len()).map(|i| (self.key(i), self.value(i))))
            .finish()
    }
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u128) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn varint_len(mut v: u128) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Reads a varint of at most `bits` bits at `*pos`; `None` if it is
/// truncated or too wide for its type.
pub(crate) fn get_varint(data: &[u8], pos: &mut usize, bits: u32) -> Option<u128> {
    let mut v: u128 = 0;
    let mut shift = 0u32;
    loop {
        let b = *data.get(*pos)?;
        *pos += 1;
        let group = (b & 0x7f) as u128;
        if shift >= bits {
            return None;
        }
        let room = bits - shift;
        if room < 7 && group >> room != 0 {
            return None;
        }
        v |= group << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
    }
}

fn get_len(data: &[u8], pos: &mut usize) -> Option<usize> {
    usize::try_from(get_varint(data, pos, 64)?).ok()
}

/// Appends `value`'s stored encoding.
pub(crate) fn encode_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Inline(bytes) => {
            out.push(0);
            put_varint(out, bytes.len() as u128);
            out.extend_from_slice(bytes);
        }
        Value::External {
            chunks,
            len,
            blocks,
            packed,
        } => {
            out.push(match (packed, blocks) {
                (Some(Packed::Here), _) => 4,
                (Some(_), _) => 3,
                (None, true) => 2,
                (None, false) => 1,
            });
            put_varint(out, chunks.len() as u128);
            for c in chunks {
                put_varint(out, c.0);
            }
            put_varint(out, *len as u128);
            if let Some(Packed::In(seq)) = packed {
                put_varint(out, *seq as u128);
            }
        }
        Value::Slice {
            blob,
            total,
            at,
            len,
        } => {
            out.push(5);
            put_varint(out, blob.0);
            for n in [total, at, len] {
                put_varint(out, *n as u128);
            }
        }
    }
}

/// Skips over (`decode` false) or decodes one value at `*pos`.
fn read_value(data: &[u8], pos: &mut usize, decode: bool) -> Option<Option<Value>> {
    match get_varint(data, pos, 32)? {
        0 => {
            let len = get_len(data, pos)?;
            let end = pos.checked_add(len).filter(|&e| e <= data.len())?;
            let v = decode.then(|| Value::Inline(data[*pos..end].to_vec()));
            *pos = end;
            Some(v)
        }
        tag @ (1..=4) => {
            let n = get_len(data, pos)?;
            // Each id takes at least a byte: a count beyond that is damage.
            if n > data.len() - *pos {
                return None;
            }
            let mut chunks = Vec::with_capacity(if decode { n } else { 0 });
            for _ in 0..n {
                let id = get_varint(data, pos, 128)?;
                if decode {
                    chunks.push(BlobId(id));
                }
            }
            let len = get_varint(data, pos, 64)? as u64;
            let packed = match tag {
                3 => Some(Packed::from(get_varint(data, pos, 64)? as u64))
                    .filter(|p| *p != Packed::Here),
                4 => Some(Packed::Here),
                _ => None,
            };
            if tag == 3 && packed.is_none() {
                return None;
            }
            Some(decode.then_some(Value::External {
                chunks,
                len,
                blocks: tag != 1,
                packed,
            }))
        }
        5 => {
            let blob = BlobId(get_varint(data, pos, 128)?);
            let total = get_varint(data, pos, 64)? as u64;
            let at = get_varint(data, pos, 64)? as u64;
            let len = get_varint(data, pos, 64)? as u64;
            // A piece that ends past its blob is damage.
            if at.checked_add(len)? > total {
                return None;
            }
            Some(decode.then_some(Value::Slice {
                blob,
                total,
                at,
                len,
            }))
        }
        _ => None,
    }
}

impl Default for Leaf {
    fn default() -> Self {
        Leaf::new()
    }
}

impl Leaf {
    /// An empty leaf.
    pub fn new() -> Self {
        Leaf {
            data: vec![0, 0],
            ents: Vec::new(),
        }
    }

    /// A leaf of `entries`, which must be ascending by key.
    #[cfg(test)]
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = (&'a [u8], &'a Value)>) -> Self {
        let mut leaf = Leaf::new();
        for (k, v) in entries {
            let at = leaf.len();
            leaf.insert(at, k, v);
        }
        leaf
    }

    /// Checks a stored leaf (the whole node payload) and indexes it. A
    /// leaf with values packed "here" (tag 4) needs the seq of the record
    /// it came in (`home`): they are resolved to it; without one it is not
    /// a valid leaf.
    pub fn parse_in(payload: &[u8], home: Option<u64>) -> Option<Leaf> {
        let leaf = Self::parse(payload)?;
        if !leaf.has_here() {
            return Some(leaf);
        }
        Some(leaf.resolve_here(home?))
    }

    /// True if some value is packed "here" (tag 4).
    pub fn has_here(&self) -> bool {
        self.ents
            .iter()
            .any(|e| self.data.get(e.value as usize) == Some(&4))
    }

    /// This leaf with its values packed "here" naming record `seq`.
    pub fn resolve_here(&self, seq: u64) -> Leaf {
        let mut out = Leaf::new();
        for i in 0..self.len() {
            out.insert(i, self.key(i), &self.value(i).in_record(seq));
        }
        out
    }

    /// Checks a stored leaf (the whole node payload) and indexes it.
    pub fn parse(payload: &[u8]) -> Option<Leaf> {
        let mut pos = 0;
        if get_varint(payload, &mut pos, 32)? != 0 {
            return None;
        }
        let n = get_len(payload, &mut pos)?;
        if n > payload.len() {
            return None;
        }
        let mut ents = Vec::with_capacity(n);
        for _ in 0..n {
            let start = pos;
            let klen = get_len(payload, &mut pos)?;
            let key = pos;
            pos = pos.checked_add(klen).filter(|&e| e <= payload.len())?;
            let value = pos;
            read_value(payload, &mut pos, false)?;
            ents.push(Ent {
                start: u32::try_from(start).ok()?,
                key: u32::try_from(key).ok()?,
                value: u32::try_from(value).ok()?,
            });
        }
        if pos != payload.len() {
            return None;
        }
        Some(Leaf {
            data: payload.to_vec(),
            ents,
        })
    }

    /// The stored encoding (the node payload).
    pub fn payload(&self) -> &[u8] {
        &self.data
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.ents.len()
    }

    fn end(&self, i: usize) -> usize {
        self.ents
            .get(i + 1)
            .map_or(self.data.len(), |e| e.start as usize)
    }

    /// Key of entry `i`.
    pub fn key(&self, i: usize) -> &[u8] {
        let e = self.ents[i];
        &self.data[e.key as usize..e.value as usize]
    }

    /// Value of entry `i`, decoded.
    pub fn value(&self, i: usize) -> Value {
        let mut pos = self.ents[i].value as usize;
        // Every entry was checked when the leaf was parsed or built.
        match read_value(&self.data, &mut pos, true) {
            Some(Some(v)) => v,
            _ => Value::Inline(Vec::new()),
        }
    }

    /// The bytes of entry `i` when its value is inline, without a copy.
    #[cfg(test)]
    pub fn inline(&self, i: usize) -> Option<&[u8]> {
        let mut pos = self.ents[i].value as usize;
        if get_varint(&self.data, &mut pos, 32)? != 0 {
            return None;
        }
        let len = get_len(&self.data, &mut pos)?;
        self.data.get(pos..pos + len)
    }

    /// Position of `key`, or where it would go.
    pub fn search(&self, key: &[u8]) -> Result<usize, usize> {
        self.ents
            .binary_search_by(|e| self.data[e.key as usize..e.value as usize].cmp(key))
    }

    /// Index of the first entry whose key is `>= key`.
    pub fn lower_bound(&self, key: &[u8]) -> usize {
        self.ents
            .partition_point(|e| &self.data[e.key as usize..e.value as usize] < key)
    }

    /// Index of the first entry whose key is `> key`.
    pub fn upper_bound(&self, key: &[u8]) -> usize {
        self.ents
            .partition_point(|e| &self.data[e.key as usize..e.value as usize] <= key)
    }

    /// Header bytes: the variant tag and the count.
    fn header_len(&self) -> usize {
        1 + varint_len(self.ents.len() as u128)
    }

    /// Rewrites the count after the entry list changed from `old_n`
    /// entries; shifts everything when the count's varint changed width.
    fn fix_header(&mut self, old_n: usize) {
        let old_h = 1 + varint_len(old_n as u128);
        let mut head = Vec::with_capacity(11);
        head.push(0);
        put_varint(&mut head, self.ents.len() as u128);
        if head.len() == old_h {
            self.data[..old_h].copy_from_slice(&head);
            return;
        }
        self.data.splice(..old_h, head);
        let delta = self.header_len() as i64 - old_h as i64;
        self.shift(0, delta);
    }

    fn shift(&mut self, from: usize, delta: i64) {
        if delta == 0 {
            return;
        }
        for e in &mut self.ents[from..] {
            e.start = (e.start as i64 + delta) as u32;
            e.key = (e.key as i64 + delta) as u32;
            e.value = (e.value as i64 + delta) as u32;
        }
    }

    /// Inserts a new entry at position `i` (which keeps keys ascending).
    pub fn insert(&mut self, i: usize, key: &[u8], value: &Value) {
        let old_n = self.ents.len();
        let at = self
            .ents
            .get(i)
            .map_or(self.data.len(), |e| e.start as usize);
        let mut enc = Vec::with_capacity(key.len() + 16);
        put_varint(&mut enc, key.len() as u128);
        let key_at = enc.len();
        enc.extend_from_slice(key);
        let value_at = enc.len();
        encode_value(value, &mut enc);
        let added = enc.len();
        self.data.splice(at..at, enc);
        self.shift(i, added as i64);
        self.ents.insert(
            i,
            Ent {
                start: at as u32,
                key: (at + key_at) as u32,
                value: (at + value_at) as u32,
            },
        );
        self.fix_header(old_n);
    }

    /// Replaces the value of entry `i`.
    pub fn replace(&mut self, i: usize, value: &Value) {
        let range = self.ents[i].value as usize..self.end(i);
        let mut enc = Vec::with_capacity(16);
        encode_value(value, &mut enc);
        let delta = enc.len() as i64 - range.len() as i64;
        self.data.splice(range, enc);
        self.shift(i + 1, delta);
    }

    /// Removes entry `i`.
    pub fn remove(&mut self, i: usize) {
        let old_n = self.ents.len();
        let range = self.ents[i].start as usize..self.end(i);
        let removed = range.len() as i64;
        self.data.drain(range);
        self.ents.remove(i);
        self.shift(i, -removed);
        self.fix_header(old_n);
    }

    fn entry_bytes(&self, r: Range<usize>) -> &[u8] {
        if r.is_empty() {
            return &[];
        }
        &self.data[self.ents[r.start].start as usize..self.end(r.end - 1)]
    }

    /// The entries of each part's range, in order, as one leaf.
    fn concat(parts: &[(&Leaf, Range<usize>)]) -> Leaf {
        let n: usize = parts.iter().map(|(_, r)| r.len()).sum();
        let body: usize = parts
            .iter()
            .map(|(l, r)| l.entry_bytes(r.clone()).len())
            .sum();
        let mut data = Vec::with_capacity(11 + body);
        data.push(0);
        put_varint(&mut data, n as u128);
        let mut ents = Vec::with_capacity(n);
        for (leaf, r) in parts {
            if r.is_empty() {
                continue;
            }
            let delta = data.len() as i64 - leaf.ents[r.start].start as i64;
            data.extend_from_slice(leaf.entry_bytes(r.clone()));
            ents.extend(leaf.ents[r.clone()].iter().map(|e| Ent {
                start: (e.start as i64 + delta) as u32,
                key: (e.key as i64 + delta) as u32,
                value: (e.value as i64 + delta) as u32,
            }));
        }
        Leaf { data, ents }
    }

    /// Moves entries `at..` into a new leaf.
    pub fn split_off(&mut self, at: usize) -> Leaf {
        let n = self.len();
        let right = Leaf::concat(&[(self, at..n)]);
        *self = Leaf::concat(&[(self, 0..at)]);
        right
    }

    /// Every entry of `a`, then every entry of `b` (whose keys are all higher).
    pub fn joined(a: &Leaf, b: &Leaf) -> Leaf {
        Leaf::concat(&[(a, 0..a.len()), (b, 0..b.len())])
    }

    /// Bytes this leaf holds on the heap, with the allocator's overhead.
    pub fn heap_bytes(&self) -> usize {
        heap_block(self.data.capacity())
            + heap_block(self.ents.capacity() * std::mem::size_of::<Ent>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ext(ids: &[u128], len: u64) -> Value {
        Value::External {
            chunks: ids.iter().map(|&i| BlobId(i)).collect(),
            len,
            blocks: !len.is_multiple_of(3),
            packed: match len % 3 {
                2 if len % 5 == 4 => Some(Packed::Here),
                2 => Some(Packed::In(len / 7)),
                _ => None,
            },
        }
    }

    /// The leaf as postcard writes it (the stored format).
    fn postcard_of(entries: &[(Vec<u8>, Value)]) -> Vec<u8> {
        #[derive(serde::Serialize)]
        enum PlainValue {
            Inline(Vec<u8>),
            External {
                chunks: Vec<u128>,
                len: u64,
            },
            Blocks {
                chunks: Vec<u128>,
                len: u64,
            },
            Packed {
                chunks: Vec<u128>,
                len: u64,
                seq: u64,
            },
            Here {
                chunks: Vec<u128>,
                len: u64,
            },
            Slice {
                blob: u128,
                total: u64,
                at: u64,
                len: u64,
            },
        }
        #[derive(serde::Serialize)]
        enum PlainNode {
            Leaf { entries: Vec<(Vec<u8>, PlainValue)> },
        }
        let plain = PlainNode::Leaf {
            entries: entries
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::Inline(b) => PlainValue::Inline(b.clone()),
                        Value::External {
                            chunks,
                            len,
                            packed: Some(Packed::Here),
                            ..
                        } => PlainValue::Here {
                            chunks: chunks.iter().map(|c| c.0).collect(),
                            len: *len,
                        },
                        Value::External {
                            chunks,
                            len,
                            packed: Some(Packed::In(seq)),
                            ..
                        } => PlainValue::Packed {
                            chunks: chunks.iter().map(|c| c.0).collect(),
                            len: *len,
                            seq: *seq,
                        },
                        Value::External {
                            chunks,
                            len,
                            blocks: false,
                            ..
                        } => PlainValue::External {
                            chunks: chunks.iter().map(|c| c.0).collect(),
                            len: *len,
                        },
                        Value::External {
                            chunks,
                            len,
                            blocks: true,
                            ..
                        } => PlainValue::Blocks {
                            chunks: chunks.iter().map(|c| c.0).collect(),
                            len: *len,
                        },
                        Value::Slice {
                            blob,
                            total,
                            at,
                            len,
                        } => PlainValue::Slice {
                            blob: blob.0,
                            total: *total,
                            at: *at,
                            len: *len,
                        },
                    };
                    (k.clone(), v)
                })
                .collect(),
        };
        postcard::to_stdvec(&plain).expect("encode")
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Inline),
            (proptest::collection::vec(any::<u128>(), 0..4), any::<u64>())
                .prop_map(|(ids, len)| ext(&ids, len)),
            (any::<u128>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
                |(blob, total, at, len)| {
                    let at = at % (total / 2 + 1);
                    Value::Slice {
                        blob: BlobId(blob),
                        total,
                        at,
                        len: len % (total - at).saturating_add(1),
                    }
                }
            ),
        ]
    }

    #[derive(Debug, Clone)]
    enum Step {
        Put(Vec<u8>, Value),
        Remove(usize),
        Split(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (proptest::collection::vec(any::<u8>(), 0..40), value())
                .prop_map(|(k, v)| Step::Put(k, v)),
            2 => any::<usize>().prop_map(Step::Remove),
            1 => any::<usize>().prop_map(Step::Split),
        ]
    }

    #[test]
    fn values_packed_here_take_the_seq_of_the_record_they_come_in() {
        let here = Value::External {
            chunks: vec![BlobId(5)],
            len: 9,
            blocks: true,
            packed: Some(Packed::Here),
        };
        let leaf = Leaf::from_entries([(&b"a"[..], &ext(&[1], 3)), (&b"b"[..], &here)]);
        assert!(leaf.has_here());
        let bytes = leaf.payload().to_vec();
        assert!(
            Leaf::parse_in(&bytes, None).is_none(),
            "outside a record it means nothing"
        );
        let read = Leaf::parse_in(&bytes, Some(77)).expect("in record 77");
        assert!(!read.has_here());
        assert_eq!(read.value(0), ext(&[1], 3));
        assert_eq!(
            read.value(1),
            Value::External {
                chunks: vec![BlobId(5)],
                len: 9,
                blocks: true,
                packed: Some(Packed::In(77)),
            }
        );
        // Its stored form now names record 77 itself (what GC writes out).
        let again = Leaf::parse_in(read.payload(), None).expect("resolved form");
        assert_eq!(again, read);
    }

    proptest! {
        /// Every edit keeps the buffer equal to postcard's encoding of the
        /// same entries, and a parse of it gives the same leaf back.
        #[test]
        fn edits_match_a_sorted_vector_and_the_stored_format(steps in proptest::collection::vec(step(), 0..200)) {
            let mut leaf = Leaf::new();
            let mut model: Vec<(Vec<u8>, Value)> = Vec::new();
            for s in steps {
                match s {
                    Step::Put(k, v) => {
                        match (leaf.search(&k), model.binary_search_by(|(mk, _)| mk.as_slice().cmp(&k))) {
                            (Ok(i), Ok(j)) => { prop_assert_eq!(i, j); leaf.replace(i, &v); model[j].1 = v; }
                            (Err(i), Err(j)) => { prop_assert_eq!(i, j); leaf.insert(i, &k, &v); model.insert(j, (k, v)); }
                            (a, b) => prop_assert!(false, "search disagrees: {:?} {:?}", a, b),
                        }
                    }
                    Step::Remove(i) if !model.is_empty() => {
                        let i = i % model.len();
                        leaf.remove(i);
                        model.remove(i);
                    }
                    Step::Split(at) => {
                        let at = at % (model.len() + 1);
                        let right = leaf.split_off(at);
                        let mright = model.split_off(at);
                        let want = postcard_of(&mright);
                        prop_assert_eq!(right.payload(), want.as_slice());
                        leaf = Leaf::joined(&leaf, &right);
                        model.extend(mright);
                    }
                    Step::Remove(_) => {}
                }
                let want = postcard_of(&model);
                prop_assert_eq!(leaf.payload(), want.as_slice());
            }
            prop_assert_eq!(leaf.len(), model.len());
            for (i, (k, v)) in model.iter().enumerate() {
                prop_assert_eq!(leaf.key(i), k.as_slice());
                prop_assert_eq!(&leaf.value(i), v);
            }
            let back = Leaf::parse(leaf.payload()).expect("parses");
            prop_assert_eq!(back, leaf);
        }

        /// Damaged or random bytes are refused or parsed, never a panic; a
        /// parsed leaf re-encodes to the same bytes.
        #[test]
        fn any_bytes_parse_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(leaf) = Leaf::parse(&bytes) {
                prop_assert_eq!(leaf.payload(), bytes.as_slice());
                for i in 0..leaf.len() {
                    let _ = leaf.value(i);
                }
            }
        }
    }

    #[test]
    fn a_slice_that_ends_past_its_blob_is_damage() {
        let slice = |at, len| Value::Slice {
            blob: BlobId(3),
            total: 100,
            at,
            len,
        };
        let good = Leaf::from_entries([(&b"k"[..], &slice(40, 60))]);
        let parsed = Leaf::parse(&good.data).expect("a slice to the blob's end");
        assert_eq!(parsed.value(0), slice(40, 60));
        assert_eq!(parsed.value(0).blobs(), &[BlobId(3)]);
        let bad = Leaf::from_entries([(&b"k"[..], &slice(41, 60))]);
        assert!(Leaf::parse(&bad.data).is_none());
        let wrapping = Leaf::from_entries([(&b"k"[..], &slice(u64::MAX, 2))]);
        assert!(Leaf::parse(&wrapping.data).is_none());
    }

    #[test]
    fn counts_past_one_varint_byte_shift_the_entries() {
        let mut leaf = Leaf::new();
        let mut model = Vec::new();
        for i in 0..300u32 {
            let k = i.to_be_bytes().to_vec();
            let v = Value::Inline(vec![i as u8; (i % 7) as usize]);
            leaf.insert(leaf.len(), &k, &v);
            model.push((k, v));
        }
        assert_eq!(leaf.payload(), postcard_of(&model).as_slice());
        for _ in 0..200 {
            leaf.remove(0);
            model.remove(0);
        }
        assert_eq!(leaf.payload(), postcard_of(&model).as_slice());
        assert_eq!(leaf.inline(0), Some(&[200u8; 4][..]));
    }

    #[test]
    fn overlong_and_overflowing_varints_are_damage() {
        // A u32 variant tag of six bytes, and a u64 length of eleven.
        assert!(Leaf::parse(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0]).is_none());
        let mut b = vec![0, 1, 1, b'k', 0];
        b.extend([0xff; 10]);
        b.push(0x01);
        assert!(Leaf::parse(&b).is_none());
    }
}
