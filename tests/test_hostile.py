"""Hostile input end to end: settings that try to inject, capture files with
records at libpcap's edges, and frames at the extremes of what a wire carries.

- Settings: through the `fastcapa` command as an operator runs it. Each is
  refused at start with exit 2 and one line that names the offending
  property; librdkafka itself judges property names and values, before any
  connection (the broker address is a closed port on loopback).
- Capture files: crafted records replayed into a real broker; what libpcap
  reads (tests/pcapref.py, libpcap through ctypes) is delivered exactly,
  what it refuses ends the replay with exit 1 after every record before it.
- Live: a veth pair at the largest MTU it takes, frames sent from a network
  namespace, captured with `fastcapa -i`, read back from Kafka.

The property tests are in tests/test_fuzz_config.py and src/capfile_tests.rs.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from fastcapa.errors import ConfigError
from fastcapa.librdkafka import parse_override
from fastcapa_support.kafka_read import read_topic
from fastcapa_support.netns import VethPair, netns_available
from fastcapa_support.pcapref import read_capture
from fastcapa_support.runner import Probe, assert_accounting, assert_clean_failure, write_capture

# A port on loopback where nothing listens: a setting that got past the
# checks would end in "cannot reach Kafka", which the tests tell apart.
NOWHERE = "127.0.0.1:9"
KEEP = {"retention.ms": "-1"}
MACS = b"\x02\0\0\0\0\xc8\x02\0\0\0\0\x01"


def pcap(records: list[tuple[int, int, bytes]], snaplen: int = 65535) -> bytes:
    """A classic little-endian pcap file of (caplen, len, data) records, the
    i-th stamped i seconds after the epoch + 1 µs."""
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, 1)
    for i, (caplen, length, data) in enumerate(records):
        out += struct.pack("<IIII", i, 1, caplen, length) + data
    return out


@pytest.fixture
def one_frame(tmp_path) -> str:
    path = tmp_path / "one.pcap"
    path.write_bytes(pcap([(60, 60, MACS + b"\x08\x00" + bytes(46))]))
    return str(path)


def refused(run, *words: str) -> None:
    """Exit 2, one line, no traceback, naming `words`; never got as far as Kafka."""
    assert_clean_failure(run, 2)
    assert "cannot reach Kafka" not in run.stderr, run.stderr
    for word in words:
        assert word in run.stderr, run.stderr


# --- Settings that try to inject -------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-X", "no.such.property=1"], ["no.such.property", "No such configuration property"]),
        (["-X", "ü=1"], ["ü", "No such configuration property"]),
        (["-X", "acks==all"], ["acks", "=all"]),
        (["-X", "acks=all\nbootstrap.servers=evil:1"], ["line break"]),
        (["-X", "acks=all\rbootstrap.servers=evil:1"], ["line break"]),
        (["-X", "acks=all\x0bbootstrap.servers=evil:1"], ["control character"]),
        (["-X", "acks=all\u2028bootstrap.servers=evil:1"], ["control character"]),
        (["-X", "a b=c"], ["invalid property name 'a b'"]),
        (["-X", "=all"], ["empty property name"]),
        (["-X", "bootstrap.servers"], ["expected key=value"]),
        (["-X", "linger.ms=-5"], ["linger.ms", "outside allowed range"]),
        (["-X", "plugin.library.paths=/nonexistent/evil.so"], ["plugin.library.paths"]),
        (["-k", "evil:1\nacks=0"], ["-k", "line break"]),
        (["-t", "a/b"], ["invalid topic name 'a/b'"]),
        (["-t", "pcap\nfastcapa: done"], ["invalid topic name"]),
        (["-t", "x" * 250], ["invalid topic name"]),
        (["--snaplen", "5000000000"], ["--snaplen", "262144"]),
        (["--count", str(1 << 64)], ["--count"]),
        (["--connect-timeout", "1e300"], ["--connect-timeout"]),
        (["--cpus", "0-99999999999"], ["--cpus"]),
        (["-x", "16777216"], ["-x/--tx-ring", "more than half of this machine"]),
        (["--bogus\nfastcapa: fake line"], ["unrecognized arguments", "\\n"]),
    ],
    ids=lambda v: repr(v)[:40] if isinstance(v, list) else None,
)
def test_injected_settings_are_refused(args, words, one_frame, fastcapa):
    refused(fastcapa("-r", one_frame, "-k", NOWHERE, "--connect-timeout", "2", *args), *words)


def test_file_name_not_utf8_is_refused(fastcapa, tmp_path):
    """Finding: a Latin-1 file name reached the native core as a lone
    surrogate: UnicodeEncodeError, a traceback and exit 1."""
    name = os.fsdecode(b"caf\xe9.pcap")
    refused(fastcapa("-r", str(tmp_path / name), "-k", NOWHERE), "is not UTF-8")


def test_nul_in_an_override_is_refused():
    """A NUL cannot come through argv; it can through a caller in process."""
    with pytest.raises(ConfigError, match="NUL"):
        parse_override("client.id=a\0b")


@pytest.mark.parametrize(
    ("fd", "words"),
    [(-1, "-1 is not a file descriptor"), (-(2**31), "is not a file descriptor"),
     (2**31 - 1, "statistics file")],
    ids=["minus-one", "most-negative", "not-open"],
)  # fmt: skip
def test_a_bad_statistics_descriptor_is_refused(fd, words):
    """TxWorker takes librdkafka's statistics file as a raw descriptor from
    a caller in process. A negative one is refused before it is borrowed
    (borrowing -1 is undefined behaviour in Rust), one that is not open
    fails to be duplicated: a ConfigError either way, and no producer."""
    from fastcapa import _fastcapa

    ring = _fastcapa.TxRing(8, lanes=1, slot_bytes=256)
    with pytest.raises(ConfigError, match=words):
        _fastcapa.TxWorker(
            "fcapa-tx-0", [(ring, 0)], "t", [("bootstrap.servers", NOWHERE)],
            burst=1, queue_full_wait=None, partition_by="key", partitions=1, worker=0,
            workers=1, stats_fd=fd,
        )  # fmt: skip


INI_CASES = {
    "unknown-section": ("[kafka-global]\nacks = all\n[evil]\na = b\n", ["unknown section [evil]"]),
    "default-section": (
        "[DEFAULT]\nbootstrap.servers = evil:1\n[kafka-global]\nacks = all\n",
        ["unknown section [DEFAULT]"],
    ),
    "unknown-key": ("[kafka-global]\nno.such.key = 1\n", ["no.such.key", "No such configuration"]),
    "unicode-key": ("[kafka-topic]\nacks\u00e9 = all\n", ["acks\u00e9"]),
    "key-with-spaces": ("[kafka-global]\nclient id = x\n", ["invalid property name 'client id'"]),
    "continuation-line": (
        "[kafka-global]\nclient.id = x\n  bootstrap.servers = evil:1\n",
        ["client.id", "line break"],
    ),
    "nul-byte": ("[kafka-global]\nclient.id = a\0b\n", ["client.id", "line break or NUL"]),
    "vertical-tab": ("[kafka-global]\nclient.id = a\x0backs=0\n", ["control character"]),
    "inline-comment": ("[kafka-global]\nacks = all # safest\n", ["acks", "all # safest"]),
    "before-any-section": ("acks = all\n[kafka-global]\n", ["line 1", "before any"]),
    "not-a-setting": ("[kafka-global]\nacks = all\nrm -rf /\n", ["line 3", "'rm -rf /'"]),
    "duplicate": ("[kafka-global]\nacks = all\nacks = 0\n", ["line 3", "'acks' given twice"]),
}


@pytest.mark.parametrize("name", INI_CASES)
def test_hostile_config_files_are_refused(name, one_frame, fastcapa, tmp_path):
    text, words = INI_CASES[name]
    ini = tmp_path / "fastcapa.conf"
    ini.write_bytes(text.encode())
    refused(fastcapa("-r", one_frame, "-k", NOWHERE, "-c", str(ini)), *words)


@pytest.mark.parametrize(
    "path", ["/dev/zero", "/dev/urandom", "{tmp}"], ids=["zero", "random", "dir"]
)
def test_config_file_that_is_no_file_is_refused(path, one_frame, fastcapa, tmp_path):
    """Finding: -c /dev/zero read until memory ran out; now at most 1 MiB."""
    path = path.format(tmp=tmp_path)
    run = fastcapa("-r", one_frame, "-k", NOWHERE, "-c", path, timeout=30)
    refused(run, path)


def test_config_file_not_utf8_is_refused(one_frame, fastcapa, tmp_path):
    ini = tmp_path / "latin1.conf"
    ini.write_bytes(b"[kafka-global]\nclient.id = caf\xe9\n")
    refused(fastcapa("-r", one_frame, "-k", NOWHERE, "-c", str(ini)), "not UTF-8")


@pytest.mark.kafka
def test_unknown_property_is_refused_with_a_broker_there_too(kafka, new_topic, fastcapa, tmp_path):
    """With Kafka reachable: refused the same way, and nothing is produced."""
    topic = new_topic(partitions=1, config=KEEP)
    capture = tmp_path / "one.pcap"
    capture.write_bytes(pcap([(60, 60, MACS + b"\x08\x00" + bytes(46))]))
    ini = tmp_path / "fastcapa.conf"
    ini.write_text("[kafka-global]\nacks = all\n[kafka-topic]\nno.such.topic.property = 1\n")
    run = fastcapa("-r", str(capture), "-t", topic, "-k", kafka.bootstrap, "-c", str(ini))
    refused(run, "no.such.topic.property")
    assert read_topic(kafka.bootstrap, topic) == []


# --- Capture files with records at libpcap's edges ----------------------------


def replay(path: Path, topic: str, bootstrap: str, fastcapa, *args: str):
    stats = path.with_suffix(".jsonl")
    run = fastcapa("-r", str(path), "-t", topic, "-k", bootstrap, "--stats-json", str(stats), *args)
    report = json.loads(stats.read_text().splitlines()[-1])
    assert report["final"]
    assert_accounting(report)
    return run, report


EDGE_RECORDS = [
    (0, 0, b""),  # zero caplen and length
    (0, 1514, b""),  # nothing captured of a whole frame
    (1, 1, b"\x02"),  # a 1-byte runt
    (14, 14, MACS + b"\x88\xb5"),  # a bare Ethernet header, garbage ethertype
    (20, 10, MACS + b"\xff\xff" + b"x" * 6),  # caplen > length
    (40, 1514, MACS + b"\x08\x00" + b"\x45" + bytes(25)),  # cut IPv4, length says more
    (18, 18, MACS + b"\x81\x00\x00\x64\x08\x00"),  # VLAN tag, then nothing
    (262144, 262144, bytes(range(256)) * 1024),  # the largest record libpcap takes
    (60, 60, MACS + b"\x00\x00" + b"z" * 46),  # ethertype 0
]


@pytest.mark.kafka
@pytest.mark.parametrize("snaplen", [0, 1, 14, 100000])
def test_edge_records_delivered_as_libpcap_reads_them(
    snaplen, kafka, new_topic, fastcapa, tmp_path
):
    capture = tmp_path / "edges.pcap"
    capture.write_bytes(pcap(EDGE_RECORDS, snaplen=262144))
    reference = read_capture(str(capture))
    assert reference.error is None and len(reference.records) == len(EDGE_RECORDS)
    topic = new_topic(partitions=1, config=KEEP)
    run, report = replay(capture, topic, kafka.bootstrap, fastcapa, "--snaplen", str(snaplen))
    assert run.status == 0, run.stderr
    assert report["kaf"]["out"] == len(EDGE_RECORDS)
    records = read_topic(kafka.bootstrap, topic)
    cut = snaplen or None
    # An empty frame is an empty value, not a null (a tombstone to Kafka).
    assert [r.value for r in records] == [frame[:cut] for _, frame in reference.records]
    assert [struct.unpack(">Q", r.key)[0] for r in records] == [ts for ts, _ in reference.records]


@pytest.mark.kafka
def test_record_longer_than_the_file_snaplen_is_cut_as_libpcap_cuts_it(
    kafka, new_topic, fastcapa, tmp_path
):
    """libpcap keeps the file header's snaplen (64 here) of a longer record."""
    capture = tmp_path / "snap64.pcap"
    frames = [MACS + b"\x08\x00" + bytes(range(86)), MACS + b"\x88\xb5" + b"tail"]
    capture.write_bytes(pcap([(len(f), len(f), f) for f in frames], snaplen=64))
    reference = read_capture(str(capture))
    assert reference.error is None
    assert [f for _, f in reference.records] == [frames[0][:64], frames[1]]
    topic = new_topic(partitions=1, config=KEEP)
    run, _ = replay(capture, topic, kafka.bootstrap, fastcapa)
    assert run.status == 0, run.stderr
    assert [r.value for r in read_topic(kafka.bootstrap, topic)] == [frames[0][:64], frames[1]]


