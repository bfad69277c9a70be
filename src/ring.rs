//! The transmit ring: a fixed-size, lock-free ring of preallocated frame slots
//! between one receive worker and one or more transmit workers.
//!
//! A ring is made of one *lane* per transmit worker that serves it. Each lane
//! is a single-producer single-consumer queue (the shape of rtrb and DPDK's
//! `rte_ring` in SP/SC mode): the receive worker writes frames in place into
//! slots at the tail, the transmit worker reads them in place at the head and
//! hands the slot back by moving the head. Slots own a `Vec<u8>` that keeps
//! its capacity, so once every slot has held its largest frame there is no
//! allocation per packet. With several transmit workers on one ring, each
//! gets its own lane and the receive worker picks the lane by flow hash, so
//! the packets of one flow stay in order on one worker.
//!
//! Head and tail live on separate cache lines, and each side keeps a cached
//! copy of the other side's index, reloading it (Acquire) only when the lane
//! looks full, or holds less than the burst asked for.
//!
//! A consumer with nothing to do parks its thread rather than polling on a
//! timer; each lane has a doorbell the producer rings when it publishes into
//! a lane whose consumer is parked. `push_with` looks at the doorbell with
//! one relaxed load (a wake can be missed in a narrow race: the consumer
//! parks with a timeout, so that costs at most the timeout); `wake_idle`
//! after a burst is exact (a SeqCst fence against the consumer's).

use std::cell::UnsafeCell;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;

/// Bytes of frame a slot holds without growing its buffer: whole frames
/// of a standard MTU, and any frame cut to a snaplen up to this.
pub const SLOT_DATA_BYTES: usize = 2048;

/// A slot's own bytes besides its frame buffer (for the memory budget).
pub const SLOT_OVERHEAD_BYTES: usize = std::mem::size_of::<Slot>();

/// One frame waiting for a transmit worker.
#[derive(Debug, Default)]
pub struct Slot {
    /// Capture time, microseconds since the Unix epoch (the Kafka key).
    pub ts_us: u64,
    /// Length of the frame on the wire (may exceed `data.len()` when cut).
    pub wire_len: u32,
    /// Flow hash of the frame (used for `--partition-by flow`).
    pub flow_hash: u32,
    /// The frame as captured.
    pub data: Vec<u8>,
}

#[repr(align(128))]
struct Padded<T>(T);

struct Lane {
    /// Next slot the consumer reads; written only by the consumer.
    head: Padded<AtomicUsize>,
    /// Next slot the producer writes; written only by the producer.
    tail: Padded<AtomicUsize>,
    /// How the producer wakes a parked consumer.
    bell: Padded<Doorbell>,
    slots: Box<[UnsafeCell<Slot>]>,
    mask: usize,
}

/// Written only when the consumer parks or is woken, so the producer's look
/// at `parked` hits a cache line that stays shared while frames flow.
#[derive(Default)]
struct Doorbell {
    /// The consumer is stuck on Kafka (a full producer queue), not merely
    /// slower than the producer: frames the lane has no room for are dropped
    /// rather than waited for.
    stalled: AtomicBool,
    /// The consumer is parked, or about to be.
    parked: AtomicBool,
    /// The consumer's thread, known once it starts reading.
    thread: OnceLock<Thread>,
    /// The producer is parked waiting for room, or about to be.
    writer_parked: AtomicBool,
    /// The producer's thread, known once it first waits for room.
    writer: OnceLock<Thread>,
}

impl Doorbell {
    /// Wakes the consumer if it is parked (one unpark per park).
    #[cold]
    fn ring(&self) {
        if self.parked.swap(false, Ordering::AcqRel) {
            if let Some(thread) = self.thread.get() {
                thread.unpark();
            }
        }
    }

    /// Wakes the producer if it is parked waiting for room.
    #[cold]
    fn ring_writer(&self) {
        if self.writer_parked.swap(false, Ordering::AcqRel) {
            if let Some(thread) = self.writer.get() {
                thread.unpark();
            }
        }
    }
}

