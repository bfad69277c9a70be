//! Receive queue: one AF_PACKET socket with a TPACKET_V3 memory-mapped RX ring.
//!
//! # Ring layout
//!
//! The ring is `block_count` blocks of `block_size` bytes, mapped once into our
//! address space. Each block is the unit handed between the kernel and us:
//!
//! ```text
//!  block start (page aligned)
//!  +------------------------------------------------------------------+
//!  | tpacket_block_desc  version, offset_to_priv,                     |
//!  |   hdr.bh1: block_status, num_pkts, offset_to_first_pkt, ...      |
//!  +------------------------------------------------------------------+  <- + offset_to_first_pkt
//!  | tpacket3_hdr (status, len, snaplen, mac, sec, nsec, vlan) | pad  |
//!  |    frame bytes: tp_snaplen bytes at hdr + tp_mac                 |  --+ tp_next_offset
//!  | tpacket3_hdr | ... (num_pkts frames, the last has next_offset 0) | <-+
//!  +------------------------------------------------------------------+
//! ```
//!
//! `block_status` says who owns a block: `TP_STATUS_KERNEL` (0), the kernel is
//! filling it or will; `TP_STATUS_USER`, it is closed (full, or retired after
//! [`BLOCK_TIMEOUT_MS`] on a quiet link) and ours until we store
//! `TP_STATUS_KERNEL` back. Blocks go round in order 0, 1, .., n-1, 0, .. on both
//! sides, so user space only ever looks at one block: the next in that order.
//! When every block is ours the kernel drops what arrives and counts it
//! (`PACKET_STATISTICS`); nothing is overwritten.
//!
//! # Contract
//!
//! * [`PacketQueue::open`] runs on any thread (the control plane, before it
//!   drops privileges). The queue is then moved into its receive worker, which
//!   alone calls [`PacketQueue::next_block`], [`PacketQueue::wait`] and
//!   [`PacketQueue::take_stats`]. `PacketQueue` is `Send`, not `Sync`.
//! * [`Block`] is an RAII handle: while it lives the kernel cannot reuse that
//!   block, so copy the frames out and drop it promptly. Dropping it hands the
//!   block back (a Release store) and moves the queue on. The borrow checker
//!   allows one block at a time per queue, and none after the queue is gone.
//! * No system call per packet or per block: readiness is an Acquire load of
//!   `block_status`. `wait` (poll) is for an idle worker only.
//! * A [`Frame`]'s `data` is the kernel's copy, from which the receive path
//!   took any outer VLAN tag; [`Frame::write_to`] gives the frame as it was on
//!   the wire, which is what goes to Kafka.
//! * Dropping the queue unmaps the ring and closes the socket; the kernel then
//!   leaves the fanout group and undoes the promiscuous membership itself (a
//!   moment later if a forked child still holds the descriptor until exec).

use std::ffi::CString;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};

/// Bytes per ring block: 128 KiB, a power-of-two multiple of the page size.
///
/// The largest frame the kernel can put in a block is `BLOCK_SIZE` less the
/// block header and the frame header, so 9000-byte jumbo frames and 64 KiB
/// GRO/GSO super-frames fit whole. One block holds ~80 full-size 1514-byte
/// frames (a frame costs its length plus ~82 bytes of header and padding) or
/// ~900 minimum-size ones. Blocks are kept this small because a quiet link
/// hands blocks over part-filled every [`BLOCK_TIMEOUT_MS`]: many small
/// blocks cover a stalled reader for longer (block count × timeout) than a
/// few large ones of the same memory.
pub const BLOCK_SIZE: u32 = 1 << 17;

/// How long the kernel keeps a partly filled block before handing it over
/// anyway (`tp_retire_blk_tov`, milliseconds): bounds the latency on a quiet
/// link. Rounded up to the kernel's tick. An empty block is never retired.
pub const BLOCK_TIMEOUT_MS: u32 = 4;

/// What a "typical" frame costs in the ring when sizing it from a frame count:
/// a frame of up to ~1.9 KiB plus its 48-byte `tpacket3_hdr` and alignment.
/// Also `tp_frame_size`, which TPACKET_V3 only checks, never uses.
pub const TYPICAL_FRAME: u32 = 2048;

/// Snap length [`BpfProgram::compile`] uses when asked for 0 (tcpdump's maximum).
pub const DEFAULT_FILTER_SNAPLEN: u32 = 262_144;

/// The kernel's limit on a classic BPF program (`BPF_MAXINSNS`).
const BPF_MAXINSNS: usize = 4096;

/// A filter's return value is how many bytes of the frame the kernel keeps.
fn kernel_snaplen(snaplen: u32) -> u32 {
    if snaplen == 0 {
        u32::MAX
    } else {
        snaplen
    }
}

// ---------------------------------------------------------------------------
// Errors

/// Why a queue could not be opened or used. Each message is one line an
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
    #[error("{what}: {source}")]
    Os {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// The `errno` of the call that just failed, as an `io::Error`.
fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// `CaptureError::Os` for `step`, naming the capabilities `needs` when the
/// kernel said EPERM or EACCES.
fn os_error(step: &str, source: io::Error, needs: &str) -> CaptureError {
    let what = match source.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => format!("{step} needs {needs}"),
        _ => step.to_string(),
    };
    CaptureError::Os { what, source }
}

const NEEDS_RAW: &str = "CAP_NET_RAW (run as root or grant the capability)";
const NEEDS_RAW_ADMIN: &str = "CAP_NET_RAW and CAP_NET_ADMIN (run as root or grant them)";

// ---------------------------------------------------------------------------
// Configuration

/// How a fanout group spreads frames over its sockets (`PACKET_FANOUT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanoutMode {
    /// By the kernel's flow hash, like RSS. The hash is symmetric (both
    /// directions of a flow meet in one queue); IP fragments carry no ports,
    /// so they hash on their addresses alone and stay together, though maybe
    /// not with the rest of their flow.
    ///
    /// Deliberately *without* `PACKET_FANOUT_FLAG_DEFRAG`: with it the kernel
    /// reassembles fragments before fanout, so the group receives one datagram
    /// that never was on the wire instead of the fragments, and fragments
    /// whose siblings never arrive vanish without being counted anywhere.
    Hash,
    /// By the NIC receive queue the frame came in on (the NIC's own RSS).
    Qm,
    /// By the CPU that received the frame.
    Cpu,
    /// Round robin.
    Lb,
}

impl FanoutMode {
    /// The type-and-flags half of the `PACKET_FANOUT` argument.
    fn type_flags(self) -> u32 {
        match self {
            FanoutMode::Hash => libc::PACKET_FANOUT_HASH,
            FanoutMode::Qm => libc::PACKET_FANOUT_QM,
            FanoutMode::Cpu => libc::PACKET_FANOUT_CPU,
            FanoutMode::Lb => libc::PACKET_FANOUT_LB,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FanoutMode::Hash => "hash",
            FanoutMode::Qm => "qm",
            FanoutMode::Cpu => "cpu",
            FanoutMode::Lb => "lb",
        }
    }
}

/// Everything [`PacketQueue::open`] needs.
pub struct QueueConfig {
    /// Interface name, e.g. `eth0`.
    pub interface: String,
    /// Ring size in frames (`-d`, default 4096): the ring is sized so that
    /// about this many typical frames (<= 2 KiB) fit; see [`ring_geometry`].
    pub frames: u32,
    /// 0 = whole frame; else frames are cut to this many bytes, in the kernel
    /// (it copies at most that many into the ring).
    pub snaplen: u32,
    /// Fanout group id and mode. Every queue of one run joins the same group;
    /// a group id is shared by the whole network namespace, so two probes on
    /// one host need different ids. `None`: this socket sees every frame.
    pub fanout: Option<(u16, FanoutMode)>,
    /// Kernel filter, best from [`BpfProgram::compile_live`] (see
    /// [`BpfProgram::compile`] for why). Its accept length is replaced by
    /// `snaplen` at open, so the snap length it was compiled for does not
    /// matter here.
    pub filter: Option<BpfProgram>,
    /// Put the interface in promiscuous mode for as long as the socket lives.
    pub promiscuous: bool,
}

