//! The capture-file source: replays a pcap or pcapng file through the same
//! receive queues and transmit rings as a live capture.
//!
//! libpcap reads the file (both formats, both byte orders, micro- and
//! nanosecond resolution; nanoseconds are truncated to microseconds, which is
//! what the Kafka key holds). A classic pcap record's seconds are an unsigned
//! 32-bit number (the format's definition: 1970 to 2106), which libpcap 1.10
//! hands over sign-extended when the file is in the host's byte order; the
//! source takes them back as unsigned, so records from 2038 on keep their time. One thread reads records in file order and
//! spreads them over the queues by flow hash, so a replay exercises the whole
//! pipeline. A file cannot lose frames by waiting, so where a live receive
//! worker drops on a full ring, the file source waits for room.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pcap::{Capture, Offline, Precision};

use crate::counters::{bump, RxCounters};
use crate::flow::flow_hash;
use crate::ring::RingWriter;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("{path}: corrupt after record {records}: {reason}")]
    Corrupt {
        path: String,
        records: u64,
        reason: String,
    },
}

/// An open capture file, not yet read.
pub struct CaptureFile {
    capture: Capture<Offline>,
    path: String,
    /// pcapng keeps 64-bit timestamps; classic pcap 32-bit unsigned seconds.
    pcapng: bool,
}

/// The first four bytes of a pcapng file (its Section Header Block type).
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

impl CaptureFile {
    pub fn open(path: &str) -> Result<CaptureFile, FileError> {
        if let Err(e) = std::fs::metadata(path) {
            return Err(FileError::Open {
                path: path.to_string(),
                reason: e.to_string(),
            });
        }
        let capture = Capture::from_file_with_precision(path, Precision::Micro).map_err(|e| {
            FileError::Open {
                path: path.to_string(),
                reason: describe(e),
            }
        })?;
        Ok(CaptureFile {
            capture,
            path: path.to_string(),
            pcapng: starts_with(path, &PCAPNG_MAGIC),
        })
    }

    /// The file's link-layer header type (1 = Ethernet).
    pub fn linktype(&self) -> i32 {
        self.capture.get_datalink().0
    }

    /// Reads records into the rings until the end of the file, `count`
    /// records (0 = all), `stop`, or damage in the file. Records before the
    /// damage are all enqueued before the error is returned. Each record's
    /// flow hash is computed only where something uses it: several rings or
    /// lanes to choose between, or `hash_flows` (partitions by flow).
    pub fn replay(
        mut self,
        rings: &mut [RingWriter],
        counters: &[Arc<RxCounters>],
        snaplen: u32,
        count: u64,
        hash_flows: bool,
        stop: &AtomicBool,
    ) -> Result<(), FileError> {
        let queues = rings.len() as u32;
        let hash_flows = hash_flows || queues > 1 || rings.iter().any(|r| r.lanes() > 1);
        let mut tally = vec![Tally::default(); rings.len()];
        let result = self.read_into(
            rings, &mut tally, counters, snaplen, count, hash_flows, stop,
        );
        for ring in rings.iter() {
            ring.wake_idle();
        }
        for (tally, stats) in tally.iter_mut().zip(counters) {
            tally.flush(stats);
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn read_into(
        &mut self,
        rings: &mut [RingWriter],
        tally: &mut [Tally],
        counters: &[Arc<RxCounters>],
        snaplen: u32,
        count: u64,
        hash_flows: bool,
        stop: &AtomicBool,
    ) -> Result<(), FileError> {
        let queues = rings.len() as u32;
        let mut records = 0u64;
        while !stop.load(Ordering::Relaxed) && (count == 0 || records < count) {
            let packet = match self.capture.next_packet() {
                Ok(packet) => packet,
                Err(pcap::Error::NoMorePackets) => return Ok(()),
                Err(e) => {
                    return Err(FileError::Corrupt {
                        path: self.path.clone(),
                        records,
                        reason: describe(e),
                    })
                }
            };
            records += 1;
            let header = packet.header;
            let ts_us = key_us(header.ts, self.pcapng);
            let data = match snaplen {
                0 => packet.data,
                n => &packet.data[..packet.data.len().min(n as usize)],
            };
            let hash = if hash_flows { flow_hash(data) } else { 0 };
            let queue = (hash % queues) as usize;
            let tally = &mut tally[queue];
            tally.taken += 1;
            tally.taken_bytes += data.len() as u64;
            loop {
                let pushed = rings[queue].push_quiet(hash / queues, |slot| {
                    slot.ts_us = ts_us;
                    slot.wire_len = header.len;
                    slot.flow_hash = hash;
                    slot.data.clear();
                    slot.data.extend_from_slice(data);
                });
                if pushed {
                    tally.enqueued += 1;
                    break;
                }
                if stop.load(Ordering::Relaxed) {
                    tally.ring_full += 1;
                    return Ok(());
                }
                // The ring is full: Kafka is slower than the disk. Wait for
                // room (the transmit worker wakes us at half a ring free).
                tally.flush(&counters[queue]);
                rings[queue].wake_idle();
                rings[queue].wait_for_room(hash / queues, Duration::from_millis(1));
            }
            if tally.taken >= TALLY_RECORDS {
                // The transmit workers wake to a batch, not to every record.
                tally.flush(&counters[queue]);
                rings[queue].wake_idle();
            }
        }
        Ok(())
    }
}

/// Records counted locally before the shared counters are updated: one
/// atomic add per figure per this many records, not per record.
const TALLY_RECORDS: u64 = 256;

/// A queue's counts not yet added to its shared counters.
#[derive(Default, Clone)]
struct Tally {
    taken: u64,
    taken_bytes: u64,
    enqueued: u64,
    ring_full: u64,
}

impl Tally {
    fn flush(&mut self, stats: &RxCounters) {
        // The file is the "NIC": every record read was seen and taken.
        bump(&stats.nic_packets, self.taken);
        bump(&stats.taken, self.taken);
        bump(&stats.taken_bytes, self.taken_bytes);
        bump(&stats.enqueued, self.enqueued);
        bump(&stats.ring_full, self.ring_full);
        *self = Tally::default();
    }
}

/// The key of a record: its time in µs since the epoch, as libpcap gives it
/// for pcapng; for classic pcap with the seconds (and the fraction) read as
/// the unsigned 32-bit fields they are.
fn key_us(ts: libc::timeval, pcapng: bool) -> u64 {
    let (seconds, fraction) = if pcapng {
        (ts.tv_sec as u64, ts.tv_usec as u64)
    } else {
        (u64::from(ts.tv_sec as u32), u64::from(ts.tv_usec as u32))
    };
    seconds.wrapping_mul(1_000_000).wrapping_add(fraction)
}

/// Whether the file at `path` starts with `magic` (false if unreadable:
/// libpcap has opened it already, so that is not expected).
fn starts_with(path: &str, magic: &[u8]) -> bool {
    use std::io::Read;
    let mut head = vec![0u8; magic.len()];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head == magic)
}

/// libpcap's own words, without the crate's wrapping.
fn describe(error: pcap::Error) -> String {
    match error {
        pcap::Error::PcapError(text) => text,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
