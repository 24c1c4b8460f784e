"""Token buckets for local rate limits: sans-IO, the time is an argument.

A rule with ``requests`` per ``window`` seconds is Envoy's local rate limit token bucket
with ``max_tokens = tokens_per_fill = requests`` and ``fill_interval = window``, refilled
continuously (``requests / window`` tokens a second, as Envoy's atomic token bucket
does) rather than in one step per interval. A full bucket admits a burst of
``requests``; after that, one request per ``window / requests`` seconds.

``BucketTable`` holds the buckets of one rule: one per descriptor (one in all unless
the rule has Distinct selectors). It forgets buckets that have refilled completely
(they are as good as new) when it grows past ``sweep_above``, so distinct clients
cannot grow it without bound.
"""

from __future__ import annotations

import math


class TokenBucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class BucketTable:
    """The token buckets of one rule, by descriptor."""

    __slots__ = ("__weakref__", "_next_sweep", "buckets", "capacity", "rate", "sweep_above", "window")

    def __init__(self, requests: int, window: float, sweep_above: int = 10_000) -> None:
        self.capacity = float(requests)
        self.window = float(window)
        self.rate = requests / window  # tokens per second
        self.buckets: dict[str, TokenBucket] = {}
        self.sweep_above = sweep_above
        self._next_sweep = sweep_above

    def refill(self, key: str, now: float) -> TokenBucket:
        """The bucket for ``key`` with the tokens it has at ``now``."""
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= self._next_sweep:
                self.sweep(now)
            bucket = self.buckets[key] = TokenBucket(self.capacity, now)
            return bucket
        elapsed = now - bucket.updated
        if elapsed > 0:
            tokens = bucket.tokens + elapsed * self.rate
            bucket.tokens = min(self.capacity, tokens)
            bucket.updated = now
        return bucket

    def seconds_until(self, bucket: TokenBucket, tokens: float) -> float:
        """Seconds until ``bucket`` holds ``tokens`` (0 if it does already)."""
        missing = tokens - bucket.tokens
        if missing <= 0:
            return 0.0
        if self.rate <= 0:
            return self.window  # requests: 0 never refills; say "a window" to clients
        return missing / self.rate

    def sweep(self, now: float) -> None:
        """Drop buckets that are full again at ``now``."""
        full_after = self.window  # an empty bucket is full one window later
        stale = [k for k, b in self.buckets.items() if now - b.updated >= full_after]
        for k in stale:
            del self.buckets[k]
        # Next sweep when the table has doubled, so sweeping stays amortised O(1).
        self._next_sweep = max(self.sweep_above, 2 * len(self.buckets))


def take(
    table: BucketTable, bucket: TokenBucket, cost: int
) -> tuple[bool, int, int, int]:
    """Take ``cost`` tokens if there are enough (cost 0: only check that one is left).

    Returns (allowed, remaining, reset, retry_after): whole tokens left, seconds until
    the bucket is full, and (when not allowed) seconds until the request would pass.
    Does not take anything when the request is not allowed.
    """
    need = cost if cost > 0 else 1
    if bucket.tokens >= need:
        bucket.tokens -= cost
        return True, int(bucket.tokens), _ceil(table.seconds_until(bucket, table.capacity)), 0
    wait = table.seconds_until(bucket, need)
    return False, int(bucket.tokens), _ceil(table.seconds_until(bucket, table.capacity)), max(1, _ceil(wait))


def _ceil(seconds: float) -> int:
    # 1e-9: a float that should be whole (0.1 * 30) must not round up a second.
    return max(0, math.ceil(seconds - 1e-9))
