//! Reading: the `--from` search, then each partition read in turn (the
//! one that holds the others back), every record checked, filtered and
//! handed to the merge.

use super::*;

impl Dump {
    /// One or more rounds of the `--from` search; true once it is over and
    /// reading has started.
    pub(super) fn seek(&mut self, deadline: Instant) -> Result<bool, DumpError> {
        let timeout = self.cfg.timeout;
        let Some(mut seeking) = self.seeking.take() else {
            return Ok(true);
        };
        while seeking.brackets.iter().any(|b| !b.resolved()) {
            if Instant::now() >= deadline {
                self.seeking = Some(seeking);
                return Ok(false);
            }
            let probes: Vec<(usize, i64)> = seeking
                .brackets
                .iter()
                .enumerate()
                .filter_map(|(p, b)| b.probe().map(|o| (p, o)))
                .collect();
            // Every partition moves first, so librdkafka fetches them together.
            for &(p, offset) in &probes {
                let part = &self.parts[p];
                seeking.probes[part.source].start(part.local, offset)?;
            }
            for &(p, offset) in &probes {
                let (source, local) = (self.parts[p].source, self.parts[p].local);
                let probe = &mut seeking.probes[source];
                let mut records: Vec<(i64, Option<u64>)> = Vec::new();
                let asked = Instant::now();
                let reached_end = loop {
                    let (_, signals) = probe.read(local, Duration::from_millis(100), |m| {
                        records.push((m.offset(), usable_key(m.key())));
                    })?;
                    if signals.end_at.is_some() {
                        break true;
                    }
                    if !records.is_empty() {
                        break false;
                    }
                    if asked.elapsed() > timeout {
                        let reason = probe
                            .take_error()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default();
                        return Err(DumpError::Kafka(format!(
                            "no answer from {} within {} s{reason}",
                            self.describe(p),
                            timeout.as_secs_f64(),
                        )));
                    }
                };
                seeking.brackets[p].learn(offset, &records, reached_end);
            }
        }
        let starts: Vec<i64> = seeking.brackets.iter().map(Bracket::start).collect();
        self.start_reading(&starts)?;
        Ok(true)
    }

    /// Reads from the partition that holds the others back.
    pub(super) fn read_next(&mut self, deadline: Instant) -> Result<(), DumpError> {
        let wait = deadline.saturating_duration_since(Instant::now());
        if self.cfg.follow {
            // Partitions that ran dry: anything new? Then the laggard of the
            // others, or, all caught up, wait a little on the laggard.
            for p in 0..self.parts.len() {
                if !self.merge.is_finished(p) && self.merge.is_caught_up(p) {
                    self.read_partition(p, Duration::ZERO)?;
                    self.past_end_by_clock(p);
                }
            }
            let merge = &self.merge;
            let next = merge
                .laggard(|p| !merge.is_caught_up(p))
                .map(|p| (p, wait.min(Duration::from_millis(100))))
                .or_else(|| {
                    merge
                        .laggard(|_| true)
                        .map(|p| (p, wait.min(Duration::from_millis(20))))
                });
            if let Some((p, wait)) = next {
                self.read_partition(p, wait)?;
            }
            return Ok(());
        }
        let Some(p) = self.merge.laggard(|_| true) else {
            return Ok(());
        };
        // Following the index, a partition moves from range to range, each
        // move a round trip to the broker. While the laggard is moving,
        // take what the others have ready, so their moves overlap instead
        // of queueing behind it. Only then: emptying every queue at each
        // step made the threads hand off far more often, a third more CPU
        // on a plan read almost whole. And only while the merge holds
        // little, so reading ahead never pushes it to its memory cap (past
        // which it would write out of order).
        let moving = self.planned_any && self.parts[p].moving;
        if moving && self.merge.held_bytes() < self.cfg.max_held_bytes / 4 {
            let mut arrived = false;
            for q in 0..self.parts.len() {
                if q != p && !self.merge.is_finished(q) {
                    arrived |= self.read_partition(q, Duration::ZERO)?;
                }
            }
            if arrived {
                return Ok(());
            }
        }
        let got = self.read_partition(p, wait.min(Duration::from_millis(100)))?;
        if !got && self.progress_at.elapsed() > self.cfg.timeout {
            let reason = self.sources[self.parts[p].source]
                .reader
                .take_error()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            return Err(DumpError::Kafka(format!(
                "no records from {} for {} s{reason}",
                self.describe(p),
                self.cfg.timeout.as_secs_f64()
            )));
        }
        Ok(())
    }

