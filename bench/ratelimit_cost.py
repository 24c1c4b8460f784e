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
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from jwt_cost import run_wrk  # noqa: E402
from peers import CPUS, find_wrk, free_port, http_status, launch, wait_ready  # noqa: E402
from redis_server import RedisServer  # noqa: E402
from upstream import start_upstream  # noqa: E402

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


def config_docs(port: int, upstream_port: int, rate_limit: dict | None) -> list[dict]:
    docs = [
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "bench"},
         "spec": {"gatewayClassName": "meshgate", "listeners": [{"name": "http", "protocol": "HTTP", "port": port}]}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "bench"},
         "spec": {"parentRefs": [{"name": "bench"}], "rules": [{
             "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
             "backendRefs": [{"group": "gateway.envoyproxy.io", "kind": "Backend", "name": "upstream"}]}]}},
        {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "Backend", "metadata": {"name": "upstream"},
         "spec": {"endpoints": [{"ip": {"address": "127.0.0.1", "port": upstream_port}}]}},
    ]
    if rate_limit is not None:
        docs.append({"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "BackendTrafficPolicy",
                     "metadata": {"name": "limits"},
                     "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                                              "name": "bench"}], "rateLimit": rate_limit}})
    return docs


# --------------------------------------------------------------------------- the filter alone


def filter_alone(redis_url: str) -> list[tuple[str, float]]:
    from meshgate.config.compile import compile_snapshot
    from meshgate.config.compile.lookup import find_match
    from meshgate.config.loader import load_texts
    from meshgate.http.headers import Headers
    from meshgate.proxy.context import RequestContext
    from meshgate.ratelimit.redis_counters import configure

    configure(redis_url, timeout=1.0, serving=False)
    rows = []
    for name, rl in CASES.items():
        if rl is None:
            continue
        docs = config_docs(80, 9, rl)
        configure(redis_url, timeout=1.0, serving=False)
        snap = compile_snapshot(load_texts([("b.yaml", yaml.safe_dump_all(docs))]).resources)
        f = find_match(snap, 80, "x", "/").rule.filters[0]
        ctxs = [
            RequestContext("GET", "/", "/", "", Headers([("host", "x"), ("x-user", f"user-{i}")]),
                           "x", "x", "http", "1.1", "127.0.0.1", 1, 80, "r", 0.0)
            for i in range(4096)
        ]
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
    ncpu = len(os.sched_getaffinity(0))
    if ncpu >= 2:
        cpus = sorted(os.sched_getaffinity(0))
        CPUS["proxy"], CPUS["load"] = {cpus[-1]}, set(cpus[:-1])
    up_port = free_port()
    upstream, _ = start_upstream(tmp / "upstream", up_port)
    users = tmp / "users.lua"
    users.write_text(LUA_USERS)
    best: dict[str, tuple[str, float, float, int]] = {}
    try:
      for _round in range(args.rounds):
        for name, rl in CASES.items():
            port, admin = free_port(), free_port()
            workdir = tmp / f"mg-{_round}-{len(best)}-{name.replace(' ', '_').replace(',', '')}"
            workdir.mkdir()
            (workdir / "c.yaml").write_text(yaml.safe_dump_all(config_docs(port, up_port, rl)))
            argv = [str(ROOT / ".venv/bin/meshgate"), "gateway", "--config", str(workdir / "c.yaml"),
                    "--bind", "127.0.0.1", "--admin-port", str(admin), "--redis-url", redis_url]
            proc = launch("meshgate", argv, workdir, role="proxy")
            try:
                wait_ready(proc, lambda a=admin: http_status(f"http://127.0.0.1:{a}/ready") == 200, 30, "ready")
                url = f"http://127.0.0.1:{port}/"
                script = users  # every case sends the same requests (X-User cycling)
                run_wrk(url, args, script=script, duration=2)  # warm-up
                cpu0 = proc.cpu_seconds()
                res = run_wrk(url, args, script=script)
                cpu = proc.cpu_seconds() - cpu0
                if name not in best or res.requests / cpu > best[name][1]:
                    best[name] = (name, res.requests / cpu, res.rps, res.non_2xx)
                print(f"  {name:26s} {res.requests / cpu:9.0f} req/CPU-s  {res.rps:8.0f} rps"
                      f"  non-2xx {res.non_2xx}", flush=True)
            finally:
                proc.stop()
    finally:
        upstream.stop()
    return [best[name] for name in CASES if name in best]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3, help="run every case this often; keep the best")
    ap.add_argument("--skip-e2e", action="store_true")
    args = ap.parse_args()
    with RedisServer() as redis:
        print("filter alone (on_request, mean):")
        for label, us in filter_alone(redis.url):
            print(f"  {label:34s} {us:8.1f} us")
        if args.skip_e2e or not find_wrk():
            return 0
        print(f"end to end (wrk -t1 -c{args.connections} -d{args.duration}s, meshgate 1 worker on its own CPU):")
        rows = end_to_end(args, redis.url)
    base = rows[0][1]
    print("\nrelative to no policy:")
    for label, per_cpu, _, _ in rows[1:]:
        print(f"  {label:26s} {per_cpu / base:5.2f}x  ({1e6 / per_cpu - 1e6 / base:6.1f} us CPU per request)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
