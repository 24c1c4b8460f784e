"""Rate limiting (BackendTrafficPolicy ``rateLimit``): the local filter (token buckets
in this process) and the global one (counters in Redis), in Envoy's order, local
first.

``rate_limit_filters`` builds them for one HTTPRoute rule. Each rule has its own
counters unless the policy's rule is ``shared`` (one set for every route the policy
applies to). Local buckets are kept in a process-wide table keyed by what makes them
count (policy, scope, rule fingerprint), so a config reload that leaves a rule as it
was keeps its buckets and clients do not get a fresh quota with every reload.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from meshgate.filters.ratelimit.global_ import GlobalRateLimit, counter_prefix
from meshgate.filters.ratelimit.local import LocalRateLimit
from meshgate.ratelimit.bucket import BucketTable

if TYPE_CHECKING:
    from meshgate.filters.base import Filter
    from meshgate.ratelimit.rules import RateLimitPolicy, RateLimitRule

# Alive as long as some snapshot's filter holds the table.
_TABLES: weakref.WeakValueDictionary[tuple, BucketTable] = weakref.WeakValueDictionary()


def bucket_table(policy: str, scope: str, rule: RateLimitRule) -> BucketTable:
    key = (policy, "*" if rule.shared else scope, rule.fingerprint())
    table = _TABLES.get(key)
    if table is None:
        table = BucketTable(rule.requests, rule.window)
        _TABLES[key] = table
    return table


def rate_limit_filters(policy: RateLimitPolicy, route: str, rule_index: int) -> tuple[Filter, ...]:
    """The filters of ``policy`` for rule ``rule_index`` of HTTPRoute ``route`` ("ns/name")."""
    from meshgate.ratelimit.redis_counters import counters

    scope = f"{route}/{rule_index}"
    out: list[Filter] = []
    if policy.local:
        out.append(
            LocalRateLimit(route, tuple((r, bucket_table(policy.key, scope, r)) for r in policy.local))
        )
    if policy.global_:
        out.append(
            GlobalRateLimit(
                route, tuple((r, counter_prefix(policy.key, r, scope)) for r in policy.global_), counters()
            )
        )
    return tuple(out)


__all__ = ["GlobalRateLimit", "LocalRateLimit", "rate_limit_filters"]
