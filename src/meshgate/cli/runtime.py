"""The life of one gateway process: load, bind, serve, watch and reload, drain.

Readiness (/ready) turns true only after the first config is compiled and every
listener is bound. A reload is all-or-nothing: a config that fails to load, validate,
compile or bind is rejected with one log line per error and the running one stays.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from collections.abc import Sequence

from meshgate.config.errors import ConfigInvalid
from meshgate.config.snapshot import Limits
from meshgate.config.source import build_snapshot, fingerprint
from meshgate.proxy.admin import AdminServer
from meshgate.proxy.engine import Engine
from meshgate.telemetry.access_log import AccessLog

log = logging.getLogger("meshgate.gateway")


class GatewayRuntime:
    def __init__(
        self,
        paths: Sequence[str],
        bind: str,
        admin: tuple[str, int] | None,
        gateways: set[str] | None,
        limits: Limits,
        reuse_port: bool,
        watch_interval: float,
        access_log: str | None = None,
        access_log_options: dict | None = None,
        internal_admin: str | None = None,
        peers: list[str] | None = None,
        otlp_endpoint: str | None = None,
        trace_sampling: float = 1.0,
        metrics_enabled: bool = True,
    ) -> None:
        self.paths = list(paths)
        self.bind = bind
        self.admin_addr = admin
        self.gateways = gateways
        self.limits = limits
        self.reuse_port = reuse_port
        self.watch_interval = watch_interval
        self.access_log_path = access_log
        self.access_log_options = access_log_options or {}
        self.internal_admin = internal_admin
        self.peers = peers
        self.otlp_endpoint = otlp_endpoint
        self.trace_sampling = trace_sampling
        self.metrics_enabled = metrics_enabled
        self.ready = False
        self.last_error: str | None = None
        self.last_reload_at: float | None = None
        self._stop = asyncio.Event()

    def status(self) -> dict:
        return {"ready": self.ready, "last_error": self.last_error, "at": self.last_reload_at}

    async def run(self) -> int:
        access_log = (
            AccessLog(self.access_log_path, **self.access_log_options) if self.access_log_path else None
        )
        tracing = None
        if self.otlp_endpoint:
            from meshgate.telemetry.tracing import Tracing

            tracing = Tracing(self.otlp_endpoint, ratio=self.trace_sampling)
        self.engine = engine = Engine(
            bind=self.bind,
            reuse_port=self.reuse_port,
            access_log=access_log,
            tracing=tracing,
            metrics_enabled=self.metrics_enabled,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        admin = None
        if self.admin_addr is not None or self.internal_admin is not None:
            admin = AdminServer(engine, self.status, on_drain=self._stop.set, peers=self.peers)
            if self.admin_addr is not None:
                await admin.start(*self.admin_addr)
            if self.internal_admin is not None:
                if os.path.exists(self.internal_admin):  # left by a crashed predecessor
                    os.unlink(self.internal_admin)
                await admin.start_internal(self.internal_admin)
        seen = fingerprint(self.paths)
        if not await self.reload(initial=True):
            if admin is not None:
                admin.close()
            return 1
        self.ready = True
        # Everything loaded so far (modules, models, the snapshot) lives for the whole
        # process: keep it out of the cyclic collector's full passes.
        gc.freeze()
        ready_fd = os.environ.pop("MESHGATE_READY_FD", None)
        if ready_fd is not None:  # a supervisor waits for this worker (cli/gateway.py)
            os.write(int(ready_fd), b"1")
            os.close(int(ready_fd))
        log.info(
            "serving %s on %s ports %s (config %s)",
            ", ".join(sorted(self.gateways)) if self.gateways else "all gateways",
            self.bind,
            engine.bound_ports,
            engine.snapshot.version,  # type: ignore[union-attr]
        )
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), self.watch_interval)
            except TimeoutError:
                pass
            if self._stop.is_set():
                break
            now = fingerprint(self.paths)
            if now != seen:
                seen = now
                await self.reload()
        log.info("draining: finishing in-flight requests (deadline %.0fs)", self.limits.drain_timeout)
        await engine.drain(self.limits.drain_timeout)
        if admin is not None:
            admin.close()
        log.info("stopped")
        return 0

    async def reload(self, initial: bool = False) -> bool:
        try:
            snapshot, warnings = build_snapshot(self.paths, self.gateways, self.limits)
        except ConfigInvalid as exc:
            self._rejected(exc.errors, initial)
            return False
        for w in warnings:
            log.warning("%s", w)
        current = self.engine.snapshot
        if current is not None and current.version == snapshot.version:
            return True
        try:
            await self.engine.apply(snapshot)
        except OSError as exc:
            self._rejected([f"cannot bind listeners: {exc}"], initial)
            return False
        self.last_error = None
        self.last_reload_at = time.time()
        if not initial:
            self.engine.metrics.config_reloads["accepted"] += 1
            log.info("config %s applied (ports %s)", snapshot.version, self.engine.bound_ports)
        return True

    def _rejected(self, errors: list, initial: bool) -> None:
        self.last_error = "\n".join(str(e) for e in errors)
        self.last_reload_at = time.time()
        if initial:
            log.error("config rejected; nothing to serve:")
        else:
            self.engine.metrics.config_reloads["rejected"] += 1
            log.error("config change rejected; the last good config keeps serving:")
        for e in errors:
            log.error("  %s", e)
