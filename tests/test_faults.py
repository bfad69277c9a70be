"""Fault tests: a real Apache Kafka that goes away, fails over,
stalls, and a probe that runs for a long time.

Every test captures live from a veth pair of its own: `steady.py` sends a
numbered stream at a steady rate from the namespace side, `fastcapa -i`
captures the other side, and an independent consumer (confluent-kafka) reads
the topic back and checks every record: its value is byte for byte the frame
that was sent, its key the kernel's receive time (8 bytes, big-endian µs,
close to the send time the frame carries; on one queue, rising with the
sequence number).
What the probe says it delivered, dropped and where, is checked against what
Kafka holds and against the accounting sums (docs/accounting.md).

Brokers are the tests' own (tools/kafka): a single one per module for the
outage and back-pressure tests (stopped, started and paused at will), the
three-node `kafka_cluster3` for the failover.

Select these tests with `-m faults`; each prints a FAULT-FIGURES line (run
with `-s` to see them). The soak runs FASTCAPA_SOAK_MINUTES minutes, 2 by
default (as in `make test`); the full soak is

    FASTCAPA_SOAK_MINUTES=10 .venv/bin/python -m pytest -s -m faults -k soak
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from fastcapa_support.fixtures import _live, kafka_tool, wait_topic_ready
from fastcapa_support.netns import VethPair, netns_available
from fastcapa_support.runner import Probe, assert_accounting
from fastcapa_support.steady import SteadySender, check_topic

pytestmark = [
    pytest.mark.faults,
    pytest.mark.kafka,
    pytest.mark.netns,
    pytest.mark.skipif(not netns_available(), reason="needs root and network namespaces"),
]

RATE = 1000  # frames/s: a moderate, steady stream
SIZE = 200  # bytes per frame
OUTAGE = 20  # seconds the broker stays away
# -d for the tests that must not lose a frame at [nic]: 512 blocks, which the
# kernel hands over part-filled every few ms at these rates, so the ring
# covers about 2 s of a receive worker starved of CPU on a busy machine.
KERNEL_RING = 32768
SOAK_MINUTES = float(os.environ.get("FASTCAPA_SOAK_MINUTES", "2"))
# How long a stopped probe may take to exit, and how often its memory and
# descriptors are sampled (the figures' peak_rss_kib) unless a test says.
STOP_TIMEOUT = 90
WATCH = 0.5


def drops(report: dict) -> dict[str, int]:
    return {stage: report[stage]["drops"] for stage in ("nic", "rx", "tx", "kaf")}


def settled(report: dict) -> bool:
    """Everything taken in was delivered or dropped: nothing left on the way."""
    rx, tx, kaf = report["rx"], report["tx"], report["kaf"]
    return rx["taken_in"] == kaf["out"] + rx["drops"] + tx["drops"] + kaf["drops"]


def figures(name: str, **values: object) -> None:
    """One line of figures for the closing note (shown with -s, kept in the log)."""
    print(f"\nFAULT-FIGURES {name}: " + json.dumps(values, default=str), flush=True)


@pytest.fixture(scope="module")
def lone_broker():
    """A single broker of this module's own, to stop, start and pause."""
    with kafka_tool.Cluster(nodes=1) as cluster:
        _live["lone_broker"] = cluster  # its log tail goes into a failed test's report
        yield cluster
        del _live["lone_broker"]


@pytest.fixture
def broker(lone_broker):
    """The module's single broker, running and answering, for each test."""
    lone_broker.restore()
    yield lone_broker
    lone_broker.restore()


def topic_on(new_topic, cluster, partitions: int = 2, **config: object) -> str:
    return new_topic(partitions=partitions, cluster=cluster, config=config)


# ---------------------------------------------------------------- broker outage


