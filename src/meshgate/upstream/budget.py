"""The retry budget: how many retries a cluster may add on top of its requests.

Linkerd's (and tower's ``TpsBudget``) model. Over a sliding window of ``ttl`` seconds,

    retries allowed = min_per_second * ttl + ratio * requests_in_window
                      - retries_in_window

so steady traffic can add at most ``ratio`` of itself as retries (20% by default) and a
quiet cluster can still retry ``min_per_second``. A budget bounds retry storms where a
fixed "retry 3 times" multiplies load by four exactly when the backend is failing.

The window is ``SLOTS`` buckets of ``ttl / SLOTS`` seconds each: a request or retry
counts for between ``ttl * (SLOTS - 1) / SLOTS`` and ``ttl`` seconds. Running sums are
kept beside the buckets, so ``deposit`` and ``withdraw`` are O(1); the buckets move
only when the clock has crossed a bucket boundary. Single-threaded (one event loop).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshgate.config.traffic import RetryBudget as RetryBudgetConfig

SLOTS = 10
# 0.2 * 5 requests must allow 1 retry even where binary floats round down.
_EPSILON = 1e-9


@dataclass(slots=True)
class BudgetStats:
    """What the budget decided since it was made, for /clusters and metrics."""

    allowed: int = 0
    denied: int = 0


class RetryBudget:
    __slots__ = (
        "_clock",
        "_index",
        "_req_sum",
        "_requests",
        "_retries",
        "_retry_sum",
        "_slot_end",
        "_width",
        "min_per_second",
        "ratio",
        "reserve",
        "stats",
        "ttl",
    )

    def __init__(self, cfg: RetryBudgetConfig, clock: Callable[[], float] = time.monotonic) -> None:
        if cfg.ttl <= 0 or cfg.ratio < 0 or cfg.min_per_second < 0:
            raise ValueError(
                f"retry budget needs ttl > 0, ratio >= 0, minRetriesPerSecond >= 0; got {cfg}"
            )
        self.ratio = cfg.ratio
        self.min_per_second = cfg.min_per_second
        self.ttl = cfg.ttl
        # Retries the window allows with no requests at all.
        self.reserve = cfg.min_per_second * cfg.ttl
        self.stats = BudgetStats()
        self._clock = clock
        self._width = cfg.ttl / SLOTS
        self._requests = [0] * SLOTS
        self._retries = [0] * SLOTS
        self._req_sum = 0
        self._retry_sum = 0
        self._index = 0
        self._slot_end = clock() + self._width

    def __repr__(self) -> str:
        return (
            f"<RetryBudget ratio={self.ratio} min={self.min_per_second}/s ttl={self.ttl}s "
            f"[Window: {self._req_sum} requests, {self._retry_sum} retries | "
            f"Retries: {self.stats.allowed} allowed, {self.stats.denied} denied]>"
        )

    def deposit(self) -> None:
        """One request (a first try) was sent."""
        now = self._clock()
        if now >= self._slot_end:
            self._advance(now)
        self._requests[self._index] += 1
        self._req_sum += 1

    def withdraw(self) -> bool:
        """A retry wants to go: True, and it is counted, when the budget allows it."""
        now = self._clock()
        if now >= self._slot_end:
            self._advance(now)
        if self._retry_sum + 1 <= self.reserve + self.ratio * self._req_sum + _EPSILON:
            self._retries[self._index] += 1
            self._retry_sum += 1
            self.stats.allowed += 1
            return True
        self.stats.denied += 1
        return False

    def remaining(self) -> int:
        """Retries the budget would allow right now."""
        now = self._clock()
        if now >= self._slot_end:
            self._advance(now)
        left = self.reserve + self.ratio * self._req_sum - self._retry_sum + _EPSILON
        return max(0, int(left))

    def _advance(self, now: float) -> None:
        """Move to the bucket that holds ``now``, emptying the ones that fell out."""
        steps = int((now - self._slot_end) // self._width) + 1
        self._slot_end += steps * self._width
        requests, retries = self._requests, self._retries
        if steps >= SLOTS:  # idle for a whole window: nothing in it is left
            for i in range(SLOTS):
                requests[i] = 0
                retries[i] = 0
            self._req_sum = 0
            self._retry_sum = 0
            return
        i = self._index
        for _ in range(steps):
            i = (i + 1) % SLOTS
            self._req_sum -= requests[i]
            self._retry_sum -= retries[i]
            requests[i] = 0
            retries[i] = 0
        self._index = i
