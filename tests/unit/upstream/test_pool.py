"""Connection pools per upstream endpoint, against a real TCP server on 127.0.0.1.

The pool's ``repr`` (``[Requests: N active, M queued | Connections: A active, I idle]``)
is the oracle, as in httpcore's tests; the server side counts what really happened on
the wire.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from meshgate.config.snapshot import Cluster, Endpoint, Limits
from meshgate.config.traffic import CircuitBreaking, ClusterPolicy, LoadBalancing
from meshgate.proxy.errors import (
    NoHealthyUpstream,
    UpstreamConnectError,
    UpstreamOverflow,
)
from meshgate.upstream.cluster import ClusterRuntime
from meshgate.upstream.pool import ConnectionPool
from meshgate.upstream.registry import UpstreamRegistry


def pool_for(endpoint: Endpoint, limits: Limits | None = None, **breaker: int) -> ConnectionPool:
    """The pool of ``endpoint`` in a one-host cluster with these breaker limits."""
    policy = ClusterPolicy(breaker=CircuitBreaking(**breaker))
    cluster = ClusterRuntime(Cluster("c", (endpoint,), policy=policy), limits or Limits())
    return cluster.hosts[0].pool


class Upstream:
    """A TCP server that accepts and holds connections, and can close them."""

    def __init__(self) -> None:
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self.accepted: list[asyncio.StreamWriter] = []
        self.eofs = 0

    async def start(self) -> Upstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.append(writer)
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        self.eofs += 1
        writer.close()

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port)

    async def close(self) -> None:
        for w in self.accepted:
            w.close()
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def upstream():
    up = await Upstream().start()
    yield up
    await up.close()


async def until(predicate, timeout: float = 2.0) -> None:
    """Wait for ``predicate()`` with a deadline (network events take a loop turn or two)."""
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached before the deadline"
        await asyncio.sleep(0.005)


def state(pool: ConnectionPool) -> str:
    return repr(pool).split(" ", 2)[2]


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --- reuse --------------------------------------------------------------------------------


async def test_repr_counts_requests_and_connections(upstream):
    pool = pool_for(upstream.endpoint)
    assert repr(pool) == (
        f"<ConnectionPool 127.0.0.1:{upstream.port} "
        "[Requests: 0 active, 0 queued | Connections: 0 active, 0 idle]>"
    )
    conn = await pool.acquire()
    assert state(pool) == "[Requests: 1 active, 0 queued | Connections: 1 active, 0 idle]>"
    conn.release(reusable=True)
    assert state(pool) == "[Requests: 0 active, 0 queued | Connections: 0 active, 1 idle]>"


async def test_an_idle_connection_is_reused_instead_of_opening_another(upstream):
    pool = pool_for(upstream.endpoint)
    first = await pool.acquire()
    first.release(reusable=True)
    again = await pool.acquire()
    assert again is first
    await until(lambda: len(upstream.accepted) == 1)
    assert pool.stats()["opened_total"] == 1


async def test_the_most_recently_released_connection_is_reused_first(upstream):
    pool = pool_for(upstream.endpoint)
    a = await pool.acquire()
    b = await pool.acquire()
    assert a is not b
    a.release(reusable=True)
    b.release(reusable=True)
    assert state(pool).endswith("Connections: 0 active, 2 idle]>")
    assert await pool.acquire() is b  # LIFO: the warmest connection
    assert await pool.acquire() is a


async def test_a_connection_released_as_not_reusable_is_closed(upstream):
    pool = pool_for(upstream.endpoint)
    conn = await pool.acquire()
    conn.release(reusable=False)
    assert state(pool) == "[Requests: 0 active, 0 queued | Connections: 0 active, 0 idle]>"
    await until(lambda: upstream.eofs == 1)
    assert await pool.acquire() is not conn


# --- idle expiry and closing ----------------------------------------------------------


async def test_an_expired_idle_connection_is_closed_not_reused(upstream):
    pool = pool_for(upstream.endpoint, Limits(upstream_idle_timeout=0.05))
    old = await pool.acquire()
    old.release(reusable=True)
    await asyncio.sleep(0.1)  # let the idle timeout pass
    new = await pool.acquire()
    assert new is not old
    assert old.closed
    await until(lambda: upstream.eofs == 1)
    assert state(pool) == "[Requests: 1 active, 0 queued | Connections: 1 active, 0 idle]>"


async def test_an_expired_idle_connection_gives_its_slot_back(upstream):
    # max_connections=1: if the expired connection kept its slot, the next acquire
    # would wait for a release that never comes and overflow.
    pool = pool_for(
        upstream.endpoint,
        Limits(upstream_idle_timeout=0.05, upstream_connect_timeout=0.5),
        max_connections=1,
    )
    old = await pool.acquire()
    old.release(reusable=True)
    await asyncio.sleep(0.1)
    new = await pool.acquire()
    assert new is not old and pool.cluster.connections == 1
    new.release(reusable=False)
    assert pool.cluster.connections == 0


async def test_close_idle_keeps_recent_connections(upstream):
    pool = pool_for(upstream.endpoint)
    a = await pool.acquire()
    a.release(reusable=True)
    pool.close_idle(older_than=60.0)
    assert not a.closed and len(pool.idle) == 1
    pool.close_idle()
    assert a.closed and len(pool.idle) == 0
    await until(lambda: upstream.eofs == 1)


async def test_an_idle_connection_the_upstream_closes_leaves_the_pool(upstream):
    pool = pool_for(upstream.endpoint)
    conn = await pool.acquire()
    conn.release(reusable=True)
    await until(lambda: len(upstream.accepted) == 1)
    upstream.accepted[0].close()
    await until(lambda: len(pool.idle) == 0)
    assert conn.closed
    assert state(pool) == "[Requests: 0 active, 0 queued | Connections: 0 active, 0 idle]>"
    assert await pool.acquire() is not conn


async def test_closing_an_active_connection_frees_its_slot(upstream):
    pool = pool_for(upstream.endpoint, max_connections=1)
    conn = await pool.acquire()
    conn.close()
    assert state(pool) == "[Requests: 0 active, 0 queued | Connections: 0 active, 0 idle]>"
    conn.close()  # a second close changes nothing
    assert pool.active == 0
    assert await asyncio.wait_for(pool.acquire(), 1.0) is not conn


# --- limits and waiting -----------------------------------------------------------------


async def test_a_full_pool_queues_and_hands_a_released_connection_to_the_waiter(upstream):
    pool = pool_for(upstream.endpoint, max_connections=1)
    held = await pool.acquire()
    waiter = asyncio.ensure_future(pool.acquire())
    await until(lambda: len(pool.waiters) == 1)
    assert state(pool) == "[Requests: 1 active, 1 queued | Connections: 1 active, 0 idle]>"
    held.release(reusable=True)
    assert await asyncio.wait_for(waiter, 1.0) is held
    assert state(pool) == "[Requests: 1 active, 0 queued | Connections: 1 active, 0 idle]>"
    assert len(upstream.accepted) == 1


async def test_waiters_are_served_in_arrival_order(upstream):
    pool = pool_for(upstream.endpoint, max_connections=1)
    held = await pool.acquire()
    first = asyncio.ensure_future(pool.acquire())
    second = asyncio.ensure_future(pool.acquire())
    await until(lambda: len(pool.waiters) == 2)
    held.release(reusable=True)
    conn = await asyncio.wait_for(first, 1.0)
    assert not second.done()
    conn.release(reusable=True)
    assert await asyncio.wait_for(second, 1.0) is conn


async def test_a_waiter_opens_a_new_connection_when_the_held_one_closes(upstream):
    pool = pool_for(upstream.endpoint, max_connections=1)
    held = await pool.acquire()
    waiter = asyncio.ensure_future(pool.acquire())
    await until(lambda: len(pool.waiters) == 1)
    held.close()
    conn = await asyncio.wait_for(waiter, 1.0)
    assert conn is not held and not conn.closed
    assert state(pool) == "[Requests: 1 active, 0 queued | Connections: 1 active, 0 idle]>"
    await until(lambda: len(upstream.accepted) == 2)


async def test_waiting_longer_than_the_connect_timeout_is_an_overflow(upstream):
    pool = pool_for(upstream.endpoint, Limits(upstream_connect_timeout=0.1), max_connections=1)
    held = await pool.acquire()
    started = time.monotonic()
    with pytest.raises(UpstreamOverflow) as info:
        await pool.acquire()
    assert time.monotonic() - started >= 0.09
    assert (info.value.status, info.value.flag, info.value.retry_on) == (503, "UO", "")
    # The timed-out waiter is gone; the held connection still works for its owner.
    assert state(pool) == "[Requests: 1 active, 0 queued | Connections: 1 active, 0 idle]>"
    held.release(reusable=True)
    assert await pool.acquire() is held


async def test_a_cancelled_waiter_does_not_swallow_a_released_connection(upstream):
    pool = pool_for(upstream.endpoint, max_connections=1)
    held = await pool.acquire()
    gone = asyncio.ensure_future(pool.acquire())
    await until(lambda: len(pool.waiters) == 1)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    held.release(reusable=True)
    assert state(pool) == "[Requests: 0 active, 0 queued | Connections: 0 active, 1 idle]>"


# --- connect failures ---------------------------------------------------------------------


async def test_connection_refused_is_an_upstream_connect_error():
    pool = pool_for(Endpoint("127.0.0.1", closed_port()))
    with pytest.raises(UpstreamConnectError) as info:
        await pool.acquire()
    assert (info.value.status, info.value.flag, info.value.retry_on) == (503, "UF", "connect-failure")
    assert pool.stats()["connect_failures"] == 1
    assert state(pool) == "[Requests: 0 active, 0 queued | Connections: 0 active, 0 idle]>"


async def test_a_failed_connect_frees_its_slot():
    pool = pool_for(Endpoint("127.0.0.1", closed_port()), max_connections=1)
    for _ in range(3):  # each try may connect again; none is left counted
        with pytest.raises(UpstreamConnectError):
            await asyncio.wait_for(pool.acquire(), 2.0)
    assert pool.stats()["connect_failures"] == 3


# --- the circuit breaker ------------------------------------------------------------------


async def test_past_max_pending_requests_a_request_overflows_at_once(upstream):
    pool = pool_for(upstream.endpoint, max_connections=1, max_pending_requests=1)
    held = await pool.acquire()
    queued = asyncio.ensure_future(pool.acquire())
    await until(lambda: len(pool.waiters) == 1)
    started = time.monotonic()
    with pytest.raises(UpstreamOverflow):
        await pool.acquire()
    assert time.monotonic() - started < 0.05  # no waiting: the breaker is open
    assert pool.cluster.overflows["pending"] == 1
    held.release(reusable=True)
    assert await asyncio.wait_for(queued, 1.0) is held


async def test_max_parallel_requests_counts_requests_of_the_whole_cluster():
    policy = ClusterPolicy(breaker=CircuitBreaking(max_parallel_requests=2))
    cluster = ClusterRuntime(Cluster("c", (Endpoint("127.0.0.1", 9),), policy=policy), Limits())
    cluster.begin_request()
    cluster.begin_request()
    with pytest.raises(UpstreamOverflow):
        cluster.begin_request()
    assert cluster.overflows["requests"] == 1
    cluster.end_request()
    cluster.begin_request()  # a slot came back
    assert cluster.rq_active == 2


async def test_max_connections_is_shared_by_the_hosts_of_a_cluster(upstream):
    second = await Upstream().start()
    a, b = upstream.endpoint, second.endpoint
    policy = ClusterPolicy(breaker=CircuitBreaking(max_connections=1), lb=LoadBalancing("RoundRobin"))
    cluster = ClusterRuntime(Cluster("c", (a, b), policy=policy), Limits())
    pool_a, pool_b = (h.pool for h in cluster.hosts)
    held = await pool_a.acquire()
    waiting = asyncio.ensure_future(pool_b.acquire())  # b has no connection, but no slot
    await until(lambda: len(pool_b.waiters) == 1)
    assert cluster.connections == 1
    held.close()  # the slot goes to b's waiter, which connects
    conn = await asyncio.wait_for(waiting, 1.0)
    assert conn.pool is pool_b and cluster.connections == 1
    await second.close()


async def test_a_connection_older_than_max_connection_duration_is_not_reused(upstream):
    policy = ClusterPolicy(max_connection_duration=0.05)
    cluster = ClusterRuntime(Cluster("c", (upstream.endpoint,), policy=policy), Limits())
    pool = cluster.hosts[0].pool
    conn = await pool.acquire()
    await asyncio.sleep(0.06)
    conn.release(reusable=True)
    assert conn.closed and not pool.idle and cluster.connections == 0


# --- the registry across snapshots --------------------------------------------------------


async def test_registry_keeps_the_hosts_of_a_cluster_that_stays(upstream):
    ep = upstream.endpoint
    other = Endpoint("127.0.0.1", closed_port())
    registry = UpstreamRegistry()
    registry.apply({"web": Cluster("web", (ep,)), "old": Cluster("old", (other,))}, Limits())
    pool = registry.cluster("web").pick(None).pool
    warm = await pool.acquire()
    warm.release(reusable=True)

    # Next snapshot: "web" gains an endpoint, "old" is gone, limits change.
    limits = Limits(upstream_idle_timeout=7)
    registry.apply({"web": Cluster("web", (ep, other))}, limits)
    web = registry.cluster("web")
    assert web.hosts[0].pool is pool and len(web.hosts) == 2
    assert registry.cluster("old") is None
    assert web.idle_timeout == 7  # the new snapshot's limits apply to the kept cluster
    assert await pool.acquire() is warm  # the warm connection survived the reload
    assert len(upstream.accepted) == 1


async def test_a_changed_policy_gives_the_cluster_a_new_runtime(upstream):
    registry = UpstreamRegistry()
    registry.apply({"web": Cluster("web", (upstream.endpoint,))}, Limits())
    first = registry.cluster("web")
    policy = ClusterPolicy(breaker=CircuitBreaking(max_connections=3))
    registry.apply({"web": Cluster("web", (upstream.endpoint,), policy=policy)}, Limits())
    assert registry.cluster("web") is not first
    assert registry.cluster("web").max_connections == 3


async def test_registry_closes_idle_connections_of_a_removed_cluster(upstream):
    registry = UpstreamRegistry()
    registry.apply({"web": Cluster("web", (upstream.endpoint,))}, Limits())
    pool = registry.cluster("web").pick(None).pool
    conn = await pool.acquire()
    conn.release(reusable=True)
    registry.apply({}, Limits())
    assert registry.clusters == {}
    assert conn.closed
    await until(lambda: upstream.eofs == 1)


async def test_the_cluster_describes_its_endpoints(upstream):
    a, b = Endpoint("127.0.0.1", upstream.port), Endpoint("127.0.0.2", upstream.port)
    registry = UpstreamRegistry()
    registry.apply({"web": Cluster("web", (a, b), source="service/default/web:80")}, Limits())
    described = registry.describe()["web"]
    assert described["source"] == "service/default/web:80"
    assert [e["address"] for e in described["endpoints"]] == [
        f"127.0.0.1:{upstream.port}",
        f"127.0.0.2:{upstream.port}",
    ]
    assert described["endpoints"][0]["active"] == 0
    assert described["endpoints"][0]["health"] == "healthy"
    assert described["circuit_breaker"]["connections"] == [0, 1024]


async def test_a_cluster_without_endpoints_has_no_healthy_upstream():
    registry = UpstreamRegistry()
    registry.apply({"empty": Cluster("empty", ())}, Limits())
    with pytest.raises(NoHealthyUpstream):
        registry.cluster("empty").pick(None)
