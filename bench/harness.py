"""The benchmark harness: child processes and their CPU time, the broker and
its topics, the generated inputs, and how fastcapa (this build, or another
with `--before`) is started. No scenario and no report here."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from fastcapa.config import CaptureSettings
from fastcapa.librdkafka import PRODUCER_DEFAULTS
from fastcapa_support import capgen as gen_capture
from fastcapa_support import kafka_cluster as kafka
from fastcapa_support.procfs import thread_cpu_seconds

# support/ (fastcapa_support) is on PYTHONPATH: `make bench` puts it there.
ROOT = Path(__file__).resolve().parents[1]

CACHE = ROOT / ".work" / "bench"
RESULTS = ROOT / "bench" / "results"
PLOTS = ROOT / "bench" / "plots"
CEILING = ROOT / "bench" / "ceiling" / "target" / "release" / "fastcapa-ceiling"
READ_FLOOR = CEILING.with_name("fastcapa-read-floor")


def producer_settings() -> dict[str, str]:
    """The settings of the one producer of `fastcapa -r` with its defaults:
    PRODUCER_DEFAULTS and the queue limits its --buffer gives. The ceiling
    gets the same: with librdkafka's 100,000-message queue it would wait for
    room where fastcapa does not, and be beatable."""
    replay = CaptureSettings(interface=None, read="-", topic="t", kafka=dict(PRODUCER_DEFAULTS))
    return replay.producer_settings()


PYCAPA = ROOT / "bench" / "pycapa_baseline.py"
PARTITIONS = 8
SMALL = 1000  # frames of the start-up run
TICKS = os.sysconf("SC_CLK_TCK")


# --- processes ------------------------------------------------------------


class Tool:
    """A child process whose output lines are collected with the time they
    arrived, and whose CPU time is taken from the kernel when it is reaped."""

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.cmd = cmd
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.lines: dict[str, list[tuple[float, str]]] = {"out": [], "err": []}
        self.readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, "out"), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, "err"), daemon=True),
        ]
        for reader in self.readers:
            reader.start()
        self.cpu_user = self.cpu_sys = 0.0

    def _read(self, stream, name: str) -> None:
        for line in stream:
            self.lines[name].append((time.time(), line.rstrip("\n")))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_for(self, pattern: str, timeout: float = 60) -> float:
        """Wall-clock time at which a line matching `pattern` appeared."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for stream in ("out", "err"):
                for at, line in list(self.lines[stream]):
                    if re.search(pattern, line):
                        return at
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise RuntimeError(f"{self.cmd[0]}: no {pattern!r}: {self.text('err')[-2000:]}")

    def reap(self, timeout: float = 300) -> int:
        """Waits for the process; its rusage gives user and system CPU."""
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.proc.kill()
                pid, status, usage = os.wait4(self.proc.pid, 0)
                break
            time.sleep(0.01)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.cpu_user, self.cpu_sys = usage.ru_utime, usage.ru_stime
        for reader in self.readers:
            reader.join(5)
        return self.proc.returncode

    def text(self, stream: str) -> str:
        return "\n".join(line for _, line in self.lines[stream])

    @property
    def cpu(self) -> float:
        return self.cpu_user + self.cpu_sys