impl QueueConfig {
    /// Defaults: 4096 frames, whole frames, no fanout, no filter, promiscuous.
    pub fn new(interface: &str) -> QueueConfig {
        QueueConfig {
            interface: interface.to_string(),
            frames: 4096,
            snaplen: 0,
            fanout: None,
            filter: None,
            promiscuous: true,
        }
    }
}

/// Size of a ring: `block_count` blocks of `block_size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingGeometry {
    pub block_size: u32,
    pub block_count: u32,
}

impl RingGeometry {
    /// Bytes mapped.
    pub fn bytes(&self) -> usize {
        self.block_size as usize * self.block_count as usize
    }
}

/// The ring for `frames` typical frames: `max(2, ceil(frames * 2048 / 128 KiB))`
/// blocks of [`BLOCK_SIZE`]; the default 4096 frames gives 64 blocks, 8 MiB.
/// Two blocks at least, so the kernel can fill one while we read the other.
///
/// That many frames fit when blocks fill up before [`BLOCK_TIMEOUT_MS`]. On a
/// slower link the kernel hands blocks over part full, so a stalled reader is
/// covered for about `block_count` timeouts of traffic rather than `frames`
/// frames: the ring absorbs a worker's hiccups, it is not a buffer for Kafka.
pub fn ring_geometry(frames: u32) -> RingGeometry {
    let bytes = u64::from(frames) * u64::from(TYPICAL_FRAME);
    // tp_frame_nr (blocks * frames per block) must fit in a u32.
    let most = u64::from(u32::MAX / (BLOCK_SIZE / TYPICAL_FRAME));
    let blocks = bytes.div_ceil(u64::from(BLOCK_SIZE)).clamp(2, most);
    RingGeometry {
        block_size: BLOCK_SIZE,
        block_count: blocks as u32,
    }
}

// ---------------------------------------------------------------------------
// Filters

/// A compiled classic-BPF program (what `SO_ATTACH_FILTER` takes).
#[derive(Clone)]
pub struct BpfProgram {
    insns: Vec<libc::sock_filter>,
}

impl fmt::Debug for BpfProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BpfProgram({} instructions)", self.insns.len())
    }
}

/// libpcap's message, without the pcap crate's "libpcap error: " prefix.
fn pcap_message(e: pcap::Error) -> String {
    let msg = e.to_string();
    match msg.strip_prefix("libpcap error: ") {
        Some(rest) => rest.to_string(),
        None => msg,
    }
}

fn invalid_filter(expr: &str, e: pcap::Error) -> CaptureError {
    CaptureError::InvalidFilter {
        expr: shown_filter(expr),
        msg: pcap_message(e),
    }
}

/// The filter as an error line shows it: a long expression is cut, so the
/// error stays one readable line.
fn shown_filter(expr: &str) -> String {
    const MOST: usize = 80;
    match expr.char_indices().nth(MOST) {
        Some((cut, _)) => format!("{}...", &expr[..cut]),
        None => expr.to_string(),
    }
}

const BPF_CLASS_MASK: u16 = 0x07;
const BPF_RET: u16 = 0x06;
const BPF_RVAL_MASK: u16 = 0x18;
const BPF_K: u16 = 0x00;

impl BpfProgram {
    /// Compile tcpdump syntax with libpcap for Ethernet, accepting `snaplen`
    /// bytes of a matching frame (0 = [`DEFAULT_FILTER_SNAPLEN`]). Right for
    /// frames as they are on the wire, as in a capture file.
    ///
    /// For a live queue prefer [`compile_live`](Self::compile_live): in the
    /// kernel the filter sees a received frame after the outer VLAN tag was
    /// taken off (see [`Frame::vlan_tci`]), so this program's `vlan` tests,
    /// which look for the tag in the frame, never match there (`vlan 100`
    /// takes nothing, `not vlan` takes everything), while `udp port 53`
    /// takes tagged and untagged DNS alike.
    pub fn compile(expr: &str, snaplen: u32) -> Result<BpfProgram, CaptureError> {
        let dead =
            pcap::Capture::dead(pcap::Linktype::ETHERNET).map_err(|e| invalid_filter(expr, e))?;
        let program = dead
            .compile(expr, true)
            .map_err(|e| invalid_filter(expr, e))?;
        BpfProgram::from_pcap(expr, &program, snaplen)
    }

    /// Like [`compile`](Self::compile), for live capture on `interface`:
    /// compiled on a live libpcap handle there (opened and closed at once),
    /// so `vlan` tests use the tag the kernel took off, as tcpdump's do. The
    /// program is then for that live capture only. Needs CAP_NET_RAW.
    pub fn compile_live(
        expr: &str,
        snaplen: u32,
        interface: &str,
    ) -> Result<BpfProgram, CaptureError> {
        interface_index(interface)?;
        let live = pcap::Capture::from_device(interface)
            .and_then(|c| c.immediate_mode(true).buffer_size(1 << 16).open())
            .map_err(|e| CaptureError::Os {
                what: format!("opening {interface} with libpcap to compile the filter"),
                source: io::Error::other(pcap_message(e)),
            })?;
        let program = live
            .compile(expr, true)
            .map_err(|e| invalid_filter(expr, e))?;
        BpfProgram::from_pcap(expr, &program, snaplen)
    }

    fn from_pcap(
        expr: &str,
        program: &pcap::BpfProgram,
        snaplen: u32,
    ) -> Result<BpfProgram, CaptureError> {
        let invalid = |msg: String| CaptureError::InvalidFilter {
            expr: shown_filter(expr),
            msg,
        };
        // The pcap crate keeps bpf_insn's fields private but prints each
        // instruction as "code jt jf k" (tcpdump -ddd's order), which we parse
        // rather than cast between the two crates' struct layouts.
        let mut insns = Vec::with_capacity(program.get_instructions().len());
        for insn in program.get_instructions() {
            let text = insn.to_string();
            let mut f = text.split_ascii_whitespace();
            let parsed = (|| {
                Some(libc::sock_filter {
                    code: f.next()?.parse().ok()?,
                    jt: f.next()?.parse().ok()?,
                    jf: f.next()?.parse().ok()?,
                    k: f.next()?.parse().ok()?,
                })
            })();
            insns.push(
                parsed.ok_or_else(|| invalid(format!("unreadable BPF instruction {text:?}")))?,
            );
        }
        if insns.is_empty() {
            return Err(invalid("libpcap produced an empty program".into()));
        }
        if insns.len() > BPF_MAXINSNS {
            return Err(invalid(format!(
                "compiles to {} BPF instructions, more than the kernel's {BPF_MAXINSNS}",
                insns.len()
            )));
        }
        let snaplen = if snaplen == 0 {
            DEFAULT_FILTER_SNAPLEN
        } else {
            snaplen
        };
        Ok(BpfProgram { insns }.with_snaplen(snaplen))
    }

    /// `ret #snaplen`: accepts every frame, cut to `snaplen` bytes (0 = whole).
    pub fn accept_all(snaplen: u32) -> BpfProgram {
        BpfProgram::ret(kernel_snaplen(snaplen))
    }

    /// `ret #0`: accepts nothing.
    fn drop_all() -> BpfProgram {
        BpfProgram::ret(0)
    }

    fn ret(k: u32) -> BpfProgram {
        let insn = libc::sock_filter {
            code: BPF_RET | BPF_K,
            jt: 0,
            jf: 0,
            k,
        };
        BpfProgram { insns: vec![insn] }
    }

