"""TLS at the edge: server contexts built once per config (``contexts``) and the
per-port SNI dispatch the listeners consult on every handshake (``sni``).

Nothing here imports pydantic: the compile step (config/compile/tls.py) reads the
models and hands these modules plain values.
"""

from meshgate.tls.contexts import (
    INTERMEDIATE_CIPHERS,
    CertificateError,
    CertInfo,
    ServerTLSSettings,
    inspect_certificate,
    server_context,
)
from meshgate.tls.sni import ListenerTLS, PortTLS, TLSFront, TLSInfo

__all__ = [
    "INTERMEDIATE_CIPHERS",
    "CertInfo",
    "CertificateError",
    "ListenerTLS",
    "PortTLS",
    "ServerTLSSettings",
    "TLSFront",
    "TLSInfo",
    "inspect_certificate",
    "server_context",
]
