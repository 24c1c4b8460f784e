"""Local rate limits (BackendTrafficPolicy ``rateLimit.local``): token buckets in this
gateway process, as Envoy's local rate-limit filter keeps them per proxy.

A plain (not ``async``) hook, so a rule with only local limits stays on the engine's
no-task fast path. A request is limited when any rule that selects it has too few
tokens; then no bucket is charged (Envoy Gateway: "the strictest limit is applied"),
so a request refused by one rule does not use up another's quota. With ``--workers N``
every worker process has its own buckets (see docs/rate-limits.md).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from meshgate.filters.base import Filter
from meshgate.filters.ratelimit.reply import ALLOWED, count, limited, report_quota
from meshgate.ratelimit.bucket import BucketTable, take

if TYPE_CHECKING:
    from meshgate.proxy.context import LocalReply, RequestContext
    from meshgate.ratelimit.rules import RateLimitRule

BODY = b"local_rate_limited"  # Envoy's local rate-limit body
KIND = "local"

_clock = time.monotonic  # tests patch this


class LocalRateLimit(Filter):
    __slots__ = ("route", "rules")
    name = "LocalRateLimit"

    def __init__(self, route: str, rules: tuple[tuple[RateLimitRule, BucketTable], ...]) -> None:
        self.route = route  # "ns/name" of the HTTPRoute, the metrics label
        self.rules = rules

    def on_request(self, ctx: RequestContext) -> LocalReply | None:
        now = _clock()
        selected = None
        for rule, table in self.rules:
            key = rule.descriptor(ctx)
            if key is None:
                continue
            bucket = table.refill(key, now)
            if selected is None:
                selected = [(rule, table, bucket)]
            else:
                selected.append((rule, table, bucket))
        if selected is None:
            return None
        if len(selected) > 1:
            for rule, table, bucket in selected:
                if bucket.tokens < (rule.cost or 1):
                    ok, remaining, reset, retry_after = take(table, bucket, rule.cost)
                    report_quota(ctx, rule.limit_header, remaining, reset)
                    return limited(self.route, KIND, retry_after, BODY)
        for rule, table, bucket in selected:
            ok, remaining, reset, retry_after = take(table, bucket, rule.cost)
            report_quota(ctx, rule.limit_header, remaining, reset)
            if not ok:
                return limited(self.route, KIND, retry_after, BODY)
        count(self.route, ALLOWED, KIND)
        return None

    def describe(self) -> dict:
        return {"type": self.name, "rules": [rule.describe() for rule, _ in self.rules]}
