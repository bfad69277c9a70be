"""The way back: `fastcapa dump` beside the replay that wrote the
same topic, in the same run, against the same broker; and what the topic's
index (`fastcapa index`) buys the dump, beside the scan of the same query.

The input is a generated capture of 64-byte frames (2M by default; `make
bench` takes twice its --frames), `STEP_US` apart (2M frames: 200 s of
traffic), in which every `NEEDLE_EVERY`-th frame (the next plain IPv4 frame
from there) has its source address rewritten to `NEEDLE`, a host found
nowhere else: 0.05 % of the frames, the needle an analyst looks for.

Per repeat, into a fresh topic of 8 partitions:

1. fastcapa replays the capture (the replay's frames/s, as the replay
   scenario measures it: from the start banner to the last delivery);
2. `fastcapa index --until-caught-up` builds TOPIC.index (made beforehand,
   see `make_index_topic`): its frames/s from its banner (group joined) to
   its final report, as the replay's; from the process's start to its exit;
   and the read/s of its own final statistics;
3. the bytes on the broker's disk of the capture topic's partition folders
   and of the index topic's (blocks allocated, and the .log files' sizes:
   see `topic_bytes`);
4. the whole topic is dumped (a scan, as before the index existed);
5. the needle query (`--filter 'host NEEDLE'`) with the index and with
   `--no-index`, then a one-second window in the middle of the topic the
   same way: each pair in turn, the order swapped every repeat (index first
   in even repeats). Both outputs of a pair go to files and must be byte for
   byte the same; a difference is recorded and reported (with the commands
   to reproduce it), never a reason to stop.

Each dump runs in a child process of its own (this file, run as a script),
through the extension's `Dump` as `fastcapa dump` drives it (`index_topic`
None is `--no-index`): the whole dump's frames/s count from the moment it is
connected and knows the topic's offsets to the last frame written, like the
replay's; the needle and window queries count their whole time, connecting,
reading the index and the search included (for them the fixed costs are the
point). The peak RSS is the child's, from the kernel. Once per run the
needle query also goes through the command line (`fastcapa dump --explain`):
the plan it prints is kept, and its file must equal the others.

After the repeats, once: an IMIX capture replayed and indexed the same way,
for the index's size against an IMIX topic's.

Figures: dump frames/s ÷ replay frames/s; the window's time ÷ the whole
dump's time; with the index ÷ without, for the needle and the window; the
indexer's frames/s ÷ the replay's; the index topic's bytes on disk ÷ the
capture topic's, and the indexer's index_bytes ÷ read_bytes (before the
index producer's compression). Medians over the repeats. Nothing here is a
pass/fail test of a time.

    python bench/wayback.py [--frames N] [--repeat R] [--imix-frames N]   (own broker)
    python bench/wayback.py --smoke                                      (200k frames, 1 repeat)
    python bench/wayback.py --child JSON                                  (one dump)
"""

from __future__ import annotations

import filecmp
import json
import shlex
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WINDOW_US = 1_000_000
STEP_US = 100  # 2M frames: 200 s of traffic, so a second is 0.5 % of the topic
FRAMES = 2_000_000
SMOKE_FRAMES = 200_000
# The needle: a host in one frame of NEEDLE_EVERY (0.05 %), nowhere else in
# the generated traffic (capgen's hosts are 10/8 and fd00::/8).
NEEDLE = "198.51.100.77"
NEEDLE_EVERY = 2000
NEEDLE_FILTER = f"host {NEEDLE}"
INDEX_SUFFIX = ".index"  # fastcapa index's default index topic: TOPIC.index


