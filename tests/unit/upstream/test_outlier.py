"""Outlier detection under virtual time: what a user sees is which hosts are routable,
for how long, and when the balancer is told (``on_change``)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from meshgate.config.snapshot import Endpoint
from meshgate.config.traffic import OutlierDetection
from meshgate.upstream.host import Host
from meshgate.upstream.outlier import OutlierDetector


class FakePool:
    active = 0
    connecting = 0
    waiters = ()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Cluster:
    """The owner's side: a host list, a clock, and how often it was told of changes."""

    def __init__(self, n: int, **cfg: object) -> None:
        self.clock = Clock()
        self.hosts = [Host(Endpoint(f"10.0.0.{i + 1}", 8080), FakePool(), 0.0) for i in range(n)]
        self.changes = 0
        defaults = {"max_ejection_percent": 100.0, "consecutive_gateway_errors": 0}
        always_one = bool(cfg.pop("always_eject_one_host", False))
        self.cfg = replace(OutlierDetection(), **{**defaults, **cfg})
        self.od = OutlierDetector(
            self.cfg, lambda: self.hosts, self._changed, self.clock, always_eject_one_host=always_one
        )

    def _changed(self) -> None:
        self.changes += 1

    def answer(self, host: Host, *statuses: int) -> None:
        for s in statuses:
            self.od.on_response(host, s)

    def advance(self, seconds: float) -> None:
        self.clock.now += seconds

    @property
    def ejected(self) -> list[int]:
        return [i for i, h in enumerate(self.hosts) if h.ejected]


# -- consecutive 5xx -----------------------------------------------------------------


def test_five_consecutive_5xx_eject_at_once_not_at_the_interval():
    c = Cluster(3)
    h = c.hosts[0]
    c.answer(h, 500, 503, 500, 599)
    assert not h.ejected and h.consecutive_5xx == 4
    c.answer(h, 500)
    assert h.ejected and not h.routable
    assert c.changes == 1
    assert c.od.ejections_total == 1
    assert h.ejected_until == c.clock.now + 30.0


def test_a_non_5xx_answer_restarts_the_count():
    c = Cluster(3)
    h = c.hosts[0]
    c.answer(h, 500, 500, 500, 500, 404, 500, 500, 500, 500)
    assert not h.ejected
    assert h.consecutive_5xx == 4
    c.answer(h, 200)
    assert h.consecutive_5xx == 0 and h.consecutive_gateway == 0


def test_threshold_zero_disables_the_5xx_detector():
    c = Cluster(3, consecutive_5xx=0)
    c.answer(c.hosts[0], *[500] * 50)
    assert c.ejected == [] and c.changes == 0


def test_ejecting_twice_is_not_possible_and_an_ejected_host_keeps_counting():
    c = Cluster(3)
    h = c.hosts[0]
    c.answer(h, *[500] * 5)
    c.answer(h, *[500] * 10)  # in-flight answers from an ejected host
    assert c.od.ejections_total == 1 and c.changes == 1


# -- gateway errors ------------------------------------------------------------------


def test_consecutive_gateway_errors_eject_on_502_503_504_only():
    c = Cluster(3, consecutive_5xx=0, consecutive_gateway_errors=3)
    h = c.hosts[0]
    c.answer(h, 502, 503, 500)  # 500 is a 5xx but not a gateway error: restarts the count
    assert h.consecutive_gateway == 0 and not h.ejected
    c.answer(h, 502, 503)
    assert not h.ejected
    c.answer(h, 504)
    assert h.ejected


def test_gateway_errors_also_count_as_5xx():
    c = Cluster(3, consecutive_5xx=3, consecutive_gateway_errors=0)
    h = c.hosts[0]
    c.answer(h, 502, 503, 504)
    assert h.ejected


# -- local origin --------------------------------------------------------------------


def test_without_split_a_local_failure_is_a_503():
    c = Cluster(3, consecutive_5xx=5, consecutive_gateway_errors=3)
    h = c.hosts[0]
    c.od.on_local_failure(h)
    c.od.on_local_failure(h)
    assert (h.consecutive_5xx, h.consecutive_gateway, h.consecutive_local) == (2, 2, 0)
    c.od.on_local_success(h)  # a connect says nothing about the HTTP outcome
    assert (h.consecutive_5xx, h.consecutive_gateway) == (2, 2)
    c.od.on_local_failure(h)
    assert h.ejected  # via the gateway-error detector


