//! Property tests (proptest) of the capture-file source: random, damaged and
//! truncated files, generated or cut from the tcpdump corpus, replayed by the
//! receive worker (`rx::run`) through a real ring. The source never panics; every record before the damage is
//! delivered exactly; the error says "corrupt after record N" with N the
//! records delivered.
//!
//! Classic pcap files are checked against a model of the format written here
//! (the file header, then 16-byte record headers and the frames); pcapng files
//! against the records libpcap reads from the intact file.
//!
//! Cases per property: 256 by default (bounded for `make test`); run longer
//! with e.g. `PROPTEST_CASES=20000 cargo test --release --lib capfile -q`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::Config;

use super::FileQueue;
use crate::counters::RxCounters;
use crate::events::EventLog;
use crate::ring::ring;
use crate::rx::{Idle, RxConfig, RxShared};
use crate::source::CaptureError;

/// What a replay delivered: (key in µs, frame) in file order, and how it ended.
type Records = Vec<(u64, Vec<u8>)>;

#[derive(Debug)]
enum Ended {
    /// libpcap would not open the file.
    Open(String),
    /// End of file.
    Clean,
    /// Damage after this many records.
    Corrupt(u64, String),
}

fn config() -> Config {
    Config {
        // PROPTEST_CASES overrides this default (Config::default reads it).
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        // Findings are kept as the plain tests at the end of this file.
        failure_persistence: None,
        ..Config::default()
    }
}

/// A file of its own in the temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(bytes: &[u8]) -> TempFile {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "fastcapa-capfile-{}-{}.pcap",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, bytes).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Replays `bytes` as a capture file through a small ring (so that the source
/// also waits for room), draining it on this thread.
fn replay(bytes: &[u8], snaplen: u32) -> (Records, Ended) {
    let file = TempFile::new(bytes);
    let queue = match FileQueue::open(file.path(), (0, 1), 0) {
        Ok(queue) => queue,
        Err(CaptureError::Open { reason, .. }) => return (vec![], Ended::Open(reason)),
        Err(e) => panic!("open gave {e}"),
    };
    let (writer, mut readers, _) = ring(8, 1, 64).unwrap();
    let counters = Arc::new(RxCounters::default());
    let config = RxConfig {
        burst: 32,
        idle: Idle::Poll,
        snaplen,
        hash_flows: true,
        cpu: None,
    };
    let mut records = Records::new();
    let result = std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let shared = Arc::new(RxShared::new(0));
            let events = Arc::new(EventLog::default());
            crate::rx::run(queue, writer, config, shared, counters.clone(), events)
        });
        loop {
            let finished = worker.is_finished();
            readers[0].pop_burst(usize::MAX, |slot| {
                records.push((slot.ts_us, slot.data.clone()));
            });
            if finished && readers[0].is_empty() {
                break;
            }
            std::thread::yield_now();
        }
        worker.join().expect("the receive worker panicked")
    });
    let snapshot = counters.snapshot();
    assert_eq!(snapshot.nic_packets, records.len() as u64);
    assert_eq!(snapshot.taken, records.len() as u64);
    assert_eq!(snapshot.enqueued, records.len() as u64);
    let ended = match result {
        Ok(()) => Ended::Clean,
        Err(error @ CaptureError::Corrupt { .. }) => {
            let message = error.to_string();
            let CaptureError::Corrupt {
                records: n, reason, ..
            } = error
            else {
                unreachable!()
            };
            assert!(message.contains(&format!("corrupt after record {n}: ")));
            assert_eq!(message.lines().count(), 1, "{message:?}");
            assert_eq!(
                n,
                records.len() as u64,
                "the error counts what was delivered"
            );
            Ended::Corrupt(n, reason)
        }
        Err(e) => panic!("replay gave {e}"),
    };
    (records, ended)
}

// A model of classic pcap, for files this test writes: header version 2.4,
// Ethernet, records with caplen <= the file's snaplen.

const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;

