"""URLRewrite and RequestRedirect, and the HTTPPathModifier they share.

Path modifiers (HTTPPathModifier):

- ``ReplaceFullPath``: the whole path becomes the value.
- ``ReplacePrefixMatch``: the part of the path the rule's PathPrefix match covered is
  replaced, element-wise, with trailing ``/`` ignored on both sides; see
  ``replace_prefix`` for the spec's table.

The query string is always kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshgate.config.snapshot import PATH_EXACT, PATH_PREFIX
from meshgate.filters.base import Filter
from meshgate.proxy.context import LocalReply

if TYPE_CHECKING:
    from meshgate.proxy.context import RequestContext

REPLACE_FULL_PATH = "ReplaceFullPath"
REPLACE_PREFIX_MATCH = "ReplacePrefixMatch"

WELL_KNOWN_PORTS = {"http": 80, "https": 443}


def replace_prefix(path: str, prefix: str, replacement: str) -> str:
    """``path`` with its matched ``prefix`` replaced, per the Gateway API table.

    ====================  ======  =========  ========
    request path          prefix  replace    result
    ====================  ======  =========  ========
    /foo/bar              /foo    /xyz       /xyz/bar
    /foo/bar              /foo    /xyz/      /xyz/bar
    /foo/bar              /foo/   /xyz       /xyz/bar
    /foo                  /foo    /xyz       /xyz
    /foo/                 /foo    /xyz       /xyz/
    /foo/bar              /foo    ""         /bar
    /foo/                 /foo    ""         /
    /foo                  /foo    /          /
    ====================  ======  =========  ========

    ``prefix`` and ``replacement`` are expected without a trailing ``/`` (callers strip
    it once, at config time); "/" is then "".
    """
    rest = path[len(prefix) :]  # "" or starts with "/" (the match is element-wise)
    out = replacement + rest
    if not out:
        return "/"
    if out[0] != "/":
        return "/" + out
    return out


def _strip_slash(value: str) -> str:
    return value.rstrip("/")


class _PathModifier:
    """A compiled HTTPPathModifier (or none): computes the new path for a request."""

    __slots__ = ("_stripped", "kind", "value")

    def __init__(self, kind: str | None, value: str | None) -> None:
        if kind is not None and kind not in (REPLACE_FULL_PATH, REPLACE_PREFIX_MATCH):
            # The compiler rejects unknown types; this is a programming error.
            raise ValueError(f"unknown path modifier type {kind!r}")
        if kind is not None and value is None:
            raise ValueError(f"path modifier {kind} needs a value")
        self.kind = kind
        self.value = value
        self._stripped = _strip_slash(value) if value is not None else ""

    def new_path(self, ctx: RequestContext) -> str | None:
        """The modified path, or None to keep the request's path."""
        kind = self.kind
        if kind is None:
            return None
        if kind == REPLACE_FULL_PATH:
            return self.value
        m = ctx.match
        # The spec only allows ReplacePrefixMatch with PathPrefix matches (the compiler
        # rejects the rest). An Exact match covers the whole path, so it is the same
        # thing; a regex match has no prefix to replace, so the path is kept.
        if m is None or (m.path_kind != PATH_PREFIX and m.path_kind != PATH_EXACT):
            return None
        prefix = _strip_slash(m.path)
        path = ctx.path
        if not path.startswith(prefix):
            return None
        return replace_prefix(path, prefix, self._stripped)

    def describe(self) -> dict | None:
        if self.kind is None:
            return None
        field = "replaceFullPath" if self.kind == REPLACE_FULL_PATH else "replacePrefixMatch"
        return {"type": self.kind, field: self.value}


class URLRewrite(Filter):
    """Rewrites the Host and/or path sent upstream; the client sees no change."""

    __slots__ = ("_hostname", "_path")
    name = "URLRewrite"

    def __init__(self, hostname: str | None, path_type: str | None, path_value: str | None) -> None:
        self._hostname = hostname
        self._path = _PathModifier(path_type, path_value)

    def on_request(self, ctx: RequestContext) -> None:
        if self._hostname is not None:
            ctx.upstream_host = self._hostname
        new_path = self._path.new_path(ctx)
        if new_path is not None:
            ctx.upstream_path = new_path + "?" + ctx.query if ctx.query else new_path

    def describe(self) -> dict:
        return {"type": self.name, "hostname": self._hostname, "path": self._path.describe()}


def _host_for_uri(host: str) -> str:
    # An IPv6 literal needs its brackets back in a URI authority.
    if ":" in host and not host.startswith("["):
        return "[" + host + "]"
    return host


class RequestRedirect(Filter):
    """Answers with a redirect built from the request and the configured parts.

    Location = scheme "://" hostname [":" port] path ["?" query], where each part not
    configured comes from the request: scheme from the connection, hostname from Host,
    the path as received. The port, when not configured, is the well-known port of a
    configured scheme, else the listener's port; it is left out of Location when it is
    the well-known port of the redirect's scheme (HTTPRequestRedirectFilter.Port).
    """

    __slots__ = ("_fixed_origin", "_hostname", "_path", "_port", "_scheme", "_status")
    name = "RequestRedirect"

    def __init__(
        self,
        scheme: str | None,
        hostname: str | None,
        port: int | None,
        path_type: str | None,
        path_value: str | None,
        status_code: int,
    ) -> None:
        self._scheme = scheme.lower() if scheme is not None else None
        self._hostname = hostname
        self._port = port
        self._path = _PathModifier(path_type, path_value)
        self._status = status_code
        # "scheme://host[:port]" when it does not depend on the request.
        self._fixed_origin: str | None = None
        if (
            self._scheme is not None
            and hostname is not None
            and (port is not None or self._scheme in WELL_KNOWN_PORTS)
        ):
            self._fixed_origin = self._origin(self._scheme, hostname, 0)

    def _origin(self, scheme: str, host: str, listener_port: int) -> str:
        port = self._port
        if port is None:
            if self._scheme is not None:
                # The well-known port of the scheme: omitted from Location below (a
                # scheme without one falls back to the listener port).
                port = WELL_KNOWN_PORTS.get(scheme, listener_port)
            else:
                port = listener_port
        if port == WELL_KNOWN_PORTS.get(scheme):
            return scheme + "://" + _host_for_uri(host)
        return scheme + "://" + _host_for_uri(host) + ":" + str(port)

    def on_request(self, ctx: RequestContext) -> LocalReply:
        origin = self._fixed_origin
        if origin is None:
            origin = self._origin(
                self._scheme or ctx.scheme, self._hostname or ctx.host, ctx.listener_port
            )
        path = self._path.new_path(ctx)
        if path is None:
            path = ctx.path
        location = origin + path + "?" + ctx.query if ctx.query else origin + path
        return LocalReply(self._status, [("location", location), ("content-length", "0")])

    def describe(self) -> dict:
        return {
            "type": self.name,
            "scheme": self._scheme,
            "hostname": self._hostname,
            "port": self._port,
            "path": self._path.describe(),
            "statusCode": self._status,
        }
