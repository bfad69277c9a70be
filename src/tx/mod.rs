//! The transmit worker: takes frames off its ring lanes in bursts and hands
//! them to its own Kafka producer.
//!
//! Runs on its own native thread and never touches Python. The control
//! plane tells it when to finish through `TxControl`: `finish` once every
//! receive worker feeding its lanes has stopped (drain the lanes, flush the
//! producer until the deadline), or `abort` to stop at once. Whatever it
//! could not hand over by then is counted: frames left on a lane at [tx],
//! messages left in the producer at [kaf] (purged, reported as failed).
//!
//! A worker whose frames the brokers refuse for want of a permission (the
//! topic's WRITE, revoked while running) can deliver nothing more: it says
//! why ([`TxControl::failure`]), for the control plane to stop the capture,
//! purges its producer (counted at [kaf]) and drops what its lanes still
//! bring (at [tx]) until it is told to finish.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::counters::{bump, TxCounters};
use crate::events::{EventKind, EventLog};
use crate::producer::{Batch, KafkaProducer, Offer, UNASSIGNED};

/// What a transmit worker needs of its producer: [`KafkaProducer`], or a
/// fake in the unit tests (the stall and drop paths without a broker).
pub trait Produce {
    /// Produces the batch (see [`KafkaProducer::produce_batch`]); how many
    /// were queued, each message's outcome set.
    fn produce_batch(&self, partition: i32, batch: &mut Batch) -> usize;
    /// Offers one frame alone (a cut one, with its wire length).
    fn offer(&self, ts_us: u64, partition: i32, value: &[u8], wire_len: u32) -> Offer;
    /// Serves delivery reports (which free room in the queue).
    fn serve_reports(&self);
    /// Messages not yet acknowledged or failed.
    fn in_flight(&self) -> usize;
    /// Waits up to `timeout` for every message to be acknowledged, or until
    /// `stop()`; true if none is left.
    fn flush(&self, timeout: Duration, stop: impl Fn() -> bool) -> bool;
    /// Fails everything still queued or in flight.
    fn purge(&self);
    /// Why nothing more can be delivered, once the brokers refused a frame
    /// for want of a permission (see [`KafkaProducer::denied`]).
    fn denied(&self) -> Option<String>;
}

impl Produce for KafkaProducer {
    #[inline]
    fn produce_batch(&self, partition: i32, batch: &mut Batch) -> usize {
        KafkaProducer::produce_batch(self, partition, batch)
    }
    #[inline]
    fn offer(&self, ts_us: u64, partition: i32, value: &[u8], wire_len: u32) -> Offer {
        KafkaProducer::offer(self, ts_us, partition, value, wire_len)
    }
    fn serve_reports(&self) {
        KafkaProducer::serve_reports(self)
    }
    fn in_flight(&self) -> usize {
        KafkaProducer::in_flight(self)
    }
    fn flush(&self, timeout: Duration, stop: impl Fn() -> bool) -> bool {
        KafkaProducer::flush(self, timeout, stop)
    }
    fn purge(&self) {
        KafkaProducer::purge(self)
    }
    fn denied(&self) -> Option<String> {
        KafkaProducer::denied(self)
    }
}
use crate::ring::{self, LaneReader, Slot, StallFlag};

/// Longest park of a worker with nothing to send while messages are still
/// in flight: their delivery reports come back within about `linger.ms`
/// plus a round trip, and are counted when the worker wakes.
const IN_FLIGHT_PARK: Duration = Duration::from_millis(2);
/// Longest park of a worker with nothing to send and nothing in flight. The
/// receive side wakes it as soon as it publishes frames and the control
/// plane when it says finish or abort, so the timeout only bounds how late
/// librdkafka's own events (statistics, errors) are served on an idle link:
/// an idle worker wakes 10 times a second, not 500.
const IDLE_PARK: Duration = Duration::from_millis(100);
/// Sleep between offers to a full producer queue.
const QUEUE_FULL_PAUSE: Duration = Duration::from_micros(200);
/// A producer queue full for this long means Kafka, not the CPU, holds the
/// worker up: its lanes say so, and their receive workers drop at [rx]
/// instead of holding frames back in the kernel's ring.
const STALLED_AFTER: Duration = Duration::from_millis(20);

pub struct TxConfig {
    /// Most frames taken off one lane at once (`-w`).
    pub burst: usize,
    /// How long a frame may wait for room in a full producer queue before it
    /// is dropped at [tx]; `None` waits as long as it takes (a replay, where
    /// nothing is lost by waiting).
    pub queue_full_wait: Option<Duration>,
    /// Which partition each frame goes to.
    pub partitioning: Partitioning,
}

