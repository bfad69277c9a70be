"""The command line: `fastcapa [capture] ...` and `fastcapa dump ...` (SPEC §3).

Every value is checked before anything starts. Each failure is one line on
stderr and an exit status: 0 done, 1 failed while running, 2 bad usage or
configuration, or a start that could not happen (file, interface, Kafka).
"""

from __future__ import annotations

import argparse
import sys

from fastcapa import __version__
from fastcapa.config import PRODUCER_DEFAULTS, CaptureSettings, kafka_settings, parse_cpus
from fastcapa.errors import FastcapaError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 2), not a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse quotes the operator's words: keep line breaks and control
        # characters in them from breaking (or forging) the line.
        message = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, but only those worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in (
            action.help or ""
        ):
            return action.help or ""
        return super()._get_help_string(action)


def kafka_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The Kafka options `capture` and `dump` share: -t, -c, -X, -k."""
    group = parser.add_argument_group("Kafka")
    group.add_argument("-t", "--topic", default="pcap", help="Kafka topic (default: %(default)s)")
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


def _integer(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}")
    return value


def capture_parser(prog: str = "fastcapa") -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="Capture every frame from a network interface (or replay a capture file) "
        "into Kafka, one message per frame: key = capture time in microseconds "
        "(8 bytes, big-endian), value = the frame.",
        epilog="Subcommands: 'fastcapa capture' (the default) and 'fastcapa dump' "
        "(Kafka back to a pcap file; see fastcapa dump --help).",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fastcapa {__version__}")
    source = parser.add_argument_group("source (exactly one of -i and -r)")
    source.add_argument("-i", "--interface", metavar="IFACE", help="live capture from IFACE")
    source.add_argument("-r", "--read", metavar="FILE", help="replay a pcap or pcapng file")
    source.add_argument(
        "--snaplen",
        type=_integer,
        default=0,
        metavar="N",
        help="cut each frame to N bytes (0: whole frame)",
    )
    source.add_argument(
        "--filter", metavar="EXPR", help="capture filter in tcpdump syntax, applied in the kernel"
    )
    source.add_argument(
        "--count",
        type=_integer,
        default=0,
        metavar="N",
        help="stop after N frames (0: run until stopped)",
    )
    source.add_argument(
        "--user",
        metavar="USER",
        help="run as USER once the capture sockets are open (start as root);"
        " every capability is given up at that point in any case",
    )
    source.add_argument("--duration", type=_seconds, metavar="SECONDS", help="stop after that time")
    pipeline = parser.add_argument_group("pipeline")
    pipeline.add_argument(
        "-q",
        "--rx-queues",
        type=_integer,
        default=1,
        metavar="N",
        help="receive queues = receive workers = transmit rings",
    )
    pipeline.add_argument(
        "-b",
        "--rx-burst",
        type=_integer,
        default=32,
        metavar="N",
        help="most packets a receive worker fetches at once",
    )
    pipeline.add_argument(
        "-d",
        "--rx-desc",
        type=_integer,
        default=4096,
        metavar="N",
        help="receive queue size, in frames",
    )
    pipeline.add_argument(
        "-x",
        "--tx-ring",
        type=_integer,
        default=2048,
        metavar="N",
        help="transmit ring size in packets, a power of two",
    )
    pipeline.add_argument(
        "-w",
        "--tx-burst",
        type=_integer,
        default=256,
        metavar="N",
        help="most packets a transmit worker dequeues at once",
    )
    pipeline.add_argument(
        "--tx-workers",
        type=_integer,
        metavar="N",
        help="transmit workers, spread over the rings (default: one per ring)",
    )
    pipeline.add_argument(
        "--fanout",
        choices=("hash", "qm", "cpu", "lb"),
        default="hash",
        help="how frames are spread over receive queues",
    )
    pipeline.add_argument(
        "--cpus",
        metavar="LIST",
        help="cores to pin workers to, e.g. 2-5,8: receive workers first, then"
        " transmit workers, wrapping around the list",
    )
    pipeline.add_argument(
        "--idle",
        choices=("spin", "poll"),
        default="poll",
        help="an idle receive worker spins, or spins briefly then waits in poll()",
    )
    kafka = kafka_options(parser)
    kafka.add_argument(
        "--partition-by",
        choices=("key", "flow"),
        default="key",
        help="librdkafka's partitioner on the key, or one partition per flow",
    )
    kafka.add_argument(
        "--connect-timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for Kafka at start",
    )
    kafka.add_argument(
        "--drain-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long a stop may spend delivering what is queued",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--stats-interval",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="period of the statistics table on stderr",
    )
    output.add_argument(
        "--stats-json", metavar="FILE", help="also append each report as one JSON line"
    )
    output.add_argument(
        "--metrics-port",
        type=_integer,
        metavar="PORT",
        help="serve Prometheus metrics on that port",
    )
    output.add_argument(
        "-s",
        "--kafka-stats",
        metavar="FILE",
        help="append librdkafka's JSON statistics, one line per report",
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> CaptureSettings:
    kafka = kafka_settings(args.config, args.overrides, args.kafka_broker, PRODUCER_DEFAULTS)
    if args.kafka_stats and "statistics.interval.ms" not in kafka:
        kafka["statistics.interval.ms"] = str(int(args.stats_interval * 1000))
    return CaptureSettings(
        interface=args.interface,
        read=args.read,
        topic=args.topic,
        kafka=kafka,
        rx_queues=args.rx_queues,
        tx_burst=args.tx_burst,
        rx_burst=args.rx_burst,
        rx_desc=args.rx_desc,
        tx_ring=args.tx_ring,
        tx_workers=args.tx_workers,
        kafka_stats=args.kafka_stats,
        snaplen=args.snaplen,
        filter=args.filter,
        fanout=args.fanout,
        cpus=parse_cpus(args.cpus) if args.cpus else [],
        count=args.count,
        duration=args.duration,
        stats_interval=args.stats_interval,
        stats_json=args.stats_json,
        metrics_port=args.metrics_port,
        idle=args.idle,
        connect_timeout=args.connect_timeout,
        drain_timeout=args.drain_timeout,
        partition_by=args.partition_by,
        user=args.user,
    ).validate()


def run_capture(argv: list[str]) -> int:
    from fastcapa.pipeline import Pipeline

    args = capture_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        pipeline = Pipeline(settings)
        pipeline.connect()
        pipeline.serve_metrics()
    except FastcapaError as e:
        return fail(EXIT_USAGE, e)
    source = settings.read or settings.interface
    print(
        f"fastcapa: {'replaying' if settings.read else 'capturing on'} {source} "
        f"with {settings.rx_queues} queue(s) and {settings.workers} transmit worker(s) "
        f"into topic {settings.topic} at {settings.kafka['bootstrap.servers']}",
        file=sys.stderr,
        flush=True,
    )
    if settings.read and pipeline.linktype != 1:
        print(
            f"fastcapa: note: {settings.read} has link type {pipeline.linktype}, not Ethernet; "
            f"frames are carried as they are (dump them with --linktype {pipeline.linktype})",
            file=sys.stderr,
        )
    try:
        outcome = pipeline.run()
    except FastcapaError as e:
        return fail(EXIT_FAILED, e)
    status = EXIT_OK
    if outcome.error:
        print(f"fastcapa: error: {outcome.error}", file=sys.stderr)
        status = EXIT_FAILED
    for problem in outcome.final.accounting_errors():
        print(f"fastcapa: error: accounting does not add up: {problem}", file=sys.stderr)
        status = EXIT_FAILED
    return status


def fail(status: int, error: BaseException) -> int:
    print(f"fastcapa: error: {error}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["dump"]:
            from fastcapa.dump import run_dump

            return run_dump(argv[1:])
        if argv[:1] == ["capture"]:
            argv = argv[1:]
        return run_capture(argv)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_FAILED
