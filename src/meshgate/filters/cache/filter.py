"""The response cache filter: lookup, reuse, storing, revalidation and coalescing.

Phases (``filters/base.py``):
- ``on_request``: GET/HEAD look up the key; a usable entry is answered at once (200
  with ``Age``, or 304 to a matching conditional request); otherwise the request goes
  upstream, the first of concurrent misses as the one ``flight`` for its key (the
  others wait for it, bounded, then look again). An unsafe method marks its key for
  invalidation.
- ``on_response_body``: an upstream GET response is stored when RFC 9111 allows; a
  5xx is replaced by a stale entry that ``stale-if-error`` still covers; a 304 to
  validators the cache added refreshes the entry and is answered with it.
- ``on_response``: ``X-Cache`` on what goes out, 304s to a client's own conditional
  request refresh the entry, 204s are stored, unsafe methods invalidate, and the
  flight lands so its waiters look again.

``X-Cache``: HIT (fresh, from the cache), STALE (stale, from the cache: stale-while-
revalidate, stale-if-error or the client's max-stale), REVALIDATED (stale, confirmed
by the origin with a 304), EXPIRED (stale, replaced by a full upstream response),
MISS (nothing stored), BYPASS (the request may not use the cache).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from meshgate.filters.base import Filter
from meshgate.filters.cache import rfc9111 as rfc
from meshgate.filters.cache.store import Entry, MemoryStore, pick, vary_value
from meshgate.http.headers import Headers
from meshgate.proxy.context import LocalReply

if TYPE_CHECKING:
    from meshgate.proxy.context import RequestContext, ResponseHead

HIT, STALE, REVALIDATED, EXPIRED, MISS, BYPASS = "HIT", "STALE", "REVALIDATED", "EXPIRED", "MISS", "BYPASS"

# X-Cache word -> responses that carried it, in this process (meshgate_cache_lookups_total).
CACHE_RESULTS: dict[str, int] = {}


def _count(word: str) -> None:
    CACHE_RESULTS[word] = CACHE_RESULTS.get(word, 0) + 1
_VAR = "cache"
_SAFE = frozenset(("GET", "HEAD", "OPTIONS", "TRACE"))


def engine_hooks_not_modified() -> bool:
    """Does the engine give a 304 to response body hooks (so the cache can answer a
    revalidated entry's body)? Until it does, stale entries are fetched whole unless
    the client's own request is conditional."""
    from meshgate.proxy import retrying

    return bool(getattr(retrying, "BODY_HOOKS_SEE_NOT_MODIFIED", False))


class KeySpec:
    """The policy's cache key, precompiled."""

    __slots__ = ("consumer", "headers", "host", "params", "query")

    def __init__(self, host: bool = True, query: str = "All", params=(), headers=(), consumer: bool = True) -> None:
        self.host = host
        self.query = query  # "All" | "Ignore" | "Only"
        self.params = frozenset(params)
        self.headers = tuple(h.lower() for h in headers)
        self.consumer = consumer

    def of(self, ctx: RequestContext) -> str:
        query = ctx.query
        if self.query == "Ignore":
            query = ""
        elif self.query == "Only" and query:
            query = urlencode(sorted((k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k in self.params))
        key = (ctx.host if self.host else "") + "|" + ctx.path + "?" + query
        if self.headers:
            key += "|" + "|".join(vary_value(ctx.headers, h) for h in self.headers)
        if self.consumer:
            caller = _caller(ctx)
            if caller is not None:
                # NUL cannot occur in a path, query or header value: no request spells
                # another caller's key.
                key += caller
        return key


def _caller(ctx: RequestContext) -> str | None:
    """Who authenticated, as a key suffix: the consumer, else the verified claims'
    issuer and subject (client id when there is no subject); None when anonymous."""
    if ctx.consumer:
        return "\x00c" + ctx.consumer
    claims = ctx.claims
    if claims is None:
        return None
    subject = claims.get("sub")
    if subject is None:
        subject = claims.get("client_id", claims.get("azp"))
    return f"\x00j{claims.get('iss')}\x00{subject}"


class _State:
    """One request's dealings with the cache (in ``ctx.vars["cache"]``)."""

    __slots__ = ("entry", "flight", "invalidate", "key", "request_cc", "request_time", "served", "validated", "word")

    def __init__(self, key: str, request_cc: dict) -> None:
        self.key = key
        self.request_cc = request_cc
        self.entry: Entry | None = None  # a stale entry this request may refresh
        self.word = MISS
        self.served = False  # answered from the cache (our LocalReply)
        self.flight: asyncio.Future | None = None  # ours to land: others wait on it
        self.request_time = 0.0
        self.validated = False  # the cache added If-None-Match / If-Modified-Since
        self.invalidate = False


class CacheFilter(Filter):
    __slots__ = ("_tasks", "body_limit", "clock", "coalesce", "coalesce_timeout", "default_ttl", "flights", "keyspec", "max_ttl", "policy", "revalidate_in_band", "store")

    name = "cache"
    # A response too big to store goes past the cache, streamed; a 304 to the cache's
    # own revalidation reaches on_response_body, which answers the stored response.
    body_overflow = "pass"
    body_on_not_modified = True

    def __init__(
        self,
        policy: str,
        store,
        keyspec: KeySpec | None = None,
        default_ttl: float | None = None,
        max_ttl: float | None = None,
        max_object_bytes: int = 1024 * 1024,
        coalesce: bool = True,
        coalesce_timeout: float = 5.0,
        clock=time.time,
        revalidate_in_band: bool | None = None,
    ) -> None:
        self.policy = policy
        self.store = store
        self.keyspec = keyspec or KeySpec()
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.body_limit = max_object_bytes
        self.coalesce = coalesce
        self.coalesce_timeout = coalesce_timeout
        self.clock = clock
        # key -> the future of the request fetching it upstream now
        self.flights: dict[str, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()
        self.revalidate_in_band = engine_hooks_not_modified() if revalidate_in_band is None else revalidate_in_band

    # -- request ---------------------------------------------------------------------

    def on_request(self, ctx: RequestContext) -> Any:
        """Plain, so a hit or a first miss on the memory store answers in the socket
        callbacks; an awaitable only when the request must wait (coalescing behind
        another miss, or a Redis store)."""
        method = ctx.method
        if method != "GET" and method != "HEAD":
            if method not in _SAFE:
                state = _State(self.keyspec.of(ctx), rfc.EMPTY)
                state.invalidate = True
                _vars(ctx)[_VAR] = state
            return None
        headers = ctx.headers
        request_cc = rfc.parse_cache_control(headers.get("cache-control"))
        if not request_cc and headers.get("pragma", "").lower() == "no-cache":
            request_cc = {"no-cache": None}  # RFC 9111 section 5.4
        state = _State(self.keyspec.of(ctx), request_cc)
        _vars(ctx)[_VAR] = state
        if "no-store" in request_cc:
            state.word = BYPASS
            return None
        store = self.store
        if isinstance(store, MemoryStore):
            decided, reply = self._look(ctx, state, store.get_now(state.key), waited=False)
            if decided:
                return reply
        return self._lookup(ctx, state)

    async def _lookup(self, ctx: RequestContext, state: _State) -> LocalReply | None:
        """The lookup that may wait: the store's answer, and coalescing behind a miss
        another request is already fetching."""
        waited = isinstance(self.store, MemoryStore)  # the first look was made already
        if waited:
            await self._wait_for_flight(state)
        while True:
            decided, reply = self._look(ctx, state, await self.store.get(state.key), waited)
            if decided:
                return reply
            await self._wait_for_flight(state)
            waited = True

    async def _wait_for_flight(self, state: _State) -> None:
        flight = self.flights.get(state.key)
        if flight is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(flight), self.coalesce_timeout)
        except TimeoutError:
            # The leader is gone (its client left) or slow: stop everyone waiting.
            self._land_flight(state.key, flight)

    def _look(
        self, ctx: RequestContext, state: _State, stored: list[Entry] | None, waited: bool
    ) -> tuple[bool, LocalReply | None]:
        """One look at what is stored: (True, reply or None to go upstream) when the
        request is decided, (False, None) when it should wait for another's fetch."""
        request_cc = state.request_cc
        entry = pick(stored, ctx.headers)
        now = self.clock()
        if entry is not None:
            reply = self._reuse(ctx, state, entry, now)
            if reply is not None:
                return True, reply
        if "only-if-cached" in request_cc:
            state.served = True
            return True, LocalReply(504, [("x-cache", MISS)], b"not in cache\n")
        if ctx.method == "GET" and not waited:
            flight = self.flights.get(state.key)
            if flight is None:
                state.flight = self.flights[state.key] = asyncio.get_running_loop().create_future()
            elif self.coalesce and "no-cache" not in request_cc:
                return False, None
        state.request_time = now
        entry = state.entry
        if entry is not None:
            state.word = EXPIRED
            if self._add_validators(ctx, entry):
                state.validated = True
        return True, None

    def _reuse(self, ctx: RequestContext, state: _State, entry: Entry, now: float) -> LocalReply | None:
        """A reply from ``entry`` if this request may use it now (RFC 9111 section 4);
        else None, with the entry kept on ``state`` for validation or stale-if-error."""
        cc = state.request_cc
        age = entry.age(now)
        left = entry.lifetime - age
        if not (entry.no_cache or "no-cache" in cc):
            usable = left > 0
            if usable and cc:
                max_age = rfc.seconds(cc, "max-age")
                min_fresh = rfc.seconds(cc, "min-fresh")
                if (max_age is not None and age > max_age) or (min_fresh is not None and left < min_fresh):
                    usable = False
            if usable:
                return self._serve(ctx, state, entry, age, HIT)
            stale_by = -left
            if stale_by >= 0 and not entry.must_revalidate:
                if "max-stale" in cc:
                    limit = rfc.seconds(cc, "max-stale")
                    if limit is None or stale_by <= limit:
                        return self._serve(ctx, state, entry, age, STALE)
                if stale_by <= entry.stale_while_revalidate and state.key in self.flights:
                    # Someone is refreshing it already: this one need not wait.
                    return self._serve(ctx, state, entry, age, STALE)
        state.entry = entry
        return None

    def _serve(self, ctx: RequestContext, state: _State, entry: Entry, age: float, word: str) -> LocalReply:
        state.served = True
        headers = ctx.headers
        inm = headers.get("if-none-match")
        ims = headers.get("if-modified-since")
        if (inm is not None or ims is not None) and entry.status == 200 and rfc.not_modified_for(inm, ims, entry.etag, entry.last_modified):
            fields = [(n, v) for n, v in entry.headers if n in rfc.NOT_MODIFIED_FIELDS]
            status, body = 304, b""
        else:
            fields = list(entry.headers)
            status, body = entry.status, entry.body
        fields.append(("age", str(int(age))))
        fields.append(("x-cache", word))
        _count(word)
        return LocalReply(status, fields, body)

    def _add_validators(self, ctx: RequestContext, entry: Entry) -> bool:
        """Make the upstream request conditional on the stale entry's validators, when
        the engine lets a 304 be turned into the stored response and the client did
        not send conditions of its own (theirs go upstream untouched)."""
        headers = ctx.headers
        if ctx.method != "GET" or not self.revalidate_in_band or entry.status != 200:
            return False
        if "if-none-match" in headers or "if-modified-since" in headers:
            return False
        if entry.etag is not None:
            headers.set("if-none-match", entry.etag)
        if entry.last_modified is not None:
            headers.set("if-modified-since", entry.last_modified)
        return entry.etag is not None or entry.last_modified is not None

    # -- response --------------------------------------------------------------------

    async def on_response_body(self, ctx: RequestContext, head: ResponseHead, body: bytes) -> bytes | None:
        vars_ = ctx.vars
        state = vars_.get(_VAR) if vars_ else None
        if state is None or state.served or state.invalidate or ctx.method != "GET":
            return None
        now = self.clock()
        status = head.status
        entry = state.entry
        if status == 304 and state.validated and entry is not None:
            entry = self._freshened(entry, head, state, now)
            await self.store.put(state.key, entry)
            return self._replace(state, head, entry, now, REVALIDATED)
        if status >= 500 and entry is not None and self._may_serve_stale_on_error(entry, now):
            return self._replace(state, head, entry, now, STALE)
        if state.word == BYPASS:
            return None
        entry = self._entry_from(ctx, state, head, body, now)
        if entry is not None:
            await self.store.put(state.key, entry)
        return None

    def _replace(self, state: _State, head: ResponseHead, entry: Entry, now: float, word: str) -> bytes:
        state.word = word
        head.status = entry.status
        head.reason = ""
        head.headers = Headers([*entry.headers, ("age", str(int(entry.age(now))))])
        return entry.body

    def _may_serve_stale_on_error(self, entry: Entry, now: float) -> bool:
        stale_by = entry.age(now) - entry.lifetime
        return not entry.must_revalidate and stale_by <= entry.stale_if_error

    def on_response(self, ctx: RequestContext, head: ResponseHead) -> None:
        vars_ = ctx.vars
        state = vars_.get(_VAR) if vars_ else None
        if state is None or state.served:
            return
        status = head.status
        if state.invalidate:
            if 200 <= status < 400:  # RFC 9111 section 4.4
                store = self.store
                if isinstance(store, MemoryStore):
                    store.drop_now(state.key)
                else:
                    self._later(store.drop(state.key))
            return
        if ctx.method == "GET" and state.word != BYPASS:
            entry = state.entry
            if status == 304 and entry is not None and state.word == EXPIRED and _same_validators(entry, head):
                # The client's own conditional request, confirmed: the entry is fresh again.
                self._put(state.key, self._freshened(entry, head, state, self.clock()))
                state.word = REVALIDATED
            elif status == 204:
                stored = self._entry_from(ctx, state, head, b"", self.clock())
                if stored is not None:
                    self._put(state.key, stored)
        head.headers.set("x-cache", state.word)
        _count(state.word)
        if state.flight is not None:
            self._land_flight(state.key, state.flight)
            state.flight = None

    def _land_flight(self, key: str, flight: asyncio.Future) -> None:
        if not flight.done():
            flight.set_result(None)
        if self.flights.get(key) is flight:
            del self.flights[key]

    def _put(self, key: str, entry: Entry) -> None:
        store = self.store
        if isinstance(store, MemoryStore):
            store.put_now(key, entry)
        else:
            self._later(store.put(key, entry))

    def _later(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- building entries ------------------------------------------------------------

    def _entry_from(self, ctx: RequestContext, state: _State, head: ResponseHead, body: bytes, now: float) -> Entry | None:
        fields = head.headers
        response_cc = rfc.parse_cache_control(fields.get_joined("cache-control"))
        request_headers = ctx.headers
        if rfc.storable(
            "GET", head.status, state.request_cc, response_cc,
            "authorization" in request_headers, "set-cookie" in fields,
        ) is not None:
            return None
        vary = []
        for value in fields.get_all("vary"):
            for name in value.split(","):
                name = name.strip().lower()
                if name == "*":
                    return None  # never matches a later request (section 4.1)
                if name:
                    vary.append((name, vary_value(request_headers, name)))
        date = rfc.http_date(fields.get("date"))
        if date is None:
            date = now
        last_modified = fields.get("last-modified")
        lifetime = rfc.lifetime(
            head.status, response_cc, date, fields.get("expires"),
            rfc.http_date(last_modified), self.default_ttl, self.max_ttl,
        )
        if lifetime is None:
            return None
        stored = [(n, v) for n, v in fields if n not in rfc.UNSTORED_FIELDS]
        if "date" not in fields:
            stored.append(("date", rfc.format_http_date(now)))
        return Entry(
            status=head.status,
            headers=stored,
            body=body,
            response_time=now,
            initial_age=rfc.initial_age(fields.get("age"), date, state.request_time or now, now),
            lifetime=lifetime,
            stale_while_revalidate=float(rfc.seconds(response_cc, "stale-while-revalidate") or 0),
            stale_if_error=float(rfc.seconds(response_cc, "stale-if-error") or 0),
            must_revalidate=any(d in response_cc for d in ("must-revalidate", "proxy-revalidate", "s-maxage")),
            no_cache="no-cache" in response_cc,
            etag=fields.get("etag"),
            last_modified=last_modified,
            vary=tuple(vary),
            url=ctx.host + ctx.path + ("?" + ctx.query if ctx.query else ""),
            host=ctx.host,
            path=ctx.path,
        )

    def _freshened(self, entry: Entry, head: ResponseHead, state: _State, now: float) -> Entry:
        """``entry`` updated with a 304's fields and times (section 4.3.4)."""
        updates = {n for n, _ in head.headers if n not in rfc.NOT_FRESHENED}
        fields = [(n, v) for n, v in entry.headers if n not in updates]
        fields += [(n, v) for n, v in head.headers if n in updates]
        merged = Headers(fields)
        response_cc = rfc.parse_cache_control(merged.get_joined("cache-control"))
        date = rfc.http_date(merged.get("date")) or now
        lifetime = rfc.lifetime(
            entry.status, response_cc, date, merged.get("expires"),
            rfc.http_date(merged.get("last-modified")), self.default_ttl, self.max_ttl,
        )
        return Entry(
            status=entry.status,
            headers=fields,
            body=entry.body,
            response_time=now,
            initial_age=rfc.initial_age(head.headers.get("age"), date, state.request_time or now, now),
            lifetime=lifetime if lifetime is not None else 0.0,
            stale_while_revalidate=float(rfc.seconds(response_cc, "stale-while-revalidate") or 0),
            stale_if_error=float(rfc.seconds(response_cc, "stale-if-error") or 0),
            must_revalidate=any(d in response_cc for d in ("must-revalidate", "proxy-revalidate", "s-maxage")),
            no_cache="no-cache" in response_cc,
            etag=merged.get("etag"),
            last_modified=merged.get("last-modified"),
            vary=entry.vary,
            url=entry.url,
            host=entry.host,
            path=entry.path,
        )

    def describe(self) -> dict:
        return {"type": self.name, "policy": self.policy, "store": self.store.describe()}


def _same_validators(entry: Entry, head: ResponseHead) -> bool:
    """Does a 304 speak of this stored response (section 4.3.4)?"""
    etag = head.headers.get("etag")
    if etag is not None:
        return entry.etag is not None and rfc.strong_etag(etag) == rfc.strong_etag(entry.etag)
    modified = head.headers.get("last-modified")
    if modified is not None:
        return entry.last_modified == modified
    return entry.etag is None and entry.last_modified is None


def _vars(ctx: RequestContext) -> dict:
    v = ctx.vars
    if v is None:
        v = ctx.vars = {}
    return v


__all__ = ["CacheFilter", "KeySpec"]
