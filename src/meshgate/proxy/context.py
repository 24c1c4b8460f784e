"""The per-request state that the engine and every filter share.

One ``RequestContext`` per downstream request. The engine fills the request fields
before routing; filters read and change them; the engine builds the upstream request
from them (``upstream_path``/``upstream_host`` when a filter rewrote them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meshgate.http.headers import Headers

if TYPE_CHECKING:
    from meshgate.config.snapshot import CompiledMatch, CompiledRule, WeightedBackend


@dataclass(slots=True)
class LocalReply:
    """A response the proxy makes itself (redirect, preflight, error)."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    # Envoy-style response flag for the access log (NR, UF, UT, ...); "" for none.
    flag: str = ""


@dataclass(slots=True)
class ResponseHead:
    """Status line and fields of a response, upstream or local, before it is sent."""

    status: int
    reason: str
    headers: Headers


@dataclass(slots=True)
class Mirror:
    """A copy of this request to send, fire-and-forget, once the request is read."""

    cluster: str | None  # None: the mirror's backend did not resolve; nothing is sent


class RequestContext:
    __slots__ = (
        "auth_provider",
        "authority",
        "backend",
        "claims",
        "client_ip",
        "client_port",
        "consumer",
        "flag",
        "gateway",
        "headers",
        "host",
        "http_version",
        "listener",
        "listener_port",
        "match",
        "method",
        "mirrors",
        "path",
        "peer_ip",
        "query",
        "raw_target",
        "request_id",
        "response_headers_to_add",
        "rule",
        "scheme",
        "start_time",
        "tls",
        "trace",
        "upstream_host",
        "upstream_path",
        "vars",
    )

    def __init__(
        self,
        method: str,
        raw_target: str,
        path: str,
        query: str,
        headers: Headers,
        host: str,
        authority: str,
        scheme: str,
        http_version: str,
        client_ip: str,
        client_port: int,
        listener_port: int,
        request_id: str,
        start_time: float,
    ) -> None:
        self.method = method  # "GET"
        self.raw_target = raw_target  # request-target exactly as received
        self.path = path  # normalized path (no query), what routes match on
        self.query = query  # raw query string without "?", "" if none
        self.headers = headers  # request headers, forwarded upstream
        self.host = host  # Host without port, lowercase
        self.authority = authority  # Host header as received
        self.scheme = scheme  # "http" | "https"
        self.http_version = http_version  # "1.1" | "1.0"
        # The client's address: the TCP peer, or what X-Forwarded-For says when the
        # listener trusts proxies in front of it (ClientTrafficPolicy numTrustedHops).
        # Logs, rate limits and authorization read this one.
        self.client_ip = client_ip
        self.peer_ip = client_ip  # the TCP peer, always: appended to X-Forwarded-For
        self.client_port = client_port
        self.listener_port = listener_port
        self.request_id = request_id
        self.start_time = start_time
        self.gateway: str = ""  # "ns/name" of the Gateway that took the request
        self.listener: str = ""  # listener name
        self.rule: CompiledRule | None = None
        self.match: CompiledMatch | None = None
        self.backend: WeightedBackend | None = None
        # Filters that rewrite set these; None means "as received".
        self.upstream_path: str | None = None  # path + "?" + query to send upstream
        self.upstream_host: str | None = None  # Host to send upstream
        self.mirrors: list[Mirror] | None = None
        # Extra response fields filters want on whatever response goes back
        # (CORS on an upstream response, for example).
        self.response_headers_to_add: list[tuple[str, str]] | None = None
        self.flag = ""  # response flag for the access log
        self.vars: dict[str, Any] | None = None  # free space for filters (claims, ...)
        self.trace: Any = None  # telemetry.tracing.RequestTrace when tracing is on
        # Set by authentication filters, read by later ones (authorization, rate limits,
        # headers) and by logs and metrics.
        self.consumer: str | None = None  # who is calling: a Consumer name or client id
        self.claims: dict[str, Any] | None = None  # verified JWT / introspection claims
        self.auth_provider: str | None = None  # the jwt provider that verified ``claims``
        self.tls: Any = None  # tls.sni.TLSInfo on HTTPS listeners: SNI, listener, peer certificate

    def target(self) -> str:
        """The request-target to send upstream: rewritten or normalized path + query."""
        if self.upstream_path is not None:
            return self.upstream_path
        if self.query:
            return self.path + "?" + self.query
        return self.path
