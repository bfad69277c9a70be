//! Slices built, encoded and decoded: round trips, sizes, and damaged
//! records refused without a panic.

use proptest::prelude::*;

use super::codec::{write_bitmap, PostingForm};
use super::*;
use Term::*;

fn key(us: u64) -> [u8; 8] {
    us.to_be_bytes()
}

/// Ethernet, IPv4, UDP from 10.0.0.`host` port `sport` to 10.0.0.100:53.
fn udp_frame(host: u8, sport: u16) -> Vec<u8> {
    let mut f = vec![0xff; 12];
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&[10, 0, 0, host, 10, 0, 0, 100]);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&[0, 53, 0, 8, 0, 0]);
    f
}

fn bitmap(positions: &[u32]) -> RoaringBitmap {
    positions.iter().copied().collect()
}

#[test]
fn blocks_keep_each_blocks_time_and_a_window_reads_only_those_it_reaches() {
    let mut b = SliceBuilder::new(0, 0, 1);
    // Three blocks: times 1000.., 5000.., and a third without keys.
    for i in 0..BLOCK {
        b.push(
            i64::from(i),
            Some(&key(1000 + u64::from(i))),
            Some(&udp_frame(1, 53)),
        );
    }
    for i in BLOCK..2 * BLOCK {
        b.push(
            i64::from(i),
            Some(&key(5000 + u64::from(i))),
            Some(&udp_frame(1, 53)),
        );
    }
    b.push(i64::from(2 * BLOCK), None, Some(&udp_frame(1, 53)));
    let slice = b.finish();
    // The last block has no key: it is not listed.
    assert_eq!(slice.blocks.len(), 2);
    assert_eq!(slice.blocks[0], Some((1000, 1000 + u64::from(BLOCK) - 1)));
    assert_eq!(round_trip(&slice), slice);
    let window = slice.in_window(6000, 6100).expect("blocks known");
    assert!(!window.contains(0) && !window.contains(BLOCK - 1));
    assert!(window.contains(BLOCK) && window.contains(2 * BLOCK - 1));
    // The block without keys is read whatever the window.
    assert!(window.contains(2 * BLOCK));
    let none = slice.in_window(100, 200).expect("blocks known");
    assert!(!none.contains(0) && !none.contains(BLOCK));
}

#[test]
fn a_block_time_outside_the_slice_is_refused() {
    let mut b = SliceBuilder::new(0, 0, 1);
    b.push(0, Some(&key(7)), Some(&udp_frame(1, 53)));
    let mut slice = b.finish();
    slice.blocks[0] = Some((7, 9));
    let mut bytes = Vec::new();
    slice.encode(&mut bytes);
    assert!(Slice::decode(&bytes).is_err());
}

fn built() -> Slice {
    let mut b = SliceBuilder::new(3, 1000, 1);
    b.push(1000, Some(&key(50)), Some(&udp_frame(1, 5000)));
    b.push(1001, Some(&key(40)), Some(&udp_frame(2, 53)));
    // A gap (offsets 1002..1004 are gone: compaction, markers).
    b.push(1005, Some(&key(60)), Some(&udp_frame(1, 5001)));
    b.push(1006, None, Some(&udp_frame(1, 5000)));
    b.push(1007, Some(&[1, 2, 3]), Some(&udp_frame(1, 5000)));
    b.push(1008, Some(&key(10)), None);
    assert_eq!(b.len(), 6);
    assert_eq!(b.next_offset(), 1009);
    b.finish()
}

#[test]
fn a_slice_holds_positions_per_term() {
    let s = built();
    assert_eq!(
        s.meta,
        SliceMeta {
            partition: 3,
            base_offset: 1000,
            end_offset: 1009,
            records: 6,
            bytes: 5 * 42,
            // The record without a value still has its key counted.
            min_key: Some(10),
            max_key: Some(60),
            linktype: 1,
        }
    );
    assert_eq!(s.present, bitmap(&[0, 1, 5, 6, 7, 8]));
    // No key, a key not 8 bytes long, no value.
    assert_eq!(s.unparsed, bitmap(&[6, 7, 8]));
    assert_eq!(s.postings[&EtherType(0x0800)], bitmap(&[0, 1, 5]));
    assert_eq!(s.postings[&Ipv4([10, 0, 0, 1])], bitmap(&[0, 5]));
    assert_eq!(s.postings[&Ipv4([10, 0, 0, 100])], bitmap(&[0, 1, 5]));
    // Port 53 is both source and destination at position 1: once.
    assert_eq!(s.postings[&UdpPort(53)], bitmap(&[0, 1, 5]));
    assert_eq!(s.postings[&UdpPort(5000)], bitmap(&[0]));
    assert_eq!(s.postings.len(), 8);
    let ports: Vec<_> = s
        .range(UdpPort(0), UdpPort(1023))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(ports, [UdpPort(53)]);
    assert_eq!(s.offset_of(5), 1005);
    assert_eq!(s.record_key()[..4], 3u32.to_be_bytes());
    assert_eq!(s.record_key()[4..], 1000u64.to_be_bytes());
}

