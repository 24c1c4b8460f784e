"""The admin listener: /ready, /healthz, /config_dump, /clusters, /metrics, /stats,
/usage, POST /drain, POST /cache/purge.

Not on the request hot path, so it is a small asyncio-streams server; it reads the
engine's state and never changes the data plane except through ``POST /drain`` and
``POST /cache/purge`` (stored responses only).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

import orjson

from meshgate.proxy.errors import reason_phrase
from meshgate.telemetry.metrics import Metrics

log = logging.getLogger("meshgate.admin")


class AdminServer:
    def __init__(
        self,
        engine: Any,
        status: Callable[[], dict],
        on_drain: Callable[[], None] | None = None,
        peers: list[str] | None = None,
    ) -> None:
        self.engine = engine
        self.status = status  # -> {"ready": bool, "last_error": str|None, ...}
        self.on_drain = on_drain
        # Unix sockets of the other workers' internal admin listeners (--workers N):
        # /metrics sums their counters into this worker's.
        self.peers = peers or []
        # A peer that does not answer (restarting) counts with its last known state,
        # so the sum never drops and rate() sees no false counter reset.
        self._peer_states: dict[tuple[str, str], dict] = {}
        self.servers: list[asyncio.base_events.Server] = []

    async def start(self, host: str, port: int) -> None:
        self.servers.append(
            await asyncio.start_server(self._serve, host, port, reuse_address=True)
        )

    async def start_internal(self, path: str) -> None:
        """A worker's internal listener, which worker 0 reads the counters from."""
        self.servers.append(
            await asyncio.start_unix_server(functools.partial(self._serve, internal=True), path)
        )

    def close(self) -> None:
        for server in self.servers:
            server.close()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, internal: bool = False
    ) -> None:
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                    return
                request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
                parts = request_line.split(" ")
                if len(parts) != 3:
                    await self._send(writer, 400, b"bad request\n", "text/plain", close=True)
                    return
                method, target, _ = parts
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1].strip() or 0)
                payload = await reader.readexactly(length) if length else b""
                close = b"connection: close" in head.lower()
                path = target.split("?", 1)[0]
                if path == "/metrics" and self.peers:
                    status, body, ctype = await self.summed_metrics()
                elif path == "/stats":
                    status, body, ctype = await self.stats()
                elif path == "/cache/purge":  # CachePolicy stores (filters/cache/purge.py)
                    from meshgate.filters.cache.purge import handle_purge

                    status, body, ctype = await handle_purge(method, payload)
                elif path == "/usage":  # Plans: usage per consumer and route (plans/usage.py)
                    status, body, ctype = await self.usage()
                elif path == "/internal/metrics_state" and internal:
                    state = self.engine.metrics.state()
                    status, body, ctype = 200, orjson.dumps(state), "application/json"
                elif path == "/internal/usage_state" and internal:
                    status, body, ctype = 200, orjson.dumps(self._usage_state()), "application/json"
                else:
                    status, body, ctype = self.handle(method, path)
                await self._send(writer, status, body, ctype, close)
                if close:
                    return
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()

    async def _send(
        self, writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str, close: bool
    ) -> None:
        head = (
            f"HTTP/1.1 {status} {reason_phrase(status)}\r\ncontent-type: {ctype}\r\n"
            f"content-length: {len(body)}\r\n{'connection: close' + chr(13) + chr(10) if close else ''}\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()

    def handle(self, method: str, path: str) -> tuple[int, bytes, str]:
        engine = self.engine
        status = self.status()
        if path == "/ready":
            if status.get("ready") and not engine.draining:
                return 200, b"ready\n", "text/plain"
            return 503, b"not ready\n", "text/plain"
        if path == "/healthz":
            return 200, b"ok\n", "text/plain"
        if path == "/config_dump":
            snap = engine.snapshot
            doc = {
                "version": snap.version if snap is not None else None,
                "ports": engine.bound_ports,
                "last_reload": status,
                "config": snap.dump if snap is not None else None,
            }
            return 200, orjson.dumps(doc, option=orjson.OPT_INDENT_2), "application/json"
        if path == "/clusters":
            return (
                200,
                orjson.dumps(engine.upstreams.describe(), option=orjson.OPT_INDENT_2),
                "application/json",
            )
        if path == "/metrics":
            return 200, engine.metrics.render(self._extra_lines()).encode(), "text/plain; version=0.0.4"
        if path == "/drain":
            if method != "POST":
                return 405, b"use POST\n", "text/plain"
            if self.on_drain is not None:
                self.on_drain()
            return 200, b"draining\n", "text/plain"
        return 404, b"not found\n", "text/plain"

    def _extra_lines(self) -> list[str]:
        lines = self.engine.gauge_lines()
        at = self.status().get("at")
        if at:
            lines += [
                "# HELP meshgate_config_last_reload_timestamp_seconds When the config was last "
                "loaded or a change was rejected.",
                "# TYPE meshgate_config_last_reload_timestamp_seconds gauge",
                f"meshgate_config_last_reload_timestamp_seconds {at}",
            ]
        return lines

    async def stats(self) -> tuple[int, bytes, str]:
        """/stats: the counters as JSON (summed over workers), for tools and scripts."""
        states, answered = await self._worker_states()
        total = Metrics.summed(states)
        snap = self.engine.snapshot
        doc = {
            "version": snap.version if snap is not None else None,
            "workers": answered,
            "requests": [
                {
                    "route": route,
                    "code": code,
                    "gateway": gateway,
                    "listener": listener,
                    "consumer": consumer,
                    "count": n,
                }
                for (route, code, gateway, listener, consumer), n in sorted(total.requests.items())
            ],
            "routes": {route: total.route_summary(route) for route in sorted(total.durations)},
            "counters": [
                {"name": name, "labels": list(labels), "value": n}
                for (name, labels), n in sorted(total.counters.items())
            ],
            "downstream_connections_total": total.downstream_connections,
            "downstream_connections_active": len(self.engine.connections),
            "config_reloads": total.config_reloads,
        }
        return 200, orjson.dumps(doc, option=orjson.OPT_INDENT_2), "application/json"

    async def _worker_states(
        self, own: dict | None = None, target: str = "/internal/metrics_state"
    ) -> tuple[list[dict], int]:
        states = [self.engine.metrics.state() if own is None else own]
        answered = 1
        for path in self.peers:
            state = await _fetch_state(path, target)
            if state is not None:
                answered += 1
                self._peer_states[(path, target)] = state
            else:
                state = self._peer_states.get((path, target))
            if state is not None:
                states.append(state)
        return states, answered

    def _plan_books(self) -> list:
        from meshgate.plans.book import PlanBook

        snap = self.engine.snapshot
        services = snap.services if snap is not None else ()
        return [s for s in services if isinstance(s, PlanBook)]

    def _usage_state(self) -> dict:
        import time

        from meshgate.plans.counters import plan_counters
        from meshgate.plans.usage import state

        return state(self._plan_books(), plan_counters(), time.time())

    async def usage(self) -> tuple[int, bytes, str]:
        """/usage: requests and denials per consumer and route (summed over workers),
        and each planned consumer's quota use in the current periods."""
        import time

        from meshgate.plans.counters import RedisPlanCounters, plan_counters
        from meshgate.plans.usage import document, quota_keys

        now = time.time()
        books = self._plan_books()
        states, answered = await self._worker_states(self._usage_state(), "/internal/usage_state")
        counters = plan_counters()
        used = None
        if isinstance(counters, RedisPlanCounters):
            keys = quota_keys(books, now)
            got = await counters.read([k[4] for k in keys])
            # Redis away: the usage counts still answer; quota use is null.
            used = {f"{c}|{p}": n for (c, p, *_), n in zip(keys, got or ())}
            if got is None:
                used = {k: None for k in (f"{c}|{p}" for c, p, *_ in keys)}
        doc = document(states, books, used, now, answered)
        return 200, orjson.dumps(doc, option=orjson.OPT_INDENT_2), "application/json"

    async def summed_metrics(self) -> tuple[int, bytes, str]:
        """/metrics with every worker's counters added up (one scrape, all workers)."""
        states, answered = await self._worker_states()
        text = Metrics.summed(states).render(
            self._extra_lines()
            + [
                "# HELP meshgate_workers_scraped Workers that answered this scrape "
                "(a silent one counts with its last known counters).",
                "# TYPE meshgate_workers_scraped gauge",
                f"meshgate_workers_scraped {answered}",
            ]
        )
        return 200, text.encode(), "text/plain; version=0.0.4"


async def _fetch_state(path: str, target: str = "/internal/metrics_state") -> dict | None:
    """A peer worker's raw counters, or None if it does not answer (restarting)."""
    try:
        async with asyncio.timeout(2.0):
            reader, writer = await asyncio.open_unix_connection(path)
            try:
                writer.write(f"GET {target} HTTP/1.1\r\nhost: worker\r\nconnection: close\r\n\r\n".encode())
                data = await reader.read()
            finally:
                writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            return None
        return orjson.loads(body)
    except (OSError, TimeoutError, ValueError) as exc:
        log.warning("worker at %s did not report its metrics: %r", path, exc)
        return None
