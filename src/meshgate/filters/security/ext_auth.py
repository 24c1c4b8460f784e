"""SecurityPolicy ``extAuth``: every request is first checked with an external HTTP
service, the way Envoy's ext_authz filter does it with an ``http_service``
(extensions/filters/common/ext_authz/ext_authz_http_impl.cc).

The check request:
- the client's method, and its path (with query) after ``http.path`` when set;
- no body: ``Content-Length: 0``;
- the client's Host, Authorization and the headers named in ``headersToExtAuth``, as
  they would reach the upstream: ``X-Forwarded-For`` with the client's address
  appended, ``X-Forwarded-Proto`` the scheme it came in on. Nothing else.

The answer:
- 200: allowed. The headers named in ``http.headersToBackend`` are removed from the
  client's request, then set from the answer when it carries them (the last value
  when repeated): the upstream never sees a client's copy (Envoy keeps it).
- 5xx, no answer within ``timeout`` (10s), or no connection: an error. ``failOpen``
  lets the request through; otherwise 403 with an empty body (Envoy's
  ``status_on_error``).
- anything else: denied. The client gets the service's status, body and headers
  (all but Host and the hop-by-hop / framing ones).

Refusals go through ``deny("ext_auth", ...)`` with the access-log flag UAEX.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from meshgate.config.models.meta import parse_duration
from meshgate.filters.base import Filter
from meshgate.filters.security.base import deny
from meshgate.filters.security.http_client import (
    ConnectionPool,
    HTTPClientError,
    LogThrottle,
    shared,
)
from meshgate.proxy.heads import HOP_BY_HOP

if TYPE_CHECKING:
    from meshgate.config.compile.refs import PolicyRefs
    from meshgate.config.models.security.ext_auth import ExtAuth as ExtAuthConfig
    from meshgate.proxy.context import LocalReply, RequestContext

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0  # Envoy Gateway's default for extAuth.timeout
FLAG = "UAEX"  # Envoy's response flag: UnauthorizedExternalService

# Sent to the service whatever headersToExtAuth says (Envoy: Host, Method, Path,
# Content-Length, Authorization; method and path travel in the request line).
ALWAYS_SENT = ("authorization",)
# Never copied from the client: framing is ours, Host is sent on its own.
_NOT_COPIED = HOP_BY_HOP | {"content-length", "host"}


class ExtAuth(Filter):
    __slots__ = (
        "_config", "_fail_open", "_next", "_pools", "_prefix", "_throttle", "_timeout", "_to_backend", "_to_service",
    )
    name = "ExtAuth"

    def __init__(
        self,
        pools: list[ConnectionPool],
        path_prefix: str = "",
        headers_to_ext_auth: list[str] = (),  # type: ignore[assignment]
        headers_to_backend: list[str] = (),  # type: ignore[assignment]
        timeout: float = DEFAULT_TIMEOUT,
        fail_open: bool = False,
    ) -> None:
        self._pools = tuple(pools)
        self._next = 0
        self._prefix = path_prefix
        names = [*ALWAYS_SENT, *(h.lower() for h in headers_to_ext_auth)]
        self._to_service = frozenset(n for n in names if n not in _NOT_COPIED)
        self._to_backend = tuple(dict.fromkeys(h.lower() for h in headers_to_backend))
        self._timeout = timeout
        self._fail_open = fail_open
        self._throttle = LogThrottle()
        self._config = {
            "service": [f"{p.host}:{p.port}" for p in self._pools],
            "path": path_prefix,
            "headersToExtAuth": sorted(self._to_service),
            "headersToBackend": list(self._to_backend),
            "timeout": timeout,
            "failOpen": fail_open,
        }

    def check_request(self, ctx: RequestContext) -> tuple[str, list[tuple[str, str]]]:
        """The check request's target and header fields for ``ctx`` (no framing)."""
        target = ctx.path + "?" + ctx.query if ctx.query else ctx.path
        fields = [("host", ctx.authority or ctx.host)]
        wanted = self._to_service
        xff = None
        for n, v in ctx.headers.items():
            if n not in wanted:
                continue
            if n == "x-forwarded-for":
                xff = v if xff is None else xff + ", " + v
            elif n != "x-forwarded-proto":
                fields.append((n, v))
        # As the upstream would see them: the gateway appends the client to the chain.
        if "x-forwarded-for" in wanted:
            fields.append(("x-forwarded-for", ctx.client_ip if xff is None else xff + ", " + ctx.client_ip))
        if "x-forwarded-proto" in wanted:
            fields.append(("x-forwarded-proto", ctx.scheme))
        return self._prefix + target, fields

    def _pool(self) -> ConnectionPool:
        pools = self._pools
        if len(pools) == 1:
            return pools[0]
        i = self._next
        self._next = (i + 1) % len(pools)
        return pools[i]

    async def on_request(self, ctx: RequestContext) -> LocalReply | None:
        target, fields = self.check_request(ctx)
        pool = self._pool()
        try:
            answer = await pool.request(ctx.method, target, fields, timeout=self._timeout)
        except HTTPClientError as exc:
            return self._error(ctx, f"{exc}")
        status = answer.status
        if status == 200:
            if self._to_backend:
                headers = ctx.headers
                for name in self._to_backend:
                    # Only the service may say these: a client copy is never forwarded,
                    # also when the answer leaves the header out.
                    headers.remove(name)
                    values = [v for n, v in answer.headers if n == name]
                    if values:
                        headers.set(name, values[-1])
            return None
        if status >= 500:
            return self._error(ctx, f"{pool.host}:{pool.port} answered {status}")
        return deny("ext_auth", "denied", status, answer.end_to_end_headers(), answer.body, flag=FLAG)

    def _error(self, ctx: RequestContext, why: str) -> LocalReply | None:
        if self._throttle.allow():
            answer = "let through (failOpen)" if self._fail_open else "refused with 403"
            log.warning("ext_auth: no decision from the authorization service (%s): requests %s", why, answer)
        if self._fail_open:
            for name in self._to_backend:
                ctx.headers.remove(name)  # let through without any header from the service
            return None
        return deny("ext_auth", "unavailable", 403, [], b"", flag=FLAG)

    def services(self) -> tuple:
        return self._pools

    def describe(self) -> dict:
        return {"type": self.name, **self._config}


def build(spec: ExtAuthConfig, refs: PolicyRefs) -> tuple[Filter, ...]:
    """The ExtAuth filter of a SecurityPolicy's ``extAuth`` (refs are under ``extAuth``)."""
    http = spec.http
    assert http is not None  # the model requires it
    pools: list[ConnectionPool] = []
    for path, ref in http.refs():
        endpoints = refs.backend_endpoints(ref, ("http", *path))
        for ep in endpoints or ():
            key = ("ext_auth", ep.host, ep.port)
            pools.append(shared(key, lambda ep=ep: ConnectionPool(ep.host, ep.port)))
    if not pools:
        return ()  # the error is recorded: the config is rejected
    timeout = parse_duration(spec.timeout) if spec.timeout else DEFAULT_TIMEOUT
    return (
        ExtAuth(
            pools,
            path_prefix=http.path or "",
            headers_to_ext_auth=list(spec.headersToExtAuth),
            headers_to_backend=list(http.headersToBackend),
            timeout=timeout,
            fail_open=bool(spec.failOpen),
        ),
    )

