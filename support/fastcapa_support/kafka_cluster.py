#!/usr/bin/env python3
"""A throwaway Apache Kafka (KRaft) on loopback, for the tests and the demo.

Pure standard library: the jars come from Maven Central (tools/kafka/pom.xml,
resolved into tools/kafka/lib) and the JVMs run straight from that classpath.
confluent_kafka, when importable, is only used to check that the brokers
answer clients.

As a module::

    with Cluster(nodes=3) as c:           # each node broker and controller
        c.bootstrap                       # "127.0.0.1:P0,127.0.0.1:P1,127.0.0.1:P2"
        c.kill(1)                         # SIGKILL node 1's JVM
        c.start_node(1)                   # back, on the same data and ports

    # Beside PLAINTEXT: a SASL listener (PLAIN and SCRAM users), a TLS one
    # that wants client certificates, an authorizer (ACLs).
    users = {"alice": "alice-secret"}
    with Cluster(listeners={"SASL": sasl_listener(users),
                            "MTLS": Listener("SSL", {"ssl.client.auth": "required", ...})},
                 scram_users=users, acls=True) as c:
        c.listener_bootstrap("SASL")

As a command::

    python -m fastcapa_support.kafka_cluster resolve
    python -m fastcapa_support.kafka_cluster start [--nodes N] [--port P] [--dir D] [--foreground]
    python -m fastcapa_support.kafka_cluster stop [--dir D]
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastcapa_support.kafka_jars import LIB, KafkaError, cds_archive, ensure_jars, java, lock

STATE = "cluster.json"  # in the data dir: ports and pids, what `stop --dir` needs
READY_LINE = "Kafka Server started"  # KafkaRaftServer, once it serves clients

# Measured on 2 cores: a 3-node cluster is ready in ~10 s with these instead of
# ~18 s (1 node: ~4.5 s instead of ~5.5 s). C1 alone compiles far less at start;
# broker CPU under a producer load measured the same.
FAST_JVM = ["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]

# Kafka logs to stdout, which goes to the node's log file with the JVM's own output.
LOG4J2 = """\
status = warn
# Kafka logs from its own shutdown hooks; log4j's hook would close the log first.
shutdownHook = disable
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
# Every config object logs all its values at INFO: hundreds of lines a start.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
# Loading and creating each partition's log: several lines per partition.
logger.logs.name = org.apache.kafka.storage.internals.log
logger.logs.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""


# What a SASL listener offers; SCRAM users are made when the storage is formatted.
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
# KRaft's authorizer: ACLs live in the cluster's metadata.
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


@dataclass(frozen=True)
class Listener:
    """A client listener every node opens beside PLAINTEXT.

    `protocol` is Kafka's security protocol (SSL, SASL_PLAINTEXT, SASL_SSL);
    `config` holds broker properties for this listener alone (written with
    Kafka's `listener.name.<name>.` prefix, so two listeners of one protocol
    can differ: one TLS listener that wants client certificates beside one
    that does not, another with a certificate for another host name).
    Listener-wide properties (`ssl.keystore.*` for every TLS listener) go in
    the cluster's `config` or `ssl` instead.
    """

    protocol: str
    config: dict[str, object] = field(default_factory=dict)


def sasl_listener(users: dict[str, str], protocol: str = "SASL_PLAINTEXT") -> Listener:
    """A SASL listener offering PLAIN and SCRAM-SHA-256/512.

    PLAIN checks `users` (name -> password) against its JAAS configuration;
    SCRAM checks the credentials in the cluster's metadata, which exist only
    for the users given to `Cluster(scram_users=...)`.
    """
    plain = " ".join(f'user_{name}="{password}"' for name, password in users.items())
    config: dict[str, object] = {
        "sasl.enabled.mechanisms": ",".join(SASL_MECHANISMS),
        "plain.sasl.jaas.config": "org.apache.kafka.common.security.plain.PlainLoginModule "
        f"required {plain};",
    }
    for mechanism in SCRAM_MECHANISMS:
        config[f"{mechanism.lower()}.sasl.jaas.config"] = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        )
    return Listener(protocol, config)


# ---------------------------------------------------------------- class-data archive


