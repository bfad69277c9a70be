"""An independent Kafka reader for the tests (confluent-kafka, not fastcapa)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes
    value: bytes
    timestamp_ms: int


# What a client hears while a restarted broker takes its partitions back
# (or one woken from SIGSTOP, fenced meanwhile, is unfenced again).
_LEADER_CHANGING = {
    KafkaError._UNKNOWN_PARTITION,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
}


def watermarks(consumer: Consumer, topic: str, timeout: float = 30.0) -> dict[int, tuple[int, int]]:
    """{partition: (low, high)} offsets of every partition of `topic`. Right
    after a broker restarts, a partition may not have its leader yet, or the
    client may not know it: such errors are retried until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
            return {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
                for p in sorted(partitions)
            }
        except KafkaException as e:
            if e.args[0].code() not in _LEADER_CHANGING or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def read_topic(bootstrap: str, topic: str, timeout: float = 30.0) -> list[Record]:
    """Every record the topic holds now, partition by partition, in offset order."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        ends = watermarks(consumer, topic, timeout)
        wanted = {p: hi for p, (lo, hi) in ends.items() if hi > lo}
        consumer.assign([TopicPartition(topic, p, ends[p][0]) for p in wanted])
        records: list[Record] = []
        remaining = dict(wanted)
        deadline = time.monotonic() + timeout
        while remaining:
            # consume() waits for a whole batch or the timeout: keep it short.
            batch = consumer.consume(num_messages=10_000, timeout=0.1)
            assert time.monotonic() < deadline, f"{topic}: still waiting for {remaining}"
            for m in batch:
                if m.error() is not None:
                    assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                    continue
                records.append(
                    Record(m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1])
                )
                if m.offset() + 1 >= wanted[m.partition()]:
                    remaining.pop(m.partition(), None)
        records.sort(key=lambda r: (r.partition, r.offset))
        return records
    finally:
        consumer.close()
