"""HTTPS listeners end to end: a real gateway, certificates made at run time by a test
CA (``cryptography``), clients on the ``ssl`` module.

Covered: the certificate each SNI gets, X-Forwarded-Proto upstream, TLS 1.0/1.1
refused, ClientTrafficPolicy minVersion 1.3, client certificates required / optional /
missing / from the wrong CA, 421 when Host and SNI name different listeners, client
address from X-Forwarded-For with numTrustedHops in the access log, certificate
rotation with a keep-alive connection open, and a bad certificate on reload rejected.
"""

from __future__ import annotations

import base64
import datetime
import json
import socket
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from harness import (
    LOCALHOST,
    EchoServer,
    Gateway,
    free_port,
    parse_responses,
    route_doc,
    service_docs,
    wait_until,
)

GATEWAY_CLASS = "meshgate"


# --------------------------------------------------------------------------- certificates


class TestCA:
    """A CA that signs leaf certificates for the tests (EC P-256: fast to make)."""

    __test__ = False

    def __init__(self, name: str = "meshgate test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, common_name: str, dns_names: list[str] = (), client: bool = False) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
        )
        if dns_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False
            )
        cert = builder.sign(self.key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem


def tls_secret(name: str, pair: tuple[bytes, bytes], plain: bool = False) -> dict:
    cert, key = pair
    doc = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "kubernetes.io/tls"}
    if plain:
        doc["stringData"] = {"tls.crt": cert.decode(), "tls.key": key.decode()}
    else:
        doc["data"] = {"tls.crt": base64.b64encode(cert).decode(), "tls.key": base64.b64encode(key).decode()}
    return doc


def https_listener(name: str, port: int, hostname: str | None, secret: str) -> dict:
    listener = {
        "name": name,
        "port": port,
        "protocol": "HTTPS",
        "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": secret}]},
        "allowedRoutes": {"namespaces": {"from": "All"}},
    }
    if hostname:
        listener["hostname"] = hostname
    return listener


def gateway(listeners: list[dict], name: str = "gw") -> dict:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name},
        "spec": {"gatewayClassName": GATEWAY_CLASS, "listeners": listeners},
    }


def client_policy(spec: dict, section: str | None = None, name: str = "ctp") -> dict:
    ref = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}
    if section:
        ref["sectionName"] = section
    return {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "ClientTrafficPolicy",
        "metadata": {"name": name},
        "spec": {"targetRefs": [ref], **spec},
    }


def echo_route(echo: EchoServer) -> list[dict]:
    return [
        *service_docs("echo", [echo]),
        route_doc("r", [{"backendRefs": [{"name": "echo", "port": 8080}]}]),
    ]


# --------------------------------------------------------------------------- client


