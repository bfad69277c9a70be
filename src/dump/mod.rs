//! `fastcapa dump`: the way back, Kafka to a capture file, as a query engine.
//!
//! A query is one or more topics (one per sensor), a time window
//! (`--from`/`--to`, matched on the key), a filter in tcpdump syntax, a
//! count. The engine answers it in four steps, all on
//! the calling thread (Python releases the GIL and calls [`Dump::step`] for a
//! bounded time, so Ctrl-C and the progress line stay responsive):
//!
//! 1. **Seek** (`seek.rs`): with `--from`, each partition's start offset is
//!    found by searching the keys (not the records' Kafka timestamps, which
//!    may be the capture time or the time of production).
//! 2. **Read** (`kafka.rs`): each partition is consumed as its own stream
//!    (librdkafka's simple consumer, one fetch queue per partition), up to the
//!    end offsets seen at start (or forever with `--follow`); a partition
//!    stops as soon as it is past `--to`.
//! 3. **Merge** (`merge.rs`): records wait in per-partition order until no
//!    partition can still deliver an earlier one, then leave in capture-time
//!    order across every partition of every topic, within the reorder bound.
//! 4. **Write** (`pcap.rs`, `pcapng.rs`): each record is checked (key,
//!    value, length, time) and, if it passes the window and the filter,
//!    written to a classic pcap or a pcapng file (one interface per topic)
//!    through one large buffer. What cannot be written as it is
//!    is skipped or cut and counted by kind ([`DumpSnapshot`]).

pub mod indexed;
pub mod kafka;
pub mod merge;
pub mod pcap;
pub mod pcapng;
pub mod seek;

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::time::{Duration, Instant};

use self::indexed::{plan_partition, Catalog, PartExplain};
use self::kafka::Reader;
use self::merge::{Held, Merge};
use self::pcap::{CaptureWriter, Format, Skip, LATEST_KEY_US};
use self::seek::{usable_key, Bracket};
use crate::bpf::BpfProgram;
use crate::counters::DumpSnapshot;
use crate::index::plan::Plan;
use crate::kafka::codec::{decode_key, decode_orig_len};
use crate::kafka::message::Msg;
use crate::kafka::ClientError;
use crate::source::CaptureError;

/// The reorder bound `T` (see `merge.rs`): within one partition no record's
/// capture time is more than this below that of a record before it. Chosen
/// from the disorder measured on the probe's own topics (docs/dump.md).
pub const REORDER_BOUND_US: u64 = 2_000_000;

/// Most bytes of frames waiting in the merge before the smallest is written
/// regardless (the memory bound of the merge).
pub const MAX_HELD_BYTES: usize = 256 << 20;

/// Total librdkafka may prefetch, spread over the partitions' queues.
const PREFETCH_KBYTES: usize = 32 << 10;

/// Most records one read of a partition hands over.
const READ_BATCH: usize = 1024;

/// `--follow`: how long a partition must stay caught up before it no longer
/// holds the others back.
const SETTLE_MS: u32 = 1000;

/// A partition counts as past `--to` after this many records in a row with
/// capture times past `--to` plus the reorder bound (more than one, so a
/// single wild key does not end it).
const PAST_END_RUN: u32 = 16;

/// One topic of the query.
#[derive(Debug, Clone)]
pub struct TopicQuery {
    pub name: String,
    /// Its index, if the dump may use one (`--no-index`: `None`).
    pub index_topic: Option<String>,
}

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct DumpConfig {
    /// One or more topics, merged into one capture-time order.
    pub topics: Vec<TopicQuery>,
    /// librdkafka settings (from -c, -X, -k).
    pub settings: Vec<(String, String)>,
    /// First and last capture time of the window, µs, inclusive.
    pub start: Option<u64>,
    pub end: Option<u64>,
    /// Stop after this many frames (0: no limit).
    pub count: u64,
    /// The link type of every topic's frames.
    pub linktype: u32,
    pub follow: bool,
    pub filter: Option<String>,
    /// How long to wait for Kafka's answers.
    pub timeout: Duration,
    pub reorder_bound_us: u64,
    pub max_held_bytes: usize,
    pub format: Format,
}

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("topic {0:?} does not exist")]
    NoTopic(String),
    #[error(transparent)]
    Filter(CaptureError),
    /// Kafka failed while reading.
    #[error("{0}")]
    Kafka(String),
    /// Writing the file failed (a reader that went away: `BrokenPipe`).
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// One topic as the query reads it.
struct Source {
    name: String,
    reader: Reader,
    /// The index topic was there and held slices of this topic.
    index_read: bool,
    counts: DumpSnapshot,
}

