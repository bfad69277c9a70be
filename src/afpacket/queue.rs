//! The receive queue: socket, mapped ring, and the cursor over its blocks.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::blocks::{block_status, Block, RingMap};
use super::socket::*;
use super::{ring_geometry, QueueConfig, RingGeometry, BLOCK_TIMEOUT_MS};
use crate::bpf::BpfProgram;
use crate::source::{interface_index, os_error, CaptureError, Frame, RxQueue};

/// One receive queue: an AF_PACKET socket bound to one interface, with its
/// TPACKET_V3 ring. See the module comment for the threading contract.
pub struct PacketQueue {
    // Dropped in this order: the ring is unmapped, then the socket closed. The
    // mapping holds a reference to the socket too; when both are gone the
    // kernel releases it, leaving the fanout group and promiscuous mode.
    ring: RingMap,
    fd: OwnedFd,
    /// The block to look at next.
    cursor: usize,
    /// Frames of the block at `cursor` already taken (when the transmit ring
    /// pushed back in the middle of it).
    resume: usize,
    interface: String,
    ifindex: u32,
}

// SAFETY: the queue exclusively owns its socket and mapping; the raw pointer
// is only dereferenced by whichever single thread owns the queue.
unsafe impl Send for PacketQueue {}

impl fmt::Debug for PacketQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketQueue")
            .field("interface", &self.interface)
            .field("fd", &self.fd.as_raw_fd())
            .field("geometry", &self.ring.geometry)
            .field("cursor", &self.cursor)
            .finish()
    }
}

