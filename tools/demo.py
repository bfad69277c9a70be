#!/usr/bin/env python3
"""`make demo`: the main job end to end on a local default.

1. Starts (or reuses) a local Apache Kafka broker on 127.0.0.1:9092.
2. Live capture, the main job: a veth pair with a network namespace of its
   own, traffic sent from the far end, `fastcapa -i` with two queues on this
   end, its statistics table as it runs; then the topic dumped back with
   `fastcapa dump` and shown by tcpdump. Everything it made is removed at the
   end. Without root (no namespaces) it says why and skips this part.
3. Replay: a generated capture file through `fastcapa -r`, dumped back, shown.

The broker keeps running afterwards (`make demo-stop` stops it).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from fastcapa_support import capgen, child_env
from fastcapa_support.netns import VethPair, netns_available

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".work"
BROKER = "127.0.0.1:9092"
PACKETS = 5000
LIVE_RATE = 1000  # frames/s from the far end of the veth pair: about 5 s
FASTCAPA = str(Path(sys.executable).parent / "fastcapa")


def run(*command: str, **kwargs) -> subprocess.CompletedProcess:
    print("$", " ".join(command), flush=True)
    return subprocess.run(command, check=True, **kwargs)


def new_topic(name: str) -> str:
    # Warnings and errors only: an admin client says at info level that it
    # purged its background queue when it is destroyed.
    admin = AdminClient({"bootstrap.servers": BROKER, "log_level": 4})
    # The replayed capture's timestamps are in 2023: keep the topic from
    # deleting records by age.
    spec = NewTopic(name, 4, 1, config={"retention.ms": "-1"})
    admin.create_topics([spec])[name].result(30)
    return name


def dump_and_show(topic: str, expected: int) -> bool:
    """Dumps `topic` to a pcap file and shows tcpdump's reading of it."""
    back = WORK / f"{topic}.pcap"
    run(FASTCAPA, "dump", "-t", topic, "-k", BROKER, "-o", str(back))
    listing = subprocess.run(["tcpdump", "-nn", "-r", str(back)], capture_output=True, text=True)
    lines = listing.stdout.splitlines()
    print(f"$ tcpdump -nn -r {back} | head -10")
    print("\n".join(lines[:10]))
    print(f"... {len(lines)} packets read back (sent: {expected})\n", flush=True)
    return len(lines) == expected


def live(capture: Path, stamp: int) -> bool:
    """Captures what the far end of a veth pair sends; True if all came back."""
    print("== live capture: a veth pair, traffic sent from its namespace\n", flush=True)
    topic = new_topic(f"demo-{stamp}-live")
    with VethPair(queues=2) as veth:
        command = [FASTCAPA, "-i", veth.probe_side, "-q", "2", "-t", topic, "-k", BROKER]
        command += ["--stats-interval", "1"]
        print("$", " ".join(command), "&", flush=True)
        probe = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        assert probe.stderr is not None
        print(probe.stderr.readline(), end="", flush=True)  # the banner
        print(f"(sending {PACKETS} frames at {LIVE_RATE}/s from namespace {veth.netns})\n")
        sent = veth.send(str(capture), rate=LIVE_RATE)["sent"]
        time.sleep(1.5)  # the last block and a statistics report
        probe.send_signal(signal.SIGINT)
        _, statistics = probe.communicate(timeout=60)
        print(statistics, flush=True)
    print(f"(veth pair and namespace {veth.netns} removed)\n")
    return probe.returncode == 0 and dump_and_show(topic, sent)


def replay(capture: Path, stamp: int) -> bool:
    print("== replay: the same frames from a capture file\n", flush=True)
    topic = new_topic(f"demo-{stamp}-replay")
    run(FASTCAPA, "-r", str(capture), "-t", topic, "-k", BROKER, "-q", "2")
    print()
    return dump_and_show(topic, PACKETS)


def main() -> int:
    run(
        sys.executable,
        "-m",
        "fastcapa_support.kafka_cluster",
        "start",
        "--port",
        "9092",
        "--dir",
        str(WORK / "kafka"),
        env=child_env(),
    )
    capture = WORK / "demo.pcap"
    WORK.mkdir(exist_ok=True)
    capgen.generate(str(capture), packets=PACKETS, flows=200, size=None, seed=1)
    print(f"(generated {PACKETS} frames of mixed traffic in {capture})\n")
    stamp = int(time.time())
    ok = True
    if netns_available():
        ok = live(capture, stamp)
    else:
        print("== live capture skipped: it needs root (a veth pair in a network namespace)\n")
    ok = replay(capture, stamp) and ok
    print(f"(the broker keeps running at {BROKER}; 'make demo-stop' stops it)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
