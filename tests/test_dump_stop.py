"""Ctrl-C always stops `fastcapa dump`: at any moment (while it starts, right
after its first progress line, while it follows the topic), a second time,
as SIGTERM, and when it was started with SIGINT ignored (as a background job
of a script starts it). Its stderr is a terminal (a pty), so the progress
line is on; each dump must be gone within STOP_BOUND seconds of the signal,
and a dump stopped by fastcapa leaves a whole file and says what it wrote."""

from __future__ import annotations

import os
import pty
import random
import re
import select
import signal
import time

import pytest

from fastcapa_support import corpus
from fastcapa_support.corpus import CORPUS
from fastcapa_support.pcapref import read_capture
from fastcapa_support.runner import fastcapa_process

pytestmark = pytest.mark.kafka

AFS = CORPUS / "afs.pcap"  # 601 Ethernet records
# Longest a dump may take to exit after a signal: one step (0.2 s) and a
# read's wait (0.1 s), writing what waits, leaving Kafka, the interpreter's
# exit; or, while it starts, opening the query. Generous for a busy machine.
STOP_BOUND = 10.0
# A command prefix that starts the dump with SIGINT ignored, as a shell
# without job control starts `cmd &`.
SIGINT_IGNORED = ("sh", "-c", 'trap "" INT; exec "$@"', "sh")


@pytest.fixture(scope="module")
def afs_topic(kafka, tmp_path_factory):
    from fastcapa_support.fixtures import wait_topic_ready
    from fastcapa_support.runner import run_fastcapa

    name = f"dump-stop-{int(time.time() * 1000)}"
    run = run_fastcapa("-r", str(AFS), "-t", name, "-k", kafka.bootstrap)
    assert run.status == 0, run.stderr
    wait_topic_ready(kafka.bootstrap, name, 1)
    return name


