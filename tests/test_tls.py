"""TLS to Kafka (issue 5): a broker with an SSL listener whose certificates
the test makes, and a probe configured through fastcapa's INI file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fastcapa_support import corpus
from fastcapa_support.corpus import CORPUS
from fastcapa_support.fixtures import kafka_tool, wait_topic_ready
from fastcapa_support.kafka_read import read_topic
from fastcapa_support.pcapref import read_capture
from fastcapa_support.runner import assert_clean_failure

pytestmark = pytest.mark.kafka

AFS = CORPUS / "afs.pcap"
PASSWORD = "fastcapa-test"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(folder: Path, name: str) -> Path:
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=folder,
    )  # fmt: skip
    return folder / f"{name}.pem"


def make_broker_keystore(folder: Path, ca: str) -> Path:
    """A key and a certificate for 127.0.0.1 signed by `ca`, as PKCS#12 for the broker."""
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "broker.key", "-out", "broker.csr", cwd=folder,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", "broker.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "broker.pem", cwd=folder,
    )  # fmt: skip
    openssl(
        "pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key",
        "-out", "broker.p12", "-passout", f"pass:{PASSWORD}", cwd=folder,
    )  # fmt: skip
    return folder / "broker.p12"


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A broker with PLAINTEXT and SSL listeners; yields (cluster, its CA, another CA)."""
    folder = tmp_path_factory.mktemp("tls")
    ca = make_ca(folder, "test-ca")
    other_ca = make_ca(folder, "other-ca")
    keystore = make_broker_keystore(folder, "test-ca")
    ssl = {
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": keystore,
        "ssl.keystore.password": PASSWORD,
        "ssl.key.password": PASSWORD,
    }
    with kafka_tool.Cluster(nodes=1, ssl=ssl) as cluster:
        yield cluster, ca, other_ca


def settings_file(folder: Path, ca: Path) -> Path:
    ini = folder / "fastcapa.conf"
    ini.write_text(
        "[kafka-global]\n"
        "security.protocol = SSL\n"
        f"ssl.ca.location = {ca}\n"
        "ssl.endpoint.identification.algorithm = https\n"
    )
    return ini


@corpus.needed()
def test_frames_arrive_over_tls(tls, tmp_path, fastcapa):
    cluster, ca, _ = tls
    topic = "tls-frames"
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config={"retention.ms": "-1"})])[topic].result(30)
    wait_topic_ready(cluster.bootstrap, topic, 1)
    ini = settings_file(tmp_path, ca)
    run = fastcapa("-r", str(AFS), "-t", topic, "-c", str(ini), "-k", cluster.ssl_bootstrap)
    assert run.status == 0, run.stderr
    expected = [frame for _, frame in read_capture(str(AFS)).records]
    got = [r.value for r in read_topic(cluster.bootstrap, topic)]  # read over PLAINTEXT
    assert got == expected


@corpus.needed()
def test_a_wrong_ca_is_a_clear_error_at_start(tls, tmp_path, fastcapa):
    cluster, _, other_ca = tls
    ini = settings_file(tmp_path, other_ca)
    run = fastcapa(
        "-r", str(AFS), "-c", str(ini), "-k", cluster.ssl_bootstrap, "--connect-timeout", "5"
    )
    assert_clean_failure(run, 2)
    assert "certificate verify failed" in run.stderr, run.stderr
