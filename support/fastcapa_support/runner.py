"""The command line as an operator runs it, and the checks every test makes
of its outcome: one clear line on failure, and the accounting sums."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastcapa_support import pcapref, processes
from fastcapa_support.kafka_read import read_topic
from fastcapa_support.steady import ProcWatch, memory_kib


@dataclass
class Run:
    status: int
    stdout: bytes
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if "error" in line]


def fastcapa_command(*args: str, seam: str | None = None) -> list[str]:
    """The command line that runs `fastcapa args...`. `seam`: Python code the
    child runs first, in the process that then runs the command line
    (`fastcapa.cli.main`): how a test puts something in that no honest run
    does (figures that do not add up, say) without a hook in fastcapa itself."""
    if seam is None:
        return [sys.executable, "-m", "fastcapa", *args]
    main = "import sys\nfrom fastcapa.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return [sys.executable, "-c", f"{seam}\n{main}", *args]


def run_fastcapa(
    *args: str,
    timeout: float = 120,
    stdin: bytes | None = None,
    env: dict | None = None,
    seam: str | None = None,
) -> Run:
    """Runs the installed `fastcapa` command as an operator would; `env`
    adds to (or overrides) the environment; `seam` as `fastcapa_command`."""
    proc = subprocess.run(
        fastcapa_command(*args, seam=seam),
        capture_output=True,
        timeout=timeout,
        input=stdin,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    return Run(proc.returncode, proc.stdout, proc.stderr.decode(errors="replace"))


def start_fastcapa(
    *args: str, seam: str | None = None, prefix: Sequence[str] = (), **popen: Any
) -> subprocess.Popen:
    """Starts `fastcapa args...` in the background (`prefix`: a command to
    start it under, setpriv say). It is killed when the test ends, whatever
    happens (processes.reap); `fastcapa_process` kills it sooner."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **popen.pop("env", {})}
    return processes.start([*prefix, *fastcapa_command(*args, seam=seam)], env=env, **popen)


@contextlib.contextmanager
def fastcapa_process(*args: str, **kwargs: Any) -> Iterator[subprocess.Popen]:
    """`start_fastcapa`, killed (and waited for) when the block ends, however it ends."""
    proc = start_fastcapa(*args, **kwargs)
    try:
        yield proc
    finally:
        processes.stop(proc)


def assert_clean_failure(run: Run, status: int) -> None:
    """A failure is exactly one line on stderr, the right status, no traceback."""
    assert run.status == status, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr


def assert_accounting(report: dict) -> None:
    """The accounting sums (docs/accounting.md), checked on a --stats-json report."""
    nic, rx, tx, kaf = (report[s] for s in ("nic", "rx", "tx", "kaf"))
    assert nic["taken_in"] == rx["taken_in"] + nic["drops"]
    assert rx["taken_in"] == kaf["out"] + rx["drops"] + tx["drops"] + kaf["drops"]


def assert_no_stage_gives_more_than_it_took(
    report: dict, stages: Sequence[str] = ("nic", "rx", "tx", "kaf")
) -> None:
    """A --stats-json report, intermediate or final: no stage shows more
    frames out and dropped than came in (docs/accounting.md)."""
    over = {
        stage: report[stage]
        for stage in stages
        if report[stage]["taken_in"] < report[stage]["out"] + report[stage]["drops"]
    }
    assert not over, f"a report at {report['time']} gives more than it took: {over}"


def assert_stream_delivered(
    bootstrap: str, topic: str, frames: list[bytes], sent: dict, report: dict
) -> None:
    """A live capture of a stream of numbered flows (gen_capture, sent by
    `VethPair.send`): every frame in Kafka exactly once, none dropped, every
    queue used, the keys within the send (a second either side), and each
    flow's keys rising in the order it was sent (the flow's order kept
    from queue to partition)."""
    records = read_topic(bootstrap, topic)
    assert Counter(r.value for r in records) == Counter(frames)
    assert report["kaf"]["out"] == len(frames) and report["nic"]["drops"] == 0
    assert all(q["taken"] > 0 for q in report["queues"]), report["queues"]
    keys = [struct.unpack(">Q", r.key)[0] for r in records]
    assert sent["first_us"] - 1_000_000 <= min(keys) and max(keys) <= sent["last_us"] + 1_000_000
    by_flow = defaultdict(list)
    for r, key in zip(records, keys, strict=True):
        at = r.value.find(b"FCAP")
        flow, seq = struct.unpack("!II", r.value[at + 4 : at + 12])
        by_flow[flow].append((seq, key))
    for flow, seen in by_flow.items():
        in_send_order = [key for _, key in sorted(seen)]
        assert in_send_order == sorted(in_send_order), f"flow {flow}: keys not rising"


