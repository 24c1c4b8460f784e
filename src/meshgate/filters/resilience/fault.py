"""Fault injection (BackendTrafficPolicy.faultInjection), as Envoy's fault filter does it.

Two filters, in Envoy's order: a delay, then an abort. Each fires on its own draw, with
probability ``percent / 100``, so a request may be delayed and then aborted.

- ``FaultDelay`` (async) sleeps ``delay`` seconds and marks the request ``DI`` for the
  access log, unless an earlier filter already set a flag. A later failure (an abort,
  an upstream error answered locally) sets its own flag over it.
- ``FaultAbort`` (plain function) answers ``abort_status`` with
  ``fault filter abort``, flag ``FI``, without going upstream. It is deliberately not
  ``async``: a rule with only an abort stays on the engine's no-task fast path.

``fault_filters`` returns only the filters that are configured. Draws use the
module-level ``_random`` (``random.random`` of the global generator), so tests can
seed ``random`` or patch ``_random``.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

from meshgate.filters.base import Filter
from meshgate.proxy.context import LocalReply

if TYPE_CHECKING:
    from meshgate.config.traffic import Fault
    from meshgate.proxy.context import RequestContext

_random = random.random

DELAY_FLAG = "DI"
ABORT_FLAG = "FI"
ABORT_BODY = b"fault filter abort"
_ABORT_HEADERS = (("content-type", "text/plain"),)


def _check_percent(field: str, value: float) -> float:
    if not 0.0 <= value <= 100.0:
        raise ValueError(f"faultInjection {field} must be within 0..100, got {value}")
    return float(value)


class FaultDelay(Filter):
    __slots__ = ("_threshold", "delay", "percent")
    name = "FaultDelay"

    def __init__(self, delay: float, percent: float = 100.0) -> None:
        if delay < 0:
            raise ValueError(f"faultInjection delay must not be negative, got {delay}")
        self.delay = float(delay)
        self.percent = _check_percent("delay percentage", percent)
        # _random() is in [0, 1): "draw < threshold" is never true at 0%, always at 100%.
        self._threshold = self.percent / 100.0

    async def on_request(self, ctx: RequestContext) -> LocalReply | None:
        if _random() < self._threshold:
            await asyncio.sleep(self.delay)
            if not ctx.flag:
                ctx.flag = DELAY_FLAG
        return None

    def describe(self) -> dict:
        return {"type": self.name, "delay": self.delay, "percentage": self.percent}


class FaultAbort(Filter):
    __slots__ = ("_threshold", "percent", "status")
    name = "FaultAbort"

    def __init__(self, status: int, percent: float = 100.0) -> None:
        # Envoy Gateway's CRD allows 200..600 for faultInjection.abort.httpStatus.
        if not 200 <= status <= 600:
            raise ValueError(f"faultInjection abort status must be within 200..600, got {status}")
        self.status = int(status)
        self.percent = _check_percent("abort percentage", percent)
        self._threshold = self.percent / 100.0

    def on_request(self, ctx: RequestContext) -> LocalReply | None:
        if _random() < self._threshold:
            return LocalReply(self.status, list(_ABORT_HEADERS), ABORT_BODY, ABORT_FLAG)
        return None

    def describe(self) -> dict:
        return {"type": self.name, "httpStatus": self.status, "percentage": self.percent}


def fault_filters(fault: Fault) -> tuple[Filter, ...]:
    """The filters ``fault`` configures, delay before abort; () when it sets neither."""
    out: list[Filter] = []
    if fault.delay is not None:
        out.append(FaultDelay(fault.delay, fault.delay_percent))
    if fault.abort_status is not None:
        out.append(FaultAbort(fault.abort_status, fault.abort_percent))
    return tuple(out)
