"""Settings: fastcapa's INI file, then `-X` overrides, then `-k`, over the
probe's own defaults, validated before anything starts.

The INI format is Apache Metron fastcapa's: librdkafka properties as
`key = value` lines in a `[kafka-global]` and a `[kafka-topic]` section.
librdkafka takes topic-level properties in its global configuration too, so
both sections end up in one list; librdkafka itself then judges every name and
value when the producers are created (no hand-kept list of properties here).
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Literal

from fastcapa import _fastcapa
from fastcapa.errors import ConfigError

INI_SECTIONS = ("kafka-global", "kafka-topic")

# Upper bounds of the numeric options: each value must fit the native type it
# becomes, and none may ask for more memory or threads than any machine has.
MAX_QUEUES = 256  # receive queues or transmit workers (a fanout group's old kernel limit)
MAX_SLOTS = 1 << 24  # ring sizes and bursts, in frames
MAX_SNAPLEN = _fastcapa.MAX_SNAPLEN  # tcpdump's and libpcap's largest snapshot length
MAX_COUNT = (1 << 63) - 1
MAX_SECONDS = 1e9  # about 31 years; far beyond it, durations overflow
MAX_CPU = 8191  # the largest core number Linux supports (NR_CPUS = 8192)
# Memory a setting may ask for up front: transmit-ring slots are preallocated
# (up to 2 KiB each, plus their bookkeeping), and each receive queue maps a
# kernel ring of about 2 KiB per frame of -d. Past half of the machine's
# memory, a start would end in the OOM killer rather than in an error.
SLOT_BYTES = _fastcapa.SLOT_DATA_BYTES + _fastcapa.SLOT_OVERHEAD_BYTES
MAX_CONFIG_BYTES = 1 << 20
RX_FRAME_BYTES = 2048
# DPDK: descriptors per receive queue when -d is not given (what NICs
# commonly allow at most; the driver lowers it to its own limit), and the
# most a queue can be given (a 16-bit count).
DPDK_RX_DESC = 4096
MAX_DPDK_DESC = 65535

# The producer queue is bounded by memory (--buffer), not by librdkafka's
# count of 100,000 messages, which a stream of small frames fills in seconds.
# librdkafka keeps about 220 bytes per queued message beside its key and
# value (docs/operating.md). A queue of n messages of b bytes takes about
# n * (b + MESSAGE_OVERHEAD); with a message limit M and a byte limit K that
# is at most K + MESSAGE_OVERHEAD * M, which the two limits below make equal
# to the budget, the byte limit taking over from messages of CROSSOVER bytes
# (key included) on.
MESSAGE_OVERHEAD = 224
CROSSOVER = 512
DEFAULT_BUFFER = 4 << 30
MIN_BUFFER = 1 << 20
BUFFER_SETTINGS = ("queue.buffering.max.messages", "queue.buffering.max.kbytes")

# Kafka's own rule for topic names.
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")

# What fastcapa sets unless the operator says otherwise: a name that shows in
# the broker's logs and quotas, and batching suited to many small messages.
# librdkafka sends one request per partition per batch, so at a live link's
# rates its 5 ms linger makes many small requests: 20 ms cut them 3x and
# fastcapa's CPU per frame by about a quarter with two queues
# (docs/performance.md), for 15 ms more latency, which a capture pipeline can spare.
PRODUCER_DEFAULTS: dict[str, str] = {
    "client.id": "fastcapa",
    "linger.ms": "20",
}


def read_ini(path: str) -> dict[str, str]:
    """Reads fastcapa's INI file into one ordered dict of librdkafka settings."""
    _check_printable("-c/--config", path)
    parser = configparser.ConfigParser(
        interpolation=None,
        delimiters=("=",),
        comment_prefixes=("#", ";"),
        strict=True,
        # No [DEFAULT] section: its keys would be copied into every section,
        # and the section itself would pass unnoticed. No header matches "".
        default_section="",
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # names are case-sensitive
    try:
        with open(path, "rb") as stream:
            # /dev/zero or a log file given by mistake must not fill memory.
            data = stream.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path}: larger than {MAX_CONFIG_BYTES} bytes")
        # utf-8-sig: a byte-order mark, as some editors write, is not text.
        text = data.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {_reason(e)}") from None
    try:
        parser.read_string(text, source=path)
    except configparser.Error as e:
        raise ConfigError(f"config file {path}: {_ini_problem(e, text)}") from None
    settings: dict[str, str] = {}
    for section in parser.sections():
        if section not in INI_SECTIONS:
            raise ConfigError(
                f"config file {path}: unknown section [{_shown(section)}] "
                f"(expected [kafka-global] or [kafka-topic])"
            )
        for key, value in parser.items(section):
            settings[key] = _check_setting(key, value, f"config file {path} [{section}]")
    return settings


