//! The planner: how it reads filters (libpcap's precedence and inherited
//! qualifiers, every primitive, what may match), what it selects on
//! hand-built slices, and, as properties, that it never panics and always
//! selects every record libpcap's own BPF program matches.
//!
//! The property tests build random frames (Ethernet, VLAN tags, IPv4 with odd
//! header lengths and fragments, IPv6 with fragment headers, ARP, other
//! types, truncations) from small pools of addresses and ports so that
//! filters hit, index them, compile random filters with libpcap and run them
//! on every frame. The terms come from a model of libpcap's field reads
//! written here and, once it is implemented, from `extract::terms` too.
//!
//! Cases per property: 256 by default; run longer with e.g.
//! `PROPTEST_CASES=20000 cargo test --release --lib index::plan -q`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::Config;
use roaring::RoaringBitmap;

use super::Plan;
use crate::bpf::BpfProgram;
use crate::index::extract;
use crate::index::slice::{Slice, SliceMeta};
use crate::index::term::Term;

// ---------------------------------------------------------------------------
// Hand-built slices.

fn v4(a: &str) -> Term {
    Term::Ipv4(a.parse::<Ipv4Addr>().unwrap().octets())
}

fn v6(a: &str) -> Term {
    Term::Ipv6(a.parse::<Ipv6Addr>().unwrap().octets())
}

fn bitmap(positions: &[u32]) -> RoaringBitmap {
    positions.iter().copied().collect()
}

/// A slice of positions `0..records`, with these postings and unparsed.
fn slice(records: u32, postings: &[(Term, &[u32])], unparsed: &[u32]) -> Slice {
    let mut map: BTreeMap<Term, RoaringBitmap> = BTreeMap::new();
    for (term, positions) in postings {
        *map.entry(*term).or_default() |= bitmap(positions);
    }
    Slice {
        meta: SliceMeta {
            partition: 0,
            base_offset: 1000,
            end_offset: 1000 + i64::from(records),
            records,
            bytes: 0,
            min_key: None,
            max_key: None,
            linktype: 1,
        },
        present: (0..records).collect(),
        unparsed: bitmap(unparsed),
        postings: map,
        blocks: Vec::new(),
    }
}

fn shown(filter: &str) -> String {
    Plan::parse(Some(filter)).to_string()
}

fn selected(filter: &str, slice: &Slice) -> Vec<u32> {
    Plan::parse(Some(filter)).select(slice).iter().collect()
}

// ---------------------------------------------------------------------------
// Reading filters.

#[test]
fn no_filter_and_empty_filter_select_everything() {
    for plan in [
        Plan::parse(None),
        Plan::parse(Some("")),
        Plan::parse(Some(" \t\n")),
    ] {
        assert!(plan.selects_everything());
        assert_eq!(plan.to_string(), "everything (no filter)");
    }
}

#[test]
fn and_or_share_one_precedence_left_to_right() {
    // libpcap: `a or b and c` is `(a or b) and c`.
    assert_eq!(
        shown("host 1.1.1.1 or host 2.2.2.2 and tcp"),
        "(host 1.1.1.1 ∪ host 2.2.2.2) ∩ ip-proto 6"
    );
    assert_eq!(
        shown("tcp and host 1.1.1.1 or udp"),
        "(ip-proto 6 ∩ host 1.1.1.1) ∪ ip-proto 17"
    );
    assert_eq!(
        shown("tcp && (host 1.1.1.1 || udp)"),
        "ip-proto 6 ∩ (host 1.1.1.1 ∪ ip-proto 17)"
    );
    // `not` binds tighter than either.
    assert_eq!(
        shown("not tcp and host 1.1.1.1"),
        "\"not tcp\" (may match) ∩ host 1.1.1.1"
    );
    assert_eq!(
        shown("! tcp or host 1.1.1.1"),
        "\"! tcp or host 1.1.1.1\" (may match)"
    );
}

#[test]
fn a_bare_value_inherits_the_qualifiers_before_it() {
    assert_eq!(
        shown("host 1.2.3.4 or 5.6.7.8"),
        "host 1.2.3.4 ∪ host 5.6.7.8"
    );
    assert_eq!(shown("port 80 or 443"), "port 80 ∪ port 443");
    assert_eq!(shown("tcp port 80 or 443"), "tcp-port 80 ∪ tcp-port 443");
    assert_eq!(
        shown("udp dst port 53 or 5353"),
        "udp-port 53 ∪ udp-port 5353"
    );
    assert_eq!(
        shown("not host 1.2.3.4 and 5.6.7.8"),
        "\"not host 1.2.3.4\" (may match) ∩ host 5.6.7.8"
    );
    assert_eq!(
        shown("host 1.2.3.4 and not 5.6.7.8"),
        "host 1.2.3.4 ∩ \"not 5.6.7.8\" (may match)"
    );
    assert_eq!(shown("port (80 or 443)"), "port 80 ∪ port 443");
    assert_eq!(
        shown("host 1.2.3.4 or (5.6.7.8 or 9.9.9.9)"),
        "host 1.2.3.4 ∪ host 5.6.7.8 ∪ host 9.9.9.9"
    );
    // A parenthesis passes on the qualifiers from before it, not from
    // inside: libpcap reads 5.6.7.8 here as `host 5.6.7.8`.
    assert_eq!(
        shown("host 1.2.3.4 and (tcp) or 5.6.7.8"),
        "(host 1.2.3.4 ∩ ip-proto 6) ∪ host 5.6.7.8"
    );
    assert_eq!(
        shown("tcp port 80 and (host 1.2.3.4 or 5.6.7.8)"),
        "tcp-port 80 ∩ (host 1.2.3.4 ∪ host 5.6.7.8)"
    );
    // After a primitive with no qualifiers to pass on, a bare value is an
    // error in libpcap.
    assert!(Plan::parse(Some("tcp or 80")).selects_everything());
    assert!(Plan::parse(Some("vlan 100 and 200")).selects_everything());
}

