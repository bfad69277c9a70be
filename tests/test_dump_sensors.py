"""`fastcapa dump` at the analyst's desk, against a real broker: pcapng with
one interface per topic (read back by tshark, capinfos, tcpdump and
libpcap), several topics merged into one time order with each counted on
its own, each topic's own index, and times relative to now."""

from __future__ import annotations

import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

import fastcapa
from fastcapa_support.pcapref import read_capture
from fastcapa_support.runner import assert_clean_failure, run_fastcapa

pytestmark = pytest.mark.kafka

KEEP = {"retention.ms": "-1"}  # records dated in the past
START_US = 1_700_000_000_000_000


def frame(n: int, size: int = 60, dport: int = 9000) -> bytes:
    """A UDP frame numbered `n` (in its IPv4 id and payload), `size` bytes."""
    payload = struct.pack("!I", n).ljust(size - 42, b"\0")
    udp = struct.pack("!HHHH", 1024 + n % 1000, dport, 8 + len(payload), 0)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), n & 0xFFFF, 0, 64, 17, 0,
        bytes([10, 0, n >> 8 & 0xFF, n & 0xFF]), bytes([10, 100, 0, 1]),
    )  # fmt: skip
    return b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00" + ip + udp + payload


Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]] | None, int]


def produce(bootstrap: str, topic: str, records: list[Record]) -> None:
    """Writes (key, value, headers, partition) records as they are."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for key, value, headers, partition in records:
        producer.produce(topic, key=key, value=value, headers=headers, partition=partition)
    assert producer.flush(30) == 0


def key(ts: int) -> bytes:
    return struct.pack(">Q", ts)


def dump(bootstrap: str, *args: str, status: int = 0):
    run = run_fastcapa("dump", "-k", bootstrap, *args, timeout=180)
    assert run.status == status, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    return run


def tshark_fields(path: Path, *fields: str) -> list[list[str]]:
    args = [a for f in fields for a in ("-e", f)]
    out = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=|", *args],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return [line.split("|") for line in out.stdout.splitlines()]


@pytest.fixture(scope="module")
def two_sensors(kafka, tmp_path_factory):
    """Topics `east` (3 partitions) and `west` (2), their frames interleaved
    in time; a tenth of west's are cut, with their wire length in the
    `orig_len` header. Returns (east, west, expected) where expected is
    [(time µs, topic, frame, wire length)] in time order."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from fastcapa_support.fixtures import wait_topic_ready

    names = {}
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    for name, partitions in (("east", 3), ("west", 2)):
        topic = f"sensors-{name}-{time.time_ns() % 10**9}"
        admin.create_topics([NewTopic(topic, partitions, 1, config=KEEP)])[topic].result(30)
        wait_topic_ready(kafka.bootstrap, topic, partitions)
        names[name] = topic
    east, west = names["east"], names["west"]
    expected = []
    east_records: list[Record] = []
    west_records: list[Record] = []
    for n in range(3000):
        ts = START_US + n * 997
        if n % 3 == 2:
            data = frame(n, 60 + n % 200)
            wire = len(data)
            headers = None
            if n % 10 == 5:
                wire = len(data) + 1400
                headers = [("orig_len", struct.pack(">I", wire))]
            west_records.append((key(ts), data, headers, n % 2))
            expected.append((ts, west, data, wire))
        else:
            data = frame(n, 60 + n % 300, dport=53 if n % 4 == 0 else 9000)
            east_records.append((key(ts), data, None, n % 3))
            expected.append((ts, east, data, len(data)))
    produce(kafka.bootstrap, east, east_records)
    produce(kafka.bootstrap, west, west_records)
    return east, west, expected


