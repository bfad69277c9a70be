"""Statistics: the stage totals of the table, their rates, and the reports.

The native workers keep raw counters (`counters()` dicts); this module gives
them their meaning: which figures make each stage's row, the accounting sums
(docs/accounting.md), rates between two reports, and the table, JSON and metrics forms.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from typing import IO

from fastcapa.errors import ConfigError

STAGES = ("nic", "rx", "tx", "kaf")
# Each stage's row from its workers' counters (src/counters.rs, the names the
# extension exports), added up: (in, out, drops). The queued column is the
# transmit rings' fill at [rx], what the producers hold at [kaf].
ROWS = {
    "nic": ("nic_packets", "taken", "nic_drops"),
    "rx": ("taken", "enqueued", "ring_full"),
    "tx": ("dequeued", "produced", "dropped"),
    "kaf": ("produced", "delivered", "failed"),
}

# While frames move, a report must not show more leaving a stage (out or
# dropped) than came into it. Each counter only grows, and each worker counts
# a frame into a stage before it counts it out or dropped; so a figure read
# after every figure downstream of it is at least their sum. `Pipeline.snapshot`
# reads every worker's counters READ_PASSES times and takes each counter from
# its pass below: what leaves the last stages first, what enters the first
# last. A counter not named here comes from the last pass.
READ_PASSES = 3
READ_PASS = {
    # the receive queues: [nic] and [rx] out, [rx] drops; [rx] in, [nic] drops; [nic] in
    "nic_taken": 0,
    "enqueued": 0,
    "ring_full": 0,
    "taken": 1,
    "taken_bytes": 1,
    "nic_drops": 1,
    "nic_packets": 2,
    # the transmit workers: [kaf] out and drops; [kaf] in = [tx] out, [tx] drops; [tx] in
    "delivered": 0,
    "delivered_bytes": 0,
    "failed": 0,
    "produced": 1,
    "produced_bytes": 1,
    "dropped": 1,
    "dequeued": 2,
}


def in_pipeline_order(passes: list[list[dict[str, int]]]) -> list[dict[str, int]]:
    """Several reads of the same workers' counters (each a list, one dict
    per worker, in the order of READ_PASS's passes) made into one: each
    counter from its pass."""
    last = len(passes) - 1
    return [
        {name: passes[min(READ_PASS.get(name, last), last)][i][name] for name in newest}
        for i, newest in enumerate(passes[last])
    ]


@dataclass(frozen=True)
class Row:
    """One stage: what came in, what waits, what went on, what was dropped."""

    taken_in: int
    queued: int | None
    out: int
    drops: int


@dataclass(frozen=True)
class Snapshot:
    """All figures of one report."""

    at: float  # wall clock (seconds since the epoch), what reports show
    mono: float  # monotonic clock, what rates are computed from
    nic: Row
    rx: Row
    tx: Row
    kaf: Row
    queues: list[dict[str, int]] = field(default_factory=list)
    workers: list[dict[str, int]] = field(default_factory=list)
    delivered_bytes: int = 0

    @classmethod
    def collect(
        cls,
        queues: list[dict[str, int]],
        ring_fill: list[int],
        workers: list[dict[str, int]],
    ) -> Snapshot:
        totals = {**_totals(queues), **_totals(workers)}
        for i, fill in enumerate(ring_fill):
            if i < len(queues):
                queues[i] = {**queues[i], "ring_fill": fill}
        rows = {
            stage: Row(totals.get(taken_in, 0), None, totals.get(out, 0), totals.get(drops, 0))
            for stage, (taken_in, out, drops) in ROWS.items()
        }
        # [nic] as of the receive workers' last reading of the kernel's (or
        # the NIC's) counters: what they had taken at that moment, where the
        # extension says (the kernel's count is read only now and then).
        if "nic_taken" in totals:
            rows["nic"] = replace(rows["nic"], out=totals["nic_taken"])
        rows["rx"] = replace(rows["rx"], queued=sum(ring_fill))
        kaf = rows["kaf"]
        rows["kaf"] = replace(kaf, queued=max(0, kaf.taken_in - kaf.out - kaf.drops))
        return cls(
            at=time.time(),
            mono=time.monotonic(),
            **rows,
            queues=queues,
            workers=workers,
            delivered_bytes=totals.get("delivered_bytes", 0),
        )

    @classmethod
    def zero(cls) -> Snapshot:
        """The figures before anything ran: the base of the first report's rates."""
        nothing = Row(0, 0, 0, 0)
        return cls(
            at=time.time(), mono=time.monotonic(), nic=nothing, rx=nothing, tx=nothing, kaf=nothing
        )

    def rows(self) -> dict[str, Row]:
        return {stage: getattr(self, stage) for stage in STAGES}

    def accounting_errors(self) -> list[str]:
        """The accounting sums (docs/accounting.md), as the final report must make them."""
        errors = []
        nic, rx, tx, kaf = self.nic, self.rx, self.tx, self.kaf
        if nic.taken_in != rx.taken_in + nic.drops:
            errors.append(
                f"nic in {nic.taken_in} != taken in {rx.taken_in} + nic drops {nic.drops}"
            )
        lost = kaf.out + rx.drops + tx.drops + kaf.drops
        if rx.taken_in != lost:
            errors.append(
                f"taken in {rx.taken_in} != delivered {kaf.out} + rx drops {rx.drops}"
                f" + tx drops {tx.drops} + kaf drops {kaf.drops}"
            )
        return errors

    def as_json(self, previous: Snapshot | None, final: bool = False) -> dict[str, object]:
        rates = _rates(self, previous)
        return {
            "time": round(self.at, 3),
            "final": final,
            **{
                stage: {**asdict(row), "in_per_s": rates[stage][0], "out_per_s": rates[stage][1]}
                for stage, row in self.rows().items()
            },
            "delivered_bytes": self.delivered_bytes,
            "queues": self.queues,
            "workers": self.workers,
        }


