"""The pipeline's own limit with no sender in the way: DPDK's
`net_null` device hands the receive workers packets as fast as they poll,
and fastcapa takes them through its rings and transmit workers into the
broker until `--count`.

Per repeat: one `fastcapa --dpdk net_null0,size=S --count N` in a child
process, into a fresh topic. Its time runs from the start banner (Kafka
connected, port started) to the final report, as the replay scenario times
a replay; its CPU is the child's own (user + system, from the kernel's
accounting of the waited-for child), so CPU per frame covers every thread:
the receive workers' polling, the transmit workers, librdkafka's. The fixed
cost of a run (Python, the EAL, connecting) is measured by a run of
`FIXED_FRAMES` and taken off: CPU per frame is the difference of the two
runs' CPU over the difference of their frames.

    python bench/dpdk_null.py [--frames N] [--repeat R] [--queues Q]   (own broker)

`scenario(broker, frames, repeat, ...)` is what bench/run.py calls, beside
the replay and the ceiling; `markdown(result)` is its report section.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import harness

EAL = "--no-huge -m 512 --no-pci"
FIXED_FRAMES = 1000


def run_once(
    bootstrap: str,
    topic: str,
    frames: int,
    queues: int,
    size: int,
    cpus: str | None,
    filter: str | None = None,
) -> dict:
    """One capture from net_null; its frames, seconds, CPU seconds."""
    args = [
        "--dpdk", f"net_null0,size={size}", f"--eal={EAL}",
        "-q", str(queues), "-d", "1024", "--count", str(frames),
        "-t", topic, "-k", bootstrap,
    ]  # fmt: skip
    if cpus:
        args += ["--cpus", cpus]
    if filter:
        args += ["--filter", filter]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds, final = harness.run_reported(args, "capturing on")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    delivered = final["kaf"]["out"]
    if delivered < frames or final["kaf"]["drops"] or final["rx"]["drops"]:
        raise RuntimeError(f"delivered {delivered} of {frames}: {final}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "frames": delivered,
        "seconds": round(seconds, 4),
        "fps": round(delivered / seconds),
        "cpu_s": round(cpu, 3),
        "cpu_ns_per_frame": round(cpu * 1e9 / delivered),
        "nic_drops": final["nic"]["drops"],
    }


def scenario(
    broker,
    frames: int,
    repeat: int,
    queues: int = 1,
    size: int = 64,
    cpus: str | None = None,
    filter: str | None = None,
) -> dict:
    """`broker`: has .bootstrap, .topic(label) and .delete(topic). Returns
    the runs and their medians. `filter`: a --filter every frame passes
    (net_null's frames are all zero bytes: "not ip" does), for its cost."""

    def one(label: str, count: int) -> dict:
        topic = broker.topic(label)
        try:
            return run_once(broker.bootstrap, topic, count, queues, size, cpus, filter)
        finally:
            broker.delete(topic)

    fixed = one("dpdknullfixed", FIXED_FRAMES)
    runs = []
    for i in range(repeat):
        run = one(f"dpdknull{i}", frames)
        run["cpu_ns_per_frame"] = round(
            (run["cpu_s"] - fixed["cpu_s"]) * 1e9 / (run["frames"] - fixed["frames"])
        )
        runs.append(run)
    return {
        "fixed": fixed,
        "frames": frames,
        "queues": queues,
        "size": size,
        "filter": filter,
        "runs": runs,
        "fps": round(statistics.median(r["fps"] for r in runs)),
        "cpu_ns_per_frame": round(statistics.median(r["cpu_ns_per_frame"] for r in runs)),
    }


def markdown(result: dict) -> list[str]:
    """The section of the report."""
    return [
        f"DPDK `net_null` ({result['size']} B frames, {result['queues']} queue(s),"
        f" {result['frames']:,} frames, filter {result.get('filter') or 'none'},"
        f" median of {len(result['runs'])}): the pipeline's"
        " own limit, no sender in the way:",
        "",
        "| frames/s | CPU ns per frame (all threads) |",
        "|---|---|",
        f"| {result['fps']:,} | {result['cpu_ns_per_frame']:,} |",
        "",
    ]


class _OwnBroker:
    """A one-node cluster of the test support, for running this file alone."""

    def __init__(self, cluster) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        self.bootstrap = cluster.bootstrap
        self.admin = AdminClient({"bootstrap.servers": self.bootstrap})
        self._new = NewTopic

    def topic(self, label: str) -> str:
        name = f"bench-{label}-{os.urandom(3).hex()}"
        for future in self.admin.create_topics([self._new(name, 8, 1)]).values():
            future.result(30)
        time.sleep(1)
        return name

    def delete(self, topic: str) -> None:
        for future in self.admin.delete_topics([topic]).values():
            future.result(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--queues", type=int, default=1)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--cpus")
    parser.add_argument("--filter")
    args = parser.parse_args()
    from fastcapa_support import kafka_cluster

    with kafka_cluster.Cluster(nodes=1, jvm_opts=["-XX:+UseSerialGC"]) as cluster:
        result = scenario(
            _OwnBroker(cluster),
            args.frames,
            args.repeat,
            args.queues,
            args.size,
            args.cpus,
            args.filter,
        )
    print(json.dumps(result, indent=1))
    print("\n".join(markdown(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
