"""SecurityPolicy ``apiKeyAuth``: API keys from Secrets, checked as Envoy's api_key_auth
filter checks them (Envoy Gateway's translation: one key source per header, param and
cookie, in the order written; the first source with a non-empty value is the key).

- A header value starting with ``Bearer `` counts without it; a query parameter is
  percent-decoded (its first occurrence); a cookie is the first of that name.
- Keys are held only as HMAC-SHA256 digests under a random per-filter key: the table
  maps digest -> client. A request's key is digested and looked up; equality of the
  found digest is confirmed with ``hmac.compare_digest``. Neither step depends on how
  close a wrong key is to a right one (the attacker cannot choose digests). The raw
  keys exist only while the filter is built; the loader's Secret models still hold
  them, as they hold every Secret.
- The matching client id is the request's consumer, or the Consumer that claims it.
- ``forwardClientIDHeader`` sets the client id upstream (replacing any client copy);
  ``sanitize`` removes every configured header, query parameter and cookie from what
  is forwarded (and from the access log's path).

Refusals: 401 with Envoy's body ``Client authentication failed.`` and, as RFC 9110
requires of a 401 (Envoy sends none), ``WWW-Authenticate: APIKey realm="<URI>"``;
``meshgate_auth_failures_total{method="api_key", reason="missing"|"invalid"}``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, unquote_to_bytes

from meshgate.config.models.consumer import CLIENT_ID_RE
from meshgate.filters.base import Filter
from meshgate.filters.security.base import deny
from meshgate.filters.security.basic_auth import original_uri

if TYPE_CHECKING:
    from meshgate.http.headers import Headers
    from meshgate.proxy.context import LocalReply, RequestContext

METHOD = "api_key"
BODY = b"Client authentication failed."  # Envoy's, for every 401 of this filter
_TEXT = ("content-type", "text/plain")
HEADER, PARAM, COOKIE = "header", "param", "cookie"


# --- where keys are --------------------------------------------------------------------


def header_key(headers: Headers, name: str) -> bytes | None:
    value = headers.get(name)
    if not value:
        return None
    value = value.removeprefix("Bearer ")
    return value.encode("latin-1", "replace") if value else None


def query_key(query: str, name: str) -> bytes | None:
    if not query:
        return None
    for part in query.split("&"):
        raw, _, value = part.partition("=")
        if raw == name or unquote(raw) == name:
            return unquote_to_bytes(value) or None  # first occurrence only, as Envoy
    return None


def cookie_pairs(value: str) -> list[tuple[str, str]]:
    pairs = []
    for item in value.split(";"):
        name, sep, val = item.strip().partition("=")
        if sep:
            val = val.strip()
            if len(val) >= 2 and val[0] == val[-1] == '"':
                val = val[1:-1]
            pairs.append((name.strip(), val))
    return pairs


def cookie_key(headers: Headers, name: str) -> bytes | None:
    for value in headers.get_all("cookie"):
        for cname, cval in cookie_pairs(value):
            if cname == name:
                return cval.encode("latin-1", "replace") or None
    return None


def strip_query(query: str, names: frozenset[str]) -> str:
    """``query`` without the parameters in ``names`` (compared percent-decoded)."""
    kept = [p for p in query.split("&") if p and unquote(p.partition("=")[0]) not in names]
    return "&".join(kept)


def strip_cookies(headers: Headers, names: frozenset[str]) -> None:
    values = headers.get_all("cookie")
    if not values:
        return
    kept = [
        f"{n}={v}" if n else v
        for value in values
        for n, v in _raw_cookie_items(value)
        if n not in names
    ]
    headers.remove("cookie")
    if kept:
        headers.add("cookie", "; ".join(kept))


def _raw_cookie_items(value: str) -> list[tuple[str, str]]:
    items = []
    for item in value.split(";"):
        item = item.strip()
        if not item:
            continue
        name, sep, val = item.partition("=")
        items.append((name.strip(), val) if sep else ("", item))
    return items


# --- the filter ------------------------------------------------------------------------


class APIKeyAuth(Filter):
    __slots__ = ("_config", "_forward", "_hkey", "_sanitize", "_sources", "_strip", "_table")
    name = "APIKeyAuth"

    def __init__(
        self,
        sources: list[tuple[str, str]],
        hkey: bytes,
        table: dict[bytes, tuple[str, str, bytes]],
        forward_header: str | None,
        sanitize: bool,
        config: dict,
    ) -> None:
        self._sources = tuple((kind, n.lower() if kind == HEADER else n) for kind, n in sources)
        self._hkey = hkey
        self._table = table  # HMAC(key) -> (client id, consumer, HMAC(key))
        self._forward = forward_header.lower() if forward_header else None
        self._sanitize = sanitize
        self._strip = {
            kind: frozenset(n for k, n in self._sources if k == kind) for kind in (HEADER, PARAM, COOKIE)
        }
        self._config = config

    def _extract(self, ctx: RequestContext) -> bytes | None:
        headers = ctx.headers
        for kind, name in self._sources:
            if kind == HEADER:
                key = header_key(headers, name)
            elif kind == PARAM:
                key = query_key(ctx.query, name)
            else:
                key = cookie_key(headers, name)
            if key:
                return key
        return None

    def on_request(self, ctx: RequestContext) -> LocalReply | None:
        key = self._extract(ctx)
        if key is None:
            return self._refuse(ctx, "missing")
        digest = hmac.new(self._hkey, key, hashlib.sha256).digest()
        found = self._table.get(digest)
        # A hit is confirmed in constant time; a miss is a dict miss on a digest the
        # client cannot steer, so it says nothing about how near the key was.
        if found is None or not hmac.compare_digest(found[2], digest):
            return self._refuse(ctx, "invalid")
        client_id, consumer, _ = found
        ctx.consumer = consumer
        if self._sanitize:
            self._remove_credentials(ctx)
        if self._forward is not None:
            ctx.headers.set(self._forward, client_id)
        return None

    def _refuse(self, ctx: RequestContext, reason: str) -> LocalReply:
        # The realm leaves the query out: the key may be in it.
        challenge = f'APIKey realm="{original_uri(ctx, with_query=False)}"'
        return deny(METHOD, reason, 401, headers=[("www-authenticate", challenge), _TEXT], body=BODY)

    def _remove_credentials(self, ctx: RequestContext) -> None:
        headers = ctx.headers
        for name in self._strip[HEADER]:
            if name in headers:
                headers.remove(name)
        if self._strip[COOKIE]:
            strip_cookies(headers, self._strip[COOKIE])
        params = self._strip[PARAM]
        if params and ctx.query:
            ctx.query = strip_query(ctx.query, params)
            # The access log writes the request-target: keep the key out of it too.
            path = ctx.raw_target.partition("?")[0]
            ctx.raw_target = path + "?" + ctx.query if ctx.query else path
            if ctx.upstream_path is not None:
                up = ctx.upstream_path.partition("?")[0]
                ctx.upstream_path = up + "?" + ctx.query if ctx.query else up

    def describe(self) -> dict:
        return {"type": self.name, **self._config}


# --- compile ---------------------------------------------------------------------------


def sources_of(spec: Any) -> list[tuple[str, str]]:
    """Key sources in Envoy Gateway's order: per extractFrom, its headers, params, cookies."""
    out: list[tuple[str, str]] = []
    for e in spec.extractFrom:
        out += [(HEADER, n) for n in e.headers or ()]
        out += [(PARAM, n) for n in e.params or ()]
        out += [(COOKIE, n) for n in e.cookies or ()]
    return out


