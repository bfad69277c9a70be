"""The DPDK receive backend (`--dpdk`) on the real EAL, with virtual devices:
`net_af_packet` on a veth pair, `net_pcap` reading corpus files, `net_af_xdp`
where the kernel lets an XDP program load, and the failures an operator can
make. The EAL starts once per process, so every case runs fastcapa as a
process of its own."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from fastcapa import _fastcapa
from fastcapa_support import capgen as gen_capture
from fastcapa_support import corpus
from fastcapa_support.frames import udp_frame
from fastcapa_support.kafka_read import read_topic
from fastcapa_support.netns import VethPair, netns_available
from fastcapa_support.pcapref import read_capture
from fastcapa_support.runner import (
    Probe,
    assert_accounting,
    assert_clean_failure,
    assert_stream_delivered,
    start_fastcapa,
    write_capture,
)

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(
        not _fastcapa.DPDK,
        reason="the extension was built without the dpdk feature (make build turns it on)",
    ),
]

needs_netns = pytest.mark.skipif(not netns_available(), reason="needs root and network namespaces")

# No hugepages and no PCI bus here: the EAL takes ordinary memory and only
# virtual devices. fastcapa adds its own runtime directory, lcore and log level.
EAL = "--no-huge -m 256 --no-pci"
KEEP = {"retention.ms": "-1"}


def dpdk_source(device: str, eal: str = EAL) -> tuple[str, ...]:
    return ("--dpdk", device, f"--eal={eal}")


def test_af_packet_two_queues_every_frame_once_in_flow_order(kafka, new_topic, tmp_path):
    if not netns_available():
        pytest.skip("needs root and network namespaces")
    capture = tmp_path / "flows.pcap"
    gen_capture.generate(str(capture), packets=6000, flows=64, size=None, seed=13)
    topic = new_topic(partitions=4)
    with VethPair(queues=2) as veth:
        device = f"net_af_packet0,iface={veth.probe_side},qpairs=2"
        probe = Probe(
            veth.probe_side,
            topic,
            kafka.bootstrap,
            tmp_path,
            "-q",
            "2",
            "-d",
            "1024",
            source=dpdk_source(device),
        )
        assert "timestamps: " in probe.stderr()
        sent = veth.send(str(capture), rate=4000)
        probe.wait_taken(sent["sent"])
        status, err, report = probe.stop()
    assert status == 0, err
    assert_accounting(report)
    frames = [f for _, f in read_capture(str(capture)).records]
    assert_stream_delivered(kafka.bootstrap, topic, frames, sent, report)


PCAP_FILES = ["afs.pcap", "pim-packet-assortment.pcap"]


@corpus.needed()
@pytest.mark.parametrize("name", PCAP_FILES)
def test_net_pcap_gives_what_a_replay_gives(name, kafka, new_topic, fastcapa, tmp_path):
    """A corpus file read by DPDK's pcap driver holds in Kafka the same
    key/value multiset as `fastcapa -r` of it: the driver's timestamps are
    the file's record times, and big frames (chained mbufs) arrive whole."""
    path = corpus.file(name)
    reference = read_capture(str(path))
    assert reference is not None and reference.error is None and reference.linktype == 1
    count = len(reference.records)
    replayed, captured = new_topic(config=KEEP), new_topic(config=KEEP)
    run = fastcapa("-r", str(path), "-t", replayed, "-k", kafka.bootstrap)
    assert run.status == 0, run.stderr
    stats = tmp_path / "stats.jsonl"
    run = fastcapa(
        *dpdk_source(f"net_pcap0,rx_pcap={path}"),
        "-t",
        captured,
        "-k",
        kafka.bootstrap,
        "--count",
        str(count),
        "-d",
        "512",
        "--stats-json",
        str(stats),
    )
    assert run.status == 0, run.stderr
    assert "timestamps: the driver's receive timestamp" in run.stderr, run.stderr
    report = [line for line in stats.read_text().splitlines() if '"final": true' in line]
    final = json.loads(report[-1])
    assert_accounting(final)
    assert final["kaf"]["out"] == count
    want = Counter((r.key, r.value) for r in read_topic(kafka.bootstrap, replayed))
    got = Counter((r.key, r.value) for r in read_topic(kafka.bootstrap, captured))
    assert len(want) > 0 and got == want


def test_filter_and_snaplen_on_the_worker(kafka, new_topic, fastcapa, tmp_path):
    """--filter runs libpcap's BPF on each frame in the worker, --snaplen cuts."""
    path = corpus.file("afs.pcap")
    if not path.exists():
        pytest.skip(corpus.missing_reason() or f"no {path}")
    reference = read_capture(str(path))
    udp = [
        f for _, f in reference.records if len(f) > 23 and f[12:14] == b"\x08\x00" and f[23] == 17
    ]
    assert 0 < len(udp) < len(reference.records)
    topic = new_topic(config=KEEP)
    run = fastcapa(
        *dpdk_source(f"net_pcap0,rx_pcap={path}"),
        "-t",
        topic,
        "-k",
        kafka.bootstrap,
        "--filter",
        "ip and udp",
        "--snaplen",
        "64",
        "--duration",
        "3",
    )
    assert run.status == 0, run.stderr
    assert "the filter runs in user space" in run.stderr
    values = sorted(r.value for r in read_topic(kafka.bootstrap, topic))
    assert values == sorted(f[:64] for f in udp)


