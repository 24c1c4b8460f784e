"""Re-resolution of DNS-named endpoints: what the cluster is told, and when.

Resolution, probes and sleeps are injected (no real DNS, no waiting), except for the
last tests, which use the system resolver on "localhost" and real TCP probes against a
server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from meshgate.config.snapshot import Endpoint
from meshgate.upstream.dns import DnsResolutionError, DnsResolver, probe_tcp

NAME = Endpoint("api.example.com", 8080)


def eps(*ips: str, port: int = 8080) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(ip, port) for ip in ips)


class FakeDns:
    """Answers by name; an Exception as the answer is raised."""

    def __init__(self, **answers: list[str] | Exception) -> None:
        self.answers: dict[str, list[str] | Exception] = {
            k.replace("_", "."): v for k, v in answers.items()
        }
        self.asked: list[str] = []

    def set(self, name: str, answer: list[str] | Exception) -> None:
        self.answers[name] = answer

    async def __call__(self, name: str) -> list[str]:
        self.asked.append(name)
        answer = self.answers.get(name, OSError("NXDOMAIN"))
        if isinstance(answer, Exception):
            raise answer
        return list(answer)


class FakeProbe:
    def __init__(self, up: set[str] | None = None) -> None:
        self.up = up if up is not None else set()
        self.probed: list[tuple[str, int]] = []

    async def __call__(self, ip: str, port: int) -> bool:
        self.probed.append((ip, port))
        return ip in self.up


class StepSleep:
    """An injected sleep that records the delay and waits until the test wakes it."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._asleep = asyncio.Event()
        self._wake: asyncio.Future | None = None

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self._wake = asyncio.get_running_loop().create_future()
        self._asleep.set()
        await self._wake

    async def until_asleep(self) -> float:
        await asyncio.wait_for(self._asleep.wait(), 1.0)
        self._asleep.clear()
        return self.delays[-1]

    async def next_round(self) -> float:
        """Wake the loop and wait until it sleeps again; the new delay."""
        assert self._wake is not None
        self._wake.set_result(None)
        return await self.until_asleep()


class Changes(list):
    def __call__(self, endpoints: tuple[Endpoint, ...]) -> None:
        self.append(endpoints)


def resolver(
    dns: FakeDns,
    probe: FakeProbe | None = None,
    names: tuple[Endpoint, ...] = (NAME,),
    refresh: float = 30.0,
    sleep: StepSleep | None = None,
) -> tuple[DnsResolver, Changes]:
    changes = Changes()
    r = DnsResolver(
        names,
        refresh,
        changes,
        resolve=dns,
        probe=probe or FakeProbe(),
        clock=lambda: 123.0,
        sleep=sleep or StepSleep(),
    )
    return r, changes


# -- resolve_once ------------------------------------------------------------------


async def test_resolve_once_dedups_and_orders_stably() -> None:
    dns = FakeDns(api_example_com=["10.0.0.9", "2001:db8::1", "10.0.0.10", "10.0.0.9"])
    r, _ = resolver(dns)
    first = await r.resolve_once()
    assert first == eps("10.0.0.9", "10.0.0.10", "2001:db8::1")
    dns.set("api.example.com", ["2001:db8::1", "10.0.0.10", "10.0.0.9"])  # rotated
    assert await r.resolve_once() == first


async def test_resolve_once_merges_names_and_skips_dns_for_ip_literals() -> None:
    dns = FakeDns(a_example=["10.0.0.1", "10.0.0.2"], b_example=["10.0.0.2"])
    names = (Endpoint("a.example", 80), Endpoint("b.example", 80), Endpoint("192.0.2.7", 81))
    r, _ = resolver(dns, names=names)
    assert await r.resolve_once() == (
        Endpoint("10.0.0.1", 80),
        Endpoint("10.0.0.2", 80),
        Endpoint("192.0.2.7", 81),
    )
    assert sorted(dns.asked) == ["a.example", "b.example"]


@pytest.mark.parametrize("answer", [OSError("SERVFAIL"), []])
async def test_resolve_once_fails_when_nothing_resolves(answer: list | Exception) -> None:
    r, _ = resolver(FakeDns(api_example_com=answer))
    with pytest.raises(DnsResolutionError):
        await r.resolve_once()


