//! The receive loop against a fake queue: order, the books at a stop,
//! back-pressure from a full ring, drops once Kafka stalls, `--count`, and a
//! link that goes down and comes back; no socket, no root.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{run, Idle, RxConfig, RxShared};
use crate::counters::{RxCounters, RxSnapshot};
use crate::events::{EventKind, EventLog};
use crate::ring::{ring, LaneReader};
use crate::source::{CaptureError, Frame, RxQueue};

/// What the "kernel" holds for the fake queue, shared with the test.
#[derive(Default)]
struct Wire {
    /// Frames arrived and not yet taken (capture time, bytes).
    ready: VecDeque<(u64, Vec<u8>)>,
    /// Frames arrived since the last `take_stats`.
    arrived: u64,
    intake_closed: bool,
    /// The next `wait` reports the link down; `link_up` says false until
    /// `link_back` is set.
    link_down: bool,
    link_back: bool,
}

#[derive(Clone, Default)]
struct FakeQueue(Arc<Mutex<Wire>>);

impl FakeQueue {
    /// Frames arrive; refused (not counted) once the intake is closed.
    fn arrive(&self, first: u64, n: u64) {
        let mut wire = self.0.lock().unwrap();
        if wire.intake_closed {
            return;
        }
        for ts in first..first + n {
            wire.ready.push_back((ts, ts.to_be_bytes().repeat(8)));
            wire.arrived += 1;
        }
    }

    fn waiting(&self) -> usize {
        self.0.lock().unwrap().ready.len()
    }
}

impl RxQueue for FakeQueue {
    fn take<F: FnMut(&Frame<'_>) -> bool>(&mut self, mut each: F) -> usize {
        let mut wire = self.0.lock().unwrap();
        let mut accepted = 0;
        while accepted < 16 {
            let Some((ts, data)) = wire.ready.front() else {
                break;
            };
            let frame = Frame {
                ts_us: *ts,
                wire_len: data.len() as u32,
                data,
                vlan_tci: None,
                vlan_tpid: None,
            };
            if !each(&frame) {
                break;
            }
            wire.ready.pop_front();
            accepted += 1;
        }
        accepted
    }

    fn wait(&mut self, timeout: Duration) -> Result<bool, CaptureError> {
        {
            let mut wire = self.0.lock().unwrap();
            if std::mem::take(&mut wire.link_down) {
                return Err(CaptureError::InterfaceDown("fake0".into()));
            }
            if !wire.ready.is_empty() {
                return Ok(true);
            }
        }
        std::thread::sleep(timeout.min(Duration::from_millis(2)));
        Ok(false)
    }

    fn link_up(&self) -> bool {
        self.0.lock().unwrap().link_back
    }

    fn take_stats(&mut self) -> Result<(u64, u64), CaptureError> {
        Ok((std::mem::take(&mut self.0.lock().unwrap().arrived), 0))
    }

    fn close_intake(&mut self) -> Result<Duration, CaptureError> {
        self.0.lock().unwrap().intake_closed = true;
        Ok(Duration::ZERO)
    }

    fn name(&self) -> &str {
        "fake0"
    }
}

struct Worker {
    queue: FakeQueue,
    lane: LaneReader,
    shared: Arc<RxShared>,
    counters: Arc<RxCounters>,
    events: Arc<EventLog>,
    thread: std::thread::JoinHandle<Result<(), CaptureError>>,
}

impl Worker {
    /// A receive worker on its own thread, from a fake queue into a ring of
    /// `slots` (one lane, which the test reads).
    fn start(slots: usize, count: u64) -> Worker {
        let queue = FakeQueue::default();
        let (writer, mut lanes, _) = ring(slots, 1, 64).unwrap();
        let shared = Arc::new(RxShared::new(count));
        let counters = Arc::new(RxCounters::default());
        let events = Arc::new(EventLog::default());
        let config = RxConfig {
            burst: 8,
            idle: Idle::Poll,
            snaplen: 0,
            hash_flows: false,
            cpu: None,
        };
        let thread = {
            let (queue, shared, counters, events) = (
                queue.clone(),
                shared.clone(),
                counters.clone(),
                events.clone(),
            );
            std::thread::spawn(move || run(queue, writer, config, shared, counters, events))
        };
        Worker {
            queue,
            lane: lanes.remove(0),
            shared,
            counters,
            events,
            thread,
        }
    }

