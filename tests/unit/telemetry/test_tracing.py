"""Trace context in and out: W3C traceparent parsing (the spec's valid and invalid
cases), B3 on input, parent-based sampling, what goes upstream, and that unsampled
requests record nothing."""

from __future__ import annotations

import re

import pytest

from meshgate.http.headers import Headers
from meshgate.telemetry import tracing
from meshgate.telemetry.tracing import Tracing, parse_traceparent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
TRACEPARENT_RE = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])\Z")


@pytest.fixture
def make_tracing():
    """Tracing objects whose export thread is never started (nothing to export to)."""
    made: list[Tracing] = []

    def factory(ratio: float = 1.0) -> Tracing:
        t = Tracing("http://127.0.0.1:9/v1/traces", ratio=ratio)
        t._start_thread = lambda: None  # records stay in the queue for the test to read
        made.append(t)
        return t

    yield factory
    for t in made:
        t.shutdown()


def start(t: Tracing, *pairs: tuple[str, str]):
    return t.start(Headers.from_pairs(pairs), "GET", "/x", "example.com", 1)


# --------------------------------------------------------------------------- traceparent


def test_valid_traceparent_sampled_and_unsampled():
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-01") == (TRACE, SPAN, True)
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-00") == (TRACE, SPAN, False)
    # Only the sampled bit counts; other flag bits do not make a header invalid.
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-09") == (TRACE, SPAN, True)
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-02") == (TRACE, SPAN, False)


@pytest.mark.parametrize(
    "value",
    [
        f"00-{TRACE}-{SPAN}-01-",  # version 00 is exactly 55 characters
        f"00-{TRACE}-{SPAN}-01-what-the-future-will-not-bring",
        f"00-{TRACE[:-1]}-{SPAN}-01",  # trace id too short
        f"00-{TRACE}0-{SPAN}-01",  # trace id too long
        f"00-{TRACE}-{SPAN[:-1]}-01",  # parent id too short
        f"00-{TRACE}-{SPAN}0-01",  # parent id too long
        f"00-{TRACE}-{SPAN}-1",  # flags too short
        f"00-{TRACE}-{SPAN}-001",
        f"0-{TRACE}-{SPAN}-01",  # version too short
        f"00-{TRACE.upper()}-{SPAN}-01",  # uppercase is invalid
        f"00-{TRACE}-{SPAN.upper()}-01",
        f"0A-{TRACE}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-0A",
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE}-{SPAN}-01",  # version ff is forbidden
        f"00_{TRACE}-{SPAN}-01",  # wrong delimiters
        f"00-{TRACE}_{SPAN}-01",
        f"00-{TRACE[:16]}g{TRACE[17:]}-{SPAN}-01",  # not hex
        f"00-{TRACE}-{SPAN}",  # flags missing
        "",
        "00",
    ],
)
def test_invalid_traceparent_is_rejected(value):
    assert parse_traceparent(value) is None


def test_future_version_is_parsed_for_its_known_fields():
    assert parse_traceparent(f"cc-{TRACE}-{SPAN}-01") == (TRACE, SPAN, True)
    assert parse_traceparent(f"cc-{TRACE}-{SPAN}-01-what-the-future-will-bring") == (TRACE, SPAN, True)
    # ...but what follows the flags must start with a dash.
    assert parse_traceparent(f"cc-{TRACE}-{SPAN}-01.what-the-future-will-bring") is None
    assert parse_traceparent(f"cc-{TRACE}-{SPAN}-012") is None


def test_request_with_valid_traceparent_continues_the_trace(make_tracing):
    t = make_tracing(ratio=0.0)  # the parent decides, not the ratio
    trace = start(t, ("traceparent", f"00-{TRACE}-{SPAN}-01"), ("tracestate", "congo=t61rcWkgMzE"))
    assert trace.trace_id == TRACE
    assert trace.sampled is True
    assert re.fullmatch(r"[0-9a-f]{16}", trace.span_id) and trace.span_id != SPAN
    attempt = trace.attempt("10.0.0.1:8080")
    m = TRACEPARENT_RE.match(attempt.traceparent)
    assert m and m.group(1) == TRACE and m.group(3) == "01"
    assert m.group(2) not in (SPAN, trace.span_id)  # the attempt's own span
    assert attempt.tracestate == "congo=t61rcWkgMzE"


