"""Builds the pipeline from native objects and runs it, with one lifecycle.

    source ─> receive queue q ─> transmit ring q ─┬─> lane 0 ─> tx worker ─> producer ─> Kafka
                                                   └─> lane 1 ─> tx worker ─> producer ─┘

The steps, in this order, each a method:

1. plan: the topology as plain data (`Topology.plan`), nothing opened yet;
2. `open`: the rings, the receive side (capture sockets or the file) and the
   files that need privileges (`-s`, `--stats-json`);
3. `drop_privileges`: every capability given up, `--user` taken on;
4. `connect`: the transmit workers and their producers, Kafka reached;
5. `run`: threads started, frames taken until the source ends or a stop,
   then the rings drained and the producers flushed;
6. `close`: always safe, always called by the context manager: whatever
   was started is stopped (receive side first), aborted (transmit side: what
   is still queued is counted as dropped) and joined, files closed.

So an exception at any step (a worker that cannot start, a full disk under
`--stats-json`) leaves no native thread behind.

Stopping (docs/operating.md): the source stops first; then every transmit
worker drains its lanes and flushes its producer within the drain timeout. A
second signal aborts: what is still queued is counted as dropped. A transmit
worker whose frames the brokers refuse for want of a permission stops the
source the same way (the run then fails, exit 1), having purged its producer.
"""

from __future__ import annotations

import os
import pwd
import sys
import time
from dataclasses import dataclass
from types import TracebackType
from typing import IO

from fastcapa import _fastcapa, events
from fastcapa.config import CaptureSettings
from fastcapa.eal import eal_arguments
from fastcapa.errors import ConfigError
from fastcapa.signals import SignalLatch
from fastcapa.stats import READ_PASSES, Reporter, Snapshot, in_pipeline_order

# Main-loop tick: how often the control plane looks at its workers (more
# often when the statistics interval asks for it).
TICK = 0.05
# Largest transmit-ring slot: frames up to this are copied without growing it
# (the extension's own figure, which config.py's memory budget uses too).
SLOT_BYTES = _fastcapa.SLOT_DATA_BYTES
# How long `close` waits for an aborted worker before it gives up on it.
ABORT_JOIN_SECONDS = 10.0


def assign_lanes(rings: int, workers: int) -> list[list[tuple[int, int]]]:
    """For each transmit worker, the (ring, lane) pairs it serves.

    With at least as many workers as rings, worker i serves ring i mod N (a
    ring served by k workers has k lanes, chosen by flow hash); with fewer
    workers, worker i serves every ring j with j mod M == i.
    """
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


@dataclass(frozen=True)
class Topology:
    """What to build, as plain data: decided before anything is opened."""

    queues: int
    served: list[list[tuple[int, int]]]  # per transmit worker: its (ring, lane) pairs
    rx_cpus: list[int | None]  # per receive worker
    tx_cpus: list[int | None]  # per transmit worker
    slot_bytes: int
    # A fanout group id is shared by the whole network namespace: derived
    # from the pid, so two probes on one host do not collide.
    fanout_group: int

    @classmethod
    def plan(cls, settings: CaptureSettings) -> Topology:
        queues, workers = settings.rx_queues, settings.workers
        cpus = settings.cpus
        # --cpus: receive worker i takes the i-th core of the list, transmit
        # worker j the one after the receive workers' (the list wraps around).
        rx_cpus = [cpus[i % len(cpus)] if cpus else None for i in range(queues)]
        tx_cpus = [cpus[(queues + j) % len(cpus)] if cpus else None for j in range(workers)]
        return cls(
            queues=queues,
            served=assign_lanes(queues, workers),
            rx_cpus=rx_cpus,
            tx_cpus=tx_cpus,
            slot_bytes=min(settings.snaplen or SLOT_BYTES, SLOT_BYTES),
            fanout_group=os.getpid() & 0xFFFF,
        )

    def lanes_per_ring(self) -> list[int]:
        lanes = [0] * self.queues
        for pairs in self.served:
            for ring, _ in pairs:
                lanes[ring] += 1
        return lanes


@dataclass
class Outcome:
    final: Snapshot
    error: str | None  # why the run failed while running, if it did
    interrupted: bool


