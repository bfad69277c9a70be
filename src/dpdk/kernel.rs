//! What DPDK 22.11's `net_af_packet` driver does not report, read from its
//! sockets: the frames the kernel dropped because a socket's ring was full
//! (`PACKET_STATISTICS`; the driver's `imissed` stays 0), and the
//! interface's link state (the driver always says up). The driver keeps its
//! sockets to itself, so they are found among this process's descriptors:
//! the AF_PACKET sockets bound to the interface. Nothing else in the process
//! opens AF_PACKET sockets when the source is a DPDK port.

use std::mem;
use std::os::fd::RawFd;

use crate::afpacket::interface_index;

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
        let mut drops = 0;
        for &fd in &self.fds {
            let mut st = libc::tpacket_stats_v3 {
                tp_packets: 0,
                tp_drops: 0,
                tp_freeze_q_cnt: 0,
            };
            let mut len = mem::size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
            // SAFETY: `st` and `len` are live locals; the kernel writes at
            // most `len` bytes (a TPACKET_V2 socket's shorter statistics).
            let rc = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_PACKET,
                    libc::PACKET_STATISTICS,
                    (&mut st as *mut libc::tpacket_stats_v3).cast(),
                    &mut len,
                )
            };
            if rc == 0 {
                drops += u64::from(st.tp_drops);
            }
        }
        drops
    }

    /// Whether the interface exists, is up and has its carrier.
    pub fn link_up(&self) -> bool {
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { mem::zeroed() };
        let mut name = [0 as libc::c_char; libc::IFNAMSIZ];
        // SAFETY: `name` has IFNAMSIZ bytes, what if_indextoname may write.
        if unsafe { libc::if_indextoname(self.ifindex, name.as_mut_ptr()) }.is_null() {
            return false; // deleted
        }
        req.ifr_name = name;
        // SAFETY: SIOCGIFFLAGS reads `ifr_name` and writes the flags of `req`.
        let rc = unsafe { libc::ioctl(self.fds[0], libc::SIOCGIFFLAGS, &mut req) };
        // SAFETY: the kernel filled the flags member on success.
        let flags = i32::from(unsafe { req.ifr_ifru.ifru_flags });
        let wanted = libc::IFF_UP | libc::IFF_RUNNING;
        rc == 0 && flags & wanted == wanted
    }
}
