#!/usr/bin/env python3
"""The pycapa-style baseline: what Apache Metron's pycapa does, in a few lines.

libpcap (through pcapy-ng, the maintained successor of the pcapy binding
pycapa used) hands over one frame at a time; each becomes one confluent-kafka
`produce` with the same key (capture time in µs, 8 bytes big-endian), value,
record timestamp and producer settings as fastcapa, followed by `poll(0)` to
serve delivery reports, as pycapa's producer loop does.

    pycapa_baseline.py (-r FILE | -i IFACE) -k BOOTSTRAP -t TOPIC [-X key=value ...]

A live capture runs until SIGINT/SIGTERM. At the end it flushes and prints
one JSON line: frames taken, delivered, failed, kernel drops (live), and the
seconds from the first produce to the last delivery report.
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import struct
import time

import pcapy  # pcapy-ng
from confluent_kafka import Producer

from fastcapa.librdkafka import PRODUCER_DEFAULTS

KEY = struct.Struct(">Q")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-r", "--read")
    source.add_argument("-i", "--interface")
    parser.add_argument("-k", "--kafka-broker", required=True)
    parser.add_argument("-t", "--topic", required=True)
    parser.add_argument("-X", action="append", default=[])
    args = parser.parse_args()

    # fastcapa's producer defaults (python/fastcapa/config.py), so that only
    # the capture loop differs; then -X.
    conf = {"bootstrap.servers": args.kafka_broker, **PRODUCER_DEFAULTS}
    conf.update(dict(item.split("=", 1) for item in args.X))
    counts = {"taken": 0, "delivered": 0, "failed": 0}

    def on_delivery(error, message) -> None:
        counts["failed" if error else "delivered"] += 1

    producer = Producer(conf)
    producer.list_topics(args.topic, timeout=10)  # connected before the clock starts
    topic = args.topic

    def handle(header, frame: bytes) -> None:
        sec, usec = header.getts()
        ts_us = sec * 1_000_000 + usec
        counts["taken"] += 1
        while True:
            try:
                producer.produce(
                    topic,
                    key=KEY.pack(ts_us),
                    value=frame,
                    timestamp=ts_us // 1000,
                    on_delivery=on_delivery,
                )
                break
            except BufferError:  # the producer queue is full
                producer.poll(0.0002)
        producer.poll(0)

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    if args.read:
        reader = pcapy.open_offline(args.read)
        print("pycapa: ready", flush=True)
        started = time.monotonic()
        reader.loop(0, handle)
        kernel_drops = 0
    else:
        reader = pcapy.open_live(args.interface, 65535, True, 100)
        # libpcap's TPACKET_V3 reader may block for good on an idle link: read
        # without blocking, and wait for the socket in select() between reads,
        # so a stop signal is seen.
        reader.setnonblock(1)
        print("pycapa: ready", flush=True)
        started = time.monotonic()
        while not stopping:
            if reader.dispatch(-1, handle) == 0:
                select.select([reader.getfd()], [], [], 0.1)
        _, kernel_drops, _ = reader.stats()
    while len(producer) > 0:
        producer.poll(0.001)
    result = {
        **counts,
        "kernel_drops": kernel_drops,
        "seconds": round(time.monotonic() - started, 6),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