class Pipeline:
    """One run of the probe: the receive side, rings and transmit workers."""

    def __init__(self, settings: CaptureSettings) -> None:
        self.settings = settings
        self.topology = Topology.plan(settings)
        self.reporter: Reporter | None = None
        self.kafka_stats: IO[bytes] | None = None
        self.rings: list[_fastcapa.TxRing] = []
        self.queues: list[_fastcapa.AfPacketQueue | _fastcapa.DpdkQueue | _fastcapa.FileQueue] = []
        self.port: _fastcapa.DpdkPort | None = None
        self.group: _fastcapa.RxGroup | None = None
        self.receivers: list[_fastcapa.RxWorker] = []
        self.workers: list[_fastcapa.TxWorker] = []
        self.linktype = 1

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- the steps ----------------------------------------------------------

    def open(self) -> None:
        """Opens what needs privileges: the receive side and the output files."""
        settings, topology = self.settings, self.topology
        # First, so an unwritable --stats-json is a usage error before anything starts.
        self.reporter = Reporter(sys.stderr, settings.stats_json)
        self.kafka_stats = _open_kafka_stats(settings.kafka_stats)
        self.rings = [
            _fastcapa.TxRing(settings.tx_ring, lanes=lanes, slot_bytes=topology.slot_bytes)
            for lanes in topology.lanes_per_ring()
        ]
        if settings.read is not None:
            self._open_file(settings.read)
        elif settings.dpdk is not None:
            self._open_dpdk(settings.dpdk)
        else:
            self._open_live()

    def _open_file(self, path: str) -> None:
        """The file as a NIC with `-q` queues, each taking its share of the
        flows; with one queue, --count is exact (the file stops there)."""
        queues = self.topology.queues
        self.queues = [
            _fastcapa.FileQueue(
                path, index=q, queues=queues, limit=self.settings.count if queues == 1 else 0
            )
            for q in range(queues)
        ]
        self.linktype = self.queues[0].linktype
        self._build_receivers()

    def _open_live(self) -> None:
        settings, topology = self.settings, self.topology
        assert settings.interface is not None
        interface = settings.interface
        program = (
            _fastcapa.Filter.compile_live(settings.filter, settings.snaplen, interface)
            if settings.filter is not None
            else None
        )
        fanout = (topology.fanout_group, settings.fanout)
        for _ in range(topology.queues):
            self.queues.append(
                _fastcapa.AfPacketQueue(
                    interface,
                    frames=settings.descriptors,
                    snaplen=settings.snaplen,
                    fanout=fanout,
                    filter=program,
                    promiscuous=True,
                )
            )
        self._build_receivers()

    def _open_dpdk(self, device: str) -> None:
        """The EAL (once per process), the port with its queues, started."""
        settings = self.settings
        if not _fastcapa.DPDK:
            raise ConfigError(
                "--dpdk: this fastcapa was built without DPDK (build it with the dpdk"
                " feature: make build, docs/dpdk.md)"
            )
        program = (
            _fastcapa.Filter.compile_user(settings.filter) if settings.filter is not None else None
        )
        _fastcapa.start_eal(eal_arguments(settings.eal, settings.cpus))
        self.port = _fastcapa.DpdkPort(
            device,
            queues=settings.rx_queues,
            descriptors=settings.descriptors,
            burst=settings.rx_burst,
            filter=program,
        )
        self.queues = [self.port.queue(q) for q in range(self.topology.queues)]
        self._build_receivers()

    def source_name(self) -> str:
        """The source as messages name it: the file, the interface, or the DPDK port."""
        if self.port is not None:
            return f"DPDK port {self.port.name} ({self.port.driver})"
        return self.settings.read or self.settings.interface or "?"

    def source_notes(self) -> list[str]:
        """What the operator should know about the source: with DPDK, how
        frames are spread, and where their timestamps come from."""
        if self.port is None:
            return []
        port = self.port
        spread = (
            "RSS over IP addresses and ports, symmetric key"
            if port.rss
            else "the driver's own spreading"
            if self.settings.rx_queues > 1
            else "one queue"
        )
        notes = [
            f"{port.name}: {port.descriptors} descriptors per queue, {spread}; "
            f"timestamps: {port.timestamps}"
        ]
        if self.settings.filter is not None:
            notes.append(f"{port.name}: the filter runs in user space on every frame")
        return notes

    def _build_receivers(self) -> None:
        settings, topology = self.settings, self.topology
        self.group = _fastcapa.RxGroup(count=settings.count)
        self.receivers = [
            _fastcapa.RxWorker(
                f"fcapa-rx-{q}",
                queue,
                self.rings[q],
                self.group,
                burst=settings.rx_burst,
                idle=settings.idle,
                snaplen=settings.snaplen,
                hash_flows=settings.partition_by == "flow",
                cpu=topology.rx_cpus[q],
            )
            for q, queue in enumerate(self.queues)
        ]

    def drop_privileges(self) -> None:
        """Gives up every capability (and becomes --user): call after `open`,
        before any producer or worker thread exists (capabilities are per thread)."""
        user = self.settings.user
        _fastcapa.drop_privileges(_user_ids(user) if user else None)

    def connect(self) -> None:
        """Creates the transmit workers; KafkaError unless the cluster answers
        within --connect-timeout (a refusal, a certificate or a password, at
        once) and the topic can be written."""
        settings = self.settings
        kafka = list(settings.producer_settings().items())
        partitions = _fastcapa.check_topic(settings.topic, kafka, settings.connect_timeout)
        # A replay loses nothing by waiting for room in the producer queue;
        # a live capture must keep taking frames, so it waits only briefly.
        queue_full_wait = None if settings.read is not None else 0.1
        workers = len(self.topology.served)
        for i, pairs in enumerate(self.topology.served):
            self.workers.append(
                _fastcapa.TxWorker(
                    f"fcapa-tx-{i}",
                    [(self.rings[ring], lane) for ring, lane in pairs],
                    settings.topic,
                    kafka,
                    burst=settings.tx_burst,
                    queue_full_wait=queue_full_wait,
                    partition_by=settings.partition_by,
                    partitions=partitions,
                    worker=i,
                    workers=workers,
                    stats_fd=self.kafka_stats.fileno() if self.kafka_stats else None,
                )
            )

    def prepare(self) -> None:
        """`open`, `drop_privileges`, `connect`: everything before `run`."""
        self.open()
        self.drop_privileges()
        self.connect()

    def serve_metrics(self) -> None:
        """Starts the Prometheus exporter when --metrics-port asks for it."""
        if self.settings.metrics_port is not None:
            from fastcapa.metrics import PipelineCollector, serve

            serve(self.settings.metrics_port, PipelineCollector(self.snapshot))

    def snapshot(self) -> Snapshot:
        """Every stage's figures, read so that none shows more out than in
        while frames move (stats.READ_PASS): the workers' counters several
        times, each counter taken from its pass."""
        reads = [self._counters() for _ in range(READ_PASSES)]
        fill = [ring.fill() for ring in self.rings]
        queues = in_pipeline_order([queues for queues, _ in reads])
        return Snapshot.collect(queues, fill, in_pipeline_order([workers for _, workers in reads]))

    def _counters(self) -> tuple[list[dict[str, int]], list[dict[str, int]]]:
        """One read of every receive queue's and transmit worker's counters."""
        queues = [receiver.counters() for receiver in self.receivers]
        return queues, [worker.counters() for worker in self.workers]

    def _report_events(self) -> None:
        events.report([*self.receivers, *self.workers])

    def run(self) -> Outcome:
        settings, reporter = self.settings, self.reporter
        assert reporter is not None, "open() first"
        signals = SignalLatch()
        try:
            for i, worker in enumerate(self.workers):
                worker.start(cpu=self.topology.tx_cpus[i])
            for receiver in self.receivers:
                receiver.start()
            started = time.monotonic()
            tick = _Tick(self, reporter, settings.stats_interval)
            wait = min(TICK, settings.stats_interval)
            # Phase 1: take frames until the source ends, we are told to
            # stop, or a transmit worker can deliver nothing more.
            while not self._receivers_joined(wait):
                if (
                    signals.count
                    or (
                        settings.duration is not None
                        and time.monotonic() - started >= settings.duration
                    )
                    or any(worker.error() for worker in self.workers)
                ):
                    self._stop_receivers()
                tick()
            # Phase 2: drain the rings and flush the producers.
            for worker in self.workers:
                worker.finish(settings.drain_timeout)
            aborted = False
            for worker in self.workers:
                while not worker.join(wait):
                    if signals.count >= 2 and not aborted:
                        for w in self.workers:
                            w.abort()
                        aborted = True
                    tick()
            self._report_events()
            final = self.snapshot()
            reporter.report(final, final=True)
        finally:
            signals.restore()
        # Each reason once: the queues of one file meet its damage each, and
        # every worker on a topic may fail alike.
        sources: list[_fastcapa.RxWorker | _fastcapa.TxWorker] = [*self.receivers, *self.workers]
        errors = list(dict.fromkeys(e for e in (s.error() for s in sources) if e))
        return Outcome(final, "; ".join(errors) or None, interrupted=signals.count > 0)

    def _receivers_joined(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(r.join(max(0.0, deadline - time.monotonic())) for r in self.receivers)

    def _stop_receivers(self) -> None:
        if self.group is not None:
            self.group.stop()

    def close(self) -> None:
        """Stops, aborts and joins whatever was started, closes what was
        opened. Safe to call at any point, and more than once."""
        try:
            self._stop_receivers()
            for receiver in self.receivers:
                receiver.join(ABORT_JOIN_SECONDS)
            for worker in self.workers:
                worker.abort()
            for worker in self.workers:
                worker.join(ABORT_JOIN_SECONDS)
            for queue in self.queues:  # those no worker took over
                queue.close()
            if self.port is not None:  # closes once its workers let go
                self.port.close()
        finally:
            if self.reporter is not None:
                self.reporter.close()
            if self.kafka_stats is not None:
                self.kafka_stats.close()


class _Tick:
    """What the main loop does at each tick while the workers run: pass on
    their events, and report every `interval` seconds."""

    def __init__(self, pipeline: Pipeline, reporter: Reporter, interval: float) -> None:
        self.pipeline, self.reporter, self.interval = pipeline, reporter, interval
        self.next_report = time.monotonic() + interval

    def __call__(self) -> None:
        self.pipeline._report_events()
        now = time.monotonic()
        if now >= self.next_report:
            self.reporter.report(self.pipeline.snapshot())
            self.next_report = now + self.interval


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
