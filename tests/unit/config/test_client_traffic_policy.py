"""ClientTrafficPolicy: Envoy Gateway's model and CEL rules, attachment (listener over
Gateway), what reaches each listener, and HTTPS listener certificate references."""

from __future__ import annotations

import base64
import datetime
import math
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshgate.config.compile import compile_snapshot
from meshgate.config.errors import ConfigInvalid
from meshgate.config.loader import load_texts


def self_signed(cn: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


A_CERT, A_KEY = self_signed("a.test")
B_CERT, B_KEY = self_signed("b.test")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(name: str, cert: str, key: str, namespace: str = "default", type_: str = "kubernetes.io/tls") -> str:
    return f"""
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: {namespace}}}
type: {type_}
data: {{tls.crt: {b64(cert)}, tls.key: {b64(key)}}}
"""


def gateway(listeners: str, name: str = "gw") -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}}}
spec:
  gatewayClassName: meshgate
  listeners:
{listeners}
"""


HTTPS_TWO = """  - {name: a, port: 443, protocol: HTTPS, hostname: a.test, tls: {certificateRefs: [{name: cert-a}]}}
  - {name: b, port: 443, protocol: HTTPS, hostname: b.test, tls: {certificateRefs: [{name: cert-b}]}}"""
CERTS = secret("cert-a", A_CERT, A_KEY) + "---" + secret("cert-b", B_CERT, B_KEY)


def policy(spec: str, name: str = "ctp", section: str | None = None, created: str | None = None) -> str:
    section_line = f", sectionName: {section}" if section else ""
    ts = f", creationTimestamp: '{created}'" if created else ""
    return f"""
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: ClientTrafficPolicy
metadata: {{name: {name}{ts}}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw{section_line}}}]
{spec}
"""


def load(*docs: str):
    result = load_texts([("cfg.yaml", "\n---\n".join(docs))])
    return result


def compiled(*docs: str):
    result = load(*docs)
    assert not result.errors, [str(e) for e in result.errors]
    return compile_snapshot(result.resources)


def compile_errors(*docs: str) -> list[str]:
    result = load(*docs)
    assert not result.errors, [str(e) for e in result.errors]
    with pytest.raises(ConfigInvalid) as info:
        compile_snapshot(result.resources)
    return [f"{e.path}: {e.message}" for e in info.value.errors]


def model_errors(spec: str) -> list[str]:
    result = load(policy(spec))
    return [f"{e.path}: {e.message}" for e in result.errors]


# --- the model ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("  tls: {minVersion: '1.1'}", "spec.tls.minVersion: TLS 1.1 is not supported by meshgate (deprecated by RFC 8996); use 1.2 or 1.3"),
        ("  tls: {maxVersion: '1.0'}", "spec.tls: minVersion must be smaller or equal to maxVersion"),
        ("  tls: {minVersion: '1.3', ciphers: [ECDHE-RSA-AES128-GCM-SHA256]}", "spec.tls: setting ciphers has no effect if the minimum possible TLS version is 1.3"),
        ("  tls: {minVersion: '1.3', maxVersion: '1.2'}", "spec.tls: minVersion must be smaller or equal to maxVersion"),
        ("  tls: {alpnProtocols: [h2, http/1.1]}", "spec.tls.alpnProtocols[0]: h2 is not served by meshgate yet; only http/1.1 can be offered"),
        ("  tls: {ecdhCurves: [X25519]}", "spec.tls.ecdhCurves: ecdhCurves is not supported by meshgate yet"),
        ("  tls: {clientValidation: {caCertificateRefs: []}}", "spec.tls.clientValidation.caCertificateRefs: at least one CA certificate reference is needed"),
        ("  tls: {clientValidation: {caCertificateRefs: [{name: x}], spkiHashes: [abc]}}", "spec.tls.clientValidation.spkiHashes: spkiHashes is not supported by meshgate yet"),
        ("  clientIPDetection: {xForwardedFor: {}}", "spec.clientIPDetection.xForwardedFor: only one of numTrustedHops or trustedCIDRs must be set"),
        ("  clientIPDetection: {customHeader: {name: X-Real-IP}}", "spec.clientIPDetection.customHeader: customHeader is not supported by meshgate yet"),
        ("  http2: {}", "spec.http2: http2 is not supported by meshgate yet"),
        ("  headers: {preserveXRequestID: true}", "spec.headers.preserveXRequestID: preserveXRequestID is not supported by meshgate yet"),
        ("  headers: {withUnderscoresAction: Sometimes}", "spec.headers.withUnderscoresAction: Input should be 'Allow', 'RejectRequest' or 'DropHeader'"),
        ("  connection: {bufferLimit: 12Qi}", "spec.connection.bufferLimit: '12Qi' is not a size (examples: 32768, 32Ki, 1Mi)"),
        ("  timeout: {http: {idleTimeout: 5 minutes}}", "spec.timeout.http.idleTimeout: '5 minutes' is not a duration (examples: 3s, 500ms, 1m30s)"),
    ],
)
def test_envoy_gateway_rules_and_meshgate_limits_are_errors_with_their_path(spec, expected):
    errors = model_errors(spec)
    assert any(e.endswith(expected.split(": ", 1)[1]) and e.startswith(expected.split(": ", 1)[0]) for e in errors), errors


def test_targets_are_gateways_only():
    result = load(policy("").replace("kind: Gateway", "kind: HTTPRoute"))
    assert [e.message for e in result.errors] == [
        "this policy can only have a targetRefs[*].kind of Gateway or ListenerSet"
    ]


# --- attachment and what reaches the listeners ------------------------------------------


def test_listener_policy_wins_over_the_gateway_policy_for_its_listener():
    snap = compiled(
        gateway(HTTPS_TWO),
        CERTS,
        policy("  timeout: {http: {idleTimeout: 30s, requestReceivedTimeout: 5s}}", name="whole"),
        policy("  tls: {minVersion: '1.3'}\n  connection: {bufferLimit: 64Ki}", name="only-b", section="b"),
    )
    table = snap.ports[443].tls
    a, b = table.exact["a.test"], table.exact["b.test"]
    assert (a.limits.idle_timeout, a.limits.request_timeout) == (30.0, 5.0)
    assert a.min_version == ssl.TLSVersion.TLSv1_2
    # The listener-level policy applies whole: none of the Gateway's timeouts.
    assert (b.limits.idle_timeout, b.limits.request_timeout, b.limits.buffer_limit) == (60.0, 0.0, 64 * 1024)
    assert b.min_version == ssl.TLSVersion.TLSv1_3
    assert table.min_version == ssl.TLSVersion.TLSv1_2  # the socket accepts the widest
    status = snap.dump["policies"]["ClientTrafficPolicy"]
    whole = status["default/whole"]["targets"][0]["conditions"]
    assert [c["reason"] for c in whole] == ["Accepted", "Overridden"]
    assert "default/gw/b" in whole[1]["message"]
    listeners = snap.dump["gateways"][0]["listeners"]
    assert listeners[1]["clientTrafficPolicy"] == "default/only-b"
    assert listeners[0]["certificates"][0]["subject"] == "CN=a.test"


def test_zero_idle_timeout_means_never_and_hops_reach_a_plain_http_port():
    snap = compiled(
        gateway("  - {name: http, port: 80, protocol: HTTP}"),
        policy("  timeout: {http: {idleTimeout: 0s}}\n  clientIPDetection: {xForwardedFor: {numTrustedHops: 2}}"),
    )
    limits = snap.ports[80].limits
    assert limits.idle_timeout == math.inf
    assert limits.xff_trusted_hops == 2
    assert snap.ports[80].tls is None


def test_http_listeners_sharing_a_port_must_agree():
    errors = compile_errors(
        gateway("  - {name: one, port: 80, protocol: HTTP, hostname: a.test}\n  - {name: two, port: 80, protocol: HTTP, hostname: b.test}"),
        policy("  clientIPDetection: {xForwardedFor: {numTrustedHops: 1}}", section="two"),
    )
    assert errors == [
        "spec.listeners[1]: listeners on port 80 share connections, so their ClientTrafficPolicy settings must "
        "agree: ClientTrafficPolicy default/ctp here, no ClientTrafficPolicy on listener default/gw/one"
    ]


def test_https_listeners_sharing_a_port_must_agree_on_client_certificates():
    ca_map = f"""
