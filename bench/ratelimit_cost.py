#!/usr/bin/env python3
"""What BackendTrafficPolicy `rateLimit` costs per request, two ways.

    .venv/bin/python bench/ratelimit_cost.py [--duration 10] [--connections 50] [--skip-e2e]

1. The filter alone, in process: ``on_request`` of a local limit (one bucket; a
   Distinct header with 4096 values) and of a global limit against a real
   redis-server on 127.0.0.1 (one round trip; awaited one request at a time, so this
   is mostly Redis's and the loopback's latency, not CPU).
2. End to end (best of --rounds), as bench/run.py measures (requests per proxy CPU-second; the proxy on
   its own CPU, wrk and the upstream on the others): a `meshgate gateway` with one
   route and no policy, then with a local limit, then with a global one (limits high
   enough that every request passes, so every request pays the full path). Redis's
   own CPU is not the proxy's and is not counted.

A benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from peers import find_wrk, free_port, pin_cpus
from policy_cost import (
    add_options,
    compiled_filter,
    measure_gateway,
    print_relative,
    report,
    request_to,
)
from redis_server import RedisServer
from upstream import start_upstream

BIG = 1_000_000_000
LUA_USERS = """
local i = 0
request = function()
  i = (i + 1) %% 4096
  return wrk.format("GET", "/", {["X-User"] = "user-" .. i})
end
"""

CASES = {
    "no policy": None,
    "local, 1 bucket": {"local": {"rules": [{"limit": {"requests": BIG, "unit": "Second"}}]}},
    "local, Distinct x-user": {"local": {"rules": [{
        "clientSelectors": [{"headers": [{"name": "x-user", "type": "Distinct"}]}],
        "limit": {"requests": BIG, "unit": "Second"}}]}},
    "global, 1 counter": {"global": {"rules": [{"limit": {"requests": BIG, "unit": "Second"}}]}},
    "global, Distinct x-user": {"global": {"rules": [{
        "clientSelectors": [{"headers": [{"name": "x-user", "type": "Distinct"}]}],
        "limit": {"requests": BIG, "unit": "Second"}}]}},
}


def policy(rate_limit: dict | None) -> tuple[str, str, dict] | None:
    if rate_limit is None:
        return None
    return "BackendTrafficPolicy", "limits", {"rateLimit": rate_limit}


# --------------------------------------------------------------------------- the filter alone


def filter_alone(redis_url: str) -> list[tuple[str, float]]:
    from meshgate.ratelimit.redis_counters import configure

    configure(redis_url, timeout=1.0, serving=False)
    rows = []
    for name, rl in CASES.items():
        if rl is None:
            continue
        configure(redis_url, timeout=1.0, serving=False)
        f = compiled_filter(policy(rl))
        ctxs = [request_to([("x-user", f"user-{i}")]) for i in range(4096)]
        if name.startswith("local"):
            n = 50_000
            t0 = time.perf_counter()
            for i in range(n):
                ctx = ctxs[i & 4095]
                ctx.response_headers_to_add = None
                f.on_request(ctx)
            rows.append((name, (time.perf_counter() - t0) / n * 1e6))
        else:
            async def loop(f=f, ctxs=ctxs) -> float:
                for service in f.services():
                    await service.start()
                n = 5000
                t0 = time.perf_counter()
                for i in range(n):
                    ctx = ctxs[i & 4095]
                    ctx.response_headers_to_add = None
                    await f.on_request(ctx)
                return (time.perf_counter() - t0) / n * 1e6

            import uvloop

            rows.append((name + " (latency)", uvloop.run(loop())))
    return rows


# --------------------------------------------------------------------------- end to end


def end_to_end(args, redis_url: str) -> list[tuple[str, float, float, int]]:
    tmp = Path(tempfile.mkdtemp(prefix="meshgate-rl-bench-"))
    pin_cpus()
    up_port = free_port()
    upstream, _ = start_upstream(tmp / "upstream", up_port)
    users = tmp / "users.lua"
    users.write_text(LUA_USERS)
    best: dict[str, tuple[str, float, float, int]] = {}
    try:
      for _round in range(args.rounds):
        for name, rl in CASES.items():
            workdir = tmp / f"mg-{_round}-{len(best)}-{name.replace(' ', '_').replace(',', '')}"
            workdir.mkdir()
            # every case sends the same requests (X-User cycling)
            res, cpu = measure_gateway(workdir, up_port, policy(rl), args, ("--redis-url", redis_url), script=users)
            row = report(name, res, cpu, 26)
            if name not in best or row[1] > best[name][1]:
                best[name] = row
    finally:
        upstream.stop()
    return [best[name] for name in CASES if name in best]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(ap)
    ap.add_argument("--rounds", type=int, default=3, help="run every case this often; keep the best")
    args = ap.parse_args()
    with RedisServer() as redis:
        print("filter alone (on_request, mean):")
        for label, us in filter_alone(redis.url):
            print(f"  {label:34s} {us:8.1f} us")
        if args.skip_e2e or not find_wrk():
            return 0
        print(f"end to end (wrk -t1 -c{args.connections} -d{args.duration}s, meshgate 1 worker on its own CPU):")
        rows = end_to_end(args, redis.url)
    print_relative(rows, 26)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
