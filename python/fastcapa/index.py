"""`fastcapa index`: builds the index of a capture topic into a side topic,
as one member of a Kafka consumer group.

The member runs in the native extension (src/index/): it reads its share of
the topic's partitions, builds slices (consecutive offsets, their capture-time
range, which records hold which address, port, protocol, EtherType and VLAN)
and commits a partition's offsets only once the index topic has acknowledged
every slice up to them. This module holds the rest: the command line, the
index topic's creation, the statistics (table, JSON lines, Prometheus) and
the signals. `fastcapa dump` reads the index (docs/dump.md).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import IO, TYPE_CHECKING

from fastcapa import options
from fastcapa.errors import ConfigError, FastcapaError, KafkaError
from fastcapa.librdkafka import check_topic, kafka_settings
from fastcapa.options import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail
from fastcapa.signals import SignalLatch
from fastcapa.stats import JsonLines

if TYPE_CHECKING:
    from fastcapa import _fastcapa

# How long one native call works before Python looks at signals and reports.
STEP_SECONDS = 0.2
# A slice is closed this long after its first record at most, so a quiet
# topic is queryable seconds after capture.
SLICE_SECONDS = 1.0
INDEX_SUFFIX = ".index"


def index_topic_of(topic: str) -> str:
    """The default index topic of a capture topic."""
    return topic + INDEX_SUFFIX


def group_of(topic: str) -> str:
    """The default consumer group of a topic's indexers."""
    return f"fastcapa-index.{topic}"


def parser() -> argparse.ArgumentParser:
    from fastcapa import _fastcapa

    p = options.Parser(
        prog="fastcapa index",
        description="Build the index of a capture topic into a side topic, as one member of a "
        "Kafka consumer group: start more members (on more machines) and Kafka spreads the "
        "partitions over them. fastcapa dump then reads only the records a query can match.",
        formatter_class=options.HelpFormatter,
    )
    kafka = options.kafka_options(p)
    kafka.add_argument(
        "--index-topic",
        metavar="TOPIC",
        help="where the index goes (default: TOPIC.index, created like TOPIC when missing)",
    )
    kafka.add_argument(
        "--group",
        metavar="GROUP",
        help="consumer group of the topic's indexers (default: fastcapa-index.TOPIC)",
    )
    options.timeout_option(kafka)
    work = p.add_argument_group("indexing")
    work.add_argument(
        "--linktype",
        type=options.integer,
        default=1,
        metavar="N",
        help="link-layer header type of the frames (1: Ethernet); records of a type not"
        " parsed are indexed under no term and read by every query",
    )
    work.add_argument(
        "--slice-records",
        type=options.integer,
        # The size that keeps an IMIX topic's index within 2 % of it
        # (docs/dump.md, "The index").
        default=_fastcapa.INDEX_SLICE_RECORDS,
        metavar="N",
        help="records per slice at most",
    )
    work.add_argument(
        "--slice-seconds",
        type=options.positive_seconds,
        default=SLICE_SECONDS,
        metavar="SECONDS",
        help="a slice is written at most this long after its first record was read",
    )
    work.add_argument(
        "--until-caught-up",
        action="store_true",
        help="stop once everything the topic held at start is indexed (rebuilds, tests)",
    )
    work.add_argument(
        "--drain-timeout",
        type=options.positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long a stop may wait for Kafka to acknowledge the last slices",
    )
    output = p.add_argument_group("output")
    options.statistics_options(output, 5.0, options.positive_seconds)
    return p