def _ini_problem(error: configparser.Error, text: str) -> str:
    """What is wrong with the INI text, on one line, with the line number."""
    lines = text.split("\n")

    def line(number: int) -> str:
        shown = lines[number - 1] if 0 < number <= len(lines) else ""
        return f"line {number}: {shown[:80]!r}"

    if isinstance(error, configparser.MissingSectionHeaderError):
        return f"{line(error.lineno)}: a setting before any [kafka-global] or [kafka-topic]"
    if isinstance(error, configparser.ParsingError):
        return f"{line(error.errors[0][0])}: expected key = value"
    if isinstance(error, configparser.DuplicateOptionError):
        return f"{line(error.lineno or 0)}: {error.option!r} given twice in [{error.section}]"
    if isinstance(error, configparser.DuplicateSectionError):
        return f"{line(error.lineno or 0)}: section [{_shown(error.section)}] given twice"
    return repr(str(error).strip())


def parse_override(text: str) -> tuple[str, str]:
    """Parses one `-X key=value`."""
    if any(ch in text for ch in "\r\n\0"):
        raise ConfigError(f"-X {text!r}: holds a line break or NUL")
    key, sep, value = text.partition("=")
    if not sep:
        raise ConfigError(f"-X {text!r}: expected key=value")
    key = key.strip()
    return key, _check_setting(key, value.strip(), f"-X {text!r}")


def _check_setting(key: str, value: str, where: str) -> str:
    if not key:
        raise ConfigError(f"{where}: empty property name")
    for part in (key, value):
        if any(ch in part for ch in "\r\n\0"):
            raise ConfigError(f"{where}: property {key!r} holds a line break or NUL")
        if not part.isprintable():
            raise ConfigError(f"{where}: property {key!r} holds a control character")
    if any(ch.isspace() or ch == "=" for ch in key):
        raise ConfigError(f"{where}: invalid property name {key!r}")
    return value


def _check_printable(option: str, text: str) -> None:
    """Names and paths go into messages and logs: no control characters.
    Bytes of argv that are not UTF-8 arrive as lone surrogates, which the
    native core cannot take either."""
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        raise ConfigError(f"{option} {text!r}: is not UTF-8")
    if not text.isprintable():
        raise ConfigError(f"{option} {text!r}: holds a control character")


def _shown(text: str) -> str:
    """Text for a one-line message: as it is when printable, else its repr."""
    return text if text.isprintable() else repr(text)


def check_topic(topic: str) -> str:
    """A Kafka topic name: 1 to 249 of A-Z a-z 0-9 . _ -, not . or .."""
    if not TOPIC_NAME.fullmatch(topic) or topic in (".", ".."):
        raise ConfigError(
            f"invalid topic name {topic!r} (Kafka takes 1 to 249 of A-Z a-z 0-9 . _ -)"
        )
    return topic


def kafka_settings(
    config_file: str | None,
    overrides: list[str],
    broker: str | None,
    defaults: dict[str, str] | None = None,
) -> dict[str, str]:
    """Merges librdkafka settings: defaults < INI file < -X < -k."""
    settings = dict(defaults or {})
    if config_file:
        settings.update(read_ini(config_file))
    for text in overrides:
        key, value = parse_override(text)
        settings[key] = value
    if broker is not None or "bootstrap.servers" not in settings:
        settings["bootstrap.servers"] = _check_setting(
            "bootstrap.servers", broker or "localhost:9092", f"-k {broker!r}"
        )
    return settings


