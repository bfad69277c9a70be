"""A steady, numbered stream of frames for the fault tests, and its checks.

Each frame is an Ethernet/IPv4/UDP frame whose payload carries a marker, the
stream's number, the frame's sequence number and the time it was sent (µs),
padded to a fixed size. Everything else in the frame follows from the
sequence number, so a reader can rebuild the exact frame from the marker it
finds and compare every byte of what Kafka holds.

Run inside the test's network namespace (as `sender.py` is):

    python -m fastcapa_support.steady IFACE STREAM COUNT RATE SIZE

sends frames 0..COUNT-1 at RATE frames/s and prints: frames sent, time of the
first and the last send (µs since the epoch).

From the tests: `SteadySender` runs it in the background, `check_topic` reads
a topic back with an independent consumer (confluent-kafka) and checks every
record against the frame it must be, and `ProcWatch` samples a process's
resident memory and open file descriptors.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from fastcapa_support.frames import udp_frame
from fastcapa_support.kafka_read import watermarks
from fastcapa_support.sender import packet_socket, send

MARKER = b"FCFT"
# marker, stream, seq, sent_us
_TAG = struct.Struct("!4sIQQ")
_HEADERS = 14 + 20 + 8
FLOWS = 16


def frame(stream: int, seq: int, sent_us: int, size: int) -> bytes:
    """The frame `seq` of `stream`, sent at `sent_us`, `size` bytes long."""
    flow = seq % FLOWS
    tag = _TAG.pack(MARKER, stream, seq, sent_us)
    pad_len = max(0, size - _HEADERS - len(tag))
    # Padding that differs per frame, so that a mixed-up tail shows.
    pad = (seq.to_bytes(8, "big") * (pad_len // 8 + 1))[:pad_len]
    payload = tag + pad
    return udp_frame(
        payload,
        dport=9000,
        sport=20000 + flow,
        ident=seq & 0xFFFF,
        ip_src=bytes([10, 1, stream & 0xFF, flow + 1]),
        ip_dst=bytes([10, 1, 0, 200]),
        mac_src=bytes([2, 0, 1, 0, stream & 0xFF, flow + 1]),
    )


def parse(value: bytes) -> tuple[int, int, int] | None:
    """(stream, seq, sent_us) of a frame made by `frame`, else None."""
    at = _HEADERS
    if len(value) < at + _TAG.size or value[at : at + 4] != MARKER:
        return None
    _, stream, seq, sent_us = _TAG.unpack_from(value, at)
    return stream, seq, sent_us


# ---------------------------------------------------------------- the sender


def main() -> None:
    iface, stream, count, rate, size = sys.argv[1], *map(int, sys.argv[2:6])
    sock = packet_socket(iface)
    gap = 1.0 / rate
    first = last = 0
    start = time.monotonic()
    for seq in range(count):
        delay = start + seq * gap - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        last = time.time_ns() // 1000
        first = first or last
        send(sock, frame(stream, seq, last, size))
    print(count, first, last, flush=True)


class SteadySender:
    """The steady sender running in the namespace of a VethPair, in the background."""

    def __init__(self, veth, count: int, rate: int, size: int = 200, stream: int = 1) -> None:
        self.count, self.rate, self.size, self.stream = count, rate, size, stream
        self.proc = veth.start(
            "steady",
            *(str(stream), str(count), str(rate), str(size)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait(self, timeout: float | None = None) -> dict:
        """Until every frame is sent; the sender's report."""
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err
        sent, first, last = (int(x) for x in out.split())
        return {"sent": sent, "first_us": first, "last_us": last}

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


# ---------------------------------------------------------------- the checks

# How far a key (the kernel's receive time) may lie from the send time the
# frame carries: the coarse clock lags by a tick; softirq may run late on a
# loaded machine. A key taken at produce time would lie the outage away.
KEY_BEFORE_SEND_US = 50_000
KEY_AFTER_SEND_US = 5_000_000