#[test]
fn unparsed_link_types_and_empty_slices() {
    let mut b = SliceBuilder::new(0, 7, 113);
    assert!(b.is_empty());
    assert_eq!(b.next_offset(), 7);
    b.push(9, Some(&key(1)), Some(&udp_frame(1, 1)));
    let s = b.finish();
    assert_eq!(s.unparsed, bitmap(&[2]));
    assert!(s.postings.is_empty());

    let s = SliceBuilder::new(1, 0, 1).finish();
    assert_eq!(s.meta.records, 0);
    assert_eq!(
        (s.meta.end_offset, s.meta.min_key, s.meta.max_key),
        (0, None, None)
    );
    assert_eq!(round_trip(&s), s);
}

#[test]
fn restarting_keeps_nothing_of_the_previous_slice() {
    let mut b = SliceBuilder::new(0, 0, 1);
    b.push(0, Some(&key(5)), Some(&udp_frame(1, 1)));
    b.push(1, None, None);
    let first = b.finish_and_restart(b.next_offset());
    assert_eq!(first.meta.end_offset, 2);
    b.push(2, Some(&key(9)), Some(&udp_frame(2, 2)));
    let second = b.finish();
    assert_eq!(second.meta.base_offset, 2);
    assert_eq!(second.meta.records, 1);
    assert_eq!(
        (second.meta.min_key, second.meta.max_key),
        (Some(9), Some(9))
    );
    assert_eq!(second.present, bitmap(&[0]));
    assert!(second.unparsed.is_empty());
    assert!(!second.postings.contains_key(&Ipv4([10, 0, 0, 1])));
    assert_eq!(second.postings[&Ipv4([10, 0, 0, 2])], bitmap(&[0]));
}

#[test]
#[should_panic(expected = "pushed after")]
fn offsets_must_rise() {
    let mut b = SliceBuilder::new(0, 10, 1);
    b.push(11, None, None);
    b.push(11, None, None);
}

fn round_trip(s: &Slice) -> Slice {
    let mut bytes = Vec::new();
    s.encode(&mut bytes);
    Slice::decode(&bytes).unwrap()
}

#[test]
fn encode_then_decode() {
    let s = built();
    let mut bytes = vec![0xaa];
    s.encode(&mut bytes);
    assert_eq!(bytes[0], 0xaa, "encode appends");
    assert_eq!(Slice::decode(&bytes[1..]), Ok(s.clone()));
    // Every cut is refused.
    for cut in 0..bytes.len() - 1 {
        assert!(Slice::decode(&bytes[1..1 + cut]).is_err(), "cut at {cut}");
    }
    // And so is anything after the end.
    bytes.push(0);
    assert!(Slice::decode(&bytes[1..]).is_err());
}

#[test]
fn each_posting_takes_the_smaller_form() {
    let mut b = SliceBuilder::new(0, 0, 1);
    for i in 0..3000u16 {
        let frame = udp_frame(1 + (i % 200) as u8, 1000 + i);
        b.push(i64::from(i), Some(&key(u64::from(i))), Some(&frame));
    }
    let s = b.finish();
    // In every position: one run, a bitmap of a few bytes.
    assert!(!PostingForm::Smaller.as_list(&s.postings[&EtherType(0x0800)]));
    // A port seen once, a host every 200th record: lists.
    assert!(PostingForm::Smaller.as_list(&s.postings[&UdpPort(1000)]));
    assert!(PostingForm::Smaller.as_list(&s.postings[&Ipv4([10, 0, 0, 7])]));
    let sizes = [
        PostingForm::Roaring,
        PostingForm::List,
        PostingForm::Smaller,
    ]
    .map(|form| {
        let mut out = Vec::new();
        s.encode_with(&mut out, form);
        assert_eq!(Slice::decode(&out).as_ref(), Ok(&s));
        out.len()
    });
    assert!(sizes[2] < sizes[0].min(sizes[1]), "{sizes:?}");
}

