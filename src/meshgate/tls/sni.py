"""SNI dispatch on an HTTPS port: which listener, and which certificate, a handshake gets.

One port may carry several HTTPS listeners (different hostnames); they share one
socket. The socket's SSLContext (``TLSFront.context``) serves no certificate itself: its
SNI callback looks the server name up in the port's current ``PortTLS`` table and
switches the connection to the chosen listener's context. A reload swaps the table
(``TLSFront.update``), never the socket: connections already established keep their
session, and the next handshake sees the new certificates.

OpenSSL takes the protocol version range and whether to ask for a client certificate
from the socket's context, before the SNI callback runs. The front context therefore
holds the widest range (and asks for certificates when the port's listeners validate
clients), and ``accept`` enforces the chosen listener's own range once the handshake
is done. Certificates, cipher list, ALPN and the trusted CAs follow the switch.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from meshgate.tls.contexts import INTERMEDIATE_CIPHERS, TLS_VERSIONS

_VERSION_NAMES = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
_SHORT_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
}


def name_matches(server_name: str, pattern: str) -> bool:
    """Certificate name matching: exact, or ``*.example.com`` for one more label."""
    if pattern.startswith("*."):
        head, _, rest = server_name.partition(".")
        return bool(head) and rest == pattern[2:]
    return server_name == pattern


@dataclass(frozen=True, slots=True, eq=False)
class ListenerTLS:
    """One HTTPS listener as its handshakes see it."""

    gateway: str  # "namespace/name"
    listener: str  # listener name
    hostname: str | None  # lowercase; None: any
    # (certificate DNS names, context) per certificate group; the first is the default.
    contexts: tuple[tuple[tuple[str, ...], ssl.SSLContext], ...]
    min_version: ssl.TLSVersion
    max_version: ssl.TLSVersion
    client_cert: str  # "none" | "optional" | "required"
    limits: Any  # snapshot.Limits of the listener (its ClientTrafficPolicy applied)

    def context_for(self, server_name: str | None) -> ssl.SSLContext:
        """The context whose certificate names ``server_name`` (else the first)."""
        if server_name and len(self.contexts) > 1:
            for names, ctx in self.contexts:
                for pattern in names:
                    if name_matches(server_name, pattern):
                        return ctx
        return self.contexts[0][1]


@dataclass(frozen=True, slots=True)
class PortTLS:
    """The HTTPS listeners of one port, looked up by SNI like listeners by Host."""

    port: int
    exact: dict[str, ListenerTLS]
    wildcards: tuple[tuple[str, ListenerTLS], ...]  # (".example.com", listener), longest first
    any_host: ListenerTLS | None  # the listener without hostname
    first: ListenerTLS  # what a client without SNI gets when no listener lacks a hostname
    # Front context settings: the widest range of the port's listeners.
    min_version: ssl.TLSVersion
    max_version: ssl.TLSVersion
    verify_mode: ssl.VerifyMode

    def select(self, server_name: str | None) -> ListenerTLS | None:
        if not server_name:
            return self.any_host or self.first
        name = server_name.lower().rstrip(".")
        hit = self.exact.get(name)
        if hit is not None:
            return hit
        for suffix, lst in self.wildcards:
            if name.endswith(suffix) and len(name) > len(suffix):
                return lst
        # An unknown name gets the catch-all listener, or no handshake (as Envoy does
        # when no filter chain matches).
        return self.any_host

    @staticmethod
    def build(port: int, listeners: list[ListenerTLS]) -> PortTLS:
        exact: dict[str, ListenerTLS] = {}
        wildcards: list[tuple[str, ListenerTLS]] = []
        any_host = None
        for lst in listeners:
            if lst.hostname is None:
                any_host = lst
            elif lst.hostname.startswith("*."):
                wildcards.append((lst.hostname[1:], lst))
            else:
                exact[lst.hostname] = lst
        wildcards.sort(key=lambda item: (-len(item[0]), item[0]))
        modes = {lst.client_cert for lst in listeners}
        if "none" in modes:
            verify = ssl.CERT_NONE
        elif "optional" in modes:
            verify = ssl.CERT_OPTIONAL
        else:
            verify = ssl.CERT_REQUIRED
        return PortTLS(
            port=port,
            exact=exact,
            wildcards=tuple(wildcards),
            any_host=any_host,
            first=listeners[0],
            min_version=min(lst.min_version for lst in listeners),
            max_version=max(lst.max_version for lst in listeners),
            verify_mode=verify,
        )


class TLSInfo:
    """The TLS facts of one client connection (``RequestContext.tls``): shared by its
    requests, read by filters and logs."""

    __slots__ = ("alpn", "cipher", "gateway", "listener", "peer_sans", "peer_subject", "sni", "version")

    def __init__(self, sni, gateway, listener, version, cipher, alpn, peer_subject, peer_sans) -> None:
        self.sni: str | None = sni  # server name the client sent, None without SNI
        self.gateway: str = gateway  # the listener SNI selected ("ns/name" and name)
        self.listener: str = listener
        self.version: str = version  # "TLSv1.3"
        self.cipher: str = cipher
        self.alpn: str | None = alpn
        self.peer_subject: str | None = peer_subject  # client certificate subject (mTLS)
        self.peer_sans: tuple[str, ...] = peer_sans  # ("DNS:a.example", "URI:spiffe://...")

    def __repr__(self) -> str:
        return f"TLSInfo(sni={self.sni!r}, listener={self.gateway}/{self.listener}, {self.version}, peer={self.peer_subject!r})"


class TLSFront:
    """The SSLContext an HTTPS port's socket is bound with, and the table its SNI
    callback consults."""

    def __init__(self, table: PortTLS) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
        ctx.set_ciphers(INTERMEDIATE_CIPHERS)
        ctx.set_alpn_protocols(["http/1.1"])
        ctx.sni_callback = self._on_server_name
        self.context = ctx
        self.table = table
        self.update(table)

    def update(self, table: PortTLS) -> None:
        """Serve ``table`` from the next handshake on; established sessions stay as they are."""
        ctx = self.context
        # Widen before narrowing so that min <= max holds at every step.
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.maximum_version = table.max_version
        ctx.minimum_version = table.min_version
        ctx.verify_mode = table.verify_mode
        self.table = table

    def _on_server_name(self, sslobj: Any, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
        choice = self.table.select(server_name)
        if choice is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sslobj.context = choice.context_for(server_name)
        # Read back by accept() once the handshake is done.
        sslobj.meshgate_listener = choice
        sslobj.meshgate_sni = server_name
        return None


def accept(sslobj: Any) -> tuple[ListenerTLS, TLSInfo] | str:
    """The listener and TLS facts of a finished handshake, or why the connection must be
    closed (the listener's own version range or client-certificate rule not met)."""
    choice: ListenerTLS | None = getattr(sslobj, "meshgate_listener", None)
    if choice is None:
        return "no listener was selected for this handshake"
    version = sslobj.version()
    negotiated = _VERSION_NAMES.get(version)
    if negotiated is None or not choice.min_version <= negotiated <= choice.max_version:
        return f"{version} is outside the range of listener {choice.gateway}/{choice.listener}"
    peer = sslobj.getpeercert()
    if not peer and choice.client_cert == "required":
        return f"listener {choice.gateway}/{choice.listener} requires a client certificate"
    subject = None
    sans: tuple[str, ...] = ()
    if peer:
        subject = ",".join(
            f"{_SHORT_NAMES.get(k, k)}={v}" for rdn in reversed(peer.get("subject", ())) for k, v in rdn
        )
        sans = tuple(f"{kind}:{value}" for kind, value in peer.get("subjectAltName", ()))
    cipher = sslobj.cipher()
    info = TLSInfo(
        getattr(sslobj, "meshgate_sni", None),
        choice.gateway,
        choice.listener,
        version,
        cipher[0] if cipher else "",
        sslobj.selected_alpn_protocol(),
        subject,
        sans,
    )
    return choice, info


__all__ = ["TLS_VERSIONS", "ListenerTLS", "PortTLS", "TLSFront", "TLSInfo", "accept", "name_matches"]