def test_without_split_mixed_local_failures_and_5xx_answers_add_up():
    c = Cluster(3)
    h = c.hosts[0]
    c.answer(h, 500, 500)
    c.od.on_local_failure(h)
    c.od.on_local_failure(h)
    c.answer(h, 500)
    assert h.ejected


def test_with_split_local_failures_only_count_as_local_origin():
    c = Cluster(3, split_external_local_origin_errors=True, consecutive_local_origin_failures=3)
    h = c.hosts[0]
    c.od.on_local_failure(h)
    c.od.on_local_failure(h)
    assert (h.consecutive_5xx, h.consecutive_gateway, h.consecutive_local) == (0, 0, 2)
    c.od.on_local_success(h)
    assert h.consecutive_local == 0
    c.od.on_local_failure(h)
    c.od.on_local_failure(h)
    c.answer(h, 200)  # an HTTP answer does not reset the local-origin count
    assert not h.ejected
    c.od.on_local_failure(h)
    assert h.ejected


def test_with_split_5xx_answers_still_eject():
    c = Cluster(3, split_external_local_origin_errors=True)
    h = c.hosts[0]
    c.answer(h, *[503] * 5)
    assert h.ejected and h.consecutive_local == 0


def test_with_split_and_local_threshold_zero_local_failures_never_eject():
    c = Cluster(3, split_external_local_origin_errors=True, consecutive_local_origin_failures=0)
    for _ in range(20):
        c.od.on_local_failure(c.hosts[0])
    assert c.ejected == []


# -- max_ejection_percent --------------------------------------------------------------


def test_max_percent_is_checked_after_the_ejection():
    c = Cluster(4, max_ejection_percent=50.0)
    for h in c.hosts:
        c.answer(h, *[500] * 5)
    assert c.ejected == [0, 1]  # 3 of 4 would be 75% > 50%
    assert c.od.ejections_total == 2
    assert c.od.ejections_overflow == 2
    assert c.changes == 2


def test_default_ten_percent_ejects_nothing_in_a_small_cluster():
    # Envoy >= 1.27: with fewer than 10 hosts, 10% allows no ejection at all.
    c = Cluster(3, max_ejection_percent=10.0)
    c.answer(c.hosts[0], *[500] * 5)
    assert c.ejected == []
    assert c.od.ejections_overflow == 1 and c.changes == 0


def test_always_eject_one_host_allows_one_ejection_and_no_second():
    c = Cluster(3, max_ejection_percent=10.0, always_eject_one_host=True)
    c.answer(c.hosts[0], *[500] * 5)
    c.answer(c.hosts[1], *[500] * 5)
    assert c.ejected == [0]
    assert c.od.ejections_overflow == 1


def test_always_eject_one_host_may_eject_the_only_host():
    c = Cluster(1, max_ejection_percent=10.0, always_eject_one_host=True)
    c.answer(c.hosts[0], *[500] * 5)
    assert c.ejected == [0]


def test_ten_percent_of_ten_hosts_is_one():
    c = Cluster(10, max_ejection_percent=10.0)
    c.answer(c.hosts[0], *[500] * 5)
    c.answer(c.hosts[1], *[500] * 5)
    assert c.ejected == [0]


def test_an_overflowed_host_is_tried_again_after_another_full_streak():
    c = Cluster(2, max_ejection_percent=50.0)
    c.answer(c.hosts[0], *[500] * 5)
    c.answer(c.hosts[1], *[500] * 5)
    assert c.ejected == [0] and c.od.ejections_overflow == 1
    c.answer(c.hosts[1], 500)  # one more error is not a new streak
    assert c.od.ejections_overflow == 1
    c.advance(30)
    c.od.sweep()
    c.answer(c.hosts[1], *[500] * 4)
    assert c.ejected == [1]


# -- ejection time ---------------------------------------------------------------------


