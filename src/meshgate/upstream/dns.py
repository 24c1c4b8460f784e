"""Periodic re-resolution of a cluster's DNS-named endpoints (Backend ``fqdn``).

``DnsResolver`` owns one cluster's names and the IP endpoints they currently stand
for (``current``); the cluster hears about every change through ``on_change``.

- The first resolution runs at ``start``. Until one succeeds ``current`` stays empty
  (the cluster has no healthy upstream), and it is retried every ``min(refresh, 5 s)``.
- A later resolution that fails (an exception, or no addresses) keeps the old
  addresses; so does one name failing while others resolve.
- A changed set is adopted only once at least one of its new addresses answers a TCP
  connect: a record pointed at hosts that are not up yet keeps traffic on the old ones.
  Until then the change is retried every ``min(refresh, 5 s)``. With nothing to keep
  (``current`` empty) or nothing new (addresses only removed) it is adopted at once.
- An unchanged set does nothing. Answers are sorted, so a DNS server that rotates its
  answers does not look like a change.

Resolution, probing, the clock and sleeping are injectable, so tests run without DNS,
sockets or real time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence

from meshgate.config.snapshot import Endpoint

log = logging.getLogger("meshgate.upstream.dns")

Resolve = Callable[[str], Awaitable[Sequence[str]]]
Probe = Callable[[str, int], Awaitable[bool]]

RETRY_DELAY = 5.0  # seconds; the most we wait to retry a failed or pending resolution
PROBE_TIMEOUT = 1.0


class DnsResolutionError(OSError):
    """No name of the cluster resolved to any address."""


async def resolve_with_getaddrinfo(host: str) -> list[str]:
    """The IPv4 and IPv6 addresses of ``host``, as the system resolver gives them."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, None, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM
    )
    return [info[4][0] for info in infos]


