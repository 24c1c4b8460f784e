#!/usr/bin/env python3
"""Throwaway certificates for the HTTPS example (examples/tls, docs/tls.md).

Writes to examples/tls/generated/ (or the directory given):
  certs.yaml        Secrets cert-a (a.example.test) and cert-b (b.example.test), and the
                    ConfigMap client-ca; the gateway reads it as a second --config
  ca.crt            the test CA, for clients: curl --cacert generated/ca.crt
  client.crt/.key   a client certificate for the mTLS listener (port 9443)

Private keys are generated on each run and never committed (generated/ holds a
.gitignore). The CA is valid for 30 days and trusted by nothing but these examples.

    python examples/tls/make-certs.py
    meshgate gateway --config examples/tls --config examples/tls/generated
    curl --cacert examples/tls/generated/ca.crt --resolve a.example.test:8443:127.0.0.1 \\
         https://a.example.test:8443/
"""

from __future__ import annotations

import base64
import datetime
import sys
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAYS = 30


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshgate example"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key) -> bytes:  # noqa: ANN001
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(cn: str):  # noqa: ANN201
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(ca, ca_key, cn: str, dns: list[str], client: bool = False) -> tuple[bytes, bytes]:  # noqa: ANN001
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=DAYS))
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def tls_secret(name: str, pair: tuple[bytes, bytes]) -> dict:
    return {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "kubernetes.io/tls",
        "data": {"tls.crt": base64.b64encode(pair[0]).decode(), "tls.key": base64.b64encode(pair[1]).decode()},
    }


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / ".gitignore").write_text("*\n")  # private keys: never committed
    ca, ca_key = make_ca("meshgate example server CA")
    client_ca, client_ca_key = make_ca("meshgate example client CA")
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    client_ca_pem = client_ca.public_bytes(serialization.Encoding.PEM)
    docs = [
        tls_secret("cert-a", issue(ca, ca_key, "a.example.test", ["a.example.test"])),
        tls_secret("cert-b", issue(ca, ca_key, "b.example.test", ["b.example.test"])),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "client-ca"},
         "data": {"ca.crt": client_ca_pem.decode()}},
    ]
    certs = out / "certs.yaml"
    # Written beside and renamed, so a running gateway reloads a whole file (rotation).
    tmp = out / ".certs.yaml.tmp"
    tmp.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    tmp.replace(certs)
    (out / "ca.crt").write_bytes(ca_pem)
    client_cert, client_key = issue(client_ca, client_ca_key, "example-client", [], client=True)
    (out / "client.crt").write_bytes(client_cert)
    (out / "client.key").write_bytes(client_key)
    (out / "client.key").chmod(0o600)
    print(f"wrote {certs}, {out / 'ca.crt'}, {out / 'client.crt'} and {out / 'client.key'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "generated")
