//! The terms of one frame.
//!
//! The index must hold every record that tcpdump's filter can match, so this
//! reads a frame the way libpcap's compiled BPF does, not the way a
//! validating parser would: fields at fixed offsets from the link-layer
//! header, no check of the IP version nibble, header length or checksum.
//! A field is indexed when the frame holds all of its bytes, because a BPF
//! load past the end rejects the packet: the filter can only match a field
//! it could load (an IPv6 address, loaded in words, is the one exception).
//! The offsets are those of libpcap 1.10's gencode.c (`tcpdump -d` shows
//! them), e.g. on Ethernet:
//!
//! - `ip` is `ether[12:2] == 0x0800`; `host X` reads the IPv4 source and
//!   destination at 26 and 30, or, when the type is ARP or RARP, the sender
//!   and target protocol addresses at 28 and 38;
//! - `ip6` is `ether[12:2] == 0x86dd`; addresses at 22 and 38, loaded a
//!   32-bit word at a time;
//! - `port N` reads an IPv4 port at `14 + 4 * (ether[14] & 0xf)`, whatever
//!   that header length is (0 included), when `ip[9]` is TCP, UDP or SCTP
//!   and the fragment offset is 0; an IPv6 port right after the 40-byte
//!   header when the next header is TCP, UDP or SCTP;
//! - `ip6 proto P` (so `tcp`, `udp` on IPv6) is the next header, or the next
//!   header of a fragment header that comes first;
//! - `vlan` tests the type field for 0x8100, 0x88a8 or 0x9100, `vlan N` the
//!   12 bits after it, and every test after a `vlan` reads 4 bytes further.

use super::term::Term;

/// LINKTYPE_ETHERNET (and DLT_EN10MB).
pub const LINKTYPE_ETHERNET: u32 = 1;
/// LINKTYPE_RAW: IPv4 or IPv6 by the version nibble.
pub const LINKTYPE_RAW: u32 = 101;
/// DLT_RAW as most systems number it, and as some old files carry it.
pub const DLT_RAW: u32 = 12;
/// DLT_RAW as OpenBSD numbers it.
pub const DLT_RAW_OPENBSD: u32 = 14;
/// LINKTYPE_IPV4: raw IPv4, no version test.
pub const LINKTYPE_IPV4: u32 = 228;
/// LINKTYPE_IPV6: raw IPv6, no version test.
pub const LINKTYPE_IPV6: u32 = 229;

const ETHERTYPE_IP: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_REVARP: u16 = 0x8035;
const ETHERTYPE_IPV6: u16 = 0x86dd;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_SCTP: u8 = 132;

/// Whether a link type is one [`terms`] parses.
pub fn parses(linktype: u32) -> bool {
    matches!(
        linktype,
        LINKTYPE_ETHERNET
            | LINKTYPE_RAW
            | DLT_RAW
            | DLT_RAW_OPENBSD
            | LINKTYPE_IPV4
            | LINKTYPE_IPV6
    )
}

/// Appends the terms of `frame` (read as link type `linktype`) to `out`;
/// false when this link type is not parsed (the record is then `unparsed`).
///
/// A term may be appended more than once (a port that is both source and
/// destination); the slice builder keeps one.
pub fn terms(linktype: u32, frame: &[u8], out: &mut Vec<Term>) -> bool {
    match linktype {
        LINKTYPE_ETHERNET => ethernet(frame, out),
        // libpcap tests the version nibble for `ip` and `ip6` on DLT_RAW;
        // the EtherType term stands for that test, so `ip` and `ip6` are
        // planned the same way on every link type.
        LINKTYPE_RAW | DLT_RAW | DLT_RAW_OPENBSD => match frame.first().map(|b| b >> 4) {
            Some(4) => {
                out.push(Term::EtherType(ETHERTYPE_IP));
                ipv4(frame, 0, out);
            }
            Some(6) => {
                out.push(Term::EtherType(ETHERTYPE_IPV6));
                ipv6(frame, 0, out);
            }
            _ => {}
        },
        // Here libpcap takes `ip` (or `ip6`) as always true.
        LINKTYPE_IPV4 => {
            out.push(Term::EtherType(ETHERTYPE_IP));
            ipv4(frame, 0, out);
        }
        LINKTYPE_IPV6 => {
            out.push(Term::EtherType(ETHERTYPE_IPV6));
            ipv6(frame, 0, out);
        }
        _ => return false,
    }
    true
}