apiVersion: v1
kind: ConfigMap
metadata: {{name: client-ca}}
data:
  ca.crt: |
{chr(10).join('    ' + line for line in A_CERT.splitlines())}
"""
    errors = compile_errors(
        gateway(HTTPS_TWO), CERTS, ca_map,
        policy("  tls: {clientValidation: {caCertificateRefs: [{kind: ConfigMap, group: '', name: client-ca}]}}", section="a"),
    )
    assert len(errors) == 1 and "must all validate client certificates or none" in errors[0]


def test_client_ca_references_must_resolve():
    errors = compile_errors(
        gateway(HTTPS_TWO), CERTS,
        secret("opaque", A_CERT, A_KEY, type_="Opaque"),
        policy("  tls: {clientValidation: {caCertificateRefs: [{name: missing}, {name: opaque}]}}"),
    )
    assert errors == [
        "spec.tls.clientValidation.caCertificateRefs[0]: Secret default/missing not found",
        "spec.tls.clientValidation.caCertificateRefs[1]: Secret default/opaque has no key ca.crt",
    ]


# --- listener certificates -------------------------------------------------------------


def test_certificate_refs_follow_the_gateway_api_reasons():
    other_ns = secret("cert-a", A_CERT, A_KEY, namespace="certs")
    errors = compile_errors(
        gateway("""  - {name: a, port: 443, protocol: HTTPS, hostname: a.test, tls: {certificateRefs: [{name: cert-a, namespace: certs}]}}
  - {name: b, port: 443, protocol: HTTPS, hostname: b.test, tls: {certificateRefs: [{name: opaque}]}}
  - {name: c, port: 443, protocol: HTTPS, hostname: c.test, tls: {certificateRefs: [{name: mismatched}]}}"""),
        other_ns,
        secret("opaque", B_CERT, B_KEY, type_="Opaque"),
        secret("mismatched", A_CERT, B_KEY),
    )
    assert errors == [
        "spec.listeners[0].tls.certificateRefs[0]: ResolvedRefs=False (RefNotPermitted): Secret certs/cert-a is in "
        "another namespace and no ReferenceGrant there allows references from Gateways in default",
        "spec.listeners[1].tls.certificateRefs[0]: ResolvedRefs=False (InvalidCertificateRef): Secret default/opaque "
        "has type Opaque; it must be kubernetes.io/tls",
        "spec.listeners[2].tls.certificateRefs[0]: ResolvedRefs=False (InvalidCertificateRef): Secret "
        "default/mismatched: tls.key does not match the certificate in tls.crt",
    ]


def test_a_reference_grant_allows_a_certificate_in_another_namespace():
    grant = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: gateways-may-read-certs, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: default}]
  to: [{group: '', kind: Secret}]
"""
    snap = compiled(
        gateway("  - {name: a, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: cert-a, namespace: certs}]}}"),
        secret("cert-a", A_CERT, A_KEY, namespace="certs"),
        grant,
    )
    assert snap.ports[443].tls.any_host.listener == "a"


def test_several_certificates_on_one_listener_each_get_a_context():
    snap = compiled(
        gateway("  - {name: a, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: cert-a}, {name: cert-b}]}}"),
        CERTS,
    )
    lst = snap.ports[443].tls.any_host
    assert [names for names, _ in lst.contexts] == [("a.test",), ("b.test",)]
    assert lst.context_for("b.test") is lst.contexts[1][1]


def test_stringdata_secrets_serve_too():
    string_secret = f"""
apiVersion: v1
kind: Secret
metadata: {{name: cert-a}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{chr(10).join('    ' + line for line in A_CERT.splitlines())}
  tls.key: |
{chr(10).join('    ' + line for line in A_KEY.splitlines())}
"""
    snap = compiled(
        gateway("  - {name: a, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: cert-a}]}}"), string_secret
    )
    assert snap.ports[443].tls is not None


def test_passthrough_on_https_is_refused_by_the_model():
    result = load(gateway("  - {name: a, port: 443, protocol: HTTPS, tls: {mode: Passthrough, certificateRefs: [{name: c}]}}"))
    assert [e.message for e in result.errors] == ["must be Terminate for protocol HTTPS"]