    /// The same program accepting `snaplen` bytes (0 = whole frame) of a
    /// matching frame: every `ret #k` with `k != 0` (libpcap's "accept `k`
    /// bytes") becomes `ret #snaplen`. [`PacketQueue::open`] does this with
    /// the queue's snap length.
    pub fn with_snaplen(mut self, snaplen: u32) -> BpfProgram {
        let snaplen = kernel_snaplen(snaplen);
        for insn in &mut self.insns {
            let is_ret_k =
                insn.code & BPF_CLASS_MASK == BPF_RET && insn.code & BPF_RVAL_MASK == BPF_K;
            if is_ret_k && insn.k != 0 {
                insn.k = snaplen;
            }
        }
        self
    }

    pub fn instructions(&self) -> &[libc::sock_filter] {
        &self.insns
    }

    pub fn len(&self) -> usize {
        self.insns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }
}

// ---------------------------------------------------------------------------
// Interface helpers

/// The index of interface `name` in this thread's network namespace.
pub fn interface_index(name: &str) -> Result<u32, CaptureError> {
    let missing = || CaptureError::NoSuchInterface(name.to_string());
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(missing());
    }
    let c_name = CString::new(name).map_err(|_| missing())?;
    // SAFETY: `c_name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index != 0 {
        return Ok(index);
    }
    let err = last_error();
    match err.raw_os_error() {
        Some(libc::ENODEV) | Some(libc::ENXIO) => Err(missing()),
        _ => Err(os_error(&format!("if_nametoindex({name})"), err, NEEDS_RAW)),
    }
}

// ---------------------------------------------------------------------------
// Socket set-up steps, in the order PacketQueue::open calls them

