"""Shared fixtures: the real Kafka broker (tools/kafka) and the CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from kafka_fixture import *  # noqa: F403

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus" / "tcpdump"


@dataclass
class Run:
    status: int
    stdout: bytes
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if "error" in line]


def run_fastcapa(*args: str, timeout: float = 120, stdin: bytes | None = None) -> Run:
    """Runs the installed `fastcapa` command as an operator would."""
    proc = subprocess.run(
        [sys.executable, "-m", "fastcapa", *args],
        capture_output=True,
        timeout=timeout,
        input=stdin,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return Run(proc.returncode, proc.stdout, proc.stderr.decode(errors="replace"))


@pytest.fixture
def fastcapa():
    return run_fastcapa


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
