"""librdkafka settings as the operator gives them: fastcapa's INI file
(Apache Metron fastcapa's format: `key = value` lines in a `[kafka-global]`
and a `[kafka-topic]` section), `-X key=value` overrides and `-k`, over the
probe's own defaults; and topic names. (Why a connection failed is said by
the extension, src/kafka/refusal.rs, in one place for every command.)

librdkafka takes topic-level properties in its global configuration too, so
both sections end up in one list; librdkafka itself then judges every name and
value when a client is created (no hand-kept list of properties here).
"""

from __future__ import annotations

import configparser
import re

from fastcapa.errors import ConfigError

INI_SECTIONS = ("kafka-global", "kafka-topic")
MAX_CONFIG_BYTES = 1 << 20

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
    check_printable("-c/--config", path)
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


def check_printable(option: str, text: str) -> None:
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


def _reason(error: OSError | UnicodeDecodeError) -> str:
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return "not UTF-8 text"
