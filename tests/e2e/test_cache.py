"""CachePolicy end to end: a real ``meshgate gateway`` in front of a real echo upstream.
Hits never reach the upstream, concurrent misses reach it once, Vary keeps variants
apart, the admin API purges, and what a hit costs the gateway against proxying
(gateway CPU per request, printed)."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from harness import (
    EchoServer,
    Gateway,
    free_port,
    gateway_doc,
    policy_doc,
    prefix_rule,
    route_doc,
    service_docs,
)

# The echo server sets response fields named in this request header.
CACHEABLE = {"x-echo-set-header": "Cache-Control:max-age=60,Vary:Accept-Language"}


def cache_policy(route: str = "cached", **spec) -> dict:
    return policy_doc("CachePolicy", "cache", spec, route)


@pytest.fixture(scope="module")
def env():
    echo = EchoServer().start()
    port = free_port()
    docs = [
        gateway_doc(port),
        *service_docs("echo", [echo]),
        route_doc("cached", [prefix_rule("/cached", "echo")]),
        route_doc("plain", [prefix_rule("/plain", "echo")]),
        cache_policy(),
    ]
    gateway = Gateway(docs).start()
    try:
        yield gateway, echo, port
    finally:
        gateway.stop()
        echo.stop()


def upstream_hits(echo: EchoServer, path: str) -> int:
    return sum(1 for r in echo.completed() if r.get("path") == path)


def test_a_hit_is_answered_by_the_gateway_alone(env):
    gateway, echo, port = env
    with httpx.Client(base_url=gateway.url(port)) as client:
        first = client.get("/cached/a", headers=CACHEABLE)
        second = client.get("/cached/a", headers=CACHEABLE)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.content == first.content and "age" in second.headers
    assert upstream_hits(echo, "/cached/a") == 1


def test_vary_keeps_one_entry_per_language(env):
    gateway, echo, port = env
    with httpx.Client(base_url=gateway.url(port)) as client:
        for lang in ("en", "fr", "en", "fr"):
            client.get("/cached/v", headers={**CACHEABLE, "accept-language": lang})
    assert upstream_hits(echo, "/cached/v") == 2


def test_concurrent_misses_reach_the_upstream_once(env):
    gateway, echo, port = env
    path = "/cached/slow?delay=300ms"

    def get(_):
        return httpx.get(gateway.url(port, path), headers=CACHEABLE, timeout=10).headers["x-cache"]

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(get, range(10)))
    assert sorted(results) == ["HIT"] * 9 + ["MISS"]
    assert upstream_hits(echo, path) == 1


def test_the_admin_api_purges(env):
    gateway, echo, port = env
    with httpx.Client(base_url=gateway.url(port)) as client:
        client.get("/cached/p/1", headers=CACHEABLE)
        assert client.get("/cached/p/1", headers=CACHEABLE).headers["x-cache"] == "HIT"
        r = httpx.post(gateway.admin_url("/cache/purge"), json={"prefix": "/cached/p/"})
        assert (r.status_code, r.json()) == (200, {"purged": 1})
        assert client.get("/cached/p/1", headers=CACHEABLE).headers["x-cache"] == "MISS"
    assert upstream_hits(echo, "/cached/p/1") == 2


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_what_a_hit_costs_against_proxying(env):
    gateway, _, port = env
    n = 2000

    def per_request(path: str) -> float:
        with httpx.Client(base_url=gateway.url(port)) as client:
            client.get(path, headers=CACHEABLE)
            before = cpu_seconds(gateway.pid)
            for _ in range(n):
                client.get(path, headers=CACHEABLE)
            return (cpu_seconds(gateway.pid) - before) / n

    time.sleep(0.3)
    hit = per_request("/cached/cost")
    proxied = per_request("/plain/cost")
    print(f"gateway CPU per request: cache hit {hit * 1e6:.0f} us, proxied {proxied * 1e6:.0f} us")
    assert hit < proxied
