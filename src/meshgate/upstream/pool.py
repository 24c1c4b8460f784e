"""Connection pools per upstream endpoint, and the registry that outlives snapshots.

``ConnectionPool.acquire()`` is the one place that decides whether to reuse an idle
connection, open a new one or wait for one; I/O (connecting) happens in
``_connect``. ``UpstreamRegistry`` keys pools by (host, port) so a config reload that
keeps an endpoint keeps its warm connections.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque

from meshgate.config.snapshot import Cluster, Endpoint, Limits
from meshgate.proxy.errors import NoHealthyUpstream, UpstreamConnectError, UpstreamOverflow
from meshgate.upstream.connection import ACTIVE, GONE, IDLE, UpstreamConnection


class ConnectionPool:
    def __init__(self, endpoint: Endpoint, limits: Limits) -> None:
        self.endpoint = endpoint
        self.limits = limits
        self.idle: deque[UpstreamConnection] = deque()
        self.active = 0  # connections owned by an exchange
        self.connecting = 0
        self.waiters: deque[asyncio.Future[UpstreamConnection | None]] = deque()
        self.total_opened = 0
        self.connect_failures = 0
        self._loop = asyncio.get_event_loop()

    def __repr__(self) -> str:
        return (
            f"<ConnectionPool {self.endpoint.host}:{self.endpoint.port} "
            f"[Requests: {self.active} active, {len(self.waiters)} queued | "
            f"Connections: {self.active} active, {len(self.idle)} idle]>"
        )

    def take_idle(self) -> UpstreamConnection | None:
        """An idle, live, unexpired connection, now active; or None. Never waits."""
        idle = self.idle
        if idle:
            deadline = time.monotonic() - self.limits.upstream_idle_timeout
            while idle:
                conn = idle.pop()  # LIFO: the warmest connection
                if conn.closed:
                    conn.in_pool = GONE
                    continue
                if conn.idle_since < deadline:
                    conn.in_pool = GONE
                    conn.close()
                    continue
                conn.in_pool = ACTIVE
                self.active += 1
                return conn
        return None

    async def acquire(self) -> UpstreamConnection:
        conn = self.take_idle()
        if conn is not None:
            return conn
        if self.active + self.connecting < self.limits.upstream_max_connections:
            return await self._connect()
        # Full: wait for a release, bounded by the connect timeout.
        waiter: asyncio.Future[UpstreamConnection | None] = self._loop.create_future()
        self.waiters.append(waiter)
        try:
            conn = await asyncio.wait_for(waiter, self.limits.upstream_connect_timeout)
        except asyncio.TimeoutError:
            raise UpstreamOverflow() from None
        finally:
            if waiter in self.waiters:
                self.waiters.remove(waiter)
        if conn is None:
            return await self._connect()
        return conn

    async def _connect(self) -> UpstreamConnection:
        self.connecting += 1
        ep = self.endpoint
        try:
            _, conn = await asyncio.wait_for(
                self._loop.create_connection(lambda: UpstreamConnection(self), ep.host, ep.port),
                self.limits.upstream_connect_timeout,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            self.connect_failures += 1
            raise UpstreamConnectError(f"upstream connect error: {exc or 'timeout'}") from None
        finally:
            self.connecting -= 1
        self.total_opened += 1
        self.active += 1
        conn.in_pool = ACTIVE
        return conn

    def put_idle(self, conn: UpstreamConnection) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                # Handed over while still counted active; acquire() does not recount.
                waiter.set_result(conn)
                return
        self.active -= 1
        conn.in_pool = IDLE
        self.idle.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        """A connection closed: forget it, and let a waiter open a new one."""
        state = conn.in_pool
        conn.in_pool = GONE
        if state == IDLE:
            try:
                self.idle.remove(conn)
            except ValueError:
                pass
        elif state == ACTIVE:
            self.active -= 1
        else:
            return
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close_idle(self, older_than: float | None = None) -> None:
        now = time.monotonic()
        keep: deque[UpstreamConnection] = deque()
        for conn in self.idle:
            if older_than is None or now - conn.idle_since > older_than:
                conn.in_pool = GONE
                conn.close()
            else:
                keep.append(conn)
        self.idle = keep

    def stats(self) -> dict:
        return {
            "active": self.active,
            "idle": len(self.idle),
            "queued": len(self.waiters),
            "opened_total": self.total_opened,
            "connect_failures": self.connect_failures,
        }


class ClusterBalancer:
    """Round-robin over a cluster's endpoints (health and outliers come later)."""

    __slots__ = ("cluster", "pools", "_next")

    def __init__(self, cluster: Cluster, pools: list[ConnectionPool]) -> None:
        self.cluster = cluster
        self.pools = pools
        self._next = itertools.count()

    def pick(self) -> ConnectionPool:
        pools = self.pools
        if not pools:
            raise NoHealthyUpstream()
        if len(pools) == 1:
            return pools[0]
        return pools[next(self._next) % len(pools)]


class UpstreamRegistry:
    """Pools by endpoint and balancers by cluster, rebuilt per snapshot, pools kept."""

    def __init__(self) -> None:
        self.pools: dict[Endpoint, ConnectionPool] = {}
        self.balancers: dict[str, ClusterBalancer] = {}
        self.limits = Limits()

    def apply(self, clusters: dict[str, Cluster], limits: Limits) -> None:
        self.limits = limits
        wanted: dict[Endpoint, ConnectionPool] = {}
        balancers: dict[str, ClusterBalancer] = {}
        for name, cluster in clusters.items():
            pools = []
            for ep in cluster.endpoints:
                pool = wanted.get(ep) or self.pools.get(ep)
                if pool is None:
                    pool = ConnectionPool(ep, limits)
                pool.limits = limits
                wanted[ep] = pool
                pools.append(pool)
            old = self.balancers.get(name)
            if old is not None and old.cluster == cluster:
                old.pools = pools
                balancers[name] = old
            else:
                balancers[name] = ClusterBalancer(cluster, pools)
        for ep, pool in self.pools.items():
            if ep not in wanted:
                pool.close_idle()
        self.pools = wanted
        self.balancers = balancers

    def balancer(self, cluster: str) -> ClusterBalancer | None:
        return self.balancers.get(cluster)

    def sweep_idle(self) -> None:
        for pool in self.pools.values():
            pool.close_idle(self.limits.upstream_idle_timeout)

    def describe(self) -> dict:
        return {
            name: {
                "source": b.cluster.source,
                "endpoints": [
                    {"address": f"{p.endpoint.host}:{p.endpoint.port}", **p.stats()}
                    for p in b.pools
                ],
            }
            for name, b in self.balancers.items()
        }