def last_json(run: Tool) -> dict:
    """The JSON report a baseline prints last on stdout."""
    try:
        return json.loads(run.text("out").splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise RuntimeError(
            f"{run.cmd[:3]} exited {run.proc.returncode} without a report: "
            f"{run.text('out')[-500:]} {run.text('err')[-1500:]}"
        ) from None


def proc_cpu(pid: int) -> float:
    """CPU seconds of a running process, all its threads, in nanoseconds from
    the scheduler (/proc/PID/task/*/schedstat), not in 10 ms clock ticks.
    Threads that ended are counted from /proc/PID/stat's ticks."""
    total = sum(seconds for _, seconds in thread_cpu_seconds(pid))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = (int(fields[11]) + int(fields[12])) / TICKS
    live_ticks = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            f = (task / "stat").read_text().rsplit(")", 1)[1].split()
            live_ticks += (int(f[11]) + int(f[12])) / TICKS
        except OSError:
            continue
    return total + max(0.0, ticks - live_ticks)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a running fastcapa per part of the pipeline, from its
    threads' names: receive workers, transmit workers, librdkafka's threads,
    and the rest (the Python control plane)."""
    parts: dict[str, float] = {}
    for name, seconds in thread_cpu_seconds(pid):
        if name.startswith("fcapa-rx"):
            part = "rx"
        elif name.startswith("fcapa-tx"):
            part = "tx"
        elif name.startswith("rdk:"):
            part = "librdkafka"
        else:
            part = "control"
        parts[part] = parts.get(part, 0.0) + seconds
    return parts


# --- Kafka ------------------------------------------------------------------


class Broker:
    def __init__(self, cluster: kafka.Cluster) -> None:
        self.cluster = cluster
        self.bootstrap = cluster.bootstrap
        self.admin = AdminClient({"bootstrap.servers": self.bootstrap})
        self.consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "fcbench",
                "enable.auto.commit": False,
            }
        )

    def topic(self, label: str) -> str:
        """A fresh topic of 8 partitions that keeps old capture times."""
        return self.create(f"bench-{label}-{uuid.uuid4().hex[:6]}", {"retention.ms": "-1"})

    def create(self, name: str, config: dict[str, str]) -> str:
        """The topic `name` of 8 partitions with `config`, once every
        partition has a leader."""
        futures = self.admin.create_topics([NewTopic(name, PARTITIONS, 1, config=config)])
        for future in futures.values():
            future.result(30)
        # Wait until every partition has a leader before any tool starts.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            meta = self.admin.list_topics(name, timeout=5).topics.get(name)
            if (
                meta
                and len(meta.partitions) == PARTITIONS
                and all(p.leader >= 0 for p in meta.partitions.values())
            ):
                break
            time.sleep(0.1)
        return name

    def count(self, topic: str) -> int:
        """Records in the topic (sum of the partitions' end offsets)."""
        total = 0
        for p in range(PARTITIONS):
            low, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total

    def delete(self, topic: str) -> None:
        for future in self.admin.delete_topics([topic]).values():
            with contextlib.suppress(Exception):  # cleanup only
                future.result(30)

    def close(self) -> None:
        self.consumer.close()

    @property
    def data_dir(self) -> Path:
        """The broker's log dir: a folder TOPIC-N per partition."""
        return self.cluster.node_dir(0) / "data"

    def cpu(self) -> float:
        pid = self.cluster.pid(0)
        return proc_cpu(pid) if pid else 0.0


def run_reported(args: list[str], banner: str) -> tuple[float, dict]:
    """`fastcapa ARGS` in a child process with a final `--stats-json` report:
    the seconds from its start banner (its first line on stderr, once Kafka
    is connected and the source open; it must hold `banner`) to its final
    report, and that report. Raises when the run fails."""
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "stats.jsonl"
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastcapa", *args,
             "--stats-json", str(stats), "--stats-interval", "600"],
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert proc.stderr is not None
        first = proc.stderr.readline()
        started = time.time()
        rest = proc.stderr.read()
        if proc.wait() != 0 or banner not in first:
            raise RuntimeError(f"fastcapa exited {proc.returncode}: {first}{rest[-2000:]}")
        final = json.loads(stats.read_text().splitlines()[-1])
    return final["time"] - started, final


# --- inputs -----------------------------------------------------------------


def capture(frames: int, size: int) -> Path:
    """A generated capture, kept in .work/bench between runs (IMIX takes a
    while to make in Python)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    name = f"{'imix' if size == 0 else f'{size}B'}-{frames}.pcap"
    path = CACHE / name
    if not path.exists():
        print(f"bench: generating {name}", file=sys.stderr, flush=True)
        tmp = path.with_suffix(".tmp")
        gen_capture.generate(str(tmp), frames, 1024, size, seed=1)
        tmp.rename(path)
    return path


def wire_bytes(path: Path) -> int:
    """Bytes of frame data in a capture (what the tools deliver as values)."""
    size = path.stat().st_size
    frames = sum(1 for _ in _records(path))
    return size - 24 - 16 * frames


def _records(path: Path):
    import struct

    with open(path, "rb") as stream:
        stream.read(24)
        while header := stream.read(16):
            caplen = struct.unpack("<IIII", header)[2]
            stream.seek(caplen, 1)
            yield caplen


# --- replay -----------------------------------------------------------------


def fastcapa_cmd(broker: Broker, topic: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "fastcapa", "-t", topic, "-k", broker.bootstrap, *args]


# `--before DIR`: another build of fastcapa (DIR/python/fastcapa with its own
# _fastcapa.abi3.so) run beside this one as "fastcapa-before", for an A/B of
# a data-plane change in the same run.
BEFORE: Path | None = None


def fastcapa_env(tool: str) -> dict[str, str] | None:
    if tool.startswith("fastcapa-before"):
        assert BEFORE is not None
        return {**os.environ, "PYTHONPATH": str(BEFORE / "python")}
    return None


# --- what a result was measured on -------------------------------------------


def metadata() -> dict:
    """The commit, producer settings, librdkafka and machine of a run: every
    result file records them."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        ).stdout.strip()

    from fastcapa import LIBRDKAFKA_VERSION

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    before = None
    if BEFORE is not None:
        before = git_describe(BEFORE)
    return {
        "commit": git("rev-parse", "--short", "HEAD")
        + (
            " (dirty)"
            if git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/plots")
            else ""
        ),
        "before": before,
        "producer_settings": producer_settings(),
        "librdkafka": LIBRDKAFKA_VERSION,
        "machine": {
            "host": platform.node(),
            "cores": os.cpu_count(),
            "cpu": model,
            "memory_gib": round(memory_kb / 2**20, 1),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
    }


def git_describe(build: Path) -> str:
    """What the `--before` build is: DIR/COMMIT says, when whoever made the
    copy wrote it there (a copied library's file times say nothing)."""
    note = build / "COMMIT"
    return f"{build}: {note.read_text().strip()}" if note.exists() else str(build)