#[inline(always)]
fn be16(frame: &[u8], at: usize) -> Option<u16> {
    match frame.get(at..at + 2) {
        Some(&[a, b]) => Some(u16::from_be_bytes([a, b])),
        _ => None,
    }
}

#[inline(always)]
fn bytes<const N: usize>(frame: &[u8], at: usize) -> Option<[u8; N]> {
    frame.get(at..at + N)?.try_into().ok()
}

fn ethernet(frame: &[u8], out: &mut Vec<Term>) {
    // Each `vlan` in a filter moves what follows it 4 bytes on, so a filter
    // reads the network layer after as many tags as it names `vlan`s, and
    // each `vlan` requires a tag type where it looks. The only level at which
    // a type field can pass `ip`, `ip6` or `arp` is therefore the first one
    // that is not a tag type: the untagged frame's own (the outer level) or
    // the one after the last stacked tag (the innermost). The loop follows
    // tags as far as the frame goes, as a filter with that many `vlan`s does.
    let mut type_at = 12;
    while let Some(ethertype) = be16(frame, type_at) {
        out.push(Term::EtherType(ethertype));
        match ethertype {
            0x8100 | 0x88a8 | 0x9100 => {
                if let Some(tci) = be16(frame, type_at + 2) {
                    out.push(Term::Vlan(tci & 0x0fff));
                }
                type_at += 4;
            }
            // An EtherType, or an 802.3 length (at most 1500) with LLC after
            // it: `stp`, `ipx`, `iso` test LLC bytes this index does not
            // hold, so the length is all it keeps of such a frame.
            _ => {
                network(ethertype, frame, type_at + 2, out);
                return;
            }
        }
    }
}

#[inline]
fn network(ethertype: u16, frame: &[u8], at: usize, out: &mut Vec<Term>) {
    match ethertype {
        ETHERTYPE_IP => ipv4(frame, at, out),
        ETHERTYPE_IPV6 => ipv6(frame, at, out),
        ETHERTYPE_ARP | ETHERTYPE_REVARP => {
            // `host`/`net` on ARP and RARP: the sender and target protocol
            // addresses at 14 and 24, whatever the packet says its
            // hardware and protocol address lengths are.
            for field in [at + 14, at + 24] {
                if let Some(address) = bytes::<4>(frame, field) {
                    out.push(Term::Ipv4(address));
                }
            }
        }
        _ => {}
    }
}

fn ipv4(frame: &[u8], ip: usize, out: &mut Vec<Term>) {
    for field in [ip + 12, ip + 16] {
        if let Some(address) = bytes::<4>(frame, field) {
            out.push(Term::Ipv4(address));
        }
    }
    // ip[9] present means ip[0] and ip[6:2] are too.
    let Some(&proto) = frame.get(ip + 9) else {
        return;
    };
    // `ip proto P`, `tcp`, `icmp`: every fragment.
    out.push(Term::IpProto(proto));
    let fragment_offset = u16::from_be_bytes([frame[ip + 6], frame[ip + 7]]) & 0x1fff;
    if fragment_offset == 0 {
        let transport = ip + 4 * usize::from(frame[ip] & 0x0f);
        ports(proto, frame, transport, out);
    }
}