// SAFETY: a slot is touched by the producer only while it lies in
// [tail, head + capacity) and by the consumer only while it lies in
// [head, tail); the Release/Acquire pairs on head and tail hand each slot over
// with all its writes visible, so no slot is ever accessed from two threads at
// once.
unsafe impl Sync for Lane {}
// SAFETY: see above; the slots themselves are plain owned data.
unsafe impl Send for Lane {}

impl Lane {
    fn fill(&self) -> usize {
        let tail = self.tail.0.load(Ordering::Relaxed);
        let head = self.head.0.load(Ordering::Relaxed);
        tail.wrapping_sub(head).min(self.slots.len())
    }
}

/// Error for a ring size that is not a power of two, or zero lanes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    #[error("transmit ring size must be a power of two between 2 and 2^24, got {0}")]
    BadSize(usize),
    #[error("a transmit ring needs at least one lane")]
    NoLanes,
}

/// Creates the lanes of one transmit ring, each of `capacity` slots whose
/// buffers are preallocated to `slot_bytes`.
pub fn ring(
    capacity: usize,
    lanes: usize,
    slot_bytes: usize,
) -> Result<(RingWriter, Vec<LaneReader>, RingGauge), RingError> {
    if !capacity.is_power_of_two() || !(2..=1 << 24).contains(&capacity) {
        return Err(RingError::BadSize(capacity));
    }
    if lanes == 0 {
        return Err(RingError::NoLanes);
    }
    let shared: Vec<Arc<Lane>> = (0..lanes)
        .map(|_| {
            Arc::new(Lane {
                head: Padded(AtomicUsize::new(0)),
                tail: Padded(AtomicUsize::new(0)),
                bell: Padded(Doorbell::default()),
                slots: (0..capacity)
                    .map(|_| {
                        UnsafeCell::new(Slot {
                            data: Vec::with_capacity(slot_bytes),
                            ..Slot::default()
                        })
                    })
                    .collect(),
                mask: capacity - 1,
            })
        })
        .collect();
    let writer = RingWriter {
        lanes: shared
            .iter()
            .map(|lane| LaneWriter {
                lane: Arc::clone(lane),
                tail: 0,
                cached_head: 0,
            })
            .collect(),
    };
    let readers = shared
        .iter()
        .map(|lane| LaneReader {
            lane: Arc::clone(lane),
            head: 0,
            cached_tail: 0,
        })
        .collect();
    Ok((writer, readers, RingGauge { lanes: shared }))
}

/// The producer half of one lane. Owned by one receive worker.
pub struct LaneWriter {
    lane: Arc<Lane>,
    tail: usize,
    cached_head: usize,
}

impl LaneWriter {
    /// Fills the next free slot with `fill`, publishes it, and wakes the
    /// consumer if it is parked. Returns false, without calling `fill`, when
    /// the lane is full.
    #[inline]
    pub fn push_with(&mut self, fill: impl FnOnce(&mut Slot)) -> bool {
        let pushed = self.push_quiet(fill);
        if pushed {
            self.wake_idle();
        }
        pushed
    }

    /// `push_with` without the wake: the caller wakes the consumer itself
    /// (`RingWriter::wake_idle`) once it has published a batch.
    #[inline]
    pub fn push_quiet(&mut self, fill: impl FnOnce(&mut Slot)) -> bool {
        let capacity = self.lane.slots.len();
        if self.tail.wrapping_sub(self.cached_head) == capacity {
            self.cached_head = self.lane.head.0.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.cached_head) == capacity {
                return false;
            }
        }
        let cell = &self.lane.slots[self.tail & self.lane.mask];
        // SAFETY: the slot at `tail` is outside [head, tail), so the consumer
        // does not touch it until the Release store below publishes it.
        fill(unsafe { &mut *cell.get() });
        self.tail = self.tail.wrapping_add(1);
        self.lane.tail.0.store(self.tail, Ordering::Release);
        true
    }

    /// Wakes the consumer if it is parked (one relaxed load when it is not).
    #[inline]
    fn wake_idle(&self) {
        if self.lane.bell.0.parked.load(Ordering::Relaxed) {
            self.lane.bell.0.ring();
        }
    }
}

/// The producer side of a whole ring: one writer per lane.
pub struct RingWriter {
    lanes: Vec<LaneWriter>,
}

