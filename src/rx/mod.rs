//! The receive worker, the one of every source: drains one receive queue
//! (an AF_PACKET socket's ring, a DPDK port's queue or a capture file's
//! share, behind [`RxQueue`](crate::source::RxQueue)) and copies its frames
//! into one transmit ring.
//!
//! Poll-mode and burst-oriented, as fastcapa's DPDK worker: it looks at the
//! queue without a system call per packet, takes what is ready in bursts of
//! up to `burst`, updating counters once per burst, and when the queue keeps
//! handing over full bursts it fetches again at once, up to `MAX_REPEATS`
//! times, before it yields (checks for a stop, reads the NIC's or kernel's
//! statistics). An idle queue is spun on (`Idle::Spin`) or spun on briefly
//! and then waited for (`Idle::Poll`, in `poll()` on AF_PACKET).
//!
//! A link that goes down is handled the same way in both modes: the worker
//! says so (an event), waits for the link to come back, says that too, and
//! goes on; the queue keeps its place.
//!
//! A full transmit ring pushes back into the kernel: the worker stops in the
//! middle of the block, leaves it (and the blocks after it) with the kernel
//! ring, whose `-d` frames are the big buffer, and picks up at the same frame
//! once the transmit workers made room. Only when the transmit worker says it
//! is stuck on Kafka (its producer queue full for a while), or the ring stays
//! full for `RING_FULL_WAIT`, does it drop frames at [rx], each one the ring
//! refuses until it takes one again, so a stalled broker never holds the
//! kernel ring.
//!
//! Stopping keeps the books exact: the worker first closes the queue's
//! intake (on AF_PACKET a reject-all filter, so refused frames are not
//! counted either), waits for what was accepted to become visible (the block
//! being filled to be retired), takes everything the queue still holds, and
//! reads the counters one last time.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::counters::{bump, RxCounters};
use crate::events::{EventKind, EventLog};
use crate::flow::flow_hash;
use crate::ring::RingWriter;
use crate::source::{CaptureError, RxQueue};

/// Bursts taken back to back before the worker yields.
const MAX_REPEATS: u32 = 8;
/// Empty looks at the queue before a `Poll` worker waits. Few: AF_PACKET
/// hands over whole blocks (full, or retired after a timeout) and wakes
/// `poll()` when it does, so spinning longer only burns CPU between blocks.
const SPINS_BEFORE_WAIT: u32 = 64;
/// Longest wait of an idle `Poll` worker; bounds how late a stop is noticed.
const WAIT: Duration = Duration::from_millis(20);
/// Empty looks of a `Spin` worker between two looks at the link.
const SPINS_PER_LINK_CHECK: u32 = 1 << 20;
/// How often a worker whose link is down looks whether it is back.
const LINK_DOWN_PAUSE: Duration = Duration::from_millis(200);
/// How often the NIC's or kernel's drop counters are read while running.
const STATS_PERIOD: Duration = Duration::from_millis(250);
/// Longest the transmit ring may refuse frames, its transmit worker not
/// stuck on Kafka, before they are dropped at [rx] all the same (a worker
/// starved of CPU that long is as good as stuck).
const RING_FULL_WAIT: Duration = Duration::from_secs(1);
/// Longest wait of a `Poll` worker for room in its transmit ring (the
/// transmit worker wakes it at half a ring free; the receive queue holds the
/// frames meanwhile).
const RING_FULL_PAUSE: Duration = Duration::from_millis(1);

/// What an idle receive worker does (`--idle`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    /// Keeps looking at the queue: lowest latency, one core busy.
    Spin,
    /// Looks a few times, then sleeps until the queue has frames.
    Poll,
}

impl FromStr for Idle {
    type Err = String;

    fn from_str(text: &str) -> Result<Idle, String> {
        match text {
            "spin" => Ok(Idle::Spin),
            "poll" => Ok(Idle::Poll),
            other => Err(format!("unknown idle mode {other:?} (spin or poll)")),
        }
    }
}

