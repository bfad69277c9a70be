"""Per-thread figures of a running process from /proc, for the tests and
for bench/run.py (which has this folder on its path)."""

from __future__ import annotations

from pathlib import Path


def thread_cpu_seconds(pid: int) -> list[tuple[str, float]]:
    """(name, CPU seconds run) of each thread of `pid`, in the scheduler's
    nanoseconds (/proc/PID/task/*/schedstat), not 10 ms clock ticks. A
    thread that ends while it is read is left out."""
    threads = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            seconds = int((task / "schedstat").read_text().split()[0]) / 1e9
        except (OSError, ValueError):
            continue
        threads.append((name, seconds))
    return threads