fn encoded(s: &Slice) -> Vec<u8> {
    let mut bytes = Vec::new();
    s.encode(&mut bytes);
    bytes
}

#[test]
fn inconsistent_slices_are_refused() {
    let good = built();
    let refused = |change: &dyn Fn(&mut Slice), why: &str| {
        let mut s = good.clone();
        change(&mut s);
        let e = Slice::decode(&encoded(&s)).unwrap_err();
        assert!(e.0.contains(why), "{e} lacks {why:?}");
    };
    refused(&|s| s.meta.records += 1, "counted");
    refused(
        &|s| s.meta.end_offset = s.meta.base_offset + 8,
        "past the slice's end",
    );
    refused(&|s| s.meta.end_offset = s.meta.base_offset - 1, "offsets");
    refused(&|s| s.meta.base_offset = -1, "offsets");
    refused(
        &|s| s.meta.end_offset = s.meta.base_offset + (1 << 32) + 1,
        "span",
    );
    refused(&|s| s.meta.min_key = Some(70), "min_key");
    refused(
        &|s| {
            s.unparsed.insert(2);
        },
        "unparsed position not present",
    );
    refused(
        &|s| drop(s.postings.insert(TcpPort(1), bitmap(&[2]))),
        "absent or unparsed",
    );
    refused(
        &|s| drop(s.postings.insert(TcpPort(1), bitmap(&[7]))),
        "absent or unparsed",
    );
    refused(
        &|s| drop(s.postings.insert(TcpPort(1), bitmap(&[]))),
        "empty",
    );

    let bytes = encoded(&good);
    let mut wrong = bytes.clone();
    wrong[0] = b'X';
    assert!(Slice::decode(&wrong).unwrap_err().0.contains("magic"));
    let mut wrong = bytes.clone();
    wrong[4] = 2;
    assert!(Slice::decode(&wrong).unwrap_err().0.contains("version 2"));

    // Terms written by hand after the header of a slice without any.
    let mut s = good.clone();
    s.postings.clear();
    let mut header = Vec::new();
    s.encode(&mut header);
    assert_eq!(header.pop(), Some(0), "no kinds");
    let decode = |terms: &[u8]| Slice::decode(&[header.as_slice(), terms].concat());
    // Position 0 as a list (count 1 shifted, bit 0 set; then 0), and
    // position 1 as a bitmap.
    let list = [3, 0];
    let mut roaring = vec![0];
    write_bitmap(&bitmap(&[1]), &mut roaring);
    let tcp = 5;
    let two_ports = [&[1, tcp, 2, 80][..], &list, &[0], &roaring].concat();
    let s = decode(&two_ports).unwrap();
    assert_eq!(s.postings.len(), 2);
    assert_eq!(s.postings[&TcpPort(80)], bitmap(&[0]));
    assert_eq!(s.postings[&TcpPort(81)], bitmap(&[1]));

    let refused = |terms: &[u8], why: &str| {
        let e = decode(terms).unwrap_err();
        assert!(e.0.contains(why), "{e} lacks {why:?}");
    };
    // Kinds out of order: IPv4 0.0.0.1, then EtherType 0x0800.
    refused(
        &[&[2, 2, 1, 1][..], &list, &[0, 1, 0x80, 0x10], &list].concat(),
        "out of order",
    );
    refused(&[&[1, 9, 1, 0][..], &list].concat(), "unknown term kind 9");
    // Port 70000.
    refused(
        &[&[1, tcp, 1, 0xf0, 0xa2, 0x04][..], &list].concat(),
        "wider",
    );
    refused(&[1, tcp, 1, 80, 2, 0], "posting form 2");
    refused(
        &[&[1, tcp, 1][..], &[0xff; 19], &[1]].concat(),
        "past 128 bits",
    );
    // IPv6 ffff...ffff, then one more.
    let last = [&[0xff; 18][..], &[3]].concat();
    refused(
        &[&[1, 3, 2][..], &last, &list, &[0], &list].concat(),
        "past 128 bits",
    );
    // A list of 3 positions with 2 bytes left.
    refused(&[1, tcp, 1, 80, 7, 0, 0], "truncated");
    // Position 2^32 - 1, then 2^32.
    refused(
        &[1, tcp, 1, 80, 5, 0xff, 0xff, 0xff, 0xff, 0x0f, 0],
        "past 32 bits",
    );
    // An empty list.
    refused(&[1, tcp, 1, 80, 1], "empty");
    // Position 6 is unparsed, 2 absent.
    refused(&[1, tcp, 1, 80, 3, 6], "absent or unparsed");
    refused(&[1, tcp, 1, 80, 3, 2], "absent or unparsed");
}

