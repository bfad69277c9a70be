#!/usr/bin/env python3
"""fastcapa's benchmark suite: fastcapa beside its baselines, side by side in
one run, against one local broker, with the same producer settings.

Scenarios (issue 6):
  replay   a generated capture (64-byte frames, and IMIX) replayed into a topic
           of 8 partitions by fastcapa, by the librdkafka ceiling (bench/ceiling,
           Rust, the same rdkafka crate, producing the same keys and values from
           memory) and by a pycapa-style Python program (bench/pycapa_baseline.py)
  live     tcpreplay --topspeed from a network namespace into a veth pair;
           captured by fastcapa (1 and 2 queues), `tcpdump -w /dev/null` (the
           capture floor) and the pycapa-style baseline on libpcap
  scaling  replay with receive queues x transmit workers from 1 to the cores
  wayback  `fastcapa dump` of the topic a replay wrote: frames/s beside the
           replay's, a one-second window, peak RSS (bench/wayback.py)

Every figure comes with the run's other figures: ratios are what counts, the
absolute numbers depend on what else the two cores were doing. CPU is user +
system time of the tool's process from the kernel (os.wait4 for a replay,
/proc/PID/stat over the capture window for a live run). For a replay, each
tool is also run on a 1,000-frame file and that start-up cost is subtracted
("net"): fastcapa's Python start, the ceiling's loading of the file.

Writes bench/results/<UTC time>.json and .md, and bench/plots/*.png.

    bench/run.py [--frames N] [--live-frames N] [--repeat R] [--only replay,live,scaling,wayback]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from fastcapa.config import PRODUCER_DEFAULTS
from fastcapa_support import capgen as gen_capture
from fastcapa_support import kafka_cluster as kafka
from fastcapa_support.netns import VethPair
from fastcapa_support.procfs import thread_cpu_seconds

# support/ (fastcapa_support) is on PYTHONPATH: `make bench` puts it there.
ROOT = Path(__file__).resolve().parents[1]

CACHE = ROOT / ".work" / "bench"
RESULTS = ROOT / "bench" / "results"
PLOTS = ROOT / "bench" / "plots"
CEILING = ROOT / "bench" / "ceiling" / "target" / "release" / "fastcapa-ceiling"
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
        name = f"bench-{label}-{uuid.uuid4().hex[:6]}"
        futures = self.admin.create_topics(
            [NewTopic(name, PARTITIONS, 1, config={"retention.ms": "-1"})]
        )
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

    def cpu(self) -> float:
        pid = self.cluster.pid(0)
        return proc_cpu(pid) if pid else 0.0


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


def replay_once(broker: Broker, tool: str, path: Path, frames: int, extra: list[str]) -> dict:
    topic = broker.topic(tool.split()[0])
    broker_cpu = broker.cpu()
    if tool.startswith("fastcapa"):
        stats = CACHE / f"stats-{uuid.uuid4().hex[:6]}.jsonl"
        run = Tool(
            fastcapa_cmd(
                broker,
                topic,
                "-r",
                str(path),
                "--stats-json",
                str(stats),
                "--stats-interval",
                "600",
                *extra,
            ),
            env=fastcapa_env(tool),
        )
        started = run.wait_for(r"^fastcapa: replaying")
        rc = run.reap()
        if rc != 0 or not stats.exists() or not stats.read_text().strip():
            raise RuntimeError(f"fastcapa exited {rc}: {run.text('err')[-2000:]}")
        final = json.loads(stats.read_text().splitlines()[-1])
        stats.unlink()
        seconds = final["time"] - started
        delivered = final["kaf"]["out"]
        failed = final["kaf"]["drops"] + final["tx"]["drops"] + final["rx"]["drops"]
    elif tool == "ceiling":
        settings = [f"{key}={value}" for key, value in PRODUCER_DEFAULTS.items()]
        run = Tool([str(CEILING), str(path), broker.bootstrap, topic, *settings])
        rc = run.reap()
        report = last_json(run)
        seconds, delivered, failed = report["seconds"], report["delivered"], report["failed"]
    else:  # pycapa
        run = Tool(
            [sys.executable, str(PYCAPA), "-r", str(path), "-k", broker.bootstrap, "-t", topic]
        )
        rc = run.reap()
        report = last_json(run)
        seconds, delivered, failed = report["seconds"], report["delivered"], report["failed"]
    broker_cpu = broker.cpu() - broker_cpu
    if rc != 0:
        raise RuntimeError(f"{tool} exited {rc}: {run.text('err')[-2000:]}")
    in_topic = broker.count(topic)
    broker.delete(topic)
    return {
        "frames": frames,
        "delivered": delivered,
        "failed": failed,
        "in_topic": in_topic,
        "seconds": round(seconds, 4),
        "cpu_user_s": round(run.cpu_user, 3),
        "cpu_sys_s": round(run.cpu_sys, 3),
        "broker_cpu_s": round(broker_cpu, 3),
    }


def replay(
    broker: Broker,
    frames: int,
    repeat: int,
    configs: dict[str, list[str]],
    sizes: tuple[int, ...] = (64, 0),
) -> dict:
    """Each tool (or fastcapa configuration) on the full capture and on a
    1,000-frame one, interleaved `repeat` times; medians."""
    results = {}
    for size in sizes:
        label = "64B" if size else "IMIX"
        full, small = capture(frames, size), capture(SMALL, size)
        payload = wire_bytes(full)
        runs: dict[str, list[dict]] = {tool: [] for tool in configs}
        startup: dict[str, list[float]] = {tool: [] for tool in configs}
        for r in range(repeat):
            # Each repeat in another order: no tool always runs first.
            order = list(configs.items())
            order = order[r % len(order) :] + order[: r % len(order)]
            for tool, extra in order:
                print(f"bench: replay {label} {tool}", file=sys.stderr, flush=True)
                runs[tool].append(replay_once(broker, tool, full, frames, extra))
                small_run = replay_once(broker, tool, small, SMALL, extra)
                startup[tool].append(small_run["cpu_user_s"] + small_run["cpu_sys_s"])
        results[label] = {
            tool: summarize_replay(runs[tool], startup[tool], frames, payload) for tool in configs
        }
    return results


def summarize_replay(runs: list[dict], startup: list[float], frames: int, payload: int) -> dict:
    seconds = statistics.median(r["seconds"] for r in runs)
    cpu = statistics.median(r["cpu_user_s"] + r["cpu_sys_s"] for r in runs)
    start_cpu = statistics.median(startup)
    return {
        "msgs_per_s": round(frames / seconds),
        "mb_per_s": round(payload / seconds / 1e6, 2),
        "cpu_s_per_mframe": round(cpu / frames * 1e6, 3),
        "net_cpu_s_per_mframe": round((cpu - start_cpu) / (frames - SMALL) * 1e6, 3),
        "startup_cpu_s": round(start_cpu, 3),
        "broker_cpu_s_per_mframe": round(
            statistics.median(r["broker_cpu_s"] for r in runs) / frames * 1e6, 3
        ),
        "all_delivered": all(r["delivered"] == frames == r["in_topic"] for r in runs),
        "runs": runs,
    }


# --- live -------------------------------------------------------------------


def live_once(broker: Broker, tool: str, path: Path, frames: int) -> dict:
    topic = broker.topic(tool.split()[0])
    queues = 2
    stats = CACHE / f"stats-{uuid.uuid4().hex[:6]}.jsonl"
    with VethPair(queues=queues) as veth:
        if tool.startswith("fastcapa"):
            # "fastcapa q2": 2 receive queues, a transmit worker per ring
            # (the default); "fastcapa q2 w1": the same with one transmit worker.
            config = dict((word[0], word[1:]) for word in tool.split()[1:])
            workers = ["--tx-workers", config["w"]] if "w" in config else []
            run = Tool(
                fastcapa_cmd(
                    broker,
                    topic,
                    "-i",
                    veth.probe_side,
                    "-q",
                    config["q"],
                    *workers,
                    "-d",
                    "65536",
                    "--stats-json",
                    str(stats),
                    "--stats-interval",
                    "600",
                ),
                env=fastcapa_env(tool),
            )
            run.wait_for(r"^fastcapa: capturing on")
        elif tool == "tcpdump":
            # The same 128 MiB of kernel buffer as fastcapa's -d 65536.
            run = Tool(["tcpdump", "-i", veth.probe_side, "-n", "-B", "131072", "-w", "/dev/null"])
            run.wait_for(r"listening on")
        else:
            run = Tool(
                [
                    sys.executable,
                    str(PYCAPA),
                    "-i",
                    veth.probe_side,
                    "-k",
                    broker.bootstrap,
                    "-t",
                    topic,
                ]
            )
            run.wait_for(r"^pycapa: ready")
        time.sleep(0.3)
        cpu_before = proc_cpu(run.pid)
        threads_before = thread_cpu(run.pid) if tool.startswith("fastcapa") else {}
        broker_before = broker.cpu()
        started = time.monotonic()
        replay = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                veth.netns,
                "tcpreplay",
                "-i",
                veth.sender_side,
                "--topspeed",
                str(path),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        send_s = time.monotonic() - started
        rate = re.search(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps", replay.stdout)
        # Wait until the topic stops growing (or holds every frame).
        last, steady = -1, time.monotonic()
        deadline = time.monotonic() + 180
        while tool != "tcpdump" and time.monotonic() < deadline:
            count = broker.count(topic)
            if count >= frames:
                break
            if count != last:
                last, steady = count, time.monotonic()
            elif time.monotonic() - steady > 3:
                break
            time.sleep(0.2)
        if tool == "tcpdump":
            time.sleep(1.5)  # libpcap's block timeout in tcpdump is 1 s
        cpu = proc_cpu(run.pid) - cpu_before
        threads = {
            part: round((seconds - threads_before.get(part, 0.0)) / frames * 1e6, 3)
            for part, seconds in (thread_cpu(run.pid) if threads_before else {}).items()
        }
        broker_cpu = broker.cpu() - broker_before
        run.proc.send_signal(signal.SIGINT)
        rc = run.reap(120)
    if tool.startswith("fastcapa"):
        final = json.loads(stats.read_text().splitlines()[-1])
        stats.unlink()
        taken, delivered = final["nic"]["taken_in"], final["kaf"]["out"]
        drops = {
            "nic": final["nic"]["drops"],
            "rx": final["rx"]["drops"],
            "tx": final["tx"]["drops"],
            "kaf": final["kaf"]["drops"],
        }
    elif tool == "tcpdump":
        err = run.text("err")
        # What the kernel put in tcpdump's ring (frames of a block not yet
        # handed over at the stop are in it, not in "captured").
        received = int(re.search(r"(\d+) packets received by filter", err).group(1))
        kernel_drops = int(re.search(r"(\d+) packets dropped by kernel", err).group(1))
        taken = received - kernel_drops
        delivered = None
        drops = {"kernel": kernel_drops}
    else:
        report = last_json(run)
        taken, delivered = report["taken"], report["delivered"]
        drops = {"kernel": report["kernel_drops"], "kaf": report["failed"]}
    in_topic = broker.count(topic) if tool != "tcpdump" else None
    broker.delete(topic)
    if rc != 0:
        raise RuntimeError(f"{tool} exited {rc}: {run.text('err')[-2000:]}")
    return {
        "frames_sent": frames,
        "sender_pps": round(float(rate.group(1)) if rate else frames / send_s),
        "taken": taken,
        "delivered": delivered,
        "in_topic": in_topic,
        "drops": drops,
        "lost": frames - (delivered if delivered is not None else taken),
        "cpu_s": round(cpu, 3),
        "cpu_us_per_packet": round(cpu / frames * 1e6, 3),
        # fastcapa's CPU per packet by part of the pipeline (µs).
        "cpu_us_by_part": threads or None,
        "broker_cpu_s": round(broker_cpu, 3),
    }


# The fastcapa configurations of the live scenario: 1 and 2 receive queues
# with a transmit worker per ring (the default), and 2 queues sharing one
# transmit worker (one producer, so batches twice the size).
FASTCAPA_LIVE = ["fastcapa q1", "fastcapa q2", "fastcapa q2 w1"]


def live(broker: Broker, frames: int, repeat: int) -> dict:
    results = {}
    LIVE_TOOLS = ["tcpdump", *FASTCAPA_LIVE, "pycapa"]
    if BEFORE:
        LIVE_TOOLS[-1:-1] = [t.replace("fastcapa", "fastcapa-before") for t in FASTCAPA_LIVE]
    for size in (64, 0):
        label = "64B" if size else "IMIX"
        path = capture(frames, size)
        runs: dict[str, list[dict]] = {tool: [] for tool in LIVE_TOOLS}
        for r in range(repeat):
            order = LIVE_TOOLS[r % len(LIVE_TOOLS) :] + LIVE_TOOLS[: r % len(LIVE_TOOLS)]
            for tool in order:
                print(f"bench: live {label} {tool}", file=sys.stderr, flush=True)
                runs[tool].append(live_once(broker, tool, path, frames))
        results[label] = {tool: summarize_live(rs) for tool, rs in runs.items()}
    return results


def summarize_live(runs: list[dict]) -> dict:
    """The run of median CPU per packet, with all the runs beside it."""
    median = sorted(runs, key=lambda r: r["cpu_us_per_packet"])[len(runs) // 2]
    return {**median, "runs": runs}


def pool(paths: list[Path]) -> dict:
    """One result from several runs' files: every repeat of every file,
    summarized again (medians over all of them). One run of `--repeat 3`
    can still swing a ratio by a third on two shared cores."""
    results = [json.loads(path.read_text()) for path in paths]
    first = results[0]
    pooled: dict = {
        "started": " + ".join(r["started"] for r in results),
        "machine": first["machine"],
        "frames": first["frames"],
        "live_frames": first["live_frames"],
        "repeat": sum(r["repeat"] for r in results),
        "pooled": [path.name for path in paths],
    }
    for section in ("replay", "live", "scaling"):
        if not all(section in r for r in results):
            continue
        pooled[section] = {}
        for label, tools in first[section].items():
            pooled[section][label] = {}
            for tool in tools:
                entries = [r[section][label][tool] for r in results]
                runs = [run for entry in entries for run in entry["runs"]]
                if section == "live":
                    pooled[section][label][tool] = summarize_live(runs)
                    continue
                one = entries[0]  # the payload in bytes, from its rate and MB/s
                payload = one["mb_per_s"] * 1e6 * first["frames"] / one["msgs_per_s"]
                startup = [entry["startup_cpu_s"] for entry in entries]
                pooled[section][label][tool] = summarize_replay(
                    runs, startup, first["frames"], round(payload)
                )
    pooled["ratios"] = ratios(pooled)
    return pooled


# --- report -----------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def ratios(result: dict) -> dict:
    out: dict = {}
    for label, tools in result.get("replay", {}).items():
        ceiling, fast, py = tools["ceiling"], tools["fastcapa"], tools["pycapa"]
        out[f"replay {label}"] = {
            "msgs_vs_ceiling": ratio(fast["msgs_per_s"], ceiling["msgs_per_s"]),
            "cpu_vs_ceiling": ratio(fast["cpu_s_per_mframe"], ceiling["cpu_s_per_mframe"]),
            "net_cpu_vs_ceiling": ratio(
                fast["net_cpu_s_per_mframe"], ceiling["net_cpu_s_per_mframe"]
            ),
            "cpu_vs_pycapa": ratio(fast["cpu_s_per_mframe"], py["cpu_s_per_mframe"]),
            "msgs_vs_pycapa": ratio(fast["msgs_per_s"], py["msgs_per_s"]),
        }
        if "fastcapa-before" in tools:
            before = tools["fastcapa-before"]
            out[f"replay {label}"]["msgs_vs_before"] = ratio(
                fast["msgs_per_s"], before["msgs_per_s"]
            )
            out[f"replay {label}"]["cpu_vs_before"] = ratio(
                fast["net_cpu_s_per_mframe"], before["net_cpu_s_per_mframe"]
            )
    if "wayback" in result:
        back = result["wayback"]
        out["wayback"] = {
            "dump_vs_replay": back["dump_vs_replay"],
            "window_vs_dump": back["window_vs_dump"],
            "dump_peak_rss_mb": back["dump_peak_rss_mb"],
        }
    replay_ceiling = result.get("replay", {})
    for label, tools in result.get("live", {}).items():
        tcpdump = tools["tcpdump"]["cpu_us_per_packet"]
        ceiling = replay_ceiling.get(label, {}).get("ceiling", {}).get("net_cpu_s_per_mframe")
        for tool in FASTCAPA_LIVE:
            entry = {"cpu_vs_tcpdump": ratio(tools[tool]["cpu_us_per_packet"], tcpdump)}
            if ceiling:
                budget = ceiling + 1.5 * tcpdump
                entry["cpu_budget_us"] = round(budget, 3)
                entry["cpu_vs_budget"] = ratio(tools[tool]["cpu_us_per_packet"], budget)
            entry["cpu_vs_pycapa"] = ratio(
                tools[tool]["cpu_us_per_packet"], tools["pycapa"]["cpu_us_per_packet"]
            )
            entry["lost"] = tools[tool]["lost"]
            before = tools.get(tool.replace("fastcapa", "fastcapa-before"))
            if before:
                entry["cpu_vs_before"] = ratio(
                    tools[tool]["cpu_us_per_packet"], before["cpu_us_per_packet"]
                )
                entry["lost_before"] = before["lost"]
            out[f"live {label} {tool}"] = entry
    return out


def markdown(result: dict) -> str:
    lines = [f"Run {result['started']} ({result['machine']})", ""]
    if "replay" in result:
        lines += [
            f"Replay of {result['frames']:,} frames into 8 partitions"
            f" (median of {result['repeat']}):",
            "",
            "| input | tool | msgs/s | MB/s | CPU s / M frames | net of start-up"
            " | broker CPU s / M | all delivered |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for label, tools in result["replay"].items():
            for tool, r in tools.items():
                lines.append(
                    f"| {label} | {tool} | {r['msgs_per_s']:,} | {r['mb_per_s']} | "
                    f"{r['cpu_s_per_mframe']} | {r['net_cpu_s_per_mframe']} | "
                    f"{r['broker_cpu_s_per_mframe']} | {'yes' if r['all_delivered'] else 'NO'} |"
                )
        lines.append("")
    if "live" in result:
        lines += [
            f"Live capture, {result['live_frames']:,} frames"
            " by tcpreplay --topspeed into a 2-queue veth:",
            "",
            "| input | tool | sender pps | taken | delivered | lost | CPU µs / packet"
            " | of which rx / tx / librdkafka / control |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for label, tools in result["live"].items():
            for tool, r in tools.items():
                delivered = "—" if r["delivered"] is None else f"{r['delivered']:,}"
                parts = r.get("cpu_us_by_part") or {}
                by_part = " / ".join(
                    str(parts.get(p, 0)) for p in ("rx", "tx", "librdkafka", "control")
                )
                lines.append(
                    f"| {label} | {tool} | {r['sender_pps']:,} | {r['taken']:,} | {delivered} | "
                    f"{r['lost']:,} | {r['cpu_us_per_packet']} | {by_part if parts else '—'} |"
                )
        lines.append("")
    if "scaling" in result:
        lines += [
            "Scaling (replay, 64 B):",
            "",
            "| queues x tx workers | msgs/s | CPU s / M frames | net | msgs/s vs ceiling |",
            "|---|---|---|---|---|",
        ]
        scaling = result["scaling"]["64B"]
        for config, r in scaling.items():
            versus = ratio(r["msgs_per_s"], scaling.get("ceiling", {}).get("msgs_per_s"))
            lines.append(
                f"| {config} | {r['msgs_per_s']:,} | {r['cpu_s_per_mframe']} | "
                f"{r['net_cpu_s_per_mframe']} | {versus} |"
            )
        lines.append("")
    if "wayback" in result:
        import wayback

        lines += wayback.markdown(result["wayback"])
    lines += ["Ratios:", "", "```", json.dumps(result["ratios"], indent=1), "```", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    # A million frames is about 5 s of the sender's top rate: long enough
    # that a capture's fixed costs (its first batches, the last partly
    # filled block) do not weigh on the per-packet figure.
    parser.add_argument("--live-frames", type=int, default=1_000_000)
    # Medians of three interleaved runs: on two shared cores one run of a
    # tool can be 30 % off the next.
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="replay,live,scaling,wayback")
    parser.add_argument(
        "--broker-dir",
        help="use the broker fastcapa_support.kafka_cluster runs there (default: start one)",
    )
    parser.add_argument("--before", type=Path, help="A/B: also run the fastcapa build in DIR")
    parser.add_argument(
        "--pool",
        type=Path,
        nargs="+",
        metavar="RESULT",
        help="run nothing: medians over every repeat of these results/*.json, and their plots",
    )
    args = parser.parse_args()
    if args.pool:
        pooled = pool(args.pool)
        print(markdown(pooled))
        try:
            import plot

            plot.plot(pooled, PLOTS)
        except ImportError as e:
            print(f"bench: no plots ({e})", file=sys.stderr)
        return 0
    only = set(args.only.split(","))
    global BEFORE
    BEFORE = args.before
    if not CEILING.exists():
        print(f"bench: {CEILING} missing: run `make bench`", file=sys.stderr)
        return 2
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result: dict = {
        "started": started,
        "machine": f"{platform.node()}, {os.cpu_count()} cores, {platform.release()}",
        "load_before": os.getloadavg(),
        "frames": args.frames,
        "live_frames": args.live_frames,
        "repeat": args.repeat,
    }
    for size in (64, 0):  # make the inputs before the broker starts
        capture(args.frames, size)
        capture(SMALL, size)
        if "live" in only:
            capture(args.live_frames, size)
    # The broker with its whole JIT (tools/kafka's default stops at C1 for
    # a fast start in tests, which costs throughput).
    if args.broker_dir:
        cluster_cm: contextlib.AbstractContextManager = contextlib.nullcontext(
            kafka.Cluster.attach(args.broker_dir)
        )
    else:
        cluster_cm = kafka.Cluster(nodes=1, jvm_opts=["-XX:+UseSerialGC"])
    with cluster_cm as cluster:
        broker = Broker(cluster)
        # Warm the broker's JIT first: whatever runs first on a cold broker
        # pays for it.
        print("bench: warming the broker up", file=sys.stderr, flush=True)
        for tool in ("ceiling", "fastcapa"):
            replay_once(broker, tool, capture(args.frames, 64), args.frames, [])
        if "replay" in only:
            tools: dict[str, list[str]] = {"ceiling": [], "fastcapa": [], "pycapa": []}
            if BEFORE:
                tools["fastcapa-before"] = []
            result["replay"] = replay(broker, args.frames, args.repeat, tools)
        if "live" in only:
            result["live"] = live(broker, args.live_frames, args.repeat)
        if "scaling" in only:
            configs = {
                f"{q}x{w}": ["-q", str(q), "--tx-workers", str(w)]
                for q in range(1, (os.cpu_count() or 1) + 1)
                for w in range(1, (os.cpu_count() or 1) + 1)
            }
            # fastcapa-prefixed names select the fastcapa branch of replay_once.
            scaled = replay(
                broker,
                args.frames,
                args.repeat,
                # The ceiling beside them, for a reference of the same minutes.
                {"ceiling": [], **{f"fastcapa {k}": v for k, v in configs.items()}},
                sizes=(64,),
            )
            result["scaling"] = {
                label: {k.split()[-1]: v for k, v in tools.items()}
                for label, tools in scaled.items()
            }
        if "wayback" in only:
            import wayback

            result["wayback"] = wayback.scenario(
                broker, capture(args.frames, 64), CACHE, args.frames, args.repeat
            )
        broker.close()
    result["load_after"] = os.getloadavg()
    result["ratios"] = ratios(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = started.replace(":", "")
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    summary = markdown(result)
    (RESULTS / f"{stem}.md").write_text(summary)
    print(summary)
    try:
        import plot

        plot.plot(result, PLOTS)
    except ImportError as e:
        print(f"bench: no plots ({e})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
