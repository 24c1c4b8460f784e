"""Active health checking: the threshold state machine alone, one probe against real
servers on 127.0.0.1, and the schedule under virtual time."""

from __future__ import annotations

import asyncio
import heapq
import socket
from dataclasses import replace
from typing import Self

import pytest

from meshgate.config.snapshot import Endpoint
from meshgate.config.traffic import ActiveHealthCheck
from meshgate.upstream.health import (
    ACTIVE_FAILURE,
    NETWORK_FAILURE,
    PASS,
    ActiveHealthChecker,
)
from meshgate.upstream.host import Host


class FakePool:
    active = 0
    connecting = 0
    waiters = ()


def make_host(port: int = 8080, address: str = "127.0.0.1") -> Host:
    return Host(Endpoint(address, port), FakePool(), 0.0)


def checker(hosts=(), on_change=lambda: None, **cfg) -> ActiveHealthChecker:
    return ActiveHealthChecker(replace(ActiveHealthCheck(), **cfg), lambda: list(hosts), on_change)


# -- record(): the state machine ---------------------------------------------------------


def test_first_success_decides_even_with_a_high_healthy_threshold():
    hc = checker(healthy_threshold=5)
    h = make_host()
    h.hc_failed = True  # e.g. Envoy's view of a host nobody has checked yet
    assert hc.record(h, True) is True
    assert not h.hc_failed and h.hc_checked


def test_first_failure_decides_even_with_a_high_unhealthy_threshold():
    hc = checker(unhealthy_threshold=5)
    h = make_host()
    assert hc.record(h, False) is True
    assert h.hc_failed and not h.routable


def test_unhealthy_threshold_counts_consecutive_network_failures():
    hc = checker(unhealthy_threshold=3)
    h = make_host()
    hc.record(h, True)
    assert [hc.record(h, False), hc.record(h, False)] == [False, False]
    assert not h.hc_failed and h.hc_failures == 2
    hc.record(h, True)  # a success restarts the count
    assert h.hc_failures == 0
    assert [hc.record(h, False) for _ in range(3)] == [False, False, True]
    assert h.hc_failed
    assert hc.record(h, False) is False  # already failed: no flip


def test_healthy_threshold_counts_consecutive_successes():
    hc = checker(healthy_threshold=2, unhealthy_threshold=1)
    h = make_host()
    hc.record(h, False)
    assert h.hc_failed
    assert hc.record(h, True) is False
    hc.record(h, False)  # a failure restarts the count
    assert h.hc_successes == 0
    assert [hc.record(h, True), hc.record(h, True)] == [False, True]
    assert not h.hc_failed and h.routable


def test_an_answered_failure_fails_a_healthy_host_at_once():
    hc = checker(unhealthy_threshold=3)
    h = make_host()
    hc.record(h, True)
    assert hc.record(h, False, network=False) is True
    assert h.hc_failed


def test_an_answered_failure_does_not_shortcut_recovery():
    hc = checker(healthy_threshold=2)
    h = make_host()
    hc.record(h, False, network=False)
    assert hc.record(h, False, network=False) is False
    assert [hc.record(h, True), hc.record(h, True)] == [False, True]


def test_thresholds_below_one_act_as_one():
    hc = checker(healthy_threshold=0, unhealthy_threshold=0)
    h = make_host()
    hc.record(h, True)
    assert hc.record(h, False) is True
    assert hc.record(h, True) is True


# -- probe(): one check against real servers -------------------------------------------


class Backend:
    """A TCP server on 127.0.0.1 that answers each connection with ``reply`` (None:
    reads and never answers); it records what it received and when the peer closed."""

    def __init__(self, reply: bytes | None, *, read_request: bool = True, close: bool = False) -> None:
        self.reply = reply
        self.read_request = read_request
        self.close = close  # close right after the reply (else wait for the peer to)
        self.received: list[bytes] = []
        self.closed_by_peer = asyncio.Event()
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Self:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for w in self._writers:
            w.close()
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        data = b""
        try:
            if self.read_request:
                while b"\r\n\r\n" not in data:
                    chunk = await reader.read(4096)
                    if not chunk:
                        break
                    data += chunk
            else:
                data = await asyncio.wait_for(reader.read(4096), 1.0)
            self.received.append(data)
            if self.reply is not None:
                writer.write(self.reply)
                await writer.drain()
                if self.close:
                    return
            while await reader.read(4096):
                pass
            self.closed_by_peer.set()
        except (TimeoutError, ConnectionError):
            self.closed_by_peer.set()
        finally:
            writer.close()

    def host(self) -> Host:
        return make_host(self.port)


def http_reply(status: int, body: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)


async def test_http_200_passes_and_the_request_is_envoy_shaped():
    async with Backend(http_reply(200)) as b:
        hc = checker(path="/healthz", method="HEAD")
        assert await hc.probe(b.host()) is True
        assert b.received == [
            b"HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            b"User-Agent: meshgate-health-check\r\nConnection: close\r\n\r\n" % b.port
        ]
        await asyncio.wait_for(b.closed_by_peer.wait(), 2)
    assert (hc.checks_total, hc.failures_total) == (1, 0)


