"""The cache filter on a real Engine: a compiled rule with the filter on it, in front
of a small asyncio upstream whose answers the tests choose, requests from httpx."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from inprocess import Request, free_port, serve

from meshgate.filters.cache import STORES, CacheFilter, MemoryStore
from meshgate.proxy.admin import AdminServer


class Answers:
    """The upstream's answers: ``self.answers[path]`` = (status, [(name, value)], body),
    where body may be a callable of the request's headers that returns all three;
    counts requests per path and keeps the last request's headers."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, list, bytes]] = {}
        self.counts: dict[str, int] = {}
        self.last: dict[str, str] = {}
        self.delay = 0.0

    async def __call__(self, request: Request) -> tuple[int, list, bytes]:
        target = request.target
        self.last = request.headers
        self.counts[target] = self.counts.get(target, 0) + 1
        if self.delay:
            await asyncio.sleep(self.delay)
        status, fields, body = self.answers.get(target, (200, [("cache-control", "max-age=60")], b"body of " + target.encode()))
        if callable(body):
            status, fields, body = body(self.last)
        return status, fields, body


@pytest.fixture
async def setup():
    upstream = Answers()
    cache = CacheFilter("default/cache", MemoryStore(1000, 1 << 24), max_object_bytes=4096)
    STORES[("default/cache", ("Memory",))] = cache.store  # as build() registers it
    try:
        async with serve((cache,), upstream) as (client, _):
            yield client, upstream, cache
    finally:
        STORES.pop(("default/cache", ("Memory",)), None)


async def test_a_second_request_is_a_hit_and_never_reaches_the_upstream(setup):
    client, upstream, _ = setup
    first = await client.get("/a")
    second = await client.get("/a")
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.content == b"body of /a" and second.headers["content-length"] == "10"
    assert second.headers["age"] == "0" and upstream.counts["/a"] == 1
    head = await client.head("/a")
    assert (head.status_code, head.headers["x-cache"], head.content) == (200, "HIT", b"")


async def test_concurrent_misses_reach_the_upstream_once(setup):
    client, upstream, _ = setup
    upstream.delay = 0.1
    results = await asyncio.gather(*(client.get("/c") for _ in range(10)))
    assert upstream.counts["/c"] == 1
    assert sorted(r.headers["x-cache"] for r in results) == ["HIT"] * 9 + ["MISS"]


async def test_a_conditional_request_to_a_fresh_entry_gets_304_from_the_cache(setup):
    client, upstream, _ = setup
    upstream.answers["/e"] = (200, [("cache-control", "max-age=60"), ("etag", '"v1"')], b"tagged")
    await client.get("/e")
    r = await client.get("/e", headers={"if-none-match": '"v1"'})
    assert (r.status_code, r.content, r.headers["etag"], upstream.counts["/e"]) == (304, b"", '"v1"', 1)


async def test_stale_if_error_answers_the_stored_response_when_the_upstream_fails(setup):
    client, upstream, cache = setup
    upstream.answers["/s"] = (200, [("cache-control", "max-age=1, stale-if-error=60")], b"good")
    await client.get("/s")
    cache.clock = lambda: __import__("time").time() + 5  # five seconds later: stale
    upstream.answers["/s"] = (503, [], b"down")
    r = await client.get("/s")
    assert (r.status_code, r.content, r.headers["x-cache"]) == (200, b"good", "STALE")


async def test_a_stale_entry_is_fetched_again(setup):
    client, upstream, cache = setup
    upstream.answers["/x"] = (200, [("cache-control", "max-age=1"), ("etag", '"v1"')], b"one")
    await client.get("/x")
    cache.clock = lambda: __import__("time").time() + 5
    upstream.answers["/x"] = (200, [("cache-control", "max-age=60"), ("etag", '"v2"')], b"two")
    r = await client.get("/x")
    assert (r.content, r.headers["x-cache"], upstream.counts["/x"]) == (b"two", "EXPIRED", 2)
    assert (await client.get("/x")).content == b"two"


async def test_a_clients_conditional_request_revalidates_a_stale_entry(setup):
    client, upstream, cache = setup

    def answer(request):
        if request.get("if-none-match") == '"v1"':
            return 304, [("cache-control", "max-age=60"), ("etag", '"v1"')], b""
        return 200, [("cache-control", "max-age=1"), ("etag", '"v1"')], b"one"

    upstream.answers["/v"] = (0, [], answer)
    await client.get("/v")
    cache.clock = lambda: __import__("time").time() + 5
    r = await client.get("/v", headers={"if-none-match": '"v1"'})
    assert (r.status_code, r.headers["x-cache"]) == (304, "REVALIDATED")
    r = await client.get("/v")
    assert (r.status_code, r.content, r.headers["x-cache"], upstream.counts["/v"]) == (200, b"one", "HIT", 2)


async def test_a_plain_request_revalidates_a_stale_entry_with_its_validator(setup):
    client, upstream, cache = setup

    def answer(request):
        if request.get("if-none-match") == '"v1"':
            return 304, [("cache-control", "max-age=60"), ("etag", '"v1"')], b""
        return 200, [("cache-control", "max-age=1"), ("etag", '"v1"')], b"one"

    upstream.answers["/p"] = (0, [], answer)
    await client.get("/p")
    cache.clock = lambda: __import__("time").time() + 5  # stale now
    r = await client.get("/p")  # no validator of its own: the cache sends the entry's
    assert upstream.last.get("if-none-match") == '"v1"'
    assert (r.status_code, r.content, r.headers["x-cache"]) == (200, b"one", "REVALIDATED")
    assert r.headers["content-length"] == "3"
    assert upstream.counts["/p"] == 2


async def test_post_passes_through_and_invalidates(setup):
    client, upstream, _ = setup
    await client.get("/p")
    await client.post("/p", content=b"change")
    assert (await client.get("/p")).headers["x-cache"] == "MISS"
    assert upstream.counts["/p"] == 3


async def test_a_response_over_max_object_bytes_streams_past_the_cache(setup):
    # Too big to store (maxObjectBytes): the client gets it whole, and it is not stored.
    client, upstream, _ = setup
    upstream.answers["/big"] = (200, [], b"x" * 5000)
    for _ in range(2):
        r = await client.get("/big")
        assert (r.status_code, r.content) == (200, b"x" * 5000)
        assert r.headers.get("x-cache") != "HIT"


async def test_the_admin_api_purges_by_url_and_prefix(setup):
    client, _, _ = setup
    admin = AdminServer(None, lambda: {"ready": True})
    port = free_port()
    await admin.start("127.0.0.1", port)
    try:
        for path in ("/k?x=1", "/dir/a", "/dir/b"):
            await client.get(path)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as adm:
            r = await adm.post("/cache/purge", json={"key": "127.0.0.1/k?x=1"})
            assert (r.status_code, r.json()) == (200, {"purged": 1})
            r = await adm.post("/cache/purge", json={"prefix": "/dir/"})
            assert r.json() == {"purged": 2}
            r = await adm.post("/cache/purge", json={"prefix": "dir"})
            assert r.status_code == 400 and "starts with /" in r.json()["error"]
        assert [(await client.get(p)).headers["x-cache"] for p in ("/k?x=1", "/dir/a")] == ["MISS", "MISS"]
    finally:
        admin.close()