# -- update: the adoption rules ----------------------------------------------------


async def test_first_resolution_is_adopted_without_probing() -> None:
    probe = FakeProbe()
    r, changes = resolver(FakeDns(api_example_com=["10.0.0.1"]), probe)
    assert await r.update() is True
    assert r.current == eps("10.0.0.1")
    assert changes == [eps("10.0.0.1")]
    assert probe.probed == []
    assert r.resolved_at == 123.0


async def test_first_resolution_failing_leaves_no_upstream() -> None:
    dns = FakeDns(api_example_com=OSError("NXDOMAIN"))
    r, changes = resolver(dns)
    assert await r.update() is False
    assert r.current == ()
    assert changes == []
    dns.set("api.example.com", ["10.0.0.1"])
    assert await r.update() is True
    assert changes == [eps("10.0.0.1")]


async def test_unchanged_set_does_nothing() -> None:
    dns = FakeDns(api_example_com=["10.0.0.1", "10.0.0.2"])
    probe = FakeProbe()
    r, changes = resolver(dns, probe)
    await r.update()
    dns.set("api.example.com", ["10.0.0.2", "10.0.0.1"])
    assert await r.update() is True
    assert changes == [eps("10.0.0.1", "10.0.0.2")]
    assert probe.probed == []


@pytest.mark.parametrize("answer", [OSError("SERVFAIL"), TimeoutError(), []])
async def test_failed_refresh_keeps_old_addresses(answer: list | Exception) -> None:
    dns = FakeDns(api_example_com=["10.0.0.1"])
    r, changes = resolver(dns)
    await r.update()
    dns.set("api.example.com", answer)
    assert await r.update() is False
    assert r.current == eps("10.0.0.1")
    assert changes == [eps("10.0.0.1")]
    assert r.failures == 1


async def test_one_name_failing_keeps_its_old_addresses() -> None:
    dns = FakeDns(a_example=["10.0.0.1"], b_example=["10.0.0.2"])
    names = (Endpoint("a.example", 80), Endpoint("b.example", 80))
    r, changes = resolver(dns, FakeProbe({"10.0.0.3"}), names=names)
    await r.update()
    dns.set("a.example", OSError("SERVFAIL"))
    dns.set("b.example", ["10.0.0.3"])
    assert await r.update() is True
    assert changes[-1] == (Endpoint("10.0.0.1", 80), Endpoint("10.0.0.3", 80))


async def test_new_addresses_adopted_only_once_one_answers() -> None:
    dns = FakeDns(api_example_com=["10.0.0.1"])
    probe = FakeProbe()
    r, changes = resolver(dns, probe)
    await r.update()

    dns.set("api.example.com", ["10.0.0.5", "10.0.0.6"])  # moved; not up yet
    assert await r.update() is False
    assert r.current == eps("10.0.0.1")
    assert r.pending == eps("10.0.0.5", "10.0.0.6")
    assert sorted(probe.probed) == [("10.0.0.5", 8080), ("10.0.0.6", 8080)]
    assert len(changes) == 1

    probe.up.add("10.0.0.6")  # one of them comes up
    assert await r.update() is True
    assert r.current == eps("10.0.0.5", "10.0.0.6")  # the whole new set, not just 10.0.0.6
    assert r.pending == ()
    assert changes == [eps("10.0.0.1"), eps("10.0.0.5", "10.0.0.6")]


async def test_only_new_addresses_are_probed() -> None:
    dns = FakeDns(api_example_com=["10.0.0.1"])
    probe = FakeProbe({"10.0.0.2"})
    r, changes = resolver(dns, probe)
    await r.update()
    dns.set("api.example.com", ["10.0.0.1", "10.0.0.2"])
    assert await r.update() is True
    assert probe.probed == [("10.0.0.2", 8080)]
    assert changes[-1] == eps("10.0.0.1", "10.0.0.2")


async def test_removals_alone_are_adopted_at_once() -> None:
    dns = FakeDns(api_example_com=["10.0.0.1", "10.0.0.2"])
    probe = FakeProbe()
    r, changes = resolver(dns, probe)
    await r.update()
    dns.set("api.example.com", ["10.0.0.2"])
    assert await r.update() is True
    assert changes[-1] == eps("10.0.0.2")
    assert probe.probed == []


