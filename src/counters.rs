//! Per-stage counters of the pipeline: the one place their names are spelled.
//!
//! Each worker owns one block of counters behind an `Arc` and is the only
//! writer of most of them; Python reads them at any time through
//! `snapshot()`, with `Relaxed` loads: the figures of one snapshot are each
//! exact but not taken at one instant, which is what a statistics report
//! needs. Only at a clean stop, when every worker has been joined, do the
//! totals make the accounting sum (docs/accounting.md) exactly.
//!
//! The Python layer builds its dicts from `NAMES` and `Snapshot::values`, and
//! exports `NAMES` as `RX_COUNTERS` / `TX_COUNTERS`, so a counter added here
//! reaches the JSON report and the metrics without another list to edit.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Declares a block of counters, its plain snapshot and the list of names.
macro_rules! counters {
    (
        $(#[$meta:meta])* $name:ident => $snapshot:ident {
            $( $(#[$field_meta:meta])* $field:ident, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Default, Debug)]
        pub struct $name {
            $( $(#[$field_meta])* pub $field: AtomicU64, )*
        }

        /// Every counter of one block, read at (about) one moment.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $snapshot {
            $( pub $field: u64, )*
        }

        impl $name {
            /// The counters' names, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($field)),*];

            pub fn snapshot(&self) -> $snapshot {
                $snapshot { $( $field: self.$field.load(Relaxed), )* }
            }
        }

        impl $snapshot {
            /// The values in the order of `NAMES`.
            pub fn values(&self) -> Vec<u64> {
                vec![$( self.$field, )*]
            }
        }
    };
}

counters! {
    /// What one receive worker (one receive queue) saw.
    RxCounters => RxSnapshot {
        /// Frames the kernel (or the capture file) had for this queue, dropped ones included.
        nic_packets,
        /// Frames the kernel dropped before the worker could take them (`PACKET_STATISTICS`).
        nic_drops,
        /// Frames the worker took in.
        taken,
        taken_bytes,
        /// Frames put on a transmit ring.
        enqueued,
        /// Frames dropped because the transmit ring was full.
        ring_full,
    }
}

counters! {
    /// What one transmit worker (and its producer) did.
    TxCounters => TxSnapshot {
        /// Frames taken off the transmit rings.
        dequeued,
        /// Frames handed to the producer (accepted into its queue).
        produced,
        produced_bytes,
        /// Frames dropped because the producer queue stayed full, that the
        /// producer refused, or that were still on a ring when a second
        /// signal stopped the probe at once.
        dropped,
        /// Frames Kafka acknowledged.
        delivered,
        delivered_bytes,
        /// Frames whose delivery failed (or that were purged at stop).
        failed,
    }
}

/// Adds `n` to a counter that only its owning worker writes.
#[inline]
pub fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}
