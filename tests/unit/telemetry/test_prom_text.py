"""Prometheus text format 0.0.4 parsing: what `meshgate top` reads from /metrics."""

from __future__ import annotations

import math

import pytest

from meshgate.telemetry.metrics import Metrics
from meshgate.telemetry.prom_text import PromTextError, Sample, parse


def test_samples_with_and_without_labels():
    exp = parse(
        'http_requests_total{method="post",code="200"} 1027 1395066363000\n'
        "process_open_fds 42\n"
        "metric_without_timestamp_and_labels 12.47\n"
    )
    assert exp.samples == [
        Sample("http_requests_total", {"method": "post", "code": "200"}, 1027.0, 1395066363000),
        Sample("process_open_fds", {}, 42.0),
        Sample("metric_without_timestamp_and_labels", {}, 12.47),
    ]


def test_help_and_type_lines_are_recorded_and_other_comments_skipped():
    exp = parse(
        "# A plain comment\n"
        "# HELP rpc_seconds RPC latency, with a \\\\ and a \\n in its help.\n"
        "# TYPE rpc_seconds histogram\n"
        "#\n"
        "\n"
        'rpc_seconds_bucket{le="0.5"} 3\n'
    )
    assert exp.types == {"rpc_seconds": "histogram"}
    assert exp.help == {"rpc_seconds": "RPC latency, with a \\ and a \n in its help."}
    assert exp.named("rpc_seconds_bucket") == [Sample("rpc_seconds_bucket", {"le": "0.5"}, 3.0)]


def test_label_value_escapes():
    exp = parse(
        'msdos_file_access_time_seconds{path="C:\\\\DIR\\\\FILE.TXT",'
        'error="Cannot find file:\\n\\"FILE.TXT\\""} 1.458255915e9\n'
    )
    (sample,) = exp.samples
    assert sample.labels == {"path": "C:\\DIR\\FILE.TXT", "error": 'Cannot find file:\n"FILE.TXT"'}
    assert sample.value == 1.458255915e9


def test_label_values_may_hold_braces_commas_spaces_and_unicode():
    (sample,) = parse('m{a="x}, y=\\"z\\" {",b="héllo wörld"} 1\n').samples
    assert sample.labels == {"a": 'x}, y="z" {', "b": "héllo wörld"}


def test_special_values():
    exp = parse('h_bucket{le="+Inf"} +Inf\nneg -Inf\nnan NaN\nexp 1e-3\n')
    values = [s.value for s in exp.samples]
    assert values[0] == math.inf and values[1] == -math.inf and math.isnan(values[2])
    assert values[3] == 0.001
    assert exp.samples[0].labels == {"le": "+Inf"}


def test_blanks_trailing_comma_empty_labels_and_crlf():
    exp = parse('a { x = "1" , y="2", } 3\r\nb{} 4\n  c   5  \n')
    assert exp.samples == [Sample("a", {"x": "1", "y": "2"}, 3.0), Sample("b", {}, 4.0), Sample("c", {}, 5.0)]


def test_no_final_newline_and_empty_text():
    assert parse("a 1").samples == [Sample("a", {}, 1.0)]
    assert parse("").samples == []


@pytest.mark.parametrize(
    "line, message",
    [
        ('m{a="1} 2', "unterminated label value"),
        ('m{a="\\t"} 2', "invalid escape sequence"),
        ('m{a="1",a="2"} 2', "given twice"),
        ("m{a=1} 2", 'expected "'),
        ('m{a="1" b="2"} 2', "expected , or }"),
        ('m{1a="1"} 2', "expected a label name"),
        ("m", "expected a value"),
        ("m one", "is not a float"),
        ("m 1_000", "is not a float"),
        ("m 1 2 3", "expected a value"),
        ("m 1 soon", "timestamp"),
        ("1m 1", "expected a metric name"),
        ("# TYPE m histo", "unknown metric type"),
        ("# TYPE 1m counter", "bad metric name"),
        ("# HELP m bad \\q escape", "invalid escape sequence"),
    ],
)
def test_malformed_lines_are_errors_naming_the_line(line, message):
    with pytest.raises(PromTextError, match=message) as info:
        parse("ok 1\n" + line + "\n")
    assert info.value.lineno == 2
    assert "line 2" in str(info.value)


def test_second_type_for_a_family_is_an_error():
    with pytest.raises(PromTextError, match="second # TYPE"):
        parse("# TYPE m counter\n# TYPE m gauge\n")


def test_parses_what_the_gateway_serves():
    m = Metrics()
    m.observe('ns/we"ird\\route', 200, 0.003)
    m.observe("default/web", 503, 20.0)
    m.count_request("", 400)
    exp = parse(m.render())
    assert exp.types["meshgate_http_requests_total"] == "counter"
    assert exp.types["meshgate_http_request_duration_seconds"] == "histogram"
    routes = {s.labels["route"] for s in exp.named("meshgate_http_requests_total")}
    assert routes == {'ns/we"ird\\route', "default/web", ""}
    inf = [
        s
        for s in exp.named("meshgate_http_request_duration_seconds_bucket")
        if s.labels == {"route": "default/web", "le": "+Inf"}
    ]
    assert [s.value for s in inf] == [1.0]
