//! The slice's bytes: the index record's format, written and read back
//! (refusing damaged records, never panicking).

use super::*;

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
pub(super) enum PostingForm {
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
    pub(super) fn as_list(self, bitmap: &RoaringBitmap) -> bool {
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
    write_list_of(bitmap.len(), bitmap.iter(), out);
}

/// The list form of `count` rising positions.
fn write_list_of(count: u64, positions: impl Iterator<Item = u32>, out: &mut Vec<u8>) {
    write_varint(u128::from(count) << 1 | 1, out);
    let mut next = 0;
    for p in positions {
        write_varint((p - next).into(), out);
        next = p + 1;
    }
}

fn list_size(bitmap: &RoaringBitmap) -> usize {
    list_size_of(bitmap.len(), bitmap.iter())
}

fn list_size_of(count: u64, positions: impl Iterator<Item = u32>) -> usize {
    let mut size = varint_size(count << 1 | 1);
    let mut next = 0;
    for p in positions {
        size += varint_size((p - next).into());
        next = p + 1;
    }
    size
}

/// At most `bitmap.serialized_size()` of the optimized bitmap of rising
/// `positions`, without building it: per container (positions sharing
/// their top 16 bits) the smaller of its array or bitmap form and its run
/// form, under the smaller of roaring's two header layouts.
pub(super) fn serialized_size_floor(positions: &[u32]) -> usize {
    let (mut containers, mut data) = (0usize, 0usize);
    let mut i = 0;
    while i < positions.len() {
        let high = positions[i] >> 16;
        let (mut card, mut runs, mut previous) = (0usize, 0usize, None::<u32>);
        while let Some(&p) = positions.get(i).filter(|&&p| p >> 16 == high) {
            if previous.is_none_or(|q| p != q + 1) {
                runs += 1;
            }
            previous = Some(p);
            card += 1;
            i += 1;
        }
        let dense = if card <= 4096 { 2 * card } else { 8192 };
        data += dense.min(2 + 4 * runs);
        containers += 1;
    }
    let header = (8 + 8 * containers).min(4 + 4 * containers + containers.div_ceil(8));
    header + data
}

/// A posting from its rising positions, in the form
/// [`PostingForm::Smaller`] picks. Most postings are lists (the many rare
/// terms); a bitmap is built only when the list might not be the smaller.
fn write_posting_of(positions: &[u32], out: &mut Vec<u8>) {
    let count = positions.len() as u64;
    // As `as_list`: a list when shorter than the bitmap and counting fewer
    // entries than its bytes; the floor stands for the bitmap's size.
    let roaring_floor = 1 + serialized_size_floor(positions);
    if count < roaring_floor as u64
        && list_size_of(count, positions.iter().copied()) < roaring_floor
    {
        write_list_of(count, positions.iter().copied(), out);
        return;
    }
    let mut bitmap =
        RoaringBitmap::from_sorted_iter(positions.iter().copied()).expect("positions rise");
    bitmap.optimize();
    write_posting(&bitmap, PostingForm::Smaller, out);
}

/// A posting in the form `form` picks for it.
fn write_posting(bitmap: &RoaringBitmap, form: PostingForm, out: &mut Vec<u8>) {
    if form.as_list(bitmap) {
        write_list(bitmap, out);
    } else {
        out.push(0);
        write_bitmap(bitmap, out);
    }
}

/// How errors in a posting's list form name it.
const LIST: &str = "a posting list";

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

    /// A posting's form: `None` for a bitmap (which follows), else the
    /// count of a list's entries, refused before any work when the bytes
    /// left cannot hold them (each takes a byte at least).
    fn posting_form(&mut self) -> Result<Option<u128>, SliceFormatError> {
        let form = self.varint128(LIST)?;
        if form == 0 {
            return Ok(None);
        }
        if form & 1 == 0 {
            return Err(SliceFormatError(format!("posting form {form}")));
        }
        let count = form >> 1;
        if count > self.bytes.len() as u128 {
            return Err(SliceFormatError(format!("truncated in {LIST}")));
        }
        Ok(Some(count))
    }

    /// A posting in either form.
    fn posting(&mut self) -> Result<RoaringBitmap, SliceFormatError> {
        let Some(count) = self.posting_form()? else {
            return self.bitmap("a posting");
        };
        let mut bitmap = RoaringBitmap::new();
        let mut next = 0u64;
        for _ in 0..count {
            let position = next + u64::from(self.varint(LIST)?);
            let position = u32::try_from(position)
                .map_err(|_| SliceFormatError(format!("{LIST}: a position past 32 bits")))?;
            // Gaps keep positions rising: `insert` appends (`try_push`
            // would scan a bitmap container for its largest value first).
            bitmap.insert(position);
            next = u64::from(position) + 1;
        }
        bitmap.optimize();
        Ok(bitmap)
    }

    /// Reads past a posting in either form without building it: a list's
    /// entries are only counted, a bitmap is deserialized (bounds and
    /// structure checked) and dropped.
    fn skip_posting(&mut self) -> Result<(), SliceFormatError> {
        let Some(count) = self.posting_form()? else {
            return self.bitmap("a posting").map(drop);
        };
        for _ in 0..count {
            // An entry ends at its first byte with bit 7 clear, within the
            // five bytes a 32-bit number takes.
            match self.bytes.iter().take(5).position(|b| b & 0x80 == 0) {
                Some(last) => self.bytes = &self.bytes[last + 1..],
                None if self.bytes.len() < 5 => {
                    return Err(SliceFormatError(format!("truncated in {LIST}")))
                }
                None => return Err(SliceFormatError(format!("{LIST}: a number past 32 bits"))),
            }
        }
        Ok(())
    }
}