def test_ejection_time_grows_with_each_ejection_and_is_capped():
    c = Cluster(3, base_ejection_time=30.0, max_ejection_time=100.0, interval=10.0)
    h = c.hosts[0]
    durations = []
    for _ in range(5):
        c.answer(h, *[500] * 5)
        assert h.ejected
        durations.append(h.ejected_until - c.clock.now)
        c.advance(h.ejected_until - c.clock.now)
        c.od.sweep()
        assert not h.ejected
    assert durations == [30.0, 60.0, 90.0, 100.0, 100.0]
    assert c.od.ejections_total == 5


def test_max_ejection_time_below_base_means_base():
    c = Cluster(3, base_ejection_time=30.0, max_ejection_time=5.0)
    h = c.hosts[0]
    for _ in range(3):
        c.answer(h, *[500] * 5)
        assert h.ejected_until - c.clock.now == 30.0
        c.advance(30)
        c.od.sweep()


# -- sweep ---------------------------------------------------------------------------


def test_sweep_returns_a_host_only_when_its_time_is_up_and_restarts_its_counters():
    c = Cluster(3, consecutive_gateway_errors=5)
    h = c.hosts[0]
    c.answer(h, *[502] * 5)
    c.answer(h, 502, 502)  # in-flight answers while ejected
    assert c.changes == 1
    c.advance(29.9)
    c.od.sweep()
    assert h.ejected and c.changes == 1
    c.advance(0.1)
    c.od.sweep()
    assert not h.ejected and h.routable
    assert (h.consecutive_5xx, h.consecutive_gateway, h.consecutive_local) == (0, 0, 0)
    assert c.changes == 2
    c.answer(h, 500)  # one error after return does not eject again
    assert not h.ejected


def test_sweep_calls_on_change_once_when_several_hosts_return():
    c = Cluster(4)
    for h in c.hosts[:3]:
        c.answer(h, *[500] * 5)
    assert c.changes == 3
    c.advance(30)
    c.od.sweep()
    assert c.ejected == [] and c.changes == 4
    c.od.sweep()
    assert c.changes == 4  # nothing flipped: nobody is told


def test_the_multiplier_decays_by_one_per_interval_spent_in_service():
    c = Cluster(3, base_ejection_time=10.0, max_ejection_time=300.0, interval=10.0)
    h = c.hosts[0]
    for _ in range(3):
        c.answer(h, *[500] * 5)
        c.advance(h.ejected_until - c.clock.now)
        c.od.sweep()  # the sweep that returns the host does not decay it
    assert h.ejections == 3
    c.advance(10)
    c.od.sweep()
    assert h.ejections == 2
    c.answer(h, *[500] * 5)
    assert h.ejected_until - c.clock.now == 30.0  # 10 s x (2 + 1)
    c.advance(10)
    c.od.sweep()
    assert h.ejected and h.ejections == 3  # no decay while ejected
    for _ in range(10):
        c.advance(10)
        c.od.sweep()
    assert not h.ejected and h.ejections == 0


def test_a_host_that_stays_healthy_has_nothing_to_decay():
    c = Cluster(2)
    c.od.sweep()
    assert [h.ejections for h in c.hosts] == [0, 0] and c.changes == 0


# -- views -----------------------------------------------------------------------------


def test_describe_shows_time_left_and_counters():
    c = Cluster(3)
    h = c.hosts[0]
    c.answer(h, 500, 500)
    assert c.od.describe(h) == {
        "ejected": False,
        "ejected_until": 0.0,
        "ejections": 0,
        "consecutive_5xx": 2,
        "consecutive_gateway_errors": 0,
        "consecutive_local_origin_failures": 0,
    }
    c.answer(h, 500, 500, 500)
    c.advance(12.5)
    d = c.od.describe(h)
    assert d["ejected"] is True
    assert d["ejected_until"] == pytest.approx(17.5)
    assert d["ejections"] == 1


def test_repr_counts_ejected_hosts():
    c = Cluster(3, max_ejection_percent=34.0)
    c.answer(c.hosts[0], *[500] * 5)
    c.answer(c.hosts[1], *[500] * 5)
    assert repr(c.od) == "<OutlierDetector ejected=1 total=1 overflow=1>"
