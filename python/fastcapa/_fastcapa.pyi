"""Type stub of the native data plane (src/py/). Each worker's loop runs on
a named native thread (fcapa-rx-N, fcapa-tx-N) that never takes
the GIL; these objects start, steer, join and read it."""

from typing import Any, Literal, Self, final

LIBRDKAFKA_VERSION: str
RX_COUNTERS: list[str]
TX_COUNTERS: list[str]
DUMP_COUNTERS: list[str]
DUMP_REORDER_BOUND_US: int
INDEX_COUNTERS: list[str]
INDEX_SLICE_RECORDS: int
MAX_SNAPLEN: int
SLOT_DATA_BYTES: int
SLOT_OVERHEAD_BYTES: int

_Fanout = Literal["hash", "qm", "cpu", "lb"]
_Idle = Literal["spin", "poll"]
# (kind, reason, count so far) per event, and how many were lost to a full log.
_EventBatch = tuple[list[tuple[str, str, int]], int]

class FastcapaError(Exception): ...
class ConfigError(FastcapaError): ...
class FilterError(ConfigError): ...
class CaptureError(FastcapaError): ...
class KafkaError(FastcapaError): ...

@final
class TxRing:
    """`size` preallocated slots (a power of two) per lane; one lane per
    transmit worker serving the ring."""

    def __new__(cls, size: int, *, lanes: int, slot_bytes: int) -> Self: ...
    def fill(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    @property
    def lanes(self) -> int: ...

@final
class FileQueue:
    """One receive queue of a capture file: its share (`index` of `queues`)
    of the file's flows, read from the start."""

    def __new__(cls, path: str, *, index: int, queues: int, limit: int) -> Self: ...
    @property
    def linktype(self) -> int: ...
    def close(self) -> None: ...

@final
class Filter:
    """A capture filter compiled by libpcap from tcpdump syntax."""

    @staticmethod
    def compile_live(expr: str, snaplen: int, interface: str) -> Filter: ...
    @staticmethod
    def compile_user(expr: str) -> Filter: ...
    def __len__(self) -> int: ...

@final
class AfPacketQueue:
    """One AF_PACKET socket with its TPACKET_V3 ring, capturing once made."""

    def __new__(
        cls,
        interface: str,
        *,
        frames: int,
        snaplen: int,
        fanout: tuple[int, _Fanout] | None,
        filter: Filter | None,
        promiscuous: bool,
    ) -> Self: ...
    @property
    def interface(self) -> str: ...
    @property
    def linktype(self) -> int: ...
    def close(self) -> None: ...

# Whether this build has the DPDK backend; the three below exist only if so.
DPDK: bool

def start_eal(args: list[str]) -> None: ...

@final
class DpdkPort:
    """A started DPDK ethernet port with its receive queues."""

    def __new__(
        cls,
        device: str,
        *,
        queues: int,
        descriptors: int,
        burst: int,
        filter: Filter | None,
    ) -> Self: ...
    def queue(self, index: int) -> DpdkQueue: ...
    @property
    def name(self) -> str: ...
    @property
    def driver(self) -> str: ...
    @property
    def descriptors(self) -> int: ...
    @property
    def rss(self) -> bool: ...
    @property
    def timestamps(self) -> str: ...
    def close(self) -> None: ...

@final
class DpdkQueue:
    """One receive queue of a DpdkPort; a receive worker takes it over."""

    @property
    def interface(self) -> str: ...
    @property
    def linktype(self) -> int: ...
    def close(self) -> None: ...

@final
class RxGroup:
    """The stop and `--count` every receive worker of one run shares."""

    def __new__(cls, *, count: int) -> Self: ...
    def stop(self) -> None: ...

@final
class RxWorker:
    """A receive worker: one native thread draining one queue into one ring."""

    def __new__(
        cls,
        name: str,
        queue: AfPacketQueue | DpdkQueue | FileQueue,
        ring: TxRing,
        group: RxGroup,
        *,
        burst: int,
        idle: _Idle,
        snaplen: int,
        hash_flows: bool,
        cpu: int | None,
    ) -> Self: ...
    @property
    def name(self) -> str: ...
    def start(self) -> None: ...
    def join(self, timeout: float | None = None) -> bool: ...
    def error(self) -> str | None: ...
    def counters(self) -> dict[str, int]: ...
    def events(self) -> _EventBatch: ...

@final
class TxWorker:
    """A transmit worker with its own Kafka producer, serving (ring, lane) pairs."""

    def __new__(
        cls,
        name: str,
        lanes: list[tuple[TxRing, int]],
        topic: str,
        settings: list[tuple[str, str]],
        *,
        burst: int,
        queue_full_wait: float | None,
        partition_by: Literal["batch", "key", "flow"],
        partitions: int,
        worker: int,
        workers: int,
        stats_fd: int | None = None,
    ) -> Self: ...
    def start(self, cpu: int | None = None) -> None: ...
    def finish(self, drain_timeout: float) -> None: ...
    def abort(self) -> None: ...
    def join(self, timeout: float | None = None) -> bool: ...
    @property
    def name(self) -> str: ...
    def counters(self) -> dict[str, int]: ...
    def error(self) -> str | None: ...
    def events(self) -> _EventBatch: ...

@final
class Dump:
    """`fastcapa dump`'s query: opened (filter compiled, Kafka reached, the
    topics' offsets read) when made; `run` works without the GIL."""

    def __new__(
        cls,
        topics: list[str],
        settings: list[tuple[str, str]],
        output_fd: int,
        *,
        start: int | None = None,
        end: int | None = None,
        count: int = 0,
        linktype: int = 1,
        follow: bool = False,
        filter: str | None = None,
        timeout: float = 10.0,
        index_topics: list[str] | None = None,
        format: str = "pcap",
    ) -> Self: ...
    def run(self, seconds: float) -> bool: ...
    def finish(self) -> None: ...
    def plan(self) -> dict[str, Any]: ...
    def counters(self) -> dict[str, int]: ...
    def topic_counters(self) -> list[tuple[str, dict[str, int]]]: ...
    @property
    def partitions(self) -> int: ...
    def close(self) -> None: ...

@final
class Indexer:
    """`fastcapa index`'s group member: joined when made; `run` works
    without the GIL."""

    def __new__(
        cls,
        topic: str,
        index_topic: str,
        group: str,
        settings: list[tuple[str, str]],
        *,
        linktype: int,
        slice_records: int,
        slice_seconds: float,
        timeout: float,
        until_caught_up: bool,
    ) -> Self: ...
    def run(self, seconds: float) -> bool: ...
    def measure_lag(self) -> None: ...
    def finish(self, seconds: float) -> None: ...
    def counters(self) -> dict[str, int]: ...
    def close(self) -> None: ...

def check_topic(topic: str, settings: list[tuple[str, str]], timeout: float) -> int: ...
def check_kafka(settings: list[tuple[str, str]], topic: str, timeout: float) -> None: ...
def drop_privileges(user: tuple[int, int] | None = None) -> None: ...
