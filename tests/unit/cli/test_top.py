"""`meshgate top` arithmetic and rendering, driven by /metrics text (no sockets): rates,
success rate and latency quantiles over the window between two scrapes."""

from __future__ import annotations

import io
import math

import pytest
from rich.console import Console

from meshgate.cli.top import (
    RouteStats,
    build_table,
    format_ms,
    has_restarted,
    histogram_quantile,
    normalize_admin_url,
    parse_scrape,
    success_rate,
    window_stats,
)
from meshgate.telemetry.metrics import Metrics

INF = math.inf


def metrics_text(codes: dict[tuple[str, int], int], buckets: dict[str, dict[str, int]] | None = None) -> str:
    """/metrics as the gateway writes it: counters by (route, code), histogram buckets
    (le -> cumulative count) by route."""
    lines = [
        "# HELP meshgate_http_requests_total Requests answered.",
        "# TYPE meshgate_http_requests_total counter",
    ]
    for (route, code), n in codes.items():
        lines.append(f'meshgate_http_requests_total{{route="{route}",code="{code}"}} {n}')
    lines.append("# TYPE meshgate_http_request_duration_seconds histogram")
    for route, bs in (buckets or {}).items():
        for le, n in bs.items():
            lines.append(f'meshgate_http_request_duration_seconds_bucket{{route="{route}",le="{le}"}} {n}')
    lines.append("meshgate_downstream_connections_total 7")
    return "\n".join(lines) + "\n"


def by_route(stats: list[RouteStats]) -> dict[str, RouteStats]:
    return {s.route: s for s in stats}


# --------------------------------------------------------------------------- quantiles


def test_quantile_interpolates_linearly_inside_its_bucket():
    buckets = {0.001: 0, 0.005: 40, 0.01: 90, 0.025: 100, INF: 100}
    # rank 50 is the 10th of the 50 observations in (0.005, 0.01]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.005 + 0.005 * 10 / 50)
    # rank 99 is the 9th of the 10 in (0.01, 0.025]
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.01 + 0.015 * 9 / 10)


def test_quantile_in_the_lowest_bucket_starts_from_zero():
    assert histogram_quantile(0.5, {0.1: 10, 1.0: 10, INF: 10}) == pytest.approx(0.05)


def test_quantile_in_the_inf_bucket_is_the_largest_finite_bound():
    assert histogram_quantile(0.99, {1.0: 10, 10.0: 10, INF: 20}) == 10.0


def test_quantile_of_an_empty_or_incomplete_histogram_is_unknown():
    assert histogram_quantile(0.5, {0.1: 0, INF: 0}) is None
    assert histogram_quantile(0.5, {0.1: 3, 1.0: 5}) is None  # no +Inf bucket
    assert histogram_quantile(0.5, {}) is None


def test_quantile_tolerates_a_scrape_between_two_bucket_updates():
    # cumulative counts must not go down; a torn read is made monotonic, as Prometheus does
    assert histogram_quantile(0.5, {0.1: 6, 0.2: 5, INF: 10}) == pytest.approx(0.1 * 5 / 6)


def test_quantile_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError):
        histogram_quantile(1.5, {1.0: 1, INF: 1})


# --------------------------------------------------------------------------- success rate


def test_success_rate_counts_only_5xx_as_failures():
    assert success_rate({"200": 90, "404": 5, "429": 1, "503": 3, "500": 1}) == pytest.approx(0.96)
    assert success_rate({"302": 2}) == 1.0
    assert success_rate({"200": 0, "503": 0}) is None
    assert success_rate({}) is None


# --------------------------------------------------------------------------- windows


def test_rates_and_success_come_from_the_delta_between_scrapes():
    old = parse_scrape(metrics_text({("default/web", 200): 1000, ("default/web", 503): 10}), at=100.0)
    new = parse_scrape(metrics_text({("default/web", 200): 1038, ("default/web", 503): 12}), at=102.0)
    (web,) = window_stats(old, new)
    assert web.route == "default/web"
    assert web.rps == pytest.approx(20.0)  # 40 requests in 2 s
    assert web.success_rate == pytest.approx(38 / 40)  # not the 1038/1050 since start
    assert web.total == 1050


def test_latency_quantiles_come_from_bucket_deltas():
    before = {"0.001": 1000, "0.005": 1000, "0.01": 1000, "+Inf": 1000}  # 1000 fast ones earlier
    after = {"0.001": 1000, "0.005": 1050, "0.01": 1100, "+Inf": 1100}
    old = parse_scrape(metrics_text({("r", 200): 1000}, {"r": before}), at=0.0)
    new = parse_scrape(metrics_text({("r", 200): 1100}, {"r": after}), at=1.0)
    (r,) = window_stats(old, new)
    assert r.p50 == pytest.approx(0.005)  # all 100 in the window took 1-10 ms
    assert r.p99 == pytest.approx(0.005 + 0.005 * 49 / 50)