def test_unsampled_parent_propagates_flags_00_with_fresh_span_ids(make_tracing):
    t = make_tracing(ratio=1.0)
    trace = start(t, ("traceparent", f"00-{TRACE}-{SPAN}-00"))
    assert trace.trace_id == TRACE and trace.sampled is False
    first, second = trace.attempt("a:1"), trace.attempt("a:1")
    assert first.traceparent.endswith("-00") and second.traceparent.endswith("-00")
    assert first.traceparent[:35] == f"00-{TRACE}"
    assert len({first.traceparent, second.traceparent, f"00-{TRACE}-{SPAN}-00"}) == 3


def test_invalid_traceparent_starts_a_new_trace_and_drops_tracestate(make_tracing):
    t = make_tracing()
    trace = start(t, ("traceparent", f"00-{TRACE.upper()}-{SPAN}-01"), ("tracestate", "congo=t61rcWkgMzE"))
    assert trace.trace_id != TRACE.upper().lower()
    assert re.fullmatch(r"[0-9a-f]{32}", trace.trace_id)
    assert trace.parent_id is None
    assert trace.attempt("a:1").tracestate is None


def test_two_traceparent_headers_are_invalid(make_tracing):
    t = make_tracing()
    trace = start(t, ("traceparent", f"00-{TRACE}-{SPAN}-01"), ("traceparent", f"00-{TRACE}-{SPAN}-01"))
    assert trace.trace_id != TRACE


def test_several_tracestate_fields_are_combined(make_tracing):
    t = make_tracing()
    trace = start(t, ("traceparent", f"00-{TRACE}-{SPAN}-01"), ("tracestate", "a=1"), ("TraceState", "b=2"))
    assert trace.attempt("a:1").tracestate == "a=1,b=2"


def test_no_tracestate_means_none_upstream(make_tracing):
    t = make_tracing()
    assert start(t, ("traceparent", f"00-{TRACE}-{SPAN}-01")).attempt("a:1").tracestate is None


# --------------------------------------------------------------------------- B3


def test_b3_single_header(make_tracing):
    t = make_tracing(ratio=0.0)
    trace = start(t, ("b3", f"{TRACE}-{SPAN}-1"))
    assert (trace.trace_id, trace.parent_id, trace.sampled) == (TRACE, SPAN, True)
    trace = start(t, ("b3", f"{TRACE}-{SPAN}-1-{'1' * 16}"))  # with a parent span id
    assert (trace.trace_id, trace.parent_id, trace.sampled) == (TRACE, SPAN, True)
    trace = start(t, ("b3", f"{TRACE}-{SPAN}-d"))  # debug means sampled
    assert trace.sampled is True
    t = make_tracing(ratio=1.0)
    trace = start(t, ("b3", f"{TRACE}-{SPAN}-0"))
    assert (trace.trace_id, trace.sampled) == (TRACE, False)


def test_b3_64_bit_trace_id_is_left_padded():
    t = Tracing("http://127.0.0.1:9/v1/traces")
    trace = start(t, ("b3", f"{TRACE[:16]}-{SPAN}-1"))
    assert trace.trace_id == "0" * 16 + TRACE[:16]
    trace = start(t, ("X-B3-TraceId", TRACE[16:]), ("X-B3-SpanId", SPAN), ("X-B3-Sampled", "1"))
    assert trace.trace_id == "0" * 16 + TRACE[16:]
    assert trace.attempt("a:1").traceparent.startswith(f"00-{'0' * 16}{TRACE[16:]}-")


def test_b3_deferred_sampling_uses_the_ratio_but_keeps_the_trace(make_tracing):
    trace = start(make_tracing(ratio=0.0), ("b3", f"{TRACE}-{SPAN}"))
    assert (trace.trace_id, trace.parent_id, trace.sampled) == (TRACE, SPAN, False)
    trace = start(make_tracing(ratio=1.0), ("b3", f"{TRACE}-{SPAN}"))
    assert (trace.trace_id, trace.sampled) == (TRACE, True)


def test_b3_sampling_only_header_decides_for_a_new_trace(make_tracing):
    trace = start(make_tracing(ratio=1.0), ("b3", "0"))
    assert trace.sampled is False and trace.parent_id is None and trace.trace_id != TRACE


