#!/usr/bin/env python3
"""fastcapa's benchmark suite: fastcapa beside its baselines, side by side in
one run, against one local broker, with the same producer settings.

The suite is a folder of modules: harness.py (processes, CPU time, broker,
inputs, what a run was measured on), scenarios.py (what each tool is asked to
do; the registry a new scenario joins), report.py (ratios, pooling, tables),
and this entry point.

Scenarios:
  replay   a generated capture (64-byte frames, and IMIX) replayed into a topic
           of 8 partitions by fastcapa, by the librdkafka ceiling (bench/ceiling:
           librdkafka's cheapest path, rd_kafka_produce_batch on a topic handle,
           the same keys and values from memory, docs/benchmarks.md) and by a
           pycapa-style Python program (bench/pycapa_baseline.py)
  live     tcpreplay --topspeed from a network namespace into a veth pair;
           captured by fastcapa (1 and 2 queues), `tcpdump -w /dev/null` (the
           capture floor) and the pycapa-style baseline on libpcap
  scaling  replay with receive queues x transmit workers from 1 to the cores
  wayback  `fastcapa dump` of the topic a replay wrote: frames/s beside the
           replay's, a one-second window, peak RSS (bench/wayback.py)
  dpdk     DPDK's net_null port, when bench/dpdk_null.py is there

Every figure comes with the run's other figures: ratios are what counts, the
absolute numbers depend on what else the two cores were doing. CPU is user +
system time of the tool's process from the kernel (os.wait4 for a replay,
/proc/PID/stat over the capture window for a live run). For a replay, each
tool is also run on a 1,000-frame file and that start-up cost is subtracted
("net"): fastcapa's Python start, the ceiling's loading of the file.

Writes bench/results/<UTC time>.json and .md (each with the commit, the
producer settings, librdkafka's version and the machine), and
bench/plots/*.png. `--pool` writes bench/results/pooled-<UTC time>.json and .md.

    bench/run.py [--frames N] [--live-frames N] [--repeat R] [--only replay,live,...]
                 [--before DIR] [--variant NAME=ARGS ...]
    bench/run.py --pool RESULT.json ...
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import harness
import report
import scenarios
from fastcapa_support import kafka_cluster as kafka
from harness import CEILING, PLOTS, RESULTS, SMALL, Broker, capture


def write(stem: str, result: dict) -> str:
    """Saves a result as bench/results/STEM.json and .md; returns the Markdown."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    summary = report.markdown(result)
    (RESULTS / f"{stem}.md").write_text(summary)
    try:
        import plot

        plot.plot(result, PLOTS)
    except ImportError as e:
        print(f"bench: no plots ({e})", file=sys.stderr)
    return summary


def variant(text: str) -> tuple[str, list[str]]:
    name, sep, args = text.partition("=")
    if not sep or not name or " " in name:
        raise argparse.ArgumentTypeError(f"{text!r}: want NAME=ARGS, e.g. key=--partition-by key")
    return name, args.split()


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
    parser.add_argument("--only", default="replay,live,scaling,wayback,dpdk")
    parser.add_argument(
        "--broker-dir",
        help="use the broker fastcapa_support.kafka_cluster runs there (default: start one)",
    )
    parser.add_argument("--before", type=Path, help="A/B: also run the fastcapa build in DIR")
    parser.add_argument(
        "--variant",
        type=variant,
        action="append",
        default=[],
        metavar="NAME=ARGS",
        help="replay: also run this build as 'fastcapa NAME' with ARGS (a lever off, say)",
    )
    parser.add_argument(
        "--pool",
        type=Path,
        nargs="+",
        metavar="RESULT",
        help="run nothing: medians over every repeat of these results/*.json, saved as "
        "results/pooled-<time>.json and .md",
    )
    args = parser.parse_args()
    args.variants = dict(args.variant)
    if args.pool:
        pooled = report.pool(args.pool)
        stem = "pooled-" + time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime())
        print(write(stem, pooled))
        return 0
    unknown = set(args.only.split(",")) - set(scenarios.SCENARIOS)
    if unknown:
        print(f"bench: no scenario {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    only = [name for name in args.only.split(",") if scenarios.available(name)]
    for name in sorted(set(args.only.split(",")) - set(only)):
        print(f"bench: skipping {name}: its module is not there", file=sys.stderr)
    harness.BEFORE = args.before
    if not CEILING.exists():
        print(f"bench: {CEILING} missing: run `make bench`", file=sys.stderr)
        return 2
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result: dict = {
        "started": started,
        **harness.metadata(),
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
            scenarios.replay_once(broker, tool, capture(args.frames, 64), args.frames, [])
        for name in only:
            result[name] = scenarios.SCENARIOS[name](broker, args)
        broker.close()
    result["load_after"] = os.getloadavg()
    result["ratios"] = report.ratios(result)
    print(write(started.replace(":", ""), result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