def test_pcapng_names_each_topic_and_merges_them_in_time_order(two_sensors, kafka, tmp_path):
    east, west, expected = two_sensors
    out = tmp_path / "both.pcapng"
    run = dump(kafka.bootstrap, "-t", f"{east},{west}", "-o", str(out))
    n_east = sum(1 for r in expected if r[1] == east)
    assert run.stderr.strip() == (
        f"fastcapa dump: {len(expected)} frames from topics {east}, {west};"
        f" {east}: {n_east} frames; {west}: {len(expected) - n_east} frames"
    )
    # tshark: each frame on its topic's interface, at its time, with its
    # captured and original lengths.
    rows = tshark_fields(out, "frame.interface_name", "frame.time_epoch", "frame.cap_len",
                         "frame.len")  # fmt: skip
    assert rows == [
        [topic, f"{ts // 1_000_000}.{ts % 1_000_000:06d}000", str(len(data)), str(wire)]
        for ts, topic, data, wire in expected
    ]
    # libpcap: the same frames, byte for byte.
    capture = read_capture(str(out))
    assert capture is not None and capture.error is None
    assert capture.records == [(ts, data) for ts, _, data, _ in expected]
    # capinfos: the section and interface blocks.
    info = subprocess.run(["capinfos", str(out)], capture_output=True, text=True, timeout=60)
    assert info.returncode == 0, info.stderr
    assert f"Capture application: fastcapa {fastcapa.__version__}" in info.stdout
    assert "Number of interfaces in file: 2" in info.stdout
    assert f"Name = {east}" in info.stdout and f"Name = {west}" in info.stdout
    assert "Strict time order:   True" in info.stdout
    assert "Time precision = microseconds (6)" in info.stdout
    # tcpdump reads it to its end.
    td = subprocess.run(["tcpdump", "-nr", str(out)], capture_output=True, text=True,
                        timeout=60)  # fmt: skip
    assert td.returncode == 0, td.stderr
    assert len(td.stdout.splitlines()) == len(expected)


