//! One receive queue of a started port, as the receive worker drives it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::clock::{wall_us, DeviceClock, Timestamps};
use super::ffi::{self, dpdk_error, strerror};
use super::port::Port;
use crate::source::{CaptureError, Frame, RxQueue};

/// How often an idle worker looks at the link (a system call for some drivers).
pub(super) const LINK_LOOK: Duration = Duration::from_millis(100);
/// What an idle `--idle poll` worker naps between looks at the queue: 50 µs
/// at first, twice as long after each look that found nothing, up to 400 µs;
/// back to 50 µs as soon as a burst comes.
pub(super) const POLL_NAP_MIN: Duration = Duration::from_micros(50);
pub(super) const POLL_NAP_MAX: Duration = Duration::from_micros(400);

/// One receive queue of a started port. Owned by one worker thread.
pub struct DpdkQueue {
    pub(super) port: Arc<Port>,
    pub(super) index: u16,
    /// The last burst: `held[next..held_len]` not yet accepted by the worker.
    pub(super) held: Vec<*mut ffi::Mbuf>,
    pub(super) held_len: usize,
    pub(super) next: usize,
    /// Frames taken since the last `take_stats`.
    pub(super) taken: u64,
    /// After `close_intake`: how many more frames the queue may hand over.
    pub(super) drain_left: Option<u64>,
    pub(super) registered: bool,
    pub(super) link_was_up: bool,
    pub(super) last_link_look: Instant,
    pub(super) name: String,
    /// A chained packet, made one.
    pub(super) scratch: Vec<u8>,
    /// The next nap of an idle `--idle poll` worker.
    pub(super) nap: Duration,
}

// SAFETY: the mbuf pointers are owned by this queue alone (received by it,
// not yet freed); DPDK allows any single thread to poll a queue and free
// mbufs. The queue is never shared between threads.
unsafe impl Send for DpdkQueue {}

impl DpdkQueue {
    fn frame_time(&self, pkt: &ffi::Pkt) -> u64 {
        match self.port.timestamps {
            Timestamps::Hardware { clock, .. } if pkt.has_hw_ts != 0 => match clock {
                DeviceClock::WallNanos => pkt.hw_ts / 1000,
                DeviceClock::WallMicros => pkt.hw_ts,
                DeviceClock::Ticks {
                    zero_ticks,
                    zero_us,
                    hz,
                } => {
                    let ticks = pkt.hw_ts.wrapping_sub(zero_ticks) as i64 as f64;
                    (zero_us as f64 + ticks * 1e6 / hz) as u64
                }
            },
            _ => wall_us(),
        }
    }

    fn free_accepted(&mut self, from: usize) {
        let n = self.next - from;
        if n > 0 {
            // SAFETY: held[from..next] are mbufs this queue received and
            // nothing refers to any more.
            unsafe { ffi::fcapa_free_bulk(self.held[from..].as_mut_ptr(), n as u32) };
        }
    }
}

