"""The observability docs cannot drift from the code: every metric family and label the
admin /metrics can emit is in docs/metrics.md, every metric the Grafana dashboard or a
documented PromQL example reads exists, and every span attribute tracing sets is in
docs/tracing.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from meshgate.config.snapshot import Cluster, Endpoint, Snapshot
from meshgate.proxy.admin import AdminServer
from meshgate.proxy.engine import Engine
from meshgate.telemetry import prom_text
from meshgate.telemetry.metrics import COUNTERS

ROOT = Path(__file__).resolve().parents[2]
METRICS_DOC = ROOT / "docs" / "metrics.md"
DASHBOARD = ROOT / "examples" / "grafana" / "meshgate-dashboard.json"

SNAPSHOT = Snapshot(
    version="0123456789ab",
    ports={},
    clusters={
        "web": Cluster(
            "web", (Endpoint("127.0.0.1", 9),), source="service/default/web:80"
        )
    },
    dump={},
)


@pytest.fixture
async def exposition() -> prom_text.Exposition:
    """Everything /metrics can show: one scrape as a single worker and one as worker 0
    of several, with a config active, a reload recorded and every counter touched."""
    engine = Engine(bind="127.0.0.1")
    try:
        await engine.apply(SNAPSHOT)
        m = engine.metrics
        m.observe("default/r", 200, 0.003, bytes_in=10, bytes_out=20)
        m.observe("", 404, 0.0001)
        labels = {
            "meshgate_upstream_requests_total": ("web", 503),
            "meshgate_upstream_failures_total": ("web", "UF"),
            "meshgate_upstream_retries_total": ("default/r",),
            "meshgate_local_replies_total": ("NR",),
            "meshgate_upstream_cb_overflows_total": ("web", "pending"),
            "meshgate_upstream_retry_budget_exhausted_total": ("web",),
            "meshgate_upstream_outlier_ejections_total": ("web", "ejected"),
            "meshgate_upstream_health_checks_total": ("web", "failure"),
            "meshgate_auth_failures_total": ("jwt", "expired"),
            "meshgate_validation_failures_total": ("parameter",),
            "meshgate_cache_lookups_total": ("HIT",),
            "meshgate_ratelimit_decisions_total": ("default/r", "limited", "local"),
            "meshgate_ratelimit_redis_errors_total": ("timeout",),
            "meshgate_quota_decisions_total": ("exceeded",),
        }
        assert set(labels) == set(COUNTERS), "a new counter: give it labels here"
        for name, values in labels.items():
            m.inc(name, values)
        m.config_reloads["accepted"] += 1
        admin = AdminServer(
            engine, lambda: {"ready": True, "last_error": None, "at": 1.0e9}
        )
        single = admin.handle("GET", "/metrics")[1].decode()
        _, summed, _ = await admin.summed_metrics()
    finally:
        await engine.drain(deadline=0)
    merged = prom_text.parse(single)
    for name, kind in prom_text.parse(summed.decode()).types.items():
        merged.types.setdefault(name, kind)
    merged.samples += prom_text.parse(summed.decode()).samples
    return merged


def _family(name: str, types: dict[str, str]) -> str:
    """A sample name's family: histograms add _bucket/_sum/_count to theirs."""
    if name in types:
        return name
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    return base if types.get(base) == "histogram" else name


