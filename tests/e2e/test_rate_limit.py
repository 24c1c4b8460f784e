"""BackendTrafficPolicy rateLimit, end to end: real `meshgate gateway` processes in front
of a real echo upstream, and a real `redis-server` for global limits (killed and
restarted mid-test for the outage cases).

What a user notices: the exact number of requests that pass, 429 with Retry-After and
X-RateLimit-* headers, the X-RateLimit-* headers on allowed responses too, flag RL in
the access log, the decisions in /metrics, one log line per Redis outage, fail open
or closed while Redis is away, and recovery without a restart.
"""

from __future__ import annotations

import json
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
    serving,
    wait_until,
)
from redis_server import RedisServer



def limit_policy(rate_limit: dict, name: str = "limits") -> dict:
    return policy_doc("BackendTrafficPolicy", name, {"rateLimit": rate_limit})


def local(*rules: dict) -> dict:
    return {"type": "Local", "local": {"rules": list(rules)}}


def global_(*rules: dict) -> dict:
    return {"type": "Global", "global": {"rules": list(rules)}}


def rule(requests: int, unit: str = "Hour", selectors: list | None = None) -> dict:
    out: dict = {"limit": {"requests": requests, "unit": unit}}
    if selectors:
        out["clientSelectors"] = selectors
    return out


def config(port: int, echo: EchoServer, rate_limit: dict) -> list[dict]:
    return [
        gateway_doc(port),
        *service_docs("svc", [echo]),
        route_doc("route", [prefix_rule("/", "svc")]),
        limit_policy(rate_limit),
    ]


def served(docs: list[dict], port: int, *args: str, workers: int | None = None):
    return serving(docs, port, *args, workers=workers, access_log=True)


def access_records(gw: Gateway) -> list[dict]:
    text = gw.access_log.read_text() if gw.access_log.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def metric(gw: Gateway, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in gw.admin("/metrics").text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def fresh_get(url: str, headers: dict | None = None) -> httpx.Response:
    """One request on a new connection (so SO_REUSEPORT may pick any worker)."""
    with httpx.Client(timeout=5) as client:
        return client.get(url, headers={**(headers or {}), "connection": "close"})


def away_from_hour_boundary() -> None:
    """Global counters are fixed windows: keep a test's requests inside one hour."""
    left = 3600 - time.time() % 3600
    if left < 15:
        time.sleep(left + 0.5)


@pytest.fixture
def redis():
    with RedisServer() as server:
        yield server


# --- local -----------------------------------------------------------------------------


def test_local_limit_is_exact_with_one_worker_and_says_so(echo):
    port = free_port()
    with served(config(port, echo, local(rule(5))), port) as gw:
        with httpx.Client(timeout=5) as client:
            responses = [client.get(gw.base + f"/r{i}") for i in range(8)]
        time.sleep(0.3)  # the access log is flushed a few times a second
        records = wait_until(lambda: len(r := access_records(gw)) >= 8 and r, 5, what="access log")

        assert [r.status_code for r in responses] == [200] * 5 + [429] * 3
        assert [r.headers["x-ratelimit-remaining"] for r in responses] == ["4", "3", "2", "1", "0", "0", "0", "0"]
        for r in responses:
            assert r.headers["x-ratelimit-limit"] == "5, 5;w=3600"
            assert 0 <= int(r.headers["x-ratelimit-reset"]) <= 3600
        limited = responses[-1]
        assert limited.text == "local_rate_limited"
        # One token comes back every 720 s (5 an hour).
        assert 700 <= int(limited.headers["retry-after"]) <= 720
        assert "retry-after" not in responses[0].headers

        by_path = {r["path"]: r for r in records}
        assert [by_path[f"/r{i}"]["response_flags"] for i in range(8)] == [""] * 5 + ["RL"] * 3
        assert by_path["/r7"]["status"] == 429
        assert echo.count() == 5  # limited requests never reach the upstream

        assert metric(gw, "meshgate_ratelimit_decisions_total", route="default/route", result="allowed", type="local") == 5
        assert metric(gw, "meshgate_ratelimit_decisions_total", route="default/route", result="limited", type="local") == 3
        assert metric(gw, "meshgate_local_replies_total", flag="RL") == 3


def test_local_distinct_header_gives_each_value_its_own_bucket(echo):
    port = free_port()
    selectors = [{"headers": [{"name": "x-user", "type": "Distinct"}]}]
    with served(config(port, echo, local(rule(2, selectors=selectors))), port) as gw:
        with httpx.Client(timeout=5) as client:
            alice = [client.get(gw.base, headers={"x-user": "alice"}).status_code for _ in range(3)]
            bob = [client.get(gw.base, headers={"x-user": "bob"}).status_code for _ in range(3)]
            anonymous = [client.get(gw.base) for _ in range(5)]
    assert alice == [200, 200, 429]
    assert bob == [200, 200, 429]
    # No header: the rule does not select the request (Envoy), so no limit and no headers.
    assert [r.status_code for r in anonymous] == [200] * 5
    assert "x-ratelimit-limit" not in anonymous[0].headers


def test_local_limit_with_two_workers_is_per_worker(echo):
    """docs/rate-limits.md: each worker process has its own buckets, so the gateway
    admits up to workers x limit in all (not limit, and not limit / workers)."""
    port = free_port()
    with served(config(port, echo, local(rule(3))), port, workers=2) as gw:
        # 60 new connections, spread over both workers by the kernel (SO_REUSEPORT);
        # each worker gets ~30 of them, far more than its 3 tokens.
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: fresh_get(gw.base).status_code, range(60)))
        assert statuses.count(200) == 6, statuses
        assert statuses.count(429) == 54
        # Summed over both workers by worker 0's /metrics.
        assert metric(gw, "meshgate_ratelimit_decisions_total", result="allowed", type="local") == 6
        assert metric(gw, "meshgate_ratelimit_decisions_total", result="limited", type="local") == 54