#[derive(Debug, Clone)]
struct PcapRecord {
    seconds: u32,
    fraction: u32,
    wire_len: u32,
    data: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Pcap {
    big_endian: bool,
    nanoseconds: bool,
    snaplen: u32,
    records: Vec<PcapRecord>,
}

impl Pcap {
    fn u32(&self, v: u32) -> [u8; 4] {
        if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    /// The file, and the offset where each record ends.
    fn bytes(&self) -> (Vec<u8>, Vec<usize>) {
        let mut out = vec![];
        let magic = if self.nanoseconds { MAGIC_NS } else { MAGIC_US };
        out.extend(self.u32(magic));
        let version = if self.big_endian {
            [0, 2, 0, 4]
        } else {
            [2, 0, 4, 0]
        };
        out.extend(version);
        out.extend([0; 8]); // thiszone, sigfigs
        out.extend(self.u32(self.snaplen));
        out.extend(self.u32(1)); // LINKTYPE_ETHERNET
        let mut ends = vec![];
        for r in &self.records {
            out.extend(self.u32(r.seconds));
            out.extend(self.u32(r.fraction));
            out.extend(self.u32(r.data.len() as u32));
            out.extend(self.u32(r.wire_len));
            out.extend(&r.data);
            ends.push(out.len());
        }
        (out, ends)
    }

    /// What the source must deliver for each record: the record's time with
    /// its seconds as the unsigned 32-bit field they are (so 2038 to 2106
    /// stay right), the frame cut to `snaplen`. A nanosecond fraction is
    /// scaled down by libpcap, which reads it as signed 32-bit when the file
    /// is in this host's byte order (little-endian) and as unsigned when it
    /// swaps it (big-endian): that only matters for fractions past 2^31,
    /// which no valid file holds.
    fn expected(&self, snaplen: u32) -> Records {
        self.records
            .iter()
            .map(|r| {
                let micros = match (self.nanoseconds, self.big_endian) {
                    (false, _) => u64::from(r.fraction),
                    (true, true) => u64::from(r.fraction / 1000),
                    (true, false) => u64::from(((r.fraction as i32) / 1000) as u32),
                };
                let ts = u64::from(r.seconds)
                    .wrapping_mul(1_000_000)
                    .wrapping_add(micros);
                let cut = match snaplen {
                    0 => r.data.len(),
                    n => r.data.len().min(n as usize),
                };
                (ts, r.data[..cut].to_vec())
            })
            .collect()
    }
}

fn pcap_record(max_len: usize) -> impl Strategy<Value = PcapRecord> {
    (
        any::<u32>(),
        prop_oneof![0..1_000_000u32, any::<u32>()],
        any::<u32>(),
        prop::collection::vec(any::<u8>(), 0..=max_len),
    )
        .prop_map(|(seconds, fraction, wire_len, data)| PcapRecord {
            seconds,
            fraction,
            wire_len,
            data,
        })
}

fn pcap_file() -> impl Strategy<Value = Pcap> {
    (
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(65535u32), Just(262144), 300..2000u32],
    )
        .prop_flat_map(|(big_endian, nanoseconds, snaplen)| {
            prop::collection::vec(pcap_record(300), 0..24).prop_map(move |records| Pcap {
                big_endian,
                nanoseconds,
                snaplen,
                records,
            })
        })
}

fn snaplens() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), 1..80u32, Just(u32::MAX)]
}

fn corpus(name: &str) -> Option<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/corpus/tcpdump")
        .join(name);
    std::fs::read(path).ok()
}

/// Classic pcap files of the corpus: both byte orders, micro- and nanoseconds.
const CORPUS_PCAP: [&str; 4] = [
    "pptp.pcap",
    "tcp-handshake-nano.pcap",
    "vxlan.pcap",
    "lwapp-data.pcap",
];
/// pcapng files of the corpus.
const CORPUS_PCAPNG: [&str; 4] = [
    "ahcp.pcapng",
    "bgp-role.pcapng",
    "dhcp-option-108.pcapng",
    "isis-seg-fault-1.pcapng",
];