def ride_out_outage(
    broker, topic: str, tmp_path: Path, count: int, *probe_args: str, rate: int = RATE
):
    """A probe capturing a steady stream of `count` frames at `rate` while
    the single broker is stopped for OUTAGE seconds and started again;
    returns the exit status, the final report, the sender's report, and the
    figures of the outage (reports at its start and end)."""
    with VethPair(queues=1) as veth:
        probe = Probe(veth.probe_side, topic, broker.bootstrap, tmp_path, *probe_args, watch=WATCH)
        sender = SteadySender(veth, count, rate, SIZE)
        try:
            probe.wait_for("frames delivered", lambda r: r["kaf"]["out"] >= rate * 2, 60)
            broker.stop_node(0)
            down = time.monotonic()
            # The broker is gone: the probe keeps capturing and Kafka takes nothing.
            time.sleep(3)  # acknowledgements already on their way
            early = probe.wait_for("a report", lambda r: True, 5)
            time.sleep(max(0.0, OUTAGE - (time.monotonic() - down)))
            late = probe.wait_for("a report", lambda r: True, 5)
            assert probe.proc.poll() is None, "the probe exited when the broker went away"
            broker.start_node(0)
            outage = round(time.monotonic() - down, 1)
            sent = sender.wait(timeout=count / rate + 120)
            probe.wait_for("every frame seen", lambda r: r["nic"]["taken_in"] >= sent["sent"], 60)
            # Settled: everything taken was delivered or dropped somewhere.
            probe.wait_for("the books settled", settled, 180)
            status, _, report = probe.stop(timeout=STOP_TIMEOUT)
        finally:
            sender.kill()
            probe.kill()
    return (
        status,
        report,
        sent,
        {
            "outage_s": outage,
            "early": early,
            "late": late,
            "peak_rss_kib": probe.peak_rss_kib,
        },
    )


def assert_holds_what_was_delivered(verdict, report: dict) -> None:
    """Kafka holds, each byte exact, every frame the probe says it delivered
    and no other. A frame it produced twice would be counted twice in [kaf];
    a batch that librdkafka retried after the broker had written it (no
    idempotence) shows as a duplicate record, reported, not failed here."""
    assert not verdict.bad, verdict.summary()
    assert verdict.delivered == report["kaf"]["out"], verdict.summary()


def assert_rode_it_out(status: int, report: dict, sent: dict, outage: dict, count: int) -> None:
    """What every outage run must show: a clean exit, the accounting sums, an
    outage that was real, and every frame sent taken in."""
    assert status == 0
    assert_accounting(report)
    assert_broker_was_away(outage)
    assert report["nic"]["taken_in"] == sent["sent"] == count


def assert_broker_was_away(outage: dict) -> None:
    """Kafka acknowledged nothing in the middle of the outage while the probe
    kept taking frames: the outage was real, and the probe rode it out."""
    early, late = outage["early"], outage["late"]
    assert late["kaf"]["out"] == early["kaf"]["out"], (early["kaf"], late["kaf"])
    assert late["nic"]["taken_in"] > early["nic"]["taken_in"] + RATE * 5, (
        early["nic"],
        late["nic"],
    )


def test_outage_with_default_settings_delivers_every_frame(broker, new_topic, tmp_path):
    """Default rings and buffer (and an idempotent producer, so that retries
    cannot write a batch twice) ride out a 20 s outage of a 6,000 frames/s
    stream: more than librdkafka's default 100,000 messages wait for the
    broker, and after it is back Kafka holds every frame exactly once."""
    topic = topic_on(new_topic, broker)
    rate = 6 * RATE
    count = rate * 40
    status, report, sent, outage = ride_out_outage(
        broker, topic, tmp_path, count, "-X", "enable.idempotence=true", rate=rate
    )
    assert_rode_it_out(status, report, sent, outage, count)
    assert outage["late"]["kaf"]["queued"] > 100_000, "the outage did not fill the old limit"
    assert drops(report) == {"nic": 0, "rx": 0, "tx": 0, "kaf": 0}
    assert report["kaf"]["out"] == count
    verdict = check_topic(broker.bootstrap, topic, 1, count, SIZE, keep_keys=True)
    assert not verdict.bad and verdict.delivered == count and verdict.duplicates == 0, (
        verdict.summary()
    )
    keys = [verdict.keys[seq] for seq in range(count)]
    assert keys == sorted(keys), "keys do not rise with the sequence (one queue)"
    figures(
        "outage-defaults",
        outage_s=outage["outage_s"],
        peak_rss_kib=outage["peak_rss_kib"],
        queued_at_outage_end=outage["late"]["kaf"]["queued"],
        sent=count,
        delivered=verdict.delivered,
        duplicates=verdict.duplicates,
        drops=drops(report),
    )