async def test_a_probe_that_raises_counts_as_not_answering() -> None:
    async def broken_probe(ip: str, port: int) -> bool:
        raise OSError("unreachable")

    dns = FakeDns(api_example_com=["10.0.0.1"])
    changes = Changes()
    r = DnsResolver([NAME], 30, changes, resolve=dns, probe=broken_probe)
    await r.update()
    dns.set("api.example.com", ["10.0.0.2"])
    assert await r.update() is False
    assert r.current == eps("10.0.0.1")


async def test_on_change_failing_does_not_stop_resolution(caplog: pytest.LogCaptureFixture) -> None:
    def explode(endpoints: tuple[Endpoint, ...]) -> None:
        raise RuntimeError("cluster broke")

    r = DnsResolver([NAME], 30, explode, resolve=FakeDns(api_example_com=["10.0.0.1"]))
    with caplog.at_level(logging.ERROR, "meshgate.upstream.dns"):
        assert await r.update() is True
    assert r.current == eps("10.0.0.1")
    assert "on_change failed" in caplog.text


# -- the loop ----------------------------------------------------------------------


async def test_loop_resolves_at_start_then_every_refresh() -> None:
    dns = FakeDns(api_example_com=["10.0.0.1"])
    sleep = StepSleep()
    r, changes = resolver(dns, FakeProbe({"10.0.0.2"}), sleep=sleep, refresh=30)
    r.start()
    assert await sleep.until_asleep() == 30
    assert changes == [eps("10.0.0.1")]
    dns.set("api.example.com", ["10.0.0.2"])
    assert await sleep.next_round() == 30
    assert changes[-1] == eps("10.0.0.2")
    await r.aclose()
    assert dns.asked == ["api.example.com", "api.example.com"]


async def test_loop_retries_sooner_while_failing_or_pending() -> None:
    dns = FakeDns(api_example_com=OSError("NXDOMAIN"))
    probe = FakeProbe()
    sleep = StepSleep()
    r, changes = resolver(dns, probe, sleep=sleep, refresh=30)
    r.start()
    assert await sleep.until_asleep() == 5.0  # first resolution failed
    assert r.current == ()
    dns.set("api.example.com", ["10.0.0.1"])
    assert await sleep.next_round() == 30
    dns.set("api.example.com", ["10.0.0.2"])
    assert await sleep.next_round() == 5.0  # 10.0.0.2 does not answer yet
    assert r.current == eps("10.0.0.1")
    probe.up.add("10.0.0.2")
    assert await sleep.next_round() == 30
    assert changes == [eps("10.0.0.1"), eps("10.0.0.2")]
    await r.aclose()


async def test_short_refresh_is_also_the_retry_delay() -> None:
    sleep = StepSleep()
    r, _ = resolver(FakeDns(), sleep=sleep, refresh=2)
    r.start()
    assert await sleep.until_asleep() == 2
    await r.aclose()


async def test_stop_ends_the_loop_and_start_twice_runs_one() -> None:
    sleep = StepSleep()
    dns = FakeDns(api_example_com=["10.0.0.1"])
    r, _ = resolver(dns, sleep=sleep)
    r.start()
    r.start()
    await sleep.until_asleep()
    assert r.running
    r.stop()
    assert not r.running
    await asyncio.sleep(0)
    assert dns.asked == ["api.example.com"]
    assert len(sleep.delays) == 1


# -- the real resolver and probe -----------------------------------------------------


async def test_default_resolver_resolves_localhost() -> None:
    r = DnsResolver([Endpoint("localhost", 9)], 30, Changes())
    got = await r.resolve_once()
    assert got
    assert {ep.host for ep in got} <= {"127.0.0.1", "::1"}
    assert all(ep.port == 9 for ep in got)


async def test_default_probe_connects_to_a_listening_port() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await probe_tcp("127.0.0.1", port) is True
    finally:
        server.close()
        await server.wait_closed()
    assert await probe_tcp("127.0.0.1", port) is False