fn any_term() -> impl Strategy<Value = Term> {
    prop_oneof![
        any::<u16>().prop_map(EtherType),
        (0u16..4096).prop_map(Vlan),
        any::<[u8; 4]>().prop_map(Ipv4),
        any::<[u8; 16]>().prop_map(Ipv6),
        any::<u8>().prop_map(IpProto),
        any::<u16>().prop_map(TcpPort),
        any::<u16>().prop_map(UdpPort),
        any::<u16>().prop_map(SctpPort),
    ]
}

/// A valid slice: positions below a span that may pass 65536 (so
/// bitmaps have several containers), dense runs and sparse points.
fn any_slice() -> impl Strategy<Value = Slice> {
    let positions = (1u32..200_000).prop_flat_map(|span| {
        (
            Just(span),
            prop::collection::btree_set(0..span, 0..300),
            prop::option::of((0..span, 0u32..10_000)),
        )
    });
    (
        positions,
        any::<i32>(),
        0i64..1 << 40,
        any::<u64>(),
        any::<u32>(),
        prop::option::of((any::<u64>(), any::<u64>())),
        prop::collection::vec((any_term(), any::<u64>()), 0..40),
        any::<u64>(),
    )
        .prop_map(
            |((span, points, run), partition, base, bytes, linktype, keys, terms, seed)| {
                let mut present: RoaringBitmap = points.into_iter().collect();
                if let Some((start, len)) = run {
                    present.insert_range(start..(start + len).min(span));
                }
                let all: Vec<u32> = present.iter().collect();
                let mut pick = seed;
                let mut chosen = |salt: u64| {
                    all.iter()
                        .copied()
                        .filter(|p| {
                            pick = pick
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(salt | 1);
                            // Some terms in every position, most in few.
                            salt & 3 == 0 || (pick >> 60) == u64::from(*p % 3)
                        })
                        .collect::<RoaringBitmap>()
                };
                let unparsed = chosen(1);
                let mut postings = BTreeMap::new();
                for (term, salt) in terms {
                    let mut posting = chosen(salt) - &unparsed;
                    posting.optimize();
                    if !posting.is_empty() {
                        postings.insert(term, posting);
                    }
                }
                let (min_key, max_key) = match keys {
                    Some((a, b)) => (Some(a.min(b)), Some(a.max(b))),
                    None => (None, None),
                };
                Slice {
                    meta: SliceMeta {
                        partition,
                        base_offset: base,
                        end_offset: base + i64::from(span),
                        records: present.len() as u32,
                        bytes,
                        min_key,
                        max_key,
                        linktype,
                    },
                    present,
                    unparsed,
                    postings,
                    blocks: Vec::new(),
                }
            },
        )
}

proptest! {
    // 256 cases unless PROPTEST_CASES says otherwise; no regression files
    // written into the tree.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn encode_decode_is_identity(s in any_slice()) {
        prop_assert_eq!(round_trip(&s), s);
    }

    /// Decoded for some terms: the same slice with only their postings,
    /// whichever form the others were written in.
    #[test]
    fn decode_for_keeps_the_wanted_postings_only(s in any_slice(), salt in any::<u64>()) {
        let wanted = |term: &Term| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&(term, salt), &mut h);
            std::hash::Hasher::finish(&h).is_multiple_of(3)
        };
        let got = Slice::decode_for(&encoded(&s), wanted).expect("a valid encoding");
        let mut expected = s.clone();
        expected.postings.retain(|term, _| wanted(term));
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn decode_never_panics_on_random_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        header in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if header {
            bytes.splice(0..0, b"FCIX\x01".iter().copied());
        }
        let _ = Slice::decode(&bytes);
    }

    /// A valid encoding damaged: cut, or bytes overwritten. Refused or,
    /// when the change still makes a valid slice, decoded; never a panic.
    #[test]
    fn decode_never_panics_on_damaged_slices(
        s in any_slice(),
        cut in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
    ) {
        let mut bytes = encoded(&s);
        for (at, byte) in edits {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        let _ = Slice::decode(&bytes);
        let _ = Slice::decode(&bytes[..cut.index(bytes.len())]);
        // Reading past every posting, or every other one.
        let mut every_other = false;
        let _ = Slice::decode_for(&bytes, |_| false);
        let _ = Slice::decode_for(&bytes, |_| { every_other = !every_other; every_other });
    }
}

