"""`fastcapa extcap`: the topics as a capture interface of Wireshark, driven
by the real tshark (Debian's 4.0) against a real broker.

Each test has a HOME of its own where `fastcapa extcap --install` put the
launcher (which runs this test run's Python), so tshark finds the interface
as an analyst's would. What tshark captures must be what `fastcapa dump`
writes for the same query; a live view must stop when tshark has its count;
a failure must reach tshark's stderr as fastcapa's one line.

Every tshark runs in a process group of its own (with dumpcap and the
extcap under it), killed when the test is done with it, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Producer

from fastcapa_support.pcapref import read_capture
from fastcapa_support.runner import run_fastcapa

pytestmark = pytest.mark.kafka

KEEP = {"retention.ms": "-1"}  # the records are dated in the past
START_US = 1_700_000_000_000_000  # 2023-11-14T22:13:20Z
TSHARK_TIMEOUT = 30.0


def udp_frame(n: int, dport: int) -> bytes:
    """A 60-byte Ethernet/IPv4/UDP frame numbered `n`, to port `dport`."""
    payload = struct.pack("!4sI", b"FCAP", n).ljust(18, b"\0")
    udp = struct.pack("!HHHH", 1024 + n, dport, 8 + len(payload), 0)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), n & 0xFFFF, 0, 64, 17, 0,
        bytes([10, 0, n >> 8 & 0xFF, n & 0xFF]), bytes([10, 100, 0, 1]),
    )  # fmt: skip
    return b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00" + ip + udp + payload


def produce(bootstrap: str, topic: str, records: list[tuple[int, bytes]]) -> None:
    """fastcapa's records: key = capture time (µs, 8 bytes big-endian), value = frame."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for ts, frame in records:
        producer.produce(topic, key=struct.pack(">Q", ts), value=frame, partition=0)
    assert producer.flush(30) == 0


def group_members(pgid: int) -> list[int]:
    """The processes still in process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            # pid (comm) state ppid pgrp ...: comm may hold spaces, so after ")".
            if int(stat.rpartition(")")[2].split()[2]) == pgid:
                members.append(int(entry.name))
    return members


def error_lines(stderr: str) -> list[str]:
    """tshark's lines that say something went wrong (not its start, not its count)."""
    return [line for line in stderr.splitlines() if "error" in line.lower()]


