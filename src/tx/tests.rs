//! The transmit worker against a fake producer: how frames are produced,
//! waited for, stalled on and dropped when Kafka does not take them, without
//! a broker.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{run, Partitioning, Produce, TxConfig, TxControl};
use crate::counters::TxCounters;
use crate::events::{EventKind, EventLog};
use crate::producer::{Batch, Offer};
use crate::ring::{ring, RingWriter};

/// A producer whose queue is full while `full` is set, which refuses
/// values longer than `refuse_over` bytes for good, and which says it can
/// deliver nothing more once `denied` holds a reason.
#[derive(Default)]
struct Fake {
    full: AtomicBool,
    refuse_over: AtomicUsize,
    /// (capture time, value length, wire length if sent alone) of each
    /// message queued.
    queued: Mutex<Vec<(u64, usize, Option<u32>)>>,
    purged: AtomicBool,
    /// Set: the brokers refused a frame for want of a permission.
    denied: Mutex<Option<String>>,
}

impl Fake {
    fn refused(&self, len: usize) -> bool {
        let limit = self.refuse_over.load(Ordering::Relaxed);
        limit > 0 && len > limit
    }
}

impl Produce for Arc<Fake> {
    fn produce_batch(&self, _partition: i32, batch: &mut Batch) -> usize {
        let mut queued = 0;
        for i in 0..batch.len() {
            if self.full.load(Ordering::Relaxed) {
                for j in i..batch.len() {
                    batch.mark(j, &Offer::QueueFull);
                }
                break;
            }
            if self.refused(batch.value_len(i)) {
                batch.mark(i, &Offer::Refused("too large".into()));
                continue;
            }
            batch.mark(i, &Offer::Queued);
            self.queued
                .lock()
                .unwrap()
                .push((batch.key(i), batch.value_len(i), None));
            queued += 1;
        }
        queued
    }

    fn offer(&self, ts_us: u64, _partition: i32, value: &[u8], wire_len: u32) -> Offer {
        if self.full.load(Ordering::Relaxed) {
            return Offer::QueueFull;
        }
        if self.refused(value.len()) {
            return Offer::Refused("too large".into());
        }
        self.queued
            .lock()
            .unwrap()
            .push((ts_us, value.len(), Some(wire_len)));
        Offer::Queued
    }

    fn serve_reports(&self) {}

    fn in_flight(&self) -> usize {
        0
    }

    fn flush(&self, _timeout: Duration, _stop: impl Fn() -> bool) -> bool {
        true
    }

    fn purge(&self) {
        self.purged.store(true, Ordering::Relaxed);
    }

    fn denied(&self) -> Option<String> {
        self.denied.lock().unwrap().clone()
    }
}

struct Worker {
    writer: RingWriter,
    fake: Arc<Fake>,
    control: Arc<TxControl>,
    counters: Arc<TxCounters>,
    events: Arc<EventLog>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    /// A transmit worker on its own thread, serving one ring of one lane.
    fn start(queue_full_wait: Option<Duration>, fake: Fake) -> Worker {
        let (writer, readers, _) = ring(64, 1, 2048).unwrap();
        let fake = Arc::new(fake);
        let control = Arc::new(TxControl::default());
        let counters = Arc::new(TxCounters::default());
        let events = Arc::new(EventLog::default());
        let config = TxConfig {
            burst: 8,
            queue_full_wait,
            partitioning: Partitioning::Key,
        };
        let thread = {
            let (fake, control, counters, events) = (
                fake.clone(),
                control.clone(),
                counters.clone(),
                events.clone(),
            );
            std::thread::spawn(move || run(readers, fake, config, control, counters, events))
        };
        Worker {
            writer,
            fake,
            control,
            counters,
            events,
            thread: Some(thread),
        }
    }

    /// Frames `first..first + n`, `len` bytes each, cut to `len` from
    /// `wire_len` when that is longer.
    fn push(&mut self, first: u64, n: u64, len: usize, wire_len: u32) {
        for ts in first..first + n {
            assert!(self.writer.push_with(0, |slot| {
                slot.ts_us = ts;
                slot.wire_len = wire_len;
                slot.data.clear();
                slot.data.resize(len, 0xab);
            }));
        }
        self.writer.wake_idle();
    }

    fn counts(&self) -> (u64, u64, u64) {
        let c = self.counters.snapshot();
        (c.dequeued, c.produced, c.dropped)
    }

    /// Finishes (drain budget `drain`) and waits for the thread.
    fn finish(mut self, drain: Duration) -> (u64, u64, u64) {
        self.control.finish(drain);
        self.thread.take().unwrap().join().unwrap();
        self.counts()
    }
}

/// Waits (up to 10 s) until `done` holds.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_live_worker_stalls_then_drops_then_recovers() {
    let mut w = Worker::start(Some(Duration::from_millis(100)), Fake::default());
    w.fake.full.store(true, Ordering::Relaxed);
    w.push(0, 10, 60, 60);
    // Kafka holds the worker up: its lane says so, so the receive side
    // drops instead of holding frames in the kernel's ring...
    eventually("the lane says stalled", || w.writer.stalled(0));
    // ...and past the wait, what the producer will not take is dropped at [tx].
    eventually("10 dropped", || w.counts() == (10, 0, 10));
    w.fake.full.store(false, Ordering::Relaxed);
    w.push(10, 5, 60, 60);
    eventually("5 produced", || w.counts() == (15, 5, 10));
    assert!(!w.writer.stalled(0), "room again: no longer stalled");
    let fake = w.fake.clone();
    assert_eq!(w.finish(Duration::from_secs(1)), (15, 5, 10));
    let times: Vec<u64> = fake.queued.lock().unwrap().iter().map(|q| q.0).collect();
    assert_eq!(times, (10..15).collect::<Vec<_>>());
}

