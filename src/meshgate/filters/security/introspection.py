"""IntrospectionPolicy: opaque bearer tokens checked with an OAuth2 introspection
endpoint (RFC 7662), answers cached until the token expires.

Per request: the token is taken from where ``extractFrom`` says (default
``Authorization: Bearer``); its answer comes from the cache or from one POST to the
endpoint (``token=...&token_type_hint=access_token``, form-encoded, the client
authenticated with HTTP Basic as RFC 6749 2.3.1 says: id and secret form-encoded, then
base64). Concurrent requests with the same token share one call.

Outcomes, all refusals through ``deny("oauth2_introspection", reason, ...)``:

- no token: 401 ``missing``, ``WWW-Authenticate: Bearer`` (RFC 6750 3.1: no error code);
- ``active`` not true: 401 ``inactive``; active with ``exp`` past: 401 ``expired``;
  both with ``error="invalid_token"``;
- a required scope absent: 403 ``insufficient_scope`` with ``scope="..."``;
- the endpoint cannot answer (no connection, timeout, a status other than 200, not a
  JSON object): ``unavailableStatus`` (503, or 401), reason ``unavailable``. Never
  cached: the next request asks again.
- active: ``ctx.claims`` is the answer; ``ctx.consumer`` the Consumer its claims name
  (if any); ``claimToHeaders`` set for the upstream.

Cache (per process, one per policy settings, kept across reloads that keep them): the
key is the token's SHA-256, never the token. An active answer is kept until
``min(exp, now + cacheMaxSeconds)``; an inactive one ``inactiveCacheSeconds`` (0 by
default: an answer "inactive" may be a token issued a moment ago on another replica of
the authorization server, and refusing it for minutes would be worse than asking
again). At most ``cacheMaxEntries``, least recently used evicted first.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit

import orjson

from meshgate.config.models.meta import parse_duration
from meshgate.filters.base import Filter
from meshgate.filters.security.base import deny
from meshgate.filters.security.http_client import (
    ConnectionPool,
    HTTPClientError,
    LogThrottle,
    default_tls,
    shared,
)

if TYPE_CHECKING:
    from meshgate.config.compile.refs import PolicyRefs
    from meshgate.config.models.introspection_policy import IntrospectionPolicySpec
    from meshgate.proxy.context import LocalReply, RequestContext

log = logging.getLogger(__name__)

METHOD = "oauth2_introspection"
_INVALID = 'Bearer error="invalid_token"'


class Unavailable(Exception):
    """The endpoint gave no usable answer."""


# --------------------------------------------------------------------------- cache


class TokenCache:
    """Introspection answers by token digest, each until its own deadline; LRU-bounded."""

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[bytes, tuple[float, dict | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> tuple[bool, dict | None]:
        """(found, claims); claims None for a cached inactive answer."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        until, claims = entry
        if until <= self.clock():
            del self._entries[key]
            return False, None
        self._entries.move_to_end(key)
        return True, claims

    def put(self, key: bytes, claims: dict | None, seconds: float) -> None:
        if seconds <= 0:
            return
        entries = self._entries
        entries[key] = (self.clock() + seconds, claims)
        entries.move_to_end(key)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)


# --------------------------------------------------------------------------- the client


