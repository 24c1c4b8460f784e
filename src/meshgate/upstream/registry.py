"""The clusters the data plane sends to, kept across snapshots.

``UpstreamRegistry.apply()`` runs on every config swap: a cluster whose name and
policy stay keeps its runtime (hosts, warm connections, health verdicts, breaker
counts) and only adopts the new endpoint list; a cluster whose policy changed gets a
new runtime; a cluster that is gone stops its background work and closes its idle
connections (in-flight requests finish on the connections they hold).
"""

from __future__ import annotations

from typing import Any

from meshgate.config.snapshot import Cluster, Limits
from meshgate.upstream.cluster import ClusterRuntime


class UpstreamRegistry:
    def __init__(self) -> None:
        self.clusters: dict[str, ClusterRuntime] = {}
        self.limits = Limits()
        self.metrics = None  # telemetry Metrics: counters are synced into it

    def sync_counters(self, metrics) -> None:
        """Add what the clusters counted since the last sync to ``metrics`` (a
        Metrics collector: runs at scrape time, never per request)."""
        for rt in self.clusters.values():
            _sync(rt, metrics)

    def apply(self, clusters: dict[str, Cluster], limits: Limits, start: bool = True) -> None:
        self.limits = limits
        runtimes: dict[str, ClusterRuntime] = {}
        for name, cluster in clusters.items():
            rt = self.clusters.get(name)
            if rt is not None and rt.cluster.policy == cluster.policy and rt.cluster.dns == cluster.dns:
                rt.set_limits(limits)
                if rt.cluster != cluster:
                    rt.cluster = cluster
                    if rt.dns is not None:
                        rt.dns.stop()
                        rt.dns = type(rt.dns)(cluster.endpoints, cluster.policy.dns_refresh, rt.set_endpoints)
                        if start:
                            rt.dns.start()
                    else:
                        rt.set_endpoints(cluster.endpoints)
            else:
                rt = ClusterRuntime(cluster, limits)
                if start:
                    rt.start()
            runtimes[name] = rt
        for name, rt in self.clusters.items():
            if runtimes.get(name) is not rt:
                if self.metrics is not None:
                    _sync(rt, self.metrics)  # keep its counts: counters never go down
                rt.stop()
                rt.close_idle()
        self.clusters = runtimes

    def cluster(self, name: str) -> ClusterRuntime | None:
        return self.clusters.get(name)

    def sweep_idle(self) -> None:
        for rt in self.clusters.values():
            rt.close_idle(rt.idle_timeout)

    def stop(self) -> None:
        for rt in self.clusters.values():
            rt.stop()
            rt.close_idle()

    def describe(self) -> dict[str, Any]:
        return {name: rt.describe() for name, rt in self.clusters.items()}


def _sync(rt: ClusterRuntime, metrics) -> None:
    synced = rt.synced
    for key, value in rt.counter_values():
        delta = value - synced.get(key, 0)
        if delta:
            metrics.inc(key[0], key[1], delta)
            synced[key] = value
