"""TLS to Kafka: one broker with three TLS listeners whose
certificates the test makes, and a probe configured through fastcapa's INI
file:

- SSL: a certificate for 127.0.0.1 signed by the test's CA;
- MTLS: the same, and a client certificate signed by that CA is required
  (ssl.client.auth=required);
- WRONGNAME: a certificate signed by that CA for another host name.

What works delivers every frame (and `dump` reads them back over TLS); what
must not work is one line at start that says which side's certificate failed
and which setting to look at, at the first failed handshake rather than at
the connect timeout (the probe, `dump` and `index` alike)."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fastcapa_support import corpus
from fastcapa_support.corpus import CORPUS
from fastcapa_support.fixtures import kafka_tool, wait_topic_ready
from fastcapa_support.frames import udp_frame
from fastcapa_support.kafka_read import read_topic
from fastcapa_support.pcapref import read_capture, write_capture
from fastcapa_support.runner import Run, assert_clean_failure

pytestmark = pytest.mark.kafka

AFS = CORPUS / "afs.pcap"
PASSWORD = "fastcapa-test"
# Given as the connect timeout of what must fail; a refusal must end the run
# within REFUSED_WITHIN: a bound that tells "at once" from "at the timeout",
# not a benchmark (the refusals take well under a second here).
TIMEOUT = "30"
REFUSED_WITHIN = 10.0


def refused(fastcapa, *args: str) -> Run:
    """`fastcapa args...`, which must fail at start (exit 2, one line) well
    before its timeout."""
    started = time.monotonic()
    run = fastcapa(*args)
    took = time.monotonic() - started
    assert_clean_failure(run, 2)
    assert took < REFUSED_WITHIN, f"refused after {took:.1f} s: {run.stderr}"
    return run


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(folder: Path, name: str) -> Path:
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=folder,
    )  # fmt: skip
    return folder / f"{name}.pem"


def make_certificate(folder: Path, ca: str, name: str, san: str) -> Path:
    """A key (name.key) and a certificate (name.pem) for `san` signed by `ca`."""
    (folder / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
        cwd=folder,
    )  # fmt: skip
    return folder / f"{name}.pem"


def make_broker_keystore(folder: Path, ca: str, name: str, san: str) -> Path:
    """A key and a certificate for `san` signed by `ca`, as PKCS#12 for the broker."""
    make_certificate(folder, ca, name, san)
    openssl(
        "pkcs12", "-export", "-in", f"{name}.pem", "-inkey", f"{name}.key",
        "-out", f"{name}.p12", "-passout", f"pass:{PASSWORD}", cwd=folder,
    )  # fmt: skip
    return folder / f"{name}.p12"


def keystore(path: Path) -> dict[str, object]:
    return {
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": path,
        "ssl.keystore.password": PASSWORD,
        "ssl.key.password": PASSWORD,
    }


@dataclass
class Tls:
    cluster: kafka_tool.Cluster
    ca: Path  # signed every certificate the broker shows, and the client's
    other_ca: Path  # signed nothing the broker shows
    client_cert: Path  # a client certificate signed by `ca`
    client_key: Path


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> Iterator[Tls]:
    """A broker with PLAINTEXT and the three TLS listeners of the module's docstring."""
    folder = tmp_path_factory.mktemp("tls")
    ca = make_ca(folder, "test-ca")
    other_ca = make_ca(folder, "other-ca")
    right = make_broker_keystore(folder, "test-ca", "broker", "IP:127.0.0.1,DNS:localhost")
    wrong = make_broker_keystore(folder, "test-ca", "elsewhere", "DNS:elsewhere.example")
    client = make_certificate(folder, "test-ca", "client", "DNS:fastcapa.example")
    listeners = {
        "MTLS": kafka_tool.Listener(
            "SSL",
            {
                "ssl.client.auth": "required",
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": ca,
            },
        ),
        "WRONGNAME": kafka_tool.Listener("SSL", keystore(wrong)),
    }
    cluster = kafka_tool.Cluster(nodes=1, heap="256m", ssl=keystore(right), listeners=listeners)
    with cluster:
        yield Tls(cluster, ca, other_ca, client, folder / "client.key")


def settings_file(folder: Path, ca: Path, *extra: str) -> Path:
    ini = folder / "fastcapa.conf"
    ini.write_text(
        "[kafka-global]\n"
        "security.protocol = SSL\n"
        f"ssl.ca.location = {ca}\n"
        "ssl.endpoint.identification.algorithm = https\n" + "".join(f"{line}\n" for line in extra)
    )
    return ini


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> tuple[str, list[bytes]]:
    """A small capture file, stamped now, and its frames."""
    frames = [udp_frame(b"t" * 300, src=i % 200 + 1, sport=i) for i in range(300)]
    now_us = time.time_ns() // 1000
    path = str(tmp_path_factory.mktemp("tls-capture") / "frames.pcap")
    return write_capture(path, [(now_us + i, f) for i, f in enumerate(frames)]), frames


def new_topic_on(cluster: kafka_tool.Cluster) -> str:
    """A new one-partition topic that keeps its records, ready."""
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"tls-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config={"retention.ms": "-1"})])[topic].result(30)
    wait_topic_ready(cluster.bootstrap, topic, 1)
    return topic


@corpus.needed()
def test_frames_arrive_over_tls(tls, tmp_path, fastcapa):
    cluster = tls.cluster
    topic = new_topic_on(cluster)
    ini = settings_file(tmp_path, tls.ca)
    run = fastcapa("-r", str(AFS), "-t", topic, "-c", str(ini), "-k", cluster.ssl_bootstrap)
    assert run.status == 0, run.stderr
    expected = [frame for _, frame in read_capture(str(AFS)).records]
    got = [r.value for r in read_topic(cluster.bootstrap, topic)]  # read over PLAINTEXT
    assert got == expected


