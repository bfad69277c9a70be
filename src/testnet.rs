//! Test support (compiled for `cargo test` only): a network namespace with
//! one end of a veth pair, frames sent from the far end, and builders for
//! the frames the tests send. Frames go nowhere else: the veth pair is the
//! whole network, and their destination MAC is not the host's, so its IP
//! stack ignores them. Needs root.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::afpacket::{interface_index, QueueConfig};

pub const MARK: &[u8; 8] = b"FCAPTEST";
pub const DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// IEEE "local experimental" EtherType: nothing else on the link uses it.
pub const TEST_ETHERTYPE: u16 = 0x88b5;

static NEXT_NET: AtomicUsize = AtomicUsize::new(0);

/// Runs `ip` with whitespace-separated `args`.
pub fn ip(args: &str) -> Result<(), String> {
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
pub struct TestNet {
    pub ns: String,
    pub host: String,
    pub peer: String,
}

impl TestNet {
    pub fn new() -> TestNet {
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
    pub fn wait_until_up(&self) {
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

    pub fn set_mtu(&self, mtu: u32) {
        ip(&format!("link set {} mtu {mtu}", self.host)).unwrap();
        ip(&format!("-n {} link set {} mtu {mtu}", self.ns, self.peer)).unwrap();
    }

    pub fn set_host(&self, state: &str) {
        ip(&format!("link set {} {state}", self.host)).unwrap();
        if state == "up" {
            self.wait_until_up();
        }
    }

    /// Sends `frames` from the far end: they arrive on `host` as received.
    pub fn send(&self, frames: &[Vec<u8>]) {
        send_raw(Some(&self.ns), &self.peer, frames);
    }

    /// Sends `frames` out of `host` itself: captured there as outgoing.
    pub fn send_out(&self, frames: &[Vec<u8>]) {
        send_raw(None, &self.host, frames);
    }

    pub fn queue(&self) -> QueueConfig {
        queue_config(&self.host)
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
pub fn send_raw(ns: Option<&str>, ifname: &str, frames: &[Vec<u8>]) {
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
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
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
pub fn raw_frame(seq: u32, len: usize) -> Vec<u8> {
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
pub fn ipv4_frame(proto: u8, id: u16, frag: u16, payload: &[u8], reverse: bool) -> Vec<u8> {
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
pub fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + data.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    u
}

/// An Ethernet/IPv4/UDP frame carrying the marker and `seq`, don't-fragment.
pub fn udp_frame(sport: u16, dport: u16, seq: u32) -> Vec<u8> {
    let data: Vec<u8> = MARK.iter().copied().chain(seq.to_be_bytes()).collect();
    ipv4_frame(17, 1, 0x4000, &udp(sport, dport, &data), false)
}

/// The same from 192.0.2.2:`sport` to 192.0.2.1:`dport`.
pub fn udp_reply(sport: u16, dport: u16, seq: u32) -> Vec<u8> {
    let data: Vec<u8> = MARK.iter().copied().chain(seq.to_be_bytes()).collect();
    ipv4_frame(17, 1, 0x4000, &udp(sport, dport, &data), true)
}

/// `frame` with a VLAN tag inserted after the MAC addresses.
pub fn tagged(frame: &[u8], tpid: u16, tci: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&tpid.to_be_bytes());
    f.extend_from_slice(&tci.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

pub fn has_mark(bytes: &[u8]) -> bool {
    bytes.windows(MARK.len()).any(|w| w == MARK)
}

/// A queue's settings for the tests: 4096 frames, whole frames, no fanout,
/// no filter, promiscuous. (The probe's own defaults live in the control
/// plane's settings, not here.)
pub fn queue_config(interface: &str) -> QueueConfig {
    QueueConfig {
        interface: interface.to_string(),
        frames: 4096,
        snaplen: 0,
        fanout: None,
        filter: None,
        promiscuous: true,
    }
}
