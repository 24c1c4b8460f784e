"""Distributed tracing: W3C trace context in, spans out over OTLP/HTTP.

Owns the per-request side (parse ``traceparent``/``tracestate`` or B3, decide sampling,
mint span ids, hand the upstream its ``traceparent``) and the export side (a daemon
thread that turns queued records into OpenTelemetry SDK spans and exports them).

The request path creates no OpenTelemetry objects: ids are ``random.getrandbits``
formatted as hex, and a sampled request appends one tuple per span to a bounded deque
(full -> dropped and counted). Unsampled requests still propagate (flags ``00``, fresh
span ids) and record nothing. The SDK is imported, and the exporter created, by the
export thread itself, which starts on the first sampled span: a process that forks
workers after building a ``Tracing`` gets one thread and one HTTP session per worker.

Timestamps (``start_ns``/``end_ns``) are Unix epoch nanoseconds (``time.time_ns()``),
what OTLP carries.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import weakref
from collections import deque
from random import getrandbits, random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshgate.http.headers import Headers

log = logging.getLogger(__name__)

QUEUE_CAPACITY = 10_000  # spans waiting for export; beyond it new spans are dropped
EXPORT_BATCH = 512  # spans per export call; this many waiting wakes the thread early
EXPORT_INTERVAL = 1.0  # seconds between drains when traffic is light
EXPORT_TIMEOUT = 5.0  # seconds an export call (with the exporter's retries) may take
SHUTDOWN_TIMEOUT = 5.0  # seconds shutdown() waits for the last export
LOG_EVERY = 60.0  # seconds between two reports of failing exports

# Span records, as queued. Positions are fixed; the export thread unpacks them.
#   server: (_SERVER, trace_id, span_id, parent_id|None, tracestate|None, method,
#            target, host, start_ns, end_ns, status, route, backend, flag)
#   client: (_CLIENT, trace_id, span_id, server_span_id, method, peer,
#            start_ns, end_ns, status|None, error|None)
_SERVER = 0
_CLIENT = 1

_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
# W3C Trace Context: version-traceid-parentid-flags, lowercase hex only.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_TRACEPARENT_00 = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_ODD_HEX = frozenset("13579bdf")
_HEX16 = re.compile(r"[0-9a-f]{16}")
_HEX32 = re.compile(r"[0-9a-f]{32}")

# Header names start() looks at; one pass over the request's fields finds them all.
_TP, _TS, _B3, _B3_TRACE, _B3_SPAN, _B3_SAMPLED, _B3_FLAGS = range(7)
_WANTED = {
    "traceparent": _TP,
    "tracestate": _TS,
    "b3": _B3,
    "x-b3-traceid": _B3_TRACE,
    "x-b3-spanid": _B3_SPAN,
    "x-b3-sampled": _B3_SAMPLED,
    "x-b3-flags": _B3_FLAGS,
}
_B3_SAMPLING = {"1": True, "d": True, "true": True, "0": False, "false": False}


# --------------------------------------------------------------------------- parsing


def parse_traceparent(value: str) -> tuple[str, str, bool] | None:
    """(trace_id, parent span id, sampled) from a ``traceparent`` value, or None.

    Per W3C Trace Context: version ``ff`` is invalid; version ``00`` is exactly 55
    characters; a higher version is parsed for its first four fields if what follows
    them is nothing or a ``-``. All-zero ids are invalid.
    """
    if len(value) == 55 and _TRACEPARENT_00.fullmatch(value) is not None:  # the common case
        trace_id = value[3:35]
        span_id = value[36:52]
    else:
        m = _TRACEPARENT.match(value)
        if m is None or m.group(1) in ("00", "ff") or (len(value) > 55 and value[55] != "-"):
            return None
        trace_id = m.group(2)
        span_id = m.group(3)
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    # The sampled flag is the lowest bit of the last hex digit.
    return trace_id, span_id, value[54] in _ODD_HEX


def _b3_id(value: str | None, pattern: re.Pattern) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    if not pattern.fullmatch(value) or not value.strip("0"):
        return None
    return value


def _b3_trace_id(value: str | None) -> str | None:
    if value is not None and len(value.strip()) == 16:
        tid = _b3_id(value, _HEX16)
        return "0" * 16 + tid if tid is not None else None
    return _b3_id(value, _HEX32)


def parse_b3_single(value: str) -> tuple[str | None, str | None, bool | None]:
    """(trace_id, span_id, sampled) from a ``b3`` header; (None, None, sampled) for a
    sampling-only header (``b3: 0``); sampled None when the sender deferred."""
    parts = value.strip().split("-")
    if len(parts) == 1:
        return None, None, _B3_SAMPLING.get(parts[0])
    if len(parts) > 4:
        return None, None, None
    trace_id = _b3_trace_id(parts[0])
    span_id = _b3_id(parts[1], _HEX16)
    if trace_id is None or span_id is None:
        return None, None, None
    sampled = _B3_SAMPLING.get(parts[2]) if len(parts) > 2 else None
    if len(parts) > 2 and sampled is None:
        return None, None, None
    return trace_id, span_id, sampled


def new_trace_id() -> str:
    return (getrandbits(128) or 1).to_bytes(16, "big").hex()


def new_span_id() -> str:
    return (getrandbits(64) or 1).to_bytes(8, "big").hex()


# --------------------------------------------------------------------------- request side


class AttemptSpan:
    """One upstream attempt: a CLIENT span under the request's SERVER span."""

    __slots__ = ("_start_ns", "_trace", "span_id", "traceparent", "tracestate")

    def __init__(self, trace: RequestTrace, peer: str) -> None:
        span_id = (getrandbits(64) or 1).to_bytes(8, "big").hex()
        self.span_id = span_id
        self.traceparent = f"00-{trace.trace_id}-{span_id}-{'01' if trace.sampled else '00'}"
        self.tracestate = trace.tracestate
        # Holds (trace, peer) until end(); None once ended or when nothing is recorded.
        self._trace: tuple[RequestTrace, str] | None = (trace, peer) if trace.sampled else None
        self._start_ns = time.time_ns() if trace.sampled else 0

    def end(self, status: int | None, error: str | None, end_ns: int) -> None:
        held = self._trace
        if held is None:
            return
        self._trace = None
        trace, peer = held
        trace._tracing._record(
            (
                _CLIENT,
                trace.trace_id,
                self.span_id,
                trace.span_id,
                trace.method,
                peer,
                self._start_ns,
                end_ns,
                status,
                error,
            )
        )


