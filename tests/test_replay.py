"""The replay path end to end: capture files through the whole pipeline into a
real Kafka broker, read back by an independent consumer and by `fastcapa dump`."""

from __future__ import annotations

import json
import shutil
import struct
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from fastcapa_support import corpus
from fastcapa_support.corpus import CORPUS
from fastcapa_support.kafka_read import read_topic
from fastcapa_support.pcapref import read_capture
from fastcapa_support.runner import assert_accounting, assert_clean_failure

pytestmark = pytest.mark.kafka

# Records carry the time of production as Kafka timestamp; the capture time,
# years old for the corpus, is the key. Keep them however old all the same.
KEEP = {"retention.ms": "-1"}

CORPUS_FILES = [p for p in corpus.files() if p.suffix in (".pcap", ".pcapng")]


def final_report(path: Path) -> dict:
    reports = [json.loads(line) for line in path.read_text().splitlines()]
    assert reports and reports[-1]["final"]
    return reports[-1]


def as_in_pcap(ts_us: int) -> int:
    """The key read back from a pcap record written for `ts_us`: a record's
    seconds are an unsigned 32-bit field."""
    signed = ts_us - (1 << 64) if ts_us >= 1 << 63 else ts_us
    seconds, micros = divmod(signed, 1_000_000)
    return (seconds % (1 << 32)) * 1_000_000 + micros


def writable(ts_us: int) -> bool:
    """Whether `fastcapa dump` can write a record for this key: a time from
    1970 to 2106, or a negative one that wrapped and fits the 32-bit seconds
    field (libpcap here reads that field as signed: files dated 2038-2106)."""
    if ts_us < (1 << 32) * 1_000_000:
        return True
    signed = ts_us - (1 << 64)
    return ts_us >= 1 << 63 and signed // 1_000_000 >= -(1 << 31)


def assert_topic_holds(records, expected: list[tuple[int, bytes]], file_order=True) -> None:
    """Same multiset of (key, value); keys are 8-byte big-endian µs, Kafka
    timestamps the time of production (within the last hour: the corpus'
    capture times are years old); with `file_order`, the records of each
    partition keep their order in the file."""
    assert len(records) == len(expected)
    got = sorted((r.key, r.value) for r in records)
    want = sorted((struct.pack(">Q", ts), frame) for ts, frame in expected)
    assert got == want
    position = defaultdict(list)
    for index, (ts, frame) in enumerate(expected):
        position[(struct.pack(">Q", ts), frame)].append(index)
    by_partition = defaultdict(list)
    for r in records:
        assert len(r.key) == 8
        now_ms = time.time() * 1000
        assert now_ms - 3_600_000 < r.timestamp_ms <= now_ms + 1000
        by_partition[r.partition].append(position[(r.key, r.value)].pop(0))
    if file_order:
        for indexes in by_partition.values():
            assert indexes == sorted(indexes), "a partition lost the file order"


def assert_flows_in_order(records) -> None:
    """Each generated flow lands on one partition, its frames in sequence."""
    flows = defaultdict(list)
    for r in records:
        at = r.value.find(b"FCAP")
        assert at >= 0
        flow, seq = struct.unpack("!II", r.value[at + 4 : at + 12])
        flows[flow].append((r.partition, seq))
    for flow, seen in flows.items():
        assert len({p for p, _ in seen}) == 1, f"flow {flow} spread over partitions"
        assert [s for _, s in seen] == list(range(len(seen))), f"flow {flow} out of order"


@corpus.needed()
@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_corpus_round_trip(path, kafka, new_topic, fastcapa, tmp_path):
    reference = read_capture(str(path))
    if reference is None:
        pytest.skip("libpcap cannot open this file")
    topic = new_topic(partitions=1, config=KEEP)
    stats = tmp_path / "stats.jsonl"
    run = fastcapa("-r", str(path), "-t", topic, "-k", kafka.bootstrap, "--stats-json", str(stats))
    assert run.status == (1 if reference.error else 0), run.stderr
    assert "Traceback" not in run.stderr
    report = final_report(stats)
    assert_accounting(report)
    assert report["kaf"]["out"] == len(reference.records)
    records = read_topic(kafka.bootstrap, topic) if reference.records else []
    assert_topic_holds(records, reference.records)

    # And the way back: `fastcapa dump` gives the same records, in order.
    out = tmp_path / "back.pcap"
    dump = fastcapa(
        "dump",
        "-t",
        topic,
        "-k",
        kafka.bootstrap,
        "-o",
        str(out),
        "--linktype",
        str(reference.linktype),
    )
    assert dump.status == 0, dump.stderr
    back = read_capture(str(out))
    assert back is not None and back.error is None
    assert back.linktype == reference.linktype
    # Times past 2106 (pcapng files) cannot be written: skipped and said so.
    kept = [(ts, f) for ts, f in reference.records if writable(ts)]
    assert sorted(back.records) == sorted((as_in_pcap(ts), f) for ts, f in kept)
    in_order = [as_in_pcap(ts) for ts in sorted(ts for ts, _ in kept)]
    assert [ts for ts, _ in back.records] == in_order
    if len(kept) < len(reference.records):
        skipped = len(reference.records) - len(kept)
        assert f"{skipped} with a time a pcap record cannot hold" in dump.stderr


