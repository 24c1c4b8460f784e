"""Fault injection: the draw rates a chaos test relies on, the abort reply a client
sees, and the delay actually awaited (recorded, never slept)."""

from __future__ import annotations

import asyncio
import inspect
import random

import pytest

from meshgate.config.snapshot import hooks_of
from meshgate.config.traffic import Fault
from meshgate.filters.resilience import FaultAbort, FaultDelay, fault_filters
from meshgate.filters.resilience import fault as fault_mod
from meshgate.http.headers import Headers
from meshgate.proxy.context import LocalReply, RequestContext

DRAWS = 10_000


def request() -> RequestContext:
    return RequestContext(
        "GET",
        "/",
        "/",
        "",
        Headers.from_pairs([]),
        "gw.example",
        "gw.example",
        "http",
        "1.1",
        "127.0.0.1",
        40000,
        80,
        "req-1",
        0.0,
    )


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """asyncio.sleep as the fault module sees it, recording instead of sleeping."""
    calls: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        calls.append(seconds)

    monkeypatch.setattr(fault_mod.asyncio, "sleep", fake_sleep)
    return calls


@pytest.fixture(autouse=True)
def seeded() -> None:
    random.seed(1234)


# -- which filters, in which order ------------------------------------------------


def test_only_configured_filters_delay_before_abort() -> None:
    assert fault_filters(Fault()) == ()
    (only_delay,) = fault_filters(Fault(delay=0.5))
    assert isinstance(only_delay, FaultDelay)
    (only_abort,) = fault_filters(Fault(abort_status=503))
    assert isinstance(only_abort, FaultAbort)
    both = fault_filters(Fault(delay=0.5, abort_status=503))
    assert [type(f) for f in both] == [FaultDelay, FaultAbort]


def test_abort_only_rule_stays_on_the_sync_path() -> None:
    req, resp = hooks_of(fault_filters(Fault(abort_status=503)))
    assert [is_async for _, is_async in req] == [False]
    assert resp == ()
    req, _ = hooks_of(fault_filters(Fault(delay=1.0, abort_status=503)))
    assert [is_async for _, is_async in req] == [True, False]


def test_describe_gives_the_config() -> None:
    delay, abort = fault_filters(
        Fault(delay=0.25, delay_percent=10, abort_status=418, abort_percent=33.5)
    )
    assert delay.describe() == {"type": "FaultDelay", "delay": 0.25, "percentage": 10.0}
    assert abort.describe() == {"type": "FaultAbort", "httpStatus": 418, "percentage": 33.5}


@pytest.mark.parametrize(
    "fault",
    [
        Fault(delay=-1),
        Fault(delay=1, delay_percent=101),
        Fault(abort_status=503, abort_percent=-0.1),
        Fault(abort_status=199),
        Fault(abort_status=601),
    ],
)
def test_bad_config_fails_when_built(fault: Fault) -> None:
    with pytest.raises(ValueError):
        fault_filters(fault)


# -- abort ------------------------------------------------------------------------


def test_abort_reply() -> None:
    (abort,) = fault_filters(Fault(abort_status=503))
    reply = abort.on_request(request())
    assert isinstance(reply, LocalReply)
    assert reply.status == 503
    assert reply.headers == [("content-type", "text/plain")]
    assert reply.body == b"fault filter abort"
    assert reply.flag == "FI"


def test_abort_replies_do_not_share_header_lists() -> None:
    (abort,) = fault_filters(Fault(abort_status=500))
    first = abort.on_request(request())
    first.headers.append(("x-added", "1"))
    assert abort.on_request(request()).headers == [("content-type", "text/plain")]


@pytest.mark.parametrize(("percent", "low", "high"), [(0, 0, 0), (25, 0.23, 0.27), (100, 1, 1)])
def test_abort_rate(percent: float, low: float, high: float) -> None:
    (abort,) = fault_filters(Fault(abort_status=503, abort_percent=percent))
    hits = sum(abort.on_request(request()) is not None for _ in range(DRAWS))
    assert low <= hits / DRAWS <= high


def test_abort_draw_is_patchable(monkeypatch: pytest.MonkeyPatch) -> None:
    (abort,) = fault_filters(Fault(abort_status=503, abort_percent=50))
    monkeypatch.setattr(fault_mod, "_random", lambda: 0.49)
    assert abort.on_request(request()) is not None
    monkeypatch.setattr(fault_mod, "_random", lambda: 0.5)
    assert abort.on_request(request()) is None


# -- delay ------------------------------------------------------------------------


async def test_delay_is_awaited_and_flagged(slept: list[float]) -> None:
    (delay,) = fault_filters(Fault(delay=1.5))
    assert inspect.iscoroutinefunction(delay.on_request)
    ctx = request()
    assert await delay.on_request(ctx) is None
    assert slept == [1.5]
    assert ctx.flag == "DI"


async def test_delay_keeps_an_earlier_flag(slept: list[float]) -> None:
    (delay,) = fault_filters(Fault(delay=0.1))
    ctx = request()
    ctx.flag = "RL"
    await delay.on_request(ctx)
    assert slept == [0.1]
    assert ctx.flag == "RL"


@pytest.mark.parametrize(("percent", "low", "high"), [(0, 0, 0), (25, 0.23, 0.27), (100, 1, 1)])
async def test_delay_rate(slept: list[float], percent: float, low: float, high: float) -> None:
    (delay,) = fault_filters(Fault(delay=0.2, delay_percent=percent))
    flagged = 0
    for _ in range(DRAWS):
        ctx = request()
        await delay.on_request(ctx)
        flagged += ctx.flag == "DI"
    assert low <= len(slept) / DRAWS <= high
    assert flagged == len(slept)


async def test_delayed_then_aborted_reports_the_abort(slept: list[float]) -> None:
    delay, abort = fault_filters(Fault(delay=0.3, abort_status=504))
    ctx = request()
    await delay.on_request(ctx)
    reply = abort.on_request(ctx)
    assert slept == [0.3]
    assert ctx.flag == "DI"
    # The engine's send_local sets the reply's flag over the delay's.
    assert reply is not None and reply.flag == "FI"


async def test_real_delay_is_short_when_configured_short() -> None:
    (delay,) = fault_filters(Fault(delay=0.0))
    ctx = request()
    await asyncio.wait_for(delay.on_request(ctx), timeout=1.0)
    assert ctx.flag == "DI"
