//! A term: one value of one field that a tcpdump filter can test.

/// One indexed value. The derived order (kind first, then value in network
/// byte order) keeps a slice's terms of one kind together and numerically
/// sorted, so `net 10.0.0.0/8` or `portrange 1-1024` is a range scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Term {
    /// A link-layer type field: the outer one and the one after each VLAN
    /// tag (`ether proto`, `ip`, `ip6`, `arp`, `vlan` itself).
    EtherType(u16),
    /// The 12-bit id of any VLAN tag in the frame (`vlan N`).
    Vlan(u16),
    /// An IPv4 address: source or destination of an IPv4 header, sender or
    /// target of an ARP/RARP packet (`host`, `net`, `src`, `dst`).
    Ipv4([u8; 4]),
    /// An IPv6 address, source or destination.
    Ipv6([u8; 16]),
    /// An IP protocol number: IPv4's protocol field, IPv6's next header
    /// (and the one after a fragment header), as `ip proto`, `tcp`, `icmp`.
    IpProto(u8),
    /// A TCP port, source or destination.
    TcpPort(u16),
    /// A UDP port, source or destination.
    UdpPort(u16),
    /// An SCTP port, source or destination.
    SctpPort(u16),
}
