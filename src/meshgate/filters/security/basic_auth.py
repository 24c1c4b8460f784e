"""SecurityPolicy ``basicAuth``: HTTP Basic authentication (RFC 7617) against the users
of an htpasswd Secret, answering as Envoy's basic_auth filter does.

Hashes: SHA-1 (``{SHA}``, all Envoy supports) and bcrypt (``$2y$``/``$2b$``/``$2a$``,
what ``htpasswd -B`` writes). Any other format (MD5 ``$apr1$``, crypt, plain text) is a
config error naming the line and user, never silently a user who cannot log in.

bcrypt costs 50-250 ms a check by design, so when the file has bcrypt entries the filter
is ``BcryptBasicAuth``, whose hook is ``async``: the check runs in a worker thread
(``asyncio.to_thread``) and the event loop goes on serving other requests. A successful
check is remembered in a small bounded map keyed by an HMAC of (user, password), so a
client that sends the same credentials again costs microseconds; a wrong password is
never remembered and always pays the full bcrypt check. Identical checks in flight at
the same moment share one thread. A file with only SHA entries keeps a plain hook.

An unknown user costs the same as a wrong password (a SHA compare, or a bcrypt check
against a dummy hash of the file's highest cost), so timing does not tell which user
names exist.

Refusals: 401 with ``WWW-Authenticate: Basic realm="<original URI>"`` and Envoy's
bodies; ``meshgate_auth_failures_total{method="basic_auth", reason="missing"|"invalid"}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from meshgate.config.models.security.basic_auth import HTPASSWD_KEY
from meshgate.filters.base import Filter
from meshgate.filters.security.base import deny
from meshgate.filters.security.consumer_header import header_value
from meshgate.proxy.context import LocalReply

if TYPE_CHECKING:
    from meshgate.proxy.context import RequestContext

METHOD = "basic_auth"
CACHE_SIZE = 1024  # successful (user, password) checks remembered per filter
_BCRYPT_RE = re.compile(rb"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
_BCRYPT_MAX_PASSWORD = 72  # bcrypt reads no further; htpasswd -B hashed only these
_MAX_REALM_PATH = 256  # Envoy's MaximumUriLength for the realm
_TEXT = ("content-type", "text/plain")

# Envoy's bodies (basic_auth_filter.cc), one per way a request fails.
BODY_MISSING = b"User authentication failed. Missing username and password."
BODY_SCHEME = b"User authentication failed. Expected 'Basic' authentication scheme."
BODY_FORMAT = b"User authentication failed. Invalid basic credential format."
BODY_INVALID = b"User authentication failed. Invalid username/password combination."

# Formats meshgate refuses, by prefix, with what they are.
_UNSUPPORTED = (
    (b"$apr1$", "MD5 (apr1)"),
    (b"$1$", "MD5-crypt"),
    (b"$5$", "SHA-256-crypt"),
    (b"$6$", "SHA-512-crypt"),
    (b"{SSHA}", "salted SHA"),
    (b"$2x$", "bcrypt $2x$"),
)
_HOW = "use bcrypt (htpasswd -B) or SHA (htpasswd -s)"


# --- the htpasswd file -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class User:
    name: str
    sha1: bytes | None  # the 20-byte SHA-1 digest, for {SHA} entries
    bcrypt: bytes | None  # the whole bcrypt hash, for $2?$ entries
    consumer: str  # the owning Consumer's name, else the user name


def parse_htpasswd(text: bytes) -> tuple[list[tuple[int, str, bytes | None, bytes | None]], list[str]]:
    """(entries, errors) of an htpasswd file: entries are (line number, user, sha1,
    bcrypt); blank and ``#`` lines are skipped. Errors name the line and the user,
    never the hash."""
    entries: list[tuple[int, str, bytes | None, bytes | None]] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.split(b"\n"), start=1):
        line = raw.rstrip(b"\r")
        if not line.strip() or line.lstrip().startswith(b"#"):
            continue
        user_b, sep, hashed = line.partition(b":")
        try:
            user = user_b.decode("utf-8")
        except UnicodeDecodeError:
            errors.append(f"line {number}: the user name is not UTF-8")
            continue
        where = f"line {number} (user {user!r})"
        if not sep or not user or not hashed:
            errors.append(f"line {number}: expected user:hash")
            continue
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in user):
            errors.append(f"line {number}: the user name has a control character")
            continue
        if user in seen:
            errors.append(f"{where}: duplicate user (first on line {seen[user]})")
            continue
        seen[user] = number
        if hashed.startswith(b"{SHA}"):
            try:
                digest = base64.b64decode(hashed[5:], validate=True)
            except (binascii.Error, ValueError):
                digest = b""
            if len(digest) != 20:
                errors.append(f"{where}: {{SHA}} must be followed by the base64 of a 20-byte SHA-1 digest")
                continue
            entries.append((number, user, digest, None))
        elif hashed.startswith((b"$2y$", b"$2b$", b"$2a$")):
            if not _BCRYPT_RE.match(hashed):
                errors.append(f"{where}: malformed bcrypt hash (expected $2y$NN$ and 53 characters)")
                continue
            entries.append((number, user, None, hashed))
        else:
            what = next((name for prefix, name in _UNSUPPORTED if hashed.startswith(prefix)), None)
            if what is None:
                what = "crypt or plain-text" if not hashed.startswith(b"$") else "this"
            errors.append(f"{where}: {what} hashes are not supported; {_HOW}")
    return entries, errors


# --- requests ------------------------------------------------------------------------


def _quoted(value: str) -> str:
    """``value`` as the inside of an RFC 9110 quoted-string."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def original_uri(ctx: RequestContext, with_query: bool = True) -> str:
    """scheme://host/path?query of the request, path cut at 256 characters (Envoy's
    buildOriginalUri), quoted for a challenge's realm."""
    target = ctx.raw_target if with_query else ctx.path
    return _quoted(f"{ctx.scheme}://{ctx.authority}{target[:_MAX_REALM_PATH]}")


