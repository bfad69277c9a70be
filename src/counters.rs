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

            /// Both snapshots' counts added, counter by counter.
            #[allow(dead_code)]
            pub fn plus(&self, other: &$snapshot) -> $snapshot {
                $snapshot { $( $field: self.$field + other.$field, )* }
            }
        }
    };
}

counters! {
    /// What one receive worker (one receive queue) saw.
    RxCounters => RxSnapshot {
        /// Frames the worker had taken when it last read the kernel's (or
        /// NIC's, or file's) count: what `nic_packets` is to be matched
        /// with while the run goes on (that count is read only now and then).
        nic_taken,
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

counters! {
    /// What `fastcapa dump` read and what became of it. The dump keeps the
    /// plain snapshot (one thread does all its work); Python gets the names.
    DumpCounters => DumpSnapshot {
        /// Records read from Kafka, in the window or not.
        read,
        /// Records written to the file.
        written,
        /// Bytes of frames written (record headers not included).
        written_bytes,
        /// Records of the window the filter did not match.
        filtered,
        /// Skipped: a record without a key.
        no_key,
        /// Skipped: a key that is not 8 bytes.
        bad_key,
        /// Skipped: no value at all (null; an empty one is written).
        no_value,
        /// Skipped: a capture time a pcap record cannot hold (after 2106,
        /// or before 1901).
        bad_time,
        /// Written cut to the pcap limit of 262144 bytes.
        cut,
        /// Written with the value's length as the wire length, the record's
        /// `orig_len` header being malformed.
        bad_orig_len,
        /// Read more than the reorder bound earlier than the record before
        /// it in its partition: the topic does not keep the bound there.
        late,
        /// Written after a record with a later capture time (it arrived
        /// later than the reorder bound allows).
        out_of_order,
    }
}

/// Adds `n` to a counter that only its owning worker writes.
#[inline]
pub fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

counters! {
    /// What `fastcapa index` read and wrote. One thread does the work and
    /// keeps the plain snapshot; Python gets the names.
    IndexCounters => IndexSnapshot {
        /// Records of the capture topic read.
        read,
        /// Bytes of their values.
        read_bytes,
        /// Records read that no term could be taken from (a link type not
        /// parsed, a key not 8 bytes, a null value): queries always read them.
        unparsed,
        /// Records covered by slices Kafka acknowledged.
        indexed,
        /// Slices Kafka acknowledged.
        slices,
        /// Bytes of those slices (before the producer's compression).
        index_bytes,
        /// Slices handed to the producer and not yet acknowledged.
        pending,
        /// Offset commits made (each after the slices it covers were acknowledged).
        commits,
        /// Partitions of the capture topic this member is assigned now.
        partitions,
        /// Records in its partitions not read yet (from the last lag reading).
        lag_records,
        /// Capture time between the newest record in its partitions and the
        /// newest one indexed, µs (from the last lag reading).
        lag_us,
    }
}
