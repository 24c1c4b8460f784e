"""A real OTLP/HTTP trace receiver for the tests: what a collector would see.

`OtlpReceiver` serves ``POST /v1/traces`` (``application/x-protobuf``, optionally gzip)
on 127.0.0.1 at a free port, in a thread of the test process; it decodes each body as an
``ExportTraceServiceRequest`` with opentelemetry-proto, keeps every span as a
`ReceivedSpan`, and answers 200 with an empty ``ExportTraceServiceResponse``. Anything
else gets 404/400, and is counted in `rejected` so a test can notice it.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

KIND_NAMES = {
    Span.SPAN_KIND_INTERNAL: "INTERNAL",
    Span.SPAN_KIND_SERVER: "SERVER",
    Span.SPAN_KIND_CLIENT: "CLIENT",
    Span.SPAN_KIND_PRODUCER: "PRODUCER",
    Span.SPAN_KIND_CONSUMER: "CONSUMER",
    Span.SPAN_KIND_UNSPECIFIED: "UNSPECIFIED",
}
STATUS_NAMES = {
    Status.STATUS_CODE_UNSET: "UNSET",
    Status.STATUS_CODE_OK: "OK",
    Status.STATUS_CODE_ERROR: "ERROR",
}


@dataclass
class ReceivedSpan:
    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex
    parent_span_id: str | None
    name: str
    kind: str  # SERVER, CLIENT, ...
    attributes: dict[str, object]
    status: str  # UNSET, OK, ERROR
    start_ns: int
    end_ns: int
    trace_state: str = ""
    resource: dict[str, object] = field(default_factory=dict)
    scope: str = ""


def any_value(value: AnyValue) -> object:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which)


def decode(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: any_value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        name=span.name,
                        kind=KIND_NAMES.get(span.kind, str(span.kind)),
                        attributes={kv.key: any_value(kv.value) for kv in span.attributes},
                        status=STATUS_NAMES.get(span.status.code, str(span.status.code)),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        trace_state=span.trace_state,
                        resource=resource,
                        scope=scope_spans.scope.name,
                    )
                )
    return spans


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path != "/v1/traces":
            self._answer(404, b"", "text/plain")
            self.server.receiver.rejected += 1
            return
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/x-protobuf":
                raise ValueError(f"content type {self.headers.get('Content-Type')!r}")
            spans = decode(body)
        except Exception:  # noqa: BLE001 - a malformed export is the client's fault: 400
            self.server.receiver.rejected += 1
            self._answer(400, b"", "text/plain")
            return
        self.server.receiver._add(spans)
        self._answer(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: OtlpReceiver


class OtlpReceiver:
    """Use as a context manager; `endpoint` is the URL to give an exporter."""

    def __init__(self) -> None:
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self.requests = 0  # accepted export calls
        self.rejected = 0

    def start(self) -> OtlpReceiver:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def _add(self, spans: list[ReceivedSpan]) -> None:
        with self._lock:
            self._spans.extend(spans)
            self.requests += 1

    def spans(self, trace_id: str | None = None) -> list[ReceivedSpan]:
        with self._lock:
            spans = list(self._spans)
        return spans if trace_id is None else [s for s in spans if s.trace_id == trace_id]

    def wait_for_spans(self, count: int, trace_id: str | None = None, timeout: float = 10.0) -> list[ReceivedSpan]:
        """At least `count` spans (of `trace_id`), or TimeoutError with what arrived."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans(trace_id)
            if len(spans) >= count:
                return spans
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(spans)} of {count} spans after {timeout}s: {spans}")
            time.sleep(0.02)
