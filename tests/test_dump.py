"""`fastcapa dump` as a query engine, against a real broker: time order over
many partitions, hostile records, the filter, wire lengths, windows on
replayed and live-captured topics, pipes, and bad input."""

from __future__ import annotations

import itertools
import random
import shutil
import struct
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from fastcapa_support import capgen
from fastcapa_support.fixtures import wait_topic_ready
from fastcapa_support.frames import udp_frame
from fastcapa_support.kafka_read import read_topic
from fastcapa_support.netns import VethPair, netns_available
from fastcapa_support.pcapref import read_capture, write_capture
from fastcapa_support.runner import Probe, assert_clean_failure, run_fastcapa

pytestmark = pytest.mark.kafka

KEEP = {"retention.ms": "-1"}  # captures are dated in the past
START_US = capgen.START_US
PCAP_LIMIT = 262_144


def tools_present() -> None:
    for tool in ("tshark", "tcpdump"):
        assert shutil.which(tool), f"{tool} is not installed (make sysdeps)"


def flow_frame(flow: int, seq: int, size: int = 60) -> bytes:
    """A UDP frame of `flow` carrying its sequence number, `size` bytes."""
    return udp_frame(
        struct.pack("!4sII", b"FCAP", flow, seq).ljust(size - 42, b"\0"),
        dport=53 if flow % 5 == 0 else 9000,
        sport=1024 + flow % 60000,
        ident=seq & 0xFFFF,
        ip_src=struct.pack("!I", 0x0A000000 | flow),
        ip_dst=bytes([10, 100, 0, 1]),
        mac_src=struct.pack("!HI", 0x0200, flow),
        mac_dst=b"\x02\x00\x00\x01\x00\x01",
    )


def skewed_capture(
    path: Path, packets: int, step_us: int, seed: int = 5
) -> list[tuple[int, bytes]]:
    """A capture of `packets` UDP frames over Pareto-distributed flows (a few
    elephants, many mice), `step_us` apart; returns its records."""
    rng = random.Random(seed)
    seq: dict[int, int] = defaultdict(int)
    records = []
    for i in range(packets):
        flow = min(int(rng.paretovariate(1.0)), 5000)
        records.append((START_US + i * step_us, flow_frame(flow, seq[flow])))
        seq[flow] += 1
    write_capture(str(path), records)
    return records


def dumped_with_lengths(path: Path) -> list[tuple[int, int]]:
    """(captured length, wire length) of each record, as tshark reads them."""
    shark = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.cap_len", "-e", "frame.len"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shark.returncode == 0, shark.stderr
    return [tuple(int(x) for x in line.split()) for line in shark.stdout.splitlines()]


def read_to_the_end(path: Path) -> int:
    """How many records tcpdump and tshark read; both must read them all."""
    tcpdump = subprocess.run(
        ["tcpdump", "-nr", str(path)], capture_output=True, text=True, timeout=120
    )
    assert tcpdump.returncode == 0, tcpdump.stderr
    assert "truncated" not in tcpdump.stderr and "bogus" not in tcpdump.stderr, tcpdump.stderr
    lengths = dumped_with_lengths(path)
    assert len(tcpdump.stdout.splitlines()) == len(lengths)
    return len(lengths)


def replay(fastcapa, kafka, capture: Path, topic: str, *args: str) -> None:
    run = fastcapa("-r", str(capture), "-t", topic, "-k", kafka.bootstrap, *args, timeout=300)
    assert run.status == 0, run.stderr


def dump(fastcapa, kafka, topic: str, out: Path, *args: str):
    run = fastcapa("dump", "-t", topic, "-k", kafka.bootstrap, "-o", str(out), *args, timeout=300)
    assert run.status == 0, run.stderr
    assert "Traceback" not in run.stderr
    return run


