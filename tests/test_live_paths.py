"""Live paths an operator will hit, each on a veth pair of its own into the
session's broker: `--count`,
the fanout modes, `--idle spin` through a link flap and idle, a kernel ring that
overflows, capture times per frame, and a frame Kafka refuses. (A second
signal during a drain needs a broker to pause: it is in test_faults.py.)

Frames are sent from the namespace side (`VethPair.send`, or the numbered
stream of `steady.py` where the test needs each frame's send time), captured
with `fastcapa -i`, and what Kafka holds is read back by an independent
consumer; every run's final report must make the sums of docs/accounting.md.
"""

from __future__ import annotations

import itertools
import os
import signal
import statistics
import struct
import time
from collections import Counter

import pytest

from fastcapa_support.frames import udp_frame
from fastcapa_support.kafka_read import read_topic
from fastcapa_support.netns import VethPair, netns_available
from fastcapa_support.procfs import thread_cpu_seconds
from fastcapa_support.runner import Probe, assert_accounting, write_capture
from fastcapa_support.steady import SteadySender, check_topic, parse

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.netns,
    pytest.mark.skipif(not netns_available(), reason="needs root and network namespaces"),
]


def numbered(count: int, size: int = 200, flows: int = 1) -> list[bytes]:
    """`count` distinct frames of `flows` flows (one flow: one 5-tuple, so
    a flow hash would put them all on one queue)."""
    return [
        udp_frame(struct.pack("!I", i) + b"n" * (size - 46), sport=1000 + i % flows)
        for i in range(count)
    ]


def assert_holds_exactly(kafka, topic: str, frames: list[bytes]) -> None:
    assert Counter(r.value for r in read_topic(kafka.bootstrap, topic)) == Counter(frames)


# ---------------------------------------------------------------- stopping


def test_count_stops_a_live_capture_by_itself(kafka, new_topic, tmp_path):
    """--count 100 while a stream of 1,000 frames comes at 500/s: the probe
    stops by itself, exit 0, after at least 100 frames and long before the
    stream ends; Kafka holds exactly the first frames of the stream, each
    once, as many as the probe says it delivered."""
    topic = new_topic()
    count, size = 1000, 200
    with VethPair(queues=1) as veth:
        probe = Probe(veth.probe_side, topic, kafka.bootstrap, tmp_path, "--count", "100")
        sender = SteadySender(veth, count, rate=500, size=size)
        try:
            status, err, report = probe.finish(timeout=30)
        finally:
            sender.kill()
            probe.kill()
    assert status == 0, err
    assert_accounting(report)
    delivered = report["kaf"]["out"]
    assert 100 <= delivered < 400, report["kaf"]
    assert delivered == report["rx"]["taken_in"], report  # nothing dropped
    verdict = check_topic(kafka.bootstrap, topic, 1, count, size)
    assert not verdict.bad and verdict.duplicates == 0, verdict.summary()
    assert verdict.missing == list(range(delivered, count)), verdict.summary()


# ---------------------------------------------------------------- fanout


@pytest.mark.parametrize("mode", ["qm", "cpu", "lb"])
def test_each_fanout_mode_delivers_every_frame_once(mode, kafka, new_topic, tmp_path):
    """1,000 frames of one flow over two queues. Each mode spreads them its
    own way (by the veth queue they came on, the core that received them,
    in turn); each must deliver every frame exactly once. `lb` deals them
    out in turn, so both queues must take frames (`hash` would put one flow
    on one queue)."""
    topic = new_topic(partitions=2)
    frames = numbered(1000)
    with VethPair(queues=2) as veth:
        probe = Probe(
            veth.probe_side, topic, kafka.bootstrap, tmp_path, "-q", "2", "--fanout", mode
        )
        try:
            veth.send(write_capture(tmp_path / "f.pcap", frames), rate=2000)
            probe.wait_taken(len(frames))
            status, err, report = probe.stop()
        finally:
            probe.kill()
    assert status == 0, err
    assert_accounting(report)
    assert report["nic"]["taken_in"] == report["kaf"]["out"] == len(frames), report
    taken = [q["taken"] for q in report["queues"]]
    assert sum(taken) == len(frames), taken
    if mode == "lb":
        assert min(taken) > 0, taken
    assert_holds_exactly(kafka, topic, frames)


# ---------------------------------------------------------------- idle spin


