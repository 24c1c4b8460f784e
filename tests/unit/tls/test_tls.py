"""tls.contexts and tls.sni without sockets: certificate checks, SNI selection, the
post-handshake rules and the front context's settings."""

from __future__ import annotations

import ssl

import pytest

from meshgate.config.snapshot import Limits
from meshgate.http.server import client_address
from meshgate.tls.contexts import (
    CertificateError,
    ServerTLSSettings,
    inspect_certificate,
    server_context,
)
from meshgate.tls.sni import ListenerTLS, PortTLS, TLSFront, accept, name_matches

from .certs import CA_PEM, issue

A = issue("a.test", ("a.test", "*.a.test"))
B = issue("b.test", ("b.test",))


def listener(name, hostname, client_cert="none", low=ssl.TLSVersion.TLSv1_2, high=ssl.TLSVersion.TLSv1_3, pairs=(A,)):
    settings = ServerTLSSettings()
    contexts = tuple((inspect_certificate(*p).names, server_context([p], settings)) for p in pairs)
    return ListenerTLS("default/gw", name, hostname, contexts, low, high, client_cert, Limits())


def test_certificate_names_and_subject_are_read():
    info = inspect_certificate(*A)
    assert info.subject == "CN=a.test"
    assert info.names == ("a.test", "*.a.test")
    assert info.key_type == "ECDSA"


def test_a_key_that_is_not_the_certificates_is_refused():
    with pytest.raises(CertificateError, match="does not match"):
        inspect_certificate(A[0], B[1])


def test_garbage_is_refused_with_the_part_named():
    with pytest.raises(CertificateError, match="tls.crt"):
        inspect_certificate(b"not a cert", A[1])
    with pytest.raises(CertificateError, match="tls.key"):
        inspect_certificate(A[0], b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


def test_unknown_ciphers_and_empty_ca_bundles_are_errors():
    with pytest.raises(CertificateError, match="cipher"):
        server_context([A], ServerTLSSettings(ciphers="NOT-A-CIPHER"))
    with pytest.raises(CertificateError, match="CA bundle"):
        server_context([A], ServerTLSSettings(client_ca=b"nothing here"))


def test_context_defaults_are_tls12_plus_and_http11_alpn():
    ctx = server_context([A], ServerTLSSettings())
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.verify_mode == ssl.CERT_NONE
    names = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert names and all(n.startswith("ECDHE-") for n in names)
    assert not any("CBC" in n or "SHA" == n[-3:] for n in names)
    required = server_context([A], ServerTLSSettings(client_ca=CA_PEM))
    assert required.verify_mode == ssl.CERT_REQUIRED


def test_name_matching_is_one_label_for_wildcards():
    assert name_matches("x.a.test", "*.a.test")
    assert not name_matches("y.x.a.test", "*.a.test")
    assert not name_matches("a.test", "*.a.test")
    assert name_matches("a.test", "a.test")


def test_sni_selects_exact_then_longest_wildcard_then_catch_all():
    exact = listener("exact", "api.example.com")
    wild = listener("wild", "*.example.com")
    deep = listener("deep", "*.eu.example.com")
    table = PortTLS.build(443, [exact, wild, deep])
    assert table.select("api.example.com") is exact
    assert table.select("API.Example.com.") is exact
    assert table.select("x.eu.example.com") is deep
    assert table.select("x.example.com") is wild
    assert table.select("example.com") is None  # unknown name and no catch-all: no handshake
    assert table.select(None) is exact  # no SNI: the first listener
    catch_all = listener("any", None)
    table = PortTLS.build(443, [exact, catch_all])
    assert table.select("other.test") is catch_all
    assert table.select(None) is catch_all


def test_several_certificates_on_one_listener_are_picked_by_their_names():
    lst = listener("l", None, pairs=(A, B))
    assert lst.context_for("b.test") is lst.contexts[1][1]
    assert lst.context_for("x.a.test") is lst.contexts[0][1]
    assert lst.context_for("unknown.test") is lst.contexts[0][1]
    assert lst.context_for(None) is lst.contexts[0][1]


def test_front_context_takes_the_widest_range_and_asks_for_certificates_per_port():
    one = listener("one", "a.test", client_cert="required", low=ssl.TLSVersion.TLSv1_3)
    two = listener("two", "b.test", client_cert="optional")
    front = TLSFront(PortTLS.build(443, [one, two]))
    assert front.context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert front.context.verify_mode == ssl.CERT_OPTIONAL
    # A reload narrows it in place: the socket keeps its context.
    context = front.context
    front.update(PortTLS.build(443, [one]))
    assert front.context is context
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert context.verify_mode == ssl.CERT_REQUIRED


class FakeSSLObject:
    def __init__(self, choice, version="TLSv1.3", peer=None, sni="a.test"):
        self.meshgate_listener = choice
        self.meshgate_sni = sni
        self._version = version
        self._peer = peer

    def version(self):
        return self._version

    def getpeercert(self):
        return self._peer

    def cipher(self):
        return ("TLS_AES_128_GCM_SHA256", "TLSv1.3", 128)

    def selected_alpn_protocol(self):
        return "http/1.1"


def test_accept_enforces_the_selected_listeners_own_rules():
    strict = listener("strict", "a.test", client_cert="required", low=ssl.TLSVersion.TLSv1_3)
    assert "outside the range" in accept(FakeSSLObject(strict, version="TLSv1.2"))
    assert "requires a client certificate" in accept(FakeSSLObject(strict, peer={}))
    peer = {
        "subject": ((("organizationName", "Acme"),), (("commonName", "client-1"),)),
        "subjectAltName": (("DNS", "client.acme"), ("URI", "spiffe://acme/ns/default/sa/web")),
    }
    chosen, info = accept(FakeSSLObject(strict, peer=peer))
    assert chosen is strict
    assert (info.sni, info.gateway, info.listener, info.version) == ("a.test", "default/gw", "strict", "TLSv1.3")
    assert info.peer_subject == "CN=client-1,O=Acme"
    assert info.peer_sans == ("DNS:client.acme", "URI:spiffe://acme/ns/default/sa/web")
    assert isinstance(accept(object()), str)  # no listener chosen: closed


@pytest.mark.parametrize(
    ("xff", "hops", "expected"),
    [
        (["203.0.113.128, 203.0.113.10, 203.0.113.1"], 2, "203.0.113.10"),  # Envoy Gateway's example
        (["203.0.113.128, 203.0.113.10, 203.0.113.1"], 1, "203.0.113.1"),
        (["203.0.113.128", "203.0.113.10, 203.0.113.1"], 3, "203.0.113.128"),  # several lines, in order
        (["203.0.113.1"], 2, "10.0.0.9"),  # fewer addresses than hops: the peer
        (["unknown, 203.0.113.1"], 2, "10.0.0.9"),  # not an address: the peer
        ([], 1, "10.0.0.9"),
        (["2001:db8::1, 203.0.113.1"], 2, "2001:db8::1"),
    ],
)
def test_client_address_counts_trusted_hops_from_the_right(xff, hops, expected):
    headers = [("x-forwarded-for", v) for v in xff] + [("host", "a")]
    assert client_address(headers, hops, "10.0.0.9") == expected