#[test]
fn addresses_and_networks() {
    assert_eq!(shown("host 10.0.0.1"), "host 10.0.0.1");
    assert_eq!(shown("src host 10.0.0.1"), "host 10.0.0.1");
    assert_eq!(shown("dst 10.0.0.1"), "host 10.0.0.1");
    assert_eq!(shown("src or dst host 10.0.0.1"), "host 10.0.0.1");
    assert_eq!(shown("src and dst 10.0.0.1"), "host 10.0.0.1");
    assert_eq!(shown("ip host 10.0.0.1"), "host 10.0.0.1");
    assert_eq!(shown("arp host 10.0.0.1"), "host 10.0.0.1");
    assert_eq!(shown("rarp src 10.0.0.1"), "host 10.0.0.1");
    assert_eq!(shown("host 167772161"), "host 10.0.0.1");
    // A short address is a prefix, for host as for net.
    assert_eq!(shown("host 10.1"), "net 10.1.0.0/16");
    assert_eq!(shown("net 10.0.0.0/8"), "net 10.0.0.0/8");
    assert_eq!(shown("dst net 192.168.1"), "net 192.168.1.0/24");
    assert_eq!(shown("net 10"), "net 10.0.0.0/8");
    assert_eq!(shown("net 172.16"), "net 172.16.0.0/16");
    // A full address after `net` is a /32 in libpcap.
    assert_eq!(shown("net 10.0.0.0"), "host 10.0.0.0");
    assert_eq!(shown("net 10.0.0.0 mask 255.0.0.0"), "net 10.0.0.0/8");
    assert_eq!(
        shown("net 10.0.0.0 mask 255.0.255.0"),
        "net 10.0.0.0-10.255.0.255"
    );
    assert_eq!(shown("net 0.0.0.0/0"), "net 0.0.0.0/0");
    assert_eq!(shown("ip6 host ::1"), "host ::1");
    assert_eq!(
        shown("host 2001:db8::1 or 2001:db8::2"),
        "host 2001:db8::1 ∪ host 2001:db8::2"
    );
    assert_eq!(shown("net 2001:db8::/32"), "net 2001:db8::/32");
    assert_eq!(shown("ip6 src net fe80::/10"), "net fe80::/10");
    assert_eq!(shown("host ::ffff:10.0.0.1"), "host ::ffff:10.0.0.1");
    // What libpcap refuses (bits outside the mask, a mask on a host, an
    // IPv4 qualifier on an IPv6 address) never narrows.
    for bad in [
        "net 10.0.0.1/8",
        "host 10.0.0.0/8",
        "ip host ::1",
        "ip6 host 10.0.0.1",
        "net 2001:db8::1/32",
        "tcp host 10.0.0.1",
    ] {
        assert!(Plan::parse(Some(bad)).selects_everything(), "{bad}");
    }
}

#[test]
fn ports_protocols_and_link_types() {
    assert_eq!(shown("port 80"), "port 80");
    assert_eq!(shown("src port 80"), "port 80");
    assert_eq!(shown("tcp port 80"), "tcp-port 80");
    assert_eq!(shown("udp dst port 53"), "udp-port 53");
    assert_eq!(shown("sctp port 2905"), "sctp-port 2905");
    // libpcap reads 010 as octal, 0x50 as hex.
    assert_eq!(shown("port 010 or 0x50"), "port 8 ∪ port 80");
    assert_eq!(shown("portrange 1-1024"), "portrange 1-1024");
    assert_eq!(shown("tcp portrange 1024-1"), "tcp-portrange 1-1024");
    assert_eq!(shown("udp src portrange 53"), "udp-portrange 53-53");
    assert_eq!(shown("ip proto 6"), "ip-proto 6");
    assert_eq!(shown("proto 17"), "ip-proto 17");
    assert_eq!(shown("ip6 proto 58"), "ip-proto 58");
    assert_eq!(shown("ip proto \\tcp"), "ip-proto 6");
    assert_eq!(shown("ip6 proto \\udp"), "ip-proto 17");
    assert_eq!(shown("proto \\sctp or \\icmp"), "ip-proto 132 ∪ ip-proto 1");
    assert_eq!(shown("tcp"), "ip-proto 6");
    assert_eq!(shown("udp"), "ip-proto 17");
    assert_eq!(shown("icmp"), "ip-proto 1");
    assert_eq!(shown("sctp"), "ip-proto 132");
    assert_eq!(shown("icmp6"), "ip-proto 58");
    assert_eq!(shown("ip"), "ether-type 0x0800");
    assert_eq!(shown("ip6"), "ether-type 0x86dd");
    assert_eq!(shown("arp"), "ether-type 0x0806");
    assert_eq!(shown("rarp"), "ether-type 0x8035");
    assert_eq!(shown("ether proto 0x800"), "ether-type 0x0800");
    assert_eq!(shown("ether proto \\ip6"), "ether-type 0x86dd");
    assert_eq!(shown("ether proto \\arp"), "ether-type 0x0806");
    assert_eq!(shown("vlan"), "vlan");
    assert_eq!(shown("vlan 100"), "vlan 100");
    assert_eq!(shown("vlan (100)"), "vlan 100");
    // An EtherType of at most 1500 is an LLC SAP; AppleTalk is also read
    // in SNAP frames.
    for any in [
        "ether proto 100",
        "ether proto \\atalk",
        "ether proto \\iso",
        "atalk",
        "stp",
        "port http",
        "portrange 1-http",
        "portrange 80-90-100",
        "ip proto \\gre",
        "ip proto 300",
        "port 70000",
        "vlan 5000",
    ] {
        assert!(Plan::parse(Some(any)).selects_everything(), "{any}");
    }
}

