"""Server-side SSLContexts, built once per config from PEM bytes.

``server_context`` is the only place TLS parameters are chosen: versions (1.2 and 1.3
only), Mozilla's "intermediate" cipher list for TLS 1.2 unless the config names others,
ALPN, and client certificate validation. ``inspect_certificate`` checks a certificate
and key pair before anything is served and says why one is unusable.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

# Mozilla's "intermediate" configuration (TLS 1.2 part; TLS 1.3 suites are all good).
# The DHE suites are left out: no DH parameters are loaded.
INTERMEDIATE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)

TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class CertificateError(ValueError):
    """A certificate, key or CA bundle that cannot be served; the message says why."""


@dataclass(frozen=True, slots=True)
class ServerTLSSettings:
    """What a listener's ClientTrafficPolicy (or the defaults) asks of its handshakes."""

    min_version: str = "1.2"
    max_version: str = "1.3"
    ciphers: str = INTERMEDIATE_CIPHERS  # OpenSSL cipher string for TLS 1.2
    alpn: tuple[str, ...] = ("http/1.1",)  # () turns ALPN off
    client_ca: bytes = b""  # PEM CA bundle; empty: clients are not asked for certificates
    client_cert_optional: bool = False  # with client_ca: a client may present none

    @property
    def client_cert(self) -> str:
        """"none", "optional" or "required"."""
        if not self.client_ca:
            return "none"
        return "optional" if self.client_cert_optional else "required"


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What /config_dump and SNI selection need to know about one certificate."""

    subject: str  # RFC 4514
    names: tuple[str, ...]  # DNS SANs, lowercase (the CN when there is no SAN)
    not_after: datetime
    key_type: str  # "RSA", "EC", "Ed25519", ...


def inspect_certificate(chain_pem: bytes, key_pem: bytes) -> CertInfo:
    """Parse a PEM chain (leaf first) and its private key; raise CertificateError when
    either is malformed, the key is encrypted, or the key is not the leaf's."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise CertificateError(f"tls.crt is not a PEM certificate chain ({exc})") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise CertificateError("tls.key is encrypted; meshgate needs an unencrypted key") from None
    except Exception as exc:  # noqa: BLE001 - cryptography raises ValueError and its own kinds
        raise CertificateError(f"tls.key is not a PEM private key ({exc})") from None
    leaf = chain[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, spki) != leaf.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ):
        raise CertificateError("tls.key does not match the certificate in tls.crt")
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(n.lower() for n in san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = tuple(
            str(a.value).lower() for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        )
    if isinstance(key, rsa.RSAPrivateKey):
        key_type = "RSA"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        key_type = "ECDSA"
    else:
        key_type = type(key).__name__.removesuffix("PrivateKey")
    return CertInfo(
        subject=leaf.subject.rfc4514_string(),
        names=names,
        not_after=leaf.not_valid_after_utc,
        key_type=key_type,
    )


def server_context(pairs: Sequence[tuple[bytes, bytes]], settings: ServerTLSSettings) -> ssl.SSLContext:
    """A server SSLContext serving the certificate/key ``pairs`` (one per key type: an
    RSA and an ECDSA certificate may share a context; OpenSSL picks what the client
    supports) with ``settings``. Raises CertificateError."""
    ctx = base_context(settings)
    for chain_pem, key_pem in pairs:
        _load_pair(ctx, chain_pem, key_pem)
    return ctx


def base_context(settings: ServerTLSSettings) -> ssl.SSLContext:
    """A server SSLContext with ``settings`` and no certificate yet."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[settings.min_version]
    ctx.maximum_version = TLS_VERSIONS[settings.max_version]
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    try:
        ctx.set_ciphers(settings.ciphers)
    except ssl.SSLError:
        raise CertificateError(f"no usable cipher in {settings.ciphers!r}") from None
    if settings.alpn:
        ctx.set_alpn_protocols(list(settings.alpn))
    if settings.client_ca:
        try:
            ctx.load_verify_locations(cadata=settings.client_ca.decode("ascii", "replace"))
        except ssl.SSLError as exc:
            raise CertificateError(f"the CA bundle holds no usable certificate ({exc.reason})") from None
        ctx.verify_mode = ssl.CERT_OPTIONAL if settings.client_cert_optional else ssl.CERT_REQUIRED
    return ctx


def _load_pair(ctx: ssl.SSLContext, chain_pem: bytes, key_pem: bytes) -> None:
    # ssl loads certificates from files only: write them to a private directory for the
    # duration of the call.
    with tempfile.TemporaryDirectory(prefix="meshgate-tls-") as tmp:
        cert_path = os.path.join(tmp, "tls.crt")
        key_path = os.path.join(tmp, "tls.key")
        for path, data in ((cert_path, chain_pem), (key_path, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        try:
            ctx.load_cert_chain(cert_path, key_path, password=lambda: b"")
        except ssl.SSLError as exc:
            raise CertificateError(f"OpenSSL refused the certificate and key ({exc.reason})") from None
