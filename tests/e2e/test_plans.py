"""Plans, quotas and usage end to end: real `meshgate gateway` processes in front of a
real echo upstream, API-key Consumers on Plans, and a real `redis-server` for quotas
that outlive a gateway.

What a user notices: a consumer with a quota of N gets N responses then 429 with
Retry-After and X-Quota-* (flag QE in the access log); another consumer is not
affected; anonymous requests are refused by authentication and never counted; a heavy
route costs more; with Redis, the count goes on in a new gateway process after the old
one stopped; GET /usage shows requests and denials per consumer and route, summed over
--workers.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from harness import (
    EchoServer,
    Gateway,
    free_port,
    gateway_doc,
    prefix_rule,
    route_doc,
    service_docs,
    serving,
)
from redis_server import RedisServer

GROUP = "gateway.networking.k8s.io"
# Test-only credentials.
KEYS = {"acme": "test-only-plans-key-acme-01", "globex": "test-only-plans-key-globex-02"}


def config(port: int, echo: EchoServer, quota: int, rate: list | None = None) -> list[dict]:
    policy = {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "SecurityPolicy",
        "metadata": {"name": "keys", "namespace": "default"},
        "spec": {
            "targetRefs": [{"group": GROUP, "kind": "Gateway", "name": "gw"}],
            "apiKeyAuth": {"credentialRefs": [{"name": "keys"}], "extractFrom": [{"headers": ["x-api-key"]}]},
        },
    }
    plan = {
        "apiVersion": "meshgate.dev/v1alpha1",
        "kind": "Plan",
        "metadata": {"name": "small", "namespace": "default"},
        "spec": {
            "rateLimits": rate or [],
            "quotas": [{"requests": quota, "period": "Month"}],
            "routeCosts": [{"route": "reports", "cost": 2}],
        },
    }
    consumers = [
        {"apiVersion": "meshgate.dev/v1alpha1", "kind": "Consumer",
         "metadata": {"name": name, "namespace": "default"},
         "spec": {"apiKeys": [{"clientID": name}], "plan": {"name": "small"}}}
        for name in KEYS
    ]
    return [
        gateway_doc(port),
        *service_docs("echo", [echo]),
        route_doc("orders", [prefix_rule("/orders", "echo")]),
        route_doc("reports", [prefix_rule("/reports", "echo")]),
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys", "namespace": "default"},
         "stringData": KEYS},
        policy,
        plan,
        *consumers,
    ]


def served(docs: list[dict], port: int, *args: str, workers: int | None = None):
    return serving(docs, port, *args, workers=workers, access_log=True)


def get(gw: Gateway, path: str, consumer: str | None = "acme", fresh: bool = False) -> httpx.Response:
    headers = {"x-api-key": KEYS[consumer]} if consumer else {}
    if fresh:  # a new connection, so SO_REUSEPORT may pick any worker
        headers["connection"] = "close"
    return httpx.get(gw.base + path, headers=headers, timeout=5)


def access_records(gw: Gateway) -> list[dict]:
    def read():
        text = gw.access_log.read_text() if gw.access_log.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    deadline = time.monotonic() + 5
    records = read()
    while not any(r.get("response_flags") == "QE" for r in records) and time.monotonic() < deadline:
        time.sleep(0.05)  # the access log is flushed a few times a second
        records = read()
    return records


def metric(gw: Gateway, name: str, **labels: str) -> float:
    total = 0.0
    for line in gw.admin("/metrics").text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def away_from_month_end() -> None:
    """Quotas here are monthly: keep a test's requests inside one month (UTC)."""
    now = time.time()
    tomorrow = time.gmtime(now + 86400)
    if tomorrow.tm_mday == 1:
        left = 86400 - now % 86400
        if left < 30:
            time.sleep(left + 0.5)


@pytest.fixture(scope="module")
def echo():
    with EchoServer() as server:
        yield server


@pytest.fixture
def redis():
    with RedisServer() as server:
        yield server


