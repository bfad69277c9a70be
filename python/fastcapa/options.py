"""What the command lines of `fastcapa capture` and `fastcapa dump` share:
the parser class, the help formatter, exit statuses, option types and the
one-line failure. A leaf module: it imports nothing of fastcapa's but the
errors and settings."""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NoReturn

from fastcapa.config import MAX_COUNT, MAX_SECONDS
from fastcapa.errors import ConfigError
from fastcapa.sizing import parse_size

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Stopped by a signal before it began its work (128 + SIGINT, as shells say).
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 2), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        # argparse quotes the operator's words: keep line breaks and control
        # characters in them from breaking (or forging) the line.
        message = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, but only those worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in (
            action.help or ""
        ):
            return action.help or ""
        return super()._get_help_string(action) or ""


DEFAULT_TOPIC = "pcap"


def topic_list(text: str) -> list[str]:
    """`east,west` -> ["east", "west"] (Kafka topic names hold no comma)."""
    topics = [t.strip() for t in text.split(",")]
    if not all(topics):
        raise argparse.ArgumentTypeError(f"expected topic names separated by commas, got {text!r}")
    return topics


def kafka_options(
    parser: argparse.ArgumentParser, several_topics: bool = False
) -> argparse._ArgumentGroup:
    """The Kafka options `capture` and `dump` share: -t, -c, -X, -k. With
    `several_topics`, -t takes a comma-separated list and may be repeated
    (`args.topic` is then a list, or None for the default)."""
    group = parser.add_argument_group("Kafka")
    if several_topics:
        group.add_argument(
            "-t",
            "--topic",
            action="append",
            type=topic_list,
            metavar="TOPIC[,TOPIC...]",
            help="Kafka topic, or several (comma-separated or -t repeated), merged into one"
            f" capture-time order (default: {DEFAULT_TOPIC})",
        )
    else:
        group.add_argument(
            "-t", "--topic", default=DEFAULT_TOPIC, help="Kafka topic (default: %(default)s)"
        )
    group.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="librdkafka settings in fastcapa's INI format: [kafka-global] and [kafka-topic] "
        "sections of key = value",
    )
    group.add_argument(
        "-X",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="one librdkafka setting, global or topic (repeatable; wins over -c)",
    )
    group.add_argument(
        "-k",
        "--kafka-broker",
        metavar="HOSTS",
        help="shortcut for bootstrap.servers, wins over -c and -X (default: localhost:9092)",
    )
    return group


def statistics_options(
    group: argparse._ArgumentGroup,
    interval: object,
    interval_type: Callable[[str], float],
) -> None:
    """The statistics options of the commands that run until stopped:
    --stats-interval, --stats-json, --metrics-port."""
    group.add_argument(
        "--stats-interval",
        type=interval_type,
        default=interval,
        metavar="SECONDS",
        help="period of the statistics table on stderr",
    )
    group.add_argument(
        "--stats-json", metavar="FILE", help="also append each report as one JSON line"
    )
    group.add_argument(
        "--metrics-port",
        type=integer,
        metavar="PORT",
        help="serve Prometheus metrics on that port",
    )


def timeout_option(group: argparse._ArgumentGroup) -> None:
    """--timeout of the commands that read Kafka: each answer's wait."""
    group.add_argument(
        "--timeout",
        type=positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for Kafka's answers",
    )


def integer(text: str) -> int:
    """Any integer in base 10; the settings judge its range."""
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def count(text: str) -> int:
    """A number of frames: 0 (no limit) up to 2^63 - 1."""
    value = integer(text)
    if not 0 <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"expected 0 to {MAX_COUNT}, got {text!r}")
    return value


def seconds(text: str) -> float:
    """A finite number of seconds (the settings judge its range)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}")
    return value


def positive_seconds(text: str) -> float:
    """Seconds above 0 and at most MAX_SECONDS."""
    value = seconds(text)
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"expected 0 < seconds <= {MAX_SECONDS:.0f}, got {text!r}")
    return value


def size(text: str) -> int:
    """A size in bytes, with an optional unit: 512MiB, 2GiB, 1.5G."""
    try:
        return parse_size(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# A duration back from now: `-90s`, `-15m`, `-2h`, `-1d`, `-1h30m`.
_DURATION = re.compile(r"-(?:\d+(?:\.\d+)?[smhd])+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_US = {"s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}

CAPTURE_TIME_HELP = "ISO 8601, epoch µs, now, or back from now: -90s, -15m, -2h, -1d, -1h30m"


def capture_time(text: str, now_us: int | None = None) -> int:
    """A capture time -> epoch µs: ISO 8601 (UTC unless it says otherwise),
    epoch microseconds, `now`, or a duration back from now (`-15m`)."""
    if now_us is None:
        now_us = time.time_ns() // 1000
    if text == "now":
        return now_us
    if _DURATION.fullmatch(text):
        back = sum(round(float(n) * _UNIT_US[unit]) for n, unit in _DURATION_PART.findall(text))
        return max(now_us - back, 0)
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    if text.isascii() and text.isdigit():
        if len(text) > 20 or int(text) >= 1 << 64:
            raise argparse.ArgumentTypeError(f"{text!r} is past any 64-bit key")
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {CAPTURE_TIME_HELP}; got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def attach_relative_times(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """`--from -15m` -> `--from=-15m`: argparse reads a value that starts
    with a dash as an option of its own (no option starts with a dash and a
    digit)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in flags and i + 1 < len(argv) and re.match(r"-[\d.]", argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def fail(status: int, error: BaseException | str) -> int:
    """Says why on one line of stderr; returns the exit status."""
    print(f"fastcapa: error: {error}", file=sys.stderr)
    return status
