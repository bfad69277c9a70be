//! The socket set-up steps, in the order `PacketQueue::open` calls them,
//! and the errors they give.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{FanoutMode, RingGeometry, BLOCK_TIMEOUT_MS, TYPICAL_FRAME};
use crate::bpf::BpfProgram;
use crate::source::{os_error, CaptureError};

/// The `errno` of the call that just failed, as an `io::Error`.
pub(super) fn last_error() -> io::Error {
    io::Error::last_os_error()
}

pub(super) const NEEDS_RAW: &str = "CAP_NET_RAW (run as root or grant the capability)";
pub(super) const NEEDS_RAW_ADMIN: &str =
    "CAP_NET_RAW and CAP_NET_ADMIN (run as root or grant them)";

pub(super) fn setsockopt<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> Result<(), io::Error> {
    // SAFETY: `value` points to a live, initialised `T` of the length passed;
    // the kernel only reads it during the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(last_error())
    }
}

pub(super) fn new_socket() -> Result<OwnedFd, CaptureError> {
    // SAFETY: plain system call with constant arguments.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        let err = last_error();
        if err.raw_os_error() == Some(libc::EAFNOSUPPORT) {
            let what = "socket(AF_PACKET): this kernel has no AF_PACKET support";
            return Err(os_error(what, err, NEEDS_RAW));
        }
        return Err(os_error("socket(AF_PACKET)", err, NEEDS_RAW));
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

pub(super) fn set_rx_ring(fd: &OwnedFd, geometry: RingGeometry) -> Result<(), CaptureError> {
    let req = libc::tpacket_req3 {
        tp_block_size: geometry.block_size,
        tp_block_nr: geometry.block_count,
        // Checked by the kernel (block_size / frame_size * block_nr must equal
        // frame_nr), otherwise unused by TPACKET_V3.
        tp_frame_size: TYPICAL_FRAME,
        tp_frame_nr: geometry.block_count * (geometry.block_size / TYPICAL_FRAME),
        tp_retire_blk_tov: BLOCK_TIMEOUT_MS,
        tp_sizeof_priv: 0,
        tp_feature_req_word: 0,
    };
    setsockopt(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req).map_err(|e| {
        let mut what = format!(
            "setsockopt(PACKET_RX_RING) for {} blocks of {} KiB ({} MiB)",
            geometry.block_count,
            geometry.block_size / 1024,
            geometry.bytes() >> 20
        );
        if e.raw_os_error() == Some(libc::ENOMEM) {
            what.push_str(": not enough memory, lower --rx-desc");
        }
        os_error(&what, e, NEEDS_RAW)
    })
}

pub(super) fn attach_filter(fd: &OwnedFd, program: &BpfProgram) -> Result<(), CaptureError> {
    let fprog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        // The kernel copies the program in and never writes through this.
        filter: program.instructions().as_ptr().cast_mut(),
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog).map_err(|e| {
        let mut what = format!(
            "setsockopt(SO_ATTACH_FILTER) of {} instructions",
            program.len()
        );
        if e.raw_os_error() == Some(libc::ENOMEM) {
            what.push_str(": too big for net.core.optmem_max");
        }
        os_error(&what, e, NEEDS_RAW)
    })
}

pub(super) fn bind(fd: &OwnedFd, ifindex: u32, name: &str) -> Result<(), CaptureError> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a live, initialised sockaddr_ll of the length passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    // Binding to a down interface succeeds but leaves ENETDOWN pending.
    let code = if rc == 0 {
        take_socket_error(fd.as_raw_fd())
            .map_err(|e| os_error("getsockopt(SO_ERROR)", e, NEEDS_RAW))?
    } else {
        last_error().raw_os_error().unwrap_or(libc::EIO)
    };
    match code {
        0 => Ok(()),
        libc::ENODEV | libc::ENXIO => Err(CaptureError::NoSuchInterface(name.to_string())),
        libc::ENETDOWN => Err(CaptureError::InterfaceDown(name.to_string())),
        code => {
            let what = format!("bind to interface {name}");
            Err(os_error(
                &what,
                io::Error::from_raw_os_error(code),
                NEEDS_RAW,
            ))
        }
    }
}

