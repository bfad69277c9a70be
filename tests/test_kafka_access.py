"""Reaching Kafka as a locked-down site runs it: SASL users, ACLs, and
topics that do not exist yet.

The README promises that SASL works by passing librdkafka's settings
through (`-X` or the INI file); these tests do that against a real broker
(`kafka_secured`: a SASL listener with PLAIN and SCRAM users, ACLs enforced,
no topic created on first use) and against the session's broker, which does
create topics on first use (Kafka's default). Each run replays a small
capture file and the topic is read back over PLAINTEXT by an independent
consumer; the one about a permission taken away while running captures a
steady stream live, from a veth pair of its own.

What cannot work is refused: at start, on one line (exit 2), at once rather
than at the connect timeout (a wrong password); while running, by stopping
the capture with the books balanced (exit 1).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter

import pytest
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from fastcapa_support.fixtures import SASL_USERS
from fastcapa_support.frames import udp_frame
from fastcapa_support.kafka_read import read_topic
from fastcapa_support.netns import VethPair, netns_available
from fastcapa_support.pcapref import write_capture
from fastcapa_support.runner import Probe, assert_accounting, assert_clean_failure
from fastcapa_support.steady import SteadySender

pytestmark = pytest.mark.kafka

FRAMES = [udp_frame(b"a" * 100, src=i % 200 + 1, sport=i) for i in range(200)]
# A refusal at start ends the run within this, with --connect-timeout
# CONNECT_TIMEOUT: a bound that tells "at once" from "at the timeout", not
# a benchmark (the refusals take well under a second here).
REFUSED_WITHIN = 10.0
CONNECT_TIMEOUT = "30"


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> str:
    """FRAMES, stamped now (a record older than the topic's retention would
    be deleted at the broker's next check)."""
    now_us = time.time_ns() // 1000
    path = tmp_path_factory.mktemp("access") / "frames.pcap"
    return write_capture(str(path), [(now_us + i, f) for i, f in enumerate(FRAMES)])


def sasl(cluster, mechanism: str, user: str, password: str) -> list[str]:
    return [
        "-k", cluster.listener_bootstrap("SASL"),
        "-X", "security.protocol=SASL_PLAINTEXT",
        "-X", f"sasl.mechanism={mechanism}",
        "-X", f"sasl.username={user}",
        "-X", f"sasl.password={password}",
    ]  # fmt: skip


def event_lines(stderr: str) -> list[str]:
    """What the workers told the operator (lines naming a worker thread)."""
    return [line for line in stderr.splitlines() if line.startswith("fastcapa: fcapa-")]


def _topic_acl(kind, topic: str, user: str, operation: AclOperation):
    """An AclBinding (or AclBindingFilter) letting `user` do `operation` on
    `topic` from any host."""
    return kind(
        ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, f"User:{user}", "*",
        operation, AclPermissionType.ALLOW,
    )  # fmt: skip


def allow(cluster, topic: str, user: str, operation: AclOperation) -> None:
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    acl = _topic_acl(AclBinding, topic, user, operation)
    admin.create_acls([acl])[acl].result(30)


def revoke(cluster, topic: str, user: str, operation: AclOperation) -> None:
    """Takes back what `allow` gave."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    acl = _topic_acl(AclBindingFilter, topic, user, operation)
    assert len(admin.delete_acls([acl])[acl].result(30)) == 1


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_a_sasl_user_delivers_every_frame(mechanism, kafka_secured, new_topic, capture, fastcapa):
    topic = new_topic(cluster=kafka_secured)
    run = fastcapa(
        "-r", capture, "-t", topic, *sasl(kafka_secured, mechanism, "alice", SASL_USERS["alice"])
    )
    assert run.status == 0, run.stderr
    assert not event_lines(run.stderr), run.stderr
    assert [r.value for r in read_topic(kafka_secured.bootstrap, topic)] == FRAMES


def test_a_wrong_password_is_one_line_at_start(kafka_secured, capture, fastcapa):
    """Refused at the first answer of the broker, not at the connect
    timeout, naming the user and the settings; the broker's words at the end."""
    started = time.monotonic()
    run = fastcapa(
        "-r", capture, "--connect-timeout", CONNECT_TIMEOUT,
        *sasl(kafka_secured, "SCRAM-SHA-256", "alice", "not-her-password"),
    )  # fmt: skip
    took = time.monotonic() - started
    assert_clean_failure(run, 2)
    assert "the broker refused the SASL credentials of user alice" in run.stderr, run.stderr
    assert "sasl.password" in run.stderr and "sasl.mechanism=SCRAM-SHA-256" in run.stderr
    assert "(SASL: Authentication failed" in run.stderr, run.stderr
    assert took < REFUSED_WITHIN, f"refused after {took:.1f} s"


def test_a_topic_the_user_may_describe_but_not_write_is_one_line_at_start(
    kafka_secured, new_topic, capture, fastcapa
):
    """alice may see the topic (DESCRIBE) but not write it. The topic's
    metadata says so (the operations she is authorized, which the start-up
    check asks for): one line naming the topic, the user and WRITE, exit 2,
    rather than a run whose every frame the broker refuses."""
    topic = new_topic(cluster=kafka_secured)
    allow(kafka_secured, topic, "alice", AclOperation.DESCRIBE)
    run = fastcapa(
        "-r", capture, "-t", topic, "--connect-timeout", CONNECT_TIMEOUT,
        *sasl(kafka_secured, "PLAIN", "alice", SASL_USERS["alice"]),
    )  # fmt: skip
    assert_clean_failure(run, 2)
    said = f"topic {topic} may be described but not written by user alice"
    assert said in run.stderr, run.stderr
    assert "must allow WRITE" in run.stderr, run.stderr
    assert read_topic(kafka_secured.bootstrap, topic) == []


RATE = 1000  # frames/s of the live stream


@pytest.mark.netns
@pytest.mark.skipif(not netns_available(), reason="needs root and network namespaces")
def test_write_taken_away_while_running_stops_the_capture_with_the_books_balanced(
    kafka_secured, new_topic, tmp_path
):
    """alice may write the topic when the probe starts; then her WRITE is
    revoked. The brokers refuse her frames from then on: the probe stops on
    its own (exit 1) with one error line naming the topic, the user and
    WRITE, and every frame it took is accounted: delivered (and in Kafka),
    refused or purged at [kaf], or dropped at its stage."""
    topic = new_topic(cluster=kafka_secured)
    for operation in (AclOperation.DESCRIBE, AclOperation.WRITE):
        allow(kafka_secured, topic, "alice", operation)
    user = sasl(kafka_secured, "PLAIN", "alice", SASL_USERS["alice"])
    with VethPair(queues=1) as veth:
        probe = Probe(veth.probe_side, topic, kafka_secured.bootstrap, tmp_path, *user)
        sender = SteadySender(veth, RATE * 120, RATE)
        try:
            probe.wait_for("frames delivered", lambda r: r["kaf"]["out"] >= RATE, 60)
            revoke(kafka_secured, topic, "alice", AclOperation.WRITE)
            status, stderr, report = probe.finish(60, "WRITE was revoked")
        finally:
            sender.kill()
            probe.kill()
    assert status == 1, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("fastcapa: error:")]
    assert len(errors) == 1, stderr
    assert f"topic {topic}: the brokers refused user alice a frame" in errors[0], errors
    assert "Topic authorization failed" in errors[0] and "WRITE" in errors[0], errors
    assert "accounting" not in stderr, stderr
    assert_accounting(report)
    assert report["kaf"]["drops"] > 0, report["kaf"]
    assert report["kaf"]["queued"] == 0 and report["rx"]["queued"] == 0, report
    # Kafka holds exactly what the probe says it delivered.
    assert len(read_topic(kafka_secured.bootstrap, topic)) == report["kaf"]["out"] > 0


