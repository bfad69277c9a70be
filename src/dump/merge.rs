//! Time order across partitions, by construction.
//!
//! Each partition is read as its own stream, in offset order. Within one
//! partition the probe writes in capture order except for the disorder of
//! several transmit workers (each with its own producer) sharing it: one
//! producer's batch can reach the broker after a later batch of another. The
//! dump assumes that disorder is bounded in capture time by the *reorder
//! bound* `T`: no record's key is more than `T` below the key of any record
//! before it in its partition. So once a record with key `k` has been read
//! from a partition, every record still to come from it has a key of at least
//! `k - T`: the partition's *floor*.
//!
//! Records wait, per partition, in a run (they mostly arrive in order) and a
//! small heap for those that arrive below the run's end. The smallest waiting
//! record of all partitions is written as soon as its key is at most the
//! *horizon*: the lowest floor of the partitions that may still deliver
//! records. Nothing written can then be followed by an earlier record, as long
//! as the topic keeps the bound. A record that arrives later than the bound
//! allows is still written, out of order (the writer counts it), never dropped.
//!
//! The floor is taken from the last key read, not the largest: a single
//! record with a wild key then moves it for one read at most.
//!
//! Memory: a record waits until every partition has been read `T` past its
//! key; the engine always reads the partition with the lowest floor, so what
//! waits is about `T` of capture time of every partition. A byte cap bounds
//! it whatever the topic holds: past the cap the smallest record is written
//! at once (and counted if that puts it out of order).
//!
//! `--follow` reads partitions that run dry and fill again. A partition that
//! has caught up with its end, and stayed so for a settling delay, no longer
//! holds back records that were read at least that long ago: what another
//! producer still had in flight when they were read has arrived by then.
//! (Whatever it sends later is written as it comes, and counted if it is
//! earlier than what was written.)

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

/// A record waiting to be written.
#[derive(Debug)]
pub struct Held {
    pub key: u64,
    pub partition: u32,
    pub offset: i64,
    pub wire_len: u32,
    /// When it was read (ms since the dump began), for `--follow`.
    pub read_ms: u32,
    pub frame: Box<[u8]>,
}

impl Held {
    fn rank(&self) -> (u64, i64) {
        (self.key, self.offset)
    }
}

/// Orders the stragglers' heap: smallest (key, offset) on top.
struct Late(Held);

impl PartialEq for Late {
    fn eq(&self, other: &Self) -> bool {
        self.0.rank() == other.0.rank()
    }
}

impl Eq for Late {}

impl PartialOrd for Late {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Late {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.rank().cmp(&self.0.rank())
    }
}

/// What the merge knows of one partition, and its waiting records.
#[derive(Default)]
struct Stream {
    /// Records in key order, as they mostly arrive.
    run: VecDeque<Held>,
    /// Records that arrived below the end of `run`.
    late: BinaryHeap<Late>,
    /// The key of the last record read.
    last_key: Option<u64>,
    /// Nothing more will come (read to its end, or past `--to`).
    finished: bool,
    /// `--follow`: caught up with the partition's end since this time (ms).
    caught_up_at: Option<u32>,
}

impl Stream {
    fn head(&self) -> Option<u64> {
        self.peek().map(|h| h.key)
    }

    /// The smallest waiting record, and whether it is in `late`.
    fn smallest(&self) -> Option<(&Held, bool)> {
        match (self.run.front(), self.late.peek()) {
            (None, None) => None,
            (Some(r), None) => Some((r, false)),
            (None, Some(l)) => Some((&l.0, true)),
            (Some(r), Some(l)) if l.0.rank() < r.rank() => Some((&l.0, true)),
            (Some(r), Some(_)) => Some((r, false)),
        }
    }

    fn peek(&self) -> Option<&Held> {
        self.smallest().map(|(h, _)| h)
    }

    fn pop(&mut self) -> Option<Held> {
        let (_, from_late) = self.smallest()?;
        if from_late {
            self.late.pop().map(|l| l.0)
        } else {
            self.run.pop_front()
        }
    }
}

