"""The command line as an operator runs it, and the checks every test makes
of its outcome: one clear line on failure, and the accounting sums."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fastcapa_support import pcapref


@dataclass
class Run:
    status: int
    stdout: bytes
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if "error" in line]


def run_fastcapa(
    *args: str, timeout: float = 120, stdin: bytes | None = None, env: dict | None = None
) -> Run:
    """Runs the installed `fastcapa` command as an operator would; `env`
    adds to (or overrides) the environment."""
    proc = subprocess.run(
        [sys.executable, "-m", "fastcapa", *args],
        capture_output=True,
        timeout=timeout,
        input=stdin,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    return Run(proc.returncode, proc.stdout, proc.stderr.decode(errors="replace"))


def assert_clean_failure(run: Run, status: int) -> None:
    """A failure is exactly one line on stderr, the right status, no traceback."""
    assert run.status == status, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr


def assert_accounting(report: dict) -> None:
    """The sums of SPEC §2, checked on a --stats-json report."""
    nic, rx, tx, kaf = (report[s] for s in ("nic", "rx", "tx", "kaf"))
    assert nic["taken_in"] == rx["taken_in"] + nic["drops"]
    assert rx["taken_in"] == kaf["out"] + rx["drops"] + tx["drops"] + kaf["drops"]


class Probe:
    """`fastcapa -i` running in the background, as an operator starts it."""

    def __init__(
        self, iface: str, topic: str, bootstrap: str, tmp: Path, *args: str, prefix=()
    ) -> None:
        """`prefix`: a command to start it under, e.g. setpriv with other credentials."""
        self.stats = tmp / f"stats-{topic}.jsonl"
        self.proc = subprocess.Popen(
            [
                *prefix,
                sys.executable,
                "-m",
                "fastcapa",
                "-i",
                iface,
                "-t",
                topic,
                "-k",
                bootstrap,
                "--stats-json",
                str(self.stats),
                "--stats-interval",
                "1",
                *args,
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        banner = self.proc.stderr.readline()
        assert "capturing on" in banner, banner + self.proc.stderr.read()

    def stop(self, timeout: float = 60) -> tuple[int, str, dict]:
        """SIGTERM, then the exit status, stderr and the final report."""
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=timeout)
        reports = [json.loads(line) for line in self.stats.read_text().splitlines()]
        assert reports[-1]["final"], err
        return self.proc.returncode, err, reports[-1]

    def wait_taken(self, frames: int, timeout: float = 30) -> None:
        """Until the probe's reports say the kernel saw `frames` frames."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.stats.read_text().splitlines() if self.stats.exists() else []
            if lines and json.loads(lines[-1])["nic"]["taken_in"] >= frames:
                return
            time.sleep(0.2)


def write_capture(path: Path, frames: list[bytes]) -> str:
    """A pcap file of `frames`, timestamped 0, 1, 2... µs (for a sender)."""
    return pcapref.write_capture(str(path), enumerate(frames))


def udp_frame(
    payload: bytes, dport: int = 9000, sport: int = 1234, src: int = 1, vlan: int | None = None
) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(udp),
            1,
            0,
            64,
            17,
            0,
            bytes([10, 0, 0, src]),
            bytes([10, 0, 0, 200]),
        )
        + udp
    )
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    return b"\x02\0\0\0\0\xc8" + bytes([2, 0, 0, 0, 0, src]) + tag + b"\x08\x00" + ip