#[test]
fn what_the_index_cannot_use_may_match() {
    for any in [
        "ether host 00:11:22:33:44:55",
        "ether src 00:11:22:33:44:55",
        "less 100",
        "greater 1000",
        "ip[9] = 6",
        "tcp[tcpflags] & tcp-syn != 0",
        "(ip[0] & 0xf) > 5",
        "len >= 64",
        "icmp[icmptype] = icmp-echo",
        "-1 < len",
        "broadcast",
        "ether multicast",
        "ip broadcast",
        "host example.com",
        "net loopback",
        "gateway router",
        "ip protochain 6",
        "mpls",
        "mpls 100",
        "pppoed",
        "pppoes 3",
        "geneve",
        "inbound",
        "ifindex 2",
        "llc",
        "byte 9 = 6",
        "wlan type data",
        "type mgt subtype beacon",
        "not host 10.0.0.1",
        "host 10.0.0.1 or not port 22",
    ] {
        let plan = Plan::parse(Some(any));
        assert!(plan.selects_everything(), "{any}: {plan}");
        assert_eq!(plan.to_string(), format!("\"{any}\" (may match)"));
    }
    // A part that may match leaves the rest narrowing.
    assert_eq!(
        shown("host 1.2.3.4 and tcp[13] & 2 != 0"),
        "host 1.2.3.4 ∩ \"tcp[13] & 2 != 0\" (may match)"
    );
    assert_eq!(
        shown("(ip[0] & 0xf) > 5 and port 80"),
        "\"(ip[0] & 0xf) > 5\" (may match) ∩ port 80"
    );
    assert_eq!(
        shown("ether src 00:11:22:33:44:55 and (tcp port 80 or 443)"),
        "\"ether src 00:11:22:33:44:55\" (may match) ∩ (tcp-port 80 ∪ tcp-port 443)"
    );
}

#[test]
fn what_cannot_be_read_with_certainty_is_a_scan() {
    for bad in [
        "host",
        "host 10.0.0.1 and",
        "(host 10.0.0.1",
        "host 10.0.0.1)",
        "foo",
        "HOST 10.0.0.1",
        "10.0.0.1",
        "80",
        "(80 or 443)",
        "host 10.0.0.1 $",
        "port 08",
        "port 99999999999",
        "vpi 1",
        "src or host 10.0.0.1",
        "host 10.0.0.1 and fooword bar",
        "host 1:2:3:",
        "tcp port 80 é",
    ] {
        let plan = Plan::parse(Some(bad));
        assert!(plan.selects_everything(), "{bad}: {plan}");
        assert!(
            plan.to_string().starts_with("everything (may match: "),
            "{plan}"
        );
    }
    // Where reading stopped.
    assert_eq!(
        shown("port 08"),
        "everything (may match: filter not read with certainty near \"08\")"
    );
    assert_eq!(
        shown("host 10.0.0.1 and fooword bar"),
        "everything (may match: filter not read with certainty near \"fooword bar\")"
    );
}

#[test]
fn vlan_moves_the_offsets_of_what_follows() {
    assert_eq!(
        shown("vlan 100 and host 10.0.0.1"),
        "vlan 100 ∩ (host 10.0.0.1 ∪ untagged)"
    );
    // Before it, nothing moves; `not vlan` moves them too.
    assert_eq!(shown("host 10.0.0.1 and vlan"), "host 10.0.0.1 ∩ vlan");
    assert_eq!(
        shown("not vlan and tcp"),
        "\"not vlan\" (may match) ∩ (ip-proto 6 ∪ untagged)"
    );
    // Two tags deep, the index cannot tell which frames have two tags.
    assert_eq!(
        shown("vlan 100 and vlan 200 and tcp"),
        "vlan 100 ∩ (vlan 200 ∪ untagged) ∩ \"tcp\" (may match)"
    );
    // After mpls, pppoes, geneve, every primitive may match.
    assert!(Plan::parse(Some("mpls and host 10.0.0.1")).selects_everything());
    assert!(Plan::parse(Some("pppoes and tcp port 80")).selects_everything());
    assert_eq!(
        shown("tcp port 80 and geneve and host 10.0.0.1"),
        "tcp-port 80 ∩ \"geneve\" (may match) ∩ \"host 10.0.0.1\" (may match)"
    );
}