/// What may be written at one moment (see [`Merge::horizon`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Horizon {
    /// Any record up to this key.
    pub any: u64,
    /// Records read a settling delay ago or earlier, up to this key.
    pub settled: u64,
    pub now_ms: u32,
}

/// The waiting records and the partitions' floors.
pub struct Merge {
    streams: Vec<Stream>,
    /// Each partition's smallest waiting key, for a quick scan.
    heads: Vec<Option<u64>>,
    /// The reorder bound `T`, in µs.
    bound_us: u64,
    /// `--follow`: how long a caught-up partition must stay so before it
    /// stops holding the others back.
    settle_ms: Option<u32>,
    held: usize,
    held_bytes: usize,
    max_held_bytes: usize,
}

/// What one waiting record costs besides its frame: its slot and the
/// allocator's header, about.
pub const HELD_OVERHEAD: usize = std::mem::size_of::<Held>() + 16;

impl Merge {
    /// `partitions` streams; `bound_us` = `T`; `settle_ms`: `Some` for
    /// `--follow`; `max_held_bytes`: the byte cap.
    pub fn new(
        partitions: usize,
        bound_us: u64,
        settle_ms: Option<u32>,
        max_held_bytes: usize,
    ) -> Merge {
        Merge {
            streams: (0..partitions).map(|_| Stream::default()).collect(),
            heads: vec![None; partitions],
            bound_us,
            settle_ms,
            held: 0,
            held_bytes: 0,
            max_held_bytes,
        }
    }

    /// A record of `partition` with a usable `key` was read (whether or not
    /// it is held: records outside the window or refused by the filter still
    /// tell where the partition stands). Records come in offset order.
    #[inline]
    pub fn observe(&mut self, partition: usize, key: u64) {
        let s = &mut self.streams[partition];
        s.last_key = Some(key);
        s.caught_up_at = None;
    }

    /// Holds a record until it can be written.
    #[inline]
    pub fn hold(&mut self, held: Held) {
        let p = held.partition as usize;
        self.held += 1;
        self.held_bytes += held.frame.len() + HELD_OVERHEAD;
        self.heads[p] = Some(self.heads[p].map_or(held.key, |k| k.min(held.key)));
        let s = &mut self.streams[p];
        match s.run.back() {
            Some(last) if held.key < last.key => s.late.push(Late(held)),
            _ => s.run.push_back(held),
        }
    }

    /// The partition will deliver nothing more.
    pub fn finish(&mut self, partition: usize) {
        self.streams[partition].finished = true;
    }

    pub fn is_finished(&self, partition: usize) -> bool {
        self.streams[partition].finished
    }

    /// `--follow`: the partition has delivered everything the broker had.
    pub fn caught_up(&mut self, partition: usize, now_ms: u32) {
        let s = &mut self.streams[partition];
        s.caught_up_at.get_or_insert(now_ms);
    }

    pub fn is_caught_up(&self, partition: usize) -> bool {
        self.streams[partition].caught_up_at.is_some()
    }

    /// Every record still to come from `partition` has at least this key
    /// (0 before the first record).
    pub fn floor(&self, partition: usize) -> u64 {
        let s = &self.streams[partition];
        s.last_key.map_or(0, |k| k.saturating_sub(self.bound_us))
    }

    /// The key of the last record read from `partition`.
    pub fn last_key(&self, partition: usize) -> Option<u64> {
        self.streams[partition].last_key
    }

    /// How far a partition holds the others back: its floor, or nothing once
    /// it is finished (or, for records read long enough ago when `settled`
    /// counts, once it has stayed caught up for the settling delay).
    fn limit(&self, partition: usize, now_ms: u32, settled: bool) -> u64 {
        let s = &self.streams[partition];
        let idle = match (self.settle_ms, s.caught_up_at) {
            (Some(delay), Some(at)) => settled && now_ms.saturating_sub(at) >= delay,
            _ => false,
        };
        if s.finished || idle {
            u64::MAX
        } else {
            self.floor(partition)
        }
    }