def explain_connection_failure(reason: str, settings: dict[str, str]) -> str:
    """librdkafka's reason for not reaching Kafka, with what it leaves out.

    On a TLS certificate it could not verify, librdkafka's words point at
    ssl.ca.location alone, also when the CA is right and the certificate
    names another host; and a broker that wants a client certificate shows
    only as a TLS alert.
    """
    checks_host = settings.get("ssl.endpoint.identification.algorithm", "https") != "none"
    if "certificate verify failed" in reason and checks_host:
        return (
            f"{reason}; the broker's certificate must also name the host it is reached"
            " at (ssl.endpoint.identification.algorithm=https checks the host name)"
        )
    has_client_cert = any(
        key in settings
        for key in ("ssl.certificate.location", "ssl.certificate.pem", "ssl.keystore.location")
    )
    refused = ("alert bad certificate", "alert certificate required", "unexpected message")
    if any(words in reason for words in refused) and not has_client_cert:
        return (
            f"{reason}; the broker may require a client certificate"
            " (ssl.certificate.location and ssl.key.location)"
        )
    return reason


def parse_cpus(text: str) -> list[int]:
    """Parses a core list such as `2-5,8`."""
    cpus: dict[int, None] = {}  # in order, each core once
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            first, last = _core(lo), _core(hi) if hi else _core(lo)
            if last < first:
                raise ValueError
            cpus.update(dict.fromkeys(range(first, last + 1)))
    except ValueError:
        raise ConfigError(
            f"--cpus {text!r}: expected a list of cores from 0 to {MAX_CPU}, such as 2-5,8"
        ) from None
    return list(cpus)


def _core(text: str) -> int:
    """One core number: ASCII digits only (int() takes "1_0", "٣" and " 1")."""
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_CPU:
        raise ValueError
    return int(text)


