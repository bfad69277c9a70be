"""Prometheus metrics on --metrics-port: the same figures as the table.

A collector reads the pipeline's (or the indexer's) counters when Prometheus scrapes (from the
exporter's own thread), so a scrape always sees the current values and costs
the data plane nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from fastcapa import _fastcapa
from fastcapa.errors import ConfigError
from fastcapa.stats import Snapshot

# The counters come from the extension's own lists (RX_COUNTERS, TX_COUNTERS,
# INDEX_COUNTERS, spelled once in src/counters.rs): one added there is
# exported here with no other list to edit. A counter whose name ends in
# `_bytes` counts bytes, any other frames (or records); these words say what
# a kind means, and a kind without words is exported all the same.
WORDS = {
    "nic_packets": "the kernel's or NIC's count, dropped ones included",
    "nic_drops": "dropped by the kernel or NIC",
    "nic_taken": "taken when the kernel's or NIC's count was last read",
    "taken": "taken in by the receive worker",
    "enqueued": "put on the transmit ring",
    "ring_full": "dropped, the transmit ring full",
    "dequeued": "taken off the transmit rings",
    "produced": "accepted by the producer",
    "dropped": "refused by the producer, or left on a ring by an abort",
    "delivered": "acknowledged by Kafka",
    "failed": "delivery failed or purged",
}


def _kinds(names: list[str], unit: str) -> list[tuple[str, str]]:
    """(counter, kind label) of every counter of `names` in `unit`
    ("frames": no `_bytes` suffix; "bytes": the suffix, dropped from the label)."""
    if unit == "bytes":
        return [(name, name.removesuffix("_bytes")) for name in names if name.endswith("_bytes")]
    return [(name, name) for name in names if not name.endswith("_bytes")]


def _help(text: str, kinds: list[tuple[str, str]]) -> str:
    """`text`, then each kind with its words where it has some."""
    said = [f"{kind} ({WORDS[kind]})" if kind in WORDS else kind for _, kind in kinds]
    return f"{text}, by kind: {', '.join(said)}"


def _per_member(
    metric: str, text: str, member: str, rows: list[dict[str, int]], names: list[str]
) -> Iterator[Metric]:
    """One counter family per unit (frames, bytes) of `names`, a sample per
    row (receive queue, transmit worker) and kind."""
    for unit in ("frames", "bytes"):
        kinds = _kinds(names, unit)
        if not kinds:
            continue
        family = CounterMetricFamily(
            f"{metric}_{unit}", _help(f"{unit.capitalize()} {text}", kinds), labels=[member, "kind"]
        )
        for i, row in enumerate(rows):
            for name, kind in kinds:
                family.add_metric([str(i), kind], row[name])
        yield family


class PipelineCollector:
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        now = self.snapshot()
        frames = CounterMetricFamily(
            "fastcapa_frames",
            "Frames per stage: in, out and dropped (docs/accounting.md)",
            labels=["stage", "kind"],
        )
        for stage, row in now.rows().items():
            frames.add_metric([stage, "in"], row.taken_in)
            frames.add_metric([stage, "out"], row.out)
            frames.add_metric([stage, "dropped"], row.drops)
        yield frames
        rx_names = [name for name in _fastcapa.RX_COUNTERS if all(name in q for q in now.queues)]
        yield from _per_member("fastcapa_queue", "per receive queue", "queue", now.queues, rx_names)
        ring_fill = GaugeMetricFamily(
            "fastcapa_ring_fill", "Frames waiting in the transmit ring", labels=["queue"]
        )
        for i, queue in enumerate(now.queues):
            ring_fill.add_metric([str(i)], queue.get("ring_fill", 0))
        yield ring_fill
        tx_names = [name for name in _fastcapa.TX_COUNTERS if all(name in w for w in now.workers)]
        yield from _per_member(
            "fastcapa_worker", "per transmit worker", "worker", now.workers, tx_names
        )
        producer_queue = GaugeMetricFamily(
            "fastcapa_producer_queue",
            "Messages in the worker's producer, not yet acknowledged",
            labels=["worker"],
        )
        for i, worker in enumerate(now.workers):
            in_flight = worker["produced"] - worker["delivered"] - worker["failed"]
            producer_queue.add_metric([str(i)], max(0, in_flight))
        yield producer_queue
        delivered_bytes = CounterMetricFamily(
            "fastcapa_delivered_bytes", "Bytes of frames Kafka acknowledged"
        )
        delivered_bytes.add_metric([], now.delivered_bytes)
        yield delivered_bytes


# `fastcapa index`'s counters with a metric of their own: name -> (metric,
# its `kind` label or None, gauge rather than counter, help, scale). Any
# other counter of INDEX_COUNTERS becomes `fastcapa_index_<name>`, a gauge.
INDEX_METRICS: dict[str, tuple[str, str | None, bool, str, float]] = {
    **{
        kind: (
            "fastcapa_index_records",
            kind,
            False,
            "Records of the capture topic: read, indexed (acknowledged), unparsed",
            1,
        )
        for kind in ("read", "indexed", "unparsed")
    },
    "read_bytes": ("fastcapa_index_read_bytes", None, False, "Bytes of records read", 1),
    "slices": ("fastcapa_index_slices", None, False, "Slices the index topic acknowledged", 1),
    "index_bytes": (
        "fastcapa_index_bytes",
        None,
        False,
        "Bytes of slices acknowledged (before compression)",
        1,
    ),
    "pending": (
        "fastcapa_index_pending",
        None,
        True,
        "Slices handed to the producer, not yet acknowledged",
        1,
    ),
    "commits": (
        "fastcapa_index_commits",
        None,
        False,
        "Offset commits, each after the slices it covers were acknowledged",
        1,
    ),
    "lag_records": (
        "fastcapa_index_lag_records",
        None,
        True,
        "Records of the member's partitions not indexed yet",
        1,
    ),
    "lag_us": (
        "fastcapa_index_lag_seconds",
        None,
        True,
        "Capture time between the newest record and the newest indexed",
        1e-6,
    ),
    "partitions": (
        "fastcapa_index_partitions",
        None,
        True,
        "Partitions of the capture topic assigned to this member",
        1,
    ),
}


class IndexCollector:
    """`fastcapa index`'s figures, read from the indexer at each scrape."""

    def __init__(self, counters: Callable[[], dict[str, int]]) -> None:
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        counts = self.counters()
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for name in _fastcapa.INDEX_COUNTERS:
            if name not in counts:
                continue
            metric, kind, gauge, text, scale = INDEX_METRICS.get(
                name, (f"fastcapa_index_{name}", None, True, f"fastcapa index: {name}", 1)
            )
            family = families.get(metric)
            if family is None:
                labels = ["kind"] if kind is not None else []
                kind_of = GaugeMetricFamily if gauge else CounterMetricFamily
                family = families[metric] = kind_of(metric, text, labels=labels)
            family.add_metric([kind] if kind is not None else [], counts[name] * scale)
        yield from families.values()


def serve(port: int, collector: PipelineCollector | IndexCollector) -> None:
    """Serves `collector`'s figures on /metrics at `port` (all addresses)
    from a daemon thread."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    try:
        start_http_server(port, registry=registry)
    except OSError as e:
        raise ConfigError(f"--metrics-port {port}: {e.strerror or e}") from None