#[test]
fn deep_filters_neither_overflow_nor_narrow_wrongly() {
    let nested = format!("{}tcp{}", "(".repeat(5000), ")".repeat(5000));
    assert!(Plan::parse(Some(&nested)).selects_everything());
    let nots = format!("{}tcp", "not ".repeat(5000));
    assert!(Plan::parse(Some(&nots)).selects_everything());
    // Alternating operators nest one level each: the deep part may match.
    let mut chain = String::from("host 10.0.0.1");
    for i in 0..5000 {
        chain.push_str(if i % 2 == 0 { " and tcp" } else { " or udp" });
    }
    let plan = Plan::parse(Some(&chain));
    let s = slice(4, &[(v4("10.0.0.1"), &[0]), (Term::IpProto(6), &[1])], &[]);
    // libpcap: `((.. and tcp) or udp) and tcp) or udp`, nothing here; the
    // plan: the last levels exactly, the rest "may match".
    assert_eq!(plan.select(&s), bitmap(&[1]));
    // A long flat list stays narrow.
    let hosts: Vec<String> = (0..3000)
        .map(|i| format!("host 10.0.{}.{}", i / 250, i % 250))
        .collect();
    let plan = Plan::parse(Some(&hosts.join(" or ")));
    assert!(!plan.selects_everything());
    let s = slice(4, &[(v4("10.0.0.1"), &[2]), (v4("10.9.9.9"), &[3])], &[]);
    assert_eq!(plan.select(&s), bitmap(&[2]));
}

// ---------------------------------------------------------------------------
// Selecting.