@pytest.mark.kafka
@pytest.mark.parametrize(
    "bad",
    [
        (262145, 262145, b"\0" * 262145),  # past libpcap's largest record
        (0xFFFFFFFF, 0xFFFFFFFF, b"\0" * 64),  # claims 4 GiB
        (64, 64, b"\0" * 10),  # the file ends inside the frame (nothing after it)
    ],
    ids=["caplen-262145", "caplen-4GiB", "truncated"],
)
def test_record_libpcap_refuses_ends_the_replay_after_the_good_ones(
    bad, kafka, new_topic, fastcapa, tmp_path
):
    good = EDGE_RECORDS[:4]
    after = (60, 60, MACS + b"\x08\x00" + bytes(46))  # never reached
    capture = tmp_path / "bad.pcap"
    tail = [] if len(bad[2]) < bad[0] else [after]
    capture.write_bytes(pcap([*good, bad, *tail], snaplen=262144))
    reference = read_capture(str(capture))
    assert reference.error and len(reference.records) == len(good)
    topic = new_topic(partitions=1, config=KEEP)
    run, report = replay(capture, topic, kafka.bootstrap, fastcapa)
    assert run.status == 1, run.stderr
    assert "Traceback" not in run.stderr
    errors = run.error_lines
    assert len(errors) == 1 and f"corrupt after record {len(good)}" in errors[0], run.stderr
    assert report["kaf"]["out"] == len(good)
    records = read_topic(kafka.bootstrap, topic)
    assert [r.value for r in records] == [f for _, f in reference.records]


