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


def test_records_convert_to_sdk_spans_with_links_kinds_and_status(make_tracing):
    from opentelemetry.trace import SpanKind, StatusCode

    t = make_tracing()
    t._make_exporter()  # sets up the SDK types the converter uses
    trace = t.start(
        Headers([("traceparent", f"00-{TRACE}-{SPAN}-01")]), "POST", "/api/items?id=3", "shop.example:8443", 100
    )
    trace.attempt("10.0.0.7:9000").end(None, "UF", 150)
    trace.attempt("10.0.0.8:9000").end(200, None, 180)
    trace.end(200, "default/items", "default/items-svc", "", 200)
    failed, ok, server = t._convert(list(t._queue))
    assert server.kind == SpanKind.SERVER and server.name == "POST default/items"
    assert server.parent.span_id == int(SPAN, 16) and server.parent.is_remote
    assert server.context.trace_id == int(TRACE, 16)
    assert (server.start_time, server.end_time) == (100, 200)
    assert dict(server.attributes) == {
        "http.request.method": "POST",
        "url.path": "/api/items",
        "url.query": "id=3",
        "server.address": "shop.example",
        "server.port": 8443,
        "http.response.status_code": 200,
        "http.route": "default/items",
        "meshgate.backend": "default/items-svc",
    }
    assert server.status.status_code == StatusCode.UNSET
    assert server.resource.attributes["service.name"] == "meshgate"
    for client in (failed, ok):
        assert client.kind == SpanKind.CLIENT and client.name == "POST upstream"
        assert client.parent.span_id == server.context.span_id
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.attributes["error.type"] == "UF" and "http.response.status_code" not in failed.attributes
    assert ok.status.status_code == StatusCode.UNSET
    assert ok.attributes["server.address"] == "10.0.0.8" and ok.attributes["server.port"] == 9000


def test_server_span_without_route_is_named_by_path_and_5xx_is_an_error(make_tracing):
    from opentelemetry.trace import StatusCode

    t = make_tracing()
    t._make_exporter()
    start(t).end(503, None, None, "UH", 2)
    (server,) = t._convert(list(t._queue))
    assert server.name == "GET /x"
    assert server.status.status_code == StatusCode.ERROR
    assert server.attributes["meshgate.response_flags"] == "UH"
    assert server.parent is None


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