async def probe_tcp(ip: str, port: int) -> bool:
    """True when a TCP connection to ``ip:port`` opens within ``PROBE_TIMEOUT``."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), PROBE_TIMEOUT)
    except (TimeoutError, OSError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True


def _ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def _ip_order(ip: str) -> tuple[int, int, str]:
    """IPv4 before IPv6, numerically; anything unparsable last, as text."""
    try:
        addr = ipaddress.ip_address(ip.partition("%")[0])
    except ValueError:
        return (7, 0, ip)
    return (addr.version, int(addr), ip)


class DnsResolver:
    __slots__ = (
        "_adopted",
        "_clock",
        "_probe",
        "_resolve",
        "_sleep",
        "_task",
        "changes",
        "current",
        "failures",
        "names",
        "on_change",
        "pending",
        "refresh",
        "resolved_at",
    )

    def __init__(
        self,
        names: Sequence[Endpoint],
        refresh: float,
        on_change: Callable[[tuple[Endpoint, ...]], None],
        resolve: Resolve | None = None,
        probe: Probe | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if refresh <= 0:
            raise ValueError(f"DNS refresh interval must be positive, got {refresh}")
        self.names = tuple(dict.fromkeys(names))
        self.refresh = float(refresh)
        self.on_change = on_change
        self._resolve = resolve if resolve is not None else resolve_with_getaddrinfo
        self._probe = probe if probe is not None else probe_tcp
        self._clock = clock
        self._sleep = sleep
        self._task: asyncio.Task | None = None
        self.current: tuple[Endpoint, ...] = ()
        # The addresses each name stood for when ``current`` was adopted: what a name
        # that fails to resolve later contributes.
        self._adopted: dict[Endpoint, tuple[Endpoint, ...]] = {}
        self.pending: tuple[Endpoint, ...] = ()  # a change waiting for a probe to answer
        self.resolved_at: float | None = None  # clock time of the last good resolution
        self.failures = 0  # consecutive failed resolutions
        self.changes = 0  # times ``current`` changed

    def __repr__(self) -> str:
        names = ", ".join(f"{n.host}:{n.port}" for n in self.names)
        state = "pending" if self.pending else "failing" if self.failures else "settled"
        return f"<DnsResolver {names} [{len(self.current)} addresses, {state}]>"

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def retry_delay(self) -> float:
        return min(self.refresh, RETRY_DELAY)

    # -- one round -------------------------------------------------------------------

    async def resolve_once(self) -> tuple[Endpoint, ...]:
        """The IP endpoints the names stand for now, deduplicated, in a stable order.

        A name that fails contributes the addresses it had when ``current`` was last
        adopted; raises ``DnsResolutionError`` when no name resolved at all.
        """
        endpoints, _ = await self._resolve_all()
        return endpoints

    async def _resolve_all(
        self,
    ) -> tuple[tuple[Endpoint, ...], dict[Endpoint, tuple[Endpoint, ...]]]:
        answers = await asyncio.gather(
            *(self._resolve_name(n.host) for n in self.names), return_exceptions=True
        )
        by_name: dict[Endpoint, tuple[Endpoint, ...]] = {}
        resolved = 0
        errors = []
        for name, answer in zip(self.names, answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, Exception):
                    raise answer  # cancellation and the like are not resolution failures
                errors.append(f"{name.host}: {answer!r}")
            elif not answer:
                errors.append(f"{name.host}: no addresses")
            else:
                resolved += 1
                ips = sorted(dict.fromkeys(answer), key=_ip_order)
                by_name[name] = tuple(Endpoint(ip, name.port) for ip in ips)
                continue
            by_name[name] = self._adopted.get(name, ())
        if not resolved:
            raise DnsResolutionError("; ".join(errors))
        if errors:
            log.warning("DNS: keeping the last addresses of %s", "; ".join(errors))
        merged = dict.fromkeys(ep for eps in by_name.values() for ep in eps)
        return tuple(merged), by_name

    async def _resolve_name(self, host: str) -> Sequence[str]:
        literal = _ip_literal(host)
        if literal is not None:
            return [literal]
        return await self._resolve(host)

    async def update(self) -> bool:
        """Resolve, probe what is new, adopt it: one round. True when the names resolved
        and ``current`` is what they say (unchanged or adopted); False when the
        resolution failed or a change waits for its new addresses to answer."""
        try:
            candidate, by_name = await self._resolve_all()
        except DnsResolutionError as e:
            self.failures += 1
            if self.failures == 1:
                kept = (
                    f"keeping {len(self.current)} addresses" if self.current else "no addresses yet"
                )
                log.warning("DNS resolution failed (%s): %s", kept, e)
            return False
        self.failures = 0
        self.resolved_at = self._clock()
        old = set(self.current)
        if set(candidate) == old:
            self._adopted = by_name
            self.pending = ()
            return True
        new = [ep for ep in candidate if ep not in old]
        if old and new and not await self._any_answers(new):
            if candidate != self.pending:
                log.warning(
                    "DNS: new addresses %s do not answer yet; keeping %s",
                    _addresses(new),
                    _addresses(self.current),
                )
            self.pending = candidate
            return False
        self._adopt(candidate, by_name)
        return True

    async def _any_answers(self, endpoints: list[Endpoint]) -> bool:
        answers = await asyncio.gather(
            *(self._probe(ep.host, ep.port) for ep in endpoints), return_exceptions=True
        )
        for a in answers:
            if isinstance(a, BaseException) and not isinstance(a, Exception):
                raise a
        return any(a is True for a in answers)

    def _adopt(self, endpoints: tuple[Endpoint, ...], by_name: dict) -> None:
        log.info("DNS: %s -> %s", _addresses(self.current), _addresses(endpoints))
        self.current = endpoints
        self._adopted = by_name
        self.pending = ()
        self.changes += 1
        try:
            self.on_change(endpoints)
        except Exception:
            # The cluster's problem, not a reason to stop re-resolving.
            log.exception("DNS: on_change failed for %s", _addresses(endpoints))

    # -- background loop -------------------------------------------------------------

    def start(self) -> None:
        """Resolve now, then every ``refresh`` seconds (sooner while failing or pending)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def aclose(self) -> None:
        """Stop and wait until the loop has ended."""
        task = self._task
        self.stop()
        if task is not None:
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            settled = await self.update()
            await self._sleep(self.refresh if settled else self.retry_delay)


def _addresses(endpoints: Sequence[Endpoint]) -> str:
    return "[" + ", ".join(f"{ep.host}:{ep.port}" for ep in endpoints) + "]"