/// `--partition-by` as the operator names it; [`Partitioning`] is the
/// worker's resolved choice, with the topic's partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionMode {
    Key,
    Batch,
    Flow,
}

impl std::str::FromStr for PartitionMode {
    type Err = String;

    fn from_str(text: &str) -> Result<PartitionMode, String> {
        match text {
            "key" => Ok(PartitionMode::Key),
            "batch" => Ok(PartitionMode::Batch),
            "flow" => Ok(PartitionMode::Flow),
            other => Err(format!(
                "unknown partitioning {other:?} (batch, key or flow)"
            )),
        }
    }
}

/// How a transmit worker chooses partitions (`--partition-by`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partitioning {
    /// librdkafka's partitioner on each frame's key (`key`).
    Key,
    /// fastcapa's choice (`batch`, the default): a whole burst to one
    /// partition, the same one until `stint_messages` or `stint_bytes` have
    /// gone to it (so librdkafka fills whole message sets, as Kafka's sticky
    /// partitioner does), then the next of `partitions`, round the list, so
    /// the worker's partitions get equal shares. `partitions` are the
    /// worker's own (see [`Partitioning::batch`]).
    Batch {
        partitions: Vec<i32>,
        stint_messages: usize,
        stint_bytes: usize,
    },
    /// Every frame to partition `flow_hash % partitions` (`flow`): a flow on
    /// one partition, in order.
    Flow { partitions: u32 },
}

impl Partitioning {
    /// The partitioning `mode` means for worker `worker` of `workers` on a
    /// topic of `count` partitions, whose producer fills message sets of
    /// `message_set` (messages, bytes).
    pub fn new(
        mode: PartitionMode,
        count: u32,
        worker: usize,
        workers: usize,
        message_set: (usize, usize),
    ) -> Partitioning {
        match mode {
            PartitionMode::Key => Partitioning::Key,
            PartitionMode::Flow => Partitioning::Flow {
                partitions: count.max(1),
            },
            PartitionMode::Batch => {
                Partitioning::batch(count, worker, workers, message_set.0, message_set.1)
            }
        }
    }

    /// Batch partitioning for worker `worker` of `workers` on a topic of
    /// `count` partitions: each worker owns the partitions `p` with
    /// `p % workers == worker`, so no two workers write to one partition
    /// (two producers interleaving in one partition put its records out of
    /// capture order by as much as one of them lags). With more workers than
    /// partitions, worker `w` shares partition `w % count`.
    pub fn batch(
        count: u32,
        worker: usize,
        workers: usize,
        stint_messages: usize,
        stint_bytes: usize,
    ) -> Partitioning {
        let (count, workers) = (count.max(1) as usize, workers.max(1));
        let partitions = if workers <= count {
            (worker % workers..count)
                .step_by(workers)
                .map(|p| p as i32)
                .collect()
        } else {
            vec![(worker % count) as i32]
        };
        Partitioning::Batch {
            partitions,
            stint_messages: stint_messages.max(1),
            stint_bytes: stint_bytes.max(1),
        }
    }
}

/// Where a batch-partitioning worker is in its round of partitions.
#[derive(Default)]
struct Stint {
    index: usize,
    messages: usize,
    bytes: usize,
}

/// How the control plane steers a running transmit worker.
#[derive(Default)]
pub struct TxControl {
    finishing: AtomicBool,
    abort: AtomicBool,
    /// Deadline of the drain, in ms since `epoch`.
    deadline_ms: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
    /// The worker's thread, unparked when told to finish or abort.
    worker: std::sync::OnceLock<std::thread::Thread>,
    /// Why the worker can deliver nothing more, if it cannot.
    failure: std::sync::OnceLock<String>,
}

impl TxControl {
    fn epoch(&self) -> Instant {
        *self.epoch.get_or_init(Instant::now)
    }

    /// No more frames will arrive: drain the lanes and flush, for at most `drain`.
    pub fn finish(&self, drain: Duration) {
        let deadline = self.epoch().elapsed() + drain;
        self.deadline_ms
            .store(deadline.as_millis() as u64, Ordering::Relaxed);
        self.finishing.store(true, Ordering::Release);
        self.wake_worker();
    }

    /// Stop at once; what is left is counted as dropped.
    pub fn abort(&self) {
        self.abort.store(true, Ordering::Release);
        self.wake_worker();
    }

    /// A parked worker sees the flags now rather than when its park times
    /// out (an unpark before the park makes the park return at once).
    fn wake_worker(&self) {
        if let Some(worker) = self.worker.get() {
            worker.unpark();
        }
    }