# --- Frames at the extremes on the wire -------------------------------------

live = pytest.mark.skipif(not netns_available(), reason="needs root and network namespaces")
VETH_MTU = 65535  # the largest a veth takes: frames of up to 65549 bytes, 65553 tagged


def jumbo(size: int, vlan: int | None = None) -> bytes:
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    body = bytes(i * 7 % 251 for i in range(size - 14 - len(tag)))
    return MACS + tag + b"\x88\xb5" + body


def extreme_frames() -> list[bytes]:
    frames = [MACS[:11] + bytes([i]) + b"\x88\xb5" for i in range(3)]  # bare 14-byte headers
    frames += [MACS + struct.pack("!H", t) + b"garbage" * 7 for t in (0, 0x05DC, 0xFFFF, 0x1234)]
    frames += [MACS + b"\x08\x00" + b"\x4f" + bytes(5)]  # IPv4, header length past the end
    frames += [MACS + b"\x86\xdd" + b"\x60\x00"]  # IPv6, 2 bytes of it
    frames += [MACS + b"\x88\xa8\x00\x0a\x81\x00\x00\x14\x08\x00" + bytes(40)]  # QinQ
    frames += [MACS + b"\x81\x00\x0f\xff\xde\xad" + bytes(3)]  # VLAN 4095, garbage ethertype
    frames += [jumbo(9014), jumbo(VETH_MTU + 14), jumbo(VETH_MTU + 18, vlan=7)]
    return frames