    /// The highest key that may be written now: for any record, and (when
    /// following) for records read at least the settling delay ago.
    pub fn horizon(&self, now_ms: u32) -> Horizon {
        let min = |settled| {
            (0..self.streams.len())
                .map(|p| self.limit(p, now_ms, settled))
                .min()
                .unwrap_or(u64::MAX)
        };
        Horizon {
            any: min(false),
            settled: min(true),
            now_ms,
        }
    }

    /// The partition furthest behind (the one to read next: it holds the
    /// horizon back) among those `eligible`, if any may still deliver records.
    pub fn laggard(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        (0..self.streams.len())
            .filter(|&p| !self.streams[p].finished && eligible(p))
            .min_by_key(|&p| self.streams[p].last_key.unwrap_or(0))
    }

    /// The next record that may be written: the smallest one, if its key is
    /// within the horizon, or if more bytes wait than the cap allows.
    #[inline]
    pub fn pop_ready(&mut self, horizon: &Horizon) -> Option<Held> {
        let (p, key) = self.smallest()?;
        let ready = key <= horizon.any
            || self.held_bytes > self.max_held_bytes
            || (key <= horizon.settled && {
                let read_ms = self.streams[p].peek().map_or(0, |h| h.read_ms);
                let delay = self.settle_ms.unwrap_or(0);
                horizon.now_ms.saturating_sub(read_ms) >= delay
            });
        if ready {
            self.pop_from(p)
        } else {
            None
        }
    }

    /// The smallest record, whatever the horizon (at the end, or when the
    /// dump is interrupted).
    pub fn pop(&mut self) -> Option<Held> {
        let (p, _) = self.smallest()?;
        self.pop_from(p)
    }

    /// The partition holding the smallest waiting key (the lowest partition
    /// among equal keys), and that key.
    #[inline]
    fn smallest(&self) -> Option<(usize, u64)> {
        let mut best: Option<(usize, u64)> = None;
        for (p, head) in self.heads.iter().enumerate() {
            if let Some(key) = *head {
                if best.is_none_or(|(_, b)| key < b) {
                    best = Some((p, key));
                }
            }
        }
        best
    }

    fn pop_from(&mut self, p: usize) -> Option<Held> {
        let s = &mut self.streams[p];
        let held = s.pop()?;
        self.heads[p] = s.head();
        self.held -= 1;
        self.held_bytes -= held.frame.len() + HELD_OVERHEAD;
        Some(held)
    }

