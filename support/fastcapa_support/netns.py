"""Network namespaces and veth pairs made by the tests themselves.

`VethPair` makes a namespace with one end of a veth pair inside it (the
sender's side) and the other end here (the probe's side), with several queues,
no IPv6 autoconfiguration (so nothing but the test's frames crosses it), and
removes both at exit. Frames are sent from inside the namespace by
`fastcapa_support.sender` through an AF_PACKET socket. Traffic never leaves the pair.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from typing import Any

from fastcapa_support import child_env, processes


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def netns_available() -> bool:
    if os.geteuid() != 0:
        return False
    name = f"fcchk{uuid.uuid4().hex[:6]}"
    ok = ip("netns", "add", name, check=False).returncode == 0
    ip("netns", "del", name, check=False)
    return ok


class VethPair:
    def __init__(self, queues: int = 2, mtu: int = 1500) -> None:
        tag = uuid.uuid4().hex[:6]
        self.netns = f"fcns{tag}"
        self.probe_side = f"fcp{tag}"  # here, where the probe captures
        self.sender_side = f"fcs{tag}"  # inside the namespace
        self.queues, self.mtu = queues, mtu

    def __enter__(self) -> VethPair:
        ip("netns", "add", self.netns)
        try:
            q = str(self.queues)
            ip(
                "link",
                "add",
                self.probe_side,
                "numtxqueues",
                q,
                "numrxqueues",
                q,
                "type",
                "veth",
                "peer",
                "name",
                self.sender_side,
                "numtxqueues",
                q,
                "numrxqueues",
                q,
            )
            ip("link", "set", self.sender_side, "netns", self.netns)
            for args in (
                ("link", "set", self.probe_side, "mtu", str(self.mtu), "addrgenmode", "none"),
                (
                    "-n",
                    self.netns,
                    "link",
                    "set",
                    self.sender_side,
                    "mtu",
                    str(self.mtu),
                    "addrgenmode",
                    "none",
                ),
                ("link", "set", self.probe_side, "up"),
                ("-n", self.netns, "link", "set", self.sender_side, "up"),
            ):
                ip(*args)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        ip("link", "del", self.probe_side, check=False)
        ip("netns", "del", self.netns, check=False)

    def command(self, module: str, *args: str) -> list[str]:
        """The command line that runs `fastcapa_support.<module>` inside the
        namespace, on the sender's side of the pair, with `args` after it."""
        return [
            *("ip", "netns", "exec", self.netns),
            *(sys.executable, "-m", f"fastcapa_support.{module}", self.sender_side, *args),
        ]

    def start(self, module: str, *args: str, **popen: Any) -> subprocess.Popen:
        """Starts `fastcapa_support.<module>` in the namespace, in the
        background; killed when the test ends at the latest (processes.reap)."""
        return processes.start(self.command(module, *args), env=child_env(), **popen)

    def set_probe_link(self, up: bool, timeout: float = 10) -> None:
        """Sets the probe's end down or up, as an operator or a flapping
        cable would; up, waits until both ends carry frames again (the
        kernel's link watch starts their queues a moment after)."""
        ip("link", "set", self.probe_side, "up" if up else "down")
        if not up:
            return
        deadline = time.monotonic() + timeout
        while not (self._operational(()) and self._operational(("-n", self.netns))):
            assert time.monotonic() < deadline, f"{self.probe_side} not up in {timeout} s"
            time.sleep(0.05)

    def _operational(self, where: tuple[str, ...]) -> bool:
        name = self.sender_side if where else self.probe_side
        return "state UP" in ip(*where, "-o", "link", "show", "dev", name).stdout

    def send(self, capture: str, rate: int = 0, timeout: float = 300) -> dict:
        """Sends every frame of a capture file from inside the namespace, in
        file order; `rate` frames/s (0 = as fast as it goes). Returns the
        sender's report: frames sent, first and last send time (µs)."""
        proc = subprocess.run(
            self.command("sender", capture, str(rate)),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=child_env(),
        )
        assert proc.returncode == 0, proc.stderr
        sent, first, last = (int(x) for x in proc.stdout.split())
        return {"sent": sent, "first_us": first, "last_us": last}
