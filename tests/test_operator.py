"""The operator interface against a real broker: where settings come from,
every failure at start or while running, the statistics' figures, and `fastcapa dump` windows."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fastcapa_support import corpus
from fastcapa_support.corpus import CORPUS
from fastcapa_support.kafka_read import read_topic
from fastcapa_support.pcapref import read_capture
from fastcapa_support.runner import (
    assert_accounting,
    assert_clean_failure,
    assert_no_stage_gives_more_than_it_took,
    fastcapa_process,
)

pytestmark = pytest.mark.kafka

KEEP = {"retention.ms": "-1"}  # generated captures are dated 2023
AFS = CORPUS / "afs.pcap"  # 601 Ethernet records


def reports(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def librdkafka_client_ids(path: Path) -> set[str]:
    return {json.loads(line)["client_id"] for line in path.read_text().splitlines()}


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- where settings come from


@corpus.needed()
def test_config_file_then_x_then_k_reach_the_producer(kafka, new_topic, tmp_path, fastcapa):
    """A property from each place ends up in librdkafka: client.id is visible
    in its own statistics, bootstrap.servers by frames arriving at all."""
    topic = new_topic(config=KEEP)
    ini = tmp_path / "fastcapa.conf"
    ini.write_text(
        "# fastcapa settings\n"
        "[kafka-global]\n"
        "client.id = from-ini\n"
        f"bootstrap.servers = 127.0.0.1:{closed_port()}\n"
        "statistics.interval.ms = 50\n"
        "; a comment\n"
        "[kafka-topic]\n"
        "message.timeout.ms = 60000\n"
    )
    run = fastcapa("-r", str(AFS), "-t", topic, "-c", str(ini), "-k", kafka.bootstrap)
    assert run.status == 0, run.stderr  # -k won over the file's dead bootstrap.servers
    assert len(read_topic(kafka.bootstrap, topic)) == 601

    # A quiet live capture lasts long enough for librdkafka's statistics
    # (every 50 ms, from the file) to name each producer's client.id.
    quiet = ["-i", "lo", "--filter", "udp port 9", "--duration", "1", "-t", topic]
    from_ini = tmp_path / "ini.jsonl"
    run = fastcapa(*quiet, "-c", str(ini), "-k", kafka.bootstrap, "-s", str(from_ini))
    assert run.status == 0, run.stderr
    assert librdkafka_client_ids(from_ini) == {"from-ini"}
    from_x = tmp_path / "x.jsonl"
    run = fastcapa(
        *quiet, "-c", str(ini), "-k", kafka.bootstrap, "-X", "client.id=from-x", "-s", str(from_x)
    )
    assert run.status == 0, run.stderr
    assert librdkafka_client_ids(from_x) == {"from-x"}

    # The [kafka-topic] section reaches librdkafka too: it judges the value.
    ini.write_text("[kafka-topic]\nacks = banana\n")
    run = fastcapa("-r", str(AFS), "-t", topic, "-c", str(ini), "-k", kafka.bootstrap)
    assert_clean_failure(run, 2)
    assert "acks" in run.stderr


# -- Each failure is one line with a defined status


def _corrupt_part_way(tmp_path: Path) -> Path:
    data = AFS.read_bytes()
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[: len(data) // 2])
    return path


ERRORS = [
    # (id, arguments, exit status, words the line must hold)
    ("missing-interface", ["-i", "fcnosuch0"], 2, "no such interface"),
    ("missing-file", ["-r", "{tmp}/none.pcap"], 2, "none.pcap"),
    ("not-a-capture", ["-r", "{tmp}/text.pcap"], 2, "text.pcap"),
    ("directory", ["-r", "{tmp}"], 2, "cannot read"),
    ("corrupt-part-way", ["-r", "{cut}"], 1, "cut.pcap"),
    ("unknown-property", ["-r", "{afs}", "-X", "no.such.property=1"], 2, "no.such.property"),
    ("invalid-value", ["-r", "{afs}", "-X", "linger.ms=banana"], 2, "linger.ms"),
    ("unknown-property-in-file", ["-r", "{afs}", "-c", "{ini}"], 2, "bogus.setting"),
    ("invalid-filter", ["-i", "lo", "--filter", "udp port banana"], 2, "filter"),
    (
        "long-invalid-filter",
        ["-i", "lo", "--filter", "udp port banana" + " or tcp" * 5000],
        2,
        "unknown port",
    ),
    ("ring-not-power-of-two", ["-i", "lo", "-x", "1000"], 2, "power of two"),
    ("zero-queues", ["-i", "lo", "-q", "0"], 2, "rx-queues"),
    ("both-sources", ["-i", "lo", "-r", "{afs}"], 2, "exactly one of"),
    ("no-source", ["-t", "pcap"], 2, "exactly one of"),
    ("unwritable-stats-json", ["-r", "{afs}", "--stats-json", "/nonexistent/s.jsonl"], 2, "stats"),
    ("unwritable-kafka-stats", ["-r", "{afs}", "-s", "/nonexistent/k.jsonl"], 2, "k.jsonl"),
    ("metrics-port-taken", ["-r", "{afs}", "--metrics-port", "{busy_port}"], 2, "in use"),
    ("dump-missing-topic", ["dump", "-t", "no-such-topic-at-all"], 2, "does not exist"),
    ("dump-bad-time", ["dump", "--from", "yesterday"], 2, "ISO 8601"),
]


@corpus.needed()
@pytest.mark.parametrize(
    ("args", "status", "words"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_each_failure_is_one_line_with_its_status(args, status, words, kafka, tmp_path, fastcapa):
    (tmp_path / "text.pcap").write_text("not a capture\n" * 20)
    ini = tmp_path / "bad.conf"
    ini.write_text("[kafka-global]\nbogus.setting = 1\n")
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        values = {
            "tmp": tmp_path,
            "afs": AFS,
            "cut": _corrupt_part_way(tmp_path),
            "ini": ini,
            "busy_port": busy.getsockname()[1],
        }
        run = fastcapa(*(a.format(**values) for a in args), "-k", kafka.bootstrap)
    if status == 1:  # failed while running: the final table comes before the one error line
        assert run.status == 1 and "Traceback" not in run.stderr, run.stderr
        assert len(run.error_lines) == 1 and words in run.error_lines[0], run.stderr
    else:
        assert_clean_failure(run, status)
        assert words in run.stderr
        assert len(run.stderr) < 400, "an error line an operator can read"


@corpus.needed()
@pytest.mark.parametrize("command", ["capture", "dump"])
def test_unreachable_kafka_is_an_error_after_the_connect_timeout(command, tmp_path, fastcapa):
    if command == "capture":
        args = ["-r", str(AFS), "--connect-timeout", "2"]
    else:
        args = ["dump", "-t", "pcap", "--timeout", "2"]
    started = time.monotonic()
    run = fastcapa(*args, "-k", f"127.0.0.1:{closed_port()}", timeout=60)
    took = time.monotonic() - started
    assert_clean_failure(run, 2)
    assert "cannot reach Kafka" in run.stderr, run.stderr
    # A refused connection is a broker not up yet, not a refusal: tried
    # again until the timeout, then said.
    assert 2 <= took < 30, f"gave up after {took:.1f} s"


# In the child, before the command line runs: every report counts one frame
# more delivered by the first transmit worker than Kafka acknowledged.
SKEW_DELIVERED = """
from fastcapa import stats
collect = stats.Snapshot.collect.__func__
def skewed(cls, queues, ring_fill, workers):
    if workers:
        workers = [{**workers[0], "delivered": workers[0]["delivered"] + 1}, *workers[1:]]
    return collect(cls, queues, ring_fill, workers)