#[test]
fn a_leaf_selects_its_postings_and_the_unparsed() {
    let s = slice(
        10,
        &[
            (v4("10.0.0.1"), &[1, 5]),
            (v4("10.0.0.2"), &[2]),
            (Term::TcpPort(80), &[1, 2]),
            (Term::UdpPort(80), &[7]),
            (Term::IpProto(6), &[1, 2, 5]),
        ],
        &[9],
    );
    assert_eq!(selected("host 10.0.0.1", &s), [1, 5, 9]);
    assert_eq!(selected("host 10.9.9.9", &s), [9]);
    assert_eq!(selected("port 80", &s), [1, 2, 7, 9]);
    assert_eq!(selected("tcp port 80", &s), [1, 2, 9]);
    assert_eq!(selected("udp port 80", &s), [7, 9]);
    assert_eq!(selected("host 10.0.0.1 and port 80", &s), [1, 9]);
    assert_eq!(selected("host 10.0.0.1 or 10.0.0.2", &s), [1, 2, 5, 9]);
    assert_eq!(selected("host 10.0.0.1 and not port 80", &s), [1, 5, 9]);
    assert_eq!(
        selected("not host 10.0.0.1", &s),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(selected("host 10.0.0.1 and less 100", &s), [1, 5, 9]);
    assert_eq!(selected("tcp and port 80 and not udp", &s), [1, 2, 9]);
}

#[test]
fn ranges_select_every_term_inside() {
    let s = slice(
        8,
        &[
            (v4("10.0.0.1"), &[0]),
            (v4("10.0.0.200"), &[1]),
            (v4("10.1.0.1"), &[2]),
            (v4("11.0.0.1"), &[3]),
            (v6("2001:db8::1"), &[4]),
            (v6("2001:db9::1"), &[5]),
            (Term::TcpPort(1023), &[6]),
            (Term::SctpPort(1024), &[7]),
            (Term::TcpPort(1025), &[3]),
            (Term::EtherType(0x0800), &[0, 1, 2, 3]),
            (Term::EtherType(0x86dd), &[4, 5]),
        ],
        &[],
    );
    assert_eq!(selected("net 10.0.0.0/24", &s), [0, 1]);
    assert_eq!(selected("net 10", &s), [0, 1, 2]);
    assert_eq!(selected("host 10.0", &s), [0, 1]);
    assert_eq!(selected("net 0.0.0.0/0", &s), [0, 1, 2, 3]);
    assert_eq!(selected("net 2001:db8::/32", &s), [4]);
    assert_eq!(selected("net ::/0", &s), [4, 5]);
    assert_eq!(selected("portrange 1000-1024", &s), [6, 7]);
    assert_eq!(selected("tcp portrange 1000-2000", &s), [3, 6]);
    assert_eq!(selected("portrange 1024", &s), [7]);
}

#[test]
fn ether_types_stand_for_the_link_type_test_on_every_link_type() {
    // On raw IP the extractor gives `EtherType(0x0800)` to version 4.
    let mut s = slice(
        4,
        &[
            (Term::EtherType(0x0800), &[0]),
            (Term::EtherType(0x86dd), &[1]),
            (v4("10.0.0.1"), &[0]),
        ],
        &[],
    );
    s.meta.linktype = 101;
    assert_eq!(selected("ip", &s), [0]);
    assert_eq!(selected("ip6 or arp", &s), [1]);
    assert_eq!(selected("ip and host 10.0.0.1", &s), [0]);
    assert_eq!(selected("net ::/0", &s), [1]);
}

#[test]
fn after_vlan_untagged_frames_are_kept() {
    // 0: untagged IPv4 without the host (libpcap reads it 4 bytes off);
    // 1: tagged 100 with the host; 2: tagged 100 without; 3: tagged 200
    // with the host.
    let s = slice(
        4,
        &[
            (Term::EtherType(0x0800), &[0, 1, 2, 3]),
            (Term::EtherType(0x8100), &[1, 2]),
            (Term::EtherType(0x88a8), &[3]),
            (Term::Vlan(100), &[1, 2]),
            (Term::Vlan(200), &[3]),
            (v4("10.0.0.1"), &[1, 3]),
        ],
        &[],
    );
    assert_eq!(selected("vlan 100 and host 10.0.0.1", &s), [1]);
    assert_eq!(selected("vlan and host 10.0.0.1", &s), [1, 3]);
    assert_eq!(selected("vlan 100 or host 10.0.0.1", &s), [0, 1, 2, 3]);
    assert_eq!(selected("host 10.0.0.1 or vlan 100", &s), [1, 2, 3]);
    assert_eq!(selected("not vlan and host 10.0.0.1", &s), [0, 1, 3]);
}

#[test]
fn selection_stays_within_present() {
    let mut s = slice(4, &[(v4("10.0.0.1"), &[0, 1])], &[3]);
    s.present = bitmap(&[0, 3]);
    assert_eq!(selected("host 10.0.0.1", &s), [0, 3]);
    assert_eq!(selected("host 10.0.0.9", &s), [3]);
    assert_eq!(selected("less 10", &s), [0, 3]);
}

// ---------------------------------------------------------------------------
// Properties against libpcap.

fn config() -> Config {
    Config {
        // PROPTEST_CASES overrides this default (Config::default reads it).
        cases: Config::default().cases.min(256),
        ..Config::default()
    }
}

const V4: [[u8; 4]; 7] = [
    [10, 0, 0, 1],
    [10, 0, 0, 2],
    [10, 1, 2, 3],
    [192, 168, 1, 1],
    // Ports 80 and 53 read as an address, and an EtherType and IPv4's first
    // byte: what libpcap finds when it reads at the wrong offset.
    [0, 80, 0, 53],
    [8, 0, 0x45, 0],
    [0, 0, 0, 0],
];
const V6: [&str; 5] = [
    "::1",
    "2001:db8::1",
    "2001:db8::2",
    "fe80::1",
    "2001:db8:1::5",
];
const PORTS: [u16; 7] = [22, 53, 80, 443, 1024, 8080, 0x0800];
const PROTOS: [u8; 8] = [1, 6, 17, 132, 47, 58, 2, 44];
const VIDS: [u16; 5] = [0, 1, 100, 200, 4095];
const TPIDS: [u16; 3] = [0x8100, 0x88a8, 0x9100];
/// IPv4 total lengths and IPv6 payload lengths: real ones, and ones that
/// read as EtherTypes 4 bytes further on.
const LENGTHS: [u16; 5] = [40, 0x0800, 0x86dd, 0x8100, 0x0806];

fn v6_addr(i: usize) -> [u8; 16] {
    V6[i % V6.len()].parse::<Ipv6Addr>().unwrap().octets()
}

/// Choices for one frame, as indexes into the pools.
#[derive(Debug, Clone)]
struct FrameSpec {
    tags: Vec<(usize, usize)>,
    kind: usize,
    ihl: u8,
    frag: u16,
    len: usize,
    proto: usize,
    inner_proto: usize,
    addrs: (usize, usize),
    ports: (usize, usize),
    tail: Vec<u8>,
    cut: Option<usize>,
}

fn frame_spec() -> impl Strategy<Value = FrameSpec> {
    (
        prop::collection::vec((0..TPIDS.len(), 0..VIDS.len()), 0..3),
        0usize..8,
        prop_oneof![4 => Just(5u8), 1 => Just(6u8), 1 => 0u8..16],
        prop_oneof![
            Just(0u16),
            Just(0x4000),
            Just(0x2000),
            Just(0x0001),
            Just(0x20b9)
        ],
        0..LENGTHS.len(),
        (0..PROTOS.len(), 0..PROTOS.len()),
        (0usize..8, 0usize..8),
        (0..PORTS.len(), 0..PORTS.len()),
        prop::collection::vec(any::<u8>(), 0..12),
        prop::option::weighted(0.2, 0usize..100),
    )
        .prop_map(
            |(tags, kind, ihl, frag, len, (proto, inner_proto), addrs, ports, tail, cut)| {
                FrameSpec {
                    tags,
                    kind,
                    ihl,
                    frag,
                    len,
                    proto,
                    inner_proto,
                    addrs,
                    ports,
                    tail,
                    cut,
                }
            },
        )
}

fn build(spec: &FrameSpec) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    for &(tpid, vid) in &spec.tags {
        f.extend_from_slice(&TPIDS[tpid].to_be_bytes());
        f.extend_from_slice(&(0x2000 | VIDS[vid]).to_be_bytes());
    }
    let v4 = |i: usize| V4[i % V4.len()];
    let (sport, dport) = (PORTS[spec.ports.0], PORTS[spec.ports.1]);
    let ports = |f: &mut Vec<u8>| {
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
    };
    match spec.kind {
        0..=2 => {
            f.extend_from_slice(&[0x08, 0x00]);
            let start = f.len();
            f.push(0x40 | spec.ihl);
            f.push(0);
            f.extend_from_slice(&LENGTHS[spec.len].to_be_bytes());
            f.extend_from_slice(&[0, 1]);
            f.extend_from_slice(&spec.frag.to_be_bytes());
            f.push(64);
            f.push(PROTOS[spec.proto]);
            f.extend_from_slice(&[0, 0]);
            f.extend_from_slice(&v4(spec.addrs.0));
            f.extend_from_slice(&v4(spec.addrs.1));
            // Options up to the header length; a length under 20 bytes puts
            // libpcap's transport header inside the IP header, as here.
            let header = usize::from(spec.ihl) * 4;
            f.resize(start + header.max(20), 0xaa);
            ports(&mut f);
        }
        3 | 4 => {
            f.extend_from_slice(&[0x86, 0xdd]);
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&LENGTHS[spec.len].to_be_bytes());
            let next = PROTOS[spec.proto];
            f.push(next);
            f.push(64);
            f.extend_from_slice(&v6_addr(spec.addrs.0));
            f.extend_from_slice(&v6_addr(spec.addrs.1));
            if next == 44 {
                f.extend_from_slice(&[PROTOS[spec.inner_proto], 0, 0, 0, 0, 0, 0, 1]);
            }
            ports(&mut f);
        }
        5 => {
            let rarp = spec.proto % 2 == 1;
            f.extend_from_slice(if rarp { &[0x80, 0x35] } else { &[0x08, 0x06] });
            f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
            f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
            f.extend_from_slice(&v4(spec.addrs.0));
            f.extend_from_slice(&[0; 6]);
            f.extend_from_slice(&v4(spec.addrs.1));
        }
        6 => {
            // 802.3: a length, then LLC.
            f.extend_from_slice(&[0x00, 0x40, 0x42, 0x42, 0x03]);
        }
        _ => {
            let types = [0x88cc, 0x6003, 0x9000, 0x0800, 0x86dd, 0x8863, 0x0600];
            f.extend_from_slice(&u16::to_be_bytes(types[spec.proto % types.len()]));
        }
    }
    f.extend_from_slice(&spec.tail);
    if let Some(cut) = spec.cut {
        f.truncate(cut);
    }
    f
}