def test_built_without_dpdk_or_bad_input_is_one_line(kafka, fastcapa, tmp_path):
    """Each is one line on stderr and exit 2: a device that does not exist,
    more queues than the port has, an EAL that cannot start, --eal alone."""
    cases = [
        (dpdk_source("net_nosuch0"), "net_nosuch0"),
        (dpdk_source("net_null0", eal="--no-such-eal-option"), "EAL"),
        (("--eal", EAL, "-r", "x.pcap"), "--eal goes with --dpdk"),
        (dpdk_source("net_null0", eal="'unbalanced"), "--eal"),
        (("-i", "lo", *dpdk_source("net_null0")), "exactly one of"),
        (("-d", "70000", *dpdk_source("net_null0")), "at most 65535 with --dpdk"),
    ]
    for args, words in cases:
        run = fastcapa(*args, "-k", kafka.bootstrap, "-t", "pcap", timeout=60)
        assert_clean_failure(run, 2)
        assert words in run.stderr, run.stderr
    # A port that cannot give the queues asked for: net_null gives as many
    # as asked, net_af_packet as many as its qpairs.
    if netns_available():
        with VethPair(queues=1) as veth:
            run = fastcapa(
                "-q",
                "2",
                *dpdk_source(f"net_af_packet0,iface={veth.probe_side}"),
                "-k",
                kafka.bootstrap,
                timeout=60,
            )
        assert_clean_failure(run, 2)
        assert "gives at most 1 receive queue(s), 2 asked (-q)" in run.stderr, run.stderr


@needs_netns
def test_link_down_and_up_is_reported(kafka, new_topic, tmp_path):
    """A link set down and up is said once each on stderr, as on -i, and
    costs nothing sent while it was up. (DPDK 22.11's net_af_packet always
    says up; fastcapa asks the interface itself for that driver.)"""
    before, after = tmp_path / "before.pcap", tmp_path / "after.pcap"
    gen_capture.generate(str(before), packets=300, flows=4, size=100, seed=4)
    gen_capture.generate(str(after), packets=300, flows=4, size=120, seed=5)
    topic = new_topic()
    with VethPair(queues=1) as veth:
        probe = Probe(
            veth.probe_side,
            topic,
            kafka.bootstrap,
            tmp_path,
            "-d",
            "512",
            source=dpdk_source(f"net_af_packet0,iface={veth.probe_side}"),
        )
        try:
            veth.send(str(before), rate=2000)
            probe.wait_taken(300)
            veth.set_probe_link(up=False)
            probe.wait_stderr("net_af_packet0 is down; waiting for it to come back", 10)
            veth.set_probe_link(up=True)
            probe.wait_stderr("net_af_packet0 is up again", 10)
            veth.send(str(after), rate=2000)
            probe.wait_taken(600)
        finally:
            status, err, report = probe.stop()
    assert status == 0, err
    assert err.count("is down; waiting") == 1 and err.count("is up again") == 1, err
    assert_accounting(report)
    frames = [f for path in (before, after) for _, f in read_capture(str(path)).records]
    assert Counter(r.value for r in read_topic(kafka.bootstrap, topic)) == Counter(frames)


@needs_netns
def test_af_xdp_on_a_veth(kafka, new_topic, tmp_path):
    capture = tmp_path / "xdp.pcap"
    gen_capture.generate(str(capture), packets=500, flows=8, size=200, seed=3)
    topic = new_topic()
    with VethPair(queues=1) as veth:
        device = f"net_af_xdp0,iface={veth.probe_side},start_queue=0,queue_count=1"
        try:
            probe = Probe(
                veth.probe_side,
                topic,
                kafka.bootstrap,
                tmp_path,
                "-d",
                "512",
                source=dpdk_source(device),
            )
        except AssertionError as e:
            # Only the XDP socket itself may be refused; anything else fails.
            said = str(e).splitlines()[-1]
            if "xdp socket" not in said:
                raise
            pytest.skip(f"net_af_xdp cannot open its XDP socket on a veth here: {said}")
        sent = veth.send(str(capture), rate=2000)
        probe.wait_taken(sent["sent"])
        status, err, report = probe.stop()
    assert status == 0, err
    assert_accounting(report)
    frames = [f for _, f in read_capture(str(capture)).records]
    assert Counter(r.value for r in read_topic(kafka.bootstrap, topic)) == Counter(frames)


