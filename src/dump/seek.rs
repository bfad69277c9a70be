//! Where a window starts in one partition, found on the keys alone.
//!
//! `--from` must be exact on every topic the probe writes, whatever the
//! records' Kafka timestamps say (the capture time, or the time they were
//! produced), so the search reads keys: it narrows a bracket of offsets
//! `(lo, hi)` where `lo` holds a key before the window (or is just below the
//! partition's first offset) and `hi` a key in or after it (or is the end).
//! The first probe goes where the broker's time index points (free, and
//! right when the records' timestamps are capture times); it is only a guess,
//! checked against the keys like every other probe. Each probe reads the
//! batch of records the broker returns from one offset and narrows the
//! bracket with every key in it; the next probe interpolates
//! between the two keys it knows (capture times grow about steadily with the
//! offsets), falling back to halving whenever interpolation did not at least
//! halve the bracket. A record without a usable key counts as "in or after
//! the window": the search may then start earlier than it needs, never later.
//!
//! Disorder: the partition keeps the reorder bound `T` (see `merge.rs`): no
//! key is more than `T` below a key before it. So the search looks for
//! `--from` minus `T`: every record before `lo` then has a key at most `lo`'s
//! plus `T`, which is before `--from`. Reading starts just after `lo`, and the
//! window is exact for every topic that keeps the bound.

use super::pcap::LATEST_KEY_US;
use crate::kafka::codec::decode_key;

/// A key as the search uses it: a capture time, or `None` for one that is
/// not 8 bytes or not a time a pcap record holds.
#[inline]
pub fn usable_key(key: Option<&[u8]>) -> Option<u64> {
    decode_key(key).filter(|&ts| ts <= LATEST_KEY_US)
}

/// The search in one partition.
#[derive(Debug, Clone)]
pub struct Bracket {
    target: u64,
    low: i64,
    lo: i64,
    lo_key: Option<u64>,
    hi: i64,
    hi_key: Option<u64>,
    probes: u32,
    /// The last probe was interpolated and did not halve the bracket.
    halve_next: bool,
    resolved: bool,
    /// Where the broker's time index says the target is.
    hint: Option<i64>,
}

impl Bracket {
    /// The first offset whose key may be `>= target`, in a partition holding
    /// offsets `low..high`.
    pub fn new(low: i64, high: i64, target: u64) -> Bracket {
        Bracket {
            target,
            low,
            lo: low - 1,
            lo_key: None,
            hi: high,
            hi_key: None,
            probes: 0,
            halve_next: false,
            resolved: high <= low,
            hint: None,
        }
    }

    /// A first guess: the first offset at or after the target, by the
    /// records' timestamps.
    pub fn with_hint(mut self, hint: Option<i64>) -> Bracket {
        self.hint = hint;
        self
    }

    pub fn resolved(&self) -> bool {
        self.resolved || self.hi - self.lo <= 1
    }

    /// Probes made so far.
    pub fn probes(&self) -> u32 {
        self.probes
    }

    /// The offset to read next, or `None` once the bracket is as narrow as
    /// it gets.
    pub fn probe(&self) -> Option<i64> {
        if self.resolved() {
            return None;
        }
        let (lo, hi) = (self.lo, self.hi);
        // First the record before the guess (one read settles the search
        // if the guess is right), or the last record: a window after the
        // partition's end is settled by one record. Then the first record:
        // both ends' keys known.
        if self.probes == 0 {
            let guess = self.hint.map_or(hi - 1, |h| h - 1);
            return Some(guess.clamp(lo + 1, hi - 1));
        }
        let Some(lo_key) = self.lo_key else {
            return Some(lo + 1);
        };
        let middle = lo + (hi - lo) / 2;
        let guess = match self.hi_key {
            Some(hi_key) if !self.halve_next && hi_key > lo_key => {
                let share = (self.target.saturating_sub(lo_key)) as f64 / (hi_key - lo_key) as f64;
                lo + 1 + (share.clamp(0.0, 1.0) * (hi - lo - 2) as f64) as i64
            }
            _ => middle,
        };
        Some(guess.clamp(lo + 1, hi - 1))
    }

