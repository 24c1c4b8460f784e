"""The retry budget under virtual time: what share of a failing backend's traffic may
come back as retries, the floor for quiet clusters, and how old traffic stops counting."""

from __future__ import annotations

import pytest

from meshgate.config.traffic import RetryBudget as RetryBudgetConfig
from meshgate.upstream.budget import RetryBudget


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def budget(
    clock: FakeClock, ratio: float = 0.2, min_per_second: float = 10.0, ttl: float = 10.0
) -> RetryBudget:
    return RetryBudget(RetryBudgetConfig(ratio, min_per_second, ttl), clock)


def fail_everything(b: RetryBudget, clock: FakeClock, seconds: int, rps: int) -> int:
    """``rps`` requests a second, each failing and asking for one retry; retries sent."""
    sent = 0
    for _ in range(seconds * rps):
        b.deposit()
        sent += b.withdraw()
        clock.advance(1 / rps)
    return sent


def test_steady_failures_retry_at_ratio_plus_floor() -> None:
    clock = FakeClock()
    b = budget(clock)
    fail_everything(b, clock, 20, 100)  # past the first window's burst
    sent = fail_everything(b, clock, 30, 100)
    # 20% of 100 rps + 10/s floor = 30 retries/s: 30 s of it is ~900 of 3000 requests.
    assert 870 <= sent <= 930
    assert b.stats.allowed + b.stats.denied == 5000


def test_without_a_floor_retries_are_the_ratio_of_requests() -> None:
    clock = FakeClock()
    b = budget(clock, ratio=0.1, min_per_second=0)
    sent = fail_everything(b, clock, 60, 50)
    assert 0.09 * 3000 <= sent <= 0.11 * 3000


def test_floor_lets_a_quiet_cluster_retry() -> None:
    clock = FakeClock()
    b = budget(clock)
    # No requests at all: min_per_second * ttl = 100 retries in the window.
    assert [b.withdraw() for _ in range(120)].count(True) == 100
    assert (b.stats.allowed, b.stats.denied) == (100, 20)
    assert b.remaining() == 0
    # 1 rps, every request failing and retried: always within the floor.
    clock.advance(10)
    assert fail_everything(b, clock, 30, 1) == 30


def test_ratio_zero_is_floor_only() -> None:
    clock = FakeClock()
    b = budget(clock, ratio=0.0, min_per_second=1, ttl=5)
    for _ in range(1000):
        b.deposit()
    assert [b.withdraw() for _ in range(10)].count(True) == 5


def test_exact_ratio_is_not_lost_to_rounding() -> None:
    clock = FakeClock()
    b = budget(clock, ratio=0.2, min_per_second=0)
    for _ in range(5):
        b.deposit()
    assert b.withdraw() is True
    assert b.withdraw() is False


def test_requests_leave_the_window_after_ttl() -> None:
    clock = FakeClock()
    b = budget(clock, ratio=0.5, min_per_second=0, ttl=10)
    for _ in range(100):
        b.deposit()
    assert b.remaining() == 50
    clock.advance(9.9)  # the first bucket is still in the window
    assert b.remaining() == 50
    clock.advance(0.1)  # a full ttl later it is not
    assert b.remaining() == 0
    assert b.withdraw() is False


def test_retries_leave_the_window_too() -> None:
    clock = FakeClock()
    b = budget(clock, min_per_second=1, ttl=10)
    assert [b.withdraw() for _ in range(10)].count(True) == 10
    assert not b.withdraw()
    clock.advance(5)
    assert not b.withdraw()  # the spent retries still count
    clock.advance(5)
    assert [b.withdraw() for _ in range(11)].count(True) == 10


def test_sliding_window_drops_buckets_one_by_one() -> None:
    clock = FakeClock()
    b = budget(clock, ratio=1.0, min_per_second=0, ttl=10)
    for _ in range(10):  # 10 requests in each of 10 one-second buckets
        for _ in range(10):
            b.deposit()
        clock.advance(1)
    # Now at t=10: the first bucket just fell out; 90 remain.
    assert b.remaining() == 90
    clock.advance(3)
    assert b.remaining() == 60


def test_long_idle_clears_everything() -> None:
    clock = FakeClock()
    b = budget(clock, ratio=1.0, min_per_second=0)
    for _ in range(50):
        b.deposit()
        b.withdraw()
    clock.advance(3600)
    assert b.remaining() == 0
    b.deposit()
    assert b.remaining() == 1


def test_repr_shows_window_and_decisions() -> None:
    clock = FakeClock()
    b = budget(clock, min_per_second=0)
    for _ in range(10):
        b.deposit()
    b.withdraw()
    b.withdraw()
    b.withdraw()
    assert "[Window: 10 requests, 2 retries | Retries: 2 allowed, 1 denied]" in repr(b)


@pytest.mark.parametrize(
    "cfg",
    [RetryBudgetConfig(ttl=0), RetryBudgetConfig(ratio=-0.1), RetryBudgetConfig(min_per_second=-1)],
)
def test_bad_config_fails_when_built(cfg: RetryBudgetConfig) -> None:
    with pytest.raises(ValueError):
        RetryBudget(cfg)
