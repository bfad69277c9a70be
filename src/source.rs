//! What a receive backend hands the receive worker: frames, readiness,
//! statistics. The seam between the capture backends (AF_PACKET in
//! `afpacket/`, DPDK in `dpdk/`) and the backend-neutral worker loop in
//! `rx.rs`, which copies frames into the transmit rings.

use std::io;
use std::time::Duration;

/// Why a receive queue could not be opened or used. Each message is one line an
/// operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("no such interface: {0}")]
    NoSuchInterface(String),
    /// The interface is administratively down at open, or went down (or was
    /// deleted) while capturing. After it comes back up with the same index
    /// the kernel resumes delivery to the same socket.
    #[error("interface {0} is down")]
    InterfaceDown(String),
    #[error("invalid filter {expr:?}: {msg}")]
    InvalidFilter { expr: String, msg: String },
    /// A capture file libpcap cannot open.
    #[error("cannot read {path}: {reason}")]
    Open { path: String, reason: String },
    /// A capture file damaged after `records` whole records.
    #[error("{path}: corrupt after record {records}: {reason}")]
    Corrupt {
        path: String,
        records: u64,
        reason: String,
    },
    #[error("{what}: {source}")]
    Os {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// `CaptureError::Os` for `step`, naming the capabilities `needs` when the
/// kernel said EPERM or EACCES.
pub(crate) fn os_error(step: &str, source: io::Error, needs: &str) -> CaptureError {
    let what = match source.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => format!("{step} needs {needs}"),
        _ => step.to_string(),
    };
    CaptureError::Os { what, source }
}

/// The index of interface `name` in this thread's network namespace (for
/// the capture sockets, and for compiling a filter as the live capture
/// will run it).
pub fn interface_index(name: &str) -> Result<u32, CaptureError> {
    let missing = || CaptureError::NoSuchInterface(name.to_string());
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(missing());
    }
    let c_name = std::ffi::CString::new(name).map_err(|_| missing())?;
    // SAFETY: `c_name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index != 0 {
        return Ok(index);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENODEV) | Some(libc::ENXIO) => Err(missing()),
        _ => Err(os_error(
            &format!("if_nametoindex({name})"),
            err,
            "CAP_NET_RAW (run as root or grant the capability)",
        )),
    }
}

/// A receive queue as the receive worker drives it: one AF_PACKET socket's
/// ring, or one receive queue of a DPDK port. Owned by one worker thread
/// (`Send`, not shared).
pub trait RxQueue: Send {
    /// The source loses nothing by waiting (a file): a full transmit ring
    /// holds it back for as long as it takes, never drops. A live queue
    /// must keep taking frames, so it drops once Kafka stalls.
    const CAN_WAIT: bool = false;

    /// Nothing more will come (the end of a file): the worker closes its
    /// books and ends. A live queue never ends by itself.
    fn exhausted(&self) -> bool {
        false
    }

    /// Hands the next ready frames to `each`, in arrival order, starting with
    /// the first one not yet accepted, until `each` returns false (that frame
    /// and the ones after it are offered again by the next call) or the
    /// frames at hand run out. Does a bounded amount of work (one ring block,
    /// one burst) and never waits. Returns how many frames were accepted.
    fn take<F: FnMut(&Frame<'_>) -> bool>(&mut self, each: F) -> usize;

    /// Waits up to `timeout` for frames; `Ok(true)` when `take` would find
    /// some. A backend that cannot sleep on its queue returns at once.
    /// A link that went down is reported here as
    /// [`CaptureError::InterfaceDown`] (once per time it went down).
    fn wait(&mut self, timeout: Duration) -> Result<bool, CaptureError>;

    /// Whether the link is up (asked while waiting for a downed link).
    fn link_up(&self) -> bool;

    /// `(packets, drops)` the NIC or kernel counted for this queue since the
    /// previous call: `packets` includes the dropped ones.
    fn take_stats(&mut self) -> Result<(u64, u64), CaptureError>;

    /// Stops the intake: frames arriving from now on are refused (and not
    /// counted). Returns how long to wait before everything accepted before
    /// is visible to `take`, so the books can be closed exactly.
    fn close_intake(&mut self) -> Result<Duration, CaptureError>;

    /// The queue's name in messages: the interface, or the DPDK port.
    fn name(&self) -> &str;
}

pub(crate) const VLAN_TAG_LEN: usize = 4;
const MAC_ADDRS_LEN: usize = 12;

/// One captured frame, borrowed from its block.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'b> {
    /// Kernel receive time, microseconds since the Unix epoch.
    pub ts_us: u64,
    /// Length on the wire, the outer VLAN tag included: `tp_len`, plus 4 when
    /// the kernel took the tag off (`vlan_tci` is `Some`).
    pub wire_len: u32,
    /// The bytes as the kernel stored them, from the MAC header on: already
    /// cut to the snap length, and *without* the outer VLAN tag when
    /// `vlan_tci` is `Some`. Use [`write_to`](Self::write_to) for the frame as
    /// it was on the wire.
    pub data: &'b [u8],
    /// The outer 802.1Q/802.1ad TCI, when the kernel took the tag out of the
    /// frame. It does for every *received* tagged frame, whatever the driver:
    /// the receive path untags before packet sockets see the frame. Outgoing
    /// frames keep an in-band tag in `data` (and `None` here) unless the stack
    /// tagged them by offload, when the tag is reported here too.
    pub vlan_tci: Option<u16>,
    /// That tag's TPID (0x8100, 0x88a8), when the kernel reports it.
    pub vlan_tpid: Option<u16>,
}

