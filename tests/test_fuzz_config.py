"""Property tests (hypothesis) of the settings and the command line, in process.

Whatever an operator or a hostile config file hands fastcapa, the answer is a
validated setting or one `ConfigError` / usage error (exit 2) on one line that
names what is wrong, never another exception, never a hang, never a message
that breaks into two lines in a log.

Bounded for `make test` (FASTCAPA_FUZZ_EXAMPLES examples per property, default
60); run longer on demand, e.g.

    FASTCAPA_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -q tests/test_fuzz_config.py

Each finding of these properties is kept as an explicit example below
(`@example`) or as a plain test in tests/test_hostile.py.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fastcapa import _fastcapa
from fastcapa.cli import capture_parser, settings_from_args
from fastcapa.config import (
    MAX_COUNT,
    MAX_CPU,
    MAX_SECONDS,
    MAX_SNAPLEN,
    CaptureSettings,
    parse_cpus,
)
from fastcapa.errors import ConfigError
from fastcapa.librdkafka import kafka_settings, parse_override, read_ini
from fastcapa.options import capture_time as parse_time

EXAMPLES = int(os.environ.get("FASTCAPA_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None if EXAMPLES > 1000 else 2000,  # a slow example is a finding too
    suppress_health_check=[HealthCheck.too_slow],
    database=None,  # findings are kept as @example, not in a local database
)


def one_line(message: str) -> bool:
    """One line for every reader: str.splitlines also breaks at \\v, \\f,
    \\x1c-\\x1e, \\x85, \\u2028 and \\u2029, not only at \\n."""
    return len(message.splitlines()) == 1 and message.isprintable()


def assert_setting_ok(key: str, value: str) -> None:
    assert key and key.isprintable() and value.isprintable()
    assert not any(ch.isspace() or ch == "=" for ch in key)


# Text that mixes what INI files and -X values are made of with the characters
# that make trouble: line breaks of every kind, NUL, controls, '=', '[', ';'.
tricky = st.sampled_from(
    [*"=[]#; \t\r\n\0\x0b\x0c\x1c\x85\u2028\u2029\x1b\ufeff", "\\", "ü", "\u202e"]
)
ini_text = st.text(
    alphabet=st.one_of(st.sampled_from(string.ascii_letters + string.digits + "._-"), tricky),
    max_size=120,
)
section = st.sampled_from(
    ["kafka-global", "kafka-topic", "DEFAULT", "default", "Kafka-Global", "other", "", " x "]
)


@st.composite
def ini_files(draw) -> str:
    """Files that look like fastcapa's INI format, with hostile parts."""
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["section", "setting", "setting", "raw", "continued"]))
        if kind == "section":
            lines.append(f"[{draw(section)}]")
        elif kind == "setting":
            key = draw(st.sampled_from(["client.id", "acks", "linger.ms", "a b", "", "ü"]))
            lines.append(f"{key} {draw(st.sampled_from(['=', ':', '==', ' ']))} {draw(ini_text)}")
        elif kind == "continued":
            lines.append(f"  {draw(ini_text)}")
        else:
            lines.append(draw(ini_text))
    return "\n".join(lines) + draw(st.sampled_from(["", "\n", "\r\n"]))


@pytest.fixture(scope="module")
def ini_path(tmp_path_factory):
    return tmp_path_factory.mktemp("ini") / "fuzz.conf"


def assert_settings_or_one_line(read) -> None:
    """`read()` gives settings that are each fine, or a ConfigError of one line."""
    try:
        settings = read()
    except ConfigError as e:
        assert one_line(str(e)), repr(str(e))
        return
    for key, value in settings.items():
        assert_setting_ok(key, value)


def check_ini(path, content: bytes) -> None:
    path.write_bytes(content)
    assert_settings_or_one_line(lambda: read_ini(str(path)))


@FUZZ
@given(ini_files())
@example("[DEFAULT]\nbootstrap.servers = evil:9092\n[kafka-global]\nacks = all\n")
@example("[kafka-global]\nclient.id = a\n  bootstrap.servers = evil:9092\n")
@example("[kafka-global]\nclient.id = a\x0bb\n")
@example("\ufeff[kafka-global]\nacks = all\n")
@example("[kafka-global]\nnot a setting\n")
def test_ini_files_give_settings_or_one_line(ini_path, text):
    check_ini(ini_path, text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.binary(max_size=200))
@example(b"[kafka-global]\nacks = \xff\n")
def test_ini_bytes_give_settings_or_one_line(ini_path, content):
    check_ini(ini_path, content)