def test_b3_multi_headers(make_tracing):
    t = make_tracing(ratio=0.0)
    trace = start(t, ("X-B3-TraceId", TRACE), ("X-B3-SpanId", SPAN), ("X-B3-Sampled", "1"))
    assert (trace.trace_id, trace.parent_id, trace.sampled) == (TRACE, SPAN, True)
    trace = start(t, ("X-B3-TraceId", TRACE), ("X-B3-SpanId", SPAN), ("X-B3-Flags", "1"))
    assert trace.sampled is True  # debug
    t = make_tracing(ratio=1.0)
    trace = start(t, ("X-B3-TraceId", TRACE), ("X-B3-SpanId", SPAN), ("X-B3-Sampled", "0"))
    assert (trace.trace_id, trace.sampled) == (TRACE, False)


@pytest.mark.parametrize(
    "pairs",
    [
        [("b3", f"{TRACE}-{'0' * 16}-1")],  # zero span id
        [("b3", f"{'0' * 32}-{SPAN}-1")],  # zero trace id
        [("b3", f"{TRACE[:20]}-{SPAN}-1")],  # 20 hex: neither 16 nor 32
        [("b3", f"{TRACE}-{SPAN}-x")],  # unknown sampling state
        [("X-B3-TraceId", TRACE)],  # span id missing
        [("X-B3-TraceId", TRACE + "zz"), ("X-B3-SpanId", SPAN)],
    ],
)
def test_invalid_b3_starts_a_new_trace(make_tracing, pairs):
    trace = start(make_tracing(), *pairs)
    assert trace.trace_id != TRACE and trace.parent_id is None


def test_traceparent_wins_over_b3(make_tracing):
    other = "a" * 32
    trace = start(make_tracing(), ("b3", f"{other}-{SPAN}-1"), ("traceparent", f"00-{TRACE}-{SPAN}-01"))
    assert trace.trace_id == TRACE


def test_invalid_traceparent_falls_back_to_b3(make_tracing):
    other = "a" * 32
    trace = start(make_tracing(), ("traceparent", "garbage"), ("b3", f"{other}-{SPAN}-1"))
    assert trace.trace_id == other


# --------------------------------------------------------------------------- sampling


def test_no_parent_sampling_follows_the_ratio(make_tracing):
    never, always = make_tracing(ratio=0.0), make_tracing(ratio=1.0)
    assert not any(start(never).sampled for _ in range(200))
    assert all(start(always).sampled for _ in range(200))


def test_partial_ratio_samples_about_that_share(make_tracing, monkeypatch):
    t = make_tracing(ratio=0.25)
    values = iter([0.1, 0.24, 0.25, 0.9])
    monkeypatch.setattr(tracing, "random", lambda: next(values))
    assert [start(t).sampled for _ in range(4)] == [True, True, False, False]


def test_ratio_out_of_range_is_refused():
    with pytest.raises(ValueError):
        Tracing("http://127.0.0.1:9/v1/traces", ratio=1.5)


def test_new_traces_get_distinct_well_formed_ids(make_tracing):
    t = make_tracing()
    traces = [start(t) for _ in range(100)]
    assert len({tr.trace_id for tr in traces}) == 100
    for tr in traces:
        assert re.fullmatch(r"[0-9a-f]{32}", tr.trace_id) and tr.trace_id != "0" * 32
        assert re.fullmatch(r"[0-9a-f]{16}", tr.span_id) and tr.span_id != "0" * 16
        assert TRACEPARENT_RE.match(tr.attempt("a:1").traceparent)


# --------------------------------------------------------------------------- recording


def test_unsampled_requests_enqueue_nothing(make_tracing):
    t = make_tracing(ratio=0.0)
    for _ in range(10):
        trace = start(t)
        attempt = trace.attempt("10.0.0.1:80")
        attempt.end(200, None, 5)
        trace.end(200, "default/r", "default/svc", "", 6)
    trace = start(t, ("traceparent", f"00-{TRACE}-{SPAN}-00"))
    trace.attempt("a:1").end(500, None, 5)
    trace.end(500, None, None, "", 6)
    assert len(t._queue) == 0