def ensure_cds() -> None:
    """Once per java and set of jars, record a class-data-sharing archive of a
    broker's start (lib/kafka-*.jsa): JVMs that map it start in about half the time."""
    ensure_jars()
    if cds_archive().exists():
        return
    with lock():
        if not cds_archive().exists():
            _record_cds(cds_archive())


def _record_cds(archive: Path) -> None:
    """Run one node once with -XX:ArchiveClassesAtExit. Best effort: a JVM that
    cannot make or use the archive still runs Kafka, only slower to start."""
    tmp = archive.with_suffix(".tmp")
    c = Cluster(1, cds=False, jvm_opts=[*FAST_JVM, f"-XX:ArchiveClassesAtExit={tmp}"])
    try:
        c.start(timeout=120)
        c.stop(timeout=60)  # the JVM writes the archive as it exits
    except Exception as e:
        print(f"kafka_cluster: no class-data archive ({e})", file=sys.stderr)
        c.stop(timeout=1)
    if tmp.exists():
        tmp.rename(archive)
    else:
        archive.touch()  # an empty file: don't try again for this java; JVMs skip it


# ---------------------------------------------------------------- helpers


def _free_ports(preferred: list[int | None]) -> list[int]:
    """Distinct loopback ports: each preferred one if still free, else any free one."""
    socks, ports = [], []
    try:
        for want in preferred:
            s = socket.socket()
            socks.append(s)  # held open until all are picked, so that they differ
            try:
                s.bind(("127.0.0.1", want or 0))
            except OSError:
                s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _cluster_id() -> str:
    # Kafka's Uuid text: 16 random bytes in URL-safe base64, no padding. The
    # storage tool's argument parser would take one starting with "-" for an option.
    while True:
        cid = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _tail(path: Path, n: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 300 * n))  # about n lines
            return "\n".join(f.read().decode(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _brokers(bootstrap: str, timeout: float) -> set[int] | None:
    """Ids of the brokers a client sees; None when confluent_kafka is not importable."""
    try:
        from confluent_kafka.admin import AdminClient
    except ImportError:
        return None
    # log_level 0: librdkafka would print each refused connection while we poll.
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        return set(admin.list_topics(timeout=timeout).brokers)
    except Exception:
        return set()


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
        return True
    return False


# ---------------------------------------------------------------- cluster


class Cluster:
    """A KRaft cluster on 127.0.0.1 of `nodes` nodes, each broker and controller.

    Node ids are 0..nodes-1 and double as indexes. Ports are picked free at the
    first start (node 0's client port is `port` when given) and kept for
    restarts. Data lives in `base_dir` (a new temporary folder when None) and
    is deleted at stop() unless `keep` (default: keep a base_dir you gave).
    `config` adds or overrides broker properties; `jvm_opts` replaces FAST_JVM.
    `ssl` (broker ssl.* properties: keystore, truststore...) adds an SSL
    listener to each node beside PLAINTEXT; clients find it at `ssl_bootstrap`.
    `listeners` (name -> Listener) adds more; clients find each at
    `listener_bootstrap(name)`. `scram_users` (name -> password) get SCRAM
    credentials (SHA-256 and SHA-512) when the storage is formatted, as KRaft
    wants them (`kafka-storage format --add-scram`). `acls` turns on KRaft's
    authorizer: PLAINTEXT clients (the brokers and controllers among them,
    and the tests' own admin and reading clients) are User:ANONYMOUS, a super
    user; any other principal may do anything on a resource that has no ACL
    at all, and only what the ACLs allow on one that has some.
    """

    def __init__(
        self,
        nodes: int = 1,
        base_dir: str | os.PathLike | None = None,
        *,
        port: int | None = None,
        keep: bool | None = None,
        heap: str = "512m",
        config: dict[str, object] | None = None,
        jvm_opts: list[str] | None = None,
        cds: bool = True,
        ssl: dict[str, object] | None = None,
        listeners: dict[str, Listener] | None = None,
        scram_users: dict[str, str] | None = None,
        acls: bool = False,
    ):
        if nodes < 1:
            raise ValueError("nodes must be at least 1")
        self.nodes = nodes
        self.dir = Path(base_dir).resolve() if base_dir else None
        self.keep = keep if keep is not None else base_dir is not None
        self.port = port
        self.heap = heap
        self.config = dict(config or {})
        self.jvm_opts = FAST_JVM if jvm_opts is None else list(jvm_opts)
        self.cds = cds
        self.ssl = dict(ssl or {})  # broker ssl.* properties; adds an SSL listener per node
        self.listeners = dict(listeners or {})
        if self.ssl:
            self.listeners = {"SSL": Listener("SSL"), **self.listeners}
        for name in self.listeners:
            if name.upper() in ("PLAINTEXT", "CONTROLLER") or not name.isidentifier():
                raise ValueError(f"listener name {name!r} is taken or not a name")
        self.listener_ports: dict[str, list[int]] = {}  # by listener name, then node id
        self.scram_users = dict(scram_users or {})
        self.acls = acls
        self.detached = False
        self.ports: list[int] = []  # client (PLAINTEXT) ports by node id
        self.controller_ports: list[int] = []
        self.cluster_id: str | None = None
        self.procs: list = [None] * nodes  # Popen (or _Foreign) by node id
        self._log_starts = [0] * nodes  # the log's size when each node last started

    # -- looking at it

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    @property
    def ssl_bootstrap(self) -> str:
        return self.listener_bootstrap("SSL")

    def listener_bootstrap(self, name: str) -> str:
        """The addresses of listener `name` on every node."""
        return ",".join(f"127.0.0.1:{p}" for p in self.listener_ports[name])

    def node_bootstrap(self, i: int) -> str:
        return f"127.0.0.1:{self.ports[i]}"

    def node_dir(self, i: int) -> Path:
        return self.dir / f"node-{i}"

    def log_path(self, i: int = 0) -> Path:
        return self.node_dir(i) / "server.log"

    def pid(self, i: int) -> int | None:
        """Node i's JVM pid while it runs, else None."""
        p = self.procs[i]
        return p.pid if p is not None and p.poll() is None else None

    def running(self) -> bool:
        return all(self.pid(i) for i in range(self.nodes))

    def tail_logs(self, n: int = 50) -> str:
        """The last n lines of each node's log, under a header per node."""
        if self.dir is None:
            return "(kafka never started)"
        return "\n".join(
            f"===== kafka node {i}: {self.log_path(i)} =====\n{_tail(self.log_path(i), n)}"
            for i in range(self.nodes)
        )

    # -- the whole cluster

    def start(self, timeout: float = 90, detach: bool = False) -> Cluster:
        """Format the storage (first time), start every node, wait until all serve clients.

        detach: the JVMs outlive this Python process (the command's background
        mode); stop them later with Cluster.attach(dir).stop().
        """
        ensure_jars()
        if self.cds:
            ensure_cds()
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix="kafka-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.detached = detach
        if not detach:
            atexit.register(self.stop)
        try:
            self._pick_ports()
            (self.dir / "log4j2.properties").write_text(LOG4J2)
            for i in range(self.nodes):
                self._write_config(i)
            self._format()
            for i in range(self.nodes):
                self._launch(i)
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self._save_state()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM every node, SIGKILL what is left after timeout; drop the data unless kept.

        The default timeout is 20 s for kept data and 3 s for throwaway data:
        when the whole quorum stops at once, the last controller waits 5 s for
        the others before giving up, which is not worth waiting for.
        """
        timeout = (20 if self.keep else 3) if timeout is None else timeout
        running = [i for i in range(self.nodes) if self.procs[i] is not None]
        for i in running:
            self._signal(i, signal.SIGCONT)  # a paused JVM would not act on SIGTERM
            self._signal(i, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for i in running:
            self._reap(i, deadline - time.monotonic())
        with contextlib.suppress(ValueError):
            atexit.unregister(self.stop)
        if self.dir is not None and not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        elif self.dir is not None and self.dir.exists() and self.ports:
            self._save_state()

    def wait_ready(self, timeout: float = 90, nodes: list[int] | None = None) -> None:
        """Wait until each of `nodes` (default all) has started since its launch and
        clients see them as brokers; KafkaError with the logs' tails otherwise."""
        nodes = set(range(self.nodes) if nodes is None else nodes)
        waiting = set(nodes)
        deadline = time.monotonic() + timeout
        while True:
            for i in sorted(waiting):
                p = self.procs[i]
                if p is None or p.poll() is not None:
                    code = "never started" if p is None else f"exited with {p.returncode}"
                    raise KafkaError(f"kafka node {i} {code}\n{self.tail_logs(40)}")
                if self._logged_since_start(i, READY_LINE) and _port_open(self.ports[i]):
                    waiting.discard(i)
            if not waiting:
                seen = _brokers(self.bootstrap, max(1.0, min(5.0, deadline - time.monotonic())))
                if seen is None or seen >= nodes:
                    return
            if time.monotonic() > deadline:
                what = f"nodes {sorted(waiting)}" if waiting else "all brokers to register"
                raise KafkaError(f"kafka not ready after {timeout:.0f} s, waiting for {what}\n"
                                 + self.tail_logs(40))  # fmt: skip
            time.sleep(0.2)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- single nodes

    def stop_node(self, i: int, timeout: float = 20) -> None:
        """Stop node i cleanly (SIGTERM; SIGKILL after timeout). Its data and ports stay."""
        self._signal(i, signal.SIGCONT)
        self._signal(i, signal.SIGTERM)
        self._reap(i, timeout)

    def start_node(self, i: int, timeout: float = 90) -> None:
        """Start node i again on its data and ports; wait until it serves clients."""
        if self.pid(i):
            raise KafkaError(f"kafka node {i} is still running")
        self._reap(i, 0)
        self._launch(i)
        self.wait_ready(timeout, nodes=[i])
        self._save_state()

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Send node i's JVM a signal; after SIGKILL, also wait until it is gone."""
        self._signal(i, sig)
        if sig == signal.SIGKILL:
            self._reap(i, 10)

    def pause_node(self, i: int) -> None:
        """SIGSTOP node i: it holds its connections but answers nothing."""
        self._signal(i, signal.SIGSTOP)

    def resume_node(self, i: int) -> None:
        self._signal(i, signal.SIGCONT)

    def restore(self, timeout: float = 90) -> None:
        """Resume paused nodes and start stopped ones, and wait until clients see
        every broker again (a resumed one may have been fenced meanwhile)."""
        for i in range(self.nodes):
            self._signal(i, signal.SIGCONT)
            if not self.pid(i):
                self.start_node(i, timeout)
        self.wait_ready(timeout)

    @classmethod
    def attach(cls, base_dir: str | os.PathLike) -> Cluster:
        """The cluster that a detached start left running in base_dir."""
        state = json.loads((Path(base_dir) / STATE).read_text())
        c = cls(state["nodes"], base_dir, keep=True)
        c.ports, c.controller_ports = state["ports"], state["controller_ports"]
        c.cluster_id = state["cluster_id"]
        c.procs = [_Foreign(pid, c.node_dir(i)) for i, pid in enumerate(state["pids"])]
        return c

    # -- internals

    def _pick_ports(self) -> None:
        """Reuse the ports (and cluster id) an earlier start saved in the data dir, where free."""
        saved = {}
        with contextlib.suppress(OSError, ValueError):
            saved = json.loads((self.dir / STATE).read_text())
        if saved and saved.get("nodes") != self.nodes:
            raise KafkaError(f"{self.dir} holds a {saved.get('nodes')}-node cluster")
        if not self.ports:
            n = self.nodes
            none = [None] * n
            want = (saved.get("ports") or none) + (saved.get("controller_ports") or none)
            want[0] = self.port or want[0]
            picked = _free_ports(want)
            if self.port and picked[0] != self.port:
                raise KafkaError(f"port {self.port} is taken")
            self.ports, self.controller_ports = picked[:n], picked[n:]
        for name in self.listeners:
            if name not in self.listener_ports:
                self.listener_ports[name] = _free_ports([None] * self.nodes)
        self.cluster_id = self.cluster_id or saved.get("cluster_id") or _cluster_id()

    def _save_state(self) -> None:
        state = {
            "nodes": self.nodes,
            "bootstrap": self.bootstrap,
            "ports": self.ports,
            "controller_ports": self.controller_ports,
            "cluster_id": self.cluster_id,
            "pids": [self.pid(i) for i in range(self.nodes)],
        }
        (self.dir / STATE).write_text(json.dumps(state, indent=1) + "\n")

    def _write_config(self, i: int) -> None:
        n = self.nodes
        # A static quorum (controller.quorum.voters): each node knows every voter
        # from its config, so formatting needs neither --standalone nor
        # --initial-controllers, and each node is formatted on its own.
        voters = ",".join(f"{j}@127.0.0.1:{p}" for j, p in enumerate(self.controller_ports))
        props = {
            "process.roles": "broker,controller",
            "node.id": i,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.ports[i]},"
            f"CONTROLLER://127.0.0.1:{self.controller_ports[i]}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.ports[i]}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": self.node_dir(i) / "data",
            "num.partitions": 1,
            "auto.create.topics.enable": "true",
            "group.initial.rebalance.delay.ms": 0,
            "offsets.topic.replication.factor": min(3, n),
            "transaction.state.log.replication.factor": min(3, n),
            "transaction.state.log.min.isr": min(2, n),
            "share.coordinator.state.topic.replication.factor": min(3, n),
            "share.coordinator.state.topic.min.isr": min(2, n),
            # A SIGKILLed node is fenced (its partitions move, and it may register
            # again) only after its session times out: 4 s instead of Kafka's 9.
            "broker.heartbeat.interval.ms": 500,
            "broker.session.timeout.ms": 4000,
        }
        props |= self.ssl
        for name, listener in self.listeners.items():
            where = f"{name}://127.0.0.1:{self.listener_ports[name][i]}"
            props["listeners"] += f",{where}"
            props["advertised.listeners"] += f",{where}"
            props["listener.security.protocol.map"] += f",{name}:{listener.protocol}"
            props |= {f"listener.name.{name.lower()}.{k}": v for k, v in listener.config.items()}
        if self.acls:
            props |= {
                "authorizer.class.name": AUTHORIZER,
                "super.users": "User:ANONYMOUS",
                "allow.everyone.if.no.acl.found": "true",
            }
        props |= self.config
        self.node_dir(i).mkdir(parents=True, exist_ok=True)
        text = "".join(f"{k}={v}\n" for k, v in props.items())
        (self.node_dir(i) / "server.properties").write_text(text)

    def _cmd(self, xms: str, xmx: str, *args: str) -> list[str]:
        cmd = [java(), f"-Xms{xms}", f"-Xmx{xmx}", *self.jvm_opts, "-Djava.awt.headless=true"]
        archive = cds_archive()
        if self.cds and archive.exists() and archive.stat().st_size:
            cmd.append(f"-XX:SharedArchiveFile={archive}")
        cmd += [f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}"]
        return [*cmd, "-cp", f"{LIB}/*", *args]

    def _format(self) -> None:
        """Format each node's storage that is not yet (in parallel: one JVM each)."""
        todo = [i for i in range(self.nodes)
                if not (self.node_dir(i) / "data" / "meta.properties").exists()]  # fmt: skip
        procs = []
        for i in todo:
            conf = str(self.node_dir(i) / "server.properties")
            cmd = self._cmd("32m", "256m", "kafka.tools.StorageTool", "format",
                            "-t", self.cluster_id, "-c", conf)  # fmt: skip
            for name, password in self.scram_users.items():
                for mechanism in SCRAM_MECHANISMS:
                    cmd += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
            with open(self.log_path(i), "ab") as log:
                procs.append((i, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)))
        failed = [i for i, p in procs if p.wait(120) != 0]
        if failed:
            tails = "\n".join(_tail(self.log_path(i), 20) for i in failed)
            raise KafkaError(f"formatting kafka storage failed for nodes {failed}\n{tails}")

    def _launch(self, i: int) -> None:
        cmd = self._cmd(
            self.heap, self.heap, "kafka.Kafka", str(self.node_dir(i) / "server.properties")
        )
        log = self.log_path(i)
        self._log_starts[i] = log.stat().st_size if log.exists() else 0
        # If this Python dies hard (SIGKILL, a crash), the kernel kills the JVM
        # too: setpriv sets the parent-death signal, which exec keeps. The
        # signal follows the thread that forked, hence only from the main one.
        if (not self.detached and shutil.which("setpriv")
                and threading.current_thread() is threading.main_thread()):  # fmt: skip
            cmd = ["setpriv", "--pdeathsig", "KILL", "--", *cmd]
        with open(log, "ab") as out:
            # Own session: a Ctrl-C at the terminal reaches us, not the JVMs, which stop()
            # then stops in order; a detached one also survives its terminal closing.
            self.procs[i] = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def _logged_since_start(self, i: int, text: str) -> bool:
        try:
            with open(self.log_path(i), "rb") as f:
                f.seek(self._log_starts[i])
                return text.encode() in f.read()
        except OSError:
            return False

    def _signal(self, i: int, sig: int) -> None:
        p = self.procs[i]
        if p is not None and p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(sig)

    def _reap(self, i: int, timeout: float) -> None:
        p, self.procs[i] = self.procs[i], None
        if p is None:
            return
        try:
            p.wait(max(0.0, timeout))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            p.wait(10)


