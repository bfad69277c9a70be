"""The way back (issue 14): `fastcapa dump` beside the replay that wrote the
same topic, in the same run, against the same broker.

Per repeat: a generated capture of 64-byte frames spread over 100 s is
replayed by fastcapa into a fresh topic of 8 partitions (the replay's
frames/s, as the replay scenario measures it: from the start banner to the
last delivery); then the whole topic is dumped, then a one-second window in
its middle. Each dump runs in a child process of its own (this file, run as
a script): its time counts from the moment the dump is connected and knows
the topic's offsets to the last frame written, like the replay's; the peak
RSS is the child's, from the kernel.

Figures: dump frames/s ÷ replay frames/s (goal >= 1.0), the window's time ÷
the whole dump's time (both with their connecting and search: for a window
the fixed costs are the point), and the dump's peak RSS.

    python bench/wayback.py --child TOPIC BOOTSTRAP [START END]   (one dump)
"""

from __future__ import annotations

import json
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

WINDOW_US = 1_000_000
STEP_US = 100  # 1M frames: 100 s of traffic, so a second is 1 % of the topic


def respaced(source: Path, step_us: int, cache: Path) -> Path:
    """`source` (a classic pcap, little-endian) with its records `step_us`
    apart from its first timestamp, kept in `cache`."""
    path = cache / f"{source.stem}-every-{step_us}us.pcap"
    if path.exists():
        return path
    data = bytearray(source.read_bytes())
    seconds, micros = struct.unpack_from("<II", data, 24)
    first = seconds * 1_000_000 + micros
    at, i = 24, 0
    while at + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, at + 8)[0]
        ts = first + i * step_us
        struct.pack_into("<II", data, at, ts // 1_000_000, ts % 1_000_000)
        at += 16 + caplen
        i += 1
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.rename(path)
    return path


def first_time(path: Path) -> int:
    with open(path, "rb") as stream:
        stream.seek(24)
        seconds, micros = struct.unpack("<II", stream.read(8))
    return seconds * 1_000_000 + micros


def run_child(args: list[str]) -> dict:
    """One dump in a child process of its own; its report (times, and its
    CPU and peak RSS from the kernel)."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dump exited {proc.returncode}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.splitlines()[-1])


def child(topic: str, bootstrap: str, window: list[str]) -> int:
    import resource

    from fastcapa import _fastcapa

    query = {"start": int(window[0]), "end": int(window[1])} if window else {}
    with open("/dev/null", "wb") as sink:
        began = time.monotonic()
        dump = _fastcapa.Dump(topic, [("bootstrap.servers", bootstrap)], sink.fileno(), **query)
        connected = time.monotonic()
        while not dump.run(1.0):
            pass
        done = time.monotonic()
        counters = dump.counters()
        dump.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # Not ru_maxrss: a child keeps its parent's high-water mark across
    # fork and exec; VmHWM is this process image's own.
    status = Path("/proc/self/status").read_text()
    peak_kb = int(
        next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]
    )
    report = {
        "open_s": round(connected - began, 4),
        "seconds": round(done - connected, 4),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "written": counters["written"],
        "read": counters["read"],
        "out_of_order": counters["out_of_order"],
    }
    print(json.dumps(report), flush=True)
    return 0


def replay_seconds(bootstrap: str, topic: str, path: Path) -> float:
    """fastcapa's replay of `path` into `topic`, timed as the replay scenario
    times it: from its start banner (connected) to its final report."""
    # Imported here, not at the top: each dump child runs this file, and its
    # peak RSS is measured.
    import harness

    seconds, _ = harness.run_reported(["-r", str(path), "-t", topic, "-k", bootstrap], "replaying")
    return seconds


def scenario(broker, capture: Path, cache: Path, frames: int, repeat: int) -> dict:
    """`broker`: has .bootstrap, .topic(label) and .delete(topic). Returns
    the runs and their medians."""
    path = respaced(capture, STEP_US, cache)
    start = first_time(path)
    middle = start + frames * STEP_US // 2
    window = [str(middle), str(middle + WINDOW_US - 1)]
    runs = []
    for i in range(repeat):
        topic = broker.topic(f"wayback{i}")
        try:
            replayed = replay_seconds(broker.bootstrap, topic, path)
            whole = run_child([topic, broker.bootstrap])
            part = run_child([topic, broker.bootstrap, *window])
        finally:
            broker.delete(topic)
        if whole["written"] != frames:
            raise RuntimeError(f"the dump wrote {whole['written']} of {frames} frames")
        runs.append(
            {
                "replay_s": round(replayed, 4),
                "replay_fps": round(frames / replayed),
                "dump_s": whole["seconds"],
                "dump_fps": round(frames / whole["seconds"]),
                "dump_open_s": whole["open_s"],
                "dump_cpu_s": whole["cpu_s"],
                "dump_peak_rss_mb": whole["peak_rss_mb"],
                "dump_out_of_order": whole["out_of_order"],
                "window_s": part["seconds"],
                "window_open_s": part["open_s"],
                "window_frames": part["written"],
                "window_read": part["read"],
                "window_peak_rss_mb": part["peak_rss_mb"],
                "dump_vs_replay": round(replayed / whole["seconds"], 3),
                "window_vs_dump": round(
                    (part["seconds"] + part["open_s"]) / (whole["seconds"] + whole["open_s"]), 3
                ),
            }
        )

    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    return {
        "frames": frames,
        "step_us": STEP_US,
        "runs": runs,
        "replay_fps": round(median("replay_fps")),
        "dump_fps": round(median("dump_fps")),
        "dump_vs_replay": median("dump_vs_replay"),
        "window_s": median("window_s"),
        "window_vs_dump": median("window_vs_dump"),
        "dump_peak_rss_mb": median("dump_peak_rss_mb"),
        "window_read": median("window_read"),
    }


def markdown(result: dict) -> list[str]:
    """The section of the report."""
    return [
        f"The way back: {result['frames']:,} frames of 64 B ({result['step_us']} µs apart)"
        f" replayed into 8 partitions, then dumped (median of {len(result['runs'])}):",
        "",
        "| replay frames/s | dump frames/s | dump ÷ replay | 1-s window s | window ÷ dump"
        " | frames the window read | dump peak RSS MB |",
        "|---|---|---|---|---|---|---|",
        f"| {result['replay_fps']:,} | {result['dump_fps']:,} | {result['dump_vs_replay']:.2f} | "
        f"{result['window_s']:.3f} | {result['window_vs_dump']:.3f} | "
        f"{int(result['window_read']):,} | {result['dump_peak_rss_mb']} |",
        "",
    ]


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        raise SystemExit(child(sys.argv[2], sys.argv[3], sys.argv[4:6]))
    print(__doc__, file=sys.stderr)
    raise SystemExit(2)
