"""An independent reference for capture files: libpcap itself, called
through ctypes, not through fastcapa's Rust. What it reads is what the tests
expect fastcapa to carry; what it writes is a file any tool reads."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Iterable
from dataclasses import dataclass

_lib = ctypes.CDLL(ctypes.util.find_library("pcap") or "libpcap.so.0.8")


class _Header(ctypes.Structure):
    _fields_ = [
        ("tv_sec", ctypes.c_long),
        ("tv_usec", ctypes.c_long),
        ("caplen", ctypes.c_uint32),
        ("len", ctypes.c_uint32),
    ]


_lib.pcap_open_offline_with_tstamp_precision.restype = ctypes.c_void_p
_lib.pcap_open_offline_with_tstamp_precision.argtypes = [
    ctypes.c_char_p,
    ctypes.c_uint,
    ctypes.c_char_p,
]
_lib.pcap_next_ex.argtypes = [
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.POINTER(_Header)),
    ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte)),
]
_lib.pcap_datalink.argtypes = [ctypes.c_void_p]
_lib.pcap_geterr.argtypes = [ctypes.c_void_p]
_lib.pcap_geterr.restype = ctypes.c_char_p
_lib.pcap_close.argtypes = [ctypes.c_void_p]
_lib.pcap_open_dead_with_tstamp_precision.restype = ctypes.c_void_p
_lib.pcap_open_dead_with_tstamp_precision.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_uint]
_lib.pcap_dump_open.restype = ctypes.c_void_p
_lib.pcap_dump_open.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_lib.pcap_dump.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Header), ctypes.c_char_p]
_lib.pcap_dump_close.argtypes = [ctypes.c_void_p]

PCAP_TSTAMP_PRECISION_MICRO = 0


@dataclass
class Capture:
    linktype: int
    records: list[tuple[int, bytes]]  # (timestamp µs, frame)
    error: str | None  # libpcap's complaint if reading stopped early


PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


def read_capture(path: str) -> Capture | None:
    """All records libpcap reads from `path`, or None if libpcap cannot open it.

    A classic pcap record's seconds (and fraction) are unsigned 32-bit
    fields, which libpcap 1.10 sign-extends for files in this host's byte
    order: they are taken back as unsigned here, so 2038 to 2106 read right.
    """
    with open(path, "rb") as stream:
        classic = stream.read(4) != PCAPNG_MAGIC
    errbuf = ctypes.create_string_buffer(512)
    handle = _lib.pcap_open_offline_with_tstamp_precision(
        path.encode(), PCAP_TSTAMP_PRECISION_MICRO, errbuf
    )
    if not handle:
        return None
    try:
        records = []
        header = ctypes.POINTER(_Header)()
        data = ctypes.POINTER(ctypes.c_ubyte)()
        while True:
            status = _lib.pcap_next_ex(handle, ctypes.byref(header), ctypes.byref(data))
            if status == 1:
                h = header.contents
                seconds, fraction = h.tv_sec, h.tv_usec
                if classic:
                    seconds, fraction = seconds & 0xFFFF_FFFF, fraction & 0xFFFF_FFFF
                ts = (seconds * 1_000_000 + fraction) & 0xFFFF_FFFF_FFFF_FFFF
                records.append((ts, ctypes.string_at(data, h.caplen)))
            elif status == -2:
                return Capture(_lib.pcap_datalink(handle), records, None)
            else:
                message = _lib.pcap_geterr(handle).decode(errors="replace")
                return Capture(_lib.pcap_datalink(handle), records, message)
    finally:
        _lib.pcap_close(handle)


def write_capture(
    path: str,
    records: Iterable[tuple[int, bytes] | tuple[int, bytes, int]],
    linktype: int = 1,
    snaplen: int = 262_144,
) -> str:
    """Writes a classic pcap file with libpcap: each record is (time µs, frame)
    or (time µs, frame, length on the wire) for a frame already cut."""
    handle = _lib.pcap_open_dead_with_tstamp_precision(
        linktype, snaplen, PCAP_TSTAMP_PRECISION_MICRO
    )
    if not handle:
        raise OSError(f"pcap_open_dead({linktype}) failed")
    try:
        dumper = _lib.pcap_dump_open(handle, path.encode())
        if not dumper:
            raise OSError(_lib.pcap_geterr(handle).decode(errors="replace"))
        try:
            for record in records:
                ts, frame = record[0], record[1]
                wire = record[2] if len(record) > 2 else len(frame)  # type: ignore[misc]
                seconds, micros = divmod(ts, 1_000_000)
                header = _Header(seconds, micros, len(frame), wire)
                _lib.pcap_dump(dumper, ctypes.byref(header), frame)
        finally:
            _lib.pcap_dump_close(dumper)
    finally:
        _lib.pcap_close(handle)
    return path
