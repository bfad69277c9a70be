"""Prometheus metrics on --metrics-port: the same figures as the table.

A collector reads the pipeline's (or the indexer's) counters when Prometheus scrapes (from the
exporter's own thread), so a scrape always sees the current values and costs
the data plane nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from fastcapa.errors import ConfigError
from fastcapa.stats import Snapshot


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
        queue_frames = CounterMetricFamily(
            "fastcapa_queue_frames", "Frames per receive queue", labels=["queue", "kind"]
        )
        ring_fill = GaugeMetricFamily(
            "fastcapa_ring_fill", "Frames waiting in the transmit ring", labels=["queue"]
        )
        for i, queue in enumerate(now.queues):
            for kind in ("nic_packets", "nic_drops", "taken", "enqueued", "ring_full"):
                queue_frames.add_metric([str(i), kind], queue[kind])
            ring_fill.add_metric([str(i)], queue.get("ring_fill", 0))
        yield queue_frames
        yield ring_fill
        worker_frames = CounterMetricFamily(
            "fastcapa_worker_frames", "Frames per transmit worker", labels=["worker", "kind"]
        )
        producer_queue = GaugeMetricFamily(
            "fastcapa_producer_queue",
            "Messages in the worker's producer, not yet acknowledged",
            labels=["worker"],
        )
        for i, worker in enumerate(now.workers):
            for kind in ("dequeued", "produced", "dropped", "delivered", "failed"):
                worker_frames.add_metric([str(i), kind], worker[kind])
            in_flight = worker["produced"] - worker["delivered"] - worker["failed"]
            producer_queue.add_metric([str(i)], max(0, in_flight))
        yield worker_frames
        yield producer_queue
        delivered_bytes = CounterMetricFamily(
            "fastcapa_delivered_bytes", "Bytes of frames Kafka acknowledged"
        )
        delivered_bytes.add_metric([], now.delivered_bytes)
        yield delivered_bytes


class IndexCollector:
    """`fastcapa index`'s figures, read from the indexer at each scrape."""

    def __init__(self, counters: Callable[[], dict[str, int]]) -> None:
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        counts = self.counters()
        records = CounterMetricFamily(
            "fastcapa_index_records",
            "Records of the capture topic: read, indexed (acknowledged), unparsed",
            labels=["kind"],
        )
        for kind in ("read", "indexed", "unparsed"):
            records.add_metric([kind], counts[kind])
        yield records
        yield CounterMetricFamily(
            "fastcapa_index_slices",
            "Slices the index topic acknowledged",
            value=counts["slices"],
        )
        yield CounterMetricFamily(
            "fastcapa_index_bytes",
            "Bytes of slices acknowledged (before compression)",
            value=counts["index_bytes"],
        )
        yield GaugeMetricFamily(
            "fastcapa_index_lag_records",
            "Records of the member's partitions not indexed yet",
            value=counts["lag_records"],
        )
        yield GaugeMetricFamily(
            "fastcapa_index_lag_seconds",
            "Capture time between the newest record and the newest indexed",
            value=counts["lag_us"] / 1e6,
        )
        yield GaugeMetricFamily(
            "fastcapa_index_partitions",
            "Partitions of the capture topic assigned to this member",
            value=counts["partitions"],
        )


def serve(port: int, collector: PipelineCollector | IndexCollector) -> None:
    """Serves `collector`'s figures on /metrics at `port` (all addresses)
    from a daemon thread."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    try:
        start_http_server(port, registry=registry)
    except OSError as e:
        raise ConfigError(f"--metrics-port {port}: {e.strerror or e}") from None