def test_routes_sorted_by_rps_and_idle_routes_have_no_figures():
    old = parse_scrape(metrics_text({("a", 200): 5, ("b", 200): 5, ("c", 200): 5}), at=0.0)
    new = parse_scrape(metrics_text({("a", 200): 6, ("b", 200): 15, ("c", 200): 5, ("d", 200): 3}), at=1.0)
    stats = window_stats(old, new)
    assert [s.route for s in stats] == ["b", "d", "a", "c"]
    c = by_route(stats)["c"]
    assert (c.rps, c.success_rate, c.p50, c.p99, c.total) == (0.0, None, None, None, 5)
    assert by_route(stats)["d"].rps == 3.0  # a route new since the first scrape counts whole


def test_counter_reset_means_a_restart_and_the_new_values_count():
    old = parse_scrape(
        metrics_text({("a", 200): 5000, ("b", 200): 10}, {"a": {"0.01": 5000, "+Inf": 5000}}), at=0.0
    )
    new = parse_scrape(
        metrics_text({("a", 200): 30, ("b", 200): 40}, {"a": {"0.01": 0, "+Inf": 30}}), at=2.0
    )
    assert has_restarted(old, new)
    stats = by_route(window_stats(old, new))
    assert stats["a"].rps == 15.0  # 30 since the restart, not 30 - 5000
    # b grew, but the process restarted: its 40 are all new, not 40 - 10
    assert stats["b"].rps == 20.0
    assert stats["a"].p50 == 0.01  # all 30 above 10 ms: the largest finite bound
    assert stats["a"].success_rate == 1.0


def test_a_route_gone_from_the_second_scrape_means_a_restart():
    old = parse_scrape(metrics_text({("a", 200): 5, ("b", 200): 5}), at=0.0)
    new = parse_scrape(metrics_text({("a", 200): 9}), at=1.0)
    assert has_restarted(old, new)
    assert window_stats(old, new)[0].rps == 9.0
    assert not has_restarted(old, parse_scrape(metrics_text({("a", 200): 5, ("b", 200): 6}), at=1.0))


def test_window_stats_from_what_the_gateway_renders():
    metrics = Metrics()
    metrics.observe("default/web", 200, 0.002)
    old = parse_scrape(metrics.render(), at=10.0)
    for _ in range(98):
        metrics.observe("default/web", 200, 0.002)  # (0.001, 0.005] bucket
    metrics.observe("default/web", 503, 0.3)  # (0.25, 0.5]
    metrics.observe("default/web", 503, 0.3)
    metrics.observe("", 400, 0.0)  # refused before routing, as the engine records it
    new = parse_scrape(metrics.render(), at=14.0)
    web, no_route = window_stats(old, new)
    assert web.route == "default/web" and no_route.route == ""
    assert web.rps == pytest.approx(25.0)
    assert web.success_rate == pytest.approx(0.98)
    assert 0.001 < web.p50 <= 0.005
    assert 0.25 < web.p99 <= 0.5
    assert web.total == 101
    assert (no_route.rps, no_route.success_rate) == (0.25, 1.0)
    assert 0 <= no_route.p99 <= 0.001


def test_window_needs_time_to_pass():
    scrape = parse_scrape(metrics_text({("a", 200): 1}), at=5.0)
    with pytest.raises(ValueError):
        window_stats(scrape, scrape)


# --------------------------------------------------------------------------- rendering


def render(stats: list[RouteStats]) -> str:
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(build_table(stats, "title"))
    return out.getvalue()


def test_table_shows_every_column_and_names_the_unrouted():
    text = render(
        [
            RouteStats("default/web", 123.456, 0.98765, 0.0012345, 0.25, 4567),
            RouteStats("", 0.25, 1.0, None, None, 1),
            RouteStats("idle/[bold]x[/bold]", 0.0, None, None, None, 9),
        ]
    )
    header = next(line for line in text.splitlines() if "ROUTE" in line)
    for column in ("RPS", "SUCCESS", "P50 ms", "P99 ms", "TOTAL"):
        assert column in header
    web = next(line for line in text.splitlines() if "default/web" in line)
    assert [cell.strip() for cell in web.split("│")[1:-1]] == [
        "default/web", "123.5", "98.77%", "1.23", "250.0", "4567"
    ]
    assert "(no route)" in text
    assert "idle/[bold]x[/bold]" in text  # route names are text, not markup


def test_milliseconds_keep_three_significant_digits_or_more():
    assert [format_ms(s) for s in (None, 0.000456, 0.0123, 0.9876, 12.3456)] == [
        "-", "0.46", "12.3", "987.6", "12346"
    ]


def test_admin_url_forms():
    assert normalize_admin_url("127.0.0.1:9901") == "http://127.0.0.1:9901"
    assert normalize_admin_url("http://127.0.0.1:9901/") == "http://127.0.0.1:9901"
    with pytest.raises(ValueError):
        normalize_admin_url("ftp://127.0.0.1:9901")