pub(super) fn join_fanout(fd: &OwnedFd, group: u16, mode: FanoutMode) -> Result<(), CaptureError> {
    let arg = (u32::from(group) | (mode.type_flags() << 16)) as libc::c_int;
    setsockopt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg).map_err(|e| {
        let mut what = format!("joining PACKET_FANOUT group {group} ({})", mode.name());
        match e.raw_os_error() {
            Some(libc::EINVAL) => what.push_str(&format!(
                ": the group exists with another mode or interface \
                 (is another capture using group id {group}?)"
            )),
            Some(libc::ENOSPC) => what.push_str(": the group is full"),
            _ => {}
        }
        os_error(&what, e, NEEDS_RAW_ADMIN)
    })
}

/// Promiscuous mode as a membership, not an interface flag: the kernel counts
/// it and takes it back when the socket is released, even if the process
/// dies, so a crashed probe never leaves the interface promiscuous.
pub(super) fn add_promiscuous(fd: &OwnedFd, ifindex: u32, name: &str) -> Result<(), CaptureError> {
    let mreq = libc::packet_mreq {
        mr_ifindex: ifindex as libc::c_int,
        mr_type: libc::PACKET_MR_PROMISC as libc::c_ushort,
        mr_alen: 0,
        mr_address: [0; 8],
    };
    setsockopt(fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq).map_err(|e| {
        let what = format!("promiscuous mode on {name} (PACKET_ADD_MEMBERSHIP)");
        os_error(&what, e, NEEDS_RAW_ADMIN)
    })
}

/// Reads and clears the socket's pending error (`SO_ERROR`).
pub(super) fn take_socket_error(fd: libc::c_int) -> Result<i32, io::Error> {
    let mut err: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are live locals of the sizes the kernel expects.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(err)
    } else {
        Err(last_error())
    }
}

/// `(packets, drops)` the kernel counted on an AF_PACKET socket since the
/// previous read (reading resets them): `packets` every frame that passed
/// the filter, the dropped ones included; `drops` those it could not put in
/// the ring because it was full.
pub(crate) fn packet_statistics(fd: RawFd) -> Result<(u64, u64), io::Error> {
    let mut st = libc::tpacket_stats_v3 {
        tp_packets: 0,
        tp_drops: 0,
        tp_freeze_q_cnt: 0,
    };
    let mut len = mem::size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
    // SAFETY: `st` and `len` are live locals; the kernel writes at most `len`
    // bytes (a TPACKET_V2 socket's shorter statistics).
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut st as *mut libc::tpacket_stats_v3).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(last_error());
    }
    Ok((u64::from(st.tp_packets), u64::from(st.tp_drops)))
}

/// Whether interface `ifindex` exists, is up and has its carrier
/// (`IFF_UP | IFF_RUNNING`), asked through a socket of the caller's.
pub(crate) fn interface_running(fd: RawFd, ifindex: u32) -> bool {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    let mut name = [0 as libc::c_char; libc::IFNAMSIZ];
    // SAFETY: `name` has IFNAMSIZ bytes, what if_indextoname may write.
    if unsafe { libc::if_indextoname(ifindex, name.as_mut_ptr()) }.is_null() {
        return false; // deleted
    }
    req.ifr_name = name;
    // SAFETY: SIOCGIFFLAGS reads `ifr_name` and writes `ifr_ifru.ifru_flags`
    // of the live `req`.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) };
    // SAFETY: the kernel filled the flags member on success.
    let flags = i32::from(unsafe { req.ifr_ifru.ifru_flags });
    let wanted = libc::IFF_UP | libc::IFF_RUNNING;
    rc == 0 && flags & wanted == wanted
}
