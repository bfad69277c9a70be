"""The accounting check (docs/accounting.md) on hand-built figures: no broker,
no root, no native thread. Every sum that must hold, each way it can fail
and the words it fails with, and the command line's answer to a failed
check (the final table, then one error line, exit 1)."""

from __future__ import annotations

import sys

import pytest

from fastcapa import cli, pipeline
from fastcapa.stats import Reporter, Snapshot


def queue(
    nic_packets: int, nic_drops: int = 0, taken: int | None = None, ring_full: int = 0
) -> dict[str, int]:
    """A receive queue's raw counters: what the kernel had, dropped and handed over."""
    taken = nic_packets - nic_drops if taken is None else taken
    return {
        "nic_packets": nic_packets,
        "nic_drops": nic_drops,
        "taken": taken,
        "taken_bytes": 100 * taken,
        "enqueued": taken - ring_full,
        "ring_full": ring_full,
    }


def worker(dequeued: int, dropped: int = 0, failed: int = 0, delivered: int | None = None):
    """A transmit worker's raw counters: what it took, refused, lost and delivered."""
    produced = dequeued - dropped
    delivered = produced - failed if delivered is None else delivered
    return {
        "dequeued": dequeued,
        "produced": produced,
        "produced_bytes": 100 * produced,
        "dropped": dropped,
        "delivered": delivered,
        "delivered_bytes": 100 * delivered,
        "failed": failed,
    }


def test_a_run_that_lost_nothing_adds_up():
    final = Snapshot.collect([queue(600), queue(400)], [0, 0], [worker(700), worker(300)])
    assert final.accounting_errors() == []
    assert (final.nic.taken_in, final.rx.taken_in, final.kaf.out) == (1000, 1000, 1000)


def test_every_kind_of_drop_counted_at_its_stage_adds_up():
    """Frames lost at each stage: the kernel (nic), a full ring (rx), the
    producer's refusal (tx) and failed deliveries (kaf)."""
    final = Snapshot.collect(
        [queue(1000, nic_drops=50, ring_full=30)],
        [0],
        [worker(520, dropped=20, failed=7), worker(400, dropped=0, failed=3)],
    )
    assert (final.nic.drops, final.rx.drops, final.tx.drops, final.kaf.drops) == (50, 30, 20, 10)
    assert final.accounting_errors() == []


def test_one_frame_delivered_more_than_taken_is_named_with_its_figures():
    final = Snapshot.collect([queue(200)], [0], [worker(200, delivered=201)])
    assert final.accounting_errors() == [
        "taken in 200 != delivered 201 + rx drops 0 + tx drops 0 + kaf drops 0"
    ]


def test_a_frame_lost_without_a_count_is_named():
    """Taken in, never delivered, dropped nowhere: the second sum fails."""
    final = Snapshot.collect([queue(200)], [0], [worker(200, delivered=199)])
    assert final.accounting_errors() == [
        "taken in 200 != delivered 199 + rx drops 0 + tx drops 0 + kaf drops 0"
    ]


def test_a_kernel_count_that_does_not_match_what_was_taken_is_named():
    final = Snapshot.collect([queue(1000, nic_drops=10, taken=980)], [0], [worker(980)])
    assert final.accounting_errors() == ["nic in 1000 != taken in 980 + nic drops 10"]


def test_both_sums_failing_are_both_named():
    final = Snapshot.collect(
        [queue(1000, nic_drops=10, taken=980)], [0], [worker(980, delivered=0)]
    )
    assert len(final.accounting_errors()) == 2


@pytest.mark.parametrize("stage", ["rx", "tx", "kaf"])
def test_a_drop_counted_twice_is_named(stage):
    """A drop counted at a stage but the frame delivered as well."""
    drops = {"rx": 0, "tx": 0, "kaf": 0, stage: 1}
    q = queue(100, ring_full=drops["rx"])
    q["enqueued"] = 100  # the ring took it all the same
    w = worker(100, dropped=drops["tx"], failed=drops["kaf"], delivered=100)
    final = Snapshot.collect([q], [0], [w])
    (error,) = final.accounting_errors()
    assert error.startswith("taken in 100 != delivered 100 + ")
    assert f"{stage} drops 1" in error


# -- the command line's answer to a failed check


class _FakePipeline:
    """Stands in for the native pipeline: a replay that ran, and the final
    figures it reports (hand-built: one frame delivered more than taken)."""

    final = Snapshot.collect([queue(200)], [0], [worker(200, delivered=201)])

    def __init__(self, settings) -> None:
        self.settings = settings
        self.linktype = 1
        self.reporter = Reporter(sys.stderr, settings.stats_json)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.reporter.close()

    def prepare(self) -> None: ...
    def serve_metrics(self) -> None: ...

    def source_name(self) -> str:
        return self.settings.read

    def source_notes(self) -> list[str]:
        return []

    def run(self) -> pipeline.Outcome:
        self.reporter.report(self.final, final=True)
        return pipeline.Outcome(self.final, None, interrupted=False)


def test_a_failed_check_is_the_final_table_then_one_line_and_exit_1(monkeypatch, capsys, tmp_path):
    capture = tmp_path / "any.pcap"
    capture.write_bytes(b"")
    monkeypatch.setattr(pipeline, "Pipeline", _FakePipeline)
    status = cli.main(["-r", str(capture), "-t", "t", "-k", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert status == 1, err
    assert [line for line in err.splitlines() if "error" in line] == [
        "fastcapa: error: accounting does not add up: taken in 200 != delivered 201"
        " + rx drops 0 + tx drops 0 + kaf drops 0"
    ], err
    table = err.index("[kaf]")
    assert table < err.index("fastcapa: error:"), "the table comes before the error line"


def test_a_check_that_holds_exits_0(monkeypatch, capsys, tmp_path):
    capture = tmp_path / "any.pcap"
    capture.write_bytes(b"")
    honest = Snapshot.collect([queue(200)], [0], [worker(200)])
    monkeypatch.setattr(_FakePipeline, "final", honest)
    monkeypatch.setattr(pipeline, "Pipeline", _FakePipeline)
    assert cli.main(["-r", str(capture), "-t", "t", "-k", "127.0.0.1:1"]) == 0
    assert "error" not in capsys.readouterr().err