/// The terms of an Ethernet frame as libpcap's filters read its fields: a
/// model written for these tests, independent of `extract`.
fn model_terms(f: &[u8]) -> Vec<Term> {
    let be16 = |at: usize| f.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let quad = |at: usize| f.get(at..at + 4).map(|b| [b[0], b[1], b[2], b[3]]);
    let mut out = Vec::new();
    let mut at = 12;
    let ethertype = loop {
        let Some(t) = be16(at) else { return out };
        out.push(Term::EtherType(t));
        if !TPIDS.contains(&t) {
            break t;
        }
        if let Some(tci) = be16(at + 2) {
            out.push(Term::Vlan(tci & 0x0fff));
        }
        at += 4;
    };
    let l3 = at + 2;
    let ports = |out: &mut Vec<Term>, proto: u8, at: usize| {
        let kind: fn(u16) -> Term = match proto {
            6 => Term::TcpPort,
            17 => Term::UdpPort,
            132 => Term::SctpPort,
            _ => return,
        };
        out.extend(be16(at).map(kind));
        out.extend(be16(at + 2).map(kind));
    };
    match ethertype {
        0x0800 => {
            if let Some(&proto) = f.get(l3 + 9) {
                out.push(Term::IpProto(proto));
                if be16(l3 + 6).is_some_and(|frag| frag & 0x1fff == 0) {
                    ports(&mut out, proto, l3 + usize::from(f[l3] & 0x0f) * 4);
                }
            }
            out.extend(quad(l3 + 12).map(Term::Ipv4));
            out.extend(quad(l3 + 16).map(Term::Ipv4));
        }
        0x86dd => {
            if let Some(&next) = f.get(l3 + 6) {
                out.push(Term::IpProto(next));
                if next == 44 {
                    out.extend(f.get(l3 + 40).map(|&n| Term::IpProto(n)));
                }
                ports(&mut out, next, l3 + 40);
            }
            // libpcap loads only the 32-bit words a prefix covers (`net
            // 2001:db8::/32` reads 4 bytes of each address): an address cut
            // short after a word is a term too, padded with zeros.
            for at in [l3 + 8, l3 + 24] {
                let have = &f[at.min(f.len())..(at + 16).min(f.len())];
                if have.len() >= 4 {
                    let mut a = [0u8; 16];
                    a[..have.len()].copy_from_slice(have);
                    out.push(Term::Ipv6(a));
                }
            }
        }
        0x0806 | 0x8035 => {
            out.extend(quad(l3 + 14).map(Term::Ipv4));
            out.extend(quad(l3 + 24).map(Term::Ipv4));
        }
        _ => {}
    }
    out
}

/// Whether an IPv6 address of the frame is cut short after 4 bytes or
/// more: a prefix can match on it.
fn cut_in_ipv6_address(f: &[u8]) -> bool {
    let mut at = 12;
    while f
        .get(at..at + 2)
        .is_some_and(|t| TPIDS.contains(&u16::from_be_bytes([t[0], t[1]])))
    {
        at += 4;
    }
    if f.get(at..at + 2) != Some(&[0x86, 0xdd]) {
        return false;
    }
    [at + 10, at + 26]
        .iter()
        .any(|&address| (address + 4..address + 16).contains(&f.len()))
}

/// Whether `extract::terms` is implemented yet (it panics with `todo!()`
/// until it is); asked once.
fn extractor_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        std::panic::catch_unwind(|| {
            let mut out = Vec::new();
            extract::terms(1, &[0u8; 64], &mut out)
        })
        .is_ok()
    })
}

/// A slice of these frames at positions with gaps, some unparsed, indexed
/// by `terms` (false: unparsed).
fn index(
    frames: &[Vec<u8>],
    unparsed: &[bool],
    terms: impl Fn(&[u8]) -> Option<Vec<Term>>,
) -> (Slice, Vec<u32>) {
    let mut s = slice(0, &[], &[]);
    let mut positions = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let position = (i as u32) * 3 + (i as u32 % 2);
        positions.push(position);
        s.present.insert(position);
        match terms(frame) {
            Some(terms) if !unparsed[i] => {
                for term in terms {
                    s.postings.entry(term).or_default().insert(position);
                }
            }
            _ => {
                s.unparsed.insert(position);
            }
        }
    }
    s.meta.records = frames.len() as u32;
    (s, positions)
}

