"""The command line: `fastcapa [capture] ...` and `fastcapa dump ...`
(docs/operating.md, docs/dump.md).

Every value is checked before anything starts. Each failure is one line on
stderr and an exit status: 0 done, 1 failed while running, 2 bad usage or
configuration, or a start that could not happen (file, interface, Kafka).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from fastcapa import __version__, options
from fastcapa.config import AF_PACKET_RX_DESC, DPDK_RX_DESC, CaptureSettings, parse_cpus
from fastcapa.errors import ConfigError, FastcapaError
from fastcapa.librdkafka import PRODUCER_DEFAULTS, kafka_settings
from fastcapa.options import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail

_DEFAULTS = {f.name: f.default for f in fields(CaptureSettings)}


def _default(name: str) -> object:
    """An option's default: the settings class's, so it is spelled once."""
    return _DEFAULTS[name]


def capture_parser(prog: str = "fastcapa") -> argparse.ArgumentParser:
    parser = options.Parser(
        prog=prog,
        description="Capture every frame from a network interface (or replay a capture file) "
        "into Kafka, one message per frame: key = capture time in microseconds "
        "(8 bytes, big-endian), value = the frame.",
        epilog="Subcommands: 'fastcapa capture' (the default), 'fastcapa dump' "
        "(Kafka back to a pcap file; see fastcapa dump --help) and 'fastcapa index' "
        "(the index that lets dump read only what a query can match). 'fastcapa extcap'"
        " makes the topics a capture interface of Wireshark (see fastcapa extcap --help).",
        formatter_class=options.HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fastcapa {__version__}")
    source = parser.add_argument_group("source (exactly one of -i, -r and --dpdk)")
    source.add_argument("-i", "--interface", metavar="IFACE", help="live capture from IFACE")
    source.add_argument("-r", "--read", metavar="FILE", help="replay a pcap or pcapng file")
    source.add_argument(
        "--dpdk",
        metavar="DEVICE",
        help="live capture from a DPDK port: a PCI address (0000:03:00.0) or a virtual"
        " device (net_af_packet0,iface=eth1); see docs/dpdk.md",
    )
    source.add_argument(
        "--eal",
        metavar="ARGS",
        default="",
        help="arguments for DPDK's EAL, one quoted string (e.g. '--huge-dir /mnt/huge -a"
        " 0000:03:00.0')",
    )
    source.add_argument(
        "--snaplen",
        type=options.integer,
        default=_default("snaplen"),
        metavar="N",
        help="cut each frame to N bytes (0: whole frame)",
    )
    source.add_argument(
        "--filter",
        metavar="EXPR",
        help="capture filter in tcpdump syntax, applied in the kernel (with --dpdk: run on each"
        " frame by the receive worker)",
    )
    source.add_argument(
        "--count",
        type=options.integer,
        default=_default("count"),
        metavar="N",
        help="stop after N frames (0: run until stopped)",
    )
    source.add_argument(
        "--user",
        metavar="USER",
        help="run as USER once the capture sockets are open (start as root);"
        " every capability is given up at that point in any case",
    )
    source.add_argument(
        "--duration", type=options.seconds, metavar="SECONDS", help="stop after that time"
    )
    pipeline = parser.add_argument_group("pipeline")
    pipeline.add_argument(
        "-q",
        "--rx-queues",
        type=options.integer,
        default=_default("rx_queues"),
        metavar="N",
        help="receive queues = receive workers = transmit rings",
    )
    pipeline.add_argument(
        "-b",
        "--rx-burst",
        type=options.integer,
        default=_default("rx_burst"),
        metavar="N",
        help="most packets a receive worker fetches at once",
    )
    pipeline.add_argument(
        "-d",
        "--rx-desc",
        type=options.integer,
        metavar="N",
        help=f"receive queue size, in frames (default: {AF_PACKET_RX_DESC}; with --dpdk,"
        f" descriptors per queue, default {DPDK_RX_DESC} or the NIC's most)",
    )
    pipeline.add_argument(
        "-x",
        "--tx-ring",
        type=options.integer,
        default=_default("tx_ring"),
        metavar="N",
        help="transmit ring size in packets, a power of two",
    )
    pipeline.add_argument(
        "-w",
        "--tx-burst",
        type=options.integer,
        default=_default("tx_burst"),
        metavar="N",
        help="most packets a transmit worker dequeues at once",
    )
    pipeline.add_argument(
        "--tx-workers",
        type=options.integer,
        metavar="N",
        help="transmit workers, spread over the rings (default: one per ring, as far as "
        "the cores left beside the receive workers go, at least one)",
    )
    pipeline.add_argument(
        "--fanout",
        choices=("hash", "qm", "cpu", "lb"),
        default=_default("fanout"),
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
        default=_default("idle"),
        help="an idle receive worker spins, or spins briefly then waits in poll()",
    )
    kafka = options.kafka_options(parser)
    kafka.add_argument(
        "--partition-by",
        choices=("batch", "key", "flow"),
        default=_default("partition_by"),
        help="batch: each burst to one partition, spread evenly (default); key: "
        "librdkafka's partitioner on the key; flow: one partition per flow, in order",
    )
    kafka.add_argument(
        "--buffer",
        type=options.size,
        metavar="SIZE",
        help="memory the producers may fill while Kafka is slow or away, e.g. 4GiB "
        "(default: 4GiB, or a quarter of this machine's memory if less); sets "
        "queue.buffering.max.messages and .kbytes unless -c or -X sets them",
    )
    kafka.add_argument(
        "--connect-timeout",
        type=options.seconds,
        default=_default("connect_timeout"),
        metavar="SECONDS",
        help="how long to wait for Kafka at start",
    )
    kafka.add_argument(
        "--drain-timeout",
        type=options.seconds,
        default=_default("drain_timeout"),
        metavar="SECONDS",
        help="how long a stop may spend delivering what is queued",
    )
    output = parser.add_argument_group("output")
    options.statistics_options(output, _default("stats_interval"), options.seconds)
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
        buffer=args.buffer,
        dpdk=args.dpdk,
        eal=args.eal,
    ).validate()


def run_capture(argv: list[str]) -> int:
    from fastcapa.pipeline import Pipeline

    args = capture_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except FastcapaError as e:
        return fail(EXIT_USAGE, e)
    with Pipeline(settings) as pipeline:
        try:
            pipeline.prepare()
            pipeline.serve_metrics()
        except FastcapaError as e:
            return fail(EXIT_USAGE, e)
        print(
            f"fastcapa: {'replaying' if settings.read else 'capturing on'} "
            f"{pipeline.source_name()} "
            f"with {settings.rx_queues} queue(s) and {settings.workers} transmit worker(s) "
            f"into topic {settings.topic} at {settings.kafka['bootstrap.servers']}",
            file=sys.stderr,
            flush=True,
        )
        for line in pipeline.source_notes():
            print(f"fastcapa: {line}", file=sys.stderr, flush=True)
        if settings.read and pipeline.linktype != 1:
            print(
                f"fastcapa: note: {settings.read} has link type {pipeline.linktype}, not "
                f"Ethernet; frames are carried as they are (dump them with --linktype "
                f"{pipeline.linktype})",
                file=sys.stderr,
            )
        try:
            outcome = pipeline.run()
        except (FastcapaError, OSError) as e:
            # A failure while running (a full disk under --stats-json, say):
            # leaving the `with` stops and joins every worker.
            return fail(EXIT_FAILED, e)
    status = EXIT_OK
    if outcome.error:
        status = fail(EXIT_FAILED, outcome.error)
    for problem in outcome.final.accounting_errors():
        status = fail(EXIT_FAILED, f"accounting does not add up: {problem}")
    return status


def dump_parser() -> argparse.ArgumentParser:
    parser = options.Parser(
        prog="fastcapa dump",
        description="Write what Kafka topics hold (fastcapa's messages) as a pcap or pcapng"
        " file, in capture-time order.",
        formatter_class=options.HelpFormatter,
    )
    options.kafka_options(parser, several_topics=True)
    output = parser.add_argument_group("output")
    output.add_argument(
        "-o",
        "--output",
        default="-",
        metavar="FILE",
        help="capture file to write, - for standard output",
    )
    output.add_argument(
        "--format",
        choices=("pcap", "pcapng"),
        help="file format (default: pcapng for an -o name ending in .pcapng, else pcap);"
        " pcapng has one interface per topic, named after it",
    )
    output.add_argument(
        "--from",
        dest="start",
        type=options.capture_time,
        metavar="TIME",
        help=f"first capture time, matched on the key ({options.CAPTURE_TIME_HELP})",
    )
    output.add_argument(
        "--to",
        dest="end",
        type=options.capture_time,
        metavar="TIME",
        help="last capture time (inclusive; as --from)",
    )
    output.add_argument(
        "--count", type=options.count, default=0, metavar="N", help="stop after N frames (0: all)"
    )
    output.add_argument(
        "--linktype",
        type=options.integer,
        default=1,
        metavar="N",
        help="link-layer header type of the file (1: Ethernet)",
    )
    output.add_argument(
        "--filter",
        metavar="EXPR",
        help="write only the frames this tcpdump-syntax filter matches"
        " (compiled by libpcap for --linktype)",
    )
    output.add_argument(
        "--follow",
        action="store_true",
        help="keep reading new records; without it, stop at the end offsets seen at start",
    )
    options.timeout_option(output)
    index = parser.add_argument_group("index (see fastcapa index)")
    index.add_argument(
        "--index-topic",
        metavar="TOPIC[,TOPIC...]",
        type=options.topic_list,
        help="the topic's index, one per topic (default: TOPIC.index); what it does not"
        " cover is scanned",
    )
    index.add_argument(
        "--no-index",
        action="store_true",
        help="scan the window even where an index exists (same output, more reading)",
    )
    index.add_argument(
        "--explain",
        action="store_true",
        help="say on stderr, before reading, what will be read: per partition the slices"
        " in the window, those selected, the records to read and what is scanned",
    )
    return parser


def run_dump(argv: list[str]) -> int:
    from fastcapa import dump

    args = dump_parser().parse_args(options.attach_relative_times(argv, ("--from", "--to")))
    if not 0 <= args.linktype <= 0xFFFF:
        return fail(
            EXIT_USAGE,
            ConfigError(f"--linktype must be a link-layer type number, got {args.linktype}"),
        )
    topics = [t for group in args.topic or [[options.DEFAULT_TOPIC]] for t in group]
    repeated = sorted({t for t in topics if topics.count(t) > 1})
    if repeated:
        return fail(EXIT_USAGE, ConfigError(f"topic {repeated[0]} is named twice"))
    from fastcapa.index import index_topic_of

    index_topics = args.index_topic or [index_topic_of(t) for t in topics]
    if len(index_topics) != len(topics):
        return fail(
            EXIT_USAGE,
            ConfigError(
                f"--index-topic names {len(index_topics)} topics for {len(topics)} topics"
                " to read: give one per topic, in the same order"
            ),
        )
    try:
        settings = kafka_settings(args.config, args.overrides, args.kafka_broker)
    except FastcapaError as e:
        return fail(EXIT_USAGE, e)
    query = dump.Query(
        topics=tuple(topics),
        index_topics=None if args.no_index else tuple(index_topics),
        explain=args.explain,
        output=args.output,
        format=args.format or dump.format_of(args.output),
        start=args.start,
        end=args.end,
        count=args.count,
        linktype=args.linktype,
        follow=args.follow,
        timeout=args.timeout,
        filter=args.filter,
    )
    return dump.run(settings, query)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["dump"]:
            return run_dump(argv[1:])
        if argv[:1] == ["index"]:
            from fastcapa import index

            return index.run(argv[1:])
        if argv[:1] == ["extcap"]:
            from fastcapa import extcap

            return extcap.run(argv[1:])
        if argv[:1] == ["capture"]:
            argv = argv[1:]
        return run_capture(argv)
    except KeyboardInterrupt:
        return options.EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_FAILED