class RequestTrace:
    """The trace context of one downstream request and its SERVER span."""

    __slots__ = (
        "_open",
        "_tracing",
        "host",
        "method",
        "parent_id",
        "sampled",
        "span_id",
        "start_ns",
        "target",
        "trace_id",
        "tracestate",
    )

    def __init__(
        self,
        tracing: Tracing,
        trace_id: str,
        parent_id: str | None,
        sampled: bool,
        tracestate: str | None,
        method: str,
        target: str,
        host: str,
        start_ns: int,
    ) -> None:
        self.trace_id = trace_id
        self.span_id = (getrandbits(64) or 1).to_bytes(8, "big").hex()
        self.parent_id = parent_id
        self.sampled = sampled
        self.tracestate = tracestate
        self.method = method
        self.target = target
        self.host = host
        self.start_ns = start_ns
        self._tracing = tracing
        self._open = sampled

    def attempt(self, peer: str) -> AttemptSpan:
        """A CLIENT span for one upstream attempt to ``peer`` ("host:port")."""
        return AttemptSpan(self, peer)

    def end(self, status: int, route: str | None, backend: str | None, flag: str, end_ns: int) -> None:
        if not self._open:
            return
        self._open = False
        self._tracing._record(
            (
                _SERVER,
                self.trace_id,
                self.span_id,
                self.parent_id,
                self.tracestate,
                self.method,
                self.target,
                self.host,
                self.start_ns,
                end_ns,
                status,
                route,
                backend,
                flag,
            )
        )