class _Foreign:
    """Stands in for the Popen of a JVM that an earlier, detached start left running."""

    def __init__(self, pid: int | None, node_dir: Path):
        self.pid = pid
        self.returncode = None if pid else 0
        self._conf = str(node_dir / "server.properties")  # so a reused pid is no match

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().decode(errors="replace")
                zombie = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                cmdline, zombie = "", "Z"
            if self._conf not in cmdline or zombie == "Z":
                self.returncode = 0
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (1e9 if timeout is None else timeout)
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            time.sleep(0.1)
        return self.returncode


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m fastcapa_support.kafka_cluster", description=__doc__.split("\n\n")[0]
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("resolve", help="fetch Kafka's jars into tools/kafka/lib")
    st = sub.add_parser("start", help="start a cluster, in the background unless --foreground")
    st.add_argument("--nodes", type=int, default=1)
    st.add_argument("--port", type=int, help="node 0's client port (default: a free one)")
    st.add_argument("--dir", default=".work/kafka", help="its data and logs (default: %(default)s)")
    st.add_argument("--foreground", action="store_true", help="run until Ctrl-C, then stop")
    st.add_argument("--timeout", type=float, default=120)
    sp = sub.add_parser("stop", help="stop the cluster that runs in --dir")
    sp.add_argument("--dir", default=".work/kafka")
    args = ap.parse_args(argv)

    try:
        return _command(args)
    except KafkaError as e:
        print(f"kafka_cluster: {e}", file=sys.stderr)
        return 1


