"""Least privilege: once its sockets are open the probe
holds no capability, and with --user it no longer runs as root: nor as
root's group, nor with any supplementary group it was started with. Each
thread is checked in /proc, because Linux keeps capabilities per thread."""

from __future__ import annotations

import pwd
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from fastcapa_support import corpus
from fastcapa_support.corpus import CORPUS
from fastcapa_support.frames import udp_frame
from fastcapa_support.kafka_read import read_topic
from fastcapa_support.netns import VethPair, netns_available
from fastcapa_support.runner import (
    Probe,
    Run,
    assert_accounting,
    assert_clean_failure,
    write_capture,
)

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.netns,
    pytest.mark.skipif(not netns_available(), reason="needs root and network namespaces"),
]

NOBODY = pwd.getpwnam("nobody")
CAPS = "+net_raw,+net_admin"
# nobody, holding only the two capabilities a live capture needs, as a
# systemd unit's AmbientCapabilities= would give them.
AS_NOBODY_WITH_CAPS = [
    "setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups",
    f"--inh-caps={CAPS}", f"--ambient-caps={CAPS}",
]  # fmt: skip
AS_NOBODY = ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups"]
# Root with supplementary groups (disk, adm, staff), as a login shell or a
# service manager may start it: --user must leave none of them behind.
AS_ROOT_IN_GROUPS = ["setpriv", "--groups=6,4,50"]


def threads_credentials(pid: int) -> list[dict[str, str]]:
    """Uid, Gid and capability sets of every thread of `pid`."""
    seen = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
        fields = {}
        for line in status.splitlines():
            name, _, value = line.partition(":")
            if name in ("Name", "Uid", "Gid", "Groups", "CapEff", "CapPrm", "CapAmb", "NoNewPrivs"):
                fields[name] = value.strip()
        seen.append(fields)
    return seen


def assert_holds_nothing(pid: int, uid: int, gid: int) -> None:
    threads = threads_credentials(pid)
    assert len(threads) > 3  # main, receive worker(s), transmit worker, librdkafka's
    for t in threads:
        assert t["Uid"].split() == [str(uid)] * 4, t
        assert t["Gid"].split() == [str(gid)] * 4, t
        assert t["Groups"] == "", t
        assert int(t["CapEff"], 16) == 0 and int(t["CapPrm"], 16) == 0, t
        assert int(t["CapAmb"], 16) == 0, t


@pytest.fixture
def shared_dir():
    """A folder every user may write to (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="fastcapa-priv-", dir="/tmp"))
    path.chmod(0o1777)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


FRAMES = [udp_frame(b"p" * 100, src=i) for i in range(1, 101)]


@corpus.needed()
@pytest.mark.parametrize("how", ["root-with-user", "nobody-with-capabilities"])
def test_capture_then_hold_no_privilege(how, kafka, new_topic, shared_dir):
    """Frames still flow after the probe gave up what it no longer needs."""
    if how == "root-with-user":
        prefix, extra = AS_ROOT_IN_GROUPS, ["--user", "nobody"]
    else:
        prefix, extra = AS_NOBODY_WITH_CAPS, []
    topic = new_topic()
    with VethPair() as veth:
        probe = Probe(
            veth.probe_side, topic, kafka.bootstrap, shared_dir, "-q", "2", *extra,
            "-s", str(shared_dir / "librdkafka.jsonl"), prefix=prefix,
        )  # fmt: skip
        try:
            assert_holds_nothing(probe.proc.pid, NOBODY.pw_uid, NOBODY.pw_gid)
            veth.send(write_capture(shared_dir / "frames.pcap", FRAMES))
            probe.wait_taken(len(FRAMES))
        finally:
            status, err, report = probe.stop()
    assert status == 0, err
    assert_accounting(report)
    assert Counter(r.value for r in read_topic(kafka.bootstrap, topic)) == Counter(FRAMES)


def fastcapa_as(prefix: list[str], *args: str) -> Run:
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "fastcapa", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Run(proc.returncode, proc.stdout.encode(), proc.stderr)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-i", "lo"], "CAP_NET_RAW"),
        (["-r", str(CORPUS / "afs.pcap"), "--user", "nobody"], "start as root"),
    ],
    ids=["live-without-capabilities", "user-switch-without-root"],
)
def test_missing_privilege_is_named(args, words, kafka):
    run = fastcapa_as(AS_NOBODY, *args, "-k", kafka.bootstrap)
    assert_clean_failure(run, 2)
    assert words in run.stderr, run.stderr


@corpus.needed()
@pytest.mark.parametrize("user", ["no-such-user-here", "²", "99999999999999999999"])
def test_unknown_user_is_a_usage_error(user, kafka, fastcapa):
    afs = str(CORPUS / "afs.pcap")
    run = fastcapa("-r", afs, "--user", user, "-k", kafka.bootstrap)
    assert_clean_failure(run, 2)
    assert user in run.stderr
