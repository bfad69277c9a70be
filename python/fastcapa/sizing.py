"""What a start may ask of the machine's memory: the transmit rings' slots,
the kernel's receive rings, the producers' queues (--buffer), and sizes in
the operator's words."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from fastcapa import _fastcapa
from fastcapa.errors import ConfigError

if TYPE_CHECKING:
    from fastcapa.config import CaptureSettings

# Memory a setting may ask for up front: transmit-ring slots are preallocated
# (up to 2 KiB each, plus their bookkeeping), and each receive queue maps a
# kernel ring of about 2 KiB per frame of -d. Past half of the machine's
# memory, a start would end in the OOM killer rather than in an error.
SLOT_BYTES = _fastcapa.SLOT_DATA_BYTES + _fastcapa.SLOT_OVERHEAD_BYTES
RX_FRAME_BYTES = 2048

# The producer queue is bounded by memory (--buffer), not by librdkafka's
# count of 100,000 messages, which a stream of small frames fills in seconds.
# librdkafka keeps about 220 bytes per queued message beside its key and
# value (docs/operating.md). A queue of n messages of b bytes takes about
# n * (b + MESSAGE_OVERHEAD); with a message limit M and a byte limit K that
# is at most K + MESSAGE_OVERHEAD * M, which the two limits below make equal
# to the budget, the byte limit taking over from messages of CROSSOVER bytes
# (key included) on.
MESSAGE_OVERHEAD = 224
CROSSOVER = 512
DEFAULT_BUFFER = 4 << 30
MIN_BUFFER = 1 << 20


def check_memory(settings: CaptureSettings) -> None:
    """Refuses rings and buffers that would ask for more than half of the
    machine's memory: such a start would end in the OOM killer."""
    budget = _physical_memory() // 2
    lanes = max(settings.workers, settings.rx_queues)
    rings = lanes * settings.tx_ring * SLOT_BYTES
    if rings > budget:
        raise ConfigError(
            f"-x/--tx-ring {settings.tx_ring} over {lanes} lane(s) preallocates "
            f"{_gib(rings)} of slots, more than half of this machine's {_gib(budget * 2)}"
        )
    kernel = settings.rx_queues * settings.descriptors * RX_FRAME_BYTES if settings.interface else 0
    if rings + kernel > budget:
        raise ConfigError(
            f"-d/--rx-desc {settings.descriptors} over {settings.rx_queues} queue(s) maps "
            f"{_gib(kernel)} of kernel rings (and the transmit rings {_gib(rings)}), "
            f"more than half of this machine's {_gib(budget * 2)}"
        )
    if rings + kernel + settings.buffer_bytes > budget:
        raise ConfigError(
            f"--buffer {_gib(settings.buffer_bytes)} with {_gib(rings + kernel)} of rings "
            f"is more than half of this machine's {_gib(budget * 2)}"
        )


def default_buffer() -> int:
    """--buffer's default: 4 GiB, or a quarter of the machine's memory if less."""
    return min(DEFAULT_BUFFER, _physical_memory() // 4)


def parse_size(text: str) -> int:
    """A size in the operator's words: bytes, or a number with a unit (KiB,
    MiB, GiB, TiB in powers of 1024; KB, MB, GB, TB in powers of 1000; K, M,
    G, T as the binary ones)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ConfigError(f"expected a size such as 512MiB or 2GiB, got {text!r}")
    number, unit = match.groups()
    value = float(number) * _UNITS[unit.lower()]
    if value > 1 << 50:
        raise ConfigError(f"size {text!r} is beyond any machine's memory")
    return int(value)


_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B?|B|)", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    **{u.lower(): 1024**i for i, u in enumerate("KMGT", 1)},
    **{f"{u}i".lower(): 1024**i for i, u in enumerate("KMGT", 1)},
    **{f"{u}ib".lower(): 1024**i for i, u in enumerate("KMGT", 1)},
    **{f"{u}b".lower(): 1000**i for i, u in enumerate("KMGT", 1)},
}


def _physical_memory() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _gib(size: int) -> str:
    return f"{size / (1 << 30):.1f} GiB"
