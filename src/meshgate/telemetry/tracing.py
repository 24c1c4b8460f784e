"""Distributed tracing: W3C trace context in, spans out over OTLP/HTTP.

Owns the per-request side (parse ``traceparent``/``tracestate`` or B3, decide sampling,
mint span ids, hand the upstream its ``traceparent``) and the export side (a daemon
thread that encodes queued records as OTLP protobuf and POSTs them to the receiver).

The request path creates no OpenTelemetry objects: ids are ``random.getrandbits``
formatted as hex, and a sampled request appends one tuple per span to a bounded deque
(full -> dropped and counted). Unsampled requests still propagate (flags ``00``, fresh
span ids) and record nothing. The protobuf types are imported, and the connection
created, by the export thread itself, which starts on the first sampled span: a process
that forks workers after building a ``Tracing`` gets one thread and one HTTP connection
per worker.

Export: up to 512 spans per ``ExportTraceServiceRequest`` (one Resource, one scope,
both built once), POSTed as ``application/x-protobuf`` with ``http.client`` over one
keep-alive connection (reconnected after a failure); any 2xx is success. A connection
error or a 429/502/503/504 is retried once after 0.2 s, within 5 s in all; then the
batch counts as ``failed``. The standard OTLP exporter variables apply (the ``TRACES``
one wins over the generic one): ``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` /
``OTEL_EXPORTER_OTLP_HEADERS`` add request headers (``k1=v1,k2=v2``, values
URL-decoded, e.g. ``authorization=Bearer%20TOKEN`` for a collector that wants auth);
``..._COMPRESSION=gzip``; ``..._CERTIFICATE`` (CA file) and ``..._CLIENT_CERTIFICATE`` /
``..._CLIENT_KEY`` for https. ``OTEL_RESOURCE_ATTRIBUTES`` adds resource attributes;
``service.name`` is always the one given to ``Tracing``.

Cost: the export thread shares the GIL with the request path, so its CPU is taken from
requests. Encoding a sampled request's spans (SERVER + CLIENT) costs about 20 µs of CPU
(protobuf messages filled in place, upb backend; 512-span batches), against about
130 µs when they went through OpenTelemetry SDK ``ReadableSpan``s and its OTLP
exporter, measured with ``timeit`` on the same machine; the HTTP POST adds a few
µs per batch, not per span.

Timestamps (``start_ns``/``end_ns``) are Unix epoch nanoseconds (``time.time_ns()``),
what OTLP carries.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import os
import re
import socket
import ssl
import threading
import time
import uuid
import weakref
from collections import deque
from random import getrandbits, random
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from meshgate.http.headers import Headers

log = logging.getLogger(__name__)

QUEUE_CAPACITY = 10_000  # spans waiting for export; beyond it new spans are dropped
EXPORT_BATCH = 512  # spans per export call; this many waiting wakes the thread early
EXPORT_INTERVAL = 1.0  # seconds between drains when traffic is light
EXPORT_TIMEOUT = 5.0  # seconds an export call (its one retry included) may take
RETRY_BACKOFF = 0.2  # seconds before the one retry of a failed export
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
                ok = exporter.send(self._convert(batch).SerializeToString(), retry=not self._stopping)
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

    def _make_exporter(self) -> _OtlpHttpSender:
        """The protobuf types, the Resource and scope messages, and the HTTP sender
        (export thread only: imports and sockets stay out of the request path)."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )
        from opentelemetry.proto.common.v1.common_pb2 import (
            AnyValue,
            InstrumentationScope,
            KeyValue,
        )
        from opentelemetry.proto.resource.v1.resource_pb2 import Resource
        from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

        attributes = {
            "telemetry.sdk.language": "python",
            "telemetry.sdk.name": "meshgate",
            "telemetry.sdk.version": _meshgate_version(),
            "service.instance.id": str(uuid.uuid4()),  # made per process: once per worker
        }
        attributes.update(_parse_env_pairs("OTEL_RESOURCE_ATTRIBUTES"))
        attributes["service.name"] = self.service_name
        self._resource = Resource(
            attributes=[KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attributes.items()]
        )
        self._scope = InstrumentationScope(name="meshgate")
        self._pb_request = ExportTraceServiceRequest
        self._pb_consts = (Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT, Status.STATUS_CODE_ERROR)
        return _OtlpHttpSender(self.endpoint)

    def _convert(self, records: list[tuple]):
        """Queued records -> one OTLP ``ExportTraceServiceRequest`` (export thread only).

        Sub-messages are filled in place (``attributes.add(key=...).value.x = ...``):
        building KeyValue/AnyValue objects and copying them in costs 2-3x as much."""
        request = self._pb_request()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.CopyFrom(self._resource)
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.CopyFrom(self._scope)
        add_span = scope_spans.spans.add
        server_kind, client_kind, error_code = self._pb_consts
        fromhex = bytes.fromhex
        for rec in records:
            if rec[0] == _SERVER:
                (_, trace_id, span_id, parent_id, tracestate, method, target, host, start, end, status, route, backend, flag) = rec
                path, _, query = target.partition("?")
                span = add_span(
                    trace_id=fromhex(trace_id),
                    span_id=fromhex(span_id),
                    name=f"{method} {route or path}",
                    kind=server_kind,
                    start_time_unix_nano=start,
                    end_time_unix_nano=end,
                    # SpanFlags: "is_remote is known" (0x100), "the parent is remote" (0x200)
                    flags=0x100 if parent_id is None else 0x300,
                )
                if parent_id is not None:
                    span.parent_span_id = fromhex(parent_id)
                if tracestate:
                    # A bad tracestate is forwarded upstream as received, but not recorded.
                    span.trace_state = _normalize_tracestate(tracestate)
                add = span.attributes.add
                add(key="http.request.method").value.string_value = method
                add(key="url.path").value.string_value = path
                if query:
                    add(key="url.query").value.string_value = query
                address, port = _split_host_port(host)
                if address:
                    add(key="server.address").value.string_value = address
                if port is not None:
                    add(key="server.port").value.int_value = port
                add(key="http.response.status_code").value.int_value = status
                if route:
                    add(key="http.route").value.string_value = route
                if backend:
                    add(key="meshgate.backend").value.string_value = backend
                if flag:
                    add(key="meshgate.response_flags").value.string_value = flag
                if status >= 500:
                    add(key="error.type").value.string_value = flag or str(status)
                    span.status.code = error_code
            else:
                (_, trace_id, span_id, server_span_id, method, peer, start, end, status, error) = rec
                span = add_span(
                    trace_id=fromhex(trace_id),
                    span_id=fromhex(span_id),
                    parent_span_id=fromhex(server_span_id),
                    name=f"{method} upstream",
                    kind=client_kind,
                    start_time_unix_nano=start,
                    end_time_unix_nano=end,
                    flags=0x100,
                )
                add = span.attributes.add
                add(key="http.request.method").value.string_value = method
                address, port = _split_host_port(peer)
                if address:
                    add(key="server.address").value.string_value = address
                if port is not None:
                    add(key="server.port").value.int_value = port
                if status is not None:
                    add(key="http.response.status_code").value.int_value = status
                # HTTP semantic conventions: a CLIENT span fails on 4xx and 5xx.
                if error is not None:
                    add(key="error.type").value.string_value = error
                    span.status.code = error_code
                elif status is None or status >= 400:
                    add(key="error.type").value.string_value = str(status) if status is not None else "_OTHER"
                    span.status.code = error_code
        return request

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


