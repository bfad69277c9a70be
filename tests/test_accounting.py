"""The accounting check (docs/accounting.md) on hand-built figures: no broker,
no root, no native thread. Every sum that must hold, each way it can fail
and the words it fails with, and the command line's answer to a failed
check (the final table, then one error line, exit 1); and reports taken
while frames move, where no stage may show more out than in."""

from __future__ import annotations

import functools
import random
import sys

import pytest

from fastcapa import cli, pipeline
from fastcapa._fastcapa import RX_COUNTERS, TX_COUNTERS
from fastcapa.stats import Reporter, Snapshot
from fastcapa_support.counters import queue, worker


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


# -- reports while frames move


class MovingWorker:
    """A worker whose frames move while its counters are read, as the native
    ones do: `counters()` loads them one by one in the extension's order
    (`names`), and between two loads `move` moves frames on, counting each
    into a stage before out of it, as the workers do."""

    def __init__(self, names: list[str], move, seed: int) -> None:
        self.names, self.move = names, move
        self.state = dict.fromkeys(names, 0)
        self.rng = random.Random(seed)

    def counters(self) -> dict[str, int]:
        loaded = {}
        for name in self.names:
            loaded[name] = self.state[name]
            self.move(self.state, self.rng)
        return loaded


def transmit_moves(s: dict[str, int], rng: random.Random) -> None:
    """A burst off the ring, produced or refused; acknowledged or failed."""
    burst = rng.randrange(0, 64)
    s["dequeued"] += burst
    refused = rng.randrange(0, 2) if burst else 0
    s["produced"] += burst - refused
    s["produced_bytes"] += 100 * (burst - refused)
    s["dropped"] += refused
    waiting = s["produced"] - s["delivered"] - s["failed"]
    acked = rng.randrange(0, waiting + 1)
    failed = rng.randrange(0, 2) if acked else 0
    s["delivered"] += acked - failed
    s["delivered_bytes"] += 100 * (acked - failed)
    s["failed"] += failed


def receive_moves(s: dict[str, int], rng: random.Random, publish_kernel: bool = False) -> None:
    """Frames reach the file or the kernel (some dropped), are taken, put on
    the ring or refused by it. With `publish_kernel`, the kernel's counts
    reach the counters only now and then, with what was taken at that
    moment (`nic_taken`), as a receive worker reads PACKET_STATISTICS."""
    kernel = s.setdefault("_kernel", 0), s.setdefault("_kernel_drops", 0)
    arrived, lost = rng.randrange(0, 64), rng.randrange(0, 2)
    s["_kernel"], s["_kernel_drops"] = kernel[0] + arrived + lost, kernel[1] + lost
    if not publish_kernel:
        s["nic_packets"], s["nic_drops"] = s["_kernel"], s["_kernel_drops"]
    ready = s["_kernel"] - s["_kernel_drops"] - s["taken"]
    taken = rng.randrange(0, ready + 1)
    full = rng.randrange(0, 2) if taken else 0
    s["taken"] += taken
    s["taken_bytes"] += 100 * taken
    s["enqueued"] += taken - full
    s["ring_full"] += full
    if publish_kernel and rng.random() < 0.05:
        s["nic_packets"], s["nic_drops"] = s["_kernel"], s["_kernel_drops"]
        s["nic_taken"] = s["taken"]


def giving_more_than_taken(snapshot: Snapshot) -> list[str]:
    return [
        f"{stage}: in {row.taken_in} < out {row.out} + drops {row.drops}"
        for stage, row in snapshot.rows().items()
        if row.taken_in < row.out + row.drops
    ]


def moving_pipeline(receive_names: list[str], receive) -> pipeline.Pipeline:
    from fastcapa.config import CaptureSettings

    probe = pipeline.Pipeline(CaptureSettings(interface=None, read="-", topic="t", kafka={}))
    probe.receivers = [MovingWorker(receive_names, receive, seed) for seed in (1, 2)]  # type: ignore[list-item]
    probe.workers = [MovingWorker(TX_COUNTERS, transmit_moves, seed) for seed in (3, 4, 5)]  # type: ignore[list-item]
    return probe


def test_no_stage_shows_more_out_than_in_while_frames_move():
    """A thousand reports of workers that move frames between any two
    loads: every stage, every report, in >= out + drops. The same figures
    read once each, as the extension hands them out, break it."""
    probe = moving_pipeline(RX_COUNTERS, receive_moves)
    for _ in range(1000):
        assert giving_more_than_taken(probe.snapshot()) == []

    def read_once() -> Snapshot:
        queues, workers = probe._counters()
        return Snapshot.collect(queues, [], workers)

    broken = [problem for _ in range(1000) for problem in giving_more_than_taken(read_once())]
    # The kernel's row is matched with `nic_taken`, which the worker stores
    # beside the kernel's count: that row holds even when read once.
    expected = {"rx", "tx", "kaf"} | (set() if "nic_taken" in RX_COUNTERS else {"nic"})
    assert {p.split(":")[0] for p in broken} == expected


def test_the_kernel_count_read_now_and_then_is_a_row_of_one_moment():
    """The kernel's counts reach the counters only when a receive worker
    reads them, with what it had taken then (nic_taken, read first): the
    [nic] row is of that moment, and never shows more out than in."""
    names = ["nic_taken", *RX_COUNTERS]
    probe = moving_pipeline(names, functools.partial(receive_moves, publish_kernel=True))
    for _ in range(1000):
        snapshot = probe.snapshot()
        assert giving_more_than_taken(snapshot) == []
    assert snapshot.nic.out <= snapshot.rx.taken_in