    /// Records waiting.
    pub fn held(&self) -> usize {
        self.held
    }

    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    pub fn all_finished(&self) -> bool {
        self.streams.iter().all(|s| s.finished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(p: usize, offset: i64, key: u64) -> Held {
        Held {
            key,
            partition: p as u32,
            offset,
            wire_len: 60,
            read_ms: 0,
            frame: vec![0; 60].into(),
        }
    }

    /// Drives a merge over in-memory partitions (lists of keys in offset
    /// order) the way the engine does: read a batch from the laggard, write
    /// what is ready. Returns the keys written and the most records held.
    fn run(parts: &[Vec<u64>], bound: u64, batch: usize, cap: usize) -> (Vec<(u64, u32)>, usize) {
        let mut merge = Merge::new(parts.len(), bound, None, cap);
        let mut next = vec![0usize; parts.len()];
        for (p, keys) in parts.iter().enumerate() {
            if keys.is_empty() {
                merge.finish(p);
            }
        }
        let (mut out, mut most) = (Vec::new(), 0);
        loop {
            while let Some(h) = merge.pop_ready(&merge.horizon(0)) {
                out.push((h.key, h.partition));
            }
            let Some(p) = merge.laggard(|_| true) else {
                break;
            };
            for _ in 0..batch {
                if next[p] == parts[p].len() {
                    break;
                }
                let key = parts[p][next[p]];
                merge.observe(p, key);
                merge.hold(held(p, next[p] as i64, key));
                next[p] += 1;
            }
            if next[p] == parts[p].len() {
                merge.finish(p);
            }
            most = most.max(merge.held());
        }
        while let Some(h) = merge.pop() {
            out.push((h.key, h.partition));
        }
        (out, most)
    }

    fn inversions(out: &[(u64, u32)]) -> usize {
        out.windows(2).filter(|w| w[1].0 < w[0].0).count()
    }

    /// A partition written by `workers` producers: flows of 7 records go to
    /// the workers in turn, and each worker's batches of `batch` records
    /// reach the partition `lag` batches after the previous worker's.
    fn interleaved(keys: &[u64], workers: usize, batch: usize) -> Vec<u64> {
        let mut lanes: Vec<Vec<u64>> = vec![Vec::new(); workers];
        for (i, &k) in keys.iter().enumerate() {
            lanes[(i / 7) % workers].push(k);
        }
        let mut out = Vec::new();
        let mut at = vec![0; workers];
        let mut turn = 0;
        while out.len() < keys.len() {
            let w = turn % workers;
            let end = (at[w] + batch).min(lanes[w].len());
            out.extend_from_slice(&lanes[w][at[w]..end]);
            at[w] = end;
            turn += 1;
        }
        out
    }

    /// How far behind (in key) a record comes after an earlier one.
    fn worst_lateness(keys: &[u64]) -> u64 {
        let mut most = 0;
        let mut worst = 0;
        for &k in keys {
            most = most.max(k);
            worst = worst.max(most - k);
        }
        worst
    }

    #[test]
    fn sorted_partitions_merge_into_time_order() {
        let parts: Vec<Vec<u64>> = (0..8)
            .map(|p| (0..5000).map(|i| i * 8 + p).collect())
            .collect();
        let (out, most) = run(&parts, 0, 64, usize::MAX);
        assert_eq!(out.len(), 40_000);
        assert_eq!(inversions(&out), 0);
        assert!(most <= 8 * 64 + 8, "{most}");
    }

    #[test]
    fn disorder_within_the_bound_is_undone() {
        let keys: Vec<u64> = (0..20_000).map(|i| 1000 + i * 3).collect();
        let skewed = interleaved(&keys, 4, 100);
        let lateness = worst_lateness(&skewed);
        assert!(
            lateness > 500,
            "the test partition is out of order ({lateness})"
        );
        let other: Vec<u64> = (0..3000).map(|i| i * 20).collect();
        let (out, most) = run(
            &[skewed.clone(), other, Vec::new()],
            lateness,
            256,
            usize::MAX,
        );
        assert_eq!(out.len(), 23_000);
        assert_eq!(inversions(&out), 0);
        // About the bound's worth of records of each partition waits.
        let bound_records = (lateness / 3) as usize;
        assert!(most <= 2 * (bound_records + 256) + 64, "held {most}");
        let mut sorted: Vec<u64> = out.iter().map(|o| o.0).collect();
        sorted.sort_unstable();
        let mut expected: Vec<u64> = keys.clone();
        expected.extend((0..3000).map(|i| i * 20));
        expected.sort_unstable();
        assert_eq!(sorted, expected, "every record, once");

        // A bound too small: every record is still written, some out of order.
        let (out, _) = run(&[skewed], lateness / 4, 256, usize::MAX);
        assert_eq!(out.len(), 20_000);
        assert!(inversions(&out) > 0);
    }

    #[test]
    fn skewed_partitions_and_wild_keys() {
        // One elephant partition, seven nearly empty ones; one wild key.
        let mut elephant: Vec<u64> = (0..50_000).map(|i| 1_000 + i * 2).collect();
        elephant[20_000] = 1 << 50;
        let mut parts = vec![elephant];
        parts.extend((1..8).map(|p| vec![p * 7919, p * 13_000]));
        let (out, most) = run(&parts, 64, 128, usize::MAX);
        assert_eq!(out.len(), 50_014);
        // The wild key is written last: the others carry on around it.
        assert_eq!(inversions(&out), 0, "{:?}", &out[out.len() - 3..]);
        assert_eq!(out.last().unwrap().0, 1 << 50);
        assert!(most <= 400, "held {most}");
    }

    #[test]
    fn the_byte_cap_forces_records_out_and_they_are_all_written() {
        let parts: Vec<Vec<u64>> = vec![(0..10_000).collect(), (0..10_000).collect()];
        // A bound that holds everything back ... but a cap of 100 records.
        let cap = 100 * (60 + HELD_OVERHEAD);
        let (out, most) = run(&parts, 1 << 40, 64, cap);
        assert_eq!(out.len(), 20_000);
        assert_eq!(inversions(&out), 0, "these came in order anyway");
        assert!(most <= 100 + 64 + 1, "held {most}");
    }

    #[test]
    fn equal_keys_keep_partition_then_offset_order() {
        let mut merge = Merge::new(2, 0, None, usize::MAX);
        let max = u64::MAX;
        for (p, o, k) in [
            (1, 0, 5),
            (0, 0, 5),
            (0, 1, 5),
            (1, 1, 4),
            (0, 2, 3),
            (1, 2, max),
        ] {
            merge.observe(p, k);
            merge.hold(held(p, o, k));
        }
        let order: Vec<(u64, u32, i64)> = std::iter::from_fn(|| merge.pop())
            .map(|h| (h.key, h.partition, h.offset))
            .collect();
        assert_eq!(
            order,
            vec![
                (3, 0, 2),
                (4, 1, 1),
                (5, 0, 0),
                (5, 0, 1),
                (5, 1, 0),
                (max, 1, 2)
            ]
        );
        assert_eq!((merge.held(), merge.held_bytes()), (0, 0));
    }

    #[test]
    fn following_a_quiet_partition_does_not_stall_the_others() {
        let mut merge = Merge::new(2, 10, Some(500), usize::MAX);
        let read_at = |merge: &mut Merge, p: usize, o: i64, k: u64, ms: u32| {
            merge.observe(p, k);
            merge.hold(Held {
                read_ms: ms,
                ..held(p, o, k)
            });
        };
        for (o, k) in [(0, 100u64), (1, 101), (2, 120)] {
            read_at(&mut merge, 0, o, k, 100);
        }
        let h = merge.horizon(100);
        assert_eq!(
            (h.any, h.settled),
            (0, 0),
            "partition 1 has said nothing yet"
        );
        merge.caught_up(1, 100);
        assert_eq!(merge.horizon(599).settled, 0, "not settled yet");
        let h = merge.horizon(600);
        assert_eq!((h.any, h.settled), (0, 110));
        assert_eq!(merge.pop_ready(&h).unwrap().key, 100);
        assert_eq!(merge.pop_ready(&h).unwrap().key, 101);
        assert!(merge.pop_ready(&h).is_none());
        // A record read just now waits its own settling delay.
        merge.caught_up(0, 600);
        read_at(&mut merge, 0, 3, 130, 1000);
        merge.caught_up(0, 1000);
        let h = merge.horizon(1499);
        assert_eq!(h.settled, 120);
        assert_eq!(merge.pop_ready(&h).unwrap().key, 120);
        assert!(
            merge.pop_ready(&h).is_none(),
            "partition 0 not idle long enough"
        );
        let mut h = merge.horizon(1500);
        assert_eq!(h.settled, u64::MAX);
        h.now_ms = 1499;
        assert!(merge.pop_ready(&h).is_none(), "read 499 ms ago only");
        assert_eq!(merge.pop_ready(&merge.horizon(1500)).unwrap().key, 130);
        // New records wake a partition up: it holds the horizon again.
        merge.observe(1, 50);
        assert_eq!(merge.horizon(2100).settled, 40);
        assert_eq!(merge.laggard(|_| true), Some(1));
        assert_eq!(merge.laggard(|p| p != 1), Some(0));
        merge.finish(1);
        merge.finish(0);
        assert!(merge.all_finished());
        assert_eq!(merge.laggard(|_| true), None);
    }
}
