"""A cluster at run time: its hosts, how requests are spread over them, and the
limits that keep a failing backend from taking the gateway down with it.

``ClusterRuntime`` owns, for one compiled ``Cluster``:
- the hosts (``Host``: endpoint, connection pool, health state), kept across reloads
  that keep the endpoint, so warm connections and health verdicts survive;
- the balancer, rebuilt by ``hosts_changed()`` whenever the routable set changes
  (health check, ejection, DNS, reload), never per request; with fewer than
  ``panic_threshold`` percent of hosts routable it balances over all of them, as
  Envoy's panic mode does, because a probably-wrong health verdict on most hosts
  must not turn into a full outage;
- the circuit breaker's counters (requests, pending requests, connections, retries)
  and its limits; the retry budget; the outlier detector, the active health checker
  and the DNS re-resolver, which run in the background.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from meshgate.proxy.errors import NoHealthyUpstream, UpstreamOverflow
from meshgate.upstream.balancer import make_balancer
from meshgate.upstream.budget import RetryBudget
from meshgate.upstream.host import Host
from meshgate.upstream.pool import ConnectionPool

if TYPE_CHECKING:
    from meshgate.config.snapshot import Cluster, Endpoint, Limits
    from meshgate.proxy.context import RequestContext

log = logging.getLogger("meshgate.upstream")


class ClusterRuntime:
    def __init__(self, cluster: Cluster, limits: Limits, clock=time.monotonic) -> None:
        self.cluster = cluster
        self.name = cluster.name
        self.policy = policy = cluster.policy
        self.clock = clock
        self.set_limits(limits)
        breaker = policy.breaker
        self.max_requests = breaker.max_parallel_requests
        self.max_pending = breaker.max_pending_requests
        self.max_connections = breaker.max_connections
        self.max_retries = breaker.max_parallel_retries
        # Circuit-breaker state: what is in use now.
        self.rq_active = 0  # requests between first pick and the end of the exchange
        self.rq_pending = 0  # requests waiting for a connection
        self.connections = 0  # open or opening connections, reserved slots included
        self.retries_active = 0
        # Counters (rendered by /metrics and /clusters).
        self.overflows = {"requests": 0, "pending": 0, "connections": 0, "retries": 0}
        self.budget_denied = 0
        self.panic = False
        self.synced: dict = {}  # counter values already added to Metrics
        self.hosts: list[Host] = []
        self.routable: list[Host] = []
        self.balancer = make_balancer(policy.lb, clock)
        self.budget = RetryBudget(policy.budget, clock)
        self.outlier = None
        self.health = None
        self.dns = None
        self._sweeper: asyncio.TimerHandle | None = None
        if policy.outlier is not None:
            from meshgate.upstream.outlier import OutlierDetector

            # One host may always be ejected, whatever maxEjectionPercent says (the
            # issue's rule; Envoy's always_eject_one_host): with 3 hosts and the
            # default 10%, a failing host would otherwise never be ejected.
            self.outlier = OutlierDetector(
                policy.outlier, self._hosts, self.hosts_changed, clock, always_eject_one_host=True
            )
        if policy.health is not None:
            from meshgate.upstream.health import ActiveHealthChecker

            self.health = ActiveHealthChecker(policy.health, self._hosts, self.hosts_changed, clock)
        if cluster.dns:
            from meshgate.upstream.dns import DnsResolver

            # Until the first resolution the names themselves are the hosts (each
            # connect resolves), so the cluster serves from the first request on.
            self.dns = DnsResolver(cluster.endpoints, policy.dns_refresh, self.set_endpoints)
        self.set_endpoints(cluster.endpoints)

    def __repr__(self) -> str:
        return f"<ClusterRuntime {self.name} hosts={len(self.hosts)} routable={len(self.routable)}>"

    def _hosts(self) -> list[Host]:
        return self.hosts

    def set_limits(self, limits: Limits) -> None:
        policy = self.policy
        self.connect_timeout = policy.connect_timeout or limits.upstream_connect_timeout
        self.idle_timeout = policy.idle_timeout or limits.upstream_idle_timeout
        self.max_connection_duration = policy.max_connection_duration

    # -- hosts -----------------------------------------------------------------------

    def set_endpoints(self, endpoints: tuple[Endpoint, ...]) -> None:
        """Adopt a new endpoint list, keeping the Host (pool, health) of each one that
        stays; removed hosts close their idle connections."""
        old = {h.endpoint: h for h in self.hosts}
        now = self.clock()
        hosts = []
        for ep in dict.fromkeys(endpoints):
            host = old.pop(ep, None)
            if host is None:
                host = Host(ep, ConnectionPool(ep, self), now)
                host.pool.host = host
                host.detector = self.outlier
            hosts.append(host)
        for gone in old.values():
            gone.pool.close_idle()
        self.hosts = hosts
        if self.health is not None:
            self.health.hosts_changed()  # check new hosts now, not at the next round
        self.hosts_changed()

    def hosts_changed(self) -> None:
        """Recompute the routable set and rebuild the balancer (rare: not per request)."""
        hosts = self.hosts
        routable = [h for h in hosts if h.routable]
        threshold = self.policy.lb.panic_threshold
        panic = bool(hosts) and len(routable) * 100 < threshold * len(hosts)
        if panic != self.panic:
            self.panic = panic
            if panic:
                log.warning(
                    "cluster %s: %d of %d hosts healthy, under the panic threshold of %g%%: "
                    "balancing over all hosts",
                    self.name,
                    len(routable),
                    len(hosts),
                    threshold,
                )
            else:
                log.info("cluster %s: out of panic mode", self.name)
        if panic:
            routable = list(hosts)
        self.routable = routable
        if routable:
            self.balancer.update(routable)

    # -- per request -----------------------------------------------------------------

    def begin_request(self) -> None:
        """A request starts using this cluster; raises UpstreamOverflow at the limit."""
        if self.rq_active >= self.max_requests:
            self.overflows["requests"] += 1
            raise UpstreamOverflow("circuit breaker: too many parallel requests")
        self.rq_active += 1
        self.budget.deposit()

    def wake_one(self, first: ConnectionPool) -> None:
        """A connection slot was freed: reserve it for a waiting request, preferring
        one that waits on ``first`` (the pool whose connection closed)."""
        if not self.rq_pending or self.connections >= self.max_connections:
            return
        if first.hand_slot():
            return
        for host in self.hosts:
            if host.pool.hand_slot():
                return

    def end_request(self) -> None:
        self.rq_active -= 1

    def pick(self, ctx: RequestContext | None, exclude: Host | None = None) -> Host:
        routable = self.routable
        if not routable:
            raise NoHealthyUpstream()
        if len(routable) == 1:
            return routable[0]
        return self.balancer.pick(ctx, exclude)

    def begin_retry(self) -> bool:
        """May one more retry go now? (max parallel retries, then the retry budget)"""
        if self.retries_active >= self.max_retries:
            self.overflows["retries"] += 1
            return False
        if not self.budget.withdraw():
            self.budget_denied += 1
            return False
        self.retries_active += 1
        return True

    def end_retry(self) -> None:
        self.retries_active -= 1

    # -- background work -------------------------------------------------------------

    def start(self) -> None:
        if self.health is not None:
            self.health.start()
        if self.dns is not None:
            self.dns.start()
        if self.outlier is not None and self._sweeper is None:
            self._schedule_outlier_sweep()

    def _schedule_outlier_sweep(self) -> None:
        loop = asyncio.get_event_loop()
        self._sweeper = loop.call_later(self.policy.outlier.interval, self._outlier_sweep)  # type: ignore[union-attr]

    def _outlier_sweep(self) -> None:
        self.outlier.sweep()  # type: ignore[union-attr]
        self._schedule_outlier_sweep()

    def stop(self) -> None:
        if self.health is not None:
            self.health.stop()
        if self.dns is not None:
            self.dns.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def close_idle(self, older_than: float | None = None) -> None:
        for host in self.hosts:
            host.pool.close_idle(older_than)

    # -- views -----------------------------------------------------------------------

    def counter_values(self):
        """(metric, labels) -> cumulative value, for the Prometheus counters."""
        name = self.name
        for limit, n in self.overflows.items():
            if n:
                yield ("meshgate_upstream_cb_overflows_total", (name, limit)), n
        if self.budget_denied:
            yield ("meshgate_upstream_retry_budget_exhausted_total", (name,)), self.budget_denied
        outlier = self.outlier
        if outlier is not None:
            yield ("meshgate_upstream_outlier_ejections_total", (name, "ejected")), outlier.ejections_total
            yield (
                ("meshgate_upstream_outlier_ejections_total", (name, "max_percent")),
                outlier.ejections_overflow,
            )
        health = self.health
        if health is not None:
            failures = health.failures_total
            yield ("meshgate_upstream_health_checks_total", (name, "success")), health.checks_total - failures
            yield ("meshgate_upstream_health_checks_total", (name, "failure")), failures

    # -- views (JSON) -----------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        now = self.clock()
        hosts = []
        for h in self.hosts:
            entry: dict[str, Any] = {
                "address": h.address,
                "health": "ejected" if h.ejected else "failed_active_hc" if h.hc_failed else "healthy",
                "active_requests": h.active_requests,
                "requests_total": h.rq_total,
                "errors_total": h.rq_errors,
                **h.pool.stats(),
            }
            if self.health is not None:
                entry["active_hc"] = {
                    "checked": h.hc_checked,
                    "failed": h.hc_failed,
                    "consecutive_successes": h.hc_successes,
                    "consecutive_failures": h.hc_failures,
                }
            if self.outlier is not None:
                entry["outlier"] = {
                    "ejected": h.ejected,
                    "ejection_seconds_left": round(max(0.0, h.ejected_until - now), 3)
                    if h.ejected
                    else 0,
                    "ejections": h.ejections,
                    "consecutive_5xx": h.consecutive_5xx,
                    "consecutive_gateway_errors": h.consecutive_gateway,
                    "consecutive_local_origin_failures": h.consecutive_local,
                }
            hosts.append(entry)
        return {
            "source": self.cluster.source,
            "load_balancer": self.policy.lb.kind,
            "panic": self.panic,
            "circuit_breaker": {
                "requests": [self.rq_active, self.max_requests],
                "pending": [self.rq_pending, self.max_pending],
                "connections": [self.connections, self.max_connections],
                "retries": [self.retries_active, self.max_retries],
                "overflows": dict(self.overflows),
            },
            "retry_budget_denied": self.budget_denied,
            "endpoints": hosts,
        }