def send(veth: VethPair, frames: list[bytes], tmp_path: Path, name: str) -> None:
    veth.send(write_capture(tmp_path / f"{name}.pcap", frames))


@pytest.mark.kafka
@pytest.mark.netns
@live
def test_extreme_frames_on_the_wire_exactly(kafka, new_topic, tmp_path):
    frames = extreme_frames()
    topic = new_topic(partitions=1, config=KEEP)
    with VethPair(queues=2, mtu=VETH_MTU) as veth:
        probe = Probe(veth.probe_side, topic, kafka.bootstrap, tmp_path, "-q", "2")
        send(veth, frames, tmp_path, "extremes")
        probe.wait_taken(len(frames))
        status, err, report = probe.stop()
    assert status == 0, err
    assert_accounting(report)
    assert report["nic"]["taken_in"] == len(frames) and report["kaf"]["out"] == len(frames)
    got = Counter(r.value for r in read_topic(kafka.bootstrap, topic))
    assert got == Counter(frames), sorted((len(v), v[:18].hex()) for v in got ^ Counter(frames))


@pytest.mark.kafka
@pytest.mark.netns
@live
@pytest.mark.parametrize("snaplen", [1, 14, 16, 9000])
def test_extreme_frames_cut_to_snaplen_exactly(snaplen, kafka, new_topic, tmp_path):
    """Cut after the kernel's VLAN tag is put back: the value is always the
    first `snaplen` bytes of the frame as it was on the wire."""
    frames = extreme_frames()
    topic = new_topic(partitions=1, config=KEEP)
    with VethPair(queues=1, mtu=VETH_MTU) as veth:
        probe = Probe(veth.probe_side, topic, kafka.bootstrap, tmp_path, "--snaplen", str(snaplen))
        send(veth, frames, tmp_path, "extremes")
        probe.wait_taken(len(frames))
        status, err, report = probe.stop()
    assert status == 0, err
    assert_accounting(report)
    values = [r.value for r in read_topic(kafka.bootstrap, topic)]
    assert Counter(values) == Counter(f[:snaplen] for f in frames)