impl RingWriter {
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// The lane a frame of `flow_hash` goes to: each flow keeps to one lane.
    #[inline]
    fn lane_of(&self, flow_hash: u32) -> usize {
        let n = self.lanes.len();
        if n == 1 {
            0
        } else {
            flow_hash as usize % n
        }
    }

    /// Pushes into the lane chosen by `flow_hash`; false when that lane is full.
    #[inline]
    pub fn push_with(&mut self, flow_hash: u32, fill: impl FnOnce(&mut Slot)) -> bool {
        let lane = self.lane_of(flow_hash);
        self.lanes[lane].push_with(fill)
    }

    /// Pushes into the lane chosen by `flow_hash` without waking its
    /// consumer: a source that publishes many frames in a row (a capture
    /// file) wakes it once per batch with `wake_idle`, so the consumer finds
    /// a burst rather than one frame each time it wakes.
    #[inline]
    pub fn push_quiet(&mut self, flow_hash: u32, fill: impl FnOnce(&mut Slot)) -> bool {
        let lane = self.lane_of(flow_hash);
        self.lanes[lane].push_quiet(fill)
    }

    /// Waits until the lane `flow_hash` picks is at most half full, or
    /// `timeout` passes: the consumer wakes the producer once it has made
    /// that much room, so a producer faster than its consumer moves in
    /// half-ring batches instead of waking for every few slots.
    pub fn wait_for_room(&mut self, flow_hash: u32, timeout: std::time::Duration) {
        let lane = self.lane_of(flow_hash);
        let writer = &mut self.lanes[lane];
        let bell = &writer.lane.bell.0;
        let _ = bell.writer.set(std::thread::current());
        bell.writer_parked.store(true, Ordering::SeqCst);
        // Pairs with the consumer's fence in `pop_burst`.
        fence(Ordering::SeqCst);
        let capacity = writer.lane.slots.len();
        writer.cached_head = writer.lane.head.0.load(Ordering::Acquire);
        if writer.tail.wrapping_sub(writer.cached_head) > capacity / 2 {
            std::thread::park_timeout(timeout);
        }
        bell.writer_parked.store(false, Ordering::Relaxed);
    }

    /// Whether the consumer of the lane `flow_hash` picks is stuck on Kafka.
    #[inline]
    pub fn stalled(&self, flow_hash: u32) -> bool {
        self.lanes[self.lane_of(flow_hash)]
            .lane
            .bell
            .0
            .stalled
            .load(Ordering::Relaxed)
    }

    /// After a burst: wakes every consumer that parked before seeing it.
    /// The fence pairs with the one in `LaneReader::park`: either the
    /// consumer sees the new tail before it parks, or we see it parked.
    pub fn wake_idle(&self) {
        fence(Ordering::SeqCst);
        for lane in &self.lanes {
            lane.wake_idle();
        }
    }
}

/// The consumer half of one lane. Owned by one transmit worker.
pub struct LaneReader {
    lane: Arc<Lane>,
    head: usize,
    cached_tail: usize,
}

impl LaneReader {
    /// Calls `each` on up to `max` waiting slots, oldest first, then hands
    /// them all back to the producer at once. Returns how many it read.
    #[inline]
    pub fn pop_burst(&mut self, max: usize, each: impl FnMut(&Slot)) -> usize {
        self.read_burst(max, |burst| burst.for_each(each)).0
    }