@corpus.needed()
def test_a_wrong_ca_is_a_clear_error_at_start(tls, tmp_path, fastcapa):
    ini = settings_file(tmp_path, tls.other_ca)
    bootstrap = tls.cluster.ssl_bootstrap
    run = refused(
        fastcapa, "-r", str(AFS), "-c", str(ini), "-k", bootstrap, "--connect-timeout", TIMEOUT
    )
    assert (
        f"cannot connect to Kafka at {bootstrap}: the broker's certificate is not signed by a"
        " CA this client trusts (ssl.ca.location) (TLS: certificate verify failed)"
    ) in run.stderr, run.stderr
    assert "does not name" not in run.stderr, "the name is right: only the CA is said"


def test_a_certificate_for_another_name_is_a_clear_error_at_start(tls, capture, tmp_path, fastcapa):
    """The broker's certificate is signed by the CA the probe trusts, but
    for elsewhere.example, not the 127.0.0.1 the probe connects to. The
    line says the name is what is wrong (OpenSSL's own words are the same
    as for an untrusted CA, and librdkafka's send the operator to
    ssl.ca.location alone)."""
    ini = settings_file(tmp_path, tls.ca)
    bootstrap = tls.cluster.listener_bootstrap("WRONGNAME")
    run = refused(
        fastcapa, "-r", capture[0], "-c", str(ini), "-k", bootstrap, "--connect-timeout", TIMEOUT
    )
    assert (
        "the broker's certificate does not name 127.0.0.1, the host it is reached at"
        " (ssl.endpoint.identification.algorithm=https checks it)"
    ) in run.stderr, run.stderr
    assert "certificate verify failed" in run.stderr, run.stderr
    assert "ssl.ca.location" not in run.stderr, "the CA is right: only the name is said"
    # The same listener with host names unchecked: the name was all that was wrong.
    topic = new_topic_on(tls.cluster)
    unchecked = ["-X", "ssl.endpoint.identification.algorithm=none"]
    run = fastcapa("-r", capture[0], "-t", topic, "-c", str(ini), *unchecked, "-k", bootstrap)
    assert run.status == 0, run.stderr


@pytest.mark.parametrize("with_certificate", [True, False], ids=["client-cert", "no-client-cert"])
def test_a_broker_that_wants_a_client_certificate(
    with_certificate, tls, capture, tmp_path, fastcapa
):
    """ssl.client.auth=required: with a certificate signed by the broker's
    CA every frame arrives; without one the start fails on one line that
    points at the client certificate settings."""
    path, frames = capture
    extra = (
        [f"ssl.certificate.location = {tls.client_cert}", f"ssl.key.location = {tls.client_key}"]
        if with_certificate
        else []
    )
    ini = settings_file(tmp_path, tls.ca, *extra)
    topic = new_topic_on(tls.cluster)
    bootstrap = tls.cluster.listener_bootstrap("MTLS")
    args = ("-r", path, "-t", topic, "-c", str(ini), "-k", bootstrap, "--connect-timeout", TIMEOUT)
    if with_certificate:
        run = fastcapa(*args)
        assert run.status == 0, run.stderr
        assert [r.value for r in read_topic(tls.cluster.bootstrap, topic)] == frames
    else:
        run = refused(fastcapa, *args)
        assert (
            "the broker requires a client certificate and this client has none"
            " (ssl.certificate.location and ssl.key.location)"
            " (TLS alert from the broker: bad certificate)"
        ) in run.stderr, run.stderr
        assert read_topic(tls.cluster.bootstrap, topic) == []


def test_dump_over_tls(tls, capture, tmp_path, fastcapa):
    """`fastcapa dump` takes the same INI file and reads the frames back
    over TLS, in order, with their capture times; a wrong CA is one line
    that says what failed."""
    path = capture[0]
    ini = settings_file(tmp_path, tls.ca)
    topic = new_topic_on(tls.cluster)
    bootstrap = tls.cluster.ssl_bootstrap
    assert fastcapa("-r", path, "-t", topic, "-c", str(ini), "-k", bootstrap).status == 0
    out = tmp_path / "back.pcap"
    run = fastcapa("dump", "-t", topic, "-c", str(ini), "-k", bootstrap, "-o", str(out))
    assert run.status == 0, run.stderr
    assert read_capture(str(out)).records == read_capture(path).records
    ini = settings_file(tmp_path, tls.other_ca)
    run = refused(
        fastcapa, "dump", "-t", topic, "-c", str(ini), "-k", bootstrap, "--timeout", TIMEOUT
    )
    assert "the broker's certificate is not signed by a CA this client trusts" in run.stderr
    assert "(TLS: certificate verify failed)" in run.stderr, run.stderr


def test_index_refuses_at_once_too(tls, capture, tmp_path, fastcapa):
    """`fastcapa index` without the client certificate the broker requires:
    the same one line, at once, before the index topic is looked at."""
    topic = new_topic_on(tls.cluster)
    ini = settings_file(tmp_path, tls.ca)
    bootstrap = tls.cluster.listener_bootstrap("MTLS")
    run = refused(
        fastcapa, "index", "-t", topic, "-c", str(ini), "-k", bootstrap, "--timeout", TIMEOUT
    )
    assert "requires a client certificate and this client has none" in run.stderr, run.stderr
