"""The arguments DPDK's EAL is started with (`--eal`, docs/dpdk.md)."""

from __future__ import annotations

import os
import shlex

from fastcapa.errors import ConfigError
from fastcapa.librdkafka import check_printable


def eal_arguments(text: str, cpus: list[int]) -> list[str]:
    """The EAL's arguments: the operator's `--eal` words, plus fastcapa's
    defaults where the operator did not say otherwise: no shared files (two
    probes on one host do not collide, nothing is left behind), no telemetry
    socket, warnings and errors only in DPDK's log, and the main lcore on a
    core of this process (the workers are pinned by --cpus, not by the EAL)."""
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise ConfigError(f"--eal: {e}") from None
    for word in words:
        check_printable("--eal", word)

    def given(*options: str) -> bool:
        return any(w == o or w.startswith(o + "=") for w in words for o in options)

    extra: list[str] = []
    if not given("--file-prefix", "--in-memory", "--no-shconf"):
        # No files left behind: --in-memory keeps even hugepages unnamed;
        # without hugepages (where the EAL refuses it) no shared config, in
        # a runtime directory of this process's own, removed at exit.
        if given("--no-huge"):
            extra += ["--no-shconf", "--file-prefix", f"fastcapa-{os.getpid()}"]
        else:
            extra.append("--in-memory")
    if not given("--telemetry", "--no-telemetry"):
        extra.append("--no-telemetry")
    if not given("--log-level"):
        extra.append("--log-level=5")
    if not any(
        w in ("-l", "-c", "--lcores") or w.startswith(("-l", "-c", "--lcores=")) for w in words
    ):
        core = cpus[0] if cpus else min(os.sched_getaffinity(0))
        extra += ["-l", str(core)]
    return extra + words
