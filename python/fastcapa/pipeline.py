"""Builds the pipeline of DESIGN.md from native objects and runs it.

    source ─> receive queue q ─> transmit ring q ─┬─> lane 0 ─> tx worker ─> producer ─> Kafka
                                                   └─> lane 1 ─> tx worker ─> producer ─┘

Rings are one per receive queue. Transmit worker i serves ring i mod N when
there are at least as many workers as rings (a ring served by k workers has k
lanes, chosen by flow hash); with fewer workers, worker i serves every ring j
with j mod M == i.

Stopping (SPEC §5): the source stops first; then every transmit worker drains
its lanes and flushes its producer within the drain timeout. A second signal
aborts: what is still queued is counted as dropped.
"""

from __future__ import annotations

import os
import pwd
import signal
import sys
import time
from dataclasses import dataclass
from typing import IO

from fastcapa import _fastcapa, events
from fastcapa.config import CaptureSettings
from fastcapa.errors import ConfigError
from fastcapa.stats import Reporter, Snapshot

# Main-loop tick: how often the control plane looks at its workers.
TICK = 0.05


def assign_lanes(rings: int, workers: int) -> list[list[tuple[int, int]]]:
    """For each worker, the (ring, lane) pairs it serves."""
    served: list[list[tuple[int, int]]] = [[] for _ in range(workers)]
    if workers >= rings:
        lanes_used = [0] * rings
        for worker in range(workers):
            ring = worker % rings
            served[worker].append((ring, lanes_used[ring]))
            lanes_used[ring] += 1
    else:
        for ring in range(rings):
            served[ring % workers].append((ring, 0))
    return served


@dataclass
class Outcome:
    final: Snapshot
    error: str | None  # why the run failed while running, if it did
    interrupted: bool