def test_outage_too_big_for_the_queues_counts_the_overflow(broker, new_topic, tmp_path):
    """A small ring and producer queue: what does not fit is dropped at [rx]
    or [tx] and counted there; Kafka holds exactly the frames the probe says
    it delivered; the accounting sums hold."""
    topic = topic_on(new_topic, broker)
    count = RATE * 40
    status, report, sent, outage = ride_out_outage(
        broker, topic, tmp_path, count,
        "-x", "64",
        "-X", "queue.buffering.max.messages=2000",
        "-X", "message.timeout.ms=300000",
    )  # fmt: skip
    assert_rode_it_out(status, report, sent, outage, count)
    d = drops(report)
    assert d["kaf"] == 0, d
    # More came in while the broker was away than 2000 messages and 64 slots hold.
    assert d["rx"] + d["tx"] > 0, d
    verdict = check_topic(broker.bootstrap, topic, 1, count, SIZE)
    assert_holds_what_was_delivered(verdict, report)
    assert count - verdict.delivered == sum(d.values())
    figures(
        "outage-too-small",
        outage_s=outage["outage_s"],
        peak_rss_kib=outage["peak_rss_kib"],
        sent=count,
        delivered=verdict.delivered,
        drops=d,
        duplicates=verdict.duplicates,
        queued_at_outage_end=outage["late"]["kaf"]["queued"],
    )


def test_outage_longer_than_message_timeout_counts_at_kaf(broker, new_topic, tmp_path):
    """Room enough, but messages may wait only 5 s: those that expire in the
    producer are counted at [kaf]; Kafka holds exactly the rest."""
    topic = topic_on(new_topic, broker)
    count = RATE * 40
    status, report, sent, outage = ride_out_outage(
        broker, topic, tmp_path, count,
        "-x", "8192", "--snaplen", "256",
        "-X", "queue.buffering.max.messages=200000",
        "-X", "message.timeout.ms=5000",
    )  # fmt: skip
    assert_rode_it_out(status, report, sent, outage, count)
    d = drops(report)
    assert d["rx"] == d["tx"] == 0, d
    assert d["kaf"] > 0, d  # the outage outlasted the message timeout
    verdict = check_topic(broker.bootstrap, topic, 1, count, SIZE)
    assert not verdict.bad, verdict.summary()
    # Kafka holds every frame it acknowledged. A message that times out while
    # its batch is in flight (a slow broker, a loaded machine) may have been
    # written all the same: librdkafka calls it "possibly persisted". It is
    # counted at [kaf], as it was never acknowledged, and may also be held.
    delivered, timed_out = report["kaf"]["out"], d["kaf"]
    assert delivered <= verdict.delivered <= delivered + timed_out, verdict.summary()
    figures(
        "outage-message-timeout",
        outage_s=outage["outage_s"],
        peak_rss_kib=outage["peak_rss_kib"],
        sent=count,
        delivered=verdict.delivered,
        drops=d,
        duplicates=verdict.duplicates,
    )


def test_stop_while_the_broker_is_away_ends_within_the_drain_timeout(broker, new_topic, tmp_path):
    """SIGTERM while the broker is down: the probe stops within
    --drain-timeout, counts what it could not deliver at [kaf], exits 0."""
    topic = topic_on(new_topic, broker)
    count = RATE * 30
    with VethPair(queues=1) as veth:
        probe = Probe(
            veth.probe_side, topic, broker.bootstrap, tmp_path,
            "-X", "message.timeout.ms=300000", "--drain-timeout", "5", watch=WATCH,
        )  # fmt: skip
        sender = SteadySender(veth, count, RATE, SIZE)
        try:
            probe.wait_for("frames delivered", lambda r: r["kaf"]["out"] >= RATE, 60)
            broker.stop_node(0)
            time.sleep(5)
            before = probe.wait_for("a report", lambda r: True, 5)
            t = time.monotonic()
            # --drain-timeout 5: a probe still running 30 s on has hung.
            status, _, report = probe.stop(timeout=30)
            took = time.monotonic() - t
        finally:
            sender.kill()
            probe.kill()
    assert status == 0
    assert_accounting(report)
    d = drops(report)
    assert d["kaf"] >= before["kaf"]["queued"] > 0, (d, before["kaf"])
    assert report["kaf"]["queued"] == 0
    broker.start_node(0)
    verdict = check_topic(broker.bootstrap, topic, 1, count, SIZE)
    assert_holds_what_was_delivered(verdict, report)
    figures(
        "stop-while-away",
        stop_took_s=round(took, 1),
        drops=d,
        delivered=verdict.delivered,
        peak_rss_kib=probe.peak_rss_kib,
    )