class Probe:
    """`fastcapa -i` running in the background, as an operator starts it.

    Its stderr goes to a file (a pipe nobody reads would stall it once
    full), which a test may read while it runs; a JSON report every second.
    It is killed when the test ends whatever happens (`kill`, the end of a
    `with` block, or at the latest the `no_process_left` fixture).
    """

    def __init__(
        self,
        iface: str,
        topic: str,
        bootstrap: str,
        tmp: Path,
        *args: str,
        prefix: Sequence[str] = (),
        source: Sequence[str] = (),
        watch: float | None = None,
    ) -> None:
        """`prefix`: a command to start it under, e.g. setpriv with other credentials.
        `source`: options naming another source than `-i iface` (`--dpdk ...`).
        `watch`: sample its memory and descriptors every `watch` seconds
        (`self.watch`, `peak_rss_kib`) from the moment it captures."""
        self.stats = tmp / f"stats-{topic}.jsonl"
        self.err_path = tmp / f"stderr-{topic}.txt"
        self.watch: ProcWatch | None = None
        with open(self.err_path, "w") as err:
            self.proc = start_fastcapa(
                *(source or ("-i", iface)), "-t", topic, "-k", bootstrap,
                "--stats-json", str(self.stats), "--stats-interval", "1", *args,
                prefix=prefix, stderr=err,
            )  # fmt: skip
        try:
            self.wait_stderr("capturing on", 60)
        except AssertionError:
            self.kill()
            raise
        if watch is not None:
            self.base = memory_kib(self.pid)
            self.watch = ProcWatch(self.pid, period=watch)

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def peak_rss_kib(self) -> int:
        """The probe's peak resident memory (VmHWM) as last sampled (with `watch`)."""
        return self.watch.peak_kib if self.watch else 0

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_stderr(self, text: str, timeout: float = 30) -> None:
        """Until `text` shows on the probe's stderr; fails if it exits first."""
        deadline = time.monotonic() + timeout
        while text not in self.stderr():
            assert self.proc.poll() is None, f"exited waiting for {text!r}:\n{self.stderr()}"
            assert time.monotonic() < deadline, f"no {text!r} in {timeout} s:\n{self.stderr()}"
            time.sleep(0.05)

    def last(self) -> dict | None:
        """The latest complete report, None before the first."""
        text = self.stats.read_text() if self.stats.exists() else ""
        lines = text.split("\n")[:-1]  # the last may be still half-written
        return json.loads(lines[-1]) if lines else None

    def wait_for(self, what: str, test: Callable[[dict], bool], timeout: float) -> dict:
        """Until the latest report passes `test`; fails (saying `what`) after
        `timeout`, or if the probe exits first."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"the probe exited waiting for {what}\n{self.stderr()}"
            report = self.last()
            if report is not None and test(report):
                return report
            assert time.monotonic() < deadline, f"no report with {what}: {report}"
            time.sleep(0.2)

    def stop(self, timeout: float = 60, sig: int = signal.SIGTERM) -> tuple[int, str, dict]:
        """`sig` (SIGTERM), then the exit status, stderr and the final report."""
        self.proc.send_signal(sig)
        return self.finish(timeout, f"{signal.Signals(sig).name}")

    def finish(self, timeout: float = 60, after: str = "") -> tuple[int, str, dict]:
        """Until it exits (on its own, or on a signal sent before); the exit
        status, stderr and the final report. A probe still running after
        `timeout` is killed and fails the test (it hung)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            since = f" after {after}" if after else ""
            raise AssertionError(f"still running {timeout} s{since}:\n{self.stderr()}") from None
        finally:
            if self.watch is not None:
                self.watch.stop()
        report = self.last()
        assert report is not None and report["final"], self.stderr()
        return self.proc.returncode, self.stderr(), report

    def kill(self) -> None:
        processes.stop(self.proc)
        if self.watch is not None:
            self.watch.stop()

    def wait_taken(self, frames: int, timeout: float = 30) -> None:
        """Until the probe's reports say the kernel saw `frames` frames."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            report = self.last()
            if report is not None and report["nic"]["taken_in"] >= frames:
                return
            time.sleep(0.2)


def write_capture(path: Path, frames: list[bytes]) -> str:
    """A pcap file of `frames`, timestamped 0, 1, 2... µs (for a sender)."""
    return pcapref.write_capture(str(path), enumerate(frames))
