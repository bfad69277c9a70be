"""Frames built by hand for the tests and senders: Ethernet, IPv4, UDP.

One builder for every test that needs a plain UDP frame (`udp_frame`), and
its parts for those that need something else (fragments, say). Checksums are
left at zero: nothing on the way checks them.
"""

from __future__ import annotations

import struct

# The addresses a frame gets unless told otherwise: from 02:00:00:00:00:<src>
# and 10.0.0.<src>, to 02:00:00:00:00:c8 and 10.0.0.200.
MAC_DST = b"\x02\0\0\0\0\xc8"
IP_DST = bytes([10, 0, 0, 200])


def ethernet(
    payload: bytes,
    src: bytes,
    dst: bytes = MAC_DST,
    ethertype: int = 0x0800,
    vlan: int | None = None,
) -> bytes:
    """An Ethernet frame; `vlan`: an 802.1Q tag with that TCI."""
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    return dst + src + tag + struct.pack("!H", ethertype) + payload


def ipv4(
    payload: bytes, src: bytes, dst: bytes = IP_DST, proto: int = 17, ident: int = 1, frag: int = 0
) -> bytes:
    """An IPv4 packet without options; `frag`: the flags and fragment offset field."""
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, 64, proto, 0, src, dst
    )
    return header + payload


def udp(payload: bytes, sport: int, dport: int) -> bytes:
    """A UDP datagram."""
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def udp_frame(
    payload: bytes,
    dport: int = 9000,
    sport: int = 1234,
    src: int = 1,
    vlan: int | None = None,
    *,
    ident: int = 1,
    ip_src: bytes | None = None,
    ip_dst: bytes = IP_DST,
    mac_src: bytes | None = None,
    mac_dst: bytes = MAC_DST,
) -> bytes:
    """An Ethernet/IPv4/UDP frame carrying `payload`: 42 bytes of headers
    (46 with `vlan`). From host `src` (10.0.0.src, 02:00:00:00:00:src)
    unless `ip_src`/`mac_src` say otherwise."""
    ip_src = bytes([10, 0, 0, src]) if ip_src is None else ip_src
    mac_src = bytes([2, 0, 0, 0, 0, src]) if mac_src is None else mac_src
    packet = ipv4(udp(payload, sport, dport), ip_src, ip_dst, ident=ident)
    return ethernet(packet, mac_src, mac_dst, vlan=vlan)