    fn counts(&self) -> RxSnapshot {
        self.counters.snapshot()
    }

    /// Capture times of what the ring holds, taking it out.
    fn drain_ring(&mut self) -> Vec<u64> {
        let mut times = Vec::new();
        while self
            .lane
            .pop_burst(usize::MAX, |slot| times.push(slot.ts_us))
            > 0
        {}
        times
    }

    fn stop(self) -> (RxSnapshot, Self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    fn join(mut self) -> (RxSnapshot, Self) {
        let thread = std::mem::replace(&mut self.thread, std::thread::spawn(|| Ok(())));
        thread.join().unwrap().unwrap();
        (self.counts(), self)
    }
}

/// Waits (up to 10 s) until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Every frame the kernel counted is taken, and every frame taken is
/// enqueued or dropped at [rx].
fn assert_books_balance(c: &RxSnapshot) {
    assert_eq!(c.nic_packets, c.taken + c.nic_drops, "{c:?}");
    assert_eq!(c.taken, c.enqueued + c.ring_full, "{c:?}");
}

#[test]
fn frames_go_into_the_ring_in_order_and_the_books_balance_at_a_stop() {
    let w = Worker::start(4096, 0);
    w.queue.arrive(0, 1000);
    eventually("1000 taken", || w.counts().taken == 1000);
    w.queue.arrive(1000, 500);
    let (c, mut w) = w.stop();
    // Everything that arrived before the stop closed the intake is taken.
    assert_eq!((c.taken, c.enqueued, c.ring_full), (1500, 1500, 0));
    assert_books_balance(&c);
    assert_eq!(w.drain_ring(), (0..1500).collect::<Vec<_>>());
    w.queue.arrive(2000, 10);
    assert_eq!(w.queue.waiting(), 0, "the intake stays closed");
}

#[test]
fn a_full_ring_holds_frames_in_the_queue_until_kafka_stalls_then_drops() {
    let mut w = Worker::start(16, 0);
    w.queue.arrive(0, 100);
    eventually("the ring is full", || w.counts().taken == 16);
    std::thread::sleep(Duration::from_millis(50));
    // The transmit side is only slow: frames wait in the queue, none is lost.
    assert_eq!((w.counts().taken, w.counts().ring_full), (16, 0));
    assert_eq!(w.queue.waiting(), 84);
    // Room again: they move on, in order.
    let mut seen = w.drain_ring();
    eventually("32 taken", || w.counts().taken >= 32);
    seen.extend(w.drain_ring());
    assert_eq!(seen, (0..seen.len() as u64).collect::<Vec<_>>());
    // Kafka stalls the transmit worker: the receive side drops at [rx]
    // rather than hold the kernel's ring.
    w.lane.stall_flag().set(true);
    eventually("all 100 taken", || w.counts().taken == 100);
    let (c, _) = w.stop();
    assert!(c.ring_full > 0);
    assert_books_balance(&c);
    assert_eq!(c.enqueued + c.ring_full, 100);
}

#[test]
fn count_stops_the_worker_after_that_many_frames() {
    let w = Worker::start(4096, 50);
    w.queue.arrive(0, 200);
    let (c, _) = w.join();
    assert!(c.taken >= 50 && c.taken <= 200, "{c:?}");
    assert_books_balance(&c);
}

#[test]
fn a_link_that_goes_down_is_said_and_reading_resumes_when_it_is_back() {
    let w = Worker::start(4096, 0);
    w.queue.0.lock().unwrap().link_down = true;
    eventually("the link is down", || {
        w.events
            .drain()
            .0
            .iter()
            .any(|e| e.kind == EventKind::InterfaceDown)
    });
    w.queue.0.lock().unwrap().link_back = true;
    eventually("the link is back", || {
        w.events
            .drain()
            .0
            .iter()
            .any(|e| e.kind == EventKind::InterfaceUp)
    });
    w.queue.arrive(0, 10);
    eventually("10 taken", || w.counts().taken == 10);
    let (c, _) = w.stop();
    assert_books_balance(&c);
}
