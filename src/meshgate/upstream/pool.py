"""The connection pool of one upstream host within a cluster.

``ConnectionPool.acquire()`` is the one place that decides whether to reuse an idle
connection, open a new one or wait for one; I/O (connecting) happens in ``_connect``.
The cluster's circuit breaker bounds it: opening a connection takes one of the
cluster's ``max_connections`` slots, and waiting for one takes one of its
``max_pending_requests``; past either, the request overflows at once (503 UO) rather
than queueing behind a backend that has stalled.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING

from meshgate.proxy.errors import UpstreamConnectError, UpstreamOverflow
from meshgate.upstream.connection import ACTIVE, GONE, IDLE, UpstreamConnection

if TYPE_CHECKING:
    from meshgate.config.snapshot import Endpoint
    from meshgate.upstream.cluster import ClusterRuntime
    from meshgate.upstream.host import Host


class ConnectionPool:
    def __init__(self, endpoint: Endpoint, cluster: ClusterRuntime) -> None:
        self.endpoint = endpoint
        self.cluster = cluster
        self.host: Host | None = None  # set by the cluster
        self.idle: deque[UpstreamConnection] = deque()
        self.active = 0  # connections owned by an exchange
        self.connecting = 0
        # A waiter gets a connection handed over, or None: a connection slot of the
        # cluster was freed and reserved for it.
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
            deadline = time.monotonic() - self.cluster.idle_timeout
            while idle:
                conn = idle.pop()  # LIFO: the warmest connection
                if conn.closed:
                    conn.in_pool = GONE
                    continue
                if conn.idle_since < deadline:
                    conn.close()  # discard() frees its connection slot
                    continue
                conn.in_pool = ACTIVE
                self.active += 1
                return conn
        return None

    async def acquire(self) -> UpstreamConnection:
        conn = self.take_idle()
        if conn is not None:
            return conn
        cluster = self.cluster
        if cluster.connections < cluster.max_connections:
            cluster.connections += 1
            return await self._connect()
        if cluster.rq_pending >= cluster.max_pending:
            cluster.overflows["pending"] += 1
            raise UpstreamOverflow("circuit breaker: too many pending requests")
        # Every connection slot is taken: wait for a release, bounded by the connect
        # timeout.
        waiter: asyncio.Future[UpstreamConnection | None] = self._loop.create_future()
        self.waiters.append(waiter)
        cluster.rq_pending += 1
        try:
            conn = await asyncio.wait_for(waiter, cluster.connect_timeout)
        except (TimeoutError, asyncio.CancelledError) as exc:
            # Handed a connection (or a slot) in the same turn as the timeout or the
            # cancel: give it on rather than lose it.
            if waiter.done() and not waiter.cancelled():
                self._pass_on(waiter.result())
            if isinstance(exc, asyncio.CancelledError):
                raise
            cluster.overflows["connections"] += 1
            raise UpstreamOverflow("no upstream connection became free in time") from None
        finally:
            cluster.rq_pending -= 1
            if waiter in self.waiters:
                self.waiters.remove(waiter)
        if conn is None:
            return await self._connect()  # the freed slot was reserved for us
        return conn

    def _pass_on(self, conn: UpstreamConnection | None) -> None:
        """A waiter was handed a connection (or a slot) but is gone: give it on."""
        if conn is not None:
            conn.release(True)
        else:
            self.cluster.connections -= 1
            self.cluster.wake_one(self)

    async def _connect(self) -> UpstreamConnection:
        """Open a connection in a slot already counted in ``cluster.connections``."""
        self.connecting += 1
        ep = self.endpoint
        cluster = self.cluster
        try:
            _, conn = await asyncio.wait_for(
                self._loop.create_connection(lambda: UpstreamConnection(self), ep.host, ep.port),
                cluster.connect_timeout,
            )
        except (TimeoutError, OSError) as exc:
            self.connect_failures += 1
            cluster.connections -= 1
            cluster.wake_one(self)
            host = self.host
            if host is not None and host.detector is not None:
                host.detector.on_local_failure(host)
            raise UpstreamConnectError(f"upstream connect error: {exc or 'timeout'}") from None
        except BaseException:
            cluster.connections -= 1
            cluster.wake_one(self)
            raise
        finally:
            self.connecting -= 1
        self.total_opened += 1
        self.active += 1
        conn.in_pool = ACTIVE
        host = self.host
        if host is not None and host.detector is not None:
            host.detector.on_local_success(host)
        return conn

    def put_idle(self, conn: UpstreamConnection) -> None:
        max_age = self.cluster.max_connection_duration
        if max_age is not None and time.monotonic() - conn.created >= max_age:
            conn.close()  # too old to reuse (timeout.http.maxConnectionDuration)
            return
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
        """A connection closed: forget it, and give its slot to a waiter."""
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
        self.cluster.connections -= 1
        self.cluster.wake_one(self)

    def hand_slot(self) -> bool:
        """Give a just-freed connection slot to this pool's first waiter, if any."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                self.cluster.connections += 1  # reserved for the waiter
                waiter.set_result(None)
                return True
        return False

    def close_idle(self, older_than: float | None = None) -> None:
        now = time.monotonic()
        for conn in list(self.idle):
            if older_than is None or now - conn.idle_since > older_than:
                conn.close()  # close() -> discard() takes it out of ``idle``

    def stats(self) -> dict:
        return {
            "active": self.active,
            "idle": len(self.idle),
            "queued": len(self.waiters),
            "opened_total": self.total_opened,
            "connect_failures": self.connect_failures,
        }