    /// Why the worker can deliver nothing more (the control plane then
    /// stops the capture), or `None` while it can.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    fn aborted(&self) -> bool {
        self.abort.load(Ordering::Acquire)
    }

    fn finishing(&self) -> bool {
        self.finishing.load(Ordering::Acquire)
    }

    /// Time left before the drain deadline (zero when aborted or past it).
    fn remaining(&self) -> Duration {
        if self.aborted() {
            return Duration::ZERO;
        }
        let deadline = Duration::from_millis(self.deadline_ms.load(Ordering::Relaxed));
        deadline.saturating_sub(self.epoch().elapsed())
    }
}

/// The worker's loop; returns when finished or aborted.
pub fn run<P: Produce>(
    mut lanes: Vec<LaneReader>,
    producer: P,
    config: TxConfig,
    control: Arc<TxControl>,
    counters: Arc<TxCounters>,
    events: Arc<EventLog>,
) {
    control.epoch();
    let _ = control.worker.set(std::thread::current());
    for lane in &lanes {
        lane.attach_current_thread();
    }
    let stall_flags: Vec<_> = lanes.iter().map(|lane| lane.stall_flag()).collect();
    let mut sender = Sender {
        producer: &producer,
        control: &control,
        events: &events,
        queue_full_wait: config.queue_full_wait,
        stall_flags,
        queue_full_since: None,
        stalled: false,
        counters: &counters,
        handed: 0,
        produced: 0,
        produced_bytes: 0,
        dropped: 0,
    };
    let mut batch = Batch::new(config.burst.min(MAX_BATCH));
    let mut stint = Stint::default();
    let mut denied = false;
    loop {
        if !denied {
            if let Some(reason) = producer.denied() {
                denied = true;
                let _ = control.failure.set(reason);
                producer.purge();
            }
        }
        let mut moved = 0;
        for lane in &mut lanes {
            if denied {
                // Nothing can be delivered: what the lanes bring is dropped
                // here until the control plane has stopped the capture.
                let taken = lane.pop_burst(config.burst, |_| {});
                bump(&counters.dequeued, taken as u64);
                bump(&counters.dropped, taken as u64);
                moved += taken;
                continue;
            }
            // The partition of this burst, for batch partitioning.
            let fixed = match &config.partitioning {
                Partitioning::Batch { partitions, .. } => partitions[stint.index],
                _ => UNASSIGNED,
            };
            let (taken, bytes) = lane.read_burst(config.burst, |burst| {
                let mut bytes = 0;
                for slot in burst {
                    bytes += slot.data.len();
                    sender.handed += 1;
                    let own = match config.partitioning {
                        Partitioning::Flow { partitions } => {
                            Some((slot.flow_hash % partitions) as i32)
                        }
                        _ => None,
                    };
                    if slot.wire_len as usize > slot.data.len() {
                        // A cut frame needs its header, which the batch call
                        // cannot carry: alone, after what came before it.
                        sender.send_batch(fixed, &mut batch);
                        sender.send_one(slot, own.unwrap_or(fixed));
                    } else {
                        if batch.is_full() {
                            sender.send_batch(fixed, &mut batch);
                        }
                        batch.push(slot.ts_us, &slot.data, own);
                    }
                }
                sender.send_batch(fixed, &mut batch);
                bytes
            });
            // Counted per burst: one atomic add per figure, not per frame.
            sender.publish();
            if let Partitioning::Batch {
                partitions,
                stint_messages,
                stint_bytes,
            } = &config.partitioning
            {
                stint.messages += taken;
                stint.bytes += bytes;
                if stint.messages >= *stint_messages || stint.bytes >= *stint_bytes {
                    stint = Stint {
                        index: (stint.index + 1) % partitions.len(),
                        ..Stint::default()
                    };
                }
            }
            moved += taken;
        }
        if moved == 0 {
            if control.aborted() {
                break;
            }
            if control.finishing() && lanes.iter_mut().all(|lane| lane.is_empty()) {
                break;
            }
            if control.finishing() && control.remaining().is_zero() {
                break;
            }
            producer.serve_reports();
            let park = if producer.in_flight() > 0 {
                IN_FLIGHT_PARK
            } else {
                IDLE_PARK
            };
            ring::park(&mut lanes, park);
        } else {
            producer.serve_reports();
        }
    }
    // Frames the rings still hold could not be handed over in time.
    for lane in &mut lanes {
        while lane.pop_burst(usize::MAX, |_| {
            bump(&counters.dequeued, 1);
            bump(&counters.dropped, 1);
        }) > 0
        {}
    }
    let remaining = control.remaining();
    if !remaining.is_zero() {
        producer.flush(remaining, || control.aborted());
    }
    if producer.in_flight() > 0 {
        producer.purge();
    }
    producer.serve_reports();
}

