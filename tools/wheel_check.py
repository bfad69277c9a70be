#!/usr/bin/env python3
"""`make wheel-check`: the wheel installs and works where nothing else is.

A fresh virtualenv outside the source tree, a PATH without cargo, `pip
install` of the wheel in dist/ (its Python dependencies from the package
index), then, against a real broker: a replay of a corpus file and a dump of
the topic back, read by libpcap and compared with the file. Also checks that
the extension finds libpcap inside the wheel, not on the system, and that
`--dpdk` (not in the wheel) is refused with one line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastcapa_support import corpus
from fastcapa_support.kafka_cluster import Cluster
from fastcapa_support.pcapref import read_capture

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = "afs.pcap"  # 601 Ethernet records


def fail(message: str) -> int:
    print(f"wheel-check: {message}", file=sys.stderr)
    return 1


def make_topic(bootstrap: str, name: str, partitions: int) -> None:
    """A topic that keeps its records whatever their age, with a leader for
    every partition."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    spec = NewTopic(name, partitions, 1, config={"retention.ms": "-1"})
    admin.create_topics([spec])[name].result(30)
    for _ in range(300):
        described = admin.list_topics(name, timeout=5).topics.get(name)
        if described and all(p.leader >= 0 for p in described.partitions.values()):
            return
        time.sleep(0.1)
    raise TimeoutError(f"topic {name} has no leader")


def main() -> int:
    wheels = sorted((ROOT / "dist").glob("fastcapa-*manylinux*.whl"))
    if not wheels:
        return fail("no manylinux wheel in dist/ (make wheel)")
    wheel = wheels[-1]
    sample = corpus.file(SAMPLE)
    if not sample.is_file():
        return fail(corpus.missing_reason() or f"{sample} is missing")
    with tempfile.TemporaryDirectory(prefix="fastcapa-wheel-") as tmp:
        work = Path(tmp)
        venv = work / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # Nothing of the build: no cargo, no source tree on the path.
        path = os.pathsep.join([str(venv / "bin"), "/usr/local/bin", "/usr/bin", "/bin"])
        env = {"PATH": path, "HOME": str(work), "LANG": "C.UTF-8"}
        if shutil.which("cargo", path=path):
            return fail(f"cargo is still on PATH {path}")

        def sh(*command: str) -> subprocess.CompletedProcess[str]:
            print("$", " ".join(command), flush=True)
            return subprocess.run(command, env=env, cwd=work, text=True, capture_output=True)

        installed = sh(str(venv / "bin" / "pip"), "install", "-q", str(wheel))
        if installed.returncode != 0:
            return fail(f"pip install failed: {installed.stderr.strip()}")
        where = sh(
            str(venv / "bin" / "python"), "-c", "import fastcapa._fastcapa as m; print(m.__file__)"
        )
        if where.returncode != 0 or str(ROOT) in where.stdout:
            return fail(f"the installed extension is not the wheel's: {where.stdout}{where.stderr}")
        links = sh("ldd", where.stdout.strip()).stdout
        pcap = [line for line in links.splitlines() if "libpcap" in line]
        if not pcap or "fastcapa.libs" not in pcap[0]:
            return fail(f"libpcap does not come from the wheel: {pcap}")
        fastcapa = str(venv / "bin" / "fastcapa")
        # The wheel is built without DPDK: asking for it is one line and exit 2.
        dpdk = sh(fastcapa, "--dpdk", "net_null0", "-t", "wheel", "-k", "127.0.0.1:9")
        said = dpdk.stderr.strip().splitlines()
        if dpdk.returncode != 2 or len(said) != 1 or "built without DPDK" not in said[0]:
            return fail(f"--dpdk without DPDK: exit {dpdk.returncode}, {dpdk.stderr.strip()!r}")
        with Cluster(nodes=1) as kafka:
            make_topic(kafka.bootstrap, "wheel", partitions=2)
            replay = sh(fastcapa, "-r", str(sample), "-t", "wheel", "-k", kafka.bootstrap)
            if replay.returncode != 0:
                return fail(f"replay failed: {replay.stderr.strip()}")
            back = work / "back.pcap"
            dump = sh(fastcapa, "dump", "-t", "wheel", "-k", kafka.bootstrap, "-o", str(back))
            if dump.returncode != 0:
                return fail(f"dump failed: {dump.stderr.strip()}")
        want, got = read_capture(str(sample)), read_capture(str(back))
        if want is None or got is None:
            return fail("libpcap could not read the sample or the dump")
        if sorted(want.records) != sorted(got.records):
            return fail(f"dumped {len(got.records)} records, the file has {len(want.records)}")
    print(
        f"wheel-check: {wheel.name} installed without a toolchain, replayed and dumped "
        f"{len(want.records)} records of {SAMPLE}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
