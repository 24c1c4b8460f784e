"""The engine: the active snapshot, the listeners, and what every exchange shares.

``Engine.apply(snapshot)`` swaps the snapshot reference (exchanges keep the one they
started with), binds listeners for new ports and closes those for removed ports, and
updates the upstream registry. HTTPS ports are bound with a ``tls.sni.TLSFront``
whose SNI table is swapped with the snapshot: new certificates serve the next
handshake, established connections keep their session. ``Engine.drain()`` is graceful shutdown: stop accepting,
close idle keep-alive connections, wait for in-flight exchanges with a deadline, then
cut what is left.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

from meshgate.config.snapshot import Limits, Snapshot
from meshgate.filters.cache.filter import CACHE_RESULTS
from meshgate.filters.ratelimit.reply import DECISIONS
from meshgate.filters.security.base import AUTH_FAILURES
from meshgate.filters.validation.problem import VALIDATION_FAILURES
from meshgate.http.server import ServerProtocol
from meshgate.plans.usage import QUOTA_DECISIONS
from meshgate.proxy.context import RequestContext
from meshgate.proxy.errors import ProxyError
from meshgate.proxy.exchange import Exchange
from meshgate.ratelimit.redis_counters import REDIS_ERRORS
from meshgate.telemetry.access_log import AccessLog
from meshgate.telemetry.metrics import Metrics, counts_collector
from meshgate.tls.sni import TLSFront
from meshgate.upstream.registry import UpstreamRegistry

log = logging.getLogger("meshgate.engine")

# How long a new snapshot's background services (JWKS fetches, ...) may take to start.
SERVICE_START_TIMEOUT = 10.0


class Engine:
    def __init__(
        self,
        bind: str = "0.0.0.0",
        reuse_port: bool = False,
        access_log: AccessLog | None = None,
        tracing: Any = None,
        metrics_enabled: bool = True,
    ) -> None:
        self.loop = asyncio.get_event_loop()
        self.bind = bind
        self.reuse_port = reuse_port
        self.snapshot: Snapshot | None = None
        self.upstreams = UpstreamRegistry()
        self.metrics = Metrics()
        self.upstreams.metrics = self.metrics
        self.metrics.collectors.append(self.upstreams.sync_counters)
        self.metrics.collectors += [
            counts_collector(AUTH_FAILURES, "meshgate_auth_failures_total"),
            counts_collector(VALIDATION_FAILURES, "meshgate_validation_failures_total"),
            counts_collector(CACHE_RESULTS, "meshgate_cache_lookups_total"),
            counts_collector(QUOTA_DECISIONS, "meshgate_quota_decisions_total"),
            counts_collector(DECISIONS, "meshgate_ratelimit_decisions_total"),
            counts_collector(REDIS_ERRORS, "meshgate_ratelimit_redis_errors_total"),
        ]
        self.servers: dict[int, asyncio.base_events.Server] = {}
        self.tls_fronts: dict[int, TLSFront] = {}  # HTTPS ports: what their SNI callback reads
        self.connections: set[ServerProtocol] = set()
        self.draining = False
        self.limits = Limits()
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweeps = 0
        self.access_log = access_log
        self.tracing = tracing  # telemetry.tracing.Tracing, or None when tracing is off
        self.metrics_enabled = metrics_enabled  # off only to measure what metrics cost

    # -- config --------------------------------------------------------------------

    async def apply(self, snapshot: Snapshot) -> None:
        """Make ``snapshot`` the active config. Raises OSError if a port cannot bind,
        leaving the previous snapshot active."""
        wanted = set(snapshot.ports)
        # A port that changes between HTTP and HTTPS is bound again, with(out) TLS.
        for port in sorted(wanted & set(self.servers)):
            if (snapshot.ports[port].tls is None) != (port not in self.tls_fronts):
                self.servers.pop(port).close()
                self.tls_fronts.pop(port, None)
        new_servers: dict[int, asyncio.base_events.Server] = {}
        new_fronts: dict[int, TLSFront] = {}
        try:
            for port in sorted(wanted - set(self.servers)):
                table = snapshot.ports[port].tls
                if table is not None:
                    new_fronts[port] = TLSFront(table)
                new_servers[port] = await self._listen(port, new_fronts.get(port))
        except OSError:
            for server in new_servers.values():
                server.close()
            raise
        await self._start_services(snapshot)
        self.limits = snapshot.limits
        self.upstreams.apply(snapshot.clusters, snapshot.limits)
        previous = self.snapshot
        self.snapshot = snapshot
        for port, front in self.tls_fronts.items():
            if port in wanted:
                front.update(snapshot.ports[port].tls)
        self.tls_fronts.update(new_fronts)
        if previous is not None:
            kept = {id(s) for s in snapshot.services}
            for service in previous.services:
                if id(service) not in kept:
                    service.stop()
        self.servers.update(new_servers)
        for port in sorted(set(self.servers) - wanted):
            self.servers.pop(port).close()
            self.tls_fronts.pop(port, None)
        if self._sweeper is None:
            self._schedule_sweep()

    async def _start_services(self, snapshot: Snapshot) -> None:
        """Start what the new snapshot's filters need before it takes traffic, bounded:
        a service that cannot start in time (a JWKS endpoint down) keeps trying in the
        background and its filter answers as its policy says meanwhile."""
        running = {id(s) for s in self.snapshot.services} if self.snapshot is not None else set()
        starting = [s.start() for s in snapshot.services if id(s) not in running]
        if not starting:
            return
        try:
            done = await asyncio.wait_for(
                asyncio.gather(*starting, return_exceptions=True), SERVICE_START_TIMEOUT
            )
        except TimeoutError:
            log.warning("background services still starting after %.0fs", SERVICE_START_TIMEOUT)
            return
        for result in done:
            if isinstance(result, Exception):
                log.warning("a background service failed to start: %s", result)

    async def _listen(self, port: int, front: TLSFront | None = None) -> asyncio.base_events.Server:
        scheme = "http" if front is None else "https"

        def factory() -> ServerProtocol:
            # Limits are read per connection (the port's, its ClientTrafficPolicy
            # applied), so a reload's limits apply to new ones. On HTTPS the listener
            # SNI selects replaces them once the handshake is done.
            snapshot = self.snapshot
            router = snapshot.ports.get(port) if snapshot is not None else None
            limits = router.limits if router is not None and router.limits is not None else self.limits
            return ServerProtocol(self, port, limits, scheme)

        return await self.loop.create_server(
            factory,
            host=self.bind,
            port=port,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
            backlog=2048,
            ssl=front.context if front is not None else None,
            ssl_handshake_timeout=self.limits.header_timeout if front is not None else None,
        )

    def _schedule_sweep(self) -> None:
        # Downstream timeouts (header read, keep-alive idle) are checked here, a few
        # times a second, instead of arming a timer per request.
        now = self.loop.time()
        for proto in list(self.connections):
            proto.check_deadline(now)
        self._sweeps += 1
        if self.access_log is not None:
            self.access_log.flush()
        if self._sweeps % 20 == 0:
            self.upstreams.sweep_idle()
        self._sweeper = self.loop.call_later(0.25, self._schedule_sweep)

    @property
    def bound_ports(self) -> list[int]:
        return sorted(self.servers)

    # -- ServerProtocol handler interface ------------------------------------------

    def connection_opened(self, proto: ServerProtocol) -> None:
        if self.draining:
            proto.close()
            return
        self.connections.add(proto)
        self.metrics.downstream_connections += 1
        sock = proto.transport.get_extra_info("socket") if proto.transport else None
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def connection_closed(self, proto: ServerProtocol) -> None:
        self.connections.discard(proto)

    def new_exchange(
        self,
        proto: ServerProtocol,
        ctx: RequestContext,
        chunked: bool,
        content_length: int,
        keep_alive: bool,
    ) -> Exchange:
        return Exchange(self, proto, ctx, self.snapshot, chunked, content_length, keep_alive)  # type: ignore[arg-type]

    def on_rejected(self, proto: ServerProtocol, status: int, detail: str) -> None:
        # Counted and timed like any answered request (it took no time we measure).
        if self.metrics_enabled:
            self.metrics.observe("", status, 0.0)
        if self.access_log is not None:
            self.access_log.log_rejected(proto.client_ip, status, detail)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("rejected request from %s: %d %s", proto.client_ip, status, detail)

    def on_exchange_done(self, exchange: Exchange, error: ProxyError | None) -> None:
        ctx = exchange.ctx
        rule = ctx.rule
        now = time.monotonic()
        metrics = self.metrics
        route = rule.route if rule is not None else ""
        if not self.metrics_enabled:
            metrics = _NO_METRICS
        metrics.observe(
            route,
            exchange.status,
            now - ctx.start_time,
            exchange.body_received,
            exchange.bytes_sent,
            ctx.gateway,
            ctx.listener,
            ctx.consumer or "",
        )
        backend = ctx.backend
        if exchange.upstream_attempts:
            cluster = backend.cluster if backend is not None else ""
            metrics.inc("meshgate_upstream_requests_total", (cluster, exchange.status))
            if exchange.upstream_attempts > 1:
                metrics.inc("meshgate_upstream_retries_total", (route,), exchange.upstream_attempts - 1)
            if error is not None and error.source == "upstream":
                metrics.inc("meshgate_upstream_failures_total", (cluster, error.flag))
        elif exchange.status:
            if error is not None and error.source == "upstream" and backend is not None:
                metrics.inc("meshgate_upstream_failures_total", (backend.cluster or "", error.flag))
            metrics.inc("meshgate_local_replies_total", (ctx.flag,))
        if ctx.trace is not None:
            ctx.trace.end(
                exchange.status, rule.route if rule is not None else None,
                backend.cluster if backend is not None else None, ctx.flag, time.time_ns(),
            )
        if self.access_log is not None:
            self.access_log.log_exchange(exchange, now)

    def log_exception(self, ctx: RequestContext, exc: BaseException) -> None:
        log.error(
            "internal error on %s %s: %r", ctx.method, ctx.path, exc, exc_info=exc
        )

    # -- mirrors -------------------------------------------------------------------

    def send_mirrors(self, exchange: Exchange) -> None:
        from meshgate.proxy.mirror import send_mirrors

        send_mirrors(self, exchange)

    # -- shutdown ------------------------------------------------------------------

    async def drain(self, deadline: float | None = None) -> None:
        self.draining = True
        for server in self.servers.values():
            server.close()
        for proto in list(self.connections):
            if proto.is_idle():
                proto.close()
        timeout = deadline if deadline is not None else self.limits.drain_timeout
        end = time.monotonic() + timeout
        while self.connections and time.monotonic() < end:
            for proto in list(self.connections):
                if proto.is_idle():
                    proto.close()
            await asyncio.sleep(0.05)
        for proto in list(self.connections):
            proto.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self.upstreams.stop()
        if self.snapshot is not None:
            for service in self.snapshot.services:
                service.stop()
        if self.access_log is not None:
            self.access_log.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)

    def gauge_lines(self) -> list[str]:
        """Point-in-time values for /metrics: connections, pools, process."""
        lines = [
            "# HELP meshgate_downstream_connections_active Open client connections.",
            "# TYPE meshgate_downstream_connections_active gauge",
            f"meshgate_downstream_connections_active {len(self.connections)}",
            "# HELP meshgate_upstream_connections Pooled upstream connections, by cluster and state.",
            "# TYPE meshgate_upstream_connections gauge",
        ]
        for name, cluster in sorted(self.upstreams.clusters.items()):
            active = sum(h.pool.active for h in cluster.hosts)
            idle = sum(len(h.pool.idle) for h in cluster.hosts)
            lines.append(f'meshgate_upstream_connections{{cluster="{name}",state="active"}} {active}')
            lines.append(f'meshgate_upstream_connections{{cluster="{name}",state="idle"}} {idle}')
        lines += [
            "# HELP meshgate_upstream_hosts Endpoints of each cluster by health: healthy, "
            "ejected (outlier detection) or failed_active_hc (active health check).",
            "# TYPE meshgate_upstream_hosts gauge",
        ]
        for name, cluster in sorted(self.upstreams.clusters.items()):
            counts = {"healthy": 0, "ejected": 0, "failed_active_hc": 0}
            for h in cluster.hosts:
                counts["ejected" if h.ejected else "failed_active_hc" if h.hc_failed else "healthy"] += 1
            for state, n in counts.items():
                lines.append(f'meshgate_upstream_hosts{{cluster="{name}",state="{state}"}} {n}')
        lines += [
            "# HELP meshgate_upstream_requests_active Requests using each cluster now, and "
            "those of them waiting for a connection (state=pending).",
            "# TYPE meshgate_upstream_requests_active gauge",
        ]
        for name, cluster in sorted(self.upstreams.clusters.items()):
            lines.append(f'meshgate_upstream_requests_active{{cluster="{name}",state="active"}} {cluster.rq_active}')
            lines.append(f'meshgate_upstream_requests_active{{cluster="{name}",state="pending"}} {cluster.rq_pending}')
        snap = self.snapshot
        if snap is not None:
            lines += [
                "# HELP meshgate_config_info The active config version (label), always 1.",
                "# TYPE meshgate_config_info gauge",
                f'meshgate_config_info{{version="{snap.version}"}} 1',
            ]
        tracing = self.tracing
        if tracing is not None:
            lines += [
                "# HELP meshgate_tracing_spans_total Sampled spans by fate: exported (accepted "
                "by the receiver), failed (lost to failed exports), dropped (queue full).",
                "# TYPE meshgate_tracing_spans_total counter",
                f'meshgate_tracing_spans_total{{result="exported"}} {tracing.exported}',
                f'meshgate_tracing_spans_total{{result="failed"}} {tracing.failed}',
                f'meshgate_tracing_spans_total{{result="dropped"}} {tracing.dropped}',
            ]
        return lines + process_lines()


class _NoMetrics:
    """Stands in for Metrics under --no-metrics: the same calls, nothing kept."""

    def observe(self, *args: object) -> None:
        pass

    def inc(self, *args: object) -> None:
        pass


_NO_METRICS = _NoMetrics()


def process_lines() -> list[str]:
    """The standard process_* metrics (Linux /proc), as Prometheus clients export them."""
    import os
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    lines = [
        "# HELP process_cpu_seconds_total User and system CPU time of this process.",
        "# TYPE process_cpu_seconds_total counter",
        f"process_cpu_seconds_total {usage.ru_utime + usage.ru_stime}",
    ]
    try:
        with open("/proc/self/statm") as f:
            rss_pages = int(f.read().split()[1])
        lines += [
            "# HELP process_resident_memory_bytes Resident memory size.",
            "# TYPE process_resident_memory_bytes gauge",
            f"process_resident_memory_bytes {rss_pages * os.sysconf('SC_PAGE_SIZE')}",
            "# HELP process_open_fds Open file descriptors.",
            "# TYPE process_open_fds gauge",
            f"process_open_fds {len(os.listdir('/proc/self/fd'))}",
        ]
    except OSError:
        pass
    return lines