@dataclass(frozen=True)
class CaptureSettings:
    """Everything `fastcapa capture` needs, validated."""

    interface: str | None
    read: str | None
    topic: str
    kafka: dict[str, str]
    rx_queues: int = 1
    tx_burst: int = 256
    rx_burst: int = 32
    # Frames of kernel ring per queue: 128 MiB, what tcpdump was given in the
    # benchmarks; 4096 dropped about 1 % at the sender's top rate.
    rx_desc: int = 65536
    tx_ring: int = 2048
    tx_workers: int | None = None
    kafka_stats: str | None = None
    snaplen: int = 0
    filter: str | None = None
    fanout: Literal["hash", "qm", "cpu", "lb"] = "hash"
    cpus: list[int] = field(default_factory=list)
    count: int = 0
    duration: float | None = None
    stats_interval: float = 5.0
    stats_json: str | None = None
    metrics_port: int | None = None
    idle: Literal["spin", "poll"] = "poll"
    connect_timeout: float = 10.0
    drain_timeout: float = 30.0
    partition_by: Literal["batch", "key", "flow"] = "batch"
    user: str | None = None
    # Bytes the producers may hold while Kafka is slow or away (None: the
    # default, DEFAULT_BUFFER or a quarter of the machine's memory if less).
    buffer: int | None = None
    # --dpdk DEVICE: a DPDK port instead of an interface (docs/dpdk.md), and
    # the EAL's arguments (--eal) as one shell-quoted string.
    dpdk: str | None = None
    eal: str = ""

    @property
    def workers(self) -> int:
        """--tx-workers, or the default for the cores at hand (`--cpus`, or
        the ones this process may run on)."""
        if self.tx_workers:
            return self.tx_workers
        cores = len(self.cpus) or len(os.sched_getaffinity(0))
        return default_tx_workers(self.rx_queues, cores)

    @property
    def buffer_bytes(self) -> int:
        return self.buffer if self.buffer is not None else default_buffer()

    def producer_settings(self) -> dict[str, str]:
        """The librdkafka settings of each transmit worker's producer: the
        operator's, with the producer queue sized from --buffer unless the
        operator set its limits (-c or -X) by hand."""
        settings = dict(self.kafka)
        share = self.buffer_bytes // self.workers
        messages = share // (MESSAGE_OVERHEAD + CROSSOVER)
        limits = {
            "queue.buffering.max.messages": messages,
            "queue.buffering.max.kbytes": messages * CROSSOVER // 1024,
        }
        for key, value in limits.items():
            if key not in settings:
                settings[key] = str(max(1, min(value, 2**31 - 1)))
        return settings

    def validate(self) -> CaptureSettings:
        if [self.interface, self.read, self.dpdk].count(None) != 2:
            raise ConfigError("give exactly one of -i/--interface, -r/--read and --dpdk")
        if self.eal and self.dpdk is None:
            raise ConfigError("--eal goes with --dpdk")
        if self.dpdk is not None:
            eal_arguments(self.eal, self.cpus)  # judged now: one line, exit 2
            if self.rx_desc > MAX_DPDK_DESC:
                raise ConfigError(
                    f"-d/--rx-desc must be at most {MAX_DPDK_DESC} with --dpdk, got {self.rx_desc}"
                )
        for option, text in (
            ("-i/--interface", self.interface),
            ("--dpdk", self.dpdk),
            ("-r/--read", self.read),
            ("--stats-json", self.stats_json),
            ("-s/--kafka-stats", self.kafka_stats),
        ):
            if text is not None:
                _check_printable(option, text)
        for name, value, most in (
            ("-q/--rx-queues", self.rx_queues, MAX_QUEUES),
            ("--tx-workers", self.workers, MAX_QUEUES),
            ("-w/--tx-burst", self.tx_burst, MAX_SLOTS),
            ("-b/--rx-burst", self.rx_burst, MAX_SLOTS),
            ("-d/--rx-desc", self.rx_desc, MAX_SLOTS),
        ):
            if not 1 <= value <= most:
                raise ConfigError(f"{name} must be between 1 and {most}, got {value}")
        if self.tx_ring < 2 or self.tx_ring & (self.tx_ring - 1) or self.tx_ring > MAX_SLOTS:
            raise ConfigError(
                f"-x/--tx-ring must be a power of two between 2 and {MAX_SLOTS}, got {self.tx_ring}"
            )
        if not 0 <= self.snaplen <= MAX_SNAPLEN:
            raise ConfigError(
                f"--snaplen must be between 0 (whole frame) and {MAX_SNAPLEN}, got {self.snaplen}"
            )
        if not 0 <= self.count <= MAX_COUNT:
            raise ConfigError(f"--count must be between 0 and {MAX_COUNT}, got {self.count}")
        for name, seconds in (
            ("--duration", self.duration),
            ("--stats-interval", self.stats_interval),
            ("--connect-timeout", self.connect_timeout),
            ("--drain-timeout", self.drain_timeout),
        ):
            if seconds is not None and not 0 <= seconds <= MAX_SECONDS:  # NaN fails too
                raise ConfigError(
                    f"{name} must be between 0 and {MAX_SECONDS:.0f} seconds, got {seconds}"
                )
        if self.stats_interval == 0:
            raise ConfigError("--stats-interval must be positive")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"--metrics-port must be a TCP port, got {self.metrics_port}")
        allowed = os.sched_getaffinity(0)
        outside = [cpu for cpu in self.cpus if cpu not in allowed]
        if outside:
            shown = ", ".join(map(str, outside[:8])) + (", ..." if len(outside) > 8 else "")
            raise ConfigError(
                f"--cpus: core(s) {shown} are not available to this process "
                f"(allowed: {sorted(allowed)})"
            )
        if self.buffer is not None and self.buffer < MIN_BUFFER:
            raise ConfigError(f"--buffer must be at least 1 MiB, got {self.buffer} bytes")
        check_topic(self.topic)
        self._check_memory()
        return self

    def _check_memory(self) -> None:
        """Refuses rings and buffers that would ask for more than half of the
        machine's memory: such a start would end in the OOM killer."""
        budget = _physical_memory() // 2
        lanes = max(self.workers, self.rx_queues)
        rings = lanes * self.tx_ring * SLOT_BYTES
        if rings > budget:
            raise ConfigError(
                f"-x/--tx-ring {self.tx_ring} over {lanes} lane(s) preallocates "
                f"{_gib(rings)} of slots, more than half of this machine's {_gib(budget * 2)}"
            )
        kernel = self.rx_queues * self.rx_desc * RX_FRAME_BYTES if self.interface else 0
        if rings + kernel > budget:
            raise ConfigError(
                f"-d/--rx-desc {self.rx_desc} over {self.rx_queues} queue(s) maps "
                f"{_gib(kernel)} of kernel rings (and the transmit rings {_gib(rings)}), "
                f"more than half of this machine's {_gib(budget * 2)}"
            )
        if rings + kernel + self.buffer_bytes > budget:
            raise ConfigError(
                f"--buffer {_gib(self.buffer_bytes)} with {_gib(rings + kernel)} of rings "
                f"is more than half of this machine's {_gib(budget * 2)}"
            )