    /// Lends up to `max` waiting slots, oldest first, to `read` all at once
    /// (so that one call can hand a whole burst to Kafka), then hands them
    /// all back to the producer. Returns how many it lent, and what `read`
    /// returned.
    #[inline]
    pub fn read_burst<R>(&mut self, max: usize, read: impl FnOnce(Burst<'_>) -> R) -> (usize, R) {
        // Reload the producer's index only when what we know of is less than
        // a full burst: one Acquire load per burst at most.
        if self.cached_tail.wrapping_sub(self.head) < max {
            self.cached_tail = self.lane.tail.0.load(Ordering::Acquire);
        }
        let n = self.cached_tail.wrapping_sub(self.head).min(max);
        let result = read(Burst {
            lane: &self.lane,
            next: self.head,
            end: self.head.wrapping_add(n),
        });
        if n > 0 {
            self.head = self.head.wrapping_add(n);
            self.lane.head.0.store(self.head, Ordering::Release);
            let bell = &self.lane.bell.0;
            if bell.writer_parked.load(Ordering::Relaxed) {
                // Pairs with the producer's fence in `wait_for_room`.
                fence(Ordering::SeqCst);
                let fill = self
                    .lane
                    .tail
                    .0
                    .load(Ordering::Acquire)
                    .wrapping_sub(self.head);
                if fill <= self.lane.slots.len() / 2 {
                    bell.ring_writer();
                }
            }
        }
        (n, result)
    }

    /// True when nothing is waiting (reloads the producer's index).
    pub fn is_empty(&mut self) -> bool {
        self.cached_tail = self.lane.tail.0.load(Ordering::Acquire);
        self.cached_tail == self.head
    }

    /// A handle through which the consumer tells the producer it is stuck
    /// on Kafka (usable while the reader itself is borrowed).
    pub fn stall_flag(&self) -> StallFlag {
        StallFlag(Arc::clone(&self.lane))
    }

    /// Makes the calling thread the one this lane's producer wakes.
    pub fn attach_current_thread(&self) {
        let _ = self.lane.bell.0.thread.set(std::thread::current());
    }
}

/// The slots of one burst, oldest first (see [`LaneReader::read_burst`]).
pub struct Burst<'a> {
    lane: &'a Lane,
    next: usize,
    end: usize,
}

impl<'a> Iterator for Burst<'a> {
    type Item = &'a Slot;

    #[inline]
    fn next(&mut self) -> Option<&'a Slot> {
        if self.next == self.end {
            return None;
        }
        let cell = &self.lane.slots[self.next & self.lane.mask];
        self.next = self.next.wrapping_add(1);
        // SAFETY: slots in [head, tail) were published by the producer's
        // Release store (seen by the reader's Acquire load) and are not
        // written again until the reader's Release store of head, which
        // `read_burst` makes only after the `Burst` borrowing them is gone.
        Some(unsafe { &*cell.get() })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end.wrapping_sub(self.next);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Burst<'_> {}

/// See [`LaneReader::stall_flag`].
pub struct StallFlag(Arc<Lane>);

impl StallFlag {
    pub fn set(&self, stalled: bool) {
        self.0.bell.0.stalled.store(stalled, Ordering::Relaxed);
    }
}

/// Parks the calling thread (attached to every lane of `lanes`) until a
/// producer publishes into one of them, or `timeout` passes. Returns at
/// once if a lane already holds frames.
pub fn park(lanes: &mut [LaneReader], timeout: std::time::Duration) {
    for lane in lanes.iter() {
        lane.lane.bell.0.parked.store(true, Ordering::SeqCst);
    }
    // Pairs with the producer's fence in `RingWriter::wake_idle`.
    fence(Ordering::SeqCst);
    if lanes.iter_mut().all(|lane| lane.is_empty()) {
        std::thread::park_timeout(timeout);
    }
    for lane in lanes.iter() {
        lane.lane.bell.0.parked.store(false, Ordering::Relaxed);
    }
}

/// A read-only view of a ring's fill level, for statistics.
#[derive(Clone)]
pub struct RingGauge {
    lanes: Vec<Arc<Lane>>,
}

impl RingGauge {
    /// Frames waiting in the ring, summed over its lanes.
    pub fn fill(&self) -> usize {
        self.lanes.iter().map(|lane| lane.fill()).sum()
    }