def build(spec: Any, refs: Any) -> tuple:
    """The API-key filter of a SecurityPolicy's ``apiKeyAuth`` section."""
    hkey = secrets.token_bytes(32)
    table: dict[bytes, tuple[str, str, bytes]] = {}
    owner_of: dict[bytes, tuple[str, str]] = {}  # digest -> (client id, Secret), for errors
    clients: set[str] = set()
    consumers = refs.consumers
    for i, ref in enumerate(spec.credentialRefs):
        where = ("credentialRefs", i)
        secret = f"{ref.namespace or refs.namespace}/{ref.name}"
        values = refs.secret(ref.name, where, ref.namespace)
        if values is None:
            continue
        for client_id, key in values.items():
            if client_id in clients:
                continue  # Envoy Gateway: the first Secret's key for a client is used
            if not CLIENT_ID_RE.match(client_id):
                refs.error(where, f"Secret {secret}: {client_id!r} is not a valid client id")
                continue
            if not key:
                refs.error(where, f"Secret {secret}: the API key of client {client_id!r} is empty")
                continue
            digest = hmac.new(hkey, key, hashlib.sha256).digest()
            other = owner_of.get(digest)
            if other is not None:
                refs.error(
                    where,
                    f"Secret {secret}: client {client_id!r} has the same API key as client "
                    f"{other[0]!r} (Secret {other[1]}); a key must identify one client",
                )
                continue
            owner_of[digest] = (client_id, secret)
            clients.add(client_id)
            owner = consumers.by_client_id(refs.namespace, client_id) if consumers is not None else None
            if owner is None and consumers is not None and consumers.is_consumer(refs.namespace, client_id):
                # It would pass for that Consumer (authorization, plans, the consumer header).
                refs.error(
                    where,
                    f"Secret {secret}: client {client_id!r} has the name of Consumer "
                    f"{refs.namespace}/{client_id}, which does not claim it; list it in that "
                    "Consumer's apiKeys or rename the client",
                )
            table[digest] = (client_id, owner or client_id, digest)
    config = {
        "credentialRefs": [f"{r.namespace or refs.namespace}/{r.name}" for r in spec.credentialRefs],
        "clients": len(table),
        "extractFrom": [{"kind": k, "name": n} for k, n in sources_of(spec)],
        "forwardClientIDHeader": spec.forwardClientIDHeader,
        "sanitize": bool(spec.sanitize),
    }
    return (
        APIKeyAuth(sources_of(spec), hkey, table, spec.forwardClientIDHeader, bool(spec.sanitize), config),
    )
