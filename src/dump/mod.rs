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
mod open;
pub mod pcap;
pub mod pcapng;
mod read;
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
    /// The reader was sent to a new offset and nothing has arrived since.
    moving: bool,
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
impl Dump {
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