    /// Slots in the ring, summed over its lanes.
    pub fn capacity(&self) -> usize {
        self.lanes.iter().map(|lane| lane.slots.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_sizes_that_are_not_powers_of_two() {
        assert_eq!(ring(1000, 1, 64).err(), Some(RingError::BadSize(1000)));
        assert_eq!(ring(0, 1, 64).err(), Some(RingError::BadSize(0)));
        assert_eq!(ring(1, 1, 64).err(), Some(RingError::BadSize(1)));
        assert_eq!(ring(8, 0, 64).err(), Some(RingError::NoLanes));
        assert!(ring(1024, 2, 64).is_ok());
    }

    #[test]
    fn full_lane_refuses_and_empty_lane_yields_nothing() {
        let (mut writer, mut readers, gauge) = ring(4, 1, 16).unwrap();
        for i in 0..4 {
            assert!(writer.push_with(0, |s| s.ts_us = i));
        }
        assert!(!writer.push_with(0, |_| panic!("must not fill a slot of a full lane")));
        assert_eq!(gauge.fill(), 4);
        let mut seen = vec![];
        assert_eq!(readers[0].pop_burst(3, |s| seen.push(s.ts_us)), 3);
        assert_eq!(seen, vec![0, 1, 2]);
        assert!(writer.push_with(0, |s| s.ts_us = 4));
        assert_eq!(readers[0].pop_burst(10, |s| seen.push(s.ts_us)), 2);
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        assert!(readers[0].is_empty());
        assert_eq!(readers[0].pop_burst(10, |_| unreachable!()), 0);
    }

    #[test]
    fn lanes_follow_the_flow_hash() {
        let (mut writer, mut readers, _) = ring(8, 2, 16).unwrap();
        assert!(writer.push_with(3, |s| s.ts_us = 3));
        assert!(writer.push_with(4, |s| s.ts_us = 4));
        let mut lane0 = vec![];
        readers[0].pop_burst(8, |s| lane0.push(s.ts_us));
        let mut lane1 = vec![];
        readers[1].pop_burst(8, |s| lane1.push(s.ts_us));
        assert_eq!((lane0, lane1), (vec![4], vec![3]));
    }

    /// A parked consumer is woken by the producer's push, long before the
    /// park's timeout.
    #[test]
    fn push_wakes_a_parked_consumer() {
        let (mut writer, mut readers, _) = ring(8, 1, 8).unwrap();
        let consumer = std::thread::spawn(move || {
            readers[0].attach_current_thread();
            let started = std::time::Instant::now();
            let mut seen = 0;
            while seen == 0 {
                park(&mut readers, std::time::Duration::from_secs(30));
                seen += readers[0].pop_burst(8, |_| {});
            }
            started.elapsed()
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(writer.push_with(0, |s| s.ts_us = 1));
        writer.wake_idle();
        let waited = consumer.join().unwrap();
        assert!(waited < std::time::Duration::from_secs(10), "{waited:?}");
    }

    /// A producer waiting for room is woken once the consumer has emptied
    /// half the lane, long before its timeout.
    #[test]
    fn pop_wakes_a_producer_waiting_for_room() {
        let (mut writer, mut readers, _) = ring(8, 1, 8).unwrap();
        for i in 0..8 {
            assert!(writer.push_with(0, |s| s.ts_us = i));
        }
        let mut reader = readers.pop().unwrap();
        let consumer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            reader.pop_burst(2, |_| {});
            std::thread::sleep(std::time::Duration::from_millis(50));
            reader.pop_burst(4, |_| {});
        });
        let started = std::time::Instant::now();
        writer.wait_for_room(0, std::time::Duration::from_secs(30));
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        assert!(writer.push_with(0, |s| s.ts_us = 8));
        consumer.join().unwrap();
    }

    /// Two threads, many wraps of a small ring: every frame arrives once, in
    /// order, with its bytes intact.
    #[test]
    fn two_threads_pass_every_frame_in_order() {
        const N: u64 = 200_000;
        let (mut writer, mut readers, _) = ring(64, 1, 8).unwrap();
        let mut reader = readers.pop().unwrap();
        let producer = std::thread::spawn(move || {
            let mut i = 0u64;
            while i < N {
                let pushed = writer.push_with(0, |slot| {
                    slot.ts_us = i;
                    slot.data.clear();
                    slot.data
                        .extend_from_slice(&i.to_le_bytes()[..(i % 8 + 1) as usize]);
                });
                if pushed {
                    i += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
        });
        let mut expected = 0u64;
        while expected < N {
            reader.pop_burst(16, |slot| {
                assert_eq!(slot.ts_us, expected);
                assert_eq!(
                    slot.data,
                    &expected.to_le_bytes()[..(expected % 8 + 1) as usize]
                );
                expected += 1;
            });
        }
        producer.join().unwrap();
        assert!(reader.is_empty());
    }
}
