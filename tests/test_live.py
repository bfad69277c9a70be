"""Live capture on a real veth pair into a real Kafka broker.

Each test makes its own network namespace and veth pair with two queues,
sends known frames from the namespace side, captures on this side with
`fastcapa -i`, and checks what Kafka holds with an independent consumer.
"""

from __future__ import annotations

import json
import struct
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from fastcapa import _fastcapa
from fastcapa_support import capgen as gen_capture
from fastcapa_support.frames import ethernet, ipv4, udp, udp_frame
from fastcapa_support.kafka_read import read_topic
from fastcapa_support.netns import VethPair, netns_available
from fastcapa_support.procfs import thread_cpu_seconds
from fastcapa_support.runner import (
    Probe,
    assert_accounting,
    assert_no_stage_gives_more_than_it_took,
    assert_stream_delivered,
    write_capture,
)

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.netns,
    pytest.mark.skipif(not netns_available(), reason="needs root and network namespaces"),
]


def test_every_frame_once_over_two_queues(kafka, new_topic, tmp_path):
    capture = tmp_path / "flows.pcap"
    gen_capture.generate(str(capture), packets=8000, flows=64, size=None, seed=11)
    topic = new_topic(partitions=4)
    with VethPair(queues=2) as veth:
        probe = Probe(
            veth.probe_side,
            topic,
            kafka.bootstrap,
            tmp_path,
            "-q",
            "2",
            "--tx-workers",
            "3",
            "-d",
            "16384",
        )
        sent = veth.send(str(capture), rate=4000)
        probe.wait_taken(sent["sent"])
        status, err, report = probe.stop()
    assert status == 0, err
    assert_accounting(report)
    frames = [f for _, f in gen_capture_frames(capture)]
    assert_stream_delivered(kafka.bootstrap, topic, frames, sent, report)


def gen_capture_frames(path: Path):
    from fastcapa_support.pcapref import read_capture

    return read_capture(str(path)).records


