"""Plan counters, in memory and in a real redis-server, with one semantics: every
counter of a request is checked and taken together (a refused request takes nothing),
costs add up, counters expire after their period; in Redis atomically across clients,
and through the rate-limit module's outage handling."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis_server import RedisServer

from meshgate.plans.counters import GRACE, MemoryCounters, RedisPlanCounters, split
from meshgate.ratelimit.redis_counters import RedisCounters


@pytest.fixture(scope="module")
def redis():
    with RedisServer() as server:
        yield server


@pytest.fixture
async def redis_counters(redis):
    c = RedisCounters(redis.url, timeout=0.5)
    await c.start()
    yield c
    await c._client.flushdb()
    c.stop()


@pytest.fixture(params=["memory", "redis"])
async def store(request, redis):
    """take() with the same signature for both stores (Redis awaited)."""
    if request.param == "memory":
        counters = MemoryCounters()

        async def take(*args):
            return counters.take(*args)

        yield take, counters
        return
    rc = RedisCounters(redis.url, timeout=0.5)
    await rc.start()
    counters = RedisPlanCounters(rc)

    async def take(*args):
        reply = await counters.take(*args)
        return split(reply)

    yield take, counters
    await rc._client.flushdb()
    rc.stop()


END = int(time.time()) + 3600


async def test_counts_add_costs_until_a_limit_has_no_room(store):
    take, _ = store
    keys, limits, ends = ["rl:a", "q:a"], [5, 20], [END, END]
    assert await take(keys, limits, [1, 10], ends, 0) == (0, [1, 10])
    assert await take(keys, limits, [1, 10], ends, 0) == (0, [2, 20])
    # the quota has no room for 10 more: refused, and nothing is taken
    assert await take(keys, limits, [1, 10], ends, 0) == (2, [2, 20])
    assert await take(keys, limits, [1, 0], ends, 0) == (0, [3, 20])  # cost 0 fits


async def test_a_refused_request_takes_from_no_counter(store):
    take, counters = store
    await take(["w"], [1], [1], [END], 0)
    assert (await take(["w", "q"], [1, 100], [1, 1], [END, END], 0))[0] == 1
    assert (await take(["q"], [100], [1], [END], 0)) == (0, [1])  # q was not charged


async def test_limit_zero_refuses_everything(store):
    take, _ = store
    assert (await take(["z"], [0], [1], [END], 0))[0] == 1


async def test_redis_counters_expire_an_hour_after_their_period(redis_counters):
    counters = RedisPlanCounters(redis_counters)
    end = int(time.time()) + 60
    await counters.take(["e"], [10], [1], [end], 0)
    ttl = await redis_counters._client.ttl("e")
    assert 60 + GRACE - 5 <= ttl <= 60 + GRACE
    assert await counters.read(["e", "missing"]) == [1, 0]


async def test_memory_counters_forget_periods_that_are_over():
    counters = MemoryCounters(sweep_above=2)
    counters.take(["old"], [5], [1], [100], 0)
    counters.take(["new"], [5], [1], [10_000], 0)
    counters.take(["newer"], [5], [1], [10_000], 100 + GRACE)  # sweeps first
    assert "old" not in counters.counts and counters.read(["new"]) == [1]


async def test_two_redis_clients_hammering_one_quota_get_exactly_the_limit(redis):
    a, b = RedisCounters(redis.url, 1.0), RedisCounters(redis.url, 1.0)
    pa, pb = RedisPlanCounters(a), RedisPlanCounters(b)
    replies = await asyncio.gather(
        *(c.take(["hammer"], [25], [1], [END], 0) for c in [pa, pb] * 50)
    )
    assert sum(split(r)[0] == 0 for r in replies) == 25
    a.stop()
    b.stop()


async def test_without_redis_the_answer_is_none():
    rc = RedisCounters("redis://127.0.0.1:1/0", timeout=0.2)
    counters = RedisPlanCounters(rc)
    assert await counters.take(["k"], [1], [1], [END], 0) is None
    assert await counters.read(["k"]) is None
