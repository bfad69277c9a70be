//! A symmetric flow hash over Ethernet frames, the software counterpart of
//! the kernel's `PACKET_FANOUT_HASH`: both directions of a flow hash alike,
//! and every fragment of an IP datagram hashes like its other fragments
//! (addresses and protocol only), so a flow stays on one queue and one lane.
//! Frames that are not IP hash by their MAC addresses.

const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

/// Hashes the flow an Ethernet frame belongs to. Never fails: a frame too
/// short or malformed to parse hashes by whatever prefix it has.
pub fn flow_hash(frame: &[u8]) -> u32 {
    if frame.len() < 14 {
        return mix(0, frame.iter().fold(0u64, |h, b| (h << 8) ^ u64::from(*b)));
    }
    let (a, b) = (&frame[0..6], &frame[6..12]);
    let macs = symmetric(read_u48(a), read_u48(b));
    let mut ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let mut offset = 14;
    while (ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD) && frame.len() >= offset + 4 {
        ethertype = u16::from_be_bytes([frame[offset + 2], frame[offset + 3]]);
        offset += 4;
    }
    let l3 = &frame[offset..];
    match ethertype {
        ETH_P_IP => ipv4(l3).unwrap_or(macs),
        ETH_P_IPV6 => ipv6(l3).unwrap_or(macs),
        _ => macs,
    }
}

fn ipv4(packet: &[u8]) -> Option<u32> {
    let ihl = usize::from(*packet.first()? & 0x0f) * 4;
    if ihl < 20 || packet.len() < ihl {
        return None;
    }
    let proto = packet[9];
    let src = u32::from_be_bytes(packet[12..16].try_into().ok()?);
    let dst = u32::from_be_bytes(packet[16..20].try_into().ok()?);
    let fragment = u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0;
    let addresses = symmetric(u64::from(src), u64::from(dst)) ^ u32::from(proto);
    if fragment {
        return Some(addresses);
    }
    Some(with_ports(addresses, proto, &packet[ihl..]))
}

fn ipv6(packet: &[u8]) -> Option<u32> {
    if packet.len() < 40 {
        return None;
    }
    let mut proto = packet[6];
    let fold = |bytes: &[u8]| bytes.chunks(8).fold(0u64, |h, c| h ^ read_be(c));
    let addresses = symmetric(fold(&packet[8..24]), fold(&packet[24..40]));
    let mut rest = &packet[40..];
    // Hop-by-hop, routing and destination options headers share one layout;
    // a fragment header means only the addresses may be used.
    loop {
        match proto {
            0 | 43 | 60 if rest.len() >= 8 => {
                let len = (usize::from(rest[1]) + 1) * 8;
                proto = rest[0];
                rest = rest.get(len..)?;
            }
            44 => return Some(addresses ^ 44),
            _ => break,
        }
    }
    Some(with_ports(addresses ^ u32::from(proto), proto, rest))
}

fn with_ports(addresses: u32, proto: u8, l4: &[u8]) -> u32 {
    match proto {
        // TCP, UDP, SCTP, UDP-Lite: ports are the first four bytes.
        6 | 17 | 132 | 136 if l4.len() >= 4 => {
            let sport = u16::from_be_bytes([l4[0], l4[1]]);
            let dport = u16::from_be_bytes([l4[2], l4[3]]);
            mix(
                u64::from(addresses),
                u64::from(sport.min(dport)) << 16 | u64::from(sport.max(dport)),
            )
        }
        _ => addresses,
    }
}

fn symmetric(a: u64, b: u64) -> u32 {
    mix(a.min(b), a.max(b))
}

fn mix(a: u64, b: u64) -> u32 {
    // Two rounds of a 64-bit multiply-xorshift (splitmix64's finaliser).
    let mut h = a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b;
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h ^ (h >> 32)) as u32
}

fn read_u48(bytes: &[u8]) -> u64 {
    read_be(bytes)
}

fn read_be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |h, b| (h << 8) | u64::from(*b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, frag: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        let mut ip = vec![0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0];
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        ip.extend_from_slice(&sport.to_be_bytes());
        ip.extend_from_slice(&dport.to_be_bytes());
        ip.extend_from_slice(&[0, 8, 0, 0]);
        f.extend_from_slice(&ip);
        f
    }

    #[test]
    fn both_directions_hash_alike() {
        let a = udp4([10, 0, 0, 1], [10, 0, 0, 2], 1000, 53, 0);
        let b = udp4([10, 0, 0, 2], [10, 0, 0, 1], 53, 1000, 0);
        assert_eq!(flow_hash(&a), flow_hash(&b));
        let c = udp4([10, 0, 0, 1], [10, 0, 0, 2], 1001, 53, 0);
        assert_ne!(flow_hash(&a), flow_hash(&c));
    }

    #[test]
    fn fragments_of_one_datagram_hash_alike() {
        let first = udp4([10, 0, 0, 1], [10, 0, 0, 2], 1000, 53, 0x2000);
        let later = udp4([10, 0, 0, 1], [10, 0, 0, 2], 7, 7, 0x00b9);
        assert_eq!(flow_hash(&first), flow_hash(&later));
    }

    #[test]
    fn garbage_never_panics() {
        for len in 0..80 {
            let frame: Vec<u8> = (0..len).map(|i| (i * 37 + 0x81) as u8).collect();
            flow_hash(&frame);
            let mut v = frame.clone();
            if v.len() > 13 {
                v[12] = 0x86;
                v[13] = 0xdd;
                flow_hash(&v);
                v[12] = 0x08;
                v[13] = 0x00;
                flow_hash(&v);
            }
        }
    }
}