/// Offsets where each record of a classic pcap file ends (as written).
fn pcap_record_ends(bytes: &[u8]) -> Vec<usize> {
    let big = bytes[..4] == [0xa1, 0xb2, 0xc3, 0xd4] || bytes[..4] == [0xa1, 0xb2, 0x3c, 0x4d];
    let read = |at: usize| {
        let b: [u8; 4] = bytes[at..at + 4].try_into().unwrap();
        if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let (mut at, mut ends) = (24, vec![]);
    while at + 16 <= bytes.len() {
        at += 16 + read(at + 8) as usize;
        if at > bytes.len() {
            break;
        }
        ends.push(at);
    }
    ends
}

/// Offsets where each packet block (enhanced, simple, obsolete) of a pcapng
/// file ends.
fn pcapng_packet_ends(bytes: &[u8]) -> Vec<usize> {
    let (mut at, mut ends, mut big) = (0, vec![], false);
    while at + 12 <= bytes.len() {
        let kind = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        if kind == 0x0a0d_0d0a {
            big = bytes[at + 8..at + 12] == [0x1a, 0x2b, 0x3c, 0x4d];
        }
        let field = |at: usize| {
            let b: [u8; 4] = bytes[at..at + 4].try_into().unwrap();
            if big {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let len = field(at + 4) as usize;
        if len < 12 || at + len > bytes.len() {
            break;
        }
        if matches!(field(at), 2 | 3 | 6) {
            ends.push(at + len);
        }
        at += len;
    }
    ends
}

/// Where the first interface description block of a (little-endian) pcapng
/// file ends.
fn first_idb_end(bytes: &[u8]) -> usize {
    let mut at = 0;
    loop {
        let kind = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        at += u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        if kind == 1 {
            return at;
        }
    }
}

/// Records of the intact file must be delivered up to `damage` (the first
/// byte changed or missing): every record that ends before it, exactly.
fn assert_prefix(records: &Records, ended: &Ended, whole: &Records, ends: &[usize], damage: usize) {
    if let Ended::Open(reason) = ended {
        panic!("an intact start of file would not open: {reason}");
    }
    let before = ends.iter().take_while(|&&end| end <= damage).count();
    assert!(records.len() >= before, "{} < {before}", records.len());
    assert_eq!(records[..before], whole[..before]);
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes at all: no panic, and a clean refusal or a consistent count.
    #[test]
    fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let (records, ended) = replay(&bytes, 0);
        if let Ended::Open(reason) = &ended {
            prop_assert!(records.is_empty() && !reason.is_empty());
        }
    }

    /// A valid file header (pcap of any kind, or a pcapng section header),
    /// then random bytes: libpcap reads further, the source must too.
    #[test]
    fn valid_header_then_random_bytes(
        header in prop_oneof![
            Just(b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00\0\0\0\0\0\0\0\0\xff\xff\0\0\x01\0\0\0".to_vec()),
            Just(b"\xa1\xb2\xc3\xd4\x00\x02\x00\x04\0\0\0\0\0\0\0\0\0\0\xff\xff\0\0\0\x01".to_vec()),
            Just(b"\x4d\x3c\xb2\xa1\x02\x00\x04\x00\0\0\0\0\0\0\0\0\0\0\x04\0\x01\0\0\0".to_vec()),
            Just(b"\x0a\x0d\x0d\x0a\x1c\0\0\0\x4d\x3c\x2b\x1a\x01\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff\x1c\0\0\0".to_vec()),
        ],
        body in prop::collection::vec(any::<u8>(), 0..600),
        snaplen in snaplens(),
    ) {
        let pcapng = header[0] == 0x0a;
        let bytes = [header, body].concat();
        let (_, ended) = replay(&bytes, snaplen);
        // libpcap opens a pcapng file only once it has read an interface
        // description block: random bytes after the section header rarely are one.
        prop_assert!(pcapng || !matches!(ended, Ended::Open(_)), "{ended:?}");
    }

    /// Well-formed classic pcap files of all four kinds: every record exactly.
    #[test]
    fn generated_pcap_exactly(pcap in pcap_file(), snaplen in snaplens()) {
        let (bytes, _) = pcap.bytes();
        let (records, ended) = replay(&bytes, snaplen);
        prop_assert!(matches!(ended, Ended::Clean), "{ended:?}");
        prop_assert_eq!(records, pcap.expected(snaplen));
    }

    /// A generated pcap file cut anywhere after its header: the records before
    /// the cut, then "corrupt after record N" unless the cut falls between
    /// records.
    #[test]
    fn generated_pcap_truncated(pcap in pcap_file(), cut in any::<prop::sample::Index>()) {
        let (bytes, ends) = pcap.bytes();
        let at = 24 + cut.index(bytes.len() - 24 + 1);
        let (records, ended) = replay(&bytes[..at], 0);
        let whole = pcap.expected(0);
        let before = ends.iter().take_while(|&&end| end <= at).count();
        prop_assert_eq!(&records[..], &whole[..before]);
        if at == 24 || ends.contains(&at) {
            prop_assert!(matches!(ended, Ended::Clean), "{ended:?}");
        } else {
            prop_assert!(matches!(&ended, Ended::Corrupt(n, reason) if *n == before as u64 && reason.contains("truncated")), "{ended:?}");
        }
    }

    /// Corpus pcap files cut anywhere, and with bytes overwritten after the
    /// file header: no panic, every record before the damage exactly.
    #[test]
    fn corpus_pcap_damaged(
        file in prop::sample::select(&CORPUS_PCAP[..]),
        cut in any::<prop::sample::Index>(),
        writes in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
    ) {
        let Some(intact) = corpus(file) else { return Ok(()) };
        let (whole, _) = replay(&intact, 0);
        let ends = pcap_record_ends(&intact);
        prop_assert_eq!(whole.len(), ends.len());
        let mut bytes = intact[..24 + cut.index(intact.len() - 24 + 1)].to_vec();
        let mut damage = bytes.len();
        if bytes.len() > 24 {
            for (at, value) in &writes {
                let at = 24 + at.index(bytes.len() - 24);
                if bytes[at] != *value {
                    bytes[at] = *value;
                    damage = damage.min(at);
                }
            }
        }
        let (records, ended) = replay(&bytes, 0);
        assert_prefix(&records, &ended, &whole, &ends, damage);
        if damage == intact.len() {
            prop_assert!(matches!(ended, Ended::Clean));
        }
    }

    /// The same for pcapng files: cut and overwritten after the section
    /// header block.
    #[test]
    fn corpus_pcapng_damaged(
        file in prop::sample::select(&CORPUS_PCAPNG[..]),
        cut in any::<prop::sample::Index>(),
        writes in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        snaplen in snaplens(),
    ) {
        let Some(intact) = corpus(file) else { return Ok(()) };
        let (whole, _) = replay(&intact, snaplen);
        let ends = pcapng_packet_ends(&intact);
        prop_assert_eq!(whole.len(), ends.len());
        // libpcap reads up to the first interface description block to open
        // the file: damage starts after it.
        let opening = first_idb_end(&intact);
        let mut bytes = intact[..opening + cut.index(intact.len() - opening + 1)].to_vec();
        let mut damage = bytes.len();
        if bytes.len() > opening {
            for (at, value) in &writes {
                let at = opening + at.index(bytes.len() - opening);
                if bytes[at] != *value {
                    bytes[at] = *value;
                    damage = damage.min(at);
                }
            }
        }
        let (records, ended) = replay(&bytes, snaplen);
        assert_prefix(&records, &ended, &whole, &ends, damage);
        if damage == intact.len() {
            prop_assert!(matches!(ended, Ended::Clean));
        }
        if let Ended::Corrupt(n, _) = ended {
            prop_assert!(n as usize >= ends.iter().take_while(|&&e| e <= damage).count());
        }
    }
}

// Records at the edges of what libpcap takes, and findings of the properties
// above, kept as plain tests.

fn one_record(caplen: u32, snaplen_in_header: u32, data: usize) -> Vec<u8> {
    let mut bytes = b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00\0\0\0\0\0\0\0\0".to_vec();
    bytes.extend(snaplen_in_header.to_le_bytes());
    bytes.extend(1u32.to_le_bytes());
    bytes.extend([1, 0, 0, 0, 2, 0, 0, 0]);
    bytes.extend(caplen.to_le_bytes());
    bytes.extend(caplen.to_le_bytes());
    bytes.extend((0..data).map(|i| i as u8));
    bytes
}

#[test]
fn zero_length_record_is_delivered_empty() {
    let (records, ended) = replay(&one_record(0, 65535, 0), 0);
    assert!(matches!(ended, Ended::Clean), "{ended:?}");
    assert_eq!(records, vec![(1_000_002, vec![])]);
}

#[test]
fn record_of_the_largest_size_libpcap_takes_is_delivered_whole() {
    let (records, ended) = replay(&one_record(262144, 262144, 262144), 0);
    assert!(matches!(ended, Ended::Clean), "{ended:?}");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].1.len(), 262144);
}

#[test]
fn record_larger_than_libpcap_takes_is_corrupt_after_record_0() {
    let (records, ended) = replay(&one_record(262145, 262144, 262145), 0);
    assert!(records.is_empty());
    assert!(matches!(ended, Ended::Corrupt(0, _)), "{ended:?}");
}

#[test]
fn record_claiming_4_gib_is_corrupt_not_an_allocation() {
    let (records, ended) = replay(&one_record(u32::MAX, 65535, 10), 0);
    assert!(records.is_empty());
    assert!(matches!(ended, Ended::Corrupt(0, _)), "{ended:?}");
}

#[test]
fn seconds_from_2038_to_2106_keep_their_time_in_either_byte_order() {
    // 2038-01-19T03:14:08Z is the first second past signed 32 bits;
    // 2106-02-07T06:28:15Z the last one an unsigned 32-bit field holds.
    let times = [(0x8000_0000u32, 1u32), (u32::MAX, 999_999)];
    for big_endian in [false, true] {
        let pcap = Pcap {
            big_endian,
            nanoseconds: false,
            snaplen: 65535,
            records: times
                .iter()
                .map(|&(seconds, fraction)| PcapRecord {
                    seconds,
                    fraction,
                    wire_len: 60,
                    data: vec![0xab; 60],
                })
                .collect(),
        };
        let (records, ended) = replay(&pcap.bytes().0, 0);
        assert!(matches!(ended, Ended::Clean), "{ended:?}");
        let keys: Vec<u64> = records.iter().map(|r| r.0).collect();
        assert_eq!(
            keys,
            [2_147_483_648_000_001, 4_294_967_295_999_999],
            "big-endian: {big_endian}"
        );
    }
}

/// Drains a queue on this thread (no worker): what it hands over, in order.
fn take_all(queue: &mut FileQueue) -> Vec<(u64, Vec<u8>)> {
    use crate::source::RxQueue;
    let mut out = Vec::new();
    while !queue.exhausted() {
        queue.take(|frame| {
            out.push((frame.ts_us, frame.data.to_vec()));
            true
        });
    }
    out
}

fn many_flows(records: u32) -> Pcap {
    Pcap {
        big_endian: false,
        nanoseconds: false,
        snaplen: 65535,
        records: (0..records)
            .map(|i| {
                // Ethernet + IPv4 + UDP with a source address per flow.
                let mut data = vec![0u8; 60];
                data[12..14].copy_from_slice(&[0x08, 0x00]);
                data[14] = 0x45;
                data[23] = 17;
                data[26..30].copy_from_slice(&(i % 97).to_be_bytes());
                data[30..34].copy_from_slice(&[10, 0, 0, 1]);
                data[40..44].copy_from_slice(&i.to_be_bytes());
                PcapRecord {
                    seconds: 1_700_000_000,
                    fraction: i,
                    wire_len: 60,
                    data,
                }
            })
            .collect(),
    }
}

#[test]
fn queues_of_one_file_share_its_flows_each_in_file_order() {
    let pcap = many_flows(2000);
    let file = TempFile::new(&pcap.bytes().0);
    let whole = take_all(&mut FileQueue::open(file.path(), (0, 1), 0).unwrap());
    assert_eq!(whole.len(), 2000);
    let shares: Vec<_> = (0..3)
        .map(|q| take_all(&mut FileQueue::open(file.path(), (q, 3), 0).unwrap()))
        .collect();
    assert!(
        shares.iter().all(|s| !s.is_empty()),
        "every queue gets flows"
    );
    let mut merged: Vec<_> = shares.concat();
    merged.sort();
    assert_eq!(merged, whole, "each record exactly once");
    for share in &shares {
        assert!(share.windows(2).all(|w| w[0].0 < w[1].0), "file order");
    }
    // One flow, one queue.
    let flow = |r: &(u64, Vec<u8>)| r.1[29];
    for (i, a) in shares.iter().enumerate() {
        for b in &shares[i + 1..] {
            assert!(a.iter().all(|r| b.iter().all(|s| flow(r) != flow(s))));
        }
    }
}

#[test]
fn a_limit_stops_after_that_many_records() {
    let pcap = many_flows(100);
    let file = TempFile::new(&pcap.bytes().0);
    let limited = take_all(&mut FileQueue::open(file.path(), (0, 1), 37).unwrap());
    assert_eq!(limited.len(), 37);
}
