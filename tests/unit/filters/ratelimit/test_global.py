"""Global rate limits against a real redis-server: the Lua script's fixed windows and
costs, one round trip for several rules, exactness under concurrency from two
clients, the 429 a client sees, and an outage: fail open or closed, logged once,
counted, and recovered from without a restart."""

from __future__ import annotations

import asyncio
import logging

import pytest
from ratelimit_helpers import policy, request
from redis_server import RedisServer

from meshgate.filters.ratelimit import rate_limit_filters
from meshgate.filters.ratelimit.reply import DECISIONS
from meshgate.proxy.context import LocalReply
from meshgate.ratelimit import redis_counters
from meshgate.ratelimit.redis_counters import REDIS_ERRORS, RedisCounters, redact


@pytest.fixture(scope="module")
def redis():
    with RedisServer() as server:
        yield server


@pytest.fixture
async def counters(redis):
    c = RedisCounters(redis.url, timeout=0.5)
    await c.start()
    yield c
    await c._client.flushdb()
    c.stop()


async def test_script_counts_per_key_and_window_and_sets_expiry(counters):
    out = await counters.hit(["k:a", "k:b"], [60, 1, 3600, 5])
    assert out[0] == 1 and out[2] == 5
    assert 0 < out[1] <= 60_000 and 0 < out[3] <= 3_600_000
    out = await counters.hit(["k:a", "k:b"], [60, 1, 3600, 0])
    assert (out[0], out[2]) == (2, 5)  # cost 0 reads without adding
    keys = sorted(k.decode() for k in await counters._client.keys("k:*"))
    assert len(keys) == 2 and all(k.rsplit(":", 1)[1].isdigit() for k in keys)
    # Window start is a multiple of the window, taken from Redis's clock.
    start = int(keys[0].rsplit(":", 1)[1])
    assert start % 60 == 0 or start % 3600 == 0
    ttl = await counters._client.ttl(keys[0])
    assert 0 < ttl <= 3601


async def test_a_second_window_starts_from_zero(counters):
    for _ in range(3):
        await counters.hit(["w"], [1, 1])
    await asyncio.sleep(1.05)
    assert (await counters.hit(["w"], [1, 1]))[0] == 1


async def test_two_clients_hammering_one_counter_admit_exactly_the_limit(redis):
    a, b = RedisCounters(redis.url, 1.0), RedisCounters(redis.url, 1.0)
    p = policy("global: {rules: [{limit: {requests: 25, unit: Hour}}]}", key="ns/exact")
    (fa,) = rate_limit_filters(p, "ns/r", 0)
    (fb,) = rate_limit_filters(p, "ns/r", 0)
    fa.counters, fb.counters = a, b
    replies = await asyncio.gather(*(f.on_request(request()) for f in [fa, fb] * 50))
    assert sum(r is None for r in replies) == 25
    assert all(r.status == 429 and r.flag == "RL" for r in replies if r is not None)
    a.stop()
    b.stop()


async def test_429_headers_report_the_rule_closest_to_its_limit(counters):
    p = policy(
        """
        global:
          rules:
          - limit: {requests: 100, unit: Hour}
          - clientSelectors: [{headers: [{name: x-key, type: Distinct}]}]
            limit: {requests: 2, unit: Minute}
        """,
        key="ns/headers",
    )
    (f,) = rate_limit_filters(p, "ns/r", 0)
    f.counters = counters
    key = {"x-key": "k1"}
    first = request(headers=key)
    assert await f.on_request(first) is None
    got = dict(first.response_headers_to_add)
    assert (got["x-ratelimit-limit"], got["x-ratelimit-remaining"]) == ("2, 2;w=60", "1")
    await f.on_request(request(headers=key))
    ctx = request(headers=key)
    reply = await f.on_request(ctx)
    assert isinstance(reply, LocalReply) and reply.status == 429
    got = dict(ctx.response_headers_to_add)
    assert got["x-ratelimit-remaining"] == "0"
    assert 1 <= int(dict(reply.headers)["retry-after"]) <= 60
    other = request(headers={"x-key": "k2"})
    assert await f.on_request(other) is None


async def test_outage_fails_open_logs_once_and_recovers(caplog):
    server = RedisServer().start()
    try:
        c = RedisCounters(server.url, timeout=0.2)
        await c.start()
        (f,) = rate_limit_filters(policy("global: {rules: [{limit: {requests: 1, unit: Hour}}]}", key="ns/out"), "ns/out", 0)
        f.counters = c
        assert await f.on_request(request()) is None
        assert isinstance(await f.on_request(request()), LocalReply)
        server.kill()
        errors_before = sum(REDIS_ERRORS.values())
        DECISIONS.clear()
        with caplog.at_level(logging.WARNING, logger="meshgate.ratelimit"):
            for _ in range(30):
                assert await f.on_request(request()) is None
            assert DECISIONS[("ns/out", "failed_open", "global")] == 30
            assert sum(REDIS_ERRORS.values()) > errors_before
            server.start()
            await asyncio.sleep(redis_counters.RETRY_AFTER + 0.1)
            # Back, empty: this hour's counter starts again.
            assert await f.on_request(request()) is None
            assert isinstance(await f.on_request(request()), LocalReply)
        lines = [r.getMessage() for r in caplog.records]
        assert sum("unavailable" in m for m in lines) == 1, lines
        assert sum("available again" in m for m in lines) == 1, lines
        c.stop()
    finally:
        server.stop()


async def test_outage_fails_closed_with_500_rlse():
    c = RedisCounters("redis://127.0.0.1:1/0", timeout=0.2, fail_closed=True)  # nothing listens
    (f,) = rate_limit_filters(policy("global: {rules: [{limit: {requests: 1, unit: Hour}}]}", key="ns/closed"), "ns/c", 0)
    f.counters = c
    reply = await f.on_request(request())
    assert (reply.status, reply.flag) == (500, "RLSE")
    # Within RETRY_AFTER of a failure, nothing waits on Redis.
    reply = await f.on_request(request())
    assert reply.status == 500 and c.answered_without == 2


def test_logs_never_show_the_password():
    assert redact("redis://:s3cret@h:6380/2") == "redis://:***@h:6380/2"
    assert redact("rediss://user:pw@h/0") == "rediss://user:***@h/0"
    assert redact("redis://h:6379/0") == "redis://h:6379/0"