#[test]
fn a_replay_waits_for_room_and_loses_nothing() {
    let mut w = Worker::start(None, Fake::default());
    w.fake.full.store(true, Ordering::Relaxed);
    w.push(0, 20, 60, 60);
    eventually("the lane says stalled", || w.writer.stalled(0));
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(w.counts().2, 0, "nothing dropped while waiting");
    w.fake.full.store(false, Ordering::Relaxed);
    eventually("20 produced", || w.counts() == (20, 20, 0));
    let fake = w.fake.clone();
    assert_eq!(w.finish(Duration::from_secs(1)), (20, 20, 0));
    let times: Vec<u64> = fake.queued.lock().unwrap().iter().map(|q| q.0).collect();
    assert_eq!(times, (0..20).collect::<Vec<_>>(), "in ring order");
}

#[test]
fn refusals_are_dropped_and_said_and_the_rest_goes_on() {
    let fake = Fake::default();
    fake.refuse_over.store(100, Ordering::Relaxed);
    let mut w = Worker::start(Some(Duration::from_millis(100)), fake);
    w.push(0, 3, 60, 60);
    w.push(3, 2, 200, 200); // refused in a batch
    w.push(5, 1, 150, 1500); // cut: sent alone, refused
    w.push(6, 1, 80, 1500); // cut: sent alone with its wire length
    w.push(7, 3, 60, 60);
    eventually("all handled", || w.counts() == (10, 7, 3));
    let (events, _) = w.events.drain();
    assert!(
        events.iter().any(|e| e.kind == EventKind::Refused),
        "{events:?}"
    );
    let fake = w.fake.clone();
    assert_eq!(w.finish(Duration::from_secs(1)), (10, 7, 3));
    let queued = fake.queued.lock().unwrap().clone();
    assert_eq!(
        queued.iter().map(|q| q.0).collect::<Vec<_>>(),
        vec![0, 1, 2, 6, 7, 8, 9]
    );
    assert_eq!(
        queued[3],
        (6, 80, Some(1500)),
        "the cut frame, with its wire length"
    );
}

#[test]
fn an_abort_while_kafka_is_full_stops_at_once_and_counts_the_rest() {
    let mut w = Worker::start(None, Fake::default());
    w.fake.full.store(true, Ordering::Relaxed);
    w.push(0, 30, 60, 60);
    eventually("the lane says stalled", || w.writer.stalled(0));
    w.control.abort();
    let thread = w.thread.take().unwrap();
    thread.join().unwrap();
    let (dequeued, produced, dropped) = w.counts();
    assert_eq!(
        (dequeued, produced + dropped),
        (30, 30),
        "every frame accounted"
    );
    assert_eq!(produced, 0);
}

#[test]
fn a_denied_permission_stops_the_worker_and_every_frame_is_counted() {
    let mut w = Worker::start(Some(Duration::from_millis(100)), Fake::default());
    w.push(0, 5, 60, 60);
    eventually("5 produced", || w.counts() == (5, 5, 0));
    assert_eq!(w.control.failure(), None);
    *w.fake.denied.lock().unwrap() = Some("topic t: refused".into());
    // The worker notices at its next wake, purges its producer...
    w.push(5, 3, 60, 60);
    eventually("the failure said", || w.control.failure().is_some());
    assert_eq!(w.control.failure(), Some("topic t: refused"));
    eventually("purged", || w.fake.purged.load(Ordering::Relaxed));
    // ...and drops what its lanes bring until it is told to finish.
    w.push(8, 4, 60, 60);
    w.push(12, 2, 150, 1500);
    eventually("all taken", || w.counts().0 == 14);
    let fake = w.fake.clone();
    let (dequeued, produced, dropped) = w.finish(Duration::from_secs(1));
    assert_eq!(dequeued, 14);
    assert_eq!(produced + dropped, 14, "every frame accounted");
    assert!(
        dropped >= 6,
        "at least those pushed after the failure: {dropped}"
    );
    assert_eq!(fake.queued.lock().unwrap().len() as u64, produced);
}

fn owned(count: u32, worker: usize, workers: usize) -> Vec<i32> {
    match Partitioning::batch(count, worker, workers, 10, 10) {
        Partitioning::Batch { partitions, .. } => partitions,
        other => panic!("{other:?}"),
    }
}

#[test]
fn workers_own_disjoint_partitions_covering_the_topic() {
    for (count, workers) in [(8, 1), (8, 2), (8, 3), (4, 4), (1, 1)] {
        let mut all: Vec<i32> = (0..workers)
            .flat_map(|w| owned(count, w, workers))
            .collect();
        all.sort();
        assert_eq!(
            all,
            (0..count as i32).collect::<Vec<_>>(),
            "{count} {workers}"
        );
    }
    assert_eq!(owned(8, 1, 3), vec![1, 4, 7]);
}

#[test]
fn more_workers_than_partitions_share_them_round() {
    assert_eq!(owned(2, 0, 3), vec![0]);
    assert_eq!(owned(2, 1, 3), vec![1]);
    assert_eq!(owned(2, 2, 3), vec![0]);
}