/// Where each partition stands. Partitions are numbered across the query
/// (topic after topic), as the merge sees them.
struct Part {
    /// Its topic (an index into the sources) and its index in that
    /// topic's reader.
    source: usize,
    local: usize,
    /// Offsets at and past this are not read (the end seen at start).
    stop: i64,
    /// Records in a row past `--to` plus the bound.
    past_end: u32,
    /// The offset ranges still to read, in order: one range (from the
    /// window's start to `stop`) for a scan; for a partition the index
    /// covers, the records it selected, the gaps it does not cover and the
    /// end it has not reached yet.
    ranges: VecDeque<(i64, i64)>,
    /// The next offset the reader will hand over.
    position: i64,
    /// The offsets the partition held at start.
    low: i64,
    high: i64,
    /// What the index said of it (`None`: no usable slice, scanned).
    plan: Option<PartExplain>,
}

/// What the index made of one topic of the query, for `--explain`.
#[derive(Debug, Clone)]
pub struct TopicExplain {
    pub topic: String,
    /// The index topic was there and read.
    pub index: bool,
    /// Per partition: id, offsets at start, and what the index said.
    pub partitions: Vec<(i32, i64, i64, Option<PartExplain>)>,
}

/// What the index made of the query, for `--explain`.
#[derive(Debug, Clone)]
pub struct Explain {
    /// The filter as the planner understood it.
    pub predicate: String,
    pub topics: Vec<TopicExplain>,
}

/// The search for `--from`, while it runs: one probe client per topic, one
/// bracket per partition of the query.
struct Seeking {
    probes: Vec<Reader>,
    brackets: Vec<Bracket>,
}

/// One query, from connecting to the last byte written.
pub struct Dump {
    cfg: DumpConfig,
    sources: Vec<Source>,
    seeking: Option<Seeking>,
    writer: CaptureWriter<File>,
    filter: Option<BpfProgram>,
    merge: Merge,
    parts: Vec<Part>,
    written: u64,
    last_written: u64,
    epoch: Instant,
    /// When a record (or a partition's end) last arrived.
    progress_at: Instant,
    done: bool,
    /// Per partition, the ranges the index selected, to be followed by the
    /// end it does not cover once `--from` is found there.
    planned: Vec<Option<Vec<(i64, i64)>>>,
    /// Some partition is read by the index's ranges.
    planned_any: bool,
    predicate: String,
}

/// The librdkafka settings of a topic's probe: it finds the partitions and
/// their offsets, and serves the `--from` search: one fetch per probe, no
/// prefetch.
const PROBE_SETTINGS: [(&str, &str); 8] = [
    ("enable.partition.eof", "true"),
    ("consume.callback.max.messages", "0"),
    ("enable.auto.commit", "false"),
    ("auto.offset.reset", "earliest"),
    ("queued.min.messages", "1"),
    ("queued.max.messages.kbytes", "1024"),
    ("max.partition.fetch.bytes", "65536"),
    // A probe's queue is never emptied, only moved: no waiting a second
    // (librdkafka's backoff for a full queue) before the next.
    ("fetch.queue.backoff.ms", "0"),
];