class Introspector:
    """Calls one introspection endpoint and caches its answers. A filter service: its
    ``stop()`` closes the idle connections when a reload drops it."""

    def __init__(
        self,
        endpoint: str,
        client_id: str | None,
        client_secret: str | None,
        timeout: float,
        cache_max_seconds: int,
        inactive_cache_seconds: int,
        cache_max_entries: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        url = urlsplit(endpoint)
        https = url.scheme == "https"
        port = url.port or (443 if https else 80)
        self.endpoint = endpoint
        self.pool = ConnectionPool(url.hostname or "", port, tls=default_tls() if https else None)
        self.target = (url.path or "/") + ("?" + url.query if url.query else "")
        host = url.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        default_port = 443 if https else 80
        self.headers = [
            ("host", host if port == default_port else f"{host}:{port}"),
            ("content-type", "application/x-www-form-urlencoded"),
            ("accept", "application/json"),
        ]
        if client_id is not None:
            pair = f"{quote_plus(client_id)}:{quote_plus(client_secret or '')}"
            self.headers.append(("authorization", "Basic " + base64.b64encode(pair.encode()).decode()))
        self.timeout = timeout
        self.cache_max_seconds = cache_max_seconds
        self.inactive_cache_seconds = inactive_cache_seconds
        self.cache = TokenCache(cache_max_entries, clock)
        self.clock = clock
        self.calls = 0  # introspection calls made (tests, /config_dump)
        self._inflight: dict[bytes, asyncio.Future] = {}
        self.closed = False

    async def start(self) -> None:
        self.closed = False

    def stop(self) -> None:
        self.closed = True
        self.pool.stop()

    async def lookup(self, token: str) -> dict | None:
        """The active answer for ``token``, or None when inactive; ``Unavailable`` when
        the endpoint cannot say."""
        key = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found, claims = self.cache.get(key)
        if found:
            return claims
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fetch(key, token))
            self._inflight[key] = task
            task.add_done_callback(lambda _t, k=key: self._inflight.pop(k, None))
        # Shielded: a client that goes away does not cancel the call others wait on.
        return await asyncio.shield(task)

    async def _fetch(self, key: bytes, token: str) -> dict | None:
        body = urlencode({"token": token, "token_type_hint": "access_token"}).encode()
        self.calls += 1
        try:
            answer = await self.pool.request("POST", self.target, self.headers, body, self.timeout)
        except HTTPClientError as exc:
            raise Unavailable(str(exc)) from None
        if answer.status != 200:
            raise Unavailable(f"{self.endpoint} answered {answer.status}")
        try:
            claims = orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            raise Unavailable(f"{self.endpoint} answered something that is not JSON") from None
        if not isinstance(claims, dict):
            raise Unavailable(f"{self.endpoint} answered JSON that is not an object")
        if claims.get("active") is not True:
            self.cache.put(key, None, self.inactive_cache_seconds)
            return None
        seconds = float(self.cache_max_seconds)
        exp = claims.get("exp")
        if isinstance(exp, (int, float)) and not isinstance(exp, bool):
            seconds = min(seconds, exp - self.clock())
        self.cache.put(key, claims, seconds)
        return claims


# --------------------------------------------------------------------------- extraction


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        n, sep, v = part.strip().partition("=")
        if sep and n == name:
            return v.strip('"')
    return None


class TokenSource:
    """Where a request's token is: headers (with a prefix), cookies, query parameters."""

    def __init__(
        self,
        headers: list[tuple[str, str | None]],
        cookies: list[str] = (),  # type: ignore[assignment]
        params: list[str] = (),  # type: ignore[assignment]
    ) -> None:
        self.headers = tuple((n.lower(), p.lower() if p else None, len(p or "")) for n, p in headers)
        self.cookies = tuple(cookies)
        self.params = tuple(params)

    def find(self, ctx: RequestContext) -> str | None:
        h = ctx.headers
        for name, prefix, n in self.headers:
            for value in h.get_all(name):
                if prefix is None:
                    token = value.strip()
                elif value[:n].lower() == prefix:
                    token = value[n:].strip()
                else:
                    continue
                if token:
                    return token
        if self.cookies:
            for header in h.get_all("cookie"):
                for name in self.cookies:
                    token = _cookie(header, name)
                    if token:
                        return token
        if self.params and ctx.query:
            for name, value in parse_qsl(ctx.query):
                if name in self.params and value:
                    return value
        return None


BEARER = TokenSource([("authorization", "Bearer ")])


# --------------------------------------------------------------------------- the filter