async def test_http_host_header_from_config():
    async with Backend(http_reply(200)) as b:
        await checker(host="health.example").probe(b.host())
        assert b"\r\nHost: health.example\r\n" in b.received[0]


async def test_http_503_is_an_answered_failure():
    async with Backend(http_reply(503)) as b:
        hc = checker()
        assert await hc.check(b.host()) == ACTIVE_FAILURE
        assert await hc.probe(b.host()) is False
    assert (hc.checks_total, hc.failures_total) == (2, 2)


async def test_http_expected_statuses_are_configurable():
    async with Backend(http_reply(204)) as b:
        assert await checker().probe(b.host()) is False
        assert await checker(expected_statuses=frozenset({200, 204})).probe(b.host()) is True


async def test_http_expected_body():
    async with Backend(http_reply(200, b'{"status": "SERVING"}')) as b:
        assert await checker(expected_body=b"SERVING").probe(b.host()) is True
        assert await checker(expected_body=b"NOT_SERVING").check(b.host()) == ACTIVE_FAILURE


async def test_http_expected_body_in_a_chunked_answer_kept_alive():
    reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnope\r\n0\r\n\r\n"
    async with Backend(reply) as b:
        hc = checker(expected_body=b"ok", timeout=5.0)
        assert await hc.check(b.host()) == ACTIVE_FAILURE  # at the last chunk, not at the timeout


async def test_http_expected_body_delimited_by_close():
    async with Backend(b"HTTP/1.0 200 OK\r\n\r\nall good", close=True) as b:
        assert await checker(expected_body=b"good").probe(b.host()) is True
        assert await checker(expected_body=b"bad").check(b.host()) == ACTIVE_FAILURE


async def test_http_expected_body_is_not_matched_in_the_headers():
    async with Backend(http_reply(200, b"nope")) as b:
        assert await checker(expected_body=b"Content-Length").probe(b.host()) is False


async def test_http_no_answer_times_out_as_a_network_failure_and_closes_the_socket():
    async with Backend(None) as b:
        hc = checker(timeout=0.05)
        assert await hc.check(b.host()) == NETWORK_FAILURE
        await asyncio.wait_for(b.closed_by_peer.wait(), 2)
    assert hc.failures_total == 1


async def test_http_garbage_instead_of_a_status_line_is_a_network_failure():
    async with Backend(b"SSH-2.0-OpenSSH\r\n") as b:
        assert await checker().check(b.host()) == NETWORK_FAILURE


async def test_http_connection_closed_without_an_answer_is_a_network_failure():
    async with Backend(b"", close=True) as b:
        assert await checker().check(b.host()) == NETWORK_FAILURE


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_refused_connection_is_a_network_failure():
    hc = checker()
    assert await hc.check(make_host(closed_port())) == NETWORK_FAILURE
    assert await checker(kind="TCP").probe(make_host(closed_port())) is False


async def test_unresolvable_host_is_a_failure_not_an_exception():
    hc = checker(timeout=2.0)
    assert await hc.probe(make_host(80, "no-such-host.invalid")) is False


async def test_tcp_connect_only():
    async with Backend(None, read_request=False) as b:
        hc = checker(kind="TCP", timeout=0.5)
        assert await hc.probe(b.host()) is True


async def test_tcp_send_and_receive():
    async with Backend(b"+PONG\r\n", read_request=False) as b:
        hc = checker(kind="TCP", send=b"PING\r\n", receive=b"PONG")
        assert await hc.probe(b.host()) is True
        assert b.received == [b"PING\r\n"]
        await asyncio.wait_for(b.closed_by_peer.wait(), 2)


async def test_tcp_wrong_reply_times_out():
    async with Backend(b"-ERR\r\n", read_request=False) as b:
        hc = checker(kind="TCP", send=b"PING\r\n", receive=b"PONG", timeout=0.05)
        assert await hc.check(b.host()) == NETWORK_FAILURE


# -- the schedule, under virtual time -----------------------------------------------------


