"""A JWT (JWS compact serialization) parsed and checked against one provider, sans-IO:
strings and key sets in, a failure reason (or the claims) out. No clock of its own
(``now`` is passed in), no sockets, no logging.

What it refuses, and why:

- more than ``MAX_TOKEN_BYTES``; not three base64url segments; empty signature; a
  header or payload that is not a JSON object; ``alg`` missing, ``none`` or unknown to
  PyJWT; a ``kid`` that is not a string; any ``crit`` header (no extension is
  understood, RFC 7515 4.1.11) -> ``malformed``;
- ``jku``, ``x5u``, ``jwk`` and ``x5c`` headers are never read: keys come only from the
  provider's own JWKS;
- the signature is checked with PyJWT's implementation of the token's ``alg`` only
  against keys whose pinned algorithms include it (``jwks.KeySet.candidates``);
- ``exp`` / ``nbf`` with ``CLOCK_SKEW`` seconds of leeway (Envoy's default 60 s), ``iss``
  equal to the provider's issuer, ``aud`` meeting its audiences.

Checks run in this order: issuer (it says which provider a token is for), key and
signature, then the time and audience claims, so a forged token is reported as a bad
signature rather than by what its unverified claims say.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import orjson
from jwt.algorithms import get_default_algorithms

from meshgate.filters.security.jwks import KeySet

MAX_TOKEN_BYTES = 8192
CLOCK_SKEW = 60  # seconds, Envoy's clock_skew_seconds default

MISSING = "missing"
MALFORMED = "malformed"
EXPIRED = "expired"
NOT_YET_VALID = "not_yet_valid"
BAD_SIGNATURE = "bad_signature"
WRONG_ISSUER = "wrong_issuer"
WRONG_AUDIENCE = "wrong_audience"
UNKNOWN_KID = "unknown_kid"
JWKS_UNAVAILABLE = "jwks_unavailable"

_ALGORITHMS = {name: alg for name, alg in get_default_algorithms().items() if name != "none"}
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


class Token:
    """The parts of a compact JWS, decoded but not yet trusted."""

    __slots__ = ("alg", "kid", "payload", "raw", "signature", "signing_input")

    def __init__(self, raw: str, alg: str, kid: str | None, payload: dict, signing_input: bytes, signature: bytes):
        self.raw = raw
        self.alg = alg
        self.kid = kid
        self.payload = payload
        self.signing_input = signing_input
        self.signature = signature


def _b64(segment: str) -> bytes | None:
    if not _SEGMENT.fullmatch(segment):
        return None
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        return None


def _json_object(data: bytes | None) -> dict | None:
    if data is None:
        return None
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def parse(raw: str) -> Token | None:
    """The token's parts, or None when it is malformed (see the module docstring)."""
    if len(raw) > MAX_TOKEN_BYTES or raw.count(".") != 2:
        return None
    h64, p64, s64 = raw.split(".")
    header = _json_object(_b64(h64))
    if header is None:
        return None
    alg = header.get("alg")
    kid = header.get("kid")
    if alg not in _ALGORITHMS or (kid is not None and not isinstance(kid, str)) or "crit" in header:
        return None
    payload = _json_object(_b64(p64))
    signature = _b64(s64)
    if payload is None or not signature:
        return None
    return Token(raw, alg, kid, payload, f"{h64}.{p64}".encode("ascii"), signature)


def verify_signature(token: Token, keyset: KeySet) -> tuple[str | None, bool]:
    """(None if a pinned key verifies the signature else the reason, whether the token's
    kid is unknown to ``keyset`` — a refetch may help then)."""
    keys, kid_known = keyset.candidates(token.kid, token.alg)
    if not keys:
        return UNKNOWN_KID, not kid_known
    algorithm = _ALGORITHMS[token.alg]
    for key in keys:
        try:
            if algorithm.verify(token.signing_input, key.key, token.signature):
                return None, False
        except Exception:  # noqa: BLE001, S112 - a library refusal of odd input is a failed check
            continue
    return BAD_SIGNATURE, False


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_time(payload: dict, now: float) -> str | None:
    exp = payload.get("exp")
    if exp is not None:
        if not _number(exp):
            return MALFORMED
        if now > exp + CLOCK_SKEW:
            return EXPIRED
    nbf = payload.get("nbf")
    if nbf is not None:
        if not _number(nbf):
            return MALFORMED
        if nbf > now + CLOCK_SKEW:
            return NOT_YET_VALID
    return None


def audience_allowed(payload: dict, audiences: frozenset[str]) -> bool:
    aud = payload.get("aud")
    if isinstance(aud, str):
        return aud in audiences
    if isinstance(aud, list):
        return any(isinstance(a, str) and a in audiences for a in aud)
    return False
