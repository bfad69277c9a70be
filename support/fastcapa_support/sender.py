"""Sends the frames of a capture file out of an interface, in file order,
through an AF_PACKET socket. Run inside the test's network namespace:

    python -m fastcapa_support.sender IFACE CAPTURE_FILE RATE

Prints: frames sent, time of the first and the last send (µs since the epoch).
"""

import errno
import socket
import sys
import time

from fastcapa_support.pcapref import read_capture


def packet_socket(iface: str) -> socket.socket:
    """A raw AF_PACKET socket that sends out of `iface`, with a 4 MiB send buffer."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    return sock


def send(sock: socket.socket, frame: bytes) -> None:
    """Sends one frame, waiting while the send buffer or the device queue is full."""
    while True:
        try:
            sock.send(frame)
            return
        except BlockingIOError:  # the send buffer is full: wait for room
            time.sleep(0.0005)
        except OSError as e:
            if e.errno != errno.ENOBUFS:  # the device queue is full: retry
                raise
            time.sleep(0.0005)


def main() -> None:
    iface, path, rate = sys.argv[1], sys.argv[2], int(sys.argv[3])
    capture = read_capture(path)
    frames = [frame for _, frame in capture.records]
    sock = packet_socket(iface)
    gap = 1.0 / rate if rate else 0.0
    first = time.time_ns() // 1000
    start = time.monotonic()
    for i, frame in enumerate(frames):
        if gap:
            delay = start + i * gap - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        send(sock, frame)
    last = time.time_ns() // 1000
    print(len(frames), first, last)


if __name__ == "__main__":
    main()