def test_two_probes_side_by_side(kafka, new_topic, fastcapa, tmp_path):
    """Each probe has its own EAL runtime directory: two run at once, and
    neither leaves it behind."""
    procs = [
        start_fastcapa(
            *dpdk_source(f"net_null{i},size=64"),
            *("-t", new_topic(), "-k", kafka.bootstrap, "--count", "20000", "-d", "512"),
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + 120
    for proc in procs:
        _, err = proc.communicate(timeout=max(1, deadline - time.monotonic()))
        assert proc.returncode == 0, err
        # Nothing left behind: no shared config, the runtime directory gone.
        assert not Path(f"/var/run/dpdk/fastcapa-{proc.pid}").exists()


def threads_holding(pid: int) -> dict[str, tuple[str, int]]:
    """Each thread of `pid` -> (its uid line, its effective capabilities)."""
    held = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            lines = dict(line.split(":", 1) for line in (task / "status").read_text().splitlines())
        except FileNotFoundError:
            continue
        name = f"{lines['Name'].strip()}/{task.name}"
        held[name] = (lines["Uid"].split()[0], int(lines["CapEff"], 16))
    return held


@needs_netns
def test_user_leaves_no_thread_privileged(kafka, new_topic, tmp_path):
    """With --user every thread, the EAL's own included, runs as that user
    with no capability (a change of user applies to every thread); frames
    still flow."""
    import pwd

    nobody = pwd.getpwnam("nobody")
    shared = Path(tempfile.mkdtemp(prefix="fastcapa-dpdk-", dir="/tmp"))
    shared.chmod(0o1777)
    capture = tmp_path / "few.pcap"
    gen_capture.generate(str(capture), packets=200, flows=4, size=100, seed=8)
    topic = new_topic()
    try:
        with VethPair(queues=1) as veth:
            probe = Probe(
                veth.probe_side,
                topic,
                kafka.bootstrap,
                shared,
                "-d",
                "512",
                "--user",
                "nobody",
                source=dpdk_source(f"net_af_packet0,iface={veth.probe_side}"),
            )
            try:
                held = threads_holding(probe.proc.pid)
                veth.send(str(capture), rate=2000)
                probe.wait_taken(200)
            finally:
                status, err, report = probe.stop()
    finally:
        subprocess.run(["rm", "-rf", str(shared)], check=False)
    assert status == 0, err
    assert_accounting(report)
    assert report["kaf"]["out"] == 200
    assert any(name.startswith("eal-intr") for name in held), held
    assert all(v == (str(nobody.pw_uid), 0) for v in held.values()), held


@needs_netns
def test_vlan_tags_and_big_frames_arrive_as_sent(kafka, new_topic, tmp_path):
    """The kernel takes the outer tag off before net_af_packet's socket sees
    the frame; the driver says so and the tag is put back, as on -i."""
    frames = [udp_frame(b"t" * 60, vlan=100), udp_frame(b"q" * 1400, vlan=4000, src=3)]
    frames += [udp_frame(b"u" * size, src=9) for size in (18, 500, 1472)]
    topic = new_topic()
    with VethPair(queues=1) as veth:
        probe = Probe(
            veth.probe_side,
            topic,
            kafka.bootstrap,
            tmp_path,
            "-d",
            "512",
            source=dpdk_source(f"net_af_packet0,iface={veth.probe_side}"),
        )
        veth.send(write_capture(tmp_path / "tagged.pcap", frames))
        probe.wait_taken(len(frames))
        status, err, report = probe.stop()
    assert status == 0, err
    assert_accounting(report)
    assert Counter(r.value for r in read_topic(kafka.bootstrap, topic)) == Counter(frames)


@needs_netns
def test_driver_drops_are_counted_at_nic(kafka, new_topic, tmp_path):
    """net_af_packet's socket ring holds 64 frames (framecnt) and the probe
    is stopped (SIGSTOP) while 2,000 arrive: the kernel drops what the ring
    cannot hold, the driver reports it as `imissed`, and [nic] counts it.
    Every frame sent is taken or dropped there; what was taken is in Kafka."""
    import os
    import signal

    capture = tmp_path / "burst.pcap"
    gen_capture.generate(str(capture), packets=2000, flows=8, size=1000, seed=6)
    topic = new_topic()
    with VethPair(queues=1) as veth:
        device = f"net_af_packet0,iface={veth.probe_side},framecnt=64,blocksz=4096,framesz=2048"
        probe = Probe(
            veth.probe_side, topic, kafka.bootstrap, tmp_path, "-d", "64",
            source=dpdk_source(device),
        )  # fmt: skip
        try:
            os.kill(probe.proc.pid, signal.SIGSTOP)
            try:
                veth.send(str(capture))
            finally:
                os.kill(probe.proc.pid, signal.SIGCONT)
            probe.wait_taken(2000)
            status, err, report = probe.stop()
        finally:
            probe.kill()
    assert status == 0, err
    assert_accounting(report)
    nic = report["nic"]
    assert nic["taken_in"] == 2000 and nic["drops"] > 0, (nic, err[-1500:])
    assert report["kaf"]["out"] == 2000 - nic["drops"]
    assert len(read_topic(kafka.bootstrap, topic)) == report["kaf"]["out"]
