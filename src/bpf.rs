//! Classic BPF programs compiled by libpcap from tcpdump syntax: attached in
//! the kernel for AF_PACKET queues, run in user space where there is no
//! kernel on the path (DPDK) and on the way back (`fastcapa dump`).

use std::fmt;
use std::io;

use crate::source::{interface_index, CaptureError};

/// Snap length [`BpfProgram::compile`] uses when asked for 0 (tcpdump's maximum).
pub const DEFAULT_FILTER_SNAPLEN: u32 = MAX_SNAPLEN;

/// libpcap's largest snapshot length (`MAXIMUM_SNAPLEN`), and tcpdump's
/// default: libpcap refuses a capture file record longer than this.
pub const MAX_SNAPLEN: u32 = 262_144;

/// The kernel's limit on a classic BPF program (`BPF_MAXINSNS`).
pub(crate) const BPF_MAXINSNS: usize = 4096;

/// A filter's return value is how many bytes of the frame the kernel keeps.
pub(crate) fn kernel_snaplen(snaplen: u32) -> u32 {
    if snaplen == 0 {
        u32::MAX
    } else {
        snaplen
    }
}

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

/// A libpcap handle on an empty pcap file of link-layer type `linktype`:
/// libpcap itself maps the file's LINKTYPE_ value to the DLT_ value its
/// filter compiler takes (they differ for some types, raw IP among them).
fn file_handle(linktype: u32) -> Result<pcap::Capture<pcap::Offline>, pcap::Error> {
    use std::io::Write;
    use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

    let mut header = Vec::with_capacity(24);
    header.extend_from_slice(&0xA1B2_C3D4u32.to_ne_bytes());
    header.extend_from_slice(&2u16.to_ne_bytes());
    header.extend_from_slice(&4u16.to_ne_bytes());
    header.extend_from_slice(&[0; 8]);
    header.extend_from_slice(&DEFAULT_FILTER_SNAPLEN.to_ne_bytes());
    header.extend_from_slice(&linktype.to_ne_bytes());
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 returns.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(pcap::Error::IoError(io::Error::last_os_error().kind()));
    }
    // SAFETY: pipe2 just made these descriptors; nothing else owns them.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // 24 bytes fit in any pipe's buffer; dropping the write end ends the file.
    std::fs::File::from(write)
        .write_all(&header)
        .map_err(|e| pcap::Error::IoError(e.kind()))?;
    // SAFETY: the read end is handed over whole; the capture closes it.
    unsafe { pcap::Capture::from_raw_fd(read.into_raw_fd()) }
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

// libpcap's own BPF interpreter and checker (pcap/bpf.h). `bpf_insn` has
// the layout of the kernel's `sock_filter`, which holds our instructions.
#[link(name = "pcap")]
extern "C" {
    fn bpf_filter(
        pc: *const libc::sock_filter,
        packet: *const u8,
        wirelen: libc::c_uint,
        buflen: libc::c_uint,
    ) -> libc::c_uint;
    fn bpf_validate(pc: *const libc::sock_filter, len: libc::c_int) -> libc::c_int;
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

    /// Compiles tcpdump syntax for the records of a pcap file of link-layer
    /// type `linktype` (the file header's LINKTYPE_ value), to be run in user
    /// space with [`matches`](Self::matches), as `tcpdump -r` runs it on that
    /// file: no kernel limit on its length.
    pub fn compile_offline(expr: &str, linktype: u32) -> Result<BpfProgram, CaptureError> {
        let file = file_handle(linktype).map_err(|e| invalid_filter(expr, e))?;
        let program = file
            .compile(expr, true)
            .map_err(|e| invalid_filter(expr, e))?;
        let insns = BpfProgram::instructions_of(expr, &program)?;
        // SAFETY: `insns` is a valid slice of bpf_insn-shaped instructions.
        let valid = unsafe { bpf_validate(insns.as_ptr(), insns.len() as libc::c_int) };
        if valid == 0 {
            return Err(CaptureError::InvalidFilter {
                expr: shown_filter(expr),
                msg: "libpcap produced a program it does not accept".into(),
            });
        }
        Ok(BpfProgram { insns })
    }

    /// Whether a frame passes the program, in user space (libpcap's own
    /// interpreter): `frame` the bytes at hand, `wire_len` the frame's
    /// length on the wire (what `len`, `less` and `greater` test).
    #[inline]
    pub fn matches(&self, frame: &[u8], wire_len: u32) -> bool {
        let buflen = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        // SAFETY: the program was checked by bpf_validate (compile_offline)
        // or built by libpcap; bpf_filter reads at most `buflen` bytes of
        // `frame` and returns 0 for a load past them.
        unsafe {
            bpf_filter(
                self.insns.as_ptr(),
                frame.as_ptr(),
                wire_len.max(buflen),
                buflen,
            ) != 0
        }
    }

    /// The instructions of a libpcap program.
    fn instructions_of(
        expr: &str,
        program: &pcap::BpfProgram,
    ) -> Result<Vec<libc::sock_filter>, CaptureError> {
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
        Ok(insns)
    }

    fn from_pcap(
        expr: &str,
        program: &pcap::BpfProgram,
        snaplen: u32,
    ) -> Result<BpfProgram, CaptureError> {
        let insns = BpfProgram::instructions_of(expr, program)?;
        let invalid = |msg: String| CaptureError::InvalidFilter {
            expr: shown_filter(expr),
            msg,
        };
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
    pub(crate) fn drop_all() -> BpfProgram {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn offline_programs_match_in_user_space() {
        let udp = |dport: u16, vlan: bool| -> Vec<u8> {
            let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
            if vlan {
                f.extend_from_slice(&[0x81, 0x00, 0x00, 100]);
            }
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 32, 0, 1, 0, 0, 64, 17, 0, 0]);
            f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
            f.extend_from_slice(&1234u16.to_be_bytes());
            f.extend_from_slice(&dport.to_be_bytes());
            f.extend_from_slice(&[0, 12, 0, 0, 1, 2, 3, 4]);
            f
        };
        let dns = BpfProgram::compile_offline("udp port 53", 1).unwrap();
        assert!(dns.matches(&udp(53, false), 42));
        assert!(!dns.matches(&udp(80, false), 42));
        // Read from a file, a VLAN tag is in the frame: `vlan` finds it.
        let tagged = BpfProgram::compile_offline("vlan 100 and udp port 53", 1).unwrap();
        assert!(tagged.matches(&udp(53, true), 46));
        assert!(!tagged.matches(&udp(53, false), 42));
        // `greater` tests the length on the wire, not what was kept.
        let big = BpfProgram::compile_offline("greater 1000", 1).unwrap();
        assert!(big.matches(&udp(53, false), 1500));
        assert!(!big.matches(&udp(53, false), 42));
        // A load past the bytes at hand fails the match, safely.
        let deep = BpfProgram::compile_offline("ether[5000] = 1", 1).unwrap();
        assert!(!deep.matches(&udp(53, false), 6000));
        // Other link types: raw IP (101) has no Ethernet header.
        let raw = BpfProgram::compile_offline("udp port 53", 101).unwrap();
        assert!(raw.matches(&udp(53, false)[14..], 28));
        assert!(!raw.matches(&udp(80, false)[14..], 28));
        // Link types libpcap cannot filter, and bad syntax, are errors.
        for (expr, linktype) in [("udp port 53", 147), ("udp prot 53", 1)] {
            let e = BpfProgram::compile_offline(expr, linktype).unwrap_err();
            assert!(matches!(e, CaptureError::InvalidFilter { .. }), "{e}");
        }
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
}