def test_spin_mode_delivers_and_rides_out_a_link_flap(kafka, new_topic, tmp_path):
    """--idle spin: frames flow; the probe's end set down says so once on
    stderr and the worker waits; set up again, it says so once and frames
    flow again. Every frame sent while the link was up is in Kafka once."""
    topic = new_topic()
    before, after = numbered(200), numbered(400)[200:]
    with VethPair(queues=1) as veth:
        probe = Probe(veth.probe_side, topic, kafka.bootstrap, tmp_path, "--idle", "spin")
        try:
            veth.send(write_capture(tmp_path / "before.pcap", before))
            probe.wait_taken(len(before))
            veth.set_probe_link(up=False)
            probe.wait_stderr("is down; waiting for it to come back", 10)
            veth.set_probe_link(up=True)
            probe.wait_stderr("is up again", 10)
            veth.send(write_capture(tmp_path / "after.pcap", after))
            probe.wait_taken(len(before) + len(after))
            status, err, report = probe.stop()
        finally:
            probe.kill()
    assert status == 0, err
    assert_accounting(report)
    said = [line for line in err.splitlines() if line.startswith("fastcapa: fcapa-rx-0: ")]
    assert said == [
        f"fastcapa: fcapa-rx-0: {veth.probe_side} is down; waiting for it to come back",
        f"fastcapa: fcapa-rx-0: {veth.probe_side} is up again",
    ], err
    assert report["kaf"]["out"] == len(before) + len(after), report
    assert_holds_exactly(kafka, topic, before + after)


def test_an_idle_spinning_receive_worker_lets_its_transmit_worker_sleep(kafka, new_topic, tmp_path):
    """--idle spin on an idle link: the receive worker spins, but a look
    that finds nothing must not wake the parked transmit worker. Once it
    woke it on every empty look, and the idle transmit worker used most of
    a core; now it sleeps (well under a tenth of the time measured)."""
    topic = new_topic()
    with VethPair(queues=1) as veth:
        probe = Probe(veth.probe_side, topic, kafka.bootstrap, tmp_path, "--idle", "spin")
        try:
            veth.send(write_capture(tmp_path / "some.pcap", numbered(50)))
            probe.wait_taken(50)
            time.sleep(1)  # the last delivery reports in, the worker parked
            pid, window = probe.proc.pid, 3.0
            before = dict(thread_cpu_seconds(pid))
            time.sleep(window)
            after = dict(thread_cpu_seconds(pid))
            status, err, report = probe.stop()
        finally:
            probe.kill()
    assert status == 0, err
    assert_accounting(report)
    spent = {n: after[n] - before.get(n, 0.0) for n in after if n.startswith("fcapa-")}
    assert spent["fcapa-rx-0"] > window / 4, spent  # it did spin: the test measures something
    assert spent["fcapa-tx-0"] < window / 10, spent


# ---------------------------------------------------------------- [nic] drops


def test_a_ring_too_small_for_a_burst_counts_nic_drops_end_to_end(kafka, new_topic, tmp_path):
    """A kernel ring of two 128 KiB blocks (-d 64) and a receive side that
    cannot run while a burst of 2,000 frames of 1,000 bytes arrives (the
    probe is stopped with SIGSTOP, as a worker starved of CPU is): the
    kernel drops what the ring cannot hold and the probe counts it at
    [nic]. The sums hold end to end: every frame sent is counted by the
    kernel, taken or dropped there; everything taken is delivered; Kafka
    holds exactly that many distinct frames of the burst."""
    topic = new_topic()
    frames = numbered(2000, size=1000, flows=8)
    with VethPair(queues=1) as veth:
        probe = Probe(veth.probe_side, topic, kafka.bootstrap, tmp_path, "-d", "64")
        try:
            capture = write_capture(tmp_path / "burst.pcap", frames)
            os.kill(probe.proc.pid, signal.SIGSTOP)
            try:
                veth.send(capture)
            finally:
                os.kill(probe.proc.pid, signal.SIGCONT)
            probe.wait_taken(len(frames))
            status, err, report = probe.stop()
        finally:
            probe.kill()
    assert status == 0, err
    assert_accounting(report)
    nic, rx = report["nic"], report["rx"]
    assert nic["taken_in"] == len(frames), nic
    assert nic["drops"] > 0 and rx["taken_in"] < len(frames), nic
    assert report["kaf"]["out"] == rx["taken_in"] == len(frames) - nic["drops"], report
    held = Counter(r.value for r in read_topic(kafka.bootstrap, topic))
    assert sum(held.values()) == report["kaf"]["out"], len(held)
    assert set(held) <= set(frames) and max(held.values()) == 1


