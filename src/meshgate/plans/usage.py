"""Usage per consumer and route, for the admin API's ``GET /usage`` (what an operator
bills from), and the quota decisions ``/metrics`` shows.

Counted in this process as plain ints (a response hook adds to a list), like the
request metrics, and summed over ``--workers`` by worker 0 the way ``/metrics`` is:
each worker answers ``state()`` on its internal socket, ``document()`` adds them up.
They start at zero when the process starts; quota use (``quota`` in the document) is
read from the plan counters instead, so with Redis it survives restarts.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from meshgate.plans.periods import iso

if TYPE_CHECKING:
    from meshgate.plans.book import PlanBook

# (namespace, consumer, route) -> [requests, 2xx, 3xx, 4xx, 5xx, then DENIALS]
USAGE: dict[tuple[str, str, str], list[int]] = {}
DENIALS = ("rate_limit", "quota", "unavailable", "forbidden")
_ROW = 5 + len(DENIALS)
# response flag -> slot of its denial reason
_BY_FLAG = {"RL": 5, "QE": 6, "RLSE": 7}
_FORBIDDEN = 8

# result (allowed, exceeded, failed_open, failed_closed) -> requests a quota applied to
QUOTA_DECISIONS: dict[str, int] = {}


def record(namespace: str, consumer: str, route: str, status: int, flag: str) -> None:
    key = (namespace, consumer, route)
    row = USAGE.get(key)
    if row is None:
        row = USAGE[key] = [0] * _ROW
    row[0] += 1
    klass = status // 100
    if 2 <= klass <= 5:
        row[klass - 1] += 1
    if flag:
        slot = _BY_FLAG.get(flag if "," not in flag else flag.rpartition(",")[2])
        if slot is not None:
            row[slot] += 1
    elif status == 403:
        row[_FORBIDDEN] += 1


def quota_keys(books: list[PlanBook], now: float) -> list[tuple[str, str, int, int, str]]:
    """(consumer "ns/name", period, limit, end, counter key) of every quota of every
    consumer with a plan, for the periods holding ``now``."""
    out = []
    for book in books:
        for cp in book.consumers.values():
            for (period, limit), head in zip(cp.plan.quotas, cp.quota_keys):
                start, end = period.bounds(now)
                out.append((cp.consumer, period.name, limit, end, f"{head}{start}"))
    return out


def state(books: list[PlanBook], counters: Any, now: float) -> dict:
    """This worker's counts as JSON-able data; with counters in memory, also this
    worker's quota use (each worker has its own)."""
    doc: dict[str, Any] = {"usage": [[*key, *row] for key, row in USAGE.items()]}
    read = getattr(counters, "counts", None)
    if read is not None:  # MemoryCounters
        keys = quota_keys(books, now)
        used = counters.read([k[4] for k in keys])
        doc["quota"] = {f"{c}|{p}": n for (c, p, *_), n in zip(keys, used)}
    return doc


def document(
    states: list[dict], books: list[PlanBook], used: dict[str, int | None] | None, now: float, workers: int
) -> dict:
    """The ``GET /usage`` document from every worker's ``state()``; ``used``: quota use
    read from Redis ("consumer|period" -> units, None when Redis did not answer), or
    None to sum the workers' own."""
    consumers: dict[str, dict] = {}
    for book in books:
        for cp in book.consumers.values():
            consumers[cp.consumer] = {"plan": cp.plan.key, "quota": {}, "routes": {}}
    for st in states:
        for ns, consumer, route, *row in st["usage"]:
            entry = consumers.setdefault(f"{ns}/{consumer}", {"plan": None, "quota": {}, "routes": {}})
            r = entry["routes"].get(route)
            if r is None:
                r = entry["routes"][route] = {
                    "requests": 0,
                    "responses": {"2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0},
                    "denied": dict.fromkeys(DENIALS, 0),
                }
            r["requests"] += row[0]
            for i, klass in enumerate(("2xx", "3xx", "4xx", "5xx")):
                r["responses"][klass] += row[1 + i]
            for i, reason in enumerate(DENIALS):
                r["denied"][reason] += row[5 + i]
    if used is None:
        used = {}
        for st in states:
            for k, n in st.get("quota", {}).items():
                used[k] = used.get(k, 0) + n
    for consumer, period, limit, end, _ in quota_keys(books, now):
        n = used.get(f"{consumer}|{period}", 0)  # None: Redis did not answer
        consumers[consumer]["quota"][period] = {
            "limit": limit,
            "used": n,
            "remaining": max(0, limit - n) if n is not None else None,
            "resets_at": iso(end),
            "resets_in": max(0, math.ceil(end - now)),
        }
    return {
        "time": iso(int(now)),
        "workers": workers,
        "consumers": {k: consumers[k] for k in sorted(consumers)},
    }
