//! The capture-file source: a pcap or pcapng file as a receive queue
//! ([`RxQueue`]) of the one receive worker (`rx.rs`), as if the file were a
//! NIC: `-q N` gives N queues, each taking its share of the flows, as RSS
//! spreads them on a card.
//!
//! libpcap reads the file (both formats, both byte orders, micro- and
//! nanosecond resolution; nanoseconds are truncated to microseconds, which is
//! what the Kafka key holds). A classic pcap record's seconds are an unsigned
//! 32-bit number (the format's definition: 1970 to 2106), which libpcap 1.10
//! hands over sign-extended when the file is in the host's byte order; the
//! source takes them back as unsigned, so records from 2038 on keep their
//! time. A file loses nothing by waiting, so where a live queue's worker
//! drops on a full ring, a file's worker waits for room
//! ([`RxQueue::CAN_WAIT`]).

use std::time::Duration;

use pcap::{Capture, Offline, Precision};

use crate::flow::flow_hash;
use crate::source::{CaptureError, Frame, RxQueue};

/// The first four bytes of a pcapng file (its Section Header Block type).
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Records one `take` reads at most: the transmit workers are woken once
/// per take, so they find a batch rather than one record each time.
const TAKE_RECORDS: usize = 256;

/// A frame the worker could not place yet (the ring was full), kept for
/// the next `take` (libpcap reuses its buffer for the next record).
struct Pending {
    ts_us: u64,
    wire_len: u32,
    data: Vec<u8>,
}

/// One receive queue of a capture file: the file read from its start, the
/// records of this queue's share of the flows handed to the worker.
pub struct FileQueue {
    capture: Capture<Offline>,
    path: String,
    /// pcapng keeps 64-bit timestamps; classic pcap 32-bit unsigned seconds.
    pcapng: bool,
    /// This queue is `share.0` of `share.1`; records of other shares are
    /// skipped (another queue takes them).
    share: (u32, u32),
    /// Stop after this many records of the file (0: all). Exact only for a
    /// file read by one queue; with several, `--count` is the group's.
    limit: u64,
    /// Records of the file read so far (every share), for the damage message.
    read: u64,
    /// Records this queue handed over since the last `take_stats`.
    taken: u64,
    pending: Option<Pending>,
    /// End of file, the limit, damage, or a closed intake: nothing more.
    ended: bool,
    damage: Option<CaptureError>,
}

// SAFETY: the libpcap handle is used by one thread at a time (the worker
// that owns the queue); libpcap keeps no thread-local state for it.
unsafe impl Send for FileQueue {}

impl FileQueue {
    /// Opens `path`, to be read as queue `share.0` of `share.1`, stopping
    /// after `limit` records of the file (0: all).
    pub fn open(path: &str, share: (u32, u32), limit: u64) -> Result<FileQueue, CaptureError> {
        let open_error = |reason: String| CaptureError::Open {
            path: path.to_string(),
            reason,
        };
        std::fs::metadata(path).map_err(|e| open_error(e.to_string()))?;
        let capture = Capture::from_file_with_precision(path, Precision::Micro)
            .map_err(|e| open_error(describe(e)))?;
        Ok(FileQueue {
            capture,
            path: path.to_string(),
            pcapng: starts_with(path, &PCAPNG_MAGIC),
            share: (share.0, share.1.max(1)),
            limit,
            read: 0,
            taken: 0,
            pending: None,
            ended: false,
            damage: None,
        })
    }

    /// The file's link-layer header type (1 = Ethernet).
    pub fn linktype(&self) -> i32 {
        self.capture.get_datalink().0
    }
}

impl RxQueue for FileQueue {
    const CAN_WAIT: bool = true;

    fn take<F: FnMut(&Frame<'_>) -> bool>(&mut self, mut each: F) -> usize {
        let mut accepted = 0;
        if let Some(p) = &self.pending {
            let frame = Frame {
                ts_us: p.ts_us,
                wire_len: p.wire_len,
                data: &p.data,
                vlan_tci: None,
                vlan_tpid: None,
            };
            if !each(&frame) {
                return 0;
            }
            self.pending = None;
            accepted += 1;
        }
        while accepted < TAKE_RECORDS && !self.ended {
            if self.limit != 0 && self.read >= self.limit {
                self.ended = true;
                break;
            }
            let packet = match self.capture.next_packet() {
                Ok(packet) => packet,
                Err(pcap::Error::NoMorePackets) => {
                    self.ended = true;
                    break;
                }
                Err(e) => {
                    self.ended = true;
                    self.damage = Some(CaptureError::Corrupt {
                        path: self.path.clone(),
                        records: self.read,
                        reason: describe(e),
                    });
                    break;
                }
            };
            self.read += 1;
            if !in_share(packet.data, self.share) {
                continue;
            }
            let frame = Frame {
                ts_us: key_us(packet.header.ts, self.pcapng),
                wire_len: packet.header.len,
                data: packet.data,
                vlan_tci: None,
                vlan_tpid: None,
            };
            if !each(&frame) {
                self.pending = Some(Pending {
                    ts_us: frame.ts_us,
                    wire_len: frame.wire_len,
                    data: frame.data.to_vec(),
                });
                break;
            }
            accepted += 1;
        }
        self.taken += accepted as u64;
        accepted
    }

    fn wait(&mut self, _timeout: Duration) -> Result<bool, CaptureError> {
        Ok(!self.exhausted())
    }

    fn exhausted(&self) -> bool {
        self.ended && self.pending.is_none()
    }

    fn link_up(&self) -> bool {
        true
    }

    /// The file is the "NIC": every record this queue read was seen and
    /// taken, none dropped before the worker.
    fn take_stats(&mut self) -> Result<(u64, u64), CaptureError> {
        Ok((std::mem::take(&mut self.taken), 0))
    }

    /// Reading stops (a record the ring refused is still handed over);
    /// damage found while reading is the queue's error, given once the
    /// books are closed.
    fn close_intake(&mut self) -> Result<Duration, CaptureError> {
        self.ended = true;
        match self.damage.take() {
            Some(damage) => Err(damage),
            None => Ok(Duration::ZERO),
        }
    }

    fn name(&self) -> &str {
        &self.path
    }
}

/// Whether a record is queue `share.0`'s of `share.1`: its flow's share,
/// mixed so that the share does not decide the lane too (lanes go by
/// `flow_hash % lanes`).
fn in_share(data: &[u8], (index, of): (u32, u32)) -> bool {
    of == 1 || (flow_hash(data).wrapping_mul(0x9E37_79B9) >> 16) % of == index
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
pub(crate) fn describe(error: pcap::Error) -> String {
    match error {
        pcap::Error::PcapError(text) => text,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