# --- global ----------------------------------------------------------------------------


def test_global_limit_is_exact_across_two_gateway_processes(echo, redis):
    away_from_hour_boundary()
    port_a, port_b = free_port(), free_port()
    limits = global_(rule(10))
    with served(config(port_a, echo, limits), port_a, "--redis-url", redis.url) as a, served(
        config(port_b, echo, limits), port_b, "--redis-url", redis.url
    ) as b:
        urls = [a.base, b.base] * 20
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(fresh_get, urls))
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) == 10, statuses
        assert statuses.count(429) == 30
        served_by_a = [r.status_code for r in responses[0::2]]
        served_by_b = [r.status_code for r in responses[1::2]]
        assert 200 in served_by_a and 200 in served_by_b or statuses.count(200) == 10

        limited = next(r for r in responses if r.status_code == 429)
        assert limited.headers["x-ratelimit-limit"] == "10, 10;w=3600"
        assert limited.headers["x-ratelimit-remaining"] == "0"
        reset = int(limited.headers["x-ratelimit-reset"])
        assert 1 <= reset <= 3600
        assert int(limited.headers["retry-after"]) == reset  # the window's end
        ok = next(r for r in responses if r.status_code == 200)
        assert 0 <= int(ok.headers["x-ratelimit-remaining"]) <= 9

        allowed = sum(
            metric(gw, "meshgate_ratelimit_decisions_total", result="allowed", type="global") for gw in (a, b)
        )
        assert allowed == 10
        time.sleep(0.3)
        flags = [r["response_flags"] for gw in (a, b) for r in access_records(gw)]
        assert flags.count("RL") == 30


def test_global_distinct_header_and_cost(echo, redis):
    away_from_hour_boundary()
    port = free_port()
    limits = global_(
        {
            **rule(5, selectors=[{"headers": [{"name": "x-api-key", "type": "Distinct"}]}]),
            "cost": {"request": {"from": "Number", "number": 2}},
        }
    )
    with served(config(port, echo, limits), port, "--redis-url", redis.url) as gw:
        with httpx.Client(timeout=5) as client:
            k1 = [client.get(gw.base, headers={"x-api-key": "k1"}) for _ in range(4)]
            k2 = [client.get(gw.base, headers={"x-api-key": "k2"}).status_code for _ in range(2)]
            none = [client.get(gw.base).status_code for _ in range(4)]
    # 5 per hour at 2 a request: the third request would make 6.
    assert [r.status_code for r in k1] == [200, 200, 429, 429]
    assert [r.headers["x-ratelimit-remaining"] for r in k1[:2]] == ["3", "1"]
    assert k2 == [200, 200]
    assert none == [200] * 4


def test_global_fail_open_while_redis_is_down_then_recovers(echo, redis):
    away_from_hour_boundary()
    port = free_port()
    with served(config(port, echo, global_(rule(3))), port, "--redis-url", redis.url) as gw:
        with httpx.Client(timeout=5) as client:
            before = [client.get(gw.base).status_code for _ in range(4)]
            assert before == [200, 200, 200, 429]

            redis.kill()
            during = [client.get(gw.base) for _ in range(20)]
            assert [r.status_code for r in during] == [200] * 20  # fail open
            assert "x-ratelimit-limit" not in during[-1].headers

            redis.start()  # same port, empty: the hour's counters start again
            wait_until(
                lambda: client.get(gw.base).status_code == 429, 10, 0.1, "limits enforced again"
            )
        log = gw.stderr_text()
        assert log.count("unavailable") == 1, log  # one line per outage, not per request
        assert log.count("available again") == 1, log
        assert metric(gw, "meshgate_ratelimit_redis_errors_total") >= 1
        assert metric(gw, "meshgate_ratelimit_decisions_total", result="failed_open") >= 19


def test_global_fail_closed_while_redis_is_down_then_recovers(echo, redis):
    away_from_hour_boundary()
    port = free_port()
    args = ("--redis-url", redis.url, "--rate-limit-fail-closed")
    with served(config(port, echo, global_(rule(100))), port, *args) as gw:
        with httpx.Client(timeout=5) as client:
            assert client.get(gw.base + "/before").status_code == 200
            redis.kill()
            during = [client.get(gw.base + "/during") for _ in range(10)]
            assert [r.status_code for r in during] == [500] * 10
            redis.start()
            wait_until(lambda: client.get(gw.base + "/after").status_code == 200, 10, 0.1, "recovery")
        time.sleep(0.3)
        flags = {r["path"]: r["response_flags"] for r in access_records(gw)}
        assert flags["/during"] == "RLSE"
        assert flags["/after"] == ""
        assert metric(gw, "meshgate_ratelimit_decisions_total", result="failed_closed") >= 10
        assert gw.stderr_text().count("unavailable") == 1


def test_global_rate_limit_without_redis_url_is_refused_at_start(echo):
    port = free_port()
    gw = Gateway(config(port, echo, global_(rule(3))))
    try:
        with pytest.raises(RuntimeError, match="--redis-url"):
            gw.start()
    finally:
        gw.cleanup()