    /// Narrows the bracket with what a read from `probe` returned: records
    /// `(offset, key)` in offset order, consecutive (no record between two of
    /// them), `None` for a record without a usable key. `reached_end`: the
    /// read also showed there is nothing after the last of them (up to the
    /// end the bracket started with).
    pub fn learn(&mut self, probe: i64, records: &[(i64, Option<u64>)], reached_end: bool) {
        self.probes += 1;
        let before = self.hi - self.lo;
        let was_interpolated = self.lo_key.is_some() && self.hi_key.is_some() && !self.halve_next;
        let mut last_before: Option<(i64, u64)> = None;
        let mut boundary = false;
        let mut passed_hi = reached_end;
        for &(offset, key) in records {
            if offset < probe {
                continue;
            }
            if offset >= self.hi {
                passed_hi = true;
                break;
            }
            match key {
                Some(k) if k < self.target => last_before = Some((offset, k)),
                _ => {
                    self.hi = offset;
                    self.hi_key = key.or(self.hi_key);
                    boundary = true;
                    break;
                }
            }
        }
        match last_before {
            Some((offset, key)) => {
                self.lo = offset;
                self.lo_key = Some(key);
                // Consecutive records: nothing lies between the last key
                // before the window and the first in it (or the end).
                if boundary || passed_hi {
                    self.resolved = true;
                }
            }
            None if !boundary => {
                // Nothing between the probe and `hi`.
                self.hi = probe.max(self.lo + 1);
            }
            None => {}
        }
        let after = self.hi - self.lo;
        self.halve_next = was_interpolated && after * 2 > before;
    }

