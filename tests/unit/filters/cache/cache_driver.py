"""A driver that runs the cache filter's hooks in the engine's order (``proxy/retrying``:
request filters, then the upstream answer through ``on_response_body`` when it has a
body, then ``on_response``; a LocalReply goes through ``on_response`` only) against
an origin function, under a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from meshgate.filters.cache import CacheFilter, KeySpec, MemoryStore
from meshgate.filters.cache.rfc9111 import format_http_date
from meshgate.http.headers import Headers
from meshgate.proxy.context import LocalReply, RequestContext, ResponseHead

T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Result:
    status: int
    headers: Headers
    body: bytes
    upstream_headers: Headers | None = None  # what the origin got, if it was asked

    @property
    def x_cache(self) -> str | None:
        return self.headers.get("x-cache")


@dataclass
class Origin:
    """Answers with ``status``, ``headers``, ``body``; counts calls; ``fail``: raises."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b"hello"
    calls: int = 0
    seen: list[Headers] = field(default_factory=list)
    answer: object = None  # optional fn(request headers) -> (status, headers, body)
    gate: object = None  # optional asyncio.Event every upstream request waits for

    async def fetch(self, headers: Headers):
        if self.gate is not None:
            await self.gate.wait()
        return self(headers)

    def __call__(self, headers: Headers):
        self.calls += 1
        self.seen.append(headers.copy())
        if self.answer is not None:
            return self.answer(headers)
        return self.status, list(self.headers), self.body


class Driver:
    def __init__(self, cache: CacheFilter, origin: Origin, clock: Clock, engine_passes_304: bool) -> None:
        self.cache = cache
        self.origin = origin
        self.clock = clock
        self.engine_passes_304 = engine_passes_304

    async def request(self, path: str = "/a", method: str = "GET", headers=(), consumer=None, host="example.com") -> Result:
        path, _, query = path.partition("?")
        ctx = RequestContext(method, path, path, query, Headers.from_pairs(headers), host, host, "http", "1.1", "127.0.0.1", 1, 80, "id", 0.0)
        ctx.consumer = consumer
        reply = self.cache.on_request(ctx)
        if reply is not None and not isinstance(reply, LocalReply):
            reply = await reply  # it had to wait (coalescing, or a Redis store)
        if isinstance(reply, LocalReply):
            head = ResponseHead(reply.status, "", Headers(list(reply.headers)))
            self.cache.on_response(ctx, head)
            return Result(head.status, head.headers, reply.body)
        sent = ctx.headers.copy()
        status, fields, body = await self.origin.fetch(sent)
        head = ResponseHead(status, "", Headers.from_pairs(fields))
        if "date" not in head.headers:  # origins send their clock's Date
            head.headers.add("date", format_http_date(self.clock.now))
        has_body = method != "HEAD" and status >= 200 and status not in (204, 304)
        if has_body or (status == 304 and self.engine_passes_304):
            replaced = await self.cache.on_response_body(ctx, head, body)
            if replaced is not None:
                body = replaced
        self.cache.on_response(ctx, head)
        return Result(head.status, head.headers, body if method != "HEAD" else b"", sent)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def origin() -> Origin:
    return Origin()


def make_driver(origin: Origin, clock: Clock, passes_304: bool = True, store=None, **kw) -> Driver:
    cache = CacheFilter(
        "default/cache",
        store or MemoryStore(1000, 10 * 1024 * 1024),
        keyspec=kw.pop("keyspec", KeySpec()),
        clock=clock,
        revalidate_in_band=passes_304,
        **kw,
    )
    return Driver(cache, origin, clock, passes_304)


@pytest.fixture
def driver(origin: Origin, clock: Clock) -> Driver:
    return make_driver(origin, clock)