impl Dump {
    /// Compiles the filter, connects, finds the topics and their offsets.
    /// Waits up to `cfg.timeout` for each of Kafka's answers.
    pub fn open(cfg: DumpConfig, output: File) -> Result<Dump, DumpError> {
        let filter = match &cfg.filter {
            Some(expr) => {
                Some(BpfProgram::compile_offline(expr, cfg.linktype).map_err(DumpError::Filter)?)
            }
            None => None,
        };
        let mut probes = Vec::with_capacity(cfg.topics.len());
        // Per partition of the query: its topic, and its offsets at start.
        let mut ends: Vec<(usize, (i64, i64))> = Vec::new();
        for (t, topic) in cfg.topics.iter().enumerate() {
            let probe = Reader::connect(
                &cfg.settings,
                &PROBE_SETTINGS,
                &[],
                &topic.name,
                cfg.timeout,
            )?;
            for p in 0..probe.partitions.len() {
                ends.push((t, probe.watermarks(p, cfg.timeout)?));
            }
            probes.push(probe);
        }
        // The readers: the prefetch budget spread over every partition.
        let batch = READ_BATCH.to_string();
        let ours = [
            // Each partition's end is a signal the engine needs.
            ("enable.partition.eof", "true"),
            ("consume.callback.max.messages", batch.as_str()),
            // No group: nothing to commit.
            ("enable.auto.commit", "false"),
            // An offset gone by retention means: from what is left.
            ("auto.offset.reset", "earliest"),
        ];
        let per_queue = (PREFETCH_KBYTES / ends.len())
            .clamp(1 << 10, 8 << 10)
            .to_string();
        let mut defaults = vec![
            ("queued.max.messages.kbytes", per_queue.as_str()),
            // librdkafka's default keeps 100000 records queued per partition
            // whatever their bytes, each with a few hundred bytes of
            // bookkeeping; a few read batches' worth keeps up (docs/dump.md).
            ("queued.min.messages", "5000"),
            // librdkafka waits a whole second before fetching again for a
            // queue that was full; the engine empties queues in turn.
            ("fetch.queue.backoff.ms", "10"),
        ];
        if !cfg.follow {
            // Below the end offsets seen at start the broker always has
            // records; a fetch that finds none (a partition moved to its
            // next range) must not wait librdkafka's half second for more.
            defaults.push(("fetch.wait.max.ms", "1"));
        }
        // Each topic's index: per partition, the ranges it selects and where
        // its coverage ends (`None`: no usable slice, the partition is
        // scanned).
        let predicate = Plan::parse(cfg.filter.as_deref());
        let window = (cfg.start.unwrap_or(0), cfg.end.unwrap_or(u64::MAX));
        let mut sources = Vec::with_capacity(cfg.topics.len());
        let mut plans: Vec<Option<indexed::PartPlan>> = Vec::with_capacity(ends.len());
        for (t, topic) in cfg.topics.iter().enumerate() {
            let reader =
                Reader::connect(&cfg.settings, &ours, &defaults, &topic.name, cfg.timeout)?;
            let catalog = match &topic.index_topic {
                Some(index) => Catalog::read(&cfg.settings, &topic.name, index, cfg.timeout)?,
                None => None,
            };
            let topic_ends = ends.iter().filter(|(of, _)| *of == t).map(|(_, e)| e);
            for (&(low, high), id) in topic_ends.zip(&probes[t].partitions) {
                plans.push(catalog.as_ref().and_then(|catalog| {
                    let slices = catalog.slices.get(id)?;
                    plan_partition(slices, low, high, window, &predicate, cfg.linktype)
                }));
            }
            sources.push(Source {
                name: topic.name.clone(),
                reader,
                index_read: catalog.as_ref().is_some_and(|c| !c.slices.is_empty()),
                counts: DumpSnapshot::default(),
            });
        }
        // Where the rest of each partition (what no slice covers at its
        // end, or all of it) is read from: found by searching the keys for
        // `--from`, as without an index.
        let rest_from: Vec<i64> = ends
            .iter()
            .zip(&plans)
            .map(|(&(_, (low, high)), plan)| match plan {
                None => low,
                Some(plan) => plan.explain.tail_from.unwrap_or(high),
            })
            .collect();
        let mut parts = Vec::with_capacity(ends.len());
        let mut local = 0;
        for (i, (&(source, (low, high)), plan)) in ends.iter().zip(&plans).enumerate() {
            if i > 0 && ends[i - 1].0 != source {
                local = 0;
            }
            parts.push(Part {
                source,
                local,
                stop: if cfg.follow { i64::MAX } else { high },
                past_end: 0,
                ranges: VecDeque::new(),
                position: low,
                low,
                high,
                plan: plan.as_ref().map(|p| p.explain.clone()),
            });
            local += 1;
        }
        let seeking = match cfg.start {
            Some(start) if start > 0 => {
                let target = start.saturating_sub(cfg.reorder_bound_us);
                let target_ms = i64::try_from(target / 1000).unwrap_or(i64::MAX);
                let hints: Vec<Option<i64>> = probes
                    .iter()
                    .flat_map(|probe| probe.offsets_for_time(target_ms, cfg.timeout))
                    .collect();
                let brackets = parts
                    .iter()
                    .zip(&rest_from)
                    .zip(hints)
                    .map(|((part, &from), hint)| {
                        Bracket::new(from, part.high, target).with_hint(hint.filter(|&h| h >= from))
                    })
                    .collect();
                Some(Seeking { probes, brackets })
            }
            _ => None,
        };
        let writer = match cfg.format {
            Format::Pcap => CaptureWriter::pcap(output, cfg.linktype),
            Format::Pcapng => {
                let interfaces: Vec<(String, u32)> = cfg
                    .topics
                    .iter()
                    .map(|t| (t.name.clone(), cfg.linktype))
                    .collect();
                let application = concat!("fastcapa ", env!("CARGO_PKG_VERSION"));
                CaptureWriter::pcapng(output, application, &interfaces)
            }
        };
        let settle = cfg.follow.then_some(SETTLE_MS);
        let mut dump = Dump {
            writer,
            merge: Merge::new(
                parts.len(),
                cfg.reorder_bound_us,
                settle,
                cfg.max_held_bytes,
            ),
            cfg,
            sources,
            seeking,
            filter,
            parts,
            written: 0,
            last_written: 0,
            epoch: Instant::now(),
            progress_at: Instant::now(),
            done: false,
            planned_any: plans.iter().any(Option::is_some),
            planned: plans.into_iter().map(|p| p.map(|p| p.ranges)).collect(),
            predicate: predicate.to_string(),
        };
        if dump.seeking.is_none() {
            dump.start_reading(&rest_from)?;
        }
        Ok(dump)
    }

