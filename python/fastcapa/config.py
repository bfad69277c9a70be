"""`fastcapa capture`'s settings (`CaptureSettings`), validated before
anything starts: the limits of each option, the defaults that depend on the
machine, and the checks that span options. The librdkafka settings are read
in librdkafka.py, the memory budget is sizing.py's, the EAL's arguments
eal.py's."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from fastcapa import _fastcapa
from fastcapa.eal import eal_arguments
from fastcapa.errors import ConfigError
from fastcapa.librdkafka import check_printable, check_topic
from fastcapa.sizing import CROSSOVER, MESSAGE_OVERHEAD, MIN_BUFFER, check_memory, default_buffer

# Upper bounds of the numeric options: each value must fit the native type it
# becomes, and none may ask for more memory or threads than any machine has.
MAX_QUEUES = 256  # receive queues or transmit workers (a fanout group's old kernel limit)
MAX_SLOTS = 1 << 24  # ring sizes and bursts, in frames
MAX_SNAPLEN = _fastcapa.MAX_SNAPLEN  # tcpdump's and libpcap's largest snapshot length
MAX_COUNT = (1 << 63) - 1
MAX_SECONDS = 1e9  # about 31 years; far beyond it, durations overflow
MAX_CPU = 8191  # the largest core number Linux supports (NR_CPUS = 8192)
# DPDK: descriptors per receive queue when -d is not given (what NICs
# commonly allow at most; the driver lowers it to its own limit), and the
# most a queue can be given (a 16-bit count).
DPDK_RX_DESC = 4096
# AF_PACKET: frames of kernel ring per queue when -d is not given: 128 MiB,
# what tcpdump was given in the benchmarks; 4096 dropped about 1 % at the
# sender's top rate.
AF_PACKET_RX_DESC = 65536
MAX_DPDK_DESC = 65535


def parse_cpus(text: str) -> list[int]:
    """Parses a core list such as `2-5,8`."""
    cpus: dict[int, None] = {}  # in order, each core once
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            first, last = _core(lo), _core(hi) if hi else _core(lo)
            if last < first:
                raise ValueError
            cpus.update(dict.fromkeys(range(first, last + 1)))
    except ValueError:
        raise ConfigError(
            f"--cpus {text!r}: expected a list of cores from 0 to {MAX_CPU}, such as 2-5,8"
        ) from None
    return list(cpus)


def _core(text: str) -> int:
    """One core number: ASCII digits only (int() takes "1_0", "٣" and " 1")."""
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_CPU:
        raise ValueError
    return int(text)


@dataclass(frozen=True)
class CaptureSettings:
    """Everything `fastcapa capture` needs, validated."""

    interface: str | None
    read: str | None
    topic: str
    kafka: dict[str, str]
    rx_queues: int = 1
    tx_burst: int = 256
    rx_burst: int = 32
    # -d as given (None: the source's default, see `descriptors`).
    rx_desc: int | None = None
    tx_ring: int = 2048
    tx_workers: int | None = None
    kafka_stats: str | None = None
    snaplen: int = 0
    filter: str | None = None
    fanout: Literal["hash", "qm", "cpu", "lb"] = "hash"
    cpus: list[int] = field(default_factory=list)
    count: int = 0
    duration: float | None = None
    stats_interval: float = 5.0
    stats_json: str | None = None
    metrics_port: int | None = None
    idle: Literal["spin", "poll"] = "poll"
    connect_timeout: float = 10.0
    drain_timeout: float = 30.0
    partition_by: Literal["batch", "key", "flow"] = "batch"
    user: str | None = None
    # Bytes the producers may hold while Kafka is slow or away (None: the
    # default, DEFAULT_BUFFER or a quarter of the machine's memory if less).
    buffer: int | None = None
    # --dpdk DEVICE: a DPDK port instead of an interface (docs/dpdk.md), and
    # the EAL's arguments (--eal) as one shell-quoted string.
    dpdk: str | None = None
    eal: str = ""

    @property
    def descriptors(self) -> int:
        """-d, or the source's default: for AF_PACKET AF_PACKET_RX_DESC, for
        DPDK DPDK_RX_DESC (the driver lowers it to its own most); a replay
        has no receive ring."""
        if self.rx_desc is not None:
            return self.rx_desc
        return DPDK_RX_DESC if self.dpdk is not None else AF_PACKET_RX_DESC

    @property
    def workers(self) -> int:
        """--tx-workers, or the default for the cores at hand (`--cpus`, or
        the ones this process may run on)."""
        if self.tx_workers:
            return self.tx_workers
        cores = len(self.cpus) or len(os.sched_getaffinity(0))
        return default_tx_workers(self.rx_queues, cores)

    @property
    def buffer_bytes(self) -> int:
        return self.buffer if self.buffer is not None else default_buffer()

    def producer_settings(self) -> dict[str, str]:
        """The librdkafka settings of each transmit worker's producer: the
        operator's, with the producer queue sized from --buffer unless the
        operator set its limits (-c or -X) by hand."""
        settings = dict(self.kafka)
        share = self.buffer_bytes // self.workers
        messages = share // (MESSAGE_OVERHEAD + CROSSOVER)
        limits = {
            "queue.buffering.max.messages": messages,
            "queue.buffering.max.kbytes": messages * CROSSOVER // 1024,
        }
        for key, value in limits.items():
            if key not in settings:
                settings[key] = str(max(1, min(value, 2**31 - 1)))
        return settings

    def validate(self) -> CaptureSettings:
        if [self.interface, self.read, self.dpdk].count(None) != 2:
            raise ConfigError("give exactly one of -i/--interface, -r/--read and --dpdk")
        if self.eal and self.dpdk is None:
            raise ConfigError("--eal goes with --dpdk")
        if self.dpdk is not None:
            eal_arguments(self.eal, self.cpus)  # judged now: one line, exit 2
            if self.descriptors > MAX_DPDK_DESC:
                raise ConfigError(
                    f"-d/--rx-desc must be at most {MAX_DPDK_DESC} with --dpdk,"
                    f" got {self.descriptors}"
                )
        for option, text in (
            ("-i/--interface", self.interface),
            ("--dpdk", self.dpdk),
            ("-r/--read", self.read),
            ("--stats-json", self.stats_json),
            ("-s/--kafka-stats", self.kafka_stats),
        ):
            if text is not None:
                check_printable(option, text)
        for name, value, most in (
            ("-q/--rx-queues", self.rx_queues, MAX_QUEUES),
            ("--tx-workers", self.workers, MAX_QUEUES),
            ("-w/--tx-burst", self.tx_burst, MAX_SLOTS),
            ("-b/--rx-burst", self.rx_burst, MAX_SLOTS),
            ("-d/--rx-desc", self.descriptors, MAX_SLOTS),
        ):
            if not 1 <= value <= most:
                raise ConfigError(f"{name} must be between 1 and {most}, got {value}")
        if self.tx_ring < 2 or self.tx_ring & (self.tx_ring - 1) or self.tx_ring > MAX_SLOTS:
            raise ConfigError(
                f"-x/--tx-ring must be a power of two between 2 and {MAX_SLOTS}, got {self.tx_ring}"
            )
        if not 0 <= self.snaplen <= MAX_SNAPLEN:
            raise ConfigError(
                f"--snaplen must be between 0 (whole frame) and {MAX_SNAPLEN}, got {self.snaplen}"
            )
        if not 0 <= self.count <= MAX_COUNT:
            raise ConfigError(f"--count must be between 0 and {MAX_COUNT}, got {self.count}")
        for name, seconds in (
            ("--duration", self.duration),
            ("--stats-interval", self.stats_interval),
            ("--connect-timeout", self.connect_timeout),
            ("--drain-timeout", self.drain_timeout),
        ):
            if seconds is not None and not 0 <= seconds <= MAX_SECONDS:  # NaN fails too
                raise ConfigError(
                    f"{name} must be between 0 and {MAX_SECONDS:.0f} seconds, got {seconds}"
                )
        if self.stats_interval == 0:
            raise ConfigError("--stats-interval must be positive")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"--metrics-port must be a TCP port, got {self.metrics_port}")
        allowed = os.sched_getaffinity(0)
        outside = [cpu for cpu in self.cpus if cpu not in allowed]
        if outside:
            shown = ", ".join(map(str, outside[:8])) + (", ..." if len(outside) > 8 else "")
            raise ConfigError(
                f"--cpus: core(s) {shown} are not available to this process "
                f"(allowed: {sorted(allowed)})"
            )
        if self.buffer is not None and self.buffer < MIN_BUFFER:
            raise ConfigError(f"--buffer must be at least 1 MiB, got {self.buffer} bytes")
        check_topic(self.topic)
        check_memory(self)
        return self


def default_tx_workers(rx_queues: int, cores: int) -> int:
    """One transmit worker per ring where there is a core for it beside the
    receive workers, fewer where there is not, and at least one. A transmit
    worker and its producer's threads want most of a core; where they must
    share, two producers cost more per frame than one (smaller message
    sets; measured in docs/performance.md)."""
    return max(1, min(rx_queues, cores - rx_queues))