def _totals(rows: list[dict[str, int]]) -> dict[str, int]:
    """Each counter the rows have (as the extension hands them out), added up."""
    names = set.intersection(*(set(row) for row in rows)) if rows else set()
    return {name: sum(row[name] for row in rows) for name in names}


def _rates(now: Snapshot, previous: Snapshot | None) -> dict[str, tuple[float, float]]:
    if previous is None or now.mono <= previous.mono:
        return {stage: (0.0, 0.0) for stage in STAGES}
    span = now.mono - previous.mono
    old = previous.rows()
    return {
        stage: (
            round((row.taken_in - old[stage].taken_in) / span, 1),
            round((row.out - old[stage].out) / span, 1),
        )
        for stage, row in now.rows().items()
    }


def _human(rate: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if rate >= scale:
            return f"{rate / scale:.1f}{unit}/s"
    return f"{rate:.0f}/s"


def format_table(now: Snapshot, previous: Snapshot | None) -> str:
    """fastcapa's four-row table, with per-second rates beside the totals."""
    rates = _rates(now, previous)
    lines = [
        "       ---------- in ---------  --- queued ---  --------- out ---------  ---- drops ----"
    ]
    for stage, row in now.rows().items():
        in_rate, out_rate = rates[stage]
        queued = "-" if row.queued is None else str(row.queued)
        lines.append(
            f"{'[' + stage + ']':<6} {row.taken_in:>14} {_human(in_rate):>9}"
            f"  {queued:>14}  {row.out:>14} {_human(out_rate):>9}  {row.drops:>15}"
        )
    return "\n".join(lines)


class JsonLines:
    """--stats-json: one JSON object per report, appended and flushed, so a
    reader sees each report as soon as it is made."""

    def __init__(self, path: str | None) -> None:
        try:
            self.file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115
        except OSError as e:
            raise ConfigError(f"cannot write --stats-json {path}: {e.strerror}") from None

    def write(self, report: dict[str, object]) -> None:
        if self.file:
            self.file.write(json.dumps(report) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()


class Reporter:
    """Writes each report to stderr (table) and, when asked, a JSON-lines file."""

    def __init__(self, stream: IO[str], json_path: str | None) -> None:
        """Rates of the first report are counted from now."""
        self.stream = stream
        self.json = JsonLines(json_path)
        self.previous = Snapshot.zero()

    def report(self, now: Snapshot, final: bool = False) -> None:
        self.stream.write(format_table(now, self.previous) + "\n")
        self.stream.flush()
        self.json.write(now.as_json(self.previous, final))
        self.previous = now

    def close(self) -> None:
        self.json.close()
