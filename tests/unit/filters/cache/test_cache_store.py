"""Coalescing, the cache key, the memory store's bounds and purges."""

from __future__ import annotations

import asyncio

import orjson
from cache_driver import Clock, Origin, make_driver

from meshgate.filters.cache import STORES, KeySpec, MemoryStore
from meshgate.filters.cache.purge import handle_purge
from meshgate.filters.cache.store import Entry


async def test_concurrent_misses_make_one_upstream_request(origin, clock):
    origin.headers = [("cache-control", "max-age=60")]
    origin.gate = asyncio.Event()  # the upstream takes a while
    d = make_driver(origin, clock)
    tasks = [asyncio.create_task(d.request()) for _ in range(20)]
    await asyncio.sleep(0.01)
    assert len(d.cache.flights) == 1  # one leader; the others wait for it
    origin.gate.set()
    results = await asyncio.gather(*tasks)
    assert origin.calls == 1
    assert sorted(r.x_cache for r in results) == ["HIT"] * 19 + ["MISS"]
    assert {r.body for r in results} == {b"hello"}
    assert not d.cache.flights


async def test_waiters_go_upstream_themselves_when_the_answer_is_not_cacheable(origin, clock):
    origin.headers = [("cache-control", "no-store")]
    origin.gate = asyncio.Event()
    d = make_driver(origin, clock)
    tasks = [asyncio.create_task(d.request()) for _ in range(5)]
    await asyncio.sleep(0.01)
    assert len(origin.seen) == 0
    origin.gate.set()
    results = await asyncio.gather(*tasks)
    assert origin.calls == 5 and {r.x_cache for r in results} == {"MISS"}


async def test_a_waiter_stops_waiting_after_the_coalesce_timeout(origin, clock):
    origin.headers = [("cache-control", "max-age=60")]
    d = make_driver(origin, clock, coalesce_timeout=0.01)
    d.cache.flights["example.com|/a?"] = asyncio.get_running_loop().create_future()  # a leader that never lands
    r = await d.request()
    assert (r.x_cache, origin.calls) == ("MISS", 1)
    assert "example.com|/a?" not in d.cache.flights


def ctx_key(keyspec: KeySpec, path: str, headers=(), consumer=None) -> str:
    from meshgate.http.headers import Headers
    from meshgate.proxy.context import RequestContext

    p, _, q = path.partition("?")
    ctx = RequestContext("GET", path, p, q, Headers.from_pairs(headers), "h.example", "h.example", "http", "1.1", "", 0, 80, "", 0.0)
    ctx.consumer = consumer
    return keyspec.of(ctx)


def test_the_cache_key_takes_what_the_policy_chooses():
    only = KeySpec(query="Only", params=["a", "b"])
    assert ctx_key(only, "/x?b=2&z=9&a=1") == ctx_key(only, "/x?a=1&b=2")
    assert ctx_key(KeySpec(query="Ignore"), "/x?a=1") == ctx_key(KeySpec(query="Ignore"), "/x")
    assert ctx_key(KeySpec(), "/x?a=1") != ctx_key(KeySpec(), "/x?a=2")
    by_header = KeySpec(headers=["X-Tenant"])
    assert ctx_key(by_header, "/x", [("x-tenant", "a")]) != ctx_key(by_header, "/x", [("x-tenant", "b")])
    by_consumer = KeySpec(consumer=True)
    assert ctx_key(by_consumer, "/x", consumer="alice") != ctx_key(by_consumer, "/x", consumer="bob")
    assert ctx_key(KeySpec(host=False), "/x").startswith("|/x")


def test_by_default_each_authenticated_caller_has_its_own_entries():
    """A CachePolicy on an authenticated route never serves one caller's response to
    another unless it says so (key.consumer: false)."""
    from meshgate.config.models.cache_policy import CacheKey

    assert CacheKey().consumer is True
    default = KeySpec()
    assert ctx_key(default, "/x", consumer="alice") != ctx_key(default, "/x", consumer="bob")
    assert ctx_key(default, "/x", consumer="alice") != ctx_key(default, "/x")
    # A verified token with no Consumer: its issuer and subject tell callers apart.
    assert claims_key(default, {"iss": "i", "sub": "a"}) != claims_key(default, {"iss": "i", "sub": "b"})
    assert claims_key(default, {"iss": "i", "client_id": "a"}) != claims_key(default, {"iss": "i", "client_id": "b"})
    # Nothing a client can put in the query or a keyed header spells another caller.
    assert ctx_key(default, "/x?a=1|@alice") != ctx_key(default, "/x?a=1", consumer="alice")
    assert ctx_key(default, "/x?a=1%00@alice") != ctx_key(default, "/x?a=1", consumer="alice")
    shared = KeySpec(consumer=False)
    assert ctx_key(shared, "/x", consumer="alice") == ctx_key(shared, "/x", consumer="bob")
    assert ctx_key(KeySpec(), "/x") == ctx_key(shared, "/x")  # anonymous keys unchanged


