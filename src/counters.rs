//! Per-stage counters of the pipeline.
//!
//! Each worker owns one block of counters behind an `Arc` and is the only
//! writer of most of them; Python reads them at any time through
//! `snapshot()`, with `Relaxed` loads: the figures of one snapshot are each
//! exact but not taken at one instant, which is what a statistics report
//! needs. Only at a clean stop, when every worker has been joined, do the
//! totals make the accounting sum of SPEC §2 exactly.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What one receive worker (one receive queue) saw.
#[derive(Default, Debug)]
pub struct RxCounters {
    /// Frames the kernel (or the capture file) had for this queue, dropped ones included.
    pub nic_packets: AtomicU64,
    /// Frames the kernel dropped before the worker could take them (`PACKET_STATISTICS`).
    pub nic_drops: AtomicU64,
    /// Frames the worker took in.
    pub taken: AtomicU64,
    pub taken_bytes: AtomicU64,
    /// Frames put on a transmit ring.
    pub enqueued: AtomicU64,
    /// Frames dropped because the transmit ring was full.
    pub ring_full: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxSnapshot {
    pub nic_packets: u64,
    pub nic_drops: u64,
    pub taken: u64,
    pub taken_bytes: u64,
    pub enqueued: u64,
    pub ring_full: u64,
}

impl RxCounters {
    pub fn snapshot(&self) -> RxSnapshot {
        RxSnapshot {
            nic_packets: self.nic_packets.load(Relaxed),
            nic_drops: self.nic_drops.load(Relaxed),
            taken: self.taken.load(Relaxed),
            taken_bytes: self.taken_bytes.load(Relaxed),
            enqueued: self.enqueued.load(Relaxed),
            ring_full: self.ring_full.load(Relaxed),
        }
    }
}

/// What one transmit worker (and its producer) did.
#[derive(Default, Debug)]
pub struct TxCounters {
    /// Frames taken off the transmit rings.
    pub dequeued: AtomicU64,
    /// Frames handed to the producer (accepted into its queue).
    pub produced: AtomicU64,
    pub produced_bytes: AtomicU64,
    /// Frames dropped because the producer queue stayed full, or that were
    /// still on a ring when a second signal stopped the probe at once.
    pub dropped: AtomicU64,
    /// Frames Kafka acknowledged.
    pub delivered: AtomicU64,
    pub delivered_bytes: AtomicU64,
    /// Frames whose delivery failed (or that were purged at stop).
    pub failed: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxSnapshot {
    pub dequeued: u64,
    pub produced: u64,
    pub produced_bytes: u64,
    pub dropped: u64,
    pub delivered: u64,
    pub delivered_bytes: u64,
    pub failed: u64,
}

impl TxCounters {
    pub fn snapshot(&self) -> TxSnapshot {
        TxSnapshot {
            dequeued: self.dequeued.load(Relaxed),
            produced: self.produced.load(Relaxed),
            produced_bytes: self.produced_bytes.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            delivered_bytes: self.delivered_bytes.load(Relaxed),
            failed: self.failed.load(Relaxed),
        }
    }
}

/// Adds `n` to a counter that only its owning worker writes.
#[inline]
pub fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}
