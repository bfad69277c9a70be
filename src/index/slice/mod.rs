//! A slice: the index of consecutive offsets of one partition, built record
//! by record, written as one record of the index topic.
//!
//! API contract (the indexer and the dump's planner build on it):
//!
//! - A record's **position** in a slice is `offset - base_offset` (u32):
//!   offsets may have gaps (transaction markers, compaction), positions keep
//!   them, so a position maps back to its offset without a table.
//! - `present`: the positions that hold a record.
//! - `unparsed`: positions the extractor could not read (a link type it does
//!   not parse) or whose key is not 8 bytes or whose value is null: a query
//!   reads them whatever its filter (they are never in a posting).
//! - `postings`: for each term that occurs, the positions holding it.
//! - `min_key`/`max_key`: smallest and largest 8-byte key (u64, big-endian)
//!   among the slice's records; `None` when no record has one.
//! - `blocks`: the same, per block of [`BLOCK`] positions (block `i` holds
//!   positions `i * BLOCK ..`), `None` for a block without keys: a window
//!   reads the blocks its time reaches, not whole slices. Empty when not
//!   known (every block then counts as reaching any window).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};

use roaring::RoaringBitmap;

use super::extract;
use super::term::Term;

/// What a slice covers, without its postings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceMeta {
    pub partition: i32,
    /// First offset covered.
    pub base_offset: i64,
    /// One past the last offset covered.
    pub end_offset: i64,
    /// Records in the slice (`present`'s cardinality).
    pub records: u32,
    /// Bytes of the records' values.
    pub bytes: u64,
    pub min_key: Option<u64>,
    pub max_key: Option<u64>,
    /// The link type the values were parsed as.
    pub linktype: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    pub meta: SliceMeta,
    pub present: RoaringBitmap,
    pub unparsed: RoaringBitmap,
    pub postings: BTreeMap<Term, RoaringBitmap>,
    /// Smallest and largest key per block of [`BLOCK`] positions.
    pub blocks: Vec<Option<(u64, u64)>>,
}

/// Records per slice unless the operator says otherwise: the size that
/// gives the smallest index (docs/dump.md, "The index: what a slice holds").
pub const DEFAULT_SLICE_RECORDS: u32 = 65_536;

/// Positions per block of a slice's time ranges: a window's edges cost at
/// most this many records read on either side, and the ranges 2 to 6 bytes
/// per block.
pub const BLOCK: u32 = 1024;

/// A slice's header: what it covers and its block times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceHead {
    pub meta: SliceMeta,
    pub blocks: Vec<Option<(u64, u64)>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed index record: {0}")]
pub struct SliceFormatError(pub String);

/// Builds one slice; records are pushed in increasing offset order.
///
/// Each record's terms are looked up in a hash map to a dense term id, and
/// (id, position) appended to one list; [`finish`](Self::finish) groups the
/// list by id (a counting sort: positions stay in order within a term) and
/// makes each group a bitmap. No allocation per record once the buffers
/// have grown, and [`finish_and_restart`](Self::finish_and_restart) keeps
/// them for the next slice.
pub struct SliceBuilder {
    partition: i32,
    base_offset: i64,
    linktype: u32,
    next_offset: i64,
    records: u32,
    bytes: u64,
    min_key: u64,
    max_key: u64,
    present: RoaringBitmap,
    unparsed: RoaringBitmap,
    /// Term → id, the index into `terms` and `last`.
    ids: HashMap<Term, u32, TermHashState>,
    terms: Vec<Term>,
    /// The last position each term id was seen at: a term a frame yields
    /// twice (a port both source and destination) is kept once.
    last: Vec<u32>,
    /// (term id, position), in push order.
    hits: Vec<(u32, u32)>,
    /// The extractor's output for one frame.
    scratch: Vec<Term>,
    /// finish's grouping: where each id's positions start, and the positions.
    starts: Vec<u32>,
    grouped: Vec<u32>,
    blocks: Vec<Option<(u64, u64)>>,
}