    /// Where reading starts: just after the last record known to be before
    /// the target (its partition's first offset if there is none).
    pub fn start(&self) -> i64 {
        (self.lo + 1).max(self.low)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the search over an in-memory partition whose reads return
    /// `batch` records from the probe on. Returns (start, probes).
    fn search(keys: &[Option<u64>], base: i64, target: u64, batch: usize) -> (i64, u32) {
        let high = base + keys.len() as i64;
        let mut b = Bracket::new(base, high, target);
        while let Some(probe) = b.probe() {
            assert!(
                (base..high).contains(&probe),
                "probe {probe} outside {base}..{high}"
            );
            let from = (probe - base) as usize;
            let to = (from + batch).min(keys.len());
            let records: Vec<(i64, Option<u64>)> =
                (from..to).map(|i| (base + i as i64, keys[i])).collect();
            b.learn(probe, &records, to == keys.len());
            assert!(b.probes() < 200, "no end to the search");
        }
        (b.start(), b.probes())
    }

    /// The first offset whose key is `>= target` (or which has none).
    fn first_at_or_after(keys: &[Option<u64>], target: u64) -> usize {
        keys.iter()
            .position(|k| k.is_none_or(|k| k >= target))
            .unwrap_or(keys.len())
    }

    #[test]
    fn steady_keys_are_found_in_a_few_probes() {
        let keys: Vec<Option<u64>> = (0..1_000_000u64)
            .map(|i| Some(1_000_000 + i * 10))
            .collect();
        for target in [
            0,
            1_000_000,
            1_000_005,
            3_000_000,
            5_123_457,
            10_999_990,
            11_000_000,
            u64::MAX,
        ] {
            let (start, probes) = search(&keys, 500, target, 500);
            assert_eq!(
                start,
                500 + first_at_or_after(&keys, target) as i64,
                "target {target}"
            );
            assert!(probes <= 6, "target {target}: {probes} probes");
        }
    }

    /// Like `search`, with the time index's guess.
    fn search_from(keys: &[Option<u64>], target: u64, hint: i64, batch: usize) -> (i64, u32) {
        let mut b = Bracket::new(0, keys.len() as i64, target).with_hint(Some(hint));
        while let Some(probe) = b.probe() {
            let to = (probe as usize + batch).min(keys.len());
            let records: Vec<(i64, Option<u64>)> =
                (probe as usize..to).map(|i| (i as i64, keys[i])).collect();
            b.learn(probe, &records, to == keys.len());
        }
        (b.start(), b.probes())
    }

    #[test]
    fn a_right_guess_takes_one_probe_and_a_wrong_one_costs_little() {
        let keys: Vec<Option<u64>> = (0..100_000u64).map(|i| Some(i * 7)).collect();
        let target = 7 * 54_321;
        assert_eq!(search_from(&keys, target, 54_321, 100), (54_321, 1));
        for wrong in [0, 1, 99_999, 100_000, 200_000, -5, 54_000] {
            let (start, probes) = search_from(&keys, target, wrong, 100);
            assert_eq!(start, 54_321, "guess {wrong}");
            assert!(probes <= 8, "guess {wrong}: {probes} probes");
        }
    }

    #[test]
    fn uneven_keys_need_no_more_than_halving() {
        // Bursts: long quiet gaps, then dense traffic; interpolation guesses badly.
        let mut keys = Vec::new();
        let mut t = 0u64;
        for i in 0..200_000u64 {
            t += if i % 10_000 == 0 { 1 << 40 } else { 1 + i % 3 };
            keys.push(Some(t));
        }
        for pick in [1, 9_999, 10_000, 123_456, 199_999] {
            let (start, probes) = search(&keys, 0, keys[pick].unwrap(), 100);
            assert_eq!(start, pick as i64);
            assert!(probes <= 2 * 18 + 2, "{probes} probes");
        }
    }

    #[test]
    fn bounded_disorder_and_bad_keys_never_lose_a_record() {
        let mut seed = 7u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..40 {
            // Sorted keys, some moved later by up to 300 offsets; a few keyless.
            let n = 5_000 + (rand() % 50_000) as usize;
            let mut keys: Vec<Option<u64>> = (0..n as u64).map(|i| Some(i * 4)).collect();
            for _ in 0..n / 10 {
                let i = (rand() % n as u64) as usize;
                let j = (i + (rand() % 300) as usize).min(n - 1);
                keys.swap(i, j);
            }
            for _ in 0..round {
                let i = (rand() % n as u64) as usize;
                keys[i] = None;
            }
            // The bound T this partition keeps: its worst lateness.
            let (mut most, mut bound) = (0, 0);
            for k in keys.iter().flatten() {
                most = most.max(*k);
                bound = bound.max(most - k);
            }
            for _ in 0..20 {
                let from = rand() % (n as u64 * 4 + 8);
                let batch = 1 + (rand() % 400) as usize;
                let (start, _) = search(&keys, 1000, from.saturating_sub(bound), batch);
                let missed = keys[..(start - 1000) as usize]
                    .iter()
                    .flatten()
                    .filter(|&&k| k >= from)
                    .count();
                assert_eq!(missed, 0, "round {round}: from {from}, start {start}");
                // And not much earlier than it must be.
                let first = first_at_or_after(&keys, from.saturating_sub(bound)) as i64;
                assert!(start >= 1000 + first - batch as i64);
            }
        }
    }

    #[test]
    fn only_keys_a_pcap_record_can_hold_guide_the_search() {
        assert_eq!(usable_key(Some(&7u64.to_be_bytes())), Some(7));
        assert_eq!(
            usable_key(Some(&LATEST_KEY_US.to_be_bytes())),
            Some(LATEST_KEY_US)
        );
        assert_eq!(usable_key(Some(&(LATEST_KEY_US + 1).to_be_bytes())), None);
        assert_eq!(usable_key(Some(&u64::MAX.to_be_bytes())), None);
        assert_eq!(usable_key(Some(&[0u8; 7])), None);
        assert_eq!(usable_key(None), None);
    }

    #[test]
    fn windows_beyond_either_end_and_empty_partitions() {
        let keys: Vec<Option<u64>> = (0..1000u64).map(|i| Some(100 + i)).collect();
        assert_eq!(
            search(&keys, 0, 5000, 10),
            (1000, 1),
            "after the end: one probe"
        );
        assert_eq!(search(&keys, 0, 0, 10).0, 0);
        let b = Bracket::new(7, 7, 1);
        assert!(b.resolved() && b.probe().is_none());
        assert_eq!(b.start(), 7);
        // A gap in the offsets (compaction): nothing between the probe and the end.
        let mut b = Bracket::new(0, 100, 50);
        let p = b.probe().unwrap();
        b.learn(p, &[], true);
        while let Some(p) = b.probe() {
            let records: Vec<(i64, Option<u64>)> = if p < 10 {
                (p..10).map(|o| (o, Some(o as u64))).collect()
            } else {
                Vec::new()
            };
            b.learn(p, &records, true);
        }
        assert_eq!(b.start(), 10);
    }
}
