"""Load balancers over real Host objects: which host each request goes to.

A tiny pool stands in for ConnectionPool (a Host only reads its counts); time is a
fake clock the tests move, so slow start runs without sleeping.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter
from collections.abc import Sequence

import pytest

from meshgate.config.snapshot import Endpoint
from meshgate.config.traffic import (
    CONSISTENT_HASH,
    HASH_COOKIE,
    HASH_HEADER,
    HASH_SOURCE_IP,
    LEAST_REQUEST,
    RANDOM,
    ROUND_ROBIN,
    LoadBalancing,
)
from meshgate.http.headers import Headers
from meshgate.proxy.context import RequestContext
from meshgate.upstream.balancer import (
    LeastRequestBalancer,
    MaglevBalancer,
    RandomBalancer,
    RoundRobinBalancer,
    maglev_table,
    make_balancer,
    slow_start_factor,
)
from meshgate.upstream.host import Host


class FakePool:
    def __init__(self) -> None:
        self.active = 0
        self.connecting = 0
        self.waiters: list[object] = []


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_hosts(n: int, weights: Sequence[int] | None = None, added_at: float = 0.0) -> list[Host]:
    weights = weights or [1] * n
    return [
        Host(Endpoint(f"10.0.0.{i + 1}", 8080), FakePool(), added_at, weight=weights[i])  # type: ignore[arg-type]
        for i in range(n)
    ]


def names(hosts: Sequence[Host]) -> list[str]:
    return [h.address for h in hosts]


def request(
    headers: Sequence[tuple[str, str]] = (), client_ip: str = "192.0.2.1"
) -> RequestContext:
    return RequestContext(
        "GET", "/", "/", "", Headers(list(headers)), "example.com", "example.com", "http", "1.1",
        client_ip, 50000, 80, "rid", 0.0,
    )  # fmt: skip


def picks(balancer, n: int, ctx: RequestContext | None = None) -> list[Host]:
    return [balancer.pick(ctx) for _ in range(n)]


def test_make_balancer_returns_the_configured_kind() -> None:
    assert isinstance(make_balancer(LoadBalancing(kind=ROUND_ROBIN)), RoundRobinBalancer)
    assert isinstance(make_balancer(LoadBalancing(kind=LEAST_REQUEST)), LeastRequestBalancer)
    assert isinstance(make_balancer(LoadBalancing()), LeastRequestBalancer)  # Envoy's default
    assert isinstance(make_balancer(LoadBalancing(kind=RANDOM)), RandomBalancer)
    assert isinstance(make_balancer(LoadBalancing(kind=CONSISTENT_HASH)), MaglevBalancer)
    with pytest.raises(ValueError, match="not a prime"):
        make_balancer(LoadBalancing(kind=CONSISTENT_HASH, table_size=65536))


# -- round robin ---------------------------------------------------------------------


def test_round_robin_equal_weights_visits_every_host_once_per_cycle() -> None:
    hosts = make_hosts(3)
    rr = make_balancer(LoadBalancing(kind=ROUND_ROBIN))
    rr.update(hosts)
    seq = picks(rr, 300)
    for i in range(0, 300, 3):
        assert set(seq[i : i + 3]) == set(hosts)


def test_round_robin_weighted_is_exact_over_a_cycle() -> None:
    hosts = make_hosts(3, [5, 1, 1])
    rr = make_balancer(LoadBalancing(kind=ROUND_ROBIN))
    rr.update(hosts)
    seq = picks(rr, 7 * 20)
    for i in range(0, len(seq), 7):
        assert Counter(seq[i : i + 7]) == {hosts[0]: 5, hosts[1]: 1, hosts[2]: 1}


def test_round_robin_weights_reduced_by_gcd_give_the_same_shares() -> None:
    hosts = make_hosts(2, [300, 100])
    rr = make_balancer(LoadBalancing(kind=ROUND_ROBIN))
    rr.update(hosts)
    seq = picks(rr, 4)
    assert Counter(seq) == {hosts[0]: 3, hosts[1]: 1}


def test_round_robin_interleaves_weighted_hosts() -> None:
    hosts = make_hosts(3, [2, 2, 1])
    rr = make_balancer(LoadBalancing(kind=ROUND_ROBIN))
    rr.update(hosts)
    seq = picks(rr, 50)
    assert all(a is not b for a, b in itertools.pairwise(seq))  # never a a b b c
    light = make_hosts(3, [5, 1, 1])
    rr.update(light)
    seq = picks(rr, 70)
    runs = [a is not light[0] and b is not light[0] for a, b in itertools.pairwise(seq)]
    assert not any(runs)  # the light hosts are spread between the heavy one's turns


def test_round_robin_exclude_goes_to_another_host() -> None:
    hosts = make_hosts(3, [5, 1, 1])
    rr = make_balancer(LoadBalancing(kind=ROUND_ROBIN))
    rr.update(hosts)
    for _ in range(50):
        first = rr.pick(None)
        assert rr.pick(None, exclude=first) is not first
    single = make_hosts(1)
    rr.update(single)
    assert rr.pick(None, exclude=single[0]) is single[0]


def test_round_robin_keeps_its_place_when_hosts_change() -> None:
    hosts = make_hosts(4)
    rr = make_balancer(LoadBalancing(kind=ROUND_ROBIN))
    rr.update(hosts)
    rr.update(hosts[:2])
    assert Counter(picks(rr, 10)) == {hosts[0]: 5, hosts[1]: 5}


# -- least request -------------------------------------------------------------------


def test_least_request_never_picks_the_busiest_of_equal_hosts() -> None:
    hosts = make_hosts(3)
    hosts[0].pool.active = 10
    lr = LeastRequestBalancer(LoadBalancing(), rng=random.Random(1))
    lr.update(hosts)
    counts = Counter(picks(lr, 3000))
    # Two distinct candidates: the busy host always loses its comparison.
    assert counts[hosts[0]] == 0
    assert 1300 < counts[hosts[1]] < 1700


def test_least_request_prefers_the_less_loaded_host_by_queue_and_connecting() -> None:
    hosts = make_hosts(2)
    hosts[0].pool.waiters.extend([object(), object()])
    hosts[1].pool.connecting = 1
    lr = LeastRequestBalancer(LoadBalancing(), rng=random.Random(2))
    lr.update(hosts)
    assert set(picks(lr, 100)) == {hosts[1]}


def test_least_request_spreads_idle_hosts() -> None:
    hosts = make_hosts(4)
    lr = LeastRequestBalancer(LoadBalancing(), rng=random.Random(3))
    lr.update(hosts)
    counts = Counter(picks(lr, 8000))
    assert all(1700 < counts[h] < 2300 for h in hosts)


def test_least_request_follows_load_as_requests_start() -> None:
    hosts = make_hosts(4)
    lr = LeastRequestBalancer(LoadBalancing(), rng=random.Random(4))
    lr.update(hosts)
    for _ in range(400):  # requests that never finish
        lr.pick(None).pool.active += 1
    loads = [h.active_requests for h in hosts]
    assert max(loads) - min(loads) <= 3


def test_least_request_weighted_divides_weight_by_active_requests() -> None:
    hosts = make_hosts(2, [2, 1])
    lr = make_balancer(LoadBalancing(kind=LEAST_REQUEST))
    lr.update(hosts)
    counts = Counter(picks(lr, 3000))
    assert counts[hosts[0]] == pytest.approx(2000, abs=30)
    hosts[0].pool.active = 3  # 2 / (3 + 1) = 0.5 against 1 / (0 + 1) = 1
    counts = Counter(picks(lr, 3000))
    assert counts[hosts[1]] == pytest.approx(2000, abs=30)


def test_least_request_exclude_goes_to_another_host() -> None:
    for weights in ([1, 1, 1], [3, 1, 1]):
        hosts = make_hosts(3, weights)
        lr = make_balancer(LoadBalancing(kind=LEAST_REQUEST))
        lr.update(hosts)
        for _ in range(200):
            first = lr.pick(None)
            assert lr.pick(None, exclude=first) is not first
    two = make_hosts(2)
    lr.update(two)
    assert {lr.pick(None, exclude=two[0]) for _ in range(50)} == {two[1]}


# -- random --------------------------------------------------------------------------


def test_random_is_roughly_uniform() -> None:
    hosts = make_hosts(4, [10, 1, 1, 1])  # weights are ignored, as in Envoy
    rb = RandomBalancer(random.Random(5))
    rb.update(hosts)
    counts = Counter(picks(rb, 40000))
    # 10000 expected each, standard deviation ~87: +-5% is beyond 5 sigma.
    assert all(9500 < counts[h] < 10500 for h in hosts)


def test_random_exclude_spreads_over_the_others() -> None:
    hosts = make_hosts(3)
    rb = make_balancer(LoadBalancing(kind=RANDOM))
    rb.update(hosts)
    counts = Counter(rb.pick(None, exclude=hosts[1]) for _ in range(3000))
    assert counts[hosts[1]] == 0
    assert 1300 < counts[hosts[0]] < 1700


# -- consistent hash (Maglev) --------------------------------------------------------


def header_lb(**kw) -> LoadBalancing:
    return LoadBalancing(kind=CONSISTENT_HASH, hash_on=HASH_HEADER, hash_header="x-user", **kw)


def key_map(balancer, keys: Sequence[str]) -> dict[str, str]:
    return {k: balancer.pick(request([("x-user", k)])).address for k in keys}


KEYS = [f"user-{i}" for i in range(10000)]


def test_maglev_same_key_same_host() -> None:
    mg = make_balancer(header_lb())
    mg.update(make_hosts(5))
    first = key_map(mg, KEYS[:500])
    assert key_map(mg, KEYS[:500]) == first
    # Another balancer with the hosts in another order builds the same table.
    other = make_balancer(header_lb())
    other.update(list(reversed(make_hosts(5))))
    assert key_map(other, KEYS[:500]) == first


@pytest.mark.parametrize("n", [3, 5, 10])
def test_maglev_spreads_keys_evenly(n: int) -> None:
    mg = make_balancer(header_lb())
    mg.update(make_hosts(n))
    counts = Counter(key_map(mg, KEYS).values())
    assert len(counts) == n
    assert all(0.8 * 10000 / n <= c <= 1.2 * 10000 / n for c in counts.values())


def test_maglev_weighted_hosts_hold_slots_in_proportion() -> None:
    hosts = make_hosts(3, [2, 1, 1])
    table = maglev_table(hosts, 65537)
    counts = Counter(table)
    assert counts[hosts[0]] == pytest.approx(65537 / 2, rel=0.01)
    assert counts[hosts[1]] == pytest.approx(65537 / 4, rel=0.01)


@pytest.mark.parametrize("n", [4, 9])
def test_maglev_adding_a_host_moves_about_its_share(n: int) -> None:
    hosts = make_hosts(n + 1)
    mg = make_balancer(header_lb())
    mg.update(hosts[:n])
    before = key_map(mg, KEYS)
    mg.update(hosts)
    after = key_map(mg, KEYS)
    moved = sum(before[k] != after[k] for k in KEYS) / len(KEYS)
    assert 0.5 / (n + 1) <= moved <= 1.5 / (n + 1)
    # What moved went mostly to the new host.
    to_new = sum(before[k] != after[k] and after[k] == hosts[n].address for k in KEYS)
    assert to_new / len(KEYS) >= 0.8 / (n + 1)


def test_maglev_removing_a_host_moves_only_its_keys_and_a_few_more() -> None:
    hosts = make_hosts(6)
    mg = make_balancer(header_lb())
    mg.update(hosts)
    before = key_map(mg, KEYS)
    gone = hosts[2].address
    mg.update(hosts[:2] + hosts[3:])
    after = key_map(mg, KEYS)
    assert gone not in after.values()
    others_moved = sum(before[k] != gone and before[k] != after[k] for k in KEYS)
    assert others_moved / len(KEYS) < 0.05  # Maglev's small disruption


def test_maglev_exclude_takes_the_next_other_host_deterministically() -> None:
    hosts = make_hosts(4)
    mg = make_balancer(header_lb())
    mg.update(hosts)
    for key in KEYS[:200]:
        ctx = request([("x-user", key)])
        first = mg.pick(ctx)
        retry = mg.pick(ctx, exclude=first)
        assert retry is not first
        assert mg.pick(ctx, exclude=first) is retry


def test_maglev_without_the_header_picks_a_random_host() -> None:
    hosts = make_hosts(4)
    mg = make_balancer(header_lb())
    mg.update(hosts)
    assert len(set(picks(mg, 200, request()))) == 4
    assert len(set(picks(mg, 200, None))) == 4


def test_maglev_source_ip() -> None:
    mg = make_balancer(LoadBalancing(kind=CONSISTENT_HASH, hash_on=HASH_SOURCE_IP))
    mg.update(make_hosts(5))
    by_ip = {ip: mg.pick(request(client_ip=ip)) for ip in (f"198.51.100.{i}" for i in range(200))}
    assert all(mg.pick(request(client_ip=ip)) is h for ip, h in by_ip.items())
    assert len(set(by_ip.values())) == 5


COOKIE_LB = LoadBalancing(
    kind=CONSISTENT_HASH,
    hash_on=HASH_COOKIE,
    cookie_name="lb",
    cookie_ttl=60.0,
    cookie_attributes=(("Path", "/"), ("HttpOnly", "")),
)


def test_maglev_cookie_present_is_the_key() -> None:
    mg = make_balancer(COOKIE_LB)
    mg.update(make_hosts(5))
    ctx = request([("cookie", "a=1; lb=abc; b=2")])
    host = mg.pick(ctx)
    assert ctx.response_headers_to_add is None
    assert mg.pick(request([("cookie", 'lb="abc"')])) is host  # quoted value, same key
    assert mg.pick(request([("cookie", "x=1"), ("cookie", "lb=abc")])) is host


def test_maglev_cookie_absent_is_issued_and_sticks() -> None:
    mg = make_balancer(COOKIE_LB)
    mg.update(make_hosts(5))
    for _ in range(20):
        ctx = request([("cookie", "other=1")])
        host = mg.pick(ctx)
        [(name, value)] = ctx.response_headers_to_add  # type: ignore[misc]
        assert name == "set-cookie"
        cookie, max_age, path, httponly = value.split("; ")
        key, _, token = cookie.partition("=")
        assert key == "lb" and len(token) == 16 and int(token, 16) >= 0
        assert (max_age, path, httponly) == ("Max-Age=60", "Path=/", "HttpOnly")
        # The client sends it back and lands on the same host.
        assert mg.pick(request([("cookie", cookie)])) is host


def test_maglev_cookie_absent_without_ttl_is_random_and_issues_nothing() -> None:
    mg = make_balancer(LoadBalancing(kind=CONSISTENT_HASH, hash_on=HASH_COOKIE, cookie_name="lb"))
    hosts = make_hosts(3)
    mg.update(hosts)
    ctx = request()
    seen = {mg.pick(ctx) for _ in range(100)}
    assert seen == set(hosts)
    assert ctx.response_headers_to_add is None


def test_maglev_single_host_still_issues_the_cookie() -> None:
    mg = make_balancer(COOKIE_LB)
    hosts = make_hosts(1)
    mg.update(hosts)
    ctx = request()
    assert mg.pick(ctx) is hosts[0]
    assert ctx.response_headers_to_add and ctx.response_headers_to_add[0][0] == "set-cookie"


def test_maglev_table_builds_quickly() -> None:
    hosts = make_hosts(10)
    start = time.perf_counter()
    maglev_table(hosts, 65537)
    assert time.perf_counter() - start < 0.5  # ~30 ms here; generous for slow CI


# -- slow start ----------------------------------------------------------------------


def test_slow_start_factor_ramps_linearly_from_ten_percent() -> None:
    assert slow_start_factor(0.0, 30.0) == 0.1
    assert slow_start_factor(1.5, 30.0) == 0.1
    assert slow_start_factor(15.0, 30.0) == pytest.approx(0.5)
    assert slow_start_factor(30.0, 30.0) == 1.0
    assert slow_start_factor(-5.0, 30.0) == 0.1  # clock skew: not ahead of schedule


def new_host_share(balancer, hosts: list[Host], n: int = 2000) -> float:
    return Counter(picks(balancer, n))[hosts[-1]] / n


@pytest.mark.parametrize("kind", [ROUND_ROBIN, LEAST_REQUEST])
def test_slow_start_ramps_a_new_host_to_its_full_share(kind: str) -> None:
    clock = Clock(1000.0)
    hosts = make_hosts(1, added_at=0.0) + make_hosts(2, added_at=1000.0)[1:]  # old, new
    balancer = make_balancer(LoadBalancing(kind=kind, slow_start_window=60.0), clock)
    balancer.update(hosts)
    # At 10%: 0.1 / 1.1 of the picks.
    assert new_host_share(balancer, hosts) == pytest.approx(0.1 / 1.1, abs=0.02)
    clock.now += 30.0
    assert new_host_share(balancer, hosts) == pytest.approx(0.5 / 1.5, abs=0.02)
    clock.now += 30.0
    # Past the window: exact alternation (RR) or power of two choices between two idle
    # hosts, a coin toss per pick (LR; 0.05 is over 4 standard deviations).
    assert new_host_share(balancer, hosts) == pytest.approx(0.5, abs=0.05)


def test_slow_start_refreshes_weights_at_most_every_twentieth_of_the_window() -> None:
    clock = Clock(1000.0)
    hosts = make_hosts(1, added_at=0.0) + make_hosts(2, added_at=1000.0)[1:]
    rr = make_balancer(LoadBalancing(kind=ROUND_ROBIN, slow_start_window=60.0), clock)
    rr.update(hosts)
    clock.now += 2.9  # under 60 / 20: weights stay at 10%
    assert new_host_share(rr, hosts) == pytest.approx(0.1 / 1.1, abs=0.02)
    clock.now += 0.1  # 3 s: refreshed to 3/60 -> still the 10% floor
    clock.now += 9.0  # 12 s: 20%
    assert new_host_share(rr, hosts) == pytest.approx(0.2 / 1.2, abs=0.02)


def test_round_robin_after_slow_start_is_exact_again() -> None:
    clock = Clock(1000.0)
    hosts = make_hosts(1, added_at=0.0) + make_hosts(2, added_at=1000.0)[1:]
    rr = make_balancer(LoadBalancing(kind=ROUND_ROBIN, slow_start_window=10.0), clock)
    rr.update(hosts)
    picks(rr, 10)
    clock.now += 10.0
    rr.pick(None)  # notices the window is over
    seq = picks(rr, 20)
    assert all(a is not b for a, b in itertools.pairwise(seq))


def test_slow_start_ignores_hosts_older_than_the_window() -> None:
    clock = Clock(1000.0)
    hosts = make_hosts(2, added_at=0.0)
    rr = make_balancer(LoadBalancing(kind=ROUND_ROBIN, slow_start_window=10.0), clock)
    rr.update(hosts)
    assert Counter(picks(rr, 10)) == {hosts[0]: 5, hosts[1]: 5}


def test_slow_start_exclude_still_goes_elsewhere() -> None:
    clock = Clock(1000.0)
    hosts = make_hosts(2, added_at=0.0) + make_hosts(3, added_at=1000.0)[2:]
    rr = make_balancer(LoadBalancing(kind=ROUND_ROBIN, slow_start_window=10.0), clock)
    rr.update(hosts)
    for _ in range(100):
        first = rr.pick(None)
        assert rr.pick(None, exclude=first) is not first


def test_round_robin_with_huge_coprime_weights_still_follows_them() -> None:
    hosts = make_hosts(2, [300_007, 100_003])  # too long a cycle to precompute
    rr = make_balancer(LoadBalancing(kind=ROUND_ROBIN))
    rr.update(hosts)
    counts = Counter(picks(rr, 4000))
    assert counts[hosts[0]] == pytest.approx(3000, abs=2)
    first = rr.pick(None)
    assert rr.pick(None, exclude=first) is not first


def test_maglev_update_with_new_host_objects_routes_to_them() -> None:
    mg = make_balancer(header_lb())
    mg.update(make_hosts(3))
    before = key_map(mg, KEYS[:100])
    fresh = make_hosts(3)  # same addresses, new Host objects (a reload)
    mg.update(fresh)
    assert all(mg.pick(request([("x-user", k)])) in fresh for k in KEYS[:100])
    assert key_map(mg, KEYS[:100]) == before
