"""The scenarios: what each tool is asked to do, and the per-tool summaries.

  replay   a generated capture (64-byte frames, and IMIX) replayed into a topic
           of 8 partitions by fastcapa, by the librdkafka ceiling and by a
           pycapa-style Python program (bench/pycapa_baseline.py)
  live     tcpreplay --topspeed from a network namespace into a veth pair;
           captured by fastcapa (1 and 2 queues), `tcpdump -w /dev/null` (the
           capture floor) and the pycapa-style baseline on libpcap
  scaling  replay with receive queues x transmit workers from 1 to the cores
  wayback  `fastcapa dump` of the topic a replay wrote, with its index and
           without, and `fastcapa index` beside the replay (bench/wayback.py)
  dpdk     optional: bench/dpdk_null.py's `scenario(broker, ...)`, when present

A scenario is a function of the broker and the run's arguments returning a
dict that the result file stores under its name; `SCENARIOS` lists them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import harness
from fastcapa_support.netns import VethPair
from harness import (
    CACHE,
    CEILING,
    PYCAPA,
    SMALL,
    Broker,
    Tool,
    capture,
    fastcapa_cmd,
    fastcapa_env,
    last_json,
    proc_cpu,
    thread_cpu,
    wire_bytes,
)


def replay_once(broker: Broker, tool: str, path: Path, frames: int, extra: list[str]) -> dict:
    topic = broker.topic(tool.split()[0])
    broker_cpu = broker.cpu()
    load_cpu = 0.0
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
        settings = [f"{key}={value}" for key, value in harness.producer_settings().items()]
        run = Tool([str(CEILING), str(path), broker.bootstrap, topic, *settings])
        rc = run.reap()
        report = last_json(run)
        seconds, delivered, failed = report["seconds"], report["delivered"], report["failed"]
        # The ceiling loads the whole file before its clock starts: what it
        # costs to produce is its CPU after that (fastcapa's includes
        # reading the file as it goes).
        load_cpu = report["load_cpu_s"]
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
        "load_cpu_s": round(load_cpu, 3),
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
                startup[tool].append(
                    small_run["cpu_user_s"] + small_run["cpu_sys_s"] - small_run["load_cpu_s"]
                )
        results[label] = {
            tool: summarize_replay(runs[tool], startup[tool], frames, payload) for tool in configs
        }
    return results


def summarize_replay(runs: list[dict], startup: list[float], frames: int, payload: int) -> dict:
    seconds = statistics.median(r["seconds"] for r in runs)
    cpu = statistics.median(
        r["cpu_user_s"] + r["cpu_sys_s"] - r.get("load_cpu_s", 0.0) for r in runs
    )
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
            # "fastcapa q2": 2 receive queues, a transmit worker per ring;
            # "fastcapa q2 w1": the same with one transmit worker. Said
            # explicitly: the default depends on the machine's cores.
            config = dict((word[0], word[1:]) for word in tool.split()[1:])
            workers = ["--tx-workers", config.get("w", config["q"])]
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
    if harness.BEFORE:
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


# --- the registry -------------------------------------------------------------
# Each scenario: (broker, args) -> dict, stored in the result under its name.
# args is run.py's argparse namespace (frames, live_frames, repeat, variants).


def replay_scenario(broker: Broker, args) -> dict:
    tools: dict[str, list[str]] = {"ceiling": [], "fastcapa": [], "pycapa": []}
    if harness.BEFORE:
        tools["fastcapa-before"] = []
    # `--variant NAME=ARGS`: this build with other options, e.g. a lever off.
    for name, extra in args.variants.items():
        tools[f"fastcapa {name}"] = extra
    return replay(broker, args.frames, args.repeat, tools)


def live_scenario(broker: Broker, args) -> dict:
    return live(broker, args.live_frames, args.repeat)


def scaling_scenario(broker: Broker, args) -> dict:
    cores = os.cpu_count() or 1
    configs = {
        f"{q}x{w}": ["-q", str(q), "--tx-workers", str(w)]
        for q in range(1, cores + 1)
        for w in range(1, cores + 1)
    }
    # fastcapa-prefixed names select the fastcapa branch of replay_once; the
    # ceiling beside them, for a reference of the same minutes.
    scaled = replay(
        broker,
        args.frames,
        args.repeat,
        {"ceiling": [], **{f"fastcapa {k}": v for k, v in configs.items()}},
        sizes=(64,),
    )
    return {label: {k.split()[-1]: v for k, v in tools.items()} for label, tools in scaled.items()}


def wayback_scenario(broker: Broker, args) -> dict:
    """Twice the replay's frames of 64 B (2M by default: the index is about
    topics too large to scan in a blink), and the replay's IMIX capture for
    the index's size."""
    import wayback

    frames = 2 * args.frames
    return wayback.scenario(
        broker,
        capture(frames, 64),
        CACHE,
        frames,
        args.repeat,
        imix=capture(args.frames, 0),
        imix_frames=args.frames,
    )


def dpdk_scenario(broker: Broker, args) -> dict:
    """DPDK's `net_null` port through fastcapa (bench/dpdk_null.py): the
    receive and transmit workers as fast as they go, no sender in the way,
    at the replay's frame count."""
    import dpdk_null

    return dpdk_null.scenario(broker, args.frames, args.repeat)


SCENARIOS = {
    "replay": replay_scenario,
    "live": live_scenario,
    "scaling": scaling_scenario,
    "wayback": wayback_scenario,
    "dpdk": dpdk_scenario,
}


def available(name: str) -> bool:
    """The dpdk scenario needs an extension built with DPDK (`make build`)."""
    if name == "dpdk":
        from fastcapa import _fastcapa

        return _fastcapa.DPDK
    return name in SCENARIOS
