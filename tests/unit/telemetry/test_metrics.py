"""/metrics output: Prometheus text format 0.0.4 that a scraper accepts, with request
counters by route and code and cumulative duration histograms."""

from __future__ import annotations

import math
import re

import pytest

from meshgate.telemetry.metrics import Metrics

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"(,|$)')


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def parse(text: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """(family -> type, samples) from exposition text; fails on anything malformed."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    samples: list[tuple[str, dict[str, str], float]] = []
    for line in text[:-1].split("\n"):
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert re.fullmatch(_NAME, name) and name not in types, line
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            types[name] = kind
            continue
        if line.startswith("# HELP ") or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, raw_labels, value = m.groups()
        labels: dict[str, str] = {}
        if raw_labels:
            pos = 0
            while pos < len(raw_labels):
                lm = _LABEL.match(raw_labels, pos)
                assert lm, f"bad labels in {line!r}"
                assert lm.group(1) not in labels
                labels[lm.group(1)] = _unescape(lm.group(2))
                pos = lm.end()
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"sample before its # TYPE: {line!r}"
        samples.append((name, labels, float(value)))
    return types, samples


def values(samples, name: str, **labels: str) -> list[float]:
    return [v for n, ls, v in samples if n == name and all(ls.get(k) == x for k, x in labels.items())]


def test_empty_metrics_parse():
    types, samples = parse(Metrics().render())
    assert types["meshgate_http_requests_total"] == "counter"
    assert types["meshgate_http_request_duration_seconds"] == "histogram"
    assert values(samples, "meshgate_downstream_connections_total") == [0]
    assert values(samples, "meshgate_config_reloads_total", result="accepted") == [0]
    assert values(samples, "meshgate_config_reloads_total", result="rejected") == [0]


def test_request_counter_by_route_and_code():
    m = Metrics()
    for _ in range(3):
        m.observe("default/web", 200, 0.01)
    m.observe("default/web", 503, 0.2)
    m.count_request("", 400)  # rejected before routing: no route
    types, samples = parse(m.render())
    name = "meshgate_http_requests_total"
    assert values(samples, name, route="default/web", code="200") == [3]
    assert values(samples, name, route="default/web", code="503") == [1]
    assert values(samples, name, route="", code="400") == [1]
    assert sum(values(samples, name)) == 5


def test_histogram_buckets_are_cumulative_and_inf_equals_count():
    m = Metrics()
    durations = [0.0005, 0.003, 0.003, 0.02, 0.3, 1.5, 7.0, 42.0]  # 42s: past every bound
    for d in durations:
        m.observe("default/web", 200, d)
    _, samples = parse(m.render())
    buckets = [
        (ls["le"], v)
        for n, ls, v in samples
        if n == "meshgate_http_request_duration_seconds_bucket" and ls["route"] == "default/web"
    ]
    bounds = [float(le) for le, _ in buckets]
    counts = [v for _, v in buckets]
    assert bounds == sorted(bounds) and bounds[-1] == math.inf
    assert counts == sorted(counts)  # cumulative: never decreasing
    for bound, count in zip(bounds, counts):
        assert count == sum(1 for d in durations if d <= bound)
    (count,) = values(samples, "meshgate_http_request_duration_seconds_count", route="default/web")
    (total,) = values(samples, "meshgate_http_request_duration_seconds_sum", route="default/web")
    assert counts[-1] == count == len(durations)
    assert total == pytest.approx(sum(durations))


def test_each_route_has_its_own_histogram():
    m = Metrics()
    m.observe("a/r", 200, 0.001)
    m.observe("b/r", 200, 0.5)
    m.observe("b/r", 500, 0.5)
    _, samples = parse(m.render())
    count = "meshgate_http_request_duration_seconds_count"
    assert values(samples, count, route="a/r") == [1]
    assert values(samples, count, route="b/r") == [2]


def test_label_values_are_escaped():
    m = Metrics()
    route = 'ns/we"ird\\name\nx'
    m.observe(route, 200, 0.01)
    _, samples = parse(m.render())
    assert values(samples, "meshgate_http_requests_total", route=route, code="200") == [1]


def test_connection_and_reload_counters_and_extra_lines():
    m = Metrics()
    m.downstream_connections = 7
    m.config_reloads["accepted"] += 2
    m.config_reloads["rejected"] += 1
    extra = ["# TYPE meshgate_extra gauge", "meshgate_extra 1"]
    types, samples = parse(m.render(extra))
    assert values(samples, "meshgate_downstream_connections_total") == [7]
    assert values(samples, "meshgate_config_reloads_total", result="accepted") == [2]
    assert values(samples, "meshgate_config_reloads_total", result="rejected") == [1]
    assert types["meshgate_extra"] == "gauge"
    assert values(samples, "meshgate_extra") == [1]
