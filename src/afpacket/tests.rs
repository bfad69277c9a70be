//! The AF_PACKET queue's tests. The live ones need root: each makes its own
//! network namespace and veth pair (`crate::testnet`), sends known frames
//! from the far end and captures on the near end.

use super::*;
use crate::bpf::BpfProgram;
use crate::source::{CaptureError, RxQueue};
use crate::testnet::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A fanout group id of this test run (ids are per network namespace).
fn fanout_group() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    (std::process::id() as u16) ^ 0x5a5a ^ ((NEXT.fetch_add(1, Ordering::Relaxed) as u16) << 12)
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
            q.poll(2).unwrap();
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
fn missing_interface_is_reported() {
    for name in ["fcnosuch0", "", "x".repeat(40).as_str(), "a\0b"] {
        match interface_index(name) {
            Err(CaptureError::NoSuchInterface(n)) => assert_eq!(n, name),
            other => panic!("{name:?}: {other:?}"),
        }
    }
    let err = PacketQueue::open(&queue_config("fcnosuch0")).unwrap_err();
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
        assert!(q.poll(1000).unwrap(), "a lone frame never arrived");
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
        q.poll(10).unwrap();
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
    cfg.filter = Some(BpfProgram::compile(&format!("ether proto {TEST_ETHERTYPE:#x}"), 0).unwrap());
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
    assert!(!q.poll(0).unwrap());
    net.set_host("down");
    let err = q.poll(1000).unwrap_err();
    assert!(matches!(err, CaptureError::InterfaceDown(_)), "{err:?}");
    assert!(!q.poll(0).unwrap(), "the error is reported once");
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
        let text = std::fs::read_to_string(format!("/sys/class/net/{}/flags", net.host)).unwrap();
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
        PacketQueue::open(&queue_config("lo")).unwrap_err()
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
