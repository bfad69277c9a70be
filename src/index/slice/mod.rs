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
        self.present.try_push(position).expect("positions rise");
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
            self.unparsed.try_push(position).expect("positions rise");
            return;
        };
        self.scratch.clear();
        if !extract::terms(self.linktype, value, &mut self.scratch) {
            self.unparsed.try_push(position).expect("positions rise");
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
        let postings = (0..terms)
            .map(|id| {
                let positions =
                    &self.grouped[self.starts[id] as usize..self.starts[id + 1] as usize];
                let mut bitmap = RoaringBitmap::from_sorted_iter(positions.iter().copied())
                    .expect("a term's positions rise");
                bitmap.optimize();
                (self.terms[id], bitmap)
            })
            .collect();

        let mut present = std::mem::take(&mut self.present);
        present.optimize();
        let mut unparsed = std::mem::take(&mut self.unparsed);
        unparsed.optimize();

        self.records = 0;
        self.bytes = 0;
        self.min_key = u64::MAX;
        self.max_key = 0;
        self.ids.clear();
        self.terms.clear();
        self.last.clear();
        self.hits.clear();
        Slice {
            meta,
            present,
            unparsed,
            postings,
            blocks: std::mem::take(&mut self.blocks),
        }
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

// The binary form ([`Slice::encode`]). Bitmaps are in roaring's portable
// serialization, the format the C, Java and Go implementations share.
const MAGIC: &[u8; 4] = b"FCIX";
const VERSION: u8 = 1;

const TAG_ETHERTYPE: u8 = 0;
const TAG_VLAN: u8 = 1;
const TAG_IPV4: u8 = 2;
const TAG_IPV6: u8 = 3;
const TAG_IPPROTO: u8 = 4;
const TAG_TCP_PORT: u8 = 5;
const TAG_UDP_PORT: u8 = 6;
const TAG_SCTP_PORT: u8 = 7;

/// A term as its kind and its value, read as an unsigned number (network
/// byte order): the order of [`Term`] is the order of these pairs.
fn split_term(term: &Term) -> (u8, u128) {
    match *term {
        Term::EtherType(v) => (TAG_ETHERTYPE, v.into()),
        Term::Vlan(v) => (TAG_VLAN, v.into()),
        Term::Ipv4(a) => (TAG_IPV4, u32::from_be_bytes(a).into()),
        Term::Ipv6(a) => (TAG_IPV6, u128::from_be_bytes(a)),
        Term::IpProto(p) => (TAG_IPPROTO, p.into()),
        Term::TcpPort(p) => (TAG_TCP_PORT, p.into()),
        Term::UdpPort(p) => (TAG_UDP_PORT, p.into()),
        Term::SctpPort(p) => (TAG_SCTP_PORT, p.into()),
    }
}

fn join_term(kind: u8, value: u128) -> Result<Term, SliceFormatError> {
    let wide = |_| SliceFormatError(format!("a term of kind {kind} wider than its kind"));
    Ok(match kind {
        TAG_ETHERTYPE => Term::EtherType(value.try_into().map_err(wide)?),
        TAG_VLAN => Term::Vlan(value.try_into().map_err(wide)?),
        TAG_IPV4 => Term::Ipv4(u32::try_from(value).map_err(wide)?.to_be_bytes()),
        TAG_IPV6 => Term::Ipv6(value.to_be_bytes()),
        TAG_IPPROTO => Term::IpProto(value.try_into().map_err(wide)?),
        TAG_TCP_PORT => Term::TcpPort(value.try_into().map_err(wide)?),
        TAG_UDP_PORT => Term::UdpPort(value.try_into().map_err(wide)?),
        TAG_SCTP_PORT => Term::SctpPort(value.try_into().map_err(wide)?),
        kind => return Err(SliceFormatError(format!("unknown term kind {kind}"))),
    })
}

/// How postings are written.
#[derive(Clone, Copy)]
enum PostingForm {
    /// Each in whichever form is smaller (what [`Slice::encode`] writes).
    Smaller,
    /// Only as roaring bitmaps, only as lists: the alternatives measured.
    #[cfg(test)]
    Roaring,
    #[cfg(test)]
    List,
}

impl PostingForm {
    /// Whether `bitmap` is written as a list.
    fn as_list(self, bitmap: &RoaringBitmap) -> bool {
        match self {
            PostingForm::Smaller => {
                let roaring = 1 + bitmap.serialized_size();
                // A list entry takes a byte at least: a dense posting is a
                // bitmap without counting.
                bitmap.len() < roaring as u64 && list_size(bitmap) < roaring
            }
            #[cfg(test)]
            PostingForm::Roaring => false,
            #[cfg(test)]
            PostingForm::List => true,
        }
    }
}

fn varint_size(v: u64) -> usize {
    match v {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        0x4000..=0x1f_ffff => 3,
        0x20_0000..=0xfff_ffff => 4,
        _ => 5,
    }
}

/// LEB128: 7 bits a byte, least significant first, bit 7 set on all but
/// the last byte.
fn write_varint(mut v: u128, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The list form: the count (shifted left, bit 0 set: a bitmap's form
/// byte is 0), the first position, then each gap less one (consecutive
/// positions cost a zero byte), all LEB128.
fn write_list(bitmap: &RoaringBitmap, out: &mut Vec<u8>) {
    write_varint(u128::from(bitmap.len()) << 1 | 1, out);
    let mut next = 0;
    for p in bitmap {
        write_varint((p - next).into(), out);
        next = p + 1;
    }
}

fn list_size(bitmap: &RoaringBitmap) -> usize {
    let mut size = varint_size(bitmap.len() << 1 | 1);
    let mut next = 0;
    for p in bitmap {
        size += varint_size((p - next).into());
        next = p + 1;
    }
    size
}

/// A cursor over the bytes being decoded; every read is checked.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], SliceFormatError> {
        if self.bytes.len() < n {
            return Err(SliceFormatError(format!("truncated in {what}")));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], SliceFormatError> {
        Ok(self.take(N, what)?.try_into().expect("N bytes taken"))
    }

    fn u8(&mut self, what: &str) -> Result<u8, SliceFormatError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, SliceFormatError> {
        self.array(what).map(u32::from_be_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, SliceFormatError> {
        self.array(what).map(u64::from_be_bytes)
    }

    fn bitmap(&mut self, what: &str) -> Result<RoaringBitmap, SliceFormatError> {
        // roaring's deserializer checks what it reads (sorted keys and
        // values, cardinalities, runs) and fails on the end of its input;
        // its allocations are bounded by what one container can hold.
        let bitmap = RoaringBitmap::deserialize_from(&mut self.bytes)
            .map_err(|e| SliceFormatError(format!("{what}: {e}")))?;
        bitmap
            .internal_validate()
            .map_err(|e| SliceFormatError(format!("{what}: {e}")))?;
        Ok(bitmap)
    }

    fn varint128(&mut self, what: &str) -> Result<u128, SliceFormatError> {
        let mut value = 0u128;
        for shift in (0..128).step_by(7) {
            let byte = self.u8(what)?;
            let bits = u128::from(byte & 0x7f);
            if shift == 126 && bits > 3 {
                break;
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(SliceFormatError(format!("{what}: a number past 128 bits")))
    }

    fn varint(&mut self, what: &str) -> Result<u32, SliceFormatError> {
        let mut value = 0u64;
        for shift in (0..35).step_by(7) {
            let byte = self.u8(what)?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return u32::try_from(value)
                    .map_err(|_| SliceFormatError(format!("{what}: a number past 32 bits")));
            }
        }
        Err(SliceFormatError(format!("{what}: a number past 32 bits")))
    }

    /// A posting in either form.
    fn posting(&mut self) -> Result<RoaringBitmap, SliceFormatError> {
        const WHAT: &str = "a posting list";
        let form = self.varint128(WHAT)?;
        if form == 0 {
            return self.bitmap("a posting");
        }
        if form & 1 == 0 {
            return Err(SliceFormatError(format!("posting form {form}")));
        }
        let count = form >> 1;
        // Each entry takes a byte at least: a count larger than what is
        // left is refused before any work.
        if count > self.bytes.len() as u128 {
            return Err(SliceFormatError(format!("truncated in {WHAT}")));
        }
        let mut bitmap = RoaringBitmap::new();
        let mut next = 0u64;
        for _ in 0..count {
            let position = next + u64::from(self.varint(WHAT)?);
            let position = u32::try_from(position)
                .map_err(|_| SliceFormatError(format!("{WHAT}: a position past 32 bits")))?;
            bitmap
                .try_push(position)
                .expect("gaps keep positions rising");
            next = u64::from(position) + 1;
        }
        bitmap.optimize();
        Ok(bitmap)
    }
}

fn write_bitmap(bitmap: &RoaringBitmap, out: &mut Vec<u8>) {
    bitmap
        .serialize_into(out)
        .expect("writing to a Vec cannot fail");
}

impl Slice {
    /// The index record's key: partition (u32) then base offset (u64), both
    /// big-endian, so a compacted index topic keeps one slice per start.
    pub fn record_key(&self) -> [u8; 12] {
        let mut key = [0u8; 12];
        key[..4].copy_from_slice(&(self.meta.partition as u32).to_be_bytes());
        key[4..].copy_from_slice(&(self.meta.base_offset as u64).to_be_bytes());
        key
    }

    /// The index record's value (versioned binary form), appended to `out`:
    ///
    /// ```text
    /// "FCIX" version=1
    /// partition i32, base_offset i64, end_offset i64, records u32, bytes u64, linktype u32
    /// has_keys u8 (0 or 1), then min_key u64 and max_key u64 when 1
    /// present, unparsed: bitmaps
    /// kinds u8, then per kind of term that occurs, in increasing order:
    ///     kind u8, terms n, then n times, in increasing order: term, posting
    /// ```
    ///
    /// Fixed-width integers are big-endian; n, term and the numbers of a
    /// list are LEB128. Kinds number from 0 in the order of [`Term`]'s
    /// variants. A term is its value as an unsigned number (an address or
    /// port read in network byte order) less the previous term's plus one
    /// (the first: less 0), so that the terms of a network or a port range,
    /// close together, take a byte or two. A posting is either a 0 byte then
    /// a bitmap in roaring's portable serialization, or a list: the count
    /// shifted left with bit 0 set, the first position, then each following
    /// gap less one. Each posting takes the smaller form: lists for the
    /// many rare terms (a port seen a few times), bitmaps for the common.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.encode_with(out, PostingForm::Smaller);
    }

    fn encode_with(&self, out: &mut Vec<u8>, form: PostingForm) {
        let meta = &self.meta;
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&meta.partition.to_be_bytes());
        out.extend_from_slice(&meta.base_offset.to_be_bytes());
        out.extend_from_slice(&meta.end_offset.to_be_bytes());
        out.extend_from_slice(&meta.records.to_be_bytes());
        out.extend_from_slice(&meta.bytes.to_be_bytes());
        out.extend_from_slice(&meta.linktype.to_be_bytes());
        match (meta.min_key, meta.max_key) {
            (Some(min), Some(max)) => {
                out.push(1);
                out.extend_from_slice(&min.to_be_bytes());
                out.extend_from_slice(&max.to_be_bytes());
            }
            _ => out.push(0),
        }
        // Block ranges: 0 for a block without keys, else its smallest key
        // above the slice's, plus one, then its spread.
        write_varint(self.blocks.len() as u128, out);
        let floor = meta.min_key.unwrap_or(0);
        for block in &self.blocks {
            match block {
                None => write_varint(0, out),
                Some((lo, hi)) => {
                    write_varint(u128::from(lo.saturating_sub(floor)) + 1, out);
                    write_varint(u128::from(hi.saturating_sub(*lo)), out);
                }
            }
        }
        write_bitmap(&self.present, out);
        write_bitmap(&self.unparsed, out);
        let mut kinds: Vec<(u8, u32)> = Vec::with_capacity(8);
        for term in self.postings.keys() {
            let kind = split_term(term).0;
            match kinds.last_mut() {
                Some((last, count)) if *last == kind => *count += 1,
                _ => kinds.push((kind, 1)),
            }
        }
        out.push(kinds.len() as u8);
        let mut postings = self.postings.iter();
        for (kind, count) in kinds {
            out.push(kind);
            write_varint(count.into(), out);
            let mut next = 0;
            for (term, bitmap) in postings.by_ref().take(count as usize) {
                let value = split_term(term).1;
                write_varint(value - next, out);
                next = value.wrapping_add(1);
                if form.as_list(bitmap) {
                    write_list(bitmap, out);
                } else {
                    out.push(0);
                    write_bitmap(bitmap, out);
                }
            }
        }
    }

    /// Reads what [`encode`](Self::encode) wrote. Anything else, truncated
    /// or inconsistent (a position outside the slice, a posting holding a
    /// position that is not present or is unparsed, terms out of order,
    /// bytes left over), is refused.
    pub fn decode(bytes: &[u8]) -> Result<Slice, SliceFormatError> {
        let mut r = Reader { bytes };
        let head = Self::read_head(&mut r)?;
        Self::read_rest(r, head)
    }

    /// What a slice covers and its block times, without its postings: a
    /// query decodes the rest only of the slices its window reaches.
    pub fn decode_head(bytes: &[u8]) -> Result<SliceHead, SliceFormatError> {
        Self::read_head(&mut Reader { bytes })
    }

    fn read_head(r: &mut Reader<'_>) -> Result<SliceHead, SliceFormatError> {
        if r.take(4, "the magic")? != MAGIC {
            return Err(SliceFormatError("not an index slice (bad magic)".into()));
        }
        let version = r.u8("the version")?;
        if version != VERSION {
            return Err(SliceFormatError(format!(
                "version {version}, this fastcapa reads {VERSION}"
            )));
        }
        const META: &str = "the slice's header";
        let partition = r.u32(META)? as i32;
        let base_offset = r.u64(META)? as i64;
        let end_offset = r.u64(META)? as i64;
        let records = r.u32(META)?;
        let value_bytes = r.u64(META)?;
        let linktype = r.u32(META)?;
        let (min_key, max_key) = match r.u8(META)? {
            0 => (None, None),
            1 => (Some(r.u64(META)?), Some(r.u64(META)?)),
            flag => return Err(SliceFormatError(format!("key flag {flag}"))),
        };
        if base_offset < 0 || end_offset < base_offset {
            return Err(SliceFormatError(format!(
                "offsets {base_offset}..{end_offset}"
            )));
        }
        if min_key > max_key {
            return Err(SliceFormatError("min_key above max_key".into()));
        }
        // Positions are u32 and below end - base.
        let span = (end_offset - base_offset) as u64;
        if span > 1 << 32 {
            return Err(SliceFormatError(format!("a span of {span} offsets")));
        }
        let block_count = r.varint("the block count")?;
        if u64::from(block_count) > span.div_ceil(u64::from(BLOCK)) {
            return Err(SliceFormatError(format!(
                "{block_count} blocks in {span} offsets"
            )));
        }
        let mut blocks = Vec::with_capacity(block_count as usize);
        for _ in 0..block_count {
            let lo = r.varint128("a block's time")?;
            if lo == 0 {
                blocks.push(None);
                continue;
            }
            let spread = r.varint128("a block's time")?;
            let (Some(min), Some(max)) = (min_key, max_key) else {
                return Err(SliceFormatError(
                    "a block time in a slice without keys".into(),
                ));
            };
            let lo = u64::try_from(lo - 1)
                .ok()
                .and_then(|lo| min.checked_add(lo))
                .filter(|&lo| lo <= max)
                .ok_or_else(|| SliceFormatError("a block's time outside the slice's".into()))?;
            let hi = u64::try_from(spread)
                .ok()
                .and_then(|spread| lo.checked_add(spread))
                .filter(|&hi| hi <= max)
                .ok_or_else(|| SliceFormatError("a block's time outside the slice's".into()))?;
            blocks.push(Some((lo, hi)));
        }
        Ok(SliceHead {
            meta: SliceMeta {
                partition,
                base_offset,
                end_offset,
                records,
                bytes: value_bytes,
                min_key,
                max_key,
                linktype,
            },
            blocks,
        })
    }

    fn read_rest(mut r: Reader<'_>, head: SliceHead) -> Result<Slice, SliceFormatError> {
        let SliceHead { meta, blocks } = head;
        let records = meta.records;
        let span = (meta.end_offset - meta.base_offset) as u64;
        let present = r.bitmap("present")?;
        if present.len() != u64::from(records) {
            return Err(SliceFormatError(format!(
                "{} records present, {records} counted",
                present.len()
            )));
        }
        if present.max().is_some_and(|max| u64::from(max) >= span) {
            return Err(SliceFormatError("a position past the slice's end".into()));
        }
        let unparsed = r.bitmap("unparsed")?;
        if !unparsed.is_subset(&present) {
            return Err(SliceFormatError("an unparsed position not present".into()));
        }

        let kinds = r.u8("the kind count")?;
        let mut postings = BTreeMap::new();
        let mut previous_kind = None;
        for _ in 0..kinds {
            let kind = r.u8("a term kind")?;
            if previous_kind.is_some_and(|p| p >= kind) {
                return Err(SliceFormatError(format!("term kind {kind} out of order")));
            }
            previous_kind = Some(kind);
            let count = r.varint("a term count")?;
            let mut next = Some(0u128);
            for _ in 0..count {
                let delta = r.varint128("a term")?;
                // Past the largest value of 128 bits, or of the kind.
                let value = next
                    .and_then(|n| n.checked_add(delta))
                    .ok_or_else(|| SliceFormatError("a term past 128 bits".into()))?;
                next = value.checked_add(1);
                let term = join_term(kind, value)?;
                let bitmap = r.posting()?;
                if bitmap.is_empty()
                    || !bitmap.is_subset(&present)
                    || !bitmap.is_disjoint(&unparsed)
                {
                    return Err(SliceFormatError(format!(
                        "the posting of {term:?} is empty, or holds a position absent or unparsed"
                    )));
                }
                postings.insert(term, bitmap);
            }
        }
        if !r.bytes.is_empty() {
            return Err(SliceFormatError(format!(
                "{} bytes after the last posting",
                r.bytes.len()
            )));
        }
        Ok(Slice {
            meta,
            present,
            unparsed,
            postings,
            blocks,
        })
    }

    /// The positions of the blocks whose time reaches `start..=end` (and
    /// of blocks without keys, which hold only unparsed records), or `None`
    /// when the block ranges are not known.
    pub fn in_window(&self, start: u64, end: u64) -> Option<RoaringBitmap> {
        if self.blocks.is_empty() {
            return None;
        }
        let mut window = RoaringBitmap::new();
        for (i, block) in self.blocks.iter().enumerate() {
            let reaches = block.is_none_or(|(lo, hi)| hi >= start && lo <= end);
            if reaches {
                let first = i as u32 * BLOCK;
                window.insert_range(first..first.saturating_add(BLOCK));
            }
        }
        // Blocks past the last keyed one hold no keys either.
        let tail = self.blocks.len() as u32 * BLOCK;
        window.insert_range(tail..);
        Some(window)
    }

    /// The offset of a position.
    pub fn offset_of(&self, position: u32) -> i64 {
        self.meta.base_offset + i64::from(position)
    }

    /// Postings of every term of one kind within `[low, high]` (inclusive),
    /// e.g. all IPv4 addresses of a network.
    pub fn range(&self, low: Term, high: Term) -> impl Iterator<Item = (&Term, &RoaringBitmap)> {
        self.postings.range(low..=high)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use Term::*;

    fn key(us: u64) -> [u8; 8] {
        us.to_be_bytes()
    }

    /// Ethernet, IPv4, UDP from 10.0.0.`host` port `sport` to 10.0.0.100:53.
    fn udp_frame(host: u8, sport: u16) -> Vec<u8> {
        let mut f = vec![0xff; 12];
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&[10, 0, 0, host, 10, 0, 0, 100]);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&[0, 53, 0, 8, 0, 0]);
        f
    }

    fn bitmap(positions: &[u32]) -> RoaringBitmap {
        positions.iter().copied().collect()
    }

    #[test]
    fn blocks_keep_each_blocks_time_and_a_window_reads_only_those_it_reaches() {
        let mut b = SliceBuilder::new(0, 0, 1);
        // Three blocks: times 1000.., 5000.., and a third without keys.
        for i in 0..BLOCK {
            b.push(
                i64::from(i),
                Some(&key(1000 + u64::from(i))),
                Some(&udp_frame(1, 53)),
            );
        }
        for i in BLOCK..2 * BLOCK {
            b.push(
                i64::from(i),
                Some(&key(5000 + u64::from(i))),
                Some(&udp_frame(1, 53)),
            );
        }
        b.push(i64::from(2 * BLOCK), None, Some(&udp_frame(1, 53)));
        let slice = b.finish();
        // The last block has no key: it is not listed.
        assert_eq!(slice.blocks.len(), 2);
        assert_eq!(slice.blocks[0], Some((1000, 1000 + u64::from(BLOCK) - 1)));
        assert_eq!(round_trip(&slice), slice);
        let window = slice.in_window(6000, 6100).expect("blocks known");
        assert!(!window.contains(0) && !window.contains(BLOCK - 1));
        assert!(window.contains(BLOCK) && window.contains(2 * BLOCK - 1));
        // The block without keys is read whatever the window.
        assert!(window.contains(2 * BLOCK));
        let none = slice.in_window(100, 200).expect("blocks known");
        assert!(!none.contains(0) && !none.contains(BLOCK));
    }

    #[test]
    fn a_block_time_outside_the_slice_is_refused() {
        let mut b = SliceBuilder::new(0, 0, 1);
        b.push(0, Some(&key(7)), Some(&udp_frame(1, 53)));
        let mut slice = b.finish();
        slice.blocks[0] = Some((7, 9));
        let mut bytes = Vec::new();
        slice.encode(&mut bytes);
        assert!(Slice::decode(&bytes).is_err());
    }

    fn built() -> Slice {
        let mut b = SliceBuilder::new(3, 1000, 1);
        b.push(1000, Some(&key(50)), Some(&udp_frame(1, 5000)));
        b.push(1001, Some(&key(40)), Some(&udp_frame(2, 53)));
        // A gap (offsets 1002..1004 are gone: compaction, markers).
        b.push(1005, Some(&key(60)), Some(&udp_frame(1, 5001)));
        b.push(1006, None, Some(&udp_frame(1, 5000)));
        b.push(1007, Some(&[1, 2, 3]), Some(&udp_frame(1, 5000)));
        b.push(1008, Some(&key(10)), None);
        assert_eq!(b.len(), 6);
        assert_eq!(b.next_offset(), 1009);
        b.finish()
    }

    #[test]
    fn a_slice_holds_positions_per_term() {
        let s = built();
        assert_eq!(
            s.meta,
            SliceMeta {
                partition: 3,
                base_offset: 1000,
                end_offset: 1009,
                records: 6,
                bytes: 5 * 42,
                // The record without a value still has its key counted.
                min_key: Some(10),
                max_key: Some(60),
                linktype: 1,
            }
        );
        assert_eq!(s.present, bitmap(&[0, 1, 5, 6, 7, 8]));
        // No key, a key not 8 bytes long, no value.
        assert_eq!(s.unparsed, bitmap(&[6, 7, 8]));
        assert_eq!(s.postings[&EtherType(0x0800)], bitmap(&[0, 1, 5]));
        assert_eq!(s.postings[&Ipv4([10, 0, 0, 1])], bitmap(&[0, 5]));
        assert_eq!(s.postings[&Ipv4([10, 0, 0, 100])], bitmap(&[0, 1, 5]));
        // Port 53 is both source and destination at position 1: once.
        assert_eq!(s.postings[&UdpPort(53)], bitmap(&[0, 1, 5]));
        assert_eq!(s.postings[&UdpPort(5000)], bitmap(&[0]));
        assert_eq!(s.postings.len(), 8);
        let ports: Vec<_> = s
            .range(UdpPort(0), UdpPort(1023))
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(ports, [UdpPort(53)]);
        assert_eq!(s.offset_of(5), 1005);
        assert_eq!(s.record_key()[..4], 3u32.to_be_bytes());
        assert_eq!(s.record_key()[4..], 1000u64.to_be_bytes());
    }

    #[test]
    fn unparsed_link_types_and_empty_slices() {
        let mut b = SliceBuilder::new(0, 7, 113);
        assert!(b.is_empty());
        assert_eq!(b.next_offset(), 7);
        b.push(9, Some(&key(1)), Some(&udp_frame(1, 1)));
        let s = b.finish();
        assert_eq!(s.unparsed, bitmap(&[2]));
        assert!(s.postings.is_empty());

        let s = SliceBuilder::new(1, 0, 1).finish();
        assert_eq!(s.meta.records, 0);
        assert_eq!(
            (s.meta.end_offset, s.meta.min_key, s.meta.max_key),
            (0, None, None)
        );
        assert_eq!(round_trip(&s), s);
    }

    #[test]
    fn restarting_keeps_nothing_of_the_previous_slice() {
        let mut b = SliceBuilder::new(0, 0, 1);
        b.push(0, Some(&key(5)), Some(&udp_frame(1, 1)));
        b.push(1, None, None);
        let first = b.finish_and_restart(b.next_offset());
        assert_eq!(first.meta.end_offset, 2);
        b.push(2, Some(&key(9)), Some(&udp_frame(2, 2)));
        let second = b.finish();
        assert_eq!(second.meta.base_offset, 2);
        assert_eq!(second.meta.records, 1);
        assert_eq!(
            (second.meta.min_key, second.meta.max_key),
            (Some(9), Some(9))
        );
        assert_eq!(second.present, bitmap(&[0]));
        assert!(second.unparsed.is_empty());
        assert!(!second.postings.contains_key(&Ipv4([10, 0, 0, 1])));
        assert_eq!(second.postings[&Ipv4([10, 0, 0, 2])], bitmap(&[0]));
    }

    #[test]
    #[should_panic(expected = "pushed after")]
    fn offsets_must_rise() {
        let mut b = SliceBuilder::new(0, 10, 1);
        b.push(11, None, None);
        b.push(11, None, None);
    }

    fn round_trip(s: &Slice) -> Slice {
        let mut bytes = Vec::new();
        s.encode(&mut bytes);
        Slice::decode(&bytes).unwrap()
    }

    #[test]
    fn encode_then_decode() {
        let s = built();
        let mut bytes = vec![0xaa];
        s.encode(&mut bytes);
        assert_eq!(bytes[0], 0xaa, "encode appends");
        assert_eq!(Slice::decode(&bytes[1..]), Ok(s.clone()));
        // Every cut is refused.
        for cut in 0..bytes.len() - 1 {
            assert!(Slice::decode(&bytes[1..1 + cut]).is_err(), "cut at {cut}");
        }
        // And so is anything after the end.
        bytes.push(0);
        assert!(Slice::decode(&bytes[1..]).is_err());
    }

    #[test]
    fn each_posting_takes_the_smaller_form() {
        let mut b = SliceBuilder::new(0, 0, 1);
        for i in 0..3000u16 {
            let frame = udp_frame(1 + (i % 200) as u8, 1000 + i);
            b.push(i64::from(i), Some(&key(u64::from(i))), Some(&frame));
        }
        let s = b.finish();
        // In every position: one run, a bitmap of a few bytes.
        assert!(!PostingForm::Smaller.as_list(&s.postings[&EtherType(0x0800)]));
        // A port seen once, a host every 200th record: lists.
        assert!(PostingForm::Smaller.as_list(&s.postings[&UdpPort(1000)]));
        assert!(PostingForm::Smaller.as_list(&s.postings[&Ipv4([10, 0, 0, 7])]));
        let sizes = [
            PostingForm::Roaring,
            PostingForm::List,
            PostingForm::Smaller,
        ]
        .map(|form| {
            let mut out = Vec::new();
            s.encode_with(&mut out, form);
            assert_eq!(Slice::decode(&out).as_ref(), Ok(&s));
            out.len()
        });
        assert!(sizes[2] < sizes[0].min(sizes[1]), "{sizes:?}");
    }

    fn encoded(s: &Slice) -> Vec<u8> {
        let mut bytes = Vec::new();
        s.encode(&mut bytes);
        bytes
    }

    #[test]
    fn inconsistent_slices_are_refused() {
        let good = built();
        let refused = |change: &dyn Fn(&mut Slice), why: &str| {
            let mut s = good.clone();
            change(&mut s);
            let e = Slice::decode(&encoded(&s)).unwrap_err();
            assert!(e.0.contains(why), "{e} lacks {why:?}");
        };
        refused(&|s| s.meta.records += 1, "counted");
        refused(
            &|s| s.meta.end_offset = s.meta.base_offset + 8,
            "past the slice's end",
        );
        refused(&|s| s.meta.end_offset = s.meta.base_offset - 1, "offsets");
        refused(&|s| s.meta.base_offset = -1, "offsets");
        refused(
            &|s| s.meta.end_offset = s.meta.base_offset + (1 << 32) + 1,
            "span",
        );
        refused(&|s| s.meta.min_key = Some(70), "min_key");
        refused(
            &|s| {
                s.unparsed.insert(2);
            },
            "unparsed position not present",
        );
        refused(
            &|s| drop(s.postings.insert(TcpPort(1), bitmap(&[2]))),
            "absent or unparsed",
        );
        refused(
            &|s| drop(s.postings.insert(TcpPort(1), bitmap(&[7]))),
            "absent or unparsed",
        );
        refused(
            &|s| drop(s.postings.insert(TcpPort(1), bitmap(&[]))),
            "empty",
        );

        let bytes = encoded(&good);
        let mut wrong = bytes.clone();
        wrong[0] = b'X';
        assert!(Slice::decode(&wrong).unwrap_err().0.contains("magic"));
        let mut wrong = bytes.clone();
        wrong[4] = 2;
        assert!(Slice::decode(&wrong).unwrap_err().0.contains("version 2"));

        // Terms written by hand after the header of a slice without any.
        let mut s = good.clone();
        s.postings.clear();
        let mut header = Vec::new();
        s.encode(&mut header);
        assert_eq!(header.pop(), Some(0), "no kinds");
        let decode = |terms: &[u8]| Slice::decode(&[header.as_slice(), terms].concat());
        // Position 0 as a list (count 1 shifted, bit 0 set; then 0), and
        // position 1 as a bitmap.
        let list = [3, 0];
        let mut roaring = vec![0];
        write_bitmap(&bitmap(&[1]), &mut roaring);
        let tcp = 5;
        let two_ports = [&[1, tcp, 2, 80][..], &list, &[0], &roaring].concat();
        let s = decode(&two_ports).unwrap();
        assert_eq!(s.postings.len(), 2);
        assert_eq!(s.postings[&TcpPort(80)], bitmap(&[0]));
        assert_eq!(s.postings[&TcpPort(81)], bitmap(&[1]));

        let refused = |terms: &[u8], why: &str| {
            let e = decode(terms).unwrap_err();
            assert!(e.0.contains(why), "{e} lacks {why:?}");
        };
        // Kinds out of order: IPv4 0.0.0.1, then EtherType 0x0800.
        refused(
            &[&[2, 2, 1, 1][..], &list, &[0, 1, 0x80, 0x10], &list].concat(),
            "out of order",
        );
        refused(&[&[1, 9, 1, 0][..], &list].concat(), "unknown term kind 9");
        // Port 70000.
        refused(
            &[&[1, tcp, 1, 0xf0, 0xa2, 0x04][..], &list].concat(),
            "wider",
        );
        refused(&[1, tcp, 1, 80, 2, 0], "posting form 2");
        refused(
            &[&[1, tcp, 1][..], &[0xff; 19], &[1]].concat(),
            "past 128 bits",
        );
        // IPv6 ffff...ffff, then one more.
        let last = [&[0xff; 18][..], &[3]].concat();
        refused(
            &[&[1, 3, 2][..], &last, &list, &[0], &list].concat(),
            "past 128 bits",
        );
        // A list of 3 positions with 2 bytes left.
        refused(&[1, tcp, 1, 80, 7, 0, 0], "truncated");
        // Position 2^32 - 1, then 2^32.
        refused(
            &[1, tcp, 1, 80, 5, 0xff, 0xff, 0xff, 0xff, 0x0f, 0],
            "past 32 bits",
        );
        // An empty list.
        refused(&[1, tcp, 1, 80, 1], "empty");
        // Position 6 is unparsed, 2 absent.
        refused(&[1, tcp, 1, 80, 3, 6], "absent or unparsed");
        refused(&[1, tcp, 1, 80, 3, 2], "absent or unparsed");
    }

    fn any_term() -> impl Strategy<Value = Term> {
        prop_oneof![
            any::<u16>().prop_map(EtherType),
            (0u16..4096).prop_map(Vlan),
            any::<[u8; 4]>().prop_map(Ipv4),
            any::<[u8; 16]>().prop_map(Ipv6),
            any::<u8>().prop_map(IpProto),
            any::<u16>().prop_map(TcpPort),
            any::<u16>().prop_map(UdpPort),
            any::<u16>().prop_map(SctpPort),
        ]
    }

    /// A valid slice: positions below a span that may pass 65536 (so
    /// bitmaps have several containers), dense runs and sparse points.
    fn any_slice() -> impl Strategy<Value = Slice> {
        let positions = (1u32..200_000).prop_flat_map(|span| {
            (
                Just(span),
                prop::collection::btree_set(0..span, 0..300),
                prop::option::of((0..span, 0u32..10_000)),
            )
        });
        (
            positions,
            any::<i32>(),
            0i64..1 << 40,
            any::<u64>(),
            any::<u32>(),
            prop::option::of((any::<u64>(), any::<u64>())),
            prop::collection::vec((any_term(), any::<u64>()), 0..40),
            any::<u64>(),
        )
            .prop_map(
                |((span, points, run), partition, base, bytes, linktype, keys, terms, seed)| {
                    let mut present: RoaringBitmap = points.into_iter().collect();
                    if let Some((start, len)) = run {
                        present.insert_range(start..(start + len).min(span));
                    }
                    let all: Vec<u32> = present.iter().collect();
                    let mut pick = seed;
                    let mut chosen = |salt: u64| {
                        all.iter()
                            .copied()
                            .filter(|p| {
                                pick = pick
                                    .wrapping_mul(6364136223846793005)
                                    .wrapping_add(salt | 1);
                                // Some terms in every position, most in few.
                                salt & 3 == 0 || (pick >> 60) == u64::from(*p % 3)
                            })
                            .collect::<RoaringBitmap>()
                    };
                    let unparsed = chosen(1);
                    let mut postings = BTreeMap::new();
                    for (term, salt) in terms {
                        let mut posting = chosen(salt) - &unparsed;
                        posting.optimize();
                        if !posting.is_empty() {
                            postings.insert(term, posting);
                        }
                    }
                    let (min_key, max_key) = match keys {
                        Some((a, b)) => (Some(a.min(b)), Some(a.max(b))),
                        None => (None, None),
                    };
                    Slice {
                        meta: SliceMeta {
                            partition,
                            base_offset: base,
                            end_offset: base + i64::from(span),
                            records: present.len() as u32,
                            bytes,
                            min_key,
                            max_key,
                            linktype,
                        },
                        present,
                        unparsed,
                        postings,
                        blocks: Vec::new(),
                    }
                },
            )
    }

    proptest! {
        // 256 cases unless PROPTEST_CASES says otherwise; no regression files
        // written into the tree.
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn encode_decode_is_identity(s in any_slice()) {
            prop_assert_eq!(round_trip(&s), s);
        }

        #[test]
        fn decode_never_panics_on_random_bytes(
            bytes in prop::collection::vec(any::<u8>(), 0..400),
            header in any::<bool>(),
        ) {
            let mut bytes = bytes;
            if header {
                bytes.splice(0..0, b"FCIX\x01".iter().copied());
            }
            let _ = Slice::decode(&bytes);
        }

        /// A valid encoding damaged: cut, or bytes overwritten. Refused or,
        /// when the change still makes a valid slice, decoded; never a panic.
        #[test]
        fn decode_never_panics_on_damaged_slices(
            s in any_slice(),
            cut in any::<prop::sample::Index>(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        ) {
            let mut bytes = encoded(&s);
            for (at, byte) in edits {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            let _ = Slice::decode(&bytes);
            let _ = Slice::decode(&bytes[..cut.index(bytes.len())]);
        }
    }

    /// Test traffic shaped like support/fastcapa_support/capgen.py (the
    /// same mix of kinds per flow: IPv4 UDP and TCP, ICMP, IPv6 UDP, ARP,
    /// VLAN-tagged TCP), with many more hosts and random source ports, and
    /// each record from a flow drawn at random (no locality to help).
    struct Traffic {
        rng: u64,
        flows: Vec<Flow>,
        imix: bool,
    }

    struct Flow {
        kind: u64,
        client: u32,
        server: u32,
        sport: u16,
        dport: u16,
    }

    impl Traffic {
        fn new(flows: usize, clients: u32, servers: u32, imix: bool) -> Traffic {
            let mut t = Traffic {
                rng: 0x2545_f491_4f6c_dd1d,
                flows: Vec::new(),
                imix,
            };
            for i in 0..flows as u64 {
                let flow = Flow {
                    kind: i % 10,
                    client: 0x0a01_0000 + (t.next() % u64::from(clients)) as u32,
                    server: 0x0a64_0000 + (t.next() % u64::from(servers)) as u32,
                    sport: 1024 + (t.next() % 64512) as u16,
                    dport: [53, 80, 443, 9000][(t.next() % 4) as usize],
                };
                t.flows.push(flow);
            }
            t
        }

        fn next(&mut self) -> u64 {
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        /// The next frame, into `f`.
        fn frame(&mut self, f: &mut Vec<u8>) {
            let size = if self.imix {
                // 64, 576 and 1500 bytes at 7:4:1.
                match self.next() % 12 {
                    0..=6 => 64,
                    7..=10 => 576,
                    _ => 1500,
                }
            } else {
                64
            };
            let pick = (self.next() % self.flows.len() as u64) as usize;
            let flow = &self.flows[pick];
            f.clear();
            f.extend_from_slice(&[2, 0, 0, 1, 0, 1, 2, 0, 0, 0]);
            f.extend_from_slice(&(flow.client as u16).to_be_bytes());
            if flow.kind == 9 {
                f.extend_from_slice(&[0x81, 0x00, 0x00, 100 + (flow.client % 7) as u8]);
            }
            let (c, s) = (flow.client.to_be_bytes(), flow.server.to_be_bytes());
            let ports = |f: &mut Vec<u8>| {
                f.extend_from_slice(&flow.sport.to_be_bytes());
                f.extend_from_slice(&flow.dport.to_be_bytes());
            };
            match flow.kind {
                8 => {
                    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
                    f.extend_from_slice(&[2, 0, 0, 0, c[2], c[3]]);
                    f.extend_from_slice(&c);
                    f.extend_from_slice(&[0; 6]);
                    f.extend_from_slice(&s);
                }
                6 | 7 => {
                    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 0, 17, 64]);
                    f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                    f.extend_from_slice(&c);
                    f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                    f.extend_from_slice(&s);
                    ports(f);
                }
                _ => {
                    let proto = match flow.kind {
                        0..=2 => 17,
                        5 => 1,
                        _ => 6,
                    };
                    f.extend_from_slice(&[
                        0x08, 0x00, 0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0,
                    ]);
                    f.extend_from_slice(&c);
                    f.extend_from_slice(&s);
                    if proto == 1 {
                        f.extend_from_slice(&[8, 0, 0, 0]);
                    } else {
                        ports(f);
                    }
                }
            }
            let len = f.len().max(size);
            f.resize(len, 0x5a);
        }
    }

    fn zstd3(bytes: &[u8]) -> Option<usize> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new("zstd")
            .args(["-3", "-q", "-c"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let mut stdin = child.stdin.take()?;
        let input = bytes.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let output = child.wait_with_output().ok()?;
        writer.join().ok()?.ok()?;
        output.status.success().then_some(output.stdout.len())
    }

    /// This thread's CPU time, in ns: wall time counts the time other
    /// processes held the core (the machine is shared while measuring).
    fn cpu_ns() -> u128 {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a valid timespec for the call to fill.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        t.tv_sec as u128 * 1_000_000_000 + t.tv_nsec as u128
    }

    /// CPU time since `start` (from [`cpu_ns`]).
    fn since(start: u128) -> u128 {
        cpu_ns() - start
    }

    /// Frames one after the other in one buffer, as a fetched batch of
    /// records holds them.
    struct Frames {
        bytes: Vec<u8>,
        ends: Vec<usize>,
    }

    impl Frames {
        fn generate(traffic: &mut Traffic, count: usize) -> Frames {
            let mut frames = Frames {
                bytes: Vec::new(),
                ends: Vec::new(),
            };
            let mut frame = Vec::new();
            for _ in 0..count {
                traffic.frame(&mut frame);
                frames.bytes.extend_from_slice(&frame);
                frames.ends.push(frames.bytes.len());
            }
            frames
        }

        fn get(&self, i: usize) -> &[u8] {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            &self.bytes[start..self.ends[i]]
        }
    }

    /// Pushes records `range` as slices of `per_slice`; the slices and the
    /// nanoseconds spent in push and in finish.
    fn build(frames: &Frames, per_slice: usize) -> (Vec<Slice>, u128, u128) {
        let (mut push_ns, mut finish_ns) = (0, 0);
        let mut slices = Vec::new();
        let mut builder = SliceBuilder::new(0, 0, 1);
        let total = frames.ends.len();
        for base in (0..total).step_by(per_slice) {
            let end = (base + per_slice).min(total);
            let start = cpu_ns();
            for i in base..end {
                builder.push(i as i64, Some(&key(i as u64)), Some(frames.get(i)));
            }
            push_ns += since(start);
            let start = cpu_ns();
            slices.push(builder.finish_and_restart(end as i64));
            finish_ns += since(start);
        }
        (slices, push_ns, finish_ns)
    }

    /// The figures of "The index: what a slice holds" in docs/dump.md:
    ///
    ///     cargo test --release --lib index::slice::tests::measure -- --ignored --nocapture
    ///
    /// INDEX_FLOWS, INDEX_CLIENTS and INDEX_RECORDS change the traffic
    /// (5000 flows among 2000 client hosts and 64 servers, 2^18 records).
    /// Times are the best of three runs.
    #[test]
    #[ignore = "a measurement, not a check: run by hand"]
    fn measure() {
        let env = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let flows = env("INDEX_FLOWS", 5000);
        let clients = env("INDEX_CLIENTS", 2000) as u32;
        let total = env("INDEX_RECORDS", 1 << 18);
        let with_zstd = zstd3(b"probe").is_some();
        println!(
            "{flows} flows, {clients} clients, 64 servers; {total} records; zstd: {with_zstd}"
        );
        let mut sizes_table = vec![
            "| traffic | records per slice | terms per slice | roaring | list | smaller | roaring, zstd | list, zstd | smaller, zstd |".to_string(),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|".to_string(),
        ];
        let mut times_table = vec![
            "| traffic | records per slice | push ns/record | finish ns/record | encode ns/record | decode ns/record |".to_string(),
            "|---|---:|---:|---:|---:|---:|".to_string(),
        ];
        let pct = |bytes: usize, of: usize| format!("{:.2} %", 100.0 * bytes as f64 / of as f64);
        let per_record = |ns: u128| format!("{:.0}", ns as f64 / total as f64);
        for imix in [false, true] {
            let name = if imix { "IMIX" } else { "64 B" };
            let frames = Frames::generate(&mut Traffic::new(flows, clients, 64, imix), total);
            let topic_bytes = frames.bytes.len() + 70 * total;
            for per_slice in [1024, 4096, 16384, 65536] {
                let mut best = (u128::MAX, u128::MAX, u128::MAX, u128::MAX);
                let mut slices = Vec::new();
                for _ in 0..3 {
                    let (built, push_ns, finish_ns) = build(&frames, per_slice);
                    let mut out = Vec::new();
                    let (mut encode_ns, mut decode_ns) = (0, 0);
                    for slice in &built {
                        out.clear();
                        let start = cpu_ns();
                        slice.encode(&mut out);
                        encode_ns += since(start);
                        let start = cpu_ns();
                        let back = Slice::decode(&out).unwrap();
                        decode_ns += since(start);
                        assert_eq!(&back, slice);
                    }
                    best = (
                        best.0.min(push_ns),
                        best.1.min(finish_ns),
                        best.2.min(encode_ns),
                        best.3.min(decode_ns),
                    );
                    slices = built;
                }
                let forms = [
                    PostingForm::Roaring,
                    PostingForm::List,
                    PostingForm::Smaller,
                ];
                let (mut sizes, mut zsizes) = ([0usize; 3], [0usize; 3]);
                let mut out = Vec::new();
                for slice in &slices {
                    for (k, form) in forms.into_iter().enumerate() {
                        out.clear();
                        slice.encode_with(&mut out, form);
                        sizes[k] += out.len();
                        if with_zstd {
                            zsizes[k] += zstd3(&out).unwrap();
                        }
                    }
                }
                let terms: usize = slices.iter().map(|s| s.postings.len()).sum();
                sizes_table.push(format!(
                    "| {name} | {per_slice} | {} | {} | {} | {} | {} | {} | {} |",
                    terms / slices.len(),
                    pct(sizes[0], topic_bytes),
                    pct(sizes[1], topic_bytes),
                    pct(sizes[2], topic_bytes),
                    pct(zsizes[0], topic_bytes),
                    pct(zsizes[1], topic_bytes),
                    pct(zsizes[2], topic_bytes),
                ));
                times_table.push(format!(
                    "| {name} | {per_slice} | {} | {} | {} | {} |",
                    per_record(best.0),
                    per_record(best.1),
                    per_record(best.2),
                    per_record(best.3),
                ));
            }
        }
        println!("{}\n\n{}", sizes_table.join("\n"), times_table.join("\n"));
        // Extraction alone, for its share of push.
        let frames = Frames::generate(&mut Traffic::new(flows, clients, 64, true), total);
        let mut out = Vec::new();
        let (mut best, mut count) = (u128::MAX, 0);
        for _ in 0..3 {
            count = 0;
            let start = cpu_ns();
            for i in 0..total {
                out.clear();
                extract::terms(1, frames.get(i), &mut out);
                count += out.len();
            }
            best = best.min(since(start));
        }
        println!(
            "extract alone: {} ns/record, {:.1} terms/record",
            per_record(best),
            count as f64 / total as f64
        );
        // The same on 1024 frames read over and over: the work without the
        // cache misses of reading each frame's first bytes.
        let mut best = u128::MAX;
        for _ in 0..3 {
            let start = cpu_ns();
            for i in 0..total {
                out.clear();
                extract::terms(1, frames.get(i % 1024), &mut out);
            }
            best = best.min(since(start));
        }
        println!(
            "extract alone, frames in cache: {} ns/record",
            per_record(best)
        );
    }
}
