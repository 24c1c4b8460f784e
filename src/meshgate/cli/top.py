"""``meshgate top [--admin URL] [--interval 1.0] [--once]``: live golden metrics per route
— requests per second, success rate, p50 and p99 latency, total requests — from a
proxy's admin ``/metrics``, like ``linkerd viz top``.

Every figure covers the window between two scrapes. The arithmetic is pure functions
over parsed scrapes (`parse_scrape`, `window_stats`, `histogram_quantile`) that tests
drive with text; `fetch_metrics` is the only I/O and the command holds the only clock.
"""

from __future__ import annotations

import http.client
import math
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import click

from meshgate.telemetry.prom_text import Exposition, PromTextError, parse

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

# rich is imported where it is used: every `meshgate` command, `meshgate gateway` and its
# workers included, imports this module to register `top`, and rich costs ~0.1 s.

REQUESTS_TOTAL = "meshgate_http_requests_total"
DURATION_BUCKET = "meshgate_http_request_duration_seconds_bucket"
NO_ROUTE = "(no route)"
SCRAPE_TIMEOUT = 5.0  # seconds, per scrape
MAX_SCRAPE_BYTES = 32 * 1024 * 1024


class ScrapeError(Exception):
    """/metrics could not be read: unreachable, not 200, or not Prometheus text."""


# --------------------------------------------------------------------------- scrapes


@dataclass(frozen=True)
class RouteCounters:
    """One route's cumulative counters at one scrape."""

    codes: dict[str, float]  # status code -> requests answered
    buckets: dict[float, float]  # histogram upper bound (le) -> cumulative count

    @property
    def total(self) -> float:
        return sum(self.codes.values())


@dataclass(frozen=True)
class Scrape:
    at: float  # time.monotonic() when the scrape was read
    routes: dict[str, RouteCounters]


def routes_from_exposition(exposition: Exposition) -> dict[str, RouteCounters]:
    routes: dict[str, RouteCounters] = {}

    def route(name: str) -> RouteCounters:
        if name not in routes:
            routes[name] = RouteCounters({}, {})
        return routes[name]

    for sample in exposition.samples:
        if sample.name == REQUESTS_TOTAL:
            codes = route(sample.labels.get("route", "")).codes
            code = sample.labels.get("code", "")
            codes[code] = codes.get(code, 0.0) + sample.value
        elif sample.name == DURATION_BUCKET and "le" in sample.labels:
            try:
                le = float(sample.labels["le"])
            except ValueError:
                continue  # not a bucket any quantile could use
            route(sample.labels.get("route", "")).buckets[le] = sample.value
    return routes


def parse_scrape(text: str, at: float) -> Scrape:
    """Raises PromTextError if `text` is not exposition format."""
    return Scrape(at, routes_from_exposition(parse(text)))


# --------------------------------------------------------------------------- window arithmetic


@dataclass(frozen=True)
class RouteStats:
    route: str
    rps: float
    success_rate: float | None  # 0..1, share of non-5xx; None without requests in the window
    p50: float | None  # seconds; None without a histogram or requests in the window
    p99: float | None
    total: int  # requests answered since the proxy started (the latest scrape)


def has_restarted(old: Scrape, new: Scrape) -> bool:
    """True if any counter of `old` is lower in `new`, or gone from it.

    The proxy's counters only grow and never disappear while it runs, so either means
    it restarted between the scrapes: everything in `new` then counts as new requests.
    """
    for name, before in old.routes.items():
        after = new.routes.get(name)
        if after is None:
            return True
        for series, now in ((before.codes, after.codes), (before.buckets, after.buckets)):
            for key, value in series.items():
                if now.get(key, -math.inf) < value:
                    return True
    return False


def _delta(old: dict, new: dict) -> dict:
    return {key: value - old.get(key, 0.0) for key, value in new.items()}


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile of cumulative `buckets` (le -> count), interpolated linearly inside
    the bucket it falls in, as Prometheus' histogram_quantile() does: the lowest bucket
    starts at 0, and a quantile in the +Inf bucket is the largest finite bound.
    None when the histogram is empty or has no +Inf bucket."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is not between 0 and 1")
    bounds = sorted(buckets)
    if len(bounds) < 2 or bounds[-1] != math.inf:
        return None
    counts: list[float] = []
    for le in bounds:  # a scrape between two bucket updates may look non-monotonic
        counts.append(max(buckets[le], counts[-1] if counts else 0.0))
    observations = counts[-1]
    if observations <= 0:
        return None
    rank = q * observations
    b = next(i for i, c in enumerate(counts) if c >= rank)
    if b == len(bounds) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start = bounds[b - 1] if b > 0 else 0.0
    below = counts[b - 1] if b > 0 else 0.0
    in_bucket = counts[b] - below
    if in_bucket <= 0:
        return start
    return start + (bounds[b] - start) * (rank - below) / in_bucket


def success_rate(codes: dict[str, float]) -> float | None:
    """Share of requests not answered with a 5xx; None when there were none."""
    total = sum(codes.values())
    if total <= 0:
        return None
    failed = sum(n for code, n in codes.items() if code.isdigit() and 500 <= int(code) <= 599)
    return (total - failed) / total