# Retry once, after RETRY_BACKOFF, on a connection error or a status OTLP calls retryable.
_RETRYABLE_STATUS = frozenset((429, 502, 503, 504))
# tracestate as the OpenTelemetry API validates it: a bad list is not recorded at all.
_TRACESTATE_MEMBER = re.compile(
    r"([a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
    r"=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])"
)
_TRACESTATE_MAX_MEMBERS = 32


def _normalize_tracestate(value: str) -> str:
    """``tracestate`` as recorded on a span: members trimmed and joined by ``,``; ""
    if any member is malformed, a key repeats, or there are more than 32."""
    keys: set[str] = set()
    members = []
    for member in value.split(","):
        member = member.strip(" \t")
        if not member:
            continue
        m = _TRACESTATE_MEMBER.fullmatch(member)
        if m is None or m.group(1) in keys:
            return ""
        keys.add(m.group(1))
        members.append(member)
    return ",".join(members) if len(members) <= _TRACESTATE_MAX_MEMBERS else ""


def _parse_env_pairs(*names: str) -> dict[str, str]:
    """``k1=v1,k2=v2`` from the first of the environment variables ``names`` that is set
    (the OTel format of ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_RESOURCE_ATTRIBUTES``):
    keys and values trimmed, values URL-decoded; a malformed entry is skipped, warned."""
    raw = next((os.environ[n] for n in names if os.environ.get(n, "").strip()), "")
    pairs = {}
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not item.strip():
            continue
        if not sep or not key:
            log.warning("tracing: ignoring malformed entry %r in %s", item.strip(), names[0])
            continue
        pairs[unquote(key)] = unquote(value.strip())
    return pairs