def test_sampled_request_records_server_and_one_client_span_per_attempt(make_tracing):
    t = make_tracing()
    trace = start(t, ("traceparent", f"00-{TRACE}-{SPAN}-01"))
    attempts = [trace.attempt("10.0.0.1:80") for _ in range(3)]
    for a in attempts:
        a.end(500, None, 5)
        a.end(500, None, 5)  # a second end() records nothing more
    trace.end(500, "default/r", "default/svc", "", 6)
    trace.end(500, "default/r", "default/svc", "", 6)
    records = list(t._queue)
    assert [r[0] for r in records] == [tracing._CLIENT] * 3 + [tracing._SERVER]
    server = records[-1]
    assert server[1:4] == (TRACE, trace.span_id, SPAN)
    for record, attempt in zip(records, attempts):
        assert record[2] == attempt.span_id and record[3] == trace.span_id


def test_full_queue_drops_and_counts(make_tracing):
    t = make_tracing()
    t.capacity = 3
    for _ in range(5):
        start(t).end(200, None, None, "", 2)
    assert len(t._queue) == 3 and t.dropped == 2


def _attrs(span) -> dict:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in span.attributes}


def _encoded(t: Tracing):
    """The queue as the receiver gets it: the serialized request, parsed back."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    t._make_exporter()  # sets up the protobuf types and the Resource the converter uses
    request = ExportTraceServiceRequest()
    request.ParseFromString(t._convert(list(t._queue)).SerializeToString())
    return request


def test_records_encode_to_otlp_spans_with_links_kinds_and_status(make_tracing):
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    t = make_tracing()
    trace = t.start(
        Headers([("traceparent", f"00-{TRACE}-{SPAN}-01"), ("tracestate", "congo=t61, rojo=00f0")]),
        "POST",
        "/api/items?id=3",
        "shop.example:8443",
        100,
    )
    trace.attempt("10.0.0.7:9000").end(None, "UF", 150)
    trace.attempt("10.0.0.8:9000").end(200, None, 180)
    trace.end(200, "default/items", "default/items-svc", "", 200)
    (resource_spans,) = _encoded(t).resource_spans
    resource = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
    assert resource["service.name"] == "meshgate"
    (scope_spans,) = resource_spans.scope_spans
    assert scope_spans.scope.name == "meshgate"
    failed, ok, server = scope_spans.spans
    assert server.kind == Span.SPAN_KIND_SERVER and server.name == "POST default/items"
    assert server.parent_span_id.hex() == SPAN and server.flags == 0x300  # remote parent
    assert server.trace_id.hex() == TRACE
    assert server.trace_state == "congo=t61,rojo=00f0"
    assert (server.start_time_unix_nano, server.end_time_unix_nano) == (100, 200)
    assert _attrs(server) == {
        "http.request.method": "POST",
        "url.path": "/api/items",
        "url.query": "id=3",
        "server.address": "shop.example",
        "server.port": 8443,
        "http.response.status_code": 200,
        "http.route": "default/items",
        "meshgate.backend": "default/items-svc",
    }
    assert server.status.code == Status.STATUS_CODE_UNSET
    for client in (failed, ok):
        assert client.kind == Span.SPAN_KIND_CLIENT and client.name == "POST upstream"
        assert client.parent_span_id == server.span_id and client.trace_id == server.trace_id
        assert client.flags == 0x100
    assert failed.status.code == Status.STATUS_CODE_ERROR
    assert _attrs(failed)["error.type"] == "UF" and "http.response.status_code" not in _attrs(failed)
    assert ok.status.code == Status.STATUS_CODE_UNSET
    assert _attrs(ok)["server.address"] == "10.0.0.8" and _attrs(ok)["server.port"] == 9000
    assert {failed.span_id.hex(), ok.span_id.hex()} <= {r[2] for r in t._queue}


def test_server_span_without_route_is_named_by_path_and_5xx_is_an_error(make_tracing):
    from opentelemetry.proto.trace.v1.trace_pb2 import Status

    t = make_tracing()
    start(t).end(503, None, None, "UH", 2)
    (server,) = _encoded(t).resource_spans[0].scope_spans[0].spans
    assert server.name == "GET /x"
    assert server.status.code == Status.STATUS_CODE_ERROR
    assert _attrs(server)["meshgate.response_flags"] == "UH"
    assert _attrs(server)["error.type"] == "UH"
    assert server.parent_span_id == b"" and server.flags == 0x100


def test_client_span_4xx_without_error_is_an_error_typed_by_status(make_tracing):
    from opentelemetry.proto.trace.v1.trace_pb2 import Status

    t = make_tracing()
    start(t).attempt("a:1").end(404, None, 2)
    (client,) = _encoded(t).resource_spans[0].scope_spans[0].spans
    assert client.status.code == Status.STATUS_CODE_ERROR and _attrs(client)["error.type"] == "404"


@pytest.mark.parametrize(
    "value, recorded",
    [
        ("a=1", "a=1"),
        (" a=1 ,, b=2\t", "a=1,b=2"),
        ("a=1,a=2", ""),  # duplicate key
        ("A=1", ""),  # uppercase key
        ("a=1,garbage", ""),
        (",".join(f"k{i}=v" for i in range(33)), ""),  # more than 32 members
    ],
)
def test_tracestate_is_recorded_normalized_or_not_at_all(value, recorded):
    assert tracing._normalize_tracestate(value) == recorded


def test_resource_attributes_from_env_but_service_name_stays(make_tracing, monkeypatch):
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging,service.name=other")
    t = make_tracing()
    start(t).end(200, None, None, "", 2)
    resource = {kv.key: kv.value.string_value for kv in _encoded(t).resource_spans[0].resource.attributes}
    assert resource["deployment.environment"] == "staging" and resource["service.name"] == "meshgate"


# --------------------------------------------------------------------------- sending


def test_otlp_headers_env_is_parsed_url_decoded_and_traces_one_wins(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-generic=1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", " Authorization = Bearer%20abc%3D , x-tenant=t1,bad")
    sender = tracing._OtlpHttpSender("http://127.0.0.1:9/v1/traces")
    assert sender.headers["Authorization"] == "Bearer abc="
    assert sender.headers["x-tenant"] == "t1" and "x-generic" not in sender.headers
    assert sender.headers["Content-Type"] == "application/x-protobuf"
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
    assert tracing._OtlpHttpSender("http://127.0.0.1:9/v1/traces").headers["x-generic"] == "1"


@pytest.fixture
def collector():
    """A tiny HTTP server answering each POST with the next status of `statuses`
    (200 once they run out), keeping what it received."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            server.received.append((self.path, dict(self.headers), body, self.client_address[1]))
            status = server.statuses.pop(0) if server.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.received, server.statuses = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_sender_posts_protobuf_with_env_headers_over_one_connection(collector, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "authorization=Bearer%20t")
    sender = tracing._OtlpHttpSender(f"http://127.0.0.1:{collector.server_address[1]}/v1/traces")
    assert sender.send(b"one") and sender.send(b"two")
    (path, headers, body, port), second = collector.received
    assert path == "/v1/traces" and body == b"one" and second[2] == b"two"
    assert headers["Content-Type"] == "application/x-protobuf" and headers["authorization"] == "Bearer t"
    assert port == second[3]  # the connection was kept alive


