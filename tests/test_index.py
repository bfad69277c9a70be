"""`fastcapa index` and the dump's use of it, against real brokers.

The index only decides what a dump need not read: a dump that uses it must
write the same file, byte for byte, as the same query with `--no-index`,
whatever the filter (one the planner understands, one it does not, one the
topic's frames make awkward: VLAN and QinQ tags, IPv4 fragments, IPv6
extension headers, ARP, truncated and malformed frames) and whatever the
window; and a selective query must read less. Around that: an indexer
SIGKILLed mid-topic and restarted, two members of one group splitting the
partitions and one taking over when the other dies, the lag while a replay
writes, bad input, the metrics, and a partition leader killed in a
three-node cluster under an indexer and a dump.

Traffic comes from this file's own frame builder (below), written to a pcap
file and replayed with `fastcapa -r`; the reference for what a filter
selects is libpcap itself (pcap_compile and pcap_offline_filter through
ctypes), run on the records as written.

FASTCAPA_INDEX_EXAMPLES sets the property test's examples (default 25).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import ipaddress
import itertools
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fastcapa_support import processes
from fastcapa_support.capgen import checksum
from fastcapa_support.fixtures import wait_topic_ready
from fastcapa_support.kafka_read import watermarks
from fastcapa_support.pcapref import read_capture, write_capture
from fastcapa_support.runner import Run, assert_clean_failure, run_fastcapa, start_fastcapa

pytestmark = pytest.mark.kafka

KEEP = {"retention.ms": "-1"}  # the captures are dated in the past
START_US = 1_700_000_000_000_000  # 2023-11-14T22:13:20Z
EXAMPLES = int(os.environ.get("FASTCAPA_INDEX_EXAMPLES", "25"))
STATS_KEYS = {
    "read", "read_bytes", "unparsed", "indexed", "slices", "index_bytes", "pending",
    "commits", "partitions", "lag_records", "lag_us", "read_per_s", "time", "final",
}  # fmt: skip


# ---------------------------------------------------------------- libpcap, the reference


class _Header(ctypes.Structure):
    _fields_ = [
        ("tv_sec", ctypes.c_long),
        ("tv_usec", ctypes.c_long),
        ("caplen", ctypes.c_uint32),
        ("len", ctypes.c_uint32),
    ]


class _Program(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


_pcap = ctypes.CDLL(ctypes.util.find_library("pcap") or "libpcap.so.0.8")
_pcap.pcap_open_dead.restype = ctypes.c_void_p
_pcap.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
_pcap.pcap_compile.argtypes = [
    ctypes.c_void_p,
    ctypes.POINTER(_Program),
    ctypes.c_char_p,
    ctypes.c_int,
    ctypes.c_uint32,
]
_pcap.pcap_offline_filter.argtypes = [
    ctypes.POINTER(_Program),
    ctypes.POINTER(_Header),
    ctypes.c_char_p,
]
_pcap.pcap_freecode.argtypes = [ctypes.POINTER(_Program)]
_pcap.pcap_geterr.argtypes = [ctypes.c_void_p]
_pcap.pcap_geterr.restype = ctypes.c_char_p
_pcap.pcap_close.argtypes = [ctypes.c_void_p]

# A record as written to the capture file: (time µs, frame as captured, length on the wire).
Rec = tuple[int, bytes, int]


def bpf_select(expr: str | None, records: list[Rec]) -> list[Rec] | None:
    """The records libpcap's filter `expr` matches (Ethernet, as the dump
    compiles it), in order; None if libpcap refuses the filter."""
    if expr is None:
        return list(records)
    handle = _pcap.pcap_open_dead(1, 262_144)
    program = _Program()
    try:
        if _pcap.pcap_compile(handle, ctypes.byref(program), expr.encode(), 1, 0xFFFFFFFF) != 0:
            return None
        header = _Header()
        selected = []
        for ts, frame, wire in records:
            header.tv_sec, header.tv_usec = divmod(ts, 1_000_000)
            header.caplen, header.len = len(frame), wire
            if _pcap.pcap_offline_filter(ctypes.byref(program), ctypes.byref(header), frame):
                selected.append((ts, frame, wire))
        _pcap.pcap_freecode(ctypes.byref(program))
        return selected
    finally:
        _pcap.pcap_close(handle)


# ---------------------------------------------------------------- frames


V4 = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.1.7", "10.1.2.3", "192.168.7.9", "172.16.5.4"]
V6 = ["fd00::1", "fd00::2", "fd00:1::9", "2001:db8::5", "fe80::1"]
NEEDLE = "198.51.100.77"  # in NEEDLES frames of a mixed capture, nowhere else
NEEDLES = 6
ABSENT = ["10.0.0.99", "203.0.113.1", "2001:db8::dead"]
NETS = [
    "10.0.0.0/24", "10.0.0.0/8", "10.1.0.0/16", "192.168.7.0/24", "172.16.0.0/12",
    "198.51.100.0/24", "fd00::/16", "2001:db8::/32", "fe80::/10", "10.0.0.2/31",
]  # fmt: skip
SERVICES = [22, 53, 80, 443, 2905, 5060, 8080]
EPHEMERAL = range(40000, 40008)
VLANS = [10, 20, 100, 4094]
MACS = [bytes([2, 0, 0, 0, 0, i]) for i in range(1, 7)]
TCP_FLAGS = [0x02, 0x12, 0x10, 0x18, 0x11, 0x04]


def _addr(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def ether(dst: bytes, src: bytes, ethertype: int, payload: bytes, tags=()) -> bytes:
    """An Ethernet frame; `tags`: (TPID, VLAN id) pairs, outermost first."""
    head = dst + src + b"".join(struct.pack("!HH", tpid, vid) for tpid, vid in tags)
    return head + struct.pack("!H", ethertype) + payload


def ipv4(
    src: str, dst: str, proto: int, payload: bytes, *, ident: int = 1, frag: int = 0x4000,
    options: bytes = b"", first: int | None = None,
) -> bytes:  # fmt: skip
    """`frag`: flags and fragment offset (0x4000: don't fragment; 0x2000: more
    fragments); `first`: the version/IHL byte, to make it wrong."""
    vihl = first if first is not None else 0x40 | (5 + len(options) // 4)
    header = struct.pack(
        "!BBHHHBBH4s4s", vihl, 0, 20 + len(options) + len(payload), ident & 0xFFFF, frag, 64,
        proto, 0, _addr(src), _addr(dst),
    ) + options  # fmt: skip
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def ipv6(src: str, dst: str, nh: int, payload: bytes) -> bytes:
    return (
        struct.pack("!IHBB", 0x60000000, len(payload), nh, 64) + _addr(src) + _addr(dst) + payload
    )


def tcp(sport: int, dport: int, flags: int, data: bytes) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, 5 << 4, flags, 65535, 0, 0) + data


def udp(sport: int, dport: int, data: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


def sctp(sport: int, dport: int, data: bytes) -> bytes:
    chunk = struct.pack("!BBH", 0, 3, 4 + len(data)) + data  # DATA
    return struct.pack("!HHII", sport, dport, 0xC0FFEE, 0) + chunk


def icmp(kind: int, data: bytes) -> bytes:
    body = struct.pack("!BBHHH", kind, 0, 0, 7, 1) + data
    return body[:2] + struct.pack("!H", checksum(body)) + body[4:]


def arp(op: int, sha: bytes, spa: str, tpa: str) -> bytes:
    return struct.pack(
        "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, sha, _addr(spa), b"\0" * 6, _addr(tpa)
    )


class Traffic:
    """A random mix of frames over the small vocabulary above."""

    def __init__(self, rng: random.Random, pad: int = 0):
        self.rng = rng
        self.pad = pad

    def data(self) -> bytes:
        r = self.rng
        return r.randbytes(r.choice((0, 6, 40, 200)) + self.pad)

    def ports(self) -> tuple[int, int]:
        r = self.rng
        pair = (r.choice(SERVICES), r.choice(EPHEMERAL))
        return pair if r.random() < 0.5 else pair[::-1]

    def tags(self) -> tuple[tuple[int, int], ...]:
        r = self.rng
        roll = r.random()
        if roll < 0.14:
            return ((0x8100, r.choice(VLANS)),)
        if roll < 0.19:
            return ((0x88A8, r.choice(VLANS)), (0x8100, r.choice(VLANS)))  # QinQ
        if roll < 0.21:
            return ((0x8100, r.choice(VLANS)), (0x8100, r.choice(VLANS)))
        return ()

    def l4(self, proto: int) -> bytes:
        sport, dport = self.ports()
        if proto == 6:
            return tcp(sport, dport, self.rng.choice(TCP_FLAGS), self.data())
        if proto == 17:
            return udp(sport, dport, self.data())
        if proto == 132:
            return sctp(sport, dport, self.data())
        if proto in (1, 58):
            return icmp(8 if proto == 1 else 128, self.data())
        return struct.pack("!HH", 0, 0x0800) + self.data()  # GRE

    def frame(self) -> tuple[bytes, int]:
        """One frame and its length on the wire (longer when truncated)."""
        r = self.rng
        roll = r.random()
        if roll < 0.04:  # truncated: any frame, cut short
            whole, _ = self.frame()
            return whole[: r.randint(1, max(1, len(whole) - 1))], len(whole)
        if roll < 0.06:  # odd
            return self.odd(), -1
        return self.regular(), -1

    def regular(self) -> bytes:
        r = self.rng
        dst, src = r.sample(MACS, 2)
        tags = self.tags()
        kind = r.choices(
            ["v4", "v6", "arp", "frag-first", "frag-later", "v4-options", "v6-hbh", "v6-frag"],
            weights=[55, 25, 5, 2, 3, 3, 3, 2],
        )[0]
        if kind == "arp":
            a, b = r.sample(V4, 2)
            return ether(b"\xff" * 6 if r.random() < 0.5 else dst, src, 0x0806,
                         arp(r.choice((1, 2)), src, a, b), tags)  # fmt: skip
        if kind.startswith("v6"):
            a, b = r.sample(V6, 2)
            proto = r.choices([6, 17, 132, 58], weights=[40, 35, 10, 15])[0]
            if kind == "v6-hbh":  # hop-by-hop options, then the transport
                proto = r.choice((6, 17))
                ext = struct.pack("!BB", proto, 0) + b"\x01\x04\0\0\0\0"
                return ether(dst, src, 0x86DD, ipv6(a, b, 0, ext + self.l4(proto)), tags)
            if kind == "v6-frag":  # a fragment header; first or later fragment
                later = r.random() < 0.5
                ext = struct.pack("!BBHI", 17, 0, (185 << 3) if later else 1, r.getrandbits(32))
                body = r.randbytes(48) if later else self.l4(17)
                return ether(dst, src, 0x86DD, ipv6(a, b, 44, ext + body), tags)
            return ether(dst, src, 0x86DD, ipv6(a, b, proto, self.l4(proto)), tags)
        a, b = r.sample(V4, 2)
        proto = r.choices([6, 17, 132, 1, 47], weights=[40, 30, 10, 15, 5])[0]
        ident = r.getrandbits(16)
        if kind == "frag-first":
            proto = r.choice((6, 17))
            payload = ipv4(a, b, proto, self.l4(proto), ident=ident, frag=0x2000)
        elif kind == "frag-later":  # bytes where ports would be: 80 and 443
            body = struct.pack("!HH", 80, 443) + r.randbytes(40)
            payload = ipv4(a, b, r.choice((6, 17)), body, ident=ident,
                           frag=r.choice((0x2000, 0)) | r.randint(1, 185))  # fmt: skip
        elif kind == "v4-options":
            options = b"\x01" * 4 * r.randint(1, 3)  # NOPs, IHL 6 to 8
            payload = ipv4(a, b, proto, self.l4(proto), ident=ident, options=options)
        else:
            payload = ipv4(a, b, proto, self.l4(proto), ident=ident)
        return ether(dst, src, 0x0800, payload, tags)

    def odd(self) -> bytes:
        r = self.rng
        dst, src = r.sample(MACS, 2)
        a, b = r.sample(V4, 2)
        kind = r.randrange(6)
        if kind == 0:  # shorter than an Ethernet header
            return r.randbytes(r.randint(1, 13))
        if kind == 1:  # an EtherType nobody parses
            return ether(dst, src, 0x88B5, r.randbytes(46))
        if kind == 2:  # 802.3 length field and LLC
            return ether(dst, src, 38, b"\x42\x42\x03" + r.randbytes(35))
        if kind == 3:  # IPv4 EtherType, version 6 in the header
            return ether(dst, src, 0x0800, ipv4(a, b, 17, self.l4(17), first=0x65))
        if kind == 4:  # IPv4 header length below 5 words
            return ether(dst, src, 0x0800, ipv4(a, b, 6, self.l4(6), first=0x43))
        # IPv6 EtherType carrying an IPv4 header
        return ether(dst, src, 0x86DD, ipv4(a, b, 17, self.l4(17)))


def mixed_records(seed: int, count: int, start_us: int, step_us: int) -> list[Rec]:
    """`count` frames from `start_us`, `step_us` apart on average, in capture
    order: about one in ten up to 0.3 s late (within dump's 2 s reorder bound),
    one in twenty at the same time as the one before, and NEEDLES frames of
    NEEDLE spread over the file."""
    rng = random.Random(seed)
    traffic = Traffic(rng)
    needles = set(rng.sample(range(count), NEEDLES))
    records: list[Rec] = []
    ts = start_us
    for i in range(count):
        roll = rng.random()
        if roll < 0.1:
            at = max(start_us, ts - rng.randrange(300_000))
        elif roll < 0.15 and records:
            at = records[-1][0]
        else:
            at = ts
        if i in needles:
            body = udp(40001, 5353, rng.randbytes(30))
            frame = ether(MACS[0], MACS[1], 0x0800, ipv4(NEEDLE, "10.0.0.1", 17, body))
            wire = len(frame)
        else:
            frame, wire = traffic.frame()
        records.append((at, frame, wire if wire >= 0 else len(frame)))
        ts += rng.randint(1, 2 * step_us)
    return records


def big_records(
    count: int, seed: int = 11, pad: int = 0, step_us: int = 10, start_us: int = START_US
) -> list[Rec]:
    """`count` well-formed frames of the mix (drawn from a pool of 20,000),
    `step_us` apart from `start_us`, in time order; NEEDLES of them NEEDLE's."""
    rng = random.Random(seed)
    traffic = Traffic(rng, pad)
    pool = [traffic.regular() for _ in range(20_000)]
    needle = ether(MACS[0], MACS[1], 0x0800,
                   ipv4(NEEDLE, "10.0.0.1", 17, udp(40001, 5353, b"needle")))  # fmt: skip
    frames = rng.choices(pool, k=count)
    for i in rng.sample(range(count), NEEDLES):
        frames[i] = needle
    return [(start_us + i * step_us, f, len(f)) for i, f in enumerate(frames)]


def write_records(path: Path, records: list[Rec]) -> Path:
    write_capture(str(path), records)
    return path


# ---------------------------------------------------------------- running things


def partition_ends(bootstrap: str, topic: str) -> dict[int, int]:
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ends-{uuid.uuid4()}"})
    try:
        return {p: hi for p, (_, hi) in watermarks(consumer, topic).items()}
    finally:
        consumer.close()


def make_topic(bootstrap: str, partitions: int, replication: int = 1, config=None) -> str:
    name = f"index-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    spec = NewTopic(name, partitions, replication, config={**KEEP, **(config or {})})
    admin.create_topics([spec])[name].result(30)
    wait_topic_ready(bootstrap, name, partitions)
    return name


def replay(bootstrap: str, capture: Path, topic: str, *args: str) -> None:
    run = run_fastcapa("-r", str(capture), "-t", topic, "-k", bootstrap,
                       "--partition-by", "key", *args, timeout=300)  # fmt: skip
    assert run.status == 0, run.stderr


def index_until_caught_up(bootstrap: str, topic: str, *args: str, timeout: float = 180) -> Run:
    run = run_fastcapa("index", "-t", topic, "-k", bootstrap, "--until-caught-up", *args,
                       timeout=timeout)  # fmt: skip
    assert run.status == 0, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    return run


def dump(bootstrap: str, topic: str, out: Path, *args: str, status: int = 0) -> Run:
    run = run_fastcapa("dump", "-t", topic, "-k", bootstrap, "-o", str(out), *args, timeout=300)
    assert "Traceback" not in run.stderr, run.stderr
    assert run.status == status, run.stderr
    return run


PLAN_HEAD = "fastcapa dump: plan for topic "
PLAN_LINE = re.compile(r"^  partition (\d+) \(offsets (\d+)-(\d+)\): (.*)$")


def plan_of(run: Run, topic: str) -> dict[int, str]:
    """`--explain`'s lines: {partition: what it says}. They come before
    the closing line, after exactly one head line."""
    lines = run.stderr.splitlines()
    heads = [i for i, line in enumerate(lines) if line.startswith(PLAN_HEAD + topic)]
    assert len(heads) == 1, run.stderr
    parts: dict[int, str] = {}
    for line in lines[heads[0] + 1 :]:
        m = PLAN_LINE.match(line)
        if not m:
            break
        parts[int(m[1])] = m[4]
    closing = [i for i, line in enumerate(lines) if line.startswith("fastcapa dump: ") and
               " frames from topic " in line]  # fmt: skip
    assert closing and closing[-1] > heads[0] + len(parts), run.stderr
    return parts


def records_to_read(text: str) -> int:
    m = re.search(r"(\d+) records to read", text)
    assert m, text
    return int(m[1])


def may_match(text: str) -> int:
    """The records the plan selected (what it reads may be more: records
    between two close selections are read through)."""
    m = re.search(r"(\d+) records may match", text)
    assert m, text
    return int(m[1])


def assert_fully_indexed(parts: dict[int, str], partitions: int) -> None:
    """Every partition read through the index alone: none scanned."""
    assert sorted(parts) == list(range(partitions)), parts
    for p, text in parts.items():
        assert "records to read" in text, (p, text)
        assert "not indexed yet" not in text, (p, text)
        assert "no slice" not in text and "records no slice covers" not in text, (p, text)


def same_as_scan(bootstrap: str, topic: str, tmp: Path, *query: str) -> tuple[Run, bytes]:
    """The query with the index (and --explain) and with --no-index: the
    files are byte for byte the same. Returns the indexed run and the file."""
    scanned, indexed = tmp / f"scan-{uuid.uuid4().hex[:6]}.pcap", tmp / "indexed.pcap"
    scan = dump(bootstrap, topic, scanned, "--no-index", *query)
    assert "reorder bound" not in scan.stderr and "out of time order" not in scan.stderr, (
        f"the test's topic breaks the reorder bound: {scan.stderr}"
    )
    run = dump(bootstrap, topic, indexed, "--explain", *query)
    a, b = scanned.read_bytes(), indexed.read_bytes()
    if a != b:
        sa, sb = read_capture(str(scanned)).records, read_capture(str(indexed)).records
        missing = Counter(sa) - Counter(sb)
        extra = Counter(sb) - Counter(sa)
        pytest.fail(
            f"dump {' '.join(query)}: the index changed the file: scan {len(sa)} frames,"
            f" index {len(sb)}; {sum(missing.values())} missing, {sum(extra.values())} extra,"
            f" the same frames in another order: {sorted(sa) == sorted(sb)}; first missing:"
            f" {[(ts, f.hex()) for ts, f in list(missing)[:3]]}\n{run.stderr}"
        )
    return run, a


def frames_of(data: bytes, path: Path) -> list[tuple[int, bytes]]:
    path.write_bytes(data)
    back = read_capture(str(path))
    assert back is not None and back.error is None
    return back.records


class Indexer:
    """`fastcapa index` in the background; stderr to a file, JSON reports."""

    def __init__(self, tmp: Path, bootstrap: str, topic: str, *args: str, interval: float = 0.3):
        self.name = uuid.uuid4().hex[:6]
        self.stats = tmp / f"index-{self.name}.jsonl"
        self.err_path = tmp / f"index-{self.name}.err"
        with open(self.err_path, "w") as err:
            self.proc = start_fastcapa(
                "index", "-t", topic, "-k", bootstrap,
                "--stats-json", str(self.stats), "--stats-interval", str(interval), *args,
                stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def reports(self) -> list[dict]:
        text = self.stats.read_text() if self.stats.exists() else ""
        return [json.loads(line) for line in text.split("\n")[:-1]]

    def last(self) -> dict | None:
        reports = self.reports()
        return reports[-1] if reports else None

    def wait_for(self, what: str, test, timeout: float = 60, since: float = 0) -> dict:
        """Until the latest report passes `test`; with `since`, a report
        made after that time (time.time())."""
        deadline = time.monotonic() + timeout
        while True:
            report = self.last()
            if report is not None and report["time"] >= since and test(report):
                return report
            assert self.proc.poll() is None, f"exited waiting for {what}:\n{self.stderr()}"
            assert time.monotonic() < deadline, f"no report with {what} in {timeout} s: {report}"
            time.sleep(0.1)

    def wait_settled(self, partitions: int, since: float, hold: float = 1.5) -> None:
        """Until every report of the last `hold` seconds (made after `since`)
        says: `partitions` assigned, nothing left to read, nothing read since."""
        deadline = time.monotonic() + 120
        while True:
            reports = [r for r in self.reports() if r["time"] >= since]
            recent = (
                [r for r in reports if r["time"] >= reports[-1]["time"] - hold] if reports else []
            )
            if (
                recent
                and recent[-1]["time"] - recent[0]["time"] >= hold * 0.8
                and all(r["partitions"] == partitions and r["lag_records"] == 0 for r in recent)
                and len({r["read"] for r in recent}) == 1
            ):
                return
            assert self.proc.poll() is None, f"exited before settling:\n{self.stderr()}"
            assert time.monotonic() < deadline, f"never settled: {reports[-5:]}"
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> tuple[int, dict]:
        """`sig`, then the exit status and the final report."""
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the indexer still ran {timeout} s after {sig!r}:\n{self.stderr()}")
        report = self.last()
        assert report is not None and report["final"], self.stderr()
        assert "Traceback" not in self.stderr(), self.stderr()
        return self.proc.returncode, report

    def kill(self) -> None:
        processes.stop(self.proc)


def assert_lag_us_within(reports: list[dict], span_us: int) -> None:
    """No report says more capture time is left to index than the topic spans."""
    for r in reports:
        assert r["lag_us"] <= span_us, f"lag_us {r['lag_us']} past the topic's span: {r}"


def assert_lag_never_grows(reports: list[dict], quiet_since: float) -> None:
    """Once nothing more is written (after `quiet_since`), with the same
    partitions, the records left to read never grow."""
    quiet = [r for r in reports if r["time"] >= quiet_since and not r["final"]]
    for before, after in itertools.pairwise(quiet):
        if before["partitions"] == after["partitions"]:
            assert after["lag_records"] <= before["lag_records"], (
                "no record was written, yet the lag grew from"
                f" {before['lag_records']} to {after['lag_records']} records"
                f" (reports at {before['time']} and {after['time']}, {after['partitions']}"
                f" partitions, read {before['read']} then {after['read']})"
            )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- shared topics


class Indexed:
    """A replayed topic, its index and the records written to it."""

    def __init__(self, topic: str, partitions: int, records: list[Rec], indexed_ends: dict):
        self.topic, self.partitions, self.records = topic, partitions, records
        self.indexed_ends = indexed_ends  # {partition: end offset} when the indexer stopped
        self.complete = len(records) == sum(indexed_ends.values())


@pytest.fixture(scope="module")
def indexed_topics(kafka, tmp_path_factory) -> list[Indexed]:
    """Two topics of mixed traffic (3000 frames over 7.5 s each), indexed
    with slices of 64 records: the first fully (4 partitions); the second
    (3 partitions) then gets 600 more frames, after its indexer stopped,
    that no slice covers (its tail is scanned)."""
    tmp = tmp_path_factory.mktemp("indexed")
    made = []
    for which, partitions in ((0, 4), (1, 3)):
        records, tail = shared_records(which)
        topic = make_topic(kafka.bootstrap, partitions)
        replay(kafka.bootstrap, write_records(tmp / f"mixed-{which}.pcap", records), topic)
        run = index_until_caught_up(kafka.bootstrap, topic, "--slice-records", "64")
        assert f"indexing topic {topic} into {topic}.index" in run.stderr, run.stderr
        ends = partition_ends(kafka.bootstrap, topic)
        if tail:
            replay(kafka.bootstrap, write_records(tmp / "tail.pcap", tail), topic)
        made.append(Indexed(topic, partitions, records + tail, ends))
    return made


@functools.cache
def shared_records(which: int) -> tuple[list[Rec], list[Rec]]:
    """The records of shared topic `which`: those indexed, and the tail
    written after (none for the first)."""
    records = mixed_records(which + 1, 3000, START_US, 2500)
    if which == 0:
        return records, []
    last = max(ts for ts, _, _ in records)
    return records, mixed_records(which + 101, 600, last - 500_000, 2500)


# ---------------------------------------------------------------- 1. the property


def _hosts() -> st.SearchStrategy[str]:
    return st.sampled_from(V4 + V6 + ABSENT + [NEEDLE])


def _primitive() -> st.SearchStrategy[str]:
    ports = st.sampled_from([*SERVICES, 40003, 5353, 9999])
    direction = st.sampled_from(["", "src ", "dst ", "src or dst ", "src and dst "])
    transport = st.sampled_from(["", "tcp ", "udp ", "sctp "])
    ranges = st.tuples(st.integers(0, 9000), st.integers(0, 41000)).map(sorted)
    return st.one_of(
        st.builds(lambda d, h: f"{d}host {h}", direction, _hosts()),
        st.sampled_from([*V4, NEEDLE]).map(lambda h: f"ip host {h}"),
        st.sampled_from(V6).map(lambda h: f"ip6 host {h}"),
        st.builds(lambda d, n: f"{d}net {n}", direction, st.sampled_from(NETS)),
        st.builds(lambda t, d, p: f"{t}{d}port {p}", transport, direction, ports),
        st.builds(lambda t, d, r: f"{t}{d}portrange {r[0]}-{r[1]}", transport, direction, ranges),
        st.sampled_from(["tcp", "udp", "icmp", "icmp6", "sctp", "ip", "ip6", "arp", "vlan"]),
        st.sampled_from(["ip proto 47", "ip proto 1", "ip6 proto 17", "ip proto 132"]),
        st.sampled_from([*VLANS, 7]).map(lambda v: f"vlan {v}"),
        # implied qualifiers: the second id takes the first one's
        st.builds(lambda a, b: f"host {a} or {b}", _hosts(), _hosts()),
        st.builds(lambda a, b: f"host {a} and not {b}", _hosts(), _hosts()),
        st.builds(lambda t, a, b: f"{t}port {a} or {b}", transport, ports, ports),
        # what no index term answers: the planner must read them whole
        st.sampled_from(
            [
                "ether host 02:00:00:00:00:03",
                "ether src 02:00:00:00:00:01",
                "ether broadcast",
                "less 100",
                "greater 300",
                "tcp[13] & 2 != 0",
                "ip[8] = 64",
                "ether proto 0x88b5",
                "ip6[6] = 0",
                "ether[12:2] = 0x88a8",
            ]
        ),
    )


def _filters() -> st.SearchStrategy[str]:
    def compound(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        op = st.sampled_from(["and", "or"])
        bare = st.builds(lambda a, o, b: f"{a} {o} {b}", children, op, children)  # left to right
        grouped = st.builds(lambda a, o, b: f"({a}) {o} ({b})", children, op, children)
        negated = children.map(lambda a: f"not ({a})") | children.map(lambda a: f"not {a}")
        return st.one_of(bare, grouped, bare, grouped, negated)

    return st.recursive(_primitive(), compound, max_leaves=5)


@st.composite
def queries(draw) -> tuple[int, str | None, int | None, int | None]:
    """(which shared topic, filter, --from, --to)."""
    which = draw(st.integers(0, 1))
    expr = draw(st.one_of(st.none(), _filters()) if draw(st.integers(0, 9)) == 0 else _filters())
    lo, hi = START_US - 3_000_000, START_US + 12_000_000
    records, tail = shared_records(which)
    times = sorted(ts for ts, _, _ in records + tail)
    at_a_record = st.builds(lambda t, d: t + d, st.sampled_from(times), st.sampled_from([-1, 0, 1]))
    moment = st.one_of(st.none(), st.integers(lo, hi), at_a_record)
    first, last = draw(moment), draw(moment)
    if first is not None and last is not None and first > last:
        first, last = last, first
    return which, expr, first, last


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)
@given(case=queries())
@example(case=(0, f"host {NEEDLE}", None, None))
@example(case=(0, "vlan 20 and host 10.0.0.1 or port 53", START_US + 1_000_000, None))
@example(case=(1, "host 10.0.0.2 and vlan", None, START_US + 8_000_000))
@example(case=(0, "not tcp and not udp and not icmp", None, None))
@example(case=(1, "ether host 02:00:00:00:00:03 and (port 80 or 443)", None, None))
@example(case=(0, "tcp port 80 or 443 and not net 10.0.0.0/24", None, None))
@example(case=(1, "less 60 or udp portrange 50-60", START_US + 2_000_000, START_US + 2_000_000))
@example(case=(0, "vlan 100 and vlan 10 and ip6", None, None))
@example(case=(0, "udp port banana", None, None))
def test_a_dump_with_the_index_is_the_scan_byte_for_byte(case, indexed_topics, kafka, tmp_path):
    """Any filter, any window: the same file with the index as without it,
    the frames being those libpcap's filter picks from the records written;
    on the fully indexed topic no partition is scanned and the index reads
    no fewer records than the query writes."""
    which, expr, first, last = case
    t = indexed_topics[which]
    query = [*(["--filter", expr] if expr is not None else []),
             *(["--from", str(first)] if first is not None else []),
             *(["--to", str(last)] if last is not None else [])]  # fmt: skip
    lo, hi = first if first is not None else 0, last if last is not None else 1 << 64
    in_window = [r for r in t.records if lo <= r[0] <= hi]
    expected = bpf_select(expr, in_window)
    if expected is None:  # libpcap refuses it: one line, exit 2, with and without the index
        for extra in (["--no-index"], ["--explain"]):
            run = run_fastcapa("dump", "-t", t.topic, "-k", kafka.bootstrap, "-o",
                               str(tmp_path / "never.pcap"), *extra, *query)  # fmt: skip
            assert_clean_failure(run, 2)
            assert run.stderr.startswith("fastcapa: error: "), run.stderr
        return
    run, data = same_as_scan(kafka.bootstrap, t.topic, tmp_path, *query)
    back = frames_of(data, tmp_path / "back.pcap")
    assert Counter(back) == Counter((ts, f) for ts, f, _ in expected), (
        f"{len(back)} frames, libpcap picks {len(expected)}"
    )
    assert [ts for ts, _ in back] == sorted(ts for ts, _ in back)
    parts = plan_of(run, t.topic)
    assert sorted(parts) == list(range(t.partitions)), run.stderr
    if t.complete:
        assert_fully_indexed(parts, t.partitions)
        assert sum(records_to_read(text) for text in parts.values()) >= len(expected), run.stderr


def test_the_index_covers_what_it_was_built_on_and_says_what_it_did_not(
    indexed_topics, kafka, tmp_path
):
    """--explain on the second shared topic: its tail (written after the
    indexer stopped) is scanned, the rest read through the index; with
    --no-index, every partition is scanned."""
    t = indexed_topics[1]
    run = dump(kafka.bootstrap, t.topic, tmp_path / "a.pcap", "--explain", "--filter", "udp")
    parts = plan_of(run, t.topic)
    ends = partition_ends(kafka.bootstrap, t.topic)
    assert sorted(parts) == list(range(t.partitions))
    for p, text in parts.items():
        assert "records to read" in text, text
        m = re.search(r"offsets (\d+)-(\d+) not indexed yet \(scanned\)", text)
        assert m, text
        # where the indexer stopped, to the end (the last offset or the one after)
        assert int(m[1]) == t.indexed_ends[p] and int(m[2]) in (ends[p] - 1, ends[p]), (
            text, t.indexed_ends, ends,
        )  # fmt: skip
    run = dump(kafka.bootstrap, t.topic, tmp_path / "b.pcap", "--explain", "--no-index")
    parts = plan_of(run, t.topic)
    head = next(line for line in run.stderr.splitlines() if line.startswith(PLAN_HEAD))
    assert "scanned" in head and sorted(parts) == list(range(t.partitions)), run.stderr
    assert not any("records to read" in text for text in parts.values()), run.stderr


def test_a_needle_query_reads_a_small_part_of_the_topic(indexed_topics, kafka, tmp_path):
    """`host NEEDLE` (6 frames of 3000): the plan reads at most the six
    slices that hold it, and the file is the scan's."""
    t = indexed_topics[0]
    run, data = same_as_scan(kafka.bootstrap, t.topic, tmp_path, "--filter", f"host {NEEDLE}")
    assert len(frames_of(data, tmp_path / "n.pcap")) == NEEDLES
    parts = plan_of(run, t.topic)
    assert_fully_indexed(parts, t.partitions)
    selected = sum(may_match(text) for text in parts.values())
    assert NEEDLES <= selected <= NEEDLES * 64, run.stderr
    assert sum(records_to_read(text) for text in parts.values()) >= selected, run.stderr
    slices = sum(int(m[1]) for text in parts.values()
                 if (m := re.search(r"(\d+) selected,", text)))  # fmt: skip
    assert slices <= NEEDLES, run.stderr


# ---------------------------------------------------------------- big topics


class Big:
    """Two captures of 300,000 frames each, 10 µs apart: the second starts
    where the first ends (3 s), so a topic written with both keeps the
    dump's reorder bound."""

    def __init__(self, tmp: Path):
        self.records = big_records(300_000)
        self.more = big_records(300_000, seed=12, start_us=START_US + 3_000_000)
        self.capture = write_records(tmp / "big.pcap", self.records)
        self.capture_more = write_records(tmp / "more.pcap", self.more)


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Big:
    return Big(tmp_path_factory.mktemp("big"))


BIG_QUERIES = [
    ["--filter", f"host {NEEDLE}"],
    ["--filter", "tcp port 443 and net 10.0.0.0/24",
     "--from", str(START_US + 700_000), "--to", str(START_US + 2_100_000)],
    ["--filter", "vlan 20 and (udp or icmp6)"],
    ["--filter", "less 80 and not arp", "--from", str(START_US + 2_500_000)],
]  # fmt: skip


def check_big_queries(bootstrap: str, topic: str, partitions: int, tmp: Path) -> None:
    """BIG_QUERIES give the scan's files through the index alone; the
    needle's reads a few hundred records at most."""
    for query in BIG_QUERIES:
        run, _ = same_as_scan(bootstrap, topic, tmp, *query)
        parts = plan_of(run, topic)
        assert_fully_indexed(parts, partitions)
        if query == BIG_QUERIES[0]:
            assert sum(may_match(text) for text in parts.values()) <= 500, run.stderr


def test_an_indexer_killed_mid_topic_resumes_and_the_index_is_whole(kafka, big, tmp_path):
    """SIGKILL an indexer once it has committed part of a 300,000-frame topic
    (slices of 64 records); a new one with --until-caught-up starts from the
    commits and finishes: queries give the scan's files, nothing unindexed."""
    records = big.records
    topic = make_topic(kafka.bootstrap, 4)
    replay(kafka.bootstrap, big.capture, topic)
    first = Indexer(tmp_path, kafka.bootstrap, topic, "--slice-records", "64",
                    "-X", "session.timeout.ms=6000", interval=0.2)  # fmt: skip
    try:
        at_kill = first.wait_for("a commit", lambda r: r["commits"] > 0 and r["indexed"] > 0)
        first.proc.kill()
        first.proc.wait(10)
    finally:
        first.kill()
    assert at_kill["indexed"] < len(records), f"not mid-topic: {at_kill}"
    run = index_until_caught_up(kafka.bootstrap, topic, "--slice-records", "64",
                                "--stats-json", str(tmp_path / "second.jsonl"))  # fmt: skip
    final = json.loads((tmp_path / "second.jsonl").read_text().splitlines()[-1])
    assert final["final"] and final["lag_records"] == 0, final
    assert 0 < final["read"] < len(records), f"resumed from the commits? {final}\n{run.stderr}"
    check_big_queries(kafka.bootstrap, topic, 4, tmp_path)


def test_two_members_split_the_partitions_and_one_takes_over(kafka, big, tmp_path):
    """Two indexers in one group share 8 partitions (each reports some, not
    all); one is SIGKILLed, more frames come, the other takes every
    partition and indexes the whole topic. A third member with
    --until-caught-up then has nothing left to do."""
    topic = make_topic(kafka.bootstrap, 8)
    replay(kafka.bootstrap, big.capture, topic)
    fast_group = ("-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500")
    a = Indexer(tmp_path, kafka.bootstrap, topic, "--slice-records", "256", *fast_group)
    b = Indexer(tmp_path, kafka.bootstrap, topic, "--slice-records", "256", *fast_group)
    try:
        deadline = time.monotonic() + 60

        def shared(member: Indexer) -> bool:
            return any(0 < r["partitions"] < 8 for r in member.reports())

        while not (shared(a) and shared(b)):
            for m in (a, b):
                assert m.proc.poll() is None, m.stderr()
            assert time.monotonic() < deadline, (
                [r["partitions"] for r in a.reports()],
                [r["partitions"] for r in b.reports()],
            )
            time.sleep(0.2)
        b.proc.kill()
        b.proc.wait(10)
        replay(kafka.bootstrap, big.capture_more, topic)  # into every partition, b's too
        written = time.time()
        a.wait_settled(8, since=written)
        status, final = a.stop()
    finally:
        a.kill()
        b.kill()
    assert status == 0, a.stderr()
    assert final["lag_records"] == 0, final
    check_big_queries(kafka.bootstrap, topic, 8, tmp_path)
    run = index_until_caught_up(kafka.bootstrap, topic, "--stats-json", str(tmp_path / "c.jsonl"),
                                timeout=60)  # fmt: skip
    third = json.loads((tmp_path / "c.jsonl").read_text().splitlines()[-1])
    assert third["read"] == 0, (third, run.stderr)
    # After the takeover, no more writes: what is left to read only shrinks;
    # and no report tells more capture time to index than the topic spans.
    wrong = []
    for check in (lambda: assert_lag_never_grows(a.reports(), written),
                  lambda: assert_lag_us_within(a.reports() + b.reports(), 6_000_000)):  # fmt: skip
        try:
            check()
        except AssertionError as e:
            wrong.append(str(e).splitlines()[0])
    assert not wrong, "; ".join(wrong)


def test_lag_while_a_replay_writes_then_none(kafka, big, tmp_path):
    """An indexer started on an empty topic; two replays of 300,000 frames
    each into it: some report shows a lag, and once they are done the lag is
    gone; after SIGINT (exit 0) the final report has every record read and
    indexed, their bytes, and no lag."""
    records = big.records + big.more
    topic = make_topic(kafka.bootstrap, 4)
    member = Indexer(tmp_path, kafka.bootstrap, topic, interval=0.5)
    try:
        member.wait_for("its partitions", lambda r: r["partitions"] == 4, timeout=60)
        replay(kafka.bootstrap, big.capture, topic)
        replay(kafka.bootstrap, big.capture_more, topic)
        written = time.time()
        total = len(records)
        member.wait_for(
            "everything indexed",
            lambda r: r["indexed"] == total and r["lag_records"] == 0,
            timeout=120,
        )
        status, final = member.stop(signal.SIGINT)
    finally:
        member.kill()
    assert status == 0, member.stderr()
    reports = member.reports()
    for r in reports:
        assert set(r) >= STATS_KEYS, set(r) ^ STATS_KEYS
    assert max(r["lag_records"] for r in reports) > 0, (
        "no report saw a lag while 600,000 records were written: (read, lag_records) ="
        f" {[(r['read'], r['lag_records']) for r in reports]}"
    )
    assert final["read"] == final["indexed"] == total, final
    assert final["read_bytes"] == sum(len(f) for _, f, _ in records), final
    assert final["lag_records"] == 0 and final["lag_us"] == 0 and final["pending"] == 0, final
    assert final["unparsed"] == 0 and final["slices"] > 0 and final["commits"] > 0, final
    stderr = member.stderr()
    assert "[idx]" in stderr and "Traceback" not in stderr, stderr
    # Once the replays are done, the member (all partitions, from offset 0)
    # has exactly the records it has not read yet left to read.
    for r in reports:
        if r["time"] >= written:
            assert r["lag_records"] == total - r["read"], (
                f"report at {r['time']} (after the last write, at {written:.3f}): read"
                f" {r['read']} of {total}, yet lag_records {r['lag_records']}"
            )
    assert_lag_us_within(reports, 6_000_000)


# ---------------------------------------------------------------- errors


def test_unreachable_kafka_is_one_line_and_status_2(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nobody listens
    started = time.monotonic()
    run = run_fastcapa("index", "-t", "pcap", "-k", f"127.0.0.1:{port}", "--timeout", "2",
                       "--until-caught-up", timeout=60)  # fmt: skip
    assert_clean_failure(run, 2)
    assert run.stderr.startswith("fastcapa: error: "), run.stderr
    assert time.monotonic() - started < 30


def test_a_missing_capture_topic_is_one_line_and_status_2(kafka):
    name = f"index-missing-{uuid.uuid4().hex[:8]}"
    run = run_fastcapa("index", "-t", name, "-k", kafka.bootstrap, "--until-caught-up",
                       timeout=60)  # fmt: skip
    assert_clean_failure(run, 2)
    assert run.stderr.startswith("fastcapa: error: ") and name in run.stderr, run.stderr
    topics = AdminClient({"bootstrap.servers": kafka.bootstrap}).list_topics(timeout=10).topics
    assert name + ".index" not in topics and name not in topics, "nothing created"


@pytest.mark.parametrize("expr", ["udp port banana", "host 10.0.0.1 and", "portrange 9-"])
def test_an_invalid_filter_with_an_index_is_one_line_and_status_2(
    expr, indexed_topics, kafka, tmp_path
):
    t = indexed_topics[0]
    out = tmp_path / "never.pcap"
    run = run_fastcapa("dump", "-t", t.topic, "-k", kafka.bootstrap, "-o", str(out),
                       "--explain", "--filter", expr)  # fmt: skip
    assert_clean_failure(run, 2)
    assert run.stderr.startswith("fastcapa: error: ") and "filter" in run.stderr, run.stderr
    assert not out.exists(), "no file is left behind"


# ---------------------------------------------------------------- metrics


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    """{family: {labels: value}} of what /metrics serves."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    families: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            families.setdefault(family.name, {})[tuple(sorted(sample.labels.items()))] = (
                sample.value
            )
    return families


def test_metrics_agree_with_the_reports(indexed_topics, kafka, tmp_path):
    """--metrics-port on a member building a second index of the first shared
    topic (its own group and index topic): once all is indexed, the
    metrics are the JSON report's figures."""
    t = indexed_topics[0]
    port = free_port()
    member = Indexer(tmp_path, kafka.bootstrap, t.topic, "--metrics-port", str(port),
                     "--index-topic", t.topic + ".again", "--group", f"again-{t.topic}",
                     "--slice-records", "500")  # fmt: skip
    try:
        total = len(t.records)
        report = member.wait_for(
            "everything indexed",
            lambda r: r["indexed"] == total and r["lag_records"] == 0 and r["pending"] == 0,
        )
        metrics = scrape(port)
        status, final = member.stop(signal.SIGTERM)
    finally:
        member.kill()
    assert status == 0, member.stderr()
    records = metrics["fastcapa_index_records"]
    assert records[(("kind", "read"),)] == records[(("kind", "indexed"),)] == total, records
    assert records[(("kind", "unparsed"),)] == report["unparsed"] == final["unparsed"]
    assert metrics["fastcapa_index_slices"][()] == report["slices"] == final["slices"] >= 6
    assert metrics["fastcapa_index_bytes"][()] == report["index_bytes"] > 0
    assert metrics["fastcapa_index_lag_records"][()] == 0
    assert metrics["fastcapa_index_lag_seconds"][()] == 0
    assert metrics["fastcapa_index_partitions"][()] == t.partitions
    # The second index answers as the first does.
    run, _ = same_as_scan(kafka.bootstrap, t.topic, tmp_path, "--index-topic", t.topic + ".again",
                          "--filter", "sctp or vlan 4094")  # fmt: skip
    assert_fully_indexed(plan_of(run, t.topic), t.partitions)
    assert f"index {t.topic}.again" in run.stderr, run.stderr


# ---------------------------------------------------------------- a leader killed


def leader_of(bootstrap: str, topic: str, partition: int) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    return admin.list_topics(topic, timeout=10).topics[topic].partitions[partition].leader


@pytest.mark.faults
def test_a_leader_killed_under_an_indexer_and_a_dump(kafka_cluster3, tmp_path):
    """Three nodes, replication 3: an indexer runs and a dump (through what
    index there is) is half-way, held by its reader, when the leader of
    partition 0 is SIGKILLed. The dump's file is the frames libpcap's filter
    picks, in order; the indexer goes on to index the whole topic, and a
    dump then reads it through the index alone, with the scan's answer."""
    cluster = kafka_cluster3
    topic = make_topic(cluster.bootstrap, 3, replication=3, config={"min.insync.replicas": "2"})
    records = big_records(150_000, seed=21, pad=200, step_us=20)
    capture = write_records(tmp_path / "cluster.pcap", records)
    replay(cluster.bootstrap, capture, topic, "-X", "acks=all")
    expr = "(tcp or udp) and not host 10.0.0.3"
    expected = [(ts, f) for ts, f, _ in bpf_select(expr, records) or []]
    assert len(expected) > 50_000

    member = Indexer(tmp_path, cluster.bootstrap, topic, "--slice-records", "256",
                     "-X", "session.timeout.ms=6000")  # fmt: skip
    reader = None
    try:
        member.wait_for("slices written", lambda r: r["slices"] > 0)
        err_path = tmp_path / "dump.err"
        with open(err_path, "w") as err:
            reader = start_fastcapa(
                "dump", "-t", topic, "-k", cluster.bootstrap,
                "--filter", expr, "--timeout", "60", "--explain", "-o", "-",
                stdout=subprocess.PIPE, stderr=err,
                bufsize=0,  # nothing read ahead: communicate() below gets the rest
            )  # fmt: skip
        head = b""
        while len(head) < 2 << 20 and (chunk := reader.stdout.read(1 << 16)):
            head += chunk  # then the dump waits on its full pipe
        assert reader.poll() is None, "the dump ended before the kill"
        victim = leader_of(cluster.bootstrap, topic, 0)
        cluster.kill(victim)
        survivors = ",".join(cluster.node_bootstrap(i) for i in range(3) if i != victim)
        deadline = time.monotonic() + 60
        while leader_of(survivors, topic, 0) in (victim, -1):
            assert time.monotonic() < deadline, "no new leader for partition 0"
            time.sleep(0.5)
        rest, _ = reader.communicate(timeout=180)
        assert reader.returncode == 0, err_path.read_text()
        back = frames_of(head + rest, tmp_path / "during.pcap")
        assert back == expected, f"{len(back)} frames, expected {len(expected)}"
        member.wait_settled(3, since=time.time())
        status, final = member.stop(signal.SIGINT)
    finally:
        if reader is not None:
            processes.stop(reader)
        member.kill()
    assert status == 0, member.stderr()
    run, data = same_as_scan(survivors, topic, tmp_path, "--filter", f"host {NEEDLE} or {expr}",
                             "--timeout", "30")  # fmt: skip
    assert_fully_indexed(plan_of(run, topic), 3)
    assert frames_of(data, tmp_path / "after.pcap") == expected
    print(f"\nleader {victim} killed; indexer final {final}", file=sys.stderr)
