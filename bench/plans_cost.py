#!/usr/bin/env python3
"""What a Consumer's Plan costs per request, in process (the filter alone).

    .venv/bin/python bench/plans_cost.py [--requests 20000]

The `Plans` filter of examples/plans (plan `gold`: one rate limit, a Day and a Month
quota) for consumer `acme`: ``on_request`` then ``on_response`` (usage), with the
counters in memory, then in a real redis-server on 127.0.0.1 with 50 requests in
flight (pipelined as in a gateway under load). Figures are CPU microseconds of this
process per request (Redis's own CPU is not counted). A benchmark, not a test: it
prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from redis_server import RedisServer

from meshgate.config.compile import compile_snapshot
from meshgate.config.compile.lookup import find_match
from meshgate.config.loader import load_paths
from meshgate.filters.plans import PlanEnforcement
from meshgate.http.headers import Headers
from meshgate.plans.counters import RedisPlanCounters
from meshgate.proxy.context import RequestContext, ResponseHead
from meshgate.ratelimit.redis_counters import RedisCounters


def setup():
    snap = compile_snapshot(load_paths([ROOT / "examples" / "plans"]).resources)
    m = find_match(snap, 8190, "h", "/search")
    (f,) = [f for f in m.rule.filters if isinstance(f, PlanEnforcement)]
    return f, m.rule


def ctx_for(rule) -> RequestContext:
    ctx = RequestContext("GET", "/search", "/search", "", Headers(), "h", "h", "http", "1.1",
                         "10.0.0.1", 1, 8190, "r", 0.0)
    ctx.rule, ctx.consumer = rule, "acme"
    return ctx


def cpu() -> float:
    return time.process_time()


def bench_memory(f, rule, n: int) -> float:
    head = ResponseHead(200, "OK", Headers())
    start = cpu()
    for _ in range(n):
        ctx = ctx_for(rule)
        f.on_request(ctx)
        f.on_response(ctx, head)
    return (cpu() - start) / n * 1e6


def bench_baseline(rule, n: int) -> float:
    start = cpu()
    for _ in range(n):
        ctx_for(rule)
    return (cpu() - start) / n * 1e6


async def bench_redis(f, rule, n: int, url: str) -> float:
    redis = RedisCounters(url, timeout=1.0)
    await redis.start()
    f.counters = RedisPlanCounters(redis)
    head = ResponseHead(200, "OK", Headers())

    async def one():
        ctx = ctx_for(rule)
        await f.on_request(ctx)
        f.on_response(ctx, head)

    async def idle():
        ctx_for(rule)
        await asyncio.sleep(0)

    async def run(coro) -> float:
        start = cpu()
        for _ in range(n // 50):
            await asyncio.gather(*(coro() for _ in range(50)))
        return (cpu() - start) / (n // 50 * 50) * 1e6

    await asyncio.gather(*(one() for _ in range(200)))  # warm up
    harness = await run(idle)  # the tasks gather makes, which a gateway does not pay for
    took = await run(one) - harness
    redis.stop()
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    f, rule = setup()
    base = bench_baseline(rule, args.requests)
    mem = bench_memory(f, rule, args.requests)
    print(f"memory counters: {mem - base:6.1f} us CPU per request (filter + usage)")
    with RedisServer() as server:
        red = asyncio.run(bench_redis(f, rule, args.requests, server.url))
    print(f"redis counters:  {red:6.1f} us CPU per request (50 in flight, pipelined)")


if __name__ == "__main__":
    main()