impl RxQueue for DpdkQueue {
    fn take<F: FnMut(&Frame<'_>) -> bool>(&mut self, mut each: F) -> usize {
        if !self.registered {
            // SAFETY: registers the calling thread (the worker) with the EAL;
            // failure only costs the mempool cache.
            unsafe { ffi::fcapa_thread_register() };
            self.registered = true;
        }
        if self.next == self.held_len {
            let mut room = self.held.len();
            if let Some(left) = self.drain_left {
                room = room.min(left as usize);
            }
            if room == 0 {
                return 0;
            }
            // SAFETY: the port is started; held has room for `room` pointers.
            let n = unsafe {
                ffi::fcapa_rx_burst(
                    self.port.id,
                    self.index,
                    self.held.as_mut_ptr(),
                    room as u16,
                )
            };
            self.held_len = usize::from(n);
            self.next = 0;
            if n > 0 {
                self.nap = POLL_NAP_MIN;
            }
            if let Some(left) = self.drain_left.as_mut() {
                *left -= u64::from(n);
            }
        }
        let (offset, flag) = match self.port.timestamps {
            Timestamps::Hardware { offset, flag, .. } => (offset, flag),
            Timestamps::Software => (-1, 0),
        };
        let start = self.next;
        let mut accepted = 0;
        while self.next < self.held_len {
            let mut pkt = ffi::Pkt {
                data: std::ptr::null(),
                data_len: 0,
                pkt_len: 0,
                nb_segs: 0,
                hw_ts: 0,
                has_hw_ts: 0,
                vlan_stripped: 0,
                vlan_tci: 0,
            };
            // SAFETY: held[next] is a received mbuf not yet freed.
            unsafe { ffi::fcapa_pkt_info(self.held[self.next], offset, flag, &mut pkt) };
            let data: &[u8] = if pkt.nb_segs > 1 {
                // A chained packet is copied whole, once more.
                let mbuf = self.held[self.next];
                self.scratch.resize(pkt.pkt_len as usize, 0);
                // SAFETY: scratch holds pkt_len bytes; the mbuf is live.
                unsafe { ffi::fcapa_pkt_copy(mbuf, self.scratch.as_mut_ptr(), pkt.pkt_len) };
                &self.scratch
            } else {
                // SAFETY: the segment's data_len bytes at data live until
                // the mbuf is freed, after `each` returned.
                unsafe { std::slice::from_raw_parts(pkt.data, pkt.data_len as usize) }
            };
            // A driver that took the outer VLAN tag out (net_af_packet gets
            // frames from the kernel untagged) says so; write_to puts it back.
            let vlan_tci = (pkt.vlan_stripped != 0).then_some(pkt.vlan_tci);
            if let Some(filter) = &self.port.config.filter {
                if !filter.matches(data, pkt.pkt_len) {
                    self.next += 1;
                    continue;
                }
            }
            let frame = Frame {
                ts_us: self.frame_time(&pkt),
                wire_len: pkt.pkt_len + if vlan_tci.is_some() { 4 } else { 0 },
                data,
                vlan_tci,
                vlan_tpid: None,
            };
            if !each(&frame) {
                break;
            }
            self.next += 1;
            accepted += 1;
        }
        self.free_accepted(start);
        self.taken += accepted as u64;
        accepted
    }

    fn wait(&mut self, timeout: Duration) -> Result<bool, CaptureError> {
        if self.last_link_look.elapsed() >= LINK_LOOK {
            self.last_link_look = Instant::now();
            let up = self.link_up();
            let went_down = self.link_was_up && !up;
            self.link_was_up = up;
            if went_down {
                return Err(CaptureError::InterfaceDown(self.name.clone()));
            }
        }
        if !timeout.is_zero() {
            std::thread::sleep(timeout.min(self.nap));
            self.nap = (self.nap * 2).min(POLL_NAP_MAX);
        }
        Ok(false)
    }

    fn link_up(&self) -> bool {
        if let Some(sockets) = &self.port.sockets {
            return sockets.link_up();
        }
        // SAFETY: the port is started.
        unsafe { ffi::fcapa_link_up(self.port.id) != 0 }
    }

    fn take_stats(&mut self) -> Result<(u64, u64), CaptureError> {
        let taken = std::mem::take(&mut self.taken);
        if self.index != 0 {
            return Ok((taken, 0));
        }
        let (mut ipackets, mut missed, mut nombuf) = (0u64, 0u64, 0u64);
        // SAFETY: the port is started; the three are valid for writing.
        let ret =
            unsafe { ffi::fcapa_port_stats(self.port.id, &mut ipackets, &mut missed, &mut nombuf) };
        if ret != 0 {
            self.taken += taken;
            return Err(dpdk_error(
                format!("reading the counters of {}", self.name),
                strerror(-ret),
            ));
        }
        let mut seen = self.port.counters.lock().unwrap();
        // Counters only grow; a driver that resets them is not trusted backwards.
        let mut drops = missed.saturating_sub(seen.missed) + nombuf.saturating_sub(seen.nombuf);
        if let Some(sockets) = &self.port.sockets {
            drops += sockets.take_drops();
        }
        seen.missed = seen.missed.max(missed);
        seen.nombuf = seen.nombuf.max(nombuf);
        Ok((taken + drops, drops))
    }

    fn close_intake(&mut self) -> Result<Duration, CaptureError> {
        // A DPDK queue cannot refuse frames on its own: the worker drains at
        // most what the ring can hold (and the burst in hand), then stops.
        let ring = u64::from(self.port.info.nb_desc) + self.held.len() as u64;
        self.drain_left = Some(ring);
        Ok(Duration::ZERO)
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for DpdkQueue {
    fn drop(&mut self) {
        // Frames received but never accepted (an abort) go back to the pool.
        let from = self.next;
        self.next = self.held_len;
        self.free_accepted(from);
        if self.registered {
            // SAFETY: the same thread registered itself in `take`.
            unsafe { ffi::fcapa_thread_unregister() };
        }
    }
}
