"""What every rate-limit filter shares: the one way a request is limited (429, flag
``RL``) or refused because the counters are unavailable (500, flag ``RLSE``, fail
closed), the ``X-RateLimit-*`` headers, and the per-process decision counts that
``/metrics`` shows as ``meshgate_ratelimit_decisions_total``.

Headers follow Envoy's ``enable_x_ratelimit_headers: DRAFT_VERSION_03``, which Envoy
Gateway turns on: ``x-ratelimit-limit: 10, 10;w=60`` (limit, then the quota policy with
its window in seconds), ``x-ratelimit-remaining``, ``x-ratelimit-reset`` (seconds). They
go on every response of a request some rule selected, limited or not; when several
rules select it, the one with the fewest requests remaining is reported. A 429 also
has ``retry-after`` (seconds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshgate.proxy.context import LocalReply

if TYPE_CHECKING:
    from meshgate.proxy.context import RequestContext

LIMITED_FLAG = "RL"
SERVICE_ERROR_FLAG = "RLSE"

ALLOWED = "allowed"
LIMITED = "limited"
FAILED_OPEN = "failed_open"
FAILED_CLOSED = "failed_closed"

LIMIT = "x-ratelimit-limit"
REMAINING = "x-ratelimit-remaining"
RESET = "x-ratelimit-reset"

# (route, result, type) -> decisions in this process; plain ints, synced into Metrics
# at scrape time. type: local | global | plan (a Consumer's Plan, meshgate.filters.plans).
DECISIONS: dict[tuple[str, str, str], int] = {}

_TEXT = (("content-type", "text/plain"),)


def count(route: str, result: str, kind: str) -> None:
    key = (route, result, kind)
    DECISIONS[key] = DECISIONS.get(key, 0) + 1


def report_quota(ctx: RequestContext, limit: str, remaining: int, reset: int) -> None:
    """Put the X-RateLimit-* headers on the response, unless a tighter quota (fewer
    requests remaining) is already there."""
    extra = ctx.response_headers_to_add
    if extra is None:
        ctx.response_headers_to_add = [(LIMIT, limit), (REMAINING, str(remaining)), (RESET, str(reset))]
        return
    for i, (name, value) in enumerate(extra):
        if name == REMAINING:
            if int(value) <= remaining:
                return
            extra[i - 1 : i + 2] = [(LIMIT, limit), (REMAINING, str(remaining)), (RESET, str(reset))]
            return
    extra += [(LIMIT, limit), (REMAINING, str(remaining)), (RESET, str(reset))]


def limited(route: str, kind: str, retry_after: int, body: bytes) -> LocalReply:
    """Count the decision and build the 429 (quota headers come from ``report_quota``)."""
    count(route, LIMITED, kind)
    return LocalReply(429, [("retry-after", str(retry_after)), *_TEXT], body, LIMITED_FLAG)


def unavailable(route: str, kind: str = "global") -> LocalReply:
    """Fail closed: the counters cannot answer. 500 as Envoy's rate-limit filter
    answers with ``failure_mode_deny`` (Envoy Gateway's ``failClosed``)."""
    count(route, FAILED_CLOSED, kind)
    return LocalReply(500, list(_TEXT), b"rate limit service unavailable", SERVICE_ERROR_FLAG)
