"""Settings and command line, without Kafka: precedence, validation, one-line errors."""

from __future__ import annotations

import pytest

from fastcapa.config import CaptureSettings, default_tx_workers, parse_cpus
from fastcapa.errors import ConfigError
from fastcapa.librdkafka import kafka_settings, parse_override, read_ini
from fastcapa.pipeline import assign_lanes
from fastcapa.sizing import parse_size
from fastcapa_support.runner import assert_clean_failure


def test_precedence_ini_then_x_then_k(tmp_path):
    ini = tmp_path / "fastcapa.conf"
    ini.write_text(
        "# comment\n[kafka-global]\nclient.id = from-ini\nbootstrap.servers = ini:9092\n"
        "linger.ms = 7\n[kafka-topic]\nacks = all\n"
    )
    merged = kafka_settings(str(ini), ["client.id=from-x", "bootstrap.servers=x:1"], "k:2")
    assert merged["client.id"] == "from-x"
    assert merged["linger.ms"] == "7"
    assert merged["acks"] == "all"
    assert merged["bootstrap.servers"] == "k:2"
    assert kafka_settings(str(ini), [], None)["bootstrap.servers"] == "ini:9092"
    assert kafka_settings(None, [], None)["bootstrap.servers"] == "localhost:9092"


@pytest.mark.parametrize(
    "text",
    ["[kafka-global]\nfoo\n", "[other]\na = b\n", "a = b\n", "[kafka-global]\na = 1\na = 2\n"],
    ids=["no-value", "unknown-section", "no-section", "duplicate"],
)
def test_bad_ini_is_refused(text, tmp_path):
    ini = tmp_path / "bad.conf"
    ini.write_text(text)
    with pytest.raises(ConfigError) as err:
        read_ini(str(ini))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text", ["novalue", "=x", "a b=c", "a=b\nc=d", "bad\r=1"])
def test_bad_override_is_refused(text):
    with pytest.raises(ConfigError):
        parse_override(text)


def test_override_keeps_equals_in_value():
    assert parse_override("sasl.jaas=a=b") == ("sasl.jaas", "a=b")


def test_cpu_lists():
    assert parse_cpus("2-5,8") == [2, 3, 4, 5, 8]
    for bad in ("", "a", "5-2", "-1"):
        with pytest.raises(ConfigError):
            parse_cpus(bad)


def test_lanes_follow_worker_i_serves_ring_i_mod_n():
    assert assign_lanes(2, 3) == [[(0, 0)], [(1, 0)], [(0, 1)]]
    assert assign_lanes(1, 1) == [[(0, 0)]]
    assert assign_lanes(3, 2) == [[(0, 0), (2, 0)], [(1, 0)]]


@pytest.mark.parametrize(
    "args",
    [
        ["-x", "1000", "-r", "x.pcap"],
        ["-q", "0", "-r", "x.pcap"],
        ["-r", "a.pcap", "-i", "eth0"],
        [],
        ["--bogus"],
        ["-r", "x.pcap", "--stats-interval", "soon"],
        ["-r", "x.pcap", "-X", "no-equals"],
        ["-r", "x.pcap", "-c", "/nonexistent/fastcapa.conf"],
        ["dump", "--from", "yesterday"],
        ["dump", "--timeout", "nan"],
        ["dump", "--timeout", "-1"],
        ["dump", "--count", "-3"],
        ["-r", "x.pcap", "--buffer", "lots"],
        ["-r", "x.pcap", "--buffer", "1KiB"],
        ["-r", "x.pcap", "--buffer", "900TiB"],
    ],
)
def test_usage_errors_are_one_line_exit_2(args, fastcapa):
    assert_clean_failure(fastcapa(*args), 2)


@pytest.mark.parametrize(
    ("text", "size"),
    [("2GiB", 2 << 30), ("512MiB", 512 << 20), ("1.5G", 3 << 29), ("10KB", 10_000), ("4096", 4096)],
)
def test_sizes_in_the_operators_words(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("queues", "cores", "workers"),
    [(1, 1, 1), (1, 2, 1), (2, 2, 1), (2, 3, 1), (2, 4, 2), (4, 6, 2), (4, 16, 4), (8, 4, 1)],
)
def test_transmit_workers_default_to_the_cores_left(queues, cores, workers):
    """One per ring where the cores beside the receive workers allow, at
    least one; --tx-workers and --cpus decide where given."""
    assert default_tx_workers(queues, cores) == workers
    given = CaptureSettings(interface="x", read=None, topic="t", kafka={}, rx_queues=queues)
    assert CaptureSettings(**{**given.__dict__, "tx_workers": 3}).workers == 3
    pinned = CaptureSettings(**{**given.__dict__, "cpus": list(range(cores))})
    assert pinned.workers == workers


def test_buffer_sizes_the_producer_queue_by_memory():
    """--buffer is split over the producers; each share bounds its producer's
    memory (frames + librdkafka's ~224 bytes each) with a message limit and a
    byte limit; settings the operator gave by hand win."""
    settings = CaptureSettings(
        interface=None,
        read="x.pcap",
        topic="t",
        kafka={},
        rx_queues=2,
        tx_workers=2,
        buffer=1 << 30,
    )
    per_worker = (1 << 30) // 2
    limits = settings.producer_settings()
    messages = int(limits["queue.buffering.max.messages"])
    kbytes = int(limits["queue.buffering.max.kbytes"])
    assert messages == per_worker // 736
    # At most the budget whatever the frame size: bytes + ~224 per message.
    assert kbytes * 1024 + 224 * messages <= per_worker
    assert kbytes * 1024 + 224 * messages > per_worker * 0.99
    assert messages > 100_000  # librdkafka's default
    mine = CaptureSettings(
        interface=None,
        read="x.pcap",
        topic="t",
        kafka={"queue.buffering.max.messages": "5"},
        buffer=1 << 30,
    )
    assert mine.producer_settings()["queue.buffering.max.messages"] == "5"


def test_help_is_grouped(fastcapa):
    run = fastcapa("--help")
    assert run.status == 0
    text = run.stdout.decode()
    for group in ("source", "pipeline", "Kafka", "output"):
        assert group in text
    assert "default: 2048" in text


def test_systemd_unit_is_valid_and_runs_a_valid_command(tmp_path):
    """contrib/fastcapa@.service: systemd accepts it, and its ExecStart is a
    command line fastcapa accepts (checked with an instance name for %i)."""
    import shlex
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from fastcapa.cli import capture_parser

    unit = (Path(__file__).parents[1] / "contrib" / "fastcapa@.service").read_text()
    lines = unit.replace("\\\n", " ").splitlines()
    settings = dict(line.split("=", 1) for line in lines if "=" in line and line[0] != "#")
    assert settings["User"] == "fastcapa" and settings["NoNewPrivileges"] == "yes"
    assert set(settings["AmbientCapabilities"].split()) == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert settings["CapabilityBoundingSet"] == settings["AmbientCapabilities"]
    command = shlex.split(settings["ExecStart"].replace("%i", "eth1").replace("$FASTCAPA_OPTS", ""))
    assert command[0] == "/opt/fastcapa/bin/fastcapa"
    args = capture_parser().parse_args(command[1:])
    assert args.interface == "eth1" and args.config == "/etc/fastcapa/fastcapa.conf"

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # The unit as installed, with this checkout's fastcapa standing in for /opt's.
    here = Path(sys.executable).parent / "fastcapa"
    (tmp_path / "fastcapa@.service").write_text(unit.replace(command[0], str(here)))
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "fastcapa@eth1.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
