"""Retry decisions: which failures a policy covers, Envoy's back-off, and the cluster's
retry limits (parallel retries, budget) — under a fake clock, zero jitter."""

from __future__ import annotations

from dataclasses import replace

import httpx
from inprocess import Upstream, compile_with, free_port

from meshgate.config.snapshot import Cluster, Endpoint, Limits, RetryPolicy
from meshgate.config.traffic import CircuitBreaking, ClusterPolicy, RetryBudget
from meshgate.proxy import retrying
from meshgate.proxy.engine import Engine
from meshgate.proxy.errors import (
    NoHealthyUpstream,
    UpstreamConnectError,
    UpstreamOverflow,
    UpstreamProtocolError,
    UpstreamReset,
    UpstreamTimeout,
)
from meshgate.proxy.retrying import _covers, backoff_delay
from meshgate.upstream.cluster import ClusterRuntime


def policy(**kw) -> RetryPolicy:
    return RetryPolicy(**{"attempts": 3, "codes": frozenset({503}), "backoff": 0.1, **kw})


def test_connect_failures_and_resets_follow_their_triggers():
    both = policy()
    assert _covers(both, UpstreamConnectError.retry_on)
    assert _covers(both, UpstreamReset.retry_on)
    assert _covers(both, UpstreamTimeout.retry_on)
    connect_only = policy(on_reset=False)
    assert _covers(connect_only, UpstreamConnectError.retry_on)
    assert not _covers(connect_only, UpstreamReset.retry_on)
    assert not _covers(connect_only, UpstreamTimeout.retry_on)
    reset_only = policy(on_connect_failure=False)
    assert not _covers(reset_only, UpstreamConnectError.retry_on)


def test_overflow_no_healthy_host_and_bad_responses_are_never_retried():
    for error in (UpstreamOverflow, NoHealthyUpstream, UpstreamProtocolError):
        assert not _covers(policy(), error.retry_on)


def test_backoff_is_fully_jittered_exponential_and_capped():
    top = lambda: 0.999999
    p = policy(backoff=0.1, max_backoff=0.5)
    # [0, (2^n - 1) * base): 0.1, 0.3, 0.7 -> capped at 0.5
    assert [round(backoff_delay(p, n, top), 3) for n in (1, 2, 3, 4)] == [0.1, 0.3, 0.5, 0.5]
    assert backoff_delay(p, 2, lambda: 0.0) == 0.0  # the jitter reaches down to zero
    assert backoff_delay(policy(backoff=0.0), 3, top) == 0.0  # no back-off configured
    # No maxInterval: 10 x the base interval.
    assert round(backoff_delay(policy(backoff=0.1), 10, top), 3) == 1.0


def make_cluster(clock, **breaker) -> ClusterRuntime:
    cfg = ClusterPolicy(
        breaker=CircuitBreaking(**breaker),
        budget=RetryBudget(ratio=0.2, min_per_second=0.1, ttl=10.0),
    )
    return ClusterRuntime(Cluster("c", (Endpoint("127.0.0.1", 9),), policy=cfg), Limits(), clock)


async def test_parallel_retries_are_bounded_by_the_breaker():
    now = [100.0]
    cluster = make_cluster(lambda: now[0], max_parallel_retries=2)
    for _ in range(100):
        cluster.begin_request()
    assert cluster.begin_retry() and cluster.begin_retry()
    assert not cluster.begin_retry()  # a third retry in flight: not made
    assert cluster.overflows["retries"] == 1
    cluster.end_retry()
    assert cluster.begin_retry()


async def test_the_retry_budget_limits_retries_to_a_share_of_requests():
    now = [100.0]
    cluster = make_cluster(lambda: now[0], max_parallel_retries=1000)
    for _ in range(100):
        cluster.begin_request()
    allowed = 0
    while cluster.begin_retry():
        allowed += 1
    # 20% of 100 requests, plus the floor of 0.1/s over the 10 s window (1 retry).
    assert allowed == 21
    assert cluster.budget_denied == 1


async def test_a_request_that_ends_during_the_back_off_gives_its_retry_slot_back(monkeypatch):
    # The upstream answers 503; the retry waits out its back-off (jitter pinned) and the
    # request's own timeout ends it there. Its retry slot must come back, or the
    # cluster's max_parallel_retries is used up by requests long gone.
    monkeypatch.setattr(retrying.random, "random", lambda: 0.5)
    upstream = await Upstream(lambda request: (503, [], b"busy")).start()
    port = free_port()
    snapshot, rule = compile_with((), port, upstream.port)
    (match,) = snapshot.ports[port].default_listener.any_host.matches
    retry = RetryPolicy(attempts=1, codes=frozenset({503}), backoff=10.0)
    object.__setattr__(match, "rule", replace(rule, retry=retry, timeout_request=0.3))
    engine = Engine(bind="127.0.0.1")
    await engine.apply(snapshot)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            r = await client.get("/")
        assert r.status_code == 504
        (cluster,) = engine.upstreams.clusters.values()
        assert cluster.retries_active == 0
        assert cluster.rq_active == 0
    finally:
        await engine.drain(0.1)
        upstream.close()