def test_a_second_sigint_during_the_drain_stops_at_once(broker, new_topic, tmp_path):
    """SIGINT while the broker is paused: the drain would wait its whole
    --drain-timeout of 60 s for the broker. A second SIGINT stops the probe
    at once: exit 0, what was still queued counted as dropped, the sums
    right, and Kafka holds (once the broker is back) what was delivered."""
    topic = topic_on(new_topic, broker)
    count = RATE * 30
    with VethPair(queues=1) as veth:
        probe = Probe(
            veth.probe_side, topic, broker.bootstrap, tmp_path,
            "-X", "message.timeout.ms=300000", "--drain-timeout", "60", watch=WATCH,
        )  # fmt: skip
        sender = SteadySender(veth, count, RATE, SIZE)
        try:
            probe.wait_for("frames delivered", lambda r: r["kaf"]["out"] >= RATE, 60)
            broker.pause_node(0)
            time.sleep(2)
            probe.proc.send_signal(signal.SIGINT)
            time.sleep(3)
            assert probe.proc.poll() is None, "the drain ended with the broker paused"
            draining = probe.last()
            second = time.monotonic()
            status, _, report = probe.stop(timeout=30, sig=signal.SIGINT)
            took = time.monotonic() - second
        finally:
            sender.kill()
            probe.kill()
            broker.resume_node(0)
    assert status == 0
    assert took < 5, f"stopped {took:.1f} s after the second SIGINT"
    assert_accounting(report)
    d = drops(report)
    assert d["kaf"] >= draining["kaf"]["queued"] > 0, (d, draining["kaf"])
    assert report["kaf"]["queued"] == 0
    # Woken from SIGSTOP, the broker was fenced meanwhile: its partitions
    # have no leader until it is unfenced again.
    wait_topic_ready(broker.bootstrap, topic, 2, timeout=60)
    verdict = check_topic(broker.bootstrap, topic, 1, count, SIZE)
    assert not verdict.bad, verdict.summary()
    # A batch on its way when the stop came may still be written by the
    # broker as it wakes ("possibly persisted", counted at [kaf]).
    delivered = report["kaf"]["out"]
    assert delivered <= verdict.delivered <= delivered + d["kaf"], verdict.summary()
    figures("second-sigint", stop_took_s=round(took, 1), drops=d, delivered=delivered)


# ---------------------------------------------------------------- leader failover


def leader_of(bootstrap: str, topic: str, partition: int) -> int:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    meta = admin.list_topics(topic, timeout=10)
    return meta.topics[topic].partitions[partition].leader