def _claim(claims: dict, path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _header_value(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, (str, int, float)):
        return None  # arrays and objects are not copied (as Envoy Gateway's claimToHeaders)
    text = str(value)
    if _CONTROL.search(text):
        return None  # a claim may hold user input: CR/LF must never split the upstream head
    # Headers are latin-1 str holding the wire bytes: send UTF-8 as UTF-8 (as jwt does).
    return text if text.isascii() else text.encode("utf-8").decode("latin-1")


class Introspection(Filter):
    __slots__ = (
        "_claim_headers", "_config", "_consumers", "_introspector", "_namespace", "_required", "_source",
        "_throttle", "_unavailable",
    )
    name = "OAuth2Introspection"

    def __init__(
        self,
        introspector: Introspector,
        source: TokenSource = BEARER,
        required_scopes: list[str] = (),  # type: ignore[assignment]
        claim_to_headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
        unavailable_status: int = 503,
        consumers: Any = None,
        namespace: str = "default",
    ) -> None:
        self._introspector = introspector
        self._source = source
        self._required = tuple(dict.fromkeys(required_scopes))
        self._claim_headers = tuple((h.lower(), c) for h, c in claim_to_headers)
        self._unavailable = unavailable_status
        self._consumers = consumers
        self._namespace = namespace
        self._throttle = LogThrottle()
        self._config = {
            "endpoint": introspector.endpoint,
            "requiredScopes": list(self._required),
            "claimToHeaders": [{"header": h, "claim": c} for h, c in claim_to_headers],
            "unavailableStatus": unavailable_status,
            "cacheMaxSeconds": introspector.cache_max_seconds,
            "cacheMaxEntries": introspector.cache.max_entries,
            "inactiveCacheSeconds": introspector.inactive_cache_seconds,
        }

    async def on_request(self, ctx: RequestContext) -> LocalReply | None:
        token = self._source.find(ctx)
        if token is None:
            return deny(METHOD, "missing", 401, [("www-authenticate", "Bearer")])
        intro = self._introspector
        try:
            claims = await intro.lookup(token)
        except Unavailable as exc:
            if self._throttle.allow():
                log.warning("oauth2 introspection unavailable (%s): answering %d", exc, self._unavailable)
            if self._unavailable == 401:
                return deny(METHOD, "unavailable", 401, [("www-authenticate", "Bearer")])
            return deny(METHOD, "unavailable", self._unavailable)
        if claims is None:
            return deny(METHOD, "inactive", 401, [("www-authenticate", _INVALID)])
        exp = claims.get("exp")
        if isinstance(exp, (int, float)) and not isinstance(exp, bool) and exp <= intro.clock():
            return deny(METHOD, "expired", 401, [("www-authenticate", _INVALID)])
        if self._required:
            scope = claims.get("scope")
            have = set(scope.split()) if isinstance(scope, str) else set()
            if not have.issuperset(self._required):
                challenge = f'Bearer error="insufficient_scope", scope="{" ".join(self._required)}"'
                fields = [("www-authenticate", challenge), ("content-type", "text/plain")]
                return deny(METHOD, "insufficient_scope", 403, fields, b"Forbidden")
        ctx.claims = claims
        if self._consumers is not None:
            consumer = self._consumers.by_claims(self._namespace, claims)
            if consumer:
                ctx.consumer = consumer
        if self._claim_headers:
            headers = ctx.headers
            for header, claim in self._claim_headers:
                headers.remove(header)  # a client cannot supply what only the claims may say
                value = _header_value(_claim(claims, claim))
                if value is not None:
                    headers.set(header, value)
        return None

    def services(self) -> tuple:
        return (self._introspector,)

    def describe(self) -> dict:
        return {"type": self.name, **self._config}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build(spec: IntrospectionPolicySpec, refs: PolicyRefs) -> tuple[Filter, ...]:
    """The filter of an IntrospectionPolicy (``refs`` bound at its ``spec``)."""
    client_id = client_secret = None
    ref = spec.clientCredentialsRef
    if ref is not None:
        values = refs.secret(ref.name, ("clientCredentialsRef",), ref.namespace)
        if values is None:
            return ()
        missing = [k for k in ("client_id", "client_secret") if k not in values]
        if missing:
            refs.error(
                ("clientCredentialsRef",),
                f"Secret {ref.namespace or refs.namespace}/{ref.name} has no key "
                + " and no key ".join(missing)
                + " (it needs client_id and client_secret)",
            )
            return ()
        try:
            client_id = values["client_id"].decode()
            client_secret = values["client_secret"].decode()
        except UnicodeDecodeError:
            refs.error(("clientCredentialsRef",), "client_id and client_secret must be UTF-8 text")
            return ()
    url = urlsplit(spec.endpoint)
    if url.scheme == "http" and not _is_loopback(url.hostname or ""):
        log.warning(
            "IntrospectionPolicy %s: endpoint %s is plain http: tokens and the client secret "
            "travel in clear: use https",
            refs.key,
            spec.endpoint,
        )
    timeout = parse_duration(spec.timeout)
    key = (
        "oauth2_introspection",
        spec.endpoint,
        client_id,
        hashlib.sha256((client_secret or "").encode()).hexdigest(),
        timeout,
        spec.cacheMaxSeconds,
        spec.inactiveCacheSeconds,
        spec.cacheMaxEntries,
    )
    introspector = shared(
        key,
        lambda: Introspector(
            spec.endpoint,
            client_id,
            client_secret,
            timeout,
            spec.cacheMaxSeconds,
            spec.inactiveCacheSeconds,
            spec.cacheMaxEntries,
        ),
    )
    if spec.extractFrom is None:
        source = BEARER
    else:
        ex = spec.extractFrom
        source = TokenSource([(h.name, h.valuePrefix) for h in ex.headers], ex.cookies, ex.params)
    return (
        Introspection(
            introspector,
            source,
            list(spec.requiredScopes),
            [(c.header, c.claim) for c in spec.claimToHeaders],
            spec.unavailableStatus,
            refs.consumers,
            refs.namespace,
        ),
    )