impl SliceBuilder {
    pub fn new(partition: i32, base_offset: i64, linktype: u32) -> SliceBuilder {
        SliceBuilder {
            partition,
            base_offset,
            linktype,
            next_offset: base_offset,
            records: 0,
            bytes: 0,
            min_key: u64::MAX,
            max_key: 0,
            present: RoaringBitmap::new(),
            unparsed: RoaringBitmap::new(),
            ids: HashMap::with_hasher(TermHashState::new()),
            terms: Vec::new(),
            last: Vec::new(),
            hits: Vec::new(),
            scratch: Vec::with_capacity(32),
            starts: Vec::new(),
            grouped: Vec::new(),
            blocks: Vec::new(),
        }
    }

    /// Adds the record at `offset` (> the last one pushed, >= base_offset).
    ///
    /// # Panics
    ///
    /// When `offset` is below the next offset or more than `u32::MAX` past
    /// `base_offset`: positions must rise and fit a bitmap.
    pub fn push(&mut self, offset: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
        assert!(
            offset >= self.next_offset,
            "offset {offset} pushed after {}",
            self.next_offset - 1
        );
        let position =
            u32::try_from(offset - self.base_offset).expect("a slice spans at most 2^32 offsets");
        self.next_offset = offset + 1;
        self.records += 1;
        // Positions rise (checked above): `insert` appends. Not `try_push`,
        // whose check finds a bitmap container's largest value by scanning
        // it from the end: a tenth of the indexer's CPU.
        self.present.insert(position);
        let key = match key {
            Some(&[a, b, c, d, e, f, g, h]) => Some(u64::from_be_bytes([a, b, c, d, e, f, g, h])),
            _ => None,
        };
        if let Some(key) = key {
            self.min_key = self.min_key.min(key);
            self.max_key = self.max_key.max(key);
            let block = (position / BLOCK) as usize;
            if self.blocks.len() <= block {
                self.blocks.resize(block + 1, None);
            }
            let range = &mut self.blocks[block];
            *range = Some(range.map_or((key, key), |(lo, hi)| (lo.min(key), hi.max(key))));
        }
        if let Some(value) = value {
            self.bytes += value.len() as u64;
        }
        let (Some(_), Some(value)) = (key, value) else {
            self.unparsed.insert(position);
            return;
        };
        self.scratch.clear();
        if !extract::terms(self.linktype, value, &mut self.scratch) {
            self.unparsed.insert(position);
            return;
        }
        for &term in &self.scratch {
            let next_id = self.terms.len() as u32;
            let id = *self.ids.entry(term).or_insert(next_id);
            if id == next_id {
                self.terms.push(term);
                self.last.push(position);
            } else if self.last[id as usize] == position {
                continue;
            } else {
                self.last[id as usize] = position;
            }
            self.hits.push((id, position));
        }
    }