def client_context(
    ca_pem: bytes | None,
    max_version: ssl.TLSVersion | None = None,
    min_version: ssl.TLSVersion | None = None,
    cert: tuple[bytes, bytes] | None = None,
    tmp: Path | None = None,
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the tests read the served certificate's subject instead
    if ca_pem is not None:
        ctx.load_verify_locations(cadata=ca_pem.decode())
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    if min_version is not None and min_version < ssl.TLSVersion.TLSv1_2:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer what it asks for
    if cert is not None:
        assert tmp is not None
        (tmp / "client.crt").write_bytes(cert[0])
        (tmp / "client.key").write_bytes(cert[1])
        ctx.load_cert_chain(tmp / "client.crt", tmp / "client.key")
    return ctx


class TLSClient:
    """One TLS connection to the gateway, kept open for keep-alive requests."""

    def __init__(self, port: int, sni: str | None, ctx: ssl.SSLContext) -> None:
        raw = socket.create_connection((LOCALHOST, port), timeout=5)
        self.sock = ctx.wrap_socket(raw, server_hostname=sni)

    @property
    def subject(self) -> str:
        der = self.sock.getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()

    def get(self, host: str, path: str = "/", headers: dict | None = None):
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            responses = parse_responses(data)
            if responses:
                return responses[0]
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        responses = parse_responses(data)
        assert responses, f"no response: {data!r}"
        return responses[0]

    def close(self) -> None:
        self.sock.close()


def header(record: dict, name: str) -> str | None:
    """One header of a request the echo server recorded (it keeps lists of values)."""
    for key, values in record["headers"].items():
        if key.lower() == name:
            return values[0] if isinstance(values, list) else values
    return None


def request(port: int, sni: str | None, ctx: ssl.SSLContext, host: str | None = None, headers=None):
    client = TLSClient(port, sni, ctx)
    try:
        return client.subject, client.get(host or sni or "localhost", headers=headers)
    finally:
        client.close()


def refused(port: int, sni: str, ctx: ssl.SSLContext) -> bool:
    """True when the handshake, or the first request on it, fails (TLS 1.3 reports a
    refused client certificate only after the client's first write)."""
    try:
        request(port, sni, ctx)
    except (ssl.SSLError, ConnectionError, OSError, AssertionError):
        return True
    return False


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


@pytest.fixture(scope="module")
def echo():
    with EchoServer() as server:
        yield server


def two_host_config(port: int, ca: TestCA, echo: EchoServer, a_pair=None, extra=()) -> list[dict]:
    a_pair = a_pair or ca.issue("a.test", ["a.test"])
    return [
        gateway([https_listener("a", port, "a.test", "cert-a"), https_listener("b", port, "b.test", "cert-b")]),
        tls_secret("cert-a", a_pair),
        tls_secret("cert-b", ca.issue("b.test", ["b.test"]), plain=True),
        *echo_route(echo),
        *extra,
    ]


# --------------------------------------------------------------------------- tests


def test_sni_picks_each_listeners_certificate_and_upstream_sees_https(ca, echo):
    port = free_port()
    with Gateway(two_host_config(port, ca, echo)):
        ctx = client_context(ca.pem)
        echo.mark()
        for host in ("a.test", "b.test"):
            subject, resp = request(port, host, ctx)
            assert subject == f"CN={host}"
            assert resp.status == 200
        seen = echo.requests()
        assert [header(r, "x-forwarded-proto") for r in seen] == ["https", "https"]
        # No SNI: the first listener (none lacks a hostname).
        subject, resp = request(port, None, ctx, host="a.test")
        assert subject == "CN=a.test" and resp.status == 200


def test_tls_1_0_and_1_1_are_refused_and_1_2_1_3_served(ca, echo):
    port = free_port()
    with Gateway(two_host_config(port, ca, echo)):
        for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
            ctx = client_context(ca.pem, min_version=old, max_version=old)
            assert refused(port, "a.test", ctx), old
        for ok in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            client = TLSClient(port, "a.test", client_context(ca.pem, min_version=ok, max_version=ok))
            assert client.sock.version() == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[ok.name]
            assert client.sock.selected_alpn_protocol() in (None, "http/1.1")
            assert client.get("a.test").status == 200
            client.close()


def test_client_traffic_policy_min_version_1_3(ca, echo):
    port = free_port()
    config = two_host_config(port, ca, echo, extra=[client_policy({"tls": {"minVersion": "1.3"}})])
    with Gateway(config):
        tls12 = client_context(ca.pem, max_version=ssl.TLSVersion.TLSv1_2)
        assert refused(port, "a.test", tls12)
        assert refused(port, "b.test", tls12)
        subject, resp = request(port, "b.test", client_context(ca.pem))
        assert resp.status == 200


def test_listener_level_min_version_enforced_on_a_shared_port(ca, echo):
    # Only listener b asks for 1.3: a keeps 1.2 on the same socket.
    port = free_port()
    config = two_host_config(port, ca, echo, extra=[client_policy({"tls": {"minVersion": "1.3"}}, section="b")])
    with Gateway(config):
        tls12 = client_context(ca.pem, max_version=ssl.TLSVersion.TLSv1_2)
        assert request(port, "a.test", tls12)[1].status == 200
        assert refused(port, "b.test", tls12)


def test_421_when_host_names_another_listener_than_sni(ca, echo):
    port = free_port()
    with Gateway(two_host_config(port, ca, echo)):
        echo.mark()
        subject, resp = request(port, "a.test", client_context(ca.pem), host="b.test")
        assert subject == "CN=a.test"
        assert resp.status == 421
        assert echo.count() == 0


def test_client_certificates_required_optional_missing_wrong_ca(ca, echo, tmp_path):
    port = free_port()
    client_ca = TestCA("client CA")
    other_ca = TestCA("someone else's CA")
    ca_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "client-ca"},
              "data": {"ca.crt": client_ca.pem.decode()}}
    validation = {"caCertificateRefs": [{"kind": "ConfigMap", "group": "", "name": "client-ca"}]}
    good = client_ca.issue("client-1", client=True)
    bad = other_ca.issue("intruder", client=True)
    config = two_host_config(
        port, ca, echo, extra=[ca_map, client_policy({"tls": {"clientValidation": validation}})]
    )
    with Gateway(config, extra_args=["--access-log", str(tmp_path / "access.log")]) as gw:
        assert request(port, "a.test", client_context(ca.pem, cert=good, tmp=tmp_path))[1].status == 200
        assert refused(port, "a.test", client_context(ca.pem))  # no certificate
        assert refused(port, "a.test", client_context(ca.pem, cert=bad, tmp=tmp_path))  # wrong CA

        optional = {**validation, "optional": True}
        gw.reload(two_host_config(port, ca, echo, extra=[ca_map, client_policy({"tls": {"clientValidation": optional}})]))
        assert request(port, "a.test", client_context(ca.pem))[1].status == 200
        assert request(port, "a.test", client_context(ca.pem, cert=good, tmp=tmp_path))[1].status == 200
        assert refused(port, "a.test", client_context(ca.pem, cert=bad, tmp=tmp_path))


