"""Certificates for the TLS unit tests, made at import time (EC P-256: fast)."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_NOW = datetime.datetime.now(datetime.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


CA_KEY = ec.generate_private_key(ec.SECP256R1())
CA_CERT = (
    x509.CertificateBuilder()
    .subject_name(_name("unit CA"))
    .issuer_name(_name("unit CA"))
    .public_key(CA_KEY.public_key())
    .serial_number(1)
    .not_valid_before(_NOW - datetime.timedelta(minutes=5))
    .not_valid_after(_NOW + datetime.timedelta(days=1))
    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    .sign(CA_KEY, hashes.SHA256())
)
CA_PEM = CA_CERT.public_bytes(serialization.Encoding.PEM)


def issue(cn: str, names: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(CA_CERT.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOW - datetime.timedelta(minutes=5))
        .not_valid_after(_NOW + datetime.timedelta(days=1))
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    return builder.sign(CA_KEY, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), _key_pem(key)