def ensure_index_topic(
    settings: dict[str, str], topic: str, index_topic: str, timeout: float
) -> bool:
    """Creates the index topic when missing: as many partitions as the
    capture topic, its replication, its retention. True if it was created.
    Raises ConfigError (no capture topic) or KafkaError."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AdminClient,
        ConfigResource,
        NewTopic,
    )

    admin = AdminClient({**settings, "log_level": "0"})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as e:
        raise KafkaError(
            f"cannot reach Kafka at {settings['bootstrap.servers']} within {timeout:g} s: "
            f"{e.args[0].str() if e.args else e}"
        ) from None
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        raise ConfigError(f"topic {topic!r} does not exist")
    if index_topic in metadata.topics:
        return False
    partitions = described.partitions
    replicas = max(len(p.replicas) for p in partitions.values()) or 1
    config = {"cleanup.policy": "delete"}
    try:
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        described_config = admin.describe_configs([resource])[resource].result(timeout)
        for name in ("retention.ms", "retention.bytes"):
            entry = described_config.get(name)
            if entry is not None and entry.value is not None:
                if name == "retention.bytes" and entry.value != "-1":
                    # The index is a small fraction of the topic: the same
                    # byte budget would outlive it. Time is what they share.
                    continue
                config[name] = entry.value
    except KafkaException:
        pass  # not allowed to describe: the broker's defaults then
    future = admin.create_topics(
        [
            NewTopic(
                index_topic,
                num_partitions=len(partitions),
                replication_factor=replicas,
                config=config,
            )
        ],
        request_timeout=timeout,
    )[index_topic]
    created = True
    try:
        future.result(timeout)
    except KafkaException as e:
        error = e.args[0] if e.args else None
        if error is None or error.name() != "TOPIC_ALREADY_EXISTS":
            reason = error.str() if error is not None else str(e)
            raise KafkaError(f"cannot create the index topic {index_topic}: {reason}") from None
        created = False  # another member made it first
    # The brokers learn of a new topic a moment after the controller says
    # it exists: wait until every partition has a leader.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(KafkaException):
            described = admin.list_topics(index_topic, timeout=timeout).topics.get(index_topic)
            if (
                described is not None
                and described.error is None
                and len(described.partitions) == len(partitions)
                and all(p.leader >= 0 for p in described.partitions.values())
            ):
                return created
        time.sleep(0.1)
    raise KafkaError(f"the index topic {index_topic} has no leader after {timeout:g} s")


def run(argv: list[str]) -> int:
    from fastcapa import _fastcapa

    args = parser().parse_args(argv)
    try:
        check_topic(args.topic)
        index_topic = check_topic(args.index_topic or index_topic_of(args.topic))
        if index_topic == args.topic:
            raise ConfigError("--index-topic must not be the capture topic itself")
        if not 0 <= args.linktype <= 0xFFFF:
            raise ConfigError(f"--linktype must be a link-layer type number, got {args.linktype}")
        if not 1 <= args.slice_records <= 1 << 20:
            raise ConfigError(f"--slice-records must be 1 to {1 << 20}, got {args.slice_records}")
        settings = kafka_settings(args.config, args.overrides, args.kafka_broker)
        group = args.group or group_of(args.topic)
        reporter = IndexReporter(sys.stderr, args.stats_json)
    except FastcapaError as e:
        return fail(EXIT_USAGE, e)
    try:
        try:
            # The extension's client first: a certificate or a password the
            # connection fails on is refused at once, in fastcapa's words.
            _fastcapa.check_kafka(list(settings.items()), args.topic, args.timeout)
            created = ensure_index_topic(settings, args.topic, index_topic, args.timeout)
            indexer = _fastcapa.Indexer(
                args.topic,
                index_topic,
                group,
                list(settings.items()),
                linktype=args.linktype,
                slice_records=args.slice_records,
                slice_seconds=args.slice_seconds,
                timeout=args.timeout,
                until_caught_up=args.until_caught_up,
            )
        except FastcapaError as e:
            return fail(EXIT_USAGE, e)
        try:
            if args.metrics_port is not None:
                from fastcapa import metrics

                metrics.serve(args.metrics_port, metrics.IndexCollector(indexer.counters))
        except FastcapaError as e:
            indexer.close()
            return fail(EXIT_USAGE, e)
        print(
            f"fastcapa index: indexing topic {args.topic} into {index_topic}"
            f"{' (created)' if created else ''} as a member of group {group}"
            f" at {settings['bootstrap.servers']}",
            file=sys.stderr,
            flush=True,
        )
        try:
            return _drive(indexer, args, reporter)
        finally:
            indexer.close()
    finally:
        reporter.close()


def _drive(indexer: _fastcapa.Indexer, args: argparse.Namespace, reporter: IndexReporter) -> int:
    stops = SignalLatch()
    status = EXIT_OK
    next_report = time.monotonic() + args.stats_interval
    try:
        while not stops.count:
            try:
                if indexer.run(STEP_SECONDS):
                    break
            except FastcapaError as e:
                status = fail(EXIT_FAILED, e)
                break
            if time.monotonic() >= next_report:
                next_report += args.stats_interval
                indexer.measure_lag()
                reporter.report(indexer.counters())
        try:
            if stops.count < 2:
                indexer.finish(args.drain_timeout)
        except FastcapaError as e:
            status = fail(EXIT_FAILED, e) if status == EXIT_OK else status
        indexer.measure_lag()
        reporter.report(indexer.counters(), final=True)
    finally:
        stops.restore()
    return status


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}"


class IndexReporter:
    """The indexer's table on stderr and, when asked, JSON lines."""

    HEADER = (
        "        ------ read ------  ----- indexed -----  ---- index ----  ---- lag ----"
        "\n        records    per s    records     slices    bytes  of read  records  time"
    )

    def __init__(self, stream: IO[str], json_path: str | None) -> None:
        self.stream = stream
        self.json = JsonLines(json_path)
        self.previous: tuple[float, int] = (time.monotonic(), 0)
        self.reports = 0

    def report(self, counts: dict[str, int], final: bool = False) -> None:
        now = time.monotonic()
        then, read_before = self.previous
        rate = (counts["read"] - read_before) / (now - then) if now > then else 0.0
        self.previous = (now, counts["read"])
        share = counts["index_bytes"] / counts["read_bytes"] if counts["read_bytes"] else 0.0
        if self.reports % 10 == 0 or final:
            self.stream.write(self.HEADER + "\n")
        self.reports += 1
        self.stream.write(
            f"[idx]  {counts['read']:>9} {_human(rate):>8}  {counts['indexed']:>9}"
            f" {counts['slices']:>10}  {_human(counts['index_bytes']):>7} {share:>7.2%}"
            f"  {counts['lag_records']:>7} {counts['lag_us'] / 1e6:>5.1f}s\n"
        )
        self.stream.flush()
        self.json.write(
            {
                "time": round(time.time(), 3),
                "final": final,
                **counts,
                "read_per_s": round(rate, 1),
            }
        )

    def close(self) -> None:
        self.json.close()
