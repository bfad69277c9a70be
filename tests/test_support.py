"""The tests' own helpers (fastcapa_support), where a mistake in them would
let other tests pass or fail for the wrong reason: a process left running
by a failed test, a frame builder that says more than it built."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
from pathlib import Path

from fastcapa_support import child_env, processes
from fastcapa_support.frames import udp_frame


def alive(pid: int) -> bool:
    """Whether `pid` is a process that has not exited (a zombie has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_failed_test_leaves_no_process_for_the_next(tmp_path):
    """The first test starts a process and fails before stopping it; by the
    time the second runs, the process is gone (the `no_process_left`
    fixture), and nothing warns of a process still running."""
    pid_file = tmp_path / "pid"
    (tmp_path / "conftest.py").write_text("from fastcapa_support.fixtures import *  # noqa\n")
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent(f"""
            from pathlib import Path
            from fastcapa_support import processes

            def test_starts_then_fails():
                proc = processes.start(["sleep", "600"])
                Path({str(pid_file)!r}).write_text(str(proc.pid))
                assert False, "failed before stopping it"

            def test_next():
                pid = int(Path({str(pid_file)!r}).read_text())
                assert not Path(f"/proc/{{pid}}").exists(), "still there"
        """)
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error",
         "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=child_env(), cwd=tmp_path,
    )  # fmt: skip
    assert "1 failed, 1 passed" in run.stdout, run.stdout + run.stderr
    assert not alive(int(pid_file.read_text()))


def test_running_kills_at_the_end_of_the_block_however_it_ends():
    try:
        with processes.running(["sleep", "600"], stdout=subprocess.PIPE) as proc:
            raise KeyboardInterrupt  # the worst way out
    except KeyboardInterrupt:
        pass
    assert proc.returncode is not None and proc.stdout.closed
    assert not alive(proc.pid)


def test_udp_frame_is_what_it_says():
    frame = udp_frame(b"payload!", dport=53, sport=4000, src=7, vlan=100)
    assert len(frame) == 14 + 4 + 20 + 8 + 8
    assert frame[:6] == b"\x02\0\0\0\0\xc8" and frame[6:12] == b"\x02\0\0\0\0\x07"
    assert struct.unpack("!HH", frame[12:16]) == (0x8100, 100)
    ip = frame[18:38]
    assert struct.unpack("!H", frame[16:18])[0] == 0x0800
    assert ip[0] == 0x45 and struct.unpack("!H", ip[2:4])[0] == 36 and ip[9] == 17
    assert ip[12:16] == bytes([10, 0, 0, 7]) and ip[16:20] == bytes([10, 0, 0, 200])
    assert struct.unpack("!HHH", frame[38:44]) == (4000, 53, 16)
    assert frame[46:] == b"payload!"