def late_records(records) -> int:
    """Records whose key is below an earlier key of their partition."""
    most: dict[int, int] = {}
    late = 0
    for r in records:
        key = struct.unpack(">Q", r.key)[0]
        late += key < most.get(r.partition, 0)
        most[r.partition] = max(most.get(r.partition, 0), key)
    return late


# -- time order


def test_time_order_over_eight_partitions_with_several_transmit_workers(
    kafka, new_topic, fastcapa, tmp_path
):
    """300k frames of skewed flows, written by three transmit workers sharing
    one ring (each partition gets frames from all three producers, out of
    order) and --partition-by flow: the dump is in time order, every frame
    once."""
    tools_present()
    capture = tmp_path / "skewed.pcap"
    # 2 µs apart: a 500k frames/s link; the whole file spans 0.6 s, inside
    # the reorder bound, so the topic keeps it however busy the machine is.
    skewed_capture(capture, 300_000, step_us=2)
    reference = read_capture(str(capture)).records
    topic = new_topic(partitions=8, config=KEEP)
    replay(fastcapa, kafka, capture, topic, "-q", "1", "--tx-workers", "3",
           "--partition-by", "flow")  # fmt: skip
    records = read_topic(kafka.bootstrap, topic, timeout=120)
    sizes = Counter(r.partition for r in records)
    assert len(sizes) == 8 and max(sizes.values()) > 4 * min(sizes.values()), sizes
    assert late_records(records) > 1000, "the topic should hold within-partition disorder"

    out = tmp_path / "back.pcap"
    run = dump(fastcapa, kafka, topic, out)
    assert "300000 frames" in run.stderr and "reorder bound" not in run.stderr, run.stderr
    assert "out of time order" not in run.stderr
    back = read_capture(str(out))
    assert back.error is None
    times = [ts for ts, _ in back.records]
    assert sum(b < a for a, b in itertools.pairwise(times)) == 0, "time inversions"
    assert Counter(back.records) == Counter(reference)


# -- hostile records


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None, list]]):
    producer = Producer(
        {"bootstrap.servers": bootstrap, "message.max.bytes": 2_000_000, "linger.ms": 5}
    )
    for key, value, headers in records:
        producer.produce(topic, key=key, value=value, headers=headers or None, partition=0)
    assert producer.flush(30) == 0


def key(ts: int) -> bytes:
    return struct.pack(">Q", ts)