impl PacketQueue {
    /// Opens the socket, sets up and maps its ring, and starts capturing.
    ///
    /// The steps run in a fixed order, chosen so that no frame the operator
    /// did not ask for reaches the ring, and none reaches it twice:
    /// 1. `socket(AF_PACKET, SOCK_RAW, 0)`: protocol 0, so it receives nothing yet;
    /// 2. `PACKET_VERSION` = TPACKET_V3;
    /// 3. `PACKET_RX_RING`, sized by [`ring_geometry`];
    /// 4. `mmap` of the ring;
    /// 5. a drop-everything filter, so the next steps' window captures nothing;
    /// 6. `bind` to the interface with `ETH_P_ALL`: the kernel delivers from here;
    /// 7. `PACKET_FANOUT`: only a bound socket may join, and until it has
    ///    joined it would see every frame, duplicating the group's;
    /// 8. the promiscuous membership;
    /// 9. the real filter, cutting at the snap length (or no filter at all):
    ///    capture starts.
    pub fn open(cfg: &QueueConfig) -> Result<PacketQueue, CaptureError> {
        let name = cfg.interface.as_str();
        let ifindex = interface_index(name)?;
        let fd = new_socket()?;
        let version = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VERSION, &version)
            .map_err(|e| os_error("setsockopt(PACKET_VERSION, TPACKET_V3)", e, NEEDS_RAW))?;
        let geometry = ring_geometry(cfg.frames);
        set_rx_ring(&fd, geometry)?;
        let ring = RingMap::map(&fd, geometry).map_err(|e| {
            let what = format!("mmap of the {} MiB receive ring", geometry.bytes() >> 20);
            os_error(&what, e, NEEDS_RAW)
        })?;
        attach_filter(&fd, &BpfProgram::drop_all())?;
        bind(&fd, ifindex, name)?;
        if let Some((group, mode)) = cfg.fanout {
            join_fanout(&fd, group, mode)?;
        }
        if cfg.promiscuous {
            add_promiscuous(&fd, ifindex, name)?;
        }
        match &cfg.filter {
            Some(p) => attach_filter(&fd, &p.clone().with_snaplen(cfg.snaplen))?,
            None if cfg.snaplen != 0 => attach_filter(&fd, &BpfProgram::accept_all(cfg.snaplen))?,
            None => {
                let zero: libc::c_int = 0;
                setsockopt(&fd, libc::SOL_SOCKET, libc::SO_DETACH_FILTER, &zero)
                    .map_err(|e| os_error("setsockopt(SO_DETACH_FILTER)", e, NEEDS_RAW))?;
            }
        }
        Ok(PacketQueue {
            ring,
            fd,
            cursor: 0,
            resume: 0,
            interface: name.to_string(),
            ifindex,
        })
    }

    fn cursor_ready(&self) -> bool {
        // SAFETY: the block is inside our live mapping; the reference is
        // dropped before this function returns.
        let status = unsafe { block_status(self.ring.block(self.cursor)) };
        status.load(Ordering::Acquire) & libc::TP_STATUS_USER != 0
    }

    /// The next block the kernel handed to user space, if any. No system call:
    /// one Acquire load of its `block_status`. Hold the block only as long as
    /// it takes to copy its frames out; dropping it hands it back.
    pub fn next_block(&mut self) -> Option<Block<'_>> {
        if !self.cursor_ready() {
            return None;
        }
        Some(Block {
            base: self.ring.block(self.cursor),
            size: self.ring.geometry.block_size as usize,
            count: self.ring.geometry.block_count as usize,
            cursor: &mut self.cursor,
            kept: false,
        })
    }

    /// Sleeps in `poll()` until a block is ready or `timeout_ms` passes (0:
    /// just look; -1: no limit). `Ok(true)` when [`next_block`](Self::next_block)
    /// will return a block; `Ok(false)` on timeout or EINTR.
    ///
    /// This is also where a pending socket error surfaces: the interface went
    /// down or was deleted gives [`CaptureError::InterfaceDown`] (once). A
    /// worker that only spins should call `wait(0)` now and then to see it.
    pub fn poll(&self, timeout_ms: i32) -> Result<bool, CaptureError> {
        if self.cursor_ready() {
            return Ok(true);
        }
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN | libc::POLLERR,
            revents: 0,
        };
        // SAFETY: one live pollfd, count 1.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if n < 0 {
            let err = last_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                return Ok(false);
            }
            return Err(os_error("poll on the capture socket", err, NEEDS_RAW));
        }
        if pfd.revents & libc::POLLERR != 0 {
            match take_socket_error(self.fd.as_raw_fd()) {
                Ok(0) => {}
                Ok(libc::ENETDOWN) | Ok(libc::ENODEV) | Ok(libc::ENXIO) => {
                    return Err(CaptureError::InterfaceDown(self.interface.clone()))
                }
                Ok(code) => {
                    return Err(os_error(
                        &format!("capture on {}", self.interface),
                        io::Error::from_raw_os_error(code),
                        NEEDS_RAW,
                    ))
                }
                Err(e) => return Err(os_error("getsockopt(SO_ERROR)", e, NEEDS_RAW)),
            }
        }
        if pfd.revents & libc::POLLNVAL != 0 {
            return Err(os_error(
                "poll on the capture socket",
                io::Error::from_raw_os_error(libc::EBADF),
                NEEDS_RAW,
            ));
        }
        Ok(self.cursor_ready())
    }

    /// `(packets, drops)` since the previous call (reading resets the kernel's
    /// counters, so the caller accumulates). `packets` counts every frame that
    /// passed the filter, the dropped ones included; `drops` are those the
    /// kernel could not put in the ring because it was full.
    fn read_stats(&self) -> Result<(u64, u64), CaptureError> {
        packet_statistics(self.fd.as_raw_fd())
            .map_err(|e| os_error("getsockopt(PACKET_STATISTICS)", e, NEEDS_RAW))
    }

    /// Makes the kernel refuse every new frame (refused frames are not
    /// counted either), so that a stopping worker can empty the ring and read
    /// statistics that match what it took exactly.
    pub fn reject_all(&self) -> Result<(), CaptureError> {
        attach_filter(&self.fd, &BpfProgram::drop_all())
    }

    /// Longest time the kernel holds a part-filled block before handing it over.
    pub fn retire_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::from(BLOCK_TIMEOUT_MS))
    }

    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn geometry(&self) -> RingGeometry {
        self.ring.geometry
    }
}

impl RxQueue for PacketQueue {
    fn take<F: FnMut(&Frame<'_>) -> bool>(&mut self, mut each: F) -> usize {
        let resume = self.resume;
        let Some(block) = self.next_block() else {
            return 0;
        };
        let mut accepted = 0;
        let mut refused = false;
        for frame in block.frames().skip(resume) {
            if !each(&frame) {
                refused = true;
                break;
            }
            accepted += 1;
        }
        if refused {
            // Not handed back: the next call gets this block again and skips
            // what was taken.
            block.keep();
            self.resume = resume + accepted;
        } else {
            drop(block); // hands the block back to the kernel
            self.resume = 0;
        }
        accepted
    }

    fn wait(&mut self, timeout: Duration) -> Result<bool, CaptureError> {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        self.poll(ms)
    }

    fn link_up(&self) -> bool {
        interface_running(self.fd.as_raw_fd(), self.ifindex)
    }

    fn take_stats(&mut self) -> Result<(u64, u64), CaptureError> {
        self.read_stats()
    }

    fn close_intake(&mut self) -> Result<Duration, CaptureError> {
        self.reject_all()?;
        Ok(self.retire_timeout() * 2)
    }

    fn name(&self) -> &str {
        &self.interface
    }
}