def test_pcapng_and_pcap_hold_the_same_frames(two_sensors, kafka, tmp_path):
    """The format changes the container, not what is in it: by the -o name
    or by --format (to standard output)."""
    _, west, expected = two_sensors
    pcap, pcapng = tmp_path / "w.pcap", tmp_path / "w.pcapng"
    window = ("--from", str(START_US + 500_000), "--to", str(START_US + 1_500_000))
    dump(kafka.bootstrap, "-t", west, "-o", str(pcap), *window)
    with open(pcapng, "wb") as stream:
        run = subprocess.run(
            [sys.executable, "-m", "fastcapa", "dump", "-k", kafka.bootstrap, "-t", west,
             "--format", "pcapng", *window],
            stdout=stream, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert pcap.read_bytes()[:4] == b"\xd4\xc3\xb2\xa1"
    assert pcapng.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    in_window = [
        (ts, data)
        for ts, topic, data, _ in expected
        if topic == west and START_US + 500_000 <= ts <= START_US + 1_500_000
    ]
    assert read_capture(str(pcap)).records == in_window
    assert read_capture(str(pcapng)).records == in_window
    lengths = tshark_fields(pcapng, "frame.len")
    assert lengths == tshark_fields(pcap, "frame.len")


def test_a_filter_and_a_window_over_two_topics(two_sensors, kafka, tmp_path):
    east, west, expected = two_sensors
    out = tmp_path / "dns.pcapng"
    first, last = START_US + 300_000, START_US + 2_000_000
    run = dump(kafka.bootstrap, "-t", east, "-t", west, "-o", str(out), "--filter",
               "udp port 53", "--from", str(first), "--to", str(last))  # fmt: skip
    wanted = [
        r for r in expected if first <= r[0] <= last and r[1] == east and r[2][36:38] == b"\0\x35"
    ]
    assert wanted
    rows = tshark_fields(out, "frame.interface_name", "ip.id")
    assert rows == [[east, f"0x{n:04x}"] for n in (struct.unpack("!H", r[2][18:20])[0]
                                                    for r in wanted)]  # fmt: skip
    in_window = [r for r in expected if first <= r[0] <= last]
    east_missed = sum(1 for r in in_window if r[1] == east) - len(wanted)
    west_missed = sum(1 for r in in_window if r[1] == west)
    assert f"{east}: {len(wanted)} frames, {east_missed} in the window did not match" in run.stderr
    assert f"{west}: 0 frames, {west_missed} in the window did not match" in run.stderr


def test_each_topic_counts_what_it_skipped(kafka, new_topic, tmp_path):
    clean, dirty = new_topic(config=KEEP), new_topic(config=KEEP)
    produce(kafka.bootstrap, clean, [(key(START_US + i), frame(i), None, 0) for i in range(5)])
    produce(kafka.bootstrap, dirty, [
        (key(START_US + 10), frame(10), None, 0),
        (None, frame(11), None, 0),
        (b"short", frame(12), None, 0),
        (key(START_US + 13), None, None, 0),
    ])  # fmt: skip
    out = tmp_path / "both.pcapng"
    run = dump(kafka.bootstrap, "-t", f"{clean},{dirty}", "-o", str(out))
    assert run.stderr.strip() == (
        f"fastcapa dump: 6 frames from topics {clean}, {dirty}; {clean}: 5 frames;"
        f" {dirty}: 1 frames, skipped 3 records (1 without a key, 1 with a key not 8 bytes"
        " long, 1 with a null value)"
    )
    assert [t for t, _ in read_capture(str(out)).records] == [START_US + i for i in range(5)] + [
        START_US + 10
    ]


def test_each_topic_uses_its_own_index(two_sensors, kafka, tmp_path):
    """East is indexed, west is not: east is planned from its index, west
    scanned, and the file is the one a scan of both writes."""
    east, west, _ = two_sensors
    run = run_fastcapa("index", "-t", east, "-k", kafka.bootstrap, "--until-caught-up",
                       timeout=180)  # fmt: skip
    assert run.status == 0, run.stderr
    query = ("-t", f"{east},{west}", "--filter", "udp port 53", "--from",
             str(START_US + 1_000_000))  # fmt: skip
    planned, scanned = tmp_path / "planned.pcapng", tmp_path / "scanned.pcapng"
    run = dump(kafka.bootstrap, *query, "-o", str(planned), "--explain")
    assert f"plan for topic {east}: index {east}.index" in run.stderr, run.stderr
    assert f"plan for topic {west}: no index in {west}.index" in run.stderr, run.stderr
    dump(kafka.bootstrap, *query, "-o", str(scanned), "--no-index")
    assert planned.read_bytes() == scanned.read_bytes()
    assert read_capture(str(planned)).records


def test_times_relative_to_now(kafka, new_topic, tmp_path):
    topic = new_topic(config=KEEP)
    now = time.time_ns() // 1000
    ages_s = [7200, 1800, 600, 5]
    records = [(key(now - age * 1_000_000), frame(i), None, 0) for i, age in enumerate(ages_s)]
    produce(kafka.bootstrap, topic, records)

    def ages(*window: str) -> list[int]:
        out = tmp_path / "w.pcap"
        dump(kafka.bootstrap, "-t", topic, "-o", str(out), *window)
        return [round((now - ts) / 1e6) for ts, _ in read_capture(str(out)).records]

    assert ages("--from", "-1h") == [1800, 600, 5]
    assert ages("--from=-1h", "--to", "-15m") == [1800]
    assert ages("--from", "-2h30m", "--to", "-1h") == [7200]
    assert ages("--from", "-90s", "--to", "now") == [5]
    assert ages("--to", "-0.5d") == []


def test_follow_from_now_is_a_live_view(kafka, new_topic, tmp_path):
    """`--follow --from now` shows what arrives after it started, not what
    the topic held before."""
    topic = new_topic(partitions=2, config=KEEP)
    old = time.time_ns() // 1000 - 60_000_000
    produce(kafka.bootstrap, topic, [(key(old + i), frame(i), None, i % 2) for i in range(50)])
    out = tmp_path / "live.pcapng"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastcapa", "dump", "-k", kafka.bootstrap, "-t", topic,
         "--follow", "--from", "now", "--count", "6", "-o", str(out)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(3)  # the dump has started and taken its `now`
        fresh = time.time_ns() // 1000
        produce(kafka.bootstrap, topic,
                [(key(fresh + i), frame(100 + i), None, i % 2) for i in range(6)])  # fmt: skip
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, stderr
    assert [ts for ts, _ in read_capture(str(out)).records] == [fresh + i for i in range(6)]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-t", "a,b,a"], "topic a is named twice"),
        (["-t", "a,b", "--index-topic", "a.index"], "give one per topic"),
        (["-t", "a,,b"], "expected topic names separated by commas"),
        (["--from", "-15x"], "expected ISO 8601"),
        (["--from", "yesterday"], "back from now"),
        (["--format", "pcapx"], "invalid choice"),
    ],
    ids=["topic-twice", "index-count", "empty-topic", "bad-duration", "bad-time", "bad-format"],
)
def test_bad_queries_are_one_line_and_status_2(args, words, tmp_path):
    run = run_fastcapa("dump", "-k", "127.0.0.1:1", "-o", str(tmp_path / "x.pcap"), *args)
    assert_clean_failure(run, 2)
    assert words in run.stderr, run.stderr