pub struct RxConfig {
    pub burst: usize,
    pub idle: Idle,
    /// Cut frames to this many bytes (0: whole frames).
    pub snaplen: u32,
    /// Flow hashes are needed to pick a lane or a partition by flow.
    pub hash_flows: bool,
    /// Core to pin this worker to.
    pub cpu: Option<usize>,
}

/// Shared by every receive worker of one run: the stop, and `--count`.
#[derive(Default)]
pub struct RxShared {
    pub stop: AtomicBool,
    /// Stop once this many frames were taken in over all queues (0 = never).
    pub count: u64,
    /// Frames taken in by all queues together, for `--count`.
    pub taken_total: AtomicU64,
}

impl RxShared {
    pub fn new(count: u64) -> RxShared {
        RxShared {
            count,
            ..RxShared::default()
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// The worker's loop; returns when told to stop or when `--count` is reached.
pub fn run<Q: RxQueue>(
    mut queue: Q,
    mut ring: RingWriter,
    config: RxConfig,
    shared: Arc<RxShared>,
    counters: Arc<RxCounters>,
    events: Arc<EventLog>,
) -> Result<(), CaptureError> {
    if let Some(cpu) = config.cpu {
        pin_to_cpu(cpu);
    }
    let mut idle_spins = 0u32;
    let mut last_stats = Instant::now();
    let mut state = TakeState::default();
    while !shared.stopping() && !queue.exhausted() {
        let mut bursts = 0;
        let mut blocked = false;
        while bursts < MAX_REPEATS {
            let taken = take_frames(&mut queue, &mut ring, &config, &counters, &mut state);
            blocked = state.blocked;
            if taken == 0 {
                break;
            }
            bursts += taken.div_ceil(config.burst.max(1)) as u32;
            let total = shared
                .taken_total
                .fetch_add(taken as u64, Ordering::Relaxed)
                + taken as u64;
            if shared.count > 0 && total >= shared.count {
                shared.stop.store(true, Ordering::Relaxed);
                break;
            }
        }
        // The clock is read once per burst taken or per wait, not per spin.
        if (bursts > 0 || blocked || idle_spins.is_multiple_of(64))
            && last_stats.elapsed() >= STATS_PERIOD
        {
            read_nic_stats(&mut queue, &counters)?;
            last_stats = Instant::now();
        }
        if bursts > 0 {
            idle_spins = 0;
            continue;
        }
        if blocked {
            // Frames wait in the receive queue for room in the transmit ring.
            match config.idle {
                Idle::Spin => std::hint::spin_loop(),
                Idle::Poll => ring.wait_for_room(state.blocked_hash, RING_FULL_PAUSE),
            }
            continue;
        }
        idle_spins = idle_spins.wrapping_add(1);
        let look = match config.idle {
            // A spinning worker still looks at the link now and then.
            Idle::Spin if idle_spins.is_multiple_of(SPINS_PER_LINK_CHECK) => Some(Duration::ZERO),
            Idle::Poll if idle_spins >= SPINS_BEFORE_WAIT => Some(WAIT),
            _ => None,
        };
        match look {
            None => std::hint::spin_loop(),
            Some(timeout) => match queue.wait(timeout) {
                Ok(_) => {}
                Err(CaptureError::InterfaceDown(_)) => {
                    wait_for_link(&queue, &shared, &events);
                    idle_spins = 0;
                }
                Err(other) => return Err(other),
            },
        }
    }
    // Close the books: no new frames, then everything the queue holds. A
    // queue that failed (a damaged file) says so after that, so that what
    // it gave before is accounted for.
    let closed = queue.close_intake();
    if let Ok(settle) = closed {
        std::thread::sleep(settle);
    }
    loop {
        let taken = take_frames(&mut queue, &mut ring, &config, &counters, &mut state);
        if taken == 0 && !state.blocked {
            break;
        }
        if state.blocked {
            // The transmit workers still run; RING_FULL_WAIT bounds this.
            ring.wait_for_room(state.blocked_hash, RING_FULL_PAUSE);
        }
    }
    read_nic_stats(&mut queue, &counters)?;
    closed.map(|_| ())
}

/// The link went down: says so, waits until it is back (or the run stops),
/// says that too. The queue keeps its place; frames resume on it.
fn wait_for_link<Q: RxQueue>(queue: &Q, shared: &RxShared, events: &EventLog) {
    events.record(EventKind::InterfaceDown, queue.name());
    while !shared.stopping() {
        std::thread::sleep(LINK_DOWN_PAUSE);
        if queue.link_up() {
            events.record(EventKind::InterfaceUp, queue.name());
            return;
        }
    }
}

/// Where the worker is when the transmit ring pushed back.
#[derive(Default)]
struct TakeState {
    /// The last `take_frames` stopped at a frame the ring had no room for.
    blocked: bool,
    /// That frame's flow hash (which lane it waits for).
    blocked_hash: u32,
    /// Since when the ring has refused frames.
    full_since: Option<Instant>,
}

/// Takes the frames the queue has ready, from where the last call stopped;
/// returns how many it took. When the ring has no room (and has had none for
/// less than `RING_FULL_WAIT`) it stops there, leaving the frame in the
/// receive queue, and sets `state.blocked`.
fn take_frames<Q: RxQueue>(
    queue: &mut Q,
    ring: &mut RingWriter,
    config: &RxConfig,
    counters: &RxCounters,
    state: &mut TakeState,
) -> usize {
    state.blocked = false;
    let burst = config.burst.max(1);
    let (mut taken, mut bytes, mut enqueued, mut full, mut in_burst) = (0u64, 0u64, 0u64, 0u64, 0);
    let mut pushed_any = false;
    let consumed = queue.take(|frame| {
        let hash = if config.hash_flows {
            flow_hash(frame.data)
        } else {
            0
        };
        let fill = |slot: &mut crate::ring::Slot| {
            slot.ts_us = frame.ts_us;
            slot.wire_len = frame.wire_len;
            slot.flow_hash = hash;
            frame.write_to(&mut slot.data, config.snaplen);
        };
        // A file hands over a batch at a time: its transmit workers are woken
        // once for it (below), not for the first frame of it.
        let pushed = if Q::CAN_WAIT {
            ring.push_quiet(hash, fill)
        } else {
            ring.push_with(hash, fill)
        };
        if pushed {
            state.full_since = None;
            enqueued += 1;
            pushed_any = true;
        } else {
            let since = *state.full_since.get_or_insert_with(Instant::now);
            if Q::CAN_WAIT || (!ring.stalled(hash) && since.elapsed() < RING_FULL_WAIT) {
                state.blocked = true;
                state.blocked_hash = hash;
                return false;
            }
            full += 1;
        }
        taken += 1;
        bytes += frame.data.len() as u64;
        in_burst += 1;
        if in_burst == burst {
            publish(counters, &mut taken, &mut bytes, &mut enqueued, &mut full);
            in_burst = 0;
        }
        true
    });
    // A take that published nothing has nobody to wake; ringing anyway
    // wakes a parked transmit worker on every empty look of a spinning
    // receive worker.
    if pushed_any {
        ring.wake_idle();
    }
    publish(counters, &mut taken, &mut bytes, &mut enqueued, &mut full);
    consumed
}

fn publish(counters: &RxCounters, taken: &mut u64, bytes: &mut u64, enq: &mut u64, full: &mut u64) {
    bump(&counters.taken, std::mem::take(taken));
    bump(&counters.taken_bytes, std::mem::take(bytes));
    bump(&counters.enqueued, std::mem::take(enq));
    bump(&counters.ring_full, std::mem::take(full));
}

fn read_nic_stats<Q: RxQueue>(queue: &mut Q, counters: &RxCounters) -> Result<(), CaptureError> {
    // What was taken before the kernel's count is read: the count covers it.
    let taken = counters.taken.load(std::sync::atomic::Ordering::Relaxed);
    let (packets, drops) = queue.take_stats()?;
    bump(&counters.nic_packets, packets);
    bump(&counters.nic_drops, drops);
    counters
        .nic_taken
        .store(taken, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// Pins the calling thread to one core (best effort: a core outside the
/// process's allowed set is reported by the control plane before start).
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write within it, and
    // sched_setaffinity(0, ...) applies to the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(test)]
mod tests;