fn ipv6(frame: &[u8], ip: usize, out: &mut Vec<Term>) {
    for field in [ip + 8, ip + 24] {
        // libpcap loads an IPv6 address in 32-bit words and, for a prefix
        // (`net fd00::/16`), only the words the prefix covers: a frame cut
        // inside an address can still match one. The whole words there are
        // indexed, the rest zero, which is inside every prefix they match.
        let words = frame.len().saturating_sub(field).min(16) & !3;
        if words > 0 {
            let mut address = [0u8; 16];
            address[..words].copy_from_slice(&frame[field..field + words]);
            out.push(Term::Ipv6(address));
        }
    }
    let Some(&next) = frame.get(ip + 6) else {
        return;
    };
    out.push(Term::IpProto(next));
    ports(next, frame, ip + 40, out);
    if next == IPPROTO_FRAGMENT {
        // libpcap 1.10 follows a fragment header for `ip6 proto` but not for
        // ports; the ports after it are indexed too (any fragment), so that a
        // libpcap that does read them still finds its records here.
        if let Some(&inner) = frame.get(ip + 40) {
            out.push(Term::IpProto(inner));
            ports(inner, frame, ip + 48, out);
        }
    }
}

#[inline]
fn ports(proto: u8, frame: &[u8], at: usize, out: &mut Vec<Term>) {
    if !matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
        return;
    }
    // Source and destination are separate loads: `port N` matches on the
    // source even when the frame ends before the destination.
    for field in [at, at + 2] {
        if let Some(port) = be16(frame, field) {
            out.push(match proto {
                IPPROTO_TCP => Term::TcpPort(port),
                IPPROTO_UDP => Term::UdpPort(port),
                _ => Term::SctpPort(port),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::bpf::BpfProgram;
    use Term::*;

    const A: [u8; 4] = [10, 0, 0, 1];
    const B: [u8; 4] = [10, 0, 0, 2];
    const A6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const B6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    fn ether(tags: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        for &(tpid, tci) in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// An IPv4 header of `ihl` words (options zero) before `payload`.
    fn ipv4(ihl: u8, proto: u8, frag: u16, src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0x40 | ihl, 0];
        h.extend_from_slice(&(20 + payload.len() as u16).to_be_bytes());
        h.extend_from_slice(&[0, 1]);
        h.extend_from_slice(&frag.to_be_bytes());
        h.extend_from_slice(&[64, proto, 0, 0]);
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h.resize(h.len().max(4 * usize::from(ihl)), 0);
        h.extend_from_slice(payload);
        h
    }

    fn ipv6(next: u8, src: [u8; 16], dst: [u8; 16], payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        h.extend_from_slice(&[next, 64]);
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h.extend_from_slice(payload);
        h
    }

    /// The first 8 bytes of a TCP, UDP or SCTP header: the ports, then zeros.
    fn l4(sport: u16, dport: u16) -> Vec<u8> {
        let mut h = sport.to_be_bytes().to_vec();
        h.extend_from_slice(&dport.to_be_bytes());
        h.extend_from_slice(&[0; 16]);
        h
    }

    fn arp(spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
        let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
        a.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        a.extend_from_slice(&spa);
        a.extend_from_slice(&[0; 6]);
        a.extend_from_slice(&tpa);
        a
    }

    fn set(linktype: u32, frame: &[u8]) -> BTreeSet<Term> {
        let mut out = Vec::new();
        assert!(terms(linktype, frame, &mut out));
        out.into_iter().collect()
    }

    fn eth(frame: &[u8]) -> BTreeSet<Term> {
        set(LINKTYPE_ETHERNET, frame)
    }

    fn expect(terms: &[Term]) -> BTreeSet<Term> {
        terms.iter().copied().collect()
    }

    #[test]
    fn ipv4_tcp_udp_sctp() {
        for (proto, port) in [
            (6, TcpPort as fn(u16) -> Term),
            (17, UdpPort),
            (132, SctpPort),
        ] {
            let f = ether(&[], 0x0800, &ipv4(5, proto, 0x4000, A, B, &l4(1234, 80)));
            assert_eq!(
                eth(&f),
                expect(&[
                    EtherType(0x0800),
                    Ipv4(A),
                    Ipv4(B),
                    IpProto(proto),
                    port(1234),
                    port(80)
                ])
            );
        }
        // ICMP: no ports.
        let f = ether(&[], 0x0800, &ipv4(5, 1, 0, A, B, &l4(8, 0)));
        assert_eq!(
            eth(&f),
            expect(&[EtherType(0x0800), Ipv4(A), Ipv4(B), IpProto(1)])
        );
    }

    #[test]
    fn ipv4_options_and_header_lengths_below_five() {
        // IHL 6: the ports follow the 24-byte header.
        let f = ether(&[], 0x0800, &ipv4(6, 6, 0, A, B, &l4(1, 2)));
        assert!(eth(&f).is_superset(&expect(&[TcpPort(1), TcpPort(2)])));
        // IHL 0: BPF reads the "ports" at the IP header's first bytes.
        let f = ether(&[], 0x0800, &ipv4(0, 17, 0, A, B, &l4(1, 2)));
        let version_ihl_tos = u16::from_be_bytes([f[14], f[15]]);
        let total_length = u16::from_be_bytes([f[16], f[17]]);
        assert!(eth(&f).is_superset(&expect(&[UdpPort(version_ihl_tos), UdpPort(total_length)])));
        // IHL 3: at byte 12, the source address.
        let f = ether(&[], 0x0800, &ipv4(3, 6, 0, A, B, &l4(1, 2)));
        assert!(eth(&f).is_superset(&expect(&[TcpPort(0x0a00), TcpPort(0x0001)])));
        // And the version nibble is not looked at.
        let mut f = ether(&[], 0x0800, &ipv4(5, 6, 0, A, B, &l4(1, 2)));
        f[14] = 0x05;
        assert!(eth(&f).is_superset(&expect(&[Ipv4(A), TcpPort(1), TcpPort(2)])));
    }

    #[test]
    fn ipv4_fragments() {
        // The first fragment (MF set, offset 0) has its ports.
        let f = ether(&[], 0x0800, &ipv4(5, 6, 0x2000, A, B, &l4(1, 2)));
        assert!(eth(&f).contains(&TcpPort(1)));
        // A later fragment: protocol and addresses, no ports.
        let f = ether(&[], 0x0800, &ipv4(5, 6, 0x2000 | 185, A, B, &l4(1, 2)));
        assert_eq!(
            eth(&f),
            expect(&[EtherType(0x0800), Ipv4(A), Ipv4(B), IpProto(6)])
        );
    }

    #[test]
    fn ipv6_and_its_fragment_header() {
        let f = ether(&[], 0x86dd, &ipv6(17, A6, B6, &l4(53, 5353)));
        assert_eq!(
            eth(&f),
            expect(&[
                EtherType(0x86dd),
                Ipv6(A6),
                Ipv6(B6),
                IpProto(17),
                UdpPort(53),
                UdpPort(5353)
            ])
        );
        // Next header 44: the fragment header's next header and the ports
        // after it (8 bytes on) are indexed too.
        let mut fragment = vec![6, 0, 0, 0, 0, 0, 0, 7];
        fragment.extend_from_slice(&l4(443, 50000));
        let f = ether(&[], 0x86dd, &ipv6(44, A6, B6, &fragment));
        assert_eq!(
            eth(&f),
            expect(&[
                EtherType(0x86dd),
                Ipv6(A6),
                Ipv6(B6),
                IpProto(44),
                IpProto(6),
                TcpPort(443),
                TcpPort(50000)
            ])
        );
        // Other extension headers are not followed (nor are they by `tcp`).
        let f = ether(&[], 0x86dd, &ipv6(0, A6, B6, &[6, 0, 0, 0, 0, 0, 0, 0]));
        assert_eq!(
            eth(&f),
            expect(&[EtherType(0x86dd), Ipv6(A6), Ipv6(B6), IpProto(0)])
        );
    }

    #[test]
    fn arp_and_rarp() {
        for ethertype in [0x0806, 0x8035] {
            let f = ether(&[], ethertype, &arp(A, B));
            assert_eq!(eth(&f), expect(&[EtherType(ethertype), Ipv4(A), Ipv4(B)]));
        }
    }

    #[test]
    fn vlan_and_qinq() {
        let inner = ipv4(5, 6, 0, A, B, &l4(1, 2));
        let f = ether(&[(0x8100, 0x2064)], 0x0800, &inner);
        assert_eq!(
            eth(&f),
            expect(&[
                EtherType(0x8100),
                Vlan(100),
                EtherType(0x0800),
                Ipv4(A),
                Ipv4(B),
                IpProto(6),
                TcpPort(1),
                TcpPort(2)
            ])
        );
        let f = ether(
            &[(0x88a8, 7), (0x8100, 0xf000 | 200), (0x9100, 300)],
            0x86dd,
            &ipv6(58, A6, B6, &[]),
        );
        assert_eq!(
            eth(&f),
            expect(&[
                EtherType(0x88a8),
                EtherType(0x8100),
                EtherType(0x9100),
                Vlan(7),
                Vlan(200),
                Vlan(300),
                EtherType(0x86dd),
                Ipv6(A6),
                Ipv6(B6),
                IpProto(58)
            ])
        );
        // ARP in a tag.
        let f = ether(&[(0x8100, 5)], 0x0806, &arp(A, B));
        assert_eq!(
            eth(&f),
            expect(&[
                EtherType(0x8100),
                Vlan(5),
                EtherType(0x0806),
                Ipv4(A),
                Ipv4(B)
            ])
        );
    }

    #[test]
    fn llc_frames_keep_only_their_length_field() {
        let f = ether(&[], 46, &[0x42, 0x42, 0x03, 0, 0, 0]);
        assert_eq!(eth(&f), expect(&[EtherType(46)]));
        let f = ether(&[(0x8100, 9)], 0x05dc, &[0xaa; 40]);
        assert_eq!(
            eth(&f),
            expect(&[EtherType(0x8100), Vlan(9), EtherType(0x05dc)])
        );
    }

    #[test]
    fn truncated_frames_lack_the_fields_they_do_not_hold() {
        let whole = ether(&[], 0x0800, &ipv4(5, 6, 0, A, B, &l4(1, 2)));
        assert_eq!(eth(&whole[..13]), expect(&[]));
        assert_eq!(eth(&whole[..14]), expect(&[EtherType(0x0800)]));
        // Source address whole, destination cut.
        assert_eq!(
            eth(&whole[..33]),
            expect(&[EtherType(0x0800), IpProto(6), Ipv4(A)])
        );
        assert_eq!(
            eth(&whole[..34]),
            expect(&[EtherType(0x0800), Ipv4(A), Ipv4(B), IpProto(6)])
        );
        // Source port whole, destination port cut.
        assert_eq!(
            eth(&whole[..37]),
            expect(&[EtherType(0x0800), Ipv4(A), Ipv4(B), IpProto(6), TcpPort(1)])
        );
        // The protocol byte is before the addresses.
        assert_eq!(eth(&whole[..24]), expect(&[EtherType(0x0800), IpProto(6)]));
        // A tag cut short.
        let tagged = ether(&[(0x8100, 100)], 0x0800, &[]);
        assert_eq!(eth(&tagged[..15]), expect(&[EtherType(0x8100)]));
        assert_eq!(eth(&tagged[..17]), expect(&[EtherType(0x8100), Vlan(100)]));
        let v6 = ether(&[], 0x86dd, &ipv6(6, A6, B6, &l4(1, 2)));
        // IPv6 cut inside the destination: its whole words, zero after
        // (libpcap can match a prefix on them).
        let mut first_12 = [0; 16];
        first_12[..12].copy_from_slice(&B6[..12]);
        assert_eq!(
            eth(&v6[..53]),
            expect(&[EtherType(0x86dd), IpProto(6), Ipv6(A6), Ipv6(first_12)])
        );
        assert_eq!(
            eth(&v6[..41]),
            expect(&[EtherType(0x86dd), IpProto(6), Ipv6(A6)])
        );
        // Empty frames are parsed, and hold nothing.
        assert_eq!(eth(&[]), expect(&[]));
        assert_eq!(set(LINKTYPE_RAW, &[]), expect(&[]));
    }

    #[test]
    fn raw_ip_link_types() {
        let v4 = ipv4(5, 17, 0, A, B, &l4(53, 1000));
        let v4_terms = expect(&[
            EtherType(0x0800),
            Ipv4(A),
            Ipv4(B),
            IpProto(17),
            UdpPort(53),
            UdpPort(1000),
        ]);
        let v6 = ipv6(6, A6, B6, &l4(22, 2000));
        let v6_terms = expect(&[
            EtherType(0x86dd),
            Ipv6(A6),
            Ipv6(B6),
            IpProto(6),
            TcpPort(22),
            TcpPort(2000),
        ]);
        for linktype in [LINKTYPE_RAW, DLT_RAW, DLT_RAW_OPENBSD] {
            assert_eq!(set(linktype, &v4), v4_terms);
            assert_eq!(set(linktype, &v6), v6_terms);
            // Neither version: libpcap's `ip` and `ip6` are false.
            let mut other = v4.clone();
            other[0] = 0x55;
            assert_eq!(set(linktype, &other), expect(&[]));
        }
        // No version test on the single-version link types.
        let mut v4_as_v6 = v4.clone();
        v4_as_v6[0] = 0x65;
        assert_eq!(set(LINKTYPE_IPV4, &v4_as_v6), v4_terms);
        assert_eq!(set(LINKTYPE_IPV6, &v6), v6_terms);
    }

    #[test]
    fn other_link_types_are_not_parsed() {
        let mut out = Vec::new();
        for linktype in [0, 105, 113, 127, 276] {
            assert!(!terms(linktype, &[0; 64], &mut out));
            assert!(!parses(linktype));
        }
        assert!(out.is_empty());
    }

    /// xorshift64*: deterministic frames without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len() as u64) as usize]
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    /// A network-layer packet with fields drawn from small pools (so the
    /// filters' values are often there) and sometimes at random.
    fn random_network(rng: &mut Rng, ethertype: u16) -> Vec<u8> {
        // [0, 80, 0, 53]: ports where an IHL of 3 or 4 points.
        let v4 = |rng: &mut Rng| {
            if rng.chance(80) {
                rng.pick(&[A, B, [0, 80, 0, 53]])
            } else {
                (rng.next() as u32).to_be_bytes()
            }
        };
        let v6 = |rng: &mut Rng| {
            if rng.chance(80) {
                rng.pick(&[A6, B6])
            } else {
                (u128::from(rng.next()) << 64 | u128::from(rng.next())).to_be_bytes()
            }
        };
        let port = |rng: &mut Rng| {
            if rng.chance(70) {
                rng.pick(&[80, 53])
            } else {
                rng.next() as u16
            }
        };
        let proto = |rng: &mut Rng| {
            let r = rng.next() as u8;
            rng.pick(&[6, 17, 132, 1, 44, 58, 0, r])
        };
        let transport = |rng: &mut Rng| {
            let mut t = l4(port(rng), port(rng));
            // Ports that also sit where a short IHL or a fragment header points.
            if rng.chance(30) {
                t.splice(0..0, l4(port(rng), port(rng)));
            }
            t
        };
        match ethertype {
            0x0800 => {
                let ihl = if rng.chance(70) {
                    5
                } else {
                    rng.below(16) as u8
                };
                let r = rng.next() as u16;
                let frag = rng.pick(&[0, 0x4000, 0x2000, 0x2000 | 3, 0x1fff, r]);
                let p = proto(rng);
                let mut packet = ipv4(ihl, p, frag, v4(rng), v4(rng), &transport(rng));
                // The identification: ports where an IHL of 1 points.
                packet[4..6].copy_from_slice(&port(rng).to_be_bytes());
                packet
            }
            0x86dd => {
                let next = proto(rng);
                let mut payload = Vec::new();
                if next == 44 || rng.chance(10) {
                    payload.extend_from_slice(&[proto(rng), 0, 0, rng.below(2) as u8, 0, 0, 0, 1]);
                }
                payload.extend_from_slice(&transport(rng));
                ipv6(next, v6(rng), v6(rng), &payload)
            }
            0x0806 | 0x8035 => arp(v4(rng), v4(rng)),
            // LLC: DSAP and SSAP of STP, or of IPX (Novell raw 802.3).
            ..=1500 if rng.chance(50) => [0x42, 0x42, 3].to_vec(),
            ..=1500 if rng.chance(50) => [0xff, 0xff, 0, 0].to_vec(),
            _ => (0..rng.below(60)).map(|_| rng.next() as u8).collect(),
        }
    }

    fn random_ethernet(rng: &mut Rng) -> Vec<u8> {
        let tags: Vec<(u16, u16)> = (0..rng.pick(&[0, 0, 1, 1, 2, 3]))
            .map(|_| {
                let tpid = rng.pick(&[0x8100, 0x88a8, 0x9100]);
                let vid = if rng.chance(70) {
                    rng.pick(&[100, 200])
                } else {
                    rng.below(4096) as u16
                };
                (tpid, (rng.below(16) as u16) << 12 | vid)
            })
            .collect();
        let r = rng.next() as u16;
        let ethertype = rng.pick(&[
            0x0800, 0x0800, 0x86dd, 0x0806, 0x8035, 0x8100, 0x8137, 46, r,
        ]);
        ether(&tags, ethertype, &random_network(rng, ethertype))
    }

    fn random_raw(rng: &mut Rng) -> Vec<u8> {
        let ethertype = rng.pick(&[0x0800, 0x86dd]);
        let mut f = random_network(rng, ethertype);
        if rng.chance(10) {
            f[0] = rng.next() as u8;
        }
        f
    }

    /// Damage: a few bytes overwritten, then sometimes a cut anywhere.
    fn damage(rng: &mut Rng, mut f: Vec<u8>) -> Vec<u8> {
        if !f.is_empty() && rng.chance(30) {
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(f.len() as u64) as usize;
                let r = rng.next() as u8;
                f[at] = rng.pick(&[0x08, 0x00, 0x86, 0xdd, 0x81, 0x2c, 0x06, 0x11, 0x45, r]);
            }
        }
        if rng.chance(30) {
            f.truncate(rng.below(f.len() as u64 + 1) as usize);
        }
        f
    }

    /// What a frame a filter matches must hold, for the planner to find it.
    #[derive(Debug, Clone)]
    enum Need {
        /// One of these terms.
        OneOf(Vec<Term>),
        /// An IPv6 address with these first 2 bytes (a range scan).
        Ipv6Prefix16([u8; 2]),
    }

    impl Need {
        fn met_by(&self, terms: &[Term]) -> bool {
            match self {
                Need::OneOf(wanted) => wanted.iter().any(|t| terms.contains(t)),
                Need::Ipv6Prefix16(prefix) => terms
                    .iter()
                    .any(|t| matches!(t, Ipv6(a) if a[..2] == prefix[..])),
            }
        }
    }

    /// Filters, each with what a frame it matches must hold (all of them).
    type Filters = Vec<(&'static str, Vec<Need>)>;

    type Generator = fn(&mut Rng) -> Vec<u8>;

    /// The property the index rests on, checked against libpcap itself: for
    /// frames built and damaged at random, whenever a filter compiled by
    /// libpcap matches, the terms the planner will look up for it are there.
    #[test]
    fn every_frame_libpcap_matches_has_the_terms() {
        let one = |terms: &[Term]| Need::OneOf(terms.to_vec());
        let any_port = |p| one(&[TcpPort(p), UdpPort(p), SctpPort(p)]);
        let llc: Vec<Term> = (0..=1500).map(EtherType).collect();
        let common: Filters = vec![
            ("host 10.0.0.1", vec![one(&[Ipv4(A)])]),
            ("src host 10.0.0.2", vec![one(&[Ipv4(B)])]),
            ("ip6 host fd00::1", vec![one(&[Ipv6(A6)])]),
            ("net fd00::/16", vec![Need::Ipv6Prefix16([0xfd, 0])]),
            ("port 80", vec![any_port(80)]),
            ("tcp port 80", vec![one(&[TcpPort(80)])]),
            ("udp port 53", vec![one(&[UdpPort(53)])]),
            ("sctp port 80", vec![one(&[SctpPort(80)])]),
            (
                "ip6 and port 53",
                vec![one(&[EtherType(0x86dd)]), any_port(53)],
            ),
            ("tcp", vec![one(&[IpProto(6)])]),
            ("udp", vec![one(&[IpProto(17)])]),
            ("ip proto 44", vec![one(&[IpProto(44)])]),
            ("ip6 proto 58", vec![one(&[IpProto(58)])]),
            ("ip", vec![one(&[EtherType(0x0800)])]),
            ("ip6", vec![one(&[EtherType(0x86dd)])]),
            (
                "tcp and host 10.0.0.1 and port 53",
                vec![one(&[IpProto(6)]), one(&[Ipv4(A)]), any_port(53)],
            ),
        ];
        let mut ethernet_only: Filters = vec![
            ("arp", vec![one(&[EtherType(0x0806)])]),
            ("rarp", vec![one(&[EtherType(0x8035)])]),
            // LLC: the type field is a length, at most 1500.
            ("stp", vec![one(&llc)]),
            ("vlan and stp", vec![one(&llc)]),
            ("ipx", vec![one(&[&llc[..], &[EtherType(0x8137)]].concat())]),
            (
                "vlan",
                vec![one(&[
                    EtherType(0x8100),
                    EtherType(0x88a8),
                    EtherType(0x9100),
                ])],
            ),
            ("vlan 100", vec![one(&[Vlan(100)])]),
            (
                "vlan 100 and vlan 200",
                vec![one(&[Vlan(100)]), one(&[Vlan(200)])],
            ),
            ("vlan and host 10.0.0.1", vec![one(&[Ipv4(A)])]),
            ("vlan and vlan and port 80", vec![any_port(80)]),
            (
                "vlan and vlan and vlan and ip6 host fd00::2",
                vec![one(&[Ipv6(B6)])],
            ),
            (
                "vlan 200 and udp",
                vec![one(&[Vlan(200)]), one(&[IpProto(17)])],
            ),
        ];
        ethernet_only.extend(common.iter().cloned());
        let cases: [(u32, Generator, &Filters); 5] = [
            (LINKTYPE_ETHERNET, random_ethernet, &ethernet_only),
            (LINKTYPE_RAW, random_raw, &common),
            (DLT_RAW, random_raw, &common),
            (LINKTYPE_IPV4, random_raw, &common),
            (LINKTYPE_IPV6, random_raw, &common),
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for (linktype, generate, filters) in cases {
            let programs: Vec<_> = filters
                .iter()
                .filter_map(|(expr, groups)| {
                    // "rejects all packets" on raw IPv4 for ip6 filters.
                    let program = BpfProgram::compile_offline(expr, linktype).ok()?;
                    Some((expr, groups, program, 0u32))
                })
                .collect();
            let mut programs = programs;
            let mut out = Vec::new();
            for _ in 0..100_000 {
                let frame = generate(&mut rng);
                let frame = damage(&mut rng, frame);
                out.clear();
                assert!(terms(linktype, &frame, &mut out));
                for (expr, groups, program, hits) in &mut programs {
                    if !program.matches(&frame, frame.len() as u32) {
                        continue;
                    }
                    *hits += 1;
                    for need in groups.iter() {
                        assert!(
                            need.met_by(&out),
                            "linktype {linktype}: `{expr}` matches {frame:02x?}, terms {out:?} lack {need:?}"
                        );
                    }
                }
            }
            // The property is not vacuous: each filter matched often.
            for (expr, _, _, hits) in &programs {
                assert!(
                    *hits >= 20,
                    "linktype {linktype}: `{expr}` matched only {hits} frames"
                );
            }
        }
    }
}