fn setsockopt<T>(
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

fn new_socket() -> Result<OwnedFd, CaptureError> {
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

fn set_rx_ring(fd: &OwnedFd, geometry: RingGeometry) -> Result<(), CaptureError> {
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

fn attach_filter(fd: &OwnedFd, program: &BpfProgram) -> Result<(), CaptureError> {
    let fprog = libc::sock_fprog {
        len: program.insns.len() as libc::c_ushort,
        // The kernel copies the program in and never writes through this.
        filter: program.insns.as_ptr().cast_mut(),
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

fn bind(fd: &OwnedFd, ifindex: u32, name: &str) -> Result<(), CaptureError> {
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

fn join_fanout(fd: &OwnedFd, group: u16, mode: FanoutMode) -> Result<(), CaptureError> {
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
fn add_promiscuous(fd: &OwnedFd, ifindex: u32, name: &str) -> Result<(), CaptureError> {
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
fn take_socket_error(fd: libc::c_int) -> Result<i32, io::Error> {
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

// ---------------------------------------------------------------------------
// The mapped ring

/// The mmap'd ring; unmapped on drop.
struct RingMap {
    base: NonNull<u8>,
    geometry: RingGeometry,
}

impl RingMap {
    fn map(fd: &OwnedFd, geometry: RingGeometry) -> Result<RingMap, io::Error> {
        // SAFETY: a fresh shared mapping chosen by the kernel, of the exact size
        // of the ring set up on `fd`; nothing else in this process aliases it.
        let addr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                geometry.bytes(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(last_error());
        }
        // A forked child (e.g. Python's multiprocessing) must not share the
        // ring: it could hand blocks back under us. Advisory; errors ignored.
        // SAFETY: the range is exactly the mapping just made.
        unsafe { libc::madvise(addr, geometry.bytes(), libc::MADV_DONTFORK) };
        let base = NonNull::new(addr.cast::<u8>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(RingMap { base, geometry })
    }

    fn block(&self, index: usize) -> NonNull<u8> {
        debug_assert!(index < self.geometry.block_count as usize);
        // SAFETY: index < block_count, so the offset stays inside the mapping.
        unsafe { self.base.add(index * self.geometry.block_size as usize) }
    }
}

impl Drop for RingMap {
    fn drop(&mut self) {
        // SAFETY: `base`/`bytes` are exactly what mmap returned and nothing
        // borrows the mapping any more (blocks borrow the queue that owns us).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.geometry.bytes());
        }
    }
}

/// `block_status` of the block at `block`, as an atomic.
///
/// # Safety
/// `block` must be the start of a block of a live ring mapping, and the
/// returned reference must not outlive that mapping.
unsafe fn block_status<'a>(block: NonNull<u8>) -> &'a AtomicU32 {
    let desc = block.as_ptr().cast::<libc::tpacket_block_desc>();
    // SAFETY: (caller) `desc` points at a mapped tpacket_block_desc; the field
    // is a 4-byte aligned u32 (block starts are page aligned) that the kernel
    // also accesses, so it is only ever touched through this atomic.
    unsafe { &*ptr::addr_of!((*desc).hdr.bh1.block_status).cast::<AtomicU32>() }
}

// ---------------------------------------------------------------------------
// The queue

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
        })
    }

    /// Sleeps in `poll()` until a block is ready or `timeout_ms` passes (0:
    /// just look; -1: no limit). `Ok(true)` when [`next_block`](Self::next_block)
    /// will return a block; `Ok(false)` on timeout or EINTR.
    ///
    /// This is also where a pending socket error surfaces: the interface went
    /// down or was deleted gives [`CaptureError::InterfaceDown`] (once). A
    /// worker that only spins should call `wait(0)` now and then to see it.
    pub fn wait(&self, timeout_ms: i32) -> Result<bool, CaptureError> {
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
    pub fn take_stats(&self) -> Result<(u64, u64), CaptureError> {
        let mut st = libc::tpacket_stats_v3 {
            tp_packets: 0,
            tp_drops: 0,
            tp_freeze_q_cnt: 0,
        };
        let mut len = mem::size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: `st` and `len` are live locals; the kernel writes at most `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(os_error(
                "getsockopt(PACKET_STATISTICS)",
                last_error(),
                NEEDS_RAW,
            ));
        }
        Ok((u64::from(st.tp_packets), u64::from(st.tp_drops)))
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

// ---------------------------------------------------------------------------
// Blocks and frames

/// A block the kernel handed over. While it lives the kernel will not touch
/// it; dropping it hands it back (Release store of `TP_STATUS_KERNEL`) and
/// moves the queue on to the next block.
#[must_use = "dropping a Block hands it back to the kernel, its frames unread"]
pub struct Block<'q> {
    base: NonNull<u8>,
    size: usize,
    count: usize,
    cursor: &'q mut usize,
}

impl Block<'_> {
    fn desc(&self) -> *const libc::tpacket_block_desc {
        self.base.as_ptr().cast()
    }

    /// Frames in the block (`num_pkts`).
    pub fn len(&self) -> usize {
        // SAFETY: the block is ours (status USER, observed with Acquire), so the
        // kernel does not write its header until we hand it back.
        unsafe { ptr::addr_of!((*self.desc()).hdr.bh1.num_pkts).read() as usize }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kernel's sequence number of this block (counts up by one per block).
    pub fn seq_num(&self) -> u64 {
        // SAFETY: as in `len`.
        unsafe { ptr::addr_of!((*self.desc()).hdr.bh1.seq_num).read() }
    }

    /// The frames, in arrival order.
    pub fn frames(&self) -> Frames<'_> {
        // SAFETY: as in `len`.
        let first = unsafe { ptr::addr_of!((*self.desc()).hdr.bh1.offset_to_first_pkt).read() };
        Frames {
            base: self.base,
            size: self.size,
            offset: first as usize,
            remaining: self.len(),
            _block: PhantomData,
        }
    }
}

impl Drop for Block<'_> {
    fn drop(&mut self) {
        // SAFETY: the block is in the queue's mapping, which outlives `'q`.
        let status = unsafe { block_status(self.base) };
        // Release: all our reads of the block happen before the kernel may
        // refill it.
        status.store(libc::TP_STATUS_KERNEL, Ordering::Release);
        *self.cursor = (*self.cursor + 1) % self.count;
    }
}

/// Iterator over a block's frames; steps by `tp_next_offset`.
pub struct Frames<'b> {
    base: NonNull<u8>,
    size: usize,
    offset: usize,
    remaining: usize,
    _block: PhantomData<&'b [u8]>,
}

impl<'b> Iterator for Frames<'b> {
    type Item = Frame<'b>;

    fn next(&mut self) -> Option<Frame<'b>> {
        if self.remaining == 0 {
            return None;
        }
        // The kernel's offsets are trusted, but a bad one must end the walk,
        // not read outside the block.
        let hdr_len = mem::size_of::<libc::tpacket3_hdr>();
        if self
            .offset
            .checked_add(hdr_len)
            .is_none_or(|end| end > self.size)
        {
            self.remaining = 0;
            return None;
        }
        // SAFETY: the header lies inside the block (checked above), which is
        // ours while 'b lives; unaligned read, so alignment does not matter.
        let hdr = unsafe {
            self.base
                .as_ptr()
                .add(self.offset)
                .cast::<libc::tpacket3_hdr>()
                .read_unaligned()
        };
        let start = self.offset + hdr.tp_mac as usize;
        let len = hdr.tp_snaplen as usize;
        if start.checked_add(len).is_none_or(|end| end > self.size) {
            self.remaining = 0;
            return None;
        }
        // SAFETY: `start..start+len` lies inside the block (checked above); the
        // kernel does not write to the block while we hold it, and the slice
        // cannot outlive the `Block` ('b).
        let data = unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(start), len) };

        self.remaining -= 1;
        match hdr.tp_next_offset {
            0 => self.remaining = 0,
            next => self.offset += next as usize,
        }

        let tagged = hdr.tp_status & libc::TP_STATUS_VLAN_VALID != 0;
        let tpid_valid = hdr.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0;
        Some(Frame {
            ts_us: u64::from(hdr.tp_sec) * 1_000_000 + u64::from(hdr.tp_nsec) / 1000,
            wire_len: hdr
                .tp_len
                .saturating_add(if tagged { VLAN_TAG_LEN as u32 } else { 0 }),
            data,
            vlan_tci: tagged.then_some(hdr.hv1.tp_vlan_tci as u16),
            vlan_tpid: (tagged && tpid_valid).then_some(hdr.hv1.tp_vlan_tpid),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}

const VLAN_TAG_LEN: usize = 4;
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

// ---------------------------------------------------------------------------
// Tests. The live ones need root: each makes its own network namespace and veth
// pair, sends known frames from the far end (inside the namespace) and captures
// on the near end. Frames go nowhere else: the veth pair is the whole network,
// and their destination MAC is not the host's, so its IP stack ignores them.

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::process::Command;
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    const MARK: &[u8; 8] = b"FCAPTEST";
    const DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
    /// IEEE "local experimental" EtherType: nothing else on the link uses it.
    const TEST_ETHERTYPE: u16 = 0x88b5;

    static NEXT_NET: AtomicUsize = AtomicUsize::new(0);

    /// Runs `ip` with whitespace-separated `args`.
    fn ip(args: &str) -> Result<(), String> {
        let out = Command::new("ip")
            .args(args.split_whitespace())
            .output()
            .map_err(|e| format!("ip: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ip {args}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// A namespace with one end of a veth pair (`peer`); the other end (`host`)
    /// stays here. Both up, no IPv6 addresses (so no router solicitations).
    struct TestNet {
        ns: String,
        host: String,
        peer: String,
    }

    impl TestNet {
        fn new() -> TestNet {
            let n = NEXT_NET.fetch_add(1, Ordering::Relaxed);
            let pid = std::process::id() % 10_000;
            let net = TestNet {
                ns: format!("fcapa-test-{pid}-{n}"),
                host: format!("fc{pid}x{n}a"),
                peer: format!("fc{pid}x{n}b"),
            };
            let (ns, host, peer) = (&net.ns, &net.host, &net.peer);
            let _ = ip(&format!("link del {host}"));
            let _ = ip(&format!("netns del {ns}"));
            for step in [
                format!("netns add {ns}"),
                format!("link add {host} numtxqueues 2 numrxqueues 2 type veth peer name {peer} numtxqueues 2 numrxqueues 2"),
                format!("link set {host} addrgenmode none"),
                format!("link set {peer} netns {ns}"),
                format!("-n {ns} link set {peer} addrgenmode none"),
                format!("link set {host} up"),
                format!("-n {ns} link set {peer} up"),
            ] {
                ip(&step).unwrap();
            }
            net.wait_until_up();
            net
        }

        /// Waits until the kernel's link watch has seen both ends come up (it
        /// also starts their transmit queues, which drop frames until then).
        fn wait_until_up(&self) {
            let up = |args: String| {
                let out = Command::new("ip")
                    .args(args.split_whitespace())
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).contains("state UP")
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            while !(up(format!("-o link show {}", self.host))
                && up(format!("-n {} -o link show {}", self.ns, self.peer)))
            {
                assert!(Instant::now() < deadline, "veth pair did not come up");
                std::thread::sleep(Duration::from_millis(5));
            }
        }

        fn set_mtu(&self, mtu: u32) {
            ip(&format!("link set {} mtu {mtu}", self.host)).unwrap();
            ip(&format!("-n {} link set {} mtu {mtu}", self.ns, self.peer)).unwrap();
        }

        fn set_host(&self, state: &str) {
            ip(&format!("link set {} {state}", self.host)).unwrap();
            if state == "up" {
                self.wait_until_up();
            }
        }

        /// Sends `frames` from the far end: they arrive on `host` as received.
        fn send(&self, frames: &[Vec<u8>]) {
            send_raw(Some(&self.ns), &self.peer, frames);
        }

        /// Sends `frames` out of `host` itself: captured there as outgoing.
        fn send_out(&self, frames: &[Vec<u8>]) {
            send_raw(None, &self.host, frames);
        }

        fn queue(&self) -> QueueConfig {
            QueueConfig::new(&self.host)
        }
    }

    impl Drop for TestNet {
        fn drop(&mut self) {
            let _ = ip(&format!("link del {}", self.host));
            let _ = ip(&format!("netns del {}", self.ns));
        }
    }

    /// Sends raw frames on `ifname`, from a thread that has entered network
    /// namespace `ns` (a namespace is per thread), pausing now and then so the
    /// receiving CPU's backlog (netdev_max_backlog) never overflows. The
    /// thread stays on CPU 0: a veth receives on the sender's CPU, and a
    /// sender moving between CPUs could reorder its frames.
    fn send_raw(ns: Option<&str>, ifname: &str, frames: &[Vec<u8>]) {
        let ns = ns.map(str::to_string);
        let ifname = ifname.to_string();
        let frames = frames.to_vec();
        std::thread::spawn(move || {
            // SAFETY: a zeroed cpu_set_t is valid; the calls affect this thread.
            unsafe {
                let mut cpus: libc::cpu_set_t = mem::zeroed();
                libc::CPU_SET(0, &mut cpus);
                libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &cpus);
            }
            if let Some(ns) = ns {
                let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
                // SAFETY: a valid namespace fd; only this thread changes namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
            }
            let ifindex = interface_index(&ifname).unwrap();
            // SAFETY: plain system call.
            let raw =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            assert!(raw >= 0, "socket: {}", io::Error::last_os_error());
            // SAFETY: fresh descriptor, owned here.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: all-zero sockaddr_ll is valid.
            let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex as i32;
            sll.sll_halen = 6;
            for (i, frame) in frames.iter().enumerate() {
                loop {
                    // SAFETY: `frame` and `sll` are live for the call.
                    let n = unsafe {
                        libc::sendto(
                            fd.as_raw_fd(),
                            frame.as_ptr().cast(),
                            frame.len(),
                            0,
                            (&sll as *const libc::sockaddr_ll).cast(),
                            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                        )
                    };
                    if n == frame.len() as isize {
                        break;
                    }
                    let err = io::Error::last_os_error();
                    assert_eq!(err.raw_os_error(), Some(libc::ENOBUFS), "sendto: {err}");
                    std::thread::sleep(Duration::from_millis(1));
                }
                if i % 100 == 99 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        })
        .join()
        .unwrap();
    }

    /// An Ethernet frame of `len` bytes (>= 26) with the test EtherType, the
    /// marker and `seq`.
    fn raw_frame(seq: u32, len: usize) -> Vec<u8> {
        assert!(len >= 26);
        let mut f = Vec::with_capacity(len);
        f.extend_from_slice(&DST);
        f.extend_from_slice(&SRC);
        f.extend_from_slice(&TEST_ETHERTYPE.to_be_bytes());
        f.extend_from_slice(MARK);
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend((f.len()..len).map(|i| (i as u32 ^ seq) as u8));
        f
    }

    /// An Ethernet/IPv4 frame from 192.0.2.1 to 192.0.2.2 (documentation
    /// addresses) carrying `payload`; `frag` is the flags-and-offset field.
    /// `reverse` swaps the addresses (the other direction of a flow).
    fn ipv4_frame(proto: u8, id: u16, frag: u16, payload: &[u8], reverse: bool) -> Vec<u8> {
        let total = (20 + payload.len()) as u16;
        let mut ip4 = Vec::with_capacity(20);
        ip4.extend_from_slice(&[0x45, 0]);
        ip4.extend_from_slice(&total.to_be_bytes());
        ip4.extend_from_slice(&id.to_be_bytes());
        ip4.extend_from_slice(&frag.to_be_bytes());
        let (src, dst) = if reverse { (2, 1) } else { (1, 2) };
        ip4.extend_from_slice(&[64, proto, 0, 0, 192, 0, 2, src, 192, 0, 2, dst]);
        let mut sum: u32 = ip4
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        ip4[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        let mut f = Vec::with_capacity(34 + payload.len());
        f.extend_from_slice(&DST);
        f.extend_from_slice(&SRC);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        f.extend_from_slice(&ip4);
        f.extend_from_slice(payload);
        f
    }

    /// A UDP datagram (header and `data`, no checksum).
    fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
        let mut u = Vec::with_capacity(8 + data.len());
        u.extend_from_slice(&sport.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(data);
        u
    }

    /// An Ethernet/IPv4/UDP frame carrying the marker and `seq`, don't-fragment.
    fn udp_frame(sport: u16, dport: u16, seq: u32) -> Vec<u8> {
        let data: Vec<u8> = MARK.iter().copied().chain(seq.to_be_bytes()).collect();
        ipv4_frame(17, 1, 0x4000, &udp(sport, dport, &data), false)
    }

    /// The same from 192.0.2.2:`sport` to 192.0.2.1:`dport`.
    fn udp_reply(sport: u16, dport: u16, seq: u32) -> Vec<u8> {
        let data: Vec<u8> = MARK.iter().copied().chain(seq.to_be_bytes()).collect();
        ipv4_frame(17, 1, 0x4000, &udp(sport, dport, &data), true)
    }

    /// A fanout group id of this test run (ids are per network namespace).
    fn fanout_group() -> u16 {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        (std::process::id() as u16) ^ 0x5a5a ^ ((NEXT.fetch_add(1, Ordering::Relaxed) as u16) << 12)
    }

    /// `frame` with a VLAN tag inserted after the MAC addresses.
    fn tagged(frame: &[u8], tpid: u16, tci: u16) -> Vec<u8> {
        let mut f = frame[..12].to_vec();
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
        f.extend_from_slice(&frame[12..]);
        f
    }

    fn has_mark(bytes: &[u8]) -> bool {
        bytes.windows(MARK.len()).any(|w| w == MARK)
    }

    /// A captured frame, copied out of the ring.
    #[derive(Debug)]
    struct Got {
        bytes: Vec<u8>,
        data_len: usize,
        ts_us: u64,
        wire_len: u32,
        tci: Option<u16>,
        tpid: Option<u16>,
    }

    /// Drains every queue, like a receive worker, until `want` marked frames
    /// arrived in all, then 100 ms more to catch any extra; 5 s at most.
    fn collect(queues: &mut [&mut PacketQueue], want: usize, snaplen: u32) -> Vec<Vec<Got>> {
        drain(queues, want, snaplen, Duration::from_secs(5))
    }

    /// Drains every queue for `time`.
    fn drain_for(queues: &mut [&mut PacketQueue], time: Duration) -> Vec<Vec<Got>> {
        drain(queues, usize::MAX, 0, time)
    }

    fn drain(
        queues: &mut [&mut PacketQueue],
        want: usize,
        snaplen: u32,
        time: Duration,
    ) -> Vec<Vec<Got>> {
        let mut got: Vec<Vec<Got>> = queues.iter().map(|_| Vec::new()).collect();
        let deadline = Instant::now() + time;
        let mut settle: Option<Instant> = None;
        let mut buf = Vec::with_capacity(65_536);
        loop {
            for (q, out) in queues.iter_mut().zip(got.iter_mut()) {
                while let Some(block) = q.next_block() {
                    for frame in block.frames() {
                        frame.write_to(&mut buf, snaplen);
                        if has_mark(&buf) {
                            out.push(Got {
                                bytes: buf.clone(),
                                data_len: frame.data.len(),
                                ts_us: frame.ts_us,
                                wire_len: frame.wire_len,
                                tci: frame.vlan_tci,
                                tpid: frame.vlan_tpid,
                            });
                        }
                    }
                }
            }
            let total: usize = got.iter().map(Vec::len).sum();
            let now = Instant::now();
            if total >= want && settle.is_none() {
                settle = Some(now + Duration::from_millis(100));
            }
            if settle.is_some_and(|s| now >= s) || now >= deadline {
                return got;
            }
            for q in queues.iter() {
                q.wait(2).unwrap();
            }
        }
    }

    fn now_us() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64
    }

    // --- unit tests, no network ---------------------------------------------

    #[test]
    fn ring_sizing() {
        let blocks = |frames| ring_geometry(frames).block_count;
        assert_eq!(
            ring_geometry(4096),
            RingGeometry {
                block_size: 1 << 17,
                block_count: 64
            }
        );
        assert_eq!(ring_geometry(4096).bytes(), 8 << 20);
        assert_eq!(blocks(0), 2);
        assert_eq!(blocks(1), 2);
        assert_eq!(blocks(128), 2);
        assert_eq!(blocks(129), 3);
        assert_eq!(blocks(65_536), 1024);
        assert_eq!(blocks(u32::MAX), u32::MAX / 64);
        assert_eq!(BLOCK_SIZE as usize % 4096, 0);
        assert!(BLOCK_SIZE.is_power_of_two());
    }

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

    #[test]
    fn compile_sets_the_accept_length() {
        let rets = |p: &BpfProgram| -> Vec<u32> {
            let mut ks: Vec<u32> = p
                .instructions()
                .iter()
                .filter(|i| i.code == BPF_RET | BPF_K)
                .map(|i| i.k)
                .collect();
            ks.sort_unstable();
            ks.dedup();
            ks
        };
        let p = BpfProgram::compile("udp port 53", 0).unwrap();
        assert!(p.len() > 5, "{p:?}");
        assert_eq!(rets(&p), vec![0, DEFAULT_FILTER_SNAPLEN]);
        let p = BpfProgram::compile("udp port 53", 96).unwrap();
        assert_eq!(rets(&p), vec![0, 96]);
        assert_eq!(rets(&p.clone().with_snaplen(0)), vec![0, u32::MAX]);
        assert_eq!(rets(&p.with_snaplen(1500)), vec![0, 1500]);
        assert_eq!(rets(&BpfProgram::accept_all(0)), vec![u32::MAX]);
        // The empty expression accepts everything.
        assert_eq!(
            rets(&BpfProgram::compile("", 0).unwrap()),
            vec![DEFAULT_FILTER_SNAPLEN]
        );
    }

    #[test]
    fn invalid_filter_is_reported() {
        for expr in ["udp prot 53", "port 99999", "ether proto", "a\0b"] {
            match BpfProgram::compile(expr, 0) {
                Err(e @ CaptureError::InvalidFilter { .. }) => {
                    let line = e.to_string();
                    assert!(
                        line.starts_with(&format!("invalid filter {expr:?}: ")),
                        "{line}"
                    );
                    assert!(!line.contains('\n') && line.len() > 20, "{line}");
                    eprintln!("{line}");
                }
                other => panic!("{expr:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn missing_interface_is_reported() {
        for name in ["fcnosuch0", "", "x".repeat(40).as_str(), "a\0b"] {
            match interface_index(name) {
                Err(CaptureError::NoSuchInterface(n)) => assert_eq!(n, name),
                other => panic!("{name:?}: {other:?}"),
            }
        }
        let err = PacketQueue::open(&QueueConfig::new("fcnosuch0")).unwrap_err();
        assert_eq!(err.to_string(), "no such interface: fcnosuch0");
    }

    // --- live tests on a veth pair ------------------------------------------

    #[test]
    fn captures_every_frame_exactly() {
        let net = TestNet::new();
        let mut q = PacketQueue::open(&net.queue()).unwrap();
        assert_eq!(q.geometry().block_count, 64);
        let sizes = [26, 60, 64, 128, 333, 1000, 1514];
        let sent: Vec<Vec<u8>> = (0..70)
            .map(|i| raw_frame(i, sizes[i as usize % sizes.len()]))
            .collect();
        let t0 = now_us();
        net.send(&sent);
        let got = collect(&mut [&mut q], sent.len(), 0).remove(0);
        let t1 = now_us();
        assert_eq!(got.len(), sent.len());
        let mut last_ts = 0;
        for (g, s) in got.iter().zip(&sent) {
            assert_eq!(&g.bytes, s);
            assert_eq!(g.wire_len as usize, s.len());
            assert_eq!((g.tci, g.tpid), (None, None));
            assert!(
                g.ts_us >= t0 && g.ts_us <= t1,
                "ts {} not in [{t0}, {t1}]",
                g.ts_us
            );
            assert!(g.ts_us >= last_ts);
            last_ts = g.ts_us;
        }
        // A lone frame on a quiet link is handed over when its block times
        // out (a few ms; without the timeout it would wait for a full block).
        let start = Instant::now();
        net.send(&[raw_frame(1000, 60)]);
        let latency = loop {
            assert!(q.wait(1000).unwrap(), "a lone frame never arrived");
            let block = q.next_block().unwrap();
            if block.frames().any(|f| has_mark(f.data)) {
                break start.elapsed();
            }
        };
        eprintln!("lone frame handed over after {latency:?}");
        assert!(
            latency < Duration::from_secs(1),
            "lone frame took {latency:?}"
        );
    }

    #[test]
    fn jumbo_and_64k_frames_fit() {
        let net = TestNet::new();
        net.set_mtu(65_000);
        let mut q = PacketQueue::open(&net.queue()).unwrap();
        let sent = vec![raw_frame(1, 9014), raw_frame(2, 65_014), raw_frame(3, 60)];
        net.send(&sent);
        let got = collect(&mut [&mut q], sent.len(), 0).remove(0);
        let bytes: Vec<&Vec<u8>> = got.iter().map(|g| &g.bytes).collect();
        assert_eq!(bytes, sent.iter().collect::<Vec<_>>());
    }

    #[test]
    fn filter_passes_only_matching_frames() {
        let net = TestNet::new();
        let mut cfg = net.queue();
        cfg.filter = Some(BpfProgram::compile("udp port 53", 0).unwrap());
        let mut q = PacketQueue::open(&cfg).unwrap();
        let mut sent = Vec::new();
        let mut want = Vec::new();
        for i in 0..10 {
            let dns = udp_frame(40_000 + i as u16, 53, i);
            want.push(dns.clone());
            sent.push(dns);
            sent.push(udp_frame(40_000, 54, 100 + i));
            sent.push(raw_frame(200 + i, 100));
        }
        for i in 0..5 {
            let reply = udp_frame(53, 40_000, 300 + i);
            want.push(reply.clone());
            sent.push(reply);
        }
        net.send(&sent);
        let got = collect(&mut [&mut q], want.len(), 0).remove(0);
        let got: Vec<Vec<u8>> = got.into_iter().map(|g| g.bytes).collect();
        assert_eq!(got, want);
        // Stats count only what passed the filter.
        assert_eq!(q.take_stats().unwrap(), (want.len() as u64, 0));
    }

    #[test]
    fn snaplen_cuts_in_the_kernel() {
        let net = TestNet::new();
        let mut cfg = net.queue();
        cfg.snaplen = 64;
        let mut cut = PacketQueue::open(&cfg).unwrap();
        // A filter compiled for another snap length: open() applies cfg.snaplen.
        cfg.snaplen = 100;
        cfg.filter = Some(BpfProgram::compile("ether proto 0x88b5", 0).unwrap());
        let mut filtered = PacketQueue::open(&cfg).unwrap();
        let sent = vec![
            raw_frame(1, 1000),
            raw_frame(2, 40),
            raw_frame(3, 64),
            raw_frame(4, 65),
        ];
        net.send(&sent);
        let got = collect(&mut [&mut cut, &mut filtered], 2 * sent.len(), 0);
        for (got, snaplen) in got.iter().zip([64, 100]) {
            assert_eq!(got.len(), sent.len());
            for (g, s) in got.iter().zip(&sent) {
                let n = s.len().min(snaplen);
                assert_eq!(
                    g.data_len,
                    n,
                    "kernel copied {} of {} at snaplen {snaplen}",
                    g.data_len,
                    s.len()
                );
                assert_eq!(g.bytes, &s[..n]);
                assert_eq!(g.wire_len as usize, s.len());
            }
        }
    }

    #[test]
    fn fanout_hash_splits_flows_and_sees_each_frame_once() {
        let net = TestNet::new();
        let group = fanout_group();
        let mut cfg = net.queue();
        cfg.fanout = Some((group, FanoutMode::Hash));
        let mut a = PacketQueue::open(&cfg).unwrap();
        let mut b = PacketQueue::open(&cfg).unwrap();
        // Joining the same group with another mode is refused, with a reason.
        cfg.fanout = Some((group, FanoutMode::Lb));
        let err = PacketQueue::open(&cfg).unwrap_err().to_string();
        assert!(
            err.contains(&format!("group {group}")) && err.contains("another mode"),
            "{err}"
        );

        let (flows, per_flow) = (16u32, 8u32);
        let mut sent = Vec::new();
        // Both directions of each flow: the kernel's flow hash is symmetric.
        for n in 0..per_flow {
            for flow in 0..flows {
                let seq = flow * 1000 + n;
                sent.push(if n % 2 == 0 {
                    udp_frame(20_000 + flow as u16, 9_000, seq)
                } else {
                    udp_reply(9_000, 20_000 + flow as u16, seq)
                });
            }
        }
        net.send(&sent);
        let got = collect(&mut [&mut a, &mut b], sent.len(), 0);
        let seq = |g: &Got| u32::from_be_bytes(g.bytes[g.bytes.len() - 4..].try_into().unwrap());
        let mut all: Vec<u32> = got.iter().flatten().map(seq).collect();
        all.sort_unstable();
        let mut expected: Vec<u32> = (0..flows)
            .flat_map(|f| (0..per_flow).map(move |n| f * 1000 + n))
            .collect();
        expected.sort_unstable();
        assert_eq!(all, expected, "every frame exactly once across the group");
        let flows_of = |q: &Vec<Got>| {
            let mut f: Vec<u32> = q.iter().map(|g| seq(g) / 1000).collect();
            f.dedup();
            f.sort_unstable();
            f.dedup();
            f
        };
        let (fa, fb) = (flows_of(&got[0]), flows_of(&got[1]));
        eprintln!("fanout: queue a has flows {fa:?}, queue b has flows {fb:?}");
        assert!(!fa.is_empty() && !fb.is_empty(), "one queue got every flow");
        assert!(
            fa.iter().all(|f| !fb.contains(f)),
            "a flow was split between queues"
        );
        // Within a queue a flow stays in order.
        for q in &got {
            for flow in 0..flows {
                let s: Vec<u32> = q.iter().map(seq).filter(|s| s / 1000 == flow).collect();
                assert!(s.windows(2).all(|w| w[0] < w[1]));
            }
        }
    }

    #[test]
    fn vlan_tags_come_back_as_sent() {
        let net = TestNet::new();
        let mut q = PacketQueue::open(&net.queue()).unwrap();
        let inner = raw_frame(1, 80);
        let sent = vec![
            tagged(&inner, 0x8100, 0x2064), // 802.1Q, PCP 1, VID 100
            tagged(&tagged(&raw_frame(2, 80), 0x8100, 0x0064), 0x88a8, 0x00c8), // QinQ
            tagged(&raw_frame(3, 80), 0x8100, 0xa000), // priority tag, VID 0
            tagged(&udp_frame(1000, 53, 4), 0x8100, 0x0fff),
        ];
        net.send(&sent);
        let got = collect(&mut [&mut q], sent.len(), 0).remove(0);
        assert_eq!(got.len(), sent.len());
        let expect_tags = [
            (0x2064, 0x8100),
            (0x00c8, 0x88a8),
            (0xa000, 0x8100),
            (0x0fff, 0x8100),
        ];
        for ((g, s), (tci, tpid)) in got.iter().zip(&sent).zip(expect_tags) {
            eprintln!(
                "received tagged frame: tci {:?} tpid {:?} data {} wire {}",
                g.tci, g.tpid, g.data_len, g.wire_len
            );
            assert_eq!(
                (g.tci, g.tpid),
                (Some(tci), Some(tpid)),
                "the kernel took the tag off"
            );
            assert_eq!(g.data_len + 4, s.len());
            assert_eq!(g.wire_len as usize, s.len());
            assert_eq!(&g.bytes, s, "frame differs from what was sent");
        }

        // Outgoing frames: on this path the tag stays in the data, unflagged.
        let out = vec![tagged(&raw_frame(5, 80), 0x8100, 0x0123)];
        net.send_out(&out);
        let got = collect(&mut [&mut q], 1, 0).remove(0);
        assert_eq!(got.len(), 1);
        eprintln!(
            "outgoing tagged frame: tci {:?} tpid {:?} data {}",
            got[0].tci, got[0].tpid, got[0].data_len
        );
        assert_eq!(got[0].bytes, out[0]);

        // With a snap length cutting inside the tag.
        let mut cfg = net.queue();
        cfg.snaplen = 14;
        let mut q = PacketQueue::open(&cfg).unwrap();
        net.send(&sent[..1]);
        let got = collect(&mut [&mut q], 0, 14).remove(0);
        // The marker is cut away, so collect() keeps nothing: look at the ring.
        assert!(got.is_empty());
        net.send(&sent[..1]);
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        'found: while Instant::now() < deadline {
            q.wait(10).unwrap();
            while let Some(block) = q.next_block() {
                for f in block.frames() {
                    if f.vlan_tci == Some(0x2064) {
                        f.write_to(&mut out, 14);
                        break 'found;
                    }
                }
            }
        }
        assert_eq!(out, &sent[0][..14]);
    }

    #[test]
    fn stats_count_frames_and_ring_drops() {
        let net = TestNet::new();
        let mut cfg = net.queue();
        cfg.filter =
            Some(BpfProgram::compile(&format!("ether proto {TEST_ETHERTYPE:#x}"), 0).unwrap());
        let mut q = PacketQueue::open(&cfg).unwrap();
        net.send(&(0..20).map(|i| raw_frame(i, 200)).collect::<Vec<_>>());
        assert_eq!(collect(&mut [&mut q], 20, 0)[0].len(), 20);
        assert_eq!(q.take_stats().unwrap(), (20, 0));
        assert_eq!(
            q.take_stats().unwrap(),
            (0, 0),
            "reading resets the counters"
        );

        // The smallest ring (2 blocks, 2 MiB), not read while 3000 full-size
        // frames (4.5 MB) arrive: the kernel drops and counts the rest.
        cfg.frames = 1;
        let mut q = PacketQueue::open(&cfg).unwrap();
        assert_eq!(q.geometry().block_count, 2);
        let n = 3000;
        net.send(&(0..n).map(|i| raw_frame(i, 1514)).collect::<Vec<_>>());
        std::thread::sleep(Duration::from_millis(50));
        let (packets, drops) = q.take_stats().unwrap();
        let got = collect(&mut [&mut q], 1, 0).remove(0);
        eprintln!(
            "ring of 2 blocks: {packets} packets, {drops} drops, {} delivered",
            got.len()
        );
        assert_eq!(
            packets,
            u64::from(n),
            "tp_packets counts every frame, dropped or not"
        );
        assert!(drops > 0);
        assert_eq!(
            got.len() as u64 + drops,
            packets,
            "delivered + drops == packets"
        );
        // What was delivered is the start of the stream, in order.
        for (i, g) in got.iter().enumerate() {
            assert_eq!(g.bytes, raw_frame(i as u32, 1514));
        }
        // Once the blocks are back the ring takes frames again.
        net.send(&[raw_frame(9999, 100)]);
        assert_eq!(collect(&mut [&mut q], 1, 0)[0].len(), 1);
        assert_eq!(q.take_stats().unwrap(), (1, 0));
    }

    #[test]
    fn interface_down_is_reported_and_capture_resumes() {
        let net = TestNet::new();
        net.set_host("down");
        let err = PacketQueue::open(&net.queue()).unwrap_err();
        assert!(matches!(err, CaptureError::InterfaceDown(_)), "{err:?}");
        assert_eq!(err.to_string(), format!("interface {} is down", net.host));

        net.set_host("up");
        let mut q = PacketQueue::open(&net.queue()).unwrap();
        assert!(!q.wait(0).unwrap());
        net.set_host("down");
        let err = q.wait(1000).unwrap_err();
        assert!(matches!(err, CaptureError::InterfaceDown(_)), "{err:?}");
        assert!(!q.wait(0).unwrap(), "the error is reported once");
        net.set_host("up");
        // The far end's queueing discipline comes back a little later (link
        // watch, up to a second), dropping what it is given until then.
        let resumed = (0..20).any(|i| {
            net.send(&[raw_frame(i, 60)]);
            !drain(&mut [&mut q], 1, 0, Duration::from_millis(250))[0].is_empty()
        });
        assert!(resumed, "capture resumes when the link is back");
    }

    #[test]
    fn promiscuous_mode_lasts_as_long_as_the_socket() {
        let net = TestNet::new();
        let flags = || {
            let text =
                std::fs::read_to_string(format!("/sys/class/net/{}/flags", net.host)).unwrap();
            u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).unwrap()
        };
        let promisc = libc::IFF_PROMISC as u32;
        assert_eq!(flags() & promisc, 0);
        let mut cfg = net.queue();
        cfg.promiscuous = false;
        let plain = PacketQueue::open(&cfg).unwrap();
        assert_eq!(flags() & promisc, 0);
        cfg.promiscuous = true;
        let q = PacketQueue::open(&cfg).unwrap();
        assert_ne!(flags() & promisc, 0);
        drop(q);
        // The kernel releases the socket when the last reference goes, which
        // may trail close() while a child forked by another test (to run `ip`)
        // still holds the descriptor before its exec.
        let deadline = Instant::now() + Duration::from_secs(2);
        while flags() & promisc != 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            flags() & promisc,
            0,
            "closing the socket ends promiscuous mode"
        );
        drop(plain);
    }

    #[test]
    fn queue_moves_to_a_worker_thread() {
        let net = TestNet::new();
        let mut q = PacketQueue::open(&net.queue()).unwrap();
        let fd = q.fd();
        assert!(fd >= 0);
        let worker = std::thread::spawn(move || {
            let got = collect(&mut [&mut q], 3, 0).remove(0);
            (got.len(), q.take_stats().unwrap().1)
        });
        std::thread::sleep(Duration::from_millis(50));
        net.send(&(0..3).map(|i| raw_frame(i, 60)).collect::<Vec<_>>());
        assert_eq!(worker.join().unwrap(), (3, 0));
    }

    #[test]
    fn fanout_hash_delivers_ip_fragments_as_sent() {
        // With PACKET_FANOUT_FLAG_DEFRAG the group would get one reassembled
        // datagram instead of these frames, and nothing for the lone fragment.
        let net = TestNet::new();
        let mut cfg = net.queue();
        cfg.fanout = Some((fanout_group(), FanoutMode::Hash));
        let mut a = PacketQueue::open(&cfg).unwrap();
        let mut b = PacketQueue::open(&cfg).unwrap();
        let mut data = MARK.to_vec();
        data.resize(1000, 7);
        data.extend_from_slice(MARK);
        let dgram = udp(5000, 6000, &data);
        let sent = vec![
            ipv4_frame(17, 77, 0x2000, &dgram[..512], false), // first fragment (MF)
            ipv4_frame(17, 77, 512 / 8, &dgram[512..], false), // last fragment
            ipv4_frame(17, 78, 0x2000, &dgram[..512], false), // one whose rest never comes
        ];
        net.send(&sent);
        let got = collect(&mut [&mut a, &mut b], sent.len(), 0);
        let (one, other) = if got[0].is_empty() {
            (&got[1], &got[0])
        } else {
            (&got[0], &got[1])
        };
        assert!(other.is_empty(), "the fragments were split over the group");
        let bytes: Vec<&Vec<u8>> = one.iter().map(|g| &g.bytes).collect();
        assert_eq!(bytes, sent.iter().collect::<Vec<_>>());
        assert_eq!(a.take_stats().unwrap().0 + b.take_stats().unwrap().0, 3);
    }

    #[test]
    fn joining_a_fanout_group_under_traffic_never_duplicates() {
        // Until it joins the group a bound socket would see every frame; the
        // drop-everything filter during open() must hide that window.
        let net = TestNet::new();
        let mut cfg = net.queue();
        cfg.fanout = Some((fanout_group(), FanoutMode::Hash));
        cfg.promiscuous = false;
        let mut first = PacketQueue::open(&cfg).unwrap();
        let frames: Vec<Vec<u8>> = (0..20_000).map(|i| udp_frame(i as u16, 7, i)).collect();
        let sender = {
            let (ns, peer) = (net.ns.clone(), net.peer.clone());
            std::thread::spawn(move || send_raw(Some(&ns), &peer, &frames))
        };
        let seq = |g: &Got| u32::from_be_bytes(g.bytes[g.bytes.len() - 4..].try_into().unwrap());
        let mut seen: Vec<u32> = Vec::new();
        let mut joins = 0;
        while !sender.is_finished() {
            let mut late = PacketQueue::open(&cfg).unwrap();
            joins += 1;
            let got = drain_for(&mut [&mut first, &mut late], Duration::from_millis(5));
            seen.extend(got.iter().flatten().map(seq));
        }
        sender.join().unwrap();
        seen.extend(
            drain_for(&mut [&mut first], Duration::from_millis(100))[0]
                .iter()
                .map(seq),
        );
        let total = seen.len();
        seen.sort_unstable();
        seen.dedup();
        eprintln!("{joins} joins, {total} frames captured");
        assert_eq!(seen.len(), total, "a frame was captured twice");
    }

    #[test]
    fn missing_capability_is_named() {
        // Capabilities are per thread: drop the effective set in a fresh one.
        let err = std::thread::spawn(|| {
            #[repr(C)]
            struct Header {
                version: u32,
                pid: i32,
            }
            #[repr(C)]
            #[derive(Clone, Copy)]
            struct Data {
                effective: u32,
                permitted: u32,
                inheritable: u32,
            }
            let mut header = Header {
                version: 0x2008_0522,
                pid: 0,
            }; // _LINUX_CAPABILITY_VERSION_3
            let mut data = [Data {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            }; 2];
            // SAFETY: capget/capset with a v3 header and two data words, as the ABI wants.
            unsafe {
                assert_eq!(
                    libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
                    0
                );
                data[0].effective = 0;
                data[1].effective = 0;
                assert_eq!(
                    libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()),
                    0
                );
            }
            PacketQueue::open(&QueueConfig::new("lo")).unwrap_err()
        })
        .join()
        .unwrap();
        let line = err.to_string();
        assert!(
            line.starts_with("socket(AF_PACKET) needs CAP_NET_RAW"),
            "{line}"
        );
        eprintln!("{line}");
    }

    #[test]
    fn vlan_filters_need_compile_live() {
        let net = TestNet::new();
        let tagged_dns = tagged(&udp_frame(1000, 53, 1), 0x8100, 100);
        let plain_dns = udp_frame(1000, 53, 2);
        // (expression, what a live program takes, what a dead one takes)
        let cases: [(&str, &[u32], &[u32]); 4] = [
            ("vlan 100", &[1], &[]),
            ("vlan and udp port 53", &[1], &[]),
            ("not vlan", &[2], &[1, 2]),
            ("udp port 53", &[1, 2], &[1, 2]),
        ];
        let mut queues = Vec::new();
        for (expr, _, _) in cases {
            let mut cfg = net.queue();
            cfg.filter = Some(BpfProgram::compile_live(expr, 0, &net.host).unwrap());
            let live = PacketQueue::open(&cfg).unwrap();
            cfg.filter = Some(BpfProgram::compile(expr, 0).unwrap());
            queues.push((live, PacketQueue::open(&cfg).unwrap()));
        }
        net.send(&[tagged_dns, plain_dns]);
        let seq = |g: &Got| u32::from_be_bytes(g.bytes[g.bytes.len() - 4..].try_into().unwrap());
        for ((expr, live_takes, dead_takes), (live, dead)) in cases.iter().zip(&mut queues) {
            let got = drain_for(&mut [live, dead], Duration::from_millis(300));
            let taken: Vec<Vec<u32>> = got.iter().map(|q| q.iter().map(seq).collect()).collect();
            assert_eq!(taken[0], *live_takes, "live {expr:?}");
            assert_eq!(taken[1], *dead_takes, "dead {expr:?}");
        }
        assert!(matches!(
            BpfProgram::compile_live("vlan 100", 0, "fcnosuch0"),
            Err(CaptureError::NoSuchInterface(_))
        ));
        assert!(matches!(
            BpfProgram::compile_live("vlan 1000000", 0, &net.host),
            Err(CaptureError::InvalidFilter { .. })
        ));
    }
}
