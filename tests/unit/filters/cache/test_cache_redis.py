"""The Redis store against a real redis-server: two gateways (two filters) share
entries, purges reach them, and a Redis that is down is a miss, not an error."""

from __future__ import annotations

import pytest
from cache_driver import make_driver
from redis_server import RedisServer

from meshgate.filters.cache import STORES
from meshgate.filters.cache.purge import handle_purge
from meshgate.filters.cache.redis_store import RedisStore


@pytest.fixture(scope="module")
def redis():
    server = RedisServer().start()
    yield server
    server.stop()


async def test_two_gateways_share_entries_through_redis(redis, origin, clock):
    origin.headers = [("cache-control", "max-age=60"), ("vary", "accept")]
    one = make_driver(origin, clock, store=RedisStore(redis.url, "default/shared"))
    two = make_driver(origin, clock, store=RedisStore(redis.url, "default/shared"))
    assert (await one.request("/r", headers=[("accept", "a")])).x_cache == "MISS"
    clock.advance(5)
    hit = await two.request("/r", headers=[("accept", "a")])
    assert (hit.x_cache, hit.body, hit.headers.get("age"), origin.calls) == ("HIT", b"hello", "5", 1)
    assert (await two.request("/r", headers=[("accept", "b")])).x_cache == "MISS"


async def test_purge_reaches_the_redis_store(redis, origin, clock):
    origin.headers = [("cache-control", "max-age=60")]
    store = RedisStore(redis.url, "default/purged")
    d = make_driver(origin, clock, store=store)
    STORES[("default/purged", ("Redis",))] = store
    try:
        await d.request("/items/1")
        await d.request("/items/2")
        await d.request("/keep")
        _, body, _ = await handle_purge("POST", b'{"prefix": "/items/", "policy": "default/purged"}')
        assert body == b'{"purged":2}'
        assert [(await d.request(p)).x_cache for p in ("/items/1", "/keep")] == ["MISS", "HIT"]
    finally:
        del STORES[("default/purged", ("Redis",))]


async def test_a_redis_that_is_down_is_a_miss(origin, clock):
    origin.headers = [("cache-control", "max-age=60")]
    store = RedisStore("redis://127.0.0.1:1", "default/down", timeout=0.2)
    d = make_driver(origin, clock, store=store)
    assert (await d.request()).status == 200
    assert (await d.request()).x_cache == "MISS" and store.down