def test_a_topic_the_user_may_not_see_is_one_line_at_start(
    kafka_secured, new_topic, capture, fastcapa
):
    """The topic has ACLs, none for alice: she may not even see it, and the
    probe says so at start instead of queueing frames it cannot deliver."""
    topic = new_topic(cluster=kafka_secured)
    allow(kafka_secured, topic, "bob", AclOperation.WRITE)
    run = fastcapa(
        "-r", capture, "-t", topic, "--connect-timeout", "10",
        *sasl(kafka_secured, "PLAIN", "alice", SASL_USERS["alice"]),
    )  # fmt: skip
    assert_clean_failure(run, 2)
    assert topic in run.stderr and "not authorized" in run.stderr, run.stderr


def test_a_missing_topic_without_auto_creation_is_one_line_at_start(
    kafka_secured, capture, fastcapa
):
    """A broker that does not create topics on first use: a probe pointed at
    a topic that does not exist says so at start (exit 2), at once, rather
    than queueing frames until librdkafka gives up on the topic."""
    topic = f"no-such-topic-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    run = fastcapa("-r", capture, "-t", topic, "-k", kafka_secured.bootstrap)
    assert_clean_failure(run, 2)
    assert f"topic {topic} does not exist" in run.stderr, run.stderr
    assert time.monotonic() - started < 20, "the missing topic was noticed late"


def test_a_missing_topic_with_auto_creation_is_created_and_filled(
    kafka, capture, tmp_path, fastcapa
):
    """Kafka's default: the first use creates the topic (one partition here).
    Every frame is delivered, and the operator sees no error on the way."""
    topic = f"made-on-first-use-{uuid.uuid4().hex[:8]}"
    stats = tmp_path / "stats.jsonl"
    run = fastcapa("-r", capture, "-t", topic, "-k", kafka.bootstrap, "--stats-json", str(stats))
    assert run.status == 0, run.stderr
    report = json.loads(stats.read_text().splitlines()[-1])
    assert_accounting(report)
    assert report["kaf"]["out"] == len(FRAMES), report["kaf"]
    assert not event_lines(run.stderr), run.stderr
    assert "error" not in run.stderr, run.stderr
    assert Counter(r.value for r in read_topic(kafka.bootstrap, topic)) == Counter(FRAMES)