class VirtualTime:
    """``sleep`` that returns only when the test advances time."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._timers, (self.now + seconds, self._seq, fut))
        await fut

    async def advance(self, seconds: float) -> None:
        target = self.now + seconds
        await settle()
        while self._timers and self._timers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._timers)
            if fut.done():
                continue
            self.now = deadline
            fut.set_result(None)
            await settle()
        self.now = target


async def settle() -> None:
    for _ in range(30):
        await asyncio.sleep(0)


class ScriptedChecker(ActiveHealthChecker):
    """Probes answer from a per-host script (then PASS); calls are logged with the
    virtual time."""

    def __init__(self, hosts: list[Host], script: dict[str, list[str]], **cfg: object) -> None:
        self.vt = VirtualTime()
        self.hosts = hosts
        self.changes = 0
        self.script = script
        self.calls: list[tuple[float, str]] = []
        super().__init__(
            replace(ActiveHealthCheck(), **cfg), lambda: self.hosts, self._changed, self.vt, self.vt.sleep
        )

    def _changed(self) -> None:
        self.changes += 1

    async def check(self, host: Host) -> str:
        self.calls.append((self.vt.now, host.address))
        steps = self.script.get(host.address) or []
        return steps.pop(0) if steps else PASS


@pytest.fixture
async def scripted():
    made: list[ScriptedChecker] = []

    def make(hosts: list[Host], script: dict[str, list[str]] | None = None, **cfg: object) -> ScriptedChecker:
        hc = ScriptedChecker(hosts, script or {}, **cfg)
        made.append(hc)
        return hc

    yield make
    for hc in made:
        hc.stop()
    await settle()


async def test_first_round_is_immediate_then_every_interval(scripted):
    a, b = make_host(1), make_host(2)
    hc = scripted([a, b], interval=3.0)
    hc.start()
    await settle()
    assert sorted(hc.calls) == [(0.0, a.address), (0.0, b.address)]
    await hc.vt.advance(2.9)
    assert len(hc.calls) == 2
    await hc.vt.advance(0.1)
    await hc.vt.advance(3.0)
    assert [t for t, _ in hc.calls] == [0.0, 0.0, 3.0, 3.0, 6.0, 6.0]
    assert a.hc_checked and b.hc_checked and hc.changes == 0


async def test_the_loop_applies_thresholds_and_tells_the_owner_on_each_flip(scripted):
    h = make_host(1)
    script = {h.address: [PASS, NETWORK_FAILURE, NETWORK_FAILURE, NETWORK_FAILURE, PASS, PASS]}
    hc = scripted([h], script, interval=1.0, unhealthy_threshold=3, healthy_threshold=2)
    hc.start()
    await settle()
    await hc.vt.advance(2.0)
    assert not h.hc_failed and hc.changes == 0
    await hc.vt.advance(1.0)  # third network failure in a row
    assert h.hc_failed and hc.changes == 1
    await hc.vt.advance(1.0)
    assert h.hc_failed
    await hc.vt.advance(1.0)  # second success in a row
    assert not h.hc_failed and hc.changes == 2


async def test_an_answered_failure_flips_at_once_in_the_loop(scripted):
    h = make_host(1)
    hc = scripted([h], {h.address: [PASS, ACTIVE_FAILURE]}, interval=1.0, unhealthy_threshold=3)
    hc.start()
    await settle()
    await hc.vt.advance(1.0)
    assert h.hc_failed and hc.changes == 1


async def test_a_host_added_by_a_reload_is_checked_at_once(scripted):
    a, b = make_host(1), make_host(2)
    hc = scripted([a], interval=3.0)
    hc.start()
    await settle()
    await hc.vt.advance(1.0)
    hc.hosts = [a, b]
    hc.hosts_changed()
    await settle()
    assert hc.calls[-1] == (1.0, b.address)
    await hc.vt.advance(2.0)  # a keeps its own schedule
    assert (3.0, a.address) in hc.calls
    await hc.vt.advance(1.0)
    assert (4.0, b.address) in hc.calls


async def test_without_a_hint_new_hosts_are_seen_at_the_next_round(scripted):
    a, b = make_host(1), make_host(2)
    hc = scripted([a], interval=3.0)
    hc.start()
    await settle()
    hc.hosts = [a, b]
    await hc.vt.advance(2.9)
    assert all(addr == a.address for _, addr in hc.calls)
    await hc.vt.advance(0.1)
    assert (3.0, b.address) in hc.calls


async def test_a_removed_host_is_no_longer_checked(scripted):
    a, b = make_host(1), make_host(2)
    hc = scripted([a, b], interval=1.0)
    hc.start()
    await settle()
    hc.hosts = [a]
    hc.hosts_changed()
    await hc.vt.advance(5.0)
    assert [t for t, addr in hc.calls if addr == b.address] == [0.0]
    assert len([1 for _, addr in hc.calls if addr == a.address]) == 6


async def test_stop_ends_every_check_and_is_idempotent(scripted):
    h = make_host(1)
    hc = scripted([h], interval=1.0)
    hc.start()
    hc.start()  # a second start does not double the checks
    await settle()
    assert len(hc.calls) == 1
    hc.stop()
    hc.stop()
    await hc.vt.advance(10.0)
    assert len(hc.calls) == 1


async def test_start_stop_with_a_real_probe_closes_the_in_flight_connection():
    async with Backend(None) as b:
        hc = checker([b.host()], timeout=30.0)
        hc.start()
        for _ in range(200):  # readiness, with a deadline: the probe reached the server
            if b.received:
                break
            await asyncio.sleep(0.01)
        assert b.received
        hc.stop()
        await asyncio.wait_for(b.closed_by_peer.wait(), 2)