def _refuse(ctx: RequestContext, reason: str, body: bytes) -> LocalReply:
    challenge = f'Basic realm="{original_uri(ctx)}"'
    return deny(METHOD, reason, 401, headers=[("www-authenticate", challenge), _TEXT], body=body)


def credentials(ctx: RequestContext) -> tuple[str, bytes] | LocalReply:
    """(user, password) from the Authorization header, or the refusal."""
    value = ctx.headers.get("authorization")
    if value is None:
        return _refuse(ctx, "missing", BODY_MISSING)
    # RFC 9110: the scheme is case-insensitive (Envoy wants "Basic " exactly).
    if len(value) < 6 or value[:6].lower() != "basic ":
        return _refuse(ctx, "invalid", BODY_SCHEME)
    token = value[6:].strip()
    try:
        decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
    except (binascii.Error, ValueError):
        return _refuse(ctx, "invalid", BODY_FORMAT)
    user_b, sep, password = decoded.partition(b":")
    if not sep:
        return _refuse(ctx, "invalid", BODY_FORMAT)
    try:
        user = user_b.decode("utf-8")
    except UnicodeDecodeError:
        return _refuse(ctx, "invalid", BODY_INVALID)
    return user, password


class BasicAuth(Filter):
    """Users with SHA-1 entries only: every check is a hash and a constant-time compare."""

    __slots__ = ("_count", "_forward", "_source", "_users")
    name = "BasicAuth"

    def __init__(self, users: dict[str, User], forward_header: str | None, source: str) -> None:
        self._users = users
        self._forward = forward_header.lower() if forward_header else None
        self._source = source  # "namespace/name" of the Secret, for describe()
        self._count = len(users)

    def _accept(self, ctx: RequestContext, user: User) -> None:
        ctx.consumer = user.consumer
        if self._forward is not None:
            ctx.headers.set(self._forward, header_value(user.name))

    def _check_sha(self, user: User | None, password: bytes) -> bool:
        digest = hashlib.sha1(password).digest()
        expected = user.sha1 if user is not None and user.sha1 is not None else _NO_SHA1
        # Compare even for an unknown user: same cost, and no early exit on a byte.
        return hmac.compare_digest(digest, expected) and user is not None

    def on_request(self, ctx: RequestContext) -> LocalReply | None:
        found = credentials(ctx)
        if isinstance(found, LocalReply):
            return found
        name, password = found
        user = self._users.get(name)
        if not self._check_sha(user, password):
            return _refuse(ctx, "invalid", BODY_INVALID)
        self._accept(ctx, user)
        return None

    def describe(self) -> dict:
        return {
            "type": self.name,
            "users": {"secret": self._source, "count": self._count},
            "forwardUsernameHeader": self._forward,
        }


_NO_SHA1 = bytes(20)


