"""`fastcapa dump`: the way back, Kafka to a capture file (pycapa's consumer).

Reads the topic's records (key = capture time in µs, value = frame) and writes
them as a classic pcap file that tcpdump and tshark read. Without --follow it
stops at the end offsets seen at start. Records of several partitions are
merged into time order through a bounded reorder window. --from/--to seek with
Kafka's offsets-for-times (the probe sets each record's Kafka timestamp to the
capture time) and then filter on the key itself.
"""

from __future__ import annotations

import heapq
import logging
import struct
import sys
import time
import uuid
from dataclasses import dataclass
from typing import IO, Any

from fastcapa.config import explain_connection_failure
from fastcapa.errors import ConfigError, FastcapaError, KafkaError
from fastcapa.options import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail

# Frames held back to put the records of several partitions in time order.
REORDER_WINDOW = 10_000
# The largest snapshot length libpcap accepts in a file header.
PCAP_SNAPLEN = 262_144


class PcapWriter:
    """Writes the classic pcap format (microsecond timestamps, host byte order
    as libpcap does). Writing it is a fixed 24-byte header and a 16-byte header
    per record; reading capture files, the hard part, is left to libpcap."""

    def __init__(self, stream: IO[bytes], linktype: int) -> None:
        self.stream = stream
        # Capture times a pcap record cannot hold (its seconds are 32 bits).
        self.out_of_range = 0
        stream.write(struct.pack("=IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, PCAP_SNAPLEN, linktype))

    def write(self, ts_us: int, frame: bytes) -> None:
        seconds, micros = split_timestamp(ts_us)
        if not -(1 << 31) <= seconds < 1 << 32:
            self.out_of_range += 1
        header = struct.pack("=IIII", seconds & 0xFFFFFFFF, micros, len(frame), len(frame))
        self.stream.write(header)
        self.stream.write(frame)


def split_timestamp(ts_us: int) -> tuple[int, int]:
    """Key (µs, unsigned 64-bit) -> (seconds, microseconds). A key past 2^63
    is a time before 1970 that wrapped (libpcap gives such times when a file's
    32-bit seconds are negative), so it is read as signed."""
    signed = ts_us - (1 << 64) if ts_us >= 1 << 63 else ts_us
    return divmod(signed, 1_000_000)


@dataclass(frozen=True)
class Query:
    """What `fastcapa dump` is asked for (parsed by the command line)."""

    topic: str
    output: str  # a path, or "-" for standard output
    start: int | None  # first key (µs), inclusive
    end: int | None  # last key (µs), inclusive
    count: int  # 0: no limit
    linktype: int
    follow: bool
    timeout: float


def run(settings: dict[str, str], query: Query) -> int:
    """Writes the frames the query asks for; returns the exit status."""
    try:
        dumper = Dumper(settings, query.topic, query.timeout)
    except FastcapaError as e:
        return fail(EXIT_USAGE, e)
    try:
        stream = sys.stdout.buffer if query.output == "-" else open(query.output, "wb")  # noqa: SIM115
    except OSError as e:
        dumper.close()
        return fail(EXIT_USAGE, ConfigError(f"cannot write {query.output}: {e.strerror}"))
    try:
        writer = PcapWriter(stream, query.linktype)
        written = dumper.dump(writer, query.start, query.end, query.count, query.follow)
        stream.flush()
    except FastcapaError as e:
        return fail(EXIT_FAILED, e)
    except KeyboardInterrupt:
        stream.flush()
        return EXIT_OK
    finally:
        dumper.close()
        if stream is not sys.stdout.buffer:
            stream.close()
    print(f"fastcapa dump: {written} frames from topic {query.topic}", file=sys.stderr)
    if writer.out_of_range:
        print(
            f"fastcapa dump: note: {writer.out_of_range} capture times lie outside what a pcap "
            "record holds (32-bit seconds) and were wrapped",
            file=sys.stderr,
        )
    return EXIT_OK


class Dumper:
    def __init__(self, settings: dict[str, str], topic: str, timeout: float) -> None:
        from confluent_kafka import Consumer, KafkaException

        self.topic, self.timeout = topic, timeout
        # librdkafka's reason for a failed connection (a certificate it could
        # not verify) comes as an error event; a failed request says only
        # "transport failure".
        self.last_error: str | None = None

        def keep_error(error: Any) -> None:
            self.last_error = error.str()

        config = {
            **settings,
            "error_cb": keep_error,
            "group.id": f"fastcapa-dump-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
        # librdkafka logs every failed connection attempt; what matters reaches
        # the operator as fastcapa's own one-line error instead.
        quiet = logging.getLogger("fastcapa.dump.librdkafka")
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
        try:
            self.consumer = Consumer(config, logger=quiet)
        except KafkaException as e:
            raise ConfigError(f"invalid Kafka setting: {e.args[0].str()}") from None
        try:
            metadata = self.consumer.list_topics(topic, timeout=timeout)
        except KafkaException as e:
            self.consumer.poll(0)  # serves the error events, which say why
            reason = explain_connection_failure(self.last_error or e.args[0].str(), settings)
            raise KafkaError(
                f"cannot reach Kafka at {settings['bootstrap.servers']}: {reason}"
            ) from None
        described = metadata.topics.get(topic)
        if described is None or described.error is not None or not described.partitions:
            raise ConfigError(f"topic {topic!r} does not exist")
        self.partitions = sorted(described.partitions)

    def close(self) -> None:
        self.consumer.close()

    def dump(
        self, writer: PcapWriter, start: int | None, end: int | None, count: int, follow: bool
    ) -> int:
        from confluent_kafka import KafkaError as Error
        from confluent_kafka import KafkaException, TopicPartition

        try:
            ends = {
                p: self.consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=self.timeout
                )[1]
                for p in self.partitions
            }
            assignment = [TopicPartition(self.topic, p, 0) for p in self.partitions]
            if start is not None:
                wanted = [TopicPartition(self.topic, p, start // 1000) for p in self.partitions]
                found = self.consumer.offsets_for_times(wanted, timeout=self.timeout)
                # -1: no record at or after that time; start at the end.
                assignment = [
                    TopicPartition(
                        self.topic,
                        tp.partition,
                        tp.offset if tp.offset >= 0 else ends[tp.partition],
                    )
                    for tp in found
                ]
        except KafkaException as e:
            raise KafkaError(f"cannot read offsets of {self.topic}: {e.args[0].str()}") from None
        pending = {tp.partition for tp in assignment if follow or tp.offset < ends[tp.partition]}
        self.consumer.assign(assignment)
        window: list[tuple[int, int, bytes]] = []
        sequence = written = skipped = 0
        progress = _Progress()

        def emit(limit: int) -> bool:
            nonlocal written
            while len(window) > limit:
                ts, _, frame = heapq.heappop(window)
                writer.write(ts, frame)
                written += 1
                if count and written >= count:
                    return True
            return False

        while pending:
            batch = self.consumer.consume(num_messages=1000, timeout=0.2)
            for message in batch:
                error = message.error()
                partition = message.partition()
                if error is not None:
                    if error.code() == Error._PARTITION_EOF:
                        if not follow:
                            pending.discard(partition)
                        continue
                    raise KafkaError(f"reading {self.topic}: {error.str()}")
                offset = message.offset() or 0
                if not follow and offset >= ends[partition] - 1:
                    pending.discard(partition)
                if not follow and offset >= ends[partition]:
                    continue
                key = message.key()
                if key is None or len(key) != 8:
                    skipped += 1
                    continue
                ts = int.from_bytes(key, "big")
                if (start is not None and ts < start) or (end is not None and ts > end):
                    continue
                heapq.heappush(window, (ts, sequence, message.value() or b""))
                sequence += 1
            # Following a quiet topic, nothing more may come: write what is held.
            if emit(0 if follow and not batch else REORDER_WINDOW):
                return written
            progress.show(written + len(window))
        emit(0)
        progress.done()
        if skipped:
            print(
                f"fastcapa dump: skipped {skipped} records whose key is not 8 bytes",
                file=sys.stderr,
            )
        return written


class _Progress:
    """A progress line on stderr, only when stderr is a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.last = time.monotonic()

    def show(self, frames: int) -> None:
        if self.enabled and time.monotonic() - self.last >= 1.0:
            self.last = time.monotonic()
            sys.stderr.write(f"\rfastcapa dump: {frames} frames read")
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