@dataclass
class Verdict:
    """What a topic holds of one stream, frame by frame."""

    count: int  # frames sent: seq 0..count-1
    records: int = 0
    seen: bytearray = field(default_factory=bytearray)  # times each seq was read
    bad: list[str] = field(default_factory=list)  # records that are not a sent frame, exactly
    keys: dict[int, int] = field(default_factory=dict)  # seq -> key (µs), when kept

    @property
    def delivered(self) -> int:
        return sum(1 for n in self.seen if n)

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.seen if n > 1)

    @property
    def missing(self) -> list[int]:
        return [seq for seq, n in enumerate(self.seen) if n == 0]

    def summary(self) -> str:
        missing = self.missing
        return (
            f"{self.records} records: {self.delivered} of {self.count} frames, "
            f"{self.duplicates} duplicates, {len(missing)} missing {missing[:10]}, "
            f"{len(self.bad)} bad {self.bad[:3]}"
        )


def check_topic(
    bootstrap: str,
    topic: str,
    stream: int,
    count: int,
    size: int,
    keep_keys: bool = False,
    timeout: float = 120,
) -> Verdict:
    """Reads every record the topic holds now with confluent-kafka and checks
    each one: the value is, byte for byte, the frame its marker names; the key
    is 8 bytes, big-endian µs, within reach of the frame's send time."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    verdict = Verdict(count, seen=bytearray(count))
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"faults-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        ends = watermarks(consumer, topic)
        remaining = {p: hi for p, (lo, hi) in ends.items() if hi > lo}
        consumer.assign([TopicPartition(topic, p, ends[p][0]) for p in remaining])
        deadline = time.monotonic() + timeout
        while remaining:
            assert time.monotonic() < deadline, f"{topic}: still waiting for {remaining}"
            for m in consumer.consume(num_messages=10_000, timeout=0.1):
                if m.error() is not None:
                    assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                    continue
                verdict.records += 1
                _check_record(verdict, m.key(), m.value(), stream, size, keep_keys)
                if m.offset() + 1 >= remaining.get(m.partition(), 0):
                    remaining.pop(m.partition(), None)
    finally:
        consumer.close()
    return verdict


def _check_record(
    verdict: Verdict, key: bytes | None, value: bytes | None, stream: int, size: int, keep: bool
) -> None:
    where = parse(value or b"")
    if where is None or where[0] != stream or where[1] >= verdict.count:
        verdict.bad.append(f"not a frame of stream {stream}: {(value or b'')[:60].hex()}")
        return
    _, seq, sent_us = where
    if value != frame(stream, seq, sent_us, size):
        verdict.bad.append(f"seq {seq}: value differs from the frame sent")
        return
    if key is None or len(key) != 8:
        verdict.bad.append(f"seq {seq}: key {key!r} is not 8 bytes")
        return
    key_us = int.from_bytes(key, "big")
    if not sent_us - KEY_BEFORE_SEND_US <= key_us <= sent_us + KEY_AFTER_SEND_US:
        verdict.bad.append(f"seq {seq}: key {key_us} µs, sent at {sent_us} µs")
        return
    verdict.seen[seq] += 1
    if keep:
        verdict.keys[seq] = key_us


# ---------------------------------------------------------------- the probe's resources


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS) and RssAnon of a process, in KiB. RssAnon
    leaves out mapped files and the AF_PACKET rings (mapped kernel pages)."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM", "RssAnon"):
            figures[name] = int(value.split()[0])
    return figures


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Sample:
    t: float  # seconds since the watch started
    rss_kib: int
    hwm_kib: int
    anon_kib: int
    fds: int


class ProcWatch:
    """Samples a process's VmRSS, VmHWM and open fds every `period` seconds,
    in a thread, until stopped or the process is gone."""

    def __init__(self, pid: int, period: float = 1.0) -> None:
        self.pid, self.period = pid, period
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period)

    def sample(self) -> Sample | None:
        t = round(time.monotonic() - self._start, 1)
        try:
            mem = memory_kib(self.pid)
            s = Sample(t, mem["VmRSS"], mem["VmHWM"], mem["RssAnon"], open_fds(self.pid))
        except (OSError, KeyError):  # gone, or a zombie (no memory figures)
            return None
        self.samples.append(s)
        return s

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._thread.join()
        return self.samples

    @property
    def peak_kib(self) -> int:
        return max((s.hwm_kib for s in self.samples), default=0)


if __name__ == "__main__":
    main()