def default_tx_workers(rx_queues: int, cores: int) -> int:
    """One transmit worker per ring where there is a core for it beside the
    receive workers, fewer where there is not, and at least one. A transmit
    worker and its producer's threads want most of a core; where they must
    share, two producers cost more per frame than one (smaller message
    sets; measured in docs/performance.md)."""
    return max(1, min(rx_queues, cores - rx_queues))


def default_buffer() -> int:
    """--buffer's default: 4 GiB, or a quarter of the machine's memory if less."""
    return min(DEFAULT_BUFFER, _physical_memory() // 4)


def parse_size(text: str) -> int:
    """A size in the operator's words: bytes, or a number with a unit (KiB,
    MiB, GiB, TiB in powers of 1024; KB, MB, GB, TB in powers of 1000; K, M,
    G, T as the binary ones)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ConfigError(f"expected a size such as 512MiB or 2GiB, got {text!r}")
    number, unit = match.groups()
    value = float(number) * _UNITS[unit.lower()]
    if value > 1 << 50:
        raise ConfigError(f"size {text!r} is beyond any machine's memory")
    return int(value)


_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B?|B|)", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    **{u.lower(): 1024**i for i, u in enumerate("KMGT", 1)},
    **{f"{u}i".lower(): 1024**i for i, u in enumerate("KMGT", 1)},
    **{f"{u}ib".lower(): 1024**i for i, u in enumerate("KMGT", 1)},
    **{f"{u}b".lower(): 1000**i for i, u in enumerate("KMGT", 1)},
}


def _physical_memory() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _gib(size: int) -> str:
    return f"{size / (1 << 30):.1f} GiB"


def _reason(error: OSError | UnicodeDecodeError) -> str:
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return "not UTF-8 text"


def eal_arguments(text: str, cpus: list[int]) -> list[str]:
    """The EAL's arguments: the operator's `--eal` words, plus fastcapa's
    defaults where the operator did not say otherwise: no shared files (two
    probes on one host do not collide, nothing is left behind), no telemetry
    socket, warnings and errors only in DPDK's log, and the main lcore on a
    core of this process (the workers are pinned by --cpus, not by the EAL)."""
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise ConfigError(f"--eal: {e}") from None
    for word in words:
        _check_printable("--eal", word)

    def given(*options: str) -> bool:
        return any(w == o or w.startswith(o + "=") for w in words for o in options)

    extra: list[str] = []
    if not given("--file-prefix", "--in-memory", "--no-shconf"):
        # No files left behind: --in-memory keeps even hugepages unnamed;
        # without hugepages (where the EAL refuses it) no shared config, in
        # a runtime directory of this process's own, removed at exit.
        if given("--no-huge"):
            extra += ["--no-shconf", "--file-prefix", f"fastcapa-{os.getpid()}"]
        else:
            extra.append("--in-memory")
    if not given("--telemetry", "--no-telemetry"):
        extra.append("--no-telemetry")
    if not given("--log-level"):
        extra.append("--log-level=5")
    if not any(
        w in ("-l", "-c", "--lcores") or w.startswith(("-l", "-c", "--lcores=")) for w in words
    ):
        core = cpus[0] if cpus else min(os.sched_getaffinity(0))
        extra += ["-l", str(core)]
    return extra + words