def test_leader_killed_mid_stream_loses_and_duplicates_nothing(kafka_cluster3, new_topic, tmp_path):
    """Replication 3, min.insync.replicas=2, acks=all, idempotence: SIGKILL
    the leader of a partition mid-stream; every frame is in Kafka exactly once."""
    cluster = kafka_cluster3
    topic = new_topic(
        partitions=3, replication=3, config={"min.insync.replicas": 2}, cluster=cluster
    )
    count = RATE * 30
    with VethPair(queues=1) as veth:
        probe = Probe(
            veth.probe_side, topic, cluster.bootstrap, tmp_path,
            "-d", str(KERNEL_RING),
            "-X", "acks=all", "-X", "enable.idempotence=true",
            "-X", "message.timeout.ms=300000", watch=WATCH,
        )  # fmt: skip
        sender = SteadySender(veth, count, RATE, SIZE)
        try:
            probe.wait_for("frames delivered", lambda r: r["kaf"]["out"] >= RATE * 5, 60)
            victim = leader_of(cluster.bootstrap, topic, 0)
            at = probe.last()
            assert sender.proc.poll() is None, "the stream ended before the kill"
            cluster.kill(victim)  # SIGKILL
            survivors = ",".join(cluster.node_bootstrap(i) for i in range(3) if i != victim)
            deadline = time.monotonic() + 60
            while leader_of(survivors, topic, 0) in (victim, -1):
                assert time.monotonic() < deadline, "no new leader for partition 0"
                time.sleep(0.5)
            new_leader = leader_of(survivors, topic, 0)
            sent = sender.wait(timeout=count / RATE + 120)
            probe.wait_for("every frame delivered", lambda r: r["kaf"]["out"] >= count, 120)
            status, _, report = probe.stop(timeout=STOP_TIMEOUT)
        finally:
            sender.kill()
            probe.kill()
    assert sent["sent"] == count
    assert status == 0
    assert_accounting(report)
    assert drops(report) == {"nic": 0, "rx": 0, "tx": 0, "kaf": 0}
    assert report["kaf"]["out"] == count
    verdict = check_topic(survivors, topic, 1, count, SIZE)
    assert not verdict.bad and verdict.delivered == count and verdict.duplicates == 0, (
        verdict.summary()
    )
    figures(
        "leader-failover",
        killed_node=victim,
        peak_rss_kib=probe.peak_rss_kib,
        new_leader=new_leader,
        delivered_before_kill=at["kaf"]["out"],
        sent=count,
        delivered=verdict.delivered,
        duplicates=verdict.duplicates,
        drops=drops(report),
    )


# ---------------------------------------------------------------- back-pressure


def test_paused_broker_drops_only_at_rx_tx_and_memory_stays_bounded(broker, new_topic, tmp_path):
    """SIGSTOP the broker under load: the producer queue fills to its bound,
    then frames are dropped at [rx]/[tx] and counted; nothing is lost at
    [nic] or [kaf]; Kafka holds each delivered frame once (idempotent
    producer: the broker is fenced when it wakes, and retried batches would
    otherwise be written twice); the probe's resident memory stays within what
    its rings and queue may hold."""
    topic = topic_on(new_topic, broker)
    rate, size, pause = 3000, 1000, 15
    count = rate * (pause + 10)
    queue_kib, ring_slots = 4096, 1024
    with VethPair(queues=1) as veth:
        probe = Probe(
            veth.probe_side, topic, broker.bootstrap, tmp_path,
            "-x", str(ring_slots), "-d", str(KERNEL_RING),
            "-X", "enable.idempotence=true",
            "-X", "queue.buffering.max.messages=100000",
            "-X", f"queue.buffering.max.kbytes={queue_kib}",
            "-X", "message.timeout.ms=300000",
            watch=0.25,
        )  # fmt: skip
        watch, base = probe.watch, probe.base
        sender = SteadySender(veth, count, rate, size)
        try:
            probe.wait_for("frames delivered", lambda r: r["kaf"]["out"] >= rate, 60)
            broker.pause_node(0)
            paused = time.monotonic()
            try:
                # The queue's bound is reached when frames start being dropped.
                full = probe.wait_for(
                    "drops at [rx] or [tx]",
                    lambda r: r["rx"]["drops"] + r["tx"]["drops"] > 0,
                    pause,
                )
                at_full = watch.sample()
                time.sleep(max(0.0, pause - (time.monotonic() - paused)))
                at_end = watch.sample()
            finally:
                broker.resume_node(0)
            sent = sender.wait(timeout=count / rate + 120)
            probe.wait_for("every frame seen", lambda r: r["nic"]["taken_in"] >= count, 60)
            status, _, report = probe.stop(timeout=STOP_TIMEOUT)
        finally:
            sender.kill()
            probe.kill()
            samples = watch.stop()
    assert status == 0
    assert_accounting(report)
    d = drops(report)
    assert report["nic"]["taken_in"] == sent["sent"] == count
    assert d["nic"] == 0 and d["kaf"] == 0, d
    assert d["rx"] + d["tx"] == count - report["kaf"]["out"] > 0, d
    verdict = check_topic(broker.bootstrap, topic, 1, count, size)
    assert not verdict.bad and verdict.duplicates == 0, verdict.summary()
    assert verdict.delivered == report["kaf"]["out"], verdict.summary()
    peak = max(s.hwm_kib for s in samples)
    peak_anon = max(s.anon_kib for s in samples)
    # Anonymous memory (the AF_PACKET ring is mapped kernel pages, resident
    # from the start) may grow by the transmit ring's slots, the producer
    # queue (librdkafka's bound counts payloads; each message also has its
    # header), and slack for the rest.
    allowed = base["RssAnon"] + ring_slots * 2 + 2 * queue_kib + 16 * 1024
    assert peak_anon <= allowed, f"peak RssAnon {peak_anon} KiB, allowed {allowed} KiB"
    # Once the queue is full, memory no longer grows with the pause.
    assert at_end.anon_kib - at_full.anon_kib <= 8 * 1024, (at_full, at_end)
    figures(
        "backpressure-paused",
        rate=rate,
        frame_bytes=size,
        pause_s=pause,
        sent=count,
        delivered=verdict.delivered,
        drops=d,
        queued_when_full=full["kaf"]["queued"],
        base_rss_kib=base["VmRSS"],
        base_anon_kib=base["RssAnon"],
        anon_when_queue_full_kib=at_full.anon_kib,
        anon_at_pause_end_kib=at_end.anon_kib,
        peak_anon_kib=peak_anon,
        peak_rss_kib=peak,
        fds=samples[-1].fds,
    )


