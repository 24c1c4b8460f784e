"""Plans through compiled config: a Consumer's quota (N requests, then 429 QE with
Retry-After until the UTC period ends and X-Quota-*), periods turning over at UTC
midnight and month ends under a fake clock, route costs (heavy and free rules), plan
rate limits (429 RL, X-RateLimit-*, no quota taken), anonymous requests and consumers
without a plan untouched, usage per consumer and route, config errors with their
field paths, where the stage sits in the filter chain, and Redis outages."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import yaml

from meshgate.config.compile import compile_snapshot
from meshgate.config.compile.lookup import find_match
from meshgate.config.errors import ConfigInvalid
from meshgate.config.loader import load_texts
from meshgate.filters import plans as plans_filter
from meshgate.filters.plans import PlanEnforcement
from meshgate.http.headers import Headers
from meshgate.plans import counters as plan_counters_module
from meshgate.plans.counters import MemoryCounters, RedisPlanCounters
from meshgate.plans.usage import QUOTA_DECISIONS, USAGE, document, state
from meshgate.proxy.context import LocalReply, RequestContext, ResponseHead
from meshgate.ratelimit import redis_counters
from meshgate.ratelimit.redis_counters import RedisCounters

PORT = 8190
KEYS = {"acme": "acme-key", "initech": "initech-key", "nobody": "nobody-key"}


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def docs(plans: list[dict], consumers: dict[str, str | None], extra: list[dict] = ()) -> list[dict]:
    """A Gateway with routes `api` (rules: default, `heavy`, `free`) and `open` (no
    policy), API keys on `api`, the Plans and Consumers (name -> plan) given."""
    backend = [{"group": "gateway.envoyproxy.io", "kind": "Backend", "name": "b", "port": 9}]
    out = [
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "gw"},
         "spec": {"gatewayClassName": "meshgate",
                  "listeners": [{"name": "http", "protocol": "HTTP", "port": PORT}]}},
        {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "Backend", "metadata": {"name": "b"},
         "spec": {"endpoints": [{"ip": {"address": "127.0.0.1", "port": 9}}]}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "api"},
         "spec": {"parentRefs": [{"name": "gw"}], "rules": [
             {"name": "heavy", "matches": [{"path": {"type": "PathPrefix", "value": "/heavy"}}],
              "backendRefs": backend},
             {"name": "free", "matches": [{"path": {"type": "Exact", "value": "/status"}}],
              "backendRefs": backend},
             {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": backend},
         ]}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "open"},
         "spec": {"parentRefs": [{"name": "gw"}], "hostnames": ["open.example"], "rules": [
             {"backendRefs": backend}]}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys"}, "stringData": KEYS},
        {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "SecurityPolicy",
         "metadata": {"name": "keys"},
         "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "api"}],
                  "apiKeyAuth": {"credentialRefs": [{"name": "keys"}],
                                 "extractFrom": [{"headers": ["x-api-key"]}]}}},
    ]
    for plan in plans:
        out.append({"apiVersion": "meshgate.dev/v1alpha1", "kind": "Plan", **plan})
    for name, plan in consumers.items():
        spec: dict = {"apiKeys": [{"clientID": name}]}
        if plan is not None:
            spec["plan"] = {"name": plan}
        out.append({"apiVersion": "meshgate.dev/v1alpha1", "kind": "Consumer",
                    "metadata": {"name": name}, "spec": spec})
    return out + list(extra)


def compile_docs(documents: list[dict]):
    result = load_texts([("t.yaml", yaml.safe_dump_all(documents))])
    assert result.errors == [], [str(e) for e in result.errors]
    return compile_snapshot(result.resources)


def plan(name: str, **spec) -> dict:
    return {"metadata": {"name": name}, "spec": spec}


class Gateway:
    """The compiled snapshot and a request runner: request hooks in order, then the
    response hooks on the answer (200 when no filter answered), like the engine."""

    def __init__(self, documents: list[dict]) -> None:
        self.snapshot = compile_docs(documents)

    def send(self, path: str = "/", consumer: str | None = "acme", host: str = "api.example"):
        m = find_match(self.snapshot, PORT, host, path)
        assert m is not None
        headers = {"x-api-key": KEYS[consumer]} if consumer else {}
        ctx = RequestContext("GET", path, path, "", Headers.from_pairs(headers.items()), host, host,
                             "http", "1.1", "10.0.0.1", 40000, PORT, "r", 0.0)
        ctx.rule, ctx.match = m.rule, m
        reply = None
        for f in m.rule.filters:
            reply = f.on_request(ctx)
            if reply is not None:
                break
        return ctx, reply

    def answer(self, ctx, reply):
        status = reply.status if isinstance(reply, LocalReply) else 200
        if isinstance(reply, LocalReply) and reply.flag:
            ctx.flag = reply.flag
        head = ResponseHead(status, "", Headers(list(reply.headers) if reply else []))
        for f in ctx.rule.filters:
            f.on_response(ctx, head)
        for n, v in ctx.response_headers_to_add or ():
            head.headers.add(n, v)
        return head

    def get(self, path: str = "/", consumer: str | None = "acme", host: str = "api.example"):
        ctx, reply = self.send(path, consumer, host)
        return self.answer(ctx, reply)


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    """Counters in memory (no --redis-url), empty; usage and decisions from zero."""
    monkeypatch.setattr(redis_counters, "SETTINGS", redis_counters.Settings())
    monkeypatch.setattr(plan_counters_module, "_MEMORY", MemoryCounters())
    USAGE.clear()
    QUOTA_DECISIONS.clear()
    clock = [ts(2025, 6, 14, 12)]
    monkeypatch.setattr(plans_filter, "_clock", lambda: clock[0])
    return clock


def quota_gateway(**spec) -> Gateway:
    spec.setdefault("quotas", [{"requests": 3, "period": "Day"}])
    return Gateway(docs([plan("small", **spec)], {"acme": "small", "initech": "small", "nobody": None}))


# --- quotas ---------------------------------------------------------------------------------


def test_a_quota_of_n_admits_n_then_429_qe_until_utc_midnight(fresh):
    gw = quota_gateway()
    fresh[0] = ts(2025, 6, 14, 23, 59, 30)
    for left in (2, 1, 0):
        head = gw.get()
        assert head.status == 200
        assert head.headers.get("x-quota-limit") == "3"
        assert head.headers.get("x-quota-remaining") == str(left)
        assert head.headers.get("x-quota-reset") == "30"
    ctx, reply = gw.send()
    assert (reply.status, reply.flag, reply.body) == (429, "QE", b"quota exceeded")
    got = dict(reply.headers)
    assert got["retry-after"] == "30" and got["x-quota-reset"] == "30"
    assert (got["x-quota-limit"], got["x-quota-remaining"]) == ("3", "0")
    assert QUOTA_DECISIONS == {"allowed": 3, "exceeded": 1}
    # another consumer on the same plan has its own quota
    assert gw.get(consumer="initech").status == 200
    # the next UTC day starts from zero
    fresh[0] = ts(2025, 6, 15)
    head = gw.get()
    assert head.status == 200 and head.headers.get("x-quota-remaining") == "2"
    assert head.headers.get("x-quota-reset") == "86400"


def test_a_month_quota_runs_across_days_and_resets_on_the_first(fresh):
    gw = quota_gateway(quotas=[{"requests": 2, "period": "Month"}, {"requests": 10, "period": "Day"}])
    fresh[0] = ts(2025, 1, 30, 10)
    assert gw.get().status == 200
    fresh[0] = ts(2025, 1, 31, 23, 0)
    head = gw.get()
    # the tightest quota is reported: the month's (0 left), not the day's (9 left)
    assert head.headers.get("x-quota-remaining") == "0" and head.headers.get("x-quota-limit") == "2"
    ctx, reply = gw.send()
    assert reply.flag == "QE" and dict(reply.headers)["retry-after"] == "3600"
    fresh[0] = ts(2025, 2, 1)
    assert gw.get().status == 200


def test_route_costs_heavy_rules_take_more_and_free_ones_nothing(fresh):
    gw = quota_gateway(
        quotas=[{"requests": 12, "period": "Day"}],
        routeCosts=[{"route": "api", "rule": "heavy", "cost": 10}, {"route": "default/api", "rule": "free", "cost": 0}],
    )
    assert gw.get("/heavy/report").headers.get("x-quota-remaining") == "2"
    ctx, reply = gw.send("/heavy/report")  # 10 more do not fit
    assert reply.flag == "QE" and dict(reply.headers)["x-quota-remaining"] == "2"
    assert gw.get("/orders").headers.get("x-quota-remaining") == "1"
    assert gw.get("/orders").headers.get("x-quota-remaining") == "0"
    head = gw.get("/status")  # free: neither counted nor refused
    assert head.status == 200 and head.headers.get("x-quota-limit") is None


def test_a_route_cost_without_a_rule_covers_every_rule_of_the_route(fresh):
    gw = quota_gateway(
        quotas=[{"requests": 100, "period": "Day"}],
        routeCosts=[{"route": "api", "cost": 5}, {"route": "api", "rule": "free", "cost": 0}],
    )
    assert gw.get("/x").headers.get("x-quota-remaining") == "95"
    assert gw.get("/heavy").headers.get("x-quota-remaining") == "90"
    assert gw.get("/status").headers.get("x-quota-remaining") is None


# --- rate limits ------------------------------------------------------------------------------


def test_plan_rate_limits_answer_429_rl_and_take_no_quota(fresh):
    gw = quota_gateway(
        rateLimits=[{"requests": 2, "unit": "Second"}], quotas=[{"requests": 100, "period": "Day"}]
    )
    fresh[0] = ts(2025, 6, 14, 12) + 0.25
    head = gw.get()
    assert head.headers.get("x-ratelimit-limit") == "2, 2;w=1"
    assert head.headers.get("x-ratelimit-remaining") == "1"
    assert head.headers.get("x-quota-remaining") == "99"
    gw.get()
    ctx, reply = gw.send()
    assert (reply.status, reply.flag) == (429, "RL")
    assert dict(reply.headers)["retry-after"] == "1"
    assert dict(ctx.response_headers_to_add)["x-ratelimit-remaining"] == "0"
    fresh[0] += 1  # the next second
    assert gw.get().headers.get("x-quota-remaining") == "97"  # the 429 took nothing


def test_when_a_rate_limit_and_a_quota_both_refuse_the_quota_is_reported(fresh):
    gw = quota_gateway(rateLimits=[{"requests": 1, "unit": "Minute"}], quotas=[{"requests": 1, "period": "Day"}])
    gw.get()
    ctx, reply = gw.send()
    assert reply.flag == "QE"


# --- who is counted ----------------------------------------------------------------------------


def test_anonymous_requests_and_consumers_without_a_plan_are_not_limited(fresh):
    gw = quota_gateway(quotas=[{"requests": 0, "period": "Day"}])
    head = gw.get("/", consumer=None)
    assert head.status == 401  # the route requires a key; nothing counted
    for _ in range(5):
        head = gw.get(consumer="nobody")
        assert head.status == 200 and head.headers.get("x-quota-limit") is None
    assert plan_counters_module._MEMORY.counts == {}
    assert gw.get(consumer="acme").status == 429
    assert QUOTA_DECISIONS == {"exceeded": 1}
    # a route without authentication has no plan stage at all
    m = find_match(gw.snapshot, PORT, "open.example", "/")
    assert not any(isinstance(f, PlanEnforcement) for f in m.rule.filters)


def test_anonymous_requests_on_a_route_with_optional_auth_are_not_counted(fresh):
    gw = quota_gateway(quotas=[{"requests": 1, "period": "Day"}])
    m = find_match(gw.snapshot, PORT, "api.example", "/")
    (f,) = [f for f in m.rule.filters if isinstance(f, PlanEnforcement)]
    ctx = RequestContext("GET", "/", "/", "", Headers(), "h", "h", "http", "1.1", "1", 1, PORT, "r", 0.0)
    ctx.rule = m.rule
    for _ in range(3):
        assert f.on_request(ctx) is None
        f.on_response(ctx, ResponseHead(200, "OK", Headers()))
    assert USAGE == {} and plan_counters_module._MEMORY.counts == {}


# --- usage -------------------------------------------------------------------------------------


def test_usage_per_consumer_and_route_with_denials_and_quota_use(fresh):
    gw = quota_gateway(rateLimits=[{"requests": 3, "unit": "Minute"}], quotas=[{"requests": 2, "period": "Day"}])
    statuses = [gw.get().status for _ in range(3)]
    assert statuses == [200, 200, 429]  # the quota (2) before the rate limit (3)
    gw.get(consumer="nobody")
    books = [s for s in gw.snapshot.services]
    st = state(books, plan_counters_module._MEMORY, fresh[0])
    doc = document([st, st], books, None, fresh[0], workers=2)  # two workers alike: summed
    acme = doc["consumers"]["default/acme"]
    assert acme["plan"] == "default/small"
    route = acme["routes"]["default/api"]
    assert route["requests"] == 6 and route["responses"]["2xx"] == 4 and route["responses"]["4xx"] == 2
    assert route["denied"] == {"rate_limit": 0, "quota": 2, "unavailable": 0, "forbidden": 0}
    day = acme["quota"]["Day"]
    assert day == {"limit": 2, "used": 4, "remaining": 0, "resets_at": "2025-06-15T00:00:00Z", "resets_in": 43200}
    assert doc["consumers"]["default/nobody"]["plan"] is None
    assert doc["consumers"]["default/nobody"]["routes"]["default/api"]["requests"] == 2
    assert doc["consumers"]["default/initech"]["quota"]["Day"]["used"] == 0
    assert doc["workers"] == 2


# --- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plans, consumers, path, message",
    [
        ([], {"acme": "gold"}, "Consumer/default/acme:spec.plan.name", "Plan default/gold not found"),
        ([plan("p", routeCosts=[{"route": "nope", "cost": 2}])], {"acme": "p"},
         "Plan/default/p:spec.routeCosts[0].route", "HTTPRoute default/nope not found"),
        ([plan("p", routeCosts=[{"route": "api", "rule": "nope", "cost": 2}])], {"acme": "p"},
         "Plan/default/p:spec.routeCosts[0].rule", "has no rule named 'nope'"),
    ],
)
def test_references_that_do_not_resolve_are_config_errors(plans, consumers, path, message):
    result = load_texts([("t.yaml", yaml.safe_dump_all(docs(plans, consumers)))])
    assert result.errors == []
    with pytest.raises(ConfigInvalid) as err:
        compile_snapshot(result.resources)
    errors = [str(e) for e in err.value.errors]
    assert any(path in e and message in e for e in errors), errors


@pytest.mark.parametrize(
    "spec, path, message",
    [
        ({"quotas": [{"requests": 1, "period": "Day"}, {"requests": 2, "period": "Day"}]},
         "spec.quotas[1]", "a second entry"),
        ({"rateLimits": [{"requests": 1, "unit": "Month"}]}, "spec.rateLimits[0].unit", ""),
        ({"routeCosts": [{"route": "a/b/c", "cost": 1}]}, "spec.routeCosts[0].route", "HTTPRoute reference"),
        ({"routeCosts": [{"route": "api", "cost": -1}]}, "spec.routeCosts[0].cost", ""),
        ({"quota": []}, "spec.quota", ""),
    ],
)
def test_bad_plans_are_rejected_by_field(spec, path, message):
    result = load_texts([("t.yaml", yaml.safe_dump_all([
        {"apiVersion": "meshgate.dev/v1alpha1", "kind": "Plan", "metadata": {"name": "p"}, "spec": spec}
    ]))])
    errors = [str(e) for e in result.errors]
    assert len(errors) == 1 and f"Plan/default/p:{path}" in errors[0] and message in errors[0], errors


def test_the_plan_stage_runs_after_authorization_and_before_rate_limits():
    extra = [{
        "apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "BackendTrafficPolicy",
        "metadata": {"name": "rl"},
        "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "api"}],
                 "rateLimit": {"type": "Local", "local": {"rules": [{"limit": {"requests": 9, "unit": "Hour"}}]}}},
    }]
    documents = docs([plan("p", quotas=[{"requests": 1, "period": "Day"}])], {"acme": "p"}, extra)
    for d in documents:
        if d["kind"] == "SecurityPolicy":
            d["spec"]["authorization"] = {
                "defaultAction": "Allow",
                "rules": [{"action": "Deny", "principal": {"clientCIDRs": ["10.9.9.9/32"]}}],
            }
    snap = compile_docs(documents)
    names = [f.name for f in find_match(snap, PORT, "h", "/").rule.filters]
    assert names.index("Plans") == names.index("authorization") + 1
    assert names.index("Plans") < names.index("LocalRateLimit")
    assert "Plan" in snap.dump["policies"]


def test_a_namespace_without_plans_gets_no_plan_stage():
    snap = compile_docs(docs([], {"acme": None}))
    assert "Plans" not in [f.name for f in find_match(snap, PORT, "h", "/").rule.filters]


def test_a_reload_keeps_the_counts(fresh):
    documents = docs([plan("p", quotas=[{"requests": 2, "period": "Day"}])], {"acme": "p"})
    assert Gateway(documents).get().status == 200
    documents[-1]["metadata"]["labels"] = {"changed": "yes"}
    gw = Gateway(documents)
    assert gw.get().status == 200
    assert gw.get().status == 429


# --- Redis outages ---------------------------------------------------------------------------


@pytest.mark.parametrize("fail_closed", [False, True])
async def test_while_redis_cannot_answer_plans_fail_open_or_closed(fresh, fail_closed):
    gw = quota_gateway(rateLimits=[{"requests": 5, "unit": "Minute"}])
    m = find_match(gw.snapshot, PORT, "h", "/")
    (f,) = [f for f in m.rule.filters if isinstance(f, PlanEnforcement)]
    f.counters = RedisPlanCounters(RedisCounters("redis://127.0.0.1:1/0", timeout=0.2, fail_closed=fail_closed))
    ctx = RequestContext("GET", "/", "/", "", Headers(), "h", "h", "http", "1.1", "1", 1, PORT, "r", 0.0)
    ctx.rule, ctx.consumer = m.rule, "acme"
    reply = await f.on_request(ctx)
    if fail_closed:
        assert (reply.status, reply.flag) == (500, "RLSE")
        assert QUOTA_DECISIONS == {"failed_closed": 1}
    else:
        assert reply is None and QUOTA_DECISIONS == {"failed_open": 1}


# --- the example ---------------------------------------------------------------------------------


def test_the_example_compiles_and_its_plans_follow_the_consumers():
    from pathlib import Path

    from meshgate.config.loader import load_paths

    root = Path(__file__).resolve().parents[3]
    result = load_paths([root / "examples" / "plans"])
    assert result.errors == [] and result.warnings == []
    snap = compile_snapshot(result.resources)
    for path in ("/search", "/reports/export", "/reports/status"):
        m = find_match(snap, 8190, "h", path)
        (f,) = [f for f in m.rule.filters if isinstance(f, PlanEnforcement)]
        assert {c: p.plan.key for c, p in f.plans.items()} == {"acme": "default/gold", "initech": "default/free"}
    gold = f.plans["acme"].plan
    assert gold.cost("default/reports", "export") == 10 and gold.cost("default/reports", "status") == 0
    assert gold.cost("default/search", None) == 1
    # docs/plans.md shows the example's free plan as it is
    doc = (root / "docs" / "plans.md").read_text()
    text = (root / "examples" / "plans" / "plans.yaml").read_text()
    for line in ("- {requests: 2, unit: Second}", "- {requests: 1000, period: Month}", "plan: {name: free}"):
        assert line in doc and line in text