    /// What the index made of the query (see `--explain`).
    pub fn explain(&self) -> Explain {
        let topics = self
            .sources
            .iter()
            .enumerate()
            .map(|(t, source)| TopicExplain {
                topic: source.name.clone(),
                index: source.index_read,
                partitions: self
                    .parts
                    .iter()
                    .filter(|part| part.source == t)
                    .map(|part| {
                        let id = source.reader.partitions[part.local];
                        (id, part.low, part.high, part.plan.clone())
                    })
                    .collect(),
            })
            .collect();
        Explain {
            predicate: self.predicate.clone(),
            topics,
        }
    }

    /// Starts each partition at its first range: those the index
    /// selected, then the rest from `starts` on (or marks it finished if
    /// there is nothing to read there).
    fn start_reading(&mut self, starts: &[i64]) -> Result<(), DumpError> {
        for (p, &start) in starts.iter().enumerate() {
            let part = &mut self.parts[p];
            part.ranges = self.planned[p].take().unwrap_or_default().into();
            if start < part.stop {
                part.ranges.push_back((start, part.stop));
            }
            match part.ranges.front() {
                None => self.merge.finish(p),
                Some(&(first, _)) => {
                    part.position = first;
                    self.sources[part.source].reader.start(part.local, first)?;
                }
            }
        }
        self.progress_at = Instant::now();
        Ok(())
    }

