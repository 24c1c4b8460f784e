"""The local rate-limit filter under a clock the test sets: the 429 and its headers,
X-RateLimit-* on allowed requests, the strictest rule wins without charging the
others, per-rule and shared buckets, buckets kept across a reload, decision counts."""

from __future__ import annotations

import inspect

import pytest
from ratelimit_helpers import policy, request

from meshgate.filters.ratelimit import local as local_mod
from meshgate.filters.ratelimit import rate_limit_filters
from meshgate.filters.ratelimit.reply import DECISIONS
from meshgate.proxy.context import LocalReply


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(local_mod, "_clock", lambda: now[0])
    return now


def headers(ctx) -> dict:
    return dict(ctx.response_headers_to_add or ())


def test_allowed_then_429_with_envoy_headers(clock):
    (f,) = rate_limit_filters(policy("local: {rules: [{limit: {requests: 2, unit: Second}}]}"), "ns/r", 0)
    assert not inspect.iscoroutinefunction(f.on_request)  # stays on the no-task path
    first = request()
    assert f.on_request(first) is None
    assert headers(first) == {"x-ratelimit-limit": "2, 2;w=1", "x-ratelimit-remaining": "1", "x-ratelimit-reset": "1"}
    assert f.on_request(request()) is None
    ctx = request()
    reply = f.on_request(ctx)
    assert isinstance(reply, LocalReply)
    assert (reply.status, reply.flag, reply.body) == (429, "RL", b"local_rate_limited")
    assert ("retry-after", "1") in reply.headers
    assert headers(ctx)["x-ratelimit-remaining"] == "0"
    clock[0] += 0.5  # one token back (2 per second)
    assert f.on_request(request()) is None
    assert isinstance(f.on_request(request()), LocalReply)


def test_the_strictest_rule_refuses_and_charges_no_other(clock):
    p = policy(
        """
        local:
          rules:
          - limit: {requests: 100, unit: Minute}
          - clientSelectors: [{headers: [{name: x-user, type: Distinct}]}]
            limit: {requests: 1, unit: Minute}
        """
    )
    (f,) = rate_limit_filters(p, "ns/r", 0)
    alice = {"x-user": "alice"}
    assert f.on_request(request(headers=alice)) is None
    ctx = request(headers=alice)
    assert isinstance(f.on_request(ctx), LocalReply)
    # The tighter quota is the one reported.
    assert headers(ctx)["x-ratelimit-limit"] == "1, 1;w=60"
    for _ in range(5):
        f.on_request(request(headers=alice))
    ok = request()
    assert f.on_request(ok) is None
    # 100 - alice's one allowed request - this one: refusals took nothing.
    assert headers(ok)["x-ratelimit-remaining"] == "98"


def test_each_route_rule_has_its_own_buckets_unless_shared(clock):
    own = policy("local: {rules: [{limit: {requests: 1, unit: Hour}}]}", key="ns/own")
    (a,) = rate_limit_filters(own, "ns/r", 0)
    (b,) = rate_limit_filters(own, "ns/r", 1)
    assert a.on_request(request()) is None
    assert b.on_request(request()) is None
    shared = policy("local: {rules: [{limit: {requests: 1, unit: Hour}, shared: true}]}", key="ns/shared")
    (c,) = rate_limit_filters(shared, "ns/r", 0)
    (d,) = rate_limit_filters(shared, "ns/other", 0)
    assert c.on_request(request()) is None
    assert isinstance(d.on_request(request()), LocalReply)


def test_a_reload_with_the_same_rule_keeps_the_buckets(clock):
    text = "local: {rules: [{limit: {requests: 1, unit: Hour}}]}"
    (before,) = rate_limit_filters(policy(text, key="ns/reload"), "ns/r", 0)
    assert before.on_request(request()) is None
    (after,) = rate_limit_filters(policy(text, key="ns/reload"), "ns/r", 0)
    assert isinstance(after.on_request(request()), LocalReply)
    changed = "local: {rules: [{limit: {requests: 2, unit: Hour}}]}"
    (new,) = rate_limit_filters(policy(changed, key="ns/reload"), "ns/r", 0)
    assert new.on_request(request()) is None  # a new limit starts a new bucket


def test_requests_no_rule_selects_are_not_counted_or_labelled(clock):
    p = policy("local: {rules: [{clientSelectors: [{headers: [{name: x-user, type: Distinct}]}], limit: {requests: 1, unit: Hour}}]}")
    (f,) = rate_limit_filters(p, "ns/count", 0)
    DECISIONS.clear()
    ctx = request()
    assert f.on_request(ctx) is None
    assert ctx.response_headers_to_add is None
    f.on_request(request(headers={"x-user": "a"}))
    f.on_request(request(headers={"x-user": "a"}))
    assert DECISIONS == {("ns/count", "allowed", "local"): 1, ("ns/count", "limited", "local"): 1}