# ---------------------------------------------------------------- soak


@pytest.mark.timeout(SOAK_MINUTES * 60 + 900)
def test_soak_loses_nothing_and_stays_flat(broker, new_topic, tmp_path):
    """FASTCAPA_SOAK_MINUTES of steady capture over two queues, with the
    idempotent producer the operating notes advise for exactly once: not one
    frame lost or duplicated (an independent consumer checks every record,
    byte for byte), nothing dropped at any stage, and resident memory and
    open file descriptors flat after warm-up."""
    topic = topic_on(new_topic, broker)
    seconds = SOAK_MINUTES * 60
    rate = 2000
    count = int(rate * seconds)
    warmup = max(30.0, seconds / 5)
    with VethPair(queues=2) as veth:
        probe = Probe(
            veth.probe_side, topic, broker.bootstrap, tmp_path,
            "-q", "2", "-X", "enable.idempotence=true", watch=5,
        )  # fmt: skip
        watch = probe.watch
        sender = SteadySender(veth, count, rate, SIZE)
        try:
            sent = sender.wait(timeout=seconds + 300)
            probe.wait_for("every frame seen", lambda r: r["nic"]["taken_in"] >= count, 60)
            watch.sample()
            status, _, report = probe.stop(timeout=STOP_TIMEOUT)
        finally:
            sender.kill()
            probe.kill()
            samples = watch.stop()
    assert status == 0
    assert_accounting(report)
    assert report["nic"]["taken_in"] == sent["sent"] == count
    assert drops(report) == {"nic": 0, "rx": 0, "tx": 0, "kaf": 0}, drops(report)
    assert report["kaf"]["out"] == count
    verdict = check_topic(broker.bootstrap, topic, 1, count, SIZE, timeout=600)
    assert not verdict.bad and verdict.delivered == count and verdict.duplicates == 0, (
        verdict.summary()
    )
    after = [s for s in samples if s.t >= warmup]
    assert len(after) >= 3, samples
    rss = [s.rss_kib for s in after]
    fds = [s.fds for s in after]
    growth = max(rss) - after[0].rss_kib
    figures(
        "soak",
        minutes=SOAK_MINUTES,
        rate=rate,
        sent=count,
        delivered=verdict.delivered,
        duplicates=verdict.duplicates,
        drops=drops(report),
        warmup_s=warmup,
        rss_kib_after_warmup=[after[0].rss_kib, min(rss), max(rss), after[-1].rss_kib],
        rss_growth_after_warmup_kib=growth,
        anon_kib_after_warmup=[after[0].anon_kib, after[-1].anon_kib],
        peak_rss_kib=max(s.hwm_kib for s in samples),
        fds_after_warmup=[min(fds), max(fds)],
        series_t_rss_anon_fds=[(s.t, s.rss_kib, s.anon_kib, s.fds) for s in samples],
    )
    # Flat: no more than 4 MiB (or 5%) above the level at the end of warm-up,
    # and the same descriptors throughout.
    assert growth <= max(4096, after[0].rss_kib // 20), rss
    assert max(fds) - min(fds) <= 2, fds
