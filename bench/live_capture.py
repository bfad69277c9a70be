#!/usr/bin/env python3
"""Live-capture measurement: tcpreplay pushes a generated capture as fast as it
can into a veth pair from a network namespace; fastcapa captures the other end
into a local Kafka broker. Reports the rate the sender reached, what fastcapa
delivered and dropped (per stage), and its CPU time per packet (user + system,
from the OS). Run on purpose, never as a pass/fail test; `make bench` runs the
whole suite (bench/run.py), of which this is the single-tool live case.

    bench/live_capture.py [--packets N] [--size BYTES] [--queues Q] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tools" / "kafka"))

import gen_capture  # noqa: E402
import kafka  # noqa: E402
from netns import VethPair  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (librdkafka's threads summed by kind)."""
    ticks = os.sysconf("SC_CLK_TCK")
    by_name: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = re.sub(r"(rdk:broker).*", r"\1", name)
        by_name[name] = by_name.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return by_name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=64, help="frame bytes (0: IMIX)")
    parser.add_argument("--queues", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="tcpreplay --loop")
    parser.add_argument("--tx-ring", type=int, default=2048, help="fastcapa -x")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fcbench-"))
    capture = tmp / "frames.pcap"
    gen_capture.generate(str(capture), args.packets, 256, args.size, seed=1)
    total = args.packets * args.repeat
    # The broker with its JIT whole (tools/kafka's default stops at C1 for a
    # fast start in tests, which costs throughput).
    broker = kafka.Cluster(nodes=1, jvm_opts=["-XX:+UseSerialGC"])
    with broker as cluster, VethPair(queues=args.queues) as veth:
        stats = tmp / "stats.jsonl"
        probe = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fastcapa",
                "-i",
                veth.probe_side,
                "-t",
                "bench",
                "-k",
                cluster.bootstrap,
                "-q",
                str(args.queues),
                "-d",
                "65536",
                "--stats-json",
                str(stats),
                "--stats-interval",
                "1",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        probe.stderr.readline()
        cpu_before = cpu_seconds(probe.pid)
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
                f"--loop={args.repeat}",
                str(capture),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        sent_in = time.monotonic() - started
        rate = re.search(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps", replay.stdout)
        # Let the probe take and deliver what it has, then stop it.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            lines = stats.read_text().splitlines() if stats.exists() else []
            if lines:
                last = json.loads(lines[-1])
                if last["nic"]["taken_in"] >= total and last["kaf"]["queued"] == 0:
                    break
            time.sleep(0.5)
        cpu = cpu_seconds(probe.pid) - cpu_before
        threads = thread_cpu(probe.pid)
        probe.send_signal(signal.SIGTERM)
        probe.communicate(timeout=60)
        final = json.loads(stats.read_text().splitlines()[-1])
    result = {
        "frames_sent": total,
        "frame_bytes": args.size,
        "queues": args.queues,
        "tx_ring": args.tx_ring,
        "sender_pps": float(rate.group(1)) if rate else total / sent_in,
        "nic_in": final["nic"]["taken_in"],
        "nic_drops": final["nic"]["drops"],
        "rx_drops": final["rx"]["drops"],
        "tx_drops": final["tx"]["drops"],
        "kaf_drops": final["kaf"]["drops"],
        "delivered": final["kaf"]["out"],
        "probe_cpu_s": round(cpu, 3),
        "probe_cpu_us_per_packet": round(cpu / max(1, final["nic"]["taken_in"]) * 1e6, 3),
        "cpu_s_by_thread": {k: round(v, 3) for k, v in sorted(threads.items())},
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
