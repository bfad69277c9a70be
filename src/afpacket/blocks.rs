//! The mapped ring and the blocks and frames in it.

use std::io;
use std::marker::PhantomData;
use std::mem;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};

use super::socket::last_error;
use super::RingGeometry;
use crate::source::{Frame, VLAN_TAG_LEN};

/// The mmap'd ring; unmapped on drop.
pub(super) struct RingMap {
    base: NonNull<u8>,
    pub(super) geometry: RingGeometry,
}

impl RingMap {
    pub(super) fn map(fd: &OwnedFd, geometry: RingGeometry) -> Result<RingMap, io::Error> {
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

    pub(super) fn block(&self, index: usize) -> NonNull<u8> {
        // A real check, not a debug one: it runs once per block, and a cursor
        // past the ring would read outside the mapping.
        assert!(index < self.geometry.block_count as usize);
        // SAFETY: index < block_count (checked above), so the offset stays
        // inside the mapping.
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
pub(super) unsafe fn block_status<'a>(block: NonNull<u8>) -> &'a AtomicU32 {
    let desc = block.as_ptr().cast::<libc::tpacket_block_desc>();
    // SAFETY: (caller) `desc` points at a mapped tpacket_block_desc; the field
    // is a 4-byte aligned u32 (block starts are page aligned) that the kernel
    // also accesses, so it is only ever touched through this atomic.
    unsafe { &*ptr::addr_of!((*desc).hdr.bh1.block_status).cast::<AtomicU32>() }
}

/// A block the kernel handed over. While it lives the kernel will not touch
/// it; dropping it hands it back (Release store of `TP_STATUS_KERNEL`) and
/// moves the queue on to the next block.
#[must_use = "dropping a Block hands it back to the kernel, its frames unread"]
pub struct Block<'q> {
    pub(super) base: NonNull<u8>,
    pub(super) size: usize,
    pub(super) count: usize,
    pub(super) cursor: &'q mut usize,
    /// Kept for the next look ([`Block::keep`]): not handed back on drop.
    pub(super) kept: bool,
}

impl Block<'_> {
    /// Lets go of the block without handing it back: the queue offers the
    /// same block again (a worker that could take only part of it).
    /// Dropping the block otherwise hands it back and moves the queue on.
    pub fn keep(mut self) {
        self.kept = true;
    }

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
        if self.kept {
            return;
        }
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
