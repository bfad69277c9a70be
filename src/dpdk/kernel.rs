//! What DPDK 22.11's `net_af_packet` driver does not report, read from its
//! sockets: the frames the kernel dropped because a socket's ring was full
//! (`PACKET_STATISTICS`; the driver's `imissed` stays 0), and the
//! interface's link state (the driver always says up). The driver keeps its
//! sockets to itself, so they are found among this process's descriptors:
//! the AF_PACKET sockets bound to the interface. Nothing else in the process
//! opens AF_PACKET sockets when the source is a DPDK port.

use std::mem;
use std::os::fd::RawFd;

use crate::afpacket::{interface_index, interface_running, packet_statistics};

/// The driver's sockets on one interface. Not owned: the driver closes them.
pub struct DriverSockets {
    fds: Vec<RawFd>,
    ifindex: u32,
}

impl DriverSockets {
    /// The AF_PACKET sockets of this process bound to `iface`; None when
    /// there are none (the interface is gone, or another driver).
    pub fn find(iface: &str) -> Option<DriverSockets> {
        let ifindex = interface_index(iface).ok()?;
        let mut fds = Vec::new();
        for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<RawFd>().ok())
            else {
                continue;
            };
            // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
            let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
            let mut len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: getsockname writes at most `len` bytes into `addr`; an
            // fd that is not a socket (or is closed meanwhile) fails.
            let rc = unsafe {
                libc::getsockname(fd, (&mut addr as *mut libc::sockaddr_ll).cast(), &mut len)
            };
            if rc == 0
                && i32::from(addr.sll_family) == libc::AF_PACKET
                && addr.sll_ifindex == ifindex as i32
            {
                fds.push(fd);
            }
        }
        (!fds.is_empty()).then_some(DriverSockets { fds, ifindex })
    }

    /// Frames the kernel dropped on these sockets since the previous call
    /// (reading resets the kernel's counters).
    pub fn take_drops(&self) -> u64 {
        self.fds
            .iter()
            .filter_map(|&fd| packet_statistics(fd).ok())
            .map(|(_, drops)| drops)
            .sum()
    }

    /// Whether the interface exists, is up and has its carrier.
    pub fn link_up(&self) -> bool {
        interface_running(self.fds[0], self.ifindex)
    }
}