/// Every frame the BPF program of `filter` matches is selected, by the
/// model's terms and by the extractor's (once there is one).
fn check_superset(
    filter: &str,
    frames: &[Vec<u8>],
    unparsed: &[bool],
) -> Result<(), TestCaseError> {
    let plan = Plan::parse(Some(filter));
    let Ok(program) = BpfProgram::compile_offline(filter, 1) else {
        return Ok(());
    };
    let mut indexes = vec![("model", index(frames, unparsed, |f| Some(model_terms(f))))];
    if extractor_ready() {
        let terms = |f: &[u8]| {
            let mut out = Vec::new();
            extract::terms(1, f, &mut out).then_some(out)
        };
        indexes.push(("extract", index(frames, unparsed, terms)));
    }
    for (by, (slice, positions)) in indexes {
        let chosen = plan.select(&slice);
        // A slice decoded for the plan (the postings it wants, no others)
        // selects the same.
        let mut narrowed = slice.clone();
        narrowed.postings.retain(|term, _| plan.wants(term));
        prop_assert_eq!(
            plan.select(&narrowed),
            chosen.clone(),
            "{:?} wants too little",
            filter
        );
        prop_assert!(chosen.is_subset(&slice.present));
        prop_assert!(slice.unparsed.is_subset(&chosen));
        for (frame, &position) in frames.iter().zip(&positions) {
            if by == "extract" && cut_in_ipv6_address(frame) {
                // Known gap of extract.rs (reported): it indexes only whole
                // IPv6 addresses, where libpcap may match a prefix on the
                // words of a cut one.
                continue;
            }
            if program.matches(frame, frame.len() as u32) {
                let mut terms = Vec::new();
                if by == "extract" {
                    extract::terms(1, frame, &mut terms);
                } else {
                    terms = model_terms(frame);
                }
                prop_assert!(
                    chosen.contains(position),
                    "{filter:?} (planned as {plan}) matches {frame:02x?} (terms by {by}: {terms:?}) but it was not selected",
                );
            }
        }
    }
    Ok(())
}

/// Primitives over the pools, every kind the planner reads and some it
/// does not.
fn primitive() -> impl Strategy<Value = String> {
    let v4 = (0..V4.len()).prop_map(|i| Ipv4Addr::from(V4[i]).to_string());
    let v6 = (0..V6.len()).prop_map(|i| V6[i].to_string());
    let port = (0..PORTS.len()).prop_map(|i| PORTS[i].to_string());
    let proto = (0..PROTOS.len()).prop_map(|i| PROTOS[i].to_string());
    let vid = (0..VIDS.len()).prop_map(|i| VIDS[i].to_string());
    let op = prop_oneof![
        Just("and"),
        Just("or"),
        Just("and not"),
        Just("or not"),
        Just("&&"),
        Just("||")
    ];
    let host_q = prop_oneof![
        Just("host"),
        Just("src host"),
        Just("dst"),
        Just("src or dst"),
        Just("ip host"),
        Just("arp host"),
        Just("rarp dst host"),
        Just("src and dst host"),
    ];
    let port_q = prop_oneof![
        Just("port"),
        Just("tcp port"),
        Just("udp port"),
        Just("sctp port"),
        Just("src port"),
        Just("tcp dst port"),
        Just("portrange"),
        Just("udp portrange"),
    ];
    prop_oneof![
        (host_q.clone(), v4.clone()).prop_map(|(q, a)| format!("{q} {a}")),
        (host_q, v4.clone(), op.clone(), v4.clone())
            .prop_map(|(q, a, op, b)| format!("{q} {a} {op} {b}")),
        (v4.clone(), 0u32..=32).prop_map(|(a, len)| {
            let a = u32::from(a.parse::<Ipv4Addr>().unwrap());
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            format!("net {}/{len}", Ipv4Addr::from(a & mask))
        }),
        Just("net 10".to_string()),
        Just("net 10.0.0".to_string()),
        Just("dst net 10.0.0.0 mask 255.0.255.0".to_string()),
        Just("host 10.0".to_string()),
        (
            v6.clone(),
            prop_oneof![Just("host"), Just("ip6 host"), Just("src")]
        )
            .prop_map(|(a, q)| format!("{q} {a}")),
        (v6.clone(), v6).prop_map(|(a, b)| format!("ip6 host {a} or {b}")),
        prop_oneof![
            Just("net 2001:db8::/32"),
            Just("ip6 net 2001:db8::/48"),
            Just("net fe80::/10"),
            Just("net ::/0")
        ]
        .prop_map(str::to_string),
        (port_q.clone(), port.clone()).prop_map(|(q, p)| format!("{q} {p}")),
        (port_q.clone(), port.clone(), op.clone(), port.clone())
            .prop_map(|(q, a, op, b)| format!("{q} {a} {op} {b}")),
        (port_q, port.clone(), port.clone()).prop_map(|(q, a, b)| format!("{q} ({a} or {b})")),
        (
            prop_oneof![
                Just("portrange"),
                Just("tcp portrange"),
                Just("udp src portrange")
            ],
            port.clone(),
            port
        )
            .prop_map(|(q, a, b)| format!("{q} {a}-{b}")),
        (
            prop_oneof![Just("ip proto"), Just("proto"), Just("ip6 proto")],
            proto
        )
            .prop_map(|(q, p)| format!("{q} {p}")),
        prop_oneof![
            Just("ip proto \\tcp"),
            Just("proto \\udp"),
            Just("ip6 proto \\sctp")
        ]
        .prop_map(str::to_string),
        prop_oneof![
            Just("tcp"),
            Just("udp"),
            Just("icmp"),
            Just("sctp"),
            Just("icmp6"),
            Just("igmp"),
            Just("ip"),
            Just("ip6"),
            Just("arp"),
            Just("rarp"),
            Just("decnet"),
            Just("vlan"),
        ]
        .prop_map(str::to_string),
        vid.prop_map(|v| format!("vlan {v}")),
        prop_oneof![
            Just("ether proto 0x800"),
            Just("ether proto 0x86dd"),
            Just("ether proto \\ip"),
            Just("ether proto \\arp"),
            Just("ether proto 0x8100"),
            Just("ether proto 0x88a8"),
            Just("ether proto 0x9000"),
            Just("ether proto 0x600"),
        ]
        .prop_map(str::to_string),
        // May match.
        prop_oneof![
            Just("less 60"),
            Just("greater 70"),
            Just("ip[9] = 6"),
            Just("tcp[13] & 2 != 0"),
            Just("(ip[0] & 0xf) > 5"),
            Just("ether host 02:00:00:00:00:01"),
            Just("ether broadcast"),
            Just("ip multicast"),
            Just("ip protochain 6"),
            Just("llc"),
            Just("mpls"),
            Just("pppoes"),
        ]
        .prop_map(str::to_string),
    ]
}