# ---------------------------------------------------------------- capture times


def test_each_frame_keeps_its_own_capture_time(kafka, new_topic, tmp_path):
    """TPACKET_V3 hands frames over in blocks that hold several (a block is
    retired after 4 ms; these frames come 1 ms apart), and each frame
    carries its own time in the block. 400 frames of the numbered stream,
    each stamped by the sender just before it is sent: the keys are all
    different and the gap between two keys follows the gap between the two
    sends. A key taken per block would repeat within the block (a gap of 0
    where the frames were 1 ms apart)."""
    topic = new_topic()
    count = 400
    with VethPair(queues=1) as veth:
        probe = Probe(veth.probe_side, topic, kafka.bootstrap, tmp_path)
        try:
            sender = SteadySender(veth, count, rate=1000, size=200)
            sender.wait(timeout=60)
            probe.wait_taken(count)
            status, err, report = probe.stop()
        finally:
            sender.kill()
            probe.kill()
    assert status == 0, err
    assert report["kaf"]["out"] == count, report
    sent_and_key = {}
    for record in read_topic(kafka.bootstrap, topic):
        _, seq, sent_us = parse(record.value)
        sent_and_key[seq] = (sent_us, int.from_bytes(record.key, "big"))
    assert sorted(sent_and_key) == list(range(count))
    pairs = [sent_and_key[seq] for seq in range(count)]
    keys = [key for _, key in pairs]
    assert len(set(keys)) == count, f"{count - len(set(keys))} repeated keys"
    send_gaps = [b[0] - a[0] for a, b in itertools.pairwise(pairs)]
    key_gaps = [b[1] - a[1] for a, b in itertools.pairwise(pairs)]
    # The premise: frames close enough together to share blocks.
    assert statistics.median(send_gaps) < 2000, statistics.median(send_gaps)
    off = [abs(k - s) for k, s in zip(key_gaps, send_gaps, strict=True)]
    kept = sum(1 for d in off if d <= 500) / len(off)
    assert kept >= 0.9, (
        f"only {kept:.0%} of key gaps within 0.5 ms of the send gaps; "
        f"median miss {statistics.median(off)} µs"
    )


# ---------------------------------------------------------------- refused frames


def test_a_frame_kafka_refuses_is_counted_at_tx_and_said_once(kafka, new_topic, tmp_path):
    """Jumbo frames (8 KiB, on a veth of MTU 9000) among small ones, with
    librdkafka told to take messages of at most 2,000 bytes: each jumbo is
    refused, counted at [tx], and the reason is said on stderr the 1st and
    the 10th time only, in librdkafka's words; every small frame arrives."""
    topic = new_topic()
    small = numbered(100, size=200, flows=4)
    jumbo = [udp_frame(struct.pack("!I", i) + b"J" * 8150, sport=7) for i in range(25)]
    frames = [f for pair in zip(small[:25], jumbo, strict=True) for f in pair] + small[25:]
    with VethPair(queues=1, mtu=9000) as veth:
        probe = Probe(
            veth.probe_side, topic, kafka.bootstrap, tmp_path, "-X", "message.max.bytes=2000"
        )
        try:
            veth.send(write_capture(tmp_path / "jumbo.pcap", frames))
            probe.wait_taken(len(frames))
            status, err, report = probe.stop()
        finally:
            probe.kill()
    assert status == 0, err
    assert_accounting(report)
    assert report["tx"]["drops"] == len(jumbo), report["tx"]
    assert report["kaf"]["out"] == len(small), report["kaf"]
    said = [line for line in err.splitlines() if "Kafka refused a frame" in line]
    prefix = "fastcapa: fcapa-tx-0: Kafka refused a frame ({} so far, counted at [tx]): "
    assert len(said) == 2, err
    assert said[0].startswith(prefix.format(1)) and said[1].startswith(prefix.format(10)), said
    reason = said[0][len(prefix.format(1)) :]
    assert "too large" in reason.lower() and said[1].endswith(reason), said
    assert_holds_exactly(kafka, topic, small)
