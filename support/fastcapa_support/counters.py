"""Counters as the native workers hand them out (`counters()` dicts, the
names of src/counters.rs), built by hand for tests that need no worker.
Every counter the extension lists is there; one these helpers do not know
is 0 (nic_taken, where there, what was taken: a settled report)."""

from __future__ import annotations

from fastcapa._fastcapa import RX_COUNTERS, TX_COUNTERS


def queue(
    nic_packets: int, nic_drops: int = 0, taken: int | None = None, ring_full: int = 0
) -> dict[str, int]:
    """A receive queue's raw counters: what the kernel had, dropped and handed over."""
    taken = nic_packets - nic_drops if taken is None else taken
    return {
        **dict.fromkeys(RX_COUNTERS, 0),
        **({"nic_taken": taken} if "nic_taken" in RX_COUNTERS else {}),
        "nic_packets": nic_packets,
        "nic_drops": nic_drops,
        "taken": taken,
        "taken_bytes": 100 * taken,
        "enqueued": taken - ring_full,
        "ring_full": ring_full,
    }


def worker(
    dequeued: int, dropped: int = 0, failed: int = 0, delivered: int | None = None
) -> dict[str, int]:
    """A transmit worker's raw counters: what it took, refused, lost and delivered."""
    produced = dequeued - dropped
    delivered = produced - failed if delivered is None else delivered
    return {
        **dict.fromkeys(TX_COUNTERS, 0),
        "dequeued": dequeued,
        "produced": produced,
        "produced_bytes": 100 * produced,
        "dropped": dropped,
        "delivered": delivered,
        "delivered_bytes": 100 * delivered,
        "failed": failed,
    }