def test_ini_default_section_is_refused(ini_path):
    """Finding: [DEFAULT] passed as no section at all, and its keys were copied
    into [kafka-global] and [kafka-topic]."""
    ini_path.write_text("[DEFAULT]\nbootstrap.servers = evil:9092\n[kafka-global]\nacks = all\n")
    with pytest.raises(ConfigError, match=r"unknown section \[DEFAULT\]"):
        read_ini(str(ini_path))


def test_ini_errors_say_which_line(ini_path):
    """Finding: a malformed line gave only 'Source contains parsing errors'."""
    ini_path.write_text("[kafka-global]\nacks = all\nnot a setting\n")
    with pytest.raises(ConfigError, match="line 3: 'not a setting'"):
        read_ini(str(ini_path))


def test_ini_byte_order_mark_is_not_text(ini_path):
    ini_path.write_bytes(b"\xef\xbb\xbf[kafka-global]\nacks = all\n")
    assert read_ini(str(ini_path)) == {"acks": "all"}


@FUZZ
@given(st.text(max_size=60) | ini_text)
@example("a=b\nc=d")
@example("acks=all\x0bbootstrap.servers=evil")  # \v: a line break to splitlines
@example("a\u2028b=1")
@example(" = x")
@example("client.id==x")
def test_overrides_give_a_setting_or_one_line(text):
    try:
        key, value = parse_override(text)
    except ConfigError as e:
        assert one_line(str(e)), repr(str(e))
        return
    assert_setting_ok(key, value)
    assert text.partition("=")[2].strip() == value


@FUZZ
@given(st.lists(ini_text, max_size=4), st.none() | ini_text)
@example([], "evil:1\nacks=0")  # -k went into the settings unchecked
def test_merged_settings_are_all_checked(overrides, broker):
    assert_settings_or_one_line(lambda: kafka_settings(None, overrides, broker))


@FUZZ
@given(st.text(alphabet="0123456789-, \u0663_", max_size=24) | st.text(max_size=12))
@example("0-99999999999")  # once built a list of 10^11 cores (MemoryError)
@example("0-8191," * 64)  # each core once, not 64 times
@example("1_0")
@example("\u0663")  # Arabic-Indic three: int() takes it
def test_cpu_lists_are_cores_or_one_line(text):
    try:
        cpus = parse_cpus(text)
    except ConfigError as e:
        assert one_line(str(e)), repr(str(e))
        return
    assert cpus and len(cpus) == len(set(cpus))
    assert all(0 <= c <= MAX_CPU for c in cpus)


@FUZZ
@given(
    st.text(max_size=40) | st.from_regex(r"\A[0-9]{1,30}\Z") | st.sampled_from(["²", "1" * 5000])
)
@example("²")  # isdigit() but not int(): was a ValueError out of argparse's type
@example("1" * 5000)  # past int()'s digit limit
def test_dump_times_are_times_or_usage_errors(text):
    try:
        value = parse_time(text)
    except argparse.ArgumentTypeError as e:
        assert one_line(str(e))
        return
    assert isinstance(value, int)


# The command line, as argparse and validate() see it, in process.

