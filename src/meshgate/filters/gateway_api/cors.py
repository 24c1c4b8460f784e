"""CORS: answers preflights and marks allowed cross-origin responses. One engine for
both front-ends: the HTTPRoute ``CORS`` filter (HTTPCORSFilter) and SecurityPolicy
``cors`` (``filters/security/cors.py``).

- A preflight (OPTIONS with ``Origin`` and ``Access-Control-Request-Method``) from an
  allowed origin is answered here, 200, never sent upstream, with the
  Access-Control-* fields. From any other origin the HTTPRoute filter answers 200 with
  none of them, which the browser reads as a denial (the spec allows this or a 403);
  SecurityPolicy ``cors`` passes it on instead (``forward_disallowed_preflight``), as
  Envoy's CORS filter does.
- Any other request from an allowed origin gets Access-Control-Allow-Origin,
  -Expose-Headers and -Allow-Credentials on its response, and ``Vary: Origin``.

Access-Control-Allow-Origin always echoes the request's origin, even when ``*`` allows
it: the spec permits that in every case and requires it with credentials, and the
conformance suite expects the echo for a credentialed request on a ``*`` route without
allowCredentials. A ``*`` in allowMethods / allowHeaders is sent as ``*`` only without
credentials; with credentials the browser would read it literally, so the requested
method / headers are echoed instead (HTTPCORSFilter field docs).

Origins match on scheme, host and port, with the scheme's default port assumed when
none is written; ``*`` in a host matches a run of host characters (letters, digits,
``-``, ``_``, ``.``: any number of labels), never ``/``, ``:``, ``?``, ``#`` or ``@``,
so ``https://*.example.com`` cannot be satisfied by
``https://attacker.net?x=.example.com``; a port ``*`` matches any port (or none); a
host ``*`` alone matches any host, IPv6 literals included; and ``*`` alone matches
every origin.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from meshgate.filters.base import Filter
from meshgate.proxy.context import LocalReply

if TYPE_CHECKING:
    from meshgate.http.headers import Headers
    from meshgate.proxy.context import RequestContext, ResponseHead

_DEFAULT_PORTS = {"http": 80, "https": 443}
ANY_PORT = -1  # a port written as "*"

# What a "*" in a host may stand for: host characters only (see the module docstring).
_HOST_RUN = "[a-z0-9_.-]+"
_ANY_HOST = r"(?:[a-z0-9_.-]+|\[[0-9a-f:.]+\])"


def _split_origin(origin: str) -> tuple[str, str, int | None]:
    """("https", "*.example.com", None) from "https://*.example.com"; lowercase input.
    The port is ``ANY_PORT`` when written as ``*``."""
    scheme, sep, rest = origin.partition("://")
    if not sep:
        scheme, rest = "", origin
    rest = rest.rstrip("/")
    host, colon, port = rest.rpartition(":")
    if colon and not host.endswith(":"):
        if port.isdigit():
            return scheme, host, int(port)
        if port == "*":
            return scheme, host, ANY_PORT
    return scheme, rest, None


def _exact_forms(scheme: str, host: str, port: int | None) -> list[str]:
    """Every spelling of one origin a browser may send (with or without default port)."""
    schemes = [scheme] if scheme else list(_DEFAULT_PORTS)
    forms = []
    for s in schemes:
        default = _DEFAULT_PORTS.get(s)
        if port is None or port == default:
            forms.append(f"{s}://{host}")
            if default is not None:
                forms.append(f"{s}://{host}:{default}")
        else:
            forms.append(f"{s}://{host}:{port}")
    return forms


def _wildcard_regex(scheme: str, host: str, port: int | None) -> str:
    scheme_re = re.escape(scheme) if scheme else "https?"
    if host == "*":
        host_re = _ANY_HOST
    else:
        # "*" takes a run of host characters, dots included: any number of labels.
        host_re = _HOST_RUN.join(re.escape(part) for part in host.split("*"))
    default = _DEFAULT_PORTS.get(scheme)
    if port == ANY_PORT:
        port_re = "(?::[0-9]{1,5})?"
    elif port is not None and port != default:
        port_re = ":" + str(port)
    elif default is not None:
        port_re = f"(?::{default})?"
    else:
        port_re = "(?::(?:80|443))?"
    return scheme_re + "://" + host_re + port_re


def _join(values: list[str]) -> str | None:
    return ", ".join(values) if values else None


class CORS(Filter):
    __slots__ = (
        "_any_origin",
        "_config",
        "_credentials",
        "_exact",
        "_expose",
        "_forward_disallowed",
        "_headers",
        "_headers_wild",
        "_methods",
        "_methods_wild",
        "_preflight_tail",
        "_wildcard",
    )
    name = "CORS"

    def __init__(
        self,
        allow_origins: list[str],
        allow_methods: list[str],
        allow_headers: list[str],
        expose_headers: list[str],
        max_age: int,
        allow_credentials: bool,
        forward_disallowed_preflight: bool = False,
    ) -> None:
        self._forward_disallowed = forward_disallowed_preflight
        self._config = {
            "allowOrigins": list(allow_origins),
            "allowMethods": list(allow_methods),
            "allowHeaders": list(allow_headers),
            "exposeHeaders": list(expose_headers),
            "maxAge": max_age,
            "allowCredentials": allow_credentials,
        }
        self._any_origin = "*" in allow_origins
        exact: set[str] = set()
        wild: list[str] = []
        for o in allow_origins:
            if o == "*":
                continue
            scheme, host, port = _split_origin(o.lower())
            if "*" in host or port == ANY_PORT:
                wild.append(_wildcard_regex(scheme, host, port))
            else:
                exact.update(_exact_forms(scheme, host, port))
        self._exact = frozenset(exact)
        self._wildcard = re.compile("|".join(f"(?:{w})" for w in wild)) if wild else None

        self._credentials = allow_credentials
        self._methods_wild = "*" in allow_methods
        self._methods = None if self._methods_wild else _join(allow_methods)
        self._headers_wild = "*" in allow_headers
        self._headers = None if self._headers_wild else _join(allow_headers)
        # With credentials a "*" would name a header called "*": leave it out.
        expose = [h for h in expose_headers if not (allow_credentials and h == "*")]
        self._expose = _join(expose)

        # The fields every allowed preflight reply ends with, in order.
        tail: list[tuple[str, str]] = []
        if self._expose is not None:
            tail.append(("access-control-expose-headers", self._expose))
        if max_age > 0:
            tail.append(("access-control-max-age", str(max_age)))
        if allow_credentials:
            tail.append(("access-control-allow-credentials", "true"))
        tail.append(("vary", "Origin"))
        tail.append(("content-length", "0"))
        self._preflight_tail = tuple(tail)

    def allows(self, origin: str) -> bool:
        """True when ``origin`` (an Origin header value) is in allowOrigins."""
        if self._any_origin:
            return True
        o = origin.lower()
        if o in self._exact:
            return True
        w = self._wildcard
        return w is not None and w.fullmatch(o) is not None

    def on_request(self, ctx: RequestContext) -> LocalReply | None:
        if ctx.method != "OPTIONS":
            return None
        h = ctx.headers
        origin = h.get("origin")
        if origin is None:
            return None
        requested_method = h.get("access-control-request-method")
        if requested_method is None:
            return None  # a plain OPTIONS request: the upstream answers it
        if not self.allows(origin):
            if self._forward_disallowed:
                return None
            return LocalReply(200, [("content-length", "0")])

        fields = [("access-control-allow-origin", origin)]
        if self._methods is not None:
            fields.append(("access-control-allow-methods", self._methods))
        elif self._methods_wild:
            fields.append(
                ("access-control-allow-methods", requested_method if self._credentials else "*")
            )
        if self._headers is not None:
            fields.append(("access-control-allow-headers", self._headers))
        elif self._headers_wild:
            if not self._credentials:
                fields.append(("access-control-allow-headers", "*"))
            else:
                requested = h.get_joined("access-control-request-headers")
                if requested:
                    fields.append(("access-control-allow-headers", requested))
        fields.extend(self._preflight_tail)
        return LocalReply(200, fields)

    def on_response(self, ctx: RequestContext, head: ResponseHead) -> None:
        # Also runs on this filter's own preflight reply; `set` keeps that idempotent.
        origin = ctx.headers.get("origin")
        if origin is None or not self.allows(origin):
            return
        hh = head.headers
        hh.set("access-control-allow-origin", origin)
        if self._credentials:
            hh.set("access-control-allow-credentials", "true")
        if self._expose is not None:
            hh.set("access-control-expose-headers", self._expose)
        _vary_on_origin(hh)

    def describe(self) -> dict:
        return {"type": self.name, **self._config}


def _vary_on_origin(headers: Headers) -> None:
    """Add ``Vary: Origin`` unless the response already varies on it (or on ``*``)."""
    vary = headers.get_joined("vary")
    if vary is not None:
        for token in vary.split(","):
            t = token.strip().lower()
            if t == "origin" or t == "*":
                return
    headers.add("vary", "Origin")