    /// `--follow --to`: a partition with nothing new once the clock is past
    /// `--to` plus the bound is done (live keys follow the clock).
    fn past_end_by_clock(&mut self, p: usize) {
        let Some(end) = self.cfg.end else { return };
        let wall_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        if self.merge.is_caught_up(p) && wall_us > end.saturating_add(self.cfg.reorder_bound_us) {
            self.merge.finish(p);
            let part = &self.parts[p];
            self.sources[part.source].reader.stop(part.local);
        }
    }

    /// Reads one batch of partition `p` (waiting up to `wait` for it);
    /// true if anything arrived.
    fn read_partition(&mut self, p: usize, wait: Duration) -> Result<bool, DumpError> {
        let Dump {
            cfg,
            sources,
            filter,
            merge,
            parts,
            epoch,
            progress_at,
            ..
        } = self;
        let part = &mut parts[p];
        let Source { reader, counts, .. } = &mut sources[part.source];
        let local = part.local;
        let (start, end) = (cfg.start.unwrap_or(0), cfg.end.unwrap_or(u64::MAX));
        let bound = cfg.reorder_bound_us;
        let past = end.saturating_add(bound);
        let now_ms = epoch.elapsed().as_millis().min(u32::MAX as u128) as u32;
        let (records, signals) = reader.read(local, wait, |m: &Msg<'_>| {
            let offset = m.offset();
            part.position = part.position.max(offset + 1);
            while part.ranges.front().is_some_and(|&(_, end)| offset >= end) {
                part.ranges.pop_front();
            }
            match part.ranges.front() {
                Some(&(start, _)) if offset >= start => {}
                // Between the ranges to read, or past the last (produced
                // after the dump started).
                _ => return,
            }
            counts.read += 1;
            let key = m.key();
            if let Some(ts) = decode_key(key) {
                if ts <= LATEST_KEY_US {
                    if merge
                        .last_key(p)
                        .is_some_and(|last| ts.saturating_add(bound) < last)
                    {
                        counts.late += 1;
                    }
                    merge.observe(p, ts);
                    if ts > past {
                        part.past_end += 1;
                    } else {
                        part.past_end = 0;
                    }
                }
                if ts < start || ts > end {
                    return;
                }
            }
            let value = m.value();
            let accepted = match pcap::accept(key, value, decode_orig_len(m.orig_len_header())) {
                Ok(a) => a,
                Err(skip) => {
                    match skip {
                        Skip::NoKey => counts.no_key += 1,
                        Skip::BadKey => counts.bad_key += 1,
                        Skip::NoValue => counts.no_value += 1,
                        Skip::BadTime => counts.bad_time += 1,
                    }
                    return;
                }
            };
            let frame = &value.unwrap_or_default()[..accepted.caplen as usize];
            if let Some(program) = filter {
                if !program.matches(frame, accepted.wire_len) {
                    counts.filtered += 1;
                    return;
                }
            }
            counts.cut += u64::from(accepted.cut);
            counts.bad_orig_len += u64::from(accepted.bad_orig_len);
            merge.hold(Held {
                key: accepted.ts_us,
                partition: p as u32,
                offset,
                wire_len: accepted.wire_len,
                read_ms: now_ms,
                frame: frame.into(),
            });
        })?;
        part.moving &= records == 0;
        let mut finished = part.past_end >= PAST_END_RUN;
        while part
            .ranges
            .front()
            .is_some_and(|&(_, end)| part.position >= end)
        {
            part.ranges.pop_front();
        }
        finished |= part.ranges.is_empty();
        if !cfg.follow {
            finished |= signals.end_at.is_some_and(|at| at >= part.stop);
        } else if signals.end_at.is_some() {
            let now = epoch.elapsed().as_millis().min(u32::MAX as u128) as u32;
            merge.caught_up(p, now);
        }
        if finished {
            merge.finish(p);
            reader.stop(local);
        } else if let Some(&(start, _)) = part.ranges.front() {
            // The next range is further on than the reader: move it there.
            if part.position < start {
                reader.start(local, start)?;
                part.position = start;
                part.moving = true;
            }
        }
        let arrived = records > 0 || signals.end_at.is_some();
        if arrived {
            *progress_at = Instant::now();
        }
        Ok(arrived)
    }
}
