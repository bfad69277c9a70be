//! The receive worker of a live capture: walks one AF_PACKET queue's mapped
//! ring and copies its frames into one transmit ring.
//!
//! Poll-mode and burst-oriented, as fastcapa's DPDK worker: it reads block
//! status from memory (no system call per packet), takes the frames of ready
//! blocks in bursts of up to `burst`, updating counters once per burst, and
//! when the queue keeps handing over full bursts it fetches again at once, up
//! to `MAX_REPEATS` times, before it yields (checks for a stop, reads the
//! kernel's statistics). An idle queue is spun on (`Idle::Spin`) or spun on
//! briefly and then waited for in `poll()` (`Idle::Poll`).
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
//! Stopping keeps the books exact: the worker first makes the kernel refuse
//! new frames (a reject-all filter, so they are not counted either), waits for
//! the block being filled to be retired, takes everything the ring still
//! holds, and reads the kernel's counters one last time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::afpacket::{CaptureError, PacketQueue};
use crate::counters::{bump, RxCounters};
use crate::flow::flow_hash;
use crate::ring::RingWriter;

/// Bursts taken back to back before the worker yields.
const MAX_REPEATS: u32 = 8;
/// Empty looks at the ring before a `Poll` worker waits in `poll()`. Few:
/// the kernel hands over whole blocks (full, or retired after a timeout)
/// and wakes `poll()` when it does, so spinning longer only burns CPU
/// between blocks.
const SPINS_BEFORE_WAIT: u32 = 64;
/// Longest wait in `poll()`; bounds how late a stop is noticed.
const WAIT_MS: i32 = 20;
/// How often the kernel's drop counters are read while running.
const STATS_PERIOD: Duration = Duration::from_millis(250);
/// Longest the transmit ring may refuse frames, its transmit worker not
/// stuck on Kafka, before they are dropped at [rx] all the same (a worker
/// starved of CPU that long is as good as stuck).
const RING_FULL_WAIT: Duration = Duration::from_secs(1);
/// Longest wait of a `Poll` worker for room in its transmit ring (the
/// transmit worker wakes it at half a ring free; the kernel's ring holds the
/// frames meanwhile).
const RING_FULL_PAUSE: Duration = Duration::from_millis(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    Spin,
    Poll,
}

pub struct RxConfig {
    pub burst: usize,
    pub idle: Idle,
    pub snaplen: u32,
    /// Flow hashes are needed to pick a lane or a partition by flow.
    pub hash_flows: bool,
    /// Stop once this many frames were taken in over all queues (0 = never).
    pub count: u64,
    /// Core to pin this worker to.
    pub cpu: Option<usize>,
}

/// Shared by every receive worker of one run.
#[derive(Default)]
pub struct RxShared {
    pub stop: AtomicBool,
    /// Frames taken in by all queues together, for `--count`.
    pub taken_total: AtomicU64,
}

/// The worker's loop; returns when told to stop or when `--count` is reached.
pub fn run(
    mut queue: PacketQueue,
    mut ring: RingWriter,
    config: RxConfig,
    shared: Arc<RxShared>,
    counters: Arc<RxCounters>,
) -> Result<(), CaptureError> {
    if let Some(cpu) = config.cpu {
        pin_to_cpu(cpu);
    }
    let mut idle_spins = 0u32;
    let mut last_stats = Instant::now();
    let mut state = TakeState::default();
    while !shared.stop.load(Ordering::Relaxed) {
        let mut bursts = 0;
        let mut blocked = false;
        while bursts < MAX_REPEATS {
            let taken = take_block(&mut queue, &mut ring, &config, &counters, &mut state);
            blocked = state.blocked;
            if taken == 0 {
                break;
            }
            bursts += taken.div_ceil(config.burst.max(1)) as u32;
            let total = shared
                .taken_total
                .fetch_add(taken as u64, Ordering::Relaxed)
                + taken as u64;
            if config.count > 0 && total >= config.count {
                shared.stop.store(true, Ordering::Relaxed);
                break;
            }
        }
        // The clock is read once per block taken or per wait, not per spin.
        if (bursts > 0 || blocked || idle_spins % 64 == 0) && last_stats.elapsed() >= STATS_PERIOD {
            read_kernel_stats(&queue, &counters)?;
            last_stats = Instant::now();
        }
        if bursts > 0 {
            idle_spins = 0;
            continue;
        }
        if blocked {
            // Frames wait in the kernel ring for room in the transmit ring.
            match config.idle {
                Idle::Spin => std::hint::spin_loop(),
                Idle::Poll => ring.wait_for_room(state.blocked_hash, RING_FULL_PAUSE),
            }
            continue;
        }
        match config.idle {
            Idle::Spin => {
                idle_spins = idle_spins.wrapping_add(1);
                // A spinning worker still looks for a downed link now and then.
                if idle_spins % (1 << 20) == 0 {
                    queue.wait(0)?;
                }
                std::hint::spin_loop();
            }
            Idle::Poll => {
                idle_spins += 1;
                if idle_spins < SPINS_BEFORE_WAIT {
                    std::hint::spin_loop();
                } else {
                    wait_for_frames(&queue)?;
                }
            }
        }
    }
    // Close the books: no new frames, then everything the ring holds.
    queue.reject_all()?;
    std::thread::sleep(queue.retire_timeout() * 2);
    loop {
        let taken = take_block(&mut queue, &mut ring, &config, &counters, &mut state);
        if taken == 0 && !state.blocked {
            break;
        }
        if state.blocked {
            // The transmit workers still run; RING_FULL_WAIT bounds this.
            ring.wait_for_room(state.blocked_hash, RING_FULL_PAUSE);
        }
    }
    read_kernel_stats(&queue, &counters)
}