def test_hostile_records_are_skipped_or_cut_and_counted(kafka, new_topic, fastcapa, tmp_path):
    tools_present()
    topic = new_topic(partitions=1, config={**KEEP, "max.message.bytes": "2000000"})
    genuine = [(START_US + i * 1000, flow_frame(i, i, 60 + i)) for i in range(40)]
    latest = ((1 << 32) - 1) * 1_000_000 + 999_999  # 2106-02-07T06:28:15.999999
    big = bytes(range(256)) * 1200  # 307200 bytes
    hostile = [
        (None, b"frame without key", []),
        (b"\x01" * 7, b"seven byte key", []),
        (b"\x01" * 9, b"nine byte key", []),
        (key(START_US + 5), None, []),  # null value
        (key(latest + 1), b"a time past 2106", []),
        (key(1 << 62), b"a time past 2106 too", []),
        (key(1 << 63), b"and before 1901", []),
    ]
    written_as_is = [
        (key(START_US + 7), b"", []),  # an empty frame: an empty record
        (key(latest), flow_frame(1, 1), []),  # the last valid time
    ]
    cut = [
        (key(START_US + 11), big[: PCAP_LIMIT + 1], []),
        (key(START_US + 12), big, [("orig_len", struct.pack(">I", 400_000))]),
    ]
    headers = [
        (key(START_US + 21), flow_frame(2, 2, 96), [("orig_len", struct.pack(">I", 1514))]),
        (key(START_US + 22), flow_frame(3, 3, 96), [("orig_len", b"\x05\xea")]),  # 2 bytes
        (key(START_US + 23), flow_frame(4, 4, 96), [("orig_len", struct.pack(">I", 50))]),
    ]
    mixed = [(key(ts), frame, []) for ts, frame in genuine[:20]]
    mixed += hostile + written_as_is + cut + headers
    mixed += [(key(ts), frame, []) for ts, frame in genuine[20:]]
    produce(kafka.bootstrap, topic, mixed)

    out = tmp_path / "hostile.pcap"
    run = dump(fastcapa, kafka, topic, out)
    closing = run.stderr.strip().splitlines()[-1]
    written = len(genuine) + len(written_as_is) + len(cut) + len(headers)
    assert closing == (
        f"fastcapa dump: {written} frames from topic {topic}; skipped 7 records"
        " (1 without a key, 2 with a key not 8 bytes long, 1 with a null value,"
        " 3 with a time a pcap record cannot hold); 2 cut to 262144 bytes, the pcap limit;"
        " 2 with a malformed orig_len header (written with their captured length"
        " as the wire length); 1 read later than the 2 s reorder bound allows"
    ), closing  # the genuine record after the one dated 2106
    assert read_to_the_end(out) == written
    back = read_capture(str(out))
    assert back.error is None
    assert Counter(genuine) <= Counter(back.records), "every genuine record"
    lengths = dict(zip([ts for ts, _ in back.records], dumped_with_lengths(out), strict=True))
    assert lengths[START_US + 7] == (0, 0)
    # The last valid time comes last (libpcap here reads its seconds as signed).
    assert back.records[-1][1] == flow_frame(1, 1)
    assert dumped_with_lengths(out)[-1] == (60, 60)
    assert lengths[START_US + 11] == (PCAP_LIMIT, PCAP_LIMIT + 1)
    assert lengths[START_US + 12] == (PCAP_LIMIT, 400_000)
    assert lengths[START_US + 21] == (96, 1514)
    assert lengths[START_US + 22] == lengths[START_US + 23] == (96, 96)
    times = [ts for ts, _ in back.records]
    assert times == sorted(times)


# -- the filter


FILTERS = [
    "udp port 53",
    "vlan and tcp",
    "icmp or arp",
    "ip6 or (tcp[tcpflags] & tcp-push != 0)",
    "greater 600 and not vlan",
    "ether[0] & 1 = 1",
]


@pytest.fixture(scope="module")
def mixed_topic(kafka, tmp_path_factory):
    """A topic of capgen's mixed traffic (TCP, UDP, ICMP, ARP, IPv6, VLAN),
    replayed with --snaplen 200, and the whole of it dumped back."""
    tmp = tmp_path_factory.mktemp("mixed")
    capture = tmp / "mixed.pcap"
    capgen.generate(str(capture), packets=6000, flows=120, size=None, seed=3)
    name = f"dump-mixed-{int(time.time() * 1000)}"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    admin.create_topics([NewTopic(name, 3, 1, config=KEEP)])[name].result(30)
    wait_topic_ready(kafka.bootstrap, name, 3)
    run = run_fastcapa("-r", str(capture), "-t", name, "-k", kafka.bootstrap, "-q", "2",
                       "--snaplen", "200")  # fmt: skip
    assert run.status == 0, run.stderr
    whole = tmp / "whole.pcap"
    run = run_fastcapa("dump", "-t", name, "-k", kafka.bootstrap, "-o", str(whole))
    assert run.status == 0, run.stderr
    return name, capture, whole