/// Test traffic shaped like support/fastcapa_support/capgen.py (the
/// same mix of kinds per flow: IPv4 UDP and TCP, ICMP, IPv6 UDP, ARP,
/// VLAN-tagged TCP), with many more hosts and random source ports, and
/// each record from a flow drawn at random (no locality to help).
struct Traffic {
    rng: u64,
    flows: Vec<Flow>,
    imix: bool,
}

struct Flow {
    kind: u64,
    client: u32,
    server: u32,
    sport: u16,
    dport: u16,
}

impl Traffic {
    fn new(flows: usize, clients: u32, servers: u32, imix: bool) -> Traffic {
        let mut t = Traffic {
            rng: 0x2545_f491_4f6c_dd1d,
            flows: Vec::new(),
            imix,
        };
        for i in 0..flows as u64 {
            let flow = Flow {
                kind: i % 10,
                client: 0x0a01_0000 + (t.next() % u64::from(clients)) as u32,
                server: 0x0a64_0000 + (t.next() % u64::from(servers)) as u32,
                sport: 1024 + (t.next() % 64512) as u16,
                dport: [53, 80, 443, 9000][(t.next() % 4) as usize],
            };
            t.flows.push(flow);
        }
        t
    }

    fn next(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The next frame, into `f`.
    fn frame(&mut self, f: &mut Vec<u8>) {
        let size = if self.imix {
            // 64, 576 and 1500 bytes at 7:4:1.
            match self.next() % 12 {
                0..=6 => 64,
                7..=10 => 576,
                _ => 1500,
            }
        } else {
            64
        };
        let pick = (self.next() % self.flows.len() as u64) as usize;
        let flow = &self.flows[pick];
        f.clear();
        f.extend_from_slice(&[2, 0, 0, 1, 0, 1, 2, 0, 0, 0]);
        f.extend_from_slice(&(flow.client as u16).to_be_bytes());
        if flow.kind == 9 {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 100 + (flow.client % 7) as u8]);
        }
        let (c, s) = (flow.client.to_be_bytes(), flow.server.to_be_bytes());
        let ports = |f: &mut Vec<u8>| {
            f.extend_from_slice(&flow.sport.to_be_bytes());
            f.extend_from_slice(&flow.dport.to_be_bytes());
        };
        match flow.kind {
            8 => {
                f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
                f.extend_from_slice(&[2, 0, 0, 0, c[2], c[3]]);
                f.extend_from_slice(&c);
                f.extend_from_slice(&[0; 6]);
                f.extend_from_slice(&s);
            }
            6 | 7 => {
                f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 0, 17, 64]);
                f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                f.extend_from_slice(&c);
                f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                f.extend_from_slice(&s);
                ports(f);
            }
            _ => {
                let proto = match flow.kind {
                    0..=2 => 17,
                    5 => 1,
                    _ => 6,
                };
                f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0]);
                f.extend_from_slice(&c);
                f.extend_from_slice(&s);
                if proto == 1 {
                    f.extend_from_slice(&[8, 0, 0, 0]);
                } else {
                    ports(f);
                }
            }
        }
        let len = f.len().max(size);
        f.resize(len, 0x5a);
    }
}

fn zstd3(bytes: &[u8]) -> Option<usize> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("zstd")
        .args(["-3", "-q", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().ok()?;
    writer.join().ok()?.ok()?;
    output.status.success().then_some(output.stdout.len())
}

/// This thread's CPU time, in ns: wall time counts the time other
/// processes held the core (the machine is shared while measuring).
fn cpu_ns() -> u128 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as u128 * 1_000_000_000 + t.tv_nsec as u128
}

/// CPU time since `start` (from [`cpu_ns`]).
fn since(start: u128) -> u128 {
    cpu_ns() - start
}

