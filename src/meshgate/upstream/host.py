"""One upstream endpoint as a cluster sees it: its connection pool and its health.

A host is routable when active health checking has not failed it and outlier
detection has not ejected it. Whoever changes either (``health.py``, ``outlier.py``)
calls ``cluster.hosts_changed()`` so the balancer is rebuilt once per change, never
per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshgate.config.snapshot import Endpoint
    from meshgate.upstream.pool import ConnectionPool


class Host:
    __slots__ = (
        "added_at",
        "address",
        "consecutive_5xx",
        "consecutive_gateway",
        "consecutive_local",
        "detector",
        "ejected",
        "ejected_at",
        "ejected_until",
        "ejections",
        "endpoint",
        "hc_checked",
        "hc_failed",
        "hc_failures",
        "hc_successes",
        "pool",
        "rq_errors",
        "rq_total",
        "weight",
    )

    def __init__(self, endpoint: Endpoint, pool: ConnectionPool, now: float, weight: int = 1) -> None:
        self.endpoint = endpoint
        self.address = f"{endpoint.host}:{endpoint.port}"
        self.pool = pool
        self.detector = None  # the cluster's OutlierDetector, when it has one
        self.weight = weight
        self.added_at = now  # slow start ramps up from here
        # Active health checking (health.py)
        self.hc_failed = False  # True: failed active checks; not routable
        self.hc_successes = 0  # consecutive
        self.hc_failures = 0  # consecutive
        self.hc_checked = False  # at least one check completed
        # Outlier detection (outlier.py)
        self.ejected = False
        self.ejected_at = 0.0
        self.ejected_until = 0.0
        self.ejections = 0  # the ejection-time multiplier; decays while healthy
        self.consecutive_5xx = 0
        self.consecutive_gateway = 0
        self.consecutive_local = 0
        # Counters for /clusters
        self.rq_total = 0
        self.rq_errors = 0

    def __repr__(self) -> str:
        state = "ejected" if self.ejected else "failed_hc" if self.hc_failed else "healthy"
        return f"<Host {self.address} {state}>"

    @property
    def routable(self) -> bool:
        return not self.ejected and not self.hc_failed

    @property
    def active_requests(self) -> int:
        """Requests on this host now: holding a connection, connecting or queued."""
        pool = self.pool
        return pool.active + pool.connecting + len(pool.waiters)
