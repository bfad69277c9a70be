"""What the native workers have to tell the operator, in the operator's words.

Native threads never print. Each worker keeps a log of events (a kind, the
reason in the words of whoever gave it, and how often that reason has
occurred); a reason that repeats is queued the 1st, 10th, 100th, ... time
only. The control plane drains the logs on its tick and writes one line per
event on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import IO, Protocol

# kind -> how the line reads; {reason} and {count} are filled in.
_WORDING = {
    "kafka": "kafka: {reason}",
    "delivery-failed": "delivery failed ({count} so far, counted at [kaf]): {reason}",
    "refused": "Kafka refused a frame ({count} so far, counted at [tx]): {reason}",
    "interface-down": "{reason} is down; waiting for it to come back",
    "interface-up": "{reason} is up again",
}


class HasEvents(Protocol):
    @property
    def name(self) -> str: ...
    def events(self) -> tuple[list[tuple[str, str, int]], int]: ...


def describe(source: str, kind: str, reason: str, count: int) -> str:
    wording = _WORDING.get(kind, kind + ": {reason}")
    return f"fastcapa: {source}: " + wording.format(reason=reason, count=count)


def report(workers: Iterable[HasEvents], stream: IO[str] | None = None) -> None:
    """Writes every event queued since the last call, one line each."""
    stream = stream or sys.stderr
    for worker in workers:
        events, lost = worker.events()
        for kind, reason, count in events:
            stream.write(describe(worker.name, kind, reason, count) + "\n")
        if lost:
            stream.write(f"fastcapa: {worker.name}: {lost} more events not shown\n")
    stream.flush()