def test_a_quota_of_n_gives_n_then_429_and_usage_shows_it(echo):
    away_from_month_end()
    port = free_port()
    with served(config(port, echo, quota=3), port) as gw:
        for left in (2, 1, 0):
            r = get(gw, "/orders/1")
            assert r.status_code == 200, r.text
            assert (r.headers["x-quota-limit"], r.headers["x-quota-remaining"]) == ("3", str(left))
            assert 0 < int(r.headers["x-quota-reset"]) <= 31 * 86400
        echo.mark()
        r = get(gw, "/orders/1")
        assert (r.status_code, r.text) == (429, "quota exceeded")
        assert r.headers["x-quota-remaining"] == "0"
        assert r.headers["retry-after"] == r.headers["x-quota-reset"]
        assert echo.count() == 0  # never reached the upstream
        # another consumer on the same plan is not affected; a heavy route costs 2
        r = get(gw, "/reports/q1", consumer="globex")
        assert r.status_code == 200 and r.headers["x-quota-remaining"] == "1"
        assert get(gw, "/reports/q1", consumer="globex").status_code == 429  # 2 do not fit in 1
        assert get(gw, "/orders/2", consumer="globex").status_code == 200
        # anonymous: refused by authentication, counted nowhere
        assert get(gw, "/orders/1", consumer=None).status_code == 401

        flags = [(r["consumer"], r["status"], r["response_flags"]) for r in access_records(gw)]
        assert ("acme", 429, "QE") in flags
        assert metric(gw, "meshgate_quota_decisions_total", result="exceeded") == 2
        assert metric(gw, "meshgate_quota_decisions_total", result="allowed") == 5

        usage = gw.admin_json("/usage")
        acme = usage["consumers"]["default/acme"]
        assert acme["plan"] == "default/small"
        orders = acme["routes"]["default/orders"]
        assert orders["requests"] == 4 and orders["responses"]["2xx"] == 3
        assert orders["denied"]["quota"] == 1
        assert acme["quota"]["Month"]["used"] == 3 and acme["quota"]["Month"]["remaining"] == 0
        globex = usage["consumers"]["default/globex"]
        assert globex["routes"]["default/reports"]["denied"]["quota"] == 1
        assert globex["quota"]["Month"]["used"] == 3
        assert set(usage["consumers"]) == {"default/acme", "default/globex"}


def test_a_plan_rate_limit_answers_429_rl_without_taking_quota(echo):
    away_from_month_end()
    port = free_port()
    with served(config(port, echo, quota=100, rate=[{"requests": 2, "unit": "Hour"}]), port) as gw:
        assert [get(gw, "/orders").status_code for _ in range(3)] == [200, 200, 429]
        r = get(gw, "/orders")
        assert r.headers["x-ratelimit-limit"] == "2, 2;w=3600" and int(r.headers["retry-after"]) >= 1
        assert "x-quota-limit" not in r.headers
        usage = gw.admin_json("/usage")["consumers"]["default/acme"]
        assert usage["routes"]["default/orders"]["denied"]["rate_limit"] == 2
        assert usage["quota"]["Month"]["used"] == 2


def test_quotas_in_redis_survive_a_gateway_restart(echo, redis):
    away_from_month_end()
    port = free_port()
    docs = config(port, echo, quota=5)
    with served(docs, port, "--redis-url", redis.url) as gw:
        assert [get(gw, "/orders").status_code for _ in range(3)] == [200] * 3
        pid = gw.pid
    # a new gateway process on the same Redis: the month's count goes on
    with served(docs, port, "--redis-url", redis.url) as gw:
        assert gw.pid != pid
        r = get(gw, "/orders")
        assert r.status_code == 200 and r.headers["x-quota-remaining"] == "1"
        assert get(gw, "/orders").status_code == 200
        assert get(gw, "/orders").status_code == 429
        acme = gw.admin_json("/usage")["consumers"]["default/acme"]
        assert acme["quota"]["Month"]["used"] == 5  # read from Redis
        assert acme["routes"]["default/orders"]["requests"] == 3  # counted since this start


def test_usage_is_summed_over_workers_and_the_redis_quota_is_exact(echo, redis):
    away_from_month_end()
    port = free_port()
    with served(config(port, echo, quota=10), port, "--redis-url", redis.url, workers=2) as gw:
        statuses = [get(gw, "/orders", fresh=True).status_code for _ in range(16)]
        assert statuses.count(200) == 10 and statuses.count(429) == 6
        usage = gw.admin_json("/usage")
        assert usage["workers"] == 2
        orders = usage["consumers"]["default/acme"]["routes"]["default/orders"]
        assert (orders["requests"], orders["denied"]["quota"]) == (16, 6)
        assert usage["consumers"]["default/acme"]["quota"]["Month"]["used"] == 10
