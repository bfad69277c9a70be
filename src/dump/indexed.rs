//! The dump's use of the index: which offsets of each partition to read.
//!
//! The index topic holds slices (see `crate::index`); each covers
//! consecutive offsets of one partition with their exact capture-time range
//! and which records hold which term. For a query the plan of a partition
//! is a list of offset ranges to read:
//!
//! - of each slice whose time range reaches the window, the records the
//!   filter's predicate may match (all of them without a filter);
//! - every offset no slice covers (a gap, or the end the indexer has not
//!   reached yet), read whole: what the index does not cover is scanned.
//!
//! Slices outside the window are not read at all: their times are exact, so
//! the window needs no search over keys and no margin. Slices written twice
//! (an indexer restarted) or overlapping count as one: coverage is the union
//! of their ranges and the selection the union of their selections.
//! Ranges closer than about one fetch's worth of records are read as one:
//! the broker answers a move with the whole record batch that holds the
//! offset (up to `max.partition.fetch.bytes`), which librdkafka decodes
//! whole, so a second move into the same batch would decode it again.
//! Reading through costs the same bytes once.

use std::collections::BTreeMap;
use std::time::Duration;

use roaring::RoaringBitmap;

use super::kafka::Reader;
use super::DumpError;
use crate::index::plan::Plan;
use crate::index::slice::SliceHead;
use crate::index::Slice;

/// The bytes one fetch brings (librdkafka's `max.partition.fetch.bytes`),
/// and Kafka's overhead per record in a batch, to turn it into records.
const FETCH_BYTES: u64 = 1 << 20;
const RECORD_OVERHEAD: u64 = 70;

/// Offsets between two selected ranges below which they are read as one:
/// about one fetch's worth of the partition's records, from the slices'
/// own counts of records and bytes.
fn read_through(slices: &[&Stored]) -> i64 {
    let records: u64 = slices.iter().map(|s| u64::from(s.head.meta.records)).sum();
    let bytes: u64 = slices.iter().map(|s| s.head.meta.bytes).sum();
    let per_record = bytes.checked_div(records).unwrap_or(0) + RECORD_OVERHEAD;
    (FETCH_BYTES / per_record).clamp(256, 1 << 16) as i64
}

/// What the index says about one partition, for `--explain`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PartExplain {
    /// Slices of the partition in the index (repeats included).
    pub slices: usize,
    /// Of those, slices whose time range reaches the window.
    pub in_window: usize,
    /// Of those, slices with at least one record selected.
    pub selected: usize,
    /// Records the filter's predicate selected in the window's slices.
    pub selected_records: u64,
    /// Offsets the plan reads inside indexed slices (the selected records,
    /// and what lies between those read through).
    pub indexed_reads: u64,
    /// Offsets no slice covers before the end of the index (read whole).
    pub gaps: u64,
    /// The first offset of the end no slice covers, if any.
    pub tail_from: Option<i64>,
}

/// The ranges of one partition to read; the tail (from `tail_from` to the
/// partition's end) is added by the engine once `--from` is found in it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PartPlan {
    pub ranges: Vec<(i64, i64)>,
    pub explain: PartExplain,
}

/// A slice as read from the index topic: its header decoded, the rest
/// decoded only if a query's window reaches it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub head: SliceHead,
    pub record: Vec<u8>,
}

/// The slices of the index topic, by partition of the capture topic.
#[derive(Debug, Default)]
pub struct Catalog {
    pub slices: BTreeMap<i32, Vec<Stored>>,
    /// Index records that could not be read as slices (ignored).
    pub malformed: u64,
    /// Index records of another capture topic (ignored).
    pub foreign: u64,
}

