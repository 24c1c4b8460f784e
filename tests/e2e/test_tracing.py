"""Traces across two gateways in a chain, as a collector sees them.

client -> gateway A (edge) -> gateway B (inner) -> echo server; both gateways export
with OTLP/HTTP to one receiver started by the test (decoded with opentelemetry-proto).
What a user checks in Jaeger or Tempo: one trace per request across both hops, B's
server span under A's upstream attempt, A's server span under the caller's span, and
retries as separate attempt spans, each continued by its own downstream span.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest
from harness import (
    LOCALHOST,
    Gateway,
    backend_doc,
    free_port,
    gateway_doc,
    prefix_rule,
    route_doc,
    service_docs,
)
from otlp_receiver import OtlpReceiver

from meshgate.http.headers import Headers
from meshgate.telemetry.tracing import Tracing

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01\Z")


@pytest.fixture
def receiver():
    with OtlpReceiver() as r:
        yield r


@pytest.fixture
def chain(receiver, echo):
    """Gateway B routes to the echo server; gateway A routes to B (a Backend) and, for
    /retry, retries 500s twice (three attempts)."""
    port_a, port_b = free_port(), free_port()
    tracing_args = ["--otlp-endpoint", receiver.endpoint]  # sampling ratio: default 1.0
    inner = [
        gateway_doc(port_b),
        *service_docs("echo", [echo]),
        route_doc("inner", [prefix_rule("/", "echo")]),
    ]
    to_b = {"group": "gateway.envoyproxy.io", "kind": "Backend", "name": "gateway-b", "port": port_b}
    edge = [
        gateway_doc(port_a),
        backend_doc("gateway-b", port_b),
        route_doc(
            "edge",
            [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/retry"}}],
                    "backendRefs": [to_b],
                    "retry": {"attempts": 2, "codes": [500]},
                },
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": [to_b]},
            ],
        ),
    ]
    gw_b = Gateway(inner, extra_args=tracing_args)
    gw_a = Gateway(edge, extra_args=tracing_args)
    try:
        gw_b.start()
        gw_a.start()
        yield f"http://{LOCALHOST}:{port_a}"
    finally:
        gw_a.cleanup()
        gw_b.cleanup()


def by_kind(spans, kind, route=None):
    return [s for s in spans if s.kind == kind and (route is None or s.attributes.get("http.route") == route)]


def test_trace_continues_the_callers_traceparent_across_both_gateways(chain, receiver, echo):
    caller = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    resp = httpx.get(f"{chain}/items/7?color=red", headers={"traceparent": caller, "tracestate": "congo=t61"})
    assert resp.status_code == 200

    # The app behind both gateways sees the same trace, with B's attempt as its parent.
    (received,) = echo.requests()
    (sent_to_app,) = received["headers"]["Traceparent"]
    m = TRACEPARENT.match(sent_to_app)
    assert m and m.group(1) == CALLER_TRACE
    assert received["headers"]["Tracestate"] == ["congo=t61"]

    spans = receiver.wait_for_spans(4, CALLER_TRACE)
    assert len(spans) == 4, spans  # A server + attempt, B server + attempt
    (a_server,) = by_kind(spans, "SERVER", "default/edge")
    (b_server,) = by_kind(spans, "SERVER", "default/inner")
    a_clients = [s for s in by_kind(spans, "CLIENT") if s.parent_span_id == a_server.span_id]
    b_clients = [s for s in by_kind(spans, "CLIENT") if s.parent_span_id == b_server.span_id]
    assert len(a_clients) == 1 and len(b_clients) == 1

    assert a_server.parent_span_id == CALLER_SPAN
    assert b_server.parent_span_id == a_clients[0].span_id
    assert b_clients[0].span_id == m.group(2)

    assert a_server.name == "GET default/edge"
    assert a_server.attributes["http.request.method"] == "GET"
    assert a_server.attributes["url.path"] == "/items/7"
    assert a_server.attributes["http.response.status_code"] == 200
    assert a_server.attributes["meshgate.backend"] == "backend/default/gateway-b"
    assert a_server.resource["service.name"] == "meshgate"
    assert a_server.status == "UNSET" and a_server.start_ns <= b_server.start_ns <= b_server.end_ns <= a_server.end_ns
    assert a_clients[0].name == "GET upstream"
    assert a_clients[0].attributes["server.address"] == LOCALHOST
    assert a_clients[0].attributes["http.response.status_code"] == 200
    assert b_clients[0].attributes["server.port"] == echo.port


def test_request_without_traceparent_gets_one_new_trace_across_both_gateways(chain, receiver, echo):
    resp = httpx.get(f"{chain}/fresh")
    assert resp.status_code == 200
    (received,) = echo.requests()
    m = TRACEPARENT.match(received["headers"]["Traceparent"][0])
    assert m, received["headers"]
    trace_id = m.group(1)

    spans = receiver.wait_for_spans(4, trace_id)
    (a_server,) = by_kind(spans, "SERVER", "default/edge")
    (b_server,) = by_kind(spans, "SERVER", "default/inner")
    (a_client,) = [s for s in by_kind(spans, "CLIENT") if s.parent_span_id == a_server.span_id]
    assert a_server.parent_span_id is None  # the root of the trace
    assert b_server.parent_span_id == a_client.span_id
    # Nothing of this request landed in another trace.
    time.sleep(0.1)
    assert len({s.trace_id for s in receiver.spans() if s.attributes.get("url.path") == "/fresh"}) == 1


def test_retries_are_separate_attempt_spans_under_one_server_span(chain, receiver, echo):
    caller = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    resp = httpx.get(f"{chain}/retry/status/500", headers={"traceparent": caller})
    assert resp.status_code == 500

    # Each attempt reached the app with its own span id, all in the caller's trace.
    received = echo.requests()
    assert len(received) == 3
    parents = [TRACEPARENT.match(r["headers"]["Traceparent"][0]) for r in received]
    assert all(p and p.group(1) == CALLER_TRACE for p in parents)

    spans = receiver.wait_for_spans(1 + 3 + 3 + 3, CALLER_TRACE)  # A: 1 + 3; B: 3 x (1 + 1)
    (a_server,) = by_kind(spans, "SERVER", "default/edge")
    a_attempts = [s for s in by_kind(spans, "CLIENT") if s.parent_span_id == a_server.span_id]
    assert len(a_attempts) == 3
    assert len({s.span_id for s in a_attempts}) == 3
    assert a_server.status == "ERROR" and a_server.attributes["http.response.status_code"] == 500
    assert all(s.status == "ERROR" for s in a_attempts)
    # Each abandoned try keeps the status it got.
    assert [s.attributes.get("http.response.status_code") for s in a_attempts] == [500, 500, 500]

    # B saw three requests, each one continuing a different attempt of A.
    b_servers = by_kind(spans, "SERVER", "default/inner")
    assert sorted(s.parent_span_id for s in b_servers) == sorted(s.span_id for s in a_attempts)


def test_unsampled_caller_is_propagated_but_not_exported(chain, receiver, echo):
    trace_id = "a" * 32
    resp = httpx.get(f"{chain}/quiet", headers={"traceparent": f"00-{trace_id}-{CALLER_SPAN}-00"})
    assert resp.status_code == 200
    (received,) = echo.requests()
    assert re.fullmatch(rf"00-{trace_id}-[0-9a-f]{{16}}-00", received["headers"]["Traceparent"][0])
    # A sampled request sent after it is exported; by then the quiet one would have been too.
    caller = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    assert httpx.get(f"{chain}/loud", headers={"traceparent": caller}).status_code == 200
    receiver.wait_for_spans(4, CALLER_TRACE)
    assert receiver.spans(trace_id) == []


# --------------------------------------------------------------------------- exporter alone


def test_tracing_exports_to_a_real_receiver_and_shutdown_flushes(receiver):
    """The export thread, without a gateway: spans queued just before shutdown() arrive."""
    tracing = Tracing(receiver.endpoint, service_name="unit-of-export")
    try:
        trace = tracing.start(Headers(), "PUT", "/k", "kv.local", time.time_ns())
        trace.attempt("127.0.0.1:7000").end(204, None, time.time_ns())
        trace.end(204, "default/kv", "default/kv", "", time.time_ns())
    finally:
        tracing.shutdown()
    spans = receiver.spans(trace.trace_id)
    assert sorted(s.kind for s in spans) == ["CLIENT", "SERVER"]
    assert all(s.resource["service.name"] == "unit-of-export" for s in spans)
    assert tracing.exported == 2 and tracing.failed == 0


def test_unreachable_receiver_costs_requests_nothing_and_logs_little(caplog):
    port = free_port()  # nothing listens there
    tracing = Tracing(f"http://{LOCALHOST}:{port}/v1/traces")
    try:
        began = time.perf_counter()
        for _ in range(1000):
            trace = tracing.start(Headers(), "GET", "/", "h", time.time_ns())
            trace.attempt("127.0.0.1:1").end(200, None, time.time_ns())
            trace.end(200, None, None, "", time.time_ns())
        assert time.perf_counter() - began < 1.0  # no export on the request path
    finally:
        began = time.perf_counter()
        tracing.shutdown()
        assert time.perf_counter() - began < 7.0  # bounded, even with exports failing
    assert (tracing.exported, tracing.failed) == (0, 2000)
    # Failures are reported at most once a minute, not once per batch or retry.
    exporter_records = [r for r in caplog.records if r.name.startswith("opentelemetry")]
    assert len(exporter_records) <= 1, [r.getMessage() for r in exporter_records]


def test_a_try_that_never_connected_is_a_span_with_its_flag(receiver):
    port, dead = free_port(), free_port()
    docs = [
        gateway_doc(port),
        backend_doc("nothing", dead),
        route_doc(
            "dead",
            [{"backendRefs": [{"group": "gateway.envoyproxy.io", "kind": "Backend", "name": "nothing"}]}],
        ),
    ]
    trace_id = "5" * 32
    with Gateway(docs, extra_args=["--otlp-endpoint", receiver.endpoint]):
        resp = httpx.get(
            f"http://{LOCALHOST}:{port}/x", headers={"traceparent": f"00-{trace_id}-{'6' * 16}-01"}
        )
        assert resp.status_code == 503
        spans = receiver.wait_for_spans(2, trace_id)
    (server,) = by_kind(spans, "SERVER", "default/dead")
    (attempt,) = by_kind(spans, "CLIENT")
    assert attempt.parent_span_id == server.span_id
    assert attempt.status == "ERROR" and attempt.attributes["error.type"] == "UF"
    assert attempt.attributes["server.address"] == "127.0.0.1"
    assert attempt.attributes["server.port"] == dead
