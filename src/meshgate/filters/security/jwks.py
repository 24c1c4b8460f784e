"""JSON Web Key Sets: parsing a JWKS into verification keys with their algorithms pinned,
and the background service that keeps a remote JWKS fresh.

Key rules (what makes algorithm confusion impossible):

- every key carries the set of ``alg`` values it may verify. A JWK's own ``alg`` must
  fit its key type; without one, the key accepts what its type supports: RS*/PS* for
  RSA, the ES* of its curve for EC, EdDSA for OKP. An HMAC secret (``kty: oct``) is
  only ever used with an explicit HS* ``alg``, so an RSA public key can never become an
  HMAC secret; ``none`` is never accepted;
- keys marked for encryption (``use: enc``, ``key_ops`` without ``verify``), keys with
  private parts, RSA keys under 2048 bits and HMAC secrets shorter than their hash are
  skipped, each with a reason.

``RemoteJWKS`` fetches its URI with a small HTTP/1.1 client on asyncio streams (https
through ``ssl.create_default_context()``), refetches at 80% of ``cacheDuration``, keeps
the last good keys while the endpoint is down, and refetches on demand when a token
names an unknown ``kid`` — at most once per ``REFETCH_INTERVAL``. One service per
(uri, cacheDuration) per process (``remote_jwks()``), so a reload keeps its keys.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
import weakref
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.exceptions import InvalidKeyError

log = logging.getLogger("meshgate.jwks")

RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "secp256k1": "ES256K"}
OKP_CURVES = frozenset({"Ed25519", "Ed448"})
HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
MIN_RSA_BITS = 2048
MAX_KEYS = 64  # a token without kid is tried against each key: bound the work

FETCH_TIMEOUT = 5.0  # seconds for one JWKS fetch (connect + response)
FIRST_LOAD_WAIT = 5.0  # start() waits this long for the first keys
REFETCH_INTERVAL = 10.0  # at most one unknown-kid refetch per this many seconds
REFRESH_AT = 0.8  # of cacheDuration
MAX_BODY = 512 * 1024
RETRY_MIN, RETRY_MAX = 1.0, 30.0  # back-off between failed fetches


class JWKSError(ValueError):
    """The document is not a usable key set (the message says why)."""


@dataclass(frozen=True, slots=True)
class VerifyKey:
    kid: str | None
    algs: frozenset[str]
    key: Any  # a cryptography public key, or bytes for an HMAC secret


class KeySet:
    """The usable keys of one JWKS document, looked up by (kid, alg)."""

    __slots__ = ("__weakref__", "_by_kid", "_no_kid", "keys", "skipped")

    def __init__(self, keys: list[VerifyKey], skipped: list[str] | None = None) -> None:
        self.keys = tuple(keys)
        self.skipped = tuple(skipped or ())
        self._by_kid: dict[str, list[VerifyKey]] = {}
        for k in keys:
            if k.kid is not None:
                self._by_kid.setdefault(k.kid, []).append(k)
        self._no_kid = tuple(k for k in keys if k.kid is None)

    def candidates(self, kid: str | None, alg: str) -> tuple[list[VerifyKey], bool]:
        """(keys that may verify a token with this kid and alg, whether the kid is known).

        As jwt_verify_lib: a token with a kid is checked against the keys with that kid
        and the keys without one; a token without kid against every key."""
        if kid is None:
            return [k for k in self.keys if alg in k.algs], True
        named = self._by_kid.get(kid)
        found = [k for k in named if alg in k.algs] if named else []
        found += [k for k in self._no_kid if alg in k.algs]
        return found, named is not None or bool(self._no_kid)

    def kids(self) -> list[str | None]:
        return [k.kid for k in self.keys]

    def __len__(self) -> int:
        return len(self.keys)


def parse_jwks(document: str | bytes) -> KeySet:
    """The usable keys of a JWKS document; JWKSError when there are none."""
    try:
        doc = json.loads(document)
    except (ValueError, UnicodeDecodeError) as exc:
        raise JWKSError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JWKSError('a JWKS is a JSON object with a "keys" list')
    if len(doc["keys"]) > MAX_KEYS:
        raise JWKSError(f"{len(doc['keys'])} keys: at most {MAX_KEYS} are accepted")
    keys: list[VerifyKey] = []
    skipped: list[str] = []
    for i, jwk in enumerate(doc["keys"]):
        try:
            keys.append(_verify_key(jwk))
        except JWKSError as exc:
            kid = jwk.get("kid") if isinstance(jwk, dict) else None
            skipped.append(f"keys[{i}]" + (f" (kid {kid!r})" if kid else "") + f": {exc}")
    if not keys:
        raise JWKSError("no usable key" + (": " + "; ".join(skipped) if skipped else ""))
    return KeySet(keys, skipped)


def _verify_key(jwk: Any) -> VerifyKey:
    if not isinstance(jwk, dict):
        raise JWKSError("not a JSON object")
    kty = jwk.get("kty")
    kid = jwk.get("kid")
    alg = jwk.get("alg")
    if kid is not None and not isinstance(kid, str):
        raise JWKSError("kid is not a string")
    if alg is not None and not isinstance(alg, str):
        raise JWKSError("alg is not a string")
    if jwk.get("use", "sig") != "sig":
        raise JWKSError(f"use {jwk.get('use')!r}: not a signature key")
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise JWKSError("key_ops does not allow verify")
    try:
        if kty == "RSA":
            algs = _pinned(alg, RSA_ALGS, "RSA")
            if "d" in jwk:
                raise JWKSError("has private key parts: publish only the public key")
            key = RSAAlgorithm.from_jwk(jwk)
            if key.key_size < MIN_RSA_BITS:
                raise JWKSError(f"RSA key of {key.key_size} bits: at least {MIN_RSA_BITS} are required")
        elif kty == "EC":
            crv = jwk.get("crv")
            if crv not in EC_ALGS:
                raise JWKSError(f"EC curve {crv!r} is not supported")
            algs = _pinned(alg, frozenset({EC_ALGS[crv]}), f"EC {crv}")
            if "d" in jwk:
                raise JWKSError("has private key parts: publish only the public key")
            key = ECAlgorithm.from_jwk(jwk)
        elif kty == "OKP":
            if jwk.get("crv") not in OKP_CURVES:
                raise JWKSError(f"OKP curve {jwk.get('crv')!r} is not a signature curve")
            algs = _pinned(alg, frozenset({"EdDSA"}), "OKP")
            if "d" in jwk:
                raise JWKSError("has private key parts: publish only the public key")
            key = OKPAlgorithm.from_jwk(jwk)
        elif kty == "oct":
            # Never without an explicit HS* alg: this is what keeps a public key from
            # being used as an HMAC secret.
            if alg not in HMAC_MIN_BYTES:
                raise JWKSError("an oct (HMAC) key needs alg HS256, HS384 or HS512")
            if not isinstance(jwk.get("k"), str):
                raise JWKSError('an oct key needs "k"')
            key = HMACAlgorithm.from_jwk(jwk)
            if len(key) < HMAC_MIN_BYTES[alg]:
                raise JWKSError(f"{alg} secret of {len(key)} bytes: at least {HMAC_MIN_BYTES[alg]} are required")
            algs = frozenset({alg})
        else:
            raise JWKSError(f"kty {kty!r} is not supported")
    except (InvalidKeyError, ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, JWKSError):
            raise
        raise JWKSError(f"invalid {kty} key: {exc}") from None
    return VerifyKey(kid, algs, key)


def _pinned(alg: str | None, allowed: frozenset[str], what: str) -> frozenset[str]:
    if alg is None:
        return allowed
    if alg not in allowed:
        raise JWKSError(f"alg {alg} does not fit a {what} key (allowed: {', '.join(sorted(allowed))})")
    return frozenset({alg})


class LocalKeys:
    """A key source that never changes (``localJWKS``)."""

    __slots__ = ("keyset",)
    remote = False

    def __init__(self, keyset: KeySet) -> None:
        self.keyset: KeySet | None = keyset


# --------------------------------------------------------------------------- fetching


class FetchError(Exception):
    pass


async def fetch(uri: str, timeout: float = FETCH_TIMEOUT) -> bytes:
    """GET ``uri`` (http or https) and return the body of its 200 response."""
    try:
        async with asyncio.timeout(timeout):
            return await _get(uri)
    except TimeoutError:
        raise FetchError(f"no response within {timeout:.0f}s") from None
    except (OSError, ssl.SSLError) as exc:
        raise FetchError(str(exc) or type(exc).__name__) from None


class _Response:
    def __init__(self) -> None:
        self.body = bytearray()
        self.done = False
        self.headers_done = False
        self.framed = False  # Content-Length or chunked: the body has a known end

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length" or (name == b"transfer-encoding" and b"chunked" in value.lower()):
            self.framed = True

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, data: bytes) -> None:
        self.body += data

    def on_message_complete(self) -> None:
        self.done = True


async def _get(uri: str) -> bytes:
    parts = urlsplit(uri)
    tls = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if tls else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    ctx = ssl.create_default_context() if tls else None
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host if tls else None)
    try:
        authority = parts.netloc.rsplit("@", 1)[-1]
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json, application/jwk-set+json\r\n"
            "User-Agent: meshgate-jwks\r\nConnection: close\r\n\r\n".encode("latin-1")
        )
        response = _Response()
        parser = httptools.HttpResponseParser(response)
        while not response.done:
            data = await reader.read(65536)
            if not data:
                # A body without Content-Length or chunking ends at the close.
                if not (response.headers_done and not response.framed):
                    raise FetchError("connection closed before the response was complete")
                break
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as exc:
                raise FetchError(f"bad HTTP response: {exc}") from None
            if len(response.body) > MAX_BODY:
                raise FetchError(f"JWKS larger than {MAX_BODY} bytes")
        status = parser.get_status_code()
        if status != 200:
            raise FetchError(f"HTTP {status}")
        return bytes(response.body)
    finally:
        writer.close()


# --------------------------------------------------------------------------- the service


class RemoteJWKS:
    """A remote JWKS kept fresh in the background (a filter ``service``: see filters/base).

    ``keyset`` is the last good key set (None until the first fetch succeeds). The
    filter reads it per request and awaits ``refetch()`` when a token names a kid it
    does not know."""

    remote = True

    def __init__(self, uri: str, cache_duration: float) -> None:
        self.uri = uri
        self.cache_duration = cache_duration
        self.keyset: KeySet | None = None
        self.fetched_at: float | None = None  # time.monotonic() of the last good fetch
        self.last_error: str | None = None
        self.fetches = 0  # attempts, for tests and /config_dump
        self._last_attempt = float("-inf")
        self._inflight: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self._first: asyncio.Event | None = None

    def __repr__(self) -> str:
        keys = len(self.keyset) if self.keyset is not None else "no"
        return f"<RemoteJWKS {self.uri} [{keys} keys, {self.fetches} fetches]>"

    # -- service interface
    async def start(self) -> None:
        """Launch the refresher, then wait (bounded) for its first result."""
        if self._task is None or self._task.done():
            self._first = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"jwks {self.uri}")
        if self.keyset is None and self._first is not None:
            try:
                async with asyncio.timeout(FIRST_LOAD_WAIT):
                    await self._first.wait()
            except TimeoutError:
                log.warning("JWKS %s: no keys after %.0fs; still trying in the background", self.uri, FIRST_LOAD_WAIT)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    # -- fetching
    async def refetch(self) -> None:
        """Fetch now unless a fetch started less than REFETCH_INTERVAL ago (then wait
        for the one in flight, if any)."""
        inflight = self._inflight
        if inflight is not None:
            await asyncio.shield(inflight)
            return
        if time.monotonic() - self._last_attempt < REFETCH_INTERVAL:
            return
        await self.fetch_once()

    async def fetch_once(self) -> bool:
        """One fetch, shared by every caller while it runs; True when keys were loaded."""
        if self._inflight is not None:
            return await asyncio.shield(self._inflight)
        loop = asyncio.get_running_loop()
        self._inflight = fut = loop.create_future()
        self._last_attempt = time.monotonic()
        self.fetches += 1
        ok = False
        try:
            body = await fetch(self.uri)
            keyset = parse_jwks(body)
        except (FetchError, JWKSError) as exc:
            self.last_error = str(exc)
            if self.keyset is not None:
                age = time.monotonic() - (self.fetched_at or 0)
                log.warning(
                    "JWKS %s unavailable (%s); keeping %d keys fetched %.0fs ago", self.uri, exc, len(self.keyset), age
                )
            else:
                log.warning("JWKS %s unavailable (%s); no keys yet", self.uri, exc)
        else:
            if self.keyset is None or self.keyset.kids() != keyset.kids():
                log.info("JWKS %s: %d keys (kids %s)", self.uri, len(keyset), keyset.kids())
            for why in keyset.skipped:
                log.warning("JWKS %s: skipped %s", self.uri, why)
            self.keyset = keyset
            self.fetched_at = time.monotonic()
            self.last_error = None
            ok = True
        finally:
            self._inflight = None
            fut.set_result(ok)
            if self._first is not None:
                self._first.set()
        return ok

    async def _run(self) -> None:
        retry = RETRY_MIN
        while True:
            age = time.monotonic() - self.fetched_at if self.fetched_at is not None else None
            refresh = self.cache_duration * REFRESH_AT
            if age is not None and age < refresh:  # fresh enough (a refetch just ran)
                await asyncio.sleep(refresh - age)
                continue
            if await self.fetch_once():
                retry = RETRY_MIN
                await asyncio.sleep(refresh)
            else:
                await asyncio.sleep(min(retry, refresh))
                retry = min(retry * 2, RETRY_MAX)

    def describe(self) -> dict:
        return {
            "uri": self.uri,
            "cacheDuration": self.cache_duration,
            "keys": self.keyset.kids() if self.keyset is not None else None,
            "lastError": self.last_error,
        }


_REGISTRY: weakref.WeakValueDictionary[tuple[str, float], RemoteJWKS] = weakref.WeakValueDictionary()


def remote_jwks(uri: str, cache_duration: float) -> RemoteJWKS:
    """The process's service for (uri, cacheDuration): the same object across reloads
    for as long as a filter holds it, so its keys and refresher survive a reload."""
    key = (uri, cache_duration)
    service = _REGISTRY.get(key)
    if service is None:
        service = RemoteJWKS(uri, cache_duration)
        _REGISTRY[key] = service
    return service
