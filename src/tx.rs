//! The transmit worker: takes frames off its ring lanes in bursts and hands
//! them to its own Kafka producer.
//!
//! Runs on its own native thread and never touches Python. The control
//! plane tells it when to finish through `TxControl`: `finish` once every
//! receive worker feeding its lanes has stopped (drain the lanes, flush the
//! producer until the deadline), or `abort` to stop at once. Whatever it
//! could not hand over by then is counted: frames left on a lane at [tx],
//! messages left in the producer at [kaf] (purged, reported as failed).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::counters::{bump, TxCounters};
use crate::events::{EventKind, EventLog};
use crate::producer::{KafkaProducer, Offer};
use crate::ring::{self, LaneReader};

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
    /// Partition count of the topic when frames go to partitions by flow
    /// (`--partition-by flow`); `None` lets librdkafka's partitioner hash the key.
    pub flow_partitions: Option<u32>,
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
pub fn run(
    mut lanes: Vec<LaneReader>,
    producer: KafkaProducer,
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
    let mut queue_full_since: Option<Instant> = None;
    let mut stalled = false;
    let stall_flags: Vec<_> = lanes.iter().map(|lane| lane.stall_flag()).collect();
    let set_stalled = |value: bool| stall_flags.iter().for_each(|flag| flag.set(value));
    loop {
        let mut moved = 0;
        for lane in &mut lanes {
            let horizon_ms = timestamp_horizon_ms();
            // Counted per burst: one atomic add per figure, not per frame.
            let (mut produced, mut produced_bytes, mut dropped) = (0u64, 0u64, 0u64);
            let taken = lane.pop_burst(config.burst, |slot| {
                let partition = match config.flow_partitions {
                    Some(n) => (slot.flow_hash % n) as i32,
                    None => -1,
                };
                let timestamp_ms = kafka_timestamp_ms(slot.ts_us, horizon_ms);
                loop {
                    match producer.offer(
                        slot.ts_us,
                        timestamp_ms,
                        partition,
                        &slot.data,
                        slot.wire_len,
                    ) {
                        Offer::Queued => {
                            queue_full_since = None;
                            if stalled {
                                stalled = false;
                                set_stalled(false);
                            }
                            produced += 1;
                            produced_bytes += slot.data.len() as u64;
                            break;
                        }
                        Offer::Refused(reason) => {
                            // Counted at [tx]; the reason goes to the operator
                            // (once per reason, then at 10, 100, ... of it).
                            events.record(EventKind::Refused, &reason);
                            dropped += 1;
                            break;
                        }
                        Offer::QueueFull => {
                            // The wait budget runs from when the queue became
                            // full, not per frame: once it is spent, frames are
                            // dropped at once until the queue takes one again.
                            let since = *queue_full_since.get_or_insert_with(Instant::now);
                            if !stalled && since.elapsed() >= STALLED_AFTER {
                                stalled = true;
                                set_stalled(true);
                            }
                            let gave_up = match config.queue_full_wait {
                                Some(limit) => since.elapsed() >= limit,
                                None => false,
                            };
                            let finishing_late =
                                control.finishing() && control.remaining().is_zero();
                            if gave_up || control.aborted() || finishing_late {
                                dropped += 1;
                                break;
                            }
                            // Serving delivery reports is what frees room.
                            producer.serve_reports();
                            std::thread::sleep(QUEUE_FULL_PAUSE);
                        }
                    }
                }
            });
            bump(&counters.dequeued, taken as u64);
            bump(&counters.produced, produced);
            bump(&counters.produced_bytes, produced_bytes);
            bump(&counters.dropped, dropped);
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

/// Kafka brokers refuse record timestamps more than an hour ahead of their
/// clock (`log.message.timestamp.after.max.ms`); capture files hold such
/// times (and zero, and negative ones that wrap), and a frame must not fail
/// for its metadata. Timestamps past this horizon are left to librdkafka.
fn timestamp_horizon_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_millis() as i64 + 3_600_000
}

/// The record's Kafka timestamp: the capture time in ms when it is
/// plausible, else 0 (librdkafka then stamps the time of production).
#[inline]
fn kafka_timestamp_ms(ts_us: u64, horizon_ms: i64) -> i64 {
    let ms = (ts_us / 1000) as i64;
    if ms > 0 && ms <= horizon_ms {
        ms
    } else {
        0
    }
}