def _command(args: argparse.Namespace) -> int:
    if args.cmd == "resolve":
        t = time.monotonic()
        ensure_jars()
        ensure_cds()
        print(f"kafka jars in {LIB} ({time.monotonic() - t:.1f} s)")
        return 0

    have = (Path(args.dir) / STATE).exists()
    if args.cmd == "stop":
        old = Cluster.attach(args.dir) if have else None
        if old is None or not any(old.pid(i) for i in range(old.nodes)):
            print(f"no kafka running in {args.dir}")
        else:
            old.stop()
            print(f"kafka in {args.dir} stopped")
        return 0

    if have:
        old = Cluster.attach(args.dir)
        if old.running() and _brokers(old.bootstrap, 5) != set():
            print(f"kafka already running in {args.dir}: {old.bootstrap}")
            return 0
        old.stop()  # what is left of a half-dead one
    c = Cluster(args.nodes, args.dir, port=args.port, keep=True)
    t = time.monotonic()
    c.start(timeout=args.timeout, detach=not args.foreground)
    ready = f"kafka ready in {time.monotonic() - t:.1f} s at {c.bootstrap} (logs in {c.dir})"
    if not args.foreground:
        print(ready)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop as on Ctrl-C
    try:
        print(ready, flush=True)
        while c.running():
            time.sleep(0.5)
        print("a kafka node exited\n" + c.tail_logs(20), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        c.stop()


if __name__ == "__main__":
    sys.exit(main())
