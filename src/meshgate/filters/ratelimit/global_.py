"""Global rate limits (BackendTrafficPolicy ``rateLimit.global``): fixed-window counters
in Redis (``meshgate.ratelimit.redis_counters``), shared by every gateway process.

One round trip per request whatever the number of rules that select it: every
selected rule's counter goes into one script call. As in Envoy's ratelimit service,
every selected counter is incremented and the request is limited when any of them is
over its limit. When Redis cannot answer, the request passes (fail open, the default,
as in Envoy Gateway) or gets 500 ``RLSE`` (``--rate-limit-fail-closed``).

Counter names: ``meshgate:rl:{policy}:{rule index}:{scope}:{descriptor}`` (then
``:{window start}``), where scope is ``{route}/{route rule index}``, or ``*`` for a
``shared`` rule.
"""

from __future__ import annotations

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

if TYPE_CHECKING:
    from meshgate.proxy.context import LocalReply, RequestContext
    from meshgate.ratelimit.redis_counters import RedisCounters
    from meshgate.ratelimit.rules import RateLimitRule

KIND = "global"
KEY_PREFIX = "meshgate:rl:"


def counter_prefix(policy: str, rule: RateLimitRule, scope: str) -> str:
    return f"{KEY_PREFIX}{policy}:{rule.index}:{'*' if rule.shared else scope}:"


class GlobalRateLimit(Filter):
    __slots__ = ("counters", "route", "rules")
    name = "GlobalRateLimit"

    def __init__(
        self, route: str, rules: tuple[tuple[RateLimitRule, str], ...], counters: RedisCounters
    ) -> None:
        self.route = route  # "ns/name" of the HTTPRoute, the metrics label
        self.rules = rules  # (rule, its counter-name prefix)
        self.counters = counters

    async def on_request(self, ctx: RequestContext) -> LocalReply | None:
        keys: list[str] = []
        args: list[int] = []
        selected = []
        for rule, prefix in self.rules:
            key = rule.descriptor(ctx)
            if key is None:
                continue
            keys.append(prefix + key)
            args.append(rule.window)
            args.append(rule.cost)
            selected.append(rule)
        if not selected:
            return None
        result = await self.counters.hit(keys, args)
        if result is None:
            if self.counters.fail_closed:
                return unavailable(self.route)
            count(self.route, FAILED_OPEN, KIND)
            return None
        over = None
        for i, rule in enumerate(selected):
            n = result[2 * i]
            reset = -(-result[2 * i + 1] // 1000)  # ms -> whole seconds, rounded up
            requests = rule.requests
            report_quota(ctx, rule.limit_header, requests - n if n < requests else 0, reset)
            if n > requests or (rule.cost == 0 and n >= requests):
                over = reset if over is None else max(over, reset)
        if over is not None:
            return limited(self.route, KIND, max(1, over), b"")
        count(self.route, ALLOWED, KIND)
        return None

    def services(self) -> tuple:
        return (self.counters,)

    def describe(self) -> dict:
        return {
            "type": self.name,
            "rules": [{**rule.describe(), "counter": prefix} for rule, prefix in self.rules],
        }
