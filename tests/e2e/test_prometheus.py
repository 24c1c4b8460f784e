"""A real Prometheus server scrapes a running gateway's admin /metrics: what a user's
dashboards would show must match the traffic the gateway answered."""

from __future__ import annotations

import math

import httpx
from harness import LOCALHOST, free_port, simple_config
from prometheus import PrometheusServer

ROUTED = 37  # to /a, answered 200 by the echo upstream
UNROUTED = 5  # to a path no rule matches: the gateway's own 404
ROUTE = "default/route"  # simple_config's HTTPRoute, as "namespace/name"

# Prometheus stores no label whose value is empty, so the gateway's route="" (no route
# matched) comes back from the API as a series without a `route` label.
NO_ROUTE: dict[str, str] = {}


def test_prometheus_scrapes_request_counts_and_durations(echo, make_gateway) -> None:
    port = free_port()
    gw = make_gateway(simple_config(port, {"/a": echo}))
    target = f"{LOCALHOST}:{gw.admin_port}"

    with PrometheusServer([target], job="meshgate", scrape_interval="1s") as prom:
        # Scraped and healthy before any traffic: the counters then start from nothing.
        prom.wait_for_query('up{job="meshgate"}', [({"__name__": "up", "job": "meshgate", "instance": target}, 1)])
        assert prom.query("meshgate_http_requests_total") == {}

        with httpx.Client(timeout=5) as client:
            routed = [client.get(gw.url(port, f"/a/{i}")).status_code for i in range(ROUTED)]
            unrouted = [client.get(gw.url(port, f"/nothing-here/{i}")).status_code for i in range(UNROUTED)]
        assert routed == [200] * ROUTED
        assert unrouted == [404] * UNROUTED

        prom.wait_for_query(
            "sum by (route, code) (meshgate_http_requests_total)",
            [({"route": ROUTE, "code": "200"}, ROUTED), ({**NO_ROUTE, "code": "404"}, UNROUTED)],
        )
        # Every answered request was also timed, in the same scrape.
        prom.wait_for_query(
            "sum by (route) (meshgate_http_request_duration_seconds_count)",
            [({"route": ROUTE}, ROUTED), (NO_ROUTE, UNROUTED)],
        )
        prom.wait_for_query(
            "sum by (route) (meshgate_http_requests_total)"
            " - sum by (route) (meshgate_http_request_duration_seconds_count)",
            [({"route": ROUTE}, 0), (NO_ROUTE, 0)],
        )
        # A latency panel works: the buckets give every route a finite median.
        medians = prom.query(
            "histogram_quantile(0.5, sum by (route, le) (meshgate_http_request_duration_seconds_bucket))"
        )
        assert set(medians) == {(("route", ROUTE),), ()}, medians
        assert all(math.isfinite(v) and 0 <= v <= 10 for v in medians.values()), medians
        assert prom.query('up{job="meshgate"}') == {
            (("__name__", "up"), ("instance", target), ("job", "meshgate")): 1.0
        }, prom.target_health()