def test_multi_queue_replay_spreads_and_keeps_flow_order(kafka, new_topic, fastcapa, tmp_path):
    """-q 2 with 3 transmit workers over 4 partitions: every record once, and
    the records of each flow in file order within their partition."""
    from fastcapa_support import capgen as gen_capture

    capture = tmp_path / "mix.pcap"
    gen_capture.generate(str(capture), packets=20_000, flows=300, size=None, seed=7)
    reference = read_capture(str(capture))
    topic = new_topic(partitions=4, config=KEEP)
    stats = tmp_path / "stats.jsonl"
    run = fastcapa(
        "-r",
        str(capture),
        "-t",
        topic,
        "-k",
        kafka.bootstrap,
        "-q",
        "2",
        "--tx-workers",
        "3",
        "--partition-by",
        "flow",
        "--stats-json",
        str(stats),
        "-s",
        str(tmp_path / "librdkafka.jsonl"),
        "-X",
        "statistics.interval.ms=20",
        "-X",
        "client.id=probe-under-test",
    )
    assert run.status == 0, run.stderr
    report = final_report(stats)
    assert_accounting(report)
    # librdkafka's own statistics, one JSON object a line, from producers
    # configured with the -X settings.
    kafka_stats = [
        json.loads(line) for line in (tmp_path / "librdkafka.jsonl").read_text().splitlines()
    ]
    assert kafka_stats and {s["type"] for s in kafka_stats} == {"producer"}
    assert {s["client_id"] for s in kafka_stats} == {"probe-under-test"}
    assert len(report["queues"]) == 2 and all(q["taken"] > 0 for q in report["queues"])
    assert len(report["workers"]) == 3 and all(w["delivered"] > 0 for w in report["workers"])
    records = read_topic(kafka.bootstrap, topic)
    assert_topic_holds(records, reference.records, file_order=False)
    assert_flows_in_order(records)
    assert len({r.partition for r in records}) == 4


def test_batch_partitioning_spreads_evenly_in_file_order(kafka, new_topic, fastcapa, tmp_path):
    """The default partitioning: each burst to one partition, moving on after
    a message set (batch.num.messages, here 1000): four partitions get equal
    shares, each in file order."""
    from fastcapa_support import capgen as gen_capture

    capture = tmp_path / "even.pcap"
    gen_capture.generate(str(capture), packets=20_000, flows=50, size=None, seed=5)
    reference = read_capture(str(capture))
    topic = new_topic(partitions=4, config=KEEP)
    stats = tmp_path / "stats.jsonl"
    run = fastcapa("-r", str(capture), "-t", topic, "-k", kafka.bootstrap,
                   "-X", "batch.num.messages=1000", "--stats-json", str(stats))  # fmt: skip
    assert run.status == 0, run.stderr
    assert_accounting(final_report(stats))
    records = read_topic(kafka.bootstrap, topic)
    assert_topic_holds(records, reference.records)
    shares = Counter(r.partition for r in records)
    assert sorted(shares) == [0, 1, 2, 3]
    # Stints of 1000 frames, moving on after a burst (-w 256) crosses one.
    assert max(shares.values()) - min(shares.values()) <= 1256, shares