class BcryptBasicAuth(BasicAuth):
    """Users with bcrypt entries (maybe SHA ones too): bcrypt checks off the event loop,
    successes remembered."""

    __slots__ = ("_cache", "_cache_key", "_dummy", "_inflight")
    name = "BasicAuth"

    def __init__(self, users: dict[str, User], forward_header: str | None, source: str) -> None:
        super().__init__(users, forward_header, source)
        cost = max(int(u.bcrypt[4:6]) for u in users.values() if u.bcrypt is not None)
        # A well-formed hash no password matches: an unknown user costs a real check.
        self._dummy = b"$2b$%02d$" % cost + b"." * 53
        self._cache_key = secrets.token_bytes(32)  # per filter: digests mean nothing elsewhere
        self._cache: dict[bytes, str] = {}  # HMAC(user, password) -> user name, oldest first
        self._inflight: dict[bytes, asyncio.Future[bool]] = {}

    def _digest(self, name: str, password: bytes) -> bytes:
        user_b = name.encode("utf-8")
        message = len(user_b).to_bytes(4, "big") + user_b + password  # unambiguous split
        return hmac.new(self._cache_key, message, hashlib.sha256).digest()

    async def on_request(self, ctx: RequestContext) -> LocalReply | None:
        found = credentials(ctx)
        if isinstance(found, LocalReply):
            return found
        name, password = found
        user = self._users.get(name)
        if user is not None and user.bcrypt is None:
            ok = self._check_sha(user, password)
        else:
            key = self._digest(name, password)
            cached = self._cache.pop(key, None)
            if cached is not None:
                self._cache[key] = cached  # most recently used goes last
                ok = True
            else:
                hashed = user.bcrypt if user is not None else self._dummy
                ok = await self._verify(key, password, hashed) and user is not None
                if ok:
                    self._remember(key, name)
        if not ok:
            return _refuse(ctx, "invalid", BODY_INVALID)
        self._accept(ctx, user)
        return None

    async def _verify(self, key: bytes, password: bytes, hashed: bytes) -> bool:
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(asyncio.to_thread(_bcrypt_check, password, hashed))
            self._inflight[key] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(key, None))
        # shield: a client that goes away does not cancel the check others wait on.
        return await asyncio.shield(pending)

    def _remember(self, key: bytes, name: str) -> None:
        cache = self._cache
        if len(cache) >= CACHE_SIZE:
            del cache[next(iter(cache))]
        cache[key] = name

    def cached(self) -> int:
        """How many successful checks are remembered (for tests and describe())."""
        return len(self._cache)

    def describe(self) -> dict:
        return {**super().describe(), "bcrypt": True, "cacheSize": CACHE_SIZE}


def _bcrypt_check(password: bytes, hashed: bytes) -> bool:
    import bcrypt

    return bcrypt.checkpw(password[:_BCRYPT_MAX_PASSWORD], hashed)


# --- compile -------------------------------------------------------------------------


def users_from(text: bytes, refs: Any, namespace: str) -> Iterator[User]:
    """The users of an htpasswd file, each with its Consumer; errors go to ``refs``."""
    entries, errors = parse_htpasswd(text)
    for message in errors:
        refs.error(("users",), f"{HTPASSWD_KEY} {message}")
    consumers = refs.consumers
    for _, name, sha1, hashed in entries:
        owner = consumers.by_username(namespace, name) if consumers is not None else None
        if owner is None and consumers is not None and consumers.is_consumer(namespace, name):
            # It would pass for that Consumer (authorization, plans, the consumer header).
            refs.error(
                ("users",),
                f"{HTPASSWD_KEY} user {name!r} has the name of Consumer {namespace}/{name}, "
                "which does not claim it; list it in that Consumer's basicAuth or rename the user",
            )
        yield User(name, sha1, hashed, owner or name)


def build(spec: Any, refs: Any) -> tuple:
    """The basic-auth filter of a SecurityPolicy's ``basicAuth`` section."""
    ref = spec.users
    namespace = ref.namespace or refs.namespace
    values = refs.secret(ref.name, ("users",), ref.namespace)
    if values is None:
        return ()
    text = values.get(HTPASSWD_KEY)
    if text is None:
        refs.error(("users",), f"Secret {namespace}/{ref.name} has no {HTPASSWD_KEY!r} key")
        return ()
    users = {u.name: u for u in users_from(text, refs, refs.namespace)}
    if not users:
        refs.error(("users",), f"Secret {namespace}/{ref.name}: {HTPASSWD_KEY} has no users")
        return ()
    cls = BcryptBasicAuth if any(u.bcrypt is not None for u in users.values()) else BasicAuth
    return (cls(users, spec.forwardUsernameHeader, f"{namespace}/{ref.name}"),)
