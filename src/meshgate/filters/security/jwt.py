"""SecurityPolicy `jwt`: Envoy's jwt_authn as Envoy Gateway configures it.

A request passes when any provider verifies its token (``requires_any``); with
``optional``, a request carrying no token at all passes too (``allow_missing``), one
with a bad token does not. Each provider looks for tokens in its own places
(``extractFrom``; by default ``Authorization: Bearer`` and the ``access_token`` query
parameter) and every token it finds there must verify — a good token beside a bad one
is refused, as in Envoy. When every provider fails, the reason reported is Envoy's
choice: a failure other than "missing" or "wrong issuer" wins.

The refusal is Envoy's: 401 (403 for an audience not allowed), body the jwt_authn status
text, ``WWW-Authenticate: Bearer realm="<scheme>://<host><path>"`` (path without its
query, which may hold the token) plus
``, error="invalid_token"`` unless the token was missing.

On success: ``ctx.claims`` is the payload; ``claimToHeaders`` sets request headers
(client-sent copies are removed from every request first, token or not); the consumer
is the Consumer that owns these claims, when one does.

Verified tokens are kept in a small FIFO cache per provider (``TOKEN_CACHE_SIZE``),
keyed by the exact token text and tied to the key set that verified them: a hit skips
the signature check only — ``exp``/``nbf`` are checked again, and a key rotation
empties it in effect. Parsing and checks: ``jwt_token``; keys: ``jwks``.

A filter whose providers all use ``localJWKS`` runs synchronously; one with a
``remoteJWKS`` is async, since a token naming an unknown ``kid`` waits for a refetch.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from meshgate.config.models.meta import parse_duration
from meshgate.filters.base import Filter
from meshgate.filters.security import jwt_token as tok
from meshgate.filters.security.base import deny
from meshgate.filters.security.jwks import (
    JWKSError,
    LocalKeys,
    RemoteJWKS,
    parse_jwks,
    remote_jwks,
)

if TYPE_CHECKING:
    from meshgate.config.compile.refs import PolicyRefs
    from meshgate.config.models.security.jwt import JWT, JWTProvider
    from meshgate.proxy.context import LocalReply, RequestContext

log = logging.getLogger("meshgate.jwt")

TOKEN_CACHE_SIZE = 1024  # verified tokens kept per provider
MAX_REALM_PATH = 256  # Envoy's MaximumUriLength

# reason -> (status, body): the body is jwt_authn's status text.
_REFUSALS = {
    tok.MISSING: (401, b"Jwt is missing"),
    tok.MALFORMED: (401, b"Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"),
    tok.EXPIRED: (401, b"Jwt is expired"),
    tok.NOT_YET_VALID: (401, b"Jwt not yet valid"),
    tok.BAD_SIGNATURE: (401, b"Jwt verification fails"),
    tok.WRONG_ISSUER: (401, b"Jwt issuer is not configured"),
    tok.WRONG_AUDIENCE: (403, b"Audiences in Jwt are not allowed"),
    tok.UNKNOWN_KID: (401, b"Jwks doesn't have key to match kid or alg from Jwt"),
    tok.JWKS_UNAVAILABLE: (401, b"Jwks remote fetch is failed"),
}

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

# Where a token may be: ("header", name, lowercase prefix) | ("cookie", name) | ("param", name).
DEFAULT_LOCATIONS = (("header", "authorization", "bearer "), ("param", "access_token"))


class Provider:
    """One ``providers[]`` entry, compiled."""

    __slots__ = ("_cache", "audiences", "claim_headers", "issuer", "locations", "name", "source")

    def __init__(
        self,
        name: str,
        issuer: str | None,
        audiences: frozenset[str] | None,
        source: LocalKeys | RemoteJWKS,
        locations: tuple,
        claim_headers: tuple[tuple[str, tuple[str, ...]], ...],
    ) -> None:
        self.name = name
        self.issuer = issuer
        self.audiences = audiences
        self.source = source
        self.locations = locations
        self.claim_headers = claim_headers  # (header, claim path)
        # raw token -> (key set that verified it, payload, exp or None)
        self._cache: dict[str, tuple[Any, dict, float | None]] = {}

    def verify(self, raw: str, now: float) -> tuple[str | None, dict | None, bool]:
        """(failure reason or None, claims, whether a JWKS refetch could help)."""
        keyset = self.source.keyset
        hit = self._cache.get(raw)
        if hit is not None and hit[0] is keyset and (hit[2] is None or now <= hit[2] + tok.CLOCK_SKEW):
            return None, hit[1], False
        token = tok.parse(raw)
        if token is None:
            return tok.MALFORMED, None, False
        payload = token.payload
        if self.issuer is not None and payload.get("iss") != self.issuer:
            return tok.WRONG_ISSUER, None, False
        if keyset is None:
            return tok.JWKS_UNAVAILABLE, None, True
        reason, kid_unknown = tok.verify_signature(token, keyset)
        if reason is not None:
            return reason, None, kid_unknown
        reason = tok.check_time(payload, now)
        if reason is not None:
            return reason, None, False
        if self.audiences is not None and not tok.audience_allowed(payload, self.audiences):
            return tok.WRONG_AUDIENCE, None, False
        cache = self._cache
        if TOKEN_CACHE_SIZE > 0:
            if len(cache) >= TOKEN_CACHE_SIZE:
                del cache[next(iter(cache))]
            cache[raw] = (keyset, payload, payload.get("exp"))
        return None, payload, False

    def describe(self) -> dict:
        source = self.source
        keys = source.describe() if isinstance(source, RemoteJWKS) else {"local": source.keyset.kids()}
        return {
            "name": self.name,
            "issuer": self.issuer,
            "audiences": sorted(self.audiences) if self.audiences is not None else None,
            "jwks": keys,
            "claimToHeaders": [h for h, _ in self.claim_headers],
        }


def _claim(payload: dict, path: tuple[str, ...]) -> str | None:
    """The claim at ``path`` as a header value, or None (absent, object, or not a
    value a header can carry)."""
    value: Any = payload
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    if isinstance(value, list):
        parts = [_scalar(v) for v in value]
        if any(p is None for p in parts):
            return None
        text = ",".join(parts)  # type: ignore[arg-type]
    else:
        text = _scalar(value)
        if text is None:
            return None
    if _CONTROL.search(text):
        return None  # CR, LF, NUL...: never into a header
    # Headers are latin-1 str holding the wire bytes: send UTF-8 as UTF-8.
    return text if text.isascii() else text.encode("utf-8").decode("latin-1")


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return None


class JWTAuthn(Filter):
    """The jwt stage of a SecurityPolicy, for providers with local keys only."""

    __slots__ = ("_services", "by_claims", "namespace", "optional", "providers", "strip")
    name = "jwt"

    def __init__(self, providers: list[Provider], optional: bool, by_claims: Any, namespace: str) -> None:
        self.providers = tuple(providers)
        self.optional = optional
        self.strip = tuple(dict.fromkeys(h for p in providers for h, _ in p.claim_headers))
        self.by_claims = by_claims  # ConsumerIndex.by_claims, or None
        self.namespace = namespace
        seen: dict[int, RemoteJWKS] = {}
        for p in providers:
            if isinstance(p.source, RemoteJWKS):
                seen.setdefault(id(p.source), p.source)
        self._services = tuple(seen.values())

    def services(self) -> tuple:
        return self._services

    def describe(self) -> dict:
        return {"type": self.name, "optional": self.optional, "providers": [p.describe() for p in self.providers]}

    def on_request(self, ctx: RequestContext) -> LocalReply | None:
        result = self.authenticate(ctx, time.time(), refetch=False)
        return result  # type: ignore[return-value]

    def authenticate(self, ctx: RequestContext, now: float, refetch: bool) -> Any:
        """None (pass), a LocalReply (refuse), or — only when ``refetch`` — the list of
        remote key sets to refetch before trying again."""
        headers = ctx.headers
        for name in self.strip:
            if name in headers:
                headers.remove(name)
        found: dict[tuple, list[str]] = {}
        final = tok.MISSING
        stale: list[RemoteJWKS] = []
        for provider in self.providers:
            tokens: list[str] = []
            for loc in provider.locations:
                got = found.get(loc)
                if got is None:
                    got = found[loc] = _extract(ctx, loc)
                if got:
                    tokens += got
            if not tokens:
                status = tok.MISSING
            else:
                status = None
                claims = None
                for raw in tokens:
                    status, payload, may_refetch = provider.verify(raw, now)
                    if status is not None:
                        if may_refetch and isinstance(provider.source, RemoteJWKS):
                            stale.append(provider.source)
                        break
                    if claims is None:
                        claims = payload
                if status is None:
                    self._accept(ctx, provider, claims)  # type: ignore[arg-type]
                    return None
            # Envoy's requires_any: prefer a failure other than missing / wrong issuer.
            if (status != tok.MISSING and status != tok.WRONG_ISSUER) or final == tok.MISSING:
                final = status
        if final == tok.MISSING and self.optional:
            return None
        if refetch and stale:
            return stale
        return _refuse(ctx, final)

    def _accept(self, ctx: RequestContext, provider: Provider, claims: dict) -> None:
        ctx.claims = claims
        ctx.auth_provider = provider.name
        headers = ctx.headers
        for header, path in provider.claim_headers:
            value = _claim(claims, path)
            if value is not None:
                headers.set(header, value)
        # A Consumer is named by issuer + subject: only a provider that pins its issuer
        # vouches for ``iss`` (another key set could mint tokens naming any issuer).
        if self.by_claims is not None and provider.issuer is not None:
            consumer = self.by_claims(self.namespace, claims)
            if consumer:
                ctx.consumer = consumer


class RemoteJWTAuthn(JWTAuthn):
    """The jwt stage when a provider fetches its keys: a token naming a kid the key set
    does not know waits for a (rate-limited) refetch, then is checked again."""

    __slots__ = ()

    def on_request(self, ctx: RequestContext) -> Any:  # type: ignore[override]
        # Plain, so known keys keep the request on the fast path; only an unknown kid
        # returns an awaitable (the engine then waits for the refetch).
        result = self.authenticate(ctx, time.time(), refetch=True)
        if result is None or not isinstance(result, list):
            return result
        return self._after_refetch(ctx, result)

    async def _after_refetch(self, ctx: RequestContext, stale: list) -> LocalReply | None:
        for source in dict.fromkeys(stale):
            await source.refetch()
        return self.authenticate(ctx, time.time(), refetch=False)


def _extract(ctx: RequestContext, loc: tuple) -> list[str]:
    kind, name = loc[0], loc[1]
    out: list[str] = []
    if kind == "header":
        prefix = loc[2]
        if name not in ctx.headers:
            return out
        for value in ctx.headers.get_all(name):
            if prefix:
                if value[: len(prefix)].lower() != prefix:
                    continue
                value = value[len(prefix) :]
            value = value.strip()
            if value:
                out.append(value)
    elif kind == "param":
        query = ctx.query
        # An escaped name ("access%5Ftoken") is the same parameter to the upstream.
        if query and (name in query or "%" in query):
            out += [v for k, v in parse_qsl(query, keep_blank_values=False) if k == name]
    else:  # cookie
        for line in ctx.headers.get_all("cookie"):
            if name not in line:
                continue
            for pair in line.split(";"):
                k, sep, v = pair.strip().partition("=")
                if sep and k == name and v:
                    out.append(v.strip('"'))
    return out


def _refuse(ctx: RequestContext, reason: str) -> LocalReply:
    status, body = _REFUSALS[reason]
    # Envoy's realm is the :path with its query; the query is left out here, since
    # it may carry the token (access_token) and would be echoed back.
    path = ctx.raw_target.partition("?")[0][:MAX_REALM_PATH]
    realm = f"{ctx.scheme}://{ctx.authority}{path}".replace("\\", "%5C").replace('"', "%22")
    challenge = f'Bearer realm="{realm}"'
    if reason != tok.MISSING:
        challenge += ', error="invalid_token"'
    return deny(
        "jwt",
        reason,
        status,
        headers=[("www-authenticate", challenge), ("content-type", "text/plain")],
        body=body,
    )


# --------------------------------------------------------------------------- build


def build(spec: JWT, refs: PolicyRefs) -> tuple[Filter, ...]:
    """The jwt filter of a SecurityPolicy, its key sets loaded (local) or registered
    (remote); errors (a bad inline JWKS, a missing ConfigMap) reject the config."""
    providers: list[Provider] = []
    for i, p in enumerate(spec.providers):
        source = _source(p, refs.under("providers", i))
        if source is None:
            continue
        providers.append(
            Provider(
                name=p.name,
                issuer=p.issuer or None,
                audiences=frozenset(p.audiences) if p.audiences else None,
                source=source,
                locations=_locations(p),
                claim_headers=tuple((c.header.lower(), tuple(c.claim.split("."))) for c in p.claimToHeaders),
            )
        )
    if len(providers) != len(spec.providers):
        return ()  # errors were recorded: the config is rejected
    consumers = refs.consumers
    by_claims = getattr(consumers, "by_claims", None) if consumers is not None else None
    remote = any(isinstance(p.source, RemoteJWKS) for p in providers)
    cls = RemoteJWTAuthn if remote else JWTAuthn
    return (cls(providers, bool(spec.optional), by_claims, refs.namespace),)


def _locations(p: JWTProvider) -> tuple:
    ex = p.extractFrom
    if ex is None or not (ex.headers or ex.cookies or ex.params):
        return DEFAULT_LOCATIONS
    locs: list[tuple] = [("header", h.name.lower(), (h.valuePrefix or "").lower()) for h in ex.headers]
    locs += [("cookie", c) for c in ex.cookies]
    locs += [("param", q) for q in ex.params]
    return tuple(dict.fromkeys(locs))


def _source(p: JWTProvider, refs: PolicyRefs) -> LocalKeys | RemoteJWKS | None:
    if p.remoteJWKS is not None:
        uri = p.remoteJWKS.uri
        if uri.startswith("http:"):
            log.warning("JWKS %s is fetched over plain http: use that only for a key server on this host", uri)
        return remote_jwks(uri, parse_duration(p.remoteJWKS.cacheDuration))
    local = p.localJWKS
    assert local is not None  # the model requires one of them
    if local.inline is not None:
        document, where = local.inline, ("localJWKS", "inline")
    else:
        where = ("localJWKS", "valueRef")
        data = refs.configmap(local.valueRef.name, where)  # type: ignore[union-attr]
        if data is None:
            return None
        document = data.get("jwks", next(iter(data.values()), None))
        if document is None:
            refs.error(where, f"ConfigMap {local.valueRef.name} has no data")  # type: ignore[union-attr]
            return None
    try:
        keyset = parse_jwks(document)
    except JWKSError as exc:
        refs.error(where, f"invalid JWKS: {exc}")
        return None
    for why in keyset.skipped:
        log.warning("provider %s: JWKS key skipped: %s", p.name, why)
    return LocalKeys(keyset)