impl Frame<'_> {
    /// Whether [`write_to`](Self::write_to) puts a tag back: the kernel took
    /// one out and `data` reaches past the MAC addresses, where it goes.
    pub fn tag_stripped(&self) -> bool {
        self.vlan_tci.is_some() && self.data.len() >= MAC_ADDRS_LEN
    }

    /// Bytes [`write_to`](Self::write_to) writes for this `snaplen`.
    pub fn captured_len(&self, snaplen: u32) -> usize {
        let len = self.data.len() + if self.tag_stripped() { VLAN_TAG_LEN } else { 0 };
        match snaplen {
            0 => len,
            n => len.min(n as usize),
        }
    }

    /// Clears `out` and writes the frame as it was on the wire: the VLAN tag
    /// the kernel stripped is put back after the two MAC addresses (TPID from
    /// the kernel when it gives one, else 0x8100), then the result is cut to
    /// `snaplen` bytes when that is not 0. Allocates only if `out` is too small.
    pub fn write_to(&self, out: &mut Vec<u8>, snaplen: u32) {
        out.clear();
        let limit = self.captured_len(snaplen);
        out.reserve(limit);
        let mut push = |bytes: &[u8]| {
            let room = limit - out.len();
            out.extend_from_slice(&bytes[..bytes.len().min(room)]);
        };
        match self.vlan_tci {
            Some(tci) if self.tag_stripped() => {
                let tpid = self.vlan_tpid.unwrap_or(libc::ETH_P_8021Q as u16);
                let [t0, t1] = tpid.to_be_bytes();
                let [c0, c1] = tci.to_be_bytes();
                push(&self.data[..MAC_ADDRS_LEN]);
                push(&[t0, t1, c0, c1]);
                push(&self.data[MAC_ADDRS_LEN..]);
            }
            _ => push(self.data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testnet::{raw_frame, tagged};

    #[test]
    fn write_to_puts_the_tag_back_and_cuts() {
        let wire = tagged(&raw_frame(7, 60), 0x88a8, 0x2064);
        let stripped: Vec<u8> = wire[..12].iter().chain(&wire[16..]).copied().collect();
        let frame = Frame {
            ts_us: 1,
            wire_len: 64,
            data: &stripped,
            vlan_tci: Some(0x2064),
            vlan_tpid: Some(0x88a8),
        };
        let mut out = Vec::with_capacity(128);
        let before = out.as_ptr();
        frame.write_to(&mut out, 0);
        assert_eq!(out, wire);
        for snaplen in [1, 12, 13, 14, 15, 16, 17, 63, 64, 65, 1000] {
            frame.write_to(&mut out, snaplen);
            assert_eq!(
                out,
                &wire[..wire.len().min(snaplen as usize)],
                "snaplen {snaplen}"
            );
            assert_eq!(out.len(), frame.captured_len(snaplen));
        }
        assert_eq!(
            out.as_ptr(),
            before,
            "write_to reallocated a big enough buffer"
        );

        // No TPID from the kernel: 802.1Q.
        let frame = Frame {
            vlan_tpid: None,
            ..frame
        };
        frame.write_to(&mut out, 0);
        assert_eq!(out, tagged(&raw_frame(7, 60), 0x8100, 0x2064));

        // Untagged: copied as is.
        let plain = raw_frame(8, 60);
        let frame = Frame {
            ts_us: 1,
            wire_len: 60,
            data: &plain,
            vlan_tci: None,
            vlan_tpid: None,
        };
        frame.write_to(&mut out, 0);
        assert_eq!(out, plain);
        frame.write_to(&mut out, 20);
        assert_eq!(out, &plain[..20]);

        // The kernel cut before the tag's place: nothing to put back.
        let short = &stripped[..10];
        let frame = Frame {
            ts_us: 1,
            wire_len: 64,
            data: short,
            vlan_tci: Some(5),
            vlan_tpid: None,
        };
        frame.write_to(&mut out, 10);
        assert_eq!(out, &wire[..10]);
    }
}