class Pipeline:
    """One run of the probe: sources, rings and transmit workers."""

    def __init__(self, settings: CaptureSettings) -> None:
        self.settings = settings
        # Opened first, so an unwritable --stats-json is a usage error before anything starts.
        self.reporter = Reporter(sys.stderr, settings.stats_json)
        queues, workers = settings.rx_queues, settings.workers
        served = assign_lanes(queues, workers)
        lanes_per_ring = [0] * queues
        for pairs in served:
            for ring, _ in pairs:
                lanes_per_ring[ring] += 1
        slot_bytes = min(settings.snaplen or 2048, 2048)
        self.rings = [
            _fastcapa.TxRing(settings.tx_ring, lanes_per_ring[q], slot_bytes) for q in range(queues)
        ]
        self.source: _fastcapa.FileSource | _fastcapa.LiveSource
        if settings.read is not None:
            self.source = _fastcapa.FileSource(
                settings.read, self.rings, snaplen=settings.snaplen, count=settings.count
            )
        else:
            assert settings.interface is not None
            self.source = _fastcapa.LiveSource(
                settings.interface,
                self.rings,
                frames=settings.rx_desc,
                snaplen=settings.snaplen,
                fanout=settings.fanout,
                filter=settings.filter,
                burst=settings.rx_burst,
                idle=settings.idle,
                count=settings.count,
                cpus=settings.cpus,
                hash_flows=settings.partition_by == "flow",
            )
        # Every file and socket that needs a privilege is open now; the rest
        # (producers, workers, the metrics server) starts without any.
        self.kafka_stats = _open_kafka_stats(settings.kafka_stats)
        _fastcapa.drop_privileges(_user_ids(settings.user) if settings.user else None)
        kafka = list(settings.kafka.items())
        # A replay loses nothing by waiting for room in the producer queue;
        # a live capture must keep taking frames, so it waits only briefly.
        queue_full_wait = None if settings.read is not None else 0.1
        self.workers = [
            _fastcapa.TxWorker(
                f"fcapa-tx-{i}",
                [(self.rings[ring], lane) for ring, lane in pairs],
                settings.topic,
                kafka,
                burst=settings.tx_burst,
                queue_full_wait=queue_full_wait,
                stats_fd=self.kafka_stats.fileno() if self.kafka_stats else None,
            )
            for i, pairs in enumerate(served)
        ]

    def _transmit_cpu(self, worker: int) -> int | None:
        """--cpus: receive worker i takes the i-th core of the list, transmit
        worker j the one after the receive workers' (the list wraps around)."""
        cpus = self.settings.cpus
        return cpus[(self.settings.rx_queues + worker) % len(cpus)] if cpus else None

    @property
    def linktype(self) -> int:
        return self.source.linktype

    def serve_metrics(self) -> None:
        """Starts the Prometheus exporter when --metrics-port asks for it."""
        if self.settings.metrics_port is not None:
            from fastcapa.metrics import serve

            serve(self.settings.metrics_port, self.snapshot)

    def connect(self) -> None:
        """Fails with KafkaError unless the cluster answers within --connect-timeout."""
        self.workers[0].check_connection(self.settings.connect_timeout)
        if self.settings.partition_by == "flow":
            for worker in self.workers:
                worker.partition_by_flow(self.settings.topic, self.settings.connect_timeout)

    def snapshot(self) -> Snapshot:
        return Snapshot.collect(
            list(self.source.counters()),
            [ring.fill() for ring in self.rings],
            [worker.counters() for worker in self.workers],
        )

    def run(self) -> Outcome:
        settings, reporter = self.settings, self.reporter
        signals = _SignalLatch()
        try:
            for i, worker in enumerate(self.workers):
                worker.start(cpu=self._transmit_cpu(i))
            self.source.start()
            started = time.monotonic()
            next_report = started + settings.stats_interval
            # Phase 1: take frames until the source ends or we are told to stop.
            while not self.source.join(TICK):
                now = time.monotonic()
                if signals.count or (
                    settings.duration is not None and now - started >= settings.duration
                ):
                    self.source.stop()
                events.report(self.workers)
                if now >= next_report:
                    reporter.report(self.snapshot())
                    next_report = now + settings.stats_interval
            # Phase 2: drain the rings and flush the producers.
            for worker in self.workers:
                worker.finish(settings.drain_timeout)
            aborted = False
            for worker in self.workers:
                while not worker.join(TICK):
                    if signals.count >= 2 and not aborted:
                        for w in self.workers:
                            w.abort()
                        aborted = True
                    events.report(self.workers)
                    now = time.monotonic()
                    if now >= next_report:
                        reporter.report(self.snapshot())
                        next_report = now + settings.stats_interval
            events.report(self.workers)
            final = self.snapshot()
            reporter.report(final, final=True)
        finally:
            signals.restore()
            reporter.close()
        return Outcome(final, self.source.error(), interrupted=signals.count > 0)


def _open_kafka_stats(path: str | None) -> IO[bytes] | None:
    if path is None:
        return None
    try:
        return open(path, "ab")  # the producers write to it until the end
    except OSError as e:
        raise ConfigError(f"cannot write -s {path}: {e.strerror}") from None


def _user_ids(name: str) -> tuple[int, int]:
    """--user NAME (or a numeric uid) -> (uid, gid of its primary group)."""
    try:
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
        numeric = name.isascii() and name.isdigit()
        entry = pwd.getpwuid(int(name)) if numeric else pwd.getpwnam(name)
    except (KeyError, OverflowError):
        raise ConfigError(f"--user: no such user {name!r}") from None
    if os.geteuid() != 0:
        raise ConfigError("--user needs fastcapa to start as root")
    return entry.pw_uid, entry.pw_gid


class _SignalLatch:
    """Counts SIGINT/SIGTERM while the pipeline runs; the main loop acts on them."""

    def __init__(self) -> None:
        self.count = 0
        self.previous = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
        }

    def _handle(self, signum: int, frame: object) -> None:
        self.count += 1

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
