"""pytest fixtures for a real Apache Kafka, run by fastcapa_support.kafka_cluster.

- `kafka`: one broker for the whole session; `.bootstrap` is its address.
- `new_topic(partitions=1, replication=1, config=None, cluster=None) -> name`:
  a new, uniquely named topic, ready (every partition has a leader).
- `topic`: the name of a new one-partition topic.
- `kafka_cluster3`: three nodes (brokers and controllers), started once per
  test module and made whole again before each test, for replication 3 /
  min.insync.replicas=2 and outage tests (`kill`, `stop_node`, `start_node`,
  `pause_node`, ...); `new_topic(..., cluster=kafka_cluster3)` makes topics there.
- `kafka_secured`: one broker per test module as a locked-down site runs
  it: SASL users (PLAIN and SCRAM), ACLs enforced, no topic created on
  first use. `new_topic(..., cluster=kafka_secured)` makes topics there.

A failed test that used one of them shows the tail of the broker logs in its report.

- `no_process_left` (autouse): every process a test started through
  fastcapa_support (`runner.start_fastcapa`, `runner.Probe`,
  `VethPair.start`) is killed when the test ends, however it ends.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

__all__ = [
    "SASL_USERS",
    "kafka",
    "kafka_cluster3",
    "kafka_cluster3_module",
    "kafka_secured",
    "kafka_tool",
    "new_topic",
    "no_process_left",
    "pytest_runtest_makereport",
    "topic",
    "wait_topic_ready",
]

from fastcapa_support import kafka_cluster as kafka_tool
from fastcapa_support import processes

_live: dict[str, kafka_tool.Cluster] = {}  # fixture name -> its running cluster, for the hook


@pytest.fixture(autouse=True)
def no_process_left():
    """Kills what the test started in the background and left running (a
    failed assertion before its own stop, a hang): one test's failure
    cannot fail the next one."""
    yield
    processes.reap()


@pytest.fixture(scope="session")
def kafka():
    with kafka_tool.Cluster(nodes=1) as cluster:
        _live["kafka"] = cluster
        yield cluster
        del _live["kafka"]


@pytest.fixture(scope="module")
def kafka_cluster3_module():
    with kafka_tool.Cluster(nodes=3) as cluster:
        _live["kafka_cluster3"] = cluster
        yield cluster
        del _live["kafka_cluster3"]


@pytest.fixture
def kafka_cluster3(kafka_cluster3_module):
    """One three-node cluster per module, whole again for each test (after a
    test that stopped or paused nodes, they are started or resumed)."""
    kafka_cluster3_module.restore()
    return kafka_cluster3_module


# The SASL users of `kafka_secured`: name -> password.
SASL_USERS = {"alice": "alice-secret", "bob": "bob-secret"}


@pytest.fixture(scope="module")
def kafka_secured():
    """A broker as a locked-down site runs it, one per test module, small
    heap. Beside PLAINTEXT (for the tests' own admin and reading clients:
    User:ANONYMOUS, a super user) it has:

    - a SASL_PLAINTEXT listener, `listener_bootstrap("SASL")`, offering
      PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for the users of SASL_USERS;
    - KRaft's authorizer: a topic without ACLs is open to every user, one
      with ACLs only to what they allow (add them with AdminClient.create_acls);
    - auto.create.topics.enable=false: a topic must exist before it is used.
    """
    cluster = kafka_tool.Cluster(
        nodes=1,
        heap="256m",
        listeners={"SASL": kafka_tool.sasl_listener(SASL_USERS)},
        scram_users=SASL_USERS,
        acls=True,
        config={"auto.create.topics.enable": "false"},
    )
    with cluster:
        _live["kafka_secured"] = cluster
        yield cluster
        del _live["kafka_secured"]


def wait_topic_ready(
    bootstrap: str, name: str, partitions: int, timeout: float = 30, in_sync: bool = False
) -> None:
    """Until each live broker's metadata has the topic with a leader for every
    partition (and, with in_sync, every replica in sync: after a node's restart)."""

    def ready(t) -> bool:
        parts = t.partitions.values() if t is not None and t.error is None else []
        return len(parts) == partitions and all(
            p.leader >= 0 and (not in_sync or len(p.isrs) == len(p.replicas)) for p in parts
        )

    deadline = time.monotonic() + timeout
    live = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=timeout).brokers
    for broker in live.values():  # each broker learns of the topic on its own
        admin = AdminClient({"bootstrap.servers": f"{broker.host}:{broker.port}"})
        while True:
            with contextlib.suppress(KafkaException):
                if ready(admin.list_topics(name, timeout=5).topics.get(name)):
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {name} not ready on broker {broker.id} in {timeout} s")
            time.sleep(0.05)


@pytest.fixture
def new_topic(request):
    """Factory: new_topic(partitions=1, replication=1, config=None, cluster=None) -> name.

    The topic lives on `cluster` (default: the session's `kafka`); its name
    carries the test's name, for reading broker logs.
    """
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:80].strip("-")

    def make(partitions=1, replication=1, config=None, cluster=None) -> str:
        cluster = cluster or request.getfixturevalue("kafka")
        name = f"{base}-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        spec = NewTopic(name, partitions, replication, config=dict(config or {}))
        admin.create_topics([spec])[name].result(30)
        wait_topic_ready(cluster.bootstrap, name, partitions)
        return name

    return make


@pytest.fixture
def topic(new_topic):
    return new_topic()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if not report.failed:
        return
    used = set(getattr(item, "fixturenames", ()))
    if "new_topic" in used or "topic" in used:
        used.add("kafka")  # new_topic asks for it on the fly
    for name, cluster in list(_live.items()):
        if name in used:
            report.sections.append((f"{name}: broker logs (tail)", cluster.tail_logs(30)))