/// Where the worker is in the block it could not finish.
#[derive(Default)]
struct TakeState {
    /// Frames of the current block already taken.
    resume: usize,
    /// The last `take_block` stopped at a frame the ring had no room for.
    blocked: bool,
    /// That frame's flow hash (which lane it waits for).
    blocked_hash: u32,
    /// Since when the ring has refused frames.
    full_since: Option<Instant>,
}

/// Takes the frames of the next ready block, if any, from where the last
/// call stopped; returns how many it took. When the ring has no room (and
/// has had none for less than `RING_FULL_WAIT`) it stops there, keeps the
/// block from the kernel and sets `state.blocked`.
fn take_block(
    queue: &mut PacketQueue,
    ring: &mut RingWriter,
    config: &RxConfig,
    counters: &RxCounters,
    state: &mut TakeState,
) -> usize {
    state.blocked = false;
    let Some(block) = queue.next_block() else {
        return 0;
    };
    let burst = config.burst.max(1);
    let (mut taken, mut bytes, mut enqueued, mut full, mut in_burst) = (0u64, 0u64, 0u64, 0u64, 0);
    let mut consumed = 0usize;
    for frame in block.frames().skip(state.resume) {
        let hash = if config.hash_flows {
            flow_hash(frame.data)
        } else {
            0
        };
        let pushed = ring.push_with(hash, |slot| {
            slot.ts_us = frame.ts_us;
            slot.wire_len = frame.wire_len;
            slot.flow_hash = hash;
            frame.write_to(&mut slot.data, config.snaplen);
        });
        if pushed {
            state.full_since = None;
            enqueued += 1;
        } else {
            let since = *state.full_since.get_or_insert_with(Instant::now);
            if !ring.stalled(hash) && since.elapsed() < RING_FULL_WAIT {
                state.blocked = true;
                state.blocked_hash = hash;
                break;
            }
            full += 1;
        }
        consumed += 1;
        taken += 1;
        bytes += frame.data.len() as u64;
        in_burst += 1;
        if in_burst == burst {
            publish(counters, &mut taken, &mut bytes, &mut enqueued, &mut full);
            in_burst = 0;
        }
    }
    if state.blocked {
        // Not handed back: the next call gets this block again and skips
        // what was taken.
        state.resume += consumed;
        std::mem::forget(block);
    } else {
        state.resume = 0;
        drop(block); // hands the block back to the kernel
    }
    ring.wake_idle();
    publish(counters, &mut taken, &mut bytes, &mut enqueued, &mut full);
    consumed
}

fn publish(counters: &RxCounters, taken: &mut u64, bytes: &mut u64, enq: &mut u64, full: &mut u64) {
    bump(&counters.taken, std::mem::take(taken));
    bump(&counters.taken_bytes, std::mem::take(bytes));
    bump(&counters.enqueued, std::mem::take(enq));
    bump(&counters.ring_full, std::mem::take(full));
}

/// Waits in `poll()`; an interface that went down is reported and waited for
/// (the kernel resumes delivery to the same socket when it comes back).
fn wait_for_frames(queue: &PacketQueue) -> Result<(), CaptureError> {
    match queue.wait(WAIT_MS) {
        Ok(_) => Ok(()),
        Err(CaptureError::InterfaceDown(_)) => {
            eprintln!(
                "fastcapa: interface {} is down; waiting for it to come back",
                queue.interface()
            );
            std::thread::sleep(Duration::from_millis(200));
            Ok(())
        }
        Err(other) => Err(other),
    }
}

fn read_kernel_stats(queue: &PacketQueue, counters: &RxCounters) -> Result<(), CaptureError> {
    // The kernel resets its counters on every read; we accumulate.
    let (packets, drops) = queue.take_stats()?;
    bump(&counters.nic_packets, packets);
    bump(&counters.nic_drops, drops);
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