def respaced(source: Path, step_us: int, cache: Path, needle_every: int = 0) -> Path:
    """`source` (a classic pcap, little-endian) with its records `step_us`
    apart from its first timestamp, kept in `cache`. With `needle_every`,
    from every `needle_every`-th record on the next untagged IPv4 frame gets
    `NEEDLE` as its source address (header checksum redone; the transport
    checksums capgen writes do not cover it); how many is in the JSON file
    beside it (`needles`)."""
    suffix = f"-needle{needle_every}" if needle_every else ""
    path = cache / f"{source.stem}-every-{step_us}us{suffix}.pcap"
    if path.exists():
        return path
    needle = bytes(int(part) for part in NEEDLE.split("."))
    data = bytearray(source.read_bytes())
    seconds, micros = struct.unpack_from("<II", data, 24)
    first = seconds * 1_000_000 + micros
    at, i, pending, needles = 24, 0, False, 0
    while at + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, at + 8)[0]
        ts = first + i * step_us
        struct.pack_into("<II", data, at, ts // 1_000_000, ts % 1_000_000)
        if needle_every and i % needle_every == needle_every // 2:
            pending = True
        frame = at + 16
        if pending and caplen >= 34 and data[frame + 12 : frame + 14] == b"\x08\x00":
            ip = frame + 14
            data[ip + 12 : ip + 16] = needle
            data[ip + 10 : ip + 12] = b"\0\0"
            struct.pack_into("!H", data, ip + 10, _ip_checksum(bytes(data[ip : ip + 20])))
            pending, needles = False, needles + 1
        at = frame + caplen
        i += 1
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    if needle_every:
        path.with_suffix(".json").write_text(
            json.dumps({"frames": i, "needle": NEEDLE, "needles": needles}) + "\n"
        )
    tmp.rename(path)
    return path


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def needles_in(path: Path) -> int:
    return json.loads(path.with_suffix(".json").read_text())["needles"]


def first_time(path: Path) -> int:
    with open(path, "rb") as stream:
        stream.seek(24)
        seconds, micros = struct.unpack("<II", stream.read(8))
    return seconds * 1_000_000 + micros


# --- one dump, in a child process ---------------------------------------------


def run_child(spec: dict) -> dict:
    """One dump in a child process of its own; its report (times, and its
    CPU and peak RSS from the kernel), with the child process's whole wall
    time (`process_s`, Python's start included). `spec`: topic, bootstrap,
    and optionally start, end, filter, index_topic, output (a file; default
    /dev/null)."""
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    process_s = time.monotonic() - began
    if proc.returncode != 0:
        raise RuntimeError(f"dump exited {proc.returncode}: {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout.splitlines()[-1])
    report["process_s"] = round(process_s, 4)
    return report


def child(spec: dict) -> int:
    import resource

    from fastcapa import _fastcapa

    query = {}
    if spec.get("start") is not None:
        query = {"start": int(spec["start"]), "end": int(spec["end"])}
    if spec.get("filter"):
        query["filter"] = spec["filter"]
    if spec.get("index_topic"):
        query["index_topics"] = [spec["index_topic"]]
    plan = None
    with open(spec.get("output") or "/dev/null", "wb") as sink:
        began = time.monotonic()
        dump = _fastcapa.Dump(
            [spec["topic"]], [("bootstrap.servers", spec["bootstrap"])], sink.fileno(), **query
        )
        connected = time.monotonic()
        if spec.get("index_topic"):
            plan = summarize_plan(dump.plan())
        planned = time.monotonic()
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
        "seconds": round(done - planned, 4),
        "total_s": round(done - began, 4),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "written": counters["written"],
        "read": counters["read"],
        "out_of_order": counters["out_of_order"],
        "plan": plan,
    }
    print(json.dumps(report), flush=True)
    return 0


def summarize_plan(plan: dict) -> dict:
    """`Dump.plan()` summed over the partitions: did the dump find an
    index, and how many slices and records it reads."""
    (topic,) = plan["topics"]
    parts = topic["partitions"]
    return {
        "index": topic["index"],
        "predicate": plan["predicate"],
        "scanned_partitions": sum(1 for p in parts if p["slices"] is None),
        "slices": sum(p["slices"] or 0 for p in parts),
        "in_window": sum(p["in_window"] for p in parts),
        "selected": sum(p["selected"] for p in parts),
        "indexed_reads": sum(p["indexed_reads"] for p in parts),
        "gaps": sum(p["gaps"] for p in parts),
        "tail": sum(p["high"] - p["tail_from"] for p in parts if p["tail_from"] is not None),
    }


# --- the tools that write the topic and its index ---------------------------------


def replay_seconds(bootstrap: str, topic: str, path: Path) -> float:
    """fastcapa's replay of `path` into `topic`, timed as the replay scenario
    times it: from its start banner (connected) to its final report."""
    # Imported here, not at the top: each dump child runs this file, and its
    # peak RSS is measured.
    import harness

    seconds, _ = harness.run_reported(["-r", str(path), "-t", topic, "-k", bootstrap], "replaying")
    return seconds


def read_floor(bootstrap: str, topic: str) -> dict:
    """librdkafka alone reading the whole topic and doing nothing with it
    (bench/ceiling's fastcapa-read-floor, at librdkafka's default settings):
    the floor under the dump's and the indexer's reading. Timed from the
    start of reading to the last record, as the whole dump is."""
    import harness

    proc = subprocess.run(
        [str(harness.READ_FLOOR), bootstrap, topic],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"read floor exited {proc.returncode}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.splitlines()[-1])


def index_cmd(bootstrap: str, topic: str) -> list[str]:
    return [
        sys.executable, "-m", "fastcapa", "index", "-t", topic, "-k", bootstrap,
        "--until-caught-up",
    ]  # fmt: skip


def build_index(bootstrap: str, topic: str) -> dict:
    """`fastcapa index --until-caught-up` over the whole topic: seconds from
    its banner (the group joined) to its final report, as the replay is
    timed; from the process's start to its exit; and its final statistics."""
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "index.jsonl"
        began = time.time()
        proc = subprocess.Popen(
            [*index_cmd(bootstrap, topic),
             "--stats-json", str(stats), "--stats-interval", "600"],
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert proc.stderr is not None
        first = proc.stderr.readline()
        banner = time.time()
        rest = proc.stderr.read()
        rc = proc.wait()
        ended = time.time()
        if rc != 0 or "indexing topic" not in first:
            raise RuntimeError(f"fastcapa index exited {rc}: {first}{rest[-2000:]}")
        final = json.loads(stats.read_text().splitlines()[-1])
    return {
        "seconds": round(final["time"] - banner, 4),
        "wall_s": round(ended - began, 4),
        "stats": final,
    }


def topic_bytes(data_dir: Path, topic: str) -> dict:
    """Bytes on the broker's disk of `topic`'s partition folders
    (DATA/TOPIC-N): `disk_bytes`, the blocks allocated to their files;
    `log_bytes`, the sizes of the record batches (*.log) alone; `bytes`, the
    sizes of every file (Kafka sizes the active segment's offset and time
    indexes ahead, 10 MiB each, sparse: counted in `bytes`, hardly in
    `disk_bytes`)."""
    total = log = disk = 0
    folders = 0
    for folder in data_dir.iterdir():
        name, dash, number = folder.name.rpartition("-")
        if name != topic or not dash or not number.isdigit():
            continue
        folders += 1
        for file in folder.iterdir():
            st = file.stat()
            total += st.st_size
            disk += st.st_blocks * 512
            if file.suffix == ".log":
                log += st.st_size
    return {"partitions": folders, "bytes": total, "log_bytes": log, "disk_bytes": disk}


def make_index_topic(broker, topic: str) -> None:
    """TOPIC.index as `fastcapa index` makes it when missing (the capture
    topic's partitions and retention, cleanup by deletion), made here first
    and waited for: an indexer that creates it itself may ask for its
    metadata before the broker has a leader for it, and stop with "topic
    ... does not exist" (seen on this bench's broker)."""
    broker.create(topic + INDEX_SUFFIX, {"retention.ms": "-1", "cleanup.policy": "delete"})


def drop(broker, topic: str) -> None:
    """The capture topic, its index topic and the indexers' group."""
    import contextlib

    broker.delete(topic)
    broker.delete(topic + INDEX_SUFFIX)
    with contextlib.suppress(Exception):  # cleanup only
        for future in broker.admin.delete_consumer_groups([f"fastcapa-index.{topic}"]).values():
            future.result(30)


def indexed(broker, topic: str, path: Path, frames: int) -> dict:
    """Replays `path` into `topic`, indexes it, and measures both topics on
    the broker's disk."""
    replayed = replay_seconds(broker.bootstrap, topic, path)
    make_index_topic(broker, topic)
    index = build_index(broker.bootstrap, topic)
    stats = index["stats"]
    if stats["indexed"] != frames:
        print(
            f"bench: wayback: the indexer indexed {stats['indexed']} of {frames} frames",
            file=sys.stderr,
            flush=True,
        )
    capture_disk = topic_bytes(broker.data_dir, topic)
    index_disk = topic_bytes(broker.data_dir, topic + INDEX_SUFFIX)
    return {
        "replay_s": round(replayed, 4),
        "replay_fps": round(frames / replayed),
        "index_s": index["seconds"],
        "index_wall_s": index["wall_s"],
        "index_fps": round(frames / index["seconds"]),
        "index_wall_fps": round(frames / index["wall_s"]),
        "index_stats_read_per_s": stats["read_per_s"],
        "index_vs_replay": round(replayed / index["seconds"], 3),
        "indexed": stats["indexed"],
        "slices": stats["slices"],
        "read_bytes": stats["read_bytes"],
        "index_bytes": stats["index_bytes"],
        "index_bytes_vs_read_bytes": round(stats["index_bytes"] / stats["read_bytes"], 5),
        "topic_disk": capture_disk,
        "index_disk": index_disk,
        "topic_disk_bytes": capture_disk["disk_bytes"],
        "topic_log_bytes": capture_disk["log_bytes"],
        "index_disk_bytes": index_disk["disk_bytes"],
        "index_log_bytes": index_disk["log_bytes"],
        # Blocks allocated: what the partitions take on the broker's disk.
        "index_vs_topic_disk": round(index_disk["disk_bytes"] / capture_disk["disk_bytes"], 5),
        "index_vs_topic_log": round(index_disk["log_bytes"] / capture_disk["log_bytes"], 5),
        # Every file's size, Kafka's preallocated offset and time indexes
        # included (10 MiB each per partition): not what the index costs.
        "index_vs_topic_apparent": round(index_disk["bytes"] / capture_disk["bytes"], 5),
    }


# --- the scenario -------------------------------------------------------------


def pair(spec: dict, topic: str, outputs: Path, label: str, index_first: bool) -> dict:
    """One query with the index and with `--no-index`, one after the other
    (the index first when `index_first`), each into its own file; the two
    files compared byte for byte."""
    files = {way: outputs / f"{label}-{way}.pcap" for way in ("index", "scan")}
    specs = {
        "index": {**spec, "index_topic": topic + INDEX_SUFFIX, "output": str(files["index"])},
        "scan": {**spec, "index_topic": None, "output": str(files["scan"])},
    }
    order = ("index", "scan") if index_first else ("scan", "index")
    runs = {way: run_child(specs[way]) for way in order}
    identical = filecmp.cmp(files["index"], files["scan"], shallow=False)
    return {
        "index": runs["index"],
        "scan": runs["scan"],
        "index_first": index_first,
        "identical": identical,
        "bytes": files["scan"].stat().st_size,
        "files": {way: str(file) for way, file in files.items()},
    }


def cli_dump(bootstrap: str, topic: str, output: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "fastcapa", "dump", "-t", topic, "-k", bootstrap,
        "-o", str(output), *args,
    ]  # fmt: skip


def scenario(
    broker,
    capture: Path,
    cache: Path,
    frames: int,
    repeat: int,
    imix: Path | None = None,
    imix_frames: int = 0,
) -> dict:
    """`broker`: a harness.Broker (.bootstrap, .topic(label), .delete(topic),
    .admin, .data_dir). `capture`: `frames` 64-byte frames; `imix`: an IMIX
    capture of `imix_frames` for the index's size (None: not measured).
    Returns the runs and their medians."""
    path = respaced(capture, STEP_US, cache, NEEDLE_EVERY)
    needles = needles_in(path)
    start = first_time(path)
    middle = start + frames * STEP_US // 2
    window = {"start": middle, "end": middle + WINDOW_US - 1}
    outputs = cache / "wayback-out"
    outputs.mkdir(parents=True, exist_ok=True)
    runs = []
    mismatches: list[str] = []
    explain: dict | None = None
    for i in range(repeat):
        topic = broker.topic(f"wayback{i}")
        try:
            print(f"bench: wayback {i + 1}/{repeat}: replay, index", file=sys.stderr, flush=True)
            built = indexed(broker, topic, path, frames)
            print(f"bench: wayback {i + 1}/{repeat}: dumps", file=sys.stderr, flush=True)
            base = {"topic": topic, "bootstrap": broker.bootstrap}
            whole = run_child(base)
            floor = read_floor(broker.bootstrap, topic)
            index_first = i % 2 == 0
            needle = pair(
                {**base, "filter": NEEDLE_FILTER}, topic, outputs, f"needle{i}", index_first
            )
            if explain is None:
                reference = Path(needle["files"]["scan"])
                explain = cli_check(broker.bootstrap, topic, outputs, reference)
                if not explain["identical_to_scan"]:
                    mismatches.append(
                        f"needle: `{explain['command']}` exited {explain['exit']}, its file"
                        f" {outputs / 'needle-cli.pcap'} is not the scan's ({reference}):"
                        f" {explain['closing']}"
                    )
            part = pair({**base, **window}, topic, outputs, f"window{i}", index_first)
        finally:
            drop(broker, topic)
        if whole["written"] != frames:
            raise RuntimeError(f"the dump wrote {whole['written']} of {frames} frames")
        if floor["frames"] != frames:
            raise RuntimeError(f"the read floor read {floor['frames']} of {frames} frames")
        for label, result in (("needle", needle), ("window", part)):
            if not result["identical"] or result["index"]["written"] != result["scan"]["written"]:
                mismatches.append(describe_mismatch(label, result, path, window))
            else:  # the files are kept only when they differ, for a look
                for file in result["files"].values():
                    Path(file).unlink()
        if needle["scan"]["written"] != needles:
            mismatches.append(
                f"needle: the scan wrote {needle['scan']['written']} frames; the capture"
                f" holds {needles} with {NEEDLE}"
            )
        whole_total = whole["seconds"] + whole["open_s"]
        runs.append(
            {
                **built,
                "dump_s": whole["seconds"],
                "dump_fps": round(frames / whole["seconds"]),
                "dump_open_s": whole["open_s"],
                "dump_cpu_s": whole["cpu_s"],
                "dump_peak_rss_mb": whole["peak_rss_mb"],
                "dump_out_of_order": whole["out_of_order"],
                "dump_vs_replay": round(built["replay_s"] / whole["seconds"], 3),
                "floor_s": floor["seconds"],
                "floor_fps": round(frames / floor["seconds"]),
                "floor_cpu_s": floor["cpu_s"],
                "floor_peak_rss_mb": floor["peak_rss_mb"],
                "floor_vs_replay": round(built["replay_s"] / floor["seconds"], 3),
                "dump_vs_floor": round(floor["seconds"] / whole["seconds"], 3),
                "dump_cpu_vs_floor": round(whole["cpu_s"] / floor["cpu_s"], 3),
                "index_vs_floor": round(floor["seconds"] / built["index_s"], 3),
                # The window scanned, as this figure always was (no index).
                "window_s": part["scan"]["seconds"],
                "window_open_s": part["scan"]["open_s"],
                "window_frames": part["scan"]["written"],
                "window_read": part["scan"]["read"],
                "window_peak_rss_mb": part["scan"]["peak_rss_mb"],
                "window_vs_dump": round(part["scan"]["total_s"] / whole_total, 3),
                **{f"needle_{k}": v for k, v in flatten(needle).items()},
                **{f"window_{k}": v for k, v in flatten(part).items()},
                "window_index_vs_dump": round(part["index"]["total_s"] / whole_total, 3),
                "window_scan_vs_dump": round(part["scan"]["total_s"] / whole_total, 3),
                "needle_index_vs_dump": round(needle["index"]["total_s"] / whole_total, 3),
                "needle_scan_vs_dump": round(needle["scan"]["total_s"] / whole_total, 3),
            }
        )
    imix_result = None
    if imix is not None:
        topic = broker.topic("waybackimix")
        try:
            print("bench: wayback: IMIX replay, index", file=sys.stderr, flush=True)
            imix_result = {"frames": imix_frames, **indexed(broker, topic, imix, imix_frames)}
        finally:
            drop(broker, topic)
    for text in mismatches:
        print(f"bench: wayback: MISMATCH {text}", file=sys.stderr, flush=True)

    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    medians = {
        key: round(median(key), 5)
        for key in runs[0]
        if isinstance(runs[0][key], (int, float)) and not isinstance(runs[0][key], bool)
    }
    return {
        "frames": frames,
        "step_us": STEP_US,
        "needle": NEEDLE,
        "needle_filter": NEEDLE_FILTER,
        "needles": needles,
        "window_us": [window["start"], window["end"]],
        "runs": runs,
        "replay_fps": round(median("replay_fps")),
        "dump_fps": round(median("dump_fps")),
        "dump_vs_replay": median("dump_vs_replay"),
        "floor_fps": round(median("floor_fps")),
        "floor_vs_replay": median("floor_vs_replay"),
        "dump_vs_floor": median("dump_vs_floor"),
        "dump_cpu_vs_floor": median("dump_cpu_vs_floor"),
        "index_vs_floor": median("index_vs_floor"),
        "floor_peak_rss_mb": round(median("floor_peak_rss_mb"), 1),
        "window_s": median("window_s"),
        "window_vs_dump": median("window_vs_dump"),
        "dump_peak_rss_mb": round(median("dump_peak_rss_mb"), 1),
        "window_read": median("window_read"),
        "index": {
            "medians": medians,
            "identical": not mismatches,
            "mismatches": mismatches,
            "explain": explain,
            "imix": imix_result,
        },
    }


def flatten(result: dict) -> dict:
    """A query pair's figures, flat, and its ratio: index ÷ scan of the
    whole time (connecting, the index and the search included)."""
    out = {"identical": result["identical"], "index_first": result["index_first"]}
    for way in ("index", "scan"):
        run = result[way]
        out |= {
            f"{way}_total_s": run["total_s"],
            f"{way}_open_s": run["open_s"],
            f"{way}_process_s": run["process_s"],
            f"{way}_cpu_s": run["cpu_s"],
            f"{way}_written": run["written"],
            f"{way}_read": run["read"],
            f"{way}_peak_rss_mb": run["peak_rss_mb"],
        }
    plan = result["index"]["plan"] or {}
    out["index_plan_found_index"] = plan.get("index")
    out["index_planned_reads"] = plan.get("indexed_reads")
    out["index_vs_scan"] = round(result["index"]["total_s"] / result["scan"]["total_s"], 3)
    return out


def describe_mismatch(label: str, result: dict, path: Path, window: dict) -> str:
    """What differed, with the commands that give the two files again (the
    bench deletes its topics: a topic T of 8 partitions on a broker B first)."""
    args = ["--filter", NEEDLE_FILTER] if label == "needle" else []
    if label == "window":
        args = ["--from", str(window["start"]), "--to", str(window["end"])]
    commands = [
        ["fastcapa", "-r", str(path), "-t", "T", "-k", "B"],
        ["fastcapa", "index", "-t", "T", "-k", "B", "--until-caught-up"],
        ["fastcapa", "dump", "-t", "T", "-k", "B", "-o", "with-index.pcap", *args],
        ["fastcapa", "dump", "-t", "T", "-k", "B", "-o", "scan.pcap", *args, "--no-index"],
        ["cmp", "with-index.pcap", "scan.pcap"],
    ]
    return (
        f"{label}: with the index {result['index']['written']} frames"
        f" ({result['files']['index']}), without {result['scan']['written']}"
        f" ({result['files']['scan']}), files identical: {result['identical']};"
        f" again: {' && '.join(shlex.join(c) for c in commands)}"
    )


def cli_check(bootstrap: str, topic: str, outputs: Path, reference: Path) -> dict:
    """The needle query through the command line with `--explain`: its plan,
    and whether its file is the one the scan wrote."""
    output = outputs / "needle-cli.pcap"
    cmd = cli_dump(bootstrap, topic, output, "--filter", NEEDLE_FILTER, "--explain")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    lines = proc.stderr.splitlines()
    same = proc.returncode == 0 and filecmp.cmp(output, reference, shallow=False)
    if same:
        output.unlink()
    return {
        "command": shlex.join(["fastcapa", *cmd[3:]]),
        "exit": proc.returncode,
        "plan": [line for line in lines if "plan" in line or line.startswith("  partition")],
        "closing": lines[-1] if lines else "",
        "identical_to_scan": same,
    }


# --- the report -----------------------------------------------------------------


def markdown(result: dict) -> list[str]:
    """The section of the report."""
    runs = len(result["runs"])
    lines = [
        f"The way back: {result['frames']:,} frames of 64 B ({result['step_us']} µs apart)"
        f" replayed into 8 partitions, then dumped (median of {runs}):",
        "",
        "| replay frames/s | dump frames/s | dump ÷ replay | 1-s window s | window ÷ dump"
        " | frames the window read | dump peak RSS MB |",
        "|---|---|---|---|---|---|---|",
        f"| {result['replay_fps']:,} | {result['dump_fps']:,} | {result['dump_vs_replay']:.2f} | "
        f"{result['window_s']:.3f} | {result['window_vs_dump']:.3f} | "
        f"{int(result['window_read']):,} | {result['dump_peak_rss_mb']} |",
        "",
    ]
    if "floor_fps" in result:
        lines += [
            "Beside librdkafka alone reading the same topic and doing nothing with the records"
            " (bench/ceiling's `fastcapa-read-floor`, the library's defaults; same run):",
            "",
            "| floor frames/s | floor ÷ replay | dump ÷ floor | dump CPU ÷ floor CPU"
            " | indexer ÷ floor | floor peak RSS MB |",
            "|---|---|---|---|---|---|",
            f"| {result['floor_fps']:,} | {result['floor_vs_replay']:.2f} |"
            f" {result['dump_vs_floor']:.2f} | {result['dump_cpu_vs_floor']:.2f} |"
            f" {result['index_vs_floor']:.2f} | {result['floor_peak_rss_mb']} |",
            "",
        ]
    index = result.get("index")
    if not index:
        return lines
    m = index["medians"]
    share = result["needles"] / result["frames"]
    lines += [
        f"With the topic's index (`fastcapa index`) and without (`--no-index`), same topic,"
        f" pairs in turn (median of {runs}); whole times, connecting, the index and the search"
        f" included; the whole dump {m['dump_open_s'] + m['dump_s']:.3f} s."
        f" Needle: `{result['needle_filter']}`, {result['needles']:,} frames"
        f" ({share:.3%}); window: 1 s in the middle."
        f" Outputs byte-identical: {'yes' if index['identical'] else 'NO'}.",
        "",
        "| query | index ÷ scan | with index s | scan s | frames written | records read,"
        " index / scan | CPU s, index / scan | with index ÷ whole dump | scan ÷ whole dump |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for q in ("needle", "window"):
        lines.append(
            f"| {q} | {m[f'{q}_index_vs_scan']:.3f} | {m[f'{q}_index_total_s']:.3f} |"
            f" {m[f'{q}_scan_total_s']:.3f} | {int(m[f'{q}_index_written']):,} |"
            f" {int(m[f'{q}_index_read']):,} / {int(m[f'{q}_scan_read']):,} |"
            f" {m[f'{q}_index_cpu_s']:.3f} / {m[f'{q}_scan_cpu_s']:.3f} |"
            f" {m[f'{q}_index_vs_dump']:.3f} | {m[f'{q}_scan_vs_dump']:.3f} |"
        )
    explain = index.get("explain")
    if explain:
        reads = sum(
            int(line.split(" records to read")[0].rsplit(" ", 1)[1])
            for line in explain["plan"]
            if " records to read" in line
        )
        lines += [
            "",
            f"The needle through the command line (`fastcapa dump --explain`, first repeat):"
            f" exit {explain['exit']}, {reads:,} records to read by the plan, its file the"
            f" scan's: {'yes' if explain['identical_to_scan'] else 'NO'}.",
        ]
    lines += [
        "",
        "The indexer (`fastcapa index --until-caught-up`) beside the replay that wrote the"
        " topic; frames/s from its banner (group joined) to its final report, as the"
        " replay's, and from its start to its exit; sizes on the broker's disk in MB, blocks"
        " allocated to the partition folders (their .log files' sizes in brackets);"
        " index_bytes ÷ read_bytes from the indexer's statistics, before compression:",
        "",
        "| topic | index ÷ replay frames/s | index frames/s | start to exit | its stats' read/s"
        " | replay frames/s | index ÷ topic on disk | index on disk | topic on disk"
        " | index_bytes ÷ read_bytes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [("64 B", m)]
    if index.get("imix"):
        rows.append(("IMIX", index["imix"]))
    for label, r in rows:
        frames = result["frames"] if label == "64 B" else r["frames"]
        lines.append(
            f"| {label}, {frames:,} frames | {r['index_vs_replay']:.3f} | {round(r['index_fps']):,}"
            f" | {round(r['index_wall_fps']):,} | {round(r['index_stats_read_per_s']):,}"
            f" | {round(r['replay_fps']):,} | {r['index_vs_topic_disk']:.4f}"
            f" ({r['index_vs_topic_log']:.4f}) | {mb(r, 'index')} | {mb(r, 'topic')}"
            f" | {r['index_bytes_vs_read_bytes']:.4f} |"
        )
    lines.append("")
    if index.get("mismatches"):
        lines += ["Mismatches:", "", *(f"- {text}" for text in index["mismatches"]), ""]
    return lines


def mb(r: dict, which: str) -> str:
    """MB on disk of the index or the topic (of its .log files)."""
    return f"{r[f'{which}_disk_bytes'] / 1e6:.2f} ({r[f'{which}_log_bytes'] / 1e6:.2f})"


# --- alone --------------------------------------------------------------------


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=FRAMES, help="64-byte frames of the topic")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--imix-frames",
        type=int,
        help="frames of the IMIX topic measured for the index's size (default: half of"
        " --frames; 0: none)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help=f"{SMOKE_FRAMES:,} frames, one repeat: a quick run"
    )
    args = parser.parse_args()
    if args.smoke:
        args.frames, args.repeat = SMOKE_FRAMES, 1
    imix_frames = args.frames // 2 if args.imix_frames is None else args.imix_frames

    import harness
    from fastcapa_support import kafka_cluster

    capture = harness.capture(args.frames, 64)
    imix = harness.capture(imix_frames, 0) if imix_frames else None
    respaced(capture, STEP_US, harness.CACHE, NEEDLE_EVERY)
    with kafka_cluster.Cluster(nodes=1, jvm_opts=["-XX:+UseSerialGC"]) as cluster:
        broker = harness.Broker(cluster)
        try:
            # Warm the broker's JIT first (bench/run.py does the same): a
            # replay and an index, untimed.
            print("bench: warming the broker up", file=sys.stderr, flush=True)
            warm = broker.topic("waybackwarm")
            try:
                replay_seconds(broker.bootstrap, warm, capture)
                make_index_topic(broker, warm)
                build_index(broker.bootstrap, warm)
            finally:
                drop(broker, warm)
            result = scenario(
                broker, capture, harness.CACHE, args.frames, args.repeat, imix, imix_frames
            )
        finally:
            broker.close()
    print(json.dumps(result, indent=1))
    print("\n".join(markdown(result)))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        raise SystemExit(child(json.loads(sys.argv[2])))
    raise SystemExit(main())