SEND_ONE = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
try:
    s.send(sys.stdin.buffer.read())
    print("sent")
except OSError as e:
    print(e.errno)
"""


def send_one(veth: VethPair, frame: bytes) -> str:
    """Sends one frame from the namespace; "sent" or the errno the kernel gave."""
    return (
        subprocess.run(
            ["ip", "netns", "exec", veth.netns, sys.executable, "-c", SEND_ONE, veth.sender_side],
            input=frame,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )


@pytest.mark.netns
@live
def test_runts_and_oversize_frames_never_reach_the_wire():
    """What the probe can never be handed on a veth: the kernel refuses to
    send frames shorter than an Ethernet header (EINVAL, even as root) and
    longer than MTU + header + one tag (EMSGSIZE). Kept as a test so that a
    kernel that starts sending them shows up here."""
    with VethPair(queues=1, mtu=VETH_MTU) as veth:
        answers = [send_one(veth, f) for f in (MACS[:1], MACS + b"\x08", jumbo(VETH_MTU + 19))]
    assert answers == ["22", "22", "90"]


@pytest.mark.kafka
@pytest.mark.netns
@live
def test_frame_with_a_cut_vlan_tag_is_dropped_by_the_kernel_before_the_probe(
    kafka, new_topic, tmp_path
):
    """A frame whose 802.1Q tag is cut short is sent, but the receive path
    frees it while untagging, before any packet socket sees it: the probe
    cannot take or count it (the kernel's own rx_dropped may). The frames
    around it arrive; the probe's sums hold."""
    topic = new_topic(partitions=1, config=KEEP)
    before, after = MACS + b"\x88\xb5before", MACS + b"\x88\xb5after"
    with VethPair(queues=1, mtu=VETH_MTU) as veth:
        probe = Probe(veth.probe_side, topic, kafka.bootstrap, tmp_path)
        answers = [send_one(veth, f) for f in (before, MACS + b"\x81\x00\x00", after)]
        probe.wait_taken(2)
        status, err, report = probe.stop()
    assert answers == ["sent"] * 3
    assert status == 0, err
    assert_accounting(report)
    assert report["nic"]["taken_in"] == 2
    assert [r.value for r in read_topic(kafka.bootstrap, topic)] == [before, after]
