"""Apache Kafka's jars for the test brokers: resolved once from Maven Central
(tools/kafka/pom.xml into tools/kafka/lib), and the java that runs them."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

# The pom and the jars it resolves live in the repository's tools/kafka.
HERE = Path(__file__).resolve().parents[2] / "tools" / "kafka"
POM = HERE / "pom.xml"
LIB = HERE / "lib"
STAMP = LIB / ".stamp"  # the pom's hash, written once every jar is in


class KafkaError(RuntimeError):
    """Kafka could not be resolved, formatted or started."""


def _pom_hash() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    binary = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not binary:
        raise KafkaError("Java 17+ is needed to run Kafka; apt-get install openjdk-17-jre-headless")
    return binary


def cds_archive() -> Path:
    """Where the class-data archive for this java and these jars lives (it may not exist)."""
    binary = os.path.realpath(java())
    key = hashlib.sha256(f"{binary}:{os.stat(binary).st_mtime_ns}".encode()).hexdigest()[:10]
    return LIB / f"kafka-{key}.jsa"


def lock():
    """An exclusive lock on pom.xml, for two test runs resolving at once."""
    f = open(POM)  # noqa: SIM115 - the lock lives as long as the file object
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def ensure_jars() -> Path:
    """Resolve Kafka's jars into lib/ with Maven unless already there for this pom.xml."""
    ok = lambda: STAMP.is_file() and STAMP.read_text().strip() == _pom_hash()  # noqa: E731
    if ok():
        return LIB
    if shutil.which("mvn") is None:
        raise KafkaError("Maven (mvn) is needed to fetch Kafka's jars")
    with lock():
        if ok():
            return LIB
        # Start from an empty lib/ (no stale jars of an older pom.xml); the
        # stamp, written last, marks the set complete.
        shutil.rmtree(LIB, ignore_errors=True)
        cmd = ["mvn", "-B", "-Dstyle.color=never", "-f", str(POM), "dependency:copy-dependencies"]
        # Captured: Maven 3.8 prints stray colour codes even when quiet.
        out = subprocess.run([*cmd, "-q"], capture_output=True, text=True)
        if out.returncode != 0:
            raise KafkaError(f"{' '.join(cmd)} failed:\n{out.stdout}{out.stderr}")
        STAMP.write_text(_pom_hash() + "\n")
    return LIB