/// Most messages in one `rd_kafka_produce_batch` call (a larger `-w` is
/// sent in calls of this many).
const MAX_BATCH: usize = 4096;

/// Hands frames to the producer and counts what becomes of them, waiting
/// for room in a full producer queue as the worker's configuration says.
struct Sender<'a, P: Produce> {
    producer: &'a P,
    control: &'a TxControl,
    events: &'a EventLog,
    queue_full_wait: Option<Duration>,
    stall_flags: Vec<StallFlag>,
    queue_full_since: Option<Instant>,
    stalled: bool,
    counters: &'a TxCounters,
    /// Frames taken off the lanes and not yet published as dequeued.
    handed: u64,
    produced: u64,
    produced_bytes: u64,
    dropped: u64,
}

impl<P: Produce> Sender<'_, P> {
    /// Adds the burst's counts to the shared counters, each stage's "in"
    /// before its "out" (dequeued, then produced and dropped), so that a
    /// report read meanwhile never shows a stage giving more than it took.
    /// Before every serving of delivery reports too: a delivery counted
    /// before its message was counted produced would show [kaf] giving more
    /// than it took.
    fn publish(&mut self) {
        bump(&self.counters.dequeued, std::mem::take(&mut self.handed));
        bump(&self.counters.produced, std::mem::take(&mut self.produced));
        bump(
            &self.counters.produced_bytes,
            std::mem::take(&mut self.produced_bytes),
        );
        bump(&self.counters.dropped, std::mem::take(&mut self.dropped));
    }

    /// The producer took frames: its queue is not full (any more).
    #[inline]
    fn room(&mut self) {
        self.queue_full_since = None;
        if self.stalled {
            self.stalled = false;
            self.stall_flags.iter().for_each(|flag| flag.set(false));
        }
    }

    /// The producer queue is full: waits a little (serving delivery reports,
    /// which is what frees room) and returns true to try again, or false
    /// when the frames must be dropped.
    fn wait_for_room(&mut self) -> bool {
        // The wait budget runs from when the queue became full, not per
        // frame: once it is spent, frames are dropped at once until the
        // queue takes one again.
        let since = *self.queue_full_since.get_or_insert_with(Instant::now);
        if !self.stalled && since.elapsed() >= STALLED_AFTER {
            self.stalled = true;
            self.stall_flags.iter().for_each(|flag| flag.set(true));
        }
        let gave_up = match self.queue_full_wait {
            Some(limit) => since.elapsed() >= limit,
            None => false,
        };
        let finishing_late = self.control.finishing() && self.control.remaining().is_zero();
        if gave_up || self.control.aborted() || finishing_late {
            return false;
        }
        self.publish();
        self.producer.serve_reports();
        std::thread::sleep(QUEUE_FULL_PAUSE);
        true
    }

    /// A refusal is counted at [tx]; the reason goes to the operator (once
    /// per reason, then at 10, 100, ... of it).
    fn refused(&mut self, reason: &str) {
        self.events.record(EventKind::Refused, reason);
        self.dropped += 1;
    }

    /// Produces the whole batch in as few calls as the queue allows, then
    /// empties it.
    #[inline]
    fn send_batch(&mut self, partition: i32, batch: &mut Batch) {
        while !batch.is_empty() {
            let queued = self.producer.produce_batch(partition, batch);
            let mut done = batch.len();
            if queued == batch.len() {
                self.produced += queued as u64;
                self.produced_bytes += (0..done).map(|i| batch.value_len(i) as u64).sum::<u64>();
            } else {
                // A full queue fails the message it hit and every one after
                // it; other refusals are the message's own.
                for i in 0..batch.len() {
                    match batch.outcome(i) {
                        Offer::Queued => {
                            self.produced += 1;
                            self.produced_bytes += batch.value_len(i) as u64;
                        }
                        Offer::Refused(reason) => self.refused(&reason),
                        Offer::QueueFull => {
                            done = i;
                            break;
                        }
                    }
                }
            }
            if queued > 0 {
                self.room();
            }
            batch.consume(done);
            if batch.is_empty() {
                break;
            }
            if !self.wait_for_room() {
                self.dropped += batch.len() as u64;
                break;
            }
        }
        batch.clear();
    }

    /// Produces one frame alone (a cut one, with its header).
    fn send_one(&mut self, slot: &Slot, partition: i32) {
        loop {
            match self
                .producer
                .offer(slot.ts_us, partition, &slot.data, slot.wire_len)
            {
                Offer::Queued => {
                    self.room();
                    self.produced += 1;
                    self.produced_bytes += slot.data.len() as u64;
                    return;
                }
                Offer::Refused(reason) => return self.refused(&reason),
                Offer::QueueFull => {
                    if !self.wait_for_room() {
                        self.dropped += 1;
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
