"""Plans (meshgate.dev Plan): a Consumer's rate limits and quotas, enforced after
authentication and authorization, and its usage per route counted.

One filter per namespace that has Plans, compiled into every HTTPRoute rule whose
security policies (in that namespace) authenticate — API keys, basic auth, JWT or
token introspection — whichever policy it is: a plan follows its Consumer, as Kong's
consumer plugins and Tyk's policies do. It runs last among the security filters
(``plans`` in ``config/compile/security.py``), so a request refused by authentication
or authorization is never counted, and before the BackendTrafficPolicy rate limits.

- Anonymous requests (no consumer) and consumers without a plan pass untouched.
- The request's counters (rate-limit windows, then quota periods) are checked and
  taken together (``meshgate.plans.counters``): with Redis one script call, pipelined
  like global rate limits; else in this process, without waiting.
- Refused by a rate limit: 429, flag ``RL``, ``X-RateLimit-*`` headers (the rate-limit
  module's reply, type ``plan`` in its metrics). Refused by a quota: 429, flag ``QE``,
  ``Retry-After`` until the period ends and ``X-Quota-Limit``, ``X-Quota-Remaining``,
  ``X-Quota-Reset``. When both refuse, the quota is reported (it lasts longer).
- Allowed responses carry the headers of the tightest limit and the tightest quota.
- Redis unreachable: as global rate limits, pass (fail open) or 500 ``RLSE``
  (``--rate-limit-fail-closed``).

The response hook counts usage per consumer and route (``meshgate.plans.usage``).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from meshgate.filters.base import Filter
from meshgate.filters.ratelimit.reply import (
    ALLOWED,
    FAILED_OPEN,
    count,
    limited,
    report_quota,
    unavailable,
)
from meshgate.plans.counters import RedisPlanCounters, split
from meshgate.plans.usage import QUOTA_DECISIONS, record
from meshgate.proxy.context import LocalReply

if TYPE_CHECKING:
    from meshgate.plans.book import ConsumerPlan, PlanBook
    from meshgate.proxy.context import RequestContext, ResponseHead

KIND = "plan"  # the type label of meshgate_ratelimit_decisions_total
QUOTA_FLAG = "QE"
QUOTA_BODY = b"quota exceeded"

QUOTA_LIMIT = "x-quota-limit"
QUOTA_REMAINING = "x-quota-remaining"
QUOTA_RESET = "x-quota-reset"

_clock = time.time  # tests patch this; periods are UTC wall-clock periods


def _decide(quota: str) -> None:
    QUOTA_DECISIONS[quota] = QUOTA_DECISIONS.get(quota, 0) + 1


def _seconds(end: int, now: float) -> int:
    return max(0, math.ceil(end - now - 1e-9))


class PlanEnforcement(Filter):
    __slots__ = ("book", "counters", "namespace", "plans")
    name = "Plans"

    def __init__(self, book: PlanBook, counters) -> None:
        self.book = book
        self.namespace = book.namespace
        self.plans = book.consumers  # Consumer name -> ConsumerPlan
        self.counters = counters  # plans.counters.MemoryCounters | RedisPlanCounters

    def on_request(self, ctx: RequestContext):
        consumer = ctx.consumer
        if consumer is None:
            return None
        cp = self.plans.get(consumer)
        if cp is None:
            return None
        plan = cp.plan
        rule = ctx.rule
        now = _clock()
        keys: list[str] = []
        limits: list[int] = []
        costs: list[int] = []
        ends: list[int] = []
        for (period, requests), head in zip(plan.windows, cp.window_keys):
            start, end = period.bounds(now)
            keys.append(head + str(start))
            limits.append(requests)
            costs.append(1)
            ends.append(end)
        windows = len(keys)
        if plan.quotas:
            cost = plan.cost(rule.route, rule.name)  # type: ignore[union-attr]
            if cost > 0:
                for (period, units), head in zip(plan.quotas, cp.quota_keys):
                    start, end = period.bounds(now)
                    keys.append(head + str(start))
                    limits.append(units)
                    costs.append(cost)
                    ends.append(end)
        if not keys:
            return None
        result = self.counters.take(keys, limits, costs, ends, now)
        if type(result) is tuple:
            return self._decide(ctx, cp, result, windows, limits, costs, ends, now)
        return self._wait(ctx, cp, result, windows, limits, costs, ends, now)

    async def _wait(self, ctx, cp, future, windows, limits, costs, ends, now):
        reply = await future
        if reply is None:
            return self._unavailable(ctx, windows, len(limits) > windows)
        return self._decide(ctx, cp, split(reply), windows, limits, costs, ends, now)

    def _unavailable(self, ctx: RequestContext, windows: int, quotas: bool) -> LocalReply | None:
        route = ctx.rule.route  # type: ignore[union-attr]
        if self.counters.redis.fail_closed:
            if quotas:
                _decide("failed_closed")
            return unavailable(route, KIND) if windows else unavailable_quota()
        if windows:
            count(route, FAILED_OPEN, KIND)
        if quotas:
            _decide("failed_open")
        return None

    def _decide(
        self,
        ctx: RequestContext,
        cp: ConsumerPlan,
        result: tuple[int, list[int]],
        windows: int,
        limits: list[int],
        costs: list[int],
        ends: list[int],
        now: float,
    ) -> LocalReply | None:
        over, counts = result
        route = ctx.rule.route  # type: ignore[union-attr]
        n = len(limits)
        if over:
            # A quota out of room is what the client must hear about: it lasts longer.
            for j in range(windows, n):
                if counts[j] + costs[j] > limits[j]:
                    _decide("exceeded")
                    return quota_exceeded(limits[j], max(0, limits[j] - counts[j]), _seconds(ends[j], now))
            i = over - 1
            retry = _seconds(ends[i], now)
            report_quota(ctx, cp.plan.window_headers[i], max(0, limits[i] - counts[i]), retry)
            return limited(route, KIND, max(1, retry), b"")
        if windows:
            for i in range(windows):
                report_quota(ctx, cp.plan.window_headers[i], limits[i] - counts[i], _seconds(ends[i], now))
            count(route, ALLOWED, KIND)
        if n > windows:
            _decide("allowed")
            best = windows
            for j in range(windows + 1, n):
                if limits[j] - counts[j] < limits[best] - counts[best]:
                    best = j
            fields = [
                (QUOTA_LIMIT, str(limits[best])),
                (QUOTA_REMAINING, str(limits[best] - counts[best])),
                (QUOTA_RESET, str(_seconds(ends[best], now))),
            ]
            if ctx.response_headers_to_add is None:
                ctx.response_headers_to_add = fields
            else:
                ctx.response_headers_to_add += fields
        return None

    def on_response(self, ctx: RequestContext, head: ResponseHead) -> None:
        consumer = ctx.consumer
        if consumer is not None:
            record(self.namespace, consumer, ctx.rule.route, head.status, ctx.flag)  # type: ignore[union-attr]

    def services(self) -> tuple:
        if isinstance(self.counters, RedisPlanCounters):
            return (self.book, self.counters.redis)
        return (self.book,)

    def describe(self) -> dict:
        return {
            "type": self.name,
            "namespace": self.namespace,
            "counters": "redis" if isinstance(self.counters, RedisPlanCounters) else "memory",
            **self.book.describe(),
        }


def quota_exceeded(limit: int, remaining: int, reset: int) -> LocalReply:
    """429 for a spent quota: retry when its period ends (UTC day or month)."""
    reset = max(1, reset)
    return LocalReply(
        429,
        [
            ("retry-after", str(reset)),
            ("content-type", "text/plain"),
            (QUOTA_LIMIT, str(limit)),
            (QUOTA_REMAINING, str(remaining)),
            (QUOTA_RESET, str(reset)),
        ],
        QUOTA_BODY,
        QUOTA_FLAG,
    )


def unavailable_quota() -> LocalReply:
    return LocalReply(500, [("content-type", "text/plain")], b"quota service unavailable", "RLSE")


def plan_filter(book: PlanBook) -> PlanEnforcement:
    from meshgate.plans.counters import plan_counters

    return PlanEnforcement(book, plan_counters())
