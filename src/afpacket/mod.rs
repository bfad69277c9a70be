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
//!   leaves the fanout group and stops counting for it.

use crate::bpf::BpfProgram;

mod blocks;
mod queue;
mod socket;
#[cfg(test)]
mod tests;

pub use crate::source::interface_index;
pub use blocks::{Block, Frames};
pub use queue::PacketQueue;
// The DPDK backend reads its net_af_packet sockets with these.
#[cfg(feature = "dpdk")]
pub(crate) use socket::{interface_running, packet_statistics};

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

impl std::str::FromStr for FanoutMode {
    type Err = String;

    fn from_str(text: &str) -> Result<FanoutMode, String> {
        match text {
            "hash" => Ok(FanoutMode::Hash),
            "qm" => Ok(FanoutMode::Qm),
            "cpu" => Ok(FanoutMode::Cpu),
            "lb" => Ok(FanoutMode::Lb),
            other => Err(format!(
                "unknown fanout mode {other:?} (hash, qm, cpu or lb)"
            )),
        }
    }
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
    /// Ring size in frames (`-d`, default 65536): the ring is sized so that
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
/// blocks of [`BLOCK_SIZE`]; the default 65536 frames gives 1024 blocks, 128 MiB.
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