def test_batch_partitioning_gives_workers_their_own_partitions(
    kafka, new_topic, fastcapa, tmp_path
):
    """Two transmit workers on one ring, four partitions: worker i writes
    only the partitions p with p % 2 == i, so each partition holds the frames
    of one worker's lane (flows picked by hash), in file order."""
    from fastcapa_support import capgen as gen_capture

    capture = tmp_path / "own.pcap"
    gen_capture.generate(str(capture), packets=20_000, flows=200, size=None, seed=6)
    reference = read_capture(str(capture))
    topic = new_topic(partitions=4, config=KEEP)
    stats = tmp_path / "stats.jsonl"
    run = fastcapa("-r", str(capture), "-t", topic, "-k", kafka.bootstrap, "--tx-workers", "2",
                   "-X", "batch.num.messages=1000", "--stats-json", str(stats))  # fmt: skip
    assert run.status == 0, run.stderr
    report = final_report(stats)
    assert_accounting(report)
    records = read_topic(kafka.bootstrap, topic)
    assert_topic_holds(records, reference.records)
    flows_of = defaultdict(set)
    for r in records:
        at = r.value.find(b"FCAP")
        if at >= 0:
            flows_of[r.partition].add(struct.unpack("!I", r.value[at + 4 : at + 8])[0])
    # A flow goes to one lane, so to one worker: it shows up in that worker's
    # two partitions only (0 and 2, or 1 and 3), never in the other's.
    assert flows_of[0] | flows_of[2] and flows_of[1] | flows_of[3]
    assert not (flows_of[0] | flows_of[2]) & (flows_of[1] | flows_of[3])
    delivered = sorted(w["delivered"] for w in report["workers"])
    pair_counts = sorted(
        [
            sum(1 for r in records if r.partition % 2 == 0),
            sum(1 for r in records if r.partition % 2 == 1),
        ]
    )
    assert pair_counts == delivered


def truncated_copy(source: Path, target: Path, keep_records: int) -> int:
    """Copies `source` and cuts it in the middle of record `keep_records`;
    returns how many whole records stay before the damage."""
    shutil.copy(source, target)
    data = source.read_bytes()
    assert data[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4")
    endian = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    offset = 24
    for _ in range(keep_records):
        caplen = struct.unpack(endian + "I", data[offset + 8 : offset + 12])[0]
        offset += 16 + caplen
    target.write_bytes(data[: offset + 16 + 3])  # a header, then 3 bytes of frame
    return keep_records


def classic_pcap(records: list[tuple[int, int, bytes]], big_endian: bool) -> bytes:
    """A classic pcap file, built byte by byte: (seconds, µs, frame) records."""
    order = ">" if big_endian else "<"
    out = struct.pack(order + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for seconds, micros, frame in records:
        out += struct.pack(order + "IIII", seconds, micros, len(frame), len(frame)) + frame
    return out


@pytest.mark.parametrize("big_endian", [False, True], ids=["little-endian", "big-endian"])
def test_capture_times_from_2038_to_2106_are_keys(big_endian, kafka, new_topic, fastcapa, tmp_path):
    """A classic pcap record's seconds are unsigned 32-bit: 2038-01-19T03:14:08Z
    (just past signed 32 bits) and 2106-02-07T06:28:15Z (the last second)
    are valid times, and their keys say so in either byte order."""
    frame = bytes(range(60))
    times = [(1_700_000_000, 5), (0x8000_0000, 1), (0xFFFF_FFFF, 999_999)]
    path = tmp_path / "future.pcap"
    path.write_bytes(classic_pcap([(s, us, frame) for s, us in times], big_endian))
    topic = new_topic(config=KEEP)
    run = fastcapa("-r", str(path), "-t", topic, "-k", kafka.bootstrap)
    assert run.status == 0, run.stderr
    keys = sorted(struct.unpack(">Q", r.key)[0] for r in read_topic(kafka.bootstrap, topic))
    assert keys == [s * 1_000_000 + us for s, us in times]


@corpus.needed()
def test_file_corrupt_part_way(kafka, new_topic, fastcapa, tmp_path):
    source = CORPUS / "afs.pcap"
    broken = tmp_path / "broken.pcap"
    kept = truncated_copy(source, broken, 100)
    reference = read_capture(str(broken))
    assert reference.error and len(reference.records) == kept
    topic = new_topic(partitions=1, config=KEEP)
    stats = tmp_path / "stats.jsonl"
    run = fastcapa(
        "-r", str(broken), "-t", topic, "-k", kafka.bootstrap, "--stats-json", str(stats)
    )
    assert run.status == 1
    assert "Traceback" not in run.stderr
    errors = run.error_lines
    assert len(errors) == 1 and "broken.pcap" in errors[0] and "after record 100" in errors[0]
    report = final_report(stats)
    assert_accounting(report)
    assert_topic_holds(read_topic(kafka.bootstrap, topic), reference.records)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, this is not a capture file\n" * 10, b"\xd4\xc3\xb2\xa1\x02\x00", None],
    ids=["empty", "text", "short-header", "missing"],
)
def test_not_a_capture_file(content, kafka, fastcapa, tmp_path):
    path = tmp_path / "input.pcap"
    if content is not None:
        path.write_bytes(content)
    run = fastcapa("-r", str(path), "-k", kafka.bootstrap)
    assert_clean_failure(run, 2)
    assert str(path) in run.stderr


def test_directory_is_not_a_capture_file(kafka, fastcapa, tmp_path):
    assert_clean_failure(fastcapa("-r", str(tmp_path), "-k", kafka.bootstrap), 2)