    /// Works for up to `budget`; true once the query is answered (the file
    /// complete and flushed).
    pub fn step(&mut self, budget: Duration) -> Result<bool, DumpError> {
        let deadline = Instant::now() + budget;
        if self.seeking.is_some() && !self.seek(deadline)? {
            return Ok(false);
        }
        loop {
            self.release()?;
            if self.done || (self.merge.all_finished() && self.merge.held() == 0) {
                self.done = true;
                self.writer.flush()?;
                return Ok(true);
            }
            if Instant::now() >= deadline {
                self.writer.flush()?;
                for source in &self.sources {
                    source.reader.serve_events();
                }
                return Ok(false);
            }
            self.read_next(deadline)?;
        }
    }

    /// Writes everything still waiting, in order, and flushes: the end of
    /// an interrupted dump.
    pub fn finish(&mut self) -> Result<(), DumpError> {
        while !self.done {
            let Some(held) = self.merge.pop() else { break };
            self.write(held)?;
        }
        self.writer.flush()?;
        Ok(())
    }

    /// The counts of every topic added up.
    pub fn counters(&self) -> DumpSnapshot {
        self.sources
            .iter()
            .fold(DumpSnapshot::default(), |sum, s| sum.plus(&s.counts))
    }

    /// Each topic's name and counts, in the query's order.
    pub fn topic_counters(&self) -> Vec<(&str, DumpSnapshot)> {
        self.sources
            .iter()
            .map(|s| (s.name.as_str(), s.counts))
            .collect()
    }

    /// Partitions of every topic of the query.
    pub fn partitions(&self) -> usize {
        self.parts.len()
    }

    fn now_ms(&self) -> u32 {
        self.epoch.elapsed().as_millis().min(u32::MAX as u128) as u32
    }

    /// `topic partition N`, for errors.
    fn describe(&self, p: usize) -> String {
        let part = &self.parts[p];
        let source = &self.sources[part.source];
        format!(
            "{} partition {}",
            source.name, source.reader.partitions[part.local]
        )
    }

    /// One or more rounds of the `--from` search; true once it is over and
    /// reading has started.
    fn seek(&mut self, deadline: Instant) -> Result<bool, DumpError> {
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
    fn read_next(&mut self, deadline: Instant) -> Result<(), DumpError> {
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
        // Following the index, a partition moves from range to range, each
        // move a round trip to the broker: take what every partition has
        // ready first, so their moves overlap instead of queueing behind the
        // laggard. Only while the merge holds little, so reading ahead never
        // pushes it to its memory cap (past which it would write out of order).
        if self.planned_any && self.merge.held_bytes() < self.cfg.max_held_bytes / 4 {
            let mut arrived = false;
            for p in 0..self.parts.len() {
                if !self.merge.is_finished(p) {
                    arrived |= self.read_partition(p, Duration::ZERO)?;
                }
            }
            if arrived {
                return Ok(());
            }
        }
        let Some(p) = self.merge.laggard(|_| true) else {
            return Ok(());
        };
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
            }
        }
        let arrived = records > 0 || signals.end_at.is_some();
        if arrived {
            *progress_at = Instant::now();
        }
        Ok(arrived)
    }

    /// Writes every record the horizon allows.
    fn release(&mut self) -> Result<(), DumpError> {
        let horizon = self.merge.horizon(self.now_ms());
        while !self.done {
            let Some(held) = self.merge.pop_ready(&horizon) else {
                break;
            };
            self.write(held)?;
        }
        Ok(())
    }

    fn write(&mut self, held: Held) -> Result<(), DumpError> {
        let source = self.parts[held.partition as usize].source;
        let counts = &mut self.sources[source].counts;
        if held.key < self.last_written {
            counts.out_of_order += 1;
        }
        self.last_written = self.last_written.max(held.key);
        // Topic `source` is the file's interface `source` (pcapng).
        self.writer
            .write(source as u32, held.key, &held.frame, held.wire_len)?;
        counts.written += 1;
        counts.written_bytes += held.frame.len() as u64;
        self.written += 1;
        if self.cfg.count != 0 && self.written >= self.cfg.count {
            self.done = true;
        }
        Ok(())
    }
}
