"""The counters of plans: in this process (``MemoryCounters``) or in Redis
(``RedisPlanCounters``, when the gateway has ``--redis-url``), with one semantics.

A request names the counters that apply to it (its consumer's rate-limit windows and
quota periods, each key ending with its period's start), with a limit and a cost
each. ``take`` checks them all and, only if every one has room, adds every cost:
a refused request takes nothing, so a consumer over one limit does not use up another
(the quota counts only what was let through — what an operator bills). It answers
(over, counts): ``over`` is 0 when the request passes, else the 1-based position of the
first counter without room; ``counts`` are the counts after the request (or as they
are, when refused).

In Redis, one Lua script does it atomically (two gateways can never both take the last
unit), through the rate-limit module's client, pipeline and outage handling
(``meshgate.ratelimit.redis_counters``). A counter expires an hour after its period
ends, which leaves room for gateway clocks that disagree by less than that: periods are
computed by the gateway (a calendar month is not a fixed window Redis could align).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshgate.ratelimit.redis_counters import script

if TYPE_CHECKING:
    import asyncio

    from meshgate.ratelimit.redis_counters import RedisCounters

KEY_PREFIX = "meshgate:plan:"
GRACE = 3600  # seconds a counter outlives its period

# KEYS[i]: a counter (with its period start); ARGV[3i-2..3i]: its limit, the request's
# cost, the Unix time it expires. Returns {over, count1, count2, ...}.
PLAN_LUA = """
local have = redis.call('MGET', unpack(KEYS))
local out = {0}
for i = 1, #KEYS do
  local n = have[i] and tonumber(have[i]) or 0
  out[i + 1] = n
  if out[1] == 0 and n + tonumber(ARGV[3 * i - 1]) > tonumber(ARGV[3 * i - 2]) then
    out[1] = i
  end
end
if out[1] == 0 then
  for i = 1, #KEYS do
    local cost = tonumber(ARGV[3 * i - 1])
    local n = redis.call('INCRBY', KEYS[i], cost)
    if n == cost then
      redis.call('EXPIREAT', KEYS[i], ARGV[3 * i])
    end
    out[i + 1] = n
  end
end
return out
"""
PLAN_SHA = script(PLAN_LUA)

READ_LUA = "return redis.call('MGET', unpack(KEYS))"
READ_SHA = script(READ_LUA)


class MemoryCounters:
    """Plan counters in this process (per worker with ``--workers N``)."""

    __slots__ = ("_next_sweep", "counts", "sweep_above")

    def __init__(self, sweep_above: int = 10_000) -> None:
        self.counts: dict[str, list] = {}  # key -> [count, expires at]
        self.sweep_above = sweep_above
        self._next_sweep = sweep_above

    def take(
        self, keys: list[str], limits: list[int], costs: list[int], ends: list[int], now: float
    ) -> tuple[int, list[int]]:
        counts = self.counts
        if len(counts) >= self._next_sweep:
            self.sweep(now)
        have = [counts.get(k) for k in keys]
        out = [e[0] if e is not None else 0 for e in have]
        for i, n in enumerate(out):
            if n + costs[i] > limits[i]:
                return i + 1, out
        for i, key in enumerate(keys):
            entry = have[i]
            if entry is None:
                counts[key] = [costs[i], ends[i] + GRACE]
            else:
                entry[0] += costs[i]
            out[i] += costs[i]
        return 0, out

    def read(self, keys: list[str]) -> list[int]:
        return [e[0] if (e := self.counts.get(k)) is not None else 0 for k in keys]

    def sweep(self, now: float) -> None:
        """Forget counters whose period (and grace) is over."""
        stale = [k for k, e in self.counts.items() if e[1] <= now]
        for k in stale:
            del self.counts[k]
        self._next_sweep = max(self.sweep_above, 2 * len(self.counts))


class RedisPlanCounters:
    """Plan counters in the Redis of ``--redis-url``, shared by every gateway."""

    __slots__ = ("redis",)

    def __init__(self, redis: RedisCounters) -> None:
        self.redis = redis

    def take(
        self, keys: list[str], limits: list[int], costs: list[int], ends: list[int], now: float
    ) -> asyncio.Future:
        """A future of (over, counts), or of ``None`` when Redis cannot answer."""
        args = []
        for i in range(len(keys)):
            args += (limits[i], costs[i], ends[i] + GRACE)
        return self.redis.call(PLAN_SHA, keys, args)

    async def read(self, keys: list[str]) -> list[int] | None:
        if not keys:
            return []
        got = await self.redis.call(READ_SHA, keys, [])
        if got is None:
            return None
        return [int(v) if v is not None else 0 for v in got]


_MEMORY = MemoryCounters()
_REDIS: RedisPlanCounters | None = None


def plan_counters() -> MemoryCounters | RedisPlanCounters:
    """This process's plan counters: in the Redis of ``--redis-url`` when there is one,
    else in memory. Either is kept across config reloads (a reload must not hand every
    consumer a fresh quota)."""
    global _REDIS
    from meshgate.ratelimit.redis_counters import SETTINGS, counters

    if not SETTINGS.url:
        return _MEMORY
    redis = counters()
    if _REDIS is None or _REDIS.redis is not redis:
        _REDIS = RedisPlanCounters(redis)
    return _REDIS


def split(reply: list) -> tuple[int, list[int]]:
    """The script's reply as ``take`` answers: (over, counts)."""
    return int(reply[0]), [int(n) for n in reply[1:]]
