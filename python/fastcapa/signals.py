"""SIGINT and SIGTERM, counted while a long-running command works: the
main loop looks at the count between bounded native calls (a first signal
stops gently, a second at once)."""

from __future__ import annotations

import signal


class SignalLatch:
    """Counts SIGINT/SIGTERM from when it is made until `restore`."""

    def __init__(self) -> None:
        self.count = 0
        self.previous = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
        }

    def _handle(self, signum: int, frame: object) -> None:
        self.count += 1

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
