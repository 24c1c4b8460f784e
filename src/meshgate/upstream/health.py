"""Active health checking for one cluster: probe every host every ``interval`` and
keep ``Host.hc_failed`` by Envoy's threshold rules.

Three parts, kept apart so each can be tested alone:

- ``check(host)`` / ``probe(host)``: one HTTP or TCP check with ``cfg.timeout`` on a
  fresh connection, closed afterwards. It never raises; it says how the check
  ended (``PASS``, ``NETWORK_FAILURE``, ``ACTIVE_FAILURE``).
- ``record(host, ok)``: the state machine, no I/O.
- ``start()`` / ``stop()``: one task per host (Envoy's per-host session), each
  checking at once and then ``interval`` after its previous check ended, with zero
  jitter; a supervisor re-reads ``hosts()`` every ``interval`` (or at once after
  ``hosts_changed()``), starts sessions for new hosts and cancels removed ones.

Envoy semantics (config.core.v3.HealthCheck, arch_overview/health_checking,
``health_checker_impl.cc``):

- the first check of a host decides at once: "during startup, only a single
  successful health check is required to mark a host healthy", and a first
  failure marks it unhealthy;
- afterwards ``healthy_threshold`` consecutive successes mark a failed host
  healthy, and ``unhealthy_threshold`` consecutive *network* failures (connect
  error, timeout, connection closed before a full answer) mark a healthy host
  unhealthy;
- an HTTP answer with an unexpected status, or without ``expected_body``, marks
  the host unhealthy immediately: Envoy counts only network failures and
  "retriable" statuses toward ``unhealthy_threshold`` ("the upstream host can
  return a non-expected or non-retriable status code ... to immediately notify
  downstream hosts to no longer forward traffic to it"); meshgate has no
  retriable statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshgate.config.traffic import ActiveHealthCheck
    from meshgate.upstream.host import Host

log = logging.getLogger("meshgate.upstream.health")

# How a check ended.
PASS = "pass"
NETWORK_FAILURE = "network_failure"  # counts toward unhealthy_threshold
ACTIVE_FAILURE = "active_failure"  # the host answered "not healthy": unhealthy at once

_MAX_READ = 64 * 1024  # bytes of an answer searched for the expected body / receive bytes
_USER_AGENT = b"meshgate-health-check"


class ActiveHealthChecker:
    def __init__(
        self,
        cfg: ActiveHealthCheck,
        hosts: Callable[[], Sequence[Host]],
        on_change: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.cfg = cfg
        self._hosts = hosts
        self._on_change = on_change
        self._clock = clock  # the owner's clock; the schedule itself runs on ``sleep``
        self._sleep = sleep
        self._healthy_threshold = max(1, cfg.healthy_threshold)
        self._unhealthy_threshold = max(1, cfg.unhealthy_threshold)
        self._supervisor: asyncio.Task[None] | None = None
        self._sessions: dict[Host, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        # Counters for /metrics.
        self.checks_total = 0
        self.failures_total = 0

    def __repr__(self) -> str:
        return (
            f"<ActiveHealthChecker {self.cfg.kind} sessions={len(self._sessions)} "
            f"checks={self.checks_total} failures={self.failures_total}>"
        )

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start checking in the running loop; the first round goes out at once."""
        if self._supervisor is None:
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    def stop(self) -> None:
        """Cancel every session (an in-flight probe closes its socket); idempotent."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            self._supervisor = None
        for task in self._sessions.values():
            task.cancel()
        self._sessions.clear()

    def hosts_changed(self) -> None:
        """The host list changed: check new hosts now rather than at the next round."""
        self._wake.set()

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            current = set(self._hosts())
            for host in list(self._sessions):
                if host not in current:
                    self._sessions.pop(host).cancel()
            for host in current:
                if host not in self._sessions:
                    self._sessions[host] = loop.create_task(self._session(host))
            self._wake.clear()
            await self._wait(self.cfg.interval)

    async def _wait(self, seconds: float) -> None:
        """Sleep ``seconds`` or until ``hosts_changed()``, whichever comes first."""
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    async def _session(self, host: Host) -> None:
        while True:
            outcome = await self.check(host)
            if self.record(host, outcome == PASS, network=outcome != ACTIVE_FAILURE):
                log.info(
                    "health check: %s is now %s (%s)",
                    host.address,
                    "unhealthy" if host.hc_failed else "healthy",
                    outcome,
                )
                try:
                    self._on_change()
                except Exception:  # the owner's bug must not end this host's checks
                    log.exception("health check: on_change failed")
            await self._sleep(self.cfg.interval)

    # -- the state machine -----------------------------------------------------------

    def record(self, host: Host, ok: bool, *, network: bool = True) -> bool:
        """Account one check result; True when ``host.hc_failed`` flipped.

        ``network=False`` marks a failure where the host answered "unhealthy" (HTTP
        status or body); it fails a healthy host without waiting for the threshold.
        """
        was_failed = host.hc_failed
        if ok:
            host.hc_successes += 1
            host.hc_failures = 0
            if not host.hc_checked or (was_failed and host.hc_successes >= self._healthy_threshold):
                host.hc_failed = False
        else:
            host.hc_failures += 1
            host.hc_successes = 0
            if not host.hc_checked or (
                not was_failed and (not network or host.hc_failures >= self._unhealthy_threshold)
            ):
                host.hc_failed = True
        host.hc_checked = True
        return host.hc_failed != was_failed

    # -- one check -------------------------------------------------------------------

    async def probe(self, host: Host) -> bool:
        """One check of ``host``: True if it passed. Never raises."""
        return await self.check(host) == PASS

    async def check(self, host: Host) -> str:
        """One check of ``host``: PASS, NETWORK_FAILURE or ACTIVE_FAILURE. Never raises
        (cancellation aside)."""
        self.checks_total += 1
        try:
            outcome = await asyncio.wait_for(self._exchange(host), self.cfg.timeout)
        except Exception:  # noqa: BLE001 -- timeout, refused, reset, DNS...: all network failures
            outcome = NETWORK_FAILURE
        if outcome != PASS:
            self.failures_total += 1
        return outcome

    async def _exchange(self, host: Host) -> str:
        ep = host.endpoint
        reader, writer = await asyncio.open_connection(ep.host, ep.port)
        try:
            if self.cfg.kind == "TCP":
                return await self._tcp(reader, writer)
            return await self._http(reader, writer, host)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: Host) -> str:
        cfg = self.cfg
        writer.write(self._request(host))
        await writer.drain()
        status_line = await reader.readline()
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            return NETWORK_FAILURE  # closed or garbled before a status: not an answer
        if int(parts[1]) not in cfg.expected_statuses:
            return ACTIVE_FAILURE
        expected = cfg.expected_body
        if not expected:
            return PASS
        body = await self._read_body(reader, expected)
        return PASS if expected in body else ACTIVE_FAILURE

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, expected: bytes) -> bytes:
        """The body (up to _MAX_READ bytes), ending at Content-Length, the last chunk
        or EOF, whichever the answer uses; early once ``expected`` is in it. A
        server that keeps the connection open despite ``Connection: close`` must not
        turn a complete answer into a timeout."""
        length = None
        chunked = False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length" and value.strip().isdigit():
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        want = _MAX_READ if length is None else min(length, _MAX_READ)
        body = b""
        while len(body) < want:
            chunk = await reader.read(want - len(body))
            if not chunk:
                break
            body += chunk
            if expected in body or (chunked and body.endswith(b"0\r\n\r\n")):
                break
        return body

    def _request(self, host: Host) -> bytes:
        cfg = self.cfg
        authority = cfg.host
        if authority is None:
            ep = host.endpoint
            authority = f"[{ep.host}]:{ep.port}" if ":" in ep.host else f"{ep.host}:{ep.port}"
        return (
            f"{cfg.method} {cfg.path} HTTP/1.1\r\nHost: {authority}\r\n".encode("latin-1")
            + b"User-Agent: "
            + _USER_AGENT
            + b"\r\nConnection: close\r\n\r\n"
        )

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        cfg = self.cfg
        if cfg.send:
            writer.write(cfg.send)
            await writer.drain()
        expected = cfg.receive
        if not expected:
            return PASS
        data = b""
        while len(data) < _MAX_READ:
            chunk = await reader.read(_MAX_READ - len(data))
            if not chunk:
                break  # Envoy: remote close before a match is a network failure
            data += chunk
            if expected in data:
                return PASS
        return NETWORK_FAILURE
