"""Processes the tests start in the background, each one killed when its test
ends, whatever happens: a test that fails (or hangs, or is interrupted)
leaves nothing running that could fail the next one.

Every process started through `start` (fastcapa by `runner.start_fastcapa`
and `runner.Probe`, senders by `VethPair.start`) is kept in a list; the
autouse fixture `no_process_left` (fixtures.py) calls `reap` after each
test. `running` kills at the end of a `with` block as well, for a test that
needs the process gone before it goes on.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator, Sequence
from typing import Any

# Started and not yet reaped, oldest first.
_started: list[subprocess.Popen] = []


def start(command: Sequence[str], **popen: Any) -> subprocess.Popen:
    """`subprocess.Popen(command, **popen)`, killed by `reap` at the latest."""
    proc = subprocess.Popen(command, **popen)
    _started.append(proc)
    return proc


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Kills `proc` if it still runs, waits for it, closes its pipes."""
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)  # SIGKILL cannot be refused: only a process stuck in the kernel stays
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


@contextlib.contextmanager
def running(command: Sequence[str], **popen: Any) -> Iterator[subprocess.Popen]:
    """`start`, and `stop` when the block ends, however it ends."""
    proc = start(command, **popen)
    try:
        yield proc
    finally:
        stop(proc)


def reap() -> list[str]:
    """Stops every process started here; the commands of those that were
    still running."""
    left = []
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            left.append(" ".join(str(a) for a in proc.args))
        stop(proc)
    return left