def _env(*names: str) -> str:
    return next((os.environ[n].strip() for n in names if os.environ.get(n, "").strip()), "")


def _meshgate_version() -> str:
    try:
        from meshgate import __version__
    except ImportError:  # pragma: no cover
        return "unknown"
    return __version__


class _OtlpHttpSender:
    """POSTs encoded ``ExportTraceServiceRequest`` bodies to an OTLP/HTTP endpoint over
    one keep-alive connection (``http.client``), reconnecting after any failure.

    Reads the standard OTLP exporter variables (the ``TRACES`` one wins over the
    generic one): ``..._HEADERS`` (extra request headers), ``..._COMPRESSION``
    (``gzip`` or none), ``..._CERTIFICATE`` (CA file for https), and
    ``..._CLIENT_CERTIFICATE`` / ``..._CLIENT_KEY`` (mutual TLS).
    """

    def __init__(self, endpoint: str, timeout: float = EXPORT_TIMEOUT) -> None:
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"OTLP endpoint must be an http:// or https:// URL, got {endpoint!r}")
        self.timeout = timeout
        self.path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self.headers = _parse_env_pairs("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
        self.headers["Content-Type"] = "application/x-protobuf"
        self.headers.setdefault("User-Agent", f"meshgate/{_meshgate_version()}")
        compression = _env("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION").lower()
        if compression not in ("", "none", "gzip"):
            log.warning("tracing: unsupported OTLP compression %r, sending uncompressed", compression)
        self.gzip = compression == "gzip"
        if self.gzip:
            self.headers["Content-Encoding"] = "gzip"
        self._closed = threading.Event()
        if url.scheme == "https":
            context = ssl.create_default_context(
                cafile=_env("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE") or None
            )
            client_cert = _env("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")
            if client_cert:
                client_key = _env("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "OTEL_EXPORTER_OTLP_CLIENT_KEY")
                context.load_cert_chain(client_cert, client_key or None)
            self._conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                url.hostname, url.port, timeout=timeout, context=context
            )
        else:
            self._conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)

    def send(self, body: bytes, retry: bool = True) -> bool:
        """True when the receiver answered 2xx. A connection error or a retryable status
        (429, 502, 503, 504) is retried once after RETRY_BACKOFF; all within ``timeout``."""
        if self.gzip:
            body = gzip.compress(body, compresslevel=1)
        deadline = time.monotonic() + self.timeout
        while True:
            if self._closed.is_set():
                return False
            error, retryable = self._post(body, deadline - time.monotonic())
            if error is None:
                return True
            _throttled_log(log, "tracing: export to %s failed: %s", self._url(), error)
            if not (retry and retryable) or deadline - time.monotonic() <= RETRY_BACKOFF:
                return False
            if self._closed.wait(RETRY_BACKOFF):  # shutdown() ends the wait: no retry
                return False
            retry = False

    def _post(self, body: bytes, timeout: float) -> tuple[str | None, bool]:
        """(None, _) on a 2xx answer, else (what went wrong, whether to retry)."""
        conn = self._conn
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        try:
            conn.request("POST", self.path, body, self.headers)
            response = conn.getresponse()
            response.read()  # the whole answer, so that the connection can be reused
        except (OSError, http.client.HTTPException) as exc:
            conn.close()  # the next request reconnects
            return repr(exc), True
        if response.will_close:
            conn.close()
        if 200 <= response.status < 300:
            return None, False
        return f"HTTP {response.status} {response.reason}", response.status in _RETRYABLE_STATUS

    def _url(self) -> str:
        conn = self._conn
        scheme = "https" if isinstance(conn, http.client.HTTPSConnection) else "http"
        return f"{scheme}://{conn.host}:{conn.port}{self.path}"

    def shutdown(self) -> None:
        """Cut short a send in progress (from another thread) and close the connection."""
        self._closed.set()
        sock = self._conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked on this socket
            except OSError:
                pass


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


_own_throttle = _OncePerInterval()


def _throttled_log(logger: logging.Logger, message: str, *args: object) -> None:
    if _own_throttle.filter(None):  # type: ignore[arg-type]
        logger.warning(message, *args)