def claims_key(keyspec: KeySpec, claims: dict) -> str:
    from meshgate.http.headers import Headers
    from meshgate.proxy.context import RequestContext

    ctx = RequestContext("GET", "/x", "/x", "", Headers(), "h.example", "h.example", "http", "1.1", "", 0, 80, "", 0.0)
    ctx.claims = claims
    return keyspec.of(ctx)


async def test_consumers_get_their_own_entries(origin, clock):
    origin.answer = lambda h: (200, [("cache-control", "max-age=60")], b"data")
    d = make_driver(origin, clock, keyspec=KeySpec(consumer=True))
    await d.request(consumer="alice")
    assert (await d.request(consumer="alice")).x_cache == "HIT"
    assert (await d.request(consumer="bob")).x_cache == "MISS"


def entry(path: str, body: bytes = b"x") -> Entry:
    return Entry(200, [], body, 0.0, 0.0, 60.0, 0.0, 0.0, False, False, None, None, (), "h" + path, "h", path)


async def test_the_memory_store_drops_the_least_recently_used_beyond_its_entry_bound():
    store = MemoryStore(max_entries=3, max_bytes=1 << 20)
    for name in ("a", "b", "c"):
        await store.put(name, entry("/" + name))
    await store.get("a")  # used: "b" is now the oldest
    await store.put("d", entry("/d"))
    assert [k for k in ("a", "b", "c", "d") if await store.get(k)] == ["a", "c", "d"]
    assert (store.entries, store.evictions) == (3, 1)


async def test_the_memory_store_keeps_within_its_byte_bound():
    store = MemoryStore(max_entries=100, max_bytes=3000)
    for i in range(10):
        await store.put(str(i), entry(f"/{i}", b"x" * 700))
    assert store.bytes <= 3000 and store.entries == 3
    await store.put("huge", entry("/huge", b"x" * 5000))  # larger than the store: not kept
    assert await store.get("huge") is None


async def test_purge_by_url_prefix_and_host():
    store = MemoryStore(100, 1 << 20)
    STORES[("test/purge", ("Memory",))] = store
    try:
        for path in ("/a", "/a?x=1", "/items/1", "/items/2", "/other"):
            await store.put(path, entry(path))
        status, body, _ = await handle_purge("POST", b'{"key": "h/a?x=1", "policy": "test/purge"}')
        assert (status, orjson.loads(body)) == (200, {"purged": 1})
        status, body, _ = await handle_purge("POST", b'{"prefix": "/items/", "policy": "test/purge"}')
        assert orjson.loads(body) == {"purged": 2}
        status, body, _ = await handle_purge("POST", b'{"prefix": "/", "host": "elsewhere", "policy": "test/purge"}')
        assert orjson.loads(body) == {"purged": 0}
        assert store.entries == 2
        assert (await handle_purge("POST", b'{"prefix": "items"}'))[0] == 400
        assert (await handle_purge("POST", b'{"url": "/a"}'))[0] == 400
        assert (await handle_purge("GET", b""))[0] == 405
    finally:
        del STORES[("test/purge", ("Memory",))]


async def test_a_purged_url_is_fetched_again(origin: Origin, clock: Clock):
    origin.headers = [("cache-control", "max-age=60")]
    d = make_driver(origin, clock)
    STORES[("test/purge2", ("Memory",))] = d.cache.store
    try:
        await d.request("/p?q=1")
        assert (await d.request("/p?q=1")).x_cache == "HIT"
        await handle_purge("POST", b'{"key": "example.com/p?q=1"}')
        assert (await d.request("/p?q=1")).x_cache == "MISS"
    finally:
        del STORES[("test/purge2", ("Memory",))]