class Tracing:
    """Trace context for requests, and the queue and thread that export their spans."""

    def __init__(self, endpoint: str, service_name: str = "meshgate", ratio: float = 1.0) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"sampling ratio must be between 0 and 1, got {ratio}")
        self.endpoint = endpoint
        self.service_name = service_name
        self.ratio = ratio
        self.capacity = QUEUE_CAPACITY
        # Counters a /metrics or /stats endpoint may show.
        self.dropped = 0  # spans refused because the queue was full
        self.exported = 0  # spans the receiver accepted
        self.failed = 0  # spans lost to failed exports
        self._reset_export_state()
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (t := ref()) is not None and t._reset_export_state())

    def _reset_export_state(self) -> None:
        # Also run in a forked child: the parent's thread does not exist there, and
        # whatever the parent had queued is the parent's to export.
        self._queue: deque[tuple] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._exporter = None
        self._in_flight = 0  # spans of the export call in progress

    # -- request path
    def start(self, headers: Headers, method: str, target: str, host: str, start_ns: int) -> RequestTrace:
        """Trace context for a request: from its ``traceparent`` (or B3), else new."""
        traceparent = None
        duplicate = False
        states: list[str] | None = None
        b3 = b3_trace = b3_span = b3_sampled = b3_flags = None
        for name, value in headers.items():
            if name not in _WANTED:
                continue
            which = _WANTED[name]
            if which == _TP:
                if traceparent is None:
                    traceparent = value
                else:
                    duplicate = True
            elif which == _TS:
                if states is None:
                    states = [value]
                else:
                    states.append(value)
            elif which == _B3:
                b3 = value
            elif which == _B3_TRACE:
                b3_trace = value
            elif which == _B3_SPAN:
                b3_span = value
            elif which == _B3_SAMPLED:
                b3_sampled = value
            else:
                b3_flags = value

        if traceparent is not None and not duplicate:
            parsed = parse_traceparent(traceparent.strip())
            if parsed is not None:
                trace_id, parent_id, sampled = parsed
                # tracestate is only meaningful next to a valid traceparent (W3C 3.3).
                tracestate = None if states is None else ",".join(states)
                return RequestTrace(self, trace_id, parent_id, sampled, tracestate, method, target, host, start_ns)

        sampled = None
        trace_id = parent_id = None
        if b3 is not None:
            trace_id, parent_id, sampled = parse_b3_single(b3)
        elif b3_trace is not None or b3_sampled is not None or b3_flags is not None:
            trace_id = _b3_trace_id(b3_trace)
            parent_id = _b3_id(b3_span, _HEX16)
            if trace_id is None or parent_id is None:
                trace_id = parent_id = None
            if b3_flags is not None and b3_flags.strip() == "1":
                sampled = True  # debug
            elif b3_sampled is not None:
                sampled = _B3_SAMPLING.get(b3_sampled.strip().lower())
        if sampled is None:
            sampled = random() < self.ratio
        if trace_id is None:
            trace_id = (getrandbits(128) or 1).to_bytes(16, "big").hex()
        return RequestTrace(self, trace_id, parent_id, sampled, None, method, target, host, start_ns)

    def _record(self, record: tuple) -> None:
        queue = self._queue
        if len(queue) >= self.capacity:
            self.dropped += 1
            return
        queue.append(record)
        if self._thread is None:
            self._start_thread()
        elif len(queue) >= EXPORT_BATCH and not self._wake.is_set():
            self._wake.set()

    # -- export side
    def _start_thread(self) -> None:
        if self._stopping:
            return
        self._thread = threading.Thread(target=self._run, name="meshgate-otlp-export", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            exporter = self._make_exporter()
        except Exception:
            log.exception("tracing disabled: cannot create the OTLP exporter for %s", self.endpoint)
            self.capacity = 0
            self._queue.clear()
            return
        self._exporter = exporter
        last_report = 0.0
        reported_failed = reported_dropped = 0
        while True:
            self._wake.wait(EXPORT_INTERVAL)
            self._wake.clear()
            stopping = self._stopping
            self._drain()
            lost = (self.failed - reported_failed, self.dropped - reported_dropped)
            if lost != (0, 0) and time.monotonic() - last_report >= LOG_EVERY:
                last_report = time.monotonic()
                reported_failed, reported_dropped = self.failed, self.dropped
                log.warning(
                    "tracing: %d spans lost to failed exports to %s, %d dropped with the queue full",
                    lost[0],
                    self.endpoint,
                    lost[1],
                )
            if stopping:
                return

    def _drain(self) -> None:
        queue = self._queue
        popleft = queue.popleft
        exporter = self._exporter
        while queue:
            batch = [popleft() for _ in range(min(len(queue), EXPORT_BATCH))]
            self._in_flight = len(batch)
            try:
                spans = self._convert(batch)
                ok = exporter.export(spans).name == "SUCCESS"
            except Exception as exc:  # noqa: BLE001 - counted and reported once a minute
                _throttled_log(log, "tracing: export to %s failed: %r", self.endpoint, exc)
                ok = False
            if ok:
                self.exported += len(batch)
            else:
                self.failed += len(batch)
                if self._stopping:  # no time for retries at shutdown: the rest is lost too
                    self.failed += len(queue)
                    queue.clear()
            self._in_flight = 0

    def _make_exporter(self):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import (
            SpanContext,
            SpanKind,
            Status,
            StatusCode,
            TraceFlags,
            TraceState,
        )

        _throttle_logger(logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter"))
        self._sdk = (
            ReadableSpan,
            SpanContext,
            SpanKind,
            Status(StatusCode.ERROR),
            Status(StatusCode.UNSET),
            TraceFlags(TraceFlags.SAMPLED),
            TraceState,
        )
        self._resource = Resource.create({"service.name": self.service_name})
        self._scope = InstrumentationScope("meshgate")
        return OTLPSpanExporter(endpoint=self.endpoint, timeout=EXPORT_TIMEOUT)

    def _convert(self, records: list[tuple]) -> list:
        """Queued records -> OpenTelemetry SDK ReadableSpans (export thread only)."""
        ReadableSpan, SpanContext, SpanKind, error_status, unset_status, sampled_flags, TraceState = self._sdk
        resource, scope = self._resource, self._scope
        spans = []
        for rec in records:
            trace_id = int(rec[1], 16)
            context = SpanContext(trace_id, int(rec[2], 16), is_remote=False, trace_flags=sampled_flags)
            if rec[0] == _SERVER:
                (_, _, _, parent_id, tracestate, method, target, host, start, end, status, route, backend, flag) = rec
                path, _, query = target.partition("?")
                attrs = {"http.request.method": method, "url.path": path}
                if query:
                    attrs["url.query"] = query
                address, port = _split_host_port(host)
                if address:
                    attrs["server.address"] = address
                if port is not None:
                    attrs["server.port"] = port
                attrs["http.response.status_code"] = status
                if route:
                    attrs["http.route"] = route
                if backend:
                    attrs["meshgate.backend"] = backend
                if flag:
                    attrs["meshgate.response_flags"] = flag
                failed = status >= 500
                if failed:
                    attrs["error.type"] = flag or str(status)
                if tracestate:
                    try:
                        context = SpanContext(
                            trace_id,
                            context.span_id,
                            is_remote=False,
                            trace_flags=sampled_flags,
                            trace_state=TraceState.from_header([tracestate]),
                        )
                    except Exception:  # noqa: BLE001, S110 - a bad tracestate is forwarded, not recorded
                        pass
                parent = None
                if parent_id is not None:
                    parent = SpanContext(trace_id, int(parent_id, 16), is_remote=True, trace_flags=sampled_flags)
                name = f"{method} {route or path}"
                kind = SpanKind.SERVER
            else:
                (_, _, _, server_span_id, method, peer, start, end, status, error) = rec
                attrs = {"http.request.method": method}
                address, port = _split_host_port(peer)
                if address:
                    attrs["server.address"] = address
                if port is not None:
                    attrs["server.port"] = port
                if status is not None:
                    attrs["http.response.status_code"] = status
                # HTTP semantic conventions: a CLIENT span fails on 4xx and 5xx.
                failed = error is not None or status is None or status >= 400
                if error is not None:
                    attrs["error.type"] = error
                elif failed:
                    attrs["error.type"] = str(status) if status is not None else "_OTHER"
                parent = SpanContext(trace_id, int(server_span_id, 16), is_remote=False, trace_flags=sampled_flags)
                name = f"{method} upstream"
                kind = SpanKind.CLIENT
            spans.append(
                ReadableSpan(
                    name,
                    context=context,
                    parent=parent,
                    resource=resource,
                    attributes=attrs,
                    kind=kind,
                    status=error_status if failed else unset_status,
                    start_time=start,
                    end_time=end,
                    instrumentation_scope=scope,
                )
            )
        return spans

    def flush(self, timeout: float = SHUTDOWN_TIMEOUT) -> bool:
        """Export what is queued now; True once it has been sent (or given up on)."""
        if self._thread is None:
            return not self._queue
        self._wake.set()
        deadline = time.monotonic() + timeout
        while (self._queue or self._in_flight) and time.monotonic() < deadline:
            time.sleep(0.01)
        return not (self._queue or self._in_flight)

    def shutdown(self) -> None:
        """Export what is queued (waiting at most SHUTDOWN_TIMEOUT) and stop the thread."""
        self._stopping = True
        thread = self._thread
        if thread is not None:
            self._wake.set()
            thread.join(SHUTDOWN_TIMEOUT)
        exporter = self._exporter
        if exporter is not None:
            try:
                exporter.shutdown()  # also cuts short the retries of an export still running
            except Exception:  # noqa: BLE001, S110 - shutting down: nothing left to protect
                pass
        if thread is not None and thread.is_alive():
            thread.join(1.0)  # the aborted export returns at once; let it count its loss


# --------------------------------------------------------------------------- helpers


def _split_host_port(value: str) -> tuple[str, int | None]:
    """"host:port" / "[v6]:port" / "host" -> (host, port or None)."""
    if value.startswith("["):
        close = value.find("]")
        host = value[1:close] if close > 0 else value
        rest = value[close + 1 :] if close > 0 else ""
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, sep, port = value.rpartition(":")
        if not sep or ":" in host:  # no port, or a bare IPv6 address
            return value, None
    return host, int(port) if port.isdigit() else None


class _OncePerInterval(logging.Filter):
    """Lets one record through per LOG_EVERY seconds: a receiver that is down must not
    flood the gateway's log with one error per batch."""

    def __init__(self) -> None:
        super().__init__()
        self.last = float("-inf")

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self.last < LOG_EVERY:
            return False
        self.last = now
        return True


def _throttle_logger(logger: logging.Logger) -> None:
    if not any(isinstance(f, _OncePerInterval) for f in logger.filters):
        logger.addFilter(_OncePerInterval())


_own_throttle = _OncePerInterval()


def _throttled_log(logger: logging.Logger, message: str, *args: object) -> None:
    if _own_throttle.filter(None):  # type: ignore[arg-type]
        logger.warning(message, *args)
