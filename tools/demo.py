#!/usr/bin/env python3
"""`make demo`: the main job end to end on a local default.

Starts (or reuses) a local Apache Kafka broker on 127.0.0.1:9092 from
fastcapa_support.kafka_cluster, generates a capture of a few thousand mixed packets, replays it
with `fastcapa -r` into a fresh topic of 4 partitions (statistics on stderr),
dumps the topic back with `fastcapa dump`, and shows `tcpdump -r` of the
first lines. The broker keeps running afterwards (`make demo-stop`).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".work"
BROKER = "127.0.0.1:9092"
PACKETS = 5000


def run(*command: str, **kwargs) -> subprocess.CompletedProcess:
    print("$", " ".join(command), flush=True)
    return subprocess.run(command, check=True, **kwargs)


def main() -> int:
    from confluent_kafka.admin import AdminClient, NewTopic

    bin_dir = Path(sys.executable).parent
    run(
        sys.executable,
        "-m",
        "fastcapa_support.kafka_cluster",
        "start",
        "--port",
        "9092",
        "--dir",
        str(WORK / "kafka"),
    )
    capture = WORK / "demo.pcap"
    run(
        sys.executable,
        "-m",
        "fastcapa_support.capgen",
        "--packets",
        str(PACKETS),
        "--output",
        str(capture),
    )
    topic = f"demo-{int(time.time())}"
    admin = AdminClient({"bootstrap.servers": BROKER})
    # The capture's timestamps are in 2023 and become the records' Kafka
    # timestamps: keep the topic from deleting them by age.
    future = admin.create_topics([NewTopic(topic, 4, 1, config={"retention.ms": "-1"})])[topic]
    future.result(30)
    run(str(bin_dir / "fastcapa"), "-r", str(capture), "-t", topic, "-k", BROKER, "-q", "2")
    back = WORK / "demo-back.pcap"
    run(str(bin_dir / "fastcapa"), "dump", "-t", topic, "-k", BROKER, "-o", str(back))
    listing = subprocess.run(["tcpdump", "-nn", "-r", str(back)], capture_output=True, text=True)
    lines = listing.stdout.splitlines()
    print(f"$ tcpdump -nn -r {back} | head -15")
    print("\n".join(lines[:15]))
    print(f"... {len(lines)} packets read back (the capture had {PACKETS})")
    print(f"(the broker keeps running at {BROKER}; 'make demo-stop' stops it)")
    return 0 if len(lines) == PACKETS else 1


if __name__ == "__main__":
    raise SystemExit(main())