    /// Records pushed so far.
    pub fn len(&self) -> u32 {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The offset after the last one pushed (base_offset when empty).
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// The first offset this slice covers.
    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub fn finish(mut self) -> Slice {
        self.build()
    }

    /// Finishes the slice built so far and starts the next one at
    /// `base_offset` (usually [`next_offset`](Self::next_offset)), keeping
    /// this builder's buffers.
    pub fn finish_and_restart(&mut self, base_offset: i64) -> Slice {
        let slice = self.build();
        self.base_offset = base_offset;
        self.next_offset = base_offset;
        slice
    }

    /// The slice so far; leaves the builder empty (buffers kept).
    fn build(&mut self) -> Slice {
        let meta = self.meta_and_grouped_hits();
        let postings = (0..self.terms.len())
            .map(|id| {
                let mut bitmap =
                    RoaringBitmap::from_sorted_iter(self.positions(id).iter().copied())
                        .expect("a term's positions rise");
                bitmap.optimize();
                (self.terms[id], bitmap)
            })
            .collect();
        let mut present = std::mem::take(&mut self.present);
        present.optimize();
        let mut unparsed = std::mem::take(&mut self.unparsed);
        unparsed.optimize();
        let blocks = std::mem::take(&mut self.blocks);
        self.empty();
        Slice {
            meta,
            present,
            unparsed,
            postings,
            blocks,
        }
    }

    /// The first half of finishing a slice: its meta, and the hits grouped
    /// by term id (see [`positions`](Self::positions)).
    fn meta_and_grouped_hits(&mut self) -> SliceMeta {
        let has_keys = self.min_key <= self.max_key;
        let meta = SliceMeta {
            partition: self.partition,
            base_offset: self.base_offset,
            end_offset: self.next_offset,
            records: self.records,
            bytes: self.bytes,
            min_key: has_keys.then_some(self.min_key),
            max_key: has_keys.then_some(self.max_key),
            linktype: self.linktype,
        };
        // Group the hits by term id, positions in push (so rising) order.
        let terms = self.terms.len();
        self.starts.clear();
        self.starts.resize(terms + 1, 0);
        for &(id, _) in &self.hits {
            self.starts[id as usize + 1] += 1;
        }
        for id in 0..terms {
            self.starts[id + 1] += self.starts[id];
        }
        self.grouped.clear();
        self.grouped.resize(self.hits.len(), 0);
        // `last` is free now: it becomes each id's write cursor.
        self.last.copy_from_slice(&self.starts[..terms]);
        for &(id, position) in &self.hits {
            let cursor = &mut self.last[id as usize];
            self.grouped[*cursor as usize] = position;
            *cursor += 1;
        }
        meta
    }

    /// Term `id`'s positions, rising (once the hits are grouped).
    fn positions(&self, id: usize) -> &[u32] {
        &self.grouped[self.starts[id] as usize..self.starts[id + 1] as usize]
    }

    /// Forgets the slice's records, keeping the buffers.
    fn empty(&mut self) {
        self.records = 0;
        self.bytes = 0;
        self.min_key = u64::MAX;
        self.max_key = 0;
        self.present.clear();
        self.unparsed.clear();
        self.blocks.clear();
        self.ids.clear();
        self.terms.clear();
        self.last.clear();
        self.hits.clear();
    }
}

/// A seeded multiply-fold hash (as foldhash and ahash do it) for the term
/// map: SipHash costs more than the rest of a push, and the seed, random per
/// process, keeps crafted traffic from choosing colliding terms.
#[derive(Clone)]
struct TermHashState {
    seed: u64,
}

impl TermHashState {
    fn new() -> TermHashState {
        TermHashState {
            seed: RandomState::new().build_hasher().finish() | 1,
        }
    }
}

impl BuildHasher for TermHashState {
    type Hasher = TermHasher;

    #[inline]
    fn build_hasher(&self) -> TermHasher {
        TermHasher(self.seed)
    }
}

struct TermHasher(u64);

impl TermHasher {
    #[inline(always)]
    fn mix(&mut self, word: u64) {
        const MULTIPLIER: u64 = 0x5851_f42d_4c95_7f2d;
        let product = u128::from(self.0 ^ word) * u128::from(MULTIPLIER);
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl Hasher for TermHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.mix(u64::from_le_bytes(chunk.try_into().unwrap()));
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            let mut word = [0u8; 8];
            word[..tail.len()].copy_from_slice(tail);
            // The length tells "ab" from "ab\0".
            self.mix(u64::from_le_bytes(word) ^ ((tail.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }

    #[inline]
    fn write_isize(&mut self, i: isize) {
        self.mix(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // One more round, so the last word reaches every bit hashbrown reads.
        let product = u128::from(self.0) * u128::from(0x9e37_79b9_7f4a_7c15u64);
        (product as u64) ^ ((product >> 64) as u64)
    }
}

mod codec;
#[cfg(test)]
mod tests;