NUMBERS = st.one_of(
    st.integers(-3, 70000).map(str),
    st.integers(0, 26).map(lambda bits: str(1 << bits)),  # ring sizes that pass
    st.integers(-(1 << 70), 1 << 70).map(str),
    st.sampled_from(["1e300", "nan", "inf", "-0", "0x10", "1_0", "\u0663", "", " 5", "1e-300"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
OPTIONS_WITH_NUMBERS = [
    "-q",
    "-w",
    "-b",
    "-d",
    "-x",
    "-x",
    "--tx-workers",
    "--snaplen",
    "--count",
    "--duration",
    "--stats-interval",
    "--metrics-port",
    "--connect-timeout",
    "--drain-timeout",
]
OPTIONS_WITH_TEXT = [
    "-t",
    "-X",
    "-k",
    "--cpus",
    "--fanout",
    "--idle",
    "--partition-by",
    "-s",
    "--stats-json",
]


@st.composite
def command_lines(draw) -> list[str]:
    # Names as argv gives them: any bytes, decoded as Python decodes argv.
    name = st.sampled_from(["x.pcap", "eth0", "a\nb"]) | st.binary(max_size=12).map(os.fsdecode)
    argv = [draw(st.sampled_from(["-r", "-i"])), draw(name)]
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            argv += [draw(st.sampled_from(OPTIONS_WITH_NUMBERS)), draw(NUMBERS)]
        else:
            argv += [
                draw(st.sampled_from(OPTIONS_WITH_TEXT)),
                draw(ini_text | st.text(max_size=20)),
            ]
    if draw(st.booleans()):
        argv.insert(draw(st.integers(0, len(argv))), draw(st.text(max_size=10)))
    return argv


def parse_and_validate(argv: list[str]) -> CaptureSettings | str:
    """The settings, or the one line (and status 2) fastcapa would exit with."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            return settings_from_args(capture_parser().parse_args(argv))
    except SystemExit as e:
        assert e.code == 2, (argv, e.code, stderr.getvalue())
        return stderr.getvalue().rstrip("\n")
    except ConfigError as e:
        return f"fastcapa: error: {e}"


@FUZZ
@given(command_lines())
@example(["-r", "x.pcap", "--snaplen", "5000000000"])  # was OverflowError in FileSource
@example(["-r", "x.pcap", "--count", str(1 << 70)])  # was OverflowError in FileSource
@example(["-r", "x.pcap", "--connect-timeout", "1e300"])  # was a Rust panic (Duration)
@example(["-r", "x.pcap", "--drain-timeout", "1e300"])  # would panic at stop
@example(["-r", "x.pcap", "-q", "100000000"])  # 10^8 rings and threads
@example(["-r", "x.pcap", "-t", "a/b"])  # a topic Kafka refuses, frame by frame
@example(["-r", "x.pcap", "-x", "16777216"])  # 32 GiB of slots: the OOM killer, not an error
@example(["-i", "eth0", "-q", "256", "-d", "16777216"])  # 8 TiB of kernel rings
@example(["-r", "x.pcap", "-k", "evil:1\x0backs=0"])
@example(["-r", "a\nb"])  # a file name that would break the error line
@example(["-r", "caf\udce9.pcap"])  # not UTF-8: was UnicodeEncodeError in FileSource
def test_command_lines_give_settings_or_one_line(argv):
    got = parse_and_validate(argv)
    if isinstance(got, str):
        assert one_line(got), repr(got)
        return
    # Accepted: every value fits the native type it becomes and asks for a
    # bounded amount of memory and threads.
    assert 1 <= got.rx_queues <= 256 and 1 <= got.workers <= 256
    assert 0 <= got.snaplen <= MAX_SNAPLEN and 0 <= got.count <= MAX_COUNT
    assert 1 <= got.descriptors < 1 << 32
    assert 1 <= got.tx_burst < 1 << 32 and 1 <= got.rx_burst < 1 << 32
    for seconds in (got.duration, got.stats_interval, got.connect_timeout, got.drain_timeout):
        assert seconds is None or 0 <= seconds <= MAX_SECONDS
    for text in (got.read, got.interface, got.topic, got.stats_json, got.kafka_stats):
        if text is not None:
            assert text.isprintable()
            text.encode()  # what the native core does with it
    for key, value in got.kafka.items():
        assert_setting_ok(key, value)
    lanes = max(got.workers, got.rx_queues)
    up_front = lanes * got.tx_ring * 2048 + (
        got.rx_queues * got.descriptors * 2048 * bool(got.interface)
    )
    assert up_front <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


# librdkafka itself judges property names and values: no broker is needed, it
# refuses before connecting. A ConfigError names the property, on one line.

PROPERTY = st.text(
    alphabet=st.sampled_from(string.ascii_lowercase + "._-" + "ü\u00e9" + string.digits),
    min_size=1,
    max_size=30,
) | st.sampled_from(["acks", "linger.ms", "compression.type", "client.id", "message.max.bytes"])


@FUZZ
@given(PROPERTY, st.text(max_size=20))
@example("no.such.property", "1")
@example("acks", "banana")
@example("linger.ms", "-5")
@example("plugin.library.paths", "/nonexistent/evil.so")
def test_librdkafka_judges_every_property(key, value):
    try:
        merged = kafka_settings(None, [f"{key}={value}"], "127.0.0.1:9")
    except ConfigError as e:
        assert one_line(str(e))
        return
    ring = _fastcapa.TxRing(2, lanes=1, slot_bytes=64)
    try:
        _fastcapa.TxWorker(
            "fuzz", [(ring, 0)], "fuzz", list(merged.items()), burst=1, queue_full_wait=0.1,
            partition_by="key", partitions=1, worker=0, workers=1,
        )  # fmt: skip
    except ConfigError as e:
        assert one_line(str(e)) and key in str(e), str(e)