impl Catalog {
    /// Reads the slices of `topic` in the whole index topic (`None` if it
    /// does not exist).
    pub fn read(
        settings: &[(String, String)],
        topic: &str,
        index_topic: &str,
        timeout: Duration,
    ) -> Result<Option<Catalog>, DumpError> {
        let ours = [
            ("enable.partition.eof", "true"),
            ("consume.callback.max.messages", "1024"),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            // The index is read to the end offsets seen at start: no fetch
            // should wait for more.
            ("fetch.wait.max.ms", "1"),
        ];
        let mut reader = match Reader::connect(settings, &ours, &[], index_topic, timeout) {
            Ok(r) => r,
            Err(DumpError::NoTopic(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut catalog = Catalog::default();
        let mut ends = Vec::new();
        for p in 0..reader.partitions.len() {
            let (low, high) = reader.watermarks(p, timeout)?;
            if high > low {
                reader.start(p, low)?;
            }
            ends.push(high);
        }
        for (p, &high) in ends.iter().enumerate() {
            let mut next = 0i64;
            let mut waited = Duration::ZERO;
            while next < high {
                let step = Duration::from_millis(100);
                let (records, signals) =
                    reader.read(p, step, |m| {
                        next = next.max(m.offset() + 1);
                        // The key: partition (4 bytes), base offset (8), topic.
                        if m.key().and_then(|k| k.get(12..)) != Some(topic.as_bytes()) {
                            catalog.foreign += 1;
                            return;
                        }
                        let value = m.value().unwrap_or_default();
                        match Slice::decode_head(value) {
                            Ok(head) => {
                                catalog.slices.entry(head.meta.partition).or_default().push(
                                    Stored {
                                        head,
                                        record: value.to_vec(),
                                    },
                                )
                            }
                            Err(_) => catalog.malformed += 1,
                        }
                    })?;
                if signals.end_at.is_some_and(|at| at >= high) {
                    break;
                }
                if records == 0 {
                    waited += step;
                    if waited > timeout {
                        return Err(DumpError::Kafka(format!(
                            "no answer from {index_topic} partition {} within {} s",
                            reader.partitions[p],
                            timeout.as_secs_f64()
                        )));
                    }
                }
            }
            reader.stop(p);
        }
        for slices in catalog.slices.values_mut() {
            slices.sort_by_key(|s| (s.head.meta.base_offset, s.head.meta.end_offset));
        }
        Ok(Some(catalog))
    }
}

/// Plans one partition holding offsets `low..high` (the end seen at start)
/// for the window `start..=end` (capture µs), a predicate and a link type;
/// `None` when no slice of the partition can be used.
pub fn plan_partition(
    slices: &[Stored],
    low: i64,
    high: i64,
    (start, end): (u64, u64),
    plan: &Plan,
    linktype: u32,
) -> Option<PartPlan> {
    let usable: Vec<&Stored> = slices
        .iter()
        .filter(|s| {
            let meta = &s.head.meta;
            meta.linktype == linktype
                && meta.end_offset > low
                && meta.base_offset < high
                && meta.end_offset > meta.base_offset
        })
        .collect();
    if usable.is_empty() {
        return None;
    }
    let mut explain = PartExplain {
        slices: usable.len(),
        ..PartExplain::default()
    };
    let mut ranges: Vec<(i64, i64)> = Vec::new();
    // Coverage, walked in base-offset order: `covered` is the end of what
    // the slices so far cover (from `low`).
    let mut covered = low;
    for stored in &usable {
        let meta = &stored.head.meta;
        let (base, stop) = (meta.base_offset.max(low), meta.end_offset.min(high));
        if base > covered {
            ranges.push((covered, base));
            explain.gaps += (base - covered) as u64;
        }
        covered = covered.max(stop);
        let in_window = match (meta.min_key, meta.max_key) {
            (Some(min), Some(max)) => max >= start && min <= end,
            // No record with a usable key: the scan would read (and count)
            // them whatever the window, so the plan reads them too.
            _ => true,
        };
        if !in_window {
            continue;
        }
        explain.in_window += 1;
        let Ok(slice) = Slice::decode_for(&stored.record, |term| plan.wants(term)) else {
            // Its header read, the rest not: read what it covers whole.
            ranges.push((base, stop));
            continue;
        };
        let slice = &slice;
        let mut selected = plan.select(slice);
        // Of a slice the window reaches, the blocks whose own times reach it.
        if (start, end) != (0, u64::MAX) {
            if let Some(window) = slice.in_window(start, end) {
                selected &= window;
            }
        }
        if selected.is_empty() {
            continue;
        }
        explain.selected += 1;
        explain.selected_records += selected.len();
        push_selection(&mut ranges, slice, &selected, low, high);
    }
    if covered < high {
        explain.tail_from = Some(covered);
    }
    ranges.sort_unstable();
    let ranges = coalesce(ranges, read_through(&usable));
    explain.indexed_reads = total(&ranges).saturating_sub(explain.gaps);
    Some(PartPlan { ranges, explain })
}

fn total(ranges: &[(i64, i64)]) -> u64 {
    ranges.iter().map(|(a, b)| (b - a) as u64).sum()
}

/// The offsets of `selected` positions, clipped to `low..high`, as ranges.
fn push_selection(
    ranges: &mut Vec<(i64, i64)>,
    slice: &Slice,
    selected: &RoaringBitmap,
    low: i64,
    high: i64,
) {
    if selected.len() == slice.present.len() {
        let (a, b) = (
            slice.meta.base_offset.max(low),
            slice.meta.end_offset.min(high),
        );
        if a < b {
            ranges.push((a, b));
        }
        return;
    }
    let mut run: Option<(i64, i64)> = None;
    for position in selected {
        let offset = slice.offset_of(position);
        if offset < low || offset >= high {
            continue;
        }
        run = match run {
            Some((a, b)) if offset == b => Some((a, b + 1)),
            Some(r) => {
                ranges.push(r);
                Some((offset, offset + 1))
            }
            None => Some((offset, offset + 1)),
        };
    }
    ranges.extend(run);
}

/// Sorted ranges merged where they overlap or lie within `through` offsets.
pub fn coalesce(sorted: Vec<(i64, i64)>, through: i64) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(sorted.len());
    for (a, b) in sorted {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(through) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_merges_overlaps_and_near_ranges() {
        let got = coalesce(vec![(0, 5), (3, 8), (10, 12), (400, 401)], 2);
        assert_eq!(got, vec![(0, 12), (400, 401)]);
        assert_eq!(coalesce(vec![], 2), vec![]);
    }
}