def fragments() -> list[bytes]:
    """An IPv4 UDP datagram of 3000 bytes in three fragments."""
    datagram = udp((bytes(range(256)) * 12)[:2992], sport=4000, dport=5000)
    frames = []
    for offset in range(0, len(datagram), 1480):
        more = 0x2000 if offset + 1480 < len(datagram) else 0
        chunk = datagram[offset : offset + 1480]
        ip = ipv4(chunk, bytes([10, 0, 0, 9]), ident=77, frag=more | offset // 8)
        frames.append(ethernet(ip, src=b"\x02\0\0\0\0\x09"))
    return frames


def ipv6_frame(size: int) -> bytes:
    body = b"\x00" * (size - 14 - 40 - 8)
    udp = struct.pack("!HHHH", 1000, 2000, 8 + len(body), 0) + body
    ip6 = (
        struct.pack("!IHBB", 0x60000000, len(udp), 17, 64)
        + b"\xfd"
        + b"\0" * 14
        + b"\x01"
        + b"\xfd"
        + b"\0" * 14
        + b"\x02"
    )
    return b"\x02\0\0\0\0\xc8\x02\0\0\0\0\x07\x86\xdd" + ip6 + udp


def test_sizes_vlan_ipv6_fragments_exactly(kafka, new_topic, tmp_path):
    frames = [
        udp_frame(b"x" * max(0, size - 42), src=size % 200)
        for size in (60, 64, 128, 512, 1024, 1514, 4000, 9014)
    ]
    frames += [udp_frame(b"tagged" * 10, vlan=100), udp_frame(b"q" * 1400, vlan=4000)]
    frames += [ipv6_frame(86), ipv6_frame(1514), ipv6_frame(9014)]
    frames += fragments()
    frames += [b"\x02\0\0\0\0\xc8\x02\0\0\0\0\x01\x88\xb5" + b"garbage-ethertype" * 3]
    topic = new_topic(partitions=1)
    with VethPair(queues=2, mtu=9000) as veth:
        probe = Probe(veth.probe_side, topic, kafka.bootstrap, tmp_path, "-q", "2")
        veth.send(write_capture(tmp_path / "sizes.pcap", frames))
        probe.wait_taken(len(frames))
        status, err, report = probe.stop()
    assert status == 0, err
    assert_accounting(report)
    assert Counter(r.value for r in read_topic(kafka.bootstrap, topic)) == Counter(frames)


def test_filter_and_snaplen(kafka, new_topic, tmp_path):
    dns = [udp_frame(b"d" * 200, dport=53, src=i) for i in range(1, 30)]
    other = [udp_frame(b"o" * 200, dport=9000 + i, src=i) for i in range(1, 30)]
    mixed = [f for pair in zip(dns, other, strict=True) for f in pair]
    topic = new_topic(partitions=1)
    with VethPair() as veth:
        probe = Probe(
            veth.probe_side,
            topic,
            kafka.bootstrap,
            tmp_path,
            "--filter",
            "udp port 53",
            "--snaplen",
            "96",
        )
        veth.send(write_capture(tmp_path / "mixed.pcap", mixed))
        probe.wait_taken(len(dns))
        time.sleep(0.5)
        status, err, report = probe.stop()
    assert status == 0, err
    assert_accounting(report)
    values = [r.value for r in read_topic(kafka.bootstrap, topic)]
    assert sorted(values) == sorted(f[:96] for f in dns)


def test_small_ring_with_paused_broker_counts_drops(new_topic, tmp_path):
    from fastcapa_support.fixtures import kafka_tool

    with kafka_tool.Cluster(nodes=1) as cluster:
        topic = new_topic(partitions=1, cluster=cluster)
        capture = tmp_path / "burst.pcap"
        gen_capture.generate(str(capture), packets=3000, flows=16, size=200, seed=5)
        with VethPair() as veth:
            probe = Probe(
                veth.probe_side,
                topic,
                cluster.bootstrap,
                tmp_path,
                "-x",
                "8",
                "-X",
                "queue.buffering.max.messages=50",
                "-X",
                "message.timeout.ms=60000",
                "--drain-timeout",
                "30",
            )
            cluster.pause_node(0)
            try:
                veth.send(str(capture), rate=3000)
                probe.wait_taken(3000)
            finally:
                cluster.resume_node(0)
            status, err, report = probe.stop()
        assert status == 0, err
        assert_accounting(report)
        assert report["rx"]["drops"] > 0, report
        assert report["nic"]["taken_in"] == 3000
        delivered = read_topic(cluster.bootstrap, topic)
        assert len(delivered) == report["kaf"]["out"]


def test_sigterm_during_traffic_delivers_what_was_taken(kafka, new_topic, tmp_path):
    capture = tmp_path / "steady.pcap"
    gen_capture.generate(str(capture), packets=20000, flows=32, size=300, seed=9)
    topic = new_topic(partitions=2)
    with VethPair() as veth:
        probe = Probe(veth.probe_side, topic, kafka.bootstrap, tmp_path)
        sender = veth.start("sender", str(capture), "5000", stdout=subprocess.DEVNULL)
        try:
            time.sleep(1.5)
            status, err, report = probe.stop()
        finally:
            sender.kill()
            sender.wait()
    assert status == 0, err
    assert_accounting(report)
    assert 0 < report["kaf"]["out"] < 20000
    assert report["kaf"]["out"] == report["rx"]["taken_in"] - report["rx"]["drops"]
    assert len(read_topic(kafka.bootstrap, topic)) == report["kaf"]["out"]


# Stages whose live reports can be checked: [nic] once the receive workers
# say what they had taken when they read the kernel's counts (nic_taken);
# before that, its in is up to a reading (250 ms) older than its out.
LIVE_STAGES = (
    ("nic", "rx", "tx", "kaf") if "nic_taken" in _fastcapa.RX_COUNTERS else ("rx", "tx", "kaf")
)


def test_no_report_shows_a_stage_giving_more_than_it_took(kafka, new_topic, tmp_path):
    """Every report of a capture under traffic (every 50 ms), not only the
    final one: no stage shows more frames out and dropped than in."""
    capture = tmp_path / "steady.pcap"
    gen_capture.generate(str(capture), packets=15000, flows=32, size=300, seed=5)
    topic = new_topic(partitions=2)
    with VethPair(queues=2) as veth, Probe(
        veth.probe_side, topic, kafka.bootstrap, tmp_path, "-q", "2",
        "--stats-interval", "0.05",
    ) as probe:  # fmt: skip
        sent = veth.send(str(capture), rate=5000)
        probe.wait_taken(sent["sent"])
        status, err, final = probe.stop()
    assert status == 0, err
    assert_accounting(final)
    reports = [json.loads(line) for line in probe.stats.read_text().splitlines()]
    moving = [r for r in reports if 0 < r["kaf"]["out"] < final["kaf"]["out"]]
    assert len(moving) >= 20, f"{len(moving)} reports while frames moved"
    for report in reports:
        assert_no_stage_gives_more_than_it_took(report, LIVE_STAGES)


def scrape(port: int) -> dict[tuple[str, str], float]:
    """fastcapa_frames_total samples by (stage, kind)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        if family.name == "fastcapa_frames":
            for sample in family.samples:
                samples[(sample.labels["stage"], sample.labels["kind"])] = sample.value
    return samples


def test_metrics_move_and_agree_with_the_final_report(kafka, new_topic, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    capture = tmp_path / "m.pcap"
    gen_capture.generate(str(capture), packets=3000, flows=16, size=400, seed=2)
    topic = new_topic(partitions=1)
    with VethPair() as veth:
        probe = Probe(
            veth.probe_side, topic, kafka.bootstrap, tmp_path, "--metrics-port", str(port)
        )
        before = scrape(port)
        veth.send(str(capture), rate=3000)
        probe.wait_taken(3000)
        deadline = time.monotonic() + 30
        while scrape(port)[("kaf", "out")] < 3000 and time.monotonic() < deadline:
            time.sleep(0.2)
        during = scrape(port)
        status, err, report = probe.stop()
    assert status == 0, err
    assert before[("nic", "in")] == 0
    assert during[("kaf", "out")] == report["kaf"]["out"] == 3000
    for stage in ("nic", "rx", "tx", "kaf"):
        assert during[(stage, "in")] == report[stage]["taken_in"]
        assert during[(stage, "dropped")] == report[stage]["drops"]


def test_fragments_of_a_datagram_stay_on_one_queue(kafka, new_topic, tmp_path):
    topic = new_topic(partitions=1)
    frames = fragments()
    with VethPair(queues=2) as veth:
        probe = Probe(veth.probe_side, topic, kafka.bootstrap, tmp_path, "-q", "2")
        veth.send(write_capture(tmp_path / "frags.pcap", frames))
        probe.wait_taken(len(frames))
        status, err, report = probe.stop()
    assert status == 0, err
    assert sorted(q["taken"] for q in report["queues"]) == [0, len(frames)]
    assert Counter(r.value for r in read_topic(kafka.bootstrap, topic)) == Counter(frames)


def worker_cores(pid: int) -> dict[str, str]:
    """fastcapa's worker threads of `pid` -> the cores each may run on."""
    cores = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            status = (task / "status").read_text()
        except FileNotFoundError:
            continue
        if name.startswith("fcapa-"):
            line = next(ln for ln in status.splitlines() if ln.startswith("Cpus_allowed_list"))
            cores[name] = line.split(":")[1].strip()
    return cores


def test_cpus_pin_receive_then_transmit_workers(kafka, new_topic, tmp_path):
    """--cpus 1,0 with one queue and two transmit workers: the receive worker
    on core 1, then the transmit workers on 0 and (wrapping) 1."""
    import os

    if len(os.sched_getaffinity(0)) < 2 or not {0, 1} <= os.sched_getaffinity(0):
        pytest.skip("needs cores 0 and 1")
    topic = new_topic()
    with VethPair() as veth:
        probe = Probe(
            veth.probe_side, topic, kafka.bootstrap, tmp_path, "--cpus", "1,0", "--tx-workers", "2"
        )
        try:
            deadline = time.monotonic() + 20
            expected = {"fcapa-rx-0": "1", "fcapa-tx-0": "0", "fcapa-tx-1": "1"}
            # The banner comes before the workers start and pin themselves.
            while (pinned := worker_cores(probe.proc.pid)) != expected:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        finally:
            status, err, _ = probe.stop()
    assert status == 0, err
    assert pinned == expected


def worker_cpu_seconds(pid: int) -> dict[str, float]:
    """fastcapa's worker threads of `pid` -> CPU seconds each has run."""
    return {name: ran for name, ran in thread_cpu_seconds(pid) if name.startswith("fcapa-")}


def test_idle_probe_sleeps(kafka, new_topic, tmp_path):
    """On a link with no traffic the workers sleep: the receive workers in
    poll(), the transmit workers parked until frames or a stop come. Each
    may use at most 1 % of a core (a transmit worker that woke every 2 ms
    used about 1.1 %; a spinning one uses all of it), and a SIGTERM still
    stops the probe at once."""
    topic = new_topic()
    with VethPair() as veth:
        probe = Probe(
            veth.probe_side, topic, kafka.bootstrap, tmp_path, "-q", "2", "--tx-workers", "2"
        )
        try:
            time.sleep(1.5)  # past start-up: connections made, workers settled
            before = worker_cpu_seconds(probe.proc.pid)
            window_started = time.monotonic()
            time.sleep(3)
            used = {
                name: ran - before.get(name, 0.0)
                for name, ran in worker_cpu_seconds(probe.proc.pid).items()
            }
            window = time.monotonic() - window_started
        finally:
            stop_started = time.monotonic()
            status, err, final = probe.stop()
            stop_took = time.monotonic() - stop_started
    assert status == 0, err
    assert sorted(used) == ["fcapa-rx-0", "fcapa-rx-1", "fcapa-tx-0", "fcapa-tx-1"]
    busy = {name: round(s / window, 4) for name, s in used.items() if s / window > 0.01}
    assert not busy, f"workers busy on an idle link (share of a core): {busy}"
    # The transmit workers are told to finish while parked: they must not
    # sleep out a long park first (generous: CI machines are loaded).
    assert stop_took < 10, stop_took
    assert_accounting(final)