fn filter() -> impl Strategy<Value = String> {
    primitive().prop_recursive(4, 24, 3, |inner| {
        // Negations are rare: one makes the part above it "may match".
        prop_oneof![
            1 => inner.clone().prop_map(|a| format!("not {a}")),
            1 => inner.clone().prop_map(|a| format!("!({a})")),
            3 => inner.clone().prop_map(|a| format!("({a})")),
            12 => (
                inner.clone(),
                prop_oneof![Just("and"), Just("or"), Just("&&"), Just("||")],
                inner
            )
                .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
        ]
    })
}

/// Words and signs of the language, for mutations.
const WORDS: &[&str] = &[
    "host",
    "net",
    "port",
    "portrange",
    "src",
    "dst",
    "and",
    "or",
    "not",
    "(",
    ")",
    "!",
    "&&",
    "||",
    "tcp",
    "udp",
    "ip",
    "ip6",
    "arp",
    "vlan",
    "proto",
    "ether",
    "10.0.0.1",
    "10.0.0",
    "10",
    "80",
    "53",
    "100",
    "1-1024",
    "::1",
    "2001:db8::/32",
    "/",
    "8",
    "mask",
    "255.0.0.0",
    "\\tcp",
    "len",
    ">",
    "=",
    "[",
    "]",
    "&",
    "1",
    "0x800",
    "less",
    "greater",
    "mpls",
    "icmp",
    "sctp",
    "0.80.0.53",
    "2001:db8::1",
    "-",
    "+",
    "9",
];

fn frames() -> impl Strategy<Value = (Vec<Vec<u8>>, Vec<bool>)> {
    prop::collection::vec(frame_spec(), 1..40).prop_flat_map(|specs| {
        let frames: Vec<Vec<u8>> = specs.iter().map(build).collect();
        let n = frames.len();
        (
            Just(frames),
            prop::collection::vec(prop::bool::weighted(0.1), n),
        )
    })
}

proptest! {
    #![proptest_config(config())]

    /// Filters from the grammar: whatever libpcap matches is selected.
    #[test]
    fn selects_every_record_libpcap_matches(filter in filter(), (frames, unparsed) in frames()) {
        check_superset(&filter, &frames, &unparsed)?;
    }

    /// Filters from the grammar, mutated (words dropped, doubled, swapped,
    /// replaced, run together): what libpcap still compiles must be read
    /// right, or not at all.
    #[test]
    fn mutated_filters_are_read_right_or_not_at_all(
        filter in filter(),
        edits in prop::collection::vec((0u8..5, any::<prop::sample::Index>(), 0..WORDS.len()), 1..4),
        (frames, unparsed) in frames(),
    ) {
        let mut words: Vec<String> = filter.split(' ').map(str::to_string).collect();
        for (edit, at, word) in edits {
            let i = at.index(words.len());
            match edit {
                0 if words.len() > 1 => {
                    words.remove(i);
                }
                1 => words.insert(i, WORDS[word].to_string()),
                2 => words[i] = WORDS[word].to_string(),
                3 if i + 1 < words.len() => words.swap(i, i + 1),
                _ if i + 1 < words.len() => {
                    let next = words.remove(i + 1);
                    words[i].push_str(&next);
                }
                _ => {}
            }
        }
        check_superset(&words.join(" "), &frames, &unparsed)?;
    }

    /// Any text at all: no panic, and a selection within its bounds.
    #[test]
    fn any_text_plans_without_panic(text in ".{0,80}", printable in "[ -~]{0,80}") {
        let s = slice(3, &[(v4("10.0.0.1"), &[0]), (Term::TcpPort(80), &[1])], &[2]);
        for filter in [&text, &printable] {
            let plan = Plan::parse(Some(filter));
            let chosen = plan.select(&s);
            prop_assert!(chosen.is_subset(&s.present) && s.unparsed.is_subset(&chosen));
            let _ = plan.to_string();
        }
    }
}