def test_sender_retries_once_on_retryable_status_only(collector):
    sender = tracing._OtlpHttpSender(f"http://127.0.0.1:{collector.server_address[1]}/v1/traces")
    collector.statuses[:] = [503]
    assert sender.send(b"x") is True and len(collector.received) == 2
    collector.statuses[:] = [503, 502]
    assert sender.send(b"x") is False and len(collector.received) == 4
    collector.statuses[:] = [400]
    assert sender.send(b"x") is False and len(collector.received) == 5  # not retryable
    assert sender.send(b"x") is True  # and the connection still works


def test_sender_gives_up_after_one_retry_with_nothing_listening():
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sender = tracing._OtlpHttpSender(f"http://127.0.0.1:{port}/v1/traces")
    began = time.monotonic()
    assert sender.send(b"x") is False
    assert tracing.RETRY_BACKOFF <= time.monotonic() - began < 2
    sender.shutdown()
    assert sender.send(b"x") is False  # after shutdown(): at once, no retry
@pytest.mark.parametrize(
    "value, expected",
    [
        ("example.com", ("example.com", None)),
        ("example.com:8080", ("example.com", 8080)),
        ("[::1]:443", ("::1", 443)),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
    ],
)
def test_split_host_port(value, expected):
    assert tracing._split_host_port(value) == expected