@pytest.mark.parametrize("expr", FILTERS)
def test_filter_writes_what_tcpdump_selects(expr, mixed_topic, kafka, fastcapa, tmp_path):
    """The dump's --filter picks the same packets as tcpdump reading the
    unfiltered dump with the same filter (cut frames included: `greater`
    tests the length on the wire)."""
    topic, _, whole = mixed_topic
    selected = tmp_path / "by-tcpdump.pcap"
    tcpdump = subprocess.run(
        ["tcpdump", "-r", str(whole), "-w", str(selected), expr],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert tcpdump.returncode == 0, tcpdump.stderr
    expected = read_capture(str(selected)).records
    assert 0 < len(expected) < 6000, f"{expr!r} should select some packets, not all"
    out = tmp_path / "filtered.pcap"
    run = dump(fastcapa, kafka, topic, out, "--filter", expr)
    assert read_capture(str(out)).records == expected
    assert f"{6000 - len(expected)} in the window did not match the filter" in run.stderr
    assert dumped_with_lengths(out) == dumped_with_lengths(selected)


# -- wire length


def test_wire_length_of_cut_frames_comes_back(mixed_topic, kafka, new_topic, fastcapa, tmp_path):
    """Frames cut by --snaplen, and records already cut in a replayed file,
    get their length on the wire back as the pcap record's length."""
    tools_present()
    _, capture, whole = mixed_topic
    original = [len(frame) for _, frame in read_capture(str(capture)).records]
    back = dumped_with_lengths(whole)
    # The dump is in time order, as the file is: record i is frame i.
    assert [wire for _, wire in back] == original
    assert [cap for cap, _ in back] == [min(n, 200) for n in original]
    assert any(n > 200 for n in original)

    # A file whose records are already cut (caplen < len), replayed as it is.
    already_cut = tmp_path / "cut.pcap"
    records = [(START_US + i, flow_frame(i, i, 100), 100 + 7 * i) for i in range(200)]
    write_capture(str(already_cut), records, snaplen=100)
    topic = new_topic(partitions=2, config=KEEP)
    replay(fastcapa, kafka, already_cut, topic, "-q", "2")
    out = tmp_path / "back.pcap"
    dump(fastcapa, kafka, topic, out)
    assert dumped_with_lengths(out) == [(100, wire) for _, _, wire in records]


# -- windows


def engine_read(kafka, topic: str, **query) -> tuple[float, dict[str, int]]:
    """Runs a dump through the native object; (seconds taken, its counters)."""
    from fastcapa import _fastcapa

    started = time.monotonic()
    with open("/dev/null", "wb") as sink:
        d = _fastcapa.Dump(
            [topic], [("bootstrap.servers", kafka.bootstrap)], sink.fileno(), **query
        )
        try:
            while not d.run(1.0):
                pass
            return time.monotonic() - started, d.counters()
        finally:
            d.close()


def check_windows(fastcapa, kafka, topic, reference, cases, tmp_path) -> None:
    """Each window holds exactly the reference's frames in it, in time order."""
    for i, (first, last) in enumerate(cases):
        out = tmp_path / f"window-{i}.pcap"
        run = dump(fastcapa, kafka, topic, out, "--from", str(first), "--to", str(last))
        expected = sorted(r for r in reference if first <= r[0] <= last)
        assert f"{len(expected)} frames" in run.stderr, (first, last, run.stderr)
        assert "reorder bound" not in run.stderr, run.stderr
        assert read_capture(str(out)).records == expected, (first, last)


def test_windows_on_a_replayed_topic_are_exact_and_cheap(kafka, new_topic, fastcapa, tmp_path):
    """Windows on a replayed topic (a minute of traffic): exactly the frames
    of the window, in time order, and a one-second window reads a small part
    of the topic."""
    capture = tmp_path / "span.pcap"
    reference = skewed_capture(capture, 200_000, step_us=300, seed=9)  # 60 s
    topic = new_topic(partitions=4, config=KEEP)
    replay(fastcapa, kafka, capture, topic, "--partition-by", "flow")
    second = (START_US + 31_000_000, START_US + 32_000_000 - 1)
    cases = [
        second,
        (START_US + 7_000_050, START_US + 7_000_350),  # one frame
        (START_US, START_US + 500_000),  # the first half second
        (START_US + 59_500_000, START_US + 90_000_000),  # past the end
        (START_US - 10_000_000, START_US - 1),  # before the start: nothing
    ]
    check_windows(fastcapa, kafka, topic, reference, cases, tmp_path)

    # What a window costs: its own frames plus the reorder bound's worth
    # (2 s) on either side and the search's probes, not the whole topic.
    whole_s, whole = engine_read(kafka, topic)
    assert whole["read"] == whole["written"] == 200_000
    part_s, part = engine_read(kafka, topic, start=second[0], end=second[1])
    assert part["written"] == sum(1 for ts, _ in reference if second[0] <= ts <= second[1])
    assert part["read"] < 30_000, part
    print(f"\nwindow of 1 s: {part_s:.3f} s, whole topic: {whole_s:.3f} s", file=sys.stderr)


def produce_two_producers(bootstrap: str, topic: str, partitions: int, lag_us: int):
    """Each partition written by two producers, the second `lag_us` behind
    the first (as when one transmit worker's producer lags): within every
    partition, records up to `lag_us` late. 40 s of traffic, 1 ms apart per
    partition. Returns the (time, frame) records."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    reference = []
    for p in range(partitions):
        sent = []
        for i in range(40_000):
            ts = START_US + i * 1000 + p
            frame = flow_frame(p, i)
            reference.append((ts, frame))
            lane = (i // 50) % 2  # flows of 50 frames, alternately
            sent.append((ts + lane * lag_us, ts, frame))
        for _, ts, frame in sorted(sent):
            producer.produce(topic, key=key(ts), value=frame, partition=p)
            producer.poll(0)
    assert producer.flush(60) == 0
    return reference


def test_windows_on_a_topic_with_disorder_within_the_bound(kafka, new_topic, fastcapa, tmp_path):
    """Records up to 1.5 s late in every partition (two producers per
    partition, one lagging): the dump is in order and every window exact,
    its edges in the disorder included."""
    topic = new_topic(partitions=3, config=KEEP)
    reference = produce_two_producers(kafka.bootstrap, topic, 3, lag_us=1_500_000)
    assert late_records(read_topic(kafka.bootstrap, topic, timeout=120)) > 10_000
    out = tmp_path / "whole.pcap"
    run = dump(fastcapa, kafka, topic, out)
    assert "120000 frames" in run.stderr and "reorder bound" not in run.stderr, run.stderr
    assert read_capture(str(out)).records == sorted(reference)
    cases = [
        (START_US + 10_000_000, START_US + 11_000_000),
        (START_US + 10_020_000, START_US + 10_070_000),
        (START_US + 1_234_567, START_US + 38_765_432),
        (START_US + 39_990_000, START_US + 45_000_000),
    ]
    check_windows(fastcapa, kafka, topic, reference, cases, tmp_path)


def test_a_topic_that_breaks_the_bound_loses_nothing(kafka, new_topic, fastcapa, tmp_path):
    """A replay far faster than the capture, three transmit workers sharing
    each partition: records can arrive more than the bound late. A whole
    dump still writes every frame, says how many came too late, and counts
    exactly the inversions the file holds."""
    capture = tmp_path / "fast.pcap"
    reference = skewed_capture(capture, 100_000, step_us=200, seed=13)  # 20 s
    topic = new_topic(partitions=4, config=KEEP)
    replay(fastcapa, kafka, capture, topic, "-q", "1", "--tx-workers", "3",
           "--partition-by", "flow")  # fmt: skip
    worst = 0
    most: dict[int, int] = {}
    for r in read_topic(kafka.bootstrap, topic, timeout=120):
        k = struct.unpack(">Q", r.key)[0]
        most[r.partition] = max(most.get(r.partition, 0), k)
        worst = max(worst, most[r.partition] - k)
    out = tmp_path / "all.pcap"
    run = dump(fastcapa, kafka, topic, out)
    back = read_capture(str(out)).records
    assert Counter(back) == Counter(reference), "every frame once"
    # Written out of order: below a time already written.
    inversions = latest = 0
    for ts, _ in back:
        inversions += ts < latest
        latest = max(latest, ts)
    # Lateness is read record by record (a record more than the bound below
    # the one before it): never said of a topic that keeps the bound, and
    # always of one where a producer fell far behind (a jump back of seconds).
    said = "reorder bound allows" in run.stderr
    assert not said or worst > 2_000_000, (worst, run.stderr)
    assert said or worst < 6_000_000, (worst, run.stderr)
    if inversions:
        assert f"{inversions} written out of time order" in run.stderr, run.stderr
    else:
        assert "out of time order" not in run.stderr
    print(f"\nworst lateness {worst / 1e6:.2f} s, {inversions} inversions", file=sys.stderr)


@pytest.mark.netns
@pytest.mark.skipif(not netns_available(), reason="needs root and network namespaces")
def test_window_on_a_live_captured_topic(kafka, new_topic, tmp_path, fastcapa):
    """A probe capturing on a veth pair with two queues: a one-second window
    of what it captured comes back exactly, in time order."""
    from fastcapa_support.runner import write_capture as write_frames

    frames = [flow_frame(i % 97, i, 80) for i in range(3000)]
    topic = new_topic(partitions=4)
    with VethPair(queues=2) as veth:
        probe = Probe(veth.probe_side, topic, kafka.bootstrap, tmp_path, "-q", "2")
        sent = veth.send(write_frames(tmp_path / "live.pcap", frames), rate=1000)
        probe.wait_taken(sent["sent"])
        status, err, _ = probe.stop()
    assert status == 0, err
    captured = sorted(
        (struct.unpack(">Q", r.key)[0], r.value) for r in read_topic(kafka.bootstrap, topic)
    )
    assert Counter(f for _, f in captured) == Counter(frames)
    first = captured[len(captured) // 3][0]
    last = first + 1_000_000
    expected = [r for r in captured if first <= r[0] <= last]
    assert 500 < len(expected) < 1500
    out = tmp_path / "window.pcap"
    dump(fastcapa, kafka, topic, out, "--from", str(first), "--to", str(last))
    assert read_capture(str(out)).records == expected


# -- pipes


def test_a_reader_that_leaves_early_ends_the_dump_quietly(kafka, new_topic, fastcapa, tmp_path):
    """`fastcapa dump | tcpdump -c 10 -r -`: when the reader has had enough
    and closes the pipe, the dump ends at once, status 0, nothing on stderr."""
    capture = tmp_path / "many.pcap"
    skewed_capture(capture, 100_000, step_us=10)
    topic = new_topic(partitions=2, config=KEEP)
    replay(fastcapa, kafka, capture, topic)
    pipeline = subprocess.run(
        f"{sys.executable} -m fastcapa dump -t {topic} -k {kafka.bootstrap}"
        " | tcpdump -c 10 -nr - >/dev/null 2>&1; echo ${PIPESTATUS[0]}",
        shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert pipeline.stdout.strip() == "0", pipeline.stderr
    assert pipeline.stderr == "", pipeline.stderr


# -- bad input


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--filter", "udp port banana"], "invalid filter"),
        (["--filter", "vlan", "--linktype", "147"], "invalid filter"),
        (["-t", "no-such-topic-here"], "does not exist"),
    ],
    ids=["invalid-filter", "filter-for-link-type", "unknown-topic"],
)
def test_bad_input_is_one_line_and_status_2(args, words, kafka, topic, fastcapa, tmp_path):
    out = tmp_path / "never.pcap"
    run = fastcapa("dump", "-t", topic, "-k", kafka.bootstrap, "-o", str(out), *args)
    assert_clean_failure(run, 2)
    assert words in run.stderr, run.stderr
    assert not out.exists(), "no file is left behind"


def test_unreachable_kafka_is_one_line_and_status_2(fastcapa, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    run = fastcapa("dump", "-k", f"127.0.0.1:{port}", "--timeout", "2", "--filter", "udp")
    assert_clean_failure(run, 2)
    assert "cannot reach Kafka" in run.stderr, run.stderr
    assert time.monotonic() - started < 30