def window_stats(old: Scrape, new: Scrape) -> list[RouteStats]:
    """Per-route figures for the window between two scrapes of the same proxy, busiest
    route first. Routes are those of `new`."""
    elapsed = new.at - old.at
    if elapsed <= 0:
        raise ValueError("the second scrape must be later than the first")
    restarted = has_restarted(old, new)
    stats = []
    for name, after in new.routes.items():
        before = None if restarted else old.routes.get(name)
        codes = _delta(before.codes, after.codes) if before else dict(after.codes)
        buckets = _delta(before.buckets, after.buckets) if before else dict(after.buckets)
        requests = sum(codes.values())
        stats.append(
            RouteStats(
                route=name,
                rps=requests / elapsed,
                success_rate=success_rate(codes),
                p50=histogram_quantile(0.5, buckets),
                p99=histogram_quantile(0.99, buckets),
                total=round(after.total),
            )
        )
    stats.sort(key=lambda s: (-s.rps, s.route))
    return stats


# --------------------------------------------------------------------------- rendering


def format_ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1000.0
    if ms < 10:
        return f"{ms:.2f}"
    if ms < 1000:
        return f"{ms:.1f}"
    return f"{ms:.0f}"


def format_success(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.2f}%"


def build_table(stats: list[RouteStats], title: str | None = None, caption: str | None = None) -> Table:
    from rich.table import Table
    from rich.text import Text

    # title and caption may be markup; the caller escapes what came from outside.
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    table.add_column("ROUTE", overflow="fold")
    for column in ("RPS", "SUCCESS", "P50 ms", "P99 ms", "TOTAL"):
        table.add_column(column, justify="right", no_wrap=True)
    for s in stats:
        table.add_row(
            Text(s.route or NO_ROUTE),  # a label value, not rich markup
            f"{s.rps:.1f}",
            format_success(s.success_rate),
            format_ms(s.p50),
            format_ms(s.p99),
            str(s.total),
        )
    return table


# --------------------------------------------------------------------------- I/O and the command


def normalize_admin_url(url: str) -> str:
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    return url.rstrip("/")


# The admin listener is reached directly: an http_proxy in the environment must not
# capture scrapes of 127.0.0.1.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch_metrics(admin_url: str, timeout: float = SCRAPE_TIMEOUT) -> str:
    url = admin_url + "/metrics"
    request = urllib.request.Request(url, headers={"Accept": "text/plain;version=0.0.4"})
    try:
        with _opener.open(request, timeout=timeout) as response:
            body = response.read(MAX_SCRAPE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise ScrapeError(f"{url} answered {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise ScrapeError(f"cannot reach {url}: {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, bad responses
        raise ScrapeError(f"cannot read {url}: {exc!r}") from None
    if len(body) > MAX_SCRAPE_BYTES:
        raise ScrapeError(f"{url} sent more than {MAX_SCRAPE_BYTES} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise ScrapeError(f"{url} is not UTF-8 text") from None


def scrape(admin_url: str) -> Scrape:
    text = fetch_metrics(admin_url)
    at = time.monotonic()
    try:
        return parse_scrape(text, at)
    except PromTextError as exc:
        raise ScrapeError(f"{admin_url}/metrics is not Prometheus text: {exc}") from None


def _sleep_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))


@click.command("top")
@click.option(
    "--admin",
    "admin_url",
    default="http://127.0.0.1:9901",
    show_default=True,
    help="Admin listener of the gateway or sidecar to watch.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between scrapes: the window every figure covers.",
)
@click.option("--once", is_flag=True, help="Scrape twice, INTERVAL apart, print the table and exit.")
def top(admin_url: str, interval: float, once: bool) -> None:
    """Live requests per second, success rate and p50/p99 latency per route, until Ctrl-C."""
    try:
        admin_url = normalize_admin_url(admin_url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--admin") from None
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    title = f"meshgate top  {escape(admin_url)}  (window {interval:g}s)"
    try:
        previous = scrape(admin_url)
        if once:
            _sleep_until(previous.at + interval)
            stats = window_stats(previous, scrape(admin_url))
            console.print(build_table(stats, title))
            return
    except ScrapeError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        _watch(console, admin_url, interval, title, previous)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a live view ends: exit 0, not click's "Aborted!"


def _watch(console: Console, admin_url: str, interval: float, title: str, previous: Scrape) -> None:
    from rich.live import Live
    from rich.markup import escape

    stats: list[RouteStats] = []
    waiting = build_table(stats, title, f"first window: {interval:g}s...")
    with Live(waiting, console=console, auto_refresh=False) as live:
        next_at = previous.at + interval
        while True:
            _sleep_until(next_at)
            # A slow scrape pushes the next one back rather than bunching scrapes up.
            next_at = max(next_at + interval, time.monotonic() + interval / 2)
            try:
                current = scrape(admin_url)
            except ScrapeError as exc:
                # Keep the last good scrape as the baseline: the next window is longer,
                # and a restart in between is recognised by has_restarted().
                caption = f"[red]{time.strftime('%H:%M:%S')} {escape(str(exc))}; retrying[/red]"
                live.update(build_table(stats, title, caption), refresh=True)
                continue
            stats = window_stats(previous, current)
            previous = current
            caption = f"{time.strftime('%H:%M:%S')}  Ctrl-C to quit"
            live.update(build_table(stats, title, caption), refresh=True)
