#!/usr/bin/env python3
"""Generates a capture file of mixed traffic for the demo, tests and benchmarks.

Frames: IPv4 and IPv6, TCP, UDP (DNS-sized and bulk), ICMP, ARP, 802.1Q
VLAN-tagged frames; sizes either a realistic mix (IMIX: 7:4:1 of 64, 594 and
1518 bytes, plus some of every size between) or fixed. Flows are numerous and
each frame carries its sequence number in the payload, so a reader can check
order within a flow. Timestamps rise by a fixed step from a fixed start, so
the file is the same every run for the same arguments.
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

from fastcapa_support.pcapref import write_capture

START_US = 1_700_000_000_000_000  # 2023-11-14T22:13:20Z


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes, vlan: int | None) -> bytes:
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    return dst + src + tag + struct.pack("!H", ethertype) + payload


def ipv4(src: int, dst: int, proto: int, payload: bytes, ident: int) -> bytes:
    header = struct.pack(
        "!BBHHHBBHII", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0x4000, 64, proto, 0, src, dst
    )
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def ipv6(src: bytes, dst: bytes, proto: int, payload: bytes) -> bytes:
    return struct.pack("!IHBB", 0x60000000, len(payload), proto, 64) + src + dst + payload


def frame_for(seq: int, flow: int, size: int, rng: random.Random) -> bytes:
    """One frame of `flow`, padded to about `size` bytes, carrying `seq`."""
    mac_a = bytes([2, 0, 0, 0, flow >> 8 & 0xFF, flow & 0xFF])
    mac_b = bytes([2, 0, 0, 1, 0, 1])
    kind = flow % 10
    vlan = 100 + flow % 7 if kind == 9 else None
    marker = struct.pack("!4sII", b"FCAP", flow, seq)
    if kind == 8:  # ARP request
        arp = struct.pack(
            "!HHBBH6s4s6s4s",
            1,
            0x0800,
            6,
            4,
            1,
            mac_a,
            bytes([10, 0, 0, flow & 0xFF]),
            b"\0" * 6,
            bytes([10, 0, 0, 1]),
        )
        return ethernet(b"\xff" * 6, mac_a, 0x0806, arp + marker, vlan)
    src, dst = 0x0A000000 | flow, 0x0A640001
    sport, dport = 1024 + flow % 60000, (53, 80, 443, 9000)[flow % 4]
    pad = bytes(rng.getrandbits(8) for _ in range(max(0, size - 14 - 40 - len(marker) - 20)))
    body = marker + pad
    if kind in (6, 7):  # IPv6 UDP
        src6 = b"\xfd" + b"\0" * 11 + struct.pack("!I", flow)
        dst6 = b"\xfd" + b"\0" * 14 + b"\1"
        udp = struct.pack("!HHHH", sport, dport, 8 + len(body), 0) + body
        return ethernet(mac_b, mac_a, 0x86DD, ipv6(src6, dst6, 17, udp), vlan)
    if kind == 5:  # ICMP echo
        icmp = struct.pack("!BBHHH", 8, 0, 0, flow & 0xFFFF, seq & 0xFFFF) + body
        icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
        return ethernet(mac_b, mac_a, 0x0800, ipv4(src, dst, 1, icmp, seq), vlan)
    if kind in (0, 1, 2):  # UDP
        udp = struct.pack("!HHHH", sport, dport, 8 + len(body), 0) + body
        return ethernet(mac_b, mac_a, 0x0800, ipv4(src, dst, 17, udp, seq), vlan)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x18, 65535, 0, 0) + body
    return ethernet(mac_b, mac_a, 0x0800, ipv4(src, dst, 6, tcp, seq), vlan)


def imix_size(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.5:
        return 64
    if roll < 0.8:
        return 594
    if roll < 0.9:
        return 1518
    return rng.randint(64, 1518)


def generate(path: str, packets: int, flows: int, size: int | None, seed: int) -> None:
    write_capture(path, records(packets, flows, size, seed))


def records(packets: int, flows: int, size: int | None, seed: int) -> Iterator[tuple[int, bytes]]:
    """The generated (time µs, frame) records, in file order."""
    rng = random.Random(seed)
    sequence = [0] * flows
    for i in range(packets):
        flow = rng.randrange(flows)
        frame = frame_for(sequence[flow], flow, size or imix_size(rng), rng)
        sequence[flow] += 1
        yield START_US + i * 10, frame


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=5000)
    parser.add_argument("--flows", type=int, default=200)
    parser.add_argument("--size", type=int, help="every frame this many bytes (default: IMIX)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    generate(args.output, args.packets, args.flows, args.size, args.seed)
    print(f"wrote {args.packets} frames to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