@dataclass
class Shark:
    """tshark in a HOME where fastcapa's launcher is installed."""

    home: Path
    env: dict[str, str]

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["tshark", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            start_new_session=True,  # its own process group, with dumpcap and the extcap
        )

    def finish(
        self, proc: subprocess.Popen[str], timeout: float = TSHARK_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Waits for tshark; then whatever is left of its group, after a
        short grace, fails the test, and is killed in any case."""
        try:
            out, err = proc.communicate(timeout=timeout)
        finally:
            deadline = time.monotonic() + 5
            while group_members(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            left = group_members(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.returncode is None:
                proc.kill()
                proc.communicate()
        assert not left, f"tshark left processes behind: {left}"
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def run(self, *args: str, timeout: float = TSHARK_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return self.finish(self.start(*args), timeout)

    def capture(self, bootstrap: str, *args: str, **prefs: str) -> list[str]:
        """tshark's options to capture from fastcapa with these preferences."""
        options = ["-i", "fastcapa"]
        for name, value in {"brokers": bootstrap, **prefs}.items():
            options += ["-o", f"extcap.fastcapa.{name}:{value}"]
        return [*options, *args]

    @property
    def launcher(self) -> Path:
        return self.home / ".config" / "wireshark" / "extcap" / "fastcapa"


def shark_env(home: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("XDG_CONFIG_HOME", "WIRESHARK_CONFIG_DIR")
    }
    return {**env, "HOME": str(home), "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def shark(tmp_path) -> Shark:
    """A HOME with fastcapa's launcher installed by `fastcapa extcap --install`."""
    assert shutil.which("tshark"), "tshark is not installed (make sysdeps)"
    home = tmp_path / "home"
    home.mkdir()
    env = shark_env(home)
    run = subprocess.run(
        [sys.executable, "-m", "fastcapa", "extcap", "--install"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    shark = Shark(home, env)
    assert f"installed {shark.launcher}" in run.stdout, run.stdout
    return shark


def topic_records(n: int, step_us: int = 1000, start_us: int = START_US) -> list[tuple[int, bytes]]:
    """n records, one in five to UDP port 53."""
    return [(start_us + i * step_us, udp_frame(i, 53 if i % 5 == 0 else 9000)) for i in range(n)]


def test_install_lists_the_interface_and_uninstall_removes_it(shark, tmp_path):
    text = shark.launcher.read_text()
    assert text.startswith("#!/bin/sh\n") and f"exec {sys.executable} -m fastcapa extcap" in text
    assert os.access(shark.launcher, os.X_OK)
    listed = shark.run("-D")
    assert listed.returncode == 0, listed.stderr
    assert "fastcapa (fastcapa: Kafka topics)" in listed.stdout, listed.stdout

    # What Wireshark asks before a capture, through the launcher.
    config = subprocess.run(
        [shark.launcher, "--extcap-config", "--extcap-interface", "fastcapa"],
        capture_output=True, text=True, env=shark.env, timeout=30,
    )  # fmt: skip
    calls = [line.split("{call=")[1].split("}")[0] for line in config.stdout.splitlines()]
    assert {"--brokers", "--topics", "--from", "--to", "--live", "--noindex"} <= set(calls)
    assert all(call.count("-") == 2 for call in calls), calls  # one word: the preference's name

    # A file of someone else's by that name is left alone.
    other = tmp_path / "other"
    other.mkdir()
    (other / "fastcapa").write_text("#!/bin/sh\necho mine\n")
    refused = run_fastcapa("extcap", "--install", "--extcap-folder", str(other), env=shark.env)
    assert refused.status == 2 and "not fastcapa's launcher" in refused.stderr, refused.stderr
    assert (other / "fastcapa").read_text() == "#!/bin/sh\necho mine\n"

    removed = run_fastcapa("extcap", "--uninstall", env=shark.env)
    assert removed.status == 0, removed.stderr
    assert not shark.launcher.exists()
    listed = shark.run("-D")
    assert "fastcapa" not in listed.stdout, listed.stdout


def test_tshark_reads_two_topics_in_capture_time_order(kafka, new_topic, shark, tmp_path):
    east, west = new_topic(config=KEEP), new_topic(config=KEEP)
    records = topic_records(40)
    produce(kafka.bootstrap, east, records[0::2])
    produce(kafka.bootstrap, west, records[1::2])
    out = tmp_path / "out.pcapng"
    done = shark.run(*shark.capture(kafka.bootstrap, "-w", str(out), topics=f"{east},{west}"))
    assert done.returncode == 0, done.stderr
    assert "Error" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    capture = read_capture(str(out))
    assert capture is not None and capture.error is None
    assert capture.records == records
    names = shark.run("-r", str(out), "-T", "fields", "-e", "frame.interface_name")
    assert names.stdout.split() == [east, west] * 20, names.stdout


def test_a_window_and_a_filter_give_what_fastcapa_dump_gives(kafka, new_topic, shark, tmp_path):
    topic = new_topic(config=KEEP)
    records = topic_records(200)
    produce(kafka.bootstrap, topic, records)
    start, end = START_US + 30_000, START_US + 150_000
    start_iso = "2023-11-14T22:13:20.030000Z"  # the same time, as an analyst types it
    out = tmp_path / "shark.pcapng"
    # The broker from a settings file: an empty Brokers field leaves it to the file.
    settings = tmp_path / "kafka.ini"
    settings.write_text(f"[kafka-global]\nbootstrap.servers = {kafka.bootstrap}\n")
    prefs = {"brokers": "", "config": str(settings), "topics": topic}
    prefs |= {"from": start_iso, "to": str(end)}
    done = shark.run(*shark.capture(kafka.bootstrap, "-f", "udp port 53", "-w", str(out), **prefs))
    assert done.returncode == 0, done.stderr
    reference = tmp_path / "dump.pcap"
    dumped = run_fastcapa(
        "dump", "-t", topic, "-k", kafka.bootstrap, "-o", str(reference),
        "--from", str(start), "--to", str(end), "--filter", "udp port 53",
    )  # fmt: skip
    assert dumped.status == 0, dumped.stderr
    expected = read_capture(str(reference))
    got = read_capture(str(out))
    assert expected is not None and got is not None
    assert got.records == expected.records
    assert got.records == [(ts, f) for ts, f in records if start <= ts <= end and f[37] == 53]


def test_a_live_view_shows_new_records_and_stops_at_tsharks_count(
    kafka, new_topic, shark, tmp_path
):
    topic = new_topic()
    out = tmp_path / "live.pcapng"
    # From a minute back: a value that starts with a dash, as Wireshark passes it.
    prefs = {"topics": topic, "live": "true", "from": "-1m"}
    proc = shark.start(*shark.capture(kafka.bootstrap, "-c", "5", "-w", str(out), **prefs))
    sent: list[tuple[int, bytes]] = []
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "linger.ms": 0})
    try:
        deadline = time.monotonic() + TSHARK_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            ts = time.time_ns() // 1000
            frame = udp_frame(len(sent), 9000)
            producer.produce(topic, key=struct.pack(">Q", ts), value=frame, partition=0)
            producer.flush(5)
            sent.append((ts, frame))
            time.sleep(0.2)
    finally:
        done = shark.finish(proc, timeout=10)
    assert done.returncode == 0, done.stderr
    assert "Error" not in done.stderr, done.stderr
    got = read_capture(str(out))
    assert got is not None and got.records == sent[:5]


@pytest.mark.parametrize(
    ("prefs", "words"),
    [
        ({"brokers": "127.0.0.1:1", "timeout": "2"}, "cannot reach Kafka"),
        ({"topics": "no-such-topic-here"}, "does not exist"),
        ({"from": "yesterday"}, "From: expected"),
        ({"topics": "a,a"}, "named twice"),
    ],
    ids=["unreachable-broker", "unknown-topic", "bad-time", "topic-twice"],
)
def test_a_failure_is_one_line_on_tsharks_stderr(prefs, words, kafka, topic, shark):
    prefs = {"topics": topic, **prefs}
    started = time.monotonic()
    done = shark.run(*shark.capture(kafka.bootstrap, "-c", "1", **prefs))
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    lines = error_lines(done.stderr)
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("tshark: Error by extcap pipe: fastcapa: error: "), lines
    assert words in lines[0], lines
    assert time.monotonic() - started < 20


def test_a_bad_capture_filter_is_one_line_on_tsharks_stderr(kafka, topic, shark):
    done = shark.run(
        *shark.capture(kafka.bootstrap, "-c", "1", "-f", "udp port banana", topics=topic)
    )
    assert done.returncode != 0
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and "invalid filter" in lines[0], done.stderr


def test_the_filter_check_answers_on_stdout(shark):
    def check(expr: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [shark.launcher, "--extcap-interface", "fastcapa", "--extcap-capture-filter", expr],
            capture_output=True, text=True, env=shark.env, timeout=30,
        )  # fmt: skip

    bad = check("udp port banana")
    assert bad.returncode == 0 and bad.stderr == ""
    assert bad.stdout.count("\n") == 1 and "banana" in bad.stdout, bad.stdout
    for good in ("udp port 53", "vlan and tcp", ""):
        answer = check(good)
        assert (answer.returncode, answer.stdout, answer.stderr) == (0, "", ""), good