/// The slice's header: meta and block times ([`Slice::encode`]).
fn write_head(meta: &SliceMeta, blocks: &[Option<(u64, u64)>], out: &mut Vec<u8>) {
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
    write_varint(blocks.len() as u128, out);
    let floor = meta.min_key.unwrap_or(0);
    for block in blocks {
        match block {
            None => write_varint(0, out),
            Some((lo, hi)) => {
                write_varint(u128::from(lo.saturating_sub(floor)) + 1, out);
                write_varint(u128::from(hi.saturating_sub(*lo)), out);
            }
        }
    }
}

/// The postings part of a slice's bytes: how many kinds of term, then per
/// kind its byte, its term count, and its terms in order (each less the
/// previous plus one), each followed by its posting, which `write` writes.
fn write_postings<'t, P>(
    postings: impl Iterator<Item = (&'t Term, P)> + Clone,
    mut write: impl FnMut(P, &mut Vec<u8>),
    out: &mut Vec<u8>,
) {
    let mut kinds: Vec<(u8, u32)> = Vec::with_capacity(8);
    for (term, _) in postings.clone() {
        let kind = split_term(term).0;
        match kinds.last_mut() {
            Some((last, count)) if *last == kind => *count += 1,
            _ => kinds.push((kind, 1)),
        }
    }
    out.push(kinds.len() as u8);
    let mut postings = postings;
    for (kind, count) in kinds {
        out.push(kind);
        write_varint(count.into(), out);
        let mut next = 0;
        for (term, posting) in postings.by_ref().take(count as usize) {
            let value = split_term(term).1;
            write_varint(value - next, out);
            next = value.wrapping_add(1);
            write(posting, out);
        }
    }
}

pub(super) fn write_bitmap(bitmap: &RoaringBitmap, out: &mut Vec<u8>) {
    bitmap
        .serialize_into(out)
        .expect("writing to a Vec cannot fail");
}

impl SliceMeta {
    /// The index record's key: partition (u32) then base offset (u64), both
    /// big-endian, so a compacted index topic keeps one slice per start.
    pub fn record_key(&self) -> [u8; 12] {
        let mut key = [0u8; 12];
        key[..4].copy_from_slice(&(self.partition as u32).to_be_bytes());
        key[4..].copy_from_slice(&(self.base_offset as u64).to_be_bytes());
        key
    }
}

impl Slice {
    /// The index record's key ([`SliceMeta::record_key`]).
    pub fn record_key(&self) -> [u8; 12] {
        self.meta.record_key()
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

    pub(super) fn encode_with(&self, out: &mut Vec<u8>, form: PostingForm) {
        write_head(&self.meta, &self.blocks, out);
        write_bitmap(&self.present, out);
        write_bitmap(&self.unparsed, out);
        let in_form = |bitmap: &RoaringBitmap, out: &mut Vec<u8>| write_posting(bitmap, form, out);
        write_postings(self.postings.iter(), in_form, out);
    }

    /// Reads what [`encode`](Self::encode) wrote. Anything else, truncated
    /// or inconsistent (a position outside the slice, a posting holding a
    /// position that is not present or is unparsed, terms out of order,
    /// bytes left over), is refused.
    pub fn decode(bytes: &[u8]) -> Result<Slice, SliceFormatError> {
        Self::decode_for(bytes, |_| true)
    }

    /// As [`Slice::decode`], keeping only the postings of the terms `wanted`
    /// takes: the others are read past, not built (a query needs the
    /// postings of its own terms; building all of them was most of the
    /// cost of reading an index). What is read past is checked for its
    /// bounds, not for its positions.
    pub fn decode_for(
        bytes: &[u8],
        wanted: impl FnMut(&Term) -> bool,
    ) -> Result<Slice, SliceFormatError> {
        let mut r = Reader { bytes };
        let head = Self::read_head(&mut r)?;
        Self::read_rest(r, head, wanted)
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

    fn read_rest(
        mut r: Reader<'_>,
        head: SliceHead,
        mut wanted: impl FnMut(&Term) -> bool,
    ) -> Result<Slice, SliceFormatError> {
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
                if !wanted(&term) {
                    r.skip_posting()?;
                    continue;
                }
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

impl SliceBuilder {
    /// Writes the slice built so far to `out`, byte for byte what
    /// `finish_and_restart(base_offset).encode(out)` writes, and starts the
    /// next slice at `base_offset`; returns the slice's meta and how many
    /// of its records are unparsed. Postings written as lists are written
    /// from their positions: no bitmap is built for them.
    pub fn encode_and_restart(&mut self, base_offset: i64, out: &mut Vec<u8>) -> (SliceMeta, u64) {
        let meta = self.meta_and_grouped_hits();
        self.present.optimize();
        self.unparsed.optimize();
        write_head(&meta, &self.blocks, out);
        write_bitmap(&self.present, out);
        write_bitmap(&self.unparsed, out);
        let unparsed = self.unparsed.len();
        // The terms in order, as the postings of a slice are.
        let mut order: Vec<usize> = (0..self.terms.len()).collect();
        order.sort_unstable_by_key(|&id| self.terms[id]);
        let postings = order
            .iter()
            .map(|&id| (&self.terms[id], self.positions(id)));
        write_postings(postings, write_posting_of, out);
        self.empty();
        self.base_offset = base_offset;
        self.next_offset = base_offset;
        (meta, unparsed)
    }
}