class Terminal:
    """The pty a dump's stderr is on: what it wrote, read as it comes."""

    def __init__(self) -> None:
        self.leader, self.follower = pty.openpty()
        self.seen = b""

    def read(self, timeout: float) -> bool:
        """Reads what is there within `timeout`; False once the dump closed it."""
        if select.select([self.leader], [], [], timeout)[0]:
            try:
                chunk = os.read(self.leader, 4096)
            except OSError:  # EIO: every writer is gone
                return False
            self.seen += chunk
            return bool(chunk)
        return True

    def wait_for(self, text: bytes, proc, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            assert proc.poll() is None, f"exited before {text!r}: {self.seen!r}"
            assert time.monotonic() < deadline, f"no {text!r} in {timeout} s: {self.seen!r}"
            self.read(0.05)

    def close(self) -> None:
        os.close(self.leader)


def stop(
    afs_topic: str,
    kafka,
    out,
    *,
    wait: str,
    delay: float,
    signals: list[int],
    gap: float = 0.05,
    prefix=(),
) -> tuple[int, float, bytes]:
    """Starts a dump --follow on a terminal; after `wait` ("start": nothing;
    "progress": its first progress line) and `delay` seconds more, sends
    `signals`, `gap` seconds apart; the exit status, the seconds from the
    first signal to the exit, and what it wrote on the terminal."""
    term = Terminal()
    try:
        with fastcapa_process(
            "dump", "-t", afs_topic, "-k", kafka.bootstrap, "--follow", "-o", str(out),
            prefix=prefix, stderr=term.follower,
        ) as proc:  # fmt: skip
            os.close(term.follower)
            if wait == "progress":
                term.wait_for(b"frames read", proc, 30)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                term.read(max(0.0, min(0.05, deadline - time.monotonic())))
            sent = time.monotonic()
            for i, sig in enumerate(signals):
                if i:
                    time.sleep(gap)
                if proc.poll() is None:
                    proc.send_signal(sig)
            while proc.poll() is None and time.monotonic() - sent < STOP_BOUND:
                term.read(0.05)
            took = time.monotonic() - sent
            assert proc.poll() is not None, (
                f"still running {STOP_BOUND} s after {signals} ({wait}, +{delay:.2f} s):"
                f" {term.seen[-300:]!r}"
            )
            while term.read(0.05):
                pass
            return proc.returncode, took, term.seen
    finally:
        term.close()


def assert_stopped_whole(status: int, seen: bytes, out) -> None:
    """Stopped by fastcapa: exit 0, a whole file, the closing line says its frames."""
    text = seen.decode(errors="replace")
    assert status == 0 and "Traceback" not in text, text
    dumped = read_capture(str(out))
    assert dumped.error is None, dumped.error
    assert len(dumped.records) <= 601
    times = [ts for ts, _ in dumped.records]
    assert times == sorted(times)
    said = re.findall(r"fastcapa dump: (\d+) frames from topic ", text)
    assert said == [str(len(dumped.records))], text


@corpus.needed()
def test_sigint_stops_a_dump_that_was_started_with_it_ignored(afs_topic, kafka, tmp_path):
    """A shell without job control starts `cmd &` with SIGINT ignored, and
    Python then raises no KeyboardInterrupt: a dump that relied on it went
    on following the topic after Ctrl-C (it failed `make test` once)."""
    out = tmp_path / "out.pcap"
    status, took, seen = stop(
        afs_topic, kafka, out, wait="progress", delay=0, signals=[signal.SIGINT],
        prefix=SIGINT_IGNORED,
    )  # fmt: skip
    assert_stopped_whole(status, seen, out)
    assert took < STOP_BOUND
    assert len(read_capture(str(out)).records) == 601


# (what to wait for, the longest delay after it, the signals): one trial
# each. A second signal comes 0.05 to 0.5 s after the first: before the
# step under way ends, or while what waits is written and Kafka left.
MOMENTS = [
    *[("start", 1.5, [signal.SIGINT])] * 5,  # while it starts: interpreter, imports, Kafka
    *[("progress", 0.0, [signal.SIGINT])] * 2,  # right after the first progress line
    *[("progress", 2.0, [signal.SIGINT])] * 3,  # while it follows the topic
    *[("progress", 2.0, [signal.SIGINT, signal.SIGINT])] * 3,  # a second Ctrl-C
    ("start", 1.5, [signal.SIGINT, signal.SIGINT]),
    *[("progress", 2.0, [signal.SIGTERM])] * 2,
]


@corpus.needed()
def test_a_signal_at_any_moment_stops_a_dump_within_a_bound(afs_topic, kafka, tmp_path):
    """Each trial at a random moment (the seed is in a failure's message):
    the dump is gone within STOP_BOUND seconds. Once its first progress
    line is out, fastcapa stops it: exit 0, a whole file, the closing line.
    Before that, the interpreter may still be starting: then Python's own
    KeyboardInterrupt (status 130, or killed by the signal) ends it."""
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    slowest = 0.0
    for i, (wait, longest, signals) in enumerate(MOMENTS):
        delay, gap = rng.uniform(0, longest), rng.uniform(0.05, 0.5)
        out = tmp_path / f"out-{i}.pcap"
        status, took, seen = stop(
            afs_topic, kafka, out, wait=wait, delay=delay, signals=signals, gap=gap
        )
        slowest = max(slowest, took)
        trial = (
            f"seed {seed}, trial {i}: {wait} +{delay:.2f} s, {signals} {gap:.2f} s apart,"
            f" status {status}"
        )
        if wait == "progress" or b"frames read" in seen:
            try:
                assert_stopped_whole(status, seen, out)
            except AssertionError as e:
                raise AssertionError(f"{trial}: {e}") from None
        else:
            assert status in (0, 130, -signal.SIGINT), f"{trial}: {seen!r}"
            if status == 0:
                assert_stopped_whole(status, seen, out)
    print(f"\nslowest stop: {slowest:.2f} s of {STOP_BOUND} s (seed {seed})")


def test_a_dump_still_connecting_stops_at_once(tmp_path):
    """Opening the query waits up to --timeout for each of Kafka's answers:
    a signal then (the broker unreachable here) ends the dump at once, 130,
    with no file left behind, rather than after the timeout."""
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "never.pcap"
    args = ("dump", "-k", f"127.0.0.1:{port}", "--timeout", "60", "-o", str(out))
    with fastcapa_process(*args, stderr=subprocess.PIPE) as proc:
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        signalled = time.monotonic()
        _, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - signalled
    assert proc.returncode == 130, stderr
    assert took < STOP_BOUND, f"{took:.1f} s after the signal"
    assert b"Traceback" not in stderr, stderr
    assert not out.exists()
