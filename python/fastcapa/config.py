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
from dataclasses import dataclass, field
from pathlib import Path

from fastcapa.errors import ConfigError

INI_SECTIONS = ("kafka-global", "kafka-topic")

# What fastcapa sets unless the operator says otherwise: a name that shows in
# the broker's logs and quotas, and batching suited to many small messages.
PRODUCER_DEFAULTS: dict[str, str] = {
    "client.id": "fastcapa",
    "linger.ms": "5",
}


def read_ini(path: str) -> dict[str, str]:
    """Reads fastcapa's INI file into one ordered dict of librdkafka settings."""
    parser = configparser.ConfigParser(
        interpolation=None, delimiters=("=",), comment_prefixes=("#", ";"), strict=True
    )
    parser.optionxform = str  # librdkafka property names are case-sensitive
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {_reason(e)}") from None
    try:
        parser.read_string(text, source=path)
    except configparser.Error as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"config file {path}: {first}") from None
    settings: dict[str, str] = {}
    for section in parser.sections():
        if section not in INI_SECTIONS:
            raise ConfigError(
                f"config file {path}: unknown section [{section}] "
                f"(expected [kafka-global] or [kafka-topic])"
            )
        for key, value in parser.items(section):
            settings[key] = _check_setting(key, value, f"config file {path}")
    return settings


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
    if any(ch.isspace() or ch == "=" for ch in key):
        raise ConfigError(f"{where}: invalid property name {key!r}")
    return value


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
        settings["bootstrap.servers"] = broker or "localhost:9092"
    return settings


def parse_cpus(text: str) -> list[int]:
    """Parses a core list such as `2-5,8`."""
    cpus: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if hi else int(lo)
            if first < 0 or last < first:
                raise ValueError
            cpus.extend(range(first, last + 1))
    except ValueError:
        raise ConfigError(f"--cpus {text!r}: expected a list such as 2-5,8") from None
    return cpus


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
    rx_desc: int = 4096
    tx_ring: int = 2048
    tx_workers: int | None = None
    kafka_stats: str | None = None
    snaplen: int = 0
    filter: str | None = None
    fanout: str = "hash"
    cpus: list[int] = field(default_factory=list)
    count: int = 0
    duration: float | None = None
    stats_interval: float = 5.0
    stats_json: str | None = None
    metrics_port: int | None = None
    idle: str = "poll"
    connect_timeout: float = 10.0
    drain_timeout: float = 30.0
    partition_by: str = "key"
    user: str | None = None

    @property
    def workers(self) -> int:
        return self.tx_workers or self.rx_queues

    def validate(self) -> CaptureSettings:
        if (self.interface is None) == (self.read is None):
            raise ConfigError("give exactly one of -i/--interface and -r/--read")
        positive = {
            "-q/--rx-queues": self.rx_queues,
            "-w/--tx-burst": self.tx_burst,
            "-b/--rx-burst": self.rx_burst,
            "-d/--rx-desc": self.rx_desc,
            "--tx-workers": self.workers,
        }
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        if self.tx_ring < 2 or self.tx_ring & (self.tx_ring - 1) or self.tx_ring > 1 << 24:
            raise ConfigError(
                f"-x/--tx-ring must be a power of two between 2 and 16777216, got {self.tx_ring}"
            )
        if self.snaplen < 0:
            raise ConfigError(f"--snaplen must not be negative, got {self.snaplen}")
        if self.count < 0:
            raise ConfigError(f"--count must not be negative, got {self.count}")
        for name, value in (
            ("--duration", self.duration),
            ("--stats-interval", self.stats_interval),
            ("--connect-timeout", self.connect_timeout),
            ("--drain-timeout", self.drain_timeout),
        ):
            if value is not None and value < 0:
                raise ConfigError(f"{name} must not be negative, got {value}")
        if self.stats_interval == 0:
            raise ConfigError("--stats-interval must be positive")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"--metrics-port must be a TCP port, got {self.metrics_port}")
        allowed = os.sched_getaffinity(0)
        outside = [cpu for cpu in self.cpus if cpu not in allowed]
        if outside:
            raise ConfigError(
                f"--cpus: core(s) {outside} are not available to this process "
                f"(allowed: {sorted(allowed)})"
            )
        if not self.topic or any(ch.isspace() for ch in self.topic):
            raise ConfigError(f"invalid topic name {self.topic!r}")
        return self


def _reason(error: OSError | UnicodeDecodeError) -> str:
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return "not UTF-8 text"
