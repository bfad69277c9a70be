"""The Prometheus metrics and the table's rows against the counters the
extension exports (RX_COUNTERS, TX_COUNTERS, INDEX_COUNTERS, spelled once in
src/counters.rs): the names operators scrape stay as they are, and a counter
added to the extension appears with no other list to edit. No broker, no root."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fastcapa import _fastcapa, metrics
from fastcapa.stats import READ_PASS, ROWS, Snapshot
from fastcapa_support.counters import queue, worker


def scrape(collector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, as a scraper reads them."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def pipeline_snapshot(extra: dict[str, int] | None = None) -> Snapshot:
    queues = [queue(600, nic_drops=5, ring_full=3), queue(400)]
    workers = [worker(500, dropped=2, failed=1), worker(490)]
    for row in (*queues, *workers):
        row.update(extra or {})
    return Snapshot.collect(queues, [7, 0], workers)


# What the pipeline exported before its counters came from the extension's
# lists, sample by sample (the frames per stage, queue and worker).
BEFORE = {
    **{
        ("fastcapa_frames_total", (("kind", kind), ("stage", stage))): value
        for stage, values in {
            "nic": (1000, 995, 5),
            "rx": (995, 992, 3),
            "tx": (990, 988, 2),
            "kaf": (988, 987, 1),
        }.items()
        for kind, value in zip(("in", "out", "dropped"), values, strict=True)
    },
    **{
        ("fastcapa_queue_frames_total", (("kind", kind), ("queue", q))): value
        for q, values in {"0": (600, 5, 595, 592, 3), "1": (400, 0, 400, 400, 0)}.items()
        for kind, value in zip(
            ("nic_packets", "nic_drops", "taken", "enqueued", "ring_full"), values, strict=True
        )
    },
    ("fastcapa_ring_fill", (("queue", "0"),)): 7,
    ("fastcapa_ring_fill", (("queue", "1"),)): 0,
    **{
        ("fastcapa_worker_frames_total", (("kind", kind), ("worker", w))): value
        for w, values in {"0": (500, 498, 2, 497, 1), "1": (490, 490, 0, 490, 0)}.items()
        for kind, value in zip(
            ("dequeued", "produced", "dropped", "delivered", "failed"), values, strict=True
        )
    },
    ("fastcapa_producer_queue", (("worker", "0"),)): 0,
    ("fastcapa_producer_queue", (("worker", "1"),)): 0,
    ("fastcapa_delivered_bytes_total", ()): 98700,
}


def test_the_pipeline_metrics_keep_their_names_and_add_the_bytes():
    scraped = scrape(metrics.PipelineCollector(pipeline_snapshot))
    assert {k: scraped.get(k) for k in BEFORE} == BEFORE
    assert {k: v for k, v in scraped.items() if "bytes_total" in k[0] and k not in BEFORE} == {
        ("fastcapa_queue_bytes_total", (("kind", "taken"), ("queue", "0"))): 59500,
        ("fastcapa_queue_bytes_total", (("kind", "taken"), ("queue", "1"))): 40000,
        ("fastcapa_worker_bytes_total", (("kind", "produced"), ("worker", "0"))): 49800,
        ("fastcapa_worker_bytes_total", (("kind", "delivered"), ("worker", "0"))): 49700,
        ("fastcapa_worker_bytes_total", (("kind", "produced"), ("worker", "1"))): 49000,
        ("fastcapa_worker_bytes_total", (("kind", "delivered"), ("worker", "1"))): 49000,
    }


def test_a_counter_added_to_the_extension_is_exported(monkeypatch):
    """New counters (frames and bytes, receive and transmit side) appear in
    the metrics and the JSON report as the extension lists them."""
    monkeypatch.setattr(_fastcapa, "RX_COUNTERS", [*_fastcapa.RX_COUNTERS, "odd", "odd_bytes"])
    monkeypatch.setattr(_fastcapa, "TX_COUNTERS", [*_fastcapa.TX_COUNTERS, "late"])
    snapshot = pipeline_snapshot({"odd": 3, "odd_bytes": 30, "late": 4})
    scraped = scrape(metrics.PipelineCollector(lambda: snapshot))
    assert scraped[("fastcapa_queue_frames_total", (("kind", "odd"), ("queue", "1")))] == 3
    assert scraped[("fastcapa_queue_bytes_total", (("kind", "odd"), ("queue", "0")))] == 30
    assert scraped[("fastcapa_worker_frames_total", (("kind", "late"), ("worker", "1")))] == 4
    report = snapshot.as_json(None)
    assert report["queues"][0]["odd"] == 3 and report["workers"][0]["late"] == 4


INDEX_COUNTS = {
    "read": 10,
    "read_bytes": 1000,
    "unparsed": 1,
    "indexed": 9,
    "slices": 2,
    "index_bytes": 300,
    "pending": 1,
    "commits": 2,
    "partitions": 3,
    "lag_records": 4,
    "lag_us": 1_500_000,
}


def test_the_index_metrics_keep_their_names_and_a_new_counter_appears(monkeypatch):
    assert set(_fastcapa.INDEX_COUNTERS) <= set(INDEX_COUNTS), "a counter this test lacks"
    scraped = scrape(metrics.IndexCollector(lambda: INDEX_COUNTS))
    before = {
        ("fastcapa_index_records_total", (("kind", "read"),)): 10,
        ("fastcapa_index_records_total", (("kind", "indexed"),)): 9,
        ("fastcapa_index_records_total", (("kind", "unparsed"),)): 1,
        ("fastcapa_index_slices_total", ()): 2,
        ("fastcapa_index_bytes_total", ()): 300,
        ("fastcapa_index_lag_records", ()): 4,
        ("fastcapa_index_lag_seconds", ()): 1.5,
        ("fastcapa_index_partitions", ()): 3,
    }
    assert {k: scraped.get(k) for k in before} == before
    assert scraped[("fastcapa_index_commits_total", ())] == 2
    monkeypatch.setattr(_fastcapa, "INDEX_COUNTERS", [*_fastcapa.INDEX_COUNTERS, "backlog"])
    scraped = scrape(metrics.IndexCollector(lambda: {**INDEX_COUNTS, "backlog": 7}))
    assert scraped[("fastcapa_index_backlog", ())] == 7


def test_the_table_reads_only_counters_the_extension_exports():
    """The rows and the read order name counters as src/counters.rs spells
    them (nic_taken: asked of the extension, used once it is there)."""
    exported = {*_fastcapa.RX_COUNTERS, *_fastcapa.TX_COUNTERS}
    named = {name for row in ROWS.values() for name in row} | set(READ_PASS)
    assert named - exported <= {"nic_taken"}
    assert {"delivered_bytes"} <= exported
    # The hand-built counters of the tests are the extension's, too.
    assert set(queue(1)) == set(_fastcapa.RX_COUNTERS)
    assert set(worker(1)) == set(_fastcapa.TX_COUNTERS)