_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
)
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (Grafana variables allowed)."""
    expr = _QUOTED.sub('""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges: [5m], [$__rate_interval]
    expr = _GROUPING.sub("", expr)  # label lists
    expr = re.sub(r"\$\w+", "", expr)
    names = set()
    for m in _IDENT.finditer(expr):
        word = m.group()
        following = expr[m.end() :].lstrip()
        if following.startswith("(") or word.lower() in _KEYWORDS:
            continue  # a function or an operator
        if m.start() > 0 and (
            expr[m.start() - 1].isdigit() or expr[m.start() - 1] == "."
        ):
            continue  # the exponent of a number such as 1e3
        names.add(word)
    return names


def test_the_expression_scanner_finds_metrics_and_nothing_else():
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{job=~"$job",x="b c"}[$__rate_interval])))'
        " / on (route) group_left b or 0 * c offset 5m"
    )
    assert metric_names(expr) == {"a_bucket", "b", "c"}


def test_every_metric_family_and_label_is_documented(exposition):
    doc = METRICS_DOC.read_text()
    missing = [
        name
        for name in exposition.types
        if not re.search(rf"(?<![a-zA-Z0-9_]){re.escape(name)}(?![a-zA-Z0-9_])", doc)
    ]
    assert not missing, f"docs/metrics.md does not describe: {missing}"
    labels = {label for sample in exposition.samples for label in sample.labels}
    assert {
        "route",
        "code",
        "le",
        "cluster",
        "flag",
        "state",
        "result",
        "version",
    } <= labels
    undocumented = sorted(label for label in labels if f"`{label}`" not in doc)
    assert not undocumented, (
        f"docs/metrics.md does not describe the labels: {undocumented}"
    )


def test_the_scrape_covers_every_source_of_metrics(exposition):
    # If one of these vanished, the fixture no longer renders what the admin listener does.
    for name in (
        "meshgate_http_request_duration_seconds",
        *COUNTERS,
        "meshgate_upstream_connections",
        "meshgate_config_info",
        "process_cpu_seconds_total",
        "meshgate_config_last_reload_timestamp_seconds",
        "meshgate_workers_scraped",
    ):
        assert name in exposition.types, name


def test_documented_promql_reads_only_existing_metrics(exposition):
    blocks = re.findall(r"```promql\n(.*?)```", METRICS_DOC.read_text(), re.DOTALL)
    assert blocks
    used = set().union(*(metric_names(b) for b in blocks))
    unknown = sorted(
        n for n in used if _family(n, exposition.types) not in exposition.types
    )
    assert not unknown, (
        f"docs/metrics.md queries metrics /metrics does not have: {unknown}"
    )


def _panels(dashboard: dict) -> list[dict]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels += panel.get("panels", [])  # collapsed rows hold their panels
    return panels


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_is_importable_grafana_json(dashboard):
    assert dashboard["title"] and dashboard["uid"]
    assert dashboard["schemaVersion"] >= 36
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    graphs = [p for p in _panels(dashboard) if p["type"] != "row"]
    assert len(graphs) >= 10
    assert len({p["id"] for p in _panels(dashboard)}) == len(_panels(dashboard))
    for panel in graphs:
        assert panel["title"] and panel["targets"], panel.get("title")
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_dashboard_queries_read_only_existing_metrics(dashboard, exposition):
    used: dict[str, str] = {}
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            for name in metric_names(target["expr"]):
                used.setdefault(name, panel["title"])
    for var in dashboard["templating"]["list"]:
        m = re.match(r"label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*)", var["definition"])
        if m:
            used.setdefault(m.group(1), f"variable {var['name']}")
    assert used
    unknown = {
        n: where
        for n, where in used.items()
        if _family(n, exposition.types) not in exposition.types
    }
    assert not unknown, (
        f"the dashboard queries metrics /metrics does not have: {unknown}"
    )


def test_dashboard_shows_what_the_metrics_page_promises(dashboard, exposition):
    used = {
        _family(n, exposition.types)
        for p in _panels(dashboard)
        for t in p.get("targets", [])
        for n in metric_names(t["expr"])
    }
    for name in (
        "meshgate_http_requests_total",
        "meshgate_http_request_duration_seconds",
        "meshgate_upstream_failures_total",
        "meshgate_upstream_retries_total",
        "meshgate_upstream_connections",
        "meshgate_http_request_bytes_total",
        "meshgate_http_response_bytes_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "meshgate_config_reloads_total",
    ):
        assert name in used, f"no dashboard panel shows {name}"


def test_every_span_attribute_is_documented():
    source = (ROOT / "src" / "meshgate" / "telemetry" / "tracing.py").read_text()
    # The encoder fills attributes in place: add(key="http.route").value...
    keys = set(re.findall(r'add\(key="([a-z_.]+)"\)', source))
    assert {"http.request.method", "http.route", "error.type"} <= keys, (
        "the scan no longer finds them"
    )
    doc = (ROOT / "docs" / "tracing.md").read_text()
    undocumented = sorted(k for k in keys if f"`{k}`" not in doc)
    assert not undocumented, (
        f"docs/tracing.md does not describe the span attributes: {undocumented}"
    )