def test_x_forwarded_for_trusted_hops_gives_the_client_address(ca, echo, tmp_path):
    port = free_port()
    log = tmp_path / "access.log"
    config = two_host_config(
        port, ca, echo, extra=[client_policy({"clientIPDetection": {"xForwardedFor": {"numTrustedHops": 2}}})]
    )
    with Gateway(config, extra_args=["--access-log", str(log)]):
        ctx = client_context(ca.pem)
        echo.mark()
        xff = "203.0.113.128, 203.0.113.10, 192.0.2.1"
        assert request(port, "a.test", ctx, headers={"X-Forwarded-For": xff})[1].status == 200
        # Fewer addresses than trusted hops: the peer address.
        assert request(port, "a.test", ctx, headers={"X-Forwarded-For": "198.51.100.7"})[1].status == 200

        def entries():
            if not log.exists():
                return None
            lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            return lines if len(lines) >= 2 else None

        first, second = wait_until(entries, 5, what="access log lines")[-2:]
        assert first["client_address"] == "203.0.113.10"
        assert second["client_address"] == LOCALHOST
        # Upstream, the peer (not the detected client) is appended, as Envoy does.
        sent = [header(r, "x-forwarded-for") for r in echo.requests()]
        assert sent[0] == xff + ", " + LOCALHOST


def test_certificate_rotation_keeps_open_connections_and_serves_new_ones(ca, echo):
    port = free_port()
    with Gateway(two_host_config(port, ca, echo)) as gw:
        ctx = client_context(ca.pem)
        kept = TLSClient(port, "a.test", ctx)
        assert kept.subject == "CN=a.test"
        assert kept.get("a.test").status == 200

        rotated = ca.issue("a.test rotated", ["a.test"])
        gw.reload(two_host_config(port, ca, echo, a_pair=rotated))
        # The open connection keeps its session and keeps being served.
        assert kept.get("a.test").status == 200
        assert kept.subject == "CN=a.test"
        # A new handshake sees the new certificate.
        assert request(port, "a.test", ctx)[0] == "CN=a.test rotated"
        kept.close()


def test_bad_certificate_on_reload_is_rejected_and_the_old_one_served(ca, echo):
    port = free_port()
    first = ca.issue("a.test", ["a.test"])
    with Gateway(two_host_config(port, ca, echo, a_pair=first)) as gw:
        version = gw.config_version()
        other_key = ca.issue("x", ["x"])[1]  # a key that is not the certificate's
        gw.write_config(two_host_config(port, ca, echo, a_pair=(first[0], other_key)))
        wait_until(lambda: "config change rejected" in gw.stderr_text(), 10, what="rejection logged")
        assert "InvalidCertificateRef" in gw.stderr_text()
        assert "does not match" in gw.stderr_text()
        assert gw.config_version() == version
        subject, resp = request(port, "a.test", client_context(ca.pem))
        assert subject == "CN=a.test" and resp.status == 200