stats.Snapshot.collect = classmethod(skewed)
"""


def test_accounting_that_does_not_add_up_is_one_line_and_exit_1(
    kafka, new_topic, tmp_path, fastcapa
):
    """No honest run breaks the sums of the final report, so the child is
    given figures that count one frame more delivered than Kafka
    acknowledged (SKEW_DELIVERED, put in the snapshot's source; the check
    itself is tested on hand-built figures in test_accounting.py). Every
    frame is still delivered and the final table printed, then one error
    line names the sum that fails, and the exit status is 1; the same run
    without the skew exits 0."""
    from fastcapa_support import capgen

    capture = tmp_path / "small.pcap"
    capgen.generate(str(capture), packets=200, flows=4, size=200, seed=3)
    topic = new_topic(config=KEEP)
    stats = tmp_path / "stats.jsonl"
    args = ["-r", str(capture), "-t", topic, "-k", kafka.bootstrap, "--stats-json", str(stats)]
    run = fastcapa(*args, seam=SKEW_DELIVERED)
    assert run.status == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.error_lines == [
        "fastcapa: error: accounting does not add up: taken in 200 != delivered 201"
        " + rx drops 0 + tx drops 0 + kaf drops 0"
    ], run.stderr
    assert final_table(run.stderr)["kaf"][3] == "201"
    assert reports(stats)[-1]["kaf"]["out"] == 201
    assert len(read_topic(kafka.bootstrap, topic)) == 200
    assert fastcapa(*args).status == 0


# -- statistics


def final_table(stderr: str) -> dict[str, list[str]]:
    """The last table on stderr: stage -> its columns (in, rate, queued, out, rate, drops)."""
    rows: dict[str, list[str]] = {}
    for line in stderr.splitlines():
        fields = line.split()
        if fields and fields[0] in ("[nic]", "[rx]", "[tx]", "[kaf]"):
            rows[fields[0][1:-1]] = fields[1:]
    return rows


@corpus.needed()
def test_final_table_and_json_count_every_record_of_the_file(kafka, new_topic, tmp_path, fastcapa):
    records = len(read_capture(str(AFS)).records)
    topic = new_topic(partitions=2, config=KEEP)
    stats = tmp_path / "stats.jsonl"
    run = fastcapa(
        "-r", str(AFS), "-t", topic, "-k", kafka.bootstrap, "-q", "2", "--stats-json", str(stats)
    )
    assert run.status == 0, run.stderr
    final = reports(stats)[-1]
    assert final["final"]
    assert_accounting(final)
    for stage in ("nic", "rx", "tx", "kaf"):
        assert final[stage]["taken_in"] == records
        assert final[stage]["drops"] == 0
    assert final["kaf"]["out"] == records and final["kaf"]["queued"] == 0
    assert sum(q["taken"] for q in final["queues"]) == records
    table = final_table(run.stderr)
    assert set(table) == {"nic", "rx", "tx", "kaf"}
    for stage, columns in table.items():
        taken_in, _, queued, out, _, drops = columns
        assert int(taken_in) == int(out) == records and int(drops) == 0, (stage, columns)
        assert queued == "-" or int(queued) == 0
    assert len(read_topic(kafka.bootstrap, topic)) == records


def test_every_report_of_a_replay_takes_in_what_it_gives(kafka, new_topic, tmp_path, fastcapa):
    """A replay reported every 10 ms over two queues and three transmit
    workers: in each report, not only the final one, no stage shows more
    frames out and dropped than in. The interval is short so that even a
    fast machine, which replays the file in a fifth of a second, reports
    several times while frames are in flight."""
    from fastcapa_support import capgen

    capture = tmp_path / "big.pcap"
    capgen.generate(str(capture), packets=300_000, flows=64, size=200, seed=4)
    topic = new_topic(partitions=2, config=KEEP)
    stats = tmp_path / "stats.jsonl"
    run = fastcapa(
        "-r", str(capture), "-t", topic, "-k", kafka.bootstrap, "-q", "2", "--tx-workers", "3",
        "--stats-interval", "0.01", "--stats-json", str(stats),
    )  # fmt: skip
    assert run.status == 0, run.stderr
    every = reports(stats)
    final = every[-1]
    assert_accounting(final)
    # In flight: the file has begun to be read and Kafka has not yet
    # acknowledged everything.
    moving = [r for r in every if r["rx"]["taken_in"] > 0 and r["kaf"]["out"] < final["kaf"]["out"]]
    assert len(moving) >= 3, f"{len(moving)} reports while frames moved"
    for report in every:
        assert_no_stage_gives_more_than_it_took(report)


# -- fastcapa dump


def iso(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1e6, UTC).isoformat()


def test_dump_window_from_four_partitions_in_time_order(kafka, new_topic, tmp_path, fastcapa):
    """--from/--to pick exactly the records in the window, written in capture
    time order across 4 partitions; tcpdump and tshark read the file."""
    from fastcapa_support import capgen as gen_capture

    capture = tmp_path / "mix.pcap"
    gen_capture.generate(str(capture), packets=6000, flows=100, size=None, seed=11)
    frames = read_capture(str(capture)).records
    topic = new_topic(partitions=4, config=KEEP)
    run = fastcapa(
        "-r", str(capture), "-t", topic, "-k", kafka.bootstrap, "-q", "2",
        "--partition-by", "flow",
    )  # fmt: skip
    assert run.status == 0, run.stderr
    assert len({r.partition for r in read_topic(kafka.bootstrap, topic)}) == 4

    start, end = frames[1500][0], frames[4499][0]
    window = [f for f in frames if start <= f[0] <= end]
    assert len(window) == 3000
    out = tmp_path / "window.pcap"
    run = fastcapa(
        "dump", "-t", topic, "-k", kafka.bootstrap, "--from", iso(start), "--to", str(end),
        "-o", str(out),
    )  # fmt: skip
    assert run.status == 0, run.stderr
    assert "3000 frames" in run.stderr
    dumped = read_capture(str(out))
    assert dumped.error is None and dumped.linktype == 1
    assert dumped.records == window  # same frames, same times, in time order

    # --count stops early, still in time order from --from.
    head = tmp_path / "head.pcap"
    run = fastcapa(
        "dump", "-t", topic, "-k", kafka.bootstrap, "--from", str(start), "--count", "10",
        "-o", str(head),
    )  # fmt: skip
    assert run.status == 0, run.stderr
    assert read_capture(str(head)).records == window[:10]

    for tool in ("tshark", "tcpdump"):
        assert shutil.which(tool), f"{tool} is not installed (make sysdeps)"
    shark = subprocess.run(
        ["tshark", "-r", str(out), "-T", "fields", "-e", "frame.time_epoch"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shark.returncode == 0, shark.stderr
    complaints = [line for line in shark.stderr.splitlines() if line.strip() and "root" not in line]
    assert not complaints, shark.stderr
    seconds_and_fractions = (t.split(".") for t in shark.stdout.split())
    times = [int(s) * 1_000_000 + int(f[:6].ljust(6, "0")) for s, f in seconds_and_fractions]
    assert times == [ts for ts, _ in window]
    dumped_by_tcpdump = subprocess.run(
        ["tcpdump", "-nr", str(out)], capture_output=True, text=True, timeout=60
    )
    assert dumped_by_tcpdump.returncode == 0, dumped_by_tcpdump.stderr
    assert len(dumped_by_tcpdump.stdout.splitlines()) == 3000


@corpus.needed()
def test_dump_to_stdout_pipes_into_tcpdump(kafka, new_topic, fastcapa):
    topic = new_topic(config=KEEP)
    assert fastcapa("-r", str(AFS), "-t", topic, "-k", kafka.bootstrap).status == 0
    run = fastcapa("dump", "-t", topic, "-k", kafka.bootstrap)
    assert run.status == 0, run.stderr
    assert run.stdout[:4] == struct.pack("<I", 0xA1B2C3D4)
    reader = subprocess.run(
        ["tcpdump", "-nr", "-"], input=run.stdout, capture_output=True, timeout=60
    )
    assert reader.returncode == 0, reader.stderr
    assert len(reader.stdout.splitlines()) == 601


@corpus.needed()
def test_dump_follow_waits_for_new_records(kafka, new_topic, tmp_path, fastcapa):
    """--follow on an empty topic: records produced afterwards are written;
    --count ends it."""
    topic = new_topic(partitions=2, config=KEEP)
    out = tmp_path / "followed.pcap"
    with fastcapa_process(
        "dump", "-t", topic, "-k", kafka.bootstrap, "--follow", "--count", "601", "-o", str(out),
        stderr=subprocess.PIPE, text=True,
    ) as follower:  # fmt: skip
        time.sleep(2)
        assert follower.poll() is None, follower.stderr.read()
        assert fastcapa("-r", str(AFS), "-t", topic, "-k", kafka.bootstrap).status == 0
        _, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    dumped = read_capture(str(out)).records
    assert sorted(dumped) == sorted(read_capture(str(AFS)).records)
    assert [ts for ts, _ in dumped] == sorted(ts for ts, _ in dumped)


@corpus.needed()
def test_dump_shows_progress_on_a_terminal(kafka, new_topic, fastcapa, tmp_path):
    """With stderr on a terminal a long dump says how far it got; on a pipe
    (every other test) it does not."""
    import os
    import pty
    import select
    import signal

    topic = new_topic(config=KEEP)
    assert fastcapa("-r", str(AFS), "-t", topic, "-k", kafka.bootstrap).status == 0
    leader, follower = pty.openpty()
    with fastcapa_process(
        "dump", "-t", topic, "-k", kafka.bootstrap, "--follow", "-o", str(tmp_path / "out.pcap"),
        stderr=follower,
    ) as dump:  # fmt: skip
        os.close(follower)
        seen = b""
        try:
            deadline = time.monotonic() + 30
            while b"601 frames read" not in seen and time.monotonic() < deadline:
                if select.select([leader], [], [], 0.5)[0]:
                    seen += os.read(leader, 4096)
            dump.send_signal(signal.SIGINT)
            dump.wait(30)
        finally:
            os.close(leader)
    assert b"\rfastcapa dump: 601 frames read" in seen, seen
    assert dump.returncode == 0
    assert len(read_capture(str(tmp_path / "out.pcap")).records) == 601