/// Frames one after the other in one buffer, as a fetched batch of
/// records holds them.
struct Frames {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Frames {
    fn generate(traffic: &mut Traffic, count: usize) -> Frames {
        let mut frames = Frames {
            bytes: Vec::new(),
            ends: Vec::new(),
        };
        let mut frame = Vec::new();
        for _ in 0..count {
            traffic.frame(&mut frame);
            frames.bytes.extend_from_slice(&frame);
            frames.ends.push(frames.bytes.len());
        }
        frames
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

/// Pushes records `range` as slices of `per_slice`; the slices and the
/// nanoseconds spent in push and in finish.
fn build(frames: &Frames, per_slice: usize) -> (Vec<Slice>, u128, u128) {
    let (mut push_ns, mut finish_ns) = (0, 0);
    let mut slices = Vec::new();
    let mut builder = SliceBuilder::new(0, 0, 1);
    let total = frames.ends.len();
    for base in (0..total).step_by(per_slice) {
        let end = (base + per_slice).min(total);
        let start = cpu_ns();
        for i in base..end {
            builder.push(i as i64, Some(&key(i as u64)), Some(frames.get(i)));
        }
        push_ns += since(start);
        let start = cpu_ns();
        slices.push(builder.finish_and_restart(end as i64));
        finish_ns += since(start);
    }
    (slices, push_ns, finish_ns)
}

/// The figures of "The index: what a slice holds" in docs/dump.md:
///
///     cargo test --release --lib index::slice::tests::measure -- --ignored --nocapture
///
/// INDEX_FLOWS, INDEX_CLIENTS and INDEX_RECORDS change the traffic
/// (5000 flows among 2000 client hosts and 64 servers, 2^18 records).
/// Times are the best of three runs.
#[test]
#[ignore = "a measurement, not a check: run by hand"]
fn measure() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let flows = env("INDEX_FLOWS", 5000);
    let clients = env("INDEX_CLIENTS", 2000) as u32;
    let total = env("INDEX_RECORDS", 1 << 18);
    let with_zstd = zstd3(b"probe").is_some();
    println!("{flows} flows, {clients} clients, 64 servers; {total} records; zstd: {with_zstd}");
    let mut sizes_table = vec![
        "| traffic | records per slice | terms per slice | roaring | list | smaller | roaring, zstd | list, zstd | smaller, zstd |".to_string(),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|".to_string(),
    ];
    let mut times_table = vec![
        "| traffic | records per slice | push ns/record | finish ns/record | encode ns/record | decode ns/record |".to_string(),
        "|---|---:|---:|---:|---:|---:|".to_string(),
    ];
    let pct = |bytes: usize, of: usize| format!("{:.2} %", 100.0 * bytes as f64 / of as f64);
    let per_record = |ns: u128| format!("{:.0}", ns as f64 / total as f64);
    for imix in [false, true] {
        let name = if imix { "IMIX" } else { "64 B" };
        let frames = Frames::generate(&mut Traffic::new(flows, clients, 64, imix), total);
        let topic_bytes = frames.bytes.len() + 70 * total;
        for per_slice in [1024, 4096, 16384, 65536] {
            let mut best = (u128::MAX, u128::MAX, u128::MAX, u128::MAX);
            let mut slices = Vec::new();
            for _ in 0..3 {
                let (built, push_ns, finish_ns) = build(&frames, per_slice);
                let mut out = Vec::new();
                let (mut encode_ns, mut decode_ns) = (0, 0);
                for slice in &built {
                    out.clear();
                    let start = cpu_ns();
                    slice.encode(&mut out);
                    encode_ns += since(start);
                    let start = cpu_ns();
                    let back = Slice::decode(&out).unwrap();
                    decode_ns += since(start);
                    assert_eq!(&back, slice);
                }
                best = (
                    best.0.min(push_ns),
                    best.1.min(finish_ns),
                    best.2.min(encode_ns),
                    best.3.min(decode_ns),
                );
                slices = built;
            }
            let forms = [
                PostingForm::Roaring,
                PostingForm::List,
                PostingForm::Smaller,
            ];
            let (mut sizes, mut zsizes) = ([0usize; 3], [0usize; 3]);
            let mut out = Vec::new();
            for slice in &slices {
                for (k, form) in forms.into_iter().enumerate() {
                    out.clear();
                    slice.encode_with(&mut out, form);
                    sizes[k] += out.len();
                    if with_zstd {
                        zsizes[k] += zstd3(&out).unwrap();
                    }
                }
            }
            let terms: usize = slices.iter().map(|s| s.postings.len()).sum();
            sizes_table.push(format!(
                "| {name} | {per_slice} | {} | {} | {} | {} | {} | {} | {} |",
                terms / slices.len(),
                pct(sizes[0], topic_bytes),
                pct(sizes[1], topic_bytes),
                pct(sizes[2], topic_bytes),
                pct(zsizes[0], topic_bytes),
                pct(zsizes[1], topic_bytes),
                pct(zsizes[2], topic_bytes),
            ));
            times_table.push(format!(
                "| {name} | {per_slice} | {} | {} | {} | {} |",
                per_record(best.0),
                per_record(best.1),
                per_record(best.2),
                per_record(best.3),
            ));
        }
    }
    println!("{}\n\n{}", sizes_table.join("\n"), times_table.join("\n"));
    // Extraction alone, for its share of push.
    let frames = Frames::generate(&mut Traffic::new(flows, clients, 64, true), total);
    let mut out = Vec::new();
    let (mut best, mut count) = (u128::MAX, 0);
    for _ in 0..3 {
        count = 0;
        let start = cpu_ns();
        for i in 0..total {
            out.clear();
            extract::terms(1, frames.get(i), &mut out);
            count += out.len();
        }
        best = best.min(since(start));
    }
    println!(
        "extract alone: {} ns/record, {:.1} terms/record",
        per_record(best),
        count as f64 / total as f64
    );
    // The same on 1024 frames read over and over: the work without the
    // cache misses of reading each frame's first bytes.
    let mut best = u128::MAX;
    for _ in 0..3 {
        let start = cpu_ns();
        for i in 0..total {
            out.clear();
            extract::terms(1, frames.get(i % 1024), &mut out);
        }
        best = best.min(since(start));
    }
    println!(
        "extract alone, frames in cache: {} ns/record",
        per_record(best)
    );
}

/// The indexer writes slices with `encode_and_restart`: the same bytes as
/// the slice `finish_and_restart` builds, encoded, over traffic of both
/// kinds, slices of several sizes, offsets with gaps, records without a
/// key or a value among them, and stretches of one flow (whose terms'
/// postings are runs, written as bitmaps).
#[test]
fn encode_and_restart_writes_what_finish_then_encode_writes() {
    for imix in [false, true] {
        let frames = Frames::generate(&mut Traffic::new(300, 120, 16, imix), 20_000);
        for per_slice in [1, 7, 1000, 8192] {
            let (mut built, mut direct) = (SliceBuilder::new(2, 5, 1), SliceBuilder::new(2, 5, 1));
            let mut offset = 5i64;
            let (mut expected, mut got) = (Vec::new(), Vec::new());
            for i in 0..frames.ends.len() {
                // Every 97th offset skipped; every 89th record has no key,
                // every 83rd no value.
                offset += 1 + i64::from(i % 97 == 0);
                let key = (i % 89 != 0).then(|| key(i as u64));
                let one_flow = (i / 3000) % 3 == 1;
                let value = (i % 83 != 0).then(|| frames.get(if one_flow { 0 } else { i }));
                for b in [&mut built, &mut direct] {
                    b.push(offset, key.as_ref().map(|k| &k[..]), value);
                }
                if (i + 1) % per_slice == 0 || i + 1 == frames.ends.len() {
                    let next = built.next_offset();
                    let slice = built.finish_and_restart(next);
                    expected.clear();
                    slice.encode(&mut expected);
                    got.clear();
                    let (meta, unparsed) = direct.encode_and_restart(next, &mut got);
                    assert_eq!(meta, slice.meta);
                    assert_eq!(unparsed, slice.unparsed.len());
                    assert!(
                        got == expected,
                        "imix {imix}, {per_slice} per slice, at {i}"
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// The floor `encode_and_restart` decides a list by never exceeds the
    /// size of the bitmap it stands for: runs, dense and sparse
    /// containers, one or several.
    #[test]
    fn serialized_size_floor_is_at_most_the_size(
        spans in prop::collection::vec((0u32..200_000, 1u32..6000, 1u32..4), 0..12),
    ) {
        let mut positions: Vec<u32> = spans
            .iter()
            .flat_map(|&(start, len, step)| (0..len).map(move |k| start + k * step))
            .collect();
        positions.sort_unstable();
        positions.dedup();
        let mut bitmap = RoaringBitmap::from_sorted_iter(positions.iter().copied()).unwrap();
        bitmap.optimize();
        prop_assert!(super::codec::serialized_size_floor(&positions) <= bitmap.serialized_size());
    }
}
